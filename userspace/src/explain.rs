//! `memcg-drift explain PATH`: the charge book, the stat book as memory.stat shows it, and the
//! ledger that closes one against the other to the page, with per-CPU residues read by eBPF
//! (docs/ledger.md), in text (100 columns) or JSON (docs/json.md), once or every `--watch`
//! interval.
//!
//! This module does the I/O around the pure parts: it resolves the layout and loads the
//! residue reader (`residue`), walks the css tree, takes a consistent snapshot, reads cgroupfs
//! around it, computes the ledger (`ledger`) and renders the report.

use std::{fmt::Write as _, os::unix::fs::MetadataExt, path::Path, time::Duration};

use serde::Serialize;

use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    kernel::layout::ResidueLayout,
    ledger::{
        self, Bound, Context, Dying, Gap, Ledger, Missing, ObjStockDetail, SwapBook, Term, Unit,
    },
    residue::{self, ResidueReader, Tree},
    workload::batch::{BatchError, ChargeBatch, charge_batch},
};

/// Snapshots tried before a report says the kernel kept moving.
const ATTEMPTS: usize = 8;
/// Pause between attempts.
const ATTEMPT_PAUSE: Duration = Duration::from_millis(20);
/// Memcgs the reader starts with; it is reloaded bigger when the subtree needs it.
const START_CAPACITY: usize = 64;
/// Text width.
const WIDTH: usize = 100;

/// The charge book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeBook {
    /// page_counter `memory.usage`, bytes.
    pub usage_bytes: i64,
    /// The same in pages.
    pub usage_pages: i64,
    /// `memory.max`, bytes; `None` when unlimited.
    pub max_bytes: Option<u64>,
    /// `memory.watermark` (the peak since creation or the last reset), bytes.
    pub peak_bytes: u64,
    /// `memory.failcnt` (counted on v1 only since 6.13; v2 reports limit hits in
    /// `memory.events`).
    pub failcnt: u64,
    /// v1 `memsw` counter usage (memory + swap), bytes; v1 only.
    pub memsw_usage_bytes: Option<u64>,
    /// v2 `swap` counter usage, bytes (the same union member as v1's memsw); v2 only.
    pub swap_usage_bytes: Option<u64>,
    /// v1 `kmem` counter usage, bytes (equals MEMCG_KMEM exactly, synchronously); v1 only
    /// (the kernel keeps it only on cgroup v1, memcg1_account_kmem).
    pub kmem_usage_bytes: Option<u64>,
    /// v1 `tcpmem` counter usage, bytes; v1 only.
    pub tcpmem_usage_bytes: Option<u64>,
    /// The cgroupfs usage file.
    pub cgroupfs_file: Option<String>,
    /// Its value, read just after the snapshot.
    pub cgroupfs_usage_bytes: Option<u64>,
    /// The file read the same before and after the snapshot, and equal to `usage_bytes`;
    /// `None` when not comparable (root, or the usage moved meanwhile).
    pub cgroupfs_agrees: Option<bool>,
    /// The cgroupfs value is computed by the kernel from global statistics, not read from the
    /// page_counter (the v1 root, mem_cgroup_usage, 6.18 memcontrol.c:3251-3271).
    pub cgroupfs_synthetic: bool,
}

/// One memory.stat row with what cgroupfs printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatBookRow {
    /// The statistic item.
    pub item: String,
    /// Its memory.stat key.
    pub key: Option<String>,
    /// Its unit in the kernel.
    pub unit: Unit,
    /// What memory.stat shows without a flush, bytes.
    pub shown_bytes: i64,
    /// Not flushed yet, bytes.
    pub pending_bytes: i64,
    /// Exact now, bytes.
    pub exact_bytes: i64,
    /// What memory.stat printed just after the snapshot (the read may have flushed first).
    pub cgroupfs_bytes: Option<u64>,
}

/// How the snapshot went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Snapshots taken.
    pub attempts: usize,
    /// Nothing moved between its open and close.
    pub consistent: bool,
    /// What moved, when not consistent.
    pub moved: Option<String>,
    /// Memcgs read (self + descendants).
    pub memcgs: usize,
    /// Live descendants.
    pub live_descendants: usize,
    /// Dying descendants.
    pub dying_descendants: usize,
    /// Descendants freed between the walk and the read.
    pub freed_during_read: usize,
    /// Descendants left out (beyond the reader's limit).
    pub left_out: usize,
    /// CPUs read.
    pub cpus: usize,
    /// Why stocks and batches could not be read, if so.
    pub static_percpu_error: Option<String>,
}

/// The whole report (`--json`, docs/json.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainReport {
    /// The cgroup's absolute path.
    pub cgroup: String,
    /// Its id.
    pub cgroup_id: u64,
    /// `v1` or `v2`.
    pub version: String,
    /// `uname -r`.
    pub kernel: String,
    /// Page size, bytes.
    pub page_size: u64,
    /// The root of the hierarchy: its own pages are not charged; the ledger covers its
    /// descendants.
    pub root: bool,
    /// page_counter usage, bytes.
    pub usage_bytes: i64,
    /// Σ terms, bytes.
    pub explained_bytes: i64,
    /// usage − Σ terms, bytes (signed).
    pub unexplained_bytes: i64,
    /// The same in pages.
    pub unexplained_pages: i64,
    /// The charge book.
    pub charge: ChargeBook,
    /// The stat book.
    pub stat_book: Vec<StatBookRow>,
    /// The ledger's terms, with per-CPU detail.
    pub terms: Vec<Term>,
    /// Terms that could not be read (then unexplained includes them).
    pub missing_terms: Vec<Missing>,
    /// Places of charged pages this version never reads.
    pub not_read: Vec<Missing>,
    /// The mapped view's remainder (cross-check), pages.
    pub mapped_view_unexplained_pages: Option<i64>,
    /// usage − stat book, split.
    pub gap: Gap,
    /// Dying descendants with what they still hold.
    pub dying: Vec<Dying>,
    /// Object stocks of T(X) (inside MEMCG_KMEM).
    pub obj_stock: Option<ObjStockDetail>,
    /// The swap book: the swap counter against MEMCG_SWAP (issue 13).
    pub swap: Option<SwapBook>,
    /// Why there is no swap book.
    pub swap_not_read: Option<String>,
    /// `MEMCG_CHARGE_BATCH` as measured on this kernel (the stock and flush bounds scale
    /// with it); `None` when it could not be measured.
    pub charge_batch: Option<ChargeBatch>,
    /// Why it could not be (then the bounds that need it are left out).
    pub charge_batch_not_measured: Option<String>,
    /// The snapshot.
    pub snapshot: SnapshotInfo,
}

/// One statistic item of the target cgroup itself (descendants not included), in the
/// kernel's unit for the item, from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ItemResidue {
    /// The item.
    pub item: String,
    /// The flushed aggregate (`vmstats->state`).
    pub flushed: i64,
    /// Flushed at descendants, not propagated here yet (`state_pending`).
    pub pending_tree: i64,
    /// Per CPU: updates made on the CPU and not flushed yet.
    pub per_cpu: Vec<i64>,
}

/// Directory ids from below the hierarchy root down to `target` (empty for the root).
fn path_ids(hier_root: &Path, target: &MemCgroup) -> anyhow::Result<Vec<u64>> {
    let mut ids = Vec::new();
    let mut p = hier_root.to_path_buf();
    for comp in target.rel_path().components().skip(1) {
        p.push(comp);
        let meta = std::fs::metadata(&p)
            .map_err(|e| anyhow::anyhow!("{}: {e} (removed while reading?)", p.display()))?;
        ids.push(meta.ino());
    }
    Ok(ids)
}

/// cgroup2 mounted with `memory_hugetlb_accounting` (6.6+): hugetlb folios are charged.
fn hugetlb_accounting(hier: &MemoryHierarchy) -> bool {
    if hier.version != CgroupVersion::V2 {
        return false;
    }
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    crate::cgroup::parse_mountinfo(&text)
        .unwrap_or_default()
        .iter()
        .any(|m| {
            m.fs_type == "cgroup2"
                && m.mount_point == hier.root
                && m.super_options
                    .iter()
                    .chain(&m.mount_options)
                    .any(|o| o == "memory_hugetlb_accounting")
        })
}

fn online_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        };
    }
    n.max(1)
}

/// Everything one `explain` session keeps between reports.
pub struct Explainer {
    reader: ResidueReader,
    target: MemCgroup,
    root_id: u64,
    ids: Vec<u64>,
    ctx: Context,
    kernel: String,
    read_stat_file: bool,
    /// Measured once per process (workload::batch).
    charge_batch: Result<ChargeBatch, BatchError>,
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explainer")
            .field("target", &self.target)
            .finish()
    }
}

impl Explainer {
    /// Resolves the layout and loads the reader for `target`.
    pub fn new(hier: &MemoryHierarchy, target: MemCgroup) -> anyhow::Result<Self> {
        let reader = ResidueReader::open(START_CAPACITY)?;
        let page_size =
            nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
        let root = &target.hierarchy().root;
        let root_id = std::fs::metadata(root)
            .map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?
            .ino();
        let ids = path_ids(root, &target)?;
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let batch = charge_batch(hier);
        Ok(Self {
            reader,
            ctx: Context {
                version: hier.version,
                hugetlb_accounting: hugetlb_accounting(hier),
                page_size,
                online_cpus: online_cpus(),
                is_root: target.is_root(),
                charge_batch: batch.as_ref().ok().map(|b| b.pages),
            },
            charge_batch: batch,
            target,
            root_id,
            ids,
            kernel,
            read_stat_file: true,
        })
    }

    /// Walks the subtree, reloading the reader bigger if it does not fit.
    fn walk(&mut self) -> anyhow::Result<Tree> {
        let limit = probes_common::RES_MAX_MEMCGS as usize;
        let layout = self.reader_layout();
        let tree = residue::walk(&mut self.reader, &layout, self.root_id, &self.ids, limit)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot find its memcg: {e}",
                    self.target.path().display()
                )
            })?;
        if tree.nodes.len() > self.reader.capacity() {
            let want = (tree.nodes.len() * 3 / 2).min(limit);
            self.reader = ResidueReader::load(layout, want)?;
        }
        Ok(tree)
    }

    fn reader_layout(&self) -> ResidueLayout {
        self.reader.layout().clone()
    }

    /// Points the session at another cgroup of the same hierarchy, keeping the loaded reader
    /// (the exporter reads many cgroups with one).
    pub fn retarget(&mut self, target: MemCgroup) -> anyhow::Result<()> {
        self.ids = path_ids(&target.hierarchy().root, &target)?;
        self.ctx.is_root = target.is_root();
        self.target = target;
        Ok(())
    }

    /// Stops reading `memory.stat` after each snapshot (the report's cgroupfs column stays
    /// empty): reading it flushes the statistics when enough updates are pending, which
    /// would move the per-CPU residues an experiment is watching.
    pub fn without_stat_file(mut self) -> Self {
        self.read_stat_file = false;
        self
    }

    /// One report.
    pub fn report(&mut self) -> anyhow::Result<ExplainReport> {
        Ok(self.report_with_items(&[])?.0)
    }

    /// One report, plus the target's own per-CPU unflushed deltas of the named statistic
    /// items (kernel units), from the same snapshot. Items this kernel lacks are left out.
    pub fn report_with_items(
        &mut self,
        items: &[&str],
    ) -> anyhow::Result<(ExplainReport, Vec<ItemResidue>)> {
        let tree = self.walk()?;
        let before = self.target.usage_bytes().ok().flatten();
        let taken = residue::take(&mut self.reader, &tree.nodes, ATTEMPTS, ATTEMPT_PAUSE)?;
        let after = self.target.usage_bytes().ok().flatten();
        let stat = if self.read_stat_file {
            self.target.stat().ok().flatten()
        } else {
            None
        };
        let r = &taken.residues;
        if r.memcgs.first().is_none_or(|m| m.gone) {
            anyhow::bail!(
                "{}: the cgroup was removed while reading it",
                self.target.path().display()
            );
        }
        let layout = self.reader_layout();
        let x = &r.memcgs[0];
        let picked = items
            .iter()
            .filter_map(|name| {
                let k = layout.stats.index.slot(name)?;
                Some(ItemResidue {
                    item: name.to_string(),
                    flushed: x.state.get(k).copied().unwrap_or(0),
                    pending_tree: x.pending.get(k).copied().unwrap_or(0),
                    per_cpu: x
                        .cpu_delta
                        .iter()
                        .map(|d| d.get(k).copied().unwrap_or(0))
                        .collect(),
                })
            })
            .collect();
        let led = ledger::compute(&layout, &tree, r, &self.ctx);
        Ok((self.build(&tree, &taken, led, before, after, stat), picked))
    }

    fn build(
        &self,
        tree: &Tree,
        taken: &residue::Taken,
        led: Ledger,
        before: Option<u64>,
        after: Option<u64>,
        stat: Option<crate::cgroup::MemoryStat>,
    ) -> ExplainReport {
        let ps = self.ctx.page_size;
        let x = &taken.residues.memcgs[0];
        let bytes = |p: u64| p.saturating_mul(ps);
        // PAGE_COUNTER_MAX is LONG_MAX / PAGE_SIZE (include/linux/page_counter.h).
        let unlimited = x.max >= (i64::MAX as u64) / ps;
        let v1 = self.ctx.version == CgroupVersion::V1;
        let synthetic = self.ctx.is_root && v1;
        // The v1 counters exist in struct mem_cgroup on v2 too, but only v1 maintains kmem and
        // tcpmem; the memsw slot is the v2 swap counter (a union).
        let v1_counters = x.v1.filter(|_| v1);
        let usage_bytes = led.usage_pages * ps as i64;
        let agrees = match (before, after) {
            (Some(b), Some(a)) if b == a && !self.ctx.is_root => Some(a as i64 == usage_bytes),
            _ => None,
        };
        let charge = ChargeBook {
            usage_bytes,
            usage_pages: led.usage_pages,
            max_bytes: (!unlimited).then(|| bytes(x.max)),
            peak_bytes: bytes(x.watermark),
            failcnt: x.failcnt,
            memsw_usage_bytes: v1_counters.map(|v| bytes(v.0)),
            swap_usage_bytes: x.swap.filter(|_| !v1).map(bytes),
            kmem_usage_bytes: v1_counters.map(|v| bytes(v.1)),
            tcpmem_usage_bytes: v1_counters.map(|v| bytes(v.2)),
            cgroupfs_file: after.map(|_| {
                match self.ctx.version {
                    CgroupVersion::V1 => "memory.usage_in_bytes",
                    CgroupVersion::V2 => "memory.current",
                }
                .to_string()
            }),
            cgroupfs_usage_bytes: after,
            cgroupfs_agrees: agrees,
            cgroupfs_synthetic: synthetic,
        };
        let stat_book = led
            .stat_book
            .iter()
            .map(|row| StatBookRow {
                item: row.item.clone(),
                key: row.key.clone(),
                unit: row.unit,
                shown_bytes: row.shown_bytes,
                pending_bytes: row.pending_bytes,
                exact_bytes: row.exact_bytes,
                cgroupfs_bytes: row
                    .key
                    .as_deref()
                    .and_then(|k| stat.as_ref().and_then(|s| s.get(k))),
            })
            .collect();
        let r = &taken.residues;
        let explained_bytes = led.explained_pages * ps as i64;
        ExplainReport {
            cgroup: self.target.path().display().to_string(),
            cgroup_id: self.target.id(),
            version: self.ctx.version.to_string(),
            kernel: self.kernel.clone(),
            page_size: ps,
            root: self.ctx.is_root,
            usage_bytes,
            explained_bytes,
            unexplained_bytes: usage_bytes - explained_bytes,
            unexplained_pages: led.unexplained_pages,
            charge,
            stat_book,
            terms: led.terms,
            missing_terms: led.missing,
            not_read: led.not_read,
            mapped_view_unexplained_pages: led.mapped_view_unexplained_pages,
            gap: led.gap,
            dying: led.dying,
            obj_stock: led.obj_stock,
            swap: led.swap,
            swap_not_read: led.swap_not_read,
            charge_batch: self.charge_batch.clone().ok(),
            charge_batch_not_measured: self.charge_batch.as_ref().err().map(|e| e.to_string()),
            snapshot: SnapshotInfo {
                attempts: taken.attempts,
                consistent: r.consistent.is_ok(),
                moved: r.consistent.clone().err(),
                memcgs: tree.nodes.len(),
                live_descendants: led.members.1,
                dying_descendants: led.members.2,
                freed_during_read: led.members.3,
                left_out: tree.left_out,
                cpus: self.reader.nr_cpus(),
                static_percpu_error: r.static_percpu.clone().err(),
            },
        }
    }
}

/// Cuts `s` to `n` characters, keeping its end.
fn tail(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        return s.to_string();
    }
    let keep: String = s.chars().skip(len - (n - 3)).collect();
    format!("...{keep}")
}

/// Word-wraps `text` to `WIDTH` columns with `indent` spaces.
fn wrap(out: &mut String, indent: usize, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > WIDTH {
            let _ = writeln!(out, "{:indent$}{line}", "");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{:indent$}{line}", "");
    }
}

fn term_label(t: &Term) -> String {
    match t.term.as_str() {
        "lru_add" => "lru_add batches (not on an LRU yet)".into(),
        "stock" => "charge stock (charged ahead)".into(),
        "kmem" => "kernel memory (MEMCG_KMEM)".into(),
        "sock" => "sockets (MEMCG_SOCK)".into(),
        "hugetlb" => "hugetlb (NR_HUGETLB)".into(),
        id => match id.strip_prefix("lru.") {
            Some(l) => format!("LRU {l}"),
            None => id.to_string(),
        },
    }
}

fn signed(v: i64) -> String {
    format!("{v:+}")
}

/// Dying descendants listed one per line in the text report (the rest are summed in one).
const DYING_SHOWN: usize = 20;

/// Renders the text report (at most 100 columns).
pub fn render_text(r: &ExplainReport, cpus: bool) -> String {
    let mut s = String::new();
    let c = &r.charge;
    let sn = &r.snapshot;
    let suffix = format!(
        " (id {}, cgroup {}, {})",
        r.cgroup_id,
        r.version,
        tail(&r.kernel, 24)
    );
    let room = WIDTH.saturating_sub("memcg-drift explain ".len() + suffix.chars().count());
    let _ = writeln!(
        s,
        "memcg-drift explain {}{suffix}",
        tail(&r.cgroup, room.max(12))
    );
    let _ = writeln!(
        s,
        "snapshot: {} memcg(s): self, {} live and {} dying descendant(s){}; {} CPUs; {}",
        sn.memcgs,
        sn.live_descendants,
        sn.dying_descendants,
        if sn.left_out > 0 {
            format!(", {} left out", sn.left_out)
        } else {
            String::new()
        },
        sn.cpus,
        if sn.consistent {
            format!("consistent on attempt {}", sn.attempts)
        } else {
            format!("NOT consistent after {} attempts", sn.attempts)
        }
    );
    if let Some(m) = &sn.moved {
        wrap(&mut s, 2, &format!("still moving: {m}"));
    }
    match (&r.charge_batch, &r.charge_batch_not_measured) {
        (Some(b), _) => wrap(
            &mut s,
            0,
            &format!("charge batch: {} pages ({})", b.pages, b.source),
        ),
        (None, Some(why)) => wrap(&mut s, 0, &format!("charge batch: {why}")),
        (None, None) => {}
    }
    if r.root {
        wrap(
            &mut s,
            2,
            "the root: its own pages are never charged (try_charge skips it), so its \
             page_counter holds its descendants' charges and the ledger covers them only",
        );
    }

    let _ = writeln!(
        s,
        "\ncharge book (page_counter){:>25}{:>16}",
        "pages", "bytes"
    );
    let _ = writeln!(
        s,
        "  {:<24}{:>25}{:>16}",
        "usage", c.usage_pages, c.usage_bytes
    );
    if let (Some(f), Some(v)) = (&c.cgroupfs_file, c.cgroupfs_usage_bytes) {
        let verdict = if c.cgroupfs_synthetic {
            "synthesised by the kernel from global statistics (v1 root), not the page_counter"
        } else {
            match c.cgroupfs_agrees {
                Some(true) => "equal, read before and after the snapshot",
                Some(false) => "DIFFERENT, though it did not move while reading",
                None => "moved while reading, not compared",
            }
        };
        wrap(&mut s, 4, &format!("{f} {v}: {verdict}"));
    }
    match c.max_bytes {
        Some(m) => {
            let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "limit", m / r.page_size, m);
        }
        None => {
            let _ = writeln!(s, "  {:<24}{:>25}", "limit", "unlimited");
        }
    }
    let _ = writeln!(
        s,
        "  {:<24}{:>25}{:>16}",
        "peak",
        c.peak_bytes / r.page_size,
        c.peak_bytes
    );
    let _ = writeln!(s, "  {:<24}{:>25}", "failcnt", c.failcnt);
    if let (Some(k), Some(t), Some(m)) = (
        c.kmem_usage_bytes,
        c.tcpmem_usage_bytes,
        c.memsw_usage_bytes,
    ) {
        let _ = writeln!(
            s,
            "  {:<24}{:>25}{:>16}  = MEMCG_KMEM, synchronously",
            "v1 kmem",
            k / r.page_size,
            k
        );
        let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "v1 tcpmem", t / r.page_size, t);
        let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "v1 memsw", m / r.page_size, m);
    }
    if let Some(sw) = c.swap_usage_bytes {
        let _ = writeln!(s, "  {:<24}{:>25}{:>16}", "swap", sw / r.page_size, sw);
    }

    let _ = writeln!(
        s,
        "\nstat book (bytes; shown = what memory.stat shows without a flush)"
    );
    let _ = writeln!(
        s,
        "  {:<24}{:<20}{:>16}{:>16}{:>16}",
        "ITEM", "KEY", "SHOWN", "PENDING", "EXACT"
    );
    for row in &r.stat_book {
        if row.shown_bytes == 0 && row.pending_bytes == 0 && row.cgroupfs_bytes.unwrap_or(0) == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<24}{:<20}{:>16}{:>16}{:>16}",
            tail(&row.item, 23),
            row.key.as_deref().unwrap_or("-"),
            row.shown_bytes,
            signed(row.pending_bytes),
            row.exact_bytes
        );
    }

    let _ = writeln!(
        s,
        "\nledger: usage = terms + unexplained (pages){}",
        if cpus {
            ""
        } else {
            "; per-CPU detail with --cpus"
        }
    );
    let _ = writeln!(
        s,
        "  {:<36}{:>10}{:>10}{:>10}{:>10}  SELF/LIVE/DYING",
        "TERM", "PAGES", "FLUSHED", "PENDING", "PER-CPU"
    );
    for t in &r.terms {
        let per_cpu: i64 = t.per_cpu.iter().sum();
        let (fl, pe) = match (t.flushed, t.pending_tree) {
            (Some(f), Some(p)) => (f.to_string(), signed(p)),
            _ => (String::new(), String::new()),
        };
        let pc = if t.flushed.is_some() {
            signed(per_cpu)
        } else {
            per_cpu.to_string()
        };
        let _ = writeln!(
            s,
            "  {:<36}{:>10}{:>10}{:>10}{:>10}  {}/{}/{}",
            tail(&term_label(t), 35),
            t.pages,
            fl,
            pe,
            pc,
            t.by_member.own,
            t.by_member.live,
            t.by_member.dying
        );
        if cpus {
            for (cpu, v) in t.per_cpu.iter().enumerate().filter(|(_, v)| **v != 0) {
                let _ = writeln!(s, "    cpu {cpu:<4}{:>72}", signed(*v));
            }
        }
    }
    for m in &r.missing_terms {
        wrap(&mut s, 2, &format!("{:<36}not read: {}", m.term, m.reason));
    }
    let _ = writeln!(
        s,
        "  {:<36}{:>10}",
        "explained",
        r.explained_bytes / r.page_size as i64
    );
    let _ = writeln!(
        s,
        "  {:<36}{:>10}",
        "unexplained",
        signed(r.unexplained_pages)
    );
    if r.unexplained_pages != 0 && r.missing_terms.is_empty() {
        for m in &r.not_read {
            wrap(
                &mut s,
                2,
                &format!("{:<36}not read, may hold it: {}", m.term, m.reason),
            );
        }
    }
    if let Some(mv) = r.mapped_view_unexplained_pages {
        let _ = writeln!(
            s,
            "  {:<36}{:>10}  (cross-check: anon + file instead of LRU lists)",
            "unexplained, mapped view",
            signed(mv)
        );
    }

    let g = &r.gap;
    let _ = writeln!(s);
    wrap(
        &mut s,
        0,
        &format!(
            "gap usage - memory.stat book: {} pages = unflushed {} + stock {} + lru_add {} + \
             unexplained {}{}",
            signed(g.pages),
            signed(g.unflushed_pages),
            g.stock_pages,
            g.lru_add_pages,
            signed(g.unexplained_pages),
            if g.clamped_pages != 0 {
                format!(" - shown as 0 {}", g.clamped_pages)
            } else {
                String::new()
            }
        ),
    );
    for (what, Bound { pages, why }) in &g.bounds {
        let measured = match what.as_str() {
            "unflushed" if g.flush_updates.is_some() => {
                let fu = g.flush_updates.unwrap_or(0);
                let carried: i64 = g.percpu_updates.iter().sum();
                format!(
                    "{} pages; the kernel counts {fu} pending update units (+{carried} carried \
                     per CPU), {}",
                    signed(g.unflushed_pages),
                    if fu > *pages {
                        "over the bound: a memory.stat read now would flush first"
                    } else {
                        "under the bound"
                    }
                )
            }
            "unflushed" if g.unflushed_pages.abs() > *pages => {
                format!(
                    "{}, over the bound: a memory.stat read now would flush first",
                    signed(g.unflushed_pages)
                )
            }
            "unflushed" => signed(g.unflushed_pages),
            "stock" => g.stock_pages.to_string(),
            "lru_add" => g.lru_add_pages.to_string(),
            _ => String::new(),
        };
        wrap(
            &mut s,
            2,
            &format!("{what}: {measured}; kernel bound {pages}: {why}"),
        );
    }
    if let Some(o) = &r.obj_stock {
        let total: i64 = o.per_cpu_bytes.iter().sum();
        if total != 0 {
            wrap(
                &mut s,
                2,
                &format!(
                    "object stocks hold {total} bytes of MEMCG_KMEM pages for this subtree's \
                     objcgs (per CPU {:?}); already inside kmem, not a term",
                    o.per_cpu_bytes
                ),
            );
        }
    }

    if let Some(b) = &r.swap
        && (b.usage_pages != 0 || b.entries.pages != 0)
    {
        let e = &b.entries;
        let _ = writeln!(
            s,
            "\nswap book (pages): {} {} = MEMCG_SWAP {} (flushed {}, pending {}, per-CPU {}) \
             + unexplained {}",
            b.counter,
            b.usage_pages,
            e.pages,
            e.flushed.unwrap_or(0),
            signed(e.pending_tree.unwrap_or(0)),
            signed(e.per_cpu.iter().sum()),
            signed(b.unexplained_pages)
        );
        if cpus {
            for (cpu, v) in e.per_cpu.iter().enumerate().filter(|(_, v)| **v != 0) {
                let _ = writeln!(s, "    cpu {cpu:<4}{:>72}", signed(*v));
            }
        }
    }

    if !r.dying.is_empty() {
        let _ = writeln!(s, "\ndying descendants (pages)");
        let _ = writeln!(
            s,
            "  {:<12}{:<30}{:>12}{:>10}{:>10}{:>10}{:>10}",
            "ID", "PATH", "CHARGE", "LRU", "LRU_ADD", "KMEM", "STOCK"
        );
        // The largest holders first; a leak of thousands is summed, not listed (`--json`
        // lists every one).
        let mut shown: Vec<&Dying> = r.dying.iter().collect();
        shown.sort_by_key(|d| std::cmp::Reverse(d.usage_pages));
        let rest = shown.split_off(shown.len().min(DYING_SHOWN));
        for d in &shown {
            let _ = writeln!(
                s,
                "  {:<12}{:<30}{:>12}{:>10}{:>10}{:>10}{:>10}",
                d.cgroup_id,
                tail(&d.path, 29),
                d.usage_pages,
                d.lru_pages,
                d.lru_add_pages,
                d.kmem_pages,
                d.stock_pages
            );
        }
        if !rest.is_empty() {
            let sum = |f: fn(&Dying) -> i64| rest.iter().map(|d| f(d)).sum::<i64>();
            let _ = writeln!(
                s,
                "  {:<42}{:>12}{:>10}{:>10}{:>10}{:>10}",
                format!("... {} more (--json lists them)", rest.len()),
                sum(|d| d.usage_pages as i64),
                sum(|d| d.lru_pages),
                sum(|d| d.lru_add_pages),
                sum(|d| d.kmem_pages),
                sum(|d| d.stock_pages)
            );
        }
        wrap(
            &mut s,
            2,
            "CHARGE is the dying cgroup's own page_counter: kernel memory freed after its \
             offline is uncharged from the parent (objcgs are reparented), so it can stay high",
        );
    }
    let _ = writeln!(
        s,
        "\nexplained {} of {} bytes, unexplained {}",
        r.explained_bytes, r.usage_bytes, r.unexplained_bytes
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ByMember;

    fn report() -> ExplainReport {
        let term = |id: &str, pages: i64| Term {
            term: id.into(),
            item: None,
            pages,
            bytes: pages * 4096,
            flushed: Some(pages - 3),
            pending_tree: Some(1),
            per_cpu: vec![0, 2],
            by_member: ByMember {
                own: pages,
                live: 0,
                dying: 0,
            },
            bound: None,
            unmapped: None,
            unmapped_per_cpu: None,
        };
        ExplainReport {
            cgroup: "/sys/fs/cgroup/memory/memcg-drift/123456-7890/a/very/long/child/path".into(),
            cgroup_id: 123456789,
            version: "v1".into(),
            kernel: "6.18.44-fc-v669-with-a-long-suffix".into(),
            page_size: 4096,
            root: false,
            usage_bytes: 2342912,
            explained_bytes: 2342912,
            unexplained_bytes: 0,
            unexplained_pages: 0,
            charge: ChargeBook {
                usage_bytes: 2342912,
                usage_pages: 572,
                max_bytes: None,
                peak_bytes: 9999999,
                failcnt: 0,
                memsw_usage_bytes: Some(1),
                swap_usage_bytes: None,
                kmem_usage_bytes: Some(2),
                tcpmem_usage_bytes: Some(3),
                cgroupfs_file: Some("memory.usage_in_bytes".into()),
                cgroupfs_usage_bytes: Some(2342912),
                cgroupfs_agrees: Some(true),
                cgroupfs_synthetic: false,
            },
            stat_book: vec![StatBookRow {
                item: "NR_SLAB_UNRECLAIMABLE_B".into(),
                key: Some("total_inactive_anon".into()),
                unit: Unit::Bytes,
                shown_bytes: 123456789012,
                pending_bytes: -123456789012,
                exact_bytes: 123456789012,
                cgroupfs_bytes: Some(1),
            }],
            terms: vec![term("lru.inactive_anon", 445), term("stock", 63)],
            not_read: vec![],
            missing_terms: vec![Missing {
                term: "lru_add".into(),
                reason: "per-CPU route check failed on CPU 3: this_cpu_off 0xffff != offset \
                         0xeeee and a long explanation that needs wrapping"
                    .into(),
            }],
            mapped_view_unexplained_pages: Some(0),
            gap: Gap {
                pages: 73,
                unflushed_pages: 10,
                stock_pages: 63,
                lru_add_pages: 0,
                clamped_pages: 0,
                unexplained_pages: 0,
                flush_updates: Some(12),
                percpu_updates: vec![3, 4],
                bounds: vec![
                    (
                        "unflushed".into(),
                        Bound {
                            pages: 128,
                            why: "a memory.stat read flushes first when more than 64 x 2 \
                                  online CPUs updates are pending in the subtree"
                                .into(),
                        },
                    ),
                    (
                        "stock".into(),
                        Bound {
                            pages: 896,
                            why: "at most 64 pages per memcg per CPU (a refill above \
                              MEMCG_CHARGE_BATCH drains the slot) in 7 of 7 slot(s) x 2 CPUs"
                                .into(),
                        },
                    ),
                ],
            },
            dying: vec![Dying {
                cgroup_id: 99999999,
                path: "a/very/long/path/of/a/dying/cgroup/that/goes/on/and/on".into(),
                usage_pages: 12345678,
                lru_pages: -5,
                lru_add_pages: 1,
                kmem_pages: 3,
                stock_pages: 64,
            }],
            obj_stock: None,
            swap: None,
            swap_not_read: Some("the swap counter was not read".into()),
            charge_batch: Some(ChargeBatch {
                pages: 64,
                source: "measured: 130 one-page faults on CPU 1 in a fresh cgroup moved its \
                         charged usage in 3 steps of 64 pages"
                    .into(),
            }),
            charge_batch_not_measured: None,
            snapshot: SnapshotInfo {
                attempts: 1,
                consistent: true,
                moved: None,
                memcgs: 2,
                live_descendants: 0,
                dying_descendants: 1,
                freed_during_read: 0,
                left_out: 0,
                cpus: 2,
                static_percpu_error: None,
            },
        }
    }

    #[test]
    fn text_fits_100_columns_and_ends_with_the_bottom_line() {
        for cpus in [false, true] {
            let text = render_text(&report(), cpus);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= WIDTH,
                    "{} > 100: {line}",
                    line.len()
                );
            }
            assert_eq!(
                text.lines().last(),
                Some("explained 2342912 of 2342912 bytes, unexplained 0")
            );
            assert_eq!(text.contains("    cpu 1"), cpus);
        }
    }

    #[test]
    fn thousands_of_dying_descendants_list_the_largest_and_sum_the_rest() {
        let mut r = report();
        r.dying = (0..5000u64)
            .map(|i| Dying {
                cgroup_id: 1000 + i,
                path: format!("c{i}"),
                usage_pages: i,
                lru_pages: 2,
                lru_add_pages: 0,
                kmem_pages: 1,
                stock_pages: 0,
            })
            .collect();
        let text = render_text(&r, false);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| {
                let mut w = l.split_whitespace();
                w.next().is_some_and(|id| id.parse::<u64>().is_ok())
                    && w.next().is_some_and(|p| p.starts_with('c'))
            })
            .collect();
        assert_eq!(rows.len(), DYING_SHOWN, "{text}");
        // The largest first: c4999 (4999 pages) leads.
        assert!(rows[0].contains("c4999"), "{text}");
        // The other 4980 summed: charge 0 + ... + 4979, LRU 2 each, KMEM 1 each.
        let rest = text
            .lines()
            .find(|l| l.contains("... 4980 more (--json lists them)"))
            .unwrap_or_else(|| panic!("no summary line:\n{text}"));
        let nums: Vec<i64> = rest
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(
            nums,
            vec![4980, 4980 * 4979 / 2, 2 * 4980, 0, 4980, 0],
            "{rest}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    }

    #[test]
    fn unexplained_names_what_is_not_read() {
        let mut r = report();
        r.unexplained_pages = 3;
        r.unexplained_bytes = 3 * 4096;
        r.missing_terms.clear();
        r.not_read = vec![Missing {
            term: "mlock_batch".into(),
            reason: "new mlocked folios waiting in a per-CPU mlock batch".into(),
        }];
        let text = render_text(&r, false);
        assert!(text.contains("mlock_batch"), "{text}");
        assert!(text.contains("pending update units"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }
        r.unexplained_pages = 0;
        assert!(!render_text(&r, false).contains("mlock_batch"));
    }

    #[test]
    fn synthetic_root_usage_is_labelled() {
        let mut r = report();
        r.root = true;
        r.charge.cgroupfs_synthetic = true;
        r.charge.cgroupfs_agrees = None;
        let text = render_text(&r, false);
        assert!(text.contains("synthesised by the kernel"), "{text}");
        assert!(text.contains("never charged"), "{text}");
    }

    #[test]
    fn json_has_the_documented_top_level_fields() {
        let v = serde_json::to_value(report()).unwrap();
        for k in [
            "usage_bytes",
            "explained_bytes",
            "unexplained_bytes",
            "terms",
            "charge",
            "stat_book",
            "gap",
            "dying",
            "snapshot",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["terms"][0]["per_cpu"], serde_json::json!([0, 2]));
        assert_eq!(v["terms"][0]["by_member"]["self"], 445);
    }
}
