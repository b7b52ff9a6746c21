//! `memcg-drift run migrate` against the real kernel: on a machine with two memory nodes and a
//! cpuset in the memory hierarchy (the 2-node guests of `cargo xtask test`), the move itself;
//! elsewhere (this host: one node) the one-line refusal, with nothing created.
//!
//! What is exact: before the move no anon page of the cgroup is on the target node (its
//! cpuset allowed the source only); after the `cpuset.mems` write returns, none is left on the
//! source (the kernel migrates synchronously and retries busy pages; an idle workload's pages
//! are not pinned); `NR_ANON_MAPPED` in total and the charged usage less the stock do not
//! change (a migration unmaps one folio and maps another; the charge is moved, or forced on
//! the new folio and dropped with the old, never through the stock); both ledgers close.
//!
//! `run hotplug` the same, with the pages moved off a node of hot-added movable memory by
//! taking its blocks offline (the 2-node guests also have such a node, a QEMU pc-dimm); its
//! blocks are online again after the run.

use integration_tests::{assert_refused, no_runs_left, require_kernel, serial};
use memcg_drift::{
    cgroup::{MemoryHierarchy, cpuset_available},
    experiment::{
        hotplug::{node_is_offlinable, offlinable_nodes},
        migrate::memory_nodes,
    },
};

fn can_migrate() -> Result<(), String> {
    let nodes = memory_nodes();
    if nodes.len() < 2 {
        return Err("two NUMA nodes".into());
    }
    cpuset_available(&MemoryHierarchy::detect().unwrap()).map_err(|_| "needs a cpuset".into())
}

#[test]
fn migrate_moves_every_page_and_not_the_charge() {
    if !require_kernel("migrate_moves_every_page_and_not_the_charge") {
        return;
    }
    let _serial = serial();
    let guest_nodes: Option<usize> = std::env::var("MEMCG_DRIFT_NUMA_NODES")
        .ok()
        .and_then(|v| v.parse().ok());
    if let Err(needle) = can_migrate() {
        // A guest booted with several nodes (vm-test --numa-nodes) must migrate.
        assert!(
            guest_nodes.is_none_or(|n| n < 2),
            "a {guest_nodes:?}-node guest cannot migrate: {needle} (memory nodes {:?})",
            memory_nodes()
        );
        // The refusal is the behaviour here: one line, non-zero, nothing created.
        assert_refused(&["run", "migrate"], &needle);
        no_runs_left();
        return;
    }
    let nodes = memory_nodes();
    let (from, to) = (nodes[0], nodes[1]);
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("migrate.json");
    let doc = integration_tests::run_report(&[
        "run",
        "migrate",
        "--size",
        "8M",
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    assert_moved(&doc, from, &[to], 8 << 20, true);
    let text = integration_tests::report_text(&record);
    for want in [
        "migrate:",
        "numa_stat anon by node",
        "ledger after the move",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    no_runs_left();
}

/// Asserts a finished migrate/hotplug record: every check passed; before, the pages touched
/// on `from` (and nothing elsewhere when the cpuset put them there); after, none left on it,
/// every page that left arrived on `dest` (exactly on v2; v1 counts LRU lists, which the
/// migration's drain of the lru_add batches can only add to); the totals and the charge less
/// the stock unchanged; both ledgers closed; the move traced.
fn assert_moved(doc: &serde_json::Value, from: u32, dest: &[u32], size: u64, cpuset: bool) {
    let checks = doc["verdict"]["checks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let res = &doc["results"];
    let page = res["page_size"].as_u64().unwrap();
    let pages = size / page;
    assert_eq!(res["params"]["pages"].as_u64(), Some(pages));
    let (b, a) = (&res["before"], &res["after"]);
    let on = |s: &serde_json::Value, n: u32| s["numa_anon"][n.to_string()].as_u64().unwrap_or(0);
    let on_dest = |s: &serde_json::Value| dest.iter().map(|&n| on(s, n)).sum::<u64>();
    if cpuset {
        let off_from: u64 = memory_nodes()
            .iter()
            .filter(|&&n| n != from)
            .map(|&n| on(b, n))
            .sum();
        assert_eq!(off_from, 0, "{res:#}");
    }
    let moved = on(b, from);
    assert!(moved >= pages, "{res:#}");
    assert_eq!(on(a, from), 0, "{res:#}");
    let arrived = on_dest(a) - on_dest(b);
    if res["numa_anon_is_lru"] == true {
        assert!(arrived >= moved, "{res:#}");
    } else {
        assert_eq!(arrived, moved, "{res:#}");
    }
    let i = |s: &serde_json::Value, k: &str| s[k].as_i64().unwrap();
    assert!(i(b, "anon_pages") >= pages as i64, "{res:#}");
    assert_eq!(i(b, "anon_pages"), i(a, "anon_pages"), "{res:#}");
    assert_eq!(
        i(b, "usage_pages") - i(b, "stock_pages"),
        i(a, "usage_pages") - i(a, "stock_pages"),
        "{res:#}"
    );
    assert_eq!(i(b, "unexplained_pages"), 0, "{res:#}");
    assert_eq!(i(a, "unexplained_pages"), 0, "{res:#}");
    // The move was traced: every page unmapped on one node and mapped on another.
    assert_eq!(res["traced_anon_net"].as_i64(), Some(0), "{res:#}");
    assert!(
        res["traced_anon_updates"].as_u64().unwrap() >= 2 * pages,
        "{res:#}"
    );
    assert_eq!(doc["ledgers"].as_array().unwrap().len(), 2);
}

#[test]
fn hotplug_moves_every_page_off_the_node_and_not_the_charge() {
    if !require_kernel("hotplug_moves_every_page_off_the_node_and_not_the_charge") {
        return;
    }
    let _serial = serial();
    let guest = std::env::var_os("MEMCG_DRIFT_HOTPLUG").is_some_and(|v| v == "1");
    let nodes = memory_nodes();
    let offlinable = offlinable_nodes(&nodes);
    let cpuset = cpuset_available(&MemoryHierarchy::detect().unwrap());
    let refusal = if nodes.len() < 2 {
        Some("two NUMA nodes")
    } else if offlinable.is_empty() {
        Some("not every memory block")
    } else if cpuset.is_err() {
        Some("needs a cpuset")
    } else {
        None
    };
    if let Some(needle) = refusal {
        // A guest booted with a hot-pluggable node (vm-test --hotplug) must take it offline.
        assert!(!guest, "hotplug guest refused: {needle} (nodes {nodes:?})");
        assert_refused(&["run", "hotplug"], needle);
        no_runs_left();
        return;
    }
    let node = offlinable[0];
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("hotplug.json");
    let doc = integration_tests::run_report(&[
        "run",
        "hotplug",
        "--size",
        "8M",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    assert_eq!(doc["results"]["params"]["from"].as_u64(), Some(node.into()));
    assert!(doc["results"]["offlined_blocks"].as_u64().unwrap() > 0);
    let dest: Vec<u32> = nodes.iter().copied().filter(|&n| n != node).collect();
    assert_moved(&doc, node, &dest, 8 << 20, false);
    // Every block of the node is online and movable again.
    assert!(node_is_offlinable(node), "node {node} not back online");
    // Also when the run panics with the node offline: the undo path puts it back.
    let o = std::process::Command::new(integration_tests::bin())
        .args(["run", "hotplug", "--size", "1M"])
        .env("MEMCG_DRIFT_TEST_PANIC_AT", "offline")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "exit 0 after a panic: {err}");
    assert!(err.contains("injected panic at offline"), "{err}");
    assert!(
        node_is_offlinable(node),
        "node {node} not back online after the panic: {err}"
    );
    let text = integration_tests::report_text(&record);
    for want in ["hotplug:", "blocks", "ledger after the offline"] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    no_runs_left();
}

#[test]
fn migrate_bad_options_are_refused_before_anything_is_created() {
    if !require_kernel("migrate_bad_options_are_refused_before_anything_is_created") {
        return;
    }
    let _serial = serial();
    assert_refused(&["run", "migrate", "--size", "0"], "--size");
    assert_refused(&["run", "migrate", "--size", "1x"], "--size");
    match can_migrate() {
        Ok(()) => {
            assert_refused(&["run", "migrate", "--to", "63"], "--to 63 is not a node");
            assert_refused(&["run", "migrate", "--from", "1", "--to", "1"], "different");
            assert_refused(&["run", "migrate", "--cpu", "4096"], "not an online CPU");
        }
        Err(needle) => {
            for args in [&["--to", "63"][..], &["--cpu", "4096"]] {
                let mut a = vec!["run", "migrate"];
                a.extend_from_slice(args);
                assert_refused(&a, &needle);
            }
        }
    }
    no_runs_left();
}
