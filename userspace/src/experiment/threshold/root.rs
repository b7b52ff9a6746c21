//! `run threshold --root` (v1): the same thresholds registered on the root cgroup as well, where
//! the usage they are compared with is not a page_counter at all.
//!
//! The root is never charged (`try_charge` returns at once for it), so its
//! `memory.usage_in_bytes` is synthesised by `mem_cgroup_usage` (docs: `../shared/docs/kernel.md`
//! §5.2): from 6.5 the machine's global node counters `NR_FILE_PAGES + NR_ANON_MAPPED` (the
//! folded `vm_node_stat`, which lag the per-CPU counts by up to each CPU's "vm stats
//! threshold"); in 5.10-6.1 the root memcg's statistics of the same two items. Which one this
//! kernel uses is not assumed: the run reads the usage, `/proc/vmstat` and the root's
//! `memory.stat` together until the usage holds still, and reports which sum it equals.
//!
//! The root's thresholds are checked on the same path as any memcg's: `mem_cgroup_threshold`
//! walks from the memcg whose page events reached their check target up to the root, so the
//! workload's own faults in `t` check them (and so do other memcgs' events on any CPU).
//!
//! Registering on the root writes its `cgroup.event_control`, a cgroup the tool did not create,
//! so it happens only on `--root`. The registration lives as long as the eventfd: the kernel
//! removes it when the descriptor is closed, which the exit of the process does on every path
//! (SIGKILL included); nothing is left on the root.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{Check, Results, Watch};
use crate::cgroup::{MemCgroup, MemoryHierarchy};
use crate::experiment::{Context as _, Result};

/// Attempts at reading the usage and the two sums while the usage holds still.
const FORMULA_ATTEMPTS: usize = 50;

/// One signal of a root threshold's eventfd.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RootEvent {
    /// The threshold, bytes above the root's usage when the thresholds were registered.
    pub threshold: u64,
    /// Where it was registered, bytes of the root's `memory.usage_in_bytes`.
    pub registered_bytes: u64,
    /// `up` or `down`.
    pub direction: String,
    /// Pages the workload held after the step in which the event was read.
    pub pages_held: u64,
    /// Signals read.
    pub signals: u64,
    /// The root's `memory.usage_in_bytes` right after that step.
    pub usage_bytes: u64,
    /// Pages held after the step from which the root's usage was seen past the threshold
    /// without a break (the rest of the machine can move it back and forth across: the
    /// kernel's check interval counts from its latest crossing).
    pub crossed_at_pages: Option<u64>,
    /// Page events between that step and the event.
    pub lag_pages: Option<u64>,
    /// The root's `memory.stat` `total_cache + total_rss` then (its memcg statistics), bytes.
    pub stat_bytes: Option<u64>,
}

/// What the root's usage was found to be made of.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Formula {
    /// The root's `memory.usage_in_bytes`, read twice around the two sums (equal), bytes.
    pub usage_bytes: u64,
    /// `/proc/vmstat` `nr_file_pages + nr_anon_pages` (the global node counters), pages.
    pub vmstat_pages: u64,
    /// The root's `memory.stat` `total_cache + total_rss` (memcg statistics), pages.
    pub memcg_stat_pages: u64,
    /// Which the usage equals: `global` (vmstat), `memcg` (statistics), or `neither`.
    pub source: String,
    /// Reads it took for the usage to hold still.
    pub attempts: usize,
}

/// Where a threshold was seen crossed in one phase, from the usage read after each step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Crossing {
    /// Pages held when the usage was first seen past it.
    pub first: Option<u64>,
    /// Pages held when the usage was last seen crossing to past it (`None` while it is not
    /// past): the rest of the machine can move the root's usage back across, and the kernel's
    /// check interval counts from the latest crossing, not the first.
    pub latest: Option<u64>,
}

impl Crossing {
    /// One step's reading: whether the usage was past the threshold with `held` pages held.
    pub fn see(&mut self, past: bool, held: u64) {
        if !past {
            self.latest = None;
        } else if self.latest.is_none() {
            self.latest = Some(held);
            self.first.get_or_insert(held);
        }
    }
}

/// The root's part of the results.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RootResults {
    /// The root's usage when the thresholds were registered, bytes.
    pub baseline_bytes: u64,
    /// The usage's make-up, read before the workload grew.
    pub formula: Formula,
    /// The largest per-CPU "vm stats threshold" of `/proc/zoneinfo`: how far, in pages per
    /// CPU and item, the global counters may lag the per-CPU counts.
    pub vmstat_threshold_pages: Option<u64>,
    /// Every event, in order.
    pub events: Vec<RootEvent>,
    /// Per `"<threshold> up|down"`: pages held when the root's usage was first seen past it
    /// in that phase (`None`: never; the rest of the machine kept it on the other side).
    #[serde(default)]
    pub seen_past: std::collections::BTreeMap<String, Option<u64>>,
    /// The rest of the machine: the root's usage less the workload's pages, lowest and highest
    /// seen after a step, pages.
    #[serde(default)]
    pub rest_pages: Option<(u64, u64)>,
    /// How far the rest may move with nothing else running, pages: how far behind the per-CPU
    /// counts the sum may be (two items times the vm stats threshold times the online CPUs
    /// for `global`; `(2 x CPUs + 1) x MEMCG_CHARGE_BATCH` unflushed updates for `memcg`).
    #[serde(default)]
    pub quiet_bound_pages: Option<u64>,
}

impl RootResults {
    /// Whether the rest of the machine held still enough for the root's events to be judged
    /// by the kernel's rules (else they are reported only).
    pub fn quiet(&self) -> bool {
        match (self.rest_pages, self.quiet_bound_pages) {
            (Some((lo, hi)), Some(b)) => hi - lo <= b,
            _ => false,
        }
    }
}

/// The root's thresholds while the run grows and frees.
pub(super) struct RootWatches {
    root: MemCgroup,
    page: u64,
    watches: Vec<Watch>,
    /// Per watch, in this phase.
    crossed: Vec<Crossing>,
    /// What is reported.
    pub results: RootResults,
}

/// The sum of the `key value` lines `keys` of the file `path` (`what` names it in errors).
fn sum_of(path: &std::path::Path, keys: [&str; 2], what: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| what.to_string())?;
    keys.iter().try_fold(0, |sum, k| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(k)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|v| sum + v)
            .with_context(|| format!("no {k} in {what}"))
    })
}

/// The root's memory.stat `total_cache + total_rss`, pages.
fn root_stat_pages(root: &MemCgroup, page: u64) -> Result<u64> {
    let path = root.path().join("memory.stat");
    Ok(sum_of(
        &path,
        ["total_cache", "total_rss"],
        "the root's memory.stat",
    )? / page)
}

/// `/proc/vmstat` `nr_file_pages + nr_anon_pages`.
fn vmstat_pages() -> Result<u64> {
    sum_of(
        std::path::Path::new("/proc/vmstat"),
        ["nr_file_pages", "nr_anon_pages"],
        "/proc/vmstat",
    )
}

/// The largest "vm stats threshold" in `/proc/zoneinfo`, if it lists any.
fn vmstat_threshold() -> Option<u64> {
    std::fs::read_to_string("/proc/zoneinfo")
        .ok()?
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("vm stats threshold:")?
                .trim()
                .parse()
                .ok()
        })
        .max()
}

/// How far the rest of the machine may move the root's usage with nothing else running, pages:
/// how far behind the per-CPU counts the sum the usage is made of may be.
/// - `global`: the node counters fold a CPU's updates of an item only past its vm stats
///   threshold (`__mod_node_page_state`), so two items on every online CPU.
/// - `memcg` (6.1): the statistics move only at a flush, which readers start once the updates
///   pending machine-wide passed `(online CPUs + 1) x MEMCG_CHARGE_BATCH`, each CPU holding up
///   to a batch more of its own uncounted (`memcg_rstat_updated`, `mem_cgroup_flush_stats`;
///   docs/ledger.md), so `(2 x online CPUs + 1)` batches.
fn quiet_bound(hier: &MemoryHierarchy, f: &Formula, vmstat_threshold: Option<u64>) -> Option<u64> {
    let cpus = crate::experiment::online_cpus().len() as u64;
    let global = || vmstat_threshold.map(|t| 2 * t * cpus);
    let memcg = || {
        crate::workload::batch::charge_batch(hier)
            .ok()
            .map(|b| (2 * cpus + 1) * b.pages)
    };
    match f.source.as_str() {
        "global" => global(),
        "memcg" => memcg(),
        // Which lag applies is unknown: the larger.
        "both" => global().max(memcg()),
        _ => None,
    }
}

/// Which sum the root's usage equals, read while it holds still.
fn formula(root: &MemCgroup, page: u64) -> Result<Formula> {
    let usage = || -> Result<u64> {
        root.usage_bytes()?
            .context("the root has no memory.usage_in_bytes")
    };
    let mut last = Formula::default();
    for attempts in 1..=FORMULA_ATTEMPTS {
        let u0 = usage()?;
        let vm = vmstat_pages()?;
        let st = root_stat_pages(root, page)?;
        let u1 = usage()?;
        let source = classify(u0, u1, vm * page, st * page);
        last = Formula {
            usage_bytes: u1,
            vmstat_pages: vm,
            memcg_stat_pages: st,
            source: source.into(),
            attempts,
        };
        if source == "global" || source == "memcg" {
            break;
        }
        // `both`: the two sums are equal (an idle machine whose counters are all folded):
        // read again until they differ; if they never do, `both` is what was seen.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    if last.source == "moving" {
        last.source = "neither".into();
    }
    Ok(last)
}

/// Which sum a still usage equals: the usage read before and after the two sums (bytes), and
/// the sums (bytes). `both` when the sums are equal to it and to each other (nothing tells
/// them apart then), `moving` when the usage moved between its two reads.
pub(super) fn classify(u0: u64, u1: u64, vmstat: u64, memcg_stat: u64) -> &'static str {
    match (u0 == u1, u0 == vmstat, u0 == memcg_stat) {
        (false, _, _) => "moving",
        (true, true, true) => "both",
        (true, true, false) => "global",
        (true, false, true) => "memcg",
        (true, false, false) => "neither",
    }
}

impl RootWatches {
    /// Registers `thresholds` (bytes above the root's usage now) on the root.
    pub fn register(hier: &MemoryHierarchy, thresholds: &[u64], page: u64) -> Result<Self> {
        let root = MemCgroup::root(hier)?;
        let formula = formula(&root, page)?;
        let vmstat_threshold_pages = vmstat_threshold();
        let quiet_bound_pages = quiet_bound(hier, &formula, vmstat_threshold_pages);
        let usage_file = std::fs::File::open(root.path().join("memory.usage_in_bytes"))
            .context("the root's memory.usage_in_bytes")?;
        let baseline = root.usage_bytes()?.unwrap_or(0);
        let watches = thresholds
            .iter()
            .map(|&t| Watch::register(root.path(), &usage_file, t, baseline + t).context("--root"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            root,
            page,
            crossed: vec![Crossing::default(); watches.len()],
            watches,
            results: RootResults {
                baseline_bytes: baseline,
                formula,
                vmstat_threshold_pages,
                quiet_bound_pages,
                rest_pages: None,
                events: Vec::new(),
                seen_past: Default::default(),
            },
        })
    }

    /// Keeps where the thresholds were seen crossed in the phase that ends (`up` or not) and
    /// forgets it for the next.
    pub fn end_phase(&mut self, up: bool) {
        let dir = if up { "up" } else { "down" };
        for (wt, c) in self.watches.iter().zip(self.crossed.iter_mut()) {
            self.results
                .seen_past
                .insert(format!("{} {dir}", wt.threshold), std::mem::take(c).first);
        }
    }

    /// After a step: notes crossings and reads the eventfds.
    pub fn observe(&mut self, held: u64, up: bool) -> Result<()> {
        let u = self.root.usage_bytes()?.unwrap_or(0);
        let rest = (u / self.page).saturating_sub(held);
        let r = &mut self.results.rest_pages;
        *r = Some(r.map_or((rest, rest), |(lo, hi)| (lo.min(rest), hi.max(rest))));
        for (k, wt) in self.watches.iter().enumerate() {
            let past = if up { u >= wt.at } else { u < wt.at };
            self.crossed[k].see(past, held);
            let n = wt.take()?;
            if n == 0 {
                continue;
            }
            self.results.events.push(RootEvent {
                threshold: wt.threshold,
                registered_bytes: wt.at,
                direction: if up { "up" } else { "down" }.into(),
                pages_held: held,
                signals: n,
                usage_bytes: u,
                crossed_at_pages: self.crossed[k].latest,
                lag_pages: self.crossed[k].latest.map(|c| held.abs_diff(c)),
                stat_bytes: root_stat_pages(&self.root, self.page)
                    .ok()
                    .map(|p| p * self.page),
            });
        }
        Ok(())
    }
}

/// The root's checks: its usage is one of the two sums, exactly; each threshold the root's
/// usage was seen past is signalled that way, the first time after it was seen past and within
/// a check interval of its latest crossing (the workload's own page events check the root's
/// thresholds; the rest of the machine can move the usage back across meanwhile). Other tasks
/// (this one's own heap included) move the root's usage too: a threshold may be signalled more
/// than once, and one the usage was never seen past on the way down (the rest of the machine
/// grew meanwhile) is reported, not expected to fire.
pub(super) fn checks(r: &Results, root: &RootResults) -> Vec<Check> {
    let f = &root.formula;
    let mut out = vec![Check::rule(
        "the root's usage is a sum of counters, not a page_counter",
        "memory.usage_in_bytes = (nr_file_pages + nr_anon_pages) of /proc/vmstat, or \
         (total_cache + total_rss) of its memory.stat"
            .into(),
        format!(
            "{} bytes; vmstat {} pages, memory.stat {} pages: {}",
            f.usage_bytes, f.vmstat_pages, f.memcg_stat_pages, f.source
        ),
        ["global", "memcg", "both"].contains(&f.source.as_str()),
    )];
    if !root.quiet() {
        // Other memory moved the root's usage more than the counters' folding can: where it
        // was, and which crossing a check saw, are not the workload's; nothing to judge.
        return out;
    }
    for &t in &r.params.thresholds {
        for dir in ["up", "down"] {
            // A memcg's check runs when its page events pass the target, which is then set
            // `THRESHOLDS_EVENTS_TARGET` ahead (`mem_cgroup_event_ratelimit`: `next - val < 0`),
            // so checks are that many + 1 events apart. `t`'s usage is its page_counter,
            // charged before the check of the same fault, so a crossing at page c is seen by
            // the check of c or by one within the target after it. The root's usage is a sum
            // of statistics, which gives it one page more either way:
            // - up: a new page is counted in them (`NR_ANON_MAPPED` at its rmap,
            //   `NR_FILE_PAGES` at its page cache insertion) only after its charge ran the
            //   check, so the check of page c sees c - 1;
            // - down: the check reads the sum as the last flush (`memcg`) or fold (`global`)
            //   left it, and a check does not always flush (rate-limited; not at all outside
            //   a task), while a flush or fold can come between the check and this run's read
            //   of the usage (the periodic one, or a read past the rate limit). The check of
            //   the step where the usage was seen past can still see it on the other side;
            //   every later one sees a sum at least as fresh as that read.
            // So the root's bound is `t`'s + 1 both ways.
            let bound = r.events_target + r.params.step_pages + 1;
            let evs: Vec<&RootEvent> = root
                .events
                .iter()
                .filter(|e| e.threshold == t && e.direction == dir)
                .collect();
            let signals: u64 = evs.iter().map(|e| e.signals).sum();
            let seen = root.seen_past.get(&format!("{t} {dir}")).copied().flatten();
            if seen.is_none() && evs.is_empty() {
                continue;
            }
            out.push(Check::rule(
                &format!("root {t} bytes: signalled on the way {dir}"),
                "at least once after its usage was seen past it".into(),
                format!(
                    "{signals} signal(s); seen past {}",
                    seen.map_or_else(|| "never".into(), |c| format!("at {c} pages held"))
                ),
                signals >= 1,
            ));
            if let Some(e) = evs.first() {
                out.push(Check::rule(
                    &format!(
                        "root {t} bytes {dir}: fired after its usage crossed, within a check \
                         interval"
                    ),
                    format!("0 <= lag < {bound} page events"),
                    match (e.crossed_at_pages, e.lag_pages) {
                        (Some(c), Some(l)) => {
                            format!("last crossed at {c} pages, fired at {} ({l})", e.pages_held)
                        }
                        _ => format!(
                            "fired at {} pages, before its usage was seen past it",
                            e.pages_held
                        ),
                    },
                    e.lag_pages.is_some_and(|l| l < bound),
                ));
            }
        }
    }
    out
}

/// The root's lines of the verdict.
pub(super) fn summary(r: &Results, root: &RootResults) -> String {
    let page = r.page_size;
    let f = &root.formula;
    let made_of = match f.source.as_str() {
        "global" => format!(
            "the machine's global counters nr_file_pages + nr_anon_pages ({} pages; they lag \
             the per-CPU counts by up to {} pages per CPU and item)",
            f.vmstat_pages,
            root.vmstat_threshold_pages
                .map_or_else(|| "an unknown number of".into(), |t| t.to_string())
        ),
        "memcg" => format!(
            "the root memcg's statistics total_cache + total_rss ({} pages)",
            f.memcg_stat_pages
        ),
        "both" => format!(
            "the global counters or the root memcg's statistics: both summed to it ({} pages) \
             whenever read",
            f.vmstat_pages
        ),
        _ => "neither the global counters nor the root's statistics (it kept moving)".into(),
    };
    let mut s = format!(
        "The root's thresholds ({} pages of usage at the start): the root is never charged, so \
         its usage is not a page_counter but {made_of}; the workload's page events check them \
         on the way up the hierarchy:\n",
        root.baseline_bytes / page
    );
    match (root.rest_pages, root.quiet()) {
        (Some((lo, hi)), false) => {
            let _ = writeln!(
                s,
                "The rest of the machine moved the root's usage between {lo} and {hi} pages \
                 during the run, more than that sum's lag behind its per-CPU counts ({}): the root's \
                 events are reported, not judged.",
                root.quiet_bound_pages
                    .map_or_else(|| "bound unknown".into(), |b| format!("{b} pages"))
            );
        }
        (Some((lo, hi)), true) => {
            let _ = writeln!(
                s,
                "The rest of the machine held the root's usage between {lo} and {hi} pages \
                 (within that sum's lag), so the workload made the crossings."
            );
        }
        _ => {}
    }
    for e in &root.events {
        let _ = writeln!(
            s,
            "- root {} bytes {}: fired with {} pages held, {}; root usage {} pages, its \
             memory.stat {}.",
            e.threshold,
            e.direction,
            e.pages_held,
            e.lag_pages
                .map(|l| format!("{l} page events after its usage crossed"))
                .unwrap_or_else(|| "before its usage was seen past it".into()),
            e.usage_bytes / page,
            e.stat_bytes
                .map_or_else(|| "unread".into(), |b| format!("{} pages", b / page))
        );
    }
    for (k, seen) in &root.seen_past {
        let fired = root
            .events
            .iter()
            .any(|e| format!("{} {}", e.threshold, e.direction) == *k);
        if seen.is_none() && !fired {
            let _ = writeln!(
                s,
                "- root {} bytes {}: its usage was never seen past it (the rest of the machine, \
                 this process included, moved it the other way), and it did not fire.",
                k.split(' ').next().unwrap_or(""),
                k.split(' ').nth(1).unwrap_or("")
            );
        }
    }
    s
}

/// The root's table in the text report.
pub(super) fn render(r: &Results, root: &RootResults) -> String {
    let page = r.page_size;
    let f = &root.formula;
    let mut out = format!(
        "root: thresholds above its usage at the start ({} pages); its usage is {} \
         (usage {} pages, vmstat file+anon {}, memory.stat cache+rss {})\n",
        root.baseline_bytes / page,
        match f.source.as_str() {
            "global" => "the global counters",
            "memcg" => "the root memcg's statistics",
            "both" => "either sum (equal)",
            _ => "neither sum",
        },
        f.usage_bytes / page,
        f.vmstat_pages,
        f.memcg_stat_pages
    );
    let _ = writeln!(
        out,
        "  {:>12} {:>5} {:>8} {:>8} {:>6} {:>10} {:>10}",
        "THRESHOLD", "DIR", "HELD", "CROSSED", "LAG", "USAGE PG", "STAT PG"
    );
    for e in &root.events {
        let _ = writeln!(
            out,
            "  {:>12} {:>5} {:>8} {:>8} {:>6} {:>10} {:>10}",
            e.threshold,
            e.direction,
            e.pages_held,
            e.crossed_at_pages.map_or("-".into(), |c| c.to_string()),
            e.lag_pages.map_or("-".into(), |l| l.to_string()),
            e.usage_bytes / page,
            e.stat_bytes.map_or("-".into(), |b| (b / page).to_string())
        );
    }
    out
}
