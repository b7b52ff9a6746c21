//! The machine's swap: free space (`/proc/meminfo`), the devices in use (`/proc/swaps`), and
//! turning a device off and on again for `run swap --swapoff`, with the "on again" registered in
//! [`crate::undo`] before the device goes off, so it happens on every exit path (an error, a
//! panic, SIGINT/SIGTERM/SIGHUP).

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use crate::experiment::{Context as _, Result, refuse};
use crate::undo::Undo;

/// `swapon(2)` flags (include/uapi/linux/swap.h): use the priority in the low bits.
const SWAP_FLAG_PREFER: libc::c_int = 0x8000;
/// `swapon(2)` flags: the priority's bits.
const SWAP_FLAG_PRIO_MASK: libc::c_int = 0x7fff;

/// Swap devices and free swap of the machine (`/proc/swaps`, `/proc/meminfo` `SwapFree`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapSpace {
    /// Devices and files in use.
    pub devices: usize,
    /// Free swap, bytes.
    pub free_bytes: u64,
    /// Total swap, bytes.
    pub total_bytes: u64,
}

impl SwapSpace {
    /// Reads the machine's swap.
    pub fn read() -> Result<SwapSpace> {
        let swaps = std::fs::read_to_string("/proc/swaps").context("/proc/swaps")?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("/proc/meminfo")?;
        Ok(Self::parse(&swaps, &meminfo))
    }

    fn parse(swaps: &str, meminfo: &str) -> SwapSpace {
        let devices = swaps
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count();
        let bytes = |key: &str| {
            meminfo
                .lines()
                .find_map(|l| {
                    let kb = l.strip_prefix(key)?.trim().trim_end_matches("kB");
                    kb.trim().parse::<u64>().ok()
                })
                .unwrap_or(0)
                * 1024
        };
        SwapSpace {
            devices,
            free_bytes: bytes("SwapFree:"),
            total_bytes: bytes("SwapTotal:"),
        }
    }

    /// Swap in use on the whole machine, bytes (what turning every device off brings back).
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.free_bytes)
    }

    /// Refuses a run that needs `need` bytes of swap, in one line.
    pub fn check(&self, need: u64) -> Result<()> {
        if self.devices == 0 {
            refuse!(
                "run swap needs a swap device: /proc/swaps lists none (the tool never enables \
                 swap on a machine itself)"
            );
        }
        if need > self.free_bytes {
            refuse!(
                "run swap would put up to {} MiB in swap but only {} MiB of swap are free; \
                 choose a smaller --grow-to",
                need >> 20,
                self.free_bytes >> 20
            );
        }
        Ok(())
    }
}

/// One device or file of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapDevice {
    /// Its path (octal escapes of `/proc/swaps` undone).
    pub path: PathBuf,
    /// `partition` or `file`.
    pub kind: String,
    /// Size, KiB.
    pub size_kib: u64,
    /// Used, KiB.
    pub used_kib: u64,
    /// Priority (negative: assigned by the kernel at swapon).
    pub priority: i32,
}

impl SwapDevice {
    /// The devices in use, in `/proc/swaps` order.
    pub fn all() -> Result<Vec<SwapDevice>> {
        let text = std::fs::read_to_string("/proc/swaps").context("/proc/swaps")?;
        Ok(Self::parse_all(&text))
    }

    fn parse_all(text: &str) -> Vec<SwapDevice> {
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let [path, kind, size, used, prio] = f.as_slice() else {
                    return None;
                };
                Some(SwapDevice {
                    path: PathBuf::from(crate::cgroup::unescape_proc_path(path)),
                    kind: (*kind).to_string(),
                    size_kib: size.parse().ok()?,
                    used_kib: used.parse().ok()?,
                    priority: prio.parse().ok()?,
                })
            })
            .collect()
    }

    /// `swapon(2)` flags that give the device its priority back; a kernel-assigned (negative)
    /// priority cannot be asked for, and the kernel assigns a new one.
    fn flags(&self) -> libc::c_int {
        if self.priority >= 0 {
            SWAP_FLAG_PREFER | (self.priority & SWAP_FLAG_PRIO_MASK)
        } else {
            0
        }
    }

    /// Turns the device on again; one that is on already (`EBUSY`) is fine.
    pub fn swapon(&self) -> Result<()> {
        swapon(&self.path, self.flags())
    }
}

fn swapon(path: &Path, flags: libc::c_int) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: swapon(2) on a NUL-terminated path.
    if unsafe { libc::swapon(c.as_ptr(), flags) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e).with_context(|| format!("swapon {}", path.display()));
        }
    }
    Ok(())
}

/// A swap device about to be turned off: until [`Reenable::restore`], its `swapon` is pending in
/// [`crate::undo`].
#[derive(Debug)]
pub struct Reenable {
    dev: SwapDevice,
    undo: Undo,
}

impl Reenable {
    /// Registers the `swapon` of `dev` (call before turning it off).
    pub fn arm(dev: SwapDevice) -> Reenable {
        let (path, flags) = (dev.path.clone(), dev.flags());
        let undo = Undo::push(move || {
            if let Err(e) = swapon(&path, flags) {
                eprintln!("memcg-drift: could not turn swap back on: {}", e.chain());
            }
        });
        Reenable { dev, undo }
    }

    /// The device.
    pub fn device(&self) -> &SwapDevice {
        &self.dev
    }

    /// Turns the device on again now.
    pub fn restore(self) -> Result<()> {
        let r = self.dev.swapon();
        self.undo.disarm();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_space_is_read_and_refuses_in_one_line() {
        let none = SwapSpace::parse(
            "Filename\tType\tSize\tUsed\tPriority\n",
            "MemTotal: 100 kB\nSwapFree:       0 kB\n",
        );
        assert_eq!(none.devices, 0);
        let e = none.check(1).unwrap_err().to_string();
        assert!(e.contains("/proc/swaps lists none"), "{e}");
        assert!(!e.contains('\n'));
        let zram = SwapSpace::parse(
            "Filename\tType\tSize\tUsed\tPriority\n/dev/zram0 partition\t1048572\t0\t-2\n",
            "SwapTotal: 1048572 kB\nSwapFree: 1048572 kB\n",
        );
        assert_eq!(zram.devices, 1);
        assert_eq!(zram.free_bytes, 1048572 * 1024);
        assert!(zram.check(512 << 20).is_ok());
        let e = zram.check(2 << 30).unwrap_err().to_string();
        assert!(e.contains("only 1023 MiB of swap are free"), "{e}");
    }

    #[test]
    fn proc_swaps_lines_are_parsed_with_escapes() {
        let d = SwapDevice::parse_all(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
             /dev/zram0                              partition\t1048572\t\t2048\t\t100\n\
             /var/swap\\040file                        file\t\t65532\t\t0\t\t-2\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].path, Path::new("/dev/zram0"));
        assert_eq!(
            (d[0].size_kib, d[0].used_kib, d[0].priority),
            (1048572, 2048, 100)
        );
        assert_eq!(d[0].flags(), 0x8000 | 100);
        assert_eq!(d[1].path, Path::new("/var/swap file"));
        assert_eq!(d[1].kind, "file");
        // A kernel-assigned priority is not asked for again.
        assert_eq!(d[1].flags(), 0);
    }
}
