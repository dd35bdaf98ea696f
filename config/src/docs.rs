//! The table of settings in `docs/configuration.md`, generated from the
//! registry. The test fails when the committed table differs from what the
//! registry says, and prints the fresh table; run it with
//! `CAIRN_UPDATE_DOCS=1` to rewrite the file in place.

use std::fmt::Write as _;

use crate::files::yaml;
use crate::registry::{Reload, SETTINGS, Section, Setting, Status};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
const BEGIN: &str = "<!-- BEGIN SETTINGS TABLE: generated from config/src/registry.rs by `cargo test -p cairn-config docs`; do not edit by hand -->";
const END: &str = "<!-- END SETTINGS TABLE -->";

/// The Markdown between the markers: one table per help section.
fn settings_table() -> String {
    let mut out = String::new();
    for section in Section::ALL {
        let rows: Vec<&Setting> = SETTINGS.iter().filter(|s| s.section == section).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "\n### {}\n\n| Flag | Environment variable | YAML key | TOML key | Default | Status | Reload |\n|---|---|---|---|---|---|---|\n",
            section.title()
        );
        for s in rows {
            // A file cannot name further files, so `config-file` has no
            // file spelling.
            let (yaml_keys, toml_key) = if s.name == "config-file" {
                ("—".to_string(), "—".to_string())
            } else {
                let keys: Vec<String> = yaml::keys_for(s.name)
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect();
                (keys.join(" or "), format!("`{}`", s.name))
            };
            // `--help` shows some defaults as etcd prints them (an empty
            // `backend-batch-interval`); the table prefers a real value.
            let default = match s.shown_default {
                Some(shown) if !shown.is_empty() => shown,
                _ => s.default,
            };
            let default = if default.is_empty() {
                "(empty)".to_string()
            } else {
                format!("`{default}`")
            };
            let status = match s.status {
                Status::Supported => "supported".to_string(),
                Status::NotYet { what } => format!("not yet ({what})"),
                Status::NoEffect { .. } => "no effect".to_string(),
            };
            let status = if s.hidden {
                format!("{status}; hidden")
            } else {
                status
            };
            let reload = match s.reload {
                Reload::Live => "live",
                Reload::Restart => "restart",
            };
            let _ = writeln!(
                out,
                "| `--{}` | `{}` | {yaml_keys} | {toml_key} | {default} | {status} | {reload} |",
                s.name,
                s.env_var(),
            );
        }
    }
    out.push('\n');
    out
}

#[test]
fn docs_settings_table_is_up_to_date() {
    let fresh = settings_table();
    let doc =
        std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("cannot read {DOC_PATH}: {e}"));
    let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!(
            "{DOC_PATH} lacks the marker lines\n{BEGIN}\n{END}\nput them around this table:\n{fresh}"
        );
    };
    let start = begin + BEGIN.len();
    assert!(start <= end, "markers out of order in {DOC_PATH}");
    if doc[start..end] == fresh {
        return;
    }
    if std::env::var_os("CAIRN_UPDATE_DOCS").is_some() {
        let updated = format!("{}{fresh}{}", &doc[..start], &doc[end..]);
        std::fs::write(DOC_PATH, updated)
            .unwrap_or_else(|e| panic!("cannot write {DOC_PATH}: {e}"));
        return;
    }
    panic!(
        "the settings table in {DOC_PATH} is out of date; rerun with CAIRN_UPDATE_DOCS=1 or paste this between the markers:\n{fresh}"
    );
}

#[test]
fn table_lists_every_setting_once() {
    let table = settings_table();
    for s in SETTINGS {
        let needle = format!("| `--{}` |", s.name);
        assert_eq!(table.matches(&needle).count(), 1, "--{}", s.name);
    }
    assert!(table.contains("`client-transport-security.cert-file`"));
}
