//! Unit tests of the batch-skew rules.

use super::release::release_fates;
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

#[test]
fn spill_rule_matches_hand_count() {
    // 60 faults from residue 5 at threshold 32: 5+28 = 33 spills (x = 0), then 32 more stay.
    assert_eq!(spill(5, vec![1; 60], 32), (32, 33));
    // A free of 30 one page at a time from 32: never past -32.
    assert_eq!(spill(32, vec![-1; 30], 32), (2, 0));
    // One update of -40 from 0 spills at once.
    assert_eq!(spill(0, [-40], 32), (0, -40));
    // Nothing happens without updates.
    assert_eq!(spill(-7, [], 32), (-7, 0));
}

#[test]
fn the_updates_of_one_cpu_come_from_its_phase_record() {
    use std::collections::BTreeMap;

    use crate::experiment::{PhaseRecord, StatRecord};
    let ph = |per_cpu: &[(usize, i64)], events: u64| PhaseRecord {
        name: "p".into(),
        start_ms: 0.0,
        end_ms: 1.0,
        error: None,
        stats: vec![StatRecord {
            cgroup: "c".into(),
            item: "NR_ANON_MAPPED".into(),
            unit: "pages".into(),
            per_cpu: per_cpu.iter().copied().collect::<BTreeMap<_, _>>(),
            total: per_cpu.iter().map(|(_, v)| v).sum(),
            events,
        }],
        charges: vec![],
        oom: vec![],
        lifecycle: vec![],
        lost_events: 0,
        skipped_events: None,
    };
    let one = ph(&[(1, 60)], 60);
    assert_eq!(
        updates_on(&one, "c", "NR_ANON_MAPPED", 1),
        Some(vec![1; 60])
    );
    assert_eq!(updates_on(&one, "c", "NR_ANON_MAPPED", 0), Some(vec![]));
    assert_eq!(updates_on(&one, "other", "NR_ANON_MAPPED", 1), Some(vec![]));
    assert_eq!(
        updates_on(&ph(&[(0, -30)], 1), "c", "NR_ANON_MAPPED", 0),
        Some(vec![-30])
    );
    // Updates of mixed sizes, or on two CPUs, cannot be told apart.
    assert_eq!(
        updates_on(&ph(&[(0, -30)], 7), "c", "NR_ANON_MAPPED", 0),
        None
    );
    assert_eq!(
        updates_on(&ph(&[(0, -30), (1, 60)], 90), "c", "NR_ANON_MAPPED", 0),
        None
    );
}

/// A release as measured: not freed (`freed` None) means held by a stock slot.
fn release(
    child_residue: i64,
    before: (i64, i64),
    after: (i64, i64),
    freed: Option<f64>,
) -> Release {
    Release {
        child_residue,
        before,
        after,
        freed_after_ms: freed,
        waited_ms: freed.unwrap_or(5000.0),
        next_child: None,
        held_by: freed
            .is_none()
            .then(|| "1 charge-stock slot(s)".to_string()),
        overlapped: false,
    }
}

#[test]
fn a_release_is_judged_by_where_the_residues_went() {
    let rel = release;
    // 5.10: aggregate 33, the child's -33 pending; freed: the aggregate takes them.
    let r = rel(-33, (33, -33), (0, 0), Some(12.0));
    assert_eq!((r.carried(), r.lost()), (-33, 0));
    assert_eq!(r.fate(), Fate::Flushed);
    // The same residues gone from the pending sum and never added: lost.
    let r = rel(-33, (33, -33), (33, 0), Some(12.0));
    assert_eq!((r.carried(), r.lost()), (0, -33));
    assert_eq!(r.fate(), Fate::Lost);
    // Not freed within the wait, whatever the numbers.
    assert_eq!(rel(-33, (33, -33), (33, -33), None).fate(), Fate::Stranded);
    // Nothing to carry.
    assert_eq!(rel(0, (7, 0), (7, 0), Some(3.0)).fate(), Fate::Empty);
    // Another dying cgroup freed in the same window.
    let mut both = rel(-33, (33, -33), (0, 0), Some(3.0));
    both.overlapped = true;
    assert_eq!(both.fate(), Fate::Unclear);
    // Half of it carried: something else moved the statistic.
    assert_eq!(
        rel(-33, (33, -33), (20, -10), Some(3.0)).fate(),
        Fate::Unclear
    );
}

#[test]
fn the_verdict_of_a_batched_run_comes_from_its_releases() {
    let rel = |after, freed| release(-3, (30, -3), after, freed);
    let none = release_fates([]);
    assert!(none.describe().contains("no release was measured"));
    assert_eq!(none.status(0), "flushes into the parent");
    assert_eq!(none.status(-3), "dying cgroups hold residues");
    let flushed = [rel((27, 0), Some(4.0)), rel((27, 0), Some(9.0))];
    let f = release_fates(&flushed);
    assert_eq!(
        (f.flushed, f.carried, f.freed_ms),
        (2, -6, Some((4.0, 9.0)))
    );
    assert_eq!(f.status(0), "flushes into the parent");
    let text = f.describe();
    assert!(
        text.contains("2 of 2 removed cgroups were freed 4-9 ms"),
        "{text}"
    );
    assert!(
        text.contains("rose by exactly the child's residues (-6 pages"),
        "{text}"
    );
    let mixed = [
        rel((27, 0), Some(4.0)),
        rel((30, 0), Some(5.0)),
        rel((30, -3), None),
    ];
    let f = release_fates(&mixed);
    assert_eq!((f.flushed, f.lost, f.stranded, f.lost_pages), (1, 1, 1, -3));
    assert_eq!(f.status(0), "loses residues at release");
    assert!(f.describe().contains("2 of 3 removed cgroups were freed"));
    assert!(
        f.describe()
            .contains("still dying 5000 ms after their rmdir, held by 1 charge-stock slot(s)")
    );
    let mut later = rel((27, 0), Some(700.0));
    later.next_child = Some((480, 20));
    let f = release_fates([&later]);
    assert_eq!((f.flushed, f.after_next), (1, 1));
    assert!(
        f.describe()
            .contains("1 of them only after the next iteration's workload")
    );
    let stranded = [rel((30, -3), None)];
    assert_eq!(
        release_fates(&stranded).status(3),
        "dying cgroups hold residues"
    );
}
