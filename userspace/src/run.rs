//! Dispatch of the subcommands (everything but argument parsing and the workload).

use crate::{
    cgroup,
    cli::{Cli, Command},
    doctor, trace,
};

/// Checks the common preconditions for commands that load eBPF.
fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("{what} needs root (loading eBPF programs and reading kernel memory needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)");
    }
    Ok(())
}

/// The memory hierarchy, or a one-line error.
pub fn memory_hierarchy() -> anyhow::Result<cgroup::MemoryHierarchy> {
    let layout = cgroup::detect_layout()?;
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
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(trace::run(&a, &hier)).map(|c| c as u8)
        }
        Command::Cleanup => {
            require_root("cleanup")?;
            let hier = memory_hierarchy()?;
            let report = cgroup::cleanup_stale(&hier)?;
            println!("{report}");
            Ok(0)
        }
        Command::Workload => unreachable!("handled in main"),
    }
}
