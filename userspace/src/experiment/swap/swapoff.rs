//! `run swap --swapoff` (seed 002 §9.7): to whom `swapoff` charges the pages of a removed
//! cgroup that sit in swap.
//!
//! A workload in child `d` (memory limit `--limit`) writes a tmpfs file of half the limit,
//! then touches `--grow-to` of anonymous memory: past the limit reclaim puts both kinds in
//! swap, each entry recorded with `d`'s id (`swap_cgroup_record`). The workload moves to
//! sibling `keep` (its charges stay with `d`) and `d` is removed: it is dying, pinned by the
//! pages it still holds and by the id references of its swap entries. Then a second process,
//! in sibling `off`, calls `swapoff(2)` on every swap device, and the run turns them on again
//! (same priority where it was set by hand), on every exit path.
//!
//! The kernel's rule (6.1-6.18, mm/memcontrol.c `mem_cgroup_swapin_charge_folio`, called by
//! `__read_swap_cache_async` with no mm): a page read back from swap is charged to the memcg
//! its swap record names while that memcg is online; `d` is offline, so the charge falls to
//! `get_mem_cgroup_from_mm(NULL)`: the active memcg or the memcg of the *calling task*, i.e.
//! `off`, not `keep` (whose process maps the anon pages) and not `d`'s parent. That holds
//! for the tmpfs pages too (`shmem_unuse`). Entries whose folio was still in the swap cache
//! (`swapcached`) need no read and no charge: their folio stays charged to `d`. So, measured
//! through memory.stat after a flush: `off` gains exactly (d's swap entries − d's swapcached)
//! pages of anon + shmem, `keep` gains none, `d`'s charge (less its stock) does not grow, and
//! the run's swap counter drops to 0.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    super::{Check, LedgerAt, Session},
    Params, SwapDevice, SwapSpace,
};
use crate::experiment::{Context as _, Result, refuse};
use crate::{
    cgroup::{MemCgroup, MemoryStat},
    workload::{Workload, workload_binary},
};

/// What a cgroup holds, from memory.stat (after the flush reading it makes) and its counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Holding {
    /// Memory counter, bytes.
    pub usage_bytes: u64,
    /// Swap counter (v2 `memory.swap.current`, v1 memsw − memory), bytes.
    pub swap_bytes: Option<u64>,
    /// Mapped anonymous pages (`anon`, v1 `rss`).
    pub anon_pages: u64,
    /// tmpfs/shmem pages in page cache (`shmem`).
    pub shmem_pages: u64,
    /// Pages in the swap cache (`swapcached`; `None` where memory.stat has no such field).
    pub swapcached_pages: Option<u64>,
}

fn stat_pages(st: &MemoryStat, keys: &[&str], page: u64) -> Option<u64> {
    keys.iter().find_map(|k| st.get(k)).map(|b| b / page)
}

impl Holding {
    /// Reads `cg` now.
    pub fn read(cg: &MemCgroup, page: u64) -> Result<Holding> {
        let st = cg
            .stat()?
            .with_context(|| format!("{}: no memory.stat", cg.path().display()))?;
        Ok(Holding {
            usage_bytes: cg.usage_bytes()?.unwrap_or(0),
            swap_bytes: cg.swap_usage_bytes()?,
            anon_pages: stat_pages(&st, &["anon", "rss"], page).unwrap_or(0),
            shmem_pages: stat_pages(&st, &["shmem"], page).unwrap_or(0),
            swapcached_pages: stat_pages(&st, &["swapcached"], page),
        })
    }

    fn charged_pages(&self) -> i64 {
        (self.anon_pages + self.shmem_pages) as i64
    }
}

/// The dying cgroup's charge as `explain` of the run reads it (page_counter usage and stock).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct DyingCharge {
    /// page_counter usage, pages.
    pub usage_pages: u64,
    /// Of which in its charge stock slots, pages.
    pub stock_pages: i64,
}

/// The results of the swapoff phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The devices turned off and on again.
    pub devices: Vec<String>,
    /// Where the tmpfs file was.
    pub tmpfs: String,
    /// tmpfs pages written in `d`.
    pub tmpfs_pages: u64,
    /// Anonymous pages touched in `d`.
    pub anon_pages: u64,
    /// `d` after the workload moved out, right before rmdir.
    pub d_before_rmdir: Holding,
    /// tmpfs pages not in the file's page cache then (in swap): written − `shmem`.
    pub shmem_swapped_pages: u64,
    /// Anonymous pages in swap then: d's swap entries − the tmpfs pages in swap (the
    /// workload's own pages, its stack and buffers, included).
    pub anon_swapped_pages: u64,
    /// `d` (dying) before and after swapoff, from `explain` of the run (`None`: not found).
    pub d_dying_before: Option<DyingCharge>,
    /// The same after swapoff.
    pub d_dying_after: Option<DyingCharge>,
    /// `off` (the cgroup of the process calling swapoff) before and after.
    pub off_before: Holding,
    /// After.
    pub off_after: Holding,
    /// `keep` (where the workload mapping the anon pages lives) before and after.
    pub keep_before: Holding,
    /// After.
    pub keep_after: Holding,
    /// The run's swap counter before and after swapoff, bytes.
    pub run_swap_before_bytes: Option<u64>,
    /// After.
    pub run_swap_after_bytes: Option<u64>,
    /// How long swapoff took, ms.
    pub swapoff_ms: f64,
}

impl Outcome {
    /// Pages swapoff charged to `off` (anon + shmem, memory.stat).
    pub fn off_gained(&self) -> i64 {
        self.off_after.charged_pages() - self.off_before.charged_pages()
    }

    /// Pages swapoff charged to `keep`.
    pub fn keep_gained(&self) -> i64 {
        self.keep_after.charged_pages() - self.keep_before.charged_pages()
    }

    /// `d`'s swap entries when it was removed, pages.
    pub fn d_swap_pages(&self, page: u64) -> u64 {
        self.d_before_rmdir.swap_bytes.unwrap_or(0) / page
    }

    /// Pages the rule says `off` gains: d's entries less its swap-cache folios (`None` where
    /// memory.stat has no `swapcached`: then only the bound `<= entries` holds).
    pub fn expected_off_pages(&self, page: u64) -> Option<i64> {
        self.d_before_rmdir
            .swapcached_pages
            .map(|c| self.d_swap_pages(page) as i64 - c as i64)
    }
}

/// Refuses `--swapoff` when turning every device off would need more memory than is free.
pub fn check_room(space: &SwapSpace, need: u64) -> Result<()> {
    let avail = super::super::mem_available()?;
    let want = space.used_bytes() + need + (64 << 20);
    if want > avail {
        refuse!(
            "--swapoff brings every swapped page of the machine back: {} MiB in swap now plus \
             {} MiB of the run, but only {} MiB are available",
            space.used_bytes() >> 20,
            need >> 20,
            avail >> 20
        );
    }
    Ok(())
}

fn dying_charge(s: &Session, d_id: u64) -> Result<Option<DyingCharge>> {
    let r = s.explain(s.run.cgroup())?;
    Ok(r.dying
        .iter()
        .find(|x| x.cgroup_id == d_id)
        .map(|x| DyingCharge {
            usage_pages: x.usage_pages,
            stock_pages: x.stock_pages,
        }))
}

/// Runs the swapoff phase in `s`; returns its outcome and the ledgers taken after swapoff.
pub fn run(
    s: &mut Session,
    p: &Params,
    page: u64,
    tmpfs_dir: &Path,
    tmpfs: String,
) -> Result<(Outcome, Vec<LedgerAt>)> {
    let d = s.child("d")?;
    let keep = s.child("keep")?;
    let off = s.child("off")?;
    d.set_limit_bytes(Some(p.limit))
        .context("setting the memory limit of d")?;
    let bin = workload_binary();
    // Locked: were its own pages (stack, buffers) swapped out, the command loop would swap them
    // back in, and the freed entries could wait, still charged to d, in a per-CPU swap slots
    // cache (mm/swap_slots.c, before 6.14) that swapoff drains: d would seem to hold entries
    // swapoff never reads back.
    let mut w = s.phase("swapoff: start in d", |_| {
        let mut w = Workload::spawn(&bin, &d, p.cpu)?;
        w.lock_resident()?;
        Ok(w)
    })?;
    let mut out = Outcome {
        tmpfs,
        tmpfs_pages: (p.limit / 2).div_ceil(page),
        anon_pages: p.grow_to.div_ceil(page),
        ..Outcome::default()
    };
    let file = tmpfs_dir.join("swapped-tmpfs");
    let per_step = out.anon_pages.div_ceil(p.steps);
    s.phase("swapoff: write tmpfs, grow anon in d", |_| {
        w.write_file(&file, out.tmpfs_pages * page)?;
        let mut done = 0;
        while done < out.anon_pages {
            let n = per_step.min(out.anon_pages - done);
            w.touch(n)?;
            done += n;
        }
        Ok(())
    })?;
    s.phase("swapoff: move the workload to keep, remove d", |_| {
        w.move_to(&keep)?;
        out.d_before_rmdir = Holding::read(&d, page)?;
        std::fs::remove_dir(d.path()).with_context(|| format!("rmdir {}", d.path().display()))
    })?;
    let h = out.d_before_rmdir;
    out.shmem_swapped_pages = out.tmpfs_pages.saturating_sub(h.shmem_pages);
    out.anon_swapped_pages = out
        .d_swap_pages(page)
        .saturating_sub(out.shmem_swapped_pages);
    let devices = SwapDevice::all()?;
    // The caller first: its own pages are in `off` before the baseline is read.
    let mut x = s.phase("swapoff: start in off", |_| {
        Ok(Workload::spawn(&bin, &off, p.cpu)?)
    })?;
    out.d_dying_before = dying_charge(s, d.id())?;
    out.off_before = Holding::read(&off, page)?;
    out.keep_before = Holding::read(&keep, page)?;
    out.run_swap_before_bytes = s.run.cgroup().swap_usage_bytes()?;
    x.set_timeout(std::time::Duration::from_secs(600));
    let t0 = std::time::Instant::now();
    s.phase("swapoff: swapoff from off, swapon again", |_| {
        for dev in devices {
            out.devices.push(dev.path.display().to_string());
            let on = super::space::Reenable::arm(dev);
            let r = x.swapoff(&on.device().path);
            crate::test_hooks::panic_at("swapoff");
            on.restore()?;
            r.with_context(|| format!("swapoff {}", out.devices.last().unwrap()))?;
        }
        Ok(())
    })?;
    out.swapoff_ms = t0.elapsed().as_secs_f64() * 1000.0;
    out.off_after = Holding::read(&off, page)?;
    out.keep_after = Holding::read(&keep, page)?;
    out.run_swap_after_bytes = s.run.cgroup().swap_usage_bytes()?;
    out.d_dying_after = dying_charge(s, d.id())?;
    let r = s.explain(&off)?;
    let ledgers = vec![LedgerAt::new("after swapoff", "off", &r)];
    s.phase("swapoff: exit, remove the file", |_| {
        x.exit()?;
        w.exit()?;
        std::fs::remove_file(&file).with_context(|| file.display().to_string())
    })?;
    Ok((out, ledgers))
}

/// The checks of the swapoff phase.
pub fn checks(o: &Outcome, page: u64, off_ledger: Option<i64>) -> Vec<Check> {
    let entries = o.d_swap_pages(page);
    let gained = o.off_gained();
    let (expected, ok) = match o.expected_off_pages(page) {
        Some(e) => (
            format!(
                "{e} pages (d's {entries} swap entries - {} in the swap cache, still charged \
                 to d)",
                o.d_before_rmdir.swapcached_pages.unwrap_or(0)
            ),
            gained == e,
        ),
        None => (
            format!(
                "1..={entries} pages (d's swap entries less those in the swap cache, which this \
                 kernel's memory.stat does not show)"
            ),
            gained > 0 && gained <= entries as i64,
        ),
    };
    let net = |d: Option<DyingCharge>| d.map(|d| d.usage_pages as i64 - d.stock_pages);
    vec![
        Check::rule(
            "d's anon and tmpfs pages were in swap when it was removed",
            "swap entries > 0, tmpfs pages in swap > 0".into(),
            format!(
                "{entries} entries; {} tmpfs and {} anon pages out of memory",
                o.shmem_swapped_pages, o.anon_swapped_pages
            ),
            entries > 0 && o.shmem_swapped_pages > 0,
        ),
        Check::rule(
            "swapoff charges the dead cgroup's swapped pages to the caller's cgroup (off)",
            expected,
            format!("{gained} pages of anon + shmem gained by off"),
            ok,
        ),
        Check::eq(
            "and not to the cgroup of the process mapping them (keep), pages",
            0,
            o.keep_gained(),
        ),
        // Not equality: a per-CPU object stock of d's objcg drained while d goes offline can
        // still uncharge d by part of a page of kernel memory.
        Check::rule(
            "swapoff charges nothing to the dying d (usage - stock, pages)",
            "no more after swapoff than before".into(),
            format!("{:?} -> {:?}", net(o.d_dying_before), net(o.d_dying_after)),
            matches!((net(o.d_dying_before), net(o.d_dying_after)), (Some(a), Some(b)) if b <= a),
        ),
        Check::eq(
            "the run's swap counter after swapoff, bytes",
            Some(0),
            o.run_swap_after_bytes,
        ),
        Check::rule(
            "off's ledger closes after swapoff (charges match memory.stat)",
            "0".into(),
            off_ledger.map_or("not taken".into(), |u| u.to_string()),
            off_ledger == Some(0),
        ),
    ]
}

/// One sentence for the verdict.
pub fn summary(o: &Outcome, page: u64) -> String {
    format!(
        "After d was removed with {} swap entries ({} tmpfs and {} anon pages out of memory), \
         swapoff from a process in off charged {} pages to off and {} to keep (the process \
         mapping them); {} were in the swap cache and stayed charged to the dying d.",
        o.d_swap_pages(page),
        o.shmem_swapped_pages,
        o.anon_swapped_pages,
        o.off_gained(),
        o.keep_gained(),
        o.d_before_rmdir.swapcached_pages.map_or(
            "an unknown number (no swapcached in memory.stat)".into(),
            |c| c.to_string()
        ),
    )
}

/// The text section.
pub fn render(o: &Outcome, page: u64) -> String {
    let row = |name: &str, a: &Holding, b: &Holding| {
        format!(
            "  {name:<6} anon {:>7} -> {:<7} shmem {:>7} -> {:<7} usage {:>6.1} -> {:.1} MiB\n",
            a.anon_pages,
            b.anon_pages,
            a.shmem_pages,
            b.shmem_pages,
            a.usage_bytes as f64 / 1048576.0,
            b.usage_bytes as f64 / 1048576.0
        )
    };
    format!(
        "swapoff of {} ({:.0} ms), tmpfs in {}:\n  d removed with {} swap entries, {} in the swap \
         cache; {} tmpfs + {} anon pages out of memory\n{}{}",
        o.devices.join(", "),
        o.swapoff_ms,
        o.tmpfs,
        o.d_swap_pages(page),
        o.d_before_rmdir
            .swapcached_pages
            .map_or("?".into(), |c| c.to_string()),
        o.shmem_swapped_pages,
        o.anon_swapped_pages,
        row("off", &o.off_before, &o.off_after),
        row("keep", &o.keep_before, &o.keep_after),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        let h = |anon, shmem| Holding {
            anon_pages: anon,
            shmem_pages: shmem,
            ..Holding::default()
        };
        Outcome {
            d_before_rmdir: Holding {
                swap_bytes: Some(1000 * 4096),
                swapcached_pages: Some(40),
                ..h(2000, 100)
            },
            shmem_swapped_pages: 1948,
            anon_swapped_pages: 10288,
            d_dying_before: Some(DyingCharge {
                usage_pages: 2200,
                stock_pages: 60,
            }),
            d_dying_after: Some(DyingCharge {
                usage_pages: 2140,
                stock_pages: 0,
            }),
            off_before: h(30, 0),
            off_after: h(30 + 900, 60),
            keep_before: h(12, 0),
            keep_after: h(12, 0),
            run_swap_before_bytes: Some(1000 * 4096),
            run_swap_after_bytes: Some(0),
            ..Outcome::default()
        }
    }

    #[test]
    fn swapoff_checks_follow_the_rule() {
        let ok = outcome();
        let c = checks(&ok, 4096, Some(0));
        assert!(c.iter().all(|c| c.ok), "{c:#?}");
        let fails = |f: &dyn Fn(&mut Outcome)| {
            let mut o = outcome();
            f(&mut o);
            checks(&o, 4096, Some(0)).iter().filter(|c| !c.ok).count()
        };
        // One page more or fewer than entries - swapcached.
        assert_eq!(fails(&|o| o.off_after.anon_pages += 1), 1);
        assert_eq!(fails(&|o| o.off_after.shmem_pages -= 1), 1);
        // Charged to the owner instead.
        assert_eq!(fails(&|o| o.keep_after.anon_pages += 1), 1);
        assert_eq!(fails(&|o| o.d_dying_after = None), 1);
        assert_eq!(
            fails(&|o| o.d_dying_after.as_mut().unwrap().usage_pages += 1),
            1
        );
        assert_eq!(
            fails(&|o| o.d_dying_after.as_mut().unwrap().usage_pages -= 1),
            0
        );
        assert_eq!(fails(&|o| o.run_swap_after_bytes = Some(4096)), 1);
        assert_eq!(fails(&|o| o.shmem_swapped_pages = 0), 1);
        // Without swapcached: the bound.
        assert_eq!(fails(&|o| o.d_before_rmdir.swapcached_pages = None), 0);
        assert_eq!(
            fails(&|o| {
                o.d_before_rmdir.swapcached_pages = None;
                o.off_after.anon_pages += 100;
            }),
            1
        );
        let mut o = outcome();
        o.d_before_rmdir.swapcached_pages = None;
        assert_eq!(checks(&o, 4096, None).iter().filter(|c| !c.ok).count(), 1);
    }
}
