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
        /// Skip the QEMU guest suites (6.1, 6.12 and 6.18).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot a Debian kernel under QEMU and run the integration scenarios inside it.
    VmTest(vm::VmArgs),
    /// Measure what the probes cost a page-fault-heavy workload: baseline, the floor (an empty
    /// program on the same hooks), `memcg-drift trace` recording, filtering and on the root
    /// with descendants, and bpftrace, interleaved round by round in one run; also `trace`'s
    /// attach time, `explain`'s latency and each program's time per run (root).
    Bench {
        /// Arguments for the benchmark: `--pages N --reps R --rounds N --cpu C
        /// --explain-runs N --settle-ms MS --no-bpftrace --no-profile --alt-bin PATH
        /// --scale LIVE,DYING --no-scale --only-scale --json`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
            // One build for the host suites and the guests: the guests' static release
            // target (the release profile is also the daily commands'; unoptimised, the scale
            // suite alone took 413 s on the host). The CLI tests run the binary cargo built
            // next to them (target/x86_64-unknown-linux-gnu/release/memcg-drift).
            let ws = workspace_root();
            run_cargo(vm::static_cargo(
                &ws,
                &["build", "--release", "-p", "memcg-drift"],
            ))?;
            let mut totals = Totals::default();
            for packages in [
                &["-p", "memcg-drift", "-p", "probes-common", "-p", "xtask"][..],
                &["-p", "integration-tests"][..],
            ] {
                let mut cmd =
                    vm::static_cargo(&ws, &[&["test", "--release"][..], packages].concat());
                cmd.args(&args);
                totals.add(&cargo_test(cmd)?);
            }
            let mut failed = Vec::new();
            if !no_vm {
                let guests = vm::ci_guests();
                for (g, failure) in guests.iter().zip(vm::run_many(&guests)?) {
                    totals.add(&guest_totals(g));
                    if let Some(f) = failure {
                        failed.push(format!("{}: {f}", g.run_dir_name()));
                    }
                }
            }
            // One plain closing line over host and guest suites.
            println!(
                "{} passed, {} failed, {} skipped",
                totals.passed, totals.failed, totals.ignored
            );
            if !failed.is_empty() {
                anyhow::bail!("guest(s) failed:\n  {}", failed.join("\n  "));
            }
            Ok(())
        }
        Cmd::Bench { args } => {
            setup::setup(false)?;
            build_release()?;
            cargo(
                &[
                    "run",
                    "--release",
                    "-p",
                    "integration-tests",
                    "--bin",
                    "overhead",
                    "--",
                ],
                &args,
            )
        }
        Cmd::VmTest(args) => {
            setup::setup(true)?;
            vm::run(&args)
        }
    }
}

/// Test counts summed over libtest summaries.
#[derive(Default, Debug)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
    }

    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, passing its output through and counting its libtest summaries.
fn cargo_test(mut cmd: Command) -> Result<Totals> {
    use std::io::{BufRead as _, Write as _};
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut out = std::io::stdout().lock();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        totals.add_line(&line);
        writeln!(out, "{line}")?;
    }
    drop(out);
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {what} failed ({status})");
    }
    Ok(totals)
}

/// Counts of a finished guest run, from the libtest output it saved.
fn guest_totals(args: &vm::VmArgs) -> Totals {
    let dir = vm::target_dir(&workspace_root())
        .join("vm-runs")
        .join(args.run_dir_name())
        .join("tests");
    let mut totals = Totals::default();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for line in std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
        {
            totals.add_line(line);
        }
    }
    totals
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

/// Runs a prepared cargo command (e.g. [`vm::static_cargo`]) to its end.
fn run_cargo(mut cmd: Command) -> Result<()> {
    let status = cmd.status().context("starting cargo")?;
    if !status.success() {
        bail!(
            "cargo {:?} failed ({status})",
            cmd.get_args().collect::<Vec<_>>()
        );
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

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn libtest_summaries_are_summed() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 10 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1s");
        t.add_line(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 4 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (13, 1, 2));
    }
}
