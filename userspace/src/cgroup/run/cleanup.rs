//! `memcg-drift cleanup`: removing the runs whose owner is gone.

use super::*;

/// What [`cleanup_stale`] did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CleanupReport {
    /// Cgroups removed (deepest first per run).
    pub removed: Vec<PathBuf>,
    /// Stale runs and why they were stale.
    pub stale: Vec<(PathBuf, String)>,
    /// Cgroups that could not be removed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// Runs left alone because their owner is alive.
    pub live: Vec<PathBuf>,
    /// Owner markers removed.
    pub owner_files_removed: Vec<PathBuf>,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (p, why) in &self.stale {
            writeln!(f, "stale run {} ({why})", p.display())?;
        }
        for p in &self.removed {
            writeln!(f, "removed {}", p.display())?;
        }
        for (p, why) in &self.failed {
            writeln!(f, "could not remove {}: {why}", p.display())?;
        }
        for p in &self.live {
            writeln!(f, "left alone {} (its owner is running)", p.display())?;
        }
        if self.stale.is_empty() && self.owner_files_removed.is_empty() && self.removed.is_empty() {
            write!(f, "nothing to clean up")
        } else {
            write!(
                f,
                "{} cgroup(s) removed, {} failed, {} owner file(s) removed",
                self.removed.len(),
                self.failed.len(),
                self.owner_files_removed.len()
            )
        }
    }
}

/// Removes the runs under `<memory root>/memcg-drift/` whose owner is dead (pid gone or
/// zombie, or its start time differs) or whose owner marker is missing, killing the processes
/// inside. Runs of live owners (other invocations running now, or this process) are left
/// alone. Also removes markers of dead owners whose cgroup is already gone.
pub fn cleanup_stale(hier: &MemoryHierarchy) -> Result<CleanupReport, CgroupError> {
    let root = fs::canonicalize(&hier.root).map_err(|e| CgroupError::io(&hier.root, e))?;
    let parent = root.join(RUN_PARENT);
    let mut report = CleanupReport::default();
    let mut runs: Vec<(String, PathBuf)> = match fs::read_dir(&parent) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect(),
        Err(e) if is_gone(&e) => Vec::new(),
        Err(e) => return Err(CgroupError::io(parent, e)),
    };
    runs.sort();
    for (run_id, dir) in &runs {
        let owner = owner_file(run_id);
        let Some(why) = owner_stale_reason(&owner) else {
            report.live.push(dir.clone());
            continue;
        };
        report.stale.push((dir.clone(), why));
        match remove_tree(dir) {
            Ok(removed) => {
                report.removed.extend(removed);
                remove_manifest_dirs(run_id, &mut report);
                let files = scratch_dir(run_id);
                if files.exists() {
                    match remove_scratch(&files) {
                        Ok(()) => report.removed.push(files),
                        Err(e) => report.failed.push((files, e.to_string())),
                    }
                }
                if fs::remove_file(&owner).is_ok() {
                    report.owner_files_removed.push(owner);
                }
            }
            Err(e) => {
                // Report what did go, then the failure.
                report.failed.push((dir.clone(), e.to_string()));
            }
        }
    }
    // Markers whose run directory is gone and whose owner is dead.
    if let Ok(entries) = fs::read_dir(owner_dir()) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(run_id) = name.strip_suffix(".files") {
                // Scratch of a run whose marker is gone or whose owner is dead.
                let owner = owner_file(run_id);
                if !parent.join(run_id).exists() && owner_stale_reason(&owner).is_some() {
                    match remove_scratch(&e.path()) {
                        Ok(()) => report.removed.push(e.path()),
                        Err(err) => report.failed.push((e.path(), err.to_string())),
                    }
                }
                continue;
            }
            if let Some(run_id) = name.strip_suffix(".created") {
                // Private directories of a run whose marker is gone or whose owner is dead.
                if !parent.join(run_id).exists()
                    && owner_stale_reason(&owner_file(run_id)).is_some()
                {
                    remove_manifest_dirs(run_id, &mut report);
                }
                continue;
            }
            let Some(run_id) = name.strip_suffix(".owner") else {
                continue;
            };
            if parent.join(run_id).exists() || owner_stale_reason(&e.path()).is_none() {
                continue;
            }
            remove_manifest_dirs(run_id, &mut report);
            if fs::remove_file(e.path()).is_ok() {
                report.owner_files_removed.push(e.path());
            }
        }
    }
    let _ = fs::remove_dir(&parent);
    Ok(report)
}
