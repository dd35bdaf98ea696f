//! `cairn plugin deploy|list|remove|dry-run|check`: a client of the admin
//! API (`/cairn/v1/plugins` on a member's client URL).

use base64::Engine as _;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  cairn plugin deploy NAME FILE [--hooks H,..] [--prefix P]... [--mode enforce|audit|dry-run]
        [--failure-policy fail-closed|fail-open] [--deadline 50ms] [--memory 16MiB]
        [--config KEY=VALUE]... [--order N]          deploy or replace a plugin
  cairn plugin list                                    the plugin set the cluster enforces
  cairn plugin remove NAME                             remove an API-deployed plugin
  cairn plugin dry-run NAME                            which existing keys a deployed plugin rejects
  cairn plugin dry-run --file FILE [--prefix P]... [--config KEY=VALUE]...
        [--revision R] [--max-keys N]                 ... or a candidate that is not deployed
  cairn plugin check [--token T | --as-user NAME:PASSWORD]
        [--authorize read|put|delete-range KEY [--range-end END] [--principal P]]
                                                       ask the auth hooks a question
common flags (etcdctl's; each also read from its ETCDCTL_* variable):
  --endpoints URL[,URL...]   members' client URLs (default 127.0.0.1:2379)
  --cacert FILE              verify https endpoints with this CA bundle
  --cert FILE --key FILE     client certificate and key for https endpoints
  --user NAME[:PASSWORD]     authenticate as this user (root, when auth is enabled)
  --password PASSWORD        the password, when --user has none
  --auth-token TOKEN         a token already obtained, instead of --user
  -w, --write-out simple|json";

/// Largest plugin file read (the cluster's limit).
const MAX_FILE_BYTES: u64 = crate::policy::model::MAX_PLUGIN_BYTES as u64;
/// A deploy compiles on the server; a dry run scans the keyspace.
const READ_TIMEOUT: Duration = Duration::from_secs(180);

struct Common {
    conn: super::conn::Conn,
    json: bool,
}

/// Splits flags (`--x v`, `--x=v`) from positional arguments.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

const BOOL_FLAGS: &[&str] = &[];

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut flags = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(name) = a
            .strip_prefix("--")
            .or_else(|| a.strip_prefix('-').filter(|n| *n == "w"))
        else {
            positional.push(a.clone());
            continue;
        };
        if let Some((n, v)) = name.split_once('=') {
            flags.push((n.to_owned(), v.to_owned()));
        } else if BOOL_FLAGS.contains(&name) {
            flags.push((name.to_owned(), "true".into()));
        } else {
            let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            flags.push((name.to_owned(), v.clone()));
        }
    }
    Ok(Args { positional, flags })
}

impl Args {
    fn take(&mut self, name: &str) -> Vec<String> {
        let (hit, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flags)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.flags = rest;
        hit.into_iter().map(|(_, v)| v).collect()
    }

    fn one(&mut self, name: &str) -> Result<Option<String>, String> {
        let mut v = self.take(name);
        if v.len() > 1 {
            return Err(format!("--{name} given twice"));
        }
        Ok(v.pop())
    }

    fn common(&mut self) -> Result<Common, String> {
        let out = match (self.one("write-out")?, self.one("w")?) {
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => "simple".into(),
            (Some(_), Some(_)) => return Err("-w given twice".into()),
        };
        if out != "simple" && out != "json" {
            return Err(format!("unknown output format {out:?} (simple or json)"));
        }
        let flags = super::conn::ConnFlags {
            endpoints: self.one("endpoints")?,
            cacert: self.one("cacert")?,
            cert: self.one("cert")?,
            key: self.one("key")?,
            user: self.one("user")?,
            password: self.one("password")?,
            auth_token: self.one("auth-token")?,
        };
        Ok(Common {
            conn: super::conn::Conn::new(flags)?,
            json: out == "json",
        })
    }

    fn done(&self) -> Result<(), String> {
        match self.flags.first() {
            Some((n, _)) => Err(format!("unknown flag --{n}")),
            None => Ok(()),
        }
    }
}

pub fn command(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = match args.first().map(String::as_str) {
        Some("deploy") => deploy(&args[1..]),
        Some("list" | "ls") => list(&args[1..]),
        Some("remove" | "rm") => remove(&args[1..]),
        Some("dry-run") => dry_run(&args[1..]),
        Some("check") => check(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(Failure::Usage(String::new())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            if !msg.is_empty() {
                eprintln!("cairn plugin: {msg}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Server(msg)) => {
            eprintln!("Error: {msg}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Server(String),
}

fn usage(e: String) -> Failure {
    Failure::Usage(e)
}

fn read_wasm(path: &str) -> Result<String, Failure> {
    let meta =
        std::fs::metadata(path).map_err(|e| Failure::Server(format!("cannot read {path}: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Failure::Server(format!(
            "{path} is {} bytes, over the limit of {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Failure::Server(format!("cannot read {path}: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn config_pairs(values: Vec<String>) -> Result<Value, Failure> {
    let mut pairs = Vec::new();
    for kv in values {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--config {kv:?}: expected KEY=VALUE")))?;
        pairs.push(json!([k, v]));
    }
    Ok(Value::Array(pairs))
}

fn deploy(args: &[String]) -> Result<(), Failure> {
    let mut a = parse_args(args).map_err(usage)?;
    let common = a.common().map_err(usage)?;
    let [name, file] = a
        .positional
        .clone()
        .try_into()
        .map_err(|_: Vec<String>| usage("deploy needs NAME and FILE".into()))?;
    let mut body = serde_json::Map::new();
    body.insert("wasm_base64".into(), Value::String(read_wasm(&file)?));
    if let Some(h) = a.one("hooks").map_err(usage)? {
        body.insert(
            "hooks".into(),
            json!(h.split(',').map(str::trim).collect::<Vec<_>>()),
        );
    }
    let prefixes = a.take("prefix");
    if !prefixes.is_empty() {
        body.insert("prefixes".into(), json!(prefixes));
    }
    for (flag, key) in [
        ("mode", "mode"),
        ("failure-policy", "failure_policy"),
        ("deadline", "deadline"),
        ("memory", "memory"),
    ] {
        if let Some(v) = a.one(flag).map_err(usage)? {
            body.insert(key.into(), Value::String(v));
        }
    }
    if let Some(o) = a.one("order").map_err(usage)? {
        let n: i64 = o
            .parse()
            .map_err(|_| usage(format!("--order {o:?}: not an integer")))?;
        body.insert("order".into(), json!(n));
    }
    let config = a.take("config");
    if !config.is_empty() {
        body.insert("config".into(), config_pairs(config)?);
    }
    a.done().map_err(usage)?;
    let v = call(
        &common,
        "PUT",
        &format!("/cairn/v1/plugins/{name}"),
        Some(Value::Object(body)),
    )?;
    if common.json {
        println!("{v}");
    } else {
        println!(
            "plugin {:?} deployed (sha256 {}, hooks {}): plugin set version {}, judging writes from revision {}{}",
            name,
            short(v["sha256"].as_str().unwrap_or("")),
            v["hooks"]
                .as_array()
                .map(|h| h
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            v["version"],
            v["first_revision"],
            if v["changed"] == json!(false) {
                " (unchanged: already deployed like this)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn list(args: &[String]) -> Result<(), Failure> {
    let mut a = parse_args(args).map_err(usage)?;
    let common = a.common().map_err(usage)?;
    a.done().map_err(usage)?;
    if !a.positional.is_empty() {
        return Err(usage("list takes no arguments".into()));
    }
    let v = call(&common, "GET", "/cairn/v1/plugins", None)?;
    if common.json {
        println!("{v}");
        return Ok(());
    }
    print_set_summary(&v);
    let plugins = v["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        println!("no plugins");
        return Ok(());
    }
    let rows: Vec<[String; 8]> = plugins.iter().map(plugin_row).collect();
    print_table(
        [
            "NAME", "HOOKS", "MODE", "FAILURE", "PREFIXES", "ORIGIN", "SHA256", "STATUS",
        ],
        &rows,
    );
    Ok(())
}

/// The set's version and cause, and whether this member's config agrees.
fn print_set_summary(v: &Value) {
    println!(
        "plugin set version {} (raft index {}), judging writes from revision {}{}",
        v["version"],
        v["raft_index"],
        v["first_revision"],
        v["cause"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(|c| format!(": {c}"))
            .unwrap_or_default()
    );
    let cfg = &v["config"];
    let declared: Vec<&str> = cfg["declared"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "config of member {}: {}{}",
        v["member"].as_str().unwrap_or("?"),
        if cfg["in_sync"] == json!(true) {
            "in sync with the cluster"
        } else {
            "DIFFERS from the cluster's config-declared plugins"
        },
        match cfg["error"].as_str() {
            Some(e) => format!(" (error: {e})"),
            None if declared.is_empty() => " (declares no plugins)".into(),
            None => format!(" (declares {})", declared.join(", ")),
        }
    );
}

/// One plugin's row of the `list` table.
fn plugin_row(p: &Value) -> [String; 8] {
    let list = |k: &str| {
        p[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let status = match p["status"]["state"].as_str() {
        Some("failed") => {
            format!("failed: {}", p["status"]["error"].as_str().unwrap_or(""))
        }
        Some(s) => s.to_owned(),
        None => "?".into(),
    };
    [
        p["name"].as_str().unwrap_or("").to_owned(),
        list("hooks"),
        p["mode"].as_str().unwrap_or("").to_owned(),
        p["failure_policy"].as_str().unwrap_or("").to_owned(),
        match list("prefixes") {
            s if s.is_empty() => "(all keys)".into(),
            s => s,
        },
        p["origin"].as_str().unwrap_or("").to_owned(),
        short(p["sha256"].as_str().unwrap_or("")).to_owned(),
        status,
    ]
}

/// Columns padded to their widest cell; the last one unpadded.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn remove(args: &[String]) -> Result<(), Failure> {
    let mut a = parse_args(args).map_err(usage)?;
    let common = a.common().map_err(usage)?;
    a.done().map_err(usage)?;
    let [name] = a.positional.as_slice() else {
        return Err(usage("remove needs NAME".into()));
    };
    let v = call(
        &common,
        "DELETE",
        &format!("/cairn/v1/plugins/{name}"),
        None,
    )?;
    if common.json {
        println!("{v}");
    } else {
        println!(
            "plugin {name:?} removed: plugin set version {}, from revision {}",
            v["version"], v["first_revision"]
        );
    }
    Ok(())
}

fn dry_run(args: &[String]) -> Result<(), Failure> {
    let mut a = parse_args(args).map_err(usage)?;
    let common = a.common().map_err(usage)?;
    let mut body = serde_json::Map::new();
    let file = a.one("file").map_err(usage)?;
    match (a.positional.as_slice(), file) {
        ([name], None) => {
            body.insert("name".into(), json!(name));
        }
        ([], Some(file)) => {
            body.insert("wasm_base64".into(), Value::String(read_wasm(&file)?));
        }
        _ => {
            return Err(usage(
                "dry-run needs a deployed plugin's NAME or --file FILE".into(),
            ));
        }
    }
    let prefixes = a.take("prefix");
    if !prefixes.is_empty() {
        body.insert("prefixes".into(), json!(prefixes));
    }
    let config = a.take("config");
    if !config.is_empty() {
        body.insert("config".into(), config_pairs(config)?);
    }
    for (flag, key) in [("deadline", "deadline"), ("memory", "memory")] {
        if let Some(v) = a.one(flag).map_err(usage)? {
            body.insert(key.into(), Value::String(v));
        }
    }
    for (flag, key) in [
        ("revision", "revision"),
        ("max-keys", "max_keys"),
        ("max-reported", "max_reported"),
    ] {
        if let Some(v) = a.one(flag).map_err(usage)? {
            let n: i64 = v
                .parse()
                .map_err(|_| usage(format!("--{flag} {v:?}: not an integer")))?;
            body.insert(key.into(), json!(n));
        }
    }
    a.done().map_err(usage)?;
    let v = call(
        &common,
        "POST",
        "/cairn/v1/plugins/dry-run",
        Some(Value::Object(body)),
    )?;
    if common.json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "dry run of {:?} (sha256 {}) at revision {}: {} keys scanned, {} would be rejected, {} failed",
        v["plugin"].as_str().unwrap_or(""),
        short(v["sha256"].as_str().unwrap_or("")),
        v["revision"],
        v["scanned"],
        v["rejected_total"],
        v["failed_total"]
    );
    for (kind, list) in [("REJECT", &v["rejected"]), ("FAILED", &v["failed"])] {
        for f in list.as_array().into_iter().flatten() {
            println!(
                "{kind} {}: {}",
                f["key"].as_str().unwrap_or(""),
                f["reason"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(t) = v["truncated"].as_str() {
        println!("(incomplete: {t})");
    }
    Ok(())
}

fn check(args: &[String]) -> Result<(), Failure> {
    let mut a = parse_args(args).map_err(usage)?;
    // `--user` is the caller's credential (etcdctl's); the credential to
    // test is `--token` or `--as-user`.
    let subject = (
        a.one("token").map_err(usage)?,
        a.one("as-user").map_err(usage)?,
    );
    let common = a.common().map_err(usage)?;
    let mut body = serde_json::Map::new();
    match subject {
        (Some(t), None) => {
            body.insert("authenticate".into(), json!({ "token": t }));
        }
        (None, Some(u)) => {
            let (name, password) = u
                .split_once(':')
                .ok_or_else(|| usage("--as-user expects NAME:PASSWORD".into()))?;
            body.insert(
                "authenticate".into(),
                json!({ "name": name, "password": password }),
            );
        }
        (None, None) => {}
        (Some(_), Some(_)) => return Err(usage("give --token or --as-user, not both".into())),
    }
    if let Some(access) = a.one("authorize").map_err(usage)? {
        let [key] = a.positional.as_slice() else {
            return Err(usage("--authorize ACCESS needs a KEY argument".into()));
        };
        let mut q = json!({ "access": access, "key": key });
        if let Some(e) = a.one("range-end").map_err(usage)? {
            q["range_end"] = json!(e);
        }
        if let Some(p) = a.one("principal").map_err(usage)? {
            q["principal"] = json!(p);
        }
        body.insert("authorize".into(), q);
    }
    a.done().map_err(usage)?;
    if body.is_empty() {
        return Err(usage(
            "check needs --token, --as-user or --authorize".into(),
        ));
    }
    let v = call(
        &common,
        "POST",
        "/cairn/v1/plugins/check",
        Some(Value::Object(body)),
    )?;
    if common.json {
        println!("{v}");
        return Ok(());
    }
    if let Some(auth) = v.get("authenticate") {
        match auth["decision"].as_str() {
            Some("authenticated") => println!(
                "authenticated as {:?} by plugin {:?}",
                auth["principal"].as_str().unwrap_or(""),
                auth["plugin"].as_str().unwrap_or("")
            ),
            Some("refused") => println!(
                "refused by plugin {:?}: {}",
                auth["plugin"].as_str().unwrap_or(""),
                auth["reason"].as_str().unwrap_or("")
            ),
            _ => println!("no authenticator claimed the credential (built-in users decide)"),
        }
    }
    if let Some(z) = v.get("authorize") {
        if z["allowed"] == json!(true) {
            println!("allowed");
        } else {
            println!("denied: {}", z["error"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// One admin call, on the first endpoint that answers.
fn call(common: &Common, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
    let body = body.map(|b| b.to_string());
    let (status, text) = common
        .conn
        .request(method, path, body.as_deref(), READ_TIMEOUT)
        .map_err(Failure::Server)?;
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "error": text.trim() }));
    if (200..300).contains(&status) {
        return Ok(v);
    }
    Err(Failure::Server(
        v["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}: {text}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let mut a = parse_args(&[
            "deploy".into(),
            "--prefix".into(),
            "/a/".into(),
            "--prefix=/b/".into(),
            "x".into(),
            "-w".into(),
            "json".into(),
        ])
        .unwrap();
        assert_eq!(a.take("prefix"), vec!["/a/", "/b/"]);
        let c = a.common().unwrap();
        assert!(c.json);
        assert_eq!(a.positional, vec!["deploy", "x"]);
        assert!(a.done().is_ok());
    }
}
