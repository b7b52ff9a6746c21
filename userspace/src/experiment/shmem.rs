//! `run shmem` (seeds 001, 002): tmpfs pages written from inside a cgroup, then the writer moves
//! out: who stays charged, and how memory.stat files the pages (shmem, file) next to anonymous
//! memory.
//!
//! A workload in child `a` touches `--anon-pages K` anonymous pages and writes `--pages N` pages
//! to a tmpfs file; it is moved to sibling `b` (`cgroup.procs`), writes N pages to a second file
//! and touches K pages again; then the first file is removed, the workload exits, and the second
//! file is removed.
//!
//! The kernel's rules (6.18 mm/shmem.c, mm/filemap.c, mm/memcontrol.c; 6.1/6.12 the same):
//! - a tmpfs page is charged when it enters the file's page cache, to the memcg of the task
//!   that allocates it (`shmem_alloc_and_add_folio` -> `mem_cgroup_charge`), and counted as
//!   NR_FILE_PAGES and NR_SHMEM (`__lruvec_stat_mod_folio` in `shmem_add_to_page_cache`) on
//!   the CPU doing it: +N each in the write phase, on the writer's CPU. It lives on the
//!   swap-backed (anon) LRU lists, which is why v2's `file` and `shmem` include it while
//!   `anon` does not;
//! - moving a task never moves its charges (v2 has no charge moving; v1 only with
//!   `memory.move_charge_at_immigrate`, which this run leaves at 0): `a` keeps the tmpfs and
//!   the anon pages charged before the move, `b` gains nothing from the move itself; pages
//!   allocated afterwards are charged to `b`;
//! - the charge follows the page, not the file or the task: removing the file (by anyone)
//!   uncharges its pages from `a` (`filemap_unaccount_folio`, then the folio's free ->
//!   `uncharge_batch` straight to the page_counter), except pages a per-CPU lru_add batch still
//!   holds (freed when the batch drains); the anon pages are uncharged from `a` when the
//!   workload, now in `b`, exits;
//! - a charge stock slot may be drained at any time by another memcg's charge on the same CPU
//!   (one slot per CPU before 6.16): comparisons of `a`'s charge use usage − stock.
//!
//! The tmpfs: the run's scratch dir if it is on tmpfs (the QEMU guests' /run), otherwise a
//! private tmpfs (`huge=never`) mounted under it in a mount namespace of the run's thread, so it
//! is unmounted on every exit path (explicitly at the end, and by the kernel when the process
//! dies, even by SIGKILL); outside the namespace the directory stays an empty directory.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{
    Check, Common, LedgerAt, Report, Session, Verdict,
    kmem::{Snapshot, Step},
};
use crate::experiment::{Context as _, Result, refuse};
use crate::{
    cgroup::MemoryHierarchy,
    explain::Explainer,
    workload::{Workload, workload_binary},
};

/// Phase names.
pub const TOUCH_A: &str = "touch anon in a";
/// Phase names.
pub const WRITE_A: &str = "write tmpfs in a";
/// Phase names.
pub const MOVE: &str = "move the writer to b";
/// Phase names.
pub const WRITE_B: &str = "write tmpfs in b";
/// Phase names.
pub const TOUCH_B: &str = "touch anon in b";
/// Phase names.
pub const REMOVE_A: &str = "remove the file written in a";
/// Phase names.
pub const EXIT: &str = "workload exits (in b)";
/// Phase names.
pub const REMOVE_B: &str = "remove the file written in b";

/// Options of `run shmem`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// tmpfs pages written in each cgroup.
    pub pages: u64,
    /// Anonymous pages touched in each cgroup.
    pub anon_pages: u64,
    /// CPU of the workload.
    pub cpu: usize,
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// Where the files were: `scratch dir on tmpfs` or `private tmpfs mounted ...`.
    pub tmpfs: String,
    /// Snapshots of `a` and `b` after each phase (`a`/`b` + phase).
    pub snapshots: Vec<(Snapshot, Snapshot)>,
    /// What each phase moved in `a` and in `b`.
    pub steps: Vec<(Step, Step)>,
    /// NR_SHMEM and NR_FILE_PAGES the probes saw on the writer's CPU in the two write
    /// phases, per cgroup: (phase, cgroup, item, on the writer's CPU, on all CPUs).
    pub writes: Vec<(String, String, String, i64, i64)>,
}

/// Validates the options (before anything is created).
pub fn validate(p: &Params) -> Result<()> {
    if p.pages == 0 || p.pages > 1 << 18 {
        refuse!("--pages must be 1..=262144");
    }
    if p.anon_pages == 0 || p.anon_pages > 1 << 18 {
        refuse!("--anon-pages must be 1..=262144");
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
    let worst = (32 << 20) + 2 * (p.pages + p.anon_pages) * page;
    let mut s = Session::start(hier, "shmem", worst, 4, common)?;
    s.expect_phases(9);
    let a = s.child("a")?;
    let b = s.child("b")?;
    let scratch = s.run.scratch()?.to_path_buf();
    let (dir, mut private, tmpfs) = super::tmpfs::scratch_tmpfs(&scratch, worst)?;
    let f1 = dir.join("written-in-a");
    let f2 = dir.join("written-in-b");
    let bin = workload_binary();
    let mut w = s.phase("start in a", |_| Ok(Workload::spawn(&bin, &a, p.cpu)?))?;
    let mut snaps: Vec<(Snapshot, Snapshot)> = Vec::new();
    let mut steps: Vec<(Step, Step)> = Vec::new();
    let mut ledgers = Vec::new();
    let mut ex_a = Explainer::new(hier, a.clone())?;
    let mut ex_b = Explainer::new(hier, b.clone())?;
    let mut take = |_: &Session, label: &str| -> Result<_> {
        let (sa, ra) = Snapshot::take(&mut ex_a, &a, &format!("a {label}"))?;
        let (sb, rb) = Snapshot::take(&mut ex_b, &b, &format!("b {label}"))?;
        Ok(((sa, sb), (ra, rb)))
    };
    let (first, _) = take(&s, "before")?;
    snaps.push(first);
    let bytes = p.pages * page;
    let mut go = |s: &mut Session,
                  name: &str,
                  f: &mut dyn FnMut(&mut Workload) -> Result<()>,
                  w: &mut Workload,
                  ledger: bool|
     -> Result<()> {
        s.phase(name, |_| f(w))?;
        let (now, (ra, rb)) = take(s, &format!("after {name}"))?;
        let prev = snaps.last().expect("first snapshot");
        steps.push((
            Step::between(s, name, "a", &prev.0, &now.0),
            Step::between(s, name, "b", &prev.1, &now.1),
        ));
        if ledger {
            ledgers.push(LedgerAt::new(&format!("after {name}"), "a", &ra));
            ledgers.push(LedgerAt::new(&format!("after {name}"), "b", &rb));
        }
        snaps.push(now);
        Ok(())
    };
    go(
        &mut s,
        TOUCH_A,
        &mut |w| Ok(w.touch(p.anon_pages)?),
        &mut w,
        false,
    )?;
    go(
        &mut s,
        WRITE_A,
        &mut |w| {
            w.write_file(&f1, bytes)?;
            Ok(())
        },
        &mut w,
        false,
    )?;
    go(&mut s, MOVE, &mut |w| Ok(w.move_to(&b)?), &mut w, true)?;
    go(
        &mut s,
        WRITE_B,
        &mut |w| {
            w.write_file(&f2, bytes)?;
            Ok(())
        },
        &mut w,
        false,
    )?;
    go(
        &mut s,
        TOUCH_B,
        &mut |w| Ok(w.touch(p.anon_pages)?),
        &mut w,
        true,
    )?;
    go(
        &mut s,
        REMOVE_A,
        &mut |_| std::fs::remove_file(&f1).with_context(|| f1.display().to_string()),
        &mut w,
        true,
    )?;
    let mut wopt = Some(w);
    // The exit consumes the workload: run it inside a phase and record like the others.
    {
        s.phase(EXIT, |_| {
            if let Some(w) = wopt.take() {
                w.exit()?;
            }
            Ok(())
        })?;
        let (now, _) = take(&s, &format!("after {EXIT}"))?;
        let prev = snaps.last().expect("first snapshot");
        steps.push((
            Step::between(&s, EXIT, "a", &prev.0, &now.0),
            Step::between(&s, EXIT, "b", &prev.1, &now.1),
        ));
        snaps.push(now);
    }
    {
        s.phase(REMOVE_B, |_| {
            std::fs::remove_file(&f2).with_context(|| f2.display().to_string())
        })?;
        let (now, (ra, rb)) = take(&s, &format!("after {REMOVE_B}"))?;
        let prev = snaps.last().expect("first snapshot");
        steps.push((
            Step::between(&s, REMOVE_B, "a", &prev.0, &now.0),
            Step::between(&s, REMOVE_B, "b", &prev.1, &now.1),
        ));
        ledgers.push(LedgerAt::new("at the end", "a", &ra));
        ledgers.push(LedgerAt::new("at the end", "b", &rb));
        snaps.push(now);
    }
    if let Some(m) = private.as_mut() {
        m.unmount()?;
    }
    let mut writes = Vec::new();
    for ph in [WRITE_A, WRITE_B] {
        if let Some(rec) = s.phases().iter().find(|r| r.name == ph) {
            for cg in ["a", "b"] {
                for item in ["NR_SHMEM", "NR_FILE_PAGES"] {
                    let on = rec.per_cpu(cg, item, &[p.cpu])[0];
                    let all = rec.stat(cg, item).map_or(0, |r| r.total);
                    writes.push((ph.to_string(), cg.to_string(), item.to_string(), on, all));
                }
            }
        }
    }
    let results = Results {
        params: p.clone(),
        tmpfs,
        snapshots: snaps,
        steps,
        writes,
    };
    let checks = checks(&results, page as i64);
    let verdict = verdict(&results, &checks, page as i64);
    let params = serde_json::to_value(&p)?;
    let results = serde_json::to_value(&results)?;
    drop(private);
    s.finish(
        params,
        results,
        ledgers,
        Vec::new(),
        Verdict { checks, ..verdict },
    )
}

/// Charged pages in use: usage − the charge stock (which another memcg's charge on the same
/// CPU may drain at any time).
pub fn charged(s: &Snapshot, page: i64) -> i64 {
    s.usage_bytes / page - s.term("stock")
}

fn step<'a>(r: &'a Results, name: &str) -> Option<&'a (Step, Step)> {
    r.steps.iter().find(|(a, _)| a.phase == name)
}

fn snap<'a>(r: &'a Results, name: &str) -> Option<&'a (Snapshot, Snapshot)> {
    let label = format!("a after {name}");
    r.snapshots.iter().find(|(a, _)| a.label == label)
}

fn checks(r: &Results, page: i64) -> Vec<Check> {
    let p = &r.params;
    let n = p.pages as i64;
    let k = p.anon_pages as i64;
    let mut out = Vec::new();
    for (a, b) in &r.snapshots {
        for sn in [a, b] {
            out.push(sn.ledger_check());
        }
    }
    for (ph, cg, item, on, all) in &r.writes {
        let want = if (ph == WRITE_A && cg == "a") || (ph == WRITE_B && cg == "b") {
            n
        } else {
            0
        };
        out.push(Check::eq(
            &format!("{ph}: {cg} {item} on the writer's cpu{} (probes)", p.cpu),
            want,
            *on,
        ));
        out.push(Check::eq(
            &format!("{ph}: {cg} {item} on all CPUs (probes)"),
            want,
            *all,
        ));
    }
    if let Some((sa, sb)) = step(r, WRITE_A) {
        out.push(Check::eq(
            &format!("{WRITE_A}: a NR_SHMEM exact delta (pages)"),
            n,
            sa.item("NR_SHMEM") / page,
        ));
        out.push(Check::eq(
            &format!("{WRITE_A}: a NR_ANON_MAPPED exact delta (tmpfs is not anon)"),
            0,
            sa.item("NR_ANON_MAPPED"),
        ));
        out.push(Check::eq(
            &format!("{WRITE_A}: b usage delta"),
            0,
            sb.usage_bytes,
        ));
    }
    if let (Some((a0, b0)), Some((a1, b1))) = (snap(r, WRITE_A), snap(r, MOVE)) {
        out.push(Check::eq(
            &format!("{MOVE}: a usage − stock (pages) unchanged"),
            charged(a0, page),
            charged(a1, page),
        ));
        out.push(Check::eq(
            &format!("{MOVE}: b usage unchanged (bytes)"),
            b0.usage_bytes,
            b1.usage_bytes,
        ));
        for item in ["NR_SHMEM", "NR_ANON_MAPPED"] {
            out.push(Check::eq(
                &format!("{MOVE}: a {item} exact (bytes) unchanged"),
                a0.item(item),
                a1.item(item),
            ));
            out.push(Check::eq(
                &format!("{MOVE}: b {item} exact (bytes) unchanged"),
                b0.item(item),
                b1.item(item),
            ));
        }
    }
    if let Some((sa, sb)) = step(r, TOUCH_B) {
        out.push(Check::eq(
            &format!("{TOUCH_B}: b NR_ANON_MAPPED exact delta (pages)"),
            k,
            sb.item("NR_ANON_MAPPED") / page,
        ));
        out.push(Check::eq(
            &format!("{TOUCH_B}: a NR_ANON_MAPPED exact delta"),
            0,
            sa.item("NR_ANON_MAPPED"),
        ));
    }
    if let (Some((a0, _)), Some((a1, b1))) = (snap(r, MOVE), snap(r, TOUCH_B)) {
        out.push(Check::eq(
            &format!("after {WRITE_B} and {TOUCH_B}: a usage − stock (pages) unchanged"),
            charged(a0, page),
            charged(a1, page),
        ));
        out.push(Check::eq(
            "after the move and the new pages: a NR_SHMEM (pages) still the first file's",
            n,
            a1.item("NR_SHMEM") / page,
        ));
        out.push(Check::eq(
            "after the move and the new pages: a NR_ANON_MAPPED (bytes) as before the move",
            a0.item("NR_ANON_MAPPED"),
            a1.item("NR_ANON_MAPPED"),
        ));
        out.push(Check::eq(
            "after the move and the new pages: b NR_SHMEM (pages) = the second file",
            n,
            b1.item("NR_SHMEM") / page,
        ));
    }
    if let (Some((sa, sb)), Some((a0, _)), Some((a1, _))) =
        (step(r, REMOVE_A), snap(r, TOUCH_B), snap(r, REMOVE_A))
    {
        out.push(Check::eq(
            &format!("{REMOVE_A}: a NR_SHMEM exact delta (pages)"),
            -n,
            sa.item("NR_SHMEM") / page,
        ));
        out.push(Check::eq(
            &format!("{REMOVE_A}: a NR_SHMEM updates the probes saw (pages)"),
            -n,
            sa.probed.get("NR_SHMEM").copied().unwrap_or(0),
        ));
        out.push(Check::eq(
            &format!("{REMOVE_A}: b NR_SHMEM exact delta"),
            0,
            sb.item("NR_SHMEM"),
        ));
        let drop = charged(a0, page) - charged(a1, page);
        let held = a1.term("lru_add");
        out.push(Check::rule(
            &format!("{REMOVE_A}: a usage − stock drop (pages)"),
            format!(
                ">= {} ({n} pages uncharged, minus {held} a per-CPU lru_add batch may still hold)",
                n - held
            ),
            drop.to_string(),
            drop >= n - held,
        ));
    }
    if let (Some((sa, _)), Some((a1, b1))) = (step(r, EXIT), snap(r, EXIT)) {
        // Every anon page the workload faulted in a (its start included) is uncharged from a
        // when it exits, though it exits in b; b's own go from b.
        out.push(Check::eq(
            &format!("{EXIT}: a NR_ANON_MAPPED exact after (bytes)"),
            0,
            a1.item("NR_ANON_MAPPED"),
        ));
        out.push(Check::eq(
            &format!("{EXIT}: b NR_ANON_MAPPED exact after (bytes)"),
            0,
            b1.item("NR_ANON_MAPPED"),
        ));
        out.push(Check::rule(
            &format!("{EXIT}: a NR_ANON_MAPPED delta (pages)"),
            format!("<= -{k} (the pre-move touch, plus the workload's own pages)"),
            (sa.item("NR_ANON_MAPPED") / page).to_string(),
            sa.item("NR_ANON_MAPPED") / page <= -k,
        ));
    }
    if let Some((_, sb)) = step(r, REMOVE_B) {
        out.push(Check::eq(
            &format!("{REMOVE_B}: b NR_SHMEM exact delta (pages)"),
            -n,
            sb.item("NR_SHMEM") / page,
        ));
    }
    out
}

fn verdict(r: &Results, checks: &[Check], page: i64) -> Verdict {
    let p = &r.params;
    let kib = |b: i64| b / 1024;
    let mut summary = String::new();
    let _ = writeln!(summary, "tmpfs: {}", r.tmpfs);
    if let Some((a, _)) = step(r, WRITE_A) {
        let _ = writeln!(
            summary,
            "{} tmpfs pages written in a: a's usage {:+} KiB, shmem {:+} KiB, file {:+} KiB, anon {:+} KiB (tmpfs is file/shmem, swap-backed, not anon).",
            p.pages,
            kib(a.usage_bytes),
            kib(a.item("NR_SHMEM")),
            kib(a.item("NR_FILE_PAGES")),
            kib(a.item("NR_ANON_MAPPED")),
        );
    }
    if let (Some((a, b)), Some((a0, b0))) = (step(r, MOVE), snap(r, WRITE_A)) {
        let _ = writeln!(
            summary,
            "moving the writer to b: a's usage {:+} bytes (usage − stock {} -> {} pages), b's usage {:+} bytes: nothing moves with the task.",
            a.usage_bytes,
            charged(a0, page),
            charged(a0, page) + a.usage_bytes / page - a.term("stock"),
            b.usage_bytes,
        );
        let _ = b0;
        let _ = b;
    }
    if let Some((a1, b1)) = snap(r, TOUCH_B) {
        let _ = writeln!(
            summary,
            "after writing and touching again from b: a still holds shmem {} KiB and anon {} KiB; b holds shmem {} KiB and anon {} KiB.",
            kib(a1.item("NR_SHMEM")),
            kib(a1.item("NR_ANON_MAPPED")),
            kib(b1.item("NR_SHMEM")),
            kib(b1.item("NR_ANON_MAPPED")),
        );
    }
    if let Some((a, _)) = step(r, REMOVE_A) {
        let _ = writeln!(
            summary,
            "removing the file written in a (by this tool, from outside both cgroups): a's shmem {:+} KiB, usage {:+} KiB: the charge follows the pages.",
            kib(a.item("NR_SHMEM")),
            kib(a.usage_bytes),
        );
    }
    if let Some((a, b)) = step(r, EXIT) {
        let _ = write!(
            summary,
            "the workload's exit (in b) uncharged its pre-move anon from a ({:+} KiB) and its later anon from b ({:+} KiB).",
            kib(a.item("NR_ANON_MAPPED")),
            kib(b.item("NR_ANON_MAPPED")),
        );
    }
    let ok = checks.iter().all(|c| c.ok);
    Verdict {
        status: if ok {
            "the charge stays with the cgroup that allocated".into()
        } else {
            "some records disagree with the kernel's rules".into()
        },
        summary,
        checks: Vec::new(),
    }
}

/// `run shmem` in the experiment registry.
pub struct Shmem;

impl super::Experiment for Shmem {
    const NAMES: &'static [&'static str] = &["shmem"];
    type Results = Results;
    fn render(_r: &Report, res: &Results) -> Result<String> {
        render(res)
    }
}

/// The text section of a shmem report.
fn render(res: &Results) -> Result<String> {
    let p = &res.params;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "shmem: {} tmpfs pages and {} anon pages per cgroup, workload on cpu{}",
        p.pages, p.anon_pages, p.cpu
    );
    let _ = writeln!(out, "  tmpfs: {}", res.tmpfs);
    let _ = writeln!(
        out,
        "  {:<34} {:>10} {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} {:>10}",
        "after (KiB)",
        "a usage",
        "a shmem",
        "a file",
        "a anon",
        "b usage",
        "b shmem",
        "b file",
        "b anon"
    );
    for (a, b) in &res.snapshots {
        let label = a.label.strip_prefix("a ").unwrap_or(&a.label);
        let _ = writeln!(
            out,
            "  {:<34} {:>10} {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} {:>10}",
            label,
            a.usage_bytes / 1024,
            a.item("NR_SHMEM") / 1024,
            a.item("NR_FILE_PAGES") / 1024,
            a.item("NR_ANON_MAPPED") / 1024,
            b.usage_bytes / 1024,
            b.item("NR_SHMEM") / 1024,
            b.item("NR_FILE_PAGES") / 1024,
            b.item("NR_ANON_MAPPED") / 1024,
        );
    }
    let _ = writeln!(
        out,
        "  probes in the write phases (pages; writer's CPU / all CPUs):"
    );
    for (ph, cg, item, on, all) in &res.writes {
        let _ = writeln!(out, "    {ph:<20} {cg} {item:<14} {on:+} / {all:+}");
    }
    Ok(out)
}
