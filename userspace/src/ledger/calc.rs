//! The sums the ledger is made of: each statistic item over the members of T(X), per CPU
//! and per member, and the per-CPU terms (stock, lru_add batches, object stocks).

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Own,
    Live,
    Dying,
    Gone,
}

/// Sums of one statistic item over the members.
pub(super) struct ItemSum {
    pub(super) flushed: i64,
    pub(super) pending_tree: i64,
    pub(super) per_cpu: Vec<i64>,
    pub(super) by_member: ByMember,
    /// Per node: its own share.
    pub(super) own: Vec<i64>,
}

impl ItemSum {
    pub(super) fn total(&self) -> i64 {
        self.flushed + self.pending_tree + self.per_cpu.iter().sum::<i64>()
    }
}

pub(super) struct Calc<'a> {
    pub(super) l: &'a ResidueLayout,
    pub(super) tree: &'a Tree,
    pub(super) r: &'a Residues,
    pub(super) ctx: &'a Context,
    pub(super) class: Vec<Class>,
    /// Nodes whose `state` forms the flushed part: X, or for the root its children.
    pub(super) tops: Vec<usize>,
    /// Nodes summed: T(X), or T(X) minus the root.
    pub(super) members: Vec<bool>,
    /// Per node, its children that were read (not gone).
    pub(super) children: Vec<Vec<usize>>,
    /// Node index by memcg pointer.
    pub(super) by_memcg: std::collections::HashMap<u64, usize>,
    pub(super) ncpu: usize,
}

impl<'a> Calc<'a> {
    pub(super) fn new(
        l: &'a ResidueLayout,
        tree: &'a Tree,
        r: &'a Residues,
        ctx: &'a Context,
    ) -> Self {
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

    pub(super) fn add_member(&self, by: &mut ByMember, node: usize, v: i64) {
        match self.class[node] {
            Class::Own => by.own += v,
            Class::Live => by.live += v,
            Class::Dying => by.dying += v,
            Class::Gone => {}
        }
    }

    pub(super) fn item(&self, name: &str) -> Option<ItemSum> {
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
    pub(super) fn member_of(&self, memcg: u64) -> Option<usize> {
        self.by_memcg
            .get(&memcg)
            .copied()
            .filter(|&i| self.members[i])
    }

    pub(super) fn stat_term(&self, term: &str, item: &str) -> Option<Term> {
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

    /// Kernel memory from the v1 `kmem` page_counters, where no MEMCG_KMEM statistic exists
    /// (before 5.18): on cgroup v1 every kernel-memory charge also charges `kmem` (v5.10.35
    /// `__memcg_kmem_charge`, `obj_cgroup_charge` through it), in whole pages. The counters are
    /// hierarchical, so the term is the top members' counters, and a member's own share is its
    /// counter minus its children's. `None` without the v1 counters.
    pub(super) fn kmem_counter(&self) -> Option<Term> {
        let kmem = |i: usize| self.r.memcgs[i].v1.map(|(_, k, _)| k as i64);
        let mut pages = 0;
        for &t in &self.tops {
            pages += kmem(t)?;
        }
        let mut by_member = ByMember::default();
        for i in 0..self.tree.nodes.len() {
            if !self.members[i] {
                continue;
            }
            let children: i64 = self.children[i].iter().filter_map(|&j| kmem(j)).sum();
            self.add_member(&mut by_member, i, kmem(i)? - children);
        }
        Some(Term {
            term: "kmem".into(),
            item: None,
            pages,
            bytes: pages * self.ctx.page_size as i64,
            flushed: None,
            pending_tree: None,
            per_cpu: vec![0; self.ncpu],
            by_member,
            bound: None,
            unmapped: None,
            unmapped_per_cpu: None,
        })
    }

    /// The stock term, and per node of the tree: its pages and the slots caching it.
    pub(super) fn stock(&self) -> (Term, Vec<i64>, Vec<u32>) {
        let mut per_cpu = vec![0; self.ncpu];
        let mut by_member = ByMember::default();
        let mut per_node = vec![0; self.tree.nodes.len()];
        let mut slots_per_node = vec![0; self.tree.nodes.len()];
        for (c, cpu) in self.r.cpus.iter().enumerate() {
            for s in &cpu.stock {
                if let Some(i) = self.member_of(s.memcg) {
                    per_cpu[c] += s.pages as i64;
                    per_node[i] += s.pages as i64;
                    slots_per_node[i] += 1;
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
            slots_per_node,
        )
    }

    /// (term, pages no mapped statistic counts, pages per node)
    pub(super) fn lru_add(&self) -> (Term, i64, Vec<i64>) {
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
