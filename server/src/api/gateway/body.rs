//! Reading JSON values off a request body the way Go's `json.Decoder` does:
//! one value at a time (a watch or keep-alive body carries several, and the
//! client may still be sending while responses stream back), leading
//! whitespace skipped, anything after a unary request's value ignored.

use super::gojson::{Op, Scanner};
use http_body_util::BodyExt as _;

#[derive(Debug)]
pub(super) enum ReadError {
    /// Go's syntax error text.
    Syntax(String),
    /// The body ended inside a value (Go: "unexpected EOF").
    UnexpectedEof,
    /// One value outgrew the bound; the size to report.
    TooLarge(usize),
    /// The connection failed while reading.
    Io(String),
}

impl ReadError {
    /// The text etcd's gateway puts in the error body.
    pub(super) fn message(&self) -> String {
        match self {
            ReadError::Syntax(m) | ReadError::Io(m) => m.clone(),
            ReadError::UnexpectedEof => "unexpected EOF".to_string(),
            ReadError::TooLarge(n) => format!("{n} bytes"),
        }
    }
}

pub(super) struct BodyReader {
    body: axum::body::Body,
    buf: Vec<u8>,
    /// Start of the current value in `buf` (leading whitespace dropped).
    start: usize,
    /// Next byte to scan.
    pos: usize,
    scanner: Scanner,
    eof: bool,
    /// Bytes one value may take before it is refused.
    limit: usize,
    content_length: Option<usize>,
}

impl BodyReader {
    pub(super) fn new(
        body: axum::body::Body,
        limit: usize,
        content_length: Option<usize>,
    ) -> BodyReader {
        BodyReader {
            body,
            buf: Vec::new(),
            start: 0,
            pos: 0,
            scanner: Scanner::default(),
            eof: false,
            limit,
            content_length,
        }
    }

    /// The next JSON value's text; `None` when the body ended cleanly
    /// (only whitespace left).
    pub(super) async fn next_value(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        // Forget what earlier values used; a new value starts a new scan.
        self.buf.drain(..self.pos);
        self.start = 0;
        self.pos = 0;
        self.scanner = Scanner::default();
        loop {
            while let Some(&c) = self.buf.get(self.pos) {
                match self.scanner.step(c) {
                    Op::Continue => {
                        self.pos += 1;
                        if self.scanner.at_start() {
                            // Still whitespace before the value.
                            self.start = self.pos;
                        }
                    }
                    // The byte after a scalar ends it and stays unread.
                    Op::End => return self.finish(),
                    Op::Closed => {
                        self.pos += 1;
                        return self.finish();
                    }
                    Op::Error => return Err(ReadError::Syntax(self.scanner.error().to_string())),
                }
            }
            if self.pos - self.start > self.limit {
                return Err(self.too_large());
            }
            if self.eof {
                // A top-level number or literal ends at the end of input.
                if self.scanner.step(b' ') == Op::End {
                    return self.finish();
                }
                return if self.start < self.pos {
                    Err(ReadError::UnexpectedEof)
                } else {
                    Ok(None)
                };
            }
            if self.start == self.pos && self.start > 0 {
                // Do not keep whitespace around.
                self.buf.drain(..self.start);
                self.start = 0;
                self.pos = 0;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(ReadError::Io(e.to_string())),
                None => self.eof = true,
            }
        }
    }

    fn finish(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        if self.pos - self.start > self.limit {
            return Err(self.too_large());
        }
        // `start <= pos <= buf.len()` always holds: the scan only moves
        // `pos` over bytes in `buf`, and `start` never passes `pos`.
        let value = self.buf.get(self.start..self.pos).unwrap_or_default();
        Ok(Some(value.to_vec()))
    }

    fn too_large(&self) -> ReadError {
        // A unary body is one value, so its length is the best measure the
        // client can relate to.
        let held = self.pos - self.start;
        ReadError::TooLarge(self.content_length.unwrap_or(0).max(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(chunks: &[&'static str]) -> BodyReader {
        let frames: Vec<Result<bytes::Bytes, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(bytes::Bytes::from_static(c.as_bytes())))
            .collect();
        let body = axum::body::Body::from_stream(futures::stream::iter(frames));
        BodyReader::new(body, 64, None)
    }

    async fn all(mut r: BodyReader) -> (Vec<String>, Option<String>) {
        let mut values = Vec::new();
        loop {
            match r.next_value().await {
                Ok(Some(v)) => values.push(String::from_utf8(v).unwrap()),
                Ok(None) => return (values, None),
                Err(e) => return (values, Some(e.message())),
            }
        }
    }

    #[tokio::test]
    async fn splits_values_across_chunks() {
        let (v, e) = all(reader(&[
            " {\"a\":",
            "1} \n{\"b\"",
            ":[2]}",
            "3 ",
            "\"x\"",
            "  ",
        ]))
        .await;
        assert_eq!(v, ["{\"a\":1}", "{\"b\":[2]}", "3", "\"x\""]);
        assert_eq!(e, None);
    }

    #[tokio::test]
    async fn errors_like_go_decoder() {
        let (v, e) = all(reader(&["{\"a\":1}x"])).await;
        assert_eq!(v, ["{\"a\":1}"]);
        assert_eq!(
            e.as_deref(),
            Some("invalid character 'x' looking for beginning of value")
        );
        let (v, e) = all(reader(&["{\"a\":"])).await;
        assert!(v.is_empty());
        assert_eq!(e.as_deref(), Some("unexpected EOF"));
        let (v, e) = all(reader(&["12"])).await;
        assert_eq!((v, e), (vec!["12".to_string()], None));
        let (v, e) = all(reader(&[""])).await;
        assert_eq!((v.len(), e), (0, None));
    }

    #[tokio::test]
    async fn bounds_one_value() {
        let big: &'static str =
            Box::leak(format!("{{\"k\":\"{}\"}}", "x".repeat(100)).into_boxed_str());
        let (_, e) = all(reader(&["{}", big])).await;
        assert_eq!(e.as_deref(), Some("108 bytes"));
        // Whitespace between values does not count.
        let pad: &'static str = Box::leak(" ".repeat(1000).into_boxed_str());
        let (v, e) = all(reader(&[pad, "{}", pad, "{}"])).await;
        assert_eq!((v.len(), e), (2, None));
    }
}
