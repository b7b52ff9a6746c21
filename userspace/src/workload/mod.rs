//! The controlled workload process: a child that faults exactly the pages it is told to, on the
//! CPU it is told to, in a cgroup of the tool, one phase at a time.
//!
//! The child is `memcg-drift __workload` (a hidden subcommand; the CLI calls
//! [`workload_main`]), exec'd fresh rather than forked, because a forked child would take a COW
//! fault, charged to its new cgroup, on every inherited page it writes. The parent
//! ([`Workload`]) places it in its cgroup and on its CPU between fork and exec (`pre_exec`), so
//! even exec's own faults are charged there, then speaks a line protocol over its
//! stdin/stdout: one command per line, one reply per command, so the parent knows exactly when
//! each phase began and ended.
//!
//! | command            | reply                 | effect                                        |
//! |--------------------|-----------------------|-----------------------------------------------|
//! | (start)            | `ready pid=P cpu=C page=S` | buffers, stack and code paths faulted in |
//! | `cpu K`            | `ok cpu K`            | pinned to CPU K and running there             |
//! | `touch N`          | `ok touched N`        | N fresh anonymous pages (no THP) written once |
//! | `free`             | `ok freed N`          | `MADV_DONTNEED` + `munmap` of all touched; N counts the pages not freed before |
//! | `free N`           | `ok freed N`          | `MADV_DONTNEED` of the next N touched pages (touch order), mappings kept |
//! | `file PATH BYTES`  | `ok read N`           | file read through a pre-touched 1 MiB buffer  |
//! | `write PATH BYTES` | `ok wrote N`          | file created/truncated and written            |
//! | `sockets N [B]`    | `ok sockets N`        | N connected loopback TCP pairs (client and server both in this process; RLIMIT_NOFILE raised to fit), B bytes (<= 32 KiB) written into each and never read |
//! | `closesockets`     | `ok closed N`         | closes every open pair                        |
//! | `dentries N DIR`   | `ok created N`        | N more empty files `DIR/md-<k>` (a dentry and an inode each) |
//! | `rmdentries DIR`   | `ok removed N`        | unlinks every file `dentries` created (give the same DIR) |
//! | `ping`             | `ok pong`             | nothing                                       |
//! | `exit`             | `ok bye`              | exits 0                                       |
//!
//! Errors are `err <what> [(errno E)]`. Cgroups come from the `cgroup` module; what the
//! phases mean for the probes is the experiments' business.

pub mod batch;
mod child;

use std::{
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::cgroup::{CgroupError, MemCgroup};

/// Most socket pairs a workload holds at once.
pub const MAX_SOCKET_PAIRS: usize = child::MAX_PAIRS;
/// Most unread bytes per socket pair.
pub const MAX_UNREAD_BYTES: usize = child::MAX_UNREAD;

/// How long a reply may take before [`WorkloadError::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of other output (e.g. a test harness's banner) tolerated before `ready`.
const MAX_PREAMBLE_LINES: usize = 64;

/// Errors of the workload parent side.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Placing the workload (the cgroup is not ours, or cannot be opened).
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The child could not be started (including a failed move into the cgroup or a failed
    /// CPU affinity between fork and exec).
    #[error("starting workload {} in {} on CPU {cpu}: {source}", bin.display(), cgroup.display())]
    Spawn {
        /// The program.
        bin: PathBuf,
        /// The cgroup.
        cgroup: PathBuf,
        /// The CPU.
        cpu: usize,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An I/O error on the pipes.
    #[error("workload pid {pid}: {what}: {source}")]
    Io {
        /// Child pid.
        pid: i32,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No reply in time.
    #[error("workload pid {pid} did not answer `{command}` within {after:?}")]
    Timeout {
        /// Child pid.
        pid: i32,
        /// The command.
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// The workload answered `err ...`.
    #[error("workload pid {pid} refused `{command}`: {message}")]
    Refused {
        /// Child pid.
        pid: i32,
        /// The command.
        command: String,
        /// Its message.
        message: String,
    },
    /// An answer that does not fit the protocol.
    #[error("workload pid {pid}: unexpected reply to `{command}`: {reply:?}")]
    Protocol {
        /// Child pid.
        pid: i32,
        /// The command.
        command: String,
        /// The reply.
        reply: String,
    },
    /// The workload is gone.
    #[error("workload pid {pid} exited before answering `{command}` ({status})")]
    Exited {
        /// Child pid.
        pid: i32,
        /// The command.
        command: String,
        /// How it ended.
        status: String,
    },
    /// An argument the protocol cannot carry (non-UTF-8 path, newline, CPU out of range).
    #[error("bad workload argument: {0}")]
    BadArgument(String),
}

/// Minor and major page faults of process `pid` so far (`/proc/PID/stat` fields 10 and 12,
/// counted from the last `)`: the command name may hold spaces); `None` once it is gone.
pub fn faults(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // `rest[0]` is field 3.
    Some((rest.get(7)?.parse().ok()?, rest.get(9)?.parse().ok()?))
}

/// The child's entry point: the CLI's `__workload` subcommand calls this and nothing else.
/// Serves the protocol on stdin/stdout and exits.
///
/// Call it before starting any other thread or async runtime (ideally by checking
/// `argv[1] == "__workload"` first thing in `main`): a thread of the workload's own could fault
/// pages during a phase, and `cpu K` pins only the calling thread.
pub fn workload_main() -> ! {
    let code = child::serve();
    // SAFETY: _exit ends the process without running destructors or atexit handlers, none of
    // which the workload needs (its replies went out with write(2)).
    unsafe { libc::_exit(code) }
}

/// The `memcg-drift` binary to run workloads with:
/// 1. `$MEMCG_DRIFT_BIN` if set;
/// 2. the current executable if its file name is `memcg-drift` (the CLI itself);
/// 3. a `memcg-drift` next to the current executable, or in its parent directory (cargo puts
///    test binaries in `target/<profile>/deps/` and the binary in `target/<profile>/`);
/// 4. otherwise plain `memcg-drift`, looked up in `PATH` when spawned.
pub fn workload_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MEMCG_DRIFT_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_name().is_some_and(|n| n == "memcg-drift") {
            return exe;
        }
        if let Some(dir) = exe.parent() {
            for cand in [dir.join("memcg-drift"), dir.join("../memcg-drift")] {
                if cand.is_file() {
                    return cand;
                }
            }
        }
    }
    PathBuf::from("memcg-drift")
}

/// The workload's `ready` line.
fn parse_ready(line: &str) -> Option<(i32, usize, u64)> {
    let mut pid = None;
    let mut cpu = None;
    let mut page = None;
    let mut it = line.split_whitespace();
    if it.next()? != "ready" {
        return None;
    }
    for kv in it {
        match kv.split_once('=')? {
            ("pid", v) => pid = v.parse().ok(),
            ("cpu", v) => cpu = v.parse().ok(),
            ("page", v) => page = v.parse().ok(),
            _ => {}
        }
    }
    Some((pid?, cpu?, page?))
}

/// Formats `n` in decimal into `buf` without allocating; returns the digits.
fn itoa(mut n: u32, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A running workload process. Dropping it kills and reaps the child.
#[derive(Debug)]
pub struct Workload {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pending: Vec<u8>,
    timeout: Duration,
    pid: i32,
    cpu: usize,
    page_size: u64,
    done: bool,
}

impl Workload {
    /// Starts `bin __workload` in `cgroup` (which must be one of the tool's) pinned to `cpu`,
    /// and waits for it to be `ready`.
    pub fn spawn(bin: &Path, cgroup: &MemCgroup, cpu: usize) -> Result<Workload, WorkloadError> {
        let mut cmd = Command::new(bin);
        cmd.arg("__workload");
        Workload::spawn_command(cmd, cgroup, cpu)
    }

    /// Like [`Workload::spawn`] for a prepared command that ends up in [`workload_main`] (for
    /// example a test binary re-running itself). Lines printed before `ready` are skipped.
    pub fn spawn_command(
        mut cmd: Command,
        cgroup: &MemCgroup,
        cpu: usize,
    ) -> Result<Workload, WorkloadError> {
        if !cgroup.is_owned() {
            return Err(CgroupError::NotOwned {
                path: cgroup.path().to_path_buf(),
            }
            .into());
        }
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(WorkloadError::BadArgument(format!(
                "CPU {cpu} is out of range"
            )));
        }
        let bin = PathBuf::from(cmd.get_program());
        let spawn_err = |source| WorkloadError::Spawn {
            bin: bin.clone(),
            cgroup: cgroup.path().to_path_buf(),
            cpu,
            source,
        };
        let procs_path = cgroup.path().join("cgroup.procs");
        // Opened here (O_CLOEXEC), written by the child between fork and exec.
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .map_err(|e| CgroupError::io(&procs_path, e))?;
        let procs_fd = procs.as_raw_fd();
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it (checked above).
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            set
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (getpid, write, sched_setaffinity) on data prepared
        // before the fork; it does not allocate or take locks.
        unsafe {
            cmd.pre_exec(move || {
                let mut buf = [0u8; 16];
                let pid = itoa(libc::getpid() as u32, &mut buf);
                if libc::write(procs_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                    return Err(io::Error::last_os_error());
                }
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        drop(procs);
        let pid = child.id() as i32;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(io::Error::other("stdin/stdout not piped")));
        };
        let mut w = Workload {
            child,
            stdin,
            stdout,
            pending: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            pid,
            cpu,
            page_size: 4096,
            done: false,
        };
        let deadline = Instant::now() + w.timeout;
        let mut preamble = Vec::new();
        loop {
            let line = w.read_line("(start)", deadline)?;
            // A test harness may print "test <name> ... " without a newline first.
            let ready = line.find("ready pid=").map(|i| &line[i..]);
            if let Some((rpid, rcpu, page)) = ready.and_then(parse_ready) {
                if rpid != pid || rcpu != cpu {
                    return Err(WorkloadError::Protocol {
                        pid,
                        command: "(start)".into(),
                        reply: line,
                    });
                }
                w.page_size = page;
                return Ok(w);
            }
            if let Some(msg) = line.strip_prefix("err ") {
                return Err(WorkloadError::Refused {
                    pid,
                    command: "(start)".into(),
                    message: msg.into(),
                });
            }
            preamble.push(line);
            if preamble.len() > MAX_PREAMBLE_LINES {
                return Err(WorkloadError::Protocol {
                    pid,
                    command: "(start)".into(),
                    reply: preamble.join("\n"),
                });
            }
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The CPU the workload is pinned to.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The workload's page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Changes the reply timeout (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn exit_status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(s)) => describe(s),
            _ => "still running".into(),
        }
    }

    /// Reads one line of the child's stdout before `deadline`.
    fn read_line(&mut self, command: &str, deadline: Instant) -> Result<String, WorkloadError> {
        loop {
            if let Some(nl) = self.pending.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                return Ok(String::from_utf8_lossy(&line[..nl]).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WorkloadError::Timeout {
                    pid: self.pid,
                    command: command.into(),
                    after: self.timeout,
                });
            }
            let mut pfd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `pfd` is one valid pollfd.
            let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(WorkloadError::Io {
                    pid: self.pid,
                    what: "poll",
                    source: e,
                });
            }
            if n == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.stdout.read(&mut buf) {
                Ok(0) => {
                    // EOF: the child is exiting; give it a moment to be reaped for the status.
                    let status = self.child.wait().map_or_else(|e| e.to_string(), describe);
                    self.done = true;
                    return Err(WorkloadError::Exited {
                        pid: self.pid,
                        command: command.into(),
                        status,
                    });
                }
                Ok(k) => self.pending.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(WorkloadError::Io {
                        pid: self.pid,
                        what: "read",
                        source: e,
                    });
                }
            }
        }
    }

    /// Sends one command and returns the text after `ok `.
    fn command(&mut self, command: &str) -> Result<String, WorkloadError> {
        if self.done {
            return Err(WorkloadError::Exited {
                pid: self.pid,
                command: command.into(),
                status: "already exited".into(),
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut line = String::with_capacity(command.len() + 1);
        line.push_str(command);
        line.push('\n');
        if let Err(e) = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
        {
            if e.kind() == io::ErrorKind::BrokenPipe {
                let status = self.exit_status();
                return Err(WorkloadError::Exited {
                    pid: self.pid,
                    command: command.into(),
                    status,
                });
            }
            return Err(WorkloadError::Io {
                pid: self.pid,
                what: "write",
                source: e,
            });
        }
        let reply = self.read_line(command, deadline)?;
        if let Some(rest) = reply.strip_prefix("ok") {
            return Ok(rest.trim_start().to_string());
        }
        if let Some(msg) = reply.strip_prefix("err ") {
            return Err(WorkloadError::Refused {
                pid: self.pid,
                command: command.into(),
                message: msg.into(),
            });
        }
        Err(WorkloadError::Protocol {
            pid: self.pid,
            command: command.into(),
            reply,
        })
    }

    /// Sends a command whose reply must be `ok <verb> <number>`; returns the number.
    fn numbered(&mut self, command: &str, verb: &str) -> Result<u64, WorkloadError> {
        let rest = self.command(command)?;
        rest.strip_prefix(verb)
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| WorkloadError::Protocol {
                pid: self.pid,
                command: command.into(),
                reply: format!("ok {rest}"),
            })
    }

    /// Checks the workload is alive and answering.
    pub fn ping(&mut self) -> Result<(), WorkloadError> {
        self.command("ping").map(drop)
    }

    /// Moves the workload into `cg` and pins it to its CPU again: where cpuset shares the
    /// memory hierarchy (v1 `-o cpuset,memory`), joining a cgroup resets a task's CPU mask to
    /// the cgroup's `cpuset.cpus` (`cpuset_attach`), which would let the workload wander off
    /// the CPU its per-CPU figures are read on (seen on the co-mounted 6.1 guest: a tmpfs
    /// write after the move counted on the other CPU).
    pub fn move_to(&mut self, cg: &crate::cgroup::MemCgroup) -> Result<(), WorkloadError> {
        cg.move_pid(self.pid)?;
        self.set_cpu(self.cpu)
    }

    /// Binds the workload's later page allocations to NUMA node `node` (`MPOL_BIND`; on a
    /// node of `ZONE_MOVABLE` only, movable allocations only: anon pages go there, pipe
    /// buffers elsewhere).
    pub fn bind_node(&mut self, node: u32) -> Result<(), WorkloadError> {
        let got = self.numbered(&format!("bind {node}"), "bound")?;
        if got != u64::from(node) {
            return Err(WorkloadError::Protocol {
                pid: self.pid,
                command: format!("bind {node}"),
                reply: format!("bound {got}"),
            });
        }
        Ok(())
    }

    /// Pins the workload to exactly CPU `cpu`; returns once it runs there.
    pub fn set_cpu(&mut self, cpu: usize) -> Result<(), WorkloadError> {
        let got = self.numbered(&format!("cpu {cpu}"), "cpu")?;
        if got != cpu as u64 {
            return Err(WorkloadError::Protocol {
                pid: self.pid,
                command: format!("cpu {cpu}"),
                reply: format!("cpu {got}"),
            });
        }
        self.cpu = cpu;
        Ok(())
    }

    /// Faults exactly `pages` fresh anonymous pages (one write each, no THP); returns when done.
    pub fn touch(&mut self, pages: u64) -> Result<(), WorkloadError> {
        let got = self.numbered(&format!("touch {pages}"), "touched")?;
        if got != pages {
            return Err(WorkloadError::Protocol {
                pid: self.pid,
                command: format!("touch {pages}"),
                reply: format!("touched {got}"),
            });
        }
        Ok(())
    }

    /// Frees (`MADV_DONTNEED` and unmaps) every page touched so far; returns the page count.
    pub fn free(&mut self) -> Result<u64, WorkloadError> {
        self.numbered("free", "freed")
    }

    /// Frees (`MADV_DONTNEED`, mappings kept) the next `pages` touched pages not freed yet, in
    /// the order they were touched, on the workload's current CPU.
    pub fn free_pages(&mut self, pages: u64) -> Result<(), WorkloadError> {
        let cmd = format!("free {pages}");
        let got = self.numbered(&cmd, "freed")?;
        if got != pages {
            return Err(WorkloadError::Protocol {
                pid: self.pid,
                command: cmd,
                reply: format!("freed {got}"),
            });
        }
        Ok(())
    }

    /// Opens `pairs` connected loopback TCP pairs inside the workload (both ends in its
    /// cgroup) and leaves `unread_bytes` (at most [`MAX_UNREAD_BYTES`]) unread in each.
    pub fn open_sockets(&mut self, pairs: u64, unread_bytes: u64) -> Result<(), WorkloadError> {
        if pairs == 0 || pairs > MAX_SOCKET_PAIRS as u64 || unread_bytes > MAX_UNREAD_BYTES as u64 {
            return Err(WorkloadError::BadArgument(format!(
                "sockets {pairs} {unread_bytes}: 1..={MAX_SOCKET_PAIRS} pairs, at most {MAX_UNREAD_BYTES} bytes"
            )));
        }
        let cmd = format!("sockets {pairs} {unread_bytes}");
        let got = self.numbered(&cmd, "sockets")?;
        if got != pairs {
            return Err(WorkloadError::Protocol {
                pid: self.pid,
                command: cmd,
                reply: format!("sockets {got}"),
            });
        }
        Ok(())
    }

    /// Closes every socket pair; returns how many were open.
    pub fn close_sockets(&mut self) -> Result<u64, WorkloadError> {
        self.numbered("closesockets", "closed")
    }

    /// Creates `n` more empty files in `dir` (one dentry and one inode each).
    pub fn create_dentries(&mut self, n: u64, dir: &Path) -> Result<(), WorkloadError> {
        let d = Self::path_arg(dir)?;
        let cmd = format!("dentries {n} {d}");
        let got = self.numbered(&cmd, "created")?;
        if got != n {
            return Err(WorkloadError::Protocol {
                pid: self.pid,
                command: cmd,
                reply: format!("created {got}"),
            });
        }
        Ok(())
    }

    /// Removes every file [`Workload::create_dentries`] created (in `dir`); returns how many.
    pub fn remove_dentries(&mut self, dir: &Path) -> Result<u64, WorkloadError> {
        let d = Self::path_arg(dir)?;
        self.numbered(&format!("rmdentries {d}"), "removed")
    }

    fn path_arg(path: &Path) -> Result<&str, WorkloadError> {
        let s = path
            .to_str()
            .ok_or_else(|| WorkloadError::BadArgument(format!("{}: not UTF-8", path.display())))?;
        if s.contains('\n') || s.is_empty() {
            return Err(WorkloadError::BadArgument(format!(
                "{s:?}: empty or contains a newline"
            )));
        }
        Ok(s)
    }

    /// Reads up to `bytes` of the file at `path` (its page cache is charged to the workload's
    /// cgroup); returns the bytes read (less at end of file).
    pub fn read_file(&mut self, path: &Path, bytes: u64) -> Result<u64, WorkloadError> {
        let p = Self::path_arg(path)?;
        self.numbered(&format!("file {p} {bytes}"), "read")
    }

    /// Creates the file at `path` and writes `bytes` to it (on tmpfs, shmem charged to the
    /// workload's cgroup); returns the bytes written. The file must not exist yet: it is created
    /// `O_EXCL | O_NOFOLLOW`, so an existing file or a symlink at `path` is an error (`EEXIST`),
    /// never followed or overwritten.
    pub fn write_file(&mut self, path: &Path, bytes: u64) -> Result<u64, WorkloadError> {
        let p = Self::path_arg(path)?;
        self.numbered(&format!("write {p} {bytes}"), "wrote")
    }

    /// Locks the workload's own pages in memory (`mlockall(MCL_CURRENT | MCL_ONFAULT)`: its
    /// stack, buffers and code as they are now; pages `touch` maps later stay swappable), so
    /// that reclaim never swaps them out and the command loop never swaps them back in.
    pub fn lock_resident(&mut self) -> Result<(), WorkloadError> {
        self.numbered("lock", "locked").map(drop)
    }

    /// Reads one byte of every touched page not freed yet (swapped-out pages come back: swap-ins,
    /// refaults); returns the pages read.
    pub fn retouch(&mut self) -> Result<u64, WorkloadError> {
        self.numbered("retouch", "read")
    }

    /// Calls `swapoff(2)` on `path` from inside the workload, so the swap-ins it makes are
    /// charged as the workload's cgroup's (where the kernel charges the caller). Blocks until the
    /// kernel has brought every page of the device back; give the workload a long enough timeout.
    pub fn swapoff(&mut self, path: &Path) -> Result<(), WorkloadError> {
        let p = Self::path_arg(path)?;
        self.numbered(&format!("swapoff {p}"), "swapoff").map(drop)
    }

    /// Asks the workload to exit and reaps it.
    pub fn exit(mut self) -> Result<ExitStatus, WorkloadError> {
        self.command("exit")?;
        self.done = true;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Ok(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    return Err(WorkloadError::Timeout {
                        pid: self.pid,
                        command: "exit".into(),
                        after: self.timeout,
                    });
                }
                Err(e) => {
                    return Err(WorkloadError::Io {
                        pid: self.pid,
                        what: "wait",
                        source: e,
                    });
                }
            }
        }
    }
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests;
