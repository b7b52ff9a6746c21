//! Unit tests of the batch-skew rules.

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
