//! Comparing what etcdctl prints against Cairn with what it prints against
//! a real etcd 3.4.
//!
//! A golden test runs a script of etcdctl commands on a fresh cluster and
//! records each command with its stdout, stderr and exit code. Values that
//! legitimately differ between two clusters (member and cluster IDs, raft
//! term and index, database size, timings) are replaced by placeholders;
//! everything else — keys, values, revisions, versions, flags, formatting,
//! error text — must match byte for byte.
//!
//! The expected files in `tests/golden/` were produced by running the same
//! tests with `CAIRN_TEST_TARGET=etcd CAIRN_GOLDEN=record` against etcd
//! 3.4.23 (Debian's etcd-server); see docs/testing.md.

use crate::{Cluster, etcdctl_stdin};
use std::path::PathBuf;

pub struct Transcript {
    text: String,
    ids: Vec<(u64, String)>,
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

impl Transcript {
    /// Learns the cluster's IDs (member list) so they can be masked.
    pub fn new(c: &Cluster) -> Transcript {
        let out = crate::etcdctl(&c.endpoints(), &["member", "list", "-w", "json"], None);
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("member list -w json");
        let mut ids = Vec::new();
        if let Some(cid) = v["header"]["cluster_id"].as_u64() {
            ids.push((cid, "<cluster-id>".to_string()));
        }
        for m in v["members"].as_array().into_iter().flatten() {
            let id = m["ID"].as_u64().expect("member ID");
            let name = m["name"].as_str().unwrap_or("?").to_string();
            ids.push((id, format!("<id:{name}>")));
        }
        Transcript {
            text: String::new(),
            ids,
        }
    }

    /// Runs one etcdctl command (v3) and records it.
    pub fn run(&mut self, endpoints: &str, args: &[&str]) -> String {
        self.run_with_input(endpoints, args, None)
    }

    pub fn run_with_input(
        &mut self,
        endpoints: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> String {
        self.run_api(endpoints, args, input, None)
    }

    /// Runs one etcdctl command with `ETCDCTL_API=2` and records it.
    pub fn run_v2(&mut self, endpoints: &str, args: &[&str]) -> String {
        self.run_api(endpoints, args, None, Some("2"))
    }

    fn run_api(
        &mut self,
        endpoints: &str,
        args: &[&str],
        input: Option<&str>,
        api: Option<&str>,
    ) -> String {
        let out = etcdctl_stdin(endpoints, args, api, input);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let prefix = if api == Some("2") {
            "ETCDCTL_API=2 "
        } else {
            ""
        };
        self.text
            .push_str(&format!("$ {prefix}etcdctl {}\n", args.join(" ")));
        if let Some(i) = input {
            for line in i.lines() {
                self.text.push_str(&format!("< {line}\n"));
            }
        }
        self.text.push_str(&stdout);
        if !stdout.is_empty() && !stdout.ends_with('\n') {
            self.text.push('\n');
        }
        for line in stderr.lines() {
            self.text.push_str(&format!("! {line}\n"));
        }
        self.text
            .push_str(&format!("= exit {}\n\n", out.status.code().unwrap_or(-1)));
        stdout
    }

    /// Masks another cluster-chosen ID (a lease ID, say) as `label`, in hex
    /// and decimal.
    pub fn alias(&mut self, id: u64, label: &str) {
        self.ids.push((id, label.to_string()));
    }

    /// Records a command that ran elsewhere (in the background).
    pub fn record(
        &mut self,
        args: &[&str],
        input: &str,
        stdout: &str,
        stderr: &str,
        code: Option<i32>,
    ) {
        self.record_as("etcdctl", args, input, stdout, stderr, code);
    }

    /// `record` for a command that ran with `ETCDCTL_API=2`.
    pub fn record_v2(&mut self, args: &[&str], stdout: &str, stderr: &str, code: Option<i32>) {
        self.record_as("ETCDCTL_API=2 etcdctl", args, "", stdout, stderr, code);
    }

    fn record_as(
        &mut self,
        command: &str,
        args: &[&str],
        input: &str,
        stdout: &str,
        stderr: &str,
        code: Option<i32>,
    ) {
        self.text
            .push_str(&format!("$ {command} {}\n", args.join(" ")));
        for line in input.lines() {
            self.text.push_str(&format!("< {line}\n"));
        }
        self.text.push_str(stdout);
        if !stdout.is_empty() && !stdout.ends_with('\n') {
            self.text.push('\n');
        }
        for line in stderr.lines() {
            self.text.push_str(&format!("! {line}\n"));
        }
        match code {
            Some(c) => self.text.push_str(&format!("= exit {c}\n\n")),
            None => self.text.push_str("= (stopped)\n\n"),
        }
    }

    /// The transcript with cluster-specific values masked.
    pub fn normalized(&self) -> String {
        normalize(&self.text, &self.ids)
    }

    /// Compares with (or, when recording against etcd, writes) the golden
    /// file `name`.
    #[track_caller]
    pub fn check(&self, name: &str) {
        let actual = self.normalized();
        let path = golden_dir().join(format!("{name}.txt"));
        if std::env::var("CAIRN_GOLDEN").as_deref() == Ok("record") {
            assert_eq!(
                crate::target(),
                crate::Target::Etcd,
                "golden files are recorded against etcd only"
            );
            std::fs::create_dir_all(golden_dir()).expect("golden dir");
            std::fs::write(&path, &actual).expect("write golden");
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("missing golden file {}: {e}", path.display()));
        if expected != actual {
            let diff = line_diff(&expected, &actual);
            panic!(
                "etcdctl output differs from etcd's ({}):\n{diff}\n--- full output ---\n{actual}",
                path.display()
            );
        }
    }
}

fn line_diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied(), a.get(i).copied());
        if x != y {
            out.push_str(&format!(
                "line {}:\n  etcd:  {}\n  cairn: {}\n",
                i + 1,
                x.unwrap_or("<none>"),
                y.unwrap_or("<none>")
            ));
        }
    }
    out
}

/// Replaces IDs (decimal and hex), raft terms and indexes, database sizes
/// and timings with placeholders.
pub fn normalize(text: &str, ids: &[(u64, String)]) -> String {
    let mut s = text.to_string();
    // Longest representations first so that no ID is half-replaced.
    let mut reps: Vec<(String, String)> = Vec::new();
    for (id, label) in ids {
        reps.push((id.to_string(), label.clone()));
        reps.push((format!("{id:x}"), label.clone()));
        reps.push((format!("{id:016x}"), label.clone()));
    }
    reps.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    for (from, to) in reps {
        s = replace_token(&s, &from, &to);
    }
    for key in [
        "\"raft_term\":",
        "\"raftTerm\":",
        "\"raftIndex\":",
        "\"raftAppliedIndex\":",
        "\"dbSize\":",
        "\"dbSizeInUse\":",
    ] {
        s = mask_number_after(&s, key);
    }
    s = mask_table_columns(&s);
    s = mask_took(&s);
    // v2: which member leads, and the store index etcd appends to errors
    // (etcd's v2 index also counts its internal membership records).
    s = mask_token_after(&s, "isLeader=");
    s = mask_v2_error_index(&s);
    s = mask_quoted_after(&s, "\"ts\":\"");
    // Which member leads, and the client's random connection name, vary.
    s = mask_token_after(&s, "\"leader\":");
    s = mask_token_after(&s, "endpoint://client-");
    // The remaining TTL depends on timing.
    s = mask_token_after(&s, "remaining(");
    s
}

/// `Error:  100: Key not found (/x) [12]` → `... [#]`.
fn mask_v2_error_index(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let masked = body
            .strip_suffix(']')
            .and_then(|b| b.rsplit_once(" ["))
            .filter(|(head, n)| {
                head.contains("Error:") && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())
            })
            .map(|(head, _)| format!("{head} [#]"));
        match masked {
            Some(m) => {
                out.push_str(&m);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Masks the token (up to `,`, `}`, `/` or `"`) that follows `key`.
fn mask_token_after(s: &str, key: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(key) {
        let (head, tail) = rest.split_at(pos + key.len());
        out.push_str(head);
        out.push('#');
        let end = tail
            .find(|c: char| matches!(c, ',' | '}' | '/' | '"') || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Masks a quoted value such as the timestamp in etcdctl's JSON log lines.
fn mask_quoted_after(s: &str, key: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(key) {
        let (head, tail) = rest.split_at(pos + key.len());
        out.push_str(head);
        out.push('#');
        rest = match tail.find('"') {
            Some(end) => &tail[end..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Replaces `from` where it is a whole token (not part of a longer run of
/// alphanumerics), so `12` inside `123` is left alone.
fn replace_token(s: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(from) {
            let before_ok = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            let end = i + from.len();
            let after_ok = end >= s.len() || !bytes[end].is_ascii_alphanumeric();
            if before_ok && after_ok {
                out.push_str(to);
                i = end;
                continue;
            }
        }
        let ch = s[i..].chars().next().expect("char");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn mask_number_after(s: &str, key: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(key) {
        let (head, tail) = rest.split_at(pos + key.len());
        out.push_str(head);
        let digits = tail
            .char_indices()
            .take_while(|(_, c)| c.is_ascii_digit() || *c == '"')
            .count();
        out.push('#');
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// `endpoint status` tables: mask DB SIZE, RAFT TERM, RAFT INDEX and RAFT
/// APPLIED INDEX cells (and their simple-format equivalents).
fn mask_table_columns(s: &str) -> String {
    let mut out = Vec::new();
    let mut cols: Option<Vec<usize>> = None;
    for line in s.lines() {
        if line.starts_with('|') && line.contains("DB SIZE") {
            let names: Vec<&str> = line.split('|').map(str::trim).collect();
            cols = Some(
                names
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| {
                        matches!(
                            **n,
                            "DB SIZE"
                                | "IS LEADER"
                                | "RAFT TERM"
                                | "RAFT INDEX"
                                | "RAFT APPLIED INDEX"
                        )
                    })
                    .map(|(i, _)| i)
                    .collect(),
            );
            out.push(line.to_string());
            continue;
        }
        if let Some(c) = &cols
            && line.starts_with('|')
        {
            let cells: Vec<String> = line
                .split('|')
                .enumerate()
                .map(|(i, cell)| {
                    if c.contains(&i) {
                        format!(" {:>w$} ", "#", w = cell.len().saturating_sub(2))
                    } else {
                        cell.to_string()
                    }
                })
                .collect();
            out.push(cells.join("|"));
            continue;
        }
        if !line.starts_with('|') && !line.starts_with('+') {
            cols = None;
        }
        out.push(line.to_string());
    }
    let mut joined = out.join("\n");
    if s.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

fn mask_took(s: &str) -> String {
    s.lines()
        .map(|l| match l.find("took = ") {
            Some(p) => format!("{}took = #", &l[..p]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if s.ends_with('\n') { "\n" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_ids_terms_and_sizes() {
        let ids = vec![(255u64, "<id:m1>".to_string())];
        let text = "ff, started\n{\"header\":{\"member_id\":255,\"raft_term\":3},\"x\":2555}\n";
        let n = normalize(text, &ids);
        assert_eq!(
            n,
            "<id:m1>, started\n{\"header\":{\"member_id\":<id:m1>,\"raft_term\":#},\"x\":2555}\n"
        );
    }
}
