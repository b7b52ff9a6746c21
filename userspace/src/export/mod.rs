//! `memcg-drift export`: a long-running OpenMetrics exporter for Prometheus.
//!
//! One thread reads the kernel once per `--interval`: for each exported cgroup (the target and,
//! with `--descendants`, its subtree parents first, at most `--max-cgroups`) an `explain` ledger
//! from one eBPF snapshot reader loaded once, plus its memory.events counters; the snapshot is
//! rendered to text once ([`metrics`]). HTTP scrapes (tokio, axum) are served from that text, so
//! a scrape storm never reads the kernel: the snapshot count stays one per interval. SIGINT and
//! SIGTERM stop the server and the reader; nothing is attached to the kernel between reads
//! (the reader runs its programs on demand with `BPF_PROG_TEST_RUN`).

pub mod metrics;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{
    cgroup::{CgroupVersion, MemCgroup, MemoryHierarchy},
    explain::{ExplainError, Explainer},
};

/// Why the exporter could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The `--listen` address could not be bound.
    #[error("--listen {addr}: {err}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        err: std::io::Error,
    },
    /// The first `explain` session could not start.
    #[error(transparent)]
    Explain(#[from] ExplainError),
    /// The HTTP server (its runtime, its signal handlers) failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What `export` serves, and how often it reads the kernel.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address of the HTTP server.
    pub listen: SocketAddr,
    /// Also export the target's descendants.
    pub descendants: bool,
    /// At most this many cgroups.
    pub max_cgroups: usize,
    /// One kernel read per interval.
    pub interval: Duration,
}

use metrics::{CgroupSample, Health, Snapshot};

/// What the reader publishes and the server serves.
struct Shared {
    /// OpenMetrics text of the last snapshot (without `# EOF`), and how long it took.
    text: Mutex<(Arc<String>, Duration)>,
    snapshots: AtomicU64,
    retries: AtomicU64,
    read_failures: AtomicU64,
    scrapes: AtomicU64,
    /// Nanoseconds the previous scrape took.
    last_scrape_ns: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn health(&self) -> Health {
        Health {
            snapshots: self.snapshots.load(Ordering::Relaxed),
            snapshot_retries: self.retries.load(Ordering::Relaxed),
            read_failures: self.read_failures.load(Ordering::Relaxed),
            scrapes: self.scrapes.load(Ordering::Relaxed),
            last_scrape_s: self.last_scrape_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The exported cgroups: `target`, then (with `descendants`) its subtree parents first; at most
/// `max`, and how many were left out.
fn exported(target: &MemCgroup, descendants: bool, max: usize) -> (Vec<MemCgroup>, usize) {
    let mut all = vec![target.clone()];
    if descendants {
        let mut d = target.descendants().unwrap_or_default();
        // Parents first: by depth, then by path.
        d.sort_by(|a, b| {
            let depth = |c: &MemCgroup| c.rel_path().components().count();
            depth(a)
                .cmp(&depth(b))
                .then_with(|| a.rel_path().cmp(b.rel_path()))
        });
        all.extend(d);
    }
    let left_out = all.len().saturating_sub(max);
    all.truncate(max);
    (all, left_out)
}

/// Memory events of a cgroup as counters: every key of v2 `memory.events`; `oom_kill` of v1
/// `memory.oom_control` (its other keys are states, not counts).
fn events(cg: &MemCgroup) -> std::collections::BTreeMap<String, u64> {
    let Ok(Some(ev)) = cg.events() else {
        return Default::default();
    };
    let mut out = std::collections::BTreeMap::new();
    match cg.version() {
        CgroupVersion::V2 => {
            for (k, v) in ev.iter() {
                out.insert(k.to_string(), v);
            }
        }
        CgroupVersion::V1 => {
            if let Some(v) = ev.get("oom_kill") {
                out.insert("oom_kill".into(), v);
            }
        }
    }
    out
}

/// One snapshot of every exported cgroup.
fn take(ex: &mut Explainer, target: &MemCgroup, args: &Options, sh: &Shared) -> Snapshot {
    let t0 = Instant::now();
    let (list, left_out) = exported(target, args.descendants, args.max_cgroups);
    let mut snap = Snapshot {
        left_out,
        ..Snapshot::default()
    };
    for cg in list {
        let name = cg.rel_path().display().to_string();
        let read = ex.retarget(cg.clone()).and_then(|()| ex.report());
        match read {
            Ok(report) => {
                sh.retries.fetch_add(
                    report.snapshot.attempts.saturating_sub(1) as u64,
                    Ordering::Relaxed,
                );
                snap.cgroups.push(CgroupSample {
                    cgroup: name,
                    report,
                    events: events(&cg),
                });
            }
            Err(_) => {
                snap.failed += 1;
                sh.read_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    snap.duration = t0.elapsed();
    snap
}

async fn serve_metrics(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let t0 = Instant::now();
    let r = render_scrape(&sh, &headers);
    sh.scrapes.fetch_add(1, Ordering::Relaxed);
    sh.last_scrape_ns
        .store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

fn render_scrape(sh: &Shared, headers: &HeaderMap) -> Response {
    let (text, took) = {
        let g = sh.text.lock().unwrap_or_else(|p| p.into_inner());
        (g.0.clone(), g.1)
    };
    let open = format!("{text}{}", metrics::health_text(&sh.health(), took));
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            open,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics::to_prometheus_text(&open),
        )
            .into_response()
    }
}

async fn index() -> impl IntoResponse {
    (
        StatusCode::OK,
        "memcg-drift exporter: metrics at /metrics (docs/metrics.md)\n",
    )
}

/// Binds `addr` now, so that a busy port or a bad address fails at once, in one line.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ExportError> {
    let listen = |err| ExportError::Listen { addr, err };
    let l = std::net::TcpListener::bind(addr).map_err(listen)?;
    l.set_nonblocking(true).map_err(listen)?;
    Ok(l)
}

/// Serves `target` (and its subtree) until SIGINT or SIGTERM.
pub fn run(args: &Options, target: MemCgroup, hier: &MemoryHierarchy) -> Result<i32, ExportError> {
    let listener = bind(args.listen)?;
    let mut ex = Explainer::new(hier, target.clone())?.without_stat_file();
    let sh = Arc::new(Shared {
        text: Mutex::new((Arc::new(String::new()), Duration::ZERO)),
        snapshots: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        read_failures: AtomicU64::new(0),
        scrapes: AtomicU64::new(0),
        last_scrape_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    // The first snapshot before serving: a scrape never sees an empty exporter.
    let publish = |ex: &mut Explainer, sh: &Shared| {
        let snap = take(ex, &target, args, sh);
        let text = Arc::new(metrics::snapshot_text(&snap));
        *sh.text.lock().unwrap_or_else(|p| p.into_inner()) = (text, snap.duration);
        sh.snapshots.fetch_add(1, Ordering::Relaxed);
    };
    publish(&mut ex, &sh);
    eprintln!(
        "memcg-drift export: serving http://{}/metrics ({} every {})",
        args.listen,
        target.rel_path().display(),
        humantime::format_duration(args.interval)
    );
    let reader = {
        let sh = sh.clone();
        let interval = args.interval;
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                let mut next = Instant::now() + interval;
                while !sh.stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(100)));
                        continue;
                    }
                    next += interval;
                    if next < Instant::now() {
                        // A snapshot longer than the interval: skip, never queue up reads.
                        next = Instant::now() + interval;
                    }
                    publish(&mut ex, &sh);
                }
            });
            let served = serve(listener, sh.clone());
            sh.stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
            served
        })
    };
    reader?;
    Ok(0)
}

/// Serves HTTP on a current-thread tokio runtime until SIGINT or SIGTERM.
fn serve(listener: std::net::TcpListener, sh: Arc<Shared>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new()
            .route("/metrics", get(serve_metrics))
            .route("/", get(index))
            .with_state(sh);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await?;
        Ok(())
    })
}
