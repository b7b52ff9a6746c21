//! Unit tests of the threshold options and checks.

use super::*;

fn params() -> Params {
    Params {
        thresholds: vec![1 << 20, 2 << 20],
        grow_to: 4 << 20,
        step_pages: 1,
        cpu: 0,
        root: false,
    }
}

#[test]
fn options_are_checked() {
    assert!(validate(&params(), 4096).is_ok());
    let bad = |f: &dyn Fn(&mut Params)| {
        let mut p = params();
        f(&mut p);
        validate(&p, 4096).unwrap_err().to_string()
    };
    assert!(bad(&|p| p.thresholds.clear()).contains("--threshold"));
    assert!(bad(&|p| p.thresholds = vec![2 << 20, 1 << 20]).contains("ascending"));
    assert!(bad(&|p| p.grow_to = 2 << 20).contains("--grow-to"));
    assert!(bad(&|p| p.step_pages = 0).contains("--step"));
    assert!(bad(&|p| p.thresholds = vec![100]).contains("a page"));
}

#[test]
fn checks_want_one_signal_each_way_within_the_interval() {
    let ev = |t: u64, dir: &str, held: u64, crossed: Option<u64>| Event {
        threshold: t,
        registered_bytes: t,
        direction: dir.into(),
        pages_held: held,
        signals: 1,
        usage_bytes: 0,
        crossed_at_pages: crossed,
        lag_pages: crossed.map(|c| held.abs_diff(c)),
        gap_pages: 0,
        stock_pages: 0,
        unflushed_pages: 0,
        lru_add_pages: 0,
        clamped_pages: 0,
        unexplained_pages: 0,
        kmem_uncounted: false,
        outside_stat_pages: 0,
        usage_before_bytes: None,
        peak_before_bytes: None,
        peak_bytes: None,
        notified: None,
        step_ms: None,
    };
    let mut r = Results {
        params: Params {
            thresholds: vec![1 << 20],
            ..params()
        },
        page_size: 4096,
        events_target: THRESHOLDS_EVENTS_TARGET,
        events: vec![
            ev(1 << 20, "up", 300, Some(200)),
            ev(1 << 20, "down", 150, Some(190)),
        ],
        steps: 0,
        baseline_bytes: 0,
        mechanism: Mechanism::V1Thresholds,
        charge_batch: None,
        root: None,
        peak_source: None,
    };
    assert!(checks(&r).iter().all(|c| c.ok), "{:?}", checks(&r));
    // Fired before the usage was past it, or too late, or twice: failures.
    r.events[0].crossed_at_pages = None;
    r.events[0].lag_pages = None;
    assert!(!checks(&r).iter().all(|c| c.ok));
    r.events[0] = ev(1 << 20, "up", 400, Some(200));
    assert!(!checks(&r).iter().all(|c| c.ok));
    r.events[0] = ev(1 << 20, "up", 300, Some(200));
    r.events.push(ev(1 << 20, "down", 100, Some(190)));
    assert!(!checks(&r).iter().all(|c| c.ok));
}

#[test]
fn v2_checks_want_the_crossing_step_one_batch_and_a_notification() {
    let page = 4096;
    let high = 1000 * page;
    let ev = |before: u64, peak: u64, notified: bool| Event {
        threshold: high,
        registered_bytes: high,
        direction: "up".into(),
        pages_held: 0,
        signals: 1,
        usage_bytes: (before + 2) * page,
        crossed_at_pages: Some(0),
        lag_pages: Some(0),
        gap_pages: 0,
        stock_pages: 0,
        unflushed_pages: 0,
        lru_add_pages: 0,
        clamped_pages: 0,
        unexplained_pages: 0,
        kmem_uncounted: false,
        outside_stat_pages: 0,
        usage_before_bytes: Some(before * page),
        peak_before_bytes: Some(before * page),
        peak_bytes: Some(peak * page),
        notified: Some(notified),
        step_ms: Some(1.0),
    };
    let mut r = Results {
        params: Params {
            thresholds: vec![high],
            ..params()
        },
        page_size: page,
        events_target: THRESHOLDS_EVENTS_TARGET,
        events: vec![ev(990, 1054, true)],
        steps: 0,
        baseline_bytes: 0,
        mechanism: Mechanism::V2High,
        charge_batch: Some(64),
        root: None,
        peak_source: None,
    };
    assert!(checks(&r).iter().all(|c| c.ok), "{:?}", checks(&r));
    // Already above before the step (the event came late), not one batch in the step, not
    // notified, or no event at all: failures. (The usage after may be back under memory.high:
    // reclaim; the peak keeps the crossing.)
    for bad in [
        ev(1001, 1065, true),
        ev(990, 1055, true),
        ev(990, 999, true),
        ev(990, 1054, false),
    ] {
        r.events = vec![bad];
        assert!(!checks(&r).iter().all(|c| c.ok), "{:?}", r.events);
    }
    r.events.clear();
    assert!(!checks(&r).iter().all(|c| c.ok));
    // Older records (no mechanism) read as v1.
    let mut v = serde_json::to_value(&r).unwrap();
    v.as_object_mut().unwrap().remove("mechanism");
    let old: Results = serde_json::from_value(v).unwrap();
    assert_eq!(old.mechanism, Mechanism::V1Thresholds);
}

#[test]
fn root_checks_want_the_sum_and_a_signal_where_its_usage_was_seen_past() {
    let base = Results {
        params: Params {
            thresholds: vec![1 << 20],
            root: true,
            ..params()
        },
        page_size: 4096,
        events_target: THRESHOLDS_EVENTS_TARGET,
        events: vec![],
        steps: 0,
        baseline_bytes: 0,
        mechanism: Mechanism::V1Thresholds,
        charge_batch: None,
        root: None,
        peak_source: None,
    };
    let ev = |dir: &str, held: u64, crossed: u64| RootEvent {
        threshold: 1 << 20,
        registered_bytes: 1 << 20,
        direction: dir.into(),
        pages_held: held,
        signals: 1,
        usage_bytes: 0,
        crossed_at_pages: Some(crossed),
        lag_pages: Some(held.abs_diff(crossed)),
        stat_bytes: None,
    };
    let mut root = RootResults {
        formula: Formula {
            source: "global".into(),
            ..Formula::default()
        },
        // The root's bound is a page more than t's (129 + 1 at a step of one page): up, its
        // statistics count a page after its charge ran the check; down, see below.
        events: vec![ev("up", 379, 250)],
        seen_past: [
            ("1048576 up".to_string(), Some(250)),
            // The rest of the machine kept the usage above it on the way down.
            ("1048576 down".to_string(), None),
        ]
        .into(),
        rest_pages: Some((1000, 1100)),
        quiet_bound_pages: Some(112),
        ..RootResults::default()
    };
    let root_checks = |root: &RootResults| root::checks(&base, root);
    let c = root_checks(&root);
    assert!(c.iter().all(|c| c.ok), "{c:?}");
    // Not expected where never seen past, so: the formula, one signal and its lag.
    assert_eq!(c.len(), 3, "{c:?}");
    let failing = |root: &RootResults| -> Vec<String> {
        root_checks(root)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.what)
            .collect()
    };
    // 130 page events late on the way up is past even the root's bound.
    root.events[0] = ev("up", 380, 250);
    assert_eq!(
        failing(&root),
        ["root 1048576 bytes up: fired after its usage crossed, within a check interval"]
    );
    root.events[0] = ev("up", 379, 250);
    // Seen past on the way down but never signalled.
    root.seen_past.insert("1048576 down".into(), Some(200));
    assert_eq!(
        failing(&root),
        ["root 1048576 bytes: signalled on the way down"]
    );
    // Down, the check of the crossing's step may read the sum before the flush that showed
    // the crossing to the run: a check interval (129) later is still in time, 130 is not.
    root.events.push(ev("down", 71, 200));
    assert_eq!(failing(&root), Vec::<String>::new());
    root.events[1] = ev("down", 70, 200);
    assert_eq!(
        failing(&root),
        ["root 1048576 bytes down: fired after its usage crossed, within a check interval"]
    );
    // Signalled a check interval too late.
    root.events[1] = ev("down", 10, 200);
    assert_eq!(
        failing(&root),
        ["root 1048576 bytes down: fired after its usage crossed, within a check interval"]
    );
    // A machine whose other memory moved more than folding explains: only the formula.
    root.rest_pages = Some((1000, 1113));
    assert_eq!(root_checks(&root).len(), 1);
    root.rest_pages = Some((1000, 1100));
    // A usage that is neither sum.
    root.events[1] = ev("down", 150, 200);
    root.formula.source = "neither".into();
    assert_eq!(
        failing(&root),
        ["the root's usage is a sum of counters, not a page_counter"]
    );
}

#[test]
fn a_root_crossing_counts_from_the_latest_time_the_usage_went_past() {
    let mut c = root::Crossing::default();
    c.see(false, 10);
    assert_eq!(c, root::Crossing::default());
    c.see(true, 263);
    c.see(true, 264);
    assert_eq!((c.first, c.latest), (Some(263), Some(263)));
    // The rest of the machine took the usage back under it for a step.
    c.see(false, 300);
    assert_eq!((c.first, c.latest), (Some(263), None));
    c.see(true, 301);
    c.see(true, 392);
    assert_eq!((c.first, c.latest), (Some(263), Some(301)));
}

#[test]
fn equal_sums_are_both_not_a_guess() {
    assert_eq!(root::classify(10, 10, 10, 12), "global");
    assert_eq!(root::classify(12, 12, 10, 12), "memcg");
    // An idle machine whose counters are all folded: nothing tells the two apart.
    assert_eq!(root::classify(10, 10, 10, 10), "both");
    assert_eq!(root::classify(10, 11, 10, 10), "moving");
    assert_eq!(root::classify(10, 10, 11, 12), "neither");
}
