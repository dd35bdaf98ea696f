//! The client and peer TLS settings: files, cipher suites, TLS versions and
//! the `https` listeners that need them, checked as etcd checks them.

use super::*;

/// One side's TLS settings and the check of its `https` listeners; a
/// problem goes to `errors` (the listener check is skipped when the
/// settings themselves are broken: it would only repeat the problem).
pub(super) fn tls_side(
    inputs: &Inputs,
    side: TlsSide,
    listeners: &[(&str, &Vec<Url>)],
    https_elsewhere: bool,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<TlsSettings> {
    let settings = match tls_settings(inputs, side, warnings) {
        Ok(settings) => settings,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    if let Err(e) = check_https_listeners(
        inputs,
        side,
        settings.as_ref(),
        listeners,
        https_elsewhere,
        warnings,
    ) {
        errors.push(e);
    }
    settings
}

/// `--cipher-suites`: Go's names, checked as etcd checks them (an unknown
/// name is an error with etcd's wording). Suites Go knows but rustls does
/// not implement (CBC, RC4, 3DES, RSA key exchange) are dropped with a
/// warning: offering fewer suites than asked never weakens a connection.
pub(super) fn cipher_suites(
    inputs: &Inputs,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<String>>, ConfigError> {
    const FLAG: &str = "cipher-suites";
    let names = inputs.list(FLAG)?;
    if names.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    for name in &names {
        match tls::lookup_suite(name) {
            // Unknown names are refused with the value (`check_range`).
            None => return Err(inputs.bad(FLAG, unknown_suite(name))),
            Some(SuiteName::Tls12(canonical)) => {
                if !out.iter().any(|s| s == canonical) {
                    out.push(canonical.to_string());
                }
            }
            Some(SuiteName::Tls13) => {}
            Some(SuiteName::Unavailable) => dropped.push(name.as_str()),
        }
    }
    if !dropped.is_empty() {
        warnings.push(format!(
            "--cipher-suites{}: {} not offered by cairn (only ECDHE suites with AES-GCM or ChaCha20-Poly1305 are implemented); {}",
            inputs.at(FLAG),
            dropped.join(", "),
            if out.is_empty() {
                "no TLS 1.2 suite is left, so only TLS 1.3 is served".to_string()
            } else {
                format!("offering {}", out.join(", "))
            }
        ));
    }
    Ok(Some(out))
}

/// One side's TLS flags, checked together. `None` when the side has no
/// certificate (no files and no auto TLS); the other flags of that side
/// then have nothing to apply to and produce a warning, as in etcd.
pub(super) fn tls_settings(
    inputs: &Inputs,
    side: TlsSide,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsSettings>, ConfigError> {
    let f = side.flags();
    let path = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
        let text = inputs.text(name)?;
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    };
    let cert_file = path(f.cert_file)?;
    let key_file = path(f.key_file)?;
    let trusted_ca_file = path(f.trusted_ca_file)?;
    let cert_auth_flag = inputs.bool(f.client_cert_auth)?;
    let auto_tls = inputs.bool(f.auto_tls)?;
    let allowed_cn = match side {
        TlsSide::Client => None,
        TlsSide::Peer => Some(inputs.text("peer-cert-allowed-cn")?).filter(|cn| !cn.is_empty()),
    };
    let allowed_hostname = Some(inputs.text(f.allowed_hostname)?).filter(|h| !h.is_empty());
    let crl_file = path(f.crl_file)?;
    if let (Some(cn), Some(hostname)) = (&allowed_cn, &allowed_hostname) {
        return Err(cn_and_hostname(inputs, side, cn, hostname));
    }
    // The flags that need a CA, and the checks made on the other end's
    // certificate: reported when they have nothing to apply to.
    let ca_and_auth = [
        (trusted_ca_file.is_some(), f.trusted_ca_file),
        (cert_auth_flag, f.client_cert_auth),
    ];
    let checks = [
        (allowed_cn.is_some(), "peer-cert-allowed-cn"),
        (allowed_hostname.is_some(), f.allowed_hostname),
        (crl_file.is_some(), f.crl_file),
    ];
    let identity = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => {
            if auto_tls {
                warnings.push(format!(
                    "ignoring --{}{} since --{} and --{} are given",
                    f.auto_tls,
                    inputs.at(f.auto_tls),
                    f.cert_file,
                    f.key_file
                ));
            }
            TlsIdentity::Files {
                cert_file,
                key_file,
            }
        }
        (Some(_), None) => return Err(half_identity(inputs, f.cert_file, f.key_file)),
        (None, Some(_)) => return Err(half_identity(inputs, f.key_file, f.cert_file)),
        (None, None) if auto_tls => TlsIdentity::Auto,
        (None, None) => {
            warn_ignored_without_certificate(
                inputs,
                side,
                ca_and_auth.iter().chain(&checks),
                warnings,
            );
            return Ok(None);
        }
    };
    if identity == TlsIdentity::Auto {
        warn_ignored_with_auto_tls(inputs, side, &ca_and_auth, &checks, warnings);
        return Ok(Some(TlsSettings {
            side,
            identity,
            trusted_ca_file: None,
            client_cert_auth: false,
            allowed_cn: None,
            allowed_hostname: None,
            crl_file: None,
        }));
    }
    if cert_auth_flag && trusted_ca_file.is_none() {
        return Err(ConfigError::invalid(format!(
            "--{}{} needs --{}: the PEM bundle of the CAs that sign the certificates to accept",
            f.client_cert_auth,
            inputs.at(f.client_cert_auth),
            f.trusted_ca_file
        )));
    }
    // etcd requires client certificates whenever a trusted CA is given.
    let client_cert_auth = cert_auth_flag || trusted_ca_file.is_some();
    if !client_cert_auth {
        // Without client certificates there is nothing to check.
        for (set, name) in checks {
            if set {
                warnings.push(format!(
                    "--{name}{} has no effect without --{} and --{}",
                    inputs.at(name),
                    f.client_cert_auth,
                    f.trusted_ca_file
                ));
            }
        }
    }
    Ok(Some(TlsSettings {
        side,
        identity,
        trusted_ca_file,
        client_cert_auth,
        allowed_cn: allowed_cn.filter(|_| client_cert_auth),
        allowed_hostname: allowed_hostname.filter(|_| client_cert_auth),
        crl_file: crl_file.filter(|_| client_cert_auth),
    }))
}

/// etcd's error (pkg/transport's wording) for both name checks at once,
/// with the flags that caused it.
fn cn_and_hostname(inputs: &Inputs, side: TlsSide, cn: &str, hostname: &str) -> ConfigError {
    let allowed_hostname = side.flags().allowed_hostname;
    ConfigError::invalid(format!(
        "--peer-cert-allowed-cn{} and --{allowed_hostname}{} cannot both be set: AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={hostname:?})",
        inputs.at("peer-cert-allowed-cn"),
        inputs.at(allowed_hostname)
    ))
}

/// A certificate file without its key file, or the other way round.
fn half_identity(inputs: &Inputs, given: &str, missing: &str) -> ConfigError {
    ConfigError::invalid(format!(
        "--{given}{} is set but --{missing} is not: a TLS certificate needs both its certificate and its key file",
        inputs.at(given)
    ))
}

/// `--name` (and where it was set) for each flag that is set.
fn given_flags<'a>(
    inputs: &Inputs,
    flags: impl Iterator<Item = &'a (bool, &'a str)>,
) -> Vec<String> {
    flags
        .filter(|(set, _)| *set)
        .map(|(_, name)| format!("--{name}{}", inputs.at(name)))
        .collect()
}

/// A side without a certificate: its other TLS flags have nothing to
/// apply to.
fn warn_ignored_without_certificate<'a>(
    inputs: &Inputs,
    side: TlsSide,
    flags: impl Iterator<Item = &'a (bool, &'a str)>,
    warnings: &mut Vec<String>,
) {
    let f = side.flags();
    let stray = given_flags(inputs, flags);
    if !stray.is_empty() {
        warnings.push(format!(
            "{} set without --{} and --{} (or --{}); ignored",
            stray.join(", "),
            f.cert_file,
            f.key_file,
            f.auto_tls
        ));
    }
}

/// etcd replaces the whole TLS setup of an auto-TLS side with the
/// generated certificate, dropping client certificate checks: the flags
/// given for them are reported as ignored.
fn warn_ignored_with_auto_tls(
    inputs: &Inputs,
    side: TlsSide,
    ca_and_auth: &[(bool, &str)],
    checks: &[(bool, &str)],
    warnings: &mut Vec<String>,
) {
    let auto_tls = side.flags().auto_tls;
    let dropped = given_flags(inputs, ca_and_auth.iter());
    if !dropped.is_empty() {
        warnings.push(format!(
            "{} ignored with --{auto_tls}: a generated certificate is not checked against a CA, so client certificates are not required",
            dropped.join(" and "),
        ));
    }
    let unchecked = given_flags(inputs, checks.iter());
    if !unchecked.is_empty() {
        warnings.push(format!(
            "{} ignored with --{auto_tls}: {} certificates are not checked",
            unchecked.join(" and "),
            side.as_str()
        ));
    }
}

/// An `https` listener needs a certificate (etcd's startup errors); TLS
/// settings without any `https` URL to use them are worth a warning.
/// `https_elsewhere`: the side's settings are also used for outgoing
/// connections to these (peer) URLs.
pub(super) fn check_https_listeners(
    inputs: &Inputs,
    side: TlsSide,
    settings: Option<&TlsSettings>,
    listeners: &[(&str, &Vec<Url>)],
    https_elsewhere: bool,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let f = side.flags();
    let mut any_https = https_elsewhere;
    for (flag, urls) in listeners {
        for url in urls.iter().filter(|u| is_secure(u)) {
            any_https = true;
            if settings.is_none() {
                return Err(ConfigError::invalid(format!(
                    "TLS key/cert (--{}, --{}) must be provided for {} url {} with HTTPS scheme (--{flag}{}); or use --{} for a generated certificate",
                    f.cert_file,
                    f.key_file,
                    side.as_str(),
                    format_url(url),
                    inputs.at(flag),
                    f.auto_tls
                )));
            }
        }
    }
    if settings.is_some() && !any_https {
        warnings.push(format!(
            "{} TLS is configured (--{} or --{}) but no {} URL uses https://, so it is not used",
            side.as_str(),
            f.cert_file,
            f.auto_tls,
            side.as_str()
        ));
    }
    Ok(())
}
