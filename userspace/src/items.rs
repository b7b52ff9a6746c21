//! Names and units of statistic items, from the running kernel's BTF enums.
//!
//! `mod_memcg_state` takes an `enum memcg_stat_item`, which continues where
//! `enum node_stat_item` ends (`MEMCG_SWAP = NR_VM_NODE_STAT_ITEMS`), and the lruvec variant
//! takes an `enum node_stat_item`; so one value space names both. Items whose name ends in
//! `_B` count bytes, all others pages (include/linux/mmzone.h, `vmstat_item_in_bytes`).

use std::collections::BTreeMap;

use crate::kernel::btf::KernelBtf;

/// The kernel's BTF names no statistic item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("kernel BTF has neither enum node_stat_item nor enum memcg_stat_item")]
pub struct NoItemEnums;

/// Item value -> name map of this kernel.
#[derive(Debug, Clone, Default)]
pub struct ItemNames {
    names: BTreeMap<u32, String>,
}

impl ItemNames {
    /// Builds the map from BTF; errors if neither enum is present.
    pub fn from_btf(btf: &KernelBtf) -> Result<Self, NoItemEnums> {
        let mut names = BTreeMap::new();
        let mut found = false;
        for e in ["node_stat_item", "memcg_stat_item"] {
            if let Some(vals) = btf.enum_values(e) {
                found = true;
                for (n, v) in vals {
                    // Sentinels (NR_VM_NODE_STAT_ITEMS, MEMCG_NR_STAT) share values with real
                    // items; never let them overwrite a real name.
                    if n.starts_with("NR_VM_") || n.ends_with("_NR_STAT") {
                        continue;
                    }
                    // Within one enum a later alias names the real item
                    // (`NR_LRU_BASE, NR_INACTIVE_ANON = NR_LRU_BASE`); across enums the first
                    // (node_stat_item) keeps its values.
                    if let Ok(v) = u32::try_from(v)
                        && (e == "node_stat_item" || !names.contains_key(&v))
                    {
                        names.insert(v, n);
                    }
                }
            }
        }
        if !found {
            return Err(NoItemEnums);
        }
        Ok(Self { names })
    }

    /// Builds from explicit pairs (tests).
    pub fn from_pairs(pairs: &[(&str, u32)]) -> Self {
        Self {
            names: pairs.iter().map(|(n, v)| (*v, n.to_string())).collect(),
        }
    }

    /// Name of an item value; unknown values are shown as `item#N`.
    pub fn name(&self, item: u32) -> String {
        self.names
            .get(&item)
            .cloned()
            .unwrap_or_else(|| format!("item#{item}"))
    }

    /// Value of a named item.
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }

    /// The size of one unit of the item in bytes when it is not counted in pages: 1 for `*_B`
    /// items, 1024 for `NR_KERNEL_STACK_KB` (`memcg_page_state_unit()`, mm/memcontrol.c);
    /// `None` for page items.
    pub fn unit_bytes(&self, item: u32) -> Option<i64> {
        let n = self.names.get(&item)?;
        if n.ends_with("_B") {
            Some(1)
        } else if n.ends_with("_KB") {
            Some(1024)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_unknowns() {
        let n = ItemNames::from_pairs(&[
            ("NR_ANON_MAPPED", 3),
            ("NR_SLAB_RECLAIMABLE_B", 6),
            ("NR_KERNEL_STACK_KB", 9),
        ]);
        assert_eq!(n.name(3), "NR_ANON_MAPPED");
        assert_eq!(n.name(99), "item#99");
        assert_eq!(n.unit_bytes(6), Some(1));
        assert_eq!(n.unit_bytes(9), Some(1024));
        assert_eq!(n.unit_bytes(3), None);
        assert_eq!(n.value("NR_ANON_MAPPED"), Some(3));
    }

    #[test]
    fn sentinels_and_aliases_do_not_shadow_items() {
        use crate::kernel::testkernels::{Gen, synthetic};
        for g in Gen::ALL {
            let btf = KernelBtf::from_bytes(&synthetic(g).0).unwrap();
            let n = ItemNames::from_btf(&btf).unwrap();
            let swap = n.value("MEMCG_SWAP").expect("MEMCG_SWAP");
            assert_eq!(n.name(swap), "MEMCG_SWAP", "{g:?}");
            assert!(n.value("NR_ANON_MAPPED").is_some());
            // NR_LRU_BASE is an alias of NR_INACTIVE_ANON: the item is reported by its real
            // name; NR_VM_NODE_STAT_ITEMS (the sentinel) shares its value with the first memcg
            // item, which keeps its own name.
            let base = btf.enum_value("node_stat_item", "NR_LRU_BASE").unwrap() as u32;
            assert_eq!(n.name(base), "NR_INACTIVE_ANON", "{g:?}");
            let sentinel = btf
                .enum_value("node_stat_item", "NR_VM_NODE_STAT_ITEMS")
                .unwrap() as u32;
            assert_eq!(n.name(sentinel), "MEMCG_SWAP", "{g:?}");
        }
    }
}
