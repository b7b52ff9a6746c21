//! A running set of stat-path probes: facts -> plan -> load -> attach, then snapshots.
//! Used by `trace`, by the experiments and by the integration tests.

use std::sync::{Arc, Mutex};

use aya::{Btf, Ebpf};

use crate::{
    attach::{self, Filter, HookOutcome, MapSizes, Slots},
    collect::StatSnapshot,
    items::ItemNames,
    kernel::KernelFacts,
    plan::{self, Flavour, FlavourSupport, Group},
};

/// How the values of the attached stat hooks are expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueUnit {
    /// Tracepoint values: the kernel normalises every item to pages before tracing
    /// (`memcg_state_val_in_pages`, 6.12+), rounding sub-page byte deltas away from zero.
    Pages,
    /// Function arguments: pages for page items, bytes for `_B` items, KiB for
    /// `NR_KERNEL_STACK_KB`.
    Native,
}

pub use crate::attach::{SharedEbpf, lock};

/// The charge tracer of [`start_all`], or why it did not start.
pub type ChargeStart = Result<crate::charge::ChargeTracer, crate::charge::ChargeUnavailable>;

/// Why the stat tracer (or the benchmark's floor) could not start or be read.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    /// The kernel's BTF is unavailable.
    #[error(transparent)]
    Btf(#[from] crate::kernel::BtfUnavailable),
    /// aya could not read the kernel's BTF.
    #[error("aya cannot read kernel BTF: {0}")]
    AyaBtf(aya::BtfError),
    /// Configuring or loading the probes object failed.
    #[error(transparent)]
    Load(#[from] attach::LoadError),
    /// BTF names no statistic item.
    #[error(transparent)]
    Items(#[from] crate::items::NoItemEnums),
    /// No stat hook attached: every candidate's reason.
    #[error("no stat-path hook could be attached ({})", .0.join("; "))]
    NoStatHook(Vec<String>),
    /// A floor program did not attach (or there was no hook to put one on).
    #[error("the floor could not be attached: {}", floor_failures(.0))]
    NoFloor(Vec<HookOutcome>),
    /// The stat maps could not be read.
    #[error(transparent)]
    Collect(#[from] crate::collect::CollectError),
    /// The loaded object lacks a map.
    #[error("map {0} missing")]
    MissingMap(&'static str),
    /// aya could not read a map.
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
}

/// The floor's failures in one line.
fn floor_failures(outcomes: &[HookOutcome]) -> String {
    if outcomes.is_empty() {
        return "no hook given".into();
    }
    let why: Vec<String> = outcomes
        .iter()
        .flat_map(|o| &o.failed)
        .map(|(_, target, e)| format!("{target}: {e}"))
        .collect();
    why.join("; ")
}

/// Attached stat probes.
pub struct StatTracer {
    ebpf: SharedEbpf,
    /// The cgroups whose aggregates are in dense slots (the target first).
    slots: Slots,
    /// Where the kernel counts the stat programs' skipped runs, and the programs.
    misses: Option<(attach::MissCounter, Vec<&'static str>)>,
    /// Per stat hook: what was used and what failed.
    pub outcomes: Vec<HookOutcome>,
    /// Item names of this kernel.
    pub items: ItemNames,
    /// The unit of recorded values.
    pub unit: ValueUnit,
    /// Kernel facts (keeps a tracefs mounted by us alive until drop).
    pub facts: Arc<KernelFacts>,
}

/// The stat tracer and the charge tracer of `trace` and the experiments, on ONE probes object
/// loaded once: the stat hooks' programs take the inference readings too, so each kernel hook
/// runs one program (issue 11). The charge side is an error string where the charge layout
/// or the charge hooks cannot be set up; the stat side then still works. The target and as
/// many of `slotted` (existing cgroups the filter records) as `sizes.slots` allows get dense
/// slots.
pub fn start_all(
    filter: Filter,
    only: Option<Flavour>,
    mut sizes: MapSizes,
    slotted: impl IntoIterator<Item = u64>,
) -> Result<(StatTracer, ChargeStart), TracerError> {
    // aya's two parses of the kernel BTF (the loader's, and the one tp_btf and fentry
    // programs attach with) run beside the reading of kallsyms and our own parse.
    let loader = attach::Pending::spawn(attach::loader_without_btf);
    let aya_btf = attach::Pending::spawn(Btf::from_sys_fs);
    let facts = Arc::new(KernelFacts::gather());
    let kbtf = facts.btf()?;
    let mut cfg = attach::probe_config(kbtf, filter)?;
    let slots = Slots::new(filter.target, slotted, sizes.slots);
    sizes.slots = slots.ids().len() as u32;
    slots.configure(&mut cfg);
    let charge_cfg = crate::charge::charge_config(kbtf, &facts);
    let btf = aya_btf.wait().map_err(TracerError::AyaBtf)?;
    let mut ebpf = match &charge_cfg {
        Ok((ccfg, _)) => {
            cfg.flags |= probes_common::flags::INFER;
            crate::charge::load(loader.wait(), &cfg, ccfg, &sizes)?
        }
        Err(_) => attach::load_with(loader.wait(), &cfg, |l| sizes.apply(l))?,
    };
    slots.seed(&mut ebpf)?;
    let stat = StatTracer::attach_on(ebpf, facts.clone(), &btf, only, slots.clone())?;
    let charge = match charge_cfg {
        Ok((_, unusable)) => crate::charge::ChargeTracer::attach_on(
            stat.ebpf.clone(),
            facts,
            &btf,
            slots,
            only,
            &unusable,
            &stat.outcomes,
        )
        .map_err(crate::charge::ChargeUnavailable),
        Err(e) => Err(crate::charge::ChargeUnavailable(e.into())),
    };
    Ok((stat, charge))
}

impl StatTracer {
    /// Attaches the stat hooks with `filter`. `only` forces one flavour. Fails when no stat hook
    /// could be attached, naming every candidate's error.
    pub fn start(filter: Filter, only: Option<Flavour>) -> Result<Self, TracerError> {
        let facts = Arc::new(KernelFacts::gather());
        let kbtf = facts.btf()?;
        let cfg = attach::probe_config(kbtf, filter)?;
        let btf = Btf::from_sys_fs().map_err(TracerError::AyaBtf)?;
        let mut ebpf = attach::load(&cfg)?;
        let slots = Slots::new(filter.target, [], 1);
        slots.seed(&mut ebpf)?;
        Self::attach_on(ebpf, facts, &btf, only, slots)
    }

    /// Attaches the stat hooks on `ebpf`, loaded with the stat configuration of `filter`.
    fn attach_on(
        mut ebpf: Ebpf,
        facts: Arc<KernelFacts>,
        btf: &Btf,
        only: Option<Flavour>,
        slots: Slots,
    ) -> Result<Self, TracerError> {
        let items = ItemNames::from_btf(facts.btf()?)?;
        let plans = stat_plans(&facts, only);
        let outcomes = attach::attach_plans(&mut ebpf, &plans, btf, &facts);
        crate::test_hooks::attach_delay();
        if outcomes.iter().all(|o| o.used.is_none()) {
            let why: Vec<String> = outcomes
                .iter()
                .flat_map(|o| {
                    o.failed
                        .iter()
                        .map(move |(f, t, e)| format!("{} via {f} {t}: {e}", o.id))
                })
                .chain(plans.iter().flat_map(|p| {
                    p.candidates.iter().filter_map(move |v| {
                        v.rejected.as_ref().map(|r| {
                            format!(
                                "{} via {} {}: {r}",
                                p.id, v.candidate.flavour, v.candidate.target
                            )
                        })
                    })
                }))
                .collect();
            return Err(TracerError::NoStatHook(why));
        }
        let unit = if outcomes
            .iter()
            .filter_map(|o| o.used.as_ref())
            .all(|u| matches!(u.flavour, Flavour::TpBtf | Flavour::Tracepoint))
        {
            ValueUnit::Pages
        } else {
            ValueUnit::Native
        };
        let mut programs: Vec<&'static str> = outcomes
            .iter()
            .filter_map(|o| o.used.as_ref().map(|u| u.program))
            .collect();
        programs.sort_unstable();
        programs.dedup();
        let misses = attach::MissCounter::resolve(facts.btf()?).map(|m| (m, programs));
        Ok(Self {
            ebpf: Arc::new(Mutex::new(ebpf)),
            slots,
            misses,
            outcomes,
            items,
            unit,
            facts,
        })
    }

    /// Reads the aggregates now.
    pub fn snapshot(&self) -> Result<StatSnapshot, TracerError> {
        let e = lock(&self.ebpf);
        let mut snap = StatSnapshot::read(&e, self.slots.ids())?;
        snap.counters.missed = self
            .misses
            .as_ref()
            .and_then(|(m, programs)| m.read(&e, programs));
        Ok(snap)
    }
}

/// The plans of the stat hooks. Flavour support is learned by attaching for real (no trial
/// programs needed).
fn stat_plans(facts: &KernelFacts, only: Option<Flavour>) -> Vec<plan::HookPlan> {
    let support = FlavourSupport::<std::convert::Infallible>::new();
    plan::hooks()
        .iter()
        .filter(|h| h.group == Group::Stat)
        .map(|h| plan::plan_hook(h, facts, &support, only))
        .collect()
}

/// The benchmark's floor (`cargo xtask bench`): programs that only add one to a per-CPU slot,
/// attached on exactly the hooks a `trace` attached (each flavour on each kernel target it
/// used: the stat hooks, and the charge, OOM and lifecycle hooks where the kernel allows
/// them), so that what the real probes' bodies cost can be told from what running any
/// program on those hooks costs.
pub struct FloorProbes {
    ebpf: Ebpf,
    /// Per hook: the floor program used, or why it failed.
    pub outcomes: Vec<HookOutcome>,
}

/// A hook `trace` used: its flavour and kernel target as its JSON names them
/// (`hooks[].used`, `charge.hooks[].used`).
pub type UsedHook = (Flavour, String);

/// The floor programs bound to their target at load (`probes-ebpf/src/floor.rs`): one per
/// hook of the flavour.
const FLOOR_FENTRY: [&str; 24] = [
    "floor_fentry_0",
    "floor_fentry_1",
    "floor_fentry_2",
    "floor_fentry_3",
    "floor_fentry_4",
    "floor_fentry_5",
    "floor_fentry_6",
    "floor_fentry_7",
    "floor_fentry_8",
    "floor_fentry_9",
    "floor_fentry_10",
    "floor_fentry_11",
    "floor_fentry_12",
    "floor_fentry_13",
    "floor_fentry_14",
    "floor_fentry_15",
    "floor_fentry_16",
    "floor_fentry_17",
    "floor_fentry_18",
    "floor_fentry_19",
    "floor_fentry_20",
    "floor_fentry_21",
    "floor_fentry_22",
    "floor_fentry_23",
];
const FLOOR_FEXIT: [&str; 6] = [
    "floor_fexit_0",
    "floor_fexit_1",
    "floor_fexit_2",
    "floor_fexit_3",
    "floor_fexit_4",
    "floor_fexit_5",
];
const FLOOR_TP_BTF: [&str; 8] = [
    "floor_tp_btf_0",
    "floor_tp_btf_1",
    "floor_tp_btf_2",
    "floor_tp_btf_3",
    "floor_tp_btf_4",
    "floor_tp_btf_5",
    "floor_tp_btf_6",
    "floor_tp_btf_7",
];

/// The floor program for the `nth` hook of `flavour` (0-based), `None` past its pool.
fn floor_program(flavour: Flavour, nth: usize) -> Option<&'static str> {
    match flavour {
        Flavour::Fentry => FLOOR_FENTRY.get(nth).copied(),
        Flavour::Fexit => FLOOR_FEXIT.get(nth).copied(),
        Flavour::TpBtf => FLOOR_TP_BTF.get(nth).copied(),
        // These take their target when attached: one program serves every hook.
        Flavour::Kprobe => Some("floor_kprobe"),
        Flavour::Kretprobe => Some("floor_kretprobe"),
        Flavour::Tracepoint => Some("floor_tracepoint"),
        Flavour::RawTracepoint => Some("floor_raw_tracepoint"),
    }
}

/// The floor's candidates for `used`: each hook's typed target from the plan, with a floor
/// program; duplicates (one program doing two hooks' jobs) once. A hook the plan does not
/// know, or past a pool, is an outcome with the reason.
fn floor_candidates(used: &[UsedHook]) -> Vec<(plan::Candidate, Result<(), String>)> {
    let specs = plan::hooks();
    let mut out: Vec<(plan::Candidate, Result<(), String>)> = Vec::new();
    for (flavour, target) in used {
        if out
            .iter()
            .any(|(c, _)| c.flavour == *flavour && c.target.to_string() == *target)
        {
            continue;
        }
        let Some(t) = specs
            .iter()
            .flat_map(|h| &h.candidates)
            .find(|c| c.flavour == *flavour && c.target.to_string() == *target)
            .map(|c| c.target.clone())
        else {
            let missing = plan::Candidate {
                flavour: *flavour,
                target: plan::Target::Function("?"),
                program: None,
            };
            out.push((
                missing,
                Err(format!("{flavour} {target}: not a hook of the plan")),
            ));
            continue;
        };
        let nth = out.iter().filter(|(c, _)| c.flavour == *flavour).count();
        let program = floor_program(*flavour, nth);
        let ok = program
            .map(|_| ())
            .ok_or_else(|| format!("{flavour} {target}: more {flavour} hooks than floor programs"));
        out.push((
            plan::Candidate {
                flavour: *flavour,
                target: t,
                program,
            },
            ok,
        ));
    }
    out
}

impl FloorProbes {
    /// Attaches a floor program on each hook of `used` (the hooks a `trace` attached).
    pub fn start(used: &[UsedHook]) -> Result<Self, TracerError> {
        let facts = KernelFacts::gather();
        let btf = Btf::from_sys_fs().map_err(TracerError::AyaBtf)?;
        let mut ebpf = attach::load(&probes_common::ProbeConfig::ZERO)?;
        let mut outcomes = Vec::new();
        for (cand, ok) in floor_candidates(used) {
            let target = format!("{} {}", cand.flavour, cand.target);
            let res = ok.and_then(|()| {
                attach::attach_candidate(&mut ebpf, &cand, Some(&btf), &facts)
                    .map_err(|e| e.to_string())
            });
            outcomes.push(HookOutcome {
                id: "floor",
                used: res.as_ref().ok().map(|program| attach::UsedCandidate {
                    flavour: cand.flavour,
                    target: cand.target.to_string(),
                    program,
                }),
                failed: res
                    .err()
                    .map(|e| vec![(cand.flavour, target, e)])
                    .unwrap_or_default(),
                loss: "",
            });
        }
        if outcomes.is_empty() || outcomes.iter().any(|o| o.used.is_none()) {
            return Err(TracerError::NoFloor(outcomes));
        }
        Ok(Self { ebpf, outcomes })
    }

    /// Events the floor programs have seen, summed over CPUs.
    pub fn events(&self) -> Result<u64, TracerError> {
        let name = probes_common::MAP_FLOOR;
        let arr: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(
            self.ebpf.map(name).ok_or(TracerError::MissingMap(name))?,
        )?;
        Ok(arr.get(&0, 0)?.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(f: Flavour, t: &str) -> UsedHook {
        (f, t.to_string())
    }

    #[test]
    fn floor_candidates_follow_the_plan_and_its_pools() {
        let used = [
            hook(Flavour::TpBtf, "mod_memcg_state"),
            hook(Flavour::TpBtf, "mod_memcg_lruvec_state"),
            // The same hook twice (a stat program doing inference too): once.
            hook(Flavour::TpBtf, "mod_memcg_state"),
            hook(Flavour::Fentry, "try_charge_memcg"),
            hook(Flavour::Fexit, "try_charge_memcg"),
            hook(Flavour::Kprobe, "page_counter_uncharge"),
            hook(Flavour::Kprobe, "drain_all_stock.part.N"),
        ];
        let c = floor_candidates(&used);
        let got: Vec<(Flavour, String, Option<&str>, bool)> = c
            .iter()
            .map(|(c, ok)| (c.flavour, c.target.to_string(), c.program, ok.is_ok()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Flavour::TpBtf,
                    "mod_memcg_state".into(),
                    Some("floor_tp_btf_0"),
                    true
                ),
                (
                    Flavour::TpBtf,
                    "mod_memcg_lruvec_state".into(),
                    Some("floor_tp_btf_1"),
                    true
                ),
                (
                    Flavour::Fentry,
                    "try_charge_memcg".into(),
                    Some("floor_fentry_0"),
                    true
                ),
                (
                    Flavour::Fexit,
                    "try_charge_memcg".into(),
                    Some("floor_fexit_0"),
                    true
                ),
                (
                    Flavour::Kprobe,
                    "page_counter_uncharge".into(),
                    Some("floor_kprobe"),
                    true
                ),
                (
                    Flavour::Kprobe,
                    "drain_all_stock.part.N".into(),
                    Some("floor_kprobe"),
                    true
                ),
            ]
        );
        // The clone keeps its typed target, so the attach resolves it from kallsyms.
        assert_eq!(c[5].0.target, plan::Target::PartClone("drain_all_stock"));
    }

    #[test]
    fn floor_candidates_name_what_they_cannot_cover() {
        let c = floor_candidates(&[hook(Flavour::Fentry, "no_such_function")]);
        assert_eq!(
            c[0].1,
            Err("fentry no_such_function: not a hook of the plan".to_string())
        );
        // Every target of the plan of each pooled flavour has a program of the pool.
        let distinct = |f: Flavour| {
            plan::hooks()
                .iter()
                .flat_map(|h| h.candidates.clone())
                .filter(|c| c.flavour == f)
                .map(|c| c.target.to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        for (f, pool) in [
            (Flavour::Fentry, FLOOR_FENTRY.len()),
            (Flavour::Fexit, FLOOR_FEXIT.len()),
            (Flavour::TpBtf, FLOOR_TP_BTF.len()),
        ] {
            assert!(
                distinct(f) <= pool,
                "the {f} pool ({pool}) must cover every {f} target of the plan ({})",
                distinct(f)
            );
        }
        assert_eq!(floor_program(Flavour::Fentry, FLOOR_FENTRY.len()), None);
    }
}
