//! Unit tests of the layout resolution, on the generated BTF of each kernel generation.

use super::*;
use crate::kernel::{
    symbols::KallsymsData,
    testbtf::BtfBuilder,
    testkernels::{Gen, synthetic},
};

fn resolve(g: Gen) -> (ResidueLayout, u32) {
    let (blob, len) = synthetic(g);
    let btf = KernelBtf::from_bytes(&blob).unwrap();
    (ResidueLayout::resolve(&btf).unwrap(), len)
}

/// The resolver asks nothing by name beyond `LAYOUT_TYPES`: one scan of the names on every
/// generation (23 scans without the prefetch), through both btf-rs backends, with the
/// same answer.
#[test]
fn one_scan_resolves_the_layout() {
    for g in Gen::ALL {
        let (blob, _) = synthetic(g);
        for btf in [
            KernelBtf::from_bytes(&blob).unwrap(),
            KernelBtf::mapped(&blob).expect("memfd copy mapped"),
        ] {
            let layout = ResidueLayout::resolve(&btf).unwrap();
            assert_eq!(btf.scans(), 1, "{g:?}: names scanned more than once");
            assert_eq!(layout, resolve(g).0, "{g:?}");
        }
    }
}

#[test]
fn new_layout_multi_slot_stock_and_separate_obj_stock() {
    let (l, len) = resolve(Gen::New);
    let st = l.stock.as_ref().unwrap();
    assert_eq!(
        (st.slots, st.cached, st.nr_pages, st.nr_pages_size),
        (7, 8, 1, 1)
    );
    assert_eq!(st.var, 12288);
    assert_eq!(st.size, 64);
    let o = l.obj_stock.as_ref().unwrap();
    assert_eq!(o.var_name, "obj_stock");
    assert_eq!(
        (o.var, o.nr_bytes, o.cached_objcg, o.size),
        (12416, 4, 8, 32)
    );
    assert_eq!(o.objcg_memcg, 16);
    assert!(l.stats.index.compacted);
    assert_eq!(l.stats.index.len, len as usize);
    assert_eq!(l.stats.vsp_stats_updates, Some(0));
    assert!(l.stats.per_memcg_flush);
    assert_eq!(l.stats.vs_stats_updates, Some(24 * len as u64));
    // Compacted: source order of the items present (NR_ISOLATED_ANON is not a memcg item).
    assert_eq!(l.stats.index.slot("NR_INACTIVE_ANON"), Some(0));
    assert_eq!(l.stats.index.slot("NR_ANON_MAPPED"), Some(7));
    assert_eq!(l.stats.index.slot("NR_HUGETLB"), Some(13));
    assert_eq!(l.stats.index.slot("MEMCG_SWAP"), Some(14));
    assert_eq!(l.stats.index.slot("MEMCG_KMEM"), Some(18));
    assert_eq!(l.stats.index.slot("NR_ISOLATED_ANON"), None);
    let b = l.lru_add.as_ref().unwrap();
    assert_eq!((b.var, b.capacity, b.folios, b.size), (9016, 31, 8, 256));
    assert_eq!((b.folio_order, b.pg_head, b.memcg_data_mask), (64, 6, 3));
    let p = l.percpu.as_ref().unwrap();
    assert_eq!(
        (p.runqueues, p.this_cpu_off, l.bpf_array_pptrs),
        (4096, 1000, 312)
    );
    assert_eq!((p.task_se_cfs_rq, p.cfs_rq_rq), (264, 304));
    assert_eq!(l.counters.usage, 256);
    assert_eq!(l.counters.watermark, 376);
    assert_eq!(l.counters.v1, Some((512, 1024, 1536)));
    assert_eq!(l.counters.swap, Some(512));
    assert_eq!(l.cgroup.css_online, 2);
    assert_eq!(l.cgroup.css_dying, Some(16));
    assert_eq!(l.cgroup.memory_cgrp_id, 4);
    assert_eq!(l.cgroup.css_span, 192);
}

#[test]
fn mid_layout_single_slot_with_embedded_obj_stock() {
    let (l, len) = resolve(Gen::Mid);
    let st = l.stock.as_ref().unwrap();
    assert_eq!(
        (st.slots, st.cached, st.nr_pages, st.nr_pages_size),
        (1, 0, 8, 4)
    );
    assert_eq!(st.size, 12);
    let o = l.obj_stock.as_ref().unwrap();
    assert_eq!(o.var_name, "memcg_stock");
    assert_eq!(
        (o.var, o.cached_objcg, o.nr_bytes, o.slab_b),
        (12288, 16, 32, Some((36, 40)))
    );
    assert_eq!(o.size, 44);
    assert!(l.stats.index.compacted);
    assert_eq!(l.stats.index.len, len as usize);
    // No PGDEMOTE_PROACTIVE/NR_HUGETLB in this enum: MEMCG_SWAP follows NR_PAGETABLE.
    assert_eq!(l.stats.index.slot("NR_PAGETABLE"), Some(11));
    assert_eq!(l.stats.index.slot("MEMCG_SWAP"), Some(12));
    assert_eq!(l.stats.index.slot("NR_HUGETLB"), None);
}

#[test]
fn old_layout_enum_indexed_stats_and_folio_order() {
    let (l, len) = resolve(Gen::Old);
    assert!(!l.stats.index.compacted);
    assert_eq!(l.stats.index.len, len as usize);
    assert_eq!(l.stats.vsp_stats_updates, None);
    assert!(!l.stats.per_memcg_flush);
    // Enum-indexed: NR_LRU_BASE aliases NR_INACTIVE_ANON at 0, NR_ISOLATED_ANON is a slot
    // too (every node item has one), MEMCG_SWAP sits at NR_VM_NODE_STAT_ITEMS.
    assert_eq!(l.stats.index.slot("NR_INACTIVE_ANON"), Some(0));
    assert_eq!(l.stats.index.slot("NR_LRU_BASE"), None);
    assert_eq!(l.stats.index.slot("NR_ISOLATED_ANON"), Some(7));
    assert_eq!(l.stats.index.slot("MEMCG_SWAP"), Some(13));
    assert_eq!(l.stats.index.slot("MEMCG_KMEM"), Some(17));
    assert_eq!(l.stats.index.name(17), Some("MEMCG_KMEM"));
    let b = l.lru_add.as_ref().unwrap();
    assert_eq!((b.capacity, b.size, b.folio_order), (15, 128, 81));
    let cfg = l.config(4, 16);
    assert_eq!(cfg.flags & residue_flags::PCPU_STATS_UPDATES, 0);
    assert_eq!(cfg.flags & residue_flags::FLUSH_UPDATES, 0);
    assert_eq!(cfg.state_bytes, 8 * len);
    assert_eq!(cfg.batch_capacity, 15);
    assert_eq!(cfg.pcpu_obj_stock, cfg.pcpu_memcg_stock);
}

/// 6.12+ built without CONFIG_MEMCG_V1 keeps the swap/memsw union but not kmem and tcpmem:
/// the swap counter is still read (the swap book needs it), the v1 counters are not.
#[test]
fn swap_counter_is_read_without_the_v1_counters() {
    let (mut l, _) = resolve(Gen::New);
    l.counters.v1 = None;
    let cfg = l.config(2, 8);
    assert_ne!(cfg.flags & residue_flags::SWAP_COUNTER, 0);
    assert_eq!(cfg.flags & residue_flags::V1_COUNTERS, 0);
    assert_eq!(cfg.memsw_usage, 512);
    l.counters.swap = None;
    assert_eq!(l.config(2, 8).flags & residue_flags::SWAP_COUNTER, 0);
}

#[test]
fn config_carries_every_part_and_flags() {
    let (l, len) = resolve(Gen::New);
    let cfg = l.config(2, 8);
    assert_eq!(cfg.wire_version, WIRE_VERSION);
    assert_eq!((cfg.nr_cpus, cfg.max_memcgs), (2, 8));
    assert_eq!(cfg.state_bytes, 8 * len);
    let all = residue_flags::PCPU_STATS_UPDATES
        | residue_flags::FLUSH_UPDATES
        | residue_flags::STATIC_PERCPU
        | residue_flags::STOCK
        | residue_flags::OBJ_STOCK
        | residue_flags::LRU_ADD
        | residue_flags::V1_COUNTERS
        | residue_flags::SWAP_COUNTER;
    assert_eq!(cfg.flags, all);
    assert_eq!(cfg.memory_usage, 256);
    assert_eq!(cfg.pcpu_lru_add, 9016);
    assert_eq!(cfg.stock_bytes, 64);
}

#[test]
fn missing_parts_are_reasons_not_failures() {
    // A kernel without CONFIG_FAIR_GROUP_SCHED: no se.cfs_rq, so no static per-CPU route.
    let (blob, _) = synthetic(Gen::Mid);
    let btf = KernelBtf::from_bytes(&blob).unwrap();
    let mut l = ResidueLayout::resolve(&btf).unwrap();
    l.percpu = Err(PartError::NoRoute(Lack::PercpuVar("runqueues".into())));
    let cfg = l.config(2, 8);
    assert_eq!(cfg.flags & residue_flags::STATIC_PERCPU, 0);
    assert_eq!(cfg.flags & residue_flags::STOCK, 0);
    assert_eq!(cfg.pcpu_memcg_stock, 0);
    // Statistics still use the dynamic route.
    assert_eq!(cfg.bpf_array_pptrs, 312);
}

#[test]
fn compacted_count_mismatch_is_an_error() {
    // A state[] one slot longer than the source lists explain.
    let mut b = BtfBuilder::new();
    let long = b.int("long", 8);
    let int = b.int("int", 4);
    b.enum_(
        "node_stat_item",
        &[("NR_INACTIVE_ANON", 0), ("NR_VM_NODE_STAT_ITEMS", 1)],
    );
    b.enum_(
        "memcg_stat_item",
        &[("MEMCG_SWAP", 1), ("MEMCG_NR_STAT", 2)],
    );
    let _ = (long, int);
    let btf = KernelBtf::from_bytes(&b.build()).unwrap();
    let e = StatIndex::resolve(&btf, 3).unwrap_err();
    assert!(e.to_string().contains("3 slots"), "{e}");
    // Exactly MEMCG_NR_STAT slots: enum-indexed.
    let ok = StatIndex::resolve(&btf, 2).unwrap();
    assert!(!ok.compacted);
    assert_eq!(ok.slot("MEMCG_SWAP"), Some(1));
}

#[test]
fn resolves_the_running_kernel() {
    let Ok(btf) = KernelBtf::from_sys_fs() else {
        eprintln!("skipping: no kernel BTF");
        return;
    };
    let l = ResidueLayout::resolve(&btf).unwrap();
    let len = btf.array_len("memcg_vmstats_percpu", "state").unwrap() as usize;
    assert_eq!(l.stats.index.len, len);
    for item in [
        "NR_ANON_MAPPED",
        "NR_FILE_PAGES",
        "NR_INACTIVE_ANON",
        "NR_UNEVICTABLE",
        "MEMCG_KMEM",
        "MEMCG_SOCK",
    ] {
        assert!(l.stats.index.slot(item).is_some(), "{item}");
    }
    // Every slot is named exactly once on compacted kernels.
    if l.stats.index.compacted {
        assert_eq!(l.stats.index.slots.len(), len);
    }
    assert!(l.stock.is_ok(), "{:?}", l.stock);
    assert!(l.lru_add.is_ok(), "{:?}", l.lru_add);
}

/// 5.10's batched statistics: the aggregate is the array of atomics inside the memcg (no
/// pointer to follow), each CPU's `stat[]` is the residue, slots are enum values. Without
/// `bpf_map_lookup_percpu_elem`, and with a BTF that lists no per-CPU variables, the per-CPU
/// offsets and the static per-CPU parts need kallsyms.
#[test]
fn batched_statistics_of_5_10() {
    let (l, len) = resolve(Gen::Batched);
    let s = &l.stats;
    assert!(s.batched && !s.index.compacted);
    assert_eq!(s.index.len, len as usize);
    assert_eq!((s.vmstats, s.vs_state, s.vsp_state), (1536, 0, 0));
    assert_eq!((s.vs_stats_updates, s.vsp_stats_updates), (None, None));
    assert_eq!(s.index.slot("MEMCG_PERCPU_B"), Some(len as usize - 1));
    assert_eq!(s.index.slot("MEMCG_KMEM"), None);
    assert_eq!(l.pcpu_offsets, PcpuOffsets::Missing);
    assert_eq!(
        l.percpu.as_ref().unwrap_err().missing_percpu_var(),
        Some("runqueues")
    );
    assert!(l.wants_kallsyms());
    let cfg = l.config(2, 8);
    assert_ne!(cfg.flags & residue_flags::BATCHED_STATS, 0);
    assert_eq!(cfg.flags & residue_flags::PCPU_OFFSET_SYMBOL, 0);
    assert_eq!(cfg.memcg_vmstats, 1536);

    let (blob, _) = synthetic(Gen::Batched);
    let btf = KernelBtf::from_bytes(&blob).unwrap();
    let mut k =
        KallsymsData::parse("ffffffff82a1b000 T _stext\nffffffff8295c8e0 R __per_cpu_offset\n");
    let only_offsets = ResidueLayout::resolve_with(&btf, Some(&k)).unwrap();
    assert_eq!(
        only_offsets.pcpu_offsets,
        PcpuOffsets::Symbol(0xffff_ffff_8295_c8e0)
    );
    assert!(only_offsets.percpu.is_err());
    for (name, off) in [
        ("this_cpu_off", 0x10),
        ("runqueues", 0x2c6c0),
        ("memcg_stock", 0x1f9a0),
    ] {
        k.percpu.insert(name.to_string(), off);
    }
    let l = ResidueLayout::resolve_with(&btf, Some(&k)).unwrap();
    let p = l.percpu.as_ref().unwrap();
    assert_eq!((p.runqueues, p.this_cpu_off), (0x2c6c0, 0x10));
    assert_eq!(l.stock.as_ref().unwrap().var, 0x1f9a0);
    // The object stock holds bytes only; no folio batches (pagevecs, not in this BTF).
    let o = l.obj_stock.as_ref().unwrap();
    assert_eq!(
        (o.cached_objcg, o.nr_bytes, o.slab_b, o.size),
        (16, 24, None, 28)
    );
    assert!(l.lru_add.is_err());
    let cfg = l.config(2, 8);
    assert_ne!(cfg.flags & residue_flags::PCPU_OFFSET_SYMBOL, 0);
    assert_ne!(cfg.flags & residue_flags::STOCK, 0);
    assert_eq!(cfg.per_cpu_offset, 0xffff_ffff_8295_c8e0);

    // The rstat generations have the helper and their variables in BTF: kallsyms is not
    // consulted.
    for g in Gen::ALL {
        let (l, _) = resolve(g);
        assert!(!l.stats.batched && !l.wants_kallsyms());
        assert_eq!(l.pcpu_offsets, PcpuOffsets::Helper);
        assert_eq!(l.config(2, 8).flags & residue_flags::PCPU_OFFSET_SYMBOL, 0);
    }
}
