//! The charge path's entry points, one per attach flavour and hook: each only adapts its
//! arguments (fentry/fexit and tp_btf read them from the context, kprobes from registers,
//! kretprobes have the return value only) and calls the body in `charge/mod.rs`.

use super::*;

// ---- try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages) ----

#[fentry(function = "try_charge_memcg")]
pub fn fentry_try_charge(ctx: FEntryContext) -> u32 {
    // The memcg is a BTF-typed argument: plain loads, checked by the verifier.
    on_tc_entry::<crate::stat::Direct>(ctx.arg::<u64>(0), ctx.arg::<u64>(2) as u32);
    0
}

#[kprobe]
pub fn kprobe_try_charge(ctx: ProbeContext) -> u32 {
    if let (Some(memcg), Some(nr)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(2)) {
        on_tc_entry::<crate::stat::Probe>(memcg, nr as u32);
    }
    0
}

/// Return value: `int` (0, -ENOMEM, -EINTR), slot 3 after the three arguments.
#[fexit(function = "try_charge_memcg")]
pub fn fexit_try_charge(ctx: FExitContext) -> u32 {
    on_tc_exit(ctx.arg::<u64>(3) as i32);
    0
}

#[kretprobe]
pub fn kretprobe_try_charge(ctx: RetProbeContext) -> u32 {
    on_tc_exit(ctx.ret::<u64>() as i32);
    0
}

// ---- page_counter_try_charge(struct page_counter *c, unsigned long nr, struct page_counter **fail) ----

/// `fail` is a `struct page_counter **`: the verifier refuses a direct context load of a
/// pointer to a pointer ("arg2 type PTR is not a struct"), so it is read with
/// `bpf_get_func_arg` (5.17+), which returns any argument as a number.
#[fentry(function = "page_counter_try_charge")]
pub fn fentry_pc_try_charge(ctx: FEntryContext) -> u32 {
    let mut fail = 0u64;
    // SAFETY: the helper writes one u64 to a valid stack slot; a failure leaves 0.
    unsafe { bpf_get_func_arg(ctx.as_ptr(), 2, &raw mut fail) };
    on_pc_try_entry(ctx.arg(0), ctx.arg(1), fail);
    0
}

#[kprobe]
pub fn kprobe_pc_try_charge(ctx: ProbeContext) -> u32 {
    if let (Some(c), Some(nr), Some(fail)) = (ctx.arg(0), ctx.arg(1), ctx.arg(2)) {
        on_pc_try_entry(c, nr, fail);
    }
    0
}

/// Return value: `bool`, slot 3.
#[fexit(function = "page_counter_try_charge")]
pub fn fexit_pc_try_charge(ctx: FExitContext) -> u32 {
    on_pc_try_exit(ctx.arg::<u64>(3));
    0
}

#[kretprobe]
pub fn kretprobe_pc_try_charge(ctx: RetProbeContext) -> u32 {
    on_pc_try_exit(ctx.ret::<u64>());
    0
}

// ---- page_counter_{charge,uncharge,cancel}(struct page_counter *c, unsigned long nr) ----

#[fentry(function = "page_counter_charge")]
pub fn fentry_pc_charge(ctx: FEntryContext) -> u32 {
    on_pc(ctx.arg(0), ctx.arg(1), kind::PC_CHARGE);
    0
}

#[kprobe]
pub fn kprobe_pc_charge(ctx: ProbeContext) -> u32 {
    if let (Some(c), Some(nr)) = (ctx.arg(0), ctx.arg(1)) {
        on_pc(c, nr, kind::PC_CHARGE);
    }
    0
}

#[fentry(function = "page_counter_uncharge")]
pub fn fentry_pc_uncharge(ctx: FEntryContext) -> u32 {
    on_pc(ctx.arg(0), ctx.arg(1), kind::PC_UNCHARGE);
    0
}

#[kprobe]
pub fn kprobe_pc_uncharge(ctx: ProbeContext) -> u32 {
    if let (Some(c), Some(nr)) = (ctx.arg(0), ctx.arg(1)) {
        on_pc(c, nr, kind::PC_UNCHARGE);
    }
    0
}

#[fentry(function = "page_counter_cancel")]
pub fn fentry_pc_cancel(ctx: FEntryContext) -> u32 {
    on_pc(ctx.arg(0), ctx.arg(1), kind::PC_CANCEL);
    0
}

#[kprobe]
pub fn kprobe_pc_cancel(ctx: ProbeContext) -> u32 {
    if let (Some(c), Some(nr)) = (ctx.arg(0), ctx.arg(1)) {
        on_pc(c, nr, kind::PC_CANCEL);
    }
    0
}

// ---- (__)refill_stock(struct mem_cgroup *memcg, unsigned int nr_pages) ----

#[fentry(function = "refill_stock")]
pub fn fentry_refill_stock(ctx: FEntryContext) -> u32 {
    on_refill(ctx.arg(0), ctx.arg::<u64>(1) as u32);
    0
}

#[kprobe]
pub fn kprobe_refill_stock(ctx: ProbeContext) -> u32 {
    if let (Some(memcg), Some(nr)) = (ctx.arg(0), ctx.arg::<u64>(1)) {
        on_refill(memcg, nr as u32);
    }
    0
}

// ---- drain_stock(struct memcg_stock_pcp *stock) (up to 6.15) ----
// ---- drain_stock(struct memcg_stock_pcp *stock, int i) (6.16+, slot i) ----
// The kprobe reads the slot index in both cases (it is ignored for the single-slot layout); an
// `int` is the low 32 bits of its register.

#[fentry(function = "drain_stock")]
pub fn fentry_drain_stock(ctx: FEntryContext) -> u32 {
    on_drain(ctx.arg(0), 0);
    0
}

#[fentry(function = "drain_stock")]
pub fn fentry_drain_stock_slot(ctx: FEntryContext) -> u32 {
    on_drain(ctx.arg(0), ctx.arg::<u64>(1) as u32);
    0
}

#[kprobe]
pub fn kprobe_drain_stock(ctx: ProbeContext) -> u32 {
    if let (Some(stock), Some(slot)) = (ctx.arg(0), ctx.arg::<u64>(1)) {
        on_drain(stock, slot as u32);
    }
    0
}

// ---- refill_obj_stock(struct obj_cgroup *objcg, unsigned int nr_bytes, bool allow_uncharge) ----

#[fentry(function = "refill_obj_stock")]
pub fn fentry_refill_obj_stock(ctx: FEntryContext) -> u32 {
    on_obj_refill(ctx.arg(0), ctx.arg::<u64>(1) as u32);
    0
}

#[kprobe]
pub fn kprobe_refill_obj_stock(ctx: ProbeContext) -> u32 {
    if let (Some(objcg), Some(nr)) = (ctx.arg(0), ctx.arg::<u64>(1)) {
        on_obj_refill(objcg, nr as u32);
    }
    0
}

// ---- drain_obj_stock(struct memcg_stock_pcp *stock) (6.16+: struct obj_stock_pcp *) ----

#[fentry(function = "drain_obj_stock")]
pub fn fentry_drain_obj_stock(ctx: FEntryContext) -> u32 {
    on_obj_drain(ctx.arg(0));
    0
}

#[kprobe]
pub fn kprobe_drain_obj_stock(ctx: ProbeContext) -> u32 {
    if let Some(stock) = ctx.arg(0) {
        on_obj_drain(stock);
    }
    0
}

// ---- drain_local_memcg_stock(struct work_struct *dummy) (6.16+) ----

#[fentry(function = "drain_local_memcg_stock")]
pub fn fentry_drain_local(ctx: FEntryContext) -> u32 {
    on_drain_local(ctx.arg(0));
    0
}

#[kprobe]
pub fn kprobe_drain_local(ctx: ProbeContext) -> u32 {
    if let Some(work) = ctx.arg(0) {
        on_drain_local(work);
    }
    0
}

#[fexit(function = "drain_local_memcg_stock")]
pub fn fexit_drain_local(_ctx: FExitContext) -> u32 {
    on_drain_local_ret();
    0
}

#[kretprobe]
pub fn kretprobe_drain_local(_ctx: RetProbeContext) -> u32 {
    on_drain_local_ret();
    0
}

// ---- cgroup_file_notify(struct cgroup_file *cfile) ----
// `__memcg_memory_event` is inlined on every kernel here; its first step after raising
// `memory_events_local[event]` is `cgroup_file_notify(&memcg->events_local_file)` (swap events:
// `&memcg->swap_events_file`). Most notifications are other controllers' files: a pointer that
// does not lead back to a memcg is not an event.

#[fentry(function = "cgroup_file_notify")]
pub fn fentry_file_notify(ctx: FEntryContext) -> u32 {
    on_file_notify(ctx.arg(0));
    0
}

#[kprobe]
pub fn kprobe_file_notify(ctx: ProbeContext) -> u32 {
    if let Some(cfile) = ctx.arg(0) {
        on_file_notify(cfile);
    }
    0
}

fn on_file_notify(cfile: u64) {
    let n = ccfg!(nr_memory_events);
    if n == 0 {
        return;
    }
    let local = ccfg!(memcg_events_local_file);
    let swap = ccfg!(memcg_swap_events_file);
    let memcg = if cfile > local && is_memcg(cfile - local) {
        cfile - local
    } else if swap != ChargeConfig::ABSENT && cfile > swap && is_memcg(cfile - swap) {
        cfile - swap
    } else {
        return;
    };
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
    let last = match MEMCG_EVENTS.get_ptr_mut(&id) {
        Some(p) => p,
        None => {
            if MEMCG_EVENTS.insert(&id, &MemEvents::default(), 0).is_err() {
                cbump(ccounter::MAP_FULL);
                return;
            }
            let Some(p) = MEMCG_EVENTS.get_ptr_mut(&id) else {
                cbump(ccounter::MAP_FULL);
                return;
            };
            p
        }
    };
    let base = memcg + ccfg!(memcg_events_local);
    for i in 0..runtime::MAX_MEMORY_EVENTS {
        if i >= n {
            break;
        }
        let Ok(now) = read_u64(base, 8 * u64::from(i)) else {
            cbump(ccounter::READ_FAILED);
            return;
        };
        // SAFETY: a value of an LRU hash map. Two CPUs notifying for one cgroup at once can
        // both read the old value before either writes, and then both record the increment
        // (rare; memory events of one cgroup are seldom simultaneous).
        unsafe {
            if let Some(slot) = (*last).v.get_mut(i as usize)
                && now > *slot
            {
                let inc = now - *slot;
                *slot = now;
                if !add(id, kind::MEMORY_EVENT, i, inc, inc) {
                    cbump(ccounter::MAP_FULL);
                }
            }
        }
    }
    cbump(ccounter::RECORDED);
}

// ---- drain_all_stock(struct mem_cgroup *root_memcg) ----

#[fentry(function = "drain_all_stock")]
pub fn fentry_drain_all_stock(ctx: FEntryContext) -> u32 {
    on_memcg_event(ctx.arg(0), kind::DRAIN_ALL, 0);
    0
}

/// Also attached to the `.part.N` clone, whose first argument is checked to be a memcg.
#[kprobe]
pub fn kprobe_drain_all_stock(ctx: ProbeContext) -> u32 {
    if let Some(memcg) = ctx.arg(0) {
        if !is_memcg(memcg) {
            cbump(ccounter::SEEN);
            cbump(ccounter::NOT_MEMCG);
            return 0;
        }
        on_memcg_event(memcg, kind::DRAIN_ALL, 0);
    }
    0
}

// ---- vmscan: mm_vmscan_memcg_reclaim_begin(int order, gfp_t gfp) / _end(unsigned long nr) ----

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn tp_btf_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    on_reclaim(kind::RECLAIM, 0);
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn tp_btf_reclaim_end(ctx: BtfTracePointContext) -> i32 {
    on_reclaim(kind::RECLAIMED, ctx.arg::<u64>(0));
    0
}
