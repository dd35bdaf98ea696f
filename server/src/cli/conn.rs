//! How the admin tools (`cairn plugin`, `cairn config status`) reach a
//! cluster, with etcdctl's connection flags and environment: `--endpoints`
//! (`ETCDCTL_ENDPOINTS`), `--cacert`/`--cert`/`--key` (`ETCDCTL_CACERT`,
//! `ETCDCTL_CERT`, `ETCDCTL_KEY`), `--user NAME[:PASSWORD]` with
//! `--password` (`ETCDCTL_USER`, `ETCDCTL_PASSWORD`), plus `--auth-token`
//! for a token already in hand. Requests are bounded HTTP/1.1 exchanges over
//! TCP or TLS, tried on each endpoint in turn until one answers.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response read.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;
const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

/// The connection flags, as read from argv (`None`: not given).
#[derive(Debug, Default)]
pub struct ConnFlags {
    pub endpoints: Option<String>,
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub auth_token: Option<String>,
}

pub struct Conn {
    endpoints: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    user: Option<(String, String)>,
    /// The token sent as `Authorization`: `--auth-token`, or the one
    /// `--user` got from the first endpoint that answered.
    token: OnceLock<Option<String>>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Conn {
    /// Flags win over `ETCDCTL_*` variables, as in etcdctl.
    pub fn new(f: ConnFlags) -> Result<Conn, String> {
        let endpoints = f
            .endpoints
            .or_else(|| env("ETCDCTL_ENDPOINTS"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let cacert = f.cacert.or_else(|| env("ETCDCTL_CACERT"));
        let cert = f.cert.or_else(|| env("ETCDCTL_CERT"));
        let key = f.key.or_else(|| env("ETCDCTL_KEY"));
        let cert_key = match (&cert, &key) {
            (Some(c), Some(k)) => Some((std::path::Path::new(c), std::path::Path::new(k))),
            (None, None) => None,
            _ => return Err("--cert and --key go together".into()),
        };
        let wants_tls = cacert.is_some() || cert_key.is_some();
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_owned()
                } else if wants_tls {
                    // etcdctl dials a bare host:port with TLS when given
                    // TLS files.
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err("--endpoints names no endpoint".into());
        }
        if let Some(bad) = endpoints
            .iter()
            .find(|e| !e.starts_with("http://") && !e.starts_with("https://"))
        {
            return Err(format!(
                "endpoint {bad}: only http:// and https:// are supported"
            ));
        }
        let tls = if wants_tls || endpoints.iter().any(|e| e.starts_with("https://")) {
            Some(crate::tls::cli_client_config(
                cacert.as_deref().map(std::path::Path::new),
                cert_key,
            )?)
        } else {
            None
        };
        let user = match f.user.or_else(|| env("ETCDCTL_USER")) {
            None => None,
            Some(u) => {
                let (name, password) = match u.split_once(':') {
                    Some((n, p)) => (n.to_owned(), p.to_owned()),
                    None => (
                        u,
                        f.password
                            .or_else(|| env("ETCDCTL_PASSWORD"))
                            .ok_or("--user NAME needs :PASSWORD or --password")?,
                    ),
                };
                Some((name, password))
            }
        };
        if user.is_some() && f.auth_token.is_some() {
            return Err("give --user or --auth-token, not both".into());
        }
        let token = OnceLock::new();
        if let Some(t) = f.auth_token {
            let _ = token.set(Some(t));
        } else if user.is_none() {
            let _ = token.set(None);
        }
        Ok(Conn {
            endpoints,
            tls,
            user,
            token,
        })
    }

    /// One request, on the first endpoint that answers: (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        read_timeout: Duration,
    ) -> Result<(u16, String), String> {
        let mut last = String::from("no endpoints");
        for ep in &self.endpoints {
            let token = match self.token_via(ep) {
                Ok(t) => t,
                Err(e) => {
                    last = format!("{ep}: {e}");
                    continue;
                }
            };
            match self.exchange(ep, method, path, body, token.as_deref(), read_timeout) {
                Ok(answer) => return Ok(answer),
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        Err(format!("cannot reach any endpoint ({last})"))
    }

    /// The token to send: `--user`'s is fetched once, from `ep`.
    fn token_via(&self, ep: &str) -> Result<Option<String>, String> {
        if let Some(t) = self.token.get() {
            return Ok(t.clone());
        }
        let Some((name, password)) = &self.user else {
            return Ok(None);
        };
        let body = serde_json::json!({ "name": name, "password": password }).to_string();
        let (status, text) = self
            .exchange(
                ep,
                "POST",
                "/v3/auth/authenticate",
                Some(&body),
                None,
                CONNECT_TIMEOUT * 3,
            )
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status != 200 {
            let msg = v["error"]
                .as_str()
                .or_else(|| v["message"].as_str())
                .unwrap_or(text.trim());
            return Err(format!("authentication failed: {msg}"));
        }
        let token = v["token"]
            .as_str()
            .ok_or("authentication returned no token (is auth enabled?)")?
            .to_owned();
        let _ = self.token.set(Some(token));
        Ok(self.token.get().cloned().flatten())
    }

    fn exchange(
        &self,
        endpoint: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
        read_timeout: Duration,
    ) -> std::io::Result<(u16, String)> {
        let url = url::Url::parse(endpoint)
            .map_err(|e| std::io::Error::other(format!("bad endpoint: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| std::io::Error::other("endpoint has no host"))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(2379);
        let hostport = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        tcp.set_read_timeout(Some(read_timeout))?;
        tcp.set_write_timeout(Some(read_timeout))?;
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: {t}\r\n"));
        }
        head.push_str("\r\n");
        let raw = if url.scheme() == "https" {
            let config = self
                .tls
                .clone()
                .ok_or_else(|| std::io::Error::other("no TLS settings"))?;
            let name = rustls::pki_types::ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
            .map_err(|e| std::io::Error::other(format!("{host:?}: {e}")))?;
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            send_and_read(&mut tls, &head, body)?
        } else {
            let mut tcp = tcp;
            send_and_read(&mut tcp, &head, body)?
        };
        parse_response(&raw)
    }
}

fn send_and_read<S: Read + Write>(s: &mut S, head: &str, body: &str) -> std::io::Result<Vec<u8>> {
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()?;
    let mut buf = Vec::new();
    // A TLS server may close without close_notify; what arrived counts.
    if let Err(e) = s.take(MAX_RESPONSE_BYTES).read_to_end(&mut buf)
        && (buf.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(e);
    }
    Ok(buf)
}

fn parse_response(buf: &[u8]) -> std::io::Result<(u16, String)> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut payload = buf[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP status line"))?;
    if head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    }) {
        payload = dechunk(&payload)?;
    }
    Ok((status, String::from_utf8_lossy(&payload).into_owned()))
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::other("malformed chunked body");
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain).unwrap(), (200, "ok".into()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, "abcde".into()));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn bare_endpoints_take_the_scheme_the_flags_imply() {
        let c = Conn::new(ConnFlags {
            endpoints: Some("127.0.0.1:1, http://127.0.0.2:2".into()),
            ..ConnFlags::default()
        })
        .unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:1", "http://127.0.0.2:2"]);
        assert!(
            Conn::new(ConnFlags {
                endpoints: Some("unix://x".into()),
                ..ConnFlags::default()
            })
            .is_err()
        );
        assert!(
            Conn::new(ConnFlags {
                cert: Some("/x.crt".into()),
                ..ConnFlags::default()
            })
            .is_err()
        );
        assert!(
            Conn::new(ConnFlags {
                user: Some("root".into()),
                ..ConnFlags::default()
            })
            .err()
            .is_some_and(|e| e.contains("--password"))
                || std::env::var_os("ETCDCTL_PASSWORD").is_some()
        );
    }
}
