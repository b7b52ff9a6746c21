//! The ledger on snapshots built by hand, for the generated BTF layouts of 6.1, 6.12 and 6.18.

use super::*;
use crate::{
    kernel::{
        layout::ResidueLayout,
        testkernels::{Gen, layout},
    },
    residue::{BatchFolio, CpuResidue, MemcgNode, MemcgResidue, StockSlot},
};

fn node(memcg: u64, parent: Option<usize>, online: bool, name: &str) -> MemcgNode {
    MemcgNode {
        memcg,
        css: memcg,
        cgroup_id: memcg,
        name: name.into(),
        parent,
        depth: u32::from(parent.is_some()),
        css_flags: 0,
        online,
    }
}

fn memcg(l: &ResidueLayout, usage: u64, ncpu: usize) -> MemcgResidue {
    let n = l.stats.index.len;
    MemcgResidue {
        usage,
        state: vec![0; n],
        pending: vec![0; n],
        cpu_delta: vec![vec![0; n]; ncpu],
        stats_updates: vec![0; ncpu],
        ..Default::default()
    }
}

/// A charge batch for the synthetic readings (the real one is measured: workload::batch).
const BATCH: u64 = 64;

fn ctx(version: CgroupVersion) -> Context {
    Context {
        version,
        hugetlb_accounting: false,
        page_size: 4096,
        online_cpus: 2,
        is_root: false,
        charge_batch: Some(BATCH),
    }
}

/// X (memcg 0x100) with a live child (0x200) and a dying one (0x300).
fn x_live_dead() -> Tree {
    Tree {
        nodes: vec![
            node(0x100, None, true, "x"),
            node(0x200, Some(0), true, "live"),
            node(0x300, Some(0), false, "dead"),
        ],
        left_out: 0,
    }
}

/// X with a live child and a dying child, on two CPUs, every kind of residue present.
fn scenario(l: &ResidueLayout) -> (Tree, Residues) {
    let slot = |n: &str| l.stats.index.slot(n).unwrap();
    let (ia, aa, kmem, anon, sock) = (
        slot("NR_INACTIVE_ANON"),
        slot("NR_ACTIVE_ANON"),
        slot("MEMCG_KMEM"),
        slot("NR_ANON_MAPPED"),
        slot("MEMCG_SOCK"),
    );
    let tree = x_live_dead();
    let mut x = memcg(l, 1000, 2);
    let mut live = memcg(l, 300, 2);
    let mut dead = memcg(l, 150, 2);
    // Flushed: live had 200 inactive anon, all passed up into x; dead 100 of which 40
    // still wait in x's state_pending. x itself flushed 400 of its own.
    live.state[ia] = 200;
    dead.state[ia] = 100;
    x.state[ia] = 400 + 200 + 60;
    x.pending[ia] = 40;
    // Never flushed: x +30 on CPU 1, live +10 on CPU 0, dead -5 on CPU 1 (freed pages).
    x.cpu_delta[1][ia] = 30;
    live.cpu_delta[0][ia] = 10;
    dead.cpu_delta[1][ia] = -5;
    // 50 active anon in x, flushed.
    x.state[aa] = 50;
    // kmem: x 20 flushed (incl. 8 from live), live 8, plus 2 pending on CPU 0 in live.
    live.state[kmem] = 8;
    x.state[kmem] = 20;
    live.cpu_delta[0][kmem] = 2;
    // v2 sockets: 3 pages pending in x on CPU 0.
    x.cpu_delta[0][sock] = 3;
    // anon mapped: equals the LRU anon here.
    x.state[anon] = 710;
    x.cpu_delta[1][anon] = 30;
    live.cpu_delta[0][anon] = 10;
    dead.cpu_delta[1][anon] = -5;
    let cpus = vec![
        CpuResidue {
            stock: vec![
                StockSlot {
                    slot: 0,
                    memcg: 0x100,
                    pages: 60,
                },
                StockSlot {
                    slot: 1,
                    memcg: 0x999,
                    pages: 64,
                },
                // Emptied by consumption, still caching the dead child (a css reference).
                StockSlot {
                    slot: 2,
                    memcg: 0x300,
                    pages: 0,
                },
            ],
            obj: None,
            batch: vec![
                BatchFolio {
                    memcg: 0x200,
                    pages: 1,
                    anon: true,
                    counted: true,
                },
                BatchFolio {
                    memcg: 0x999,
                    pages: 1,
                    anon: true,
                    counted: true,
                },
            ],
            batch_len: 2,
        },
        CpuResidue {
            stock: vec![StockSlot {
                slot: 0,
                memcg: 0x300,
                pages: 7,
            }],
            obj: None,
            batch: vec![BatchFolio {
                memcg: 0x100,
                pages: 1,
                anon: true,
                counted: false,
            }],
            batch_len: 1,
        },
    ];
    let r = Residues {
        memcgs: vec![x, live, dead],
        cpus,
        consistent: Ok(()),
        static_percpu: Ok(()),
    };
    (tree, r)
}

/// The swap book: the counter against MEMCG_SWAP with its pending and per-CPU parts, on v2
/// (`swap`) and v1 (`memsw - memory`); a gap is signed; none for the root or an unread
/// counter.
#[test]
fn swap_book_closes_on_both_versions() {
    for g in Gen::ALL {
        let l = layout(g);
        let (tree, mut r) = scenario(&l);
        let sw = l.stats.index.slot("MEMCG_SWAP").unwrap();
        // 100 flushed into x (30 of them from live), 4 pending in x, +3 on CPU 1 in live,
        // -2 on CPU 0 in dead (an entry freed): 105 entries.
        r.memcgs[0].state[sw] = 100;
        r.memcgs[1].state[sw] = 30;
        r.memcgs[0].pending[sw] = 4;
        r.memcgs[1].cpu_delta[1][sw] = 3;
        r.memcgs[2].cpu_delta[0][sw] = -2;

        r.memcgs[0].swap = Some(105);
        let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
        let b = led.swap.clone().expect("a v2 swap book");
        assert_eq!(led.swap_not_read, None);
        assert_eq!((b.counter.as_str(), b.usage_pages), ("swap", 105), "{g:?}");
        assert_eq!(b.entries.term, "swap");
        assert_eq!(b.entries.pages, 105);
        assert_eq!(b.entries.per_cpu, vec![-2, 3]);
        assert_eq!(b.unexplained_pages, 0);

        // v1: memsw holds the memory usage (1000 pages) and the swapped-out pages.
        r.memcgs[0].swap = Some(1000 + 105);
        let b = compute(&l, &tree, &r, &ctx(CgroupVersion::V1))
            .swap
            .unwrap();
        assert_eq!((b.counter.as_str(), b.usage_pages), ("memsw - memory", 105));
        assert_eq!(b.unexplained_pages, 0);

        // Seven entries the statistics do not have show as +7.
        r.memcgs[0].swap = Some(112);
        let b = compute(&l, &tree, &r, &ctx(CgroupVersion::V2))
            .swap
            .unwrap();
        assert_eq!(b.unexplained_pages, 7);

        let mut root = ctx(CgroupVersion::V2);
        root.is_root = true;
        let led = compute(&l, &tree, &r, &root);
        assert!(led.swap.is_none());
        assert!(led.swap_not_read.unwrap().contains("root"));
        r.memcgs[0].swap = None;
        let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
        assert_eq!(
            led.swap_not_read.as_deref(),
            Some("the swap counter was not read")
        );
    }
}

#[test]
fn identity_closes_with_every_term() {
    for g in Gen::ALL {
        let l = layout(g);
        let (tree, r) = scenario(&l);
        let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
        let t = |id: &str| led.terms.iter().find(|t| t.term == id).unwrap().clone();
        // inactive anon: 660 flushed + 40 pending + (10, 25) per CPU = 735.
        let ia = t("lru.inactive_anon");
        assert_eq!(ia.flushed, Some(660));
        assert_eq!(ia.pending_tree, Some(40));
        assert_eq!(ia.per_cpu, vec![10, 25]);
        assert_eq!(ia.pages, 735);
        // Own shares: x = 660 + 40 - (200 + 100) + 30 = 430; live 200 + 10; dead 100 - 5.
        assert_eq!(
            ia.by_member,
            ByMember {
                own: 430,
                live: 210,
                dying: 95
            }
        );
        assert_eq!(t("lru.active_anon").pages, 50);
        assert_eq!(t("kmem").pages, 22);
        assert_eq!(t("sock").pages, 3);
        let stock = t("stock");
        assert_eq!(stock.per_cpu, vec![60, 7]);
        assert_eq!(stock.by_member.dying, 7);
        // A batch per memcg in as many slots as the generation has (6.18: 7; before:
        // 1), for the 3 memcgs of the subtree, on 2 CPUs.
        let slots = l.stock.as_ref().unwrap().slots.min(3) as i64;
        assert_eq!(
            stock.bound.as_ref().unwrap().pages,
            BATCH as i64 * slots * 2,
            "{g:?}"
        );
        let batch = t("lru_add");
        assert_eq!(batch.per_cpu, vec![1, 1]);
        assert_eq!(batch.unmapped, Some(1));
        assert_eq!(batch.unmapped_per_cpu, Some(vec![0, 1]));
        // 735 + 50 + 22 + 3 + 67 + 2 = 879 explained of 1000.
        assert_eq!(led.explained_pages, 879);
        assert_eq!(led.unexplained_pages, 1000 - 879);
        assert!(led.missing.is_empty());
        assert_eq!(led.not_read.len(), 3);
        // Mapped view: anon 710 + 35 + file 0 + kmem 22 + sock 3 + stock 67 + 1 uncounted
        // batch folio.
        assert_eq!(led.mapped_view_unexplained_pages, Some(1000 - 838));
        // The dying child.
        assert_eq!(led.dying.len(), 1);
        assert_eq!(led.dying[0].path, "dead");
        assert_eq!(led.dying[0].lru_pages, 95);
        assert_eq!(led.dying[0].stock_pages, 7);
        assert_eq!(led.dying[0].stock_slots, 2);
        assert_eq!(led.dying[0].lru_add_pages, 0);
        assert_eq!(led.dying[0].usage_pages, 150);
        assert_eq!(led.members, (1, 1, 1, 0));
        // The gap: usage - shown (660 + 50 + 20 + 0) = 270 = unflushed (75 + 0 + 2 + 3) + stock
        // 67 + batch 2 + unexplained 121 + clamped 0.
        assert_eq!(led.gap.pages, 270);
        assert_eq!(led.gap.unflushed_pages, 80);
        assert_eq!(
            led.gap.unflushed_pages
                + led.gap.stock_pages
                + led.gap.lru_add_pages
                + led.gap.unexplained_pages
                - led.gap.clamped_pages,
            led.gap.pages
        );
        // The stat book shows the flushed aggregate and the exact value.
        let anon = led
            .stat_book
            .iter()
            .find(|s| s.item == "NR_ANON_MAPPED")
            .unwrap();
        assert_eq!(anon.key.as_deref(), Some("anon"));
        assert_eq!(anon.shown_bytes, 710 * 4096);
        assert_eq!(anon.exact_bytes, 745 * 4096);
    }
}

#[test]
fn v1_leaves_sockets_out_and_names_keys() {
    for g in Gen::ALL {
        let l = layout(g);
        let (tree, r) = scenario(&l);
        let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V1));
        assert!(led.terms.iter().all(|t| t.term != "sock"));
        assert_eq!(led.explained_pages, 876);
        let anon = led
            .stat_book
            .iter()
            .find(|s| s.item == "NR_ANON_MAPPED")
            .unwrap();
        assert_eq!(anon.key.as_deref(), Some("total_rss"));
        assert!(
            led.stat_book
                .iter()
                .any(|s| s.item == "MEMCG_KMEM" && s.key.is_none())
        );
    }
}

#[test]
fn unreadable_static_percpu_names_the_missing_terms() {
    for g in Gen::ALL {
        let l = layout(g);
        let (tree, mut r) = scenario(&l);
        r.static_percpu = Err(crate::residue::StaticPercpuError::RouteCheck {
            cpu: 1,
            this_cpu_off: 0x1000,
            base: 0x2000,
        });
        r.cpus.clear();
        let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
        let names: Vec<&str> = led.missing.iter().map(|m| m.term.as_str()).collect();
        assert_eq!(names, ["lru_add", "stock"]);
        assert!(led.missing[0].reason.contains("route check"));
        assert_eq!(led.explained_pages, 810);
    }
}

#[test]
fn root_counts_only_its_children() {
    for g in Gen::ALL {
        let l = layout(g);
        let (tree, mut r) = scenario(&l);
        // As the root: x's own 430 inactive anon pages are not charged; usage counts the
        // children's subtrees: live (210 LRU, 10 kmem, 1 batch folio) and dead (95 LRU, 7 in
        // stock).
        r.memcgs[0].usage = 210 + 10 + 1 + 95 + 7;
        let mut c = ctx(CgroupVersion::V1);
        c.is_root = true;
        let led = compute(&l, &tree, &r, &c);
        let ia = led
            .terms
            .iter()
            .find(|t| t.term == "lru.inactive_anon")
            .unwrap();
        assert_eq!(ia.pages, 210 + 95);
        assert_eq!(ia.by_member.own, 0);
        assert_eq!(led.unexplained_pages, 0);
    }
}

#[test]
fn node_paths_follow_parents() {
    let tree = Tree {
        nodes: vec![
            node(1, None, true, "x"),
            node(2, Some(0), true, "a"),
            node(3, Some(1), false, "b"),
        ],
        left_out: 0,
    };
    assert_eq!(node_path(&tree, 2), "a/b");
    assert_eq!(node_path(&tree, 0), "");
}

/// Before MEMCG_KMEM (5.10): on v1 the kmem term is the kmem page_counters (hierarchical, so a
/// member's own share is its counter less its children's); on v2 kernel memory is counted
/// nowhere, and the report says so instead of a term.
#[test]
fn kmem_without_memcg_kmem_comes_from_the_v1_counter() {
    let l = layout(Gen::Batched);
    assert_eq!(l.stats.index.slot("MEMCG_KMEM"), None);
    let tree = x_live_dead();
    let with_kmem = |usage, kmem| MemcgResidue {
        v1: Some((usage, kmem, 0)),
        ..memcg(&l, usage, 2)
    };
    let r = Residues {
        memcgs: vec![with_kmem(100, 30), with_kmem(40, 12), with_kmem(20, 5)],
        cpus: vec![],
        consistent: Ok(()),
        static_percpu: Ok(()),
    };
    let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V1));
    let k = led.terms.iter().find(|t| t.term == "kmem").unwrap();
    assert_eq!((k.pages, k.item.as_deref()), (30, None));
    assert_eq!(
        k.by_member,
        ByMember {
            own: 13,
            live: 12,
            dying: 5
        }
    );
    assert!(led.missing.iter().all(|m| m.term != "kmem"));

    let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
    assert!(led.terms.iter().all(|t| t.term != "kmem"));
    let m = led.missing.iter().find(|m| m.term == "kmem").unwrap();
    assert!(m.reason.contains("counted nowhere"), "{}", m.reason);
}

/// Batched kernels have no flush: the `unflushed` bound is the spill threshold (the charge
/// batch) per item, CPU and memcg, and the gap names the threshold; rstat kernels do not.
#[test]
fn batched_kernels_bound_the_residues_by_the_spill_threshold() {
    let l = layout(Gen::Batched);
    let tree = x_live_dead();
    let r = Residues {
        memcgs: vec![memcg(&l, 100, 2), memcg(&l, 40, 2), memcg(&l, 20, 2)],
        cpus: vec![],
        consistent: Ok(()),
        static_percpu: Ok(()),
    };
    let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V1));
    assert_eq!(led.gap.spill_threshold_pages, Some(BATCH as i64));
    let items = led.terms.iter().filter(|t| t.flushed.is_some()).count() as i64;
    let unflushed = |led: &Ledger| {
        led.gap
            .bounds
            .iter()
            .find(|(w, _)| w == "unflushed")
            .map(|(_, b)| b.clone())
            .unwrap()
    };
    let b = unflushed(&led);
    // 2 online CPUs, 3 memcgs in the subtree.
    assert_eq!(b.pages, BATCH as i64 * 2 * items * 3, "{}", b.why);
    assert!(b.why.contains("spills"), "{}", b.why);

    let l = layout(Gen::New);
    let (tree, r) = scenario(&l);
    let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
    assert_eq!(led.gap.spill_threshold_pages, None);
    assert_eq!(unflushed(&led).pages, BATCH as i64 * 2);
}

#[test]
fn a_dying_memcg_says_what_holds_it() {
    let d = |usage_pages, stock_slots, stock_pages| Dying {
        cgroup_id: 7,
        path: "c".into(),
        usage_pages,
        lru_pages: 0,
        lru_add_pages: 0,
        kmem_pages: 0,
        stock_pages,
        stock_slots,
    };
    // An empty slot: the one holder drain_all_stock leaves alone.
    let by = d(0, 1, 0).held_by();
    assert_eq!(by.len(), 1);
    assert!(
        by[0].starts_with("1 charge stock slot(s) caching it, 0 page(s) (drain_all_stock skips")
    );
    assert_eq!(
        d(0, 2, 5).held_by(),
        ["2 charge stock slot(s) caching it, 5 page(s)"]
    );
    // Charged pages no statistic names (5.10 v2 kernel memory).
    assert!(d(4, 0, 0).held_by()[0].starts_with("4 page(s) charged to it that no statistic"));
    assert!(d(0, 0, 0).held_by()[0].starts_with("no charged page seen"));
}
