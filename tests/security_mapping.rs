//! SECURITY.md's PCI DSS mapping names, for each requirement, a test or command that exists
//! (issue 6 acceptance). This test reads the table and resolves every reference in its "shown
//! by" column: `tests/x.rs::name` must be a function of that file, `module::tests::name` a
//! function of that module's source, `module::tests` a test module, and a path a file. CI runs
//! every one of them (`cargo test`, `.ci/run`), so a reference that resolves here also passes
//! there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rows of the table under `| requirement | mechanism | shown by |`, split into cells.
fn mapping_rows(text: &str) -> Vec<Vec<String>> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("| requirement | mechanism | shown by |"))
        .skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect();
        assert_eq!(
            cells.len(),
            3,
            "a mapping row with other than 3 cells: {line}"
        );
        rows.push(cells);
    }
    rows
}

/// The `code spans` of a cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The source file of a module path such as `gateway::mask` (src/gateway/mask.rs or
/// src/gateway/mask/mod.rs).
fn module_file(path: &[&str]) -> Option<PathBuf> {
    let base = path.iter().fold(root().join("src"), |p, m| p.join(m));
    [base.with_extension("rs"), base.join("mod.rs")]
        .into_iter()
        .find(|p| p.is_file())
}

fn has_fn(file: &Path, name: &str) -> bool {
    std::fs::read_to_string(file)
        .unwrap()
        .contains(&format!("fn {name}("))
}

/// Resolves one reference; `None` if the span is not a reference to a test or a file (an HTTP
/// route, a command line).
fn resolve(span: &str) -> Option<Result<(), String>> {
    if let Some((file, name)) = span.split_once(".rs::") {
        let file = root().join(format!("{file}.rs"));
        return Some(if !file.is_file() {
            Err(format!("{span}: no file {}", file.display()))
        } else if !has_fn(&file, name) {
            Err(format!("{span}: no fn {name} in {}", file.display()))
        } else {
            Ok(())
        });
    }
    if span.starts_with("tests/") || span.starts_with("deploy/") || span.starts_with("keys/") {
        let path = root().join(span);
        return Some(if path.exists() {
            Ok(())
        } else {
            Err(format!("{span}: no such file"))
        });
    }
    let parts: Vec<&str> = span.split("::").collect();
    let at = parts.iter().position(|p| *p == "tests")?;
    let Some(file) = module_file(&parts[..at]) else {
        return Some(Err(format!("{span}: no module source")));
    };
    let text = std::fs::read_to_string(&file).unwrap();
    Some(match parts.get(at + 1) {
        None if text.contains("mod tests") => Ok(()),
        None => Err(format!("{span}: {} has no tests module", file.display())),
        Some(name) if has_fn(&file, name) => Ok(()),
        Some(name) => Err(format!("{span}: no fn {name} in {}", file.display())),
    })
}

#[test]
fn every_pci_requirement_names_a_test_or_command_that_exists() {
    let text = std::fs::read_to_string(root().join("SECURITY.md")).unwrap();
    let rows = mapping_rows(&text);
    // The requirements issue 6 lists, each the start of a row's first cell.
    for req in [
        "3.2",
        "3.3",
        "3.4",
        "3.5",
        "3.6",
        "3.7",
        "4.2",
        "6.2",
        "7.2",
        "8.3",
        "8.4-8.6",
        "10.2",
        "10.3",
        "10.4-10.7",
        "12.3.3",
    ] {
        assert!(
            rows.iter().any(|r| r[0].starts_with(req)),
            "SECURITY.md maps no requirement {req}"
        );
    }
    let mut errors = Vec::new();
    let mut resolved = 0;
    for row in &rows {
        let refs: Vec<_> = code_spans(&row[2])
            .into_iter()
            .filter_map(resolve)
            .collect();
        if refs.is_empty() {
            errors.push(format!("{}: names no test, file or command", row[0]));
        }
        for r in refs {
            match r {
                Ok(()) => resolved += 1,
                Err(e) => errors.push(format!("{}: {e}", row[0])),
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(
        resolved >= rows.len(),
        "{resolved} references for {} rows",
        rows.len()
    );
}

#[test]
fn the_resolver_refuses_what_does_not_exist() {
    for bad in [
        "tests/cli.rs::no_such_test",
        "tests/no_such_file.rs::x",
        "audit::tests::no_such_test",
        "no_such_module::tests",
        "deploy/no-such-file",
    ] {
        assert!(matches!(resolve(bad), Some(Err(_))), "{bad}");
    }
    for good in [
        "tests/cli.rs::tamper_cut_tail_is_detected",
        "audit::tests",
        "mask::tests",
        "vault::tests::audit_prune_leaves_a_signed_anchor_and_a_chain_that_verifies",
        "deploy/OPERATIONS.md",
    ] {
        assert!(matches!(resolve(good), Some(Ok(()))), "{good}");
    }
    assert!(resolve("GET /v1/sys/evidence").is_none());
}
