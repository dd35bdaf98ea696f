//! The HTTP/2 `:authority` rewriter (`net/h2_authority.rs`), checked
//! against a second HPACK decoder (`fluke-hpack`, a maintained fork of the
//! `hpack` crate).
//!
//! `h2-authority`: bytes a client sends, read through `NormalizeAuthority`
//! in pieces of varying size. Checks: a stream that does not start with
//! the HTTP/2 preface comes out unchanged; otherwise every frame other
//! than HEADERS/CONTINUATION comes out unchanged and in order, and the
//! header lists an HPACK decoder reads from the output (one decoder for the
//! connection, so dynamic-table state carries over) equal those it reads
//! from the input, except `:authority` values that were normalized.
//!
//! The same two streams also go to an `h2` server (the crate hyper serves
//! HTTP/2 with): every request it accepts from the original stream it must
//! accept, unchanged, from the rewritten one, and unless the rewrite got a
//! request through, the connection must end the same way (cleanly, or with
//! the same error code) — a rewrite that put the server's HPACK table out
//! of step would break both.
//!
//! `hpack`: one header block. Checks: the rewritten block decodes to the
//! original list with URL-shaped `:authority` values normalized; a block
//! the decoder accepts is one the rewriter's walker can read (otherwise it
//! would skip rewriting blocks `h2` accepts); rewriting is idempotent; and
//! the rewriter's Huffman decoder agrees with the other one.

use super::{Cursor, MIB};
use crate::alloc;
use crate::engine::{Outcome, Target, feature, held_since, reference, with_count};
use cairn::fuzz_api::h2::{
    NormalizeAuthority, huffman_decode, literals, normalize_authority, rewrite_block,
};
use fluke_hpack::Decoder;
use fluke_hpack::huffman::HuffmanDecoder;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DICT: &[&[u8]] = &[
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    // Frame headers: HEADERS END_HEADERS stream 1; CONTINUATION; padded,
    // priority; SETTINGS; DATA.
    b"\x00\x00\x10\x01\x04\x00\x00\x00\x01",
    b"\x00\x00\x10\x01\x00\x00\x00\x00\x01",
    b"\x00\x00\x08\x09\x04\x00\x00\x00\x01",
    b"\x00\x00\x08\x09\x00\x00\x00\x00\x01",
    b"\x00\x00\x10\x01\x2c\x00\x00\x00\x03",
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"\x00\x00\x05\x00\x01\x00\x00\x00\x01",
    // HPACK: :authority literal with indexing / without / never, static
    // indexed :method POST, :scheme http, a table size update, Huffman.
    b"\x41\x15http://127.0.0.1:2379",
    b"\x01\x0funix://a/b:2379",
    b"\x11\x0ahttps://h:1",
    b"\x40\x0a:authority\x0ahttp://x:1",
    b"\x83",
    b"\x86",
    b"\xbe",
    b"\x3f\xe1\x1f",
    b"\x20",
    b"\x41\x8b",
    b"\x7f\x00",
    b"://",
    b"http",
];

pub const AUTHORITY_STREAM: Target = Target {
    name: "h2-authority",
    about: "HTTP/2 client bytes through NormalizeAuthority; frames and decoded header lists compared",
    run: authority_stream,
    dict: DICT,
    max_len: 16 * 1024,
    heap_budget_bytes: 8 * MIB,
};

pub const HPACK: Target = Target {
    name: "hpack",
    about: "one HPACK header block: rewrite_block vs the fluke-hpack decoder; Huffman differential",
    run: hpack_block,
    dict: DICT,
    max_len: 4096,
    heap_budget_bytes: MIB,
};

/// An in-memory client whose bytes arrive in the given piece sizes.
struct Pieces {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = size.min(buf.remaining()).min(self.data.len() - self.pos);
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Reads everything through the rewriter with buffers of varying size.
fn transform(input: &[u8], sizes: Vec<usize>, outer: usize) -> Result<Vec<u8>, String> {
    let mut na = NormalizeAuthority::new(Pieces {
        data: input.to_vec(),
        pos: 0,
        sizes,
        turn: 0,
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; outer];
    // Each read makes progress or ends the stream; the output of a 16 KiB
    // input is bounded, so this bound only catches a loop.
    for _ in 0..(input.len() * 4 + 64) {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut na).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                if rb.filled().is_empty() {
                    return Ok(out);
                }
                out.extend_from_slice(rb.filled());
            }
            Poll::Ready(Err(e)) => return Err(format!("read error from an in-memory stream: {e}")),
            Poll::Pending => return Err("pending on a stream that is always ready".into()),
        }
    }
    Err("the rewriter did not reach the end of the stream".into())
}

/// A frame as a server would read it.
#[derive(Debug, PartialEq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// The complete frames after the preface.
fn frames(b: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = PREFACE.len();
    while at + 9 <= b.len() {
        let len =
            (usize::from(b[at]) << 16) | (usize::from(b[at + 1]) << 8) | usize::from(b[at + 2]);
        let Some(payload) = b.get(at + 9..at + 9 + len) else {
            break;
        };
        out.push(Frame {
            kind: b[at + 3],
            flags: b[at + 4],
            stream: u32::from_be_bytes([b[at + 5], b[at + 6], b[at + 7], b[at + 8]]) & 0x7fff_ffff,
            payload: payload.to_vec(),
        });
        at += 9 + len;
    }
    out
}

/// Splits frames into header blocks (HEADERS + CONTINUATIONs, fragments
/// joined, padding and priority removed) and everything else, up to the
/// first framing error h2 would refuse the connection for.
fn split(frames: &[Frame]) -> (Vec<Vec<u8>>, Vec<&Frame>) {
    let mut blocks = Vec::new();
    let mut others = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    for f in frames {
        match (f.kind, open.as_mut()) {
            (0x9, Some(block)) => {
                block.extend_from_slice(&f.payload);
                if f.flags & 0x4 != 0 {
                    blocks.push(open.take().unwrap_or_default());
                }
            }
            (0x1, None) => {
                let mut p = &f.payload[..];
                let mut pad = 0;
                if f.flags & 0x8 != 0 {
                    let Some((&n, rest)) = p.split_first() else {
                        break;
                    };
                    pad = usize::from(n);
                    p = rest;
                }
                if f.flags & 0x20 != 0 {
                    let Some(rest) = p.get(5..) else { break };
                    p = rest;
                }
                let Some(frag) = p.len().checked_sub(pad).map(|n| &p[..n]) else {
                    break;
                };
                if f.flags & 0x4 != 0 {
                    blocks.push(frag.to_vec());
                } else {
                    open = Some(frag.to_vec());
                }
            }
            (_, Some(_)) | (0x9, None) => break,
            _ => others.push(f),
        }
    }
    (blocks, others)
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What the rewriter may hold for one input (its own allocations; the
/// reference decoder's are not counted, see `engine::reference`).
const OWN_HEAP_BUDGET_BYTES: usize = 4 * MIB;

/// A decoder with h2's default table size limit (SETTINGS_HEADER_TABLE_SIZE
/// 4096, which hyper's server keeps).
fn decoder() -> Decoder<'static> {
    let mut d = Decoder::new();
    d.set_max_allowed_table_size(4096);
    d
}

/// The reference decoder's reading of a block; None if it refuses it (or
/// panics: fluke-hpack 0.3.1 unwraps a malformed size-update integer).
fn decode(d: &mut Decoder<'static>, block: &[u8]) -> Option<Fields> {
    reference(|| d.decode(block).ok()).flatten()
}

/// [`decode`] with a decoder of its own (dropped before the heap is
/// measured again).
fn decode_fresh(block: &[u8]) -> Option<Fields> {
    reference(|| decoder().decode(block).ok()).flatten()
}

thread_local! {
    /// fluke-hpack builds its Huffman tables in `new`: once per thread.
    static HUFFMAN: std::cell::RefCell<HuffmanDecoder> =
        std::cell::RefCell::new(HuffmanDecoder::new());
}

fn check_own_heap(base: usize) -> Result<(), String> {
    let held = held_since(base);
    if held > OWN_HEAP_BUDGET_BYTES {
        return Err(format!("the rewriter held {held} heap bytes for one input"));
    }
    Ok(())
}

/// `got` is `want` with some `:authority` values normalized.
fn same_modulo_authority(want: &Fields, got: &Fields) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(format!(
            "{} fields decoded from the input, {} from the output",
            want.len(),
            got.len()
        ));
    }
    for ((wn, wv), (gn, gv)) in want.iter().zip(got) {
        if wn != gn {
            return Err(format!(
                "field name {:?} became {:?}",
                String::from_utf8_lossy(wn),
                String::from_utf8_lossy(gn)
            ));
        }
        let normalized = wn == b":authority" && normalize_authority(wv) == Some(&gv[..]);
        if wv != gv && !normalized {
            return Err(format!(
                "{} value {:?} became {:?}",
                String::from_utf8_lossy(wn),
                String::from_utf8_lossy(wv),
                String::from_utf8_lossy(gv)
            ));
        }
    }
    Ok(())
}

/// What an `h2` server made of a client's bytes: each request it accepted
/// by stream ID (method, URI, headers), and how the connection ended.
#[derive(Debug, Default)]
struct Served {
    /// Requests compared before and after, by stream.
    requests: std::collections::BTreeMap<u32, String>,
    /// Every request h2 accepted, compared or not.
    accepted: usize,
    end: String,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

fn serve_h2(bytes: &[u8]) -> Served {
    let bytes = bytes.to_vec();
    runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let feed = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let _ = client.write_all(&bytes).await;
            // Let the server read everything before the end of the stream:
            // on EOF h2 drops requests not yet accepted.
            for _ in 0..256 {
                tokio::task::yield_now().await;
            }
            let _ = client.shutdown().await;
            // Read what the server writes, so it never blocks on us.
            let mut sink = vec![0u8; 16 * 1024];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let mut served = Served::default();
        let run = async {
            // hyper's server refuses header lists over 16 KiB.
            let mut conn = match h2::server::Builder::new()
                .max_header_list_size(16 << 10)
                .handshake::<_, bytes::Bytes>(server)
                .await
            {
                Ok(c) => c,
                Err(e) => return format!("handshake: {:?}", e.reason()),
            };
            while let Some(next) = conn.accept().await {
                match next {
                    Ok((req, mut respond)) => {
                        let id: u32 = respond.stream_id().into();
                        served.accepted += 1;
                        let mut headers: Vec<String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| format!("{k}: {v:?}"))
                            .collect();
                        headers.sort();
                        // h2 0.4.20 resets a block with a pseudo-header after
                        // a regular field when it comes in one HEADERS frame,
                        // but accepts it (pseudo-headers dropped: no
                        // :authority, no :path) when CONTINUATION frames carry
                        // part of it. The rewriter re-frames blocks, so such a
                        // request may come out refused: h2's inconsistency, not
                        // a changed request. Requests without a path are
                        // left out of the comparison.
                        if req.uri().path().is_empty() {
                            respond.send_reset(h2::Reason::NO_ERROR);
                            continue;
                        }
                        served
                            .requests
                            .insert(id, format!("{} {} {headers:?}", req.method(), req.uri()));
                        respond.send_reset(h2::Reason::NO_ERROR);
                    }
                    Err(e) => return format!("error {:?}", e.reason()),
                }
            }
            "closed".to_string()
        };
        served.end = tokio::time::timeout(std::time::Duration::from_secs(5), run)
            .await
            .unwrap_or_else(|_| "timed out".into());
        feed.abort();
        served
    })
}

/// `h2` accepts from the rewrite every request it accepts from the
/// original, unchanged, and ends the connection the same way. Returns how
/// many more requests the rewrite got through.
///
/// When the rewrite `normalized` an `:authority`, a request h2 refused
/// (its stream reset, later frames on it ignored) may now be valid, and
/// h2 judges the frames after it on an open stream: DATA after END_STREAM
/// then ends the connection with PROTOCOL_ERROR where it was ignored
/// before, even if h2 never got to yield the request. What must still hold
/// is what a rewrite could break: no COMPRESSION_ERROR (the HPACK table
/// out of step) that the original did not have.
fn compare_h2(input: &[u8], output: &[u8], normalized: bool) -> Result<usize, String> {
    let before = serve_h2(input);
    let after = serve_h2(output);
    // Counted over every accepted request, the pathless ones left out of
    // the comparison below included: such a request also opens its stream.
    let rescued = after.accepted.saturating_sub(before.accepted);
    // A request the rewrite got through opens a stream h2 had reset before,
    // so frames after it are judged anew (DATA after END_STREAM was ignored
    // on the reset stream, and is a protocol error on the open one).
    let compression = |end: &str| end.contains("COMPRESSION_ERROR");
    if normalized && compression(&after.end) && !compression(&before.end) {
        return Err(format!(
            "h2 lost the HPACK table after the rewrite: {} before, {} after",
            before.end, after.end
        ));
    }
    if !normalized && rescued == 0 && before.end != after.end {
        return Err(format!(
            "h2 ends the connection differently: {} before the rewrite, {} after",
            before.end, after.end
        ));
    }
    for (id, req) in &before.requests {
        match after.requests.get(id) {
            Some(r) if r == req => {}
            other => {
                return Err(format!(
                    "h2 request changed by the rewrite: stream {id}: {req} became {other:?}"
                ));
            }
        }
    }
    Ok(rescued)
}

fn authority_stream(data: &[u8]) -> Outcome {
    let mut c = Cursor::new(data);
    let shape = c.byte();
    let outer = 1 + usize::from(c.byte()) * 64;
    let input = c.rest();
    let sizes: Vec<usize> = match shape % 4 {
        0 => vec![usize::MAX],
        1 => vec![1],
        2 => vec![7, 1, 300, 9, 16_384],
        _ => vec![1 + usize::from(shape / 4)],
    };
    let base = alloc::reset_peak();
    let output = transform(input, sizes, outer)?;
    check_own_heap(base)?;
    let is_h2 = input.starts_with(PREFACE);
    if !is_h2 {
        if output != input {
            return Err("a stream without the HTTP/2 preface was changed".into());
        }
        return Ok(feature(&["passthrough"]));
    }
    let (in_frames, out_frames) = (frames(input), frames(&output));
    let (in_blocks, in_other) = split(&in_frames);
    let (out_blocks, out_other) = split(&out_frames);
    if in_other.len() != out_other.len() || in_other.iter().zip(&out_other).any(|(a, b)| a != b) {
        return Err(format!(
            "frames other than header blocks changed: {} before, {} after",
            in_other.len(),
            out_other.len()
        ));
    }
    if output == input {
        // Unchanged bytes: h2 reads them alike by definition.
        return Ok(with_count(feature(&["unchanged"]), in_blocks.len()));
    }
    if out_blocks.len() != in_blocks.len() {
        return Err(format!(
            "{} header blocks in, {} out",
            in_blocks.len(),
            out_blocks.len()
        ));
    }
    let mut din = decoder();
    let mut dout = decoder();
    let mut compared = 0;
    let mut normalized = false;
    for (bi, bo) in in_blocks.iter().zip(&out_blocks) {
        let Some(want) = decode(&mut din, bi) else {
            break;
        };
        let got = decode(&mut dout, bo)
            .ok_or("the decoder accepts an input block but not its rewrite")?;
        same_modulo_authority(&want, &got)?;
        normalized |= want != got;
        compared += 1;
    }
    // The reference decoders' tables are not the rewriter's memory.
    drop((din, dout));
    let rescued = reference(|| compare_h2(input, &output, normalized))
        .unwrap_or_else(|| Err("the h2 comparison panicked".into()))?;
    Ok(with_count(
        with_count(feature(&["rewritten"]), compared),
        rescued << 8,
    ))
}

fn hpack_block(data: &[u8]) -> Outcome {
    let base = alloc::reset_peak();
    let ours = huffman_decode(data);
    let walked = literals(data);
    let rewritten = rewrite_block(data);
    let again = rewritten.as_deref().map(rewrite_block);
    check_own_heap(base)?;

    // The Huffman decoders must agree on every input.
    let theirs = reference(|| HUFFMAN.with(|h| h.borrow_mut().decode(data).ok())).flatten();
    if ours != theirs {
        return Err(format!(
            "Huffman decoders disagree: ours {:?}, fluke-hpack {:?}",
            ours.as_deref().map(String::from_utf8_lossy),
            theirs.as_deref().map(String::from_utf8_lossy)
        ));
    }
    let decoded = decode_fresh(data);
    if decoded.is_some() && walked.is_none() {
        return Err("the decoder accepts a block the rewriter's walker calls malformed".into());
    }
    let Some(out) = rewritten else {
        return Ok(feature(&[
            "unchanged",
            if decoded.is_some() {
                "valid"
            } else {
                "invalid"
            },
        ]));
    };
    if again.flatten().is_some() {
        return Err("rewriting a rewritten block changed it again".into());
    }
    let Some(want) = decoded else {
        return Ok(feature(&["rewrote an invalid block"]));
    };
    let got = decode_fresh(&out).ok_or("the decoder accepts a block but not its rewrite")?;
    same_modulo_authority(&want, &got)?;
    let changed = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    if changed == 0 {
        return Err("rewrite_block returned a block that decodes the same".into());
    }
    Ok(with_count(feature(&["rewritten"]), changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcdctl's `endpoint status` bytes (the recorded seed): `h2` refuses
    /// the URL-shaped `:authority` as sent and accepts the rewrite.
    #[test]
    fn the_rewrite_gets_etcdctls_request_through_h2() {
        let seed = include_bytes!("../../corpus/h2-authority/etcdctl-es");
        let input = &seed[2..];
        let output = transform(input, vec![usize::MAX], 4096).unwrap();
        assert_ne!(output, input);
        assert_eq!(compare_h2(input, &output, true), Ok(1));
        assert!(authority_stream(seed).is_ok());
    }
}
