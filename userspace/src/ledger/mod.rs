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

mod calc;
#[cfg(test)]
mod tests;
mod types;

use calc::*;
pub use types::*;

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
        (Err(e), _) => missing.push(Missing {
            term: "lru_add".into(),
            reason: e.to_string(),
        }),
        (_, Err(e)) => missing.push(Missing {
            term: "lru_add".into(),
            reason: e.to_string(),
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
            // Before 5.18 (no MEMCG_KMEM): v1 counts kernel memory in its kmem counter, v2
            // nowhere.
            None if id == "kmem" => match (ctx.version, calc.kmem_counter()) {
                (CgroupVersion::V1, Some(t)) => terms.push(t),
                _ => missing.push(Missing {
                    term: id.into(),
                    reason: "no MEMCG_KMEM statistic on this kernel (it came with 5.18), and \
                             cgroup v2 charges no kmem page_counter before it: kernel memory \
                             is counted nowhere, so it stays in `unexplained`"
                        .into(),
                }),
            },
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
    let mut stock_slots_per_node = vec![0; tree.nodes.len()];
    match (&static_ok, &l.stock) {
        (Ok(()), Ok(_)) => {
            let (t, per_node, slots) = calc.stock();
            stock_per_node = per_node;
            stock_slots_per_node = slots;
            terms.push(t);
        }
        (Err(e), _) => missing.push(Missing {
            term: "stock".into(),
            reason: e.to_string(),
        }),
        (_, Err(e)) => missing.push(Missing {
            term: "stock".into(),
            reason: e.to_string(),
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
    let outside_stat_pages: i64 = terms
        .iter()
        .filter(|t| t.flushed.is_none() && !matches!(t.term.as_str(), "stock" | "lru_add"))
        .map(|t| t.pages)
        .sum();
    let mut bounds: Vec<(String, Bound)> = ctx
        .charge_batch
        .map(|b| {
            let n = ctx.online_cpus;
            if l.stats.batched {
                // 5.4-5.12 (5.10 memcontrol.c __mod_memcg_state and __mod_memcg_lruvec_state):
                // no flush; a CPU keeps an item's delta while |x| <= MEMCG_CHARGE_BATCH (byte
                // items: that many pages' worth) and spills it into the memcg and every
                // ancestor at once past it. So each memcg of the subtree holds at most b per
                // item per CPU.
                let (k, m) = (stat_terms.len(), tree.nodes.len().max(1));
                return (
                    "unflushed".to_string(),
                    Bound {
                        pages: b as i64 * (n * k * m) as i64,
                        why: format!(
                            "no flush on this kernel: each CPU keeps a statistic's delta while \
                             it stays within {b} pages (MEMCG_CHARGE_BATCH, measured; byte \
                             items {b} pages' worth) and spills it into the memcg and all its \
                             ancestors past that (5.10 memcontrol.c __mod_memcg_state): at \
                             most {b} x {n} online CPUs x {k} items x {m} memcg(s)"
                        ),
                    },
                );
            }
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
        outside_stat_pages,
        bounds,
        flush_updates: x.and_then(|m| m.flush_updates).map(|v| v as i64),
        percpu_updates: x.map_or(Vec::new(), |m| {
            m.stats_updates.iter().map(|v| *v as i64).collect()
        }),
        spill_threshold_pages: ctx
            .charge_batch
            .filter(|_| l.stats.batched)
            .map(|b| b as i64),
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
            stock_slots: stock_slots_per_node[i],
        })
        .collect();
    let count = |c: Class| calc.class.iter().filter(|x| **x == c).count();
    let (swap, swap_not_read) = match swap_book(&calc, r.memcgs.first(), usage_pages, ctx) {
        Ok(b) => (Some(b), None),
        Err(why) => (None, Some(why.to_string())),
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

/// Why there is no swap book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwapNotRead {
    /// The root's swap is not charged to a counter.
    #[error(
        "the root's swap entries are not charged to a counter (mem_cgroup_is_root in \
         __mem_cgroup_try_charge_swap and memcg1_swapout)"
    )]
    Root,
    /// The residue reader did not read the swap counter.
    #[error("the swap counter was not read")]
    NoCounter,
    /// No statistic slot for `MEMCG_SWAP`.
    #[error("MEMCG_SWAP has no memcg statistic slot on this kernel")]
    NoSlot,
}

/// The swap book of X (`x`, whose memory usage is `usage_pages`).
fn swap_book(
    calc: &Calc<'_>,
    x: Option<&MemcgResidue>,
    usage_pages: i64,
    ctx: &Context,
) -> Result<SwapBook, SwapNotRead> {
    if ctx.is_root {
        return Err(SwapNotRead::Root);
    }
    let counter = x
        .and_then(|m| m.swap)
        .map(|pages| pages as i64)
        .ok_or(SwapNotRead::NoCounter)?;
    let (name, usage) = match ctx.version {
        CgroupVersion::V2 => ("swap", counter),
        CgroupVersion::V1 => ("memsw - memory", counter - usage_pages),
    };
    let entries = calc
        .stat_term("swap", "MEMCG_SWAP")
        .ok_or(SwapNotRead::NoSlot)?;
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
