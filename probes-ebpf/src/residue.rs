//! The residue reader: copies a memcg subtree's page counters, statistics (aggregate and per
//! CPU), and every CPU's charge stock, object stock and lru_add batch into maps, for
//! `memcg-drift explain`.
//!
//! # Trigger
//! These are raw-tracepoint programs that are never attached. Userspace runs them on demand
//! with `BPF_PROG_TEST_RUN` (kernel 5.10+), passing its arguments as the fake tracepoint
//! arguments. A snapshot needs no event in the cgroup (an idle or dying cgroup is read as well
//! as a busy one), costs nothing between snapshots, and runs in the caller's context, so
//! `current` is the tool itself (used to find the static per-CPU area, below).
//!
//! One snapshot is a sequence of runs: `residue_frame` (phase 0: counters and aggregates of
//! every memcg, [`RES_FRAME_CHUNK`] per run, and with the first chunk every CPU's stocks and
//! batch), `residue_memcg_cpus` once per memcg (its per-CPU statistics on every CPU, into a
//! window of slots userspace empties as it goes), `residue_folios` once per CPU (the folios
//! of its batch), and `residue_frame` again (phase 1). Userspace compares the two frames: any
//! flush, charge, drain or batch move that happened in between changes one of them, and the
//! snapshot is taken again. Splitting the work keeps each program's verification linear in
//! the number of CPUs or of one chunk's memcgs instead of their product, and the maps' size
//! linear in the subtree (the per-CPU statistics of all memcgs are never held at once).
//!
//! # Other CPUs' per-CPU data (shared/docs/percpu.md)
//! - Dynamic per-CPU memory (`memcg->vmstats_percpu`): `per_cpu_ptr(p, c)` is
//!   `p + __per_cpu_offset[c]`. The offset of CPU c is the address of `RES_PCPU`'s element on
//!   c (`bpf_map_lookup_percpu_elem`) minus the map's raw per-CPU pointer `bpf_array.pptrs[0]`.
//!   Kernels without that helper (before 5.19) have `__per_cpu_offset` in kallsyms where it
//!   keeps data symbols (Debian's 5.10 does); the array is then read directly.
//! - Static per-CPU variables (`memcg_stock`, `obj_stock`, `cpu_fbatches`): this CPU's
//!   `struct rq` (`current->se.cfs_rq->rq`) is the variable `runqueues`, which gives the start
//!   of this CPU's static area; other CPUs' start at the same distance from their offset.
//!   `this_cpu_off`, read inside each CPU's area, must equal that CPU's offset: userspace
//!   checks it before trusting any static per-CPU read.
//!
//! Kernel addresses are turned into plain numbers before arithmetic (the verifier forbids
//! arithmetic on map pointers) and every kernel read goes through `bpf_probe_read_kernel`.
//! Offsets come from the frozen `RESIDUE_CONFIG`, read one field at a time.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated as raw},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use probes_common::{
    RES_FOLIO_CHUNK, RES_FRAME_CHUNK, RES_MAX_CPUS, RES_MAX_FOLIOS, RES_PEEK_BYTES, residue_err,
    residue_flags,
};

use crate::maps::{RES_CPU, RES_FOLIO, RES_MEMCG, RES_MEMCG_CPU, RES_PCPU, RES_PEEK, RES_REQ};

/// One field of the residue configuration.
macro_rules! rc {
    ($f:ident) => {
        // SAFETY: RESIDUE_CONFIG is a plain static of integers.
        unsafe { core::ptr::read_volatile(&crate::maps::RESIDUE_CONFIG.$f) }
    };
}

/// Reads a u64 at a kernel address.
#[inline(always)]
fn rd(addr: u64) -> Result<u64, u32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a fault returns an error.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.map_err(|_| residue_err::READ)
}

/// Copies `size` bytes from a kernel address into map memory at `dst`.
#[inline(always)]
fn rd_into<T>(dst: *mut T, size: u32, src: u64) -> Result<(), u32> {
    if rd_raw(dst, size, src) < 0 {
        Err(residue_err::READ)
    } else {
        Ok(())
    }
}

/// Copies `size` bytes from a kernel address into map memory at `dst` (zeros there on
/// failure) and returns the helper's result, negative on failure. The residue programs fold
/// failures with [`failed`] instead of branching on each read: a branch per read multiplied
/// the verifier's states, and their verification was `explain`'s long pole (issue 11).
#[inline(always)]
fn rd_raw<T>(dst: *mut T, size: u32, src: u64) -> i64 {
    // SAFETY: `dst` points into a map value of at least `size` bytes (callers pass a field's
    // own size, or sizes userspace bounded by the record's array and the verifier sees as
    // constants); the helper copes with any source address.
    unsafe { raw::bpf_probe_read_kernel(dst.cast::<c_void>(), size, src as *const c_void) }
}

/// Reads a u64 field from a kernel address (see [`rd_raw`]).
#[inline(always)]
fn rd_u64(dst: &mut u64, src: u64) -> i64 {
    rd_raw(dst as *mut u64, 8, src)
}

/// [`residue_err::READ`] if any of the OR-ed helper results was negative, else 0.
#[inline(always)]
fn failed(results: i64) -> u32 {
    ((results as u64) >> 63) as u32 * residue_err::READ
}

/// Any pointer (map, map value) as a plain number the verifier allows arithmetic on: spill it
/// to the stack and read the slot back with `bpf_probe_read_kernel`.
#[inline(always)]
fn to_scalar<T>(p: *const T) -> u64 {
    let slot: u64 = p as u64;
    // SAFETY: reads our own stack slot.
    unsafe { bpf_probe_read_kernel(&slot as *const u64) }.unwrap_or(0)
}

/// `bpf_array.pptrs[0]` of `RES_PCPU`: its raw per-CPU pointer.
#[inline(always)]
fn pcpu_pptr0() -> Result<u64, u32> {
    rd(to_scalar(&RES_PCPU) + rc!(bpf_array_pptrs))
}

/// `__per_cpu_offset[cpu]`: read from the array itself where kallsyms gave its address
/// (kernels before 5.19 have no `bpf_map_lookup_percpu_elem`; the flag is a frozen constant,
/// so the verifier never walks the other branch and the helper's absence does not matter).
#[inline(always)]
fn pcpu_base(cpu: u32, pptr0: u64) -> Result<u64, u32> {
    if rc!(flags) & residue_flags::PCPU_OFFSET_SYMBOL != 0 {
        return match rd(rc!(per_cpu_offset) + 8 * u64::from(cpu)) {
            Ok(0) | Err(_) => Err(residue_err::PERCPU),
            Ok(base) => Ok(base),
        };
    }
    let key = 0u32;
    // SAFETY: helper 195 on a per-CPU array with a stack key.
    let p = unsafe {
        raw::bpf_map_lookup_percpu_elem(
            &RES_PCPU as *const _ as *mut c_void,
            &key as *const u32 as *const c_void,
            cpu,
        )
    };
    if p.is_null() {
        return Err(residue_err::PERCPU);
    }
    Ok(to_scalar(p).wrapping_sub(pptr0))
}

/// The distance from a CPU's per-CPU offset to the start of its static per-CPU area (the
/// link address of `.data..percpu`; 0 on zero-based kernels).
#[inline(always)]
fn static_shift(pptr0: u64) -> Result<u64, u32> {
    // SAFETY: helpers without arguments.
    let (task, cpu) = unsafe { (raw::bpf_get_current_task(), raw::bpf_get_smp_processor_id()) };
    let cfs_rq = rd(task + rc!(task_se_cfs_rq))?;
    let rq = rd(cfs_rq + rc!(cfs_rq_rq))?;
    let base = pcpu_base(cpu, pptr0)?;
    Ok(rq.wrapping_sub(rc!(pcpu_runqueues)).wrapping_sub(base))
}

/// `memcg->css.cgroup->kn->id`.
#[inline(always)]
fn cgroup_id(memcg: u64) -> Result<u64, u32> {
    let cgroup = rd(memcg + rc!(memcg_css) + rc!(css_cgroup))?;
    let kn = rd(cgroup + rc!(cgroup_kn))?;
    rd(kn + rc!(kn_id))
}

/// Reads one memcg's counters and aggregates into `RES_MEMCG[idx]`.
#[inline(always)]
fn read_memcg(idx: u32, slot: u32) -> Result<(), u32> {
    let Some(req) = RES_REQ.get_ptr(slot) else {
        return Err(residue_err::MAP);
    };
    let Some(rec) = RES_MEMCG.get_ptr_mut(idx) else {
        return Err(residue_err::MAP);
    };
    // SAFETY: both pointers are map values of their record types; test runs are serialised
    // by userspace, so nothing else writes them meanwhile.
    let (req, rec) = unsafe { (&*req, &mut *rec) };
    let memcg = req.memcg;
    rec.memcg = memcg;
    rec.err = 0;
    let id = cgroup_id(memcg).unwrap_or(0);
    rec.cgroup_id = id;
    if id != req.cgroup_id || id == 0 {
        rec.err = residue_err::GONE;
        return Ok(());
    }
    let mut r = rd_u64(&mut rec.css_flags, memcg + rc!(memcg_css) + rc!(css_flags));
    rec.css_flags &= 0xffff_ffff;
    r |= rd_u64(&mut rec.usage, memcg + rc!(memory_usage));
    r |= rd_u64(&mut rec.max, memcg + rc!(memory_max));
    r |= rd_u64(&mut rec.watermark, memcg + rc!(memory_watermark));
    r |= rd_u64(&mut rec.failcnt, memcg + rc!(memory_failcnt));
    if rc!(flags) & residue_flags::SWAP_COUNTER != 0 {
        r |= rd_u64(&mut rec.memsw_usage, memcg + rc!(memsw_usage));
    }
    if rc!(flags) & residue_flags::V1_COUNTERS != 0 {
        r |= rd_u64(&mut rec.kmem_usage, memcg + rc!(kmem_usage));
        r |= rd_u64(&mut rec.tcpmem_usage, memcg + rc!(tcpmem_usage));
    }
    // Batched statistics (5.4-5.12): the atomics are inside the memcg; rstat: a pointer.
    let batched = rc!(flags) & residue_flags::BATCHED_STATS != 0;
    let mut vs = memcg + rc!(memcg_vmstats);
    if !batched {
        let at = vs;
        r |= rd_u64(&mut vs, at);
    }
    rec.flush_updates = 0;
    if rc!(flags) & residue_flags::FLUSH_UPDATES != 0 {
        r |= rd_raw(
            &mut rec.flush_updates as *mut u32,
            4,
            vs + rc!(vs_stats_updates),
        );
    }
    let n = rc!(state_bytes);
    r |= rd_raw(rec.state.as_mut_ptr(), n, vs + rc!(vs_state));
    if !batched {
        r |= rd_raw(
            rec.state_pending.as_mut_ptr(),
            n,
            vs + rc!(vs_state_pending),
        );
    }
    rec.err = failed(r);
    Ok(())
}

/// Reads one CPU's stocks and batch into `RES_CPU[idx]`.
#[inline(always)]
fn read_cpu(idx: u32, cpu: u32, pptr0: u64, shift: u64) -> Result<(), u32> {
    let Some(rec) = RES_CPU.get_ptr_mut(idx) else {
        return Err(residue_err::MAP);
    };
    // SAFETY: a map value of type CpuFrame, written only by serialised test runs.
    let rec = unsafe { &mut *rec };
    rec.err = 0;
    let base = match pcpu_base(cpu, pptr0) {
        Ok(b) => b,
        Err(e) => {
            rec.err = e;
            return Ok(());
        }
    };
    let unit = base.wrapping_add(shift);
    rec.base = base;
    rec.unit = unit;
    let mut r = rd_u64(&mut rec.this_cpu_off, unit + rc!(pcpu_this_cpu_off));
    let flags = rc!(flags);
    if flags & residue_flags::STOCK != 0 {
        r |= rd_raw(
            rec.stock.as_mut_ptr(),
            rc!(stock_bytes),
            unit + rc!(pcpu_memcg_stock),
        );
    }
    if flags & residue_flags::OBJ_STOCK != 0 {
        let obj = unit + rc!(pcpu_obj_stock);
        r |= rd_raw(rec.obj.as_mut_ptr(), rc!(obj_bytes), obj);
        let mut objcg = 0;
        r |= rd_u64(&mut objcg, obj + rc!(obj_cached_objcg));
        rec.obj_memcg = 0;
        if objcg != 0 {
            r |= rd_u64(&mut rec.obj_memcg, objcg + rc!(objcg_memcg));
        }
    }
    if flags & residue_flags::LRU_ADD != 0 {
        r |= rd_raw(
            rec.batch.as_mut_ptr(),
            rc!(batch_bytes),
            unit + rc!(pcpu_lru_add),
        );
    }
    rec.err = failed(r);
    Ok(())
}

/// `residue_frame(start, n, phase)`: counters and aggregates of memcgs `[start, start +
/// RES_FRAME_CHUNK)` of the first `n` of `RES_REQ`, and when `start` is 0 every CPU's stocks
/// and batch, into the `phase` half (0 open, 1 close) of `RES_MEMCG` and `RES_CPU`.
fn frame(start: u64, n: u64, phase: u64) -> Result<(), u32> {
    let max = rc!(max_memcgs);
    if phase > 1 || start >= u64::from(max) {
        return Err(residue_err::ARGS);
    }
    let start = start as u32;
    let nr_cpus = rc!(nr_cpus);
    for i in 0..RES_FRAME_CHUNK {
        let slot = start + i;
        if u64::from(slot) >= n || slot >= max {
            break;
        }
        read_memcg(phase as u32 * max + slot, slot)?;
    }
    if start != 0 || rc!(flags) & residue_flags::STATIC_PERCPU == 0 {
        return Ok(());
    }
    let pptr0 = pcpu_pptr0()?;
    let shift = static_shift(pptr0)?;
    for cpu in 0..RES_MAX_CPUS {
        if cpu >= nr_cpus {
            break;
        }
        read_cpu(phase as u32 * nr_cpus + cpu, cpu, pptr0, shift)?;
    }
    Ok(())
}

/// `residue_memcg_cpus(slot, window_slot)`: the per-CPU statistics of memcg `slot` on every
/// CPU, into window slot `window_slot` of `RES_MEMCG_CPU` (a slot past the map fails with
/// [`residue_err::MAP`]).
fn memcg_cpus(slot: u64, window_slot: u64) -> Result<(), u32> {
    let max = rc!(max_memcgs);
    if slot >= u64::from(max) || window_slot >= u64::from(max) {
        return Err(residue_err::ARGS);
    }
    let (slot, window_slot) = (slot as u32, window_slot as u32);
    let Some(req) = RES_REQ.get_ptr(slot) else {
        return Err(residue_err::MAP);
    };
    // SAFETY: a map value of type MemcgReq.
    let memcg = unsafe { (*req).memcg };
    let pcpu = rd(memcg + rc!(memcg_vmstats_percpu))?;
    let pptr0 = pcpu_pptr0()?;
    let nr_cpus = rc!(nr_cpus);
    let n = rc!(state_bytes);
    for cpu in 0..RES_MAX_CPUS {
        if cpu >= nr_cpus {
            break;
        }
        let Some(rec) = RES_MEMCG_CPU.get_ptr_mut(window_slot * nr_cpus + cpu) else {
            return Err(residue_err::MAP);
        };
        // SAFETY: a map value of type MemcgCpuStat, written only by serialised test runs.
        let rec = unsafe { &mut *rec };
        let statc = match pcpu_base(cpu, pptr0) {
            Ok(base) => pcpu.wrapping_add(base),
            Err(e) => {
                rec.err = e;
                continue;
            }
        };
        let mut r = rd_raw(rec.state.as_mut_ptr(), n, statc + rc!(vsp_state));
        if rc!(flags) & residue_flags::BATCHED_STATS == 0 {
            r |= rd_raw(rec.state_prev.as_mut_ptr(), n, statc + rc!(vsp_state_prev));
        }
        rec.stats_updates = 0;
        if rc!(flags) & residue_flags::PCPU_STATS_UPDATES != 0 {
            r |= rd_u64(&mut rec.stats_updates, statc + rc!(vsp_stats_updates));
            rec.stats_updates &= 0xffff_ffff;
        }
        rec.err = failed(r);
    }
    Ok(())
}

/// `residue_folios(cpu, first)`: slots `first..first + RES_FOLIO_CHUNK` of `cpu`'s lru_add
/// batch as it is now (`first` a multiple of the chunk below `RES_MAX_FOLIOS`).
fn folios(cpu: u64, first: u64) -> Result<(), u32> {
    let nr_cpus = rc!(nr_cpus);
    if cpu >= u64::from(nr_cpus)
        || first >= u64::from(RES_MAX_FOLIOS)
        || !first.is_multiple_of(u64::from(RES_FOLIO_CHUNK))
    {
        return Err(residue_err::ARGS);
    }
    let flags = rc!(flags);
    if flags & residue_flags::STATIC_PERCPU == 0 || flags & residue_flags::LRU_ADD == 0 {
        return Ok(());
    }
    let cpu = cpu as u32;
    let pptr0 = pcpu_pptr0()?;
    let shift = static_shift(pptr0)?;
    let batch = pcpu_base(cpu, pptr0)?.wrapping_add(shift) + rc!(pcpu_lru_add);
    let nr = rd(batch + u64::from(rc!(batch_nr)))? & 0xff;
    let capacity = rc!(batch_capacity);
    let first = first as u32;
    for k in 0..RES_FOLIO_CHUNK {
        let j = first + k;
        let Some(rec) = RES_FOLIO.get_ptr_mut(cpu * RES_MAX_FOLIOS + j) else {
            return Err(residue_err::MAP);
        };
        // SAFETY: a map value of type FolioInfo, written only by serialised test runs.
        let rec = unsafe { &mut *rec };
        if u64::from(j) >= nr || j >= capacity {
            rec.folio = 0;
            continue;
        }
        // Each read lands in the record itself (zeros on failure); failures are folded.
        let slot = batch + u64::from(rc!(batch_folios)) + 8 * u64::from(j);
        let mut r = rd_u64(&mut rec.folio, slot);
        if rec.folio != 0 {
            let folio = rec.folio;
            r |= rd_u64(&mut rec.memcg_data, folio + rc!(folio_memcg_data));
            r |= rd_u64(&mut rec.flags, folio + rc!(folio_flags));
            r |= rd_u64(&mut rec.order_word, folio + rc!(folio_order));
            r |= rd_u64(&mut rec.mapping, folio + rc!(folio_mapping));
            r |= rd_u64(&mut rec.mapcount_word, folio + rc!(folio_mapcount));
        }
        rec.err = u64::from(failed(r));
    }
    Ok(())
}

/// `residue_peek(addr, len, from_current)`: copies `len` bytes at `addr` (or at
/// `current + addr` when `from_current` is 1) into `RES_PEEK`. Userspace walks the css tree
/// with it.
fn peek(addr: u64, len: u64, from_current: u64) -> Result<(), u32> {
    if len == 0 || len > RES_PEEK_BYTES as u64 {
        return Err(residue_err::ARGS);
    }
    let src = if from_current == 1 {
        // SAFETY: helper without arguments.
        unsafe { raw::bpf_get_current_task() }.wrapping_add(addr)
    } else {
        addr
    };
    let Some(buf) = RES_PEEK.get_ptr_mut(0) else {
        return Err(residue_err::MAP);
    };
    // SAFETY: a map value of RES_PEEK_BYTES bytes; `len` is bounded just above.
    rd_into(unsafe { (*buf).data.as_mut_ptr() }, len as u32, src)
}

/// Program result: 0, or the [`residue_err`] bits of the failure.
#[inline(always)]
fn ret(r: Result<(), u32>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

#[raw_tracepoint(tracepoint = "residue_frame")]
pub fn residue_frame(ctx: RawTracePointContext) -> i32 {
    ret(frame(ctx.arg(0), ctx.arg(1), ctx.arg(2)))
}

#[raw_tracepoint(tracepoint = "residue_memcg_cpus")]
pub fn residue_memcg_cpus(ctx: RawTracePointContext) -> i32 {
    ret(memcg_cpus(ctx.arg(0), ctx.arg(1)))
}

#[raw_tracepoint(tracepoint = "residue_folios")]
pub fn residue_folios(ctx: RawTracePointContext) -> i32 {
    ret(folios(ctx.arg(0), ctx.arg(1)))
}

#[raw_tracepoint(tracepoint = "residue_peek")]
pub fn residue_peek(ctx: RawTracePointContext) -> i32 {
    ret(peek(ctx.arg(0), ctx.arg(1), ctx.arg(2)))
}
