//! Runs one QEMU guest with the flags `shared/docs/qemu.md` measured, watches the results port
//! while it runs, and kills it at the deadline.
//!
//! Serial ports: ttyS0 (kernel console and `/init`'s progress lines) goes to `console.log`,
//! ttyS1 (the framed results) to `results.log`; QEMU's own output goes to `qemu.log`. QEMU
//! exits 0 even after a guest panic, so this module only reports what happened; `judge`
//! decides.
use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::kernel::Kernel;

/// How one guest is started.
#[derive(Debug)]
pub struct Launch<'a> {
    /// The kernel to boot.
    pub kernel: &'a Kernel,
    /// The concatenated initramfs.
    pub initrd: &'a Path,
    /// `-smp`.
    pub cpus: u32,
    /// `-m`, in MiB.
    pub memory_mib: u32,
    /// NUMA nodes (`-numa`; 1: none given).
    pub numa_nodes: u32,
    /// MiB of hot-pluggable memory: a `pc-dimm` on a node of its own (no CPU, no boot
    /// memory), onlined movable (`memhp_default_state=online_movable`); 0: none.
    pub hotplug_mib: u32,
    /// Where the logs go.
    pub run_dir: &'a Path,
    /// Host wall-clock limit; QEMU is killed after it.
    pub timeout: Duration,
}

/// What the host saw.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status (`None` when it was killed at the deadline).
    pub status: Option<ExitStatus>,
    /// Whether the deadline killed it.
    pub timed_out: bool,
    /// Host time from QEMU start to its exit.
    pub wall: Duration,
    /// Host time at which each complete `@@` line of the results port was first seen, in order.
    pub marker_times: Vec<Duration>,
}

/// Names of the log files in the run directory.
pub const CONSOLE_LOG: &str = "console.log";
/// Results port (ttyS1) transcript.
pub const RESULTS_LOG: &str = "results.log";
/// QEMU's own stdout and stderr.
pub const QEMU_LOG: &str = "qemu.log";

/// `-object memory-backend-ram` and `-numa node` arguments splitting `memory_mib` and `cpus`
/// evenly over `nodes` (the last node takes what does not divide); none for one node. With
/// `hotplug_mib`, one more node (number `nodes`, no CPU, no boot memory) holding a `pc-dimm`
/// of that size.
pub fn numa_args(cpus: u32, memory_mib: u32, nodes: u32, hotplug_mib: u32) -> Vec<String> {
    let mut out = Vec::new();
    if nodes <= 1 && hotplug_mib == 0 {
        return out;
    }
    let nodes = nodes.max(1);
    let mem = memory_mib / nodes;
    for i in 0..nodes {
        let size = if i + 1 == nodes {
            memory_mib - mem * (nodes - 1)
        } else {
            mem
        };
        let first = i * cpus / nodes;
        let last = (i + 1) * cpus / nodes - 1;
        out.push("-object".into());
        out.push(format!("memory-backend-ram,id=mem{i},size={size}M"));
        out.push("-numa".into());
        out.push(format!("node,nodeid={i},cpus={first}-{last},memdev=mem{i}"));
    }
    if hotplug_mib > 0 {
        out.push("-numa".into());
        out.push(format!("node,nodeid={nodes}"));
        out.push("-object".into());
        out.push(format!("memory-backend-ram,id=hp0,size={hotplug_mib}M"));
        out.push("-device".into());
        out.push(format!("pc-dimm,id=dimm0,memdev=hp0,node={nodes}"));
    }
    out
}

/// Boots the guest and waits for it to power off or for the deadline.
pub fn run(launch: &Launch<'_>) -> Result<Outcome> {
    let console = launch.run_dir.join(CONSOLE_LOG);
    let results = launch.run_dir.join(RESULTS_LOG);
    let qemu_log = launch.run_dir.join(QEMU_LOG);
    let mut append = "console=ttyS0 panic=-1 loglevel=4 lpj=4000000".to_string();
    let mut mem = format!("{}M", launch.memory_mib);
    if launch.hotplug_mib > 0 {
        append.push_str(" memhp_default_state=online_movable");
        mem = format!(
            "{mem},slots=1,maxmem={}M",
            launch.memory_mib + launch.hotplug_mib
        );
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"])
        .args(["-smp", &launch.cpus.to_string(), "-m", &mem])
        .args(numa_args(
            launch.cpus,
            launch.memory_mib,
            launch.numa_nodes,
            launch.hotplug_mib,
        ))
        .args(["-display", "none", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .args(["-no-reboot", "-net", "none", "-kernel"])
        .arg(&launch.kernel.image)
        .arg("-initrd")
        .arg(launch.initrd)
        .args(["-append", &append]);
    let cmdline: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_word(&a.to_string_lossy()))
        .collect();
    fs::write(
        launch.run_dir.join("qemu-cmdline.txt"),
        cmdline.join(" ") + "\n",
    )
    .context("writing qemu-cmdline.txt")?;

    let log =
        fs::File::create(&qemu_log).with_context(|| format!("creating {}", qemu_log.display()))?;
    let log2 = log.try_clone().context("duplicating the qemu.log handle")?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .context("starting qemu-system-x86_64 (install it: cargo xtask setup --vm)")?;
    let mut tail = Tail::new(results);
    let (status, timed_out) = loop {
        tail.poll(start.elapsed());
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break (Some(status), false);
        }
        if start.elapsed() >= launch.timeout {
            // SIGKILL, like `timeout -s KILL`: a wedged TCG guest does not react to anything else.
            child.kill().context("killing QEMU at the deadline")?;
            child.wait().context("reaping QEMU")?;
            break (None, true);
        }
        thread::sleep(Duration::from_millis(100));
    };
    let wall = start.elapsed();
    tail.poll(wall);
    Ok(Outcome {
        status,
        timed_out,
        wall,
        marker_times: tail.times,
    })
}

/// Follows the results file as QEMU writes it and prints progress for each marker line.
struct Tail {
    path: PathBuf,
    file: Option<fs::File>,
    partial: Vec<u8>,
    times: Vec<Duration>,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            partial: Vec::new(),
            times: Vec::new(),
        }
    }

    /// Reads what arrived since the last call; a read error only delays progress output.
    fn poll(&mut self, now: Duration) {
        if self.file.is_none() {
            self.file = fs::File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        if file.read_to_end(&mut buf).is_err() {
            return;
        }
        self.partial.extend_from_slice(&buf);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(marker) = line.trim_end().strip_prefix("@@ ") {
                self.times.push(now);
                progress(marker, now);
            }
        }
    }
}

/// One progress line on the host terminal for a marker.
fn progress(marker: &str, at: Duration) {
    let t = at.as_secs_f64();
    let mut words = marker.split_whitespace();
    match (words.next(), words.next()) {
        (Some("INIT_START"), _) => eprintln!("vm-test: [{t:6.1}s] guest /init started"),
        (Some("KERNEL"), Some(release)) => eprintln!("vm-test: [{t:6.1}s] kernel {release}"),
        (Some("SETUP_FAIL"), _) => eprintln!("vm-test: [{t:6.1}s] guest setup failed: {marker}"),
        (Some("BEGIN"), Some(name)) if !name.ends_with(".stderr") => {
            eprintln!("vm-test: [{t:6.1}s] running {name}");
        }
        (Some("END"), Some(name)) if !name.ends_with(".stderr") => {
            let rc = words.next().unwrap_or("rc=?");
            eprintln!("vm-test: [{t:6.1}s] finished {name} {rc}");
        }
        (Some("INIT_END"), _) => eprintln!("vm-test: [{t:6.1}s] guest finished, powering off"),
        _ => {}
    }
}

/// Quotes `s` for a shell command line when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_splits_memory_and_cpus_evenly() {
        assert!(numa_args(2, 4096, 1, 0).is_empty());
        assert_eq!(
            numa_args(2, 4097, 2, 0),
            [
                "-object",
                "memory-backend-ram,id=mem0,size=2048M",
                "-numa",
                "node,nodeid=0,cpus=0-0,memdev=mem0",
                "-object",
                "memory-backend-ram,id=mem1,size=2049M",
                "-numa",
                "node,nodeid=1,cpus=1-1,memdev=mem1",
            ]
        );
        let four = numa_args(8, 4096, 4, 0);
        assert_eq!(four[3], "node,nodeid=0,cpus=0-1,memdev=mem0");
        assert_eq!(four[15], "node,nodeid=3,cpus=6-7,memdev=mem3");
        // The hot-pluggable DIMM on a node of its own, also next to a single boot node.
        let hp = numa_args(2, 4096, 1, 256);
        assert_eq!(
            hp,
            [
                "-object",
                "memory-backend-ram,id=mem0,size=4096M",
                "-numa",
                "node,nodeid=0,cpus=0-1,memdev=mem0",
                "-numa",
                "node,nodeid=1",
                "-object",
                "memory-backend-ram,id=hp0,size=256M",
                "-device",
                "pc-dimm,id=dimm0,memdev=hp0,node=1",
            ]
        );
        assert_eq!(numa_args(2, 4096, 2, 256)[9], "node,nodeid=2");
    }
}
