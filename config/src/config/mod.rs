//! The typed server configuration, built from the merged raw values.
//!
//! Building runs in three passes so that nothing is half-constructed when an
//! error is found:
//! 1. every setting's raw text is parsed by its [`Kind`] (syntax errors name
//!    the flag and the source);
//! 2. support status is applied: a non-default `NotYet` value is an error, a
//!    non-default `NoEffect` value a warning;
//! 3. typed fields are filled in and cross-checked with etcd's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::error::{ConfigError, Resolved, Source};
use crate::load::Sources;
use crate::registry::{self, Kind, SETTINGS, Setting, Status};
use crate::tls::{self, SuiteName, TlsIdentity, TlsSettings, TlsSide};
use crate::values::{
    UintError, format_url, is_bindable, is_secure, parse_go_bool, parse_go_duration, parse_go_uint,
    parse_url, split_list,
};

/// The quota used when `--quota-backend-bytes` is 0 (etcd's 2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Above this etcd warns that the quota exceeds the recommended maximum.
pub const RECOMMENDED_MAX_QUOTA_BACKEND_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Cairn refuses quotas above 1 TiB: far beyond what a raft-replicated store
/// can snapshot and ship to a new member in reasonable time, so such a value
/// is almost certainly a typo (an extra digit or a unit mix-up).
pub const MAX_QUOTA_BACKEND_BYTES: u64 = 1024 * 1024 * 1024 * 1024;
/// etcd warns when requests may be larger than this (10 MiB).
pub const RECOMMENDED_MAX_REQUEST_BYTES: u64 = 10 * 1024 * 1024;
/// etcd's upper bound on `--election-timeout`, in milliseconds.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterState {
    New,
    Existing,
}

/// How a brand-new member learns the cluster it bootstraps (its first start
/// only: a member with data ignores all of this, as etcd does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `--initial-cluster` (or its derived default).
    Static,
    /// `--discovery`: etcd's v2 discovery protocol against a keys directory
    /// of another cluster (or discovery.etcd.io).
    Discovery {
        /// The URL exactly as given: etcd hashes this text into the member
        /// IDs (it is the cluster token), so it must not be normalized.
        url: String,
        /// `--discovery-proxy`, as a normalized `http://` URL.
        proxy: Option<String>,
        fallback: DiscoveryFallback,
    },
    /// `--discovery-srv`: DNS SRV records of `domain`.
    Srv {
        domain: String,
        /// `--discovery-srv-name` (empty: none).
        service_name: String,
    },
}

/// `--discovery-fallback`: what etcd does when the discovery cluster is
/// full. Cairn has no proxy mode, so both end the process; `Proxy` (etcd's
/// default) only changes the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscoveryFallback {
    Exit,
    Proxy,
}

/// etcd's `ErrConflictBootstrapFlags`, word for word.
pub const CONFLICT_BOOTSTRAP_FLAGS: &str = "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"";

/// `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricsLevel {
    Basic,
    Extensive,
}

/// `--log-level` (or `debug` when `--debug` is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Panic,
    Fatal,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Panic => "panic",
            LogLevel::Fatal => "fatal",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--auto-compaction-mode`: how `--auto-compaction-retention` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoCompactionMode {
    /// Keep history for a period of time.
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

impl AutoCompactionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoCompactionMode::Periodic => "periodic",
            AutoCompactionMode::Revision => "revision",
        }
    }
}

impl fmt::Display for AutoCompactionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--auto-compaction-retention`, read according to the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoCompactionRetention {
    /// `0` or empty: no automatic compaction.
    Disabled,
    /// Periodic mode: keep this much history. A bare number is hours (etcd:
    /// `1` is one hour); otherwise a Go duration such as `30m`.
    Period(Duration),
    /// Revision mode: keep this many revisions.
    Revisions(u64),
}

impl AutoCompactionRetention {
    pub fn is_enabled(self) -> bool {
        self != AutoCompactionRetention::Disabled
    }
}

/// Longest periodic retention in whole hours: Go's `time.Duration` limit
/// (about 292 years), which etcd's `time.Duration(n) * time.Hour` would
/// silently overflow.
const MAX_RETENTION_HOURS: u64 = i64::MAX as u64 / 3_600_000_000_000;

/// One `name=url` item of `--initial-cluster`. A member with several peer
/// URLs appears once per URL, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_url: Url,
}

/// A validated server configuration. Field names carry their units; URL
/// lists keep the order the operator gave. Print URLs with
/// [`crate::format_url`], not `Url`'s `Display`, which adds a trailing `/`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    pub name: String,
    /// `<name>.etcd` unless set.
    pub data_dir: PathBuf,
    pub snapshot_count: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub initial_election_tick_advance: bool,
    pub listen_peer_urls: Vec<Url>,
    pub listen_client_urls: Vec<Url>,
    /// Empty unless `--listen-metrics-urls` is set (it is `NotYet` for now,
    /// so currently always empty).
    pub listen_metrics_urls: Vec<Url>,
    pub max_snapshots: u32,
    /// As given; 0 means the default, see
    /// [`ServerConfig::effective_quota_backend_bytes`].
    pub quota_backend_bytes: u64,
    pub max_txn_ops: u32,
    pub max_request_bytes: u32,
    pub max_concurrent_streams: u32,
    pub grpc_keepalive_min_time: Duration,
    /// Zero disables server-to-client pings.
    pub grpc_keepalive_interval: Duration,
    /// Zero disables the ping timeout.
    pub grpc_keepalive_timeout: Duration,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// Defaults to `<name>=<each initial-advertise-peer-url>` (also with
    /// discovery, where it is etcd's temporary one-member cluster that
    /// names this member's discovery key).
    pub initial_cluster: Vec<InitialMember>,
    /// Where a new member's initial cluster comes from.
    pub bootstrap: Bootstrap,
    pub initial_cluster_token: String,
    pub initial_cluster_state: ClusterState,
    pub advertise_client_urls: Vec<Url>,
    pub strict_reconfig_check: bool,
    /// Cairn default `true` (etcd 3.4: `false`).
    pub pre_vote: bool,
    /// Cairn default `true` (etcd 3.4: `false`).
    pub enable_v2: bool,
    /// `--enable-pprof`: CPU profiles under `/debug/pprof/` on the client
    /// URLs.
    pub enable_pprof: bool,
    /// `--enable-ui` (Cairn's own; live): the operator web console under
    /// `/ui/` on the client URLs.
    pub enable_ui: bool,
    /// `--wal-dir`: the raft log's own folder (a database there), instead
    /// of inside the data dir.
    pub wal_dir: Option<PathBuf>,
    /// Allowed CORS origins; `["*"]` (the default) or empty allows all.
    pub cors: Vec<String>,
    /// Accepted `Host` headers on plain HTTP; `["*"]` or empty allows all.
    pub host_whitelist: Vec<String>,
    pub metrics: MetricsLevel,
    /// `capnslog` (text lines) or `zap` (JSON lines).
    pub logger: String,
    /// Each one of `default`, `stdout`, `stderr`, or a file path.
    pub log_outputs: Vec<String>,
    /// `Debug` when `--debug` is set, whatever `--log-level` says.
    pub log_level: LogLevel,
    pub experimental_compaction_batch_limit: u32,
    pub experimental_warning_apply_duration: Duration,
    pub experimental_watch_progress_notify_interval: Duration,
    /// Compare this member's KV hash with its peers' before serving
    /// (restarting members only, as etcd).
    pub experimental_initial_corrupt_check: bool,
    /// `--experimental-enable-lease-checkpoint`: the leader records leases'
    /// remaining TTLs through raft so a leader change does not reset them.
    pub experimental_enable_lease_checkpoint: bool,
    /// `--experimental-enable-lease-checkpoint-persist`: accepted and
    /// checked as etcd 3.4.23 does; Cairn persists checkpoints whenever
    /// they are on (etcd 3.6's behaviour).
    pub experimental_enable_lease_checkpoint_persist: bool,
    /// `--enable-grpc-gateway`: serve the `/v3/` JSON gateway.
    pub enable_grpc_gateway: bool,
    /// `--experimental-enable-v2v3`: the v3 key prefix `/v2/keys` is kept
    /// under (etcd's layout); empty: the v2 store serves it.
    pub experimental_enable_v2v3: String,
    /// How often the leader compares the members' KV hashes; zero: never.
    pub experimental_corrupt_check_time: Duration,
    /// `--force-new-cluster`: restart as a one-member cluster keeping the
    /// data (disaster recovery).
    pub force_new_cluster: bool,
    /// `simple` (jwt is not supported yet, so always `simple` for now,
    /// possibly followed by ignored `,options`).
    pub auth_token: String,
    pub bcrypt_cost: u32,
    pub auth_token_ttl_secs: u64,
    pub auto_compaction_mode: AutoCompactionMode,
    /// Disabled by default.
    pub auto_compaction_retention: AutoCompactionRetention,
    /// TLS for the client listeners (`--cert-file`, `--key-file`,
    /// `--trusted-ca-file`, `--client-cert-auth`, `--auto-tls`); `None`
    /// when no certificate is configured.
    pub client_tls: Option<TlsSettings>,
    /// TLS for the peer listeners and for connections to other members
    /// (the `--peer-*` flags); `None` when no certificate is configured.
    pub peer_tls: Option<TlsSettings>,
    /// `--cipher-suites`, as canonical names from
    /// [`crate::TLS12_CIPHER_SUITES`]. `None`: the TLS library's defaults.
    /// `Some`: only these TLS 1.2 suites (possibly none); TLS 1.3 suites
    /// stay on either way, as in Go.
    pub cipher_suites: Option<Vec<String>>,
    /// The config files that were read, lowest precedence first: those
    /// named by `--config-file` / `ETCD_CONFIG_FILE`, or else the default
    /// paths that exist.
    pub config_files: Vec<PathBuf>,
    /// The `[plugins]` tables of the TOML config files, merged (a later
    /// file's plugin entry replaces an earlier one of the same name). Kept as
    /// raw TOML: the plugin system defines what it means. Empty if none.
    pub plugins: toml::Table,
    /// Things the operator should hear about but that do not stop the
    /// server. The caller logs them; this crate never prints.
    pub warnings: Vec<String>,
    provenance: BTreeMap<&'static str, Resolved>,
    /// What this configuration was parsed from, for [`ServerConfig::reparse`].
    sources: Sources,
    /// For each setting an environment variable or a flag decides, the
    /// value a config file also gives it (the last file that does):
    /// an edit there changes nothing, which reload reports.
    shadowed: BTreeMap<&'static str, Resolved>,
}

impl ServerConfig {
    /// Where the value of setting `name` (flag name without dashes) came
    /// from; `None` for a name that is not a setting.
    pub fn source_of(&self, name: &str) -> Option<&Source> {
        self.provenance.get(name).map(|r| &r.source)
    }

    /// The winning raw text of setting `name` (derived defaults such as
    /// `data-dir` and `initial-cluster` show the derived text).
    pub fn raw_value(&self, name: &str) -> Option<&str> {
        self.provenance.get(name).map(|r| r.raw.as_str())
    }

    /// Raw value and source of every setting, keyed by flag name.
    pub fn resolved(&self) -> &BTreeMap<&'static str, Resolved> {
        &self.provenance
    }

    /// The command line, `ETCD_*` environment and default config-file paths
    /// this configuration was parsed from.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// File values overridden by an environment variable or a flag, keyed
    /// by setting (see the field).
    pub fn shadowed_file_values(&self) -> &BTreeMap<&'static str, Resolved> {
        &self.shadowed
    }

    /// The backend quota in force: 2 GiB when `--quota-backend-bytes` is 0.
    pub fn effective_quota_backend_bytes(&self) -> u64 {
        if self.quota_backend_bytes == 0 {
            DEFAULT_QUOTA_BACKEND_BYTES
        } else {
            self.quota_backend_bytes
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms)
    }

    /// Raft election timeout in ticks of one heartbeat (10 by default).
    pub fn election_ticks(&self) -> usize {
        let ticks = self
            .election_timeout_ms
            .checked_div(self.heartbeat_interval_ms)
            .unwrap_or(0);
        usize::try_from(ticks).unwrap_or(usize::MAX)
    }

    /// How long a client request may wait for raft: 5 s plus twice the
    /// election timeout, as etcd computes it (7 s by default).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5).saturating_add(self.election_timeout().saturating_mul(2))
    }

    /// `--initial-cluster` grouped by member name, in order of first
    /// appearance: what a member ID is computed from.
    pub fn initial_cluster_members(&self) -> Vec<(&str, Vec<&Url>)> {
        let mut out: Vec<(&str, Vec<&Url>)> = Vec::new();
        for m in &self.initial_cluster {
            match out.iter_mut().find(|(n, _)| *n == m.name) {
                Some((_, urls)) => urls.push(&m.peer_url),
                None => out.push((&m.name, vec![&m.peer_url])),
            }
        }
        out
    }
}

impl Default for ServerConfig {
    /// The configuration of `cairn` run with no flags and no `ETCD_*`
    /// environment (a one-member cluster named `default`).
    fn default() -> Self {
        let empty: [(String, String); 0] = [];
        // No default config-file paths: defaults must not depend on /etc.
        match crate::parse_with(std::iter::empty::<String>(), empty, &[]) {
            Ok(crate::Invocation::Serve(cfg)) => *cfg,
            // Unreachable unless the registry's defaults are themselves
            // invalid, which the `defaults` test rules out.
            other => panic!("built-in defaults do not form a valid config: {other:?}"),
        }
    }
}

mod build;
mod cluster;
mod tls_rules;
mod value;

pub(crate) use self::{build::*, value::*};
use self::{cluster::*, tls_rules::*};
