//! `run churn`: the css walk that times each cgroup from offline to release, and the
//! siblings that keep charging beside the churn.

use super::*;
use crate::experiment::{ExperimentError, Result, fail};

/// Per memcg id, what the polls saw.
#[derive(Debug, Clone, Default)]
pub(super) struct Track {
    pub(super) first_dying_ms: Option<f64>,
    pub(super) last_seen_ms: f64,
    /// End of the first poll that missed it after it had been seen.
    pub(super) gone_by_ms: Option<f64>,
}

#[derive(Debug, Default)]
pub(super) struct PollState {
    pub(super) tracks: BTreeMap<u64, Track>,
    pub(super) series: Vec<DyingPoint>,
    pub(super) polls: u64,
    pub(super) first_start: Option<f64>,
    pub(super) last_start: Option<f64>,
    pub(super) max_gap_ms: f64,
    pub(super) max_walk_ms: f64,
    pub(super) peak: usize,
    pub(super) peak_ms: f64,
    /// The last poll: (dying in the walk, nr_dying_descendants).
    pub(super) last: Option<(usize, Option<u64>)>,
    pub(super) error: Option<String>,
}

impl PollState {
    pub(super) fn record(&mut self, start: f64, end: f64, nodes: &[(u64, bool)], nr: Option<u64>) {
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
    pub(super) fn register(&mut self, id: u64, ms: f64) {
        self.tracks.entry(id).or_insert(Track {
            first_dying_ms: None,
            last_seen_ms: ms,
            gone_by_ms: None,
        });
    }
}

/// Walks one cgroup's css subtree without taking residues (fast: only the lists).
pub(super) struct Walker {
    pub(super) reader: ResidueReader,
    pub(super) layout: ResidueLayout,
    pub(super) root_id: u64,
    pub(super) ids: Vec<u64>,
}

impl Walker {
    pub(super) fn new(target: &MemCgroup) -> Result<Walker> {
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
    pub(super) fn descendants(&mut self) -> Result<Vec<(u64, bool)>> {
        let tree = residue::walk(
            &mut self.reader,
            &self.layout,
            self.root_id,
            &self.ids,
            probes_common::RES_MAX_MEMCGS as usize,
        )
        .map_err(|e| ExperimentError::Failed(format!("walking the run's css tree: {e}")))?;
        Ok(tree.nodes[1..]
            .iter()
            .map(|n| (n.cgroup_id, n.online))
            .collect())
    }
}

/// v2 `cgroup.stat` `nr_dying_descendants` (v1 has no such file).
pub(super) fn nr_dying_descendants(cg: &MemCgroup) -> Option<u64> {
    if cg.version() != CgroupVersion::V2 {
        return None;
    }
    let text = std::fs::read_to_string(cg.path().join("cgroup.stat")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("nr_dying_descendants "))
        .and_then(|v| v.trim().parse().ok())
}

pub(super) struct Poller {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) state: Arc<Mutex<PollState>>,
    pub(super) handle: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts polling `target` every `interval`; `clock` maps to the session's ms.
    pub(super) fn start(
        target: MemCgroup,
        interval: Duration,
        clock: (Instant, f64),
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(PollState::default()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
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
                        let _ = ready_tx.send(Err(e));
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
                            s.error = Some(e.chain());
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
            Ok(Err(e)) => return Err(e.context("starting the css-walk poller")),
            Err(_) => fail!("the css-walk poller ended before it started"),
        }
        Ok(Poller {
            stop,
            state,
            handle: Some(handle),
        })
    }

    /// Runs `f` on the current state; fails if the poller failed.
    pub(super) fn with<T>(&self, f: impl FnOnce(&PollState) -> T) -> Result<T> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.error {
            fail!("css-walk poller: {e}");
        }
        Ok(f(&s))
    }

    /// Registers a cgroup that exists now (see [`PollState::register`]).
    pub(super) fn register(&self, id: u64, ms: f64) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(id, ms);
    }

    /// Waits until the poller has completed a poll that started after `ms`.
    pub(super) fn wait_poll_after(&self, ms: f64, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        while !self.with(|s| s.last_start.is_some_and(|l| l > ms))? {
            if t.elapsed() > timeout {
                fail!("the css-walk poller stalled");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<PollState> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.error {
            fail!("css-walk poller: {e}");
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

pub(super) struct Siblings {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) handles: Vec<JoinHandle<Result<u64>>>,
}

impl Siblings {
    pub(super) fn start(workloads: Vec<Workload>, pages: u64) -> Result<Siblings> {
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
    pub(super) fn stop(mut self) -> Result<Vec<u64>> {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for (k, h) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            let r = h.join().map_err(|_| {
                ExperimentError::Failed(format!("sibling-{k}: its thread panicked"))
            })?;
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
