//! `run churn`: the kernel's rules checked against the results, and the verdict.

use super::*;

pub(super) fn checks(r: &Results) -> Vec<Check> {
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
    // batch drains), a charge stock slot (a cached memcg holds a css reference until the slot
    // is drained; the drain its offline asks for runs later on the other CPUs, and is skipped
    // when another drain holds percpu_charge_mutex: drain_all_stock's trylock) or kernel memory
    // not freed yet. Anything else would be unexplained.
    let explained = r
        .churned
        .iter()
        .filter(|c| !c.pinned && c.dying_at_end_of_hold)
        .filter(|c| {
            c.held_at_end_of_hold
                .as_ref()
                .is_some_and(|h| h.lru_add_pages > 0 || h.stock_slots > 0 || h.kmem_pages > 0)
        })
        .count();
    out.push(Check::rule(
        "unpinned churned cgroups released within the hold (or held only by lru_add batches, charge stocks or kernel memory)",
        r.unpinned.to_string(),
        format!(
            "{} released + {explained} held by lru_add batches, charge stocks or kernel memory",
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
         ones held by lru_add batches, charge stocks or kernel memory)",
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
pub(super) fn in_lru_add(c: &Churned) -> i64 {
    c.held_at_end_of_hold
        .as_ref()
        .map_or(0, |h| h.lru_add_pages)
}

/// What a check over `n` cgroups measured: `n of n`, or how many held and the first that did
/// not.
pub(super) fn held_by_all(n: usize, bad: &[String]) -> String {
    if bad.is_empty() {
        format!("{n} of {n}")
    } else {
        format!("{} of {n}; not: {}", n - bad.len(), few(bad))
    }
}

/// Names listed in a check or a summary line before the rest is counted.
pub(super) const LISTED: usize = 10;

/// At most [`LISTED`] items, then how many more.
pub(super) fn few(items: &[String]) -> String {
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

pub(super) fn fmt_spread(s: &Option<Spread>) -> String {
    match s {
        Some(s) => format!(
            "{} cgroup(s): min {:.1} ms, median {:.1} ms, max {:.1} ms",
            s.count, s.min_ms, s.median_ms, s.max_ms
        ),
        None => "none".into(),
    }
}

pub(super) fn verdict(r: &Results, checks: &[Check]) -> Verdict {
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
