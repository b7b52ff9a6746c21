//! `run kmem` (seed 004): kernel memory (socket buffers, slab, kernel stacks, page tables,
//! per-CPU data) moves a cgroup's usage while its anon and file statistics stand still; what
//! v1's `memory.kmem.*` files and v2's `memory.stat` keys show for it.
//!
//! A workload in the child cgroup `kmem` opens `--sockets N` connected loopback TCP pairs
//! (client and server both inside the cgroup), writes `--unread-bytes B` into each that the
//! server never reads, optionally creates `--dentries D` empty files, then closes and removes
//! them. Around each phase the run takes an `explain` ledger of the cgroup (the stat book
//! exactly, per-CPU residues included) and reads the cgroup's files.
//!
//! The kernel's rules (6.18 mm/memcontrol.c, mm/memcontrol-v1.c, net/ipv4/inet_connection_sock.c;
//! the same in 6.1/6.12):
//! - slab objects of `SLAB_ACCOUNT` caches (struct tcp_sock, socket inodes, files, dentries,
//!   inodes) allocated in the workload's task context are charged to its cgroup through its
//!   obj_cgroup: `NR_SLAB_*_B` by bytes, `MEMCG_KMEM` by whole pages, both in the memory
//!   page_counter (`obj_cgroup_charge_pages` -> `try_charge_memcg`). On v1 the same pages
//!   also go to `memcg->kmem` (`memcg1_account_kmem`, beside every `MEMCG_KMEM` update), so
//!   `memory.kmem.usage_in_bytes` = `MEMCG_KMEM` pages exactly;
//! - socket buffers: `mem_cgroup_sk_alloc` ties a socket to the task's memcg at creation (the
//!   client) or at accept (the server, `inet_csk_accept`), on v1 only if that memcg's
//!   `tcpmem_active` is set, which only a write to `memory.kmem.tcp.limit_in_bytes` does
//!   (`memcg_update_tcp_max`). Then `mem_cgroup_sk_charge` charges whole pages: on v2 to the
//!   memory page_counter with `MEMCG_SOCK`; on v1 to `memcg->tcpmem` only
//!   (`memcg1_charge_skmem`), never to `memory` and never to a statistic. This run writes
//!   the tcp limit (= the run's bound) on its own child on v1 before opening the sockets;
//! - opening sockets faults no user page and reads no file: anon, file, kernel stack and
//!   page table statistics do not move at all in that phase.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, Report, Session, Verdict};
use crate::experiment::{Context as _, Result, refuse};
use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer},
    workload::{MAX_SOCKET_PAIRS, MAX_UNREAD_BYTES, Workload, workload_binary},
};

/// The statistic items a snapshot keeps (exact bytes, from the ledger's stat book).
pub const ITEMS: [&str; 12] = [
    "NR_ANON_MAPPED",
    "NR_FILE_PAGES",
    "NR_SHMEM",
    "MEMCG_KMEM",
    "MEMCG_SOCK",
    "NR_SLAB_RECLAIMABLE_B",
    "NR_SLAB_UNRECLAIMABLE_B",
    "NR_KERNEL_STACK_KB",
    "NR_PAGETABLE",
    "MEMCG_PERCPU_B",
    "MEMCG_VMALLOC",
    "NR_INACTIVE_ANON",
];

/// v2 memory.stat keys reported.
const V2_KEYS: [&str; 12] = [
    "anon",
    "file",
    "shmem",
    "kernel",
    "sock",
    "slab",
    "slab_reclaimable",
    "slab_unreclaimable",
    "kernel_stack",
    "pagetables",
    "percpu",
    "vmalloc",
];

/// Size of struct tcp_sock is above this on every kernel this tool targets (`TCP` objsize in
/// /proc/slabinfo: 2368 on 6.18 x86_64); every client socket is one, allocated by the
/// workload (`sk_alloc` in task context) from the SLAB_ACCOUNT `TCP` cache.
pub const TCP_SOCK_MIN_BYTES: i64 = 2048;

/// Options of `run kmem`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// Loopback TCP pairs.
    pub sockets: u64,
    /// Bytes left unread in each pair.
    pub unread_bytes: u64,
    /// Empty files created (dentries and inodes).
    pub dentries: u64,
    /// CPU of the workload.
    pub cpu: usize,
}

/// The cgroup at one moment: the ledger and the files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// When.
    pub label: String,
    /// page_counter usage, bytes.
    pub usage_bytes: i64,
    /// The ledger's remainder, pages.
    pub unexplained_pages: i64,
    /// Exact statistic values (flushed + pending + per-CPU), bytes, by item.
    pub items: BTreeMap<String, i64>,
    /// Ledger terms, pages, by term id.
    pub terms: BTreeMap<String, i64>,
    /// cgroupfs: v1 `memory.kmem.usage_in_bytes`, `memory.kmem.tcp.usage_in_bytes`; v2 the
    /// memory.stat keys above (bytes).
    pub files: BTreeMap<String, u64>,
    /// v1: `memory.kmem.usage_in_bytes` read unchanged just before and just after the
    /// ledger's snapshot (so the two are comparable; asynchronous frees, e.g. RCU-freed
    /// objects, may move it meanwhile).
    pub kmem_file_steady: Option<bool>,
    /// v1: the `kmem` page_counter read inside the ledger's snapshot, bytes.
    pub kmem_counter_bytes: Option<u64>,
    /// v1: the `tcpmem` page_counter read inside the ledger's snapshot, bytes.
    pub tcpmem_counter_bytes: Option<u64>,
    /// The kernel counts kernel memory nowhere (5.10 on cgroup v2: no MEMCG_KMEM before 5.18,
    /// no kmem page_counter on v2), so the ledger's remainder holds it.
    #[serde(default)]
    pub kmem_uncounted: bool,
    /// The kernel has no MEMCG_KMEM statistic (before 5.18): on v1 the ledger's kmem term is
    /// the kmem page_counter itself, so there is no statistic to compare it with.
    #[serde(default)]
    pub no_memcg_kmem: bool,
}

impl Snapshot {
    /// Takes the ledger of `cg` and reads its files.
    pub fn take(
        ex: &mut Explainer,
        cg: &MemCgroup,
        label: &str,
    ) -> Result<(Snapshot, ExplainReport)> {
        let k0 = cg.kmem_usage_bytes()?;
        let r = ex.report()?;
        let k1 = cg.kmem_usage_bytes()?;
        let mut files = BTreeMap::new();
        match cg.version() {
            CgroupVersion::V1 => {
                if let Some(k) = k1 {
                    files.insert("memory.kmem.usage_in_bytes".to_string(), k);
                }
                if let Some(t) = cg.kmem_tcp_usage_bytes()? {
                    files.insert("memory.kmem.tcp.usage_in_bytes".to_string(), t);
                }
            }
            CgroupVersion::V2 => {
                if let Some(st) = cg.stat()? {
                    for k in V2_KEYS {
                        if let Some(v) = st.get(k) {
                            files.insert(k.to_string(), v);
                        }
                    }
                }
            }
        }
        let items = ITEMS
            .iter()
            .map(|i| {
                let v = r
                    .stat_book
                    .iter()
                    .find(|row| row.item == *i)
                    .map(|row| row.exact_bytes)
                    .unwrap_or(0);
                (i.to_string(), v)
            })
            .collect();
        let mut terms = BTreeMap::new();
        for t in &r.terms {
            *terms.entry(t.term.clone()).or_insert(0) += t.pages;
        }
        let snap = Snapshot {
            label: label.into(),
            usage_bytes: r.usage_bytes,
            unexplained_pages: r.unexplained_pages,
            items,
            terms,
            files,
            kmem_file_steady: match (k0, k1) {
                (Some(a), Some(b)) => Some(a == b),
                _ => None,
            },
            kmem_counter_bytes: r.charge.kmem_usage_bytes,
            tcpmem_counter_bytes: r.charge.tcpmem_usage_bytes,
            kmem_uncounted: r.kmem_counted_nowhere(),
            no_memcg_kmem: r.stat_row("MEMCG_KMEM").is_none(),
        };
        Ok((snap, r))
    }

    /// The check that the ledger closes: 0 unexplained pages; where the kernel counts kernel
    /// memory nowhere, the remainder is that kernel memory, so only its sign is checked.
    pub fn ledger_check(&self) -> Check {
        Check::ledger_closes(
            &format!("ledger {}: unexplained pages", self.label),
            self.unexplained_pages,
            self.kmem_uncounted,
        )
    }

    /// An item's exact value, bytes.
    pub fn item(&self, i: &str) -> i64 {
        self.items.get(i).copied().unwrap_or(0)
    }

    /// A term, pages.
    pub fn term(&self, t: &str) -> i64 {
        self.terms.get(t).copied().unwrap_or(0)
    }

    /// A file value.
    pub fn file(&self, f: &str) -> Option<i64> {
        self.files.get(f).map(|v| *v as i64)
    }
}

/// What one phase moved (after minus before).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// The phase.
    pub phase: String,
    /// Usage, bytes.
    pub usage_bytes: i64,
    /// Exact statistics, bytes, by item.
    pub items: BTreeMap<String, i64>,
    /// Ledger terms, pages.
    pub terms: BTreeMap<String, i64>,
    /// cgroupfs values (bytes).
    pub files: BTreeMap<String, i64>,
    /// What the probes saw in the phase window for the cgroup: net per item (record units).
    pub probed: BTreeMap<String, i64>,
    /// Probe update counts per item in the window.
    pub probed_events: BTreeMap<String, u64>,
}

impl Step {
    /// `b - a`, with the phase's probe records for `cgroup`.
    pub fn between(s: &Session, phase: &str, cgroup: &str, a: &Snapshot, b: &Snapshot) -> Step {
        let diff = |x: &BTreeMap<String, i64>, y: &BTreeMap<String, i64>| {
            let mut out = BTreeMap::new();
            for k in x.keys().chain(y.keys()) {
                out.insert(
                    k.clone(),
                    y.get(k).copied().unwrap_or(0) - x.get(k).copied().unwrap_or(0),
                );
            }
            out
        };
        let fa: BTreeMap<String, i64> = a
            .files
            .iter()
            .map(|(k, v)| (k.clone(), *v as i64))
            .collect();
        let fb: BTreeMap<String, i64> = b
            .files
            .iter()
            .map(|(k, v)| (k.clone(), *v as i64))
            .collect();
        let mut probed = BTreeMap::new();
        let mut probed_events = BTreeMap::new();
        if let Some(rec) = s.phases().iter().rev().find(|p| p.name == phase) {
            for st in rec.stats.iter().filter(|st| st.cgroup == cgroup) {
                probed.insert(st.item.clone(), st.total);
                probed_events.insert(st.item.clone(), st.events);
            }
        }
        Step {
            phase: phase.into(),
            usage_bytes: b.usage_bytes - a.usage_bytes,
            items: diff(&a.items, &b.items),
            terms: diff(&a.terms, &b.terms),
            files: diff(&fa, &fb),
            probed,
            probed_events,
        }
    }

    /// An item's delta, bytes.
    pub fn item(&self, i: &str) -> i64 {
        self.items.get(i).copied().unwrap_or(0)
    }

    /// A term's delta, pages.
    pub fn term(&self, t: &str) -> i64 {
        self.terms.get(t).copied().unwrap_or(0)
    }

    /// Probe updates of an item in the window.
    pub fn events(&self, i: &str) -> u64 {
        self.probed_events.get(i).copied().unwrap_or(0)
    }
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// How socket buffers are accounted on this run's hierarchy.
    pub tcp_accounting: String,
    /// v1: the value written to the child's `memory.kmem.tcp.limit_in_bytes`.
    pub tcp_limit_written: Option<u64>,
    /// Snapshots in order.
    pub snapshots: Vec<Snapshot>,
    /// What each phase moved.
    pub steps: Vec<Step>,
}

const CG: &str = "kmem";
/// Phase names.
pub const OPEN: &str = "open sockets";
/// Phase names.
pub const DENTRIES: &str = "create dentries";
/// Phase names.
pub const CLOSE: &str = "close sockets";
/// Phase names.
pub const REMOVE: &str = "remove dentries";

/// Validates the options (before anything is created).
pub fn validate(p: &Params) -> Result<()> {
    if p.sockets == 0 || p.sockets > MAX_SOCKET_PAIRS as u64 {
        refuse!("--sockets must be 1..={MAX_SOCKET_PAIRS}");
    }
    if p.unread_bytes > MAX_UNREAD_BYTES as u64 {
        refuse!("--unread-bytes must be at most {MAX_UNREAD_BYTES}");
    }
    if p.dentries > 1 << 20 {
        refuse!("--dentries must be at most 1048576");
    }
    if !super::online_cpus().contains(&p.cpu) {
        refuse!("CPU {} is not online", p.cpu);
    }
    Ok(())
}

/// Runs the experiment.
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> Result<Report> {
    validate(&p)?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    // Per pair: two sockets with their files, inodes and dentries (< 16 KiB), the unread
    // bytes charged in whole pages on both ends; per file a dentry and an inode (< 4 KiB);
    // the workload itself.
    let unread_pages = p.unread_bytes.div_ceil(page) + 1;
    let worst = (32 << 20) + p.sockets * ((16 << 10) + 2 * unread_pages * page) + p.dentries * 4096;
    let mut s = Session::start(hier, "kmem", worst, 4, common)?;
    s.expect_phases(if p.dentries > 0 { 6 } else { 4 });
    let cg = s.child(CG)?;
    let tcp_limit_written = match s.version() {
        CgroupVersion::V1 => {
            // Sets memcg->tcpmem_active (memcg_update_tcp_max): from now on sockets created
            // by this cgroup's tasks are tied to it and their buffers charged to tcpmem.
            cg.write_owned("memory.kmem.tcp.limit_in_bytes", &worst.to_string())
                .context("activating tcp accounting (memory.kmem.tcp.limit_in_bytes)")?;
            Some(worst)
        }
        CgroupVersion::V2 => None,
    };
    let tcp_accounting = match s.version() {
        CgroupVersion::V1 => "v1: socket buffers go to memory.kmem.tcp (tcpmem) only, after memory.kmem.tcp.limit_in_bytes was written (done by this run on its child); never to memory.usage_in_bytes or memory.stat".to_string(),
        CgroupVersion::V2 => "v2: socket buffers are charged to memory.current and counted as memory.stat sock (MEMCG_SOCK)".to_string(),
    };
    let bin = workload_binary();
    let mut w = s.phase("start", |_| Ok(Workload::spawn(&bin, &cg, p.cpu)?))?;
    let mut snaps = Vec::new();
    let mut steps = Vec::new();
    let mut ledgers = Vec::new();
    let mut ex = Explainer::new(hier, cg.clone())?;
    let (mut prev, _) = Snapshot::take(&mut ex, &cg, "before the sockets")?;
    if prev.kmem_uncounted {
        refuse!(
            "run kmem needs a count of kernel memory, and this kernel keeps none on cgroup {} \
             (no MEMCG_KMEM statistic before 5.18, no kmem page_counter on v2); cgroup v1 \
             counts it in memory.kmem.usage_in_bytes",
            s.version()
        );
    }
    snaps.push(prev.clone());
    let mut step = |s: &mut Session,
                    name: &str,
                    f: &mut dyn FnMut(&mut Workload) -> Result<()>,
                    w: &mut Workload,
                    ledger: bool|
     -> Result<()> {
        s.phase(name, |_| f(w))?;
        let (now, r) = Snapshot::take(&mut ex, &cg, &format!("after {name}"))?;
        steps.push(Step::between(s, name, CG, &prev, &now));
        if ledger {
            ledgers.push(LedgerAt::new(&format!("after {name}"), CG, &r));
        }
        snaps.push(now.clone());
        prev = now;
        Ok(())
    };
    step(
        &mut s,
        OPEN,
        &mut |w| Ok(w.open_sockets(p.sockets, p.unread_bytes)?),
        &mut w,
        true,
    )?;
    let dir = if p.dentries > 0 {
        let d = s.run.scratch()?.join("dentries");
        std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
        step(
            &mut s,
            DENTRIES,
            &mut |w| Ok(w.create_dentries(p.dentries, &d)?),
            &mut w,
            true,
        )?;
        Some(d)
    } else {
        None
    };
    step(
        &mut s,
        CLOSE,
        &mut |w| {
            w.close_sockets()?;
            Ok(())
        },
        &mut w,
        false,
    )?;
    if let Some(d) = &dir {
        step(
            &mut s,
            REMOVE,
            &mut |w| {
                w.remove_dentries(d)?;
                Ok(())
            },
            &mut w,
            false,
        )?;
    }
    s.phase("exit", |_| {
        w.exit()?;
        Ok(())
    })?;
    let results = Results {
        params: p.clone(),
        tcp_accounting,
        tcp_limit_written,
        snapshots: snaps,
        steps,
    };
    let checks = checks(&results, s.version(), page as i64);
    let verdict = verdict(&results, &checks, s.version(), page as i64);
    let params = serde_json::to_value(&p)?;
    let results = serde_json::to_value(&results)?;
    s.finish(
        params,
        results,
        ledgers,
        Vec::new(),
        Verdict { checks, ..verdict },
    )
}

/// Kernel memory terms of the ledger (pages): kmem (incl. NMI-time kmem) and sock.
fn kernel_terms(t: &BTreeMap<String, i64>) -> i64 {
    ["kmem", "kmem.atomic", "sock"]
        .iter()
        .map(|k| t.get(*k).copied().unwrap_or(0))
        .sum()
}

fn checks(r: &Results, v: CgroupVersion, page: i64) -> Vec<Check> {
    let p = &r.params;
    let n = p.sockets as i64;
    let mut out = Vec::new();
    for sn in &r.snapshots {
        out.push(sn.ledger_check());
        if v == CgroupVersion::V1 && sn.no_memcg_kmem {
            // Before 5.18 the kmem page_counter is the only count (the ledger's kmem term):
            // the file must show what the snapshot read.
            if sn.kmem_file_steady == Some(true) {
                out.push(Check::eq(
                    &format!(
                        "{}: memory.kmem.usage_in_bytes = the kmem page_counter (bytes)",
                        sn.label
                    ),
                    sn.kmem_counter_bytes.map_or(-1, |b| b as i64),
                    sn.file("memory.kmem.usage_in_bytes").unwrap_or(-1),
                ));
            }
        } else if v == CgroupVersion::V1 {
            // memcg1_account_kmem runs beside every MEMCG_KMEM update.
            out.push(Check::eq(
                &format!("{}: v1 kmem page_counter = MEMCG_KMEM (bytes)", sn.label),
                sn.item("MEMCG_KMEM"),
                sn.kmem_counter_bytes.map_or(-1, |b| b as i64),
            ));
            if sn.kmem_file_steady == Some(true) {
                out.push(Check::eq(
                    &format!(
                        "{}: memory.kmem.usage_in_bytes = MEMCG_KMEM (bytes)",
                        sn.label
                    ),
                    sn.item("MEMCG_KMEM"),
                    sn.file("memory.kmem.usage_in_bytes").unwrap_or(-1),
                ));
            }
        }
    }
    let Some(open) = r.steps.iter().find(|s| s.phase == OPEN) else {
        return out;
    };
    // No user page is faulted, no file read, no thread or mapping made: not one update.
    for item in [
        "NR_ANON_MAPPED",
        "NR_FILE_PAGES",
        "NR_KERNEL_STACK_KB",
        "NR_PAGETABLE",
    ] {
        out.push(Check::eq(
            &format!("{OPEN}: {item} exact delta (bytes)"),
            0,
            open.item(item),
        ));
        out.push(Check::eq(
            &format!("{OPEN}: {item} updates the probes saw"),
            0,
            open.events(item),
        ));
    }
    let slab = open.item("NR_SLAB_RECLAIMABLE_B") + open.item("NR_SLAB_UNRECLAIMABLE_B");
    out.push(Check::rule(
        &format!("{OPEN}: slab growth (bytes)"),
        format!(">= {} ({n} client struct tcp_sock of > {TCP_SOCK_MIN_BYTES} bytes, SLAB_ACCOUNT, allocated by the workload)", n * TCP_SOCK_MIN_BYTES),
        slab.to_string(),
        slab >= n * TCP_SOCK_MIN_BYTES,
    ));
    // The ledger closes before and after, the LRU terms stand still: the usage growth is the
    // kernel memory terms' growth plus the stock's.
    let lru: i64 = open
        .terms
        .iter()
        .filter(|(k, _)| k.starts_with("lru"))
        .map(|(_, v)| *v)
        .sum();
    out.push(Check::eq(
        &format!("{OPEN}: LRU terms delta (pages)"),
        0,
        lru,
    ));
    let kern = kernel_terms(&open.terms);
    let stock = open.term("stock");
    out.push(Check::rule(
        &format!("{OPEN}: usage growth = kernel memory terms + stock (pages)"),
        format!("{} (kmem+sock {kern} + stock {stock})", kern + stock),
        (open.usage_bytes / page).to_string(),
        open.usage_bytes / page == kern + stock,
    ));
    out.push(Check::rule(
        &format!("{OPEN}: kernel memory terms grow"),
        format!(">= {} pages (the slab growth)", slab / page),
        kern.to_string(),
        kern >= slab / page,
    ));
    let sock = open.item("MEMCG_SOCK");
    match v {
        CgroupVersion::V1 => {
            out.push(Check::eq(
                &format!("{OPEN}: MEMCG_SOCK exact delta on v1 (never updated)"),
                0,
                sock,
            ));
            if p.unread_bytes > 0 {
                let tcp = open
                    .files
                    .get("memory.kmem.tcp.usage_in_bytes")
                    .copied()
                    .unwrap_or(0);
                out.push(Check::rule(
                    &format!("{OPEN}: memory.kmem.tcp.usage_in_bytes growth"),
                    format!(">= {} ({n} receiving sockets each hold unread data, charged in whole pages)", n * page),
                    tcp.to_string(),
                    tcp >= n * page,
                ));
            }
        }
        CgroupVersion::V2 => {
            if p.unread_bytes > 0 {
                out.push(Check::rule(
                    &format!("{OPEN}: MEMCG_SOCK growth (bytes)"),
                    format!(">= {} ({n} receiving sockets each hold unread data, charged in whole pages)", n * page),
                    sock.to_string(),
                    sock >= n * page,
                ));
            }
        }
    }
    if let Some(d) = r.steps.iter().find(|s| s.phase == DENTRIES) {
        out.push(Check::eq(
            &format!("{DENTRIES}: NR_ANON_MAPPED exact delta (bytes)"),
            0,
            d.item("NR_ANON_MAPPED"),
        ));
        let slab = d.item("NR_SLAB_RECLAIMABLE_B") + d.item("NR_SLAB_UNRECLAIMABLE_B");
        // Each file is a dentry (192 bytes, SLAB_ACCOUNT) and an inode (larger, SLAB_ACCOUNT).
        out.push(Check::rule(
            &format!("{DENTRIES}: slab growth (bytes)"),
            format!(
                ">= {} ({} dentries of 192 bytes)",
                p.dentries * 192,
                p.dentries
            ),
            slab.to_string(),
            slab >= p.dentries as i64 * 192,
        ));
    }
    out
}

fn verdict(r: &Results, checks: &[Check], v: CgroupVersion, page: i64) -> Verdict {
    let p = &r.params;
    let kib = |b: i64| b / 1024;
    let mut summary = String::new();
    if let Some(o) = r.steps.iter().find(|s| s.phase == OPEN) {
        let slab = o.item("NR_SLAB_RECLAIMABLE_B") + o.item("NR_SLAB_UNRECLAIMABLE_B");
        let _ = writeln!(
            summary,
            "{} loopback TCP pairs with {} unread bytes each: usage {:+} KiB while anon {:+} and file {:+}; kernel memory {:+} KiB (slab {:+} KiB, sock {:+} KiB, kernel stack {:+} KiB, page tables {:+} KiB, percpu {:+} B); ledger terms kmem+sock {:+} pages, stock {:+} pages.",
            p.sockets,
            p.unread_bytes,
            kib(o.usage_bytes),
            o.item("NR_ANON_MAPPED"),
            o.item("NR_FILE_PAGES"),
            kib(o.item("MEMCG_KMEM")),
            kib(slab),
            kib(o.item("MEMCG_SOCK")),
            o.item("NR_KERNEL_STACK_KB") / 1024,
            kib(o.item("NR_PAGETABLE")),
            o.item("MEMCG_PERCPU_B"),
            kernel_terms(&o.terms),
            o.term("stock"),
        );
        match v {
            CgroupVersion::V1 => {
                let _ = writeln!(
                    summary,
                    "v1: memory.kmem.usage_in_bytes {:+} KiB (= MEMCG_KMEM); the socket buffers went to memory.kmem.tcp.usage_in_bytes ({:+} KiB) and nowhere in memory.usage_in_bytes: the ledger closes without a sock term.",
                    kib(o
                        .files
                        .get("memory.kmem.usage_in_bytes")
                        .copied()
                        .unwrap_or(0)),
                    kib(o
                        .files
                        .get("memory.kmem.tcp.usage_in_bytes")
                        .copied()
                        .unwrap_or(0)),
                );
            }
            CgroupVersion::V2 => {
                let _ = writeln!(
                    summary,
                    "v2: memory.stat kernel {:+} KiB, sock {:+} KiB, slab {:+} KiB: all inside memory.current.",
                    kib(o.files.get("kernel").copied().unwrap_or(0)),
                    kib(o.files.get("sock").copied().unwrap_or(0)),
                    kib(o.files.get("slab").copied().unwrap_or(0)),
                );
            }
        }
    }
    let last = r.snapshots.last();
    if let Some(l) = last {
        let _ = write!(
            summary,
            "at the end: usage {} KiB, kernel memory {} KiB, unexplained {} pages",
            l.usage_bytes / 1024,
            l.item("MEMCG_KMEM") / 1024,
            l.unexplained_pages
        );
        let _ = page;
    }
    let ok = checks.iter().all(|c| c.ok);
    Verdict {
        status: if ok {
            "kernel memory explains the usage".into()
        } else {
            "some records disagree with the kernel's rules".into()
        },
        summary,
        checks: Vec::new(),
    }
}

/// `run kmem` in the experiment registry.
pub struct Kmem;

impl super::Experiment for Kmem {
    const NAMES: &'static [&'static str] = &["kmem"];
    type Results = Results;
    fn render(_r: &Report, res: &Results) -> Result<String> {
        render(res)
    }
}

/// The text section of a kmem report.
fn render(res: &Results) -> Result<String> {
    let mut out = String::new();
    let p = &res.params;
    let _ = writeln!(
        out,
        "kmem: {} loopback TCP pairs, {} unread bytes each, {} dentries, workload on cpu{}",
        p.sockets, p.unread_bytes, p.dentries, p.cpu
    );
    let _ = writeln!(out, "  {}", res.tcp_accounting);
    if let Some(l) = res.tcp_limit_written {
        let _ = writeln!(out, "  wrote memory.kmem.tcp.limit_in_bytes = {l} on kmem/");
    }
    let _ = writeln!(
        out,
        "  exact deltas per phase (bytes; ledger terms in pages; files as cgroupfs shows them):"
    );
    for st in &res.steps {
        let _ = writeln!(out, "  {}: usage {:+}", st.phase, st.usage_bytes);
        let items: Vec<String> = st
            .items
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{k} {v:+}"))
            .collect();
        let _ = writeln!(out, "    stats: {}", items.join(", "));
        let terms: Vec<String> = st
            .terms
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{k} {v:+}"))
            .collect();
        let _ = writeln!(out, "    ledger terms: {}", terms.join(", "));
        let files: Vec<String> = st.files.iter().map(|(k, v)| format!("{k} {v:+}")).collect();
        let _ = writeln!(out, "    files: {}", files.join(", "));
    }
    for sn in &res.snapshots {
        let _ = writeln!(
            out,
            "  {}: usage {} KiB, unexplained {} pages",
            sn.label,
            sn.usage_bytes / 1024,
            sn.unexplained_pages
        );
    }
    Ok(out)
}
