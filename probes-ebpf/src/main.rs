//! memcg-drift's eBPF programs.
//!
//! The probes are dumb and small: they resolve the memcg of an event to its cgroup id, decide
//! whether the cgroup is in the target subtree, and add the event into a per-CPU aggregate.
//! All interpretation (item names, units, per-CPU breakdown, ledger) happens in userspace.
//!
//! The residue reader (`residue`) is different: raw-tracepoint programs run on demand with
//! `BPF_PROG_TEST_RUN` that copy a memcg subtree's counters and every CPU's residues into maps
//! for `memcg-drift explain`.
//!
//! Each hook body is written once (`stat::on_memcg_state`); the entry points per attach
//! flavour (tp_btf, tracepoint, fentry, kprobe) only adapt their arguments. Which flavour and
//! which kernel symbol is used is decided at run time by userspace.
#![no_std]
#![no_main]

mod charge;
mod floor;
mod infer;
mod lifecycle;
mod maps;
mod oom;
mod residue;
mod stat;
mod trial;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The helpers used (bpf_probe_read_kernel) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
