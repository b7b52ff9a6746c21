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

mod plots;

use std::{fmt::Write as _, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, Report, Session, Verdict};
use crate::experiment::{Context as _, Result, refuse};
use crate::{
    cgroup::{MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer, ItemResidue},
    workload::{Workload, batch::charge_batch, workload_binary},
};

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
    /// Pages charged one at a time on the alloc CPU in the touch phase (anon + kernel memory).
    pub charged_in_touch: i64,
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

/// The seed's old per-CPU rule: each update `v` makes `x += v`; when `|x| > threshold` the CPU
/// flushes `x` to the aggregate. Returns what each CPU keeps at the end.
pub fn old_rule(cpus: &[usize], alloc: usize, batch: i64, threshold: i64) -> Vec<(usize, i64)> {
    let mut all: Vec<usize> = cpus.to_vec();
    if !all.contains(&alloc) {
        all.push(alloc);
    }
    let mut x: std::collections::BTreeMap<usize, i64> = all.iter().map(|&c| (c, 0)).collect();
    let upd = |x: &mut i64, v: i64| {
        *x += v;
        if x.abs() > threshold {
            *x = 0;
        }
    };
    // Faults charge one page at a time.
    for _ in 0..(cpus.len() as i64 * batch) {
        upd(x.get_mut(&alloc).unwrap(), 1);
    }
    // A zap uncharges its pages in one update per CPU.
    for c in cpus {
        upd(x.get_mut(c).unwrap(), -batch);
    }
    x.into_iter().collect()
}

/// The stock rule of the module docs: `c` one-page charges from `s0` stocked pages, with a
/// charge batch of `b` pages.
pub fn stock_after(s0: i64, c: i64, b: i64) -> i64 {
    let need = (c - s0).max(0);
    s0 + b * ((need + b - 1) / b) - c
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
    s.expect_phases(u64::from(p.iterations) * (p.cpus.len() as u64 + 4) + 1);
    let bin = workload_binary();
    let parent = s.run.cgroup().clone();
    let mut parent_ex = Explainer::new(hier, parent.clone())?;
    let mut iters = Vec::new();
    let mut dying_over_time = Vec::new();
    let mut pins = Vec::new();
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
        s.phase(format!("{name} touch"), |_| Ok(w.touch(touch_pages)?))?;
        let mid = Snap::take(&mut ex)?;
        for &c in &p.cpus {
            w.set_cpu(c)?;
            s.phase(format!("{name} free on cpu{c}"), |_| {
                Ok(w.free_pages(p.batch_pages)?)
            })?;
        }
        let post = Snap::take(&mut ex)?;
        drop(ex);
        s.phase(format!("{name} exit"), |_| {
            w.exit()?;
            Ok(())
        })?;
        s.phase(format!("{name} rmdir"), |_| {
            std::fs::remove_dir(cg.path())
                .with_context(|| format!("removing {}", cg.path().display()))
        })?;
        if p.pin_page_cache && !p.keep_dying {
            // The file's page cache was the last reference: the dying cgroup can go now.
            if let Some(f) = pins.pop() {
                std::fs::remove_file(&f).with_context(|| format!("{}", f.display()))?;
            }
        }
        let pr = parent_ex.report()?;
        dying_over_time.push((s.now_ms(), pr.dying.len()));
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
        ));
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
            CpuRow {
                cpu: c,
                touch: touch_d,
                free: free_d,
                residue,
                stock_after_touch: mid.stock(c),
            }
        })
        .collect();
    // One-page charges in the touch phase on the alloc CPU: the anon pages plus the kernel
    // memory (page tables) charged meanwhile.
    let kmem = touch
        .map(|t| t.per_cpu(name, "MEMCG_KMEM", &[p.alloc_cpu])[0])
        .unwrap_or(0);
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
        charged_in_touch: anon + kmem,
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
    }
}

fn checks(r: &Results, touch_pages: i64) -> Vec<Check> {
    let p = &r.params;
    let b = p.batch_pages as i64;
    let kb = r.kernel_charge_batch as i64;
    let mut out = Vec::new();
    for it in &r.iterations {
        let n = it.index;
        for row in &it.cpus {
            let want_touch = if row.cpu == p.alloc_cpu {
                touch_pages
            } else {
                0
            };
            let want_free = if p.cpus.contains(&row.cpu) { -b } else { 0 };
            out.push(Check::eq(
                &format!("iter {n} cpu{} NR_ANON_MAPPED updates in touch", row.cpu),
                want_touch,
                row.touch,
            ));
            out.push(Check::eq(
                &format!("iter {n} cpu{} NR_ANON_MAPPED updates in its free", row.cpu),
                want_free,
                row.free,
            ));
            if it.no_flush_between == Some(true)
                && let Some(res) = row.residue
            {
                out.push(Check::eq(
                    &format!("iter {n} cpu{} unflushed residue after the free phases (no flush intervened)", row.cpu),
                    row.touch + row.free,
                    res,
                ));
            }
        }
        if let Some(c) = it.conserved_delta {
            out.push(Check::eq(
                &format!("iter {n} NR_ANON_MAPPED flushed + per-CPU moved by the recorded net"),
                0,
                c,
            ));
        }
        if let (Some(s0), Some(row)) = (
            it.stock_before_touch,
            it.cpus.iter().find(|c| c.cpu == p.alloc_cpu),
        ) && let Some(s1) = row.stock_after_touch
        {
            out.push(Check::rule(
                &format!("iter {n} stock of cpu{} after the touch", p.alloc_cpu),
                format!(
                    "{} (s0 {s0} + {kb}*ceil(({} charges - s0)/{kb}) - charges)",
                    stock_after(s0, it.charged_in_touch, kb),
                    it.charged_in_touch
                ),
                s1.to_string(),
                s1 == stock_after(s0, it.charged_in_touch, kb),
            ));
        }
    }
    // memcg_rstat_updated (6.8+, 6.18 memcontrol.c:564-593): a CPU's carry is handed to the
    // memcg's count as soon as it reaches MEMCG_CHARGE_BATCH, so it is always below it.
    if let Some(m) = r
        .iterations
        .iter()
        .filter_map(|i| i.percpu_updates_max)
        .max()
    {
        out.push(Check::rule(
            "per-CPU stats_updates carries (flush threshold)",
            format!("< {} (MEMCG_CHARGE_BATCH)", r.kernel_charge_batch),
            format!("max {m}"),
            m < r.kernel_charge_batch as i64,
        ));
    }
    if let Some(ob) = r.observed_batch {
        out.push(Check::rule(
            "pages per page_counter batch",
            format!("{} (MEMCG_CHARGE_BATCH)", r.kernel_charge_batch),
            format!("{ob} ({})", r.observed_batch_source),
            ob == r.kernel_charge_batch as f64,
        ));
    }
    out
}

fn verdict(r: &Results, checks: &[Check], page: u64) -> Verdict {
    let c = &r.convergence;
    let exact_iters = r
        .iterations
        .iter()
        .filter(|i| i.no_flush_between == Some(true))
        .count();
    let (status, answer) = if c.shown_after_wait == c.exact_after_wait {
        (
            "flushes into the parent",
            format!(
                "this kernel carries every residue into the parent: after the run the parent's memory.stat anon read {} pages against an exact {} (drift {} pages, {} ms after the last iteration)",
                c.shown_after_wait,
                c.exact_after_wait,
                r.measured_drift,
                c.waited_ms.round()
            ),
        )
    } else {
        (
            "strands residues",
            format!(
                "the parent's memory.stat anon still reads {} pages against an exact {} after {} ms: {} pages stranded",
                c.shown_after_wait,
                c.exact_after_wait,
                c.waited_ms.round(),
                r.measured_drift
            ),
        )
    };
    let p = &r.params;
    let summary = format!(
        "{} iterations x {} CPUs x {} pages: each free phase left -{} pages on every freeing CPU and +{} on the alloc CPU in the per-CPU counters (exactly so in {} of {} iterations; a flush moved them up in the rest).\n\
         The seed's old rule (per-CPU threshold {}, a dead cgroup's remainder never flushed) would strand {} pages ({} KiB) per iteration, {} KiB in this run.\n{}",
        p.iterations,
        p.cpus.len(),
        p.batch_pages,
        p.batch_pages,
        (p.cpus.len() as u64 - u64::from(p.cpus.contains(&p.alloc_cpu))) * p.batch_pages,
        exact_iters,
        r.iterations.len(),
        OLD_THRESHOLD,
        r.old_rule_stranded_per_iteration,
        r.old_rule_stranded_per_iteration * page as i64 / 1024,
        r.old_rule_stranded_per_iteration * page as i64 / 1024 * i64::from(p.iterations),
        answer
    );
    Verdict::judged(status, summary, checks.to_vec())
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

/// The text section of a batch-skew report.
fn render(r: &Report, res: &Results) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "batch-skew: alloc on cpu{}, free {} pages on each of {:?}, {} iterations{}",
        res.params.alloc_cpu,
        res.params.batch_pages,
        res.params.cpus,
        res.params.iterations,
        if res.params.pin_page_cache {
            ", page cache pins each removed cgroup"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  charge batch: kernel MEMCG_CHARGE_BATCH {} ({}); observed {} ({})",
        res.kernel_charge_batch,
        if res.kernel_charge_batch_source.is_empty() {
            "as the record says"
        } else {
            &res.kernel_charge_batch_source
        },
        res.observed_batch
            .map(|b| format!("{b} pages per batch"))
            .unwrap_or_else(|| "no batch seen".into()),
        res.observed_batch_source
    );
    match res
        .iterations
        .iter()
        .filter_map(|i| i.percpu_updates_max)
        .max()
    {
        Some(m) => {
            let _ = writeln!(
                out,
                "  flush threshold: per-CPU update carries at most {m} (handed on at {}); the child's count {} (memory.stat flushes first above {} x {} online CPUs; CPUs stop carrying once it is due)",
                res.kernel_charge_batch,
                res.iterations
                    .iter()
                    .filter_map(|i| i.flush_updates)
                    .max()
                    .unwrap_or(0),
                res.kernel_charge_batch,
                r.online_cpus.len()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  flush threshold: this kernel keeps no per-CPU update count (before 6.8)"
            );
        }
    }
    let _ = writeln!(
        out,
        "  {:<8} {:>5} {:>9} {:>9} {:>9} {:>7}   parent usage KiB      root usage KiB      dying",
        "ITER", "CPU", "TOUCH", "FREE", "RESIDUE", "STOCK"
    );
    let kib = |v: Option<u64>| {
        v.map(|b| (b / 1024).to_string())
            .unwrap_or_else(|| "-".into())
    };
    for it in &res.iterations {
        for (k, row) in it.cpus.iter().enumerate() {
            let tail = if k == 0 {
                format!(
                    "   {:>8} -> {:<8}   {:>8} -> {:<8} {}",
                    kib(it.parent_usage.0),
                    kib(it.parent_usage.1),
                    kib(it.root_usage.0),
                    kib(it.root_usage.1),
                    it.dying_after
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:<8} {:>5} {:>+9} {:>+9} {:>9} {:>7}{tail}",
                if k == 0 { it.cgroup.as_str() } else { "" },
                row.cpu,
                row.touch,
                row.free,
                row.residue
                    .map(|v| format!("{v:+}"))
                    .unwrap_or_else(|| "-".into()),
                row.stock_after_touch
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
            );
        }
        if it.no_flush_between == Some(false) {
            let _ = writeln!(
                out,
                "  {:<8} (a flush ran between the snapshots: residues were carried up)",
                ""
            );
        }
    }
    let _ = writeln!(
        out,
        "  old rule (threshold {}): stranded per CPU {:?} = {} pages per iteration",
        OLD_THRESHOLD, res.old_rule_per_cpu, res.old_rule_stranded_per_iteration
    );
    let c = &res.convergence;
    let _ = writeln!(
        out,
        "  parent NR_ANON_MAPPED at the end: shown {} exact {}; after {:.0} ms: shown {} exact {} (drift {}, predicted {})",
        c.shown_at_end,
        c.exact_at_end,
        c.waited_ms,
        c.shown_after_wait,
        c.exact_after_wait,
        res.measured_drift,
        res.predicted_drift
    );
    let _ = writeln!(
        out,
        "  dying cgroups over time (ms, count): {:?}",
        res.dying_over_time
            .iter()
            .map(|(t, n)| (t.round() as i64, *n))
            .collect::<Vec<_>>()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_rule_matches_hand_count() {
        // 2 CPUs, 30 pages, alloc on cpu1: cpu1 sees 60 increments (flush at 33, keeps 27),
        // then cpu0 frees 30 (keeps -30) and cpu1 frees 30 (27-30 = -3).
        assert_eq!(old_rule(&[0, 1], 1, 30, 32), vec![(0, -30), (1, -3)]);
        // alloc outside the list keeps its remainder: 64*30 = 1920 = 58*33 + 6.
        let v = old_rule(&(0..64).collect::<Vec<_>>(), 90, 30, 32);
        assert_eq!(v.last(), Some(&(90, 6)));
        assert!(v[..64].iter().all(|&(_, x)| x == -30));
    }

    #[test]
    fn stock_rule() {
        assert_eq!(stock_after(0, 1, 64), 63);
        assert_eq!(stock_after(0, 64, 64), 0);
        assert_eq!(stock_after(0, 65, 64), 63);
        assert_eq!(stock_after(10, 5, 64), 5);
        assert_eq!(stock_after(10, 70, 64), 4);
        // The 5.x batch.
        assert_eq!(stock_after(0, 1, 32), 31);
        assert_eq!(stock_after(10, 70, 32), 4);
    }
}
