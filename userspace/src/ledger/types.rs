//! The ledger's inputs besides the snapshot, and its typed output (docs/json.md, `explain`).

use super::*;

/// What the ledger needs to know besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Cgroup version of the hierarchy.
    pub version: CgroupVersion,
    /// cgroup2 mounted with `memory_hugetlb_accounting` (hugetlb folios are charged).
    pub hugetlb_accounting: bool,
    /// Page size in bytes.
    pub page_size: u64,
    /// Online CPUs (the kernel's flush threshold scales with them).
    pub online_cpus: usize,
    /// The target is the hierarchy's root.
    pub is_root: bool,
    /// `MEMCG_CHARGE_BATCH` as measured on the running kernel (`workload::batch`); the bounds
    /// that scale with it are left out when it could not be measured.
    pub charge_batch: Option<u64>,
}

/// A sum split by member of `T(X)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByMember {
    /// X itself (for byte-stock and stat terms: including freed descendants, which flushed
    /// into their parent when they were freed).
    #[serde(rename = "self")]
    pub own: i64,
    /// Live descendants.
    pub live: i64,
    /// Dying (offline, not yet freed) descendants.
    pub dying: i64,
}

/// A kernel bound on a residue term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bound {
    /// The bound in pages (for unflushed statistics: update units before a reader flushes).
    pub pages: i64,
    /// Where it comes from.
    pub why: String,
}

/// One line of the identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Term {
    /// Stable id: `lru.inactive_anon`, ..., `lru_add`, `kmem`, `sock`, `hugetlb`, `stock`.
    pub term: String,
    /// The statistic item behind a stat term.
    pub item: Option<String>,
    /// The term's value in pages.
    pub pages: i64,
    /// The term in bytes.
    pub bytes: i64,
    /// Stat terms: the flushed aggregate (what memory.stat shows, before clamping at 0).
    pub flushed: Option<i64>,
    /// Stat terms: flushed at a descendant, waiting in `state_pending` on the way up.
    pub pending_tree: Option<i64>,
    /// Per CPU: never-flushed deltas (stat terms) or what the CPU holds (stock, batches).
    pub per_cpu: Vec<i64>,
    /// Split by member.
    pub by_member: ByMember,
    /// The kernel's bound on the per-CPU part (stock, batches).
    pub bound: Option<Bound>,
    /// `lru_add` only: pages of folios no mapped statistic counts any more (unmapped anon,
    /// truncated file). The batch holds the last reference to most of them: when it drains,
    /// they are freed and uncharged.
    pub unmapped: Option<i64>,
    /// `lru_add` only: the same per CPU.
    pub unmapped_per_cpu: Option<Vec<i64>>,
}

/// A ledger term that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// The term.
    pub term: String,
    /// Why.
    pub reason: String,
}

/// One memory.stat row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatRow {
    /// The statistic item.
    pub item: String,
    /// Its memory.stat key on this cgroup version.
    pub key: Option<String>,
    /// Its unit.
    pub unit: Unit,
    /// What memory.stat shows now without a flush (the aggregate, negatives shown as 0), bytes.
    pub shown_bytes: i64,
    /// Updates not flushed into the aggregate yet, bytes (for slab items including the bytes
    /// the object stocks hold back).
    pub pending_bytes: i64,
    /// The exact value now, bytes.
    pub exact_bytes: i64,
}

/// The gap between the books, split into the parts the kernel explains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// usage − the stat book as memory.stat shows it (identity items, flushed), pages.
    pub pages: i64,
    /// Of which: statistics not yet flushed, pages.
    pub unflushed_pages: i64,
    /// Of which: charge stock, pages.
    pub stock_pages: i64,
    /// Of which: lru_add batches, pages.
    pub lru_add_pages: i64,
    /// Of which: negative aggregates memory.stat shows as 0, pages.
    pub clamped_pages: i64,
    /// Of which: unexplained, pages.
    pub unexplained_pages: i64,
    /// Of which: ledger terms memory.stat has no line for, other than the stock and the
    /// lru_add batches (before 5.18 on v1: kernel memory, from the kmem page_counter), pages.
    pub outside_stat_pages: i64,
    /// The kernel's bounds: unflushed updates, stock, batches.
    pub bounds: Vec<(String, Bound)>,
    /// The target's `memcg_vmstats.stats_updates` (6.8+): the update units a memory.stat read
    /// compares with the `unflushed` bound before flushing (`memcg_vmstats_needs_flush`).
    pub flush_updates: Option<i64>,
    /// The target's per-CPU `stats_updates` (6.8+): units each CPU carries before adding them
    /// to `flush_updates` (at `MEMCG_CHARGE_BATCH`, 6.18 memcontrol.c:567-596).
    pub percpu_updates: Vec<i64>,
    /// Batched kernels (5.4-5.12, no rstat): the delta a CPU keeps of one page item before it
    /// spills into the memcg and every ancestor (`|x| > MEMCG_CHARGE_BATCH`, the measured
    /// charge batch; byte items spill at that many pages' worth). `None` on rstat kernels or
    /// when the batch could not be measured.
    pub spill_threshold_pages: Option<i64>,
}

/// A dying descendant and what it still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dying {
    /// Cgroup id.
    pub cgroup_id: u64,
    /// Path below the target (`a/b`), from kernfs names.
    pub path: String,
    /// Its page_counter usage, pages (stale for kernel memory: reparented objcgs uncharge
    /// the parent, docs/ledger.md §2).
    pub usage_pages: u64,
    /// Its own share of the LRU terms (pages on LRU lists charged to it).
    pub lru_pages: i64,
    /// Pages of its folios waiting in lru_add batches.
    pub lru_add_pages: i64,
    /// Its own share of MEMCG_KMEM.
    pub kmem_pages: i64,
    /// Pages in its charge stock slots.
    pub stock_pages: i64,
    /// Charge stock slots caching it, empty ones included: a cached memcg keeps a css
    /// reference until its slot is drained, so it cannot be freed before.
    pub stock_slots: u32,
}

impl Dying {
    /// What keeps it, in words (one entry per holder the walk sees).
    pub fn held_by(&self) -> Vec<String> {
        let mut by = Vec::new();
        if self.lru_pages > 0 {
            by.push(format!(
                "{} LRU page(s) charged to it (page cache / tmpfs)",
                self.lru_pages
            ));
        }
        if self.lru_add_pages > 0 {
            by.push(format!(
                "{} page(s) in per-CPU lru_add batches",
                self.lru_add_pages
            ));
        }
        if self.kmem_pages > 0 {
            by.push(format!("{} kernel-memory page(s)", self.kmem_pages));
        }
        if self.stock_slots > 0 {
            by.push(if self.stock_pages == 0 {
                format!(
                    "{} charge stock slot(s) caching it, 0 page(s) (drain_all_stock skips empty \
                     slots; a slot lets go when its CPU next charges another memcg)",
                    self.stock_slots
                )
            } else {
                format!(
                    "{} charge stock slot(s) caching it, {} page(s)",
                    self.stock_slots, self.stock_pages
                )
            });
        }
        if by.is_empty() && self.usage_pages > 0 {
            by.push(format!(
                "{} page(s) charged to it that no statistic names (kernel memory, where the \
                 kernel counts it nowhere)",
                self.usage_pages
            ));
        }
        if by.is_empty() {
            by.push(
                "no charged page seen: a css reference outside the memory books (or its \
                 release was in flight)"
                    .into(),
            );
        }
        by
    }
}

/// The object stocks' kernel-memory bytes (inside MEMCG_KMEM; informational).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjStockDetail {
    /// Per CPU, bytes pre-charged for objcgs of T(X).
    pub per_cpu_bytes: Vec<i64>,
    /// Per CPU, slab bytes held back from NR_SLAB_*_B (reclaimable + unreclaimable).
    pub per_cpu_slab_bytes: Vec<i64>,
}

/// The swap book (issue 13): what the counter swap entries are charged to holds, against the
/// entries `MEMCG_SWAP` counts over `T(X)` with its unflushed parts. Both move together:
/// `__mem_cgroup_try_charge_swap` (v2) charges `memcg->swap` and adds to MEMCG_SWAP,
/// `memcg1_swapout` (v1) uncharges `memory`, keeps `memsw` and adds to MEMCG_SWAP, and
/// `__mem_cgroup_uncharge_swap` undoes either; neither goes through a per-CPU stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapBook {
    /// The counter: `swap` (v2, `memory.swap.current`) or `memsw - memory` (v1: a swapped-out
    /// page leaves `memory` and stays in `memsw`).
    pub counter: String,
    /// Its value, pages.
    pub usage_pages: i64,
    /// MEMCG_SWAP over T(X) (term `swap`): flushed, pending, per CPU, by member.
    pub entries: Term,
    /// usage − entries, pages (signed).
    pub unexplained_pages: i64,
}

/// The whole ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ledger {
    /// page_counter usage of X, pages.
    pub usage_pages: i64,
    /// The terms, in identity order.
    pub terms: Vec<Term>,
    /// Σ terms, pages.
    pub explained_pages: i64,
    /// usage − Σ terms, pages (signed).
    pub unexplained_pages: i64,
    /// Terms the snapshot could not read; when non-empty, unexplained includes them.
    pub missing: Vec<Missing>,
    /// Places of charged pages this version never reads: when unexplained is not 0 and
    /// `missing` is empty, the remainder is there.
    pub not_read: Vec<Missing>,
    /// The mapped view's remainder (anon + file + kmem [+ sock] + stock + batch folios no
    /// mapped statistic counts): a cross-check; it differs from the LRU view's when swap-cache,
    /// pinned or truncated-but-referenced folios exist (docs/ledger.md §2).
    pub mapped_view_unexplained_pages: Option<i64>,
    /// memory.stat as the kernel would show it now.
    pub stat_book: Vec<StatRow>,
    /// The gap between the books.
    pub gap: Gap,
    /// Dying descendants.
    pub dying: Vec<Dying>,
    /// Object stocks (informational).
    pub obj_stock: Option<ObjStockDetail>,
    /// Members of T(X): (self, live descendants, dying descendants, freed before the read).
    pub members: (usize, usize, usize, usize),
    /// The swap book.
    pub swap: Option<SwapBook>,
    /// Why there is no swap book.
    pub swap_not_read: Option<String>,
}
