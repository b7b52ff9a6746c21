//! The text of a batch-skew report.

use std::fmt::Write as _;

use super::{OLD_THRESHOLD, Results};
use crate::experiment::{Report, Result};

/// The text section of a batch-skew report.
pub(super) fn render(r: &Report, res: &Results) -> Result<String> {
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
        if let Some(t) = res.spill_threshold {
            let rule: Vec<String> = it
                .cpus
                .iter()
                .map(|c| match (c.predicted_residue, c.spilled) {
                    (Some(r), Some(sp)) => format!("cpu{} {r:+} (spilled {sp:+})", c.cpu),
                    _ => format!("cpu{} -", c.cpu),
                })
                .collect();
            let _ = writeln!(
                out,
                "  {:<8} spill rule (|x| > {t}): residues {}; aggregate moved {}",
                "",
                rule.join(", "),
                it.flushed_delta
                    .map(|v| format!("{v:+}"))
                    .unwrap_or_else(|| "-".into())
            );
        } else if it.no_flush_between == Some(false) {
            let _ = writeln!(
                out,
                "  {:<8} (a flush ran between the snapshots: residues were carried up)",
                ""
            );
        }
        if let Some(rel) = &it.release {
            let _ = writeln!(
                out,
                "  {:<8} release: {}; child residue {:+}; parent aggregate {:+}, pending {:+}, exact {:+} ({})",
                "",
                match (rel.freed_after_ms, &rel.held_by) {
                    (Some(ms), _) => format!(
                        "freed {ms:.0} ms after the rmdir{}",
                        rel.next_child
                            .map(|(a, p)| format!(
                                " (after the next workload started; its own {a:+} aggregate, {p:+} pending taken out)"
                            ))
                            .unwrap_or_default()
                    ),
                    (None, h) => format!(
                        "still dying after {:.0} ms, held by {}",
                        rel.waited_ms,
                        h.as_deref().unwrap_or("?")
                    ),
                },
                rel.child_residue,
                rel.carried(),
                rel.after.1 - rel.before.1,
                -rel.lost(),
                rel.fate().name()
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
