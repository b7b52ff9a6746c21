//! What became of a removed child's residues at its release (batched kernels: 5.10 adds a
//! freed memcg's per-CPU residues to its ancestors in `mem_cgroup_free`), measured from the
//! parent, and the verdict's account of all releases of a run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ANON;
use crate::experiment::{Result, Session};
use crate::explain::{ExplainReport, Explainer};

/// A removed child's NR_ANON_MAPPED residues at its release, measured from the parent: its
/// aggregate (what memory.stat shows) and the deltas pending in its subtree (the child's
/// per-CPU residues among them), before the rmdir and once the child is gone from the walk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Release {
    /// Σ over CPUs of the child's own unflushed NR_ANON_MAPPED after its workload exited,
    /// pages (on batched kernels: its per-CPU residues below the spill threshold).
    pub child_residue: i64,
    /// The parent's NR_ANON_MAPPED aggregate and pending pages before the rmdir.
    pub before: (i64, i64),
    /// ... after the child was freed, or when the wait gave up.
    pub after: (i64, i64),
    /// ms from the rmdir until the child was gone from the parent's walk; `None`: it was still
    /// dying when the wait ended.
    pub freed_after_ms: Option<f64>,
    /// How long the wait lasted, ms.
    pub waited_ms: f64,
    /// Measured after the next iteration's workload started (its first charges on a CPU take
    /// that CPU's stock slot from the removed child): that child's own NR_ANON_MAPPED
    /// aggregate and pending pages, subtracted from `after`.
    #[serde(default)]
    pub next_child: Option<(i64, i64)>,
    /// What still held the child when the wait ended (from the parent's walk).
    #[serde(default)]
    pub held_by: Option<String>,
    /// Another dying cgroup was freed in the same window, so the parent's numbers mix both.
    #[serde(default)]
    pub overlapped: bool,
}

/// What a freed cgroup's residues became, as [`Release`] measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// The parent's aggregate rose by exactly the residues; the exact value kept.
    Flushed,
    /// The residues left the exact value and never reached the aggregate.
    Lost,
    /// The cgroup was not freed within the wait: its residues stay with it.
    Stranded,
    /// It held no residue, so its release shows nothing.
    Empty,
    /// None of the above: something else moved the parent's statistic meanwhile.
    Unclear,
}

impl Fate {
    /// Its name in text (as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Fate::Flushed => "flushed",
            Fate::Lost => "lost",
            Fate::Stranded => "stranded",
            Fate::Empty => "empty",
            Fate::Unclear => "unclear",
        }
    }
}

impl Release {
    /// Pages the parent's aggregate gained meanwhile.
    pub fn carried(&self) -> i64 {
        self.after.0 - self.before.0
    }

    /// Pages that left the parent's exact value (aggregate + pending) meanwhile.
    pub fn lost(&self) -> i64 {
        (self.before.0 + self.before.1) - (self.after.0 + self.after.1)
    }

    /// What the residues became.
    pub fn fate(&self) -> Fate {
        let r = self.child_residue;
        match () {
            _ if self.freed_after_ms.is_none() => Fate::Stranded,
            _ if self.overlapped => Fate::Unclear,
            _ if r == 0 && self.carried() == 0 && self.lost() == 0 => Fate::Empty,
            _ if self.carried() == r && self.lost() == 0 => Fate::Flushed,
            _ if self.carried() == 0 && self.lost() == r => Fate::Lost,
            _ => Fate::Unclear,
        }
    }
}

/// The parent's NR_ANON_MAPPED aggregate (unclamped) and pending pages, for a report.
pub(super) fn anon_aggregate_pending(r: &ExplainReport) -> (i64, i64) {
    let ps = r.page_size.max(1) as i64;
    r.stat_row(ANON)
        .map(|s| ((s.exact_bytes - s.pending_bytes) / ps, s.pending_bytes / ps))
        .unwrap_or((0, 0))
}

/// How long the run first waits for a removed child to be freed (an RCU grace period and a
/// work item when nothing holds it).
pub(super) const RELEASE_FIRST: Duration = Duration::from_millis(200);
/// How long it waits later: after the next iteration's workload started, or at the end.
pub(super) const RELEASE_MAX: Duration = Duration::from_secs(3);

/// A removed child whose release is still to be measured.
pub(super) struct Awaited {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) child_residue: i64,
    pub(super) before: (i64, i64),
    pub(super) removed: std::time::Instant,
    /// The other dying cgroups at its rmdir: if one of them is freed in the same window, the
    /// parent's numbers mix both.
    pub(super) others_dying: Vec<String>,
}

/// After a child left the parent's walk (`css_release`), its memcg is freed one RCU grace
/// period later (`css_free_rwork_fn` -> `mem_cgroup_free`): without the lifecycle
/// tracepoints, the run waits this long before it reads what the free did.
const FREE_AFTER_WALK: Duration = Duration::from_millis(200);

/// Polls until the awaited child is freed or `wait` passed, and reads the parent then. Freed:
/// the `cgroup_release` tracepoint fired for it, which comes after its memcg was freed
/// (`mem_cgroup_free` runs before the css drops its cgroup reference); without that
/// tracepoint, [`FREE_AFTER_WALK`] after it left the parent's walk. `next_child`: the next
/// iteration's child's own NR_ANON_MAPPED aggregate and pending pages, subtracted from the
/// parent's (nothing else under the parent updates it).
pub(super) fn await_release(
    s: &mut Session,
    parent_ex: &mut Explainer,
    a: &Awaited,
    next_child: Option<(i64, i64)>,
    wait: Duration,
) -> Result<Release> {
    let t0 = std::time::Instant::now();
    let traced = s.lifecycle_attached();
    let mut left_walk: Option<std::time::Instant> = None;
    loop {
        // With the tracepoint, the lifecycle records say when; a parent report (a whole
        // snapshot) is taken only once it came or the wait ended.
        let freed = if traced {
            s.poll()?;
            s.lifecycle()
                .iter()
                .any(|e| e.kind == "release" && e.cgroup == a.name)
        } else {
            let gone = !parent_ex.report()?.dying.iter().any(|d| d.path == a.name);
            if gone && left_walk.is_none() {
                left_walk = Some(std::time::Instant::now());
            }
            left_walk.is_some_and(|t| t.elapsed() >= FREE_AFTER_WALK)
        };
        if freed || t0.elapsed() >= wait {
            let r = parent_ex.report()?;
            let ms = a.removed.elapsed().as_secs_f64() * 1000.0;
            let (agg, pending) = anon_aggregate_pending(&r);
            let (na, np) = next_child.unwrap_or((0, 0));
            let held = match r.dying.iter().find(|d| d.path == a.name) {
                Some(d) => d.held_by().join("; "),
                None => "nothing the walk sees: it left the walk, but its memcg was not freed \
                         yet (an RCU grace period, or a reference outside the statistics)"
                    .into(),
            };
            return Ok(Release {
                child_residue: a.child_residue,
                before: a.before,
                after: (agg - na, pending - np),
                freed_after_ms: freed.then_some(ms),
                waited_ms: ms,
                next_child,
                held_by: (!freed).then_some(held),
                overlapped: a
                    .others_dying
                    .iter()
                    .any(|o| !r.dying.iter().any(|d| &d.path == o)),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The releases of a run, counted by what their residues became.
#[derive(Debug, Default)]
pub(super) struct Fates {
    pub(super) flushed: usize,
    pub(super) lost: usize,
    pub(super) stranded: usize,
    pub(super) empty: usize,
    pub(super) unclear: usize,
    /// Pages carried into the parent by the flushed ones, and lost by the lost ones.
    pub(super) carried: i64,
    pub(super) lost_pages: i64,
    /// Fastest and slowest release, ms after the rmdir.
    pub(super) freed_ms: Option<(f64, f64)>,
    pub(super) waited_ms: f64,
    /// Freed only once the next iteration's workload had started.
    pub(super) after_next: usize,
    /// What held the stranded ones (distinct reasons).
    pub(super) held_by: Vec<String>,
}

pub(super) fn release_fates<'a>(releases: impl IntoIterator<Item = &'a Release>) -> Fates {
    let mut f = Fates::default();
    for rel in releases {
        match rel.fate() {
            Fate::Flushed => {
                f.flushed += 1;
                f.carried += rel.carried();
            }
            Fate::Lost => {
                f.lost += 1;
                f.lost_pages += rel.lost();
            }
            Fate::Stranded => f.stranded += 1,
            Fate::Empty => f.empty += 1,
            Fate::Unclear => f.unclear += 1,
        }
        if let Some(ms) = rel.freed_after_ms {
            let (lo, hi) = f.freed_ms.unwrap_or((ms, ms));
            f.freed_ms = Some((lo.min(ms), hi.max(ms)));
            f.after_next += usize::from(rel.next_child.is_some());
        }
        if let Some(h) = &rel.held_by
            && !f.held_by.contains(h)
        {
            f.held_by.push(h.clone());
        }
        f.waited_ms = f.waited_ms.max(rel.waited_ms);
    }
    f
}

impl Fates {
    /// The verdict's status on a batched kernel, given the parent's drift after the run (there,
    /// minus the residues the dying cgroups hold).
    pub(super) fn status(&self, drift: i64) -> &'static str {
        if self.lost > 0 {
            "loses residues at release"
        } else if drift != 0 {
            "dying cgroups hold residues"
        } else {
            "flushes into the parent"
        }
    }

    /// One sentence per fate seen.
    pub(super) fn describe(&self) -> String {
        let measured = self.flushed + self.lost + self.stranded + self.empty + self.unclear;
        if measured == 0 {
            return "The run kept its removed cgroups dying (--keep-dying), so no release was \
                    measured: their residues stay with them until they are freed."
                .into();
        }
        let mut out = Vec::new();
        if let Some((lo, hi)) = self.freed_ms {
            out.push(format!(
                "{} of {measured} removed cgroups were freed {:.0}-{:.0} ms after their rmdir.",
                measured - self.stranded,
                lo,
                hi
            ));
        }
        if self.after_next > 0 {
            out.push(format!(
                "{} of them only after the next iteration's workload had started: its charges took over a charge-stock slot that still cached the removed cgroup (that workload's own share is taken out of the parent's numbers).",
                self.after_next
            ));
        }
        if self.flushed > 0 {
            out.push(format!(
                "At {} release(s) the parent's aggregate rose by exactly the child's residues ({} pages in all) and its exact value did not move: the kernel flushed them into the ancestors.",
                self.flushed, self.carried
            ));
        }
        if self.lost > 0 {
            out.push(format!(
                "At {} release(s) the child's residues ({} pages in all) left the parent's exact value without reaching its aggregate: lost.",
                self.lost, self.lost_pages
            ));
        }
        if self.stranded > 0 {
            out.push(format!(
                "{} removed cgroup(s) were still dying {:.0} ms after their rmdir, held by {}: their residues stay with them.",
                self.stranded,
                self.waited_ms,
                self.held_by.join(" / ")
            ));
        }
        if self.empty > 0 {
            out.push(format!("{} freed cgroup(s) held no residue.", self.empty));
        }
        if self.unclear > 0 {
            out.push(format!(
                "At {} release(s) the parent's statistic moved by something else too, so what the residues became is not measured.",
                self.unclear
            ));
        }
        out.join(" ")
    }
}
