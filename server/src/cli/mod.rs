//! `cairn` subcommands besides serving: `cairn config show|check|status`
//! and `cairn snapshot restore|status|save` (etcdctl's snapshot tools, for
//! etcd's snapshots and Cairn's; `save` lives in `snapshot`).

mod conn;
pub mod plugin;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  cairn config show [--sources] [server flags...]   print the effective configuration
  cairn config check FILE...                        validate config files (like nginx -t)
  cairn config status [--endpoints URL[,URL...]] [--cacert F] [--cert F --key F]
                                                    a running member's last reload outcome
                                                    (connection flags as etcdctl's, also
                                                    from ETCDCTL_ENDPOINTS, ETCDCTL_CACERT...)";

pub fn config_command(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("show") => show(&args[1..]),
        Some("check") => check(&args[1..]),
        Some("status") => status(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn show(args: &[String]) -> ExitCode {
    let sources = args.iter().any(|a| a == "--sources");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--sources").collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    match cairn_config::parse(rest, env) {
        Ok(cairn_config::Invocation::Serve(cfg)) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", cairn_config::show(&cfg, sources));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn check(args: &[String]) -> ExitCode {
    if args.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let paths: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    let mut report = cairn_config::check(&paths);
    // What a start would load next: TLS files and declared plugins.
    if let Some(cfg) = report.config.take() {
        let suites = cfg.cipher_suites.as_deref();
        for tls in [&cfg.client_tls, &cfg.peer_tls].into_iter().flatten() {
            if let Err(e) = crate::tls::check_files(tls, suites) {
                report.add_error(e);
            }
        }
        for e in crate::policy::config::check_declared(&cfg.plugins) {
            report.add_error(e);
        }
    }
    print!("{report}");
    ExitCode::from(report.exit_code() as u8)
}

fn status(args: &[String]) -> ExitCode {
    let mut flags = conn::ConnFlags::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let slot = match name {
            // `--endpoint` was this command's flag before it took etcdctl's.
            "--endpoints" | "--endpoint" => &mut flags.endpoints,
            "--cacert" => &mut flags.cacert,
            "--cert" => &mut flags.cert,
            "--key" => &mut flags.key,
            "--user" => &mut flags.user,
            "--password" => &mut flags.password,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        };
        let Some(value) = inline.or_else(|| it.next().cloned()) else {
            eprintln!("cairn: {name} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        *slot = Some(value);
    }
    let conn = match conn::Conn::new(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(2);
        }
    };
    match conn.request("GET", "/config/status", None, Duration::from_secs(5)) {
        Ok((200, body)) => {
            println!("{body}");
            let ok = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["last_reload_successful"].as_bool())
                .unwrap_or(false);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok((code, body)) => {
            eprintln!("cairn: HTTP {code}: {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

const SNAPSHOT_USAGE: &str = "usage:
  cairn snapshot restore FILE [--data-dir DIR] [--name NAME]
        [--initial-cluster NAME=PEER-URL,...] [--initial-cluster-token TOKEN]
        [--initial-advertise-peer-urls URL,...] [--skip-hash-check]
                                  build a new cluster member's data dir from a
                                  snapshot: etcd's (etcdctl snapshot save, or a
                                  stopped member's member/snap/db with
                                  --skip-hash-check) or Cairn's
  cairn snapshot status FILE [-w simple|table|json]
                                  hash, revision, total keys and size of a snapshot
  cairn snapshot save FILE [--endpoints HOST:PORT] [--user NAME:PASSWORD]
  cairn snapshot save FILE --data-dir DIR
                                  an etcd 3.4 snapshot of a running member, or of
                                  a stopped member's data dir (etcdctl and etcd
                                  restore it)";

pub fn snapshot_command(args: &[String]) -> ExitCode {
    let result = match args.first().map(String::as_str) {
        Some("restore") => snapshot_restore(&args[1..]),
        Some("status") => snapshot_status(&args[1..]),
        Some("save") => snapshot::save(&args[1..]),
        _ => {
            eprintln!("{SNAPSHOT_USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("Error: {msg}");
            eprintln!("{SNAPSHOT_USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("Error: {msg}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) enum CliError {
    Usage(String),
    Failed(String),
}

/// Go-style flags as etcdctl takes them: `--flag=value`, `--flag value`
/// (one or two dashes); `bools` take no separate value. Returns the
/// positional arguments and the flags by name (the last one wins).
pub(crate) fn parse_flags(
    args: &[String],
    values: &[&str],
    bools: &[&str],
) -> Result<(Vec<String>, std::collections::HashMap<String, String>), CliError> {
    let mut positional = Vec::new();
    let mut flags = std::collections::HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(stripped) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            positional.push(a.clone());
            continue;
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        if bools.contains(&name) {
            let v = inline.unwrap_or_else(|| "true".into());
            if v != "true" && v != "false" {
                return Err(CliError::Usage(format!(
                    "invalid boolean value {v:?} for --{name}"
                )));
            }
            flags.insert(name.to_string(), v);
        } else if values.contains(&name) {
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| CliError::Usage(format!("flag needs an argument: --{name}")))?,
            };
            flags.insert(name.to_string(), v);
        } else {
            return Err(CliError::Usage(format!("unknown flag: --{name}")));
        }
    }
    Ok((positional, flags))
}

fn snapshot_restore(args: &[String]) -> Result<(), CliError> {
    const VALUES: [&str; 6] = [
        "data-dir",
        "wal-dir",
        "name",
        "initial-cluster",
        "initial-cluster-token",
        "initial-advertise-peer-urls",
    ];
    let (positional, flags) = parse_flags(args, &VALUES, &["skip-hash-check"])?;
    let [file] = positional.as_slice() else {
        return Err(CliError::Usage(
            "snapshot restore requires exactly one argument".into(),
        ));
    };
    if flags.get("wal-dir").is_some_and(|w| !w.is_empty()) {
        return Err(CliError::Failed(
            "--wal-dir is not supported: Cairn keeps its raft log inside the data dir".into(),
        ));
    }
    // The membership flags mean what they mean to the server (same
    // defaults, URL normalization and checks), so let its parser read them.
    let mut server_args: Vec<String> = VALUES
        .iter()
        .filter(|f| **f != "wal-dir")
        .filter_map(|f| flags.get(*f).map(|v| format!("--{f}={v}")))
        .collect();
    server_args.push("--initial-cluster-state=new".into());
    let cfg = match cairn_config::parse_with(server_args, Vec::<(String, String)>::new(), &[]) {
        Ok(cairn_config::Invocation::Serve(cfg)) => cfg,
        Ok(_) => return Err(CliError::Usage("unexpected arguments".into())),
        Err(e) => return Err(CliError::Failed(e.to_string())),
    };
    let members = cfg
        .initial_cluster_members()
        .into_iter()
        .map(|(name, urls)| {
            (
                name.to_string(),
                urls.into_iter().map(cairn_config::format_url).collect(),
            )
        })
        .collect();
    let opts = crate::storage::restore::RestoreOptions {
        snapshot: PathBuf::from(file),
        data_dir: cfg.data_dir.clone(),
        name: cfg.name.clone(),
        members,
        token: cfg.initial_cluster_token.clone(),
        skip_hash_check: flags.get("skip-hash-check").is_some_and(|v| v == "true"),
    };
    eprintln!(
        "restoring snapshot {} into data dir {} (member {:?})",
        opts.snapshot.display(),
        opts.data_dir.display(),
        opts.name
    );
    let started = std::time::Instant::now();
    let r = crate::storage::restore::restore(&opts).map_err(|e| CliError::Failed(e.to_string()))?;
    eprintln!(
        "restored snapshot: member {:x} of cluster {:x}, revision {}, {} revisions, took {:?}",
        r.member_id,
        r.cluster_id,
        r.revision,
        r.revisions,
        started.elapsed()
    );
    Ok(())
}

fn snapshot_status(args: &[String]) -> Result<(), CliError> {
    let (positional, flags) = parse_flags(args, &["write-out", "w"], &[])?;
    let [file] = positional.as_slice() else {
        return Err(CliError::Usage(
            "snapshot status requires exactly one argument".into(),
        ));
    };
    let format = flags
        .get("write-out")
        .or_else(|| flags.get("w"))
        .map_or("simple", String::as_str);
    let st = crate::storage::restore::status(std::path::Path::new(file))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    print!("{}", format_status(&st, format).map_err(CliError::Usage)?);
    Ok(())
}

/// etcdctl's three renderings of a snapshot status.
fn format_status(
    st: &crate::storage::restore::SnapshotStatus,
    format: &str,
) -> Result<String, String> {
    let size = crate::api::maintenance::human_bytes(st.total_size);
    let cells = [
        format!("{:x}", st.hash),
        st.revision.to_string(),
        st.total_keys.to_string(),
        size,
    ];
    match format {
        "simple" => Ok(format!("{}\n", cells.join(", "))),
        "json" => Ok(format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            st.hash, st.revision, st.total_keys, st.total_size
        )),
        "table" => {
            let headers = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let widths: Vec<usize> = headers
                .iter()
                .zip(&cells)
                .map(|(h, c)| h.len().max(c.len()))
                .collect();
            let rule: String = widths
                .iter()
                .map(|w| format!("+{}", "-".repeat(w + 2)))
                .collect::<String>()
                + "+\n";
            // Headers centred (the extra space on the right), cells
            // right-aligned, as etcdctl's table writer does.
            let head: String = headers
                .iter()
                .zip(&widths)
                .map(|(h, w)| {
                    let left = (w - h.len()) / 2;
                    format!(
                        "| {}{}{} ",
                        " ".repeat(left),
                        h,
                        " ".repeat(w - h.len() - left)
                    )
                })
                .collect::<String>()
                + "|\n";
            let row: String = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("| {c:>w$} "))
                .collect::<String>()
                + "|\n";
            Ok(format!("{rule}{head}{rule}{row}{rule}"))
        }
        other => Err(format!(
            "unsupported output format {other:?} (simple, table or json)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_status_renders_like_etcdctl() {
        let st = crate::storage::restore::SnapshotStatus {
            hash: 0x9737_f3a9,
            revision: 11,
            total_keys: 15,
            total_size: 1_134_592,
        };
        assert_eq!(
            format_status(&st, "simple").unwrap(),
            "9737f3a9, 11, 15, 1.1 MB\n"
        );
        // Recorded from etcdctl 3.4.23 `snapshot status -w table`.
        assert_eq!(
            format_status(&st, "table").unwrap(),
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | 9737f3a9 |       11 |         15 |     1.1 MB |\n\
             +----------+----------+------------+------------+\n"
        );
        assert_eq!(
            format_status(&st, "json").unwrap(),
            "{\"hash\":2537026473,\"revision\":11,\"totalKey\":15,\"totalSize\":1134592}\n"
        );
        assert!(format_status(&st, "yaml").is_err());
    }

    #[test]
    fn flags_parse_like_go() {
        let args: Vec<String> = ["f.db", "--name", "a", "-data-dir=/x", "--skip-hash-check"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Ok((pos, flags)) = parse_flags(&args, &["name", "data-dir"], &["skip-hash-check"])
        else {
            panic!("parse failed");
        };
        assert_eq!(pos, vec!["f.db".to_string()]);
        assert_eq!(flags["name"], "a");
        assert_eq!(flags["data-dir"], "/x");
        assert_eq!(flags["skip-hash-check"], "true");
        assert!(parse_flags(&["--bogus".into()], &[], &[]).is_err());
        assert!(parse_flags(&["--name".into()], &["name"], &[]).is_err());
    }
}
