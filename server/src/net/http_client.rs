//! A minimal, bounded HTTP/1.1 GET for talking to other members' HTTP
//! endpoints (joining a cluster), over plain TCP or TLS, or a unix socket
//! (`unix://` and `unixs://` peer URLs, see `tls::connect`).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(3);
const MAX_RESPONSE: u64 = 4 << 20;

/// GET `base` + `path`; returns the response headers and body on a 200.
pub async fn get(base: &str, path: &str) -> std::io::Result<(Vec<(String, String)>, String)> {
    get_tls(base, path, None).await
}

/// As [`get`]; an `https://` base is dialed with TLS, using the peer TLS
/// client configuration (`peer_tls`; system roots and no client certificate
/// without it).
pub async fn get_tls(
    base: &str,
    path: &str,
    peer_tls: Option<&crate::tls::ReloadableTlsConfig>,
) -> std::io::Result<(Vec<(String, String)>, String)> {
    tokio::time::timeout(TIMEOUT, get_inner(base, path, peer_tls))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

async fn get_inner(
    base: &str,
    path: &str,
    peer_tls: Option<&crate::tls::ReloadableTlsConfig>,
) -> std::io::Result<(Vec<(String, String)>, String)> {
    if let Some((scheme @ ("unix" | "unixs"), rest)) = base.split_once("://") {
        let hostport = rest.trim_end_matches('/');
        let config = if scheme == "unixs" {
            let config =
                crate::tls::connect::peer_client_config(peer_tls).map_err(std::io::Error::other)?;
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(std::sync::Arc::new(config))
        } else {
            None
        };
        let stream = crate::tls::connect::connect_unix(config, hostport).await?;
        return exchange(stream, hostport, path).await;
    }
    if base.starts_with("https://") {
        let url = url::Url::parse(base)
            .map_err(|e| std::io::Error::other(format!("bad URL {base}: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| std::io::Error::other(format!("no host in {base}")))?
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let config =
            crate::tls::connect::peer_client_config(peer_tls).map_err(std::io::Error::other)?;
        // This request speaks HTTP/1.1; the shared configuration offers h2.
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let stream = crate::tls::connect::connect(std::sync::Arc::new(config), &host, port).await?;
        let hostport = base.trim_start_matches("https://").trim_end_matches('/');
        return exchange(stream, hostport, path).await;
    }
    let hostport = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let s = tokio::net::TcpStream::connect(&hostport).await?;
    exchange(s, &hostport, path).await
}

/// Sends the request on `s` and reads the whole (bounded) response.
async fn exchange<S>(
    mut s: S,
    hostport: &str,
    path: &str,
) -> std::io::Result<(Vec<(String, String)>, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    // A TLS peer may end without close_notify; what arrived still counts.
    if let Err(e) = (&mut s).take(MAX_RESPONSE).read_to_end(&mut buf).await
        && (buf.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(e);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(status.to_string()));
    }
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((headers, body.to_string()))
}
