//! The parts of Go's `encoding/json` whose behaviour etcd's gateway exposes
//! to clients: where a JSON value ends in a request body, the exact syntax
//! error texts, string unquoting (invalid UTF-8 becomes U+FFFD), the
//! base64 decoder behind `[]byte` fields, and the output escaping.
//!
//! Written from the documented behaviour of Go 1.19 (what etcd 3.4.23 is
//! built with) and checked against the real gateway with curl.

use std::fmt::Write as _;

/// Go refuses documents nested deeper than this.
const MAX_NESTING: usize = 10_000;

/// What one byte did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// Part of the value (or whitespace before it).
    Continue,
    /// The value ended *before* this byte, which is not part of it.
    End,
    /// This byte closed the outermost object or array: the value ends with it.
    Closed,
    /// A syntax error; see `Scanner::error`.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nest {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    BeginValueOrEmpty,
    BeginValue,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    EndTop,
    InString,
    InStringEsc,
    /// Inside `\uXXXX`, with this many hex digits still to come.
    InStringEscU(u8),
    Neg,
    One,
    Zero,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    /// Inside `true`/`false`/`null`, expecting `word[at]` next.
    Literal {
        word: &'static str,
        at: usize,
    },
    Failed,
}

/// Go's JSON scanner as a byte-at-a-time state machine: resumable across
/// body chunks, so a value is scanned once however it arrives.
#[derive(Debug)]
pub(super) struct Scanner {
    state: State,
    nest: Vec<Nest>,
    /// The top-level value is complete.
    end_top: bool,
    err: Option<String>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::BeginValue,
            nest: Vec::new(),
            end_top: false,
            err: None,
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

impl Scanner {
    /// The syntax error, once `step` returned `Op::Error`.
    pub(super) fn error(&self) -> &str {
        self.err.as_deref().unwrap_or("invalid JSON")
    }

    /// True until the first byte of a value was seen (only whitespace so far).
    pub(super) fn at_start(&self) -> bool {
        self.state == State::BeginValue && self.nest.is_empty() && !self.end_top
    }

    fn fail(&mut self, c: u8, context: &str) -> Op {
        self.state = State::Failed;
        if self.err.is_none() {
            self.err = Some(format!("invalid character {} {context}", quote_char(c)));
        }
        Op::Error
    }

    fn push(&mut self, c: u8, n: Nest, next: State) -> Op {
        self.nest.push(n);
        if self.nest.len() > MAX_NESTING {
            return self.fail(c, "exceeded max depth");
        }
        self.state = next;
        Op::Continue
    }

    fn pop(&mut self) -> Op {
        self.nest.pop();
        if self.nest.is_empty() {
            self.state = State::EndTop;
            self.end_top = true;
            Op::Closed
        } else {
            self.state = State::EndValue;
            Op::Continue
        }
    }

    #[allow(clippy::too_many_lines)] // a state machine: one short arm per scanner state
    pub(super) fn step(&mut self, c: u8) -> Op {
        match self.state {
            State::BeginValueOrEmpty => {
                if is_space(c) {
                    Op::Continue
                } else if c == b']' {
                    self.end_value(c)
                } else {
                    self.begin_value(c)
                }
            }
            State::BeginValue => self.begin_value(c),
            State::BeginStringOrEmpty => {
                if is_space(c) {
                    Op::Continue
                } else if c == b'}' {
                    if let Some(top) = self.nest.last_mut() {
                        *top = Nest::ObjectValue;
                    }
                    self.end_value(c)
                } else {
                    self.begin_string(c)
                }
            }
            State::BeginString => self.begin_string(c),
            State::EndValue => self.end_value(c),
            State::EndTop => self.end_top(c),
            State::InString => {
                match c {
                    b'"' => self.state = State::EndValue,
                    b'\\' => self.state = State::InStringEsc,
                    c if c < 0x20 => return self.fail(c, "in string literal"),
                    _ => {}
                }
                Op::Continue
            }
            State::InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = State::InString;
                    Op::Continue
                }
                b'u' => {
                    self.state = State::InStringEscU(4);
                    Op::Continue
                }
                _ => self.fail(c, "in string escape code"),
            },
            State::InStringEscU(left) => {
                if c.is_ascii_hexdigit() {
                    self.state = if left == 1 {
                        State::InString
                    } else {
                        State::InStringEscU(left - 1)
                    };
                    Op::Continue
                } else {
                    self.fail(c, "in \\u hexadecimal character escape")
                }
            }
            State::Neg => match c {
                b'0' => {
                    self.state = State::Zero;
                    Op::Continue
                }
                b'1'..=b'9' => {
                    self.state = State::One;
                    Op::Continue
                }
                _ => self.fail(c, "in numeric literal"),
            },
            State::One => {
                if c.is_ascii_digit() {
                    Op::Continue
                } else {
                    self.zero(c)
                }
            }
            State::Zero => self.zero(c),
            State::Dot => {
                if c.is_ascii_digit() {
                    self.state = State::Dot0;
                    Op::Continue
                } else {
                    self.fail(c, "after decimal point in numeric literal")
                }
            }
            State::Dot0 => {
                if c.is_ascii_digit() {
                    Op::Continue
                } else if c == b'e' || c == b'E' {
                    self.state = State::E;
                    Op::Continue
                } else {
                    self.end_value(c)
                }
            }
            State::E => {
                if c == b'+' || c == b'-' {
                    self.state = State::ESign;
                    Op::Continue
                } else {
                    self.e_sign(c)
                }
            }
            State::ESign => self.e_sign(c),
            State::E0 => {
                if c.is_ascii_digit() {
                    Op::Continue
                } else {
                    self.end_value(c)
                }
            }
            State::Literal { word, at } => {
                // `at` stays inside `word` (the state ends with it), so
                // the else is never taken; were it, the literal is over.
                let Some(&want) = word.as_bytes().get(at) else {
                    return self.end_value(c);
                };
                if c != want {
                    let context = format!("in literal {word} (expecting {})", quote_char(want));
                    return self.fail(c, &context);
                }
                self.state = if at + 1 == word.len() {
                    State::EndValue
                } else {
                    State::Literal { word, at: at + 1 }
                };
                Op::Continue
            }
            State::Failed => Op::Error,
        }
    }

    fn begin_value(&mut self, c: u8) -> Op {
        if is_space(c) {
            return Op::Continue;
        }
        let next = match c {
            b'{' => return self.push(c, Nest::ObjectKey, State::BeginStringOrEmpty),
            b'[' => return self.push(c, Nest::ArrayValue, State::BeginValueOrEmpty),
            b'"' => State::InString,
            b'-' => State::Neg,
            b'0' => State::Zero,
            b'1'..=b'9' => State::One,
            b't' => State::Literal {
                word: "true",
                at: 1,
            },
            b'f' => State::Literal {
                word: "false",
                at: 1,
            },
            b'n' => State::Literal {
                word: "null",
                at: 1,
            },
            _ => return self.fail(c, "looking for beginning of value"),
        };
        self.state = next;
        Op::Continue
    }

    fn begin_string(&mut self, c: u8) -> Op {
        if is_space(c) {
            return Op::Continue;
        }
        if c == b'"' {
            self.state = State::InString;
            return Op::Continue;
        }
        self.fail(c, "looking for beginning of object key string")
    }

    fn end_value(&mut self, c: u8) -> Op {
        let Some(&top) = self.nest.last() else {
            self.state = State::EndTop;
            self.end_top = true;
            return self.end_top(c);
        };
        if is_space(c) {
            self.state = State::EndValue;
            return Op::Continue;
        }
        match top {
            Nest::ObjectKey => {
                if c == b':' {
                    if let Some(t) = self.nest.last_mut() {
                        *t = Nest::ObjectValue;
                    }
                    self.state = State::BeginValue;
                    return Op::Continue;
                }
                self.fail(c, "after object key")
            }
            Nest::ObjectValue => match c {
                b',' => {
                    if let Some(t) = self.nest.last_mut() {
                        *t = Nest::ObjectKey;
                    }
                    self.state = State::BeginString;
                    Op::Continue
                }
                b'}' => self.pop(),
                _ => self.fail(c, "after object key:value pair"),
            },
            Nest::ArrayValue => match c {
                b',' => {
                    self.state = State::BeginValue;
                    Op::Continue
                }
                b']' => self.pop(),
                _ => self.fail(c, "after array element"),
            },
        }
    }

    /// After a complete top-level value: Go reports a non-space byte only on
    /// the *next* step (a stream decoder never takes it).
    fn end_top(&mut self, c: u8) -> Op {
        if !is_space(c) && self.err.is_none() {
            self.err = Some(format!(
                "invalid character {} after top-level value",
                quote_char(c)
            ));
            self.state = State::Failed;
        }
        Op::End
    }

    fn zero(&mut self, c: u8) -> Op {
        match c {
            b'.' => {
                self.state = State::Dot;
                Op::Continue
            }
            b'e' | b'E' => {
                self.state = State::E;
                Op::Continue
            }
            _ => self.end_value(c),
        }
    }

    fn e_sign(&mut self, c: u8) -> Op {
        if c.is_ascii_digit() {
            self.state = State::E0;
            Op::Continue
        } else {
            self.fail(c, "in exponent of numeric literal")
        }
    }

    /// End of input: is the value complete? (Go's `scanner.eof`.)
    fn eof(&mut self) -> bool {
        if self.err.is_some() {
            return false;
        }
        if self.end_top {
            return true;
        }
        self.step(b' ');
        self.end_top
    }
}

/// Go's `json.Unmarshal` syntax check of a whole document (`checkValid`).
pub(super) fn check_document(data: &[u8]) -> Result<(), String> {
    let mut s = Scanner::default();
    for &c in data {
        if s.step(c) == Op::Error {
            return Err(s.error().to_string());
        }
    }
    if s.eof() {
        Ok(())
    } else {
        Err(s
            .err
            .clone()
            .unwrap_or_else(|| "unexpected end of JSON input".to_string()))
    }
}

/// How Go quotes an offending byte in a syntax error: as the Go string
/// literal of the rune with that value, between single quotes.
pub(super) fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        _ => {
            let mut s = String::from("'");
            go_quote_rune(&mut s, char::from(c));
            s.push('\'');
            s
        }
    }
}

/// One rune the way Go's `strconv.Quote` writes it (without the quotes).
fn go_quote_rune(out: &mut String, r: char) {
    match r {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        '"' => out.push_str("\\\""),
        r if (r as u32) < 0x20 || r == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", r as u32);
        }
        r if go_is_print(r) => out.push(r),
        r if (r as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", r as u32);
        }
        r => {
            let _ = write!(out, "\\U{:08x}", r as u32);
        }
    }
}

/// Go's `unicode.IsPrint` for the runes a quoted byte or enum name can
/// hold. Exact for Latin-1 (what `quote_char` sees); beyond it, the
/// control, separator and format characters a client could plausibly send.
fn go_is_print(r: char) -> bool {
    match r as u32 {
        0x20..=0x7e => true,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad => false,
        0x2028 | 0x2029 | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0xfeff => false,
        0x2000..=0x200a | 0x3000 | 0x1680 | 0x205f => false,
        0xd800..=0xdfff | 0xfff9..=0xfffb => false,
        _ => !r.is_control(),
    }
}

/// Go's `%q` of a byte slice: a double-quoted Go string literal, with
/// invalid UTF-8 bytes as `\xNN`.
pub(super) fn go_quote_bytes(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in b.utf8_chunks() {
        for r in chunk.valid().chars() {
            go_quote_rune(&mut out, r);
        }
        for &bad in chunk.invalid() {
            let _ = write!(out, "\\x{bad:02x}");
        }
    }
    out.push('"');
    out
}

/// The value of a JSON string literal (with its quotes), decoded as Go
/// does: escapes resolved, invalid UTF-8 and unpaired surrogates replaced
/// by U+FFFD. The input must be a complete, valid literal.
pub(super) fn unquote(lit: &[u8]) -> String {
    let inner = lit.get(1..lit.len().saturating_sub(1)).unwrap_or_default();
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&c) = inner.get(i) {
        if c == b'\\' {
            let Some(&e) = inner.get(i + 1) else { break };
            i += 2;
            match e {
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let Some(hi) = hex4(inner.get(i..i + 4)) else {
                        out.push('\u{fffd}');
                        continue;
                    };
                    i += 4;
                    if (0xd800..0xdc00).contains(&hi) {
                        // A high surrogate counts only with a low one right
                        // after it; otherwise it alone becomes U+FFFD.
                        let lo = (inner.get(i) == Some(&b'\\') && inner.get(i + 1) == Some(&b'u'))
                            .then(|| hex4(inner.get(i + 2..i + 6)))
                            .flatten()
                            .filter(|lo| (0xdc00..0xe000).contains(lo));
                        if let Some(lo) = lo {
                            i += 6;
                            let cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                            out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                        } else {
                            out.push('\u{fffd}');
                        }
                    } else {
                        out.push(char::from_u32(hi).unwrap_or('\u{fffd}'));
                    }
                }
                // `\\`, `\/`, `\"`
                other => out.push(char::from(other)),
            }
            continue;
        }
        // Copy the run up to the next escape, repairing invalid UTF-8.
        let rest = inner.get(i..).unwrap_or_default();
        let run = rest.split(|&b| b == b'\\').next().unwrap_or_default();
        for chunk in run.utf8_chunks() {
            out.push_str(chunk.valid());
            for _ in chunk.invalid() {
                out.push('\u{fffd}');
            }
        }
        i += run.len();
    }
    out
}

fn hex4(b: Option<&[u8]>) -> Option<u32> {
    let b = b?;
    let s = std::str::from_utf8(b).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Go's `base64.StdEncoding.Decode` (what `encoding/json` uses for
/// `[]byte`): padding required, `\r` and `\n` skipped anywhere, and the
/// same error offsets ("illegal base64 data at input byte N").
pub(super) fn base64_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let corrupt = |at: usize| Err(format!("illegal base64 data at input byte {at}"));
    let skip_newlines = |mut i: usize| {
        while let Some(b'\n' | b'\r') = src.get(i) {
            i += 1;
        }
        i
    };
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    loop {
        // One quantum: up to four symbols.
        let mut sym = [0u32; 4];
        let mut len = 4;
        let mut j = 0;
        let mut done = false;
        while j < 4 {
            let Some(&c) = src.get(si) else {
                if j == 0 {
                    return Ok(out);
                }
                // Input ends inside a quantum: padding was required.
                return corrupt(si - j);
            };
            si += 1;
            if let Some(v) = value(c)
                && let Some(slot) = sym.get_mut(j)
            {
                *slot = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return corrupt(si - 1);
            }
            // Padding: only after two or three symbols.
            match j {
                0 | 1 => return corrupt(si - 1),
                2 => {
                    si = skip_newlines(si);
                    match src.get(si) {
                        None => return corrupt(src.len()),
                        Some(b'=') => si += 1,
                        Some(_) => return corrupt(si - 1),
                    }
                }
                _ => {}
            }
            si = skip_newlines(si);
            if si < src.len() {
                // Nothing may follow the padding.
                return corrupt(si);
            }
            len = j;
            done = true;
            break;
        }
        let v = (sym[0] << 18) | (sym[1] << 12) | (sym[2] << 6) | sym[3];
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        // `len` is 2, 3 or 4 symbols: 1, 2 or 3 bytes.
        out.extend_from_slice(bytes.get(..len - 1).unwrap_or_default());
        if done {
            return Ok(out);
        }
    }
}

/// serde_json output with Go's escaping, so strings in responses read as
/// etcd writes them: `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes, and
/// backspace and form feed as `\u0008` and `\u000c`.
pub(super) struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()>
    where
        W: ?Sized + std::io::Write,
    {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let esc = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            // `start` and `i` are char boundaries of `fragment`.
            w.write_all(fragment.get(start..i).unwrap_or_default().as_bytes())?;
            w.write_all(esc.as_bytes())?;
            start = i + ch.len_utf8();
        }
        w.write_all(fragment.get(start..).unwrap_or_default().as_bytes())
    }

    fn write_char_escape<W>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()>
    where
        W: ?Sized + std::io::Write,
    {
        use serde_json::ser::CharEscape;
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(c) => return write!(w, "\\u{:04x}", c),
        };
        w.write_all(s)
    }
}

/// Serializes `v` the way etcd's gateway prints it.
pub(super) fn to_vec<T: serde::Serialize + ?Sized>(v: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    v.serialize(&mut ser)?;
    Ok(out)
}

/// Writes `s` as a JSON string literal with Go's escaping.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter);
    let _ = serde::Serialize::serialize(s, &mut ser);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_error(doc: &str) -> String {
        check_document(doc.as_bytes()).unwrap_err()
    }

    #[test]
    fn syntax_errors_read_like_go() {
        assert_eq!(
            first_error("{bad"),
            "invalid character 'b' looking for beginning of object key string"
        );
        assert_eq!(
            first_error(r#"{"key":"Zm9v",}"#),
            "invalid character '}' looking for beginning of object key string"
        );
        assert_eq!(
            first_error("abc"),
            "invalid character 'a' looking for beginning of value"
        );
        assert_eq!(
            first_error("0x10"),
            "invalid character 'x' after top-level value"
        );
        assert_eq!(
            first_error("1 2"),
            "invalid character '2' after top-level value"
        );
        assert_eq!(first_error(""), "unexpected end of JSON input");
        assert_eq!(first_error("[1"), "unexpected end of JSON input");
        assert_eq!(
            first_error(r#"{"a" 1}"#),
            "invalid character '1' after object key"
        );
        assert_eq!(
            first_error(r#"{"a":1 "b"}"#),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(
            first_error("[1 2]"),
            "invalid character '2' after array element"
        );
        assert_eq!(
            first_error("tru "),
            "invalid character ' ' in literal true (expecting 'e')"
        );
        // At the end, Go feeds a space: a cut literal or number reports it.
        assert_eq!(
            first_error("nul"),
            "invalid character ' ' in literal null (expecting 'l')"
        );
        assert_eq!(first_error("-"), "invalid character ' ' in numeric literal");
        assert_eq!(
            first_error("-x"),
            "invalid character 'x' in numeric literal"
        );
        assert_eq!(
            first_error("1.x"),
            "invalid character 'x' after decimal point in numeric literal"
        );
        assert_eq!(
            first_error("1ex"),
            "invalid character 'x' in exponent of numeric literal"
        );
        assert_eq!(
            first_error("\"\\x\""),
            "invalid character 'x' in string escape code"
        );
        assert_eq!(
            first_error("\"\\u12g4\""),
            "invalid character 'g' in \\u hexadecimal character escape"
        );
        assert_eq!(
            first_error("\"a\nb\""),
            "invalid character '\\n' in string literal"
        );
        assert_eq!(
            first_error("'"),
            "invalid character '\\'' looking for beginning of value"
        );
        assert_eq!(
            first_error("\u{e9}"),
            "invalid character '\u{c3}' looking for beginning of value"
        );
        assert_eq!(
            first_error("\u{1}"),
            "invalid character '\\x01' looking for beginning of value"
        );
        let deep = "[".repeat(MAX_NESTING + 1);
        assert_eq!(
            first_error(&deep),
            "invalid character '[' exceeded max depth"
        );
        assert!(check_document(b" {\"a\":[1,-0.5e+3,true,false,null,\"x\\u00e9\"]} ").is_ok());
    }

    #[test]
    fn unquote_repairs_like_go() {
        assert_eq!(unquote(br#""a\u005a\n""#), "aZ\n");
        assert_eq!(unquote(br#""\ud83d\ude00""#), "\u{1f600}");
        assert_eq!(unquote(br#""\ud83dx""#), "\u{fffd}x");
        assert_eq!(unquote(b"\"a\xffb\""), "a\u{fffd}b");
        assert_eq!(unquote(br#""\/\\\"""#), "/\\\"");
    }

    #[test]
    fn base64_matches_go_std_encoding() {
        assert_eq!(base64_decode(b"Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode(b"Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode(b"Zg==").unwrap(), b"f");
        assert_eq!(base64_decode(b"Zm\n9v\r\n").unwrap(), b"foo");
        assert_eq!(base64_decode(b"").unwrap(), b"");
        let err = |s: &[u8]| base64_decode(s).unwrap_err();
        assert_eq!(err(b"Zm9"), "illegal base64 data at input byte 0");
        assert_eq!(err(b"Zm9v=="), "illegal base64 data at input byte 4");
        assert_eq!(err(b"Zm-v"), "illegal base64 data at input byte 2");
        assert_eq!(err(b"Zg="), "illegal base64 data at input byte 3");
        assert_eq!(err(b"Zg=x"), "illegal base64 data at input byte 2");
        assert_eq!(err(b"Zm8=Zm8="), "illegal base64 data at input byte 4");
        assert_eq!(err(b"Z==="), "illegal base64 data at input byte 1");
    }

    #[test]
    fn output_escapes_like_go() {
        let v = serde_json::json!({"s": "<a&b>\u{8}\u{c}\u{1}\n\u{2028}é"});
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            r#"{"s":"\u003ca\u0026b\u003e\u0008\u000c\u0001\n\u2028é"}"#
        );
    }

    #[test]
    fn quotes_bytes_like_go() {
        assert_eq!(go_quote_bytes(b"FOO"), "\"FOO\"");
        assert_eq!(
            go_quote_bytes(b"a\"b\\\x01\xff"),
            "\"a\\\"b\\\\\\x01\\xff\""
        );
    }
}
