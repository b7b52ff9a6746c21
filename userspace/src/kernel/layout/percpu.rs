//! The static per-CPU part of the layout: the route to other CPUs' copies (`__per_cpu_offset`,
//! `this_cpu_off`), the charge stock, the object stock and the lru_add batch.

use super::*;

impl ResidueLayout {
    pub(super) fn percpu(f: &Finder<'_>) -> Result<PercpuRoute, PartError> {
        let why = PartError::NoRoute;
        Ok(PercpuRoute {
            task_se_cfs_rq: f
                .off("task_struct", "se.cfs_rq")
                .map_err(PartError::NoCfsRq)?,
            cfs_rq_rq: f.off("cfs_rq", "rq").map_err(why)?,
            runqueues: f.pcpu("runqueues").map_err(why)?,
            this_cpu_off: f.pcpu("this_cpu_off").map_err(why)?,
        })
    }

    pub(super) fn stock(btf: &KernelBtf, f: &Finder<'_>) -> Result<StockLayout, PartError> {
        let s = "memcg_stock_pcp";
        let why = PartError::StockLacks;
        let var = f.pcpu("memcg_stock").map_err(why)?;
        let cached = f.off(s, "cached").map_err(why)?;
        let nr_pages = f.off(s, "nr_pages").map_err(why)?;
        let (slots, nr_pages_size) = match btf.array_len(s, "cached") {
            // 6.16+: uint8_t nr_pages[NR_MEMCG_STOCK]; struct mem_cgroup *cached[NR_MEMCG_STOCK]
            Some(n) => {
                let nr_len = btf.array_len(s, "nr_pages");
                if nr_len != Some(n) {
                    return Err(PartError::StockLengths {
                        cached: n,
                        nr_pages: nr_len,
                    });
                }
                let total = f.size(s, "nr_pages").map_err(why)?;
                (n as usize, total / u64::from(n.max(1)))
            }
            // up to 6.15: struct mem_cgroup *cached; unsigned int nr_pages
            None => {
                if btf.member_is_pointer(s, "cached") != Some(true) {
                    return Err(PartError::StockCachedKind);
                }
                (1, f.size(s, "nr_pages").map_err(why)?)
            }
        };
        if !matches!(nr_pages_size, 1 | 2 | 4 | 8) {
            return Err(PartError::StockNrPagesWidth(nr_pages_size));
        }
        let size = f
            .end(s, "cached")
            .map_err(why)?
            .max(f.end(s, "nr_pages").map_err(why)?);
        if size > RES_STOCK_BYTES as u64 {
            return Err(PartError::StockTooLarge(size));
        }
        Ok(StockLayout {
            var,
            size,
            slots,
            cached,
            nr_pages,
            nr_pages_size,
        })
    }

    pub(super) fn obj_stock(btf: &KernelBtf, f: &Finder<'_>) -> Result<ObjStockLayout, PartError> {
        let why = PartError::ObjStockLacks;
        // 6.16+ keeps it in its own per-CPU variable; before, inside memcg_stock_pcp.
        let (var_name, s) = if f.has_pcpu("obj_stock") && btf.struct_size("obj_stock_pcp").is_some()
        {
            ("obj_stock", "obj_stock_pcp")
        } else {
            ("memcg_stock", "memcg_stock_pcp")
        };
        let var = f.pcpu(var_name).map_err(why)?;
        let cached_objcg = f.off(s, "cached_objcg").map_err(why)?;
        let nr_bytes = f.off(s, "nr_bytes").map_err(why)?;
        // The slab statistics the stock holds back came with 6.1's `__account_obj_stock`
        // (68ac5b3c8db2, 5.16); 5.10's stock has `cached_objcg` and `nr_bytes` only, and
        // its slab statistics reach the memcg at once.
        let slab_b = match (
            f.off(s, "nr_slab_reclaimable_b"),
            f.off(s, "nr_slab_unreclaimable_b"),
        ) {
            (Ok(r), Ok(u)) => Some((r, u)),
            _ if !btf.has_member(s, "cached_pgdat") => None,
            (r, u) => return Err(why(r.and(u).unwrap_err())),
        };
        let mut ends = vec![f.end(s, "cached_objcg"), f.end(s, "nr_bytes")];
        if slab_b.is_some() {
            ends.push(f.end(s, "nr_slab_reclaimable_b"));
            ends.push(f.end(s, "nr_slab_unreclaimable_b"));
        }
        let size = ends
            .into_iter()
            .collect::<Result<Vec<u64>, Lack>>()
            .map_err(why)?
            .into_iter()
            .max()
            .unwrap_or(0);
        if size > RES_OBJ_BYTES as u64 {
            return Err(PartError::ObjStockTooLarge(size));
        }
        Ok(ObjStockLayout {
            var_name,
            var,
            size,
            cached_objcg,
            nr_bytes,
            slab_b,
            objcg_memcg: f.off("obj_cgroup", "memcg").map_err(why)?,
        })
    }

    pub(super) fn lru_add(btf: &KernelBtf, f: &Finder<'_>) -> Result<BatchLayout, PartError> {
        if !f.has_pcpu("cpu_fbatches") && f.has_pcpu("lru_pvecs") {
            return Self::lru_add_pagevec(btf, f);
        }
        let why = PartError::BatchLacks;
        let var =
            f.pcpu("cpu_fbatches").map_err(why)? + f.off("cpu_fbatches", "lru_add").map_err(why)?;
        let (nr, folios, capacity, size) = Self::batch_array(btf, f, "folio_batch", "folios")?;
        // The order of a large folio: `_flags_1 & 0xff` since 6.2 (`folio_large_order`),
        // `_folio_order` before (6.1 mm_types.h:313).
        let folio_order = f
            .off("folio", "_flags_1")
            .or_else(|_| f.off("folio", "_folio_order"))
            .map_err(why)?;
        let pg_head = btf
            .enum_value("pageflags", "PG_head")
            .ok_or_else(|| why(Lack::Enumerator("PG_head".into())))?;
        let data_flags = btf
            .enum_value("page_memcg_data_flags", "__NR_MEMCG_DATA_FLAGS")
            .ok_or_else(|| why(Lack::Enumerator("__NR_MEMCG_DATA_FLAGS".into())))?;
        Ok(BatchLayout {
            var,
            size,
            nr,
            folios,
            capacity,
            folio_memcg_data: f.off("folio", "memcg_data").map_err(why)?,
            folio_flags: f.off("folio", "flags").map_err(why)?,
            folio_order,
            folio_mapping: f.off("folio", "mapping").map_err(why)?,
            folio_mapcount: f.off("folio", "_mapcount").map_err(why)?,
            pg_head: pg_head as u32,
            memcg_data_mask: (data_flags as u64).saturating_sub(1),
        })
    }

    /// `nr` and the pointer array of a batch struct (`folio_batch`, or 5.10's `pagevec`), the
    /// array's length (`PAGEVEC_SIZE`) and the bytes to copy (to the array's end), checked
    /// against what the programs copy.
    fn batch_array(
        btf: &KernelBtf,
        f: &Finder<'_>,
        ty: &str,
        array: &str,
    ) -> Result<(u64, u64, usize, u64), PartError> {
        let why = PartError::BatchLacks;
        let nr = f.off(ty, "nr").map_err(why)?;
        if f.size(ty, "nr").map_err(why)? != 1 {
            return Err(PartError::BatchNrWidth);
        }
        let ptrs = f.off(ty, array).map_err(why)?;
        let capacity = btf.array_len(ty, array).ok_or_else(|| {
            why(Lack::Array {
                ty: ty.into(),
                member: array.into(),
            })
        })? as usize;
        let size = ptrs + 8 * capacity as u64;
        if capacity > RES_MAX_FOLIOS as usize || size > RES_BATCH_BYTES as u64 {
            return Err(PartError::BatchTooLarge(capacity));
        }
        Ok((nr, ptrs, capacity, size))
    }

    /// 5.10's `lru_pvecs.lru_add`, a `struct pagevec` of pages (v5.10.35 mm/swap.c:59-67,
    /// include/linux/pagevec.h:17-21). A page's memcg is `page->mem_cgroup` (a plain pointer
    /// for user pages: no flag bits), and a compound page's order is the second page's
    /// `compound_order` (v5.10.35 mm_types.h:133-138).
    fn lru_add_pagevec(btf: &KernelBtf, f: &Finder<'_>) -> Result<BatchLayout, PartError> {
        let why = PartError::BatchLacks;
        let var = f.pcpu("lru_pvecs").map_err(why)? + f.off("lru_pvecs", "lru_add").map_err(why)?;
        let (nr, folios, capacity, size) = Self::batch_array(btf, f, "pagevec", "pages")?;
        let page_size = btf.struct_size("page").ok_or_else(|| {
            why(Lack::Member {
                ty: "page".into(),
                member: "(its size)".into(),
            })
        })?;
        let pg_head = btf
            .enum_value("pageflags", "PG_head")
            .ok_or_else(|| why(Lack::Enumerator("PG_head".into())))?;
        Ok(BatchLayout {
            var,
            size,
            nr,
            folios,
            capacity,
            folio_memcg_data: f.off("page", "mem_cgroup").map_err(why)?,
            folio_flags: f.off("page", "flags").map_err(why)?,
            folio_order: page_size + f.off("page", "compound_order").map_err(why)?,
            folio_mapping: f.off("page", "mapping").map_err(why)?,
            folio_mapcount: f.off("page", "_mapcount").map_err(why)?,
            pg_head: pg_head as u32,
            memcg_data_mask: 0,
        })
    }
}
