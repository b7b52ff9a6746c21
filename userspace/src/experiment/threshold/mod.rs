//! `run threshold` (seed 002 §9.10): memory usage thresholds (v1) and `memory.high` events
//! (v2). Where does a threshold fire, and why does `memory.stat` disagree with it at that
//! moment?
//!
//! A workload in the child cgroup `t`, pinned to one CPU, touches anonymous pages `--step` at
//! a time up to `--grow-to`, then frees them the same way. Each `--threshold` is registered
//! through `cgroup.event_control` with its own eventfd; after every step the run reads the
//! eventfds and `memory.usage_in_bytes`, and at each event it takes an `explain` ledger of `t`.
//!
//! The kernel's rules (6.18 mm/memcontrol-v1.c; the same code in mm/memcontrol.c of 6.1):
//! - the usage compared is the memory page_counter (`mem_cgroup_usage`), which a charge
//!   moves by whole batches (a refill of the per-CPU stock), not the statistics;
//! - thresholds are checked only in `memcg1_check_events`, after a folio is charged
//!   (`commit_charge`) or a batch of folios uncharged (`uncharge_batch`), and only when this
//!   CPU's page-event count of the memcg passed its next target: every
//!   `THRESHOLDS_EVENTS_TARGET` (128, a `#define` of mm/memcontrol-v1.c, so not in BTF)
//!   charged or uncharged pages (`memcg1_event_ratelimit`);
//! - `__mem_cgroup_threshold` then signals every threshold crossed since its last check, in
//!   either direction, once.
//!
//! So an event fires up to 127 page events after the page_counter crossed, and at that moment
//! `memory.stat` can be short of the usage by the stock, the unflushed per-CPU deltas and the
//! lru_add batches: the ledger at each event names those terms.
//!
//! v2 has no usage thresholds (`cgroup.event_control` is v1 only); its notification is
//! `memory.events`, whose `high` count rises when usage is found above `memory.high`. There
//! each threshold becomes `memory.high` in turn (`high.rs`, with that path's rules).
//!
//! `--root` (v1) registers the same thresholds on the root cgroup too, whose usage is not a
//! page_counter but a sum of counters (`root.rs`).

mod high;
mod root;
#[cfg(test)]
mod tests;

use std::{
    fmt::Write as _,
    io::Read as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, Report, Session, Verdict};
use crate::experiment::{Context as _, Result, fail, refuse};
use crate::{
    cgroup::{CgroupVersion, MemoryHierarchy},
    explain::Explainer,
    workload::{Workload, workload_binary},
};

/// How far ahead of its page events on a CPU a memcg's next threshold check is set (it runs
/// once they are passed, so checks are this + 1 events apart): `THRESHOLDS_EVENTS_TARGET`, mm/memcontrol-v1.c:42 (6.18.5), mm/memcontrol.c (6.1.192). A
/// `#define`, not in BTF; the report gives the lag it observed beside it.
pub const THRESHOLDS_EVENTS_TARGET: u64 = 128;

/// Most thresholds in one run.
pub const MAX_THRESHOLDS: usize = 16;

/// Options of `run threshold`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// Thresholds, bytes, ascending.
    pub thresholds: Vec<u64>,
    /// Anonymous memory grown to, bytes.
    pub grow_to: u64,
    /// Pages touched (and freed) per step.
    pub step_pages: u64,
    /// The workload's CPU.
    pub cpu: usize,
    /// v1: also register the thresholds on the root cgroup (`--root`).
    #[serde(default)]
    pub root: bool,
}

/// Checks the options against the page size (before anything is created).
pub fn validate(p: &Params, page: u64) -> Result<()> {
    if p.thresholds.is_empty() || p.thresholds.len() > MAX_THRESHOLDS {
        refuse!("--threshold: give 1 to {MAX_THRESHOLDS} sizes");
    }
    if p.thresholds.windows(2).any(|w| w[0] >= w[1]) {
        refuse!("--threshold: the sizes must be distinct and ascending");
    }
    if p.step_pages == 0 {
        refuse!("--step must be at least one page");
    }
    let top = *p.thresholds.last().expect("not empty");
    if p.grow_to <= top {
        refuse!(
            "--grow-to ({} bytes) must be above the highest threshold ({top} bytes)",
            p.grow_to
        );
    }
    if p.grow_to > (1 << 30) {
        refuse!("--grow-to must be at most 1G");
    }
    if p.thresholds[0] < page {
        refuse!("--threshold: each size must be at least a page ({page} bytes)");
    }
    Ok(())
}

/// How the thresholds were watched.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// v1: usage thresholds on `memory.usage_in_bytes` (`cgroup.event_control`, eventfds).
    #[default]
    V1Thresholds,
    /// v2: each threshold as `memory.high` in turn, `memory.events`' `high` count and poll.
    V2High,
}

/// One signal of a threshold's eventfd (v1), or the first `high` events of a `memory.high`
/// (v2).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// The threshold, bytes above the usage the workload started with.
    pub threshold: u64,
    /// Where it was registered: that usage plus `threshold`, bytes of memory.usage_in_bytes.
    pub registered_bytes: u64,
    /// `up` (usage rose to or above it) or `down` (fell below it).
    pub direction: String,
    /// Pages the workload held after the step in which the event was read.
    pub pages_held: u64,
    /// Signals read (the kernel signals once per crossing).
    pub signals: u64,
    /// `memory.usage_in_bytes` (the page_counter) right after that step.
    pub usage_bytes: u64,
    /// Pages held after the first step whose usage was past the threshold (the crossing).
    pub crossed_at_pages: Option<u64>,
    /// Page events between the crossing and the event (`pages_held` apart).
    pub lag_pages: Option<u64>,
    /// What memory.stat showed short of the usage at the event, and why (the ledger's gap).
    pub gap_pages: i64,
    /// ... of which the per-CPU charge stock.
    pub stock_pages: i64,
    /// ... unflushed per-CPU statistic deltas.
    pub unflushed_pages: i64,
    /// ... folios in lru_add batches.
    pub lru_add_pages: i64,
    /// ... less what the ledger clamped (a statistic below zero counts as zero).
    pub clamped_pages: i64,
    /// ... unexplained (0 when the ledger closes).
    pub unexplained_pages: i64,
    /// ... ledger terms memory.stat has no line for (before 5.18 on v1: the kmem counter).
    #[serde(default)]
    pub outside_stat_pages: i64,
    /// The kernel counts kernel memory nowhere (5.10 on v2): the unexplained pages hold it.
    #[serde(default)]
    pub kmem_uncounted: bool,
    /// v2: the page_counter before the step with the event, bytes.
    #[serde(default)]
    pub usage_before_bytes: Option<u64>,
    /// v2: its watermark (`memory.peak`) before that step, bytes.
    #[serde(default)]
    pub peak_before_bytes: Option<u64>,
    /// v2: its watermark after it (the crossing, which reclaim may have undone since), bytes.
    #[serde(default)]
    pub peak_bytes: Option<u64>,
    /// v2: a poll on `memory.events` saw the kernel's notification.
    #[serde(default)]
    pub notified: Option<bool>,
    /// v2: how long the step with the event took, ms (the kernel's throttling sleeps in it).
    #[serde(default)]
    pub step_ms: Option<f64>,
}

impl Event {
    /// The fields the `explain` ledger taken at the event gives (what memory.stat is short of
    /// the usage by, and why); the rest default, for the caller to fill.
    fn ledger_at(r: &crate::explain::ExplainReport) -> Event {
        Event {
            gap_pages: r.gap.pages,
            stock_pages: r.gap.stock_pages,
            unflushed_pages: r.gap.unflushed_pages,
            lru_add_pages: r.gap.lru_add_pages,
            clamped_pages: r.gap.clamped_pages,
            unexplained_pages: r.unexplained_pages,
            kmem_uncounted: r.kmem_counted_nowhere(),
            outside_stat_pages: r.gap.outside_stat_pages,
            ..Event::default()
        }
    }
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// Page size, bytes.
    pub page_size: u64,
    /// The check interval the report assumes (see [`THRESHOLDS_EVENTS_TARGET`]).
    pub events_target: u64,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Steps taken (up and down).
    pub steps: u64,
    /// The page_counter once the workload had started, bytes.
    pub baseline_bytes: u64,
    /// How the thresholds were watched (v1 in older records).
    #[serde(default)]
    pub mechanism: Mechanism,
    /// v2: `MEMCG_CHARGE_BATCH` as measured (`None`: not measured), pages.
    #[serde(default)]
    pub charge_batch: Option<u64>,
    /// `--root`: the root's thresholds and events.
    #[serde(default)]
    pub root: Option<root::RootResults>,
    /// v2: where the page_counter's watermark (`peak_*` of the events) was read.
    #[serde(default)]
    pub peak_source: Option<String>,
}

pub use root::{Formula, RootEvent, RootResults};

/// A registered threshold.
struct Watch {
    threshold: u64,
    /// Registered at, bytes of usage.
    at: u64,
    efd: OwnedFd,
}

impl Watch {
    /// Registers a threshold of `at` bytes on the usage file `usage` of the cgroup at `cg`
    /// (`cgroup.event_control`) with a new eventfd.
    fn register(
        cg: &std::path::Path,
        usage: &std::fs::File,
        threshold: u64,
        at: u64,
    ) -> Result<Watch> {
        let efd = eventfd()?;
        let line = format!("{} {} {at}", efd.as_raw_fd(), usage.as_raw_fd());
        let ctl = cg.join("cgroup.event_control");
        std::fs::write(&ctl, &line)
            .with_context(|| format!("registering {at} bytes in {}", ctl.display()))?;
        Ok(Watch { threshold, at, efd })
    }

    /// Signals since the last read (0 when none: the eventfd is non-blocking).
    fn take(&self) -> Result<u64> {
        let mut f = std::fs::File::from(self.efd.try_clone()?);
        let mut buf = [0u8; 8];
        match f.read(&mut buf) {
            Ok(8) => Ok(u64::from_ne_bytes(buf)),
            Ok(n) => fail!("eventfd read {n} bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e).context("reading a threshold eventfd"),
        }
    }
}

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments; a valid descriptor is owned from here on.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("eventfd");
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs the experiment.
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> Result<Report> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    validate(&p, page)?;
    if !super::online_cpus().contains(&p.cpu) {
        refuse!("--cpu {} is not an online CPU", p.cpu);
    }
    if hier.version == CgroupVersion::V2 {
        if p.root {
            refuse!("--root: cgroup v2 has no usage thresholds, and its root has no memory.high");
        }
        return high::run(hier, p, common, page);
    }
    let grow_pages = p.grow_to.div_ceil(page);
    let worst = grow_pages * page + (32 << 20);
    let mut s = super::Session::start(hier, "threshold", worst, 2, common)?;
    let steps = 2 * grow_pages.div_ceil(p.step_pages);
    s.expect_phases(4);
    let t = s.child("t")?;
    let bin = workload_binary();
    let mut w = s.phase("start in t", |_| Ok(Workload::spawn(&bin, &t, p.cpu)?))?;
    // The thresholds sit above what the workload holds once started (its binary's own pages
    // are charged to `t` too): registered at that usage plus each `--threshold`.
    let baseline = t.usage_bytes()?.unwrap_or(0);
    let usage = std::fs::File::open(t.path().join("memory.usage_in_bytes"))
        .context("memory.usage_in_bytes")?;
    let mut watches = Vec::new();
    for &threshold in &p.thresholds {
        watches.push(Watch::register(
            t.path(),
            &usage,
            threshold,
            baseline + threshold,
        )?);
    }
    let mut ex = Explainer::new(hier, t.clone())?;
    // The root's thresholds sit above its usage once this process has loaded its reader (its
    // own heap is in the global counters the root's usage may be made of).
    let mut roots = if p.root {
        ex.report()?;
        Some(root::RootWatches::register(hier, &p.thresholds, page)?)
    } else {
        None
    };
    let mut events: Vec<Event> = Vec::new();
    let mut ledgers = Vec::new();
    // Per threshold: the pages held when the usage was first seen past it in each phase.
    let mut crossed: Vec<Option<u64>> = vec![None; watches.len()];
    let read_usage = || -> Result<u64> { Ok(t.usage_bytes()?.unwrap_or(0)) };
    let mut observe = |held: u64,
                       up: bool,
                       crossed: &mut Vec<Option<u64>>,
                       roots: &mut Option<root::RootWatches>|
     -> Result<()> {
        let u = read_usage()?;
        for (k, wt) in watches.iter().enumerate() {
            let past = if up { u >= wt.at } else { u < wt.at };
            if past && crossed[k].is_none() {
                crossed[k] = Some(held);
            }
            let n = wt.take()?;
            if n == 0 {
                continue;
            }
            let r = ex.report()?;
            let dir = if up { "up" } else { "down" };
            ledgers.push(LedgerAt::new(
                &format!("at the {dir} event of {} bytes", wt.threshold),
                "t",
                &r,
            ));
            let lag = crossed[k].map(|c| held.abs_diff(c));
            events.push(Event {
                threshold: wt.threshold,
                registered_bytes: wt.at,
                direction: dir.into(),
                pages_held: held,
                signals: n,
                usage_bytes: u,
                crossed_at_pages: crossed[k],
                lag_pages: lag,
                ..Event::ledger_at(&r)
            });
        }
        if let Some(rw) = roots.as_mut() {
            rw.observe(held, up)?;
        }
        Ok(())
    };
    let step = p.step_pages;
    s.phase(
        format!("grow to {grow_pages} pages, {step} at a time"),
        |_| {
            let mut held = 0;
            while held < grow_pages {
                let n = step.min(grow_pages - held);
                w.touch(n)?;
                held += n;
                observe(held, true, &mut crossed, &mut roots)?;
            }
            Ok(())
        },
    )?;
    crossed.iter_mut().for_each(|c| *c = None);
    if let Some(rw) = roots.as_mut() {
        rw.end_phase(true);
    }
    s.phase(format!("free {grow_pages} pages, {step} at a time"), |_| {
        let mut held = grow_pages;
        while held > 0 {
            let n = step.min(held);
            w.free_pages(n)?;
            held -= n;
            observe(held, false, &mut crossed, &mut roots)?;
        }
        Ok(())
    })?;
    s.phase("exit", |_| {
        w.exit()?;
        Ok(())
    })?;
    drop(watches);
    if let Some(rw) = roots.as_mut() {
        rw.end_phase(false);
    }
    let results = Results {
        params: p.clone(),
        page_size: page,
        events_target: THRESHOLDS_EVENTS_TARGET,
        events,
        steps,
        baseline_bytes: baseline,
        mechanism: Mechanism::V1Thresholds,
        charge_batch: None,
        root: roots.map(|r| r.results),
        peak_source: None,
    };
    finish(s, results, ledgers)
}

/// Judges the results and ends the run (either mechanism).
fn finish(s: Session, results: Results, ledgers: Vec<LedgerAt>) -> Result<Report> {
    let checks = checks(&results);
    let verdict = verdict(&results, checks);
    s.finish(
        serde_json::to_value(&results.params)?,
        serde_json::to_value(&results)?,
        ledgers,
        Vec::new(),
        verdict,
    )
}

fn checks(r: &Results) -> Vec<Check> {
    let mut out = match r.mechanism {
        Mechanism::V1Thresholds => checks_v1(r),
        Mechanism::V2High => checks_v2(r),
    };
    if let Some(root) = &r.root {
        out.extend(root::checks(r, root));
    }
    out
}

/// v2: per threshold, the first `high` events came in the step whose batch took the
/// page_counter past `memory.high`, by less than a batch, and were notified to a poller.
fn checks_v2(r: &Results) -> Vec<Check> {
    let mut out = Vec::new();
    let page = r.page_size;
    for &t in &r.params.thresholds {
        let Some(e) = r.events.iter().find(|e| e.threshold == t) else {
            out.push(Check::rule(
                &format!("{t} bytes: a high event while growing"),
                "at least one".into(),
                "none".into(),
                false,
            ));
            continue;
        };
        let peak0 = e.peak_before_bytes.unwrap_or(u64::MAX);
        let peak1 = e.peak_bytes.unwrap_or(0);
        out.push(Check::rule(
            &format!(
                "{t} bytes: the first high events came in the step whose charge took the \
                 page_counter past memory.high"
            ),
            format!("peak before <= {} < peak after", e.registered_bytes),
            format!(
                "peak {peak0} -> {peak1} bytes, usage after {} ({} event(s))",
                e.usage_bytes, e.signals
            ),
            peak0 <= e.registered_bytes && peak1 > e.registered_bytes && e.signals >= 1,
        ));
        if let (Some(b), Some(u0)) = (r.charge_batch, e.usage_before_bytes) {
            // Steps near the threshold are shorter than a batch, so the crossing charged one.
            out.push(Check::eq(
                &format!(
                    "{t} bytes: the crossing step charged one batch (peak - usage before, pages)"
                ),
                b as i64,
                (peak1 as i64 - u0 as i64) / page as i64,
            ));
        }
        out.push(Check::eq(
            &format!("{t} bytes: poll on memory.events saw the notification"),
            true,
            e.notified == Some(true),
        ));
        out.push(Check::ledger_closes(
            &format!("{t} bytes: the ledger at the event closes (unexplained pages)"),
            e.unexplained_pages,
            e.kmem_uncounted,
        ));
    }
    out
}

/// v1: each threshold signalled once each way, after the crossing, within a check interval.
fn checks_v1(r: &Results) -> Vec<Check> {
    let mut out = Vec::new();
    let bound = r.events_target + r.params.step_pages;
    for &t in &r.params.thresholds {
        for dir in ["up", "down"] {
            let evs: Vec<&Event> = r
                .events
                .iter()
                .filter(|e| e.threshold == t && e.direction == dir)
                .collect();
            let signals: u64 = evs.iter().map(|e| e.signals).sum();
            out.push(Check::eq(
                &format!("{t} bytes: signals on the way {dir}"),
                1,
                signals,
            ));
            for e in evs {
                // On the right side: the event is never read before the page_counter was
                // seen past the threshold, and at most one check interval later.
                out.push(Check::rule(
                    &format!("{t} bytes {dir}: fired after the crossing, within a check interval"),
                    format!("0 <= lag < {bound} page events"),
                    match (e.crossed_at_pages, e.lag_pages) {
                        (Some(c), Some(l)) => {
                            format!("crossed at {c} pages, fired at {} ({l})", e.pages_held)
                        }
                        _ => format!(
                            "fired at {} pages, before the usage was seen past it",
                            e.pages_held
                        ),
                    },
                    e.lag_pages.is_some_and(|l| l < bound),
                ));
                out.push(Check::ledger_closes(
                    &format!("{t} bytes {dir}: the ledger at the event closes (unexplained pages)"),
                    e.unexplained_pages,
                    e.kmem_uncounted,
                ));
            }
        }
    }
    out
}

fn verdict(r: &Results, checks: Vec<Check>) -> Verdict {
    if r.mechanism == Mechanism::V2High {
        return verdict_v2(r, checks);
    }
    let mut summary = format!(
        "{} threshold(s) on memory.usage_in_bytes, anon grown to {} pages and freed, {} page(s) \
         a step. The kernel compares its page_counter (moved by whole charge batches) and checks \
         only every {} page events of the memcg on a CPU:\n",
        r.params.thresholds.len(),
        r.params.grow_to.div_ceil(r.page_size),
        r.params.step_pages,
        r.events_target
    );
    for e in &r.events {
        let _ = writeln!(
            summary,
            "- {} bytes {}: fired with {} pages held, {} after the usage crossed; usage {} pages, \
             memory.stat short by {} (stock {}, unflushed {}, lru_add {}, unexplained {}).",
            e.threshold,
            e.direction,
            e.pages_held,
            e.lag_pages
                .map(|l| format!("{l} page events"))
                .unwrap_or_else(|| "not".into()),
            e.usage_bytes / r.page_size,
            e.gap_pages,
            e.stock_pages,
            e.unflushed_pages,
            e.lru_add_pages,
            e.unexplained_pages
        );
    }
    if let Some(root) = &r.root {
        summary.push_str(&root::summary(r, root));
    }
    Verdict::judged(
        "thresholds fire on the page_counter, checked every few page events",
        summary.trim_end().to_string(),
        checks,
    )
}

fn verdict_v2(r: &Results, checks: Vec<Check>) -> Verdict {
    let page = r.page_size;
    let mut summary = format!(
        "{} threshold(s) as memory.high in turn, anon grown across each, {} page(s) a step (at \
         most a batch less a page near it). The kernel compares memory.high with its \
         page_counter only when a charge moved it (a whole batch{}), and raises a high event \
         in memory.events on the task's way back to user space:\n",
        r.params.thresholds.len(),
        r.params.step_pages,
        r.charge_batch
            .map(|b| format!(" of {b} pages"))
            .unwrap_or_default()
    );
    for e in &r.events {
        let _ = writeln!(
            summary,
            "- {} bytes: memory.high {} pages; the step from {} to {} pages charged crossed it \
             with {} pages held; {} high event(s){}, {}; memory.stat short of the usage by {} \
             (stock {}, unflushed {}, lru_add {}, unexplained {}).",
            e.threshold,
            e.registered_bytes / page,
            e.usage_before_bytes.map_or(0, |u| u / page),
            e.usage_bytes / page,
            e.pages_held,
            e.signals,
            e.step_ms
                .map(|ms| format!(" in a step of {ms:.1} ms"))
                .unwrap_or_default(),
            if e.notified == Some(true) {
                "notified to the poller"
            } else {
                "not notified"
            },
            e.gap_pages,
            e.stock_pages,
            e.unflushed_pages,
            e.lru_add_pages,
            e.unexplained_pages
        );
    }
    if r.events.iter().any(|e| e.signals > 1) {
        summary.push_str(
            "More than one event in a step: the overage was worth a throttling penalty and \
             reclaim freed nothing, so the kernel retried reclaim (an event each time) before \
             sleeping (mem_cgroup_handle_over_high).\n",
        );
    }
    Verdict::judged(
        "memory.high fires when a charge batch takes the page_counter past it",
        summary.trim_end().to_string(),
        checks,
    )
}

/// `run threshold` in the experiment registry.
pub struct Threshold;

impl super::Experiment for Threshold {
    const NAMES: &'static [&'static str] = &["threshold"];
    type Results = Results;
    fn render(_r: &Report, res: &Results) -> Result<String> {
        render(res)
    }
}

/// The text section of a threshold report.
fn render(res: &Results) -> Result<String> {
    let mut out = String::new();
    let how = match res.mechanism {
        Mechanism::V1Thresholds => "usage thresholds (v1 cgroup.event_control)",
        Mechanism::V2High => "memory.high in turn (v2 memory.events)",
    };
    let _ = writeln!(
        out,
        "threshold: {how}, {:?} bytes above the workload's starting usage ({} pages), grow to \
         {} bytes, {} page(s) a step, CPU {}",
        res.params.thresholds,
        res.baseline_bytes / res.page_size,
        res.params.grow_to,
        res.params.step_pages,
        res.params.cpu
    );
    if let Some(src) = &res.peak_source {
        let _ = writeln!(out, "  watermark (peak) read from: {src}");
    }
    let _ = writeln!(
        out,
        "  {:>12} {:>5} {:>8} {:>8} {:>6} {:>9} {:>6} {:>6} {:>9} {:>7} {:>12}",
        "THRESHOLD",
        "DIR",
        "HELD",
        "CROSSED",
        "LAG",
        "USAGE PG",
        "GAP",
        "STOCK",
        "UNFLUSHED",
        "LRU_ADD",
        "UNEXPLAINED"
    );
    for e in &res.events {
        let _ = writeln!(
            out,
            "  {:>12} {:>5} {:>8} {:>8} {:>6} {:>9} {:>6} {:>6} {:>9} {:>7} {:>12}",
            e.threshold,
            e.direction,
            e.pages_held,
            e.crossed_at_pages.map_or("-".into(), |c| c.to_string()),
            e.lag_pages.map_or("-".into(), |l| l.to_string()),
            e.usage_bytes / res.page_size,
            e.gap_pages,
            e.stock_pages,
            e.unflushed_pages,
            e.lru_add_pages,
            e.unexplained_pages
        );
    }
    if let Some(root) = &res.root {
        out.push_str(&root::render(res, root));
    }
    Ok(out)
}
