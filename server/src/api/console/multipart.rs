//! A `multipart/form-data` body (RFC 7578) as the plugin forms send it: a
//! file field (the `.wasm`) and text fields. The body is already in memory
//! and bounded by the session layer; this only splits it, with a cap on
//! the number of parts. Nothing here is trusted: a malformed body is an
//! error the page shows, never a panic.

use bytes::Bytes;

/// Parts one form may have (the plugin forms have about ten).
pub const MAX_PARTS: usize = 64;

/// One field: its name, the file name if it is a file, and the bytes.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Bytes,
}

/// The boundary named by a `Content-Type: multipart/form-data; boundary=…`
/// header, if that is what it is.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A `name="…"` parameter of a `Content-Disposition` header.
fn disposition_param(header: &str, param: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case(param) {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_string(),
        )
    })
}

/// Splits `body` into its parts.
pub fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0).ok_or("the form body has no parts")?;
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        let rest = body.get(pos..).unwrap_or_default();
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err("the form body is malformed (no line break after a boundary)".into());
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("a form part has no end of headers")?;
        let head = body
            .get(pos..head_end)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or("a form part's headers are not UTF-8")?;
        let disposition = head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then_some(v.trim())
            })
            .ok_or("a form part has no Content-Disposition")?;
        let name = disposition_param(disposition, "name").ok_or("a form part has no name")?;
        let filename = disposition_param(disposition, "filename");
        let data_start = head_end + 4;
        let mut end_marker = Vec::with_capacity(delim.len() + 2);
        end_marker.extend_from_slice(b"\r\n");
        end_marker.extend_from_slice(delim);
        let data_end = find(body, &end_marker, data_start).ok_or("a form part is not closed")?;
        if parts.len() == MAX_PARTS {
            return Err(format!("the form has more than {MAX_PARTS} fields"));
        }
        parts.push(Part {
            name,
            filename,
            data: body.slice(data_start..data_end),
        });
        pos = data_end + 2;
    }
}

/// The first field named `name`, as text (lossy).
pub fn text(parts: &[Part], name: &str) -> Option<String> {
    parts
        .iter()
        .find(|p| p.name == name)
        .map(|p| String::from_utf8_lossy(&p.data).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_form_is_split_into_fields_and_files() {
        let b = boundary("multipart/form-data; boundary=----x1").unwrap();
        assert_eq!(b, "----x1");
        let body = Bytes::from_static(
            b"------x1\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n------x1\r\nContent-Disposition: form-data; name=\"wasm\"; filename=\"p.wasm\"\r\nContent-Type: application/wasm\r\n\r\n\x00asm\r\n\x01\r\n------x1--\r\n",
        );
        let parts = parse(&body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(text(&parts, "csrf").as_deref(), Some("abc"));
        assert_eq!(parts[1].filename.as_deref(), Some("p.wasm"));
        assert_eq!(&parts[1].data[..], b"\x00asm\r\n\x01");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(boundary("application/x-www-form-urlencoded").is_none());
        for body in [
            &b""[..],
            b"--b\r\nno headers end",
            b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--",
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nnever closed",
            b"--bX",
        ] {
            assert!(parse(&Bytes::copy_from_slice(body), "b").is_err());
        }
    }
}
