//! The embedded eBPF object.

/// The probes object built by `build.rs`; empty when the eBPF toolchain was missing.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes"));
