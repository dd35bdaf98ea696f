//! HTML building for the console: plain strings, every outside string
//! through [`esc`] (keys, values, member names, URLs, error texts — all of
//! it can come from a client or a peer), and the one page layout.

use super::session::Session;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A key (or other bytes) as a person reads it: the text when it is UTF-8
/// without control characters, else `0x` and its hex. Escaped.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => esc(s),
        _ => format!("0x{}", hex::encode(b)),
    }
}

/// A query parameter naming `key`: `key=…` for text keys, `hex=…` for the
/// others (a query string cannot carry arbitrary bytes as UTF-8).
pub fn key_param(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => format!("key={}", url_enc(s)),
        Err(_) => format!("hex={}", hex::encode(key)),
    }
}

/// Percent-encoding for a query value.
pub fn url_enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Unix nanoseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::logging::format::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A byte count for people: `1.5 MiB`.
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = None;
    for next in UNITS {
        if v.abs() < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = Some(next);
    }
    match unit {
        None => format!("{bytes} B"),
        Some(unit) => format!("{v:.1} {unit}"),
    }
}

/// The sections of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Cluster,
    Keys,
    Watch,
    Metrics,
    Plugins,
    Config,
    None,
}

/// The hidden form field every state-changing form carries.
pub fn csrf_field(s: &Session) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&s.csrf)
    )
}

/// A whole page: navigation, who is logged in, the auth-off warning, and
/// `body` (already escaped HTML).
pub fn page(s: &Session, title: &str, nav: Nav, body: &str) -> Response {
    page_with_status(StatusCode::OK, s, title, nav, body, "")
}

/// [`page`] with a status code and extra `<head>` content.
pub fn page_with_status(
    status: StatusCode,
    s: &Session,
    title: &str,
    nav: Nav,
    body: &str,
    head: &str,
) -> Response {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Cairn</title>
<link rel="stylesheet" href="/ui/assets/console.css">
<script src="/ui/assets/console.js" defer></script>
{head}
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<span class="brand">Cairn</span>
<nav aria-label="Console sections"><ul>"##,
        esc(title)
    );
    for (item, label, href) in [
        (Nav::Cluster, "Cluster", "/ui/"),
        (Nav::Keys, "Keys", "/ui/keys"),
        (Nav::Watch, "Watch", "/ui/watch"),
        (Nav::Metrics, "Metrics", "/ui/metrics"),
        (Nav::Plugins, "Plugins", "/ui/plugins"),
        (Nav::Config, "Configuration", "/ui/config"),
    ] {
        let current = if item == nav {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(out, r#"<li><a href="{href}"{current}>{label}</a></li>"#);
    }
    out.push_str("</ul></nav>");
    match &s.user {
        Some(user) => {
            let _ = write!(
                out,
                r#"<form class="who" method="post" action="/ui/logout">{}<span>Signed in as <strong>{}</strong></span> <button type="submit">Sign out</button></form>"#,
                csrf_field(s),
                esc(user)
            );
        }
        None if s.auth_enabled => {
            out.push_str(r#"<span class="who"><a href="/ui/login">Sign in</a></span>"#);
        }
        None => {}
    }
    out.push_str("</header>\n");
    if !s.auth_enabled {
        out.push_str(
            r#"<div class="banner danger" role="alert" id="auth-off"><strong>Authentication is off.</strong> Anyone who can reach this member's client port can read and change every key, here and through etcdctl. Turn it on with <code>etcdctl user add root</code> and <code>etcdctl auth enable</code>.</div>
"#,
        );
    }
    let _ = write!(out, "<main id=\"main\">\n<h1>{}</h1>\n", esc(title));
    out.push_str(body);
    out.push_str("\n</main>\n</body>\n</html>\n");
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        out,
    )
        .into_response()
}

/// An error box inside a page.
pub fn error_box(message: &str) -> String {
    format!(
        r#"<div class="banner danger" role="alert"><strong>Refused:</strong> {}</div>"#,
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain/key-1"), "plain/key-1");
    }

    #[test]
    fn binary_shows_as_hex_and_text_as_escaped_text() {
        assert_eq!(show_bytes(b"/a/<b>"), "/a/&lt;b&gt;");
        assert_eq!(show_bytes(&[0xff, 0x00, 0x41]), "0xff0041");
        assert_eq!(show_bytes(b"tab\there"), "0x7461620968657265");
    }

    #[test]
    fn key_params_round_trip_any_bytes() {
        assert_eq!(key_param(b"/a b&c"), "key=%2Fa+b%26c");
        assert_eq!(key_param(&[0xff, 0x01]), "hex=ff01");
    }

    #[test]
    fn utc_and_sizes() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(1_700_000_000 * 1_000_000_000 + 5),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
    }
}
