//! Per-CPU residues of a memcg subtree, read from the running kernel with the residue programs
//! (`probes-ebpf/src/residue.rs`): page counters, flushed and pending statistics, every CPU's
//! charge stock, object stock and lru_add batch.
//!
//! - [`ResidueReader`] loads the programs (sized for this machine's CPUs and the subtree) and
//!   runs them on demand with `BPF_PROG_TEST_RUN`; it is the only part that touches the kernel.
//! - [`walk`] finds a cgroup's `struct mem_cgroup` and its descendants, dying ones included, by
//!   following the css tree through [`KernelMem`] peeks: from the tool's own memcg
//!   (`current->cgroups->subsys[memory_cgrp_id]`) up to the root, down along the target's path
//!   by cgroup id, then every `children` list below it. Pure logic over a memory reader, so it
//!   is unit-tested with a fake kernel.
//! - [`Residues::decode`] turns the raw records into typed residues and judges the snapshot:
//!   consistent (nothing moved between its open and close frames), and whether the static
//!   per-CPU route held (`this_cpu_off` equals each CPU's offset).
//!
//! What the residues add up to is the ledger's business (`ledger`).
//!
//! Files: `walk.rs` (the css tree walk over [`KernelMem`]), `reader.rs` (loading and running
//! the programs), `decode.rs` (raw records to typed residues, and the snapshot's judgement).

use std::{collections::BTreeSet, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun},
};
use probes_common::{
    CpuFrame, FolioInfo, GLOBAL_RESIDUE_CONFIG, MAP_RES_CPU, MAP_RES_FOLIO, MAP_RES_MEMCG,
    MAP_RES_MEMCG_CPU, MAP_RES_PEEK, MAP_RES_REQ, MemcgCpuStat, MemcgFrame, MemcgReq, PeekBuf,
    RES_FOLIO_CHUNK, RES_FRAME_CHUNK, RES_MAX_CPUS, RES_MAX_FOLIOS, RES_MAX_MEMCGS, RES_PEEK_BYTES,
    RES_WINDOW_ENTRIES, residue_err,
};
use serde::Serialize;

use crate::kernel::layout::{LayoutError, PcpuOffsets, ResidueLayout};

mod decode;
mod reader;
#[cfg(test)]
mod tests;
mod walk;

pub use decode::*;
pub use reader::*;
pub use walk::*;

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn le_uint(b: &[u8], off: usize, size: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(off..off + size.min(8)) {
        w[..s.len()].copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn words_to_bytes(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A consistent snapshot (or the last attempt) and how many attempts it took.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The residues.
    pub residues: Residues,
    /// Snapshots taken (1 when the first was consistent).
    pub attempts: usize,
}

/// Takes snapshots until one is consistent, at most `max_attempts`, waiting in between
/// `first_pause`, then twice as long each time up to `max_pause`: most movements (a charge, a
/// flush under way) are over within a few milliseconds, so the first retries come soon and
/// only a subtree that keeps moving waits as long as a fixed long pause would. The last
/// snapshot is returned either way; its `consistent` says which.
pub fn take(
    reader: &mut ResidueReader,
    nodes: &[MemcgNode],
    max_attempts: usize,
    first_pause: Duration,
    max_pause: Duration,
) -> Result<Taken, ResidueError> {
    let mut attempts = 0;
    let mut pause = first_pause;
    loop {
        attempts += 1;
        let raw = reader.raw_snapshot(nodes)?;
        let residues = Residues::decode(&raw, reader.layout());
        if residues.consistent.is_ok() || attempts >= max_attempts {
            return Ok(Taken { residues, attempts });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(max_pause);
    }
}
