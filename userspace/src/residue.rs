//! Per-CPU residues of a memcg subtree, read from the running kernel with the residue programs
//! (`probes-ebpf/src/residue.rs`): page counters, flushed and pending statistics, every CPU's
//! charge stock, object stock and lru_add batch.
//!
//! - [`ResidueReader`] loads the programs (sized for this machine's CPUs and the subtree) and
//!   runs them on demand with `BPF_PROG_TEST_RUN`; it is the only part that touches the kernel.
//! - [`walk`] finds a cgroup's `struct mem_cgroup` and its descendants, dying ones included, by
//!   following the css tree through [`KernelMem`] peeks: from the tool's own memcg
//!   (`current->cgroups->subsys[memory_cgrp_id]`) up to the root, down along the target's path
//!   by cgroup id, then every `children` list below it. Pure logic over a memory reader, so it
//!   is unit-tested with a fake kernel.
//! - [`Residues::decode`] turns the raw records into typed residues and judges the snapshot:
//!   consistent (nothing moved between its open and close frames), and whether the static
//!   per-CPU route held (`this_cpu_off` equals each CPU's offset).
//!
//! What the residues add up to is the ledger's business (`ledger`).

use std::{collections::BTreeSet, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun},
};
use probes_common::{
    CpuFrame, FolioInfo, GLOBAL_RESIDUE_CONFIG, MAP_RES_CPU, MAP_RES_FOLIO, MAP_RES_MEMCG,
    MAP_RES_MEMCG_CPU, MAP_RES_PEEK, MAP_RES_REQ, MemcgCpuStat, MemcgFrame, MemcgReq, PeekBuf,
    RES_FOLIO_CHUNK, RES_FRAME_CHUNK, RES_MAX_CPUS, RES_MAX_FOLIOS, RES_MAX_MEMCGS, RES_PEEK_BYTES,
    RES_WINDOW_ENTRIES, residue_err,
};
use serde::Serialize;

use crate::kernel::layout::ResidueLayout;

/// The programs of the residue reader.
const PROGRAMS: [&str; 4] = [
    "residue_frame",
    "residue_memcg_cpus",
    "residue_folios",
    "residue_peek",
];

/// The tracers' big maps, which share the object: sized at one entry when the residue reader
/// loads it (preallocating them would cost milliseconds of `explain`'s start).
const TRACER_MAPS: [&str; 6] = [
    probes_common::MAP_STAT_AGG,
    probes_common::MAP_VERDICT,
    probes_common::charge::MAP_CHARGE_AGG,
    probes_common::charge::MAP_CHARGE_TASKS,
    probes_common::charge::MAP_INFER_LAST,
    probes_common::charge::MAP_MEMCG_EVENTS,
];

/// Longest `children` list walked (a guard against a list changing under the walk).
const MAX_LIST: usize = 100_000;
/// Deepest css ancestry followed.
const MAX_DEPTH: usize = 256;
/// Longest cgroup name read.
const MAX_NAME: usize = 256;

/// Reads kernel memory (the residue programs' peek; a fake in tests).
pub trait KernelMem {
    /// `len` bytes at kernel address `addr`.
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String>;
    /// `len` bytes at `current + off` (the calling task's `task_struct`).
    fn read_current(&mut self, off: u64, len: usize) -> Result<Vec<u8>, String>;

    /// A little-endian u64 at `addr`.
    fn u64_at(&mut self, addr: u64) -> Result<u64, String> {
        let b = self.read(addr, 8)?;
        Ok(le_u64(&b, 0))
    }
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn le_uint(b: &[u8], off: usize, size: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(off..off + size.min(8)) {
        w[..s.len()].copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn words_to_bytes(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One memcg of the subtree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemcgNode {
    /// Kernel address of the `struct mem_cgroup` (not serialised into reports).
    #[serde(skip)]
    pub memcg: u64,
    /// Kernel address of its css.
    #[serde(skip)]
    pub css: u64,
    /// The cgroup id (kernfs node id).
    pub cgroup_id: u64,
    /// The directory name (kernfs node name).
    pub name: String,
    /// Index of the parent in [`Tree::nodes`] (`None` for the target).
    pub parent: Option<usize>,
    /// Depth below the target (0 for the target).
    pub depth: u32,
    /// `css.flags` when walked.
    pub css_flags: u32,
    /// `CSS_ONLINE` is set and `CSS_DYING` is not: a live cgroup.
    pub online: bool,
}

/// Live: `CSS_ONLINE` and not `CSS_DYING`. `kill_css` sets `CSS_DYING` at rmdir, the offline
/// (clearing `CSS_ONLINE`) follows asynchronously after an RCU grace period: a removed cgroup
/// counts as dying from its rmdir on, as `css_is_dying()` says.
fn is_live(flags: u32, l: &ResidueLayout) -> bool {
    flags & l.cgroup.css_online != 0 && l.cgroup.css_dying.is_none_or(|d| flags & d == 0)
}

/// The target and its descendants (dying ones included), parents before children.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tree {
    /// The nodes; `nodes[0]` is the target.
    pub nodes: Vec<MemcgNode>,
    /// Descendants found beyond the limit and left out.
    pub left_out: usize,
}

/// The fields of a css the walk needs.
struct Css {
    cgroup: u64,
    parent: u64,
    children_next: u64,
    sibling_next: u64,
    flags: u32,
}

fn read_css(mem: &mut dyn KernelMem, l: &ResidueLayout, css: u64) -> Result<Css, String> {
    let c = &l.cgroup;
    let b = mem.read(css, c.css_span as usize)?;
    Ok(Css {
        cgroup: le_u64(&b, c.css_cgroup as usize),
        parent: le_u64(&b, c.css_parent as usize),
        children_next: le_u64(&b, c.css_children as usize),
        sibling_next: le_u64(&b, c.css_sibling as usize),
        flags: le_u32(&b, c.css_flags as usize),
    })
}

/// `cgroup->kn`: its id and its name pointer.
fn cgroup_kn(
    mem: &mut dyn KernelMem,
    l: &ResidueLayout,
    cgroup: u64,
) -> Result<(u64, u64), String> {
    let kn = mem.u64_at(cgroup + l.cgroup.cgroup_kn)?;
    if kn == 0 {
        return Err(format!("cgroup {cgroup:#x} has no kernfs node"));
    }
    let id = mem.u64_at(kn + l.cgroup.kn_id)?;
    let name = mem.u64_at(kn + l.cgroup.kn_name)?;
    Ok((id, name))
}

fn read_name(mem: &mut dyn KernelMem, addr: u64) -> String {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < MAX_NAME && addr != 0 {
        let Ok(chunk) = mem.read(at, 16) else { break };
        match chunk.iter().position(|&c| c == 0) {
            Some(end) => {
                out.extend_from_slice(&chunk[..end]);
                break;
            }
            None => out.extend_from_slice(&chunk),
        }
        at += 16;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The css of the mounted hierarchy's root: from the calling task's memory css up to the css
/// whose cgroup id is `root_id` (the mount root's inode; inside a cgroup namespace the mount
/// root is not the kernel's root), or to the top when none matches.
fn root_css(mem: &mut dyn KernelMem, l: &ResidueLayout, root_id: u64) -> Result<u64, String> {
    let c = &l.cgroup;
    let cset = le_u64(&mem.read_current(c.task_cgroups, 8)?, 0);
    if cset == 0 {
        return Err("the tool's task has no css_set".into());
    }
    let mut css = mem.u64_at(cset + c.css_set_subsys + 8 * c.memory_cgrp_id)?;
    if css == 0 {
        return Err("the tool's task has no memory css (memory controller disabled?)".into());
    }
    for _ in 0..MAX_DEPTH {
        let info = read_css(mem, l, css)?;
        if info.parent == 0 || cgroup_kn(mem, l, info.cgroup).is_ok_and(|(id, _)| id == root_id) {
            return Ok(css);
        }
        css = info.parent;
    }
    Err(format!("css ancestry deeper than {MAX_DEPTH}"))
}

/// The children of a css, as (child css, its fields).
fn children(
    mem: &mut dyn KernelMem,
    l: &ResidueLayout,
    css: u64,
) -> Result<Vec<(u64, Css)>, String> {
    let head = css + l.cgroup.css_children;
    let mut pos = read_css(mem, l, css)?.children_next;
    let mut out = Vec::new();
    while pos != head && pos != 0 {
        if out.len() >= MAX_LIST {
            return Err(format!(
                "children list of css {css:#x} longer than {MAX_LIST}"
            ));
        }
        let child = pos.wrapping_sub(l.cgroup.css_sibling);
        let info = read_css(mem, l, child)?;
        pos = info.sibling_next;
        out.push((child, info));
    }
    Ok(out)
}

/// Finds the css of the cgroup whose path from the hierarchy root (cgroup id `root_id`) has
/// the directory ids `path_ids` (empty: the root itself), then lists it and its descendants,
/// at most `limit` nodes.
pub fn walk(
    mem: &mut dyn KernelMem,
    l: &ResidueLayout,
    root_id: u64,
    path_ids: &[u64],
    limit: usize,
) -> Result<Tree, String> {
    let mut css = root_css(mem, l, root_id)?;
    for (depth, id) in path_ids.iter().enumerate() {
        let mut found = None;
        for (child, info) in children(mem, l, css)? {
            if let Ok((cid, _)) = cgroup_kn(mem, l, info.cgroup)
                && cid == *id
            {
                found = Some(child);
                break;
            }
        }
        css = found.ok_or_else(|| {
            format!(
                "no memory css with cgroup id {id} at depth {} (the cgroup was removed, or it \
                 has no memory controller)",
                depth + 1
            )
        })?;
    }
    let info = read_css(mem, l, css)?;
    let (id, name) = cgroup_kn(mem, l, info.cgroup)?;
    let memcg = css.wrapping_sub(l.cgroup.memcg_css);
    let mut tree = Tree::default();
    tree.nodes.push(MemcgNode {
        memcg,
        css,
        cgroup_id: id,
        name: read_name(mem, name),
        parent: None,
        depth: 0,
        css_flags: info.flags,
        online: is_live(info.flags, l),
    });
    // Breadth first, parents before children; a css seen twice (a list changing under the
    // walk) is not added again.
    let mut seen = BTreeSet::from([css]);
    let mut i = 0;
    while i < tree.nodes.len() {
        let (parent_css, depth) = (tree.nodes[i].css, tree.nodes[i].depth);
        for (child, info) in children(mem, l, parent_css)? {
            if !seen.insert(child) {
                continue;
            }
            if tree.nodes.len() >= limit {
                tree.left_out += 1;
                continue;
            }
            let Ok((cid, name)) = cgroup_kn(mem, l, info.cgroup) else {
                continue;
            };
            tree.nodes.push(MemcgNode {
                memcg: child.wrapping_sub(l.cgroup.memcg_css),
                css: child,
                cgroup_id: cid,
                name: read_name(mem, name),
                parent: Some(i),
                depth: depth + 1,
                css_flags: info.flags,
                online: is_live(info.flags, l),
            });
        }
        i += 1;
    }
    Ok(tree)
}

/// Errors of the reader.
#[derive(Debug, thiserror::Error)]
pub enum ResidueError {
    /// Loading the object or a program failed.
    #[error("loading the residue reader failed: {0}")]
    Load(String),
    /// A test run failed (syscall).
    #[error("running {program} failed: {msg}")]
    Run {
        /// Program name.
        program: &'static str,
        /// The error.
        msg: String,
    },
    /// A program returned an error.
    #[error("{program} returned error bits {bits:#x} ({})", describe_err(*bits))]
    Program {
        /// Program name.
        program: &'static str,
        /// [`residue_err`] bits.
        bits: u32,
    },
    /// A map could not be read.
    #[error("reading map {map}: {msg}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The error.
        msg: String,
    },
    /// The kernel's BTF could not be read.
    #[error(transparent)]
    Btf(#[from] crate::kernel::btf::BtfError),
    /// The kernel's BTF does not describe what the reader needs.
    #[error(transparent)]
    Layout(#[from] crate::kernel::layout::LayoutError),
    /// More memcgs than the maps hold.
    #[error("{n} memcgs do not fit the reader's {capacity} slots")]
    Capacity {
        /// Requested.
        n: usize,
        /// Available.
        capacity: usize,
    },
}

/// Names the [`residue_err`] bits.
pub fn describe_err(bits: u32) -> String {
    let names = [
        (residue_err::READ, "kernel read failed"),
        (residue_err::GONE, "memcg gone"),
        (residue_err::MAP, "map slot out of range"),
        (residue_err::PERCPU, "per-CPU offset not found"),
        (residue_err::ARGS, "bad arguments"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The loaded residue programs.
pub struct ResidueReader {
    ebpf: Ebpf,
    layout: ResidueLayout,
    nr_cpus: usize,
    capacity: usize,
    /// Memcgs whose per-CPU statistics one window of `RES_MEMCG_CPU` holds.
    window: usize,
}

impl std::fmt::Debug for ResidueReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidueReader")
            .field("nr_cpus", &self.nr_cpus)
            .field("capacity", &self.capacity)
            .field("window", &self.window)
            .finish()
    }
}

/// Loads [`PROGRAMS`], each on a thread of its own: the verifier's time is most of the
/// reader's start (residue_folios and residue_frame take tens of milliseconds each), and
/// programs verify independently.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), ResidueError> {
    let mut programs: Vec<(&str, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter(|(name, _)| PROGRAMS.contains(name))
        .collect();
    if let Some(name) = PROGRAMS
        .iter()
        .find(|n| !programs.iter().any(|(p, _)| p == *n))
    {
        return Err(ResidueError::Load(format!("program {name} missing")));
    }
    let load = |name: &str, program: &mut aya::programs::Program| {
        let p: &mut RawTracePoint =
            program
                .try_into()
                .map_err(|e: aya::programs::ProgramError| {
                    ResidueError::Load(crate::attach::short_error(&e))
                })?;
        p.load()
            .map_err(|e| ResidueError::Load(format!("{name}: {}", crate::attach::short_error(&e))))
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = programs
            .iter_mut()
            .map(|(name, program)| {
                let name: &str = name;
                scope.spawn(move || load(name, program))
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(ResidueError::Load("a loader thread panicked".into())))
        })
    })
}

/// Possible CPUs (`/sys/devices/system/cpu/possible`): per-CPU data exists for each.
pub fn possible_cpus() -> Result<usize, String> {
    aya::util::nr_cpus().map_err(|(what, e)| format!("{what}: {e}"))
}

impl ResidueReader {
    /// Loads the residue programs for `capacity` memcgs (at most `RES_MAX_MEMCGS`).
    pub fn load(layout: ResidueLayout, capacity: usize) -> Result<Self, ResidueError> {
        Self::load_with(EbpfLoader::new(), layout, capacity)
    }

    /// Resolves the layout from the running kernel's BTF and loads the reader for `capacity`
    /// memcgs. `EbpfLoader::new` always parses the kernel BTF with aya's parser (which the
    /// reader then does without: no CO-RE); it runs on a second thread while the layout is
    /// resolved, so the two parses overlap (issue 11: `explain`'s latency).
    pub fn open(capacity: usize) -> Result<Self, ResidueError> {
        let (layout, loader) = std::thread::scope(|scope| {
            let loader = scope.spawn(EbpfLoader::new);
            let layout = crate::kernel::btf::KernelBtf::from_sys_fs()
                .map_err(ResidueError::from)
                .and_then(|btf| Ok(ResidueLayout::resolve(&btf)?));
            (layout, loader.join())
        });
        let loader = loader.unwrap_or_else(|_| EbpfLoader::new());
        Self::load_with(loader, layout?, capacity)
    }

    fn load_with(
        loader: EbpfLoader<'static>,
        layout: ResidueLayout,
        capacity: usize,
    ) -> Result<Self, ResidueError> {
        let obj = crate::attach::object().map_err(|e| ResidueError::Load(e.to_string()))?;
        let nr_cpus = possible_cpus().map_err(ResidueError::Load)?;
        if nr_cpus > RES_MAX_CPUS as usize {
            return Err(ResidueError::Load(format!(
                "{nr_cpus} possible CPUs, more than the {RES_MAX_CPUS} the reader supports"
            )));
        }
        let capacity = capacity.clamp(1, RES_MAX_MEMCGS as usize);
        let cfg = layout.config(nr_cpus as u32, capacity as u32);
        let (cap, cpus) = (capacity as u32, nr_cpus as u32);
        let window = (RES_WINDOW_ENTRIES / cpus).clamp(1, cap);
        crate::attach::bump_memlock();
        // Borrows `cfg` from here on (a shorter lifetime than the loader came with).
        let mut loader: EbpfLoader<'_> = loader;
        // No CO-RE relocations to apply (see `attach::load_with`); and the tracers' maps,
        // unused here, are created at their smallest.
        loader.btf(None);
        for name in TRACER_MAPS {
            loader.map_max_entries(name, 1);
        }
        let mut ebpf = loader
            .override_global(GLOBAL_RESIDUE_CONFIG, &cfg, true)
            .map_max_entries(MAP_RES_REQ, cap)
            .map_max_entries(MAP_RES_MEMCG, 2 * cap)
            .map_max_entries(MAP_RES_MEMCG_CPU, window * cpus)
            .map_max_entries(MAP_RES_CPU, 2 * cpus)
            .map_max_entries(MAP_RES_FOLIO, cpus * RES_MAX_FOLIOS)
            .load(obj)
            .map_err(|e| ResidueError::Load(crate::attach::short_error(&e)))?;
        load_programs(&mut ebpf)?;
        Ok(Self {
            ebpf,
            layout,
            nr_cpus,
            capacity,
            window: window as usize,
        })
    }

    /// The layout in use.
    pub fn layout(&self) -> &ResidueLayout {
        &self.layout
    }

    /// CPUs read.
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// Memcgs one snapshot can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn run(&mut self, program: &'static str, args: &[u64]) -> Result<(), ResidueError> {
        let p: &mut RawTracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| ResidueError::Load(format!("program {program} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| ResidueError::Run {
                program,
                msg: crate::attach::short_error(&e),
            })?;
        let mut opts = RawTracePointRunOptions::new();
        opts.args[..args.len()].copy_from_slice(args);
        let r = p.test_run(opts).map_err(|e| ResidueError::Run {
            program,
            msg: crate::attach::short_error(&e),
        })?;
        match r.return_value {
            0 => Ok(()),
            bits => Err(ResidueError::Program { program, bits }),
        }
    }

    fn array<T: aya::Pod>(&self, map: &'static str) -> Result<Array<&MapData, T>, ResidueError> {
        let m = self.ebpf.map(map).ok_or_else(|| ResidueError::Map {
            map,
            msg: "missing from the object".into(),
        })?;
        Array::try_from(m).map_err(|e| ResidueError::Map {
            map,
            msg: e.to_string(),
        })
    }

    fn get<T: aya::Pod>(&self, map: &'static str, index: u32) -> Result<T, ResidueError> {
        self.array::<T>(map)?
            .get(&index, 0)
            .map_err(|e| ResidueError::Map {
                map,
                msg: e.to_string(),
            })
    }

    fn peek_raw(&mut self, addr: u64, len: usize, current: bool) -> Result<Vec<u8>, String> {
        if len == 0 || len > RES_PEEK_BYTES {
            return Err(format!("peek of {len} bytes"));
        }
        self.run("residue_peek", &[addr, len as u64, u64::from(current)])
            .map_err(|e| match e {
                ResidueError::Program { bits, .. } if bits & residue_err::READ != 0 => {
                    format!("kernel address {addr:#x} unreadable")
                }
                e => e.to_string(),
            })?;
        let buf: PeekBuf = self.get(MAP_RES_PEEK, 0).map_err(|e| e.to_string())?;
        let mut bytes = words_to_bytes(&buf.data);
        bytes.truncate(len);
        Ok(bytes)
    }

    /// One frame (`phase` 0 open, 1 close) of the first `n` memcgs, a chunk per run.
    fn frame(&mut self, n: usize, phase: u64) -> Result<(), ResidueError> {
        // One run even for n == 0: the first chunk's run also reads the CPUs.
        let mut start = 0;
        loop {
            self.run("residue_frame", &[start as u64, n as u64, phase])?;
            start += RES_FRAME_CHUNK as usize;
            if start >= n {
                return Ok(());
            }
        }
    }

    /// Reads the subtree's raw records: open frame, per-CPU statistics, batch folios, close
    /// frame (see the module docs of `probes-ebpf/src/residue.rs`).
    pub fn raw_snapshot(&mut self, nodes: &[MemcgNode]) -> Result<RawSnapshot, ResidueError> {
        let n = nodes.len();
        if n > self.capacity {
            return Err(ResidueError::Capacity {
                n,
                capacity: self.capacity,
            });
        }
        {
            let mut req: Array<&mut MapData, MemcgReq> =
                Array::try_from(self.ebpf.map_mut(MAP_RES_REQ).ok_or_else(|| {
                    ResidueError::Map {
                        map: MAP_RES_REQ,
                        msg: "missing".into(),
                    }
                })?)
                .map_err(|e| ResidueError::Map {
                    map: MAP_RES_REQ,
                    msg: e.to_string(),
                })?;
            for (i, node) in nodes.iter().enumerate() {
                let r = MemcgReq {
                    memcg: node.memcg,
                    cgroup_id: node.cgroup_id,
                };
                req.set(i as u32, r, 0).map_err(|e| ResidueError::Map {
                    map: MAP_RES_REQ,
                    msg: e.to_string(),
                })?;
            }
        }
        let cpus = self.nr_cpus;
        self.frame(n, 0)?;
        // Per-CPU statistics a window at a time: fill the window, read it back.
        let mut pcpu = Vec::with_capacity(n);
        for first in (0..n).step_by(self.window) {
            let last = (first + self.window).min(n);
            for (w, i) in (first..last).enumerate() {
                self.run("residue_memcg_cpus", &[i as u64, w as u64])?;
            }
            let stats = self.array::<MemcgCpuStat>(MAP_RES_MEMCG_CPU)?;
            for w in 0..(last - first) as u32 {
                let per = (0..cpus as u32)
                    .map(|c| {
                        stats
                            .get(&(w * cpus as u32 + c), 0)
                            .map_err(|e| ResidueError::Map {
                                map: MAP_RES_MEMCG_CPU,
                                msg: e.to_string(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                pcpu.push(per);
            }
        }
        let static_ok = self.layout.percpu.is_ok() && self.layout.lru_add.is_ok();
        if static_ok {
            for c in 0..cpus {
                for first in (0..RES_MAX_FOLIOS).step_by(RES_FOLIO_CHUNK as usize) {
                    self.run("residue_folios", &[c as u64, u64::from(first)])?;
                }
            }
        }
        self.frame(n, 1)?;

        let cap = self.capacity as u32;
        let mut open = Vec::with_capacity(n);
        let mut close = Vec::with_capacity(n);
        {
            let frames = self.array::<MemcgFrame>(MAP_RES_MEMCG)?;
            let get = |i: u32| {
                frames.get(&i, 0).map_err(|e| ResidueError::Map {
                    map: MAP_RES_MEMCG,
                    msg: e.to_string(),
                })
            };
            for i in 0..n as u32 {
                open.push(get(i)?);
                close.push(get(cap + i)?);
            }
        }
        let mut cpu_open = Vec::new();
        let mut cpu_close = Vec::new();
        let mut folios = Vec::new();
        if self.layout.percpu.is_ok() {
            for c in 0..cpus as u32 {
                cpu_open.push(self.get::<CpuFrame>(MAP_RES_CPU, c)?);
                cpu_close.push(self.get::<CpuFrame>(MAP_RES_CPU, cpus as u32 + c)?);
                let mut fs = Vec::new();
                if static_ok {
                    for j in 0..RES_MAX_FOLIOS {
                        fs.push(self.get::<FolioInfo>(MAP_RES_FOLIO, c * RES_MAX_FOLIOS + j)?);
                    }
                }
                folios.push(fs);
            }
        }
        Ok(RawSnapshot {
            open,
            close,
            pcpu,
            cpu_open,
            cpu_close,
            folios,
        })
    }
}

impl KernelMem for ResidueReader {
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        self.peek_raw(addr, len, false)
    }
    fn read_current(&mut self, off: u64, len: usize) -> Result<Vec<u8>, String> {
        self.peek_raw(off, len, true)
    }
}

/// The records of one snapshot as the programs left them.
#[derive(Debug, Clone)]
pub struct RawSnapshot {
    /// Per memcg, read when the snapshot opened.
    pub open: Vec<MemcgFrame>,
    /// Per memcg, read when it closed.
    pub close: Vec<MemcgFrame>,
    /// Per memcg, per CPU statistics.
    pub pcpu: Vec<Vec<MemcgCpuStat>>,
    /// Per CPU at open (empty without the static per-CPU route).
    pub cpu_open: Vec<CpuFrame>,
    /// Per CPU at close.
    pub cpu_close: Vec<CpuFrame>,
    /// Per CPU, the batch folios (`RES_MAX_FOLIOS` each; `folio == 0` is an empty slot).
    pub folios: Vec<Vec<FolioInfo>>,
}

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
    /// flush of this memcg between them (one that found nothing pending changes nothing).
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
    pub consistent: Result<(), String>,
    /// `Ok` or why the static per-CPU data (stocks, batches) cannot be trusted.
    #[serde(skip)]
    pub static_percpu: Result<(), String>,
}

impl Residues {
    /// Decodes a raw snapshot and judges it.
    pub fn decode(raw: &RawSnapshot, l: &ResidueLayout) -> Residues {
        let nslots = l.stats.index.len;
        let mut consistent = Ok(());
        let mut moved = |what: String| {
            if consistent.is_ok() {
                consistent = Err(what);
            }
        };
        let mut memcgs = Vec::new();
        for (i, (o, c)) in raw.open.iter().zip(&raw.close).enumerate() {
            if o != c {
                moved(format!(
                    "memcg #{i} changed (counters or flushed statistics)"
                ));
            }
            if o.err & residue_err::GONE != 0 {
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
                pending: o.state_pending[..nslots].to_vec(),
                cpu_delta,
                flush_mark: flush_mark(per, nslots),
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
        let mut static_percpu = l.percpu.clone().map(|_| ());
        let mut cpus = Vec::new();
        if static_percpu.is_ok() {
            for (cpu, (o, c)) in raw.cpu_open.iter().zip(&raw.cpu_close).enumerate() {
                if o.err & residue_err::PERCPU != 0 || o.base == 0 {
                    static_percpu = Err(format!("no per-CPU offset for CPU {cpu}"));
                    break;
                }
                // The route's cross-check: `this_cpu_off` inside CPU c's static area is c's
                // own offset (arch/x86 setup_per_cpu_areas). Anything else means the area was
                // located wrongly, and no stock or batch read can be trusted.
                if o.this_cpu_off != o.base {
                    static_percpu = Err(format!(
                        "per-CPU route check failed on CPU {cpu}: this_cpu_off {:#x} != offset \
                         {:#x}",
                        o.this_cpu_off, o.base
                    ));
                    break;
                }
                if let Some(what) = cpu_moved(o, c, &ours, l) {
                    moved(format!("CPU {cpu}'s {what} changed"));
                }
                let folios = raw.folios.get(cpu).map(Vec::as_slice).unwrap_or(&[]);
                match decode_cpu(o, folios, l) {
                    Ok(r) => cpus.push(r),
                    Err(e) => moved(format!("CPU {cpu}: {e}")),
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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in per {
        for v in &p.state_prev[..nslots] {
            for b in v.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
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

fn decode_cpu(o: &CpuFrame, folios: &[FolioInfo], l: &ResidueLayout) -> Result<CpuResidue, String> {
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
            slab_b: (
                i64::from(le_u32(&b, ob.slab_b.0 as usize) as i32),
                i64::from(le_u32(&b, ob.slab_b.1 as usize) as i32),
            ),
        });
    }
    if let Ok(bl) = &l.lru_add {
        let b = words_to_bytes(&o.batch);
        let nr = (b.get(bl.nr as usize).copied().unwrap_or(0) as usize).min(bl.capacity);
        r.batch_len = nr;
        for j in 0..nr {
            let ptr = le_u64(&b, bl.folios as usize + 8 * j);
            let f = folios
                .get(j)
                .ok_or_else(|| format!("batch folio {j} not read"))?;
            // The folio details were read after the frame: the same folio must sit there.
            if f.folio != ptr {
                return Err(format!("lru_add batch slot {j} changed"));
            }
            if f.err != 0 {
                return Err(format!("batch folio {j}: {}", describe_err(f.err as u32)));
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

/// A consistent snapshot (or the last attempt) and how many attempts it took.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The residues.
    pub residues: Residues,
    /// Snapshots taken (1 when the first was consistent).
    pub attempts: usize,
}

/// Takes snapshots until one is consistent, at most `max_attempts`, waiting `pause` in
/// between. The last is returned either way; its `consistent` says which.
pub fn take(
    reader: &mut ResidueReader,
    nodes: &[MemcgNode],
    max_attempts: usize,
    pause: Duration,
) -> Result<Taken, ResidueError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let raw = reader.raw_snapshot(nodes)?;
        let residues = Residues::decode(&raw, reader.layout());
        if residues.consistent.is_ok() || attempts >= max_attempts {
            return Ok(Taken { residues, attempts });
        }
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kernel::{
        layout::ResidueLayout,
        testkernels::{Gen, layout},
    };

    /// A fake kernel memory: 8-byte words by address.
    #[derive(Default)]
    struct FakeMem {
        words: BTreeMap<u64, u64>,
        current: u64,
    }

    impl FakeMem {
        fn put(&mut self, addr: u64, v: u64) {
            self.words.insert(addr, v);
        }
        fn put_str(&mut self, addr: u64, s: &str) {
            let mut b = s.as_bytes().to_vec();
            b.resize((b.len() / 8 + 1) * 8 + 16, 0);
            for (i, c) in b.chunks(8).enumerate() {
                self.put(addr + 8 * i as u64, le_u64(c, 0));
            }
        }
    }

    impl KernelMem for FakeMem {
        fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
            let mut out = Vec::new();
            let start = addr & !7;
            let mut a = start;
            while a < addr + len as u64 {
                out.extend_from_slice(&self.words.get(&a).copied().unwrap_or(0).to_le_bytes());
                a += 8;
            }
            let skip = (addr - start) as usize;
            Ok(out[skip..skip + len].to_vec())
        }
        fn read_current(&mut self, off: u64, len: usize) -> Result<Vec<u8>, String> {
            let c = self.current;
            self.read(c + off, len)
        }
    }

    /// Builds a css tree in fake memory: nodes are (css address, parent index, id, name,
    /// online).
    fn build(l: &ResidueLayout, nodes: &[(u64, Option<usize>, u64, &str, bool)]) -> FakeMem {
        let c = &l.cgroup;
        let mut m = FakeMem::default();
        for (i, (css, parent, id, name, online)) in nodes.iter().enumerate() {
            let cgroup = 0x10_0000 + i as u64 * 0x1000;
            let kn = 0x20_0000 + i as u64 * 0x1000;
            let name_at = 0x30_0000 + i as u64 * 0x1000;
            m.put(css + c.css_cgroup, cgroup);
            m.put(cgroup + c.cgroup_kn, kn);
            m.put(kn + c.kn_id, *id);
            m.put(kn + c.kn_name, name_at);
            m.put_str(name_at, name);
            let flags = if *online { u64::from(c.css_online) } else { 0 };
            // flags is an unsigned int: merge with whatever shares its word.
            let w = (css + c.css_flags) & !7;
            let shift = ((css + c.css_flags) - w) * 8;
            let old = m.words.get(&w).copied().unwrap_or(0);
            m.put(w, old | (flags << shift));
            m.put(css + c.css_parent, parent.map_or(0, |p| nodes[p].0));
            // Children lists: empty heads point at themselves.
            m.put(css + c.css_children, css + c.css_children);
        }
        // Link children in order.
        for (i, (_, parent, ..)) in nodes.iter().enumerate() {
            let Some(p) = parent else { continue };
            let pcss = nodes[*p].0;
            let head = pcss + c.css_children;
            let me = nodes[i].0 + c.css_sibling;
            // Append: find the last element.
            let mut last = head;
            loop {
                let next = m.words.get(&last).copied().unwrap_or(head);
                if next == head {
                    break;
                }
                last = next;
            }
            m.put(last, me);
            m.put(me, head);
        }
        m
    }

    #[test]
    fn walk_finds_target_by_path_ids_and_lists_dying_descendants() {
        for g in Gen::ALL {
            let l = layout(g);
            let nodes = [
                (0x1000_0000, None, 1, "", true),                // 0 root
                (0x1001_0000, Some(0), 50, "system", true),      // 1
                (0x1002_0000, Some(0), 60, "memcg-drift", true), // 2
                (0x1003_0000, Some(2), 61, "run", true),         // 3
                (0x1004_0000, Some(3), 62, "live", true),        // 4
                (0x1005_0000, Some(3), 63, "dead", false),       // 5 (dying)
                (0x1006_0000, Some(4), 64, "grandchild", true),  // 6
                (0x1007_0000, Some(1), 70, "me", true),          // 7: the tool's own cgroup
            ];
            let mut m = build(&l, &nodes);
            // current->cgroups->subsys[memory_cgrp_id] = css of node 7.
            m.current = 0x5000_0000;
            let cset = 0x5100_0000;
            m.put(m.current + l.cgroup.task_cgroups, cset);
            m.put(
                cset + l.cgroup.css_set_subsys + 8 * l.cgroup.memory_cgrp_id,
                nodes[7].0,
            );
            let t = walk(&mut m, &l, 1, &[60, 61], 100).unwrap();
            let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(names, ["run", "live", "dead", "grandchild"]);
            assert_eq!(t.nodes[0].cgroup_id, 61);
            assert_eq!(t.nodes[0].memcg, 0x1003_0000 - l.cgroup.memcg_css);
            assert!(t.nodes[1].online && !t.nodes[2].online);
            assert_eq!(t.nodes[3].parent, Some(1));
            assert_eq!(t.nodes[3].depth, 2);
            assert_eq!(t.left_out, 0);
            // The limit keeps the first nodes and counts the rest.
            let t = walk(&mut m, &l, 1, &[60, 61], 2).unwrap();
            assert_eq!((t.nodes.len(), t.left_out), (2, 2));
            // The root itself.
            let t = walk(&mut m, &l, 1, &[], 100).unwrap();
            assert_eq!(t.nodes.len(), 8);
            // Inside a cgroup namespace rooted at `memcg-drift` (id 60), where the tool itself runs
            // in `live`: paths start there.
            m.put(
                cset + l.cgroup.css_set_subsys + 8 * l.cgroup.memory_cgrp_id,
                nodes[4].0,
            );
            let t = walk(&mut m, &l, 60, &[61], 100).unwrap();
            assert_eq!(t.nodes[0].name, "run");
            let t = walk(&mut m, &l, 60, &[], 100).unwrap();
            assert_eq!(t.nodes[0].name, "memcg-drift");
            // A path that does not exist.
            let e = walk(&mut m, &l, 1, &[60, 99], 100).unwrap_err();
            assert!(e.contains("cgroup id 99"), "{e}");
        }
    }

    fn frame(usage: u64) -> MemcgFrame {
        MemcgFrame {
            memcg: 0x1000,
            cgroup_id: 5,
            css_flags: 2,
            usage,
            max: u64::MAX,
            watermark: usage,
            failcnt: 0,
            memsw_usage: 0,
            kmem_usage: 0,
            tcpmem_usage: 0,
            err: 0,
            flush_updates: 0,
            state: [0; probes_common::RES_MAX_STATE],
            state_pending: [0; probes_common::RES_MAX_STATE],
        }
    }

    #[test]
    fn decode_judges_consistency_and_the_percpu_route() {
        for g in Gen::ALL {
            let mut l = layout(g);
            let st = l.stock.clone().unwrap();
            let bl = l.lru_add.clone().unwrap();
            let mut o = frame(100);
            o.state[0] = 7;
            let mut p = MemcgCpuStat {
                stats_updates: 3,
                err: 0,
                _pad: 0,
                state: [0; probes_common::RES_MAX_STATE],
                state_prev: [0; probes_common::RES_MAX_STATE],
            };
            p.state[0] = 10;
            p.state_prev[0] = 4;
            let mut cpu = CpuFrame {
                base: 0x4000,
                unit: 0x9000,
                this_cpu_off: 0x4000,
                obj_memcg: 0,
                err: 0,
                _pad: 0,
                stock: [0; probes_common::RES_STOCK_BYTES / 8],
                obj: [0; probes_common::RES_OBJ_BYTES / 8],
                batch: [0; probes_common::RES_BATCH_BYTES / 8],
            };
            // One stock slot: memcg 0x1000 with 53 pages.
            let mut sb = words_to_bytes(&cpu.stock);
            sb[st.cached as usize..st.cached as usize + 8]
                .copy_from_slice(&0x1000u64.to_le_bytes());
            sb[st.nr_pages as usize] = 53;
            for (i, w) in sb.chunks(8).enumerate() {
                cpu.stock[i] = le_u64(w, 0);
            }
            // One batch folio of memcg 0x1000.
            let mut bb = words_to_bytes(&cpu.batch);
            bb[bl.nr as usize] = 1;
            bb[bl.folios as usize..bl.folios as usize + 8]
                .copy_from_slice(&0xabc0u64.to_le_bytes());
            for (i, w) in bb.chunks(8).enumerate() {
                cpu.batch[i] = le_u64(w, 0);
            }
            let mut folios = vec![FolioInfo::default(); RES_MAX_FOLIOS as usize];
            folios[0] = FolioInfo {
                folio: 0xabc0,
                memcg_data: 0x1000,
                flags: 0,
                order_word: 0,
                mapping: 0x7001,
                mapcount_word: 0,
                err: 0,
            };
            let raw = RawSnapshot {
                open: vec![o],
                close: vec![o],
                pcpu: vec![vec![p]],
                cpu_open: vec![cpu],
                cpu_close: vec![cpu],
                folios: vec![folios.clone()],
            };
            let r = Residues::decode(&raw, &l);
            assert_eq!(r.consistent, Ok(()));
            assert_eq!(r.static_percpu, Ok(()));
            assert_eq!(r.memcgs[0].cpu_delta[0][0], 6);
            assert_eq!(r.memcgs[0].state[0], 7);
            assert_eq!(
                r.cpus[0].stock,
                vec![StockSlot {
                    slot: 0,
                    memcg: 0x1000,
                    pages: 53
                }]
            );
            assert_eq!(r.cpus[0].batch.len(), 1);
            assert!(r.cpus[0].batch[0].anon && r.cpus[0].batch[0].counted);

            // The flush mark follows state_prev only: a new update leaves it, a flush (which
            // moves state into state_prev) changes it.
            let mark = r.memcgs[0].flush_mark;
            let mut updated = raw.clone();
            updated.pcpu[0][0].state[0] = 11;
            assert_eq!(Residues::decode(&updated, &l).memcgs[0].flush_mark, mark);
            updated.pcpu[0][0].state_prev[0] = 11;
            assert_ne!(Residues::decode(&updated, &l).memcgs[0].flush_mark, mark);

            // A flush between open and close: inconsistent.
            let mut moved = raw.clone();
            moved.close[0].state[0] = 13;
            let r = Residues::decode(&moved, &l);
            assert!(r.consistent.unwrap_err().contains("memcg #0"));
            // Another memcg's stock slot or object stock moving: still consistent (they are not
            // in the books); the subtree's slot moving, or a slot taken by the subtree: not.
            let other = |f: &mut CpuFrame, slot: u64, memcg: u64, pages: u8| {
                let mut b = words_to_bytes(&f.stock);
                let at = (st.cached + 8 * slot) as usize;
                b[at..at + 8].copy_from_slice(&memcg.to_le_bytes());
                b[(st.nr_pages + st.nr_pages_size * slot) as usize] = pages;
                for (i, w) in b.chunks(8).enumerate() {
                    f.stock[i] = le_u64(w, 0);
                }
            };
            if st.slots > 1 {
                let mut busy = raw.clone();
                other(&mut busy.cpu_open[0], 1, 0x7777, 9);
                other(&mut busy.cpu_close[0], 1, 0x8888, 40);
                busy.cpu_close[0].obj_memcg = 0x7777;
                busy.cpu_close[0].obj[0] = 1;
                assert_eq!(Residues::decode(&busy, &l).consistent, Ok(()));
                other(&mut busy.cpu_close[0], 1, 0x1000, 40);
                assert!(
                    Residues::decode(&busy, &l)
                        .consistent
                        .unwrap_err()
                        .contains("charge stock of the subtree")
                );
            }
            let mut moved = raw.clone();
            other(&mut moved.cpu_close[0], 0, 0x1000, 52);
            assert!(Residues::decode(&moved, &l).consistent.is_err());
            let mut moved = raw.clone();
            moved.cpu_close[0].obj_memcg = 0x1000;
            moved.cpu_close[0].obj[0] = 1;
            assert!(
                Residues::decode(&moved, &l)
                    .consistent
                    .unwrap_err()
                    .contains("object stock")
            );
            // The lru_add batch is compared whole (an appended folio of the subtree is charged
            // but neither in the batch read nor on a list).
            let mut moved = raw.clone();
            moved.cpu_close[0].batch[0] ^= 1;
            assert!(
                Residues::decode(&moved, &l)
                    .consistent
                    .unwrap_err()
                    .contains("lru_add batch")
            );
            // A batch drained between the frame and the folio read: inconsistent.
            let mut moved = raw.clone();
            moved.folios[0][0].folio = 0;
            assert!(Residues::decode(&moved, &l).consistent.is_err());
            // The route cross-check failing discards every static per-CPU read.
            let mut bad = raw.clone();
            bad.cpu_open[0].this_cpu_off = 0x5000;
            let r = Residues::decode(&bad, &l);
            assert!(r.static_percpu.unwrap_err().contains("route check"));
            assert!(r.cpus.is_empty());
            // A gone memcg.
            let mut gone = raw.clone();
            gone.open[0].err = residue_err::GONE;
            gone.close[0].err = residue_err::GONE;
            assert!(Residues::decode(&gone, &l).memcgs[0].gone);
            // No static route in the layout.
            l.percpu = Err("none".into());
            let r = Residues::decode(&raw, &l);
            assert_eq!(r.static_percpu, Err("none".into()));
            assert!(r.cpus.is_empty());
        }
    }
}
