//! What a request asks of which plugins, and the verdict.
//!
//! A write is broken into the operations a validator sees (one per put or
//! delete-range; for a txn, the writes of the branches it will take, as
//! decided against the state it is judged at) and the accesses an
//! authorizer sees (the writes, plus the txn's compares, ranges and
//! `prev_kv` reads). Plugins are asked in set order; the first enforced
//! denial wins. Calls run on a blocking thread (a plugin may use its whole
//! deadline, and async workers must not be held that long), unless every
//! plugin involved has proven fast (`LoadCell::inline_ok`): then the
//! handoff would cost more than the calls.

use super::Enforcer;
use super::metrics::PLUGIN_METRICS;
use super::model::{Mode, RecordExt};
use super::set::{ActivePlugin, ActiveSet};
use crate::error::Error;
use crate::pb::cairnpb::PluginStamp;
use crate::pb::cairnpb::internal_request::Request;
use crate::pb::etcdserverpb::{TxnRequest, request_op};
use crate::state::txn::{self, ReadBackend};
use crate::storage::mvcc::Store;
use bytes::Bytes;
use cairn_plugin_host::{
    Access, AuthOutcome, Credential, Hook, KeyReader, LoadedPlugin, Operation, PluginError,
    Verdict, WriteRequest,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Plans with more operations than this always run on a blocking thread.
const MAX_INLINE_OPS: usize = 8;

/// What judging a plan takes (see `Enforcer::plan_calls`).
pub(crate) struct PlanCalls {
    pub inline: bool,
}

/// Longest a call waits for its plugin's component to finish compiling on
/// this member (right after a set change or a restart).
const LOAD_WAIT: Duration = Duration::from_secs(30);
/// Default time budget of an auth hook call made outside a write.
const AUTH_BUDGET: Duration = Duration::from_secs(5);

/// One write as validators see it.
#[derive(Debug, Clone)]
pub(crate) struct WriteOp {
    pub op: Operation,
    pub in_txn: bool,
    pub key: Bytes,
    pub range_end: Option<Bytes>,
    pub value: Option<Bytes>,
    pub lease: Option<i64>,
}

/// A read an authorizer is asked about.
#[derive(Debug, Clone)]
pub(crate) struct ReadOp {
    pub key: Bytes,
    pub range_end: Option<Bytes>,
}

/// Everything a request asks of the plugins.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub writes: Vec<WriteOp>,
    pub reads: Vec<ReadOp>,
    /// For a txn: the branches taken, pre-order (see `flatten_path`).
    pub path: Vec<bool>,
}

fn end(b: &Bytes) -> Option<Bytes> {
    (!b.is_empty()).then(|| b.clone())
}

/// A txn's decided branches as a list: this level's outcome, then each
/// nested txn's (of the branch taken), depth first.
pub(crate) fn flatten_path(p: &txn::Path) -> Vec<bool> {
    fn go(p: &txn::Path, out: &mut Vec<bool>) {
        out.push(p.succeeded);
        for n in &p.nested {
            go(n, out);
        }
    }
    let mut out = Vec::new();
    go(p, &mut out);
    out
}

/// The plan of a v3 write, judged against the store at `rev`.
pub(crate) fn plan_request(request: &Request, store: &Arc<Store>, rev: i64) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    let current = |key: &[u8]| store.get_at(key, rev).ok().flatten();
    match request {
        Request::Put(p) => push_put(&mut plan, p, false, &current),
        Request::DeleteRange(d) => push_delete(&mut plan, d, false),
        Request::Txn(t) => {
            let backend = ReadBackend { store, rev };
            let path = txn::decide(&backend, t)?;
            walk_txn(&mut plan, t, &path, &current);
            plan.path = flatten_path(&path);
        }
        _ => {}
    }
    Ok(plan)
}

fn push_put(
    plan: &mut Plan,
    p: &crate::pb::etcdserverpb::PutRequest,
    in_txn: bool,
    current: &dyn Fn(&[u8]) -> Option<crate::pb::mvccpb::KeyValue>,
) {
    // `ignore_value` / `ignore_lease` keep what the key has: show the
    // plugin what will actually be written.
    let existing = (p.ignore_value || p.ignore_lease)
        .then(|| current(&p.key))
        .flatten();
    let value = if p.ignore_value {
        existing.as_ref().map(|kv| kv.value.clone())
    } else {
        Some(p.value.clone())
    };
    let lease = if p.ignore_lease {
        existing.as_ref().map_or(0, |kv| kv.lease)
    } else {
        p.lease
    };
    plan.writes.push(WriteOp {
        op: Operation::Put,
        in_txn,
        key: p.key.clone(),
        range_end: None,
        value,
        lease: (lease != 0).then_some(lease),
    });
    if p.prev_kv {
        plan.reads.push(ReadOp {
            key: p.key.clone(),
            range_end: None,
        });
    }
}

fn push_delete(plan: &mut Plan, d: &crate::pb::etcdserverpb::DeleteRangeRequest, in_txn: bool) {
    plan.writes.push(WriteOp {
        op: Operation::DeleteRange,
        in_txn,
        key: d.key.clone(),
        range_end: end(&d.range_end),
        value: None,
        lease: None,
    });
    if d.prev_kv {
        plan.reads.push(ReadOp {
            key: d.key.clone(),
            range_end: end(&d.range_end),
        });
    }
}

fn walk_txn(
    plan: &mut Plan,
    t: &TxnRequest,
    path: &txn::Path,
    current: &dyn Fn(&[u8]) -> Option<crate::pb::mvccpb::KeyValue>,
) {
    for c in &t.compare {
        plan.reads.push(ReadOp {
            key: c.key.clone(),
            range_end: end(&c.range_end),
        });
    }
    let ops = if path.succeeded {
        &t.success
    } else {
        &t.failure
    };
    let mut nested = path.nested.iter();
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => plan.reads.push(ReadOp {
                key: r.key.clone(),
                range_end: end(&r.range_end),
            }),
            Some(request_op::Request::RequestPut(p)) => push_put(plan, p, true, current),
            Some(request_op::Request::RequestDeleteRange(d)) => push_delete(plan, d, true),
            Some(request_op::Request::RequestTxn(inner)) => {
                if let Some(np) = nested.next() {
                    walk_txn(plan, inner, np, current);
                }
            }
            None => {}
        }
    }
}

/// The plan of a v2 write (`None` for reads and the TTL sweep). v2 paths
/// are shown to plugins as keys; a recursive delete as the range of the
/// directory.
pub(crate) fn plan_v2(req: &crate::v2::V2Request) -> Option<Plan> {
    use crate::v2::V2Op;
    let key = Bytes::from(req.path.clone());
    let write = match req.op {
        V2Op::Set | V2Op::Create | V2Op::Update | V2Op::CompareAndSwap => WriteOp {
            op: Operation::Put,
            in_txn: false,
            key,
            range_end: None,
            value: (!req.dir).then(|| Bytes::from(req.value.clone())),
            lease: None,
        },
        V2Op::CreateInOrder => WriteOp {
            op: Operation::Put,
            in_txn: false,
            // The new node's name is chosen when it is applied; show its
            // directory.
            key: Bytes::from(format!("{}/", req.path.trim_end_matches('/'))),
            range_end: None,
            value: (!req.dir).then(|| Bytes::from(req.value.clone())),
            lease: None,
        },
        V2Op::Delete | V2Op::CompareAndDelete => WriteOp {
            op: Operation::DeleteRange,
            in_txn: false,
            range_end: (req.recursive || req.dir).then(|| {
                crate::state::prefix_end(format!("{}/", req.path.trim_end_matches('/')).as_bytes())
            }),
            key,
            value: None,
            lease: None,
        },
        V2Op::QGet | V2Op::Sync => return None,
    };
    Some(Plan {
        writes: vec![write],
        ..Plan::default()
    })
}

/// `host.get` over the MVCC store at one revision.
pub(crate) struct StoreReader {
    pub store: Arc<Store>,
    pub rev: i64,
}

impl KeyReader for StoreReader {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // `rev` is the current revision when judging (never compacted yet)
        // or a dry run's revision, checked against compaction up front.
        self.store
            .get_at(key, self.rev)
            .ok()
            .flatten()
            .map(|kv| kv.value.to_vec())
    }
}

/// `host.get` over the v2 store (for v2 writes).
pub(crate) struct V2Reader {
    pub v2: Arc<parking_lot::RwLock<crate::v2::V2Store>>,
}

impl KeyReader for V2Reader {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let path = std::str::from_utf8(key).ok()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let ev = self.v2.read().get(path, false, false, now).ok()?;
        ev.node?.value.map(String::into_bytes)
    }
}

/// Why a call produced no verdict.
pub(crate) struct Failure {
    pub kind: String,
    pub message: String,
}

/// At most this many failure/audit lines per second, over all plugins: a
/// broken plugin under load must not flood the log (metrics count all).
const LOG_LINES_PER_SECOND: u64 = 20;
static LOG_WINDOW: AtomicU64 = AtomicU64::new(0);

fn log_allowed() -> bool {
    let sec = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // High 40 bits: the second; low 24 bits: lines logged in it.
    let cur = LOG_WINDOW.load(Ordering::Relaxed);
    let (cur_sec, count) = (cur >> 24, cur & 0xff_ffff);
    if cur_sec != sec & 0xff_ffff_ffff {
        LOG_WINDOW.store(((sec & 0xff_ffff_ffff) << 24) | 1, Ordering::Relaxed);
        return true;
    }
    if count < LOG_LINES_PER_SECOND {
        LOG_WINDOW.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    false
}

fn hook_label(hook: Hook) -> &'static str {
    match hook {
        Hook::Validator => "validator",
        Hook::Authenticator => "authenticator",
        Hook::Authorizer => "authorizer",
    }
}

/// One call, bounded by the plugin's deadline and by the request's.
pub(crate) fn call<T>(
    p: &ActivePlugin,
    hook: Hook,
    deadline: Instant,
    f: impl FnOnce(&LoadedPlugin) -> Result<T, PluginError>,
) -> Result<T, Failure> {
    let name = p.name();
    let label = hook_label(hook);
    let fail = |kind: &str, message: String| {
        PLUGIN_METRICS
            .errors
            .with_label_values(&[name, label, kind])
            .inc();
        Failure {
            kind: kind.to_owned(),
            message,
        }
    };
    let now = Instant::now();
    let Some(left) = deadline.checked_duration_since(now) else {
        return Err(fail(
            "request_timeout",
            format!("the request ran out of time before plugin `{name}` was asked"),
        ));
    };
    let loaded = p
        .load
        .wait(left.min(LOAD_WAIT))
        .map_err(|m| fail("not_loaded", format!("plugin `{name}` is not loaded: {m}")))?;
    let started = Instant::now();
    let result = f(&loaded);
    let took = started.elapsed();
    p.call_metrics(hook).observe(took);
    p.load.record_call(took, result.is_ok());
    result.map_err(|e| fail(e.kind(), e.to_string()))
}

/// Turns a validator's or authorizer's answer into allow or an error,
/// according to the plugin's mode and failure policy.
fn settle(
    p: &ActivePlugin,
    hook: Hook,
    what: &str,
    subject: &[u8],
    result: Result<Verdict, Failure>,
) -> Result<(), Error> {
    let name = p.name();
    let mode = p.record.mode_();
    let label = hook_label(hook);
    match result {
        Ok(Verdict::Allow) => Ok(()),
        Ok(Verdict::Deny(reason)) => {
            PLUGIN_METRICS
                .denials
                .with_label_values(&[name, label, mode.as_str()])
                .inc();
            let key = String::from_utf8_lossy(subject);
            if mode == Mode::Audit {
                if log_allowed() {
                    tracing::info!(target: "cairn_plugin", plugin = name, hook = label, key = %key, "audit: the plugin would deny {what}: {reason}");
                }
                return Ok(());
            }
            tracing::debug!(target: "cairn_plugin", plugin = name, hook = label, key = %key, "denied {what}: {reason}");
            Err(Error::PluginDenied {
                plugin: name.to_owned(),
                what: what.to_owned(),
                reason,
            })
        }
        Err(f) => {
            let enforced = mode == Mode::Enforce && !p.record.fail_open;
            if log_allowed() {
                tracing::warn!(target: "cairn_plugin", plugin = name, hook = label, kind = %f.kind, enforced,
                    "plugin call failed ({}): {}",
                    if enforced { "failing closed" } else { "ignored: fail-open or audit" },
                    f.message);
            }
            if enforced {
                Err(Error::PluginFailed {
                    plugin: name.to_owned(),
                    kind: f.kind,
                    cause: f.message,
                })
            } else {
                Ok(())
            }
        }
    }
}

fn to_access(a: crate::auth::Access) -> Option<Access> {
    match a {
        crate::auth::Access::Read => Some(Access::Read),
        crate::auth::Access::Put => Some(Access::Put),
        crate::auth::Access::DeleteRange => Some(Access::DeleteRange),
        // Admin operations have no key range: not an authorizer question.
        crate::auth::Access::Admin => None,
    }
}

/// An authenticator's answer for the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// The credential is valid and stands for `principal`.
    Authenticated { plugin: String, principal: String },
    /// An enforcing authenticator refused the credential (or failed and
    /// fails closed). The client must not be let in.
    Refused { plugin: String, reason: String },
    /// No authenticator claimed the credential: use the built-in users.
    Abstain,
}

impl Enforcer {
    /// Whether a plan calls any plugin, and whether those calls may run on
    /// the async worker (few calls, all to proven-fast plugins with short
    /// deadlines); `None` when no plugin applies.
    pub(crate) fn plan_calls(set: &ActiveSet, plan: &Plan) -> Option<PlanCalls> {
        let mut any = false;
        let mut inline = plan.writes.len() + plan.reads.len() <= MAX_INLINE_OPS;
        for p in set.plugins.iter().filter(|p| Self::plugin_applies(p, plan)) {
            any = true;
            inline = inline
                && Duration::from_micros(p.record.deadline_us) <= super::set::INLINE_MAX_DEADLINE
                && p.load.inline_ok();
        }
        any.then_some(PlanCalls { inline })
    }

    fn plugin_applies(p: &ActivePlugin, plan: &Plan) -> bool {
        let writes = || {
            plan.writes
                .iter()
                .any(|w| p.record.applies_to(&w.key, w.range_end.as_deref()))
        };
        let reads = || {
            plan.reads
                .iter()
                .any(|r| p.record.applies_to(&r.key, r.range_end.as_deref()))
        };
        (p.live_for(Hook::Validator) && writes())
            || (p.live_for(Hook::Authorizer) && (writes() || reads()))
    }

    /// Asks every live validator and authorizer about a plan (blocking).
    /// `revision` is the revision the write would create; `reader` serves
    /// `host.get` at the revision before it.
    pub(crate) fn judge_blocking(
        set: &ActiveSet,
        plan: &Plan,
        principal: Option<&str>,
        reader: &Arc<dyn KeyReader>,
        revision: i64,
        deadline: Instant,
    ) -> Result<(), Error> {
        for w in &plan.writes {
            let access = match w.op {
                Operation::Put => Access::Put,
                Operation::DeleteRange => Access::DeleteRange,
            };
            let range_end = w.range_end.as_deref();
            // What validators see, copied out of the plan once per write
            // (not once per validator), and only if one asks.
            let mut request: Option<WriteRequest> = None;
            for p in &set.plugins {
                if !p.record.applies_to(&w.key, range_end) {
                    continue;
                }
                if p.live_for(Hook::Authorizer) {
                    let r = call(p, Hook::Authorizer, deadline, |l| {
                        l.authorize(principal, access, &w.key, range_end, Arc::clone(reader))
                    });
                    settle(p, Hook::Authorizer, "access", &w.key, r)?;
                }
                if p.live_for(Hook::Validator) {
                    let request = request.get_or_insert_with(|| WriteRequest {
                        op: w.op,
                        in_txn: w.in_txn,
                        key: w.key.to_vec(),
                        range_end: w.range_end.as_ref().map(|b| b.to_vec()),
                        value: w.value.as_ref().map(|b| b.to_vec()),
                        lease: w.lease,
                        principal: principal.map(str::to_owned),
                        revision,
                    });
                    let r = call(p, Hook::Validator, deadline, |l| {
                        l.validate(request, Arc::clone(reader))
                    });
                    settle(p, Hook::Validator, "the write", &w.key, r)?;
                }
            }
        }
        for r in &plan.reads {
            let range_end = r.range_end.as_deref();
            for p in &set.plugins {
                if p.live_for(Hook::Authorizer) && p.record.applies_to(&r.key, range_end) {
                    let v = call(p, Hook::Authorizer, deadline, |l| {
                        l.authorize(
                            principal,
                            Access::Read,
                            &r.key,
                            range_end,
                            Arc::clone(reader),
                        )
                    });
                    settle(p, Hook::Authorizer, "access", &r.key, v)?;
                }
            }
        }
        Ok(())
    }

    /// Judges a v3 write under `set` (async: the calls run on a blocking
    /// thread). Returns the stamp the proposal must carry (`None` at version
    /// 0), or the denial.
    pub(crate) async fn judge_request(
        &self,
        set: &Arc<ActiveSet>,
        request: &Request,
        principal: Option<String>,
        deadline: Instant,
    ) -> Result<Option<PluginStamp>, Error> {
        if set.version == 0 {
            return Ok(None);
        }
        if !set.judges_writes() {
            return Ok(Some(PluginStamp {
                version: set.version,
                txn_path: Vec::new(),
            }));
        }
        // What this member has applied, with no read barrier: a ReadIndex
        // per judged write would add a round trip to the leader on every
        // follower write, and the stamp could still not pin the revision the
        // write lands at. The contract promises only "at least" (policy.wit
        // `write-request.revision`, docs/plugins.md).
        let rev = self.store().current_rev();
        let plan = plan_request(request, self.store(), rev)?;
        let reader: Arc<dyn KeyReader> = Arc::new(StoreReader {
            store: Arc::clone(self.store()),
            rev,
        });
        let path = plan.path.clone();
        self.run_plan(set, plan, reader, rev + 1, principal, deadline)
            .await?;
        Ok(Some(PluginStamp {
            version: set.version,
            txn_path: path,
        }))
    }

    /// Runs a plan's calls on a blocking thread (or skips them when no
    /// plugin applies).
    pub(crate) async fn run_plan(
        &self,
        set: &Arc<ActiveSet>,
        plan: Plan,
        reader: Arc<dyn KeyReader>,
        revision: i64,
        principal: Option<String>,
        deadline: Instant,
    ) -> Result<(), Error> {
        let Some(calls) = Self::plan_calls(set, &plan) else {
            return Ok(());
        };
        if calls.inline {
            // Proven-fast plugins answer in microseconds: cheaper here than
            // a handoff to a blocking thread and back (see `LoadCell`).
            return Self::judge_blocking(
                set,
                &plan,
                principal.as_deref(),
                &reader,
                revision,
                deadline,
            );
        }
        let set = Arc::clone(set);
        tokio::task::spawn_blocking(move || {
            Self::judge_blocking(
                &set,
                &plan,
                principal.as_deref(),
                &reader,
                revision,
                deadline,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("plugin task failed: {e}")))?
    }

    /// The authenticate hook, for the auth layer: asks the live
    /// authenticators in set order. The first that authenticates or (in
    /// enforce mode) refuses decides; audit-mode answers are logged only.
    /// Blocking: call it from a blocking thread (or use [`Self::authenticate`]).
    ///
    /// Where to call it: where a client's credential becomes a principal —
    /// a bearer token the built-in token providers do not know, and an
    /// `Authenticate` RPC's name and password that match no built-in user
    /// (built-in credentials are checked first, so a failing or hostile
    /// authenticator can never lock the root user out).
    ///
    /// `auth_enabled`: whether etcd auth is on; then only authenticators
    /// vouched for under auth are asked (`ActivePlugin::consulted_for`).
    pub fn authenticate_blocking(
        &self,
        credential: &Credential,
        auth_enabled: bool,
    ) -> AuthDecision {
        self.authenticate_in(&self.current(), credential, auth_enabled)
    }

    /// [`Self::authenticate_blocking`] under a given set: for callers that
    /// stamp what they do with the version that decided it.
    pub(crate) fn authenticate_in(
        &self,
        set: &ActiveSet,
        credential: &Credential,
        auth_enabled: bool,
    ) -> AuthDecision {
        let deadline = Instant::now() + AUTH_BUDGET;
        let reader: Arc<dyn KeyReader> = Arc::new(StoreReader {
            store: Arc::clone(self.store()),
            rev: self.store().current_rev(),
        });
        for p in set
            .plugins
            .iter()
            .filter(|p| p.consulted_for(Hook::Authenticator, auth_enabled))
        {
            let name = p.name().to_owned();
            let audit = p.record.mode_() == Mode::Audit;
            let outcome = match call(p, Hook::Authenticator, deadline, |l| {
                l.authenticate(credential, Arc::clone(&reader))
            }) {
                Ok(o) => o,
                Err(f) => {
                    if log_allowed() {
                        tracing::warn!(target: "cairn_plugin", plugin = %name, kind = %f.kind, "authenticator failed: {}", f.message);
                    }
                    if p.record.fail_open || audit {
                        AuthOutcome::Abstain
                    } else {
                        AuthOutcome::Refused(format!("plugin failed ({}): {}", f.kind, f.message))
                    }
                }
            };
            match outcome {
                AuthOutcome::Abstain => continue,
                AuthOutcome::Authenticated(principal) if !audit => {
                    return AuthDecision::Authenticated {
                        plugin: name,
                        principal,
                    };
                }
                AuthOutcome::Refused(reason) if !audit => {
                    PLUGIN_METRICS
                        .denials
                        .with_label_values(&[&name, "authenticator", "enforce"])
                        .inc();
                    return AuthDecision::Refused {
                        plugin: name,
                        reason,
                    };
                }
                other => {
                    if matches!(other, AuthOutcome::Refused(_)) {
                        PLUGIN_METRICS
                            .denials
                            .with_label_values(&[&name, "authenticator", "audit"])
                            .inc();
                    }
                    if log_allowed() {
                        tracing::info!(target: "cairn_plugin", plugin = %name, "audit: authenticator answered {other:?}");
                    }
                }
            }
        }
        AuthDecision::Abstain
    }

    /// [`Self::authenticate_blocking`] on a blocking thread.
    pub async fn authenticate(
        self: &Arc<Self>,
        credential: Credential,
        auth_enabled: bool,
    ) -> AuthDecision {
        self.authenticate_under(self.current(), credential, auth_enabled)
            .await
    }

    /// [`Self::authenticate_in`] on a blocking thread.
    pub(crate) async fn authenticate_under(
        self: &Arc<Self>,
        set: Arc<ActiveSet>,
        credential: Credential,
        auth_enabled: bool,
    ) -> AuthDecision {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.authenticate_in(&set, &credential, auth_enabled))
            .await
            .unwrap_or_else(|e| AuthDecision::Refused {
                plugin: String::new(),
                reason: format!("authenticator task failed: {e}"),
            })
    }

    /// The authorize hook, for the auth layer: may `principal` do `access`
    /// on `[key, range_end)` (etcd encoding: empty `range_end` = the key
    /// alone)? `Ok` unless a live authorizer that applies to the range
    /// denies (or fails closed). Blocking; see [`Self::authorize`].
    ///
    /// Where to call it: next to `AuthStore::authorize_request`, for reads
    /// served locally (Range, Watch, read-only Txn). Both must allow.
    /// Writes need no call: `EtcdServer::propose_write` asks the
    /// authorizers before proposing, under the same version stamp as the
    /// validators.
    pub fn authorize_blocking(
        &self,
        principal: Option<&str>,
        access: crate::auth::Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Error> {
        let Some(access) = to_access(access) else {
            return Ok(());
        };
        let set = self.current();
        let range_end = (!range_end.is_empty()).then_some(range_end);
        let deadline = Instant::now() + AUTH_BUDGET;
        let reader: Arc<dyn KeyReader> = Arc::new(StoreReader {
            store: Arc::clone(self.store()),
            rev: self.store().current_rev(),
        });
        for p in &set.plugins {
            if p.live_for(Hook::Authorizer) && p.record.applies_to(key, range_end) {
                let r = call(p, Hook::Authorizer, deadline, |l| {
                    l.authorize(principal, access, key, range_end, Arc::clone(&reader))
                });
                settle(p, Hook::Authorizer, "access", key, r)?;
            }
        }
        Ok(())
    }

    /// [`Self::authorize_blocking`] on a blocking thread (skipped when no
    /// authorizer applies).
    pub async fn authorize(
        self: &Arc<Self>,
        principal: Option<String>,
        access: crate::auth::Access,
        key: Bytes,
        range_end: Bytes,
    ) -> Result<(), Error> {
        let set = self.current();
        let end = (!range_end.is_empty()).then_some(range_end.as_ref());
        // Decided in a block: nothing borrowed may live across the await.
        let (any, inline) = {
            let applying: Vec<&Arc<ActivePlugin>> = set
                .plugins
                .iter()
                .filter(|p| p.live_for(Hook::Authorizer) && p.record.applies_to(&key, end))
                .collect();
            let inline = applying.iter().all(|p| {
                Duration::from_micros(p.record.deadline_us) <= super::set::INLINE_MAX_DEADLINE
                    && p.load.inline_ok()
            });
            (!applying.is_empty(), inline)
        };
        if !any {
            return Ok(());
        }
        if inline {
            return self.authorize_blocking(principal.as_deref(), access, &key, &range_end);
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            this.authorize_blocking(principal.as_deref(), access, &key, &range_end)
        })
        .await
        .map_err(|e| Error::Internal(format!("authorizer task failed: {e}")))?
    }
}
