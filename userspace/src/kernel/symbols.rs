//! Kernel text symbols from `/proc/kallsyms`: whether a function has an out-of-line body that a
//! kprobe can reach, or only compiler clones (`.part.N`, `.isra.N`, `.constprop.N`, `.cold`)
//! whose calling convention is no longer the C signature.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Why a function has no single `.part.N` clone to probe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartCloneError {
    /// No `.part.N` clone.
    #[error("no {0}.part.N clone")]
    None(String),
    /// Several: which one a caller uses is unknown.
    #[error("{count} .part clones of {name}; which one a caller uses is unknown")]
    Many {
        /// The function.
        name: String,
        /// How many clones.
        count: usize,
    },
}

/// What kallsyms says about one function name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolState {
    /// An out-of-line symbol of exactly this name exists (type `T`/`t`).
    Present,
    /// Only compiler clones exist; listed by full name.
    ClonesOnly(Vec<String>),
    /// No symbol: the function is inlined everywhere or does not exist in this kernel.
    Absent,
}

/// What kallsyms adds to BTF for the residue reader on kernels before 5.19 (whose BTF may
/// lack per-CPU variables, and which have no `bpf_map_lookup_percpu_elem`): the address of
/// `__per_cpu_offset` and the offsets of per-CPU variables within the per-CPU area. Needs
/// `CONFIG_KALLSYMS_ALL` (data symbols) and root (others read zero addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KallsymsData {
    /// Address of the array `__per_cpu_offset`.
    pub per_cpu_offset: Option<u64>,
    /// Per-CPU variable -> offset from `__per_cpu_start`: the symbols between
    /// `__per_cpu_start` and `__per_cpu_end` (0-based on x86-64 before 6.15, where they are
    /// listed as the offsets themselves).
    pub percpu: BTreeMap<String, u64>,
}

impl KallsymsData {
    /// Parses kallsyms text.
    pub fn parse(kallsyms: &str) -> KallsymsData {
        let mut all: Vec<(u64, &str)> = Vec::new();
        let (mut start, mut end, mut per_cpu_offset) = (None, None, None);
        for line in kallsyms.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if it.next().is_some() || !matches!(kind, "D" | "d" | "B" | "b" | "R" | "r" | "A") {
                continue; // module symbols, text
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            match name {
                "__per_cpu_start" => start = Some(addr),
                "__per_cpu_end" => end = Some(addr),
                // A reader without `CAP_SYSLOG` sees zero addresses; an absolute `A` symbol
                // of that name would not be the array.
                "__per_cpu_offset" if kind != "A" && addr != 0 => per_cpu_offset = Some(addr),
                _ => all.push((addr, name)),
            }
        }
        let mut me = KallsymsData {
            per_cpu_offset,
            ..Default::default()
        };
        if let (Some(s), Some(e)) = (start, end)
            && e > s
        {
            for (addr, name) in all {
                if (s..e).contains(&addr) {
                    me.percpu.entry(name.to_string()).or_insert(addr - s);
                }
            }
        }
        me
    }
}

/// The text symbols of the running kernel.
#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    exact: HashSet<String>,
    clones: HashMap<String, Vec<String>>,
}

/// [`Kallsyms`] read on a thread of its own from the start (`prefetch`) or at the first
/// [`LazyKallsyms::get`].
#[derive(Debug)]
pub struct LazyKallsyms {
    pending: std::sync::Mutex<Option<std::thread::JoinHandle<Kallsyms>>>,
    ready: std::sync::OnceLock<Kallsyms>,
}

impl LazyKallsyms {
    /// Starts reading now on a thread when `prefetch`, else reads at the first `get`.
    pub fn new(prefetch: bool) -> Self {
        let load = || Kallsyms::load().unwrap_or_default();
        let pending = prefetch
            .then(|| std::thread::Builder::new().spawn(load).ok())
            .flatten();
        Self {
            pending: std::sync::Mutex::new(pending),
            ready: std::sync::OnceLock::new(),
        }
    }

    /// Whether the symbols were read (or are being read).
    pub fn started(&self) -> bool {
        self.ready.get().is_some() || self.pending.lock().is_ok_and(|p| p.is_some())
    }

    /// The symbols (empty when unreadable), waiting for them or reading them now.
    pub fn get(&self) -> &Kallsyms {
        self.ready.get_or_init(|| {
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            match pending {
                Some(h) => h.join().unwrap_or_default(),
                None => Kallsyms::load().unwrap_or_default(),
            }
        })
    }
}

/// Clone suffixes GCC and LLVM produce for kernel functions.
const CLONE_MARKERS: [&str; 5] = [".part.", ".isra.", ".constprop.", ".cold", ".llvm."];

impl Kallsyms {
    /// Reads `/proc/kallsyms`. An unreadable file gives an empty table (reported by callers
    /// as "symbol facts unavailable").
    pub fn load() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Parses kallsyms text: `address type name [module]`. Only text symbols are kept. It
    /// runs on every attach over some 120,000 lines (issue 11: attach time): fields are split
    /// on single spaces or tabs as the kernel prints them, and only names with a dot are
    /// searched for clone markers (every marker starts with one).
    pub fn parse(text: &str) -> Self {
        let mut me = Self::default();
        for line in text.lines() {
            let mut it = line.split([' ', '\t']).filter(|f| !f.is_empty());
            let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "T" | "t") {
                continue;
            }
            let clone_at = if name.contains('.') {
                CLONE_MARKERS.iter().filter_map(|m| name.find(m)).min()
            } else {
                None
            };
            match clone_at {
                Some(pos) => me
                    .clones
                    .entry(name[..pos].to_string())
                    .or_default()
                    .push(name.to_string()),
                None => {
                    me.exact.insert(name.to_string());
                }
            }
        }
        me
    }

    /// What is known about `name`.
    pub fn state(&self, name: &str) -> SymbolState {
        if self.exact.contains(name) {
            SymbolState::Present
        } else if let Some(c) = self.clones.get(name) {
            SymbolState::ClonesOnly(c.clone())
        } else {
            SymbolState::Absent
        }
    }

    /// The full name of the one `.part.N` clone of `name`, or why there is none.
    pub fn part_clone(&self, name: &str) -> Result<String, PartCloneError> {
        let prefix = format!("{name}.part.");
        let parts: Vec<&String> = self
            .clones
            .get(name)
            .map(|c| c.iter().filter(|n| n.starts_with(&prefix)).collect())
            .unwrap_or_default();
        match parts.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(PartCloneError::None(name.into())),
            many => Err(PartCloneError::Many {
                name: name.into(),
                count: many.len(),
            }),
        }
    }

    /// Number of text symbols read (0 means kallsyms was unavailable or empty).
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// True when no symbol was read.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_cpu_offset_array_needs_a_data_type_and_a_real_address() {
        let offset = |text: &str| KallsymsData::parse(text).per_cpu_offset;
        let text = "ffffffff82a1b9e0 R __per_cpu_offset_fake\n\
                    ffffffff82a1b900 T __per_cpu_offset\n\
                    ffffffff82a1ba00 D __per_cpu_offset\n";
        assert_eq!(offset(text), Some(0xffff_ffff_82a1_ba00));
        assert_eq!(offset("0000000000000000 D __per_cpu_offset\n"), None);
        assert_eq!(offset("ffffffff82a1b900 T __per_cpu_offset\n"), None);
        assert_eq!(offset("ffffffff82a1b9e0 R __per_cpu_offset_fake\n"), None);
    }

    #[test]
    fn per_cpu_variables_are_offsets_in_the_per_cpu_area() {
        // Zero-based (5.10 x86-64): the per-CPU symbols are their own offsets.
        let text = "0000000000000000 A __per_cpu_start\n\
                    0000000000001000 A this_cpu_off\n\
                    000000000002c6c0 A runqueues\n\
                    000000000001f9a0 d memcg_stock\n\
                    0000000000034000 A __per_cpu_end\n\
                    ffffffff8295c8e0 R __per_cpu_offset\n\
                    ffffffff81000000 T _stext\n\
                    ffffffffc0a00000 d some_var\t[some_module]\n";
        let k = KallsymsData::parse(text);
        assert_eq!(k.per_cpu_offset, Some(0xffff_ffff_8295_c8e0));
        assert_eq!(k.percpu.get("runqueues"), Some(&0x2c6c0));
        assert_eq!(k.percpu.get("memcg_stock"), Some(&0x1f9a0));
        assert_eq!(k.percpu.get("this_cpu_off"), Some(&0x1000));
        assert_eq!(k.percpu.len(), 3, "{:?}", k.percpu);
        // Not zero-based: offsets from __per_cpu_start.
        let text = "ffffffff83000000 D __per_cpu_start\n\
                    ffffffff83000040 D runqueues\n\
                    ffffffff83040000 D __per_cpu_end\n";
        assert_eq!(
            KallsymsData::parse(text).percpu.get("runqueues"),
            Some(&0x40)
        );
        // Without data symbols (or as non-root): nothing.
        assert_eq!(
            KallsymsData::parse("ffffffff81000000 T _stext\n"),
            KallsymsData::default()
        );
    }

    #[test]
    fn exact_clones_and_absent() {
        let k = Kallsyms::parse(
            "ffffffff81687750 T page_counter_try_charge\n\
             ffffffff8168d420 t drain_stock\n\
             ffffffff8168d500 t drain_all_stock.part.0\n\
             ffffffff8168d600 t mod_memcg_state.constprop.0\n\
             ffffffff8168d700 d memcg_stock\n\
             ffffffffc0a01000 t zswap_init.cold\t[zswap]\n\
             ffffffff8168d800 T __x64.sys_dotted\n\
             garbage\n",
        );
        // A module's symbol: the name ends at the tab before `[module]`.
        assert_eq!(
            k.state("zswap_init"),
            SymbolState::ClonesOnly(vec!["zswap_init.cold".into()])
        );
        // A dot that starts no clone marker leaves the name whole.
        assert_eq!(k.state("__x64.sys_dotted"), SymbolState::Present);
        assert_eq!(k.state("page_counter_try_charge"), SymbolState::Present);
        assert_eq!(k.state("drain_stock"), SymbolState::Present);
        assert_eq!(
            k.state("drain_all_stock"),
            SymbolState::ClonesOnly(vec!["drain_all_stock.part.0".into()])
        );
        assert_eq!(
            k.part_clone("drain_all_stock").as_deref(),
            Ok("drain_all_stock.part.0")
        );
        assert!(k.part_clone("drain_stock").is_err());
        assert_eq!(
            k.state("mod_memcg_state"),
            SymbolState::ClonesOnly(vec!["mod_memcg_state.constprop.0".into()])
        );
        // Data symbols are not functions.
        assert_eq!(k.state("memcg_stock"), SymbolState::Absent);
        assert_eq!(k.state("try_charge"), SymbolState::Absent);
        assert_eq!(k.len(), 3);
    }
}
