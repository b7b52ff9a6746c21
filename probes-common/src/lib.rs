//! Types that cross the kernel boundary, defined once for both sides.
//!
//! The eBPF programs (`probes-ebpf`) write these records into maps; the `memcg-drift` library
//! reads them back. Every type is `#[repr(C)]`, has no implicit padding (explicit `_pad` fields)
//! and pins its size at compile time, so a layout change cannot go unnoticed by either side.
//! With the `user` feature the types implement `aya::Pod` so userspace can read the maps.
#![no_std]

use core::mem::size_of;

/// Bumped on any change of a record or key layout below.
pub const WIRE_VERSION: u32 = 1;

/// Per-CPU hash map of stat-path aggregates: `StatKey` -> `StatValue`.
pub const MAP_STAT_AGG: &str = "STAT_AGG";
/// Per-CPU array of `u64` loss and activity counters, indexed by the `counter` module.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// LRU hash of cgroup id -> filter verdict (1 = inside the target subtree, 0 = outside).
pub const MAP_VERDICT: &str = "VERDICT";
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
/// probes see ends in exactly one of `RECORDED`, `FILTERED`, `MAP_FULL` or `READ_FAILED`.
pub mod counter {
    /// Stat-path events seen by any stat hook.
    pub const STAT_SEEN: u32 = 0;
    /// Events added to an aggregate.
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

/// Flags of [`ProbeConfig::flags`].
pub mod flags {
    /// Record only the target cgroup (and, with [`DESCENDANTS`], its subtree).
    pub const FILTER: u32 = 1;
    /// Include the target's descendants.
    pub const DESCENDANTS: u32 = 2;
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

const _: () = assert!(size_of::<StatKey>() == 16);
const _: () = assert!(size_of::<StatValue>() == 16);
const _: () = assert!(size_of::<ProbeConfig>() == 72);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four types are #[repr(C)], contain only integers and have no padding (the
    // size assertions above pin that), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::StatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProbeConfig {}
}
