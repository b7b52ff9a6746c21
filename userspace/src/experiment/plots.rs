//! The plots of run records (`run … --svg DIR`, `report FILE --svg DIR`): each experiment's
//! own (through the registry, [`super::Experiment::plots`]) and, for any run with ledgers, the
//! ledger's terms per phase, stacked. Drawn with [`crate::plot`]'s charts.

use serde_json::Value;

use crate::experiment::Result;
use crate::plot::{MIB, stacked_bars};

use super::Report;

/// The plots of a run record: (file name, SVG text).
pub fn run_plots(r: &Report) -> Result<Vec<(String, String)>> {
    let mut out = match super::registered(&r.experiment) {
        Some(e) => (e.plots)(r)?,
        None => Vec::new(),
    };
    out.extend(ledgers(r)?);
    Ok(out)
}

/// A plot's title: the run and what it shows.
pub(crate) fn title(r: &Report, what: &str) -> String {
    format!("{} run {}: {what}", r.experiment, r.run_id)
}

/// A JSON number.
pub(crate) fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Any run with ledgers (kmem, shmem, ...): the terms per ledger, stacked.
fn ledgers(r: &Report) -> Result<Option<(String, String)>> {
    if r.ledgers.is_empty() {
        return Ok(None);
    }
    let cats: Vec<String> = r
        .ledgers
        .iter()
        .map(|l| format!("{} ({})", l.label, l.cgroup))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for l in &r.ledgers {
        for t in l.json["terms"].as_array().into_iter().flatten() {
            if let Some(n) = t["term"].as_str()
                && !names.iter().any(|x| x == n)
            {
                names.push(n.to_string());
            }
        }
    }
    let mut segs: Vec<(String, Vec<f64>)> = names
        .iter()
        .map(|n| {
            let vals = r
                .ledgers
                .iter()
                .map(|l| {
                    l.json["terms"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|t| t["term"].as_str() == Some(n))
                        .and_then(|t| num(&t["bytes"]))
                        .unwrap_or(0.0)
                        / MIB
                })
                .collect();
            (n.clone(), vals)
        })
        .collect();
    segs.push((
        "unexplained".into(),
        r.ledgers
            .iter()
            .map(|l| l.unexplained_pages as f64 * r.page_size as f64 / MIB)
            .collect(),
    ));
    Ok(Some((
        format!("{}-ledgers.svg", r.experiment),
        stacked_bars(&title(r, "ledger terms per phase"), "MiB", &cats, &segs)?,
    )))
}
