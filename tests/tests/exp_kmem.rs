//! `memcg-drift run kmem` against the real kernel: 500 loopback TCP pairs opened by a workload
//! inside the run's cgroup move its usage by kernel memory only.
//!
//! The kernel's rules (6.18 mm/memcontrol.c, mm/memcontrol-v1.c; 6.1/6.12 the same; see the
//! module docs of userspace/src/experiment/kmem.rs):
//! - opening sockets faults no user page, reads no file, starts no thread and maps nothing:
//!   NR_ANON_MAPPED, NR_FILE_PAGES, NR_KERNEL_STACK_KB, NR_PAGETABLE do not move at all (exact 0,
//!   and not one update in the probes' window);
//! - each client socket is a struct tcp_sock (> 2 KiB) from the SLAB_ACCOUNT `TCP` cache,
//!   allocated in the workload's task context: slab grows by at least 500 x 2 KiB;
//! - the ledger closes (unexplained 0) before and after; the LRU terms stand still, so the usage
//!   growth is exactly the kernel-memory terms' growth (kmem, and sock on v2) plus the stock's;
//! - socket buffers: each receiving socket holds unread data charged in whole pages (>= 1 page
//!   per pair): on v2 to memory with MEMCG_SOCK; on v1 only to tcpmem
//!   (`memory.kmem.tcp.usage_in_bytes`, active because the run wrote the tcp limit) and never
//!   to a statistic (MEMCG_SOCK exactly 0);
//! - v1: the kmem page_counter equals MEMCG_KMEM at every snapshot (memcg1_account_kmem runs
//!   beside every MEMCG_KMEM update).

use integration_tests::{no_runs_left, online_cpus, require_kernel, serial};
use memcg_drift::{
    cgroup::{CgroupVersion, detect_layout},
    experiment::{
        Common, Report,
        kmem::{self, Params, Results},
    },
};

fn run(p: Params) -> (Report, Results) {
    let hier = detect_layout().unwrap().memory.unwrap();
    let r = kmem::run(&hier, p, &Common::default()).unwrap();
    let res: Results = serde_json::from_value(r.results.clone()).unwrap();
    (r, res)
}

#[test]
fn kmem_500_sockets_move_usage_by_kernel_memory_only() {
    let test = "kmem_500_sockets_move_usage_by_kernel_memory_only";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let cpu = *online_cpus().last().unwrap();
    if integration_tests::kmem_counted_nowhere() {
        // 5.10 on v2: nothing to move usage "by kernel memory only" against; one line, and
        // nothing left behind.
        integration_tests::assert_refused(&["run", "kmem"], "needs a count of kernel memory");
        no_runs_left();
        return;
    }
    let (r, res) = run(Params {
        sockets: 500,
        unread_bytes: 4096,
        dentries: 100,
        cpu,
    });
    let text = memcg_drift::experiment::render_text(&r);
    eprintln!("{text}");
    for c in &r.verdict.checks {
        assert!(
            c.ok,
            "{}: expected {}, measured {}",
            c.what, c.expected, c.measured
        );
    }
    let page = r.page_size as i64;
    let open = res.steps.iter().find(|s| s.phase == kmem::OPEN).unwrap();
    for item in [
        "NR_ANON_MAPPED",
        "NR_FILE_PAGES",
        "NR_KERNEL_STACK_KB",
        "NR_PAGETABLE",
    ] {
        assert_eq!(open.item(item), 0, "{item}");
        assert_eq!(open.events(item), 0, "{item} updates");
    }
    let slab = open.item("NR_SLAB_RECLAIMABLE_B") + open.item("NR_SLAB_UNRECLAIMABLE_B");
    assert!(slab >= 500 * kmem::TCP_SOCK_MIN_BYTES, "slab {slab}");
    for s in &res.snapshots {
        assert_eq!(s.unexplained_pages, 0, "{}", s.label);
    }
    let kern = open.term("kmem") + open.term("kmem.atomic") + open.term("sock");
    assert_eq!(open.usage_bytes / page, kern + open.term("stock"));
    match r.cgroup_version.as_str() {
        "v1" => {
            assert_eq!(open.item("MEMCG_SOCK"), 0);
            let tcp = open.files["memory.kmem.tcp.usage_in_bytes"];
            assert!(tcp >= 500 * page, "tcpmem grew by {tcp}");
            assert!(!open.terms.contains_key("sock"));
            for s in &res.snapshots {
                // Before 5.18 there is no MEMCG_KMEM: the counter is the kmem term itself.
                let want = if s.no_memcg_kmem {
                    s.term("kmem") * page
                } else {
                    s.item("MEMCG_KMEM")
                };
                assert_eq!(
                    s.kmem_counter_bytes.map(|b| b as i64),
                    Some(want),
                    "{}",
                    s.label
                );
            }
            assert!(res.tcp_limit_written.is_some());
            assert!(text.contains("memory.kmem.tcp.usage_in_bytes"), "{text}");
        }
        _ => {
            let sock = open.item("MEMCG_SOCK");
            assert!(sock >= 500 * page, "sock grew by {sock}");
            assert!(open.files.get("sock").copied().unwrap_or(0) >= 0);
            assert!(text.contains("sock"), "{text}");
        }
    }
    // The dentries phase: anon still, slab grows by at least a dentry per file.
    let d = res
        .steps
        .iter()
        .find(|s| s.phase == kmem::DENTRIES)
        .unwrap();
    assert_eq!(d.item("NR_ANON_MAPPED"), 0);
    assert!(d.item("NR_SLAB_RECLAIMABLE_B") + d.item("NR_SLAB_UNRECLAIMABLE_B") >= 100 * 192);
    let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "start",
            kmem::OPEN,
            kmem::DENTRIES,
            kmem::CLOSE,
            kmem::REMOVE,
            "exit"
        ]
    );
    assert!(
        text.contains("verdict: kernel memory explains the usage"),
        "{text}"
    );
    assert!(!r.ledgers.is_empty());
    no_runs_left();
}

#[test]
fn kmem_cli_json_and_bad_input() {
    let test = "kmem_cli_json_and_bad_input";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    if integration_tests::kmem_counted_nowhere() {
        integration_tests::assert_refused(
            &["run", "kmem", "--sockets", "20", "--json"],
            "memory.kmem.usage_in_bytes",
        );
        no_runs_left();
        return;
    }
    let j = integration_tests::run_json(&["run", "kmem", "--sockets", "20", "--json"]);
    assert_eq!(j["experiment"], "kmem");
    assert!(j["verdict"]["status"].is_string());
    assert_eq!(j["results"]["params"]["sockets"], 20);
    assert!(
        j["phases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == kmem::OPEN)
    );
    let hier = detect_layout().unwrap().memory.unwrap();
    if hier.version == CgroupVersion::V1 {
        assert!(j["results"]["tcp_limit_written"].is_u64());
    }
    for (bad, needle) in [
        (["--sockets", "0"], "--sockets"),
        (["--sockets", "99999"], "--sockets"),
        (["--unread-bytes", "40000"], "--unread-bytes"),
        (["--cpu", "4096"], "4096"),
    ] {
        integration_tests::assert_refused(&["run", "kmem", bad[0], bad[1]], needle);
    }
    no_runs_left();
}
