//! Tiny programs that do nothing: `memcg-drift doctor` loads and attaches one of each flavour
//! to find out what the running kernel really allows (BTF can list a function that fentry
//! still refuses; a kernel can lack kprobes altogether).

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext,
        RetProbeContext, TracePointContext,
    },
};

#[fentry(function = "trial")]
pub fn trial_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[kprobe]
pub fn trial_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fexit(function = "trial")]
pub fn trial_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[kretprobe]
pub fn trial_kretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

#[btf_tracepoint(function = "trial")]
pub fn trial_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "trial")]
pub fn trial_raw_tp(_ctx: RawTracePointContext) -> i32 {
    0
}

#[tracepoint]
pub fn trial_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}
