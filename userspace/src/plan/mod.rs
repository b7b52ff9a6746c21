//! The probe plan: for every hook of the design, an ordered list of ways to attach
//! (flavour + kernel target + program), checked against kernel facts.
//!
//! This module is pure: it takes facts through [`TargetFacts`] and flavour support as data,
//! so the whole decision is unit-tested without a kernel. `attach` then tries the surviving
//! candidates in order; the first that loads and attaches wins.

use serde::Serialize;

/// A way of attaching an eBPF program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// BPF trampoline on function entry (needs BTF FUNC and an ftrace-able function).
    Fentry,
    /// BPF trampoline on function exit: arguments and return value (as fentry).
    Fexit,
    /// Dynamic kprobe on a text symbol (needs CONFIG_KPROBES).
    Kprobe,
    /// Return probe on a text symbol: the return value only (as kprobe).
    Kretprobe,
    /// BTF-typed raw tracepoint (typed arguments, e.g. `struct mem_cgroup *`).
    TpBtf,
    /// Untyped raw tracepoint.
    RawTracepoint,
    /// Classic tracepoint through tracefs (stable record format).
    Tracepoint,
}

impl Flavour {
    /// All flavours, in the order doctor reports them.
    pub const ALL: [Flavour; 7] = [
        Flavour::Fentry,
        Flavour::Fexit,
        Flavour::Kprobe,
        Flavour::Kretprobe,
        Flavour::TpBtf,
        Flavour::RawTracepoint,
        Flavour::Tracepoint,
    ];

    /// Short name as used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Fentry => "fentry",
            Flavour::Fexit => "fexit",
            Flavour::Kprobe => "kprobe",
            Flavour::Kretprobe => "kretprobe",
            Flavour::TpBtf => "tp_btf",
            Flavour::RawTracepoint => "raw_tracepoint",
            Flavour::Tracepoint => "tracepoint",
        }
    }

    /// True if forcing `self` (`--attach`) allows `other`: the entry flavours bring their exit
    /// twins (`fentry` with `fexit`, `kprobe` with `kretprobe`), which hooks that need a
    /// return value use alongside them.
    pub fn covers(self, other: Flavour) -> bool {
        self == other
            || matches!(
                (self, other),
                (Flavour::Fentry, Flavour::Fexit) | (Flavour::Kprobe, Flavour::Kretprobe)
            )
    }
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a candidate attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    /// A text symbol (kprobe).
    Function(&'static str),
    /// A function with a BTF FUNC (fentry/fexit).
    BtfFunction(&'static str),
    /// A BTF tracepoint (`btf_trace_<name>`; tp_btf, raw tracepoint).
    BtfTracepoint(&'static str),
    /// A tracefs event `category:name`.
    Tracepoint(&'static str, &'static str),
    /// The one `.part.N` clone of a function (kprobe). GCC's partial inlining puts the
    /// function's head into its callers and the body into the clone; only used where the
    /// clone keeps the first argument (checked by the program and by the guest tests).
    PartClone(&'static str),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Function(n) | Target::BtfFunction(n) | Target::BtfTracepoint(n) => {
                f.write_str(n)
            }
            Target::Tracepoint(c, n) => write!(f, "{c}:{n}"),
            Target::PartClone(n) => write!(f, "{n}.part.N"),
        }
    }
}

/// Answers whether a target exists in the running kernel (and why not).
pub trait TargetFacts {
    /// Why a target does not exist (one line).
    type Missing: std::fmt::Display;
    /// `Ok` if it exists, else the reason it does not.
    fn target_exists(&self, target: &Target) -> Result<(), Self::Missing>;
}

/// One way to attach a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The attach flavour.
    pub flavour: Flavour,
    /// The kernel target.
    pub target: Target,
    /// The eBPF program implementing it, `None` where this version has no program yet.
    pub program: Option<&'static str>,
}

/// The design's hook groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Statistic updates (`memory.stat`'s book).
    Stat,
    /// Charges and the per-CPU charge stock (`memory.current`'s book).
    Charge,
    /// Limit hits, reclaim and OOM.
    Oom,
    /// Cgroup creation, removal, offlining and release.
    Lifecycle,
    /// Readings taken at stat events to infer charge movements where the charge path cannot
    /// be probed.
    Infer,
}

/// A hook of the design and its candidates, best first.
#[derive(Debug, Clone, Serialize)]
pub struct HookSpec {
    /// Stable identifier (used in reports and JSON).
    pub id: &'static str,
    /// Group.
    pub group: Group,
    /// What a report loses when the hook is missing.
    pub loss: &'static str,
    /// Candidates in order of preference.
    pub candidates: Vec<Candidate>,
}

const fn c(flavour: Flavour, target: Target, program: Option<&'static str>) -> Candidate {
    Candidate {
        flavour,
        target,
        program,
    }
}

/// Function hooks: fentry then kprobe on each symbol name in turn (newest name first where
/// names changed), with the given programs (same body, different argument adapters).
fn function_candidates(
    names: &[&'static str],
    fentry: Option<&'static str>,
    kprobe: Option<&'static str>,
) -> Vec<Candidate> {
    let mut v = Vec::new();
    for n in names {
        v.push(c(Flavour::Fentry, Target::BtfFunction(n), fentry));
        v.push(c(Flavour::Kprobe, Target::Function(n), kprobe));
    }
    v
}

/// Return hooks: fexit then kretprobe on each symbol name in turn.
fn return_candidates(
    names: &[&'static str],
    fexit: Option<&'static str>,
    kretprobe: Option<&'static str>,
) -> Vec<Candidate> {
    let mut v = Vec::new();
    for n in names {
        v.push(c(Flavour::Fexit, Target::BtfFunction(n), fexit));
        v.push(c(Flavour::Kretprobe, Target::Function(n), kretprobe));
    }
    v
}

/// Tracepoint hooks: tp_btf then the classic tracepoint.
fn tracepoint_candidates(
    category: &'static str,
    name: &'static str,
    tp_btf: Option<&'static str>,
    tracepoint: Option<&'static str>,
) -> Vec<Candidate> {
    vec![
        c(Flavour::TpBtf, Target::BtfTracepoint(name), tp_btf),
        c(
            Flavour::Tracepoint,
            Target::Tracepoint(category, name),
            tracepoint,
        ),
    ]
}

fn concat(mut a: Vec<Candidate>, b: Vec<Candidate>) -> Vec<Candidate> {
    a.extend(b);
    a
}

/// Every hook of the design.
///
/// Stat path: the memcg tracepoints (6.13+) come first because they fire inside the function on
/// every update, whereas a function probe misses calls the compiler inlined into callers in the
/// same file. `__mod_memcg_state` is tried before `mod_memcg_state` because up to 6.15 the
/// latter is a header inline whose out-of-line copies call the former (probing both would count
/// twice); from 6.16 only `mod_memcg_state` exists.
pub fn hooks() -> Vec<HookSpec> {
    use Group::*;
    vec![
        HookSpec {
            id: "stat.memcg_state",
            group: Stat,
            loss: "non-LRU statistics (kernel stack, sock, percpu, vmalloc, kmem) per CPU",
            candidates: concat(
                tracepoint_candidates(
                    "memcg",
                    "mod_memcg_state",
                    Some("tp_btf_memcg_state"),
                    Some("tp_memcg_state"),
                ),
                function_candidates(
                    &["__mod_memcg_state", "mod_memcg_state"],
                    Some("fentry_memcg_state"),
                    Some("kprobe_memcg_state"),
                ),
            ),
        },
        HookSpec {
            id: "stat.lruvec_state",
            group: Stat,
            loss: "LRU and page statistics (anon, file, shmem, slab, page tables) per CPU",
            candidates: concat(
                tracepoint_candidates(
                    "memcg",
                    "mod_memcg_lruvec_state",
                    Some("tp_btf_lruvec_state"),
                    Some("tp_lruvec_state"),
                ),
                function_candidates(
                    &["__mod_memcg_lruvec_state", "mod_memcg_lruvec_state"],
                    Some("fentry_lruvec_state"),
                    Some("kprobe_lruvec_state"),
                ),
            ),
        },
        HookSpec {
            id: "charge.try_charge",
            group: Charge,
            loss: "charge attempts and pages requested per CPU",
            candidates: function_candidates(
                &["try_charge_memcg", "try_charge"],
                Some("fentry_try_charge"),
                Some("kprobe_try_charge"),
            ),
        },
        HookSpec {
            id: "charge.try_charge_ret",
            group: Charge,
            loss: "failed charges and pages served from the stock versus charged in batches",
            candidates: return_candidates(
                &["try_charge_memcg", "try_charge"],
                Some("fexit_try_charge"),
                Some("kretprobe_try_charge"),
            ),
        },
        HookSpec {
            id: "charge.pc_try",
            group: Charge,
            loss: "page_counter charges that may fail (needed by charge.pc_try_ret)",
            candidates: function_candidates(
                &["page_counter_try_charge"],
                Some("fentry_pc_try_charge"),
                Some("kprobe_pc_try_charge"),
            ),
        },
        HookSpec {
            id: "charge.pc_try_ret",
            group: Charge,
            loss: "page_counter charges (batches), failures and which counter was at its limit",
            candidates: return_candidates(
                &["page_counter_try_charge"],
                Some("fexit_pc_try_charge"),
                Some("kretprobe_pc_try_charge"),
            ),
        },
        HookSpec {
            id: "charge.pc_charge",
            group: Charge,
            loss: "forced page_counter charges (over the limit)",
            candidates: function_candidates(
                &["page_counter_charge"],
                Some("fentry_pc_charge"),
                Some("kprobe_pc_charge"),
            ),
        },
        HookSpec {
            id: "charge.pc_uncharge",
            group: Charge,
            loss: "page_counter uncharges (frees and stock drains)",
            candidates: function_candidates(
                &["page_counter_uncharge"],
                Some("fentry_pc_uncharge"),
                Some("kprobe_pc_uncharge"),
            ),
        },
        HookSpec {
            id: "charge.pc_cancel",
            group: Charge,
            // page_counter_uncharge's own per-level calls are inlined into it on the Debian
            // 6.1/6.12 builds (no cancel event was seen during uncharges there): this hook only
            // sees callers outside page_counter.c.
            loss: "per-level page_counter cancels called from outside page_counter.c",
            candidates: function_candidates(
                &["page_counter_cancel"],
                Some("fentry_pc_cancel"),
                Some("kprobe_pc_cancel"),
            ),
        },
        HookSpec {
            id: "charge.refill_stock",
            group: Charge,
            loss: "stock refills: batch surpluses parked and pages given back",
            // `__refill_stock` (6.1-6.15) is what both `refill_stock` and the object-stock
            // drain call; from 6.16 only `refill_stock` exists.
            candidates: function_candidates(
                &["__refill_stock", "refill_stock"],
                Some("fentry_refill_stock"),
                Some("kprobe_refill_stock"),
            ),
        },
        HookSpec {
            id: "charge.drain_stock",
            group: Charge,
            loss: "stock drains and the pages they returned",
            // Two fentry programs: the verifier refuses a second-argument read where the
            // function has one argument, so the layout (see `charge::charge_config`) rules
            // out the one that does not fit; the kprobe reads both forms.
            candidates: vec![
                c(
                    Flavour::Fentry,
                    Target::BtfFunction("drain_stock"),
                    Some("fentry_drain_stock_slot"),
                ),
                c(
                    Flavour::Fentry,
                    Target::BtfFunction("drain_stock"),
                    Some("fentry_drain_stock"),
                ),
                c(
                    Flavour::Kprobe,
                    Target::Function("drain_stock"),
                    Some("kprobe_drain_stock"),
                ),
            ],
        },
        HookSpec {
            id: "charge.drain_local",
            group: Charge,
            // 6.16+: `drain_local_memcg_stock` drains every slot through `drain_stock_fully`,
            // which may inline `drain_stock` (Debian 6.18.15 does: the offline drain of a
            // cgroup's stock never reached the drain_stock hook there).
            loss: "whole-stock drains by the per-CPU drain work (6.16+: offlining, limit \
                   writes, drain_all_stock)",
            candidates: function_candidates(
                &["drain_local_memcg_stock"],
                Some("fentry_drain_local"),
                Some("kprobe_drain_local"),
            ),
        },
        HookSpec {
            id: "charge.drain_local_ret",
            group: Charge,
            loss: "whole-stock drains by the per-CPU drain work (needed by charge.drain_local)",
            candidates: return_candidates(
                &["drain_local_memcg_stock"],
                Some("fexit_drain_local"),
                Some("kretprobe_drain_local"),
            ),
        },
        HookSpec {
            id: "charge.drain_all_stock",
            group: Charge,
            loss: "subtree-wide stock drains (limit pressure, limit writes, offlining)",
            // The clone first: where one exists, callers inline the head (the
            // percpu_charge_mutex trylock) and call the clone, bypassing the symbol itself
            // (Debian 6.18.15: the offline drain never reached `drain_all_stock`); the clone
            // is entered once per drain that ran. 6.1 has the clone only.
            candidates: {
                let mut v = vec![c(
                    Flavour::Kprobe,
                    Target::PartClone("drain_all_stock"),
                    Some("kprobe_drain_all_stock"),
                )];
                v.extend(function_candidates(
                    &["drain_all_stock"],
                    Some("fentry_drain_all_stock"),
                    Some("kprobe_drain_all_stock"),
                ));
                v
            },
        },
        HookSpec {
            id: "charge.refill_obj_stock",
            group: Charge,
            loss: "kernel-memory bytes given to the object stock (freed objects, page rests)",
            candidates: function_candidates(
                &["refill_obj_stock"],
                Some("fentry_refill_obj_stock"),
                Some("kprobe_refill_obj_stock"),
            ),
        },
        HookSpec {
            id: "charge.drain_obj_stock",
            group: Charge,
            loss: "object-stock drains and the bytes they returned",
            candidates: function_candidates(
                &["drain_obj_stock"],
                Some("fentry_drain_obj_stock"),
                Some("kprobe_drain_obj_stock"),
            ),
        },
        HookSpec {
            id: "oom.memcg_oom",
            group: Oom,
            loss: "memcg OOM invocations with memcg and order",
            candidates: function_candidates(
                &["mem_cgroup_out_of_memory"],
                Some("fentry_memcg_oom"),
                Some("kprobe_memcg_oom"),
            ),
        },
        HookSpec {
            id: "oom.kill_process",
            group: Oom,
            loss: "OOM kills with the OOM's memcg and the chosen victim",
            candidates: function_candidates(
                &["oom_kill_process"],
                Some("fentry_oom_kill"),
                Some("kprobe_oom_kill"),
            ),
        },
        HookSpec {
            id: "oom.memory_event",
            group: Oom,
            loss: "memory.events increments as they happen (read from cgroupfs instead)",
            // The function is inlined everywhere here (6.1 and 6.12 keep an out-of-line copy
            // of `memcg_memory_event` for some call sites only); the notification of the
            // memcg's events file that it makes is hooked instead.
            candidates: {
                let mut v = function_candidates(
                    &["__memcg_memory_event", "memcg_memory_event"],
                    None,
                    None,
                );
                v.extend(function_candidates(
                    &["cgroup_file_notify"],
                    Some("fentry_file_notify"),
                    Some("kprobe_file_notify"),
                ));
                v
            },
        },
        HookSpec {
            id: "oom.mark_victim",
            group: Oom,
            loss: "OOM victims",
            candidates: tracepoint_candidates(
                "oom",
                "mark_victim",
                Some("tp_btf_mark_victim"),
                Some("tp_mark_victim"),
            ),
        },
        HookSpec {
            id: "oom.reclaim",
            group: Oom,
            loss: "memcg reclaim rounds",
            candidates: tracepoint_candidates(
                "vmscan",
                "mm_vmscan_memcg_reclaim_begin",
                Some("tp_btf_reclaim_begin"),
                None,
            ),
        },
        HookSpec {
            id: "oom.reclaim_end",
            group: Oom,
            loss: "pages reclaimed by memcg reclaim",
            candidates: tracepoint_candidates(
                "vmscan",
                "mm_vmscan_memcg_reclaim_end",
                Some("tp_btf_reclaim_end"),
                None,
            ),
        },
        HookSpec {
            id: "infer.memcg_state",
            group: Infer,
            loss: "inferred charge movements (page_counter readings at non-LRU stat events)",
            // The stat hook's programs take the readings (one program per kernel hook does every
            // job on it); where the stat hook attached them already, they are shared. The
            // classic tracepoint carries no memcg pointer to read the page_counter from.
            candidates: concat(
                tracepoint_candidates("memcg", "mod_memcg_state", Some("tp_btf_memcg_state"), None),
                function_candidates(
                    &["__mod_memcg_state", "mod_memcg_state"],
                    Some("fentry_memcg_state"),
                    Some("kprobe_memcg_state"),
                ),
            ),
        },
        HookSpec {
            id: "infer.lruvec_state",
            group: Infer,
            loss: "inferred charge movements (page_counter readings at LRU/page stat events)",
            candidates: concat(
                tracepoint_candidates(
                    "memcg",
                    "mod_memcg_lruvec_state",
                    Some("tp_btf_lruvec_state"),
                    None,
                ),
                function_candidates(
                    &["__mod_memcg_lruvec_state", "mod_memcg_lruvec_state"],
                    Some("fentry_lruvec_state"),
                    Some("kprobe_lruvec_state"),
                ),
            ),
        },
        HookSpec {
            id: "lifecycle.mkdir",
            group: Lifecycle,
            loss: "cgroup creation times",
            candidates: tracepoint_candidates(
                "cgroup",
                "cgroup_mkdir",
                Some("tp_btf_cgroup_mkdir"),
                None,
            ),
        },
        HookSpec {
            id: "lifecycle.rmdir",
            group: Lifecycle,
            loss: "cgroup removal times (the start of a dying cgroup's life)",
            candidates: tracepoint_candidates(
                "cgroup",
                "cgroup_rmdir",
                Some("tp_btf_cgroup_rmdir"),
                None,
            ),
        },
        HookSpec {
            id: "lifecycle.release",
            group: Lifecycle,
            loss: "dying-cgroup lifetimes (rmdir to release)",
            candidates: concat(
                tracepoint_candidates(
                    "cgroup",
                    "cgroup_release",
                    Some("tp_btf_cgroup_release"),
                    None,
                ),
                function_candidates(
                    &["mem_cgroup_css_offline", "mem_cgroup_css_free"],
                    None,
                    None,
                ),
            ),
        },
    ]
}

/// Whether each flavour can load and attach on this kernel (from trial loads), keyed by flavour;
/// `E` says why not.
pub type FlavourSupport<E> = std::collections::BTreeMap<Flavour, Result<(), E>>;

/// The verdict on one candidate.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateVerdict {
    /// The candidate.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// `None` if usable, else why not.
    pub rejected: Option<String>,
}

/// The plan for one hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookPlan {
    /// Hook id.
    pub id: &'static str,
    /// Group.
    pub group: Group,
    /// What is lost when nothing is chosen.
    pub loss: &'static str,
    /// Every candidate with its verdict, in order.
    pub candidates: Vec<CandidateVerdict>,
}

impl HookPlan {
    /// Usable candidates in order of preference.
    pub fn usable(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates
            .iter()
            .filter(|v| v.rejected.is_none())
            .map(|v| &v.candidate)
    }

    /// The first usable candidate whose target exists and flavour works, ignoring whether a
    /// program exists yet ("the flavour the tool would use").
    pub fn would_use(&self) -> Option<&CandidateVerdict> {
        self.candidates
            .iter()
            .find(|v| v.rejected.is_none() || v.rejected.as_deref() == Some(NO_PROGRAM))
    }
}

/// Rejection reason for a candidate whose target and flavour are fine but which this version
/// has no program for.
pub const NO_PROGRAM: &str = "no program for this hook in this version";

/// Decides every candidate of `spec`: flavour forced off, flavour unsupported, target missing,
/// or no program. `only` restricts to one flavour (the `--attach` option).
pub fn plan_hook<F: TargetFacts + ?Sized, E>(
    spec: &HookSpec,
    facts: &F,
    support: &FlavourSupport<E>,
    only: Option<Flavour>,
) -> HookPlan {
    let candidates = spec
        .candidates
        .iter()
        .map(|cand| {
            let rejected = if only.is_some_and(|f| !f.covers(cand.flavour)) {
                Some(format!(
                    "not selected (--attach {})",
                    only.map(Flavour::name).unwrap_or("")
                ))
            } else if let Some(Err(_)) = support.get(&cand.flavour) {
                Some(format!("{} unusable on this kernel", cand.flavour))
            } else if let Err(e) = facts.target_exists(&cand.target) {
                Some(e.to_string())
            } else if cand.program.is_none() {
                Some(NO_PROGRAM.to_string())
            } else {
                None
            };
            CandidateVerdict {
                candidate: cand.clone(),
                rejected,
            }
        })
        .collect();
    HookPlan {
        id: spec.id,
        group: spec.group,
        loss: spec.loss,
        candidates,
    }
}

#[cfg(test)]
mod tests;
