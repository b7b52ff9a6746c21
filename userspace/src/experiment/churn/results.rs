//! `run churn`: the typed results a record holds (docs/json.md).

use super::*;

/// What a dying cgroup still held when the hold ended (its own shares, pages).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holding {
    /// Its page_counter (kernel memory freed after its offline is uncharged from the parent,
    /// so this can be stale).
    pub usage_pages: u64,
    /// Pages on LRU lists charged to it (page cache, tmpfs).
    pub lru_pages: i64,
    /// Its pages waiting in per-CPU lru_add batches.
    pub lru_add_pages: i64,
    /// Its own MEMCG_KMEM.
    pub kmem_pages: i64,
    /// Pages in charge stock slots.
    pub stock_pages: i64,
    /// Charge stock slots caching it (each keeps a css reference; 0 in older records).
    #[serde(default)]
    pub stock_slots: u32,
    /// What keeps it, in words.
    pub pinned_by: Vec<String>,
}

impl Holding {
    pub(super) fn from_dying(d: &crate::ledger::Dying) -> Holding {
        Holding {
            usage_pages: d.usage_pages,
            lru_pages: d.lru_pages,
            lru_add_pages: d.lru_add_pages,
            kmem_pages: d.kmem_pages,
            stock_pages: d.stock_pages,
            stock_slots: d.stock_slots,
            pinned_by: d.held_by(),
        }
    }

    /// Pages of its folios on the LRU or on their way there.
    pub fn lru_total(&self) -> i64 {
        self.lru_pages + self.lru_add_pages
    }
}

/// One churned cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Churned {
    /// 0-based.
    pub index: u32,
    /// Its name below the run.
    pub cgroup: String,
    /// Its cgroup id.
    pub cgroup_id: u64,
    /// Its job wrote a pinning file.
    pub pinned: bool,
    /// The CPU its job ran on.
    pub cpu: usize,
    /// rmdir returned, ms since the run began.
    pub removed_ms: f64,
    /// Start of the first poll that saw it offline (dying), ms.
    pub first_dying_seen_ms: Option<f64>,
    /// Start of the last poll that saw it, ms.
    pub last_seen_ms: Option<f64>,
    /// End of the first poll that no longer saw it after its removal (released by then), ms.
    pub released_by_ms: Option<f64>,
    /// Offline-to-release lifetime, ms: `[lower, upper]` from the polls around the release.
    pub lifetime_ms: Option<[f64; 2]>,
    /// Still dying when the hold ended.
    pub dying_at_end_of_hold: bool,
    /// What it held then (from the ledger's dying table).
    pub held_at_end_of_hold: Option<Holding>,
    /// Pages on the LRU (or in lru_add batches) it held at the end of the hold beyond its
    /// pinning file: page cache it brought in that nobody else had cached (on a disk file
    /// system, e.g. the scratch directory's metadata blocks). They keep it dying after its
    /// file is gone.
    pub extra_lru_pages: i64,
    /// Released (gone from the walk) after the pins were removed, at most this long after
    /// the removal of the files began, ms.
    pub released_after_unpin_ms: Option<f64>,
    /// `cgroup:cgroup_rmdir` of it, by the kernel's clock, ms since the run began (`None`
    /// where the lifecycle tracepoints cannot attach).
    #[serde(default)]
    pub traced_rmdir_ms: Option<f64>,
    /// `cgroup:cgroup_release` of it, ms (`None`: not released during the run, or untraced).
    #[serde(default)]
    pub traced_release_ms: Option<f64>,
    /// Exact lifetime from the tracepoints: release - rmdir, ms.
    #[serde(default)]
    pub traced_lifetime_ms: Option<f64>,
}

/// How the lifecycle was observed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PollInfo {
    /// `polled css walk`, with or without the lifecycle tracepoints.
    pub method: String,
    /// The requested interval, ms.
    pub interval_ms: u64,
    /// Polls taken.
    pub polls: u64,
    /// Longest time between the starts of two consecutive polls, ms (the resolution).
    pub max_gap_ms: f64,
    /// Mean time between poll starts, ms.
    pub mean_gap_ms: f64,
    /// Longest single walk, ms.
    pub max_walk_ms: f64,
}

/// One change of the dying count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DyingPoint {
    /// Start of the poll, ms since the run began.
    pub ms: f64,
    /// Dying memcgs under the run in the css walk.
    pub walk: usize,
    /// v2 `cgroup.stat` `nr_dying_descendants` of the run, read right after the walk (v1:
    /// none).
    pub nr_dying_descendants: Option<u64>,
}

/// The state when the hold ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndOfHold {
    /// When, ms since the run began.
    pub ms: f64,
    /// The hold ended early because no churned cgroup was left dying.
    pub ended_early: bool,
    /// Dying descendants in the explain ledger's walk.
    pub dying_walk: usize,
    /// v2 `nr_dying_descendants`, read right after.
    pub nr_dying_descendants: Option<u64>,
}

/// Lifetimes of a group of cgroups, ms (upper bounds of the polled intervals).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    /// Cgroups counted.
    pub count: usize,
    /// Shortest.
    pub min_ms: f64,
    /// Median.
    pub median_ms: f64,
    /// Longest.
    pub max_ms: f64,
}

impl Spread {
    pub(super) fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            count: v.len(),
            min_ms: v[0],
            median_ms: v[v.len() / 2],
            max_ms: v[v.len() - 1],
        })
    }
}

/// The results section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// The options.
    pub params: Params,
    /// How offline and release were seen.
    pub poll: PollInfo,
    /// Touch/free rounds each sibling completed during the churn.
    pub sibling_rounds: Vec<u64>,
    /// The churned cgroups.
    pub churned: Vec<Churned>,
    /// Each change of the dying count (every poll's value is one of these).
    pub dying_over_time: Vec<DyingPoint>,
    /// Most dying memcgs any poll saw.
    pub peak_dying: usize,
    /// When first, ms.
    pub peak_ms: f64,
    /// The end of the hold.
    pub end_of_hold: EndOfHold,
    /// Unpinned churned cgroups, and how many were released before the hold ended.
    pub unpinned: usize,
    /// ...
    pub unpinned_released_in_hold: usize,
    /// The directory of the pinning files is on tmpfs (`/dev/shm` where it is one): a file
    /// there is shmem and nothing else, and without swap nothing but its removal uncharges
    /// it. Elsewhere (the run's scratch directory on a disk file system) creating it can also
    /// bring metadata blocks into the page cache, charged to the writer, and reclaim can evict
    /// its pages and release the cgroup before the file goes.
    pub scratch_on_tmpfs: bool,
    /// Pinned churned cgroups, and how many were released within the release wait after
    /// their files were removed.
    pub pinned: usize,
    /// ...
    pub pinned_released_after_unpin: usize,
    /// When the removal of the pinning files began, ms.
    pub unpin_ms: Option<f64>,
    /// Lifetimes (offline to release, upper bounds) of the unpinned cgroups.
    pub unpinned_lifetime: Option<Spread>,
    /// Release after unpinning (upper bounds) of the pinned ones.
    pub pinned_release_after_unpin: Option<Spread>,
    /// Exact lifetimes (rmdir to release, kernel tracepoints) of the unpinned cgroups.
    #[serde(default)]
    pub unpinned_traced_lifetime: Option<Spread>,
}

// ---------------------------------------------------------------------------------------------
// The poller: walks the run's css subtree at a fixed interval on its own thread.
