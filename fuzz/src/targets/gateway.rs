//! The `/v3` JSON gateway's decoding (`api/gateway/`).
//!
//! Input: a selector byte (the request type, see
//! `fuzz_api::GATEWAY_REQUEST_TYPES`), a byte for the size of the body's
//! frames, then the body. Checks:
//! - every value the body reader (Go's `json.Decoder` rules) returns is a
//!   document Go's scanner accepts, and a request decoded from it survives a
//!   round trip through its JSON rendition (`fuzz_api::gateway_body`);
//! - Go's syntax check and `serde_json` agree on the whole body, except
//!   where Go is knowingly more lenient (invalid UTF-8 and lone surrogates
//!   in strings, numbers out of `f64` range, nesting past serde's limit);
//! - the body as base64 (Go's decoder the gateway uses for `bytes` fields):
//!   what decodes re-encodes to something that decodes to the same bytes;
//! - the body as a URL path: `%XX` unescaping then `path.Clean` gives a
//!   clean absolute path, and cleaning is idempotent.

use super::{Cursor, MIB};
use crate::engine::{Outcome, Target, feature, tag, with_count};
use cairn::fuzz_api;

pub const TARGET: Target = Target {
    name: "gateway-json",
    about: "/v3 gateway bodies: Go-style value reader, jsonpb decode + round trip, serde_json differential, base64, paths",
    run,
    dict: &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\"",
        b"\\u",
        b"\\ud800",
        b"null",
        b"true",
        b"false",
        b"-0",
        b"1e400",
        b"0.5",
        b"9223372036854775808",
        b"\"key\"",
        b"\"range_end\"",
        b"\"rangeEnd\"",
        b"\"limit\"",
        b"\"sort_order\"",
        b"\"DESCEND\"",
        b"\"compare\"",
        b"\"success\"",
        b"\"request_put\"",
        b"\"requestRange\"",
        b"\"target\"",
        b"\"VERSION\"",
        b"\"create_request\"",
        b"\"cancel_request\"",
        b"\"filters\"",
        b"\"NOPUT\"",
        b"\"ID\"",
        b"\"TTL\"",
        b"\"keys\"",
        b"\"peerURLs\"",
        b"\"name\"",
        b"\"password\"",
        b"\"perm\"",
        b"\"permType\"",
        b"\"READWRITE\"",
        b"\"AAAA\"",
        b"\"YQ==\"",
        b"==",
        b"\r\n",
        b"%2F",
        b"/../",
        b"/./",
        b"//",
        b"\xff",
        b"\xc3\xa9",
    ],
    max_len: 8192,
    heap_budget_bytes: 16 * MIB,
};

/// What serde_json may refuse that Go's scanner accepts.
const GO_IS_MORE_LENIENT: &[&str] = &[
    "recursion limit exceeded",
    "number out of range",
    "invalid unicode code point",
    "lone leading surrogate",
    // After a leading surrogate serde_json expects a trailing one.
    "unexpected end of hex escape",
];

fn run(data: &[u8]) -> Outcome {
    let mut c = Cursor::new(data);
    let selector = c.byte();
    let chunk = 1 + usize::from(c.byte());
    let body = c.rest();

    let decoded = fuzz_api::gateway_body(selector, body, chunk, 4096)?;

    let go = fuzz_api::gateway_check_document(body);
    let serde = serde_json::from_slice::<serde_json::Value>(body);
    match (&go, &serde) {
        (Err(g), Ok(_)) => {
            return Err(format!("serde_json accepts a document Go refuses ({g})"));
        }
        (Ok(()), Err(e)) => {
            let msg = e.to_string();
            let utf8 = std::str::from_utf8(body).is_err();
            if !utf8 && !GO_IS_MORE_LENIENT.iter().any(|m| msg.contains(m)) {
                return Err(format!("Go accepts a document serde_json refuses: {msg}"));
            }
        }
        _ => {}
    }

    if let Ok(bytes) = fuzz_api::gateway_base64(body) {
        let again = fuzz_api::gateway_base64(encode_base64(&bytes).as_bytes())
            .map_err(|e| format!("re-encoded base64 does not decode: {e}"))?;
        if again != bytes {
            return Err("base64 round trip changed the bytes".into());
        }
    }

    let text = String::from_utf8_lossy(body);
    let (_, cleaned) = fuzz_api::gateway_path(&text);
    if !cleaned.starts_with('/')
        || cleaned.contains("//")
        || cleaned.split('/').any(|s| s == "." || s == "..")
    {
        return Err(format!("path {text:?} cleaned to {cleaned:?}"));
    }
    let (_, twice) = fuzz_api::gateway_path(&cleaned);
    if twice != cleaned && !cleaned.contains('%') {
        return Err(format!("cleaning {cleaned:?} again gave {twice:?}"));
    }

    let go_word = match &go {
        Ok(()) => "valid".to_string(),
        Err(e) => e.clone(),
    };
    Ok(with_count(
        feature(&[&go_word, &tag((selector % 32).into())]),
        decoded,
    ))
}

fn encode_base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (u32::from(x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
