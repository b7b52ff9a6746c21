//! memcg-drift: explains Linux memory-cgroup accounting drift with eBPF evidence.
//!
//! Layers, arrows pointing down only (`tests/layers.rs` fails on a cycle or an upward edge):
//! - `cmd` (one file per subcommand where it has more than dispatch) over `cli` (clap types);
//! - renderers and experiments: `experiment` (built-in runs), `export` (OpenMetrics),
//!   `plot` (SVG), `trace` and `doctor` (reports of their own);
//! - analysis and readers: `explain` (ledger reports from snapshots), `ledger`, `residue`
//!   (on-demand eBPF reads of per-CPU state), `tracer` / `charge` (attached probes), `collect`;
//! - the loader and the kernel: `attach` (the only module that loads and attaches), `plan`
//!   (pure), `kernel` (BTF, kallsyms, tracefs), `items`;
//! - plain helpers: `cgroup`, `workload`, `safefs`, `units`, `undo`, `process`, `test_hooks`.
pub mod attach;
pub mod cgroup;
pub mod charge;
pub mod cli;
pub mod cmd;
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
pub mod process;
pub mod residue;
pub mod safefs;
pub mod test_hooks;
pub mod trace;
pub mod tracer;
pub mod undo;
pub mod units;
pub mod workload;
