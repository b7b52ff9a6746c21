//! memcg-drift: explains Linux memory-cgroup accounting drift with eBPF evidence.
//!
//! Data flows one way: kernel facts (`kernel`) -> probe plan (`plan`) -> load/attach
//! (`attach`) -> collect (`collect`) -> reports (`report`). Cgroup handling (`cgroup`) and the
//! controlled workload process (`workload`) are their own modules.
pub mod cgroup;
pub mod probes;
pub mod workload;
