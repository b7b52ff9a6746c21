//! `memcg-drift run shmem` against the real kernel: tmpfs pages stay charged to the cgroup that
//! wrote them when the writer moves to a sibling.
//!
//! The kernel's rules (6.18 mm/shmem.c, mm/filemap.c, mm/memcontrol.c; 6.1/6.12 the same; see
//! the module docs of userspace/src/experiment/shmem.rs):
//! - N tmpfs pages written by a task in `a` are charged to `a` at allocation and counted as
//!   NR_SHMEM and NR_FILE_PAGES, +N each, on the writer's CPU (the probes' per-CPU records of
//!   the write phase), not as anon;
//! - moving the task moves no charge: `a`'s usage − stock and its shmem/anon stay, `b`'s usage
//!   does not move; pages allocated after the move (tmpfs and anon) are charged to `b`;
//! - removing the first file uncharges its pages from `a` (NR_SHMEM −N exactly; usage − stock
//!   drops by N, minus what an lru_add batch may still hold); the workload's exit uncharges
//!   every anon page it faulted in `a` from `a`;
//! - the ledgers of both cgroups close (unexplained 0) after every phase.

use integration_tests::{no_runs_left, online_cpus, require_kernel, serial};
use memcg_drift::{
    cgroup::detect_layout,
    experiment::{
        Common,
        shmem::{self, Params, Results},
    },
};

#[test]
fn shmem_pages_stay_with_the_writing_cgroup_after_a_move() {
    let test = "shmem_pages_stay_with_the_writing_cgroup_after_a_move";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let cpu = *online_cpus().last().unwrap();
    let n = 256;
    let k = 64;
    let r = shmem::run(
        &hier,
        Params {
            pages: n,
            anon_pages: k,
            cpu,
        },
        &Common::default(),
    )
    .unwrap();
    let text = memcg_drift::experiment::render_text(&r);
    eprintln!("{text}");
    for c in &r.verdict.checks {
        assert!(
            c.ok,
            "{}: expected {}, measured {}",
            c.what, c.expected, c.measured
        );
    }
    let res: Results = serde_json::from_value(r.results.clone()).unwrap();
    let page = r.page_size as i64;
    let n = n as i64;
    // The probes: +N shmem and file pages on the writer's CPU, in the right cgroup only.
    for (ph, cg, item, on, all) in &res.writes {
        let want = if (ph == shmem::WRITE_A && cg == "a") || (ph == shmem::WRITE_B && cg == "b") {
            n
        } else {
            0
        };
        assert_eq!((*on, *all), (want, want), "{ph} {cg} {item}");
    }
    assert_eq!(res.writes.len(), 8);
    let snap = |name: &str| {
        res.snapshots
            .iter()
            .find(|(a, _)| a.label == format!("a after {name}"))
            .unwrap()
    };
    let (a_w, b_w) = snap(shmem::WRITE_A);
    let (a_m, b_m) = snap(shmem::MOVE);
    assert_eq!(shmem::charged(a_w, page), shmem::charged(a_m, page));
    assert_eq!(b_w.usage_bytes, b_m.usage_bytes);
    assert_eq!(a_m.item("NR_SHMEM"), n * page);
    assert_eq!(b_m.item("NR_SHMEM"), 0);
    let (a_t, b_t) = snap(shmem::TOUCH_B);
    assert_eq!(a_t.item("NR_SHMEM"), n * page);
    assert_eq!(b_t.item("NR_SHMEM"), n * page);
    assert_eq!(b_t.item("NR_ANON_MAPPED"), 64 * page);
    assert_eq!(a_t.item("NR_ANON_MAPPED"), a_m.item("NR_ANON_MAPPED"));
    let (a_r, _) = snap(shmem::REMOVE_A);
    assert_eq!(a_r.item("NR_SHMEM"), 0);
    assert!(shmem::charged(a_t, page) - shmem::charged(a_r, page) >= n - a_r.term("lru_add"));
    let (a_e, b_e) = snap(shmem::EXIT);
    assert_eq!(
        (a_e.item("NR_ANON_MAPPED"), b_e.item("NR_ANON_MAPPED")),
        (0, 0)
    );
    let (_, b_end) = snap(shmem::REMOVE_B);
    assert_eq!(b_end.item("NR_SHMEM"), 0);
    for (a, b) in &res.snapshots {
        for sn in [a, b] {
            integration_tests::assert_remainder(sn.unexplained_pages, sn.kmem_uncounted, &sn.label);
        }
    }
    assert!(text.contains("tmpfs:"), "{text}");
    assert!(
        text.contains("verdict: the charge stays with the cgroup that allocated"),
        "{text}"
    );
    // The files and the private tmpfs (if one was mounted) are gone with the run.
    assert!(
        !std::path::Path::new("/run/memcg-drift")
            .join(&r.run_id)
            .exists()
    );
    no_runs_left();
}

#[test]
fn shmem_cli_json_and_bad_input() {
    let test = "shmem_cli_json_and_bad_input";
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let j = integration_tests::run_json(&[
        "run",
        "shmem",
        "--pages",
        "32",
        "--anon-pages",
        "8",
        "--json",
    ]);
    assert_eq!(j["experiment"], "shmem");
    assert_eq!(j["results"]["params"]["pages"], 32);
    assert!(j["results"]["tmpfs"].is_string());
    let names: Vec<&str> = j["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&shmem::MOVE) && names.contains(&shmem::REMOVE_A));
    for (bad, needle) in [
        (["--pages", "0"], "--pages"),
        (["--anon-pages", "x"], "--anon-pages"),
        (["--cpu", "4096"], "4096"),
    ] {
        integration_tests::assert_refused(&["run", "shmem", bad[0], bad[1]], needle);
    }
    no_runs_left();
}
