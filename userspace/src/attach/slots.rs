//! Probe state userspace sets up beside the load: the dense slots of the stat aggregates
//! ([`Slots`]) and the kernel's count of skipped program runs ([`MissCounter`]). Split from
//! `attach.rs` to keep that file within ~800 lines.

use aya::Ebpf;
use probes_common::{ProbeConfig, flags};

use super::LoadError;
use crate::kernel::btf::KernelBtf;

/// Per-CPU bytes the stat slots may take in all (each slot holds a [`StatBlock`] per CPU).
///
/// [`StatBlock`]: probes_common::StatBlock
pub(super) const SLOT_BUDGET: u64 = 16 << 20;
/// Most slots, whatever the budget allows (each is a per-CPU allocation at map creation).
pub(super) const MAX_SLOTS: u32 = 256;

/// The cgroups whose stat aggregates and inference readings live in dense slots rather than
/// in hash maps: slot `i` belongs to `ids()[i]`; slot 0 is the filter's target (id 0, unused,
/// without one). Fixed before the probes attach; a cgroup made later (or one past the
/// capacity) is recorded through the hash maps, with the same figures (issue 11: a slot
/// spares the two hash lookups per event of `--descendants`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slots {
    ids: std::sync::Arc<[u64]>,
}

impl Slots {
    /// The target in slot 0, then `others` (duplicates and the target skipped) while they fit
    /// in `capacity` slots.
    pub fn new(target: Option<u64>, others: impl IntoIterator<Item = u64>, capacity: u32) -> Self {
        let t = target.unwrap_or(0);
        let mut ids = vec![t];
        let mut seen = std::collections::HashSet::from([t]);
        for id in others {
            if ids.len() >= capacity.max(1) as usize {
                break;
            }
            if id != 0 && seen.insert(id) {
                ids.push(id);
            }
        }
        Self { ids: ids.into() }
    }

    /// The slots `cpus` possible CPUs can afford ([`SLOT_BUDGET`], at most [`MAX_SLOTS`]).
    pub fn capacity(cpus: usize) -> u32 {
        let per_slot = probes_common::STAT_BLOCK_BYTES as u64 * cpus.max(1) as u64;
        u32::try_from(SLOT_BUDGET / per_slot)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_SLOTS)
    }

    /// The cgroup of each slot.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The slot of `cgroup_id`, if it has one.
    pub fn of(&self, cgroup_id: u64) -> Option<u32> {
        if cgroup_id == 0 {
            return None;
        }
        self.ids
            .iter()
            .position(|&id| id == cgroup_id)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Sets [`flags::SLOTS`] on `cfg` when cgroups other than the target have slots.
    pub fn configure(&self, cfg: &mut ProbeConfig) {
        if self.ids.len() > 1 {
            cfg.flags |= flags::SLOTS;
        }
    }

    /// Writes the slots into a loaded object's `SLOT_OF` and `SLOT_IDS` (before attaching).
    pub fn seed(&self, ebpf: &mut Ebpf) -> Result<(), LoadError> {
        use aya::maps::{Array, HashMap};
        use probes_common::{MAP_SLOT_IDS, MAP_SLOT_OF};
        fn map<'e>(
            ebpf: &'e mut Ebpf,
            name: &'static str,
        ) -> Result<&'e mut aya::maps::Map, LoadError> {
            ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))
        }
        let mut owners: Array<_, u64> = Array::try_from(map(ebpf, MAP_SLOT_IDS)?)
            .map_err(|e| LoadError::Seed(MAP_SLOT_IDS, e))?;
        for (slot, &id) in (0u32..).zip(self.ids.iter()) {
            owners
                .set(slot, id, 0)
                .map_err(|e| LoadError::Seed(MAP_SLOT_IDS, e))?;
        }
        let mut of: HashMap<_, u64, u32> = HashMap::try_from(map(ebpf, MAP_SLOT_OF)?)
            .map_err(|e| LoadError::Seed(MAP_SLOT_OF, e))?;
        for (slot, &id) in (0u32..).zip(self.ids.iter()) {
            if id != 0 {
                of.insert(id, slot, 0)
                    .map_err(|e| LoadError::Seed(MAP_SLOT_OF, e))?;
            }
        }
        Ok(())
    }
}

/// Where the kernel counts the runs of a program it skipped because the program was already
/// running on that CPU (an event in an interrupt that came while it ran):
/// `bpf_prog_info.recursion_misses` (5.12+), read with the `BPF_OBJ_GET_INFO_BY_FD` command;
/// both resolved from the running kernel's BTF. Those events never reach the program, so only
/// this counter shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissCounter {
    cmd: i64,
    offset: usize,
}

impl MissCounter {
    /// The command and the member's offset; `None` where BTF lacks either.
    pub fn resolve(btf: &KernelBtf) -> Option<Self> {
        Some(Self {
            cmd: btf.enum_value("bpf_cmd", "BPF_OBJ_GET_INFO_BY_FD")?,
            offset: usize::try_from(btf.member_offset("bpf_prog_info", "recursion_misses")?)
                .ok()?,
        })
    }

    /// The misses of `programs` of `ebpf`, summed; `None` if one could not be read.
    pub fn read(&self, ebpf: &Ebpf, programs: &[&str]) -> Option<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        /// The `info` member of `union bpf_attr`.
        #[repr(C)]
        struct InfoAttr {
            bpf_fd: u32,
            info_len: u32,
            info: u64,
        }
        let mut sum = 0u64;
        for name in programs {
            let fd = ebpf.program(name)?.fd().ok()?.as_fd().as_raw_fd();
            let mut info = vec![0u8; self.offset + 8];
            let mut attr = InfoAttr {
                bpf_fd: u32::try_from(fd).ok()?,
                info_len: u32::try_from(info.len()).ok()?,
                info: info.as_mut_ptr() as u64,
            };
            // SAFETY: `attr` is the command's argument, of the size passed, and points at
            // `info`, a zeroed buffer of `info_len` bytes the kernel fills (no more than that).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    self.cmd,
                    &mut attr as *mut InfoAttr,
                    std::mem::size_of::<InfoAttr>(),
                )
            };
            // The kernel writes back how much of its struct it filled.
            if r != 0 || (attr.info_len as usize) < info.len() {
                return None;
            }
            let bytes: [u8; 8] = info[self.offset..].try_into().ok()?;
            sum += u64::from_ne_bytes(bytes);
        }
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_put_the_target_first_and_keep_within_capacity() {
        let s = Slots::new(Some(7), [9, 7, 0, 9, 11, 12], 3);
        assert_eq!(s.ids(), &[7, 9, 11]);
        assert_eq!(
            (s.of(7), s.of(9), s.of(11), s.of(12)),
            (Some(0), Some(1), Some(2), None)
        );
        // Id 0 (no target) holds slot 0 and is never found.
        let s = Slots::new(None, [5], 4);
        assert_eq!(s.ids(), &[0, 5]);
        assert_eq!((s.of(0), s.of(5)), (None, Some(1)));
        // Only a target: the probes are not told to look cgroups up.
        let mut cfg = ProbeConfig::ZERO;
        Slots::new(Some(7), [], 1).configure(&mut cfg);
        assert_eq!(cfg.flags & flags::SLOTS, 0);
        Slots::new(Some(7), [8], 2).configure(&mut cfg);
        assert_ne!(cfg.flags & flags::SLOTS, 0);
    }
}
