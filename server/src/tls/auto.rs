//! `--auto-tls` / `--peer-auto-tls`: a self-signed certificate for the
//! listen hosts, kept in `<data-dir>/fixtures/client` (or `peer`) as
//! `cert.pem` and `key.pem`, the files etcd uses, and reused on restart.
//!
//! Nobody can verify such a certificate, so it only encrypts: clients use
//! `--insecure-skip-tls-verify`, and members skip verification of each
//! other's auto-TLS certificates (as etcd does).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a generated certificate is valid (etcd: one year).
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Back-dated a little so a peer whose clock is behind accepts it.
const BACKDATE: Duration = Duration::from_secs(3600);

pub struct AutoCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Returns the certificate files in `dir`, generating them first unless a
/// usable pair is already there. `hosts` become the subject alternative
/// names (IP addresses as IP SANs, anything else as DNS names).
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<AutoCert, String> {
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    if cert_file.exists() && key_file.exists() {
        match super::load_identity(&cert_file, &key_file, "cert.pem", "key.pem") {
            Ok(_) => {
                tracing::info!(dir = %dir.display(), "using the existing self-signed certificate");
                return Ok(AutoCert {
                    cert_file,
                    key_file,
                });
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "the self-signed certificate on disk is unusable; generating a new one")
            }
        }
    }
    let (cert_pem, key_pem) = generate(hosts)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_private(&key_file, key_pem.as_bytes())?;
    std::fs::write(&cert_file, cert_pem.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", cert_file.display()))?;
    tracing::info!(dir = %dir.display(), hosts = ?hosts, "generated a self-signed certificate");
    Ok(AutoCert {
        cert_file,
        key_file,
    })
}

/// A new ECDSA P-256 key and a self-signed certificate for `hosts`.
fn generate(hosts: &[String]) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut sans: Vec<String> = Vec::new();
    for h in hosts {
        let h = h.trim_start_matches('[').trim_end_matches(']').to_string();
        if !h.is_empty() && !sans.contains(&h) {
            sans.push(h);
        }
    }
    let mut params = rcgen::CertificateParams::new(sans)
        .map_err(|e| format!("cannot use the listen hosts as certificate names: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = SystemTime::now();
    let (y, m, d) = ymd(now.checked_sub(BACKDATE).unwrap_or(now));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(now + VALIDITY);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    // Members present the same certificate as servers and as clients.
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The UTC day `t` falls on (certificates here are valid from midnight).
fn ymd(t: SystemTime) -> (i32, u8, u8) {
    let days = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    civil_from_days(i64::try_from(days).unwrap_or(0))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixtures = dir.path().join("fixtures").join("client");
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let a = ensure(&fixtures, &hosts).expect("generate");
        let first = std::fs::read(&a.cert_file).expect("cert");
        let b = ensure(&fixtures, &hosts).expect("reuse");
        assert_eq!(std::fs::read(&b.cert_file).expect("cert"), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&b.key_file)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A damaged pair is replaced.
        std::fs::write(&a.cert_file, "garbage").expect("write");
        let c = ensure(&fixtures, &hosts).expect("regenerate");
        assert_ne!(std::fs::read(&c.cert_file).expect("cert"), first);
    }
}
