//! `memcg-drift run threshold` against the real kernel (v1: the host and the v1 guests; v2:
//! the v2 guests).
//!
//! What is exact on v1: each threshold is signalled exactly once on the way up and once on
//! the way down (`__mem_cgroup_threshold` signals a crossing once), never before the
//! page_counter was seen past it, and within one check interval after
//! (`memcg1_event_ratelimit`: every `THRESHOLDS_EVENTS_TARGET` page events of the memcg on the
//! workload's CPU; steps of one page make the lag exact to the page); the ledger at each event
//! closes to 0 pages.
//!
//! On v2 (each threshold as `memory.high`): the first `high` events come in the very step whose
//! charge took the page_counter past `memory.high` (it is compared only when a charge moved
//! the page_counter, and the event is raised before the faulting task is back in user space;
//! the watermark `memory.peak` keeps the crossing when reclaim undoes it), that charge being
//! exactly one batch (steps near it are shorter than one), a poll on
//! `memory.events` sees the notification, and the ledger then closes to 0 pages. How many
//! events that step raises is not exact (the throttling retries add some when reclaim frees
//! nothing), only that there is at least one.
//!
//! `--root` (v1): the root's usage is exactly one of two sums, by kernel version (kernel.md
//! §5.2: the global `nr_file_pages + nr_anon_pages` from 6.5, the root memcg's statistics
//! before), and each root threshold fires on the way up after its usage was seen past it,
//! within a check interval. The root's usage also moves with the rest of the machine, so that
//! the usage is still past the threshold when the event is read assumes a quiet machine (CI's).

use integration_tests::{assert_refused, no_runs_left, require_kernel, serial};
use memcg_drift::{
    cgroup::{CgroupVersion, detect_layout},
    experiment::threshold::THRESHOLDS_EVENTS_TARGET,
};

/// The gap between the usage and what memory.stat shows at an event is made of the ledger's
/// parts (its identity, carried into the record).
fn assert_gap_identity(e: &serde_json::Value) {
    let n = |k: &str| e[k].as_i64().unwrap();
    assert_eq!(
        n("gap_pages"),
        n("stock_pages")
            + n("unflushed_pages")
            + n("lru_add_pages")
            + n("outside_stat_pages")
            + n("unexplained_pages")
            - n("clamped_pages"),
        "{e}"
    );
}

fn v1() -> bool {
    detect_layout().unwrap().memory.unwrap().version == CgroupVersion::V1
}

/// `run threshold --threshold 1M,2M --grow-to 3M`: its JSON, and its record rendered again
/// as text.
fn run_1m_2m() -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("threshold.json");
    let doc = integration_tests::run_report(&[
        "run",
        "threshold",
        "--threshold",
        "1M,2M",
        "--grow-to",
        "3M",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    (doc, integration_tests::report_text(&record))
}

#[test]
fn thresholds_fire_once_each_way_within_a_check_interval() {
    if !require_kernel("thresholds_fire_once_each_way_within_a_check_interval") {
        return;
    }
    let _serial = serial();
    if !v1() {
        // v2: the test below.
        return;
    }
    let (doc, text) = run_1m_2m();
    for want in [
        "THRESHOLD",
        "LAG",
        "ledger at the up event of 1048576 bytes",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    let checks = doc["verdict"]["checks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let res = &doc["results"];
    let events = res["events"].as_array().unwrap();
    // Two thresholds, each once up and once down, in order: 1M up, 2M up, 2M down, 1M down.
    let order: Vec<(u64, &str)> = events
        .iter()
        .map(|e| {
            (
                e["threshold"].as_u64().unwrap(),
                e["direction"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (1 << 20, "up"),
            (2 << 20, "up"),
            (2 << 20, "down"),
            (1 << 20, "down")
        ]
    );
    let page = res["page_size"].as_u64().unwrap();
    for e in events {
        let t = e["registered_bytes"].as_u64().unwrap();
        let base = res["baseline_bytes"].as_u64().unwrap();
        assert_eq!(t, base + e["threshold"].as_u64().unwrap(), "{e}");
        let usage = e["usage_bytes"].as_u64().unwrap();
        let lag = e["lag_pages"].as_u64().unwrap();
        assert_eq!(e["signals"].as_u64(), Some(1), "{e}");
        assert!(lag < THRESHOLDS_EVENTS_TARGET + 1, "{e}");
        if e["direction"] == "up" {
            assert!(usage >= t, "{e}");
        } else {
            assert!(usage < t, "{e}");
        }
        // The ledger at the event closes, and the gap between the usage and what memory.stat
        // shows is made of its terms (the ledger's identity, carried into the record).
        // (5.10 on v2 counts kernel memory nowhere: the remainder holds it.)
        integration_tests::assert_remainder(
            e["unexplained_pages"].as_i64().unwrap(),
            integration_tests::kmem_counted_nowhere(),
            &e.to_string(),
        );
        assert_gap_identity(e);
        assert!(usage % page == 0, "{e}");
    }
    assert_eq!(doc["ledgers"].as_array().unwrap().len(), 4);
    no_runs_left();
}

/// The kernel's (major, minor) release.
fn release() -> (u32, u32) {
    let r = nix::sys::utsname::uname().unwrap();
    let r = r.release().to_string_lossy().into_owned();
    let mut it = r.split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn root_thresholds_fire_on_a_sum_of_counters() {
    if !require_kernel("root_thresholds_fire_on_a_sum_of_counters") {
        return;
    }
    let _serial = serial();
    if !v1() {
        assert_refused(
            &["run", "threshold", "--root"],
            "--root: cgroup v2 has no usage thresholds",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("threshold.json");
    // The root's events are judged only while the rest of the machine holds its usage within
    // what the counters' folding explains (`quiet_bound_pages`); a busy moment is tried again.
    let mut tries = Vec::new();
    let doc = loop {
        let doc = integration_tests::run_report(&[
            "run",
            "threshold",
            "--threshold",
            "1M,2M",
            "--grow-to",
            "3M",
            "--root",
            "--json",
            "--record",
            record.to_str().unwrap(),
        ]);
        let root = &doc["results"]["root"];
        let rest = &root["rest_pages"];
        let moved = rest[1].as_u64().unwrap() - rest[0].as_u64().unwrap();
        let bound = root["quiet_bound_pages"].as_u64().unwrap();
        if moved <= bound {
            break doc;
        }
        tries.push(moved);
        assert!(
            tries.len() < 3,
            "never quiet: the rest moved {tries:?} pages (bound {bound})"
        );
    };
    let checks = doc["verdict"]["checks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let root = &doc["results"]["root"];
    let source = root["formula"]["source"].as_str().unwrap();
    let want = match release() {
        r if r >= (6, 6) => Some("global"),
        r if r <= (6, 1) => Some("memcg"),
        _ => None,
    };
    // `both`: the two sums were equal whenever read (an idle guest whose counters are all
    // folded), so the observation cannot tell them apart; never the other one.
    if let Some(want) = want {
        assert!(source == want || source == "both", "{root:#}");
    }
    let base = root["baseline_bytes"].as_u64().unwrap();
    let events = root["events"].as_array().unwrap();
    for t in [1u64 << 20, 2 << 20] {
        let up = events
            .iter()
            .find(|e| e["threshold"] == t && e["direction"] == "up")
            .unwrap_or_else(|| panic!("no root up event for {t}: {root:#}"));
        let at = up["registered_bytes"].as_u64().unwrap();
        assert_eq!(at, base + t, "{up}");
        assert!(up["usage_bytes"].as_u64().unwrap() >= at, "{up}");
        // Checks are THRESHOLDS_EVENTS_TARGET + 1 page events apart, and the check of a
        // page's own charge runs before the root's statistics count that page.
        let lag = up["lag_pages"].as_u64().unwrap();
        assert!(lag <= THRESHOLDS_EVENTS_TARGET + 1, "{up}");
    }
    let text = integration_tests::report_text(&record);
    for want in [
        "root: thresholds above its usage",
        "STAT PG",
        "the root is never charged",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    no_runs_left();
}

#[test]
fn memory_high_fires_in_the_step_whose_batch_crosses_it() {
    if !require_kernel("memory_high_fires_in_the_step_whose_batch_crosses_it") {
        return;
    }
    let _serial = serial();
    if v1() {
        // v1: the test above.
        return;
    }
    let (doc, text) = run_1m_2m();
    for want in [
        "memory.high in turn",
        "ledger at the high event of 1048576 bytes",
        "memory.high fires when a charge batch takes the page_counter past it",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    let checks = doc["verdict"]["checks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let res = &doc["results"];
    assert_eq!(res["mechanism"], "v2-high");
    // The watermark: memory.peak from 5.19 (cgroup v2 documentation), the page_counter read
    // from the kernel before.
    let has_peak_file = integration_tests::kernel_version() >= (5, 19);
    let src = res["peak_source"].as_str().unwrap();
    assert!(
        text.contains(&format!("watermark (peak) read from: {src}")),
        "{text}"
    );
    assert_eq!(src == "memory.peak", has_peak_file, "{src}");
    let page = res["page_size"].as_u64().unwrap();
    let batch = integration_tests::charge_batch();
    assert_eq!(res["charge_batch"].as_u64(), Some(batch));
    let events = res["events"].as_array().unwrap();
    let order: Vec<u64> = events
        .iter()
        .map(|e| e["threshold"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [1 << 20, 2 << 20]);
    let base = res["baseline_bytes"].as_u64().unwrap();
    for e in events {
        assert_eq!(e["direction"], "up", "{e}");
        let high = e["registered_bytes"].as_u64().unwrap();
        assert_eq!(
            high,
            (base + e["threshold"].as_u64().unwrap()) / page * page,
            "{e}"
        );
        let before = e["usage_before_bytes"].as_u64().unwrap();
        let peak0 = e["peak_before_bytes"].as_u64().unwrap();
        let peak1 = e["peak_bytes"].as_u64().unwrap();
        // The step whose charge crossed it raised the first events (the usage after it may be
        // back under memory.high: reclaim; the watermark keeps the crossing), and that charge
        // was exactly one batch.
        assert!(peak0 <= high && peak1 > high, "{e}");
        assert_eq!(peak1 - before, batch * page, "{e}");
        assert!(e["signals"].as_u64().unwrap() >= 1, "{e}");
        assert_eq!(e["crossed_at_pages"], e["pages_held"], "{e}");
        assert_eq!(e["lag_pages"].as_u64(), Some(0), "{e}");
        assert_eq!(e["notified"], true, "{e}");
        // (5.10 on v2 counts kernel memory nowhere: the remainder holds it.)
        integration_tests::assert_remainder(
            e["unexplained_pages"].as_i64().unwrap(),
            integration_tests::kmem_counted_nowhere(),
            &e.to_string(),
        );
        assert_gap_identity(e);
    }
    assert_eq!(doc["ledgers"].as_array().unwrap().len(), 2);
    no_runs_left();
}

#[test]
fn threshold_bad_options_are_refused_before_anything_is_created() {
    if !require_kernel("threshold_bad_options_are_refused_before_anything_is_created") {
        return;
    }
    let _serial = serial();
    for (args, needle) in [
        (&["--threshold", "2M,1M"][..], "ascending"),
        (&["--threshold", "4M", "--grow-to", "4M"], "--grow-to"),
        (&["--threshold", "1x"], "--threshold"),
        (&["--cpu", "4096"], "not an online CPU"),
    ] {
        let mut a = vec!["run", "threshold"];
        a.extend_from_slice(args);
        assert_refused(&a, needle);
    }
}
