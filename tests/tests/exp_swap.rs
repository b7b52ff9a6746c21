//! `memcg-drift run swap` against the real kernel (issue 13). The host has no swap: there the
//! run must refuse in one line and create nothing. In the guests of `cargo xtask vm-test
//! --swap` (v2 on 6.12, v1 on 6.1) it runs for real.
//!
//! What is exact (mm/memcontrol.c, mm/memcontrol-v1.c, mm/vmscan.c): past its limit the
//! workload's charges reclaim its own anonymous pages to swap, so with swap available it is
//! never killed and every page past the limit is in swap (the swap counter holds at least
//! grown - limit pages); both books close to the page; once swap is capped at what it holds,
//! reclaim cannot make room and the OOM killer kills it: one kill, counted by the cgroup.

use integration_tests::{assert_refused, no_runs_left, require_kernel, serial};

fn has_swap() -> bool {
    memcg_drift::experiment::swap::SwapSpace::read().is_ok_and(|s| s.devices > 0)
}

#[test]
fn swap_bad_input_is_one_line_and_creates_nothing() {
    if !require_kernel("swap_bad_input_is_one_line_and_creates_nothing") {
        return;
    }
    let _serial = serial();
    for (args, needle) in [
        (vec!["run", "swap", "--limit", "1M"], "--limit"),
        (vec!["run", "swap", "--grow-to", "16M"], "--grow-to"),
        (vec!["run", "swap", "--steps", "0"], "--steps"),
        (vec!["run", "swap", "--cpu", "4096"], "--cpu"),
    ] {
        assert_refused(&args, needle);
    }
    if has_swap() {
        // More than the swap device can take.
        assert_refused(
            &["run", "swap", "--limit", "16M", "--grow-to", "4G"],
            "of swap are free",
        );
    } else {
        // Never on a machine without a swap device, and never enabling one.
        assert_refused(&["run", "swap"], "/proc/swaps lists none");
    }
    no_runs_left();
}

#[test]
fn swap_not_killed_until_swap_is_capped() {
    if !integration_tests::swap_guest() {
        eprintln!("skipping: no swap device here (runs in `cargo xtask vm-test --swap`)");
        return;
    }
    if !require_kernel("swap_not_killed_until_swap_is_capped") {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("swap.json");
    let doc = integration_tests::run_report(&[
        "run",
        "swap",
        "--limit",
        "16M",
        "--grow-to",
        "48M",
        "--steps",
        "4",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    // The record renders again as text.
    let text = integration_tests::report_text(&record);
    for want in [
        "SWAP MiB",
        "VMSWAP",
        "ledger after growing past the limit",
        "swap book",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    let checks = doc["verdict"]["checks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{failed:#?}\n{doc:#}");
    let res = &doc["results"];
    let page = res["page_size"].as_u64().unwrap();
    assert!(res["alive_after_grow"].as_bool().unwrap());
    assert!(res["swapped_pages"].as_u64().unwrap() >= (48 - 16) * (1 << 20) / page);
    assert_eq!(res["swap_unexplained_pages"], 0);
    assert_eq!(res["memory_unexplained_pages"], 0);
    assert_eq!(res["oom_kills_limited"], 1);
    assert_eq!(res["killed"], "killed by signal 9");
    // The one kill, with the memcg and the victim: the workload.
    let kills = doc["oom_kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    assert!(
        kills[0]["memcg_path"].as_str().unwrap().ends_with("/s"),
        "{kills:#?}"
    );
    // The ledger after growing is in the record, with its swap book.
    let ledger = &doc["ledgers"][0]["json"];
    assert_eq!(ledger["swap"]["unexplained_pages"], 0, "{ledger:#}");
    no_runs_left();
}
