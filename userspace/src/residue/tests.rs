//! Unit tests of the walk and the decoder, on a fake kernel and the generated layouts.

use std::collections::BTreeMap;

use super::*;
use crate::kernel::{
    layout::{Lack, PartError, ResidueLayout},
    testkernels::{Gen, layout},
};

/// A fake kernel memory: 8-byte words by address.
#[derive(Default)]
struct FakeMem {
    words: BTreeMap<u64, u64>,
    current: u64,
}

impl FakeMem {
    fn put(&mut self, addr: u64, v: u64) {
        self.words.insert(addr, v);
    }
    fn put_str(&mut self, addr: u64, s: &str) {
        let mut b = s.as_bytes().to_vec();
        b.resize((b.len() / 8 + 1) * 8 + 16, 0);
        for (i, c) in b.chunks(8).enumerate() {
            self.put(addr + 8 * i as u64, le_u64(c, 0));
        }
    }
}

impl KernelMem for FakeMem {
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, PeekError> {
        let mut out = Vec::new();
        let start = addr & !7;
        let mut a = start;
        while a < addr + len as u64 {
            out.extend_from_slice(&self.words.get(&a).copied().unwrap_or(0).to_le_bytes());
            a += 8;
        }
        let skip = (addr - start) as usize;
        Ok(out[skip..skip + len].to_vec())
    }
    fn read_current(&mut self, off: u64, len: usize) -> Result<Vec<u8>, PeekError> {
        let c = self.current;
        self.read(c + off, len)
    }
}

/// Builds a css tree in fake memory: nodes are (css address, parent index, id, name,
/// online).
fn build(l: &ResidueLayout, nodes: &[(u64, Option<usize>, u64, &str, bool)]) -> FakeMem {
    let c = &l.cgroup;
    let mut m = FakeMem::default();
    for (i, (css, parent, id, name, online)) in nodes.iter().enumerate() {
        let cgroup = 0x10_0000 + i as u64 * 0x1000;
        let kn = 0x20_0000 + i as u64 * 0x1000;
        let name_at = 0x30_0000 + i as u64 * 0x1000;
        m.put(css + c.css_cgroup, cgroup);
        m.put(cgroup + c.cgroup_kn, kn);
        m.put(kn + c.kn_id, *id);
        m.put(kn + c.kn_name, name_at);
        m.put_str(name_at, name);
        let flags = if *online { u64::from(c.css_online) } else { 0 };
        // flags is an unsigned int: merge with whatever shares its word.
        let w = (css + c.css_flags) & !7;
        let shift = ((css + c.css_flags) - w) * 8;
        let old = m.words.get(&w).copied().unwrap_or(0);
        m.put(w, old | (flags << shift));
        m.put(css + c.css_parent, parent.map_or(0, |p| nodes[p].0));
        // Children lists: empty heads point at themselves.
        m.put(css + c.css_children, css + c.css_children);
    }
    // Link children in order.
    for (i, (_, parent, ..)) in nodes.iter().enumerate() {
        let Some(p) = parent else { continue };
        let pcss = nodes[*p].0;
        let head = pcss + c.css_children;
        let me = nodes[i].0 + c.css_sibling;
        // Append: find the last element.
        let mut last = head;
        loop {
            let next = m.words.get(&last).copied().unwrap_or(head);
            if next == head {
                break;
            }
            last = next;
        }
        m.put(last, me);
        m.put(me, head);
    }
    m
}

#[test]
fn walk_finds_target_by_path_ids_and_lists_dying_descendants() {
    for g in Gen::ALL {
        let l = layout(g);
        let nodes = [
            (0x1000_0000, None, 1, "", true),                // 0 root
            (0x1001_0000, Some(0), 50, "system", true),      // 1
            (0x1002_0000, Some(0), 60, "memcg-drift", true), // 2
            (0x1003_0000, Some(2), 61, "run", true),         // 3
            (0x1004_0000, Some(3), 62, "live", true),        // 4
            (0x1005_0000, Some(3), 63, "dead", false),       // 5 (dying)
            (0x1006_0000, Some(4), 64, "grandchild", true),  // 6
            (0x1007_0000, Some(1), 70, "me", true),          // 7: the tool's own cgroup
        ];
        let mut m = build(&l, &nodes);
        // current->cgroups->subsys[memory_cgrp_id] = css of node 7.
        m.current = 0x5000_0000;
        let cset = 0x5100_0000;
        m.put(m.current + l.cgroup.task_cgroups, cset);
        m.put(
            cset + l.cgroup.css_set_subsys + 8 * l.cgroup.memory_cgrp_id,
            nodes[7].0,
        );
        let t = walk(&mut m, &l, 1, &[60, 61], 100).unwrap();
        let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["run", "live", "dead", "grandchild"]);
        assert_eq!(t.nodes[0].cgroup_id, 61);
        assert_eq!(t.nodes[0].memcg, 0x1003_0000 - l.cgroup.memcg_css);
        assert!(t.nodes[1].online && !t.nodes[2].online);
        assert_eq!(t.nodes[3].parent, Some(1));
        assert_eq!(t.nodes[3].depth, 2);
        assert_eq!(t.left_out, 0);
        // The limit keeps the first nodes and counts the rest.
        let t = walk(&mut m, &l, 1, &[60, 61], 2).unwrap();
        assert_eq!((t.nodes.len(), t.left_out), (2, 2));
        // The root itself.
        let t = walk(&mut m, &l, 1, &[], 100).unwrap();
        assert_eq!(t.nodes.len(), 8);
        // Inside a cgroup namespace rooted at `memcg-drift` (id 60), where the tool itself runs
        // in `live`: paths start there.
        m.put(
            cset + l.cgroup.css_set_subsys + 8 * l.cgroup.memory_cgrp_id,
            nodes[4].0,
        );
        let t = walk(&mut m, &l, 60, &[61], 100).unwrap();
        assert_eq!(t.nodes[0].name, "run");
        let t = walk(&mut m, &l, 60, &[], 100).unwrap();
        assert_eq!(t.nodes[0].name, "memcg-drift");
        // A path that does not exist.
        let e = walk(&mut m, &l, 1, &[60, 99], 100).unwrap_err();
        assert!(e.to_string().contains("cgroup id 99"), "{e}");
    }
}

fn frame(usage: u64) -> MemcgFrame {
    MemcgFrame {
        memcg: 0x1000,
        cgroup_id: 5,
        css_flags: 2,
        usage,
        max: u64::MAX,
        watermark: usage,
        failcnt: 0,
        memsw_usage: 0,
        kmem_usage: 0,
        tcpmem_usage: 0,
        err: 0,
        flush_updates: 0,
        state: [0; probes_common::RES_MAX_STATE],
        state_pending: [0; probes_common::RES_MAX_STATE],
    }
}

fn cpu_stat() -> MemcgCpuStat {
    MemcgCpuStat {
        stats_updates: 0,
        err: 0,
        _pad: 0,
        state: [0; probes_common::RES_MAX_STATE],
        state_prev: [0; probes_common::RES_MAX_STATE],
    }
}

#[test]
fn decode_judges_consistency_and_the_percpu_route() {
    for g in Gen::ALL {
        let mut l = layout(g);
        let st = l.stock.clone().unwrap();
        let bl = l.lru_add.clone().unwrap();
        let mut o = frame(100);
        o.state[0] = 7;
        let mut p = MemcgCpuStat {
            stats_updates: 3,
            ..cpu_stat()
        };
        p.state[0] = 10;
        p.state_prev[0] = 4;
        let mut cpu = CpuFrame {
            base: 0x4000,
            unit: 0x9000,
            this_cpu_off: 0x4000,
            obj_memcg: 0,
            err: 0,
            _pad: 0,
            stock: [0; probes_common::RES_STOCK_BYTES / 8],
            obj: [0; probes_common::RES_OBJ_BYTES / 8],
            batch: [0; probes_common::RES_BATCH_BYTES / 8],
        };
        // One stock slot: memcg 0x1000 with 53 pages.
        let mut sb = words_to_bytes(&cpu.stock);
        sb[st.cached as usize..st.cached as usize + 8].copy_from_slice(&0x1000u64.to_le_bytes());
        sb[st.nr_pages as usize] = 53;
        for (i, w) in sb.chunks(8).enumerate() {
            cpu.stock[i] = le_u64(w, 0);
        }
        // One batch folio of memcg 0x1000.
        let mut bb = words_to_bytes(&cpu.batch);
        bb[bl.nr as usize] = 1;
        bb[bl.folios as usize..bl.folios as usize + 8].copy_from_slice(&0xabc0u64.to_le_bytes());
        for (i, w) in bb.chunks(8).enumerate() {
            cpu.batch[i] = le_u64(w, 0);
        }
        let mut folios = vec![FolioInfo::default(); RES_MAX_FOLIOS as usize];
        folios[0] = FolioInfo {
            folio: 0xabc0,
            memcg_data: 0x1000,
            flags: 0,
            order_word: 0,
            mapping: 0x7001,
            mapcount_word: 0,
            err: 0,
        };
        let raw = RawSnapshot {
            open: vec![o],
            close: vec![o],
            pcpu: vec![vec![p]],
            cpu_open: vec![cpu],
            cpu_close: vec![cpu],
            folios: vec![folios.clone()],
        };
        let r = Residues::decode(&raw, &l);
        assert_eq!(r.consistent, Ok(()));
        assert_eq!(r.static_percpu, Ok(()));
        assert_eq!(r.memcgs[0].cpu_delta[0][0], 6);
        assert_eq!(r.memcgs[0].state[0], 7);
        assert_eq!(
            r.cpus[0].stock,
            vec![StockSlot {
                slot: 0,
                memcg: 0x1000,
                pages: 53
            }]
        );
        assert_eq!(r.cpus[0].batch.len(), 1);
        assert!(r.cpus[0].batch[0].anon && r.cpus[0].batch[0].counted);

        // The flush mark follows state_prev only: a new update leaves it, a flush (which
        // moves state into state_prev) changes it.
        let mark = r.memcgs[0].flush_mark;
        let mut updated = raw.clone();
        updated.pcpu[0][0].state[0] = 11;
        assert_eq!(Residues::decode(&updated, &l).memcgs[0].flush_mark, mark);
        updated.pcpu[0][0].state_prev[0] = 11;
        assert_ne!(Residues::decode(&updated, &l).memcgs[0].flush_mark, mark);

        // A flush between open and close: inconsistent.
        let mut moved = raw.clone();
        moved.close[0].state[0] = 13;
        let r = Residues::decode(&moved, &l);
        assert!(r.consistent.unwrap_err().to_string().contains("memcg #0"));
        // Another memcg's stock slot or object stock moving: still consistent (they are not
        // in the books); the subtree's slot moving, or a slot taken by the subtree: not.
        let other = |f: &mut CpuFrame, slot: u64, memcg: u64, pages: u8| {
            let mut b = words_to_bytes(&f.stock);
            let at = (st.cached + 8 * slot) as usize;
            b[at..at + 8].copy_from_slice(&memcg.to_le_bytes());
            b[(st.nr_pages + st.nr_pages_size * slot) as usize] = pages;
            for (i, w) in b.chunks(8).enumerate() {
                f.stock[i] = le_u64(w, 0);
            }
        };
        if st.slots > 1 {
            let mut busy = raw.clone();
            other(&mut busy.cpu_open[0], 1, 0x7777, 9);
            other(&mut busy.cpu_close[0], 1, 0x8888, 40);
            busy.cpu_close[0].obj_memcg = 0x7777;
            busy.cpu_close[0].obj[0] = 1;
            assert_eq!(Residues::decode(&busy, &l).consistent, Ok(()));
            other(&mut busy.cpu_close[0], 1, 0x1000, 40);
            assert!(
                Residues::decode(&busy, &l)
                    .consistent
                    .unwrap_err()
                    .to_string()
                    .contains("charge stock of the subtree")
            );
        }
        let mut moved = raw.clone();
        other(&mut moved.cpu_close[0], 0, 0x1000, 52);
        assert!(Residues::decode(&moved, &l).consistent.is_err());
        let mut moved = raw.clone();
        moved.cpu_close[0].obj_memcg = 0x1000;
        moved.cpu_close[0].obj[0] = 1;
        assert!(
            Residues::decode(&moved, &l)
                .consistent
                .unwrap_err()
                .to_string()
                .contains("object stock")
        );
        // The lru_add batch is compared whole (an appended folio of the subtree is charged
        // but neither in the batch read nor on a list).
        let mut moved = raw.clone();
        moved.cpu_close[0].batch[0] ^= 1;
        assert!(
            Residues::decode(&moved, &l)
                .consistent
                .unwrap_err()
                .to_string()
                .contains("lru_add batch")
        );
        // A batch drained between the frame and the folio read: inconsistent.
        let mut moved = raw.clone();
        moved.folios[0][0].folio = 0;
        assert!(Residues::decode(&moved, &l).consistent.is_err());
        // The route cross-check failing discards every static per-CPU read.
        let mut bad = raw.clone();
        bad.cpu_open[0].this_cpu_off = 0x5000;
        let r = Residues::decode(&bad, &l);
        assert!(
            r.static_percpu
                .unwrap_err()
                .to_string()
                .contains("route check")
        );
        assert!(r.cpus.is_empty());
        // A gone memcg.
        let mut gone = raw.clone();
        gone.open[0].err = residue_err::GONE;
        gone.close[0].err = residue_err::GONE;
        assert!(Residues::decode(&gone, &l).memcgs[0].gone);
        // Freed during the read (gone by the close only): gone too, its reads discarded.
        let mut freed = raw.clone();
        freed.close[0].err = residue_err::GONE;
        freed.pcpu[0][0].state[0] = i64::MAX / 3;
        let r = Residues::decode(&freed, &l);
        assert!(r.memcgs[0].gone && r.memcgs[0].cpu_delta.is_empty());
        assert!(r.consistent.is_err());
        // No static route in the layout.
        let none = PartError::NoRoute(Lack::PercpuVar("runqueues".into()));
        l.percpu = Err(none.clone());
        let r = Residues::decode(&raw, &l);
        assert_eq!(r.static_percpu, Err(StaticPercpuError::Layout(none)));
        assert!(r.cpus.is_empty());
    }
}

/// 5.10's batched statistics: a CPU's `stat[]` is its residue (no `state_prev`), nothing is
/// pending, and the flush mark follows the aggregate, which only spills move.
#[test]
fn batched_residues_are_the_per_cpu_stats() {
    let l = layout(Gen::Batched);
    let mut o = frame(100);
    o.state[0] = 40;
    o.state_pending[0] = 99; // never read on these kernels: must not show
    let mut p = cpu_stat();
    p.state[0] = 31;
    let raw = RawSnapshot {
        open: vec![o],
        close: vec![o],
        pcpu: vec![vec![p, p]],
        cpu_open: vec![],
        cpu_close: vec![],
        folios: vec![],
    };
    let r = Residues::decode(&raw, &l);
    let m = &r.memcgs[0];
    assert_eq!((m.cpu_delta[0][0], m.cpu_delta[1][0]), (31, 31));
    assert_eq!(m.pending[0], 0);
    assert_eq!(m.state[0], 40);
    // A new residue leaves the mark; a spill (the aggregate moves) changes it.
    let mut more = raw.clone();
    more.pcpu[0][0].state[0] = 32;
    assert_eq!(
        Residues::decode(&more, &l).memcgs[0].flush_mark,
        m.flush_mark
    );
    let mut spilled = raw.clone();
    spilled.pcpu[0][0].state[0] = 0;
    spilled.open[0].state[0] = 73;
    spilled.close[0].state[0] = 73;
    assert_ne!(
        Residues::decode(&spilled, &l).memcgs[0].flush_mark,
        m.flush_mark
    );
}
