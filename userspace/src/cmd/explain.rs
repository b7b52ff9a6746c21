//! `memcg-drift explain`: one ledger of a cgroup, or one every `--watch` interval.

use std::time::{Duration, Instant};

use crate::{
    cgroup::MemoryHierarchy,
    cli::ExplainArgs,
    explain::{Explainer, render_text},
};

/// Runs `explain`.
pub fn run(args: &ExplainArgs, hier: &MemoryHierarchy) -> anyhow::Result<i32> {
    let target = crate::cgroup::open_arg(hier, &args.path)?;
    if args.watch.is_some() {
        super::stop::catch()?;
    }
    let mut ex = Explainer::new(hier, target)?;
    loop {
        let t0 = Instant::now();
        let report = ex.report()?;
        if let Some(f) = &args.svg {
            crate::safefs::write_user_output(
                f,
                crate::plot::explain_plot(&report)?.as_bytes(),
                "--svg",
            )?;
        }
        match (args.json, args.watch.is_some()) {
            (true, false) => println!("{}", serde_json::to_string_pretty(&report)?),
            (true, true) => println!("{}", serde_json::to_string(&report)?),
            (false, _) => print!("{}", render_text(&report, args.cpus)),
        }
        let Some(every) = args.watch else {
            return Ok(0);
        };
        while t0.elapsed() < every {
            if super::stop::requested() {
                return Ok(0);
            }
            std::thread::sleep((every - t0.elapsed().min(every)).min(Duration::from_millis(50)));
        }
        if super::stop::requested() {
            return Ok(0);
        }
        if !args.json {
            println!();
        }
    }
}
