//! Shared helpers of the kernel integration tests.
//!
//! Every test that needs root, BPF or a memory cgroup calls [`require_kernel`] first. Without
//! the prerequisites it prints why and returns `false` (the test then passes vacuously), unless
//! `REQUIRE_BPF=1` is set (CI, `cargo xtask test`, the QEMU guests), where a missing
//! prerequisite fails the test: a skipped kernel test must never pass silently there.

pub mod scale;

use std::path::PathBuf;

/// Serialises the kernel tests of one test binary: they load and count BPF programs and
/// measure per-CPU deltas, which other tests running at the same time would disturb.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when kernel tests must not skip.
pub fn strict() -> bool {
    std::env::var("REQUIRE_BPF").is_ok_and(|v| v == "1")
}

/// Checks root, kernel BTF and a memory controller; see the module docs.
pub fn require_kernel(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("not root".to_string());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("no /sys/kernel/btf/vmlinux".to_string());
    }
    match memcg_drift::cgroup::detect_layout() {
        Ok(l) if l.memory.is_some() => {}
        Ok(_) => missing.push("no memory controller mounted".into()),
        Err(e) => missing.push(format!("cgroup layout: {e}")),
    }
    if memcg_drift::probes::OBJECT.is_empty() {
        missing.push("built without eBPF probes (run `cargo xtask setup`)".into());
    }
    if missing.is_empty() {
        // Measured once per process, before the test sets anything up (a test's own stocks
        // and tracers then never see the measuring workload).
        let _ = charge_batch_measured();
        return true;
    }
    let why = missing.join(", ");
    if strict() {
        panic!("{test}: REQUIRE_BPF=1 but {why}");
    }
    eprintln!("skipping {test} - {why}");
    false
}

/// The `memcg-drift` binary under test: `$MEMCG_DRIFT_BIN`, else the one cargo built next to
/// the test executable (`target/<profile>/memcg-drift`).
pub fn bin() -> PathBuf {
    memcg_drift::workload::workload_binary()
}

/// Online CPU ids.
pub fn online_cpus() -> Vec<usize> {
    aya_online_cpus()
}

fn aya_online_cpus() -> Vec<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut v = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                v.extend(a..=b);
            }
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// Runs `memcg-drift ARGS`, which must refuse them: a non-zero exit, exactly one line on
/// stderr that contains `needle`, and nothing of that very process left behind (run ids, and
/// so run cgroups, owner markers and scratch files, start with the run's pid). Returns the line.
pub fn assert_refused(args: &[&str], needle: &str) -> String {
    let child = std::process::Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} was accepted");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
    let prefix = format!("{pid}-");
    let hier = memcg_drift::cgroup::detect_layout()
        .unwrap()
        .memory
        .unwrap();
    for dir in [
        hier.root.join(memcg_drift::cgroup::RUN_PARENT),
        memcg_drift::cgroup::owner_dir(),
    ] {
        let ours: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        assert!(ours.is_empty(), "{args:?} left {ours:?}");
    }
    err.trim().to_string()
}

/// Asserts that no run directory is left under `memcg-drift/` (for tests that run alone).
pub fn no_runs_left() {
    let hier = memcg_drift::cgroup::detect_layout()
        .unwrap()
        .memory
        .unwrap();
    let dir = hier.root.join(memcg_drift::cgroup::RUN_PARENT);
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let left: Vec<_> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "runs left behind: {left:?}");
    }
}

/// What a run `run_id` left in the shared directories it may write to (`/dev/shm`, `/var/tmp`
/// and `extra`): its private `memcg-drift-<run-id>-*` directories, and its manifest
/// `/run/memcg-drift/<run-id>.created`. Empty when the run cleaned up.
pub fn private_dirs_left(run_id: &str, extra: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
    let prefix = format!("memcg-drift-{run_id}-");
    let mut dirs = vec![
        std::path::PathBuf::from("/dev/shm"),
        std::path::PathBuf::from("/var/tmp"),
    ];
    dirs.extend(extra.iter().map(|p| p.to_path_buf()));
    let mut left: Vec<std::path::PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    let manifest = memcg_drift::cgroup::owner_dir().join(format!("{run_id}.created"));
    if manifest.exists() {
        left.push(manifest);
    }
    left
}

/// What an SVG plot the tool wrote holds, read with an XML parser.
#[derive(Debug)]
pub struct SvgPlot {
    /// Every `<text>`'s content (title, axis descriptions, tick labels, legend).
    pub texts: Vec<String>,
    /// `<polyline>` elements (line series).
    pub polylines: usize,
    /// `<rect>` elements (background, bars, legend boxes).
    pub rects: usize,
}

/// Parses the SVG at `path` (fails the test on malformed XML or a root that is not an 800+
/// pixel wide `<svg>`), and checks that each of `texts` appears in some text element.
pub fn check_svg(path: &std::path::Path, texts: &[&str]) -> SvgPlot {
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&src)
        .unwrap_or_else(|e| panic!("{}: not XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", path.display());
    let width: f64 = root.attribute("width").unwrap().parse().unwrap();
    assert!(width >= 800.0, "{}: {width} px wide", path.display());
    let plot = SvgPlot {
        texts: root
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or("").trim().to_string())
            .collect(),
        polylines: root
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count(),
        rects: root
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .count(),
    };
    for t in texts {
        assert!(
            plot.texts.iter().any(|x| x.contains(t)),
            "{}: no text `{t}` in {:?}",
            path.display(),
            plot.texts
        );
    }
    plot
}

/// Runs `memcg-drift ARGS`, asserts it succeeded (showing its stderr otherwise) and returns the
/// JSON document it printed.
pub fn run_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        // A run whose verdict failed exits 1 with its report on stdout: show the failed checks.
        let failed: Vec<String> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|d| d["verdict"]["checks"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|c| c["ok"] != true)
            .map(|c| c.to_string())
            .collect();
        panic!(
            "{:?}: exit {:?}: {} failed checks: {failed:#?}",
            args.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

/// Asserts that a `trace --json` document's `rows` hold exactly one NR_ANON_MAPPED row of
/// `cgroup_id` (every cgroup when `None`): `pages` pages in as many events, on `cpu` (one
/// update per page touched, on the faulting CPU). Returns the row.
pub fn assert_anon_row(
    rows: &[serde_json::Value],
    cgroup_id: Option<u64>,
    cpu: usize,
    pages: i64,
) -> &serde_json::Value {
    let anon: Vec<_> = rows
        .iter()
        .filter(|r| r["item"] == "NR_ANON_MAPPED")
        .filter(|r| cgroup_id.is_none_or(|id| r["cgroup_id"] == id))
        .collect();
    assert_eq!(anon.len(), 1, "cgroup {cgroup_id:?}: {anon:?}");
    let row = anon[0];
    assert_eq!(row["cpu"], cpu, "cgroup {cgroup_id:?}: {row}");
    assert_eq!(row["delta_pages"], pages, "cgroup {cgroup_id:?}: {row}");
    assert_eq!(row["events"], pages, "cgroup {cgroup_id:?}: {row}");
    row
}

/// True in a guest booted with a swap device (`cargo xtask vm-test --swap`, whose /init sets
/// `MEMCG_DRIFT_SWAP=1`). The host has no swap, and the tool never gives a machine swap it
/// did not get a device for.
pub fn swap_guest() -> bool {
    std::env::var_os("MEMCG_DRIFT_SWAP").is_some_and(|v| v == "1")
}

/// `memcg-drift report FILE`: a recorded run rendered again as text (it must succeed).
pub fn report_text(record: &std::path::Path) -> String {
    let out = std::process::Command::new(bin())
        .arg("report")
        .arg(record)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report {}: {}",
        record.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `memcg-drift run …ARGS --json` and returns its report: exit 0, or exit 1 with a report
/// whose verdict has a failed check (the run itself completed).
pub fn run_report<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}), exit {:?}: {stderr}", out.status));
    let failed = doc["verdict"]["checks"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["ok"] != true));
    assert!(
        out.status.success() || (out.status.code() == Some(1) && failed),
        "exit {:?}: {stderr}",
        out.status
    );
    doc
}

/// `MEMCG_CHARGE_BATCH` as the tool measures it (`workload::batch`), or why it could not.
fn charge_batch_measured() -> Result<u64, String> {
    let hier = memcg_drift::cgroup::detect_layout()
        .map_err(|e| e.to_string())?
        .memory
        .ok_or("no memory controller mounted")?;
    memcg_drift::workload::batch::charge_batch(&hier)
        .map(|b| b.pages)
        .map_err(|e| e.to_string())
}

/// `MEMCG_CHARGE_BATCH` as the tool measures it; the kernel tests check the probes against it
/// (a wrong measurement fails them). Panics when it could not be measured.
pub fn charge_batch() -> u64 {
    charge_batch_measured().unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the kernel counts kernel memory nowhere for this hierarchy (5.10 on cgroup v2: no
/// MEMCG_KMEM statistic before 5.18 and no kmem page_counter on v2), as the ledger of the
/// root reports it (a missing `kmem` term). Experiments that need that count refuse there.
pub fn kmem_counted_nowhere() -> bool {
    let hier = memcg_drift::cgroup::detect_layout()
        .unwrap()
        .memory
        .unwrap();
    let root = memcg_drift::cgroup::MemCgroup::root(&hier).unwrap();
    let r = memcg_drift::explain::Explainer::new(&hier, root)
        .unwrap()
        .report()
        .unwrap();
    r.kmem_counted_nowhere()
}

/// A ledger's remainder where it must close: 0 pages, or where the kernel counts kernel
/// memory nowhere (5.10 on v2), that kernel memory, which is never negative.
pub fn assert_remainder(unexplained: i64, kmem_counted_nowhere: bool, what: &str) {
    if kmem_counted_nowhere {
        assert!(unexplained >= 0, "{what}: {unexplained}");
    } else {
        assert_eq!(unexplained, 0, "{what}");
    }
}

/// The running kernel's (major, minor), from uname: for tests that compare a measurement
/// with what the kernel source of that version says.
pub fn kernel_version() -> (u32, u32) {
    let uts = nix::sys::utsname::uname().unwrap();
    let mut v = uts
        .release()
        .to_str()
        .unwrap()
        .split(['.', '-'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0))
}

/// The hooks a `trace --json` document says it attached (`hooks[].used` and
/// `charge.hooks[].used`), each (flavour, target) once: where the benchmark's floor goes.
pub fn trace_used_hooks(doc: &serde_json::Value) -> Vec<memcg_drift::tracer::UsedHook> {
    use memcg_drift::plan::Flavour;
    let mut hooks = Vec::new();
    for h in doc["hooks"]
        .as_array()
        .into_iter()
        .chain(doc["charge"]["hooks"].as_array())
        .flatten()
    {
        let used = &h["used"];
        let (Some(f), Some(t)) = (used["flavour"].as_str(), used["target"].as_str()) else {
            continue;
        };
        let Some(flavour) = Flavour::ALL.into_iter().find(|x| x.name() == f) else {
            panic!("trace used a flavour this build does not know: {f}");
        };
        // One program doing two hooks' jobs (stat and inference) is listed for each.
        let hook = (flavour, t.to_string());
        if !hooks.contains(&hook) {
            hooks.push(hook);
        }
    }
    hooks
}
