//! Files and directories the tool writes as root, made safe against other local users.
//!
//! memcg-drift runs as root on shared hosts. Any name it writes in a directory that others can
//! write (`/dev/shm`, `/var/tmp`, `/tmp`, a `--cache-dir` or `--record` path a user names) is a
//! place where another user can plant a symlink or a file first. This module is the one place
//! that creates such paths (docs/security.md lists every path and how it is opened):
//!
//! - [`ensure_private_root`]: the tool's own directory under `/run` (mode 0700, owned by us,
//!   never a symlink); files inside it are out of other users' reach.
//! - [`PrivateDir`]: a directory of a run inside a shared directory: created by `mkdir` with
//!   mode 0700 under an unpredictable name (a planted name makes `mkdir` fail, never followed),
//!   checked through its own descriptor, and removed only when the inode at its path is still
//!   the one it created ([`remove_verified`]); its files are created `O_EXCL | O_NOFOLLOW`.
//! - [`check_user_output`] / [`write_user_output`]: a path a user chose (`--record FILE`): the
//!   kernel's `protected_symlinks` / `protected_regular` rules applied by the tool itself, so it
//!   does not depend on those sysctls; written atomically through a temporary file of an
//!   unpredictable name.
//!
//! Nothing here follows a symlink it did not check, and nothing removes an inode it did not
//! record.

use std::{
    ffi::{OsStr, OsString},
    fs,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::{
            ffi::OsStrExt as _,
            fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
        },
    },
    path::{Path, PathBuf},
};

use nix::{
    dir::Dir,
    fcntl::{AtFlags, OFlag, openat},
    sys::stat::{Mode, fstat, fstatat},
    unistd::{UnlinkatFlags, unlinkat},
};

/// An error of this module: one line naming the path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    /// An I/O error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The path exists but is not what the tool may use.
    #[error("{}: {reason}", path.display())]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// Why the tool refuses it.
        reason: String,
    },
}

impl SafeFsError {
    fn io(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> SafeFsError {
        SafeFsError::Io {
            path: path.into(),
            source: source.into(),
        }
    }

    fn unsafe_path(path: impl Into<PathBuf>, reason: impl Into<String>) -> SafeFsError {
        SafeFsError::Unsafe {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// 16 hex digits from the kernel's random source: an unguessable name component.
pub fn random_suffix() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // getrandom(2) on a modern kernel does not fail for 8 bytes; fall back to the clock and
        // pid rather than to a fixed value (the name stays hard to guess and unique).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Makes sure `dir` is a directory of the tool's own: created with mode 0700 if missing;
/// if present, it must be a real directory (not a symlink) owned by the effective user, and its
/// mode is narrowed to 0700 (older versions made it 0755). Its parent must not be writable by
/// others (e.g. `/run`).
pub fn ensure_private_root(dir: &Path) -> Result<(), SafeFsError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SafeFsError::io(dir, e)),
    }
    let md = fs::symlink_metadata(dir).map_err(|e| SafeFsError::io(dir, e))?;
    if !md.file_type().is_dir() {
        return Err(SafeFsError::unsafe_path(
            dir,
            "exists and is not a directory (a symlink or a file); remove it and run again",
        ));
    }
    if md.uid() != euid() {
        return Err(SafeFsError::unsafe_path(
            dir,
            format!(
                "is owned by uid {}, not by the tool's user (uid {}); remove it and run again",
                md.uid(),
                euid()
            ),
        ));
    }
    if md.mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| SafeFsError::io(dir, e))?;
    }
    Ok(())
}

/// Creates the directory `path` with mode 0700, inside a directory that is already private
/// (for example the run's scratch directory under [`ensure_private_root`]). An existing
/// directory of ours is accepted; anything else at the name is refused.
pub fn create_private_subdir(path: &Path) -> Result<(), SafeFsError> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let md = fs::symlink_metadata(path).map_err(|e| SafeFsError::io(path, e))?;
            if md.file_type().is_dir() && md.uid() == euid() {
                Ok(())
            } else {
                Err(SafeFsError::unsafe_path(
                    path,
                    "exists and is not a directory of the tool's own",
                ))
            }
        }
        Err(e) => Err(SafeFsError::io(path, e)),
    }
}

/// Writes `bytes` as the file `name` of `dir`, a directory made private by
/// [`ensure_private_root`]: through a temporary file of an unpredictable name
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600) renamed over `name`, so a reader sees the old
/// file or the new one, never half of one, and two writers racing each leave a whole file.
pub fn write_private_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, SafeFsError> {
    ensure_private_root(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", random_suffix()));
    write_through_temp(&tmp, &path, bytes, 0o600)?;
    Ok(path)
}

/// Writes `bytes` to `tmp`, a new name (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mode`), and renames
/// it over `path`; the temporary file is removed when anything fails.
fn write_through_temp(tmp: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<(), SafeFsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(tmp)
        .map_err(|e| SafeFsError::io(tmp, e))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| fs::rename(tmp, path)) {
        let _ = fs::remove_file(tmp);
        return Err(SafeFsError::io(path, e));
    }
    Ok(())
}

/// Reads a file written by [`write_private_file`]: opened `O_NOFOLLOW` (a symlink is refused),
/// and used only when the directory is private and the file is a regular file owned by the
/// tool's user that nobody else may write. `Ok(None)` when there is no such file.
pub fn read_private_file(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, SafeFsError> {
    let dmd = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SafeFsError::io(dir, e)),
    };
    if !dmd.file_type().is_dir() || dmd.uid() != euid() || dmd.mode() & 0o077 != 0 {
        return Err(SafeFsError::unsafe_path(
            dir,
            "is not a private directory of the tool's own",
        ));
    }
    let path = dir.join(name);
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SafeFsError::io(&path, e)),
    };
    let md = f.metadata().map_err(|e| SafeFsError::io(&path, e))?;
    if !md.file_type().is_file() || md.uid() != euid() || md.mode() & 0o022 != 0 {
        return Err(SafeFsError::unsafe_path(
            &path,
            "is not a regular file of the tool's own that only it may write",
        ));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut f, &mut bytes).map_err(|e| SafeFsError::io(&path, e))?;
    Ok(Some(bytes))
}

/// Device and inode of a file: how a run recognises what it created (with the owner, which
/// another user cannot fake: a filesystem may give a new file a freed inode number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// A private directory of a run inside a directory others may write (`/dev/shm`, `/var/tmp`, a
/// user's `--cache-dir`): `<parent>/<prefix>.<16 random hex digits>`, mode 0700, owned by the
/// tool's user. Other users can see the name but can neither enter it nor (in a sticky
/// directory) rename or remove it. Removed by [`PrivateDir::remove`] (or [`remove_verified`]
/// after a crash) only while the inode at its path is the one created.
#[derive(Debug, Clone)]
pub struct PrivateDir {
    path: PathBuf,
    id: FileId,
}

impl PrivateDir {
    /// Creates the directory. A name that already exists (planted or a collision) makes `mkdir`
    /// fail and another random name is tried; nothing at an existing name is ever used.
    pub fn create(parent: &Path, prefix: &str) -> Result<PrivateDir, SafeFsError> {
        let pmd = fs::metadata(parent).map_err(|e| SafeFsError::io(parent, e))?;
        if !pmd.is_dir() {
            return Err(SafeFsError::unsafe_path(parent, "is not a directory"));
        }
        for _ in 0..16 {
            let path = parent.join(format!("{prefix}.{}", random_suffix()));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SafeFsError::io(&path, e)),
            }
            // Check what was made through its own descriptor (O_NOFOLLOW: a name swapped for a
            // symlink since the mkdir is not followed).
            let fd = open_dir_nofollow(&path)?;
            let st = fstat(fd.as_raw_fd()).map_err(|e| SafeFsError::io(&path, e))?;
            if st.st_uid != euid() || st.st_mode & 0o7777 != 0o700 {
                return Err(SafeFsError::unsafe_path(
                    &path,
                    "changed between mkdir and open (not the tool's 0700 directory)",
                ));
            }
            return Ok(PrivateDir {
                path,
                id: FileId {
                    dev: st.st_dev,
                    ino: st.st_ino,
                },
            });
        }
        Err(SafeFsError::unsafe_path(
            parent,
            format!("could not create a private `{prefix}.*` directory in 16 tries (names taken)"),
        ))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its device and inode as created.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Removes the directory and the files in it, if the inode at its path is still the one
    /// created (see [`remove_verified`]).
    pub fn remove(&self) -> Result<Removed, SafeFsError> {
        remove_verified(&self.path, self.id)
    }
}

fn open_dir_nofollow(path: &Path) -> Result<OwnedFd, SafeFsError> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| SafeFsError::io(path, e))?;
    Ok(OwnedFd::from(f))
}

/// What [`remove_verified`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// Removed.
    Removed,
    /// Nothing was at the path.
    Absent,
}

/// Removes the directory at `path` with everything in it, but only when the inode there is
/// `id` and owned by the tool's user: never follows a symlink (neither at `path` nor inside),
/// never removes what another user put at that name. Entries are removed through the
/// directory's descriptor (`unlinkat`), so renaming a parent meanwhile cannot redirect them.
pub fn remove_verified(path: &Path, id: FileId) -> Result<Removed, SafeFsError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SafeFsError::unsafe_path(path, "has no parent directory"));
    };
    let parent_fd = match Dir::open(parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()) {
        Ok(d) => d,
        Err(nix::errno::Errno::ENOENT) => return Ok(Removed::Absent),
        Err(e) => return Err(SafeFsError::io(parent, e)),
    };
    let fd = match openat(
        Some(parent_fd.as_raw_fd()),
        name,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(Removed::Absent),
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
            return Err(SafeFsError::unsafe_path(
                path,
                "is no longer the run's directory (a symlink or a file is there now): left alone",
            ));
        }
        Err(e) => return Err(SafeFsError::io(path, e)),
    };
    let st = fstat(fd).map_err(|e| SafeFsError::io(path, e))?;
    if st.st_dev != id.dev || st.st_ino != id.ino || st.st_uid != euid() {
        // SAFETY: closing the descriptor openat returned, once.
        unsafe { libc::close(fd) };
        return Err(SafeFsError::unsafe_path(
            path,
            format!(
                "inode {}:{} owned by uid {} is not the directory the run created ({}:{}): left alone",
                st.st_dev, st.st_ino, st.st_uid, id.dev, id.ino
            ),
        ));
    }
    let dir = Dir::from_fd(fd).map_err(|e| SafeFsError::io(path, e))?;
    empty_dir(dir, path, 0)?;
    match unlinkat(Some(parent_fd.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(Removed::Removed),
        Err(e) => Err(SafeFsError::io(path, e)),
    }
}

/// Unlinks every entry of the open directory `dir` (at `path`, for messages), descending into
/// subdirectories through descriptors opened `O_NOFOLLOW`; a symlink inside is unlinked, never
/// followed.
fn empty_dir(mut dir: Dir, path: &Path, depth: usize) -> Result<(), SafeFsError> {
    if depth > 16 {
        return Err(SafeFsError::unsafe_path(path, "nested too deep"));
    }
    let dfd = dir.as_raw_fd();
    let names: Vec<OsString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    for n in names {
        let sub = path.join(&n);
        let st = match fstatat(Some(dfd), n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(SafeFsError::io(&sub, e)),
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let cfd = openat(
                Some(dfd),
                n.as_os_str(),
                OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SafeFsError::io(&sub, e))?;
            let child = Dir::from_fd(cfd).map_err(|e| SafeFsError::io(&sub, e))?;
            empty_dir(child, &sub, depth + 1)?;
            match unlinkat(Some(dfd), n.as_os_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(SafeFsError::io(&sub, e)),
            }
        } else {
            match unlinkat(Some(dfd), n.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(SafeFsError::io(&sub, e)),
            }
        }
    }
    Ok(())
}

/// Why a user-chosen output path is refused, or None when the tool may write it. Mirrors the
/// kernel's `fs.protected_symlinks` and `fs.protected_regular` rules (which this host may have
/// off): in a sticky, world-writable directory, a symlink or an existing file owned by someone
/// other than the writer and the directory's owner is not written through.
fn output_refusal(path: &Path) -> Result<Option<String>, SafeFsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dmd = fs::metadata(dir).map_err(|e| SafeFsError::io(dir, e))?;
    if !dmd.is_dir() {
        return Ok(Some(format!("{} is not a directory", dir.display())));
    }
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SafeFsError::io(path, e)),
    };
    if md.file_type().is_dir() {
        return Ok(Some("is a directory".into()));
    }
    let sticky_shared = dmd.mode() & 0o1002 == 0o1002;
    let foreign = md.uid() != euid() && md.uid() != dmd.uid();
    if sticky_shared && foreign {
        let what = if md.file_type().is_symlink() {
            "a symlink"
        } else {
            "a file"
        };
        return Ok(Some(format!(
            "is {what} owned by uid {} in the shared sticky directory {}; refusing to write through it",
            md.uid(),
            dir.display()
        )));
    }
    Ok(None)
}

/// Checks, before anything is created, that `path` (a file a user named) may be written:
/// see [`write_user_output`]. `what` names the option in the message (e.g. `--record`).
pub fn check_user_output(path: &Path, what: &str) -> Result<(), SafeFsError> {
    match output_refusal(path)? {
        Some(reason) => Err(SafeFsError::unsafe_path(path, format!("{what}: {reason}"))),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path`, a file a user named: refused as [`check_user_output`] says;
/// otherwise written to a temporary file of an unpredictable name in the same directory
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0644) and renamed over `path`, so a reader never sees
/// half a file. Where `path` is a symlink the user may write through (their own, or the
/// directory owner's), the file it points to is written in place instead.
pub fn write_user_output(path: &Path, bytes: &[u8], what: &str) -> Result<(), SafeFsError> {
    check_user_output(path, what)?;
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| SafeFsError::io(path, e))?;
        return f.write_all(bytes).map_err(|e| SafeFsError::io(path, e));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| OsString::from("record"), std::ffi::OsStr::to_os_string);
    let mut tmp_name = OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".{}.tmp", random_suffix()));
    let tmp = dir.join(tmp_name);
    write_through_temp(&tmp, path, bytes, 0o644)
}

/// Prepares `dir`, a directory a user named for the tool's output files (`--svg DIR`): created
/// (mode 0755, its parent must exist) when missing; when present it must be a real directory
/// (not a symlink) owned by the tool's user or by the user who ran it through sudo
/// (`SUDO_UID`): a directory someone else owns could hold links the tool would write through.
pub fn prepare_output_dir(dir: &Path, what: &str) -> Result<(), SafeFsError> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SafeFsError::io(dir, e)),
    }
    let md = fs::symlink_metadata(dir).map_err(|e| SafeFsError::io(dir, e))?;
    if !md.file_type().is_dir() {
        return Err(SafeFsError::unsafe_path(
            dir,
            format!("{what}: exists and is not a directory (a symlink or a file)"),
        ));
    }
    let sudo_uid = std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse::<u32>().ok());
    if md.uid() != euid() && Some(md.uid()) != sudo_uid {
        return Err(SafeFsError::unsafe_path(
            dir,
            format!(
                "{what}: owned by uid {}; name a directory of your own (or a new one)",
                md.uid()
            ),
        ));
    }
    Ok(())
}

/// Writes `bytes` to the file `name` in `dir` (prepared by [`prepare_output_dir`]): never through
/// a symlink (refused), atomically as [`write_user_output`] does.
pub fn write_output_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    what: &str,
) -> Result<PathBuf, SafeFsError> {
    let p = dir.join(name);
    if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(SafeFsError::unsafe_path(
            &p,
            format!("{what}: is a symlink; refusing to write through it"),
        ));
    }
    write_user_output(&p, bytes, what)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memcg-drift-safefs-{tag}-{}", random_suffix()));
        fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn private_files_round_trip_and_links_or_foreign_files_are_refused() {
        let base = scratch("private");
        let dir = base.join("own");
        ensure_private_root(&dir).unwrap();
        assert_eq!(read_private_file(&dir, "f").unwrap(), None);
        write_private_file(&dir, "f", b"one").unwrap();
        write_private_file(&dir, "f", b"two").unwrap();
        assert_eq!(
            read_private_file(&dir, "f").unwrap().as_deref(),
            Some(&b"two"[..])
        );
        let md = fs::metadata(dir.join("f")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        // No temporary file is left.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // A symlink at the name is not followed.
        let target = base.join("target");
        fs::write(&target, b"secret").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        assert!(read_private_file(&dir, "link").is_err());
        // A file others may write is not trusted.
        fs::set_permissions(dir.join("f"), fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_private_file(&dir, "f").unwrap_err().to_string();
        assert!(e.contains("only it may write"), "{e}");
        // A directory others may enter is not private.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(read_private_file(&dir, "f").is_err());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn output_dirs_of_others_and_links_in_them_are_refused() {
        let base = scratch("outdir");
        let mine = base.join("plots");
        prepare_output_dir(&mine, "--svg").unwrap();
        prepare_output_dir(&mine, "--svg").unwrap();
        write_output_file(&mine, "a.svg", b"<svg/>", "--svg").unwrap();
        let target = base.join("target");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, mine.join("b.svg")).unwrap();
        let e = write_output_file(&mine, "b.svg", b"x", "--svg")
            .unwrap_err()
            .to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        let theirs = base.join("theirs");
        fs::create_dir(&theirs).unwrap();
        nix::unistd::chown(&theirs, Some(65534.into()), Some(65534.into())).unwrap();
        let e = prepare_output_dir(&theirs, "--svg")
            .unwrap_err()
            .to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn suffixes_differ() {
        let a = random_suffix();
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_suffix());
    }

    #[test]
    fn private_dir_is_0700_and_removed_with_its_files() {
        let base = scratch("pd");
        let d = PrivateDir::create(&base, "run").unwrap();
        let md = fs::symlink_metadata(d.path()).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o700);
        fs::write(d.path().join("f"), b"x").unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/g"), b"y").unwrap();
        // A symlink inside is unlinked, its target left alone.
        let target = base.join("target");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("link")).unwrap();
        assert_eq!(d.remove().unwrap(), Removed::Removed);
        assert!(!d.path().exists());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert_eq!(d.remove().unwrap(), Removed::Absent);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_swapped_directory_is_left_alone() {
        let base = scratch("swap");
        let d = PrivateDir::create(&base, "run").unwrap();
        fs::remove_dir(d.path()).unwrap();
        // Someone else's directory at the same name (the filesystem may even reuse the inode
        // number: the owner tells them apart).
        fs::create_dir(d.path()).unwrap();
        fs::write(d.path().join("theirs"), b"z").unwrap();
        nix::unistd::chown(d.path(), Some(65534.into()), Some(65534.into())).unwrap();
        let e = d.remove().unwrap_err().to_string();
        assert!(e.contains("not the directory the run created"), "{e}");
        assert!(d.path().join("theirs").exists());
        // A symlink at the name is not followed.
        fs::remove_dir_all(d.path()).unwrap();
        let victim = scratch("victim");
        fs::write(victim.join("data"), b"v").unwrap();
        std::os::unix::fs::symlink(&victim, d.path()).unwrap();
        let e = d.remove().unwrap_err().to_string();
        assert!(e.contains("left alone"), "{e}");
        assert!(victim.join("data").exists());
        fs::remove_dir_all(&base).unwrap();
        fs::remove_dir_all(&victim).unwrap();
    }

    #[test]
    fn private_root_refuses_a_symlink_and_narrows_its_mode() {
        let base = scratch("root");
        let root = base.join("own");
        ensure_private_root(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o7777, 0o700);
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_root(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o7777, 0o700);
        let link = base.join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let e = ensure_private_root(&link).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn user_output_is_written_atomically_and_through_own_links() {
        let base = scratch("out");
        let p = base.join("rec.json");
        write_user_output(&p, b"one", "--record").unwrap();
        write_user_output(&p, b"two", "--record").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // Our own symlink (not in a sticky directory) is written through.
        let real = base.join("real.json");
        std::os::unix::fs::symlink(&real, base.join("ln.json")).unwrap();
        write_user_output(&base.join("ln.json"), b"three", "--record").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"three");
        // No temporary file is left.
        let left: Vec<_> = fs::read_dir(&base)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty());
        let e = check_user_output(&base, "--record")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }
}
