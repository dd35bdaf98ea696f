//! Behaviour of the example plugins (from `plugins/dist`), containment of
//! hostile ones (from `plugins/testdata`), and the host's own rules.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_plugin_host::{
    Access, AuthOutcome, Credential, FailurePolicy, Hooks, HostOptions, Limits, LoadedPlugin,
    PasswordCredential, PluginError, PluginHost, PluginSpec, Verdict, WasmSource, denial_message,
};
use common::*;
use sha2::{Digest, Sha256};

fn deny_reason(verdict: Verdict) -> String {
    match verdict {
        Verdict::Deny(reason) => reason,
        Verdict::Allow => panic!("expected a denial, got allow"),
    }
}

/// Calls the allow-all validator: the "is the host still fine?" probe used
/// after every hostile plugin.
fn assert_good_plugin_works(good: &LoadedPlugin) {
    let verdict = good
        .validate(&put("/any", "v"), no_keys())
        .expect("good plugin call");
    assert_eq!(verdict, Verdict::Allow);
}

// ---------------------------------------------------------------------------
// The committed artifacts

#[test]
fn dist_files_are_components_exporting_the_expected_hooks() {
    let host = host();
    let expected = [
        (
            "allow-all",
            Hooks {
                validator: true,
                ..Hooks::default()
            },
        ),
        (
            "key-naming",
            Hooks {
                validator: true,
                ..Hooks::default()
            },
        ),
        (
            "value-schema",
            Hooks {
                validator: true,
                ..Hooks::default()
            },
        ),
        (
            "hmac-auth",
            Hooks {
                authenticator: true,
                authorizer: true,
                ..Hooks::default()
            },
        ),
    ];
    for (name, hooks) in expected {
        let path = plugins_dir().join("dist").join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).unwrap();
        // Component binaries: magic, then version 0x0d and layer 1 (a core
        // module would have version 1, layer 0).
        assert_eq!(
            &bytes[..8],
            b"\0asm\x0d\0\x01\0",
            "{name} is not a component"
        );
        assert!(
            bytes.len() < 512 << 10,
            "{name} is {} bytes; keep dist small",
            bytes.len()
        );
        let plugin = load(&host, name, dist(name), &[]);
        assert_eq!(plugin.hooks(), hooks, "{name}");
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(plugin.sha256(), &digest);
    }
}

// ---------------------------------------------------------------------------
// key-naming

fn key_naming(host: &PluginHost) -> Arc<LoadedPlugin> {
    load(
        host,
        "key-naming",
        dist("key-naming"),
        &[
            ("prefixes", "/apps/, /teams/"),
            ("pattern", "/[a-z]+/[a-z0-9-]+"),
        ],
    )
}

#[test]
fn key_naming_allows_keys_matching_the_pattern() {
    let host = host();
    let plugin = key_naming(&host);
    for key in ["/apps/web-1", "/teams/core"] {
        assert_eq!(
            plugin.validate(&put(key, "x"), no_keys()).unwrap(),
            Verdict::Allow,
            "{key}"
        );
    }
}

#[test]
fn key_naming_denies_bad_keys_under_a_prefix_with_a_reason() {
    let host = host();
    let plugin = key_naming(&host);
    let reason = deny_reason(
        plugin
            .validate(&put("/apps/Web_1", "x"), no_keys())
            .unwrap(),
    );
    assert!(reason.contains("\"/apps/Web_1\""), "{reason}");
    assert!(reason.contains("\"/apps/\""), "{reason}");
    // The pattern comes from the plugin's config: config is visible inside.
    assert!(reason.contains("/[a-z]+/[a-z0-9-]+"), "{reason}");
    // Whole-key match: a matching prefix of the key is not enough.
    deny_reason(
        plugin
            .validate(&put("/apps/web/extra", "x"), no_keys())
            .unwrap(),
    );
}

#[test]
fn key_naming_ignores_other_prefixes_and_deletes() {
    let host = host();
    let plugin = key_naming(&host);
    assert_eq!(
        plugin
            .validate(&put("/other/Any_Thing", "x"), no_keys())
            .unwrap(),
        Verdict::Allow
    );
    assert_eq!(
        plugin
            .validate(&delete("/apps/Bad_Key", None), no_keys())
            .unwrap(),
        Verdict::Allow
    );
    assert_eq!(
        plugin
            .validate(&delete("/apps/", Some("/apps0")), no_keys())
            .unwrap(),
        Verdict::Allow
    );
}

#[test]
fn key_naming_fails_closed_when_misconfigured() {
    let host = host();
    let plugin = load(&host, "kn-noconf", dist("key-naming"), &[]);
    let reason = deny_reason(plugin.validate(&put("/apps/x", "x"), no_keys()).unwrap());
    assert!(
        reason.contains("misconfigured") && reason.contains("prefixes"),
        "{reason}"
    );

    let plugin = load(
        &host,
        "kn-badre",
        dist("key-naming"),
        &[("prefixes", "/a/"), ("pattern", "(")],
    );
    let reason = deny_reason(plugin.validate(&put("/a/x", "x"), no_keys()).unwrap());
    assert!(reason.contains("not a valid regex"), "{reason}");
}

// ---------------------------------------------------------------------------
// value-schema

fn value_schema(host: &PluginHost, extra: &[(&str, &str)]) -> Arc<LoadedPlugin> {
    let mut config = vec![("prefix", "/users/"), ("required", "name, email")];
    config.extend_from_slice(extra);
    load(host, "value-schema", dist("value-schema"), &config)
}

#[test]
fn value_schema_allows_objects_with_the_required_fields() {
    let host = host();
    let plugin = value_schema(&host, &[]);
    let ok = put(
        "/users/1",
        r#"{"name":"Ada","email":"ada@example.com","extra":1}"#,
    );
    assert_eq!(plugin.validate(&ok, no_keys()).unwrap(), Verdict::Allow);
    assert_eq!(
        plugin
            .validate(&put("/other", "not json"), no_keys())
            .unwrap(),
        Verdict::Allow
    );
    assert_eq!(
        plugin
            .validate(&delete("/users/1", None), no_keys())
            .unwrap(),
        Verdict::Allow
    );
}

#[test]
fn value_schema_denies_bad_values_with_reasons() {
    let host = host();
    let plugin = value_schema(&host, &[]);
    let reason = deny_reason(
        plugin
            .validate(&put("/users/1", "{not json"), no_keys())
            .unwrap(),
    );
    assert!(reason.contains("not valid JSON"), "{reason}");
    let reason = deny_reason(
        plugin
            .validate(&put("/users/1", "[1,2]"), no_keys())
            .unwrap(),
    );
    assert!(
        reason.contains("must be a JSON object, not an array"),
        "{reason}"
    );
    let reason = deny_reason(
        plugin
            .validate(&put("/users/1", r#"{"name":"Ada"}"#), no_keys())
            .unwrap(),
    );
    assert!(
        reason.ends_with("missing required field(s): email"),
        "{reason}"
    );
    let reason = deny_reason(plugin.validate(&put("/users/1", "{}"), no_keys()).unwrap());
    assert!(
        reason.ends_with("missing required field(s): name, email"),
        "{reason}"
    );
}

#[test]
fn value_schema_reads_extra_fields_through_the_key_reader() {
    let host = host();
    let plugin = value_schema(&host, &[("required-key", "/schemas/users")]);
    let reader = Arc::new(RecordingReader {
        keys: BTreeMap::from([(b"/schemas/users".to_vec(), b"age".to_vec())]),
        ..RecordingReader::default()
    });
    let value = r#"{"name":"Ada","email":"ada@example.com"}"#;
    let reason = deny_reason(
        plugin
            .validate(&put("/users/1", value), reader.clone())
            .unwrap(),
    );
    assert!(
        reason.ends_with("missing required field(s): age"),
        "{reason}"
    );
    assert_eq!(
        *reader.asked.lock().unwrap(),
        vec![b"/schemas/users".to_vec()]
    );

    // The same write against a keyspace without the schema key is fine.
    assert_eq!(
        plugin.validate(&put("/users/1", value), no_keys()).unwrap(),
        Verdict::Allow
    );
}

// ---------------------------------------------------------------------------
// hmac-auth

const SECRET: &str = "0123456789abcdef-test-secret";

/// HMAC-SHA256 (RFC 2104) over SHA-256, to mint tokens as an operator would.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn token(secret: &str, principal: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), principal.as_bytes());
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("{principal}.{hex}")
}

fn hmac_auth(host: &PluginHost) -> Arc<LoadedPlugin> {
    load(
        host,
        "hmac-auth",
        dist("hmac-auth"),
        &[
            ("secret", SECRET),
            ("grant.alice", "/a/, /shared/"),
            ("read.bob", "/shared/"),
            ("grant.root", "*"),
        ],
    )
}

#[test]
fn hmac_auth_accepts_a_valid_token() {
    let host = host();
    let plugin = hmac_auth(&host);
    let outcome = plugin
        .authenticate(&Credential::BearerToken(token(SECRET, "alice")), no_keys())
        .unwrap();
    assert_eq!(outcome, AuthOutcome::Authenticated("alice".into()));
}

#[test]
fn hmac_auth_refuses_forged_and_malformed_tokens() {
    let host = host();
    let plugin = hmac_auth(&host);
    let refused = |token: String| match plugin
        .authenticate(&Credential::BearerToken(token.clone()), no_keys())
        .unwrap()
    {
        AuthOutcome::Refused(reason) => reason,
        other => panic!("token {token:?}: expected a refusal, got {other:?}"),
    };
    // Signed with another secret.
    assert_eq!(
        refused(token("another-secret-of-16+bytes", "alice")),
        "invalid token signature"
    );
    // Alice's signature with another principal.
    let alice = token(SECRET, "alice");
    let forged = format!("root.{}", alice.split_once('.').unwrap().1);
    assert_eq!(refused(forged), "invalid token signature");
    assert!(refused("alice".into()).starts_with("malformed token"));
    assert!(refused("alice.zz".into()).starts_with("malformed token"));
    assert!(refused(format!("al ice.{}", "0".repeat(64))).starts_with("malformed token"));
    assert!(refused(String::new()).starts_with("malformed token"));
}

#[test]
fn hmac_auth_abstains_on_passwords() {
    let host = host();
    let plugin = hmac_auth(&host);
    let credential = Credential::Password(PasswordCredential {
        name: "alice".into(),
        password: "secret".into(),
    });
    assert_eq!(
        plugin.authenticate(&credential, no_keys()).unwrap(),
        AuthOutcome::Abstain
    );
}

/// The WAT password authenticator the server tests deploy (the examples
/// abstain on passwords): what it answers is what those tests rely on.
#[test]
fn password_fixture_admits_refuses_and_abstains() {
    let host = host();
    let plugin = load(&host, "password-auth", testdata("password-auth"), &[]);
    let password = |name: &str, password: &str| {
        let credential = Credential::Password(PasswordCredential {
            name: name.into(),
            password: password.into(),
        });
        plugin.authenticate(&credential, no_keys()).unwrap()
    };
    assert_eq!(
        password("alice", "open-sesame"),
        AuthOutcome::Authenticated("alice".into())
    );
    assert_eq!(
        password("bob", "open-sesame"),
        AuthOutcome::Authenticated("bob".into())
    );
    for wrong in ["open-sesamE", "open-sesame!", "x"] {
        assert_eq!(
            password("alice", wrong),
            AuthOutcome::Refused("wrong password".into()),
            "{wrong:?}"
        );
    }
    assert_eq!(password("alice", ""), AuthOutcome::Abstain);
    assert_eq!(
        plugin
            .authenticate(&Credential::BearerToken("alice.x".into()), no_keys())
            .unwrap(),
        AuthOutcome::Abstain
    );
}

#[test]
fn hmac_auth_authorizes_by_granted_prefixes() {
    let host = host();
    let plugin = hmac_auth(&host);
    let ask = |who: Option<&str>, access: Access, key: &str, end: Option<&str>| {
        plugin
            .authorize(
                who,
                access,
                key.as_bytes(),
                end.map(str::as_bytes),
                no_keys(),
            )
            .unwrap()
    };
    assert_eq!(
        ask(Some("alice"), Access::Put, "/a/x", None),
        Verdict::Allow
    );
    assert_eq!(
        ask(Some("alice"), Access::Read, "/a/", Some("/a0")),
        Verdict::Allow
    );
    assert_eq!(
        ask(Some("alice"), Access::DeleteRange, "/shared/k", None),
        Verdict::Allow
    );
    assert_eq!(
        ask(Some("bob"), Access::Read, "/shared/k", None),
        Verdict::Allow
    );
    assert_eq!(
        ask(Some("root"), Access::DeleteRange, "\0", Some("\0")),
        Verdict::Allow
    );

    let reason = deny_reason(ask(Some("alice"), Access::Put, "/b/x", None));
    assert_eq!(reason, r#"principal "alice" may not write "/b/x""#);
    // A range reaching past the granted prefix.
    let reason = deny_reason(ask(Some("alice"), Access::Read, "/a/", Some("/b")));
    assert!(reason.contains("may not read"), "{reason}");
    deny_reason(ask(Some("alice"), Access::Read, "/a/", Some("\0")));
    // Read-only grants do not allow writes.
    let reason = deny_reason(ask(Some("bob"), Access::Put, "/shared/k", None));
    assert!(reason.contains("may not write"), "{reason}");
    let reason = deny_reason(ask(None, Access::Read, "/a/x", None));
    assert!(reason.contains("anonymous"), "{reason}");
    deny_reason(ask(Some("mallory"), Access::Read, "/a/x", None));
}

#[test]
fn calling_a_hook_the_plugin_lacks_is_an_error() {
    let host = host();
    let plugin = hmac_auth(&host);
    let err = plugin.validate(&put("/a", "b"), no_keys()).unwrap_err();
    assert!(matches!(err, PluginError::MissingHook { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin `hmac-auth` does not implement the validator hook"
    );
}

// ---------------------------------------------------------------------------
// Hostile plugins

#[test]
fn infinite_loop_times_out_and_the_host_stays_usable() {
    let host = host();
    let good = load(&host, "allow-all", dist("allow-all"), &[]);
    let deadline = Duration::from_millis(50);
    let looper = load_with_limits(
        &host,
        "infinite-loop",
        testdata("infinite-loop"),
        Limits {
            deadline,
            ..Limits::default()
        },
    );
    for _ in 0..3 {
        let started = Instant::now();
        let err = looper.validate(&put("/k", "v"), no_keys()).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "plugin `infinite-loop` exceeded its deadline of 50 ms"
        );
        // Loose on purpose (shared CI machines): the bound is that it stops.
        assert!(took >= deadline / 2, "stopped too early: {took:?}");
        assert!(
            took < deadline * 20,
            "took {took:?} for a {deadline:?} deadline"
        );
        assert_good_plugin_works(&good);
    }
}

#[test]
fn memory_bomb_runs_out_of_memory_and_the_host_stays_usable() {
    let host = host();
    let good = load(&host, "allow-all", dist("allow-all"), &[]);
    let bomb = load_with_limits(
        &host,
        "memory-bomb",
        testdata("memory-bomb"),
        Limits {
            memory_bytes: 2 << 20,
            ..Limits::default()
        },
    );
    for _ in 0..3 {
        let err = bomb.validate(&put("/k", "v"), no_keys()).unwrap_err();
        assert!(
            matches!(err, PluginError::OutOfMemory { limit, .. } if limit == 2 << 20),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "plugin `memory-bomb` ran out of memory (limit 2097152 bytes)"
        );
        assert_good_plugin_works(&good);
    }
}

#[test]
fn trap_is_reported_and_the_host_stays_usable() {
    let host = host();
    let good = load(&host, "allow-all", dist("allow-all"), &[]);
    let trap = load(&host, "trap", testdata("trap"), &[]);
    for _ in 0..3 {
        let err = trap.validate(&put("/k", "v"), no_keys()).unwrap_err();
        let PluginError::Trap { message, .. } = &err else {
            panic!("expected a trap, got {err:?}");
        };
        assert!(message.contains("unreachable"), "{message}");
        assert!(
            err.to_string().starts_with("plugin `trap` trapped: "),
            "{err}"
        );
        assert_good_plugin_works(&good);
    }
}

#[test]
fn wrong_interface_is_refused_at_load() {
    let host = host();
    let good = load(&host, "allow-all", dist("allow-all"), &[]);
    let err = host
        .load(PluginSpec::new("not-a-plugin", testdata("wrong-interface")))
        .unwrap_err();
    assert!(matches!(err, PluginError::BadInterface { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("plugin `not-a-plugin`: not a usable Cairn plugin"),
        "{message}"
    );
    assert!(message.contains("exports none of the hooks"), "{message}");
    assert!(message.contains("its exports: answer"), "{message}");
    assert!(err.is_load_error());
    assert_good_plugin_works(&good);
}

#[test]
fn wrong_types_are_refused_at_load() {
    let host = host();
    let good = load(&host, "allow-all", dist("allow-all"), &[]);
    let err = host
        .load(PluginSpec::new("wrong-types", testdata("wrong-types")))
        .unwrap_err();
    assert!(matches!(err, PluginError::BadInterface { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("cairn:policy/validation@0.1.0"),
        "{message}"
    );
    assert!(message.contains("wrong type"), "{message}");
    assert_good_plugin_works(&good);
}

#[test]
fn core_modules_and_garbage_are_refused_with_a_hint() {
    let host = host();
    let core = wat::parse_str("(module)").unwrap();
    let err = host
        .load(PluginSpec::new("core", WasmSource::Bytes(core.into())))
        .unwrap_err();
    assert!(matches!(err, PluginError::Compile { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );

    let err = host
        .load(PluginSpec::new(
            "garbage",
            WasmSource::Bytes(b"hello".to_vec().into()),
        ))
        .unwrap_err();
    assert!(matches!(err, PluginError::Compile { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("plugin `garbage`: does not compile"),
        "{err}"
    );
}

#[test]
fn components_importing_files_or_clocks_are_refused() {
    // A component importing wasi:clocks/wall-clock: not provided to plugins.
    let wat = r#"(component
        (import "wasi:clocks/wall-clock@0.2.0" (instance
            (type $dt (record (field "seconds" u64) (field "nanoseconds" u32)))
            (export "datetime" (type $dt' (eq $dt)))
            (export "now" (func (result $dt')))))
    )"#;
    let bytes = wat::parse_str(wat).unwrap();
    let host = host();
    let err = host
        .load(PluginSpec::new(
            "clock-user",
            WasmSource::Bytes(bytes.into()),
        ))
        .unwrap_err();
    assert!(matches!(err, PluginError::BadInterface { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("wasi:clocks/wall-clock"), "{message}");
    assert!(message.contains("no files, sockets or clocks"), "{message}");
}

#[test]
fn a_bad_plugin_does_not_disturb_concurrent_good_calls() {
    let host = host();
    let good = load(&host, "allow-all", dist("allow-all"), &[]);
    let schema = value_schema(&host, &[]);
    let looper = load_with_limits(
        &host,
        "infinite-loop",
        testdata("infinite-loop"),
        Limits {
            deadline: Duration::from_millis(20),
            ..Limits::default()
        },
    );
    let bomb = load(&host, "memory-bomb", testdata("memory-bomb"), &[]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (good, schema, looper, bomb) = (&good, &schema, &looper, &bomb);
            s.spawn(move || {
                for i in 0..25 {
                    assert_good_plugin_works(good);
                    let value = format!(r#"{{"name":"n{t}-{i}","email":"e"}}"#);
                    assert_eq!(
                        schema
                            .validate(&put("/users/x", &value), no_keys())
                            .unwrap(),
                        Verdict::Allow
                    );
                    if i % 10 == 0 {
                        let err = looper.validate(&put("/k", "v"), no_keys()).unwrap_err();
                        assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
                        let err = bomb.validate(&put("/k", "v"), no_keys()).unwrap_err();
                        assert!(matches!(err, PluginError::OutOfMemory { .. }), "{err:?}");
                    }
                }
            });
        }
    });
}

#[test]
fn calls_wait_for_a_free_slot_then_report_busy() {
    let host = own_host(HostOptions {
        max_concurrent_calls: 1,
        ..HostOptions::default()
    });
    let looper = load_with_limits(
        &host,
        "infinite-loop",
        testdata("infinite-loop"),
        Limits {
            deadline: Duration::from_millis(800),
            ..Limits::default()
        },
    );
    let quick = load_with_limits(
        &host,
        "allow-all",
        dist("allow-all"),
        Limits {
            deadline: Duration::from_millis(20),
            ..Limits::default()
        },
    );
    std::thread::scope(|s| {
        let running = s.spawn(|| looper.validate(&put("/k", "v"), no_keys()));
        std::thread::sleep(Duration::from_millis(100));
        let err = quick.validate(&put("/k", "v"), no_keys()).unwrap_err();
        assert!(matches!(err, PluginError::Busy { .. }), "{err:?}");
        assert!(matches!(
            running.join().unwrap(),
            Err(PluginError::Timeout { .. })
        ));
    });
    // The slot came back.
    assert_good_plugin_works(&quick);
}

// ---------------------------------------------------------------------------
// Host rules

#[test]
fn invalid_specs_are_refused_before_compiling() {
    let host = host();
    let err = host
        .load(PluginSpec::new("bad name!", dist("allow-all")))
        .unwrap_err();
    assert!(matches!(err, PluginError::InvalidSpec { .. }), "{err:?}");
    let too_much = Limits {
        memory_bytes: 1 << 30,
        ..Limits::default()
    };
    let err = host
        .load(PluginSpec::new("greedy", dist("allow-all")).with_limits(too_much))
        .unwrap_err();
    assert!(err.to_string().contains("memory limit"), "{err}");
    let err = host
        .load(PluginSpec::new(
            "missing",
            WasmSource::Path("/nonexistent/x.wasm".into()),
        ))
        .unwrap_err();
    assert!(matches!(err, PluginError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("plugin `missing`: cannot read /nonexistent/x.wasm"),
        "{err}"
    );
}

#[test]
fn failure_policy_turns_errors_into_verdicts() {
    let host = host();
    let trap = load(&host, "trap", testdata("trap"), &[]);
    let result = || trap.validate(&put("/k", "v"), no_keys());

    let closed = FailurePolicy::default().verdict(result());
    let reason = deny_reason(closed);
    assert!(
        reason.starts_with("plugin failed (trap): plugin `trap` trapped"),
        "{reason}"
    );
    assert_eq!(FailurePolicy::FailOpen.verdict(result()), Verdict::Allow);
    assert_eq!(
        FailurePolicy::FailOpen.verdict(Ok(Verdict::Deny("no".into()))),
        Verdict::Deny("no".into())
    );

    let auth_err = || {
        Err(PluginError::Timeout {
            plugin: "auth".into(),
            deadline: Duration::from_millis(5),
        })
    };
    assert!(matches!(
        FailurePolicy::FailClosed.auth_outcome(auth_err()),
        AuthOutcome::Refused(_)
    ));
    assert_eq!(
        FailurePolicy::FailOpen.auth_outcome(auth_err()),
        AuthOutcome::Abstain
    );

    assert_eq!(
        denial_message("key-naming", "bad key"),
        "denied by plugin `key-naming`: bad key"
    );
    let long = "x".repeat(5000);
    assert_eq!(
        denial_message("p", &long).len(),
        "denied by plugin `p`: ".len() + 1024
    );
}

#[test]
fn compiled_code_is_cached_on_disk_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let options = HostOptions {
        max_concurrent_calls: 4,
        cache_dir: Some(dir.path().join("cache")),
        ..HostOptions::default()
    };
    let first = PluginHost::new(options.clone()).unwrap();
    let plugin = load(&first, "allow-all", dist("allow-all"), &[]);
    let artifacts: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert_eq!(artifacts.len(), 1);
    let name = artifacts[0]
        .as_ref()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    assert!(
        name.starts_with(&plugin.sha256_hex()) && name.ends_with(".cwasm"),
        "{name}"
    );

    // A second host (a restarted server) loads the artifact and works.
    let second = PluginHost::new(options.clone()).unwrap();
    assert_good_plugin_works(&load(&second, "allow-all", dist("allow-all"), &[]));

    // A corrupted artifact is detected, removed and recompiled.
    let path = artifacts[0].as_ref().unwrap().path();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let third = PluginHost::new(options).unwrap();
    assert_good_plugin_works(&load(&third, "allow-all", dist("allow-all"), &[]));
}

#[test]
fn plugins_outlive_their_host_handle() {
    let host = own_host(HostOptions::default());
    let good = load(&host, "allow-all", dist("allow-all"), &[]);
    let looper = load_with_limits(
        &host,
        "infinite-loop",
        testdata("infinite-loop"),
        Limits {
            deadline: Duration::from_millis(20),
            ..Limits::default()
        },
    );
    drop(host);
    assert_good_plugin_works(&good);
    // Deadlines still fire: the epoch ticker lives as long as any plugin.
    let err = looper.validate(&put("/k", "v"), no_keys()).unwrap_err();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
}

#[test]
fn loaded_plugins_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LoadedPlugin>();
    assert_send_sync::<PluginHost>();
    assert_send_sync::<PluginError>();
}

// ---------------------------------------------------------------------------
// Benchmark (run with `cargo test -p cairn-plugin-host --release -- --ignored --nocapture`)

#[test]
#[ignore = "benchmark: run explicitly, in release mode"]
fn bench_trivial_validator_call_latency() {
    let host = host();
    let plugin = load(&host, "allow-all", dist("allow-all"), &[]);
    let request = put("/bench/key", "value");
    let reader = no_keys();
    for _ in 0..1_000 {
        plugin.validate(&request, reader.clone()).unwrap();
    }
    let calls = 20_000;
    let mut samples = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        plugin.validate(&request, reader.clone()).unwrap();
        samples.push(t.elapsed());
    }
    let total = started.elapsed();
    samples.sort();
    let pct = |p: f64| samples[((calls as f64 * p) as usize).min(calls - 1)].as_secs_f64() * 1e6;
    println!(
        "allow-all validate, 1 thread: {calls} calls in {:.2?}: {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        total,
        calls as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );

    let threads = 2;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..calls / threads {
                    plugin.validate(&request, reader.clone()).unwrap();
                }
            });
        }
    });
    let total = started.elapsed();
    println!(
        "allow-all validate, {threads} threads: {calls} calls in {total:.2?}: {:.0} calls/s",
        calls as f64 / total.as_secs_f64()
    );
}
