//! The `memcg-drift` command as a user runs it: doctor, trace, and every kind of bad input
//! (one line on stderr, non-zero exit, nothing left attached, mounted or created).

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Output, Stdio},
    time::Duration,
};

use integration_tests::{assert_anon_row, bin, online_cpus, require_kernel, serial};
use memcg_drift::{
    cgroup::{RunGroup, detect_layout},
    workload::{Workload, workload_binary},
};

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run memcg-drift")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bad-input failure: exit code non-zero, exactly one line on stderr naming the problem.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err:?}"
    );
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(err.starts_with("memcg-drift: "), "{err:?}");
}

/// Our loaded BPF programs, as "name#id" (bpftool's view), to prove nothing stays loaded.
fn our_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output();
    let Ok(out) = out else { return vec![] };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some(format!("{}#{}", p["name"].as_str()?, p["id"])))
                .filter(|n| {
                    n.starts_with("tp_btf_")
                        || n.starts_with("tp_memcg")
                        || n.starts_with("tp_lruvec")
                        || n.starts_with("trial_")
                        || n.starts_with("fentry_memcg")
                        || n.starts_with("kprobe_memcg")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Our programs still loaded once they have had time to go: at most `n` after waiting up to
/// 5 s for fewer. A process's programs do not disappear when it exits: closing a tracing
/// link frees it after an RCU Tasks Trace grace period (`bpf_link_free` ->
/// `dealloc_deferred`), and only then drops the program, so `bpftool` can list them for a
/// few milliseconds more (seen: a list of three, empty on the next read).
fn programs_left(n: usize) -> Vec<String> {
    programs_left_beside(n, &[])
}

/// Our programs still loaded that are not in `before` (ids are never reused while a program
/// lives), once they have had time to go: at most `n`, after waiting up to 5 s for fewer.
/// Programs of an earlier process that are still being freed when `before` is taken are not
/// counted against the run that follows.
fn programs_left_beside(n: usize, before: &[String]) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p: Vec<String> = our_programs()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if p.len() <= n || std::time::Instant::now() > deadline {
            return p;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// BPF links (or perf-event attachments, for kprobes) a process holds open.
fn bpf_links(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t.contains("bpf_link") || t.contains("[perf_event]")
        })
        .count()
}

#[test]
fn bad_duration_is_one_line() {
    let o = run(&["trace", "--cgroup", "/", "--duration", "5x"]);
    assert_one_line_error(&o, "5x");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn missing_cgroup_option_is_one_line() {
    let o = run(&["trace"]);
    assert_one_line_error(&o, "--cgroup");
}

#[test]
fn bad_paths_are_one_line_errors() {
    if !require_kernel("bad_paths_are_one_line_errors") {
        return;
    }
    let _serial = serial();
    let o = run(&[
        "trace",
        "--cgroup",
        "/sys/fs/cgroup/memory/no/such/cgroup",
        "-d",
        "1s",
    ]);
    assert_one_line_error(&o, "does not exist");
    let o = run(&["trace", "--cgroup", "/etc/hostname", "-d", "1s"]);
    assert_one_line_error(&o, "/etc/hostname");
    let o = run(&["trace", "--cgroup", "/tmp", "-d", "1s"]);
    assert_one_line_error(&o, "/tmp");
    // A directory of another controller's hierarchy is not a memory cgroup (hybrid hosts).
    if std::path::Path::new("/sys/fs/cgroup/cpu/cgroup.procs").exists() {
        let o = run(&["trace", "--cgroup", "/sys/fs/cgroup/cpu", "-d", "1s"]);
        assert_one_line_error(&o, "/sys/fs/cgroup/cpu");
    }
    let left = programs_left(0);
    assert!(left.is_empty(), "programs left loaded: {left:?}");
}

#[test]
fn not_root_is_one_line_error() {
    if !require_kernel("not_root_is_one_line_error") {
        return;
    }
    let _serial = serial();
    let mut cmd = Command::new(bin());
    cmd.args(["trace", "--cgroup", "/", "-d", "1s"]);
    // SAFETY: setuid in the forked child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))?;
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_one_line_error(&o, "needs root");
}

/// Runs the binary in a private mount namespace after `setup` (a shell snippet) changed what
/// the tool sees, e.g. hid the BTF or unmounted the memory controller. The host is unchanged.
fn in_private_mounts(setup: &str, args: &str) -> Output {
    let script = format!("set -e; {setup}; exec {} {args}", bin().display());
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare")
}

#[test]
fn no_btf_is_one_line_error() {
    if !require_kernel("no_btf_is_one_line_error") {
        return;
    }
    let _serial = serial();
    let o = in_private_mounts(
        "mount --bind /dev/null /sys/kernel/btf/vmlinux",
        "trace --cgroup / -d 1s",
    );
    assert_one_line_error(&o, "BTF");
    let o = in_private_mounts("mount --bind /dev/null /sys/kernel/btf/vmlinux", "doctor");
    assert!(!o.status.success(), "doctor must fail without BTF");
    assert!(String::from_utf8_lossy(&o.stdout).contains("cannot run"));
}

#[test]
fn no_memory_controller_is_one_line_error() {
    if !require_kernel("no_memory_controller_is_one_line_error") {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let o = in_private_mounts(
        &format!("umount -l {}", hier.root.display()),
        "trace --cgroup / -d 1s",
    );
    assert_one_line_error(&o, "memory controller");
}

#[test]
fn ctrl_c_during_attach_leaves_nothing_attached() {
    if !require_kernel("ctrl_c_during_attach_leaves_nothing_attached") {
        return;
    }
    let _serial = serial();
    let tracefs_before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(" - tracefs ");
    let child = Command::new(bin())
        .args(["trace", "--cgroup", "/", "-d", "30s"])
        .env("MEMCG_DRIFT_TEST_ATTACH_DELAY_MS", "3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the probes are attached (the delay runs right after attaching): the process
    // then holds BPF link file descriptors.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bpf_links(child.id()) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let links = bpf_links(child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        links >= 2,
        "the two stat hooks were never attached ({links} links)"
    );
    assert_one_line_error(&o, "interrupted while attaching");
    let left = programs_left(0);
    assert!(left.is_empty(), "programs left loaded: {left:?}");
    let tracefs_after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(" - tracefs ");
    assert_eq!(tracefs_before, tracefs_after, "tracefs mount state changed");
}

/// Runs `memcg-drift trace ARGS`, has the workload touch `n` pages once the tool says on
/// stderr that recording has begun, and returns the finished run's output.
/// Starts `memcg-drift trace ARGS` and returns once it says it is recording, with its stderr.
fn start_trace(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
) {
    let mut child = Command::new(bin())
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.starts_with("tracing "), "{line}");
    (child, err)
}

/// Waits for a trace of [`start_trace`] to end; asserts that it succeeded (showing the rest of
/// its stderr otherwise).
fn finish_trace(
    child: std::process::Child,
    mut err: std::io::BufReader<std::process::ChildStderr>,
) -> Output {
    let o = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(o.status.success(), "{rest}");
    o
}

/// Runs a trace while the workload touches `n` pages; asserts that the trace succeeded.
fn trace_while_touching(args: &[&str], w: &mut Workload, n: u64) -> Output {
    let (child, err) = start_trace(args);
    w.touch(n).unwrap();
    finish_trace(child, err)
}

#[test]
fn trace_json_reports_the_workload_exactly() {
    if !require_kernel("trace_json_reports_the_workload_exactly") {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let run_group = RunGroup::create(&hier).unwrap();
    let cg = run_group.child("trace-json").unwrap();
    let cpu = *online_cpus().last().unwrap();
    let mut w = Workload::spawn(&workload_binary(), &cg, cpu).unwrap();
    let path = cg.path().to_str().unwrap();
    let o = trace_while_touching(
        &["--cgroup", path, "--duration", "3s", "--json"],
        &mut w,
        100,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(doc["cgroup"].as_str(), Some(cg.path().to_str().unwrap()));
    assert_eq!(doc["lost"], 0);
    let rows = doc["rows"].as_array().unwrap();
    let anon = assert_anon_row(rows, None, cpu, 100);
    assert_eq!(anon["delta_bytes"], 100 * 4096);
    w.exit().unwrap();
    run_group.remove().unwrap();
}

/// `trace --descendants` gives the cgroups that exist at start dense slots (issue 11: no hash
/// lookup per event) and records cgroups made later through the hash maps: both show exactly
/// the pages touched in them (one NR_ANON_MAPPED per page, on the faulting CPU), and both
/// carry inferred charge readings where inference runs (the readings telescope to the usage).
#[test]
fn trace_descendants_slots_and_later_cgroups_agree_exactly() {
    if !require_kernel("trace_descendants_slots_and_later_cgroups_agree_exactly") {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let run_group = RunGroup::create(&hier).unwrap();
    let parent = run_group.child("slots").unwrap();
    let old = run_group.child("slots/old").unwrap();
    let cpu = *online_cpus().last().unwrap();
    let mut w = Workload::spawn(&workload_binary(), &old, cpu).unwrap();
    let parent_path = parent.path().to_str().unwrap();
    let args = [
        "--cgroup",
        parent_path,
        "--descendants",
        "-d",
        "4s",
        "--json",
    ];
    let (child, err) = start_trace(&args);
    let new = run_group.child("slots/new").unwrap();
    w.touch(100).unwrap();
    new.move_pid(w.pid()).unwrap();
    w.touch(70).unwrap();
    let o = finish_trace(child, err);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    // The parent and the child that existed: two slots.
    assert_eq!(doc["maps"]["slots"], 2, "{}", doc["maps"]);
    assert_eq!(doc["lost"], 0);
    let rows = doc["rows"].as_array().unwrap();
    assert_anon_row(rows, Some(old.id()), cpu, 100);
    assert_anon_row(rows, Some(new.id()), cpu, 70);
    assert!(
        !rows
            .iter()
            .any(|r| r["cgroup_id"] == parent.id() && r["item"] == "NR_ANON_MAPPED"),
        "the parent touched nothing itself"
    );
    let charge = &doc["charge"];
    if charge["inference"].is_string() {
        // Inference read both children's page_counter at their stat events, the slotted one
        // from its array slot and the later one from the hash map.
        let closing = charge["inferred_closing"].as_array().unwrap();
        for cg in [&old, &new] {
            let c = closing
                .iter()
                .find(|c| c["cgroup_id"] == cg.id())
                .unwrap_or_else(|| panic!("{}: {closing:?}", cg.path().display()));
            assert!(c["at_last_stat_event"].as_u64().is_some(), "{c}");
        }
    }
    w.exit().unwrap();
    run_group.remove().unwrap();
}

#[test]
fn trace_text_fits_100_columns() {
    if !require_kernel("trace_text_fits_100_columns") {
        return;
    }
    let _serial = serial();
    // A workload in a deep cgroup of our own gives the subtree of the root something to show,
    // with a long path, while the trace records.
    let hier = detect_layout().unwrap().memory.unwrap();
    let run_group = RunGroup::create(&hier).unwrap();
    run_group.child("a-rather-long-cgroup-name").unwrap();
    let cg = run_group
        .child("a-rather-long-cgroup-name/with-a-child-of-its-own")
        .unwrap();
    let mut w = Workload::spawn(&workload_binary(), &cg, online_cpus()[0]).unwrap();
    let o = trace_while_touching(&["--cgroup", "/", "--descendants", "-d", "2s"], &mut w, 100);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ITEM"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("NR_ANON_MAPPED") && l.contains("+100")),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    w.exit().unwrap();
    run_group.remove().unwrap();
}

/// `trace -p PID -i D --json`: the cgroup of the process, one JSON line per interval and the
/// final document on one line; the intervals' NR_ANON_MAPPED rows add up to the touched pages
/// exactly, as the whole run's row does.
#[test]
fn trace_pid_with_intervals_adds_up_exactly() {
    if !require_kernel("trace_pid_with_intervals_adds_up_exactly") {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let run_group = RunGroup::create(&hier).unwrap();
    let cg = run_group.child("trace-pid").unwrap();
    let cpu = *online_cpus().last().unwrap();
    let mut w = Workload::spawn(&workload_binary(), &cg, cpu).unwrap();
    let pid = w.pid().to_string();
    let o = trace_while_touching(
        &["-p", &pid, "-d", "2s", "-i", "300ms", "--json"],
        &mut w,
        100,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    let (last, intervals) = lines.split_last().unwrap();
    assert_eq!(last["cgroup"].as_str(), Some(cg.path().to_str().unwrap()));
    assert!(
        intervals.len() >= 4,
        "{} intervals in 2 s of 300 ms",
        intervals.len()
    );
    let anon = |rows: &serde_json::Value| -> i64 {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["item"] == "NR_ANON_MAPPED")
            .map(|r| r["delta_pages"].as_i64().unwrap())
            .sum()
    };
    let by_interval: i64 = intervals.iter().map(|i| anon(&i["rows"])).sum();
    for (n, i) in intervals.iter().enumerate() {
        assert_eq!(i["interval"], n as u64 + 1);
        assert_eq!(i["lost"], 0);
    }
    assert_eq!(by_interval, 100);
    assert_eq!(anon(&last["rows"]), 100);
    w.exit().unwrap();
    run_group.remove().unwrap();
    // A process that is gone: one line.
    let o = run(&["trace", "-p", "999999999", "-d", "1s"]);
    assert_one_line_error(&o, "no such process");
}

/// A panic in the middle of a run (injected after its second phase) still removes the run's
/// cgroups, files and workload, and leaves no program loaded or attached.
#[test]
fn a_panic_midway_leaves_nothing_behind() {
    if !require_kernel("a_panic_midway_leaves_nothing_behind") {
        return;
    }
    let _serial = serial();
    let before = our_programs();
    let o = Command::new(bin())
        .args(["run", "batch-skew", "--iterations", "3"])
        .env("MEMCG_DRIFT_TEST_PANIC_AT_PHASE", "2")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "exit 0 after a panic: {err}");
    assert!(err.contains("injected panic after phase 2"), "{err}");
    let hier = detect_layout().unwrap().memory.unwrap();
    let runs = hier.root.join(memcg_drift::cgroup::RUN_PARENT);
    let left: Vec<_> = std::fs::read_dir(&runs)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "runs left after the panic: {left:?}");
    // The charge-batch cache is the boot's, not the run's (workload::batch).
    let files: Vec<_> = std::fs::read_dir(memcg_drift::cgroup::owner_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name() != memcg_drift::workload::batch::CACHE_NAME)
        .map(|e| e.path())
        .collect();
    assert!(
        files.is_empty(),
        "run files left after the panic: {files:?}"
    );
    let left = programs_left_beside(0, &before);
    assert!(left.is_empty(), "programs left loaded: {left:?}");
}

#[test]
fn doctor_json_matches_what_this_kernel_allows() {
    if !require_kernel("doctor_json_matches_what_this_kernel_allows") {
        return;
    }
    let _serial = serial();
    let o = run(&["doctor", "--json"]);
    assert!(
        o.status.success(),
        "doctor failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["can_run"], true);
    // The charge batch, measured by doctor's own process: the same as this test process
    // measures (and the kernel tests check against every batch the charge probes see).
    let batch = &doc["charge_batch"]["Ok"];
    assert_eq!(batch["pages"], integration_tests::charge_batch(), "{doc}");
    assert!(
        batch["source"].as_str().unwrap().starts_with("measured: "),
        "{doc}"
    );
    // ... and the kernel source's for this version: `MEMCG_CHARGE_BATCH` was 32 until
    // 1813e51eece0 ("mm: memcg: increase MEMCG_CHARGE_BATCH to 64", 6.1), 64 since. The tool
    // never assumes either; this checks its measurement on the 5.10 guests and the rest.
    let version = integration_tests::kernel_version();
    let source_batch = if version >= (6, 1) { 64 } else { 32 };
    assert_eq!(batch["pages"], source_batch, "kernel {version:?}: {doc}");
    let flavour = |name: &str| {
        doc["flavours"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["flavour"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(flavour("tp_btf")["usable"], true, "{doc}");
    // Independent evidence for fentry: bpftrace's own feature probe ("kfunc: yes/no").
    if let Ok(info) = Command::new("bpftrace").arg("--info").output() {
        let text = String::from_utf8_lossy(&info.stdout).to_string()
            + &String::from_utf8_lossy(&info.stderr);
        if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("kfunc:")) {
            let yes = line.contains("yes");
            assert_eq!(
                flavour("fentry")["usable"],
                yes,
                "doctor vs bpftrace on fentry: {line}"
            );
            if !yes {
                let err = flavour("fentry")["error"].as_str().unwrap().to_string();
                assert!(
                    err.contains("Operation not permitted") || err.contains("EPERM"),
                    "{err}"
                );
            }
        }
    }
    // kprobes: usable exactly when the kernel has a kprobe PMU.
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    assert_eq!(flavour("kprobe")["usable"], pmu);
    // The stat hooks attached for real.
    let hooks = doc["hooks"].as_array().unwrap();
    for id in ["stat.memcg_state", "stat.lruvec_state"] {
        let h = hooks.iter().find(|h| h["id"] == id).unwrap();
        assert!(h["attached"].is_string(), "{id}: {h}");
    }
    let left = programs_left(0);
    assert!(left.is_empty(), "programs left loaded: {left:?}");
}
