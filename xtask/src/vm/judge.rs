//! Judges a guest run from what the guest reported, never from QEMU's exit status (QEMU exits
//! 0 after a guest panic too).
//!
//! A run passes only if the results port carries `@@ INIT_END`, no guest setup step failed,
//! every expected test executable has an `@@ END test:<name> rc=0` frame whose output holds a
//! libtest `test result: ok.` line, and the kernel console shows no `Kernel panic`, `Oops` or
//! `BUG:`. `memcg-drift doctor --json` is captured and reported but does not decide the verdict.
use std::{fmt::Write as _, fs, path::Path, time::Duration};

use anyhow::{Context as _, Result};

use super::qemu::Outcome;

/// Console patterns that fail a run.
const FATAL_CONSOLE: &[&str] = &["Kernel panic", "Oops", "BUG:"];
/// Lines of a failing test's output to show when it has no panics to list.
const OUTPUT_LINES: usize = 60;
/// Panics of one test executable to list, and message lines of each.
const MAX_PANICS: usize = 20;
const PANIC_LINES: usize = 5;
/// Lines of the console to show on failure.
const CONSOLE_LINES: usize = 40;

/// One `@@ BEGIN name` .. `@@ END name rc=N` frame of the results port.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Section {
    /// Frame name (`doctor`, `test:<name>`).
    pub name: String,
    /// Everything between the markers.
    pub body: String,
    /// Exit code from the END marker; `None` if the frame never ended.
    pub rc: Option<i32>,
    /// Host time of the BEGIN marker.
    pub begin: Option<Duration>,
    /// Host time of the END marker.
    pub end: Option<Duration>,
}

/// The parsed results port.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Host time at which `/init` reported in.
    pub init_start: Option<Duration>,
    /// `uname -r` in the guest.
    pub kernel: Option<String>,
    /// CPUs the guest sees.
    pub cpus: Option<u32>,
    /// Guest uptime when `/init` had mounted everything.
    pub uptime: Option<String>,
    /// Setup steps that failed.
    pub setup_fail: Vec<String>,
    /// Frames in order.
    pub sections: Vec<Section>,
    /// Whether `@@ INIT_END` arrived.
    pub init_end: bool,
}

/// Parses the results port text; `times` are the host times of its marker lines, in order.
pub fn parse(text: &str, times: &[Duration]) -> Transcript {
    let mut t = Transcript::default();
    let mut times = times.iter().copied();
    let mut open: Option<Section> = None;
    for line in text.split_inclusive('\n') {
        let Some(marker) = line.trim_end().strip_prefix("@@ ") else {
            if let Some(s) = open.as_mut() {
                s.body.push_str(line);
            }
            continue;
        };
        let at = times.next();
        let (word, rest) = marker.split_once(' ').unwrap_or((marker, ""));
        match word {
            "INIT_START" => t.init_start = at,
            "KERNEL" => t.kernel = Some(rest.to_string()),
            "CPUS" => t.cpus = rest.trim().parse().ok(),
            "UPTIME" => t.uptime = Some(rest.to_string()),
            "SETUP_FAIL" => t.setup_fail.push(rest.to_string()),
            "INIT_END" => t.init_end = true,
            "BEGIN" => {
                if let Some(s) = open.take() {
                    t.sections.push(s);
                }
                open = Some(Section {
                    name: rest.to_string(),
                    begin: at,
                    ..Section::default()
                });
            }
            "END" => {
                let (name, rc) = rest.rsplit_once(" rc=").unwrap_or((rest, ""));
                let mut s = match open.take() {
                    Some(s) if s.name == name => s,
                    other => {
                        if let Some(s) = other {
                            t.sections.push(s);
                        }
                        Section {
                            name: name.to_string(),
                            ..Section::default()
                        }
                    }
                };
                // `/init` starts each END marker with a newline in case the output did not end
                // with one; drop the blank line that leaves.
                if s.body.ends_with("\n\n") || s.body == "\n" {
                    s.body.pop();
                }
                s.rc = Some(rc.trim().parse().unwrap_or(-1));
                s.end = at;
                t.sections.push(s);
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        t.sections.push(s);
    }
    t
}

/// The libtest summary line of one test executable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Libtest {
    /// `ok` (true) or `FAILED`.
    pub ok: bool,
    /// Tests passed.
    pub passed: u32,
    /// Tests failed.
    pub failed: u32,
    /// Tests ignored.
    pub ignored: u32,
    /// Tests left out by the name filter.
    pub filtered: u32,
}

/// Finds and parses the last `test result:` line of `output`.
pub fn libtest_summary(output: &str) -> Option<Libtest> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("test result: "))?;
    let mut r = Libtest {
        ok: line.starts_with("ok."),
        ..Libtest::default()
    };
    for part in line.split(['.', ';']) {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        match what {
            "passed" => r.passed = n,
            "failed" => r.failed = n,
            "ignored" => r.ignored = n,
            "filtered" => r.filtered = n,
            _ => {}
        }
    }
    Some(r)
}

/// What the run was, for the summary header.
#[derive(Debug)]
pub struct RunInfo<'a> {
    /// `6.1` or `6.12`.
    pub series: &'a str,
    /// Package and version booted.
    pub package: String,
    /// Whether the ELF vmlinux was booted through PVH.
    pub pvh: bool,
    /// `-smp`.
    pub cpus: u32,
    /// `v1`, `v1-cpuset` or `v2`.
    pub cgroup: &'a str,
    /// Test executables that had to run, by guest name.
    pub tests: Vec<String>,
    /// Whether the overhead benchmark had to run.
    pub bench: bool,
    /// Host wall time of the payload build.
    pub build: Duration,
    /// Limit QEMU ran under.
    pub timeout: Duration,
}

/// The verdict and its human summary.
#[derive(Debug)]
pub struct Verdict {
    /// Whether the run passed.
    pub pass: bool,
    /// One line per reason for failing, first one first.
    pub problems: Vec<String>,
    /// Text printed to the terminal and saved as `summary.txt`.
    pub summary: String,
}

/// Judges the run in `run_dir`, writes `doctor.json`, `tests/<name>.log` and `summary.txt`
/// there, and returns the verdict.
pub fn judge(run_dir: &Path, info: &RunInfo<'_>, outcome: &Outcome) -> Result<Verdict> {
    let results = fs::read(run_dir.join(super::qemu::RESULTS_LOG)).unwrap_or_default();
    let results = String::from_utf8_lossy(&results);
    let console = fs::read(run_dir.join(super::qemu::CONSOLE_LOG)).unwrap_or_default();
    let console = String::from_utf8_lossy(&console);
    let t = parse(&results, &outcome.marker_times);

    let mut problems = Vec::new();
    let mut details = String::new();
    if outcome.timed_out {
        let last = t
            .sections
            .last()
            .map_or("before any test".to_string(), |s| format!("in {}", s.name));
        problems.push(format!(
            "timed out after {} s ({last})",
            info.timeout.as_secs()
        ));
    }
    if let Some(status) = outcome.status.filter(|s| !s.success()) {
        let log = fs::read_to_string(run_dir.join(super::qemu::QEMU_LOG)).unwrap_or_default();
        let first = log
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        problems.push(format!("QEMU exited with {status}: {}", first.trim()));
    }
    let fatal = console
        .lines()
        .find(|l| FATAL_CONSOLE.iter().any(|p| l.contains(p)));
    if let Some(first) = fatal {
        problems.push(format!("kernel console: {}", first.trim()));
    }
    if t.init_start.is_none() {
        problems.push("the guest /init never reported in on ttyS1".into());
    }
    for step in &t.setup_fail {
        problems.push(format!("guest setup step failed: {step}"));
    }
    if t.init_start.is_some() && !t.init_end && !outcome.timed_out {
        problems.push("the guest stopped before @@ INIT_END".into());
    }

    let tests_dir = run_dir.join("tests");
    fs::create_dir_all(&tests_dir).with_context(|| format!("creating {}", tests_dir.display()))?;
    let mut rows = String::new();
    for name in &info.tests {
        let key = format!("test:{name}");
        let section = t.sections.iter().find(|s| s.name == key);
        let Some(s) = section else {
            problems.push(format!("{name}: never started"));
            let _ = writeln!(
                rows,
                "  {name:<28} {:>6} {:>6} {:>7} {:>8}  not run",
                "-", "-", "-", "-"
            );
            continue;
        };
        let log = tests_dir.join(format!("{name}.log"));
        fs::write(&log, &s.body).with_context(|| format!("writing {}", log.display()))?;
        let summary = libtest_summary(&s.body);
        let wall = match (s.begin, s.end) {
            (Some(b), Some(e)) => format!("{:.1} s", (e - b).as_secs_f64()),
            _ => "-".into(),
        };
        let verdict = match (s.rc, &summary) {
            (Some(0), Some(sum)) if sum.ok && sum.filtered > 0 => {
                format!("ok ({} filtered out)", sum.filtered)
            }
            (Some(0), Some(sum)) if sum.ok => "ok".to_string(),
            (Some(0), _) => {
                problems.push(format!(
                    "{name}: exited 0 without a `test result: ok.` line"
                ));
                "no summary".into()
            }
            (Some(rc), _) => {
                problems.push(format!("{name}: exit code {rc}"));
                format!("FAILED rc={rc}")
            }
            (None, _) => {
                problems.push(format!("{name}: did not finish"));
                "did not finish".into()
            }
        };
        let sum = summary.unwrap_or_default();
        let _ = writeln!(
            rows,
            "  {name:<28} {:>6} {:>6} {:>7} {wall:>8}  {verdict}",
            sum.passed, sum.failed, sum.ignored
        );
        if !verdict.starts_with("ok") {
            let _ = writeln!(details, "--- output of {name} ({}) ---", log.display());
            details.push_str(&failure_excerpt(&s.body));
        }
    }

    let bench = if info.bench {
        bench_output(run_dir, &t, &mut problems)?
    } else {
        String::new()
    };
    let doctor = doctor_line(run_dir, &t)?;
    let pass = problems.is_empty();
    if !pass {
        details.push_str(&console_excerpt(&console));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "vm-test {}: {} (kernel {}, {}{}, {} CPUs{}, cgroup {})",
        info.series,
        if pass { "PASS" } else { "FAIL" },
        t.kernel.as_deref().unwrap_or("?"),
        info.package,
        if info.pvh {
            ", PVH vmlinux"
        } else {
            ", bzImage"
        },
        info.cpus,
        match t.cpus {
            Some(n) if n != info.cpus => format!(" requested, guest saw {n}"),
            _ => String::new(),
        },
        info.cgroup,
    );
    let _ = writeln!(
        out,
        "  build {:.1} s, QEMU start to /init {}, guest uptime then {} s, QEMU total {:.1} s",
        info.build.as_secs_f64(),
        t.init_start
            .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        t.uptime.as_deref().unwrap_or("-"),
        outcome.wall.as_secs_f64(),
    );
    let _ = writeln!(out, "  {doctor}");
    let _ = writeln!(
        out,
        "  {:<28} {:>6} {:>6} {:>7} {:>8}",
        "test executable", "passed", "failed", "ignored", "wall"
    );
    out.push_str(&rows);
    out.push_str(&bench);
    for p in &problems {
        let _ = writeln!(out, "  problem: {p}");
    }
    if !details.is_empty() {
        out.push_str(&details);
    }
    let _ = writeln!(out, "  run dir: {}", run_dir.display());
    fs::write(run_dir.join("summary.txt"), &out).context("writing summary.txt")?;
    Ok(Verdict {
        pass,
        problems,
        summary: out,
    })
}

/// Saves the benchmark's output as `bench.txt` and returns it indented for the summary; a
/// benchmark that did not run or failed is a problem.
fn bench_output(run_dir: &Path, t: &Transcript, problems: &mut Vec<String>) -> Result<String> {
    let Some(s) = t.sections.iter().find(|s| s.name == "bench") else {
        problems.push("bench: never started".into());
        return Ok(String::new());
    };
    let path = run_dir.join("bench.txt");
    fs::write(&path, &s.body).with_context(|| format!("writing {}", path.display()))?;
    match s.rc {
        Some(0) => {}
        Some(rc) => problems.push(format!("bench: exit code {rc}")),
        None => problems.push("bench: did not finish".into()),
    }
    let mut out = format!("  bench ({}):\n", path.display());
    for line in s.body.trim_end().lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// Saves the doctor's output and returns its one-line report.
fn doctor_line(run_dir: &Path, t: &Transcript) -> Result<String> {
    let Some(s) = t.sections.iter().find(|s| s.name == "doctor") else {
        return Ok("doctor: did not run".into());
    };
    let path = run_dir.join("doctor.json");
    fs::write(&path, &s.body).with_context(|| format!("writing {}", path.display()))?;
    let json = s.body.trim_start().starts_with(['{', '[']);
    let stderr = t
        .sections
        .iter()
        .find(|s| s.name == "doctor.stderr")
        .and_then(|s| s.body.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("");
    Ok(match s.rc {
        Some(0) if json => format!("doctor: ok, {} B of JSON in doctor.json", s.body.len()),
        Some(0) => "doctor: exited 0 but printed no JSON (not judged)".to_string(),
        rc => format!(
            "doctor: FAILED rc={} (not judged): {}",
            rc.map_or("?".into(), |r| r.to_string()),
            stderr.trim()
        ),
    })
}

/// The part of a failing test executable's output worth reading: each panic's location and
/// message (backtraces stay in the log file), then libtest's closing list of failed tests and
/// the result line. Without panics (a crash, a hang, a non-libtest failure): the tail.
fn failure_excerpt(body: &str) -> String {
    let lines: Vec<&str> = body.lines().collect();
    let mut out = String::new();
    let mut panics = 0;
    for (i, line) in lines.iter().enumerate() {
        if !(line.starts_with("thread '") && line.contains(" panicked at ")) {
            continue;
        }
        panics += 1;
        if panics > MAX_PANICS {
            continue;
        }
        let _ = writeln!(out, "{line}");
        let message = lines[i + 1..]
            .iter()
            .take_while(|l| !l.is_empty() && !l.starts_with("stack backtrace:"))
            .take(PANIC_LINES);
        for l in message {
            let _ = writeln!(out, "    {l}");
        }
    }
    if panics > MAX_PANICS {
        let _ = writeln!(out, "[{} more panics in the log]", panics - MAX_PANICS);
    }
    match lines.iter().rposition(|l| *l == "failures:") {
        Some(last) if panics > 0 => {
            out.push_str(&lines[last..].join("\n"));
            out.push('\n');
        }
        _ => {
            out.push_str(&lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n"));
            out.push('\n');
        }
    }
    out
}

/// The console lines worth reading: from the first fatal line on, or the tail.
fn console_excerpt(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let first_fatal = lines
        .iter()
        .position(|l| FATAL_CONSOLE.iter().any(|p| l.contains(p)));
    let (from, what) = match first_fatal {
        Some(i) => (i, "from the first fatal line"),
        None => (lines.len().saturating_sub(CONSOLE_LINES), "last lines"),
    };
    let to = (from + CONSOLE_LINES).min(lines.len());
    let mut out = format!("--- kernel console ({what}) ---\n");
    out.push_str(&lines[from..to].join("\n"));
    out.push('\n');
    if to < lines.len() {
        let _ = writeln!(out, "[{} more lines in console.log]", lines.len() - to);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_output_is_saved_and_its_failure_is_a_problem() {
        let dir = std::env::temp_dir().join(format!("vmtest-judge-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ok = parse(
            "@@ INIT_START\n@@ BEGIN bench\nCONFIG NS/PAGE\nbaseline 1000\n\n@@ END bench rc=0\n",
            &[],
        );
        let mut problems = Vec::new();
        let out = bench_output(&dir, &ok, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(out.contains("    baseline 1000\n"), "{out}");
        assert!(
            fs::read_to_string(dir.join("bench.txt"))
                .unwrap()
                .contains("baseline 1000")
        );
        let failed = parse("@@ BEGIN bench\noverhead: boom\n@@ END bench rc=1\n", &[]);
        bench_output(&dir, &failed, &mut problems).unwrap();
        let missing = parse("@@ INIT_START\n", &[]);
        bench_output(&dir, &missing, &mut problems).unwrap();
        assert_eq!(problems, ["bench: exit code 1", "bench: never started"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_frames_and_markers() {
        let text = "@@ INIT_START\n@@ KERNEL 6.1.0-56-amd64\n@@ CPUS 2\n@@ BEGIN test:a\n\
                    running 1 test\ntest x ... ok\n\n@@ END test:a rc=0\n@@ BEGIN test:b\npartial";
        let t = parse(text, &[Duration::from_secs(5); 6]);
        assert_eq!(t.kernel.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(t.cpus, Some(2));
        assert!(!t.init_end);
        assert_eq!(t.sections.len(), 2);
        assert_eq!(t.sections[0].body, "running 1 test\ntest x ... ok\n");
        assert_eq!(t.sections[0].rc, Some(0));
        assert_eq!(t.sections[1].rc, None);
        assert_eq!(t.sections[1].body, "partial");
    }

    #[test]
    fn failure_excerpt_lists_panics_and_the_final_list() {
        let body = "running 2 tests\ntest a ... FAILED\n\nfailures:\n\n---- a stdout ----\n\n\
                    thread 'a' (7) panicked at tests/x.rs:3:5:\nboom\nstack backtrace:\n   0: x\n\n\
                    failures:\n    a\n\ntest result: FAILED. 0 passed; 1 failed\n";
        assert_eq!(
            failure_excerpt(body),
            "thread 'a' (7) panicked at tests/x.rs:3:5:\n    boom\n\
             failures:\n    a\n\ntest result: FAILED. 0 passed; 1 failed\n"
        );
        assert_eq!(
            failure_excerpt("running 1 test\ntest x ... "),
            "running 1 test\ntest x ... \n"
        );
    }

    #[test]
    fn parses_libtest_summary() {
        let out = "test a ... ok\n\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; \
                   2 filtered out; finished in 0.50s\n";
        assert_eq!(
            libtest_summary(out),
            Some(Libtest {
                ok: true,
                passed: 3,
                failed: 0,
                ignored: 1,
                filtered: 2
            })
        );
        let bad = "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            libtest_summary(bad).map(|s| (s.ok, s.failed)),
            Some((false, 2))
        );
        assert_eq!(libtest_summary("running 0 tests\n"), None);
    }
}
