//! Types that cross the kernel boundary, defined once for both sides.
//!
//! The eBPF programs (`probes-ebpf`) write these records into maps; the `memcg-drift` library
//! reads them back. Every type is `#[repr(C)]`, has no implicit padding (explicit `_pad` fields)
//! and pins its size at compile time, so a layout change cannot go unnoticed by either side.
//! With the `user` feature the types implement `aya::Pod` so userspace can read the maps.
#![no_std]

pub mod charge;

use core::mem::size_of;

/// Bumped on any change of a record or key layout below.
pub const WIRE_VERSION: u32 = 9;

/// Per-CPU hash map of stat-path aggregates: `StatKey` -> `StatValue`.
pub const MAP_STAT_AGG: &str = "STAT_AGG";
/// Per-CPU array of `u64` loss and activity counters, indexed by the `counter` module.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// LRU hash of cgroup id -> filter verdict (1 = inside the target subtree, 0 = outside).
pub const MAP_VERDICT: &str = "VERDICT";
/// Per-CPU array of [`StatBlock`], one per slot: the aggregates of the cgroups userspace gave
/// a slot before attaching (slot 0: the target; with [`flags::SLOTS`], the others of
/// [`MAP_SLOT_OF`]), dense at `hook * STAT_DENSE_ITEMS + item` (items at or past
/// [`STAT_DENSE_ITEMS`], and cgroups without a slot, go to [`MAP_STAT_AGG`]).
pub const MAP_STAT_SLOTS: &str = "STAT_SLOTS";
/// Hash of cgroup id -> slot, written by userspace before attaching (read-only to the probes).
pub const MAP_SLOT_OF: &str = "SLOT_OF";
/// Array of slot -> cgroup id (the owner check of the per-CPU slot cache).
pub const MAP_SLOT_IDS: &str = "SLOT_IDS";
/// Items per hook in a [`StatBlock`].
pub const STAT_DENSE_ITEMS: u32 = 128;
/// Bytes of one slot's aggregates on one CPU.
pub const STAT_BLOCK_BYTES: usize = 2 * STAT_DENSE_ITEMS as usize * size_of::<StatValue>();
/// Per-CPU array of one `u64`: events seen by the benchmark's floor programs.
pub const MAP_FLOOR: &str = "FLOOR";
/// Name of the read-only global holding the [`ProbeConfig`].
pub const GLOBAL_CONFIG: &str = "CONFIG";

/// Capacity of [`MAP_STAT_AGG`]: distinct (cgroup, item, hook) keys.
pub const STAT_AGG_ENTRIES: u32 = 16384;
/// Capacity of [`MAP_VERDICT`]: distinct cgroups remembered by the filter.
pub const VERDICT_ENTRIES: u32 = 8192;
/// Deepest ancestor walk the filter makes when it first meets a cgroup.
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// Which stat-path function an aggregate came from.
pub mod hook {
    /// `mod_memcg_state` / `__mod_memcg_state`: item is an `enum memcg_stat_item` value.
    pub const MEMCG_STATE: u32 = 0;
    /// `mod_memcg_lruvec_state` / `__mod_memcg_lruvec_state`: item is an `enum node_stat_item`.
    pub const LRUVEC_STATE: u32 = 1;
}

/// Slots of the per-CPU [`MAP_COUNTERS`] array. Nothing is dropped silently: every event the
/// probes see ends in exactly one of recorded, `FILTERED`, `MAP_FULL` or `READ_FAILED`. The
/// recorded events are the `events` of the aggregates themselves ([`MAP_STAT_DENSE`] and
/// [`MAP_STAT_AGG`]), so a recorded event costs one map update, and the events seen are the
/// sum of the four (since wire version 7; slots 0 and 1 are no longer written).
pub mod counter {
    /// Unused since wire version 7 (seen = recorded + filtered + map full + read failed).
    pub const STAT_SEEN: u32 = 0;
    /// Unused since wire version 7 (the aggregates' event counts).
    pub const STAT_RECORDED: u32 = 1;
    /// Events of cgroups outside the target subtree (not an error).
    pub const STAT_FILTERED: u32 = 2;
    /// Events lost because the aggregate map was full.
    pub const STAT_MAP_FULL: u32 = 3;
    /// Events lost because a kernel read failed (memcg -> cgroup id).
    pub const STAT_READ_FAILED: u32 = 4;
    /// Number of slots.
    pub const COUNT: u32 = 5;
}

/// Key of [`MAP_STAT_AGG`]. The map is per-CPU, so each key holds one value per CPU.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct StatKey {
    /// The cgroup id (kernfs node id; the inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// Raw kernel enum value of the item (`memcg_stat_item` or `node_stat_item`).
    pub item: u32,
    /// One of the [`hook`] constants.
    pub hook: u32,
}

/// Value of [`MAP_STAT_AGG`] on one CPU.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct StatValue {
    /// Sum of `val` over the events (pages, or the kernel's unit for byte items; see docs).
    pub delta: i64,
    /// Number of events.
    pub events: u64,
}

/// Value of [`MAP_STAT_SLOTS`] on one CPU: one slot's aggregates, at
/// `hook * STAT_DENSE_ITEMS + item`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct StatBlock {
    /// The aggregates.
    pub v: [StatValue; 2 * STAT_DENSE_ITEMS as usize],
}

impl Default for StatBlock {
    fn default() -> Self {
        Self {
            v: [StatValue::default(); 2 * STAT_DENSE_ITEMS as usize],
        }
    }
}

/// The per-CPU slot cache of the stat probes: the last cgroup id this CPU resolved to a slot.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SlotCache {
    /// Cgroup id (0: empty).
    pub id: u64,
    /// Its slot.
    pub slot: u32,
    /// Padding.
    pub _pad: u32,
}

/// Flags of [`ProbeConfig::flags`].
pub mod flags {
    /// Record only the target cgroup (and, with [`DESCENDANTS`], its subtree).
    pub const FILTER: u32 = 1;
    /// Include the target's descendants.
    pub const DESCENDANTS: u32 = 2;
    /// Also infer charge movements at every recorded stat event (the charge configuration's
    /// memory page_counter is read; see `probes-ebpf/src/stat.rs`).
    pub const INFER: u32 = 4;
    /// Cgroups other than the target have slots ([`super::MAP_SLOT_OF`]): look them up.
    pub const SLOTS: u32 = 8;
}

/// Read-only configuration and kernel layout, written by userspace before load from the running
/// kernel's BTF. The verifier sees these as constants (the global is frozen).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProbeConfig {
    /// `offsetof(struct mem_cgroup, css)`.
    pub memcg_css: u64,
    /// `offsetof(struct cgroup_subsys_state, cgroup)`.
    pub css_cgroup: u64,
    /// `offsetof(struct cgroup_subsys_state, parent)`.
    pub css_parent: u64,
    /// `offsetof(struct cgroup, kn)`.
    pub cgroup_kn: u64,
    /// `offsetof(struct kernfs_node, id)`.
    pub kn_id: u64,
    /// `offsetof(struct mem_cgroup_per_node, lruvec)` (for lruvec-based function hooks).
    pub pn_lruvec: u64,
    /// `offsetof(struct mem_cgroup_per_node, memcg)`.
    pub pn_memcg: u64,
    /// Cgroup id of the target when [`flags::FILTER`] is set.
    pub target_cgroup_id: u64,
    /// [`flags`] bits.
    pub flags: u32,
    /// Must equal [`WIRE_VERSION`]; lets userspace refuse a stale probe object.
    pub wire_version: u32,
}

impl ProbeConfig {
    /// All-zero configuration, the value compiled into the object before userspace overrides it.
    pub const ZERO: Self = Self {
        memcg_css: 0,
        css_cgroup: 0,
        css_parent: 0,
        cgroup_kn: 0,
        kn_id: 0,
        pn_lruvec: 0,
        pn_memcg: 0,
        target_cgroup_id: 0,
        flags: 0,
        wire_version: 0,
    };
}

// ---- Residue reader (`memcg-drift explain`) ----
//
// The residue programs (`probes-ebpf/src/residue.rs`) are raw-tracepoint programs that are never
// attached: userspace runs them on demand with `BPF_PROG_TEST_RUN`, passing arguments in the
// fake tracepoint context. They copy kernel state into the maps below; userspace interprets it.

/// Name of the read-only global holding the [`ResidueConfig`].
pub const GLOBAL_RESIDUE_CONFIG: &str = "RESIDUE_CONFIG";
/// Array of [`MemcgReq`]: the memcgs a snapshot covers (capacity = `ResidueConfig::max_memcgs`).
pub const MAP_RES_REQ: &str = "RES_REQ";
/// Array of [`MemcgFrame`]: `[0, max_memcgs)` read when a snapshot opens, `[max_memcgs, 2 *
/// max_memcgs)` when it closes.
pub const MAP_RES_MEMCG: &str = "RES_MEMCG";
/// Array of [`MemcgCpuStat`], index `window slot * nr_cpus + cpu`: a window of memcgs'
/// per-CPU statistics, read back by userspace before the next window is filled (its size
/// does not grow with the subtree).
pub const MAP_RES_MEMCG_CPU: &str = "RES_MEMCG_CPU";
/// Array of [`CpuFrame`]: `[0, nr_cpus)` at open, `[nr_cpus, 2 * nr_cpus)` at close.
pub const MAP_RES_CPU: &str = "RES_CPU";
/// Array of [`FolioInfo`], index `cpu * RES_MAX_FOLIOS + position in the lru_add batch`.
pub const MAP_RES_FOLIO: &str = "RES_FOLIO";
/// One-entry array of [`PeekBuf`]: the result of the last peek.
pub const MAP_RES_PEEK: &str = "RES_PEEK";
/// One-entry per-CPU array whose element addresses give every CPU's per-CPU offset.
pub const MAP_RES_PCPU: &str = "RES_PCPU";

/// Most `memcg_vmstats*.state[]` slots a snapshot copies (6.1: 50, 6.12: 38, 6.18: 40).
pub const RES_MAX_STATE: usize = 64;
/// Most memcgs one snapshot covers (the target and its descendants, dying ones included).
/// Container hosts with leaking cgroups hold tens of thousands of dying ones; what is past
/// this many is named (and counted) as left out, never silently dropped.
pub const RES_MAX_MEMCGS: u32 = 16384;
/// Most memcgs one `residue_frame` run reads (its loop bound: the verifier's work grows with
/// it, the snapshot's size does not). A frame of more memcgs is read in several runs.
pub const RES_FRAME_CHUNK: u32 = 8;
/// Batch slots one `residue_folios` run reads (its loop bound, for the same reason): a CPU's
/// batch is read in `RES_MAX_FOLIOS / RES_FOLIO_CHUNK` runs.
pub const RES_FOLIO_CHUNK: u32 = 8;
const _: () = assert!(RES_MAX_FOLIOS.is_multiple_of(RES_FOLIO_CHUNK));
/// Entries of the per-CPU statistics window (`memcgs x CPUs`): the window holds this many
/// divided by the CPU count memcgs (at least one), about 4.5 MiB of map.
pub const RES_WINDOW_ENTRIES: u32 = 4096;
/// Most CPUs a snapshot covers.
pub const RES_MAX_CPUS: u32 = 1024;
/// Bytes of `memcg_stock_pcp` copied per CPU (the slots end well before).
pub const RES_STOCK_BYTES: usize = 128;
/// Bytes of the object stock copied per CPU (`obj_stock_pcp`, or `memcg_stock_pcp` before 6.16).
pub const RES_OBJ_BYTES: usize = 128;
/// Bytes of `cpu_fbatches.lru_add` (a `struct folio_batch`) copied per CPU.
pub const RES_BATCH_BYTES: usize = 264;
/// Most folios of one lru_add batch whose details are read (PAGEVEC_SIZE is 15 or 31).
pub const RES_MAX_FOLIOS: u32 = 32;
/// Largest peek.
pub const RES_PEEK_BYTES: usize = 512;

/// Bits of [`ResidueConfig::flags`]: which optional parts the running kernel's BTF resolved.
pub mod residue_flags {
    /// `memcg_vmstats_percpu.stats_updates` exists (6.8+).
    pub const PCPU_STATS_UPDATES: u32 = 1;
    /// The static per-CPU area can be located (`task_struct.se.cfs_rq`, `runqueues`).
    pub const STATIC_PERCPU: u32 = 2;
    /// The charge stock layout is known.
    pub const STOCK: u32 = 4;
    /// The object stock layout is known.
    pub const OBJ_STOCK: u32 = 8;
    /// The lru_add batch layout is known.
    pub const LRU_ADD: u32 = 16;
    /// v1 page counters (`memsw`, `kmem`, `tcpmem`) exist.
    pub const V1_COUNTERS: u32 = 32;
    /// `memcg_vmstats.stats_updates` exists (6.8+: the per-memcg flush threshold).
    pub const FLUSH_UPDATES: u32 = 64;
    /// The swap counter exists: `memsw` (v1) and `swap` (v2) share one union, which 6.12+
    /// keeps without the other v1 counters (`CONFIG_MEMCG_V1=n`); `memsw_usage` is its offset.
    pub const SWAP_COUNTER: u32 = 128;
    /// Batched statistics (5.4-5.12, before rstat): the aggregate is an array of atomics
    /// inside `struct mem_cgroup` at `memcg_vmstats` (not a pointer), there is no
    /// `state_pending` and no `state_prev`; each CPU's `stat[]` at `vsp_state` holds the
    /// residue not yet spilled into the atomics.
    pub const BATCHED_STATS: u32 = 256;
    /// Each CPU's per-CPU offset is read from `__per_cpu_offset[]` at `per_cpu_offset`
    /// (a kallsyms data symbol) instead of through `bpf_map_lookup_percpu_elem` (5.19+).
    pub const PCPU_OFFSET_SYMBOL: u32 = 512;
}

/// Error bits of the residue records (`err` fields) and program return values.
pub mod residue_err {
    /// A kernel read failed.
    pub const READ: u32 = 1;
    /// The memcg's cgroup id no longer matches the request (freed or reused).
    pub const GONE: u32 = 2;
    /// A map slot was out of range.
    pub const MAP: u32 = 4;
    /// The per-CPU offset of a CPU could not be found.
    pub const PERCPU: u32 = 8;
    /// Bad arguments.
    pub const ARGS: u32 = 16;
}

/// Kernel layout for the residue programs, from the running kernel's BTF. Offsets are in
/// bytes; an optional part is used only when its [`residue_flags`] bit is set.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResidueConfig {
    /// Must equal [`WIRE_VERSION`].
    pub wire_version: u32,
    /// [`residue_flags`] bits.
    pub flags: u32,
    /// CPUs read (possible CPUs), at most [`RES_MAX_CPUS`].
    pub nr_cpus: u32,
    /// Capacity of the per-memcg maps, at most [`RES_MAX_MEMCGS`].
    pub max_memcgs: u32,
    /// Bytes of one `state[]` array (slots x 8), at most `RES_MAX_STATE * 8`.
    pub state_bytes: u32,
    /// Bytes of `memcg_stock_pcp` to copy, at most [`RES_STOCK_BYTES`].
    pub stock_bytes: u32,
    /// Bytes of the object stock to copy, at most [`RES_OBJ_BYTES`].
    pub obj_bytes: u32,
    /// Bytes of the lru_add `folio_batch` to copy, at most [`RES_BATCH_BYTES`].
    pub batch_bytes: u32,
    /// `offsetof(struct folio_batch, nr)` (an `unsigned char`).
    pub batch_nr: u32,
    /// `offsetof(struct folio_batch, folios)`.
    pub batch_folios: u32,
    /// Length of `folio_batch.folios[]` (PAGEVEC_SIZE).
    pub batch_capacity: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// `offsetof(struct mem_cgroup, css)`.
    pub memcg_css: u64,
    /// `offsetof(struct cgroup_subsys_state, cgroup)`.
    pub css_cgroup: u64,
    /// `offsetof(struct cgroup_subsys_state, flags)`.
    pub css_flags: u64,
    /// `offsetof(struct cgroup, kn)`.
    pub cgroup_kn: u64,
    /// `offsetof(struct kernfs_node, id)`.
    pub kn_id: u64,
    /// `offsetof(struct mem_cgroup, memory.usage)`.
    pub memory_usage: u64,
    /// `offsetof(struct mem_cgroup, memory.max)`.
    pub memory_max: u64,
    /// `offsetof(struct mem_cgroup, memory.watermark)`.
    pub memory_watermark: u64,
    /// `offsetof(struct mem_cgroup, memory.failcnt)`.
    pub memory_failcnt: u64,
    /// `offsetof(struct mem_cgroup, memsw.usage)` (v1 counters).
    pub memsw_usage: u64,
    /// `offsetof(struct mem_cgroup, kmem.usage)` (v1 counters).
    pub kmem_usage: u64,
    /// `offsetof(struct mem_cgroup, tcpmem.usage)` (v1 counters).
    pub tcpmem_usage: u64,
    /// `offsetof(struct mem_cgroup, vmstats)` (a pointer).
    pub memcg_vmstats: u64,
    /// `offsetof(struct memcg_vmstats, state)`.
    pub vs_state: u64,
    /// `offsetof(struct memcg_vmstats, state_pending)`.
    pub vs_state_pending: u64,
    /// `offsetof(struct mem_cgroup, vmstats_percpu)` (a per-CPU pointer).
    pub memcg_vmstats_percpu: u64,
    /// `offsetof(struct memcg_vmstats_percpu, state)`.
    pub vsp_state: u64,
    /// `offsetof(struct memcg_vmstats_percpu, state_prev)`.
    pub vsp_state_prev: u64,
    /// `offsetof(struct memcg_vmstats_percpu, stats_updates)`.
    pub vsp_stats_updates: u64,
    /// `offsetof(struct bpf_array, pptrs)`.
    pub bpf_array_pptrs: u64,
    /// `offsetof(struct task_struct, se.cfs_rq)`.
    pub task_se_cfs_rq: u64,
    /// `offsetof(struct cfs_rq, rq)`.
    pub cfs_rq_rq: u64,
    /// Offset of `runqueues` in `.data..percpu`.
    pub pcpu_runqueues: u64,
    /// Offset of `this_cpu_off` in `.data..percpu`.
    pub pcpu_this_cpu_off: u64,
    /// Offset of `memcg_stock` in `.data..percpu`.
    pub pcpu_memcg_stock: u64,
    /// Offset of the object stock (`obj_stock`, or `memcg_stock` before 6.16) in `.data..percpu`.
    pub pcpu_obj_stock: u64,
    /// `offsetof(<object stock>, cached_objcg)`.
    pub obj_cached_objcg: u64,
    /// `offsetof(struct obj_cgroup, memcg)`.
    pub objcg_memcg: u64,
    /// Offset of `cpu_fbatches.lru_add` in `.data..percpu`.
    pub pcpu_lru_add: u64,
    /// `offsetof(struct folio, memcg_data)`.
    pub folio_memcg_data: u64,
    /// `offsetof(struct folio, flags)`.
    pub folio_flags: u64,
    /// Offset of the folio order byte (`_flags_1` low byte, or `_folio_order` before 6.2).
    pub folio_order: u64,
    /// `offsetof(struct folio, mapping)`.
    pub folio_mapping: u64,
    /// `offsetof(struct folio, _mapcount)`.
    pub folio_mapcount: u64,
    /// `offsetof(struct memcg_vmstats, stats_updates)` (an `atomic_t`).
    pub vs_stats_updates: u64,
    /// Address of `__per_cpu_offset` when [`residue_flags::PCPU_OFFSET_SYMBOL`] is set.
    pub per_cpu_offset: u64,
}

impl ResidueConfig {
    /// All-zero configuration, compiled into the object before userspace overrides it.
    pub const ZERO: Self = Self {
        wire_version: 0,
        flags: 0,
        nr_cpus: 0,
        max_memcgs: 0,
        state_bytes: 0,
        stock_bytes: 0,
        obj_bytes: 0,
        batch_bytes: 0,
        batch_nr: 0,
        batch_folios: 0,
        batch_capacity: 0,
        _pad: 0,
        memcg_css: 0,
        css_cgroup: 0,
        css_flags: 0,
        cgroup_kn: 0,
        kn_id: 0,
        memory_usage: 0,
        memory_max: 0,
        memory_watermark: 0,
        memory_failcnt: 0,
        memsw_usage: 0,
        kmem_usage: 0,
        tcpmem_usage: 0,
        memcg_vmstats: 0,
        vs_state: 0,
        vs_state_pending: 0,
        memcg_vmstats_percpu: 0,
        vsp_state: 0,
        vsp_state_prev: 0,
        vsp_stats_updates: 0,
        bpf_array_pptrs: 0,
        task_se_cfs_rq: 0,
        cfs_rq_rq: 0,
        pcpu_runqueues: 0,
        pcpu_this_cpu_off: 0,
        pcpu_memcg_stock: 0,
        pcpu_obj_stock: 0,
        obj_cached_objcg: 0,
        objcg_memcg: 0,
        pcpu_lru_add: 0,
        folio_memcg_data: 0,
        folio_flags: 0,
        folio_order: 0,
        folio_mapping: 0,
        folio_mapcount: 0,
        vs_stats_updates: 0,
        per_cpu_offset: 0,
    };
}

/// One memcg a snapshot covers (element of [`MAP_RES_REQ`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemcgReq {
    /// Kernel address of the `struct mem_cgroup`.
    pub memcg: u64,
    /// Its cgroup id, checked before anything is read (a freed memcg fails the check).
    pub cgroup_id: u64,
}

/// What a snapshot reads of one memcg, once when it opens and once when it closes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MemcgFrame {
    /// The memcg read.
    pub memcg: u64,
    /// Its cgroup id as read now.
    pub cgroup_id: u64,
    /// `css.flags` (`CSS_ONLINE`, `CSS_DYING`, ...).
    pub css_flags: u64,
    /// `memory.usage` (pages).
    pub usage: u64,
    /// `memory.max` (pages).
    pub max: u64,
    /// `memory.watermark` (pages).
    pub watermark: u64,
    /// `memory.failcnt`.
    pub failcnt: u64,
    /// `memsw.usage` (v1), pages.
    pub memsw_usage: u64,
    /// `kmem.usage` (v1), pages.
    pub kmem_usage: u64,
    /// `tcpmem.usage` (v1), pages.
    pub tcpmem_usage: u64,
    /// [`residue_err`] bits.
    pub err: u32,
    /// `vmstats->stats_updates` (6.8+): the update units a memory.stat read compares with
    /// `MEMCG_CHARGE_BATCH x online CPUs` before flushing.
    pub flush_updates: u32,
    /// `vmstats->state[]`: the flushed hierarchical aggregate.
    pub state: [i64; RES_MAX_STATE],
    /// `vmstats->state_pending[]`: flushed at a child, not yet added here.
    pub state_pending: [i64; RES_MAX_STATE],
}

/// One memcg's per-CPU statistics on one CPU.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MemcgCpuStat {
    /// `stats_updates` (6.8+), else 0.
    pub stats_updates: u64,
    /// [`residue_err`] bits.
    pub err: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// `state[]`: updates made on this CPU, cumulative.
    pub state: [i64; RES_MAX_STATE],
    /// `state_prev[]`: the part of `state[]` already flushed.
    pub state_prev: [i64; RES_MAX_STATE],
}

/// One CPU's static per-CPU residues, once at open and once at close.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CpuFrame {
    /// `__per_cpu_offset[cpu]`, from the per-CPU array map route.
    pub base: u64,
    /// Start of this CPU's static per-CPU area.
    pub unit: u64,
    /// `this_cpu_off` read inside that area: must equal `base` (cross-check of the route).
    pub this_cpu_off: u64,
    /// `cached_objcg->memcg` of the object stock (0 when no objcg is cached).
    pub obj_memcg: u64,
    /// [`residue_err`] bits.
    pub err: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Raw bytes of `memcg_stock` (`stock_bytes` of them are valid).
    pub stock: [u64; RES_STOCK_BYTES / 8],
    /// Raw bytes of the object stock (`obj_bytes` valid).
    pub obj: [u64; RES_OBJ_BYTES / 8],
    /// Raw bytes of `cpu_fbatches.lru_add` (`batch_bytes` valid).
    pub batch: [u64; RES_BATCH_BYTES / 8],
}

/// One folio of an lru_add batch.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FolioInfo {
    /// The folio's address (0: slot unused).
    pub folio: u64,
    /// `memcg_data` (the memcg pointer plus flag bits).
    pub memcg_data: u64,
    /// `flags` (page flags; `PG_head` marks a large folio).
    pub flags: u64,
    /// The word holding the order in its low byte (meaningful only for large folios).
    pub order_word: u64,
    /// `mapping` (bit 0 set for anonymous folios).
    pub mapping: u64,
    /// The word at `_mapcount` (low 32 bits: the map count minus one).
    pub mapcount_word: u64,
    /// [`residue_err`] bits.
    pub err: u64,
}

/// The result of one peek.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct PeekBuf {
    /// The bytes read.
    pub data: [u64; RES_PEEK_BYTES / 8],
}

const _: () = assert!(size_of::<StatKey>() == 16);
const _: () = assert!(size_of::<StatValue>() == 16);
const _: () = assert!(size_of::<StatBlock>() == STAT_BLOCK_BYTES);
const _: () = assert!(size_of::<SlotCache>() == 16);
const _: () = assert!(size_of::<ProbeConfig>() == 72);
const _: () = assert!(size_of::<ResidueConfig>() == 48 + 36 * 8);
const _: () = assert!(size_of::<MemcgReq>() == 16);
const _: () = assert!(size_of::<MemcgFrame>() == 88 + 16 * RES_MAX_STATE);
const _: () = assert!(size_of::<MemcgCpuStat>() == 16 + 16 * RES_MAX_STATE);
const _: () =
    assert!(size_of::<CpuFrame>() == 40 + RES_STOCK_BYTES + RES_OBJ_BYTES + RES_BATCH_BYTES);
const _: () = assert!(size_of::<FolioInfo>() == 56);
const _: () = assert!(size_of::<PeekBuf>() == RES_PEEK_BYTES);
const _: () = assert!(core::mem::align_of::<MemcgFrame>() == 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are #[repr(C)], contain only integers and have no padding (the
    // size assertions above pin that), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::StatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StatValue {}
    // SAFETY: as above (an array of `StatValue`).
    unsafe impl aya::Pod for super::StatBlock {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProbeConfig {}
    // SAFETY: as above: integers and integer arrays only, sizes pinned above.
    unsafe impl aya::Pod for super::ResidueConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemcgReq {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemcgFrame {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemcgCpuStat {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuFrame {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FolioInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeekBuf {}
}
