//! `--client-crl-file` / `--peer-crl-file`: the serial numbers a
//! certificate revocation list names.
//!
//! etcd 3.4 reads the file on every handshake with Go's `x509.ParseCRL`
//! (PEM `X509 CRL` or DER, signature not checked) and refuses any
//! certificate the client sent whose serial number is listed, whoever
//! issued it. Cairn reads it with the other TLS files: at startup (an
//! unreadable list is a startup error) and whenever it changes, like the
//! certificates; a list that cannot be read on a change is logged and the
//! previous one stays in force.

use super::der;
use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

/// Largest CRL file read. A big public CA's list is a few MiB.
pub(super) const MAX_CRL_FILE_BYTES: u64 = 64 << 20;

/// The revoked serial numbers (Go's `big.Int.Bytes()` form).
#[derive(Debug, Clone, Default)]
pub struct RevokedSerials {
    serials: HashSet<Vec<u8>>,
}

impl RevokedSerials {
    pub fn contains(&self, serial: &[u8]) -> bool {
        self.serials.contains(serial)
    }

    /// Reads a CRL from its bytes: PEM (the first `X509 CRL` block) or DER.
    pub fn parse(bytes: &[u8]) -> Result<RevokedSerials, String> {
        let looks_pem = bytes
            .windows(b"-----BEGIN".len())
            .any(|w| w == b"-----BEGIN");
        let der_bytes;
        let der: &[u8] = if looks_pem {
            der_bytes = CertificateRevocationListDer::from_pem_slice(bytes)
                .map_err(|e| format!("no PEM \"X509 CRL\" block in the file: {e}"))?;
            der_bytes.as_ref()
        } else {
            bytes
        };
        let serials = der::crl_revoked_serials(der).ok_or_else(|| {
            "not a certificate revocation list (expected PEM \"X509 CRL\" or DER)".to_string()
        })?;
        Ok(RevokedSerials {
            serials: serials.into_iter().collect(),
        })
    }

    /// Reads the CRL file; errors name `flag` and the file.
    pub fn load(path: &Path, flag: &str) -> Result<RevokedSerials, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("{flag}={}: cannot open: {e}", path.display()))?;
        let mut buf = Vec::new();
        file.take(MAX_CRL_FILE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{flag}={}: cannot read: {e}", path.display()))?;
        if buf.len() as u64 > MAX_CRL_FILE_BYTES {
            return Err(format!(
                "{flag}={}: larger than {} MiB; not a certificate revocation list",
                path.display(),
                MAX_CRL_FILE_BYTES >> 20
            ));
        }
        RevokedSerials::parse(&buf).map_err(|e| format!("{flag}={}: {e}", path.display()))
    }
}
