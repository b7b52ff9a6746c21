//! `cargo xtask setup`: the verified recipe of `shared/docs/toolchain.md`, made idempotent.
//!
//! 1. Debian packages: Debian's rustc/cargo 1.96 with its library source and LLVM 22 (the
//!    rustup toolchains here cannot fetch `rust-src`), bpftool for cross-checks, bpftrace (the
//!    reference `cargo xtask bench` measures against); with `vm`, QEMU,
//!    busybox-static and cpio for the guest suites.
//! 2. `rustup toolchain link debian-rust /usr`, the toolchain aya-build drives.
//! 3. bpf-linker 0.13.0 built against LLVM 22 (the LLVM of Debian's rustc).
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// bpftool and bpftrace are independent cross-checks used by the integration tests; the
/// exporter's test scrapes it with Debian's Prometheus server (started by the test on a port of
/// its own, never as a service) and lints it with its `promtool`.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "bpftool",
    "bpftrace",
    "prometheus",
];
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "zstd",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

fn step(msg: &str) {
    eprintln!("setup: {msg}");
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Installs whatever is missing; prints one line per check.
pub fn setup(vm: bool) -> Result<()> {
    let mut wanted: Vec<&str> = PACKAGES.to_vec();
    if vm {
        wanted.extend_from_slice(VM_PACKAGES);
    }
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step(&format!("Debian packages present: {}", wanted.join(" ")));
    } else {
        step(&format!(
            "installing Debian packages: {}",
            missing.join(" ")
        ));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing))?;
    }

    let linked = Command::new("rustup")
        .args(["run", "debian-rust", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if linked {
        step("rustup toolchain debian-rust -> /usr present");
    } else {
        step("linking Debian's rustc as rustup toolchain debian-rust");
        run(Command::new("rustup").args(["toolchain", "link", "debian-rust", "/usr"]))?;
    }

    let have_linker = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if have_linker {
        step(&format!("bpf-linker {BPF_LINKER_VERSION} present"));
    } else {
        step(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)"
        ));
        let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        run(Command::new("cargo")
            .env("PATH", path)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"]))?;
    }
    Ok(())
}
