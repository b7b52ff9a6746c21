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
    /// A floor program did not attach.
    #[error("a floor program could not be attached: {0:?}")]
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
/// attached on exactly the stat hooks a [`StatTracer`] would use (same plan, same order of
/// candidates), so that what the real probes' bodies cost can be told from what running any
/// program on those hooks costs.
pub struct FloorProbes {
    ebpf: Ebpf,
    /// Per stat hook: what was used and what failed.
    pub outcomes: Vec<HookOutcome>,
}

impl FloorProbes {
    /// Attaches the floor programs; `only` forces one flavour.
    pub fn start(only: Option<Flavour>) -> Result<Self, TracerError> {
        let facts = KernelFacts::gather();
        let btf = Btf::from_sys_fs().map_err(TracerError::AyaBtf)?;
        let mut ebpf = attach::load(&probes_common::ProbeConfig::ZERO)?;
        let mut plans = stat_plans(&facts, only);
        for p in &mut plans {
            for v in &mut p.candidates {
                v.candidate.program = v.candidate.program.and_then(floor_program);
            }
        }
        let outcomes = attach::attach_plans(&mut ebpf, &plans, &btf, &facts);
        if outcomes.iter().any(|o| o.used.is_none()) {
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

/// The floor twin of a stat program (`probes-ebpf/src/floor.rs`).
fn floor_program(stat: &str) -> Option<&'static str> {
    Some(match stat {
        "tp_btf_memcg_state" => "floor_tp_btf_memcg_state",
        "tp_btf_lruvec_state" => "floor_tp_btf_lruvec_state",
        "tp_memcg_state" => "floor_tp_memcg_state",
        "tp_lruvec_state" => "floor_tp_lruvec_state",
        "fentry_memcg_state" => "floor_fentry_memcg_state",
        "fentry_lruvec_state" => "floor_fentry_lruvec_state",
        "kprobe_memcg_state" => "floor_kprobe_memcg_state",
        "kprobe_lruvec_state" => "floor_kprobe_lruvec_state",
        _ => return None,
    })
}
