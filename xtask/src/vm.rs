//! `cargo xtask vm-test`: placeholder until the QEMU harness lands.
use anyhow::{Result, bail};

/// The Debian kernels the guest suites run on.
pub const KERNELS: [&str; 2] = ["6.1", "6.12"];

#[derive(clap::Args, Clone, Debug)]
pub struct VmArgs {
    /// Kernel generation: 6.1 or 6.12.
    #[arg(long)]
    pub kernel: String,
    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
}

impl VmArgs {
    pub fn for_kernel(kernel: &str) -> Self {
        Self { kernel: kernel.to_string(), cpus: 2 }
    }
}

pub fn run(_args: &VmArgs) -> Result<()> {
    bail!("the QEMU harness is not built yet")
}
