//! `memcg-drift run limit` against the real kernel (root, BPF, real cgroups), on the host (v1)
//! and in the QEMU guests (v2). Each test runs the CLI as a user would and checks the numbers
//! the kernel's rules dictate in its JSON report (and the text rendering once).

use std::{path::Path, process::Command};

use integration_tests::{bin, online_cpus, require_kernel, serial};
use memcg_drift::cgroup::{CgroupVersion, MemoryHierarchy, detect_layout};
use serde_json::Value;

const PAGE: u64 = 4096;
/// MEMCG_CHARGE_BATCH, measured by the tool (workload::batch): the probes' batches checked
/// against it here would catch a wrong measurement.
fn batch() -> u64 {
    integration_tests::charge_batch()
}

fn hier() -> MemoryHierarchy {
    detect_layout().unwrap().memory.unwrap()
}

/// Runs `memcg-drift run limit ARGS --json`; returns (exit code, report, stderr).
fn run_limit(args: &[&str]) -> (i32, Option<Value>, String) {
    let out = Command::new(bin())
        .args(["run", "limit"])
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).ok();
    (out.status.code().unwrap_or(-1), doc, stderr)
}

/// The run's cgroup is gone and nothing else is left under memcg-drift/ by this run.
fn assert_cleaned_up(h: &MemoryHierarchy, doc: &Value) {
    let id = doc["run_id"].as_str().unwrap();
    let dir = h.root.join("memcg-drift").join(id);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let left = integration_tests::private_dirs_left(id, &[]);
    assert!(left.is_empty(), "run {id} left {left:?}");
}

fn failed_checks(doc: &Value) -> Vec<String> {
    doc["verdict"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["ok"].as_bool().unwrap())
        .map(|c| c.to_string())
        .collect()
}

fn swap_total() -> u64 {
    let t = std::fs::read_to_string("/proc/meminfo").unwrap();
    t.lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap()
}

/// Limit 32 MiB, no swap: the growth to 64 MiB ends in exactly one OOM kill of the workload,
/// in the limited cgroup, with usage at the kill within one charge batch per CPU of the limit.
#[test]
fn limit_oom_at_32_mib_kills_the_workload_once() {
    let test = "limit_oom_at_32_mib_kills_the_workload_once";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    // Without swap anonymous pages cannot be reclaimed (mm/vmscan.c can_reclaim_anon_pages),
    // so the growth must end in the OOM killer; with swap it could page out instead.
    assert_eq!(swap_total(), 0, "this test needs a machine without swap");
    let h = hier();
    let rec = std::env::temp_dir().join(format!("exp-limit-{}.json", std::process::id()));
    let rec_path = rec.to_str().unwrap().to_string();
    let (code, doc, err) =
        run_limit(&["--limit", "32M", "--immigrate", "0", "--record", &rec_path]);
    let doc = doc.unwrap_or_else(|| panic!("no JSON; stderr: {err}"));
    eprintln!("{test}: oom {:#}", doc["results"]["oom"]);
    eprintln!("{test}: oom_kills {:#}", doc["oom_kills"]);
    assert_eq!(code, 0, "failed checks: {:?}", failed_checks(&doc));
    assert_cleaned_up(&h, &doc);
    // The record's plots: the timeline with the kill marked, the events per step.
    let plots = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .arg("report")
        .arg(&rec)
        .arg("--svg")
        .arg(plots.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = integration_tests::check_svg(
        &plots.path().join("limit.svg"),
        &["usage (page_counter)", "limit", "OOM kill", "MiB", "ms"],
    );
    assert!(p.polylines >= 6, "{p:?}");
    integration_tests::check_svg(
        &plots.path().join("limit-events.svg"),
        &["limit hits", "memcg reclaim rounds", "OOM kill"],
    );
    // The stock after every step, read by the residue reader, never above the kernel's bound.
    let bound = doc["results"]["stock_bound_pages"]
        .as_i64()
        .expect("stock bound");
    for step in doc["results"]["timeline"].as_array().unwrap() {
        let stock = step["stock_pages"]
            .as_i64()
            .expect("stock after every step");
        assert!(
            (0..=bound).contains(&stock),
            "stock {stock} outside 0..={bound}: {step}"
        );
    }
    integration_tests::check_svg(
        &plots.path().join("limit-stock.svg"),
        &["charge stock, all CPUs", "the kernel's bound", "OOM kill"],
    );
    let res = &doc["results"];
    let pid = res["workload_pid"].as_u64().unwrap();
    let limited = res["limited_path"].as_str().unwrap();
    assert!(limited.ends_with("/limited") && limited.contains(doc["run_id"].as_str().unwrap()));
    // Exactly one kill, by the cgroup's own counter and by the report.
    assert_eq!(res["oom"]["kill_counter"], 1);
    let kills = doc["oom_kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    let k = &kills[0];
    assert_eq!(k["victim_pid"].as_u64().unwrap(), pid);
    assert_eq!(k["memcg_path"].as_str().unwrap(), limited);
    // The kernel's bound: `page_counter_try_charge` (mm/page_counter.c) never takes usage past
    // max, so at the last failed charge before `mem_cgroup_oom` usage was the limit (one-page
    // anon faults; `try_charge_memcg`, mm/memcontrol.c). Until the OOM report prints it, usage
    // can only fall by other CPUs' charge stocks being drained (`drain_all_stock`), and
    // `refill_stock` (mm/memcontrol.c) drains a CPU's stock of a memcg as soon as it holds
    // more than MEMCG_CHARGE_BATCH pages: limit - 64 pages x online CPUs <= usage <= limit.
    let limit = 32u64 << 20;
    let ncpu = online_cpus().len() as u64;
    let usage = k["usage_at_kill_bytes"].as_u64().unwrap();
    assert!(
        (limit - batch() * PAGE * ncpu..=limit).contains(&usage),
        "usage at kill {usage}"
    );
    // The victim's RSS: at least what it touched in the cgroup before the fatal step.
    let rss = k["victim_rss_bytes"].as_u64().unwrap();
    assert!(rss >= 28 << 20, "rss {rss}");
    // The phase that killed it: its touch failed, and the OOM rows name the workload.
    let phase = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == k["phase"])
        .unwrap();
    assert!(
        phase["error"].as_str().unwrap().contains("exited"),
        "{phase:#}"
    );
    let victims: Vec<_> = phase["oom"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "victim")
        .collect();
    assert_eq!(victims.len(), 1, "{phase:#}");
    assert_eq!(victims[0]["pid"].as_u64().unwrap(), pid);
    // Every step before the limit completed; usage grew by the step each time.
    let tl = res["timeline"].as_array().unwrap();
    let killed: Vec<_> = tl.iter().filter(|s| s["completed"] == false).collect();
    assert_eq!(killed.len(), 1);
    assert_eq!(tl.last().unwrap()["completed"], false);
    for s in &tl[..tl.len() - 1] {
        let grown = s["grown_bytes"].as_u64().unwrap();
        assert!(s["usage_bytes"].as_u64().unwrap() >= grown, "{s}");
        assert_eq!(s["oom_kill_delta"], 0);
    }
    // The recorded run renders as text again, with the timeline and the kill.
    let text = integration_tests::report_text(&rec);
    let _ = std::fs::remove_file(&rec);
    for want in [
        "TIMELINE",
        "KILLED",
        "OOM kills:",
        &format!("pid {pid}"),
        "verdict: OOM kill",
        "usage at kill from:",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
}

/// Seed 001: pages touched before the move stay charged to the old cgroup; the new one gains
/// none of them, and their uncharge (freed after the move) goes to the old cgroup too.
#[test]
fn limit_charges_stay_with_the_old_cgroup() {
    let test = "limit_charges_stay_with_the_old_cgroup";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let h = hier();
    let (code, doc, err) = run_limit(&["--immigrate", "2M", "--grow-to", "1M"]);
    let doc = doc.unwrap_or_else(|| panic!("no JSON; stderr: {err}"));
    let im = &doc["results"]["immigrate"];
    eprintln!("{test}: {im:#}");
    assert_eq!(code, 0, "failed checks: {:?}", failed_checks(&doc));
    assert_cleaned_up(&h, &doc);
    let n = 512i64;
    assert_eq!(im["pages"], n);
    if h.version == CgroupVersion::V1 {
        // 6.18: mem_cgroup_move_charge_read returns 0 always (charge moving was removed from
        // mm/memcontrol-v1.c); 6.1: the default 0, so mem_cgroup_can_attach moves nothing.
        assert_eq!(im["move_charge_at_immigrate"], 0);
    } else {
        assert!(im["move_charge_at_immigrate"].is_null());
    }
    let pair = |v: &Value| (v[0].as_i64().unwrap(), v[1].as_i64().unwrap());
    assert_eq!(pair(&im["touch_anon_updates"]), (n, 0));
    assert_eq!(pair(&im["move_anon_updates"]), (0, 0));
    assert_eq!(pair(&im["free_anon_updates"]), (-n, 0));
    let o = &im["origin_charged_pages"];
    let (o0, o1, o2) = (
        o[0].as_i64().unwrap(),
        o[1].as_i64().unwrap(),
        o[2].as_i64().unwrap(),
    );
    assert_eq!(o0, o1, "origin keeps its charges across the move");
    assert!(o0 >= n, "origin holds at least the {n} pages: {o0}");
    // Freed folios still in a CPU's lru_add batch keep their charge until it drains (6.18
    // unmaps without draining it); the report counts them from the residue reader.
    let in_batches = im["origin_freed_in_lru_add"].as_i64().unwrap();
    assert!(
        (0..=31 * online_cpus().len() as i64).contains(&in_batches),
        "{in_batches}"
    );
    assert_eq!(o2, o1 - n + in_batches, "the uncharge went to origin");
    let d = pair(&im["dest_charged_pages"]);
    assert_eq!(d.1 - d.0, 0, "limited gained nothing by the move");
    let a = pair(&im["origin_anon_pages"]);
    assert_eq!(a.0, a.1);
    assert!(a.0 >= n);
    assert!(doc["oom_kills"].as_array().unwrap().is_empty());
    assert!(
        doc["results"]["oom"]["no_kill_reason"]
            .as_str()
            .unwrap()
            .contains("stays within the limit")
    );
}

/// Seed 003: shrinking the limit below anonymous usage without swap. v1
/// (`mem_cgroup_resize_max`, mm/memcontrol-v1.c): reclaim frees nothing, the write fails with
/// EBUSY and the old limit stays. v2 (`memory_max_write`, mm/memcontrol.c): the new max is set
/// first, reclaim fails, and the OOM killer runs until usage fits.
#[test]
fn limit_shrink_below_anonymous_usage() {
    let test = "limit_shrink_below_anonymous_usage";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    assert_eq!(swap_total(), 0, "this test needs a machine without swap");
    let h = hier();
    let (code, doc, err) = run_limit(&[
        "--limit",
        "32M",
        "--grow-to",
        "12M",
        "--shrink-to",
        "4M",
        "--immigrate",
        "0",
    ]);
    let doc = doc.unwrap_or_else(|| panic!("no JSON; stderr: {err}"));
    let sh = &doc["results"]["shrink"];
    eprintln!("{test}: {sh:#}");
    assert_eq!(code, 0, "failed checks: {:?}", failed_checks(&doc));
    assert_cleaned_up(&h, &doc);
    assert!(sh["unreclaimable_floor_pages"].as_u64().unwrap() >= 3072);
    assert!(sh["duration_ms"].as_f64().unwrap() >= 0.0);
    let kills = doc["oom_kills"].as_array().unwrap();
    match h.version {
        CgroupVersion::V1 => {
            assert_eq!(sh["predicted"], "EBUSY");
            assert_eq!(sh["write_ok"], false);
            assert_eq!(sh["errno"], libc::EBUSY);
            assert_eq!(sh["limit_after_bytes"], 32u64 << 20);
            assert!(sh["usage_after_bytes"].as_u64().unwrap() >= 12 << 20);
            assert_eq!(sh["workload_alive"], true);
            assert!(kills.is_empty(), "{kills:#?}");
        }
        CgroupVersion::V2 => {
            assert_eq!(sh["predicted"], "oom-kill");
            assert_eq!(sh["write_ok"], true);
            assert_eq!(sh["limit_after_bytes"], 4u64 << 20);
            assert!(sh["usage_after_bytes"].as_u64().unwrap() <= 4 << 20);
            assert_eq!(sh["oom_kills"], 1);
            assert_eq!(sh["workload_alive"], false);
            assert_eq!(kills.len(), 1, "{kills:#?}");
            assert_eq!(kills[0]["victim_pid"], doc["results"]["workload_pid"]);
            assert!(kills[0]["phase"].as_str().unwrap().starts_with("shrink"));
        }
    }
}

/// Shrinking over clean page cache: reclaim drops the file pages and the new limit holds
/// (both versions). Needs a disk-backed directory (the guests have none: rootfs only).
#[test]
fn limit_shrink_reclaims_page_cache() {
    let test = "limit_shrink_reclaims_page_cache";
    if !require_kernel(test) {
        return;
    }
    let dir = Path::new("/var/tmp");
    let disk = nix::sys::statfs::statfs(dir).is_ok_and(|s| {
        let t = s.filesystem_type().0;
        t != 0x0102_1994 && t != 0x8584_58f6
    });
    if !disk {
        eprintln!("skipping {test} - /var/tmp is not on a disk filesystem here");
        return;
    }
    let _serial = serial();
    let h = hier();
    let (code, doc, err) = run_limit(&[
        "--limit",
        "32M",
        "--page-cache",
        "16M",
        "--grow-to",
        "4M",
        "--shrink-to",
        "12M",
        "--immigrate",
        "0",
    ]);
    let doc = doc.unwrap_or_else(|| panic!("no JSON; stderr: {err}"));
    let sh = &doc["results"]["shrink"];
    eprintln!("{test}: {sh:#}");
    assert_eq!(code, 0, "failed checks: {:?}", failed_checks(&doc));
    assert_cleaned_up(&h, &doc);
    assert_eq!(sh["predicted"], "ok");
    assert_eq!(sh["write_ok"], true);
    assert!(sh["file_pages"].as_u64().unwrap() >= 4000);
    assert!(sh["usage_before_bytes"].as_u64().unwrap() > 12 << 20);
    assert!(sh["usage_after_bytes"].as_u64().unwrap() <= 12 << 20);
    assert_eq!(sh["limit_after_bytes"], 12u64 << 20);
    assert_eq!(sh["workload_alive"], true);
    assert!(doc["oom_kills"].as_array().unwrap().is_empty());
}

/// v1 `oom_kill_disable 1`: the workload sleeps in the fault at the limit (under_oom 1), the
/// run notices, reports why no kill happened and releases it by removing the limit. On v2 the
/// option is refused in one line before anything is created.
#[test]
fn limit_oom_disable_blocks_without_a_kill() {
    let test = "limit_oom_disable_blocks_without_a_kill";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let h = hier();
    if h.version == CgroupVersion::V2 {
        let before = list_runs(&h);
        let (code, _, err) = run_limit(&["--oom-disable"]);
        assert_eq!(code, 1);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--oom-disable needs cgroup v1"), "{err}");
        assert_eq!(list_runs(&h), before);
        return;
    }
    let (code, doc, err) = run_limit(&["--oom-disable", "--grow-to", "40M", "--immigrate", "0"]);
    let doc = doc.unwrap_or_else(|| panic!("no JSON; stderr: {err}"));
    let o = &doc["results"]["oom"];
    eprintln!("{test}: {o:#}");
    assert_eq!(code, 0, "failed checks: {:?}", failed_checks(&doc));
    assert_cleaned_up(&h, &doc);
    assert!(o["under_oom_after_ms"].as_f64().is_some());
    assert!(
        o["no_kill_reason"]
            .as_str()
            .unwrap()
            .contains("no kill because oom_kill_disable")
    );
    assert!(o["released_by"].as_str().unwrap().contains("limit removed"));
    assert_eq!(o["kill_counter"], 0);
    assert!(doc["oom_kills"].as_array().unwrap().is_empty());
    // Blocked at the limit: usage then was within a batch per CPU of it (same bound as a kill).
    let u = o["usage_when_blocked_bytes"].as_u64().unwrap();
    let ncpu = online_cpus().len() as u64;
    assert!(
        ((32 << 20) - batch() * PAGE * ncpu..=32 << 20).contains(&u),
        "{u}"
    );
    let tl = doc["results"]["timeline"].as_array().unwrap();
    assert!(tl.iter().all(|s| s["completed"] == true));
    assert_eq!(doc["verdict"]["status"], "no kill (oom_kill_disable)");
}

fn list_runs(h: &MemoryHierarchy) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(h.root.join("memcg-drift"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Bad options fail in one line, with a non-zero exit, before any cgroup is created.
#[test]
fn limit_rejects_bad_options() {
    let test = "limit_rejects_bad_options";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let h = hier();
    let before = list_runs(&h);
    let version_specific: &[&str] = match h.version {
        CgroupVersion::V1 => &["--high", "16M"],
        CgroupVersion::V2 => &["--oom-disable"],
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--limit", "12q"], "12q"),
        (vec!["--step", "4X"], "4X"),
        (vec!["--limit", "512K"], "below the 1M minimum"),
        (vec!["--shrink-to", "64M"], "below --limit"),
        (vec!["--grow-to", "1G"], "more than 4 times"),
        (version_specific.to_vec(), "needs cgroup v"),
        (
            vec!["--cache-dir", "/var/tmp"],
            "only goes with --page-cache",
        ),
        (
            vec!["--page-cache", "1M", "--cache-dir", "/nonexistent-dir"],
            "nonexistent-dir",
        ),
    ];
    for (args, want) in cases {
        let (code, _, err) = run_limit(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    // Sizes in every accepted spelling pass validation (a 1M growth with no OOM).
    let (code, doc, err) = run_limit(&[
        "--limit",
        "33554432",
        "--step",
        "512K",
        "--grow-to",
        "1M",
        "--immigrate",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    let p = &doc.unwrap()["params"];
    assert_eq!(p["limit_bytes"], 32u64 << 20);
    assert_eq!(p["step_bytes"], 512u64 << 10);
    assert_eq!(list_runs(&h), before);
}

/// v2 `memory.high` below the limit: growing a little past it (no swap, nothing reclaimable)
/// completes without an OOM kill, the usage stays above `high` and below `max`, and the
/// kernel counts the breach as `high` events (`try_charge_memcg` marks the task over high
/// after a charge above `memory.high`, `mem_cgroup_handle_over_high` -> `reclaim_high` counts
/// MEMCG_HIGH, 6.1 and 6.12 mm/memcontrol.c). The overage is kept small (about 1 MiB over
/// 15 MiB) so the throttling penalty (quadratic in the overage, at most 2 s per return to
/// user space) stays short. On v1 the option is refused in one line.
#[test]
fn limit_high_throttles_without_a_kill() {
    let test = "limit_high_throttles_without_a_kill";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let h = hier();
    let args = [
        "--limit",
        "64M",
        "--high",
        "15M",
        "--grow-to",
        "16M",
        "--step",
        "4M",
        "--immigrate",
        "0",
    ];
    if h.version == CgroupVersion::V1 {
        let mut full = vec!["run", "limit"];
        full.extend(args);
        integration_tests::assert_refused(&full, "--high needs cgroup v2");
        return;
    }
    let (code, doc, err) = run_limit(&args);
    let doc = doc.unwrap_or_else(|| panic!("no JSON; stderr: {err}"));
    assert_eq!(code, 0, "failed checks: {:?}", failed_checks(&doc));
    assert_cleaned_up(&h, &doc);
    assert!(doc["oom_kills"].as_array().unwrap().is_empty(), "{doc:#}");
    let tl = doc["results"]["timeline"].as_array().unwrap();
    let last = tl.last().unwrap();
    assert_eq!(last["completed"], true, "{last:#}");
    let usage = last["usage_bytes"].as_u64().unwrap();
    assert!(usage > 15 << 20 && usage <= 64 << 20, "usage {usage}");
    let high: u64 = tl
        .iter()
        .filter_map(|s| s["high_events_delta"].as_u64())
        .sum();
    assert!(high >= 1, "no high events: {tl:#?}");
}
