//! `memcg-drift run churn` against the real kernel, at a small size.
//!
//! The rules the expectations come from (6.18 kernel/cgroup/cgroup.c and mm/memcontrol.c;
//! 6.1 and 6.12 follow the same path):
//! - A removed memcg stays *dying* (offline, still linked in its parent's `children` list)
//!   while anything holds a css reference; every charged folio does (`commit_charge` takes
//!   one). A tmpfs/page-cache file written from the cgroup keeps its pages charged to it until
//!   the file is removed, so each pinned cgroup must still be dying after the hold, with at
//!   least its file's pages on an LRU list (or in an lru_add batch on the way there). At least,
//!   not exactly: the job may also fault in page cache nobody had cached (a library evicted
//!   meanwhile), which is charged to it too.
//! - v2 `cgroup.stat` `nr_dying_descendants` counts the same cgroups once the releases have
//!   settled; v1 has no such file.
//! - An unpinned memcg is released without a timer: `kill_css` waits one RCU grace period
//!   (`percpu_ref_kill_and_confirm`), the offline work (`css_killed_work_fn`) drops the base
//!   reference, and the last `css_put` queues `css_release_work_fn`, which unlinks it
//!   (`list_del_rcu(&css->sibling)`, cgroup.c:5636). The job's anonymous pages were uncharged
//!   at its exit and its kernel memory was reparented at offline (`memcg_offline_kmem`), the
//!   charge stocks drained (`drain_all_stock`, memcontrol.c:3895). The time is not exact (RCU
//!   and workqueues), so the tests give it a generous bound (20 s, far above the RCU grace
//!   period and work latencies even under QEMU's software emulation) and assert that the
//!   release happened, not when.

use integration_tests::{require_kernel, serial};
use memcg_drift::{
    cgroup::{CgroupVersion, MemoryHierarchy, detect_layout},
    experiment::{Common, Report, churn, render_text},
};
use serde_json::Value;

fn hier() -> MemoryHierarchy {
    detect_layout().unwrap().memory.unwrap()
}

fn params(cycles: u32, pin_every: u32) -> churn::Params {
    churn::Params {
        cycles,
        siblings: 1,
        pin_every,
        pin_pages: 1,
        hold_ms: 20_000,
        release_wait_ms: 20_000,
        poll_ms: 10,
        job_pages: 8,
        sibling_pages: 32,
    }
}

fn run(p: churn::Params) -> (Report, Value, String) {
    let h = hier();
    let r = churn::run(&h, p, &Common::default()).unwrap();
    // Nothing of the run is left behind.
    assert!(
        !h.root.join("memcg-drift").join(&r.run_id).exists(),
        "run cgroup left behind"
    );
    assert!(
        !std::path::Path::new(&format!("/run/memcg-drift/{}.files", r.run_id)).exists(),
        "scratch directory left behind"
    );
    let json = serde_json::to_value(&r).unwrap();
    let text = render_text(&r);
    (r, json, text)
}

/// The peak the report gives is the largest count any poll saw.
fn assert_peak_is_max(res: &Value) {
    let series = res["dying_over_time"].as_array().unwrap();
    assert!(!series.is_empty());
    let max = series
        .iter()
        .map(|p| p["walk"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(res["peak_dying"].as_u64().unwrap(), max, "{series:?}");
}

#[test]
fn churn_pinned_cgroups_stay_dying_until_their_files_go() {
    if !require_kernel("churn_pinned_cgroups_stay_dying_until_their_files_go") {
        return;
    }
    let _g = serial();
    let n = 4;
    let mut p = params(n, 1);
    // The pinned cgroups stay for the whole hold: keep it short.
    p.hold_ms = 500;
    let (r, json, text) = run(p);
    let res = &json["results"];
    let v2 = hier().version == CgroupVersion::V2;

    // Exactly N dying cgroups under the run after N removals, each one ours and pinned.
    assert_eq!(
        res["end_of_hold"]["dying_walk"].as_u64(),
        Some(n as u64),
        "{text}"
    );
    if v2 {
        assert_eq!(
            res["end_of_hold"]["nr_dying_descendants"].as_u64(),
            Some(n as u64),
            "{text}"
        );
    } else {
        assert!(res["end_of_hold"]["nr_dying_descendants"].is_null());
    }
    let churned = res["churned"].as_array().unwrap();
    assert_eq!(churned.len(), n as usize);
    let mut only_file = 0;
    for c in churned {
        let name = c["cgroup"].as_str().unwrap();
        assert_eq!(c["pinned"], true);
        assert_eq!(c["dying_at_end_of_hold"], true, "{name}: {text}");
        let h = &c["held_at_end_of_hold"];
        let lru = h["lru_pages"].as_i64().unwrap() + h["lru_add_pages"].as_i64().unwrap();
        assert!(lru >= 1, "{name} holds {lru} LRU pages: {text}");
        // Its pages sit on an LRU list or still in a CPU's lru_add batch (not drained yet).
        assert!(
            h["pinned_by"].as_array().unwrap().iter().any(|p| {
                let p = p.as_str().unwrap();
                p.contains("LRU page") || p.contains("lru_add batches")
            }),
            "{name}: {h}"
        );
        // Seen dying by the polls, then released once its file was removed, unless it held
        // other page cache too (on a disk file system: metadata blocks read when its file was
        // created), which stays charged to it after the unpin.
        assert!(c["first_dying_seen_ms"].as_f64().is_some(), "{name}");
        assert_eq!(
            c["extra_lru_pages"].as_i64().unwrap(),
            lru - 1,
            "{name}: {text}"
        );
        if lru == 1 {
            only_file += 1;
            assert!(
                c["released_after_unpin_ms"].as_f64().is_some(),
                "{name}: {text}"
            );
            let life = c["lifetime_ms"].as_array().unwrap();
            let hi = life[1].as_f64().unwrap();
            assert!(
                hi >= 500.0,
                "{name} was pinned through the hold, lifetime {hi}"
            );
        }
    }
    if res["scratch_on_tmpfs"] == true {
        // A tmpfs file is shmem and nothing else: on the LRU lists a pinned cgroup holds its
        // file's page at most. Its CPU's lru_add batch may still hold the job's freed pages as
        // well (each charged folio keeps the css; seen once on the 6.18 guest: 8 pages), which
        // go when that batch drains, so the file-only count can be lower; not its lists.
        for c in churned.iter().filter(|c| c["pinned"] == true) {
            let on_lists = c["held_at_end_of_hold"]["lru_pages"].as_i64().unwrap();
            assert!(
                on_lists <= 1,
                "{}: {on_lists} pages on LRU lists: {text}",
                c["cgroup"]
            );
        }
    }
    assert_eq!(res["pinned"].as_u64(), Some(n as u64));
    assert!(res["pinned_released_after_unpin"].as_u64().unwrap() >= only_file as u64);
    assert_eq!(res["unpinned"].as_u64(), Some(0));
    // All N were dying together (none is released before its file goes).
    assert_eq!(res["peak_dying"].as_u64(), Some(n as u64), "{text}");
    assert_peak_is_max(res);
    assert_eq!(res["poll"]["interval_ms"].as_u64(), Some(10));
    assert!(res["poll"]["method"].as_str().unwrap().contains("polled"));
    assert!(res["poll"]["polls"].as_u64().unwrap() > 10);
    assert!(res["sibling_rounds"][0].as_u64().unwrap() >= 1);
    assert!(r.verdict.checks.iter().all(|c| c.ok), "{text}");
    assert!(r.verdict.status.contains("page cache keeps"), "{text}");

    // The phases and the ledger.
    for k in 0..n {
        assert!(r.phase(&format!("churn-{k} rmdir")).is_some());
    }
    assert!(r.phase("remove the pinning files").is_some());
    assert_eq!(r.ledgers.len(), 1);
    assert_eq!(
        r.ledgers[0].json["dying"].as_array().unwrap().len(),
        n as usize
    );

    // Text.
    for want in [
        "churn: 4 cgroups, 1 sibling(s)",
        "polled css walk",
        "every 10 ms",
        "peak dying: 4",
        "dying: ",
        "LRU page(s) charged to it",
        "dying descendants (pages)",
        "verdict: page cache keeps removed cgroups dying until it goes",
        "[ok] pinned churned cgroups still dying at the end of the hold",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    if v2 {
        assert!(text.contains("nr_dying_descendants 4"), "{text}");
    } else {
        assert!(text.contains("(v1: no cgroup.stat)"), "{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn churn_unpinned_cgroups_are_released() {
    if !require_kernel("churn_unpinned_cgroups_are_released") {
        return;
    }
    let _g = serial();
    let n = 4;
    // 5 s is ample for an RCU grace period and two work items; a cgroup still dying then is
    // held by something the report must name.
    let (r, json, text) = run(churn::Params {
        hold_ms: 5_000,
        ..params(n, 0)
    });
    let res = &json["results"];
    // Nothing pins an unpinned job's cgroup but what the kernel itself still holds for it: the
    // release is asynchronous (RCU + workqueue) but prompt, unless freed folios of the job
    // still sit in a CPU's lru_add batch (each charged folio holds a css reference; an idle
    // CPU drains its batch only when it fills or someone drains it). So: released within
    // the hold, or dying at its end with lru_add pages (or kernel memory) named as the pin.
    // The lifecycle tracepoints attach on every kernel this tool targets (BTF tracepoints).
    assert!(
        json["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["hook"] == "lifecycle.release"
                && h["used"]
                    .as_str()
                    .is_some_and(|u| u.contains("cgroup_release"))),
        "{}",
        json["hooks"]
    );
    let mut released_n = 0;
    for c in res["churned"].as_array().unwrap() {
        let name = c["cgroup"].as_str().unwrap();
        assert_eq!(c["pinned"], false);
        let removed = c["removed_ms"].as_f64().unwrap();
        match c["released_by_ms"].as_f64() {
            Some(released) => {
                released_n += 1;
                assert!(released > removed, "{name}");
                // The kernel's own times: the rmdir tracepoint fires before rmdir returns,
                // the cgroup's release after its memcg left the css walk.
                let rm = c["traced_rmdir_ms"].as_f64().expect("traced rmdir");
                assert!(rm <= removed, "{name}: traced rmdir {rm} after {removed}");
                if let Some(rel) = c["traced_release_ms"].as_f64() {
                    assert!(rel >= c["last_seen_ms"].as_f64().unwrap(), "{name}");
                    assert_eq!(c["traced_lifetime_ms"].as_f64(), Some(rel - rm));
                }
                let life = c["lifetime_ms"].as_array().unwrap();
                assert!(life[0].as_f64().unwrap() <= life[1].as_f64().unwrap());
            }
            None => {
                assert_eq!(c["dying_at_end_of_hold"], true, "{name}: {text}");
                let pins = c["held_at_end_of_hold"]["pinned_by"].to_string();
                assert!(
                    pins.contains("lru_add") || pins.contains("kernel-memory"),
                    "{name} outlived the hold, pinned by {pins}: {text}"
                );
            }
        }
    }
    assert_eq!(
        res["unpinned_released_in_hold"].as_u64(),
        Some(released_n),
        "{text}"
    );
    if released_n == n as u64 {
        assert_eq!(res["end_of_hold"]["dying_walk"].as_u64(), Some(0));
        if hier().version == CgroupVersion::V2 {
            assert_eq!(res["end_of_hold"]["nr_dying_descendants"].as_u64(), Some(0));
        }
        assert_eq!(res["unpinned_lifetime"]["count"].as_u64(), Some(n as u64));
    }
    assert!(res["unpin_ms"].is_null());
    assert_peak_is_max(res);
    if released_n < n as u64 {
        // The verdict's check fails then (a real finding, not the tool's fault).
        return;
    }
    assert!(r.verdict.checks.iter().all(|c| c.ok), "{text}");
    assert_eq!(r.verdict.status, "dying cgroups released promptly");
    for want in [
        "Unpinned: 4 of 4 released within the hold",
        "released",
        "[ok] unpinned churned cgroups released",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

#[test]
fn churn_bad_options_are_refused_before_anything_is_created() {
    if !require_kernel("churn_bad_options_are_refused_before_anything_is_created") {
        return;
    }
    let _g = serial();
    for args in [
        &["--cycles", "0"][..],
        &["--cycles", "10001"],
        &["--hold", "5x"],
        &["--poll", "2s"],
        &["--pin-pages", "0"],
    ] {
        let out = std::process::Command::new(integration_tests::bin())
            .args(["run", "churn"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?}: no error message");
        assert!(out.stdout.is_empty(), "{args:?}: printed a report");
    }
}

/// `run churn --svg DIR`: dying cgroups over time and each churned cgroup's lifetime.
#[test]
fn churn_plots() {
    let test = "churn_plots";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().to_str().unwrap();
    // The plots are drawn whatever the verdict (a release later than the short hold can fail
    // a timing check under load).
    let doc = integration_tests::run_report(&[
        "run", "churn", "--cycles", "4", "--hold", "300ms", "--json", "--svg", svg,
    ]);
    let run_id = doc["run_id"].as_str().unwrap();
    let p = integration_tests::check_svg(
        &dir.path().join("churn-dying.svg"),
        &[run_id, "dying (css walk)", "dying cgroups", "ms"],
    );
    assert!(p.polylines >= 1, "{p:?}");
    integration_tests::check_svg(
        &dir.path().join("churn-lifetimes.svg"),
        &[
            "unpinned",
            "pinned by page cache",
            "lifetime after rmdir (ms)",
        ],
    );
}
