//! The text form of an explain report (the JSON form is the report itself, docs/json.md).

use super::*;

/// Cuts `s` to `n` characters, keeping its end.
pub(super) fn tail(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        return s.to_string();
    }
    let keep: String = s.chars().skip(len - (n - 3)).collect();
    format!("...{keep}")
}

/// Word-wraps `text` to `WIDTH` columns with `indent` spaces.
pub(super) fn wrap(out: &mut String, indent: usize, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > WIDTH {
            let _ = writeln!(out, "{:indent$}{line}", "");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{:indent$}{line}", "");
    }
}

pub(super) fn term_label(t: &Term) -> String {
    match t.term.as_str() {
        "lru_add" => "lru_add batches (not on an LRU yet)".into(),
        "stock" => "charge stock (charged ahead)".into(),
        "kmem" => "kernel memory (MEMCG_KMEM)".into(),
        "sock" => "sockets (MEMCG_SOCK)".into(),
        "hugetlb" => "hugetlb (NR_HUGETLB)".into(),
        id => match id.strip_prefix("lru.") {
            Some(l) => format!("LRU {l}"),
            None => id.to_string(),
        },
    }
}

pub(super) fn signed(v: i64) -> String {
    format!("{v:+}")
}

/// Dying descendants listed one per line in the text report (the rest are summed in one).
pub(super) const DYING_SHOWN: usize = 20;

/// Renders the text report (at most 100 columns).
pub fn render_text(r: &ExplainReport, cpus: bool) -> String {
    let mut s = String::new();
    let c = &r.charge;
    let sn = &r.snapshot;
    let suffix = format!(
        " (id {}, cgroup {}, {})",
        r.cgroup_id,
        r.version,
        tail(&r.kernel, 24)
    );
    let room = WIDTH.saturating_sub("memcg-drift explain ".len() + suffix.chars().count());
    let _ = writeln!(
        s,
        "memcg-drift explain {}{suffix}",
        tail(&r.cgroup, room.max(12))
    );
    let _ = writeln!(
        s,
        "snapshot: {} memcg(s): self, {} live and {} dying descendant(s){}; {} CPUs; {}",
        sn.memcgs,
        sn.live_descendants,
        sn.dying_descendants,
        if sn.left_out > 0 {
            format!(", {} left out", sn.left_out)
        } else {
            String::new()
        },
        sn.cpus,
        if sn.consistent {
            format!("consistent on attempt {}", sn.attempts)
        } else {
            format!("NOT consistent after {} attempts", sn.attempts)
        }
    );
    if let Some(m) = &sn.moved {
        wrap(&mut s, 2, &format!("still moving: {m}"));
    }
    if sn.not_hierarchical_descendants > 0 {
        wrap(
            &mut s,
            2,
            &format!(
                "memory.use_hierarchy is 0: {} descendant(s) charge and count on their own, outside this ledger",
                sn.not_hierarchical_descendants
            ),
        );
    }
    if sn.unclosed_retakes > 0 {
        wrap(
            &mut s,
            2,
            &format!(
                "taken {} more time(s) because the ledger did not close (an update halfway on another CPU closes on a later snapshot)",
                sn.unclosed_retakes
            ),
        );
    }
    match (&r.charge_batch, &r.charge_batch_not_measured) {
        (Some(b), _) => wrap(
            &mut s,
            0,
            &format!("charge batch: {} pages ({})", b.pages, b.source),
        ),
        (None, Some(why)) => wrap(&mut s, 0, &format!("charge batch: {why}")),
        (None, None) => {}
    }
    if r.root {
        wrap(
            &mut s,
            2,
            "the root: its own pages are never charged (try_charge skips it), so its \
             page_counter holds its descendants' charges and the ledger covers them only",
        );
    }

    let _ = writeln!(
        s,
        "\ncharge book (page_counter){:>25}{:>16}",
        "pages", "bytes"
    );
    let _ = writeln!(
        s,
        "  {:<24}{:>25}{:>16}",
        "usage", c.usage_pages, c.usage_bytes
    );
    if let (Some(f), Some(v)) = (&c.cgroupfs_file, c.cgroupfs_usage_bytes) {
        let verdict = if c.cgroupfs_synthetic {
            "synthesised by the kernel from global statistics (v1 root), not the page_counter"
        } else {
            match c.cgroupfs_agrees {
                Some(true) => "equal, read before and after the snapshot",
                Some(false) => "DIFFERENT, though it did not move while reading",
                None => "moved while reading, not compared",
            }
        };
        wrap(&mut s, 4, &format!("{f} {v}: {verdict}"));
    }
    match c.max_bytes {
        Some(m) => {
            let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "limit", m / r.page_size, m);
        }
        None => {
            let _ = writeln!(s, "  {:<24}{:>25}", "limit", "unlimited");
        }
    }
    let _ = writeln!(
        s,
        "  {:<24}{:>25}{:>16}",
        "peak",
        c.peak_bytes / r.page_size,
        c.peak_bytes
    );
    let _ = writeln!(s, "  {:<24}{:>25}", "failcnt", c.failcnt);
    if let (Some(k), Some(t), Some(m)) = (
        c.kmem_usage_bytes,
        c.tcpmem_usage_bytes,
        c.memsw_usage_bytes,
    ) {
        let _ = writeln!(
            s,
            "  {:<24}{:>25}{:>16}  = MEMCG_KMEM, synchronously",
            "v1 kmem",
            k / r.page_size,
            k
        );
        let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "v1 tcpmem", t / r.page_size, t);
        let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "v1 memsw", m / r.page_size, m);
    }
    if let Some(sw) = c.swap_usage_bytes {
        let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "swap", sw / r.page_size, sw);
    }

    let _ = writeln!(
        s,
        "\nstat book (bytes; shown = what memory.stat shows without a flush)"
    );
    let _ = writeln!(
        s,
        "  {:<24}{:<20}{:>16}{:>16}{:>16}",
        "ITEM", "KEY", "SHOWN", "PENDING", "EXACT"
    );
    for row in &r.stat_book {
        if row.shown_bytes == 0 && row.pending_bytes == 0 && row.cgroupfs_bytes.unwrap_or(0) == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<24}{:<20}{:>16}{:>16}{:>16}",
            tail(&row.item, 23),
            row.key.as_deref().unwrap_or("-"),
            row.shown_bytes,
            signed(row.pending_bytes),
            row.exact_bytes
        );
    }

    let _ = writeln!(
        s,
        "\nledger: usage = terms + unexplained (pages){}",
        if cpus {
            ""
        } else {
            "; per-CPU detail with --cpus"
        }
    );
    let _ = writeln!(
        s,
        "  {:<36}{:>10}{:>10}{:>10}{:>10}  SELF/LIVE/DYING",
        "TERM", "PAGES", "FLUSHED", "PENDING", "PER-CPU"
    );
    for t in &r.terms {
        let per_cpu: i64 = t.per_cpu.iter().sum();
        let (fl, pe) = match (t.flushed, t.pending_tree) {
            (Some(f), Some(p)) => (f.to_string(), signed(p)),
            _ => (String::new(), String::new()),
        };
        let pc = if t.flushed.is_some() {
            signed(per_cpu)
        } else {
            per_cpu.to_string()
        };
        let _ = writeln!(
            s,
            "  {:<36}{:>10}{:>10}{:>10}{:>10}  {}/{}/{}",
            tail(&term_label(t), 35),
            t.pages,
            fl,
            pe,
            pc,
            t.by_member.own,
            t.by_member.live,
            t.by_member.dying
        );
        if cpus {
            for (cpu, v) in t.per_cpu.iter().enumerate().filter(|(_, v)| **v != 0) {
                let _ = writeln!(s, "    cpu {cpu:<4}{:>72}", signed(*v));
            }
        }
    }
    for m in &r.missing_terms {
        wrap(&mut s, 2, &format!("{:<36}not read: {}", m.term, m.reason));
    }
    let _ = writeln!(
        s,
        "  {:<36}{:>10}",
        "explained",
        r.explained_bytes / r.page_size as i64
    );
    let _ = writeln!(
        s,
        "  {:<36}{:>10}",
        "unexplained",
        signed(r.unexplained_pages)
    );
    if r.unexplained_pages != 0 && r.missing_terms.is_empty() {
        for m in &r.not_read {
            wrap(
                &mut s,
                2,
                &format!("{:<36}not read, may hold it: {}", m.term, m.reason),
            );
        }
    }
    if let Some(mv) = r.mapped_view_unexplained_pages {
        let _ = writeln!(
            s,
            "  {:<36}{:>10}  (cross-check: anon + file instead of LRU lists)",
            "unexplained, mapped view",
            signed(mv)
        );
    }

    let g = &r.gap;
    let _ = writeln!(s);
    wrap(
        &mut s,
        0,
        &format!(
            "gap usage - memory.stat book: {} pages = unflushed {} + stock {} + lru_add {}{} + \
             unexplained {}{}",
            signed(g.pages),
            signed(g.unflushed_pages),
            g.stock_pages,
            g.lru_add_pages,
            if g.outside_stat_pages != 0 {
                format!(" + not in memory.stat {}", g.outside_stat_pages)
            } else {
                String::new()
            },
            signed(g.unexplained_pages),
            if g.clamped_pages != 0 {
                format!(" - shown as 0 {}", g.clamped_pages)
            } else {
                String::new()
            }
        ),
    );
    for (what, Bound { pages, why }) in &g.bounds {
        let measured = match what.as_str() {
            "unflushed" if g.flush_updates.is_some() => {
                let fu = g.flush_updates.unwrap_or(0);
                let carried: i64 = g.percpu_updates.iter().sum();
                format!(
                    "{} pages; the kernel counts {fu} pending update units (+{carried} carried \
                     per CPU), {}",
                    signed(g.unflushed_pages),
                    if fu > *pages {
                        "over the bound: a memory.stat read now would flush first"
                    } else {
                        "under the bound"
                    }
                )
            }
            "unflushed" if g.unflushed_pages.abs() > *pages => {
                format!(
                    "{}, over the bound: a memory.stat read now would flush first",
                    signed(g.unflushed_pages)
                )
            }
            "unflushed" => signed(g.unflushed_pages),
            "stock" => g.stock_pages.to_string(),
            "lru_add" => g.lru_add_pages.to_string(),
            _ => String::new(),
        };
        wrap(
            &mut s,
            2,
            &format!("{what}: {measured}; kernel bound {pages}: {why}"),
        );
    }
    if let Some(o) = &r.obj_stock {
        let total: i64 = o.per_cpu_bytes.iter().sum();
        if total != 0 {
            wrap(
                &mut s,
                2,
                &format!(
                    "object stocks hold {total} bytes of MEMCG_KMEM pages for this subtree's \
                     objcgs (per CPU {:?}); already inside kmem, not a term",
                    o.per_cpu_bytes
                ),
            );
        }
    }

    if let Some(b) = &r.swap
        && (b.usage_pages != 0 || b.entries.pages != 0)
    {
        let e = &b.entries;
        let _ = writeln!(
            s,
            "\nswap book (pages): {} {} = MEMCG_SWAP {} (flushed {}, pending {}, per-CPU {}) \
             + unexplained {}",
            b.counter,
            b.usage_pages,
            e.pages,
            e.flushed.unwrap_or(0),
            signed(e.pending_tree.unwrap_or(0)),
            signed(e.per_cpu.iter().sum()),
            signed(b.unexplained_pages)
        );
        if cpus {
            for (cpu, v) in e.per_cpu.iter().enumerate().filter(|(_, v)| **v != 0) {
                let _ = writeln!(s, "    cpu {cpu:<4}{:>72}", signed(*v));
            }
        }
    }

    if !r.dying.is_empty() {
        let _ = writeln!(s, "\ndying descendants (pages)");
        let _ = writeln!(
            s,
            "  {:<12}{:<30}{:>12}{:>10}{:>10}{:>10}{:>10}",
            "ID", "PATH", "CHARGE", "LRU", "LRU_ADD", "KMEM", "STOCK"
        );
        // The largest holders first; a leak of thousands is summed, not listed (`--json`
        // lists every one).
        let mut shown: Vec<&Dying> = r.dying.iter().collect();
        shown.sort_by_key(|d| std::cmp::Reverse(d.usage_pages));
        let rest = shown.split_off(shown.len().min(DYING_SHOWN));
        for d in &shown {
            let _ = writeln!(
                s,
                "  {:<12}{:<30}{:>12}{:>10}{:>10}{:>10}{:>10}",
                d.cgroup_id,
                tail(&d.path, 29),
                d.usage_pages,
                d.lru_pages,
                d.lru_add_pages,
                d.kmem_pages,
                d.stock_pages
            );
        }
        if !rest.is_empty() {
            let sum = |f: fn(&Dying) -> i64| rest.iter().map(|d| f(d)).sum::<i64>();
            let _ = writeln!(
                s,
                "  {:<42}{:>12}{:>10}{:>10}{:>10}{:>10}",
                format!("... {} more (--json lists them)", rest.len()),
                sum(|d| d.usage_pages as i64),
                sum(|d| d.lru_pages),
                sum(|d| d.lru_add_pages),
                sum(|d| d.kmem_pages),
                sum(|d| d.stock_pages)
            );
        }
        wrap(
            &mut s,
            2,
            "CHARGE is the dying cgroup's own page_counter: kernel memory freed after its \
             offline is uncharged from the parent (objcgs are reparented), so it can stay high",
        );
    }
    let _ = writeln!(
        s,
        "\nexplained {} of {} bytes, unexplained {}",
        r.explained_bytes, r.usage_bytes, r.unexplained_bytes
    );
    s
}
