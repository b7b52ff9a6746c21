//! The floor of the overhead benchmark (`cargo xtask bench`): the least a program of this
//! project can do on the stat-path hooks, one add to a per-CPU array slot per event. The
//! benchmark attaches these on exactly the stat hooks `trace` uses (same flavour, same
//! target), so the difference between `trace` and this floor is what the real probes' bodies
//! cost, not what it costs the kernel to run a BPF program on the hook at all.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};

/// Events seen by the floor programs, on each CPU.
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

#[btf_tracepoint(function = "mod_memcg_state")]
pub fn floor_tp_btf_memcg_state(_ctx: BtfTracePointContext) -> i32 {
    count();
    0
}

#[btf_tracepoint(function = "mod_memcg_lruvec_state")]
pub fn floor_tp_btf_lruvec_state(_ctx: BtfTracePointContext) -> i32 {
    count();
    0
}

#[tracepoint]
pub fn floor_tp_memcg_state(_ctx: TracePointContext) -> u32 {
    count();
    0
}

#[tracepoint]
pub fn floor_tp_lruvec_state(_ctx: TracePointContext) -> u32 {
    count();
    0
}

#[fentry(function = "__mod_memcg_state")]
pub fn floor_fentry_memcg_state(_ctx: FEntryContext) -> u32 {
    count();
    0
}

#[fentry(function = "__mod_memcg_lruvec_state")]
pub fn floor_fentry_lruvec_state(_ctx: FEntryContext) -> u32 {
    count();
    0
}

#[kprobe]
pub fn floor_kprobe_memcg_state(_ctx: ProbeContext) -> u32 {
    count();
    0
}

#[kprobe]
pub fn floor_kprobe_lruvec_state(_ctx: ProbeContext) -> u32 {
    count();
    0
}
