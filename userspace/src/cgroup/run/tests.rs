//! Unit tests of run groups and their cleanup (as root, on the host's cgroups).

use std::os::unix::fs::PermissionsExt as _;

use super::*;

#[test]
fn a_new_v1_cgroup_takes_its_parents_cpuset_where_its_own_is_empty() {
    let d = tempfile::tempdir().unwrap();
    let parent = d.path();
    fs::write(parent.join("cpuset.cpus"), "0-1\n").unwrap();
    fs::write(parent.join("cpuset.mems"), "0\n").unwrap();
    // What a v1 cpuset,memory hierarchy shows in a new cgroup: empty files.
    let child = parent.join("child");
    fs::create_dir(&child).unwrap();
    fs::write(child.join("cpuset.cpus"), "\n").unwrap();
    fs::write(child.join("cpuset.mems"), "1\n").unwrap();
    inherit_cpuset(&child).unwrap();
    assert_eq!(
        fs::read_to_string(child.join("cpuset.cpus")).unwrap(),
        "0-1"
    );
    // A value already set is left alone.
    assert_eq!(
        fs::read_to_string(child.join("cpuset.mems")).unwrap(),
        "1\n"
    );
    // No cpuset in the hierarchy: nothing is written.
    let plain = parent.join("plain");
    create_cgroup_dir(&plain, CgroupVersion::V1).unwrap();
    assert_eq!(fs::read_dir(&plain).unwrap().count(), 0);
    // On v2 nothing is copied, whatever the files say (empty means the parent's).
    let v2 = parent.join("v2");
    fs::create_dir(&v2).unwrap();
    fs::write(v2.join("cpuset.cpus"), "").unwrap();
    fs::remove_dir_all(&v2).unwrap();
    create_cgroup_dir(&v2, CgroupVersion::V2).unwrap();
    assert_eq!(fs::read_dir(&v2).unwrap().count(), 0);
    // The parent's values cannot be read: an error.
    let bad = plain.join("x");
    fs::create_dir(&bad).unwrap();
    fs::write(bad.join("cpuset.cpus"), "").unwrap();
    assert!(inherit_cpuset(&bad).is_err());
}

#[test]
fn a_new_v1_cgroup_is_made_hierarchical_where_it_is_not() {
    let d = tempfile::tempdir().unwrap();
    let flat = d.path().join("flat");
    fs::create_dir(&flat).unwrap();
    fs::write(flat.join("memory.use_hierarchy"), "0\n").unwrap();
    make_hierarchical(&flat).unwrap();
    assert_eq!(
        fs::read_to_string(flat.join("memory.use_hierarchy")).unwrap(),
        "1"
    );
    // Already hierarchical, or no such file (v2, or 5.11+ where it is always 1 anyway):
    // nothing is written.
    let set = d.path().join("set");
    fs::create_dir(&set).unwrap();
    fs::write(set.join("memory.use_hierarchy"), "1\n").unwrap();
    make_hierarchical(&set).unwrap();
    assert_eq!(
        fs::read_to_string(set.join("memory.use_hierarchy")).unwrap(),
        "1\n"
    );
    let none = d.path().join("none");
    fs::create_dir(&none).unwrap();
    make_hierarchical(&none).unwrap();
    assert_eq!(fs::read_dir(&none).unwrap().count(), 0);
}

#[test]
fn proc_stat_fields() {
    let text = "1234 (my (odd) comm) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 200\n";
    assert_eq!(parse_proc_stat(text), Some(('S', 987654)));
    assert_eq!(parse_proc_stat("1 (x) Z 0"), None);
    let real = "23901 (memcg_drift-837) S 21031 21027 9964 0 -1 4194304 199 0 0 0 1 0 0 0 20 0 3 0 94493 \
                144887808 1230 18446744073709551615 94175738555216";
    assert_eq!(parse_proc_stat(real), Some(('S', 94493)));
    let me = fs::read_to_string("/proc/self/stat").unwrap();
    assert!(parse_proc_stat(&me).is_some(), "{me}");
}

#[test]
fn owner_liveness() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("x.owner");
    assert!(owner_stale_reason(&f).unwrap().contains("missing"));
    let me = std::process::id();
    let start = start_time(me as i32).unwrap();
    fs::write(&f, format!("pid {me}\nstarttime {start}\n")).unwrap();
    assert_eq!(owner_stale_reason(&f), None);
    fs::write(&f, format!("pid {me}\nstarttime {}\n", start + 1)).unwrap();
    assert!(owner_stale_reason(&f).unwrap().contains("reused"));
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    fs::write(&f, format!("pid {dead}\nstarttime 1\n")).unwrap();
    assert!(owner_stale_reason(&f).unwrap().contains("dead"));
    fs::write(&f, "pid x\n").unwrap();
    assert!(owner_stale_reason(&f).unwrap().contains("malformed"));
}

use std::{os::unix::process::ExitStatusExt, process::Command};

use crate::cgroup::test_support::root_hierarchy;

fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    post_order(dir, &mut v);
    v
}

#[test]
fn run_group_create_child_remove_leaves_nothing() {
    let Some(hier) = root_hierarchy("run_group_create_child_remove_leaves_nothing") else {
        return;
    };
    let run = RunGroup::create(&hier).unwrap();
    let dir = run.cgroup().path().to_path_buf();
    let owner = run.owner_file().to_path_buf();
    assert_eq!(
        run.cgroup().rel_path(),
        Path::new("/").join(RUN_PARENT).join(run.run_id())
    );
    assert!(run.cgroup().is_owned());
    let own = fs::read_to_string(&owner).unwrap();
    assert!(
        own.starts_with(&format!("pid {}\n", std::process::id())),
        "{own}"
    );
    assert_eq!(owner_stale_reason(&owner), None);
    let a = run.child("a").unwrap();
    let b = run.child("a/b").unwrap();
    let c = run.child("c").unwrap();
    assert_eq!(b.rel_path(), run.cgroup().rel_path().join("a/b"));
    // Every child is a memory cgroup (on v2 only if subtree_control was set up).
    for cg in [&a, &b, &c] {
        assert!(
            cg.usage_bytes().unwrap().is_some(),
            "{}",
            cg.path().display()
        );
        assert!(cg.procs().unwrap().is_empty());
    }
    assert_ne!(a.id(), b.id());
    assert_eq!(run.cgroup().descendants().unwrap().len(), 3);
    // Bad names are refused before anything is created.
    for bad in ["", "..", "x/../y", "/abs", "memory.max", "cgroup.procs"] {
        assert!(run.child(bad).is_err(), "{bad:?}");
    }
    // Removal must cope with a child that is already gone.
    fs::remove_dir(c.path()).unwrap();
    run.remove().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!owner.exists(), "{} left behind", owner.display());
    assert!(!registry().iter().any(|r| r.run_dir == dir));
}

#[test]
fn run_group_drop_kills_processes_and_removes() {
    let Some(hier) = root_hierarchy("run_group_drop_kills_processes_and_removes") else {
        return;
    };
    let run = RunGroup::create(&hier).unwrap();
    let dir = run.cgroup().path().to_path_buf();
    let cg = run.child("sleeper").unwrap();
    let mut sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    cg.move_pid(sleeper.id() as i32).unwrap();
    assert_eq!(cg.procs().unwrap(), [sleeper.id() as i32]);
    drop(run);
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(
        tree(&dir).iter().all(|d| !d.exists()),
        "{} left behind",
        dir.display()
    );
}

#[test]
fn manifest_lines() {
    let m = parse_manifest(
        "64768 1234 /dev/shm/memcg-drift-1-2-tmpfs.ab\nbad line\n1 2 relative\n5 6 /var/tmp/a b\n",
    );
    assert_eq!(
        m,
        [
            (
                PathBuf::from("/dev/shm/memcg-drift-1-2-tmpfs.ab"),
                FileId {
                    dev: 64768,
                    ino: 1234
                }
            ),
            (PathBuf::from("/var/tmp/a b"), FileId { dev: 5, ino: 6 }),
        ]
    );
}

#[test]
fn private_dirs_are_recorded_and_removed_with_the_run() {
    let Some(hier) = root_hierarchy("private_dirs_are_recorded_and_removed_with_the_run") else {
        return;
    };
    let run = RunGroup::create(&hier).unwrap();
    let base = std::env::temp_dir();
    let d = run.private_dir(&base, "test").unwrap();
    assert_eq!(
        fs::symlink_metadata(&d).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    let name = d.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("memcg-drift-{}-test.", run.run_id())),
        "{name}"
    );
    fs::write(d.join("f"), b"x").unwrap();
    let manifest = fs::read_to_string(manifest_file(run.run_id())).unwrap();
    assert!(manifest.contains(&*d.to_string_lossy()), "{manifest}");
    let odir = fs::symlink_metadata(owner_dir()).unwrap();
    assert_eq!(odir.permissions().mode() & 0o7777, 0o700);
    let id = run.run_id().to_string();
    run.remove().unwrap();
    assert!(!d.exists());
    assert!(!manifest_file(&id).exists());
}

#[test]
fn cleanup_stale_removes_dead_runs_only() {
    let Some(hier) = root_hierarchy("cleanup_stale_removes_dead_runs_only") else {
        return;
    };
    let live = RunGroup::create(&hier).unwrap();
    let live_child = live.child("busy").unwrap();
    // A run whose owner is dead: its marker names a reaped child's pid.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let root = fs::canonicalize(&hier.root).unwrap();
    let stale_id = format!(
        "{dead_pid}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    fs::write(
        owner_file(&stale_id),
        format!("pid {dead_pid}\nstarttime 1\n"),
    )
    .unwrap();
    let stale = root.join(RUN_PARENT).join(&stale_id);
    fs::create_dir(&stale).unwrap();
    if hier.version == CgroupVersion::V2 {
        enable_memory_controller(&stale).unwrap();
    }
    fs::create_dir(stale.join("inner")).unwrap();
    let mut sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    fs::write(stale.join("inner/cgroup.procs"), sleeper.id().to_string()).unwrap();
    // A run without a marker is stale too.
    let orphan = root
        .join(RUN_PARENT)
        .join(format!("{dead_pid}-orphan-{}", std::process::id()));
    fs::create_dir(&orphan).unwrap();

    let report = cleanup_stale(&hier).unwrap();
    eprintln!("{report}");
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(!stale.exists() && !orphan.exists(), "{report}");
    assert!(!owner_file(&stale_id).exists());
    assert!(
        report.live.contains(&live.cgroup().path().to_path_buf()),
        "{report}"
    );
    // Another test process's cleanup may race us to it; if ours did it, it says so.
    if report.stale.iter().any(|(p, _)| p == &stale) {
        assert!(report.removed.contains(&stale.join("inner")), "{report}");
    }
    // The live run is untouched.
    assert!(live_child.path().is_dir());
    assert!(live_child.usage_bytes().unwrap().is_some());
    live.remove().unwrap();
}

#[test]
fn cleanup_report_text() {
    assert_eq!(CleanupReport::default().to_string(), "nothing to clean up");
    let r = CleanupReport {
        removed: vec!["/m/memcg-drift/1-2/a".into(), "/m/memcg-drift/1-2".into()],
        stale: vec![("/m/memcg-drift/1-2".into(), "owner pid 1 is dead".into())],
        live: vec!["/m/memcg-drift/3-4".into()],
        ..Default::default()
    };
    let s = r.to_string();
    assert!(
        s.contains("removed /m/memcg-drift/1-2\n") && s.contains("left alone /m/memcg-drift/3-4"),
        "{s}"
    );
    assert!(
        s.ends_with("2 cgroup(s) removed, 0 failed, 0 owner file(s) removed"),
        "{s}"
    );
}
