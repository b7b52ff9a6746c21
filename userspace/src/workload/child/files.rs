//! The workload's file and kernel-object commands: page-cache reads and writes through the
//! I/O buffer, socket pairs with unread data, and dentries (`kmem` and `limit` use them).

use super::*;

impl Child {
    /// Reads up to `bytes` of the file at `self.path` through the I/O buffer.
    pub(super) fn read_file(&mut self, bytes: u64) -> Result<u64, (&'static str, i32)> {
        // SAFETY: `path` is NUL-terminated by `set_path`.
        let fd = unsafe { libc::open(self.path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(("open", errno()));
        }
        let mut done = 0u64;
        let mut result = Ok(());
        while done < bytes {
            let want = (bytes - done).min(IO_BUF as u64) as usize;
            // SAFETY: `io` is IO_BUF bytes long and `want <= IO_BUF`.
            let n = unsafe { libc::read(fd, self.io.as_ptr().cast(), want) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                result = Err(("read", errno()));
                break;
            }
            if n == 0 {
                break;
            }
            done += n as u64;
        }
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(fd) };
        result.map(|()| done)
    }

    /// Writes `bytes` from the I/O buffer to a new file at `self.path`. Created exclusively and
    /// never through a symlink (`O_EXCL | O_NOFOLLOW`): the workload runs as root, so a name
    /// someone planted is refused (`EEXIST`), not followed or truncated.
    pub(super) fn write_file(&mut self, bytes: u64) -> Result<u64, (&'static str, i32)> {
        // SAFETY: `path` is NUL-terminated by `set_path`.
        let fd = unsafe {
            libc::open(
                self.path.as_ptr().cast(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(("open", errno()));
        }
        let mut done = 0u64;
        let mut result = Ok(());
        while done < bytes {
            let want = (bytes - done).min(IO_BUF as u64) as usize;
            // SAFETY: `io` is IO_BUF bytes long and `want <= IO_BUF`.
            let n = unsafe { libc::write(fd, self.io.as_ptr().cast(), want) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                result = Err(("write", errno()));
                break;
            }
            done += n as u64;
        }
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(fd) };
        result.map(|()| done)
    }

    pub(super) fn fds(&mut self) -> &mut [i32] {
        // SAFETY: `fds` points to 2 * MAX_PAIRS initialised entries owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.fds.as_ptr(), 2 * MAX_PAIRS) }
    }

    /// Raises RLIMIT_NOFILE (soft, and hard if needed: root) to at least `need` descriptors.
    pub(super) fn ensure_nofile(need: u64) -> Result<(), (&'static str, i32)> {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `rl` is a valid rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut rl) } != 0 {
            return Err(("getrlimit", errno()));
        }
        if rl.rlim_cur >= need {
            return Ok(());
        }
        rl.rlim_cur = need;
        rl.rlim_max = rl.rlim_max.max(need);
        // SAFETY: `rl` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const rl) } != 0 {
            return Err(("setrlimit RLIMIT_NOFILE", errno()));
        }
        Ok(())
    }

    /// Opens `n` connected loopback TCP pairs (client `connect`, server `accept4`, both in
    /// this process) and writes `unread` bytes from the client into each, which the server
    /// never reads. A fresh listener on 127.0.0.1 (port chosen by the kernel) is closed at
    /// the end; the pairs stay open until `closesockets`. On an error the pairs opened so far
    /// stay open (and counted).
    pub(super) fn open_pairs(&mut self, n: u64, unread: u64) -> Result<u64, (&'static str, i32)> {
        let n = usize::try_from(n).map_err(|_| ("too many pairs", libc::EINVAL))?;
        let unread = usize::try_from(unread).map_err(|_| ("too many bytes", libc::EINVAL))?;
        if n == 0 || n > MAX_PAIRS - self.npairs {
            return Err(("sockets N needs 1..=16384 pairs in all", libc::EINVAL));
        }
        if unread > MAX_UNREAD {
            return Err(("sockets N B needs B <= 32768", libc::EINVAL));
        }
        // 2 per pair, the listener, stdio and a margin.
        Self::ensure_nofile(2 * (self.npairs + n) as u64 + 64)?;
        let inet = |fd: i32| -> Result<i32, (&'static str, i32)> {
            if fd < 0 {
                Err(("socket", errno()))
            } else {
                Ok(fd)
            }
        };
        // SAFETY: plain system calls on descriptors and a sockaddr on this stack frame.
        unsafe {
            let l = inet(libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            ))?;
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::to_be(0x7f00_0001);
            let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let sa = (&raw mut addr).cast::<libc::sockaddr>();
            if libc::bind(l, sa, len) != 0 {
                let e = errno();
                libc::close(l);
                return Err(("bind 127.0.0.1", e));
            }
            if libc::listen(l, 128) != 0 || libc::getsockname(l, sa, &raw mut len) != 0 {
                let e = errno();
                libc::close(l);
                return Err(("listen", e));
            }
            let mut result = Ok(n as u64);
            for _ in 0..n {
                let c = match inet(libc::socket(
                    libc::AF_INET,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                )) {
                    Ok(c) => c,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if libc::connect(c, sa, len) != 0 {
                    result = Err(("connect", errno()));
                    libc::close(c);
                    break;
                }
                let s = libc::accept4(l, ptr::null_mut(), ptr::null_mut(), libc::SOCK_CLOEXEC);
                if s < 0 {
                    result = Err(("accept4", errno()));
                    libc::close(c);
                    break;
                }
                let i = self.npairs;
                self.fds()[2 * i] = c;
                self.fds()[2 * i + 1] = s;
                self.npairs += 1;
                let mut left = unread;
                while left > 0 {
                    let k = libc::send(c, self.io.as_ptr().cast(), left, libc::MSG_NOSIGNAL);
                    if k < 0 {
                        if errno() == libc::EINTR {
                            continue;
                        }
                        break;
                    }
                    left -= k as usize;
                }
                if left > 0 {
                    result = Err(("send", errno()));
                    break;
                }
            }
            libc::close(l);
            result
        }
    }

    /// Closes every open pair; returns how many.
    pub(super) fn close_pairs(&mut self) -> u64 {
        let n = self.npairs;
        for fd in &mut self.fds()[..2 * n] {
            // SAFETY: closing a descriptor `open_pairs` opened.
            unsafe { libc::close(*fd) };
            *fd = -1;
        }
        self.npairs = 0;
        n as u64
    }

    /// Puts `dir/md-<k>` into the path buffer.
    pub(super) fn dentry_path(&mut self, dir: &[u8], k: usize) -> bool {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = k;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let name = &digits[i..];
        let len = dir.len() + 4 + name.len();
        if len > PATH_MAX || dir.contains(&0) {
            return false;
        }
        self.path[..dir.len()].copy_from_slice(dir);
        self.path[dir.len()..dir.len() + 4].copy_from_slice(b"/md-");
        self.path[dir.len() + 4..len].copy_from_slice(name);
        self.path[len] = 0;
        true
    }

    /// Creates `n` more empty files `dir/md-<k>` (one dentry and one inode each).
    pub(super) fn create_dentries(
        &mut self,
        n: u64,
        dir: &[u8],
    ) -> Result<u64, (&'static str, i32)> {
        let n = usize::try_from(n).map_err(|_| ("too many files", libc::EINVAL))?;
        if n == 0 || n > MAX_DENTRIES - self.ndentries {
            return Err(("dentries N needs 1..=1048576 files in all", libc::EINVAL));
        }
        for _ in 0..n {
            if !self.dentry_path(dir, self.ndentries) {
                return Err(("bad path", libc::EINVAL));
            }
            // SAFETY: `path` is NUL-terminated by `dentry_path`.
            let fd = unsafe {
                libc::open(
                    self.path.as_ptr().cast(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600,
                )
            };
            if fd < 0 {
                return Err(("open", errno()));
            }
            // SAFETY: closing the descriptor we opened.
            unsafe { libc::close(fd) };
            self.ndentries += 1;
        }
        Ok(n as u64)
    }

    /// Unlinks every file `dentries` created (in `dir`); returns how many.
    pub(super) fn remove_dentries(&mut self, dir: &[u8]) -> Result<u64, (&'static str, i32)> {
        let n = self.ndentries;
        while self.ndentries > 0 {
            if !self.dentry_path(dir, self.ndentries - 1) {
                return Err(("bad path", libc::EINVAL));
            }
            // SAFETY: `path` is NUL-terminated by `dentry_path`.
            if unsafe { libc::unlink(self.path.as_ptr().cast()) } != 0 {
                return Err(("unlink", errno()));
            }
            self.ndentries -= 1;
        }
        Ok(n as u64)
    }
}
