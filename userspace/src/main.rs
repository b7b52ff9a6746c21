//! The `memcg-drift` command. Errors are printed as one line and exit non-zero.
use std::process::ExitCode;

use clap::Parser as _;
use memcg_drift::{
    cli::{Cli, Command},
    cmd, process,
};

fn main() -> ExitCode {
    // The attach time `trace` and `doctor` report counts from here.
    process::mark_process_start();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(
                e.kind(),
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line names the bad value and the option; when it ends in
            // a colon ("the following required arguments were not provided:"), the next line
            // names them.
            let msg = e.to_string();
            let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut line = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            if line.ends_with(':')
                && let Some(next) = lines.next()
            {
                line = format!("{line} {next}");
            }
            eprintln!("memcg-drift: {line}");
            return ExitCode::from(2);
        }
    };
    if let Command::Workload = cli.command {
        memcg_drift::workload::workload_main();
    }
    let result = cmd::run(cli);
    // A SIGINT/SIGTERM/SIGHUP that a run's cleanup thread is handling ends the process with
    // that signal once its cgroups are gone; an error caused by the cleanup (its workload
    // killed, its cgroup removed) is not the user's news.
    memcg_drift::cgroup::exit_for_pending_signal();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("memcg-drift: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
