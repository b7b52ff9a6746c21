//! Reading the probes' maps: per-CPU stat aggregates and the loss counters. Snapshots are
//! plain data so that phase windows are differences of two snapshots.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{PerCpuArray, PerCpuHashMap},
};
use probes_common::{
    MAP_COUNTERS, MAP_STAT_AGG, MAP_STAT_SLOTS, STAT_DENSE_ITEMS, StatBlock, StatKey, StatValue,
    counter,
};
use serde::Serialize;

/// Loss and activity counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Stat events seen by the stat hooks.
    pub seen: u64,
    /// Events added to an aggregate.
    pub recorded: u64,
    /// Events of cgroups outside the target subtree.
    pub filtered: u64,
    /// Events lost because the aggregate map was full.
    pub map_full: u64,
    /// Events lost because a kernel read failed.
    pub read_failed: u64,
    /// Stat updates the kernel did not run the stat programs for because the same program was
    /// already running on that CPU (an update in an interrupt that came while it ran): the
    /// programs' `recursion_misses`. They are of any cgroup (the kernel does not say which), so
    /// they are reported beside `lost`, not in it. `None` where the kernel does not report them.
    pub missed: Option<u64>,
}

impl Counters {
    /// Events of the recorded cgroups that should have been recorded and were not.
    pub fn lost(&self) -> u64 {
        self.map_full + self.read_failed
    }

    fn minus(&self, o: &Self) -> Self {
        Self {
            seen: self.seen.wrapping_sub(o.seen),
            recorded: self.recorded.wrapping_sub(o.recorded),
            filtered: self.filtered.wrapping_sub(o.filtered),
            map_full: self.map_full.wrapping_sub(o.map_full),
            read_failed: self.read_failed.wrapping_sub(o.read_failed),
            missed: self.missed.zip(o.missed).map(|(a, b)| a.wrapping_sub(b)),
        }
    }
}

/// One reading of the stat aggregates: per key, one value per possible CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatSnapshot {
    /// Aggregates; the vector is indexed by CPU id.
    pub rows: BTreeMap<StatKey, Vec<StatValue>>,
    /// Counters summed over CPUs.
    pub counters: Counters,
}

/// Why the stat maps could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The loaded object lacks a map.
    #[error("map {0} missing")]
    MissingMap(&'static str),
    /// aya could not read a map.
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
}

impl StatSnapshot {
    /// Reads the maps of a loaded probe set where slot `i` holds the aggregates of cgroup
    /// `slots[i]` (0: an unused slot).
    pub fn read(ebpf: &Ebpf, slots: &[u64]) -> Result<Self, CollectError> {
        let agg: PerCpuHashMap<_, StatKey, StatValue> = PerCpuHashMap::try_from(
            ebpf.map(MAP_STAT_AGG)
                .ok_or(CollectError::MissingMap(MAP_STAT_AGG))?,
        )?;
        let mut rows: BTreeMap<StatKey, Vec<StatValue>> = BTreeMap::new();
        for item in agg.iter() {
            let (k, values) = item?;
            rows.insert(k, values.iter().copied().collect());
        }
        let blocks: PerCpuArray<_, StatBlock> = PerCpuArray::try_from(
            ebpf.map(MAP_STAT_SLOTS)
                .ok_or(CollectError::MissingMap(MAP_STAT_SLOTS))?,
        )?;
        for (slot, &cgroup_id) in (0u32..).zip(slots) {
            if cgroup_id == 0 {
                continue;
            }
            let per_cpu = blocks.get(&slot, 0)?;
            for i in 0..2 * STAT_DENSE_ITEMS {
                let index = i as usize;
                if per_cpu.iter().all(|b| b.v[index].events == 0) {
                    continue;
                }
                let key = StatKey {
                    cgroup_id,
                    item: i % STAT_DENSE_ITEMS,
                    hook: i / STAT_DENSE_ITEMS,
                };
                add_values(
                    rows.entry(key).or_default(),
                    per_cpu.iter().map(|b| b.v[index]),
                );
            }
        }
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(
            ebpf.map(MAP_COUNTERS)
                .ok_or(CollectError::MissingMap(MAP_COUNTERS))?,
        )?;
        let sum = |slot: u32| -> Result<u64, CollectError> { Ok(arr.get(&slot, 0)?.iter().sum()) };
        // Recorded events are counted by the aggregates themselves; every event seen ends in
        // exactly one of recorded, filtered, map full or read failed.
        let recorded = rows.values().flatten().map(|v| v.events).sum();
        let (filtered, map_full, read_failed) = (
            sum(counter::STAT_FILTERED)?,
            sum(counter::STAT_MAP_FULL)?,
            sum(counter::STAT_READ_FAILED)?,
        );
        let counters = Counters {
            seen: recorded + filtered + map_full + read_failed,
            recorded,
            filtered,
            map_full,
            read_failed,
            // Read from the programs, not the maps (see `StatTracer::snapshot`).
            missed: None,
        };
        Ok(Self { rows, counters })
    }

    /// What happened between `earlier` and `self` (keys absent earlier count from zero).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut rows = BTreeMap::new();
        for (k, now) in &self.rows {
            let before = earlier.rows.get(k);
            let diff: Vec<StatValue> = now
                .iter()
                .enumerate()
                .map(|(cpu, v)| {
                    let b = before.and_then(|b| b.get(cpu)).copied().unwrap_or_default();
                    StatValue {
                        delta: v.delta - b.delta,
                        events: v.events - b.events,
                    }
                })
                .collect();
            if diff.iter().any(|d| d.events != 0) {
                rows.insert(*k, diff);
            }
        }
        Self {
            rows,
            counters: self.counters.minus(&earlier.counters),
        }
    }

    /// Net delta of (cgroup, item) on each CPU, summed over hooks.
    pub fn per_cpu(&self, cgroup_id: u64, item: u32) -> Vec<i64> {
        let mut out: Vec<i64> = Vec::new();
        for (k, vals) in &self.rows {
            if k.cgroup_id == cgroup_id && k.item == item {
                if out.len() < vals.len() {
                    out.resize(vals.len(), 0);
                }
                for (cpu, v) in vals.iter().enumerate() {
                    out[cpu] += v.delta;
                }
            }
        }
        out
    }
}

/// Adds per-CPU values into `acc` (grown to fit).
fn add_values(acc: &mut Vec<StatValue>, values: impl ExactSizeIterator<Item = StatValue>) {
    if acc.len() < values.len() {
        acc.resize(values.len(), StatValue::default());
    }
    for (a, v) in acc.iter_mut().zip(values) {
        a.delta += v.delta;
        a.events += v.events;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(item: u32) -> StatKey {
        StatKey {
            cgroup_id: 7,
            item,
            hook: 1,
        }
    }

    #[test]
    fn since_subtracts_per_cpu_and_drops_idle_keys() {
        let mut a = StatSnapshot::default();
        a.rows.insert(
            key(1),
            vec![
                StatValue {
                    delta: 5,
                    events: 5,
                },
                StatValue::default(),
            ],
        );
        a.rows.insert(
            key(2),
            vec![
                StatValue {
                    delta: 1,
                    events: 1,
                },
                StatValue::default(),
            ],
        );
        a.counters.seen = 10;
        let mut b = a.clone();
        b.rows.insert(
            key(1),
            vec![
                StatValue {
                    delta: 5,
                    events: 5,
                },
                StatValue {
                    delta: -3,
                    events: 3,
                },
            ],
        );
        b.rows.insert(
            key(3),
            vec![
                StatValue {
                    delta: 64,
                    events: 64,
                },
                StatValue::default(),
            ],
        );
        b.counters.seen = 80;
        let d = b.since(&a);
        assert_eq!(d.rows.len(), 2, "key 2 did not move");
        assert_eq!(d.per_cpu(7, 1), vec![0, -3]);
        assert_eq!(d.per_cpu(7, 3), vec![64, 0]);
        assert_eq!(d.per_cpu(7, 2), Vec::<i64>::new());
        assert_eq!(d.counters.seen, 70);
    }
}
