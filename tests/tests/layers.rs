//! The module graph of `memcg-drift` (issue 10): no import cycle between its top-level modules,
//! and the edges that would make a lower layer depend on a higher one are refused.
//!
//! Read from the sources as text: every `crate::<module>` path in code (comments and doc
//! comments do not count) is an edge from the file's top-level module to `<module>`, and so is
//! every module named inside a `use crate::{...}` group. No kernel needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Top-level module -> the top-level modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../userspace/src")
}

/// The crate's top-level modules, from `lib.rs`.
fn top_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal would cut the line short: only a lost edge, and
            // none of this crate's `crate::` paths follow one on the same line.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module names used by `text` (its `crate::` paths and `use crate::{...}` groups).
fn used(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c, d::{e, f}}`: the names at depth 0 of the group.
            let mut depth = 0;
            let mut start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident(&group[k..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| modules.contains(m));
    out
}

fn graph() -> Graph {
    let modules = top_modules();
    assert!(modules.len() > 10, "lib.rs lists {modules:?}");
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g = Graph::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        if !modules.contains(&top) {
            continue; // lib.rs, main.rs
        }
        let text = code(&std::fs::read_to_string(&f).unwrap());
        let entry = g.entry(top.clone()).or_default();
        entry.extend(used(&text, &modules).into_iter().filter(|m| *m != top));
    }
    g
}

/// A cycle through the graph, if there is one (depth-first search).
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(g, n, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_parser_sees_groups_paths_and_not_comments() {
    let modules: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
    let text = code(
        "use crate::{a::X, b, c::{d, e::Y}};\nfn f() { crate::d::g(); } // crate::e::h\n/// [`crate::e`]\n",
    );
    assert_eq!(
        used(&text, &modules),
        ["a", "b", "c", "d"].map(String::from).into()
    );
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap().len(), 4);
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let g = graph();
    assert!(
        g.values().map(BTreeSet::len).sum::<usize>() > 20,
        "too few edges read: {g:?}"
    );
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle: {}\n{g:#?}", c.join(" -> "));
    }
}

#[test]
fn lower_layers_do_not_use_higher_ones() {
    let g = graph();
    // What runs or presents things: nothing below may use it.
    let top = [
        "cmd",
        "cli",
        "experiment",
        "trace",
        "doctor",
        "export",
        "plot",
    ];
    // What loads and attaches programs, or reads their maps.
    let probes = ["attach", "tracer", "charge", "collect", "probes"];
    let rules: [(&[&str], &[&str]); 4] = [
        // Facts, cgroups, files and units are the base: they use none of the above.
        (
            &[
                "kernel", "cgroup", "safefs", "units", "plan", "process", "workload",
            ],
            &[&top[..], &probes[..], &["explain", "ledger", "residue"]].concat(),
        ),
        // The ledger (analysis) takes readings; it never loads programs or presents.
        (&["ledger"], &[&top[..], &probes[..], &["explain"]].concat()),
        // The probe layer does not know who uses it.
        (&probes, &[&top[..], &["explain", "ledger"]].concat()),
        // `explain` is used by commands and experiments, not the reverse.
        (&["explain", "residue"], &top),
    ];
    let mut bad = Vec::new();
    for (from, forbidden) in rules {
        for f in from {
            for t in g.get(*f).into_iter().flatten() {
                if forbidden.contains(&t.as_str()) {
                    bad.push(format!("{f} -> {t}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "forbidden edges: {bad:?}\n{g:#?}");
}
