//! The charge path: `try_charge_memcg`, the `page_counter_*` functions, the per-CPU stock
//! (`refill_stock` / `__refill_stock`, `drain_stock`, `drain_all_stock`) and memcg reclaim.
//!
//! Every hook body is written once (`on_*`); the fentry/fexit/kprobe/kretprobe/tp_btf entry
//! points only adapt their arguments. Aggregates go into the traced cgroup's dense per-CPU block
//! `CHARGE_DENSE` (by kind and counter: no hash lookup on the hot path), or for any other cgroup
//! into the per-CPU hash `CHARGE_AGG` keyed by (cgroup id, kind, counter); see
//! `probes_common::charge` for what each kind counts.
//!
//! Two facts need a call's entry and its exit together: whether a `try_charge_memcg` call was
//! served from the stock (it returned 0 without charging the memory page_counter) and whether
//! a `page_counter_try_charge` succeeded. Entries push a frame on a small per-task stack
//! (`CHARGE_TASKS`, keyed by thread; an interrupt that charges while its task is inside a
//! charge nests on the same stack and pops before the task resumes); exits pop it. The exit
//! bodies read only the frame and the return value, so fexit and kretprobe (which has no
//! arguments) share them. Frames are pushed only once userspace has set the runtime bit saying
//! the exit hook is attached, so a missing exit cannot fill the stack.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_func_arg, bpf_get_smp_processor_id,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use probes_common::charge::{
    CHARGE_AGG_ENTRIES, CHARGE_TASK_ENTRIES, ChargeConfig, ChargeDense, ChargeKey, ChargeValue,
    MAX_CHARGE_NESTING, MEMCG_EVENTS_ENTRIES, MemEvents, ccounter, counter, dense_index, kind,
    runtime,
};

pub(crate) use crate::stat::read_u64;
use crate::{
    maps::CONFIG,
    stat::{Probe, Reader, css_cgroup_id, memcg_id, wanted},
};

mod entry;

/// Kernel layout for the charge and OOM probes, overridden by userspace before load.
#[unsafe(no_mangle)]
pub static CHARGE_CONFIG: ChargeConfig = ChargeConfig::ZERO;

/// Per-CPU aggregates of the charge path.
#[map(name = "CHARGE_AGG")]
pub static CHARGE_AGG: PerCpuHashMap<ChargeKey, ChargeValue> =
    PerCpuHashMap::with_max_entries(CHARGE_AGG_ENTRIES, 0);

/// The traced cgroup's aggregates, per CPU (`probes_common::charge::MAP_CHARGE_DENSE`).
#[map(name = "CHARGE_DENSE")]
static CHARGE_DENSE: PerCpuArray<ChargeDense> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU activity and loss counters (`probes_common::charge::ccounter`).
#[map(name = "CHARGE_COUNTERS")]
pub static CHARGE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ccounter::COUNT, 0);

/// One word of `runtime` bits, written by userspace after attaching.
#[map(name = "CHARGE_RUNTIME")]
pub static CHARGE_RUNTIME: Array<u32> = Array::with_max_entries(1, 0);

/// The `memory_events_local[]` values of each cgroup as last seen (zeros for a cgroup the map
/// does not know: it was created after the tracer started, or userspace seeds it).
#[map(name = "MEMCG_EVENTS")]
static MEMCG_EVENTS: LruHashMap<u64, MemEvents> =
    LruHashMap::with_max_entries(MEMCG_EVENTS_ENTRIES, 0);

/// 1 on a CPU while its `drain_local_memcg_stock` runs (6.16+): the entry hook has recorded
/// every slot it will drain, so `drain_stock` calls inside it (where not inlined) are skipped.
#[map(name = "CHARGE_DRAIN_LOCAL")]
static DRAIN_LOCAL: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per-task frames of calls in progress.
#[map(name = "CHARGE_TASKS")]
static CHARGE_TASKS: LruHashMap<u64, TaskFrames> =
    LruHashMap::with_max_entries(CHARGE_TASK_ENTRIES, 0);

const NEST: usize = MAX_CHARGE_NESTING as usize;

/// A `try_charge_memcg` call in progress.
#[derive(Clone, Copy)]
#[repr(C)]
struct TcFrame {
    memcg: u64,
    /// The memcg's cgroup id as the entry resolved it (the caller holds the memcg for the
    /// whole call, so the exit needs not resolve it again).
    id: u64,
    /// The entry's verdict: [`WANTED`], [`FILTERED`] or [`UNREADABLE`].
    verdict: u32,
    nr_pages: u32,
    /// Pages charged to `memcg->memory` inside this call.
    charged: u32,
    /// Number of those charges.
    charges: u32,
    /// Failed page_counter attempts (memory, or v1 memsw) of `memcg` inside this call.
    fails: u32,
}

/// A `page_counter_try_charge` call in progress.
#[derive(Clone, Copy)]
#[repr(C)]
struct PcFrame {
    counter: u64,
    nr_pages: u64,
    fail: u64,
}

/// The per-task stacks.
#[derive(Clone, Copy)]
#[repr(C)]
struct TaskFrames {
    tc_depth: u32,
    pc_depth: u32,
    tc: [TcFrame; NEST],
    pc: [PcFrame; NEST],
}

/// [`TcFrame::verdict`] values.
const WANTED: u32 = 0;
const FILTERED: u32 = 1;
const UNREADABLE: u32 = 2;

const EMPTY: TaskFrames = TaskFrames {
    tc_depth: 0,
    pc_depth: 0,
    tc: [TcFrame {
        memcg: 0,
        id: 0,
        verdict: WANTED,
        nr_pages: 0,
        charged: 0,
        charges: 0,
        fails: 0,
    }; NEST],
    pc: [PcFrame {
        counter: 0,
        nr_pages: 0,
        fail: 0,
    }; NEST],
};

/// One field of the stat configuration (`ProbeConfig`).
macro_rules! scfg {
    ($f:ident) => {
        // SAFETY: CONFIG is a plain static of integers.
        unsafe { core::ptr::read_volatile(&CONFIG.$f) }
    };
}

/// One field of the charge configuration.
macro_rules! ccfg {
    ($f:ident) => {
        // SAFETY: CHARGE_CONFIG is a plain static of integers.
        unsafe { core::ptr::read_volatile(&crate::charge::CHARGE_CONFIG.$f) }
    };
    ($f:ident[$i:expr]) => {
        // SAFETY: as above; the index is a constant within the array.
        unsafe { core::ptr::read_volatile(&crate::charge::CHARGE_CONFIG.$f[$i]) }
    };
}
pub(crate) use ccfg;

/// Adds one to a counter slot of this CPU.
#[inline(always)]
pub(crate) fn cbump(slot: u32) {
    if let Some(ptr) = CHARGE_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: this CPU's element of a per-CPU array.
        unsafe { *ptr += 1 };
    }
}

/// Reads a kernel `u32` at `base + off`.
#[inline(always)]
pub(crate) fn read_u32(base: u64, off: u64) -> Result<u32, ()> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + off) as *const u32) }.map_err(|_| ())
}

/// Reads a `u8` at `base + off`.
fn read_u8(base: u64, off: u64) -> Result<u8, ()> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + off) as *const u8) }.map_err(|_| ())
}

/// The cgroup id of a memcg if it is wanted: `Ok(Some(id))`, `Ok(None)` if filtered out,
/// `Err` if a read failed (or read a null pointer or id). `R` reads the memcg: plain loads
/// where it is a BTF-typed argument (fentry), `bpf_probe_read_kernel` otherwise.
#[inline(always)]
pub(crate) fn memcg_wanted<R: Reader>(memcg: u64) -> Result<Option<u64>, ()> {
    let id = memcg_id::<R>(memcg).ok_or(())?;
    Ok(wanted(id, Some(memcg + scfg!(memcg_css))).then_some(id))
}

/// True if `memcg` really is a memory cgroup: its css's cgroup lists that very css as its
/// memory-controller state (`memcg->css.cgroup->subsys[memory_cgrp_id] == &memcg->css`). A
/// pointer that is not a memcg fails this with overwhelming probability.
#[inline(always)]
fn is_memcg(memcg: u64) -> bool {
    let css = memcg + scfg!(memcg_css);
    let Ok(cgroup) = read_u64(css, scfg!(css_cgroup)) else {
        return false;
    };
    if cgroup == 0 {
        return false;
    }
    let slot = ccfg!(cgroup_subsys) + ccfg!(memory_cgrp_id) * 8;
    matches!(read_u64(cgroup, slot), Ok(p) if p == css)
}

/// The memcg and counter kind of a `struct page_counter *`, trying each member offset.
#[inline(always)]
fn resolve_counter(c: u64) -> Option<(u64, u32)> {
    macro_rules! try_kind {
        ($k:expr) => {
            let off = ccfg!(counter_off[$k as usize]);
            if off != ChargeConfig::ABSENT && c > off && is_memcg(c - off) {
                return Some((c - off, $k));
            }
        };
    }
    try_kind!(counter::MEMORY);
    try_kind!(counter::SWAP);
    try_kind!(counter::KMEM);
    try_kind!(counter::TCPMEM);
    None
}

/// Adds to this CPU's aggregate of (cgroup, kind, counter). Returns false if the map is full.
#[inline(always)]
pub(crate) fn add(cgroup_id: u64, k: u32, ctr: u32, pages: u64, events: u64) -> bool {
    // The traced cgroup's events (the hot ones) go to its dense per-CPU block.
    if cgroup_id == scfg!(target_cgroup_id)
        && let Some(i) = dense_index(k, ctr)
        && let Some(block) = CHARGE_DENSE.get_ptr_mut(0)
        // SAFETY: this CPU's value of a per-CPU array; the index is checked by `get_mut`.
        && let Some(v) = unsafe { (*block).v.get_mut(i as usize) }
    {
        // Interleaving with a nested charge on this CPU: as below.
        v.pages += pages;
        v.events += events;
        return true;
    }
    let key = ChargeKey {
        cgroup_id,
        kind: k,
        counter: ctr,
    };
    match CHARGE_AGG.get_ptr_mut(&key) {
        Some(ptr) => {
            // SAFETY: this CPU's value of a per-CPU hash map. Charge hooks can be interrupted
            // on their CPU by another charge (an interrupt); the two read-modify-writes can
            // then interleave. Such nesting is rare and counted by userspace as a bound.
            unsafe {
                (*ptr).pages += pages;
                (*ptr).events += events;
            }
            true
        }
        None => CHARGE_AGG
            .insert(&key, &ChargeValue { pages, events }, 0)
            .is_ok(),
    }
}

/// Records one event's aggregate and its outcome counter.
#[inline(always)]
pub(crate) fn record(cgroup_id: u64, k: u32, ctr: u32, pages: u64) {
    if add(cgroup_id, k, ctr, pages, 1) {
        cbump(ccounter::RECORDED);
    } else {
        cbump(ccounter::MAP_FULL);
    }
}

/// The key of this thread's frames (the idle tasks of all CPUs share pid 0: keyed by CPU).
#[inline(always)]
fn task_key() -> u64 {
    let id = bpf_get_current_pid_tgid();
    if id as u32 == 0 {
        // SAFETY: no preconditions.
        (1 << 63) | u64::from(unsafe { bpf_get_smp_processor_id() })
    } else {
        id
    }
}

/// This thread's frames, created empty if absent.
#[inline(always)]
fn frames(create: bool) -> Option<*mut TaskFrames> {
    let key = task_key();
    if let Some(p) = CHARGE_TASKS.get_ptr_mut(&key) {
        return Some(p);
    }
    if !create {
        return None;
    }
    CHARGE_TASKS.insert(&key, &EMPTY, 0).ok()?;
    CHARGE_TASKS.get_ptr_mut(&key)
}

/// The slot below `depth` (`depth - 1`), made opaque to the compiler: LLVM would otherwise
/// fold the `- 1` into the address (`base + depth * size - size`), a negative variable offset
/// the 6.1 verifier rejects ("R0 min value is outside of the allowed memory range").
#[inline(always)]
fn below(depth: usize) -> usize {
    let i = depth.wrapping_sub(1);
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&i) }
}

#[inline(always)]
fn runtime_has(bit: u32) -> bool {
    CHARGE_RUNTIME.get(0).is_some_and(|v| *v & bit != 0)
}

/// The innermost `try_charge_memcg` frame of this thread, if any.
#[inline(always)]
fn top_tc() -> Option<*mut TcFrame> {
    let f = frames(false)?;
    // SAFETY: a value of this thread's entry in an LRU hash map; only this thread (and its
    // interrupts, which nest) touch it.
    let d = unsafe { (*f).tc_depth } as usize;
    if d == 0 || d > NEST {
        return None;
    }
    // SAFETY: as above; the index is checked.
    unsafe { (*f).tc.get_mut(below(d)).map(|t| t as *mut TcFrame) }
}

/// The memcg that charging or reclaim on this thread is for: the innermost
/// `try_charge_memcg`'s, else the task's own (`current->cgroups->subsys[memory_cgrp_id]`).
#[inline(always)]
pub(crate) fn current_memcg() -> Result<u64, ()> {
    if let Some(t) = top_tc() {
        // SAFETY: see top_tc.
        return Ok(unsafe { (*t).memcg });
    }
    // SAFETY: no preconditions.
    let task = unsafe { bpf_get_current_task() };
    task_memcg(task)
}

/// A task's memcg (`task->cgroups->subsys[memory_cgrp_id]`, then `container_of` the css).
#[inline(always)]
pub(crate) fn task_memcg(task: u64) -> Result<u64, ()> {
    let cset = read_u64(task, ccfg!(task_cgroups))?;
    let css = read_u64(cset, ccfg!(css_set_subsys) + ccfg!(memory_cgrp_id) * 8)?;
    if css == 0 {
        return Err(());
    }
    Ok(css - scfg!(memcg_css))
}

// ---- bodies ----

/// `try_charge_memcg` entry; `R` reads the memcg (see [`memcg_wanted`]).
#[inline(always)]
fn on_tc_entry<R: Reader>(memcg: u64, nr_pages: u32) {
    cbump(ccounter::SEEN);
    let (id, verdict) = match memcg_wanted::<R>(memcg) {
        Ok(Some(id)) => {
            record(id, kind::TC_CALL, counter::NONE, u64::from(nr_pages));
            (id, WANTED)
        }
        Ok(None) => {
            cbump(ccounter::FILTERED);
            (0, FILTERED)
        }
        Err(()) => {
            cbump(ccounter::READ_FAILED);
            (0, UNREADABLE)
        }
    };
    if !runtime_has(runtime::TC_EXIT) {
        return;
    }
    let Some(f) = frames(true) else {
        cbump(ccounter::FRAME_LOST);
        return;
    };
    // SAFETY: see top_tc.
    unsafe {
        let d = (*f).tc_depth as usize;
        match (*f).tc.get_mut(d) {
            Some(slot) => {
                *slot = TcFrame {
                    memcg,
                    id,
                    verdict,
                    nr_pages,
                    charged: 0,
                    charges: 0,
                    fails: 0,
                };
                (*f).tc_depth = d as u32 + 1;
            }
            None => {
                // Deeper than NEST: count the level so the exits stay paired.
                (*f).tc_depth = d as u32 + 1;
                cbump(ccounter::FRAME_LOST);
            }
        }
    }
}

fn on_tc_exit(ret: i32) {
    let Some(f) = frames(false) else {
        cbump(ccounter::FRAME_MISSING);
        return;
    };
    // SAFETY: see top_tc.
    let frame = unsafe {
        let d = (*f).tc_depth as usize;
        if d == 0 {
            cbump(ccounter::FRAME_MISSING);
            return;
        }
        (*f).tc_depth = d as u32 - 1;
        match (*f).tc.get(below(d)) {
            Some(fr) => *fr,
            // The entry was past NEST: nothing to interpret.
            None => return,
        }
    };
    cbump(ccounter::SEEN);
    match frame.verdict {
        WANTED => {}
        FILTERED => {
            cbump(ccounter::FILTERED);
            return;
        }
        _ => {
            cbump(ccounter::READ_FAILED);
            return;
        }
    }
    let id = frame.id;
    let nr = u64::from(frame.nr_pages);
    // Every failed attempt but a final one was followed by another attempt.
    let retries = if ret == 0 {
        frame.fails
    } else {
        frame.fails.saturating_sub(1)
    };
    if retries != 0 && !add(id, kind::TC_RETRY, counter::NONE, u64::from(retries), 1) {
        cbump(ccounter::MAP_FULL);
    }
    if ret != 0 {
        record(id, kind::TC_FAIL, counter::NONE, nr);
    } else if frame.charges == 0 {
        record(id, kind::TC_OK_STOCK, counter::NONE, nr);
    } else {
        record(id, kind::TC_OK_COUNTER, counter::NONE, nr);
        if !add(
            id,
            kind::TC_CHARGED,
            counter::MEMORY,
            u64::from(frame.charged),
            u64::from(frame.charges),
        ) {
            cbump(ccounter::MAP_FULL);
        }
    }
}

/// Notes a memory page_counter charge of `memcg` inside the innermost try_charge of memcg.
#[inline(always)]
fn note_charged(memcg: u64, nr_pages: u64) {
    if let Some(t) = top_tc() {
        // SAFETY: see top_tc.
        unsafe {
            if (*t).memcg == memcg {
                (*t).charged += nr_pages as u32;
                (*t).charges += 1;
            }
        }
    }
}

/// Notes a failed memory (or v1 memsw) attempt of `memcg` inside its innermost try_charge.
/// One attempt fails at most one of the two counters (memsw first, memory only after it).
#[inline(always)]
fn note_failed(memcg: u64) {
    if let Some(t) = top_tc() {
        // SAFETY: see top_tc.
        unsafe {
            if (*t).memcg == memcg {
                (*t).fails += 1;
            }
        }
    }
}

fn on_pc_try_entry(c: u64, nr_pages: u64, fail: u64) {
    if !runtime_has(runtime::PC_EXIT) {
        return;
    }
    let Some(f) = frames(true) else {
        cbump(ccounter::FRAME_LOST);
        return;
    };
    // SAFETY: see top_tc.
    unsafe {
        let d = (*f).pc_depth as usize;
        if let Some(slot) = (*f).pc.get_mut(d) {
            *slot = PcFrame {
                counter: c,
                nr_pages,
                fail,
            };
        } else {
            cbump(ccounter::FRAME_LOST);
        }
        (*f).pc_depth = d as u32 + 1;
    }
}

fn on_pc_try_exit(ret: u64) {
    let Some(f) = frames(false) else {
        cbump(ccounter::FRAME_MISSING);
        return;
    };
    // SAFETY: see top_tc.
    let frame = unsafe {
        let d = (*f).pc_depth as usize;
        if d == 0 {
            cbump(ccounter::FRAME_MISSING);
            return;
        }
        (*f).pc_depth = d as u32 - 1;
        match (*f).pc.get(below(d)) {
            Some(fr) => *fr,
            None => return,
        }
    };
    cbump(ccounter::SEEN);
    let Some((memcg, ctr)) = resolve_counter(frame.counter) else {
        cbump(ccounter::NOT_MEMCG);
        return;
    };
    // `bool` comes back in the low byte of the return register; the rest is undefined.
    let ok = ret & 0xff != 0;
    if ok && ctr == counter::MEMORY {
        note_charged(memcg, frame.nr_pages);
    }
    if !ok && (ctr == counter::MEMORY || ctr == counter::SWAP) {
        note_failed(memcg);
    }
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
    if ok {
        record(id, kind::PC_TRY_OK, ctr, frame.nr_pages);
        return;
    }
    record(id, kind::PC_TRY_FAIL, ctr, frame.nr_pages);
    // Which level was at its limit: `*fail`, written by the failed call.
    if let Ok(limited) = read_u64(frame.fail, 0)
        && let Some((lm, lctr)) = resolve_counter(limited)
        && let Ok(lid) = css_cgroup_id(lm + scfg!(memcg_css))
        && !add(lid, kind::PC_LIMIT_HIT, lctr, frame.nr_pages, 1)
    {
        cbump(ccounter::MAP_FULL);
    }
}

/// `page_counter_charge` / `_uncharge` / `_cancel`: one record of `k`.
fn on_pc(c: u64, nr_pages: u64, k: u32) {
    cbump(ccounter::SEEN);
    let Some((memcg, ctr)) = resolve_counter(c) else {
        cbump(ccounter::NOT_MEMCG);
        return;
    };
    if k == kind::PC_CHARGE && ctr == counter::MEMORY {
        note_charged(memcg, nr_pages);
    }
    match memcg_wanted::<Probe>(memcg) {
        Ok(Some(id)) => record(id, k, ctr, nr_pages),
        Ok(None) => cbump(ccounter::FILTERED),
        Err(()) => cbump(ccounter::READ_FAILED),
    }
}

fn on_refill(memcg: u64, nr_pages: u32) {
    cbump(ccounter::SEEN);
    let in_charge = top_tc().is_some_and(|t| {
        // SAFETY: see top_tc.
        unsafe { (*t).memcg == memcg }
    });
    let k = if in_charge {
        kind::REFILL_BATCH
    } else {
        kind::REFILL_RETURN
    };
    match memcg_wanted::<Probe>(memcg) {
        Ok(Some(id)) => record(id, k, counter::NONE, u64::from(nr_pages)),
        Ok(None) => cbump(ccounter::FILTERED),
        Err(()) => cbump(ccounter::READ_FAILED),
    }
}

/// `drain_stock(stock)` (single-slot stock) or `drain_stock(stock, slot)` (6.16+): what the
/// drained slot holds, read on entry.
fn on_drain(stock: u64, slot: u32) {
    // SAFETY: this CPU's value of a per-CPU array.
    if DRAIN_LOCAL.get(0).is_some_and(|v| *v == 1) {
        return;
    }
    let slots = ccfg!(stock_slots);
    if slots != 0 && slot >= slots {
        // Not a slot of this layout: the hook's arguments are not what the plan assumed.
        cbump(ccounter::SEEN);
        cbump(ccounter::READ_FAILED);
        return;
    }
    drain_slot(stock, slot);
}

/// Records the drain of one stock slot (slot 0 of a single-slot stock) as it is now.
#[inline(always)]
fn drain_slot(stock: u64, slot: u32) {
    let (cached_off, nr_off) = if ccfg!(stock_slots) == 0 {
        (ccfg!(stock_cached), ccfg!(stock_nr_pages))
    } else {
        (
            ccfg!(stock_cached) + 8 * u64::from(slot),
            ccfg!(stock_nr_pages) + u64::from(ccfg!(stock_nr_size)) * u64::from(slot),
        )
    };
    // A drain of an empty stock slot (nothing cached) is not an event.
    let Ok(memcg) = read_u64(stock, cached_off) else {
        cbump(ccounter::SEEN);
        cbump(ccounter::READ_FAILED);
        return;
    };
    if memcg == 0 {
        return;
    }
    cbump(ccounter::SEEN);
    let nr = match ccfg!(stock_nr_size) {
        1 => read_u8(stock, nr_off).map(u32::from),
        4 => read_u32(stock, nr_off),
        _ => Err(()),
    };
    let Ok(nr) = nr else {
        cbump(ccounter::READ_FAILED);
        return;
    };
    match memcg_wanted::<Probe>(memcg) {
        Ok(Some(id)) => record(id, kind::DRAIN, counter::NONE, u64::from(nr)),
        Ok(None) => cbump(ccounter::FILTERED),
        Err(()) => cbump(ccounter::READ_FAILED),
    }
}

/// `drain_local_memcg_stock(&stock->work)` (6.16+) drains every slot of this CPU's stock
/// (`drain_stock_fully`, into which `drain_stock` may be inlined): record each slot as it is
/// on entry, and mark the CPU so that out-of-line `drain_stock` calls inside are not counted
/// twice. Only with the exit hook attached, which clears the mark.
fn on_drain_local(work: u64) {
    if !runtime_has(runtime::DL_EXIT) {
        return;
    }
    let Some(mark) = DRAIN_LOCAL.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value of a per-CPU array; the drain work runs bound to this CPU.
    unsafe { *mark = 1 };
    let stock = work.wrapping_sub(ccfg!(stock_work));
    let slots = ccfg!(stock_slots);
    for i in 0..runtime::MAX_STOCK_SLOTS {
        if i >= slots {
            break;
        }
        drain_slot(stock, i);
    }
}

fn on_drain_local_ret() {
    if let Some(mark) = DRAIN_LOCAL.get_ptr_mut(0) {
        // SAFETY: as above.
        unsafe { *mark = 0 };
    }
}

/// `refill_obj_stock(objcg, nr_bytes, allow_uncharge)`.
fn on_obj_refill(objcg: u64, nr_bytes: u32) {
    cbump(ccounter::SEEN);
    let Ok(memcg) = read_u64(objcg, ccfg!(objcg_memcg)) else {
        cbump(ccounter::READ_FAILED);
        return;
    };
    match memcg_wanted::<Probe>(memcg) {
        Ok(Some(id)) => record(id, kind::OBJ_REFILL, counter::NONE, u64::from(nr_bytes)),
        Ok(None) => cbump(ccounter::FILTERED),
        Err(()) => cbump(ccounter::READ_FAILED),
    }
}

/// `drain_obj_stock(stock)`: what the stock holds for its cached objcg, read on entry.
fn on_obj_drain(stock: u64) {
    let Ok(objcg) = read_u64(stock, ccfg!(obj_stock_objcg)) else {
        cbump(ccounter::SEEN);
        cbump(ccounter::READ_FAILED);
        return;
    };
    // Draining a stock that caches no objcg does nothing: not an event.
    if objcg == 0 {
        return;
    }
    cbump(ccounter::SEEN);
    let (Ok(nr), Ok(memcg)) = (
        read_u32(stock, ccfg!(obj_stock_nr_bytes)),
        read_u64(objcg, ccfg!(objcg_memcg)),
    ) else {
        cbump(ccounter::READ_FAILED);
        return;
    };
    match memcg_wanted::<Probe>(memcg) {
        Ok(Some(id)) => record(id, kind::OBJ_DRAIN, counter::NONE, u64::from(nr)),
        Ok(None) => cbump(ccounter::FILTERED),
        Err(()) => cbump(ccounter::READ_FAILED),
    }
}

/// An event of the memcg `memcg` with `pages`.
fn on_memcg_event(memcg: u64, k: u32, pages: u64) {
    cbump(ccounter::SEEN);
    match memcg_wanted::<Probe>(memcg) {
        Ok(Some(id)) => record(id, k, counter::NONE, pages),
        Ok(None) => cbump(ccounter::FILTERED),
        Err(()) => cbump(ccounter::READ_FAILED),
    }
}

fn on_reclaim(k: u32, pages: u64) {
    match current_memcg() {
        Ok(memcg) => on_memcg_event(memcg, k, pages),
        Err(()) => {
            cbump(ccounter::SEEN);
            cbump(ccounter::READ_FAILED);
        }
    }
}
