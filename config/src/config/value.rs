//! Pass 1 and 2 of a build: each setting's raw text parsed by its kind, then
//! checked on its own (range, list items, URL shapes, support status).

use super::*;

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
pub(super) fn parse_raw(s: &Setting, raw: &str) -> Result<Parsed, String> {
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

pub(super) const RETENTION_EXPECTED: &str = "a number of hours or a duration such as 30m in periodic mode, or a number of revisions in revision mode (0 disables)";

/// A plain decimal number, as Go's `strconv.Atoi` reads etcd's retention
/// (no base prefixes: `010` is ten, not eight).
pub(super) fn decimal(raw: &str) -> Option<u64> {
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
pub(super) enum RangeError {
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
pub(super) fn check_range(s: &Setting, value: &Parsed, source: &Source) -> Result<(), RangeError> {
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
pub(super) const U32_SETTINGS: &[&str] = &[
    "max-snapshots",
    "max-txn-ops",
    "max-request-bytes",
    "max-concurrent-streams",
    "bcrypt-cost",
    "experimental-compaction-batch-limit",
];

/// The named outputs of `--log-outputs`; any other item is a file path
/// (appended to), as in etcd 3.4 with `--logger=zap`.
pub(super) const LOG_OUTPUTS: [&str; 4] = ["default", "stderr", "stdout", "a file path"];

/// How a URL-list setting is checked: must it bind (etcd's listener rule:
/// the host is an IP address or `localhost`), may it be empty, and an
/// example for messages.
#[derive(Clone, Copy)]
pub(super) struct UrlRule {
    bind: bool,
    required: bool,
    example: &'static str,
}

pub(super) const PEER_EXAMPLE: &str = "http://10.0.0.1:2380";
pub(super) const CLIENT_EXAMPLE: &str = "http://10.0.0.1:2379";

pub(super) fn url_rule(name: &str) -> UrlRule {
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
pub(super) fn parse_url_list(items: &[String], rule: UrlRule) -> Result<Vec<Url>, String> {
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
pub(super) fn unknown_suite(name: &str) -> String {
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
pub(super) fn one_of(options: &[&str]) -> String {
    match options {
        [] => "nothing".to_string(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Whether a (parsed) value equals the setting's default. Ignored legacy
/// flags have no meaningful default: setting them at all is worth a warning.
pub(super) fn is_default(s: &Setting, value: &Parsed) -> bool {
    s.kind != Kind::Ignored && parse_raw(s, s.default).as_ref() == Ok(value)
}
