//! `cargo xtask vm-test --kernel 6.1|6.12|6.18 [--cpus N]`: boots one of Debian's own kernels under
//! QEMU (TCG) with an initramfs holding the static `memcg-drift` binary and the
//! `integration-tests` test executables, runs them in the guest and judges the run by what the
//! guest reports. `docs/vm.md` describes the whole flow; `shared/docs/qemu.md` holds the
//! measurements the QEMU flags come from.
//!
//! Steps, one submodule each:
//! 1. [`kernel`]: resolve, download (once) and unpack the `-unsigned` image; extract vmlinux.
//! 2. [`payload`]: build the static binaries for `x86_64-unknown-linux-gnu` + `crt-static`.
//! 3. [`initramfs`]: cached busybox base + this run's payload, concatenated cpio archives.
//! 4. [`qemu`]: boot with a deadline, follow the results port.
//! 5. [`judge`]: verdict from the guest's frames and the kernel console.
//!
//! Downloads, the extracted kernels and the base archive live in the cache directory
//! (`/var/cache/memcg-drift/vm`, or `$MEMCG_DRIFT_VM_CACHE`); each run's logs in
//! `<target dir>/vm-runs/<kernel>-<cpus>[-v1]/`.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

mod initramfs;
mod judge;
mod kernel;
mod payload;
mod qemu;

pub use payload::static_cargo;

/// The Debian kernels `vm-test` boots.
/// 6.1 and 6.12 are the generations issue 5 names (bookworm); 6.18 (trixie-backports) is this
/// machine's own generation with kprobes and fentry allowed, where the multi-slot charge stock
/// and the memcg tracepoints can be checked against direct probes. 5.10 (bullseye) is the
/// seed's era (issue 12: 32-page charge batch, no memcg tracepoints); `cargo xtask test`
/// ([`ci_guests`]) runs the suites there too ([`FIVE_TEN_TESTS`], [`FIVE_TEN_V1_TESTS`]).
pub const KERNELS: [&str; 4] = ["5.10", "6.1", "6.12", "6.18"];

/// The test executables `cargo xtask test` runs on 5.10 with cgroup v2 (issue 12): every
/// kernel suite of the 6.x v2 guests (exp_migrate checks the one-line refusal on this
/// one-node guest; parsers_prop needs no kernel).
pub const FIVE_TEN_TESTS: [&str; 15] = [
    "cli",
    "charge_path",
    "explain",
    "stat_path",
    "export",
    "exp_batch_skew",
    "exp_churn",
    "exp_kmem",
    "exp_limit",
    "exp_migrate",
    "exp_shmem",
    "exp_swap",
    "exp_threshold",
    "scale",
    "security",
];

/// The test executables `cargo xtask test` runs on 5.10 with a v1 memory hierarchy: the
/// seed's own paths (kernel memory counted by the v1 kmem page_counter, non-hierarchical
/// memcgs before 5.11) and the experiments that pass there.
pub const FIVE_TEN_V1_TESTS: [&str; 10] = [
    "charge_path",
    "explain",
    "stat_path",
    "exp_batch_skew",
    "exp_kmem",
    "exp_shmem",
    "exp_limit",
    "exp_churn",
    "exp_threshold",
    "scale",
];

/// The test executables `cargo xtask test` runs on the co-mounted v1 guest
/// ([`CgroupMode::V1Cpuset`]): explain, trace's stat path and every experiment, `threshold`
/// (v1 only) among them (about 4 minutes of emulated time).
pub const COMOUNTED_TESTS: [&str; 9] = [
    "explain",
    "stat_path",
    "exp_batch_skew",
    "exp_churn",
    "exp_kmem",
    "exp_limit",
    "exp_migrate",
    "exp_shmem",
    "exp_threshold",
];

/// Hot-pluggable memory of the [`NUMA_GUESTS`] (`run hotplug` takes its node offline).
pub const HOTPLUG_MIB: u32 = 256;

/// The guests `cargo xtask test` boots with two NUMA nodes (`run migrate` needs them) and a
/// third, of hot-pluggable memory only ([`HOTPLUG_MIB`]; `run hotplug` needs it): the
/// 6.12 v2 guest (since 6.8 a migration moves the charge to the new folio) and the co-mounted
/// 6.1 one (v1 `cpuset.memory_migrate`; before 6.8 the new folio is force-charged and the old
/// one uncharged). The other guests keep one node, so `exp_migrate` checks the refusal there.
pub const NUMA_GUESTS: [(&str, CgroupMode); 2] =
    [("6.12", CgroupMode::V2), ("6.1", CgroupMode::V1Cpuset)];

impl VmArgs {
    /// Two NUMA nodes where [`NUMA_GUESTS`] says so.
    pub fn with_ci_numa(mut self) -> Self {
        if NUMA_GUESTS.contains(&(self.kernel.as_str(), self.cgroup)) && self.cpus >= 2 {
            self.numa_nodes = 2;
            self.hotplug = HOTPLUG_MIB;
        }
        self
    }
}

/// Default cache directory; `MEMCG_DRIFT_VM_CACHE` overrides it.
const DEFAULT_CACHE: &str = "/var/cache/memcg-drift/vm";

/// Which cgroup layout the guest mounts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup2 on /sys/fs/cgroup with `+memory` in its subtree_control.
    V2,
    /// A v1 memory hierarchy on /sys/fs/cgroup/memory, cgroup2 without controllers on
    /// /sys/fs/cgroup/unified (6.1 only: 6.12 has no v1 memory controller).
    V1,
    /// Memory co-mounted with cpuset and cpu on one v1 hierarchy
    /// (`-o cpuset,cpu,memory` at /sys/fs/cgroup/cpuset,cpu,memory, seed 002 9.6), cgroup2
    /// without controllers beside it (6.1 only).
    #[value(name = "v1-cpuset")]
    V1Cpuset,
}

impl CgroupMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V1 => "v1",
            Self::V1Cpuset => "v1-cpuset",
        }
    }
}

/// Size of the swap device of the swap guests `cargo xtask test` boots, MiB.
pub const SWAP_MIB: u32 = 1024;
/// The test executables the swap guests run (filtered to the tests named `*swap*`).
pub const SWAP_TESTS: [&str; 2] = ["explain", "exp_swap"];

/// The guests `cargo xtask test` boots, longest first: [`run_many`] starts them in this order
/// on as many lanes as guests may run at once, so the long ones do not end up in one lane.
/// - The three kernels with every test on cgroup v2; on 6.12 and 6.18 the swap tests then run
///   again in the same boot with a swap device (`--then-swap`, issue 13).
/// - 6.1 with memory co-mounted with cpuset and cpu on v1 (seed 002 9.6, issue 15): the tool's
///   own paths (explain, trace, the experiments) on such a hierarchy, then the swap tests on
///   v1 (memsw) in the same boot.
/// - The per-CPU charge stock must scale with the CPU count (issue 5's proof): the residue
///   test once more on a 32-vCPU guest.
/// - 5.10, the seed's era (issue 12), on v2 and on v1, with the suites that pass there.
pub fn ci_guests() -> Vec<VmArgs> {
    let mut out = Vec::new();
    for kernel in ["6.12", "6.1", "6.18"] {
        let mut g = VmArgs::for_kernel(kernel);
        if kernel != "6.1" {
            g.then_swap = SWAP_MIB;
        }
        out.push(g.with_ci_numa());
    }
    let mut comounted = VmArgs::for_kernel("6.1");
    comounted.cgroup = CgroupMode::V1Cpuset;
    comounted.tests = COMOUNTED_TESTS.map(String::from).to_vec();
    comounted.then_swap = SWAP_MIB;
    out.push(comounted.with_ci_numa());
    let mut wide = VmArgs::for_kernel("6.12");
    wide.cpus = 32;
    wide.filter = Some("charge_stock_residue_scales_with_cpus".into());
    out.push(wide);
    let mut old = VmArgs::for_kernel("5.10");
    old.tests = FIVE_TEN_TESTS.map(String::from).to_vec();
    out.push(old);
    let mut old_v1 = VmArgs::for_kernel("5.10");
    old_v1.cgroup = CgroupMode::V1;
    old_v1.tests = FIVE_TEN_V1_TESTS.map(String::from).to_vec();
    out.push(old_v1);
    out
}

/// Runs `guests`, each in a `vm-test` child process of its own, up to [`guest_slots`] at
/// once, taking them in order. Each guest's output is printed whole when it ends. Returns
/// each guest's failure, if it failed, in the order given.
pub fn run_many(guests: &[VmArgs]) -> Result<Vec<Option<String>>> {
    let workspace = crate::workspace_root();
    // One build for all: the children's cargo calls then find everything fresh.
    payload::build(&workspace, &[], true, false)?;
    let exe = std::env::current_exe().context("finding xtask's own executable")?;
    let logs = target_dir(&workspace).join("vm-runs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; guests.len()]);
    let print = std::sync::Mutex::new(());
    let lanes = guest_slots().min(guests.len());
    std::thread::scope(|scope| {
        for _ in 0..lanes {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(g) = guests.get(k) else { break };
                    let name = g.run_dir_name();
                    let log = logs.join(format!("{name}.out"));
                    let started = Instant::now();
                    eprintln!("vm-test: {name}: started (output in {})", log.display());
                    let outcome = run_child(&exe, g, &log);
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let failure = match outcome {
                        Ok(true) => None,
                        Ok(false) => Some(
                            text.lines()
                                .rev()
                                .find(|l| l.starts_with("xtask: "))
                                .unwrap_or("failed")
                                .trim_start_matches("xtask: ")
                                .to_string(),
                        ),
                        Err(e) => Some(format!("{e:#}")),
                    };
                    let _p = print.lock().unwrap_or_else(|e| e.into_inner());
                    println!(
                        "==== vm-test {name} ({}, {:.0} s) ====",
                        if failure.is_none() { "PASS" } else { "FAIL" },
                        started.elapsed().as_secs_f64()
                    );
                    print!("{text}");
                    results.lock().unwrap_or_else(|e| e.into_inner())[k] = failure;
                }
            });
        }
    });
    Ok(results.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// One `vm-test` child with its output in `log`: whether it passed.
fn run_child(exe: &Path, g: &VmArgs, log: &Path) -> Result<bool> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out
        .try_clone()
        .context("duplicating the log's descriptor")?;
    let status = std::process::Command::new(exe)
        .arg("vm-test")
        .args(g.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok(status.success())
}

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args, Clone, Debug)]
pub struct VmArgs {
    /// Kernel generation: 6.1, 6.12 (bookworm) or 6.18 (trixie-backports).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(KERNELS))]
    pub kernel: String,
    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub cpus: u32,
    /// Guest memory in MiB (default: 4096, plus 128 per vCPU above 16).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Kill the guest after this many seconds of host wall time.
    #[arg(long, default_value_t = 1500)]
    pub timeout: u64,
    /// Pass this libtest name filter to every test executable.
    #[arg(long, value_name = "TESTNAME")]
    pub filter: Option<String>,
    /// Run only these test executables (names of `tests/tests/*.rs`, comma-separated).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub tests: Vec<String>,
    /// cgroup layout in the guest.
    #[arg(long, value_enum, default_value_t = CgroupMode::V2)]
    pub cgroup: CgroupMode,
    /// Keep the run's initrd.cpio in the run directory (to rerun QEMU by hand).
    #[arg(long)]
    pub keep: bool,
    /// Keep debug info in the guest binaries (file:line in backtraces; a larger initramfs
    /// boots a few seconds slower).
    #[arg(long)]
    pub debuginfo: bool,
    /// Run this prebuilt static test executable instead of building `integration-tests`
    /// (repeatable; for debugging the harness).
    #[arg(long, value_name = "PATH")]
    pub test_bin: Vec<PathBuf>,
    /// Run the overhead benchmark (`cargo xtask bench`'s, tests/src/bin/overhead.rs) in the
    /// guest with these arguments, e.g. `--bench "--rounds 15 --no-scale"` (one argument;
    /// split on spaces in the guest). No test executable runs unless `--tests` names some.
    /// Ratios under emulation compare with each other, not with the host's.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub bench: Option<String>,
    /// Another memcg-drift build for the benchmark to compare with in the same rounds (its
    /// `--alt-bin`): a release binary of another checkout, e.g. a `git worktree`'s
    /// `target/release/memcg-drift`. It goes in the guest as `/bin/memcg-drift-alt`.
    #[arg(long, value_name = "PATH", requires = "bench")]
    pub bench_alt: Option<PathBuf>,
    /// Give the guest a swap device of this many MiB: a zram device (in the guest's RAM; the
    /// zram module and its dependencies come from the kernel's package). 0: no swap.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub swap: u32,
    /// After the tests, in the same boot: a zram swap device of this many MiB, then the swap
    /// tests ([`SWAP_TESTS`]: explain, exp_swap) again, filtered to the tests named `*swap*`
    /// (reported as `<name>+swap`). 0: no second phase.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub then_swap: u32,
    /// NUMA nodes of the guest (QEMU `-numa`): memory and vCPUs split evenly among them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub numa_nodes: u32,
    /// MiB of hot-pluggable memory (a multiple of 128): a QEMU `pc-dimm` on a NUMA node of its
    /// own, onlined movable, so `run hotplug` can take it offline. 0: none.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub hotplug: u32,
}

impl VmArgs {
    /// The defaults `cargo xtask test` uses for one kernel: 2 vCPUs, cgroup v2, every test.
    pub fn for_kernel(kernel: &str) -> Self {
        Self {
            kernel: kernel.to_string(),
            cpus: 2,
            memory: None,
            // The whole suite takes about 10 minutes of emulated time at 2 vCPUs.
            timeout: 1500,
            filter: None,
            tests: Vec::new(),
            cgroup: CgroupMode::V2,
            keep: false,
            debuginfo: false,
            test_bin: Vec::new(),
            bench: None,
            bench_alt: None,
            swap: 0,
            then_swap: 0,
            numa_nodes: 1,
            hotplug: 0,
        }
    }

    /// The run directory's name under `vm-runs/`:
    /// `<kernel>-<cpus>[-<cgroup mode>][-swap][-numaN]`.
    pub fn run_dir_name(&self) -> String {
        let mut suffix = match self.cgroup {
            CgroupMode::V2 => String::new(),
            m => format!("-{}", m.as_str()),
        };
        if self.swap > 0 {
            suffix.push_str("-swap");
        }
        if self.then_swap > 0 {
            suffix.push_str("-thenswap");
        }
        if self.numa_nodes > 1 {
            suffix.push_str(&format!("-numa{}", self.numa_nodes));
        }
        if self.hotplug > 0 {
            suffix.push_str("-hotplug");
        }
        format!("{}-{}{suffix}", self.kernel, self.cpus)
    }

    /// The `cargo xtask vm-test` arguments that give these options.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--kernel".to_string(),
            self.kernel.clone(),
            "--cpus".into(),
            self.cpus.to_string(),
            "--timeout".into(),
            self.timeout.to_string(),
            "--cgroup".into(),
            self.cgroup.as_str().into(),
            "--swap".into(),
            self.swap.to_string(),
            "--then-swap".into(),
            self.then_swap.to_string(),
            "--numa-nodes".into(),
            self.numa_nodes.to_string(),
            "--hotplug".into(),
            self.hotplug.to_string(),
        ];
        if let Some(m) = self.memory {
            a.extend(["--memory".into(), m.to_string()]);
        }
        if let Some(f) = &self.filter {
            a.extend(["--filter".into(), f.clone()]);
        }
        if !self.tests.is_empty() {
            a.extend(["--tests".into(), self.tests.join(",")]);
        }
        if self.keep {
            a.push("--keep".into());
        }
        if self.debuginfo {
            a.push("--debuginfo".into());
        }
        for t in &self.test_bin {
            a.extend(["--test-bin".into(), t.display().to_string()]);
        }
        if let Some(b) = &self.bench {
            a.extend(["--bench".into(), b.clone()]);
        }
        if let Some(p) = &self.bench_alt {
            a.extend(["--bench-alt".into(), p.display().to_string()]);
        }
        a
    }

    fn memory_mib(&self) -> u32 {
        self.memory
            .unwrap_or_else(|| 4096 + 128 * self.cpus.saturating_sub(16))
    }
}

/// Builds the payload, boots the kernel, runs the tests in the guest and judges the run.
/// Returns an error naming the first problem when the run did not pass.
pub fn run(args: &VmArgs) -> Result<()> {
    if !KERNELS.contains(&args.kernel.as_str()) {
        bail!(
            "unknown kernel {:?} (expected one of {})",
            args.kernel,
            KERNELS.join(", ")
        );
    }
    if args.cgroup != CgroupMode::V2 && !["5.10", "6.1"].contains(&args.kernel.as_str()) {
        bail!(
            "--cgroup {} needs --kernel 5.10 or 6.1: {} has no cgroup v1 memory controller",
            args.cgroup.as_str(),
            args.kernel
        );
    }
    if args.swap > 0 && args.then_swap > 0 {
        bail!("--swap and --then-swap: swap from the start, or only after the tests, not both");
    }
    if args.numa_nodes > args.cpus {
        bail!(
            "--numa-nodes {} needs at least as many vCPUs (--cpus {})",
            args.numa_nodes,
            args.cpus
        );
    }
    if !args.hotplug.is_multiple_of(128) {
        bail!(
            "--hotplug {} MiB is not a multiple of 128 (the x86 memory block)",
            args.hotplug
        );
    }
    let workspace = crate::workspace_root();
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| {
        format!(
            "creating the cache {} (set MEMCG_DRIFT_VM_CACHE to a writable directory)",
            cache.display()
        )
    })?;

    let kernel = {
        let _lock = lock(
            &cache.join("cache.lock"),
            "another vm-test is preparing the cache",
        )?;
        let kernel = kernel::prepare(&cache, &args.kernel)?;
        let modules = if args.swap > 0 || args.then_swap > 0 {
            kernel::swap_modules(&cache, &kernel)?
        } else {
            Vec::new()
        };
        (kernel, modules)
    };
    let (kernel, modules) = kernel;
    eprintln!(
        "vm-test: kernel {} ({} {}, {})",
        kernel.release,
        kernel.package,
        kernel.version,
        if kernel.pvh { "PVH vmlinux" } else { "bzImage" }
    );

    // The A/B binary is checked before anything is built.
    if let Some(alt) = &args.bench_alt {
        if !alt.is_file() {
            bail!("--bench-alt {}: no such file", alt.display());
        }
        if has_interpreter(alt)? {
            bail!(
                "--bench-alt {}: dynamically linked; the guest has no shared libraries, give the \
                 static build a vm-test makes (target/x86_64-unknown-linux-gnu/release/memcg-drift)",
                alt.display()
            );
        }
    }
    let build_start = Instant::now();
    // With --bench, test executables run only when --tests names some.
    let with_tests = args.bench.is_none() || !args.tests.is_empty();
    let mut payload = payload::build(&workspace, &args.test_bin, with_tests, args.bench.is_some())?;
    if let Some(alt) = &args.bench_alt {
        payload.alt_tool = Some(alt.clone());
    }
    let swap_tests: Vec<String> = if args.then_swap > 0 {
        SWAP_TESTS.map(String::from).to_vec()
    } else {
        Vec::new()
    };
    let mut wanted = args.tests.clone();
    if !wanted.is_empty() {
        wanted.extend(
            swap_tests
                .iter()
                .filter(|t| !args.tests.contains(t))
                .cloned(),
        );
    }
    payload.select(&wanted)?;
    let first: Vec<String> = payload
        .tests
        .iter()
        .map(|t| t.name.clone())
        .filter(|n| args.tests.is_empty() || args.tests.contains(n))
        .collect();
    let build = build_start.elapsed();

    let run_dir = target_dir(&workspace)
        .join("vm-runs")
        .join(args.run_dir_name());
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir).with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    let config = initramfs::GuestConfig {
        cgroup: args.cgroup.as_str().to_string(),
        tests: first.clone(),
        filter: args.filter.clone(),
        debuginfo: args.debuginfo,
        bench: args.bench.as_ref().map(|b| match &args.bench_alt {
            Some(_) => format!("{b} --alt-bin {}", initramfs::ALT_TOOL),
            None => b.clone(),
        }),
        swap_mib: (args.swap > 0).then_some(args.swap),
        then_swap: (args.then_swap > 0).then(|| (args.then_swap, swap_tests.clone())),
        modules,
        numa_nodes: args.numa_nodes + u32::from(args.hotplug > 0),
        hotplug: args.hotplug > 0,
    };
    let initrd = {
        let _lock = lock(
            &cache.join("cache.lock"),
            "another vm-test is preparing the cache",
        )?;
        initramfs::build(&cache, &run_dir, &payload, &config)?
    };
    let size = fs::metadata(&initrd).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "vm-test: initramfs {:.0} MB with {} test executable(s); booting {} vCPUs, {} NUMA node(s) \
         (timeout {} s)",
        size as f64 / 1e6,
        first.len() + swap_tests.len(),
        args.cpus,
        args.numa_nodes,
        args.timeout
    );

    let outcome = {
        // TCG with `thread=single` emulates every vCPU of a guest on one host thread: at most
        // one guest per host CPU, also across concurrent vm-tests.
        let _slot = guest_slot(&cache)?;
        qemu::run(&qemu::Launch {
            kernel: &kernel,
            initrd: &initrd,
            cpus: args.cpus,
            memory_mib: args.memory_mib(),
            numa_nodes: args.numa_nodes,
            hotplug_mib: args.hotplug,
            run_dir: &run_dir,
            timeout: Duration::from_secs(args.timeout),
        })?
    };
    if !args.keep {
        fs::remove_file(&initrd).with_context(|| format!("removing {}", initrd.display()))?;
    }

    let info = judge::RunInfo {
        series: &args.kernel,
        package: format!("{} {}", kernel.package, kernel.version),
        pvh: kernel.pvh,
        cpus: args.cpus,
        cgroup: args.cgroup.as_str(),
        tests: first
            .iter()
            .cloned()
            .chain(swap_tests.iter().map(|t| format!("{t}+swap")))
            .collect(),
        bench: args.bench.is_some(),
        build,
        timeout: Duration::from_secs(args.timeout),
    };
    let verdict = judge::judge(&run_dir, &info, &outcome)?;
    print!("{}", verdict.summary);
    if !verdict.pass {
        let first = verdict
            .problems
            .first()
            .map_or("unknown problem", String::as_str);
        bail!(
            "vm-test on {} with {} vCPUs failed: {first} (logs in {})",
            args.kernel,
            args.cpus,
            run_dir.display()
        );
    }
    Ok(())
}

/// The cache directory: `$MEMCG_DRIFT_VM_CACHE` or `/var/cache/memcg-drift/vm`.
fn cache_dir() -> PathBuf {
    std::env::var_os("MEMCG_DRIFT_VM_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace) or `target/`.
pub fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// How many guests may run at once: one per host CPU (`$MEMCG_DRIFT_VM_SLOTS` overrides).
pub fn guest_slots() -> usize {
    std::env::var("MEMCG_DRIFT_VM_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Takes one of the [`guest_slots`] slot locks (`qemu-<k>.lock` in the cache), waiting for
/// one to free up when all are taken.
fn guest_slot(cache: &Path) -> Result<fs::File> {
    let slots = guest_slots();
    let mut said = false;
    loop {
        for k in 0..slots {
            let file = lock_file(&cache.join(format!("qemu-{k}.lock")))?;
            if file.try_lock().is_ok() {
                return Ok(file);
            }
        }
        if !said {
            eprintln!(
                "vm-test: waiting: {slots} guest(s) already running (one per host CPU; \
                 MEMCG_DRIFT_VM_SLOTS sets another number)"
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Opens (creating it if need be) the lock file `path`, unlocked.
fn lock_file(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes an exclusive lock on `path`, saying why when it has to wait.
fn lock(path: &Path, why: &str) -> Result<fs::File> {
    let file = lock_file(path)?;
    if file.try_lock().is_err() {
        eprintln!("vm-test: waiting: {why} ({})", path.display());
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

/// True if the ELF executable at `path` asks for a program interpreter (`PT_INTERP`: it is
/// dynamically linked). Not an ELF file is an error.
fn has_interpreter(path: &std::path::Path) -> Result<bool> {
    let b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|x| u64::from_le_bytes(x.try_into().unwrap_or([0; 8])) as usize)
    };
    if b.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        bail!("{}: not a 64-bit ELF executable", path.display());
    }
    let (Some(phoff), Some(size), Some(n)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        bail!("{}: truncated ELF header", path.display());
    };
    const PT_INTERP: u16 = 3;
    Ok((0..n).any(|i| u16_at(phoff + i * size) == Some(PT_INTERP as usize)))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        vm: VmArgs,
    }

    fn parse(args: &[String]) -> VmArgs {
        Cli::try_parse_from(std::iter::once("vm-test".to_string()).chain(args.iter().cloned()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .vm
    }

    #[test]
    fn a_dynamic_executable_is_told_from_a_static_one() {
        let dir = std::env::temp_dir().join(format!("xtask-elf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let not_elf = dir.join("x");
        fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(has_interpreter(&not_elf).is_err());
        // A static ELF: header only, one PT_LOAD program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        let stat = dir.join("s");
        fs::write(&stat, &elf).unwrap();
        assert!(!has_interpreter(&stat).unwrap());
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        fs::write(&stat, &elf).unwrap();
        assert!(has_interpreter(&stat).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_ci_guest_survives_its_command_line() {
        let guests = ci_guests();
        for g in &guests {
            let back = parse(&g.to_args());
            assert_eq!(format!("{back:?}"), format!("{g:?}"));
        }
        let mut g = guests[0].clone();
        g.memory = Some(2048);
        g.keep = true;
        g.debuginfo = true;
        g.test_bin = vec!["/x/t".into()];
        g.bench = Some("--rounds 3 --no-scale".into());
        g.bench_alt = Some("/y/memcg-drift".into());
        g.tests = vec!["cli".into(), "explain".into()];
        assert_eq!(format!("{:?}", parse(&g.to_args())), format!("{g:?}"));
        // The A/B binary only goes with a bench.
        let bad = ["--kernel", "6.1", "--bench-alt", "/y/memcg-drift"].map(String::from);
        assert!(Cli::try_parse_from(std::iter::once("vm-test".to_string()).chain(bad)).is_err());
    }

    #[test]
    fn ci_guests_run_each_suite_once_and_swap_after_the_tests() {
        let names: Vec<String> = ci_guests().iter().map(VmArgs::run_dir_name).collect();
        assert_eq!(
            names,
            [
                "6.12-2-thenswap-numa2-hotplug",
                "6.1-2",
                "6.18-2-thenswap",
                "6.1-2-v1-cpuset-thenswap-numa2-hotplug",
                "6.12-32",
                "5.10-2",
                "5.10-2-v1",
            ]
        );
        assert!(ci_guests().iter().all(|g| g.swap == 0));
    }
}
