//! Kernel text symbols from `/proc/kallsyms`: whether a function has an out-of-line body that a
//! kprobe can reach, or only compiler clones (`.part.N`, `.isra.N`, `.constprop.N`, `.cold`)
//! whose calling convention is no longer the C signature.

use std::collections::{BTreeMap, BTreeSet};

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

/// The text symbols of the running kernel.
#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    exact: BTreeSet<String>,
    clones: BTreeMap<String, Vec<String>>,
}

/// Clone suffixes GCC and LLVM produce for kernel functions.
const CLONE_MARKERS: [&str; 5] = [".part.", ".isra.", ".constprop.", ".cold", ".llvm."];

impl Kallsyms {
    /// Reads `/proc/kallsyms`. An unreadable file gives an empty table (reported by callers
    /// as "symbol facts unavailable").
    pub fn load() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Parses kallsyms text: `address type name [module]`. Only text symbols are kept.
    pub fn parse(text: &str) -> Self {
        let mut me = Self::default();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "T" | "t") {
                continue;
            }
            match CLONE_MARKERS.iter().filter_map(|m| name.find(m)).min() {
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
    fn exact_clones_and_absent() {
        let k = Kallsyms::parse(
            "ffffffff81687750 T page_counter_try_charge\n\
             ffffffff8168d420 t drain_stock\n\
             ffffffff8168d500 t drain_all_stock.part.0\n\
             ffffffff8168d600 t mod_memcg_state.constprop.0\n\
             ffffffff8168d700 d memcg_stock\n\
             garbage\n",
        );
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
        assert_eq!(k.len(), 2);
    }
}
