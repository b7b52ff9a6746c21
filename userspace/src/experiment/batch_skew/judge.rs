//! The checks and the verdict of a batch-skew run, from its results.

use super::release::release_fates;
use super::*;

pub(super) fn checks(r: &Results, touch_pages: i64) -> Vec<Check> {
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
            if let (Some(want), Some(res)) = (row.predicted_residue, row.residue) {
                out.push(Check::eq(
                    &format!(
                        "iter {n} cpu{} residue after the free phases by the spill rule ({} spilled)",
                        row.cpu,
                        row.spilled.unwrap_or(0)
                    ),
                    want,
                    res,
                ));
            } else if it.no_flush_between == Some(true)
                && let Some(res) = row.residue
            {
                out.push(Check::eq(
                    &format!("iter {n} cpu{} unflushed residue after the free phases (no flush intervened)", row.cpu),
                    row.touch + row.free,
                    res,
                ));
            }
        }
        let spilled: Option<i64> = it.cpus.iter().map(|r| r.spilled).sum();
        if let (Some(want), Some(got)) = (spilled, it.flushed_delta) {
            out.push(Check::eq(
                &format!("iter {n} NR_ANON_MAPPED aggregate moved by the spills"),
                want,
                got,
            ));
        }
        if let (Some(t), Some(m)) = (r.spill_threshold, it.max_abs_residue) {
            out.push(Check::rule(
                &format!("iter {n} per-CPU NR_ANON_MAPPED residues within the spill threshold"),
                format!("<= {t}"),
                format!("max {m}"),
                m <= t,
            ));
        }
        if let Some(c) = it.conserved_delta {
            out.push(Check::eq(
                &format!("iter {n} NR_ANON_MAPPED flushed + per-CPU moved by the recorded net"),
                0,
                c,
            ));
        }
        if let Some(rel) = it.release.as_ref().filter(|r| r.freed_after_ms.is_some()) {
            // No flush on batched kernels: the parent's pending sum loses exactly the freed
            // child's residues, whatever becomes of them (the verdict says what).
            out.push(Check::eq(
                &format!("iter {n} the freed child's residues left the parent's pending"),
                rel.child_residue,
                rel.before.1 - rel.after.1,
            ));
        }
        if let (Some(s0), Some(row), Some(charged)) = (
            it.stock_before_touch,
            it.cpus.iter().find(|c| c.cpu == p.alloc_cpu),
            it.charged_in_touch,
        ) && let Some(s1) = row.stock_after_touch
        {
            out.push(Check::rule(
                &format!("iter {n} stock of cpu{} after the touch", p.alloc_cpu),
                format!(
                    "{} (s0 {s0} + {kb}*ceil(({charged} charges - s0)/{kb}) - charges)",
                    stock_after(s0, charged, kb),
                ),
                s1.to_string(),
                s1 == stock_after(s0, charged, kb),
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

pub(super) fn verdict(r: &Results, checks: &[Check], page: u64) -> Verdict {
    let c = &r.convergence;
    let exact_iters = r
        .iterations
        .iter()
        .filter(|i| i.no_flush_between == Some(true))
        .count();
    let dying = r.dying_over_time.last().map_or(0, |d| d.1);
    let (status, answer) = if let Some(t) = r.spill_threshold {
        // Batched kernels: no flush; spills reach the parent at once, and a cgroup's residues
        // only when it is freed, if at all: what each release did is measured.
        let fates = release_fates(r.iterations.iter().filter_map(|i| i.release.as_ref()));
        let status = fates.status(c.shown_after_wait - c.exact_after_wait);
        (
            status,
            format!(
                "no rstat here: each CPU spills its delta into the child and every ancestor once it passes {t} pages and keeps the rest. {}\nAfter the run the parent's memory.stat anon read {} pages against an exact {} (drift {}, {} dying cgroup(s) left, {} ms after the last iteration).",
                fates.describe(),
                c.shown_after_wait,
                c.exact_after_wait,
                r.measured_drift,
                dying,
                c.waited_ms.round()
            ),
        )
    } else if c.shown_after_wait == c.exact_after_wait {
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
    if let Some(t) = r.spill_threshold {
        let ruled = r
            .iterations
            .iter()
            .filter(|i| i.cpus.iter().all(|c| c.predicted_residue.is_some()))
            .count();
        let spilled: i64 = r
            .iterations
            .iter()
            .flat_map(|i| &i.cpus)
            .filter_map(|c| c.spilled)
            .sum();
        let summary = format!(
            "{} iterations x {} CPUs x {} pages on a batched kernel (the seed's era, no rstat): each CPU's NR_ANON_MAPPED residue was predicted update by update from the spill rule (|x| > {t}, MEMCG_CHARGE_BATCH as measured) in {} of {} iterations, {} pages spilled into the aggregate in all; the checks compare both with what the kernel holds.\n{}",
            p.iterations,
            p.cpus.len(),
            p.batch_pages,
            ruled,
            r.iterations.len(),
            spilled,
            answer
        );
        return Verdict::judged(status, summary, checks.to_vec());
    }
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
