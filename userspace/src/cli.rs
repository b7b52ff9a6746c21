//! Command-line interface (clap derive). Values are parsed by typed parsers so that bad input
//! fails before anything is created or attached.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::Flavour;
pub use crate::units::parse_duration;

/// memcg-drift explains why a memory cgroup's charged usage and its statistics disagree.
#[derive(Debug, Parser)]
#[command(name = "memcg-drift", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report what this kernel offers: BTF, cgroup layout, which probe flavours load here, and
    /// how each hook of the tool would attach. Exits non-zero when the tool cannot run.
    Doctor(DoctorArgs),
    /// Record statistic updates of a memory cgroup per CPU and item until Ctrl-C or --duration.
    Trace(TraceArgs),
    /// Close a memory cgroup's charge book (page_counter usage) against its statistics, to
    /// the page, with the per-CPU residues read by eBPF: stat book, ledger terms, the kernel's
    /// bounds, dying descendants.
    Explain(ExplainArgs),
    /// Run a built-in experiment in cgroups of its own and report what each phase of its
    /// workload did to the books, with a verdict (exit 1 when a check fails).
    Run(RunArgs),
    /// Render a run saved with `run ... --record FILE` again (no kernel needed).
    Report(ReportArgs),
    /// Serve a memory cgroup's books (and its subtree's) as OpenMetrics for Prometheus: usage,
    /// limit, every ledger term, per-CPU stock and unflushed deltas, dying descendants, memory
    /// events; the kernel is read once per --interval whatever the scrapes.
    Export(ExportArgs),
    /// Remove cgroups that a killed memcg-drift run left behind (never touches live runs),
    /// and this boot's cached MEMCG_CHARGE_BATCH.
    Cleanup,
    /// Internal: the controlled workload process (spoken to over stdin/stdout).
    #[command(name = "__workload", hide = true)]
    Workload,
}

/// Options of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Attach flavour selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttachChoice {
    /// The first candidate that loads and attaches, in the plan's order.
    Auto,
    /// BTF tracepoints only.
    TpBtf,
    /// Classic tracepoints only.
    Tracepoint,
    /// fentry only.
    Fentry,
    /// kprobes only.
    Kprobe,
}

impl AttachChoice {
    /// The forced flavour, if any.
    pub fn flavour(self) -> Option<Flavour> {
        match self {
            AttachChoice::Auto => None,
            AttachChoice::TpBtf => Some(Flavour::TpBtf),
            AttachChoice::Tracepoint => Some(Flavour::Tracepoint),
            AttachChoice::Fentry => Some(Flavour::Fentry),
            AttachChoice::Kprobe => Some(Flavour::Kprobe),
        }
    }
}

/// Options of `trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The memory cgroup: a path in the memory hierarchy (`/sys/fs/cgroup/memory/a`), a cgroup
    /// path as /proc/PID/cgroup prints it (`/a`, `/` for the root), or a path relative to the
    /// hierarchy's root (`a`).
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "pid",
        conflicts_with = "pid"
    )]
    pub cgroup: Option<PathBuf>,
    /// Trace the memory cgroup process PID is in (instead of --cgroup).
    #[arg(long, short = 'p', value_name = "PID")]
    pub pid: Option<i32>,
    /// Stop after this long (e.g. `500ms`, `5s`, `2min`); default: until Ctrl-C.
    #[arg(long, short = 'd', value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also print the deltas of every interval D as it ends (with --json: one JSON line each).
    #[arg(long, short = 'i', value_name = "D", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Also record the cgroup's descendants (including ones created while tracing).
    #[arg(long)]
    pub descendants: bool,
    /// Capacity of the in-kernel stat aggregates: distinct (cgroup, item, hook) keys. Default:
    /// 16 per cgroup of the traced subtree, at least 16384, at most what 256 MiB of per-CPU
    /// map holds. Updates of keys that do not fit are counted as lost (`map_full`). With it,
    /// only the traced cgroup keeps its aggregates in a dense slot outside this capacity
    /// (without it, the subtree's existing cgroups do too, up to 256 of them).
    #[arg(long, value_name = "N", allow_hyphen_values = true,
          value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    pub max_keys: Option<u32>,
    /// How to attach the probes.
    #[arg(long, value_enum, default_value_t = AttachChoice::Auto)]
    pub attach: AttachChoice,
    /// Print one JSON document instead of text (see docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// Options of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The memory cgroup: a path in the memory hierarchy, a cgroup path as /proc/PID/cgroup
    /// prints it (`/a`, `/` for the root), or a path relative to the hierarchy's root.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print one JSON document instead of text (with --watch: one per line; see docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Report again every INTERVAL (e.g. `1s`, `500ms`) until Ctrl-C.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub watch: Option<Duration>,
    /// Show every term's per-CPU breakdown (JSON always has it).
    #[arg(long)]
    pub cpus: bool,
    /// Also write the ledger as an SVG plot (one stacked bar per term, split by CPU) to FILE
    /// (with --watch: rewritten at every report).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// Options of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Address to serve `/metrics` on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9857")]
    pub listen: std::net::SocketAddr,
    /// The memory cgroup to export (as for `explain`); default: the hierarchy's root.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub cgroup: PathBuf,
    /// Also export every descendant (parents first, up to --max-cgroups).
    #[arg(long)]
    pub descendants: bool,
    /// At most this many cgroups; the rest are counted in memcg_drift_cgroups_left_out.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_cgroups: u64,
    /// How often the kernel is read (scrapes in between are served from the last read).
    #[arg(long, short = 'i', value_name = "D", default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment.
    #[command(subcommand)]
    pub experiment: Experiment,
    /// Print the report as one JSON document (see docs/json.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// Also save the report to FILE (re-render with `memcg-drift report FILE`).
    #[arg(long, global = true, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Also write SVG plots of the run into DIR (created if missing).
    #[arg(long, global = true, value_name = "DIR")]
    pub svg: Option<PathBuf>,
}

/// The experiments.
#[derive(Debug, Subcommand)]
pub enum Experiment {
    /// Allocate on one CPU, free a slice on every CPU, remove the cgroup, repeat (seed 000):
    /// where the per-CPU statistic residues go, and whether the parent drifts.
    BatchSkew(BatchSkewArgs),
    /// Grow anonymous memory in steps toward and past a limit (seeds 001, 003): usage against
    /// the limit, reclaim, failcnt, throttling, the OOM kill or why none happened; optionally
    /// shrink the limit while usage is high; charges taken before a move stay behind.
    Limit(LimitArgs),
    /// Create and remove cgroups in a loop while workloads run in siblings (seed 002 §9.5):
    /// how long dying cgroups live, what pins them, how many are dying at the peak.
    Churn(ChurnArgs),
    /// Open loopback TCP sockets (and files) in a cgroup (seed 004): how kernel memory moves
    /// usage while anon and file stand still, and what v1's kmem files and v2's memory.stat show.
    Kmem(KmemArgs),
    /// Write a tmpfs file from a cgroup, move the writer to a sibling (seeds 001, 002): who
    /// stays charged, and how memory.stat files tmpfs pages (shmem/file) next to anon.
    Shmem(ShmemArgs),
    /// Register usage thresholds (v1 cgroup.event_control; v2: each as memory.high in turn,
    /// memory.events watched) and grow anonymous memory across them (seed 002 §9.10): where
    /// each event fires, and what memory.stat is short of the usage then (stock, unflushed
    /// deltas, lru_add batches).
    Threshold(ThresholdArgs),
    /// Grow anonymous memory past a memory limit with swap on (seed 001: limited but never
    /// OOM-killed), then cap the swap (seed 002 §9.8 case B): how many pages the kernel
    /// swapped instead of killing, both books closed, and the one kill once swap is capped.
    /// Needs a swap device; refuses in one line without one.
    Swap(SwapArgs),
    /// Touch anonymous pages on one NUMA node, then move them to another through the
    /// cgroup's cpuset (seed 002 §9.3): per-node statistics move, the charge does not. Needs
    /// two nodes with memory and a cpuset in the memory hierarchy; refuses in one line
    /// without them.
    Migrate(MigrateArgs),
    /// Touch anonymous pages on a NUMA node of hot-added movable memory, then take every
    /// memory block of that node offline (seed 002 §9.4): the kernel migrates the pages first;
    /// per-node statistics move, the charge does not. The blocks are put back online on every
    /// exit path. Refuses in one line where no node can go offline (a guest with a QEMU
    /// pc-dimm onlined movable can).
    Hotplug(HotplugArgs),
}

/// Options of `run batch-skew`.
#[derive(Debug, Args)]
pub struct BatchSkewArgs {
    /// CPUs that free a slice each, in order: a list like `0-3,8`, or `all` (online CPUs).
    #[arg(long, value_name = "LIST|all", default_value = "all", value_parser = parse_cpus)]
    pub cpus: CpuChoice,
    /// Pages each CPU frees.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_pages: u64,
    /// CPU that touches the pages (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub alloc_cpu: Option<usize>,
    /// Iterations (a fresh child cgroup each).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub iterations: u32,
    /// Each iteration's cgroup also writes and reads a small file whose page cache keeps the
    /// removed cgroup dying (as the seed's wrapper does).
    #[arg(long)]
    pub pin_page_cache: bool,
    /// With --pin-page-cache: keep the pinning files, and so the dying cgroups, until the run
    /// ends (otherwise each is deleted right after its cgroup is removed).
    #[arg(long, requires = "pin_page_cache")]
    pub keep_dying: bool,
}

/// Options of `run limit`. Sizes are bytes or take a suffix: `512K`, `32M`, `1G`.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Hard limit of the workload's cgroup (v1 memory.limit_in_bytes, v2 memory.max).
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = crate::units::parse_size)]
    pub limit: u64,
    /// Anonymous memory added per step.
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = crate::units::parse_size)]
    pub step: u64,
    /// Pause between steps (e.g. `50ms`, `1s`).
    #[arg(long, value_name = "D", default_value = "50ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Grow to this much anonymous memory (default: twice the limit; with --shrink-to, three
    /// quarters of it).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub grow_to: Option<u64>,
    /// v2 only: memory.high (throttling) below the limit.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub high: Option<u64>,
    /// v1 only: memory.oom_control oom_kill_disable 1; the run notices the workload blocked at
    /// the limit (under_oom 1), then removes the limit to end cleanly.
    #[arg(long)]
    pub oom_disable: bool,
    /// Clean page cache of a file in --cache-dir, read into the cgroup before growing.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = crate::units::parse_size)]
    pub page_cache: u64,
    /// Disk-backed directory for the --page-cache file (default /var/tmp).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// tmpfs (shmem, a file in /dev/shm) written by the workload before growing.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = crate::units::parse_size)]
    pub tmpfs: u64,
    /// After growing, write this lower limit while usage is high and report what the kernel did.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub shrink_to: Option<u64>,
    /// Anonymous memory touched in a first cgroup before the workload moves (0: skip).
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = crate::units::parse_size)]
    pub immigrate: u64,
    /// CPU the workload runs on (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

/// Options of `run kmem`.
#[derive(Debug, Args)]
pub struct KmemArgs {
    /// Connected loopback TCP pairs to open (client and server inside the cgroup).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=16384))]
    pub sockets: u64,
    /// Bytes written into each pair and never read (socket buffers).
    #[arg(long, value_name = "B", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(0..=32768))]
    pub unread_bytes: u64,
    /// Also create this many empty files (a dentry and an inode each) in the run's scratch dir.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub dentries: u64,
    /// CPU of the workload (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

/// Options of `run churn`.
#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// Cgroups created and removed, one after the other (each runs a short job first).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::experiment::churn::MAX_CYCLES)))]
    pub cycles: u32,
    /// Sibling cgroups whose workloads touch and free memory while the churn runs.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub siblings: u32,
    /// Every K-th churned cgroup writes a small file in the run's tmpfs scratch directory
    /// before it is removed: its page cache keeps the cgroup dying (0: none).
    #[arg(long, value_name = "K", default_value_t = 4)]
    pub pin_every: u32,
    /// Pages of each pinning file.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pin_pages: u64,
    /// How long to watch the dying cgroups after the last removal (ends early when none is
    /// left).
    #[arg(long, value_name = "D", default_value = "3s", value_parser = parse_duration)]
    pub hold: Duration,
    /// After the pins are removed, how long to wait for the pinned cgroups to be released
    /// (ends early when all are).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub release_wait: Duration,
    /// Interval of the css-tree walk that times offline and release.
    #[arg(long, value_name = "D", default_value = "20ms", value_parser = parse_duration)]
    pub poll: Duration,
    /// Anonymous pages each churned cgroup's job touches before it exits.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=262_144))]
    pub job_pages: u64,
    /// Anonymous pages each sibling touches and frees per round.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=262_144))]
    pub sibling_pages: u64,
}

/// Options of `run shmem`.
#[derive(Debug, Args)]
pub struct ShmemArgs {
    /// tmpfs pages written in each cgroup.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=262_144))]
    pub pages: u64,
    /// Anonymous pages touched in each cgroup.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=262_144))]
    pub anon_pages: u64,
    /// CPU of the workload (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

/// Options of `run threshold`.
#[derive(Debug, Args)]
pub struct ThresholdArgs {
    /// Thresholds above the starting usage, ascending (`512K`, `4M`, ...; comma-separated or
    /// repeated): v1 registers them on memory.usage_in_bytes, v2 sets each as memory.high.
    #[arg(long, value_name = "SIZE", value_delimiter = ',', default_value = "4M", value_parser = crate::units::parse_size)]
    pub threshold: Vec<u64>,
    /// Anonymous memory grown to, then freed (default: twice the highest threshold).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub grow_to: Option<u64>,
    /// Memory touched (and freed) per step, rounded down to whole pages (at least one).
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = crate::units::parse_size)]
    pub step: u64,
    /// CPU of the workload (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
    /// v1: also register the thresholds on the root cgroup (above its usage at the start).
    /// Its usage is a sum of global or statistics counters, not a page_counter; the report
    /// says which. The registration writes the root's cgroup.event_control and lasts as long
    /// as the run's eventfds (closed on every exit path, so nothing is left on the root).
    #[arg(long)]
    pub root: bool,
}

/// Options of `run swap`.
#[derive(Debug, Args)]
pub struct SwapArgs {
    /// Memory limit of the workload's cgroup.
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = crate::units::parse_size)]
    pub limit: u64,
    /// Anonymous memory the workload grows to (default: three times --limit).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub grow_to: Option<u64>,
    /// Swap cap of the second phase (default: what the cgroup holds in swap then).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub swap_max: Option<u64>,
    /// Steps of each phase.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub steps: u64,
    /// CPU of the workload (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
    /// Also: a removed cgroup's anon and tmpfs pages in swap, then swapoff from another cgroup
    /// (to whom are they charged?). Turns every swap device off and on again (same priority);
    /// refused where the swapped pages would not fit in memory.
    #[arg(long)]
    pub swapoff: bool,
}

/// Options of `run migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Anonymous memory touched and moved, rounded up to whole pages.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = crate::units::parse_size)]
    pub size: u64,
    /// The node the pages start on.
    #[arg(long, value_name = "NODE", default_value_t = 0)]
    pub from: u32,
    /// The node they are moved to.
    #[arg(long, value_name = "NODE", default_value_t = 1)]
    pub to: u32,
    /// CPU of the workload (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

/// Options of `run hotplug`.
#[derive(Debug, Args)]
pub struct HotplugArgs {
    /// Anonymous memory touched on the node, rounded up to whole pages.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = crate::units::parse_size)]
    pub size: u64,
    /// The node taken offline (default: the first whose memory blocks are all online and
    /// movable).
    #[arg(long, value_name = "NODE")]
    pub node: Option<u32>,
    /// CPU of the workload (default: the last online CPU).
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

/// `--cpus`: a list or every online CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuChoice {
    /// Online CPUs.
    All,
    /// These CPUs.
    List(Vec<usize>),
}

fn parse_cpus(s: &str) -> Result<CpuChoice, crate::units::UnitsError> {
    if s == "all" {
        return Ok(CpuChoice::All);
    }
    crate::units::parse_cpu_list(s).map(CpuChoice::List)
}

/// Options of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A file written by `run ... --record FILE`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write SVG plots of the run into DIR (created if missing).
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_rejects_bad_duration_and_missing_cgroup() {
        assert!(
            Cli::try_parse_from(["memcg-drift", "trace", "--cgroup", "/x", "--duration", "5x"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["memcg-drift", "trace"]).is_err());
        let ok = Cli::try_parse_from([
            "memcg-drift",
            "trace",
            "--cgroup",
            "/x",
            "-d",
            "1s",
            "--json",
        ])
        .unwrap();
        assert!(matches!(
            ok.command,
            Command::Trace(TraceArgs { json: true, .. })
        ));
    }

    #[test]
    fn explain_takes_a_path_and_options() {
        let ok = Cli::try_parse_from([
            "memcg-drift",
            "explain",
            "/a/b",
            "--json",
            "--watch",
            "2s",
            "--cpus",
        ])
        .unwrap();
        let Command::Explain(a) = ok.command else {
            panic!("not explain")
        };
        assert_eq!(a.path, PathBuf::from("/a/b"));
        assert!(a.json && a.cpus);
        assert_eq!(a.watch, Some(Duration::from_secs(2)));
        assert!(Cli::try_parse_from(["memcg-drift", "explain"]).is_err());
        assert!(Cli::try_parse_from(["memcg-drift", "explain", "/a", "--watch", "0s"]).is_err());
    }
}
