//! `memcg-drift export` against the real thing (issue 14): Debian's Prometheus scrapes it every
//! second and is queried through its HTTP API; `promtool check metrics` lints the output; a
//! load test checks that scrapes never read the kernel (one snapshot per interval) and that the
//! exporter's memory stays flat; SIGTERM ends it cleanly; a busy port or a bad address is one
//! line. Needs root, BPF, a memory cgroup, and `prometheus` (installed by `cargo xtask setup`);
//! host only (the guests have no Prometheus).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{bin, require_kernel, serial};
use memcg_drift::{
    cgroup::{RunGroup, detect_layout},
    workload::{Workload, workload_binary},
};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET; returns (status, body).
fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Percent-encodes a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_exporter(port: u16, cgroup: &Path) -> Proc {
    let child = Command::new(bin())
        .args(["export", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--descendants", "--interval", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let p = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/metrics", None).is_err() {
        assert!(Instant::now() < deadline, "the exporter never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// The value of the one sample of `metric` with `labels` in Prometheus text.
fn sample(text: &str, metric: &str, labels: &str) -> Option<f64> {
    let head = format!("{metric}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.trim().parse().ok())
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Queries Prometheus until `query` returns one sample; returns its value.
fn query_until(prom: SocketAddr, query: &str, want: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok((200, body)) = get(
            prom,
            &format!("/api/v1/query?query={}", encode(query)),
            None,
        ) {
            let v: Value = serde_json::from_str(&body).unwrap();
            if let Some(x) = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                && want(x)
            {
                return x;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered `{query}` as wanted; last answer: {last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_exporter() {
    let test = "prometheus_scrapes_the_exporter";
    if !require_kernel(test) {
        return;
    }
    if std::env::var_os("MEMCG_DRIFT_VM").is_some() {
        eprintln!("{test}: host only (the guests have no Prometheus)");
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let run = RunGroup::create(&hier).unwrap();
    let idle = run.child("idle").unwrap();
    let oom = run.child("oom").unwrap();
    oom.set_limit_bytes(Some(8 << 20)).unwrap();
    let mut w = Workload::spawn(&workload_binary(), &idle, 0).unwrap();
    w.touch(2048).unwrap();
    let rel = |p: &Path| {
        p.strip_prefix(&hier.root)
            .map(|r| format!("/{}", r.display()))
            .unwrap()
    };
    let idle_rel = rel(idle.path());
    let oom_rel = rel(oom.path());

    let port = free_port();
    let exporter = start_exporter(port, run.cgroup().path());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // The Prometheus text passes promtool's lint (which reads that format only); the OpenMetrics
    // text is what the Prometheus server below asks for and parses (`up` is 0 otherwise).
    let (_, plain) = get(addr, "/metrics", None).unwrap();
    let (_, open) = get(
        addr,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# UNIT memcg_drift_usage_bytes bytes"),
        "{open}"
    );
    {
        let mut lint = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (cargo xtask setup installs prometheus)");
        lint.stdin
            .take()
            .unwrap()
            .write_all(plain.as_bytes())
            .unwrap();
        let out = lint.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let usage_label = format!("cgroup=\"{idle_rel}\"");
    assert!(
        sample(&plain, "memcg_drift_usage_bytes", &usage_label).is_some(),
        "{plain}"
    );

    // A real Prometheus scrapes it every second.
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: memcg-drift\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let _prom = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (cargo xtask setup installs it)"),
    );
    let prom: SocketAddr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let up = query_until(prom, "up{job=\"memcg-drift\"}", |v| v == 1.0);
    assert_eq!(up, 1.0);

    // Usage as Prometheus stores it equals what explain reports, within the charge stock: the
    // workload is idle, and the page_counter moves only by batches taken into or drained from a
    // stock (the bound explain reports, from the running kernel).
    let scraped = query_until(
        prom,
        &format!("memcg_drift_usage_bytes{{{usage_label}}}"),
        |v| v > 0.0,
    );
    let ex = integration_tests::run_json(&[
        "explain".as_ref(),
        "--json".as_ref(),
        idle.path().as_os_str(),
    ]);
    let usage = ex["usage_bytes"].as_f64().unwrap();
    let page = ex["page_size"].as_f64().unwrap();
    let stock_bound = ex["gap"]["bounds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b[0] == "stock")
        .map(|b| b[1]["pages"].as_f64().unwrap())
        .expect("explain reports the stock bound");
    assert!(
        (scraped - usage).abs() <= stock_bound * page,
        "Prometheus has {scraped}, explain {usage} (stock bound {stock_bound} pages)"
    );
    assert!(
        usage >= 2048.0 * page,
        "the 2048 touched pages are charged: {usage}"
    );

    // An OOM kill in a cgroup appears as a counter increment.
    let q = format!("memcg_drift_oom_kills_total{{cgroup=\"{oom_rel}\"}}");
    query_until(prom, &q, |v| v == 0.0);
    let mut victim = Workload::spawn(&workload_binary(), &oom, 0).unwrap();
    assert!(victim.touch(4096).is_err(), "16 MiB fit in an 8 MiB limit");
    drop(victim);
    query_until(prom, &q, |v| v == 1.0);

    // Load: 200 scrapes from 8 clients. Scrapes never read the kernel: the snapshot count
    // grows by one per interval only; the exporter's memory stays flat.
    let pid = exporter.0.id();
    let total = |t: &str, name: &str| -> f64 {
        t.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (_, before) = get(addr, "/metrics", None).unwrap();
    let snaps0 = total(&before, "memcg_drift_snapshots_total");
    let rss0 = vm_rss_kib(pid);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let (status, body) = get(addr, "/metrics", None).unwrap();
                    assert_eq!(status, 200);
                    assert!(body.contains("memcg_drift_usage_bytes"));
                }
            })
        })
        .collect();
    for h in workers {
        h.join().unwrap();
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "200 scrapes took {elapsed:?}"
    );
    let (_, after) = get(addr, "/metrics", None).unwrap();
    let snaps1 = total(&after, "memcg_drift_snapshots_total");
    let intervals = elapsed.as_secs_f64().ceil() + 2.0;
    assert!(
        snaps1 - snaps0 <= intervals,
        "{} snapshots during {elapsed:?} of scraping (interval 1 s)",
        snaps1 - snaps0
    );
    assert!(total(&after, "memcg_drift_scrapes_total") >= 202.0);
    let rss1 = vm_rss_kib(pid);
    assert!(
        rss1 <= rss0 + 8 * 1024,
        "the exporter grew from {rss0} KiB to {rss1} KiB over 200 scrapes"
    );

    // SIGTERM: a clean exit.
    let mut exporter = exporter;
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = exporter.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the exporter ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    drop(w);
    run.remove().unwrap();
}

#[test]
fn export_bad_listen_is_one_line() {
    let test = "export_bad_listen_is_one_line";
    if !require_kernel(test) {
        return;
    }
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    for (listen, needle) in [
        (format!("127.0.0.1:{port}"), "in use"),
        ("nope".to_string(), "--listen"),
        ("256.1.1.1:80".to_string(), "--listen"),
    ] {
        let out = Command::new(bin())
            .args(["export", "--listen", &listen])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{listen}: accepted");
        assert_eq!(err.trim().lines().count(), 1, "{listen}: {err}");
        assert!(err.contains(needle), "{listen}: {err}");
    }
    let out = Command::new(bin())
        .args(["export", "--cgroup", "/no/such/cgroup"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}
