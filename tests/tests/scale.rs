//! Scale (issue 16): `explain` of a parent with thousands of descendants, live and dying,
//! reads every one of them and closes the ledger.
//!
//! The subtree (`integration_tests::scale`): 2,000 live children each holding a few pages of
//! tmpfs, and 5,000 dying ones kept by theirs (v1 on the host, v2 in the guests). What is
//! exact here: the memcgs read (every descendant: the css `children` lists keep dying csses
//! until they are freed, and nothing frees them while their pages stay), the live and dying
//! counts, and the shmem the subtree holds (`shmem_add_to_page_cache` counts NR_SHMEM for each
//! page when it is added, so the exact value, aggregate plus unflushed deltas, is the pages
//! written). The ledger closes to the page (unexplained 0), as for one cgroup.

use integration_tests::{online_cpus, require_kernel, scale::ScaleTree, serial};
use memcg_drift::{
    cgroup::{MemoryHierarchy, detect_layout},
    explain::Explainer,
};

const LIVE: usize = 2000;
const DYING: usize = 5000;
const PAGES: u64 = 2;

fn hier() -> MemoryHierarchy {
    detect_layout().unwrap().memory.unwrap()
}

#[test]
fn explain_reads_thousands_of_descendants_and_closes() {
    if !require_kernel("explain_reads_thousands_of_descendants_and_closes") {
        return;
    }
    let _serial = serial();
    let hier = hier();
    let cpu = *online_cpus().last().unwrap();
    let t = ScaleTree::build(&hier, LIVE, DYING, PAGES, cpu).unwrap();
    eprintln!(
        "built {LIVE} live + {DYING} dying cgroups in {:?}",
        t.build_time
    );
    let mut ex = Explainer::new(&hier, t.tree.clone()).unwrap();
    let started = std::time::Instant::now();
    let r = ex.report().unwrap();
    eprintln!(
        "explain of {} memcgs: {:?}",
        r.snapshot.memcgs,
        started.elapsed()
    );
    let text = memcg_drift::explain::render_text(&r, false);
    let s = &r.snapshot;
    assert!(s.consistent, "never consistent: {:?}\n{text}", s.moved);
    assert_eq!(s.left_out, 0, "{text}");
    assert_eq!(s.freed_during_read, 0, "{text}");
    assert_eq!(s.live_descendants, LIVE, "{text}");
    assert_eq!(s.dying_descendants, DYING, "{text}");
    assert_eq!(s.memcgs, 1 + LIVE + DYING, "{text}");
    assert!(r.missing_terms.is_empty(), "{:?}\n{text}", r.missing_terms);
    assert_eq!(r.unexplained_pages, 0, "the ledger does not close:\n{text}");
    assert_eq!(r.unexplained_bytes, 0, "{text}");
    let ps = r.page_size as i64;
    let shmem = r
        .stat_book
        .iter()
        .find(|row| row.item == "NR_SHMEM")
        .unwrap_or_else(|| panic!("no NR_SHMEM row\n{text}"));
    let want = ((LIVE + DYING) as u64 * PAGES) as i64;
    assert_eq!(shmem.exact_bytes / ps, want, "{text}");
    // Every dying child is named with what keeps it.
    assert_eq!(r.dying.len(), DYING, "{text}");
    let mut ids: Vec<u64> = r.dying.iter().map(|d| d.cgroup_id).collect();
    ids.sort_unstable();
    let mut want_ids = t.dying_ids.clone();
    want_ids.sort_unstable();
    assert_eq!(ids, want_ids);
    for d in &r.dying {
        assert!(
            d.lru_pages + d.lru_add_pages >= PAGES as i64,
            "dying {} holds {} LRU + {} batched pages, wrote {PAGES}",
            d.path,
            d.lru_pages,
            d.lru_add_pages
        );
    }
    drop(ex);
    t.remove().unwrap();
}
