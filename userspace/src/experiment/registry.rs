//! The experiments behind one trait, and the registry that renders any record through it.
//!
//! A record (`--json`, `--record FILE`) keeps its results as JSON under the experiment's name;
//! `report FILE`, the text after a run and `--svg` find the experiment by that name here, read
//! the results back into its typed [`Experiment::Results`] and render them. A new experiment
//! implements the trait in its own file and adds one line to [`REGISTRY`].

use serde::{Deserialize as _, de::DeserializeOwned};

use super::Report;
use crate::experiment::{ExperimentError, Result};

/// Plots: (file name, SVG text).
pub type Plots = Vec<(String, String)>;

/// What the report side needs of an experiment.
pub trait Experiment {
    /// The names its records carry (`Report::experiment`).
    const NAMES: &'static [&'static str];
    /// Its results, as its record keeps them.
    type Results: DeserializeOwned;
    /// The experiment's own text section.
    fn render(r: &Report, res: &Self::Results) -> Result<String>;
    /// Its own plots (file name, SVG); the ledger plot of any run is drawn besides them.
    fn plots(_r: &Report, _res: &Self::Results) -> Result<Plots> {
        Ok(Vec::new())
    }
}

/// One registered experiment, its results read back from the record.
pub struct Registered {
    /// The names its records carry.
    pub names: &'static [&'static str],
    /// Its text section.
    pub render: fn(&Report) -> Result<String>,
    /// Its own plots.
    pub plots: fn(&Report) -> Result<Plots>,
}

fn results<E: Experiment>(r: &Report) -> Result<E::Results> {
    E::Results::deserialize(&r.results).map_err(|e| {
        ExperimentError::Failed(format!("{} results do not read back: {e}", r.experiment))
    })
}

fn render<E: Experiment>(r: &Report) -> Result<String> {
    E::render(r, &results::<E>(r)?)
}

fn plots<E: Experiment>(r: &Report) -> Result<Plots> {
    E::plots(r, &results::<E>(r)?)
}

const fn entry<E: Experiment>() -> Registered {
    Registered {
        names: E::NAMES,
        render: render::<E>,
        plots: plots::<E>,
    }
}

/// Every built-in experiment.
pub const REGISTRY: &[Registered] = &[
    entry::<super::batch_skew::BatchSkew>(),
    entry::<super::limit::Limit>(),
    entry::<super::churn::Churn>(),
    entry::<super::kmem::Kmem>(),
    entry::<super::shmem::Shmem>(),
    entry::<super::threshold::Threshold>(),
    entry::<super::swap::Swap>(),
    entry::<super::migrate::Migrate>(),
];

/// The experiment whose records carry `name`.
pub fn registered(name: &str) -> Option<&'static Registered> {
    REGISTRY.iter().find(|e| e.names.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let mut all: Vec<&str> = REGISTRY
            .iter()
            .flat_map(|e| e.names.iter().copied())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a name registered twice");
        for name in all {
            assert!(registered(name).is_some_and(|e| e.names.contains(&name)));
        }
        assert!(registered("no-such-experiment").is_none());
    }
}
