//! The running charge tracer: plan, attach, snapshots, OOM records.

use super::*;

/// Why the charge tracer could not start or be read.
#[derive(Debug, thiserror::Error)]
pub enum ChargeTracerError {
    /// The kernel's BTF is unavailable.
    #[error(transparent)]
    Btf(#[from] crate::kernel::BtfUnavailable),
    /// aya could not read the kernel's BTF.
    #[error("aya cannot read kernel BTF: {0}")]
    AyaBtf(aya::BtfError),
    /// The stat configuration could not be built, or the probes object did not load.
    #[error(transparent)]
    Load(#[from] attach::LoadError),
    /// The charge probes' kernel layout could not be resolved.
    #[error(transparent)]
    Config(#[from] ChargeConfigError),
    /// The loaded object lacks a map.
    #[error("map {0} missing")]
    MissingMap(&'static str),
    /// aya could not read or write a map.
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
}

/// The attached charge and OOM probes.
pub struct ChargeTracer {
    ebpf: SharedEbpf,
    ring: Option<Mutex<(RingBuf<MapData>, Vec<OomRecord>)>>,
    /// The cgroups with dense slots (their inference readings live in `INFER_SLOT`).
    slots: attach::Slots,
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
    pub fn start(filter: Filter, only: Option<Flavour>) -> Result<Self, ChargeTracerError> {
        let facts = Arc::new(KernelFacts::gather());
        let kbtf = facts.btf()?;
        let mut scfg = attach::probe_config(kbtf, filter)?;
        scfg.flags |= probes_common::flags::INFER;
        let (ccfg, unusable) = charge_config(kbtf, &facts)?;
        let btf = aya::Btf::from_sys_fs().map_err(ChargeTracerError::AyaBtf)?;
        let mut ebpf = load(
            attach::loader_without_btf(),
            &scfg,
            &ccfg,
            &attach::MapSizes::default(),
        )?;
        let slots = attach::Slots::new(filter.target, [], 1);
        slots.seed(&mut ebpf)?;
        let ebpf = Arc::new(Mutex::new(ebpf));
        Self::attach_on(ebpf, facts, &btf, slots, only, &unusable, &[])
    }

    /// Attaches the charge-, OOM-, inference- and lifecycle-path hooks on `ebpf`, a probes
    /// object loaded with the charge configuration (and the stat configuration's
    /// `flags::INFER`), where the hooks of `prior` (the stat hooks) may be attached already:
    /// their programs take the inference readings too and are shared, not loaded twice.
    pub fn attach_on(
        ebpf: SharedEbpf,
        facts: Arc<KernelFacts>,
        btf: &aya::Btf,
        slots: attach::Slots,
        only: Option<Flavour>,
        unusable: &[(&'static str, String)],
        prior: &[HookOutcome],
    ) -> Result<Self, ChargeTracerError> {
        let mut guard = lock(&ebpf);
        let ebpf_mut: &mut Ebpf = &mut guard;
        let support = FlavourSupport::<std::convert::Infallible>::new();
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
                    .ok_or(ChargeTracerError::MissingMap(MAP_CHARGE_RUNTIME))?,
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
            slots,
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
    pub fn seed_usage(&mut self, cgroup_id: u64, pages: u64) -> Result<(), ChargeTracerError> {
        let mut e = lock(&self.ebpf);
        if let Some(slot) = self.slots.of(cgroup_id) {
            let mut m: Array<&mut MapData, u64> = Array::try_from(
                e.map_mut(MAP_INFER_SLOT)
                    .ok_or(ChargeTracerError::MissingMap(MAP_INFER_SLOT))?,
            )?;
            // The slot holds reading + 1 (0: no reading yet).
            m.set(slot, pages + 1, 0)?;
            return Ok(());
        }
        let mut m: aya::maps::HashMap<&mut MapData, u64, u64> = aya::maps::HashMap::try_from(
            e.map_mut(MAP_INFER_LAST)
                .ok_or(ChargeTracerError::MissingMap(MAP_INFER_LAST))?,
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
    pub fn seed_memory_events(
        &mut self,
        cg: &crate::cgroup::MemCgroup,
    ) -> Result<usize, ChargeTracerError> {
        let names = memory_event_names(&self.facts);
        if names.is_empty() {
            return Ok(0);
        }
        let mut e = lock(&self.ebpf);
        let mut m: aya::maps::HashMap<&mut MapData, u64, MemEvents> = aya::maps::HashMap::try_from(
            e.map_mut(MAP_MEMCG_EVENTS)
                .ok_or(ChargeTracerError::MissingMap(MAP_MEMCG_EVENTS))?,
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
    pub fn last_reading(&self, cgroup_id: u64) -> Result<Option<u64>, ChargeTracerError> {
        let e = lock(&self.ebpf);
        if let Some(slot) = self.slots.of(cgroup_id) {
            let m: Array<&MapData, u64> = Array::try_from(
                e.map(MAP_INFER_SLOT)
                    .ok_or(ChargeTracerError::MissingMap(MAP_INFER_SLOT))?,
            )?;
            return Ok(m.get(&slot, 0)?.checked_sub(1));
        }
        let m: aya::maps::HashMap<&MapData, u64, u64> = aya::maps::HashMap::try_from(
            e.map(MAP_INFER_LAST)
                .ok_or(ChargeTracerError::MissingMap(MAP_INFER_LAST))?,
        )?;
        match m.get(&cgroup_id, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the aggregates and counters now, and drains the OOM ring buffer.
    pub fn snapshot(&self) -> Result<ChargeSnapshot, ChargeTracerError> {
        let e = lock(&self.ebpf);
        let agg: PerCpuHashMap<_, ChargeKey, ChargeValue> = PerCpuHashMap::try_from(
            e.map(MAP_CHARGE_AGG)
                .ok_or(ChargeTracerError::MissingMap(MAP_CHARGE_AGG))?,
        )?;
        let mut rows: BTreeMap<ChargeKey, Vec<ChargeValue>> = BTreeMap::new();
        for item in agg.iter() {
            let (k, values) = item?;
            rows.insert(k, values.iter().copied().collect());
        }
        // The traced cgroup's aggregates live in their dense block.
        let target = self.slots.ids().first().copied().unwrap_or(0);
        if target != 0 {
            let dense: PerCpuArray<_, ChargeDense> = PerCpuArray::try_from(
                e.map(MAP_CHARGE_DENSE)
                    .ok_or(ChargeTracerError::MissingMap(MAP_CHARGE_DENSE))?,
            )?;
            merge_dense(&mut rows, target, &dense.get(&0, 0)?);
        }
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(
            e.map(MAP_CHARGE_COUNTERS)
                .ok_or(ChargeTracerError::MissingMap(MAP_CHARGE_COUNTERS))?,
        )?;
        let sum =
            |slot: u32| -> Result<u64, ChargeTracerError> { Ok(arr.get(&slot, 0)?.iter().sum()) };
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

/// Adds the traced cgroup's dense block (one [`ChargeDense`] per CPU) to `rows` under
/// `target`: each (kind, counter) any CPU counted, summed with a hash row of the same key.
fn merge_dense(
    rows: &mut BTreeMap<ChargeKey, Vec<ChargeValue>>,
    target: u64,
    per_cpu: &[ChargeDense],
) {
    let lanes = per_cpu.first().map_or(0, |d| d.v.len());
    for i in 0..lanes {
        if per_cpu.iter().all(|d| d.v[i] == ChargeValue::default()) {
            continue;
        }
        let (kind, counter) = probes_common::charge::dense_key(i as u32);
        let key = ChargeKey {
            cgroup_id: target,
            kind,
            counter,
        };
        let row = rows
            .entry(key)
            .or_insert_with(|| vec![ChargeValue::default(); per_cpu.len()]);
        for (cpu, d) in per_cpu.iter().enumerate() {
            if let Some(v) = row.get_mut(cpu) {
                v.pages += d.v[i].pages;
                v.events += d.v[i].events;
            }
        }
    }
}

#[cfg(test)]
mod dense_tests {
    use super::*;
    use probes_common::charge::{counter, dense_index, kind};

    #[test]
    fn the_dense_block_becomes_the_targets_rows() {
        assert_eq!(dense_index(kind::TC_CALL, counter::NONE), Some(15));
        assert_eq!(dense_index(kind::PC_TRY_OK, counter::MEMORY), Some(5 * 16));
        assert_eq!(dense_index(kind::MEMORY_EVENT, 15), None);
        assert_eq!(dense_index(kind::COUNT, 0), None);
        for k in 0..kind::COUNT {
            for c in [0, 1, 2, 3, 8, 14, counter::NONE] {
                let i = dense_index(k, c).unwrap();
                assert_eq!(probes_common::charge::dense_key(i), (k, c));
            }
        }
        let mut cpu0 = ChargeDense::default();
        let mut cpu1 = ChargeDense::default();
        let i = dense_index(kind::TC_OK_STOCK, counter::NONE).unwrap() as usize;
        cpu1.v[i] = ChargeValue {
            pages: 7,
            events: 7,
        };
        let j = dense_index(kind::PC_UNCHARGE, counter::MEMORY).unwrap() as usize;
        cpu0.v[j] = ChargeValue {
            pages: 64,
            events: 1,
        };
        let key = |kind, counter| ChargeKey {
            cgroup_id: 42,
            kind,
            counter,
        };
        let mut rows = BTreeMap::new();
        // A hash row of the same key (events from before the block existed) adds up.
        rows.insert(
            key(kind::PC_UNCHARGE, counter::MEMORY),
            vec![
                ChargeValue {
                    pages: 1,
                    events: 1,
                },
                ChargeValue::default(),
            ],
        );
        merge_dense(&mut rows, 42, &[cpu0, cpu1]);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[&key(kind::TC_OK_STOCK, counter::NONE)],
            vec![
                ChargeValue::default(),
                ChargeValue {
                    pages: 7,
                    events: 7
                }
            ]
        );
        assert_eq!(
            rows[&key(kind::PC_UNCHARGE, counter::MEMORY)],
            vec![
                ChargeValue {
                    pages: 65,
                    events: 2
                },
                ChargeValue::default()
            ]
        );
    }
}
