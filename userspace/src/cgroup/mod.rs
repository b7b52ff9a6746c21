//! Cgroup layout detection, memory-cgroup readers and writers, and the tool's own cgroups.
//!
//! What lives here:
//! - [`mount`]: `/proc/self/mountinfo` parsing and the cgroup [`Layout`] (v1, v2 or hybrid,
//!   and where the memory controller is);
//! - [`parse`]: pure parsers of control-file contents (flat-keyed files, limits);
//! - [`memcg`]: [`MemCgroup`], one memory cgroup opened by path, with one reader per control
//!   file for both v1 and v2 (absent file or removed cgroup is `Ok(None)`, malformed content an
//!   error naming the file and line) and the limit writers;
//! - [`run`]: [`RunGroup`], the cgroups the tool creates under `<memory root>/memcg-drift/`,
//!   removed on drop, on SIGINT/SIGTERM ([`install_cleanup_on_signals`]) and on panic
//!   ([`install_cleanup_on_panic`]), and [`cleanup_stale`] for what a killed run left behind.
//!
//! Safety: writes and removals are confined to `memcg-drift/<run-id>` subtrees (plus enabling
//! `+memory` in the v2 root's and `memcg-drift/`'s `cgroup.subtree_control`). Processes are only
//! moved by the workload module, into cgroups of a run.
//!
//! Interpreting the numbers is left to the analysis modules; attaching probes to the kernel to
//! the probe modules.

mod memcg;
mod mount;
mod parse;
mod run;
mod signals;

use std::{io, path::PathBuf};

pub use memcg::{MemCgroup, parse_proc_cgroup};
pub use mount::{
    CgroupVersion, Layout, LayoutKind, MemoryHierarchy, Mount, V1Mount, detect_layout,
    layout_from_mounts, parse_mountinfo, unescape as unescape_proc_path,
};
pub use parse::{
    FlatKeyed, MemoryEvents, MemoryStat, ParseError, parse_flat_keyed, parse_limit, parse_u64_value,
};
pub use run::{
    CleanupReport, RUN_PARENT, RunGroup, cleanup_live_runs, cleanup_stale, cpuset_available,
    owner_dir,
};
pub use signals::{
    exit_for_pending_signal, install_cleanup_on_panic, install_cleanup_on_signals, pending_signal,
};

/// Resolves a `--cgroup` argument: a path inside the memory hierarchy, a path relative to its
/// root, or a cgroup path as `/proc/<pid>/cgroup` prints it (`/` is the root, `/a/b` is
/// `<root>/a/b`), so that paths copied from procfs work.
pub fn open_arg(hier: &MemoryHierarchy, arg: &std::path::Path) -> Result<MemCgroup, CgroupError> {
    if arg.is_absolute() && !arg.starts_with(&hier.root) {
        let under = hier.root.join(arg.strip_prefix("/").unwrap_or(arg));
        if under.join("cgroup.procs").is_file() {
            return MemCgroup::open(hier, &under);
        }
    }
    MemCgroup::open(hier, arg)
}

/// Errors of the cgroup module. Every variant's `Display` is one line naming the path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A path the tool writes that another user could have planted, refused or left alone.
    #[error(transparent)]
    Unsafe(#[from] crate::safefs::SafeFsError),
    /// An I/O error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A line of `/proc/self/mountinfo` that does not parse.
    #[error("/proc/self/mountinfo line {line}: {reason}: {content:?}")]
    Mountinfo {
        /// 1-based line number.
        line: usize,
        /// The line.
        content: String,
        /// What is wrong.
        reason: String,
    },
    /// No cgroup filesystem is mounted at all.
    #[error("no cgroup filesystem is mounted (no cgroup or cgroup2 entry in /proc/self/mountinfo)")]
    NoCgroupFs,
    /// No memory controller is available (neither a v1 memory hierarchy nor cgroup2 with memory).
    #[error(
        "no cgroup memory controller is mounted (neither a v1 memory hierarchy nor cgroup2 with memory)"
    )]
    NoMemoryController,
    /// The path does not exist.
    #[error("{}: no such cgroup (the path does not exist)", path.display())]
    NotFound {
        /// The path as given (made absolute).
        path: PathBuf,
    },
    /// The path is a file, not a cgroup directory.
    #[error("{}: is a file, not a cgroup directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The path is outside the memory hierarchy.
    #[error("{}: not inside the memory cgroup hierarchy at {}", path.display(), root.display())]
    NotInHierarchy {
        /// The path.
        path: PathBuf,
        /// The memory hierarchy's root.
        root: PathBuf,
    },
    /// A directory inside the hierarchy that is not a memory cgroup.
    #[error("{}: is a directory but not a memory cgroup (it has no {file})", path.display())]
    NotMemoryCgroup {
        /// The directory.
        path: PathBuf,
        /// The control file that is missing.
        file: &'static str,
    },
    /// A control file whose content does not parse.
    #[error("{}: line {line}: {reason}: {content:?}", path.display())]
    Malformed {
        /// The control file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending line.
        content: String,
        /// What is wrong.
        reason: String,
    },
    /// The operation exists only in the other cgroup version.
    #[error("{}: {what} exists only on cgroup {needs}, but this memory hierarchy is cgroup {has}", path.display())]
    VersionMismatch {
        /// The cgroup.
        path: PathBuf,
        /// The control file or feature.
        what: &'static str,
        /// The version it needs.
        needs: CgroupVersion,
        /// The version at hand.
        has: CgroupVersion,
    },
    /// A write or removal refused because the cgroup is not one the tool created.
    #[error("{}: refusing to modify a cgroup memcg-drift did not create (only {RUN_PARENT}/<run-id>/... is ours)", path.display())]
    NotOwned {
        /// The cgroup.
        path: PathBuf,
    },
    /// A bad child cgroup name.
    #[error("{name:?}: bad cgroup name ({reason})")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A cgroup still had processes or could not be removed in time.
    #[error("{}: could not remove: {reason}", path.display())]
    Busy {
        /// The cgroup.
        path: PathBuf,
        /// Why (processes left, last errno).
        reason: String,
    },
    /// A v1 memory hierarchy without the cpuset controller co-mounted.
    #[error(
        "the v1 memory hierarchy at {} has no cpuset controller (mount cpuset and memory \
         together, -o cpuset,memory)",
        root.display()
    )]
    NoV1Cpuset {
        /// The hierarchy's root.
        root: PathBuf,
    },
    /// cgroup2 without cpuset in the root's `cgroup.subtree_control`.
    #[error(
        "cpuset is not enabled in {} (the tool does not change the root's controllers; \
         enable it with: echo +cpuset > {})",
        path.display(),
        path.display()
    )]
    CpusetNotEnabled {
        /// The root's `cgroup.subtree_control`.
        path: PathBuf,
    },
}

impl CgroupError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CgroupError::Io {
            path: path.into(),
            source,
        }
    }
}

/// True for the errors that mean "the file or the cgroup is gone": `ENOENT`, and `ENODEV`,
/// which a control file opened before its cgroup was removed returns.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// Gates for tests that need root and a real memory hierarchy.
#[cfg(test)]
pub(crate) mod test_support {
    use super::MemoryHierarchy;

    /// Skips (None, with a line on stderr) unless running as root with a memory controller;
    /// with `REQUIRE_BPF=1` a skip is a failure instead.
    pub(crate) fn root_hierarchy(test: &str) -> Option<MemoryHierarchy> {
        let why = if !nix::unistd::geteuid().is_root() {
            "needs root".to_string()
        } else {
            match MemoryHierarchy::detect() {
                Ok(h) => return Some(h),
                Err(e) => e.to_string(),
            }
        };
        if std::env::var_os("REQUIRE_BPF").is_some_and(|v| v == "1") {
            panic!("{test}: cannot run ({why}) but REQUIRE_BPF=1");
        }
        eprintln!("skipping {test} - {why}");
        None
    }
}
