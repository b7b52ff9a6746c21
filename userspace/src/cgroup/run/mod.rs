//! The tool's own cgroups: [`RunGroup`] (`<memory root>/memcg-drift/<run-id>` and its
//! children), their removal on every exit path, and [`cleanup_stale`] for runs a killed
//! process left behind.
//!
//! # Ownership
//! Before creating `memcg-drift/<run-id>`, a run writes `/run/memcg-drift/<run-id>.owner`
//! (`pid P` and `starttime T`, field 22 of `/proc/P/stat`): cgroupfs cannot hold regular
//! files, and writing the marker first means a run directory without a marker is never a run
//! being born. A run is stale when its marker is missing, its pid is gone or a zombie, or the
//! pid's start time differs (pid reuse). Only stale runs are removed by [`cleanup_stale`].
//!
//! # Removal on every exit path
//! - normal end and errors: [`RunGroup::remove`] or `Drop` (also during panic unwinding);
//! - SIGINT, SIGTERM, SIGHUP: [`super::install_cleanup_on_signals`] (call it once, early in
//!   `main`; in `signals.rs`);
//!   code that handles those signals itself (e.g. with `tokio::signal`) must not install it
//!   and instead drop its `RunGroup`s or call [`cleanup_live_runs`] from its handler;
//! - panics with `panic = "abort"` or in a thread other than the owner's:
//!   [`install_cleanup_on_panic`] (process-wide: not for test harnesses, where one test's
//!   panic would tear down the runs of tests still running; there, unwinding drops do it);
//! - `SIGKILL`: nothing can run; the next [`cleanup_stale`] (`memcg-drift cleanup`) does it.
//!
//! All live runs of the process sit in a process-global registry that the signal thread and
//! the panic hook drain. Removing a run kills every process inside (SIGKILL, or v2
//! `cgroup.kill`), waits up to ~2 s for `cgroup.procs` to empty, and removes the cgroups
//! deepest first, retrying the short `EBUSY` after an exit.

use std::{
    fmt, fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::safefs::{
    FileId, PrivateDir, Removed, create_private_subdir, ensure_private_root, remove_verified,
};

use super::{
    CgroupError, CgroupVersion, MemCgroup, MemoryHierarchy, is_gone, memcg::write_control,
    parse_flat_keyed,
};

/// The directory under the memory root that holds every run: `<root>/memcg-drift`.
pub const RUN_PARENT: &str = "memcg-drift";

/// How long removal waits for the processes of one cgroup to go.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long removal retries `EBUSY` from `rmdir` of one cgroup.
const RMDIR_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// Where owner markers live: `/run/memcg-drift`.
pub fn owner_dir() -> PathBuf {
    PathBuf::from("/run/memcg-drift")
}

pub(super) fn owner_file(run_id: &str) -> PathBuf {
    owner_dir().join(format!("{run_id}.owner"))
}

/// The run's scratch directory (files its workloads write): `/run/memcg-drift/<run-id>.files`.
fn scratch_dir(run_id: &str) -> PathBuf {
    owner_dir().join(format!("{run_id}.files"))
}

/// The run's record of the private directories it made outside `/run/memcg-drift` (in
/// `/dev/shm`, `/var/tmp` or a user's `--cache-dir`): `/run/memcg-drift/<run-id>.created`, one
/// line `<dev> <ino> <path>` each, written before the directory is used, so that
/// [`cleanup_stale`] can remove exactly those inodes after a SIGKILL and nothing else.
fn manifest_file(run_id: &str) -> PathBuf {
    owner_dir().join(format!("{run_id}.created"))
}

/// Parses a manifest's text into (path, id) entries; malformed lines are skipped.
fn parse_manifest(text: &str) -> Vec<(PathBuf, FileId)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let dev = f.next()?.parse().ok()?;
            let ino = f.next()?.parse().ok()?;
            let path = PathBuf::from(f.next()?);
            path.is_absolute().then_some((path, FileId { dev, ino }))
        })
        .collect()
}

/// Removes the private directories a stale run recorded, each only if its inode is still the
/// one recorded, then the manifest.
fn remove_manifest_dirs(run_id: &str, report: &mut CleanupReport) {
    let manifest = manifest_file(run_id);
    let Ok(text) = fs::read_to_string(&manifest) else {
        return;
    };
    let mut all_gone = true;
    for (path, id) in parse_manifest(&text) {
        match remove_verified(&path, id) {
            Ok(Removed::Removed) => report.removed.push(path),
            Ok(Removed::Absent) => {}
            Err(e) => {
                all_gone = false;
                report.failed.push((path, e.to_string()));
            }
        }
    }
    if all_gone {
        let _ = fs::remove_file(&manifest);
    }
}

/// Removes a scratch directory; a missing one is fine.
fn remove_scratch(dir: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::io(dir, e)),
    }
}

/// State `(field 3)` and start time (field 22, clock ticks since boot) from the text of
/// `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), field 22 is the 19th further field.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live (not zombie) process, or None.
fn start_time(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, start) = parse_proc_stat(&text)?;
    (!matches!(state, 'Z' | 'X' | 'x')).then_some(start)
}

/// Why a run is considered stale, or None if its owner is alive.
fn owner_stale_reason(owner: &Path) -> Option<String> {
    let text = match fs::read_to_string(owner) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some("owner file missing".into()),
        Err(e) => return Some(format!("owner file unreadable ({e})")),
    };
    let Ok(kv) = parse_flat_keyed(&text) else {
        return Some("owner file malformed".into());
    };
    let (Some(pid), Some(start)) = (kv.get("pid"), kv.get("starttime")) else {
        return Some("owner file malformed".into());
    };
    let Ok(pid) = i32::try_from(pid) else {
        return Some("owner file malformed".into());
    };
    match start_time(pid) {
        None => Some(format!("owner pid {pid} is dead")),
        Some(s) if s != start => Some(format!(
            "owner pid {pid} was reused (start time {s}, owner's {start})"
        )),
        Some(_) => None,
    }
}

fn enable_memory_controller(dir: &Path) -> Result<(), CgroupError> {
    enable_controller(dir, "memory")
}

/// v2: enables `controller` in `dir`'s `cgroup.subtree_control` unless it is on already.
fn enable_controller(dir: &Path, controller: &str) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&path).map_err(|e| CgroupError::io(&path, e))?;
    if current.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    write_control(&path, &format!("+{controller}"))
}

/// Whether the memory hierarchy can give the tool's cgroups a cpuset: v1 when cpuset is
/// co-mounted with memory (its root has `cpuset.mems`), v2 when the root's
/// `cgroup.subtree_control` has `cpuset` (the tool enables it below its own parent only,
/// never in the root). `Err` says in one line why not.
pub fn cpuset_available(hier: &MemoryHierarchy) -> Result<(), CgroupError> {
    match hier.version {
        CgroupVersion::V1 => {
            if hier.root.join("cpuset.mems").exists() {
                Ok(())
            } else {
                Err(CgroupError::NoV1Cpuset {
                    root: hier.root.clone(),
                })
            }
        }
        CgroupVersion::V2 => {
            let path = hier.root.join("cgroup.subtree_control");
            let current = fs::read_to_string(&path).unwrap_or_default();
            if current.split_whitespace().any(|c| c == "cpuset") {
                Ok(())
            } else {
                Err(CgroupError::CpusetNotEnabled { path })
            }
        }
    }
}

/// Every cgroup directory of the tree at `dir`, deepest first, `dir` last.
fn post_order(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        let mut subdirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subdirs.sort();
        for s in subdirs {
            post_order(&s, out);
        }
    }
    out.push(dir.to_path_buf());
}

fn read_procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match fs::read_to_string(&path) {
        Ok(t) => Ok(t.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if is_gone(&e) => Ok(Vec::new()),
        Err(e) => Err(CgroupError::io(path, e)),
    }
}

/// SIGKILLs every process in the cgroup at `dir` until `cgroup.procs` is empty (bounded).
/// Never signals the calling process.
fn kill_all(dir: &Path) -> Result<(), CgroupError> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = read_procs(dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        if pids.contains(&me) {
            return Err(CgroupError::Busy {
                path: dir.to_path_buf(),
                reason: format!("the calling process (pid {me}) is inside"),
            });
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::Busy {
                path: dir.to_path_buf(),
                reason: format!("processes {pids:?} still inside after {KILL_WAIT:?}"),
            });
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (already gone) is fine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        thread::sleep(POLL);
    }
}

fn rmdir_retry(dir: &Path) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + RMDIR_WAIT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(true),
            Err(e) if is_gone(&e) => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(POLL)
            }
            Err(e) => {
                return Err(CgroupError::Busy {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "rmdir: {e}; processes inside: {:?}",
                        read_procs(dir).unwrap_or_default()
                    ),
                });
            }
        }
    }
}

/// Kills the processes in and removes the cgroup tree at `dir`, deepest first. Returns the
/// cgroups removed. Already-removed cgroups are fine.
fn remove_tree(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut dirs = Vec::new();
    post_order(dir, &mut dirs);
    // v2 (5.14+): one write kills the whole subtree, including processes forking meanwhile.
    let kill = dir.join("cgroup.kill");
    let me = std::process::id() as i32;
    if kill.exists()
        && !dirs
            .iter()
            .any(|d| read_procs(d).is_ok_and(|p| p.contains(&me)))
    {
        let _ = write_control(&kill, "1");
    }
    let mut removed = Vec::new();
    let mut first_err = None;
    for d in &dirs {
        let r = kill_all(d).and_then(|()| rmdir_retry(d));
        match r {
            Ok(true) => removed.push(d.clone()),
            Ok(false) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// A run as the registry sees it.
#[derive(Debug)]
struct LiveRun {
    run_dir: PathBuf,
    parent_dir: PathBuf,
    owner_file: PathBuf,
    scratch_dir: PathBuf,
    /// `<run-id>.created`: the private directories made outside the scratch directory.
    manifest: PathBuf,
    /// Those directories, removed with the run (only while their inode is the one made).
    private_dirs: Mutex<Vec<PrivateDir>>,
    /// Set once removal was attempted; held during removal so a signal-time drain waits for
    /// a removal in progress instead of racing it.
    attempted: Mutex<bool>,
}

impl LiveRun {
    fn remove(&self) -> Result<(), CgroupError> {
        let mut attempted = self.attempted.lock().unwrap_or_else(|p| p.into_inner());
        if *attempted {
            return Ok(());
        }
        *attempted = true;
        remove_tree(&self.run_dir)?;
        // Files after the processes that wrote them are gone.
        remove_scratch(&self.scratch_dir)?;
        let dirs =
            std::mem::take(&mut *self.private_dirs.lock().unwrap_or_else(|p| p.into_inner()));
        let mut first_err = None;
        for d in &dirs {
            if let Err(e) = d.remove() {
                first_err.get_or_insert(CgroupError::Unsafe(e));
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        match fs::remove_file(&self.manifest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CgroupError::io(&self.manifest, e)),
        }
        // Only once the cgroups are gone: a marker left behind lets `cleanup_stale` finish.
        match fs::remove_file(&self.owner_file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CgroupError::io(&self.owner_file, e)),
        }
        // Fails (ENOTEMPTY/EBUSY) while another run uses it: that is fine.
        let _ = fs::remove_dir(&self.parent_dir);
        Ok(())
    }
}

static REGISTRY: Mutex<Vec<Arc<LiveRun>>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Arc<LiveRun>>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn unregister(live: &Arc<LiveRun>) {
    registry().retain(|r| !Arc::ptr_eq(r, live));
}

/// Undoes the process's pending machine changes ([`crate::undo`]) and removes every live run
/// of this process (what the signal thread and the panic hook do).
/// Returns the runs that could not be removed, with the error.
pub fn cleanup_live_runs() -> Vec<(PathBuf, CgroupError)> {
    // Machine changes first (a swap device turned off comes back on), then the cgroups.
    crate::undo::run_pending();
    let runs: Vec<Arc<LiveRun>> = registry().clone();
    let mut failed = Vec::new();
    for run in runs {
        if let Err(e) = run.remove() {
            failed.push((run.run_dir.clone(), e));
        }
        unregister(&run);
    }
    failed
}

/// One run of the tool: `<memory root>/memcg-drift/<run-id>` and the child cgroups created
/// through [`RunGroup::child`]. Removed (with every process inside killed) by
/// [`RunGroup::remove`] or on drop.
#[derive(Debug)]
pub struct RunGroup {
    run_id: String,
    dir: MemCgroup,
    live: Arc<LiveRun>,
}

impl RunGroup {
    /// Creates `memcg-drift/` if needed (v2: enabling `+memory` in the root's and its
    /// `cgroup.subtree_control`), writes the owner marker, then creates
    /// `memcg-drift/<pid>-<unix-nanos>` and registers the run for cleanup.
    pub fn create(hier: &MemoryHierarchy) -> Result<RunGroup, CgroupError> {
        let root = fs::canonicalize(&hier.root).map_err(|e| CgroupError::io(&hier.root, e))?;
        let parent = root.join(RUN_PARENT);
        // 0700: other users must not learn run ids or reach the scratch files.
        ensure_private_root(&owner_dir()).map_err(CgroupError::Unsafe)?;
        let pid = std::process::id() as i32;
        let start = start_time(pid).ok_or_else(|| {
            CgroupError::io(
                format!("/proc/{pid}/stat"),
                io::Error::other("cannot read own start time"),
            )
        })?;
        // The marker first (exclusive create also makes the run id unique).
        let (run_id, owner) = loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let run_id = format!("{pid}-{nanos}");
            let owner = owner_file(&run_id);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&owner)
            {
                Ok(mut f) => {
                    f.write_all(format!("pid {pid}\nstarttime {start}\n").as_bytes())
                        .map_err(|e| CgroupError::io(&owner, e))?;
                    break (run_id, owner);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CgroupError::io(&owner, e)),
            }
        };
        let run_dir = parent.join(&run_id);
        let made = Self::make_run_dir(hier.version, &root, &parent, &run_dir).and_then(|()| {
            MemCgroup::open(
                &MemoryHierarchy {
                    version: hier.version,
                    root: root.clone(),
                },
                &run_dir,
            )
        });
        let dir = match made {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_dir(&run_dir);
                let _ = fs::remove_file(&owner);
                let _ = fs::remove_dir(&parent);
                return Err(e);
            }
        };
        let live = Arc::new(LiveRun {
            run_dir,
            parent_dir: parent,
            owner_file: owner,
            scratch_dir: scratch_dir(&run_id),
            manifest: manifest_file(&run_id),
            private_dirs: Mutex::new(Vec::new()),
            attempted: Mutex::new(false),
        });
        registry().push(live.clone());
        Ok(RunGroup { run_id, dir, live })
    }

    fn make_run_dir(
        version: CgroupVersion,
        root: &Path,
        parent: &Path,
        run_dir: &Path,
    ) -> Result<(), CgroupError> {
        // A concurrent run that ends may remove an empty `memcg-drift/` between our two
        // mkdirs: then start over.
        let mut tries = 0;
        loop {
            tries += 1;
            if version == CgroupVersion::V2 {
                enable_memory_controller(root)?;
            }
            match create_cgroup_dir(parent, version) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CgroupError::io(parent, e)),
            }
            if version == CgroupVersion::V2 {
                match enable_memory_controller(parent) {
                    Err(CgroupError::Io { source, .. }) if is_gone(&source) && tries < 10 => {
                        continue;
                    }
                    r => r?,
                }
            }
            match create_cgroup_dir(run_dir, version) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 10 => continue,
                Err(e) => return Err(CgroupError::io(run_dir, e)),
            }
        }
    }

    /// The run id (`<pid>-<unix-nanos>`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's own cgroup, `memcg-drift/<run-id>`. On v2, put processes in children only
    /// (a cgroup that enables controllers for its children cannot hold processes).
    pub fn cgroup(&self) -> &MemCgroup {
        &self.dir
    }

    /// The owner marker file.
    pub fn owner_file(&self) -> &Path {
        &self.live.owner_file
    }

    /// The run's scratch directory (`/run/memcg-drift/<run-id>.files`, mode 0700 inside the
    /// tool's 0700 directory), created on first use; removed with the run, and by
    /// [`cleanup_stale`] after a killed run.
    pub fn scratch(&self) -> Result<&Path, CgroupError> {
        let d = &self.live.scratch_dir;
        create_private_subdir(d).map_err(CgroupError::Unsafe)?;
        Ok(d)
    }

    /// A private directory of the run inside `parent`, a directory other users may write
    /// (`/dev/shm`, `/var/tmp`, a `--cache-dir`): `<parent>/memcg-drift-<run-id>-<purpose>.<random>`,
    /// mode 0700 (see [`PrivateDir`]). Recorded in the run's manifest before it is returned and
    /// removed with the run (by [`cleanup_stale`] after a SIGKILL), only while the inode at its
    /// path is the one created. Files go inside it, created exclusively.
    pub fn private_dir(&self, parent: &Path, purpose: &str) -> Result<PathBuf, CgroupError> {
        if parent.as_os_str().as_encoded_bytes().contains(&b'\n') {
            return Err(CgroupError::BadName {
                name: parent.display().to_string(),
                reason: "a directory name with a newline",
            });
        }
        let parent = std::path::absolute(parent).map_err(|e| CgroupError::io(parent, e))?;
        let d = PrivateDir::create(&parent, &format!("memcg-drift-{}-{purpose}", self.run_id))
            .map_err(CgroupError::Unsafe)?;
        let id = d.id();
        let line = format!("{} {} {}\n", id.dev, id.ino, d.path().display());
        let recorded = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&self.live.manifest)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = recorded {
            let _ = d.remove();
            return Err(CgroupError::io(&self.live.manifest, e));
        }
        let path = d.path().to_path_buf();
        self.live
            .private_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(d);
        Ok(path)
    }

    /// Creates the child cgroup `name` (one or more `/`-separated components; the parent
    /// components must exist) inside the run. On v2 the parent first enables `+memory` in its
    /// `cgroup.subtree_control`.
    pub fn child(&self, name: &str) -> Result<MemCgroup, CgroupError> {
        let bad = |reason| CgroupError::BadName {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("empty"));
        }
        for comp in name.split('/') {
            match comp {
                "" => return Err(bad("empty component")),
                "." | ".." => return Err(bad("`.` and `..` are not allowed")),
                _ if comp.contains('\0') => return Err(bad("contains NUL")),
                _ if comp.starts_with("cgroup.") || comp.starts_with("memory.") => {
                    return Err(bad("looks like a control file"));
                }
                _ => {}
            }
        }
        let path = self.dir.path().join(name);
        let parent = path.parent().unwrap_or(self.dir.path());
        if self.dir.version() == CgroupVersion::V2 {
            enable_memory_controller(parent)?;
        }
        create_cgroup_dir(&path, self.dir.version()).map_err(|e| CgroupError::io(&path, e))?;
        MemCgroup::open(self.dir.hierarchy(), &path)
    }

    /// Gives the run's future children a cpuset (`cpuset.mems`, `cpuset.cpus`): on v2 enables
    /// `+cpuset` in `memcg-drift/`'s and the run's `cgroup.subtree_control` (both the tool's
    /// own); on v1 the controller must be co-mounted with memory. Check
    /// [`cpuset_available`] first for a one-line refusal before anything is created.
    pub fn enable_cpuset(&self) -> Result<(), CgroupError> {
        let run = self.dir.path();
        match self.dir.version() {
            CgroupVersion::V2 => {
                if let Some(parent) = run.parent() {
                    enable_controller(parent, "cpuset")?;
                }
                enable_controller(run, "cpuset")
            }
            CgroupVersion::V1 => {
                let mems = run.join("cpuset.mems");
                if mems.exists() {
                    Ok(())
                } else {
                    Err(CgroupError::io(
                        &mems,
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            "cpuset not co-mounted with memory",
                        ),
                    ))
                }
            }
        }
    }

    /// Kills every process left in the run's cgroups, removes them deepest first, the run
    /// directory, the owner marker, and `memcg-drift/` if no other run uses it.
    pub fn remove(self) -> Result<(), CgroupError> {
        let r = self.live.remove();
        unregister(&self.live);
        r
    }
}

impl Drop for RunGroup {
    fn drop(&mut self) {
        if let Err(e) = self.live.remove() {
            eprintln!(
                "memcg-drift: warning: leaving run {} behind ({e}); `memcg-drift cleanup` removes it",
                self.run_id
            );
        }
        unregister(&self.live);
    }
}

/// Creates the cgroup directory `path` (its parent exists). Where cpuset shares the memory
/// controller's v1 hierarchy (`mount -t cgroup -o cpuset,cpu,memory`), a new cgroup's
/// `cpuset.cpus` and `cpuset.mems` start empty unless its parent has `cgroup.clone_children`
/// set, and no task may join it then (`cpuset_can_attach`: ENOSPC). The tool never changes
/// that flag on a cgroup it did not create; it copies the parent's two values into the new
/// cgroup, as the flag would. A cgroup it could not make usable is removed again. (On v2 an
/// empty `cpuset.cpus` means the parent's: nothing to do.)
///
/// Before 5.11 a v1 memcg can also be non-hierarchical (`memory.use_hierarchy` 0, the default
/// below a root nobody set it on): its charges and statistics then stop at it and never reach
/// its parent (`parent_mem_cgroup` is NULL, 5.10 memcontrol.h). Every experiment and ledger of
/// the tool is about a hierarchy, so a cgroup it creates that starts non-hierarchical is made
/// hierarchical (allowed while it has no children and its parent is not: the only way it can
/// start at 0). From 5.11 the file always reads 1.
fn create_cgroup_dir(path: &Path, version: CgroupVersion) -> io::Result<()> {
    fs::create_dir(path)?;
    if version != CgroupVersion::V1 {
        return Ok(());
    }
    inherit_cpuset(path)
        .and_then(|()| make_hierarchical(path))
        .inspect_err(|_| {
            let _ = fs::remove_dir(path);
        })
}

/// Sets `memory.use_hierarchy` of the new v1 cgroup `path` to 1 where it reads 0 (see
/// [`create_cgroup_dir`]); nothing where the file is absent or already 1.
fn make_hierarchical(path: &Path) -> io::Result<()> {
    let file = path.join("memory.use_hierarchy");
    match fs::read_to_string(&file) {
        Ok(v) if v.trim() == "0" => fs::write(&file, "1")
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies the parent's `cpuset.cpus` and `cpuset.mems` into `path` where `path` has them and
/// they are empty (see [`create_cgroup_dir`]); nothing elsewhere.
fn inherit_cpuset(path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = match fs::read_to_string(path.join(file)) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !own.trim().is_empty() {
            continue;
        }
        let from = fs::read_to_string(parent.join(file))?;
        fs::write(path.join(file), from.trim())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.join(file).display())))?;
    }
    Ok(())
}

mod cleanup;
#[cfg(test)]
mod tests;

pub use cleanup::{CleanupReport, cleanup_stale};
