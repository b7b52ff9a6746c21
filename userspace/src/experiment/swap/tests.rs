//! Unit tests of the swap experiment's checks and rendering.

use super::*;

fn params() -> Params {
    Params {
        limit: 32 << 20,
        grow_to: 96 << 20,
        swap_max: None,
        steps: 8,
        cpu: 0,
        swapoff: false,
    }
}

#[test]
fn options_are_checked_before_anything() {
    assert!(validate(&params(), 4096).is_ok());
    let bad = |f: &dyn Fn(&mut Params)| {
        let mut p = params();
        f(&mut p);
        validate(&p, 4096).unwrap_err().to_string()
    };
    assert!(bad(&|p| p.limit = 1 << 20).contains("--limit"));
    assert!(bad(&|p| p.grow_to = 32 << 20).contains("--grow-to"));
    assert!(bad(&|p| p.grow_to = 8 << 30).contains("--grow-to"));
    assert!(bad(&|p| p.steps = 0).contains("--steps"));
    assert!(bad(&|p| p.swap_max = Some(100)).contains("--swap-max"));
}

fn results() -> Results {
    let st = |phase: &str, pages: u64, usage: u64, kills: u64| Step {
        phase: phase.into(),
        pages,
        usage_bytes: usage,
        swap_bytes: Some(0),
        rss_anon_bytes: None,
        vm_swap_bytes: None,
        limit_hits: Some(10),
        oom_kills: Some(kills),
        faults: Some((3, 9000)),
        events: BTreeMap::new(),
    };
    Results {
        params: params(),
        page_size: 4096,
        swap_free_bytes: 1 << 30,
        steps: vec![
            st("grow", 12288, 30 << 20, 0),
            st("grow", 24576, 32 << 20, 0),
            st("limited", 3072, 32 << 20, 1),
        ],
        alive_after_grow: true,
        swapped_pages: 16384,
        swap_unexplained_pages: Some(0),
        memory_unexplained_pages: 0,
        swap_max_bytes: 64 << 20,
        killed: Some("killed by signal 9".into()),
        oom_kills_limited: Some(1),
        reread: Some(Reread {
            pages: 24576,
            not_resident_pages: 16500,
            faults: (7600, 8900),
            alive: true,
        }),
        swapoff: None,
    }
}

#[test]
fn checks_follow_the_kernel_rules() {
    let ok = results();
    assert!(
        checks(&ok, None).iter().all(|c| c.ok),
        "{:?}",
        checks(&ok, None)
    );
    let fails = |f: &dyn Fn(&mut Results)| {
        let mut r = results();
        f(&mut r);
        checks(&r, None).iter().filter(|c| !c.ok).count()
    };
    assert_eq!(fails(&|r| r.alive_after_grow = false), 1);
    assert_eq!(fails(&|r| r.steps[1].usage_bytes = (32 << 20) + 4096), 1);
    // 24576 pages grown under an 8192-page limit: at least 16384 in swap.
    assert_eq!(fails(&|r| r.swapped_pages = 16383), 1);
    assert_eq!(fails(&|r| r.swap_unexplained_pages = Some(-1)), 1);
    assert_eq!(fails(&|r| r.swap_unexplained_pages = None), 1);
    assert_eq!(fails(&|r| r.memory_unexplained_pages = 3), 1);
    assert_eq!(fails(&|r| r.killed = None), 1);
    assert_eq!(fails(&|r| r.killed = Some("exit code 1".into())), 1);
    assert_eq!(fails(&|r| r.oom_kills_limited = Some(2)), 1);
    // Rereading: one fault fewer than the pages out of memory, or killed.
    assert_eq!(fails(&|r| r.reread.as_mut().unwrap().faults.1 = 899), 1);
    assert_eq!(fails(&|r| r.reread.as_mut().unwrap().alive = false), 1);
}
