//! Cgroup lifecycle: the `cgroup:cgroup_mkdir`, `cgroup:cgroup_rmdir` and
//! `cgroup:cgroup_release` tracepoints (`TP_PROTO(struct cgroup *cgrp, const char *path)`, all
//! kernels this tool targets), as BTF tracepoints. Rare: each event goes through the OOM ring
//! buffer with its own kind, time and cgroup id, so a dying cgroup's lifetime (rmdir to
//! release) is measured by the kernel's clock, not by polling.
//!
//! Only the memory hierarchy's cgroups count: on cgroup v1 every hierarchy has its own cgroup
//! ids, so the event's `cgrp->root->hierarchy_id` is compared first. Then the usual subtree
//! filter, walking the cgroup's own css (`cgrp->self`) up.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probes_common::charge::{ChargeConfig, ccounter, oom_kind};

use crate::{
    charge::{cbump, ccfg, read_u32, read_u64},
    oom::send,
    stat::{css_cgroup_id, wanted},
};

fn on_cgroup(kind: u32, cgrp: u64) {
    cbump(ccounter::SEEN);
    let hierarchy = ccfg!(target_hierarchy);
    if hierarchy != ChargeConfig::ABSENT {
        let Ok(root) = read_u64(cgrp, ccfg!(cgroup_root)) else {
            cbump(ccounter::READ_FAILED);
            return;
        };
        match read_u32(root, ccfg!(root_hierarchy_id)) {
            Ok(h) if u64::from(h) == hierarchy => {}
            Ok(_) => {
                cbump(ccounter::FILTERED);
                return;
            }
            Err(()) => {
                cbump(ccounter::READ_FAILED);
                return;
            }
        }
    }
    let css = cgrp + ccfg!(cgroup_self);
    let Ok(id) = css_cgroup_id(css) else {
        cbump(ccounter::READ_FAILED);
        return;
    };
    if !wanted(id, Some(css)) {
        cbump(ccounter::FILTERED);
        return;
    }
    let level = read_u32(cgrp, ccfg!(cgroup_level)).map_or(-1, |l| l as i32);
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    send(kind, id, bpf_get_current_pid_tgid() as u32, level, comm);
}

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn tp_btf_cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    on_cgroup(oom_kind::MKDIR, ctx.arg::<u64>(0));
    0
}

#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn tp_btf_cgroup_rmdir(ctx: BtfTracePointContext) -> i32 {
    on_cgroup(oom_kind::RMDIR, ctx.arg::<u64>(0));
    0
}

#[btf_tracepoint(function = "cgroup_release")]
pub fn tp_btf_cgroup_release(ctx: BtfTracePointContext) -> i32 {
    on_cgroup(oom_kind::RELEASE, ctx.arg::<u64>(0));
    0
}
