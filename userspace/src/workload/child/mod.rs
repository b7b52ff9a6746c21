//! The workload process itself (`memcg-drift __workload`): reads one command per line on fd 0,
//! answers one line per command on fd 1.
//!
//! Exactness: everything this process needs while serving commands is faulted in before it
//! prints `ready`: a 256 KiB stretch of stack below the command loop, the line and reply
//! buffers (on that stack), a 1 MiB I/O buffer, the region table and the socket-pair
//! descriptor table (own anonymous mappings), and one warm-up pass over every system call a
//! command uses (a loopback pair included). The command loop then never
//! allocates, never uses buffered stdio, and formats replies into a fixed buffer, so the only
//! anonymous pages it faults during a phase are the ones a `touch` asked for.

use std::{
    fmt::Write as _,
    hint::black_box,
    ptr::{self, NonNull},
};

/// Stack faulted in below the command loop before `ready`.
const STACK_PRETOUCH: usize = 256 << 10;
/// The buffer `file` reads into and `write` writes from.
const IO_BUF: usize = 1 << 20;
/// At most this many `touch` regions are alive at once.
const MAX_REGIONS: usize = 4096;
/// The longest command line.
const LINE_MAX: usize = 8192;
const PATH_MAX: usize = 4096;
/// At most this many connected loopback TCP pairs are open at once (`sockets`).
pub(super) const MAX_PAIRS: usize = 16384;
/// At most this many bytes are left unread in each pair (`sockets N B`): far below the
/// receiver's initial buffer (`tcp_rmem[1]`, 128 KiB by default), so the blocking send
/// returns as soon as loopback has delivered the data.
pub(super) const MAX_UNREAD: usize = 32 << 10;
/// At most this many files `dentries` keeps.
pub(super) const MAX_DENTRIES: usize = 1 << 20;

#[derive(Clone, Copy)]
#[repr(C)]
struct Region {
    addr: usize,
    pages: usize,
}

/// A fixed-size reply line; `fmt::Write` into it does not allocate and truncates on overflow.
struct Reply {
    buf: [u8; 512],
    len: usize,
}

impl std::fmt::Write for Reply {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - 1 - self.len; // keep one byte for '\n'
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// An anonymous private mapping of `len` bytes, faulted in page by page.
fn map_touched(len: usize, page: usize) -> Result<NonNull<u8>, i32> {
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    // SAFETY: `p` is a mapping of `len` bytes we just created.
    unsafe {
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        let base = p.cast::<u8>();
        let mut off = 0;
        while off < len {
            ptr::write_volatile(base.add(off), 0x5a);
            off += page;
        }
    }
    NonNull::new(p.cast()).ok_or(libc::ENOMEM)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Writes all of `b` to fd 1.
fn write_all(mut b: &[u8]) -> bool {
    while !b.is_empty() {
        // SAFETY: `b` is a valid buffer of `b.len()` bytes.
        let n = unsafe { libc::write(1, b.as_ptr().cast(), b.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        b = &b[n as usize..];
    }
    true
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// Splits `PATH BYTES` at the last space (paths may contain spaces).
fn path_and_bytes(args: &[u8]) -> Option<(&[u8], u64)> {
    let cut = args.iter().rposition(|&c| c == b' ')?;
    let path = trim(&args[..cut]);
    let bytes = parse_u64(trim(&args[cut + 1..]))?;
    (!path.is_empty()).then_some((path, bytes))
}

/// All state of the command loop. Lives on the (pre-touched) stack of `serve`.
mod files;

struct Child {
    page: usize,
    io: NonNull<u8>,
    regions: NonNull<Region>,
    nregions: usize,
    /// Pages released by `free N` so far, counted from the start of the first region.
    released: usize,
    /// Descriptors of the open socket pairs: `[client, server]` per pair.
    fds: NonNull<i32>,
    npairs: usize,
    /// Files `dentries` created (`md-0` .. `md-<n-1>` in the directory it was given).
    ndentries: usize,
    path: [u8; PATH_MAX + 1],
    reply: Reply,
}

enum Flow {
    Continue,
    Exit,
}

impl Child {
    fn regions(&mut self) -> &mut [Region] {
        // SAFETY: `regions` points to MAX_REGIONS initialised entries owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.regions.as_ptr(), MAX_REGIONS) }
    }

    /// Copies `p` into the NUL-terminated path buffer.
    fn set_path(&mut self, p: &[u8]) -> bool {
        if p.len() > PATH_MAX || p.contains(&0) {
            return false;
        }
        self.path[..p.len()].copy_from_slice(p);
        self.path[p.len()] = 0;
        true
    }

    /// `set_mempolicy(MPOL_BIND, {node})`: the process's later page allocations on `node`
    /// only; where the node has only `ZONE_MOVABLE` the kernel applies the binding to movable
    /// allocations only (`apply_policy_zone`), so pipe buffers and the like still succeed.
    fn bind_node(&mut self, node: u64) -> Result<u64, (&'static str, i32)> {
        const MPOL_BIND: libc::c_long = 2;
        if node >= 1024 {
            return Err(("node out of range", libc::EINVAL));
        }
        let mut mask = [0u64; 16];
        mask[(node / 64) as usize] |= 1 << (node % 64);
        // SAFETY: set_mempolicy reads `maxnode` bits from `mask`, which holds 16 * 64.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_set_mempolicy,
                MPOL_BIND,
                mask.as_ptr(),
                (mask.len() * 64) as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(("set_mempolicy", errno()));
        }
        Ok(node)
    }

    fn set_cpu(&mut self, cpu: usize) -> Result<usize, (&'static str, i32)> {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(("cpu out of range", libc::EINVAL));
        }
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it (checked above).
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set)
        };
        if rc != 0 {
            return Err(("sched_setaffinity", errno()));
        }
        // sched_setaffinity migrates the caller before returning; confirm it.
        for _ in 0..1000 {
            // SAFETY: no preconditions.
            let now = unsafe { libc::sched_getcpu() };
            if now >= 0 && now as usize == cpu {
                return Ok(cpu);
            }
            // SAFETY: no preconditions.
            unsafe { libc::sched_yield() };
        }
        Err(("still not running on the cpu after sched_setaffinity", 0))
    }

    fn touch(&mut self, pages: u64) -> Result<u64, (&'static str, i32)> {
        if pages == 0 {
            return Err(("touch needs at least one page", libc::EINVAL));
        }
        if self.nregions == MAX_REGIONS {
            return Err(("too many regions; free first", libc::ENOSPC));
        }
        let n = usize::try_from(pages).map_err(|_| ("too many pages", libc::EINVAL))?;
        let len = n
            .checked_mul(self.page)
            .ok_or(("too many pages", libc::EINVAL))?;
        let p = map_touched(len, self.page).map_err(|e| ("mmap", e))?;
        let i = self.nregions;
        self.regions()[i] = Region {
            addr: p.as_ptr() as usize,
            pages: n,
        };
        self.nregions += 1;
        Ok(pages)
    }

    /// `MADV_DONTNEED` on the next `pages` touched pages not released yet (in touch order),
    /// keeping the mappings: the pages are uncharged now, on this CPU; `free` later unmaps.
    fn free_some(&mut self, pages: u64) -> Result<u64, (&'static str, i32)> {
        let want = usize::try_from(pages).map_err(|_| ("too many pages", libc::EINVAL))?;
        let (page, n, mut skip) = (self.page, self.nregions, self.released);
        let total: usize = self.regions()[..n].iter().map(|r| r.pages).sum();
        if want == 0 || want > total - skip {
            return Err(("free N needs 1..=touched-but-not-freed pages", libc::EINVAL));
        }
        let mut left = want;
        for r in &self.regions()[..n] {
            if left == 0 {
                break;
            }
            if skip >= r.pages {
                skip -= r.pages;
                continue;
            }
            let take = (r.pages - skip).min(left);
            // SAFETY: a sub-range of a mapping `touch` created and nothing else references.
            let rc = unsafe {
                libc::madvise(
                    (r.addr + skip * page) as *mut libc::c_void,
                    take * page,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                return Err(("madvise", errno()));
            }
            left -= take;
            skip = 0;
        }
        self.released += want;
        Ok(pages)
    }

    fn free(&mut self) -> u64 {
        let mut pages = 0u64;
        let (page, n) = (self.page, self.nregions);
        for r in &mut self.regions()[..n] {
            let len = r.pages * page;
            // SAFETY: each region is a mapping `touch` created and nothing else references.
            unsafe {
                libc::madvise(r.addr as *mut libc::c_void, len, libc::MADV_DONTNEED);
                libc::munmap(r.addr as *mut libc::c_void, len);
            }
            pages += r.pages as u64;
            *r = Region { addr: 0, pages: 0 };
        }
        self.nregions = 0;
        let released = std::mem::take(&mut self.released) as u64;
        pages - released
    }

    /// Reads one byte of every touched page not released yet, in touch order: a page that was
    /// swapped out faults back in (a swap-in; a major fault unless the swap cache still held
    /// it). Returns the pages read.
    fn retouch(&mut self) -> u64 {
        let (page, n, mut skip) = (self.page, self.nregions, self.released);
        let mut read = 0u64;
        let mut sum = 0u8;
        for r in &self.regions()[..n] {
            let first = skip.min(r.pages);
            skip -= first;
            for k in first..r.pages {
                // SAFETY: page `k` of a mapping `touch` created and `free N` has not released.
                sum = sum
                    .wrapping_add(unsafe { ptr::read_volatile((r.addr + k * page) as *const u8) });
                read += 1;
            }
        }
        black_box(sum);
        read
    }

    /// `swapoff(2)` of the NUL-terminated `self.path`, from this process (so from its cgroup).
    fn swapoff(&mut self) -> Result<(), (&'static str, i32)> {
        // SAFETY: `path` is NUL-terminated by `set_path`.
        if unsafe { libc::swapoff(self.path.as_ptr().cast()) } != 0 {
            return Err(("swapoff", errno()));
        }
        Ok(())
    }

    /// Runs one command line and leaves the reply (without newline) in `self.reply`.
    fn handle(&mut self, line: &[u8]) -> Flow {
        self.reply.len = 0;
        let line = trim(line);
        let (cmd, args) = match line.iter().position(|&c| c == b' ') {
            Some(i) => (&line[..i], trim(&line[i + 1..])),
            None => (line, &line[line.len()..]),
        };
        let r = &mut self.reply;
        let err = |r: &mut Reply, what: &str, e: i32| {
            let _ = write!(r, "err {what}");
            if e != 0 {
                let _ = write!(r, " (errno {e})");
            }
        };
        match cmd {
            b"ping" => {
                let _ = write!(r, "ok pong");
            }
            b"exit" => {
                let _ = write!(r, "ok bye");
                return Flow::Exit;
            }
            b"cpu" => match parse_u64(args).and_then(|k| usize::try_from(k).ok()) {
                None => err(r, "usage: cpu K", 0),
                Some(k) => match self.set_cpu(k) {
                    Ok(k) => {
                        let _ = write!(self.reply, "ok cpu {k}");
                    }
                    Err((what, e)) => err(&mut self.reply, what, e),
                },
            },
            b"bind" => match parse_u64(args) {
                None => err(r, "usage: bind NODE", 0),
                Some(n) => match self.bind_node(n) {
                    Ok(n) => {
                        let _ = write!(self.reply, "ok bound {n}");
                    }
                    Err((what, e)) => err(&mut self.reply, what, e),
                },
            },
            b"touch" => match parse_u64(args) {
                None => err(r, "usage: touch N", 0),
                Some(n) => match self.touch(n) {
                    Ok(n) => {
                        let _ = write!(self.reply, "ok touched {n}");
                    }
                    Err((what, e)) => err(&mut self.reply, what, e),
                },
            },
            b"free" if args.is_empty() => {
                let n = self.free();
                let _ = write!(self.reply, "ok freed {n}");
            }
            b"free" => match parse_u64(args) {
                None => err(r, "usage: free [N]", 0),
                Some(n) => match self.free_some(n) {
                    Ok(n) => {
                        let _ = write!(self.reply, "ok freed {n}");
                    }
                    Err((what, e)) => err(&mut self.reply, what, e),
                },
            },
            b"file" | b"write" => match path_and_bytes(args) {
                None => err(r, "usage: file|write PATH BYTES", 0),
                Some((path, bytes)) => {
                    if !self.set_path(path) {
                        err(&mut self.reply, "bad path", libc::EINVAL);
                    } else {
                        let res = if cmd == b"file" {
                            self.read_file(bytes)
                        } else {
                            self.write_file(bytes)
                        };
                        let verb = if cmd == b"file" { "read" } else { "wrote" };
                        match res {
                            Ok(n) => {
                                let _ = write!(self.reply, "ok {verb} {n}");
                            }
                            Err((what, e)) => err(&mut self.reply, what, e),
                        }
                    }
                }
            },
            b"sockets" => {
                let mut it = args.split(|&c| c == b' ').filter(|a| !a.is_empty());
                let n = it.next().and_then(parse_u64);
                let b = it.next().map(parse_u64);
                match (n, b, it.next()) {
                    (Some(n), None | Some(Some(_)), None) => {
                        match self.open_pairs(n, b.flatten().unwrap_or(0)) {
                            Ok(n) => {
                                let _ = write!(self.reply, "ok sockets {n}");
                            }
                            Err((what, e)) => err(&mut self.reply, what, e),
                        }
                    }
                    _ => err(r, "usage: sockets N [B]", 0),
                }
            }
            b"closesockets" => {
                let n = self.close_pairs();
                let _ = write!(self.reply, "ok closed {n}");
            }
            b"dentries" => {
                let cut = args.iter().position(|&c| c == b' ');
                let parsed = cut.and_then(|i| {
                    let n = parse_u64(&args[..i])?;
                    let dir = trim(&args[i + 1..]);
                    (!dir.is_empty()).then_some((n, dir))
                });
                match parsed {
                    None => err(r, "usage: dentries N DIR", 0),
                    Some((n, dir)) => match self.create_dentries(n, dir) {
                        Ok(n) => {
                            let _ = write!(self.reply, "ok created {n}");
                        }
                        Err((what, e)) => err(&mut self.reply, what, e),
                    },
                }
            }
            b"lock" if args.is_empty() => {
                // SAFETY: no preconditions; only the pages present now are locked (and pages
                // later faulted in the mappings that exist now), nothing is populated.
                if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_ONFAULT) } != 0 {
                    err(&mut self.reply, "mlockall", errno());
                } else {
                    let _ = write!(self.reply, "ok locked 0");
                }
            }
            b"retouch" if args.is_empty() => {
                let n = self.retouch();
                let _ = write!(self.reply, "ok read {n}");
            }
            b"swapoff" if !args.is_empty() => {
                if !self.set_path(args) {
                    err(&mut self.reply, "bad path", libc::EINVAL);
                } else {
                    match self.swapoff() {
                        Ok(()) => {
                            let _ = write!(self.reply, "ok swapoff 0");
                        }
                        Err((what, e)) => err(&mut self.reply, what, e),
                    }
                }
            }
            b"rmdentries" if !args.is_empty() => match self.remove_dentries(args) {
                Ok(n) => {
                    let _ = write!(self.reply, "ok removed {n}");
                }
                Err((what, e)) => err(&mut self.reply, what, e),
            },
            _ => err(
                r,
                "unknown command (ping, cpu K, touch N, free, file PATH BYTES, write PATH BYTES, sockets N [B], closesockets, dentries N DIR, rmdentries DIR, lock, retouch, swapoff PATH, exit)",
                0,
            ),
        }
        Flow::Continue
    }

    fn send_reply(&mut self) -> bool {
        let len = self.reply.len;
        self.reply.buf[len] = b'\n';
        write_all(&self.reply.buf[..=len])
    }
}

/// Faults in `STACK_PRETOUCH` bytes of stack below the caller's frame.
#[inline(never)]
fn pretouch_stack() {
    let mut a = [0u8; STACK_PRETOUCH];
    let mut i = 0;
    while i < STACK_PRETOUCH {
        // SAFETY: `i` is within `a`.
        unsafe { ptr::write_volatile(a.as_mut_ptr().add(i), 1) };
        i += 1024;
    }
    black_box(&mut a);
}

/// Maps every page of the process's executable mappings now (`MADV_POPULATE_READ`, 5.14+;
/// ignored where unsupported), so that no code path the warm-up missed (the command loop, the
/// success path of a command) takes a first-time file-backed fault during a measured phase;
/// which code shares a page with what depends on the binary's layout. Reads /proc/self/maps
/// through the pre-touched I/O buffer.
fn populate_code(io: NonNull<u8>) {
    // SAFETY: open(2) on a NUL-terminated literal.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    let mut used = 0usize;
    loop {
        // SAFETY: reads into the unused tail of the IO_BUF-byte buffer.
        let n = unsafe { libc::read(fd, io.as_ptr().add(used).cast(), IO_BUF - used) };
        if n <= 0 || used + n as usize >= IO_BUF {
            break;
        }
        used += n as usize;
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    // SAFETY: the first `used` bytes of the buffer were just written.
    let text = unsafe { std::slice::from_raw_parts(io.as_ptr(), used) };
    for line in text.split(|&c| c == b'\n') {
        // "start-end perms offset dev inode path": executable mappings have perms "r-x?".
        let mut fields = line.split(|&c| c == b' ');
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if perms.get(2) != Some(&b'x') {
            continue;
        }
        let Some(dash) = range.iter().position(|&c| c == b'-') else {
            continue;
        };
        let (Some(start), Some(end)) = (parse_hex(&range[..dash]), parse_hex(&range[dash + 1..]))
        else {
            continue;
        };
        if end > start {
            // SAFETY: advice on a range of our own address space; failures are ignored.
            unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    (end - start) as usize,
                    libc::MADV_POPULATE_READ,
                )
            };
        }
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Serves commands until `exit` or end of input. Returns the exit code.
pub(super) fn serve() -> i32 {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let (io, regions, fds) = match (
        map_touched(IO_BUF, page),
        map_touched(
            (MAX_REGIONS * size_of::<Region>()).next_multiple_of(page),
            page,
        ),
        map_touched(
            (2 * MAX_PAIRS * size_of::<i32>()).next_multiple_of(page),
            page,
        ),
    ) {
        (Ok(io), Ok(r), Ok(f)) => (io, r.cast::<Region>(), f.cast::<i32>()),
        _ => {
            let _ = write_all(b"err cannot map the workload's buffers\n");
            return 1;
        }
    };
    let mut child = Child {
        page,
        io,
        regions,
        nregions: 0,
        released: 0,
        fds,
        npairs: 0,
        ndentries: 0,
        path: [0; PATH_MAX + 1],
        reply: Reply {
            buf: [0; 512],
            len: 0,
        },
    };
    for r in child.regions() {
        *r = Region { addr: 0, pages: 0 };
    }
    for fd in child.fds() {
        *fd = -1;
    }
    let mut line = [0u8; LINE_MAX];
    let mut used = 0usize;
    let mut overflow = false;
    black_box(&mut child.path);
    black_box(&mut line);
    pretouch_stack();

    // Warm-up: run every command's code path once, so lazy faults of the process itself (libc
    // data, vDSO, first-use paths) happen now.
    // SAFETY: no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) == 0 {
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
        }
    }
    // Error paths included: a first-time code page is a (file-backed) fault too.
    let warm_up: [&[u8]; 30] = [
        b"sockets 1 1",
        b"closesockets",
        b"sockets 0",
        b"sockets x",
        b"sockets 1 100000",
        b"sockets 1 1 1",
        b"dentries 1 /nonexistent/memcg-drift",
        b"dentries x /tmp",
        b"dentries 1",
        b"rmdentries /nonexistent/memcg-drift",
        b"touch 2",
        b"free 1",
        b"free 5",
        b"free",
        b"file /proc/self/stat 4096",
        b"write /dev/null 4096",
        b"ping",
        b"nonsense",
        b"touch 0",
        b"touch x",
        b"cpu 100000",
        b"cpu x",
        b"bind 100000",
        b"bind x",
        b"file /nonexistent/memcg-drift 1",
        b"write /nonexistent/memcg-drift 1",
        b"file x",
        b"write",
        b"free x",
        b"",
    ];
    for cmd in warm_up {
        child.handle(cmd);
    }
    // The success path of `rmdentries` without a file to remove: bind unlink(2) once.
    // SAFETY: unlink(2) on a NUL-terminated literal path that does not exist.
    unsafe { libc::unlink(c"/nonexistent/memcg-drift".as_ptr()) };
    child.reply.len = 0;
    populate_code(child.io);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = write!(child.reply, "ready pid={pid} cpu={cpu} page={page}");
    if !child.send_reply() {
        return 1;
    }

    loop {
        // Serve every complete line in the buffer.
        while let Some(nl) = line[..used].iter().position(|&c| c == b'\n') {
            let flow = if overflow {
                overflow = false;
                child.reply.len = 0;
                let _ = write!(child.reply, "err line too long");
                Flow::Continue
            } else {
                child.handle(&line[..nl])
            };
            if !child.send_reply() {
                return 1;
            }
            if let Flow::Exit = flow {
                return 0;
            }
            line.copy_within(nl + 1..used, 0);
            used -= nl + 1;
        }
        if used == LINE_MAX {
            // No newline in a full buffer: drop it and answer once the line ends.
            overflow = true;
            used = 0;
        }
        // SAFETY: reads into the unused tail of `line`.
        let n = unsafe { libc::read(0, line[used..].as_mut_ptr().cast(), LINE_MAX - used) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return 1;
        }
        if n == 0 {
            // The parent closed our stdin (or died): nothing more to do.
            return 0;
        }
        used += n as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_parsing() {
        assert_eq!(parse_u64(b"1000"), Some(1000));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1k"), None);
        assert_eq!(
            path_and_bytes(b"/tmp/a b/c 4096"),
            Some((&b"/tmp/a b/c"[..], 4096))
        );
        assert_eq!(path_and_bytes(b"/tmp/x"), None);
        assert_eq!(path_and_bytes(b" 12"), None);
        assert_eq!(trim(b"  x \r"), b"x");
    }

    #[test]
    fn reply_truncates_instead_of_allocating() {
        let mut r = Reply {
            buf: [0; 512],
            len: 0,
        };
        for _ in 0..100 {
            let _ = write!(r, "0123456789");
        }
        assert_eq!(r.len, 511);
    }
}
