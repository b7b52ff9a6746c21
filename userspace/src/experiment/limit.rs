//! `run limit` (seeds 001 and 003): grow anonymous memory in steps toward and past a hard limit
//! and report the timeline (usage against the limit, reclaim rounds, failcnt / `max` events,
//! `high` throttling, the OOM kill or why none happened); optionally shrink the limit while
//! usage is high; and show that charges taken before a process joined a cgroup stay with the
//! old one.
//!
//! The kernel's rules this experiment checks (sources: linux 6.18 unless said otherwise; 6.1 and
//! 6.12 read the same where it matters):
//! - **Where a charge goes.** A page is charged to the memcg of the task that faults it, at the
//!   fault (`mem_cgroup_charge` -> `charge_memcg` -> `try_charge_memcg`, mm/memcontrol.c), and
//!   it records that memcg in the folio (`commit_charge`). Moving the task later moves nothing:
//!   on 6.18 v1 `move_charge_at_immigrate` reads 0 always and refuses any other value
//!   (`mem_cgroup_move_charge_read`/`_write`, mm/memcontrol-v1.c: charge moving was removed);
//!   on 6.1/6.12 v1 it defaults to 0, and with 0 `mem_cgroup_can_attach` moves no charge; v2
//!   never moved charges. The uncharge of such a page later goes to the memcg recorded in the
//!   folio (`uncharge_folio` -> `uncharge_batch`), not to the task's current one (seed 001:
//!   "memory.current stayed 0 after moving the process in").
//! - **The OOM bound.** `page_counter_try_charge` (mm/page_counter.c) never lets usage pass
//!   `max`; `try_charge_memcg` first tries a whole `MEMCG_CHARGE_BATCH` (measured: `workload::batch`), then the
//!   request alone, reclaims, drains the stocks, retries `MAX_RECLAIM_RETRIES` times and only
//!   then calls `mem_cgroup_oom` -> `mem_cgroup_out_of_memory`. At the last failed try usage was
//!   `> max - 1` page, i.e. exactly `max` for one-page anon faults. Until the kill is reported
//!   usage can only fall by pages returned from other CPUs' charge stocks (the
//!   `drain_all_stock` work), and `refill_stock` drains a CPU's stock of a memcg as soon as it
//!   holds more than `MEMCG_CHARGE_BATCH` pages: so `max - batch * online CPUs <= usage <= max`
//!   at the kill, barring forced charges (`__GFP_NOFAIL`, `PF_MEMALLOC`), which this workload
//!   does not make.
//! - **No swap, no anon reclaim.** Without swap `can_reclaim_anon_pages` is false
//!   (mm/vmscan.c), so reclaim only takes file pages; anonymous and tmpfs (shmem, swap-backed)
//!   pages stay. Growth past the limit ends in the OOM killer.
//! - **Shrinking a limit below usage.** v1 `memory.limit_in_bytes` (`mem_cgroup_resize_max`,
//!   mm/memcontrol-v1.c): sets the new max only if usage fits, else drains the stocks once and
//!   reclaims (`try_to_free_mem_cgroup_pages(memcg, 1, ...)`) until it fits; when a round frees
//!   nothing the write fails with `EBUSY` and the old limit stays. v2 `memory.max`
//!   (`memory_max_write`, mm/memcontrol.c): sets the new max first, then drains, reclaims
//!   (`MAX_RECLAIM_RETRIES` fruitless rounds) and then invokes the OOM killer until usage fits
//!   or no victim is left; the write always succeeds.
//! - **oom_kill_disable (v1).** With `memory.oom_control` `oom_kill_disable 1`,
//!   `memcg1_oom_prepare` does not kill: a user fault sleeps in `mem_cgroup_oom_synchronize`
//!   (TASK_KILLABLE) with the memcg marked `under_oom`, until the limit is raised
//!   (`mem_cgroup_resize_max` -> `memcg1_oom_recover`), the disable is cleared, or the task is
//!   killed.

use std::{
    fmt::Write as _,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, OomKill, Report, Session, Verdict};
use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer},
    workload::{Workload, WorkloadError, batch::charge_batch, workload_binary},
};

fn mib(b: u64) -> String {
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

const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Where `--tmpfs` writes its file (the usual tmpfs of every distribution).
const TMPFS_DIR: &str = "/dev/shm";
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Validates the options against the hierarchy (before anything is created) and fills in the
/// defaults. Errors are one line.
pub fn validate(hier: &MemoryHierarchy, o: &Options, page: u64) -> anyhow::Result<Params> {
    let v2 = hier.version == CgroupVersion::V2;
    if o.high.is_some() && !v2 {
        anyhow::bail!(
            "--high needs cgroup v2 (memory.high); this machine's memory controller is cgroup v1"
        );
    }
    if o.oom_disable && v2 {
        anyhow::bail!(
            "--oom-disable needs cgroup v1 (memory.oom_control); cgroup v2 has no such switch"
        );
    }
    if o.limit < (1 << 20) {
        anyhow::bail!("--limit {} is below the 1M minimum", mib(o.limit));
    }
    if o.step < page {
        anyhow::bail!("--step must be at least one page ({page} bytes)");
    }
    let grow_to = o.grow_to.unwrap_or(match o.shrink_to {
        Some(_) => o.limit / 4 * 3,
        None => o.limit * 2,
    });
    if grow_to < page {
        anyhow::bail!("--grow-to must be at least one page ({page} bytes)");
    }
    if grow_to > o.limit.saturating_mul(4) {
        anyhow::bail!(
            "--grow-to {} is more than 4 times --limit {}",
            mib(grow_to),
            mib(o.limit)
        );
    }
    if let Some(h) = o.high
        && h >= o.limit
    {
        anyhow::bail!("--high {} must be below --limit {}", mib(h), mib(o.limit));
    }
    if let Some(t) = o.shrink_to
        && (t >= o.limit || t < page)
    {
        anyhow::bail!(
            "--shrink-to {} must be at least one page and below --limit {}",
            mib(t),
            mib(o.limit)
        );
    }
    if o.cache_dir.is_some() && o.page_cache == 0 {
        anyhow::bail!("--cache-dir only goes with --page-cache");
    }
    let cache_dir = if o.page_cache > 0 {
        let d = o
            .cache_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let st = nix::sys::statfs::statfs(&d)
            .map_err(|e| anyhow::anyhow!("--page-cache: cache directory {}: {e}", d.display()))?;
        let ty = st.filesystem_type().0 as i64;
        if ty == TMPFS_MAGIC || ty == RAMFS_MAGIC {
            anyhow::bail!(
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
            .map_err(|e| anyhow::anyhow!("--tmpfs: {TMPFS_DIR}: {e}"))?
            .filesystem_type()
            .0 as i64;
        if ty != TMPFS_MAGIC {
            anyhow::bail!("--tmpfs: {TMPFS_DIR} is not a tmpfs here");
        }
    }
    let online = super::online_cpus();
    let cpu = match o.cpu {
        Some(c) if !online.contains(&c) => {
            anyhow::bail!("--cpu {c} is not online (online: {online:?})")
        }
        Some(c) => c,
        None => *online
            .last()
            .ok_or_else(|| anyhow::anyhow!("no online CPU"))?,
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

/// One growth step (or the setup phases) as the timeline shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// The phase.
    pub phase: String,
    /// Anonymous bytes the workload asked for in `limited` so far (including this step).
    pub grown_bytes: u64,
    /// The step's `touch` completed.
    pub completed: bool,
    /// Usage of `limited` after the step, bytes.
    pub usage_bytes: Option<u64>,
    /// Its hard limit then (`None`: unlimited).
    pub limit_bytes: Option<u64>,
    /// Peak usage (v1 max_usage_in_bytes, v2 memory.peak), bytes.
    pub peak_bytes: Option<u64>,
    /// v1 `memory.failcnt` / v2 `memory.events` `max`, increase during the step.
    pub failcnt_delta: Option<u64>,
    /// v2 `memory.events` `high`, increase during the step.
    pub high_events_delta: Option<u64>,
    /// `oom` events (v2 memory.events) during the step.
    pub oom_events_delta: Option<u64>,
    /// `oom_kill` count of the cgroup (v1 oom_control, v2 memory.events), increase.
    pub oom_kill_delta: Option<u64>,
    /// Memcg reclaim rounds begun by tasks charging `limited` (vmscan tracepoints).
    pub reclaim_rounds: u64,
    /// Pages they reclaimed.
    pub reclaimed_pages: u64,
    /// memory.stat file / anon / shmem of `limited` after the step, bytes.
    pub file_bytes: Option<u64>,
    /// anon (v1 rss).
    pub anon_bytes: Option<u64>,
    /// shmem.
    pub shmem_bytes: Option<u64>,
    /// Wall time of the step, ms (throttling shows here).
    pub duration_ms: f64,
    /// Pages the CPUs' charge stocks hold for `limited` after the step (the residue reader's
    /// `stock` term); `None` where it could not be read (or in records of older versions).
    #[serde(default)]
    pub stock_pages: Option<i64>,
}

/// The "charges stay with the old cgroup" phase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Immigrate {
    /// Pages touched in `origin`.
    pub pages: u64,
    /// v1 `move_charge_at_immigrate` of `limited` (the destination decides); `None` on v2.
    pub move_charge_at_immigrate: Option<u64>,
    /// NR_ANON_MAPPED updates of `origin` / `limited` in the touch phase (probes).
    pub touch_anon_updates: (i64, i64),
    /// ... in the move phase.
    pub move_anon_updates: (i64, i64),
    /// ... in the phase that frees the origin pages from `limited`.
    pub free_anon_updates: (i64, i64),
    /// `origin` usage minus its charge stock and kernel memory before / after the move / after
    /// the free, pages.
    pub origin_charged_pages: (i64, i64, i64),
    /// `limited` usage minus its charge stock and kernel memory before / after the move, pages.
    pub dest_charged_pages: (i64, i64),
    /// `origin` NR_ANON_MAPPED (exact: flushed + pending) before / after the move, pages.
    pub origin_anon_pages: (i64, i64),
    /// Freed origin pages still charged after the free because a CPU's lru_add batch holds
    /// them (growth of the batches' unmapped folios of `origin` across the free; 6.18 does not
    /// drain the batch when unmapping), pages.
    #[serde(default)]
    pub origin_freed_in_lru_add: i64,
}

/// What the kernel log said about one OOM kill.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KmsgKill {
    /// Victim pid.
    pub pid: u32,
    /// Victim name.
    pub comm: String,
    /// `oom_memcg=` of the `oom-kill:` line (path in the memory hierarchy).
    pub oom_memcg: Option<String>,
    /// `memory: usage` of the OOM report, KiB.
    pub usage_kib: Option<u64>,
    /// `limit` of that line, KiB.
    pub limit_kib: Option<u64>,
    /// `failcnt` of that line.
    pub failcnt: Option<u64>,
    /// `anon-rss`, `file-rss`, `shmem-rss` of the `Killed process` line, KiB.
    pub rss_kib: Option<(u64, u64, u64)>,
}

/// The OOM outcome of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OomOutcome {
    /// The growth (or the shrink) had to end in a kill by the kernel's rules.
    pub kill_expected: bool,
    /// Kills counted by the cgroup's own `oom_kill` counter over the run.
    pub kill_counter: Option<u64>,
    /// What the kernel log said (one entry per kill of a run task).
    pub kmsg: Vec<KmsgKill>,
    /// Why the kernel log could not be read, if so.
    pub kmsg_error: Option<String>,
    /// Where `victim_rss_bytes` comes from.
    pub rss_source: String,
    /// Where `usage_at_kill_bytes` comes from.
    pub usage_source: String,
    /// Why no kill happened, when none did.
    pub no_kill_reason: Option<String>,
    /// v1 with --oom-disable: `under_oom 1` was seen in memory.oom_control, after this many ms.
    pub under_oom_after_ms: Option<f64>,
    /// How a blocked workload was released.
    pub released_by: Option<String>,
    /// Usage of `limited` while the workload was blocked (under_oom 1), bytes.
    pub usage_when_blocked_bytes: Option<u64>,
}

/// The --shrink-to phase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shrink {
    /// Limit before, bytes.
    pub from_bytes: Option<u64>,
    /// The limit written, bytes.
    pub to_bytes: u64,
    /// Usage before, bytes.
    pub usage_before_bytes: Option<u64>,
    /// Pages on the anon LRU lists (anon + shmem) before: reclaim cannot go below this without
    /// swap.
    pub unreclaimable_floor_pages: i64,
    /// Pages on the file LRU lists before (reclaimable).
    pub file_pages: i64,
    /// Charge stock pages before (the first drain returns them).
    pub stock_pages: i64,
    /// What the kernel must do: `EBUSY`, `ok`, `oom-kill`, or `undecided`.
    pub predicted: String,
    /// The write succeeded.
    pub write_ok: bool,
    /// errno of a failed write.
    pub errno: Option<i32>,
    /// The error text.
    pub error: Option<String>,
    /// How long the write took, ms.
    pub duration_ms: f64,
    /// Usage after, bytes.
    pub usage_after_bytes: Option<u64>,
    /// Limit after, bytes.
    pub limit_after_bytes: Option<u64>,
    /// OOM kills the write caused (cgroup counter).
    pub oom_kills: Option<u64>,
    /// The workload survived.
    pub workload_alive: bool,
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// SwapTotal of /proc/meminfo, bytes.
    pub swap_total_bytes: u64,
    /// The workload's pid.
    pub workload_pid: i32,
    /// `limited`'s absolute path.
    pub limited_path: String,
    /// `origin`'s absolute path.
    pub origin_path: String,
    /// The immigrate phase, if run.
    pub immigrate: Option<Immigrate>,
    /// The timeline.
    pub timeline: Vec<Step>,
    /// The OOM outcome.
    pub oom: OomOutcome,
    /// The shrink, if run.
    pub shrink: Option<Shrink>,
    /// The lower bound the kernel guarantees for usage at an OOM kill, bytes
    /// (`limit - MEMCG_CHARGE_BATCH pages * online CPUs`).
    pub usage_at_kill_floor_bytes: u64,
    /// `MEMCG_CHARGE_BATCH` as measured before the run: the most pages one CPU's charge stock
    /// keeps for one memcg (`refill_stock` drains above it); 0 in records from before it was.
    #[serde(default)]
    pub kernel_charge_batch: u64,
    /// How it was measured.
    #[serde(default)]
    pub kernel_charge_batch_source: String,
    /// The kernel's bound on the stock of `limited` over all CPUs, pages (as `explain` reports
    /// it); `None` where the stock could not be read.
    #[serde(default)]
    pub stock_bound_pages: Option<i64>,
}

fn swap_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let kb: u64 = l
                    .strip_prefix("SwapTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kb * 1024)
            })
        })
        .unwrap_or(0)
}

/// The kernel log, read from the point it was opened.
struct Kmsg {
    f: Option<std::fs::File>,
    error: Option<String>,
    lines: Vec<String>,
}

impl Kmsg {
    fn open() -> Kmsg {
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
        {
            Ok(f) => {
                // SAFETY: lseek on a descriptor we own; /dev/kmsg supports SEEK_END (skip
                // everything logged so far).
                unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&f), 0, libc::SEEK_END) };
                Kmsg {
                    f: Some(f),
                    error: None,
                    lines: Vec::new(),
                }
            }
            Err(e) => Kmsg {
                f: None,
                error: Some(format!("/dev/kmsg: {e}")),
                lines: Vec::new(),
            },
        }
    }

    /// Reads every record logged since the last call.
    fn drain(&mut self) {
        let Some(f) = &mut self.f else { return };
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    // "prio,seq,ts,flags;message\n KEY=value..."
                    let first = rec.lines().next().unwrap_or("");
                    if let Some((_, msg)) = first.split_once(';') {
                        self.lines.push(msg.to_string());
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(format!("/dev/kmsg: {e}"));
                    break;
                }
            }
        }
    }
}

fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(key)? + key.len();
    let rest = &s[i..];
    let end = rest
        .find(|c: char| c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn kib_field(s: &str, key: &str) -> Option<u64> {
    field(s, key)?.trim_end_matches("kB").parse().ok()
}

/// Parses the kernel's OOM reports (mm/oom_kill.c `dump_header`, `dump_oom_victim`,
/// `__oom_kill_process`; mm/memcontrol.c `mem_cgroup_print_oom_meminfo`,
/// `mem_cgroup_print_oom_context`). The dump is rate-limited (`oom_rs`); the `Killed process`
/// line is not.
pub fn parse_kmsg(lines: &[String]) -> Vec<KmsgKill> {
    let mut out: Vec<KmsgKill> = Vec::new();
    let mut usage: Option<(u64, u64, u64)> = None;
    let mut pending: Option<KmsgKill> = None;
    for l in lines {
        if let Some(rest) = l.strip_prefix("memory: usage ") {
            let mut it = rest.split(", ");
            let u = it
                .next()
                .and_then(|x| x.trim_end_matches("kB").parse().ok());
            let lim = it
                .next()
                .and_then(|x| x.strip_prefix("limit "))
                .and_then(|x| x.trim_end_matches("kB").parse().ok());
            let fc = it
                .next()
                .and_then(|x| x.strip_prefix("failcnt "))
                .and_then(|x| x.trim().parse().ok());
            if let (Some(u), Some(lim), Some(fc)) = (u, lim, fc) {
                usage = Some((u, lim, fc));
            }
        } else if l.starts_with("oom-kill:") {
            let pid = field(l, ",pid=").and_then(|p| p.parse().ok()).unwrap_or(0);
            pending = Some(KmsgKill {
                pid,
                comm: field(l, ",task=").unwrap_or("").to_string(),
                oom_memcg: field(l, ",oom_memcg=").map(str::to_string),
                usage_kib: usage.map(|u| u.0),
                limit_kib: usage.map(|u| u.1),
                failcnt: usage.map(|u| u.2),
                rss_kib: None,
            });
            usage = None;
        } else if let Some(i) = l.find("Killed process ") {
            let rest = &l[i + "Killed process ".len()..];
            let pid: u32 = rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let comm = rest
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map(|(c, _)| c.to_string())
                .unwrap_or_default();
            let rss = match (
                kib_field(rest, "anon-rss:"),
                kib_field(rest, "file-rss:"),
                kib_field(rest, "shmem-rss:"),
            ) {
                (Some(a), Some(f), Some(s)) => Some((a, f, s)),
                _ => None,
            };
            let mut k = match pending.take() {
                Some(p) if p.pid == pid => p,
                _ => KmsgKill {
                    pid,
                    comm: comm.clone(),
                    ..Default::default()
                },
            };
            if k.comm.is_empty() {
                k.comm = comm;
            }
            k.rss_kib = rss;
            out.push(k);
        }
    }
    out
}

/// A reading of the cgroup's counters.
#[derive(Debug, Clone, Default)]
struct Counters {
    failcnt: Option<u64>,
    high: Option<u64>,
    oom: Option<u64>,
    oom_kill: Option<u64>,
}

fn counters(cg: &MemCgroup) -> Counters {
    let ev = cg.events().ok().flatten();
    let get = |k: &str| ev.as_ref().and_then(|e| e.get(k));
    Counters {
        failcnt: cg.failcnt().ok().flatten(),
        high: match cg.version() {
            CgroupVersion::V2 => get("high"),
            CgroupVersion::V1 => None,
        },
        oom: match cg.version() {
            CgroupVersion::V2 => get("oom"),
            CgroupVersion::V1 => None,
        },
        oom_kill: get("oom_kill"),
    }
}

fn delta(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(b?.saturating_sub(a?))
}

fn stat_bytes(cg: &MemCgroup, v1: &str, v2: &str) -> Option<u64> {
    let st = cg.stat().ok().flatten()?;
    st.get(match cg.version() {
        CgroupVersion::V1 => v1,
        CgroupVersion::V2 => v2,
    })
}

fn term_pages(r: &ExplainReport, name: &str) -> i64 {
    r.terms
        .iter()
        .find(|t| t.term == name)
        .map(|t| t.pages)
        .unwrap_or(0)
}

/// User pages charged: usage minus the charge stock (pre-charged, no page behind it yet) and
/// kernel memory (MEMCG_KMEM; object-stock drains move it by whole pages at any time).
fn charged_pages(r: &ExplainReport) -> i64 {
    r.usage_bytes / r.page_size as i64 - term_pages(r, "stock") - term_pages(r, "kmem")
}

/// Pages of unmapped folios waiting in lru_add batches (still charged until the batch drains).
fn unmapped_in_batches(r: &ExplainReport) -> i64 {
    r.terms
        .iter()
        .find(|t| t.term == "lru_add")
        .and_then(|t| t.unmapped)
        .unwrap_or(0)
}

fn anon_exact_pages(r: &ExplainReport) -> i64 {
    r.stat_book
        .iter()
        .find(|s| s.item == "NR_ANON_MAPPED")
        .map(|s| s.exact_bytes / r.page_size as i64)
        .unwrap_or(0)
}

fn under_oom(cg: &MemCgroup) -> Option<u64> {
    cg.events().ok().flatten()?.get("under_oom")
}

fn is_exited(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<WorkloadError>(),
        Some(WorkloadError::Exited { .. })
    )
}

/// Removes the page-cache file on every exit path.
struct FileGuard(Option<PathBuf>);

impl Drop for FileGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs the experiment (options validated by [`validate`]).
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> anyhow::Result<Report> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    let worst = p.grow_to_bytes.max(p.limit_bytes)
        + p.step_bytes
        + p.page_cache_bytes
        + p.tmpfs_bytes
        + p.immigrate_bytes
        + (32 << 20);
    // Measured before the run's cgroups exist (its own cgroup comes and goes first).
    let kb = charge_batch(hier)?;
    let mut s = Session::start(hier, "limit", worst, 4, common)?;
    let steps = p.grow_to_bytes.div_ceil(p.step_bytes);
    s.expect_phases(steps + 8);
    let bin = workload_binary();
    let origin = s.child("origin")?;
    let limited = s.child("limited")?;
    limited.set_limit_bytes(Some(p.limit_bytes))?;
    if let Some(h) = p.high_bytes {
        limited.set_high_bytes(Some(h))?;
    }
    if p.oom_disable {
        limited
            .write_owned("memory.oom_control", "1")
            .context("setting oom_kill_disable")?;
    }
    let swap_total_bytes = swap_total();
    let ncpu = super::online_cpus().len() as u64;
    let floor = p.limit_bytes.saturating_sub(kb.pages * page * ncpu);
    let mut kmsg = Kmsg::open();
    let c_start = counters(&limited);
    let mut w = s.phase("start in origin", |_| {
        let mut w = Workload::spawn(&bin, &origin, p.cpu)?;
        w.set_timeout(Duration::from_secs(120));
        Ok(w)
    })?;
    let pid = w.pid();
    // 1. Charges stay with the old cgroup.
    let immigrate = if p.immigrate_bytes > 0 {
        Some(immigrate_phases(
            &mut s,
            &mut w,
            &origin,
            &limited,
            p.immigrate_bytes / page,
        )?)
    } else {
        s.phase("move to limited", |_| Ok(w.move_to(&limited)?))?;
        None
    };
    let mut timeline = Vec::new();
    // One residue reader for the whole timeline (the stock after every step).
    let mut stock_reader = Explainer::new(&s.hier, limited.clone())
        .ok()
        .map(Explainer::without_stat_file);
    let mut stock_bound = None;
    // 2. Page cache and tmpfs in the mix.
    // Both files go in private directories of the run (mode 0700, unguessable names): the
    // default places are shared, sticky directories (docs/security.md).
    let cache_file = FileGuard(
        p.cache_dir
            .as_ref()
            .map(|d| s.run.private_dir(d, "cache").map(|d| d.join("cache")))
            .transpose()?,
    );
    if let Some(f) = &cache_file.0 {
        let t = Instant::now();
        let c0 = counters(&limited);
        let rec = s.phase(format!("page cache {}", mib(p.page_cache_bytes)), |_| {
            w.write_file(f, p.page_cache_bytes)?;
            // Written back now, so that the pages are clean and reclaim can drop them at once.
            std::fs::File::open(f)?.sync_all()?;
            Ok(())
        });
        rec?;
        let (stock, _) = read_stock(&mut stock_reader);
        timeline.push(step_row(&s, &limited, 0, true, &c0, t, stock));
    }
    let tmpfs_file = FileGuard(
        (p.tmpfs_bytes > 0)
            .then(|| {
                s.run
                    .private_dir(Path::new(TMPFS_DIR), "tmpfs")
                    .map(|d| d.join("tmpfs"))
            })
            .transpose()?,
    );
    if let Some(f) = &tmpfs_file.0 {
        let t = Instant::now();
        let c0 = counters(&limited);
        s.phase(format!("tmpfs {}", mib(p.tmpfs_bytes)), |_| {
            Ok(w.write_file(f, p.tmpfs_bytes)?)
        })?;
        let (stock, _) = read_stock(&mut stock_reader);
        timeline.push(step_row(&s, &limited, 0, true, &c0, t, stock));
    }
    // 3. Growth.
    let mut grown = 0u64;
    let mut alive = true;
    let mut under_oom_after_ms = None;
    let mut released_by = None;
    let mut usage_when_blocked_bytes = None;
    while grown < p.grow_to_bytes && alive {
        let n = p.step_bytes.min(p.grow_to_bytes - grown);
        grown += n;
        let name = format!("grow +{} to {}", mib(n), mib(grown));
        let c0 = counters(&limited);
        let t = Instant::now();
        let r = s.phase(name, |_| {
            if !p.oom_disable {
                return Ok(w.touch(n / page)?);
            }
            let (blocked, rel, u) = touch_watching_under_oom(&mut w, &limited, n / page)?;
            under_oom_after_ms = blocked.or(under_oom_after_ms);
            usage_when_blocked_bytes = u.or(usage_when_blocked_bytes);
            released_by = rel.or(released_by.take());
            Ok(())
        });
        let completed = r.is_ok();
        if let Err(e) = &r {
            if !is_exited(e) {
                return Err(r.unwrap_err());
            }
            alive = false;
            // The victim's exit and the last ring-buffer records.
            std::thread::sleep(Duration::from_millis(200));
        }
        let (stock, bound) = read_stock(&mut stock_reader);
        stock_bound = stock_bound.or(bound);
        let mut row = step_row(&s, &limited, grown, completed, &c0, t, stock);
        if !completed {
            row.completed = false;
        }
        timeline.push(row);
        if released_by.is_some() {
            break;
        }
        if alive && p.interval_ms > 0 && grown < p.grow_to_bytes {
            std::thread::sleep(Duration::from_millis(p.interval_ms));
        }
    }
    let ledger_at_end = s.explain(&limited)?;
    // 4. Shrink.
    let shrink = match p.shrink_to_bytes {
        Some(to) if alive => {
            let (sh, still) = shrink_phase(&mut s, &limited, to)?;
            alive = still;
            Some(sh)
        }
        _ => None,
    };
    std::thread::sleep(Duration::from_millis(100));
    kmsg.drain();
    let c_end = counters(&limited);
    if alive {
        s.phase("exit", |_| {
            w.exit()?;
            Ok(())
        })?;
    } else {
        drop(w);
    }
    let kmsg_kills: Vec<KmsgKill> = parse_kmsg(&kmsg.lines)
        .into_iter()
        .filter(|k| k.pid == pid as u32)
        .collect();
    let kill_expected = !p.oom_disable
        && (p.grow_to_bytes + p.tmpfs_bytes > p.limit_bytes
            || shrink.as_ref().is_some_and(|s| s.predicted == "oom-kill"));
    let (oom_kills, rss_source, usage_source) =
        oom_kills(&s, hier, &limited, pid, &kmsg_kills, &timeline);
    let kill_counter = delta(c_start.oom_kill, c_end.oom_kill);
    let no_kill_reason = if oom_kills.is_empty() && kill_counter.unwrap_or(0) == 0 {
        Some(if p.oom_disable && under_oom_after_ms.is_some() {
            "no kill because oom_kill_disable: the workload slept in the fault (under_oom 1) until the limit was removed".to_string()
        } else if p.oom_disable {
            "no kill because oom_kill_disable (the workload never reached the limit)".to_string()
        } else if p.grow_to_bytes + p.tmpfs_bytes <= p.limit_bytes {
            format!(
                "no kill: the growth target {} stays within the limit {}",
                mib(p.grow_to_bytes),
                mib(p.limit_bytes)
            )
        } else {
            "no kill although the growth passed the limit (reclaim kept up?)".to_string()
        })
    } else {
        None
    };
    let results = Results {
        params: p.clone(),
        swap_total_bytes,
        workload_pid: pid,
        limited_path: limited.path().display().to_string(),
        origin_path: origin.path().display().to_string(),
        immigrate,
        timeline,
        oom: OomOutcome {
            kill_expected,
            kill_counter,
            kmsg: kmsg_kills,
            kmsg_error: kmsg.error.clone(),
            rss_source,
            usage_source,
            no_kill_reason,
            under_oom_after_ms,
            released_by,
            usage_when_blocked_bytes,
        },
        shrink,
        usage_at_kill_floor_bytes: floor,
        kernel_charge_batch: kb.pages,
        kernel_charge_batch_source: kb.source,
        stock_bound_pages: stock_bound,
    };
    let checks = checks(&results, &oom_kills, hier.version);
    let verdict = verdict(&results, &oom_kills, checks);
    let ledgers = vec![LedgerAt::new(
        "limited after the growth",
        "limited",
        &ledger_at_end,
    )];
    let params = serde_json::to_value(&p)?;
    let results = serde_json::to_value(&results)?;
    drop(cache_file);
    drop(tmpfs_file);
    s.finish(params, results, ledgers, oom_kills, verdict)
}

/// The stock of the limited cgroup now (pages) and the kernel's bound on it, from the residue
/// reader (no memory.stat read: that could flush what other checks watch).
fn read_stock(reader: &mut Option<Explainer>) -> (Option<i64>, Option<i64>) {
    let Some(r) = reader.as_mut().and_then(|ex| ex.report().ok()) else {
        return (None, None);
    };
    let stock = r.terms.iter().find(|t| t.term == "stock").map(|t| t.pages);
    let bound = r
        .gap
        .bounds
        .iter()
        .find(|b| b.0 == "stock")
        .map(|b| b.1.pages);
    (stock, bound)
}

fn step_row(
    s: &Session,
    cg: &MemCgroup,
    grown: u64,
    completed: bool,
    c0: &Counters,
    t: Instant,
    stock_pages: Option<i64>,
) -> Step {
    let c1 = counters(cg);
    let ph = s.phases().last();
    let ch = ph.map(|p| p.charge_total("limited")).unwrap_or_default();
    Step {
        phase: ph.map(|p| p.name.clone()).unwrap_or_default(),
        grown_bytes: grown,
        completed,
        usage_bytes: cg.usage_bytes().ok().flatten(),
        limit_bytes: cg.limit_bytes().ok().flatten(),
        peak_bytes: cg.peak_bytes().ok().flatten(),
        failcnt_delta: delta(c0.failcnt, c1.failcnt),
        high_events_delta: delta(c0.high, c1.high),
        oom_events_delta: delta(c0.oom, c1.oom),
        oom_kill_delta: delta(c0.oom_kill, c1.oom_kill),
        reclaim_rounds: ch.reclaim_rounds,
        reclaimed_pages: ch.reclaimed,
        file_bytes: stat_bytes(cg, "cache", "file"),
        anon_bytes: stat_bytes(cg, "rss", "anon"),
        shmem_bytes: stat_bytes(cg, "shmem", "shmem"),
        duration_ms: t.elapsed().as_secs_f64() * 1000.0,
        stock_pages,
    }
}

fn immigrate_phases(
    s: &mut Session,
    w: &mut Workload,
    origin: &MemCgroup,
    limited: &MemCgroup,
    pages: u64,
) -> anyhow::Result<Immigrate> {
    let mcai = match limited.version() {
        CgroupVersion::V1 => limited
            .read_raw("memory.move_charge_at_immigrate")?
            .and_then(|t| t.trim().parse().ok()),
        CgroupVersion::V2 => None,
    };
    s.phase(format!("touch {pages} pages in origin"), |_| {
        Ok(w.touch(pages)?)
    })?;
    let upd = |s: &Session| {
        let ph = s.phases().last().expect("a phase");
        (
            ph.stat("origin", "NR_ANON_MAPPED").map_or(0, |r| r.total),
            ph.stat("limited", "NR_ANON_MAPPED").map_or(0, |r| r.total),
        )
    };
    let touch_anon_updates = upd(s);
    let o0 = s.explain(origin)?;
    let d0 = s.explain(limited)?;
    s.phase("move to limited", |_| Ok(w.move_to(limited)?))?;
    let move_anon_updates = upd(s);
    let o1 = s.explain(origin)?;
    let d1 = s.explain(limited)?;
    s.phase(
        format!("free the {pages} origin pages from limited"),
        |_| Ok(w.free_pages(pages)?),
    )?;
    let free_anon_updates = upd(s);
    let o2 = s.explain(origin)?;
    Ok(Immigrate {
        pages,
        move_charge_at_immigrate: mcai,
        touch_anon_updates,
        move_anon_updates,
        free_anon_updates,
        origin_charged_pages: (charged_pages(&o0), charged_pages(&o1), charged_pages(&o2)),
        dest_charged_pages: (charged_pages(&d0), charged_pages(&d1)),
        origin_anon_pages: (anon_exact_pages(&o0), anon_exact_pages(&o1)),
        origin_freed_in_lru_add: unmapped_in_batches(&o2) - unmapped_in_batches(&o1),
    })
}

/// Runs `touch` on a thread while watching `under_oom` (v1 with oom_kill_disable). When the
/// workload blocks in the fault, removes the limit so the fault can complete. Returns when
/// `under_oom` was seen (ms) and how the workload was released.
fn touch_watching_under_oom(
    w: &mut Workload,
    cg: &MemCgroup,
    pages: u64,
) -> anyhow::Result<(Option<f64>, Option<String>, Option<u64>)> {
    let t = Instant::now();
    let mut seen = None;
    let mut usage = None;
    let mut released = None;
    let r = std::thread::scope(|sc| -> anyhow::Result<()> {
        let h = sc.spawn(|| w.touch(pages));
        let mut since: Option<Instant> = None;
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if released.is_some() {
                continue;
            }
            let blocked = under_oom(cg) == Some(1);
            if blocked && seen.is_none() {
                seen = Some(t.elapsed().as_secs_f64() * 1000.0);
                since = Some(Instant::now());
            }
            // Keep it blocked a moment (it stays: nothing frees memory), then release.
            let held = since.is_some_and(|s| s.elapsed() > Duration::from_millis(500));
            if held || t.elapsed() > Duration::from_secs(60) {
                usage = cg.usage_bytes()?;
                cg.set_limit_bytes(None).context("removing the limit")?;
                released = Some(if held {
                    "limit removed while the workload was blocked (memcg1_oom_recover woke it)"
                        .to_string()
                } else {
                    "limit removed after 60 s without under_oom".to_string()
                });
            }
        }
        h.join()
            .map_err(|_| anyhow::anyhow!("the touch thread panicked"))??;
        Ok(())
    });
    r?;
    Ok((seen, released, usage))
}

fn shrink_phase(s: &mut Session, cg: &MemCgroup, to: u64) -> anyhow::Result<(Shrink, bool)> {
    let page = s.page_size as i64;
    let before = s.explain(cg)?;
    // Anon pages on the LRU lists, and those still waiting in lru_add batches (up to
    // PAGEVEC_SIZE per CPU; reclaim drains the batches first and cannot free them either).
    let floor = term_pages(&before, "lru.inactive_anon")
        + term_pages(&before, "lru.active_anon")
        + term_pages(&before, "lru_add");
    let file = term_pages(&before, "lru.inactive_file") + term_pages(&before, "lru.active_file");
    let stock = term_pages(&before, "stock");
    let usage_pages = before.usage_bytes / page;
    let to_pages = (to / page as u64) as i64;
    // Reclaim leaves at least the anon LRU pages (no swap). At most it frees the file LRU and
    // the stock; a margin of 256 pages (1 MiB) covers kernel memory a reclaim may shrink.
    let v2 = cg.version() == CgroupVersion::V2;
    let predicted = if floor > to_pages {
        if v2 { "oom-kill" } else { "EBUSY" }
    } else if usage_pages - file - stock + 256 <= to_pages {
        "ok"
    } else {
        "undecided"
    }
    .to_string();
    let from = cg.limit_bytes()?;
    let c0 = counters(cg);
    let usage_before = cg.usage_bytes()?;
    let t = Instant::now();
    let mut res: Result<(), std::io::Error> = Ok(());
    s.phase(format!("shrink limit to {}", mib(to)), |_| {
        res = cg.set_limit_bytes(Some(to)).map_err(|e| match e {
            crate::cgroup::CgroupError::Io { source, .. } => source,
            e => std::io::Error::other(e.to_string()),
        });
        Ok(())
    })?;
    let duration_ms = t.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(200));
    let c1 = counters(cg);
    let alive = !cg.procs()?.is_empty();
    Ok((
        Shrink {
            from_bytes: from,
            to_bytes: to,
            usage_before_bytes: usage_before,
            unreclaimable_floor_pages: floor,
            file_pages: file,
            stock_pages: stock,
            predicted,
            write_ok: res.is_ok(),
            errno: res.as_ref().err().and_then(|e| e.raw_os_error()),
            error: res.as_ref().err().map(|e| e.to_string()),
            duration_ms,
            usage_after_bytes: cg.usage_bytes()?,
            limit_after_bytes: cg.limit_bytes()?,
            oom_kills: delta(c0.oom_kill, c1.oom_kill),
            workload_alive: alive,
        },
        alive,
    ))
}

/// The OOM kills of the workload: the probes' OOM rows say who and in which memcg; the kernel
/// log adds the victim's RSS and the memcg's usage as the OOM report printed them.
fn oom_kills(
    s: &Session,
    hier: &MemoryHierarchy,
    limited: &MemCgroup,
    pid: i32,
    kmsg: &[KmsgKill],
    timeline: &[Step],
) -> (Vec<OomKill>, String, String) {
    let mut out = Vec::new();
    let mut rss_src = Vec::new();
    let mut usage_src = Vec::new();
    let mut used_kmsg = 0;
    for ph in s.phases() {
        // One kill per victim: prefer `kill` rows (oom_kill_process, with the OOM's memcg),
        // else `victim` (oom:mark_victim).
        let kills: Vec<_> = ph.oom.iter().filter(|o| o.kind == "kill").collect();
        let rows = if kills.is_empty() {
            ph.oom.iter().filter(|o| o.kind == "victim").collect()
        } else {
            kills
        };
        for o in rows {
            let k = kmsg.get(used_kmsg).filter(|k| k.pid == o.pid);
            if k.is_some() {
                used_kmsg += 1;
            }
            let memcg_path = if o.cgroup.starts_with("(none") || o.cgroup.starts_with("cgroup id") {
                k.and_then(|k| k.oom_memcg.as_ref())
                    .map(|m| {
                        hier.root
                            .join(m.trim_start_matches('/'))
                            .display()
                            .to_string()
                    })
                    .unwrap_or_else(|| "unknown".into())
            } else if o.cgroup == "limited" {
                limited.path().display().to_string()
            } else if o.cgroup == "." {
                s.run.cgroup().path().display().to_string()
            } else {
                s.run.cgroup().path().join(&o.cgroup).display().to_string()
            };
            let (rss, rs) = match k.and_then(|k| k.rss_kib) {
                Some((a, f, sh)) => (
                    Some((a + f + sh) * 1024),
                    "kernel log (`Killed process ... anon-rss/file-rss/shmem-rss`, mm/oom_kill.c __oom_kill_process)",
                ),
                None if o.pid == pid as u32 => (
                    Some(touched(timeline)),
                    "estimate: anonymous bytes the workload had touched in limited (kernel log line missing)",
                ),
                None => (None, "unknown"),
            };
            let (usage, us) = match k.and_then(|k| k.usage_kib) {
                Some(u) => (
                    Some(u * 1024),
                    "kernel log (`memory: usage` of the OOM report, mm/memcontrol.c mem_cgroup_print_oom_meminfo)",
                ),
                None => (
                    limited.peak_bytes().ok().flatten(),
                    "peak usage of the cgroup (memory.max_usage_in_bytes / memory.peak): the OOM report was rate-limited or unreadable",
                ),
            };
            rss_src.push(rs);
            usage_src.push(us);
            out.push(OomKill {
                victim_pid: o.pid,
                victim_comm: o.comm.clone(),
                victim_rss_bytes: rss,
                memcg_path,
                usage_at_kill_bytes: usage,
                phase: ph.name.clone(),
            });
        }
    }
    // The probes saw nothing (e.g. no OOM hook here) but the kernel log did.
    if out.is_empty() {
        for k in kmsg {
            out.push(OomKill {
                victim_pid: k.pid,
                victim_comm: k.comm.clone(),
                victim_rss_bytes: k.rss_kib.map(|(a, f, s)| (a + f + s) * 1024),
                memcg_path: k
                    .oom_memcg
                    .as_ref()
                    .map(|m| {
                        hier.root
                            .join(m.trim_start_matches('/'))
                            .display()
                            .to_string()
                    })
                    .unwrap_or_else(|| "unknown".into()),
                usage_at_kill_bytes: k.usage_kib.map(|u| u * 1024),
                phase: "(from the kernel log)".into(),
            });
            rss_src.push("kernel log");
            usage_src.push("kernel log");
        }
    }
    rss_src.dedup();
    usage_src.dedup();
    let join = |v: Vec<&str>| {
        if v.is_empty() {
            "no kill".to_string()
        } else {
            v.join("; ")
        }
    };
    (out, join(rss_src), join(usage_src))
}

fn touched(timeline: &[Step]) -> u64 {
    timeline.iter().map(|s| s.grown_bytes).max().unwrap_or(0)
}

fn checks(r: &Results, kills: &[OomKill], version: CgroupVersion) -> Vec<Check> {
    let mut out = Vec::new();
    let p = &r.params;
    if let Some(im) = &r.immigrate {
        let n = im.pages as i64;
        if let Some(m) = im.move_charge_at_immigrate {
            out.push(Check::eq("v1 move_charge_at_immigrate of limited", 0, m));
        }
        out.push(Check::eq(
            "NR_ANON_MAPPED updates (origin, limited) while touching in origin",
            (n, 0),
            im.touch_anon_updates,
        ));
        out.push(Check::eq(
            "NR_ANON_MAPPED updates (origin, limited) during the move",
            (0, 0),
            im.move_anon_updates,
        ));
        out.push(Check::eq(
            "origin's charged pages (usage - stock - kmem) across the move: it keeps them",
            im.origin_charged_pages.0,
            im.origin_charged_pages.1,
        ));
        out.push(Check::eq(
            "origin's NR_ANON_MAPPED across the move",
            im.origin_anon_pages.0,
            im.origin_anon_pages.1,
        ));
        out.push(Check::eq(
            "limited's charged pages gained by the move",
            0,
            im.dest_charged_pages.1 - im.dest_charged_pages.0,
        ));
        out.push(Check::eq(
            "NR_ANON_MAPPED updates (origin, limited) freeing the origin pages from limited: the uncharge goes to origin",
            (-n, 0),
            im.free_anon_updates,
        ));
        out.push(Check::eq(
            "origin's charged pages after that free (less freed folios still in lru_add batches)",
            im.origin_charged_pages.1 - n + im.origin_freed_in_lru_add,
            im.origin_charged_pages.2,
        ));
    }
    let kill_count = r.oom.kill_counter.unwrap_or(kills.len() as u64);
    if r.oom.kill_expected {
        out.push(Check::eq(
            "OOM kills (cgroup oom_kill counter)",
            1,
            kill_count,
        ));
        out.push(Check::eq("OOM kills reported", 1, kills.len()));
        if let Some(k) = kills.first() {
            out.push(Check::eq(
                "victim is the workload",
                r.workload_pid as u32,
                k.victim_pid,
            ));
            out.push(Check::eq(
                "OOM memcg",
                r.limited_path.clone(),
                k.memcg_path.clone(),
            ));
            let (floor, limit) = (r.usage_at_kill_floor_bytes, p.limit_bytes);
            if r.shrink.as_ref().is_none_or(|s| s.predicted != "oom-kill") {
                out.push(match k.usage_at_kill_bytes {
                    Some(u) => Check::rule(
                        "memcg usage at the kill",
                        format!(
                            "{floor}..={limit} bytes (limit - {} pages x online CPUs ..= limit)",
                            r.kernel_charge_batch
                        ),
                        u.to_string(),
                        (floor..=limit).contains(&u),
                    ),
                    None => Check::rule(
                        "memcg usage at the kill",
                        "known".into(),
                        "unknown".into(),
                        false,
                    ),
                });
            }
        }
    } else {
        out.push(Check::eq("OOM kills", 0, kill_count));
    }
    if p.oom_disable && r.timeline.iter().any(|s| !s.completed) {
        out.push(Check::eq(
            "every step completed (nobody killed)",
            true,
            false,
        ));
    }
    if p.oom_disable && p.grow_to_bytes + p.tmpfs_bytes > p.limit_bytes {
        out.push(Check::eq(
            "under_oom 1 seen in memory.oom_control",
            true,
            r.oom.under_oom_after_ms.is_some(),
        ));
    }
    if let Some(sh) = &r.shrink {
        match (sh.predicted.as_str(), version) {
            ("EBUSY", _) => {
                out.push(Check::eq("shrink write errno", Some(libc::EBUSY), sh.errno));
                out.push(Check::eq(
                    "limit after the failed shrink",
                    sh.from_bytes,
                    sh.limit_after_bytes,
                ));
                out.push(Check::eq(
                    "workload alive after the shrink",
                    true,
                    sh.workload_alive,
                ));
            }
            ("ok", _) => {
                out.push(Check::eq("shrink write succeeded", true, sh.write_ok));
                out.push(Check::eq(
                    "limit after the shrink",
                    Some(sh.to_bytes),
                    sh.limit_after_bytes,
                ));
                out.push(Check::rule(
                    "usage after the shrink",
                    format!("<= {}", sh.to_bytes),
                    format!("{:?}", sh.usage_after_bytes),
                    sh.usage_after_bytes.is_some_and(|u| u <= sh.to_bytes),
                ));
                out.push(Check::eq(
                    "workload alive after the shrink",
                    true,
                    sh.workload_alive,
                ));
            }
            ("oom-kill", _) => {
                out.push(Check::eq("shrink write succeeded (v2)", true, sh.write_ok));
                out.push(Check::eq(
                    "limit after the shrink",
                    Some(sh.to_bytes),
                    sh.limit_after_bytes,
                ));
                out.push(Check::eq("OOM kills by the shrink", Some(1), sh.oom_kills));
                out.push(Check::rule(
                    "usage after the shrink",
                    format!("<= {}", sh.to_bytes),
                    format!("{:?}", sh.usage_after_bytes),
                    sh.usage_after_bytes.is_some_and(|u| u <= sh.to_bytes),
                ));
            }
            _ => {}
        }
    }
    out
}

fn verdict(r: &Results, kills: &[OomKill], checks: Vec<Check>) -> Verdict {
    let p = &r.params;
    let mut lines = Vec::new();
    if let Some(im) = &r.immigrate {
        lines.push(format!(
            "{} pages touched in origin stayed charged to origin after the move ({} -> {} charged pages there; limited gained {}); freeing them from limited uncharged origin ({} pages left).",
            im.pages,
            im.origin_charged_pages.0,
            im.origin_charged_pages.1,
            im.dest_charged_pages.1 - im.dest_charged_pages.0,
            im.origin_charged_pages.2
        ));
    }
    let status = if let Some(k) = kills.first() {
        lines.push(format!(
            "growing toward {} under a {} limit: OOM kill of pid {} ({}) in {} during `{}`; usage at the kill {}, victim RSS {}.",
            mib(p.grow_to_bytes),
            mib(p.limit_bytes),
            k.victim_pid,
            k.victim_comm,
            k.memcg_path,
            k.phase,
            k.usage_at_kill_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_else(|| "unknown".into()),
            k.victim_rss_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_else(|| "unknown".into()),
        ));
        if let (Some(rss), Some(u)) = (k.victim_rss_bytes, k.usage_at_kill_bytes) {
            lines.push(format!(
                "RSS ({} KiB) and memcg usage ({} KiB) count different things: RSS is what the process maps, wherever it is charged (pages touched before it joined the cgroup stay charged to the old one; mapped binary pages were charged to whoever read them first); usage is what is charged to the memcg (also page cache, tmpfs and kernel memory, mapped or not).",
                rss / 1024,
                u / 1024
            ));
        }
        "OOM kill"
    } else {
        lines.push(
            r.oom
                .no_kill_reason
                .clone()
                .unwrap_or_else(|| "no kill".into()),
        );
        if p.oom_disable {
            "no kill (oom_kill_disable)"
        } else {
            "no kill"
        }
    };
    if let Some(sh) = &r.shrink {
        lines.push(format!(
            "shrinking the limit to {} with {} used ({} anon-LRU pages, {} file pages): {} after {:.1} ms (kernel rule: {}); usage after {}, limit after {}.",
            mib(sh.to_bytes),
            sh.usage_before_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_default(),
            sh.unreclaimable_floor_pages,
            sh.file_pages,
            if sh.write_ok {
                "accepted".to_string()
            } else {
                format!("refused ({})", sh.error.clone().unwrap_or_default())
            },
            sh.duration_ms,
            sh.predicted,
            sh.usage_after_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_default(),
            sh.limit_after_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_else(|| "unlimited".into()),
        ));
    }
    Verdict::judged(status, lines.join("\n"), checks)
}

fn opt_kib(v: Option<u64>) -> String {
    v.map(|b| (b / 1024).to_string())
        .unwrap_or_else(|| "-".into())
}

fn opt_n(v: Option<u64>) -> String {
    v.map(|b| b.to_string()).unwrap_or_else(|| "-".into())
}

/// The text section of a limit report.
pub fn render(r: &Report) -> anyhow::Result<String> {
    let res: Results = serde_json::from_value(r.results.clone())?;
    let p = &res.params;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "limit: {} limit{}{}, grow to {} in {} steps every {} ms on cpu{}; swap {} KiB",
        mib(p.limit_bytes),
        p.high_bytes
            .map(|h| format!(", high {}", mib(h)))
            .unwrap_or_default(),
        if p.oom_disable {
            ", oom_kill_disable 1"
        } else {
            ""
        },
        mib(p.grow_to_bytes),
        mib(p.step_bytes),
        p.interval_ms,
        p.cpu,
        res.swap_total_bytes / 1024
    );
    if let Some(im) = &res.immigrate {
        let _ = writeln!(
            out,
            "  charges stay with the old cgroup: {} pages touched in origin, then moved to limited{}",
            im.pages,
            im.move_charge_at_immigrate
                .map(|m| format!(" (move_charge_at_immigrate {m})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "    anon updates (origin, limited): touch {:?}, move {:?}, free from limited {:?}",
            im.touch_anon_updates, im.move_anon_updates, im.free_anon_updates
        );
        let _ = writeln!(
            out,
            "    origin charged pages (usage - stock - kmem): {} before the move, {} after, {} after the free ({} freed pages still in lru_add batches); limited {} -> {}",
            im.origin_charged_pages.0,
            im.origin_charged_pages.1,
            im.origin_charged_pages.2,
            im.origin_freed_in_lru_add,
            im.dest_charged_pages.0,
            im.dest_charged_pages.1
        );
    }
    let _ = writeln!(
        out,
        "  {:<26} {:>6} {:>9} {:>9} {:>9} {:>7} {:>5} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} {:>8}",
        "TIMELINE (KiB)",
        "DONE",
        "USAGE",
        "LIMIT",
        "PEAK",
        "FAILCNT",
        "HIGH",
        "OOM",
        "RECLAIM",
        "RECLAIMED",
        "ANON",
        "FILE",
        "SHMEM",
        "MS"
    );
    for st in &res.timeline {
        let _ = writeln!(
            out,
            "  {:<26} {:>6} {:>9} {:>9} {:>9} {:>7} {:>5} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} {:>8.1}",
            st.phase,
            if st.completed { "yes" } else { "KILLED" },
            opt_kib(st.usage_bytes),
            st.limit_bytes
                .map(|b| (b / 1024).to_string())
                .unwrap_or_else(|| "max".into()),
            opt_kib(st.peak_bytes),
            opt_n(st.failcnt_delta),
            opt_n(st.high_events_delta),
            opt_n(st.oom_kill_delta),
            st.reclaim_rounds,
            st.reclaimed_pages,
            opt_kib(st.anon_bytes),
            opt_kib(st.file_bytes),
            opt_kib(st.shmem_bytes),
            st.duration_ms
        );
    }
    let o = &res.oom;
    let _ = writeln!(
        out,
        "  OOM: expected {}, cgroup oom_kill counter +{}; usage bound at a kill {}..={} bytes \
         (MEMCG_CHARGE_BATCH {} x online CPUs below the limit)",
        if o.kill_expected { "a kill" } else { "no kill" },
        opt_n(o.kill_counter),
        res.usage_at_kill_floor_bytes,
        p.limit_bytes,
        res.kernel_charge_batch
    );
    if let Some(ms) = o.under_oom_after_ms {
        let _ = writeln!(
            out,
            "  under_oom 1 seen after {ms:.0} ms of the blocking step"
        );
    }
    if let Some(rel) = &o.released_by {
        let _ = writeln!(out, "  released: {rel}");
    }
    if let Some(why) = &o.no_kill_reason {
        let _ = writeln!(out, "  {why}");
    }
    for k in &o.kmsg {
        let _ = writeln!(
            out,
            "  kernel log: pid {} ({}) oom_memcg {} usage {} KiB limit {} KiB failcnt {} rss (anon, file, shmem) {:?} KiB",
            k.pid,
            k.comm,
            k.oom_memcg.as_deref().unwrap_or("?"),
            opt_n(k.usage_kib),
            opt_n(k.limit_kib),
            opt_n(k.failcnt),
            k.rss_kib
        );
    }
    if let Some(e) = &o.kmsg_error {
        let _ = writeln!(out, "  kernel log unreadable: {e}");
    }
    if !r.oom_kills.is_empty() {
        let _ = writeln!(out, "  victim RSS from: {}", o.rss_source);
        let _ = writeln!(out, "  usage at kill from: {}", o.usage_source);
    }
    if let Some(sh) = &res.shrink {
        let _ = writeln!(
            out,
            "  shrink {} -> {}: {} in {:.1} ms (predicted {}); usage {} -> {} KiB; oom kills {}",
            sh.from_bytes.map(mib).unwrap_or_else(|| "max".into()),
            mib(sh.to_bytes),
            if sh.write_ok {
                "accepted".to_string()
            } else {
                format!("refused: {}", sh.error.clone().unwrap_or_default())
            },
            sh.duration_ms,
            sh.predicted,
            opt_kib(sh.usage_before_bytes),
            opt_kib(sh.usage_after_bytes),
            opt_n(sh.oom_kills)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_oom_report() {
        let lines: Vec<String> = [
            "memcg-drift invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
            "memory: usage 32768kB, limit 32768kB, failcnt 120",
            "memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0",
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/memcg-drift/1-2/limited,task_memcg=/memcg-drift/1-2/limited,task=memcg-drift,pid=4242,uid=0",
            "Memory cgroup out of memory: Killed process 4242 (memcg-drift) total-vm:40000kB, anon-rss:31000kB, file-rss:1200kB, shmem-rss:0kB, UID:0 pgtables:120kB oom_score_adj:0",
            "Memory cgroup out of memory: Killed process 77 (other) total-vm:1kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let k = parse_kmsg(&lines);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].pid, 4242);
        assert_eq!(k[0].comm, "memcg-drift");
        assert_eq!(k[0].oom_memcg.as_deref(), Some("/memcg-drift/1-2/limited"));
        assert_eq!(
            (k[0].usage_kib, k[0].limit_kib, k[0].failcnt),
            (Some(32768), Some(32768), Some(120))
        );
        assert_eq!(k[0].rss_kib, Some((31000, 1200, 0)));
        // A rate-limited dump: only the Killed process line.
        assert_eq!(k[1].pid, 77);
        assert_eq!(k[1].usage_kib, None);
        assert_eq!(k[1].rss_kib, Some((5, 0, 0)));
    }
}
