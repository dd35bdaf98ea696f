//! The settings registry: one table that says, for every flag etcd 3.4 knows,
//! how Cairn treats it.
//!
//! Everything else in this crate (the argv lexer, the clap command, the
//! environment layer, `--help`, the "is this a default value?" check) is
//! derived from [`SETTINGS`], so adding a flag or changing its status is an
//! edit to one row here.
//!
//! # Flipping a support status
//!
//! Each row starts from `setting(..)` (which means `Supported`, `Reload::Restart`)
//! and is refined by chained `const fn` calls. To mark a feature as built,
//! delete the `.not_yet(..)` call on its row; to stop supporting one, add it.
//! The typed [`crate::ServerConfig`] field for a newly supported flag still has
//! to be added by hand, because the type of that field is a design decision.

/// Where `--help` lists a setting; the order of the variants is the order
/// of the sections in the help text (the same order etcd uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Member,
    Clustering,
    Security,
    Auth,
    Monitoring,
    Logging,
    Proxy,
    Experimental,
    Unsafe,
    Deprecated,
}

impl Section {
    /// Every section, in help order.
    pub const ALL: [Section; 10] = [
        Section::Member,
        Section::Clustering,
        Section::Security,
        Section::Auth,
        Section::Monitoring,
        Section::Logging,
        Section::Proxy,
        Section::Experimental,
        Section::Unsafe,
        Section::Deprecated,
    ];

    /// The heading printed by `--help`.
    pub fn title(self) -> &'static str {
        match self {
            Section::Member => "Member",
            Section::Clustering => "Clustering",
            Section::Security => "Security",
            Section::Auth => "Auth",
            Section::Monitoring => "Profiling and Monitoring",
            Section::Logging => "Logging",
            Section::Proxy => "v2 Proxy",
            Section::Experimental => "Experimental feature",
            Section::Unsafe => "Unsafe feature",
            Section::Deprecated => "To be deprecated",
        }
    }
}

/// How a raw (string) value of a setting is read. The same parser is used for
/// command-line, environment and config-file values, so `ETCD_PRE_VOTE=1`
/// and `--pre-vote=1` mean the same thing, as they do in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Go `strconv.ParseBool` spellings. A bare `--flag` means `true`.
    Bool,
    /// An unsigned integer in Go `flag` syntax (decimal, `0x..`, `0o..`,
    /// `0b..`, leading-zero octal, `_` separators). The string names the unit
    /// for error messages ("milliseconds", "bytes", ...).
    Uint(&'static str),
    /// A Go `time.Duration` string such as `5s` or `1h30m`.
    Duration,
    /// Free text (names, tokens, paths). May be empty.
    Text,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A comma-separated list of URLs.
    UrlList,
    /// A comma-separated list of words; blanks are dropped.
    List,
    /// `name=url,name=url`.
    InitialCluster,
    /// `--auto-compaction-retention`: in periodic mode hours as a decimal
    /// number or a Go duration, in revision mode a decimal revision count.
    /// Which one is decided once the mode is known (see `config.rs`).
    Retention,
    /// A flag etcd 3.4 still accepts but ignores (etcd 2 leftovers). It takes
    /// an optional value like a boolean and is never applied.
    Ignored,
}

impl Kind {
    /// Whether a bare `--flag` is complete on its own (Go's "boolean flag"
    /// rule). Such flags never take the next argv token as their value.
    pub fn is_boolean(self) -> bool {
        matches!(self, Kind::Bool | Kind::Ignored)
    }
}

/// Whether a later live-reload feature may apply a new value without a
/// restart. Recorded now so the reload change does not have to rediscover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Live,
    Restart,
}

/// How far Cairn implements a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Implemented: the value is parsed, validated and lands in `ServerConfig`.
    Supported,
    /// Recognised but not built. A non-default value is an error, because
    /// running without a feature the operator asked for (TLS, say) is unsafe.
    NotYet { what: &'static str },
    /// Accepted and ignored. A non-default value produces a warning, since
    /// ignoring it cannot hurt (it tunes something Cairn does not have, or
    /// picks between variants Cairn does not make, like `--logger`).
    NoEffect { why: &'static str },
}

/// One row of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The flag name without dashes, e.g. `initial-cluster-token`.
    pub name: &'static str,
    pub section: Section,
    pub kind: Kind,
    /// The built-in default as a raw string, in the same syntax a user would
    /// type. Cairn deviates from etcd 3.4 for `pre-vote` and `enable-v2`.
    pub default: &'static str,
    /// What `--help` prints as the default when the raw default would
    /// mislead (`${name}.etcd` for an empty data dir, for example).
    pub shown_default: Option<&'static str>,
    pub help: &'static str,
    pub reload: Reload,
    pub status: Status,
    /// Accepted but left out of `--help`, as etcd does for its hidden flags.
    pub hidden: bool,
    /// The value is a secret (a password, a key): `cairn config show` masks
    /// it. No etcd 3.4 setting holds a secret itself (TLS keys are paths),
    /// so no row sets this yet; it is the hook for the first one that does.
    pub secret: bool,
}

impl Setting {
    /// The environment variable that sets this flag: `ETCD_` + the name in
    /// upper case with `-` replaced by `_` (etcd's `FlagToEnv` rule).
    pub fn env_var(&self) -> String {
        env_var_for(self.name)
    }

    /// The flag as written on a command line, `--name`.
    pub fn flag(&self) -> String {
        format!("--{}", self.name)
    }

    const fn live(mut self) -> Self {
        self.reload = Reload::Live;
        self
    }

    const fn not_yet(mut self, what: &'static str) -> Self {
        self.status = Status::NotYet { what };
        self
    }

    const fn no_effect(mut self, why: &'static str) -> Self {
        self.status = Status::NoEffect { why };
        self
    }

    const fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    const fn shows(mut self, shown_default: &'static str) -> Self {
        self.shown_default = Some(shown_default);
        self
    }

    // Unused until a setting holds a secret; see `Setting::secret`.
    #[allow(dead_code)]
    const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

/// `ETCD_` + upper-cased name with `-` → `_`.
pub fn env_var_for(name: &str) -> String {
    format!("ETCD_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// A supported, restart-only setting; refine with the chained methods.
const fn setting(
    name: &'static str,
    section: Section,
    kind: Kind,
    default: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        section,
        kind,
        default,
        shown_default: None,
        help,
        reload: Reload::Restart,
        status: Status::Supported,
        hidden: false,
        secret: false,
    }
}

/// The setting with this flag name, if any.
pub fn lookup(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The setting whose environment variable is `var`, if any.
pub fn lookup_env(var: &str) -> Option<&'static Setting> {
    let name = var.strip_prefix("ETCD_")?;
    // Only the exact upper-case spelling is etcd's; `ETCD_name` is not.
    if name.bytes().any(|b| b.is_ascii_lowercase() || b == b'-') {
        return None;
    }
    let flag = name.to_ascii_lowercase().replace('_', "-");
    lookup(&flag)
}

use Kind::*;
use Section::*;

const PROXY: &str = "the v2 proxy";
const LEGACY: &str = "the flag is an etcd 2 leftover that etcd 3.4 also ignores";

/// Every flag etcd 3.4.23 accepts, plus `--config-file`. `--help` and
/// `--version` are not settings and are handled by the argv lexer.
pub static SETTINGS: &[Setting] = &[
    // ---------------------------------------------------------------- Member
    setting("name", Member, Text, "default", "Human-readable name of this member."),
    setting("data-dir", Member, Text, "", "Directory that holds this member's data.")
        .shows("${name}.etcd"),
    setting(
        "wal-dir",
        Member,
        Text,
        "",
        "Separate directory for the write-ahead log (the raft log).",
    ),
    setting(
        "snapshot-count",
        Member,
        Uint("committed entries"),
        "100000",
        "Committed entries between two snapshots of the state machine.",
    )
    .live(),
    setting(
        "heartbeat-interval",
        Member,
        Uint("milliseconds"),
        "100",
        "Raft heartbeat interval in milliseconds.",
    )
    .live(),
    setting(
        "election-timeout",
        Member,
        Uint("milliseconds"),
        "1000",
        "Raft election timeout in milliseconds.",
    )
    .live(),
    setting(
        "initial-election-tick-advance",
        Member,
        Bool,
        "true",
        "Skip most of the first election timeout after boot so a leader is elected sooner.",
    ),
    setting(
        "listen-peer-urls",
        Member,
        UrlList,
        "http://localhost:2380",
        "URLs to accept peer (raft) connections on.",
    ),
    setting(
        "listen-client-urls",
        Member,
        UrlList,
        "http://localhost:2379",
        "URLs to accept client connections on.",
    ),
    setting(
        "max-snapshots",
        Member,
        Uint("snapshot files"),
        "5",
        "Snapshot files to keep (0 keeps all).",
    )
    .live(),
    setting("max-wals", Member, Uint("WAL files"), "5", "WAL files to keep (0 keeps all).")
        .no_effect("cairn keeps its raft log in its storage engine, there are no WAL files to retain"),
    setting(
        "quota-backend-bytes",
        Member,
        Uint("bytes"),
        "0",
        "Storage size that raises the NOSPACE alarm (0 means the 2 GiB default).",
    )
    .live(),
    setting(
        "backend-batch-interval",
        Member,
        Duration,
        "0s",
        "Longest time a backend transaction stays open before it is committed.",
    )
    .shows("")
    .no_effect("it tunes etcd's bbolt backend, which cairn does not use"),
    setting(
        "backend-batch-limit",
        Member,
        Uint("operations"),
        "0",
        "Most operations in a backend transaction before it is committed.",
    )
    .no_effect("it tunes etcd's bbolt backend, which cairn does not use"),
    setting(
        "max-txn-ops",
        Member,
        Uint("operations"),
        "128",
        "Most operations allowed in one transaction.",
    )
    .live(),
    setting(
        "max-request-bytes",
        Member,
        Uint("bytes"),
        "1572864",
        "Largest client request, in bytes, the server accepts.",
    )
    .live(),
    setting(
        "max-concurrent-streams",
        Member,
        Uint("streams"),
        "4294967295",
        "Most concurrent gRPC streams one client connection may open.",
    )
    .shows("math.MaxUint32"),
    setting(
        "grpc-keepalive-min-time",
        Member,
        Duration,
        "5s",
        "Shortest interval a client may use between keepalive pings.",
    ),
    setting(
        "grpc-keepalive-interval",
        Member,
        Duration,
        "2h",
        "How often the server pings an idle client connection (0 disables).",
    ),
    setting(
        "grpc-keepalive-timeout",
        Member,
        Duration,
        "20s",
        "How long to wait for a ping reply before closing the connection (0 disables).",
    ),
    // ------------------------------------------------------------ Clustering
    setting(
        "initial-advertise-peer-urls",
        Clustering,
        UrlList,
        "http://localhost:2380",
        "Peer URLs of this member that the other members should use.",
    ),
    setting(
        "initial-cluster",
        Clustering,
        InitialCluster,
        "",
        "Members of the cluster at bootstrap, as name=peer-url pairs.",
    )
    .shows("default=http://localhost:2380"),
    setting(
        "initial-cluster-state",
        Clustering,
        Choice(&["new", "existing"]),
        "new",
        "'new' to bootstrap a cluster, 'existing' to join a running one.",
    ),
    setting(
        "initial-cluster-token",
        Clustering,
        Text,
        "etcd-cluster",
        "Token that keeps separately bootstrapped clusters from mixing up.",
    ),
    setting(
        "advertise-client-urls",
        Clustering,
        UrlList,
        "http://localhost:2379",
        "Client URLs of this member published to clients.",
    ),
    setting("discovery", Clustering, Text, "", "Discovery service URL to bootstrap from."),
    setting(
        "discovery-fallback",
        Clustering,
        Choice(&["exit", "proxy"]),
        "proxy",
        "When the discovery cluster is full: 'exit' or 'proxy' (cairn has no proxy mode: it exits).",
    ),
    setting(
        "discovery-proxy",
        Clustering,
        Text,
        "",
        "HTTP proxy for talking to the discovery service.",
    ),
    setting(
        "discovery-srv",
        Clustering,
        Text,
        "",
        "DNS domain whose SRV records list the cluster.",
    ),
    setting(
        "discovery-srv-name",
        Clustering,
        Text,
        "",
        "Suffix added to the SRV name looked up for discovery.",
    ),
    setting(
        "strict-reconfig-check",
        Clustering,
        Bool,
        "true",
        "Refuse membership changes that would lose quorum.",
    )
    .live(),
    setting(
        "pre-vote",
        Clustering,
        Bool,
        "true",
        "Run raft's pre-vote phase before an election (cairn default: true; etcd 3.4: false).",
    ),
    setting(
        "auto-compaction-retention",
        Clustering,
        Retention,
        "0",
        "History to keep when compacting automatically: hours or a duration such as 30m in periodic mode, a revision count in revision mode (0 disables).",
    )
    .live(),
    setting(
        "auto-compaction-mode",
        Clustering,
        Choice(&["periodic", "revision"]),
        "periodic",
        "How --auto-compaction-retention is read: 'periodic' or 'revision'.",
    )
    .live(),
    setting(
        "enable-v2",
        Clustering,
        Bool,
        "true",
        "Serve the etcd v2 API (cairn default: true; etcd 3.4: false).",
    ),
    // -------------------------------------------------------------- Security
    setting("cert-file", Security, Text, "", "TLS certificate for client connections."),
    setting("key-file", Security, Text, "", "TLS key for client connections."),
    setting(
        "client-cert-auth",
        Security,
        Bool,
        "false",
        "Require client certificates on client connections.",
    ),
    setting(
        "client-crl-file",
        Security,
        Text,
        "",
        "Certificate revocation list (PEM or DER): client certificates with a listed serial number are refused.",
    ),
    setting(
        "client-cert-allowed-hostname",
        Security,
        Text,
        "",
        "Hostname or IP address a client certificate's SANs must match (with --client-cert-auth).",
    ),
    setting(
        "trusted-ca-file",
        Security,
        Text,
        "",
        "CA bundle that signs client certificates.",
    ),
    setting(
        "auto-tls",
        Security,
        Bool,
        "false",
        "Serve clients with a generated self-signed certificate.",
    ),
    setting("peer-cert-file", Security, Text, "", "TLS certificate for peer connections."),
    setting("peer-key-file", Security, Text, "", "TLS key for peer connections."),
    setting(
        "peer-client-cert-auth",
        Security,
        Bool,
        "false",
        "Require certificates on peer connections.",
    ),
    setting(
        "peer-trusted-ca-file",
        Security,
        Text,
        "",
        "CA bundle that signs peer certificates.",
    ),
    setting(
        "peer-cert-allowed-cn",
        Security,
        Text,
        "",
        "Common name a peer certificate must carry.",
    ),
    setting(
        "peer-cert-allowed-hostname",
        Security,
        Text,
        "",
        "Hostname or IP address a peer certificate's SANs must match (exclusive with --peer-cert-allowed-cn).",
    ),
    setting(
        "peer-auto-tls",
        Security,
        Bool,
        "false",
        "Use a generated self-signed certificate between peers.",
    ),
    setting(
        "peer-crl-file",
        Security,
        Text,
        "",
        "Certificate revocation list (PEM or DER): peer certificates with a listed serial number are refused.",
    ),
    setting(
        "cipher-suites",
        Security,
        List,
        "",
        "Comma-separated TLS cipher suites for clients and peers.",
    ),
    setting(
        "cors",
        Security,
        List,
        "*",
        "Comma-separated origins allowed for CORS ('*' or empty allows all).",
    )
    .live(),
    setting(
        "host-whitelist",
        Security,
        List,
        "*",
        "Comma-separated Host header values accepted on plain HTTP ('*' or empty allows all).",
    )
    .live(),
    // ------------------------------------------------------------------ Auth
    setting(
        "auth-token",
        Auth,
        Text,
        "simple",
        "Auth token type: 'simple', or 'jwt,...' with its options.",
    ),
    setting(
        "bcrypt-cost",
        Auth,
        Uint("bcrypt rounds"),
        "10",
        "bcrypt cost for hashing passwords (4 to 31).",
    ),
    setting(
        "auth-token-ttl",
        Auth,
        Uint("seconds"),
        "300",
        "Lifetime of a simple auth token, in seconds.",
    ),
    // ------------------------------------------------------------ Monitoring
    setting(
        "enable-pprof",
        Monitoring,
        Bool,
        "false",
        "Serve CPU profiles (pprof format) under /debug/pprof/ on the client URLs.",
    ),
    // Cairn's own (etcd has no console): the operator web console.
    setting(
        "enable-ui",
        Monitoring,
        Bool,
        "true",
        "Serve the operator web console under /ui/ on the client URLs.",
    )
    .live(),
    setting(
        "metrics",
        Monitoring,
        Choice(&["basic", "extensive"]),
        "basic",
        "Metrics detail: 'basic', or 'extensive' to add histograms.",
    ),
    setting(
        "listen-metrics-urls",
        Monitoring,
        UrlList,
        "",
        "Extra URLs that serve only /metrics and /health.",
    ),
    // --------------------------------------------------------------- Logging
    setting(
        "logger",
        Logging,
        Choice(&["capnslog", "zap"]),
        "capnslog",
        "Log format: 'capnslog' (etcd 3.4's text lines) or 'zap' (JSON lines).",
    ),
    setting(
        "log-outputs",
        Logging,
        List,
        "default",
        "Where logs go: 'default', 'stdout', 'stderr' or file paths (appended to; reopened on SIGUSR1).",
    ),
    setting(
        "log-level",
        Logging,
        Choice(&["debug", "info", "warn", "error", "panic", "fatal"]),
        "info",
        "Least severe level that is logged: debug, info, warn, error, panic or fatal.",
    )
    .live(),
    // ----------------------------------------------------------------- Proxy
    setting(
        "proxy",
        Proxy,
        Choice(&["off", "readonly", "on"]),
        "off",
        "v2 proxy mode: 'off', 'readonly' or 'on'.",
    )
    .not_yet(PROXY),
    setting(
        "proxy-failure-wait",
        Proxy,
        Uint("milliseconds"),
        "5000",
        "Milliseconds a failed endpoint is left alone.",
    )
    .not_yet(PROXY),
    setting(
        "proxy-refresh-interval",
        Proxy,
        Uint("milliseconds"),
        "30000",
        "Milliseconds between endpoint refreshes.",
    )
    .not_yet(PROXY),
    setting(
        "proxy-dial-timeout",
        Proxy,
        Uint("milliseconds"),
        "1000",
        "Milliseconds before a dial gives up.",
    )
    .not_yet(PROXY),
    setting(
        "proxy-write-timeout",
        Proxy,
        Uint("milliseconds"),
        "5000",
        "Milliseconds before a write gives up.",
    )
    .not_yet(PROXY),
    setting(
        "proxy-read-timeout",
        Proxy,
        Uint("milliseconds"),
        "0",
        "Milliseconds before a read gives up (0 never).",
    )
    .not_yet(PROXY),
    // ---------------------------------------------------------- Experimental
    setting(
        "experimental-initial-corrupt-check",
        Experimental,
        Bool,
        "false",
        "Compare data with the other members before serving.",
    ),
    setting(
        "experimental-corrupt-check-time",
        Experimental,
        Duration,
        "0s",
        "Interval between cluster-wide corruption checks.",
    ),
    setting(
        "experimental-enable-v2v3",
        Experimental,
        Text,
        "",
        "Serve the v2 API from the v3 store under this prefix.",
    ),
    setting(
        "experimental-backend-bbolt-freelist-type",
        Experimental,
        Choice(&["array", "map"]),
        "array",
        "Freelist type of the bbolt backend ('array' or 'map').",
    )
    .no_effect("it tunes etcd's bbolt backend, which cairn does not use"),
    setting(
        "experimental-enable-lease-checkpoint",
        Experimental,
        Bool,
        "false",
        "Have the leader persist lease TTLs so they survive leader changes.",
    ),
    setting(
        "experimental-compaction-batch-limit",
        Experimental,
        Uint("revisions"),
        "1000",
        "Most revisions removed in one compaction batch.",
    )
    .live(),
    setting(
        "experimental-peer-skip-client-san-verification",
        Experimental,
        Bool,
        "false",
        "Do not check the SAN of peer client certificates.",
    )
    .no_effect("cairn never checks peer client certificates' SANs against the connecting address"),
    setting(
        "experimental-watch-progress-notify-interval",
        Experimental,
        Duration,
        "10m",
        "Interval of progress notifications sent on idle watches.",
    ),
    setting(
        "experimental-warning-apply-duration",
        Experimental,
        Duration,
        "100ms",
        "Log a warning when applying a request takes longer than this.",
    )
    .live(),
    // ---------------------------------------------------------------- Unsafe
    setting(
        "force-new-cluster",
        Unsafe,
        Bool,
        "false",
        "Rewrite membership to a one-member cluster (recovery only).",
    ),
    // ------------------------------------------------------------ Deprecated
    setting(
        "debug",
        Deprecated,
        Bool,
        "false",
        "Log at debug level (prefer --log-level=debug).",
    )
    .live(),
    setting(
        "log-package-levels",
        Deprecated,
        Text,
        "",
        "Per-package log levels, e.g. 'etcdserver=DEBUG'.",
    )
    .no_effect("cairn has no per-package capnslog levels; use --log-level"),
    // ---------------------------------------------------- Top-level / hidden
    // A list: `--config-file` may be repeated and `ETCD_CONFIG_FILE` may
    // name several files separated by commas. Hidden because the usage text
    // at the top of `--help` explains it.
    setting(
        "config-file",
        Member,
        List,
        "",
        "Config files to read (etcd YAML, etcd.conf env-file or cairn TOML), lowest precedence first.",
    )
    .hidden(),
    // etcd 3.4 accepts these but leaves them out of its help text.
    setting(
        "enable-grpc-gateway",
        Clustering,
        Bool,
        "true",
        "Serve the JSON gateway to the v3 API under /v3/.",
    )
    .hidden(),
    setting(
        "log-output",
        Logging,
        List,
        "",
        "Deprecated spelling of --log-outputs.",
    )
    .hidden(),
    setting(
        "unsafe-no-fsync",
        Unsafe,
        Bool,
        "false",
        "Skip fsync (unsafe; testing only).",
    )
    .no_effect("cairn always syncs its storage engine; ignoring the flag only keeps data safer")
    .hidden(),
    setting(
        "experimental-enable-lease-checkpoint-persist",
        Experimental,
        Bool,
        "false",
        "Persist lease checkpoints across restarts (cairn always does when checkpoints are on).",
    )
    .hidden(),
    // etcd 2 flags that etcd 3.4 still swallows with a warning.
    setting("cluster-active-size", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("cluster-remove-delay", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("cluster-sync-interval", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("config", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("force", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("max-result-buffer", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("max-retry-attempts", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("peer-heartbeat-interval", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("peer-election-timeout", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("retry-interval", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("snapshot", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("v", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
    setting("vv", Deprecated, Ignored, "", "").no_effect(LEGACY).hidden(),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for s in SETTINGS {
            assert!(seen.insert(s.name), "duplicate setting {}", s.name);
            assert!(
                s.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "bad name {}",
                s.name
            );
            assert!(s.hidden || !s.help.is_empty(), "{} has no help", s.name);
        }
    }

    #[test]
    fn env_var_names_follow_etcd_rule() {
        let s = lookup("initial-cluster-token").unwrap();
        assert_eq!(s.env_var(), "ETCD_INITIAL_CLUSTER_TOKEN");
        assert_eq!(
            lookup_env("ETCD_INITIAL_CLUSTER_TOKEN").unwrap().name,
            s.name
        );
        assert!(lookup_env("ETCD_initial_cluster_token").is_none());
        assert!(lookup_env("ETCDCTL_ENDPOINTS").is_none());
        for s in SETTINGS {
            assert_eq!(lookup_env(&s.env_var()).unwrap().name, s.name);
        }
    }

    /// Every flag printed by `etcd --help` (3.4.23) must be in the table.
    #[test]
    fn covers_every_flag_in_etcd_help() {
        const ETCD_HELP_FLAGS: &[&str] = &[
            "name",
            "data-dir",
            "wal-dir",
            "snapshot-count",
            "heartbeat-interval",
            "election-timeout",
            "initial-election-tick-advance",
            "listen-peer-urls",
            "listen-client-urls",
            "max-snapshots",
            "max-wals",
            "quota-backend-bytes",
            "backend-batch-interval",
            "backend-batch-limit",
            "max-txn-ops",
            "max-request-bytes",
            "max-concurrent-streams",
            "grpc-keepalive-min-time",
            "grpc-keepalive-interval",
            "grpc-keepalive-timeout",
            "initial-advertise-peer-urls",
            "initial-cluster",
            "initial-cluster-state",
            "initial-cluster-token",
            "advertise-client-urls",
            "discovery",
            "discovery-fallback",
            "discovery-proxy",
            "discovery-srv",
            "discovery-srv-name",
            "strict-reconfig-check",
            "pre-vote",
            "auto-compaction-retention",
            "auto-compaction-mode",
            "enable-v2",
            "cert-file",
            "key-file",
            "client-cert-auth",
            "client-crl-file",
            "client-cert-allowed-hostname",
            "trusted-ca-file",
            "auto-tls",
            "peer-cert-file",
            "peer-key-file",
            "peer-client-cert-auth",
            "peer-trusted-ca-file",
            "peer-cert-allowed-cn",
            "peer-cert-allowed-hostname",
            "peer-auto-tls",
            "peer-crl-file",
            "cipher-suites",
            "cors",
            "host-whitelist",
            "auth-token",
            "bcrypt-cost",
            "auth-token-ttl",
            "enable-pprof",
            "metrics",
            "listen-metrics-urls",
            "logger",
            "log-outputs",
            "log-level",
            "proxy",
            "proxy-failure-wait",
            "proxy-refresh-interval",
            "proxy-dial-timeout",
            "proxy-write-timeout",
            "proxy-read-timeout",
            "experimental-initial-corrupt-check",
            "experimental-corrupt-check-time",
            "experimental-enable-v2v3",
            "experimental-backend-bbolt-freelist-type",
            "experimental-enable-lease-checkpoint",
            "experimental-compaction-batch-limit",
            "experimental-peer-skip-client-san-verification",
            "experimental-watch-progress-notify-interval",
            "experimental-warning-apply-duration",
            "force-new-cluster",
            "debug",
            "log-package-levels",
            "config-file",
        ];
        for f in ETCD_HELP_FLAGS {
            let s = lookup(f).unwrap_or_else(|| panic!("--{f} missing from registry"));
            assert!(!s.hidden || *f == "config-file", "--{f} hidden from help");
        }
    }

    #[test]
    fn live_settings_match_the_plan() {
        for name in [
            "heartbeat-interval",
            "election-timeout",
            "max-request-bytes",
            "log-level",
            "auto-compaction-retention",
            "auto-compaction-mode",
            "max-snapshots",
            "experimental-compaction-batch-limit",
            "cors",
            "host-whitelist",
            "enable-ui",
        ] {
            assert_eq!(lookup(name).unwrap().reload, Reload::Live, "--{name}");
        }
        // The auth settings are read once, when the auth state is built.
        for name in [
            "name",
            "data-dir",
            "listen-client-urls",
            "initial-cluster",
            "bcrypt-cost",
            "auth-token-ttl",
            "log-outputs",
        ] {
            assert_eq!(lookup(name).unwrap().reload, Reload::Restart, "--{name}");
        }
    }

    #[test]
    fn statuses_match_the_plan() {
        let supported = [
            "name",
            "data-dir",
            "snapshot-count",
            "heartbeat-interval",
            "election-timeout",
            "initial-election-tick-advance",
            "listen-peer-urls",
            "listen-client-urls",
            "max-snapshots",
            "quota-backend-bytes",
            "max-txn-ops",
            "max-request-bytes",
            "max-concurrent-streams",
            "grpc-keepalive-min-time",
            "grpc-keepalive-interval",
            "grpc-keepalive-timeout",
            "initial-advertise-peer-urls",
            "initial-cluster",
            "initial-cluster-state",
            "initial-cluster-token",
            "advertise-client-urls",
            "discovery",
            "discovery-fallback",
            "discovery-proxy",
            "discovery-srv",
            "discovery-srv-name",
            "strict-reconfig-check",
            "pre-vote",
            "enable-v2",
            "cors",
            "host-whitelist",
            "log-outputs",
            "log-level",
            "logger",
            "enable-pprof",
            "enable-ui",
            "wal-dir",
            "debug",
            "experimental-compaction-batch-limit",
            "experimental-warning-apply-duration",
            "experimental-watch-progress-notify-interval",
            "auth-token",
            "bcrypt-cost",
            "auth-token-ttl",
            "log-output",
            "auto-compaction-retention",
            "auto-compaction-mode",
            "config-file",
            "listen-metrics-urls",
            "metrics",
            "cert-file",
            "key-file",
            "client-cert-auth",
            "client-crl-file",
            "client-cert-allowed-hostname",
            "trusted-ca-file",
            "auto-tls",
            "peer-cert-file",
            "peer-key-file",
            "peer-client-cert-auth",
            "peer-trusted-ca-file",
            "peer-cert-allowed-cn",
            "peer-cert-allowed-hostname",
            "peer-auto-tls",
            "peer-crl-file",
            "cipher-suites",
            "experimental-initial-corrupt-check",
            "experimental-corrupt-check-time",
            "force-new-cluster",
            "experimental-enable-lease-checkpoint",
            "experimental-enable-v2v3",
            "enable-grpc-gateway",
            "experimental-enable-lease-checkpoint-persist",
        ];
        for s in SETTINGS {
            let want_supported = supported.contains(&s.name);
            assert_eq!(
                s.status == Status::Supported,
                want_supported,
                "unexpected status for --{}: {:?}",
                s.name,
                s.status
            );
        }
        for f in [
            "max-wals",
            "backend-batch-interval",
            "backend-batch-limit",
            "experimental-backend-bbolt-freelist-type",
            "log-package-levels",
        ] {
            assert!(
                matches!(lookup(f).unwrap().status, Status::NoEffect { .. }),
                "{f}"
            );
        }
    }
}
