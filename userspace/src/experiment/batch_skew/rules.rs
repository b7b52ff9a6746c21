//! The kernel's rules batch-skew checks against: the seed's old per-CPU rule (simulated), the
//! spill rule of batched kernels (5.4-5.12), and the charge stock.

use crate::experiment::PhaseRecord;

/// The seed's old per-CPU rule: each update `v` makes `x += v`; when `|x| > threshold` the CPU
/// flushes `x` to the aggregate. Returns what each CPU keeps at the end.
pub fn old_rule(cpus: &[usize], alloc: usize, batch: i64, threshold: i64) -> Vec<(usize, i64)> {
    // The same per-CPU rule as 5.10's [`spill`]; the seed's kernel differed in never flushing
    // a dead cgroup's remainder, which is what the caller counts. Faults charge one page at a
    // time on the alloc CPU; a zap uncharges its pages in one update per CPU.
    let touch = cpus.len() * batch as usize;
    let kept = |c: usize| {
        let faults = std::iter::repeat_n(1, if c == alloc { touch } else { 0 });
        let zap = cpus.contains(&c).then_some(-batch);
        spill(0, faults.chain(zap), threshold).0
    };
    let all: std::collections::BTreeMap<usize, i64> =
        cpus.iter().chain([&alloc]).map(|&c| (c, kept(c))).collect();
    all.into_iter().collect()
}

/// The spill rule of batched kernels (5.4-5.12, `__mod_memcg_state`): each update `v` makes
/// `x += v`, and when `|x| > threshold` the CPU adds `x` to the aggregate and keeps 0. Returns
/// the residue left and what was spilled.
pub fn spill(x0: i64, updates: impl IntoIterator<Item = i64>, threshold: i64) -> (i64, i64) {
    let (mut x, mut spilled) = (x0, 0);
    for v in updates {
        x += v;
        if x.abs() > threshold {
            spilled += x;
            x = 0;
        }
    }
    (x, spilled)
}

/// The updates a phase record holds for one CPU, one by one, where the record says: all of the
/// phase's updates of the item on that CPU (no other CPU moved it), and either one update or
/// `|total|` updates of one page each. `None` otherwise.
pub(super) fn updates_on(
    ph: &PhaseRecord,
    cgroup: &str,
    item: &str,
    cpu: usize,
) -> Option<Vec<i64>> {
    let Some(r) = ph.stat(cgroup, item) else {
        return Some(Vec::new());
    };
    // `per_cpu` lists the CPUs with updates.
    let Some(&here) = r.per_cpu.get(&cpu) else {
        return Some(Vec::new());
    };
    if r.per_cpu.len() > 1 {
        return None;
    }
    if r.events == 1 {
        return Some(vec![here]);
    }
    (r.events == here.unsigned_abs()).then(|| vec![here.signum(); r.events as usize])
}

/// The stock rule of the module docs: `c` one-page charges from `s0` stocked pages, with a
/// charge batch of `b` pages.
pub fn stock_after(s0: i64, c: i64, b: i64) -> i64 {
    let need = (c - s0).max(0);
    s0 + b * ((need + b - 1) / b) - c
}
