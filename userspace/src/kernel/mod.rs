//! Readers of kernel state: BTF, kallsyms, tracefs, and the facts the probe plan is made from.
//! Everything here reads the running kernel; nothing is assumed from a version number.

pub mod btf;
pub mod layout;
pub mod symbols;
pub mod tracefs;

#[cfg(test)]
pub(crate) mod testbtf;
#[cfg(test)]
pub(crate) mod testkernels;

use std::{path::Path, sync::Arc};

use btf::{BtfError, KernelBtf};
use symbols::{Kallsyms, LazyKallsyms, PartCloneError, SymbolState};
use tracefs::{Tracefs, TracefsError};

use crate::plan::{Target, TargetFacts};

/// The BTF names `trace`, the experiments and `doctor` look up once the facts are gathered
/// (the plans' functions and BTF tracepoints, the charge and statistic layouts' types), as
/// seen on 6.1 to 6.18: fetched in one scan while `/proc/kallsyms` is read (each lookup by
/// name is a scan of every name otherwise, 0.7 ms here; 48 of them made `trace` attach
/// 30 ms later than with btf-rs's cache backend). A name missing here costs that scan, not
/// correctness.
const FACT_TYPES: &[&str] = &[
    "__memcg_memory_event",
    "__mod_memcg_lruvec_state",
    "__mod_memcg_state",
    "__refill_stock",
    "bpf_cmd",
    "bpf_prog_info",
    "btf_trace_cgroup_mkdir",
    "btf_trace_cgroup_release",
    "btf_trace_cgroup_rmdir",
    "btf_trace_mark_victim",
    "btf_trace_mm_vmscan_memcg_reclaim_begin",
    "btf_trace_mm_vmscan_memcg_reclaim_end",
    "btf_trace_mod_memcg_lruvec_state",
    "btf_trace_mod_memcg_state",
    "cgroup",
    "cgroup_file_notify",
    "cgroup_root",
    "cgroup_subsys_id",
    "cgroup_subsys_state",
    "css_set",
    "drain_all_stock",
    "drain_local_memcg_stock",
    "drain_obj_stock",
    "drain_stock",
    "kernfs_node",
    "mem_cgroup",
    "mem_cgroup_css_free",
    "mem_cgroup_css_offline",
    "mem_cgroup_out_of_memory",
    "mem_cgroup_per_node",
    "memcg_memory_event",
    "memcg_stat_item",
    "memcg_stock_pcp",
    "mod_memcg_lruvec_state",
    "mod_memcg_state",
    "node_stat_item",
    "obj_cgroup",
    "obj_stock_pcp",
    "oom_control",
    "oom_kill_process",
    "page_counter",
    "page_counter_cancel",
    "page_counter_charge",
    "page_counter_try_charge",
    "page_counter_uncharge",
    "refill_obj_stock",
    "refill_stock",
    "task_struct",
    "try_charge",
    "try_charge_memcg",
];

/// Why a probe target is not usable in the running kernel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetMissing {
    /// Only compiler clones of the function exist.
    #[error("only compiler clones exist ({}); their arguments are not the C signature", .0.join(", "))]
    ClonesOnly(Vec<String>),
    /// /proc/kallsyms could not be read.
    #[error("kallsyms unavailable")]
    NoKallsyms,
    /// No text symbol of that name.
    #[error("no symbol (inlined or not in this kernel)")]
    NoSymbol,
    /// No BTF FUNC of that name.
    #[error("no BTF FUNC (inlined, renamed or not in this kernel)")]
    NoBtfFunc,
    /// No `btf_trace_<name>` typedef.
    #[error("no BTF tracepoint btf_trace_{0}")]
    NoBtfTracepoint(String),
    /// No tracefs event.
    #[error("no tracepoint {category}:{name}")]
    NoTracepoint {
        /// The event category.
        category: String,
        /// The event name.
        name: String,
    },
    /// The kernel's BTF is unavailable.
    #[error(transparent)]
    Btf(Arc<BtfError>),
    /// tracefs is unavailable.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// No single `.part.N` clone.
    #[error(transparent)]
    PartClone(#[from] PartCloneError),
    /// A kprobe target on a kernel without the kprobe PMU.
    #[error("kernel has no kprobe PMU (CONFIG_KPROBES off)")]
    NoKprobePmu,
    /// No single `.part.N` clone, and kallsyms was unreadable.
    #[error("kallsyms unavailable ({0})")]
    PartCloneNoKallsyms(PartCloneError),
}

/// The kernel's BTF could not be read: the [`BtfError`]'s one-line message. Deliberately not a
/// `source` chain: `BtfError::Read` already names its I/O error in its message, and an error
/// chain printed with `{:#}` would show it twice.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BtfUnavailable(pub Arc<BtfError>);

/// Everything the plan needs to know about the running kernel.
#[derive(Debug)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// The kernel's BTF, or why it is unavailable.
    pub btf: Result<KernelBtf, Arc<BtfError>>,
    /// Text symbols (empty when unreadable), read when first asked for: see [`Self::kallsyms`].
    kallsyms: LazyKallsyms,
    /// tracefs, or why it is unavailable.
    pub tracefs: Result<Tracefs, TracefsError>,
    /// The kprobe PMU exists (CONFIG_KPROBES and perf kprobe support).
    pub kprobe_pmu: bool,
}

impl KernelFacts {
    /// Gathers the facts (mounts tracefs if needed; see [`Tracefs`]).
    pub fn gather() -> Self {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        // Reading and parsing /proc/kallsyms (the kernel expands every symbol) takes 100-150
        // ms here, and only kprobe targets ask about text symbols: with a kprobe PMU it is
        // read on a thread of its own beside the BTF parse, without one only if something asks
        // (doctor). The names the plans and layouts ask the BTF about are fetched in one scan.
        let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
        let kallsyms = LazyKallsyms::new(kprobe_pmu);
        let btf = KernelBtf::from_sys_fs().map_err(Arc::new);
        if let Ok(btf) = &btf {
            btf.prefetch(FACT_TYPES);
        }
        Self {
            release,
            btf,
            kallsyms,
            tracefs: Tracefs::open_or_mount(),
            kprobe_pmu,
        }
    }

    /// The kernel's text symbols (empty when unreadable); the first call may wait for them.
    pub fn kallsyms(&self) -> &Kallsyms {
        self.kallsyms.get()
    }

    /// The BTF or a one-line error.
    pub fn btf(&self) -> Result<&KernelBtf, BtfUnavailable> {
        self.btf.as_ref().map_err(|e| BtfUnavailable(e.clone()))
    }
}

impl TargetFacts for KernelFacts {
    type Missing = TargetMissing;

    fn target_exists(&self, target: &Target) -> Result<(), TargetMissing> {
        match target {
            // Function targets are kprobe attach points: none without the kprobe PMU (and
            // kallsyms need not be read to say so).
            Target::Function(_) | Target::PartClone(_) if !self.kprobe_pmu => {
                Err(TargetMissing::NoKprobePmu)
            }
            Target::Function(name) => match self.kallsyms().state(name) {
                SymbolState::Present => Ok(()),
                SymbolState::ClonesOnly(c) => Err(TargetMissing::ClonesOnly(c)),
                SymbolState::Absent if self.kallsyms().is_empty() => Err(TargetMissing::NoKallsyms),
                SymbolState::Absent => Err(TargetMissing::NoSymbol),
            },
            Target::BtfFunction(name) => match &self.btf {
                Ok(b) if b.has_func(name) => Ok(()),
                Ok(_) => Err(TargetMissing::NoBtfFunc),
                Err(e) => Err(TargetMissing::Btf(e.clone())),
            },
            Target::BtfTracepoint(name) => match &self.btf {
                Ok(b) if b.has_btf_tracepoint(name) => Ok(()),
                Ok(_) => Err(TargetMissing::NoBtfTracepoint((*name).into())),
                Err(e) => Err(TargetMissing::Btf(e.clone())),
            },
            Target::Tracepoint(cat, name) => match &self.tracefs {
                Ok(t) if t.has_event(cat, name) => Ok(()),
                Ok(_) => Err(TargetMissing::NoTracepoint {
                    category: (*cat).into(),
                    name: (*name).into(),
                }),
                Err(e) => Err(e.clone().into()),
            },
            Target::PartClone(name) => match self.kallsyms().part_clone(name) {
                Ok(_) => Ok(()),
                Err(e) if self.kallsyms().is_empty() => Err(TargetMissing::PartCloneNoKallsyms(e)),
                Err(e) => Err(e.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kprobe_pmu: bool) -> KernelFacts {
        KernelFacts {
            release: "test".into(),
            btf: Err(Arc::new(BtfError::Read {
                path: "none".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })),
            kallsyms: LazyKallsyms::new(false),
            tracefs: Err(TracefsError::Mount {
                target: "/none".into(),
                err: nix::errno::Errno::EPERM,
            }),
            kprobe_pmu,
        }
    }

    /// Without a kprobe PMU a kprobe target is refused for that, and kallsyms (100-150 ms to
    /// read and parse) is not read to say so.
    #[test]
    fn kprobe_targets_without_the_pmu_need_no_kallsyms() {
        let f = facts(false);
        for t in [
            Target::Function("drain_stock"),
            Target::PartClone("drain_all_stock"),
        ] {
            assert_eq!(
                f.target_exists(&t).unwrap_err().to_string(),
                "kernel has no kprobe PMU (CONFIG_KPROBES off)"
            );
        }
        assert!(!f.kallsyms.started());
        // With the PMU the question is kallsyms', read at the first question.
        let f = facts(true);
        assert!(!f.kallsyms.started());
        let _ = f.target_exists(&Target::Function("drain_stock"));
        assert!(f.kallsyms.started());
    }
}
