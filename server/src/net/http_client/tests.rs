//! The client against real loopback servers: raw TCP ones that answer what
//! a test scripts (so the bytes on the wire are the test's), a TLS one, and
//! a CONNECT proxy in front of it.

use super::*;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const SHORT: Duration = Duration::from_secs(5);

fn client() -> Client {
    Client::new(SHORT, 1 << 20)
}

/// Reads one request head (up to the blank line) from `s`.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = s.read_u8().await.expect("request head");
        head.push(b);
    }
    String::from_utf8(head).expect("UTF-8 head")
}

/// Answers one request on `s` with `reply`; returns the request head.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, reply: &[u8]) -> String {
    let head = read_head(s).await;
    s.write_all(reply).await.expect("reply");
    s.flush().await.expect("flush");
    head
}

/// A server that answers one connection's request with `reply` and hands
/// back what it received.
async fn serve_once(reply: &'static [u8]) -> (Url, JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = Url::parse(&format!("http://{}", l.local_addr().expect("addr"))).expect("url");
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let head = answer(&mut s, reply).await;
        // Let the client read the rest before the socket goes.
        let _ = s.read(&mut [0u8; 1]).await;
        head
    });
    (url, task)
}

#[tokio::test]
async fn status_headers_and_body_come_back_as_sent() {
    let (base, server) =
        serve_once(b"HTTP/1.1 404 Not Found\r\nX-Etcd-Index: 42\r\nContent-Length: 5\r\n\r\nnope!")
            .await;
    let url = base.join("/v2/keys/d?wait=true&recursive=true").unwrap();
    let resp = client()
        .send(
            Request::new(http::Method::PUT, &url).body("application/x-www-form-urlencoded", "v=1"),
            SHORT,
        )
        .await
        .expect("a 404 is an answer");
    assert_eq!(resp.status, http::StatusCode::NOT_FOUND);
    assert_eq!(resp.header("x-etcd-index"), Some("42"));
    assert_eq!(resp.text(), "nope!");
    let head = server.await.unwrap();
    assert!(
        head.starts_with("PUT /v2/keys/d?wait=true&recursive=true HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    let authority = base.authority().to_owned();
    assert!(lower.contains(&format!("host: {authority}\r\n")), "{head}");
    assert!(
        lower.contains("content-type: application/x-www-form-urlencoded\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn chunked_bodies_are_reassembled() {
    let (base, server) = serve_once(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    let url = base.join("/members").unwrap();
    let resp = client()
        .send(Request::new(http::Method::GET, &url), SHORT)
        .await
        .expect("answer");
    assert_eq!(resp.status, http::StatusCode::OK);
    assert_eq!(resp.text(), "abcde");
    server.await.unwrap();
}

#[tokio::test]
async fn a_response_over_the_limit_is_refused() {
    // Declared too large, and too large though undeclared (chunked).
    let declared: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    let chunked: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n\
        0123456789012345678901234567890123456789012345678901234567890123\r\n0\r\n\r\n";
    for reply in [declared, chunked] {
        let (base, server) = serve_once(reply).await;
        let err = Client::new(SHORT, 50)
            .send(Request::new(http::Method::GET, &base), SHORT)
            .await
            .expect_err("over the limit");
        assert!(matches!(err, HttpClientError::TooLarge(50)), "{err:?}");
        assert_eq!(err.to_string(), "the response is larger than 50 bytes");
        server.abort();
    }
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = Url::parse(&format!("http://{}/members", l.local_addr().unwrap())).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let _ = read_head(&mut s).await;
        // Answers the headers, never the body.
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let started = std::time::Instant::now();
    let err = client()
        .send(
            Request::new(http::Method::GET, &url),
            Duration::from_millis(300),
        )
        .await
        .expect_err("no complete answer");
    assert!(matches!(err, HttpClientError::TimedOut(_)), "{err:?}");
    assert_eq!(err.to_string(), "no answer within 300ms");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.abort();
}

#[tokio::test]
async fn refused_connections_and_bad_urls_are_clear() {
    // A port nothing listens on: bind one, then let it go.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let err = client()
        .send(Request::new(http::Method::GET, &url), SHORT)
        .await
        .expect_err("refused");
    assert!(matches!(err, HttpClientError::Connect(_)), "{err:?}");
    assert!(err.to_string().starts_with("connect: "), "{err}");

    let ftp = Url::parse("ftp://127.0.0.1:1/").unwrap();
    let err = client()
        .send(Request::new(http::Method::GET, &ftp), SHORT)
        .await
        .expect_err("scheme");
    assert!(err.to_string().contains("unsupported scheme"), "{err}");

    // https without TLS settings is refused before any byte is sent.
    let (base, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let https = Url::parse(&format!("https://{}/", base.authority())).unwrap();
    let err = client()
        .send(Request::new(http::Method::GET, &https), SHORT)
        .await
        .expect_err("no TLS settings");
    assert!(matches!(err, HttpClientError::NoTls), "{err:?}");
    server.abort();
}

#[tokio::test]
async fn plain_http_through_a_proxy_goes_in_absolute_form() {
    // The "proxy" answers itself, as a caching proxy might.
    let (proxy, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let mut proxy = proxy;
    proxy.set_username("user").unwrap();
    proxy.set_password(Some("p%40ss")).unwrap();
    let url = Url::parse("http://discovery.example:2379/v2/keys/x?a=b").unwrap();
    let resp = client()
        .proxy(proxy)
        .send(Request::new(http::Method::GET, &url), SHORT)
        .await
        .expect("answer");
    assert_eq!(resp.text(), "ok");
    let head = server.await.unwrap();
    assert!(
        head.starts_with("GET http://discovery.example:2379/v2/keys/x?a=b HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("host: discovery.example:2379\r\n"), "{head}");
    // base64("user:p@ss")
    assert!(
        lower.contains("proxy-authorization: basic dxnlcjpwqhnz\r\n"),
        "{head}"
    );
}

#[test]
fn proxy_credentials_become_basic_auth() {
    let p = Url::parse("http://user:p%40ss@proxy:3128").unwrap();
    // base64("user:p@ss")
    assert_eq!(
        proxy_authorization(&p).as_deref(),
        Some("Basic dXNlcjpwQHNz")
    );
    assert_eq!(
        proxy_authorization(&Url::parse("http://proxy:3128").unwrap()),
        None
    );
}

/// A TLS server for `127.0.0.1` (certificate from a fresh test CA) that
/// answers one request with `reply`; its URL and the client configuration
/// that trusts it.
async fn tls_server(
    reply: &'static [u8],
) -> (
    std::net::SocketAddr,
    rustls::ClientConfig,
    JoinHandle<String>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = cairn_test_pki::Ca::new("http-client-test-ca");
    let leaf = ca.issue("server", &["127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let task = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("TLS accept");
        let head = answer(&mut tls, reply).await;
        let _ = tls.read(&mut [0u8; 1]).await;
        head
    });
    (addr, client, task)
}

#[tokio::test]
async fn https_direct_and_through_a_connect_tunnel() {
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret";
    // Direct.
    let (addr, config, server) = tls_server(REPLY).await;
    let url = Url::parse(&format!("https://{addr}/members")).unwrap();
    let resp = client()
        .tls(&config)
        .send(Request::new(http::Method::GET, &url), SHORT)
        .await
        .expect("https answer");
    assert_eq!(resp.text(), "secret");
    assert!(
        server
            .await
            .unwrap()
            .starts_with("GET /members HTTP/1.1\r\n")
    );

    // Through a proxy: CONNECT, then TLS end to end with the server.
    let (addr, config, server) = tls_server(REPLY).await;
    let proxy_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Url::parse(&format!("http://{}", proxy_l.local_addr().unwrap())).unwrap();
    let proxy_task = tokio::spawn(async move {
        let (mut s, _) = proxy_l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        let mut up = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
        head
    });
    let url = Url::parse(&format!("https://{addr}/v2/keys/d")).unwrap();
    let resp = client()
        .tls(&config)
        .proxy(proxy)
        .send(Request::new(http::Method::GET, &url), SHORT)
        .await
        .expect("https answer through the tunnel");
    assert_eq!(resp.text(), "secret");
    // The server saw an origin-form request; the proxy only the CONNECT.
    assert!(
        server
            .await
            .unwrap()
            .starts_with("GET /v2/keys/d HTTP/1.1\r\n")
    );
    let connect = proxy_task.await.unwrap();
    assert!(
        connect.starts_with(&format!("CONNECT {addr} HTTP/1.1\r\n")),
        "{connect}"
    );
}

#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_reported() {
    let (proxy, server) = serve_once(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
    let url = Url::parse("https://127.0.0.1:1/").unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let err = client()
        .tls(&config)
        .proxy(proxy)
        .send(Request::new(http::Method::GET, &url), SHORT)
        .await
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "proxy CONNECT: the proxy refused: 403 Forbidden"
    );
    assert!(
        server
            .await
            .unwrap()
            .starts_with("CONNECT 127.0.0.1:1 HTTP/1.1\r\n")
    );
}
