//! A local user against a root run (issue 17): while each experiment that writes files runs, an
//! unprivileged attacker (`nobody`, a shell loop started with setuid) polls for the run's id and
//! plants symlinks to a root-only file, and pre-existing files of its own, at every path it can
//! predict (the names older versions used), inside every private directory of the run it can see,
//! and at the real names it could read from `/run/memcg-drift` if that were readable. The run
//! must leave the link targets and the planted files untouched, use private paths (or refuse in
//! one line), and leave nothing behind. `--record` through another user's symlink in a sticky
//! directory is refused, and the record's temporary file is not a predictable name.
//!
//! Runs on the host (cgroup v1) and in the guests (v2).

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{bin, private_dirs_left, require_kernel, serial};
use memcg_drift::{cgroup::detect_layout, safefs::random_suffix};

const NOBODY: u32 = 65534;
const VICTIM_TEXT: &[u8] = b"root-only secret, must never change\n";
const PLANTED_TEXT: &str = "planted by nobody";

/// The attacker: polls the world-readable cgroup tree for run ids and plants everything it can.
/// Prints one line per thing that worked (`PLANTED`, `FILE`, `SAW`) and per thing that must never
/// work (`LISTED`, `INSIDE`, `MOVED`). Shell builtins only in the polling loop, and each thing it
/// finds is attacked once: the guests' 2 emulated CPUs must not drown in process starts.
const ATTACKER: &str = r#"
victim=$1; runs=$2
tried=" "
i=0
while [ $i -lt 24000 ]; do
  i=$((i + 1))
  set -- /run/memcg-drift/*
  [ -e "$1" ] && echo "LISTED /run/memcg-drift"
  for real in "$@"; do
    [ -e "$real" ] || continue
    case "$tried" in *" $real "*) continue ;; esac
    tried="$tried$real "
    ln -s "$victim" "$real.x" 2>/dev/null && echo "INSIDE $real.x"
    ln -s "$victim" "$real/tmpfs" 2>/dev/null && echo "INSIDE $real/tmpfs"
  done
  for d in "$runs"/*/; do
    [ -d "$d" ] || continue
    d=${d%/}; id=${d##*/}
    for p in /dev/shm/memcg-drift-$id.tmpfs /var/tmp/memcg-drift-$id.tmpfs; do
      [ -L "$p" ] || { ln -s "$victim" "$p" 2>/dev/null && echo "PLANTED $p"; }
    done
    for p in /var/tmp/memcg-drift-$id.cache /dev/shm/memcg-drift-$id.cache; do
      [ -e "$p" ] || { echo "planted by nobody" > "$p" 2>/dev/null && echo "FILE $p"; }
    done
    for pd in /dev/shm/memcg-drift-$id-* /var/tmp/memcg-drift-$id-*; do
      [ -d "$pd" ] || continue
      case "$tried" in *" $pd "*) continue ;; esac
      tried="$tried$pd "
      echo "SAW $pd"
      for f in tmpfs cache x; do
        ln -s "$victim" "$pd/$f" 2>/dev/null && echo "INSIDE $pd/$f"
      done
      mv "$pd" "$pd.moved" 2>/dev/null && echo "MOVED $pd"
    done
  done
  sleep 0.02
done
"#;

struct Attack {
    child: Child,
}

impl Attack {
    fn start(victim: &Path) -> Attack {
        let runs = detect_layout()
            .unwrap()
            .memory
            .unwrap()
            .root
            .join(memcg_drift::cgroup::RUN_PARENT);
        // POSIX sh: busybox's in the guests.
        let child = Command::new("sh")
            .args(["-c", ATTACKER, "attacker"])
            .arg(victim)
            .arg(&runs)
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the attacker as nobody");
        Attack { child }
    }

    /// Stops the attacker and returns what it printed.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A root-only file (mode 600) the attacker aims at.
fn make_victim() -> PathBuf {
    let p = PathBuf::from(format!("/run/memcg-drift-victim-{}", random_suffix()));
    fs::write(&p, VICTIM_TEXT).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Removes what the attacker planted for `run_id` at the old predicted names.
fn remove_planted(run_id: &str) -> Vec<(PathBuf, String)> {
    let mut planted = Vec::new();
    for dir in ["/dev/shm", "/var/tmp"] {
        for ext in ["tmpfs", "cache"] {
            let p = PathBuf::from(format!("{dir}/memcg-drift-{run_id}.{ext}"));
            if let Ok(md) = fs::symlink_metadata(&p) {
                let what = if md.file_type().is_symlink() {
                    "link".to_string()
                } else {
                    fs::read_to_string(&p).unwrap_or_default()
                };
                planted.push((p.clone(), what));
                fs::remove_file(&p).unwrap();
            }
        }
    }
    planted
}

/// Runs `memcg-drift run ARGS --json` under attack; checks the victim, the planted files, the
/// attacker's failures and that nothing is left. Returns the attacker's lines.
fn run_under_attack(args: &[&str]) -> Vec<String> {
    let victim = make_victim();
    let attack = Attack::start(&victim);
    let out = Command::new(bin())
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let lines = attack.stop();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        fs::read(&victim).unwrap(),
        VICTIM_TEXT,
        "{args:?}: the root-only file was written; attacker: {lines:?}"
    );
    fs::remove_file(&victim).unwrap();
    let bad: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("LISTED") || l.starts_with("INSIDE") || l.starts_with("MOVED"))
        .collect();
    assert!(bad.is_empty(), "{args:?}: the attacker got in: {bad:?}");
    // Either the run used private paths and succeeded, or it refused in one line.
    let doc: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(d) => d,
        Err(_) => {
            assert!(!out.status.success(), "{args:?}: no report but exit 0");
            assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
            return lines;
        }
    };
    let run_id = doc["run_id"].as_str().unwrap().to_string();
    for (p, what) in remove_planted(&run_id) {
        assert!(
            what == "link" || what.trim() == PLANTED_TEXT,
            "{args:?}: the run wrote into the file nobody planted at {}: {what:?}",
            p.display()
        );
    }
    // The run finished and reported (exit 1 is a verdict check of the kernel's timing failing,
    // e.g. a cgroup released later than churn's short hold here: not this test's concern).
    let failed: Vec<&serde_json::Value> = doc["verdict"]["checks"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["ok"] != true).collect())
        .unwrap_or_default();
    assert!(
        out.status.success() || (out.status.code() == Some(1) && !failed.is_empty()),
        "{args:?}: exit {:?}: {stderr}",
        out.status
    );
    if !failed.is_empty() {
        eprintln!("{args:?}: verdict checks that failed (timing, not files): {failed:?}");
    }
    let left = private_dirs_left(&run_id, &[]);
    assert!(left.is_empty(), "{args:?}: left {left:?}");
    lines
}

/// A short `run shmem` with `extra` arguments.
fn small_run(extra: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(bin())
        .args(["run", "shmem", "--pages", "8", "--anon-pages", "8"])
        .args(extra)
        .output()
        .unwrap()
}

/// nobody plants a symlink to `target` at `at`.
fn plant_link(target: &Path, at: &Path) {
    let st = Command::new("ln")
        .arg("-s")
        .arg(target)
        .arg(at)
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(st.success(), "nobody could not plant {}", at.display());
}

#[test]
fn the_run_directory_is_private() {
    let test = "the_run_directory_is_private";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    // A short run creates /run/memcg-drift, or narrows one that an older version made 0755
    // (made so here, as those versions did).
    let odir = memcg_drift::cgroup::owner_dir();
    if odir.is_dir() {
        fs::set_permissions(&odir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = small_run(&["--json".as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = fs::symlink_metadata(memcg_drift::cgroup::owner_dir()).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
}

#[test]
fn limit_with_tmpfs_and_page_cache_resists_planted_paths() {
    let test = "limit_with_tmpfs_and_page_cache_resists_planted_paths";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let mut args = vec![
        "limit",
        "--tmpfs",
        "1M",
        "--limit",
        "16M",
        "--grow-to",
        "20M",
    ];
    // Page cache needs a disk filesystem at /var/tmp (the guests have only RAM filesystems).
    let disk = nix::sys::statfs::statfs("/var/tmp").is_ok_and(|s| {
        let t = s.filesystem_type().0;
        t != 0x0102_1994 && t != 0x8584_58f6
    });
    if disk {
        args.extend(["--page-cache", "1M"]);
    } else {
        eprintln!("{test}: /var/tmp is not on a disk filesystem here: tmpfs file only");
    }
    let lines = run_under_attack(&args);
    // The attack really ran: it learned the run id and planted at the predicted names, and it
    // saw the run's private directories (and could do nothing with them).
    assert!(
        lines.iter().any(|l| l.starts_with("PLANTED")),
        "the attacker never planted: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("SAW /dev/shm/")),
        "the attacker never saw the tmpfs directory: {lines:?}"
    );
}

#[test]
fn shmem_resists_planted_paths() {
    let test = "shmem_resists_planted_paths";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    run_under_attack(&["shmem", "--pages", "64", "--anon-pages", "16"]);
}

#[test]
fn churn_resists_planted_paths() {
    let test = "churn_resists_planted_paths";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    run_under_attack(&[
        "churn",
        "--cycles",
        "4",
        "--hold",
        "200ms",
        "--release-wait",
        "5s",
    ]);
}

#[test]
fn kmem_with_dentries_resists_planted_paths() {
    let test = "kmem_with_dentries_resists_planted_paths";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    run_under_attack(&["kmem", "--sockets", "8", "--dentries", "64"]);
}

#[test]
fn record_refuses_another_users_symlink_in_a_sticky_directory() {
    let test = "record_refuses_another_users_symlink_in_a_sticky_directory";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let victim = make_victim();
    let tmp = std::env::temp_dir();
    assert!(
        fs::metadata(&tmp).unwrap().permissions().mode() & 0o1002 == 0o1002,
        "{} is not a sticky shared directory here",
        tmp.display()
    );
    // nobody's symlink at the record path.
    let rec = tmp.join(format!("memcg-drift-rec-{}.json", random_suffix()));
    plant_link(&victim, &rec);
    let out = small_run(&["--record".as_ref(), rec.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("symlink owned by uid 65534"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(fs::read(&victim).unwrap(), VICTIM_TEXT);
    fs::remove_file(&rec).unwrap();

    // A path of our own in the same directory is written; the old temporary name
    // (`<file>.tmp-memcg-drift`), planted as nobody's symlink, is not followed.
    let rec = tmp.join(format!("memcg-drift-rec-{}.json", random_suffix()));
    let old_tmp = rec.with_extension("tmp-memcg-drift");
    plant_link(&victim, &old_tmp);
    let out = small_run(&["--record".as_ref(), rec.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&victim).unwrap(), VICTIM_TEXT);
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&rec).unwrap()).unwrap();
    assert_eq!(doc["experiment"], "shmem");
    let md = fs::symlink_metadata(&rec).unwrap();
    assert!(md.is_file() && md.permissions().mode() & 0o777 == 0o644);
    fs::remove_file(&rec).unwrap();
    fs::remove_file(&old_tmp).unwrap();
    fs::remove_file(&victim).unwrap();
}

/// Starts a long `run limit --tmpfs` and waits until its private tmpfs directory exists;
/// returns the process, the run id and that directory.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned; the caller waits for it"
)]
fn start_limit_with_tmpfs() -> (Child, String, PathBuf) {
    let mut child = Command::new(bin())
        .args([
            "run",
            "limit",
            "--tmpfs",
            "1M",
            "--limit",
            "64M",
            "--grow-to",
            "200M",
            "--step",
            "1M",
            "--interval",
            "500ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("memcg-drift-{}-", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run made no tmpfs directory");
        }
        let found = fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    && p.join("tmpfs").exists()
            });
        if let Some(dir) = found {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            // memcg-drift-<pid>-<nanos>-tmpfs.<random>
            let run_id = name
                .strip_prefix("memcg-drift-")
                .and_then(|r| r.strip_suffix(&name[name.rfind("-tmpfs.").unwrap()..]))
                .unwrap()
                .to_string();
            return (child, run_id, dir);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cleanup() -> String {
    let out = Command::new(bin()).arg("cleanup").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// After a SIGKILL, `cleanup` removes the private directory the run recorded, and only while the
/// inode at that path is still the one the run made: a directory put there since is left alone.
#[test]
fn cleanup_removes_only_the_recorded_private_directory() {
    let test = "cleanup_removes_only_the_recorded_private_directory";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let manifest = |id: &str| memcg_drift::cgroup::owner_dir().join(format!("{id}.created"));

    // 1. Killed, then cleaned up: the recorded directory goes, with the manifest.
    let (mut child, run_id, dir) = start_limit_with_tmpfs();
    assert!(manifest(&run_id).exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(dir.exists(), "a SIGKILL cannot remove anything");
    let text = cleanup();
    assert!(
        text.contains(&format!("removed {}", dir.display())),
        "{text}"
    );
    assert!(!dir.exists());
    assert!(private_dirs_left(&run_id, &[]).is_empty());

    // 2. Killed, and the directory replaced by another one (another inode): left alone.
    let (mut child, run_id, dir) = start_limit_with_tmpfs();
    child.kill().unwrap();
    child.wait().unwrap();
    let moved = dir.with_extension("moved-by-test");
    fs::rename(&dir, &moved).unwrap();
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("someone-elses"), b"keep").unwrap();
    let text = cleanup();
    assert!(
        text.contains(&format!("could not remove {}", dir.display()))
            && text.contains("left alone"),
        "{text}"
    );
    assert_eq!(fs::read(dir.join("someone-elses")).unwrap(), b"keep");
    assert!(
        moved.join("tmpfs").exists(),
        "the moved original was touched"
    );
    // A symlink at the recorded path is not followed either.
    fs::remove_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&moved, &dir).unwrap();
    let text = cleanup();
    assert!(text.contains("left alone"), "{text}");
    assert!(moved.join("tmpfs").exists(), "cleanup followed the symlink");
    fs::remove_file(&dir).unwrap();
    fs::remove_dir_all(&moved).unwrap();
    fs::remove_file(manifest(&run_id)).unwrap();
    assert!(private_dirs_left(&run_id, &[]).is_empty());
}
