//! The server's structural invariant, checked: its top-level modules form
//! layers, and a module may name (`crate::x`) only modules in layers below
//! its own. Leaves import nothing above them; `transport` and `policy`
//! know no server; the server knows neither the API nor the composition
//! root; only `boot` wires everything (docs/architecture.md).
//!
//! The check reads the sources: every `crate::<module>` outside comments
//! and test code. It runs as a unit test of this crate (so in `cargo xtask
//! test` and CI) and as `cargo xtask layers`, which prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module in layer `n` may import modules of
/// layers `< n` only. The root files (`lib.rs`, `main.rs`) are above all.
pub const LAYERS: &[&[&str]] = &[
    // Infrastructure every layer may use.
    &[
        "pb", "raftwire", "metrics", "crash", "ids", "logging", "files",
    ],
    &["tls"],
    // Listeners, the HTTP client, Go's HTTP rules, the :authority rewriter.
    &["net"],
    // A new member's initial cluster from etcd's v2 discovery or DNS SRV.
    &["discovery"],
    &["auth"],
    &["storage"],
    &["v2"],
    // Importing a stopped etcd member's data dir: storage, v2 replay.
    &["etcd_datadir"],
    // The client-facing error contract (converts auth and storage errors).
    &["error"],
    // Deterministic semantics: txn, lease table, member table.
    &["state"],
    &["transport"],
    &["policy"],
    &["etcdserver"],
    &["api"],
    &["cli"],
    // The composition root, and the fuzz targets' entry points.
    &["boot", "fuzz_api"],
];

/// The layer of a top-level module, if it has one.
pub fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// One import that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
}

/// Every `crate::<module>` edge in `src` (a crate's `src` folder), by
/// importing module; test code and comments left out.
pub fn edges(src: &Path) -> std::io::Result<Vec<(String, usize, String, String)>> {
    let mut out = Vec::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let Some(from) = top_module(rel) else {
            continue;
        };
        let name = rel.to_string_lossy().replace('\\', "/");
        if name.ends_with("tests.rs") || name.contains("/tests/") {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        for (i, line) in code_lines(&text) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                let after = &rest[at + "crate::".len()..];
                let target: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `cairn_config::x` and the like end in `crate::` too.
                let before = rest[..at].chars().last();
                let is_path = before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
                if is_path && !target.is_empty() && target != from {
                    out.push((name.clone(), i + 1, from.clone(), target));
                }
                rest = after;
            }
        }
    }
    Ok(out)
}

/// The imports that go sideways or up.
pub fn violations(src: &Path) -> std::io::Result<Vec<Violation>> {
    let mut bad = Vec::new();
    for (file, line, from, to) in edges(src)? {
        let ok = match (layer_of(&from), layer_of(&to)) {
            (Some(f), Some(t)) => t < f,
            // A module missing from the table is a violation too, so the
            // table cannot silently fall behind the code.
            _ => false,
        };
        if !ok {
            bad.push(Violation {
                file,
                line,
                from,
                to,
            });
        }
    }
    bad.sort();
    Ok(bad)
}

/// `cargo xtask layers`: the module graph and any violation.
pub fn run(src: &Path) -> anyhow::Result<std::process::ExitCode> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, _, from, to) in edges(src)? {
        graph.entry(from).or_default().insert(to);
    }
    for (n, layer) in LAYERS.iter().enumerate() {
        for m in *layer {
            let deps: Vec<&str> = graph
                .get(*m)
                .map(|d| d.iter().map(String::as_str).collect())
                .unwrap_or_default();
            println!("{n:>2} {m:<11} -> {}", deps.join(", "));
        }
    }
    let bad = violations(src)?;
    for v in &bad {
        println!(
            "violation: {}:{}: {} imports {}",
            v.file, v.line, v.from, v.to
        );
    }
    Ok(if bad.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// The server crate's sources, from this crate's manifest directory.
pub fn server_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("server")
        .join("src")
}

fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs");
    match name {
        "lib" | "main" => None,
        n => Some(n.to_string()),
    }
}

fn rust_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The lines of code (0-based numbers), without comments and without
/// everything from the first `#[cfg(test)]` on (test modules sit at the end
/// of a file in this code base).
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is not a comment; good enough
            // for spotting paths, which never contain one.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push((i, code));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_imports_downward_only() {
        let bad = violations(&server_src()).expect("read server/src");
        assert!(
            bad.is_empty(),
            "imports that break the layering (see xtask/src/layers.rs):\n{}",
            bad.iter()
                .map(|v| format!("  {}:{}: {} imports {}", v.file, v.line, v.from, v.to))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn the_check_sees_an_upward_import() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        std::fs::write(
            dir.join("storage/mod.rs"),
            "// crate::api in a comment is fine\nuse crate::pb::X;\nfn f() { crate::api::g(); }\n#[cfg(test)]\nmod t { use crate::boot; }\n",
        )
        .unwrap();
        std::fs::write(dir.join("lib.rs"), "pub mod storage;\n").unwrap();
        let bad = violations(&dir).unwrap();
        assert_eq!(
            bad,
            vec![Violation {
                file: "storage/mod.rs".into(),
                line: 3,
                from: "storage".into(),
                to: "api".into()
            }]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
