//! `memcg-drift explain PATH`: the charge book, the stat book as memory.stat shows it, and the
//! ledger that closes one against the other to the page, with per-CPU residues read by eBPF
//! (docs/ledger.md), in text (100 columns) or JSON (docs/json.md), once or every `--watch`
//! interval.
//!
//! This module does the I/O around the pure parts: it resolves the layout and loads the
//! residue reader (`residue`), walks the css tree, takes a consistent snapshot, reads cgroupfs
//! around it, computes the ledger (`ledger`) and renders the report.

use std::{
    fmt::Write as _,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    kernel::layout::ResidueLayout,
    ledger::{
        self, Bound, Context, Dying, Gap, Ledger, Missing, ObjStockDetail, SwapBook, Term, Unit,
    },
    residue::{self, ResidueError, ResidueReader, Tree, WalkError},
    workload::batch::{BatchError, ChargeBatch, charge_batch},
};

mod render;
#[cfg(test)]
mod tests;

pub use render::render_text;

/// Why an `explain` session could not start or take a report.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Loading or running the residue reader failed.
    #[error(transparent)]
    Residue(#[from] ResidueError),
    /// The page size could not be read.
    #[error(transparent)]
    PageSize(#[from] nix::errno::Errno),
    /// The hierarchy's root directory could not be read.
    #[error("{}: {err}", path.display())]
    Root {
        /// The root's path.
        path: PathBuf,
        /// The I/O error.
        err: std::io::Error,
    },
    /// A directory on the way down to the target could not be read.
    #[error("{}: {err} (removed while reading?)", path.display())]
    PathGone {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        err: std::io::Error,
    },
    /// The css tree walk did not find the target's memcg.
    #[error("{}: cannot find its memcg: {err}", path.display())]
    NoMemcg {
        /// The target's path.
        path: PathBuf,
        /// Why the walk failed.
        err: WalkError,
    },
    /// The target was removed during the snapshot.
    #[error("{}: the cgroup was removed while reading it", .0.display())]
    Removed(PathBuf),
}

/// Snapshots tried before a report says the kernel kept moving.
const ATTEMPTS: usize = 8;
/// Pause before the second attempt, doubled before each next one up to [`ATTEMPT_PAUSE_MAX`]
/// (2, 4, ..., 40 ms: eight attempts span about as long as seven fixed 20 ms pauses did, and a
/// movement of a few milliseconds costs a few milliseconds).
const ATTEMPT_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between attempts.
const ATTEMPT_PAUSE_MAX: Duration = Duration::from_millis(40);
/// Snapshots taken again when the ledger does not close (see [`Explainer::report_with_items`]).
const UNCLOSED_RETAKES: usize = 3;
/// Pause before the first of them, times 4 before each next one (1, 4, 16 ms).
const UNCLOSED_PAUSE: Duration = Duration::from_millis(1);
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
    /// The target's flush mark: a fingerprint of its per-CPU `state_prev`, which a flush
    /// that moves any of its updates rewrites. Two reports with the same mark saw no flush
    /// of the target between them; a different mark means one happened.
    pub flush_mark: u64,
    /// Times the snapshot was taken again because its ledger did not close (an update halfway
    /// on another CPU closes on a later one; see [`Explainer::report_with_items`]).
    pub unclosed_retakes: usize,
    /// v1 before 5.11, a target with `memory.use_hierarchy` 0: descendants left out of the
    /// ledger, because their charges and statistics never reach the target.
    pub not_hierarchical_descendants: usize,
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

impl ExplainReport {
    /// The stat book's row of `item`, if this kernel has the item.
    pub fn stat_row(&self, item: &str) -> Option<&StatBookRow> {
        self.stat_book.iter().find(|s| s.item == item)
    }

    /// Whether the kernel counts kernel memory nowhere (5.10 on cgroup v2: no MEMCG_KMEM
    /// statistic before 5.18, no kmem page_counter on v2): the ledger's `kmem` term is then
    /// missing, and its remainder holds that kernel memory.
    pub fn kmem_counted_nowhere(&self) -> bool {
        self.missing_terms.iter().any(|m| m.term == "kmem")
    }
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
fn path_ids(hier_root: &Path, target: &MemCgroup) -> Result<Vec<u64>, ExplainError> {
    let mut ids = Vec::new();
    let mut p = hier_root.to_path_buf();
    for comp in target.rel_path().components().skip(1) {
        p.push(comp);
        let meta = std::fs::metadata(&p).map_err(|err| ExplainError::PathGone {
            path: p.clone(),
            err,
        })?;
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
    pub fn new(hier: &MemoryHierarchy, target: MemCgroup) -> Result<Self, ExplainError> {
        let reader = ResidueReader::open(START_CAPACITY)?;
        let page_size =
            nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
        let root = &target.hierarchy().root;
        let root_id = std::fs::metadata(root)
            .map_err(|err| ExplainError::Root {
                path: root.clone(),
                err,
            })?
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
    /// The target's subtree, and how many descendants were left out because the target is not
    /// hierarchical.
    fn walk(&mut self) -> Result<(Tree, usize), ExplainError> {
        let limit = probes_common::RES_MAX_MEMCGS as usize;
        let layout = self.reader_layout();
        let mut tree = residue::walk(&mut self.reader, &layout, self.root_id, &self.ids, limit)
            .map_err(|err| ExplainError::NoMemcg {
                path: self.target.path().to_path_buf(),
                err,
            })?;
        // v1 before 5.11: a memcg with `memory.use_hierarchy` 0 keeps its own charges and
        // statistics only; its descendants' never reach it (parent_mem_cgroup is NULL for
        // them, 5.10 memcontrol.h), so the ledger is its own.
        let mut flat = 0;
        if self.ctx.version == CgroupVersion::V1
            && self
                .target
                .read_raw("memory.use_hierarchy")
                .ok()
                .flatten()
                .is_some_and(|v| v.trim() == "0")
        {
            flat = tree.nodes.len().saturating_sub(1) + tree.left_out;
            tree.nodes.truncate(1);
            tree.left_out = 0;
        }
        if tree.nodes.len() > self.reader.capacity() {
            let want = (tree.nodes.len() * 3 / 2).min(limit);
            self.reader = ResidueReader::load(layout, want)?;
        }
        Ok((tree, flat))
    }

    fn reader_layout(&self) -> ResidueLayout {
        self.reader.layout().clone()
    }

    /// Points the session at another cgroup of the same hierarchy, keeping the loaded reader
    /// (the exporter reads many cgroups with one).
    pub fn retarget(&mut self, target: MemCgroup) -> Result<(), ExplainError> {
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

    /// Waits until the target's charges stop moving: reports 10 ms apart until three in a row
    /// agree on the charged usage, every CPU's stock and MEMCG_KMEM, at most `max`. A process
    /// just started in the cgroup leaves kernel objects that are freed after an RCU grace
    /// period (the pre-exec image's page tables among them), each free uncharging through a
    /// CPU's stock: an experiment that predicts the stock from its own charges waits for them
    /// first. Returns whether it settled.
    pub fn wait_settled(&mut self, max: Duration) -> Result<bool, ExplainError> {
        let key = |r: &ExplainReport| {
            let stock = r
                .terms
                .iter()
                .find(|t| t.term == "stock")
                .map(|t| t.per_cpu.clone());
            let kmem = r.stat_row("MEMCG_KMEM").map(|x| x.exact_bytes);
            (r.charge.usage_pages, stock, kmem)
        };
        let start = std::time::Instant::now();
        let mut last = key(&self.report()?);
        let mut same = 0;
        while same < 2 {
            if start.elapsed() >= max {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
            let next = key(&self.report()?);
            same = if next == last { same + 1 } else { 0 };
            last = next;
        }
        Ok(true)
    }

    /// One report.
    pub fn report(&mut self) -> Result<ExplainReport, ExplainError> {
        Ok(self.report_with_items(&[])?.0)
    }

    /// One report, plus the target's own per-CPU unflushed deltas of the named statistic
    /// items (kernel units), from the same snapshot. Items this kernel lacks are left out.
    ///
    /// A consistent snapshot whose ledger does not close, with every term read, is taken again
    /// (up to [`UNCLOSED_RETAKES`] times, after short pauses): another CPU can be halfway
    /// through an update that touches two places, e.g. a socket's uncharge, which lowers
    /// MEMCG_SOCK and then refills the stock, or a vCPU the host paused between the two. Such
    /// a state passes a later snapshot; a ledger that stays open is reported as it is, and
    /// `snapshot.unclosed_retakes` says how often it was taken again.
    pub fn report_with_items(
        &mut self,
        items: &[&str],
    ) -> Result<(ExplainReport, Vec<ItemResidue>), ExplainError> {
        let mut pause = UNCLOSED_PAUSE;
        let mut retakes = 0;
        loop {
            let (mut r, picked) = self.report_once(items)?;
            r.snapshot.unclosed_retakes = retakes;
            let injected = crate::test_hooks::unclosed_pages();
            r.unexplained_pages += injected;
            r.unexplained_bytes += injected * r.page_size as i64;
            let retake = r.unexplained_pages != 0
                && r.missing_terms.is_empty()
                && r.snapshot.consistent
                && retakes < UNCLOSED_RETAKES;
            if !retake {
                return Ok((r, picked));
            }
            retakes += 1;
            std::thread::sleep(pause);
            pause *= 4;
        }
    }

    fn report_once(
        &mut self,
        items: &[&str],
    ) -> Result<(ExplainReport, Vec<ItemResidue>), ExplainError> {
        let (tree, flat) = self.walk()?;
        let before = self.target.usage_bytes().ok().flatten();
        let taken = residue::take(
            &mut self.reader,
            &tree.nodes,
            ATTEMPTS,
            ATTEMPT_PAUSE,
            ATTEMPT_PAUSE_MAX,
        )?;
        let after = self.target.usage_bytes().ok().flatten();
        let stat = if self.read_stat_file {
            self.target.stat().ok().flatten()
        } else {
            None
        };
        let r = &taken.residues;
        if r.memcgs.first().is_none_or(|m| m.gone) {
            return Err(ExplainError::Removed(self.target.path().to_path_buf()));
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
        let mut report = self.build(&tree, &taken, led, before, after, stat);
        report.snapshot.not_hierarchical_descendants = flat;
        Ok((report, picked))
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
                moved: r.consistent.as_ref().err().map(|e| e.to_string()),
                memcgs: tree.nodes.len(),
                live_descendants: led.members.1,
                dying_descendants: led.members.2,
                freed_during_read: led.members.3,
                left_out: tree.left_out,
                cpus: self.reader.nr_cpus(),
                static_percpu_error: r.static_percpu.as_ref().err().map(|e| e.to_string()),
                flush_mark: r.memcgs.first().map_or(0, |m| m.flush_mark),
                unclosed_retakes: 0,
                not_hierarchical_descendants: 0,
            },
        }
    }
}
