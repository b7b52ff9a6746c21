//! The charge section as text, and the one-line summaries of hooks that did not attach.

use super::*;

/// Cuts `s` to `width` characters, marking the cut.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(width - 3).collect::<String>())
    }
}

/// The last `width` characters of a path, marked when cut.
fn tail(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        s.to_string()
    } else {
        format!("...{}", s.chars().skip(n - (width - 3)).collect::<String>())
    }
}

/// Renders the section as text within 100 columns.
pub fn render_section(c: &ChargeSection) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s);
    // "N of M hooks attached (flavours)" for the hooks whose id starts with `prefix`.
    let summary = |prefix: &str| {
        let group: Vec<&HookOutcome> = c
            .hooks
            .iter()
            .filter(|o| o.id.starts_with(prefix))
            .collect();
        let mut flavours: Vec<&str> = group
            .iter()
            .filter_map(|o| o.used.as_ref().map(|u| u.flavour.name()))
            .collect();
        flavours.sort_unstable();
        flavours.dedup();
        format!(
            "{} of {} hooks attached ({})",
            group.iter().filter(|o| o.used.is_some()).count(),
            group.len(),
            flavours.join(", ")
        )
    };
    match &c.unavailable {
        Some(line) => {
            let _ = writeln!(s, "{}", clip(line, 100));
        }
        None => {
            let _ = writeln!(s, "charge path: {}", summary("charge."));
        }
    }
    let _ = writeln!(s, "oom path: {}", summary("oom."));
    for o in c.hooks.iter().filter(|o| o.used.is_none()) {
        if c.unavailable.is_some() && o.id.starts_with("charge.") {
            continue;
        }
        let why = o
            .failed
            .first()
            .map_or("no candidate".to_string(), |(f, _, e)| {
                format!("{f}: {}", short_reason(e))
            });
        let _ = writeln!(
            s,
            "{}",
            clip(&format!("  not attached: {} ({why})", o.id), 100)
        );
    }
    if c.available {
        let _ = writeln!(
            s,
            "{:<19} {:>4} {:>9} {:>9} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>6}",
            "CGROUP",
            "CPU",
            "REQ",
            "STOCK",
            "BATCH",
            "BATCHPG",
            "PARKED",
            "RETURN",
            "DRAIN",
            "UNCHG",
            "FAIL"
        );
        for r in &c.cpus {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{:<19} {:>4} {:>9} {:>9} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>6}",
                tail(&r.cgroup, 19),
                f.cpu,
                f.try_charge.pages,
                f.served_from_stock.pages,
                f.batches.events,
                f.batches.pages,
                f.refill_batch.pages,
                f.refill_return.pages,
                f.drains.pages,
                f.memory().uncharge.pages,
                f.failed.events
            );
        }
        let _ = writeln!(
            s,
            "  pages; REQ requested by try_charge, STOCK served from the per-CPU stock, BATCH and\n  \
             BATCHPG page_counter charges, PARKED batch surplus put in the stock, RETURN pages\n  \
             given back to it, DRAIN drained from it, UNCHG memory uncharges, FAIL failed charges"
        );
    }
    if c.inference.is_some() {
        let rows: Vec<&ChargeCpuRow> = c
            .cpus
            .iter()
            .filter(|r| r.figures.inferred_charged.events + r.figures.inferred_uncharged.events > 0)
            .collect();
        let _ = writeln!(
            s,
            "inferred from page_counter readings at stat events (estimates, labelled inferred):"
        );
        if !rows.is_empty() {
            let _ = writeln!(
                s,
                "{:<30} {:>4} {:>10} {:>12} {:>10} {:>12}",
                "CGROUP", "CPU", "RISES", "RISE-PAGES", "FALLS", "FALL-PAGES"
            );
        }
        for r in rows {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{:<30} {:>4} {:>10} {:>12} {:>10} {:>12}",
                tail(&r.cgroup, 30),
                f.cpu,
                f.inferred_charged.events,
                f.inferred_charged.pages,
                f.inferred_uncharged.events,
                f.inferred_uncharged.pages
            );
        }
        for cl in &c.inferred_closing {
            let _ = writeln!(
                s,
                "{}",
                clip(
                    &format!(
                        "  {}: page_counter {} pages at its last stat event, {} at the end",
                        cl.cgroup, cl.at_last_stat_event, cl.at_end
                    ),
                    100
                )
            );
        }
    }
    // Limits, reclaim and OOM per cgroup, summed over CPUs.
    let mut per: BTreeMap<(&str, u64), CpuCharge> = BTreeMap::new();
    for r in &c.cpus {
        per.entry((r.cgroup.as_str(), r.cgroup_id))
            .or_default()
            .merge(&r.figures);
    }
    for ((cg, _), f) in &per {
        let mut parts = Vec::new();
        for (n, ops) in &f.counters {
            if ops.limit_hits.events > 0 {
                parts.push(format!("{n} limit hit {}x", ops.limit_hits.events));
            }
        }
        if f.retries.events > 0 {
            parts.push(format!(
                "{} charges retried {} times",
                f.retries.events, f.retries.pages
            ));
        }
        if f.reclaim_rounds.events > 0 {
            parts.push(format!(
                "reclaim {} rounds, {} pages",
                f.reclaim_rounds.events, f.reclaimed.pages
            ));
        }
        if f.obj_refill.events + f.obj_drain.events > 0 {
            parts.push(format!(
                "object stock: {} refills {} B, {} drains {} B",
                f.obj_refill.events, f.obj_refill.pages, f.obj_drain.events, f.obj_drain.pages
            ));
        }
        if f.oom.events > 0 || f.oom_kills.events > 0 {
            parts.push(format!(
                "OOM invoked {}, kills {}",
                f.oom.events, f.oom_kills.events
            ));
        }
        if !parts.is_empty() {
            let _ = writeln!(s, "{}", clip(&format!("  {cg}: {}", parts.join("; ")), 100));
        }
        // On a line of its own, the path cut from the left, so that the events survive.
        if !f.memory_events.is_empty() {
            let ev: Vec<String> = f
                .memory_events
                .iter()
                .map(|(e, n)| match c.memory_event_names.get(e) {
                    Some(name) => format!("{name} {n}"),
                    None => format!("#{e} {n}"),
                })
                .collect();
            let _ = writeln!(
                s,
                "{}",
                clip(
                    &format!("  {}: memory.events {}", tail(cg, 40), ev.join(", ")),
                    100
                )
            );
        }
    }
    for e in &c.oom {
        let at = e.ts_ns.saturating_sub(c.start_ns) as f64 / 1e9;
        let who = if e.comm.is_empty() {
            format!("pid {}", e.pid)
        } else {
            format!("pid {} ({})", e.pid, e.comm)
        };
        let what = match e.kind {
            "invoked" => format!("OOM invoked in cgroup id {} by {who}", e.cgroup_id),
            "kill" => format!("OOM kill in cgroup id {}: {who}", e.cgroup_id),
            _ => format!("OOM victim {who}"),
        };
        let order = e.order.map(|o| format!(", order {o}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{}",
            clip(&format!("  +{at:.3}s cpu {}: {what}{order}", e.cpu), 100)
        );
    }
    if c.available || !c.oom.is_empty() {
        let k = &c.counters;
        let _ = writeln!(
            s,
            "charge/OOM: lost {} events (map full {}, read failed {}, frames {}, ring {}); {} \
             filtered",
            c.lost, k.map_full, k.read_failed, k.frame_lost, k.ring_full, k.filtered
        );
    }
    s
}

/// Shortens a kernel/aya error for the one-line summary.
fn short_reason(e: &str) -> String {
    if e.contains("Operation not permitted") || e.contains("os error 1)") {
        "EPERM".into()
    } else if e.contains("no kprobe PMU") {
        "no kprobe PMU".into()
    } else {
        e.chars().take(60).collect()
    }
}

/// The one-line "not attachable here" summary over the charge group's outcomes.
pub fn unavailable_line(outcomes: &[HookOutcome]) -> Option<String> {
    let charge: Vec<&HookOutcome> = outcomes
        .iter()
        .filter(|o| o.id.starts_with("charge."))
        .collect();
    if charge.is_empty() || charge.iter().any(|o| o.used.is_some()) {
        return None;
    }
    let mut by_flavour: BTreeMap<&'static str, String> = BTreeMap::new();
    for o in &charge {
        for (f, _, e) in &o.failed {
            let fam = match f {
                Flavour::Fentry | Flavour::Fexit => "fentry/fexit",
                Flavour::Kprobe | Flavour::Kretprobe => "kprobe/kretprobe",
                other => other.name(),
            };
            // The first reason per family: attach failures come before plan rejections, and
            // `try_charge_memcg` (the first hook) shows the kernel's own answer.
            by_flavour.entry(fam).or_insert_with(|| short_reason(e));
        }
    }
    let why = if by_flavour.is_empty() {
        "no candidate exists in this kernel".to_string()
    } else {
        by_flavour
            .iter()
            .map(|(f, r)| format!("{f}: {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some(format!("charge path: not attachable here ({why})"))
}
