//! Cairn's TOML config file: flag names as top-level keys with native TOML
//! types, plus tables for what etcd has no flag for.
//!
//! ```toml
//! name = "infra1"
//! heartbeat-interval = 100
//! pre-vote = true
//! listen-client-urls = ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
//! grpc-keepalive-timeout = "20s"
//!
//! [plugins]   # kept as raw TOML for the plugin system
//! ```
//!
//! Durations are Go duration strings (`"20s"`); a bare integer would be
//! ambiguous between etcd's YAML nanoseconds and the milliseconds of
//! `heartbeat-interval`, so it is rejected by the duration parser with
//! "missing unit".

use std::collections::BTreeMap;

use toml::{Spanned, Value};

use super::{Collector, Duplicates, did_you_mean, line_of_offset, suggest_flag_key};
use crate::error::ConfigError;
use crate::registry;

/// The tables Cairn's TOML file defines besides flag names.
pub(crate) const PLUGINS_TABLE: &str = "plugins";

pub(super) fn parse(text: &str, out: &mut Collector<'_>) -> Result<(), ConfigError> {
    let top: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |span| line_of_offset(text, span.start));
        // The parser's message may span lines (it quotes the input); keep
        // ours to one.
        let message = e.message().trim().replace('\n', " ");
        out.error(line, format!("TOML syntax error: {message}"))
    })?;
    // In file order, so warnings come out the way the operator reads.
    let mut entries: Vec<(Spanned<String>, Spanned<Value>)> = top.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let line = line_of_offset(text, key.span().start);
        let key = key.into_inner();
        let value = value.into_inner();
        if key == PLUGINS_TABLE {
            match value {
                Value::Table(table) => out.set_plugins(table),
                _ => {
                    return Err(out.error(
                        line,
                        "plugins must be a table: write [plugins] on a line of its own",
                    ));
                }
            }
            continue;
        }
        let Some(s) = registry::lookup(&key) else {
            let message = match value {
                Value::Table(_) => unknown_table(&key),
                _ => format!(
                    "unknown key {key} ignored{}",
                    did_you_mean(suggest_flag_key(&key, &[]))
                ),
            };
            out.warn(line, message);
            continue;
        };
        let raw = to_raw(&value).map_err(|why| out.error(line, format!("{key}: {why}")))?;
        // TOML itself rejects a key given twice, so any duplicate is a bug.
        out.assign(s, Some(raw), line, &key, Duplicates::Error)?;
    }
    Ok(())
}

fn unknown_table(name: &str) -> String {
    if name.ends_with("transport-security") {
        return format!(
            "unknown section [{name}] ignored; in cairn.toml TLS settings are top-level flag names, such as cert-file = \"/etc/cairn/server.crt\""
        );
    }
    format!(
        "unknown section [{name}] ignored (cairn.toml knows [{PLUGINS_TABLE}]){}",
        did_you_mean(crate::values::closest(name, [PLUGINS_TABLE]).map(|s| format!("[{s}]")))
    )
}

/// A TOML value as raw setting text; arrays become comma-separated lists.
fn to_raw(value: &Value) -> Result<String, String> {
    match value {
        Value::Array(items) => {
            let parts: Result<Vec<String>, String> = items
                .iter()
                .map(|item| match item {
                    Value::Array(_) | Value::Table(_) => {
                        Err("a list may only hold single values".to_string())
                    }
                    other => scalar_raw(other),
                })
                .collect();
            parts.map(|p| p.join(","))
        }
        Value::Table(_) => Err("takes a single value or a list of values, not a table".to_string()),
        other => scalar_raw(other),
    }
}

fn scalar_raw(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        // No setting takes a fraction; passing the text on lets the
        // setting's own parser say what it expects instead.
        Value::Float(f) => Ok(f.to_string()),
        Value::Datetime(_) => Err("no setting takes a date or time".to_string()),
        Value::Array(_) | Value::Table(_) => Err("expected a single value".to_string()),
    }
}
