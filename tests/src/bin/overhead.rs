//! The overhead benchmark behind `cargo xtask bench`: what the probes cost a page-fault-heavy
//! workload, the tool beside an empty program and beside bpftrace, in one run.
//!
//! The workload (`memcg-drift __workload`, pinned to one CPU, in a cgroup of its own under
//! `memcg-drift/<run-id>`) maps, touches and unmaps `--pages` anonymous pages `--reps` times
//! per measurement; the parent times that from outside. Configurations, interleaved round by
//! round (the order rotates every round) so that drift of the machine hits them alike:
//! - `baseline`: nothing attached;
//! - `floor`: the project's floor programs (one per-CPU add per event,
//!   `probes-ebpf/src/floor.rs`) on exactly the hooks `trace` attaches on this kernel (each
//!   flavour on each target, as a short `trace` run reports them in its JSON before the
//!   rounds: the stat hooks, and the charge-path hooks where fentry or kprobes are allowed);
//! - `trace-record`: `memcg-drift trace --cgroup <workload's cgroup> --json`, the process a
//!   user starts, recording every event of the loop;
//! - `trace-other`: the same tracing another (idle) cgroup: the loop's events are filtered in
//!   the kernel;
//! - `trace-root`: `memcg-drift trace --cgroup / --descendants --json`: everything recorded;
//! - `bpftrace`: `@[cpu, args->item] = sum(args->val)` on `memcg:mod_memcg_state` and
//!   `memcg:mod_memcg_lruvec_state`.
//!
//! `--alt-bin PATH` adds `alt-record` and `alt-root`: `trace-record` and `trace-root` run with
//! another build of memcg-drift,
//! so that two versions of the probes are compared in one run (how each optimisation in
//! docs/perf.md was measured).
//!
//! Every attached configuration is started afresh for each round (a process kept attached
//! across rounds would be attached during the other configurations' measurements too; that is
//! what interleaving forbids), and timing starts only once it has attached: `trace` prints its
//! `tracing ...` line on stderr after attaching, bpftrace runs `BEGIN` after attaching its
//! probes. Then it is stopped with SIGINT and its report read (events, losses, attach time).
//!
//! Printed: per configuration the median ns/page, the median of the per-round ratios to the
//! baseline with their min-max, the overhead as a share of bpftrace's ((r - 1) / (r_bpftrace -
//! 1)), the ratio above the floor's (r - r_floor) and that as a share of bpftrace's above the
//! floor ((r - r_floor) / (r_bpftrace - r_floor)), events per page, the cost per event
//! ((r - 1) x baseline ns/page / events per page), events lost; then `trace`'s attach time (measured inside the process, and from spawn to its
//! ready line) and the latency of `memcg-drift explain <cgroup> --json`.
//!
//! Profile (`--no-profile` skips it): after the rounds, the floor, `trace-record`,
//! `trace-other` and `alt-record` are attached once more for one timed loop with the kernel's
//! BPF run-time statistics on (`BPF_ENABLE_STATS`, held only for that loop: nothing stays
//! changed), and each program that ran is listed with its runs per page and the mean time of
//! its body per run (`bpftool prog show`'s `run_time_ns / run_cnt`). The statistics' own clock
//! reads are in every figure (the floor's one add shows what they cost), and the hook's
//! dispatch (trampoline, tracepoint) is in none: a body's cost read beside the floor's. Under
//! emulation, where single rounds vary by a factor of two, this is what tells two builds'
//! bodies apart.
//!
//! Scale (issue 16, `--scale LIVE,DYING`, default 2000,5000; `--no-scale` skips it,
//! `--only-scale` runs nothing else): a subtree of LIVE live cgroups holding a page of tmpfs
//! each and DYING dying ones kept by theirs (`integration_tests::scale`), and
//! `memcg-drift explain <subtree> --json` on it `--explain-runs` times: wall time and the
//! process's peak resident set (`wait4` rusage), with the memcgs read and the ledger's
//! unexplained pages. `--json` prints one document instead. Root only.
//!
//! Longer than 800 lines on purpose: the harness is one binary that `cargo xtask bench` runs
//! on the host and inside guests (`vm-test --bench`), with nothing to share it with.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use memcg_drift::{
    cgroup::{MemCgroup, RunGroup, detect_layout},
    tracer::{FloorProbes, UsedHook},
    workload::{Workload, workload_binary},
};

const USAGE: &str = "usage: overhead [--pages N] [--reps R] [--rounds N] [--cpu C] \
                     [--explain-runs N] [--settle-ms MS] [--no-bpftrace] [--no-profile] [--alt-bin PATH] \
                     [--scale LIVE,DYING | --no-scale | --only-scale] [--json]";

/// Command-line options.
struct Opts {
    pages: u64,
    reps: u64,
    rounds: usize,
    cpu: Option<usize>,
    explain_runs: usize,
    settle_ms: u64,
    bpftrace: bool,
    json: bool,
    /// Another memcg-drift binary whose `trace` recording is measured beside the main one.
    alt_bin: Option<PathBuf>,
    /// Live and dying cgroups of the scale scenario (`None`: skipped).
    scale: Option<(usize, usize)>,
    /// Only the scale scenario.
    only_scale: bool,
    /// The per-program profile after the rounds (needs bpftool).
    profile: bool,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        pages: 16384,
        reps: 8,
        rounds: 15,
        cpu: None,
        explain_runs: 9,
        settle_ms: 200,
        bpftrace: true,
        json: false,
        alt_bin: None,
        scale: Some((2000, 5000)),
        only_scale: false,
        profile: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<u64> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value; {USAGE}"))?;
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{name} {v}: not a positive number"))
        };
        match a.as_str() {
            "--pages" => o.pages = num("--pages")?,
            "--reps" => o.reps = num("--reps")?,
            "--rounds" => o.rounds = num("--rounds")? as usize,
            "--cpu" => {
                let v = args
                    .next()
                    .with_context(|| format!("--cpu needs a value; {USAGE}"))?;
                o.cpu = Some(
                    v.parse()
                        .with_context(|| format!("--cpu {v}: not a CPU number"))?,
                );
            }
            "--explain-runs" => o.explain_runs = num("--explain-runs")? as usize,
            "--settle-ms" => o.settle_ms = num("--settle-ms")?,
            "--no-bpftrace" => o.bpftrace = false,
            "--no-profile" => o.profile = false,
            "--alt-bin" => {
                let v = args
                    .next()
                    .with_context(|| format!("--alt-bin needs a path; {USAGE}"))?;
                o.alt_bin = Some(PathBuf::from(v));
            }
            "--scale" => {
                let v = args
                    .next()
                    .with_context(|| format!("--scale needs LIVE,DYING; {USAGE}"))?;
                let (l, d) = v
                    .split_once(',')
                    .and_then(|(l, d)| Some((l.parse().ok()?, d.parse().ok()?)))
                    .with_context(|| format!("--scale {v}: not LIVE,DYING"))?;
                o.scale = Some((l, d));
            }
            "--no-scale" => o.scale = None,
            "--only-scale" => o.only_scale = true,
            "--json" => o.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    Ok(o)
}

/// The configurations, in the order of the report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    Baseline,
    Floor,
    TraceRecord,
    TraceOther,
    TraceRoot,
    Bpftrace,
    /// `trace-record` with the `--alt-bin` binary (A/B of two builds in one run).
    AltRecord,
    /// `trace-root` with the `--alt-bin` binary.
    AltRoot,
}

impl Config {
    const ALL: [Config; 8] = [
        Config::Baseline,
        Config::Floor,
        Config::TraceRecord,
        Config::TraceOther,
        Config::TraceRoot,
        Config::Bpftrace,
        Config::AltRecord,
        Config::AltRoot,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor => "floor",
            Config::TraceRecord => "trace-record",
            Config::TraceOther => "trace-other",
            Config::TraceRoot => "trace-root",
            Config::Bpftrace => "bpftrace",
            Config::AltRecord => "alt-record",
            Config::AltRoot => "alt-root",
        }
    }
}

/// What one configuration measured over the rounds.
#[derive(Default)]
struct Series {
    /// ns/page per round.
    ns: Vec<f64>,
    /// Ratio to the same round's baseline.
    ratio: Vec<f64>,
    /// Events per page per round (where the configuration reports events).
    events_per_page: Vec<f64>,
    /// Events lost (summed over rounds).
    lost: u64,
    /// `attach_ms` from trace's JSON, per round.
    attach_ms: Vec<f64>,
    /// Spawn to ready line, per round (ms).
    ready_ms: Vec<f64>,
}

/// A process started by the bench, with its output collected by reader threads.
struct Attached {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    readers: Vec<std::thread::JoinHandle<()>>,
    out: Vec<String>,
    err: Vec<String>,
}

impl Attached {
    /// Spawns `cmd` and waits until a line satisfies `ready` (`true`: stdout, `false`: stderr).
    fn spawn(
        mut cmd: Command,
        ready: impl Fn(bool, &str) -> bool,
    ) -> anyhow::Result<(Self, Duration)> {
        let t0 = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        let streams: [(bool, Box<dyn Read + Send>); 2] = [
            (true, Box::new(child.stdout.take().context("stdout")?)),
            (false, Box::new(child.stderr.take().context("stderr")?)),
        ];
        for (is_out, r) in streams {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send((is_out, line)).is_err() {
                        break;
                    }
                }
            }));
        }
        // Only the readers hold senders now: their end (the process exited) ends the wait.
        drop(tx);
        let mut a = Attached {
            child,
            lines: rx,
            readers,
            out: Vec::new(),
            err: Vec::new(),
        };
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match a.lines.recv_timeout(left) {
                Ok((is_out, line)) => {
                    let hit = ready(is_out, &line);
                    a.keep(is_out, line);
                    if hit {
                        return Ok((a, t0.elapsed()));
                    }
                }
                Err(_) => {
                    let _ = a.child.kill();
                    let _ = a.child.wait();
                    bail!("{cmd:?} never became ready: {}", a.err.join(" | "));
                }
            }
        }
    }

    fn keep(&mut self, is_out: bool, line: String) {
        if is_out {
            self.out.push(line);
        } else {
            self.err.push(line);
        }
    }

    /// Stops the process with SIGINT, waits for it, returns its stdout.
    fn stop(mut self) -> anyhow::Result<String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // SIGINT again every 5 s until it ends: bpftrace 0.17 once sat in epoll_wait for 12
        // minutes after the first one, and exited at the second.
        let status = loop {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
            let asked = Instant::now();
            let mut ended = None;
            while ended.is_none() && asked.elapsed() < Duration::from_secs(5) {
                ended = self.child.try_wait()?;
                if ended.is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if let Some(status) = ended {
                break status;
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        while let Ok((is_out, line)) = self.lines.try_recv() {
            self.keep(is_out, line);
        }
        if !status.success() {
            bail!(
                "process ended with {status}: {}",
                self.err.last().map_or("", String::as_str)
            );
        }
        Ok(self.out.join("\n"))
    }
}

/// The bench's cgroups and workload.
struct Rig {
    run: Option<RunGroup>,
    work: MemCgroup,
    other: MemCgroup,
    w: Option<Workload>,
    bin: PathBuf,
    pages: u64,
    reps: u64,
    settle: Duration,
    alt_bin: Option<PathBuf>,
    /// The hooks `trace` attaches here, where the floor goes.
    floor_hooks: Vec<UsedHook>,
}

impl Rig {
    /// The hooks `trace --cgroup <loop cgroup>` attaches on this kernel (a short run of it,
    /// read from its JSON): the floor goes on exactly these.
    fn trace_hooks(&self) -> anyhow::Result<Vec<UsedHook>> {
        let mut cmd = self.trace_cmd(Config::TraceRecord);
        cmd.args(["--duration", "1ms"]).stderr(Stdio::null());
        let doc = json_output(&mut cmd, "trace (to learn its hooks)")?;
        Ok(integration_tests::trace_used_hooks(&doc))
    }

    /// Times the loop: `reps` x (touch `pages`, unmap them); ns per page.
    fn time_loop(&mut self) -> anyhow::Result<f64> {
        // Let whatever attaching set off (the attaching process's own exit from its start-up,
        // deferred kernel work) settle first, in every configuration alike.
        std::thread::sleep(self.settle);
        let w = self.w.as_mut().context("workload gone")?;
        let t0 = Instant::now();
        for _ in 0..self.reps {
            w.touch(self.pages)?;
            w.free()?;
        }
        Ok(t0.elapsed().as_nanos() as f64 / (self.pages * self.reps) as f64)
    }

    /// Starts `trace` for `c` and waits until it says it records (its `tracing ...` line on
    /// stderr, printed once every probe is attached); the time that took.
    fn attach_trace(&self, c: Config) -> anyhow::Result<(Attached, Duration)> {
        Attached::spawn(self.trace_cmd(c), |out, l| {
            !out && l.starts_with("tracing ")
        })
    }

    fn trace_cmd(&self, c: Config) -> Command {
        let bin = match (c, &self.alt_bin) {
            (Config::AltRecord | Config::AltRoot, Some(alt)) => alt,
            _ => &self.bin,
        };
        let mut cmd = Command::new(bin);
        cmd.arg("trace").arg("--json").arg("--cgroup");
        match c {
            Config::TraceRecord | Config::AltRecord => cmd.arg(self.work.path()),
            Config::TraceOther => cmd.arg(self.other.path()),
            _ => cmd.arg("/").arg("--descendants"),
        };
        cmd
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(w) = self.w.take() {
            let _ = w.exit();
        }
        if let Some(run) = self.run.take() {
            let _ = run.remove();
        }
    }
}

/// Events and losses from a `trace --json` document.
fn trace_figures(doc: &serde_json::Value, c: Config, work_id: u64) -> (u64, u64, Option<f64>) {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let counters = &doc["counters"];
    let events = match c {
        // The loop's events only, from its cgroup's rows.
        Config::TraceRecord | Config::AltRecord => doc["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| n(&r["cgroup_id"]) == work_id)
            .map(|r| n(&r["events"]))
            .sum(),
        Config::TraceOther => n(&counters["filtered"]),
        _ => n(&counters["recorded"]),
    };
    let lost = n(&doc["lost"]) + n(&doc["charge"]["lost"]);
    (events, lost, doc["attach_ms"].as_f64())
}

const BPFTRACE_SCRIPT: &str = "BEGIN { printf(\"ready\\n\"); } \
    tracepoint:memcg:mod_memcg_state, tracepoint:memcg:mod_memcg_lruvec_state \
    { @[cpu, args->item] = sum(args->val); }";

/// Runs `cmd` to its end and parses its standard output as JSON; `what` names it in errors.
fn json_output(cmd: &mut Command, what: &str) -> anyhow::Result<serde_json::Value> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} exited with {}", out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{what}: JSON output"))
}

/// Run count and run time of every BPF program of the system, by program id, as `bpftool
/// prog show --json` reports them (the kernel counts them while run-time statistics are on).
fn program_stats() -> anyhow::Result<std::collections::BTreeMap<u64, (String, u64, u64)>> {
    let mut cmd = Command::new("bpftool");
    cmd.args(["prog", "show", "--json"]);
    let doc = json_output(&mut cmd, "bpftool prog show")?;
    Ok(doc
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["run_cnt"].as_u64().unwrap_or(0),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect())
}

/// The profile of `c` (a `trace` configuration or the floor): attached as in a round, with the
/// kernel's BPF run-time statistics on for one timed loop, each program that ran: its runs per
/// page and the mean time of its body per run (the kernel's clock around the program, not the
/// hook's dispatch). Statistics are on only while the returned fd of BPF_ENABLE_STATS is held.
fn profile(rig: &mut Rig, c: Config) -> anyhow::Result<Vec<serde_json::Value>> {
    let looped = (rig.pages * rig.reps) as f64;
    let mut attached = None;
    let mut floor = None;
    match c {
        Config::Floor => floor = Some(FloorProbes::start(&rig.floor_hooks)?),
        _ => {
            attached = Some(rig.attach_trace(c)?.0);
        }
    }
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics: {e}"))?;
    let before = program_stats()?;
    rig.time_loop()?;
    let after = program_stats()?;
    drop(stats);
    drop(floor);
    if let Some(p) = attached {
        p.stop()?;
    }
    let mut rows: Vec<serde_json::Value> = after
        .iter()
        .filter_map(|(id, (name, runs, ns))| {
            let (b_runs, b_ns) = before.get(id).map_or((0, 0), |(_, r, n)| (*r, *n));
            let runs = runs.checked_sub(b_runs)?;
            (runs > 0).then(|| {
                serde_json::json!({
                    "config": c.name(),
                    "program": name,
                    "runs_per_page": runs as f64 / looped,
                    "ns_per_run": ns.saturating_sub(b_ns) as f64 / runs as f64,
                })
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        let r = |v: &serde_json::Value| v["runs_per_page"].as_f64().unwrap_or(0.0);
        r(b).total_cmp(&r(a))
    });
    Ok(rows)
}

/// One measurement of `c`.
fn measure(rig: &mut Rig, c: Config, s: &mut Series) -> anyhow::Result<f64> {
    let looped = (rig.pages * rig.reps) as f64;
    let per_page = |events: u64| events as f64 / looped;
    match c {
        Config::Baseline => rig.time_loop(),
        Config::Floor => {
            let floor = FloorProbes::start(&rig.floor_hooks)?;
            let e0 = floor.events()?;
            let ns = rig.time_loop()?;
            s.events_per_page.push(per_page(floor.events()? - e0));
            Ok(ns)
        }
        Config::Bpftrace => {
            let mut cmd = Command::new("bpftrace");
            cmd.args(["-B", "line", "-e", BPFTRACE_SCRIPT]);
            let (p, ready) = Attached::spawn(cmd, |out, l| out && l.trim() == "ready")?;
            s.ready_ms.push(ready.as_secs_f64() * 1e3);
            let ns = rig.time_loop()?;
            p.stop()?;
            Ok(ns)
        }
        Config::TraceRecord
        | Config::TraceOther
        | Config::TraceRoot
        | Config::AltRecord
        | Config::AltRoot => {
            let (p, ready) = rig.attach_trace(c)?;
            s.ready_ms.push(ready.as_secs_f64() * 1e3);
            let ns = rig.time_loop()?;
            let out = p.stop()?;
            let doc: serde_json::Value =
                serde_json::from_str(&out).context("trace --json output")?;
            let (events, lost, attach) = trace_figures(&doc, c, rig.work.id());
            s.events_per_page.push(per_page(events));
            s.lost += lost;
            s.attach_ms.extend(attach);
            Ok(ns)
        }
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// Wall-clock milliseconds of `memcg-drift explain <cgroup> --json`, one per run.
fn explain_latency(bin: &Path, cg: &Path, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = Command::new(bin)
            .arg("explain")
            .arg(cg)
            .arg("--json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        v.push(t0.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            bail!(
                "explain failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(v)
}

/// Runs a command to its end: (stdout, wall ms, peak resident set in bytes); fails
/// on a non-zero exit.
fn run_measured(cmd: &mut Command) -> anyhow::Result<(Vec<u8>, f64, u64)> {
    let t0 = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut err = child.stderr.take().context("stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_end(&mut out)?;
    let mut status = 0;
    // SAFETY: zeroed rusage filled by wait4 for our own child, which std has not reaped.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain wait4 on the child's pid with valid out-pointers.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let err = err_reader.join().unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{:?} failed: {}", cmd, err.trim());
    }
    Ok((out, ms, ru.ru_maxrss as u64 * 1024))
}

/// The scale figures: `explain` of a subtree of `live` + `dying` cgroups, `runs` times.
fn scale_figures(
    bin: &Path,
    hier: &memcg_drift::cgroup::MemoryHierarchy,
    (live, dying): (usize, usize),
    cpu: usize,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let t = integration_tests::scale::ScaleTree::build(hier, live, dying, 1, cpu)?;
    let mut ms = Vec::new();
    let mut peak = 0;
    let mut last = serde_json::Value::Null;
    for _ in 0..runs {
        let (out, m, rss) = run_measured(
            Command::new(bin)
                .arg("explain")
                .arg(t.tree.path())
                .arg("--json"),
        )?;
        ms.push(m);
        peak = peak.max(rss);
        last = serde_json::from_slice(&out).context("explain --json")?;
    }
    let sn = &last["snapshot"];
    let doc = serde_json::json!({
        "live": live,
        "dying": dying,
        "build_s": t.build_time.as_secs_f64(),
        "memcgs": sn["memcgs"],
        "left_out": sn["left_out"],
        "attempts": sn["attempts"],
        "unexplained_pages": last["unexplained_pages"],
        "explain_ms": median(&ms),
        "explain_ms_min_max": min_max(&ms),
        "peak_rss_mib": peak as f64 / (1 << 20) as f64,
        "runs": runs,
    });
    t.remove()?;
    Ok(doc)
}

fn render_scale(sc: &serde_json::Value) -> String {
    if sc.is_null() {
        return String::new();
    }
    let f = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.0}"));
    format!(
        "scale: explain of {} live + {} dying cgroups ({} memcgs read, {} left out, unexplained \
         {} pages): median {} ms ({}-{}) over {} runs, peak RSS {:.1} MiB (built in {:.1} s)\n",
        sc["live"],
        sc["dying"],
        sc["memcgs"],
        sc["left_out"],
        sc["unexplained_pages"],
        f(&sc["explain_ms"]),
        f(&sc["explain_ms_min_max"][0]),
        f(&sc["explain_ms_min_max"][1]),
        sc["runs"],
        sc["peak_rss_mib"].as_f64().unwrap_or(0.0),
        sc["build_s"].as_f64().unwrap_or(0.0),
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    if let Err(e) = run() {
        eprintln!(
            "overhead: {}",
            format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let o = parse_opts()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (it loads eBPF programs and creates memory cgroups)");
    }
    let have_bpftrace = o.bpftrace
        && Command::new("bpftrace")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    let configs: Vec<Config> = Config::ALL
        .into_iter()
        .filter(|c| *c != Config::Bpftrace || have_bpftrace)
        .filter(|c| !matches!(c, Config::AltRecord | Config::AltRoot) || o.alt_bin.is_some())
        .collect();
    let hier = detect_layout()?
        .memory
        .context("no memory controller mounted")?;
    let cpus = integration_tests::online_cpus();
    let cpu = o.cpu.unwrap_or(*cpus.last().context("no online CPU")?);
    if !cpus.contains(&cpu) {
        bail!("--cpu {cpu}: not an online CPU");
    }
    if o.only_scale {
        let (live, dying) = o.scale.context("--only-scale with --no-scale")?;
        let sc = scale_figures(
            &workload_binary(),
            &hier,
            (live, dying),
            cpu,
            o.explain_runs,
        )?;
        if o.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "scale": sc }))?
            );
        } else {
            print!("{}", render_scale(&sc));
        }
        return Ok(());
    }
    let run = RunGroup::create(&hier)?;
    let work = run.child("bench-work")?;
    let other = run.child("bench-other")?;
    let bin = workload_binary();
    let w = Workload::spawn(&bin, &work, cpu)?;
    let mut rig = Rig {
        run: Some(run),
        work,
        other,
        w: Some(w),
        bin,
        pages: o.pages,
        reps: o.reps,
        settle: Duration::from_millis(o.settle_ms),
        alt_bin: o.alt_bin.clone(),
        floor_hooks: Vec::new(),
    };
    rig.floor_hooks = rig.trace_hooks()?;
    let load_start = loadavg();
    // Warm up: the first touches fault in page tables and the allocator's free lists.
    rig.time_loop()?;
    let mut series: Vec<Series> = configs.iter().map(|_| Series::default()).collect();
    let t_start = Instant::now();
    for round in 0..o.rounds {
        let mut base = None;
        let mut ns_round = vec![0.0; configs.len()];
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let ns = measure(&mut rig, configs[i], &mut series[i])
                .with_context(|| format!("round {round}, {}", configs[i].name()))?;
            ns_round[i] = ns;
            if configs[i] == Config::Baseline {
                base = Some(ns);
            }
        }
        let base = base.context("no baseline")?;
        for (i, ns) in ns_round.into_iter().enumerate() {
            series[i].ns.push(ns);
            series[i].ratio.push(ns / base);
        }
        if !o.json {
            eprintln!(
                "round {}/{}: {}",
                round + 1,
                o.rounds,
                configs
                    .iter()
                    .zip(&series)
                    .map(|(c, s)| format!("{} {:.0}", c.name(), s.ns.last().unwrap_or(&0.0)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let bench_s = t_start.elapsed().as_secs_f64();
    let mut programs = Vec::new();
    if o.profile {
        for c in configs.iter().filter(|c| {
            matches!(
                c,
                Config::Floor | Config::TraceRecord | Config::TraceOther | Config::AltRecord
            )
        }) {
            programs
                .extend(profile(&mut rig, *c).with_context(|| format!("profile of {}", c.name()))?);
        }
    }
    let explain = explain_latency(&rig.bin, rig.work.path(), o.explain_runs)?;
    let scale = match o.scale {
        Some(sz) => scale_figures(&rig.bin, &hier, sz, cpu, o.explain_runs)?,
        None => serde_json::Value::Null,
    };
    let load_end = loadavg();

    let base_ns = median(&series[0].ns).unwrap_or(0.0);
    let median_of = |which: Config| {
        configs
            .iter()
            .position(|c| *c == which)
            .and_then(|i| median(&series[i].ratio))
    };
    let (r_bpf, r_floor) = (median_of(Config::Bpftrace), median_of(Config::Floor));
    let rows: Vec<serde_json::Value> = configs
        .iter()
        .zip(&series)
        .map(|(c, s)| {
            let r = median(&s.ratio).unwrap_or(0.0);
            let (lo, hi) = min_max(&s.ratio);
            let epp = median(&s.events_per_page);
            let share = match (r_bpf, *c) {
                (_, Config::Baseline) => None,
                (Some(rb), _) if rb > 1.0 => Some((r - 1.0) / (rb - 1.0)),
                _ => None,
            };
            // What the configuration costs beyond running any program on the hooks at all.
            let (over_floor, share_over_floor) = match (r_floor, r_bpf, *c) {
                (_, _, Config::Baseline | Config::Floor) => (None, None),
                (Some(rf), Some(rb), _) if rb > rf => (Some(r - rf), Some((r - rf) / (rb - rf))),
                (Some(rf), _, _) => (Some(r - rf), None),
                _ => (None, None),
            };
            serde_json::json!({
                "config": c.name(),
                "ns_per_page": median(&s.ns),
                "ratio": r,
                "ratio_min": lo,
                "ratio_max": hi,
                "share_of_bpftrace": share,
                "over_floor": over_floor,
                "share_of_bpftrace_over_floor": share_over_floor,
                "events_per_page": epp,
                "ns_per_event": epp.filter(|e| *e > 0.0).map(|e| (r - 1.0) * base_ns / e),
                "lost": s.lost,
                "attach_ms": median(&s.attach_ms),
                "ready_ms": median(&s.ready_ms),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "pages": o.pages,
        "reps": o.reps,
        "rounds": o.rounds,
        "cpu": cpu,
        "cpus_online": cpus.len(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "load_start": load_start,
        "load_end": load_end,
        "seconds": bench_s,
        "configs": rows,
        "floor_hooks": rig
            .floor_hooks
            .iter()
            .map(|(f, t)| format!("{f} {t}"))
            .collect::<Vec<_>>(),
        "programs": programs,
        "explain_ms": median(&explain),
        "explain_ms_min_max": min_max(&explain),
        "explain_runs": explain.len(),
        "scale": scale,
    });
    if o.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&doc));
    }
    Ok(())
}

/// The text report.
fn render(d: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let f = |v: &serde_json::Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "memcg-drift bench: {} pages x {} per measurement, {} rounds interleaved, CPU {} of {}, \
         kernel {}",
        d["pages"],
        d["reps"],
        d["rounds"],
        d["cpu"],
        d["cpus_online"],
        d["kernel"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        s,
        "load average {} at start, {} at end; {:.0} s",
        d["load_start"].as_str().unwrap_or(""),
        d["load_end"].as_str().unwrap_or(""),
        d["seconds"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        s,
        "{:<13} {:>8} {:>6} {:>11} {:>9} {:>6} {:>9} {:>7} {:>8} {:>5}",
        "CONFIG",
        "NS/PAGE",
        "RATIO",
        "MIN-MAX",
        "BPFTRACE%",
        "+FLOOR",
        "BPF>FLOOR",
        "EV/PAGE",
        "NS/EVENT",
        "LOST"
    );
    for r in d["configs"].as_array().into_iter().flatten() {
        let pct = |v: &serde_json::Value| {
            v.as_f64()
                .map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0))
        };
        let _ = writeln!(
            s,
            "{:<13} {:>8} {:>6} {:>11} {:>9} {:>6} {:>9} {:>7} {:>8} {:>5}",
            r["config"].as_str().unwrap_or(""),
            f(&r["ns_per_page"], 0),
            f(&r["ratio"], 3),
            format!("{}-{}", f(&r["ratio_min"], 2), f(&r["ratio_max"], 2)),
            pct(&r["share_of_bpftrace"]),
            r["over_floor"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{:+.3}", x)),
            pct(&r["share_of_bpftrace_over_floor"]),
            f(&r["events_per_page"], 2),
            f(&r["ns_per_event"], 1),
            r["lost"]
        );
    }
    let _ = writeln!(
        s,
        "(RATIO: median of per-round ratios to the baseline; BPFTRACE%: (r - 1) / (r_bpftrace - 1); \
         +FLOOR: r - r_floor; BPF>FLOOR: (r - r_floor) / (r_bpftrace - r_floor))"
    );
    let hooks: Vec<&str> = d["floor_hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str())
        .collect();
    let _ = writeln!(
        s,
        "floor and trace on the {} hooks trace attaches here: {}",
        hooks.len(),
        hooks.join(", ")
    );
    let _ = writeln!(s);
    for r in d["configs"].as_array().into_iter().flatten() {
        if r["ready_ms"].is_null() {
            continue;
        }
        let _ = writeln!(
            s,
            "{:<13} attached {} ms after start (inside the process), ready line {} ms after spawn",
            r["config"].as_str().unwrap_or(""),
            f(&r["attach_ms"], 0),
            f(&r["ready_ms"], 0),
        );
    }
    let programs: Vec<&serde_json::Value> =
        d["programs"].as_array().into_iter().flatten().collect();
    if !programs.is_empty() {
        let _ = writeln!(
            s,
            "\nper program, one loop with the kernel's BPF run-time statistics on (the body's \
             time per run, not the hook's dispatch):"
        );
        let _ = writeln!(
            s,
            "{:<13} {:<24} {:>9} {:>8}",
            "CONFIG", "PROGRAM", "RUNS/PAGE", "NS/RUN"
        );
        for p in programs {
            let _ = writeln!(
                s,
                "{:<13} {:<24} {:>9} {:>8}",
                p["config"].as_str().unwrap_or(""),
                p["program"].as_str().unwrap_or(""),
                f(&p["runs_per_page"], 3),
                f(&p["ns_per_run"], 1)
            );
        }
        let _ = writeln!(s);
    }
    let (lo, hi) = (&d["explain_ms_min_max"][0], &d["explain_ms_min_max"][1]);
    let _ = writeln!(
        s,
        "explain <workload cgroup> --json: median {} ms ({}-{}) over {} runs",
        f(&d["explain_ms"], 1),
        f(lo, 1),
        f(hi, 1),
        d["explain_runs"]
    );
    s.push_str(&render_scale(&d["scale"]));
    s
}
