//! Builds the eBPF probes (`probes-ebpf`) and leaves the object in `OUT_DIR/probes`, where
//! `src/probes.rs` embeds it.
//!
//! The probes need the eBPF toolchain of `shared/docs/toolchain.md` (Debian's rustc linked as
//! the rustup toolchain `debian-rust`, its `rust-src`, and bpf-linker). Where that is missing, or
//! `MEMCG_DRIFT_SKIP_EBPF=1` is set, an empty placeholder object is written instead and a warning
//! names the command that installs the toolchain: the pure parts of the crate (parsers, plan,
//! ledger, reports) still build and unit-test without root or eBPF tools, and the binary refuses
//! to attach with the same instruction.
use std::{env, fs, path::PathBuf, process::Command};

const TOOLCHAIN: &str = "debian-rust";
const SKIP: &str = "MEMCG_DRIFT_SKIP_EBPF";
const SETUP: &str = "cargo xtask setup";

fn missing_toolchain() -> Option<String> {
    if which::which("bpf-linker").is_err() {
        return Some("bpf-linker is not on PATH".into());
    }
    let ok = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Some(format!("the rustup toolchain `{TOOLCHAIN}` (Debian's rustc) is missing"));
    }
    let src = PathBuf::from("/usr/lib/rustlib/src/rust/library/core");
    if !src.exists() {
        return Some(format!("{} is missing (Debian package rust-web-src)", src.display()));
    }
    None
}

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.parent().expect("userspace/ has a parent").to_path_buf();
    println!("cargo:rerun-if-env-changed={SKIP}");
    println!("cargo:rerun-if-changed={}", root.join("probes-common/src").display());
    println!("cargo:rerun-if-changed={}", root.join("probes-ebpf/src").display());
    println!("cargo:rerun-if-changed={}", root.join("probes-ebpf/Cargo.toml").display());

    let skip = env::var(SKIP).is_ok_and(|v| v == "1");
    let why = if skip { Some(format!("{SKIP}=1")) } else { missing_toolchain() };
    if let Some(why) = why {
        println!("cargo:warning=building without eBPF probes ({why}); run `{SETUP}` to install the eBPF toolchain");
        fs::write(out_dir.join("probes"), [])?;
        return Ok(());
    }
    // aya-build passes -Z build-std=core only when RUSTC_BOOTSTRAP=1 reaches it (Debian's rustc
    // is a stable compiler). Setting it here affects only the child cargo it spawns.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let ebpf_dir = root.join("probes-ebpf");
    let package = aya_build::Package {
        name: "probes-ebpf",
        root_dir: ebpf_dir.to_str().expect("utf-8 path"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(TOOLCHAIN)).map_err(|e| {
        anyhow::anyhow!("building the eBPF probes failed: {e:#}\nIf the eBPF toolchain is incomplete, run `{SETUP}`.")
    })
}
