//! End-to-end tests of config files: the three formats, precedence with
//! environment and flags, provenance, `check`, `show`, and reload support.
//! Every file lives in a temporary directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::*;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("temp dir"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }
}

fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn run(
    args: &[String],
    env: &[(&str, &str)],
    defaults: &[PathBuf],
) -> Result<ServerConfig, ConfigError> {
    match parse_with(args.iter().cloned(), env_of(env), defaults)? {
        Invocation::Serve(cfg) => Ok(*cfg),
        other => panic!("expected a config, got {other:?}"),
    }
}

/// Arguments: `--config-file=<path>` for each path, then `extra`.
fn args_for(files: &[&Path], extra: &[&str]) -> Vec<String> {
    files
        .iter()
        .map(|p| format!("--config-file={}", p.display()))
        .chain(extra.iter().map(|s| (*s).to_string()))
        .collect()
}

fn serve_files(files: &[&Path], extra: &[&str], env: &[(&str, &str)]) -> ServerConfig {
    run(&args_for(files, extra), env, &[]).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn fail_files(files: &[&Path]) -> ConfigError {
    match run(&args_for(files, &[]), &[], &[]) {
        Err(e) => e,
        Ok(cfg) => panic!("expected an error, got {cfg:?}"),
    }
}

fn at(path: &Path, line: usize, key: &str) -> Source {
    Source::File {
        path: path.to_path_buf(),
        line,
        key: key.to_string(),
    }
}

// ------------------------------------------------------------- precedence

#[test]
fn precedence_default_file_second_file_env_flag() {
    let d = Dir::new();
    let first = d.file(
        "etcd.conf",
        "#[Member]\n\
         ETCD_MAX_TXN_OPS=\"64\"\n\
         ETCD_MAX_SNAPSHOTS=\"7\"\n\
         ETCD_BCRYPT_COST=\"11\"\n\
         ETCD_AUTH_TOKEN_TTL=\"100\"\n",
    );
    let second = d.file(
        "cairn.toml",
        "# overrides\n\
         max-snapshots = 8\n\
         bcrypt-cost = 12\n\
         auth-token-ttl = 200\n",
    );
    let c = serve_files(
        &[&first, &second],
        &["--auth-token-ttl=400"],
        &[("ETCD_BCRYPT_COST", "13"), ("ETCD_AUTH_TOKEN_TTL", "300")],
    );
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(c.source_of("snapshot-count"), Some(&Source::Default));
    assert_eq!(c.max_txn_ops, 64);
    assert_eq!(
        c.source_of("max-txn-ops"),
        Some(&at(&first, 2, "ETCD_MAX_TXN_OPS"))
    );
    assert_eq!(c.max_snapshots, 8);
    assert_eq!(
        c.source_of("max-snapshots"),
        Some(&at(&second, 2, "max-snapshots"))
    );
    assert_eq!(c.bcrypt_cost, 13);
    assert_eq!(
        c.source_of("bcrypt-cost"),
        Some(&Source::Env {
            var: "ETCD_BCRYPT_COST".into()
        })
    );
    assert_eq!(c.auth_token_ttl_secs, 400);
    assert_eq!(
        c.source_of("auth-token-ttl"),
        Some(&Source::Flag {
            flag: "--auth-token-ttl".into()
        })
    );
    assert_eq!(c.config_files, [first.clone(), second.clone()]);
    assert_eq!(
        c.source_of("config-file"),
        Some(&Source::Flag {
            flag: "--config-file".into()
        })
    );
    // Layering files is not a conflict; only flag vs env warns.
    assert_eq!(
        c.warnings,
        [
            "both --auth-token-ttl=\"400\" (command line) and ETCD_AUTH_TOKEN_TTL=\"300\" (environment) are set; using the command-line value"
        ]
    );
    // The order of the files decides.
    let c = serve_files(&[&second, &first], &[], &[]);
    assert_eq!(c.max_snapshots, 7);
    assert_eq!(
        c.source_of("max-snapshots"),
        Some(&at(&first, 3, "ETCD_MAX_SNAPSHOTS"))
    );
}

#[test]
fn etcd_config_file_env_var_names_files_comma_separated() {
    let d = Dir::new();
    let a = d.file("a.yml", "max-txn-ops: 10\n");
    let b = d.file("b.toml", "max-txn-ops = 20\n");
    let list = format!("{}, {}", a.display(), b.display());
    let c = run(&[], &[("ETCD_CONFIG_FILE", &list)], &[]).unwrap();
    assert_eq!(c.max_txn_ops, 20);
    assert_eq!(c.config_files, [a.clone(), b.clone()]);
    // --config-file wins over ETCD_CONFIG_FILE, as any flag does.
    let c = run(&args_for(&[&a], &[]), &[("ETCD_CONFIG_FILE", &list)], &[]).unwrap();
    assert_eq!(c.max_txn_ops, 10);
    assert_eq!(c.config_files, [a]);
}

// ------------------------------------------------------- the env-file

const DISTRO_CONF: &str = r#"#[Member]
#ETCD_CORS=""
ETCD_DATA_DIR="/var/lib/etcd/default.etcd"
#ETCD_WAL_DIR=""
ETCD_LISTEN_PEER_URLS="http://10.0.0.1:2380"
ETCD_LISTEN_CLIENT_URLS="http://10.0.0.1:2379,http://localhost:2379"
#ETCD_MAX_SNAPSHOTS="5"
ETCD_NAME="m1" # this node
#ETCD_SNAPSHOT_COUNT="100000"
ETCD_HEARTBEAT_INTERVAL=100
ETCD_ELECTION_TIMEOUT='1000'
CD_MAX_SNAPSHOTS="4"
ETCD_MAX_SNAPSHOT="3"

#[Clustering]
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://10.0.0.1:2380"
ETCD_ADVERTISE_CLIENT_URLS="http://10.0.0.1:2379"
#ETCD_DISCOVERY=""
ETCD_INITIAL_CLUSTER="m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m3=http://10.0.0.3:2380"
ETCD_INITIAL_CLUSTER_TOKEN="etcd-cluster"
ETCD_INITIAL_CLUSTER_STATE="new"
#ETCD_STRICT_RECONFIG_CHECK="true"

#[Logging]
ETCD_DEBUG=""
#ETCD_LOG_PACKAGE_LEVELS=""
"#;

#[test]
fn distro_etcd_conf_loads_with_warnings_and_suggestions() {
    let d = Dir::new();
    let path = d.file("etcd.conf", DISTRO_CONF);
    let c = serve_files(&[&path], &[], &[]);
    assert_eq!(c.name, "m1");
    assert_eq!(c.source_of("name"), Some(&at(&path, 8, "ETCD_NAME")));
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/etcd/default.etcd"));
    assert_eq!(c.heartbeat_interval_ms, 100);
    assert_eq!(c.election_timeout_ms, 1000);
    assert_eq!(c.initial_cluster.len(), 3);
    assert_eq!(
        c.source_of("initial-cluster"),
        Some(&at(&path, 19, "ETCD_INITIAL_CLUSTER"))
    );
    assert_eq!(c.listen_client_urls.len(), 2);
    assert_eq!(c.max_snapshots, 5, "the misspelled keys are ignored");
    assert!(!c.log_level.eq(&LogLevel::Debug), "an empty value is unset");
    let p = path.display();
    assert_eq!(
        c.warnings,
        [
            format!(
                "{p}:8: the comment after the value of ETCD_NAME is ignored (note that systemd's EnvironmentFile= would keep it as part of the value; put comments on their own line)"
            ),
            format!(
                "{p}:12: unknown key CD_MAX_SNAPSHOTS ignored (did you mean ETCD_MAX_SNAPSHOTS?)"
            ),
            format!(
                "{p}:13: unknown key ETCD_MAX_SNAPSHOT ignored (did you mean ETCD_MAX_SNAPSHOTS?)"
            ),
        ]
    );
}

#[test]
fn env_file_repeated_key_last_wins_with_warning() {
    let d = Dir::new();
    let path = d.file("etcd.conf", "ETCD_NAME=a\nETCD_NAME=b\n");
    let c = serve_files(&[&path], &[], &[]);
    assert_eq!(c.name, "b");
    assert_eq!(
        c.warnings,
        [format!(
            "{}:2: ETCD_NAME is set again (first on line 1); the later value wins",
            path.display()
        )]
    );
}

#[test]
fn env_file_special_keys() {
    let d = Dir::new();
    let other = d.file("other.conf", "ETCD_NAME=other\n");
    let path = d.file(
        "etcd.conf",
        &format!(
            "ETCD_VERSION=3.4.23\nETCD_UNSUPPORTED_ARCH=arm64\nETCD_CONFIG_FILE={}\nDAEMON_ARGS=\"\"\n",
            other.display()
        ),
    );
    let c = serve_files(&[&path], &[], &[]);
    assert_eq!(c.name, "default", "a file cannot name further files");
    let p = path.display();
    assert_eq!(
        c.warnings,
        [
            format!("{p}:1: ignoring ETCD_VERSION: --version cannot be set from a config file"),
            format!(
                "{p}:3: ETCD_CONFIG_FILE is ignored in a config file; name every config file with --config-file or ETCD_CONFIG_FILE"
            ),
            format!("{p}:4: unknown key DAEMON_ARGS ignored"),
        ]
    );
}

#[test]
fn env_file_malformed_line_names_file_and_line() {
    let d = Dir::new();
    let path = d.file(
        "etcd.conf",
        "# ok\nETCD_NAME=m1\nETCD_DATA_DIR /var/lib/etcd\n",
    );
    let e = fail_files(&[&path]);
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3: expected KEY=value, a # comment or a blank line; ETCD_DATA_DIR is not followed by '='",
            path.display()
        )
    );
    assert_eq!(e.exit_code(), 1);
    let path = d.file("quote.conf", "ETCD_NAME=\"m1\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:1: the value of ETCD_NAME has no closing '\"'",
            path.display()
        )
    );
}

#[test]
fn env_file_bad_value_names_file_line_and_key() {
    let d = Dir::new();
    let path = d.file("etcd.conf", "\nETCD_HEARTBEAT_INTERVAL=\"10ms\"\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "invalid value \"10ms\" for --heartbeat-interval (from file {}:2, key ETCD_HEARTBEAT_INTERVAL): expected a whole number of milliseconds",
            path.display()
        )
    );
}

// ------------------------------------------------------------------ YAML

const ETCD_YAML: &str = "# etcd 3.4 style
name: 'infra1'
data-dir: /var/lib/etcd
heartbeat-interval: 100
election-timeout: 1000
snapshot-count: 10000
listen-peer-urls: http://10.0.0.1:2380
listen-client-urls:
  - http://10.0.0.1:2379
  - http://127.0.0.1:2379
advertise-client-urls: http://10.0.0.1:2379
initial-advertise-peer-urls: http://10.0.0.1:2380
initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380
initial-cluster-state: 'new'
strict-reconfig-check: yes
enable-v2: off
grpc-keepalive-interval: 600000000000
grpc-keepalive-timeout: 20s
experimental-warning-apply-duration: 1500000
wal-dir:
discovery: ~
client-transport-security:
  client-cert-auth: false
  auto-tls: false
  cert-file: ''
peer-transport-security:
  allowed-cn:
  trusted-ca-file: ''
debug: false
log-outputs: [stderr]
force-new-cluster: false
proxy: 'off'
";

#[test]
fn etcd_yaml_with_nanosecond_durations_and_tls_maps() {
    let d = Dir::new();
    let path = d.file("etcd.conf.yml", ETCD_YAML);
    let c = serve_files(&[&path], &[], &[]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.name, "infra1");
    assert_eq!(c.source_of("name"), Some(&at(&path, 2, "name")));
    assert_eq!(c.snapshot_count, 10_000);
    assert_eq!(
        c.listen_client_urls
            .iter()
            .map(format_url)
            .collect::<Vec<_>>(),
        ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
    );
    assert_eq!(
        c.source_of("listen-client-urls"),
        Some(&at(&path, 8, "listen-client-urls"))
    );
    assert!(c.strict_reconfig_check);
    assert!(!c.enable_v2, "YAML 1.1 `off` is false, as in etcd");
    assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(600));
    assert_eq!(c.raw_value("grpc-keepalive-interval"), Some("10m0s"));
    assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(20));
    assert_eq!(
        c.experimental_warning_apply_duration,
        Duration::from_micros(1500)
    );
    assert_eq!(
        c.source_of("wal-dir"),
        Some(&Source::Default),
        "a null is unset"
    );
    assert_eq!(
        c.source_of("client-cert-auth"),
        Some(&at(&path, 23, "client-transport-security.client-cert-auth"))
    );
    assert_eq!(
        c.source_of("peer-trusted-ca-file"),
        Some(&at(&path, 28, "peer-transport-security.trusted-ca-file"))
    );
    assert_eq!(c.source_of("peer-cert-allowed-cn"), Some(&Source::Default));
    assert_eq!(c.log_outputs, ["stderr"]);
}

#[test]
fn yaml_tls_values_reach_the_tls_flags() {
    let d = Dir::new();
    let path = d.file(
        "etcd.yaml",
        "name: a\nlisten-peer-urls: https://127.0.0.1:2380\ninitial-advertise-peer-urls: https://127.0.0.1:2380\npeer-transport-security:\n  cert-file: /etc/etcd/peer.crt\n  key-file: /etc/etcd/peer.key\n  trusted-ca-file: /etc/etcd/ca.crt\n  client-cert-auth: true\n  allowed-cn: etcd-peer\n  crl-file: /etc/etcd/revoked.pem\n",
    );
    let c = serve_files(&[&path], &[], &[]);
    let peer = c.peer_tls.expect("peer TLS");
    assert_eq!(peer.crl_file, Some("/etc/etcd/revoked.pem".into()));
    assert_eq!(
        peer.identity,
        TlsIdentity::Files {
            cert_file: "/etc/etcd/peer.crt".into(),
            key_file: "/etc/etcd/peer.key".into()
        }
    );
    assert!(peer.client_cert_auth);
    assert_eq!(peer.allowed_cn.as_deref(), Some("etcd-peer"));
    assert_eq!(c.client_tls, None);
}

#[test]
fn yaml_unknown_keys_warn_with_suggestions() {
    let d = Dir::new();
    let path = d.file(
        "etcd.yml",
        "name: a\nheartbeat-intervall: 100\nETCD_DATA_DIR: /x\nclient-transport-security:\n  cert: x\nloger:\n  nested: [1, {a: b}]\n",
    );
    let c = serve_files(&[&path], &[], &[]);
    let p = path.display();
    assert_eq!(
        c.warnings,
        [
            format!(
                "{p}:2: unknown key heartbeat-intervall ignored (did you mean heartbeat-interval?)"
            ),
            format!("{p}:3: unknown key ETCD_DATA_DIR ignored (did you mean data-dir?)"),
            format!(
                "{p}:5: unknown key client-transport-security.cert ignored; client-transport-security takes cert-file, key-file, client-cert-auth, trusted-ca-file, auto-tls, crl-file, allowed-hostname"
            ),
            format!("{p}:6: unknown key loger ignored (did you mean logger?)"),
        ]
    );
}

#[test]
fn yaml_errors_carry_file_line_and_key() {
    let d = Dir::new();
    let p = |name: &str, text: &str| d.file(name, text);

    let path = p(
        "syntax.yml",
        "name: a\nlisten-peer-urls: [http://a:1\ndata-dir: x\n",
    );
    let e = fail_files(&[&path]).to_string();
    assert!(e.starts_with(&format!("{}:", path.display())), "{e}");
    assert!(e.contains("YAML syntax error"), "{e}");

    let path = p(
        "dup.yml",
        "name: a\ncert-file: ''\nclient-transport-security:\n  cert-file: ''\n",
    );
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:4: client-transport-security.cert-file sets --cert-file again (first as cert-file on line 2)",
            path.display()
        )
    );

    let path = p("map.yml", "name:\n  first: a\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:2: name takes a single value or a list of values, not a map",
            path.display()
        )
    );

    let path = p("list.yml", "- name: a\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:1: expected a map of flag names to values, such as `name: infra1`",
            path.display()
        )
    );

    let path = p("docs.yml", "name: a\n---\nname: b\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:2: a second YAML document (---) starts here; a config file holds one",
            path.display()
        )
    );

    let path = p("value.yml", "name: a\n\nelection-timeout: 1s\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "invalid value \"1s\" for --election-timeout (from file {}:3, key election-timeout): expected a whole number of milliseconds",
            path.display()
        )
    );

    let path = p("huge.yml", "grpc-keepalive-timeout: 99999999999999999999\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:1: grpc-keepalive-timeout: 99999999999999999999 nanoseconds is longer than a duration can be (about 292 years)",
            path.display()
        )
    );
}

#[test]
fn yaml_anchors_and_empty_files() {
    let d = Dir::new();
    let path = d.file(
        "a.yml",
        "initial-advertise-peer-urls: &peer http://10.0.0.1:2380\nlisten-peer-urls: *peer\n",
    );
    let c = serve_files(&[&path], &[], &[]);
    assert_eq!(format_url(&c.listen_peer_urls[0]), "http://10.0.0.1:2380");
    for text in ["", "# only a comment\n", "---\n", "~\n"] {
        let path = d.file("empty.yml", text);
        assert_eq!(serve_files(&[&path], &[], &[]).name, "default", "{text:?}");
    }
}

// ------------------------------------------------------------------ TOML

const CAIRN_TOML: &str = r#"# cairn.toml
name = "m1"
heartbeat-interval = 100
election-timeout = 1_000
pre-vote = false
initial-advertise-peer-urls = ["http://10.0.0.1:2380"]
initial-cluster = "m1=http://10.0.0.1:2380"
grpc-keepalive-timeout = "30s"
auto-compaction-mode = "revision"
auto-compaction-retention = 1000
nmae = "typo"

[plugins.audit]
path = "/var/log/cairn/audit.log"
enabled = true

[metrics-extra]
x = 1

[client-transport-security]
cert-file = "x"
"#;

#[test]
fn cairn_toml_with_native_types_and_plugins() {
    let d = Dir::new();
    let path = d.file("cairn.toml", CAIRN_TOML);
    let c = serve_files(&[&path], &[], &[]);
    assert_eq!(c.name, "m1");
    assert_eq!(c.election_timeout_ms, 1000);
    assert!(!c.pre_vote);
    assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(30));
    assert_eq!(c.auto_compaction_mode, AutoCompactionMode::Revision);
    assert_eq!(
        c.auto_compaction_retention,
        AutoCompactionRetention::Revisions(1000)
    );
    assert_eq!(c.source_of("pre-vote"), Some(&at(&path, 5, "pre-vote")));
    let audit = c.plugins["audit"].as_table().unwrap();
    assert_eq!(audit["path"].as_str(), Some("/var/log/cairn/audit.log"));
    assert_eq!(audit["enabled"].as_bool(), Some(true));
    let p = path.display();
    assert_eq!(
        c.warnings,
        [
            format!("{p}:11: unknown key nmae ignored (did you mean name?)"),
            format!("{p}:17: unknown section [metrics-extra] ignored (cairn.toml knows [plugins])"),
            format!(
                "{p}:20: unknown section [client-transport-security] ignored; in cairn.toml TLS settings are top-level flag names, such as cert-file = \"/etc/cairn/server.crt\""
            ),
        ]
    );
}

#[test]
fn later_toml_file_replaces_plugin_entries() {
    let d = Dir::new();
    let a = d.file(
        "a.toml",
        "[plugins.audit]\nlevel = 1\n[plugins.trace]\non = true\n",
    );
    let b = d.file("b.toml", "[plugins.audit]\nlevel = 2\n");
    let c = serve_files(&[&a, &b], &[], &[]);
    assert_eq!(c.plugins["audit"]["level"].as_integer(), Some(2));
    assert_eq!(c.plugins["trace"]["on"].as_bool(), Some(true));
}

#[test]
fn toml_errors_carry_file_line_and_key() {
    let d = Dir::new();
    let path = d.file("syntax.toml", "name = \"m1\"\nheartbeat-interval = \n");
    let e = fail_files(&[&path]).to_string();
    assert!(
        e.starts_with(&format!("{}:2: TOML syntax error: ", path.display())),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");

    let path = d.file("dup.toml", "name = \"a\"\nname = \"b\"\n");
    let e = fail_files(&[&path]).to_string();
    assert!(
        e.starts_with(&format!("{}:2: TOML syntax error: ", path.display())),
        "{e}"
    );

    let path = d.file("dur.toml", "\ngrpc-keepalive-timeout = 20\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "invalid value \"20\" for --grpc-keepalive-timeout (from file {}:2, key grpc-keepalive-timeout): expected a duration such as 5s, 100ms or 1h30m (missing unit)",
            path.display()
        )
    );

    let path = d.file("bool.toml", "pre-vote = \"maybe\"\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "invalid value \"maybe\" for --pre-vote (from file {}:1, key pre-vote): expected true or false",
            path.display()
        )
    );

    let path = d.file("date.toml", "name = 1979-05-27\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:1: name: no setting takes a date or time",
            path.display()
        )
    );

    let path = d.file("table.toml", "[name]\nx = 1\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:1: name: takes a single value or a list of values, not a table",
            path.display()
        )
    );

    let path = d.file("plugins.toml", "plugins = 1\n");
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "{}:1: plugins must be a table: write [plugins] on a line of its own",
            path.display()
        )
    );
}

// --------------------------------------------------- reading and discovery

#[test]
fn default_paths_are_read_when_no_file_is_named() {
    let d = Dir::new();
    let conf = d.file("etcd.conf", "ETCD_NAME=from-conf\nETCD_MAX_TXN_OPS=5\n");
    let toml_path = d.path("cairn.toml"); // does not exist
    let defaults = [conf.clone(), toml_path.clone()];
    let c = run(&[], &[], &defaults).unwrap();
    assert_eq!(c.name, "from-conf");
    assert_eq!(c.config_files, std::slice::from_ref(&conf));
    assert_eq!(c.raw_value("config-file"), Some(conf.to_str().unwrap()));
    assert_eq!(c.source_of("config-file"), Some(&Source::Default));

    // Both exist: read in order, the TOML file wins.
    std::fs::write(&toml_path, "name = \"from-toml\"\n").unwrap();
    let c = run(&[], &[], &defaults).unwrap();
    assert_eq!(c.name, "from-toml");
    assert_eq!(c.max_txn_ops, 5);
    assert_eq!(c.config_files, [conf.clone(), toml_path.clone()]);

    // Environment and flags still win over default files.
    let c = run(
        &["--name=flag".to_string()],
        &[("ETCD_MAX_TXN_OPS", "6")],
        &defaults,
    )
    .unwrap();
    assert_eq!((c.name.as_str(), c.max_txn_ops), ("flag", 6));

    // Naming a file replaces the defaults; an empty --config-file reads none.
    let other = d.file("other.yml", "max-txn-ops: 9\n");
    let c = run(&args_for(&[&other], &[]), &[], &defaults).unwrap();
    assert_eq!((c.name.as_str(), c.max_txn_ops), ("default", 9));
    let c = run(&["--config-file=".to_string()], &[], &defaults).unwrap();
    assert!(c.config_files.is_empty());
    assert_eq!(c.name, "default");

    // No default path exists: nothing is read.
    let c = run(&[], &[], &[d.path("nope.conf")]).unwrap();
    assert!(c.config_files.is_empty());
    assert_eq!(c.raw_value("config-file"), Some(""));
}

#[test]
fn unreadable_files_are_errors() {
    let d = Dir::new();
    let missing = d.path("missing.yml");
    let e = fail_files(&[&missing]);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read config file: ", missing.display())),
        "{e}"
    );
    assert_eq!(e.exit_code(), 1);
    let dir = d.0.path().to_path_buf();
    assert_eq!(
        fail_files(&[&dir]).to_string(),
        format!(
            "{}: cannot read config file: it is a directory",
            dir.display()
        )
    );
    let big = d.file("big.conf", &"#".repeat(1024 * 1024 + 1));
    assert_eq!(
        fail_files(&[&big]).to_string(),
        format!(
            "{}: config file is larger than 1048576 bytes",
            big.display()
        )
    );
    let bad = d.path("latin1.conf");
    std::fs::write(&bad, b"ETCD_NAME=a\nETCD_NAME=\xe9\n").unwrap();
    assert_eq!(
        fail_files(&[&bad]).to_string(),
        format!("{}:2: config file is not valid UTF-8", bad.display())
    );
    let bom = d.file("bom.conf", "\u{feff}ETCD_NAME=bom\n");
    assert_eq!(serve_files(&[&bom], &[], &[]).name, "bom");
}

// ------------------------------------------------------- validation

#[test]
fn cross_setting_errors_name_the_file_values() {
    let d = Dir::new();
    let path = d.file(
        "etcd.yml",
        "heartbeat-interval: 100\nelection-timeout: 400\n",
    );
    let p = path.display();
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "--election-timeout[400ms] (from file {p}:2, key election-timeout) should be at least as 5 times as --heartbeat-interval[100ms] (from file {p}:1, key heartbeat-interval)"
        )
    );
    let path = d.file(
        "cluster.conf",
        "ETCD_NAME=m9\nETCD_INITIAL_CLUSTER=m1=http://localhost:2380\n",
    );
    let p = path.display();
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "couldn't find local name \"m9\" (from file {p}:1, key ETCD_NAME) in the initial cluster configuration (--initial-cluster=m1=http://localhost:2380) (from file {p}:2, key ETCD_INITIAL_CLUSTER)"
        )
    );
    let path = d.file(
        "listen.toml",
        "listen-client-urls = \"http://0.0.0.0:2379\"\n",
    );
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "--advertise-client-urls is required when --listen-client-urls (from file {}:1, key listen-client-urls) is set explicitly",
            path.display()
        )
    );
    // A flag can repair a file value.
    let path = d.file("bad-hb.conf", "ETCD_HEARTBEAT_INTERVAL=abc\n");
    let c = serve_files(&[&path], &["--heartbeat-interval=50"], &[]);
    assert_eq!(c.heartbeat_interval_ms, 50);
}

// ------------------------------------------------------- auto-compaction

fn compaction(args: &[&str]) -> Result<(AutoCompactionMode, AutoCompactionRetention), String> {
    let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    run(&args, &[], &[])
        .map(|c| (c.auto_compaction_mode, c.auto_compaction_retention))
        .map_err(|e| e.to_string())
}

#[test]
fn auto_compaction_settings() {
    use AutoCompactionMode::*;
    use AutoCompactionRetention::*;
    let hours = |h: u64| Period(Duration::from_secs(h * 3600));
    assert_eq!(compaction(&[]), Ok((Periodic, Disabled)));
    assert_eq!(
        compaction(&["--auto-compaction-retention=1"]),
        Ok((Periodic, hours(1)))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=010"]),
        Ok((Periodic, hours(10)))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=5m"]),
        Ok((Periodic, Period(Duration::from_secs(300))))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=0s"]),
        Ok((Periodic, Disabled))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention="]),
        Ok((Periodic, Disabled))
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000"
        ]),
        Ok((Revision, Revisions(1000)))
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=0"
        ]),
        Ok((Revision, Disabled))
    );
    assert_eq!(
        compaction(&["--auto-compaction-mode=revision", "--auto-compaction-retention=5m"]),
        Err("invalid value \"5m\" for --auto-compaction-retention: expected a number of revisions such as 1000, because --auto-compaction-mode is revision".to_string())
    );
    assert_eq!(
        compaction(&["--auto-compaction-mode=hourly"]),
        Err(
            "invalid value \"hourly\" for --auto-compaction-mode: expected periodic or revision"
                .to_string()
        )
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=1.5"]),
        Err("invalid value \"1.5\" for --auto-compaction-retention: expected a number of hours or a duration such as 30m in periodic mode, or a number of revisions in revision mode (0 disables)".to_string())
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=2562048"]),
        Err("invalid value \"2562048\" for --auto-compaction-retention: expected at most 2562047 hours".to_string())
    );
    // From files, with etcd's YAML spelling.
    let d = Dir::new();
    let path = d.file(
        "etcd.yml",
        "auto-compaction-mode: periodic\nauto-compaction-retention: 1\n",
    );
    let c = serve_files(&[&path], &[], &[]);
    assert_eq!(c.auto_compaction_retention, hours(1));
    assert!(c.auto_compaction_retention.is_enabled());
    let path = d.file(
        "etcd.conf",
        "ETCD_AUTO_COMPACTION_MODE=revision\nETCD_AUTO_COMPACTION_RETENTION=5m\n",
    );
    assert_eq!(
        fail_files(&[&path]).to_string(),
        format!(
            "invalid value \"5m\" for --auto-compaction-retention (from file {p}:2, key ETCD_AUTO_COMPACTION_RETENTION): expected a number of revisions such as 1000, because --auto-compaction-mode (from file {p}:1, key ETCD_AUTO_COMPACTION_MODE) is revision",
            p = path.display()
        )
    );
}

// ------------------------------------------------------------ check

#[test]
fn check_good_files() {
    let d = Dir::new();
    let conf = d.file("etcd.conf", DISTRO_CONF);
    let yml = d.file("etcd.yml", ETCD_YAML);
    let report = check(std::slice::from_ref(&conf));
    assert!(report.ok, "{report}");
    assert_eq!(report.exit_code(), 0);
    assert!(report.errors.is_empty());
    assert_eq!(report.warnings.len(), 3, "{report}");
    let text = report.to_string();
    assert!(
        text.ends_with(&format!("config file {}: ok\n", conf.display())),
        "{text}"
    );
    assert!(text.starts_with("warning: "), "{text}");
    let report = check(std::slice::from_ref(&yml));
    assert!(report.ok && report.warnings.is_empty(), "{report}");
    let report = check(&[]);
    assert_eq!(
        report.to_string(),
        "built-in defaults (no config file given): ok\n"
    );
}

#[test]
fn check_bad_files_reports_every_problem() {
    let d = Dir::new();
    let a = d.file(
        "a.conf",
        "ETCD_HEARTBEAT_INTERVAL=abc\nETCD_LOG_LEVEL=loud\nETCD_LOG_LEVEL=info\nETCD_PROXY=on\n",
    );
    let b = d.file("b.toml", "name = \n");
    let missing = d.path("missing.yml");
    let report = check(&[a.clone(), b.clone(), missing.clone()]);
    assert!(!report.ok);
    assert_eq!(report.exit_code(), 1);
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    let pa = a.display();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{}:1: TOML syntax error", b.display())),
        "{}",
        errors[0]
    );
    assert!(errors[1].starts_with(&format!("{}: cannot read config file", missing.display())));
    assert_eq!(
        errors[2],
        format!(
            "invalid value \"abc\" for --heartbeat-interval (from file {pa}:1, key ETCD_HEARTBEAT_INTERVAL): expected a whole number of milliseconds"
        )
    );
    // Checked even though line 3 overrides it.
    assert_eq!(
        errors[3],
        format!(
            "invalid value \"loud\" for --log-level (from file {pa}:2, key ETCD_LOG_LEVEL): expected debug, info, warn, error, panic or fatal"
        )
    );
    assert_eq!(
        errors[4],
        format!(
            "--proxy (from file {pa}:4, key ETCD_PROXY): the v2 proxy is not supported yet by cairn (the flag is recognised; leave it unset)"
        )
    );
    let text = report.to_string();
    assert!(text.ends_with("invalid (5 errors)\n"), "{text}");
    assert!(text.contains("\nerror: invalid value \"abc\""), "{text}");

    // Values fine on their own but not together.
    let c = d.file("c.yml", "heartbeat-interval: 300\n");
    let report = check(std::slice::from_ref(&c));
    assert_eq!(
        report
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!(
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms] (from file {}:1, key heartbeat-interval)",
            c.display()
        )]
    );
}

#[test]
fn check_reports_every_out_of_range_value_in_one_file() {
    // Three values that each parse but are out of range: all three are
    // reported, each with its line, key and what is allowed.
    let d = Dir::new();
    let f = d.file(
        "cairn.toml",
        "name = \"m1\"\nbcrypt-cost = 50\nmax-txn-ops = 0\nauth-token = \"bogus\"\n",
    );
    let report = check(std::slice::from_ref(&f));
    assert!(!report.ok);
    assert_eq!(report.exit_code(), 1);
    let p = f.display();
    assert_eq!(
        report
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            format!(
                "invalid value \"50\" for --bcrypt-cost (from file {p}:2, key bcrypt-cost): expected a bcrypt cost between 4 and 31"
            ),
            format!(
                "invalid value \"0\" for --max-txn-ops (from file {p}:3, key max-txn-ops): expected a number greater than 0"
            ),
            format!(
                "invalid value \"bogus\" for --auth-token (from file {p}:4, key auth-token): expected simple or jwt,<options>"
            ),
        ]
    );
    assert!(
        report.to_string().ends_with("invalid (3 errors)\n"),
        "{report}"
    );
    // Starting from the same file stops at one of them (the first in
    // registry order).
    assert_eq!(fail_files(&[&f]).to_string(), report.errors[1].to_string());
}

#[test]
fn check_reports_every_broken_combination() {
    let d = Dir::new();
    let f = d.file(
        "etcd.yml",
        "heartbeat-interval: 300\nlisten-client-urls: http://127.0.0.1:2379\nclient-transport-security:\n  client-cert-auth: true\n  cert-file: /c.pem\n  key-file: /k.pem\n",
    );
    let report = check(std::slice::from_ref(&f));
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].contains("should be at least as 5 times"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("--advertise-client-urls is required"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("needs --trusted-ca-file"),
        "{}",
        errors[2]
    );
}

// ------------------------------------------------------------ show

#[test]
fn show_lists_settings_in_registry_order_with_sources() {
    let d = Dir::new();
    let path = d.file("etcd.conf", "\nETCD_NAME=m1\n");
    let c = serve_files(
        &[&path],
        &["--log-level=warn"],
        &[("ETCD_MAX_TXN_OPS", "64")],
    );
    let plain = show(&c, false);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines[0], "name = m1");
    assert_eq!(lines[1], "data-dir = m1.etcd");
    assert_eq!(lines[2], "wal-dir = \"\"");
    assert!(lines.contains(&"log-level = warn"));
    let visible = SETTINGS.iter().filter(|s| !s.hidden).count();
    // Plus config-file, which is hidden but set.
    assert_eq!(lines.len(), visible + 1, "{plain}");
    assert_eq!(
        lines.last(),
        Some(&format!("config-file = {}", path.display()).as_str())
    );

    let with = show(&c, true);
    let line = |name: &str| {
        with.lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("{name} missing from\n{with}"))
            .to_string()
    };
    assert_eq!(
        line("name"),
        format!("name = m1  # from file {}:2", path.display())
    );
    assert_eq!(line("data-dir"), "data-dir = m1.etcd  # from default");
    assert_eq!(
        line("max-txn-ops"),
        "max-txn-ops = 64  # from env ETCD_MAX_TXN_OPS"
    );
    assert_eq!(
        line("log-level"),
        "log-level = warn  # from flag --log-level"
    );
    // Positions follow the registry.
    let order: Vec<&str> = lines
        .iter()
        .map(|l| l.split(" = ").next().unwrap())
        .collect();
    let registry: Vec<&str> = SETTINGS
        .iter()
        .map(|s| s.name)
        .filter(|n| order.contains(n))
        .collect();
    assert_eq!(order, registry);
}

#[test]
fn show_appends_plugins_as_toml() {
    let d = Dir::new();
    let path = d.file("cairn.toml", "[plugins.audit]\nlevel = 2\n");
    let text = show(&serve_files(&[&path], &[], &[]), false);
    assert!(text.ends_with("\n[plugins.audit]\nlevel = 2\n"), "{text}");
}

#[test]
fn show_masks_plugin_config_values() {
    let d = Dir::new();
    let path = d.file(
        "cairn.toml",
        "[plugins.hmac]\nfile = \"a.wasm\"\n[plugins.hmac.config]\nsecret = \"s3cret-signing-key\"\n",
    );
    let text = show(&serve_files(&[&path], &[], &[]), false);
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("secret = \"********\""), "{text}");
    assert!(text.contains("file = \"a.wasm\""), "{text}");
}

// ------------------------------------------------------------ reload

#[test]
fn diff_classifies_live_and_restart_changes() {
    let d = Dir::new();
    let path = d.file(
        "cairn.toml",
        "name = \"m1\"\nheartbeat-interval = 100\nlog-level = \"info\"\n",
    );
    let args = args_for(&[&path], &[]);
    let old = run(&args, &[], &[]).unwrap();
    std::fs::write(
        &path,
        "name = \"m2\"\nheartbeat-interval = \"0x64\"\nlog-level = \"debug\"\nauto-compaction-retention = \"5m\"\n",
    )
    .unwrap();
    let new = old.reparse().unwrap();
    assert_eq!(new.name, "m2");
    let changes = diff(&old, &new);
    let summary: Vec<(&str, &str, &str, Reload)> = changes
        .iter()
        .map(|c| (c.name, c.old_raw.as_str(), c.new_raw.as_str(), c.reload))
        .collect();
    assert_eq!(
        summary,
        [
            ("name", "m1", "m2", Reload::Restart),
            ("data-dir", "m1.etcd", "m2.etcd", Reload::Restart),
            (
                "initial-cluster",
                "m1=http://localhost:2380",
                "m2=http://localhost:2380",
                Reload::Restart
            ),
            ("auto-compaction-retention", "0", "5m", Reload::Live),
            ("log-level", "info", "debug", Reload::Live),
        ]
    );
    assert_eq!(changes[4].source, at(&path, 3, "log-level"));
    assert_eq!(
        changes[4].to_string(),
        format!(
            "--log-level: info -> debug (from file {}:3), applied live",
            path.display()
        )
    );
    assert_eq!(
        changes[0].to_string(),
        format!(
            "--name: m1 -> m2 (from file {}:1), changed, takes effect after restart",
            path.display()
        )
    );

    // The running configuration after the reload: live values new, restart
    // values old; diffing against it again reports only pending restarts.
    let now = apply_live(&old, &new).unwrap();
    assert_eq!(now.name, "m1");
    assert_eq!(now.data_dir, PathBuf::from("m1.etcd"));
    assert_eq!(now.log_level, LogLevel::Debug);
    assert_eq!(
        now.auto_compaction_retention,
        AutoCompactionRetention::Period(Duration::from_secs(300))
    );
    let pending: Vec<&str> = diff(&now, &new).iter().map(|c| c.name).collect();
    assert_eq!(pending, ["name", "data-dir", "initial-cluster"]);
    assert!(diff(&new, &new).is_empty());
}

#[test]
fn reparse_keeps_flags_and_env_and_reports_bad_files() {
    let d = Dir::new();
    let path = d.file("etcd.conf", "ETCD_SNAPSHOT_COUNT=10\n");
    let defaults = [path.clone()];
    let old = run(
        &["--log-level=warn".to_string()],
        &[("ETCD_MAX_TXN_OPS", "7"), ("HOME", "/root")],
        &defaults,
    )
    .unwrap();
    assert_eq!(
        old.sources().env(),
        [("ETCD_MAX_TXN_OPS".to_string(), "7".to_string())]
    );
    std::fs::write(&path, "ETCD_SNAPSHOT_COUNT=20\nETCD_LOG_LEVEL=error\n").unwrap();
    let new = old.reparse().unwrap();
    assert_eq!(new.snapshot_count, 20);
    assert_eq!(new.max_txn_ops, 7);
    assert_eq!(new.log_level, LogLevel::Warn, "the flag still wins");
    let names: Vec<&str> = diff(&old, &new).iter().map(|c| c.name).collect();
    assert_eq!(names, ["snapshot-count"]);

    std::fs::write(&path, "ETCD_SNAPSHOT_COUNT=lots\n").unwrap();
    let e = old.reparse().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid value \"lots\" for --snapshot-count (from file {}:1, key ETCD_SNAPSHOT_COUNT): expected a whole number of committed entries",
            path.display()
        )
    );
}

#[test]
fn apply_live_refuses_a_mix_that_does_not_fit() {
    // heartbeat and election are both live, so a consistent new pair is
    // applied together.
    let d = Dir::new();
    let path = d.file("a.yml", "heartbeat-interval: 100\nelection-timeout: 1000\n");
    let old = run(&args_for(&[&path], &[]), &[], &[]).unwrap();
    std::fs::write(&path, "heartbeat-interval: 300\nelection-timeout: 3000\n").unwrap();
    let new = old.reparse().unwrap();
    let now = apply_live(&old, &new).unwrap();
    assert_eq!(
        (now.heartbeat_interval_ms, now.election_timeout_ms),
        (300, 3000)
    );
    assert!(diff(&now, &new).is_empty());
}

// ------------------------------------------------------------ robustness

#[test]
fn file_contents_never_panic() {
    let d = Dir::new();
    let pieces = [
        "ETCD_NAME=",
        "\"",
        "'",
        "\\",
        "#",
        "\n",
        "name:",
        " ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        "&a",
        "*a",
        "---",
        "=",
        "plugins",
        ".",
        "x",
        "100",
        "0x",
        "\t",
        "µ",
        "~",
        "[plugins]",
        "heartbeat-interval",
        "client-transport-security:",
        "\n  cert-file:",
        "!!str",
        "|",
        ">",
    ];
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..600 {
        let n = (next() % 12) as usize;
        let text: String = (0..n)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let name = ["x.conf", "x.yml", "x.toml"][i % 3];
        let path = d.file(name, &text);
        let _ = check(std::slice::from_ref(&path));
        let _ = run(&args_for(&[&path], &[]), &[], &[]);
    }
}

#[test]
fn file_error_messages_are_single_line() {
    let d = Dir::new();
    for (name, text) in [
        ("a.yml", "name: [\n"),
        ("b.toml", "name = \"\n"),
        ("c.conf", "ETCD_NAME=\"a\nb\"\n"),
        ("d.yml", "heartbeat-interval: \"a\\nb\"\n"),
    ] {
        let path = d.file(name, text);
        let e = fail_files(&[&path]).to_string();
        assert!(!e.contains('\n'), "{name}: {e}");
    }
}

// ------------------------------------------------ distro layouts, masking

/// Under systemd's `EnvironmentFile=` (the Debian and RPM etcd units) every
/// line of the env-file is also an `ETCD_*` variable. Those copies count as
/// the file's: an edit to the file reloads, as the file is what the
/// operator edits. A variable that differs (the unit's own
/// `Environment=ETCD_NAME=%H`) still wins, and an edit it masks is named.
#[test]
fn environment_copies_of_a_file_follow_the_file_and_overrides_are_reported() {
    let d = Dir::new();
    let file = d.file(
        "etcd",
        "ETCD_LOG_LEVEL=\"info\"\nETCD_MAX_TXN_OPS=\"64\"\nETCD_NAME=\"from-file\"\n",
    );
    let env = [
        // Copies made by EnvironmentFile=.
        ("ETCD_LOG_LEVEL", "info"),
        ("ETCD_MAX_TXN_OPS", "64"),
        // The unit's own setting, not the file's.
        ("ETCD_NAME", "host-a"),
    ];
    let c = run(&[], &env, std::slice::from_ref(&file)).unwrap();
    assert_eq!(c.name, "host-a");
    assert_eq!(
        c.source_of("log-level"),
        Some(&at(&file, 1, "ETCD_LOG_LEVEL"))
    );
    assert_eq!(
        c.sources()
            .adopted_env()
            .iter()
            .map(|(v, _)| v.as_str())
            .collect::<Vec<_>>(),
        ["ETCD_MAX_TXN_OPS", "ETCD_LOG_LEVEL"] // registry order
    );
    let shown = show(&c, true);
    assert!(
        shown.contains(&format!(
            "name = host-a  # from env ETCD_NAME, overriding file {}:3 = from-file",
            file.display()
        )),
        "{shown}"
    );
    assert!(
        shown.contains("(also in the environment as ETCD_LOG_LEVEL, a copy of the file)"),
        "{shown}"
    );

    // Edits: the copied settings follow the file; the masked one is named.
    std::fs::write(
        &file,
        "ETCD_LOG_LEVEL=\"debug\"\nETCD_MAX_TXN_OPS=\"64\"\nETCD_NAME=\"renamed\"\n",
    )
    .unwrap();
    let fresh = c.reparse().unwrap();
    assert_eq!(fresh.raw_value("log-level"), Some("debug"));
    let changes: Vec<String> = diff(&c, &fresh).iter().map(|ch| ch.to_string()).collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].starts_with("--log-level: info -> debug"),
        "{changes:?}"
    );
    let masked = masked_edits(&c, &fresh);
    assert_eq!(masked.len(), 1, "{masked:?}");
    assert!(
        masked[0].starts_with(&format!(
            "--name: the edit to file {}:3 (renamed) has no effect: environment variable ETCD_NAME = host-a overrides",
            file.display()
        )),
        "{masked:?}"
    );
    // Reported once, not on every later reload.
    let now = apply_live(&c, &fresh).unwrap();
    assert!(masked_edits(&now, &fresh.reparse().unwrap()).is_empty());

    // A variable recognised as a copy at start stays the file's; one that
    // only comes to match after an edit stays an override.
    std::fs::write(&file, "ETCD_LOG_LEVEL=\"warn\"\nETCD_NAME=\"host-a\"\n").unwrap();
    let again = fresh.reparse().unwrap();
    assert_eq!(again.raw_value("log-level"), Some("warn"));
    assert_eq!(
        again.source_of("name"),
        Some(&Source::Env {
            var: "ETCD_NAME".into()
        })
    );
}

#[test]
fn a_bad_environment_value_says_which_file_value_it_overrides() {
    let d = Dir::new();
    let file = d.file("etcd.conf", "ETCD_MAX_TXN_OPS=\"64\"\n");
    let e = run(
        &args_for(&[&file], &[]),
        &[("ETCD_MAX_TXN_OPS", "lots")],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ETCD_MAX_TXN_OPS"), "{e}");
    assert!(
        e.contains(&format!("it overrides config file {}:1", file.display())),
        "{e}"
    );
}

/// The deploy guide's env-files group their commented settings under
/// `# live:` and `# restart:`; each must say what the registry says, or an
/// operator edits a restart-only setting and waits for nothing.
#[test]
fn deploy_env_files_say_which_settings_reload_live() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy");
    let mut checked = 0;
    for host in ["infra1", "infra2", "infra3"] {
        let path = dir.join(host).join("etcd.conf");
        let text = std::fs::read_to_string(&path).expect("deploy env-file");
        let mut marker: Option<Reload> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with("# live:") {
                marker = Some(Reload::Live);
                continue;
            }
            if line.starts_with("# restart") {
                marker = Some(Reload::Restart);
                continue;
            }
            if line.starts_with("#[") || line.is_empty() {
                marker = None;
                continue;
            }
            let Some((var, _)) = line.trim_start_matches('#').split_once('=') else {
                continue;
            };
            let Some(want) = marker else {
                continue;
            };
            let s = SETTINGS
                .iter()
                .find(|s| s.env_var() == var)
                .unwrap_or_else(|| panic!("{}:{}: unknown {var}", path.display(), n + 1));
            assert_eq!(
                s.reload,
                want,
                "{}:{}: {var} is listed as {want:?}",
                path.display(),
                n + 1
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} settings checked");
}

/// The README says the defaults are etcd's except those it names: every
/// setting whose default differs from etcd 3.4's (its help says "etcd
/// 3.4: ...") is named there, and the default config files are listed.
#[test]
fn readme_names_every_default_that_is_not_etcds() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let differ: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.help.contains("etcd 3.4:") && s.help.contains("cairn default"))
        .map(|s| s.name)
        .collect();
    assert!(!differ.is_empty());
    for name in differ {
        assert!(
            readme.contains(&format!("`--{name}`")),
            "README does not name --{name}, whose default is not etcd's"
        );
    }
    for path in DEFAULT_CONFIG_FILES {
        assert!(readme.contains(path), "README does not mention {path}");
    }
}

/// Every example config file in docs/configuration.md (the env-file, YAML
/// and TOML blocks) passes `check` as printed.
#[test]
fn configuration_guide_examples_pass_check() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("configuration.md");
    let d = Dir::new();
    let mut block: Option<(String, String)> = None;
    let mut seen = Vec::new();
    for line in guide.lines() {
        match (&mut block, line.strip_prefix("```")) {
            (None, Some(lang)) => block = Some((lang.to_string(), String::new())),
            (Some(_), Some(_)) => {
                let Some((lang, text)) = block.take() else {
                    continue;
                };
                let name = match lang.as_str() {
                    "toml" => "example.toml",
                    "yaml" => "example.yml",
                    // The env-file example: only a block of ETCD_ lines.
                    "sh" if text.contains("ETCD_NAME=") => "etcd.conf",
                    _ => continue,
                };
                let path = d.file(name, &text);
                let report = check(&[path]);
                assert!(
                    report.ok,
                    "the {lang} example fails check:\n{report}\n{text}"
                );
                seen.push(lang);
            }
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert_eq!(seen, ["sh", "yaml", "toml"], "examples found: {seen:?}");
}

/// docs/testing.md lists every cross-process test file.
#[test]
fn testing_guide_lists_every_test_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("docs/testing.md")).expect("testing.md");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("tests/tests")).expect("tests/tests") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".rs") && !guide.contains(&format!("`{name}`")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/testing.md does not list {missing:?}"
    );
}

/// `check` reports every syntax error of a file, not only the first, and
/// the values on the lines that do parse are checked too.
#[test]
fn check_reports_every_syntax_error_in_a_file() {
    let d = Dir::new();
    let env = d.file(
        "bad.conf",
        "ETCD_NAME=\"a\"\nthis is not a line\nETCD_MAX_TXN_OPS=\"lots\"\nanother bad line\n",
    );
    let toml = d.file(
        "bad.toml",
        "name = \"a\"\nmax-txn-ops = = 3\nheartbeat-interval = \"x\"\n[[broken\n",
    );
    for (file, want) in [
        (
            &env,
            vec![
                ":2: expected KEY=value",
                ":4: expected KEY=value",
                "ETCD_MAX_TXN_OPS",
            ],
        ),
        (
            &toml,
            vec![
                ":2: TOML syntax error",
                ":4: TOML syntax error",
                "heartbeat-interval",
            ],
        ),
    ] {
        let report = check(std::slice::from_ref(file));
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), want.len(), "{errors:#?}");
        for (e, w) in errors.iter().zip(&want) {
            assert!(e.contains(w), "{w:?} not in {e:?}");
        }
    }
}
