//! The text form on a report built by hand: every part shown, lines within the width.

use super::{render::*, *};
use crate::ledger::ByMember;

fn report() -> ExplainReport {
    let term = |id: &str, pages: i64| Term {
        term: id.into(),
        item: None,
        pages,
        bytes: pages * 4096,
        flushed: Some(pages - 3),
        pending_tree: Some(1),
        per_cpu: vec![0, 2],
        by_member: ByMember {
            own: pages,
            live: 0,
            dying: 0,
        },
        bound: None,
        unmapped: None,
        unmapped_per_cpu: None,
    };
    ExplainReport {
        cgroup: "/sys/fs/cgroup/memory/memcg-drift/123456-7890/a/very/long/child/path".into(),
        cgroup_id: 123456789,
        version: "v1".into(),
        kernel: "6.18.44-fc-v669-with-a-long-suffix".into(),
        page_size: 4096,
        root: false,
        usage_bytes: 2342912,
        explained_bytes: 2342912,
        unexplained_bytes: 0,
        unexplained_pages: 0,
        charge: ChargeBook {
            usage_bytes: 2342912,
            usage_pages: 572,
            max_bytes: None,
            peak_bytes: 9999999,
            failcnt: 0,
            memsw_usage_bytes: Some(1),
            swap_usage_bytes: None,
            kmem_usage_bytes: Some(2),
            tcpmem_usage_bytes: Some(3),
            cgroupfs_file: Some("memory.usage_in_bytes".into()),
            cgroupfs_usage_bytes: Some(2342912),
            cgroupfs_agrees: Some(true),
            cgroupfs_synthetic: false,
        },
        stat_book: vec![StatBookRow {
            item: "NR_SLAB_UNRECLAIMABLE_B".into(),
            key: Some("total_inactive_anon".into()),
            unit: Unit::Bytes,
            shown_bytes: 123456789012,
            pending_bytes: -123456789012,
            exact_bytes: 123456789012,
            cgroupfs_bytes: Some(1),
        }],
        terms: vec![term("lru.inactive_anon", 445), term("stock", 63)],
        not_read: vec![],
        missing_terms: vec![Missing {
            term: "lru_add".into(),
            reason: "per-CPU route check failed on CPU 3: this_cpu_off 0xffff != offset \
                     0xeeee and a long explanation that needs wrapping"
                .into(),
        }],
        mapped_view_unexplained_pages: Some(0),
        gap: Gap {
            pages: 73,
            unflushed_pages: 10,
            stock_pages: 63,
            lru_add_pages: 0,
            clamped_pages: 0,
            unexplained_pages: 0,
            outside_stat_pages: 0,
            flush_updates: Some(12),
            percpu_updates: vec![3, 4],
            spill_threshold_pages: None,
            bounds: vec![
                (
                    "unflushed".into(),
                    Bound {
                        pages: 128,
                        why: "a memory.stat read flushes first when more than 64 x 2 \
                              online CPUs updates are pending in the subtree"
                            .into(),
                    },
                ),
                (
                    "stock".into(),
                    Bound {
                        pages: 896,
                        why: "at most 64 pages per memcg per CPU (a refill above \
                          MEMCG_CHARGE_BATCH drains the slot) in 7 of 7 slot(s) x 2 CPUs"
                            .into(),
                    },
                ),
            ],
        },
        dying: vec![Dying {
            cgroup_id: 99999999,
            path: "a/very/long/path/of/a/dying/cgroup/that/goes/on/and/on".into(),
            usage_pages: 12345678,
            lru_pages: -5,
            lru_add_pages: 1,
            kmem_pages: 3,
            stock_pages: 64,
            stock_slots: 1,
        }],
        obj_stock: None,
        swap: None,
        swap_not_read: Some("the swap counter was not read".into()),
        charge_batch: Some(ChargeBatch {
            pages: 64,
            source: "measured: 130 one-page faults on CPU 1 in a fresh cgroup moved its \
                     charged usage in 3 steps of 64 pages"
                .into(),
        }),
        charge_batch_not_measured: None,
        snapshot: SnapshotInfo {
            attempts: 1,
            consistent: true,
            moved: None,
            memcgs: 2,
            live_descendants: 0,
            dying_descendants: 1,
            freed_during_read: 0,
            left_out: 0,
            cpus: 2,
            static_percpu_error: None,
            flush_mark: 0x1234,
            unclosed_retakes: 0,
            not_hierarchical_descendants: 0,
        },
    }
}

#[test]
fn text_fits_100_columns_and_ends_with_the_bottom_line() {
    for cpus in [false, true] {
        let text = render_text(&report(), cpus);
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} > 100: {line}",
                line.len()
            );
        }
        assert_eq!(
            text.lines().last(),
            Some("explained 2342912 of 2342912 bytes, unexplained 0")
        );
        assert_eq!(text.contains("    cpu 1"), cpus);
    }
}

#[test]
fn thousands_of_dying_descendants_list_the_largest_and_sum_the_rest() {
    let mut r = report();
    r.dying = (0..5000u64)
        .map(|i| Dying {
            cgroup_id: 1000 + i,
            path: format!("c{i}"),
            usage_pages: i,
            lru_pages: 2,
            lru_add_pages: 0,
            kmem_pages: 1,
            stock_pages: 0,
            stock_slots: 0,
        })
        .collect();
    let text = render_text(&r, false);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            w.next().is_some_and(|id| id.parse::<u64>().is_ok())
                && w.next().is_some_and(|p| p.starts_with('c'))
        })
        .collect();
    assert_eq!(rows.len(), DYING_SHOWN, "{text}");
    // The largest first: c4999 (4999 pages) leads.
    assert!(rows[0].contains("c4999"), "{text}");
    // The other 4980 summed: charge 0 + ... + 4979, LRU 2 each, KMEM 1 each.
    let rest = text
        .lines()
        .find(|l| l.contains("... 4980 more (--json lists them)"))
        .unwrap_or_else(|| panic!("no summary line:\n{text}"));
    let nums: Vec<i64> = rest
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(
        nums,
        vec![4980, 4980 * 4979 / 2, 2 * 4980, 0, 4980, 0],
        "{rest}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
}

#[test]
fn unexplained_names_what_is_not_read() {
    let mut r = report();
    r.unexplained_pages = 3;
    r.unexplained_bytes = 3 * 4096;
    r.missing_terms.clear();
    r.not_read = vec![Missing {
        term: "mlock_batch".into(),
        reason: "new mlocked folios waiting in a per-CPU mlock batch".into(),
    }];
    let text = render_text(&r, false);
    assert!(text.contains("mlock_batch"), "{text}");
    assert!(text.contains("pending update units"), "{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= WIDTH, "{line}");
    }
    r.unexplained_pages = 0;
    assert!(!render_text(&r, false).contains("mlock_batch"));
}

#[test]
fn synthetic_root_usage_is_labelled() {
    let mut r = report();
    r.root = true;
    r.charge.cgroupfs_synthetic = true;
    r.charge.cgroupfs_agrees = None;
    let text = render_text(&r, false);
    assert!(text.contains("synthesised by the kernel"), "{text}");
    assert!(text.contains("never charged"), "{text}");
}

#[test]
fn json_has_the_documented_top_level_fields() {
    let v = serde_json::to_value(report()).unwrap();
    for k in [
        "usage_bytes",
        "explained_bytes",
        "unexplained_bytes",
        "terms",
        "charge",
        "stat_book",
        "gap",
        "dying",
        "snapshot",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(v["terms"][0]["per_cpu"], serde_json::json!([0, 2]));
    assert_eq!(v["terms"][0]["by_member"]["self"], 445);
}
