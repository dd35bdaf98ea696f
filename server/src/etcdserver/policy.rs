//! The server's side of policy plugins: v2 writes judged, stamped, proposed
//! and judged again when the set changed before they applied (the v3 KV
//! writes take the same steps in `pipeline.rs`); reads asked of the
//! authorizers; plugin-set changes proposed; this member's
//! `[plugins]` declaration reconciled with the cluster; plugin
//! authenticators consulted for tokens and passwords. What the plugins
//! decide lives in `crate::policy`, which knows nothing of the server.

use super::proposal::{self, V2Entry, V2Outcome};
use super::{EtcdServer, RequestCtx};
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request;
use crate::pb::cairnpb::{PluginBlob, PluginRecord, PluginSetChange, PluginStamp};
use crate::policy::config::{
    DeclaredState, Loaded, RECONCILE_PATIENCE, Trigger, load_declared, now_unix, remember,
    remembered,
};
use crate::policy::gate::{MAX_CHANGE_ATTEMPTS, MAX_JUDGEMENTS, collect_txn_reads};
use crate::policy::judge::{self, V2Reader};
use crate::policy::metrics::PLUGIN_METRICS;
use crate::policy::model::RecordExt;
use crate::policy::{ActiveSet, SetOutcome};
use bytes::Bytes;
use cairn_plugin_host::KeyReader;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl EtcdServer {
    /// [`Self::propose_write`] for the v2 API (keys are v2 paths, and
    /// `host.get` reads the v2 store).
    pub async fn propose_v2_write(
        &self,
        req: &crate::v2::V2Request,
        data: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<V2Outcome, Error> {
        // v2 requests are proposed as the server's own (the v2 API has no
        // etcd v3 auth), as `api::v2::propose_v2` did before plugins.
        let Some(plan) = judge::plan_v2(req) else {
            let applied = self
                .propose_as(Request::V2(data), None, None, deadline)
                .await?;
            return proposal::expect::<V2Entry>(applied);
        };
        let verdict = |set: Arc<ActiveSet>| {
            let plan = plan.clone();
            async move {
                if set.version == 0 {
                    return Ok(None);
                }
                let reader: Arc<dyn KeyReader> = Arc::new(V2Reader {
                    v2: Arc::clone(&self.v2),
                });
                let index = self.v2.read().index();
                self.plugins
                    .run_plan(
                        &set,
                        plan,
                        reader,
                        index as i64 + 1,
                        None,
                        deadline.into_std(),
                    )
                    .await?;
                Ok(Some(PluginStamp {
                    version: set.version,
                    txn_path: Vec::new(),
                }))
            }
        };
        let applied = self
            .propose_judged(&Request::V2(data), None, deadline, verdict)
            .await?;
        proposal::expect::<V2Entry>(applied)
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
            match self.propose_internal(change).await {
                Ok(outcome) => return Ok(outcome),
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
) -> Result<V2Outcome, Error> {
    srv.propose_v2_write(req, data, srv.deadline()).await
}

impl EtcdServer {
    /// The read side of the authorize hook: may the current caller read
    /// `[key, range_end)`? `Ok` at once when no live authorizer applies.
    /// Called next to `check_read` (Range, Watch, read-only Txn).
    pub async fn plugin_check_read(
        &self,
        ctx: &RequestCtx,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Error> {
        if self.plugins.version() == 0 {
            return Ok(());
        }
        self.plugins
            .authorize(
                ctx.principal(),
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
        ctx: &RequestCtx,
        t: &crate::pb::etcdserverpb::TxnRequest,
    ) -> Result<(), Error> {
        if self.plugins.version() == 0 {
            return Ok(());
        }
        let mut reads = Vec::new();
        collect_txn_reads(t, &mut reads, 0);
        for (key, end) in reads {
            self.plugin_check_read(ctx, &key, &end).await?;
        }
        Ok(())
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
        crate::policy::AuthDecision::Authenticated { principal, .. } => {
            Some(crate::auth::AuthInfo {
                username: principal,
                // Current as of now: the auth store's revision check passes,
                // and a later auth change makes the client present it again.
                revision: srv.auth.store.read().revision(),
            })
        }
        crate::policy::AuthDecision::Refused { plugin, reason } => {
            tracing::info!(target: "cairn_plugin", plugin = %plugin, "refused a bearer token: {reason}");
            None
        }
        crate::policy::AuthDecision::Abstain => None,
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
            crate::policy::AuthDecision::Authenticated { plugin, principal } => {
                // An empty name is what an anonymous caller has: a token for
                // it would authenticate nobody.
                if principal.is_empty() {
                    tracing::warn!(target: "cairn_plugin", plugin = %plugin, "authenticator admitted a password as the empty principal; refused");
                    return Err(AuthError::AuthFailed.into());
                }
                principal
            }
            crate::policy::AuthDecision::Refused { plugin, reason } => {
                tracing::info!(target: "cairn_plugin", plugin = %plugin, user = %name, "refused a password: {reason}");
                return Err(AuthError::AuthFailed.into());
            }
            crate::policy::AuthDecision::Abstain => return Err(builtin.into()),
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
        let applied = srv
            .propose_as(Request::Authenticate(entry), None, stamp, deadline.into())
            .await
            .and_then(proposal::expect::<crate::pb::cairnpb::AuthenticateEntry>);
        match applied {
            Ok(login) => {
                return Ok(crate::pb::etcdserverpb::AuthenticateResponse {
                    header: Some(srv.header(srv.store.current_rev())),
                    token: login.token,
                });
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

/// Called after a successful reload: compare and push in the background.
pub fn reloaded(srv: &Arc<EtcdServer>) {
    let srv = Arc::clone(srv);
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(reconcile(srv, Trigger::Reload));
        }
        Err(_) => tracing::error!("plugins: no runtime to apply the reloaded [plugins] on"),
    }
}

/// At startup, once the member serves: compare and push if needed.
pub async fn reconcile_at_startup(srv: Arc<EtcdServer>) {
    let mut ready = srv.ready_watch();
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    reconcile(srv, Trigger::Startup).await;
}

/// Compares this member's declaration with the cluster's config-declared
/// set and pushes it when it changed (see the module docs).
pub async fn reconcile(srv: Arc<EtcdServer>, trigger: Trigger) {
    let enforcer = Arc::clone(&srv.plugins);
    let _one = enforcer.reconcile_lock().lock().await;
    let table = srv.config.load().plugins.clone();
    let e2 = Arc::clone(&enforcer);
    let loaded = tokio::task::spawn_blocking(move || load_declared(&e2, &table))
        .await
        .unwrap_or_else(|err| Err(format!("loading the declared plugins failed: {err}")));
    let mut state = DeclaredState {
        trigger: trigger.as_str().to_owned(),
        checked_unix: now_unix(),
        ..Default::default()
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(
                trigger = trigger.as_str(),
                "plugins declared in the configuration are not applied: {err}"
            );
            state.error = Some(err);
            enforcer.set_declared(state);
            return;
        }
    };
    let hash_hex = hex::encode(&loaded.hash);
    state.hash = hash_hex.clone();
    state.plugins = loaded.records.iter().map(|r| r.name.clone()).collect();
    enforcer.set_declared(state.clone());

    // Compare against the cluster's current set, not a stale local view.
    let started = std::time::Instant::now();
    while let Err(err) = srv.linearizable_read_notify().await {
        if started.elapsed() > RECONCILE_PATIENCE {
            tracing::error!(error = %err, "plugins: cannot reach the cluster to compare the declared plugins; try a reload later");
            state.error = Some(format!("cannot reach the cluster: {err}"));
            enforcer.set_declared(state);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let set = enforcer.current();
    if set.config_hash == loaded.hash {
        remember(&enforcer, &hash_hex);
        enforcer.set_declared(state);
        return;
    }
    let push = match remembered(&enforcer) {
        Some(h) => h != hash_hex,
        None => set.config_hash.is_empty(),
    };
    if !push {
        remember(&enforcer, &hash_hex);
        tracing::warn!(
            version = set.version,
            "plugins: this member's [plugins] declaration differs from the cluster's config-declared plugins; \
             the cluster's set stays in force (edit this member's file to push a new declaration)"
        );
        enforcer.set_declared(state);
        return;
    }
    let cause = format!("[plugins] of member {} ({})", srv.name, trigger.as_str());
    let outcome = push_declared(&srv, &loaded, cause, started).await;
    match outcome {
        Ok(o) => {
            remember(&enforcer, &hash_hex);
            tracing::info!(
                version = o.version,
                first_revision = o.first_revision,
                changed = o.changed,
                "plugins: pushed this member's [plugins] declaration"
            );
        }
        Err(err) => {
            tracing::error!(error = %err, "plugins: pushing this member's [plugins] declaration failed");
            state.error = Some(format!("pushing the declaration failed: {err}"));
        }
    }
    enforcer.set_declared(state);
}

/// Proposes this member's declaration: the config-declared plugins
/// replaced by it, API-deployed ones kept unless it names them. Retries
/// while the cluster has no leader or is busy, until `RECONCILE_PATIENCE`
/// after `started`.
async fn push_declared(
    srv: &EtcdServer,
    loaded: &Loaded,
    cause: String,
    started: Instant,
) -> Result<SetOutcome, Error> {
    let names: Vec<String> = loaded.records.iter().map(|r| r.name.clone()).collect();
    let records = loaded.records.clone();
    let hash = loaded.hash.clone();
    let mut outcome = Err(crate::error::Error::NoLeader);
    while started.elapsed() <= RECONCILE_PATIENCE {
        outcome = srv
            .change_plugins(
                cause.clone(),
                &loaded.binaries,
                Some(hash.clone()),
                None,
                Vec::new(),
                |set| {
                    if set.config_hash == hash {
                        return Ok(None);
                    }
                    let mut next: Vec<PluginRecord> = set
                        .records()
                        .into_iter()
                        .filter(|r| !r.declared_in_config() && !names.contains(&r.name))
                        .collect();
                    for r in set.records() {
                        if !r.declared_in_config() && names.contains(&r.name) {
                            tracing::warn!(plugin = %r.name, "plugins: the configuration now declares this API-deployed plugin; the declaration replaces it");
                        }
                    }
                    next.extend(records.iter().cloned());
                    Ok(Some(next))
                },
            )
            .await;
        match &outcome {
            Err(
                crate::error::Error::NoLeader
                | crate::error::Error::Timeout
                | crate::error::Error::TimeoutDueToLeaderFail
                | crate::error::Error::TooManyRequests
                | crate::error::Error::LeaderChanged,
            ) => tokio::time::sleep(Duration::from_millis(500)).await,
            _ => break,
        }
    }
    outcome
}
