//! memcg-drift: explains Linux memory-cgroup accounting drift with eBPF evidence.
//!
//! Data flows one way: kernel facts (`kernel`) -> probe plan (`plan`) -> load/attach
//! (`attach`, `tracer`) -> collect (`collect`) -> reports (`trace`, `doctor`). The ledger runs
//! alongside: layout (`kernel::layout`) -> residue snapshots (`residue`) -> ledger (`ledger`)
//! -> report (`explain`). Cgroup handling (`cgroup`) and the controlled workload process
//! (`workload`) are their own modules.
pub mod attach;
pub mod cgroup;
pub mod charge;
pub mod cli;
pub mod collect;
pub mod doctor;
pub mod experiment;
pub mod explain;
pub mod export;
pub mod items;
pub mod kernel;
pub mod ledger;
pub mod plan;
pub mod plot;
pub mod probes;
pub mod residue;
pub mod run;
pub mod safefs;
pub mod test_hooks;
pub mod trace;
pub mod tracer;
pub mod workload;
