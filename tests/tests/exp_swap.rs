//! `memcg-drift run swap` against the real kernel (issue 13). The host has no swap: there the
//! run must refuse in one line and create nothing. In the guests of `cargo xtask vm-test
//! --swap` (v2 on 6.12, v1 on 6.1) it runs for real.
//!
//! What is exact (mm/memcontrol.c, mm/memcontrol-v1.c, mm/vmscan.c): past its limit the
//! workload's charges reclaim its own anonymous pages to swap, so with swap available it is
//! never killed and every page past the limit is in swap (the swap counter holds at least
//! grown - limit pages); both books close to the page; once swap is capped at what it holds,
//! reclaim cannot make room and the OOM killer kills it: one kill, counted by the cgroup.
//! Rereading the grown memory, each page out of memory faults back in at least once.
//! `--swapoff`: the pages a removed cgroup left in swap are charged, at swapoff, to the cgroup
//! of the process calling swapoff (the record's memcg is offline, the swap-in has no mm), less
//! those the swap cache still held; the devices come back on, also after a panic midway.

use integration_tests::{assert_refused, no_runs_left, require_kernel, serial};

/// True in the swap guests with the kernel tests enabled (the swap tests skip elsewhere).
fn swap_kernel(test: &str) -> bool {
    if !integration_tests::swap_guest() {
        eprintln!("skipping: no swap device here (runs in `cargo xtask vm-test --swap`)");
        return false;
    }
    require_kernel(test)
}

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
        assert_refused(
            &["run", "swap", "--limit", "16M", "--swap-max", "64G"],
            "--swap-max",
        );
    } else {
        // Never on a machine without a swap device, and never enabling one.
        assert_refused(&["run", "swap"], "/proc/swaps lists none");
        assert_refused(&["run", "swap", "--swapoff"], "/proc/swaps lists none");
    }
    no_runs_left();
}

#[test]
fn swap_not_killed_until_swap_is_capped() {
    if !swap_kernel("swap_not_killed_until_swap_is_capped") {
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
        "MAJFLT",
        "reread",
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
    // Rereading: alive, and at least one fault per page that was out of memory.
    let rr = &res["reread"];
    assert_eq!(rr["alive"], true, "{rr}");
    let faults = rr["faults"][0].as_u64().unwrap() + rr["faults"][1].as_u64().unwrap();
    assert!(faults >= rr["not_resident_pages"].as_u64().unwrap(), "{rr}");
    assert!(rr["not_resident_pages"].as_u64().unwrap() > 0, "{rr}");
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

/// The machine's swap devices with their priorities (what must come back after a run).
fn devices() -> Vec<(String, i32)> {
    memcg_drift::experiment::swap::SwapDevice::all()
        .unwrap()
        .into_iter()
        .map(|d| (d.path.display().to_string(), d.priority))
        .collect()
}

#[test]
fn swapoff_charges_a_removed_cgroups_swap_to_the_caller() {
    if !swap_kernel("swapoff_charges_a_removed_cgroups_swap_to_the_caller") {
        return;
    }
    let _serial = serial();
    let before = devices();
    assert!(!before.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("swapoff.json");
    let doc = integration_tests::run_report(&[
        "run",
        "swap",
        "--limit",
        "16M",
        "--grow-to",
        "32M",
        "--steps",
        "2",
        "--swapoff",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    assert_eq!(devices(), before, "swap devices not restored");
    let text = integration_tests::report_text(&record);
    assert!(text.contains("swapoff of"), "{text}");
    let checks = doc["verdict"]["checks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{failed:#?}\n{doc:#}");
    let res = &doc["results"];
    let page = res["page_size"].as_u64().unwrap();
    let o = &res["swapoff"];
    let pages = |h: &serde_json::Value| {
        (h["anon_pages"].as_u64().unwrap() + h["shmem_pages"].as_u64().unwrap()) as i64
    };
    let gained = pages(&o["off_after"]) - pages(&o["off_before"]);
    let entries = (o["d_before_rmdir"]["swap_bytes"].as_u64().unwrap() / page) as i64;
    // Past a 16M limit, at least 32M + 8M - 16M went to swap.
    assert!(entries >= ((32 + 8 - 16) << 20) / page as i64, "{o:#}");
    assert!(o["shmem_swapped_pages"].as_u64().unwrap() > 0, "{o:#}");
    match o["d_before_rmdir"]["swapcached_pages"].as_u64() {
        // Exact where memory.stat shows the swap cache (v2, 6.x).
        Some(cached) => assert_eq!(gained, entries - cached as i64, "{o:#}"),
        None => assert!(gained > 0 && gained <= entries, "{o:#}"),
    }
    assert_eq!(pages(&o["keep_after"]), pages(&o["keep_before"]), "{o:#}");
    assert_eq!(o["run_swap_after_bytes"], 0, "{o:#}");
    let off = doc["ledgers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["cgroup"] == "off")
        .expect("off's ledger after swapoff");
    assert_eq!(off["unexplained_pages"], 0, "{off:#}");
    no_runs_left();
}

/// A panic while the swap devices are off (injected right after swapoff) still turns them on
/// again, with their priorities, and removes the run.
#[test]
fn a_panic_during_swapoff_turns_swap_back_on() {
    if !swap_kernel("a_panic_during_swapoff_turns_swap_back_on") {
        return;
    }
    let _serial = serial();
    let before = devices();
    let o = std::process::Command::new(integration_tests::bin())
        .args([
            "run",
            "swap",
            "--limit",
            "8M",
            "--grow-to",
            "16M",
            "--steps",
            "1",
            "--swapoff",
        ])
        .env("MEMCG_DRIFT_TEST_PANIC_AT", "swapoff")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "exit 0 after a panic: {err}");
    assert!(err.contains("injected panic at swapoff"), "{err}");
    assert_eq!(
        devices(),
        before,
        "swap devices not restored after the panic: {err}"
    );
    no_runs_left();
}
