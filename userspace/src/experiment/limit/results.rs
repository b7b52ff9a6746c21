//! `run limit`: the typed results a record holds (docs/json.md).

use super::*;

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
