//! The charge section of a `trace` report: per-cgroup rows, per-CPU rows, the closing
//! readings, and the recorder that builds them from snapshots.

use super::*;

/// One aggregate of a window, named (JSON `charge.rows[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeRow {
    /// Cgroup path relative to the hierarchy root (`id:N` if unknown).
    pub cgroup: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// What is counted ([`kind_name`]).
    pub kind: &'static str,
    /// The page_counter (`memory`, `swap`/`memsw`, `kmem`, `tcpmem`), `null` for other kinds.
    pub counter: Option<&'static str>,
    /// CPU.
    pub cpu: usize,
    /// Pages.
    pub pages: u64,
    /// Events.
    pub events: u64,
}

/// The figures of one (cgroup, CPU) (JSON `charge.cpus[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeCpuRow {
    /// Cgroup path relative to the hierarchy root (`id:N` if unknown).
    pub cgroup: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// The figures.
    #[serde(flatten)]
    pub figures: CpuCharge,
}

/// The closing reading of one cgroup (JSON `charge.inferred_closing[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosingReading {
    /// Cgroup path relative to the hierarchy root.
    pub cgroup: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// Memory page_counter (pages) at the cgroup's last stat event.
    pub at_last_stat_event: u64,
    /// `memory.current` / `memory.usage_in_bytes` in pages at the end of the window.
    pub at_end: u64,
}

/// What the inferred figures are.
pub const INFERENCE_METHOD: &str = "inferred: memory page_counter read at every stat event \
     of the cgroup; a rise between two consecutive readings is counted as a charge (a batch), \
     a fall as an uncharge, on the CPU of the later stat event. Totals telescope exactly; the \
     per-CPU split is exact for a cgroup charging on one CPU at a time.";

/// The charge- and OOM-path part of a `trace` report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChargeSection {
    /// True if the charge attempts themselves were probed (`try_charge_memcg`).
    pub available: bool,
    /// Why not, in one line (`charge path: not attachable here (...)`).
    pub unavailable: Option<String>,
    /// Per charge/OOM hook: what was used, what failed or was rejected, and the loss.
    pub hooks: Vec<HookOutcome>,
    /// Figures per (cgroup, CPU), ordered by cgroup path and CPU.
    pub cpus: Vec<ChargeCpuRow>,
    /// The raw aggregates behind them.
    pub rows: Vec<ChargeRow>,
    /// OOM-path events in the window, oldest first.
    pub oom: Vec<OomRecord>,
    /// CLOCK_MONOTONIC nanoseconds at the start of the window (for `oom[].ts_ns`).
    pub start_ns: u64,
    /// How the `inferred_*` figures were obtained (`null` when no stat hook could take
    /// page_counter readings). They are estimates, labelled as such.
    pub inference: Option<String>,
    /// Per cgroup with readings: the page_counter at its last stat event and at the end of the
    /// window; the difference moved after the last stat event and is in no `inferred_*` row.
    pub inferred_closing: Vec<ClosingReading>,
    /// Charge/OOM events of the target subtree that were not recorded or not interpreted.
    pub lost: u64,
    /// All counters.
    pub counters: ChargeCounters,
    /// Names of the `memory_events` keys of `cpus[]` (`enum memcg_memory_event` values, from
    /// BTF, lowercase without `MEMCG_`: `max`, `oom`, `oom_kill`, ...).
    pub memory_event_names: BTreeMap<u32, String>,
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_ns`).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Why the charge tracer did not start: the error that stopped it with its whole chain of
/// causes, as one line (`a: b: c`, as `{:#}` prints a chain). Not a `source` chain itself, so
/// an outer chain does not print the causes twice.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::attach::error_chain(.0))]
pub struct ChargeUnavailable(pub ChargeTracerError);

/// Records the charge section over a window; never fails the caller: a tracer that cannot
/// start becomes an "unavailable" section naming why.
pub struct ChargeRecorder {
    tracer: Result<ChargeTracer, ChargeUnavailable>,
    filter: Filter,
    start: Option<(ChargeSnapshot, u64)>,
}

/// The memory hierarchy's cgroup at `rel` (a path relative to its root), and its usage in
/// pages.
fn usage_pages_at(hier: &crate::cgroup::MemoryHierarchy, rel: &str) -> Option<u64> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let cg =
        crate::cgroup::MemCgroup::open(hier, &hier.root.join(rel.trim_start_matches('/'))).ok()?;
    if cg.is_root() {
        // The root's usage is synthesised, not its page_counter (kernel.md section 5.2).
        return None;
    }
    Some(cg.usage_bytes().ok()?? / page)
}

impl ChargeRecorder {
    /// Starts the charge tracer (see [`ChargeTracer::start`]).
    pub fn start(filter: Filter, only: Option<Flavour>) -> Self {
        Self::new(
            ChargeTracer::start(filter, only).map_err(ChargeUnavailable),
            filter,
        )
    }

    /// Wraps a tracer started elsewhere (see [`crate::tracer::start_all`]).
    pub fn new(tracer: Result<ChargeTracer, ChargeUnavailable>, filter: Filter) -> Self {
        Self {
            tracer,
            filter,
            start: None,
        }
    }

    /// The tracer, if it started.
    pub fn tracer(&self) -> Option<&ChargeTracer> {
        self.tracer.as_ref().ok()
    }

    /// Marks the start of the window; seeds the target's page_counter reading for inference.
    pub fn begin(&mut self) -> Result<(), ChargeTracerError> {
        if let Ok(t) = &mut self.tracer {
            if let Some(id) = self.filter.target
                && let Ok(hier) = crate::cgroup::MemoryHierarchy::detect()
                && let Ok(Some(cg)) = crate::cgroup::MemCgroup::find_by_id(&hier, id)
            {
                if t.inference_attached()
                    && let Some(pages) = usage_pages_at(&hier, &cg.rel_path().display().to_string())
                {
                    t.seed_usage(id, pages)?;
                }
                t.seed_memory_events(&cg)?;
            }
            self.start = Some((t.snapshot()?, monotonic_ns()));
        }
        Ok(())
    }

    /// The section for the window since [`ChargeRecorder::begin`]. `paths` names cgroup ids;
    /// `version` names the memsw/swap counter.
    pub fn finish(
        &self,
        paths: &BTreeMap<u64, String>,
        version: Option<CgroupVersion>,
    ) -> Result<ChargeSection, ChargeTracerError> {
        let t = match &self.tracer {
            Ok(t) => t,
            Err(e) => {
                return Ok(ChargeSection {
                    unavailable: Some(format!("charge path: not attachable here ({e})")),
                    ..ChargeSection::default()
                });
            }
        };
        let end = t.snapshot()?;
        let (window, start_ns) = match &self.start {
            Some((s, ns)) => (end.since(s), *ns),
            None => (end, 0),
        };
        let mut sec = section(t, &window, start_ns, paths, version);
        if t.inference_attached() {
            sec.inference = Some(INFERENCE_METHOD.to_string());
            if let Ok(hier) = crate::cgroup::MemoryHierarchy::detect() {
                for (id, rel) in paths {
                    if let (Some(last), Some(now)) =
                        (t.last_reading(*id)?, usage_pages_at(&hier, rel))
                    {
                        sec.inferred_closing.push(ClosingReading {
                            cgroup: rel.clone(),
                            cgroup_id: *id,
                            at_last_stat_event: last,
                            at_end: now,
                        });
                    }
                }
            }
        }
        Ok(sec)
    }
}

/// Builds a section from a window. Pure apart from the tracer's hook outcomes.
fn section(
    t: &ChargeTracer,
    window: &ChargeSnapshot,
    start_ns: u64,
    paths: &BTreeMap<u64, String>,
    version: Option<CgroupVersion>,
) -> ChargeSection {
    let name = |id: u64| {
        paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("id:{id}"))
    };
    let mut cpus = Vec::new();
    for id in window.cgroups() {
        for mut f in window.figures(id) {
            if let Some(ops) = f.counters.remove(counter_name(counter::SWAP, None)) {
                f.counters.insert(counter_name(counter::SWAP, version), ops);
            }
            cpus.push(ChargeCpuRow {
                cgroup: name(id),
                cgroup_id: id,
                figures: f,
            });
        }
    }
    cpus.sort_by(|a, b| (&a.cgroup, a.figures.cpu).cmp(&(&b.cgroup, b.figures.cpu)));
    let mut rows = Vec::new();
    for (k, vals) in &window.rows {
        for (cpu, v) in vals.iter().enumerate() {
            if v.events == 0 {
                continue;
            }
            rows.push(ChargeRow {
                cgroup: name(k.cgroup_id),
                cgroup_id: k.cgroup_id,
                kind: kind_name(k.kind),
                counter: (k.counter != counter::NONE).then(|| counter_name(k.counter, version)),
                cpu,
                pages: v.pages,
                events: v.events,
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.cgroup, a.kind, a.counter, a.cpu).cmp(&(&b.cgroup, b.kind, b.counter, b.cpu))
    });
    ChargeSection {
        available: t.charge_path_attached(),
        unavailable: t.unavailable(),
        hooks: t.outcomes.clone(),
        cpus,
        rows,
        oom: window.oom.clone(),
        start_ns,
        inference: None,
        inferred_closing: Vec::new(),
        lost: window.counters.lost(),
        counters: window.counters,
        memory_event_names: memory_event_names(&t.facts),
    }
}

/// `enum memcg_memory_event` values and their `memory.events` names (`MEMCG_OOM_KILL` ->
/// `oom_kill`), from BTF; empty without it.
pub(super) fn memory_event_names(facts: &KernelFacts) -> BTreeMap<u32, String> {
    facts
        .btf()
        .ok()
        .and_then(|b| b.enum_values("memcg_memory_event"))
        .unwrap_or_default()
        .into_iter()
        .filter(|(n, _)| n != "MEMCG_NR_MEMORY_EVENTS")
        .map(|(n, v)| (v as u32, n.trim_start_matches("MEMCG_").to_lowercase()))
        .collect()
}
