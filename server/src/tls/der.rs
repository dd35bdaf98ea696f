//! Just enough DER to read a certificate's subject common name.
//!
//! The CN is the user name of a client with `--client-cert-auth` and what
//! `--peer-cert-allowed-cn` checks. rustls has already parsed and verified
//! the certificate by the time this runs, but the bytes still come from the
//! network, so every read is bounds-checked and anything unexpected yields
//! `None` rather than a panic.

/// The DER encoding of the `commonName` attribute type, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
/// `[0] EXPLICIT Version` at the start of a TBSCertificate.
const TAG_VERSION: u8 = 0xa0;

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

/// The DER-encoded subject `Name` of a certificate.
fn subject(cert: &[u8]) -> Option<&[u8]> {
    let (cert_body, _) = expect(cert, TAG_SEQUENCE)?;
    let (tbs, _) = expect(cert_body, TAG_SEQUENCE)?;
    let mut rest = tbs;
    // version (optional), serialNumber, signature, issuer, validity, subject
    let (tag, _, after) = read_tlv(rest)?;
    if tag == TAG_VERSION {
        rest = after;
    }
    for _ in 0..4 {
        let (_, _, after) = read_tlv(rest)?;
        rest = after;
    }
    let (name, _) = expect(rest, TAG_SEQUENCE)?;
    Some(name)
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
    fn garbage_never_panics() {
        let der = cert_with(&[(rcgen::DnType::CommonName, "root")]);
        // Every truncation and a sweep of single-byte corruptions.
        for n in 0..der.len() {
            let _ = subject_common_name(&der[..n]);
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = subject_common_name(&bad);
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
