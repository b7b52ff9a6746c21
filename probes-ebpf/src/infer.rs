//! Inference of charge movements where the charge path cannot be probed (6.18 here: fentry
//! refused, no kprobes): at every statistic update of a memcg (the stat path's own hook
//! points, which do attach there as tp_btf), read its memory page_counter and record by how
//! much it moved since the memcg's previous stat event.
//!
//! Charges are batched and stats are not, so on a memcg charged from one CPU every batch
//! charge shows up as one rise of the reading between two consecutive stat events (the folio
//! whose charge emptied the stock updates its statistic right after), and uncharges as falls.
//! The readings telescope: the sum of rises minus falls equals the usage change between the
//! first and the last stat event, exactly. Attributing a change to the CPU whose stat event
//! saw it is exact only for a cgroup that charges on one CPU at a time; userspace labels every
//! figure from here as inferred.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, map},
    maps::LruHashMap,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use probes_common::charge::{INFER_ENTRIES, ccounter, counter, kind};

use crate::{
    charge::{add, cbump, ccfg, memcg_wanted, read_u64},
    maps::CONFIG,
};

/// Last memory page_counter reading per cgroup id (seeded by userspace where known).
#[map(name = "INFER_LAST")]
static INFER_LAST: LruHashMap<u64, u64> = LruHashMap::with_max_entries(INFER_ENTRIES, 0);

fn on_stat_event(memcg: u64) {
    let id = match memcg_wanted(memcg) {
        Ok(Some(id)) => id,
        // Other cgroups' stat events are the stat path's to count; nothing is lost here.
        Ok(None) => return,
        Err(()) => {
            cbump(ccounter::READ_FAILED);
            return;
        }
    };
    let off = ccfg!(counter_off[counter::MEMORY as usize]) + ccfg!(pc_usage);
    let Ok(now) = read_u64(memcg, off) else {
        cbump(ccounter::READ_FAILED);
        return;
    };
    let Some(last) = INFER_LAST.get_ptr_mut(&id) else {
        // First reading of this cgroup: the baseline, nothing moved yet.
        let _ = INFER_LAST.insert(&id, &now, 0);
        return;
    };
    // The eBPF target has no atomic swap (atomic load/store only), so this is a plain
    // read-then-write. Stat events of one cgroup on two CPUs at the same instant can both take
    // the same movement; re-reading the slot after the write catches most such races, which
    // are counted (`infer_race`) so the inferred figures are known to be approximate then.
    // SAFETY: an aligned u64 in a map value of this key.
    let prev = unsafe { core::ptr::read_volatile(last) };
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(last, now) };
    let delta = now.wrapping_sub(prev) as i64;
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(last) } != now {
        cbump(ccounter::INFER_RACE);
    }
    let ok = match delta {
        0 => true,
        d if d > 0 => add(id, kind::INFER_UP, counter::MEMORY, d as u64, 1),
        d => add(id, kind::INFER_DOWN, counter::MEMORY, d.unsigned_abs(), 1),
    };
    if !ok {
        cbump(ccounter::MAP_FULL);
    }
}

/// `lruvec` -> `container_of(lruvec, struct mem_cgroup_per_node, lruvec)->memcg`.
fn on_lruvec_event(lruvec: u64) {
    // SAFETY: plain reads of the frozen configuration.
    let (pn_lruvec, pn_memcg) = unsafe {
        (
            core::ptr::read_volatile(&CONFIG.pn_lruvec),
            core::ptr::read_volatile(&CONFIG.pn_memcg),
        )
    };
    match read_u64(lruvec - pn_lruvec, pn_memcg) {
        Ok(memcg) if memcg != 0 => on_stat_event(memcg),
        _ => cbump(ccounter::READ_FAILED),
    }
}

// ---- tp_btf (6.13+): TP_PROTO(struct mem_cgroup *memcg, int item, int val), both events ----

#[btf_tracepoint(function = "mod_memcg_state")]
pub fn tp_btf_infer_memcg_state(ctx: BtfTracePointContext) -> i32 {
    on_stat_event(ctx.arg::<u64>(0));
    0
}

#[btf_tracepoint(function = "mod_memcg_lruvec_state")]
pub fn tp_btf_infer_lruvec_state(ctx: BtfTracePointContext) -> i32 {
    on_stat_event(ctx.arg::<u64>(0));
    0
}

// ---- functions: (struct mem_cgroup *memcg | struct lruvec *lruvec, int idx, int val) ----

#[fentry(function = "__mod_memcg_state")]
pub fn fentry_infer_memcg_state(ctx: FEntryContext) -> u32 {
    on_stat_event(ctx.arg::<u64>(0));
    0
}

#[fentry(function = "__mod_memcg_lruvec_state")]
pub fn fentry_infer_lruvec_state(ctx: FEntryContext) -> u32 {
    on_lruvec_event(ctx.arg::<u64>(0));
    0
}

#[kprobe]
pub fn kprobe_infer_memcg_state(ctx: ProbeContext) -> u32 {
    if let Some(memcg) = ctx.arg::<u64>(0) {
        on_stat_event(memcg);
    }
    0
}

#[kprobe]
pub fn kprobe_infer_lruvec_state(ctx: ProbeContext) -> u32 {
    if let Some(lruvec) = ctx.arg::<u64>(0) {
        on_lruvec_event(lruvec);
    }
    0
}
