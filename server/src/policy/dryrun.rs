//! Dry run: which existing keys would a validator reject?
//!
//! Every key in the plugin's prefixes (all keys without prefixes) is judged
//! as if its current value were written again: a put of that key, value
//! and lease, the revision after the scan's revision, `host.get` reading at
//! the scan's revision. One revision for the whole scan, so the report is a
//! consistent picture even while clients write.

use super::judge::StoreReader;
use crate::pb::etcdserverpb::RangeRequest;
use crate::storage::mvcc::Store;
use bytes::Bytes;
use cairn_plugin_host::{KeyReader, LoadedPlugin, Operation, Verdict, WriteRequest};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keys read per page of the scan.
const PAGE: i64 = 256;
/// Bounds an operator may ask for.
pub const DEFAULT_MAX_KEYS: u64 = 100_000;
pub const MAX_MAX_KEYS: u64 = 10_000_000;
pub const DEFAULT_MAX_REPORTED: usize = 1000;
pub const MAX_MAX_REPORTED: usize = 100_000;
pub const MAX_DURATION: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The key as text (lossy for binary keys; `key_base64` then has it).
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plugin: String,
    pub sha256: String,
    /// The revision the keyspace was read at.
    pub revision: i64,
    pub scanned: u64,
    /// Keys the plugin denies, in key order.
    pub rejected: Vec<Finding>,
    /// Keys whose call failed (trap, timeout, ...): the failure policy
    /// would decide them.
    pub failed: Vec<Finding>,
    pub rejected_total: u64,
    pub failed_total: u64,
    /// Why the scan stopped early, if it did (the counts then cover only
    /// what was scanned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

pub struct Options {
    pub prefixes: Vec<Bytes>,
    pub revision: i64,
    pub max_keys: u64,
    pub max_reported: usize,
}

fn finding(key: &[u8], reason: String) -> Finding {
    use base64::Engine as _;
    let (text, b64) = match std::str::from_utf8(key) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(key).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(key)),
        ),
    };
    Finding {
        key: text,
        key_base64: b64,
        reason,
    }
}

/// The ranges to scan: one per prefix, prefixes covered by a shorter one
/// dropped (no key is judged twice); the whole keyspace without prefixes.
fn ranges(prefixes: &[Bytes]) -> Vec<(Bytes, Bytes)> {
    if prefixes.is_empty() {
        return vec![(Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))];
    }
    let mut sorted: Vec<&Bytes> = prefixes.iter().collect();
    sorted.sort();
    let mut kept: Vec<&Bytes> = Vec::new();
    for p in sorted {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    kept.into_iter()
        .map(|p| (p.clone(), crate::state::prefix_end(p)))
        .collect()
}

/// Runs the scan (blocking).
pub fn run(store: &Arc<Store>, plugin: &LoadedPlugin, opts: &Options) -> Result<Report, String> {
    let started = Instant::now();
    let reader: Arc<dyn KeyReader> = Arc::new(StoreReader {
        store: Arc::clone(store),
        rev: opts.revision,
    });
    let mut report = Report {
        plugin: plugin.name().to_owned(),
        sha256: plugin.sha256_hex(),
        revision: opts.revision,
        scanned: 0,
        rejected: Vec::new(),
        failed: Vec::new(),
        rejected_total: 0,
        failed_total: 0,
        truncated: None,
    };
    'ranges: for (start, end) in ranges(&opts.prefixes) {
        let mut from = start;
        loop {
            let page = RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                revision: opts.revision,
                limit: PAGE,
                ..Default::default()
            };
            let (res, _) = store
                .range(&page)
                .map_err(|e| format!("reading the keyspace at revision {}: {e}", opts.revision))?;
            for kv in &res.kvs {
                if report.scanned >= opts.max_keys {
                    report.truncated = Some(format!("stopped after {} keys", opts.max_keys));
                    break 'ranges;
                }
                if started.elapsed() > MAX_DURATION {
                    report.truncated = Some(format!(
                        "stopped after {} s ({} keys)",
                        MAX_DURATION.as_secs(),
                        report.scanned
                    ));
                    break 'ranges;
                }
                report.scanned += 1;
                let request = WriteRequest {
                    op: Operation::Put,
                    in_txn: false,
                    key: kv.key.to_vec(),
                    range_end: None,
                    value: Some(kv.value.to_vec()),
                    lease: (kv.lease != 0).then_some(kv.lease),
                    principal: None,
                    revision: opts.revision + 1,
                };
                match plugin.validate(&request, Arc::clone(&reader)) {
                    Ok(Verdict::Allow) => {}
                    Ok(Verdict::Deny(reason)) => {
                        report.rejected_total += 1;
                        if report.rejected.len() < opts.max_reported {
                            report.rejected.push(finding(&kv.key, reason));
                        }
                    }
                    Err(e) => {
                        report.failed_total += 1;
                        if report.failed.len() < opts.max_reported {
                            report.failed.push(finding(&kv.key, e.to_string()));
                        }
                    }
                }
            }
            match res.kvs.last() {
                Some(last) if res.more => {
                    let mut next = last.key.to_vec();
                    next.push(0);
                    from = Bytes::from(next);
                }
                _ => break,
            }
        }
    }
    if report.truncated.is_none() && (report.rejected.len() as u64) < report.rejected_total {
        report.truncated = Some(format!(
            "only the first {} findings are listed",
            opts.max_reported
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_drop_covered_prefixes() {
        let r = ranges(&[
            Bytes::from_static(b"/a/b/"),
            Bytes::from_static(b"/a/"),
            Bytes::from_static(b"/c/"),
        ]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0.as_ref(), b"/a/");
        assert_eq!(r[1].0.as_ref(), b"/c/");
    }
}
