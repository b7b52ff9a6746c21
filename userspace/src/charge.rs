//! The charge path and the OOM path: kernel layout for the probes, a running [`ChargeTracer`]
//! (facts -> plan -> load -> attach, then snapshots), and the figures derived from its
//! aggregates.
//!
//! What the probes record is in `probes_common::charge`. This module turns a window of
//! aggregates into per-(cgroup, CPU) figures: charge attempts and pages requested, the pages
//! served from the per-CPU stock versus charged to the page_counter in batches, the batch
//! surplus parked in the stock, pages given back to the stock and drained from it, failures
//! and which counter was at its limit, reclaim rounds, OOM invocations and kills. Rare OOM
//! events arrive through the ring buffer as [`OomRecord`]s.
//!
//! Hooks that cannot attach are reported per hook with every candidate's reason; where no
//! charge hook attaches at all (fentry refused, no kprobes), [`ChargeTracer::unavailable`]
//! says so in one line and the OOM-path tracepoints still work.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::Program,
};
use probes_common::{
    ProbeConfig, WIRE_VERSION,
    charge::{
        ChargeConfig, ChargeKey, ChargeValue, GLOBAL_CHARGE_CONFIG, MAP_CHARGE_AGG,
        MAP_CHARGE_COUNTERS, MAP_CHARGE_RUNTIME, MAP_INFER_LAST, MAP_INFER_TARGET,
        MAP_MEMCG_EVENTS, MAP_OOM_EVENTS, MemEvents, OomEvent, ccounter, counter, kind, oom_kind,
        runtime,
    },
};
use serde::Serialize;

use crate::{
    attach::{self, Filter, HookOutcome, UsedCandidate},
    attach::{SharedEbpf, lock},
    cgroup::CgroupVersion,
    kernel::{KernelFacts, btf::KernelBtf, tracefs},
    plan::{self, Flavour, FlavourSupport, Group, HookPlan},
};

/// Resolves the charge probes' kernel layout from BTF (and the `oom:mark_victim` record format
/// from tracefs). Required members are errors naming the member; optional ones
/// (`memsw`/`swap`, `kmem`, `tcpmem`, the stock layout) are [`ChargeConfig::ABSENT`] or noted
/// in the returned list of (hook id, why it cannot be used here).
pub fn charge_config(
    btf: &KernelBtf,
    facts: &KernelFacts,
) -> anyhow::Result<(ChargeConfig, Vec<(&'static str, String)>)> {
    let off = |s: &str, m: &str| {
        btf.member_offset(s, m)
            .ok_or_else(|| anyhow::anyhow!("kernel BTF has no member `{m}` in struct {s}"))
    };
    let opt = |s: &str, m: &str| btf.member_offset(s, m).unwrap_or(ChargeConfig::ABSENT);
    let mut unusable = Vec::new();
    // memsw (v1) and swap (v2) share one union in `struct mem_cgroup`.
    let swap = match btf.member_offset("mem_cgroup", "memsw") {
        Some(o) => o,
        None => opt("mem_cgroup", "swap"),
    };
    let memory_cgrp_id = btf
        .enum_value("cgroup_subsys_id", "memory_cgrp_id")
        .ok_or_else(|| anyhow::anyhow!("kernel BTF has no enumerator memory_cgrp_id"))?;
    // The charge stock: one cached memcg with an `unsigned int nr_pages` up to 6.15
    // (`drain_stock(stock)`); from 6.16 arrays `cached[NR_MEMCG_STOCK]` and `uint8_t
    // nr_pages[NR_MEMCG_STOCK]`, and `drain_stock(stock, i)` drains slot i. The fentry program
    // that does not fit the layout is ruled out by name.
    let (stock_cached, stock_nr_pages, stock_slots, stock_nr_size) = match (
        btf.member_offset("memcg_stock_pcp", "cached"),
        btf.member_offset("memcg_stock_pcp", "nr_pages"),
        btf.member_size("memcg_stock_pcp", "nr_pages"),
    ) {
        (Some(c), Some(n), Some(size)) => {
            let slots = btf.array_len("memcg_stock_pcp", "cached").unwrap_or(0);
            let elem = if slots == 0 {
                size
            } else {
                size / u64::from(slots)
            };
            if slots == 0 {
                for id in ["charge.drain_local", "charge.drain_local_ret"] {
                    unusable.push((
                        id,
                        "single-slot charge stock (up to 6.15): drain_stock sees every drain"
                            .to_string(),
                    ));
                }
                unusable.push((
                    "fentry_drain_stock_slot",
                    "single-slot charge stock (up to 6.15): drain_stock has no slot argument"
                        .to_string(),
                ));
            } else {
                unusable.push((
                    "fentry_drain_stock",
                    format!(
                        "multi-slot charge stock ({slots} slots, 6.16+): drain_stock(stock, i) \
                         needs the slot-reading program"
                    ),
                ));
            }
            if slots > 0 && !btf.has_member("memcg_stock_pcp", "work") {
                for id in ["charge.drain_local", "charge.drain_local_ret"] {
                    unusable.push((id, "kernel BTF has no memcg_stock_pcp.work".to_string()));
                }
            }
            if slots > runtime::MAX_STOCK_SLOTS {
                for id in ["charge.drain_local", "charge.drain_local_ret"] {
                    unusable.push((
                        id,
                        format!(
                            "{slots} stock slots; the local-drain hook reads at most {}",
                            runtime::MAX_STOCK_SLOTS
                        ),
                    ));
                }
            }
            if matches!(elem, 1 | 4) {
                (c, n, slots, elem as u32)
            } else {
                unusable.push((
                    "charge.drain_stock",
                    format!("memcg_stock_pcp.nr_pages elements of {elem} bytes (expected 1 or 4)"),
                ));
                (0, 0, 0, 0)
            }
        }
        _ => {
            unusable.push((
                "charge.drain_stock",
                "kernel BTF has no struct memcg_stock_pcp with cached/nr_pages".to_string(),
            ));
            (0, 0, 0, 0)
        }
    };
    // The object stock: inside `struct memcg_stock_pcp` up to 6.15, its own `struct
    // obj_stock_pcp` from 6.16; both hooks read it through the same two offsets.
    let obj_stock = ["obj_stock_pcp", "memcg_stock_pcp"].iter().find_map(|s| {
        Some((
            btf.member_offset(s, "cached_objcg")?,
            btf.member_offset(s, "nr_bytes")?,
        ))
    });
    let objcg_memcg = btf.member_offset("obj_cgroup", "memcg");
    let (obj_stock_objcg, obj_stock_nr_bytes) = match (obj_stock, objcg_memcg) {
        (Some(o), Some(_)) => o,
        _ => {
            for id in ["charge.refill_obj_stock", "charge.drain_obj_stock"] {
                unusable.push((
                    id,
                    "kernel BTF has no object stock (cached_objcg/nr_bytes) or obj_cgroup.memcg"
                        .to_string(),
                ));
            }
            (0, 0)
        }
    };
    // memory.events as they happen: `cgroup_file_notify` on the memcg's events files, read
    // back through `memory_events_local[]` (see probes-ebpf's on_file_notify).
    let nr_events = btf
        .enum_value("memcg_memory_event", "MEMCG_NR_MEMORY_EVENTS")
        .unwrap_or(0);
    let (memcg_events_local, memcg_events_local_file, nr_memory_events) = match (
        btf.member_offset("mem_cgroup", "memory_events_local"),
        btf.member_offset("mem_cgroup", "events_local_file"),
    ) {
        (Some(a), Some(f))
            if nr_events > 0 && nr_events <= i64::from(runtime::MAX_MEMORY_EVENTS) =>
        {
            (a, f, nr_events as u32)
        }
        _ => {
            let why = format!(
                "kernel BTF has no mem_cgroup.memory_events_local/events_local_file or \
                 MEMCG_NR_MEMORY_EVENTS ({nr_events}) outside 1..={}",
                runtime::MAX_MEMORY_EVENTS
            );
            unusable.push(("fentry_file_notify", why.clone()));
            unusable.push(("kprobe_file_notify", why));
            (0, 0, 0)
        }
    };
    // Lifecycle events are kept to the memory hierarchy (v1 hierarchies have separate ids).
    let target_hierarchy = memory_hierarchy_id().unwrap_or(ChargeConfig::ABSENT);
    let (tp_victim_pid, tp_victim_comm) = match facts
        .tracefs
        .as_ref()
        .ok()
        .and_then(|t| t.format("oom", "mark_victim"))
    {
        Some(fmt) => (
            tracefs::field_offset(&fmt, "pid").map_or(0, |(o, _)| o as u32),
            tracefs::field_offset(&fmt, "comm").map_or(0, |(o, _)| o as u32),
        ),
        None => (0, 0),
    };
    if tp_victim_pid == 0 {
        unusable.push((
            "oom.mark_victim",
            "the oom:mark_victim format file has no pid field".to_string(),
        ));
    }
    let cfg = ChargeConfig {
        counter_off: [
            off("mem_cgroup", "memory")?,
            swap,
            opt("mem_cgroup", "kmem"),
            opt("mem_cgroup", "tcpmem"),
        ],
        cgroup_subsys: off("cgroup", "subsys")?,
        memory_cgrp_id: memory_cgrp_id as u64,
        stock_cached,
        stock_nr_pages,
        stock_slots,
        stock_nr_size,
        stock_work: opt("memcg_stock_pcp", "work"),
        memcg_events_local,
        memcg_events_local_file,
        memcg_swap_events_file: opt("mem_cgroup", "swap_events_file"),
        nr_memory_events,
        _pad2: 0,
        task_cgroups: off("task_struct", "cgroups")?,
        css_set_subsys: off("css_set", "subsys")?,
        task_pid: off("task_struct", "pid")?,
        task_comm: off("task_struct", "comm")?,
        oc_memcg: off("oom_control", "memcg")?,
        oc_order: off("oom_control", "order")?,
        oc_chosen: off("oom_control", "chosen")?,
        pc_usage: off("page_counter", "usage")?,
        objcg_memcg: objcg_memcg.unwrap_or(0),
        cgroup_self: off("cgroup", "self")?,
        cgroup_root: off("cgroup", "root")?,
        cgroup_level: off("cgroup", "level")?,
        root_hierarchy_id: off("cgroup_root", "hierarchy_id")?,
        target_hierarchy,
        obj_stock_objcg,
        obj_stock_nr_bytes,
        tp_victim_pid,
        tp_victim_comm,
        victim_arg_is_task: u32::from(
            btf.tracepoint_arg_is_pointer("mark_victim", 0)
                .unwrap_or(false),
        ),
        wire_version: WIRE_VERSION,
    };
    Ok((cfg, unusable))
}

/// The memory controller's hierarchy id: 0 on cgroup v2 (the default hierarchy), the
/// `hierarchy` column of `/proc/cgroups` on v1. `None` when it cannot be told.
fn memory_hierarchy_id() -> Option<u64> {
    let layout = crate::cgroup::detect_layout().ok()?;
    match layout.memory?.version {
        CgroupVersion::V2 => Some(0),
        CgroupVersion::V1 => {
            let text = std::fs::read_to_string("/proc/cgroups").ok()?;
            parse_proc_cgroups_hierarchy(&text, "memory")
        }
    }
}

/// The hierarchy id of `controller` in the text of `/proc/cgroups`
/// (`#subsys_name hierarchy num_cgroups enabled`).
pub fn parse_proc_cgroups_hierarchy(text: &str, controller: &str) -> Option<u64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == controller).then(|| f.next()?.parse().ok())?
    })
}

/// Loads the probes object with both configurations and the maps sized by `sizes`.
pub fn load(
    cfg: &ProbeConfig,
    ccfg: &ChargeConfig,
    sizes: &attach::MapSizes,
) -> anyhow::Result<Ebpf> {
    attach::load_with(cfg, |l| {
        l.override_global(GLOBAL_CHARGE_CONFIG, ccfg, true);
        sizes.apply(l);
    })
}

/// Rejects what this kernel's layout rules out (see [`charge_config`]): each entry names a
/// hook id (every candidate of it) or a program (the candidates that would load it).
pub fn reject_unusable(plans: &mut [HookPlan], unusable: &[(&'static str, String)]) {
    for (id, why) in unusable {
        for p in plans.iter_mut() {
            let whole = p.id == *id;
            for v in &mut p.candidates {
                if whole || v.candidate.program == Some(*id) {
                    v.rejected.get_or_insert_with(|| why.clone());
                }
            }
        }
    }
}

/// For `doctor`: rejects what the layout rules out and loads the probes object with the real
/// stat and charge configurations (unfiltered), so that the confirmation attach verifies the
/// programs exactly as `trace` will run them.
pub fn load_for_doctor(
    kbtf: &KernelBtf,
    facts: &KernelFacts,
    plans: &mut [HookPlan],
) -> anyhow::Result<Ebpf> {
    let scfg = attach::probe_config(kbtf, Filter::default())?;
    let (ccfg, unusable) = charge_config(kbtf, facts)?;
    reject_unusable(plans, &unusable);
    load(&scfg, &ccfg, &attach::MapSizes::default())
}

/// Loss and activity counters of the charge and OOM probes, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChargeCounters {
    /// Events seen by any charge or OOM hook.
    pub seen: u64,
    /// Events recorded.
    pub recorded: u64,
    /// Events of cgroups outside the target subtree.
    pub filtered: u64,
    /// Lost: the aggregate map was full.
    pub map_full: u64,
    /// Lost: a kernel read failed.
    pub read_failed: u64,
    /// page_counter events of counters that belong to no memcg (hugetlb cgroups).
    pub not_memcg: u64,
    /// Calls whose return could not be interpreted (nesting too deep or no room for a frame).
    pub frame_lost: u64,
    /// Returns without a recorded entry (calls already in progress when the hooks attached).
    pub frame_missing: u64,
    /// Lost: OOM events that did not fit the ring buffer.
    pub ring_full: u64,
    /// OOM events sent through the ring buffer.
    pub ring_sent: u64,
    /// Inference: page_counter readings of one cgroup taken at the same instant on two CPUs
    /// (the inferred split is approximate when this is not 0).
    pub infer_race: u64,
}

impl ChargeCounters {
    /// Events of the target subtree that were not recorded or not interpreted.
    pub fn lost(&self) -> u64 {
        self.map_full + self.read_failed + self.frame_lost + self.ring_full
    }

    fn minus(&self, o: &Self) -> Self {
        Self {
            seen: self.seen.wrapping_sub(o.seen),
            recorded: self.recorded.wrapping_sub(o.recorded),
            filtered: self.filtered.wrapping_sub(o.filtered),
            map_full: self.map_full.wrapping_sub(o.map_full),
            read_failed: self.read_failed.wrapping_sub(o.read_failed),
            not_memcg: self.not_memcg.wrapping_sub(o.not_memcg),
            frame_lost: self.frame_lost.wrapping_sub(o.frame_lost),
            frame_missing: self.frame_missing.wrapping_sub(o.frame_missing),
            ring_full: self.ring_full.wrapping_sub(o.ring_full),
            ring_sent: self.ring_sent.wrapping_sub(o.ring_sent),
            infer_race: self.infer_race.wrapping_sub(o.infer_race),
        }
    }
}

/// One OOM-path event, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomRecord {
    /// `invoked` (mem_cgroup_out_of_memory), `kill` (oom_kill_process) or `victim`
    /// (oom:mark_victim).
    pub kind: &'static str,
    /// CPU.
    pub cpu: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// The memcg's cgroup id (see `kind`); 0 when unknown or for a global OOM.
    pub cgroup_id: u64,
    /// `invoked`: the task that ran into the limit; `kill`/`victim`: the victim.
    pub pid: u32,
    /// Its name, when known.
    pub comm: String,
    /// Allocation order, when known.
    pub order: Option<i32>,
    /// The task that ran the hook.
    pub current_pid: u32,
}

impl OomRecord {
    /// Decodes a ring-buffer item; `None` if it is too short or of an unknown kind.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<OomEvent>() {
            return None;
        }
        // SAFETY: the buffer holds at least one OomEvent, a plain-integer #[repr(C)] type
        // (any bit pattern is valid); read_unaligned copes with any alignment.
        let e: OomEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = match e.kind {
            oom_kind::INVOKED => "invoked",
            oom_kind::KILL => "kill",
            oom_kind::VICTIM => "victim",
            oom_kind::MKDIR => "mkdir",
            oom_kind::RMDIR => "rmdir",
            oom_kind::RELEASE => "release",
            _ => return None,
        };
        let end = e.comm.iter().position(|&c| c == 0).unwrap_or(e.comm.len());
        Some(Self {
            kind,
            cpu: e.cpu,
            ts_ns: e.ts_ns,
            cgroup_id: e.cgroup_id,
            pid: e.pid,
            comm: String::from_utf8_lossy(&e.comm[..end]).into_owned(),
            order: (e.order >= 0).then_some(e.order),
            current_pid: e.current_pid,
        })
    }
}

/// One reading of the charge aggregates (per key, one value per possible CPU), the counters,
/// and every OOM event received since the tracer started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargeSnapshot {
    /// Aggregates; the vector is indexed by CPU id.
    pub rows: BTreeMap<ChargeKey, Vec<ChargeValue>>,
    /// Counters summed over CPUs.
    pub counters: ChargeCounters,
    /// OOM events, oldest first.
    pub oom: Vec<OomRecord>,
    /// Cgroup lifecycle events (`mkdir`, `rmdir`, `release`), oldest first.
    pub lifecycle: Vec<OomRecord>,
}

impl ChargeSnapshot {
    /// What happened between `earlier` and `self` (both from the same tracer).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut rows = BTreeMap::new();
        for (k, now) in &self.rows {
            let before = earlier.rows.get(k);
            let diff: Vec<ChargeValue> = now
                .iter()
                .enumerate()
                .map(|(cpu, v)| {
                    let b = before.and_then(|b| b.get(cpu)).copied().unwrap_or_default();
                    ChargeValue {
                        pages: v.pages.wrapping_sub(b.pages),
                        events: v.events.wrapping_sub(b.events),
                    }
                })
                .collect();
            if diff.iter().any(|d| d.events != 0) {
                rows.insert(*k, diff);
            }
        }
        let oom = self
            .oom
            .get(earlier.oom.len().min(self.oom.len())..)
            .unwrap_or_default()
            .to_vec();
        let lifecycle = self
            .lifecycle
            .get(earlier.lifecycle.len().min(self.lifecycle.len())..)
            .unwrap_or_default()
            .to_vec();
        Self {
            rows,
            counters: self.counters.minus(&earlier.counters),
            oom,
            lifecycle,
        }
    }

    /// Per-CPU values of (cgroup, kind, counter).
    pub fn per_cpu(&self, cgroup_id: u64, k: u32, ctr: u32) -> Vec<ChargeValue> {
        self.rows
            .get(&ChargeKey {
                cgroup_id,
                kind: k,
                counter: ctr,
            })
            .cloned()
            .unwrap_or_default()
    }

    /// (cgroup, kind, counter) summed over CPUs.
    pub fn total(&self, cgroup_id: u64, k: u32, ctr: u32) -> ChargeValue {
        self.per_cpu(cgroup_id, k, ctr)
            .iter()
            .fold(ChargeValue::default(), |a, v| ChargeValue {
                pages: a.pages + v.pages,
                events: a.events + v.events,
            })
    }

    /// The derived figures of one cgroup on each CPU that saw any of its events.
    pub fn figures(&self, cgroup_id: u64) -> Vec<CpuCharge> {
        let mut by_cpu: BTreeMap<usize, CpuCharge> = BTreeMap::new();
        for (k, vals) in self.rows.range(
            ChargeKey {
                cgroup_id,
                kind: 0,
                counter: 0,
            }..=ChargeKey {
                cgroup_id,
                kind: u32::MAX,
                counter: u32::MAX,
            },
        ) {
            for (cpu, v) in vals.iter().enumerate() {
                if v.events == 0 {
                    continue;
                }
                let f = by_cpu.entry(cpu).or_insert_with(|| CpuCharge {
                    cpu,
                    ..CpuCharge::default()
                });
                f.add(k.kind, k.counter, *v);
            }
        }
        by_cpu.into_values().collect()
    }

    /// The derived figures of one cgroup summed over CPUs (`cpu` is `usize::MAX`).
    pub fn totals(&self, cgroup_id: u64) -> CpuCharge {
        let mut t = CpuCharge {
            cpu: usize::MAX,
            ..CpuCharge::default()
        };
        for f in self.figures(cgroup_id) {
            t.merge(&f);
        }
        t
    }

    /// Cgroup ids that have any aggregate.
    pub fn cgroups(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.rows.keys().map(|k| k.cgroup_id).collect();
        v.dedup();
        v
    }
}

/// Pages and events of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Fig {
    /// Number of events (calls).
    pub events: u64,
    /// Pages.
    pub pages: u64,
}

impl Fig {
    fn add(&mut self, v: ChargeValue) {
        self.events += v.events;
        self.pages += v.pages;
    }

    fn merge(&mut self, o: &Fig) {
        self.events += o.events;
        self.pages += o.pages;
    }
}

/// Page_counter operations on one counter of a memcg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterOps {
    /// `page_counter_try_charge` successes.
    pub try_charge_ok: Fig,
    /// `page_counter_try_charge` failures (this memcg's charge; some level was at its limit).
    pub try_charge_failed: Fig,
    /// Failed charges whose limiting counter was this memcg's (`*fail`).
    pub limit_hits: Fig,
    /// `page_counter_charge` (cannot fail).
    pub charge: Fig,
    /// `page_counter_uncharge`.
    pub uncharge: Fig,
    /// `page_counter_cancel` (per hierarchy level).
    pub cancel: Fig,
}

impl CounterOps {
    fn merge(&mut self, o: &CounterOps) {
        self.try_charge_ok.merge(&o.try_charge_ok);
        self.try_charge_failed.merge(&o.try_charge_failed);
        self.limit_hits.merge(&o.limit_hits);
        self.charge.merge(&o.charge);
        self.uncharge.merge(&o.uncharge);
        self.cancel.merge(&o.cancel);
    }

    /// Net pages this counter moved: charges minus uncharges (cancels are inside uncharges).
    pub fn net_pages(&self) -> i64 {
        (self.try_charge_ok.pages + self.charge.pages) as i64 - self.uncharge.pages as i64
    }
}

/// The charge figures of one cgroup on one CPU (or summed: `cpu == usize::MAX`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuCharge {
    /// CPU.
    pub cpu: usize,
    /// `try_charge_memcg` calls and pages requested.
    pub try_charge: Fig,
    /// Calls served entirely from the per-CPU stock, and their pages.
    pub served_from_stock: Fig,
    /// Calls that charged the memory page_counter, and the pages they requested.
    pub charged_to_counter: Fig,
    /// Calls that failed, and the pages they requested.
    pub failed: Fig,
    /// Memory page_counter charges inside those calls (batches): count and pages.
    pub batches: Fig,
    /// Batch surplus parked in the stock (refills inside a charge of the same memcg).
    pub refill_batch: Fig,
    /// Pages given back to the stock outside charges (kmem, socket, object-stock uncharges).
    pub refill_return: Fig,
    /// Stock drains of this memcg and the pages they returned to the page_counter.
    pub drains: Fig,
    /// `drain_all_stock` calls for this memcg's subtree.
    pub drain_all: Fig,
    /// Calls that retried (count) and their retries (`pages`: the number of further attempts
    /// after a failed one, after reclaim or with a smaller batch).
    pub retries: Fig,
    /// Object stock refills and the kernel-memory bytes they put in (`pages`: bytes).
    pub obj_refill: Fig,
    /// Object stock drains and the bytes the stock held (`pages`: bytes).
    pub obj_drain: Fig,
    /// Memcg reclaim rounds begun by tasks charging this memcg.
    pub reclaim_rounds: Fig,
    /// Pages those rounds reclaimed (`pages`).
    pub reclaimed: Fig,
    /// `mem_cgroup_out_of_memory` invocations.
    pub oom: Fig,
    /// OOM kills with this memcg as the OOM domain.
    pub oom_kills: Fig,
    /// Inferred: rises of the memory page_counter between consecutive stat events of this
    /// memcg seen on this CPU (count and pages). Where the charge path is probed this matches
    /// the batches; it is the estimate where it is not.
    pub inferred_charged: Fig,
    /// Inferred: falls of the memory page_counter between consecutive stat events.
    pub inferred_uncharged: Fig,
    /// Page_counter operations by counter: `memory`, `swap` (v2) / `memsw` (v1), `kmem`,
    /// `tcpmem`.
    pub counters: BTreeMap<&'static str, CounterOps>,
    /// `memory.events` events of this memcg as they happened (hook `oom.memory_event`), by
    /// `enum memcg_memory_event` value.
    pub memory_events: BTreeMap<u32, u64>,
}

/// Name of a page_counter of `struct mem_cgroup`; the memsw/swap union is named after the
/// hierarchy version (v1 `memsw`, v2 `swap`).
pub fn counter_name(ctr: u32, version: Option<CgroupVersion>) -> &'static str {
    match ctr {
        counter::MEMORY => "memory",
        counter::SWAP => match version {
            Some(CgroupVersion::V1) => "memsw",
            Some(CgroupVersion::V2) => "swap",
            None => "memsw/swap",
        },
        counter::KMEM => "kmem",
        counter::TCPMEM => "tcpmem",
        _ => "-",
    }
}

/// Name of an aggregate kind (JSON `kind`).
pub fn kind_name(k: u32) -> &'static str {
    match k {
        kind::TC_CALL => "try_charge",
        kind::TC_OK_STOCK => "served_from_stock",
        kind::TC_OK_COUNTER => "charged_to_counter",
        kind::TC_FAIL => "failed",
        kind::TC_CHARGED => "batch",
        kind::PC_TRY_OK => "pc_try_charge_ok",
        kind::PC_TRY_FAIL => "pc_try_charge_failed",
        kind::PC_LIMIT_HIT => "limit_hit",
        kind::PC_CHARGE => "pc_charge",
        kind::PC_UNCHARGE => "pc_uncharge",
        kind::PC_CANCEL => "pc_cancel",
        kind::REFILL_BATCH => "refill_batch",
        kind::REFILL_RETURN => "refill_return",
        kind::DRAIN => "drain",
        kind::DRAIN_ALL => "drain_all",
        kind::RECLAIM => "reclaim",
        kind::RECLAIMED => "reclaimed",
        kind::OOM => "oom",
        kind::OOM_KILL => "oom_kill",
        kind::INFER_UP => "inferred_up",
        kind::INFER_DOWN => "inferred_down",
        kind::TC_RETRY => "retry",
        kind::OBJ_REFILL => "obj_refill",
        kind::OBJ_DRAIN => "obj_drain",
        kind::MEMORY_EVENT => "memory_event",
        _ => "unknown",
    }
}

impl CpuCharge {
    fn add(&mut self, k: u32, ctr: u32, v: ChargeValue) {
        let f = match k {
            kind::TC_CALL => &mut self.try_charge,
            kind::TC_OK_STOCK => &mut self.served_from_stock,
            kind::TC_OK_COUNTER => &mut self.charged_to_counter,
            kind::TC_FAIL => &mut self.failed,
            kind::TC_CHARGED => &mut self.batches,
            kind::REFILL_BATCH => &mut self.refill_batch,
            kind::REFILL_RETURN => &mut self.refill_return,
            kind::DRAIN => &mut self.drains,
            kind::DRAIN_ALL => &mut self.drain_all,
            kind::RECLAIM => &mut self.reclaim_rounds,
            kind::RECLAIMED => &mut self.reclaimed,
            kind::OOM => &mut self.oom,
            kind::OOM_KILL => &mut self.oom_kills,
            kind::INFER_UP => &mut self.inferred_charged,
            kind::INFER_DOWN => &mut self.inferred_uncharged,
            kind::TC_RETRY => &mut self.retries,
            kind::OBJ_REFILL => &mut self.obj_refill,
            kind::OBJ_DRAIN => &mut self.obj_drain,
            kind::MEMORY_EVENT => {
                *self.memory_events.entry(ctr).or_default() += v.events;
                return;
            }
            _ => {
                // Page_counter kinds; names are resolved per version by the caller of
                // `counter_ops`, stored here under the version-neutral name.
                let ops = self.counters.entry(counter_name(ctr, None)).or_default();
                let f = match k {
                    kind::PC_TRY_OK => &mut ops.try_charge_ok,
                    kind::PC_TRY_FAIL => &mut ops.try_charge_failed,
                    kind::PC_LIMIT_HIT => &mut ops.limit_hits,
                    kind::PC_CHARGE => &mut ops.charge,
                    kind::PC_UNCHARGE => &mut ops.uncharge,
                    kind::PC_CANCEL => &mut ops.cancel,
                    _ => return,
                };
                f.add(v);
                return;
            }
        };
        f.add(v);
    }

    fn merge(&mut self, o: &CpuCharge) {
        self.try_charge.merge(&o.try_charge);
        self.served_from_stock.merge(&o.served_from_stock);
        self.charged_to_counter.merge(&o.charged_to_counter);
        self.failed.merge(&o.failed);
        self.batches.merge(&o.batches);
        self.refill_batch.merge(&o.refill_batch);
        self.refill_return.merge(&o.refill_return);
        self.drains.merge(&o.drains);
        self.drain_all.merge(&o.drain_all);
        self.reclaim_rounds.merge(&o.reclaim_rounds);
        self.reclaimed.merge(&o.reclaimed);
        self.oom.merge(&o.oom);
        self.oom_kills.merge(&o.oom_kills);
        self.inferred_charged.merge(&o.inferred_charged);
        self.inferred_uncharged.merge(&o.inferred_uncharged);
        self.retries.merge(&o.retries);
        self.obj_refill.merge(&o.obj_refill);
        self.obj_drain.merge(&o.obj_drain);
        for (n, ops) in &o.counters {
            self.counters.entry(n).or_default().merge(ops);
        }
        for (e, c) in &o.memory_events {
            *self.memory_events.entry(*e).or_default() += c;
        }
    }

    /// Operations on the memory page_counter.
    pub fn memory(&self) -> CounterOps {
        self.counters.get("memory").copied().unwrap_or_default()
    }

    /// Pages served from the stock as derived from the other figures: pages requested by
    /// successful calls minus what they took from the page_counter directly (batches charged
    /// minus the surplus parked). Equals `served_from_stock.pages` when no charge nested.
    pub fn derived_stock_pages(&self) -> i64 {
        let ok = self.served_from_stock.pages + self.charged_to_counter.pages;
        ok as i64 - (self.batches.pages as i64 - self.refill_batch.pages as i64)
    }
}

/// The attached charge and OOM probes.
pub struct ChargeTracer {
    ebpf: SharedEbpf,
    ring: Option<Mutex<(RingBuf<MapData>, Vec<OomRecord>)>>,
    /// The filter's target (its inference readings live in their own slot).
    target: Option<u64>,
    /// Per hook: what was used and what failed or was rejected.
    pub outcomes: Vec<HookOutcome>,
    /// Kernel facts (keeps a tracefs mounted by us alive until drop).
    pub facts: Arc<KernelFacts>,
}

/// Whether a hook of the charge group is attached in `outcomes`.
fn attached(outcomes: &[HookOutcome], id: &str) -> bool {
    outcomes.iter().any(|o| o.id == id && o.used.is_some())
}

impl ChargeTracer {
    /// Attaches the charge- and OOM-path hooks with `filter`; `only` forces one flavour (its
    /// exit twin included). Hooks that cannot attach are reported in `outcomes`, not errors;
    /// the error cases are a missing BTF, a kernel layout without a required member, and a
    /// probes object that does not load.
    pub fn start(filter: Filter, only: Option<Flavour>) -> anyhow::Result<Self> {
        let facts = Arc::new(KernelFacts::gather());
        let kbtf = facts.btf()?;
        let mut scfg = attach::probe_config(kbtf, filter)?;
        scfg.flags |= probes_common::flags::INFER;
        let (ccfg, unusable) = charge_config(kbtf, &facts)?;
        let btf = aya::Btf::from_sys_fs()
            .map_err(|e| anyhow::anyhow!("aya cannot read kernel BTF: {e}"))?;
        let ebpf = Arc::new(Mutex::new(load(
            &scfg,
            &ccfg,
            &attach::MapSizes::default(),
        )?));
        Self::attach_on(ebpf, facts, &btf, filter, only, &unusable, &[])
    }

    /// Attaches the charge-, OOM-, inference- and lifecycle-path hooks on `ebpf`, a probes
    /// object loaded with the charge configuration (and the stat configuration's
    /// `flags::INFER`), where the hooks of `prior` (the stat hooks) may be attached already:
    /// their programs take the inference readings too and are shared, not loaded twice.
    pub fn attach_on(
        ebpf: SharedEbpf,
        facts: Arc<KernelFacts>,
        btf: &aya::Btf,
        filter: Filter,
        only: Option<Flavour>,
        unusable: &[(&'static str, String)],
        prior: &[HookOutcome],
    ) -> anyhow::Result<Self> {
        let mut guard = lock(&ebpf);
        let ebpf_mut: &mut Ebpf = &mut guard;
        let support = FlavourSupport::new();
        let mut plans: Vec<HookPlan> = plan::hooks()
            .iter()
            .filter(|h| {
                matches!(
                    h.group,
                    Group::Charge | Group::Oom | Group::Infer | Group::Lifecycle
                )
            })
            .map(|h| plan::plan_hook(h, &*facts, &support, only))
            .collect();
        // Hooks this kernel's layout rules out are rejected before attaching.
        reject_unusable(&mut plans, unusable);
        let mut outcomes = attach::attach_plans_after(ebpf_mut, &plans, btf, &facts, prior);
        // An exit hook is useless without its entry (every return would lack a frame); the
        // local-drain entry is useless without its exit (nothing would clear its mark), and
        // both are ruled out together by the layout.
        for (needed, dependent) in [
            ("charge.try_charge", "charge.try_charge_ret"),
            ("charge.pc_try", "charge.pc_try_ret"),
            ("charge.drain_local_ret", "charge.drain_local"),
        ] {
            if !attached(&outcomes, needed)
                && let Some(o) = outcomes.iter_mut().find(|o| o.id == dependent)
                && let Some(u) = o.used.take()
            {
                // Unloading a program detaches its links.
                match ebpf_mut.program_mut(u.program) {
                    Some(Program::FEntry(p)) => {
                        let _ = p.unload();
                    }
                    Some(Program::FExit(p)) => {
                        let _ = p.unload();
                    }
                    Some(Program::KProbe(p)) => {
                        let _ = p.unload();
                    }
                    _ => {}
                }
                o.failed.push((
                    u.flavour,
                    u.target,
                    format!("detached: {needed} is not attached"),
                ));
            }
        }
        // Report plan rejections (symbol inlined, only clones, layout) with the failures.
        for o in &mut outcomes {
            if o.used.is_some() {
                continue;
            }
            if let Some(p) = plans.iter().find(|p| p.id == o.id) {
                for v in &p.candidates {
                    if let Some(r) = &v.rejected
                        && !r.starts_with("not selected")
                    {
                        o.failed.push((
                            v.candidate.flavour,
                            v.candidate.target.to_string(),
                            r.clone(),
                        ));
                    }
                }
            }
        }
        let mut bits = 0u32;
        if attached(&outcomes, "charge.try_charge_ret") {
            bits |= runtime::TC_EXIT;
        }
        if attached(&outcomes, "charge.pc_try_ret") {
            bits |= runtime::PC_EXIT;
        }
        if attached(&outcomes, "charge.drain_local")
            && attached(&outcomes, "charge.drain_local_ret")
        {
            bits |= runtime::DL_EXIT;
        }
        {
            let mut rt: Array<_, u32> = Array::try_from(
                ebpf_mut
                    .map_mut(MAP_CHARGE_RUNTIME)
                    .ok_or_else(|| anyhow::anyhow!("map {MAP_CHARGE_RUNTIME} missing"))?,
            )?;
            rt.set(0, bits, 0)?;
        }
        let ring = match ebpf_mut.take_map(MAP_OOM_EVENTS) {
            Some(m) => Some(Mutex::new((RingBuf::try_from(m)?, Vec::new()))),
            None => None,
        };
        drop(guard);
        crate::test_hooks::attach_delay();
        Ok(Self {
            ebpf,
            ring,
            target: filter.target,
            outcomes,
            facts,
        })
    }

    /// The hooks that attached, as "flavour target".
    pub fn used(&self) -> Vec<&UsedCandidate> {
        self.outcomes
            .iter()
            .filter_map(|o| o.used.as_ref())
            .collect()
    }

    /// True if the charge attempts themselves are probed (`try_charge_memcg` entry).
    pub fn charge_path_attached(&self) -> bool {
        attached(&self.outcomes, "charge.try_charge")
    }

    /// One line saying why no charge hook attached (`None` if any did), e.g.
    /// `charge path: not attachable here (fentry/fexit: EPERM; kprobe/kretprobe: no kprobe PMU)`.
    pub fn unavailable(&self) -> Option<String> {
        unavailable_line(&self.outcomes)
    }

    /// True if page_counter readings are taken at stat events (inference).
    pub fn inference_attached(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| o.id.starts_with("infer.") && o.used.is_some())
    }

    /// Sets the baseline reading of a cgroup's memory page_counter (pages) for inference, so
    /// that the first movement after it is counted too (otherwise the first stat event of the
    /// cgroup only sets the baseline).
    pub fn seed_usage(&mut self, cgroup_id: u64, pages: u64) -> anyhow::Result<()> {
        let mut e = lock(&self.ebpf);
        if self.target == Some(cgroup_id) {
            let mut m: Array<&mut MapData, u64> = Array::try_from(
                e.map_mut(MAP_INFER_TARGET)
                    .ok_or_else(|| anyhow::anyhow!("map {MAP_INFER_TARGET} missing"))?,
            )?;
            // The slot holds reading + 1 (0: no reading yet).
            m.set(0, pages + 1, 0)?;
            return Ok(());
        }
        let mut m: aya::maps::HashMap<&mut MapData, u64, u64> = aya::maps::HashMap::try_from(
            e.map_mut(MAP_INFER_LAST)
                .ok_or_else(|| anyhow::anyhow!("map {MAP_INFER_LAST} missing"))?,
        )?;
        m.insert(cgroup_id, pages, 0)?;
        Ok(())
    }

    /// Seeds the memory-event hook's baseline of `cg` and every cgroup below it from their
    /// `memory.events.local` (v2), so that events from before the tracer started are not
    /// counted at a cgroup's first notification. Cgroups made later start from zero, which is
    /// their true baseline; on v1 (no such file) a pre-existing cgroup's earlier events are
    /// counted with its first new one, and so are its earlier swap events on v2 (only the
    /// hierarchical `memory.swap.events` exists). Returns the number of cgroups seeded.
    pub fn seed_memory_events(&mut self, cg: &crate::cgroup::MemCgroup) -> anyhow::Result<usize> {
        let names = memory_event_names(&self.facts);
        if names.is_empty() {
            return Ok(0);
        }
        let mut e = lock(&self.ebpf);
        let mut m: aya::maps::HashMap<&mut MapData, u64, MemEvents> = aya::maps::HashMap::try_from(
            e.map_mut(MAP_MEMCG_EVENTS)
                .ok_or_else(|| anyhow::anyhow!("map {MAP_MEMCG_EVENTS} missing"))?,
        )?;
        let mut seeded = 0;
        for c in std::iter::once(cg.clone()).chain(cg.descendants().unwrap_or_default()) {
            let Ok(Some(ev)) = c.events_local() else {
                continue;
            };
            let mut v = MemEvents::default();
            for (val, key) in &names {
                if let (Some(slot), Some(n)) = (v.v.get_mut(*val as usize), ev.get(key)) {
                    *slot = n;
                }
            }
            m.insert(c.id(), v, 0)?;
            seeded += 1;
        }
        Ok(seeded)
    }

    /// The memory page_counter (pages) at the cgroup's last stat event, if any was seen.
    pub fn last_reading(&self, cgroup_id: u64) -> anyhow::Result<Option<u64>> {
        let e = lock(&self.ebpf);
        if self.target == Some(cgroup_id) {
            let m: Array<&MapData, u64> = Array::try_from(
                e.map(MAP_INFER_TARGET)
                    .ok_or_else(|| anyhow::anyhow!("map {MAP_INFER_TARGET} missing"))?,
            )?;
            return Ok(m.get(&0, 0)?.checked_sub(1));
        }
        let m: aya::maps::HashMap<&MapData, u64, u64> = aya::maps::HashMap::try_from(
            e.map(MAP_INFER_LAST)
                .ok_or_else(|| anyhow::anyhow!("map {MAP_INFER_LAST} missing"))?,
        )?;
        match m.get(&cgroup_id, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the aggregates and counters now, and drains the OOM ring buffer.
    pub fn snapshot(&self) -> anyhow::Result<ChargeSnapshot> {
        let e = lock(&self.ebpf);
        let agg: PerCpuHashMap<_, ChargeKey, ChargeValue> = PerCpuHashMap::try_from(
            e.map(MAP_CHARGE_AGG)
                .ok_or_else(|| anyhow::anyhow!("map {MAP_CHARGE_AGG} missing"))?,
        )?;
        let mut rows = BTreeMap::new();
        for item in agg.iter() {
            let (k, values) = item?;
            rows.insert(k, values.iter().copied().collect());
        }
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(
            e.map(MAP_CHARGE_COUNTERS)
                .ok_or_else(|| anyhow::anyhow!("map {MAP_CHARGE_COUNTERS} missing"))?,
        )?;
        let sum = |slot: u32| -> anyhow::Result<u64> { Ok(arr.get(&slot, 0)?.iter().sum()) };
        let counters = ChargeCounters {
            seen: sum(ccounter::SEEN)?,
            recorded: sum(ccounter::RECORDED)?,
            filtered: sum(ccounter::FILTERED)?,
            map_full: sum(ccounter::MAP_FULL)?,
            read_failed: sum(ccounter::READ_FAILED)?,
            not_memcg: sum(ccounter::NOT_MEMCG)?,
            frame_lost: sum(ccounter::FRAME_LOST)?,
            frame_missing: sum(ccounter::FRAME_MISSING)?,
            ring_full: sum(ccounter::RING_FULL)?,
            ring_sent: sum(ccounter::RING_SENT)?,
            infer_race: sum(ccounter::INFER_RACE)?,
        };
        let oom = match &self.ring {
            Some(m) => {
                let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                let (ring, seen) = &mut *g;
                while let Some(item) = ring.next() {
                    if let Some(r) = OomRecord::decode(&item) {
                        seen.push(r);
                    }
                }
                seen.clone()
            }
            None => Vec::new(),
        };
        let (lifecycle, oom) = oom
            .into_iter()
            .partition(|r| matches!(r.kind, "mkdir" | "rmdir" | "release"));
        Ok(ChargeSnapshot {
            rows,
            counters,
            oom,
            lifecycle,
        })
    }
}

/// One aggregate of a window, named (JSON `charge.rows[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeRow {
    /// Cgroup path relative to the hierarchy root (`id:N` if unknown).
    pub cgroup: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// What is counted ([`kind_name`]).
    pub kind: &'static str,
    /// The page_counter (`memory`, `swap`/`memsw`, `kmem`, `tcpmem`), `null` for other kinds.
    pub counter: Option<&'static str>,
    /// CPU.
    pub cpu: usize,
    /// Pages.
    pub pages: u64,
    /// Events.
    pub events: u64,
}

/// The figures of one (cgroup, CPU) (JSON `charge.cpus[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeCpuRow {
    /// Cgroup path relative to the hierarchy root (`id:N` if unknown).
    pub cgroup: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// The figures.
    #[serde(flatten)]
    pub figures: CpuCharge,
}

/// The closing reading of one cgroup (JSON `charge.inferred_closing[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosingReading {
    /// Cgroup path relative to the hierarchy root.
    pub cgroup: String,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// Memory page_counter (pages) at the cgroup's last stat event.
    pub at_last_stat_event: u64,
    /// `memory.current` / `memory.usage_in_bytes` in pages at the end of the window.
    pub at_end: u64,
}

/// What the inferred figures are.
pub const INFERENCE_METHOD: &str = "inferred: memory page_counter read at every stat event \
     of the cgroup; a rise between two consecutive readings is counted as a charge (a batch), \
     a fall as an uncharge, on the CPU of the later stat event. Totals telescope exactly; the \
     per-CPU split is exact for a cgroup charging on one CPU at a time.";

/// The charge- and OOM-path part of a `trace` report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChargeSection {
    /// True if the charge attempts themselves were probed (`try_charge_memcg`).
    pub available: bool,
    /// Why not, in one line (`charge path: not attachable here (...)`).
    pub unavailable: Option<String>,
    /// Per charge/OOM hook: what was used, what failed or was rejected, and the loss.
    pub hooks: Vec<HookOutcome>,
    /// Figures per (cgroup, CPU), ordered by cgroup path and CPU.
    pub cpus: Vec<ChargeCpuRow>,
    /// The raw aggregates behind them.
    pub rows: Vec<ChargeRow>,
    /// OOM-path events in the window, oldest first.
    pub oom: Vec<OomRecord>,
    /// CLOCK_MONOTONIC nanoseconds at the start of the window (for `oom[].ts_ns`).
    pub start_ns: u64,
    /// How the `inferred_*` figures were obtained (`null` when no stat hook could take
    /// page_counter readings). They are estimates, labelled as such.
    pub inference: Option<String>,
    /// Per cgroup with readings: the page_counter at its last stat event and at the end of the
    /// window; the difference moved after the last stat event and is in no `inferred_*` row.
    pub inferred_closing: Vec<ClosingReading>,
    /// Charge/OOM events of the target subtree that were not recorded or not interpreted.
    pub lost: u64,
    /// All counters.
    pub counters: ChargeCounters,
    /// Names of the `memory_events` keys of `cpus[]` (`enum memcg_memory_event` values, from
    /// BTF, lowercase without `MEMCG_`: `max`, `oom`, `oom_kill`, ...).
    pub memory_event_names: BTreeMap<u32, String>,
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_ns`).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Records the charge section over a window; never fails the caller: a tracer that cannot
/// start becomes an "unavailable" section naming why.
pub struct ChargeRecorder {
    tracer: Result<ChargeTracer, String>,
    filter: Filter,
    start: Option<(ChargeSnapshot, u64)>,
}

/// The memory hierarchy's cgroup at `rel` (a path relative to its root), and its usage in
/// pages.
fn usage_pages_at(hier: &crate::cgroup::MemoryHierarchy, rel: &str) -> Option<u64> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let cg =
        crate::cgroup::MemCgroup::open(hier, &hier.root.join(rel.trim_start_matches('/'))).ok()?;
    if cg.is_root() {
        // The root's usage is synthesised, not its page_counter (kernel.md section 5.2).
        return None;
    }
    Some(cg.usage_bytes().ok()?? / page)
}

impl ChargeRecorder {
    /// Starts the charge tracer (see [`ChargeTracer::start`]).
    pub fn start(filter: Filter, only: Option<Flavour>) -> Self {
        Self::new(
            ChargeTracer::start(filter, only).map_err(|e| format!("{e:#}")),
            filter,
        )
    }

    /// Wraps a tracer started elsewhere (see [`crate::tracer::start_all`]).
    pub fn new(tracer: Result<ChargeTracer, String>, filter: Filter) -> Self {
        Self {
            tracer,
            filter,
            start: None,
        }
    }

    /// The tracer, if it started.
    pub fn tracer(&self) -> Option<&ChargeTracer> {
        self.tracer.as_ref().ok()
    }

    /// Marks the start of the window; seeds the target's page_counter reading for inference.
    pub fn begin(&mut self) -> anyhow::Result<()> {
        if let Ok(t) = &mut self.tracer {
            if let Some(id) = self.filter.target
                && let Ok(hier) = crate::cgroup::MemoryHierarchy::detect()
                && let Ok(Some(cg)) = crate::cgroup::MemCgroup::find_by_id(&hier, id)
            {
                if t.inference_attached()
                    && let Some(pages) = usage_pages_at(&hier, &cg.rel_path().display().to_string())
                {
                    t.seed_usage(id, pages)?;
                }
                t.seed_memory_events(&cg)?;
            }
            self.start = Some((t.snapshot()?, monotonic_ns()));
        }
        Ok(())
    }

    /// The section for the window since [`ChargeRecorder::begin`]. `paths` names cgroup ids;
    /// `version` names the memsw/swap counter.
    pub fn finish(
        &self,
        paths: &BTreeMap<u64, String>,
        version: Option<CgroupVersion>,
    ) -> anyhow::Result<ChargeSection> {
        let t = match &self.tracer {
            Ok(t) => t,
            Err(e) => {
                return Ok(ChargeSection {
                    unavailable: Some(format!("charge path: not attachable here ({e})")),
                    ..ChargeSection::default()
                });
            }
        };
        let end = t.snapshot()?;
        let (window, start_ns) = match &self.start {
            Some((s, ns)) => (end.since(s), *ns),
            None => (end, 0),
        };
        let mut sec = section(t, &window, start_ns, paths, version);
        if t.inference_attached() {
            sec.inference = Some(INFERENCE_METHOD.to_string());
            if let Ok(hier) = crate::cgroup::MemoryHierarchy::detect() {
                for (id, rel) in paths {
                    if let (Some(last), Some(now)) =
                        (t.last_reading(*id)?, usage_pages_at(&hier, rel))
                    {
                        sec.inferred_closing.push(ClosingReading {
                            cgroup: rel.clone(),
                            cgroup_id: *id,
                            at_last_stat_event: last,
                            at_end: now,
                        });
                    }
                }
            }
        }
        Ok(sec)
    }
}

/// Builds a section from a window. Pure apart from the tracer's hook outcomes.
fn section(
    t: &ChargeTracer,
    window: &ChargeSnapshot,
    start_ns: u64,
    paths: &BTreeMap<u64, String>,
    version: Option<CgroupVersion>,
) -> ChargeSection {
    let name = |id: u64| {
        paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("id:{id}"))
    };
    let mut cpus = Vec::new();
    for id in window.cgroups() {
        for mut f in window.figures(id) {
            if let Some(ops) = f.counters.remove(counter_name(counter::SWAP, None)) {
                f.counters.insert(counter_name(counter::SWAP, version), ops);
            }
            cpus.push(ChargeCpuRow {
                cgroup: name(id),
                cgroup_id: id,
                figures: f,
            });
        }
    }
    cpus.sort_by(|a, b| (&a.cgroup, a.figures.cpu).cmp(&(&b.cgroup, b.figures.cpu)));
    let mut rows = Vec::new();
    for (k, vals) in &window.rows {
        for (cpu, v) in vals.iter().enumerate() {
            if v.events == 0 {
                continue;
            }
            rows.push(ChargeRow {
                cgroup: name(k.cgroup_id),
                cgroup_id: k.cgroup_id,
                kind: kind_name(k.kind),
                counter: (k.counter != counter::NONE).then(|| counter_name(k.counter, version)),
                cpu,
                pages: v.pages,
                events: v.events,
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.cgroup, a.kind, a.counter, a.cpu).cmp(&(&b.cgroup, b.kind, b.counter, b.cpu))
    });
    ChargeSection {
        available: t.charge_path_attached(),
        unavailable: t.unavailable(),
        hooks: t.outcomes.clone(),
        cpus,
        rows,
        oom: window.oom.clone(),
        start_ns,
        inference: None,
        inferred_closing: Vec::new(),
        lost: window.counters.lost(),
        counters: window.counters,
        memory_event_names: memory_event_names(&t.facts),
    }
}

/// `enum memcg_memory_event` values and their `memory.events` names (`MEMCG_OOM_KILL` ->
/// `oom_kill`), from BTF; empty without it.
fn memory_event_names(facts: &KernelFacts) -> BTreeMap<u32, String> {
    facts
        .btf()
        .ok()
        .and_then(|b| b.enum_values("memcg_memory_event"))
        .unwrap_or_default()
        .into_iter()
        .filter(|(n, _)| n != "MEMCG_NR_MEMORY_EVENTS")
        .map(|(n, v)| (v as u32, n.trim_start_matches("MEMCG_").to_lowercase()))
        .collect()
}

/// Cuts `s` to `width` characters, marking the cut.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(width - 3).collect::<String>())
    }
}

/// The last `width` characters of a path, marked when cut.
fn tail(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        s.to_string()
    } else {
        format!("...{}", s.chars().skip(n - (width - 3)).collect::<String>())
    }
}

/// Renders the section as text within 100 columns.
pub fn render_section(c: &ChargeSection) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s);
    // "N of M hooks attached (flavours)" for the hooks whose id starts with `prefix`.
    let summary = |prefix: &str| {
        let group: Vec<&HookOutcome> = c
            .hooks
            .iter()
            .filter(|o| o.id.starts_with(prefix))
            .collect();
        let mut flavours: Vec<&str> = group
            .iter()
            .filter_map(|o| o.used.as_ref().map(|u| u.flavour.name()))
            .collect();
        flavours.sort_unstable();
        flavours.dedup();
        format!(
            "{} of {} hooks attached ({})",
            group.iter().filter(|o| o.used.is_some()).count(),
            group.len(),
            flavours.join(", ")
        )
    };
    match &c.unavailable {
        Some(line) => {
            let _ = writeln!(s, "{}", clip(line, 100));
        }
        None => {
            let _ = writeln!(s, "charge path: {}", summary("charge."));
        }
    }
    let _ = writeln!(s, "oom path: {}", summary("oom."));
    for o in c.hooks.iter().filter(|o| o.used.is_none()) {
        if c.unavailable.is_some() && o.id.starts_with("charge.") {
            continue;
        }
        let why = o
            .failed
            .first()
            .map_or("no candidate".to_string(), |(f, _, e)| {
                format!("{f}: {}", short_reason(e))
            });
        let _ = writeln!(
            s,
            "{}",
            clip(&format!("  not attached: {} ({why})", o.id), 100)
        );
    }
    if c.available {
        let _ = writeln!(
            s,
            "{:<19} {:>4} {:>9} {:>9} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>6}",
            "CGROUP",
            "CPU",
            "REQ",
            "STOCK",
            "BATCH",
            "BATCHPG",
            "PARKED",
            "RETURN",
            "DRAIN",
            "UNCHG",
            "FAIL"
        );
        for r in &c.cpus {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{:<19} {:>4} {:>9} {:>9} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>6}",
                tail(&r.cgroup, 19),
                f.cpu,
                f.try_charge.pages,
                f.served_from_stock.pages,
                f.batches.events,
                f.batches.pages,
                f.refill_batch.pages,
                f.refill_return.pages,
                f.drains.pages,
                f.memory().uncharge.pages,
                f.failed.events
            );
        }
        let _ = writeln!(
            s,
            "  pages; REQ requested by try_charge, STOCK served from the per-CPU stock, BATCH and\n  \
             BATCHPG page_counter charges, PARKED batch surplus put in the stock, RETURN pages\n  \
             given back to it, DRAIN drained from it, UNCHG memory uncharges, FAIL failed charges"
        );
    }
    if c.inference.is_some() {
        let rows: Vec<&ChargeCpuRow> = c
            .cpus
            .iter()
            .filter(|r| r.figures.inferred_charged.events + r.figures.inferred_uncharged.events > 0)
            .collect();
        let _ = writeln!(
            s,
            "inferred from page_counter readings at stat events (estimates, labelled inferred):"
        );
        if !rows.is_empty() {
            let _ = writeln!(
                s,
                "{:<30} {:>4} {:>10} {:>12} {:>10} {:>12}",
                "CGROUP", "CPU", "RISES", "RISE-PAGES", "FALLS", "FALL-PAGES"
            );
        }
        for r in rows {
            let f = &r.figures;
            let _ = writeln!(
                s,
                "{:<30} {:>4} {:>10} {:>12} {:>10} {:>12}",
                tail(&r.cgroup, 30),
                f.cpu,
                f.inferred_charged.events,
                f.inferred_charged.pages,
                f.inferred_uncharged.events,
                f.inferred_uncharged.pages
            );
        }
        for cl in &c.inferred_closing {
            let _ = writeln!(
                s,
                "{}",
                clip(
                    &format!(
                        "  {}: page_counter {} pages at its last stat event, {} at the end",
                        cl.cgroup, cl.at_last_stat_event, cl.at_end
                    ),
                    100
                )
            );
        }
    }
    // Limits, reclaim and OOM per cgroup, summed over CPUs.
    let mut per: BTreeMap<(&str, u64), CpuCharge> = BTreeMap::new();
    for r in &c.cpus {
        per.entry((r.cgroup.as_str(), r.cgroup_id))
            .or_default()
            .merge(&r.figures);
    }
    for ((cg, _), f) in &per {
        let mut parts = Vec::new();
        for (n, ops) in &f.counters {
            if ops.limit_hits.events > 0 {
                parts.push(format!("{n} limit hit {}x", ops.limit_hits.events));
            }
        }
        if f.retries.events > 0 {
            parts.push(format!(
                "{} charges retried {} times",
                f.retries.events, f.retries.pages
            ));
        }
        if f.reclaim_rounds.events > 0 {
            parts.push(format!(
                "reclaim {} rounds, {} pages",
                f.reclaim_rounds.events, f.reclaimed.pages
            ));
        }
        if f.obj_refill.events + f.obj_drain.events > 0 {
            parts.push(format!(
                "object stock: {} refills {} B, {} drains {} B",
                f.obj_refill.events, f.obj_refill.pages, f.obj_drain.events, f.obj_drain.pages
            ));
        }
        if f.oom.events > 0 || f.oom_kills.events > 0 {
            parts.push(format!(
                "OOM invoked {}, kills {}",
                f.oom.events, f.oom_kills.events
            ));
        }
        if !parts.is_empty() {
            let _ = writeln!(s, "{}", clip(&format!("  {cg}: {}", parts.join("; ")), 100));
        }
        // On a line of its own, the path cut from the left, so that the events survive.
        if !f.memory_events.is_empty() {
            let ev: Vec<String> = f
                .memory_events
                .iter()
                .map(|(e, n)| match c.memory_event_names.get(e) {
                    Some(name) => format!("{name} {n}"),
                    None => format!("#{e} {n}"),
                })
                .collect();
            let _ = writeln!(
                s,
                "{}",
                clip(
                    &format!("  {}: memory.events {}", tail(cg, 40), ev.join(", ")),
                    100
                )
            );
        }
    }
    for e in &c.oom {
        let at = e.ts_ns.saturating_sub(c.start_ns) as f64 / 1e9;
        let who = if e.comm.is_empty() {
            format!("pid {}", e.pid)
        } else {
            format!("pid {} ({})", e.pid, e.comm)
        };
        let what = match e.kind {
            "invoked" => format!("OOM invoked in cgroup id {} by {who}", e.cgroup_id),
            "kill" => format!("OOM kill in cgroup id {}: {who}", e.cgroup_id),
            _ => format!("OOM victim {who}"),
        };
        let order = e.order.map(|o| format!(", order {o}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{}",
            clip(&format!("  +{at:.3}s cpu {}: {what}{order}", e.cpu), 100)
        );
    }
    if c.available || !c.oom.is_empty() {
        let k = &c.counters;
        let _ = writeln!(
            s,
            "charge/OOM: lost {} events (map full {}, read failed {}, frames {}, ring {}); {} \
             filtered",
            c.lost, k.map_full, k.read_failed, k.frame_lost, k.ring_full, k.filtered
        );
    }
    s
}

/// Shortens a kernel/aya error for the one-line summary.
fn short_reason(e: &str) -> String {
    if e.contains("Operation not permitted") || e.contains("os error 1)") {
        "EPERM".into()
    } else if e.contains("no kprobe PMU") {
        "no kprobe PMU".into()
    } else {
        e.chars().take(60).collect()
    }
}

/// The one-line "not attachable here" summary over the charge group's outcomes.
pub fn unavailable_line(outcomes: &[HookOutcome]) -> Option<String> {
    let charge: Vec<&HookOutcome> = outcomes
        .iter()
        .filter(|o| o.id.starts_with("charge."))
        .collect();
    if charge.is_empty() || charge.iter().any(|o| o.used.is_some()) {
        return None;
    }
    let mut by_flavour: BTreeMap<&'static str, String> = BTreeMap::new();
    for o in &charge {
        for (f, _, e) in &o.failed {
            let fam = match f {
                Flavour::Fentry | Flavour::Fexit => "fentry/fexit",
                Flavour::Kprobe | Flavour::Kretprobe => "kprobe/kretprobe",
                other => other.name(),
            };
            // The first reason per family: attach failures come before plan rejections, and
            // `try_charge_memcg` (the first hook) shows the kernel's own answer.
            by_flavour.entry(fam).or_insert_with(|| short_reason(e));
        }
    }
    let why = if by_flavour.is_empty() {
        "no candidate exists in this kernel".to_string()
    } else {
        by_flavour
            .iter()
            .map(|(f, r)| format!("{f}: {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some(format!("charge path: not attachable here ({why})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroups_hierarchy_of_memory() {
        let text =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t7\t120\t1\n";
        assert_eq!(parse_proc_cgroups_hierarchy(text, "memory"), Some(7));
        assert_eq!(parse_proc_cgroups_hierarchy(text, "pids"), None);
    }

    fn key(kind: u32, counter: u32) -> ChargeKey {
        ChargeKey {
            cgroup_id: 5,
            kind,
            counter,
        }
    }

    fn v(events: u64, pages: u64) -> ChargeValue {
        ChargeValue { pages, events }
    }

    /// 100 one-page charges on CPU 1 from an empty stock: 2 batches of 64, 28 surplus parked,
    /// 98 pages served from the stock.
    fn window() -> ChargeSnapshot {
        let mut s = ChargeSnapshot::default();
        let two = |x| vec![ChargeValue::default(), x];
        s.rows
            .insert(key(kind::TC_CALL, counter::NONE), two(v(100, 100)));
        s.rows
            .insert(key(kind::TC_OK_STOCK, counter::NONE), two(v(98, 98)));
        s.rows
            .insert(key(kind::TC_OK_COUNTER, counter::NONE), two(v(2, 2)));
        s.rows
            .insert(key(kind::TC_CHARGED, counter::MEMORY), two(v(2, 128)));
        s.rows
            .insert(key(kind::PC_TRY_OK, counter::MEMORY), two(v(2, 128)));
        s.rows
            .insert(key(kind::REFILL_BATCH, counter::NONE), two(v(2, 126)));
        s
    }

    #[test]
    fn figures_derive_stock_service() {
        let s = window();
        let f = s.figures(5);
        assert_eq!(f.len(), 1);
        let c = &f[0];
        assert_eq!(c.cpu, 1);
        assert_eq!(
            c.try_charge,
            Fig {
                events: 100,
                pages: 100
            }
        );
        assert_eq!(c.served_from_stock.pages, 98);
        assert_eq!(
            c.batches,
            Fig {
                events: 2,
                pages: 128
            }
        );
        assert_eq!(c.derived_stock_pages(), 98);
        assert_eq!(c.memory().try_charge_ok.pages, 128);
        assert_eq!(c.memory().net_pages(), 128);
        let t = s.totals(5);
        assert_eq!(t.cpu, usize::MAX);
        assert_eq!(t.try_charge.pages, 100);
        assert!(s.figures(6).is_empty());
        assert_eq!(s.total(5, kind::TC_CALL, counter::NONE).events, 100);
    }

    #[test]
    fn since_subtracts_and_keeps_new_oom_events() {
        let a = window();
        let mut b = window();
        b.rows.insert(
            key(kind::TC_CALL, counter::NONE),
            vec![v(1, 1), v(101, 101)],
        );
        let rec = OomRecord {
            kind: "kill",
            cpu: 0,
            ts_ns: 1,
            cgroup_id: 5,
            pid: 42,
            comm: "x".into(),
            order: Some(0),
            current_pid: 42,
        };
        b.oom.push(rec.clone());
        let d = b.since(&a);
        assert_eq!(d.rows.len(), 1);
        assert_eq!(
            d.per_cpu(5, kind::TC_CALL, counter::NONE),
            vec![v(1, 1), v(1, 1)]
        );
        assert_eq!(d.oom, vec![rec]);
    }

    #[test]
    fn decodes_oom_events() {
        let mut e = OomEvent {
            kind: oom_kind::KILL,
            cpu: 3,
            ts_ns: 9,
            cgroup_id: 77,
            pid: 1234,
            order: 0,
            comm: [0; 16],
            current_pid: 1234,
            _pad: 0,
        };
        e.comm[..11].copy_from_slice(b"memcg-drift");
        // SAFETY: viewing a plain #[repr(C)] integer struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), std::mem::size_of::<OomEvent>())
        };
        let r = OomRecord::decode(bytes).unwrap();
        assert_eq!(
            (r.kind, r.pid, r.comm.as_str(), r.cgroup_id, r.order),
            ("kill", 1234, "memcg-drift", 77, Some(0))
        );
        assert!(OomRecord::decode(&bytes[..10]).is_none());
        e.kind = 99;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), std::mem::size_of::<OomEvent>())
        };
        assert!(OomRecord::decode(bytes).is_none());
    }

    #[test]
    fn unavailable_line_names_each_flavour_family_once() {
        let o = |id: &'static str, failed: Vec<(Flavour, String, String)>| HookOutcome {
            id,
            used: None,
            failed,
            loss: "",
        };
        let eperm = "the BPF_PROG_LOAD syscall failed: Operation not permitted (os error 1)";
        let outcomes = vec![
            o(
                "charge.try_charge",
                vec![
                    (Flavour::Fentry, "try_charge_memcg".into(), eperm.into()),
                    (
                        Flavour::Kprobe,
                        "try_charge_memcg".into(),
                        "kernel has no kprobe PMU (CONFIG_KPROBES off)".into(),
                    ),
                ],
            ),
            o(
                "charge.try_charge_ret",
                vec![(Flavour::Fexit, "try_charge_memcg".into(), eperm.into())],
            ),
            o("oom.mark_victim", vec![]),
        ];
        assert_eq!(
            unavailable_line(&outcomes).unwrap(),
            "charge path: not attachable here (fentry/fexit: EPERM; kprobe/kretprobe: no kprobe PMU)"
        );
        let mut ok = outcomes;
        ok[0].used = Some(UsedCandidate {
            flavour: Flavour::Fentry,
            target: "try_charge_memcg".into(),
            program: "fentry_try_charge",
        });
        assert_eq!(unavailable_line(&ok), None);
    }

    #[test]
    fn section_text_fits_100_columns() {
        let w = window();
        let mut f = w.figures(5).remove(0);
        f.counters.entry("memory").or_default().limit_hits = Fig {
            events: 3,
            pages: 192,
        };
        f.oom = Fig {
            events: 1,
            pages: 0,
        };
        f.reclaim_rounds = Fig {
            events: 36,
            pages: 0,
        };
        let row = ChargeCpuRow {
            cgroup: "/memcg-drift/123456-789012/a-rather-long-cgroup-name/child".into(),
            cgroup_id: 5,
            figures: f,
        };
        let long =
            "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1) ".repeat(4);
        let sec = ChargeSection {
            available: true,
            unavailable: None,
            hooks: vec![
                HookOutcome {
                    id: "charge.try_charge",
                    used: Some(UsedCandidate {
                        flavour: Flavour::Fentry,
                        target: "try_charge_memcg".into(),
                        program: "fentry_try_charge",
                    }),
                    failed: vec![],
                    loss: "",
                },
                HookOutcome {
                    id: "charge.drain_all_stock",
                    used: None,
                    failed: vec![(Flavour::Fentry, "drain_all_stock".into(), long.clone())],
                    loss: "",
                },
            ],
            cpus: vec![row],
            rows: vec![],
            oom: vec![OomRecord {
                kind: "kill",
                cpu: 127,
                ts_ns: 5_000_000_000,
                cgroup_id: 123_456_789,
                pid: 4_000_000,
                comm: "a-very-long-nam".into(),
                order: Some(0),
                current_pid: 1,
            }],
            start_ns: 1_000_000_000,
            inference: Some(INFERENCE_METHOD.into()),
            inferred_closing: vec![ClosingReading {
                cgroup: "/memcg-drift/123456-789012/a-rather-long-cgroup-name/child/and/more/x"
                    .into(),
                cgroup_id: 5,
                at_last_stat_event: 1_000_000,
                at_end: 1_000_064,
            }],
            lost: 0,
            counters: ChargeCounters::default(),
            memory_event_names: [(2, "max"), (3, "oom"), (4, "oom_kill")]
                .into_iter()
                .map(|(i, n)| (i, n.to_string()))
                .collect(),
        };
        let mut sec = sec;
        sec.cpus[0].figures.inferred_charged = Fig {
            events: 2,
            pages: 128,
        };
        sec.cpus[0].figures.memory_events = BTreeMap::from([(2, 5), (3, 1), (4, 1), (9, 2)]);
        let text = render_section(&sec);
        assert!(
            text.contains("charge path: 1 of 2 hooks attached (fentry)"),
            "{text}"
        );
        assert!(
            text.contains("inferred from page_counter readings"),
            "{text}"
        );
        assert!(text.contains("memory limit hit 3x"), "{text}");
        assert!(
            text.contains("memory.events max 5, oom 1, oom_kill 1, #9 2"),
            "{text}"
        );
        assert!(text.contains("+4.000s cpu 127: OOM kill"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "too wide: {line}");
        }
        let off = ChargeSection {
            unavailable: Some(format!("charge path: not attachable here ({long})")),
            ..ChargeSection::default()
        };
        for line in render_section(&off).lines() {
            assert!(line.chars().count() <= 100, "too wide: {line}");
        }
    }
}
