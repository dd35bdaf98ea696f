//! Layered configuration and live reload, seen from outside: `cairn config`
//! subcommands, a distro-style etcd.conf, live changes to a serving
//! three-member cluster, bad edits, editors' save styles and save storms.

use cairn_tests::{Cluster, Options, cairn_bin, client, http_get, runtime, wait_output};
use etcd_client::{GetOptions, Txn, TxnOp};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn run_cairn(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (String, String, Option<i32>) {
    let mut cmd = Command::new(cairn_bin());
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCD_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = wait_output(cmd.spawn().expect("spawn cairn"), WAIT);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

fn line<'a>(show: &'a str, key: &str) -> &'a str {
    show.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{show}"))
}

#[test]
fn precedence_across_every_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("etcd.conf"),
        "#[Member]\nETCD_NAME=\"from-file\"\nETCD_SNAPSHOT_COUNT=\"5000\"\nETCD_MAX_TXN_OPS=\"64\"\nETCD_HEARTBEAT_INTERVAL=\"90\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("second.toml"), "max-txn-ops = 32\n").unwrap();
    let (out, err, code) = run_cairn(
        &[
            "config",
            "show",
            "--sources",
            "--config-file=etcd.conf",
            "--config-file=second.toml",
            "--heartbeat-interval=70",
        ],
        &[
            ("ETCD_SNAPSHOT_COUNT", "6000"),
            ("ETCD_HEARTBEAT_INTERVAL", "80"),
        ],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        line(&out, "name"),
        "name = from-file  # from file etcd.conf:2"
    );
    assert_eq!(
        line(&out, "data-dir"),
        "data-dir = from-file.etcd  # from default"
    );
    assert_eq!(
        line(&out, "max-txn-ops"),
        "max-txn-ops = 32  # from file second.toml:1"
    );
    assert_eq!(
        line(&out, "snapshot-count"),
        "snapshot-count = 6000  # from env ETCD_SNAPSHOT_COUNT, overriding file etcd.conf:3 = 5000"
    );
    assert_eq!(
        line(&out, "heartbeat-interval"),
        "heartbeat-interval = 70  # from flag --heartbeat-interval, overriding file etcd.conf:5 = 90"
    );
    // A flag and its env var both set: the flag wins, with a warning.
    assert!(err.contains("ETCD_HEARTBEAT_INTERVAL"), "{err}");
}

#[test]
fn config_check_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.conf");
    std::fs::write(&good, "ETCD_NAME=\"a\"\nETCD_HEARTBEAT_INTERVAL=\"100\"\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"a\"\nheartbeat-interval = \"soon\"\n").unwrap();
    let (out, _, code) = run_cairn(&["config", "check", "good.conf"], &[], dir.path());
    assert_eq!(code, Some(0), "{out}");
    let (out, err, code) = run_cairn(&["config", "check", "bad.toml"], &[], dir.path());
    assert_eq!(code, Some(1));
    let text = format!("{out}{err}");
    assert!(text.contains("bad.toml:2"), "{text}");
    assert!(text.contains("heartbeat-interval"), "{text}");
    // Every problem, not just the first.
    std::fs::write(
        &bad,
        "bcrypt-cost = 99\nmax-txn-ops = 0\nlisten-client-urls = \"localhost:2379\"\n",
    )
    .unwrap();
    let (out, err, code) = run_cairn(&["config", "check", "bad.toml"], &[], dir.path());
    assert_eq!(code, Some(1));
    let text = format!("{out}{err}");
    for want in [
        "bad.toml:1, key bcrypt-cost",
        "bad.toml:2, key max-txn-ops",
        "bad.toml:3, key listen-client-urls",
        "invalid (3 errors)",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

/// `cairn config check` loads what a start loads after the file itself:
/// the TLS files (present, parseable, key matching certificate) and the
/// declared plugins (readable, compiling, exporting their hooks), and
/// reports every problem it finds.
#[test]
fn config_check_loads_tls_files_and_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let ca = cairn_tests::tls::Ca::new("check-ca");
    let (cert, key) = ca.issue("m1", &["127.0.0.1"]).write(dir.path(), "server");
    let (_, other_key) = ca.issue("m2", &["127.0.0.1"]).write(dir.path(), "other");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let plugins = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let good_wasm = plugins.join("dist/allow-all.wasm");
    let trap = wat::parse_file(plugins.join("testdata/wrong-interface.wat")).unwrap();
    let bad_wasm = dir.path().join("wrong-interface.wasm");
    std::fs::write(&bad_wasm, trap).unwrap();
    let file = dir.path().join("cairn.toml");
    let good = format!(
        "listen-client-urls = \"https://127.0.0.1:2379\"\nadvertise-client-urls = \"https://127.0.0.1:2379\"\n\
         cert-file = {cert:?}\nkey-file = {key:?}\ntrusted-ca-file = {ca_file:?}\n\
         [plugins.fine]\nfile = {good_wasm:?}\nhooks = \"validator\"\n"
    );
    std::fs::write(&file, &good).unwrap();
    let (out, err, code) = run_cairn(&["config", "check", "cairn.toml"], &[], dir.path());
    assert_eq!(code, Some(0), "{out}{err}");

    // A key of another certificate, a missing peer CA, a plugin file that
    // is not there and one that is not a Cairn plugin: four errors.
    let bad = good.replace(&format!("{key:?}"), &format!("{other_key:?}"))
        + &format!(
            "\n[plugins.missing]\nfile = \"/nonexistent/p.wasm\"\n\
             [plugins.wrong]\nfile = {bad_wasm:?}\n"
        );
    let bad = bad.replacen(
        "[plugins.fine]",
        &format!(
            "peer-cert-file = {cert:?}\npeer-key-file = {key:?}\npeer-trusted-ca-file = \"/nonexistent/ca.crt\"\n\n[plugins.fine]"
        ),
        1,
    );
    std::fs::write(&file, &bad).unwrap();
    let (out, err, code) = run_cairn(&["config", "check", "cairn.toml"], &[], dir.path());
    let text = format!("{out}{err}");
    assert_eq!(code, Some(1), "{text}");
    for want in [
        "private key does not belong to the certificate",
        "--peer-trusted-ca-file=/nonexistent/ca.crt",
        "plugin `missing`: cannot read /nonexistent/p.wasm",
        "wrong",
        "invalid (4 errors)",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn distro_etcd_conf_with_trailing_comments_and_unknown_key_starts() {
    let mut c = Cluster::launch(Options {
        members: 1,
        config_toml: Some(String::new()),
        ..Options::default()
    });
    // Replace the TOML with a distro-style env-file.
    let m = &c.members[0];
    let conf = c.config_path(0).with_file_name("etcd.conf");
    std::fs::write(
        &conf,
        format!(
            "#[Member]\n#ETCD_CORS=\"\"\nETCD_DATA_DIR=\"{}\" # where the data lives\nETCD_NAME=\"{}\"\n#ETCD_SNAPSHOT_COUNT=\"100000\"\nCD_MAX_SNAPSHOTS=\"5\"\n\
             ETCD_LISTEN_PEER_URLS=\"{}\"\nETCD_LISTEN_CLIENT_URLS=\"{}\"\n#\n#[Clustering]\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\nETCD_ADVERTISE_CLIENT_URLS=\"{}\"\n\
             ETCD_INITIAL_CLUSTER=\"{}={}\"\nETCD_INITIAL_CLUSTER_TOKEN=\"distro\"\nETCD_INITIAL_CLUSTER_STATE=\"new\"\n",
            m.data_dir.display(),
            m.name,
            m.peer_url(),
            m.client_url(),
            m.peer_url(),
            m.client_url(),
            m.name,
            m.peer_url()
        ),
    )
    .unwrap();
    let log = m.log_path.clone();
    c.stop(0);
    let mut child = Command::new(cairn_bin())
        .arg(format!("--config-file={}", conf.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let healthy = cairn_tests::eventually(Duration::from_secs(20), || {
        (cairn_tests::health(&c.members[0].client_addr()) == Some(true)).then_some(())
    });
    // A live edit that goes wrong says so, as startup does: the log names
    // the line with a did-you-mean, and /config/status marks the reload
    // partial and lists what was ignored.
    let mut edited = std::fs::read_to_string(&conf).unwrap();
    edited.push_str("ETCD_MAX_TXN_OPPS=\"64\"\nETCD_SNAPSHOT_COUNT=\"500\" # fewer\n");
    std::fs::write(&conf, edited).unwrap();
    let partial = healthy.and_then(|_| {
        cairn_tests::eventually(WAIT, || {
            let (_, body) = http_get(&c.members[0].client_addr(), "/config/status").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["last_trigger"] != "startup").then_some(v)
        })
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy.is_some(), "did not start:\n{text}");
    let st = partial.unwrap_or_else(|| panic!("the edit was not reloaded:\n{text}"));
    assert_eq!(st["outcome"], "partial", "{st:#}");
    let warnings = st["warnings"].to_string();
    assert!(
        warnings.contains("ETCD_MAX_TXN_OPPS")
            && warnings.contains("did you mean ETCD_MAX_TXN_OPS"),
        "{st:#}"
    );
    assert!(
        warnings.contains("etcd.conf:17"),
        "trailing comment: {st:#}"
    );
    let reload_log: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("config reload:"))
        .collect();
    assert!(
        reload_log
            .iter()
            .any(|l| l.contains("did you mean ETCD_MAX_TXN_OPS")),
        "{text}"
    );
    assert!(text.contains("configuration reloaded partially"), "{text}");
    assert!(text.contains("CD_MAX_SNAPSHOTS"), "{text}");
    assert!(text.contains("did you mean ETCD_MAX_SNAPSHOTS"), "{text}");
    assert!(
        text.contains("etcd.conf:3"),
        "trailing comment not reported:\n{text}"
    );
}

/// Debian's etcd unit loads /etc/default/etcd with `EnvironmentFile=` and
/// sets a few variables of its own: the copies follow the file (edits
/// reload live), a variable of the unit's own wins and an edit it masks is
/// reported, in `/config/status` and in `config show --sources`.
#[test]
fn environment_file_layout_reloads_and_names_what_the_environment_masks() {
    let mut c = Cluster::launch(Options {
        members: 1,
        config_toml: Some(String::new()),
        ..Options::default()
    });
    let m = &c.members[0];
    let file = c.config_path(0).with_file_name("etcd");
    let lines = [
        format!("ETCD_DATA_DIR={}", m.data_dir.display()),
        format!("ETCD_NAME={}", m.name),
        format!("ETCD_LISTEN_PEER_URLS={}", m.peer_url()),
        format!("ETCD_LISTEN_CLIENT_URLS={}", m.client_url()),
        format!("ETCD_INITIAL_ADVERTISE_PEER_URLS={}", m.peer_url()),
        format!("ETCD_ADVERTISE_CLIENT_URLS={}", m.client_url()),
        format!("ETCD_INITIAL_CLUSTER={}={}", m.name, m.peer_url()),
        "ETCD_LOG_LEVEL=info".to_string(),
        "ETCD_MAX_TXN_OPS=4".to_string(),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let log = m.log_path.clone();
    let addr = m.client_addr();
    c.stop(0);
    // What systemd hands the process: every line of the file, plus the
    // unit's own Environment= (which differs from the file here).
    let mut env: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.retain(|(k, _)| k != "ETCD_MAX_TXN_OPS");
    env.push(("ETCD_MAX_TXN_OPS".into(), "8".into()));
    let mut cmd = Command::new(cairn_bin());
    cmd.arg(format!("--config-file={}", file.display()))
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let guard = scopeguard(&mut child);
    let healthy = cairn_tests::eventually(Duration::from_secs(20), || {
        (cairn_tests::health(&addr) == Some(true)).then_some(())
    });
    assert!(
        healthy.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // `config show --sources` under the same environment.
    let (out, err, code) = run_cairn(
        &[
            "config",
            "show",
            "--sources",
            &format!("--config-file={}", file.display()),
        ],
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        file.parent().unwrap(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("max-txn-ops = 8  # from env ETCD_MAX_TXN_OPS, overriding file")
            && out.contains("(also in the environment as ETCD_LOG_LEVEL, a copy of the file)"),
        "{out}"
    );

    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("ETCD_LOG_LEVEL=info", "ETCD_LOG_LEVEL=debug")
        .replace("ETCD_MAX_TXN_OPS=4", "ETCD_MAX_TXN_OPS=6");
    std::fs::write(&file, edited).unwrap();
    let st = cairn_tests::eventually(WAIT, || {
        let (_, body) = http_get(&addr, "/config/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["last_trigger"] != "startup").then_some(v)
    })
    .unwrap_or_else(|| panic!("no reload:\n{}", std::fs::read_to_string(&log).unwrap()));
    assert_eq!(st["outcome"], "partial", "{st:#}");
    assert!(
        st["applied"]
            .to_string()
            .contains("--log-level: info -> debug"),
        "{st:#}"
    );
    let warnings = st["warnings"].to_string();
    assert!(
        warnings.contains("--max-txn-ops: the edit to file")
            && warnings.contains("environment variable ETCD_MAX_TXN_OPS = 8 overrides"),
        "{st:#}"
    );
    drop(guard);
}

/// Kills the child when the test ends, pass or fail.
fn scopeguard(child: &mut std::process::Child) -> impl Drop + '_ {
    struct Guard<'a>(&'a mut std::process::Child);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    Guard(child)
}

/// Appends (or replaces) `key = value` in every member's file, in place.
fn set_everywhere(c: &Cluster, key: &str, value: &str) {
    for i in 0..c.members.len() {
        c.set_config_line(i, key, value);
    }
}

fn status(c: &Cluster, i: usize) -> serde_json::Value {
    let (_, body) = http_get(&c.members[i].client_addr(), "/config/status").expect("status");
    serde_json::from_str(&body).expect("status json")
}

fn wait_applied(c: &Cluster, key: &str, value: &str) {
    for i in 0..c.members.len() {
        let (_, body) = http_get(&c.members[i].client_addr(), "/config").expect("config");
        let want = format!("{key} = {value}");
        let ok = cairn_tests::eventually(WAIT, || {
            let (_, body) = http_get(&c.members[i].client_addr(), "/config").ok()?;
            body.lines().any(|l| l == want).then_some(())
        });
        assert!(
            ok.is_some(),
            "member {i} never applied {want}:\n{body}\n{}",
            status(c, i)
        );
    }
}

#[test]
fn live_settings_change_without_a_restart() {
    let c = Cluster::start(Options {
        config_toml: Some("max-request-bytes = 1048576\nmax-txn-ops = 4\n".into()),
        ..Options::default()
    });
    let pids_before: Vec<u32> = (0..3).map(|i| c.members[i].pid()).collect();
    let rt = runtime();
    rt.block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        let two_mib = vec![b'x'; 2 * 1024 * 1024];

        // --max-request-bytes
        let e = cl.put("big", two_mib.clone(), None).await.unwrap_err();
        assert!(e.to_string().contains("larger than max"), "{e}");
        set_everywhere(&c, "max-request-bytes", "4194304");
        wait_applied(&c, "max-request-bytes", "4194304");
        cl.put("big", two_mib.clone(), None)
            .await
            .expect("2 MiB put after raising the limit");
        // Far above what the limit at startup allowed: the transport's own
        // ceiling does not depend on the value the member started with.
        set_everywhere(&c, "max-request-bytes", "8388608");
        wait_applied(&c, "max-request-bytes", "8388608");
        cl.put("bigger", vec![b'y'; 5 * 1024 * 1024], None)
            .await
            .expect("5 MiB put after raising the limit to 8 MiB");
        let e = cl
            .put("too-big", vec![b'z'; 9 * 1024 * 1024], None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than max"), "{e}");

        // --max-txn-ops
        let ops = || {
            (0..6)
                .map(|i| TxnOp::put(format!("t{i}"), "v", None))
                .collect::<Vec<_>>()
        };
        let e = cl.txn(Txn::new().and_then(ops())).await.unwrap_err();
        assert!(e.to_string().contains("too many operations"), "{e}");
        set_everywhere(&c, "max-txn-ops", "16");
        wait_applied(&c, "max-txn-ops", "16");
        cl.txn(Txn::new().and_then(ops()))
            .await
            .expect("6-op txn after raising the limit");

        // --log-level
        set_everywhere(&c, "log-level", "\"debug\"");
        wait_applied(&c, "log-level", "debug");
        cl.put("after-debug", "x", None).await.unwrap();

        // --snapshot-count: the log gets compacted after that many entries.
        set_everywhere(&c, "snapshot-count", "20");
        wait_applied(&c, "snapshot-count", "20");
        for i in 0..50 {
            cl.put(format!("s{i}"), "x", None).await.unwrap();
        }

        // --quota-backend-bytes, visible in the metrics.
        set_everywhere(&c, "quota-backend-bytes", "123456789");
        wait_applied(&c, "quota-backend-bytes", "123456789");

        // --heartbeat-interval and --election-timeout together.
        set_everywhere(&c, "heartbeat-interval", "60");
        set_everywhere(&c, "election-timeout", "900");
        wait_applied(&c, "heartbeat-interval", "60");
        wait_applied(&c, "election-timeout", "900");
        cl.put("after-timing", "x", None)
            .await
            .expect("writes after a timing change");

        // Auto-compaction, periodic: history older than 1 s goes, in
        // batches of the (live) --experimental-compaction-batch-limit.
        set_everywhere(&c, "experimental-compaction-batch-limit", "4");
        wait_applied(&c, "experimental-compaction-batch-limit", "4");
        for i in 0..20 {
            cl.put("churn", format!("{i}"), None).await.unwrap();
        }
        let old = cl
            .put("hist", "1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        cl.put("hist", "2", None).await.unwrap();
        set_everywhere(&c, "auto-compaction-mode", "\"periodic\"");
        set_everywhere(&c, "auto-compaction-retention", "\"1s\"");
        wait_applied(&c, "auto-compaction-retention", "1s");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = cl
                .get("hist", Some(GetOptions::new().with_revision(old)))
                .await;
            match r {
                Err(e) if e.to_string().contains("compacted") => break,
                _ => {
                    assert!(Instant::now() < deadline, "auto-compaction never ran");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    // No restart happened, and the effects are visible.
    let pids_after: Vec<u32> = (0..3).map(|i| c.members[i].pid()).collect();
    assert_eq!(pids_before, pids_after);
    let leader = c.wait_leader(WAIT);
    assert!(
        c.members[leader]
            .log()
            .contains("triggering raft log compaction")
    );
    assert!(
        c.members[0].log().contains(" D | "),
        "no debug logs after the level change"
    );
    // At debug, one line per request says what it was and how it ended.
    assert!(
        (0..3).any(|i| c.members[i].log().lines().any(|l| l.contains(" D | ")
            && l.contains("method=\"Put\"")
            && l.contains("key=\"after-debug\"")
            && l.contains("outcome=\"ok\""))),
        "no request line for the put made at debug"
    );
    // The overwritten `churn` revisions went in several batches of 4 (at
    // the startup limit of 1000 they would have taken one).
    let batched = cairn_tests::eventually(WAIT, || {
        let log = c.members[0].log();
        log.lines()
            .filter(|l| l.contains("finished scheduled compaction"))
            .filter_map(|l| l.split("batches=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
            .any(|n| n >= 5)
            .then_some(())
    });
    assert!(
        batched.is_some(),
        "no compaction in batches of 4:\n{}",
        cairn_tests::tail(&c.members[0].log(), 40)
    );
    let (_, metrics) = http_get(&c.members[0].client_addr(), "/metrics").unwrap();
    assert!(
        metrics.contains("etcd_server_quota_backend_bytes 123456789"),
        "{metrics}"
    );
    // Restart-only settings are reported, not applied.
    set_everywhere(&c, "max-concurrent-streams", "1000");
    let pending = cairn_tests::eventually(WAIT, || {
        let st = status(&c, 0);
        let text = st["pending_restart"].to_string();
        text.contains("takes effect after restart").then_some(text)
    });
    assert!(pending.is_some(), "{}", status(&c, 0));
}

#[test]
fn bad_edit_keeps_serving_on_the_old_config() {
    let c = Cluster::start(Options {
        members: 1,
        config_toml: Some("max-txn-ops = 8\n".into()),
        ..Options::default()
    });
    let path = c.config_path(0);
    let good = std::fs::read_to_string(&path).unwrap();
    // An election timeout below 5 heartbeats is refused.
    let bad: String = good
        .lines()
        .map(|l| {
            if l.starts_with("election-timeout") {
                "election-timeout = 10".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, bad + "\n").unwrap();
    let failed = cairn_tests::eventually(WAIT, || {
        let st = status(&c, 0);
        (st["last_reload_successful"] == false).then_some(st)
    })
    .expect("the bad edit was not noticed");
    let err = failed["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("cairn.toml"), "{err}");
    assert!(err.contains("election-timeout"), "{err}");
    let (_, metrics) = http_get(&c.members[0].client_addr(), "/metrics").unwrap();
    assert!(metrics.contains("cairn_config_last_reload_successful 0"));
    // Still serving, on the old values.
    assert_eq!(cairn_tests::health(&c.members[0].client_addr()), Some(true));
    let (_, cfg) = http_get(&c.members[0].client_addr(), "/config").unwrap();
    assert!(cfg.lines().any(|l| l == "max-txn-ops = 8"), "{cfg}");
    // A syntax error names the line.
    std::fs::write(&path, format!("{good}this is not toml\n")).unwrap();
    let st = cairn_tests::eventually(WAIT, || {
        let st = status(&c, 0);
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cairn.toml:"))
            .then_some(st)
    });
    assert!(st.is_some(), "{}", status(&c, 0));
    // Fixing it recovers.
    std::fs::write(&path, good.replace("max-txn-ops = 8", "max-txn-ops = 9")).unwrap();
    wait_applied(&c, "max-txn-ops", "9");
    let (_, metrics) = http_get(&c.members[0].client_addr(), "/metrics").unwrap();
    assert!(metrics.contains("cairn_config_last_reload_successful 1"));
    // SIGHUP and the admin endpoint reload too.
    let _ = Command::new("kill")
        .args(["-HUP", &c.members[0].pid().to_string()])
        .status();
    let hup = cairn_tests::eventually(WAIT, || {
        (status(&c, 0)["last_trigger"] == "sighup").then_some(())
    });
    assert!(hup.is_some());
}

#[test]
fn rename_on_save_symlink_swap_and_save_storms() {
    let c = Cluster::start(Options {
        members: 1,
        config_toml: Some("max-txn-ops = 8\n".into()),
        ..Options::default()
    });
    let path = c.config_path(0);
    let base = std::fs::read_to_string(&path).unwrap();
    let base = base.replace("max-txn-ops = 8\n", "");
    // An editor's save: write a temp file, rename it over the original.
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, format!("{base}max-txn-ops = 11\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_applied(&c, "max-txn-ops", "11");
    // A symlink swap (as Kubernetes updates mounted ConfigMaps): the config
    // path becomes a link; a new version is linked in atomically.
    let v1 = path.with_file_name("v1.toml");
    let v2 = path.with_file_name("v2.toml");
    std::fs::write(&v1, format!("{base}max-txn-ops = 12\n")).unwrap();
    std::fs::write(&v2, format!("{base}max-txn-ops = 13\n")).unwrap();
    let link_tmp = path.with_file_name("link.tmp");
    std::os::unix::fs::symlink(&v1, &link_tmp).unwrap();
    std::fs::rename(&link_tmp, &path).unwrap();
    wait_applied(&c, "max-txn-ops", "12");
    std::os::unix::fs::symlink(&v2, &link_tmp).unwrap();
    std::fs::rename(&link_tmp, &path).unwrap();
    wait_applied(&c, "max-txn-ops", "13");
    // 100 saves in one second, the last one wins.
    std::fs::remove_file(&path).unwrap();
    let started = Instant::now();
    for i in 0..100 {
        std::fs::write(&path, format!("{base}max-txn-ops = {}\n", 100 + i)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    wait_applied(&c, "max-txn-ops", "199");
    assert_eq!(cairn_tests::health(&c.members[0].client_addr()), Some(true));
    assert_eq!(status(&c, 0)["last_reload_successful"], true);
}

#[test]
fn log_outputs_choose_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let host = cairn_tests::free_host(&[2379, 2380]);
    let (client_url, peer_url) = (format!("http://{host}:2379"), format!("http://{host}:2380"));
    let out_path = dir.path().join("stdout.log");
    let err_path = dir.path().join("stderr.log");
    let mut child = Command::new(cairn_bin())
        .args([
            "--name=m1".to_string(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=m1={peer_url}"),
            "--config-file=".to_string(),
            "--log-outputs=stdout".to_string(),
        ])
        .env_remove("CAIRN_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let addr = format!("{host}:2379").parse().unwrap();
    let healthy = cairn_tests::eventually(Duration::from_secs(20), || {
        (cairn_tests::health(&addr) == Some(true)).then_some(())
    });
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy.is_some(), "did not start:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("ready to serve client requests"),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "logs on stderr:\n{stderr}");

    // The default logger writes capnslog lines.
    assert!(
        stdout
            .lines()
            .all(|l| l.get(26..31).is_some_and(|s| s.ends_with(" | "))),
        "{stdout}"
    );
}
