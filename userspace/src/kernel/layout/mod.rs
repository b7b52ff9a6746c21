//! The kernel layout the residue reader needs, resolved from the running kernel's BTF at
//! start-up: where a memcg keeps its page counters, statistics and per-CPU statistics, how to
//! walk the css tree, where the per-CPU charge stock, object stock and lru_add batch live, and
//! which slot of `memcg_vmstats*.state[]` holds which statistic item.
//!
//! Nothing here is taken from a version number. Three layout generations are recognised by
//! their shape in BTF (docs/ledger.md §5):
//! - **6.16+** (6.18 here): `struct memcg_stock_pcp` with `NR_MEMCG_STOCK` slots (arrays
//!   `cached[]`, `nr_pages[]`) and a separate per-CPU `struct obj_stock_pcp obj_stock`;
//! - **up to 6.15** (6.12, 6.1): one slot (`cached`, `nr_pages`) with the object stock inside
//!   `memcg_stock_pcp`;
//! - **before 6.8/6.11** (6.1): no compacted stat index; `state[]` has `MEMCG_NR_STAT` slots and
//!   is indexed by the enum value itself.
//!
//! The core (cgroup identity, page counters, statistics) is required; the per-CPU parts are
//! optional and carry the reason when BTF lacks them, so `explain` can name the ledger terms it
//! cannot read. [`ResidueLayout::config`] turns the layout into the probes' read-only global.
//! Interpreting what is read is left to `residue` and `ledger`.

use probes_common::{
    RES_BATCH_BYTES, RES_MAX_FOLIOS, RES_MAX_STATE, RES_OBJ_BYTES, RES_PEEK_BYTES, RES_STOCK_BYTES,
    ResidueConfig, WIRE_VERSION, residue_flags,
};

use super::{btf::KernelBtf, symbols::KallsymsData};

/// The `node_stat_item` subset of memcg statistics, in source order: 6.18.5
/// mm/memcontrol.c:293-332. 6.12.117 (memcontrol.c:277-313) has the same list without
/// `PGDEMOTE_PROACTIVE` and `NR_HUGETLB`, which its `enum node_stat_item` lacks too, so one
/// list filtered by the running kernel's enum serves both. `#ifdef`'d entries (`NR_SWAPCACHE`,
/// `PGPROMOTE_SUCCESS`, `NR_HUGETLB`) follow the same `#ifdef`s in the enum.
pub(crate) const MEMCG_NODE_STAT_ITEMS: &[&str] = &[
    "NR_INACTIVE_ANON",
    "NR_ACTIVE_ANON",
    "NR_INACTIVE_FILE",
    "NR_ACTIVE_FILE",
    "NR_UNEVICTABLE",
    "NR_SLAB_RECLAIMABLE_B",
    "NR_SLAB_UNRECLAIMABLE_B",
    "WORKINGSET_REFAULT_ANON",
    "WORKINGSET_REFAULT_FILE",
    "WORKINGSET_ACTIVATE_ANON",
    "WORKINGSET_ACTIVATE_FILE",
    "WORKINGSET_RESTORE_ANON",
    "WORKINGSET_RESTORE_FILE",
    "WORKINGSET_NODERECLAIM",
    "NR_ANON_MAPPED",
    "NR_FILE_MAPPED",
    "NR_FILE_PAGES",
    "NR_FILE_DIRTY",
    "NR_WRITEBACK",
    "NR_SHMEM",
    "NR_SHMEM_THPS",
    "NR_FILE_THPS",
    "NR_ANON_THPS",
    "NR_KERNEL_STACK_KB",
    "NR_PAGETABLE",
    "NR_SECONDARY_PAGETABLE",
    "NR_SWAPCACHE",
    "PGPROMOTE_SUCCESS",
    "PGDEMOTE_KSWAPD",
    "PGDEMOTE_DIRECT",
    "PGDEMOTE_KHUGEPAGED",
    "PGDEMOTE_PROACTIVE",
    "NR_HUGETLB",
];

/// `memcg_stat_items[]`, 6.18.5 mm/memcontrol.c:334-342 (6.12.117 :315-323, identical).
const MEMCG_STAT_ITEMS: &[&str] = &[
    "MEMCG_SWAP",
    "MEMCG_SOCK",
    "MEMCG_PERCPU_B",
    "MEMCG_VMALLOC",
    "MEMCG_KMEM",
    "MEMCG_ZSWAP_B",
    "MEMCG_ZSWAPPED",
];

/// Why the layout cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A required type, member or enumerator is missing from BTF.
    #[error("kernel BTF has no {0}; memcg-drift cannot read memcg residues on this kernel")]
    Missing(String),
    /// The statistic slot index cannot be reproduced.
    #[error("cannot map statistic items to memcg_vmstats slots: {0}")]
    StatIndex(String),
}

/// One statistic item and its slot in `state[]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatSlot {
    /// The enumerator's name (`NR_ANON_MAPPED`, `MEMCG_KMEM`, ...).
    pub name: String,
    /// The enumerator's value.
    pub value: i64,
    /// Its index in `memcg_vmstats*.state[]`.
    pub slot: usize,
}

/// Item -> `state[]` slot of this kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatIndex {
    /// True when `state[]` is compacted (`mem_cgroup_stats_index`, 6.11+); false when it is
    /// indexed by the enum value (6.1).
    pub compacted: bool,
    /// Number of slots of `state[]` (its BTF length).
    pub len: usize,
    /// The items, in slot order for a compacted index.
    pub slots: Vec<StatSlot>,
}

impl StatIndex {
    /// The slot of a named item.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.slots.iter().find(|s| s.name == name).map(|s| s.slot)
    }

    /// The item name at a slot.
    pub fn name(&self, slot: usize) -> Option<&str> {
        self.slots
            .iter()
            .find(|s| s.slot == slot)
            .map(|s| s.name.as_str())
    }

    /// Reproduces the index (docs/ledger.md §4). Compacted kernels: `init_memcg_stats`
    /// numbers `memcg_node_stat_items[]` then `memcg_stat_items[]` in source order; the lists
    /// are filtered by the enumerators this kernel has and the count must equal the BTF length
    /// of `state[]`. Uncompacted kernels (`state[]` has exactly `MEMCG_NR_STAT` slots): the slot
    /// is the enum value.
    pub fn resolve(btf: &KernelBtf, state_len: usize) -> Result<StatIndex, LayoutError> {
        let node = btf
            .enum_values("node_stat_item")
            .ok_or_else(|| LayoutError::Missing("enum node_stat_item".into()))?;
        let memcg = btf
            .enum_values("memcg_stat_item")
            .ok_or_else(|| LayoutError::Missing("enum memcg_stat_item".into()))?;
        let nr_stat = memcg
            .iter()
            .find(|(n, _)| n == "MEMCG_NR_STAT")
            .map(|(_, v)| *v)
            .ok_or_else(|| LayoutError::Missing("enumerator MEMCG_NR_STAT".into()))?;
        if usize::try_from(nr_stat).ok() == Some(state_len) {
            // Enum-indexed: every real item of both enums, at its own value. Sentinels share
            // values with real items (NR_VM_NODE_STAT_ITEMS == MEMCG_SWAP) and are skipped;
            // within node_stat_item the alias NR_LRU_BASE == NR_INACTIVE_ANON keeps the latter.
            let mut slots: Vec<StatSlot> = Vec::new();
            for (n, v) in node.iter().chain(memcg.iter()) {
                if n.starts_with("NR_VM_") || n == "MEMCG_NR_STAT" || n == "NR_LRU_BASE" {
                    continue;
                }
                let Ok(slot) = usize::try_from(*v) else {
                    continue;
                };
                if slot < state_len && !slots.iter().any(|s| s.slot == slot) {
                    slots.push(StatSlot {
                        name: n.clone(),
                        value: *v,
                        slot,
                    });
                }
            }
            slots.sort_by_key(|s| s.slot);
            return Ok(StatIndex {
                compacted: false,
                len: state_len,
                slots,
            });
        }
        let mut slots = Vec::new();
        for (list, values) in [(MEMCG_NODE_STAT_ITEMS, &node), (MEMCG_STAT_ITEMS, &memcg)] {
            for name in list {
                if let Some((_, v)) = values.iter().find(|(n, _)| n == name) {
                    let slot = slots.len();
                    slots.push(StatSlot {
                        name: (*name).to_string(),
                        value: *v,
                        slot,
                    });
                }
            }
        }
        if slots.len() != state_len {
            return Err(LayoutError::StatIndex(format!(
                "the source lists give {} items present in this kernel's enums, but BTF says \
                 memcg_vmstats_percpu.state[] has {state_len} slots (this kernel's \
                 memcg_node_stat_items[] differs from the 6.12/6.18 lists)",
                slots.len()
            )));
        }
        Ok(StatIndex {
            compacted: true,
            len: state_len,
            slots,
        })
    }
}

/// How to identify a memcg and walk the css tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    /// `offsetof(struct mem_cgroup, css)`.
    pub memcg_css: u64,
    /// `offsetof(struct cgroup_subsys_state, cgroup)`.
    pub css_cgroup: u64,
    /// `offsetof(struct cgroup_subsys_state, parent)`.
    pub css_parent: u64,
    /// `offsetof(struct cgroup_subsys_state, children)` (a `list_head`).
    pub css_children: u64,
    /// `offsetof(struct cgroup_subsys_state, sibling)` (a `list_head`).
    pub css_sibling: u64,
    /// `offsetof(struct cgroup_subsys_state, flags)` (an `unsigned int`).
    pub css_flags: u64,
    /// Bytes of a css to read to cover all the fields above.
    pub css_span: u64,
    /// `CSS_ONLINE` (include/linux/cgroup-defs.h).
    pub css_online: u32,
    /// `CSS_DYING`, if this kernel has it (5.x+).
    pub css_dying: Option<u32>,
    /// `offsetof(struct cgroup, kn)`.
    pub cgroup_kn: u64,
    /// `offsetof(struct kernfs_node, id)`.
    pub kn_id: u64,
    /// `offsetof(struct kernfs_node, name)`.
    pub kn_name: u64,
    /// `offsetof(struct task_struct, cgroups)`.
    pub task_cgroups: u64,
    /// `offsetof(struct css_set, subsys)`.
    pub css_set_subsys: u64,
    /// `memory_cgrp_id` (enum cgroup_subsys_id).
    pub memory_cgrp_id: u64,
}

/// Where the page counters are, as offsets inside `struct mem_cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterLayout {
    /// `memory.usage`.
    pub usage: u64,
    /// `memory.max`.
    pub max: u64,
    /// `memory.watermark`.
    pub watermark: u64,
    /// `memory.failcnt`.
    pub failcnt: u64,
    /// `memsw.usage`, `kmem.usage`, `tcpmem.usage` when the v1 counters exist.
    pub v1: Option<(u64, u64, u64)>,
    /// `swap.usage` (v2; the same union member as v1's `memsw`), when it exists.
    pub swap: Option<u64>,
}

/// The statistics, aggregate and per CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLayout {
    /// `offsetof(struct mem_cgroup, vmstats)` (a pointer).
    pub vmstats: u64,
    /// `offsetof(struct memcg_vmstats, state)`.
    pub vs_state: u64,
    /// `offsetof(struct memcg_vmstats, state_pending)`.
    pub vs_state_pending: u64,
    /// True when `memcg_vmstats` counts pending updates per memcg (`stats_updates`, 6.8+);
    /// false for the global flush threshold of older kernels (6.1 memcontrol.c:579-650).
    pub per_memcg_flush: bool,
    /// `offsetof(struct memcg_vmstats, stats_updates)` when `per_memcg_flush`.
    pub vs_stats_updates: Option<u64>,
    /// `offsetof(struct mem_cgroup, vmstats_percpu)`.
    pub vmstats_percpu: u64,
    /// `offsetof(struct memcg_vmstats_percpu, state)`.
    pub vsp_state: u64,
    /// `offsetof(struct memcg_vmstats_percpu, state_prev)`.
    pub vsp_state_prev: u64,
    /// `offsetof(struct memcg_vmstats_percpu, stats_updates)` (6.8+).
    pub vsp_stats_updates: Option<u64>,
    /// The item -> slot index.
    pub index: StatIndex,
    /// Batched statistics (5.4-5.12, before rstat; kernel.md §2): `vmstats` is an array of
    /// hierarchical atomics inside the memcg (offset `vmstats`, `vs_state` 0), each CPU's
    /// `stat[]` (at `vsp_state`) is its residue below the spill threshold, and there is no
    /// `state_prev` nor `state_pending`.
    pub batched: bool,
    /// `mem_cgroup.kmem_stat` exists: kernels that need NMI-safe atomics keep part of
    /// `MEMCG_KMEM` pending there (6.18 memcontrol.c:2745-2762); not read by this version.
    pub kmem_stat_atomic: bool,
}

/// The route to other CPUs' static per-CPU data (shared/docs/percpu.md): this CPU's
/// `struct rq` is the per-CPU variable `runqueues`, found as `current->se.cfs_rq->rq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PercpuRoute {
    /// `offsetof(struct task_struct, se.cfs_rq)` (CONFIG_FAIR_GROUP_SCHED).
    pub task_se_cfs_rq: u64,
    /// `offsetof(struct cfs_rq, rq)`.
    pub cfs_rq_rq: u64,
    /// `.data..percpu` offset of `runqueues`.
    pub runqueues: u64,
    /// `.data..percpu` offset of `this_cpu_off`.
    pub this_cpu_off: u64,
}

/// The per-CPU charge stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLayout {
    /// `.data..percpu` offset of `memcg_stock`.
    pub var: u64,
    /// Bytes to copy (covers every slot).
    pub size: u64,
    /// Slots per CPU (`NR_MEMCG_STOCK`, 7 on 6.16+; 1 before).
    pub slots: usize,
    /// Offset of `cached` (`cached[0]` for the array form), pointers 8 bytes apart.
    pub cached: u64,
    /// Offset of `nr_pages` (`nr_pages[0]`).
    pub nr_pages: u64,
    /// Size of one `nr_pages` element (1: `uint8_t[]` on 6.16+, 4: `unsigned int` before).
    pub nr_pages_size: u64,
}

/// The per-CPU object stock (kernel memory charged by the byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjStockLayout {
    /// The per-CPU variable holding it: `obj_stock` (6.16+) or `memcg_stock` (before).
    pub var_name: &'static str,
    /// Its `.data..percpu` offset.
    pub var: u64,
    /// Bytes to copy.
    pub size: u64,
    /// Offset of `cached_objcg`.
    pub cached_objcg: u64,
    /// Offset of `nr_bytes` (`unsigned int`).
    pub nr_bytes: u64,
    /// Offsets of `nr_slab_reclaimable_b` and `nr_slab_unreclaimable_b` (`int`), where the
    /// stock holds slab statistics back (5.16+; `cached_pgdat` comes with them).
    pub slab_b: Option<(u64, u64)>,
    /// `offsetof(struct obj_cgroup, memcg)`.
    pub objcg_memcg: u64,
}

/// The per-CPU lru_add folio batch and the folio fields read for each entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLayout {
    /// `.data..percpu` offset of `cpu_fbatches.lru_add`.
    pub var: u64,
    /// Bytes to copy (`folios` end).
    pub size: u64,
    /// `offsetof(struct folio_batch, nr)`.
    pub nr: u64,
    /// `offsetof(struct folio_batch, folios)`.
    pub folios: u64,
    /// `PAGEVEC_SIZE` (the length of `folios[]`: 31 on 6.12+, 15 on 6.1).
    pub capacity: usize,
    /// `offsetof(struct folio, memcg_data)`.
    pub folio_memcg_data: u64,
    /// `offsetof(struct folio, flags)`.
    pub folio_flags: u64,
    /// Offset of the order byte: `_flags_1` (low byte, `folio_large_order`, 6.12 mm.h) or
    /// `_folio_order` (6.1 mm_types.h:313).
    pub folio_order: u64,
    /// `offsetof(struct folio, mapping)`.
    pub folio_mapping: u64,
    /// `offsetof(struct folio, _mapcount)`.
    pub folio_mapcount: u64,
    /// `PG_head` (enum pageflags): set on large folios.
    pub pg_head: u32,
    /// Flag bits of `memcg_data` (`__NR_MEMCG_DATA_FLAGS - 1`).
    pub memcg_data_mask: u64,
}

/// Every type name [`ResidueLayout::resolve`] looks up on any kernel generation, fetched in one
/// scan of the BTF's names before it starts (each lookup by name is a scan otherwise: 23 of
/// them took 18 ms of `explain`'s start, issue 11). `""` is the anonymous types (`CSS_DYING`'s
/// enum). A name missing here costs time, not correctness; the unit test
/// `one_scan_resolves_the_layout` fails on it.
const LAYOUT_TYPES: &[&str] = &[
    "",
    ".data..percpu",
    "bpf_array",
    "bpf_func_id",
    "cfs_rq",
    "cgroup",
    "cgroup_subsys_id",
    "cgroup_subsys_state",
    "cpu_fbatches",
    "css_set",
    "folio",
    "folio_batch",
    "kernfs_node",
    "lru_pvecs",
    "mem_cgroup",
    "memcg_stat_item",
    "memcg_stock_pcp",
    "memcg_vmstats",
    "memcg_vmstats_percpu",
    "node_stat_item",
    "obj_cgroup",
    "obj_stock_pcp",
    "page",
    "page_memcg_data_flags",
    "pagevec",
    "pageflags",
    "task_struct",
];

/// Everything the residue reader needs. The core is required; each per-CPU part is `Err`
/// with the reason when this kernel's BTF cannot describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidueLayout {
    /// Cgroup identity and the css tree.
    pub cgroup: CgroupLayout,
    /// Page counters.
    pub counters: CounterLayout,
    /// Statistics.
    pub stats: StatLayout,
    /// `offsetof(struct bpf_array, pptrs)`: with a per-CPU array map of the probes, gives
    /// every CPU's `__per_cpu_offset` (the dynamic per-CPU route, needed for statistics).
    pub bpf_array_pptrs: u64,
    /// How each CPU's `__per_cpu_offset` is found.
    pub pcpu_offsets: PcpuOffsets,
    /// Route to other CPUs' static per-CPU data.
    pub percpu: Result<PercpuRoute, PartError>,
    /// Charge stock.
    pub stock: Result<StockLayout, PartError>,
    /// Object stock.
    pub obj_stock: Result<ObjStockLayout, PartError>,
    /// lru_add batches.
    pub lru_add: Result<BatchLayout, PartError>,
}

/// How the residue programs find CPU c's `__per_cpu_offset[c]`, needed for every per-CPU read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcpuOffsets {
    /// `bpf_map_lookup_percpu_elem` (5.19+) on a per-CPU array of the probes, minus the
    /// array's raw per-CPU pointer (shared/docs/percpu.md).
    Helper,
    /// The array `__per_cpu_offset` itself, at this kallsyms address (kernels before 5.19
    /// built with `CONFIG_KALLSYMS_ALL`, as Debian's 5.10).
    Symbol(u64),
    /// Neither: the helper is not in this kernel's `enum bpf_func_id` and kallsyms has no
    /// `__per_cpu_offset` (or was not consulted: [`ResidueLayout::resolve_with`]).
    Missing,
}

/// Something this kernel's BTF lacks, as a phrase ("BTF lacks {}").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lack {
    /// A struct member.
    #[error("member `{member}` in struct {ty}")]
    Member {
        /// The struct.
        ty: String,
        /// The member (a dotted path allowed).
        member: String,
    },
    /// A per-CPU variable.
    #[error("per-CPU variable `{0}` in .data..percpu")]
    PercpuVar(String),
    /// The size of a struct member.
    #[error("size of `{member}` in struct {ty}")]
    Size {
        /// The struct.
        ty: String,
        /// The member.
        member: String,
    },
    /// The length of an array member.
    #[error("array member `{member}` in struct {ty}")]
    Array {
        /// The struct.
        ty: String,
        /// The member.
        member: String,
    },
    /// An enumerator.
    #[error("enumerator {0}")]
    Enumerator(String),
}

/// Why one per-CPU part of the layout ([`ResidueLayout::percpu`], `stock`, `obj_stock`,
/// `lru_add`) is unknown on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// No route to other CPUs' static per-CPU data.
    #[error("no route to other CPUs' static per-CPU data: BTF lacks {0}")]
    NoRoute(Lack),
    /// No `task_struct.se.cfs_rq` (a kernel without group scheduling).
    #[error(
        "no route to other CPUs' static per-CPU data: BTF lacks {0} (CONFIG_FAIR_GROUP_SCHED off?)"
    )]
    NoCfsRq(Lack),
    /// Charge stock: a field is missing.
    #[error("charge stock layout unknown: BTF lacks {0}")]
    StockLacks(Lack),
    /// Charge stock: `cached[]` and `nr_pages[]` differ in length.
    #[error("charge stock layout unknown: cached[{cached}] but nr_pages length {nr_pages:?}")]
    StockLengths {
        /// Length of `cached[]`.
        cached: u32,
        /// Length of `nr_pages[]`, if an array.
        nr_pages: Option<u32>,
    },
    /// Charge stock: `cached` of an unknown kind.
    #[error("charge stock layout unknown: `cached` is neither a pointer nor an array")]
    StockCachedKind,
    /// Charge stock: `nr_pages` elements of an unreadable width.
    #[error("charge stock layout unknown: nr_pages elements of {0} bytes")]
    StockNrPagesWidth(u64),
    /// Charge stock: larger than the reader copies.
    #[error("charge stock slots end at byte {0}, past the {RES_STOCK_BYTES} copied", RES_STOCK_BYTES = RES_STOCK_BYTES)]
    StockTooLarge(u64),
    /// Object stock: a field is missing.
    #[error("object stock layout unknown: BTF lacks {0}")]
    ObjStockLacks(Lack),
    /// Object stock: larger than the reader copies.
    #[error("object stock fields end at byte {0}, past the {RES_OBJ_BYTES} copied", RES_OBJ_BYTES = RES_OBJ_BYTES)]
    ObjStockTooLarge(u64),
    /// lru_add batch: a field is missing.
    #[error("lru_add batch layout unknown: BTF lacks {0}")]
    BatchLacks(Lack),
    /// lru_add batch: `folio_batch.nr` wider than a byte.
    #[error("lru_add batch layout unknown: folio_batch.nr is not one byte")]
    BatchNrWidth,
    /// lru_add batch: more folios than the reader copies.
    #[error("lru_add batches hold {0} folios, more than the {RES_MAX_FOLIOS} read", RES_MAX_FOLIOS = RES_MAX_FOLIOS)]
    BatchTooLarge(usize),
}

impl PartError {
    /// The per-CPU variable whose absence this is, if that is what it is.
    pub fn missing_percpu_var(&self) -> Option<&str> {
        match self {
            PartError::NoRoute(Lack::PercpuVar(v))
            | PartError::StockLacks(Lack::PercpuVar(v))
            | PartError::ObjStockLacks(Lack::PercpuVar(v))
            | PartError::BatchLacks(Lack::PercpuVar(v)) => Some(v),
            _ => None,
        }
    }
}

/// Offsets by name with one-line reasons: lookups in BTF, with kallsyms' per-CPU symbols
/// behind it for the per-CPU variables that old kernels' BTF does not list (Debian's 5.10 has
/// no per-CPU `VAR`s).
struct Finder<'a>(&'a KernelBtf, Option<&'a KallsymsData>);

impl Finder<'_> {
    fn has_pcpu(&self, var: &str) -> bool {
        self.pcpu(var).is_ok()
    }
    fn off(&self, s: &str, m: &str) -> Result<u64, Lack> {
        self.0.member_offset(s, m).ok_or_else(|| Lack::Member {
            ty: s.into(),
            member: m.into(),
        })
    }
    fn pcpu(&self, var: &str) -> Result<u64, Lack> {
        self.0
            .percpu_var_offset(var)
            .or_else(|| self.1.and_then(|k| k.percpu.get(var).copied()))
            .ok_or_else(|| Lack::PercpuVar(var.into()))
    }
    fn size(&self, s: &str, m: &str) -> Result<u64, Lack> {
        self.0.member_size(s, m).ok_or_else(|| Lack::Size {
            ty: s.into(),
            member: m.into(),
        })
    }
    fn end(&self, s: &str, m: &str) -> Result<u64, Lack> {
        Ok(self.off(s, m)? + self.size(s, m)?)
    }
}

fn missing(e: Lack) -> LayoutError {
    LayoutError::Missing(e.to_string())
}

impl ResidueLayout {
    /// Resolves the layout from BTF.
    pub fn resolve(btf: &KernelBtf) -> Result<ResidueLayout, LayoutError> {
        Self::resolve_with(btf, None)
    }

    /// Resolves the layout from BTF, and from kallsyms where BTF has no per-CPU variable and
    /// where the kernel has no `bpf_map_lookup_percpu_elem` ([`PcpuOffsets::Symbol`]).
    pub fn resolve_with(
        btf: &KernelBtf,
        kallsyms: Option<&KallsymsData>,
    ) -> Result<ResidueLayout, LayoutError> {
        btf.prefetch(LAYOUT_TYPES);
        let f = Finder(btf, kallsyms);
        let cgroup = Self::cgroup(btf, &f)?;
        let counters = Self::counters(btf, &f)?;
        let stats = Self::stats(btf, &f)?;
        let bpf_array_pptrs = f.off("bpf_array", "pptrs").map_err(missing)?;
        let pcpu_offsets = if btf
            .enum_value("bpf_func_id", "BPF_FUNC_map_lookup_percpu_elem")
            .is_some()
        {
            PcpuOffsets::Helper
        } else if let Some(addr) = kallsyms.and_then(|k| k.per_cpu_offset) {
            PcpuOffsets::Symbol(addr)
        } else {
            PcpuOffsets::Missing
        };
        let percpu = Self::percpu(&f);
        let stock = Self::stock(btf, &f);
        let obj_stock = Self::obj_stock(btf, &f);
        let lru_add = Self::lru_add(btf, &f);
        Ok(ResidueLayout {
            cgroup,
            counters,
            stats,
            bpf_array_pptrs,
            pcpu_offsets,
            percpu,
            stock,
            obj_stock,
            lru_add,
        })
    }

    fn cgroup(btf: &KernelBtf, f: &Finder<'_>) -> Result<CgroupLayout, LayoutError> {
        let css = "cgroup_subsys_state";
        let css_cgroup = f.off(css, "cgroup").map_err(missing)?;
        let css_parent = f.off(css, "parent").map_err(missing)?;
        let css_children = f.off(css, "children").map_err(missing)?;
        let css_sibling = f.off(css, "sibling").map_err(missing)?;
        let css_flags = f.off(css, "flags").map_err(missing)?;
        let css_span = [css_cgroup, css_parent, css_children, css_sibling, css_flags]
            .into_iter()
            .max()
            .unwrap_or(0)
            + 16;
        let css_online = btf
            .anon_enumerator("CSS_ONLINE")
            .ok_or_else(|| missing(Lack::Enumerator("CSS_ONLINE".into())))?;
        let memory_cgrp_id = btf
            .enum_value("cgroup_subsys_id", "memory_cgrp_id")
            .ok_or_else(|| {
                missing(Lack::Enumerator(
                    "memory_cgrp_id (no memory controller)".into(),
                ))
            })?;
        Ok(CgroupLayout {
            memcg_css: f.off("mem_cgroup", "css").map_err(missing)?,
            css_cgroup,
            css_parent,
            css_children,
            css_sibling,
            css_flags,
            css_span: css_span.min(RES_PEEK_BYTES as u64),
            css_online: css_online as u32,
            css_dying: btf.anon_enumerator("CSS_DYING").map(|v| v as u32),
            cgroup_kn: f.off("cgroup", "kn").map_err(missing)?,
            kn_id: f.off("kernfs_node", "id").map_err(missing)?,
            kn_name: f.off("kernfs_node", "name").map_err(missing)?,
            task_cgroups: f.off("task_struct", "cgroups").map_err(missing)?,
            css_set_subsys: f.off("css_set", "subsys").map_err(missing)?,
            memory_cgrp_id: memory_cgrp_id as u64,
        })
    }

    fn counters(btf: &KernelBtf, f: &Finder<'_>) -> Result<CounterLayout, LayoutError> {
        let m = "mem_cgroup";
        let v1 = match (
            btf.member_offset(m, "memsw.usage"),
            btf.member_offset(m, "kmem.usage"),
            btf.member_offset(m, "tcpmem.usage"),
        ) {
            (Some(a), Some(b), Some(c)) => Some((a, b, c)),
            _ => None,
        };
        Ok(CounterLayout {
            usage: f.off(m, "memory.usage").map_err(missing)?,
            max: f.off(m, "memory.max").map_err(missing)?,
            watermark: f.off(m, "memory.watermark").map_err(missing)?,
            failcnt: f.off(m, "memory.failcnt").map_err(missing)?,
            v1,
            swap: btf
                .member_offset(m, "swap.usage")
                .or_else(|| btf.member_offset(m, "memsw.usage")),
        })
    }

    /// Whether kallsyms could add to this layout: the per-CPU offsets' route or a per-CPU
    /// variable is missing (kernels before 5.19).
    pub fn wants_kallsyms(&self) -> bool {
        self.pcpu_offsets == PcpuOffsets::Missing
            || [
                self.percpu.as_ref().err(),
                self.stock.as_ref().err(),
                self.obj_stock.as_ref().err(),
                self.lru_add.as_ref().err(),
            ]
            .into_iter()
            .flatten()
            .any(|e| e.missing_percpu_var().is_some())
    }

    /// Whether the static per-CPU parts (stocks, batches) can be read at all.
    pub fn static_percpu(&self) -> bool {
        self.percpu.is_ok()
    }

    /// The probes' read-only global for `nr_cpus` CPUs and maps of `capacity` memcgs.
    pub fn config(&self, nr_cpus: u32, capacity: u32) -> ResidueConfig {
        let c = &self.cgroup;
        let s = &self.stats;
        let mut cfg = ResidueConfig {
            wire_version: WIRE_VERSION,
            nr_cpus,
            max_memcgs: capacity,
            state_bytes: (s.index.len * 8) as u32,
            memcg_css: c.memcg_css,
            css_cgroup: c.css_cgroup,
            css_flags: c.css_flags,
            cgroup_kn: c.cgroup_kn,
            kn_id: c.kn_id,
            memory_usage: self.counters.usage,
            memory_max: self.counters.max,
            memory_watermark: self.counters.watermark,
            memory_failcnt: self.counters.failcnt,
            memcg_vmstats: s.vmstats,
            vs_state: s.vs_state,
            vs_state_pending: s.vs_state_pending,
            memcg_vmstats_percpu: s.vmstats_percpu,
            vsp_state: s.vsp_state,
            vsp_state_prev: s.vsp_state_prev,
            bpf_array_pptrs: self.bpf_array_pptrs,
            ..ResidueConfig::ZERO
        };
        if s.batched {
            cfg.flags |= residue_flags::BATCHED_STATS;
        }
        if let PcpuOffsets::Symbol(addr) = self.pcpu_offsets {
            cfg.flags |= residue_flags::PCPU_OFFSET_SYMBOL;
            cfg.per_cpu_offset = addr;
        }
        if let Some(off) = s.vsp_stats_updates {
            cfg.flags |= residue_flags::PCPU_STATS_UPDATES;
            cfg.vsp_stats_updates = off;
        }
        if let Some(off) = s.vs_stats_updates {
            cfg.flags |= residue_flags::FLUSH_UPDATES;
            cfg.vs_stats_updates = off;
        }
        if let Some(swap) = self.counters.swap {
            cfg.flags |= residue_flags::SWAP_COUNTER;
            cfg.memsw_usage = swap;
        }
        if let Some((memsw, kmem, tcpmem)) = self.counters.v1 {
            cfg.flags |= residue_flags::V1_COUNTERS | residue_flags::SWAP_COUNTER;
            cfg.memsw_usage = memsw;
            cfg.kmem_usage = kmem;
            cfg.tcpmem_usage = tcpmem;
        }
        // The static per-CPU parts need the runqueue route on top of `bpf_array.pptrs`.
        if let Ok(p) = &self.percpu {
            cfg.flags |= residue_flags::STATIC_PERCPU;
            cfg.task_se_cfs_rq = p.task_se_cfs_rq;
            cfg.cfs_rq_rq = p.cfs_rq_rq;
            cfg.pcpu_runqueues = p.runqueues;
            cfg.pcpu_this_cpu_off = p.this_cpu_off;
            if let Ok(st) = &self.stock {
                cfg.flags |= residue_flags::STOCK;
                cfg.pcpu_memcg_stock = st.var;
                cfg.stock_bytes = st.size as u32;
            }
            if let Ok(o) = &self.obj_stock {
                cfg.flags |= residue_flags::OBJ_STOCK;
                cfg.pcpu_obj_stock = o.var;
                cfg.obj_bytes = o.size as u32;
                cfg.obj_cached_objcg = o.cached_objcg;
                cfg.objcg_memcg = o.objcg_memcg;
            }
            if let Ok(b) = &self.lru_add {
                cfg.flags |= residue_flags::LRU_ADD;
                cfg.pcpu_lru_add = b.var;
                cfg.batch_bytes = b.size as u32;
                cfg.batch_nr = b.nr as u32;
                cfg.batch_folios = b.folios as u32;
                cfg.batch_capacity = b.capacity as u32;
                cfg.folio_memcg_data = b.folio_memcg_data;
                cfg.folio_flags = b.folio_flags;
                cfg.folio_order = b.folio_order;
                cfg.folio_mapping = b.folio_mapping;
                cfg.folio_mapcount = b.folio_mapcount;
            }
        }
        cfg
    }
}

mod percpu;
mod stats;
#[cfg(test)]
mod tests;
