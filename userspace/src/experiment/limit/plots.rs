//! `run limit --svg DIR`: the timeline (usage, limit, peak, anon/file/shmem, the OOM kill
//! marked) and the events per step (limit hits, reclaim rounds, OOM events), the charge stock
//! after each step with the kernel's bound.

use crate::experiment::Result;
use crate::plot::{MIB, Series, line_chart};

use super::super::{
    Report,
    plots::{num, title},
};

/// limit: the timeline (usage, limit, peak, anon/file/shmem; the OOM kill) and the events.
pub(super) fn plots(r: &Report) -> Result<Vec<(String, String)>> {
    let steps = r.results["timeline"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut t = 0.0;
    let mut at = Vec::new();
    for s in &steps {
        t += num(&s["duration_ms"]).unwrap_or(0.0);
        at.push(t);
    }
    let series = |key: &str, name: &str| Series {
        name: name.into(),
        points: steps
            .iter()
            .zip(&at)
            .filter_map(|(s, t)| Some((*t, num(&s[key])? / MIB)))
            .collect(),
    };
    let marks: Vec<(f64, String)> = steps
        .iter()
        .zip(&at)
        .filter(|(s, _)| num(&s["oom_kill_delta"]).is_some_and(|k| k > 0.0))
        .map(|(s, t)| {
            (
                *t,
                format!("OOM kill ({})", s["phase"].as_str().unwrap_or("")),
            )
        })
        .take(1)
        .collect();
    let usage = line_chart(
        &title(r, "usage against the limit"),
        "time since the first step (ms)",
        "MiB",
        &[
            series("usage_bytes", "usage (page_counter)"),
            series("limit_bytes", "limit"),
            series("peak_bytes", "peak"),
            series("anon_bytes", "anon (memory.stat)"),
            series("file_bytes", "file (memory.stat)"),
            series("shmem_bytes", "shmem (memory.stat)"),
        ],
        &marks,
        &[],
    )?;
    let count = |key: &str, name: &str| Series {
        name: name.into(),
        points: steps
            .iter()
            .zip(&at)
            .map(|(s, t)| (*t, num(&s[key]).unwrap_or(0.0)))
            .collect(),
    };
    let events = line_chart(
        &title(r, "limit hits, reclaim and OOM per step"),
        "time since the first step (ms)",
        "events per step",
        &[
            count("failcnt_delta", "limit hits (failcnt / max events)"),
            count("reclaim_rounds", "memcg reclaim rounds"),
            count("high_events_delta", "high events"),
            count("oom_events_delta", "oom events"),
        ],
        &marks,
        &[],
    )?;
    let mut out = vec![
        ("limit.svg".into(), usage),
        ("limit-events.svg".into(), events),
    ];
    let stock = Series {
        name: "charge stock, all CPUs".into(),
        points: steps
            .iter()
            .zip(&at)
            .filter_map(|(s, t)| Some((*t, num(&s["stock_pages"])?)))
            .collect(),
    };
    if !stock.points.is_empty() {
        let bound: Vec<(f64, String)> = r.results["stock_bound_pages"]
            .as_f64()
            .map(|b| (b, format!("the kernel's bound ({b} pages)")))
            .into_iter()
            .collect();
        out.push((
            "limit-stock.svg".into(),
            line_chart(
                &title(r, "charge stock of the limited cgroup"),
                "time since the first step (ms)",
                "pages charged ahead (stock)",
                &[stock],
                &marks,
                &bound,
            )?,
        ));
    }
    Ok(out)
}
