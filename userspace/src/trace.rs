//! `memcg-drift trace`: per-CPU, per-item statistic deltas of one cgroup (and optionally its
//! subtree) over a window, with loss counters.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    attach::{Filter, HookOutcome},
    cgroup::{MemCgroup, MemoryHierarchy},
    cli::TraceArgs,
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
        "\nlost {} events (map full {}, read failed {}); {} events of other cgroups filtered",
        r.lost, c.map_full, c.read_failed, c.filtered
    );
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

/// The memory cgroup of process `pid` (`trace -p`).
fn cgroup_of_pid(hier: &MemoryHierarchy, pid: i32) -> anyhow::Result<MemCgroup> {
    let file = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("--pid {pid}: no such process"),
        _ => anyhow::anyhow!("--pid {pid}: {file}: {e}"),
    })?;
    let rel = crate::cgroup::parse_proc_cgroup(&text, hier.version).ok_or_else(|| {
        anyhow::anyhow!(
            "--pid {pid}: {file} names no {} memory cgroup",
            hier.version
        )
    })?;
    crate::run::open_cgroup(hier, &rel)
}

/// Paths (relative to the hierarchy root) of the target and its live descendants, by id.
fn subtree_paths(target: &MemCgroup, descendants: bool) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    m.insert(target.id(), target.rel_path().display().to_string());
    if descendants {
        for d in target.descendants().unwrap_or_default() {
            m.insert(d.id(), d.rel_path().display().to_string());
        }
    }
    m
}

/// Set by SIGINT/SIGTERM while `trace` runs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handler: from here on a signal ends the run cleanly (links are
/// dropped, a tracefs mount made by the tool is undone) instead of killing the process.
fn catch_stop_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

/// Runs `trace`.
pub fn run(args: &TraceArgs, hier: &MemoryHierarchy) -> anyhow::Result<i32> {
    let target = match (&args.cgroup, args.pid) {
        (Some(path), _) => crate::run::open_cgroup(hier, path)?,
        (None, Some(pid)) => cgroup_of_pid(hier, pid)?,
        (None, None) => anyhow::bail!("give --cgroup PATH or --pid PID"),
    };
    let filter = Filter {
        target: Some(target.id()),
        descendants: args.descendants,
    };
    catch_stop_signals()?;
    // One probes object for every hook: each kernel hook runs one program doing all its jobs.
    let (tracer, charge_tracer) = crate::tracer::start_all(filter, args.attach.flavour())?;
    let mut charge = crate::charge::ChargeRecorder::new(charge_tracer, filter);
    let attach_ms = crate::run::ms_since_process_start();
    if STOP.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted while attaching; nothing recorded, probes detached");
    }
    let mut paths = subtree_paths(&target, args.descendants);
    let start = tracer.snapshot()?;
    charge.begin()?;
    let t0 = Instant::now();
    // On stderr in every mode: tells a person (and tests) that recording has begun.
    eprintln!(
        "tracing {} ({}); {}",
        target.path().display(),
        tracer
            .outcomes
            .iter()
            .filter_map(|o| o.used.as_ref())
            .map(|u| format!("{} {}", u.flavour, u.target))
            .collect::<Vec<_>>()
            .join(", "),
        match args.duration {
            Some(d) => format!("for {}", humantime::format_duration(d)),
            None => "Ctrl-C to stop".to_string(),
        }
    );
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096);
    let mut tick = (start.clone(), t0, 0u64);
    // Prints the interval from `tick` to `now` (-i).
    let emit = |now: &crate::collect::StatSnapshot,
                tick: &(crate::collect::StatSnapshot, Instant, u64),
                paths: &mut BTreeMap<u64, String>|
     -> anyhow::Result<()> {
        let window = now.since(&tick.0);
        paths.extend(subtree_paths(&target, args.descendants));
        let r = IntervalReport {
            interval: tick.2 + 1,
            t_s: t0.elapsed().as_secs_f64(),
            duration_s: tick.1.elapsed().as_secs_f64(),
            rows: rows(&window, &tracer.items, tracer.unit, page_size, paths),
            lost: window.counters.lost(),
            counters: window.counters,
        };
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print!("{}", render_interval(&r));
        }
        Ok(())
    };
    while !STOP.load(Ordering::SeqCst) && args.duration.is_none_or(|d| t0.elapsed() < d) {
        let left = args.duration.map_or(Duration::from_millis(50), |d| {
            d.saturating_sub(t0.elapsed())
        });
        std::thread::sleep(left.min(Duration::from_millis(50)));
        if let Some(every) = args.interval
            && tick.1.elapsed() >= every
        {
            let now = tracer.snapshot()?;
            emit(&now, &tick, &mut paths)?;
            tick = (now, Instant::now(), tick.2 + 1);
        }
    }
    let end = tracer.snapshot()?;
    if args.interval.is_some() && tick.1.elapsed() >= Duration::from_millis(1) {
        // The last, partial interval: the intervals add up to the whole run.
        emit(&end, &tick, &mut paths)?;
    }
    let elapsed = t0.elapsed();
    paths.extend(subtree_paths(&target, args.descendants));
    let window = end.since(&start);
    let report = TraceReport {
        cgroup: target.path().display().to_string(),
        cgroup_id: target.id(),
        descendants: args.descendants,
        duration_s: elapsed.as_secs_f64(),
        attach_ms,
        unit: tracer.unit,
        hooks: tracer.outcomes.clone(),
        rows: rows(&window, &tracer.items, tracer.unit, page_size, &paths),
        lost: window.counters.lost(),
        counters: window.counters,
        charge: charge.finish(&paths, Some(hier.version))?,
    };
    if args.json && args.interval.is_some() {
        // One JSON document per line throughout.
        println!("{}", serde_json::to_string(&report)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(0)
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
