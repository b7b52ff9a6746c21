//! `run limit`: the text section of a record.

use super::*;
use crate::experiment::Result;

pub(super) fn opt_kib(v: Option<u64>) -> String {
    v.map(|b| (b / 1024).to_string())
        .unwrap_or_else(|| "-".into())
}

pub(super) fn opt_n(v: Option<u64>) -> String {
    v.map(|b| b.to_string()).unwrap_or_else(|| "-".into())
}

/// `run limit` in the experiment registry.
pub struct Limit;

impl crate::experiment::Experiment for Limit {
    const NAMES: &'static [&'static str] = &["limit"];
    type Results = Results;
    fn render(r: &Report, res: &Results) -> Result<String> {
        render(r, res)
    }
    fn plots(r: &Report, _res: &Results) -> Result<Vec<(String, String)>> {
        super::plots::plots(r)
    }
}

/// The text section of a limit report.
fn render(r: &Report, res: &Results) -> Result<String> {
    let p = &res.params;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "limit: {} limit{}{}, grow to {} in {} steps every {} ms on cpu{}; swap {} KiB",
        mib(p.limit_bytes),
        p.high_bytes
            .map(|h| format!(", high {}", mib(h)))
            .unwrap_or_default(),
        if p.oom_disable {
            ", oom_kill_disable 1"
        } else {
            ""
        },
        mib(p.grow_to_bytes),
        mib(p.step_bytes),
        p.interval_ms,
        p.cpu,
        res.swap_total_bytes / 1024
    );
    if let Some(im) = &res.immigrate {
        let _ = writeln!(
            out,
            "  charges stay with the old cgroup: {} pages touched in origin, then moved to limited{}",
            im.pages,
            im.move_charge_at_immigrate
                .map(|m| format!(" (move_charge_at_immigrate {m})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "    anon updates (origin, limited): touch {:?}, move {:?}, free from limited {:?}",
            im.touch_anon_updates, im.move_anon_updates, im.free_anon_updates
        );
        let _ = writeln!(
            out,
            "    origin charged pages (usage - stock - kmem): {} before the move, {} after, {} after the free ({} freed pages still in lru_add batches); limited {} -> {}",
            im.origin_charged_pages.0,
            im.origin_charged_pages.1,
            im.origin_charged_pages.2,
            im.origin_freed_in_lru_add,
            im.dest_charged_pages.0,
            im.dest_charged_pages.1
        );
    }
    let _ = writeln!(
        out,
        "  {:<26} {:>6} {:>9} {:>9} {:>9} {:>7} {:>5} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} {:>8}",
        "TIMELINE (KiB)",
        "DONE",
        "USAGE",
        "LIMIT",
        "PEAK",
        "FAILCNT",
        "HIGH",
        "OOM",
        "RECLAIM",
        "RECLAIMED",
        "ANON",
        "FILE",
        "SHMEM",
        "MS"
    );
    for st in &res.timeline {
        let _ = writeln!(
            out,
            "  {:<26} {:>6} {:>9} {:>9} {:>9} {:>7} {:>5} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7} {:>8.1}",
            st.phase,
            if st.completed { "yes" } else { "KILLED" },
            opt_kib(st.usage_bytes),
            st.limit_bytes
                .map(|b| (b / 1024).to_string())
                .unwrap_or_else(|| "max".into()),
            opt_kib(st.peak_bytes),
            opt_n(st.failcnt_delta),
            opt_n(st.high_events_delta),
            opt_n(st.oom_kill_delta),
            st.reclaim_rounds,
            st.reclaimed_pages,
            opt_kib(st.anon_bytes),
            opt_kib(st.file_bytes),
            opt_kib(st.shmem_bytes),
            st.duration_ms
        );
    }
    let o = &res.oom;
    let _ = writeln!(
        out,
        "  OOM: expected {}, cgroup oom_kill counter +{}; usage bound at a kill {}..={} bytes \
         (MEMCG_CHARGE_BATCH {} x online CPUs below the limit)",
        if o.kill_expected { "a kill" } else { "no kill" },
        opt_n(o.kill_counter),
        res.usage_at_kill_floor_bytes,
        p.limit_bytes,
        res.kernel_charge_batch
    );
    if let Some(ms) = o.under_oom_after_ms {
        let _ = writeln!(
            out,
            "  under_oom 1 seen after {ms:.0} ms of the blocking step"
        );
    }
    if let Some(rel) = &o.released_by {
        let _ = writeln!(out, "  released: {rel}");
    }
    if let Some(why) = &o.no_kill_reason {
        let _ = writeln!(out, "  {why}");
    }
    for k in &o.kmsg {
        let _ = writeln!(
            out,
            "  kernel log: pid {} ({}) oom_memcg {} usage {} KiB limit {} KiB failcnt {} rss (anon, file, shmem) {:?} KiB",
            k.pid,
            k.comm,
            k.oom_memcg.as_deref().unwrap_or("?"),
            opt_n(k.usage_kib),
            opt_n(k.limit_kib),
            opt_n(k.failcnt),
            k.rss_kib
        );
    }
    if let Some(e) = &o.kmsg_error {
        let _ = writeln!(out, "  kernel log unreadable: {e}");
    }
    if !r.oom_kills.is_empty() {
        let _ = writeln!(out, "  victim RSS from: {}", o.rss_source);
        let _ = writeln!(out, "  usage at kill from: {}", o.usage_source);
    }
    if let Some(sh) = &res.shrink {
        let _ = writeln!(
            out,
            "  shrink {} -> {}: {} in {:.1} ms (predicted {}); usage {} -> {} KiB; oom kills {}",
            sh.from_bytes.map(mib).unwrap_or_else(|| "max".into()),
            mib(sh.to_bytes),
            if sh.write_ok {
                "accepted".to_string()
            } else {
                format!("refused: {}", sh.error.clone().unwrap_or_default())
            },
            sh.duration_ms,
            sh.predicted,
            opt_kib(sh.usage_before_bytes),
            opt_kib(sh.usage_after_bytes),
            opt_n(sh.oom_kills)
        );
    }
    Ok(out)
}
