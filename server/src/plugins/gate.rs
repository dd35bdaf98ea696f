//! Where writes meet the plugins: judge, stamp, propose, and judge again if
//! the plugin set (or a txn's branch) changed before the write applied.

use super::judge::{self, V2Reader};
use super::metrics::PLUGIN_METRICS;
use super::set::{ActiveSet, SetOutcome};
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request;
use crate::pb::cairnpb::{PluginBlob, PluginRecord, PluginSetChange, PluginStamp};
use crate::server::{Applied, EtcdServer};
use bytes::Bytes;
use cairn_plugin_host::KeyReader;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// How many times a write is judged again after the plugin set changed
/// under it before the client gets `PluginSetChanged` (retryable).
const MAX_JUDGEMENTS: usize = 8;
/// How many times a plugin-set change is recomputed after a concurrent one.
const MAX_CHANGE_ATTEMPTS: usize = 5;

tokio::task_local! {
    /// The stamp of the write being proposed in this task (see `propose`).
    static STAMP: Option<PluginStamp>;
}

/// The stamp `EtcdServer::propose` puts into the entry it builds: set by
/// [`EtcdServer::propose_write`] around its call to `propose`, absent
/// everywhere else (version 0: not judged).
pub fn current_stamp() -> Option<PluginStamp> {
    STAMP.try_with(Clone::clone).ok().flatten()
}

/// The largest entry `propose` may make for `request`: plugin-set changes
/// carry binaries and get their own bound; everything else the client
/// request limit.
pub fn proposal_limit(request: &Request, max_request_bytes: usize) -> usize {
    match request {
        Request::PluginSet(_) => super::model::MAX_CHANGE_ENTRY_BYTES.max(max_request_bytes),
        _ => max_request_bytes,
    }
}

/// Whether a v2 entry is a write (judged and stamped) rather than a quorum
/// read or the TTL sweep.
pub(crate) fn v2_entry_is_write(bytes: &[u8]) -> bool {
    serde_json::from_slice::<crate::v2::V2Request>(bytes)
        .ok()
        .and_then(|r| judge::plan_v2(&r))
        .is_some()
}

/// A plugin refusal as the v2 API answers it: a 400 (`209 Invalid field`)
/// whose cause names the plugin and its reason; a failing plugin is the
/// server's problem (300). Other errors as before.
pub fn v2_error(e: Error) -> crate::v2::V2Error {
    match e {
        Error::PluginDenied { .. } => {
            crate::v2::V2Error::request(crate::v2::error::INVALID_FIELD, e.to_string())
        }
        other => crate::v2::V2Error::raft_internal(other.to_string()),
    }
}

impl EtcdServer {
    /// Proposes a client write (Put, DeleteRange, Txn) after the plugins
    /// allowed it, stamped with the set version that judged it; judges it
    /// again if the apply loop refused the stamp as stale.
    pub async fn propose_write(&self, request: Request) -> Result<Applied, Error> {
        let deadline = Instant::now() + self.request_timeout();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let set = self.plugins.current();
            // Judged with no set at all (version 0), a write can still go
            // stale: the first set may be applied before it is, and apply
            // then refuses it like any other. So the request is kept for a
            // retry either way (a clone of its `Bytes` and op lists).
            let stamp = self.plugins.judge_request(&set, &request, deadline).await?;
            match STAMP.scope(stamp, self.propose(request.clone())).await {
                Err(Error::PluginSetChanged)
                    if attempts < MAX_JUDGEMENTS && Instant::now() < deadline =>
                {
                    PLUGIN_METRICS.rejudged.inc();
                }
                other => return other,
            }
        }
    }

    /// [`Self::propose_write`] for the v2 API (keys are v2 paths, and
    /// `host.get` reads the v2 store).
    pub async fn propose_v2_write(
        &self,
        req: &crate::v2::V2Request,
        data: Bytes,
    ) -> Result<Applied, Error> {
        // v2 requests are proposed as the server's own (the v2 API has no
        // etcd v3 auth), as `api::v2::propose_v2` did before plugins.
        let Some(plan) = judge::plan_v2(req) else {
            return self.propose_internal(Request::V2(data)).await;
        };
        let deadline = Instant::now() + self.request_timeout();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let set = self.plugins.current();
            let stamp = if set.version == 0 {
                None
            } else {
                let reader: Arc<dyn KeyReader> = Arc::new(V2Reader {
                    v2: Arc::clone(&self.v2),
                });
                let index = self.v2.read().index();
                self.plugins
                    .run_plan(&set, plan.clone(), reader, index as i64 + 1, deadline)
                    .await?;
                Some(PluginStamp {
                    version: set.version,
                    txn_path: Vec::new(),
                })
            };
            match STAMP
                .scope(stamp, self.propose_internal(Request::V2(data.clone())))
                .await
            {
                Err(Error::PluginSetChanged)
                    if attempts < MAX_JUDGEMENTS && Instant::now() < deadline =>
                {
                    PLUGIN_METRICS.rejudged.inc();
                }
                other => return other,
            }
        }
    }

    /// Replaces the plugin set with what `next` computes from the current
    /// one (compare-and-set on the version; recomputed after a concurrent
    /// change). `next` returns `None` when there is nothing to change.
    /// `binaries` holds the bytes of new plugins by SHA-256; only those the
    /// cluster does not store yet travel in the entry. `admin` is the root
    /// caller the admin API resolved (`None` with auth off, or for a config
    /// declaration); `vouch` names the plugins this change deploys
    /// explicitly (see `PluginRecord.vouched_under_auth`).
    pub async fn change_plugins(
        &self,
        cause: String,
        binaries: &HashMap<Bytes, Bytes>,
        config_hash: Option<Bytes>,
        admin: Option<crate::auth::AuthInfo>,
        vouch: Vec<String>,
        next: impl Fn(&ActiveSet) -> Result<Option<Vec<PluginRecord>>, Error>,
    ) -> Result<SetOutcome, Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let set = self.plugins.current();
            let Some(records) = next(&set)? else {
                return Ok(SetOutcome {
                    version: set.version,
                    raft_index: set.raft_index,
                    first_revision: set.first_revision,
                    changed: false,
                });
            };
            let mut blobs = Vec::new();
            for r in &records {
                let stored = set.plugins.iter().any(|p| p.record.sha256 == r.sha256);
                if !stored && !blobs.iter().any(|b: &PluginBlob| b.sha256 == r.sha256) {
                    let wasm = binaries.get(&r.sha256).cloned().ok_or_else(|| {
                        Error::PluginSetRejected(format!(
                            "the binary of plugin {:?} is neither stored nor provided",
                            r.name
                        ))
                    })?;
                    blobs.push(PluginBlob {
                        sha256: r.sha256.clone(),
                        wasm,
                    });
                }
            }
            let change = PluginSetChange {
                expected_version: set.version,
                plugins: records,
                blobs,
                config_declared: config_hash.is_some(),
                config_hash: config_hash.clone().unwrap_or_default(),
                cause: cause.clone(),
                admin: admin.as_ref().map(|a| crate::pb::cairnpb::RequestAuth {
                    username: a.username.clone(),
                    revision: a.revision,
                }),
                vouch: vouch.clone(),
            };
            match self.propose_internal(Request::PluginSet(change)).await {
                Ok(Applied::Plugins(outcome)) => return Ok(outcome),
                Ok(other) => {
                    return Err(Error::Internal(format!(
                        "unexpected apply result {other:?}"
                    )));
                }
                Err(Error::PluginSetChanged) if attempts < MAX_CHANGE_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// `propose_v2` goes through here: v2 writes are judged like v3 ones.
pub async fn propose_v2_judged(
    srv: &EtcdServer,
    req: &crate::v2::V2Request,
    data: Bytes,
) -> Result<Applied, Error> {
    srv.propose_v2_write(req, data).await
}

impl EtcdServer {
    /// The read side of the authorize hook: may the current caller read
    /// `[key, range_end)`? `Ok` at once when no live authorizer applies.
    /// Called next to `check_read` (Range, Watch, read-only Txn).
    pub async fn plugin_check_read(&self, key: &[u8], range_end: &[u8]) -> Result<(), Error> {
        if self.plugins.version() == 0 {
            return Ok(());
        }
        let principal = crate::server::auth::caller().map(|i| i.username);
        self.plugins
            .authorize(
                principal,
                crate::auth::Access::Read,
                Bytes::copy_from_slice(key),
                Bytes::copy_from_slice(range_end),
            )
            .await
    }

    /// [`Self::plugin_check_read`] for every read of a read-only txn (its
    /// compares and the ranges of both branches, as RBAC checks them).
    pub async fn plugin_check_txn_reads(
        &self,
        t: &crate::pb::etcdserverpb::TxnRequest,
    ) -> Result<(), Error> {
        if self.plugins.version() == 0 {
            return Ok(());
        }
        let mut reads = Vec::new();
        collect_txn_reads(t, &mut reads, 0);
        for (key, end) in reads {
            self.plugin_check_read(&key, &end).await?;
        }
        Ok(())
    }
}

/// The reads of a txn, nested ones included (bounded by the request size;
/// nesting beyond 64 levels is not looked into further).
fn collect_txn_reads(
    t: &crate::pb::etcdserverpb::TxnRequest,
    out: &mut Vec<(Bytes, Bytes)>,
    depth: usize,
) {
    use crate::pb::etcdserverpb::request_op::Request as Op;
    if depth > 64 {
        return;
    }
    for c in &t.compare {
        out.push((c.key.clone(), c.range_end.clone()));
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => out.push((r.key.clone(), r.range_end.clone())),
            Some(Op::RequestTxn(inner)) => collect_txn_reads(inner, out, depth + 1),
            _ => {}
        }
    }
}

/// The bearer-token side of the authenticate hook, for the layer that
/// resolves a request's token: a token the built-in providers do not know
/// may be one a plugin authenticator accepts. `None` when no authenticator
/// claims it (or one refuses it: the caller then answers etcd's `invalid
/// auth token`; the plugin's reason is logged and counted).
pub async fn authenticate_token(srv: &EtcdServer, token: &str) -> Option<crate::auth::AuthInfo> {
    let set = srv.plugins.current();
    let auth_enabled = srv.auth_enabled();
    if !set
        .plugins
        .iter()
        .any(|p| p.consulted_for(cairn_plugin_host::Hook::Authenticator, auth_enabled))
    {
        return None;
    }
    let token = token.trim_start_matches("Bearer ").to_owned();
    match srv
        .plugins
        .authenticate(
            cairn_plugin_host::Credential::BearerToken(token),
            auth_enabled,
        )
        .await
    {
        super::AuthDecision::Authenticated { principal, .. } => Some(crate::auth::AuthInfo {
            username: principal,
            // Current as of now: the auth store's revision check passes,
            // and a later auth change makes the client present it again.
            revision: srv.auth.store.read().revision(),
        }),
        super::AuthDecision::Refused { plugin, reason } => {
            tracing::info!(target: "cairn_plugin", plugin = %plugin, "refused a bearer token: {reason}");
            None
        }
        super::AuthDecision::Abstain => None,
    }
}

/// The password side of the authenticate hook, for the `Authenticate` RPC:
/// a name and password that match no built-in user (`builtin` says why:
/// `AuthFailed`, or `AuthNotEnabled` while etcd auth is off) are offered to
/// the live authenticators. One that admits them makes a login for the
/// principal it answered, replicated like a built-in login (every member
/// registers the simple token) and stamped with the set version that
/// admitted it: if the set changes before the entry applies, every member
/// refuses it and it is asked again. A refusal is etcd's `authentication
/// failed` (the plugin's reason is logged and counted, never returned);
/// when every authenticator abstains the client gets `builtin`, so with
/// auth disabled and no plugin claiming the name, clients see etcd's
/// `authentication is not enabled` as before.
pub async fn authenticate_password(
    srv: &EtcdServer,
    name: &str,
    password: &str,
    builtin: crate::auth::AuthError,
) -> Result<crate::pb::etcdserverpb::AuthenticateResponse, Error> {
    use crate::auth::AuthError;
    use cairn_plugin_host::{Credential, Hook, PasswordCredential};
    let deadline = Instant::now() + srv.request_timeout();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let set = srv.plugins.current();
        let auth_enabled = srv.auth_enabled();
        if !set
            .plugins
            .iter()
            .any(|p| p.consulted_for(Hook::Authenticator, auth_enabled))
        {
            return Err(builtin.into());
        }
        let credential = Credential::Password(PasswordCredential {
            name: name.to_owned(),
            password: password.to_owned(),
        });
        let principal = match srv
            .plugins
            .authenticate_under(Arc::clone(&set), credential, auth_enabled)
            .await
        {
            super::AuthDecision::Authenticated { plugin, principal } => {
                // An empty name is what an anonymous caller has: a token for
                // it would authenticate nobody.
                if principal.is_empty() {
                    tracing::warn!(target: "cairn_plugin", plugin = %plugin, "authenticator admitted a password as the empty principal; refused");
                    return Err(AuthError::AuthFailed.into());
                }
                principal
            }
            super::AuthDecision::Refused { plugin, reason } => {
                tracing::info!(target: "cairn_plugin", plugin = %plugin, user = %name, "refused a password: {reason}");
                return Err(AuthError::AuthFailed.into());
            }
            super::AuthDecision::Abstain => return Err(builtin.into()),
        };
        let entry = crate::pb::cairnpb::AuthenticateEntry {
            name: principal,
            simple_token_prefix: srv.auth.tokens.generate_prefix(),
            plugin_principal: true,
        };
        let stamp = Some(PluginStamp {
            version: set.version,
            txn_path: Vec::new(),
        });
        match STAMP
            .scope(stamp, srv.propose_internal(Request::Authenticate(entry)))
            .await
        {
            Ok(Applied::Authenticated { token, .. }) => {
                return Ok(crate::pb::etcdserverpb::AuthenticateResponse {
                    header: Some(srv.header(srv.store.current_rev())),
                    token,
                });
            }
            Ok(other) => {
                return Err(Error::Internal(format!(
                    "unexpected apply result {other:?}"
                )));
            }
            Err(Error::PluginSetChanged)
                if attempts < MAX_JUDGEMENTS && Instant::now() < deadline =>
            {
                PLUGIN_METRICS.rejudged.inc();
            }
            Err(e) => return Err(e),
        }
    }
}
