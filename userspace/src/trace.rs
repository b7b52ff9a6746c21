//! `memcg-drift trace`: per-CPU, per-item statistic deltas of one cgroup (and optionally its
//! subtree) over a window, with loss counters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    attach::HookOutcome,
    cgroup::MemCgroup,
    collect::{Counters, StatSnapshot},
    items::ItemNames,
    tracer::ValueUnit,
};

/// One row: a (cgroup, item, CPU) with a non-zero event count.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    /// Cgroup path relative to the memory hierarchy root (`id:N` if it vanished unseen).
    pub cgroup: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// The kernel's enum name of the item.
    pub item: String,
    /// CPU.
    pub cpu: usize,
    /// Net change in pages (byte items: bytes / page size, rounded toward zero).
    pub delta_pages: i64,
    /// Net change in bytes.
    pub delta_bytes: i64,
    /// Number of updates.
    pub events: u64,
}

/// The whole trace result.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    /// The cgroup as given (absolute path).
    pub cgroup: String,
    /// Its id.
    pub cgroup_id: u64,
    /// Whether descendants were included.
    pub descendants: bool,
    /// Seconds recorded.
    pub duration_s: f64,
    /// Milliseconds from the start of the process until every probe of the plan was attached.
    pub attach_ms: f64,
    /// Capacities of the in-kernel maps (sized from the subtree, or `--max-keys`).
    pub maps: crate::attach::MapSizes,
    /// Unit of the hooks' values.
    pub unit: ValueUnit,
    /// How each stat hook was attached.
    pub hooks: Vec<HookOutcome>,
    /// Rows, ordered by cgroup, item, CPU.
    pub rows: Vec<Row>,
    /// Events that should have been recorded and were not.
    pub lost: u64,
    /// All counters.
    pub counters: Counters,
    /// The charge and OOM paths (`charge` in docs/json.md).
    pub charge: crate::charge::ChargeSection,
}

/// Turns a window of aggregates into rows. Pure.
pub fn rows(
    window: &StatSnapshot,
    names: &ItemNames,
    unit: ValueUnit,
    page_size: i64,
    paths: &BTreeMap<u64, String>,
) -> Vec<Row> {
    // Sum over hooks: the same (cgroup, item) can arrive through both hooks on no kernel, but
    // summing keeps the rows unique whatever the hook split.
    // (path, id, item name, cpu) -> (delta, events, raw item)
    type Acc = BTreeMap<(String, u64, String, usize), (i64, u64, u32)>;
    let mut acc = Acc::new();
    for (k, vals) in &window.rows {
        let path = paths
            .get(&k.cgroup_id)
            .cloned()
            .unwrap_or_else(|| format!("id:{}", k.cgroup_id));
        for (cpu, v) in vals.iter().enumerate() {
            if v.events == 0 {
                continue;
            }
            let e = acc
                .entry((path.clone(), k.cgroup_id, names.name(k.item), cpu))
                .or_insert((0, 0, k.item));
            e.0 += v.delta;
            e.1 += v.events;
        }
    }
    acc.into_iter()
        .map(|((cgroup, cgroup_id, item, cpu), (delta, events, raw))| {
            // Function probes see the kernel's native unit (bytes for *_B, KiB for *_KB items);
            // tracepoints see pages for every item.
            let (delta_pages, delta_bytes) = match (unit, names.unit_bytes(raw)) {
                (ValueUnit::Native, Some(u)) => ((delta * u) / page_size, delta * u),
                _ => (delta, delta * page_size),
            };
            Row {
                cgroup,
                cgroup_id,
                item,
                cpu,
                delta_pages,
                delta_bytes,
                events,
            }
        })
        .collect()
}

/// Renders the text report (fits 100 columns).
pub fn render_text(r: &TraceReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "memcg-drift trace: {} (id {}{}) for {:.2} s",
        r.cgroup,
        r.cgroup_id,
        if r.descendants {
            ", with descendants"
        } else {
            ""
        },
        r.duration_s
    );
    for h in &r.hooks {
        match &h.used {
            Some(u) => {
                let _ = writeln!(s, "  hook {:<18} {} {}", h.id, u.flavour, u.target);
            }
            None => {
                let _ = writeln!(s, "  hook {:<18} NOT ATTACHED: lost {}", h.id, h.loss);
            }
        }
    }
    let _ = writeln!(
        s,
        "  attached {:.0} ms after the process started",
        r.attach_ms
    );
    let _ = writeln!(
        s,
        "  values: {}",
        match r.unit {
            ValueUnit::Pages =>
                "tracepoint values, normalised to pages by the kernel (byte items rounded)",
            ValueUnit::Native => "function arguments: pages; bytes for *_B, KiB for *_KB items",
        }
    );
    let _ = writeln!(s);
    render_rows(&r.rows, &mut s);
    let c = &r.counters;
    let _ = writeln!(
        s,
        "\nlost {} events (map full {}, read failed {}); skipped {}; {} events of other cgroups \
         filtered",
        r.lost,
        c.map_full,
        c.read_failed,
        c.missed.map_or("n/a".to_string(), |n| n.to_string()),
        c.filtered
    );
    if c.missed.is_some_and(|n| n > 0) {
        let _ = writeln!(
            s,
            "  skipped: stat updates of any cgroup in an interrupt that came while the same \
             program ran on that CPU (the kernel's recursion_misses; it does not say whose)"
        );
    }
    if c.map_full > 0 {
        let _ = writeln!(
            s,
            "  the stat aggregates held {} keys and filled up: the rows above miss those \
             updates; --max-keys sets a bigger capacity",
            r.maps.stat_keys
        );
    }
    s.push_str(&crate::charge::render_section(&r.charge));
    s
}

/// The rows as a table (or a line saying there are none).
fn render_rows(rows: &[Row], s: &mut String) {
    use std::fmt::Write as _;
    if rows.is_empty() {
        let _ = writeln!(s, "no statistic updates recorded");
    } else {
        let _ = writeln!(
            s,
            "{:<28} {:<26} {:>4} {:>12} {:>14} {:>9}",
            "CGROUP", "ITEM", "CPU", "PAGES", "BYTES", "EVENTS"
        );
        for row in rows {
            let cg = if row.cgroup.chars().count() > 28 {
                format!(
                    "...{}",
                    row.cgroup
                        .chars()
                        .rev()
                        .take(25)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<String>()
                )
            } else {
                row.cgroup.clone()
            };
            let _ = writeln!(
                s,
                "{:<28} {:<26} {:>4} {:>+12} {:>+14} {:>9}",
                cg, row.item, row.cpu, row.delta_pages, row.delta_bytes, row.events
            );
        }
    }
}

/// The deltas of one `--interval` (docs/json.md: `trace` intervals).
#[derive(Debug, Clone, Serialize)]
pub struct IntervalReport {
    /// 1, 2, ...
    pub interval: u64,
    /// Seconds from the start of recording to the end of this interval.
    pub t_s: f64,
    /// This interval's length, seconds.
    pub duration_s: f64,
    /// Rows of this interval.
    pub rows: Vec<Row>,
    /// Events lost in this interval.
    pub lost: u64,
    /// This interval's counters.
    pub counters: Counters,
}

/// Renders one interval (text).
pub fn render_interval(r: &IntervalReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "--- interval {} ({:.2} s, ending {:.2} s after the start): lost {}, {} filtered",
        r.interval, r.duration_s, r.t_s, r.lost, r.counters.filtered
    );
    render_rows(&r.rows, &mut s);
    s
}

/// Paths (relative to the hierarchy root) of the target and its live descendants, by id.
pub fn subtree_paths(target: &MemCgroup, descendants: bool) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    m.insert(target.id(), target.rel_path().display().to_string());
    if descendants {
        for d in target.descendants().unwrap_or_default() {
            m.insert(d.id(), d.rel_path().display().to_string());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use probes_common::{StatKey, StatValue};

    use super::*;

    #[test]
    fn rows_convert_units_and_skip_idle_cpus() {
        let names = ItemNames::from_pairs(&[
            ("NR_ANON_MAPPED", 3),
            ("NR_SLAB_UNRECLAIMABLE_B", 7),
            ("NR_KERNEL_STACK_KB", 8),
        ]);
        let mut w = StatSnapshot::default();
        w.rows.insert(
            StatKey {
                cgroup_id: 9,
                item: 3,
                hook: 1,
            },
            vec![
                StatValue::default(),
                StatValue {
                    delta: 64,
                    events: 64,
                },
            ],
        );
        w.rows.insert(
            StatKey {
                cgroup_id: 9,
                item: 7,
                hook: 1,
            },
            vec![
                StatValue {
                    delta: 8192,
                    events: 2,
                },
                StatValue::default(),
            ],
        );
        let paths = BTreeMap::from([(9, "/a".to_string())]);
        let r = rows(&w, &names, ValueUnit::Native, 4096, &paths);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].item.as_str(),
                r[0].cpu,
                r[0].delta_pages,
                r[0].delta_bytes
            ),
            ("NR_ANON_MAPPED", 1, 64, 262144)
        );
        assert_eq!(
            (
                r[1].item.as_str(),
                r[1].cpu,
                r[1].delta_pages,
                r[1].delta_bytes
            ),
            ("NR_SLAB_UNRECLAIMABLE_B", 0, 2, 8192)
        );
        // KiB items from function probes: 16 KiB of kernel stack is 4 pages.
        let mut kb = StatSnapshot::default();
        kb.rows.insert(
            StatKey {
                cgroup_id: 9,
                item: 8,
                hook: 0,
            },
            vec![StatValue {
                delta: 16,
                events: 1,
            }],
        );
        let r2 = rows(&kb, &names, ValueUnit::Native, 4096, &paths);
        assert_eq!((r2[0].delta_pages, r2[0].delta_bytes), (4, 16384));
        // Tracepoint values are pages for every item.
        let r = rows(&w, &names, ValueUnit::Pages, 4096, &BTreeMap::new());
        assert_eq!(
            (r[1].delta_pages, r[1].delta_bytes, r[1].cgroup.as_str()),
            (8192, 8192 * 4096, "id:9")
        );
    }

    #[test]
    fn text_fits_100_columns() {
        let report = TraceReport {
            cgroup: "/sys/fs/cgroup/memory/a/very/long/path/that/goes/on".into(),
            cgroup_id: 1,
            descendants: true,
            duration_s: 1.0,
            attach_ms: 120.0,
            maps: crate::attach::MapSizes::default(),
            unit: ValueUnit::Pages,
            hooks: vec![],
            rows: vec![Row {
                cgroup: "/memcg-drift/123-456/a/very/long/child/name".into(),
                cgroup_id: 1,
                item: "NR_SLAB_UNRECLAIMABLE_B".into(),
                cpu: 127,
                delta_pages: -123456789,
                delta_bytes: -505678990000,
                events: 123456789,
            }],
            lost: 0,
            counters: Counters::default(),
            charge: Default::default(),
        };
        for line in render_text(&report).lines().skip(1) {
            assert!(line.chars().count() <= 100, "{line}");
        }
    }
}
