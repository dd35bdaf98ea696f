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

/// A setting's value after syntax parsing, comparable with its default.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parsed {
    Bool(bool),
    Uint(u64),
    Duration(Duration),
    Text(String),
    List(Vec<String>),
}

/// Parses `raw` by the setting's kind; `Err` holds what was expected.
fn parse_raw(s: &Setting, raw: &str) -> Result<Parsed, String> {
    match s.kind {
        Kind::Bool => parse_go_bool(raw)
            .map(Parsed::Bool)
            .ok_or_else(|| "true or false".to_string()),
        Kind::Uint(unit) => match parse_go_uint(raw) {
            Ok(v) => Ok(Parsed::Uint(v)),
            Err(UintError::Syntax) => Err(format!("a whole number of {unit}")),
            Err(UintError::Range) => Err(format!(
                "a whole number of {unit} no larger than {}",
                u64::MAX
            )),
        },
        Kind::Duration => parse_go_duration(raw)
            .map(Parsed::Duration)
            .map_err(|e| format!("a duration such as 5s, 100ms or 1h30m ({e})")),
        Kind::Text | Kind::Ignored => Ok(Parsed::Text(raw.to_string())),
        Kind::Choice(options) => {
            if options.contains(&raw) {
                Ok(Parsed::Text(raw.to_string()))
            } else {
                Err(one_of(options))
            }
        }
        Kind::UrlList | Kind::List => Ok(Parsed::List(split_list(raw))),
        Kind::InitialCluster => Ok(Parsed::Text(raw.trim().to_string())),
        // Only the syntax is checked here: whether a number means hours or
        // revisions depends on --auto-compaction-mode (see `retention`).
        Kind::Retention => {
            if raw.is_empty() || decimal(raw).is_some() || parse_go_duration(raw).is_ok() {
                Ok(Parsed::Text(raw.to_string()))
            } else {
                Err(RETENTION_EXPECTED.to_string())
            }
        }
    }
}

const RETENTION_EXPECTED: &str = "a number of hours or a duration such as 30m in periodic mode, or a number of revisions in revision mode (0 disables)";

/// A plain decimal number, as Go's `strconv.Atoi` reads etcd's retention
/// (no base prefixes: `010` is ten, not eight).
fn decimal(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Syntax, range and support status of one value: every check that needs
/// no other setting. Returns the parsed value and, for a non-default
/// `NoEffect` value, a warning. Shared by [`build`] and `check`, which runs
/// it on every value of a file, also those that a later source overrides,
/// so that `check` can report each bad value on its own instead of stopping
/// at the first.
pub(crate) fn check_value(
    s: &Setting,
    raw: &str,
    source: &Source,
) -> Result<(Parsed, Option<String>), ConfigError> {
    let bad = |expected: String| ConfigError::BadValue {
        flag: s.flag(),
        origin: source.clone(),
        value: raw.to_string(),
        expected,
    };
    let value = parse_raw(s, raw).map_err(bad)?;
    check_range(s, &value, source).map_err(|e| match e {
        RangeError::Expected(expected) => bad(expected),
        RangeError::Other(e) => e,
    })?;
    let mut warning = None;
    if source.is_explicit() && !is_default(s, &value) {
        match s.status {
            Status::Supported => {}
            Status::NotYet { what } => {
                return Err(ConfigError::NotSupportedYet {
                    flag: s.flag(),
                    origin: source.clone(),
                    what: what.to_string(),
                    hint: "the flag is recognised; leave it unset".to_string(),
                });
            }
            Status::NoEffect { why } => {
                warning = Some(format!(
                    "{}{} is set to {raw:?} but has no effect in cairn: {why}",
                    s.flag(),
                    source.suffix(),
                ));
            }
        }
    }
    Ok((value, warning))
}

/// Why a value that parses is still not acceptable.
enum RangeError {
    /// What the setting takes, for a `BadValue` error.
    Expected(String),
    /// An error with its own wording (etcd's, where etcd has one).
    Other(ConfigError),
}

impl From<String> for RangeError {
    fn from(expected: String) -> Self {
        RangeError::Expected(expected)
    }
}

/// The rules a setting's value must follow on its own (ranges, list items,
/// URL shapes); rules about combinations of settings are in [`build`].
fn check_range(s: &Setting, value: &Parsed, source: &Source) -> Result<(), RangeError> {
    let at = source.file_suffix();
    match (s.name, value) {
        ("name", Parsed::Text(t)) if t.is_empty() => {
            Err("a non-empty member name".to_string().into())
        }
        ("snapshot-count" | "max-txn-ops" | "max-request-bytes", Parsed::Uint(0)) => {
            Err("a number greater than 0".to_string().into())
        }
        ("heartbeat-interval", Parsed::Uint(0)) => Err(RangeError::Other(ConfigError::invalid(
            format!("--heartbeat-interval{at} must be >0 (set to 0ms)"),
        ))),
        ("election-timeout", Parsed::Uint(ms)) if *ms > MAX_ELECTION_TIMEOUT_MS => {
            Err(RangeError::Other(ConfigError::invalid(format!(
                "--election-timeout[{ms}ms]{at} is too long, and should be set less than {MAX_ELECTION_TIMEOUT_MS}ms"
            ))))
        }
        ("quota-backend-bytes", Parsed::Uint(v)) if *v > MAX_QUOTA_BACKEND_BYTES => {
            Err(format!("at most {MAX_QUOTA_BACKEND_BYTES} bytes (1 TiB)").into())
        }
        ("bcrypt-cost", Parsed::Uint(v)) if !(4..=31).contains(v) => {
            Err("a bcrypt cost between 4 and 31".to_string().into())
        }
        (name, Parsed::Uint(v)) if U32_SETTINGS.contains(&name) && *v > u64::from(u32::MAX) => {
            let unit = match s.kind {
                Kind::Uint(unit) => unit,
                _ => "units",
            };
            Err(format!("a whole number of {unit} no larger than {}", u32::MAX).into())
        }
        ("auth-token", Parsed::Text(t)) => match t.split(',').next().unwrap_or_default() {
            // The JWT options (keys, sign method, ttl) are checked when the
            // server loads the keys.
            "simple" | "jwt" => Ok(()),
            _ => Err("simple or jwt,<options>".to_string().into()),
        },
        ("cipher-suites", Parsed::List(names)) => {
            match names.iter().find(|n| tls::lookup_suite(n).is_none()) {
                Some(name) => Err(unknown_suite(name).into()),
                None => Ok(()),
            }
        }
        // An absent `--initial-cluster` is derived from other settings.
        ("initial-cluster", Parsed::Text(text)) if source.is_explicit() => {
            parse_initial_cluster(text).map(|_| ()).map_err(Into::into)
        }
        (name, Parsed::List(items)) if s.kind == Kind::UrlList => {
            let rule = url_rule(name);
            parse_url_list(items, rule).map(|_| ()).map_err(Into::into)
        }
        _ => Ok(()),
    }
}

/// Settings held in a `u32` (their registry kind is a general `Uint`).
const U32_SETTINGS: &[&str] = &[
    "max-snapshots",
    "max-txn-ops",
    "max-request-bytes",
    "max-concurrent-streams",
    "bcrypt-cost",
    "experimental-compaction-batch-limit",
];

/// The named outputs of `--log-outputs`; any other item is a file path
/// (appended to), as in etcd 3.4 with `--logger=zap`.
const LOG_OUTPUTS: [&str; 4] = ["default", "stderr", "stdout", "a file path"];

/// How a URL-list setting is checked: must it bind (etcd's listener rule:
/// the host is an IP address or `localhost`), may it be empty, and an
/// example for messages.
#[derive(Clone, Copy)]
struct UrlRule {
    bind: bool,
    required: bool,
    example: &'static str,
}

const PEER_EXAMPLE: &str = "http://10.0.0.1:2380";
const CLIENT_EXAMPLE: &str = "http://10.0.0.1:2379";

fn url_rule(name: &str) -> UrlRule {
    let (bind, required, example) = match name {
        "listen-peer-urls" => (true, true, PEER_EXAMPLE),
        "listen-client-urls" => (true, true, CLIENT_EXAMPLE),
        "listen-metrics-urls" => (true, false, CLIENT_EXAMPLE),
        "initial-advertise-peer-urls" => (false, true, PEER_EXAMPLE),
        _ => (false, true, CLIENT_EXAMPLE),
    };
    UrlRule {
        bind,
        required,
        example,
    }
}

/// The URLs of a list; `Err` holds what was expected.
fn parse_url_list(items: &[String], rule: UrlRule) -> Result<Vec<Url>, String> {
    let example = rule.example;
    let mut out = Vec::new();
    for item in items {
        let url = parse_url(item).map_err(|e| {
            format!(
                "a comma-separated list of URLs such as {example} ({})",
                e.describe(item)
            )
        })?;
        if rule.bind && !is_bindable(&url) {
            return Err(format!("IP in URL for binding ({item})"));
        }
        out.push(url);
    }
    if rule.required && out.is_empty() {
        return Err(format!("at least one URL, such as {example}"));
    }
    Ok(out)
}

/// What `--cipher-suites` expected, with etcd's wording for the name.
fn unknown_suite(name: &str) -> String {
    format!(
        "a comma-separated list of Go TLS cipher suite names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (unexpected TLS cipher suite {name:?})"
    )
}

/// Whether two raw values of `s` mean the same (`100` and `0x64` do), for
/// the reload diff. Values that do not parse compare as text.
pub(crate) fn same_value(s: &Setting, a: &str, b: &str) -> bool {
    match (parse_raw(s, a), parse_raw(s, b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// "new or existing", "basic or extensive", "a, b or c".
fn one_of(options: &[&str]) -> String {
    match options {
        [] => "nothing".to_string(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Whether a (parsed) value equals the setting's default. Ignored legacy
/// flags have no meaningful default: setting them at all is worth a warning.
fn is_default(s: &Setting, value: &Parsed) -> bool {
    s.kind != Kind::Ignored && parse_raw(s, s.default).as_ref() == Ok(value)
}

/// The resolved and parsed values, with helpers that turn them into typed
/// fields and produce errors naming the flag and its source.
struct Inputs {
    resolved: BTreeMap<&'static str, Resolved>,
    parsed: BTreeMap<&'static str, Parsed>,
}

impl Inputs {
    fn setting(&self, name: &str) -> Result<&'static Setting, ConfigError> {
        registry::lookup(name)
            .ok_or_else(|| ConfigError::invalid(format!("internal error: no setting --{name}")))
    }

    fn resolved(&self, name: &str) -> Result<&Resolved, ConfigError> {
        self.resolved
            .get(name)
            .ok_or_else(|| ConfigError::invalid(format!("internal error: --{name} unresolved")))
    }

    fn explicit(&self, name: &str) -> bool {
        self.resolved
            .get(name)
            .is_some_and(|r| r.source.is_explicit())
    }

    /// Where a value in a file is, for messages about combinations of
    /// settings (empty for other sources, which those messages predate).
    fn at(&self, name: &str) -> String {
        self.resolved
            .get(name)
            .map(|r| r.source.file_suffix())
            .unwrap_or_default()
    }

    /// A `BadValue` for the current value of `name`.
    fn bad(&self, name: &str, expected: impl Into<String>) -> ConfigError {
        let (value, origin) = match self.resolved.get(name) {
            Some(r) => (r.raw.clone(), r.source.clone()),
            None => (String::new(), Source::Default),
        };
        ConfigError::BadValue {
            flag: format!("--{name}"),
            origin,
            value,
            expected: expected.into(),
        }
    }

    fn parsed(&self, name: &str) -> Result<&Parsed, ConfigError> {
        self.parsed
            .get(name)
            .ok_or_else(|| ConfigError::invalid(format!("internal error: --{name} unparsed")))
    }

    fn wrong_kind(name: &str) -> ConfigError {
        ConfigError::invalid(format!("internal error: --{name} read as the wrong kind"))
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.parsed(name)? {
            Parsed::Bool(b) => Ok(*b),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    fn uint(&self, name: &str) -> Result<u64, ConfigError> {
        match self.parsed(name)? {
            Parsed::Uint(v) => Ok(*v),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    fn u32(&self, name: &str) -> Result<u32, ConfigError> {
        let v = self.uint(name)?;
        u32::try_from(v).map_err(|_| {
            let unit = match self.setting(name).map(|s| s.kind) {
                Ok(Kind::Uint(unit)) => unit,
                _ => "units",
            };
            self.bad(
                name,
                format!("a whole number of {unit} no larger than {}", u32::MAX),
            )
        })
    }

    fn duration(&self, name: &str) -> Result<Duration, ConfigError> {
        match self.parsed(name)? {
            Parsed::Duration(d) => Ok(*d),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    fn text(&self, name: &str) -> Result<String, ConfigError> {
        match self.parsed(name)? {
            Parsed::Text(t) => Ok(t.clone()),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    fn list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        match self.parsed(name)? {
            Parsed::List(items) => Ok(items.clone()),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    /// A URL list, checked by the rule for its setting (see [`url_rule`]).
    fn urls(&self, name: &str) -> Result<Vec<Url>, ConfigError> {
        parse_url_list(&self.list(name)?, url_rule(name)).map_err(|e| self.bad(name, e))
    }
}

/// What a configuration carries besides setting values.
pub(crate) struct Extras {
    pub(crate) sources: Sources,
    pub(crate) config_files: Vec<PathBuf>,
    pub(crate) plugins: toml::Table,
    /// File values that the environment or a flag overrides.
    pub(crate) shadowed: BTreeMap<&'static str, Resolved>,
}

/// Builds and validates the configuration from the merged values; the
/// first problem found is the error (see [`build_all`] for every one).
pub(crate) fn build(
    resolved: BTreeMap<&'static str, Resolved>,
    warnings: Vec<String>,
    extras: Extras,
) -> Result<ServerConfig, ConfigError> {
    build_all(resolved, warnings, extras).map_err(|errors| {
        errors.into_iter().next().unwrap_or_else(|| {
            ConfigError::invalid("internal error: validation failed without a reason")
        })
    })
}

/// [`build`], reporting every problem: each value that is wrong on its own,
/// or, when every value is fine on its own, each combination that is wrong.
/// (Combinations are not judged while a value is wrong, since a rule about
/// two settings says nothing useful when one of them is unreadable.)
pub(crate) fn build_all(
    resolved: BTreeMap<&'static str, Resolved>,
    mut warnings: Vec<String>,
    extras: Extras,
) -> Result<ServerConfig, Vec<ConfigError>> {
    // Pass 1 and 2: syntax, range, then support status, in registry order.
    let mut parsed = BTreeMap::new();
    let mut errors = Vec::new();
    for s in SETTINGS {
        let Some(r) = resolved.get(s.name) else {
            errors.push(ConfigError::invalid(format!(
                "internal error: --{} unresolved",
                s.name
            )));
            continue;
        };
        match check_value(s, &r.raw, &r.source) {
            Ok((value, warning)) => {
                warnings.extend(warning);
                parsed.insert(s.name, value);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let inputs = Inputs { resolved, parsed };
    // Pass 3. Internal errors (a setting read as the wrong kind) end it at
    // once; broken combinations are collected in `errors`.
    match typed(inputs, warnings, extras, &mut errors) {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

/// Pass 3 of [`build_all`]: typed fields from values that are each valid,
/// and the rules about combinations of settings, whose violations go to
/// `errors` so that one broken rule does not hide the next.
fn typed(
    mut inputs: Inputs,
    mut warnings: Vec<String>,
    extras: Extras,
    errors: &mut Vec<ConfigError>,
) -> Result<ServerConfig, ConfigError> {
    let name = inputs.text("name")?;
    let data_dir_text = inputs.text("data-dir")?;
    let data_dir = if data_dir_text.is_empty() {
        let derived = format!("{name}.etcd");
        set_raw(&mut inputs, "data-dir", &derived);
        PathBuf::from(derived)
    } else {
        PathBuf::from(data_dir_text)
    };

    let snapshot_count = inputs.uint("snapshot-count")?;
    let heartbeat_interval_ms = inputs.uint("heartbeat-interval")?;
    let election_timeout_ms = inputs.uint("election-timeout")?;
    errors.extend(
        check_timing(
            heartbeat_interval_ms,
            election_timeout_ms,
            &inputs.at("heartbeat-interval"),
            &inputs.at("election-timeout"),
        )
        .err(),
    );

    if inputs.bool("experimental-enable-lease-checkpoint-persist")?
        && !inputs.bool("experimental-enable-lease-checkpoint")?
    {
        errors.push(ConfigError::invalid(
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint",
        ));
    }

    let listen_peer_urls = inputs.urls("listen-peer-urls")?;
    let listen_client_urls = inputs.urls("listen-client-urls")?;
    let listen_metrics_urls = inputs.urls("listen-metrics-urls")?;
    let initial_advertise_peer_urls = inputs.urls("initial-advertise-peer-urls")?;
    if inputs.explicit("listen-client-urls") && !inputs.explicit("advertise-client-urls") {
        errors.push(ConfigError::invalid(format!(
            "--advertise-client-urls is required when --listen-client-urls{} is set explicitly",
            inputs.at("listen-client-urls")
        )));
    }
    let advertise_client_urls = inputs.urls("advertise-client-urls")?;

    let max_snapshots = inputs.u32("max-snapshots")?;
    let quota_backend_bytes = inputs.uint("quota-backend-bytes")?;
    if quota_backend_bytes > RECOMMENDED_MAX_QUOTA_BACKEND_BYTES {
        warnings.push(format!(
            "--quota-backend-bytes={quota_backend_bytes}{} exceeds the maximum recommended quota of {RECOMMENDED_MAX_QUOTA_BACKEND_BYTES} bytes (8 GiB)",
            inputs.at("quota-backend-bytes")
        ));
    }
    let max_txn_ops = inputs.u32("max-txn-ops")?;
    let max_request_bytes = inputs.u32("max-request-bytes")?;
    if u64::from(max_request_bytes) > RECOMMENDED_MAX_REQUEST_BYTES {
        warnings.push(format!(
            "--max-request-bytes={max_request_bytes}{} exceeds the maximum recommended size of {RECOMMENDED_MAX_REQUEST_BYTES} bytes (10 MiB)",
            inputs.at("max-request-bytes")
        ));
    }
    let max_concurrent_streams = inputs.u32("max-concurrent-streams")?;

    let initial_cluster_state = match inputs.text("initial-cluster-state")?.as_str() {
        "existing" => ClusterState::Existing,
        _ => ClusterState::New,
    };
    let bootstrap = bootstrap(&inputs, &name).unwrap_or_else(|e| {
        errors.push(e);
        Bootstrap::Static
    });
    let initial_cluster = initial_cluster(&mut inputs, &name, &initial_advertise_peer_urls)?;
    if bootstrap != Bootstrap::Static && !inputs.explicit("initial-cluster") {
        // As etcd: discovery clears the default --initial-cluster.
        set_raw(&mut inputs, "initial-cluster", "");
    }
    if initial_cluster_state == ClusterState::New && bootstrap == Bootstrap::Static {
        errors.extend(
            check_own_membership(
                &inputs,
                &name,
                &initial_cluster,
                &initial_advertise_peer_urls,
            )
            .err(),
        );
    }

    let metrics = match inputs.text("metrics")?.as_str() {
        "extensive" => MetricsLevel::Extensive,
        _ => MetricsLevel::Basic,
    };
    let log_level = if inputs.bool("debug")? {
        warnings.push("--debug is deprecated; use --log-level=debug".to_string());
        LogLevel::Debug
    } else {
        match inputs.text("log-level")?.as_str() {
            "debug" => LogLevel::Debug,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            _ => LogLevel::Info,
        }
    };
    let log_outputs = log_outputs(&inputs, &mut warnings).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });

    let auth_token = inputs.text("auth-token")?;
    let bcrypt_cost = inputs.u32("bcrypt-cost")?;

    let auto_compaction_mode = match inputs.text("auto-compaction-mode")?.as_str() {
        "revision" => AutoCompactionMode::Revision,
        _ => AutoCompactionMode::Periodic,
    };
    let auto_compaction_retention = retention(&inputs, auto_compaction_mode).unwrap_or_else(|e| {
        errors.push(e);
        AutoCompactionRetention::Disabled
    });

    let cipher_suites = cipher_suites(&inputs, &mut warnings)?;
    let https_peers = initial_cluster.iter().any(|m| is_secure(&m.peer_url));
    let client_tls = tls_side(
        &inputs,
        TlsSide::Client,
        &[
            ("listen-client-urls", &listen_client_urls),
            ("listen-metrics-urls", &listen_metrics_urls),
        ],
        false,
        &mut warnings,
        errors,
    );
    let peer_tls = tls_side(
        &inputs,
        TlsSide::Peer,
        &[("listen-peer-urls", &listen_peer_urls)],
        https_peers,
        &mut warnings,
        errors,
    );

    Ok(ServerConfig {
        name,
        data_dir,
        snapshot_count,
        heartbeat_interval_ms,
        election_timeout_ms,
        initial_election_tick_advance: inputs.bool("initial-election-tick-advance")?,
        listen_peer_urls,
        listen_client_urls,
        listen_metrics_urls,
        max_snapshots,
        quota_backend_bytes,
        max_txn_ops,
        max_request_bytes,
        max_concurrent_streams,
        grpc_keepalive_min_time: inputs.duration("grpc-keepalive-min-time")?,
        grpc_keepalive_interval: inputs.duration("grpc-keepalive-interval")?,
        grpc_keepalive_timeout: inputs.duration("grpc-keepalive-timeout")?,
        initial_advertise_peer_urls,
        initial_cluster,
        bootstrap,
        initial_cluster_token: inputs.text("initial-cluster-token")?,
        initial_cluster_state,
        advertise_client_urls,
        strict_reconfig_check: inputs.bool("strict-reconfig-check")?,
        pre_vote: inputs.bool("pre-vote")?,
        enable_v2: inputs.bool("enable-v2")?,
        enable_pprof: inputs.bool("enable-pprof")?,
        enable_ui: inputs.bool("enable-ui")?,
        wal_dir: Some(inputs.text("wal-dir")?)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        cors: dedup(inputs.list("cors")?),
        host_whitelist: dedup(inputs.list("host-whitelist")?),
        metrics,
        logger: inputs.text("logger")?,
        log_outputs,
        log_level,
        experimental_compaction_batch_limit: inputs.u32("experimental-compaction-batch-limit")?,
        experimental_warning_apply_duration: inputs
            .duration("experimental-warning-apply-duration")?,
        experimental_watch_progress_notify_interval: inputs
            .duration("experimental-watch-progress-notify-interval")?,
        experimental_initial_corrupt_check: inputs.bool("experimental-initial-corrupt-check")?,
        experimental_enable_lease_checkpoint: inputs
            .bool("experimental-enable-lease-checkpoint")?,
        experimental_enable_lease_checkpoint_persist: inputs
            .bool("experimental-enable-lease-checkpoint-persist")?,
        enable_grpc_gateway: inputs.bool("enable-grpc-gateway")?,
        experimental_enable_v2v3: inputs.text("experimental-enable-v2v3")?,
        experimental_corrupt_check_time: inputs.duration("experimental-corrupt-check-time")?,
        force_new_cluster: inputs.bool("force-new-cluster")?,
        auth_token,
        bcrypt_cost,
        auth_token_ttl_secs: inputs.uint("auth-token-ttl")?,
        auto_compaction_mode,
        auto_compaction_retention,
        client_tls,
        peer_tls,
        cipher_suites,
        config_files: extras.config_files,
        plugins: extras.plugins,
        warnings,
        provenance: inputs.resolved,
        sources: extras.sources,
        shadowed: extras.shadowed,
    })
}

/// One side's TLS settings and the check of its `https` listeners; a
/// problem goes to `errors` (the listener check is skipped when the
/// settings themselves are broken: it would only repeat the problem).
fn tls_side(
    inputs: &Inputs,
    side: TlsSide,
    listeners: &[(&str, &Vec<Url>)],
    https_elsewhere: bool,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<TlsSettings> {
    let settings = match tls_settings(inputs, side, warnings) {
        Ok(settings) => settings,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    if let Err(e) = check_https_listeners(
        inputs,
        side,
        settings.as_ref(),
        listeners,
        https_elsewhere,
        warnings,
    ) {
        errors.push(e);
    }
    settings
}

/// `--auto-compaction-retention` read by mode, as etcd does: periodic takes
/// hours or a duration, revision takes a count; zero or empty disables.
fn retention(
    inputs: &Inputs,
    mode: AutoCompactionMode,
) -> Result<AutoCompactionRetention, ConfigError> {
    const FLAG: &str = "auto-compaction-retention";
    let raw = inputs.text(FLAG)?;
    if raw.is_empty() {
        return Ok(AutoCompactionRetention::Disabled);
    }
    let number = decimal(&raw);
    let retention = match mode {
        AutoCompactionMode::Periodic => {
            let period = match number {
                Some(hours) if hours > MAX_RETENTION_HOURS => {
                    return Err(inputs.bad(FLAG, format!("at most {MAX_RETENTION_HOURS} hours")));
                }
                Some(hours) => Duration::from_secs(hours * 3600),
                None => parse_go_duration(&raw)
                    .map_err(|e| inputs.bad(FLAG, format!("{RETENTION_EXPECTED} ({e})")))?,
            };
            if period.is_zero() {
                AutoCompactionRetention::Disabled
            } else {
                AutoCompactionRetention::Period(period)
            }
        }
        AutoCompactionMode::Revision => match number {
            Some(0) => AutoCompactionRetention::Disabled,
            Some(revisions) => AutoCompactionRetention::Revisions(revisions),
            None => {
                return Err(inputs.bad(
                    FLAG,
                    format!(
                        "a number of revisions such as 1000, because --auto-compaction-mode{} is revision",
                        inputs.at("auto-compaction-mode")
                    ),
                ));
            }
        },
    };
    Ok(retention)
}

/// `--cipher-suites`: Go's names, checked as etcd checks them (an unknown
/// name is an error with etcd's wording). Suites Go knows but rustls does
/// not implement (CBC, RC4, 3DES, RSA key exchange) are dropped with a
/// warning: offering fewer suites than asked never weakens a connection.
fn cipher_suites(
    inputs: &Inputs,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<String>>, ConfigError> {
    const FLAG: &str = "cipher-suites";
    let names = inputs.list(FLAG)?;
    if names.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    for name in &names {
        match tls::lookup_suite(name) {
            // Unknown names are refused with the value (`check_range`).
            None => return Err(inputs.bad(FLAG, unknown_suite(name))),
            Some(SuiteName::Tls12(canonical)) => {
                if !out.iter().any(|s| s == canonical) {
                    out.push(canonical.to_string());
                }
            }
            Some(SuiteName::Tls13) => {}
            Some(SuiteName::Unavailable) => dropped.push(name.as_str()),
        }
    }
    if !dropped.is_empty() {
        warnings.push(format!(
            "--cipher-suites{}: {} not offered by cairn (only ECDHE suites with AES-GCM or ChaCha20-Poly1305 are implemented); {}",
            inputs.at(FLAG),
            dropped.join(", "),
            if out.is_empty() {
                "no TLS 1.2 suite is left, so only TLS 1.3 is served".to_string()
            } else {
                format!("offering {}", out.join(", "))
            }
        ));
    }
    Ok(Some(out))
}

/// One side's TLS flags, checked together. `None` when the side has no
/// certificate (no files and no auto TLS); the other flags of that side
/// then have nothing to apply to and produce a warning, as in etcd.
fn tls_settings(
    inputs: &Inputs,
    side: TlsSide,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsSettings>, ConfigError> {
    let f = side.flags();
    let path = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
        let text = inputs.text(name)?;
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    };
    let cert_file = path(f.cert_file)?;
    let key_file = path(f.key_file)?;
    let trusted_ca_file = path(f.trusted_ca_file)?;
    let cert_auth_flag = inputs.bool(f.client_cert_auth)?;
    let auto_tls = inputs.bool(f.auto_tls)?;
    let allowed_cn = match side {
        TlsSide::Client => None,
        TlsSide::Peer => Some(inputs.text("peer-cert-allowed-cn")?).filter(|cn| !cn.is_empty()),
    };
    let allowed_hostname = Some(inputs.text(f.allowed_hostname)?).filter(|h| !h.is_empty());
    let crl_file = path(f.crl_file)?;
    if let (Some(cn), Some(hostname)) = (&allowed_cn, &allowed_hostname) {
        // etcd's wording (pkg/transport), with the flags that caused it.
        return Err(ConfigError::invalid(format!(
            "--peer-cert-allowed-cn{} and --{}{} cannot both be set: AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={hostname:?})",
            inputs.at("peer-cert-allowed-cn"),
            f.allowed_hostname,
            inputs.at(f.allowed_hostname)
        )));
    }
    let identity = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => {
            if auto_tls {
                warnings.push(format!(
                    "ignoring --{}{} since --{} and --{} are given",
                    f.auto_tls,
                    inputs.at(f.auto_tls),
                    f.cert_file,
                    f.key_file
                ));
            }
            TlsIdentity::Files {
                cert_file,
                key_file,
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            let (given, missing) = if inputs.text(f.cert_file)?.is_empty() {
                (f.key_file, f.cert_file)
            } else {
                (f.cert_file, f.key_file)
            };
            return Err(ConfigError::invalid(format!(
                "--{given}{} is set but --{missing} is not: a TLS certificate needs both its certificate and its key file",
                inputs.at(given)
            )));
        }
        (None, None) if auto_tls => TlsIdentity::Auto,
        (None, None) => {
            let stray: Vec<String> = [
                (trusted_ca_file.is_some(), f.trusted_ca_file),
                (cert_auth_flag, f.client_cert_auth),
                (allowed_cn.is_some(), "peer-cert-allowed-cn"),
                (allowed_hostname.is_some(), f.allowed_hostname),
                (crl_file.is_some(), f.crl_file),
            ]
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| format!("--{name}{}", inputs.at(name)))
            .collect();
            if !stray.is_empty() {
                warnings.push(format!(
                    "{} set without --{} and --{} (or --{}); ignored",
                    stray.join(", "),
                    f.cert_file,
                    f.key_file,
                    f.auto_tls
                ));
            }
            return Ok(None);
        }
    };
    if identity == TlsIdentity::Auto {
        // etcd replaces the whole TLS setup of an auto-TLS side with the
        // generated certificate, dropping client certificate checks.
        let dropped: Vec<String> = [
            (trusted_ca_file.is_some(), f.trusted_ca_file),
            (cert_auth_flag, f.client_cert_auth),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| format!("--{name}{}", inputs.at(name)))
        .collect();
        if !dropped.is_empty() {
            warnings.push(format!(
                "{} ignored with --{}: a generated certificate is not checked against a CA, so client certificates are not required",
                dropped.join(" and "),
                f.auto_tls
            ));
        }
        let unchecked: Vec<String> = [
            (allowed_cn.is_some(), "peer-cert-allowed-cn"),
            (allowed_hostname.is_some(), f.allowed_hostname),
            (crl_file.is_some(), f.crl_file),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| format!("--{name}{}", inputs.at(name)))
        .collect();
        if !unchecked.is_empty() {
            warnings.push(format!(
                "{} ignored with --{}: {} certificates are not checked",
                unchecked.join(" and "),
                f.auto_tls,
                side.as_str()
            ));
        }
        return Ok(Some(TlsSettings {
            side,
            identity,
            trusted_ca_file: None,
            client_cert_auth: false,
            allowed_cn: None,
            allowed_hostname: None,
            crl_file: None,
        }));
    }
    if cert_auth_flag && trusted_ca_file.is_none() {
        return Err(ConfigError::invalid(format!(
            "--{}{} needs --{}: the PEM bundle of the CAs that sign the certificates to accept",
            f.client_cert_auth,
            inputs.at(f.client_cert_auth),
            f.trusted_ca_file
        )));
    }
    // etcd requires client certificates whenever a trusted CA is given.
    let client_cert_auth = cert_auth_flag || trusted_ca_file.is_some();
    if !client_cert_auth {
        // Without client certificates there is nothing to check.
        for (set, name) in [
            (allowed_cn.is_some(), "peer-cert-allowed-cn"),
            (allowed_hostname.is_some(), f.allowed_hostname),
            (crl_file.is_some(), f.crl_file),
        ] {
            if set {
                warnings.push(format!(
                    "--{name}{} has no effect without --{} and --{}",
                    inputs.at(name),
                    f.client_cert_auth,
                    f.trusted_ca_file
                ));
            }
        }
    }
    Ok(Some(TlsSettings {
        side,
        identity,
        trusted_ca_file,
        client_cert_auth,
        allowed_cn: allowed_cn.filter(|_| client_cert_auth),
        allowed_hostname: allowed_hostname.filter(|_| client_cert_auth),
        crl_file: crl_file.filter(|_| client_cert_auth),
    }))
}

/// An `https` listener needs a certificate (etcd's startup errors); TLS
/// settings without any `https` URL to use them are worth a warning.
/// `https_elsewhere`: the side's settings are also used for outgoing
/// connections to these (peer) URLs.
fn check_https_listeners(
    inputs: &Inputs,
    side: TlsSide,
    settings: Option<&TlsSettings>,
    listeners: &[(&str, &Vec<Url>)],
    https_elsewhere: bool,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let f = side.flags();
    let mut any_https = https_elsewhere;
    for (flag, urls) in listeners {
        for url in urls.iter().filter(|u| is_secure(u)) {
            any_https = true;
            if settings.is_none() {
                return Err(ConfigError::invalid(format!(
                    "TLS key/cert (--{}, --{}) must be provided for {} url {} with HTTPS scheme (--{flag}{}); or use --{} for a generated certificate",
                    f.cert_file,
                    f.key_file,
                    side.as_str(),
                    format_url(url),
                    inputs.at(flag),
                    f.auto_tls
                )));
            }
        }
    }
    if settings.is_some() && !any_https {
        warnings.push(format!(
            "{} TLS is configured (--{} or --{}) but no {} URL uses https://, so it is not used",
            side.as_str(),
            f.cert_file,
            f.auto_tls,
            side.as_str()
        ));
    }
    Ok(())
}

/// Records a derived default so provenance shows the value in force.
fn set_raw(inputs: &mut Inputs, name: &'static str, raw: &str) {
    if let Some(r) = inputs.resolved.get_mut(name) {
        r.raw = raw.to_string();
    }
}

/// etcd's rule relating the two timing settings, with etcd's wording (each
/// one's own range is checked with the value). `hb_at` and `el_at` locate
/// values that came from a file.
fn check_timing(
    heartbeat_ms: u64,
    election_ms: u64,
    hb_at: &str,
    el_at: &str,
) -> Result<(), ConfigError> {
    if heartbeat_ms.saturating_mul(5) > election_ms {
        return Err(ConfigError::invalid(format!(
            "--election-timeout[{election_ms}ms]{el_at} should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]{hb_at}"
        )));
    }
    Ok(())
}

/// `--initial-cluster`, or `<name>=<each advertised peer URL>` when it was
/// not given (so `--name infra1` alone starts a one-member cluster).
fn initial_cluster(
    inputs: &mut Inputs,
    name: &str,
    advertise_peer: &[Url],
) -> Result<Vec<InitialMember>, ConfigError> {
    const FLAG: &str = "initial-cluster";
    if !inputs.explicit(FLAG) {
        let members: Vec<InitialMember> = advertise_peer
            .iter()
            .map(|u| InitialMember {
                name: name.to_string(),
                peer_url: u.clone(),
            })
            .collect();
        let derived = join_members(&members);
        set_raw(inputs, FLAG, &derived);
        return Ok(members);
    }
    parse_initial_cluster(&inputs.text(FLAG)?).map_err(|e| inputs.bad(FLAG, e))
}

/// `--discovery`, `--discovery-srv` and their companions, with etcd's
/// rules: at most one of `--initial-cluster`, `--discovery` and
/// `--discovery-srv`.
fn bootstrap(inputs: &Inputs, name: &str) -> Result<Bootstrap, ConfigError> {
    let url = inputs.text("discovery")?;
    let domain = inputs.text("discovery-srv")?;
    let service_name = inputs.text("discovery-srv-name")?;
    let set = [
        !url.is_empty(),
        inputs.explicit("initial-cluster"),
        !domain.is_empty(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(ConfigError::invalid(CONFLICT_BOOTSTRAP_FLAGS));
    }
    if !url.is_empty() {
        check_discovery_url(&url).map_err(|e| inputs.bad("discovery", e))?;
        let proxy = discovery_proxy(&inputs.text("discovery-proxy")?)
            .map_err(|e| inputs.bad("discovery-proxy", e))?;
        let fallback = match inputs.text("discovery-fallback")?.as_str() {
            "exit" => DiscoveryFallback::Exit,
            _ => DiscoveryFallback::Proxy,
        };
        return Ok(Bootstrap::Discovery {
            url,
            proxy,
            fallback,
        });
    }
    if !domain.is_empty() {
        return Ok(Bootstrap::Srv {
            domain,
            service_name,
        });
    }
    if !service_name.is_empty() && !inputs.explicit("initial-cluster") {
        // etcd clears its default --initial-cluster for this flag too and
        // then finds no member at all; say why.
        return Err(ConfigError::invalid(format!(
            "couldn't find local name {name:?} in the initial cluster configuration: --discovery-srv-name{} is set without --discovery-srv, which leaves no initial cluster (as in etcd)",
            inputs.at("discovery-srv-name")
        )));
    }
    Ok(Bootstrap::Static)
}

/// A discovery URL must be one an HTTP client can fetch.
fn check_discovery_url(text: &str) -> Result<(), String> {
    const SHAPE: &str = "a discovery URL such as https://discovery.etcd.io/<token> or http://host:2379/v2/keys/<dir>";
    let url = Url::parse(text).map_err(|e| format!("{SHAPE} ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{SHAPE} (http or https, with a host)"));
    }
    Ok(())
}

/// `--discovery-proxy`, sanitized as etcd does (a bare `host:port` means
/// `http://host:port`). The proxy itself must speak plain HTTP (https
/// discovery URLs go through it in a CONNECT tunnel).
fn discovery_proxy(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let url = match Url::parse(text) {
        Ok(u) if u.scheme().starts_with("http") && u.host_str().is_some() => u,
        first => match Url::parse(&format!("http://{text}")) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => u,
            _ => {
                let why = first.map_or_else(|e| e.to_string(), |_| "no host".to_string());
                return Err(format!(
                    "an HTTP proxy address such as http://proxy:3128 ({why})"
                ));
            }
        },
    };
    if url.scheme() != "http" {
        return Err("an http:// proxy (cairn does not speak TLS to a proxy)".into());
    }
    Ok(Some(format_url(&url)))
}

/// An explicit `--initial-cluster`; `Err` holds what was expected.
fn parse_initial_cluster(text: &str) -> Result<Vec<InitialMember>, String> {
    const SHAPE: &str = "comma-separated name=peer-URL pairs such as infra1=http://10.0.0.1:2380";
    let mut members = Vec::new();
    let mut seen = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((member, url_text)) = item.split_once('=') else {
            return Err(format!("{SHAPE} ({item:?} has no '=')"));
        };
        let (member, url_text) = (member.trim(), url_text.trim());
        if member.is_empty() {
            return Err(format!("{SHAPE} ({item:?} has an empty member name)"));
        }
        let url = parse_url(url_text)
            .map_err(|e| format!("{SHAPE} (member {member:?}: {})", e.describe(url_text)))?;
        if !seen.insert(format_url(&url)) {
            return Err(format!(
                "{SHAPE} (URL {} is listed twice)",
                format_url(&url)
            ));
        }
        members.push(InitialMember {
            name: member.to_string(),
            peer_url: url,
        });
    }
    if members.is_empty() {
        return Err(SHAPE.to_string());
    }
    Ok(members)
}

fn join_members(members: &[InitialMember]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, format_url(&m.peer_url)))
        .collect::<Vec<_>>()
        .join(",")
}

fn join_urls<'a>(urls: impl IntoIterator<Item = &'a Url>) -> String {
    urls.into_iter()
        .map(format_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// When bootstrapping a new cluster, this member must be in
/// `--initial-cluster` with exactly the URLs it advertises, or the members
/// would compute different member IDs and never form a quorum.
fn check_own_membership(
    inputs: &Inputs,
    name: &str,
    cluster: &[InitialMember],
    advertise_peer: &[Url],
) -> Result<(), ConfigError> {
    let mine: Vec<&Url> = cluster
        .iter()
        .filter(|m| m.name == name)
        .map(|m| &m.peer_url)
        .collect();
    let cluster_text = inputs.resolved("initial-cluster")?.raw.clone();
    let cluster_at = inputs.at("initial-cluster");
    if mine.is_empty() {
        return Err(ConfigError::invalid(format!(
            "couldn't find local name {name:?}{} in the initial cluster configuration (--initial-cluster={cluster_text}){cluster_at}",
            inputs.at("name"),
        )));
    }
    let in_cluster: BTreeSet<String> = mine.iter().map(|u| format_url(u)).collect();
    let advertised: BTreeSet<String> = advertise_peer.iter().map(format_url).collect();
    if in_cluster != advertised {
        return Err(ConfigError::invalid(format!(
            "--initial-cluster has {name}={}{cluster_at} but --initial-advertise-peer-urls={}{}; the member's own peer URLs must be the same in both when --initial-cluster-state is new",
            join_urls(mine.iter().copied()),
            join_urls(advertise_peer),
            inputs.at("initial-advertise-peer-urls"),
        )));
    }
    Ok(())
}

/// `--log-outputs`, or the deprecated `--log-output` when only that is set.
fn log_outputs(inputs: &Inputs, warnings: &mut Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut flag = "log-outputs";
    if inputs.explicit("log-output") {
        warnings.push("--log-output is deprecated; use --log-outputs".to_string());
        if !inputs.explicit("log-outputs") {
            flag = "log-output";
        }
    }
    let outputs = inputs.list(flag)?;
    if outputs.is_empty() {
        return Err(inputs.bad(flag, one_of(&LOG_OUTPUTS)));
    }
    Ok(dedup(outputs))
}

/// Drops repeated items, keeping the first (etcd keeps these as sets).
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}
