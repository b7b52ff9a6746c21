//! Every map and the read-only configuration. All maps are bounded; what does not fit is
//! counted in `COUNTERS`, never dropped silently.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
};
use probes_common::{ProbeConfig, STAT_AGG_ENTRIES, StatKey, StatValue, VERDICT_ENTRIES, counter};

/// Kernel layout and filter, overridden by userspace before load (frozen `.rodata`).
#[unsafe(no_mangle)]
pub static CONFIG: ProbeConfig = ProbeConfig::ZERO;

/// Per-CPU aggregates of the stat path.
#[map(name = "STAT_AGG")]
pub static STAT_AGG: PerCpuHashMap<StatKey, StatValue> =
    PerCpuHashMap::with_max_entries(STAT_AGG_ENTRIES, 0);

/// Per-CPU activity and loss counters (see `probes_common::counter`).
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Filter verdicts per cgroup id, so the ancestor walk runs once per cgroup.
#[map(name = "VERDICT")]
pub static VERDICT: LruHashMap<u64, u8> = LruHashMap::with_max_entries(VERDICT_ENTRIES, 0);

/// Reads one configuration field; `read_volatile` keeps the compiler from folding the
/// compiled-in zero, so the verifier sees the frozen value userspace wrote.
#[inline(always)]
pub fn config() -> ProbeConfig {
    // SAFETY: CONFIG is a plain static of integers.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Adds one to a counter slot of this CPU.
#[inline(always)]
pub fn bump(slot: u32) {
    if let Some(ptr) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: the pointer is this CPU's element of a per-CPU array; no other CPU writes it.
        unsafe { *ptr += 1 };
    }
}
