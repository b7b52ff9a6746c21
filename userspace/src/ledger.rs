//! The ledger: closes a memcg's charge book (page_counter `memory.usage`) against its
//! statistics, to the page, with the per-CPU residues (docs/ledger.md §2, the LRU view):
//!
//! ```text
//! usage(X) = Σ_{5 LRU lists} H(X)          folios on an LRU list
//!          + lru_add batches of T(X)        folios not on an LRU list yet
//!          + H_MEMCG_KMEM(X)                kernel memory, whole pages
//!          + [v2] H_MEMCG_SOCK(X)           socket buffers (v1 charges them to tcpmem only)
//!          + [v2, memory_hugetlb_accounting] H_NR_HUGETLB(X)
//!          + charge stock slots of T(X)     charged ahead, not handed out yet
//!          + unexplained                    (signed)
//! H_i(X) = X.state[i] + Σ_{Z∈T(X)} ( Z.state_pending[i] + Σ_cpu (state − state_prev)(Z, cpu) )
//! ```
//!
//! `T(X)` is X and all its descendants, dying ones included. Every term keeps its per-CPU
//! breakdown and its split by member ("X itself", "live descendants", "dying descendants"). The
//! module also builds the stat book as memory.stat shows it, the gap between the two books with
//! the bounds the kernel guarantees on each part, and the dying descendants' remaining charge.
//!
//! Pure: it reads a decoded [`Residues`] snapshot and a [`Tree`]; `explain` does the I/O.

use serde::Serialize;

use crate::{
    cgroup::CgroupVersion,
    kernel::layout::ResidueLayout,
    residue::{MemcgResidue, Residues, Tree},
};

/// The five LRU lists, `NR_LRU_BASE + lru` (include/linux/mmzone.h `enum lru_list`).
pub const LRU_ITEMS: [&str; 5] = [
    "NR_INACTIVE_ANON",
    "NR_ACTIVE_ANON",
    "NR_INACTIVE_FILE",
    "NR_ACTIVE_FILE",
    "NR_UNEVICTABLE",
];

/// Unit of a statistic item (6.18 memcontrol.c:1390-1403 `memcg_page_state_unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Pages.
    Pages,
    /// Bytes (`*_B` items).
    Bytes,
    /// KiB (`NR_KERNEL_STACK_KB`).
    #[serde(rename = "kib")]
    KiB,
}

impl Unit {
    fn of(item: &str) -> Unit {
        if item.ends_with("_B") {
            Unit::Bytes
        } else if item.ends_with("_KB") {
            Unit::KiB
        } else {
            Unit::Pages
        }
    }

    /// Bytes of `v` units.
    pub fn bytes(self, v: i64, page_size: u64) -> i64 {
        match self {
            Unit::Pages => v * page_size as i64,
            Unit::Bytes => v,
            Unit::KiB => v * 1024,
        }
    }
}

/// The memory.stat rows shown: item, v1 key (hierarchical `total_*`, mm/memcontrol-v1.c
/// memcg1_stat_format), v2 key (memory_stats[], 6.18 memcontrol.c:1333-1370).
const STAT_BOOK: &[(&str, Option<&str>, Option<&str>)] = &[
    ("NR_ANON_MAPPED", Some("total_rss"), Some("anon")),
    ("NR_FILE_PAGES", Some("total_cache"), Some("file")),
    ("MEMCG_KMEM", None, Some("kernel")),
    ("NR_KERNEL_STACK_KB", None, Some("kernel_stack")),
    ("NR_PAGETABLE", None, Some("pagetables")),
    ("MEMCG_PERCPU_B", None, Some("percpu")),
    ("MEMCG_SOCK", None, Some("sock")),
    ("MEMCG_VMALLOC", None, Some("vmalloc")),
    ("NR_SHMEM", Some("total_shmem"), Some("shmem")),
    (
        "NR_FILE_MAPPED",
        Some("total_mapped_file"),
        Some("file_mapped"),
    ),
    ("NR_FILE_DIRTY", Some("total_dirty"), Some("file_dirty")),
    (
        "NR_WRITEBACK",
        Some("total_writeback"),
        Some("file_writeback"),
    ),
    ("NR_SWAPCACHE", Some("total_swapcached"), Some("swapcached")),
    (
        "NR_INACTIVE_ANON",
        Some("total_inactive_anon"),
        Some("inactive_anon"),
    ),
    (
        "NR_ACTIVE_ANON",
        Some("total_active_anon"),
        Some("active_anon"),
    ),
    (
        "NR_INACTIVE_FILE",
        Some("total_inactive_file"),
        Some("inactive_file"),
    ),
    (
        "NR_ACTIVE_FILE",
        Some("total_active_file"),
        Some("active_file"),
    ),
    (
        "NR_UNEVICTABLE",
        Some("total_unevictable"),
        Some("unevictable"),
    ),
    ("NR_SLAB_RECLAIMABLE_B", None, Some("slab_reclaimable")),
    ("NR_SLAB_UNRECLAIMABLE_B", None, Some("slab_unreclaimable")),
    ("NR_HUGETLB", None, Some("hugetlb")),
    ("MEMCG_SWAP", Some("total_swap"), None),
];

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
    /// The kernel's bounds: unflushed updates, stock, batches.
    pub bounds: Vec<(String, Bound)>,
    /// The target's `memcg_vmstats.stats_updates` (6.8+): the update units a memory.stat read
    /// compares with the `unflushed` bound before flushing (`memcg_vmstats_needs_flush`).
    pub flush_updates: Option<i64>,
    /// The target's per-CPU `stats_updates` (6.8+): units each CPU carries before adding them
    /// to `flush_updates` (at `MEMCG_CHARGE_BATCH`, 6.18 memcontrol.c:567-596).
    pub percpu_updates: Vec<i64>,
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Own,
    Live,
    Dying,
    Gone,
}

/// Sums of one statistic item over the members.
struct ItemSum {
    flushed: i64,
    pending_tree: i64,
    per_cpu: Vec<i64>,
    by_member: ByMember,
    /// Per node: its own share.
    own: Vec<i64>,
}

impl ItemSum {
    fn total(&self) -> i64 {
        self.flushed + self.pending_tree + self.per_cpu.iter().sum::<i64>()
    }
}

struct Calc<'a> {
    l: &'a ResidueLayout,
    tree: &'a Tree,
    r: &'a Residues,
    ctx: &'a Context,
    class: Vec<Class>,
    /// Nodes whose `state` forms the flushed part: X, or for the root its children.
    tops: Vec<usize>,
    /// Nodes summed: T(X), or T(X) minus the root.
    members: Vec<bool>,
    /// Per node, its children that were read (not gone).
    children: Vec<Vec<usize>>,
    /// Node index by memcg pointer.
    by_memcg: std::collections::HashMap<u64, usize>,
    ncpu: usize,
}

impl<'a> Calc<'a> {
    fn new(l: &'a ResidueLayout, tree: &'a Tree, r: &'a Residues, ctx: &'a Context) -> Self {
        let class: Vec<Class> = tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if r.memcgs.get(i).is_none_or(|m| m.gone) {
                    Class::Gone
                } else if i == 0 {
                    Class::Own
                } else if n.online {
                    Class::Live
                } else {
                    Class::Dying
                }
            })
            .collect();
        // The root's own pages are never charged (try_charge skips it, 6.18 memcontrol.c:2495),
        // so its page_counter counts its children's subtrees only.
        let (tops, members) = if ctx.is_root {
            let tops = (0..tree.nodes.len())
                .filter(|&i| tree.nodes[i].parent == Some(0) && class[i] != Class::Gone)
                .collect();
            let members = (0..tree.nodes.len())
                .map(|i| i != 0 && class[i] != Class::Gone)
                .collect();
            (tops, members)
        } else {
            let members = class.iter().map(|c| *c != Class::Gone).collect();
            (vec![0], members)
        };
        let ncpu = r
            .memcgs
            .iter()
            .map(|m| m.cpu_delta.len())
            .max()
            .unwrap_or(0)
            .max(r.cpus.len());
        let mut children = vec![Vec::new(); tree.nodes.len()];
        for (j, n) in tree.nodes.iter().enumerate() {
            if let Some(p) = n.parent
                && class[j] != Class::Gone
                && let Some(c) = children.get_mut(p)
            {
                c.push(j);
            }
        }
        Calc {
            l,
            tree,
            r,
            ctx,
            class,
            tops,
            members,
            children,
            by_memcg: tree
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.memcg != 0)
                .map(|(i, n)| (n.memcg, i))
                .collect(),
            ncpu,
        }
    }

    fn add_member(&self, by: &mut ByMember, node: usize, v: i64) {
        match self.class[node] {
            Class::Own => by.own += v,
            Class::Live => by.live += v,
            Class::Dying => by.dying += v,
            Class::Gone => {}
        }
    }

    fn item(&self, name: &str) -> Option<ItemSum> {
        let k = self.l.stats.index.slot(name)?;
        let m = &self.r.memcgs;
        let flushed = self.tops.iter().map(|&t| m[t].state[k]).sum();
        let mut pending_tree = 0;
        let mut per_cpu = vec![0; self.ncpu];
        let mut by_member = ByMember::default();
        let mut own = vec![0; self.tree.nodes.len()];
        for (i, node) in m.iter().enumerate() {
            if !self.members[i] {
                continue;
            }
            pending_tree += node.pending[k];
            let mut cpu_sum = 0;
            for (c, d) in node.cpu_delta.iter().enumerate() {
                per_cpu[c] += d[k];
                cpu_sum += d[k];
            }
            // Z's own share: what it aggregated minus what its children passed up (their
            // `state`, less what still waits in Z's `state_pending`), plus its per-CPU deltas.
            let children: i64 = self.children[i].iter().map(|&j| m[j].state[k]).sum();
            let share = node.state[k] + node.pending[k] - children + cpu_sum;
            own[i] = share;
            self.add_member(&mut by_member, i, share);
        }
        Some(ItemSum {
            flushed,
            pending_tree,
            per_cpu,
            by_member,
            own,
        })
    }

    /// Node index of a memcg pointer among the members.
    fn member_of(&self, memcg: u64) -> Option<usize> {
        self.by_memcg
            .get(&memcg)
            .copied()
            .filter(|&i| self.members[i])
    }

    fn stat_term(&self, term: &str, item: &str) -> Option<Term> {
        let s = self.item(item)?;
        let pages = s.total();
        Some(Term {
            term: term.to_string(),
            item: Some(item.to_string()),
            pages,
            bytes: pages * self.ctx.page_size as i64,
            flushed: Some(s.flushed),
            pending_tree: Some(s.pending_tree),
            per_cpu: s.per_cpu,
            by_member: s.by_member,
            bound: None,
            unmapped: None,
            unmapped_per_cpu: None,
        })
    }

    fn stock(&self) -> (Term, Vec<i64>) {
        let mut per_cpu = vec![0; self.ncpu];
        let mut by_member = ByMember::default();
        let mut per_node = vec![0; self.tree.nodes.len()];
        for (c, cpu) in self.r.cpus.iter().enumerate() {
            for s in &cpu.stock {
                if let Some(i) = self.member_of(s.memcg) {
                    per_cpu[c] += s.pages as i64;
                    per_node[i] += s.pages as i64;
                    self.add_member(&mut by_member, i, s.pages as i64);
                }
            }
        }
        let slots = self.l.stock.as_ref().map(|s| s.slots).unwrap_or(1);
        let nmembers = self.members.iter().filter(|m| **m).count().max(1);
        let per = slots.min(nmembers) as i64;
        let bound = self.ctx.charge_batch.map(|b| Bound {
            pages: b as i64 * per * self.ncpu as i64,
            why: format!(
                "at most {b} pages (MEMCG_CHARGE_BATCH, measured) per memcg per CPU (a refill \
                 above it drains the slot) in {per} of {slots} slot(s) x {} CPUs",
                self.ncpu
            ),
        });
        let pages = per_cpu.iter().sum();
        (
            Term {
                term: "stock".into(),
                item: None,
                pages,
                bytes: pages * self.ctx.page_size as i64,
                flushed: None,
                pending_tree: None,
                per_cpu,
                by_member,
                bound,
                unmapped: None,
                unmapped_per_cpu: None,
            },
            per_node,
        )
    }

    /// (term, pages no mapped statistic counts, pages per node)
    fn lru_add(&self) -> (Term, i64, Vec<i64>) {
        let mut per_cpu = vec![0; self.ncpu];
        let mut by_member = ByMember::default();
        let mut uncounted = 0;
        let mut uncounted_cpu = vec![0; self.ncpu];
        let mut per_node = vec![0; self.tree.nodes.len()];
        for (c, cpu) in self.r.cpus.iter().enumerate() {
            for f in &cpu.batch {
                if let Some(i) = self.member_of(f.memcg) {
                    per_cpu[c] += f.pages as i64;
                    per_node[i] += f.pages as i64;
                    self.add_member(&mut by_member, i, f.pages as i64);
                    if !f.counted {
                        uncounted += f.pages as i64;
                        uncounted_cpu[c] += f.pages as i64;
                    }
                }
            }
        }
        let cap = self.l.lru_add.as_ref().map(|b| b.capacity).unwrap_or(0) as i64;
        let pages = per_cpu.iter().sum();
        (
            Term {
                term: "lru_add".into(),
                item: None,
                pages,
                bytes: pages * self.ctx.page_size as i64,
                flushed: None,
                pending_tree: None,
                per_cpu,
                by_member,
                bound: Some(Bound {
                    pages: cap * self.ncpu as i64,
                    why: format!(
                        "at most {cap} folios per CPU (PAGEVEC_SIZE); large folios never wait \
                         in the batch, so pages = folios"
                    ),
                }),
                unmapped: Some(uncounted),
                unmapped_per_cpu: Some(uncounted_cpu),
            },
            uncounted,
            per_node,
        )
    }
}

/// Computes the ledger of `tree.nodes[0]` from a snapshot.
pub fn compute(l: &ResidueLayout, tree: &Tree, r: &Residues, ctx: &Context) -> Ledger {
    let calc = Calc::new(l, tree, r, ctx);
    let usage_pages = r.memcgs.first().map_or(0, |m| m.usage as i64);
    let mut terms = Vec::new();
    let mut missing = Vec::new();
    for item in LRU_ITEMS {
        let id = format!("lru.{}", item.trim_start_matches("NR_").to_lowercase());
        match calc.stat_term(&id, item) {
            Some(t) => terms.push(t),
            None => missing.push(Missing {
                term: id,
                reason: format!("{item} has no memcg statistic slot on this kernel"),
            }),
        }
    }
    let static_ok = r.static_percpu.clone();
    let mut uncounted_batch = None;
    let mut batch_per_node = vec![0; tree.nodes.len()];
    match (&static_ok, &l.lru_add) {
        (Ok(()), Ok(_)) => {
            let (t, unc, per_node) = calc.lru_add();
            uncounted_batch = Some(unc);
            batch_per_node = per_node;
            terms.push(t);
        }
        (Err(e), _) | (_, Err(e)) => missing.push(Missing {
            term: "lru_add".into(),
            reason: e.clone(),
        }),
    }
    let mut extra = vec![("kmem", "MEMCG_KMEM")];
    if ctx.version == CgroupVersion::V2 {
        // v1 charges sockets to tcpmem only (memcg1_charge_skmem, v1.c:2175-2191).
        extra.push(("sock", "MEMCG_SOCK"));
        if ctx.hugetlb_accounting {
            // Charged only on v2 with memory_hugetlb_accounting (memcontrol.c:4744-4751).
            extra.push(("hugetlb", "NR_HUGETLB"));
        }
    }
    for (id, item) in extra {
        match calc.stat_term(id, item) {
            Some(t) => terms.push(t),
            None => missing.push(Missing {
                term: id.into(),
                reason: format!("{item} has no memcg statistic slot on this kernel"),
            }),
        }
    }
    if l.stats.kmem_stat_atomic {
        missing.push(Missing {
            term: "kmem.atomic".into(),
            reason: "this kernel keeps part of MEMCG_KMEM pending in mem_cgroup.kmem_stat \
                     (NMI-safe atomics), which this version does not read"
                .into(),
        });
    }
    let mut stock_per_node = vec![0; tree.nodes.len()];
    match (&static_ok, &l.stock) {
        (Ok(()), Ok(_)) => {
            let (t, per_node) = calc.stock();
            stock_per_node = per_node;
            terms.push(t);
        }
        (Err(e), _) | (_, Err(e)) => missing.push(Missing {
            term: "stock".into(),
            reason: e.clone(),
        }),
    }
    if ctx.is_root
        && let Some(k) = calc.item("MEMCG_KMEM")
    {
        // obj_cgroup_uncharge_pages / obj_cgroup_release (6.18 memcontrol.c:2768-2780, :170-176)
        // uncharge the statistics of the memcg an objcg points to, but skip the page_counter
        // when that memcg is the root: kernel memory of a cgroup that died (its objcgs were
        // reparented up to the root) and is freed later stays charged to the root's counter
        // forever. Nothing in memory records how much; the root's own MEMCG_KMEM share (which
        // those frees push down) is the visible trace.
        missing.push(Missing {
            term: "root.reparented_kmem".into(),
            reason: format!(
                "kernel memory reparented to the root and freed later is uncharged from the \
                 root's statistics but never from its page_counter (memcontrol.c:2777), so the \
                 root's usage keeps it; the root's own MEMCG_KMEM share is now {} pages",
                k.own[0]
            ),
        });
    }
    if tree.left_out > 0 {
        missing.push(Missing {
            term: "descendants".into(),
            reason: format!(
                "{} descendants beyond the reader's limit were not read (their pending \
                 statistics, stock and batches are missing)",
                tree.left_out
            ),
        });
    }
    let explained_pages: i64 = terms.iter().map(|t| t.pages).sum();
    let unexplained_pages = usage_pages - explained_pages;

    // Mapped view: anon + file + kmem [+ sock] + stock + batch folios no mapped stat counts.
    let mapped_view_unexplained_pages = (|| {
        let mut sum = calc.item("NR_ANON_MAPPED")?.total() + calc.item("NR_FILE_PAGES")?.total();
        for t in &terms {
            if matches!(t.term.as_str(), "kmem" | "sock" | "hugetlb" | "stock") {
                sum += t.pages;
            }
        }
        Some(usage_pages - sum - uncounted_batch?)
    })();

    // The stat book, as memory.stat shows it.
    let mut stat_book = Vec::new();
    let obj = obj_stock(&calc);
    for (item, v1, v2) in STAT_BOOK {
        let Some(s) = calc.item(item) else { continue };
        let unit = Unit::of(item);
        let key = match ctx.version {
            CgroupVersion::V1 => v1,
            CgroupVersion::V2 => v2,
        };
        // memory.stat shows X's own aggregate (for the root too), clamped at 0
        // (memcg_page_state, 6.18 memcontrol.c:649-661).
        let k = l.stats.index.slot(item).unwrap_or(0);
        let x_state = r.memcgs.first().map_or(0, |m| m.state[k]);
        let mut pending = s.total() - s.flushed;
        if calc.ctx.is_root {
            pending = s.pending_tree
                + s.per_cpu.iter().sum::<i64>()
                + r.memcgs[0].pending[k]
                + r.memcgs[0].cpu_delta.iter().map(|d| d[k]).sum::<i64>();
        }
        let mut pending_bytes = unit.bytes(pending, ctx.page_size);
        if let Some(o) = &obj
            && item.starts_with("NR_SLAB_")
        {
            // Slab bytes the object stocks hold back (__account_obj_stock, 6.18
            // memcontrol.c:2871-2918).
            let held: i64 = o
                .per_cpu_slab_parts
                .iter()
                .map(|(r, u)| {
                    if *item == "NR_SLAB_RECLAIMABLE_B" {
                        *r
                    } else {
                        *u
                    }
                })
                .sum();
            pending_bytes += held;
        }
        let shown = unit.bytes(x_state.max(0), ctx.page_size);
        stat_book.push(StatRow {
            item: (*item).to_string(),
            key: key.map(str::to_string),
            unit,
            shown_bytes: shown,
            pending_bytes,
            exact_bytes: unit.bytes(x_state, ctx.page_size) + pending_bytes,
        });
    }

    // The gap between the books, over the identity's stat items.
    let stat_terms: Vec<&Term> = terms.iter().filter(|t| t.flushed.is_some()).collect();
    let shown_pages: i64 = stat_terms
        .iter()
        .map(|t| t.flushed.unwrap_or(0).max(0))
        .sum();
    let clamped_pages: i64 = stat_terms
        .iter()
        .map(|t| t.flushed.unwrap_or(0).max(0) - t.flushed.unwrap_or(0))
        .sum();
    let unflushed_pages: i64 = stat_terms
        .iter()
        .map(|t| t.pages - t.flushed.unwrap_or(0))
        .sum();
    let term_pages = |id: &str| terms.iter().find(|t| t.term == id).map_or(0, |t| t.pages);
    let mut bounds: Vec<(String, Bound)> = ctx
        .charge_batch
        .map(|b| {
            let n = ctx.online_cpus;
            let why = if l.stats.per_memcg_flush {
                format!(
                    "a memory.stat read flushes first when more than {b} (MEMCG_CHARGE_BATCH, \
                     measured) x {n} online CPUs updates are pending in the subtree (6.18 \
                     memcontrol.c:558-561); otherwise the periodic flusher catches up within 2 s"
                )
            } else {
                format!(
                    "a read flushes the whole tree first when more than {b} (MEMCG_CHARGE_BATCH, \
                     measured) x {n} online CPUs updates are pending machine-wide (6.1 \
                     memcontrol.c:579-650); otherwise the periodic flusher catches up within 2 s"
                )
            };
            let pages = b as i64 * n as i64;
            ("unflushed".to_string(), Bound { pages, why })
        })
        .into_iter()
        .collect();
    for t in &terms {
        if let Some(b) = &t.bound {
            bounds.push((t.term.clone(), b.clone()));
        }
    }
    let x = r.memcgs.first();
    let gap = Gap {
        pages: usage_pages - shown_pages,
        unflushed_pages,
        stock_pages: term_pages("stock"),
        lru_add_pages: term_pages("lru_add"),
        clamped_pages,
        unexplained_pages,
        bounds,
        flush_updates: x.and_then(|m| m.flush_updates).map(|v| v as i64),
        percpu_updates: x.map_or(Vec::new(), |m| {
            m.stats_updates.iter().map(|v| *v as i64).collect()
        }),
    };

    // Dying descendants.
    let lru_own: Vec<Vec<i64>> = LRU_ITEMS
        .iter()
        .filter_map(|i| calc.item(i).map(|s| s.own))
        .collect();
    let kmem_own = calc.item("MEMCG_KMEM").map(|s| s.own);
    let dying = tree
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| calc.class[*i] == Class::Dying)
        .map(|(i, n)| Dying {
            cgroup_id: n.cgroup_id,
            path: node_path(tree, i),
            usage_pages: r.memcgs[i].usage,
            lru_pages: lru_own.iter().map(|v| v[i]).sum(),
            lru_add_pages: batch_per_node[i],
            kmem_pages: kmem_own.as_ref().map_or(0, |v| v[i]),
            stock_pages: stock_per_node[i],
        })
        .collect();
    let count = |c: Class| calc.class.iter().filter(|x| **x == c).count();
    let (swap, swap_not_read) = match swap_book(&calc, r.memcgs.first(), usage_pages, ctx) {
        Ok(b) => (Some(b), None),
        Err(why) => (None, Some(why)),
    };
    Ledger {
        usage_pages,
        explained_pages,
        unexplained_pages,
        terms,
        missing,
        not_read: not_read(),
        mapped_view_unexplained_pages,
        stat_book,
        gap,
        dying,
        obj_stock: obj.map(|o| ObjStockDetail {
            per_cpu_bytes: o.per_cpu_bytes,
            per_cpu_slab_bytes: o.per_cpu_slab_parts.iter().map(|(r, u)| r + u).collect(),
        }),
        members: (
            count(Class::Own),
            count(Class::Live),
            count(Class::Dying),
            count(Class::Gone),
        ),
        swap,
        swap_not_read,
    }
}

/// The swap book of X (`x`, whose memory usage is `usage_pages`).
fn swap_book(
    calc: &Calc<'_>,
    x: Option<&MemcgResidue>,
    usage_pages: i64,
    ctx: &Context,
) -> Result<SwapBook, String> {
    if ctx.is_root {
        return Err(
            "the root's swap entries are not charged to a counter (mem_cgroup_is_root \
                    in __mem_cgroup_try_charge_swap and memcg1_swapout)"
                .into(),
        );
    }
    let counter = x
        .and_then(|m| m.swap)
        .map(|pages| pages as i64)
        .ok_or("the swap counter was not read")?;
    let (name, usage) = match ctx.version {
        CgroupVersion::V2 => ("swap", counter),
        CgroupVersion::V1 => ("memsw - memory", counter - usage_pages),
    };
    let entries = calc
        .stat_term("swap", "MEMCG_SWAP")
        .ok_or("MEMCG_SWAP has no memcg statistic slot on this kernel")?;
    Ok(SwapBook {
        counter: name.into(),
        usage_pages: usage,
        unexplained_pages: usage - entries.pages,
        entries,
    })
}

/// Where charged pages can be that this version does not read (docs/ledger.md §2).
fn not_read() -> Vec<Missing> {
    [
        (
            "mlock_batch",
            "new mlocked folios waiting in a per-CPU mlock batch before they reach the \
             unevictable list (mm/mlock.c mlock_new_folio)",
        ),
        (
            "isolated",
            "folios taken off their LRU list for a moment by reclaim, compaction or migration \
             (charged, on no list)",
        ),
        (
            "in_flight",
            "charges and frees in progress on other CPUs while the snapshot was taken",
        ),
    ]
    .into_iter()
    .map(|(term, reason)| Missing {
        term: term.into(),
        reason: reason.into(),
    })
    .collect()
}

struct ObjParts {
    per_cpu_bytes: Vec<i64>,
    per_cpu_slab_parts: Vec<(i64, i64)>,
}

fn obj_stock(calc: &Calc<'_>) -> Option<ObjParts> {
    if calc.r.static_percpu.is_err() || calc.l.obj_stock.is_err() {
        return None;
    }
    let mut per_cpu_bytes = Vec::new();
    let mut per_cpu_slab_parts = Vec::new();
    for cpu in &calc.r.cpus {
        let (b, s) = match &cpu.obj {
            Some(o) if calc.member_of(o.memcg).is_some() => (o.nr_bytes as i64, o.slab_b),
            _ => (0, (0, 0)),
        };
        per_cpu_bytes.push(b);
        per_cpu_slab_parts.push(s);
    }
    Some(ObjParts {
        per_cpu_bytes,
        per_cpu_slab_parts,
    })
}

/// `a/b/c` below the target, from kernfs names.
pub fn node_path(tree: &Tree, mut i: usize) -> String {
    let mut parts = Vec::new();
    while let Some(p) = tree.nodes[i].parent {
        parts.push(tree.nodes[i].name.as_str());
        i = p;
    }
    parts.reverse();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::{
            layout::ResidueLayout,
            testkernels::{Gen, layout},
        },
        residue::{BatchFolio, CpuResidue, MemcgNode, MemcgResidue, StockSlot},
    };

    fn node(memcg: u64, parent: Option<usize>, online: bool, name: &str) -> MemcgNode {
        MemcgNode {
            memcg,
            css: memcg,
            cgroup_id: memcg,
            name: name.into(),
            parent,
            depth: u32::from(parent.is_some()),
            css_flags: 0,
            online,
        }
    }

    fn memcg(l: &ResidueLayout, usage: u64, ncpu: usize) -> MemcgResidue {
        let n = l.stats.index.len;
        MemcgResidue {
            usage,
            state: vec![0; n],
            pending: vec![0; n],
            cpu_delta: vec![vec![0; n]; ncpu],
            stats_updates: vec![0; ncpu],
            ..Default::default()
        }
    }

    /// A charge batch for the synthetic readings (the real one is measured: workload::batch).
    const BATCH: u64 = 64;

    fn ctx(version: CgroupVersion) -> Context {
        Context {
            version,
            hugetlb_accounting: false,
            page_size: 4096,
            online_cpus: 2,
            is_root: false,
            charge_batch: Some(BATCH),
        }
    }

    /// X with a live child and a dying child, on two CPUs, every kind of residue present.
    fn scenario(l: &ResidueLayout) -> (Tree, Residues) {
        let slot = |n: &str| l.stats.index.slot(n).unwrap();
        let (ia, aa, kmem, anon, sock) = (
            slot("NR_INACTIVE_ANON"),
            slot("NR_ACTIVE_ANON"),
            slot("MEMCG_KMEM"),
            slot("NR_ANON_MAPPED"),
            slot("MEMCG_SOCK"),
        );
        let tree = Tree {
            nodes: vec![
                node(0x100, None, true, "x"),
                node(0x200, Some(0), true, "live"),
                node(0x300, Some(0), false, "dead"),
            ],
            left_out: 0,
        };
        let mut x = memcg(l, 1000, 2);
        let mut live = memcg(l, 300, 2);
        let mut dead = memcg(l, 150, 2);
        // Flushed: live had 200 inactive anon, all passed up into x; dead 100 of which 40
        // still wait in x's state_pending. x itself flushed 400 of its own.
        live.state[ia] = 200;
        dead.state[ia] = 100;
        x.state[ia] = 400 + 200 + 60;
        x.pending[ia] = 40;
        // Never flushed: x +30 on CPU 1, live +10 on CPU 0, dead -5 on CPU 1 (freed pages).
        x.cpu_delta[1][ia] = 30;
        live.cpu_delta[0][ia] = 10;
        dead.cpu_delta[1][ia] = -5;
        // 50 active anon in x, flushed.
        x.state[aa] = 50;
        // kmem: x 20 flushed (incl. 8 from live), live 8, plus 2 pending on CPU 0 in live.
        live.state[kmem] = 8;
        x.state[kmem] = 20;
        live.cpu_delta[0][kmem] = 2;
        // v2 sockets: 3 pages pending in x on CPU 0.
        x.cpu_delta[0][sock] = 3;
        // anon mapped: equals the LRU anon here.
        x.state[anon] = 710;
        x.cpu_delta[1][anon] = 30;
        live.cpu_delta[0][anon] = 10;
        dead.cpu_delta[1][anon] = -5;
        let cpus = vec![
            CpuResidue {
                stock: vec![
                    StockSlot {
                        slot: 0,
                        memcg: 0x100,
                        pages: 60,
                    },
                    StockSlot {
                        slot: 1,
                        memcg: 0x999,
                        pages: 64,
                    },
                ],
                obj: None,
                batch: vec![
                    BatchFolio {
                        memcg: 0x200,
                        pages: 1,
                        anon: true,
                        counted: true,
                    },
                    BatchFolio {
                        memcg: 0x999,
                        pages: 1,
                        anon: true,
                        counted: true,
                    },
                ],
                batch_len: 2,
            },
            CpuResidue {
                stock: vec![StockSlot {
                    slot: 0,
                    memcg: 0x300,
                    pages: 7,
                }],
                obj: None,
                batch: vec![BatchFolio {
                    memcg: 0x100,
                    pages: 1,
                    anon: true,
                    counted: false,
                }],
                batch_len: 1,
            },
        ];
        let r = Residues {
            memcgs: vec![x, live, dead],
            cpus,
            consistent: Ok(()),
            static_percpu: Ok(()),
        };
        (tree, r)
    }

    /// The swap book: the counter against MEMCG_SWAP with its pending and per-CPU parts, on v2
    /// (`swap`) and v1 (`memsw - memory`); a gap is signed; none for the root or an unread
    /// counter.
    #[test]
    fn swap_book_closes_on_both_versions() {
        for g in Gen::ALL {
            let l = layout(g);
            let (tree, mut r) = scenario(&l);
            let sw = l.stats.index.slot("MEMCG_SWAP").unwrap();
            // 100 flushed into x (30 of them from live), 4 pending in x, +3 on CPU 1 in live,
            // -2 on CPU 0 in dead (an entry freed): 105 entries.
            r.memcgs[0].state[sw] = 100;
            r.memcgs[1].state[sw] = 30;
            r.memcgs[0].pending[sw] = 4;
            r.memcgs[1].cpu_delta[1][sw] = 3;
            r.memcgs[2].cpu_delta[0][sw] = -2;

            r.memcgs[0].swap = Some(105);
            let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
            let b = led.swap.clone().expect("a v2 swap book");
            assert_eq!(led.swap_not_read, None);
            assert_eq!((b.counter.as_str(), b.usage_pages), ("swap", 105), "{g:?}");
            assert_eq!(b.entries.term, "swap");
            assert_eq!(b.entries.pages, 105);
            assert_eq!(b.entries.per_cpu, vec![-2, 3]);
            assert_eq!(b.unexplained_pages, 0);

            // v1: memsw holds the memory usage (1000 pages) and the swapped-out pages.
            r.memcgs[0].swap = Some(1000 + 105);
            let b = compute(&l, &tree, &r, &ctx(CgroupVersion::V1))
                .swap
                .unwrap();
            assert_eq!((b.counter.as_str(), b.usage_pages), ("memsw - memory", 105));
            assert_eq!(b.unexplained_pages, 0);

            // Seven entries the statistics do not have show as +7.
            r.memcgs[0].swap = Some(112);
            let b = compute(&l, &tree, &r, &ctx(CgroupVersion::V2))
                .swap
                .unwrap();
            assert_eq!(b.unexplained_pages, 7);

            let mut root = ctx(CgroupVersion::V2);
            root.is_root = true;
            let led = compute(&l, &tree, &r, &root);
            assert!(led.swap.is_none());
            assert!(led.swap_not_read.unwrap().contains("root"));
            r.memcgs[0].swap = None;
            let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
            assert_eq!(
                led.swap_not_read.as_deref(),
                Some("the swap counter was not read")
            );
        }
    }

    #[test]
    fn identity_closes_with_every_term() {
        for g in Gen::ALL {
            let l = layout(g);
            let (tree, r) = scenario(&l);
            let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
            let t = |id: &str| led.terms.iter().find(|t| t.term == id).unwrap().clone();
            // inactive anon: 660 flushed + 40 pending + (10, 25) per CPU = 735.
            let ia = t("lru.inactive_anon");
            assert_eq!(ia.flushed, Some(660));
            assert_eq!(ia.pending_tree, Some(40));
            assert_eq!(ia.per_cpu, vec![10, 25]);
            assert_eq!(ia.pages, 735);
            // Own shares: x = 660 + 40 - (200 + 100) + 30 = 430; live 200 + 10; dead 100 - 5.
            assert_eq!(
                ia.by_member,
                ByMember {
                    own: 430,
                    live: 210,
                    dying: 95
                }
            );
            assert_eq!(t("lru.active_anon").pages, 50);
            assert_eq!(t("kmem").pages, 22);
            assert_eq!(t("sock").pages, 3);
            let stock = t("stock");
            assert_eq!(stock.per_cpu, vec![60, 7]);
            assert_eq!(stock.by_member.dying, 7);
            // A batch per memcg in as many slots as the generation has (6.18: 7; before:
            // 1), for the 3 memcgs of the subtree, on 2 CPUs.
            let slots = l.stock.as_ref().unwrap().slots.min(3) as i64;
            assert_eq!(
                stock.bound.as_ref().unwrap().pages,
                BATCH as i64 * slots * 2,
                "{g:?}"
            );
            let batch = t("lru_add");
            assert_eq!(batch.per_cpu, vec![1, 1]);
            assert_eq!(batch.unmapped, Some(1));
            assert_eq!(batch.unmapped_per_cpu, Some(vec![0, 1]));
            // 735 + 50 + 22 + 3 + 67 + 2 = 879 explained of 1000.
            assert_eq!(led.explained_pages, 879);
            assert_eq!(led.unexplained_pages, 1000 - 879);
            assert!(led.missing.is_empty());
            assert_eq!(led.not_read.len(), 3);
            // Mapped view: anon 710 + 35 + file 0 + kmem 22 + sock 3 + stock 67 + 1 uncounted
            // batch folio.
            assert_eq!(led.mapped_view_unexplained_pages, Some(1000 - 838));
            // The dying child.
            assert_eq!(led.dying.len(), 1);
            assert_eq!(led.dying[0].path, "dead");
            assert_eq!(led.dying[0].lru_pages, 95);
            assert_eq!(led.dying[0].stock_pages, 7);
            assert_eq!(led.dying[0].lru_add_pages, 0);
            assert_eq!(led.dying[0].usage_pages, 150);
            assert_eq!(led.members, (1, 1, 1, 0));
            // The gap: usage - shown (660 + 50 + 20 + 0) = 270 = unflushed (75 + 0 + 2 + 3) + stock
            // 67 + batch 2 + unexplained 121 + clamped 0.
            assert_eq!(led.gap.pages, 270);
            assert_eq!(led.gap.unflushed_pages, 80);
            assert_eq!(
                led.gap.unflushed_pages
                    + led.gap.stock_pages
                    + led.gap.lru_add_pages
                    + led.gap.unexplained_pages
                    - led.gap.clamped_pages,
                led.gap.pages
            );
            // The stat book shows the flushed aggregate and the exact value.
            let anon = led
                .stat_book
                .iter()
                .find(|s| s.item == "NR_ANON_MAPPED")
                .unwrap();
            assert_eq!(anon.key.as_deref(), Some("anon"));
            assert_eq!(anon.shown_bytes, 710 * 4096);
            assert_eq!(anon.exact_bytes, 745 * 4096);
        }
    }

    #[test]
    fn v1_leaves_sockets_out_and_names_keys() {
        for g in Gen::ALL {
            let l = layout(g);
            let (tree, r) = scenario(&l);
            let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V1));
            assert!(led.terms.iter().all(|t| t.term != "sock"));
            assert_eq!(led.explained_pages, 876);
            let anon = led
                .stat_book
                .iter()
                .find(|s| s.item == "NR_ANON_MAPPED")
                .unwrap();
            assert_eq!(anon.key.as_deref(), Some("total_rss"));
            assert!(
                led.stat_book
                    .iter()
                    .any(|s| s.item == "MEMCG_KMEM" && s.key.is_none())
            );
        }
    }

    #[test]
    fn unreadable_static_percpu_names_the_missing_terms() {
        for g in Gen::ALL {
            let l = layout(g);
            let (tree, mut r) = scenario(&l);
            r.static_percpu = Err("per-CPU route check failed".into());
            r.cpus.clear();
            let led = compute(&l, &tree, &r, &ctx(CgroupVersion::V2));
            let names: Vec<&str> = led.missing.iter().map(|m| m.term.as_str()).collect();
            assert_eq!(names, ["lru_add", "stock"]);
            assert!(led.missing[0].reason.contains("route check"));
            assert_eq!(led.explained_pages, 810);
        }
    }

    #[test]
    fn root_counts_only_its_children() {
        for g in Gen::ALL {
            let l = layout(g);
            let (tree, mut r) = scenario(&l);
            // As the root: x's own 430 inactive anon pages are not charged; usage counts the
            // children's subtrees: live (210 LRU, 10 kmem, 1 batch folio) and dead (95 LRU, 7 in
            // stock).
            r.memcgs[0].usage = 210 + 10 + 1 + 95 + 7;
            let mut c = ctx(CgroupVersion::V1);
            c.is_root = true;
            let led = compute(&l, &tree, &r, &c);
            let ia = led
                .terms
                .iter()
                .find(|t| t.term == "lru.inactive_anon")
                .unwrap();
            assert_eq!(ia.pages, 210 + 95);
            assert_eq!(ia.by_member.own, 0);
            assert_eq!(led.unexplained_pages, 0);
        }
    }

    #[test]
    fn node_paths_follow_parents() {
        let tree = Tree {
            nodes: vec![
                node(1, None, true, "x"),
                node(2, Some(0), true, "a"),
                node(3, Some(1), false, "b"),
            ],
            left_out: 0,
        };
        assert_eq!(node_path(&tree, 2), "a/b");
        assert_eq!(node_path(&tree, 0), "");
    }
}
