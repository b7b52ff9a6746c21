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
use symbols::{Kallsyms, PartCloneError, SymbolState};
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
    /// Text symbols (empty when unreadable).
    pub kallsyms: Kallsyms,
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
        // Reading /proc/kallsyms (the kernel expands every symbol) and parsing the BTF take
        // about 100 ms each here: side by side they count once in the attach time.
        // The names the plans and layouts then ask about are fetched meanwhile, in one scan.
        let (btf, kallsyms) = std::thread::scope(|scope| {
            let kallsyms = scope.spawn(|| Kallsyms::load().unwrap_or_default());
            let btf = KernelBtf::from_sys_fs().map_err(Arc::new);
            if let Ok(btf) = &btf {
                btf.prefetch(FACT_TYPES);
            }
            (btf, kallsyms.join().unwrap_or_default())
        });
        Self {
            release,
            btf,
            kallsyms,
            tracefs: Tracefs::open_or_mount(),
            kprobe_pmu: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
        }
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
            Target::Function(name) => match self.kallsyms.state(name) {
                SymbolState::Present => Ok(()),
                SymbolState::ClonesOnly(c) => Err(TargetMissing::ClonesOnly(c)),
                SymbolState::Absent if self.kallsyms.is_empty() => Err(TargetMissing::NoKallsyms),
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
            Target::PartClone(name) => match self.kallsyms.part_clone(name) {
                Ok(_) => Ok(()),
                Err(e) if self.kallsyms.is_empty() => Err(TargetMissing::PartCloneNoKallsyms(e)),
                Err(e) => Err(e.into()),
            },
        }
    }
}
