//! etcd's YAML config file: a map from flag names to values.
//!
//! ```yaml
//! name: infra1
//! heartbeat-interval: 100
//! listen-client-urls: http://10.0.0.1:2379   # or a YAML list
//! experimental-watch-progress-notify-interval: 600000000000  # 10m in ns
//! client-transport-security:
//!   cert-file: /etc/etcd/server.crt
//! ```
//!
//! etcd decodes this file into Go structs, which explains its quirks that
//! Cairn keeps: durations are integers of nanoseconds (Cairn also takes Go
//! duration strings such as `10m`), booleans follow YAML 1.1 (`yes`, `on`
//! are true), and TLS settings sit in the nested `client-transport-security`
//! and `peer-transport-security` maps under short names. The file is walked
//! as a stream of parser events rather than deserialised, because every
//! key's line number is needed for provenance and messages.

use std::collections::HashMap;
use std::str::Chars;
use std::time::Duration;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::{Collector, Duplicates, did_you_mean, suggest_flag_key};
use crate::error::ConfigError;
use crate::registry::{self, Kind, Setting};
use crate::values::format_go_duration;

pub(crate) const CLIENT_TLS_SECTION: &str = "client-transport-security";
pub(crate) const PEER_TLS_SECTION: &str = "peer-transport-security";

/// Keys of the nested `client-transport-security` map → flag names.
const CLIENT_TLS: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
    ("crl-file", "client-crl-file"),
    ("allowed-hostname", "client-cert-allowed-hostname"),
];

/// Keys of the nested `peer-transport-security` map → flag names.
const PEER_TLS: &[(&str, &str)] = &[
    ("cert-file", "peer-cert-file"),
    ("key-file", "peer-key-file"),
    ("client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "peer-auto-tls"),
    ("crl-file", "peer-crl-file"),
    ("allowed-cn", "peer-cert-allowed-cn"),
    ("allowed-hostname", "peer-cert-allowed-hostname"),
];

const SECTIONS: [(&str, &[(&str, &str)]); 2] = [
    (CLIENT_TLS_SECTION, CLIENT_TLS),
    (PEER_TLS_SECTION, PEER_TLS),
];

/// Every key that sets flag `name` in a YAML file: the flag name itself and,
/// for TLS settings, the nested `section.key` spelling etcd uses. For the
/// generated table in `docs/configuration.md`.
#[cfg(test)]
pub(crate) fn keys_for(name: &str) -> Vec<String> {
    let mut keys = vec![name.to_string()];
    for (section, table) in SECTIONS {
        for (key, flag) in table {
            if *flag == name {
                keys.push(format!("{section}.{key}"));
            }
        }
    }
    keys
}

pub(super) fn parse(text: &str, out: &mut Collector<'_>) -> Result<(), ConfigError> {
    let mut walker = Walker {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
    };
    walker.document(out)
}

#[derive(Debug, Clone)]
struct Scalar {
    text: String,
    style: TScalarStyle,
}

impl Scalar {
    fn is_null(&self) -> bool {
        is_null(&self.text, self.style)
    }
}

/// `key:` with nothing after it, `~` or `null`: no value, so the setting is
/// left to lower layers (etcd leaves the Go field at its default).
fn is_null(text: &str, style: TScalarStyle) -> bool {
    style == TScalarStyle::Plain && matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

enum Node {
    Scalar(Scalar),
    List(Vec<Scalar>),
}

struct Walker<'t> {
    parser: Parser<Chars<'t>>,
    /// Scalars that carry an `&anchor`, for `*alias` values.
    anchors: HashMap<usize, Scalar>,
}

impl Walker<'_> {
    fn next(&mut self, out: &Collector<'_>) -> Result<(Event, Marker), ConfigError> {
        self.parser.next_token().map_err(|e| {
            out.error(
                e.marker().line(),
                format!("YAML syntax error: {}", e.info().replace('\n', " ")),
            )
        })
    }

    fn document(&mut self, out: &mut Collector<'_>) -> Result<(), ConfigError> {
        const SHAPE: &str = "expected a map of flag names to values, such as `name: infra1`";
        let mut documents = 0;
        loop {
            let (event, mark) = self.next(out)?;
            match event {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::StreamEnd => return Ok(()),
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(out.error(
                            mark.line(),
                            "a second YAML document (---) starts here; a config file holds one",
                        ));
                    }
                }
                Event::MappingStart(..) => self.top_map(out)?,
                Event::Scalar(ref text, style, ..) if is_null(text, style) => {}
                _ => return Err(out.error(mark.line(), SHAPE)),
            }
        }
    }

    fn top_map(&mut self, out: &mut Collector<'_>) -> Result<(), ConfigError> {
        loop {
            let Some((key, line)) = self.key(out)? else {
                return Ok(());
            };
            if let Some((section, table)) = SECTIONS.into_iter().find(|(s, _)| *s == key) {
                let (event, mark) = self.next(out)?;
                match event {
                    Event::MappingStart(..) => self.section_map(out, section, table)?,
                    Event::Scalar(ref text, style, ..) if is_null(text, style) => {}
                    _ => {
                        return Err(out.error(
                            mark.line(),
                            format!(
                                "{section} must be a map of TLS settings, such as `cert-file: /etc/etcd/server.crt` on an indented line below it"
                            ),
                        ));
                    }
                }
                continue;
            }
            match registry::lookup(&key) {
                Some(s) => {
                    let node = self.value(out, &key)?;
                    assign(out, s, node, line, &key)?;
                }
                None => {
                    self.skip_value(out)?;
                    let hint = did_you_mean(suggest_flag_key(
                        &key,
                        &[CLIENT_TLS_SECTION, PEER_TLS_SECTION],
                    ));
                    out.warn(line, format_args!("unknown key {key} ignored{hint}"));
                }
            }
        }
    }

    fn section_map(
        &mut self,
        out: &mut Collector<'_>,
        section: &str,
        table: &[(&str, &'static str)],
    ) -> Result<(), ConfigError> {
        loop {
            let Some((key, line)) = self.key(out)? else {
                return Ok(());
            };
            let full = format!("{section}.{key}");
            match table.iter().find(|(k, _)| *k == key) {
                Some((_, flag)) => {
                    let s = registry::lookup(flag).ok_or_else(|| {
                        ConfigError::invalid(format!("internal error: no setting --{flag}"))
                    })?;
                    let node = self.value(out, &full)?;
                    assign(out, s, node, line, &full)?;
                }
                None => {
                    self.skip_value(out)?;
                    let names: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
                    let hint = did_you_mean(
                        crate::values::closest(&key, names.iter().copied()).map(str::to_string),
                    );
                    out.warn(
                        line,
                        format_args!(
                            "unknown key {full} ignored{hint}; {section} takes {}",
                            names.join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// The next key of the map being read, or `None` at its end.
    fn key(&mut self, out: &Collector<'_>) -> Result<Option<(String, usize)>, ConfigError> {
        let (event, mark) = self.next(out)?;
        match event {
            Event::MappingEnd => Ok(None),
            Event::Scalar(key, ..) => Ok(Some((key, mark.line()))),
            _ => Err(out.error(
                mark.line(),
                "keys must be plain names, such as `name` or `data-dir`",
            )),
        }
    }

    /// The value of `key`: one scalar or a list of scalars.
    fn value(&mut self, out: &Collector<'_>, key: &str) -> Result<Node, ConfigError> {
        let (event, mark) = self.next(out)?;
        match event {
            Event::Scalar(..) | Event::Alias(..) => {
                Ok(Node::Scalar(self.scalar(out, event, mark, key)?))
            }
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                loop {
                    let (event, mark) = self.next(out)?;
                    if matches!(event, Event::SequenceEnd) {
                        return Ok(Node::List(items));
                    }
                    items.push(self.scalar(out, event, mark, key)?);
                }
            }
            _ => Err(out.error(
                mark.line(),
                format!("{key} takes a single value or a list of values, not a map"),
            )),
        }
    }

    fn scalar(
        &mut self,
        out: &Collector<'_>,
        event: Event,
        mark: Marker,
        key: &str,
    ) -> Result<Scalar, ConfigError> {
        match event {
            Event::Scalar(text, style, anchor, _) => {
                let scalar = Scalar { text, style };
                if anchor > 0 {
                    self.anchors.insert(anchor, scalar.clone());
                }
                Ok(scalar)
            }
            Event::Alias(id) => self.anchors.get(&id).cloned().ok_or_else(|| {
                out.error(
                    mark.line(),
                    format!("{key}: only single values can be used through an alias (*name)"),
                )
            }),
            _ => Err(out.error(
                mark.line(),
                format!("{key}: a list may only hold single values"),
            )),
        }
    }

    /// Skips the value of an unknown key, whatever its shape. Iterative, so
    /// deeply nested input cannot exhaust the stack.
    fn skip_value(&mut self, out: &Collector<'_>) -> Result<(), ConfigError> {
        let mut depth = 0usize;
        loop {
            let (event, mark) = self.next(out)?;
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
                Event::StreamEnd | Event::DocumentEnd => {
                    return Err(out.error(mark.line(), "unexpected end of the YAML document"));
                }
                _ => {}
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

fn assign(
    out: &mut Collector<'_>,
    s: &'static Setting,
    node: Node,
    line: usize,
    key: &str,
) -> Result<(), ConfigError> {
    let raw = match node {
        Node::Scalar(scalar) if scalar.is_null() => None,
        Node::Scalar(scalar) => Some(scalar_raw(s, &scalar)),
        Node::List(items) => {
            let parts: Result<Vec<String>, String> =
                items.iter().map(|item| scalar_raw(s, item)).collect();
            Some(parts.map(|p| p.join(",")))
        }
    };
    let raw = match raw {
        None => None,
        Some(Ok(raw)) => Some(raw),
        Some(Err(why)) => return Err(out.error(line, format!("{key}: {why}"))),
    };
    out.assign(s, raw, line, key, Duplicates::Error)
}

/// The raw text of one YAML scalar for setting `s`.
fn scalar_raw(s: &Setting, scalar: &Scalar) -> Result<String, String> {
    let text = scalar.text.as_str();
    match s.kind {
        // etcd reads YAML 1.1, where `yes`, `on` and friends are booleans;
        // anything else is left to Go's bool syntax.
        Kind::Bool if scalar.style == TScalarStyle::Plain => Ok(match yaml11_bool(text) {
            Some(b) => b.to_string(),
            None => text.to_string(),
        }),
        // A bare integer is nanoseconds, the only form etcd accepts here.
        Kind::Duration if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            let nanos: u64 = text
                .parse()
                .ok()
                .filter(|n| *n <= i64::MAX as u64)
                .ok_or_else(|| {
                    format!("{text} nanoseconds is longer than a duration can be (about 292 years)")
                })?;
            Ok(format_go_duration(Duration::from_nanos(nanos)))
        }
        _ => Ok(text.to_string()),
    }
}

fn yaml11_bool(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_have_two_spellings() {
        assert_eq!(
            keys_for("peer-cert-allowed-cn"),
            ["peer-cert-allowed-cn", "peer-transport-security.allowed-cn"]
        );
        assert_eq!(
            keys_for("client-crl-file"),
            ["client-crl-file", "client-transport-security.crl-file"]
        );
        assert_eq!(keys_for("name"), ["name"]);
        for (_, table) in SECTIONS {
            for (_, flag) in table {
                assert!(registry::lookup(flag).is_some(), "{flag}");
            }
        }
    }

    #[test]
    fn nanosecond_durations_round_trip() {
        let s = registry::lookup("grpc-keepalive-timeout").unwrap();
        let raw = |t: &str| {
            scalar_raw(
                s,
                &Scalar {
                    text: t.to_string(),
                    style: TScalarStyle::Plain,
                },
            )
        };
        for nanos in [
            0u64,
            1,
            1_500,
            100_000_000,
            600_000_000_000,
            7_200_000_000_001,
        ] {
            let text = raw(&nanos.to_string()).unwrap();
            let back = crate::values::parse_go_duration(&text).unwrap();
            assert_eq!(back, Duration::from_nanos(nanos), "{text}");
        }
        assert_eq!(raw("5s").unwrap(), "5s");
        assert!(raw("9223372036854775808").is_err());
    }
}
