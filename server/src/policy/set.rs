//! The plugin set: in memory (what the member enforces), in `meta` (what it
//! restarts with), and how a replicated change moves it forward.

use super::Enforcer;
use super::config::DeclaredState;
use super::metrics::PLUGIN_METRICS;
use super::model::{self, RecordExt};
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request;
use crate::pb::cairnpb::{InternalRequest, PluginBlob, PluginRecord, PluginSet, PluginSetChange};
use crate::state::lease::Lessor;
use crate::state::txn::{self, WriteBackend};
use crate::storage::mvcc::{ApplyBatch, Store};
use crate::storage::{self, Db};
use arc_swap::ArcSwap;
use bytes::Bytes;
use cairn_plugin_host::{Hook, LoadedPlugin, PluginSpec, WasmSource};
use fjall::OwnedWriteBatch;
use parking_lot::{Condvar, Mutex};
use prost::Message as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// `meta` key of the active set (a `PluginSet`).
const SET_KEY: &[u8] = b"plugin/set";
/// `meta` prefix of stored binaries, followed by the hex SHA-256.
const BLOB_PREFIX: &str = "plugin/blob/";

fn blob_key(sha: &[u8]) -> Vec<u8> {
    format!("{BLOB_PREFIX}{}", hex::encode(sha)).into_bytes()
}

/// A component being compiled for this member, or the outcome. Shared by
/// consecutive sets while the plugin's binary, limits and config stay the
/// same, so an unrelated change never recompiles it.
pub struct LoadCell {
    state: Mutex<Option<Result<Arc<LoadedPlugin>, String>>>,
    ready: Condvar,
    /// How proven-fast the plugin is, 0..=`FAST_SCORE_MAX` (see `inline_ok`).
    fast_score: AtomicU32,
}

/// A call this short is "fast".
const FAST_CALL: Duration = Duration::from_millis(2);
/// The fast-call score: +1 per fast call, up to the max; −`SLOW_CALL_COST`
/// per slow call; 0 after a failed one. Calls run on an async worker while
/// the score is at least `INLINE_SCORE`: a new plugin needs 48 fast calls
/// first, and a proven one survives one slow call (a loaded machine
/// descheduling the caller mid-call) but not two close together — a
/// plugin that has really become slow moves to the blocking pool after
/// its second slow call.
const FAST_SCORE_MAX: u32 = 64;
const INLINE_SCORE: u32 = 48;
const SLOW_CALL_COST: u32 = 16;
/// Only plugins whose deadline is at most this may run on an async worker:
/// the most one call can hold the worker if the plugin suddenly spins.
pub const INLINE_MAX_DEADLINE: Duration = Duration::from_millis(100);

fn next_fast_score(score: u32, took: Duration, answered: bool) -> u32 {
    match (answered, took <= FAST_CALL) {
        (true, true) => (score + 1).min(FAST_SCORE_MAX),
        (true, false) => score.saturating_sub(SLOW_CALL_COST),
        (false, _) => 0,
    }
}

/// What `plugin list` shows about a component on this member.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "state", content = "error")]
pub enum LoadStatus {
    Loading,
    Ready,
    Failed(String),
}

impl LoadCell {
    fn new() -> Arc<LoadCell> {
        Arc::new(LoadCell {
            state: Mutex::new(None),
            ready: Condvar::new(),
            fast_score: AtomicU32::new(0),
        })
    }

    fn set(&self, r: Result<Arc<LoadedPlugin>, String>) {
        *self.state.lock() = Some(r);
        self.ready.notify_all();
    }

    /// The loaded component, waiting at most `timeout` for it.
    pub fn wait(&self, timeout: Duration) -> Result<Arc<LoadedPlugin>, String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            if let Some(r) = state.as_ref() {
                return r.clone();
            }
            if self.ready.wait_until(&mut state, deadline).timed_out() {
                return match state.as_ref() {
                    Some(r) => r.clone(),
                    None => Err(format!(
                        "still compiling on this member after {} ms",
                        timeout.as_millis()
                    )),
                };
            }
        }
    }

    /// Records how long a call took (and whether it answered).
    pub fn record_call(&self, took: Duration, answered: bool) {
        // Racing updates may lose a step; the score is a heuristic.
        let s = self.fast_score.load(Ordering::Relaxed);
        let next = next_fast_score(s, took, answered);
        if next != s {
            self.fast_score.store(next, Ordering::Relaxed);
        }
    }

    /// Whether calls may run on the async worker that judges the request
    /// rather than on a blocking thread: the component is loaded and its
    /// recent calls answered within `FAST_CALL` (see `INLINE_SCORE`). A
    /// handoff to a blocking thread costs more than such a call.
    pub fn inline_ok(&self) -> bool {
        self.fast_score.load(Ordering::Relaxed) >= INLINE_SCORE
            && matches!(self.state.lock().as_ref(), Some(Ok(_)))
    }

    pub fn status(&self) -> LoadStatus {
        match self.state.lock().as_ref() {
            None => LoadStatus::Loading,
            Some(Ok(_)) => LoadStatus::Ready,
            Some(Err(e)) => LoadStatus::Failed(e.clone()),
        }
    }
}

/// One plugin of the active set.
pub struct ActivePlugin {
    pub record: PluginRecord,
    pub wasm: Bytes,
    pub load: Arc<LoadCell>,
    /// Call metrics per hook: validator, authenticator, authorizer.
    metrics: [super::metrics::CallMetrics; 3],
}

impl ActivePlugin {
    fn new(record: PluginRecord, wasm: Bytes, load: Arc<LoadCell>) -> ActivePlugin {
        let m = |hook| super::metrics::CallMetrics::new(&record.name, hook);
        let metrics = [m("validator"), m("authenticator"), m("authorizer")];
        ActivePlugin {
            record,
            wasm,
            load,
            metrics,
        }
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub(crate) fn call_metrics(&self, hook: Hook) -> &super::metrics::CallMetrics {
        let [validator, authenticator, authorizer] = &self.metrics;
        match hook {
            Hook::Validator => validator,
            Hook::Authenticator => authenticator,
            Hook::Authorizer => authorizer,
        }
    }

    /// Consulted on live traffic for `hook`, with etcd auth `auth_enabled`:
    /// [`Self::live_for`], and an authenticator only if it is vouched for
    /// while auth is on (see `PluginRecord.vouched_under_auth`).
    pub fn consulted_for(&self, hook: Hook, auth_enabled: bool) -> bool {
        self.live_for(hook)
            && (hook != Hook::Authenticator || !auth_enabled || self.record.vouched_under_auth)
    }

    /// Called on live traffic for `hook` (enabled, and not in dry-run mode).
    pub fn live_for(&self, hook: Hook) -> bool {
        let enabled = match hook {
            Hook::Validator => self.record.validator,
            Hook::Authenticator => self.record.authenticator,
            Hook::Authorizer => self.record.authorizer,
        };
        enabled && self.record.mode_() != model::Mode::DryRun
    }
}

/// The plugin set a member enforces, immutable once published.
pub struct ActiveSet {
    pub version: u64,
    pub raft_index: u64,
    /// Writes with this mod revision or higher were judged by this set.
    pub first_revision: i64,
    /// Hash of the config-declared part (empty: none declared).
    pub config_hash: Bytes,
    pub cause: String,
    /// In call order: (order, name).
    pub plugins: Vec<Arc<ActivePlugin>>,
}

impl ActiveSet {
    fn empty() -> ActiveSet {
        ActiveSet {
            version: 0,
            raft_index: 0,
            first_revision: 0,
            config_hash: Bytes::new(),
            cause: String::new(),
            plugins: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ActivePlugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// Whether any plugin judges writes on live traffic (validators and
    /// authorizers); if none, a write only needs the version stamp.
    pub fn judges_writes(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| p.live_for(Hook::Validator) || p.live_for(Hook::Authorizer))
    }

    pub fn records(&self) -> Vec<PluginRecord> {
        self.plugins.iter().map(|p| p.record.clone()).collect()
    }

    fn blob(&self, sha: &[u8]) -> Option<Bytes> {
        self.plugins
            .iter()
            .find(|p| p.record.sha256.as_ref() == sha)
            .map(|p| p.wasm.clone())
    }
}

/// What applying a change did (the proposer's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetOutcome {
    pub version: u64,
    pub raft_index: u64,
    pub first_revision: i64,
    /// False when the change described the set already in force.
    pub changed: bool,
}

/// Records compared without their bookkeeping (`since_version`,
/// `vouched_under_auth`), which apply sets.
fn same_records(a: &[PluginRecord], b: &[PluginRecord]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let mut y = y.clone();
            y.since_version = x.since_version;
            y.vouched_under_auth = x.vouched_under_auth;
            *x == y
        })
}

/// Whether two records load into the same component (binary, limits and
/// config; hooks, prefixes, mode and policy do not matter for loading).
fn same_component(a: &PluginRecord, b: &PluginRecord) -> bool {
    a.name == b.name
        && a.sha256 == b.sha256
        && a.deadline_us == b.deadline_us
        && a.memory_bytes == b.memory_bytes
        && a.config == b.config
}

/// The binaries a change sends, each checked against its digest.
fn provided_blobs(blobs: Vec<PluginBlob>) -> Result<HashMap<Bytes, Bytes>, Error> {
    let mut provided = HashMap::new();
    for b in blobs {
        if b.wasm.len() > model::MAX_PLUGIN_BYTES
            || Sha256::digest(&b.wasm).as_slice() != b.sha256.as_ref()
        {
            return Err(rejected("a plugin binary does not match its digest"));
        }
        provided.insert(b.sha256, b.wasm);
    }
    Ok(provided)
}

/// Sorts a change's records into their order and checks them (each valid,
/// names unique); returns each one's binary, sent with the change or
/// already stored, in that order, all within `MAX_SET_BYTES`.
fn binaries_of(
    records: &mut [PluginRecord],
    provided: &HashMap<Bytes, Bytes>,
    cur: &ActiveSet,
) -> Result<Vec<Bytes>, Error> {
    let mut names = std::collections::HashSet::new();
    let mut total = 0usize;
    let mut with_wasm = Vec::with_capacity(records.len());
    records.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    for r in records.iter() {
        model::check_record(r).map_err(rejected)?;
        if !names.insert(r.name.clone()) {
            return Err(rejected(format!("plugin {:?} is listed twice", r.name)));
        }
        let wasm = provided
            .get(&r.sha256)
            .cloned()
            .or_else(|| cur.blob(&r.sha256))
            .ok_or_else(|| {
                rejected(format!(
                    "the binary of plugin {:?} (sha256 {}) is not stored in the cluster; send its bytes",
                    r.name,
                    hex::encode(&r.sha256)
                ))
            })?;
        total += wasm.len();
        with_wasm.push(wasm);
    }
    if total > model::MAX_SET_BYTES {
        return Err(rejected(format!(
            "the plugin binaries total {total} bytes, over the limit of {}",
            model::MAX_SET_BYTES
        )));
    }
    Ok(with_wasm)
}

fn rejected(msg: impl Into<String>) -> Error {
    Error::PluginSetRejected(msg.into())
}

impl Enforcer {
    /// Opens the plugin state of a member: checks its `[plugins]`
    /// declaration (a malformed one stops the start, as any bad config
    /// does) and loads the replicated set from `meta`.
    pub fn open(
        db: &Db,
        store: Arc<Store>,
        cfg: &cairn_config::ServerConfig,
    ) -> Result<Arc<Enforcer>, String> {
        Self::open_with(db, store, &cfg.plugins, cfg.data_dir.join("member"))
    }

    /// [`Self::open`] with the `[plugins]` table and member directory given.
    pub fn open_with(
        db: &Db,
        store: Arc<Store>,
        plugins: &cairn_config::toml::Table,
        member_dir: std::path::PathBuf,
    ) -> Result<Arc<Enforcer>, String> {
        model::declarations_from_toml(plugins)?;
        LazyMetrics::force();
        let e = Arc::new(Enforcer {
            store,
            host: OnceLock::new(),
            active: ArcSwap::from_pointee(ActiveSet::empty()),
            writer: Mutex::new(()),
            declared: Mutex::new(DeclaredState::default()),
            reconciling: tokio::sync::Mutex::new(()),
            member_dir,
        });
        e.reload(db)
            .map_err(|err| format!("loading the plugin set: {err}"))?;
        Ok(e)
    }

    /// Replaces the in-memory set with the one stored in `meta`: at boot,
    /// and after a snapshot install replaced `meta`.
    pub fn reload(&self, db: &Db) -> storage::Result<()> {
        let _w = self.writer.lock();
        let Some(v) = db.meta.get(SET_KEY)? else {
            self.publish(ActiveSet::empty());
            return Ok(());
        };
        let stored =
            PluginSet::decode(v.as_ref()).map_err(|e| storage::Error::corrupt("plugin set", e))?;
        let mut plugins = Vec::new();
        for r in stored.plugins {
            let wasm = match db.meta.get(blob_key(&r.sha256))? {
                Some(b) if Sha256::digest(b.as_ref()).as_slice() == r.sha256.as_ref() => {
                    Bytes::copy_from_slice(b.as_ref())
                }
                // A missing or damaged binary fails that plugin (its failure
                // policy applies) rather than the member.
                _ => {
                    tracing::error!(plugin = %r.name, "the stored binary of this plugin is missing or damaged");
                    Bytes::new()
                }
            };
            plugins.push((r, wasm));
        }
        self.publish_records(
            stored.version,
            stored.raft_index,
            stored.first_revision,
            stored.config_hash,
            stored.cause,
            plugins,
        );
        Ok(())
    }

    fn publish(&self, set: ActiveSet) {
        PLUGIN_METRICS.set_version.set(set.version as i64);
        self.active.store(Arc::new(set));
        self.update_sync_gauge();
    }

    /// Builds and publishes a set, reusing the components of the current
    /// one where nothing that matters for loading changed, and starts
    /// loading the rest in the background.
    fn publish_records(
        &self,
        version: u64,
        raft_index: u64,
        first_revision: i64,
        config_hash: Bytes,
        cause: String,
        records: Vec<(PluginRecord, Bytes)>,
    ) {
        let current = self.active.load_full();
        let mut to_load = Vec::new();
        let plugins = records
            .into_iter()
            .map(|(record, wasm)| {
                let load = match current
                    .plugins
                    .iter()
                    .find(|p| same_component(&p.record, &record))
                {
                    Some(p) => Arc::clone(&p.load),
                    None => {
                        let cell = LoadCell::new();
                        to_load.push((Arc::clone(&cell), record.clone(), wasm.clone()));
                        cell
                    }
                };
                Arc::new(ActivePlugin::new(record, wasm, load))
            })
            .collect();
        self.publish(ActiveSet {
            version,
            raft_index,
            first_revision,
            config_hash,
            cause,
            plugins,
        });
        if to_load.is_empty() {
            return;
        }
        let host = self.host();
        // Compiling takes a while; the apply loop must not wait for it.
        // Judging a write waits (bounded) for the component instead.
        let spawned = std::thread::Builder::new()
            .name("cairn-plugin-load".into())
            .spawn({
                let to_load = to_load.clone();
                move || {
                    for (cell, record, wasm) in to_load {
                        cell.set(load_component(&host, &record, wasm));
                    }
                }
            });
        if let Err(e) = spawned {
            for (cell, ..) in to_load {
                cell.set(Err(format!("cannot start a loader thread: {e}")));
            }
        }
    }

    /// Compiles and checks a candidate (deploy, config): the same load every
    /// member will do, so a binary that does not load is refused before it
    /// is proposed. Returns the component (its hooks and digest).
    pub fn load_candidate(
        &self,
        name: &str,
        wasm: Bytes,
        limits: cairn_plugin_host::Limits,
        config: Vec<(String, String)>,
    ) -> Result<Arc<LoadedPlugin>, String> {
        super::load_with(&self.host()?, name, wasm, limits, config)
    }

    /// Applies a replicated change (apply loop only). Every check here
    /// depends on the entry and the replicated state alone, so every member
    /// accepts or refuses it alike.
    ///
    /// `by_root`: whether etcd auth is on at this index and the change was
    /// asked by root then (`None`: auth is off). A change the admin API
    /// checked while auth was off but that applies after `auth enable` is
    /// refused, so nothing unchecked slips past the switch.
    pub fn apply_change(
        &self,
        raw: &mut OwnedWriteBatch,
        db: &Db,
        change: PluginSetChange,
        raft_index: u64,
        next_revision: i64,
        by_root: Option<bool>,
    ) -> Result<SetOutcome, Error> {
        let _w = self.writer.lock();
        let cur = self.active.load_full();
        if change.expected_version != cur.version {
            return Err(Error::PluginSetChanged);
        }
        if by_root == Some(false) && !change.config_declared {
            return Err(crate::auth::AuthError::PermissionDenied.into());
        }
        // Deployed by root under auth, or declared in the operator's files.
        let vouching = change.config_declared || by_root == Some(true);
        if change.plugins.len() > model::MAX_PLUGINS {
            return Err(rejected(format!(
                "a plugin set holds at most {} plugins",
                model::MAX_PLUGINS
            )));
        }
        let provided = provided_blobs(change.blobs)?;
        let mut records = change.plugins;
        let with_wasm = binaries_of(&mut records, &provided, &cur)?;
        let config_hash = if change.config_declared {
            change.config_hash
        } else {
            cur.config_hash.clone()
        };
        let old_records = cur.records();
        let same = |r: &PluginRecord| {
            old_records
                .iter()
                .find(|o| same_records(std::slice::from_ref(o), std::slice::from_ref(r)))
        };
        for r in &mut records {
            r.vouched_under_auth = match same(r) {
                Some(o) if !change.vouch.contains(&r.name) => o.vouched_under_auth,
                _ => vouching,
            };
        }
        let vouch_changed = records
            .iter()
            .any(|r| same(r).is_some_and(|o| o.vouched_under_auth != r.vouched_under_auth));
        if same_records(&old_records, &records) && config_hash == cur.config_hash && !vouch_changed
        {
            return Ok(SetOutcome {
                version: cur.version,
                raft_index: cur.raft_index,
                first_revision: cur.first_revision,
                changed: false,
            });
        }
        let version = cur.version + 1;
        for r in &mut records {
            r.since_version = same(r)
                .filter(|o| o.vouched_under_auth == r.vouched_under_auth)
                .map_or(version, |o| o.since_version);
        }
        let stored = PluginSet {
            version,
            plugins: records.clone(),
            config_hash: config_hash.clone(),
            raft_index,
            first_revision: next_revision,
            cause: change.cause.clone(),
        };
        raw.insert(&db.meta, SET_KEY, stored.encode_to_vec());
        for (r, wasm) in records.iter().zip(&with_wasm) {
            if !old_records.iter().any(|o| o.sha256 == r.sha256) {
                raw.insert(&db.meta, blob_key(&r.sha256), wasm.to_vec());
            }
        }
        for o in &old_records {
            if !records.iter().any(|r| r.sha256 == o.sha256) {
                raw.remove(&db.meta, blob_key(&o.sha256));
            }
        }
        tracing::info!(
            version,
            raft_index,
            first_revision = next_revision,
            cause = %change.cause,
            plugins = ?records.iter().map(|r| format!("{}({})", r.name, r.mode_().as_str())).collect::<Vec<_>>(),
            "plugin set activated: writes from this revision on are judged by it"
        );
        self.publish_records(
            version,
            raft_index,
            next_revision,
            config_hash,
            change.cause,
            records.into_iter().zip(with_wasm).collect(),
        );
        Ok(SetOutcome {
            version,
            raft_index,
            first_revision: next_revision,
            changed: true,
        })
    }

    /// The apply loop's check of a write's stamp: refuse (with
    /// `PluginSetChanged`, which the proposer answers by judging the write
    /// again) a write judged under another set version, or a txn whose
    /// branches differ from those it was judged for. Called before the
    /// write runs; `None` lets it run.
    pub fn refuse_stale(
        &self,
        req: &InternalRequest,
        batch: &mut ApplyBatch,
        lessor: &Lessor,
    ) -> Option<Error> {
        let request = req.request.as_ref()?;
        let current = self.active.load().version;
        let stamped = req.plugin_stamp.as_ref().map_or(0, |s| s.version);
        // A cluster that never deployed a plugin pays nothing more here.
        if current == 0 && stamped == 0 {
            return None;
        }
        let judged = match request {
            Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_) => true,
            Request::V2(bytes) => super::gate::v2_entry_is_write(bytes),
            // A login an authenticator admitted stands only as long as the
            // set that admitted it (see `gate::authenticate_password`).
            Request::Authenticate(a) => a.plugin_principal,
            _ => false,
        };
        if !judged {
            return None;
        }
        if stamped != current {
            return Some(Error::PluginSetChanged);
        }
        if let (Request::Txn(t), Some(stamp)) = (request, &req.plugin_stamp)
            && !stamp.txn_path.is_empty()
        {
            let w = batch.begin_write();
            let backend = WriteBackend { batch, w, lessor };
            let path = txn::decide(&backend, t);
            let WriteBackend { batch, w, .. } = backend;
            batch.end_write(w);
            // A failing decision is left to the txn itself to report.
            if let Ok(path) = path
                && super::judge::flatten_path(&path) != stamp.txn_path
            {
                return Some(Error::PluginSetChanged);
            }
        }
        None
    }

    pub(crate) fn declared(&self) -> DeclaredState {
        self.declared.lock().clone()
    }

    pub(crate) fn set_declared(&self, d: DeclaredState) {
        *self.declared.lock() = d;
        self.update_sync_gauge();
    }

    fn update_sync_gauge(&self) {
        let in_sync = self.declared.lock().in_sync_with(&self.active.load());
        PLUGIN_METRICS.config_in_sync.set(i64::from(in_sync));
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(crate) fn member_dir(&self) -> &std::path::Path {
        &self.member_dir
    }

    pub(crate) fn reconcile_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.reconciling
    }
}

/// Forces the metrics into the registry at startup, so `/metrics` lists
/// them before the first call.
struct LazyMetrics;

impl LazyMetrics {
    fn force() {
        std::sync::LazyLock::force(&PLUGIN_METRICS);
    }
}

/// Test-only: the name of a plugin this member fails to load (the
/// deploy's candidate check on the serving member still passes), so a test
/// can show one member's load failure next to the others' success.
pub const TEST_LOAD_FAILURE_ENV: &str = "CAIRN_TEST_PLUGIN_LOAD_FAILURE";

/// Loads one component of the set on this member and checks that it has
/// the hooks its record enables.
fn load_component(
    host: &Result<cairn_plugin_host::PluginHost, String>,
    record: &PluginRecord,
    wasm: Bytes,
) -> Result<Arc<LoadedPlugin>, String> {
    let host = host.as_ref().map_err(Clone::clone)?;
    if std::env::var_os(TEST_LOAD_FAILURE_ENV).is_some_and(|v| v == record.name.as_str()) {
        return Err(format!(
            "refused on this member by {TEST_LOAD_FAILURE_ENV} (a test's stand-in for a load failure)"
        ));
    }
    if wasm.is_empty() {
        return Err("its binary is missing on this member".into());
    }
    let mut spec = PluginSpec::new(record.name.clone(), WasmSource::Bytes(wasm.to_vec().into()));
    spec.limits = record.limits();
    spec.config = record.config_pairs();
    let started = Instant::now();
    let loaded = host.load(spec).map_err(|e| {
        tracing::error!(plugin = %record.name, error = %e, "cannot load plugin on this member; its failure policy applies to every call");
        e.to_string()
    })?;
    let have = loaded.hooks();
    let want = record.hooks();
    if (want.validator && !have.validator)
        || (want.authenticator && !have.authenticator)
        || (want.authorizer && !have.authorizer)
    {
        return Err(format!(
            "plugin `{}` does not export every hook it is deployed for ({:?})",
            record.name,
            model::hook_names(want)
        ));
    }
    tracing::info!(plugin = %record.name, took_ms = started.elapsed().as_millis() as u64, "plugin compiled and ready");
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(calls: &[(u64, bool)]) -> u32 {
        calls.iter().fold(0, |s, &(ms, ok)| {
            next_fast_score(s, Duration::from_millis(ms), ok)
        })
    }

    #[test]
    fn fast_score_earns_inline_and_survives_one_preemption_only() {
        let fast = vec![(0, true); INLINE_SCORE as usize];
        assert!(after(&fast[1..]) < INLINE_SCORE, "one call short");
        assert!(after(&fast) >= INLINE_SCORE);

        let mut proven = vec![(0, true); 200];
        assert_eq!(after(&proven), FAST_SCORE_MAX);
        proven.push((3, true));
        assert!(after(&proven) >= INLINE_SCORE, "one slow call is tolerated");
        proven.push((3, true));
        assert!(after(&proven) < INLINE_SCORE, "two in a row are not");

        let mut failed = vec![(0, true); 200];
        failed.push((0, false));
        assert_eq!(after(&failed), 0, "a failure starts over");
    }
}
