//! The charge probes' configuration: the kernel layout they read (BTF, tracefs), the memory
//! hierarchy's id, and loading the probes object with it.

use super::*;

/// Why the charge probes cannot be configured or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ChargeConfigError {
    /// A required member is missing from BTF.
    #[error("kernel BTF has no member `{member}` in struct {ty}")]
    MissingMember {
        /// The struct.
        ty: String,
        /// The member.
        member: String,
    },
    /// No `memory_cgrp_id` enumerator (no memory controller).
    #[error("kernel BTF has no enumerator memory_cgrp_id")]
    NoMemoryCgrpId,
    /// Configuring or loading the probes object failed.
    #[error(transparent)]
    Load(#[from] attach::LoadError),
}

/// Hooks or programs this kernel's layout rules out: (hook id or program, why).
pub type Unusable = Vec<(&'static str, String)>;

/// Resolves the charge probes' kernel layout from BTF (and the `oom:mark_victim` record format
/// from tracefs). Required members are errors naming the member; optional ones
/// (`memsw`/`swap`, `kmem`, `tcpmem`, the stock layout) are [`ChargeConfig::ABSENT`] or noted
/// in the returned list of (hook id, why it cannot be used here).
pub fn charge_config(
    btf: &KernelBtf,
    facts: &KernelFacts,
) -> Result<(ChargeConfig, Unusable), ChargeConfigError> {
    let off = |s: &str, m: &str| {
        btf.member_offset(s, m)
            .ok_or_else(|| ChargeConfigError::MissingMember {
                ty: s.into(),
                member: m.into(),
            })
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
        .ok_or(ChargeConfigError::NoMemoryCgrpId)?;
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

/// Loads the probes object with both configurations and the maps sized by `sizes`, with
/// `loader` (from [`attach::loader_without_btf`]).
pub fn load<'a>(
    loader: aya::EbpfLoader<'a>,
    cfg: &'a ProbeConfig,
    ccfg: &'a ChargeConfig,
    sizes: &attach::MapSizes,
) -> Result<Ebpf, attach::LoadError> {
    attach::load_with(loader, cfg, |l| {
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
) -> Result<Ebpf, ChargeConfigError> {
    let scfg = attach::probe_config(kbtf, Filter::default())?;
    let (ccfg, unusable) = charge_config(kbtf, facts)?;
    reject_unusable(plans, &unusable);
    Ok(load(
        attach::loader_without_btf(),
        &scfg,
        &ccfg,
        &attach::MapSizes::default(),
    )?)
}
