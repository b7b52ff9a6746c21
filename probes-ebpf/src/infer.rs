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
//!
//! The readings are taken by the stat hooks' own programs (`stat::on_memcg_state`), which
//! have resolved and filtered the cgroup already: this module only keeps the last reading
//! and adds the movement.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap},
};
use probes_common::charge::{INFER_ENTRIES, ccounter, counter, kind};

use crate::{
    charge::{add, cbump, ccfg},
    stat::Reader,
};

/// Last memory page_counter reading per cgroup id (seeded by userspace where known).
#[map(name = "INFER_LAST")]
static INFER_LAST: LruHashMap<u64, u64> = LruHashMap::with_max_entries(INFER_ENTRIES, 0);

/// Per stat slot (slot 0: the target): the cgroup's last reading plus one (0: none yet); an
/// array, so no hashing. Sized by userspace with the stat slots.
#[map(name = "INFER_SLOT")]
static INFER_SLOT: Array<u64> = Array::with_max_entries(1, 0);

/// Takes the page_counter reading of `memcg` (cgroup `id`, already known to be wanted, with
/// stat slot `slot` if it has one) at one of its stat events and adds the movement since its
/// previous one.
#[inline(always)]
pub(crate) fn on_stat_event<R: Reader>(memcg: u64, id: u64, slot: Option<u32>) {
    let off = ccfg!(counter_off[counter::MEMORY as usize]) + ccfg!(pc_usage);
    let Ok(now) = R::u64_at(memcg, off) else {
        cbump(ccounter::READ_FAILED);
        return;
    };
    // Where the last reading is kept and how a reading is stored there (an array slot keeps
    // reading + 1, so that its initial 0 means "no reading yet").
    let arrayed = slot.is_some();
    let (last, enc) = if let Some(s) = slot {
        match INFER_SLOT.get_ptr_mut(s) {
            Some(p) => (p, now + 1),
            None => return,
        }
    } else {
        match INFER_LAST.get_ptr_mut(&id) {
            Some(p) => (p, now),
            None => {
                // First reading of this cgroup: the baseline, nothing moved yet.
                let _ = INFER_LAST.insert(&id, &now, 0);
                return;
            }
        }
    };
    // The eBPF target has no atomic swap (atomic load/store only), so this is a plain
    // read-then-write. Stat events of one cgroup on two CPUs at the same instant can both take
    // the same movement; re-reading the slot after the write catches most such races, which
    // are counted (`infer_race`) so the inferred figures are known to be approximate then.
    // SAFETY: an aligned u64 in a map value.
    let prev = unsafe { core::ptr::read_volatile(last) };
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(last, enc) };
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(last) } != enc {
        cbump(ccounter::INFER_RACE);
    }
    if arrayed && prev == 0 {
        return;
    }
    let delta = enc.wrapping_sub(prev) as i64;
    let ok = match delta {
        0 => true,
        d if d > 0 => add(id, kind::INFER_UP, counter::MEMORY, d as u64, 1),
        d => add(id, kind::INFER_DOWN, counter::MEMORY, d.unsigned_abs(), 1),
    };
    if !ok {
        cbump(ccounter::MAP_FULL);
    }
}
