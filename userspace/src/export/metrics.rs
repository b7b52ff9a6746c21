//! The exporter's metrics: a [`Snapshot`] of the exported cgroups (plain data: `explain`
//! reports and memory.events counters) rendered as OpenMetrics text with the Prometheus
//! project's client library, and the same in the Prometheus text format (0.0.4) for scrapers
//! that do not ask for OpenMetrics. Pure: no kernel, no I/O; docs/metrics.md lists every
//! metric.

use std::{collections::BTreeMap, time::Duration};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::explain::ExplainReport;

/// Labels of a sample: (name, value) pairs.
type Labels = Vec<(String, String)>;

/// One exported cgroup at one snapshot.
#[derive(Debug, Clone)]
pub struct CgroupSample {
    /// The path relative to the hierarchy root (`/` for the root, `/a/b`).
    pub cgroup: String,
    /// Its ledger, as `explain --json` reports it.
    pub report: ExplainReport,
    /// Its memory events (v2 `memory.events`; v1 `oom_kill` of `memory.oom_control`).
    pub events: BTreeMap<String, u64>,
}

/// Everything read from the kernel at one interval.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The exported cgroups, parents first.
    pub cgroups: Vec<CgroupSample>,
    /// Cgroups of the subtree beyond `--max-cgroups`, not exported.
    pub left_out: usize,
    /// Cgroups that could not be read this time (removed meanwhile, ...).
    pub failed: usize,
    /// How long reading the kernel took.
    pub duration: Duration,
}

/// The exporter's own counters since it started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    /// Snapshots taken (kernel reads; one per interval whatever the scrapes).
    pub snapshots: u64,
    /// Extra attempts the snapshots needed because something moved during a read.
    pub snapshot_retries: u64,
    /// Cgroup reads that failed.
    pub read_failures: u64,
    /// Scrapes served.
    pub scrapes: u64,
    /// How long the previous scrape took to serve, seconds.
    pub last_scrape_s: f64,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Registers a labelled gauge family (unit `Bytes` adds `_bytes` to the name).
fn gauges(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, f.clone()),
        None => reg.register(name, help, f.clone()),
    }
    f
}

fn counters(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

/// The snapshot as OpenMetrics text, without the closing `# EOF` (the health part follows).
pub fn snapshot_text(s: &Snapshot) -> String {
    let mut reg = Registry::with_prefix("memcg_drift");
    let b = || Some(Unit::Bytes);
    let usage = gauges(
        &mut reg,
        "usage",
        "Charged memory: the page_counter behind memory.current / memory.usage_in_bytes",
        b(),
    );
    let limit = gauges(
        &mut reg,
        "limit",
        "Hard limit (memory.max / memory.limit_in_bytes); absent when unlimited",
        b(),
    );
    let peak = gauges(
        &mut reg,
        "peak",
        "Peak usage (the page_counter watermark)",
        b(),
    );
    let swap = gauges(
        &mut reg,
        "swap_usage",
        "v2 swap page_counter (memory.swap.current)",
        b(),
    );
    let memsw = gauges(
        &mut reg,
        "memsw_usage",
        "v1 memory+swap page_counter (memory.memsw.usage_in_bytes)",
        b(),
    );
    let term = gauges(
        &mut reg,
        "ledger_term",
        "One term of the ledger usage = terms + unexplained (LRU lists, lru_add batches, kernel memory, sock, charge stock, ...)",
        b(),
    );
    let explained = gauges(&mut reg, "explained", "Sum of the ledger's terms", b());
    let unexplained = gauges(
        &mut reg,
        "unexplained",
        "usage minus the ledger's terms (signed; 0 when the books close)",
        b(),
    );
    let gap = gauges(
        &mut reg,
        "books_gap",
        "usage minus memory.stat as shown, split into where the difference sits",
        b(),
    );
    let cpu_stock = gauges(
        &mut reg,
        "cpu_stock",
        "Charge stock one CPU holds for the cgroup and its descendants (charged ahead)",
        b(),
    );
    let cpu_unflushed = gauges(
        &mut reg,
        "cpu_unflushed",
        "Statistic deltas one CPU has not flushed yet (sum over the ledger's statistic terms)",
        b(),
    );
    let cpu_lru_add = gauges(
        &mut reg,
        "cpu_lru_add",
        "Pages of the cgroup in one CPU's lru_add batches",
        b(),
    );
    let dying = gauges(
        &mut reg,
        "dying_descendants",
        "Removed descendants still alive in the kernel (dying cgroups)",
        None,
    );
    let dying_usage = gauges(
        &mut reg,
        "dying_usage",
        "Charge the dying descendants still hold",
        b(),
    );
    let consistent = gauges(
        &mut reg,
        "snapshot_consistent",
        "1 when nothing moved during the cgroup's read",
        None,
    );
    let events = counters(
        &mut reg,
        "memory_events",
        "memory.events counters (v2), oom_kill of memory.oom_control (v1)",
    );
    let oom_kills = counters(
        &mut reg,
        "oom_kills",
        "Processes the OOM killer killed in the cgroup (memory.events oom_kill)",
    );

    for c in &s.cgroups {
        let r = &c.report;
        let ps = r.page_size as i64;
        let cg = labels(&[("cgroup", &c.cgroup)]);
        usage.get_or_create(&cg).set(r.usage_bytes);
        if let Some(m) = r.charge.max_bytes {
            limit.get_or_create(&cg).set(m as i64);
        }
        peak.get_or_create(&cg).set(r.charge.peak_bytes as i64);
        if let Some(v) = r.charge.swap_usage_bytes {
            swap.get_or_create(&cg).set(v as i64);
        }
        if let Some(v) = r.charge.memsw_usage_bytes {
            memsw.get_or_create(&cg).set(v as i64);
        }
        explained.get_or_create(&cg).set(r.explained_bytes);
        unexplained.get_or_create(&cg).set(r.unexplained_bytes);
        consistent
            .get_or_create(&cg)
            .set(i64::from(r.snapshot.consistent));
        for t in &r.terms {
            term.get_or_create(&labels(&[("cgroup", &c.cgroup), ("term", &t.term)]))
                .set(t.bytes);
        }
        let g = &r.gap;
        for (part, pages) in [
            ("unflushed", g.unflushed_pages),
            ("stock", g.stock_pages),
            ("lru_add", g.lru_add_pages),
            ("clamped", g.clamped_pages),
            ("unexplained", g.unexplained_pages),
        ] {
            gap.get_or_create(&labels(&[("cgroup", &c.cgroup), ("part", part)]))
                .set(pages * ps);
        }
        let cpus = r.terms.iter().map(|t| t.per_cpu.len()).max().unwrap_or(0);
        for cpu in 0..cpus {
            let at = |pred: &dyn Fn(&crate::ledger::Term) -> bool| -> i64 {
                r.terms
                    .iter()
                    .filter(|t| pred(t))
                    .filter_map(|t| t.per_cpu.get(cpu))
                    .sum::<i64>()
                    * ps
            };
            let l = labels(&[("cgroup", &c.cgroup), ("cpu", &cpu.to_string())]);
            cpu_stock.get_or_create(&l).set(at(&|t| t.term == "stock"));
            cpu_lru_add
                .get_or_create(&l)
                .set(at(&|t| t.term == "lru_add"));
            cpu_unflushed
                .get_or_create(&l)
                .set(at(&|t| t.item.is_some()));
        }
        dying
            .get_or_create(&cg)
            .set(r.snapshot.dying_descendants as i64);
        dying_usage
            .get_or_create(&cg)
            .set(r.dying.iter().map(|d| d.usage_pages as i64).sum::<i64>() * ps);
        for (event, n) in &c.events {
            events
                .get_or_create(&labels(&[("cgroup", &c.cgroup), ("event", event)]))
                .inc_by(*n);
        }
        if let Some(n) = c.events.get("oom_kill") {
            oom_kills.get_or_create(&cg).inc_by(*n);
        }
    }
    for (name, help, v) in [
        (
            "exported_cgroups",
            "Cgroups exported at the last snapshot",
            s.cgroups.len(),
        ),
        (
            "cgroups_left_out",
            "Cgroups of the subtree beyond --max-cgroups, not exported",
            s.left_out,
        ),
        (
            "cgroups_unreadable",
            "Cgroups that could not be read at the last snapshot",
            s.failed,
        ),
    ] {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        reg.register(name, help, g);
    }
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    strip_eof(out)
}

/// The exporter's health as OpenMetrics text, closing with `# EOF`.
pub fn health_text(h: &Health, snapshot_duration: Duration) -> String {
    let mut reg = Registry::with_prefix("memcg_drift");
    let c = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let m = Counter::<u64>::default();
        m.inc_by(v);
        reg.register(name, help, m);
    };
    c(
        &mut reg,
        "snapshots",
        "Kernel snapshots taken (one per interval, whatever the scrapes)",
        h.snapshots,
    );
    c(
        &mut reg,
        "snapshot_retries",
        "Extra attempts snapshots needed because something moved during a read",
        h.snapshot_retries,
    );
    c(
        &mut reg,
        "read_failures",
        "Cgroup reads that failed (removed meanwhile, ...)",
        h.read_failures,
    );
    c(&mut reg, "scrapes", "Scrapes served", h.scrapes);
    let d = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    d.set(snapshot_duration.as_secs_f64());
    reg.register_with_unit(
        "snapshot_duration",
        "How long the last kernel snapshot took",
        Unit::Seconds,
        d,
    );
    let last = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    last.set(h.last_scrape_s);
    reg.register_with_unit(
        "last_scrape_duration",
        "How long the previous scrape took to serve (from the last snapshot's text)",
        Unit::Seconds,
        last,
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

fn strip_eof(mut s: String) -> String {
    if s.ends_with("# EOF\n") {
        s.truncate(s.len() - "# EOF\n".len());
    }
    s
}

/// OpenMetrics text as the Prometheus text format 0.0.4: no `# UNIT` lines and no `# EOF`, and a
/// counter's `# HELP`/`# TYPE` name the `_total` sample (0.0.4 names families by their
/// samples).
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in open_metrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(open_metrics.len());
    for l in open_metrics.lines() {
        if l.starts_with("# UNIT ") || l == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_renames_counter_families_and_drops_units() {
        let h = Health {
            snapshots: 3,
            scrapes: 7,
            ..Health::default()
        };
        let om = health_text(&h, Duration::from_millis(250));
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE memcg_drift_scrapes counter"), "{om}");
        assert!(om.contains("memcg_drift_scrapes_total 7"), "{om}");
        assert!(
            om.contains("# UNIT memcg_drift_snapshot_duration_seconds seconds"),
            "{om}"
        );
        let p = to_prometheus_text(&om);
        assert!(
            p.contains("# TYPE memcg_drift_scrapes_total counter"),
            "{p}"
        );
        assert!(p.contains("# HELP memcg_drift_snapshots_total "), "{p}");
        assert!(!p.contains("# UNIT") && !p.contains("# EOF"), "{p}");
        assert!(
            p.contains("memcg_drift_snapshot_duration_seconds 0.25"),
            "{p}"
        );
    }

    #[test]
    fn an_empty_snapshot_still_says_how_many_cgroups() {
        let t = snapshot_text(&Snapshot {
            left_out: 4,
            ..Snapshot::default()
        });
        assert!(!t.contains("# EOF"));
        assert!(t.contains("memcg_drift_cgroups_left_out 4"), "{t}");
        assert!(t.contains("memcg_drift_exported_cgroups 0"), "{t}");
    }
}
