//! Request decoding with the rules of etcd 3.4's gateway (golang/protobuf
//! 1.3 `jsonpb`, lenient mode): both the proto and the lowerCamel field
//! names, unknown fields ignored, `null` meaning "not set", 64-bit integers
//! as numbers or strings, enums by name or number, bytes as standard
//! base64 — and, when a request is wrong, Go's error text.
//!
//! The decoder walks the JSON against the generated field table
//! (`gateway_schema.rs`, from the same descriptors as the prost types) and
//! writes a canonical rendition (proto names, one key per field, no nulls)
//! that the pbjson-generated `Deserialize` impls then turn into the prost
//! message. The extra pass costs one copy of the text (bytes fields are
//! decoded and re-encoded so Go's base64 rules, not pbjson's, apply).

use super::gojson;
use base64::Engine as _;
use serde::de::DeserializeOwned;

/// Deeper message nesting than this is refused. prost refuses 100 levels on
/// the gRPC side; this stays under serde_json's own limit (128 JSON levels,
/// and a message level can take two: the object and a repeated field).
const MAX_MESSAGE_DEPTH: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int64,
    Uint64,
    // etcd's API has no 32-bit integer field a client sends today (only
    // responses carry one); build.rs emits these if one appears.
    #[allow(dead_code)]
    Int32,
    Uint32,
    Bool,
    String,
    Bytes,
    /// Index into `ENUMS`.
    Enum(usize),
    /// Index into `MESSAGES`.
    Message(usize),
}

#[derive(Debug)]
pub(super) struct Field {
    /// The proto name: what output uses, and one of the two accepted names.
    pub(super) name: &'static str,
    /// The JSON (lowerCamel) name, also accepted.
    pub(super) json: &'static str,
    pub(super) kind: Kind,
    pub(super) repeated: bool,
    pub(super) oneof: bool,
}

#[derive(Debug)]
pub(super) struct Message {
    pub(super) fields: &'static [Field],
}

#[derive(Debug)]
pub(super) struct Enum {
    /// The Go type name, which Go's errors print.
    pub(super) go: &'static str,
    pub(super) values: &'static [(&'static str, i32)],
}

/// A prost message the gateway can decode: its row in `MESSAGES`.
pub(crate) trait HasSchema {
    const SCHEMA: usize;
}

include!(concat!(env!("OUT_DIR"), "/gateway_schema.rs"));

/// Decodes one request from the JSON text of a value that Go's scanner
/// accepted (see `gojson::Scanner`). Errors carry Go's wording.
pub(super) fn decode<T: HasSchema + DeserializeOwned>(raw: &[u8]) -> Result<T, String> {
    let mut out = Vec::with_capacity(raw.len() + 16);
    let v = Raw::parse(raw).ok_or_else(malformed)?;
    // A `null` request is the empty message (Go decodes it into a struct
    // value, not a pointer).
    if v.kind() == RawKind::Null {
        out.extend_from_slice(b"{}");
    } else {
        write_message(&mut out, T::SCHEMA, v, 0)?;
    }
    serde_json::from_slice(&out).map_err(|e| e.to_string())
}

/// A string literal's text without its quotes, escapes untouched.
fn between_quotes(lit: &[u8]) -> &[u8] {
    lit.get(1..lit.len().saturating_sub(1)).unwrap_or_default()
}

fn malformed() -> String {
    // Unreachable for input the scanner accepted; never panic over it.
    "invalid JSON".to_string()
}

fn type_error(kind: RawKind, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go value of type {go_type}",
        kind.go_name()
    )
}

fn write_message(out: &mut Vec<u8>, schema: usize, v: Raw<'_>, depth: usize) -> Result<(), String> {
    if depth >= MAX_MESSAGE_DEPTH {
        return Err(format!(
            "cairn: request nests messages deeper than {MAX_MESSAGE_DEPTH} levels"
        ));
    }
    if v.kind() != RawKind::Object {
        return Err(type_error(v.kind(), "map[string]json.RawMessage"));
    }
    let msg = MESSAGES.get(schema).ok_or_else(malformed)?;
    // Go reads the object into a map (the last of duplicate keys wins) and
    // then looks each field up by both names, preferring the lowerCamel one.
    let mut by_name: Vec<Option<Raw<'_>>> = vec![None; msg.fields.len()];
    let mut by_json: Vec<Option<Raw<'_>>> = vec![None; msg.fields.len()];
    for member in v.members() {
        let (key, value) = member.ok_or_else(malformed)?;
        for ((f, named), jsoned) in msg.fields.iter().zip(&mut by_name).zip(&mut by_json) {
            if key == f.name {
                *named = Some(value);
            }
            if key == f.json {
                *jsoned = Some(value);
            }
        }
    }
    out.push(b'{');
    let mut first = true;
    // Plain fields in declaration order, then oneof members: the order in
    // which Go visits them, hence which error is reported first.
    let order = msg
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.oneof)
        .chain(msg.fields.iter().enumerate().filter(|(_, f)| f.oneof));
    // etcd's messages have at most one oneof each. Naming several of its
    // members is accepted by Go (each overwrites the last, in map order, so
    // which one stays is random); here the first in declaration order stays
    // and the others are only checked.
    let mut oneof_set = false;
    for (i, f) in order {
        let given = by_json.get(i).copied().flatten();
        let Some(value) = given.or_else(|| by_name.get(i).copied().flatten()) else {
            continue;
        };
        if f.oneof && oneof_set {
            let mut scratch = Vec::new();
            write_single(&mut scratch, f, value, depth)?;
            continue;
        }
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        gojson::write_str(out, f.name);
        out.push(b':');
        let written = if f.repeated {
            write_repeated(out, f, value, depth)?
        } else {
            write_single(out, f, value, depth)?
        };
        if written {
            first = false;
            oneof_set |= f.oneof;
        } else {
            // `null`: the field stays unset.
            out.truncate(mark);
        }
    }
    out.push(b'}');
    Ok(())
}

/// Writes one non-repeated field; false when `null` leaves it unset.
fn write_single(out: &mut Vec<u8>, f: &Field, v: Raw<'_>, depth: usize) -> Result<bool, String> {
    if v.kind() == RawKind::Null {
        if !f.oneof {
            return Ok(false);
        }
        // Naming a oneof member selects it even with `null`: Go allocates
        // the member and leaves its value at the default.
        write_default(out, f.kind);
        return Ok(true);
    }
    write_value(out, f.kind, v, depth)?;
    Ok(true)
}

fn write_repeated(out: &mut Vec<u8>, f: &Field, v: Raw<'_>, depth: usize) -> Result<bool, String> {
    match v.kind() {
        RawKind::Null => return Ok(false),
        RawKind::Array => {}
        other => return Err(type_error(other, "[]json.RawMessage")),
    }
    out.push(b'[');
    for (n, elem) in v.elements().enumerate() {
        let elem = elem.ok_or_else(malformed)?;
        if n > 0 {
            out.push(b',');
        }
        if elem.kind() == RawKind::Null {
            // Go leaves a `null` element at its zero value.
            write_default(out, f.kind);
        } else {
            write_value(out, f.kind, elem, depth)?;
        }
    }
    out.push(b']');
    Ok(true)
}

fn write_default(out: &mut Vec<u8>, kind: Kind) {
    out.extend_from_slice(match kind {
        Kind::Int64 | Kind::Uint64 => b"\"0\"",
        Kind::Int32 | Kind::Uint32 | Kind::Enum(_) => b"0",
        Kind::Bool => b"false",
        Kind::String | Kind::Bytes => b"\"\"",
        Kind::Message(_) => b"{}",
    });
}

/// Writes a non-null value of `kind`.
fn write_value(out: &mut Vec<u8>, kind: Kind, v: Raw<'_>, depth: usize) -> Result<(), String> {
    match kind {
        Kind::Message(m) => write_message(out, m, v, depth + 1),
        Kind::Int64 | Kind::Uint64 | Kind::Int32 | Kind::Uint32 => {
            let int = IntType::of(kind);
            match number(v, int, int.go_name())? {
                Some(n) if int.quoted() => {
                    out.push(b'"');
                    out.extend_from_slice(n.to_string().as_bytes());
                    out.push(b'"');
                }
                Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
                None => write_default(out, kind),
            }
            Ok(())
        }
        Kind::Bool => match v.kind() {
            RawKind::True => {
                out.extend_from_slice(b"true");
                Ok(())
            }
            RawKind::False => {
                out.extend_from_slice(b"false");
                Ok(())
            }
            other => Err(type_error(other, "bool")),
        },
        Kind::String => match v.kind() {
            RawKind::String => {
                gojson::write_str(out, &gojson::unquote(v.text));
                Ok(())
            }
            other => Err(type_error(other, "string")),
        },
        Kind::Bytes => {
            let bytes = bytes_value(v)?;
            out.push(b'"');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .as_bytes(),
            );
            out.push(b'"');
            Ok(())
        }
        Kind::Enum(e) => {
            let en = ENUMS.get(e).ok_or_else(malformed)?;
            let n = if v.kind() == RawKind::String {
                // By name, compared as written (no unescaping, as Go).
                let name = between_quotes(v.text);
                en.values
                    .iter()
                    .find(|(n, _)| n.as_bytes() == name)
                    .map(|&(_, n)| i128::from(n))
                    .ok_or_else(|| {
                        format!(
                            "unknown value {} for enum {}",
                            gojson::go_quote_bytes(name),
                            en.go
                        )
                    })?
            } else {
                number(v, IntType::I32, en.go)?.unwrap_or(0)
            };
            // Go keeps numbers it has no name for (proto3 enums are open),
            // and so do the generated decoders (see `open_enums` in build.rs).
            out.extend_from_slice(n.to_string().as_bytes());
            Ok(())
        }
    }
}

/// A `[]byte` field: a base64 string, or (Go allows it) an array of bytes.
fn bytes_value(v: Raw<'_>) -> Result<Vec<u8>, String> {
    match v.kind() {
        RawKind::String => gojson::base64_decode(gojson::unquote(v.text).as_bytes()),
        RawKind::Array => {
            let mut bytes = Vec::new();
            for elem in v.elements() {
                let elem = elem.ok_or_else(malformed)?;
                let b = match elem.kind() {
                    RawKind::Null => 0,
                    RawKind::Number => {
                        let text = std::str::from_utf8(elem.text).unwrap_or_default();
                        text.parse::<u8>().map_err(|_| {
                            format!(
                                "json: cannot unmarshal number {text} into Go value of type uint8"
                            )
                        })?
                    }
                    other => return Err(type_error(other, "uint8")),
                };
                bytes.push(b);
            }
            Ok(bytes)
        }
        other => Err(type_error(other, "[]uint8")),
    }
}

#[derive(Debug, Clone, Copy)]
enum IntType {
    I64,
    U64,
    I32,
    U32,
}

impl IntType {
    fn of(kind: Kind) -> IntType {
        match kind {
            Kind::Uint64 => IntType::U64,
            Kind::Int32 => IntType::I32,
            Kind::Uint32 => IntType::U32,
            _ => IntType::I64,
        }
    }
    fn go_name(self) -> &'static str {
        match self {
            IntType::I64 => "int64",
            IntType::U64 => "uint64",
            IntType::I32 => "int32",
            IntType::U32 => "uint32",
        }
    }
    /// 64-bit integers travel as JSON strings.
    fn quoted(self) -> bool {
        matches!(self, IntType::I64 | IntType::U64)
    }
    fn parse(self, s: &str) -> Option<i128> {
        Some(match self {
            IntType::I64 => i128::from(s.parse::<i64>().ok()?),
            IntType::U64 => i128::from(s.parse::<u64>().ok()?),
            IntType::I32 => i128::from(s.parse::<i32>().ok()?),
            IntType::U32 => i128::from(s.parse::<u32>().ok()?),
        })
    }
}

/// An integer the way jsonpb reads one: a quoted value loses its quotes
/// (nothing is unescaped) and what is left goes through `json.Unmarshal`.
/// `None` is `null`, which leaves the field at zero.
fn number(v: Raw<'_>, int: IntType, go_type: &str) -> Result<Option<i128>, String> {
    let doc = if v.kind() == RawKind::String {
        between_quotes(v.text)
    } else {
        v.text
    };
    gojson::check_document(doc)?;
    let inner = Raw::parse(doc).ok_or_else(malformed)?;
    match inner.kind() {
        RawKind::Null => Ok(None),
        RawKind::Number => {
            let text = std::str::from_utf8(inner.text).unwrap_or_default();
            int.parse(text).map(Some).ok_or_else(|| {
                format!("json: cannot unmarshal number {text} into Go value of type {go_type}")
            })
        }
        other => Err(type_error(other, go_type)),
    }
}

/// A JSON value known to be well formed, as a slice of the request body.
#[derive(Debug, Clone, Copy)]
struct Raw<'a> {
    text: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawKind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

impl RawKind {
    /// How Go's errors name a JSON value's kind.
    fn go_name(self) -> &'static str {
        match self {
            RawKind::Object => "object",
            RawKind::Array => "array",
            RawKind::String => "string",
            RawKind::Number => "number",
            RawKind::True | RawKind::False => "bool",
            RawKind::Null => "null",
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = b.get(i) {
        i += 1;
    }
    i
}

/// The end of the well-formed value starting at `start`. Iterative, so
/// deep nesting in an ignored field cannot exhaust the stack.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match *b.get(start)? {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = start;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            // A number or a literal runs to the next delimiter.
            let mut j = start;
            while b.get(j).is_some_and(|c| {
                !matches!(c, b',' | b'}' | b']' | b':' | b' ' | b'\t' | b'\r' | b'\n')
            }) {
                j += 1;
            }
            Some(j)
        }
    }
}

/// Just past the closing quote of the string literal at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    loop {
        match *b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

impl<'a> Raw<'a> {
    /// The single value in `text` (surrounding whitespace allowed).
    fn parse(text: &'a [u8]) -> Option<Raw<'a>> {
        let start = skip_ws(text, 0);
        let end = value_end(text, start)?;
        Some(Raw {
            text: text.get(start..end)?,
        })
    }

    fn kind(&self) -> RawKind {
        match self.text.first() {
            Some(b'{') => RawKind::Object,
            Some(b'[') => RawKind::Array,
            Some(b'"') => RawKind::String,
            Some(b't') => RawKind::True,
            Some(b'f') => RawKind::False,
            Some(b'n') => RawKind::Null,
            _ => RawKind::Number,
        }
    }

    /// The members of an object: (unescaped key, value).
    fn members(&self) -> impl Iterator<Item = Option<(String, Raw<'a>)>> + 'a {
        let b = self.text;
        let mut i = 1;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b'}') | None => {
                    done = true;
                    return None;
                }
                Some(b',') => i = skip_ws(b, i + 1),
                _ => {}
            }
            let item = (|| {
                let key_end = value_end(b, i)?;
                let key = gojson::unquote(b.get(i..key_end)?);
                let colon = skip_ws(b, key_end);
                if b.get(colon) != Some(&b':') {
                    return None;
                }
                let vstart = skip_ws(b, colon + 1);
                let vend = value_end(b, vstart)?;
                i = vend;
                Some((
                    key,
                    Raw {
                        text: b.get(vstart..vend)?,
                    },
                ))
            })();
            if item.is_none() {
                done = true;
            }
            Some(item)
        })
    }

    /// The elements of an array.
    fn elements(&self) -> impl Iterator<Item = Option<Raw<'a>>> + 'a {
        let b = self.text;
        let mut i = 1;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b']') | None => {
                    done = true;
                    return None;
                }
                Some(b',') => i = skip_ws(b, i + 1),
                _ => {}
            }
            let item = value_end(b, i).and_then(|end| {
                let r = Raw {
                    text: b.get(i..end)?,
                };
                i = end;
                Some(r)
            });
            if item.is_none() {
                done = true;
            }
            Some(item)
        })
    }
}
