//! Overhead benchmark: what the stat-path probes cost a page-fault-heavy workload.
//!
//! One run, three configurations interleaved round by round so that drift of the machine
//! (frequency, other load, page cache) hits all of them alike:
//! - `baseline`: no probes attached;
//! - `recording`: probes attached and recording the workload's cgroup (every fault is
//!   aggregated in the per-CPU map);
//! - `filtered`: probes attached but tracing another cgroup (every fault is looked up and
//!   filtered in the kernel), the usual case when one cgroup is traced on a busy host.
//!
//! Each round the workload (pinned to one CPU, in a cgroup of its own) touches `--pages`
//! anonymous pages and frees them; the time of touch + free is measured from the parent.
//! Reported: per-configuration median nanoseconds per page and the ratio to the baseline.
//! Run with `cargo xtask bench` (root, BPF).

use std::time::Instant;

use memcg_drift::{
    attach::Filter,
    cgroup::{RunGroup, detect_layout},
    tracer::StatTracer,
    workload::{Workload, workload_binary},
};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let pages = arg("--pages", 25_000);
    let rounds = arg("--rounds", 9) as usize;
    let hier = detect_layout()?
        .memory
        .ok_or_else(|| anyhow::anyhow!("no memory controller mounted"))?;
    let run = RunGroup::create(&hier)?;
    let work = run.child("bench-work")?;
    let other = run.child("bench-other")?;
    let cpu = integration_tests::online_cpus()[0];
    let mut w = Workload::spawn(&workload_binary(), &work, cpu)?;
    // Warm up: first touches fault in page tables and the allocator's free lists.
    w.touch(pages)?;
    w.free()?;

    let configs = ["baseline", "recording", "filtered"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut lost = 0;
    for _ in 0..rounds {
        for (i, name) in configs.iter().enumerate() {
            let tracer = match *name {
                "baseline" => None,
                "recording" => Some(StatTracer::start(
                    Filter {
                        target: Some(work.id()),
                        descendants: false,
                    },
                    None,
                )?),
                _ => Some(StatTracer::start(
                    Filter {
                        target: Some(other.id()),
                        descendants: false,
                    },
                    None,
                )?),
            };
            let t0 = Instant::now();
            w.touch(pages)?;
            w.free()?;
            times[i].push(t0.elapsed().as_nanos() as f64 / pages as f64);
            if let Some(t) = &tracer {
                lost += t.snapshot()?.counters.lost();
            }
        }
    }
    let base = median(&mut times[0].clone());
    println!(
        "overhead of the stat-path probes: {pages} pages touched and freed per round, {rounds} rounds, CPU {cpu}"
    );
    println!("{:<10} {:>12} {:>10}", "config", "ns/page", "ratio");
    for (i, name) in configs.iter().enumerate() {
        let m = median(&mut times[i]);
        println!("{name:<10} {m:>12.1} {:>10.3}", m / base);
    }
    println!("events lost while recording: {lost}");
    w.exit()?;
    run.remove()?;
    Ok(())
}
