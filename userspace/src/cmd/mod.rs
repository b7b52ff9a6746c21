//! The subcommands: argument structs (from `cli`) in, orchestration (resolve -> collect ->
//! analyse -> render) out. This is the top layer: nothing below imports it. Each command with
//! more than a few lines of orchestration has a file of its own.

mod explain;
mod stop;
mod trace;

use crate::{
    cgroup,
    cli::{Cli, Command, CpuChoice, Experiment},
    doctor, experiment,
};

/// Fails early (before anything is created) when `--record FILE` cannot be written.
fn check_writable(path: &std::path::Path) -> anyhow::Result<()> {
    crate::safefs::check_user_output(path, "--record")?;
    Ok(())
}

/// Checks the common preconditions for commands that load eBPF.
fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "{what} needs root (loading eBPF programs and reading kernel memory needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
        );
    }
    Ok(())
}

/// The memory hierarchy, or a one-line error.
pub fn memory_hierarchy() -> anyhow::Result<cgroup::MemoryHierarchy> {
    let layout = cgroup::detect_layout()
        .map_err(|e| anyhow::anyhow!("cannot find the cgroup memory controller: {e}"))?;
    layout
        .memory
        .ok_or_else(|| anyhow::anyhow!("no cgroup memory controller is mounted (neither a v1 memory hierarchy nor cgroup2 with memory)"))
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Doctor(a) => {
            let r = doctor::gather();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", doctor::render_text(&r));
            }
            Ok(if r.can_run { 0 } else { 1 })
        }
        Command::Trace(a) => {
            require_root("trace")?;
            let hier = memory_hierarchy()?;
            trace::run(&a, &hier).map(|c| c as u8)
        }
        Command::Explain(a) => {
            require_root("explain")?;
            let hier = memory_hierarchy()?;
            explain::run(&a, &hier).map(|c| c as u8)
        }
        Command::Run(a) => {
            require_root("run")?;
            let hier = memory_hierarchy()?;
            crate::cgroup::install_cleanup_on_signals()?;
            crate::cgroup::install_cleanup_on_panic();
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
                        &hier,
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
                    let p = experiment::limit::validate(&hier, &opts, page)?;
                    experiment::limit::run(&hier, p, &common)?
                }
                Experiment::Churn(c) => experiment::churn::run(
                    &hier,
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
                        &hier,
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
                        &hier,
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
                        &hier,
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
                        &hier,
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
                        &hier,
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
                        &hier,
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
            experiment::emit(&report, &common).map(|c| c as u8)
        }
        Command::Report(a) => {
            let r = experiment::load(&a.file)?;
            if let Some(dir) = &a.svg {
                crate::plot::write_all(dir, &crate::experiment::plots::run_plots(&r)?)?;
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", experiment::render_text(&r));
            }
            Ok(0)
        }
        Command::Export(a) => {
            require_root("export")?;
            let hier = memory_hierarchy()?;
            let target = cgroup::open_arg(&hier, &a.cgroup)?;
            let opts = crate::export::Options {
                listen: a.listen,
                descendants: a.descendants,
                max_cgroups: a.max_cgroups as usize,
                interval: a.interval,
            };
            Ok(crate::export::run(&opts, target, &hier)? as u8)
        }
        Command::Cleanup => {
            require_root("cleanup")?;
            let hier = memory_hierarchy()?;
            let report = cgroup::cleanup_stale(&hier)?;
            match crate::workload::batch::remove_cache() {
                Ok(Some(p)) => println!(
                    "removed {} (this boot's MEMCG_CHARGE_BATCH; the next run measures it again)",
                    p.display()
                ),
                Ok(None) => {}
                Err(e) => println!("could not remove the charge-batch cache: {e}"),
            }
            println!("{report}");
            Ok(0)
        }
        Command::Workload => unreachable!("handled in main"),
    }
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
