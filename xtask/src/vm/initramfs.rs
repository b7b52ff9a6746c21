//! The guest's initramfs: two uncompressed newc cpio archives, concatenated (the kernel unpacks
//! them one after the other into the same rootfs).
//!
//! - The **base** holds busybox-static with its applet symlinks and `/init`
//!   (`xtask/vm/init`). It depends only on those two files, so it is built once per content
//!   hash and kept in the cache.
//! - The **payload** holds `/bin/memcg-drift`, `/tests/<name>` and `/vmtest/config` (the shell
//!   variables `/init` reads) and is rebuilt for every run.
//!
//! Archives are written by the `cpio` tool (`--owner 0:0`) from a staging tree.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::payload::Payload;

/// The guest `/init`.
const INIT: &str = include_str!("../../vm/init");
/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";
/// Where another memcg-drift build for the benchmark's A/B goes (`vm-test --bench-alt`).
pub const ALT_TOOL: &str = "/bin/memcg-drift-alt";
/// Dynamically linked host tools the tests may call, copied with their shared libraries to
/// the same paths in the guest (bpftool is small; bpftrace would add about 200 MB of LLVM).
const HOST_TOOLS: &[&str] = &["bpftool"];

/// What `/init` is told through `/vmtest/config`.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// `v1`, `v1-cpuset` or `v2`.
    pub cgroup: String,
    /// The test executables of the first phase, in order (all the payload's unless
    /// `--tests` named some).
    pub tests: Vec<String>,
    /// libtest name filter passed to every test executable.
    pub filter: Option<String>,
    /// Keep DWARF debug info in `memcg-drift` and the test executables. Stripped by default:
    /// it is about 90% of their size, and the kernel unpacks the initramfs at roughly
    /// 25 MB/s under TCG. Panic messages keep their file:line either way; backtraces then
    /// show function names only.
    pub debuginfo: bool,
    /// Arguments of the overhead benchmark, run after the tests when set.
    pub bench: Option<String>,
    /// Size of the zram swap device set up before the tests, when set.
    pub swap_mib: Option<u32>,
    /// A second phase after the tests: a zram swap device of this many MiB, then these test
    /// executables again, filtered to the tests named `*swap*` (framed as `test:<name>+swap`).
    pub then_swap: Option<(u32, Vec<String>)>,
    /// Kernel modules to load before swap is set up (in this order), as `/lib/modules/<name>`.
    pub modules: Vec<PathBuf>,
    /// NUMA nodes QEMU gives the guest (the tests see `MEMCG_DRIFT_NUMA_NODES` when > 1).
    pub numa_nodes: u32,
    /// The guest has a hot-pluggable memory node (the tests see `MEMCG_DRIFT_HOTPLUG=1`).
    pub hotplug: bool,
}

/// Returns the cached base archive, building it if busybox or `/init` changed.
pub fn base(cache: &Path) -> Result<PathBuf> {
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX} (install busybox-static: cargo xtask setup --vm)")
    })?;
    let mut hash = Fnv::default();
    hash.write(INIT.as_bytes());
    hash.write(&busybox);
    let out = cache.join(format!("base-{:016x}.cpio", hash.0));
    if out.is_file() {
        return Ok(out);
    }
    let stage = cache.join("base-stage");
    fresh_dir(&stage)?;
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc",
    ] {
        mkdir(&stage.join(dir))?;
    }
    write_file(&stage.join("bin/busybox"), &busybox, 0o755)?;
    write_file(&stage.join("init"), INIT.as_bytes(), 0o755)?;
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .context("running busybox --list-full")?;
    if !list.status.success() {
        bail!("busybox --list-full failed ({})", list.status);
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet == "linuxrc" {
            continue;
        }
        let link = stage.join(applet);
        if let Some(parent) = link.parent() {
            mkdir(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    let partial = out.with_extension("partial");
    cpio(&stage, &partial)?;
    fs::rename(&partial, &out).with_context(|| format!("moving {}", out.display()))?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(out)
}

/// Builds `run_dir/initrd.cpio` = cached base + this run's payload.
pub fn build(
    cache: &Path,
    run_dir: &Path,
    payload: &Payload,
    config: &GuestConfig,
) -> Result<PathBuf> {
    let base = base(cache)?;
    let stage = run_dir.join("payload-stage");
    fresh_dir(&stage)?;
    mkdir(&stage.join("bin"))?;
    mkdir(&stage.join("tests"))?;
    mkdir(&stage.join("vmtest"))?;
    let strip = !config.debuginfo;
    place_binary(&payload.tool, &stage.join("bin/memcg-drift"), strip)?;
    for t in &payload.tests {
        place_binary(&t.path, &stage.join("tests").join(&t.name), strip)?;
    }
    if let Some(bench) = &payload.bench {
        place_binary(bench, &stage.join("bin/overhead"), strip)?;
    }
    if let Some(alt) = &payload.alt_tool {
        place_binary(alt, &stage.join(ALT_TOOL.trim_start_matches('/')), strip)?;
    }
    if !config.modules.is_empty() {
        mkdir(&stage.join("lib/modules"))?;
        for m in &config.modules {
            let name = m.file_name().context("module path has no file name")?;
            place(m, &stage.join("lib/modules").join(name))?;
        }
    }
    for tool in HOST_TOOLS {
        match host_tool(tool) {
            Ok(files) => {
                for file in files {
                    let dst = stage.join(file.strip_prefix("/").unwrap_or(&file));
                    if let Some(parent) = dst.parent() {
                        mkdir(parent)?;
                    }
                    place(&file, &dst)?;
                }
            }
            Err(e) => eprintln!("vm-test: {tool} will be missing in the guest: {e:#}"),
        }
    }
    let first: Vec<&str> = config.tests.iter().map(String::as_str).collect();
    let conf = config_text(config, &first);
    write_file(&stage.join("vmtest/config"), conf.as_bytes(), 0o644)?;

    let payload_cpio = run_dir.join("payload.cpio");
    cpio(&stage, &payload_cpio)?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;

    let initrd = run_dir.join("initrd.cpio");
    let mut out =
        fs::File::create(&initrd).with_context(|| format!("creating {}", initrd.display()))?;
    for part in [&base, &payload_cpio] {
        let mut f = fs::File::open(part).with_context(|| format!("opening {}", part.display()))?;
        std::io::copy(&mut f, &mut out).with_context(|| format!("writing {}", initrd.display()))?;
    }
    fs::remove_file(&payload_cpio)
        .with_context(|| format!("removing {}", payload_cpio.display()))?;
    Ok(initrd)
}

/// `/vmtest/config`: shell assignments `/init` sources.
fn config_text(config: &GuestConfig, tests: &[&str]) -> String {
    let mut conf = format!(
        "VMTEST_CGROUP={}\nVMTEST_TESTS={}\n",
        shell_quote(&config.cgroup),
        shell_quote(&tests.join(" "))
    );
    if let Some(filter) = &config.filter {
        conf.push_str(&format!(
            "VMTEST_FILTER_SET=1\nVMTEST_FILTER={}\n",
            shell_quote(filter)
        ));
    }
    if let Some(bench) = &config.bench {
        conf.push_str(&format!(
            "VMTEST_BENCH_SET=1\nVMTEST_BENCH={}\n",
            shell_quote(bench)
        ));
    }
    if config.numa_nodes > 1 {
        conf.push_str(&format!("VMTEST_NUMA_NODES={}\n", config.numa_nodes));
    }
    if config.hotplug {
        conf.push_str("VMTEST_HOTPLUG=1\n");
    }
    if let Some(mib) = config.swap_mib {
        conf.push_str(&format!("VMTEST_SWAP_MIB={mib}\n"));
    }
    if let Some((mib, tests)) = &config.then_swap {
        conf.push_str(&format!(
            "VMTEST_THEN_SWAP_MIB={mib}\nVMTEST_SWAP_TESTS={}\n",
            shell_quote(&tests.join(" "))
        ));
    }
    if config.swap_mib.is_some() || config.then_swap.is_some() {
        let names: Vec<String> = config
            .modules
            .iter()
            .filter_map(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        conf.push_str(&format!(
            "VMTEST_MODULES={}\n",
            shell_quote(&names.join(" "))
        ));
    }
    conf
}

/// The host paths of `tool` (found on `PATH` or in the sbin directories) and of every shared
/// library `ldd` says it loads, including the dynamic loader.
fn host_tool(tool: &str) -> Result<Vec<PathBuf>> {
    let path = std::env::var("PATH").unwrap_or_default();
    let exe = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} is not installed on the host"))?;
    let out = Command::new("ldd")
        .arg(&exe)
        .output()
        .context("starting ldd")?;
    let mut files = vec![exe];
    // A static executable makes ldd fail with "not a dynamic executable": no libraries then.
    if out.status.success() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            let lib = line.split_once("=>").map_or(line, |(_, p)| p.trim());
            if let Some(lib) = lib.split(" (").next().filter(|l| l.starts_with('/')) {
                files.push(PathBuf::from(lib));
            }
        }
    }
    Ok(files)
}

/// Archives the tree under `root` into `out` as an uncompressed newc cpio owned by root.
fn cpio(root: &Path, out: &Path) -> Result<()> {
    let mut entries = Vec::new();
    walk(root, Path::new("."), &mut entries)?;
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut child = Command::new("cpio")
        .current_dir(root)
        .args([
            "--create",
            "--format=newc",
            "--null",
            "--quiet",
            "--owner=0:0",
        ])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting cpio (install it: cargo xtask setup --vm)")?;
    {
        let mut stdin = child.stdin.take().context("cpio has no stdin pipe")?;
        for e in &entries {
            stdin
                .write_all(e.as_os_str().as_encoded_bytes())
                .context("feeding cpio")?;
            stdin.write_all(b"\0").context("feeding cpio")?;
        }
    }
    let status = child.wait().context("waiting for cpio")?;
    if !status.success() {
        bail!("cpio failed for {} ({status})", root.display());
    }
    Ok(())
}

/// Lists `dir` (relative names under `rel`) depth-first, parents before children, sorted.
fn walk(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = base.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort();
    for name in names {
        let rel = rel.join(name);
        out.push(rel.clone());
        let meta = fs::symlink_metadata(base.join(&rel))
            .with_context(|| format!("inspecting {}", rel.display()))?;
        if meta.is_dir() {
            walk(base, &rel, out)?;
        }
    }
    Ok(())
}

/// Copies a Rust executable into the stage, without its debug info when `strip` is set
/// (`strip --strip-debug` from binutils; a plain copy if that fails).
fn place_binary(src: &Path, dst: &Path, strip: bool) -> Result<()> {
    if strip {
        let stripped = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(dst)
            .arg(src)
            .status();
        match stripped {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => eprintln!("vm-test: strip failed on {} ({s}); copying", src.display()),
            Err(e) => eprintln!("vm-test: cannot run strip ({e}); copying {}", src.display()),
        }
    }
    place(src, dst)
}

/// Copies `src` to `dst` with its mode. (Not a hard link: cpio defers the data of files with
/// several links, which is fragile across concatenated archives.)
fn place(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(())
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    mkdir(dir)
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Single-quotes `s` for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// 64-bit FNV-1a, a stable content hash for cache keys.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tool_finds_libraries_of_a_dynamic_tool() {
        // `sh` is dynamically linked on Debian; skip quietly where it is not.
        let Ok(files) = host_tool("sh") else { return };
        assert!(files[0].ends_with("sh"));
        assert!(files.iter().all(|f| f.is_absolute()));
    }

    #[test]
    fn config_asks_for_the_bench_only_when_given() {
        let mut config = GuestConfig {
            cgroup: "v2".into(),
            tests: Vec::new(),
            filter: None,
            debuginfo: false,
            bench: None,
            swap_mib: None,
            then_swap: None,
            modules: Vec::new(),
            numa_nodes: 1,
            hotplug: false,
        };
        let plain = config_text(&config, &["explain"]);
        assert_eq!(plain, "VMTEST_CGROUP='v2'\nVMTEST_TESTS='explain'\n");
        config.bench = Some("--rounds 3 --no-scale".into());
        let bench = config_text(&config, &[]);
        assert!(
            bench.ends_with("VMTEST_BENCH_SET=1\nVMTEST_BENCH='--rounds 3 --no-scale'\n"),
            "{bench}"
        );
        assert!(bench.contains("VMTEST_TESTS=''\n"), "{bench}");
        assert!(!bench.contains("SWAP"), "{bench}");
        assert!(!bench.contains("NUMA"), "{bench}");
        config.numa_nodes = 2;
        config.hotplug = true;
        assert!(config_text(&config, &[]).ends_with("VMTEST_NUMA_NODES=2\nVMTEST_HOTPLUG=1\n"));
        config.numa_nodes = 1;
        config.hotplug = false;
        config.swap_mib = Some(512);
        config.modules = vec![
            PathBuf::from("/c/modules/zsmalloc.ko"),
            PathBuf::from("/c/modules/zram.ko"),
        ];
        let swap = config_text(&config, &[]);
        assert!(
            swap.ends_with("VMTEST_SWAP_MIB=512\nVMTEST_MODULES='zsmalloc.ko zram.ko'\n"),
            "{swap}"
        );
        // Swap only after the tests: the second phase's tests, and the modules it loads.
        config.swap_mib = None;
        config.bench = None;
        config.then_swap = Some((1024, vec!["explain".into(), "exp_swap".into()]));
        let then = config_text(&config, &["cli"]);
        assert!(
            then.ends_with(
                "VMTEST_TESTS='cli'\nVMTEST_THEN_SWAP_MIB=1024\n\
                 VMTEST_SWAP_TESTS='explain exp_swap'\nVMTEST_MODULES='zsmalloc.ko zram.ko'\n"
            ),
            "{then}"
        );
        assert!(!then.contains("VMTEST_SWAP_MIB"), "{then}");
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
