//! Project automation: `cargo xtask setup | build | run | test | vm-test`.
//!
//! `setup` installs what a fresh machine of this project's kind lacks (Debian packages, the
//! `debian-rust` rustup toolchain link, bpf-linker), printing each step, and is a quick no-op
//! when everything is present. Every other subcommand runs `setup` first.
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod setup;
mod vm;

#[derive(Parser)]
#[command(about = "memcg-drift project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain and test dependencies (idempotent).
    Setup {
        /// Also install what `vm-test` needs (QEMU, busybox, cpio).
        #[arg(long)]
        vm: bool,
    },
    /// Build memcg-drift (release) with its probes.
    Build,
    /// Set up, build and run memcg-drift with ARGS (default: `doctor`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up and run every test: unit tests, kernel integration tests, and the guest suites.
    Test {
        /// Skip the QEMU guest suites (6.1 and 6.12).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot a Debian kernel under QEMU and run the integration scenarios inside it.
    VmTest(vm::VmArgs),
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup { vm } => setup::setup(vm),
        Cmd::Build => {
            setup::setup(false)?;
            build_release()
        }
        Cmd::Run { args } => {
            setup::setup(false)?;
            build_release()?;
            let args = if args.is_empty() {
                vec!["doctor".to_string()]
            } else {
                args
            };
            let status = Command::new(workspace_root().join("target/release/memcg-drift"))
                .args(&args)
                .status()
                .context("starting memcg-drift")?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
            Ok(())
        }
        Cmd::Test { no_vm, args } => {
            setup::setup(!no_vm)?;
            // The CLI tests run the binary itself (target/debug/memcg-drift).
            cargo(&["build", "-p", "memcg-drift"], &[])?;
            cargo(&["test", "--workspace", "--exclude", "probes-ebpf"], &args)?;
            if !no_vm {
                for kernel in vm::KERNELS {
                    vm::run(&vm::VmArgs::for_kernel(kernel))?;
                }
            }
            Ok(())
        }
        Cmd::VmTest(args) => {
            setup::setup(true)?;
            vm::run(&args)
        }
    }
}

fn build_release() -> Result<()> {
    cargo(&["build", "--release", "-p", "memcg-drift"], &[])
}

/// Runs cargo in the workspace root with `base` then `extra` arguments.
pub fn cargo(base: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(base)
        .args(extra)
        .status()
        .with_context(|| format!("starting {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", base.join(" "));
    }
    Ok(())
}

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
