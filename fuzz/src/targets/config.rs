//! Config files (`config/src/files/`): the distro env-file, etcd's YAML and
//! Cairn's TOML, through the crate's public entry points as the server
//! uses them: `parse_with(["--config-file", path])` (read, detect, parse,
//! layer, validate) and `check` (every problem, for `cairn config check`).
//!
//! The env-file target writes a `.conf` file, so the format is detected
//! from the content as it is for `/etc/etcd/etcd.conf`. Checks: no panic,
//! memory bounded (files are capped at 1 MiB), and `parse_with` and `check`
//! agree on whether a file has an error.

use super::{MIB, scratch_dir};
use crate::engine::{Outcome, Target, feature};

pub const ENVFILE: Target = Target {
    name: "config-envfile",
    about: "etcd.conf env-files (ETCD_*=...; format detected from content)",
    run: |d| run(d, "conf"),
    dict: &[
        b"ETCD_NAME=",
        b"ETCD_DATA_DIR=",
        b"ETCD_LISTEN_CLIENT_URLS=",
        b"ETCD_INITIAL_CLUSTER=",
        b"ETCD_HEARTBEAT_INTERVAL=",
        b"ETCD_QUOTA_BACKEND_BYTES=",
        b"ETCD_AUTO_COMPACTION_RETENTION=",
        b"ETCD_CLIENT_CERT_AUTH=",
        b"ETCD_LOG_LEVEL=",
        b"ETCD_UNKNOWN=",
        b"export ",
        b"\"",
        b"'",
        b"\\",
        b"\\\n",
        b"#",
        b";",
        b"=",
        b"\n",
        b"\r\n",
        b"$",
        b"${",
        b"}",
        b"http://127.0.0.1:2379",
        b"m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381",
        b"true",
        b"100ms",
        b"1h",
        b"\xef\xbb\xbf",
    ],
    max_len: 4096,
    heap_budget_bytes: 16 * MIB,
};

pub const YAML: Target = Target {
    name: "config-yaml",
    about: "etcd --config-file YAML",
    run: |d| run(d, "yaml"),
    dict: &[
        b"name: ",
        b"data-dir: ",
        b"listen-client-urls: ",
        b"initial-cluster: ",
        b"heartbeat-interval: ",
        b"election-timeout: ",
        b"quota-backend-bytes: ",
        b"client-transport-security:\n  ",
        b"cert-file: ",
        b"client-cert-auth: ",
        b"auto-tls: ",
        b"peer-transport-security:\n",
        b"cipher-suites: [",
        b"log-outputs: [stderr]",
        b"---\n",
        b"- ",
        b": ",
        b"\n  ",
        b"&a ",
        b"*a",
        b"<<: ",
        b"!!str ",
        b"|\n",
        b">\n",
        b"\"",
        b"'",
        b"{",
        b"}",
        b"[",
        b"]",
        b"~",
        b"null",
        b"0x10",
        b"1e3",
        b"-1",
        b".inf",
        b"#",
    ],
    max_len: 4096,
    heap_budget_bytes: 16 * MIB,
};

pub const TOML: Target = Target {
    name: "config-toml",
    about: "Cairn's cairn.toml, including the [plugins] table",
    run: |d| run(d, "toml"),
    dict: &[
        b"name = ",
        b"data-dir = ",
        b"listen-client-urls = ",
        b"initial-cluster = ",
        b"heartbeat-interval = ",
        b"quota-backend-bytes = ",
        b"[plugins.p]\n",
        b"path = ",
        b"hooks = [\"validator\"]\n",
        b"mode = \"audit\"\n",
        b"deadline = \"50ms\"\n",
        b"memory = \"16MiB\"\n",
        b"[plugins.p.config]\n",
        b"[[a]]\n",
        b"[",
        b"]",
        b"=",
        b"\"",
        b"'''",
        b"\"\"\"",
        b"{",
        b"}",
        b",",
        b"true",
        b"1979-05-27T07:32:00Z",
        b"inf",
        b"nan",
        b"0x7fffffffffffffff",
        b"1_000",
        b"#",
        b"\n",
    ],
    max_len: 4096,
    heap_budget_bytes: 16 * MIB,
};

fn run(data: &[u8], ext: &str) -> Outcome {
    let path = scratch_dir().join(format!("config.{ext}"));
    std::fs::write(&path, data).map_err(|e| format!("scratch file: {e}"))?;
    let parsed = cairn_config::parse_with(
        ["--config-file".to_string(), path.display().to_string()],
        Vec::<(String, String)>::new(),
        &[],
    );
    let report = cairn_config::check(std::slice::from_ref(&path));
    let _ = std::fs::remove_file(&path);
    let checked_ok = report.errors.is_empty();
    let word = match &parsed {
        Ok(_) => "ok".to_string(),
        // The message without the value it quotes: what kind of problem.
        Err(e) => e
            .to_string()
            .split(['"', '\''])
            .next()
            .unwrap_or("")
            .to_string(),
    };
    if parsed.is_err() && checked_ok {
        return Err(format!(
            "parse_with refuses the file but check finds no error: {}",
            parsed.err().map(|e| e.to_string()).unwrap_or_default()
        ));
    }
    Ok(feature(&[
        &word,
        if checked_ok { "clean" } else { "errors" },
    ]))
}
