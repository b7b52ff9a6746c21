//! `run batch-skew` (seed 000): allocate on one CPU, free a slice on every CPU, kill the cgroup,
//! repeat; where do the per-CPU statistic residues go, and does the parent drift?
//!
//! Each iteration: a new child cgroup; a workload pinned to the alloc CPU touches
//! `cpus * batch` anonymous pages; then, on each CPU of the list in turn, frees `batch` of them
//! (`MADV_DONTNEED`, so the rmap update runs on that CPU); exits; the child is removed.
//!
//! The kernel's rules (6.1-6.18 mm/memcontrol.c):
//! - every anon fault adds 1 to NR_ANON_MAPPED in the faulting CPU's per-CPU counters, every
//!   zap subtracts on the zapping CPU (`__lruvec_stat_mod_folio` -> `mod_memcg_lruvec_state`):
//!   the probes must see exactly `+cpus*batch` on the alloc CPU in the touch phase and exactly
//!   `-batch` on CPU X in X's free phase;
//! - those deltas stay in the per-CPU counters until a flush (`memory.stat` read over the
//!   threshold, the 2 s periodic `flush_memcg_stats_dwork`, or the css release), so the
//!   residue after the free phase is `alloc: +(cpus-1)*batch`, `others: -batch` unless a flush
//!   intervened; either way flushed + per-CPU is conserved;
//! - a charge takes from this CPU's stock or charges `MEMCG_CHARGE_BATCH` (`B`, measured before
//!   the run: `workload::batch`) pages to the page_counter and parks the rest: after `c`
//!   one-page charges from `s0` stocked pages the stock holds `s0 + B*ceil(max(0, c-s0)/B) - c`;
//! - dying cgroups stay in the rstat tree, so flushes carry their residues into the parent
//!   (`css_rstat_flush` also runs at release): the parent's statistics converge to the exact
//!   value. Old kernels (the seed's 4.x) kept per-CPU counters with a per-CPU threshold of 32
//!   and never flushed a dead cgroup's remainder: the parent's statistics drifted for good.
//! - Batched kernels (5.4-5.12; Debian's 5.10, `__mod_memcg_state`) have no flush: a CPU keeps
//!   an item's delta while `|x| <= MEMCG_CHARGE_BATCH` and past it adds `x` to the memcg's and
//!   every ancestor's atomic aggregate and keeps 0. There the run predicts each CPU's residue
//!   and the spills update by update from the records ([`spill`]) and checks both exactly; a
//!   freed cgroup's residues are added to its ancestors (`mem_cgroup_free` ->
//!   `memcg_flush_percpu_vmstats`), so only dying cgroups keep residues out of the parent.

mod judge;
mod plots;
mod release;
mod render;
mod rules;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, PhaseRecord, Report, Session, Verdict};
use crate::experiment::{Context as _, Result, refuse};
use crate::{
    cgroup::{MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer, ItemResidue},
    workload::{Workload, batch::charge_batch, workload_binary},
};
use judge::{checks, verdict};
use release::{Awaited, RELEASE_FIRST, RELEASE_MAX, anon_aggregate_pending, await_release};
pub use release::{Fate, Release};
use render::render;
use rules::updates_on;
pub use rules::{old_rule, spill, stock_after};

/// The per-CPU statistics threshold of the seed's kernel (`MEMCG_CHARGE_BATCH` was 32 there).
pub const OLD_THRESHOLD: i64 = 32;

const ANON: &str = "NR_ANON_MAPPED";
/// Items whose flushed value moving between two snapshots proves a flush happened.
const WITNESSES: [&str; 5] = [
    "NR_ANON_MAPPED",
    "NR_INACTIVE_ANON",
    "NR_ACTIVE_ANON",
    "MEMCG_KMEM",
    "NR_PAGETABLE",
];

/// Options of `run batch-skew`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// CPUs that free a slice each, in order.
    pub cpus: Vec<usize>,
    /// Pages freed per CPU.
    pub batch_pages: u64,
    /// CPU the pages are touched on.
    pub alloc_cpu: usize,
    /// Iterations.
    pub iterations: u32,
    /// Each iteration also writes and reads a small file, whose page cache keeps the removed
    /// cgroup dying.
    pub pin_page_cache: bool,
    /// Keep the pinning files (and so the dying cgroups) until the run ends, instead of
    /// deleting each after its cgroup is removed.
    pub keep_dying: bool,
}

/// One CPU's numbers in one iteration (pages).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuRow {
    /// CPU.
    pub cpu: usize,
    /// NR_ANON_MAPPED updates the probes saw on it during the touch phase.
    pub touch: i64,
    /// ... during the free phases.
    pub free: i64,
    /// Its never-flushed NR_ANON_MAPPED delta after the free phases minus before the touch.
    pub residue: Option<i64>,
    /// Its charge stock of the child after the touch phase.
    pub stock_after_touch: Option<i64>,
    /// Batched kernels (5.10): `residue` as the spill rule predicts it from the CPU's residue
    /// before the touch and the updates recorded on it (`None` on rstat kernels, or when the
    /// records do not give the updates one by one).
    #[serde(default)]
    pub predicted_residue: Option<i64>,
    /// Batched kernels: what the rule says this CPU spilled into the child's aggregate (and
    /// every ancestor's) meanwhile, pages.
    #[serde(default)]
    pub spilled: Option<i64>,
}

/// One iteration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Iteration {
    /// 0-based.
    pub index: u32,
    /// The child cgroup (relative to the run).
    pub cgroup: String,
    /// Per CPU of the list (and the alloc CPU).
    pub cpus: Vec<CpuRow>,
    /// No flush moved the child's statistics between the snapshots around the phases, so the
    /// per-CPU residues must equal the recorded updates exactly.
    pub no_flush_between: Option<bool>,
    /// flushed + Σ per-CPU of NR_ANON_MAPPED moved by this much between the snapshots.
    pub conserved_delta: Option<i64>,
    /// The child's NR_ANON_MAPPED aggregate moved by this much between the snapshots (on
    /// batched kernels: the spills).
    #[serde(default)]
    pub flushed_delta: Option<i64>,
    /// Batched kernels: the largest |residue| of the child's NR_ANON_MAPPED on any CPU after
    /// the free phases (the spill rule keeps it within the threshold).
    #[serde(default)]
    pub max_abs_residue: Option<i64>,
    /// Pages charged one at a time on the alloc CPU in the touch phase (anon + kernel memory);
    /// `None` where the kernel counts kernel memory nowhere (5.10 on cgroup v2), so the stock
    /// rule cannot be checked.
    #[serde(default)]
    pub charged_in_touch: Option<i64>,
    /// Where the kernel-memory part of `charged_in_touch` came from.
    #[serde(default)]
    pub kmem_source: String,
    /// Stock of the alloc CPU before the touch phase.
    pub stock_before_touch: Option<i64>,
    /// Page_counter batches in the touch phase and their pages (probed or inferred).
    pub batches: u64,
    /// Pages of those batches.
    pub batch_pages: u64,
    /// Parent (the run's cgroup) usage before the iteration and after the removal, bytes.
    pub parent_usage: (Option<u64>, Option<u64>),
    /// The hierarchy root's usage file before and after, bytes (v2 has none).
    pub root_usage: (Option<u64>, Option<u64>),
    /// Dying cgroups under the run after this iteration's removal.
    pub dying_after: usize,
    /// The child's largest per-CPU `stats_updates` after the free phases (6.8+): the update
    /// units a CPU carries before it adds them to the memcg's count at MEMCG_CHARGE_BATCH.
    #[serde(default)]
    pub percpu_updates_max: Option<i64>,
    /// The child's `vmstats->stats_updates` then (6.8+): a memory.stat read flushes first
    /// when it exceeds MEMCG_CHARGE_BATCH x online CPUs.
    #[serde(default)]
    pub flush_updates: Option<i64>,
    /// Batched kernels: what became of the child's residues when the kernel freed it (`None`
    /// on rstat kernels, and with `--keep-dying`, whose cgroups are not freed before the run
    /// ends).
    #[serde(default)]
    pub release: Option<Release>,
}

/// The end of the run: did the parent's statistics converge?
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Convergence {
    /// NR_ANON_MAPPED of the parent as memory.stat showed it when the last iteration ended
    /// (pages, hierarchical: the dying children included).
    pub shown_at_end: i64,
    /// ... as it really was (flushed + pending), pages.
    pub exact_at_end: i64,
    /// What memory.stat showed after waiting, pages.
    pub shown_after_wait: i64,
    /// The exact value then.
    pub exact_after_wait: i64,
    /// How long the wait took, ms.
    pub waited_ms: f64,
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// The kernel's charge batch (`MEMCG_CHARGE_BATCH`), measured before the run.
    pub kernel_charge_batch: u64,
    /// How it was measured (records written before it was measured have none).
    #[serde(default)]
    pub kernel_charge_batch_source: String,
    /// Batched kernels (5.4-5.12: 5.10): the delta a CPU keeps of an item before it spills into
    /// the memcg and every ancestor (`|x| > MEMCG_CHARGE_BATCH`); `None` on rstat kernels.
    #[serde(default)]
    pub spill_threshold: Option<i64>,
    /// Pages per page_counter batch seen in the records, and how they were seen.
    pub observed_batch: Option<f64>,
    /// `probed` or `inferred`.
    pub observed_batch_source: String,
    /// The iterations.
    pub iterations: Vec<Iteration>,
    /// The seed's old rule: pages each iteration would strand in the dead cgroup's per-CPU
    /// counters (positive: the parent's statistics overstate by that much).
    pub old_rule_stranded_per_iteration: i64,
    /// Per CPU under the old rule.
    pub old_rule_per_cpu: Vec<(usize, i64)>,
    /// This kernel's rule: residues are flushed into the parent; drift after a flush.
    pub predicted_drift: i64,
    /// Measured drift of the parent's NR_ANON_MAPPED after waiting (shown − exact), pages.
    pub measured_drift: i64,
    /// The convergence measurement.
    pub convergence: Convergence,
    /// Dying cgroups over time: (ms since start, count).
    pub dying_over_time: Vec<(f64, usize)>,
}

struct Snap {
    report: ExplainReport,
    items: Vec<ItemResidue>,
}

impl Snap {
    fn take(ex: &mut Explainer) -> Result<Snap> {
        let (report, items) = ex.report_with_items(&WITNESSES)?;
        Ok(Snap { report, items })
    }

    fn item(&self, name: &str) -> Option<&ItemResidue> {
        self.items.iter().find(|i| i.item == name)
    }

    fn stock(&self, cpu: usize) -> Option<i64> {
        self.report
            .terms
            .iter()
            .find(|t| t.term == "stock")
            .map(|t| t.per_cpu.get(cpu).copied().unwrap_or(0))
    }
}

/// Anon pages as memory.stat shows them (aggregate) and exactly, for a report.
fn anon_shown_exact(r: &ExplainReport) -> (i64, i64) {
    let ps = r.page_size as i64;
    r.stat_book
        .iter()
        .find(|s| s.item == ANON)
        .map(|s| (s.shown_bytes / ps, s.exact_bytes / ps))
        .unwrap_or((0, 0))
}

fn root_usage(hier: &MemoryHierarchy) -> Option<u64> {
    MemCgroup::root(hier).ok()?.usage_bytes().ok().flatten()
}

/// Longest wait for an iteration's cgroup to settle before its touch.
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// Runs the experiment.
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> Result<Report> {
    let online = super::online_cpus();
    for c in p.cpus.iter().chain([&p.alloc_cpu]) {
        if !online.contains(c) {
            refuse!("CPU {c} is not online (online: {online:?})");
        }
    }
    if p.cpus.is_empty() {
        refuse!("--cpus names no CPU");
    }
    if p.batch_pages == 0 || p.iterations == 0 {
        refuse!("--batch-pages and --iterations must be at least 1");
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    let touch_pages = p.cpus.len() as u64 * p.batch_pages;
    // One iteration's pages plus its page tables, kernel memory and the pinning files.
    let worst = touch_pages * page + (16 << 20) + u64::from(p.iterations) * (64 << 10);
    // Measured before the run's cgroups exist (its own cgroup comes and goes first).
    let kb = charge_batch(hier)?;
    let mut s = Session::start(hier, "batch-skew", worst, 4, common)?;
    let bin = workload_binary();
    let parent = s.run.cgroup().clone();
    let mut parent_ex = Explainer::new(hier, parent.clone())?;
    // Batched kernels: a removed child's residues can reach the parent only when it is freed,
    // so the run waits for each release (unless a kept pin holds the child) and measures what
    // became of them. rstat kernels flush dying cgroups with the rest of the tree (the
    // convergence below shows it), and lazy RCU can delay their release by seconds.
    let batched = parent_ex.report()?.gap.spill_threshold_pages.is_some();
    let await_free = batched && !(p.pin_page_cache && p.keep_dying);
    let per_iter = p.cpus.len() as u64 + 4 + u64::from(await_free);
    s.expect_phases(u64::from(p.iterations) * per_iter + 1);
    let mut iters: Vec<Iteration> = Vec::new();
    let mut dying_over_time = Vec::new();
    let mut pins = Vec::new();
    let mut awaited: Option<Awaited> = None;
    for i in 0..p.iterations {
        let name = format!("iter-{i}");
        let parent_before = parent.usage_bytes()?;
        let root_before = root_usage(hier);
        let cg = s.child(&name)?;
        let mut w = s.phase(format!("{name} start"), |_| {
            Ok(Workload::spawn(&bin, &cg, p.alloc_cpu)?)
        })?;
        if p.pin_page_cache {
            let f = s.run.scratch()?.join(format!("{name}.pin"));
            s.phase(format!("{name} pin page cache"), |_| {
                w.write_file(&f, 4096)?;
                w.read_file(&f, 4096)?;
                Ok(())
            })?;
            pins.push(f);
        }
        let mut ex = Explainer::new(hier, cg.clone())?.without_stat_file();
        // The workload's start still has kernel objects to free (after an RCU grace period),
        // each uncharging through the stock: wait for them, or they land in the touch and move
        // the stock the checks predict (the checks judge what follows either way).
        ex.wait_settled(SETTLE_MAX)?;
        // A drain of the stock meanwhile (another iteration's rmdir drains whole CPU stocks)
        // moved the page_counter with no stat event: not the touch's doing.
        s.rebase_inference(&cg)?;
        let pre = Snap::take(&mut ex)?;
        if let Some(a) = awaited.take() {
            // The previous child, held past its rmdir (an empty stock slot, typically, that
            // this workload's first charges on the CPU took over): measured now, while this
            // child is idle, with this child's own share taken out of the parent's numbers.
            let mine = pre
                .item(ANON)
                .map(|a| (a.flushed, a.per_cpu.iter().sum::<i64>() + a.pending_tree));
            let rel = s.phase(format!("{} release", a.name), |s| {
                await_release(s, &mut parent_ex, &a, mine, RELEASE_MAX)
            })?;
            iters[a.index].release = Some(rel);
        }
        s.phase(format!("{name} touch"), |_| Ok(w.touch(touch_pages)?))?;
        let mid = Snap::take(&mut ex)?;
        for &c in &p.cpus {
            w.set_cpu(c)?;
            s.phase(format!("{name} free on cpu{c}"), |_| {
                Ok(w.free_pages(p.batch_pages)?)
            })?;
        }
        let post = Snap::take(&mut ex)?;
        s.phase(format!("{name} exit"), |_| {
            w.exit()?;
            Ok(())
        })?;
        // The child's residues as it is removed (nothing updates its NR_ANON_MAPPED any
        // more), and the parent's view of them, for the release below.
        let exited = Snap::take(&mut ex)?;
        drop(ex);
        let child_residue = exited
            .item(ANON)
            .map_or(0, |a| a.per_cpu.iter().sum::<i64>() + a.pending_tree);
        let at_rmdir = parent_ex.report()?;
        let before = anon_aggregate_pending(&at_rmdir);
        s.phase(format!("{name} rmdir"), |_| {
            std::fs::remove_dir(cg.path())
                .with_context(|| format!("removing {}", cg.path().display()))
        })?;
        let removed = std::time::Instant::now();
        if p.pin_page_cache && !p.keep_dying {
            // The file's page cache was the last reference: the dying cgroup can go now.
            if let Some(f) = pins.pop() {
                std::fs::remove_file(&f).with_context(|| format!("{}", f.display()))?;
            }
        }
        let pr = parent_ex.report()?;
        dying_over_time.push((s.now_ms(), pr.dying.len()));
        let mut release = None;
        if await_free {
            let a = Awaited {
                index: iters.len(),
                name: name.clone(),
                child_residue,
                before,
                removed,
                others_dying: at_rmdir.dying.iter().map(|d| d.path.clone()).collect(),
            };
            let rel = s.phase(format!("{name} release"), |s| {
                await_release(s, &mut parent_ex, &a, None, RELEASE_FIRST)
            })?;
            if rel.freed_after_ms.is_some() {
                release = Some(rel);
            } else {
                awaited = Some(a);
            }
        }
        iters.push(iteration(
            &s,
            &p,
            i,
            &name,
            &pre,
            &mid,
            &post,
            (parent_before, parent.usage_bytes()?),
            (root_before, root_usage(hier)),
            pr.dying.len(),
            release,
        ));
    }
    if let Some(a) = awaited.take() {
        let rel = s.phase(format!("{} release", a.name), |s| {
            await_release(s, &mut parent_ex, &a, None, RELEASE_MAX)
        })?;
        iters[a.index].release = Some(rel);
    }
    // Convergence: wait for the periodic flush (every 2 s) to carry every residue up.
    let end = parent_ex.report()?;
    let (shown_at_end, exact_at_end) = anon_shown_exact(&end);
    let t = std::time::Instant::now();
    let mut last = end.clone();
    s.phase("wait for the periodic flush", |_| {
        while t.elapsed() < Duration::from_secs(6) {
            let (sh, ex) = anon_shown_exact(&last);
            if sh == ex && t.elapsed() > Duration::from_millis(100) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            // memory.stat read: what users see (it may flush first).
            let _ = parent.stat();
            last = parent_ex.report()?;
        }
        Ok(())
    })?;
    let (shown_after_wait, exact_after_wait) = anon_shown_exact(&last);
    dying_over_time.push((s.now_ms(), last.dying.len()));
    let conv = Convergence {
        shown_at_end,
        exact_at_end,
        shown_after_wait,
        exact_after_wait,
        waited_ms: t.elapsed().as_secs_f64() * 1000.0,
    };
    let old = old_rule(&p.cpus, p.alloc_cpu, p.batch_pages as i64, OLD_THRESHOLD);
    let stranded = -old.iter().map(|(_, x)| x).sum::<i64>();
    let (batches, batch_pages) = iters
        .iter()
        .fold((0, 0), |a, it| (a.0 + it.batches, a.1 + it.batch_pages));
    let results = Results {
        params: p.clone(),
        kernel_charge_batch: kb.pages,
        kernel_charge_batch_source: kb.source,
        spill_threshold: last.gap.spill_threshold_pages,
        observed_batch: (batches > 0).then(|| batch_pages as f64 / batches as f64),
        observed_batch_source: if s.charge_probed() {
            "probed".into()
        } else {
            "inferred".into()
        },
        old_rule_stranded_per_iteration: stranded,
        old_rule_per_cpu: old,
        predicted_drift: 0,
        measured_drift: shown_after_wait - exact_after_wait,
        convergence: conv,
        dying_over_time,
        iterations: iters,
    };
    let checks = checks(&results, touch_pages as i64);
    let verdict = verdict(&results, &checks, page);
    let ledgers = vec![LedgerAt::new(
        "after the last iteration and the flush wait",
        ".",
        &last,
    )];
    let params = serde_json::to_value(&p)?;
    let results = serde_json::to_value(&results)?;
    s.finish(params, results, ledgers, Vec::new(), verdict)
}

#[allow(clippy::too_many_arguments)]
fn iteration(
    s: &Session,
    p: &Params,
    i: u32,
    name: &str,
    pre: &Snap,
    mid: &Snap,
    post: &Snap,
    parent_usage: (Option<u64>, Option<u64>),
    root_usage: (Option<u64>, Option<u64>),
    dying_after: usize,
    release: Option<Release>,
) -> Iteration {
    let phases = s.phases();
    let find = |n: &str| phases.iter().rev().find(|ph| ph.name == n);
    let touch = find(&format!("{name} touch"));
    let mut cpus: Vec<usize> = p.cpus.clone();
    if !cpus.contains(&p.alloc_cpu) {
        cpus.push(p.alloc_cpu);
    }
    let no_flush = WITNESSES.iter().all(|w| match (pre.item(w), post.item(w)) {
        (Some(a), Some(b)) => a.flushed == b.flushed,
        _ => true,
    });
    let (pa, pb) = (pre.item(ANON), post.item(ANON));
    let conserved = match (pa, pb) {
        (Some(a), Some(b)) => Some(
            (b.flushed + b.pending_tree + b.per_cpu.iter().sum::<i64>())
                - (a.flushed + a.pending_tree + a.per_cpu.iter().sum::<i64>()),
        ),
        _ => None,
    };
    let threshold = post.report.gap.spill_threshold_pages;
    let frees: Vec<&PhaseRecord> = p
        .cpus
        .iter()
        .filter_map(|&x| find(&format!("{name} free on cpu{x}")))
        .collect();
    let rows = cpus
        .iter()
        .map(|&c| {
            let touch_d = touch.map(|t| t.per_cpu(name, ANON, &[c])[0]).unwrap_or(0);
            let free_d: i64 = p
                .cpus
                .iter()
                .filter_map(|&x| find(&format!("{name} free on cpu{x}")))
                .map(|ph| ph.per_cpu(name, ANON, &[c])[0])
                .sum();
            let residue = match (pa, pb) {
                (Some(a), Some(b)) => Some(
                    b.per_cpu.get(c).copied().unwrap_or(0) - a.per_cpu.get(c).copied().unwrap_or(0),
                ),
                _ => None,
            };
            // Batched kernels: the CPU's updates one by one, in order (the touch, then the
            // free phases), through the spill rule from its residue before the touch.
            let predicted = threshold.zip(pa).and_then(|(t, a)| {
                let mut ups = Vec::new();
                for ph in touch.into_iter().chain(frees.iter().copied()) {
                    ups.extend(updates_on(ph, name, ANON, c)?);
                }
                let x0 = a.per_cpu.get(c).copied().unwrap_or(0);
                let (x, spilled) = spill(x0, ups, t);
                Some((x - x0, spilled))
            });
            CpuRow {
                cpu: c,
                touch: touch_d,
                free: free_d,
                residue,
                stock_after_touch: mid.stock(c),
                predicted_residue: predicted.map(|(r, _)| r),
                spilled: predicted.map(|(_, s)| s),
            }
        })
        .collect();
    // One-page charges in the touch phase on the alloc CPU: the anon pages plus the kernel
    // memory (page tables) charged meanwhile.
    // Kernel memory charged meanwhile: MEMCG_KMEM as the probes saw it on the alloc CPU
    // (5.18+); before it, on v1, the kmem page_counter between the snapshots around the touch
    // (charged at every kernel-memory charge); on v2 before 5.18 nothing counts it.
    let has_memcg_kmem = pre.report.stat_row("MEMCG_KMEM").is_some();
    let ps = pre.report.page_size.max(1) as i64;
    let (kmem, kmem_source) = if has_memcg_kmem {
        (
            Some(
                touch
                    .map(|t| t.per_cpu(name, "MEMCG_KMEM", &[p.alloc_cpu])[0])
                    .unwrap_or(0),
            ),
            "MEMCG_KMEM updates on the alloc CPU (probes)".to_string(),
        )
    } else if let (Some(a), Some(b)) = (
        pre.report.charge.kmem_usage_bytes,
        mid.report.charge.kmem_usage_bytes,
    ) {
        (
            Some((b as i64 - a as i64) / ps),
            "v1 kmem page_counter across the touch (no MEMCG_KMEM before 5.18)".to_string(),
        )
    } else {
        (
            None,
            "none: no MEMCG_KMEM before 5.18 and no kmem page_counter on v2, so the stock rule \
             is not checked"
                .to_string(),
        )
    };
    let anon = touch
        .map(|t| t.per_cpu(name, ANON, &[p.alloc_cpu])[0])
        .unwrap_or(0);
    let ch = touch.map(|t| t.charge_total(name)).unwrap_or_default();
    let (batches, batch_pages) = if s.charge_probed() {
        (ch.batches, ch.batch_pages)
    } else {
        // Inference: each rise of the page_counter between two stat events is one batch (a
        // fault charges, then updates its statistic).
        (ch.inferred_rises, ch.inferred_charged)
    };
    Iteration {
        index: i,
        cgroup: name.to_string(),
        cpus: rows,
        no_flush_between: Some(no_flush),
        conserved_delta: conserved,
        flushed_delta: pa.zip(pb).map(|(a, b)| b.flushed - a.flushed),
        max_abs_residue: threshold
            .and(pb)
            .and_then(|b| b.per_cpu.iter().map(|x| x.abs()).max()),
        charged_in_touch: kmem.map(|k| anon + k),
        kmem_source,
        stock_before_touch: pre.stock(p.alloc_cpu),
        batches,
        batch_pages,
        parent_usage,
        root_usage,
        dying_after,
        percpu_updates_max: post
            .report
            .gap
            .flush_updates
            .and(post.report.gap.percpu_updates.iter().copied().max()),
        flush_updates: post.report.gap.flush_updates,
        release,
    }
}

/// `run batch-skew` in the experiment registry.
pub struct BatchSkew;

impl super::Experiment for BatchSkew {
    const NAMES: &'static [&'static str] = &["batch-skew"];
    type Results = Results;
    fn render(r: &Report, res: &Results) -> Result<String> {
        render(r, res)
    }
    fn plots(r: &Report, _res: &Results) -> Result<Vec<(String, String)>> {
        plots::plots(r)
    }
}
