//! The statistics part of the layout: the aggregate and per-CPU arrays of the rstat
//! generations (6.1+), and the batched ones of 5.4-5.12.

use super::*;

impl ResidueLayout {
    pub(super) fn stats(btf: &KernelBtf, f: &Finder<'_>) -> Result<StatLayout, LayoutError> {
        let vsp = "memcg_vmstats_percpu";
        if btf.member_is_pointer("mem_cgroup", "vmstats") != Some(true) {
            if btf.array_len("mem_cgroup", "vmstats").is_some() && btf.has_member(vsp, "stat") {
                return Self::batched_stats(btf, f);
            }
            return Err(LayoutError::Missing(
                "pointer member `vmstats` (rstat, 6.1+) or array `vmstats[]` (batched, 5.4-5.12) \
                 in struct mem_cgroup"
                    .into(),
            ));
        }
        let len = Self::per_cpu_len(btf, "state")?;
        let prev_len = btf.array_len(vsp, "state_prev").map(|n| n as usize);
        let agg_len = btf.array_len("memcg_vmstats", "state").map(|n| n as usize);
        if prev_len != Some(len) || agg_len != Some(len) {
            return Err(LayoutError::StatIndex(format!(
                "state[] lengths disagree: per-CPU {len}, state_prev {prev_len:?}, aggregate \
                 {agg_len:?}"
            )));
        }
        Ok(StatLayout {
            vmstats: f.off("mem_cgroup", "vmstats").map_err(missing)?,
            vs_state: f.off("memcg_vmstats", "state").map_err(missing)?,
            vs_state_pending: f.off("memcg_vmstats", "state_pending").map_err(missing)?,
            per_memcg_flush: btf.has_member("memcg_vmstats", "stats_updates"),
            vs_stats_updates: btf.member_offset("memcg_vmstats", "stats_updates"),
            vmstats_percpu: f.off("mem_cgroup", "vmstats_percpu").map_err(missing)?,
            vsp_state: f.off(vsp, "state").map_err(missing)?,
            vsp_state_prev: f.off(vsp, "state_prev").map_err(missing)?,
            vsp_stats_updates: btf.member_offset(vsp, "stats_updates"),
            index: StatIndex::resolve(btf, len)?,
            batched: false,
            kmem_stat_atomic: btf.has_member("mem_cgroup", "kmem_stat"),
        })
    }

    /// The length of the per-CPU statistics array `memcg_vmstats_percpu.<member>[]`, within
    /// what the programs copy.
    fn per_cpu_len(btf: &KernelBtf, member: &str) -> Result<usize, LayoutError> {
        let vsp = "memcg_vmstats_percpu";
        let len = btf.array_len(vsp, member).ok_or_else(|| {
            missing(Lack::Array {
                ty: vsp.into(),
                member: member.into(),
            })
        })? as usize;
        if len > RES_MAX_STATE {
            return Err(LayoutError::StatIndex(format!(
                "{member}[] has {len} slots, more than the {RES_MAX_STATE} this version copies"
            )));
        }
        Ok(len)
    }

    /// The batched statistics of 5.4-5.12 (v5.10.35 memcontrol.h:78-80, :285): `long
    /// stat[MEMCG_NR_STAT]` per CPU and `atomic_long_t vmstats[MEMCG_NR_STAT]` in the memcg.
    fn batched_stats(btf: &KernelBtf, f: &Finder<'_>) -> Result<StatLayout, LayoutError> {
        let vsp = "memcg_vmstats_percpu";
        let len = Self::per_cpu_len(btf, "stat")?;
        let agg_len = btf.array_len("mem_cgroup", "vmstats").map(|n| n as usize);
        if agg_len != Some(len) || f.size("mem_cgroup", "vmstats").ok() != Some(8 * len as u64) {
            return Err(LayoutError::StatIndex(format!(
                "stat[] lengths disagree: per-CPU {len}, aggregate {agg_len:?} (or its atomics \
                 are not 8 bytes each)"
            )));
        }
        Ok(StatLayout {
            vmstats: f.off("mem_cgroup", "vmstats").map_err(missing)?,
            vs_state: 0,
            vs_state_pending: 0,
            per_memcg_flush: false,
            vs_stats_updates: None,
            vmstats_percpu: f.off("mem_cgroup", "vmstats_percpu").map_err(missing)?,
            vsp_state: f.off(vsp, "stat").map_err(missing)?,
            vsp_state_prev: 0,
            vsp_stats_updates: None,
            index: StatIndex::resolve(btf, len)?,
            batched: true,
            kmem_stat_atomic: false,
        })
    }
}
