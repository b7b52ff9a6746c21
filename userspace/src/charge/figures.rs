//! What one window of the charge aggregates says: counters, OOM records, snapshots and the
//! per-(cgroup, CPU) figures derived from them.

use super::*;

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

    pub(super) fn merge(&mut self, o: &CpuCharge) {
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
