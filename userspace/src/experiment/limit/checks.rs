//! `run limit`: the kernel's rules checked against the results, and the verdict.

use super::*;

pub(super) fn touched(timeline: &[Step]) -> u64 {
    timeline.iter().map(|s| s.grown_bytes).max().unwrap_or(0)
}

pub(super) fn checks(r: &Results, kills: &[OomKill], version: CgroupVersion) -> Vec<Check> {
    let mut out = Vec::new();
    let p = &r.params;
    if let Some(im) = &r.immigrate {
        let n = im.pages as i64;
        if let Some(m) = im.move_charge_at_immigrate {
            out.push(Check::eq("v1 move_charge_at_immigrate of limited", 0, m));
        }
        out.push(Check::eq(
            "NR_ANON_MAPPED updates (origin, limited) while touching in origin",
            (n, 0),
            im.touch_anon_updates,
        ));
        out.push(Check::eq(
            "NR_ANON_MAPPED updates (origin, limited) during the move",
            (0, 0),
            im.move_anon_updates,
        ));
        out.push(Check::eq(
            "origin's charged pages (usage - stock - kmem) across the move: it keeps them",
            im.origin_charged_pages.0,
            im.origin_charged_pages.1,
        ));
        out.push(Check::eq(
            "origin's NR_ANON_MAPPED across the move",
            im.origin_anon_pages.0,
            im.origin_anon_pages.1,
        ));
        out.push(Check::eq(
            "limited's charged pages gained by the move",
            0,
            im.dest_charged_pages.1 - im.dest_charged_pages.0,
        ));
        out.push(Check::eq(
            "NR_ANON_MAPPED updates (origin, limited) freeing the origin pages from limited: the uncharge goes to origin",
            (-n, 0),
            im.free_anon_updates,
        ));
        out.push(Check::eq(
            "origin's charged pages after that free (less freed folios still in lru_add batches)",
            im.origin_charged_pages.1 - n + im.origin_freed_in_lru_add,
            im.origin_charged_pages.2,
        ));
    }
    let kill_count = r.oom.kill_counter.unwrap_or(kills.len() as u64);
    if r.oom.kill_expected {
        out.push(Check::eq(
            "OOM kills (cgroup oom_kill counter)",
            1,
            kill_count,
        ));
        out.push(Check::eq("OOM kills reported", 1, kills.len()));
        if let Some(k) = kills.first() {
            out.push(Check::eq(
                "victim is the workload",
                r.workload_pid as u32,
                k.victim_pid,
            ));
            out.push(Check::eq(
                "OOM memcg",
                r.limited_path.clone(),
                k.memcg_path.clone(),
            ));
            let (floor, limit) = (r.usage_at_kill_floor_bytes, p.limit_bytes);
            if r.shrink.as_ref().is_none_or(|s| s.predicted != "oom-kill") {
                out.push(match k.usage_at_kill_bytes {
                    Some(u) => Check::rule(
                        "memcg usage at the kill",
                        format!(
                            "{floor}..={limit} bytes (limit - {} pages x online CPUs ..= limit)",
                            r.kernel_charge_batch
                        ),
                        u.to_string(),
                        (floor..=limit).contains(&u),
                    ),
                    None => Check::rule(
                        "memcg usage at the kill",
                        "known".into(),
                        "unknown".into(),
                        false,
                    ),
                });
            }
        }
    } else {
        out.push(Check::eq("OOM kills", 0, kill_count));
    }
    if p.oom_disable && r.timeline.iter().any(|s| !s.completed) {
        out.push(Check::eq(
            "every step completed (nobody killed)",
            true,
            false,
        ));
    }
    if p.oom_disable && p.grow_to_bytes + p.tmpfs_bytes > p.limit_bytes {
        out.push(Check::eq(
            "under_oom 1 seen in memory.oom_control",
            true,
            r.oom.under_oom_after_ms.is_some(),
        ));
    }
    if let Some(sh) = &r.shrink {
        match (sh.predicted.as_str(), version) {
            ("EBUSY", _) => {
                out.push(Check::eq("shrink write errno", Some(libc::EBUSY), sh.errno));
                out.push(Check::eq(
                    "limit after the failed shrink",
                    sh.from_bytes,
                    sh.limit_after_bytes,
                ));
                out.push(Check::eq(
                    "workload alive after the shrink",
                    true,
                    sh.workload_alive,
                ));
            }
            ("ok", _) => {
                out.push(Check::eq("shrink write succeeded", true, sh.write_ok));
                out.push(Check::eq(
                    "limit after the shrink",
                    Some(sh.to_bytes),
                    sh.limit_after_bytes,
                ));
                out.push(Check::rule(
                    "usage after the shrink",
                    format!("<= {}", sh.to_bytes),
                    format!("{:?}", sh.usage_after_bytes),
                    sh.usage_after_bytes.is_some_and(|u| u <= sh.to_bytes),
                ));
                out.push(Check::eq(
                    "workload alive after the shrink",
                    true,
                    sh.workload_alive,
                ));
            }
            ("oom-kill", _) => {
                out.push(Check::eq("shrink write succeeded (v2)", true, sh.write_ok));
                out.push(Check::eq(
                    "limit after the shrink",
                    Some(sh.to_bytes),
                    sh.limit_after_bytes,
                ));
                out.push(Check::eq("OOM kills by the shrink", Some(1), sh.oom_kills));
                out.push(Check::rule(
                    "usage after the shrink",
                    format!("<= {}", sh.to_bytes),
                    format!("{:?}", sh.usage_after_bytes),
                    sh.usage_after_bytes.is_some_and(|u| u <= sh.to_bytes),
                ));
            }
            _ => {}
        }
    }
    out
}

pub(super) fn verdict(r: &Results, kills: &[OomKill], checks: Vec<Check>) -> Verdict {
    let p = &r.params;
    let mut lines = Vec::new();
    if let Some(im) = &r.immigrate {
        lines.push(format!(
            "{} pages touched in origin stayed charged to origin after the move ({} -> {} charged pages there; limited gained {}); freeing them from limited uncharged origin ({} pages left).",
            im.pages,
            im.origin_charged_pages.0,
            im.origin_charged_pages.1,
            im.dest_charged_pages.1 - im.dest_charged_pages.0,
            im.origin_charged_pages.2
        ));
    }
    let status = if let Some(k) = kills.first() {
        lines.push(format!(
            "growing toward {} under a {} limit: OOM kill of pid {} ({}) in {} during `{}`; usage at the kill {}, victim RSS {}.",
            mib(p.grow_to_bytes),
            mib(p.limit_bytes),
            k.victim_pid,
            k.victim_comm,
            k.memcg_path,
            k.phase,
            k.usage_at_kill_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_else(|| "unknown".into()),
            k.victim_rss_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_else(|| "unknown".into()),
        ));
        if let (Some(rss), Some(u)) = (k.victim_rss_bytes, k.usage_at_kill_bytes) {
            lines.push(format!(
                "RSS ({} KiB) and memcg usage ({} KiB) count different things: RSS is what the process maps, wherever it is charged (pages touched before it joined the cgroup stay charged to the old one; mapped binary pages were charged to whoever read them first); usage is what is charged to the memcg (also page cache, tmpfs and kernel memory, mapped or not).",
                rss / 1024,
                u / 1024
            ));
        }
        "OOM kill"
    } else {
        lines.push(
            r.oom
                .no_kill_reason
                .clone()
                .unwrap_or_else(|| "no kill".into()),
        );
        if p.oom_disable {
            "no kill (oom_kill_disable)"
        } else {
            "no kill"
        }
    };
    if let Some(sh) = &r.shrink {
        lines.push(format!(
            "shrinking the limit to {} with {} used ({} anon-LRU pages, {} file pages): {} after {:.1} ms (kernel rule: {}); usage after {}, limit after {}.",
            mib(sh.to_bytes),
            sh.usage_before_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_default(),
            sh.unreclaimable_floor_pages,
            sh.file_pages,
            if sh.write_ok {
                "accepted".to_string()
            } else {
                format!("refused ({})", sh.error.clone().unwrap_or_default())
            },
            sh.duration_ms,
            sh.predicted,
            sh.usage_after_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_default(),
            sh.limit_after_bytes
                .map(|b| format!("{} KiB", b / 1024))
                .unwrap_or_else(|| "unlimited".into()),
        ));
    }
    Verdict::judged(status, lines.join("\n"), checks)
}
