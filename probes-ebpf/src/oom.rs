//! The OOM path: `mem_cgroup_out_of_memory` (a memcg OOM is invoked), `oom_kill_process` (a
//! victim is chosen and killed) and the `oom:mark_victim` tracepoint. OOMs are rare: each is
//! aggregated like the charge path (`CHARGE_AGG`, kinds `OOM` / `OOM_KILL`) and also streamed
//! as an `OomEvent` through the ring buffer `OOM_EVENTS`, with time, CPU, memcg and task.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, fentry, kprobe, map, tracepoint},
    maps::RingBuf,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use probes_common::charge::{OOM_RING_BYTES, OomEvent, ccounter, counter, kind, oom_kind};

use crate::{
    charge::{cbump, ccfg, memcg_wanted, read_u32, read_u64, record, task_memcg},
    stat::Probe,
};

/// Rare OOM-path events.
#[map(name = "OOM_EVENTS")]
pub static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(OOM_RING_BYTES, 0);

/// Writes one event; a full ring buffer is counted.
#[inline(always)]
pub(crate) fn send(kind: u32, cgroup_id: u64, pid: u32, order: i32, comm: [u8; 16]) {
    let Some(mut entry) = OOM_EVENTS.reserve::<OomEvent>(0) else {
        cbump(ccounter::RING_FULL);
        return;
    };
    entry.write(OomEvent {
        kind,
        // SAFETY: no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        pid,
        order,
        comm,
        current_pid: bpf_get_current_pid_tgid() as u32,
        _pad: 0,
    });
    entry.submit(0);
    cbump(ccounter::RING_SENT);
}

/// `task->pid` and `task->comm`.
#[inline(always)]
fn task_pid_comm(task: u64) -> (u32, [u8; 16]) {
    let pid = read_u32(task, ccfg!(task_pid)).unwrap_or(0);
    // SAFETY: bpf_probe_read_kernel copes with any address.
    let comm = unsafe { bpf_probe_read_kernel((task + ccfg!(task_comm)) as *const [u8; 16]) }
        .unwrap_or([0; 16]);
    (pid, comm)
}

fn on_memcg_oom(memcg: u64, order: i32) {
    cbump(ccounter::SEEN);
    let id = match memcg_wanted::<Probe>(memcg) {
        Ok(Some(id)) => id,
        Ok(None) => {
            cbump(ccounter::FILTERED);
            return;
        }
        Err(()) => {
            cbump(ccounter::READ_FAILED);
            return;
        }
    };
    record(id, kind::OOM, counter::NONE, 0);
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    send(
        oom_kind::INVOKED,
        id,
        bpf_get_current_pid_tgid() as u32,
        order,
        comm,
    );
}

fn on_oom_kill(oc: u64) {
    cbump(ccounter::SEEN);
    let (Ok(memcg), Ok(victim)) = (
        read_u64(oc, ccfg!(oc_memcg)),
        read_u64(oc, ccfg!(oc_chosen)),
    ) else {
        cbump(ccounter::READ_FAILED);
        return;
    };
    let order = read_u32(oc, ccfg!(oc_order)).map_or(-1, |o| o as i32);
    // A global OOM has no memcg: it is filtered by the victim's own memcg and reported with
    // cgroup id 0.
    let (filter_memcg, global) = if memcg != 0 {
        (Ok(memcg), false)
    } else {
        (task_memcg(victim), true)
    };
    let id = match filter_memcg.and_then(memcg_wanted::<Probe>) {
        Ok(Some(id)) => id,
        Ok(None) => {
            cbump(ccounter::FILTERED);
            return;
        }
        Err(()) => {
            cbump(ccounter::READ_FAILED);
            return;
        }
    };
    let id = if global { 0 } else { id };
    record(id, kind::OOM_KILL, counter::NONE, 0);
    let (pid, comm) = task_pid_comm(victim);
    send(oom_kind::KILL, id, pid, order, comm);
}

// ---- mem_cgroup_out_of_memory(struct mem_cgroup *memcg, gfp_t gfp_mask, int order) ----

#[fentry(function = "mem_cgroup_out_of_memory")]
pub fn fentry_memcg_oom(ctx: FEntryContext) -> u32 {
    on_memcg_oom(ctx.arg(0), ctx.arg::<u64>(2) as i32);
    0
}

#[kprobe]
pub fn kprobe_memcg_oom(ctx: ProbeContext) -> u32 {
    if let (Some(memcg), Some(order)) = (ctx.arg(0), ctx.arg::<u64>(2)) {
        on_memcg_oom(memcg, order as i32);
    }
    0
}

// ---- oom_kill_process(struct oom_control *oc, const char *message) ----

#[fentry(function = "oom_kill_process")]
pub fn fentry_oom_kill(ctx: FEntryContext) -> u32 {
    on_oom_kill(ctx.arg(0));
    0
}

#[kprobe]
pub fn kprobe_oom_kill(ctx: ProbeContext) -> u32 {
    if let Some(oc) = ctx.arg(0) {
        on_oom_kill(oc);
    }
    0
}

// ---- oom:mark_victim: TP_PROTO(int pid) up to 6.8, (struct task_struct *, uid_t) by 6.12 ----

/// tp_btf: the first argument is the task (6.12+) or the pid, as `victim_arg_is_task` says.
#[btf_tracepoint(function = "mark_victim")]
pub fn tp_btf_mark_victim(ctx: BtfTracePointContext) -> i32 {
    let arg = ctx.arg::<u64>(0);
    if ccfg!(victim_arg_is_task) == 0 {
        // Only the pid: the victim's memcg is unknown here (the KILL event has it), so the
        // event is not filtered; it is rare.
        cbump(ccounter::SEEN);
        cbump(ccounter::RECORDED);
        send(oom_kind::VICTIM, 0, arg as u32, -1, [0; 16]);
        return 0;
    }
    cbump(ccounter::SEEN);
    let id = match task_memcg(arg).and_then(memcg_wanted::<Probe>) {
        Ok(Some(id)) => id,
        Ok(None) => {
            cbump(ccounter::FILTERED);
            return 0;
        }
        Err(()) => 0,
    };
    cbump(ccounter::RECORDED);
    let (pid, comm) = task_pid_comm(arg);
    send(oom_kind::VICTIM, id, pid, -1, comm);
    0
}

/// Classic tracepoint: `pid` (and `comm` from 6.12) at the offsets of its format file.
#[tracepoint]
pub fn tp_mark_victim(ctx: TracePointContext) -> u32 {
    cbump(ccounter::SEEN);
    // SAFETY: offsets inside the record, from its format file.
    let pid = unsafe { ctx.read_at::<u32>(ccfg!(tp_victim_pid) as usize) }.unwrap_or(0);
    let comm_off = ccfg!(tp_victim_comm) as usize;
    let comm = if comm_off == 0 {
        [0; 16]
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<[u8; 16]>(comm_off) }.unwrap_or([0; 16])
    };
    cbump(ccounter::RECORDED);
    send(oom_kind::VICTIM, 0, pid, -1, comm);
    0
}
