//! Synthetic kernel BTF of three memcg generations for unit tests (6.1, 6.12, 6.18 shapes):
//! the layout resolver, the residue decoder and the ledger are tested on each of them, so no
//! unit test depends on the BTF of the machine it runs on. A fourth, the batched statistics of
//! 5.10, is used by the tests of what differs there.

use super::{
    btf::KernelBtf,
    layout::{MEMCG_NODE_STAT_ITEMS, ResidueLayout},
    testbtf::BtfBuilder,
};

/// Which generation a synthetic BTF imitates.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Gen {
    /// 6.18: compacted stats, 7-slot stock, separate obj_stock, stats_updates.
    New,
    /// 6.12: compacted stats, one slot, obj stock inside memcg_stock_pcp.
    Mid,
    /// 6.1: enum-indexed stats, one slot, no per-CPU stats_updates, `_folio_order`.
    Old,
    /// 5.10: batched stats (`vmstats[]` atomics in the memcg, per-CPU `stat[]`), a stock
    /// without slab fields, no folios, no `bpf_map_lookup_percpu_elem`. Not in [`Gen::ALL`].
    Batched,
}

/// Node stat enumerators of the synthetic kernels (a subset in kernel order, plus the
/// sentinel), and how many of them are memcg items.
fn node_items(g: Gen) -> Vec<&'static str> {
    let mut v = vec![
        "NR_LRU_BASE",
        "NR_INACTIVE_ANON",
        "NR_ACTIVE_ANON",
        "NR_INACTIVE_FILE",
        "NR_ACTIVE_FILE",
        "NR_UNEVICTABLE",
        "NR_SLAB_RECLAIMABLE_B",
        "NR_SLAB_UNRECLAIMABLE_B",
        "NR_ISOLATED_ANON",
        "NR_ANON_MAPPED",
        "NR_FILE_PAGES",
        "NR_SHMEM",
        "NR_KERNEL_STACK_KB",
        "NR_PAGETABLE",
    ];
    if g == Gen::New {
        v.push("PGDEMOTE_PROACTIVE");
        v.push("NR_HUGETLB");
    }
    v
}

/// Builds a synthetic kernel BTF of generation `g`. Returns the blob and the length of
/// `state[]` it declares.
pub(crate) fn synthetic(g: Gen) -> (Vec<u8>, u32) {
    let mut b = BtfBuilder::new();
    let long = b.int("long", 8);
    let int = b.int("int", 4);
    let u8t = b.int("unsigned char", 1);
    let ptr = b.ptr();

    // enums
    let nodes = node_items(g);
    let mut node_vals: Vec<(&str, i32)> = Vec::new();
    let mut v = 0;
    for n in &nodes {
        if *n == "NR_LRU_BASE" {
            node_vals.push((n, 0));
            continue;
        }
        node_vals.push((n, v));
        v += 1;
    }
    node_vals.push(("NR_VM_NODE_STAT_ITEMS", v));
    let first_memcg = v;
    b.enum_("node_stat_item", &node_vals);
    let memcg_items: &[&str] = if g == Gen::Batched {
        // v5.10.35 memcontrol.h:34-38: no MEMCG_KMEM yet (5.18).
        &["MEMCG_SWAP", "MEMCG_SOCK", "MEMCG_PERCPU_B"]
    } else {
        &[
            "MEMCG_SWAP",
            "MEMCG_SOCK",
            "MEMCG_PERCPU_B",
            "MEMCG_VMALLOC",
            "MEMCG_KMEM",
            "MEMCG_ZSWAP_B",
            "MEMCG_ZSWAPPED",
        ]
    };
    let mut mvals: Vec<(&str, i32)> = memcg_items
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, first_memcg + i as i32))
        .collect();
    let nr_stat = first_memcg + memcg_items.len() as i32;
    mvals.push(("MEMCG_NR_STAT", nr_stat));
    b.enum_("memcg_stat_item", &mvals);
    b.enum_(
        "",
        &[
            ("CSS_NO_REF", 1),
            ("CSS_ONLINE", 2),
            ("CSS_RELEASED", 4),
            ("CSS_DYING", 16),
        ],
    );
    b.enum_(
        "cgroup_subsys_id",
        &[("cpu_cgrp_id", 0), ("memory_cgrp_id", 4)],
    );
    b.enum_("pageflags", &[("PG_locked", 0), ("PG_head", 6)]);
    b.enum_(
        "page_memcg_data_flags",
        &[
            ("MEMCG_DATA_OBJEXTS", 1),
            ("MEMCG_DATA_KMEM", 2),
            ("__NR_MEMCG_DATA_FLAGS", 4),
        ],
    );

    // The compacted length: the synthetic items that the source lists contain.
    let enum_indexed = matches!(g, Gen::Old | Gen::Batched);
    let state_len: u32 = if enum_indexed {
        nr_stat as u32
    } else {
        nodes
            .iter()
            .filter(|n| MEMCG_NODE_STAT_ITEMS.contains(n))
            .count() as u32
            + memcg_items.len() as u32
    };
    let state = b.array(long, int, state_len);

    let list_head = b.struct_("list_head", 16, &[("next", ptr, 0), ("prev", ptr, 8)]);
    let css = b.struct_(
        "cgroup_subsys_state",
        200,
        &[
            ("cgroup", ptr, 0),
            ("sibling", list_head, 48),
            ("children", list_head, 64),
            ("flags", int, 84),
            ("parent", ptr, 176),
        ],
    );
    let pc = b.struct_(
        "page_counter",
        256,
        &[
            ("usage", long, 0),
            ("failcnt", long, 8),
            ("watermark", long, 120),
            ("max", long, 200),
        ],
    );
    let memsw_union = b.union_("", 256, &[("swap", pc, 0), ("memsw", pc, 0)]);
    let mut memcg_members = vec![
        ("css", css, 0),
        ("memory", pc, 256),
        ("", memsw_union, 512),
        ("vmstats", ptr, 800),
        ("objcg", ptr, 808),
        ("vmstats_percpu", ptr, 816),
        ("kmem", pc, 1024),
        ("tcpmem", pc, 1280),
    ];
    if g == Gen::New {
        memcg_members.retain(|m| m.0 != "tcpmem");
        memcg_members.push(("tcpmem", pc, 1536));
    }
    if g == Gen::Batched {
        // atomic_long_t vmstats[MEMCG_NR_STAT] (v5.10.35 memcontrol.h:285).
        let counter = b.struct_("", 8, &[("counter", long, 0)]);
        let atomic_long = b.typedef("atomic_long_t", counter);
        let atomics = b.array(atomic_long, int, state_len);
        memcg_members.retain(|m| m.0 != "vmstats");
        memcg_members.push(("vmstats", atomics, 1536));
        b.struct_("mem_cgroup", 2048, &memcg_members);
        b.struct_(
            "memcg_vmstats_percpu",
            8 * state_len + 64,
            &[("stat", state, 0)],
        );
    } else {
        b.enum_("bpf_func_id", &[("BPF_FUNC_map_lookup_percpu_elem", 195)]);
        b.struct_("mem_cgroup", 2048, &memcg_members);
        memcg_vmstats(&mut b, g, state, state_len, int, ptr);
    }
    shared_tail(&mut b, g, long, int, u8t, ptr);
    (b.build(), state_len)
}

/// `memcg_vmstats` and `memcg_vmstats_percpu` of the rstat generations.
fn memcg_vmstats(b: &mut BtfBuilder, g: Gen, state: u32, state_len: u32, int: u32, ptr: u32) {
    let vs_members: Vec<(&str, u32, u32)> = if g == Gen::Old {
        vec![("state", state, 0), ("state_pending", state, 8 * state_len)]
    } else {
        vec![
            ("state", state, 0),
            ("state_local", state, 8 * state_len),
            ("state_pending", state, 16 * state_len),
            ("stats_updates", int, 24 * state_len),
        ]
    };
    b.struct_("memcg_vmstats", 32 * state_len, &vs_members);
    let vsp_members: Vec<(&str, u32, u32)> = if g == Gen::Old {
        vec![("state", state, 0), ("state_prev", state, 8 * state_len)]
    } else {
        vec![
            ("stats_updates", int, 0),
            ("parent", ptr, 8),
            ("vmstats", ptr, 16),
            ("state", state, 24),
            ("state_prev", state, 24 + 8 * state_len),
        ]
    };
    b.struct_("memcg_vmstats_percpu", 64 + 16 * state_len, &vsp_members);
}

/// Everything after the statistics: cgroups, the runqueue route, stocks, batches.
fn shared_tail(b: &mut BtfBuilder, g: Gen, long: u32, int: u32, u8t: u32, ptr: u32) {
    b.struct_(
        "obj_cgroup",
        48,
        &[("memcg", ptr, 16), ("nr_charged_bytes", int, 24)],
    );
    b.struct_("cgroup", 512, &[("kn", ptr, 256)]);
    b.struct_("kernfs_node", 128, &[("name", ptr, 40), ("id", long, 104)]);
    let subsys = b.array(ptr, int, 14);
    b.struct_("css_set", 200, &[("subsys", subsys, 0)]);
    let se = b.struct_("sched_entity", 256, &[("cfs_rq", ptr, 136)]);
    b.struct_(
        "task_struct",
        4096,
        &[("se", se, 128), ("cgroups", ptr, 2048)],
    );
    b.struct_("cfs_rq", 512, &[("rq", ptr, 304)]);
    let pptrs = b.array(ptr, int, 0);
    let arr_union = b.union_("", 8, &[("value", pptrs, 0), ("pptrs", pptrs, 0)]);
    b.struct_("bpf_array", 320, &[("", arr_union, 312)]);

    let stock_size;
    let stock = if g == Gen::New {
        let nr = b.array(u8t, int, 7);
        let cached = b.array(ptr, int, 7);
        stock_size = 128;
        b.struct_(
            "memcg_stock_pcp",
            stock_size,
            &[
                ("nr_pages", nr, 1),
                ("cached", cached, 8),
                ("flags", long, 96),
            ],
        )
    } else if g == Gen::Batched {
        // v5.10.35 memcontrol.c:2202: no slab statistics held in the stock yet.
        stock_size = 64;
        b.struct_(
            "memcg_stock_pcp",
            stock_size,
            &[
                ("cached", ptr, 0),
                ("nr_pages", int, 8),
                ("cached_objcg", ptr, 16),
                ("nr_bytes", int, 24),
            ],
        )
    } else {
        stock_size = 88;
        b.struct_(
            "memcg_stock_pcp",
            stock_size,
            &[
                ("cached", ptr, 0),
                ("nr_pages", int, 8),
                ("cached_objcg", ptr, 16),
                ("cached_pgdat", ptr, 24),
                ("nr_bytes", int, 32),
                ("nr_slab_reclaimable_b", int, 36),
                ("nr_slab_unreclaimable_b", int, 40),
            ],
        )
    };
    let folios = b.array(ptr, int, if g == Gen::Old { 15 } else { 31 });
    let fbatch_size = if g == Gen::Old { 128 } else { 256 };
    let fbatch = b.struct_(
        "folio_batch",
        fbatch_size,
        &[("nr", u8t, 0), ("folios", folios, 8)],
    );
    let fbatches = b.struct_(
        "cpu_fbatches",
        1024,
        &[
            ("lru_add", fbatch, 16),
            ("lru_deactivate", fbatch, 16 + fbatch_size),
        ],
    );
    let mut folio_members = vec![
        ("flags", long, 0),
        ("mapping", ptr, 24),
        ("_mapcount", int, 48),
        ("memcg_data", long, 56),
    ];
    folio_members.push(if g == Gen::Old {
        ("_folio_order", u8t, 81)
    } else {
        ("_flags_1", long, 64)
    });
    b.struct_("folio", 128, &folio_members);

    let rq = b.struct_("rq", 4096, &[]);
    let off_t = b.typedef("unsigned long", long);
    let mut vars = vec![
        (b.var("this_cpu_off", off_t), 1000, 8),
        (b.var("runqueues", rq), 4096, 4096),
        (b.var("memcg_stock", stock), 12288, stock_size),
    ];
    // 5.10 keeps pagevecs of pages (`lru_pvecs`), not folio batches.
    if g != Gen::Batched {
        vars.push((b.var("cpu_fbatches", fbatches), 9000, 1024));
    }
    if g == Gen::New {
        let obj = b.struct_(
            "obj_stock_pcp",
            64,
            &[
                ("nr_bytes", int, 4),
                ("cached_objcg", ptr, 8),
                ("cached_pgdat", ptr, 16),
                ("nr_slab_reclaimable_b", int, 24),
                ("nr_slab_unreclaimable_b", int, 28),
            ],
        );
        vars.push((b.var("obj_stock", obj), 12416, 64));
    }
    // Debian's 5.10 BTF lists no per-CPU variables (they come from kallsyms there).
    if g == Gen::Batched {
        vars.clear();
    }
    b.datasec(".data..percpu", 16384, &vars);
}

impl Gen {
    /// Every generation, oldest first.
    pub(crate) const ALL: [Gen; 3] = [Gen::Old, Gen::Mid, Gen::New];
}

/// The residue layout resolved from generation `g`'s synthetic BTF.
pub(crate) fn layout(g: Gen) -> ResidueLayout {
    let (blob, _) = synthetic(g);
    let btf = KernelBtf::from_bytes(&blob).unwrap();
    ResidueLayout::resolve(&btf).unwrap()
}
