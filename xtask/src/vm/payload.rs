//! The guest payload: the statically linked `memcg-drift` binary and every test executable of
//! the `integration-tests` package, built on the host for `x86_64-unknown-linux-gnu` with
//! `-C target-feature=+crt-static` (static glibc; the musl target is not available here).
//!
//! The test executables are found the way cargo reports them: `compiler-artifact` messages of
//! `--message-format=json` whose `profile.test` is true carry the path in `executable`. The
//! messages are parsed with a few string searches over cargo's fixed, compact JSON rather than
//! a JSON crate, which keeps xtask's dependencies (and the shared `Cargo.lock`) unchanged.
use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The only target the guest can run: glibc, linked statically through `crt-static`.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// One test executable to run in the guest.
#[derive(Debug, Clone)]
pub struct TestBin {
    /// Name inside the guest (`/tests/<name>`) and in reports: the cargo target name.
    pub name: String,
    /// The executable on the host.
    pub path: PathBuf,
}

/// Everything the guest runs.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The static `memcg-drift` binary, `/bin/memcg-drift` in the guest.
    pub tool: PathBuf,
    /// Test executables, in the order they run.
    pub tests: Vec<TestBin>,
    /// The overhead benchmark (`/bin/overhead` in the guest), when asked for.
    pub bench: Option<PathBuf>,
    /// Another memcg-drift build the benchmark compares with (`initramfs::ALT_TOOL`).
    pub alt_tool: Option<PathBuf>,
}

impl Payload {
    /// Keeps only the test executables named in `names` (all when it is empty), in their
    /// usual order; an unknown name is an error naming the known ones.
    pub fn select(&mut self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        for n in names {
            if !self.tests.iter().any(|t| &t.name == n) {
                let known: Vec<&str> = self.tests.iter().map(|t| t.name.as_str()).collect();
                bail!(
                    "--tests: no test executable {n:?} (known: {})",
                    known.join(", ")
                );
            }
        }
        self.tests.retain(|t| names.contains(&t.name));
        Ok(())
    }
}

/// One artifact line of `cargo --message-format=json`.
#[derive(Debug, PartialEq, Eq)]
struct Artifact {
    name: String,
    kind: String,
    test: bool,
    executable: Option<String>,
}

/// Builds `memcg-drift`; with `with_tests`, unless `prebuilt` names test executables to use
/// instead, the `integration-tests` test executables; with `with_bench`, the overhead
/// benchmark.
pub fn build(
    workspace: &std::path::Path,
    prebuilt: &[PathBuf],
    with_tests: bool,
    with_bench: bool,
) -> Result<Payload> {
    let tool = cargo_json(workspace, &["build", "--release", "-p", "memcg-drift"])?
        .into_iter()
        .find(|a| a.name == "memcg-drift" && a.kind == "bin")
        .and_then(|a| a.executable)
        .context("cargo reported no memcg-drift executable")?;

    let bench = if with_bench {
        let exe = cargo_json(
            workspace,
            &[
                "build",
                "--release",
                "-p",
                "integration-tests",
                "--bin",
                "overhead",
            ],
        )?
        .into_iter()
        .find(|a| a.name == "overhead" && a.kind == "bin")
        .and_then(|a| a.executable)
        .context("cargo reported no overhead executable")?;
        Some(PathBuf::from(exe))
    } else {
        None
    };
    let tests = if !with_tests {
        Vec::new()
    } else if prebuilt.is_empty() {
        let artifacts = cargo_json(
            workspace,
            &["test", "--release", "-p", "integration-tests", "--no-run"],
        )?;
        let mut tests = Vec::new();
        let mut seen = BTreeSet::new();
        for a in artifacts.into_iter().filter(|a| a.test) {
            let Some(exe) = a.executable else { continue };
            // A library's unit tests and an integration test may share a target name.
            let name = if seen.contains(&a.name) {
                format!("{}-{}", a.name, a.kind)
            } else {
                a.name.clone()
            };
            seen.insert(name.clone());
            tests.push(TestBin {
                name,
                path: PathBuf::from(exe),
            });
        }
        // Cargo reports artifacts in completion order; run them in a stable one.
        tests.sort_by(|a, b| a.name.cmp(&b.name));
        tests
    } else {
        prebuilt
            .iter()
            .map(|p| {
                let name = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("test executable path has no file name")?;
                Ok(TestBin {
                    name: guest_name(name),
                    path: p.clone(),
                })
            })
            .collect::<Result<_>>()?
    };
    if with_tests && tests.is_empty() {
        bail!(
            "the integration-tests package produced no test executables; \
             add tests under tests/tests/ (or pass --test-bin)"
        );
    }
    Ok(Payload {
        tool: PathBuf::from(tool),
        tests,
        bench,
        alt_tool: None,
    })
}

/// A guest file name for a prebuilt executable: cargo's `-<16 hex>` hash suffix dropped.
fn guest_name(file: &str) -> String {
    match file.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem.to_string()
        }
        _ => file.to_string(),
    }
}

/// `cargo <args> --target TARGET` with `crt-static`: the guests' build, which `cargo xtask
/// test`'s host suites share (one build of everything instead of two). Further arguments
/// (libtest's after `--`) may be appended.
pub fn static_cargo(workspace: &std::path::Path, args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !rustflags.contains("crt-static") {
        rustflags.push_str(" -C target-feature=+crt-static");
    }
    eprintln!(
        "vm-test: cargo {} --target {TARGET} (static)",
        args.join(" ")
    );
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(args)
        .args(["--target", TARGET])
        // With `--target`, RUSTFLAGS reach only target code, not build scripts or proc macros.
        .env("RUSTFLAGS", rustflags.trim())
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// Runs cargo with `args` for the static target and returns its artifact messages.
fn cargo_json(workspace: &std::path::Path, args: &[&str]) -> Result<Vec<Artifact>> {
    let out = static_cargo(workspace, args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo")?;
    if !out.status.success() {
        bail!(
            "`cargo {}` for the guest failed ({})",
            args.join(" "),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_artifact)
        .collect())
}

/// Parses one `compiler-artifact` message; other messages give `None`.
fn parse_artifact(line: &str) -> Option<Artifact> {
    if !line.starts_with("{\"reason\":\"compiler-artifact\"") {
        return None;
    }
    let target = object_after(line, "\"target\":")?;
    let profile = object_after(line, "\"profile\":")?;
    let kind = string_after(target, "\"kind\":[")?;
    let name = string_after(target, "\"name\":")?;
    let executable = match line.find("\"executable\":") {
        Some(i) if line[i + 13..].starts_with('"') => string_after(line, "\"executable\":"),
        _ => None,
    };
    Some(Artifact {
        name,
        kind,
        test: profile.contains("\"test\":true"),
        executable,
    })
}

/// The JSON object that follows `key` (braces balanced, strings respected).
fn object_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    if !rest.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The JSON string that follows `key`, unescaped.
fn string_after(text: &str, key: &str) -> Option<String> {
    let start = text.find(key)? + key.len();
    let rest = text[start..].strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_the_named_tests_in_order_and_refuses_unknown_ones() {
        let bin = |n: &str| TestBin {
            name: n.into(),
            path: PathBuf::from(format!("/t/{n}")),
        };
        let all = Payload {
            tool: PathBuf::from("/t/memcg-drift"),
            tests: vec![bin("cli"), bin("explain"), bin("stat_path")],
            bench: None,
            alt_tool: None,
        };
        let mut p = all.clone();
        p.select(&[]).unwrap();
        assert_eq!(p.tests.len(), 3);
        p.select(&["stat_path".into(), "cli".into()]).unwrap();
        let names: Vec<&str> = p.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["cli", "stat_path"]);
        let mut p = all.clone();
        let e = p.select(&["nope".into()]).unwrap_err().to_string();
        assert!(
            e.contains("\"nope\"") && e.contains("cli, explain, stat_path"),
            "{e}"
        );
    }

    #[test]
    fn parses_a_test_artifact() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#integration-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"cgroup","src_path":"/w/tests/tests/cgroup.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":1,"debug_assertions":false,"overflow_checks":false,"test":true},"features":[],"filenames":["/t/x86_64-unknown-linux-gnu/release/deps/cgroup-0123456789abcdef"],"executable":"/t/x86_64-unknown-linux-gnu/release/deps/cgroup-0123456789abcdef","fresh":true}"#;
        assert_eq!(
            parse_artifact(line),
            Some(Artifact {
                name: "cgroup".into(),
                kind: "test".into(),
                test: true,
                executable: Some(
                    "/t/x86_64-unknown-linux-gnu/release/deps/cgroup-0123456789abcdef".into()
                ),
            })
        );
    }

    #[test]
    fn library_artifact_has_no_executable() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","manifest_path":"/m","target":{"kind":["lib"],"crate_types":["lib"],"name":"memcg_drift","src_path":"/s","edition":"2024","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"3","debuginfo":1,"debug_assertions":false,"overflow_checks":false,"test":false},"features":[],"filenames":["/a.rlib"],"executable":null,"fresh":true}"#;
        let a = parse_artifact(line).expect("artifact");
        assert!(!a.test);
        assert_eq!(a.executable, None);
    }

    #[test]
    fn other_messages_are_skipped() {
        assert_eq!(
            parse_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
    }

    #[test]
    fn guest_name_drops_cargo_hash() {
        assert_eq!(guest_name("cgroup-0123456789abcdef"), "cgroup");
        assert_eq!(guest_name("my-test"), "my-test");
    }
}
