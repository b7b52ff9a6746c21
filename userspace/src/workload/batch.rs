//! `MEMCG_CHARGE_BATCH`, measured on the running kernel.
//!
//! The batch is a `#define` (include/linux/memcontrol.h: 32 before 6.1, 64 since), so it is in
//! neither BTF nor kallsyms. What the kernel does with it is observable, though: a charge that
//! finds its CPU's stock dry for the memcg charges `max(MEMCG_CHARGE_BATCH, nr_pages)` pages
//! to the page_counter at once and stocks the rest (`try_charge_memcg`, every version from 4.14
//! to 6.18). So a workload pinned to one CPU in a fresh cgroup of the tool, faulting one page
//! at a time, moves the cgroup's charged usage (`memory.current`, v1 `memory.usage_in_bytes`:
//! the page_counter) in steps of exactly the batch: every kernel page charged meanwhile (page
//! tables, slab pages) is a one-page request served by the same stock. Other tasks on that CPU
//! charging other memcgs can evict the stock between two readings (the usage falls, or rises
//! by the batch less what was evicted); those values do not repeat, so the batch is the first
//! rise seen [`STEPS`] times, and the measurement fails rather than guess when no rise repeats
//! within [`MAX_PAGES`] faults.
//!
//! The measurement costs a cgroup and a workload for a few milliseconds (a quarter of an
//! `explain`), and its answer is a constant of the running kernel. So it is taken once per
//! boot: [`charge_batch`] keeps it for the process, and in [`CACHE_NAME`] under the tool's
//! private directory (`/run/memcg-drift`, tmpfs, mode 0700) keyed by the boot id and the
//! kernel's release and version; a cache of another boot or kernel, or one the tool cannot
//! trust (not its own, writable by others, a symlink, unparsable), is ignored and measured
//! again. The reports that use the batch say where it came from, cached or not;
//! `memcg-drift cleanup` removes the cache.

use std::{path::Path, sync::OnceLock};

use serde::{Deserialize, Serialize};

use super::{Workload, workload_binary};
use crate::cgroup::{MemCgroup, MemoryHierarchy, RunGroup};

/// Times a rise of the charged usage must be seen to be the batch.
pub const STEPS: usize = 3;
/// Pages faulted at most before the measurement gives up (a batch up to 1/STEPS of this).
const MAX_PAGES: u64 = 8192;

/// The charge batch of the running kernel and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeBatch {
    /// Pages charged at once when a CPU's stock is dry (`MEMCG_CHARGE_BATCH`).
    pub pages: u64,
    /// How it was found (JSON `charge_batch.source`).
    pub source: String,
}

/// Why [`charge_batch`] has no batch (one line; the cause's text is kept, not the cause, so
/// the answer can be cached and handed out again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The tool may run on no CPU (an empty affinity mask).
    #[error("MEMCG_CHARGE_BATCH not measured: no CPU in the tool's affinity mask")]
    NoCpu,
    /// Creating, reading or removing the tool's cgroup failed.
    #[error("MEMCG_CHARGE_BATCH not measured: {0}")]
    Cgroup(String),
    /// The measuring workload failed.
    #[error("MEMCG_CHARGE_BATCH not measured: {0}")]
    Workload(String),
    /// No rise of the charged usage repeated.
    #[error(
        "MEMCG_CHARGE_BATCH not measured: no rise of the charged usage repeated {STEPS} times \
         while one page at a time was charged (rises {0:?})"
    )]
    NoRepeat(Vec<u64>),
}

impl From<crate::cgroup::CgroupError> for BatchError {
    fn from(e: crate::cgroup::CgroupError) -> Self {
        BatchError::Cgroup(e.to_string())
    }
}

impl From<super::WorkloadError> for BatchError {
    fn from(e: super::WorkloadError) -> Self {
        BatchError::Workload(e.to_string())
    }
}

static MEASURED: OnceLock<Result<ChargeBatch, BatchError>> = OnceLock::new();

/// The file of the tool's private directory that keeps the batch for this boot.
pub const CACHE_NAME: &str = "charge-batch";

/// The charge batch of the running kernel: read from this boot's cache, or measured (in a
/// cgroup of the tool under `hier`) and cached; the same answer for the rest of the process.
pub fn charge_batch(hier: &MemoryHierarchy) -> Result<ChargeBatch, BatchError> {
    MEASURED
        .get_or_init(|| {
            let dir = crate::cgroup::owner_dir();
            let key = BootKey::current();
            if let Some(b) = key.as_ref().and_then(|k| cached(&dir, k)) {
                return Ok(b);
            }
            let measured = measure(hier);
            if let (Ok(b), Some(k)) = (&measured, key) {
                // A cache that cannot be written costs the next process a measurement, no more.
                let _ = store(&dir, k, b);
            }
            measured
        })
        .clone()
}

/// Measures the batch now, neither reading nor writing the cache (for checks of the cache).
pub fn measure_uncached(hier: &MemoryHierarchy) -> Result<ChargeBatch, BatchError> {
    measure(hier)
}

/// Removes this boot's cache (`memcg-drift cleanup`): the path when there was one. `unlink`
/// removes a name, never what a symlink at it points to.
pub fn remove_cache() -> std::io::Result<Option<std::path::PathBuf>> {
    let path = crate::cgroup::owner_dir().join(CACHE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a cached batch is valid for: one boot of one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootKey {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
}

impl BootKey {
    /// The running boot's key; `None` when the boot id cannot be read (nothing is cached then).
    pub fn current() -> Option<BootKey> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let u = nix::sys::utsname::uname().ok()?;
        Some(BootKey {
            boot_id: boot_id.trim().to_string(),
            release: u.release().to_string_lossy().into_owned(),
            version: u.version().to_string_lossy().into_owned(),
        })
    }
}

/// The cache file's content (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheFile {
    #[serde(flatten)]
    key: BootKey,
    pages: u64,
    /// The measurement's own `source` text.
    source: String,
    /// When it was measured (RFC 3339, UTC).
    measured_at: String,
}

/// Writes `b` as this boot's cache in `dir`.
pub fn store(dir: &Path, key: BootKey, b: &ChargeBatch) -> Result<(), crate::safefs::SafeFsError> {
    let file = CacheFile {
        key,
        pages: b.pages,
        source: b.source.clone(),
        measured_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let mut bytes = serde_json::to_vec(&file).expect("a cache entry serialises");
    bytes.push(b'\n');
    crate::safefs::write_private_file(dir, CACHE_NAME, &bytes).map(|_| ())
}

/// The batch cached in `dir` for `key`, if there is a cache the tool can trust for this boot.
pub fn cached(dir: &Path, key: &BootKey) -> Option<ChargeBatch> {
    let bytes = crate::safefs::read_private_file(dir, CACHE_NAME).ok()??;
    let file: CacheFile = serde_json::from_slice(&bytes).ok()?;
    let plausible = file.pages > 0
        && file.pages <= MAX_PAGES / STEPS as u64
        && file.source.starts_with("measured: ");
    (file.key == *key && plausible).then(|| ChargeBatch {
        pages: file.pages,
        source: format!(
            "{}; at {}, cached for this boot in {}",
            file.source,
            file.measured_at,
            dir.join(CACHE_NAME).display()
        ),
    })
}

/// The charged usage of `cg` in pages.
fn usage_pages(cg: &MemCgroup, page: u64) -> Result<u64, BatchError> {
    match cg.usage_bytes()? {
        Some(b) => Ok(b / page),
        None => Err(BatchError::Cgroup(format!(
            "{} has no usage file",
            cg.path().display()
        ))),
    }
}

/// What a sequence of usage readings (pages) shows: the rises, and how many falls.
///
/// Other tasks charging other memcgs on the same CPU evict this memcg's stock (`drain_stock`:
/// the charged usage falls by what it held), so between two readings the usage can also fall,
/// or rise by the batch less an eviction. Neither repeats a value the way the batch does.
pub fn steps_of(readings: &[u64]) -> (Vec<u64>, usize) {
    let mut rises = Vec::new();
    let mut falls = 0;
    for w in readings.windows(2) {
        match w[1].cmp(&w[0]) {
            std::cmp::Ordering::Less => falls += 1,
            std::cmp::Ordering::Greater => rises.push(w[1] - w[0]),
            std::cmp::Ordering::Equal => {}
        }
    }
    (rises, falls)
}

/// The batch: the first rise seen [`STEPS`] times, if one was.
pub fn batch_of(rises: &[u64]) -> Result<u64, BatchError> {
    let mut seen = std::collections::BTreeMap::<u64, usize>::new();
    for r in rises {
        let n = seen.entry(*r).or_default();
        *n += 1;
        if *n == STEPS {
            return Ok(*r);
        }
    }
    Err(BatchError::NoRepeat(rises.to_vec()))
}

fn measure(hier: &MemoryHierarchy) -> Result<ChargeBatch, BatchError> {
    let cpu = *nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .ok()
        .and_then(|set| (0..nix::sched::CpuSet::count()).find(|&c| set.is_set(c).unwrap_or(false)))
        .as_ref()
        .ok_or(BatchError::NoCpu)?;
    let run = RunGroup::create(hier)?;
    let result = (|| -> Result<ChargeBatch, BatchError> {
        let cg = run.child("charge-batch")?;
        let mut w = Workload::spawn(&workload_binary(), &cg, cpu)?;
        let page = w.page_size();
        let mut readings = vec![usage_pages(&cg, page)?];
        let mut touched = 0;
        while touched < MAX_PAGES && batch_of(&steps_of(&readings).0).is_err() {
            w.touch(1)?;
            touched += 1;
            let u = usage_pages(&cg, page)?;
            if Some(&u) != readings.last() {
                readings.push(u);
            }
        }
        let (rises, falls) = steps_of(&readings);
        w.exit()?;
        let pages = batch_of(&rises)?;
        let others = rises.iter().filter(|r| **r != pages).count();
        Ok(ChargeBatch {
            pages,
            source: format!(
                "measured: {touched} one-page faults on CPU {cpu} in a fresh cgroup raised its \
                 charged usage by {pages} pages {STEPS} times{}",
                if others + falls > 0 {
                    format!(
                        " ({others} other rise(s), {falls} fall(s): its stock evicted by other \
                         memcgs' charges)"
                    )
                } else {
                    String::new()
                }
            ),
        })
    })();
    let removed = run.remove();
    let batch = result?;
    removed?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rise_seen_three_times_is_the_batch() {
        let (rises, falls) = steps_of(&[192, 256, 256, 320, 384]);
        assert_eq!((rises.clone(), falls), (vec![64, 64, 64], 0));
        assert_eq!(batch_of(&rises), Ok(64));
        assert_eq!(batch_of(&steps_of(&[0, 32, 64, 96]).0), Ok(32));
    }

    #[test]
    fn evictions_do_not_fool_it() {
        // Evicted (-40), then a batch less an eviction (64 - 33), then batches.
        let (rises, falls) = steps_of(&[128, 88, 152, 183, 247, 311, 311, 375]);
        assert_eq!((rises.clone(), falls), (vec![64, 31, 64, 64, 64], 1));
        assert_eq!(batch_of(&rises), Ok(64));
        assert_eq!(batch_of(&[31, 30, 64, 31, 64, 64]), Ok(64));
    }

    #[test]
    fn the_cache_holds_for_its_boot_only_and_is_trusted_only_when_private() {
        let dir = std::env::temp_dir().join(format!(
            "memcg-drift-batch-cache-{}",
            crate::safefs::random_suffix()
        ));
        let key = BootKey {
            boot_id: "b1".into(),
            release: "6.18.44".into(),
            version: "#1 SMP".into(),
        };
        let b = ChargeBatch {
            pages: 64,
            source: "measured: 163 one-page faults on CPU 0".into(),
        };
        assert_eq!(cached(&dir, &key), None, "no cache yet");
        store(&dir, key.clone(), &b).unwrap();
        let c = cached(&dir, &key).unwrap();
        assert_eq!(c.pages, 64);
        assert!(
            c.source.starts_with("measured: 163 one-page faults"),
            "{}",
            c.source
        );
        assert!(c.source.contains("cached for this boot in"), "{}", c.source);
        for other in [
            BootKey {
                boot_id: "b2".into(),
                ..key.clone()
            },
            BootKey {
                release: "6.12.1".into(),
                ..key.clone()
            },
            BootKey {
                version: "#2 SMP".into(),
                ..key.clone()
            },
        ] {
            assert_eq!(cached(&dir, &other), None, "{other:?}");
        }
        // Implausible or foreign content is measured again, not believed.
        let file = dir.join(CACHE_NAME);
        for bad in [
            r##"{"boot_id":"b1","release":"6.18.44","version":"#1 SMP","pages":0,"source":"measured: x","measured_at":"t"}"##,
            r##"{"boot_id":"b1","release":"6.18.44","version":"#1 SMP","pages":64,"source":"a guess","measured_at":"t"}"##,
            "not json",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert_eq!(cached(&dir, &key), None, "{bad}");
        }
        store(&dir, key.clone(), &b).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o646)).unwrap();
        assert_eq!(cached(&dir, &key), None, "a file others may write");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn too_few_repeats_are_refused() {
        let e = batch_of(&[64, 64]).unwrap_err();
        assert_eq!(e, BatchError::NoRepeat(vec![64, 64]));
        assert!(e.to_string().contains("repeated 3 times"), "{e}");
        assert!(batch_of(&[]).is_err());
    }
}
