//! TLS for the client and peer listeners and for this member's connections
//! to its peers, with rustls (ring as the one crypto provider).
//!
//! Each side (clients, peers) has one [`ReloadableTlsConfig`]: the rustls
//! server configuration (and, for peers, the client configuration used to
//! dial other members) built from the side's certificate, key and CA
//! bundle, behind an `ArcSwap`. Every new handshake takes the current
//! configuration; a connection keeps the one it was accepted with, so
//! reloading never drops open connections.
//!
//! **Live reload.** The folders of the certificate, key and CA files are
//! watched (with a debounce, like the config files in `server::reload`),
//! polled once a minute as a backstop, and re-read on SIGHUP and
//! `POST /config/reload`. When their contents change the whole
//! configuration is rebuilt; if the new files do not load (a half-written
//! or garbage PEM, a key that does not match the certificate) the error is
//! logged, counted in `cairn_tls_reloads_total{result="failure"}`, and the
//! previous configuration stays in use. Unlike etcd, CA bundles are
//! reloaded too, not only leaf certificates.
//!
//! **Client identity.** On a TLS connection every HTTP request (and so
//! every gRPC request, whose extensions tonic passes through) carries a
//! [`PeerIdentity`] extension with the common name of the verified client
//! certificate, if the client presented one. With `--client-cert-auth` that
//! CN is the etcd user name (see `docs/configuration.md`, "TLS").
//!
//! **etcd's certificate rules** (`verify.rs`): a certificate of the trusted
//! CA bundle is accepted as a leaf, as Go does; `--peer-cert-allowed-cn`
//! and `--*-cert-allowed-hostname` check the leaf's names (in both
//! directions between peers, as etcd); `--*-crl-file` refuses revoked
//! serial numbers (`crl.rs`). The CRL file is watched and reloaded with
//! the other files. Every refused connection is logged with etcd's words,
//! rate-limited (`reject.rs`).

pub mod auto;
pub mod connect;
mod crl;
mod der;
mod reject;
mod verify;

pub use der::{subject_common_name, subject_public_key_info};

use crate::metrics::METRICS;
use arc_swap::ArcSwap;
use cairn_config::{TlsIdentity, TlsSettings, TlsSide};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// Largest certificate, key or CA bundle file read. A distribution's whole
/// CA bundle is about 200 KiB.
const MAX_PEM_FILE: u64 = 4 << 20;
/// A TLS handshake (client or server side) must finish within this long;
/// a client that opens a connection and says nothing is dropped after it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Quiet time after the last file event before re-reading the files.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A burst of events still triggers a re-read at least this often.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);
/// Files are also compared this often, in case an event was missed (or
/// the folders cannot be watched at all).
const POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Where distributions keep the system CA bundle: the roots for verifying
/// peers when `--peer-trusted-ca-file` is not given (Go's default too).
/// The variable Go reads the system CA bundle's path from.
const SSL_CERT_FILE_ENV: &str = "SSL_CERT_FILE";
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Who is at the other end of a TLS connection, attached to every HTTP
/// request served on it (`req.extensions().get::<PeerIdentity>()`; in a
/// tonic handler `request.extensions().get::<PeerIdentity>()`). Absent on
/// plain-text connections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// The subject common name of the client certificate that rustls
    /// verified against the trusted CA bundle; `None` when no certificate
    /// was requested or it has no CN.
    pub common_name: Option<String>,
}

/// The certificate, key, CA and CRL files one side is built from, with
/// the flag each came from (for error messages).
#[derive(Debug, Clone)]
struct Files {
    cert: (PathBuf, String),
    key: (PathBuf, String),
    ca: Option<(PathBuf, String)>,
    crl: Option<(PathBuf, String)>,
}

impl Files {
    /// The files the flags of `settings`' side name, each with its flag.
    fn configured(settings: &TlsSettings, cert_file: &Path, key_file: &Path) -> Files {
        let flags = settings.side.flags();
        Files {
            cert: (cert_file.to_path_buf(), format!("--{}", flags.cert_file)),
            key: (key_file.to_path_buf(), format!("--{}", flags.key_file)),
            ca: settings
                .trusted_ca_file
                .clone()
                .map(|p| (p, format!("--{}", flags.trusted_ca_file))),
            crl: settings
                .crl_file
                .clone()
                .map(|p| (p, format!("--{}", flags.crl_file))),
        }
    }

    fn paths(&self) -> Vec<&Path> {
        let mut out = vec![self.cert.0.as_path(), self.key.0.as_path()];
        for (path, _) in [&self.ca, &self.crl].into_iter().flatten() {
            out.push(path.as_path());
        }
        out
    }
}

/// One side's TLS configuration, rebuilt when its files change.
pub struct ReloadableTlsConfig {
    side: TlsSide,
    settings: TlsSettings,
    files: Files,
    cipher_suites: Option<Vec<String>>,
    server: ArcSwap<rustls::ServerConfig>,
    /// For dialing peers (peer side only).
    client: Option<ArcSwap<rustls::ClientConfig>>,
    /// Digest of the files' contents at the last (attempted) build, so
    /// only real changes rebuild and a broken file is reported once.
    fingerprint: Mutex<Vec<u8>>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// Refused connections, logged as etcd does (rate-limited).
    rejections: Arc<reject::RejectionLog>,
}

impl fmt::Debug for ReloadableTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableTlsConfig")
            .field("side", &self.side)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Every live configuration, for [`reload_all`].
static LIVE: Mutex<Vec<Weak<ReloadableTlsConfig>>> = Mutex::new(Vec::new());

/// Re-reads every side's files now (SIGHUP, `POST /config/reload`).
/// Blocking: call from a blocking context.
pub fn reload_all(trigger: &str) {
    let live: Vec<Arc<ReloadableTlsConfig>> =
        LIVE.lock().iter().filter_map(Weak::upgrade).collect();
    for tls in live {
        tls.reload(trigger);
    }
}

/// Both sides' TLS, as configured.
#[derive(Debug, Clone, Default)]
pub struct Sides {
    pub client: Option<Arc<ReloadableTlsConfig>>,
    pub peer: Option<Arc<ReloadableTlsConfig>>,
}

impl Sides {
    /// Loads and checks every TLS file the configuration names (and makes
    /// the auto-TLS certificates) at startup, before anything listens.
    pub fn load(cfg: &cairn_config::ServerConfig) -> Result<Sides, String> {
        let hosts = |urls: &[url::Url]| -> Vec<String> {
            urls.iter()
                .filter_map(|u| u.host_str().map(str::to_string))
                .collect()
        };
        let suites = cfg.cipher_suites.as_deref();
        let client = match &cfg.client_tls {
            Some(s) => Some(ReloadableTlsConfig::load(
                s,
                suites,
                &cfg.data_dir,
                &hosts(&cfg.listen_client_urls),
            )?),
            None => None,
        };
        let peer = match &cfg.peer_tls {
            Some(s) => Some(ReloadableTlsConfig::load(
                s,
                suites,
                &cfg.data_dir,
                &hosts(&cfg.listen_peer_urls),
            )?),
            None => None,
        };
        for tls in [&client, &peer].into_iter().flatten() {
            tls.rejections.set_zap(cfg.logger == "zap");
        }
        Ok(Sides { client, peer })
    }

    /// Starts watching the files of both sides for changes.
    pub fn spawn_watchers(&self) {
        for tls in [&self.client, &self.peer].into_iter().flatten() {
            tls.spawn_watcher();
        }
    }
}

/// `cairn config check`: reads and checks one side's certificate, key, CA
/// and CRL files exactly as a start would (each file exists and parses,
/// the key belongs to the certificate), without generating auto-TLS
/// certificates or watching anything.
pub fn check_files(settings: &TlsSettings, cipher_suites: Option<&[String]>) -> Result<(), String> {
    let TlsIdentity::Files {
        cert_file,
        key_file,
    } = &settings.identity
    else {
        // Auto TLS makes its certificate at start; nothing to read yet.
        return Ok(());
    };
    let files = Files::configured(settings, cert_file, key_file);
    build(settings, &files, cipher_suites).map(|_| ())
}

/// The TLS configuration to serve `url` with: `tls` for an `https` or
/// `unixs` URL, none for `http` or `unix` (etcd also serves plain HTTP
/// there, certificates or not).
pub fn for_url(
    url: &url::Url,
    tls: &Option<Arc<ReloadableTlsConfig>>,
) -> Option<Arc<ReloadableTlsConfig>> {
    if cairn_config::values::is_secure(url) {
        tls.clone()
    } else {
        None
    }
}

impl ReloadableTlsConfig {
    /// Loads one side's TLS at startup: generates the auto-TLS certificate
    /// if asked, then reads and checks every file. Errors name the flag and
    /// the file. `hosts` are the listen hosts (the auto-TLS certificate's
    /// names); `data_dir` is where auto-TLS certificates are kept.
    pub fn load(
        settings: &TlsSettings,
        cipher_suites: Option<&[String]>,
        data_dir: &Path,
        hosts: &[String],
    ) -> Result<Arc<ReloadableTlsConfig>, String> {
        let side = settings.side;
        let flags = side.flags();
        let files = match &settings.identity {
            TlsIdentity::Files {
                cert_file,
                key_file,
            } => Files::configured(settings, cert_file, key_file),
            TlsIdentity::Auto => {
                let dir = data_dir.join("fixtures").join(side.as_str());
                let generated =
                    auto::ensure(&dir, hosts).map_err(|e| format!("--{}: {e}", flags.auto_tls))?;
                let flag = format!("--{}", flags.auto_tls);
                Files {
                    cert: (generated.cert_file, flag.clone()),
                    key: (generated.key_file, flag),
                    ca: None,
                    crl: None,
                }
            }
        };
        let suites = cipher_suites.map(<[String]>::to_vec);
        let fingerprint = fingerprint(&files);
        let built = build(settings, &files, suites.as_deref())?;
        let this = Arc::new(ReloadableTlsConfig {
            side,
            settings: settings.clone(),
            files,
            cipher_suites: suites,
            server: ArcSwap::from(built.server),
            client: built.client.map(ArcSwap::from),
            fingerprint: Mutex::new(fingerprint),
            reloading: Mutex::new(()),
            rejections: Arc::new(reject::RejectionLog::new(side)),
        });
        let mut live = LIVE.lock();
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&this));
        Ok(this)
    }

    pub fn side(&self) -> TlsSide {
        self.side
    }

    /// The configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.load_full()
    }

    /// The configuration for the next connection to a peer (`None` on the
    /// client side, which dials nobody).
    pub fn client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.client.as_ref().map(ArcSwap::load_full)
    }

    /// Rebuilds the configuration if the files changed since the last
    /// attempt. Blocking (file IO). Returns whether a new configuration was
    /// installed.
    pub fn reload(&self, trigger: &str) -> bool {
        let _one = self.reloading.lock();
        let now = fingerprint(&self.files);
        {
            let mut last = self.fingerprint.lock();
            if *last == now {
                return false;
            }
            *last = now;
        }
        let side = self.side.as_str();
        match build(&self.settings, &self.files, self.cipher_suites.as_deref()) {
            Ok(built) => {
                self.server.store(built.server);
                if let (Some(slot), Some(client)) = (&self.client, built.client) {
                    slot.store(client);
                }
                METRICS
                    .tls_reloads
                    .with_label_values(&[side, "success"])
                    .inc();
                tracing::info!(
                    side,
                    trigger,
                    files = ?self.files.paths(),
                    "TLS files changed: new connections use the new certificate, CA bundle and revocation list"
                );
                true
            }
            Err(e) => {
                METRICS
                    .tls_reloads
                    .with_label_values(&[side, "failure"])
                    .inc();
                tracing::error!(
                    side,
                    trigger,
                    error = %e,
                    "TLS files changed but cannot be used; still serving with the previous certificate, CA bundle and revocation list"
                );
                false
            }
        }
    }

    /// Watches the files' folders and polls them, reloading on change, for
    /// as long as the process runs. Auto-TLS certificates are Cairn's own
    /// files and are not watched.
    pub fn spawn_watcher(self: &Arc<Self>) {
        if self.settings.is_auto() {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let handler = move |res: notify::Result<notify::Event>| {
            // Any event in the folders may be a change (editors' renames,
            // Kubernetes' symlink swaps); the digest decides. A full
            // channel already holds a pending trigger.
            if res.is_ok() {
                let _ = tx.try_send(());
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(mut w) => {
                use notify::Watcher;
                let mut dirs: Vec<PathBuf> = Vec::new();
                for f in self.files.paths() {
                    for d in crate::files::watch_dirs(f) {
                        if !dirs.contains(&d) {
                            dirs.push(d);
                        }
                    }
                }
                for d in &dirs {
                    if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot watch the TLS files' folder; checking it every {}s instead", POLL_INTERVAL.as_secs());
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch TLS files; checking them every {}s instead", POLL_INTERVAL.as_secs());
                None
            }
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            let mut events = true;
            loop {
                let trigger = if events {
                    match tokio::time::timeout(POLL_INTERVAL, rx.recv()).await {
                        Ok(Some(())) => {
                            let burst = tokio::time::Instant::now();
                            loop {
                                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                                    Ok(Some(())) if burst.elapsed() < MAX_DEBOUNCE => continue,
                                    _ => break,
                                }
                            }
                            "file"
                        }
                        Ok(None) => {
                            events = false;
                            continue;
                        }
                        Err(_) => "poll",
                    }
                } else {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    "poll"
                };
                let tls = Arc::clone(&this);
                let _ = tokio::task::spawn_blocking(move || tls.reload(trigger)).await;
            }
        });
    }

    /// Completes the server side of a TLS handshake on a connection
    /// accepted from `remote`, within [`HANDSHAKE_TIMEOUT`], with the
    /// configuration in force right now. A refused handshake is counted
    /// and logged as etcd logs it (`reject.rs`).
    pub async fn accept<IO>(
        &self,
        io: IO,
        remote: String,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, PeerIdentity), String>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let config = self.server_config();
        let mut server_name = String::new();
        let handshake = async {
            // The ClientHello first, for the SNI the log line names.
            let start =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
                    .await
                    .map_err(|e| (e, true))?;
            server_name = start
                .client_hello()
                .server_name()
                .unwrap_or_default()
                .to_string();
            start.into_stream(config).await.map_err(|e| (e, false))
        };
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
        let (error, names) = match result {
            Ok(Ok(stream)) => {
                let common_name = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|c| subject_common_name(c));
                return Ok((stream, PeerIdentity { common_name }));
            }
            Ok(Err((e, before_hello))) => reject::describe(&e, before_hello),
            Err(_) => (
                format!("no TLS handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                None,
            ),
        };
        METRICS
            .tls_handshake_failures
            .with_label_values(&[self.side.as_str()])
            .inc();
        self.rejections.record(&reject::Refusal {
            remote,
            server_name,
            error: error.clone(),
            names,
        });
        Err(error)
    }
}

/// What one build produces.
struct Built {
    server: Arc<rustls::ServerConfig>,
    client: Option<Arc<rustls::ClientConfig>>,
}

/// Reads `path` (at most [`MAX_PEM_FILE`] bytes); errors name `flag`.
fn read_pem_file(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{flag}={}: cannot open: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{flag}={}: cannot read: {e}", path.display()))?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "{flag}={}: larger than {} MiB; not a PEM certificate or key file",
            path.display(),
            MAX_PEM_FILE >> 20
        ));
    }
    Ok(buf)
}

/// Every certificate in a PEM file, in order; at least one.
fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem_file(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag}={}: not a valid PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag}={}: no certificate in the file (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub(crate) fn load_identity(
    cert: &Path,
    key: &Path,
    cert_flag: &str,
    key_flag: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = read_certs(cert, cert_flag)?;
    let key_bytes = read_pem_file(key, key_flag)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        format!(
            "{key_flag}={}: no private key in the file (expected a PEM PKCS#8, PKCS#1 or SEC1 key): {e}",
            key.display()
        )
    })?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider(None))
        .map_err(|e| {
            format!(
                "{cert_flag}={} with {key_flag}={}: {}",
                cert.display(),
                key.display(),
                describe(&e)
            )
        })?;
    Ok((chain, key_der))
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not belong to the certificate".to_string()
        }
        other => other.to_string(),
    }
}

/// A CA bundle: the trust anchors, and the certificates themselves (a
/// leaf that is one of them is trusted as Go trusts it, see `verify.rs`).
#[derive(Debug, Clone)]
struct Roots {
    store: Arc<rustls::RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
}

/// The CAs in a PEM bundle.
fn read_roots(path: &Path, flag: &str) -> Result<Roots, String> {
    let certs = read_certs(path, flag)?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(format!(
            "{flag}={}: none of the {ignored} certificates in the file can be used as a CA",
            path.display()
        ));
    }
    if ignored > 0 {
        tracing::warn!(file = %path.display(), ignored, "{flag}: some certificates in the CA bundle cannot be parsed and are skipped");
    }
    Ok(Roots {
        store: Arc::new(roots),
        certs,
    })
}

/// The system's CA bundle (empty when none is found).
fn system_roots() -> Roots {
    // Go's crypto/x509 (so etcd) takes the bundle from $SSL_CERT_FILE when
    // it is set.
    if let Some(file) = std::env::var_os(SSL_CERT_FILE_ENV).filter(|f| !f.is_empty()) {
        match read_roots(Path::new(&file), SSL_CERT_FILE_ENV) {
            Ok(roots) => return roots,
            Err(e) => tracing::warn!("{e}; using the system CA bundle instead"),
        }
    }
    for path in SYSTEM_CA_BUNDLES {
        let path = Path::new(path);
        if path.exists()
            && let Ok(roots) = read_roots(path, "system CA bundle")
        {
            return roots;
        }
    }
    tracing::warn!(
        "no system CA bundle found: https peers can only be verified with --peer-trusted-ca-file"
    );
    Roots {
        store: Arc::new(rustls::RootCertStore::empty()),
        certs: Vec::new(),
    }
}

/// ring with the TLS 1.2 suites restricted to `--cipher-suites` (TLS 1.3
/// suites are always on, as in Go).
fn provider(cipher_suites: Option<&[String]>) -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(names) = cipher_suites {
        let wanted: Vec<rustls::CipherSuite> =
            names.iter().filter_map(|n| tls12_suite(n)).collect();
        p.cipher_suites.retain(|s| match s {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => wanted.contains(&s.suite()),
        });
    }
    p
}

/// The rustls suite of a name in `cairn_config::TLS12_CIPHER_SUITES`.
fn tls12_suite(name: &str) -> Option<rustls::CipherSuite> {
    use rustls::CipherSuite as C;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// TLS 1.2 and 1.3, or only 1.3 when `--cipher-suites` left no 1.2 suite.
fn versions(
    p: &rustls::crypto::CryptoProvider,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    if p.cipher_suites
        .iter()
        .any(|s| matches!(s, rustls::SupportedCipherSuite::Tls12(_)))
    {
        BOTH
    } else {
        ONLY_13
    }
}

/// Builds one side's rustls configurations from its files.
fn build(
    settings: &TlsSettings,
    files: &Files,
    cipher_suites: Option<&[String]>,
) -> Result<Built, String> {
    let provider = Arc::new(provider(cipher_suites));
    let (chain, key) = load_identity(&files.cert.0, &files.key.0, &files.cert.1, &files.key.1)?;
    let roots = match &files.ca {
        Some((path, flag)) => Some(read_roots(path, flag)?),
        None => None,
    };
    let revoked = match &files.crl {
        Some((path, flag)) => Some(crl::RevokedSerials::load(path, flag)?),
        None => None,
    };
    // etcd applies the CN/hostname check to whatever certificate the other
    // end presents, in both directions.
    let allowed = match (&settings.allowed_cn, &settings.allowed_hostname) {
        (Some(cn), _) => Some(verify::AllowedName::CommonName(cn.clone())),
        (None, Some(host)) => Some(verify::AllowedName::Hostname(host.clone())),
        (None, None) => None,
    };
    let versions = versions(&provider);

    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match (&roots, settings.client_cert_auth) {
        (Some(roots), true) => {
            let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&roots.store),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("{}: {e}", files.ca.as_ref().map_or("", |c| c.1.as_str())))?;
            builder.with_client_cert_verifier(Arc::new(verify::ClientVerifier {
                inner,
                checks: Arc::new(verify::Checks::new(
                    roots.certs.clone(),
                    allowed.clone(),
                    revoked,
                )),
            }))
        }
        _ => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            format!(
                "{}={}: {}",
                files.cert.1,
                files.cert.0.display(),
                describe(&e)
            )
        })?;
    // gRPC negotiates h2; etcdctl v2, curl and browsers speak HTTP/1.1.
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let client = match settings.side {
        TlsSide::Client => None,
        TlsSide::Peer => {
            let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(versions)
                .map_err(|e| format!("TLS settings: {e}"))?;
            let verifier = peer_verifier(settings, files, &provider, roots, allowed)?;
            let builder = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier);
            let mut client = builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "{}={}: {}",
                    files.cert.1,
                    files.cert.0.display(),
                    describe(&e)
                )
            })?;
            client.alpn_protocols = vec![b"h2".to_vec()];
            Some(Arc::new(client))
        }
    };
    Ok(Built {
        server: Arc::new(server),
        client,
    })
}

/// How a peer checks the certificate of the peer it connects to.
fn peer_verifier(
    settings: &TlsSettings,
    files: &Files,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    roots: Option<Roots>,
    allowed: Option<verify::AllowedName>,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, String> {
    if settings.is_auto() {
        // Peers' auto-TLS certificates are self-signed: nothing to
        // verify them against (etcd skips verification too).
        return Ok(Arc::new(AcceptAnyServerCert {
            provider: Arc::clone(provider),
        }));
    }
    let roots = match roots {
        Some(r) => r,
        None => system_roots(),
    };
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.store,
        Arc::clone(provider),
    )
    .build()
    .map_err(|e| {
        format!(
            "{}: {e}",
            files
                .ca
                .as_ref()
                .map_or("system CA bundle", |c| c.1.as_str())
        )
    })?;
    // No revocation list here: etcd checks it on its listener only.
    Ok(Arc::new(verify::ServerVerifier {
        inner,
        checks: Arc::new(verify::Checks::new(roots.certs, allowed, None)),
    }))
}

/// A client configuration for https peer URLs when no peer TLS is
/// configured: system roots, no client certificate.
pub fn fallback_client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static FALLBACK: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            let provider = Arc::new(provider(None));
            let versions = versions(&provider);
            let mut c = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .map_err(|e| format!("TLS settings: {e}"))?
                .with_root_certificates(system_roots().store)
                .with_no_client_auth();
            c.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(c))
        })
        .clone()
}

/// The client side of the admin tools (`cairn plugin`, `cairn config
/// status`), as etcdctl's `--cacert`, `--cert` and `--key`: the servers
/// are verified against `cacert` (the system's CAs without it), and
/// `cert_key` is the certificate and key to present. Speaks HTTP/1.1.
pub fn cli_client_config(
    cacert: Option<&Path>,
    cert_key: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(provider(None));
    let versions = versions(&provider);
    let roots = match cacert {
        Some(path) => read_roots(path, "--cacert")?,
        None => system_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots.store);
    let mut c = match cert_key {
        Some((cert, key)) => {
            let (chain, key) = load_identity(cert, key, "--cert", "--key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--cert/--key: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// Digest of the files' paths and contents (bounded reads); a missing or
/// unreadable file hashes as such, so its return is a change too.
fn fingerprint(files: &Files) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for path in files.paths() {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::File::open(path) {
            Ok(f) => {
                // The largest file read is a CRL.
                let mut buf = Vec::new();
                let _ = f.take(crl::MAX_CRL_FILE_BYTES + 1).read_to_end(&mut buf);
                h.update((buf.len() as u64).to_be_bytes());
                h.update(&buf);
            }
            Err(_) => h.update(b"missing"),
        }
    }
    h.finalize().to_vec()
}

/// Accepts any server certificate, for peers that all use auto TLS. The
/// handshake signatures are still checked, so the connection is encrypted
/// to whoever holds the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
