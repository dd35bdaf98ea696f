//! Logging refused TLS connections the way etcd 3.4 does, within bounds.
//!
//! etcd logs every failed handshake (and every connection its listener
//! refuses after the handshake: revoked certificates, peer SAN checks):
//! with its default `capnslog` logger at INFO,
//! `rejected connection from "IP:PORT" (error "…", ServerName "…")`,
//! plus `, IPAddresses [...], DNSNames [...]` when the client's certificate
//! is known; with `--logger=zap` a WARN `rejected connection` with the
//! same facts as fields. Cairn writes the same text, with the error in Go's
//! words where Go's is known (so alerts and log searches written for etcd
//! keep working), else rustls' own description.
//!
//! Unlike etcd, a flood (a scanner, a client with a bad certificate in a
//! retry loop) cannot flood the log: each side logs at most
//! [`MAX_LINES_PER_WINDOW`] lines per [`WINDOW`], counts the rest, and
//! reports the count once the window is over.

use super::der::AltNames;
use super::verify::Rejection;
use cairn_config::TlsSide;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Lines logged per side per window; more are counted, not written.
pub const MAX_LINES_PER_WINDOW: u32 = 20;
/// The rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One side's rejected-connection log.
#[derive(Debug)]
pub struct RejectionLog {
    side: TlsSide,
    /// [`WINDOW`], shorter in tests.
    window: Duration,
    /// `--logger=zap`: WARN with fields, as etcd's zap logger.
    zap: AtomicBool,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    /// Lines not written since the last report.
    suppressed: u64,
    /// A task will report `suppressed` at the end of the window.
    report_pending: bool,
}

/// What to say about one refused connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The client's address; `@` for a unix socket client, as Go shows it.
    pub remote: String,
    /// The SNI the client sent ("" without one).
    pub server_name: String,
    /// The error in Go's words where known.
    pub error: String,
    /// The client certificate's names, when it was read (Go's
    /// `ConnectionState().PeerCertificates` is set).
    pub names: Option<AltNames>,
}

impl Refusal {
    /// The capnslog line, as etcd formats it with Go's `%q`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "rejected connection from {} (error {}, ServerName {}",
            go_quote(&self.remote),
            go_quote(&self.error),
            go_quote(&self.server_name)
        );
        if let Some(names) = &self.names {
            let ips: Vec<String> = names
                .ips
                .iter()
                .map(|ip| go_quote(&ip.to_string()))
                .collect();
            let dns: Vec<String> = names.dns.iter().map(|d| go_quote(d)).collect();
            line.push_str(&format!(
                ", IPAddresses [{}], DNSNames [{}]",
                ips.join(" "),
                dns.join(" ")
            ));
        }
        line.push(')');
        line
    }
}

impl RejectionLog {
    pub fn new(side: TlsSide) -> RejectionLog {
        RejectionLog::with_window(side, WINDOW)
    }

    fn with_window(side: TlsSide, window: Duration) -> RejectionLog {
        RejectionLog {
            side,
            window,
            zap: AtomicBool::new(false),
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
                report_pending: false,
            }),
        }
    }

    /// `--logger=zap` (else capnslog).
    pub fn set_zap(&self, zap: bool) {
        self.zap.store(zap, Ordering::Relaxed);
    }

    /// Logs `refusal` unless this window's lines are used up; returns
    /// whether it was written.
    pub fn record(self: &Arc<Self>, refusal: &Refusal) -> bool {
        let report_at = {
            let mut w = self.state.lock();
            let now = Instant::now();
            if now.duration_since(w.started) >= self.window {
                w.started = now;
                w.logged = 0;
            }
            if w.logged < MAX_LINES_PER_WINDOW {
                w.logged += 1;
                None
            } else {
                w.suppressed += 1;
                let first = !w.report_pending;
                w.report_pending = true;
                Some(first.then_some(w.started + self.window))
            }
        };
        match report_at {
            None => {}
            Some(Some(end)) => {
                self.spawn_report(end);
                return false;
            }
            Some(None) => return false,
        }
        let side = self.side.as_str();
        if self.zap.load(Ordering::Relaxed) {
            let (ips, dns) = match &refusal.names {
                Some(n) => (
                    n.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    n.dns.clone(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            tracing::warn!(
                side,
                remote_addr = %refusal.remote,
                server_name = %refusal.server_name,
                ip_addresses = ?ips,
                dns_names = ?dns,
                error = %refusal.error,
                "rejected connection"
            );
        } else {
            tracing::info!(side, "{}", refusal.line());
        }
        true
    }

    /// Reports the suppressed count once the window ends (or right away
    /// outside a runtime, which only unit tests are).
    fn spawn_report(self: &Arc<Self>, end: Instant) {
        let this = Arc::clone(self);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep_until(end.into()).await;
                    this.report();
                });
            }
            Err(_) => this.report(),
        }
    }

    fn report(&self) {
        let suppressed = {
            let mut w = self.state.lock();
            w.report_pending = false;
            std::mem::take(&mut w.suppressed)
        };
        if suppressed > 0 {
            tracing::warn!(
                side = self.side.as_str(),
                suppressed,
                "{suppressed} more rejected connections were not logged (at most {MAX_LINES_PER_WINDOW} lines every {}s)",
                self.window.as_secs()
            );
        }
    }
}

/// A handshake error in Go's words where Go's `crypto/tls` (as etcd 3.4
/// reports it) has a fixed text for the same failure; rustls' description
/// otherwise. `before_hello`: the error came before a ClientHello was read.
pub fn describe(e: &std::io::Error, before_hello: bool) -> (String, Option<AltNames>) {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        if let Some(r) = Rejection::from_error(tls) {
            return (r.message.clone(), Some(r.names.clone()));
        }
        return (describe_tls(tls, before_hello), None);
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ("EOF".to_string(), None),
        _ => (e.to_string(), None),
    }
}

fn describe_tls(e: &rustls::Error, before_hello: bool) -> String {
    use rustls::CertificateError as C;
    use rustls::Error as E;
    const VERIFY: &str = "tls: failed to verify client certificate: x509: ";
    match e {
        E::InvalidMessage(_) if before_hello => {
            "tls: first record does not look like a TLS handshake".to_string()
        }
        E::NoCertificatesPresented => "tls: client didn't provide a certificate".to_string(),
        E::InvalidCertificate(C::UnknownIssuer) => {
            format!("{VERIFY}certificate signed by unknown authority")
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => format!("{VERIFY}certificate has expired or is not yet valid"),
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            format!("{VERIFY}certificate specifies an incompatible key usage")
        }
        E::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon) => {
            "tls: no cipher suite supported by both client and server".to_string()
        }
        E::AlertReceived(alert) => format!("remote error: tls: {}", go_alert_text(*alert)),
        other => other.to_string(),
    }
}

/// Go's `alert.String()` texts.
fn go_alert_text(a: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    let text = match a {
        A::CloseNotify => "close notify",
        A::UnexpectedMessage => "unexpected message",
        A::BadRecordMac => "bad record MAC",
        A::DecryptionFailed => "decryption failed",
        A::RecordOverflow => "record overflow",
        A::DecompressionFailure => "decompression failure",
        A::HandshakeFailure => "handshake failure",
        A::BadCertificate => "bad certificate",
        A::UnsupportedCertificate => "unsupported certificate",
        A::CertificateRevoked => "revoked certificate",
        A::CertificateExpired => "expired certificate",
        A::CertificateUnknown => "unknown certificate",
        A::IllegalParameter => "illegal parameter",
        A::UnknownCA => "unknown certificate authority",
        A::AccessDenied => "access denied",
        A::DecodeError => "error decoding message",
        A::DecryptError => "error decrypting message",
        A::ExportRestriction => "export restriction",
        A::ProtocolVersion => "protocol version not supported",
        A::InsufficientSecurity => "insufficient security level",
        A::InternalError => "internal error",
        A::InappropriateFallback => "inappropriate fallback",
        A::UserCanceled => "user canceled",
        A::NoRenegotiation => "no renegotiation",
        A::MissingExtension => "missing extension",
        A::UnsupportedExtension => "unsupported extension",
        A::CertificateUnobtainable => "certificate unobtainable",
        A::UnrecognisedName => "unrecognized name",
        A::BadCertificateStatusResponse => "bad certificate status response",
        A::BadCertificateHashValue => "bad certificate hash value",
        A::UnknownPSKIdentity => "unknown PSK identity",
        A::CertificateRequired => "certificate required",
        A::NoApplicationProtocol => "no application protocol",
        other => return format!("alert({})", u8::from(other)),
    };
    text.to_string()
}

/// Go's `strconv.Quote` (what `%q` prints for a string): double quotes,
/// with `"`, `\` and non-printable characters escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let v = c as u32;
                if v <= 0xffff {
                    out.push_str(&format!("\\u{v:04x}"));
                } else {
                    out.push_str(&format!("\\U{v:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(names: Option<AltNames>) -> Refusal {
        Refusal {
            remote: "127.0.0.1:51234".into(),
            server_name: "".into(),
            error: "tls: client didn't provide a certificate".into(),
            names,
        }
    }

    #[test]
    fn lines_read_like_etcds() {
        assert_eq!(
            refusal(None).line(),
            r#"rejected connection from "127.0.0.1:51234" (error "tls: client didn't provide a certificate", ServerName "")"#
        );
        let names = AltNames {
            dns: vec!["localhost".into(), "m1.example.com".into()],
            ips: vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
        };
        let mut r = refusal(Some(names));
        r.server_name = "m1.example.com".into();
        r.error = "client certificate authentication failed".into();
        assert_eq!(
            r.line(),
            r#"rejected connection from "127.0.0.1:51234" (error "client certificate authentication failed", ServerName "m1.example.com", IPAddresses ["127.0.0.1" "::1"], DNSNames ["localhost" "m1.example.com"])"#
        );
        let r = refusal(Some(AltNames::default()));
        assert!(
            r.line().ends_with(", IPAddresses [], DNSNames [])"),
            "{}",
            r.line()
        );
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
    }

    #[tokio::test]
    async fn a_flood_is_counted_not_logged() {
        let window = Duration::from_millis(300);
        let log = Arc::new(RejectionLog::with_window(TlsSide::Client, window));
        let written = (0..1000).filter(|_| log.record(&refusal(None))).count();
        assert_eq!(written, MAX_LINES_PER_WINDOW as usize);
        {
            let w = log.state.lock();
            assert_eq!(w.suppressed, 1000 - u64::from(MAX_LINES_PER_WINDOW));
            assert!(w.report_pending);
        }
        // The window ends: the count is reported once and reset, and
        // lines are written again.
        tokio::time::sleep(window * 2).await;
        {
            let w = log.state.lock();
            assert_eq!(w.suppressed, 0);
            assert!(!w.report_pending);
        }
        assert!(log.record(&refusal(None)));
    }

    #[test]
    fn outside_a_runtime_the_count_is_reported_at_once() {
        let log = Arc::new(RejectionLog::new(TlsSide::Peer));
        let written = (0..100).filter(|_| log.record(&refusal(None))).count();
        assert_eq!(written, MAX_LINES_PER_WINDOW as usize);
        assert_eq!(log.state.lock().suppressed, 0);
        assert!(!log.state.lock().report_pending);
    }

    #[test]
    fn go_texts_for_common_failures() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let d = |e: rustls::Error, hello: bool| describe(&io(e), hello).0;
        assert_eq!(
            d(rustls::Error::NoCertificatesPresented, false),
            "tls: client didn't provide a certificate"
        );
        assert_eq!(
            d(rustls::CertificateError::UnknownIssuer.into(), false),
            "tls: failed to verify client certificate: x509: certificate signed by unknown authority"
        );
        assert_eq!(
            d(
                rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
                false
            ),
            "remote error: tls: bad certificate"
        );
        assert_eq!(
            d(
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                true
            ),
            "tls: first record does not look like a TLS handshake"
        );
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(describe(&eof, true).0, "EOF");
    }
}
