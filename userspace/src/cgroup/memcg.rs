//! [`MemCgroup`]: one memory cgroup, its readers (v1 and v2) and its limit writers.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use super::{
    CgroupError, CgroupVersion, FlatKeyed, MemoryEvents, MemoryHierarchy, MemoryStat, ParseError,
    RUN_PARENT, is_gone, parse_flat_keyed, parse_limit, parse_u64_value,
};

/// One memory cgroup, opened by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemCgroup {
    hier: MemoryHierarchy,
    path: PathBuf,
    rel: PathBuf,
    id: u64,
}

/// The file whose presence makes a directory of the hierarchy a memory cgroup.
fn marker(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    }
}

/// `rel` (with a leading `/`) for a path relative to the hierarchy root.
fn rooted(rel: &Path) -> PathBuf {
    Path::new("/").join(rel)
}

/// True if `rel` (relative to the memory root, leading `/` or not) is `memcg-drift/<run-id>`
/// or below: the only cgroups this tool writes to or removes.
pub(crate) fn is_run_path(rel: &Path) -> bool {
    let mut comps = rel
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir));
    matches!(comps.next(), Some(Component::Normal(first)) if first == RUN_PARENT)
        && matches!(comps.next(), Some(Component::Normal(_)))
        && comps.all(|c| matches!(c, Component::Normal(_)))
}

impl MemCgroup {
    /// Opens a memory cgroup: `path` is absolute (inside `hier.root`) or relative to
    /// `hier.root`. Fails with a one-line error if the path does not exist, is a file, lies
    /// outside the memory hierarchy, or is a directory without the memory controller.
    pub fn open(hier: &MemoryHierarchy, path: &Path) -> Result<MemCgroup, CgroupError> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            hier.root.join(path)
        };
        let meta = match fs::metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CgroupError::NotFound { path: abs });
            }
            Err(e) => return Err(CgroupError::io(abs, e)),
        };
        if !meta.is_dir() {
            return Err(CgroupError::NotADirectory { path: abs });
        }
        let root = fs::canonicalize(&hier.root).map_err(|e| CgroupError::io(&hier.root, e))?;
        let canon = fs::canonicalize(&abs).map_err(|e| CgroupError::io(&abs, e))?;
        let Ok(rel) = canon.strip_prefix(&root) else {
            return Err(CgroupError::NotInHierarchy {
                path: abs,
                root: hier.root.clone(),
            });
        };
        let rel = rel.to_path_buf();
        if !rel.as_os_str().is_empty() {
            let file = marker(hier.version);
            if !canon.join(file).is_file() {
                return Err(CgroupError::NotMemoryCgroup { path: abs, file });
            }
        }
        Ok(MemCgroup {
            hier: MemoryHierarchy {
                version: hier.version,
                root,
            },
            path: canon,
            rel: rooted(&rel),
            id: meta.ino(),
        })
    }

    /// The root of the memory hierarchy.
    pub fn root(hier: &MemoryHierarchy) -> Result<MemCgroup, CgroupError> {
        MemCgroup::open(hier, &hier.root)
    }

    /// The memory cgroup of process `pid`, from `/proc/<pid>/cgroup`.
    pub fn of_pid(hier: &MemoryHierarchy, pid: i32) -> Result<MemCgroup, CgroupError> {
        let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = fs::read_to_string(&file).map_err(|e| CgroupError::io(&file, e))?;
        let rel = parse_proc_cgroup(&text, hier.version).ok_or_else(|| CgroupError::Malformed {
            path: file.clone(),
            line: 0,
            content: String::new(),
            reason: format!("no {} memory cgroup line", hier.version),
        })?;
        let rel = rel.strip_prefix("/").unwrap_or(&rel);
        MemCgroup::open(hier, &hier.root.join(rel))
    }

    /// The live cgroup of the hierarchy whose id (directory inode) is `id`, by walking it.
    pub fn find_by_id(hier: &MemoryHierarchy, id: u64) -> Result<Option<MemCgroup>, CgroupError> {
        let root = MemCgroup::root(hier)?;
        if root.id == id {
            return Ok(Some(root));
        }
        Ok(root.descendants()?.into_iter().find(|c| c.id == id))
    }

    /// The cgroup id: the inode number of the cgroup directory, which on 64-bit kernels is the
    /// kernfs node id (`cgroup->kn->id`) the eBPF probes see.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The absolute (canonical) path of the cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path relative to the hierarchy root, with a leading `/` (`/` for the root).
    pub fn rel_path(&self) -> &Path {
        &self.rel
    }

    /// True for the hierarchy's root cgroup.
    pub fn is_root(&self) -> bool {
        self.rel == Path::new("/")
    }

    /// The cgroup version of the hierarchy.
    pub fn version(&self) -> CgroupVersion {
        self.hier.version
    }

    /// The hierarchy (root canonicalised).
    pub fn hierarchy(&self) -> &MemoryHierarchy {
        &self.hier
    }

    /// True if the cgroup directory still exists.
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// True if this is a cgroup the tool created (`memcg-drift/<run-id>` or below).
    pub fn is_owned(&self) -> bool {
        is_run_path(&self.rel)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads a control file; `Ok(None)` if the file is absent or the cgroup is gone.
    pub fn read_raw(&self, name: &str) -> Result<Option<String>, CgroupError> {
        let path = self.file(name);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(CgroupError::io(path, e)),
        }
    }

    fn malformed(&self, name: &str, e: ParseError) -> CgroupError {
        CgroupError::Malformed {
            path: self.file(name),
            line: e.line,
            content: e.content,
            reason: e.reason,
        }
    }

    fn read_u64(&self, name: &str) -> Result<Option<u64>, CgroupError> {
        self.read_raw(name)?
            .map(|t| parse_u64_value(&t).map_err(|e| self.malformed(name, e)))
            .transpose()
    }

    fn read_keyed(&self, name: &str) -> Result<Option<FlatKeyed>, CgroupError> {
        self.read_raw(name)?
            .map(|t| parse_flat_keyed(&t).map_err(|e| self.malformed(name, e)))
            .transpose()
    }

    fn v1_only(&self, name: &str) -> Result<Option<u64>, CgroupError> {
        match self.hier.version {
            CgroupVersion::V1 => self.read_u64(name),
            CgroupVersion::V2 => Ok(None),
        }
    }

    /// Charged usage: v2 `memory.current`, v1 `memory.usage_in_bytes`.
    pub fn usage_bytes(&self) -> Result<Option<u64>, CgroupError> {
        self.read_u64(match self.hier.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        })
    }

    /// The hard limit; `Ok(None)` when unlimited or absent: v2 `memory.max` (`max`), v1
    /// `memory.limit_in_bytes` (the page-counter maximum).
    pub fn limit_bytes(&self) -> Result<Option<u64>, CgroupError> {
        let name = match self.hier.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        };
        Ok(self
            .read_raw(name)?
            .map(|t| parse_limit(&t, self.hier.version).map_err(|e| self.malformed(name, e)))
            .transpose()?
            .flatten())
    }

    /// The high limit (v2 `memory.high`); `Ok(None)` when `max`, absent, or on v1.
    pub fn high_bytes(&self) -> Result<Option<u64>, CgroupError> {
        if self.hier.version == CgroupVersion::V1 {
            return Ok(None);
        }
        let name = "memory.high";
        Ok(self
            .read_raw(name)?
            .map(|t| parse_limit(&t, self.hier.version).map_err(|e| self.malformed(name, e)))
            .transpose()?
            .flatten())
    }

    /// Peak usage: v2 `memory.peak` (5.19+), v1 `memory.max_usage_in_bytes`.
    pub fn peak_bytes(&self) -> Result<Option<u64>, CgroupError> {
        self.read_u64(match self.hier.version {
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
            CgroupVersion::V2 => "memory.peak",
        })
    }

    /// Times the limit was hit: v1 `memory.failcnt`, v2 the `max` count of `memory.events`.
    pub fn failcnt(&self) -> Result<Option<u64>, CgroupError> {
        match self.hier.version {
            CgroupVersion::V1 => self.read_u64("memory.failcnt"),
            CgroupVersion::V2 => Ok(self.events()?.and_then(|e| e.get("max"))),
        }
    }

    /// `memory.stat`.
    pub fn stat(&self) -> Result<Option<MemoryStat>, CgroupError> {
        self.read_keyed("memory.stat")
    }

    /// Memory events: v2 `memory.events` (`low`, `high`, `max`, `oom`, `oom_kill`, ...), v1
    /// `memory.oom_control` (`oom_kill_disable`, `under_oom`, `oom_kill`).
    pub fn events(&self) -> Result<Option<MemoryEvents>, CgroupError> {
        self.read_keyed(match self.hier.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        })
    }

    /// v2 `memory.events.local`: this cgroup's own events (`None` on v1, which has no such
    /// file).
    pub fn events_local(&self) -> Result<Option<MemoryEvents>, CgroupError> {
        match self.hier.version {
            CgroupVersion::V1 => Ok(None),
            CgroupVersion::V2 => self.read_keyed("memory.events.local"),
        }
    }

    /// v1 `memory.kmem.usage_in_bytes` (`None` on v2).
    pub fn kmem_usage_bytes(&self) -> Result<Option<u64>, CgroupError> {
        self.v1_only("memory.kmem.usage_in_bytes")
    }

    /// v1 `memory.kmem.tcp.usage_in_bytes` (`None` on v2).
    pub fn kmem_tcp_usage_bytes(&self) -> Result<Option<u64>, CgroupError> {
        self.v1_only("memory.kmem.tcp.usage_in_bytes")
    }

    /// v1 `memory.memsw.usage_in_bytes` (memory + swap; `None` on v2 or without swap accounting).
    pub fn memsw_usage_bytes(&self) -> Result<Option<u64>, CgroupError> {
        self.v1_only("memory.memsw.usage_in_bytes")
    }

    /// Bytes in swap charged to the cgroup: v2 `memory.swap.current`, v1
    /// `memory.memsw.usage_in_bytes - memory.usage_in_bytes` (a swapped-out page leaves
    /// `memory` and stays in `memsw`). `None` without swap accounting.
    pub fn swap_usage_bytes(&self) -> Result<Option<u64>, CgroupError> {
        match self.hier.version {
            CgroupVersion::V2 => self.read_u64("memory.swap.current"),
            CgroupVersion::V1 => {
                let (Some(memsw), Some(mem)) = (self.memsw_usage_bytes()?, self.usage_bytes()?)
                else {
                    return Ok(None);
                };
                Ok(Some(memsw.saturating_sub(mem)))
            }
        }
    }

    /// Limits what the cgroup may have in swap to `swap` bytes: v2 `memory.swap.max`; v1
    /// `memory.memsw.limit_in_bytes` = the memory limit + `swap` (v1 has no swap-only knob, and
    /// refuses a memsw limit below the memory limit or the memsw usage). Only for cgroups the
    /// tool created.
    pub fn set_swap_limit_bytes(&self, swap: u64) -> Result<(), CgroupError> {
        match self.hier.version {
            CgroupVersion::V2 => self.write_owned("memory.swap.max", &swap.to_string()),
            CgroupVersion::V1 => {
                let limit = self.limit_bytes()?.unwrap_or(i64::MAX as u64);
                self.write_owned(
                    "memory.memsw.limit_in_bytes",
                    &limit.saturating_add(swap).min(i64::MAX as u64).to_string(),
                )
            }
        }
    }

    /// Process ids in `cgroup.procs` (empty if the cgroup is gone).
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let name = "cgroup.procs";
        let Some(text) = self.read_raw(name)? else {
            return Ok(Vec::new());
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                l.trim().parse::<i32>().map_err(|e| {
                    self.malformed(
                        name,
                        ParseError {
                            line: i + 1,
                            content: l.into(),
                            reason: format!("not a pid ({e})"),
                        },
                    )
                })
            })
            .collect()
    }

    /// All live descendant cgroups (pre-order, parents before children), not including self.
    /// Cgroups removed during the walk are skipped.
    pub fn descendants(&self) -> Result<Vec<MemCgroup>, CgroupError> {
        let mut out = Vec::new();
        self.walk(&mut out)?;
        Ok(out)
    }

    fn walk(&self, out: &mut Vec<MemCgroup>) -> Result<(), CgroupError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if is_gone(&e) => return Ok(()),
            Err(e) => return Err(CgroupError::io(&self.path, e)),
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if is_gone(&e) => continue,
                Err(e) => return Err(CgroupError::io(&self.path, e)),
            };
            // cgroupfs directories are cgroups; files are control files. Skip anything
            // removed between readdir and stat.
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                children.push(MemCgroup {
                    hier: self.hier.clone(),
                    rel: self.rel.join(entry.file_name()),
                    path,
                    id: meta.ino(),
                });
            }
        }
        children.sort_by(|a, b| a.path.cmp(&b.path));
        for c in children {
            out.push(c.clone());
            c.walk(out)?;
        }
        Ok(())
    }

    /// Writes a control file of a cgroup the tool owns.
    pub(crate) fn write_owned(&self, name: &str, content: &str) -> Result<(), CgroupError> {
        if !self.is_owned() {
            return Err(CgroupError::NotOwned {
                path: self.path.clone(),
            });
        }
        write_control(&self.file(name), content)
    }

    /// Moves process `pid` into this cgroup (writes `cgroup.procs`; v1 has it too). Only for
    /// cgroups the tool created.
    pub fn move_pid(&self, pid: i32) -> Result<(), CgroupError> {
        self.write_owned("cgroup.procs", &pid.to_string())
    }

    /// Sets the memory nodes its tasks may allocate on (`cpuset.mems`, a list like `0-1`).
    /// On v2, and on v1 with `cpuset.memory_migrate` set, the kernel migrates the tasks' pages
    /// off the nodes taken away before the write returns. Only for cgroups the tool created
    /// with a cpuset ([`super::RunGroup::enable_cpuset`]).
    pub fn set_cpuset_mems(&self, nodes: &str) -> Result<(), CgroupError> {
        self.write_owned("cpuset.mems", nodes)
    }

    /// v1: sets `cpuset.memory_migrate` (whether a change of `cpuset.mems` moves the tasks'
    /// pages; v2 always does and has no such file). Only for cgroups the tool created.
    pub fn set_memory_migrate(&self, on: bool) -> Result<(), CgroupError> {
        self.write_owned("cpuset.memory_migrate", if on { "1" } else { "0" })
    }

    /// Sets the hard limit (`None` = unlimited): v2 `memory.max`, v1 `memory.limit_in_bytes`.
    /// Only for cgroups the tool created.
    pub fn set_limit_bytes(&self, limit: Option<u64>) -> Result<(), CgroupError> {
        match (self.hier.version, limit) {
            (CgroupVersion::V2, None) => self.write_owned("memory.max", "max"),
            (CgroupVersion::V2, Some(b)) => self.write_owned("memory.max", &b.to_string()),
            (CgroupVersion::V1, None) => self.write_owned("memory.limit_in_bytes", "-1"),
            (CgroupVersion::V1, Some(b)) => {
                self.write_owned("memory.limit_in_bytes", &b.to_string())
            }
        }
    }

    /// Sets the high limit (v2 `memory.high`; `None` = `max`). On v1 there is no such knob:
    /// [`CgroupError::VersionMismatch`]. Only for cgroups the tool created.
    pub fn set_high_bytes(&self, high: Option<u64>) -> Result<(), CgroupError> {
        if self.hier.version == CgroupVersion::V1 {
            return Err(CgroupError::VersionMismatch {
                path: self.path.clone(),
                what: "memory.high",
                needs: CgroupVersion::V2,
                has: CgroupVersion::V1,
            });
        }
        self.write_owned(
            "memory.high",
            &high.map_or_else(|| "max".to_string(), |b| b.to_string()),
        )
    }
}

/// Writes `content` to an existing control file in one `write(2)`.
pub(crate) fn write_control(path: &Path, content: &str) -> Result<(), CgroupError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| CgroupError::io(path, e))?;
    f.write_all(content.as_bytes())
        .map_err(|e| CgroupError::io(path, e))
}

/// The memory cgroup path (relative to the hierarchy root, leading `/`) in the text of
/// `/proc/<pid>/cgroup`: the v1 line whose controllers include `memory`, or the v2 `0::` line.
pub fn parse_proc_cgroup(text: &str, version: CgroupVersion) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let mut it = line.splitn(3, ':');
        let (id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = match version {
            CgroupVersion::V1 => ctrls.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => id == "0" && ctrls.is_empty(),
        };
        hit.then(|| PathBuf::from(path))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A fake hierarchy in a TempDir: root, a memory cgroup `a`, a directory `plain` without
    /// the memory controller, and a file.
    fn fake(version: CgroupVersion) -> (tempfile::TempDir, MemoryHierarchy) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("memory");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("plain")).unwrap();
        fs::write(root.join("a").join(marker(version)), "8192\n").unwrap();
        fs::write(root.join("a/b").join(marker(version)), "4096\n").unwrap();
        fs::write(root.join("cgroup.procs"), "1\n").unwrap();
        (dir, MemoryHierarchy { version, root })
    }

    #[test]
    fn open_accepts_absolute_and_relative() {
        let (_d, h) = fake(CgroupVersion::V1);
        let a = MemCgroup::open(&h, Path::new("a")).unwrap();
        assert_eq!(a.rel_path(), Path::new("/a"));
        assert!(!a.is_root());
        let a2 = MemCgroup::open(&h, &h.root.join("a")).unwrap();
        assert_eq!(a.id(), a2.id());
        assert_eq!(a.id(), fs::metadata(h.root.join("a")).unwrap().ino());
        let r = MemCgroup::root(&h).unwrap();
        assert!(r.is_root());
        assert_eq!(r.rel_path(), Path::new("/"));
        assert_eq!(a.usage_bytes().unwrap(), Some(8192));
        // Absent control file: None, not an error.
        assert_eq!(a.limit_bytes().unwrap(), None);
        assert_eq!(a.stat().unwrap(), None);
        let d = r.descendants().unwrap();
        let rels: Vec<_> = d.iter().map(|c| c.rel_path().to_path_buf()).collect();
        assert_eq!(rels, [PathBuf::from("/a"), "/a/b".into(), "/plain".into()]);
        assert_eq!(
            MemCgroup::find_by_id(&h, a.id())
                .unwrap()
                .unwrap()
                .rel_path(),
            Path::new("/a")
        );
    }

    #[test]
    fn open_errors_are_one_line_and_name_the_path() {
        let (d, h) = fake(CgroupVersion::V2);
        let cases: Vec<(PathBuf, &str)> = vec![
            (h.root.join("nope"), "does not exist"),
            (h.root.join("cgroup.procs"), "is a file"),
            (
                d.path().to_path_buf(),
                "not inside the memory cgroup hierarchy",
            ),
            (
                PathBuf::from("../"),
                "not inside the memory cgroup hierarchy",
            ),
            (h.root.join("plain"), "not a memory cgroup"),
        ];
        for (p, want) in cases {
            let e = MemCgroup::open(&h, &p).unwrap_err().to_string();
            assert!(e.contains(want), "{p:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
            let shown = if p.is_absolute() {
                p.clone()
            } else {
                h.root.join(&p)
            };
            assert!(e.contains(&shown.display().to_string()), "{e}");
        }
        // A symlink from inside the hierarchy to outside it is outside.
        symlink(d.path(), h.root.join("escape")).unwrap();
        let e = MemCgroup::open(&h, Path::new("escape")).unwrap_err();
        assert!(matches!(e, CgroupError::NotInHierarchy { .. }), "{e}");
    }

    #[test]
    fn readers_name_file_and_line_on_malformed_content() {
        let (_d, h) = fake(CgroupVersion::V2);
        let a = MemCgroup::open(&h, Path::new("a")).unwrap();
        fs::write(a.path().join("memory.stat"), "anon 1\nslab 1234\nlol\n").unwrap();
        let e = a.stat().unwrap_err().to_string();
        assert!(
            e.contains("memory.stat") && e.contains("line 3") && e.contains("lol"),
            "{e}"
        );
        fs::write(a.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(a.limit_bytes().unwrap(), None);
        fs::write(a.path().join("memory.max"), "12q\n").unwrap();
        assert!(
            a.limit_bytes()
                .unwrap_err()
                .to_string()
                .contains("memory.max")
        );
        fs::write(
            a.path().join("memory.events"),
            "low 0\nhigh 2\nmax 7\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(a.failcnt().unwrap(), Some(7));
        assert_eq!(a.events().unwrap().unwrap().get("oom_kill"), Some(1));
        fs::write(a.path().join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(a.procs().unwrap(), [12, 34]);
        fs::write(a.path().join("cgroup.procs"), "12\nx\n").unwrap();
        assert!(a.procs().unwrap_err().to_string().contains("line 2"));
        // v1-only readers are None on v2.
        assert_eq!(a.kmem_usage_bytes().unwrap(), None);
        // A removed cgroup reads as None.
        let b = MemCgroup::open(&h, Path::new("a/b")).unwrap();
        fs::remove_dir_all(b.path()).unwrap();
        assert_eq!(b.usage_bytes().unwrap(), None);
        assert!(b.procs().unwrap().is_empty());
        assert!(b.descendants().unwrap().is_empty());
    }

    #[test]
    fn v1_readers() {
        let (_d, h) = fake(CgroupVersion::V1);
        let a = MemCgroup::open(&h, Path::new("a")).unwrap();
        fs::write(
            a.path().join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(a.limit_bytes().unwrap(), None);
        fs::write(a.path().join("memory.limit_in_bytes"), "4194304\n").unwrap();
        assert_eq!(a.limit_bytes().unwrap(), Some(4 << 20));
        fs::write(a.path().join("memory.failcnt"), "3\n").unwrap();
        assert_eq!(a.failcnt().unwrap(), Some(3));
        fs::write(
            a.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(a.events().unwrap().unwrap().get("oom_kill"), Some(2));
        fs::write(a.path().join("memory.kmem.usage_in_bytes"), "65536\n").unwrap();
        assert_eq!(a.kmem_usage_bytes().unwrap(), Some(65536));
        assert_eq!(a.kmem_tcp_usage_bytes().unwrap(), None);
    }

    #[test]
    fn writes_refuse_cgroups_the_tool_did_not_create() {
        let (_d, h) = fake(CgroupVersion::V2);
        let a = MemCgroup::open(&h, Path::new("a")).unwrap();
        let e = a.set_limit_bytes(Some(1 << 20)).unwrap_err();
        assert!(matches!(e, CgroupError::NotOwned { .. }), "{e}");
        assert!(a.move_pid(1).is_err());
        assert!(MemCgroup::root(&h).unwrap().set_high_bytes(None).is_err());
        assert!(is_run_path(Path::new("/memcg-drift/1-2")));
        assert!(is_run_path(Path::new("memcg-drift/1-2/x")));
        assert!(!is_run_path(Path::new("/memcg-drift")));
        assert!(!is_run_path(Path::new("/memcg-drift/../x")));
        assert!(!is_run_path(Path::new("/process_api/memcg-drift/1")));
    }

    #[test]
    fn limit_writers_and_version_mismatch() {
        let (_d, h) = fake(CgroupVersion::V1);
        let dir = h.root.join("memcg-drift/run");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(marker(CgroupVersion::V1)), "0\n").unwrap();
        fs::write(dir.join("memory.limit_in_bytes"), "").unwrap();
        let c = MemCgroup::open(&h, Path::new("memcg-drift/run")).unwrap();
        assert!(c.is_owned());
        c.set_limit_bytes(Some(1 << 20)).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap(),
            "1048576"
        );
        let e = c.set_high_bytes(Some(1)).unwrap_err().to_string();
        assert!(
            e.contains("memory.high") && e.contains("v2") && e.contains("v1"),
            "{e}"
        );
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(text, CgroupVersion::V1),
            Some("/process_api/abc".into())
        );
        assert_eq!(parse_proc_cgroup(text, CgroupVersion::V2), Some("/".into()));
        assert_eq!(
            parse_proc_cgroup("3:cpu,cpuacct:/x\n", CgroupVersion::V1),
            None
        );
    }
}
