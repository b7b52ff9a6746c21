//! A tmpfs for an experiment's files: the run's scratch dir where it is on tmpfs (the QEMU
//! guests' /run), otherwise a private tmpfs (`huge=never`) mounted under it in a mount
//! namespace of the calling thread, so it is unmounted on every exit path (explicitly, on drop,
//! and by the kernel when the process dies, even by SIGKILL); outside the namespace the
//! directory stays an empty directory. Processes the thread starts afterwards (workloads) see
//! the mount.

use crate::experiment::{Context as _, Result};
use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A private tmpfs in this thread's own mount namespace.
pub struct PrivateTmpfs {
    dir: PathBuf,
    mounted: bool,
}

impl PrivateTmpfs {
    fn mount(dir: &Path, size: u64) -> Result<PrivateTmpfs> {
        // SAFETY: unshare(2) of this thread's mount namespace (and fs_struct); no memory is
        // shared with other threads through it.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
        }
        // Mounts made here must not propagate back to the host's namespace.
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("making / private in the run's mount namespace")?;
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let opts = format!("size={size},huge=never,mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .with_context(|| format!("mounting a tmpfs on {}", dir.display()))?;
        Ok(PrivateTmpfs {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts now (and removes the mount point).
    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("unmounting {}", self.dir.display()))?;
            self.mounted = false;
            let _ = std::fs::remove_dir(&self.dir);
        }
        Ok(())
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// True when `p` is on a tmpfs.
pub fn is_tmpfs(p: &Path) -> Result<bool> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: a zeroed statfs is valid; statfs(2) fills it from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| p.display().to_string());
    }
    Ok(st.f_type as i64 == TMPFS_MAGIC)
}

/// The directory for the run's tmpfs files under `scratch`, the private mount if one was made
/// (keep it alive while the files are used), and a sentence saying which it is.
pub fn scratch_tmpfs(scratch: &Path, size: u64) -> Result<(PathBuf, Option<PrivateTmpfs>, String)> {
    if is_tmpfs(scratch)? {
        return Ok((
            scratch.to_path_buf(),
            None,
            format!("the run's scratch dir {} (on tmpfs)", scratch.display()),
        ));
    }
    let d = scratch.join("tmpfs");
    let m = PrivateTmpfs::mount(&d, size)?;
    Ok((
        d.clone(),
        Some(m),
        format!(
            "a private tmpfs (huge=never) mounted on {} in the run's own mount namespace ({} is not tmpfs)",
            d.display(),
            scratch.display()
        ),
    ))
}
