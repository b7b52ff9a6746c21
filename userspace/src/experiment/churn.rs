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

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, Report, Session, Verdict};
use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer},
    kernel::layout::ResidueLayout,
    residue::{self, ResidueReader},
    workload::{Workload, workload_binary},
};

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
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cycles == 0 || self.cycles > MAX_CYCLES {
            anyhow::bail!("--cycles must be 1..={MAX_CYCLES}, not {}", self.cycles);
        }
        if self.siblings > 16 {
            anyhow::bail!("--siblings must be at most 16, not {}", self.siblings);
        }
        if self.poll_ms == 0 || self.poll_ms > 1000 {
            anyhow::bail!("--poll must be 1ms..=1s, not {} ms", self.poll_ms);
        }
        if self.hold_ms > 600_000 || self.release_wait_ms > 600_000 {
            anyhow::bail!("--hold and --release-wait must be at most 10min");
        }
        if self.pin_pages == 0 || self.sibling_pages == 0 {
            anyhow::bail!("--pin-pages and --sibling-pages must be at least 1");
        }
        Ok(())
    }
}

/// What a dying cgroup still held when the hold ended (its own shares, pages).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holding {
    /// Its page_counter (kernel memory freed after its offline is uncharged from the parent,
    /// so this can be stale).
    pub usage_pages: u64,
    /// Pages on LRU lists charged to it (page cache, tmpfs).
    pub lru_pages: i64,
    /// Its pages waiting in per-CPU lru_add batches.
    pub lru_add_pages: i64,
    /// Its own MEMCG_KMEM.
    pub kmem_pages: i64,
    /// Pages in charge stock slots.
    pub stock_pages: i64,
    /// What keeps it, in words.
    pub pinned_by: Vec<String>,
}

impl Holding {
    fn from_dying(d: &crate::ledger::Dying) -> Holding {
        let mut by = Vec::new();
        if d.lru_pages > 0 {
            by.push(format!(
                "{} LRU page(s) charged to it (page cache / tmpfs)",
                d.lru_pages
            ));
        }
        if d.lru_add_pages > 0 {
            by.push(format!(
                "{} page(s) in per-CPU lru_add batches",
                d.lru_add_pages
            ));
        }
        if d.kmem_pages > 0 {
            by.push(format!("{} kernel-memory page(s)", d.kmem_pages));
        }
        if d.stock_pages > 0 {
            by.push(format!("{} page(s) in charge stocks", d.stock_pages));
        }
        if by.is_empty() {
            by.push(
                "no charged page seen: a css reference outside the memory books (or its \
                 release was in flight)"
                    .into(),
            );
        }
        Holding {
            usage_pages: d.usage_pages,
            lru_pages: d.lru_pages,
            lru_add_pages: d.lru_add_pages,
            kmem_pages: d.kmem_pages,
            stock_pages: d.stock_pages,
            pinned_by: by,
        }
    }

    /// Pages of its folios on the LRU or on their way there.
    pub fn lru_total(&self) -> i64 {
        self.lru_pages + self.lru_add_pages
    }
}

/// One churned cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Churned {
    /// 0-based.
    pub index: u32,
    /// Its name below the run.
    pub cgroup: String,
    /// Its cgroup id.
    pub cgroup_id: u64,
    /// Its job wrote a pinning file.
    pub pinned: bool,
    /// The CPU its job ran on.
    pub cpu: usize,
    /// rmdir returned, ms since the run began.
    pub removed_ms: f64,
    /// Start of the first poll that saw it offline (dying), ms.
    pub first_dying_seen_ms: Option<f64>,
    /// Start of the last poll that saw it, ms.
    pub last_seen_ms: Option<f64>,
    /// End of the first poll that no longer saw it after its removal (released by then), ms.
    pub released_by_ms: Option<f64>,
    /// Offline-to-release lifetime, ms: `[lower, upper]` from the polls around the release.
    pub lifetime_ms: Option<[f64; 2]>,
    /// Still dying when the hold ended.
    pub dying_at_end_of_hold: bool,
    /// What it held then (from the ledger's dying table).
    pub held_at_end_of_hold: Option<Holding>,
    /// Pages on the LRU (or in lru_add batches) it held at the end of the hold beyond its
    /// pinning file: page cache it brought in that nobody else had cached (on a disk file
    /// system, e.g. the scratch directory's metadata blocks). They keep it dying after its
    /// file is gone.
    pub extra_lru_pages: i64,
    /// Released (gone from the walk) after the pins were removed, at most this long after
    /// the removal of the files began, ms.
    pub released_after_unpin_ms: Option<f64>,
    /// `cgroup:cgroup_rmdir` of it, by the kernel's clock, ms since the run began (`None`
    /// where the lifecycle tracepoints cannot attach).
    #[serde(default)]
    pub traced_rmdir_ms: Option<f64>,
    /// `cgroup:cgroup_release` of it, ms (`None`: not released during the run, or untraced).
    #[serde(default)]
    pub traced_release_ms: Option<f64>,
    /// Exact lifetime from the tracepoints: release - rmdir, ms.
    #[serde(default)]
    pub traced_lifetime_ms: Option<f64>,
}

/// How the lifecycle was observed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PollInfo {
    /// `polled css walk`, with or without the lifecycle tracepoints.
    pub method: String,
    /// The requested interval, ms.
    pub interval_ms: u64,
    /// Polls taken.
    pub polls: u64,
    /// Longest time between the starts of two consecutive polls, ms (the resolution).
    pub max_gap_ms: f64,
    /// Mean time between poll starts, ms.
    pub mean_gap_ms: f64,
    /// Longest single walk, ms.
    pub max_walk_ms: f64,
}

/// One change of the dying count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DyingPoint {
    /// Start of the poll, ms since the run began.
    pub ms: f64,
    /// Dying memcgs under the run in the css walk.
    pub walk: usize,
    /// v2 `cgroup.stat` `nr_dying_descendants` of the run, read right after the walk (v1:
    /// none).
    pub nr_dying_descendants: Option<u64>,
}

/// The state when the hold ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndOfHold {
    /// When, ms since the run began.
    pub ms: f64,
    /// The hold ended early because no churned cgroup was left dying.
    pub ended_early: bool,
    /// Dying descendants in the explain ledger's walk.
    pub dying_walk: usize,
    /// v2 `nr_dying_descendants`, read right after.
    pub nr_dying_descendants: Option<u64>,
}

/// Lifetimes of a group of cgroups, ms (upper bounds of the polled intervals).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    /// Cgroups counted.
    pub count: usize,
    /// Shortest.
    pub min_ms: f64,
    /// Median.
    pub median_ms: f64,
    /// Longest.
    pub max_ms: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            count: v.len(),
            min_ms: v[0],
            median_ms: v[v.len() / 2],
            max_ms: v[v.len() - 1],
        })
    }
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// How offline and release were seen.
    pub poll: PollInfo,
    /// Touch/free rounds each sibling completed during the churn.
    pub sibling_rounds: Vec<u64>,
    /// The churned cgroups.
    pub churned: Vec<Churned>,
    /// Each change of the dying count (every poll's value is one of these).
    pub dying_over_time: Vec<DyingPoint>,
    /// Most dying memcgs any poll saw.
    pub peak_dying: usize,
    /// When first, ms.
    pub peak_ms: f64,
    /// The end of the hold.
    pub end_of_hold: EndOfHold,
    /// Unpinned churned cgroups, and how many were released before the hold ended.
    pub unpinned: usize,
    /// ...
    pub unpinned_released_in_hold: usize,
    /// The directory of the pinning files is on tmpfs (`/dev/shm` where it is one): a file
    /// there is shmem and nothing else, and without swap nothing but its removal uncharges
    /// it. Elsewhere (the run's scratch directory on a disk file system) creating it can also
    /// bring metadata blocks into the page cache, charged to the writer, and reclaim can evict
    /// its pages and release the cgroup before the file goes.
    pub scratch_on_tmpfs: bool,
    /// Pinned churned cgroups, and how many were released within the release wait after
    /// their files were removed.
    pub pinned: usize,
    /// ...
    pub pinned_released_after_unpin: usize,
    /// When the removal of the pinning files began, ms.
    pub unpin_ms: Option<f64>,
    /// Lifetimes (offline to release, upper bounds) of the unpinned cgroups.
    pub unpinned_lifetime: Option<Spread>,
    /// Release after unpinning (upper bounds) of the pinned ones.
    pub pinned_release_after_unpin: Option<Spread>,
    /// Exact lifetimes (rmdir to release, kernel tracepoints) of the unpinned cgroups.
    #[serde(default)]
    pub unpinned_traced_lifetime: Option<Spread>,
}

// ---------------------------------------------------------------------------------------------
// The poller: walks the run's css subtree at a fixed interval on its own thread.

/// Per memcg id, what the polls saw.
#[derive(Debug, Clone, Default)]
struct Track {
    first_dying_ms: Option<f64>,
    last_seen_ms: f64,
    /// End of the first poll that missed it after it had been seen.
    gone_by_ms: Option<f64>,
}

#[derive(Debug, Default)]
struct PollState {
    tracks: BTreeMap<u64, Track>,
    series: Vec<DyingPoint>,
    polls: u64,
    first_start: Option<f64>,
    last_start: Option<f64>,
    max_gap_ms: f64,
    max_walk_ms: f64,
    peak: usize,
    peak_ms: f64,
    /// The last poll: (dying in the walk, nr_dying_descendants).
    last: Option<(usize, Option<u64>)>,
    error: Option<String>,
}

impl PollState {
    fn record(&mut self, start: f64, end: f64, nodes: &[(u64, bool)], nr: Option<u64>) {
        self.polls += 1;
        if let Some(prev) = self.last_start {
            self.max_gap_ms = self.max_gap_ms.max(start - prev);
        }
        self.first_start.get_or_insert(start);
        self.last_start = Some(start);
        self.max_walk_ms = self.max_walk_ms.max(end - start);
        let seen: std::collections::BTreeSet<u64> = nodes.iter().map(|n| n.0).collect();
        let mut dying = 0;
        for &(id, online) in nodes {
            let t = self.tracks.entry(id).or_default();
            t.last_seen_ms = start;
            t.gone_by_ms = None;
            if !online {
                dying += 1;
                t.first_dying_ms.get_or_insert(start);
            }
        }
        for (id, t) in self.tracks.iter_mut() {
            // Only a poll that started after the cgroup was known to exist can miss it.
            if t.gone_by_ms.is_none() && start > t.last_seen_ms && !seen.contains(id) {
                t.gone_by_ms = Some(end);
            }
        }
        if dying > self.peak || self.polls == 1 {
            self.peak = self.peak.max(dying);
            self.peak_ms = start;
        }
        let changed = self
            .series
            .last()
            .is_none_or(|p| p.walk != dying || p.nr_dying_descendants != nr);
        if changed {
            self.series.push(DyingPoint {
                ms: start,
                walk: dying,
                nr_dying_descendants: nr,
            });
        }
        self.last = Some((dying, nr));
    }

    /// A cgroup known to exist at `ms` (just created): a poll starting later that misses it
    /// saw it released, even if no poll saw it alive.
    fn register(&mut self, id: u64, ms: f64) {
        self.tracks.entry(id).or_insert(Track {
            first_dying_ms: None,
            last_seen_ms: ms,
            gone_by_ms: None,
        });
    }
}

/// Walks one cgroup's css subtree without taking residues (fast: only the lists).
struct Walker {
    reader: ResidueReader,
    layout: ResidueLayout,
    root_id: u64,
    ids: Vec<u64>,
}

impl Walker {
    fn new(target: &MemCgroup) -> anyhow::Result<Walker> {
        let reader = ResidueReader::open(1)?;
        let layout = reader.layout().clone();
        let root = &target.hierarchy().root;
        let root_id = std::fs::metadata(root)
            .with_context(|| root.display().to_string())?
            .ino();
        let mut ids = Vec::new();
        let mut p = root.to_path_buf();
        for comp in target.rel_path().components().skip(1) {
            p.push(comp);
            ids.push(
                std::fs::metadata(&p)
                    .with_context(|| p.display().to_string())?
                    .ino(),
            );
        }
        Ok(Walker {
            reader,
            layout,
            root_id,
            ids,
        })
    }

    /// The descendants as (cgroup id, online).
    fn descendants(&mut self) -> anyhow::Result<Vec<(u64, bool)>> {
        let tree = residue::walk(
            &mut self.reader,
            &self.layout,
            self.root_id,
            &self.ids,
            probes_common::RES_MAX_MEMCGS as usize,
        )
        .map_err(|e| anyhow::anyhow!("walking the run's css tree: {e}"))?;
        Ok(tree.nodes[1..]
            .iter()
            .map(|n| (n.cgroup_id, n.online))
            .collect())
    }
}

/// v2 `cgroup.stat` `nr_dying_descendants` (v1 has no such file).
fn nr_dying_descendants(cg: &MemCgroup) -> Option<u64> {
    if cg.version() != CgroupVersion::V2 {
        return None;
    }
    let text = std::fs::read_to_string(cg.path().join("cgroup.stat")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("nr_dying_descendants "))
        .and_then(|v| v.trim().parse().ok())
}

struct Poller {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<PollState>>,
    handle: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts polling `target` every `interval`; `clock` maps to the session's ms.
    fn start(target: MemCgroup, interval: Duration, clock: (Instant, f64)) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(PollState::default()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (st, sp) = (state.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("churn-poll".into())
            .spawn(move || {
                let mut w = match Walker::new(&target) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let ms = || clock.1 + clock.0.elapsed().as_secs_f64() * 1000.0;
                let mut next = Instant::now();
                while !sp.load(Ordering::SeqCst) {
                    let start = ms();
                    let r = w.descendants();
                    let nr = nr_dying_descendants(&target);
                    let end = ms();
                    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok(nodes) => s.record(start, end, &nodes, nr),
                        Err(e) => {
                            s.error = Some(format!("{e:#}"));
                            return;
                        }
                    }
                    drop(s);
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("starting the css-walk poller: {e}"),
            Err(_) => anyhow::bail!("the css-walk poller ended before it started"),
        }
        Ok(Poller {
            stop,
            state,
            handle: Some(handle),
        })
    }

    /// Runs `f` on the current state; fails if the poller failed.
    fn with<T>(&self, f: impl FnOnce(&PollState) -> T) -> anyhow::Result<T> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.error {
            anyhow::bail!("css-walk poller: {e}");
        }
        Ok(f(&s))
    }

    /// Registers a cgroup that exists now (see [`PollState::register`]).
    fn register(&self, id: u64, ms: f64) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(id, ms);
    }

    /// Waits until the poller has completed a poll that started after `ms`.
    fn wait_poll_after(&self, ms: f64, timeout: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        while !self.with(|s| s.last_start.is_some_and(|l| l > ms))? {
            if t.elapsed() > timeout {
                anyhow::bail!("the css-walk poller stalled");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<PollState> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.error {
            anyhow::bail!("css-walk poller: {e}");
        }
        Ok(std::mem::take(&mut *s))
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Siblings: workloads touching and freeing memory on their own threads.

struct Siblings {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<anyhow::Result<u64>>>,
}

impl Siblings {
    fn start(workloads: Vec<Workload>, pages: u64) -> anyhow::Result<Siblings> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (k, mut w) in workloads.into_iter().enumerate() {
            let stop = stop.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("churn-sibling-{k}"))
                    .spawn(move || {
                        let mut rounds = 0;
                        while !stop.load(Ordering::SeqCst) {
                            w.touch(pages)?;
                            w.free()?;
                            rounds += 1;
                            std::thread::sleep(SIBLING_PAUSE);
                        }
                        w.exit()?;
                        Ok(rounds)
                    })?,
            );
        }
        Ok(Siblings { stop, handles })
    }

    /// Stops the siblings and returns their rounds.
    fn stop(mut self) -> anyhow::Result<Vec<u64>> {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for (k, h) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("sibling-{k}: its thread panicked"))?;
            out.push(r.with_context(|| format!("sibling-{k}"))?);
        }
        Ok(out)
    }
}

impl Drop for Siblings {
    fn drop(&mut self) {
        // On an error path: the threads end when their workloads are told to stop, or when
        // the run's removal kills the workloads.
        self.stop.store(true, Ordering::SeqCst);
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
fn pin_dir(s: &Session) -> anyhow::Result<PathBuf> {
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
) -> anyhow::Result<(Churned, Option<PathBuf>)> {
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
) -> anyhow::Result<()> {
    let mut w = Workload::spawn(bin, cg, cpu)?;
    if pages > 0 {
        w.touch(pages)?;
    }
    if let Some((f, bytes)) = pin {
        let n = w.write_file(f, bytes)?;
        if n != bytes {
            anyhow::bail!("{}: wrote {n} of {bytes} bytes", f.display());
        }
    }
    let st = w.exit()?;
    if !st.success() {
        anyhow::bail!("the job in {} ended with {st}", cg.path().display());
    }
    Ok(())
}

/// Waits until `done` holds or `limit` passes; true when it held.
fn wait_for(
    poller: &Poller,
    limit: Duration,
    done: impl Fn(&PollState) -> bool,
) -> anyhow::Result<bool> {
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
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> anyhow::Result<Report> {
    p.validate()?;
    let online = super::online_cpus();
    if online.is_empty() {
        anyhow::bail!("no online CPU");
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
        let mut one = |s: &mut Session, i: u32, phased: bool| -> anyhow::Result<()> {
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
        ex.report()
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

fn checks(r: &Results) -> Vec<Check> {
    let p = &r.params;
    let mut out = Vec::new();
    let pinned: Vec<&Churned> = r.churned.iter().filter(|c| c.pinned).collect();
    if !pinned.is_empty() {
        // A bound, not an equality: besides its file, the job may have faulted in page cache
        // nobody had cached (a library evicted meanwhile), which is charged to it as well.
        let lru = |c: &Churned| c.held_at_end_of_hold.as_ref().map(Holding::lru_total);
        let bad: Vec<String> = pinned
            .iter()
            .filter(|c| lru(c).is_none_or(|n| n < p.pin_pages as i64))
            .map(|c| match lru(c) {
                Some(n) => format!("{} holds {n}", c.cgroup),
                None => format!("{} released", c.cgroup),
            })
            .collect();
        out.push(Check::rule(
            "pinned churned cgroups still dying at the end of the hold, each holding its file's pages",
            format!(
                "{} of {}, each >= {} LRU page(s) (on the lists or in lru_add batches)",
                pinned.len(),
                pinned.len(),
                p.pin_pages
            ),
            held_by_all(pinned.len(), &bad),
            bad.is_empty(),
        ));
    }
    // Released within the hold, or still held by what the kernel keeps for it: freed folios
    // in an idle CPU's lru_add batch (each charged folio holds a css reference until the
    // batch drains) or kernel memory not freed yet. Anything else would be unexplained.
    let explained = r
        .churned
        .iter()
        .filter(|c| !c.pinned && c.dying_at_end_of_hold)
        .filter(|c| {
            c.held_at_end_of_hold
                .as_ref()
                .is_some_and(|h| h.lru_add_pages > 0 || h.kmem_pages > 0)
        })
        .count();
    out.push(Check::rule(
        "unpinned churned cgroups released within the hold (or held only by lru_add batches or kernel memory)",
        r.unpinned.to_string(),
        format!(
            "{} released + {explained} held by lru_add batches or kernel memory",
            r.unpinned_released_in_hold
        ),
        r.unpinned_released_in_hold + explained == r.unpinned,
    ));
    // The cgroup's release follows its memcg's (the css walk loses the memcg first), so the
    // tracepoint can never come before the last poll that still saw it.
    let traced: Vec<(&Churned, f64, f64)> = r
        .churned
        .iter()
        .filter_map(|c| Some((c, c.traced_release_ms?, c.last_seen_ms?)))
        .collect();
    if !traced.is_empty() {
        let bad: Vec<String> = traced
            .iter()
            .filter(|(_, t, seen)| t < seen)
            .map(|(c, t, seen)| format!("{} traced at {t:.1} ms, seen at {seen:.1} ms", c.cgroup))
            .collect();
        out.push(Check::rule(
            "traced releases after the last poll that saw the cgroup",
            format!("{} of {}", traced.len(), traced.len()),
            held_by_all(traced.len(), &bad),
            bad.is_empty(),
        ));
    }
    out.push(Check::eq(
        "dying cgroups under the run at the end of the hold (the pinned ones, and the unpinned \
         ones held by lru_add batches or kernel memory)",
        r.pinned + explained,
        r.end_of_hold.dying_walk,
    ));
    if let Some(nr) = r.end_of_hold.nr_dying_descendants {
        out.push(Check::eq(
            "cgroup.stat nr_dying_descendants at the end of the hold equals the css walk",
            r.end_of_hold.dying_walk as u64,
            nr,
        ));
    }
    // Only a cgroup whose file was all it held must go when the file goes: other page cache
    // charged to it (extra_lru_pages) stays cached, and keeps it dying, after the unpin. So
    // does a file page still in a CPU's lru_add batch: the batch holds a reference to the
    // folio (`folio_batch_add` after `folio_get`), so truncating the file does not free it,
    // and its charge (and the memcg) stays until that CPU's batch fills or is drained, which
    // a CPU gone quiet after the churn may never do within the wait.
    let only_file: Vec<&Churned> = r
        .churned
        .iter()
        .filter(|c| c.pinned && c.dying_at_end_of_hold && c.extra_lru_pages == 0)
        .filter(|c| in_lru_add(c) == 0)
        .collect();
    if !only_file.is_empty() {
        out.push(Check::eq(
            "pinned cgroups holding only their file released within the release wait once the \
             files were removed",
            only_file.len(),
            only_file
                .iter()
                .filter(|c| c.released_after_unpin_ms.is_some())
                .count(),
        ));
    }
    out
}

/// Pages a churned cgroup had in lru_add batches at the end of the hold.
fn in_lru_add(c: &Churned) -> i64 {
    c.held_at_end_of_hold
        .as_ref()
        .map_or(0, |h| h.lru_add_pages)
}

/// What a check over `n` cgroups measured: `n of n`, or how many held and the first that did
/// not.
fn held_by_all(n: usize, bad: &[String]) -> String {
    if bad.is_empty() {
        format!("{n} of {n}")
    } else {
        format!("{} of {n}; not: {}", n - bad.len(), few(bad))
    }
}

/// Names listed in a check or a summary line before the rest is counted.
const LISTED: usize = 10;

/// At most [`LISTED`] items, then how many more.
fn few(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > LISTED {
        let _ = write!(out, "; and {} more", items.len() - LISTED);
    }
    out
}

fn fmt_spread(s: &Option<Spread>) -> String {
    match s {
        Some(s) => format!(
            "{} cgroup(s): min {:.1} ms, median {:.1} ms, max {:.1} ms",
            s.count, s.min_ms, s.median_ms, s.max_ms
        ),
        None => "none".into(),
    }
}

fn verdict(r: &Results, checks: &[Check]) -> Verdict {
    let still: Vec<&Churned> = r
        .churned
        .iter()
        .filter(|c| c.dying_at_end_of_hold)
        .collect();
    let status = if !checks.iter().all(|c| c.ok) {
        "some dying cgroups did not behave as the kernel's rules say".to_string()
    } else if still.is_empty() {
        "dying cgroups released promptly".to_string()
    } else {
        "page cache keeps removed cgroups dying until it goes".to_string()
    };
    let mut summary = format!(
        "{} cgroups created and removed while {} sibling workload(s) ran; {} pinned by a {}-page \
         scratch file. Peak {} dying cgroup(s) under the run (at {:.0} ms). Lifecycle polled every \
         {} ms (largest gap {:.1} ms): lifetimes are upper bounds within that resolution.\n",
        r.params.cycles,
        r.params.siblings,
        r.pinned,
        r.params.pin_pages,
        r.peak_dying,
        r.peak_ms,
        r.poll.interval_ms,
        r.poll.max_gap_ms
    );
    let _ = writeln!(
        summary,
        "Unpinned: {} of {} released within the hold, offline to release {} (polled).",
        r.unpinned_released_in_hold,
        r.unpinned,
        fmt_spread(&r.unpinned_lifetime)
    );
    if r.unpinned_traced_lifetime.is_some() {
        let _ = writeln!(
            summary,
            "Traced by the kernel (cgroup_rmdir to cgroup_release): {}.",
            fmt_spread(&r.unpinned_traced_lifetime)
        );
    }
    if !still.is_empty() {
        let by: Vec<String> = still
            .iter()
            .map(|c| {
                format!(
                    "{} ({})",
                    c.cgroup,
                    c.held_at_end_of_hold
                        .as_ref()
                        .map(|h| h.pinned_by.join(", "))
                        .unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(summary, "Still dying when the hold ended: {}.", few(&by));
    }
    if r.pinned > 0 {
        let _ = writeln!(
            summary,
            "After the pinning files were removed: {} of {} released within {} ms, {}.",
            r.pinned_released_after_unpin,
            r.pinned,
            r.params.release_wait_ms,
            fmt_spread(&r.pinned_release_after_unpin)
        );
        let batched: Vec<String> = r
            .churned
            .iter()
            .filter(|c| c.pinned && c.released_after_unpin_ms.is_none())
            .filter(|c| c.extra_lru_pages == 0 && in_lru_add(c) > 0)
            .map(|c| format!("{} ({} page(s))", c.cgroup, in_lru_add(c)))
            .collect();
        if !batched.is_empty() {
            let _ = writeln!(
                summary,
                "Still dying after the unpin, their file's pages held by a CPU's lru_add batch \
                 (the batch's reference outlives the file until the batch drains): {}.",
                few(&batched)
            );
        }
        let kept: Vec<String> = r
            .churned
            .iter()
            .filter(|c| c.pinned && c.released_after_unpin_ms.is_none() && c.extra_lru_pages > 0)
            .map(|c| format!("{} ({} page(s))", c.cgroup, c.extra_lru_pages))
            .collect();
        if !kept.is_empty() {
            let _ = writeln!(
                summary,
                "Still dying after the unpin, pinned by page cache besides their file{}: {}.",
                if r.scratch_on_tmpfs {
                    ""
                } else {
                    " (the scratch directory is not on tmpfs: creating a file there also reads \
                     file-system metadata blocks, charged to the writer)"
                },
                few(&kept)
            );
        }
    }
    Verdict {
        status,
        summary: summary.trim_end().to_string(),
        checks: Vec::new(),
    }
}

/// Rows of the churned-cgroup table shown at each end when there are more than twice this.
const TABLE_ENDS: usize = 20;

/// The text section of a churn report.
pub fn render(r: &Report) -> anyhow::Result<String> {
    let res: Results = serde_json::from_value(r.results.clone())?;
    let p = &res.params;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "churn: {} cgroups, {} sibling(s) x {} pages, pin every {} ({} page(s)), hold {} ms",
        p.cycles,
        p.siblings,
        p.sibling_pages,
        if p.pin_every == 0 {
            "none".to_string()
        } else {
            p.pin_every.to_string()
        },
        p.pin_pages,
        p.hold_ms
    );
    let _ = writeln!(
        out,
        "  lifecycle: {}, every {} ms: {} polls, largest gap {:.1} ms, mean {:.1} ms, longest walk {:.1} ms",
        res.poll.method,
        res.poll.interval_ms,
        res.poll.polls,
        res.poll.max_gap_ms,
        res.poll.mean_gap_ms,
        res.poll.max_walk_ms
    );
    let _ = writeln!(
        out,
        "  sibling rounds (touch + free): {:?}",
        res.sibling_rounds
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>8} {:>4} {:>4} {:>10} {:>21} {:>9} {:>10}  AT THE END OF THE HOLD",
        "CGROUP", "ID", "PIN", "CPU", "RMDIR MS", "POLLED LIFETIME MS", "TRACED", "AFTER UNPIN"
    );
    let n = res.churned.len();
    for (k, c) in res.churned.iter().enumerate() {
        if n > 2 * TABLE_ENDS && k >= TABLE_ENDS && k < n - TABLE_ENDS {
            if k == TABLE_ENDS {
                let _ = writeln!(
                    out,
                    "  ... {} more churned cgroups (every one is in the JSON record)",
                    n - 2 * TABLE_ENDS
                );
            }
            continue;
        }
        let life = c
            .lifetime_ms
            .map(|[a, b]| format!("{a:.1} .. {b:.1}"))
            .unwrap_or_else(|| "not released".into());
        let held = if c.dying_at_end_of_hold {
            format!(
                "dying: {}",
                c.held_at_end_of_hold
                    .as_ref()
                    .map(|h| h.pinned_by.join(", "))
                    .unwrap_or_default()
            )
        } else {
            "released".into()
        };
        let _ = writeln!(
            out,
            "  {:<10} {:>8} {:>4} {:>4} {:>10.1} {:>21} {:>9} {:>10}  {held}",
            c.cgroup,
            c.cgroup_id,
            if c.pinned { "yes" } else { "no" },
            c.cpu,
            c.removed_ms,
            life,
            c.traced_lifetime_ms
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            c.released_after_unpin_ms
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let _ = writeln!(
        out,
        "  peak dying: {} at {:.0} ms; end of the hold ({:.0} ms{}): {} dying in the walk{}",
        res.peak_dying,
        res.peak_ms,
        res.end_of_hold.ms,
        if res.end_of_hold.ended_early {
            ", ended early"
        } else {
            ""
        },
        res.end_of_hold.dying_walk,
        res.end_of_hold
            .nr_dying_descendants
            .map(|n| format!(", cgroup.stat nr_dying_descendants {n}"))
            .unwrap_or_else(|| " (v1: no cgroup.stat)".into())
    );
    let series: Vec<String> = res
        .dying_over_time
        .iter()
        .map(|d| match d.nr_dying_descendants {
            Some(n) => format!("{:.0}:{}/{}", d.ms, d.walk, n),
            None => format!("{:.0}:{}", d.ms, d.walk),
        })
        .collect();
    let _ = writeln!(
        out,
        "  dying over time (ms:walk{}): {}",
        if res.end_of_hold.nr_dying_descendants.is_some() {
            "/nr_dying_descendants"
        } else {
            ""
        },
        series.join(" ")
    );
    Ok(out)
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
