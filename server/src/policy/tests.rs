//! The plugin integration against real components (the committed
//! `plugins/dist/*.wasm` and the hostile `plugins/testdata/*.wat`), on a
//! real store: set changes, judging writes, the auth hooks, stale stamps.

use super::Enforcer;
use super::config::load_declaration;
use super::judge::{Plan, StoreReader, plan_request};
use super::model::{Declaration, Mode, Source};
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request;
use crate::pb::cairnpb::{
    InternalRequest, PluginBlob, PluginOrigin, PluginRecord, PluginSetChange, PluginStamp,
};
use crate::pb::etcdserverpb::{Compare, PutRequest, RequestOp, TxnRequest, compare, request_op};
use crate::state::lease::Lessor;
use crate::storage::Db;
use crate::storage::mvcc::Store;
use bytes::Bytes;
use cairn_plugin_host::{Credential, KeyReader, PasswordCredential};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

fn dist(name: &str) -> Bytes {
    Bytes::from(std::fs::read(plugins_dir().join("dist").join(format!("{name}.wasm"))).unwrap())
}

fn hostile(name: &str) -> Bytes {
    let path = plugins_dir().join("testdata").join(format!("{name}.wat"));
    Bytes::from(wat::parse_file(&path).unwrap())
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    store: Arc<Store>,
    e: Arc<Enforcer>,
    index: u64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let (store, _) = Store::open(db.clone(), 1000).unwrap();
    let e = Enforcer::open_with(
        &db,
        Arc::clone(&store),
        &Default::default(),
        dir.path().to_path_buf(),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        db,
        store,
        e,
        index: 10,
    }
}

impl Fixture {
    fn put(&self, key: &str, value: &str) {
        let mut b = self.store.begin_batch();
        let mut w = b.begin_write();
        b.put(&mut w, key.to_owned().into(), value.to_owned().into(), 0)
            .unwrap();
        b.end_write(w);
        b.commit().unwrap();
    }

    fn record(&self, name: &str, wasm: Bytes, f: impl FnOnce(&mut Declaration)) -> PluginRecord {
        let mut d = Declaration::new(name, Source::Bytes(wasm));
        // Far above an honest call: tests share two cores, and a call may
        // be descheduled for longer than the default 50 ms.
        d.deadline = Duration::from_secs(2);
        f(&mut d);
        load_declaration(&self.e, &d, PluginOrigin::Api).unwrap().0
    }

    /// Applies a change the way the apply loop does, committing it (etcd
    /// auth off).
    fn apply(
        &mut self,
        expected: u64,
        plugins: Vec<PluginRecord>,
        blobs: Vec<Bytes>,
    ) -> Result<super::SetOutcome, Error> {
        self.apply_as(expected, plugins, blobs, None, &[])
    }

    /// [`Self::apply`] with etcd auth's view (`by_root`, see
    /// `Enforcer::apply_change`) and the plugins the change vouches for.
    fn apply_as(
        &mut self,
        expected: u64,
        plugins: Vec<PluginRecord>,
        blobs: Vec<Bytes>,
        by_root: Option<bool>,
        vouch: &[&str],
    ) -> Result<super::SetOutcome, Error> {
        self.index += 1;
        let change = PluginSetChange {
            expected_version: expected,
            plugins,
            blobs: blobs
                .into_iter()
                .map(|wasm| PluginBlob {
                    sha256: Bytes::copy_from_slice(&Sha256::digest(&wasm)),
                    wasm,
                })
                .collect(),
            config_declared: false,
            config_hash: Bytes::new(),
            cause: "test".into(),
            admin: None,
            vouch: vouch.iter().map(|v| v.to_string()).collect(),
        };
        let mut batch = self.db.db.batch();
        let r = self.e.apply_change(
            &mut batch,
            &self.db,
            change,
            self.index,
            self.store.current_rev() + 1,
            by_root,
        );
        batch.commit().unwrap();
        r
    }

    fn judge(&self, request: Request) -> Result<(), Error> {
        let rev = self.store.current_rev();
        let plan: Plan = plan_request(&request, &self.store, rev)?;
        let reader: Arc<dyn KeyReader> = Arc::new(StoreReader {
            store: Arc::clone(&self.store),
            rev,
        });
        let set = self.e.current();
        Enforcer::judge_blocking(
            &set,
            &plan,
            None,
            &reader,
            rev + 1,
            Instant::now() + Duration::from_secs(30),
        )
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.to_owned().into(),
        value: value.to_owned().into(),
        ..Default::default()
    })
}

fn naming(d: &mut Declaration) {
    d.config = vec![
        ("prefixes".into(), "/apps/".into()),
        ("pattern".into(), "^/apps/[a-z0-9-]+$".into()),
    ];
    d.prefixes = vec![Bytes::from_static(b"/apps/")];
}

#[test]
fn set_changes_are_versioned_checked_and_stored() {
    let mut fx = fixture();
    assert_eq!(fx.e.version(), 0);
    let wasm = dist("key-naming");
    let rec = fx.record("naming", wasm.clone(), naming);

    // A binary the cluster does not hold must travel with the change.
    assert!(matches!(
        fx.apply(0, vec![rec.clone()], vec![]),
        Err(Error::PluginSetRejected(_))
    ));
    // ... and match its digest.
    let mut bad = rec.clone();
    bad.sha256 = Bytes::from(vec![0u8; 32]);
    assert!(matches!(
        fx.apply(0, vec![bad], vec![wasm.clone()]),
        Err(Error::PluginSetRejected(_))
    ));

    let first = fx.put_and_apply(&rec, &wasm);
    assert!(first.changed);
    assert_eq!(first.version, 1);
    assert_eq!(fx.e.current().plugins[0].record.since_version, 1);
    // The same set again changes nothing; a stale base version is refused.
    let same = fx.apply(1, vec![rec.clone()], vec![]).unwrap();
    assert!(!same.changed);
    assert_eq!(same.version, 1);
    assert_eq!(
        fx.apply(0, vec![rec.clone()], vec![]),
        Err(Error::PluginSetChanged)
    );
    // A name twice is refused.
    assert!(matches!(
        fx.apply(1, vec![rec.clone(), rec.clone()], vec![]),
        Err(Error::PluginSetRejected(_))
    ));

    // A restart finds the same set (and loads it).
    let again = Enforcer::open_with(
        &fx.db,
        Arc::clone(&fx.store),
        &Default::default(),
        fx._dir.path().to_path_buf(),
    )
    .unwrap();
    let set = again.current();
    assert_eq!(set.version, 1);
    assert_eq!(set.first_revision, first.first_revision);
    assert_eq!(set.records(), fx.e.current().records());
    assert!(set.plugins[0].load.wait(Duration::from_secs(60)).is_ok());

    // Removing it bumps the version and drops the stored binary.
    let blob_key = format!("plugin/blob/{}", hex::encode(&rec.sha256));
    assert!(fx.db.meta.get(&blob_key).unwrap().is_some());
    let removed = fx.apply(1, vec![], vec![]).unwrap();
    assert_eq!(removed.version, 2);
    assert!(fx.db.meta.get(&blob_key).unwrap().is_none());
    assert!(fx.e.current().plugins.is_empty());
}

impl Fixture {
    fn put_and_apply(&mut self, rec: &PluginRecord, wasm: &Bytes) -> super::SetOutcome {
        self.put("/before", "x");
        let v = self.e.version();
        self.apply(v, vec![rec.clone()], vec![wasm.clone()])
            .unwrap()
    }
}

#[test]
fn writes_are_judged_by_mode_and_failure_policy() {
    let mut fx = fixture();
    let rec = fx.record("naming", dist("key-naming"), naming);
    fx.apply(0, vec![rec.clone()], vec![dist("key-naming")])
        .unwrap();
    match fx.judge(put("/apps/Bad", "x")) {
        Err(Error::PluginDenied { plugin, reason, .. }) => {
            assert_eq!(plugin, "naming");
            assert!(
                reason.contains("does not match the naming pattern"),
                "{reason}"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let msg = fx.judge(put("/apps/Bad", "x")).unwrap_err().to_string();
    assert!(
        msg.starts_with("cairn: plugin \"naming\" denied the write: "),
        "{msg}"
    );
    assert_eq!(fx.judge(put("/apps/good", "x")), Ok(()));
    // Outside its prefixes the plugin is not asked.
    assert_eq!(fx.judge(put("/other/Bad", "x")), Ok(()));

    // Audit and dry-run never refuse.
    let mut audit = rec.clone();
    audit.mode = Mode::Audit.to_pb() as i32;
    fx.apply(1, vec![audit], vec![]).unwrap();
    assert_eq!(fx.judge(put("/apps/Bad", "x")), Ok(()));
    let mut staged = rec.clone();
    staged.mode = Mode::DryRun.to_pb() as i32;
    fx.apply(2, vec![staged], vec![]).unwrap();
    assert_eq!(fx.judge(put("/apps/Bad", "x")), Ok(()));

    // A trapping plugin fails closed by default, and open when told to.
    let trap = fx.record("trap", hostile("trap"), |_| {});
    fx.apply(3, vec![trap.clone()], vec![hostile("trap")])
        .unwrap();
    match fx.judge(put("/any", "x")) {
        Err(Error::PluginFailed { plugin, kind, .. }) => {
            assert_eq!(plugin, "trap");
            assert_eq!(kind, "trap");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let mut open = trap;
    open.fail_open = true;
    fx.apply(4, vec![open], vec![]).unwrap();
    assert_eq!(fx.judge(put("/any", "x")), Ok(()));
}

#[test]
fn hostile_plugins_fail_within_their_deadline() {
    let mut fx = fixture();
    let spin = fx.record("spin", hostile("infinite-loop"), |d| {
        d.deadline = Duration::from_millis(30)
    });
    let bomb = fx.record("bomb", hostile("memory-bomb"), |d| {
        d.memory_bytes = 1 << 20;
        d.prefixes = vec![Bytes::from_static(b"/bomb/")];
    });
    fx.apply(
        0,
        vec![spin.clone(), bomb],
        vec![hostile("infinite-loop"), hostile("memory-bomb")],
    )
    .unwrap();
    let started = Instant::now();
    match fx.judge(put("/spin", "x")) {
        Err(Error::PluginFailed { plugin, kind, .. }) => {
            assert_eq!((plugin.as_str(), kind.as_str()), ("spin", "timeout"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The bomb only applies to /bomb/ (the spinner applies everywhere:
    // remove it first).
    let bomb = fx.e.current().get("bomb").unwrap().record.clone();
    fx.apply(1, vec![bomb], vec![]).unwrap();
    match fx.judge(put("/bomb/x", "x")) {
        Err(Error::PluginFailed { plugin, kind, .. }) => {
            assert_eq!((plugin.as_str(), kind.as_str()), ("bomb", "out_of_memory"));
        }
        other => panic!("expected out of memory, got {other:?}"),
    }
    assert_eq!(fx.judge(put("/elsewhere", "x")), Ok(()));

    // The wrong interface is refused at load, naming the plugin.
    let d = Declaration::new("wrong", Source::Bytes(hostile("wrong-interface")));
    let err = load_declaration(&fx.e, &d, PluginOrigin::Api).unwrap_err();
    assert!(
        err.contains("wrong") && err.contains("not a usable Cairn plugin"),
        "{err}"
    );
}

/// HMAC-SHA256, for minting hmac-auth tokens.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

pub(crate) fn hmac_token(secret: &str, principal: &str) -> String {
    format!(
        "{principal}.{}",
        hex::encode(hmac_sha256(secret.as_bytes(), principal.as_bytes()))
    )
}

#[test]
fn auth_hooks_authenticate_and_authorize() {
    let mut fx = fixture();
    let secret = "0123456789abcdef-secret";
    let rec = fx.record("hmac", dist("hmac-auth"), |d| {
        d.config = vec![
            ("secret".into(), secret.into()),
            ("grant.alice".into(), "/apps/".into()),
        ];
    });
    fx.apply(0, vec![rec], vec![dist("hmac-auth")]).unwrap();
    let e = &fx.e;
    assert_eq!(
        e.authenticate_blocking(&Credential::BearerToken(hmac_token(secret, "alice")), false),
        super::AuthDecision::Authenticated {
            plugin: "hmac".into(),
            principal: "alice".into()
        }
    );
    let forged = hmac_token("another-secret-of-16", "alice");
    assert!(matches!(
        e.authenticate_blocking(&Credential::BearerToken(forged), false),
        super::AuthDecision::Refused { plugin, reason } if plugin == "hmac" && reason.contains("invalid token signature")
    ));
    assert_eq!(
        e.authenticate_blocking(
            &Credential::Password(PasswordCredential {
                name: "alice".into(),
                password: "pw".into()
            }),
            false
        ),
        super::AuthDecision::Abstain
    );
    use crate::auth::Access;
    assert_eq!(
        e.authorize_blocking(Some("alice"), Access::Put, b"/apps/x", b""),
        Ok(())
    );
    assert_eq!(
        e.authorize_blocking(Some("alice"), Access::Read, b"/apps/", b"/apps0"),
        Ok(())
    );
    let denied = e
        .authorize_blocking(Some("alice"), Access::Put, b"/other", b"")
        .unwrap_err()
        .to_string();
    assert!(
        denied.contains("\"hmac\" denied access") && denied.contains("may not write"),
        "{denied}"
    );
    let anonymous = e
        .authorize_blocking(None, Access::Read, b"/apps/x", b"")
        .unwrap_err()
        .to_string();
    assert!(anonymous.contains("anonymous"), "{anonymous}");
    // Admin operations are not an authorizer question.
    assert_eq!(e.authorize_blocking(None, Access::Admin, b"", b""), Ok(()));
    // Writes go through the same authorizer when judged.
    assert!(fx.judge(put("/other", "x")).is_err());
}

#[test]
fn stale_stamps_and_changed_txn_branches_are_refused() {
    let mut fx = fixture();
    let lessor = Lessor::default();
    let entry = |request: Request, stamp: Option<PluginStamp>| InternalRequest {
        id: 1,
        request: Some(request),
        auth: None,
        plugin_stamp: stamp,
        leader_term: 0,
    };
    let stamp = |version, txn_path: Vec<bool>| Some(PluginStamp { version, txn_path });
    let check = |fx: &Fixture, req: &InternalRequest| {
        let mut batch = fx.store.begin_batch();
        fx.e.refuse_stale(req, &mut batch, &lessor)
    };
    // Version 0: unstamped writes pass.
    assert_eq!(check(&fx, &entry(put("/a", "x"), None)), None);
    let rec = fx.record("naming", dist("key-naming"), naming);
    fx.apply(0, vec![rec], vec![dist("key-naming")]).unwrap();
    assert_eq!(
        check(&fx, &entry(put("/a", "x"), None)),
        Some(Error::PluginSetChanged)
    );
    assert_eq!(check(&fx, &entry(put("/a", "x"), stamp(1, vec![]))), None);
    assert_eq!(
        check(&fx, &entry(put("/a", "x"), stamp(2, vec![]))),
        Some(Error::PluginSetChanged)
    );
    // Non-writes are never stamped.
    assert_eq!(
        check(&fx, &entry(Request::Compaction(Default::default()), None)),
        None
    );

    // A txn judged for its success branch, which fails once the key exists.
    let txn = Request::Txn(TxnRequest {
        compare: vec![Compare {
            key: "/flag".into(),
            target: compare::CompareTarget::Version as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: "/apps/ok".into(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: "/apps/Bad".into(),
                ..Default::default()
            })),
        }],
    });
    let plan = plan_request(&txn, &fx.store, fx.store.current_rev()).unwrap();
    assert_eq!(plan.path, vec![true]);
    assert_eq!(plan.writes.len(), 1);
    assert_eq!(plan.writes[0].key.as_ref(), b"/apps/ok");
    assert_eq!(plan.reads.len(), 1);
    assert_eq!(fx.judge(txn.clone()), Ok(()));
    let judged = entry(txn.clone(), stamp(1, vec![true]));
    assert_eq!(check(&fx, &judged), None);
    fx.put("/flag", "1");
    assert_eq!(check(&fx, &judged), Some(Error::PluginSetChanged));
    // Judged again, the failure branch writes a key the plugin refuses.
    assert!(matches!(fx.judge(txn), Err(Error::PluginDenied { .. })));
}

/// An authenticator deployed while etcd auth was off is not consulted once
/// auth is on (anyone could deploy it then), until root deploys it again;
/// with auth on, only root may change the set at all.
#[test]
fn authenticators_deployed_without_auth_are_suspended_under_auth() {
    let mut fx = fixture();
    let secret = "0123456789abcdef-secret";
    let rec = fx.record("hmac", dist("hmac-auth"), |d| {
        d.config = vec![("secret".into(), secret.into())];
    });
    fx.apply(0, vec![rec.clone()], vec![dist("hmac-auth")])
        .unwrap();
    let alice = || Credential::BearerToken(hmac_token(secret, "alice"));
    let authenticated = |d: super::AuthDecision| matches!(d, super::AuthDecision::Authenticated { ref principal, .. } if principal == "alice");
    assert!(authenticated(fx.e.authenticate_blocking(&alice(), false)));
    // Auth on: not vouched for, so not asked.
    assert_eq!(
        fx.e.authenticate_blocking(&alice(), true),
        super::AuthDecision::Abstain
    );
    // A change by someone who is not root is refused under auth.
    assert_eq!(
        fx.apply_as(1, vec![rec.clone()], vec![], Some(false), &["hmac"]),
        Err(Error::Auth(crate::auth::AuthError::PermissionDenied))
    );
    // Root changing something else does not vouch for it ...
    let other = fx.record("names", dist("key-naming"), |_| {});
    let v = fx
        .apply_as(
            1,
            vec![rec.clone(), other.clone()],
            vec![dist("key-naming")],
            Some(true),
            &["names"],
        )
        .unwrap()
        .version;
    assert_eq!(
        fx.e.authenticate_blocking(&alice(), true),
        super::AuthDecision::Abstain
    );
    // ... deploying it again does, and that is a new set version.
    let vouched = fx
        .apply_as(v, vec![rec, other], vec![], Some(true), &["hmac"])
        .unwrap();
    assert!(vouched.changed);
    assert!(authenticated(fx.e.authenticate_blocking(&alice(), true)));
}
