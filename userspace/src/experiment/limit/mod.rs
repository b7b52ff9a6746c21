//! `run limit` (seeds 001 and 003): grow anonymous memory in steps toward and past a hard limit
//! and report the timeline (usage against the limit, reclaim rounds, failcnt / `max` events,
//! `high` throttling, the OOM kill or why none happened); optionally shrink the limit while
//! usage is high; and show that charges taken before a process joined a cgroup stay with the
//! old one.
//!
//! The kernel's rules this experiment checks (sources: linux 6.18 unless said otherwise; 6.1 and
//! 6.12 read the same where it matters):
//! - **Where a charge goes.** A page is charged to the memcg of the task that faults it, at the
//!   fault (`mem_cgroup_charge` -> `charge_memcg` -> `try_charge_memcg`, mm/memcontrol.c), and
//!   it records that memcg in the folio (`commit_charge`). Moving the task later moves nothing:
//!   on 6.18 v1 `move_charge_at_immigrate` reads 0 always and refuses any other value
//!   (`mem_cgroup_move_charge_read`/`_write`, mm/memcontrol-v1.c: charge moving was removed);
//!   on 6.1/6.12 v1 it defaults to 0, and with 0 `mem_cgroup_can_attach` moves no charge; v2
//!   never moved charges. The uncharge of such a page later goes to the memcg recorded in the
//!   folio (`uncharge_folio` -> `uncharge_batch`), not to the task's current one (seed 001:
//!   "memory.current stayed 0 after moving the process in").
//! - **The OOM bound.** `page_counter_try_charge` (mm/page_counter.c) never lets usage pass
//!   `max`; `try_charge_memcg` first tries a whole `MEMCG_CHARGE_BATCH` (measured: `workload::batch`), then the
//!   request alone, reclaims, drains the stocks, retries `MAX_RECLAIM_RETRIES` times and only
//!   then calls `mem_cgroup_oom` -> `mem_cgroup_out_of_memory`. At the last failed try usage was
//!   `> max - 1` page, i.e. exactly `max` for one-page anon faults. Until the kill is reported
//!   usage can only fall by pages returned from other CPUs' charge stocks (the
//!   `drain_all_stock` work), and `refill_stock` drains a CPU's stock of a memcg as soon as it
//!   holds more than `MEMCG_CHARGE_BATCH` pages: so `max - batch * online CPUs <= usage <= max`
//!   at the kill, barring forced charges (`__GFP_NOFAIL`, `PF_MEMALLOC`), which this workload
//!   does not make.
//! - **No swap, no anon reclaim.** Without swap `can_reclaim_anon_pages` is false
//!   (mm/vmscan.c), so reclaim only takes file pages; anonymous and tmpfs (shmem, swap-backed)
//!   pages stay. Growth past the limit ends in the OOM killer.
//! - **Shrinking a limit below usage.** v1 `memory.limit_in_bytes` (`mem_cgroup_resize_max`,
//!   mm/memcontrol-v1.c): sets the new max only if usage fits, else drains the stocks once and
//!   reclaims (`try_to_free_mem_cgroup_pages(memcg, 1, ...)`) until it fits; when a round frees
//!   nothing the write fails with `EBUSY` and the old limit stays. v2 `memory.max`
//!   (`memory_max_write`, mm/memcontrol.c): sets the new max first, then drains, reclaims
//!   (`MAX_RECLAIM_RETRIES` fruitless rounds) and then invokes the OOM killer until usage fits
//!   or no victim is left; the write always succeeds.
//! - **oom_kill_disable (v1).** With `memory.oom_control` `oom_kill_disable 1`,
//!   `memcg1_oom_prepare` does not kill: a user fault sleeps in `mem_cgroup_oom_synchronize`
//!   (TASK_KILLABLE) with the memcg marked `under_oom`, until the limit is raised
//!   (`mem_cgroup_resize_max` -> `memcg1_oom_recover`), the disable is cleared, or the task is
//!   killed.

use std::{
    fmt::Write as _,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{Check, Common, LedgerAt, OomKill, Report, Session, Verdict};
use crate::experiment::{Context as _, ExperimentError, Result};
use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    explain::{ExplainReport, Explainer},
    workload::{Workload, WorkloadError, batch::charge_batch, workload_binary},
};

mod checks;
mod kmsg;
mod params;
mod plots;
mod render;
mod results;

use checks::*;
pub use kmsg::parse_kmsg;
use kmsg::*;
use params::*;
pub use params::{Options, Params, parse_size, validate};
pub use render::Limit;
pub use results::*;

fn swap_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let kb: u64 = l
                    .strip_prefix("SwapTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kb * 1024)
            })
        })
        .unwrap_or(0)
}

/// A reading of the cgroup's counters.
#[derive(Debug, Clone, Default)]
struct Counters {
    failcnt: Option<u64>,
    high: Option<u64>,
    oom: Option<u64>,
    oom_kill: Option<u64>,
}

fn counters(cg: &MemCgroup) -> Counters {
    let ev = cg.events().ok().flatten();
    let get = |k: &str| ev.as_ref().and_then(|e| e.get(k));
    Counters {
        failcnt: cg.failcnt().ok().flatten(),
        high: match cg.version() {
            CgroupVersion::V2 => get("high"),
            CgroupVersion::V1 => None,
        },
        oom: match cg.version() {
            CgroupVersion::V2 => get("oom"),
            CgroupVersion::V1 => None,
        },
        oom_kill: get("oom_kill"),
    }
}

fn delta(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(b?.saturating_sub(a?))
}

fn stat_bytes(cg: &MemCgroup, v1: &str, v2: &str) -> Option<u64> {
    let st = cg.stat().ok().flatten()?;
    st.get(match cg.version() {
        CgroupVersion::V1 => v1,
        CgroupVersion::V2 => v2,
    })
}

fn term_pages(r: &ExplainReport, name: &str) -> i64 {
    r.terms
        .iter()
        .find(|t| t.term == name)
        .map(|t| t.pages)
        .unwrap_or(0)
}

/// User pages charged: usage minus the charge stock (pre-charged, no page behind it yet) and
/// kernel memory (MEMCG_KMEM; object-stock drains move it by whole pages at any time).
fn charged_pages(r: &ExplainReport) -> i64 {
    r.usage_bytes / r.page_size as i64 - term_pages(r, "stock") - term_pages(r, "kmem")
}

/// Pages of unmapped folios waiting in lru_add batches (still charged until the batch drains).
fn unmapped_in_batches(r: &ExplainReport) -> i64 {
    r.terms
        .iter()
        .find(|t| t.term == "lru_add")
        .and_then(|t| t.unmapped)
        .unwrap_or(0)
}

fn anon_exact_pages(r: &ExplainReport) -> i64 {
    r.stat_book
        .iter()
        .find(|s| s.item == "NR_ANON_MAPPED")
        .map(|s| s.exact_bytes / r.page_size as i64)
        .unwrap_or(0)
}

fn under_oom(cg: &MemCgroup) -> Option<u64> {
    cg.events().ok().flatten()?.get("under_oom")
}

fn is_exited(e: &ExperimentError) -> bool {
    matches!(e.workload(), Some(WorkloadError::Exited { .. }))
}

/// Removes the page-cache file on every exit path.
struct FileGuard(Option<PathBuf>);

impl Drop for FileGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs the experiment (options validated by [`validate`]).
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> Result<Report> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    let worst = p.grow_to_bytes.max(p.limit_bytes)
        + p.step_bytes
        + p.page_cache_bytes
        + p.tmpfs_bytes
        + p.immigrate_bytes
        + (32 << 20);
    // Measured before the run's cgroups exist (its own cgroup comes and goes first).
    let kb = charge_batch(hier)?;
    let mut s = Session::start(hier, "limit", worst, 4, common)?;
    let steps = p.grow_to_bytes.div_ceil(p.step_bytes);
    s.expect_phases(steps + 8);
    let bin = workload_binary();
    let origin = s.child("origin")?;
    let limited = s.child("limited")?;
    limited.set_limit_bytes(Some(p.limit_bytes))?;
    if let Some(h) = p.high_bytes {
        limited.set_high_bytes(Some(h))?;
    }
    if p.oom_disable {
        limited
            .write_owned("memory.oom_control", "1")
            .context("setting oom_kill_disable")?;
    }
    let swap_total_bytes = swap_total();
    let ncpu = super::online_cpus().len() as u64;
    let floor = p.limit_bytes.saturating_sub(kb.pages * page * ncpu);
    let mut kmsg = Kmsg::open();
    let c_start = counters(&limited);
    let mut w = s.phase("start in origin", |_| {
        let mut w = Workload::spawn(&bin, &origin, p.cpu)?;
        w.set_timeout(Duration::from_secs(120));
        Ok(w)
    })?;
    let pid = w.pid();
    // 1. Charges stay with the old cgroup.
    let immigrate = if p.immigrate_bytes > 0 {
        Some(immigrate_phases(
            &mut s,
            &mut w,
            &origin,
            &limited,
            p.immigrate_bytes / page,
        )?)
    } else {
        s.phase("move to limited", |_| Ok(w.move_to(&limited)?))?;
        None
    };
    let mut timeline = Vec::new();
    // One residue reader for the whole timeline (the stock after every step).
    let mut stock_reader = Explainer::new(&s.hier, limited.clone())
        .ok()
        .map(Explainer::without_stat_file);
    let mut stock_bound = None;
    // 2. Page cache and tmpfs in the mix.
    // Both files go in private directories of the run (mode 0700, unguessable names): the
    // default places are shared, sticky directories (docs/security.md).
    let cache_file = FileGuard(
        p.cache_dir
            .as_ref()
            .map(|d| s.run.private_dir(d, "cache").map(|d| d.join("cache")))
            .transpose()?,
    );
    if let Some(f) = &cache_file.0 {
        let t = Instant::now();
        let c0 = counters(&limited);
        let rec = s.phase(format!("page cache {}", mib(p.page_cache_bytes)), |_| {
            w.write_file(f, p.page_cache_bytes)?;
            // Written back now, so that the pages are clean and reclaim can drop them at once.
            std::fs::File::open(f)?.sync_all()?;
            Ok(())
        });
        rec?;
        let (stock, _) = read_stock(&mut stock_reader);
        timeline.push(step_row(&s, &limited, 0, true, &c0, t, stock));
    }
    let tmpfs_file = FileGuard(
        (p.tmpfs_bytes > 0)
            .then(|| {
                s.run
                    .private_dir(Path::new(TMPFS_DIR), "tmpfs")
                    .map(|d| d.join("tmpfs"))
            })
            .transpose()?,
    );
    if let Some(f) = &tmpfs_file.0 {
        let t = Instant::now();
        let c0 = counters(&limited);
        s.phase(format!("tmpfs {}", mib(p.tmpfs_bytes)), |_| {
            Ok(w.write_file(f, p.tmpfs_bytes)?)
        })?;
        let (stock, _) = read_stock(&mut stock_reader);
        timeline.push(step_row(&s, &limited, 0, true, &c0, t, stock));
    }
    // 3. Growth.
    let mut grown = 0u64;
    let mut alive = true;
    let mut under_oom_after_ms = None;
    let mut released_by = None;
    let mut usage_when_blocked_bytes = None;
    while grown < p.grow_to_bytes && alive {
        let n = p.step_bytes.min(p.grow_to_bytes - grown);
        grown += n;
        let name = format!("grow +{} to {}", mib(n), mib(grown));
        let c0 = counters(&limited);
        let t = Instant::now();
        let r = s.phase(name, |_| {
            if !p.oom_disable {
                return Ok(w.touch(n / page)?);
            }
            let (blocked, rel, u) = touch_watching_under_oom(&mut w, &limited, n / page)?;
            under_oom_after_ms = blocked.or(under_oom_after_ms);
            usage_when_blocked_bytes = u.or(usage_when_blocked_bytes);
            released_by = rel.or(released_by.take());
            Ok(())
        });
        let completed = r.is_ok();
        if let Err(e) = &r {
            if !is_exited(e) {
                return Err(r.unwrap_err());
            }
            alive = false;
            // The victim's exit and the last ring-buffer records.
            std::thread::sleep(Duration::from_millis(200));
        }
        let (stock, bound) = read_stock(&mut stock_reader);
        stock_bound = stock_bound.or(bound);
        let mut row = step_row(&s, &limited, grown, completed, &c0, t, stock);
        if !completed {
            row.completed = false;
        }
        timeline.push(row);
        if released_by.is_some() {
            break;
        }
        if alive && p.interval_ms > 0 && grown < p.grow_to_bytes {
            std::thread::sleep(Duration::from_millis(p.interval_ms));
        }
    }
    let ledger_at_end = s.explain(&limited)?;
    // 4. Shrink.
    let shrink = match p.shrink_to_bytes {
        Some(to) if alive => {
            let (sh, still) = shrink_phase(&mut s, &limited, to)?;
            alive = still;
            Some(sh)
        }
        _ => None,
    };
    std::thread::sleep(Duration::from_millis(100));
    kmsg.drain();
    let c_end = counters(&limited);
    if alive {
        s.phase("exit", |_| {
            w.exit()?;
            Ok(())
        })?;
    } else {
        drop(w);
    }
    let kmsg_kills: Vec<KmsgKill> = parse_kmsg(&kmsg.lines)
        .into_iter()
        .filter(|k| k.pid == pid as u32)
        .collect();
    let kill_expected = !p.oom_disable
        && (p.grow_to_bytes + p.tmpfs_bytes > p.limit_bytes
            || shrink.as_ref().is_some_and(|s| s.predicted == "oom-kill"));
    let (oom_kills, rss_source, usage_source) =
        oom_kills(&s, hier, &limited, pid, &kmsg_kills, &timeline);
    let kill_counter = delta(c_start.oom_kill, c_end.oom_kill);
    let no_kill_reason = if oom_kills.is_empty() && kill_counter.unwrap_or(0) == 0 {
        Some(if p.oom_disable && under_oom_after_ms.is_some() {
            "no kill because oom_kill_disable: the workload slept in the fault (under_oom 1) until the limit was removed".to_string()
        } else if p.oom_disable {
            "no kill because oom_kill_disable (the workload never reached the limit)".to_string()
        } else if p.grow_to_bytes + p.tmpfs_bytes <= p.limit_bytes {
            format!(
                "no kill: the growth target {} stays within the limit {}",
                mib(p.grow_to_bytes),
                mib(p.limit_bytes)
            )
        } else {
            "no kill although the growth passed the limit (reclaim kept up?)".to_string()
        })
    } else {
        None
    };
    let results = Results {
        params: p.clone(),
        swap_total_bytes,
        workload_pid: pid,
        limited_path: limited.path().display().to_string(),
        origin_path: origin.path().display().to_string(),
        immigrate,
        timeline,
        oom: OomOutcome {
            kill_expected,
            kill_counter,
            kmsg: kmsg_kills,
            kmsg_error: kmsg.error.clone(),
            rss_source,
            usage_source,
            no_kill_reason,
            under_oom_after_ms,
            released_by,
            usage_when_blocked_bytes,
        },
        shrink,
        usage_at_kill_floor_bytes: floor,
        kernel_charge_batch: kb.pages,
        kernel_charge_batch_source: kb.source,
        stock_bound_pages: stock_bound,
    };
    let checks = checks(&results, &oom_kills, hier.version);
    let verdict = verdict(&results, &oom_kills, checks);
    let ledgers = vec![LedgerAt::new(
        "limited after the growth",
        "limited",
        &ledger_at_end,
    )];
    let params = serde_json::to_value(&p)?;
    let results = serde_json::to_value(&results)?;
    drop(cache_file);
    drop(tmpfs_file);
    s.finish(params, results, ledgers, oom_kills, verdict)
}

/// The stock of the limited cgroup now (pages) and the kernel's bound on it, from the residue
/// reader (no memory.stat read: that could flush what other checks watch).
fn read_stock(reader: &mut Option<Explainer>) -> (Option<i64>, Option<i64>) {
    let Some(r) = reader.as_mut().and_then(|ex| ex.report().ok()) else {
        return (None, None);
    };
    let stock = r.terms.iter().find(|t| t.term == "stock").map(|t| t.pages);
    let bound = r
        .gap
        .bounds
        .iter()
        .find(|b| b.0 == "stock")
        .map(|b| b.1.pages);
    (stock, bound)
}

fn step_row(
    s: &Session,
    cg: &MemCgroup,
    grown: u64,
    completed: bool,
    c0: &Counters,
    t: Instant,
    stock_pages: Option<i64>,
) -> Step {
    let c1 = counters(cg);
    let ph = s.phases().last();
    let ch = ph.map(|p| p.charge_total("limited")).unwrap_or_default();
    Step {
        phase: ph.map(|p| p.name.clone()).unwrap_or_default(),
        grown_bytes: grown,
        completed,
        usage_bytes: cg.usage_bytes().ok().flatten(),
        limit_bytes: cg.limit_bytes().ok().flatten(),
        peak_bytes: cg.peak_bytes().ok().flatten(),
        failcnt_delta: delta(c0.failcnt, c1.failcnt),
        high_events_delta: delta(c0.high, c1.high),
        oom_events_delta: delta(c0.oom, c1.oom),
        oom_kill_delta: delta(c0.oom_kill, c1.oom_kill),
        reclaim_rounds: ch.reclaim_rounds,
        reclaimed_pages: ch.reclaimed,
        file_bytes: stat_bytes(cg, "cache", "file"),
        anon_bytes: stat_bytes(cg, "rss", "anon"),
        shmem_bytes: stat_bytes(cg, "shmem", "shmem"),
        duration_ms: t.elapsed().as_secs_f64() * 1000.0,
        stock_pages,
    }
}

fn immigrate_phases(
    s: &mut Session,
    w: &mut Workload,
    origin: &MemCgroup,
    limited: &MemCgroup,
    pages: u64,
) -> Result<Immigrate> {
    let mcai = match limited.version() {
        CgroupVersion::V1 => limited
            .read_raw("memory.move_charge_at_immigrate")?
            .and_then(|t| t.trim().parse().ok()),
        CgroupVersion::V2 => None,
    };
    s.phase(format!("touch {pages} pages in origin"), |_| {
        Ok(w.touch(pages)?)
    })?;
    let upd = |s: &Session| {
        let ph = s.phases().last().expect("a phase");
        (
            ph.stat("origin", "NR_ANON_MAPPED").map_or(0, |r| r.total),
            ph.stat("limited", "NR_ANON_MAPPED").map_or(0, |r| r.total),
        )
    };
    let touch_anon_updates = upd(s);
    let o0 = s.explain(origin)?;
    let d0 = s.explain(limited)?;
    s.phase("move to limited", |_| Ok(w.move_to(limited)?))?;
    let move_anon_updates = upd(s);
    let o1 = s.explain(origin)?;
    let d1 = s.explain(limited)?;
    s.phase(
        format!("free the {pages} origin pages from limited"),
        |_| Ok(w.free_pages(pages)?),
    )?;
    let free_anon_updates = upd(s);
    let o2 = s.explain(origin)?;
    Ok(Immigrate {
        pages,
        move_charge_at_immigrate: mcai,
        touch_anon_updates,
        move_anon_updates,
        free_anon_updates,
        origin_charged_pages: (charged_pages(&o0), charged_pages(&o1), charged_pages(&o2)),
        dest_charged_pages: (charged_pages(&d0), charged_pages(&d1)),
        origin_anon_pages: (anon_exact_pages(&o0), anon_exact_pages(&o1)),
        origin_freed_in_lru_add: unmapped_in_batches(&o2) - unmapped_in_batches(&o1),
    })
}

/// Runs `touch` on a thread while watching `under_oom` (v1 with oom_kill_disable). When the
/// workload blocks in the fault, removes the limit so the fault can complete. Returns when
/// `under_oom` was seen (ms) and how the workload was released.
fn touch_watching_under_oom(
    w: &mut Workload,
    cg: &MemCgroup,
    pages: u64,
) -> Result<(Option<f64>, Option<String>, Option<u64>)> {
    let t = Instant::now();
    let mut seen = None;
    let mut usage = None;
    let mut released = None;
    let r = std::thread::scope(|sc| -> Result<()> {
        let h = sc.spawn(|| w.touch(pages));
        let mut since: Option<Instant> = None;
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if released.is_some() {
                continue;
            }
            let blocked = under_oom(cg) == Some(1);
            if blocked && seen.is_none() {
                seen = Some(t.elapsed().as_secs_f64() * 1000.0);
                since = Some(Instant::now());
            }
            // Keep it blocked a moment (it stays: nothing frees memory), then release.
            let held = since.is_some_and(|s| s.elapsed() > Duration::from_millis(500));
            if held || t.elapsed() > Duration::from_secs(60) {
                usage = cg.usage_bytes()?;
                cg.set_limit_bytes(None).context("removing the limit")?;
                released = Some(if held {
                    "limit removed while the workload was blocked (memcg1_oom_recover woke it)"
                        .to_string()
                } else {
                    "limit removed after 60 s without under_oom".to_string()
                });
            }
        }
        h.join()
            .map_err(|_| ExperimentError::Failed("the touch thread panicked".into()))??;
        Ok(())
    });
    r?;
    Ok((seen, released, usage))
}

fn shrink_phase(s: &mut Session, cg: &MemCgroup, to: u64) -> Result<(Shrink, bool)> {
    let page = s.page_size as i64;
    let before = s.explain(cg)?;
    // Anon pages on the LRU lists, and those still waiting in lru_add batches (up to
    // PAGEVEC_SIZE per CPU; reclaim drains the batches first and cannot free them either).
    let floor = term_pages(&before, "lru.inactive_anon")
        + term_pages(&before, "lru.active_anon")
        + term_pages(&before, "lru_add");
    let file = term_pages(&before, "lru.inactive_file") + term_pages(&before, "lru.active_file");
    let stock = term_pages(&before, "stock");
    let usage_pages = before.usage_bytes / page;
    let to_pages = (to / page as u64) as i64;
    // Reclaim leaves at least the anon LRU pages (no swap). At most it frees the file LRU and
    // the stock; a margin of 256 pages (1 MiB) covers kernel memory a reclaim may shrink.
    let v2 = cg.version() == CgroupVersion::V2;
    let predicted = if floor > to_pages {
        if v2 { "oom-kill" } else { "EBUSY" }
    } else if usage_pages - file - stock + 256 <= to_pages {
        "ok"
    } else {
        "undecided"
    }
    .to_string();
    let from = cg.limit_bytes()?;
    let c0 = counters(cg);
    let usage_before = cg.usage_bytes()?;
    let t = Instant::now();
    let mut res: Result<(), std::io::Error> = Ok(());
    s.phase(format!("shrink limit to {}", mib(to)), |_| {
        res = cg.set_limit_bytes(Some(to)).map_err(|e| match e {
            crate::cgroup::CgroupError::Io { source, .. } => source,
            e => std::io::Error::other(e.to_string()),
        });
        Ok(())
    })?;
    let duration_ms = t.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(200));
    let c1 = counters(cg);
    let alive = !cg.procs()?.is_empty();
    Ok((
        Shrink {
            from_bytes: from,
            to_bytes: to,
            usage_before_bytes: usage_before,
            unreclaimable_floor_pages: floor,
            file_pages: file,
            stock_pages: stock,
            predicted,
            write_ok: res.is_ok(),
            errno: res.as_ref().err().and_then(|e| e.raw_os_error()),
            error: res.as_ref().err().map(|e| e.to_string()),
            duration_ms,
            usage_after_bytes: cg.usage_bytes()?,
            limit_after_bytes: cg.limit_bytes()?,
            oom_kills: delta(c0.oom_kill, c1.oom_kill),
            workload_alive: alive,
        },
        alive,
    ))
}

/// The OOM kills of the workload: the probes' OOM rows say who and in which memcg; the kernel
/// log adds the victim's RSS and the memcg's usage as the OOM report printed them.
fn oom_kills(
    s: &Session,
    hier: &MemoryHierarchy,
    limited: &MemCgroup,
    pid: i32,
    kmsg: &[KmsgKill],
    timeline: &[Step],
) -> (Vec<OomKill>, String, String) {
    let mut out = Vec::new();
    let mut rss_src = Vec::new();
    let mut usage_src = Vec::new();
    let mut used_kmsg = 0;
    for ph in s.phases() {
        // One kill per victim: prefer `kill` rows (oom_kill_process, with the OOM's memcg),
        // else `victim` (oom:mark_victim).
        let kills: Vec<_> = ph.oom.iter().filter(|o| o.kind == "kill").collect();
        let rows = if kills.is_empty() {
            ph.oom.iter().filter(|o| o.kind == "victim").collect()
        } else {
            kills
        };
        for o in rows {
            let k = kmsg.get(used_kmsg).filter(|k| k.pid == o.pid);
            if k.is_some() {
                used_kmsg += 1;
            }
            let memcg_path = if o.cgroup.starts_with("(none") || o.cgroup.starts_with("cgroup id") {
                k.and_then(|k| k.oom_memcg.as_ref())
                    .map(|m| {
                        hier.root
                            .join(m.trim_start_matches('/'))
                            .display()
                            .to_string()
                    })
                    .unwrap_or_else(|| "unknown".into())
            } else if o.cgroup == "limited" {
                limited.path().display().to_string()
            } else if o.cgroup == "." {
                s.run.cgroup().path().display().to_string()
            } else {
                s.run.cgroup().path().join(&o.cgroup).display().to_string()
            };
            let (rss, rs) = match k.and_then(|k| k.rss_kib) {
                Some((a, f, sh)) => (
                    Some((a + f + sh) * 1024),
                    "kernel log (`Killed process ... anon-rss/file-rss/shmem-rss`, mm/oom_kill.c __oom_kill_process)",
                ),
                None if o.pid == pid as u32 => (
                    Some(touched(timeline)),
                    "estimate: anonymous bytes the workload had touched in limited (kernel log line missing)",
                ),
                None => (None, "unknown"),
            };
            let (usage, us) = match k.and_then(|k| k.usage_kib) {
                Some(u) => (
                    Some(u * 1024),
                    "kernel log (`memory: usage` of the OOM report, mm/memcontrol.c mem_cgroup_print_oom_meminfo)",
                ),
                None => (
                    limited.peak_bytes().ok().flatten(),
                    "peak usage of the cgroup (memory.max_usage_in_bytes / memory.peak): the OOM report was rate-limited or unreadable",
                ),
            };
            rss_src.push(rs);
            usage_src.push(us);
            out.push(OomKill {
                victim_pid: o.pid,
                victim_comm: o.comm.clone(),
                victim_rss_bytes: rss,
                memcg_path,
                usage_at_kill_bytes: usage,
                phase: ph.name.clone(),
            });
        }
    }
    // The probes saw nothing (e.g. no OOM hook here) but the kernel log did.
    if out.is_empty() {
        for k in kmsg {
            out.push(OomKill {
                victim_pid: k.pid,
                victim_comm: k.comm.clone(),
                victim_rss_bytes: k.rss_kib.map(|(a, f, s)| (a + f + s) * 1024),
                memcg_path: k
                    .oom_memcg
                    .as_ref()
                    .map(|m| {
                        hier.root
                            .join(m.trim_start_matches('/'))
                            .display()
                            .to_string()
                    })
                    .unwrap_or_else(|| "unknown".into()),
                usage_at_kill_bytes: k.usage_kib.map(|u| u * 1024),
                phase: "(from the kernel log)".into(),
            });
            rss_src.push("kernel log");
            usage_src.push("kernel log");
        }
    }
    rss_src.dedup();
    usage_src.dedup();
    let join = |v: Vec<&str>| {
        if v.is_empty() {
            "no kill".to_string()
        } else {
            v.join("; ")
        }
    };
    (out, join(rss_src), join(usage_src))
}
