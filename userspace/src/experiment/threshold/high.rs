//! `run threshold` on cgroup v2: each `--threshold` becomes `memory.high` of `t` in turn, and
//! `memory.events` is watched (its `high` count read after every step, the file polled for
//! the kernel's notification) while the workload grows across it.
//!
//! The kernel's rules (6.x mm/memcontrol.c, `try_charge_memcg` and
//! `mem_cgroup_handle_over_high`):
//! - `memory.high` is compared with the memory page_counter only after a charge that moved it
//!   (`done_restock`: a whole batch refilling this CPU's stock); a charge served from the stock
//!   never looks. So the page_counter crosses `memory.high` by a batch at once, and the check
//!   comes right then;
//! - the charging task then reclaims on its way back to user space (`reclaim_high`), which
//!   raises a `high` event (`memcg_memory_event(MEMCG_HIGH)`, notifying pollers of
//!   `memory.events`) each time it finds the usage above `memory.high`, and retries while the
//!   overage is worth a penalty (more than `HZ / 100` jiffies by `calculate_high_delay`):
//!   more events, until reclaim brings the usage back under `memory.high` or gives up and the
//!   task sleeps. So the usage after the step can be below `memory.high` again (file pages
//!   reclaimed); the page_counter's watermark (`memory.peak`) keeps the crossing. The run
//!   stops growing at the first step with an event, and near the threshold steps at most one
//!   batch less a page at a time, so that the crossing charges exactly one batch: the step's
//!   peak is the usage before it plus one batch.
//!
//! At the event, `memory.stat` is short of `memory.current` by the stock the batch left, the
//! unflushed per-CPU deltas and the lru_add batches: the ledger taken then names each.

use std::{
    io::{Read as _, Seek as _},
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Event, Mechanism, Params, Results, THRESHOLDS_EVENTS_TARGET};
use crate::experiment::{Context as _, ExperimentError, Result};
use crate::{
    cgroup::{MemCgroup, MemoryHierarchy},
    experiment::{Common, LedgerAt, Report, Session},
    explain::Explainer,
    workload::{Workload, workload_binary},
};

/// How long the run waits for `memory.events`' notification after a step with an event
/// (the kernel defers notifications that come within 10 ms of the previous one).
const NOTIFY_WAIT: Duration = Duration::from_secs(1);

/// `memory.events`, kept open: its `high` count, and whether the kernel notified pollers since
/// the file was opened or last read (kernfs compares the open file's event count with the
/// file's, which `cgroup_file_notify` bumps). Counts are read from one open file and polls
/// made on another, so that reading a count does not consume the notification.
struct EventsFile(std::fs::File);

impl EventsFile {
    fn open(t: &MemCgroup) -> Result<Self> {
        let path = t.path().join("memory.events");
        let f = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
        let mut me = Self(f);
        me.high()?;
        Ok(me)
    }

    /// The `high` count (reading re-arms the notification).
    fn high(&mut self) -> Result<u64> {
        let mut text = String::new();
        self.0.rewind()?;
        self.0.read_to_string(&mut text).context("memory.events")?;
        crate::cgroup::parse_flat_keyed(&text)
            .ok()
            .and_then(|k| k.get("high"))
            .ok_or_else(|| ExperimentError::Failed("memory.events has no high line".into()))
    }

    /// Whether a notification arrived (or arrives within `wait`).
    fn notified(&self, wait: Duration) -> Result<bool> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLPRI)];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let n = poll(&mut fds, PollTimeout::from(ms)).context("poll on memory.events")?;
        Ok(n > 0
            && fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)))
    }
}

/// Runs the experiment on v2.
pub(super) fn run(hier: &MemoryHierarchy, p: Params, common: &Common, page: u64) -> Result<Report> {
    let grow_pages = p.grow_to.div_ceil(page);
    let worst = grow_pages * page + (32 << 20);
    let mut s = Session::start(hier, "threshold", worst, 2, common)?;
    s.expect_phases(2 + p.thresholds.len() as u64);
    let t = s.child("t")?;
    let bin = workload_binary();
    let mut w = s.phase("start in t", |_| Ok(Workload::spawn(&bin, &t, p.cpu)?))?;
    let baseline = t.usage_bytes()?.unwrap_or(0);
    let mut ex = Explainer::new(hier, t.clone())?;
    // The page_counter's watermark: `memory.peak` from 5.19; before it (5.10) the same
    // counter read from the kernel in an explain snapshot.
    let has_peak_file = t.peak_bytes()?.is_some();
    let peak_source = if has_peak_file {
        "memory.peak"
    } else {
        "page_counter watermark from an explain snapshot (no memory.peak before 5.19)"
    };
    let peak = |ex: &mut Explainer| -> Result<u64> {
        Ok(match t.peak_bytes()? {
            Some(b) => b,
            None => ex.report()?.charge.peak_bytes,
        })
    };
    // Measured once per process; what the ledgers report beside it.
    let batch = crate::workload::batch::charge_batch(hier)
        .ok()
        .map(|b| b.pages);
    let mut counts = EventsFile::open(&t)?;
    let mut events: Vec<Event> = Vec::new();
    let mut ledgers = Vec::new();
    let mut steps = 0;
    for &threshold in &p.thresholds {
        // memory.high holds whole pages (page_counter_memparse rounds down).
        let high = (baseline + threshold) / page * page;
        t.set_high_bytes(Some(high))?;
        let phase = format!("grow past memory.high = {high} bytes");
        let ev = s.phase(phase, |_| {
            // Armed now: a poll on it returns once the kernel notifies after this.
            let watch = EventsFile::open(&t)?;
            let before = counts.high()?;
            let mut held = 0u64;
            let mut crossed = None;
            while held < grow_pages {
                let u0 = t.usage_bytes()?.unwrap_or(0);
                let peak0 = peak(&mut ex)?;
                let mut n = p.step_pages.min(grow_pages - held);
                if let Some(b) = batch
                    && u0 + n * page > high
                {
                    // Near the threshold: one batch at most per step (see the module docs).
                    n = n.min(b.saturating_sub(1).max(1));
                }
                let t0 = Instant::now();
                w.touch(n)?;
                let step_ms = t0.elapsed().as_secs_f64() * 1e3;
                held += n;
                steps += 1;
                let u1 = t.usage_bytes()?.unwrap_or(0);
                let peak1 = peak(&mut ex)?;
                if peak1 > high && crossed.is_none() {
                    crossed = Some(held);
                }
                let count = counts.high()?;
                if count == before {
                    continue;
                }
                let notified = watch.notified(NOTIFY_WAIT)?;
                let r = ex.report()?;
                ledgers.push(LedgerAt::new(
                    &format!("at the high event of {threshold} bytes"),
                    "t",
                    &r,
                ));
                return Ok(Some(Event {
                    threshold,
                    registered_bytes: high,
                    direction: "up".into(),
                    pages_held: held,
                    signals: count - before,
                    usage_bytes: u1,
                    crossed_at_pages: crossed,
                    lag_pages: crossed.map(|c| held - c),
                    usage_before_bytes: Some(u0),
                    peak_before_bytes: Some(peak0),
                    peak_bytes: Some(peak1),
                    notified: Some(notified),
                    step_ms: Some(step_ms),
                    ..Event::ledger_at(&r)
                }));
            }
            Ok(None)
        })?;
        let held = ev.as_ref().map_or(grow_pages, |e| e.pages_held);
        events.extend(ev);
        // Back below it for the next one: free what was touched, lift the limit.
        w.free_pages(held)?;
        t.set_high_bytes(None)?;
    }
    s.phase("exit", |_| {
        w.exit()?;
        Ok(())
    })?;
    let results = Results {
        params: p.clone(),
        page_size: page,
        events_target: THRESHOLDS_EVENTS_TARGET,
        events,
        steps,
        baseline_bytes: baseline,
        mechanism: Mechanism::V2High,
        charge_batch: batch,
        root: None,
        peak_source: Some(peak_source.into()),
    };
    super::finish(s, results, ledgers)
}
