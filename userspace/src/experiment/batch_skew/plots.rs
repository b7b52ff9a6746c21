//! `run batch-skew --svg DIR`: each CPU's never-flushed NR_ANON_MAPPED residue and charge
//! stock per iteration, with the stock's bound (the observed charge batch) drawn.

use crate::experiment::Result;
use crate::plot::{Series, line_chart};

use super::super::{
    Report,
    plots::{num, title},
};

/// batch-skew: per-CPU residues and stock per iteration.
pub(super) fn plots(r: &Report) -> Result<Vec<(String, String)>> {
    let iters = r.results["iterations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut cpus: Vec<u64> = iters
        .iter()
        .flat_map(|i| i["cpus"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["cpu"].as_u64())
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    let per_cpu = |key: &str, what: &str| -> Vec<Series> {
        cpus.iter()
            .map(|cpu| Series {
                name: format!("cpu{cpu} {what}"),
                points: iters
                    .iter()
                    .filter_map(|i| {
                        let x = num(&i["index"])?;
                        let row = i["cpus"]
                            .as_array()?
                            .iter()
                            .find(|c| c["cpu"].as_u64() == Some(*cpu))?;
                        Some((x, num(&row[key])?))
                    })
                    .collect(),
            })
            .collect()
    };
    let residues = line_chart(
        &title(r, "never-flushed NR_ANON_MAPPED per CPU"),
        "iteration",
        "pages (per-CPU residue)",
        &per_cpu("residue", "residue"),
        &[],
        &[],
    )?;
    let batch = r.results["observed_batch"].as_f64();
    let hl: Vec<(f64, String)> = batch
        .map(|b| (b, format!("observed charge batch ({b} pages)")))
        .into_iter()
        .collect();
    let stock = line_chart(
        &title(r, "charge stock per CPU after each touch"),
        "iteration",
        "pages in the stock",
        &per_cpu("stock_after_touch", "stock"),
        &[],
        &hl,
    )?;
    Ok(vec![
        ("batch-skew-residues.svg".into(), residues),
        ("batch-skew-stock.svg".into(), stock),
    ])
}
