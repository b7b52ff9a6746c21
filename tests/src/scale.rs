//! A subtree of thousands of small cgroups, built and removed by the scale tests and the
//! bench (`overhead scale`): `live` cgroups each holding `pages` pages of tmpfs, and `dying`
//! ones removed while their tmpfs pages keep them (a dying memcg stays until its last charged
//! page is freed: `mem_cgroup_css_free` runs only when the css reference count drops to zero,
//! and every charged folio holds one).
//!
//! One workload process hops from cgroup to cgroup (`cgroup.procs`) and writes each cgroup's
//! file, so building costs a mkdir, two moves, a write and (for a dying one) an rmdir per
//! cgroup. The files live in a private directory of the run on `/dev/shm`; dropping the tree
//! (also on a panic) removes the run, which deletes them, which frees the dying memcgs.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use memcg_drift::{
    cgroup::{MemCgroup, MemoryHierarchy, RunGroup},
    workload::{Workload, workload_binary},
};

/// The built subtree.
pub struct ScaleTree {
    /// The run that owns every cgroup and file (removed on drop).
    pub run: RunGroup,
    /// The subtree's root: `<run>/tree`.
    pub tree: MemCgroup,
    /// A leaf outside the subtree where workloads wait: `<run>/home`.
    pub home: MemCgroup,
    /// The live children.
    pub live: Vec<MemCgroup>,
    /// Cgroup ids of the dying children.
    pub dying_ids: Vec<u64>,
    /// Pages each child's file holds (kernel pages).
    pub pages_each: u64,
    /// The tmpfs directory of the files.
    pub dir: PathBuf,
    /// Time taken to build it.
    pub build_time: Duration,
}

impl ScaleTree {
    /// Builds `<run>/tree` with `live` live and `dying` dying children, each charged `pages`
    /// pages of tmpfs by a workload pinned to `cpu`.
    pub fn build(
        hier: &MemoryHierarchy,
        live: usize,
        dying: usize,
        pages: u64,
        cpu: usize,
    ) -> anyhow::Result<ScaleTree> {
        let t0 = Instant::now();
        let run = RunGroup::create(hier)?;
        let home = run.child("home")?;
        let tree = run.child("tree")?;
        let dir = run.private_dir(std::path::Path::new("/dev/shm"), "scale")?;
        let mut w = Workload::spawn(&workload_binary(), &home, cpu)?;
        let bytes = pages * w.page_size();
        let mut live_cgs = Vec::with_capacity(live);
        let mut dying_ids = Vec::with_capacity(dying);
        for i in 0..live + dying {
            let name = format!("c{i}");
            let cg = run.child(&format!("tree/{name}"))?;
            cg.move_pid(w.pid())?;
            let wrote = w.write_file(&dir.join(&name), bytes)?;
            anyhow::ensure!(wrote == bytes, "{name}: wrote {wrote} of {bytes} bytes");
            home.move_pid(w.pid())?;
            if i < live {
                live_cgs.push(cg);
            } else {
                std::fs::remove_dir(cg.path())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", cg.path().display()))?;
                dying_ids.push(cg.id());
            }
        }
        w.exit()?;
        Ok(ScaleTree {
            run,
            tree,
            home,
            live: live_cgs,
            dying_ids,
            pages_each: pages,
            dir,
            build_time: t0.elapsed(),
        })
    }

    /// Removes the run (its cgroups and the files pinning the dying ones).
    pub fn remove(self) -> anyhow::Result<()> {
        self.run.remove()?;
        Ok(())
    }
}

/// Peak resident set (`VmHWM`) of a process, bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}
