//! `run swap` (seed 001's process "limited but never OOM-killed", seed 002 §9.8 case B; issue
//! 13): why a workload past its memory limit is not killed when swap is on, and when it is.
//!
//! 1. **Grow with swap.** A workload in the child cgroup `s` (memory limit `--limit`, swap
//!    unlimited), pinned to `--cpu`, touches anonymous memory up to `--grow-to` in `--steps`
//!    steps. Past the limit the charge of each new page fails, reclaim runs
//!    (`try_charge_memcg` -> `try_to_free_mem_cgroup_pages`), and the only memory of the cgroup
//!    it can reclaim is anonymous: it swaps pages out (`__mem_cgroup_try_charge_swap` /
//!    `memcg1_swapout` move them from the memory counter to the swap one), the charge then
//!    fits, and nobody is killed. After each step the run reads the memory and swap counters,
//!    the limit hits (v2 `memory.events` `max`, v1 `memory.failcnt`), the kills, and the
//!    workload's own `RssAnon` and `VmSwap`; at the end, an `explain` ledger closes the memory
//!    book and the swap book to the page.
//! 2. **Limit swap.** The swap the cgroup may use is capped (`--swap-max`, default: what it
//!    holds now; v2 `memory.swap.max`, v1 `memory.memsw.limit_in_bytes` = limit + that) and
//!    the workload touches `--grow-to` more. Reclaim can no longer swap (v2: the swap charge
//!    fails; v1: swapping does not lower memsw), the charge fails for good, and the OOM killer
//!    kills the workload: exactly one kill, counted by the cgroup (`oom_kill`).
//!
//! The run refuses without a swap device (`/proc/swaps` lists none: the tool never enables
//! swap on a machine itself) and when the free swap is smaller than what step 1 puts there.
//!
//! Between 1 and 2, the workload reads every page it grew once more (`reread`): the pages in
//! swap come back (swap-ins, major faults, refaults) and push others out; it is slowed, not
//! killed. After each step the run also reads the cgroup's memory.stat events where the kernel
//! has them (`pswpout`, `pswpin`, `workingset_refault_anon`, `pgscan`, `pgsteal`,
//! `pgmajfault`) and the workload's own fault counts (`/proc/PID/stat`).
//!
//! 3. **`--swapoff`** (seed 002 §9.7, [`swapoff`]): a removed cgroup's anon and tmpfs pages in
//!    swap, then `swapoff` from another cgroup: to whom the pages are charged, measured. It turns
//!    the machine's swap devices off and on again, so it is opt-in and refused where the swapped
//!    pages would not fit in memory.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

mod space;
mod swapoff;

pub use space::{SwapDevice, SwapSpace};

use super::{Check, Common, LedgerAt, OomKill, Report, Verdict};
use crate::experiment::{Context as _, ExperimentError, Result, refuse};
use crate::{
    cgroup::{MemCgroup, MemoryHierarchy},
    workload::{Workload, WorkloadError, faults, workload_binary},
};

/// Most steps of one phase.
pub const MAX_STEPS: u64 = 64;

/// Options of `run swap`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// The memory limit of `s`, bytes.
    pub limit: u64,
    /// Anonymous memory the workload grows to in phase 1 (and touches again in phase 2), bytes.
    pub grow_to: u64,
    /// The swap cap of phase 2, bytes (`None`: what the cgroup holds in swap then).
    pub swap_max: Option<u64>,
    /// Steps per phase.
    pub steps: u64,
    /// The workload's CPU.
    pub cpu: usize,
    /// Run the swapoff phase (records made before it existed have none).
    #[serde(default)]
    pub swapoff: bool,
}

/// Checks the options (before anything is created).
pub fn validate(p: &Params, page: u64) -> Result<()> {
    if p.limit < (4 << 20) {
        refuse!("--limit must be at least 4M");
    }
    if p.grow_to <= p.limit {
        refuse!(
            "--grow-to ({} bytes) must be above --limit ({} bytes): the point is to pass it",
            p.grow_to,
            p.limit
        );
    }
    if p.grow_to > (4 << 30) {
        refuse!("--grow-to must be at most 4G");
    }
    if p.steps == 0 || p.steps > MAX_STEPS {
        refuse!("--steps must be 1 to {MAX_STEPS}");
    }
    if p.swap_max.is_some_and(|m| m % page != 0) {
        refuse!("--swap-max must be a whole number of pages ({page} bytes)");
    }
    Ok(())
}

/// The counters after one step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// `grow` (phase 1), `reread` (between the phases) or `limited` (phase 2).
    pub phase: String,
    /// Pages the workload had touched in the phase so far.
    pub pages: u64,
    /// Memory counter (`memory.current` / `memory.usage_in_bytes`), bytes.
    pub usage_bytes: u64,
    /// Swap counter (v2 `memory.swap.current`, v1 memsw - memory), bytes.
    pub swap_bytes: Option<u64>,
    /// The workload's `RssAnon` (`/proc/PID/status`), bytes; `None` once it is gone.
    pub rss_anon_bytes: Option<u64>,
    /// The workload's `VmSwap`, bytes.
    pub vm_swap_bytes: Option<u64>,
    /// Times the memory limit was hit since the run started (v2 `max` events, v1 failcnt).
    pub limit_hits: Option<u64>,
    /// OOM kills in the cgroup since the run started.
    pub oom_kills: Option<u64>,
    /// The workload's minor and major faults since the run started (`/proc/PID/stat`).
    #[serde(default)]
    pub faults: Option<(u64, u64)>,
    /// memory.stat events of the cgroup since the run started, those of [`STAT_EVENTS`] this
    /// kernel has.
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
}

/// memory.stat events a step reports where the kernel has them: swap-outs and swap-ins (v2,
/// 6.x), refaults of anonymous pages (v2 5.9+), reclaim scanned and stolen (v2), major faults.
pub const STAT_EVENTS: [&str; 6] = [
    "pswpout",
    "pswpin",
    "workingset_refault_anon",
    "pgscan",
    "pgsteal",
    "pgmajfault",
];

/// The reread between the phases: every grown page read once more.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reread {
    /// Pages read.
    pub pages: u64,
    /// Pages not mapped before it (grown − `RssAnon`): each must fault at least once.
    pub not_resident_pages: u64,
    /// Minor and major faults it took.
    pub faults: (u64, u64),
    /// The workload survived it.
    pub alive: bool,
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// Page size, bytes.
    pub page_size: u64,
    /// Free swap of the machine before the run, bytes.
    pub swap_free_bytes: u64,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The workload was alive at the end of phase 1.
    pub alive_after_grow: bool,
    /// Pages in swap at the end of phase 1 (the swap counter).
    pub swapped_pages: u64,
    /// The swap book's unexplained pages then (`None`: no swap book on this kernel).
    pub swap_unexplained_pages: Option<i64>,
    /// The memory ledger's unexplained pages then.
    pub memory_unexplained_pages: i64,
    /// The swap cap of phase 2, bytes.
    pub swap_max_bytes: u64,
    /// How the workload ended in phase 2 (`None`: it survived).
    pub killed: Option<String>,
    /// OOM kills counted by the cgroup during phase 2.
    pub oom_kills_limited: Option<u64>,
    /// The reread after growing (`None` in records made before it existed).
    #[serde(default)]
    pub reread: Option<Reread>,
    /// The swapoff phase (`--swapoff`).
    #[serde(default)]
    pub swapoff: Option<swapoff::Outcome>,
}

/// The [`STAT_EVENTS`] of `cg` this kernel has.
fn stat_events(cg: &MemCgroup) -> BTreeMap<String, u64> {
    let st = cg.stat().ok().flatten();
    STAT_EVENTS
        .iter()
        .filter_map(|k| Some((k.to_string(), st.as_ref()?.get(k)?)))
        .collect()
}

/// What a step compares against: the counts when the workload started.
struct Base {
    limit_hits: u64,
    oom_kills: u64,
    faults: Option<(u64, u64)>,
    events: BTreeMap<String, u64>,
}

/// `RssAnon` and `VmSwap` of `pid`, bytes.
fn rss_swap(pid: i32) -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (None, None);
    };
    let kb = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.trim().trim_end_matches("kB").trim();
            v.parse::<u64>().ok().map(|k| k * 1024)
        })
    };
    (kb("RssAnon:"), kb("VmSwap:"))
}

/// Reads the counters of `cg` after a step.
fn step(cg: &MemCgroup, phase: &str, pages: u64, pid: i32, base: &Base) -> Step {
    let ev = cg.events().ok().flatten();
    let (rss, swap) = rss_swap(pid);
    Step {
        phase: phase.into(),
        pages,
        usage_bytes: cg.usage_bytes().ok().flatten().unwrap_or(0),
        swap_bytes: cg.swap_usage_bytes().ok().flatten(),
        rss_anon_bytes: rss,
        vm_swap_bytes: swap,
        limit_hits: cg
            .failcnt()
            .ok()
            .flatten()
            .map(|f| f.saturating_sub(base.limit_hits)),
        oom_kills: ev
            .and_then(|e| e.get("oom_kill"))
            .map(|k| k.saturating_sub(base.oom_kills)),
        faults: faults(pid)
            .zip(base.faults)
            .map(|(a, b)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))),
        events: stat_events(cg)
            .into_iter()
            .map(|(k, v)| {
                let b = base.events.get(&k).copied().unwrap_or(0);
                (k, v.saturating_sub(b))
            })
            .collect(),
    }
}

/// Reads every grown page once more: swapped pages come back and push others out.
fn reread_phase(
    s: &mut super::Session,
    w: &mut Workload,
    cg: &MemCgroup,
    grow_pages: u64,
    base: &Base,
    steps: &mut Vec<Step>,
) -> Result<Reread> {
    let pid = w.pid();
    let page = s.page_size;
    let resident = rss_swap(pid).0.unwrap_or(0) / page;
    let f0 = faults(pid);
    let r = s.phase(format!("reread the {grow_pages} pages"), |_| {
        Ok(w.retouch()?)
    });
    let f1 = faults(pid);
    let alive = match &r {
        Ok(_) => true,
        Err(e) if is_exited(e).is_some() => false,
        Err(_) => return Err(r.unwrap_err()),
    };
    steps.push(step(cg, "reread", grow_pages, pid, base));
    Ok(Reread {
        pages: *r.as_ref().unwrap_or(&0),
        not_resident_pages: grow_pages.saturating_sub(resident),
        faults: match (f0, f1) {
            (Some(a), Some(b)) => (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)),
            _ => (0, 0),
        },
        alive,
    })
}

fn is_exited(e: &ExperimentError) -> Option<String> {
    match e.workload() {
        Some(WorkloadError::Exited { status, .. }) => Some(status.clone()),
        _ => None,
    }
}

/// Runs the experiment.
pub fn run(hier: &MemoryHierarchy, p: Params, common: &Common) -> Result<Report> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    validate(&p, page)?;
    if !super::online_cpus().contains(&p.cpu) {
        refuse!("--cpu {} is not an online CPU", p.cpu);
    }
    let space = SwapSpace::read()?;
    // Phase 1 puts everything past the limit in swap; a slack of 1/8 for what reclaim
    // swaps beyond that.
    space.check((p.grow_to - p.limit) + p.grow_to / 8)?;
    if let Some(m) = p.swap_max
        && m > space.total_bytes
    {
        refuse!(
            "--swap-max ({} MiB) is more than the machine's swap ({} MiB)",
            m >> 20,
            space.total_bytes >> 20
        );
    }
    // The swapoff phase's tmpfs file (half the limit) and growth, all back in memory after
    // swapoff, beside what the dying cgroup keeps (up to the limit).
    let back = p.grow_to + p.limit / 2;
    if p.swapoff {
        swapoff::check_room(&space, back)?;
    }
    let grow_pages = p.grow_to.div_ceil(page);
    let per_step = grow_pages.div_ceil(p.steps);
    // What stays in memory is bounded by the limit; a RAM-backed swap device (zram) may hold
    // the rest in RAM too.
    let worst = if p.swapoff {
        back + p.limit + (32 << 20)
    } else {
        p.grow_to + p.limit
    };
    let mut s = super::Session::start(hier, "swap", worst, 5, common)?;
    s.expect_phases(if p.swapoff { 11 } else { 5 });
    let tmpfs = if p.swapoff {
        let scratch = s.run.scratch()?.to_path_buf();
        Some(super::tmpfs::scratch_tmpfs(&scratch, back)?)
    } else {
        None
    };
    let cg = s.child("s")?;
    cg.set_limit_bytes(Some(p.limit))
        .context("setting the memory limit of s")?;
    let bin = workload_binary();
    let mut w = s.phase("start in s", |_| Ok(Workload::spawn(&bin, &cg, p.cpu)?))?;
    // Swapping under emulation (the QEMU guests) is slow.
    w.set_timeout(std::time::Duration::from_secs(300));
    let pid = w.pid();
    let ev = cg.events().ok().flatten();
    let base = Base {
        limit_hits: cg.failcnt().ok().flatten().unwrap_or(0),
        oom_kills: ev.and_then(|e| e.get("oom_kill")).unwrap_or(0),
        faults: faults(pid),
        events: stat_events(&cg),
    };
    let mut steps = Vec::new();
    let grow = s.phase(
        format!(
            "grow to {grow_pages} pages past a {} MiB limit",
            p.limit >> 20
        ),
        |_| {
            let mut done = 0;
            while done < grow_pages {
                let n = per_step.min(grow_pages - done);
                w.touch(n)?;
                done += n;
                steps.push(step(&cg, "grow", done, pid, &base));
            }
            Ok(())
        },
    );
    let alive_after_grow = grow.is_ok();
    if let Err(e) = &grow
        && is_exited(e).is_none()
    {
        return Err(grow.unwrap_err());
    }
    let r = s.explain(&cg)?;
    let ledgers = vec![LedgerAt::new("after growing past the limit", "s", &r)];
    let swapped_pages = cg.swap_usage_bytes()?.unwrap_or(0) / page;
    let reread = if alive_after_grow {
        Some(reread_phase(
            &mut s, &mut w, &cg, grow_pages, &base, &mut steps,
        )?)
    } else {
        None
    };
    let alive = reread.as_ref().is_some_and(|r| r.alive);
    // Default cap: what the cgroup holds in swap now.
    let swap_max = match p.swap_max {
        Some(m) => m,
        None => cg.swap_usage_bytes()?.unwrap_or(0),
    };
    let mut killed = None;
    let kills_before = cg.events().ok().flatten().and_then(|e| e.get("oom_kill"));
    if alive {
        cg.set_swap_limit_bytes(swap_max)
            .context("limiting the swap of s")?;
        s.phase(
            format!(
                "limit swap to {} MiB, touch {grow_pages} more",
                swap_max >> 20
            ),
            |_| {
                let mut done = 0;
                while done < grow_pages {
                    let n = per_step.min(grow_pages - done);
                    match w.touch(n) {
                        Ok(()) => {}
                        Err(WorkloadError::Exited { status, .. }) => {
                            killed = Some(status);
                            steps.push(step(&cg, "limited", done + n, pid, &base));
                            return Ok(());
                        }
                        Err(e) => return Err(e.into()),
                    }
                    done += n;
                    steps.push(step(&cg, "limited", done, pid, &base));
                }
                Ok(())
            },
        )?;
    }
    let kills_after = cg.events().ok().flatten().and_then(|e| e.get("oom_kill"));
    s.phase("exit", |_| {
        if killed.is_none() && alive {
            w.exit()?;
        }
        Ok(())
    })?;
    let mut ledgers = ledgers;
    let swapoff = match &tmpfs {
        Some((dir, _, where_)) => {
            let (o, l) = swapoff::run(&mut s, &p, page, dir, where_.clone())?;
            ledgers.extend(l);
            Some(o)
        }
        None => None,
    };
    if let Some((_, Some(mut m), _)) = tmpfs {
        m.unmount()?;
    }
    let results = Results {
        params: p.clone(),
        page_size: page,
        swap_free_bytes: space.free_bytes,
        steps,
        alive_after_grow,
        swapped_pages,
        swap_unexplained_pages: r.swap.as_ref().map(|b| b.unexplained_pages),
        memory_unexplained_pages: r.unexplained_pages,
        swap_max_bytes: swap_max,
        killed,
        oom_kills_limited: match (kills_before, kills_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        reread,
        swapoff,
    };
    let kills = oom_kills(&s, &cg, pid, &results);
    let off_ledger = ledgers
        .iter()
        .find(|l| l.cgroup == "off")
        .map(|l| l.unexplained_pages);
    let checks = checks(&results, off_ledger);
    let verdict = verdict(&results, checks);
    s.finish(
        serde_json::to_value(&p)?,
        serde_json::to_value(&results)?,
        ledgers,
        kills,
        verdict,
    )
}

/// The kill of the capped phase: the OOM probes' record of it (`oom_kill_process`, or
/// `oom:mark_victim`) where they attached, else what the run saw (the workload, alone in `s`,
/// killed by signal 9 while the cgroup counted an `oom_kill`).
fn oom_kills(s: &super::Session, cg: &MemCgroup, pid: i32, r: &Results) -> Vec<OomKill> {
    let Some(phase) = s
        .phases()
        .iter()
        .find(|ph| ph.name.starts_with("limit swap"))
    else {
        return Vec::new();
    };
    let rss = r.steps.iter().rev().find_map(|st| st.rss_anon_bytes);
    let usage = r
        .steps
        .iter()
        .rfind(|st| st.phase == "limited")
        .map(|st| st.usage_bytes);
    let kill = |victim_pid: u32, comm: String| OomKill {
        victim_pid,
        victim_comm: comm,
        victim_rss_bytes: rss,
        memcg_path: cg.path().display().to_string(),
        usage_at_kill_bytes: usage,
        phase: phase.name.clone(),
    };
    let probed: Vec<OomKill> = ["kill", "victim"]
        .iter()
        .map(|k| {
            phase
                .oom
                .iter()
                .filter(|o| o.kind == *k)
                .map(|o| kill(o.pid, o.comm.clone()))
                .collect::<Vec<_>>()
        })
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    if !probed.is_empty() {
        return probed;
    }
    match (&r.killed, r.oom_kills_limited) {
        (Some(_), Some(n)) if n > 0 => vec![kill(pid as u32, "memcg-drift".into())],
        _ => Vec::new(),
    }
}

fn checks(r: &Results, off_ledger: Option<i64>) -> Vec<Check> {
    let page = r.page_size;
    let grow_pages = r.params.grow_to.div_ceil(page);
    let limit_pages = r.params.limit / page;
    let grow: Vec<&Step> = r.steps.iter().filter(|s| s.phase == "grow").collect();
    let peak = grow.iter().map(|s| s.usage_bytes).max().unwrap_or(0);
    let kills_grow = grow.last().and_then(|s| s.oom_kills);
    let mut out = vec![
        Check::rule(
            "not killed while growing past the limit with swap",
            "alive, 0 OOM kills".into(),
            format!(
                "{}, {} OOM kills",
                if r.alive_after_grow {
                    "alive"
                } else {
                    "killed"
                },
                kills_grow.map_or("?".into(), |k| k.to_string())
            ),
            r.alive_after_grow && kills_grow == Some(0),
        ),
        Check::rule(
            "the memory counter stays at or under the limit",
            format!("<= {} bytes", r.params.limit),
            format!("peak {peak} bytes after a step"),
            peak <= r.params.limit,
        ),
        Check::rule(
            "every page past the limit is in swap",
            format!(
                ">= {} pages (grown {grow_pages} - limit {limit_pages})",
                grow_pages - limit_pages
            ),
            format!("{} pages in the swap counter", r.swapped_pages),
            r.swapped_pages >= grow_pages - limit_pages,
        ),
        Check::eq(
            "the memory ledger closes after growing (unexplained pages)",
            0,
            r.memory_unexplained_pages,
        ),
        Check::rule(
            "the swap book closes after growing (unexplained pages)",
            "0".into(),
            r.swap_unexplained_pages
                .map_or("no swap book".into(), |u| u.to_string()),
            r.swap_unexplained_pages == Some(0),
        ),
        Check::rule(
            "killed once swap is limited",
            "the workload killed by signal 9 (SIGKILL), 1 OOM kill counted by the cgroup".into(),
            format!(
                "{}, {} OOM kills",
                r.killed.as_deref().unwrap_or("not killed"),
                r.oom_kills_limited.map_or("?".into(), |k| k.to_string())
            ),
            r.killed.as_deref() == Some("killed by signal 9") && r.oom_kills_limited == Some(1),
        ),
    ];
    if let Some(rr) = &r.reread {
        // Each page not mapped when the reread starts faults at least once (major where it is
        // read from swap, minor where the swap cache still holds it).
        out.insert(
            5,
            Check::rule(
                "rereading: not killed, and every page out of memory faults back in",
                format!(
                    "alive, >= {} faults (grown - RssAnon pages)",
                    rr.not_resident_pages
                ),
                format!(
                    "{}, {} minor + {} major faults",
                    if rr.alive { "alive" } else { "killed" },
                    rr.faults.0,
                    rr.faults.1
                ),
                rr.alive && rr.faults.0 + rr.faults.1 >= rr.not_resident_pages,
            ),
        );
    }
    if let Some(o) = &r.swapoff {
        out.extend(swapoff::checks(o, page, off_ledger));
    }
    out
}

fn verdict(r: &Results, checks: Vec<Check>) -> Verdict {
    let page = r.page_size;
    let last_grow = r.steps.iter().rfind(|s| s.phase == "grow");
    let summary = format!(
        "A workload grew to {} MiB of anonymous memory under a {} MiB limit and was {}: the \
         kernel swapped {} pages ({} MiB) out instead (limit hit {} times; the process saw \
         RssAnon {} MiB, VmSwap {} MiB). With its swap capped at {} MiB it was {} ({} OOM \
         kill(s) counted by the cgroup).",
        r.params.grow_to >> 20,
        r.params.limit >> 20,
        if r.alive_after_grow {
            "not killed"
        } else {
            "killed"
        },
        r.swapped_pages,
        (r.swapped_pages * page) >> 20,
        last_grow
            .and_then(|s| s.limit_hits)
            .map_or("?".into(), |h| h.to_string()),
        last_grow
            .and_then(|s| s.rss_anon_bytes)
            .map_or("?".into(), |b| (b >> 20).to_string()),
        last_grow
            .and_then(|s| s.vm_swap_bytes)
            .map_or("?".into(), |b| (b >> 20).to_string()),
        r.swap_max_bytes >> 20,
        r.killed
            .as_deref()
            .map_or("not killed".to_string(), |k| format!("killed ({k})")),
        r.oom_kills_limited.map_or("?".into(), |k| k.to_string()),
    );
    let mut summary = summary;
    if let Some(rr) = &r.reread {
        let last = r.steps.iter().rfind(|s| s.phase == "reread");
        let ev = |k: &str| {
            last.and_then(|s| s.events.get(k))
                .map_or("?".to_string(), |v| v.to_string())
        };
        let _ = write!(
            summary,
            " Reading its memory again, {} pages out of memory came back in {} major and {}              minor faults (since the start: {} swap-ins, {} anon refaults by memory.stat): it              was {}.",
            rr.not_resident_pages,
            rr.faults.1,
            rr.faults.0,
            ev("pswpin"),
            ev("workingset_refault_anon"),
            if rr.alive {
                "slowed, not killed"
            } else {
                "killed"
            }
        );
    }
    if let Some(o) = &r.swapoff {
        summary.push(' ');
        summary.push_str(&swapoff::summary(o, page));
    }
    Verdict::judged(
        "limited but not killed: the kernel swapped instead",
        summary,
        checks,
    )
}

/// `run swap` in the experiment registry.
pub struct Swap;

impl super::Experiment for Swap {
    const NAMES: &'static [&'static str] = &["swap"];
    type Results = Results;
    fn render(_r: &Report, res: &Results) -> Result<String> {
        render(res)
    }
}

/// The text section of a swap report.
fn render(res: &Results) -> Result<String> {
    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "swap: limit {} MiB, grow to {} MiB in {} steps, CPU {}; {} MiB of swap free",
        res.params.limit >> 20,
        res.params.grow_to >> 20,
        res.params.steps,
        res.params.cpu,
        res.swap_free_bytes >> 20
    );
    // HITS: limit hits, each a round of direct reclaim; SWPOUT/SWPIN/REFAULT: memory.stat
    // events ("-" where this kernel's memory.stat has none); MAJFLT: the workload's own.
    let _ = writeln!(
        out,
        "  {:<8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>5} {:>7} {:>7} {:>7} {:>7}",
        "PHASE",
        "PAGES",
        "USAGE MiB",
        "SWAP MiB",
        "RSSANON",
        "VMSWAP",
        "HITS",
        "KILLS",
        "SWPOUT",
        "SWPIN",
        "REFAULT",
        "MAJFLT"
    );
    for s in &res.steps {
        let ev = |k: &str| s.events.get(k).map_or("-".into(), |v| v.to_string());
        let _ = writeln!(
            out,
            "  {:<8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>5} {:>7} {:>7} {:>7} {:>7}",
            s.phase,
            s.pages,
            mib(Some(s.usage_bytes)),
            mib(s.swap_bytes),
            mib(s.rss_anon_bytes),
            mib(s.vm_swap_bytes),
            s.limit_hits.map_or("-".into(), |h| h.to_string()),
            s.oom_kills.map_or("-".into(), |k| k.to_string()),
            ev("pswpout"),
            ev("pswpin"),
            ev("workingset_refault_anon"),
            s.faults.map_or("-".into(), |f| f.1.to_string()),
        );
    }
    if let Some(o) = &res.swapoff {
        out.push_str(&swapoff::render(o, res.page_size));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
