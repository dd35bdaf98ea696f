//! Just enough DER to read the parts of certificates and revocation lists
//! that etcd's checks look at: the subject common name (the user name of a
//! client with `--client-cert-auth`, what `--peer-cert-allowed-cn` checks),
//! the serial number (CRLs), the subject alternative names
//! (`--*-cert-allowed-hostname`, log lines), the validity period and the
//! extended key usages (a trust anchor presented as a leaf, see
//! `verify.rs`), the public key (JWT keys given as certificates), and the
//! serial numbers a CRL lists.
//!
//! The bytes come from the network or from files, so every read is
//! bounds-checked and anything unexpected yields `None` rather than a
//! panic.

use std::net::IpAddr;

/// The DER encoding of the `commonName` attribute type, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` at the start of a TBSCertificate.
const TAG_VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` at the end of a TBSCertificate.
const TAG_CERT_EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IA5String` and `iPAddress [7] OCTET STRING` in a GeneralName.
const TAG_SAN_DNS: u8 = 0x82;
const TAG_SAN_IP: u8 = 0x87;

/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// id-ce-extKeyUsage, 2.5.29.37.
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// anyExtendedKeyUsage, 2.5.29.37.0.
pub const OID_ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
/// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1.
pub const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2.
pub const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// One tag-length-value element: its tag, its contents and what follows it.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // High tag numbers (0x1f) never occur in the structures read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits give the number of length bytes. Four
        // bytes cover any certificate; indefinite length (0x80) is not DER.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Reads one element that must have tag `want`.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, body, rest) = read_tlv(input)?;
    (tag == want).then_some((body, rest))
}

/// The fields of a TBSCertificate that the checks here read.
struct TbsFields<'a> {
    /// The serialNumber INTEGER's content octets.
    serial: &'a [u8],
    /// The Validity SEQUENCE's contents (notBefore, notAfter).
    validity: &'a [u8],
    /// The subject Name SEQUENCE's contents.
    subject: &'a [u8],
    /// The whole SubjectPublicKeyInfo element (tag and length included).
    spki: &'a [u8],
    /// The Extensions SEQUENCE's contents, if the certificate has any.
    extensions: Option<&'a [u8]>,
}

/// Splits a DER certificate into the TBSCertificate fields read here.
fn tbs_fields(cert: &[u8]) -> Option<TbsFields<'_>> {
    let (cert_body, _) = expect(cert, TAG_SEQUENCE)?;
    let (tbs, _) = expect(cert_body, TAG_SEQUENCE)?;
    let mut rest = tbs;
    // version (optional), serialNumber, signature, issuer, validity,
    // subject, subjectPublicKeyInfo, then optional [1] [2] unique IDs and
    // [3] extensions.
    let (tag, _, after) = read_tlv(rest)?;
    if tag == TAG_VERSION {
        rest = after;
    }
    let (serial, rest) = expect(rest, TAG_INTEGER)?;
    let (_signature, rest) = expect(rest, TAG_SEQUENCE)?;
    let (_issuer, rest) = expect(rest, TAG_SEQUENCE)?;
    let (validity, rest) = expect(rest, TAG_SEQUENCE)?;
    let (subject, rest) = expect(rest, TAG_SEQUENCE)?;
    let (_, _, after_spki) = read_tlv(rest)?;
    let spki = &rest[..rest.len() - after_spki.len()];
    expect(spki, TAG_SEQUENCE)?;
    let mut rest = after_spki;
    let mut extensions = None;
    while !rest.is_empty() {
        let (tag, body, after) = read_tlv(rest)?;
        if tag == TAG_CERT_EXTENSIONS {
            let (exts, _) = expect(body, TAG_SEQUENCE)?;
            extensions = Some(exts);
        }
        rest = after;
    }
    Some(TbsFields {
        serial,
        validity,
        subject,
        spki,
        extensions,
    })
}

/// The DER-encoded subject `Name` of a certificate.
fn subject(cert: &[u8]) -> Option<&[u8]> {
    tbs_fields(cert).map(|f| f.subject)
}

/// The whole SubjectPublicKeyInfo element of a DER certificate: what a
/// `PUBLIC KEY` PEM block holds.
pub fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    tbs_fields(cert).map(|f| f.spki)
}

/// An INTEGER's content octets as Go's `big.Int.Bytes()` gives them: the
/// absolute value, big-endian, without leading zeros. etcd compares serial
/// numbers in this form, so `00 ff` and `ff 01` (-255) both read `ff`.
fn integer_magnitude(content: &[u8]) -> Vec<u8> {
    let mut bytes = content.to_vec();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        // Negative: the magnitude is the two's complement.
        for b in &mut bytes {
            *b = !*b;
        }
        for b in bytes.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.split_off(first)
}

/// The serial number of a DER certificate, as Go's `big.Int.Bytes()`.
pub fn serial_number(cert: &[u8]) -> Option<Vec<u8>> {
    tbs_fields(cert).map(|f| integer_magnitude(f.serial))
}

/// Every extension of a certificate as (OID, value octets).
fn extensions(cert: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    let Some(mut rest) = tbs_fields(cert)?.extensions else {
        return Some(out);
    };
    while !rest.is_empty() {
        let (ext, after) = expect(rest, TAG_SEQUENCE)?;
        rest = after;
        let (oid, mut fields) = expect(ext, TAG_OID)?;
        // The critical flag is not needed here.
        if let Some((TAG_BOOLEAN, _, after)) = read_tlv(fields) {
            fields = after;
        }
        let (value, _) = expect(fields, TAG_OCTET_STRING)?;
        out.push((oid, value));
    }
    Some(out)
}

/// The DNS names and IP addresses of a certificate's subjectAltName
/// extension (what Go calls `DNSNames` and `IPAddresses`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AltNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// The subject alternative names of a DER certificate (empty lists when it
/// has none; `None` when the certificate cannot be read).
pub fn subject_alt_names(cert: &[u8]) -> Option<AltNames> {
    let mut names = AltNames::default();
    for (oid, value) in extensions(cert)? {
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let (mut rest, _) = expect(value, TAG_SEQUENCE)?;
        while !rest.is_empty() {
            let (tag, body, after) = read_tlv(rest)?;
            rest = after;
            match tag {
                TAG_SAN_DNS => names.dns.push(String::from_utf8_lossy(body).into_owned()),
                TAG_SAN_IP => match body.len() {
                    4 => names
                        .ips
                        .push(IpAddr::from(<[u8; 4]>::try_from(body).ok()?)),
                    16 => names
                        .ips
                        .push(IpAddr::from(<[u8; 16]>::try_from(body).ok()?)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(names)
}

/// The extended key usage OIDs of a DER certificate: `Some(None)` when it
/// has no such extension (any use is allowed), `None` when unreadable.
pub fn extended_key_usages(cert: &[u8]) -> Option<Option<Vec<&[u8]>>> {
    for (oid, value) in extensions(cert)? {
        if oid != OID_EXT_KEY_USAGE {
            continue;
        }
        let (mut rest, _) = expect(value, TAG_SEQUENCE)?;
        let mut usages = Vec::new();
        while !rest.is_empty() {
            let (usage, after) = expect(rest, TAG_OID)?;
            usages.push(usage);
            rest = after;
        }
        return Some(Some(usages));
    }
    Some(None)
}

/// Seconds since the Unix epoch of a UTCTime (`YYMMDDHHMMSSZ`, years
/// 1950–2049 as RFC 5280 says) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn read_time(tag: u8, body: &[u8]) -> Option<i64> {
    let digits = |b: &[u8]| -> Option<i64> {
        b.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (year, rest) = match (tag, body.len()) {
        (TAG_UTC_TIME, 13) => {
            let yy = digits(&body[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &body[2..])
        }
        (TAG_GENERALIZED_TIME, 15) => (digits(&body[..4])?, &body[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A certificate's validity period: (notBefore, notAfter) in seconds since
/// the Unix epoch.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let v = tbs_fields(cert)?.validity;
    let (tag, body, rest) = read_tlv(v)?;
    let not_before = read_time(tag, body)?;
    let (tag, body, _) = read_tlv(rest)?;
    let not_after = read_time(tag, body)?;
    Some((not_before, not_after))
}

/// The serial numbers a DER certificate revocation list names (in Go's
/// `big.Int.Bytes()` form), or `None` if it is not a CRL. Like Go's
/// `x509.ParseCRL`, which etcd uses, this reads the structure only: the
/// signature is not checked (the file is the operator's, not the network's).
pub fn crl_revoked_serials(crl: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (list, _) = expect(crl, TAG_SEQUENCE)?;
    let (tbs, _) = expect(list, TAG_SEQUENCE)?;
    // version (optional INTEGER), signature, issuer, thisUpdate,
    // nextUpdate (optional), revokedCertificates (optional), [0] extensions.
    let mut rest = tbs;
    if let Some((TAG_INTEGER, _, after)) = read_tlv(rest) {
        rest = after;
    }
    let (_signature, rest) = expect(rest, TAG_SEQUENCE)?;
    let (_issuer, rest) = expect(rest, TAG_SEQUENCE)?;
    let (tag, body, mut rest) = read_tlv(rest)?;
    read_time(tag, body)?;
    if let Some((tag @ (TAG_UTC_TIME | TAG_GENERALIZED_TIME), body, after)) = read_tlv(rest) {
        read_time(tag, body)?;
        rest = after;
    }
    let mut serials = Vec::new();
    if let Some((TAG_SEQUENCE, mut entries, _)) = read_tlv(rest) {
        while !entries.is_empty() {
            let (entry, after) = expect(entries, TAG_SEQUENCE)?;
            entries = after;
            let (serial, _) = expect(entry, TAG_INTEGER)?;
            serials.push(integer_magnitude(serial));
        }
    }
    Some(serials)
}

/// Decodes an attribute value of one of the string types certificates use.
fn decode_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => String::from_utf8(bytes.to_vec()).ok(),
        // TeletexString: in practice Latin-1.
        0x14 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE.
        0x1e => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The subject common name of a DER certificate. With several CN
/// attributes the last one wins, as in Go's `pkix.Name` (which etcd uses).
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let mut rdns = subject(cert)?;
    let mut found = None;
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, TAG_SET)?;
        rdns = rest;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, rest) = expect(attrs, TAG_SEQUENCE)?;
            attrs = rest;
            let (oid, value) = expect(attr, TAG_OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, bytes, _) = read_tlv(value)?;
                if let Some(s) = decode_string(tag, bytes) {
                    found = Some(s);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_the_common_name() {
        let der = cert_with(&[
            (rcgen::DnType::OrganizationName, "etcd"),
            (rcgen::DnType::CommonName, "root"),
        ]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("root"));
        let der = cert_with(&[(rcgen::DnType::CommonName, "ünïcode user")]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("ünïcode user"));
    }

    #[test]
    fn no_common_name_is_none() {
        let der = cert_with(&[(rcgen::DnType::OrganizationName, "etcd")]);
        assert_eq!(subject_common_name(&der), None);
    }

    #[test]
    fn reads_serial_names_validity_and_usages() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![
            "m1.example.com".to_string(),
            "127.0.0.7".to_string(),
            "::1".to_string(),
        ])
        .expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x9a, 0x01]));
        params.not_before = rcgen::date_time_ymd(2001, 2, 3);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        // Go's big.Int.Bytes(): no leading zero.
        assert_eq!(serial_number(&der), Some(vec![0x9a, 0x01]));
        assert_eq!(
            subject_alt_names(&der),
            Some(AltNames {
                dns: vec!["m1.example.com".into()],
                ips: vec!["127.0.0.7".parse().expect("ip"), "::1".parse().expect("ip")],
            })
        );
        // 2001-02-03 and 2099-12-31 (a GeneralizedTime past 2049).
        assert_eq!(validity(&der), Some((981_158_400, 4_102_358_400)));
        assert_eq!(extended_key_usages(&der), Some(Some(vec![OID_CLIENT_AUTH])));
        let spki = subject_public_key_info(&der).expect("spki");
        let pem = key.public_key_pem();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        let want = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        assert_eq!(spki, want.as_slice());

        // No extended key usage extension: any use.
        let bare = cert_with(&[(rcgen::DnType::CommonName, "x")]);
        assert_eq!(extended_key_usages(&bare), Some(None));
        assert_eq!(
            subject_alt_names(&bare),
            Some(AltNames {
                dns: vec![],
                ips: vec!["127.0.0.1".parse().expect("ip")],
            })
        );
    }

    #[test]
    fn integers_read_as_go_big_int_bytes() {
        assert_eq!(integer_magnitude(&[0x00, 0xff]), vec![0xff]);
        assert_eq!(integer_magnitude(&[0x01, 0x00]), vec![0x01, 0x00]);
        assert_eq!(integer_magnitude(&[0x00]), Vec::<u8>::new());
        // -255 and -1 (negative serials exist in the wild).
        assert_eq!(integer_magnitude(&[0xff, 0x01]), vec![0xff]);
        assert_eq!(integer_magnitude(&[0xff]), vec![0x01]);
    }

    #[test]
    fn reads_the_serials_a_crl_revokes() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params.self_signed(&key).expect("ca");
        let issuer = rcgen::Issuer::new(params, key);
        let crl = |serials: &[&[u8]]| {
            rcgen::CertificateRevocationListParams {
                this_update: rcgen::date_time_ymd(2024, 1, 1),
                next_update: rcgen::date_time_ymd(2060, 1, 1),
                crl_number: rcgen::SerialNumber::from(7u64),
                issuing_distribution_point: None,
                revoked_certs: serials
                    .iter()
                    .map(|s| rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(s),
                        revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            }
            .signed_by(&issuer)
            .expect("crl")
            .der()
            .to_vec()
        };
        assert_eq!(
            crl_revoked_serials(&crl(&[&[0x0c, 0xa1], &[0x00, 0x9a]])),
            Some(vec![vec![0x0c, 0xa1], vec![0x9a]])
        );
        assert_eq!(crl_revoked_serials(&crl(&[])), Some(vec![]));
        // A certificate is not a CRL.
        assert_eq!(crl_revoked_serials(&cert_with(&[])), None);
        let good = crl(&[&[1]]);
        for n in 0..good.len() {
            let _ = crl_revoked_serials(&good[..n]);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let der = cert_with(&[(rcgen::DnType::CommonName, "root")]);
        // Every truncation and a sweep of single-byte corruptions.
        let all = |der: &[u8]| {
            let _ = subject_common_name(der);
            let _ = serial_number(der);
            let _ = subject_alt_names(der);
            let _ = validity(der);
            let _ = extended_key_usages(der);
            let _ = subject_public_key_info(der);
            let _ = crl_revoked_serials(der);
        };
        for n in 0..der.len() {
            all(&der[..n]);
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            all(&bad);
        }
        for junk in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x1f, 0x00],
        ] {
            assert_eq!(subject_common_name(junk), None);
        }
    }
}
