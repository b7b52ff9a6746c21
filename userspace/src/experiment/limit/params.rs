//! `run limit`: its options, and their validation before anything is created.

use super::*;
use crate::experiment::{ExperimentError, Result, refuse};

pub(super) fn mib(b: u64) -> String {
    if b.is_multiple_of(1 << 20) {
        format!("{}M", b >> 20)
    } else if b.is_multiple_of(1024) {
        format!("{}K", b >> 10)
    } else {
        format!("{b}B")
    }
}

pub use crate::units::parse_size;

/// Options of `run limit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// The hard limit of the `limited` cgroup, bytes.
    pub limit_bytes: u64,
    /// Anonymous memory added per growth step, bytes.
    pub step_bytes: u64,
    /// Pause between steps, ms.
    pub interval_ms: u64,
    /// Growth target (anonymous bytes in `limited`), bytes.
    pub grow_to_bytes: u64,
    /// v2 `memory.high`, bytes.
    pub high_bytes: Option<u64>,
    /// v1 `oom_kill_disable`.
    pub oom_disable: bool,
    /// Clean page cache (a file on a disk filesystem) in `limited` before growing, bytes.
    pub page_cache_bytes: u64,
    /// The directory of that file.
    pub cache_dir: Option<PathBuf>,
    /// tmpfs (shmem) in `limited` before growing, bytes (a file in /dev/shm).
    pub tmpfs_bytes: u64,
    /// Lower limit written after growing, bytes.
    pub shrink_to_bytes: Option<u64>,
    /// Anonymous memory touched in `origin` before the workload moves to `limited`, bytes.
    pub immigrate_bytes: u64,
    /// CPU the workload runs on.
    pub cpu: usize,
}

/// Raw options as the CLI gives them (before defaults that depend on others).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--limit`.
    pub limit: u64,
    /// `--step`.
    pub step: u64,
    /// `--interval`.
    pub interval: Duration,
    /// `--grow-to`.
    pub grow_to: Option<u64>,
    /// `--high`.
    pub high: Option<u64>,
    /// `--oom-disable`.
    pub oom_disable: bool,
    /// `--page-cache`.
    pub page_cache: u64,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--tmpfs`.
    pub tmpfs: u64,
    /// `--shrink-to`.
    pub shrink_to: Option<u64>,
    /// `--immigrate`.
    pub immigrate: u64,
    /// `--cpu`.
    pub cpu: Option<usize>,
}

pub(super) const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Where `--tmpfs` writes its file (the usual tmpfs of every distribution).
pub(super) const TMPFS_DIR: &str = "/dev/shm";
pub(super) const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Validates the options against the hierarchy (before anything is created) and fills in the
/// defaults. Errors are one line.
pub fn validate(hier: &MemoryHierarchy, o: &Options, page: u64) -> Result<Params> {
    let v2 = hier.version == CgroupVersion::V2;
    if o.high.is_some() && !v2 {
        refuse!(
            "--high needs cgroup v2 (memory.high); this machine's memory controller is cgroup v1"
        );
    }
    if o.oom_disable && v2 {
        refuse!("--oom-disable needs cgroup v1 (memory.oom_control); cgroup v2 has no such switch");
    }
    if o.limit < (1 << 20) {
        refuse!("--limit {} is below the 1M minimum", mib(o.limit));
    }
    if o.step < page {
        refuse!("--step must be at least one page ({page} bytes)");
    }
    let grow_to = o.grow_to.unwrap_or(match o.shrink_to {
        Some(_) => o.limit / 4 * 3,
        None => o.limit * 2,
    });
    if grow_to < page {
        refuse!("--grow-to must be at least one page ({page} bytes)");
    }
    if grow_to > o.limit.saturating_mul(4) {
        refuse!(
            "--grow-to {} is more than 4 times --limit {}",
            mib(grow_to),
            mib(o.limit)
        );
    }
    if let Some(h) = o.high
        && h >= o.limit
    {
        refuse!("--high {} must be below --limit {}", mib(h), mib(o.limit));
    }
    if let Some(t) = o.shrink_to
        && (t >= o.limit || t < page)
    {
        refuse!(
            "--shrink-to {} must be at least one page and below --limit {}",
            mib(t),
            mib(o.limit)
        );
    }
    if o.cache_dir.is_some() && o.page_cache == 0 {
        refuse!("--cache-dir only goes with --page-cache");
    }
    let cache_dir = if o.page_cache > 0 {
        let d = o
            .cache_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let st = nix::sys::statfs::statfs(&d).map_err(|e| {
            ExperimentError::Refused(format!(
                "--page-cache: cache directory {}: {e}",
                d.display()
            ))
        })?;
        let ty = st.filesystem_type().0 as i64;
        if ty == TMPFS_MAGIC || ty == RAMFS_MAGIC {
            refuse!(
                "--page-cache: {} is on tmpfs/ramfs, whose pages are not reclaimable page cache; name a disk-backed --cache-dir (or use --tmpfs)",
                d.display()
            );
        }
        Some(d)
    } else {
        None
    };
    if o.tmpfs > 0 {
        let d = Path::new(TMPFS_DIR);
        let ty = nix::sys::statfs::statfs(d)
            .map_err(|e| ExperimentError::Refused(format!("--tmpfs: {TMPFS_DIR}: {e}")))?
            .filesystem_type()
            .0 as i64;
        if ty != TMPFS_MAGIC {
            refuse!("--tmpfs: {TMPFS_DIR} is not a tmpfs here");
        }
    }
    let online = crate::experiment::online_cpus();
    let cpu = match o.cpu {
        Some(c) if !online.contains(&c) => {
            refuse!("--cpu {c} is not online (online: {online:?})")
        }
        Some(c) => c,
        None => *online
            .last()
            .ok_or_else(|| ExperimentError::Refused("no online CPU".into()))?,
    };
    let round = |b: u64| b / page * page;
    Ok(Params {
        limit_bytes: round(o.limit),
        step_bytes: round(o.step),
        interval_ms: o.interval.as_millis() as u64,
        grow_to_bytes: round(grow_to),
        high_bytes: o.high.map(round),
        oom_disable: o.oom_disable,
        page_cache_bytes: round(o.page_cache),
        cache_dir,
        tmpfs_bytes: round(o.tmpfs),
        shrink_to_bytes: o.shrink_to.map(round),
        immigrate_bytes: round(o.immigrate),
        cpu,
    })
}
