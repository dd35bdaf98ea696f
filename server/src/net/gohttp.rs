//! Go's `net/http` and `net/url` behaviour that etcd's HTTP surfaces show
//! clients, in one place for the JSON gateway and the v2 API: path cleaning
//! and the redirect `ServeMux` answers with, URL escaping and unescaping,
//! and `strconv.Quote` for error texts.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// `ServeMux`'s `cleanPath`: `path.Clean`, keeping a trailing slash.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(p.len() + 1);
    for s in &parts {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (p.ends_with('/') && !parts.is_empty()) {
        out.push('/');
    }
    out
}

/// `url.URL{Path: p}.EscapedPath()`: RFC 3986 path escaping as Go does it
/// (`shouldEscape` in path mode). A `\`, a control character or anything
/// non-ASCII is escaped, so a cleaned path can never read as another host.
pub fn escape_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Go's `unescape`: `%XX` resolved (query mode also turns `+` into a
/// space); a malformed escape is an error naming it. Invalid UTF-8 is
/// replaced, as Go's JSON encoder would do on the way out.
pub fn unescape(s: &str, query: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = |c: u8| char::from(c).to_digit(16);
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(b.len());
                        let bad = String::from_utf8_lossy(b.get(i..end).unwrap_or_default());
                        return Err(format!("invalid URL escape {}", go_quote(&bad)));
                    }
                }
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A close enough `strconv.Quote` for error causes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `ServeMux`'s answer to an unclean path: 301 to the cleaned path,
/// escaped, with the raw query kept. The location is always a path on this
/// host: `clean_path` leaves no `//` at its start and `escape_path` leaves
/// no `\` or control character a browser could read as another host.
/// Go's `http.Redirect` adds a small HTML body for GET and HEAD (HEAD
/// sends its length only).
pub fn redirect_to_clean(clean: &str, query: Option<&str>, method: &Method) -> Response {
    let mut location = escape_path(clean);
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    let body = if *method == Method::GET || *method == Method::HEAD {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let href = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        format!("<a href=\"{href}\">Moved Permanently</a>.\n\n")
    } else {
        String::new()
    };
    let mut resp = Response::new(if *method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body.clone())
    });
    if *method == Method::HEAD {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_is_serve_muxs() {
        for (p, want) in [
            ("/v3//kv/range", "/v3/kv/range"),
            ("/v3/kv/../kv/./range", "/v3/kv/range"),
            ("/v3/kv/range/", "/v3/kv/range/"),
            ("/v3/", "/v3/"),
            ("/../v3", "/v3"),
            ("/v2/keys//a//", "/v2/keys/a/"),
            ("/v2/keys/x/../../../0/members", "/0/members"),
            ("/v2/keys/..", "/v2"),
            ("/..", "/"),
            ("", "/"),
            ("//evil.example/", "/evil.example/"),
        ] {
            assert_eq!(clean_path(p), want, "{p:?}");
        }
    }

    #[test]
    fn escaping_is_gos() {
        assert_eq!(escape_path("/sp ace/é"), "/sp%20ace/%C3%A9");
        assert_eq!(escape_path("/a$b&c+d,e:f;g=h@i"), "/a$b&c+d,e:f;g=h@i");
        assert_eq!(escape_path("/q?x#y"), "/q%3Fx%23y");
        assert_eq!(unescape("/a%2Fb+c", false).unwrap(), "/a/b+c");
        assert_eq!(unescape("a+b", true).unwrap(), "a b");
        assert_eq!(
            unescape("/%zz", false),
            Err("invalid URL escape \"%zz\"".to_string())
        );
        assert_eq!(
            unescape("%", false),
            Err("invalid URL escape \"%\"".to_string())
        );
    }

    /// `GET /v3/../%5Cevil.example/` once answered `Location:
    /// /\evil.example/`, which browsers follow to evil.example.
    #[test]
    fn redirects_stay_on_this_host() {
        for decoded in [
            "/v3/../\\evil.example/",
            "/v3/../\tevil.example/",
            "/x/..//evil.example/",
        ] {
            let resp = redirect_to_clean(&clean_path(decoded), None, &Method::GET);
            let loc = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert!(loc.starts_with('/') && !loc.starts_with("//"), "{loc}");
            assert!(!loc.contains('\\') && !loc.contains('\t'), "{loc}");
        }
        let resp = redirect_to_clean("/v3/kv/", Some("a=b"), &Method::POST);
        assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(resp.headers()[header::LOCATION], "/v3/kv/?a=b");
    }
}
