//! Records and keys of the charge-path and OOM-path probes (`probes-ebpf/src/charge.rs`,
//! `probes-ebpf/src/oom.rs`), shared with userspace (`userspace/src/charge.rs`).
//!
//! The charge path is hot (one `try_charge_memcg` per faulted folio on 6.1), so it aggregates
//! per CPU: the traced cgroup in a dense block by (kind, counter) ([`MAP_CHARGE_DENSE`]), every
//! other cgroup in a per-CPU hash map keyed by (cgroup id, kind, counter). The OOM path is rare
//! and streams [`OomEvent`]s through one ring buffer. Nothing is dropped silently: every loss
//! has a slot in [`MAP_CHARGE_COUNTERS`].

use core::mem::size_of;

/// Per-CPU hash map of charge-path aggregates: [`ChargeKey`] -> [`ChargeValue`].
pub const MAP_CHARGE_AGG: &str = "CHARGE_AGG";
/// Per-CPU array of `u64` loss and activity counters, indexed by [`ccounter`].
pub const MAP_CHARGE_COUNTERS: &str = "CHARGE_COUNTERS";
/// Per-CPU array of one [`ChargeDense`]: the traced cgroup's aggregates (its id is the stat
/// configuration's `target_cgroup_id`), indexed by [`dense_index`], so that its events, the
/// hot ones, need no hash lookup; every other cgroup's go to [`MAP_CHARGE_AGG`].
pub const MAP_CHARGE_DENSE: &str = "CHARGE_DENSE";
/// Array of one `u32`: [`runtime`] bits userspace sets once the exit hooks are attached.
pub const MAP_CHARGE_RUNTIME: &str = "CHARGE_RUNTIME";
/// Ring buffer of [`OomEvent`]s.
pub const MAP_OOM_EVENTS: &str = "OOM_EVENTS";
/// LRU hash: cgroup id -> memory page_counter usage at the memcg's last stat event (inference).
pub const MAP_INFER_LAST: &str = "INFER_LAST";
/// LRU hash of the per-task frames of charge calls in progress (probes only).
pub const MAP_CHARGE_TASKS: &str = "CHARGE_TASKS";
/// Array per stat slot (see [`crate::MAP_STAT_SLOTS`]; slot 0: the target): the cgroup's
/// memory page_counter usage at its last stat event, plus one (0: no reading yet). Cgroups
/// with a slot keep their readings here rather than in [`MAP_INFER_LAST`], so that their
/// events need no hash lookup.
pub const MAP_INFER_SLOT: &str = "INFER_SLOT";
/// LRU hash: cgroup id -> the `memory_events_local[]` values last seen by the memory-event
/// hook ([`MemEvents`]); userspace seeds pre-existing cgroups from `memory.events.local`.
pub const MAP_MEMCG_EVENTS: &str = "MEMCG_EVENTS";
/// Entries of [`MAP_MEMCG_EVENTS`].
pub const MEMCG_EVENTS_ENTRIES: u32 = 4096;

/// Value of [`MAP_MEMCG_EVENTS`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemEvents {
    /// `memory_events_local[i]` as last seen.
    pub v: [u64; runtime::MAX_MEMORY_EVENTS as usize],
}
/// Capacity of [`MAP_INFER_LAST`].
pub const INFER_ENTRIES: u32 = 8192;
/// Name of the read-only global holding the [`ChargeConfig`].
pub const GLOBAL_CHARGE_CONFIG: &str = "CHARGE_CONFIG";

/// Capacity of [`MAP_CHARGE_AGG`]: distinct (cgroup, kind, counter) keys.
pub const CHARGE_AGG_ENTRIES: u32 = 16384;
/// Capacity of the per-task frame map (tasks inside a charge function at once).
pub const CHARGE_TASK_ENTRIES: u32 = 8192;
/// Bytes of the OOM ring buffer (a power of two, a multiple of the page size).
pub const OOM_RING_BYTES: u32 = 256 * 1024;
/// Nesting depth of `try_charge_memcg` / `page_counter_try_charge` the probes follow per task
/// (an interrupt that charges while the task is inside a charge nests one level).
pub const MAX_CHARGE_NESTING: u32 = 4;

/// What an aggregate counts. Pages are the function's page-count argument; events are calls.
pub mod kind {
    /// `try_charge_memcg` entries: pages requested.
    pub const TC_CALL: u32 = 0;
    /// Calls that returned 0 without charging the memory page_counter: served from the
    /// per-CPU stock (`consume_stock` succeeded).
    pub const TC_OK_STOCK: u32 = 1;
    /// Calls that returned 0 after charging the memory page_counter: pages requested.
    pub const TC_OK_COUNTER: u32 = 2;
    /// Calls that returned an error (-ENOMEM, or -EINTR on old kernels): pages requested.
    pub const TC_FAIL: u32 = 3;
    /// Memory page_counter charges made inside `try_charge_memcg` calls of the same memcg
    /// (`page_counter_try_charge` successes and forced `page_counter_charge`): pages charged
    /// (a batch, or the request when larger or forced).
    pub const TC_CHARGED: u32 = 4;
    /// `page_counter_try_charge` that succeeded.
    pub const PC_TRY_OK: u32 = 5;
    /// `page_counter_try_charge` that failed (some level of the hierarchy was at its limit).
    pub const PC_TRY_FAIL: u32 = 6;
    /// A failed `page_counter_try_charge`, keyed by the counter that was at its limit (`*fail`):
    /// the cgroup id and counter are the limiting ones.
    pub const PC_LIMIT_HIT: u32 = 7;
    /// `page_counter_charge` (charges that cannot fail: forced charges, replace, swap moves).
    pub const PC_CHARGE: u32 = 8;
    /// `page_counter_uncharge` (folio uncharges, stock drains, cancelled charges).
    pub const PC_UNCHARGE: u32 = 9;
    /// `page_counter_cancel` calls that reached the out-of-line function (one per hierarchy
    /// level of an uncharge; page_counter.c may inline its own calls).
    pub const PC_CANCEL: u32 = 10;
    /// Stock refills inside a `try_charge_memcg` of the same memcg: the batch surplus parked.
    pub const REFILL_BATCH: u32 = 11;
    /// Other stock refills: pages given back to the stock (kmem, socket and obj-stock uncharges).
    pub const REFILL_RETURN: u32 = 12;
    /// `drain_stock`: pages the stock returned to the page_counter (keyed by the cached memcg).
    pub const DRAIN: u32 = 13;
    /// `drain_all_stock` calls (keyed by the subtree root being drained).
    pub const DRAIN_ALL: u32 = 14;
    /// Memcg reclaim rounds begun (`mm_vmscan_memcg_reclaim_begin`); pages: 0.
    pub const RECLAIM: u32 = 15;
    /// Pages reclaimed by memcg reclaim (`mm_vmscan_memcg_reclaim_end`).
    pub const RECLAIMED: u32 = 16;
    /// `mem_cgroup_out_of_memory` invocations.
    pub const OOM: u32 = 17;
    /// OOM kills (`oom_kill_process`), keyed by the OOM's memcg.
    pub const OOM_KILL: u32 = 18;
    /// Inferred (no charge-path probe): the memory page_counter read at a stat event of the
    /// memcg was higher than at its previous stat event; pages: the rise.
    pub const INFER_UP: u32 = 19;
    /// Inferred: the reading was lower; pages: the fall.
    pub const INFER_DOWN: u32 = 20;
    /// `try_charge_memcg` calls that went round their retry loop (a failed page_counter
    /// attempt followed by another attempt, after reclaim or with a smaller batch); pages:
    /// the number of retries.
    pub const TC_RETRY: u32 = 21;
    /// `refill_obj_stock(objcg, nr_bytes, ..)`: kernel-memory bytes given to this CPU's object
    /// stock (freed objects, and the unused rest of a page charged for an object), keyed by the
    /// objcg's memcg; pages: bytes.
    pub const OBJ_REFILL: u32 = 22;
    /// `drain_obj_stock(stock)`: bytes the object stock held when it was drained (whole pages
    /// go back to the charge stock, the rest to `objcg->nr_charged_bytes`), keyed by the
    /// cached objcg's memcg; pages: bytes.
    pub const OBJ_DRAIN: u32 = 23;
    /// A `memory.events` event of the memcg, seen as `cgroup_file_notify` on its
    /// `events_local_file` or `swap_events_file` (the inlined `__memcg_memory_event`'s first
    /// step after raising `memory_events_local[event]`): `counter` is the event
    /// (`enum memcg_memory_event`), pages and events the increments since the last one seen.
    pub const MEMORY_EVENT: u32 = 24;
    /// Number of kinds.
    pub const COUNT: u32 = 25;
}

/// Which page_counter of a `struct mem_cgroup` a counter pointer is, decided in the kernel
/// from the pointer minus the BTF offsets of the members.
pub mod counter {
    /// `mem_cgroup.memory` (v1 and v2).
    pub const MEMORY: u32 = 0;
    /// `mem_cgroup.memsw` (v1) / `mem_cgroup.swap` (v2): one union, one offset.
    pub const SWAP: u32 = 1;
    /// `mem_cgroup.kmem` (v1 only; absent without CONFIG_MEMCG_V1).
    pub const KMEM: u32 = 2;
    /// `mem_cgroup.tcpmem` (v1 only).
    pub const TCPMEM: u32 = 3;
    /// Number of memcg counters.
    pub const COUNT: u32 = 4;
    /// Not a counter event (try_charge, stock, reclaim and OOM kinds).
    pub const NONE: u32 = 255;
}

/// Slots of [`MAP_CHARGE_COUNTERS`]. Every charge-path event ends in exactly one of
/// `RECORDED`, `FILTERED`, `MAP_FULL`, `READ_FAILED`, `NOT_MEMCG`.
pub mod ccounter {
    /// Events seen by any charge or OOM hook.
    pub const SEEN: u32 = 0;
    /// Events added to an aggregate.
    pub const RECORDED: u32 = 1;
    /// Events of cgroups outside the target subtree.
    pub const FILTERED: u32 = 2;
    /// Events lost because the aggregate map was full.
    pub const MAP_FULL: u32 = 3;
    /// Events lost because a kernel read failed.
    pub const READ_FAILED: u32 = 4;
    /// page_counter events whose counter is no memcg counter (e.g. hugetlb cgroups).
    pub const NOT_MEMCG: u32 = 5;
    /// Entries that could not push a frame (nesting deeper than [`MAX_CHARGE_NESTING`], or
    /// the per-task map full): the matching exit is not interpreted.
    pub const FRAME_LOST: u32 = 6;
    /// Exits without a frame (attached mid-call, or the entry was lost).
    pub const FRAME_MISSING: u32 = 7;
    /// OOM events that did not fit the ring buffer.
    pub const RING_FULL: u32 = 8;
    /// OOM events written to the ring buffer.
    pub const RING_SENT: u32 = 9;
    /// Inference: another CPU's stat event of the same cgroup overwrote the reading while
    /// this one was taking its share (the inferred split is approximate then).
    pub const INFER_RACE: u32 = 10;
    /// Number of slots.
    pub const COUNT: u32 = 11;
}

/// Bits of the [`MAP_CHARGE_RUNTIME`] word, set by userspace after attaching: an entry hook
/// keeps a per-task frame only when the matching exit hook is there to pop it.
pub mod runtime {
    /// `try_charge_memcg` has an exit hook (fexit or kretprobe).
    pub const TC_EXIT: u32 = 1;
    /// `page_counter_try_charge` has an exit hook.
    pub const PC_EXIT: u32 = 2;
    /// `drain_local_memcg_stock` has both its entry and its exit hook (6.16+).
    pub const DL_EXIT: u32 = 4;
    /// Most stock slots the local-drain hook reads (6.16+ has `NR_MEMCG_STOCK` = 7).
    pub const MAX_STOCK_SLOTS: u32 = 16;
    /// Most `memory.events` entries the memory-event hook reads (6.1-6.18 have 9).
    pub const MAX_MEMORY_EVENTS: u32 = 16;
}

/// Key of [`MAP_CHARGE_AGG`]; the map is per-CPU, so each key has one value per CPU.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct ChargeKey {
    /// The cgroup id (kernfs node id).
    pub cgroup_id: u64,
    /// One of the [`kind`] constants.
    pub kind: u32,
    /// One of the [`counter`] constants.
    pub counter: u32,
}

/// Value of [`MAP_CHARGE_AGG`] on one CPU.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ChargeValue {
    /// Sum of pages.
    pub pages: u64,
    /// Number of events.
    pub events: u64,
}

/// Counter lanes per kind in [`ChargeDense`]: the memcg counters and the memory-event
/// indices below `DENSE_LANES - 1`, and [`counter::NONE`] in the last lane.
pub const DENSE_LANES: u32 = 16;

/// Value of [`MAP_CHARGE_DENSE`] on one CPU.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ChargeDense {
    /// By [`dense_index`].
    pub v: [ChargeValue; (kind::COUNT * DENSE_LANES) as usize],
}

impl Default for ChargeDense {
    fn default() -> Self {
        Self {
            v: [ChargeValue::default(); (kind::COUNT * DENSE_LANES) as usize],
        }
    }
}

/// The index of (kind, counter) in [`ChargeDense`], `None` if it has no lane there.
#[inline(always)]
pub fn dense_index(k: u32, ctr: u32) -> Option<u32> {
    let lane = if ctr == counter::NONE {
        DENSE_LANES - 1
    } else if ctr < DENSE_LANES - 1 {
        ctr
    } else {
        return None;
    };
    (k < kind::COUNT).then_some(k * DENSE_LANES + lane)
}

/// The (kind, counter) of index `i` of [`ChargeDense`] (the inverse of [`dense_index`]).
pub fn dense_key(i: u32) -> (u32, u32) {
    let lane = i % DENSE_LANES;
    let ctr = if lane == DENSE_LANES - 1 {
        counter::NONE
    } else {
        lane
    };
    (i / DENSE_LANES, ctr)
}

/// Kinds of [`OomEvent`] (the ring buffer also carries the rare cgroup lifecycle events).
pub mod oom_kind {
    /// `mem_cgroup_out_of_memory(memcg, gfp, order)` entered: `cgroup_id` is the memcg, `pid`
    /// and `comm` the task that invoked it.
    pub const INVOKED: u32 = 0;
    /// `oom_kill_process(oc, message)` entered: `cgroup_id` is `oc->memcg` (0 for a global
    /// OOM), `pid`/`comm` the chosen victim.
    pub const KILL: u32 = 1;
    /// `oom:mark_victim`: `pid` the victim, `comm` its name when the kernel gives it (6.12+
    /// tracepoint or the task pointer), `cgroup_id` its memcg when the task is known, else 0.
    pub const VICTIM: u32 = 2;
    /// `cgroup:cgroup_mkdir`: `cgroup_id` the new cgroup, `order` its level, `pid`/`comm` the
    /// task that made it.
    pub const MKDIR: u32 = 3;
    /// `cgroup:cgroup_rmdir`: the cgroup removed (it is dying from now on until released).
    pub const RMDIR: u32 = 4;
    /// `cgroup:cgroup_release`: the cgroup released (its last reference gone; `pid`/`comm` the
    /// task that ran the release work).
    pub const RELEASE: u32 = 5;
}

/// One rare OOM-path event, as written to [`MAP_OOM_EVENTS`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct OomEvent {
    /// One of the [`oom_kind`] constants.
    pub kind: u32,
    /// CPU the event happened on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Cgroup id of the memcg (see [`oom_kind`]); 0 when unknown or global.
    pub cgroup_id: u64,
    /// Task id (see [`oom_kind`]).
    pub pid: u32,
    /// Allocation order (INVOKED, KILL); -1 when not known.
    pub order: i32,
    /// Task name, NUL-padded.
    pub comm: [u8; 16],
    /// The task that ran the hook (`bpf_get_current_pid_tgid() as u32`).
    pub current_pid: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Read-only kernel layout for the charge and OOM probes, resolved from the running kernel's
/// BTF by userspace before load. `ABSENT` marks a member this kernel does not have.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ChargeConfig {
    /// `offsetof(struct mem_cgroup, memory / memsw|swap / kmem / tcpmem)`, indexed by
    /// [`counter`]; [`ChargeConfig::ABSENT`] where the member does not exist.
    pub counter_off: [u64; 4],
    /// `offsetof(struct cgroup, subsys)`.
    pub cgroup_subsys: u64,
    /// `memory_cgrp_id` (`enum cgroup_subsys_id`), the memory controller's index in `subsys[]`.
    pub memory_cgrp_id: u64,
    /// `offsetof(struct memcg_stock_pcp, cached)`: the cached memcg (up to 6.15), or the
    /// array `cached[stock_slots]` of them (6.16+).
    pub stock_cached: u64,
    /// `offsetof(struct memcg_stock_pcp, nr_pages)`: an `unsigned int` (up to 6.15), or the
    /// array `uint8_t nr_pages[stock_slots]` (6.16+).
    pub stock_nr_pages: u64,
    /// Slots of the multi-slot stock (6.16+: `NR_MEMCG_STOCK`; `drain_stock(stock, i)` drains
    /// slot `i`); 0 for the single-slot stock (`drain_stock(stock)`).
    pub stock_slots: u32,
    /// Bytes of one `nr_pages` element: 4 (up to 6.15) or 1 (6.16+); 0 when unknown (the
    /// drain hook is then not used).
    pub stock_nr_size: u32,
    /// `offsetof(struct memcg_stock_pcp, work)`: `drain_local_memcg_stock(&stock->work)`
    /// (6.16+) finds its stock from it.
    pub stock_work: u64,
    /// `offsetof(struct mem_cgroup, memory_events_local)` (`atomic_long_t[]`).
    pub memcg_events_local: u64,
    /// `offsetof(struct mem_cgroup, events_local_file)` (`struct cgroup_file`).
    pub memcg_events_local_file: u64,
    /// `offsetof(struct mem_cgroup, swap_events_file)`; [`ChargeConfig::ABSENT`] if none.
    pub memcg_swap_events_file: u64,
    /// `MEMCG_NR_MEMORY_EVENTS` (at most [`runtime::MAX_MEMORY_EVENTS`]); 0 disables the hook.
    pub nr_memory_events: u32,
    /// Explicit padding.
    pub _pad2: u32,
    /// `offsetof(struct task_struct, cgroups)`.
    pub task_cgroups: u64,
    /// `offsetof(struct css_set, subsys)`.
    pub css_set_subsys: u64,
    /// `offsetof(struct task_struct, pid)`.
    pub task_pid: u64,
    /// `offsetof(struct task_struct, comm)`.
    pub task_comm: u64,
    /// `offsetof(struct oom_control, memcg)`.
    pub oc_memcg: u64,
    /// `offsetof(struct oom_control, order)`.
    pub oc_order: u64,
    /// `offsetof(struct oom_control, chosen)`.
    pub oc_chosen: u64,
    /// `offsetof(struct page_counter, usage)`.
    pub pc_usage: u64,
    /// `offsetof(struct obj_cgroup, memcg)`.
    pub objcg_memcg: u64,
    /// `offsetof(struct cgroup, self)` (its own css).
    pub cgroup_self: u64,
    /// `offsetof(struct cgroup, root)`.
    pub cgroup_root: u64,
    /// `offsetof(struct cgroup, level)`.
    pub cgroup_level: u64,
    /// `offsetof(struct cgroup_root, hierarchy_id)`.
    pub root_hierarchy_id: u64,
    /// The memory hierarchy's id (v2: 0, the default hierarchy); [`ChargeConfig::ABSENT`]
    /// when unknown (then lifecycle events are not checked for their hierarchy).
    pub target_hierarchy: u64,
    /// `offsetof(<object stock>, cached_objcg)`: `struct memcg_stock_pcp` up to 6.15,
    /// `struct obj_stock_pcp` from 6.16.
    pub obj_stock_objcg: u64,
    /// `offsetof(<object stock>, nr_bytes)` (an `unsigned int`).
    pub obj_stock_nr_bytes: u64,
    /// Offset of `pid` in the `oom:mark_victim` tracefs record.
    pub tp_victim_pid: u32,
    /// Offset of `comm` in that record; 0 where the record has none (6.1 has only `pid`).
    pub tp_victim_comm: u32,
    /// 1 if the `mark_victim` BTF tracepoint's first argument is a `struct task_struct *`
    /// (6.12+), 0 if it is the pid.
    pub victim_arg_is_task: u32,
    /// Must equal [`crate::WIRE_VERSION`].
    pub wire_version: u32,
}

impl ChargeConfig {
    /// Marks a member this kernel does not have.
    pub const ABSENT: u64 = u64::MAX;

    /// All-zero configuration, the value compiled into the object before userspace overrides it.
    pub const ZERO: Self = Self {
        counter_off: [Self::ABSENT; 4],
        cgroup_subsys: 0,
        memory_cgrp_id: 0,
        stock_cached: 0,
        stock_nr_pages: 0,
        stock_slots: 0,
        stock_nr_size: 0,
        stock_work: 0,
        memcg_events_local: 0,
        memcg_events_local_file: 0,
        memcg_swap_events_file: Self::ABSENT,
        nr_memory_events: 0,
        _pad2: 0,
        task_cgroups: 0,
        css_set_subsys: 0,
        task_pid: 0,
        task_comm: 0,
        oc_memcg: 0,
        oc_order: 0,
        oc_chosen: 0,
        pc_usage: 0,
        objcg_memcg: 0,
        cgroup_self: 0,
        cgroup_root: 0,
        cgroup_level: 0,
        root_hierarchy_id: 0,
        target_hierarchy: Self::ABSENT,
        obj_stock_objcg: 0,
        obj_stock_nr_bytes: 0,
        tp_victim_pid: 0,
        tp_victim_comm: 0,
        victim_arg_is_task: 0,
        wire_version: 0,
    };
}

const _: () = assert!(size_of::<ChargeKey>() == 16);
const _: () = assert!(size_of::<ChargeValue>() == 16);
const _: () = assert!(size_of::<OomEvent>() == 56);
const _: () = assert!(size_of::<ChargeConfig>() == 256);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four types are #[repr(C)], contain only integers and have no padding (the
    // size assertions above pin that), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ChargeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ChargeValue {}
    // SAFETY: as above (an array of `ChargeValue`).
    unsafe impl aya::Pod for super::ChargeDense {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ChargeConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemEvents {}
}
