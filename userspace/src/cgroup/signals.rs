//! Removal of the process's live runs on SIGINT, SIGTERM and SIGHUP, and on panics.
//!
//! The handler only writes the signal number into a self-pipe (and records it); a dedicated
//! thread reads it, removes every live run ([`super::cleanup_live_runs`]: machine changes
//! undone first, then the cgroups) and re-raises the signal with its default action, so the
//! exit status still says which signal ended the process. [`exit_for_pending_signal`] keeps the
//! main thread from racing that thread to the exit.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        OnceLock,
        atomic::{AtomicI32, Ordering},
    },
    thread,
    time::Duration,
};

use super::{CgroupError, cleanup_live_runs};

/// The write end of the signal self-pipe (-1 until installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
/// The first cleanup signal received (0: none yet).
static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);
static SIGNALS_INSTALLED: OnceLock<Result<(), std::sync::Arc<io::Error>>> = OnceLock::new();
const CLEANUP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    let _ = PENDING_SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` outlives the call.
        unsafe { libc::write(fd, (&raw const b).cast(), 1) };
    }
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that remove every live run of the process
/// (from a dedicated thread, not in the handler), then re-raise the signal with its default
/// action so the exit status still says "killed by SIGINT". Idempotent.
///
/// Replaces any earlier handler of these signals; a handler installed later (for example by
/// `tokio::signal`) chains to this one or replaces it. Code that treats SIGINT as a normal
/// "stop" should not call this, and instead drop its runs or call [`cleanup_live_runs`].
pub fn install_cleanup_on_signals() -> Result<(), CgroupError> {
    let r = SIGNALS_INSTALLED.get_or_init(|| install_signals().map_err(std::sync::Arc::new));
    r.clone()
        .map_err(|e| CgroupError::io("signal handlers", io::Error::new(e.kind(), e)))
}

fn install_signals() -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; a full pipe must not block the handler.
    unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    SIGNAL_PIPE.store(wr.as_raw_fd(), Ordering::Relaxed);
    // The write end stays open for the life of the process.
    std::mem::forget(wr);
    thread::Builder::new()
        .name("memcg-drift-cleanup".into())
        .spawn(move || {
            let mut b = 0u8;
            loop {
                // SAFETY: reads one byte into `b` from a descriptor this thread owns.
                let n = unsafe { libc::read(rd.as_raw_fd(), (&raw mut b).cast(), 1) };
                if n == 1 {
                    break;
                }
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            let sig = libc::c_int::from(b);
            for (dir, e) in cleanup_live_runs() {
                eprintln!("memcg-drift: could not remove {}: {e}", dir.display());
            }
            // SAFETY: restoring the default action and re-raising; no Rust state is involved.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::kill(libc::getpid(), sig);
            }
        })?;
    for sig in CLEANUP_SIGNALS {
        // SAFETY: a zeroed sigaction with a valid handler address and an empty mask is valid;
        // the handler only performs an async-signal-safe write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut sa.sa_mask);
            if libc::sigaction(sig, &raw const sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The cleanup signal this process received, if one was (only once
/// [`install_cleanup_on_signals`] has run).
pub fn pending_signal() -> Option<libc::c_int> {
    match PENDING_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Where the process is about to end (an exit code or an error to print): if a cleanup signal
/// arrived, never returns; the cleanup thread finishes removing the runs and re-raises the
/// signal, so the exit status says which signal ended the process and nothing is left behind.
///
/// Without this, work that fails *because* the cleanup thread killed its workload or removed
/// its cgroup races the cleanup thread to the exit: it could print a spurious error, exit 1
/// instead of "killed by SIGTERM", and exit before the removal ends.
pub fn exit_for_pending_signal() {
    if pending_signal().is_none() {
        return;
    }
    loop {
        thread::sleep(Duration::from_secs(60));
    }
}

/// Installs a panic hook (chained after the current one) that removes every live run of the
/// process. Process-wide: meant for the CLI (and needed with `panic = "abort"`); in a test
/// harness it would remove the runs of tests still running, so tests rely on `Drop`.
pub fn install_cleanup_on_panic() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            for (dir, e) in cleanup_live_runs() {
                eprintln!("memcg-drift: could not remove {}: {e}", dir.display());
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use std::{
        io::BufRead as _, os::unix::process::ExitStatusExt as _, path::PathBuf, process::Command,
    };

    use super::*;
    use crate::cgroup::{MemoryHierarchy, RunGroup, run::owner_file, test_support::root_hierarchy};

    /// The process side of `signal_removes_live_runs`: creates a run with a workload (a
    /// `sleep`) in it, installs the signal handlers, prints the run's directory and waits for
    /// the workload, as an experiment does. The signal's cleanup kills the workload, so the
    /// wait ends early; ending then as an experiment would on a dead workload (exit 1) must
    /// still leave the exit status to the signal.
    #[test]
    fn signal_child_entry() {
        if std::env::var_os("MEMCG_DRIFT_TEST_SIGNAL_CHILD").is_none() {
            return;
        }
        let hier = MemoryHierarchy::detect().unwrap();
        let run = RunGroup::create(&hier).unwrap();
        let x = run.child("x").unwrap();
        let mut workload = Command::new("sleep").arg("60").spawn().unwrap();
        x.move_pid(workload.id() as i32).unwrap();
        install_cleanup_on_signals().unwrap();
        println!("dir {}", run.cgroup().path().display());
        let status = workload.wait().unwrap();
        exit_for_pending_signal();
        eprintln!("workload ended without a signal to the tool: {status}");
        std::process::exit(1);
    }

    #[test]
    fn signal_removes_live_runs() {
        let Some(_hier) = root_hierarchy("signal_removes_live_runs") else {
            return;
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cgroup::signals::tests::signal_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MEMCG_DRIFT_TEST_SIGNAL_CHILD", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = io::BufReader::new(child.stdout.take().unwrap());
        let dir = loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
            // libtest prints "test <name> ... " without a newline before the test's output.
            if let Some(i) = line.find("dir /") {
                break PathBuf::from(line[i + 4..].trim_end());
            }
        };
        assert!(dir.join("x").is_dir());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
        assert!(!dir.exists(), "{} left behind after SIGTERM", dir.display());
        assert_eq!(
            pending_signal(),
            None,
            "the test process itself got no signal"
        );
        let run_id = dir.file_name().unwrap().to_str().unwrap();
        assert!(!owner_file(run_id).exists());
    }
}
