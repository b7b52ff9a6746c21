//! Unit tests of the workload protocol and its parent side.

use std::fs;

use super::*;
use crate::cgroup::{CgroupVersion, MemoryHierarchy, RunGroup, test_support::root_hierarchy};

const CHILD_ENV: &str = "MEMCG_DRIFT_TEST_WORKLOAD_CHILD";

/// The workload side when this test binary re-runs itself (the lib's unit tests cannot
/// count on the `memcg-drift` binary being built, let alone up to date).
#[test]
fn workload_child_entry() {
    if std::env::var_os(CHILD_ENV).is_some() {
        workload_main();
    }
}

fn self_workload(cg: &MemCgroup, cpu: usize) -> Workload {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "workload::tests::workload_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    Workload::spawn_command(cmd, cg, cpu).unwrap()
}

/// Anonymous memory of the cgroup per memory.stat, in bytes.
fn anon_bytes(cg: &MemCgroup) -> u64 {
    let key = match cg.version() {
        CgroupVersion::V1 => "rss",
        CgroupVersion::V2 => "anon",
    };
    cg.stat().unwrap().unwrap().get(key).unwrap()
}

#[test]
fn ready_line_and_itoa() {
    assert_eq!(
        parse_ready("ready pid=12 cpu=1 page=4096"),
        Some((12, 1, 4096))
    );
    assert_eq!(parse_ready("ready pid=12 cpu=1"), None);
    assert_eq!(parse_ready("ok pong"), None);
    let mut b = [0; 16];
    assert_eq!(itoa(0, &mut b), b"0");
    assert_eq!(itoa(4294967295, &mut b), b"4294967295");
}

#[test]
fn spawn_refuses_cgroups_the_tool_did_not_create() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("other")).unwrap();
    fs::write(d.path().join("other/memory.current"), "0\n").unwrap();
    let hier = MemoryHierarchy {
        version: CgroupVersion::V2,
        root: d.path().to_path_buf(),
    };
    let cg = MemCgroup::open(&hier, Path::new("other")).unwrap();
    let e = Workload::spawn(Path::new("/bin/true"), &cg, 0).unwrap_err();
    assert!(
        matches!(e, WorkloadError::Cgroup(CgroupError::NotOwned { .. })),
        "{e}"
    );
}

#[test]
fn workload_binary_prefers_the_env_then_the_cli() {
    // Without MEMCG_DRIFT_BIN (the test runner does not set it), a test binary in
    // target/<profile>/deps finds target/<profile>/memcg-drift if it was built.
    if std::env::var_os("MEMCG_DRIFT_BIN").is_none() {
        let exe = std::env::current_exe().unwrap();
        let want = exe.parent().unwrap().join("../memcg-drift");
        let got = workload_binary();
        if want.is_file() {
            assert_eq!(got, want);
        } else {
            assert_eq!(got, PathBuf::from("memcg-drift"));
        }
    }
}

/// Page faults (minor + major) of process `pid` so far, all threads.
fn faults(pid: i32) -> u64 {
    let (minor, major) = super::faults(pid).unwrap();
    minor + major
}

#[test]
fn workload_faults_only_what_it_is_told() {
    let Some(hier) = root_hierarchy("workload_faults_only_what_it_is_told") else {
        return;
    };
    let run = RunGroup::create(&hier).unwrap();
    let cg = run.child("w").unwrap();
    let mut w = self_workload(&cg, 0);
    let pid = w.pid();
    let d = tempfile::tempdir().unwrap();
    let mut phases = Vec::new();
    for round in 0..3 {
        // A new file each round: write_file never reuses an existing one.
        let f = d.path().join(format!("data{round}"));
        let mut step = |name: &str, w: &mut Workload, op: &dyn Fn(&mut Workload)| {
            let before = faults(pid);
            op(w);
            phases.push((round, name.to_string(), faults(pid) - before));
        };
        step("ping", &mut w, &|w| w.ping().unwrap());
        step("touch 1000", &mut w, &|w| w.touch(1000).unwrap());
        step("touch 1", &mut w, &|w| w.touch(1).unwrap());
        step("free", &mut w, &|w| assert_eq!(w.free().unwrap(), 1001));
        step("cpu 0", &mut w, &|w| w.set_cpu(0).unwrap());
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            step("cpu 1 and back", &mut w, &|w| {
                w.set_cpu(1).unwrap();
                w.set_cpu(0).unwrap();
            });
        }
        step("write", &mut w, &|w| {
            assert_eq!(w.write_file(&f, 2 << 20).unwrap(), 2 << 20)
        });
        if round == 0 {
            // A name that exists (a planted symlink included) is refused, not overwritten.
            let link = d.path().join("planted");
            std::os::unix::fs::symlink(&f, &link).unwrap();
            assert!(w.write_file(&link, 1).is_err());
            assert!(w.write_file(&f, 1).is_err());
            assert_eq!(std::fs::metadata(&f).unwrap().len(), 2 << 20);
        }
        step("file", &mut w, &|w| {
            assert_eq!(w.read_file(&f, 2 << 20).unwrap(), 2 << 20)
        });
        step("sockets", &mut w, &|w| w.open_sockets(40, 1000).unwrap());
        step("closesockets", &mut w, &|w| {
            assert_eq!(w.close_sockets().unwrap(), 40)
        });
        step("dentries", &mut w, &|w| {
            w.create_dentries(30, d.path()).unwrap()
        });
        step("rmdentries", &mut w, &|w| {
            assert_eq!(w.remove_dentries(d.path()).unwrap(), 30)
        });
        step("errors", &mut w, &|w| {
            assert!(w.touch(0).is_err());
            assert!(w.read_file(Path::new("/nonexistent/x"), 1).is_err());
            assert!(w.write_file(Path::new("/nonexistent/x"), 1).is_err());
            assert!(w.set_cpu(100_000).is_err());
            assert!(w.command("bogus").is_err());
            assert!(w.command("sockets 0").is_err());
            assert!(w.command("dentries 1 /nonexistent/x").is_err());
        });
    }
    eprintln!("faults per phase: {phases:?}");
    for (round, name, n) in &phases {
        let want = match name.as_str() {
            "touch 1000" => 1000,
            "touch 1" => 1,
            _ => 0,
        };
        assert_eq!(
            *n, want,
            "round {round}, {name}: {n} faults, want {want}; all: {phases:?}"
        );
    }
    w.exit().unwrap();
    run.remove().unwrap();
}

#[test]
fn workload_touches_exact_pages_in_its_cgroup() {
    let Some(hier) = root_hierarchy("workload_touches_exact_pages_in_its_cgroup") else {
        return;
    };
    let run = RunGroup::create(&hier).unwrap();
    let cg = run.child("w").unwrap();
    let mut w = self_workload(&cg, 0);
    assert_eq!(cg.procs().unwrap(), [w.pid()]);
    assert_eq!(w.cpu(), 0);
    let page = w.page_size();
    let before = anon_bytes(&cg);
    w.touch(1000).unwrap();
    let after = anon_bytes(&cg);
    eprintln!(
        "anon after touch 1000: +{} pages (page {page})",
        (after - before) / page
    );
    assert!(
        after >= before + 1000 * page,
        "anon grew by {} bytes only",
        after - before
    );
    assert_eq!(w.free().unwrap(), 1000);
    // A second CPU where there is one.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 1 {
        w.set_cpu(1).unwrap();
        assert_eq!(w.cpu(), 1);
    }
    w.touch(10).unwrap();
    w.touch(5).unwrap();
    assert_eq!(w.free().unwrap(), 15);
    assert_eq!(w.free().unwrap(), 0);
    // Files: written, then read back through the page cache.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("with space");
    assert_eq!(w.write_file(&f, 3 << 20).unwrap(), 3 << 20);
    assert_eq!(fs::metadata(&f).unwrap().len(), 3 << 20);
    assert_eq!(w.read_file(&f, 1 << 20).unwrap(), 1 << 20);
    assert_eq!(w.read_file(&f, 10 << 20).unwrap(), 3 << 20);
    // Errors are answers, and the workload keeps serving.
    let e = w.read_file(Path::new("/nonexistent/x"), 1).unwrap_err();
    assert!(
        matches!(e, WorkloadError::Refused { .. }) && e.to_string().contains("errno 2"),
        "{e}"
    );
    assert!(matches!(w.touch(0), Err(WorkloadError::Refused { .. })));
    assert!(matches!(
        w.set_cpu(100_000),
        Err(WorkloadError::BadArgument(_) | WorkloadError::Refused { .. })
    ));
    assert!(matches!(
        w.read_file(Path::new("a\nb"), 1),
        Err(WorkloadError::BadArgument(_))
    ));
    w.ping().unwrap();
    let status = w.exit().unwrap();
    assert!(status.success(), "{status}");
    assert!(cg.procs().unwrap().is_empty());
    let dir = run.cgroup().path().to_path_buf();
    run.remove().unwrap();
    assert!(!dir.exists());
}

#[test]
fn dropping_a_workload_kills_it_and_timeouts_fire() {
    let Some(hier) = root_hierarchy("dropping_a_workload_kills_it_and_timeouts_fire") else {
        return;
    };
    let run = RunGroup::create(&hier).unwrap();
    let cg = run.child("w").unwrap();
    let mut w = self_workload(&cg, 0);
    let pid = w.pid();
    w.set_timeout(Duration::from_millis(200));
    // Reading 1 TiB of /dev/zero takes far longer than 200 ms.
    let e = w.read_file(Path::new("/dev/zero"), 1 << 40).unwrap_err();
    assert!(matches!(e, WorkloadError::Timeout { .. }), "{e}");
    drop(w);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "workload {pid} survived its drop"
    );
    assert!(cg.procs().unwrap().is_empty());
    run.remove().unwrap();
}

#[test]
fn workload_left_in_a_run_is_killed_by_its_removal() {
    let Some(hier) = root_hierarchy("workload_left_in_a_run_is_killed_by_its_removal") else {
        return;
    };
    let run = RunGroup::create(&hier).unwrap();
    let cg = run.child("w").unwrap();
    let mut w = self_workload(&cg, 0);
    w.touch(16).unwrap();
    let dir = run.cgroup().path().to_path_buf();
    run.remove().unwrap();
    assert!(!dir.exists());
    let e = w.ping().unwrap_err();
    assert!(matches!(e, WorkloadError::Exited { .. }), "{e}");
}
