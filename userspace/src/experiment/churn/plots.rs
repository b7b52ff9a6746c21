//! `run churn --svg DIR`: dying cgroups over time; each churned cgroup's rmdir-to-release
//! lifetime.

use crate::experiment::Result;
use crate::plot::{Series, line_chart};

use super::super::{
    Report,
    plots::{num, title},
};

/// churn: dying over time and lifetimes.
pub(super) fn plots(r: &Report) -> Result<Vec<(String, String)>> {
    let pts = r.results["dying_over_time"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut series = vec![Series {
        name: "dying (css walk)".into(),
        points: pts
            .iter()
            .filter_map(|p| Some((num(&p["ms"])?, num(&p["walk"])?)))
            .collect(),
    }];
    let kernel: Vec<(f64, f64)> = pts
        .iter()
        .filter_map(|p| Some((num(&p["ms"])?, num(&p["nr_dying_descendants"])?)))
        .collect();
    if !kernel.is_empty() {
        series.push(Series {
            name: "nr_dying_descendants (v2 cgroup.stat)".into(),
            points: kernel,
        });
    }
    let dying = line_chart(
        &title(r, "dying cgroups under the run"),
        "time since the start (ms)",
        "dying cgroups",
        &series,
        &[],
        &[],
    )?;
    let churned = r.results["churned"].as_array().cloned().unwrap_or_default();
    let life = |pinned: bool, name: &str| Series {
        name: name.into(),
        points: churned
            .iter()
            .filter(|c| c["pinned"].as_bool() == Some(pinned))
            .filter_map(|c| {
                let ms = num(&c["traced_lifetime_ms"])
                    .or_else(|| c["lifetime_ms"].as_array().and_then(|a| num(a.get(1)?)))?;
                Some((num(&c["index"])?, ms))
            })
            .collect(),
    };
    let lifetimes = line_chart(
        &title(r, "rmdir to release, per churned cgroup"),
        "churned cgroup (index)",
        "lifetime after rmdir (ms)",
        &[life(false, "unpinned"), life(true, "pinned by page cache")],
        &[],
        &[],
    )?;
    Ok(vec![
        ("churn-dying.svg".into(), dying),
        ("churn-lifetimes.svg".into(), lifetimes),
    ])
}
