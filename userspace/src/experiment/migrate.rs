//! `run migrate` (seed 002 §9.3): a cgroup's anonymous pages moved from one NUMA node to
//! another by its cpuset. Per-node statistics move; the charge must not.
//!
//! A workload in the child cgroup `m`, whose cpuset allows only node `--from`, touches
//! `--pages N` anonymous pages on one CPU. The run then writes `--to` into `m`'s
//! `cpuset.mems`: on v2 that migrates the tasks' pages off the nodes taken away, on v1 when
//! `cpuset.memory_migrate` is set (the run sets it). Before and after, it takes an `explain`
//! ledger of `m` and reads `memory.numa_stat`.
//!
//! The kernel's rules (6.1 and 6.18 kernel/cgroup/cpuset.c, mm/mempolicy.c, mm/migrate.c,
//! mm/memcontrol.c):
//! - `cpuset_write_resmask` -> `update_nodemask` queues `cpuset_migrate_mm` for every task's
//!   mm and flushes that workqueue before the write returns, so the migration is over when
//!   the write is; `do_migrate_pages` drains and disables the lru_add batches meanwhile
//!   (`lru_cache_disable`), so the new folios go straight to the LRU;
//! - each anon folio moved is unmapped from the old node (`NR_ANON_MAPPED` -1 on that
//!   node's lruvec of the memcg) and mapped on the new one (+1): per node the statistic
//!   moves, in total it does not;
//! - the charge: before 6.8 `mem_cgroup_migrate` force-charges the new folio to the
//!   page_counter (`page_counter_charge`, not through the per-CPU stock) and the old folio is
//!   uncharged when freed (`uncharge_batch` -> `page_counter_uncharge`); since 6.8 it moves
//!   the old folio's charge to the new one without touching the page_counter. Either way the
//!   charged usage less the stock is the same once the migration is over.
//!
//! `memory.numa_stat`'s `anon` is `NR_ANON_MAPPED` per node on v2 (bytes), and the anon LRU
//! lists per node on v1 (pages; folios still in an lru_add batch are on no list yet).
//!
//! Refused in one line before anything is created: fewer than two memory nodes, `--from`
//! or `--to` not a node with memory, or no cpuset in the memory hierarchy.
//!
//! `run hotplug` (seed 002 §9.4) is the same run with another mover: the pages start on a
//! node whose memory blocks are all online and movable ([`super::hotplug`]), placed there by
//! the workload's `MPOL_BIND` to it (not by the cpuset: a node of `ZONE_MOVABLE` only cannot
//! serve a task's non-movable `GFP_USER` allocations such as pipe buffers, which a cpuset
//! confines too, while a binding to such a node applies to movable allocations only,
//! `apply_policy_zone`). Every block of that node is then taken offline, which migrates the
//! pages to the other nodes through the same `mem_cgroup_migrate`; the blocks are put back
//! online after. The workload's pages from before the binding stay where they were.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, Report, Session, Verdict};
use crate::experiment::{ExperimentError, Result, refuse};
use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer},
    workload::{Workload, workload_binary},
};

/// The statistic the migration moves between nodes.
const ANON: &str = "NR_ANON_MAPPED";
/// Where the kernel lists the nodes that have memory (`N_MEMORY`).
const HAS_MEMORY: &str = "/sys/devices/system/node/has_memory";
/// Most pages one run touches.
pub const MAX_PAGES: u64 = 1 << 18;

/// What moves the pages off `from`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// `run migrate`: `m`'s `cpuset.mems` changed to `to`.
    #[default]
    Cpuset,
    /// `run hotplug`: every memory block of `from` taken offline.
    Offline,
}

/// Options of `run migrate` and `run hotplug`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// Anonymous pages touched on `from` and moved off it.
    pub pages: u64,
    /// The node the pages start on.
    pub from: u32,
    /// The node they are moved to (`run migrate`); `None`: wherever the kernel puts them
    /// (`run hotplug`).
    pub to: Option<u32>,
    /// The workload's CPU.
    pub cpu: usize,
    /// What moves them.
    pub method: Method,
}

impl Params {
    /// The nodes the pages may end up on.
    fn dest(&self, nodes: &[u32]) -> Vec<u32> {
        match self.to {
            Some(t) => vec![t],
            None => nodes.iter().copied().filter(|&n| n != self.from).collect(),
        }
    }

    fn experiment(&self) -> &'static str {
        match self.method {
            Method::Cpuset => "migrate",
            Method::Offline => "hotplug",
        }
    }
}

/// The nodes with memory (`N_MEMORY`); a kernel without NUMA has node 0 only.
pub fn memory_nodes() -> Vec<u32> {
    match std::fs::read_to_string(HAS_MEMORY) {
        Ok(s) => crate::units::parse_cpu_list(s.trim())
            .map(|v| v.into_iter().map(|n| n as u32).collect())
            .unwrap_or_default(),
        Err(_) => vec![0],
    }
}

/// Checks the options against the machine's memory nodes and, for `run hotplug`, the nodes
/// whose memory can go offline (before anything is created).
pub fn validate(p: &Params, nodes: &[u32], offlinable: &[u32]) -> Result<()> {
    let name = p.experiment();
    if p.pages == 0 || p.pages > MAX_PAGES {
        refuse!("--size must be 1 to {MAX_PAGES} pages");
    }
    if nodes.len() < 2 {
        refuse!(
            "run {name} needs two NUMA nodes with memory; this machine has {} ({})",
            nodes.len(),
            list(nodes)
        );
    }
    let from = match p.method {
        Method::Cpuset => "--from",
        Method::Offline => "--node",
    };
    if !nodes.contains(&p.from) {
        refuse!(
            "{from} {} is not a node with memory (nodes: {})",
            p.from,
            list(nodes)
        );
    }
    match (p.method, p.to) {
        (Method::Cpuset, Some(to)) => {
            if !nodes.contains(&to) {
                refuse!(
                    "--to {to} is not a node with memory (nodes: {})",
                    list(nodes)
                );
            }
            if p.from == to {
                refuse!("--from and --to must be different nodes");
            }
        }
        (Method::Cpuset, None) => refuse!("--to names no node"),
        (Method::Offline, _) => {
            if !offlinable.contains(&p.from) {
                refuse!(
                    "--node {}: not every memory block of it is online in ZONE_MOVABLE, so it \
                     cannot be taken offline safely (offlinable: {}; hot-added memory onlined \
                     movable, e.g. with memhp_default_state=online_movable)",
                    p.from,
                    list(offlinable)
                );
            }
        }
    }
    Ok(())
}

fn list(nodes: &[u32]) -> String {
    let v: Vec<String> = nodes.iter().map(u32::to_string).collect();
    if v.is_empty() {
        "none".into()
    } else {
        format!("node {}", v.join(", "))
    }
}

/// The `anon` line of `memory.numa_stat`, in pages per node: v2 `anon N0=<bytes> N1=...`,
/// v1 `anon=<pages> N0=<pages> ...` (the `hierarchical_` lines are not read).
pub fn parse_numa_anon(
    text: &str,
    version: CgroupVersion,
    page: u64,
) -> Option<BTreeMap<u32, u64>> {
    let line = text.lines().find(|l| match version {
        CgroupVersion::V2 => l.starts_with("anon "),
        CgroupVersion::V1 => l.starts_with("anon="),
    })?;
    let mut out = BTreeMap::new();
    for field in line.split_whitespace().skip(1) {
        let (k, v) = field.split_once('=')?;
        let node: u32 = k.strip_prefix('N')?.parse().ok()?;
        let v: u64 = v.parse().ok()?;
        out.insert(
            node,
            match version {
                CgroupVersion::V2 => v / page,
                CgroupVersion::V1 => v,
            },
        );
    }
    Some(out)
}

/// What the run read of `m` at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// The charged usage (page_counter), pages.
    pub usage_pages: i64,
    /// The memcg's pages in per-CPU charge stocks.
    pub stock_pages: i64,
    /// `NR_ANON_MAPPED` exactly (flushed plus every CPU's unflushed delta), pages.
    pub anon_pages: i64,
    /// `memory.numa_stat`'s `anon` per node, pages (see the module doc for v1).
    pub numa_anon: BTreeMap<u32, u64>,
    /// The ledger's unexplained pages.
    pub unexplained_pages: i64,
}

impl Snapshot {
    fn take(ex: &mut Explainer, cg: &MemCgroup, page: u64) -> Result<(Self, ExplainReport)> {
        // The ledger's snapshot first: reading memory.numa_stat flushes the statistics, which
        // the ledger accounts for either way.
        let r = ex.report()?;
        let text = cg.read_raw("memory.numa_stat")?.ok_or_else(|| {
            ExperimentError::Failed(format!("{} has no memory.numa_stat", cg.path().display()))
        })?;
        let numa_anon = parse_numa_anon(&text, cg.version(), page).ok_or_else(|| {
            ExperimentError::Failed(format!(
                "no anon line in {}/memory.numa_stat",
                cg.path().display()
            ))
        })?;
        let ps = page as i64;
        let anon_pages = r
            .stat_book
            .iter()
            .find(|s| s.item == ANON)
            .map_or(0, |s| s.exact_bytes / ps);
        Ok((
            Snapshot {
                usage_pages: r.usage_bytes / ps,
                stock_pages: r.gap.stock_pages,
                anon_pages,
                numa_anon,
                unexplained_pages: r.unexplained_pages,
            },
            r,
        ))
    }

    fn on(&self, node: u32) -> u64 {
        self.numa_anon.get(&node).copied().unwrap_or(0)
    }
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// Page size, bytes.
    pub page_size: u64,
    /// The nodes with memory.
    pub memory_nodes: Vec<u32>,
    /// How the pages were moved.
    pub mechanism: String,
    /// Memory blocks taken offline (`run hotplug`), and put back online after.
    #[serde(default)]
    pub offlined_blocks: usize,
    /// `numa_anon` counts the anon LRU lists (v1), which miss folios still in an lru_add
    /// batch, rather than `NR_ANON_MAPPED` (v2).
    #[serde(default)]
    pub numa_anon_is_lru: bool,
    /// Before the move (the pages touched).
    pub before: Snapshot,
    /// After the `cpuset.mems` write returned.
    pub after: Snapshot,
    /// Traced `NR_ANON_MAPPED` updates of `m` during the move: net over all CPUs.
    pub traced_anon_net: i64,
    /// ... and how many updates.
    pub traced_anon_updates: u64,
    /// The write of `cpuset.mems` (the migration), ms.
    pub migrate_ms: f64,
}

/// Runs `run migrate` or `run hotplug` (by `p.method`).
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> Result<Report> {
    let nodes = memory_nodes();
    let offlinable = match p.method {
        Method::Cpuset => Vec::new(),
        Method::Offline => super::hotplug::offlinable_nodes(&nodes),
    };
    validate(&p, &nodes, &offlinable)?;
    let name = p.experiment();
    if !super::online_cpus().contains(&p.cpu) {
        refuse!("--cpu {} is not an online CPU", p.cpu);
    }
    crate::cgroup::cpuset_available(hier)
        .map_err(|e| ExperimentError::Failed(format!("run {name} needs a cpuset: {e}")))?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    // The pages twice over (the old and the new folio during the move) and the workload.
    let worst = 2 * p.pages * page + (32 << 20);
    let mut s = Session::start(hier, name, worst, 2, common)?;
    s.expect_phases(if p.method == Method::Offline { 6 } else { 4 });
    s.run.enable_cpuset()?;
    let m = s.child("m")?;
    if p.method == Method::Cpuset {
        m.set_cpuset_mems(&p.from.to_string())?;
    }
    let dest = p.dest(&nodes);
    let dest_list = dest
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mechanism = match (p.method, hier.version) {
        (Method::Cpuset, CgroupVersion::V2) => {
            format!("cpuset.mems {} -> {dest_list} (v2 always migrates)", p.from)
        }
        (Method::Cpuset, CgroupVersion::V1) => {
            m.set_memory_migrate(true)?;
            format!(
                "cpuset.memory_migrate 1, cpuset.mems {} -> {dest_list} (v1)",
                p.from
            )
        }
        (Method::Offline, _) => format!(
            "every memory block of node {} offline (then online_movable again)",
            p.from
        ),
    };
    let bin = workload_binary();
    let mut w = s.phase(format!("start in m (node {})", p.from), |_| {
        Ok(Workload::spawn(&bin, &m, p.cpu)?)
    })?;
    if p.method == Method::Offline {
        s.phase(format!("bind to node {}", p.from), |_| {
            Ok(w.bind_node(p.from)?)
        })?;
    }
    s.phase(
        format!("touch {} pages on node {}", p.pages, p.from),
        |_| Ok(w.touch(p.pages)?),
    )?;
    let mut ex = Explainer::new(hier, m.clone())?;
    let (before, r_before) = Snapshot::take(&mut ex, &m, page)?;
    let move_name = match p.method {
        Method::Cpuset => format!("move to node {dest_list}"),
        Method::Offline => format!("offline node {}", p.from),
    };
    let mut offlined = None;
    let mut offlined_blocks = 0;
    s.phase(move_name.clone(), |_| {
        match p.method {
            Method::Cpuset => m.set_cpuset_mems(&dest_list)?,
            Method::Offline => {
                let o = super::hotplug::Offlined::arm();
                let r = o.offline_node(p.from);
                offlined = Some(o);
                offlined_blocks = r?;
                crate::test_hooks::panic_at("offline");
            }
        }
        Ok(())
    })?;
    let (after, r_after) = Snapshot::take(&mut ex, &m, page)?;
    drop(ex);
    s.phase("exit", |_| {
        w.exit()?;
        Ok(())
    })?;
    if let Some(o) = offlined {
        s.phase(format!("node {} online again", p.from), |_| o.restore())?;
    }
    // The move's own phase record: its duration and the anon updates traced in it.
    let moved_phase = s.phases().iter().find(|ph| ph.name == move_name);
    let migrate_ms = moved_phase.map_or(0.0, |ph| ph.end_ms - ph.start_ms);
    let (traced_anon_net, traced_anon_updates) = moved_phase
        .and_then(|ph| ph.stat("m", ANON))
        .map_or((0, 0), |st| (st.total, st.events));
    let results = Results {
        params: p.clone(),
        page_size: page,
        memory_nodes: nodes,
        mechanism,
        offlined_blocks,
        numa_anon_is_lru: hier.version == CgroupVersion::V1,
        before,
        after,
        traced_anon_net,
        traced_anon_updates,
        migrate_ms,
    };
    let label = if p.method == Method::Offline {
        "offline"
    } else {
        "move"
    };
    let ledgers = vec![
        LedgerAt::new(&format!("before the {label}"), "m", &r_before),
        LedgerAt::new(&format!("after the {label}"), "m", &r_after),
    ];
    let checks = checks(&results);
    let verdict = verdict(&results, checks);
    s.finish(
        serde_json::to_value(&p)?,
        serde_json::to_value(&results)?,
        ledgers,
        Vec::new(),
        verdict,
    )
}

impl Snapshot {
    /// Anon pages on the nodes `nodes`, summed.
    fn on_nodes(&self, nodes: &[u32]) -> u64 {
        nodes.iter().map(|&n| self.on(n)).sum()
    }

    /// Anon pages on every node but `node`.
    fn off(&self, node: u32) -> u64 {
        self.numa_anon
            .iter()
            .filter(|(n, _)| **n != node)
            .map(|(_, v)| v)
            .sum()
    }
}

fn nodes_text(nodes: &[u32]) -> String {
    let v: Vec<String> = nodes.iter().map(u32::to_string).collect();
    format!("node {}", v.join("+"))
}

fn checks(r: &Results) -> Vec<Check> {
    let (b, a, p) = (&r.before, &r.after, &r.params);
    let dest = p.dest(&r.memory_nodes);
    let what = if p.method == Method::Offline {
        "offline"
    } else {
        "move"
    };
    let moved = b.on(p.from);
    let arrived = a.on_nodes(&dest) as i64 - b.on_nodes(&dest) as i64;
    let mut out = Vec::new();
    if p.method == Method::Cpuset {
        out.push(Check::eq(
            &format!(
                "before: anon pages off node {} (its cpuset allowed node {} only)",
                p.from, p.from
            ),
            0,
            b.off(p.from),
        ));
    }
    out.extend([
        Check::rule(
            &format!("before: anon pages on node {}", p.from),
            format!(">= {} (the pages touched)", p.pages),
            moved.to_string(),
            moved >= p.pages,
        ),
        Check::rule(
            "before: NR_ANON_MAPPED holds the pages touched",
            format!(">= {}", p.pages),
            b.anon_pages.to_string(),
            b.anon_pages >= p.pages as i64,
        ),
        Check::eq(
            &format!("after: anon pages left on node {}", p.from),
            0,
            a.on(p.from),
        ),
        if r.numa_anon_is_lru {
            // v1 counts LRU lists: the migration drains every lru_add batch, so folios that
            // sat in one before (on any node) arrive on the lists too.
            Check::rule(
                &format!("anon pages that arrived on {}", nodes_text(&dest)),
                format!(
                    ">= {moved} (those that left node {}; v1 LRU counts)",
                    p.from
                ),
                arrived.to_string(),
                arrived >= moved as i64,
            )
        } else {
            Check::eq(
                &format!(
                    "anon pages that arrived on {} (= those that left node {})",
                    nodes_text(&dest),
                    p.from
                ),
                moved as i64,
                arrived,
            )
        },
        Check::eq(
            &format!("NR_ANON_MAPPED in total (pages): unchanged by the {what}"),
            b.anon_pages,
            a.anon_pages,
        ),
        Check::eq(
            &format!("charged usage less the charge stock (pages): unchanged by the {what}"),
            b.usage_pages - b.stock_pages,
            a.usage_pages - a.stock_pages,
        ),
        Check::eq(
            &format!("the ledger closes before the {what} (unexplained pages)"),
            0,
            b.unexplained_pages,
        ),
        Check::eq(
            &format!("the ledger closes after the {what} (unexplained pages)"),
            0,
            a.unexplained_pages,
        ),
    ]);
    if r.traced_anon_updates > 0 {
        out.push(Check::eq(
            &format!(
                "traced NR_ANON_MAPPED of m during the {what}, net over all CPUs (-1 old node, +1 \
                 new)"
            ),
            0,
            r.traced_anon_net,
        ));
        out.push(Check::rule(
            &format!("traced NR_ANON_MAPPED updates during the {what}"),
            format!(">= {} (one unmap and one map a page)", 2 * p.pages),
            r.traced_anon_updates.to_string(),
            r.traced_anon_updates >= 2 * p.pages,
        ));
    }
    out
}

fn verdict(r: &Results, checks: Vec<Check>) -> Verdict {
    let (b, a, p) = (&r.before, &r.after, &r.params);
    let dest = p.dest(&r.memory_nodes);
    let summary = format!(
        "{} anon pages touched on node {}, moved to {} by {} in {:.1} ms. Node {}: {} -> {} \
         pages, {}: {} -> {}; NR_ANON_MAPPED {} -> {} pages; charged usage {} -> {} pages with \
         {} -> {} in the stock ({} -> {} less the stock); ledger unexplained {} and {}.",
        p.pages,
        p.from,
        nodes_text(&dest),
        r.mechanism,
        r.migrate_ms,
        p.from,
        b.on(p.from),
        a.on(p.from),
        nodes_text(&dest),
        b.on_nodes(&dest),
        a.on_nodes(&dest),
        b.anon_pages,
        a.anon_pages,
        b.usage_pages,
        a.usage_pages,
        b.stock_pages,
        a.stock_pages,
        b.usage_pages - b.stock_pages,
        a.usage_pages - a.stock_pages,
        b.unexplained_pages,
        a.unexplained_pages
    );
    Verdict::judged(
        "migration moves the per-node statistics, not the charge",
        summary,
        checks,
    )
}

/// `run migrate and run hotplug (one record type)` in the experiment registry.
pub struct Migrate;

impl super::Experiment for Migrate {
    const NAMES: &'static [&'static str] = &["migrate", "hotplug"];
    type Results = Results;
    fn render(_r: &Report, res: &Results) -> Result<String> {
        render(res)
    }
}

/// The text section of a migrate or hotplug report.
fn render(res: &Results) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} pages on CPU {}, node {} -> {} ({}{}), {:.1} ms",
        res.params.experiment(),
        res.params.pages,
        res.params.cpu,
        res.params.from,
        nodes_text(&res.params.dest(&res.memory_nodes)),
        res.mechanism,
        if res.offlined_blocks > 0 {
            format!(", {} blocks", res.offlined_blocks)
        } else {
            String::new()
        },
        res.migrate_ms
    );
    let _ = writeln!(
        out,
        "  {:<8} {:>10} {:>7} {:>10} {:>12}  numa_stat anon by node (pages)",
        "WHEN", "USAGE PG", "STOCK", "ANON PG", "UNEXPLAINED"
    );
    for (when, sn) in [("before", &res.before), ("after", &res.after)] {
        let nodes: Vec<String> = sn
            .numa_anon
            .iter()
            .map(|(n, v)| format!("N{n}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>7} {:>10} {:>12}  {}",
            when,
            sn.usage_pages,
            sn.stock_pages,
            sn.anon_pages,
            sn.unexplained_pages,
            nodes.join(" ")
        );
    }
    if res.traced_anon_updates > 0 {
        let _ = writeln!(
            out,
            "  traced during the move: {} NR_ANON_MAPPED updates of m, net {}",
            res.traced_anon_updates, res.traced_anon_net
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            pages: 1024,
            from: 0,
            to: Some(1),
            cpu: 0,
            method: Method::Cpuset,
        }
    }

    #[test]
    fn options_are_checked_against_the_nodes() {
        assert!(validate(&params(), &[0, 1], &[]).is_ok());
        let e = validate(&params(), &[0], &[]).unwrap_err().to_string();
        assert!(
            e.contains("run migrate needs two NUMA nodes") && e.contains("has 1 (node 0)"),
            "{e}"
        );
        let bad = |f: &dyn Fn(&mut Params)| {
            let mut p = params();
            f(&mut p);
            validate(&p, &[0, 1], &[1]).unwrap_err().to_string()
        };
        assert!(bad(&|p| p.pages = 0).contains("--size"));
        assert!(bad(&|p| p.to = Some(2)).contains("--to 2 is not a node with memory"));
        assert!(bad(&|p| p.from = 1).contains("different"));
        // hotplug: the node must be offlinable, and the pages go anywhere else.
        let hp = |from| Params {
            from,
            to: None,
            method: Method::Offline,
            ..params()
        };
        assert!(validate(&hp(1), &[0, 1], &[1]).is_ok());
        let e = validate(&hp(0), &[0, 1], &[1]).unwrap_err().to_string();
        assert!(
            e.starts_with("--node 0: not every memory block") && e.contains("node 1"),
            "{e}"
        );
        let e = validate(&hp(1), &[1], &[1]).unwrap_err().to_string();
        assert!(e.contains("run hotplug needs two NUMA nodes"), "{e}");
        assert_eq!(hp(2).dest(&[0, 1, 2]), [0, 1]);
    }

    #[test]
    fn numa_stat_anon_is_read_per_node() {
        let v2 = "anon N0=8192 N1=4096\nfile N0=0 N1=0\n";
        assert_eq!(
            parse_numa_anon(v2, CgroupVersion::V2, 4096),
            Some(BTreeMap::from([(0, 2), (1, 1)]))
        );
        let v1 = "total=5 N0=3 N1=2\nfile=0 N0=0 N1=0\nanon=5 N0=3 N1=2\nhierarchical_anon=9 N0=9 N1=0\n";
        assert_eq!(
            parse_numa_anon(v1, CgroupVersion::V1, 4096),
            Some(BTreeMap::from([(0, 3), (1, 2)]))
        );
        assert_eq!(
            parse_numa_anon("file N0=0\n", CgroupVersion::V2, 4096),
            None
        );
    }

    #[test]
    fn checks_want_every_page_moved_and_the_charge_still() {
        let snap = |n0: u64, n1: u64, usage: i64, stock: i64| Snapshot {
            usage_pages: usage,
            stock_pages: stock,
            anon_pages: (n0 + n1) as i64,
            numa_anon: BTreeMap::from([(0, n0), (1, n1)]),
            unexplained_pages: 0,
        };
        let mut r = Results {
            params: params(),
            page_size: 4096,
            memory_nodes: vec![0, 1],
            mechanism: String::new(),
            offlined_blocks: 0,
            numa_anon_is_lru: false,
            before: snap(1030, 0, 1100, 20),
            after: snap(0, 1030, 1090, 10),
            traced_anon_net: 0,
            traced_anon_updates: 2060,
            migrate_ms: 1.0,
        };
        assert!(checks(&r).iter().all(|c| c.ok), "{:?}", checks(&r));
        // A page left behind, a charge that moved, a traced net that is not 0: failures.
        r.after = snap(1, 1029, 1090, 10);
        assert!(!checks(&r).iter().all(|c| c.ok));
        r.after = snap(0, 1030, 1091, 10);
        assert!(!checks(&r).iter().all(|c| c.ok));
        r.after = snap(0, 1030, 1090, 10);
        r.traced_anon_net = 2;
        assert!(!checks(&r).iter().all(|c| c.ok));
        r.traced_anon_net = 0;
        // hotplug: pages from before the binding sit elsewhere (allowed); every page that left
        // the node must arrive (exactly on v2, at least on v1's LRU counts).
        r.params.method = Method::Offline;
        r.params.to = None;
        r.before = snap(1030, 40, 1100, 20);
        r.after = snap(0, 1070, 1090, 10);
        assert!(checks(&r).iter().all(|c| c.ok), "{:?}", checks(&r));
        r.after = snap(0, 1075, 1090, 10);
        r.after.anon_pages = r.before.anon_pages;
        assert!(!checks(&r).iter().all(|c| c.ok));
        r.numa_anon_is_lru = true;
        assert!(checks(&r).iter().all(|c| c.ok), "{:?}", checks(&r));
    }
}
