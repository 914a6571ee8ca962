//! The crate's layering, checked on its source: the top-level modules' `crate::` references form
//! a graph without cycles, and the domain core never reaches an edge (HTTP, gateways, sandbox,
//! CLI) or an edge framework (actix-web, utoipa), directly or through another module.
//!
//! A reference is any `crate::name` outside a comment, so a `use` line, a path in code and a test
//! module all count: a core module's tests may not lean on the edges either.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The domain core: the rules and formats of the vault.
const CORE: &[&str] = &["pan", "token", "crypto", "store", "audit", "vault", "keys"];
/// The edges: what talks to the outside world.
const EDGES: &[&str] = &["http", "gateway", "sandbox", "cli", "openapi"];
/// Frameworks that belong to the edges only.
const EDGE_CRATES: &[&str] = &["actix_web", "utoipa"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/vault/tokens.rs` -> `vault`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Each identifier that follows `crate::` on a line, and each edge crate the line names.
fn references(line: &str) -> (Vec<String>, Vec<&'static str>) {
    let code = line.trim_start();
    if code.starts_with("//") {
        return (Vec::new(), Vec::new());
    }
    let mut modules = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        modules.push(name);
        rest = after;
    }
    let crates = EDGE_CRATES
        .iter()
        .copied()
        .filter(|c| {
            code.match_indices(c).any(|(i, _)| {
                let before = code[..i].chars().next_back();
                let after = code[i + c.len()..].chars().next();
                !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_') && after == Some(':')
            })
        })
        .collect();
    (modules, crates)
}

struct Graph {
    /// module -> modules it references (file:line of the first reference, for the message).
    edges: BTreeMap<String, BTreeMap<String, String>>,
    /// module -> edge crates it names, with where.
    crates: BTreeMap<String, Vec<String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut g = Graph {
        edges: BTreeMap::new(),
        crates: BTreeMap::new(),
    };
    for file in &files {
        let from = module_of(&src, file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", file.strip_prefix(&src).unwrap().display(), n + 1);
            let (refs, crates) = references(line);
            for to in refs {
                if to != from && modules.contains(&to) {
                    let e = g.edges.entry(from.clone()).or_default();
                    e.entry(to).or_insert_with(|| at.clone());
                }
            }
            for c in crates {
                g.crates
                    .entry(from.clone())
                    .or_default()
                    .push(format!("{c} at {at}"));
            }
        }
    }
    g
}

/// Every module reachable from `start`, with the path that reaches it.
fn reachable(g: &Graph, start: &str) -> BTreeMap<String, Vec<String>> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    while let Some((m, path)) = stack.pop() {
        for to in g.edges.get(&m).into_iter().flat_map(|e| e.keys()) {
            if !seen.contains_key(to) {
                let mut p = path.clone();
                p.push(to.clone());
                seen.insert(to.clone(), p.clone());
                stack.push((to.clone(), p));
            }
        }
    }
    seen
}

fn describe(g: &Graph, path: &[String]) -> String {
    path.windows(2)
        .map(|w| format!("{} -> {} ({})", w[0], w[1], g.edges[&w[0]][&w[1]]))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn the_modules_form_no_cycle() {
    let g = graph();
    let mut cycles = Vec::new();
    for m in g.edges.keys() {
        if let Some(path) = reachable(&g, m).get(m) {
            cycles.push(describe(&g, path));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_core_never_reaches_an_edge() {
    let g = graph();
    let mut found = Vec::new();
    for core in CORE {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        assert!(
            src.join(format!("{core}.rs")).exists() || src.join(core).is_dir(),
            "no core module {core}: is the list of core modules current?"
        );
        let reach = reachable(&g, core);
        for edge in EDGES {
            if let Some(path) = reach.get(*edge) {
                found.push(format!("{core} reaches {edge}: {}", describe(&g, path)));
            }
        }
        let inner = std::iter::once(core.to_string()).chain(reach.keys().cloned());
        for m in inner.filter(|m| !EDGES.contains(&m.as_str())) {
            for c in g.crates.get(&m).into_iter().flatten() {
                found.push(format!("{core} depends on {m}, which uses {c}"));
            }
        }
    }
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "the core reaches the edges:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_references() {
    // The parser itself: a use line, a path in code, a comment, an edge crate.
    assert_eq!(references("use crate::vault::{Ctx, Vault};").0, ["vault"]);
    assert_eq!(
        references("let x = crate::pan::luhn(crate::token::new());").0,
        ["pan", "token"]
    );
    assert!(references("/// see [`crate::http::Problem`]").0.is_empty());
    assert_eq!(references("#[derive(utoipa::ToSchema)]").1, ["utoipa"]);
    assert!(references("let not_utoipa_x = 1;").1.is_empty());
    // And the graph of this very crate has the edges it must have.
    let g = graph();
    assert!(g.edges["http"].contains_key("vault"));
    assert!(g.edges["vault"].contains_key("store"));
}

/// The README's code map, in its order: the first column's module names, row by row.
fn code_map() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let map = readme
        .split("### Code map")
        .nth(1)
        .expect("README has a Code map section");
    map.lines()
        .skip_while(|l| !l.starts_with("| module"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            let first = l.split('|').nth(1).unwrap();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_readme_code_map_is_the_layering() {
    let g = graph();
    let order = code_map();
    let rank = |m: &str| order.iter().position(|o| o == m);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for m in files.iter().map(|f| module_of(&src, f)) {
        if m != "lib" && m != "main" && rank(&m).is_none() {
            problems.push(format!("module {m} is not in the README's code map"));
        }
    }
    for (from, tos) in &g.edges {
        for (to, at) in tos {
            if let (Some(f), Some(t)) = (rank(from), rank(to))
                && t > f
            {
                problems.push(format!("{from} uses {to}, listed below it ({at})"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
