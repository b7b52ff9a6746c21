//! Every map and the read-only configuration. All maps are bounded; what does not fit is
//! counted in `COUNTERS`, never dropped silently.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use probes_common::{
    CpuFrame, FolioInfo, MemcgCpuStat, MemcgFrame, MemcgReq, PeekBuf, ProbeConfig, ResidueConfig,
    STAT_AGG_ENTRIES, SlotCache, StatBlock, StatKey, StatValue, VERDICT_ENTRIES, counter,
};

/// Kernel layout and filter, overridden by userspace before load (frozen `.rodata`).
#[unsafe(no_mangle)]
pub static CONFIG: ProbeConfig = ProbeConfig::ZERO;

/// Per-CPU aggregates of the stat path.
#[map(name = "STAT_AGG")]
pub static STAT_AGG: PerCpuHashMap<StatKey, StatValue> =
    PerCpuHashMap::with_max_entries(STAT_AGG_ENTRIES, 0);

// The slot maps are declared with one entry (the target's); userspace sizes them at load
// time for the cgroups it gives a slot (`trace --descendants` of an existing subtree).

/// Per-CPU aggregates of the cgroups with a slot, dense by (hook, item).
#[map(name = "STAT_SLOTS")]
pub static STAT_SLOTS: PerCpuArray<StatBlock> = PerCpuArray::with_max_entries(1, 0);

/// Cgroup id -> slot, written by userspace before attaching.
#[map(name = "SLOT_OF")]
pub static SLOT_OF: HashMap<u64, u32> = HashMap::with_max_entries(1, 0);

/// Slot -> cgroup id, the owner check of `SLOT_CACHE`.
#[map(name = "SLOT_IDS")]
pub static SLOT_IDS: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU: the last cgroup resolved to a slot, so that a run of one cgroup's events needs
/// no hash lookup.
#[map(name = "SLOT_CACHE")]
pub static SLOT_CACHE: PerCpuArray<SlotCache> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU activity and loss counters (see `probes_common::counter`).
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Filter verdicts per cgroup id, so the ancestor walk runs once per cgroup.
#[map(name = "VERDICT")]
pub static VERDICT: LruHashMap<u64, u8> = LruHashMap::with_max_entries(VERDICT_ENTRIES, 0);

/// Kernel layout of the residue reader (`residue.rs`), overridden by `memcg-drift explain`
/// before load (frozen `.rodata`, like `CONFIG`).
#[unsafe(no_mangle)]
pub static RESIDUE_CONFIG: ResidueConfig = ResidueConfig::ZERO;

// The residue maps are declared with one entry; `explain` sizes them at load time
// (`EbpfLoader::set_max_entries`) for the memcgs and CPUs it reads, so that other commands
// loading the same object pay nothing for them.

/// The memcgs a residue snapshot covers.
#[map(name = "RES_REQ")]
pub static RES_REQ: Array<MemcgReq> = Array::with_max_entries(1, 0);

/// Per memcg: counters and aggregates at the snapshot's open and close.
#[map(name = "RES_MEMCG")]
pub static RES_MEMCG: Array<MemcgFrame> = Array::with_max_entries(1, 0);

/// Per memcg and CPU: the per-CPU statistics.
#[map(name = "RES_MEMCG_CPU")]
pub static RES_MEMCG_CPU: Array<MemcgCpuStat> = Array::with_max_entries(1, 0);

/// Per CPU: stocks and lru_add batch at the snapshot's open and close.
#[map(name = "RES_CPU")]
pub static RES_CPU: Array<CpuFrame> = Array::with_max_entries(1, 0);

/// Per CPU and batch position: the folios of the lru_add batches.
#[map(name = "RES_FOLIO")]
pub static RES_FOLIO: Array<FolioInfo> = Array::with_max_entries(1, 0);

/// The result of the last peek.
#[map(name = "RES_PEEK")]
pub static RES_PEEK: Array<PeekBuf> = Array::with_max_entries(1, 0);

/// One per-CPU slot whose element addresses reveal each CPU's per-CPU offset.
#[map(name = "RES_PCPU")]
pub static RES_PCPU: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Adds one to a counter slot of this CPU.
#[inline(always)]
pub fn bump(slot: u32) {
    if let Some(ptr) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: the pointer is this CPU's element of a per-CPU array; no other CPU writes it.
        unsafe { *ptr += 1 };
    }
}
