//! How the admin tools (`cairn plugin`, `cairn config status`) reach a
//! cluster, with etcdctl's connection flags and environment: `--endpoints`
//! (`ETCDCTL_ENDPOINTS`), `--cacert`/`--cert`/`--key` (`ETCDCTL_CACERT`,
//! `ETCDCTL_CERT`, `ETCDCTL_KEY`), `--user NAME[:PASSWORD]` with
//! `--password` (`ETCDCTL_USER`, `ETCDCTL_PASSWORD`), plus `--auth-token`
//! for a token already in hand. Requests go through the server's HTTP
//! client (`net::http_client`, bounded), tried on each endpoint in turn
//! until one answers. As in
//! etcdctl, `unix://host:port` and `unixs://host:port` endpoints reach the
//! socket file `host:port` in the working directory (with TLS for `unixs`).

use crate::net::http_client::{self, Request};
use std::sync::OnceLock;
use std::time::Duration;
use url::Url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A login's whole exchange.
const AUTH_TIMEOUT: Duration = Duration::from_secs(9);
/// Largest response read.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
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
    endpoints: Vec<Url>,
    http: http_client::Client,
    runtime: OnceLock<tokio::runtime::Runtime>,
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
        let scheme = |e: &str| e.split_once("://").map(|(s, _)| s.to_owned());
        if let Some(bad) = endpoints.iter().find(|e| {
            !matches!(
                scheme(e).as_deref(),
                Some("http" | "https" | "unix" | "unixs")
            )
        }) {
            return Err(format!(
                "endpoint {bad}: only http://, https://, unix:// and unixs:// are supported"
            ));
        }
        let secure = |e: &str| matches!(scheme(e).as_deref(), Some("https" | "unixs"));
        let mut http = http_client::Client::new(CONNECT_TIMEOUT, MAX_RESPONSE_BYTES);
        if wants_tls || endpoints.iter().any(|e| secure(e)) {
            http = http.tls(crate::tls::cli_client_config(
                cacert.as_deref().map(std::path::Path::new),
                cert_key,
            )?);
        }
        let endpoints = endpoints
            .iter()
            .map(|e| Url::parse(e).map_err(|err| format!("endpoint {e}: {err}")))
            .collect::<Result<Vec<_>, _>>()?;
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
            http,
            runtime: OnceLock::new(),
            user,
            token,
        })
    }

    /// One request, on the first endpoint that answers: (status, body).
    /// `timeout` bounds each endpoint's whole exchange.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let method = http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        self.runtime()?.block_on(async {
            let mut last = String::from("no endpoints");
            for ep in &self.endpoints {
                let token = match self.token_via(ep).await {
                    Ok(t) => t,
                    Err(e) => {
                        last = format!("{}: {e}", shown(ep));
                        continue;
                    }
                };
                match self
                    .exchange(ep, method.clone(), path, body, token.as_deref(), timeout)
                    .await
                {
                    Ok(answer) => return Ok(answer),
                    Err(e) => last = format!("{}: {e}", shown(ep)),
                }
            }
            Err(format!("cannot reach any endpoint ({last})"))
        })
    }

    /// The admin tools are synchronous; their requests run on a small
    /// current-thread runtime made at the first one.
    fn runtime(&self) -> Result<&tokio::runtime::Runtime, String> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    /// The token to send: `--user`'s is fetched once, from `ep`.
    async fn token_via(&self, ep: &Url) -> Result<Option<String>, String> {
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
                http::Method::POST,
                "/v3/auth/authenticate",
                Some(&body),
                None,
                AUTH_TIMEOUT,
            )
            .await?;
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

    async fn exchange(
        &self,
        endpoint: &Url,
        method: http::Method,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let url = endpoint
            .join(path)
            .map_err(|e| format!("bad path {path:?}: {e}"))?;
        let mut req = Request::new(method, &url);
        if let Some(b) = body {
            req = req.body("application/json", b.to_owned());
        }
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, t);
        }
        let resp = self
            .http
            .send(req, timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok((resp.status.as_u16(), resp.text()))
    }
}

/// An endpoint as the user wrote it (no `/` added by URL parsing).
fn shown(endpoint: &Url) -> &str {
    endpoint.as_str().trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_endpoints_take_the_scheme_the_flags_imply() {
        let c = Conn::new(ConnFlags {
            endpoints: Some("127.0.0.1:1, http://127.0.0.2:2".into()),
            ..ConnFlags::default()
        })
        .unwrap();
        let shown: Vec<&str> = c.endpoints.iter().map(shown).collect();
        assert_eq!(shown, ["http://127.0.0.1:1", "http://127.0.0.2:2"]);
        assert!(
            Conn::new(ConnFlags {
                endpoints: Some("tcp://x:1".into()),
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
