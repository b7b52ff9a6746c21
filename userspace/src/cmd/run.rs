//! `memcg-drift run EXPERIMENT`: the experiment's arguments (clap) become its parameters, it
//! runs, and its report is drawn, printed and recorded.
//!
//! The match below is the one place that knows both sides: the clap types (`cli`, which the
//! experiments may not import) and each experiment's `run` and `Params`. Each arm only turns
//! arguments into parameters (defaults that depend on this machine: the workload's CPU, the
//! page size, the memory nodes); the registry (`experiment::REGISTRY`) is the report side.

use crate::{
    cgroup::{self, MemoryHierarchy},
    cli::{CpuChoice, Experiment, RunArgs},
    experiment,
};

/// Runs `run`: the experiment, then its plots (`--svg`), its text or JSON and its record.
pub fn run(a: RunArgs, hier: &MemoryHierarchy) -> anyhow::Result<u8> {
    cgroup::install_cleanup_on_signals()?;
    cgroup::install_cleanup_on_panic();
    let common = experiment::Common {
        json: a.json,
        record: a.record.clone(),
    };
    if let Some(r) = &common.record {
        check_writable(r)?;
    }
    let report = match a.experiment {
        Experiment::BatchSkew(b) => {
            let online = experiment::online_cpus();
            let cpus = match b.cpus {
                CpuChoice::All => online.clone(),
                CpuChoice::List(l) => l,
            };
            let alloc_cpu = b
                .alloc_cpu
                .or_else(|| online.last().copied())
                .ok_or_else(|| anyhow::anyhow!("no online CPU"))?;
            experiment::batch_skew::run(
                hier,
                experiment::batch_skew::Params {
                    cpus,
                    batch_pages: b.batch_pages,
                    alloc_cpu,
                    iterations: b.iterations,
                    pin_page_cache: b.pin_page_cache,
                    keep_dying: b.keep_dying,
                },
                &common,
            )?
        }
        Experiment::Limit(l) => {
            let page = page_size()?;
            let opts = experiment::limit::Options {
                limit: l.limit,
                step: l.step,
                interval: l.interval,
                grow_to: l.grow_to,
                high: l.high,
                oom_disable: l.oom_disable,
                page_cache: l.page_cache,
                cache_dir: l.cache_dir,
                tmpfs: l.tmpfs,
                shrink_to: l.shrink_to,
                immigrate: l.immigrate,
                cpu: l.cpu,
            };
            let p = experiment::limit::validate(hier, &opts, page)?;
            experiment::limit::run(hier, p, &common)?
        }
        Experiment::Churn(c) => experiment::churn::run(
            hier,
            experiment::churn::Params {
                cycles: c.cycles,
                siblings: c.siblings,
                pin_every: c.pin_every,
                pin_pages: c.pin_pages,
                hold_ms: c.hold.as_millis() as u64,
                release_wait_ms: c.release_wait.as_millis() as u64,
                poll_ms: c.poll.as_millis() as u64,
                job_pages: c.job_pages,
                sibling_pages: c.sibling_pages,
            },
            &common,
        )?,
        Experiment::Kmem(k) => {
            let cpu = workload_cpu(k.cpu)?;
            experiment::kmem::run(
                hier,
                experiment::kmem::Params {
                    sockets: k.sockets,
                    unread_bytes: k.unread_bytes,
                    dentries: k.dentries,
                    cpu,
                },
                &common,
            )?
        }
        Experiment::Shmem(m) => {
            let cpu = workload_cpu(m.cpu)?;
            experiment::shmem::run(
                hier,
                experiment::shmem::Params {
                    pages: m.pages,
                    anon_pages: m.anon_pages,
                    cpu,
                },
                &common,
            )?
        }
        Experiment::Threshold(t) => {
            let cpu = workload_cpu(t.cpu)?;
            let page = page_size()?;
            let top = t.threshold.iter().copied().max().unwrap_or(0);
            experiment::threshold::run(
                hier,
                experiment::threshold::Params {
                    thresholds: t.threshold.clone(),
                    grow_to: t.grow_to.unwrap_or(2 * top),
                    step_pages: (t.step / page).max(1),
                    cpu,
                    root: t.root,
                },
                &common,
            )?
        }
        Experiment::Swap(a) => {
            let cpu = workload_cpu(a.cpu)?;
            experiment::swap::run(
                hier,
                experiment::swap::Params {
                    limit: a.limit,
                    grow_to: a.grow_to.unwrap_or(3 * a.limit),
                    swap_max: a.swap_max,
                    steps: a.steps,
                    cpu,
                    swapoff: a.swapoff,
                },
                &common,
            )?
        }
        Experiment::Migrate(a) => {
            let cpu = workload_cpu(a.cpu)?;
            let page = page_size()?;
            experiment::migrate::run(
                hier,
                experiment::migrate::Params {
                    pages: a.size.div_ceil(page),
                    from: a.from,
                    to: Some(a.to),
                    cpu,
                    method: experiment::migrate::Method::Cpuset,
                },
                &common,
            )?
        }
        Experiment::Hotplug(a) => {
            let cpu = workload_cpu(a.cpu)?;
            let page = page_size()?;
            let nodes = experiment::migrate::memory_nodes();
            // Without --node: the first offlinable node (validate refuses when none).
            let node = a
                .node
                .or_else(|| {
                    experiment::hotplug::offlinable_nodes(&nodes)
                        .first()
                        .copied()
                })
                .or_else(|| nodes.last().copied())
                .unwrap_or(0);
            experiment::migrate::run(
                hier,
                experiment::migrate::Params {
                    pages: a.size.div_ceil(page),
                    from: node,
                    to: None,
                    cpu,
                    method: experiment::migrate::Method::Offline,
                },
                &common,
            )?
        }
    };
    // Plots first: a failed check still draws what happened.
    if let Some(dir) = &a.svg {
        crate::plot::write_all(dir, &crate::experiment::plots::run_plots(&report)?)?;
    }
    Ok(experiment::emit(&report, &common)? as u8)
}

/// Fails early (before anything is created) when `--record FILE` cannot be written.
fn check_writable(path: &std::path::Path) -> anyhow::Result<()> {
    crate::safefs::check_user_output(path, "--record")?;
    Ok(())
}

/// `--cpu` of an experiment's workload, or the last online CPU.
fn workload_cpu(cpu: Option<usize>) -> anyhow::Result<usize> {
    cpu.or_else(|| experiment::online_cpus().last().copied())
        .ok_or_else(|| anyhow::anyhow!("no online CPU"))
}

/// The page size, bytes.
fn page_size() -> anyhow::Result<u64> {
    Ok(nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64)
}
