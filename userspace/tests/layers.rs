//! The library's module graph points down only (issue 10): no import cycle between its top-level
//! modules, and the edges that would undo the layering are forbidden. The graph is read from the
//! source: every `crate::<module>` path (in `use` lines and inline) of every file, comments
//! left out. docs/design-notes.md draws the layers.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Top-level module of a file path relative to `src/` (`cmd/trace.rs` -> `cmd`).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Source without `//` comments (doc comments name modules in links; they are not imports).
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a source file refers to: `crate::x` anywhere, and the first names inside
/// `use crate::{x::…, y, …}` groups.
fn references(src: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let src = strip_comments(src);
    let mut out = BTreeSet::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Names at depth 0 of the group.
            let mut depth = 0;
            let mut name = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    c if depth == 0 && (c.is_ascii_alphanumeric() || c == '_') => name.push(c),
                    _ => {
                        if depth == 0 && !name.is_empty() && known.contains(&name) {
                            out.insert(std::mem::take(&mut name));
                        }
                        name.clear();
                    }
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if known.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

/// Every `.rs` file under `src_dir`, sorted.
fn rust_files(src_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![src_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn read_graph(src_dir: &Path) -> Graph {
    let files = rust_files(src_dir);
    let known: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(src_dir).unwrap()))
        .collect();
    let mut g = Graph::new();
    for f in &files {
        let m = module_of(f.strip_prefix(src_dir).unwrap());
        let refs = references(&std::fs::read_to_string(f).unwrap(), &known);
        let e = g.entry(m.clone()).or_default();
        e.extend(refs.into_iter().filter(|r| *r != m));
    }
    g
}

/// The cycles of `g` (strongly connected components of more than one module), each sorted.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    // Two modules are in one cycle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let all: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (k, r) in &all {
        let mut comp: Vec<String> = r
            .iter()
            .filter(|o| all.get(o).is_some_and(|back| back.contains(*k)))
            .cloned()
            .collect();
        if comp.is_empty() {
            continue;
        }
        if !comp.contains(k) {
            comp.push((*k).clone());
        }
        comp.sort();
        comp.dedup();
        if comp.len() > 1 && !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

/// Edges that would point up: (from, to, why).
const FORBIDDEN: &[(&str, &str, &str)] = &[
    // Only the command layer (and main) may use the argument types and the dispatcher.
    ("*", "cmd", "the command layer is the top"),
    ("*", "cli", "argument types belong to the command layer"),
    // Renderers render finished reports: they never load, attach or read probes.
    ("plot", "attach", "a renderer never attaches"),
    ("plot", "tracer", "a renderer never attaches"),
    ("plot", "charge", "a renderer never attaches"),
    ("plot", "collect", "a renderer never reads probes"),
    ("plot", "residue", "a renderer never reads the kernel"),
    // The charts know no experiment: each experiment draws its own plots with them.
    (
        "plot",
        "experiment",
        "experiments draw with the charts, not the reverse",
    ),
    // The bottom: plain helpers that import nothing above them.
    ("units", "*", "value parsers are a leaf"),
    ("safefs", "*", "safe file creation is a leaf"),
    ("undo", "*", "the undo registry is a leaf"),
    ("process", "*", "the process clock is a leaf"),
    ("plan", "*", "the probe plan is pure"),
    ("collect", "*", "plain snapshots of the maps"),
];

const ALLOWED_ABOVE_CLI: &[&str] = &["cmd", "main", "lib"];

/// Whole layers that must not use the ones named with them: (layer, what it must not use, why).
const LAYERS: &[(&[&str], &[&str], &str)] = &[
    (
        &["kernel", "cgroup", "workload"],
        &[
            "experiment",
            "trace",
            "doctor",
            "export",
            "plot",
            "explain",
            "ledger",
            "residue",
            "attach",
            "tracer",
            "charge",
            "collect",
        ],
        "the base (kernel facts, cgroups, the workload) uses nothing above it",
    ),
    (
        &["ledger"],
        &[
            "experiment",
            "trace",
            "doctor",
            "export",
            "plot",
            "explain",
            "attach",
            "tracer",
            "charge",
            "collect",
        ],
        "the ledger takes readings: it neither loads programs nor presents",
    ),
    (
        &["attach", "tracer", "charge", "collect", "probes"],
        &[
            "experiment",
            "trace",
            "doctor",
            "export",
            "plot",
            "explain",
            "ledger",
        ],
        "the probe layer does not know its users",
    ),
    (
        &["explain", "residue"],
        &["experiment", "trace", "doctor", "export", "plot"],
        "explain is used by commands and experiments, never the reverse",
    ),
];

fn violations(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in g {
        for to in tos {
            for (f, t, why) in FORBIDDEN {
                let from_hit = *f == "*" || f == from;
                let to_hit = *t == "*" || t == to;
                if !(from_hit && to_hit) {
                    continue;
                }
                if *f == "*" && ALLOWED_ABOVE_CLI.contains(&from.as_str()) {
                    continue;
                }
                if *t == "*" && *f == "plan" && to == "probes" {
                    continue;
                }
                out.push(format!("{from} -> {to}: {why}"));
            }
            for (layer, above, why) in LAYERS {
                if layer.contains(&from.as_str()) && above.contains(&to.as_str()) {
                    out.push(format!("{from} -> {to}: {why}"));
                }
            }
        }
    }
    out
}

#[test]
fn the_library_has_no_import_cycle_and_no_upward_edge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = read_graph(&src);
    assert!(g.len() > 20, "read only {} modules", g.len());
    let c = cycles(&g);
    assert!(c.is_empty(), "import cycles: {c:?}");
    let v = violations(&g);
    assert!(v.is_empty(), "forbidden edges:\n{}", v.join("\n"));
}

/// `anyhow` is the binary's edge only (`main.rs`, `cmd/`): the library returns typed errors
/// (docs/design-notes.md, "Errors"). Any mention counts, comments included.
#[test]
fn anyhow_is_only_at_the_binary_edge() {
    let name = "anyhow";
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    assert!(files.len() > 50, "read only {} files", files.len());
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel == Path::new("main.rs") || rel.starts_with("cmd") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains(name) {
                found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{name} outside main.rs and cmd/ (the library returns typed errors):\n{}",
        found.join("\n")
    );
}

fn graph(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (a, b) in edges {
        g.entry(a.to_string()).or_default().insert(b.to_string());
        g.entry(b.to_string()).or_default();
    }
    g
}

#[test]
fn the_check_finds_cycles_and_forbidden_edges() {
    let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    assert!(cycles(&graph(&[("a", "b"), ("b", "c")])).is_empty());
    let v = violations(&graph(&[
        ("trace", "cli"),
        ("cmd", "cli"),
        ("plot", "attach"),
        ("units", "cgroup"),
        ("explain", "cmd"),
        ("kernel", "ledger"),
        ("ledger", "charge"),
    ]));
    assert_eq!(
        v,
        [
            "explain -> cmd: the command layer is the top",
            "kernel -> ledger: the base (kernel facts, cgroups, the workload) uses nothing above it",
            "ledger -> charge: the ledger takes readings: it neither loads programs nor presents",
            "plot -> attach: a renderer never attaches",
            "trace -> cli: argument types belong to the command layer",
            "units -> cgroup: value parsers are a leaf",
        ]
    );
}

#[test]
fn references_are_read_from_use_groups_and_paths() {
    let known: BTreeSet<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let src = "use crate::{a::X, b, c::{self, Y}};\nfn f() { crate::d::g(); } // crate::e\n";
    let r = references(src, &known);
    assert_eq!(
        r,
        ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect()
    );
}
