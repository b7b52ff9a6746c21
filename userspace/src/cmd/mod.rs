//! The subcommands: argument structs (from `cli`) in, orchestration (resolve -> collect ->
//! analyse -> render) out. This is the top layer: nothing below imports it. Each command with
//! more than a few lines of orchestration has a file of its own.

mod explain;
mod run;
mod stop;
mod trace;

use crate::{
    cgroup,
    cli::{Cli, Command},
    doctor, experiment,
};

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
            run::run(a, &hier)
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
