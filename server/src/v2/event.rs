//! The v2 wire types: events and nodes in etcd's JSON shape, plus the Go
//! formatting conventions they carry (RFC 3339 timestamps with trimmed
//! nanoseconds, Go duration strings, HTML-safe JSON escaping).

use serde::Serialize;
use serde::ser::SerializeMap;

/// What happened to a node (`v2store` action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum V2Action {
    Get,
    Set,
    Create,
    Update,
    Delete,
    CompareAndSwap,
    CompareAndDelete,
    Expire,
}

impl V2Action {
    pub fn as_str(self) -> &'static str {
        match self {
            V2Action::Get => "get",
            V2Action::Set => "set",
            V2Action::Create => "create",
            V2Action::Update => "update",
            V2Action::Delete => "delete",
            V2Action::CompareAndSwap => "compareAndSwap",
            V2Action::CompareAndDelete => "compareAndDelete",
            V2Action::Expire => "expire",
        }
    }
}

/// A node as clients see it. `ttl` is frozen when the node is rendered
/// (from the time carried by the request, or the reader's clock for local
/// reads), exactly as etcd computes it when it builds the event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct V2Node {
    /// The key without the store prefix; empty for the root, which etcd
    /// shows without a key.
    pub key: String,
    /// `None` for directories (and for deleted nodes); `Some("")` is shown.
    pub value: Option<String>,
    pub dir: bool,
    /// Absolute expiry, unix nanoseconds.
    pub expiration: Option<i64>,
    pub ttl: i64,
    pub nodes: Vec<V2Node>,
    pub modified_index: u64,
    pub created_index: u64,
}

impl Serialize for V2Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Every field is `omitempty` in etcd's NodeExtern, in this order.
        let mut m = s.serialize_map(None)?;
        if !self.key.is_empty() {
            m.serialize_entry("key", &self.key)?;
        }
        if let Some(v) = &self.value {
            m.serialize_entry("value", v)?;
        }
        if self.dir {
            m.serialize_entry("dir", &true)?;
        }
        if let Some(e) = self.expiration {
            m.serialize_entry("expiration", &format_rfc3339_nanos(e))?;
        }
        if self.ttl != 0 {
            m.serialize_entry("ttl", &self.ttl)?;
        }
        if !self.nodes.is_empty() {
            m.serialize_entry("nodes", &self.nodes)?;
        }
        if self.modified_index != 0 {
            m.serialize_entry("modifiedIndex", &self.modified_index)?;
        }
        if self.created_index != 0 {
            m.serialize_entry("createdIndex", &self.created_index)?;
        }
        m.end()
    }
}

/// One v2 event: the result of a request, or a change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Event {
    pub action: V2Action,
    pub node: Option<V2Node>,
    pub prev_node: Option<V2Node>,
    /// The store index to report in `X-Etcd-Index`: the event's own index
    /// for writes, the current index for reads.
    pub etcd_index: u64,
    /// A TTL refresh: recorded in the history (it used an index) but never
    /// sent to watchers. etcd never shows the flag over HTTP (its event
    /// copy drops it), so neither do we.
    pub refresh: bool,
}

impl V2Event {
    /// The history's record of a write to etcd's internal parts of the v2
    /// store (membership, v2 auth): it holds its index and matches no
    /// watch (no key).
    pub fn internal(index: u64) -> V2Event {
        V2Event {
            action: V2Action::Set,
            node: Some(V2Node {
                modified_index: index,
                created_index: index,
                ..Default::default()
            }),
            prev_node: None,
            etcd_index: index,
            refresh: false,
        }
    }

    /// The index the event happened at (etcd: the node's modifiedIndex).
    pub fn index(&self) -> u64 {
        self.node.as_ref().map_or(0, |n| n.modified_index)
    }

    pub fn key(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.key.as_str())
    }

    /// 201 rather than 200: a create, or a set that replaced nothing.
    pub fn is_created(&self) -> bool {
        match self.action {
            V2Action::Create => true,
            V2Action::Set => self.prev_node.is_none(),
            _ => false,
        }
    }

    /// The response body: JSON and a newline (Go's `json.Encoder`). With
    /// `no_value_on_success`, writes keep only the action.
    pub fn to_body(&self, no_value_on_success: bool) -> String {
        let strip = no_value_on_success
            && matches!(
                self.action,
                V2Action::Set | V2Action::CompareAndSwap | V2Action::Create | V2Action::Update
            );
        let mut s = if strip {
            to_go_json(&EventRef {
                action: self.action,
                node: None,
                prev_node: None,
            })
        } else {
            to_go_json(self)
        };
        s.push('\n');
        s
    }
}

struct EventRef<'a> {
    action: V2Action,
    node: Option<&'a V2Node>,
    prev_node: Option<&'a V2Node>,
}

impl Serialize for EventRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("action", self.action.as_str())?;
        if let Some(n) = self.node {
            m.serialize_entry("node", n)?;
        }
        if let Some(n) = self.prev_node {
            m.serialize_entry("prevNode", n)?;
        }
        m.end()
    }
}

impl Serialize for V2Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EventRef {
            action: self.action,
            node: self.node.as_ref(),
            prev_node: self.prev_node.as_ref(),
        }
        .serialize(s)
    }
}

/// JSON the way Go's encoder writes it: `<`, `>`, `&`, U+2028 and U+2029
/// escaped as `\uXXXX`. These characters can only occur inside strings, so
/// rewriting the serialized text is safe.
pub fn to_go_json<T: Serialize + ?Sized>(v: &T) -> String {
    // Serializing our own types cannot fail (string keys, no I/O).
    let raw = serde_json::to_string(v).unwrap_or_default();
    if !raw.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds left until `expiration`, rounded up (etcd: 1..n, never n+1);
/// zero or negative once expired but not yet removed.
pub fn ttl_at(expiration: i64, now: i64) -> i64 {
    // Go saturates time differences at the Duration range.
    let d = (expiration as i128 - now as i128).clamp(i64::MIN as i128, i64::MAX as i128);
    let mut ttl = d / 1_000_000_000;
    if d % 1_000_000_000 > 0 {
        ttl += 1;
    }
    ttl as i64
}

/// Go's `time.RFC3339Nano` in UTC: fraction without trailing zeros, no
/// fraction at all on a whole second (`2013-12-04T20:01:21.874888581Z`).
pub fn format_rfc3339_nanos(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `time.Duration.String()`: `12m3.700107571s`, `1h0m0s`, `1.5ms`.
/// etcd uses it for `leaderInfo.uptime` in `/v2/stats/self`.
pub fn format_go_duration(d: std::time::Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_string();
    }
    fn frac(v: u128, unit: u128, digits: usize) -> String {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let f = format!("{rest:0digits$}");
            format!("{whole}.{}", f.trim_end_matches('0'))
        }
    }
    if total < 1_000 {
        return format!("{total}ns");
    }
    if total < 1_000_000 {
        return format!("{}µs", frac(total, 1_000, 3));
    }
    if total < 1_000_000_000 {
        return format!("{}ms", frac(total, 1_000_000, 6));
    }
    let secs = total / 1_000_000_000;
    let sub = total % 1_000_000_000;
    let s = frac((secs % 60) * 1_000_000_000 + sub, 1_000_000_000, 9);
    let mins = secs / 60;
    if mins == 0 {
        return format!("{s}s");
    }
    let hours = mins / 60;
    if hours == 0 {
        return format!("{}m{s}s", mins % 60);
    }
    format!("{hours}h{}m{s}s", mins % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_go() {
        assert_eq!(format_rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        // 2013-12-04T20:01:21.874888581Z
        assert_eq!(
            format_rfc3339_nanos(1_386_187_281_874_888_581),
            "2013-12-04T20:01:21.874888581Z"
        );
        assert_eq!(
            format_rfc3339_nanos(1_386_187_281_500_000_000),
            "2013-12-04T20:01:21.5Z"
        );
        assert_eq!(format_rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            format_rfc3339_nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
        // The extremes of i64 nanoseconds stay printable.
        assert_eq!(
            format_rfc3339_nanos(i64::MIN),
            "1677-09-21T00:12:43.145224192Z"
        );
        assert_eq!(
            format_rfc3339_nanos(i64::MAX),
            "2262-04-11T23:47:16.854775807Z"
        );
    }

    #[test]
    fn ttl_rounds_up() {
        let s = 1_000_000_000;
        assert_eq!(ttl_at(100 * s, 0), 100);
        assert_eq!(ttl_at(100 * s, 1), 100);
        assert_eq!(ttl_at(100 * s, s - 1), 100);
        assert_eq!(ttl_at(100 * s, s), 99);
        assert_eq!(ttl_at(0, 0), 0);
        assert_eq!(ttl_at(0, s / 2), 0);
        assert_eq!(ttl_at(0, 3 * s), -3);
        assert_eq!(ttl_at(i64::MIN, i64::MAX), -9_223_372_036);
    }

    #[test]
    fn go_durations() {
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(Duration::from_nanos(12)), "12ns");
        assert_eq!(format_go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(format_go_duration(Duration::from_micros(1_500)), "1.5ms");
        assert_eq!(format_go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(
            format_go_duration(Duration::from_nanos(723_700_107_571)),
            "12m3.700107571s"
        );
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(3661)), "1h1m1s");
    }

    #[test]
    fn event_json_shapes() {
        let ev = V2Event {
            action: V2Action::Set,
            node: Some(V2Node {
                key: "/message".into(),
                value: Some("Hello <world> & co".into()),
                modified_index: 2,
                created_index: 2,
                ..Default::default()
            }),
            prev_node: None,
            etcd_index: 2,
            refresh: true,
        };
        assert!(ev.is_created());
        assert_eq!(
            ev.to_body(false),
            "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"Hello \\u003cworld\\u003e \\u0026 co\",\"modifiedIndex\":2,\"createdIndex\":2}}\n"
        );
        assert_eq!(ev.to_body(true), "{\"action\":\"set\"}\n");
        let root = V2Event {
            action: V2Action::Get,
            node: Some(V2Node {
                dir: true,
                ..Default::default()
            }),
            prev_node: None,
            etcd_index: 3,
            refresh: false,
        };
        assert_eq!(
            root.to_body(true),
            "{\"action\":\"get\",\"node\":{\"dir\":true}}\n"
        );
    }
}
