//! Parsers for the value syntaxes etcd inherits from Go: `strconv.ParseBool`,
//! `strconv.ParseUint(s, 0, 64)` (what Go's `flag` package uses for integer
//! flags), `time.ParseDuration`, and etcd's URL rules.
//!
//! They are written from the documented grammars so that a value an operator
//! already uses with etcd means the same thing to Cairn. Errors are short
//! phrases; the caller adds the flag name and where the value came from.

use std::time::Duration;

use url::{Host, Url};

/// Go's `strconv.ParseBool`: exactly these twelve spellings.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why an integer did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UintError {
    Syntax,
    Range,
}

/// Go's `strconv.ParseUint(s, 0, 64)`: a `0x`/`0o`/`0b` prefix selects the
/// base, a bare leading `0` means octal (so `010` is 8, as in etcd), and `_`
/// may separate digits. No sign, no surrounding spaces.
pub fn parse_go_uint(s: &str) -> Result<u64, UintError> {
    if s.is_empty() || !underscores_ok(s) {
        return Err(UintError::Syntax);
    }
    let bytes = s.as_bytes();
    let (base, digits): (u32, &str) = if bytes[0] == b'0' && s.len() >= 3 {
        match bytes[1].to_ascii_lowercase() {
            b'x' => (16, &s[2..]),
            b'o' => (8, &s[2..]),
            b'b' => (2, &s[2..]),
            _ => (8, &s[1..]),
        }
    } else if bytes[0] == b'0' {
        (8, &s[1..])
    } else {
        (10, s)
    };
    let mut value: u64 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(base).ok_or(UintError::Syntax)?;
        value = value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(UintError::Range)?;
    }
    Ok(value)
}

/// Go only allows `_` between digits (or right after a base prefix).
fn underscores_ok(s: &str) -> bool {
    if !s.contains('_') {
        return true;
    }
    let b = s.as_bytes();
    // `prev` is what came before: a digit/prefix ('0'), an underscore ('_'),
    // or the start ('^').
    let mut prev = b'^';
    let mut i = 0;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'x' | b'o' | b'b') {
        prev = b'0';
        i = 2;
    }
    for &c in &b[i..] {
        if c == b'_' {
            if prev != b'0' {
                return false;
            }
            prev = b'_';
        } else {
            prev = b'0';
        }
    }
    prev != b'_'
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not of the form `<number><unit>...`.
    Syntax,
    /// A number without a unit, e.g. `5` (only `0` may omit the unit).
    MissingUnit,
    /// A unit Go does not know, e.g. `5d`.
    UnknownUnit(String),
    /// More than Go's `time.Duration` can hold (about 292 years).
    Overflow,
    /// A negative duration, which no Cairn setting accepts.
    Negative,
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Syntax => f.write_str("not a duration"),
            DurationError::MissingUnit => f.write_str("missing unit"),
            DurationError::UnknownUnit(u) => {
                write!(f, "unknown unit {u:?}; use ns, us, ms, s, m or h")
            }
            DurationError::Overflow => f.write_str("too large"),
            DurationError::Negative => f.write_str("negative"),
        }
    }
}

/// Nanoseconds per unit, as in Go's `time` package (both micro signs).
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers, each with an
/// optional fraction and a unit (`1h30m`, `1.5h`, `300us`). A lone `0` needs
/// no unit. The total may not exceed `i64::MAX` nanoseconds, Go's limit.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let (negative, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DurationError::Syntax);
    }
    const LIMIT: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !s.is_empty() {
        // Whole part.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &s[..int_len];
        s = &s[int_len..];
        // Optional fraction.
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &rest[..n];
            s = &rest[n..];
        } else if int_len == 0 {
            return Err(DurationError::Syntax);
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::Syntax);
        }
        // Unit: everything up to the next digit or dot. Both are ASCII, so
        // the cut is on a char boundary even after a multi-byte `µ`.
        let unit_len = s
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit);
        }
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let per_unit =
            unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit(unit.to_string()))?;

        let whole = decimal(int_digits).ok_or(DurationError::Overflow)?;
        let mut part = whole.checked_mul(per_unit).ok_or(DurationError::Overflow)?;
        if !frac_digits.is_empty() {
            // Digits beyond what can matter at nanosecond precision are
            // dropped, as Go does once its accumulator would overflow.
            let kept = &frac_digits[..frac_digits.len().min(20)];
            let numerator = decimal(kept).ok_or(DurationError::Overflow)?;
            let scale = 10u128.pow(u32::try_from(kept.len()).unwrap_or(20));
            part += numerator * per_unit / scale;
        }
        total = total.checked_add(part).ok_or(DurationError::Overflow)?;
        if total > LIMIT {
            return Err(DurationError::Overflow);
        }
    }
    if negative && total > 0 {
        return Err(DurationError::Negative);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    // The remainder is below 10^9, so it always fits.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

fn decimal(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

/// Prints a duration the way Go's `Duration.String` does for the common
/// cases (`5s`, `100ms`, `2h0m0s`), for messages and provenance.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_secs = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let hours = total_secs / 3600;
    let minutes = (total_secs % 3600) / 60;
    let secs = total_secs % 60;
    let secs_text = trim_fraction(secs * 1_000_000_000 + sub, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{secs_text}s")
    } else if minutes > 0 {
        format!("{minutes}m{secs_text}s")
    } else {
        format!("{secs_text}s")
    }
}

/// `value / unit` with the fraction written out and trailing zeros dropped.
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Splits a comma-separated list, trimming whitespace around items and
/// dropping empty ones (so `a, b,` is `[a, b]`).
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Why a URL was rejected. The display text completes the sentence
/// "expected a comma-separated list of URLs such as http://10.0.0.1:2379".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    NotAUrl,
    Scheme(String),
    UserInfo,
    NoHost,
    NoPort,
    Path,
    /// A `unix://` URL with a path: etcd names the socket by `host:port`.
    UnixPath,
}

impl UrlError {
    pub fn describe(&self, item: &str) -> String {
        match self {
            UrlError::NotAUrl => format!("{item:?} is not a URL"),
            UrlError::Scheme(s) => {
                format!("{item:?} has scheme {s:?}; only http, https, unix and unixs are allowed")
            }
            UrlError::UserInfo => format!("{item:?} must not contain user info"),
            UrlError::NoHost => format!("{item:?} has no host"),
            UrlError::NoPort => format!("{item:?} has no port"),
            UrlError::Path => format!("{item:?} must not contain a path, query or fragment"),
            UrlError::UnixPath => format!(
                "{item:?} must not contain a path; as in etcd, a unix URL names its socket file by host:port in the working directory, such as unix://localhost:2379"
            ),
        }
    }
}

/// Parses one URL of a URL-list setting: `http`, `https`, `unix` or
/// `unixs`, a host, an explicit port, and nothing after the port (etcd
/// requires `host:port` of unix URLs too: see [`unix_socket_path`]). The url crate normalises
/// away things etcd looks at (it hides a default port such as `:80` and
/// always has a `/` path), so the port and path rules are checked on the
/// text itself.
pub fn parse_url(item: &str) -> Result<Url, UrlError> {
    let url = Url::parse(item).map_err(|_| UrlError::NotAUrl)?;
    let scheme = url.scheme();
    if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
        return Err(UrlError::Scheme(scheme.to_string()));
    }
    // `Url::parse` also accepts `http:host:1` and `http:/host:1`; etcd's
    // Go parser would not see a host there, so insist on `scheme://`.
    let rest = item
        .get(scheme.len()..)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or(UrlError::NotAUrl)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !tail.is_empty() {
        if scheme.starts_with("unix") && tail.starts_with('/') {
            return Err(UrlError::UnixPath);
        }
        return Err(UrlError::Path);
    }
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    match url.host() {
        None => return Err(UrlError::NoHost),
        Some(Host::Domain("")) => return Err(UrlError::NoHost),
        Some(_) => {}
    }
    let port_text = if let Some(after_bracket) = authority.rfind(']') {
        authority[after_bracket + 1..].strip_prefix(':')
    } else {
        authority.rsplit_once(':').map(|(_, p)| p)
    };
    match port_text {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Ok(url),
        _ => Err(UrlError::NoPort),
    }
}

/// Whether a listener can bind this URL's host: an IP address or
/// `localhost`, as etcd requires (it will not resolve names to bind). A
/// unix URL names a socket file, so any host will do.
pub fn is_bindable(url: &Url) -> bool {
    if is_unix(url) {
        return true;
    }
    match url.host() {
        Some(Host::Ipv4(_)) | Some(Host::Ipv6(_)) => true,
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether the URL names a unix socket (`unix://` or `unixs://`).
pub fn is_unix(url: &Url) -> bool {
    matches!(url.scheme(), "unix" | "unixs")
}

/// Whether connections to or on this URL use TLS (`https://`, `unixs://`).
pub fn is_secure(url: &Url) -> bool {
    matches!(url.scheme(), "https" | "unixs")
}

/// The socket file a `unix://` or `unixs://` URL names, as etcd 3.4 reads
/// it: the URL's `host:port` text taken as a path, relative to the working
/// directory (`unix://localhost:2379` is the file `localhost:2379`). etcd
/// insists on `host:port` and no path, so a URL cannot name a file
/// elsewhere; `unix:///run/etcd.sock` is refused as it is by etcd.
pub fn unix_socket_path(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// `scheme://host:port`, the way etcd prints member URLs. `Url`'s own
/// `Display` adds a trailing `/` (and drops a default port), which etcd
/// clients would see as a different URL.
pub fn format_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{}:{}", url.scheme(), host, port),
        None => format!("{}://{}", url.scheme(), host),
    }
}

/// Optimal-string-alignment edit distance (a swap of two neighbours counts
/// as one edit, the typo operators make most).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(prev2[j - 2] + 1);
            }
            cur[j] = best;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `input`, if it is close enough to be a likely
/// typo: at most a third of the input's length in edits (at least 1, at
/// most 4).
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).clamp(1, 4);
    candidates
        .into_iter()
        .map(|c| (edit_distance(input, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_bool_spellings() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "on", "tRUE", " true", "2"] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_uint_syntax() {
        assert_eq!(parse_go_uint("0"), Ok(0));
        assert_eq!(parse_go_uint("100"), Ok(100));
        assert_eq!(parse_go_uint("1_000"), Ok(1000));
        assert_eq!(parse_go_uint("0x64"), Ok(100));
        assert_eq!(parse_go_uint("0X_64"), Ok(100));
        assert_eq!(parse_go_uint("0o17"), Ok(15));
        assert_eq!(parse_go_uint("0b101"), Ok(5));
        assert_eq!(parse_go_uint("010"), Ok(8));
        assert_eq!(parse_go_uint("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_go_uint("18446744073709551616"), Err(UintError::Range));
        for bad in [
            "", "abc", "-1", "+1", " 1", "1 ", "1.5", "08", "_1", "1_", "1__0", "0x",
        ] {
            assert_eq!(parse_go_uint(bad), Err(UintError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_go_duration("100ms"), Ok(ms(100)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300us"), Ok(Duration::from_micros(300)));
        assert_eq!(parse_go_duration("300µs"), Ok(Duration::from_micros(300)));
        assert_eq!(
            parse_go_duration("300\u{3bc}s"),
            Ok(Duration::from_micros(300))
        );
        assert_eq!(parse_go_duration("10ns"), Ok(Duration::from_nanos(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("+5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("1m0.25s"), Ok(ms(60_250)));
        assert_eq!(
            parse_go_duration("600000000000ns"),
            Ok(Duration::from_secs(600))
        );
        assert_eq!(
            parse_go_duration("2562047h47m16.854775807s"),
            Ok(Duration::new(9_223_372_036, 854_775_807))
        );
    }

    #[test]
    fn go_duration_errors() {
        assert_eq!(parse_go_duration("5"), Err(DurationError::MissingUnit));
        assert_eq!(parse_go_duration("1h30"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_go_duration("5d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert_eq!(
            parse_go_duration("5 s"),
            Err(DurationError::UnknownUnit(" s".into()))
        );
        assert_eq!(parse_go_duration("-5s"), Err(DurationError::Negative));
        assert_eq!(parse_go_duration("2562048h"), Err(DurationError::Overflow));
        assert_eq!(
            parse_go_duration("99999999999999999999999999999999999999999h"),
            Err(DurationError::Overflow)
        );
        for bad in ["", "s", ".s", "-", "abc", "..5s", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            DurationError::UnknownUnit("d".into()).to_string(),
            "unknown unit \"d\"; use ns, us, ms, s, m or h"
        );
    }

    #[test]
    fn duration_formatting() {
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(ms(100)), "100ms");
        assert_eq!(format_go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_go_duration(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(format_go_duration(ms(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_micros(300)), "300µs");
    }

    #[test]
    fn urls() {
        let u = parse_url("http://10.0.0.1:2380").unwrap();
        assert_eq!(format_url(&u), "http://10.0.0.1:2380");
        assert!(is_bindable(&u));
        let u = parse_url("http://[::1]:2380").unwrap();
        assert_eq!(format_url(&u), "http://[::1]:2380");
        assert!(is_bindable(&u));
        let u = parse_url("http://LOCALHOST:80").unwrap();
        assert_eq!(format_url(&u), "http://localhost:80");
        assert!(is_bindable(&u));
        let u = parse_url("https://node1.example.com:2379").unwrap();
        assert!(!is_bindable(&u));

        assert_eq!(
            parse_url("localhost:2379"),
            Err(UrlError::Scheme("localhost".into()))
        );
        let u = parse_url("unix://localhost:12379").unwrap();
        assert!(is_unix(&u) && !is_secure(&u) && is_bindable(&u));
        assert_eq!(unix_socket_path(&u), "localhost:12379");
        assert_eq!(format_url(&u), "unix://localhost:12379");
        let u = parse_url("unixs://node-1.sock:2380").unwrap();
        assert!(is_unix(&u) && is_secure(&u) && is_bindable(&u));
        assert_eq!(unix_socket_path(&u), "node-1.sock:2380");
        // As etcd: the socket is named by host:port; no path, no bare host.
        assert_eq!(parse_url("unix:///tmp/etcd.sock"), Err(UrlError::UnixPath));
        assert_eq!(parse_url("unix://sock"), Err(UrlError::NoPort));
        assert_eq!(parse_url("unix://sock:1/x"), Err(UrlError::UnixPath));
        assert_eq!(
            parse_url("tcp://sock:1"),
            Err(UrlError::Scheme("tcp".into()))
        );
        assert_eq!(parse_url("http:host:1"), Err(UrlError::NotAUrl));
        assert_eq!(parse_url("http://host"), Err(UrlError::NoPort));
        assert_eq!(parse_url("http://host:"), Err(UrlError::NoPort));
        assert_eq!(parse_url("http://[::1]"), Err(UrlError::NoPort));
        assert_eq!(parse_url("http://host:1/"), Err(UrlError::Path));
        assert_eq!(parse_url("http://host:1/v2"), Err(UrlError::Path));
        assert_eq!(parse_url("http://host:1?x=1"), Err(UrlError::Path));
        assert_eq!(parse_url("http://u:p@host:1"), Err(UrlError::UserInfo));
        assert_eq!(parse_url("http://:1"), Err(UrlError::NotAUrl));
        assert_eq!(parse_url("not a url"), Err(UrlError::NotAUrl));
    }

    #[test]
    fn lists_are_trimmed() {
        assert_eq!(split_list(" a , b,,c ,"), vec!["a", "b", "c"]);
        assert!(split_list("").is_empty());
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("pre_vote", "pre-vote"), 1);
        assert_eq!(closest("nmae", ["name", "data-dir"]), Some("name"));
        assert_eq!(closest("x", ["name"]), None);
        assert_eq!(closest("completely-different", ["name"]), None);
    }
}
