//! Health probing without etcdctl or a gRPC stack: etcd (and so Cairn) serves
//! `GET /health` over plain HTTP/1.1 on the client port, answering
//! `{"health":"true"}` once the member has a leader and can serve. A hand
//! written request over `TcpStream` keeps xtask free of HTTP dependencies.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What one member's client port said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `/health` answered `{"health":"true"}`.
    Healthy,
    /// `/health` answered, but not healthy (e.g. no leader yet).
    Unhealthy(String),
    /// The port accepts TCP but has no usable HTTP `/health` (not HTTP, 404,
    /// ...). Liveness then has to be judged some other way.
    NoHealthEndpoint(String),
    /// Nothing accepts connections on the port.
    Down(String),
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => write!(f, "healthy"),
            Health::Unhealthy(why) => write!(f, "unhealthy ({why})"),
            Health::NoHealthEndpoint(why) => write!(f, "port open, no /health ({why})"),
            Health::Down(why) => write!(f, "down ({why})"),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Enough for any /health answer; guards against a peer that never stops.
const MAX_REPLY: u64 = 64 * 1024;

/// Probes `GET http://<addr>/health`. Every step has a timeout, so a wedged
/// member costs at most a few seconds.
pub fn probe(addr: SocketAddr) -> Health {
    let mut stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(err) => return Health::Down(err.to_string()),
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    if let Err(err) = stream.write_all(request.as_bytes()) {
        return Health::NoHealthEndpoint(format!("write failed: {err}"));
    }
    let mut reply = Vec::new();
    // With `Connection: close` the server ends the reply by closing; a read
    // timeout after some bytes still leaves us a parseable answer.
    let read = stream.take(MAX_REPLY).read_to_end(&mut reply);
    if reply.is_empty() {
        let why = match read {
            Err(err) => format!("no reply: {err}"),
            Ok(_) => "connection closed without a reply".to_string(),
        };
        return Health::NoHealthEndpoint(why);
    }
    parse_reply(&reply)
}

/// `GET http://<addr><path>` for small plain-text or JSON answers
/// (`/metrics`, `/version`): the status code and the body, de-chunked.
/// Bounded like [`probe`].
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, &format!("GET {path} HTTP/1.1\r\n"), "")
}

/// `POST http://<addr><path>` with a JSON body (the `/v3/` gateway), like
/// [`get`].
pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    request(addr, &head, body)
}

/// Sends the request line and headers in `head`, ours, then `body`; reads
/// the status code and the de-chunked body.
fn request(addr: SocketAddr, head: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = format!("{head}Host: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n{body}");
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let read = stream.take(MAX_BODY).read_to_end(&mut reply);
    if reply.is_empty() {
        read?;
    }
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// Larger than any `/metrics` page a member serves.
const MAX_BODY: u64 = 4 << 20;

/// Undoes HTTP/1.1 chunked transfer encoding (best effort: stops at the
/// first malformed chunk).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let size = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        // Sizes count bytes; a cut that is not a char boundary means the
        // body is not what we think, so stop there.
        let (Some(chunk), Some(after)) = (rest.get(..size), rest.get(size..)) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(chunk);
        body = after.strip_prefix("\r\n").unwrap_or(after);
    }
    out
}

/// Interprets a raw HTTP/1.x reply to `GET /health`.
fn parse_reply(reply: &[u8]) -> Health {
    let text = String::from_utf8_lossy(reply);
    let Some(status_line) = text.lines().next() else {
        return Health::NoHealthEndpoint("empty reply".into());
    };
    // "HTTP/1.1 200 OK"
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next()) {
        (Some(proto), Some(code)) if proto.starts_with("HTTP/1.") => code.parse().unwrap_or(0u16),
        _ => return Health::NoHealthEndpoint("the reply is not HTTP/1".into()),
    };
    if code == 404 || code == 405 {
        return Health::NoHealthEndpoint(format!("HTTP {code}"));
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The body may be chunked; the JSON object itself is the part between
    // the first '{' and the last '}' either way.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => &body[start..=end],
        _ => return Health::Unhealthy(format!("HTTP {code}, body {:?}", body.trim())),
    };
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return Health::Unhealthy(format!("HTTP {code}, body {json:?}")),
    };
    // etcd sends the flag as a string ("true"); accept a JSON bool as well.
    let healthy = match &value["health"] {
        serde_json::Value::String(s) => s == "true",
        serde_json::Value::Bool(b) => *b,
        _ => false,
    };
    if healthy && code == 200 {
        Health::Healthy
    } else {
        let reason = value["reason"].as_str().filter(|r| !r.is_empty());
        Health::Unhealthy(match reason {
            Some(r) => format!("HTTP {code}: {r}"),
            None => format!("HTTP {code}, body {json}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_etcd_reply() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
                      Content-Length: 17\r\n\r\n{\"health\":\"true\"}";
        assert_eq!(parse_reply(reply), Health::Healthy);
    }

    #[test]
    fn chunked_healthy_reply() {
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      1c\r\n{\"health\":\"true\",\"reason\":\"\"}\r\n0\r\n\r\n";
        assert_eq!(parse_reply(reply), Health::Healthy);
    }

    #[test]
    fn no_leader_is_unhealthy() {
        let reply = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"health\":\"false\"}";
        assert!(matches!(parse_reply(reply), Health::Unhealthy(_)));
    }

    #[test]
    fn missing_endpoint() {
        let reply = b"HTTP/1.1 404 Not Found\r\n\r\n404 page not found\n";
        assert!(matches!(parse_reply(reply), Health::NoHealthEndpoint(_)));
    }

    #[test]
    fn chunked_body() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }

    #[test]
    fn not_http() {
        // What an HTTP/2-only (gRPC) listener sends back: a binary frame.
        let reply = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00";
        assert!(matches!(parse_reply(reply), Health::NoHealthEndpoint(_)));
    }
}
