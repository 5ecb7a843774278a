//! The documentation says what the code does: the configuration reference lists exactly the
//! keys the parser takes, every "design §N" and "invariant N" the code, the tests and the docs
//! cite is a heading of `docs/design.md`, and every local link of the README and the docs
//! resolves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The first cell of every row of the reference table: one key each.
fn table_keys() -> BTreeSet<String> {
    read("docs/configuration.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// The keys the parser takes where `yaml` puts an unknown key, read from its error (serde lists
/// every field it expected).
fn parser_keys(yaml: &str) -> Vec<String> {
    let err = pollhook::config::load_str(yaml, Path::new("/tmp/bridge.yaml"), &|_| None)
        .err()
        .unwrap_or_else(|| panic!("{yaml:?} was accepted"))
        .to_string();
    let list = err
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no field list in {err}"));
    let list = list.lines().next().unwrap_or("");
    list.split(", ")
        .map(|k| k.trim().trim_matches('`').to_owned())
        .collect()
}

/// Every key of `bridge.yaml` the parser takes is a row of `docs/configuration.md`, and every
/// row is a key the parser takes (the levels the table lists key by key; nested shapes such as
/// `paginate` or `auth` are described in their row).
#[test]
fn the_configuration_reference_matches_the_parser() {
    let table = table_keys();
    let levels = [
        ("", "zzz_unknown: 1\n"),
        ("store.", "store: { zzz_unknown: 1 }\n"),
        ("admin.", "admin: { zzz_unknown: 1 }\n"),
        ("history.", "history: { zzz_unknown: 1 }\n"),
        ("alerts.", "alerts: { zzz_unknown: 1 }\n"),
        ("defaults.", "defaults: { zzz_unknown: 1 }\n"),
        ("hosts.HOST.", "hosts: { h: { zzz_unknown: 1 } }\n"),
        (
            "destinations.NAME.",
            "destinations: { d: { zzz_unknown: 1 } }\n",
        ),
        ("sources.NAME.", "sources: { s: { zzz_unknown: 1 } }\n"),
    ];
    let mut parser = BTreeSet::new();
    for (prefix, yaml) in levels {
        for key in parser_keys(yaml) {
            parser.insert(format!("{prefix}{key}"));
        }
    }
    // A key that is a section (`store`, `sources`) is documented by its keys (`store.pool`).
    let documented =
        |key: &str| table.contains(key) || table.iter().any(|t| t.starts_with(&format!("{key}.")));
    let missing: Vec<&String> = parser.iter().filter(|k| !documented(k)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
    let unknown: Vec<&String> = table.iter().filter(|t| !parser.contains(*t)).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md lists keys the parser does not take: {unknown:?}"
    );
}

/// The files whose text may cite the design.
fn cited_in() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut dirs = vec![
        root().join("src"),
        root().join("tests"),
        root().join("docs"),
        root().join("benches"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "md")) {
                out.push(path);
            }
        }
    }
    out
}

/// Every "design §N" and "invariant N" in the code, the tests and the docs names a heading of
/// `docs/design.md` (`## §N …`, `### Invariant N: …`).
#[test]
fn every_design_reference_resolves() {
    let design = read("docs/design.md");
    let sections: BTreeSet<String> = design
        .lines()
        .filter_map(|l| l.strip_prefix("## §"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let invariants: BTreeSet<String> = design
        .lines()
        .filter_map(|l| l.strip_prefix("### Invariant "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect();
    assert!(
        sections.contains("9") && invariants.contains("6"),
        "{sections:?} {invariants:?}"
    );
    let mut unresolved = Vec::new();
    let mut cited = 0;
    for path in cited_in() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let flat = text
            .replace("\n//! ", " ")
            .replace("\n/// ", " ")
            .replace('\n', " ");
        for (needle, known) in [("design §", &sections), ("invariant ", &invariants)] {
            for (at, _) in flat.match_indices(needle) {
                let rest = &flat[at + needle.len()..];
                let id: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                // "invariant 4" cites a number; "invariants" or "invariant tests" cite none.
                if !id.starts_with(|c: char| c.is_ascii_digit()) {
                    continue;
                }
                cited += 1;
                if !known.contains(&id) {
                    unresolved.push(format!("{}: {needle}{id}", path.display()));
                }
            }
        }
    }
    assert!(
        cited > 50,
        "only {cited} references found: is the scan right?"
    );
    assert!(
        unresolved.is_empty(),
        "unresolved references: {unresolved:#?}"
    );
}

/// Every relative link of the README and the docs points at a file that exists.
#[test]
fn local_links_resolve() {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs"))
        .expect("docs")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "md") {
            pages.push(entry.path());
        }
    }
    let mut broken = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("page");
        for (at, _) in text.match_indices("](") {
            let target: String = text[at + 2..].chars().take_while(|c| *c != ')').collect();
            let target = target.split('#').next().unwrap_or("");
            if target.is_empty() || target.contains("://") {
                continue;
            }
            let dir = page.parent().expect("folder");
            if !dir.join(target).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}
