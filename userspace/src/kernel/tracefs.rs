//! tracefs: where it is mounted, mounting it when nothing is, and which tracepoints exist.
//!
//! Classic tracepoints are attached through their tracefs `id`. Kernels do not always mount
//! tracefs (the machines this project is built on do not); the tool then mounts it at
//! `/sys/kernel/tracing` and unmounts it again when it exits (`TracefsGuard`).

use std::path::{Path, PathBuf};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// tracefs is unavailable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TracefsError {
    /// Nothing was mounted and mounting it failed.
    #[error("tracefs is not mounted and mounting it at {} failed: {err}", target.display())]
    Mount {
        /// Where it was to be mounted.
        target: PathBuf,
        /// mount(2)'s error.
        err: nix::errno::Errno,
    },
}

/// An available tracefs; unmounts on drop if this process mounted it.
#[derive(Debug)]
pub struct Tracefs {
    root: PathBuf,
    mounted_by_us: bool,
}

impl Tracefs {
    /// Finds a mounted tracefs, or mounts one at `/sys/kernel/tracing`.
    pub fn open_or_mount() -> Result<Self, TracefsError> {
        for c in CANDIDATES {
            if Path::new(c).join("events").is_dir() {
                return Ok(Self {
                    root: c.into(),
                    mounted_by_us: false,
                });
            }
        }
        let target = Path::new(CANDIDATES[0]);
        nix::mount::mount(
            Some("tracefs"),
            target,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|err| TracefsError::Mount {
            target: target.into(),
            err,
        })?;
        Ok(Self {
            root: target.into(),
            mounted_by_us: true,
        })
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True if this process mounted it.
    pub fn mounted_by_us(&self) -> bool {
        self.mounted_by_us
    }

    /// True if `category:name` exists.
    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.root
            .join("events")
            .join(category)
            .join(name)
            .join("format")
            .is_file()
    }

    /// The `format` file of an event.
    pub fn format(&self, category: &str, name: &str) -> Option<String> {
        std::fs::read_to_string(
            self.root
                .join("events")
                .join(category)
                .join(name)
                .join("format"),
        )
        .ok()
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_by_us {
            // Lazy detach: links already attached keep working; nothing is left mounted.
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Offset of field `name` in a tracefs `format` text (`field:TYPE NAME; offset:N; size:S;`).
pub fn field_offset(format: &str, name: &str) -> Option<(usize, usize)> {
    format.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?.split(';').next()?;
        let fname = decl.split_whitespace().last()?.split('[').next()?;
        if fname != name {
            return None;
        }
        let get = |key: &str| {
            l.split(';')
                .find_map(|p| p.trim().strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        Some((get("offset:")?, get("size:")?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: mod_memcg_state\nID: 763\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:u64 id;\toffset:8;\tsize:8;\tsigned:0;\n\
        \tfield:int item;\toffset:16;\tsize:4;\tsigned:1;\n\
        \tfield:int val;\toffset:20;\tsize:4;\tsigned:1;\n";

    #[test]
    fn parses_field_offsets() {
        assert_eq!(field_offset(FORMAT, "id"), Some((8, 8)));
        assert_eq!(field_offset(FORMAT, "item"), Some((16, 4)));
        assert_eq!(field_offset(FORMAT, "val"), Some((20, 4)));
        assert_eq!(field_offset(FORMAT, "common_type"), Some((0, 2)));
        assert_eq!(field_offset(FORMAT, "nope"), None);
    }
}
