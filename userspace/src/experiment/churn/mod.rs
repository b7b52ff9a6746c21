//! `run churn` (seed 002 §9.5, mkdir/rmdir): create and remove cgroups in a loop while
//! workloads run in sibling cgroups; how long does a removed (dying) cgroup live, what keeps
//! the long-lived ones, and how many are dying at the peak?
//!
//! The run's cgroup holds `sibling-<k>` cgroups whose workloads touch and free anonymous memory
//! in a loop (each on its own thread, one CPU each, round robin) for the whole churn, a `warmup`
//! cgroup, and the churned `churn-<i>` cgroups. Each churned cgroup runs a short job (spawn,
//! touch `job_pages`, and on every `pin_every`-th cgroup write a `pin_pages`-page file in a
//! private directory of the run in `/dev/shm`, a tmpfs), the job exits, the cgroup is removed.
//! Past [`PHASED_CYCLES`] cycles, consecutive cycles share one phase record. After the last removal
//! the tool watches for `hold`, takes an `explain` ledger of the run (its `dying` table says
//! what each dying cgroup still holds), removes the pinning files, and waits up to
//! `release_wait` for the pinned cgroups to be released.
//!
//! The kernel's lifecycle (6.18 kernel/cgroup/cgroup.c, mm/memcontrol.c; 6.1/6.12 the same):
//! - rmdir kills the css (`kill_css` -> `percpu_ref_kill_and_confirm`): after an RCU grace
//!   period `css_killed_ref_fn` queues `css_killed_work_fn`, which clears `CSS_ONLINE` and runs
//!   `mem_cgroup_css_offline` (reparents kernel memory objcgs, drains the charge stocks, :3879)
//!   and drops the base reference. The cgroup is now *dying*.
//! - Every charged folio holds a css reference (`commit_charge`); so do stock slots and
//!   sockets. When the last one goes, `css_release` queues `css_release_work_fn` (:5626), which
//!   unlinks the css from its parent's `children` list (`list_del_rcu(&css->sibling)`) and
//!   traces `cgroup:cgroup_release`. That unlink is what this experiment times: the css walk
//!   (`residue::walk`, the same walk `explain` uses) stops seeing the memcg.
//! - v2's `cgroup.stat` `nr_dying_descendants` counts cgroups, not memcgs: it drops in the
//!   cgroup's own (self css) release, which waits for the memcg css to be *freed* (after
//!   another RCU grace period, `css_free_rwork_fn` -> `cgroup_put`). It lags the walk by a
//!   moment, and agrees with it in a steady state.
//! - A tmpfs page stays charged to the cgroup that wrote it until the file is removed, so a
//!   pinned cgroup stays dying until then; its page shows as an LRU page (or an lru_add batch
//!   page) of the dying memcg. The job's anonymous pages are uncharged at its exit, and its
//!   kernel memory (objcgs) is reparented at offline: neither pins it.
//!
//! The times are **polled**: a thread walks the run's css subtree every `poll` interval and
//! the report gives each lifetime as an interval `[last poll that saw it, first poll that did
//! not]` minus the rmdir time, with the poll gaps measured; where the `cgroup_rmdir` and
//! `cgroup_release` BTF tracepoints attach (plan ids `lifecycle.*`), the kernel's own times
//! are given beside them.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, Report, Session, Verdict};
use crate::experiment::{Context as _, Result, fail, refuse};
use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer},
    kernel::layout::ResidueLayout,
    residue::{self, ResidueReader},
    workload::{Workload, workload_binary},
};

mod checks;
mod plots;
mod poll;
mod render;
mod results;

use checks::*;
use poll::*;
pub use render::Churn;
pub use results::*;

/// Most churned cgroups in one run: the css walk (poller and ledger) reads up to
/// `RES_MAX_MEMCGS` memcgs, and the run's subtree holds every churned cgroup still dying
/// besides the siblings and the warm-up.
pub const MAX_CYCLES: u32 = 10_000;
const _: () = assert!(MAX_CYCLES + 16 + 2 < probes_common::RES_MAX_MEMCGS);

/// Pause between two rounds of a sibling. Each round maps, touches and unmaps its pages; the
/// page tables and maple-tree nodes of an unmapped range are freed after an RCU grace period
/// (`tlb_remove_table`, `mt_free_rcu`), so a sibling looping flat out on a loaded machine can
/// pile up kernel memory charged to the run faster than grace periods end (seen once on the
/// host: 60 MiB of kmem against 5 MiB of anon, and a memcg OOM). The pause bounds the rate.
const SIBLING_PAUSE: Duration = Duration::from_millis(1);
/// Kernel memory allowed per sibling besides its pages (RCU-delayed frees, see above).
const SIBLING_KMEM: u64 = 16 << 20;

/// What a pinned (dying) churned cgroup may keep charged to the run besides its pages: its
/// memcg's per-CPU statistics are allocated with `__GFP_ACCOUNT` while the parent is the
/// active memcg (`mem_cgroup_css_alloc`), so they are charged to the run until the memcg is
/// freed. A budget, not a measurement: 64 KiB and 8 KiB per possible CPU (a few KiB per CPU
/// were allocated on 6.1 to 6.18), so that thousands of pinned cgroups do not push the run
/// into its limit.
fn dying_kmem_budget() -> u64 {
    let cpus = residue::possible_cpus().unwrap_or(1) as u64;
    (64 << 10) + cpus * (8 << 10)
}

/// Options of `run churn`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// Churned cgroups.
    pub cycles: u32,
    /// Sibling workloads running meanwhile.
    pub siblings: u32,
    /// Every K-th churned cgroup is pinned by a tmpfs file (0: none).
    pub pin_every: u32,
    /// Pages of each pinning file.
    pub pin_pages: u64,
    /// Watch time after the last removal, ms.
    pub hold_ms: u64,
    /// Wait for the releases after unpinning, ms.
    pub release_wait_ms: u64,
    /// Poll interval of the css walk, ms.
    pub poll_ms: u64,
    /// Anonymous pages each job touches.
    pub job_pages: u64,
    /// Anonymous pages each sibling touches and frees per round.
    pub sibling_pages: u64,
}

impl Params {
    /// Whether churned cgroup `i` (0-based) is pinned.
    pub fn pinned(&self, i: u32) -> bool {
        self.pin_every > 0 && (i + 1).is_multiple_of(self.pin_every)
    }

    /// Checks the options (before anything is created).
    pub fn validate(&self) -> Result<()> {
        if self.cycles == 0 || self.cycles > MAX_CYCLES {
            refuse!("--cycles must be 1..={MAX_CYCLES}, not {}", self.cycles);
        }
        if self.siblings > 16 {
            refuse!("--siblings must be at most 16, not {}", self.siblings);
        }
        if self.poll_ms == 0 || self.poll_ms > 1000 {
            refuse!("--poll must be 1ms..=1s, not {} ms", self.poll_ms);
        }
        if self.hold_ms > 600_000 || self.release_wait_ms > 600_000 {
            refuse!("--hold and --release-wait must be at most 10min");
        }
        if self.pin_pages == 0 || self.sibling_pages == 0 {
            refuse!("--pin-pages and --sibling-pages must be at least 1");
        }
        Ok(())
    }
}

/// Cycles recorded one phase each (a job phase and an rmdir phase). Every phase takes two
/// snapshots of the probes' maps, whose size grows with the churned cgroups, so a phase per
/// cycle costs O(cycles^2) (1,000 cycles took 3 minutes that way). Past this many cycles,
/// consecutive cycles share one phase so that a run has about this many cycle phases; each
/// cycle's own times (rmdir, lifetime) are kept whatever the grouping.
pub const PHASED_CYCLES: u32 = 200;

/// Cycles per phase for a run of `cycles` (1: a job and an rmdir phase per cycle).
pub fn cycles_per_phase(cycles: u32) -> u32 {
    cycles.div_ceil(PHASED_CYCLES).max(1)
}

/// Where the pinning files go: a private directory of the run in `/dev/shm` when that is a
/// tmpfs, else the run's scratch directory. On a disk file system (`/run` is one on some
/// hosts) a pinning file is ordinary page cache: reclaim under the run's limit evicted 54 of
/// 1,250 of them during a 5,000-cycle churn here, each releasing its cgroup long before the
/// file was removed.
fn pin_dir(s: &Session) -> Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = |d: &Path| {
        nix::sys::statfs::statfs(d)
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    };
    if on_tmpfs(shm) {
        Ok(s.run.private_dir(shm, "pins")?)
    } else {
        Ok(s.run.scratch()?.to_path_buf())
    }
}

/// What every cycle shares.
#[derive(Clone, Copy)]
struct CycleEnv<'a> {
    bin: &'a Path,
    scratch: &'a Path,
    online: &'a [usize],
    p: &'a Params,
    pin_bytes: u64,
}

/// One churned cgroup: create, run its job, remove; `phased` records the job and the rmdir
/// as phases of their own. Returns the cgroup and its pinning file, if any.
fn cycle(
    s: &mut Session,
    poller: &Poller,
    env: CycleEnv<'_>,
    i: u32,
    phased: bool,
) -> Result<(Churned, Option<PathBuf>)> {
    let p = env.p;
    let name = format!("churn-{i}");
    let pinned = p.pinned(i);
    let cpu = env.online[(i as usize + p.siblings as usize) % env.online.len()];
    let cg = s.child(&name)?;
    poller.register(cg.id(), s.now_ms());
    let pin = env.scratch.join(format!("{name}.pin"));
    let run_job = |_: &mut Session| {
        job(
            env.bin,
            &cg,
            cpu,
            p.job_pages,
            pinned.then_some((pin.as_path(), env.pin_bytes)),
        )
    };
    let rmdir = |s: &mut Session| {
        std::fs::remove_dir(cg.path())
            .with_context(|| format!("removing {}", cg.path().display()))?;
        Ok(s.now_ms())
    };
    let removed_ms = if phased {
        s.phase(format!("{name} job"), run_job)?;
        s.phase(format!("{name} rmdir"), rmdir)?
    } else {
        run_job(s)?;
        rmdir(s)?
    };
    let c = Churned {
        index: i,
        cgroup: name,
        cgroup_id: cg.id(),
        pinned,
        cpu,
        removed_ms,
        first_dying_seen_ms: None,
        last_seen_ms: None,
        released_by_ms: None,
        lifetime_ms: None,
        dying_at_end_of_hold: false,
        held_at_end_of_hold: None,
        extra_lru_pages: 0,
        released_after_unpin_ms: None,
        traced_rmdir_ms: None,
        traced_release_ms: None,
        traced_lifetime_ms: None,
    };
    Ok((c, pinned.then_some(pin)))
}

/// A churned cgroup's job: touch, optionally write the pinning file, exit.
fn job(
    bin: &Path,
    cg: &MemCgroup,
    cpu: usize,
    pages: u64,
    pin: Option<(&Path, u64)>,
) -> Result<()> {
    let mut w = Workload::spawn(bin, cg, cpu)?;
    if pages > 0 {
        w.touch(pages)?;
    }
    if let Some((f, bytes)) = pin {
        let n = w.write_file(f, bytes)?;
        if n != bytes {
            fail!("{}: wrote {n} of {bytes} bytes", f.display());
        }
    }
    let st = w.exit()?;
    if !st.success() {
        fail!("the job in {} ended with {st}", cg.path().display());
    }
    Ok(())
}

/// Waits until `done` holds or `limit` passes; true when it held.
fn wait_for(poller: &Poller, limit: Duration, done: impl Fn(&PollState) -> bool) -> Result<bool> {
    let t = Instant::now();
    loop {
        if poller.with(&done)? {
            return Ok(true);
        }
        if t.elapsed() >= limit {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the experiment.
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> Result<Report> {
    p.validate()?;
    let online = super::online_cpus();
    if online.is_empty() {
        refuse!("no online CPU");
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    let pins = (0..p.cycles).filter(|&i| p.pinned(i)).count() as u64;
    // Siblings' pages, one job's pages (jobs run one at a time), every pinning file and the
    // warm-up's, plus kernel memory (page tables, stacks, slab) of the processes.
    let worst = (u64::from(p.siblings) * p.sibling_pages + p.job_pages + (pins + 1) * p.pin_pages)
        * page
        + u64::from(p.siblings) * SIBLING_KMEM
        + pins * dying_kmem_budget()
        + (32 << 20);
    let mut s = Session::start(
        hier,
        "churn",
        worst,
        p.cycles as usize + p.siblings as usize + 4,
        common,
    )?;
    let block = cycles_per_phase(p.cycles);
    s.expect_phases(if block == 1 {
        u64::from(p.cycles) * 2 + 6
    } else {
        u64::from(p.cycles.div_ceil(block)) + 6
    });
    let bin = workload_binary();
    let run_cg = s.run.cgroup().clone();
    let scratch = pin_dir(&s)?;
    let pin_bytes = p.pin_pages * page;

    // Warm-up: one job in a cgroup that stays alive, so that the pages of the binary and of
    // the libraries the job faults in the first time are charged to a live cgroup, not to a
    // churned one (they would keep it dying for as long as they are cached).
    let warm = s.child("warmup")?;
    let warm_pin = scratch.join("warmup.pin");
    s.phase("warm-up job", |_| {
        job(
            &bin,
            &warm,
            online[0],
            p.job_pages,
            Some((&warm_pin, pin_bytes)),
        )?;
        std::fs::remove_file(&warm_pin).with_context(|| warm_pin.display().to_string())
    })?;

    let mut sib_cgs = Vec::new();
    for k in 0..p.siblings {
        sib_cgs.push(s.child(&format!("sibling-{k}"))?);
    }
    let siblings = s.phase("start siblings", |_| {
        let mut ws = Vec::new();
        for (k, cg) in sib_cgs.iter().enumerate() {
            ws.push(Workload::spawn(&bin, cg, online[k % online.len()])?);
        }
        Siblings::start(ws, p.sibling_pages)
    })?;

    let poller = Poller::start(
        run_cg.clone(),
        Duration::from_millis(p.poll_ms),
        (Instant::now(), s.now_ms()),
    )?;

    let mut churned = Vec::new();
    let mut pin_files: Vec<PathBuf> = Vec::new();
    let mut first = 0;
    while first < p.cycles {
        let last = (first + block).min(p.cycles) - 1;
        let mut one = |s: &mut Session, i: u32, phased: bool| -> Result<()> {
            let c = cycle(
                s,
                &poller,
                CycleEnv {
                    bin: &bin,
                    scratch: &scratch,
                    online: &online,
                    p: &p,
                    pin_bytes,
                },
                i,
                phased,
            )?;
            if let Some(pin) = c.1 {
                pin_files.push(pin);
            }
            churned.push(c.0);
            Ok(())
        };
        if block == 1 {
            one(&mut s, first, true)?;
        } else {
            s.phase(format!("churn-{first}..={last} jobs and rmdirs"), |s| {
                (first..=last).try_for_each(|i| one(s, i, false))
            })?;
        }
        first = last + 1;
    }
    let last_removal = churned.last().map(|c| c.removed_ms).unwrap_or(0.0);
    let sibling_rounds = s.phase("stop siblings", |_| siblings.stop())?;

    // Hold: watch; end early once no unpinned churned cgroup is left and (v2) the kernel's
    // count agrees with the walk (it lags the walk, see the module docs).
    let unpinned_ids: Vec<u64> = churned
        .iter()
        .filter(|c| !c.pinned)
        .map(|c| c.cgroup_id)
        .collect();
    let v2 = s.version() == CgroupVersion::V2;
    let all_ids: Vec<u64> = churned.iter().map(|c| c.cgroup_id).collect();
    let ended_early = s.phase("hold", |_| {
        poller.wait_poll_after(last_removal, Duration::from_secs(10))?;
        wait_for(&poller, Duration::from_millis(p.hold_ms), |st| {
            let unpinned_gone = unpinned_ids
                .iter()
                .all(|id| st.tracks.get(id).is_none_or(|t| t.gone_by_ms.is_some()));
            let nothing_left = all_ids
                .iter()
                .all(|id| st.tracks.get(id).is_none_or(|t| t.gone_by_ms.is_some()));
            let agree = st.last.is_some_and(|(w, nr)| !v2 || nr == Some(w as u64));
            unpinned_gone && agree && nothing_left
        })
    })?;
    let ledger_report: ExplainReport = s.phase("ledger at the end of the hold", |_| {
        let mut ex = Explainer::new(hier, run_cg.clone())?.without_stat_file();
        Ok(ex.report()?)
    })?;
    let end_ms = s.now_ms();
    let end_of_hold = EndOfHold {
        ms: end_ms,
        ended_early,
        dying_walk: ledger_report.dying.len(),
        nr_dying_descendants: nr_dying_descendants(&run_cg),
    };
    let hold_state = poller.with(|st| {
        unpinned_ids
            .iter()
            .filter(|id| {
                st.tracks
                    .get(id)
                    .is_some_and(|t| t.gone_by_ms.is_some_and(|g| g <= end_ms))
            })
            .count()
    })?;

    // Unpin and wait for the releases.
    let mut unpin_ms = None;
    if !pin_files.is_empty() {
        // The time just before the first file goes: a cgroup can be released while the
        // later files are still being removed.
        let t = s.phase("remove the pinning files", |s| {
            let t = s.now_ms();
            for f in &pin_files {
                std::fs::remove_file(f).with_context(|| f.display().to_string())?;
            }
            Ok(t)
        })?;
        unpin_ms = Some(t);
        let pinned_ids: Vec<u64> = churned
            .iter()
            .filter(|c| c.pinned)
            .map(|c| c.cgroup_id)
            .collect();
        s.phase("wait for the releases", |_| {
            poller.wait_poll_after(t, Duration::from_secs(10))?;
            wait_for(&poller, Duration::from_millis(p.release_wait_ms), |st| {
                pinned_ids
                    .iter()
                    .all(|id| st.tracks.get(id).is_none_or(|t| t.gone_by_ms.is_some()))
            })
        })?;
    }
    let st = poller.finish()?;
    // The kernel's own account of each removal and release (BTF tracepoints), when attached.
    s.poll()?;
    let traced = s.lifecycle_attached();
    for c in churned.iter_mut() {
        let at = |kind: &str| {
            s.lifecycle()
                .iter()
                .find(|e| e.cgroup_id == c.cgroup_id && e.kind == kind)
                .map(|e| e.t_ms)
        };
        c.traced_rmdir_ms = at("rmdir");
        c.traced_release_ms = at("release");
        if let (Some(a), Some(b)) = (c.traced_rmdir_ms, c.traced_release_ms) {
            c.traced_lifetime_ms = Some(b - a);
        }
    }

    for c in churned.iter_mut() {
        let tr = st.tracks.get(&c.cgroup_id);
        c.first_dying_seen_ms = tr.and_then(|t| t.first_dying_ms);
        c.last_seen_ms = tr.map(|t| t.last_seen_ms);
        c.released_by_ms = tr.and_then(|t| t.gone_by_ms);
        c.lifetime_ms = c.released_by_ms.map(|g| {
            let lo = c
                .last_seen_ms
                .map(|l| (l - c.removed_ms).max(0.0))
                .unwrap_or(0.0);
            [lo, g - c.removed_ms]
        });
        if let Some(d) = ledger_report
            .dying
            .iter()
            .find(|d| d.cgroup_id == c.cgroup_id)
        {
            c.dying_at_end_of_hold = true;
            let h = Holding::from_dying(d);
            let file = if c.pinned { p.pin_pages as i64 } else { 0 };
            c.extra_lru_pages = (h.lru_total() - file).max(0);
            c.held_at_end_of_hold = Some(h);
        }
        if let (Some(u), Some(g)) = (unpin_ms, c.released_by_ms)
            && c.pinned
            && g > u
        {
            c.released_after_unpin_ms = Some(g - u);
        }
    }
    let polls = st.polls;
    let span = match (st.first_start, st.last_start) {
        (Some(a), Some(b)) if polls > 1 => (b - a) / (polls - 1) as f64,
        _ => 0.0,
    };
    let results = Results {
        params: p.clone(),
        poll: PollInfo {
            method: if traced {
                "polled css walk, and the cgroup_rmdir/cgroup_release tracepoints (exact lifetimes)"
                    .into()
            } else {
                "polled css walk (the lifecycle tracepoints cannot attach here)".into()
            },
            interval_ms: p.poll_ms,
            polls,
            max_gap_ms: st.max_gap_ms,
            mean_gap_ms: span,
            max_walk_ms: st.max_walk_ms,
        },
        sibling_rounds,
        scratch_on_tmpfs: nix::sys::statfs::statfs(&scratch)
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC),
        unpinned: churned.iter().filter(|c| !c.pinned).count(),
        unpinned_released_in_hold: hold_state,
        pinned: churned.iter().filter(|c| c.pinned).count(),
        pinned_released_after_unpin: churned
            .iter()
            .filter(|c| c.released_after_unpin_ms.is_some())
            .count(),
        unpin_ms,
        unpinned_lifetime: Spread::of(
            churned
                .iter()
                .filter(|c| !c.pinned)
                .filter_map(|c| c.lifetime_ms.map(|l| l[1]))
                .collect(),
        ),
        unpinned_traced_lifetime: Spread::of(
            churned
                .iter()
                .filter(|c| !c.pinned)
                .filter_map(|c| c.traced_lifetime_ms)
                .collect(),
        ),
        pinned_release_after_unpin: Spread::of(
            churned
                .iter()
                .filter_map(|c| c.released_after_unpin_ms)
                .collect(),
        ),
        churned,
        dying_over_time: st.series,
        peak_dying: st.peak,
        peak_ms: st.peak_ms,
        end_of_hold,
    };
    let checks = checks(&results);
    let verdict = verdict(&results, &checks);
    let ledgers = vec![LedgerAt::new(
        "at the end of the hold, before the pins were removed",
        ".",
        &ledger_report,
    )];
    let params = serde_json::to_value(&p)?;
    let results = serde_json::to_value(&results)?;
    s.finish(
        params,
        results,
        ledgers,
        Vec::new(),
        Verdict { checks, ..verdict },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_state_tracks_dying_release_and_peak() {
        let mut s = PollState::default();
        s.record(0.0, 1.0, &[(10, true), (11, true)], None);
        s.record(10.0, 11.0, &[(10, false), (11, false)], None);
        s.record(20.0, 21.0, &[(11, false)], None);
        s.record(30.0, 31.0, &[], None);
        assert_eq!(s.peak, 2);
        assert_eq!(s.peak_ms, 10.0);
        let t10 = &s.tracks[&10];
        assert_eq!(
            (t10.first_dying_ms, t10.last_seen_ms, t10.gone_by_ms),
            (Some(10.0), 10.0, Some(21.0))
        );
        assert_eq!(s.tracks[&11].gone_by_ms, Some(31.0));
        let walk: Vec<usize> = s.series.iter().map(|p| p.walk).collect();
        assert_eq!(walk, vec![0, 2, 1, 0]);
        assert_eq!(s.polls, 4);
        assert_eq!(s.max_gap_ms, 10.0);
        // Created at 35 ms and gone before any poll saw it: the poll at 40 ms sees it gone,
        // the one that started before it was created does not.
        s.register(12, 35.0);
        s.record(34.0, 36.0, &[], None);
        assert_eq!(s.tracks[&12].gone_by_ms, None);
        s.record(40.0, 41.0, &[], None);
        assert_eq!(s.tracks[&12].gone_by_ms, Some(41.0));
    }

    #[test]
    fn cycles_share_phases_past_phased_cycles() {
        assert_eq!(cycles_per_phase(1), 1);
        assert_eq!(cycles_per_phase(PHASED_CYCLES), 1);
        assert_eq!(cycles_per_phase(PHASED_CYCLES + 1), 2);
        for n in [PHASED_CYCLES + 1, 1_000, 5_000, MAX_CYCLES] {
            let b = cycles_per_phase(n);
            assert!(n.div_ceil(b) <= PHASED_CYCLES, "{n}: {b}");
            assert!(
                n.div_ceil(b - 1) > PHASED_CYCLES,
                "{n}: {b} is not the least"
            );
        }
    }

    #[test]
    fn few_lists_ten_then_counts() {
        let v: Vec<String> = (0..13).map(|i| format!("c{i}")).collect();
        assert_eq!(few(&v[..2]), "c0; c1");
        assert!(few(&v).ends_with("c9; and 3 more"), "{}", few(&v));
    }

    #[test]
    fn pinning_and_validation() {
        let p = Params {
            cycles: 8,
            siblings: 1,
            pin_every: 4,
            pin_pages: 1,
            hold_ms: 100,
            release_wait_ms: 100,
            poll_ms: 10,
            job_pages: 1,
            sibling_pages: 1,
        };
        let pinned: Vec<u32> = (0..8).filter(|&i| p.pinned(i)).collect();
        assert_eq!(pinned, vec![3, 7]);
        assert!(p.validate().is_ok());
        assert!(
            Params {
                pin_every: 0,
                ..p.clone()
            }
            .pinned(3)
            .eq(&false)
        );
        assert!(
            Params {
                cycles: 0,
                ..p.clone()
            }
            .validate()
            .is_err()
        );
        assert!(Params { poll_ms: 0, ..p }.validate().is_err());
    }
}
