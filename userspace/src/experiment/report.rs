//! The report of an experiment run: records per phase, the experiment's results, the ledgers
//! taken, the verdict. The same document is the `--json` output and the `--record` file;
//! `memcg-drift report FILE` renders a recorded run again without the kernel.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

use crate::charge::CpuCharge;
use crate::experiment::{Context as _, Result, refuse};

/// Version of the report document.
pub const REPORT_FORMAT: u32 = 1;

/// What one hook attached to, or why it did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookUse {
    /// Hook id (`stat.memcg_state`, `charge.try_charge`, ...).
    pub hook: String,
    /// `flavour target` when attached.
    pub used: Option<String>,
    /// The first candidate's error when not attached.
    pub missing: Option<String>,
}

/// The stat updates of one (cgroup, item) inside a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatRecord {
    /// The cgroup, relative to the run (`.` is the run's own cgroup).
    pub cgroup: String,
    /// The statistic item.
    pub item: String,
    /// `pages`, `bytes` or `KiB`.
    pub unit: String,
    /// Net delta per CPU (CPUs with events only).
    pub per_cpu: BTreeMap<usize, i64>,
    /// Net delta over all CPUs.
    pub total: i64,
    /// Updates seen.
    pub events: u64,
}

/// The charge figures of one (cgroup, CPU) inside a phase, in pages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChargeRecord {
    /// The cgroup, relative to the run.
    pub cgroup: String,
    /// The CPU.
    pub cpu: usize,
    /// Pages asked of `try_charge_memcg` (probed).
    pub requested: u64,
    /// Pages served from this CPU's stock (probed).
    pub from_stock: u64,
    /// Batches charged to the memory page_counter (probed).
    pub batches: u64,
    /// Pages of those batches.
    pub batch_pages: u64,
    /// Pages uncharged from the memory page_counter (probed).
    pub uncharged: u64,
    /// Pages stock drains returned (probed).
    pub drained: u64,
    /// Failed charge attempts (probed).
    pub failed: u64,
    /// Retries inside charge attempts (probed).
    pub retries: u64,
    /// Kernel-memory bytes given to the object stock (probed).
    pub obj_refill_bytes: u64,
    /// Bytes object-stock drains returned (probed).
    pub obj_drain_bytes: u64,
    /// Memcg reclaim rounds and the pages they reclaimed (vmscan tracepoints).
    pub reclaim_rounds: u64,
    /// Pages reclaimed.
    pub reclaimed: u64,
    /// `mem_cgroup_out_of_memory` calls.
    pub oom: u64,
    /// Inferred: rises of the memory page_counter between stat events (pages).
    pub inferred_charged: u64,
    /// Inferred: falls (pages).
    pub inferred_uncharged: u64,
    /// Inferred: how many rises (one per page_counter charge between two stat events).
    pub inferred_rises: u64,
}

impl ChargeRecord {
    /// From the charge module's figures.
    pub fn from_figures(cgroup: String, f: &CpuCharge) -> ChargeRecord {
        let mem = f.memory();
        ChargeRecord {
            cgroup,
            cpu: f.cpu,
            requested: f.try_charge.pages,
            from_stock: f.served_from_stock.pages,
            batches: f.batches.events,
            batch_pages: f.batches.pages,
            uncharged: mem.uncharge.pages,
            drained: f.drains.pages,
            failed: f.failed.events,
            retries: f.retries.pages,
            obj_refill_bytes: f.obj_refill.pages,
            obj_drain_bytes: f.obj_drain.pages,
            reclaim_rounds: f.reclaim_rounds.events,
            reclaimed: f.reclaimed.pages,
            oom: f.oom.events,
            inferred_charged: f.inferred_charged.pages,
            inferred_uncharged: f.inferred_uncharged.pages,
            inferred_rises: f.inferred_charged.events,
        }
    }

    /// Nothing happened.
    pub fn is_empty(&self) -> bool {
        let zero = ChargeRecord {
            cgroup: self.cgroup.clone(),
            cpu: self.cpu,
            ..Default::default()
        };
        *self == zero
    }
}

/// An OOM event inside a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomRow {
    /// `invoked`, `kill` or `victim`.
    pub kind: String,
    /// CPU.
    pub cpu: u32,
    /// The memcg (relative to the run).
    pub cgroup: String,
    /// The task (invoker or victim).
    pub pid: u32,
    /// Its name.
    pub comm: String,
    /// Allocation order, when known.
    pub order: Option<i32>,
}

/// A cgroup lifecycle event inside a phase (`cgroup:cgroup_mkdir/rmdir/release`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifeRow {
    /// `mkdir`, `rmdir` or `release`.
    pub kind: String,
    /// The cgroup (relative to the run).
    pub cgroup: String,
    /// Its id.
    pub cgroup_id: u64,
    /// When, ms since the run began (the kernel's CLOCK_MONOTONIC).
    pub t_ms: f64,
}

/// One phase of the workload and what the probes saw during it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// The phase.
    pub name: String,
    /// Start, ms since the run began.
    pub start_ms: f64,
    /// End, ms since the run began.
    pub end_ms: f64,
    /// Why the phase failed, if it did.
    pub error: Option<String>,
    /// Stat updates by (cgroup, item).
    pub stats: Vec<StatRecord>,
    /// Charge figures by (cgroup, CPU).
    pub charges: Vec<ChargeRecord>,
    /// OOM events.
    pub oom: Vec<OomRow>,
    /// Cgroup lifecycle events of the run's cgroups.
    #[serde(default)]
    pub lifecycle: Vec<LifeRow>,
    /// Events the probes lost in this window.
    pub lost_events: u64,
    /// Stat updates of any cgroup the kernel skipped in this window because the stat program
    /// was already running on that CPU (`recursion_misses`); `null` where the kernel does not
    /// report them (and in records made before they were read).
    #[serde(default)]
    pub skipped_events: Option<u64>,
}

impl PhaseRecord {
    /// The record of (cgroup, item), if it moved.
    pub fn stat(&self, cgroup: &str, item: &str) -> Option<&StatRecord> {
        self.stats
            .iter()
            .find(|s| s.cgroup == cgroup && s.item == item)
    }

    /// The net delta of (cgroup, item) on each CPU in `cpus` (0 where nothing moved).
    pub fn per_cpu(&self, cgroup: &str, item: &str, cpus: &[usize]) -> Vec<i64> {
        let r = self.stat(cgroup, item);
        cpus.iter()
            .map(|c| r.and_then(|r| r.per_cpu.get(c).copied()).unwrap_or(0))
            .collect()
    }

    /// Charge figures of a cgroup summed over CPUs.
    pub fn charge_total(&self, cgroup: &str) -> ChargeRecord {
        let mut t = ChargeRecord {
            cgroup: cgroup.into(),
            cpu: usize::MAX,
            ..Default::default()
        };
        for c in self.charges.iter().filter(|c| c.cgroup == cgroup) {
            t.requested += c.requested;
            t.from_stock += c.from_stock;
            t.batches += c.batches;
            t.batch_pages += c.batch_pages;
            t.uncharged += c.uncharged;
            t.drained += c.drained;
            t.failed += c.failed;
            t.retries += c.retries;
            t.obj_refill_bytes += c.obj_refill_bytes;
            t.obj_drain_bytes += c.obj_drain_bytes;
            t.reclaim_rounds += c.reclaim_rounds;
            t.reclaimed += c.reclaimed;
            t.oom += c.oom;
            t.inferred_charged += c.inferred_charged;
            t.inferred_uncharged += c.inferred_uncharged;
            t.inferred_rises += c.inferred_rises;
        }
        t
    }
}

/// An `explain` ledger taken during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerAt {
    /// When and why it was taken.
    pub label: String,
    /// The cgroup, relative to the run.
    pub cgroup: String,
    /// page_counter usage, bytes.
    pub usage_bytes: i64,
    /// Explained, bytes.
    pub explained_bytes: i64,
    /// Unexplained, pages (signed).
    pub unexplained_pages: i64,
    /// The report as `explain` prints it.
    pub text: String,
    /// The report as `explain --json` prints it.
    pub json: serde_json::Value,
}

impl LedgerAt {
    /// From an explain report.
    pub fn new(label: &str, cgroup: &str, r: &crate::explain::ExplainReport) -> LedgerAt {
        LedgerAt {
            label: label.into(),
            cgroup: cgroup.into(),
            usage_bytes: r.usage_bytes,
            explained_bytes: r.explained_bytes,
            unexplained_pages: r.unexplained_pages,
            text: crate::explain::render_text(r, true),
            json: serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// An OOM kill as the limit experiment reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomKill {
    /// The victim.
    pub victim_pid: u32,
    /// Its name.
    pub victim_comm: String,
    /// Its resident set at the kill, bytes (when known).
    pub victim_rss_bytes: Option<u64>,
    /// The memcg, absolute path.
    pub memcg_path: String,
    /// The memcg's usage at the kill, bytes.
    pub usage_at_kill_bytes: Option<u64>,
    /// The phase it happened in.
    pub phase: String,
}

/// One assertion of the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What is checked.
    pub what: String,
    /// What the kernel's rule predicts.
    pub expected: String,
    /// What was measured.
    pub measured: String,
    /// Whether they agree.
    pub ok: bool,
}

impl Check {
    /// An equality check.
    pub fn eq<T: PartialEq + std::fmt::Debug>(what: &str, expected: T, measured: T) -> Check {
        Check {
            what: what.into(),
            ok: expected == measured,
            expected: format!("{expected:?}"),
            measured: format!("{measured:?}"),
        }
    }

    /// A check with its own rule text.
    pub fn rule(what: &str, expected: String, measured: String, ok: bool) -> Check {
        Check {
            what: what.into(),
            expected,
            measured,
            ok,
        }
    }

    /// A ledger's remainder where it must close: 0 pages, or where the kernel counts kernel
    /// memory nowhere (5.10 on cgroup v2) that kernel memory, which is never negative.
    pub fn ledger_closes(what: &str, unexplained_pages: i64, kmem_uncounted: bool) -> Check {
        if kmem_uncounted {
            return Check::rule(
                &format!("{what} (kernel memory, counted nowhere on this kernel, included)"),
                ">= 0".into(),
                unexplained_pages.to_string(),
                unexplained_pages >= 0,
            );
        }
        Check::eq(what, 0, unexplained_pages)
    }
}

/// The experiment's conclusion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Short answer (`reproduced`, `not reproduced`, `flushes into the parent`, ...).
    pub status: String,
    /// The answer to the seed's question, with numbers.
    pub summary: String,
    /// The assertions behind it.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// The verdict on `checks`: `answer` when every check holds, and the answer marked as
    /// contradicted by the records when one does not.
    pub fn judged(answer: &str, summary: String, checks: Vec<Check>) -> Verdict {
        let status = if checks.iter().all(|c| c.ok) {
            answer.to_string()
        } else {
            format!("{answer} (some records disagree with the kernel's rules)")
        };
        Verdict {
            status,
            summary,
            checks,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Document format version.
    pub format: u32,
    /// `batch-skew`, `limit`, `kmem`, `shmem` or `churn`.
    pub experiment: String,
    /// The run id (`memcg-drift/<run-id>` was its cgroup).
    pub run_id: String,
    /// `uname -r`.
    pub kernel: String,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// Page size, bytes.
    pub page_size: u64,
    /// Online CPUs.
    pub online_cpus: Vec<usize>,
    /// The options the run used.
    pub params: serde_json::Value,
    /// How each hook attached.
    pub hooks: Vec<HookUse>,
    /// `probed`, `inferred ...` or `unavailable: ...`.
    pub charge_source: String,
    /// The unit of stat records.
    pub value_unit: String,
    /// The phases, in order.
    pub phases: Vec<PhaseRecord>,
    /// The experiment's own results (see docs/json.md per experiment).
    pub results: serde_json::Value,
    /// Ledgers taken during the run.
    pub ledgers: Vec<LedgerAt>,
    /// OOM kills (limit runs).
    pub oom_kills: Vec<OomKill>,
    /// Every lifecycle event of the run's cgroups (`cgroup:cgroup_mkdir/rmdir/release`),
    /// inside phases or between them, oldest first; empty where the tracepoints cannot attach.
    #[serde(default)]
    pub lifecycle: Vec<LifeRow>,
    /// Events the probes lost during the run (0 unless a map filled or a read failed).
    pub lost_events: u64,
    /// The phases' [`PhaseRecord::skipped_events`], summed (`null` if one is unknown).
    #[serde(default)]
    pub skipped_events: Option<u64>,
    /// Run time, ms.
    pub duration_ms: f64,
    /// The verdict.
    pub verdict: Verdict,
}

impl Report {
    /// The first phase named `name`.
    pub fn phase(&self, name: &str) -> Option<&PhaseRecord> {
        self.phases.iter().find(|p| p.name == name)
    }
}

/// Writes a report to `path` (atomically, refusing paths another user could have planted: see
/// [`crate::safefs::write_user_output`]).
pub fn save(r: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(r)?;
    crate::safefs::write_user_output(path, text.as_bytes(), "--record")?;
    Ok(())
}

/// Reads a recorded report.
pub fn load(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let r: Report = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a memcg-drift run record", path.display()))?;
    if r.format != REPORT_FORMAT {
        refuse!(
            "{}: record format {} (this version reads {REPORT_FORMAT})",
            path.display(),
            r.format
        );
    }
    Ok(r)
}

fn fmt_per_cpu(m: &BTreeMap<usize, i64>) -> String {
    m.iter()
        .map(|(c, v)| format!("cpu{c}:{v:+}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The phase table: one line per phase, then its stat and charge records.
fn render_phases(out: &mut String, r: &Report) {
    let _ = writeln!(out, "phases (stat deltas per CPU in {}):", r.value_unit);
    for p in &r.phases {
        let _ = writeln!(
            out,
            "  [{:>9.1} ms .. {:>9.1} ms] {}{}",
            p.start_ms,
            p.end_ms,
            p.name,
            p.error
                .as_ref()
                .map(|e| format!("  (ended with: {e})"))
                .unwrap_or_default()
        );
        for s in &p.stats {
            if s.total == 0 && s.per_cpu.values().all(|v| *v == 0) {
                continue;
            }
            let _ = writeln!(
                out,
                "      {:<12} {:<28} {:>+9} {:<5} {}",
                s.cgroup,
                s.item,
                s.total,
                s.unit,
                fmt_per_cpu(&s.per_cpu)
            );
        }
        for c in &p.charges {
            let mut parts = Vec::new();
            let mut add = |n: &str, v: u64| {
                if v != 0 {
                    parts.push(format!("{n} {v}"));
                }
            };
            add("requested", c.requested);
            add("from-stock", c.from_stock);
            add("batches", c.batches);
            add("batch-pages", c.batch_pages);
            add("uncharged", c.uncharged);
            add("drained", c.drained);
            add("failed", c.failed);
            add("retries", c.retries);
            add("obj-refill-B", c.obj_refill_bytes);
            add("obj-drain-B", c.obj_drain_bytes);
            add("reclaim-rounds", c.reclaim_rounds);
            add("reclaimed", c.reclaimed);
            add("oom", c.oom);
            add("inferred+", c.inferred_charged);
            add("inferred-", c.inferred_uncharged);
            let _ = writeln!(
                out,
                "      {:<12} charge cpu{:<3} {}",
                c.cgroup,
                c.cpu,
                parts.join(", ")
            );
        }
        for e in &p.lifecycle {
            let _ = writeln!(out, "      {:<12} {} at {:.1} ms", e.cgroup, e.kind, e.t_ms);
        }
        for o in &p.oom {
            let _ = writeln!(
                out,
                "      {:<12} oom {} pid {} ({}) on cpu{}{}",
                o.cgroup,
                o.kind,
                o.pid,
                o.comm,
                o.cpu,
                o.order.map(|x| format!(" order {x}")).unwrap_or_default()
            );
        }
    }
}

/// One line for the hooks that did not attach (the JSON keeps each with its error), e.g. `16
/// charge/oom hooks not attached here: fentry EPERM, no kprobes (see doctor)`.
pub fn unattached_summary(hooks: &[HookUse]) -> Option<String> {
    let missing: Vec<(&str, &str)> = hooks
        .iter()
        .filter(|h| h.used.is_none())
        .map(|h| {
            (
                h.hook.as_str(),
                h.missing.as_deref().unwrap_or("not attached"),
            )
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut families: Vec<&str> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for (hook, why) in &missing {
        let family = hook.split('.').next().unwrap_or(hook);
        if !families.contains(&family) {
            families.push(family);
        }
        let flavour = why.split_whitespace().next().unwrap_or("");
        let reason = if why.contains("Operation not permitted") {
            format!(
                "{} EPERM",
                if flavour == "fexit" {
                    "fentry"
                } else {
                    flavour
                }
            )
        } else if why.contains("no kprobe PMU") || why.contains("CONFIG_KPROBES") {
            "no kprobes".to_string()
        } else if why.contains("not found") || why.contains("no such") {
            "symbols missing".to_string()
        } else {
            why.chars().take(40).collect()
        };
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    Some(format!(
        "{} {} hook{} not attached here: {} (see doctor; --json lists each)",
        missing.len(),
        families.join("/"),
        if missing.len() == 1 { "" } else { "s" },
        reasons.join(", ")
    ))
}

/// The report as text.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "memcg-drift run {}: kernel {}, cgroup {}, {} online CPUs, run {} ({:.1} s)",
        r.experiment,
        r.kernel,
        r.cgroup_version,
        r.online_cpus.len(),
        r.run_id,
        r.duration_ms / 1000.0
    );
    let _ = writeln!(out, "  options: {}", r.params);
    let _ = writeln!(out, "  charge path: {}", r.charge_source);
    for h in &r.hooks {
        if let Some(u) = &h.used {
            let _ = writeln!(out, "  hook {:<24} {u}", h.hook);
        }
    }
    if let Some(line) = unattached_summary(&r.hooks) {
        let _ = writeln!(out, "  {line}");
    }
    out.push('\n');
    render_phases(&mut out, r);
    out.push('\n');
    let section = match super::registered(&r.experiment) {
        Some(e) => (e.render)(r),
        None => Ok(format!("results: {}\n", r.results)),
    };
    match section {
        Ok(s) => out.push_str(&s),
        Err(e) => {
            let _ = writeln!(out, "results (cannot render: {e}): {}", r.results);
        }
    }
    for l in &r.ledgers {
        let _ = writeln!(out, "\nledger {} ({}):", l.label, l.cgroup);
        for line in l.text.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !r.oom_kills.is_empty() {
        let _ = writeln!(out, "\nOOM kills:");
        for k in &r.oom_kills {
            let _ = writeln!(
                out,
                "  pid {} ({}) in {} during {}: rss {}, memcg usage at kill {}",
                k.victim_pid,
                k.victim_comm,
                k.memcg_path,
                k.phase,
                k.victim_rss_bytes
                    .map(|b| format!("{} KiB", b / 1024))
                    .unwrap_or_else(|| "unknown".into()),
                k.usage_at_kill_bytes
                    .map(|b| format!("{} KiB", b / 1024))
                    .unwrap_or_else(|| "unknown".into())
            );
        }
    }
    let _ = writeln!(out, "\nverdict: {}", r.verdict.status);
    for line in r.verdict.summary.lines() {
        let _ = writeln!(out, "  {line}");
    }
    for c in &r.verdict.checks {
        let _ = writeln!(
            out,
            "  [{}] {}: expected {}, measured {}",
            if c.ok { "ok" } else { "FAIL" },
            c.what,
            c.expected,
            c.measured
        );
    }
    if r.lost_events != 0 {
        let _ = writeln!(
            out,
            "  warning: the probes lost {} events; records may be short",
            r.lost_events
        );
    }
    if let Some(n) = r.skipped_events.filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "  note: the kernel skipped {n} stat updates of any cgroup (each in an interrupt \
             while the stat program ran on that CPU); the exact checks above cover the run's own"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unattached_hooks_are_one_line() {
        let h = |hook: &str, used: Option<&str>, missing: Option<&str>| HookUse {
            hook: hook.into(),
            used: used.map(Into::into),
            missing: missing.map(Into::into),
        };
        let eperm = "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)";
        let hooks = [
            h("stat.memcg_state", Some("tp_btf mod_memcg_state"), None),
            h(
                "charge.try_charge",
                None,
                Some(&format!("fentry try_charge_memcg: {eperm}")),
            ),
            h(
                "charge.pc_try_ret",
                None,
                Some(&format!("fexit page_counter_try_charge: {eperm}")),
            ),
            h(
                "charge.drain_all_stock",
                None,
                Some(
                    "kprobe drain_all_stock.part.N: kernel has no kprobe PMU (CONFIG_KPROBES off)",
                ),
            ),
            h(
                "oom.memcg_oom",
                None,
                Some(&format!("fentry mem_cgroup_out_of_memory: {eperm}")),
            ),
        ];
        assert_eq!(
            unattached_summary(&hooks).unwrap(),
            "4 charge/oom hooks not attached here: fentry EPERM, no kprobes \
             (see doctor; --json lists each)"
        );
        assert_eq!(unattached_summary(&hooks[..1]), None);
    }
}
