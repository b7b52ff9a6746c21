//! Built-in experiments (`memcg-drift run EXPERIMENT`): each reproduces one of the classic
//! accounting puzzles in cgroups of its own, with the probes attached, and reports what every
//! phase of its workload did to the books, with a verdict.
//!
//! # How a run works
//! A [`Session`] checks that the machine can afford the experiment's worst case, creates the
//! run's cgroup (`memcg-drift/<run-id>`, bounded by a limit the session sets), attaches the
//! stat probes and the charge/OOM probes filtered to the run's subtree, and records
//! [`PhaseRecord`]s: [`Session::phase`] reads the in-kernel aggregates, runs one step of the
//! workload (a command the workload answers when it is done, so the step's window is exact),
//! reads them again, and keeps the difference per cgroup, item and CPU. The experiment then
//! builds its results and checks, and [`Session::finish`] removes everything it created and
//! returns the [`Report`]. Every exit path removes the cgroups: errors and panics through
//! `RunGroup`'s drop, signals through the run registry (`cgroup::install_cleanup_on_signals`),
//! `SIGKILL` through `memcg-drift cleanup`.

pub mod batch_skew;
pub mod churn;
mod error;
pub mod hotplug;
pub mod kmem;
pub mod limit;
pub mod migrate;
pub mod plots;
mod registry;
pub mod report;
pub mod shmem;
pub mod swap;
pub mod threshold;
pub mod tmpfs;

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

pub use error::{Context, ExperimentError, Result};
pub(crate) use error::{fail, refuse};
pub use registry::{Experiment, REGISTRY, Registered, registered};
pub use report::*;

use crate::{
    attach::Filter,
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy, RunGroup},
    charge::{ChargeSnapshot, ChargeTracer},
    collect::StatSnapshot,
    explain::{ExplainReport, Explainer},
    tracer::{StatTracer, ValueUnit},
};

/// Options every experiment takes.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// Print the report as JSON.
    pub json: bool,
    /// Save the report to this file (re-rendered by `memcg-drift report FILE`).
    pub record: Option<std::path::PathBuf>,
}

/// Free memory the machine must keep besides an experiment's worst case.
const MARGIN_BYTES: u64 = 256 << 20;

/// `MemAvailable` of /proc/meminfo, bytes.
pub fn mem_available() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("/proc/meminfo")?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("MemAvailable:")?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .ok_or_else(|| ExperimentError::Failed("/proc/meminfo has no MemAvailable line".into()))
}

/// Refuses an experiment whose worst case does not fit in the available memory with a margin.
pub fn check_memory(experiment: &str, worst_case: u64) -> Result<()> {
    let avail = mem_available()?;
    let need = worst_case + MARGIN_BYTES.max(avail / 10);
    if need > avail {
        refuse!(
            "{experiment} needs up to {} MiB ({} MiB worst case + margin) but only {} MiB are available; choose a smaller size",
            need >> 20,
            worst_case >> 20,
            avail >> 20
        );
    }
    Ok(())
}

/// Online CPU ids (sorted).
pub fn online_cpus() -> Vec<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    parse_cpu_list(text.trim()).unwrap_or_default()
}

pub use crate::units::parse_cpu_list;

/// One running experiment: its cgroups, its probes, its phases.
pub struct Session {
    /// The memory hierarchy.
    pub hier: MemoryHierarchy,
    /// The run's cgroups.
    pub run: RunGroup,
    stat: StatTracer,
    charge: Option<ChargeTracer>,
    charge_error: Option<String>,
    names: BTreeMap<u64, String>,
    t0: Instant,
    phases: Vec<PhaseRecord>,
    progress: Option<ProgressBar>,
    /// Page size, bytes.
    pub page_size: u64,
    experiment: &'static str,
    lost: u64,
    /// CLOCK_MONOTONIC at `t0`, ns (the probes' clock).
    t0_mono_ns: u64,
    /// Every lifecycle event of the run's cgroups, inside phases or between them.
    lifecycle: Vec<LifeRow>,
    /// Lifecycle events already collected (a count into the tracer's list).
    lifecycle_seen: usize,
}

/// CLOCK_MONOTONIC now, ns (what `bpf_ktime_get_ns` returns).
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Session {
    /// Checks memory, creates the run cgroup with `limit` bytes as its hard limit (bounding
    /// everything the experiment does), attaches the probes to its subtree, their maps sized
    /// for the `cgroups` the experiment will create.
    pub fn start(
        hier: &MemoryHierarchy,
        experiment: &'static str,
        worst_case: u64,
        cgroups: usize,
        common: &Common,
    ) -> Result<Session> {
        check_memory(experiment, worst_case)?;
        let run = RunGroup::create(hier)?;
        run.cgroup()
            .set_limit_bytes(Some(worst_case.max(64 << 20)))
            .context("bounding the run")?;
        let filter = Filter {
            target: Some(run.cgroup().id()),
            descendants: true,
        };
        // One probes object for every hook (each kernel hook runs one program).
        let cpus = crate::residue::possible_cpus()?;
        let sizes = crate::attach::MapSizes::for_cgroups(cgroups + 1, cpus, None);
        // The experiment's cgroups are made later: only the run's own has a dense slot.
        let (stat, charge) = crate::tracer::start_all(filter, None, sizes, [])?;
        let (charge, charge_error) = match charge {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let page_size =
            nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
        let mut names = BTreeMap::new();
        names.insert(run.cgroup().id(), ".".to_string());
        let progress = (!common.json && std::io::stderr().is_terminal()).then(|| {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} phases, {elapsed} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb.set_prefix(experiment);
            pb
        });
        Ok(Session {
            hier: hier.clone(),
            run,
            stat,
            charge,
            charge_error,
            names,
            t0: Instant::now(),
            phases: Vec::new(),
            progress,
            page_size,
            experiment,
            lost: 0,
            t0_mono_ns: monotonic_ns(),
            lifecycle: Vec::new(),
            lifecycle_seen: 0,
        })
    }

    /// Tells the progress bar how many phases the run will have.
    pub fn expect_phases(&self, n: u64) {
        if let Some(pb) = &self.progress {
            pb.set_length(n);
        }
    }

    /// Creates a child cgroup of the run (named in records by `name`).
    pub fn child(&mut self, name: &str) -> Result<MemCgroup> {
        let cg = self.run.child(name)?;
        self.names.insert(cg.id(), name.to_string());
        if let Some(c) = &mut self.charge {
            // A new cgroup's page_counter starts at 0: inference counts its first charge too.
            c.seed_usage(cg.id(), 0)?;
        }
        Ok(cg)
    }

    /// Re-bases the charge inference of `cg` on its page_counter now, before a phase: what
    /// moved it since its last stat event with no stat event after (a stock drained by a
    /// workqueue, kernel objects freed between phases) would otherwise be counted at the next
    /// phase's first stat event, as if that phase had done it.
    pub fn rebase_inference(&mut self, cg: &MemCgroup) -> Result<()> {
        if let Some(c) = &mut self.charge
            && let Some(bytes) = cg.usage_bytes()?
        {
            c.seed_usage(cg.id(), bytes / self.page_size)?;
        }
        Ok(())
    }

    /// The cgroup version.
    pub fn version(&self) -> CgroupVersion {
        self.hier.version
    }

    /// Milliseconds since the session started.
    pub fn now_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    fn snapshots(&mut self) -> Result<(StatSnapshot, Option<ChargeSnapshot>)> {
        let s = self.stat.snapshot()?;
        let c = self.charge.as_ref().map(|c| c.snapshot()).transpose()?;
        if let Some(c) = &c {
            self.collect_lifecycle(c);
        }
        Ok((s, c))
    }

    fn collect_lifecycle(&mut self, c: &ChargeSnapshot) {
        let new: Vec<LifeRow> = c
            .lifecycle
            .get(self.lifecycle_seen.min(c.lifecycle.len())..)
            .unwrap_or_default()
            .iter()
            .map(|e| self.life_row(e))
            .collect();
        self.lifecycle_seen = c.lifecycle.len();
        self.lifecycle.extend(new);
    }

    fn life_row(&self, e: &crate::charge::OomRecord) -> LifeRow {
        LifeRow {
            kind: e.kind.to_string(),
            cgroup: self.label(e.cgroup_id),
            cgroup_id: e.cgroup_id,
            t_ms: (e.ts_ns as f64 - self.t0_mono_ns as f64) / 1e6,
        }
    }

    /// Reads the probes now (outside any phase), so that lifecycle events that happened
    /// since the last reading are collected.
    pub fn poll(&mut self) -> Result<()> {
        if let Some(c) = self.charge.as_ref().map(|c| c.snapshot()).transpose()? {
            self.collect_lifecycle(&c);
        }
        Ok(())
    }

    /// Runs one phase of the workload and records what the probes saw between its start and
    /// its end. The phase's error (if any) is recorded and returned.
    pub fn phase<T>(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let name = name.into();
        if let Some(pb) = &self.progress {
            pb.set_message(name.clone());
        }
        let (s0, c0) = self.snapshots()?;
        let start_ms = self.now_ms();
        let r = f(self);
        let end_ms = self.now_ms();
        let (s1, c1) = self.snapshots()?;
        let sd = s1.since(&s0);
        let cd = match (c1, c0) {
            (Some(a), Some(b)) => Some(a.since(&b)),
            _ => None,
        };
        let mut rec = self.build_phase(name, start_ms, end_ms, &sd, cd.as_ref());
        rec.error = r.as_ref().err().map(ExperimentError::chain);
        self.lost += rec.lost_events;
        self.phases.push(rec);
        crate::test_hooks::panic_at_phase(self.phases.len());
        if let Some(pb) = &self.progress {
            pb.inc(1);
        }
        r
    }

    /// Every lifecycle event of the run's cgroups collected so far (inside phases or between
    /// them), oldest first. Call [`Session::poll`] first to collect the latest.
    pub fn lifecycle(&self) -> &[LifeRow] {
        &self.lifecycle
    }

    /// True when the cgroup lifecycle tracepoints are attached (rmdir and release).
    pub fn lifecycle_attached(&self) -> bool {
        self.charge.as_ref().is_some_and(|c| {
            ["lifecycle.rmdir", "lifecycle.release"]
                .iter()
                .all(|id| c.outcomes.iter().any(|o| o.id == *id && o.used.is_some()))
        })
    }

    /// The phases recorded so far.
    pub fn phases(&self) -> &[PhaseRecord] {
        &self.phases
    }

    /// Records a moment without a workload step (e.g. a wait), with what happened meanwhile.
    pub fn wait_phase(&mut self, name: &str, d: Duration) -> Result<()> {
        self.phase(name, |_| {
            std::thread::sleep(d);
            Ok(())
        })
    }

    fn label(&self, id: u64) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup id {id}"))
    }

    fn build_phase(
        &self,
        name: String,
        start_ms: f64,
        end_ms: f64,
        sd: &StatSnapshot,
        cd: Option<&ChargeSnapshot>,
    ) -> PhaseRecord {
        let mut stats: BTreeMap<(String, String), StatRecord> = BTreeMap::new();
        for (k, vals) in &sd.rows {
            let cgroup = self.label(k.cgroup_id);
            let item = self.stat.items.name(k.item);
            let unit = match (self.stat.unit, self.stat.items.unit_bytes(k.item)) {
                (ValueUnit::Pages, _) | (ValueUnit::Native, None) => "pages",
                (ValueUnit::Native, Some(1)) => "bytes",
                (ValueUnit::Native, Some(_)) => "KiB",
            };
            let rec = stats
                .entry((cgroup.clone(), item.clone()))
                .or_insert_with(|| StatRecord {
                    cgroup,
                    item,
                    unit: unit.into(),
                    per_cpu: BTreeMap::new(),
                    total: 0,
                    events: 0,
                });
            for (cpu, v) in vals.iter().enumerate() {
                if v.events == 0 {
                    continue;
                }
                *rec.per_cpu.entry(cpu).or_default() += v.delta;
                rec.total += v.delta;
                rec.events += v.events;
            }
        }
        let mut charges = Vec::new();
        let mut oom = Vec::new();
        let mut lifecycle = Vec::new();
        let mut lost = sd.counters.lost();
        if let Some(cd) = cd {
            lost += cd.counters.lost();
            for id in cd.cgroups() {
                for f in cd.figures(id) {
                    let r = ChargeRecord::from_figures(self.label(id), &f);
                    if !r.is_empty() {
                        charges.push(r);
                    }
                }
            }
            for e in &cd.lifecycle {
                lifecycle.push(self.life_row(e));
            }
            for o in &cd.oom {
                oom.push(OomRow {
                    kind: o.kind.to_string(),
                    cpu: o.cpu,
                    cgroup: if o.cgroup_id == 0 {
                        "(none: global)".into()
                    } else {
                        self.label(o.cgroup_id)
                    },
                    pid: o.pid,
                    comm: o.comm.clone(),
                    order: o.order,
                });
            }
        }
        PhaseRecord {
            name,
            start_ms,
            end_ms,
            error: None,
            stats: stats.into_values().collect(),
            charges,
            oom,
            lifecycle,
            lost_events: lost,
            skipped_events: sd.counters.missed,
        }
    }

    /// An `explain` report of one of the run's cgroups, taken now.
    pub fn explain(&self, cg: &MemCgroup) -> Result<ExplainReport> {
        let mut ex = Explainer::new(&self.hier, cg.clone())?;
        Ok(ex.report()?)
    }

    /// How the charge path was seen in this run.
    pub fn charge_source(&self) -> String {
        match &self.charge {
            None => format!(
                "unavailable: {}",
                self.charge_error.as_deref().unwrap_or("not attached")
            ),
            Some(c) if c.charge_path_attached() => "probed".into(),
            Some(c) if c.inference_attached() => {
                "inferred from page_counter readings at stat events (charge path not probeable here)".into()
            }
            Some(_) => "unavailable: no charge or inference hook attached".into(),
        }
    }

    /// True when charges were probed directly (not inferred).
    pub fn charge_probed(&self) -> bool {
        self.charge
            .as_ref()
            .is_some_and(|c| c.charge_path_attached())
    }

    fn hooks(&self) -> Vec<HookUse> {
        let mut out = Vec::new();
        let outcomes = self
            .stat
            .outcomes
            .iter()
            .chain(self.charge.iter().flat_map(|c| c.outcomes.iter()));
        for o in outcomes {
            out.push(HookUse {
                hook: o.id.to_string(),
                used: o
                    .used
                    .as_ref()
                    .map(|u| format!("{} {}", u.flavour, u.target)),
                missing: o.used.is_none().then(|| {
                    o.failed
                        .first()
                        .map(|(f, t, e)| format!("{f} {t}: {e}"))
                        .unwrap_or_else(|| "no candidate".into())
                }),
            });
        }
        out
    }

    /// Ends the run: removes every cgroup and file it created and returns the report.
    pub fn finish(
        mut self,
        params: serde_json::Value,
        results: serde_json::Value,
        ledgers: Vec<LedgerAt>,
        oom_kills: Vec<OomKill>,
        verdict: Verdict,
    ) -> Result<Report> {
        if let Some(pb) = &self.progress {
            pb.finish_and_clear();
        }
        let _ = self.poll();
        let hooks = self.hooks();
        let charge_source = self.charge_source();
        let value_unit = match self.stat.unit {
            ValueUnit::Pages => "pages (tracepoint values)",
            ValueUnit::Native => "native units (function arguments)",
        };
        let duration_ms = self.now_ms();
        let mut s = self;
        let lifecycle = std::mem::take(&mut s.lifecycle);
        let Session {
            run,
            stat,
            charge,
            phases,
            page_size,
            experiment,
            lost,
            hier,
            ..
        } = s;
        drop(stat);
        drop(charge);
        let run_id = run.run_id().to_string();
        run.remove().context("removing the run's cgroups")?;
        let skipped_events = phases.iter().map(|p| p.skipped_events).sum();
        Ok(Report {
            format: REPORT_FORMAT,
            experiment: experiment.to_string(),
            run_id,
            kernel: kernel_release(),
            cgroup_version: match hier.version {
                CgroupVersion::V1 => "v1".into(),
                CgroupVersion::V2 => "v2".into(),
            },
            page_size,
            online_cpus: online_cpus(),
            params,
            hooks,
            charge_source,
            value_unit: value_unit.into(),
            phases,
            results,
            ledgers,
            oom_kills,
            lifecycle,
            lost_events: lost,
            skipped_events,
            duration_ms,
            verdict,
        })
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Prints (and records) a finished report; the exit code is 0 when every check held.
pub fn emit(report: &Report, common: &Common) -> Result<i32> {
    if let Some(path) = &common.record {
        report::save(report, path)?;
    }
    if common.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report::render_text(report));
    }
    Ok(if report.verdict.checks.iter().all(|c| c.ok) {
        0
    } else {
        1
    })
}
