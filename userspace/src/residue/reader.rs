//! The reader: loads the residue programs and runs them on demand (`BPF_PROG_TEST_RUN`).

use super::*;

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
pub fn possible_cpus() -> Result<usize, PossibleCpusError> {
    aya::util::nr_cpus().map_err(|(what, err)| PossibleCpusError { what, err })
}

/// The possible CPUs could not be read. The I/O error is part of the one-line message (it is
/// not also the `source`, so an error chain printed with `{:#}` does not show it twice).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {err}")]
pub struct PossibleCpusError {
    /// What was read (aya names the file).
    pub what: &'static str,
    /// The I/O error.
    pub err: std::io::Error,
}

impl ResidueReader {
    /// Loads the residue programs for `capacity` memcgs (at most `RES_MAX_MEMCGS`).
    pub fn load(layout: ResidueLayout, capacity: usize) -> Result<Self, ResidueError> {
        Self::load_with(EbpfLoader::new(), layout, capacity)
    }

    /// Resolves the layout from the running kernel's BTF and loads the reader for `capacity`
    /// memcgs. `EbpfLoader::new` always parses the kernel BTF with aya's parser (which the
    /// reader has no use for: no CO-RE); it runs on a second thread while the layout is
    /// resolved, so the two parses overlap, and the main thread then has aya probe the
    /// kernel's features, which the load would otherwise do after the parse (issue 11:
    /// `explain`'s latency).
    pub fn open(capacity: usize) -> Result<Self, ResidueError> {
        let (layout, loader) = std::thread::scope(|scope| {
            let loader = scope.spawn(EbpfLoader::new);
            let layout = crate::kernel::btf::KernelBtf::from_sys_fs()
                .map_err(ResidueError::from)
                .and_then(|btf| {
                    let l = ResidueLayout::resolve(&btf)?;
                    if !l.wants_kallsyms() {
                        return Ok(l);
                    }
                    // Kernels before 5.19: per-CPU offsets and variables from kallsyms.
                    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
                    let k = crate::kernel::symbols::KallsymsData::parse(&text);
                    Ok(ResidueLayout::resolve_with(&btf, Some(&k))?)
                });
            let _ = aya::features();
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
        let nr_cpus = possible_cpus().map_err(|e| ResidueError::Load(e.to_string()))?;
        if nr_cpus > RES_MAX_CPUS as usize {
            return Err(ResidueError::Load(format!(
                "{nr_cpus} possible CPUs, more than the {RES_MAX_CPUS} the reader supports"
            )));
        }
        if layout.pcpu_offsets == PcpuOffsets::Missing {
            return Err(LayoutError::Missing(
                "a route to other CPUs' per-CPU offsets: bpf_map_lookup_percpu_elem (5.19+), or \
                 `__per_cpu_offset` in /proc/kallsyms (CONFIG_KALLSYMS_ALL, read as root)"
                    .into(),
            )
            .into());
        }
        let capacity = capacity.clamp(1, RES_MAX_MEMCGS as usize);
        // Kept for the process's life (one small struct per load): the loader borrows it and
        // is freed on a thread of its own after the load.
        let cfg: &'static probes_common::ResidueConfig =
            Box::leak(Box::new(layout.config(nr_cpus as u32, capacity as u32)));
        let (cap, cpus) = (capacity as u32, nr_cpus as u32);
        let window = (RES_WINDOW_ENTRIES / cpus).clamp(1, cap);
        crate::attach::bump_memlock();
        let mut loader = loader;
        // The tracers' maps, unused here, are created at their smallest. The loader keeps the
        // kernel BTF it parsed: the object has no CO-RE relocations, so the load does not use
        // it, and dropping it here (`btf(None)`) would free it on the way to the first report.
        for name in TRACER_MAPS {
            loader.map_max_entries(name, 1);
        }
        let loaded = loader
            .override_global(GLOBAL_RESIDUE_CONFIG, cfg, true)
            .map_max_entries(MAP_RES_REQ, cap)
            .map_max_entries(MAP_RES_MEMCG, 2 * cap)
            .map_max_entries(MAP_RES_MEMCG_CPU, window * cpus)
            .map_max_entries(MAP_RES_CPU, 2 * cpus)
            .map_max_entries(MAP_RES_FOLIO, cpus * RES_MAX_FOLIOS)
            .load(obj);
        crate::attach::drop_in_background(loader);
        let mut ebpf = loaded.map_err(|e| ResidueError::Load(crate::attach::short_error(&e)))?;
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

    fn peek_raw(&mut self, addr: u64, len: usize, current: bool) -> Result<Vec<u8>, PeekError> {
        if len == 0 || len > RES_PEEK_BYTES {
            return Err(PeekError::Length(len));
        }
        self.run("residue_peek", &[addr, len as u64, u64::from(current)])
            .map_err(|e| match e {
                ResidueError::Program { bits, .. } if bits & residue_err::READ != 0 => {
                    PeekError::Unreadable(addr)
                }
                e => PeekError::Reader(e),
            })?;
        let buf: PeekBuf = self.get(MAP_RES_PEEK, 0)?;
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
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, PeekError> {
        self.peek_raw(addr, len, false)
    }
    fn read_current(&mut self, off: u64, len: usize) -> Result<Vec<u8>, PeekError> {
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
