//! The stat path: `mod_memcg_state` / `mod_memcg_lruvec_state` (tracepoints and tp_btf since
//! 6.13) and the functions behind them (`__mod_memcg_state`, `__mod_memcg_lruvec_state`,
//! `mod_memcg_state`, `mod_memcg_lruvec_state`) for fentry and kprobe.
//!
//! One body, `on_memcg_state`, takes the memcg, the item and the value; the entry points below
//! only adapt their arguments to it. It does every job on the hook: the statistic's aggregate
//! and, where the charge path cannot be probed, the page_counter reading of `infer` (one
//! program per hook: a second program on the same tracepoint would cost its own dispatch and
//! resolve the cgroup again).
//!
//! The hot path is kept short (issue 11, measured with `cargo xtask bench`): tp_btf arguments
//! are read with plain BTF-checked loads; the target and the cgroups userspace gave a slot
//! before attaching (`trace --descendants` of an existing subtree) keep their aggregates in
//! a dense per-CPU block indexed by item, found through a per-CPU cache of the last cgroup
//! (no hashing while one cgroup's events run); and recorded events are counted by the
//! aggregates themselves rather than by separate counters.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, fentry, kprobe, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use probes_common::{MAX_CGROUP_DEPTH, STAT_DENSE_ITEMS, StatKey, StatValue, counter, flags, hook};

use crate::maps::{SLOT_CACHE, SLOT_IDS, SLOT_OF, STAT_AGG, STAT_SLOTS, VERDICT, bump};

/// Reads a kernel pointer-sized value at `base + off`.
#[inline(always)]
pub(crate) fn read_u64(base: u64, off: u64) -> Result<u64, ()> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a fault returns an error.
    unsafe { bpf_probe_read_kernel((base + off) as *const u64) }.map_err(|_| ())
}

/// One field of the configuration (a single load from the frozen global; reading the whole
/// struct would copy it to the stack on every event).
macro_rules! cfg {
    ($f:ident) => {
        // SAFETY: CONFIG is a plain static of integers.
        unsafe { core::ptr::read_volatile(&crate::maps::CONFIG.$f) }
    };
}

/// `memcg->css.cgroup->kn->id`, the cgroup id the tracepoints report and cgroupfs shows as the
/// directory's inode number. For pointers of unknown provenance (kprobe arguments, ancestor
/// walks): every step through `bpf_probe_read_kernel`.
#[inline(always)]
pub(crate) fn css_cgroup_id(css: u64) -> Result<u64, ()> {
    let cgroup = read_u64(css, cfg!(css_cgroup))?;
    let kn = read_u64(cgroup, cfg!(cgroup_kn))?;
    read_u64(kn, cfg!(kn_id))
}

/// Decides whether `id` (whose css is `css`, when known) is inside the target subtree. The
/// first event of a cgroup walks its ancestors; the verdict is remembered in `VERDICT`.
#[inline(always)]
pub(crate) fn wanted(id: u64, css: Option<u64>) -> bool {
    let flags = cfg!(flags);
    let target = cfg!(target_cgroup_id);
    if flags & flags::FILTER == 0 || id == target {
        return true;
    }
    if flags & flags::DESCENDANTS == 0 {
        return false;
    }
    // SAFETY: the value is a plain u8 read by copy.
    if let Some(v) = unsafe { VERDICT.get(&id) } {
        return *v != 0;
    }
    // Without a css pointer (classic tracepoint) the ancestry cannot be walked: the tracepoint
    // fallback only supports descendants that userspace pre-seeded into VERDICT.
    let Some(mut cur) = css else { return false };
    let mut verdict = 0u8;
    let mut depth = 0;
    while depth < MAX_CGROUP_DEPTH {
        let Ok(parent) = read_u64(cur, cfg!(css_parent)) else {
            break;
        };
        if parent == 0 {
            break;
        }
        match css_cgroup_id(parent) {
            Ok(pid) if pid == target => {
                verdict = 1;
                break;
            }
            Ok(_) => {}
            Err(()) => break,
        }
        cur = parent;
        depth += 1;
    }
    let _ = VERDICT.insert(&id, &verdict, 0);
    verdict != 0
}

/// How a hook's kernel pointers are read.
pub(crate) trait Reader {
    /// The `u64` at `base + off`; `Err` when the read faulted.
    fn u64_at(base: u64, off: u64) -> Result<u64, ()>;
}

/// For BTF-typed pointers (tp_btf arguments): plain loads, which the verifier checks against
/// the kernel's BTF (the offsets are constants of the frozen configuration, so it knows which
/// member is read) and turns into fault-safe loads (`BPF_PROBE_MEM`): a few nanoseconds,
/// where a `bpf_probe_read_kernel` call costs tens. A faulting load reads 0.
pub(crate) struct Direct;

impl Reader for Direct {
    #[inline(always)]
    fn u64_at(base: u64, off: u64) -> Result<u64, ()> {
        // SAFETY: `base` is a BTF-typed kernel pointer and `base + off` a member of its type of
        // this size (offsets from the running kernel's BTF); the verifier rejects the program
        // otherwise, and the kernel turns a faulting load into a 0 read.
        Ok(
            unsafe {
                core::ptr::read_volatile((base as *const u8).add(off as usize) as *const u64)
            },
        )
    }
}

/// For pointers of unknown provenance (kprobe and fentry arguments, `container_of` results):
/// `bpf_probe_read_kernel`.
pub(crate) struct Probe;

impl Reader for Probe {
    #[inline(always)]
    fn u64_at(base: u64, off: u64) -> Result<u64, ()> {
        read_u64(base, off)
    }
}

/// `memcg->css.cgroup->kn->id`; `None` when a read failed (or read a null pointer or id).
#[inline(always)]
pub(crate) fn memcg_id<R: Reader>(memcg: u64) -> Option<u64> {
    let nonzero = |v: Result<u64, ()>| v.ok().filter(|v| *v != 0);
    let cgroup = nonzero(R::u64_at(memcg, cfg!(memcg_css) + cfg!(css_cgroup)))?;
    let kn = nonzero(R::u64_at(cgroup, cfg!(cgroup_kn)))?;
    nonzero(R::u64_at(kn, cfg!(kn_id)))
}

/// Adds `val` to this CPU's aggregate of (cgroup, item, hook) in the hash map. The event count
/// in the value is the record of the event (there is no separate "recorded" counter).
#[inline(always)]
fn record(cgroup_id: u64, item: u32, which: u32, val: i64) {
    let key = StatKey {
        cgroup_id,
        item,
        hook: which,
    };
    match STAT_AGG.get_ptr_mut(&key) {
        Some(ptr) => {
            // SAFETY: this CPU's value slot of a per-CPU hash map; only this CPU writes it and
            // the stat hooks run with preemption disabled (the kernel's own per-CPU update).
            unsafe {
                (*ptr).delta += val;
                (*ptr).events += 1;
            }
        }
        None => {
            let first = StatValue {
                delta: val,
                events: 1,
            };
            if STAT_AGG.insert(&key, &first, 0).is_err() {
                bump(counter::STAT_MAP_FULL);
            }
        }
    }
}

/// The slot of cgroup `id`: 0 for the target; with `flags::SLOTS`, the one userspace gave it
/// (`SLOT_OF`), through this CPU's cache of the last cgroup resolved. `None`: no slot (the
/// hash map path).
#[inline(always)]
fn slot_of(id: u64) -> Option<u32> {
    if id == cfg!(target_cgroup_id) {
        return Some(0);
    }
    if cfg!(flags) & flags::SLOTS == 0 {
        return None;
    }
    let cache = SLOT_CACHE.get_ptr_mut(0)?;
    // SAFETY: this CPU's element of a per-CPU array. A stat event in an interrupt can run the
    // other stat program between the two stores below and leave a torn entry; the owner check
    // against `SLOT_IDS` (written before attaching, never after) rejects any such entry.
    unsafe {
        if (*cache).id == id
            && SLOT_IDS
                .get((*cache).slot)
                .is_some_and(|owner| *owner == id)
        {
            return Some((*cache).slot);
        }
    }
    // SAFETY: a plain u32 read by copy.
    let slot = *unsafe { SLOT_OF.get(&id) }?;
    // SAFETY: as above.
    unsafe {
        (*cache).id = id;
        (*cache).slot = slot;
    }
    Some(slot)
}

/// Adds `val` to this CPU's aggregate of (the cgroup of `slot`, item, hook): its dense block
/// (one inlined per-CPU array access), or the hash map for an item past its end.
#[inline(always)]
fn record_slot(slot: u32, id: u64, item: u32, which: u32, val: i64) {
    // The verifier must see the bound on the index itself. LLVM drops a check it can prove
    // from `item < STAT_DENSE_ITEMS`, and 6.1's verifier loses that bound through the
    // arithmetic ("R0 unbounded memory access"); read back volatile, the index keeps its check.
    let index = (which * STAT_DENSE_ITEMS + item) as usize;
    // SAFETY: a local read back.
    let index = unsafe { core::ptr::read_volatile(&index) };
    if item < STAT_DENSE_ITEMS
        && let Some(block) = STAT_SLOTS.get_ptr_mut(slot)
        // SAFETY: this CPU's element of a per-CPU array, as in `record`.
        && let Some(v) = unsafe { (*block).v.get_mut(index) }
    {
        v.delta += val;
        v.events += 1;
        return;
    }
    record(id, item, which, val);
}

/// The stat hooks' body for a memcg pointer (tp_btf, fentry, kprobe): records the event and,
/// when inference is on, takes the page_counter reading of the same event (one program per
/// hook does every job on it; the cgroup is resolved and filtered once).
#[inline(always)]
fn on_memcg_state<R: Reader>(memcg: u64, item: i32, val: i32, which: u32) {
    let Some(id) = memcg_id::<R>(memcg) else {
        bump(counter::STAT_READ_FAILED);
        return;
    };
    let infer = cfg!(flags) & flags::INFER != 0;
    if let Some(slot) = slot_of(id) {
        record_slot(slot, id, item as u32, which, i64::from(val));
        if infer {
            crate::infer::on_stat_event::<R>(memcg, id, Some(slot));
        }
        return;
    }
    if !wanted(id, Some(memcg + cfg!(memcg_css))) {
        bump(counter::STAT_FILTERED);
        return;
    }
    record(id, item as u32, which, i64::from(val));
    if infer {
        crate::infer::on_stat_event::<R>(memcg, id, None);
    }
}

/// The hook body when the kernel hands us the id (classic tracepoint; no memcg pointer, so
/// no inference).
#[inline(always)]
fn on_cgroup_id_state(id: u64, item: i32, val: i32, which: u32) {
    if let Some(slot) = slot_of(id) {
        record_slot(slot, id, item as u32, which, i64::from(val));
    } else if wanted(id, None) {
        record(id, item as u32, which, i64::from(val));
    } else {
        bump(counter::STAT_FILTERED);
    }
}

/// `lruvec` -> `container_of(lruvec, struct mem_cgroup_per_node, lruvec)->memcg`.
#[inline(always)]
fn lruvec_memcg(lruvec: u64) -> Result<u64, ()> {
    read_u64(lruvec - cfg!(pn_lruvec), cfg!(pn_memcg))
}

fn on_lruvec_state(lruvec: u64, item: i32, val: i32) {
    match lruvec_memcg(lruvec) {
        Ok(memcg) if memcg != 0 => {
            on_memcg_state::<Probe>(memcg, item, val, hook::LRUVEC_STATE);
        }
        _ => bump(counter::STAT_READ_FAILED),
    }
}

// ---- tp_btf: TP_PROTO(struct mem_cgroup *memcg, int item, int val) ----

#[btf_tracepoint(function = "mod_memcg_state")]
pub fn tp_btf_memcg_state(ctx: BtfTracePointContext) -> i32 {
    on_memcg_state::<Direct>(ctx.arg::<u64>(0), ctx.arg(1), ctx.arg(2), hook::MEMCG_STATE);
    0
}

#[btf_tracepoint(function = "mod_memcg_lruvec_state")]
pub fn tp_btf_lruvec_state(ctx: BtfTracePointContext) -> i32 {
    on_memcg_state::<Direct>(
        ctx.arg::<u64>(0),
        ctx.arg(1),
        ctx.arg(2),
        hook::LRUVEC_STATE,
    );
    0
}

// ---- classic tracepoint: fields id (u64 @8), item (int @16), val (int @20) ----

/// Offsets of the `memcg_rstat_stats` record, as its tracefs `format` file lists them.
const TP_ID: usize = 8;
const TP_ITEM: usize = 16;
const TP_VAL: usize = 20;

fn tp_fields(ctx: &TracePointContext) -> Option<(u64, i32, i32)> {
    // SAFETY: offsets within the fixed-size tracepoint record (checked against the format file
    // by userspace before attaching).
    unsafe {
        Some((
            ctx.read_at::<u64>(TP_ID).ok()?,
            ctx.read_at::<i32>(TP_ITEM).ok()?,
            ctx.read_at::<i32>(TP_VAL).ok()?,
        ))
    }
}

#[tracepoint]
pub fn tp_memcg_state(ctx: TracePointContext) -> u32 {
    if let Some((id, item, val)) = tp_fields(&ctx) {
        on_cgroup_id_state(id, item, val, hook::MEMCG_STATE);
    }
    0
}

#[tracepoint]
pub fn tp_lruvec_state(ctx: TracePointContext) -> u32 {
    if let Some((id, item, val)) = tp_fields(&ctx) {
        on_cgroup_id_state(id, item, val, hook::LRUVEC_STATE);
    }
    0
}

// ---- fentry: (struct mem_cgroup *memcg | struct lruvec *lruvec, int idx, int val) ----

#[fentry(function = "__mod_memcg_state")]
pub fn fentry_memcg_state(ctx: FEntryContext) -> u32 {
    on_memcg_state::<Probe>(ctx.arg::<u64>(0), ctx.arg(1), ctx.arg(2), hook::MEMCG_STATE);
    0
}

#[fentry(function = "__mod_memcg_lruvec_state")]
pub fn fentry_lruvec_state(ctx: FEntryContext) -> u32 {
    on_lruvec_state(ctx.arg::<u64>(0), ctx.arg(1), ctx.arg(2));
    0
}

// ---- kprobe: same arguments, read from registers ----

#[kprobe]
pub fn kprobe_memcg_state(ctx: ProbeContext) -> u32 {
    if let (Some(memcg), Some(item), Some(val)) =
        (ctx.arg::<u64>(0), ctx.arg::<i32>(1), ctx.arg::<i32>(2))
    {
        on_memcg_state::<Probe>(memcg, item, val, hook::MEMCG_STATE);
    }
    0
}

#[kprobe]
pub fn kprobe_lruvec_state(ctx: ProbeContext) -> u32 {
    if let (Some(lruvec), Some(item), Some(val)) =
        (ctx.arg::<u64>(0), ctx.arg::<i32>(1), ctx.arg::<i32>(2))
    {
        on_lruvec_state(lruvec, item, val);
    }
    0
}
