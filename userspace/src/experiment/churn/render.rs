//! `run churn`: the text section of a record.

use super::*;
use crate::experiment::Result;

/// Rows of the churned-cgroup table shown at each end when there are more than twice this.
pub(super) const TABLE_ENDS: usize = 20;

/// `run churn` in the experiment registry.
pub struct Churn;

impl crate::experiment::Experiment for Churn {
    const NAMES: &'static [&'static str] = &["churn"];
    type Results = Results;
    fn render(_r: &Report, res: &Results) -> Result<String> {
        render(res)
    }
    fn plots(r: &Report, _res: &Results) -> Result<Vec<(String, String)>> {
        super::plots::plots(r)
    }
}

/// The text section of a churn report.
fn render(res: &Results) -> Result<String> {
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
