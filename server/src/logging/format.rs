//! The two line formats etcd 3.4 writes, chosen with `--logger`:
//!
//! - `capnslog` (etcd 3.4's default): `2026-12-06 16:08:13.338932 I |
//!   etcdserver: message key=value`. The package is the module that logged
//!   (`cairn::etcdserver::node` → `etcdserver/node`); fields follow the
//!   message as `key=value`.
//! - `zap`: one JSON object per line with etcd's keys, in etcd's order:
//!   `level` (`debug`, `info`, `warn`, `error`), `ts` (ISO 8601, UTC, in
//!   milliseconds: `2026-12-06T16:08:01.952Z`), `caller` (`boot/mod.rs:123`,
//!   the last folder and file, as zap trims Go paths), `msg`, then the
//!   event's own fields (strings, numbers and booleans keep their JSON type).
//!
//! Both write UTC timestamps: etcd uses the local time zone, which is UTC on
//! most servers; a fixed zone keeps lines from different hosts comparable.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--logger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    #[default]
    Capnslog,
    Zap,
}

impl Style {
    /// From the validated `--logger` value.
    pub fn from_config(logger: &str) -> Style {
        match logger {
            "zap" => Style::Zap,
            _ => Style::Capnslog,
        }
    }
}

/// The `FormatEvent` for both styles.
#[derive(Debug, Clone, Copy)]
pub struct EtcdFormat(pub Style);

/// The name of the field that carries a caller given by the event itself
/// (raft-rs records bridged from slog know their own file and line).
pub const CALLER_FIELD: &str = "caller";

impl<S, N> FormatEvent<S, N> for EtcdFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = Line {
            now: SystemTime::now(),
            level: *meta.level(),
            target: fields.log_target.as_deref().unwrap_or(meta.target()),
            file: fields.log_file.as_deref().or(meta.file()),
            line: fields.log_line.or(meta.line()),
            fields: &fields,
        };
        let text = match self.0 {
            Style::Capnslog => line.capnslog(),
            Style::Zap => line.zap(),
        };
        writer.write_str(&text)
    }
}

/// A field value, keeping the JSON type zap would give it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// Rendered by the event (`%x`, `?x`): written as it is.
    Str(String),
    /// A string value (`key = "…"`): quoted in capnslog lines, as
    /// `tracing`'s own format does.
    Text(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) | Value::Text(s) => f.write_str(s),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// An event's message and fields. Events bridged from the `log` crate carry
/// their origin in `log.*` fields, which become the target and caller.
#[derive(Default)]
struct Fields {
    msg: String,
    caller: Option<String>,
    log_target: Option<String>,
    log_file: Option<String>,
    log_line: Option<u32>,
    kv: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => self.msg = value.to_string(),
            CALLER_FIELD => self.caller = Some(value.to_string()),
            "log.target" => self.log_target = Some(value.to_string()),
            "log.file" => self.log_file = Some(value.to_string()),
            "log.line" => self.log_line = value.to_string().parse().ok(),
            "log.module_path" => {}
            name => self.kv.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Text(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
}

struct Line<'a> {
    now: SystemTime,
    level: Level,
    target: &'a str,
    file: Option<&'a str>,
    line: Option<u32>,
    fields: &'a Fields,
}

impl Line<'_> {
    fn capnslog(&self) -> String {
        let t = Utc::from(self.now);
        let letter = match self.level {
            Level::ERROR => 'E',
            Level::WARN => 'W',
            Level::INFO => 'I',
            Level::DEBUG => 'D',
            Level::TRACE => 'T',
        };
        let mut out = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06} {letter} | {}: {}",
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            t.nanos / 1000,
            package(self.target),
            self.fields.msg
        );
        for (k, v) in &self.fields.kv {
            let _ = match v {
                Value::Text(t) => write!(out, " {k}={t:?}"),
                v => write!(out, " {k}={v}"),
            };
        }
        out.push('\n');
        out
    }

    fn zap(&self) -> String {
        let t = Utc::from(self.now);
        let level = match self.level {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG | Level::TRACE => "debug",
        };
        let mut out = String::with_capacity(128 + self.fields.msg.len());
        out.push_str("{\"level\":");
        push_json_str(&mut out, level);
        let _ = write!(
            out,
            ",\"ts\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            t.nanos / 1_000_000
        );
        let caller = match (&self.fields.caller, self.file) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(file)) => Some(caller(file, self.line)),
            (None, None) => None,
        };
        if let Some(c) = caller {
            out.push_str(",\"caller\":");
            push_json_str(&mut out, &c);
        }
        out.push_str(",\"msg\":");
        push_json_str(&mut out, &self.fields.msg);
        for (k, v) in &self.fields.kv {
            out.push(',');
            push_json_str(&mut out, k);
            out.push(':');
            match v {
                Value::Str(s) | Value::Text(s) => push_json_str(&mut out, s),
                Value::I64(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::U64(n) => {
                    let _ = write!(out, "{n}");
                }
                // zap writes NaN and the infinities as strings.
                Value::F64(n) if !n.is_finite() => {
                    let s = if n.is_nan() {
                        "NaN"
                    } else if *n > 0.0 {
                        "+Inf"
                    } else {
                        "-Inf"
                    };
                    push_json_str(&mut out, s);
                }
                Value::F64(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Bool(b) => {
                    let _ = write!(out, "{b}");
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

/// A JSON string literal (serde_json's escaping, which like zap's does not
/// escape HTML characters).
fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// The capnslog package of a target: Cairn's modules without the crate
/// name (`cairn::etcdserver::node` → `etcdserver/node`), other crates' as
/// they are (`raft`, `fjall`).
fn package(target: &str) -> String {
    let rest = target.strip_prefix("cairn::").unwrap_or(target);
    rest.replace("::", "/")
}

/// zap's short caller: the last folder and the file, with the line.
fn caller(file: &str, line: Option<u32>) -> String {
    let mut parts = file.rsplit(['/', '\\']);
    let name = parts.next().unwrap_or(file);
    let short = match parts.next() {
        Some(dir) if !dir.is_empty() => format!("{dir}/{name}"),
        _ => name.to_string(),
    };
    match line {
        Some(l) => format!("{short}:{l}"),
        None => short,
    }
}

/// A UTC civil time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
}

impl From<SystemTime> for Utc {
    fn from(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        // `rem` is below 86 400, so these fit.
        let rem = u32::try_from(rem).unwrap_or(0);
        Utc {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            nanos: d.subsec_nanos(),
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(style: Style, f: impl FnOnce()) -> String {
        let buf = Capture::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .event_format(EtcdFormat(style))
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn zap_lines_are_json_with_etcds_keys_in_order() {
        let text = capture(Style::Zap, || {
            tracing::info!(
                member = "8e9e05c52164694d",
                term = 7u64,
                delta = -3i64,
                ok = true,
                ratio = 0.5,
                "became \"leader\""
            );
            tracing::warn!("slow fdatasync");
            tracing::debug!(caller = "raft/raft.rs:42", "from raft");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "became \"leader\"");
        assert_eq!(v["member"], "8e9e05c52164694d");
        assert_eq!(v["term"], 7);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["ratio"], 0.5);
        let caller = v["caller"].as_str().unwrap();
        assert!(caller.starts_with("logging/format.rs:"), "{caller}");
        let ts = v["ts"].as_str().unwrap();
        // 2026-12-06T16:08:01.952Z
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        let keys: Vec<&str> = lines[0]
            .split(",\"")
            .map(|p| p.trim_start_matches("{\"").split('"').next().unwrap())
            .take(4)
            .collect();
        assert_eq!(keys, ["level", "ts", "caller", "msg"]);
        let w: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(w["level"], "warn");
        let d: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(d["level"], "debug");
        assert_eq!(d["caller"], "raft/raft.rs:42");
        assert!(d.get("caller").is_some() && lines[2].matches("caller").count() == 1);
    }

    #[test]
    fn capnslog_lines_look_like_etcds() {
        let text = capture(Style::Capnslog, || {
            tracing::warn!(peer = "a1", n = 2, "lost the TCP streaming connection");
            tracing::error!(target: "raft", caller = "raft/raft.rs:1", "boom");
        });
        let lines: Vec<&str> = text.lines().collect();
        // 2026-12-06 16:08:13.338932 W | logging/format/tests: ...
        let first = lines[0];
        assert_eq!(&first[4..5], "-");
        assert_eq!(&first[10..11], " ");
        assert_eq!(&first[19..20], ".");
        assert_eq!(
            &first[26..],
            " W | logging/format/tests: lost the TCP streaming connection peer=\"a1\" n=2"
        );
        assert!(lines[1].ends_with(" E | raft: boom"), "{}", lines[1]);
    }

    #[test]
    fn utc_dates() {
        let at = |secs: u64, nanos: u32| Utc::from(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(
            at(0, 0),
            Utc {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                nanos: 0
            }
        );
        // 2000-02-29T23:59:59.5Z
        let t = at(951_868_799, 500_000_000);
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
        assert_eq!(
            (t.hour, t.minute, t.second, t.nanos),
            (23, 59, 59, 500_000_000)
        );
        // 2026-12-06T16:08:01Z
        let t = at(1_796_573_281, 0);
        assert_eq!((t.year, t.month, t.day), (2026, 12, 6));
        assert_eq!((t.hour, t.minute, t.second), (16, 8, 1));
    }

    #[test]
    fn callers_and_packages() {
        assert_eq!(caller("server/src/boot/mod.rs", Some(12)), "boot/mod.rs:12");
        assert_eq!(caller("main.rs", None), "main.rs");
        assert_eq!(package("cairn::etcdserver::node"), "etcdserver/node");
        assert_eq!(package("raft"), "raft");
        assert_eq!(package("fjall::journal"), "fjall/journal");
    }
}
