//! `memcg-drift trace`: resolves the cgroup (a path or a process), attaches the probes of one
//! plan, records until Ctrl-C or `--duration` (printing each `--interval`), renders.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    attach::{Filter, MapSizes},
    cgroup::{MemCgroup, MemoryHierarchy},
    cli::TraceArgs,
    trace::{IntervalReport, TraceReport, render_interval, render_text, rows, subtree_paths},
};

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
    Ok(crate::cgroup::open_arg(hier, &rel)?)
}

/// Runs `trace`.
pub fn run(args: &TraceArgs, hier: &MemoryHierarchy) -> anyhow::Result<i32> {
    let target = match (&args.cgroup, args.pid) {
        (Some(path), _) => crate::cgroup::open_arg(hier, path)?,
        (None, Some(pid)) => cgroup_of_pid(hier, pid)?,
        (None, None) => anyhow::bail!("give --cgroup PATH or --pid PID"),
    };
    let filter = Filter {
        target: Some(target.id()),
        descendants: args.descendants,
    };
    super::stop::catch()?;
    // The subtree as it is now sizes the per-cgroup maps (cgroups created later fit in the
    // headroom, or are counted as lost when they do not).
    let mut paths = subtree_paths(&target, args.descendants);
    let cpus = crate::residue::possible_cpus().map_err(anyhow::Error::msg)?;
    let sizes = MapSizes::for_cgroups(paths.len(), cpus, args.max_keys);
    // One probes object for every hook: each kernel hook runs one program doing all its jobs.
    // The cgroups that exist now get dense slots (no hash lookups for their events).
    let slotted: Vec<u64> = paths.keys().copied().collect();
    let (tracer, charge_tracer) =
        crate::tracer::start_all(filter, args.attach.flavour(), sizes, slotted)?;
    let mut charge = crate::charge::ChargeRecorder::new(charge_tracer, filter);
    let attach_ms = crate::process::ms_since_process_start();
    if super::stop::requested() {
        anyhow::bail!("interrupted while attaching; nothing recorded, probes detached");
    }
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
    while !super::stop::requested() && args.duration.is_none_or(|d| t0.elapsed() < d) {
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
        maps: sizes,
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
