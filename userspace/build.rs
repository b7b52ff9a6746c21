//! Builds the eBPF probes (`probes-ebpf`) and leaves the object in `OUT_DIR/probes`, where
//! `src/probes.rs` embeds it.
//!
//! The probes need the eBPF toolchain of `shared/docs/toolchain.md`: Debian's rustc linked as
//! the rustup toolchain `debian-rust` (with its `rust-src`, for `-Z build-std=core` on the
//! tier-3 target `bpfel-unknown-none`) and bpf-linker. Where that is missing, or
//! `MEMCG_DRIFT_SKIP_EBPF=1` is set, an empty placeholder object is written instead and a warning
//! names the command that installs the toolchain: the pure parts of the crate (parsers, plan,
//! reports) still build and unit-test without root or eBPF tools, and the binary refuses to
//! attach with the same instruction.
//!
//! This does what `aya_build::build_ebpf` does (same flags), but stays quiet on success:
//! aya-build forwards every line of the inner cargo as a warning, so every build of the
//! workspace printed dozens of lines.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const TOOLCHAIN: &str = "debian-rust";
const SKIP: &str = "MEMCG_DRIFT_SKIP_EBPF";
const SETUP: &str = "cargo xtask setup";
const RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

fn missing_toolchain() -> Option<String> {
    if which::which("bpf-linker").is_err() {
        return Some("bpf-linker is not on PATH".into());
    }
    let ok = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Some(format!(
            "the rustup toolchain `{TOOLCHAIN}` (Debian's rustc) is missing"
        ));
    }
    if !Path::new(RUST_SRC).exists() {
        return Some(format!(
            "{RUST_SRC} is missing (Debian package rust-web-src)"
        ));
    }
    None
}

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("userspace/ has a parent")
        .to_path_buf();
    let dst = out_dir.join("probes");
    println!("cargo:rerun-if-env-changed={SKIP}");
    for p in [
        "probes-common/src",
        "probes-common/Cargo.toml",
        "probes-ebpf/src",
        "probes-ebpf/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    let skip = env::var(SKIP).is_ok_and(|v| v == "1");
    let why = if skip {
        Some(format!("{SKIP}=1"))
    } else {
        missing_toolchain()
    };
    if let Some(why) = why {
        println!(
            "cargo:warning=building without eBPF probes ({why}); run `{SETUP}` to install the eBPF toolchain"
        );
        fs::write(&dst, []).expect("write placeholder object");
        return;
    }

    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets it");
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&root)
        .args([
            "run",
            TOOLCHAIN,
            "cargo",
            "build",
            "--package",
            "probes-ebpf",
            "--bins",
            "--release",
        ])
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir)
        // Debian's rustc is a stable compiler: unlock -Z build-std for this build only.
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    let out = cmd.output().expect("start rustup to build the eBPF probes");
    if !out.status.success() {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("cargo:warning={line}");
        }
        panic!(
            "building the eBPF probes failed (see the warnings above); if the eBPF toolchain is \
             incomplete, run `{SETUP}`"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/probes");
    fs::copy(&built, &dst)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), dst.display()));
}
