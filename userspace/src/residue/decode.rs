//! Raw records to typed residues, and the snapshot's judgement.

use super::*;

/// One memcg's residues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemcgResidue {
    /// The memcg was freed (or its id reused) before the snapshot: nothing below is valid.
    pub gone: bool,
    /// `css.flags`.
    pub css_flags: u32,
    /// page_counter `memory.usage`, pages.
    pub usage: u64,
    /// `memory.max`, pages.
    pub max: u64,
    /// `memory.watermark` (peak), pages.
    pub watermark: u64,
    /// `memory.failcnt`.
    pub failcnt: u64,
    /// v1 counters `memsw`, `kmem`, `tcpmem` usage, pages.
    pub v1: Option<(u64, u64, u64)>,
    /// The swap counter's usage (v2 `swap`, v1 `memsw`: one union), pages.
    pub swap: Option<u64>,
    /// Flushed aggregate per slot.
    pub state: Vec<i64>,
    /// Pending (flushed at a child, not here yet) per slot.
    pub pending: Vec<i64>,
    /// Per CPU, per slot: `state - state_prev`, updates not flushed yet.
    pub cpu_delta: Vec<Vec<i64>>,
    /// A fingerprint of every CPU's `state_prev`: a flush that moves any update of this memcg
    /// into its aggregate rewrites `state_prev`, so two snapshots with the same mark had no
    /// flush of this memcg between them (one that found nothing pending changes nothing). On
    /// batched kernels (5.10), a fingerprint of the aggregate, which only spills move.
    pub flush_mark: u64,
    /// Per CPU `stats_updates` (6.8+; zeros before): update units not yet moved to
    /// `flush_updates`.
    pub stats_updates: Vec<u64>,
    /// `vmstats->stats_updates` (6.8+): the count a memory.stat read compares with its
    /// threshold.
    pub flush_updates: Option<u64>,
    /// Kernel reads that failed ([`residue_err`] bits), 0 when all succeeded.
    pub read_errors: u32,
}

/// One charge stock slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StockSlot {
    /// Slot index.
    pub slot: usize,
    /// The cached memcg.
    #[serde(skip)]
    pub memcg: u64,
    /// Pages held.
    pub pages: u64,
}

/// The object stock of one CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ObjStock {
    /// The cached objcg (0: none).
    #[serde(skip)]
    pub objcg: u64,
    /// Its memcg.
    #[serde(skip)]
    pub memcg: u64,
    /// Bytes of pre-charged kernel memory held.
    pub nr_bytes: u64,
    /// Slab bytes (reclaimable, unreclaimable) not yet in the statistics.
    pub slab_b: (i64, i64),
}

/// One folio waiting in an lru_add batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchFolio {
    /// Its memcg (`memcg_data` without flag bits).
    #[serde(skip)]
    pub memcg: u64,
    /// Pages (1, or `1 << order` for a large folio).
    pub pages: u64,
    /// Anonymous (`mapping` bit 0).
    pub anon: bool,
    /// Counted by a mapped statistic: anon with a map count, or file with a mapping.
    pub counted: bool,
}

/// One CPU's static per-CPU residues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuResidue {
    /// Non-empty charge stock slots.
    pub stock: Vec<StockSlot>,
    /// The object stock.
    pub obj: Option<ObjStock>,
    /// The lru_add batch.
    pub batch: Vec<BatchFolio>,
    /// The folios actually in the batch (including ones with no memcg).
    pub batch_len: usize,
}

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Residues {
    /// Per node of the tree, same order.
    pub memcgs: Vec<MemcgResidue>,
    /// Per CPU (empty when the static per-CPU data could not be read).
    pub cpus: Vec<CpuResidue>,
    /// `Ok` or what moved between the snapshot's open and close.
    #[serde(skip)]
    pub consistent: Result<(), Moved>,
    /// `Ok` or why the static per-CPU data (stocks, batches) cannot be trusted.
    #[serde(skip)]
    pub static_percpu: Result<(), StaticPercpuError>,
}

/// What moved between a snapshot's open and close (the first thing found).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Moved {
    /// A memcg's frame differs.
    #[error("memcg #{0} changed (counters or flushed statistics)")]
    Memcg(usize),
    /// A part of a CPU's static per-CPU data that matters to the subtree.
    #[error("CPU {cpu}'s {what} changed")]
    CpuPart {
        /// The CPU.
        cpu: usize,
        /// What changed ("charge stock of the subtree", ...).
        what: &'static str,
    },
    /// A CPU's lru_add batch could not be decoded.
    #[error("CPU {cpu}: {err}")]
    Batch {
        /// The CPU.
        cpu: usize,
        /// Why.
        err: BatchError,
    },
}

/// Why a CPU's lru_add batch could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer folio details read than the batch holds.
    #[error("batch folio {0} not read")]
    NotRead(usize),
    /// The folio read is not the one in the batch slot any more.
    #[error("lru_add batch slot {0} changed")]
    SlotChanged(usize),
    /// Reading the folio failed.
    #[error("batch folio {slot}: {}", describe_err(*bits))]
    Folio {
        /// The batch slot.
        slot: usize,
        /// [`residue_err`] bits.
        bits: u32,
    },
}

/// Why the static per-CPU data (stocks, batches) of a snapshot cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaticPercpuError {
    /// The layout has no route to it.
    #[error(transparent)]
    Layout(#[from] crate::kernel::layout::PartError),
    /// A CPU's offset was not found.
    #[error("no per-CPU offset for CPU {0}")]
    NoOffset(usize),
    /// The route's cross-check failed.
    #[error(
        "per-CPU route check failed on CPU {cpu}: this_cpu_off {this_cpu_off:#x} != offset \
         {base:#x}"
    )]
    RouteCheck {
        /// The CPU.
        cpu: usize,
        /// `this_cpu_off` read in the CPU's static area.
        this_cpu_off: u64,
        /// The offset the route gave.
        base: u64,
    },
}

impl Residues {
    /// Decodes a raw snapshot and judges it.
    pub fn decode(raw: &RawSnapshot, l: &ResidueLayout) -> Residues {
        let nslots = l.stats.index.len;
        let mut consistent = Ok(());
        let mut moved = |what: Moved| {
            if consistent.is_ok() {
                consistent = Err(what);
            }
        };
        let mut memcgs = Vec::new();
        for (i, (o, c)) in raw.open.iter().zip(&raw.close).enumerate() {
            if o != c {
                moved(Moved::Memcg(i));
            }
            // Gone at the open or by the close: freed during the read, its per-CPU reads
            // followed a pointer out of freed memory and are not its statistics.
            if (o.err | c.err) & residue_err::GONE != 0 {
                memcgs.push(MemcgResidue {
                    gone: true,
                    ..Default::default()
                });
                continue;
            }
            let per = raw.pcpu.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let mut read_errors = o.err;
            let cpu_delta = per
                .iter()
                .map(|p| {
                    read_errors |= p.err;
                    (0..nslots)
                        .map(|k| p.state[k].wrapping_sub(p.state_prev[k]))
                        .collect()
                })
                .collect();
            memcgs.push(MemcgResidue {
                gone: false,
                css_flags: o.css_flags as u32,
                usage: o.usage,
                max: o.max,
                watermark: o.watermark,
                failcnt: o.failcnt,
                v1: l
                    .counters
                    .v1
                    .map(|_| (o.memsw_usage, o.kmem_usage, o.tcpmem_usage)),
                swap: (l.counters.swap.is_some() || l.counters.v1.is_some())
                    .then_some(o.memsw_usage),
                state: o.state[..nslots].to_vec(),
                // Batched kernels have no pending updates (a spill reaches every ancestor
                // at once); the programs leave the field unread there.
                pending: if l.stats.batched {
                    vec![0; nslots]
                } else {
                    o.state_pending[..nslots].to_vec()
                },
                cpu_delta,
                // Batched kernels have no state_prev: a spill is what moves updates into the
                // aggregate, and the aggregate moves only by spills.
                flush_mark: if l.stats.batched {
                    fnv(o.state[..nslots].iter())
                } else {
                    flush_mark(per, nslots)
                },
                stats_updates: per.iter().map(|p| p.stats_updates).collect(),
                flush_updates: l.stats.vs_stats_updates.map(|_| u64::from(o.flush_updates)),
                read_errors,
            });
        }
        // The subtree's memcgs: only their stock slots and object stock enter the books.
        let ours: std::collections::HashSet<u64> = raw
            .open
            .iter()
            .map(|f| f.memcg)
            .filter(|&m| m != 0)
            .collect();
        let mut static_percpu = l
            .percpu
            .as_ref()
            .map(|_| ())
            .map_err(|e| StaticPercpuError::Layout(e.clone()));
        let mut cpus = Vec::new();
        if static_percpu.is_ok() {
            for (cpu, (o, c)) in raw.cpu_open.iter().zip(&raw.cpu_close).enumerate() {
                if o.err & residue_err::PERCPU != 0 || o.base == 0 {
                    static_percpu = Err(StaticPercpuError::NoOffset(cpu));
                    break;
                }
                // The route's cross-check: `this_cpu_off` inside CPU c's static area is c's
                // own offset (arch/x86 setup_per_cpu_areas). Anything else means the area was
                // located wrongly, and no stock or batch read can be trusted.
                if o.this_cpu_off != o.base {
                    static_percpu = Err(StaticPercpuError::RouteCheck {
                        cpu,
                        this_cpu_off: o.this_cpu_off,
                        base: o.base,
                    });
                    break;
                }
                if let Some(what) = cpu_moved(o, c, &ours, l) {
                    moved(Moved::CpuPart { cpu, what });
                }
                let folios = raw.folios.get(cpu).map(Vec::as_slice).unwrap_or(&[]);
                match decode_cpu(o, folios, l) {
                    Ok(r) => cpus.push(r),
                    Err(err) => moved(Moved::Batch { cpu, err }),
                }
            }
        }
        if static_percpu.is_err() {
            cpus.clear();
        }
        Residues {
            memcgs,
            cpus,
            consistent,
            static_percpu,
        }
    }
}

/// What of one CPU's static per-CPU data that matters to the subtree `ours` differs between
/// the open and close frames. Stock slots and the object stock of other memcgs are left out:
/// on a busy machine they change all the time (every charge anywhere on that CPU), they never
/// enter the subtree's books, and a slot taken over by a memcg of the subtree (or given up by
/// one) still shows as a change. The lru_add batch is compared whole: a folio of the subtree
/// appended after the open frame was charged already but is in neither the batch read nor an
/// LRU list, and only the batch's bytes tell.
/// FNV-1a over each CPU's `state_prev` slots (see [`MemcgResidue::flush_mark`]).
fn flush_mark(per: &[MemcgCpuStat], nslots: usize) -> u64 {
    fnv(per.iter().flat_map(|p| &p.state_prev[..nslots]))
}

/// FNV-1a over the little-endian bytes of `words`.
fn fnv<'a>(words: impl Iterator<Item = &'a i64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in words {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn cpu_moved(
    o: &CpuFrame,
    c: &CpuFrame,
    ours: &std::collections::HashSet<u64>,
    l: &ResidueLayout,
) -> Option<&'static str> {
    if o.batch != c.batch {
        return Some("lru_add batch");
    }
    match &l.stock {
        Ok(_) => {
            let mine = |f: &CpuFrame| {
                let mut v: Vec<(u64, u64)> = decode_stock(f, l)
                    .into_iter()
                    .filter(|s| ours.contains(&s.memcg))
                    .map(|s| (s.memcg, s.pages))
                    .collect();
                v.sort_unstable();
                v
            };
            if mine(o) != mine(c) {
                return Some("charge stock of the subtree");
            }
        }
        Err(_) if o.stock != c.stock => return Some("charge stock"),
        Err(_) => {}
    }
    let obj_ours = ours.contains(&o.obj_memcg) || ours.contains(&c.obj_memcg);
    if obj_ours && (o.obj, o.obj_memcg) != (c.obj, c.obj_memcg) {
        return Some("object stock of the subtree");
    }
    None
}

/// The non-empty charge stock slots of a CPU frame.
fn decode_stock(o: &CpuFrame, l: &ResidueLayout) -> Vec<StockSlot> {
    let mut out = Vec::new();
    if let Ok(st) = &l.stock {
        let b = words_to_bytes(&o.stock);
        for s in 0..st.slots {
            let memcg = le_u64(&b, (st.cached + 8 * s as u64) as usize);
            let pages = le_uint(
                &b,
                (st.nr_pages + st.nr_pages_size * s as u64) as usize,
                st.nr_pages_size as usize,
            );
            if memcg != 0 || pages != 0 {
                out.push(StockSlot {
                    slot: s,
                    memcg,
                    pages,
                });
            }
        }
    }
    out
}

fn decode_cpu(
    o: &CpuFrame,
    folios: &[FolioInfo],
    l: &ResidueLayout,
) -> Result<CpuResidue, BatchError> {
    let mut r = CpuResidue {
        stock: decode_stock(o, l),
        ..Default::default()
    };
    if let Ok(ob) = &l.obj_stock {
        let b = words_to_bytes(&o.obj);
        let objcg = le_u64(&b, ob.cached_objcg as usize);
        r.obj = Some(ObjStock {
            objcg,
            memcg: if objcg == 0 { 0 } else { o.obj_memcg },
            nr_bytes: u64::from(le_u32(&b, ob.nr_bytes as usize)),
            slab_b: ob.slab_b.map_or((0, 0), |(rec, unrec)| {
                (
                    i64::from(le_u32(&b, rec as usize) as i32),
                    i64::from(le_u32(&b, unrec as usize) as i32),
                )
            }),
        });
    }
    if let Ok(bl) = &l.lru_add {
        let b = words_to_bytes(&o.batch);
        let nr = (b.get(bl.nr as usize).copied().unwrap_or(0) as usize).min(bl.capacity);
        r.batch_len = nr;
        for j in 0..nr {
            let ptr = le_u64(&b, bl.folios as usize + 8 * j);
            let f = folios.get(j).ok_or(BatchError::NotRead(j))?;
            // The folio details were read after the frame: the same folio must sit there.
            if f.folio != ptr {
                return Err(BatchError::SlotChanged(j));
            }
            if f.err != 0 {
                return Err(BatchError::Folio {
                    slot: j,
                    bits: f.err as u32,
                });
            }
            let large = f.flags & (1u64 << bl.pg_head) != 0;
            let pages = if large {
                1u64 << (f.order_word & 0xff)
            } else {
                1
            };
            let anon = f.mapping & 1 != 0;
            // _mapcount starts at -1 (include/linux/mm_types.h); >= 0 means mapped.
            let mapped = (f.mapcount_word as u32 as i32) >= 0;
            r.batch.push(BatchFolio {
                memcg: f.memcg_data & !bl.memcg_data_mask,
                pages,
                anon,
                counted: if anon { mapped } else { f.mapping != 0 },
            });
        }
    }
    Ok(r)
}
