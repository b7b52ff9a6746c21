//! `memcg-drift run batch-skew` against the real kernel (seed 000).
//!
//! The numbers asserted come from the kernel's rules (module docs of
//! userspace/src/experiment/batch_skew.rs): each anon fault adds exactly 1 to NR_ANON_MAPPED on
//! the faulting CPU, each zap subtracts on the zapping CPU, so the probes must record exactly
//! `+cpus*batch` on the alloc CPU during the touch and exactly `-batch` on CPU X during X's free;
//! the per-CPU never-flushed residue equals those updates unless a flush ran in between (the
//! periodic flusher every 2 s: then only the conservation of flushed + per-CPU is exact); the
//! stock follows the 64-page batch rule; dying cgroups pinned by page cache stay dying.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{bin, online_cpus, require_kernel, serial};
use memcg_drift::{
    cgroup::detect_layout,
    experiment::{
        Common, Report,
        batch_skew::{self, Params, Results},
    },
};

fn params(iterations: u32) -> Params {
    let cpus = online_cpus();
    Params {
        cpus: cpus.iter().copied().take(2).collect(),
        batch_pages: 30,
        alloc_cpu: *cpus.last().unwrap(),
        iterations,
        pin_page_cache: false,
        keep_dying: false,
    }
}

fn run_dir_root() -> PathBuf {
    let h = detect_layout().unwrap().memory.unwrap();
    h.root.join("memcg-drift")
}

/// Run directories of live or dead runs under `memcg-drift/`.
fn run_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(run_dir_root())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn results(r: &Report) -> Results {
    serde_json::from_value(r.results.clone()).unwrap()
}

fn assert_exact(r: &Report, p: &Params) {
    let res = results(r);
    let failed: Vec<_> = r.verdict.checks.iter().filter(|c| !c.ok).collect();
    assert!(
        failed.is_empty(),
        "checks failed: {failed:#?}\n{}",
        memcg_drift::experiment::render_text(r)
    );
    assert_eq!(r.lost_events, 0);
    // The kernel's skipped stat updates are reported wherever BTF names its counter (5.12+),
    // for the run and for every phase.
    let counted = memcg_drift::kernel::btf::KernelBtf::from_sys_fs()
        .unwrap()
        .has_member("bpf_prog_info", "recursion_misses");
    assert_eq!(r.skipped_events.is_some(), counted);
    assert!(
        r.phases
            .iter()
            .all(|ph| ph.skipped_events.is_some() == counted)
    );
    assert_eq!(res.iterations.len(), p.iterations as usize);
    let b = p.batch_pages as i64;
    let touch = p.cpus.len() as i64 * b;
    for it in &res.iterations {
        for row in &it.cpus {
            let want_touch = if row.cpu == p.alloc_cpu { touch } else { 0 };
            assert_eq!(row.touch, want_touch, "iter {} cpu {}", it.index, row.cpu);
            assert_eq!(row.free, -b, "iter {} cpu {}", it.index, row.cpu);
            if res.spill_threshold.is_some() {
                // Batched kernels: every CPU's residue predicted update by update.
                let want = row.predicted_residue.expect("updates one by one");
                assert_eq!(row.residue, Some(want), "iter {} cpu {}", it.index, row.cpu);
            } else if it.no_flush_between == Some(true) {
                assert_eq!(row.residue, Some(row.touch + row.free));
            }
        }
        assert_eq!(it.conserved_delta, Some(0));
        if res.spill_threshold.is_some() {
            let spilled: i64 = it.cpus.iter().filter_map(|c| c.spilled).sum();
            assert_eq!(it.flushed_delta, Some(spilled), "iter {}", it.index);
        }
        // Charges in the touch phase: anon + page tables, from the stock first. Where kernel
        // memory is counted nowhere (5.10 on v2) the rule cannot be checked.
        let alloc = it.cpus.iter().find(|c| c.cpu == p.alloc_cpu).unwrap();
        let s0 = it.stock_before_touch.expect("stock readable");
        let Some(charged) = it.charged_in_touch else {
            assert!(it.kmem_source.starts_with("none"), "{}", it.kmem_source);
            assert!(integration_tests::kmem_counted_nowhere());
            continue;
        };
        assert_eq!(
            alloc.stock_after_touch,
            Some(batch_skew::stock_after(
                s0,
                charged,
                integration_tests::charge_batch() as i64
            ))
        );
        // (`charged_in_touch` is anon plus the net kernel memory: kernel objects of the spawn
        // freed late, on the alloc CPU, can make the kernel part negative; their pages went back
        // to the stock, which the rule above accounts for. The anon part is `touch`, above.)
        let need = (charged - s0).max(0) as u64;
        assert_eq!(
            it.batches,
            need.div_ceil(integration_tests::charge_batch()),
            "iteration {}:\n{}",
            it.index,
            memcg_drift::experiment::render_text(r)
        );
        assert_eq!(
            it.batch_pages,
            integration_tests::charge_batch() * it.batches
        );
        // The touch phase's records are in the right windows: its phase exists and has the
        // updates, the free phases have nothing on the alloc CPU from the touch.
        let ph = r.phase(&format!("{} touch", it.cgroup)).unwrap();
        assert!(ph.end_ms >= ph.start_ms);
        assert_eq!(
            ph.per_cpu(&it.cgroup, "NR_ANON_MAPPED", &[p.alloc_cpu]),
            vec![touch]
        );
    }
    // At least one iteration had no flush between its snapshots (the snapshots are ~1 ms
    // apart, the periodic flush runs every 2 s), so the exact per-CPU residue was checked.
    // Batched kernels have no flush: every residue was predicted by the spill rule (above),
    // whose threshold is the measured batch.
    if let Some(t) = res.spill_threshold {
        assert_eq!(t, integration_tests::charge_batch() as i64);
        assert!(
            res.iterations
                .iter()
                .all(|i| i.max_abs_residue.unwrap() <= t)
        );
    } else {
        assert!(
            res.iterations
                .iter()
                .any(|i| i.no_flush_between == Some(true)),
            "every iteration saw a flush"
        );
    }
    // A touch phase whose charges the stock covered (up to batch - 1 pages can be stocked
    // before it) charges no batch; every batch charged is exactly the measured batch (checked
    // per iteration above), and the record says how it was measured.
    let kb = integration_tests::charge_batch();
    assert_eq!(res.kernel_charge_batch, kb);
    assert!(
        res.kernel_charge_batch_source.starts_with("measured: "),
        "{}",
        res.kernel_charge_batch_source
    );
    if res.iterations.iter().any(|i| i.batches > 0) {
        assert_eq!(res.observed_batch, Some(kb as f64));
    } else {
        assert_eq!(res.observed_batch, None);
    }
    // 2 CPUs x 30 pages, alloc on the second: cpu0 keeps -30, the alloc CPU 60-33-30 = -3.
    if p.cpus.len() == 2 && p.cpus[1] == p.alloc_cpu {
        assert_eq!(res.old_rule_stranded_per_iteration, 33);
    }
    assert_eq!(
        res.measured_drift,
        res.convergence.shown_after_wait - res.convergence.exact_after_wait
    );
    // Each removed cgroup's release, unless the run keeps them dying.
    let releases: Vec<&batch_skew::Release> = res
        .iterations
        .iter()
        .filter_map(|i| i.release.as_ref())
        .collect();
    // Only batched kernels wait for them (rstat flushes dying cgroups with the tree).
    if res.spill_threshold.is_none() || (p.pin_page_cache && p.keep_dying) {
        assert!(releases.is_empty());
    } else {
        assert_eq!(releases.len(), res.iterations.len());
    }
    for (k, rel) in releases.iter().enumerate() {
        // 5.10 (mem_cgroup_free -> memcg_flush_percpu_vmstats): a freed cgroup's per-CPU
        // residues are added to every ancestor's aggregate, page for page. A charge-stock slot
        // left empty (drain_all_stock skips it) can hold a removed cgroup until its CPU charges
        // another memcg: the next iteration's workload does, so only the last one can still be
        // dying at the end, and then the walk says what holds it.
        match rel.freed_after_ms {
            Some(_) => {
                assert!(
                    [batch_skew::Fate::Flushed, batch_skew::Fate::Empty].contains(&rel.fate()),
                    "{rel:?}"
                );
                assert_eq!(rel.carried(), rel.child_residue);
                assert_eq!(rel.lost(), 0);
            }
            None => {
                assert_eq!(k + 1, releases.len(), "{rel:?}");
                assert!(rel.held_by.is_some(), "{rel:?}");
            }
        }
    }
    if !releases.is_empty() {
        // The frees leave -batch on the CPUs other than the alloc CPU (below the threshold),
        // so a release carries pages, or the cgroup is still dying with them.
        assert!(
            releases.iter().any(|r| r.fate() != batch_skew::Fate::Empty),
            "{releases:?}"
        );
        // What is still dying at the end holds exactly the parent's drift (shown - exact is
        // minus the residues pending in its subtree).
        let stranded: i64 = releases
            .iter()
            .filter(|r| r.freed_after_ms.is_none())
            .map(|r| r.child_residue)
            .sum();
        assert_eq!(res.measured_drift, -stranded, "{releases:?}");
        if releases
            .iter()
            .any(|r| r.fate() == batch_skew::Fate::Flushed)
        {
            assert!(
                r.verdict
                    .summary
                    .contains("rose by exactly the child's residues"),
                "{}",
                r.verdict.summary
            );
        }
    }
    let dying = res.dying_over_time.last().unwrap().1 as i64;
    match res.spill_threshold {
        // Batched kernels: a removed cgroup's residues reach the parent only when it is
        // freed; while it is dying they stay out of the parent's memory.stat, within the
        // spill threshold per CPU.
        Some(t) if res.measured_drift != 0 => {
            assert_eq!(r.verdict.status, "dying cgroups hold residues");
            assert!(
                dying > 0,
                "drift {} with no dying cgroup",
                res.measured_drift
            );
            let cpus = online_cpus().len() as i64;
            assert!(res.measured_drift.abs() <= t * cpus * dying);
        }
        _ => {
            assert_eq!(r.verdict.status, "flushes into the parent");
            assert_eq!(res.measured_drift, 0);
        }
    }
}

#[test]
fn batch_skew_two_cpus_exact_per_cpu_records() {
    let test = "batch_skew_two_cpus_exact_per_cpu_records";
    if !require_kernel(test) {
        return;
    }
    let _s = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let p = params(3);
    let r = batch_skew::run(&hier, p.clone(), &Common::default()).unwrap();
    eprintln!("{}", memcg_drift::experiment::render_text(&r));
    assert_exact(&r, &p);
    // The lifecycle tracepoints saw each iteration's cgroup made and removed exactly once;
    // a release (unpinned: asynchronous, RCU + workqueue) never comes before its rmdir.
    for i in 0..p.iterations {
        let cg = format!("iter-{i}");
        let ev = |k: &str| -> Vec<f64> {
            r.lifecycle
                .iter()
                .filter(|e| e.cgroup == cg && e.kind == k)
                .map(|e| e.t_ms)
                .collect()
        };
        let (mk, rm, rel) = (ev("mkdir"), ev("rmdir"), ev("release"));
        assert_eq!((mk.len(), rm.len()), (1, 1), "{cg}: {:?}", r.lifecycle);
        assert!(mk[0] < rm[0]);
        assert!(
            rel.len() <= 1 && rel.iter().all(|t| *t >= rm[0]),
            "{cg}: {rel:?}"
        );
    }
    assert!(!run_dir_root().join(&r.run_id).exists(), "run left behind");
}

#[test]
fn batch_skew_pinned_cgroups_stay_dying() {
    let test = "batch_skew_pinned_cgroups_stay_dying";
    if !require_kernel(test) {
        return;
    }
    let _s = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let mut p = params(3);
    p.pin_page_cache = true;
    p.keep_dying = true;
    let r = batch_skew::run(&hier, p.clone(), &Common::default()).unwrap();
    let res = results(&r);
    assert_exact(&r, &p);
    // Each removed cgroup's file (written and read inside it) keeps it dying until the file is
    // deleted at the end of the run: after iteration i, exactly i+1 are dying.
    let dying: Vec<usize> = res.iterations.iter().map(|i| i.dying_after).collect();
    assert_eq!(dying, vec![1, 2, 3]);
    // Pinned: removed, never released during the run.
    let count = |k: &str| {
        r.lifecycle
            .iter()
            .filter(|e| e.kind == k && e.cgroup.starts_with("iter-"))
            .count()
    };
    assert_eq!(
        (count("rmdir"), count("release")),
        (3, 0),
        "{:?}",
        r.lifecycle
    );
    let led = &r.ledgers[0];
    integration_tests::assert_remainder(
        led.unexplained_pages,
        integration_tests::kmem_counted_nowhere(),
        &led.text,
    );
    let dying_json = led.json["dying"].as_array().unwrap();
    assert_eq!(dying_json.len(), 3, "{}", led.text);
    assert!(!run_dir_root().join(&r.run_id).exists(), "run left behind");
    assert!(
        !Path::new(&format!("/run/memcg-drift/{}.files", r.run_id)).exists(),
        "scratch left behind"
    );
}

#[test]
fn batch_skew_cli_text_json_and_record() {
    let test = "batch_skew_cli_text_json_and_record";
    if !require_kernel(test) {
        return;
    }
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("run.json");
    let cpus = online_cpus();
    let list = format!("{},{}", cpus[0], cpus[1.min(cpus.len() - 1)]);
    let out = Command::new(bin())
        .args([
            "run",
            "batch-skew",
            "--iterations",
            "1",
            "--cpus",
            &list,
            "--json",
        ])
        .arg("--record")
        .arg(&rec)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["experiment"], "batch-skew");
    let phases = j["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"iter-0 touch"), "{names:?}");
    assert!(names.contains(&format!("iter-0 free on cpu{}", cpus[0]).as_str()));
    let touch = phases.iter().find(|p| p["name"] == "iter-0 touch").unwrap();
    assert!(touch["start_ms"].as_f64().unwrap() <= touch["end_ms"].as_f64().unwrap());
    let anon = touch["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["cgroup"] == "iter-0" && s["item"] == "NR_ANON_MAPPED")
        .unwrap();
    let ncpus = if cpus.len() > 1 { 2 } else { 1 };
    assert_eq!(anon["total"], 30 * ncpus);
    assert_eq!(
        anon["per_cpu"][cpus.last().unwrap().to_string()],
        30 * ncpus,
        "{anon}"
    );
    // Batched kernels (5.10) may still hold a dying cgroup's residues at the end.
    let status = j["verdict"]["status"].as_str().unwrap().to_string();
    if j["results"]["spill_threshold"].is_null() {
        assert_eq!(status, "flushes into the parent");
    } else {
        assert!(
            ["flushes into the parent", "dying cgroups hold residues"].contains(&status.as_str()),
            "{status}"
        );
        assert!(
            j["results"]["iterations"][0]["cpus"][0]["predicted_residue"].is_i64(),
            "{}",
            j["results"]
        );
    }
    assert!(
        j["verdict"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true)
    );
    // The record re-renders offline, identically to what `run` prints.
    let text = Command::new(bin())
        .args(["report"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("verdict: {status}")), "{text}");
    // The plots of the record: per-CPU residues and stocks with the observed batch drawn; the
    // same files from `run --svg` and from `report --svg` of its record.
    let plots = dir.path().join("plots");
    let o = Command::new(bin())
        .arg("report")
        .arg(&rec)
        .arg("--svg")
        .arg(&plots)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run_id = j["run_id"].as_str().unwrap();
    let cpu_names: Vec<String> = list.split(',').map(|c| format!("cpu{c} residue")).collect();
    let mut want: Vec<&str> = cpu_names.iter().map(String::as_str).collect();
    want.extend([run_id, "iteration", "pages (per-CPU residue)"]);
    let p = integration_tests::check_svg(&plots.join("batch-skew-residues.svg"), &want);
    assert!(p.polylines >= cpu_names.len(), "{p:?}");
    integration_tests::check_svg(
        &plots.join("batch-skew-stock.svg"),
        &[run_id, "pages in the stock", "observed charge batch"],
    );
    let want = format!(
        "charge batch: kernel MEMCG_CHARGE_BATCH {} (measured: ",
        integration_tests::charge_batch()
    );
    assert!(text.contains(&want), "{text}");
    assert!(text.contains("iter-0 touch"));
    let again = Command::new(bin())
        .args(["report", "--json"])
        .arg(&rec)
        .output()
        .unwrap();
    let j2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(j, j2);
}

#[test]
fn batch_skew_bad_input_is_one_line_and_creates_nothing() {
    let test = "batch_skew_bad_input_is_one_line_and_creates_nothing";
    if !require_kernel(test) {
        return;
    }
    let _s = serial();
    for (args, needle) in [
        (vec!["--cpus", "9999"], "CPU 9999 is not online"),
        (vec!["--cpus", "1-0"], "range ends before it starts"),
        (vec!["--batch-pages", "0"], "--batch-pages"),
        (vec!["--keep-dying"], "--pin-page-cache"),
        (vec!["--alloc-cpu", "9999"], "CPU 9999 is not online"),
    ] {
        let mut full = vec!["run", "batch-skew"];
        full.extend(&args);
        integration_tests::assert_refused(&full, needle);
    }
    let out = Command::new(bin())
        .args(["report", "/nonexistent/memcg-drift.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}

/// A run killed with SIGKILL midway leaves its cgroups, workload, owner marker and scratch
/// files; `memcg-drift cleanup` removes all of them.
#[test]
fn batch_skew_sigkill_midway_then_cleanup_leaves_nothing() {
    let test = "batch_skew_sigkill_midway_then_cleanup_leaves_nothing";
    if !require_kernel(test) {
        return;
    }
    let _s = serial();
    let before = run_dirs();
    let mut child = Command::new(bin())
        .args([
            "run",
            "batch-skew",
            "--iterations",
            "10000",
            "--pin-page-cache",
            "--keep-dying",
            "--json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run has a workload inside an iteration cgroup.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (run_dir, workload) = loop {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run never started a workload");
        }
        let mut found = None;
        for d in run_dirs().into_iter().filter(|d| !before.contains(d)) {
            // The experiment's own workloads (`iter-N`), not the process that measures the
            // charge batch first in a run of its own, which may go between the listing and
            // the read.
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("iter-"))
            {
                let procs =
                    std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                if let Some(pid) = procs.lines().next() {
                    found = Some((d.clone(), pid.trim().parse::<i32>().unwrap()));
                }
            }
        }
        if let Some(f) = found {
            break f;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        run_dir.exists(),
        "SIGKILL cannot clean up; the run must still be there"
    );
    let owner = PathBuf::from(format!("/run/memcg-drift/{run_id}.owner"));
    assert!(owner.exists());
    let out = Command::new(bin()).arg("cleanup").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("stale run {}", run_dir.display())),
        "{text}"
    );
    assert!(!run_dir.exists(), "{text}");
    assert!(!owner.exists(), "{text}");
    assert!(
        !Path::new(&format!("/run/memcg-drift/{run_id}.files")).exists(),
        "{text}"
    );
    // The workload was killed before its cgroup was removed (a zombie until reaped by init
    // counts as gone).
    let stat = std::fs::read_to_string(format!("/proc/{workload}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "workload {workload} survived: {stat}"
    );
}

/// Starts a long batch-skew run and waits until one of its iteration cgroups holds a workload;
/// returns the child, its run directory and the workload's pid.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned; the caller waits for it"
)]
fn start_long_run() -> (std::process::Child, PathBuf, i32) {
    let mut child = Command::new(bin())
        .args([
            "run",
            "batch-skew",
            "--iterations",
            "10000",
            "--pin-page-cache",
            "--keep-dying",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("{}-", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run never started a workload");
        }
        for d in run_dirs().into_iter().filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        }) {
            // The experiment's own workloads (`iter-N`), not the process that measures the
            // charge batch first in a run of its own, which may go between the listing and
            // the read.
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("iter-"))
            {
                let procs =
                    std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                if let Some(pid) = procs.lines().next() {
                    return (child, d.clone(), pid.trim().parse().unwrap());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_run_gone(run_dir: &Path) {
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
    assert!(!Path::new(&format!("/run/memcg-drift/{run_id}.owner")).exists());
    assert!(!Path::new(&format!("/run/memcg-drift/{run_id}.files")).exists());
}

/// SIGINT and SIGTERM midway: the run removes its cgroups, workload and files itself, and
/// the exit status still says which signal ended it.
#[test]
fn batch_skew_sigint_and_sigterm_leave_nothing() {
    let test = "batch_skew_sigint_and_sigterm_leave_nothing";
    if !require_kernel(test) {
        return;
    }
    let _s = serial();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (child, run_dir, workload) = start_long_run();
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = child.wait_with_output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(sig),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_run_gone(&run_dir);
        let stat = std::fs::read_to_string(format!("/proc/{workload}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "{workload}: {stat}"
        );
    }
}

/// A workload that dies midway (here: killed from outside) ends the run with a one-line error
/// naming the workload and a non-zero exit, and nothing is left behind.
#[test]
fn batch_skew_workload_crash_is_one_line_and_leaves_nothing() {
    let test = "batch_skew_workload_crash_is_one_line_and_leaves_nothing";
    if !require_kernel(test) {
        return;
    }
    let _s = serial();
    let (child, run_dir, workload) = start_long_run();
    // SAFETY: plain kill(2) of the run's workload process.
    unsafe { libc::kill(workload, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("workload"), "{err}");
    assert_run_gone(&run_dir);
}
