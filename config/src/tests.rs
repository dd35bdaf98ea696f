//! End-to-end tests of `parse`: argv + environment in, `Invocation` out.

use std::path::PathBuf;
use std::time::Duration;

use crate::*;

fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Parses without default config files, so what is in /etc never matters.
fn try_parse(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, ConfigError> {
    parse_with(args.iter().copied(), env_of(env), &[])
}

fn serve_env(args: &[&str], env: &[(&str, &str)]) -> ServerConfig {
    match try_parse(args, env) {
        Ok(Invocation::Serve(cfg)) => *cfg,
        other => panic!("expected a config for {args:?} {env:?}, got {other:?}"),
    }
}

fn serve(args: &[&str]) -> ServerConfig {
    serve_env(args, &[])
}

fn fail_env(args: &[&str], env: &[(&str, &str)]) -> ConfigError {
    match try_parse(args, env) {
        Err(e) => e,
        Ok(other) => panic!("expected an error for {args:?} {env:?}, got {other:?}"),
    }
}

fn fail(args: &[&str]) -> String {
    fail_env(args, &[]).to_string()
}

fn url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}

fn urls(c: &[url::Url]) -> Vec<String> {
    c.iter().map(format_url).collect()
}

fn flag(f: &str) -> Source {
    Source::Flag { flag: f.into() }
}

fn env_src(v: &str) -> Source {
    Source::Env { var: v.into() }
}

// ------------------------------------------------------------------ defaults

#[test]
fn no_flags_no_env_is_a_single_member_cluster() {
    let c = serve(&[]);
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(c.heartbeat_interval_ms, 100);
    assert_eq!(c.election_timeout_ms, 1000);
    assert!(c.initial_election_tick_advance);
    assert_eq!(urls(&c.listen_peer_urls), ["http://localhost:2380"]);
    assert_eq!(urls(&c.listen_client_urls), ["http://localhost:2379"]);
    assert_eq!(
        urls(&c.initial_advertise_peer_urls),
        ["http://localhost:2380"]
    );
    assert_eq!(urls(&c.advertise_client_urls), ["http://localhost:2379"]);
    assert!(c.listen_metrics_urls.is_empty());
    assert_eq!(c.max_snapshots, 5);
    assert_eq!(c.quota_backend_bytes, 0);
    assert_eq!(c.effective_quota_backend_bytes(), 2 * 1024 * 1024 * 1024);
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.max_request_bytes, 1_572_864);
    assert_eq!(c.max_concurrent_streams, u32::MAX);
    assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(5));
    assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(2 * 3600));
    assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(20));
    assert_eq!(
        c.initial_cluster,
        vec![InitialMember {
            name: "default".into(),
            peer_url: url("http://localhost:2380"),
        }]
    );
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert!(c.strict_reconfig_check);
    assert!(c.pre_vote, "cairn defaults pre-vote to true");
    assert!(c.enable_v2, "cairn defaults enable-v2 to true");
    assert_eq!(c.cors, ["*"]);
    assert_eq!(c.host_whitelist, ["*"]);
    assert_eq!(c.metrics, MetricsLevel::Basic);
    assert_eq!(c.logger, "capnslog");
    assert_eq!(c.log_outputs, ["default"]);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.experimental_compaction_batch_limit, 1000);
    assert_eq!(
        c.experimental_warning_apply_duration,
        Duration::from_millis(100)
    );
    assert_eq!(
        c.experimental_watch_progress_notify_interval,
        Duration::from_secs(600)
    );
    assert_eq!(c.auth_token, "simple");
    assert_eq!(c.bcrypt_cost, 10);
    assert_eq!(c.auth_token_ttl_secs, 300);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.election_ticks(), 10);
    assert_eq!(c.request_timeout(), Duration::from_secs(7));
    for s in SETTINGS {
        assert_eq!(c.source_of(s.name), Some(&Source::Default), "{}", s.name);
    }
    assert_eq!(ServerConfig::default(), c);
}

#[test]
fn foreign_env_vars_are_ignored() {
    let c = serve_env(
        &[],
        &[
            ("PATH", "/usr/bin"),
            ("ETCDCTL_API", "3"),
            ("HOME", "/root"),
        ],
    );
    assert!(c.warnings.is_empty());
    assert_eq!(c, serve(&[]));
}

#[test]
fn every_default_parses_and_is_not_reported() {
    // Passing each setting's own default explicitly must be silent, also
    // for NotYet and NoEffect settings (except the ignored etcd 2 flags).
    for s in SETTINGS.iter().filter(|s| s.kind != Kind::Ignored) {
        if s.name == "initial-cluster" || s.name == "listen-client-urls" || s.name == "log-output" {
            continue; // explicit-only rules, tested separately
        }
        let arg = format!("--{}={}", s.name, s.default);
        let c = serve(&[&arg]);
        assert!(c.warnings.is_empty(), "{arg}: {:?}", c.warnings);
        assert_eq!(c.source_of(s.name), Some(&flag(&s.flag())), "{arg}");
    }
}

// ------------------------------------------------------------ argv syntax

#[test]
fn go_flag_syntax_forms() {
    let c = serve(&[
        "-name",
        "infra1",
        "--initial-cluster-token=tok",
        "-snapshot-count=42",
        "--max-txn-ops",
        "7",
        "-pre-vote=false",
        "--strict-reconfig-check",
        "-enable-v2=0",
    ]);
    assert_eq!(c.name, "infra1");
    assert_eq!(c.initial_cluster_token, "tok");
    assert_eq!(c.snapshot_count, 42);
    assert_eq!(c.max_txn_ops, 7);
    assert!(!c.pre_vote);
    assert!(c.strict_reconfig_check);
    assert!(!c.enable_v2);
    assert_eq!(c.data_dir, PathBuf::from("infra1.etcd"));
}

#[test]
fn bare_boolean_is_true_and_keeps_the_next_token() {
    let c = serve(&["--pre-vote=false", "--pre-vote", "--name", "n1"]);
    assert!(c.pre_vote);
    assert_eq!(c.name, "n1");
}

#[test]
fn boolean_spellings() {
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        assert!(serve(&["--enable-v2=false", &format!("--enable-v2={t}")]).enable_v2);
        assert!(serve(&[&format!("--pre-vote={t}")]).pre_vote, "{t}");
        assert!(serve_env(&[], &[("ETCD_PRE_VOTE", t)]).pre_vote, "env {t}");
    }
    for f in ["0", "f", "F", "FALSE", "false", "False"] {
        assert!(!serve(&[&format!("--pre-vote={f}")]).pre_vote, "{f}");
        assert!(!serve_env(&[], &[("ETCD_PRE_VOTE", f)]).pre_vote, "env {f}");
    }
    assert_eq!(
        fail(&["--pre-vote=yes"]),
        "invalid value \"yes\" for --pre-vote: expected true or false"
    );
    assert_eq!(
        fail_env(&[], &[("ETCD_PRE_VOTE", "on")]).to_string(),
        "invalid value \"on\" for --pre-vote (from environment variable ETCD_PRE_VOTE): expected true or false"
    );
}

#[test]
fn unknown_flag_names_it_and_suggests() {
    let e = fail_env(
        &["--name=x", "--inital-cluster=a=http://127.0.0.1:2380"],
        &[],
    );
    assert_eq!(
        e.to_string(),
        "unknown flag: --inital-cluster (did you mean --initial-cluster?)"
    );
    assert_eq!(e.exit_code(), 2);
    assert_eq!(fail(&["-qqqqqqqq"]), "unknown flag: --qqqqqqqq");
}

#[test]
fn missing_value_and_stray_arguments_exit_2() {
    let e = fail_env(&["--data-dir"], &[]);
    assert_eq!(e.to_string(), "flag needs an argument: --data-dir");
    assert_eq!(e.exit_code(), 2);
    let e = fail_env(&["serve"], &[]);
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn integers_reject_garbage_naming_flag_and_source() {
    let e = fail_env(&[], &[("ETCD_HEARTBEAT_INTERVAL", "abc")]);
    assert_eq!(
        e.to_string(),
        "invalid value \"abc\" for --heartbeat-interval (from environment variable ETCD_HEARTBEAT_INTERVAL): expected a whole number of milliseconds"
    );
    assert_eq!(e.exit_code(), 1);
    assert_eq!(
        fail(&["--heartbeat-interval=10ms"]),
        "invalid value \"10ms\" for --heartbeat-interval: expected a whole number of milliseconds"
    );
    assert_eq!(
        fail(&["--max-txn-ops=4294967296"]),
        "invalid value \"4294967296\" for --max-txn-ops: expected a whole number of operations no larger than 4294967295"
    );
    // Go's base prefixes work as they do for etcd.
    assert_eq!(serve(&["--snapshot-count=0x10"]).snapshot_count, 16);
}

#[test]
fn go_durations_on_flags() {
    let c = serve(&[
        "--grpc-keepalive-min-time=1.5s",
        "--grpc-keepalive-interval=1h30m",
        "--grpc-keepalive-timeout=0",
        "--experimental-warning-apply-duration=300µs",
        "--experimental-watch-progress-notify-interval=10ns",
    ]);
    assert_eq!(c.grpc_keepalive_min_time, Duration::from_millis(1500));
    assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(5400));
    assert_eq!(c.grpc_keepalive_timeout, Duration::ZERO);
    assert_eq!(
        c.experimental_warning_apply_duration,
        Duration::from_micros(300)
    );
    assert_eq!(
        c.experimental_watch_progress_notify_interval,
        Duration::from_nanos(10)
    );
    assert_eq!(
        fail(&["--grpc-keepalive-min-time=5"]),
        "invalid value \"5\" for --grpc-keepalive-min-time: expected a duration such as 5s, 100ms or 1h30m (missing unit)"
    );
    assert_eq!(
        fail(&["--grpc-keepalive-timeout=3d"]),
        "invalid value \"3d\" for --grpc-keepalive-timeout: expected a duration such as 5s, 100ms or 1h30m (unknown unit \"d\"; use ns, us, ms, s, m or h)"
    );
    assert_eq!(
        fail(&["--grpc-keepalive-timeout=-1s"]),
        "invalid value \"-1s\" for --grpc-keepalive-timeout: expected a duration such as 5s, 100ms or 1h30m (negative)"
    );
}

// --------------------------------------------------- sources and precedence

#[test]
fn env_sets_values_and_provenance() {
    let c = serve_env(
        &[],
        &[("ETCD_NAME", "infra2"), ("ETCD_SNAPSHOT_COUNT", "500")],
    );
    assert_eq!(c.name, "infra2");
    assert_eq!(c.snapshot_count, 500);
    assert_eq!(c.source_of("name"), Some(&env_src("ETCD_NAME")));
    assert_eq!(
        c.source_of("snapshot-count"),
        Some(&env_src("ETCD_SNAPSHOT_COUNT"))
    );
    assert_eq!(c.source_of("max-txn-ops"), Some(&Source::Default));
    assert_eq!(c.source_of("no-such-setting"), None);
    assert!(c.warnings.is_empty());
}

#[test]
fn flag_beats_env_with_a_warning_naming_both() {
    let c = serve_env(&["--name=from-flag"], &[("ETCD_NAME", "from-env")]);
    assert_eq!(c.name, "from-flag");
    assert_eq!(c.source_of("name"), Some(&flag("--name")));
    assert_eq!(
        c.warnings,
        [
            "both --name=\"from-flag\" (command line) and ETCD_NAME=\"from-env\" (environment) are set; using the command-line value"
        ]
    );
    // Single-dash spelling is recorded canonically.
    let c = serve_env(&["-name", "x"], &[]);
    assert_eq!(c.source_of("name"), Some(&flag("--name")));
}

#[test]
fn empty_env_var_counts_as_unset() {
    let c = serve_env(&["--name=a"], &[("ETCD_NAME", "")]);
    assert!(c.warnings.is_empty());
    assert_eq!(c.source_of("name"), Some(&flag("--name")));
}

#[test]
fn unknown_etcd_env_warns_with_suggestion() {
    let c = serve_env(
        &[],
        &[("ETCD_INITAL_CLUSTER_TOKEN", "x"), ("ETCD_FOO", "bar")],
    );
    assert_eq!(
        c.warnings,
        [
            "unrecognized environment variable ETCD_FOO=\"bar\"",
            "unrecognized environment variable ETCD_INITAL_CLUSTER_TOKEN=\"x\" (did you mean ETCD_INITIAL_CLUSTER_TOKEN?)",
        ]
    );
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
}

#[test]
fn etcd_version_env_is_ignored_with_warning() {
    let c = serve_env(&[], &[("ETCD_VERSION", "3.4.23")]);
    assert_eq!(
        c.warnings,
        [
            "ignoring environment variable ETCD_VERSION=\"3.4.23\": --version cannot be set from the environment"
        ]
    );
}

#[test]
fn provenance_shows_derived_defaults() {
    let c = serve(&[
        "--name=n1",
        "--initial-advertise-peer-urls=http://10.0.0.1:2380,http://10.0.0.2:2380",
    ]);
    assert_eq!(c.raw_value("data-dir"), Some("n1.etcd"));
    assert_eq!(
        c.raw_value("initial-cluster"),
        Some("n1=http://10.0.0.1:2380,n1=http://10.0.0.2:2380")
    );
    assert_eq!(c.source_of("initial-cluster"), Some(&Source::Default));
    let r = &c.resolved()["initial-advertise-peer-urls"];
    assert_eq!(r.source, flag("--initial-advertise-peer-urls"));
    assert_eq!(r.raw, "http://10.0.0.1:2380,http://10.0.0.2:2380");
}

// ---------------------------------------------------- support status gating

#[test]
fn not_yet_flags_accept_their_default() {
    let c = serve_env(
        &[
            "--client-cert-auth=false",
            "--cert-file=",
            "--proxy=off",
            "--auto-compaction-retention=0",
            "--force-new-cluster=F",
            "--experimental-corrupt-check-time=0",
        ],
        &[("ETCD_PEER_AUTO_TLS", "0")],
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn not_yet_flags_refuse_other_values() {
    let e = fail_env(&["--proxy-refresh-interval=1"], &[]);
    assert_eq!(
        e.to_string(),
        "--proxy-refresh-interval: the v2 proxy is not supported yet by cairn (the flag is recognised; leave it unset)"
    );
    assert_eq!(e.exit_code(), 1);
    assert!(serve(&["--enable-pprof"]).enable_pprof);
    assert!(!serve(&[]).enable_pprof);
    assert_eq!(
        fail(&["--proxy=on"]),
        "--proxy: the v2 proxy is not supported yet by cairn (the flag is recognised; leave it unset)"
    );
    // A separate metrics listener is supported.
    assert_eq!(
        serve(&["--listen-metrics-urls=http://127.0.0.1:2381"])
            .listen_metrics_urls
            .len(),
        1
    );
}

#[test]
fn no_effect_flags_warn_on_non_default() {
    let c = serve(&["--max-wals=10", "--backend-batch-limit=0"]);
    assert_eq!(
        c.warnings,
        [
            "--max-wals is set to \"10\" but has no effect in cairn: cairn keeps its raft log in its storage engine, there are no WAL files to retain"
        ]
    );
    let c = serve_env(&[], &[("ETCD_LOG_PACKAGE_LEVELS", "etcdserver=DEBUG")]);
    assert_eq!(
        c.warnings,
        [
            "--log-package-levels (from environment variable ETCD_LOG_PACKAGE_LEVELS) is set to \"etcdserver=DEBUG\" but has no effect in cairn: cairn has no per-package capnslog levels; use --log-level"
        ]
    );
    let c = serve(&[
        "--backend-batch-interval=10ms",
        "--experimental-backend-bbolt-freelist-type=map",
    ]);
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    // A syntactically bad value is still an error.
    assert_eq!(
        fail(&["--max-wals=lots"]),
        "invalid value \"lots\" for --max-wals: expected a whole number of WAL files"
    );
    // etcd 2 leftovers are swallowed with a warning.
    let c = serve(&["-peer-heartbeat-interval=50"]);
    assert_eq!(
        c.warnings,
        [
            "--peer-heartbeat-interval is set to \"50\" but has no effect in cairn: the flag is an etcd 2 leftover that etcd 3.4 also ignores"
        ]
    );
}

// -------------------------------------------------------------- validation

#[test]
fn heartbeat_must_be_positive() {
    assert_eq!(
        fail(&["--heartbeat-interval=0"]),
        "--heartbeat-interval must be >0 (set to 0ms)"
    );
}

#[test]
fn election_timeout_at_least_five_heartbeats() {
    assert_eq!(
        fail(&["--heartbeat-interval=100", "--election-timeout=400"]),
        "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
    );
    let c = serve(&["--heartbeat-interval=100", "--election-timeout=500"]);
    assert_eq!(c.election_ticks(), 5);
    assert_eq!(c.request_timeout(), Duration::from_secs(6));
}

#[test]
fn election_timeout_at_most_50s() {
    assert_eq!(
        fail(&["--election-timeout=50001"]),
        "--election-timeout[50001ms] is too long, and should be set less than 50000ms"
    );
    assert_eq!(
        serve(&["--election-timeout=50000"]).election_timeout_ms,
        50_000
    );
}

#[test]
fn url_scheme_must_be_http_or_unix() {
    assert_eq!(
        fail(&["--listen-peer-urls=tcp://x:1"]),
        "invalid value \"tcp://x:1\" for --listen-peer-urls: expected a comma-separated list of URLs such as http://10.0.0.1:2380 (\"tcp://x:1\" has scheme \"tcp\"; only http, https, unix and unixs are allowed)"
    );
}

#[test]
fn https_listener_needs_a_certificate() {
    let args = [
        "--listen-client-urls=https://127.0.0.1:2379",
        "--advertise-client-urls=https://127.0.0.1:2379",
    ];
    assert_eq!(
        fail(&args),
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme (--listen-client-urls); or use --auto-tls for a generated certificate"
    );
    assert_eq!(
        fail(&[
            "--listen-peer-urls=https://127.0.0.1:2380",
            "--initial-advertise-peer-urls=https://127.0.0.1:2380"
        ]),
        "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://127.0.0.1:2380 with HTTPS scheme (--listen-peer-urls); or use --peer-auto-tls for a generated certificate"
    );
    let c = serve(&[&args[..], &["--auto-tls"]].concat());
    let tls = c.client_tls.expect("client TLS");
    assert!(tls.is_auto());
    assert_eq!(c.peer_tls, None);
}

#[test]
fn tls_flags_become_typed_settings() {
    let c = serve(&[
        "--listen-client-urls=https://127.0.0.1:2379",
        "--advertise-client-urls=https://127.0.0.1:2379",
        "--cert-file=/pki/server.crt",
        "--key-file=/pki/server.key",
        "--client-cert-auth",
        "--trusted-ca-file=/pki/ca.crt",
        "--client-crl-file=/pki/revoked.crl",
        "--client-cert-allowed-hostname=client.example.com",
        "--peer-crl-file=/pki/peer-revoked.crl",
        "--listen-peer-urls=https://127.0.0.1:2380",
        "--initial-advertise-peer-urls=https://127.0.0.1:2380",
        "--peer-cert-file=/pki/peer.crt",
        "--peer-key-file=/pki/peer.key",
        "--peer-trusted-ca-file=/pki/ca.crt",
        "--peer-cert-allowed-cn=etcd-peer",
        "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_AES_128_GCM_SHA256",
    ]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.client_tls,
        Some(TlsSettings {
            side: TlsSide::Client,
            identity: TlsIdentity::Files {
                cert_file: "/pki/server.crt".into(),
                key_file: "/pki/server.key".into(),
            },
            trusted_ca_file: Some("/pki/ca.crt".into()),
            client_cert_auth: true,
            allowed_cn: None,
            allowed_hostname: Some("client.example.com".into()),
            crl_file: Some("/pki/revoked.crl".into()),
        })
    );
    let peer = c.peer_tls.expect("peer TLS");
    // A trusted CA alone requires peers' certificates, as in etcd.
    assert!(peer.client_cert_auth);
    assert_eq!(peer.allowed_cn.as_deref(), Some("etcd-peer"));
    assert_eq!(peer.allowed_hostname, None);
    assert_eq!(peer.crl_file, Some("/pki/peer-revoked.crl".into()));
    assert_eq!(
        urls(
            &c.initial_cluster
                .iter()
                .map(|m| m.peer_url.clone())
                .collect::<Vec<_>>()
        ),
        ["https://127.0.0.1:2380"]
    );
    assert_eq!(
        c.cipher_suites,
        Some(vec![
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string(),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".to_string(),
        ])
    );
    assert_eq!(serve(&[]).cipher_suites, None);
}

#[test]
fn tls_flag_combinations_are_checked() {
    assert_eq!(
        fail(&["--cert-file=/pki/server.crt"]),
        "--cert-file is set but --key-file is not: a TLS certificate needs both its certificate and its key file"
    );
    assert_eq!(
        fail_env(&[], &[("ETCD_PEER_KEY_FILE", "/pki/peer.key")]).to_string(),
        "--peer-key-file is set but --peer-cert-file is not: a TLS certificate needs both its certificate and its key file"
    );
    assert_eq!(
        fail(&[
            "--cert-file=/pki/server.crt",
            "--key-file=/pki/server.key",
            "--client-cert-auth"
        ]),
        "--client-cert-auth needs --trusted-ca-file: the PEM bundle of the CAs that sign the certificates to accept"
    );
    // Certificates without an https URL, or auth flags without a
    // certificate, are warnings.
    let c = serve(&["--cert-file=/pki/server.crt", "--key-file=/pki/server.key"]);
    assert!(c.client_tls.is_some());
    assert_eq!(
        c.warnings,
        [
            "client TLS is configured (--cert-file or --auto-tls) but no client URL uses https://, so it is not used"
        ]
    );
    let c = serve(&["--peer-client-cert-auth"]);
    assert_eq!(c.peer_tls, None);
    assert_eq!(
        c.warnings,
        [
            "--peer-client-cert-auth set without --peer-cert-file and --peer-key-file (or --peer-auto-tls); ignored"
        ]
    );
    // Auto TLS drops client certificate checks (etcd replaces the whole
    // TLS setup with the generated certificate).
    let c = serve(&[
        "--listen-peer-urls=https://127.0.0.1:2380",
        "--initial-advertise-peer-urls=https://127.0.0.1:2380",
        "--peer-auto-tls",
        "--peer-client-cert-auth",
        "--peer-trusted-ca-file=/pki/ca.crt",
    ]);
    let peer = c.peer_tls.expect("peer TLS");
    assert!(peer.is_auto() && !peer.client_cert_auth && peer.trusted_ca_file.is_none());
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let c = serve(&[
        "--listen-peer-urls=https://127.0.0.1:2380",
        "--initial-advertise-peer-urls=https://127.0.0.1:2380",
        "--peer-auto-tls",
        "--peer-crl-file=/pki/revoked.crl",
    ]);
    let peer = c.peer_tls.expect("peer TLS");
    assert_eq!(peer.crl_file, None);
    assert_eq!(
        c.warnings,
        ["--peer-crl-file ignored with --peer-auto-tls: peer certificates are not checked"]
    );

    // CRL and hostname checks apply to client certificates: without them
    // they do nothing, which is worth a warning.
    let c = serve(&[
        "--listen-client-urls=https://127.0.0.1:2379",
        "--advertise-client-urls=https://127.0.0.1:2379",
        "--cert-file=/pki/server.crt",
        "--key-file=/pki/server.key",
        "--client-crl-file=/pki/revoked.crl",
        "--client-cert-allowed-hostname=client.example.com",
    ]);
    let client = c.client_tls.expect("client TLS");
    assert_eq!((client.crl_file, client.allowed_hostname), (None, None));
    assert_eq!(
        c.warnings,
        [
            "--client-cert-allowed-hostname has no effect without --client-cert-auth and --trusted-ca-file",
            "--client-crl-file has no effect without --client-cert-auth and --trusted-ca-file",
        ]
    );
    // etcd refuses a CN and a hostname check together.
    assert_eq!(
        fail(&[
            "--peer-cert-file=/pki/peer.crt",
            "--peer-key-file=/pki/peer.key",
            "--peer-trusted-ca-file=/pki/ca.crt",
            "--peer-cert-allowed-cn=etcd-peer",
            "--peer-cert-allowed-hostname=m1.example.com",
        ]),
        "--peer-cert-allowed-cn and --peer-cert-allowed-hostname cannot both be set: AllowedCN and AllowedHostname are mutually exclusive (cn=\"etcd-peer\", hostname=\"m1.example.com\")"
    );
}

#[test]
fn cipher_suites_use_go_names() {
    assert_eq!(
        fail(&["--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,FOO"]),
        "invalid value \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,FOO\" for --cipher-suites: expected a comma-separated list of Go TLS cipher suite names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (unexpected TLS cipher suite \"FOO\")"
    );
    let c = serve(&[
        "--cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ]);
    assert_eq!(
        c.cipher_suites,
        Some(vec!["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()])
    );
    assert_eq!(
        c.warnings,
        [
            "--cipher-suites: TLS_RSA_WITH_AES_128_CBC_SHA not offered by cairn (only ECDHE suites with AES-GCM or ChaCha20-Poly1305 are implemented); offering TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        ]
    );
    // Only TLS 1.3 names: no TLS 1.2 suite at all, as in Go.
    assert_eq!(
        serve(&["--cipher-suites=TLS_AES_256_GCM_SHA384"]).cipher_suites,
        Some(vec![])
    );
}

#[test]
fn url_needs_a_port() {
    assert_eq!(
        fail(&["--initial-advertise-peer-urls=http://10.0.0.1"]),
        "invalid value \"http://10.0.0.1\" for --initial-advertise-peer-urls: expected a comma-separated list of URLs such as http://10.0.0.1:2380 (\"http://10.0.0.1\" has no port)"
    );
    // An explicit default port counts as a port.
    let c = serve(&[
        "--listen-client-urls=http://127.0.0.1:80",
        "--advertise-client-urls=http://127.0.0.1:80",
    ]);
    assert_eq!(urls(&c.listen_client_urls), ["http://127.0.0.1:80"]);
}

#[test]
fn url_needs_a_host() {
    assert_eq!(
        fail(&["--listen-peer-urls=http://:2380"]),
        "invalid value \"http://:2380\" for --listen-peer-urls: expected a comma-separated list of URLs such as http://10.0.0.1:2380 (\"http://:2380\" is not a URL)"
    );
}

#[test]
fn url_must_not_have_a_path_or_query() {
    assert_eq!(
        fail(&["--listen-peer-urls=http://127.0.0.1:2380/raft"]),
        "invalid value \"http://127.0.0.1:2380/raft\" for --listen-peer-urls: expected a comma-separated list of URLs such as http://10.0.0.1:2380 (\"http://127.0.0.1:2380/raft\" must not contain a path, query or fragment)"
    );
    assert!(
        fail(&["--listen-peer-urls=http://127.0.0.1:2380?x=1"])
            .contains("must not contain a path, query or fragment")
    );
}

#[test]
fn listen_urls_need_an_ip_or_localhost() {
    assert_eq!(
        fail(&["--listen-peer-urls=http://node1.example.com:2380"]),
        "invalid value \"http://node1.example.com:2380\" for --listen-peer-urls: expected IP in URL for binding (http://node1.example.com:2380)"
    );
    // Advertised URLs may use names.
    let c = serve(&[
        "--listen-peer-urls=http://0.0.0.0:2380,http://[::]:2390",
        "--initial-advertise-peer-urls=http://node1.example.com:2380",
    ]);
    assert_eq!(
        urls(&c.listen_peer_urls),
        ["http://0.0.0.0:2380", "http://[::]:2390"]
    );
    assert_eq!(c.initial_cluster[0].name, "default");
    assert_eq!(
        format_url(&c.initial_cluster[0].peer_url),
        "http://node1.example.com:2380"
    );
}

#[test]
fn url_lists_are_comma_separated_and_trimmed() {
    let c = serve(&[
        "--listen-client-urls= http://127.0.0.1:2379 , http://10.0.0.1:2379,",
        "--advertise-client-urls=http://10.0.0.1:2379",
    ]);
    assert_eq!(
        urls(&c.listen_client_urls),
        ["http://127.0.0.1:2379", "http://10.0.0.1:2379"]
    );
    assert_eq!(
        fail(&["--listen-peer-urls= , "]),
        "invalid value \" , \" for --listen-peer-urls: expected at least one URL, such as http://10.0.0.1:2380"
    );
}

#[test]
fn listen_client_urls_need_advertise_client_urls() {
    let msg = "--advertise-client-urls is required when --listen-client-urls is set explicitly";
    assert_eq!(fail(&["--listen-client-urls=http://0.0.0.0:2379"]), msg);
    assert_eq!(
        fail_env(&[], &[("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379")]).to_string(),
        msg
    );
    let c = serve_env(
        &["--listen-client-urls=http://0.0.0.0:2379"],
        &[("ETCD_ADVERTISE_CLIENT_URLS", "http://10.0.0.1:2379")],
    );
    assert_eq!(urls(&c.advertise_client_urls), ["http://10.0.0.1:2379"]);
}

#[test]
fn initial_cluster_needs_equals() {
    assert_eq!(
        fail(&["--initial-cluster=default"]),
        "invalid value \"default\" for --initial-cluster: expected comma-separated name=peer-URL pairs such as infra1=http://10.0.0.1:2380 (\"default\" has no '=')"
    );
}

#[test]
fn initial_cluster_needs_names() {
    assert_eq!(
        fail(&["--initial-cluster==http://localhost:2380"]),
        "invalid value \"=http://localhost:2380\" for --initial-cluster: expected comma-separated name=peer-URL pairs such as infra1=http://10.0.0.1:2380 (\"=http://localhost:2380\" has an empty member name)"
    );
}

#[test]
fn initial_cluster_needs_valid_urls() {
    assert_eq!(
        fail(&["--initial-cluster=default=localhost:2380"]),
        "invalid value \"default=localhost:2380\" for --initial-cluster: expected comma-separated name=peer-URL pairs such as infra1=http://10.0.0.1:2380 (member \"default\": \"localhost:2380\" has scheme \"localhost\"; only http, https, unix and unixs are allowed)"
    );
}

#[test]
fn initial_cluster_rejects_duplicate_urls() {
    assert_eq!(
        fail(&["--initial-cluster=default=http://localhost:2380,other=http://localhost:2380"]),
        "invalid value \"default=http://localhost:2380,other=http://localhost:2380\" for --initial-cluster: expected comma-separated name=peer-URL pairs such as infra1=http://10.0.0.1:2380 (URL http://localhost:2380 is listed twice)"
    );
}

#[test]
fn initial_cluster_three_members_with_repeated_names() {
    let c = serve(&[
        "--name=infra1",
        "--initial-advertise-peer-urls=http://10.0.0.1:2380,http://10.0.1.1:2380",
        "--initial-cluster=infra1=http://10.0.0.1:2380, infra1=http://10.0.1.1:2380,infra2=http://10.0.0.2:2380,infra3=http://10.0.0.3:2380",
    ]);
    assert_eq!(c.initial_cluster.len(), 4);
    let grouped: Vec<(&str, Vec<String>)> = c
        .initial_cluster_members()
        .into_iter()
        .map(|(n, us)| (n, us.into_iter().map(format_url).collect()))
        .collect();
    assert_eq!(
        grouped,
        vec![
            (
                "infra1",
                vec![
                    "http://10.0.0.1:2380".to_string(),
                    "http://10.0.1.1:2380".to_string()
                ]
            ),
            ("infra2", vec!["http://10.0.0.2:2380".to_string()]),
            ("infra3", vec!["http://10.0.0.3:2380".to_string()]),
        ]
    );
}

#[test]
fn initial_cluster_defaults_from_name_and_advertised_urls() {
    let c = serve(&["--name", "solo"]);
    assert_eq!(
        c.initial_cluster,
        vec![InitialMember {
            name: "solo".into(),
            peer_url: url("http://localhost:2380"),
        }]
    );
}

#[test]
fn new_cluster_must_contain_own_name() {
    assert_eq!(
        fail(&[
            "--name=infra9",
            "--initial-cluster=infra1=http://localhost:2380"
        ]),
        "couldn't find local name \"infra9\" in the initial cluster configuration (--initial-cluster=infra1=http://localhost:2380)"
    );
}

#[test]
fn new_cluster_own_urls_must_match_advertised() {
    assert_eq!(
        fail(&[
            "--name=infra1",
            "--initial-advertise-peer-urls=http://10.0.0.1:2380",
            "--initial-cluster=infra1=http://10.0.0.9:2380,infra2=http://10.0.0.2:2380",
        ]),
        "--initial-cluster has infra1=http://10.0.0.9:2380 but --initial-advertise-peer-urls=http://10.0.0.1:2380; the member's own peer URLs must be the same in both when --initial-cluster-state is new"
    );
    // The same URLs in another order are fine (sets).
    serve(&[
        "--name=a",
        "--initial-advertise-peer-urls=http://10.0.0.2:2380,http://10.0.0.1:2380",
        "--initial-cluster=a=http://10.0.0.1:2380,a=http://10.0.0.2:2380",
    ]);
}

#[test]
fn existing_cluster_skips_own_membership_check() {
    let c = serve(&[
        "--name=infra4",
        "--initial-cluster-state=existing",
        "--initial-cluster=infra1=http://10.0.0.1:2380",
    ]);
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
}

#[test]
fn initial_cluster_state_values() {
    assert_eq!(
        fail(&["--initial-cluster-state=join"]),
        "invalid value \"join\" for --initial-cluster-state: expected new or existing"
    );
}

#[test]
fn log_level_values() {
    assert_eq!(serve(&["--log-level=warn"]).log_level, LogLevel::Warn);
    assert_eq!(
        fail(&["--log-level=verbose"]),
        "invalid value \"verbose\" for --log-level: expected debug, info, warn, error, panic or fatal"
    );
}

#[test]
fn debug_means_log_level_debug() {
    let c = serve(&["--debug", "--log-level=error"]);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.warnings, ["--debug is deprecated; use --log-level=debug"]);
}

#[test]
fn metrics_values() {
    let c = serve(&["--metrics=extensive"]);
    assert_eq!(c.metrics, MetricsLevel::Extensive);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        fail(&["--metrics=full"]),
        "invalid value \"full\" for --metrics: expected basic or extensive"
    );
}

#[test]
fn logger_values() {
    let c = serve(&["--logger=zap"]);
    assert_eq!(c.logger, "zap");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(serve(&[]).logger, "capnslog");
    assert_eq!(
        fail(&["--logger=slog"]),
        "invalid value \"slog\" for --logger: expected capnslog or zap"
    );
}

#[test]
fn log_outputs_values() {
    assert_eq!(
        serve(&["--log-outputs=stderr,stdout"]).log_outputs,
        ["stderr", "stdout"]
    );
    assert_eq!(
        serve(&["--log-outputs=default,stderr,default"]).log_outputs,
        ["default", "stderr"]
    );
    // etcd reads any other word as a file to log to.
    assert_eq!(
        serve(&["--log-outputs=/var/log/etcd.log"]).log_outputs,
        ["/var/log/etcd.log"]
    );
    assert_eq!(
        serve(&["--log-outputs=stdout,journal"]).log_outputs,
        ["stdout", "journal"]
    );
    assert_eq!(
        fail(&["--log-outputs=,"]),
        "invalid value \",\" for --log-outputs: expected default, stderr, stdout or a file path"
    );
    assert_eq!(
        serve(&["--log-output=/tmp/x.log"]).log_outputs,
        ["/tmp/x.log"]
    );
    // The deprecated singular flag still works, with a warning.
    let c = serve(&["--log-output=stderr"]);
    assert_eq!(c.log_outputs, ["stderr"]);
    assert_eq!(
        c.warnings,
        ["--log-output is deprecated; use --log-outputs"]
    );
}

#[test]
fn auth_token_values() {
    // JWT options are passed through; the server checks the keys.
    let jwt = "jwt,pub-key=a.pub,priv-key=a.key,sign-method=RS256";
    assert_eq!(serve(&[&format!("--auth-token={jwt}")]).auth_token, jwt);
    assert_eq!(
        fail(&["--auth-token=oauth"]),
        "invalid value \"oauth\" for --auth-token: expected simple or jwt,<options>"
    );
    assert_eq!(serve(&["--auth-token-ttl=60"]).auth_token_ttl_secs, 60);
}

#[test]
fn bcrypt_cost_range() {
    assert_eq!(serve(&["--bcrypt-cost=4"]).bcrypt_cost, 4);
    assert_eq!(serve(&["--bcrypt-cost=31"]).bcrypt_cost, 31);
    for bad in ["3", "32"] {
        assert_eq!(
            fail(&[&format!("--bcrypt-cost={bad}")]),
            format!(
                "invalid value \"{bad}\" for --bcrypt-cost: expected a bcrypt cost between 4 and 31"
            )
        );
    }
}

#[test]
fn max_request_bytes_positive() {
    assert_eq!(
        fail(&["--max-request-bytes=0"]),
        "invalid value \"0\" for --max-request-bytes: expected a number greater than 0"
    );
    let c = serve(&["--max-request-bytes=20971520"]);
    assert_eq!(
        c.warnings,
        [
            "--max-request-bytes=20971520 exceeds the maximum recommended size of 10485760 bytes (10 MiB)"
        ]
    );
}

#[test]
fn max_txn_ops_positive() {
    assert_eq!(
        fail(&["--max-txn-ops=0"]),
        "invalid value \"0\" for --max-txn-ops: expected a number greater than 0"
    );
}

#[test]
fn snapshot_count_positive() {
    assert_eq!(
        fail_env(&[], &[("ETCD_SNAPSHOT_COUNT", "0")]).to_string(),
        "invalid value \"0\" for --snapshot-count (from environment variable ETCD_SNAPSHOT_COUNT): expected a number greater than 0"
    );
}

#[test]
fn quota_backend_bytes_limits() {
    let c = serve(&["--quota-backend-bytes=10737418240"]);
    assert_eq!(c.effective_quota_backend_bytes(), 10_737_418_240);
    assert_eq!(
        c.warnings,
        [
            "--quota-backend-bytes=10737418240 exceeds the maximum recommended quota of 8589934592 bytes (8 GiB)"
        ]
    );
    assert!(
        serve(&["--quota-backend-bytes=8589934592"])
            .warnings
            .is_empty()
    );
    assert_eq!(
        fail(&["--quota-backend-bytes=1099511627777"]),
        "invalid value \"1099511627777\" for --quota-backend-bytes: expected at most 1099511627776 bytes (1 TiB)"
    );
    assert_eq!(
        fail(&["--quota-backend-bytes=-1"]),
        "invalid value \"-1\" for --quota-backend-bytes: expected a whole number of bytes"
    );
}

#[test]
fn name_must_not_be_empty() {
    assert_eq!(
        fail(&["--name="]),
        "invalid value \"\" for --name: expected a non-empty member name"
    );
}

#[test]
fn cors_and_host_whitelist_lists() {
    let c = serve(&[
        "--cors=http://a.example, http://b.example,http://a.example",
        "--host-whitelist=",
    ]);
    assert_eq!(c.cors, ["http://a.example", "http://b.example"]);
    assert!(c.host_whitelist.is_empty());
}

// ------------------------------------------------------- help and version

#[test]
fn help_and_version() {
    assert_eq!(
        try_parse(&["--help"], &[]),
        Ok(Invocation::Help(help_text()))
    );
    assert_eq!(
        try_parse(&["-h", "--bogus"], &[]),
        Ok(Invocation::Help(help_text()))
    );
    assert_eq!(try_parse(&["--version"], &[]), Ok(Invocation::Version));
    assert_eq!(
        try_parse(
            &["--name=x", "-version"],
            &[("ETCD_HEARTBEAT_INTERVAL", "abc")]
        ),
        Ok(Invocation::Version)
    );
    let text = help_text();
    assert!(text.starts_with("Usage:\n"));
    assert!(text.contains("\n  --discovery-srv ''\n"));
    assert!(text.contains("\n  --proxy-refresh-interval '30000' (not supported yet)\n"));
}

// ----------------------------------------------------------- robustness

/// Arbitrary token soup must never panic: every outcome is Ok or Err.
#[test]
fn no_panics_on_arbitrary_input() {
    let pieces = [
        "--",
        "-",
        "---",
        "-=",
        "=",
        "--name",
        "-name=",
        "--pre-vote",
        "true",
        "0x",
        "--election-timeout=",
        "--heartbeat-interval=18446744073709551616",
        "--initial-cluster=",
        "--initial-cluster==",
        "--initial-cluster=a=http://[::1]:1,a=http://[::1]:1",
        "http://[",
        "--listen-peer-urls=http://[::1",
        "--grpc-keepalive-interval=9999999999999999h",
        "--grpc-keepalive-interval=.",
        "µ",
        "--µ=1",
        "--log-outputs=,",
        "--cors",
        "--auth-token=jwt",
        "--version=maybe",
        "-h=",
        "--quota-backend-bytes=0b",
    ];
    // A small deterministic generator (no external crates): xorshift.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1000 {
        let n = (next() % 5) as usize;
        let args: Vec<&str> = (0..n)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let _ = try_parse(&args, &[]);
        let value = pieces[(next() % pieces.len() as u64) as usize];
        let var = SETTINGS[(next() % SETTINGS.len() as u64) as usize].env_var();
        let _ = parse_with(args.iter().copied(), vec![(var, value.to_string())], &[]);
    }
}

#[test]
fn error_messages_are_single_line() {
    let e = fail(&["--name=a\nb", "--heartbeat-interval=x\ny"]);
    assert!(!e.contains('\n'), "{e}");
    let e = fail_env(&[], &[("ETCD_ELECTION_TIMEOUT", "1\n2")]).to_string();
    assert!(!e.contains('\n'), "{e}");
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_errors_not_panics() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let bad = OsString::from_vec(vec![b'-', b'-', b'n', 0xff]);
    let e = parse(vec![bad], Vec::new()).unwrap_err();
    assert_eq!(e.to_string(), "bad flag syntax: \"--n\u{fffd}\"");
    assert_eq!(e.exit_code(), 2);
    let value = OsString::from_vec(vec![0xff]);
    let e = parse(vec![OsString::from("--name"), value], Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value \"\u{fffd}\" for --name: expected valid UTF-8 text"
    );
}

// ------------------------------------------------------------ discovery

#[test]
fn discovery_flags_select_the_bootstrap() {
    use crate::{Bootstrap, DiscoveryFallback};
    assert_eq!(serve(&[]).bootstrap, Bootstrap::Static);
    // The URL is kept exactly as given: etcd hashes it into the member IDs.
    let url = "http://10.0.0.9:2379/v2/keys/_etcd/registry/Tok";
    let c = serve(&[&format!("--discovery={url}")]);
    assert_eq!(
        c.bootstrap,
        Bootstrap::Discovery {
            url: url.into(),
            proxy: None,
            // etcd's default, even though cairn cannot act on it.
            fallback: DiscoveryFallback::Proxy,
        }
    );
    // etcd's temporary one-member cluster; the default --initial-cluster
    // is cleared, as etcd does.
    assert_eq!(c.initial_cluster.len(), 1);
    assert_eq!(c.raw_value("initial-cluster"), Some(""));
    let c = serve_env(
        &[
            "--discovery-fallback=exit",
            "--discovery-proxy=10.0.0.1:3128",
        ],
        &[("ETCD_DISCOVERY", "https://discovery.etcd.io/abc")],
    );
    assert_eq!(
        c.bootstrap,
        Bootstrap::Discovery {
            url: "https://discovery.etcd.io/abc".into(),
            proxy: Some("http://10.0.0.1:3128".into()),
            fallback: DiscoveryFallback::Exit,
        }
    );
    let c = serve(&[
        "--discovery-srv=example.com",
        "--discovery-srv-name=prod",
        "--name=infra1",
    ]);
    assert_eq!(
        c.bootstrap,
        Bootstrap::Srv {
            domain: "example.com".into(),
            service_name: "prod".into()
        }
    );
    // Own-membership checks wait for the SRV records.
    assert!(
        serve(&[
            "--discovery-srv=example.com",
            "--initial-advertise-peer-urls=http://10.0.0.1:2380"
        ])
        .bootstrap
            != Bootstrap::Static
    );
    // With --initial-cluster, the service name is unused (as in etcd).
    let c = serve(&[
        "--discovery-srv-name=prod",
        "--initial-cluster=default=http://localhost:2380",
    ]);
    assert_eq!(c.bootstrap, Bootstrap::Static);
}

#[test]
fn discovery_refuses_what_etcd_refuses() {
    let conflict = "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"";
    assert_eq!(
        fail(&[
            "--discovery=http://h:2379/v2/keys/d",
            "--initial-cluster=default=http://localhost:2380"
        ]),
        conflict
    );
    assert_eq!(
        fail(&[
            "--discovery=http://h:2379/v2/keys/d",
            "--discovery-srv=example.com"
        ]),
        conflict
    );
    assert_eq!(
        fail_env(
            &["--discovery-srv=example.com"],
            &[("ETCD_INITIAL_CLUSTER", "default=http://localhost:2380")]
        )
        .to_string(),
        conflict
    );
    assert_eq!(
        fail(&["--discovery-fallback=maybe"]),
        "invalid value \"maybe\" for --discovery-fallback: expected exit or proxy"
    );
    let e = fail(&["--discovery=ftp://h/x"]);
    assert!(
        e.starts_with("invalid value \"ftp://h/x\" for --discovery: expected a discovery URL"),
        "{e}"
    );
    let e = fail(&["--discovery=not a url"]);
    assert!(
        e.contains("for --discovery: expected a discovery URL"),
        "{e}"
    );
    let e = fail(&[
        "--discovery=http://h:2379/v2/keys/d",
        "--discovery-proxy=https://proxy:3128",
    ]);
    assert!(
        e.contains("for --discovery-proxy: expected an http:// proxy"),
        "{e}"
    );
    assert_eq!(
        fail(&["--discovery-srv-name=prod", "--name=infra1"]),
        "couldn't find local name \"infra1\" in the initial cluster configuration: --discovery-srv-name is set without --discovery-srv, which leaves no initial cluster (as in etcd)"
    );
}

#[test]
fn lease_checkpoint_persist_needs_checkpoints_as_in_etcd() {
    assert!(
        fail(&["--experimental-enable-lease-checkpoint-persist"]).contains(
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint"
        )
    );
    let c = serve(&[
        "--experimental-enable-lease-checkpoint",
        "--experimental-enable-lease-checkpoint-persist",
    ]);
    assert!(c.experimental_enable_lease_checkpoint_persist);
    assert!(serve(&[]).enable_grpc_gateway);
    assert!(!serve(&["--enable-grpc-gateway=false"]).enable_grpc_gateway);
}
