//! `/proc/self/mountinfo` parsing and cgroup layout detection.
//!
//! The parsers are pure; [`detect_layout`] is the only function here that reads the system
//! (mountinfo, and the v2 root's `cgroup.controllers`).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::CgroupError;

/// Cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies (`cgroup` filesystem).
    V1,
    /// The unified hierarchy (`cgroup2` filesystem).
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// Which cgroup filesystems are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayoutKind {
    /// Only v1 hierarchies.
    V1,
    /// Only the unified (v2) hierarchy.
    V2,
    /// Both (systemd's "hybrid" layout, or v1 controllers beside a cgroup2 mount).
    Hybrid,
}

/// Where the memory controller lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryHierarchy {
    /// v1 (a `cgroup` mount with the `memory` controller) or v2 (cgroup2 listing `memory`).
    pub version: CgroupVersion,
    /// The mount point: the root of the memory hierarchy as this process sees it.
    pub root: PathBuf,
}

/// One v1 hierarchy mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Mount {
    /// Mount point.
    pub mount_point: PathBuf,
    /// Controllers bound to it (`memory`, `cpu`, ..., or `name=systemd` for a named hierarchy).
    pub controllers: Vec<String>,
}

/// The cgroup layout of this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// V1, V2 or hybrid.
    pub kind: LayoutKind,
    /// The memory controller's hierarchy, if any.
    pub memory: Option<MemoryHierarchy>,
    /// The cgroup2 mount, if any.
    pub v2_mount: Option<PathBuf>,
    /// The v1 mounts with their controllers, in mountinfo order.
    pub v1_mounts: Vec<V1Mount>,
}

impl Layout {
    /// One line for humans, e.g. `hybrid; memory: v1 at /sys/fs/cgroup/memory`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            LayoutKind::V1 => "v1",
            LayoutKind::V2 => "v2",
            LayoutKind::Hybrid => "hybrid (v1 + v2)",
        };
        match &self.memory {
            Some(m) => format!(
                "{kind}; memory controller: {} at {}",
                m.version,
                m.root.display()
            ),
            None => format!("{kind}; no memory controller mounted"),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// One line of `/proc/<pid>/mountinfo` (see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Mount id.
    pub mount_id: u32,
    /// Parent mount id.
    pub parent_id: u32,
    /// Root of the mount within its filesystem (`/` unless a bind mount or a cgroup namespace).
    pub root: PathBuf,
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type (`cgroup`, `cgroup2`, ...).
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-mount options.
    pub mount_options: Vec<String>,
    /// Per-superblock options (for v1 cgroups, these name the controllers).
    pub super_options: Vec<String>,
}

/// Undoes the octal escapes procfs writes in paths (mountinfo, /proc/swaps: `\040` for space,
/// `\011`, `\012`, `\134`).
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of `/proc/self/mountinfo`. Pure.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, CgroupError> {
    let mut mounts = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: &str| CgroupError::Mountinfo {
            line: idx + 1,
            content: line.to_string(),
            reason: reason.into(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| bad("no ' - ' separator"))?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(bad("too few fields"));
        }
        let mount_id = fields[0]
            .parse()
            .map_err(|_| bad("mount id is not a number"))?;
        let parent_id = fields[1]
            .parse()
            .map_err(|_| bad("parent id is not a number"))?;
        let opts = |s: &str| {
            s.split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        mounts.push(Mount {
            mount_id,
            parent_id,
            root: PathBuf::from(unescape(fields[3])),
            mount_point: PathBuf::from(unescape(fields[4])),
            mount_options: opts(fields[5]),
            fs_type: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]),
            super_options: fields.get(sep + 3).map(|s| opts(s)).unwrap_or_default(),
        });
    }
    Ok(mounts)
}

/// Super options of a v1 cgroup mount that are not controllers.
fn is_v1_option(opt: &str) -> bool {
    matches!(
        opt,
        "rw" | "ro"
            | "noprefix"
            | "xattr"
            | "clone_children"
            | "cpuset_v2_mode"
            | "favordynmods"
            | "nofavordynmods"
            | "all"
            | "none"
    ) || opt.starts_with("release_agent=")
}

/// Builds the layout from parsed mounts. `v2_controllers` returns the content of
/// `cgroup.controllers` at a cgroup2 mount point (None if unreadable). Pure apart from that
/// callback, so it is unit-tested with literal mountinfo texts.
pub fn layout_from_mounts(
    mounts: &[Mount],
    v2_controllers: impl Fn(&Path) -> Option<String>,
) -> Result<Layout, CgroupError> {
    let v2_mount = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point.clone());
    let v1_mounts: Vec<V1Mount> = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup")
        .map(|m| V1Mount {
            mount_point: m.mount_point.clone(),
            controllers: m
                .super_options
                .iter()
                .filter(|o| !is_v1_option(o))
                .cloned()
                .collect(),
        })
        .collect();
    let kind = match (v1_mounts.is_empty(), v2_mount.is_some()) {
        (true, false) => return Err(CgroupError::NoCgroupFs),
        (true, true) => LayoutKind::V2,
        (false, false) => LayoutKind::V1,
        (false, true) => LayoutKind::Hybrid,
    };
    let v1_memory = v1_mounts
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == "memory"))
        .map(|m| MemoryHierarchy {
            version: CgroupVersion::V1,
            root: m.mount_point.clone(),
        });
    let memory = v1_memory.or_else(|| {
        let root = v2_mount.as_ref()?;
        let controllers = v2_controllers(root)?;
        controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then(|| MemoryHierarchy {
                version: CgroupVersion::V2,
                root: root.clone(),
            })
    });
    Ok(Layout {
        kind,
        memory,
        v2_mount,
        v1_mounts,
    })
}

/// Reads `/proc/self/mountinfo` and the v2 root's `cgroup.controllers`.
pub fn detect_layout() -> Result<Layout, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|e| CgroupError::io(path, e))?;
    let mounts = parse_mountinfo(&text)?;
    layout_from_mounts(&mounts, |root| {
        std::fs::read_to_string(root.join("cgroup.controllers")).ok()
    })
}

impl MemoryHierarchy {
    /// The memory hierarchy of this machine, or [`CgroupError::NoMemoryController`].
    pub fn detect() -> Result<MemoryHierarchy, CgroupError> {
        detect_layout()?
            .memory
            .ok_or(CgroupError::NoMemoryController)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine: v1 controllers under /sys/fs/cgroup/<ctrl>, cgroup2 without memory.
    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// Debian 12 / the QEMU guests: cgroup2 only.
    const PURE_V2: &str = "\
25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
26 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// Old-style v1 with co-mounted controllers and a release agent.
    const V1_ONLY: &str = "\
30 24 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
31 24 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
32 24 0:28 / /sys/fs/cgroup/systemd rw shared:12 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/x,name=systemd
";

    #[test]
    fn hybrid_layout_as_on_this_machine() {
        let mounts = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(mounts.len(), 7);
        assert_eq!(mounts[4].mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(mounts[4].super_options, vec!["rw", "memory"]);
        // cgroup2 here has no memory: the v1 memory mount must win and v2 is not consulted.
        let layout = layout_from_mounts(&mounts, |_| Some("cpuset cpu io pids".into())).unwrap();
        assert_eq!(layout.kind, LayoutKind::Hybrid);
        assert_eq!(
            layout.memory,
            Some(MemoryHierarchy {
                version: CgroupVersion::V1,
                root: "/sys/fs/cgroup/memory".into()
            })
        );
        assert_eq!(
            layout.v2_mount.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(layout.v1_mounts.len(), 3);
        assert_eq!(layout.v1_mounts[2].controllers, vec!["name=systemd"]);
        assert!(
            layout.describe().contains("v1 at /sys/fs/cgroup/memory"),
            "{}",
            layout.describe()
        );
    }

    #[test]
    fn pure_v2_with_and_without_memory() {
        let mounts = parse_mountinfo(PURE_V2).unwrap();
        let layout = layout_from_mounts(&mounts, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory hugetlb pids rdma misc\n".into())
        })
        .unwrap();
        assert_eq!(layout.kind, LayoutKind::V2);
        assert_eq!(
            layout.memory,
            Some(MemoryHierarchy {
                version: CgroupVersion::V2,
                root: "/sys/fs/cgroup".into()
            })
        );
        assert!(layout.v1_mounts.is_empty());
        // "memory_recursiveprot" in the options must not be taken for the controller.
        let layout = layout_from_mounts(&mounts, |_| Some("cpu io pids".into())).unwrap();
        assert_eq!(layout.memory, None);
        let layout = layout_from_mounts(&mounts, |_| None).unwrap();
        assert_eq!(layout.memory, None);
        assert!(layout.describe().contains("no memory controller"));
    }

    #[test]
    fn v1_only_layout() {
        let layout =
            layout_from_mounts(&parse_mountinfo(V1_ONLY).unwrap(), |_| panic!("no v2 here"))
                .unwrap();
        assert_eq!(layout.kind, LayoutKind::V1);
        assert_eq!(layout.v2_mount, None);
        assert_eq!(layout.v1_mounts[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            layout.v1_mounts[0].mount_point,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(layout.v1_mounts[2].controllers, vec!["name=systemd"]);
        assert_eq!(
            layout.memory.unwrap().root,
            Path::new("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn no_memory_controller_and_no_cgroup_fs() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let layout = layout_from_mounts(&parse_mountinfo(text).unwrap(), |_| None).unwrap();
        assert_eq!(layout.kind, LayoutKind::V1);
        assert_eq!(layout.memory, None);
        let err = layout_from_mounts(
            &parse_mountinfo("27 1 254:0 / / rw - ext4 /dev/vda rw\n").unwrap(),
            |_| None,
        )
        .unwrap_err();
        assert!(matches!(err, CgroupError::NoCgroupFs), "{err}");
    }

    #[test]
    fn mountinfo_escapes_and_errors() {
        let m = parse_mountinfo("40 1 0:5 / /mnt/with\\040space rw - cgroup2 none rw\n").unwrap();
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(m[0].super_options, vec!["rw"]);
        let err = parse_mountinfo("\n40 1 0:5 / /mnt rw cgroup2 none rw\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_mountinfo("x 1 0:5 / /mnt rw - cgroup2 none rw\n").unwrap_err();
        assert!(err.to_string().contains("mount id"), "{err}");
        assert!(parse_mountinfo("").unwrap().is_empty());
    }

    #[test]
    fn layout_serializes() {
        let layout = layout_from_mounts(&parse_mountinfo(HYBRID).unwrap(), |_| None).unwrap();
        let json = serde_json::to_string(&layout).unwrap();
        assert!(json.contains("\"kind\":\"Hybrid\""), "{json}");
        assert!(json.contains("\"version\":\"V1\""), "{json}");
    }
}
