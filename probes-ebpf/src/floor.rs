//! The floor of the overhead benchmark (`cargo xtask bench`): the least a program of this
//! project can do on a hook, one add to a per-CPU array slot per run. The benchmark attaches
//! one on every hook `trace` attached (same flavour, same kernel target: the stat hooks, and
//! where the kernel allows them the charge, OOM and lifecycle hooks), so the difference
//! between `trace` and this floor is what the real probes' bodies cost, not what it costs the
//! kernel to run a BPF program on those hooks at all.
//!
//! A fentry, fexit or tp_btf program is bound to its target when it is loaded, so there is a
//! pool of each, one program per hook; kprobe, kretprobe, tracepoint and raw-tracepoint
//! programs take their target when attached, so one of each serves every hook of its flavour.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::PerCpuArray,
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext,
        RetProbeContext, TracePointContext,
    },
};

/// Runs of the floor programs, on each CPU.
#[map(name = "FLOOR")]
static FLOOR: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The whole body: one per-CPU add.
#[inline(always)]
fn count() {
    if let Some(p) = FLOOR.get_ptr_mut(0) {
        // SAFETY: this CPU's element of a per-CPU array.
        unsafe { *p += 1 };
    }
}

/// Floor programs of one flavour bound at load; the section's function is a placeholder (the
/// loader names the real target). Userspace
/// knows the pools by these names (`tracer::FLOOR_POOLS`).
macro_rules! pool {
    ($attr:ident, $ctx:ty, $ret:ty, $($name:ident),+ $(,)?) => {
        $(
            #[$attr(function = "floor")]
            pub fn $name(_ctx: $ctx) -> $ret {
                count();
                0
            }
        )+
    };
}

pool!(
    fentry,
    FEntryContext,
    u32,
    floor_fentry_0,
    floor_fentry_1,
    floor_fentry_2,
    floor_fentry_3,
    floor_fentry_4,
    floor_fentry_5,
    floor_fentry_6,
    floor_fentry_7,
    floor_fentry_8,
    floor_fentry_9,
    floor_fentry_10,
    floor_fentry_11,
    floor_fentry_12,
    floor_fentry_13,
    floor_fentry_14,
    floor_fentry_15,
    floor_fentry_16,
    floor_fentry_17,
    floor_fentry_18,
    floor_fentry_19,
    floor_fentry_20,
    floor_fentry_21,
    floor_fentry_22,
    floor_fentry_23,
);

pool!(
    fexit,
    FExitContext,
    u32,
    floor_fexit_0,
    floor_fexit_1,
    floor_fexit_2,
    floor_fexit_3,
    floor_fexit_4,
    floor_fexit_5,
);

pool!(
    btf_tracepoint,
    BtfTracePointContext,
    i32,
    floor_tp_btf_0,
    floor_tp_btf_1,
    floor_tp_btf_2,
    floor_tp_btf_3,
    floor_tp_btf_4,
    floor_tp_btf_5,
    floor_tp_btf_6,
    floor_tp_btf_7,
);

#[kprobe]
pub fn floor_kprobe(_ctx: ProbeContext) -> u32 {
    count();
    0
}

#[kretprobe]
pub fn floor_kretprobe(_ctx: RetProbeContext) -> u32 {
    count();
    0
}

#[tracepoint]
pub fn floor_tracepoint(_ctx: TracePointContext) -> u32 {
    count();
    0
}

#[raw_tracepoint]
pub fn floor_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    count();
    0
}
