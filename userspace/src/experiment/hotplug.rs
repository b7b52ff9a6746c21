//! Memory blocks of a NUMA node taken offline and put back (`run hotplug`, seed 002 §9.4).
//!
//! `/sys/devices/system/memory/memoryN/state` takes `offline` (the kernel migrates every page
//! of the block elsewhere first: `offline_pages` -> `do_migrate_range`, with the lru_add
//! batches drained and disabled meanwhile) and `online_movable`. Only blocks of
//! `ZONE_MOVABLE` (`valid_zones` reads `Movable` once online) are sure to go: a kernel
//! allocation in any other zone may pin a block. So the run only takes a node whose every
//! block is online and movable (memory hot-added and onlined movable, e.g. a QEMU `pc-dimm`
//! with `memhp_default_state=online_movable`), and puts every block it took offline back
//! online on every exit path ([`crate::undo`]): an error, a panic, SIGINT or SIGTERM.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::experiment::{Context as _, ExperimentError, Result};
use crate::undo::Undo;

const NODES: &str = "/sys/devices/system/node";

/// The memory blocks of `node` (`/sys/devices/system/node/nodeN/memoryX`, resolved), sorted.
pub fn blocks(node: u32) -> Vec<PathBuf> {
    let dir = Path::new(NODES).join(format!("node{node}"));
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.strip_prefix("memory")
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| fs::canonicalize(e.path()).ok())
        .collect();
    out.sort_by_key(|p| block_index(p));
    out
}

fn block_index(p: &Path) -> u64 {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("memory"))
        .and_then(|k| k.parse().ok())
        .unwrap_or(u64::MAX)
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether every block of `node` is online in `ZONE_MOVABLE` (and there is at least one).
pub fn node_is_offlinable(node: u32) -> bool {
    let b = blocks(node);
    !b.is_empty()
        && b.iter().all(|blk| {
            read_trim(&blk.join("state")) == "online"
                && read_trim(&blk.join("valid_zones")) == "Movable"
        })
}

/// The nodes among `nodes` that [`node_is_offlinable`].
pub fn offlinable_nodes(nodes: &[u32]) -> Vec<u32> {
    nodes
        .iter()
        .copied()
        .filter(|&n| node_is_offlinable(n))
        .collect()
}

/// Blocks this process took offline, to be put back online.
#[derive(Debug)]
pub struct Offlined {
    blocks: Arc<Mutex<Vec<PathBuf>>>,
    undo: Undo,
}

/// Memory blocks whose `state` file refused `online_movable`: each with its error, on one
/// line.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe_failed(.0))]
struct StillOffline(Vec<(PathBuf, std::io::Error)>);

fn describe_failed(failed: &[(PathBuf, std::io::Error)]) -> String {
    failed
        .iter()
        .map(|(state, e)| format!("{}: {e}", state.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn online(blocks: &Mutex<Vec<PathBuf>>) -> Result<(), StillOffline> {
    let mut b = blocks.lock().unwrap_or_else(|e| e.into_inner());
    let mut failed = Vec::new();
    for blk in b.drain(..) {
        let state = blk.join("state");
        if let Err(e) = fs::write(&state, "online_movable") {
            failed.push((state, e));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(StillOffline(failed))
    }
}

impl Offlined {
    /// Registers the re-onlining (before the first block goes offline).
    pub fn arm() -> Offlined {
        let blocks: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let b = blocks.clone();
        let undo = Undo::push(move || {
            if let Err(e) = online(&b) {
                eprintln!("memcg-drift: could not put memory blocks back online: {e}");
            }
        });
        Offlined { blocks, undo }
    }

    /// Takes every block of `node` offline (retrying a busy block a few times: a page being
    /// freed or under I/O fails a round of migration with `EBUSY`/`EAGAIN`).
    pub fn offline_node(&self, node: u32) -> Result<usize> {
        let all = blocks(node);
        for blk in &all {
            let state = blk.join("state");
            let mut tries = 0;
            loop {
                match fs::write(&state, "offline") {
                    Ok(()) => break,
                    Err(e)
                        if tries < 5
                            && matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) =>
                    {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("offline > {}", state.display()));
                    }
                }
            }
            self.blocks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(blk.clone());
        }
        Ok(all.len())
    }

    /// Puts the blocks back online now; an error names each block that stayed offline.
    pub fn restore(self) -> Result<()> {
        let r = online(&self.blocks);
        self.undo.disarm();
        r.map_err(|e| ExperimentError::Failed(format!("putting memory blocks back online: {e}")))
    }
}
