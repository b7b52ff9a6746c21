//! Loading the probes and attaching them according to the plan. The only module that asks the
//! kernel to load or attach programs.
//!
//! For each hook the usable candidates of its plan are tried in order; the first that loads and
//! attaches wins, and every failure is kept with the kernel's error so reports can say what was
//! used, what was tried and what is lost.

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError, RawTracePoint, TracePoint,
    },
};
use probes_common::{GLOBAL_CONFIG, ProbeConfig, WIRE_VERSION, flags};
use serde::Serialize;

mod slots;
pub use slots::{MissCounter, Slots};

use crate::{
    kernel::{KernelFacts, btf::KernelBtf, tracefs},
    plan::{Candidate, Flavour, FlavourSupport, HookPlan, Target},
};

/// Why a candidate (or a flavour's trial program) did not load or attach.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttachError {
    /// The object lacks the program.
    #[error("program {0} missing from the object")]
    MissingProgram(String),
    /// aya or the kernel refused (one line, see [`short_error`]).
    #[error("{0}")]
    Program(String),
    /// The probes object did not load (its one-line message).
    #[error("{0}")]
    Object(String),
    /// The tracepoint's `format` file could not be read.
    #[error("format file unreadable")]
    FormatUnreadable,
    /// The tracepoint record's layout is not the one the probe reads.
    #[error("record layout differs from the probe's ({field} not at {offset}/{size})")]
    RecordLayout {
        /// The field.
        field: &'static str,
        /// Its expected offset.
        offset: usize,
        /// Its expected size.
        size: usize,
    },
    /// tracefs is unavailable.
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    /// The candidate has no program.
    #[error("no program")]
    NoProgram,
    /// The kernel refused to load the program with EPERM (lockdown, a missing capability): a
    /// refusal of the flavour, not of the target (one line, see [`short_error`]).
    #[error("{0}")]
    LoadRefused(String),
    /// The flavour needs the kernel's BTF and there is none.
    #[error("needs kernel BTF")]
    NeedsBtf,
    /// No kprobe PMU.
    #[error("kernel has no kprobe PMU (CONFIG_KPROBES off)")]
    NoKprobePmu,
    /// No single `.part.N` clone to attach to.
    #[error(transparent)]
    PartClone(#[from] crate::kernel::symbols::PartCloneError),
    /// The flavour does not attach to that kind of target.
    #[error("flavour {flavour} cannot attach to {target:?}")]
    Mismatch {
        /// The flavour.
        flavour: Flavour,
        /// The target.
        target: Target,
    },
    /// No target for a flavour's trial in this kernel.
    #[error("no trial target found in this kernel")]
    NoTrialTarget,
    /// Not root: no trial loads.
    #[error("not root: cannot load eBPF programs")]
    NotRoot,
}

/// Why the probes object could not be configured or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Built without the eBPF toolchain: the object is empty.
    #[error(
        "this memcg-drift was built without its eBPF probes (the eBPF toolchain was missing); \
         run `cargo xtask setup`, then rebuild"
    )]
    NoProbes,
    /// The probes' kernel layout names a member BTF lacks.
    #[error("kernel BTF has no member `{member}` in struct {ty}")]
    MissingMember {
        /// The struct.
        ty: String,
        /// The member.
        member: String,
    },
    /// aya refused the object (its message only, as one line).
    #[error("loading the probes object failed: {0}")]
    Load(aya::EbpfError),
    /// The loaded object lacks a map.
    #[error("map {0} missing from the probes object")]
    MissingMap(&'static str),
    /// A map of the loaded object could not be written before attaching.
    #[error("writing map {0}: {1}")]
    Seed(&'static str, aya::maps::MapError),
}

/// One loaded probes object shared by the tracers attached on it.
pub type SharedEbpf = std::sync::Arc<std::sync::Mutex<aya::Ebpf>>;

/// Locks a shared probes object (a panic elsewhere does not make its maps unreadable).
pub fn lock(ebpf: &SharedEbpf) -> std::sync::MutexGuard<'_, aya::Ebpf> {
    ebpf.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The probes object with a clear error when it was built without the eBPF toolchain.
pub fn object() -> Result<&'static [u8], LoadError> {
    if crate::probes::OBJECT.is_empty() {
        return Err(LoadError::NoProbes);
    }
    Ok(crate::probes::OBJECT)
}

/// Capacities of the per-cgroup maps, chosen before load: the compiled-in sizes fit a few
/// thousand cgroups; `trace --descendants` over a bigger subtree sizes them from it, and
/// `--max-keys` bounds the stat aggregates. Whatever does not fit is counted (`map_full`),
/// never dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MapSizes {
    /// Distinct (cgroup, item, hook) stat aggregates (`STAT_AGG`).
    pub stat_keys: u32,
    /// Cgroups whose filter verdict is remembered (`VERDICT`, LRU).
    pub verdicts: u32,
    /// Distinct (cgroup, kind, counter) charge aggregates (`CHARGE_AGG`).
    pub charge_keys: u32,
    /// Cgroups with a remembered page_counter reading (`INFER_LAST`) or memory.events
    /// baseline (`MEMCG_EVENTS`).
    pub per_cgroup: u32,
    /// Cgroups given a dense slot before attaching (`STAT_SLOTS`, `INFER_SLOT`): the target
    /// and, with `--descendants`, as many of its existing descendants as fit (see [`Slots`];
    /// only the target with `--max-keys`, which bounds the aggregates).
    pub slots: u32,
}

/// Stat aggregates allowed per cgroup when sizing from a subtree (a cgroup that faults and
/// frees anonymous and file pages touches about a dozen items on two hooks).
pub const STAT_KEYS_PER_CGROUP: u32 = 16;
/// Bytes the sized per-CPU stat aggregates may take (each key holds a 16-byte value per CPU
/// plus about 96 bytes of element).
const STAT_MAP_BUDGET: u64 = 256 << 20;

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            stat_keys: probes_common::STAT_AGG_ENTRIES,
            verdicts: probes_common::VERDICT_ENTRIES,
            charge_keys: probes_common::charge::CHARGE_AGG_ENTRIES,
            per_cgroup: probes_common::charge::INFER_ENTRIES,
            slots: 1,
        }
    }
}

impl MapSizes {
    /// Sizes for `cgroups` cgroups recorded on `cpus` possible CPUs: at least the compiled-in
    /// sizes; the stat aggregates at most what [`STAT_MAP_BUDGET`] allows; `max_keys`, when
    /// given, sets the stat aggregates exactly.
    pub fn for_cgroups(cgroups: usize, cpus: usize, max_keys: Option<u32>) -> Self {
        let d = Self::default();
        let n = u32::try_from(cgroups).unwrap_or(u32::MAX).min(1 << 20);
        let per_key = 16 * cpus.max(1) as u64 + 96;
        let budget = u32::try_from(STAT_MAP_BUDGET / per_key).unwrap_or(u32::MAX);
        let stat_keys = n
            .saturating_mul(STAT_KEYS_PER_CGROUP)
            .min(budget)
            .max(d.stat_keys);
        Self {
            stat_keys: max_keys.unwrap_or(stat_keys).max(1),
            verdicts: n.saturating_mul(2).max(d.verdicts),
            charge_keys: n.saturating_mul(8).min(budget).max(d.charge_keys),
            per_cgroup: n.saturating_mul(2).max(d.per_cgroup),
            slots: if max_keys.is_some() {
                1
            } else {
                n.min(Slots::capacity(cpus)).max(1)
            },
        }
    }

    /// Sets the capacities on a loader.
    pub fn apply(&self, loader: &mut EbpfLoader<'_>) {
        use probes_common::charge::{
            MAP_CHARGE_AGG, MAP_INFER_LAST, MAP_INFER_SLOT, MAP_MEMCG_EVENTS, MEMCG_EVENTS_ENTRIES,
        };
        let slots = self.slots.max(1);
        loader
            .map_max_entries(probes_common::MAP_STAT_SLOTS, slots)
            .map_max_entries(probes_common::MAP_SLOT_OF, slots)
            .map_max_entries(probes_common::MAP_SLOT_IDS, slots)
            .map_max_entries(MAP_INFER_SLOT, slots)
            .map_max_entries(probes_common::MAP_STAT_AGG, self.stat_keys)
            .map_max_entries(probes_common::MAP_VERDICT, self.verdicts)
            .map_max_entries(MAP_CHARGE_AGG, self.charge_keys)
            .map_max_entries(MAP_INFER_LAST, self.per_cgroup)
            .map_max_entries(MAP_MEMCG_EVENTS, self.per_cgroup.max(MEMCG_EVENTS_ENTRIES));
    }
}

/// Which cgroups the stat probes record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// Cgroup id of the target; `None` records every cgroup.
    pub target: Option<u64>,
    /// Also record the target's descendants.
    pub descendants: bool,
}

/// Resolves the probes' kernel layout from BTF; names the first missing member.
pub fn probe_config(btf: &KernelBtf, filter: Filter) -> Result<ProbeConfig, LoadError> {
    let off = |s: &str, m: &str| {
        btf.member_offset(s, m)
            .ok_or_else(|| LoadError::MissingMember {
                ty: s.into(),
                member: m.into(),
            })
    };
    let mut f = 0;
    // The memory hierarchy's root with its descendants is every memcg: nothing to filter (the
    // probes then skip the ancestor check and its verdict lookup on every event).
    let everything = filter.descendants
        && filter.target.is_some()
        && crate::cgroup::MemoryHierarchy::detect()
            .ok()
            .and_then(|h| crate::cgroup::MemCgroup::open(&h, &h.root).ok())
            .is_some_and(|root| Some(root.id()) == filter.target);
    if filter.target.is_some() && !everything {
        f |= flags::FILTER;
    }
    if filter.descendants {
        f |= flags::DESCENDANTS;
    }
    Ok(ProbeConfig {
        memcg_css: off("mem_cgroup", "css")?,
        css_cgroup: off("cgroup_subsys_state", "cgroup")?,
        css_parent: off("cgroup_subsys_state", "parent")?,
        cgroup_kn: off("cgroup", "kn")?,
        kn_id: off("kernfs_node", "id")?,
        pn_lruvec: off("mem_cgroup_per_node", "lruvec")?,
        pn_memcg: off("mem_cgroup_per_node", "memcg")?,
        target_cgroup_id: filter.target.unwrap_or(0),
        flags: f,
        wire_version: WIRE_VERSION,
    })
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF maps to it (< 5.11); failure is
/// harmless on newer kernels, which account BPF memory to the memcg instead.
pub fn bump_memlock() {
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
}

/// Drops `value` on a thread of its own, off the caller's path (a loader's parsed kernel BTF
/// takes milliseconds to free: issue 11). Where no thread can be started it is dropped here.
pub fn drop_in_background<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// A value computed on a thread of its own while the caller does other work (computed by
/// the caller, when it asks, where no thread could be started).
pub struct Pending<T>(Result<std::thread::JoinHandle<T>, fn() -> T>);

impl<T: Send + 'static> Pending<T> {
    /// Starts computing `f()`.
    pub fn spawn(f: fn() -> T) -> Self {
        Self(std::thread::Builder::new().spawn(f).map_err(|_| f))
    }

    /// The value (a panic on the thread is the caller's).
    pub fn wait(self) -> T {
        match self.0 {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(f) => f(),
        }
    }
}

/// An aya loader that will not relocate against the kernel's BTF. `EbpfLoader::new` always
/// parses it (some 30 ms), and Rust eBPF objects carry no CO-RE relocations (kernel offsets
/// come through the configuration), so it is dropped at once; tp_btf and fentry programs are
/// given the BTF they need when they load. Started as a [`Pending`], the parse overlaps with
/// the caller's reading of the kernel (issue 11: attach time).
pub fn loader_without_btf() -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    loader
}

/// Loads the probes object with its configuration (programs are loaded when attached).
pub fn load(cfg: &ProbeConfig) -> Result<Ebpf, LoadError> {
    load_with(loader_without_btf(), cfg, |_| {})
}

/// Loads the probes object with its configuration and whatever `more` sets on `loader`
/// (from [`loader_without_btf`]).
pub fn load_with<'a>(
    mut loader: EbpfLoader<'a>,
    cfg: &'a ProbeConfig,
    more: impl FnOnce(&mut EbpfLoader<'a>),
) -> Result<Ebpf, LoadError> {
    let obj = object()?;
    bump_memlock();
    loader.override_global(GLOBAL_CONFIG, cfg, true);
    more(&mut loader);
    loader.load(obj).map_err(LoadError::Load)
}

/// An error and its causes, joined by `: ` (as `{:#}` prints a chain at the binary's edge).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// One line from an aya error and its causes. A verifier log is cut to the verifier's
/// complaint: its last line before the statistics the log ends with (the log's first lines
/// are notes that older kernels print for every Rust program, and the error is at its end).
pub fn short_error(e: &dyn std::error::Error) -> String {
    short_message(&error_chain(e))
}

fn short_message(s: &str) -> String {
    let collapse = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let one = match s.split_once(" Verifier output:") {
        None => collapse(s),
        Some((head, log)) => {
            let head = collapse(head);
            let head = head.trim_end_matches('.');
            // aya's chain repeats the syscall's error after the log, as ": <error>".
            let complaint = log.lines().map(str::trim).rfind(|l| {
                !l.is_empty()
                    && !l.starts_with(':')
                    && !l.starts_with("processed ")
                    && !l.starts_with("verification time")
                    && !l.starts_with("stack depth")
            });
            match complaint {
                Some(c) => format!("{head}. Verifier: {}", collapse(c)),
                None => head.to_string(),
            }
        }
    };
    if one.chars().count() > 240 {
        format!("{}...", one.chars().take(240).collect::<String>())
    } else {
        one
    }
}

/// Outcome of trying to attach one hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookOutcome {
    /// Hook id.
    pub id: &'static str,
    /// The candidate in use, if any.
    pub used: Option<UsedCandidate>,
    /// Candidates tried and failed, with the kernel's error.
    pub failed: Vec<(Flavour, String, String)>,
    /// What the report loses if `used` is `None`.
    pub loss: &'static str,
}

/// The attached candidate.
#[derive(Debug, Clone, Serialize)]
pub struct UsedCandidate {
    /// Flavour.
    pub flavour: Flavour,
    /// Kernel target.
    pub target: String,
    /// Program name in the object.
    pub program: &'static str,
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, AttachError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| AttachError::MissingProgram(name.into()))?;
    p.try_into()
        .map_err(|e: ProgramError| AttachError::Program(short_error(&e)))
}

/// Checks that a classic tracepoint's record has the layout the probe reads
/// (`id`@8, `item`@16, `val`@20, see `probes-ebpf/src/stat.rs`).
fn check_stat_tracepoint_format(
    facts: &KernelFacts,
    cat: &str,
    name: &str,
) -> Result<(), AttachError> {
    let t = facts.tracefs.as_ref().map_err(Clone::clone)?;
    let fmt = t.format(cat, name).ok_or(AttachError::FormatUnreadable)?;
    let want = [("id", 8, 8), ("item", 16, 4), ("val", 20, 4)];
    for (field, offset, size) in want {
        if tracefs::field_offset(&fmt, field) != Some((offset, size)) {
            return Err(AttachError::RecordLayout {
                field,
                offset,
                size,
            });
        }
    }
    Ok(())
}

/// Loads and attaches one candidate. On failure the program is unloaded again so the next
/// candidate can reuse it for another target.
pub fn attach_candidate(
    ebpf: &mut Ebpf,
    cand: &Candidate,
    btf: Option<&Btf>,
    facts: &KernelFacts,
) -> Result<&'static str, AttachError> {
    let name = cand.program.ok_or(AttachError::NoProgram)?;
    // Each arm loads then attaches; a failed attach unloads the program again so that the next
    // candidate can load it for another target. A kprobe, tracepoint or raw-tracepoint
    // program takes its target when attached, so one loaded already (the benchmark's floor
    // puts one program on several hooks) is attached once more, and kept if that fails.
    let reusable = matches!(
        cand.flavour,
        Flavour::Kprobe | Flavour::Kretprobe | Flavour::Tracepoint | Flavour::RawTracepoint
    );
    macro_rules! load_attach {
        ($ty:ty, $load:expr, $attach:expr) => {{
            let p: &mut $ty = program(ebpf, name)?;
            let fresh = !(reusable && p.fd().is_ok());
            #[allow(clippy::redundant_closure_call)]
            let loaded = if fresh {
                $load(&mut *p).map_err(|e: ProgramError| load_error(&e))
            } else {
                Ok(())
            };
            let r = loaded.and_then(|()| {
                #[allow(clippy::redundant_closure_call)]
                $attach(&mut *p)
                    .map(|_| ())
                    .map_err(|e: ProgramError| AttachError::Program(short_error(&e)))
            });
            if r.is_err() && fresh {
                let _ = p.unload();
            }
            r
        }};
    }
    let btf_required = || btf.ok_or(AttachError::NeedsBtf);
    let res: Result<(), AttachError> = match (&cand.flavour, &cand.target) {
        (Flavour::TpBtf, Target::BtfTracepoint(tp)) => {
            let btf = btf_required()?;
            load_attach!(
                BtfTracePoint,
                |p: &mut BtfTracePoint| p.load(tp, btf),
                |p: &mut BtfTracePoint| p.attach()
            )
        }
        (Flavour::RawTracepoint, Target::BtfTracepoint(tp)) => {
            load_attach!(
                RawTracePoint,
                |p: &mut RawTracePoint| p.load(),
                |p: &mut RawTracePoint| p.attach(tp)
            )
        }
        (Flavour::Tracepoint, Target::Tracepoint(cat, tp)) => {
            if name.starts_with("tp_") && cat == &"memcg" {
                check_stat_tracepoint_format(facts, cat, tp)?;
            }
            if let Err(e) = &facts.tracefs {
                return Err(e.clone().into());
            }
            load_attach!(
                TracePoint,
                |p: &mut TracePoint| p.load(),
                |p: &mut TracePoint| p.attach(cat, tp)
            )
        }
        (Flavour::Fentry, Target::BtfFunction(f)) => {
            let btf = btf_required()?;
            load_attach!(FEntry, |p: &mut FEntry| p.load(f, btf), |p: &mut FEntry| p
                .attach())
        }
        (Flavour::Fexit, Target::BtfFunction(f)) => {
            let btf = btf_required()?;
            load_attach!(FExit, |p: &mut FExit| p.load(f, btf), |p: &mut FExit| p
                .attach())
        }
        (Flavour::Kprobe | Flavour::Kretprobe, Target::Function(f)) => {
            if !facts.kprobe_pmu {
                return Err(AttachError::NoKprobePmu);
            }
            load_attach!(KProbe, |p: &mut KProbe| p.load(), |p: &mut KProbe| p
                .attach(f, 0))
        }
        (Flavour::Kprobe, Target::PartClone(f)) => {
            if !facts.kprobe_pmu {
                return Err(AttachError::NoKprobePmu);
            }
            let full = facts.kallsyms().part_clone(f)?;
            load_attach!(KProbe, |p: &mut KProbe| p.load(), |p: &mut KProbe| p
                .attach(full.as_str(), 0))
        }
        (f, t) => Err(AttachError::Mismatch {
            flavour: *f,
            target: t.clone(),
        }),
    };
    res.map(|()| name)
}

/// Attaches every hook of `plans` that has a usable candidate with a program.
pub fn attach_plans(
    ebpf: &mut Ebpf,
    plans: &[HookPlan],
    btf: &Btf,
    facts: &KernelFacts,
) -> Vec<HookOutcome> {
    attach_plans_after(ebpf, plans, btf, facts, &[])
}

/// As [`attach_plans`], on an object where the hooks of `prior` are attached already. A
/// candidate whose program is attached already to the same target (by `prior` or by an earlier
/// hook of `plans`) is used as it is: one program does several hooks' jobs on one kernel hook
/// (the stat programs take the inference readings too), so it is loaded and attached once.
pub fn attach_plans_after(
    ebpf: &mut Ebpf,
    plans: &[HookPlan],
    btf: &Btf,
    facts: &KernelFacts,
    prior: &[HookOutcome],
) -> Vec<HookOutcome> {
    let mut out: Vec<HookOutcome> = Vec::new();
    // Flavours the kernel refused to load with EPERM, and the first refusal: the flavour's
    // later candidates are not loaded again (each load of a fentry/fexit program first has aya
    // scan the whole kernel BTF for its target: tens of milliseconds of attach time where
    // fentry is refused; issue 11).
    let mut refused: Vec<(Flavour, String)> = Vec::new();
    for plan in plans {
        let mut failed = Vec::new();
        let mut used = None;
        for cand in plan.usable() {
            let target = cand.target.to_string();
            let shared = prior.iter().chain(out.iter()).any(|o| {
                o.used.as_ref().is_some_and(|u| {
                    Some(u.program) == cand.program
                        && u.flavour == cand.flavour
                        && u.target == target
                })
            });
            let earlier = refused.iter().find(|(f, _)| *f == cand.flavour);
            let res = match (shared, earlier) {
                (true, _) => cand.program.ok_or(AttachError::NoProgram),
                (false, Some((_, why))) => Err(AttachError::LoadRefused(why.clone())),
                (false, None) => {
                    let r = attach_candidate(ebpf, cand, Some(btf), facts);
                    if let Err(AttachError::LoadRefused(e)) = &r {
                        refused.push((
                            cand.flavour,
                            format!("{e} (at {target}; the flavour is not loaded again)"),
                        ));
                    }
                    r
                }
            };
            match res {
                Ok(program) => {
                    used = Some(UsedCandidate {
                        flavour: cand.flavour,
                        target,
                        program,
                    });
                    break;
                }
                Err(e) => failed.push((cand.flavour, target, e.to_string())),
            }
        }
        out.push(HookOutcome {
            id: plan.id,
            used,
            failed,
            loss: plan.loss,
        });
    }
    out
}

/// A program load's error: [`AttachError::LoadRefused`] where the kernel said EPERM.
fn load_error(e: &ProgramError) -> AttachError {
    match e {
        ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(nix::libc::EPERM) =>
        {
            AttachError::LoadRefused(short_error(e))
        }
        _ => AttachError::Program(short_error(e)),
    }
}

/// Trial-loads a do-nothing program of every flavour and attaches it to a target that exists
/// here, so doctor and the plan know what the kernel really allows (fentry can be listed in
/// BTF and still be refused with EPERM).
pub fn trial_flavours(facts: &KernelFacts, btf: Option<&Btf>) -> FlavourSupport<AttachError> {
    let mut out = FlavourSupport::new();
    let mut ebpf = match load(&ProbeConfig::ZERO) {
        Ok(e) => e,
        Err(e) => {
            for f in Flavour::ALL {
                out.insert(f, Err(AttachError::Object(e.to_string())));
            }
            return out;
        }
    };
    // Targets present on every kernel this tool meets; the first that exists is used.
    const FUNCS: [&str; 3] = ["page_counter_try_charge", "vfs_read", "do_sys_openat2"];
    const TPS: [&str; 2] = ["sched_process_fork", "sched_switch"];
    let func = FUNCS
        .iter()
        .copied()
        .find(|f| facts.btf.as_ref().is_ok_and(|b| b.has_func(f)));
    let ksym = FUNCS
        .iter()
        .copied()
        .find(|f| facts.kallsyms().state(f) == crate::kernel::symbols::SymbolState::Present);
    let tp = TPS
        .iter()
        .copied()
        .find(|t| facts.btf.as_ref().is_ok_and(|b| b.has_btf_tracepoint(t)));
    for f in Flavour::ALL {
        let cand = match f {
            Flavour::Fentry => func.map(|t| (Target::BtfFunction(t), "trial_fentry")),
            Flavour::Kprobe => ksym.map(|t| (Target::Function(t), "trial_kprobe")),
            Flavour::Fexit => func.map(|t| (Target::BtfFunction(t), "trial_fexit")),
            Flavour::Kretprobe => ksym.map(|t| (Target::Function(t), "trial_kretprobe")),
            Flavour::TpBtf => tp.map(|t| (Target::BtfTracepoint(t), "trial_tp_btf")),
            Flavour::RawTracepoint => tp.map(|t| (Target::BtfTracepoint(t), "trial_raw_tp")),
            Flavour::Tracepoint => Some((
                Target::Tracepoint("sched", "sched_process_fork"),
                "trial_tracepoint",
            )),
        };
        let res = match cand {
            None => Err(AttachError::NoTrialTarget),
            Some((target, program)) => {
                let cand = Candidate {
                    flavour: f,
                    target,
                    program: Some(program),
                };
                attach_candidate(&mut ebpf, &cand, btf, facts).map(|_| ())
            }
        };
        out.insert(f, res);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{
        slots::{MAX_SLOTS, SLOT_BUDGET},
        *,
    };

    #[test]
    fn map_sizes_grow_with_the_subtree_within_a_budget() {
        let d = MapSizes::default();
        // A small subtree keeps the compiled-in sizes, with a slot per cgroup.
        assert_eq!(MapSizes::for_cgroups(1, 2, None), d);
        assert_eq!(
            MapSizes::for_cgroups(100, 2, None),
            MapSizes { slots: 100, ..d }
        );
        // 7,001 cgroups: 16 stat keys each, verdicts and per-cgroup maps twice the cgroups.
        let s = MapSizes::for_cgroups(7001, 2, None);
        assert_eq!(s.stat_keys, 7001 * STAT_KEYS_PER_CGROUP);
        assert_eq!(s.verdicts, 14002);
        assert_eq!(s.per_cgroup, 14002);
        assert_eq!(s.charge_keys, 7001 * 8);
        // Many CPUs: the per-CPU stat map stays within its budget, but never below the
        // compiled-in size.
        let s = MapSizes::for_cgroups(1 << 20, 64, None);
        assert_eq!(u64::from(s.stat_keys), STAT_MAP_BUDGET / (16 * 64 + 96));
        assert_eq!(
            MapSizes::for_cgroups(1 << 20, 1024, None).stat_keys,
            d.stat_keys
        );
        // --max-keys is taken as given, and leaves only the target a slot.
        let s = MapSizes::for_cgroups(7001, 2, Some(200));
        assert_eq!((s.stat_keys, s.slots), (200, 1));
        // Slots: the target's always; at most MAX_SLOTS, and within SLOT_BUDGET.
        assert_eq!(s.slots, 1);
        assert_eq!(MapSizes::for_cgroups(7001, 2, None).slots, MAX_SLOTS);
        let per_cpu = probes_common::STAT_BLOCK_BYTES as u64;
        assert_eq!(
            u64::from(MapSizes::for_cgroups(7001, 256, None).slots),
            SLOT_BUDGET / (per_cpu * 256)
        );
        assert_eq!(MapSizes::for_cgroups(7001, 1 << 20, None).slots, 1);
    }

    #[test]
    fn a_verifier_log_is_cut_to_its_complaint() {
        let log = "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier \
                   output: reg type unsupported for arg#0 function kprobe_x#103\n0: R1=ctx() \
                   R10=fp0\n; x = *p\n0: (79) r3 = *(u64 *)(r1 +96)\nR2 invalid mem access \
                   'scalar'\nprocessed 40 insns (limit 1000000) max_states_per_insn 0\n: \
                   Permission denied (os error 13)";
        assert_eq!(
            short_message(log),
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier: R2 \
             invalid mem access 'scalar'"
        );
        // An empty log: the syscall's error alone.
        assert_eq!(
            short_message(
                "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier \
                 output: : Invalid argument (os error 22)"
            ),
            "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22)"
        );
        assert_eq!(short_message("no  such\nthing"), "no such thing");
    }
}
