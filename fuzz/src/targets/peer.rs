//! Messages from the peer port (`transport/service.rs`) and the raft
//! entries peers replicate (`server/apply.rs`).
//!
//! Input: a selector byte, then one encoded message:
//! - raft `Message` bytes, as the peer service takes them: the bounded wire
//!   check (`raftwire::check_raft_message`), then rust-protobuf;
//! - a `RaftBatch` or `SnapshotChunk` (prost), each raft message in it as
//!   above;
//! - every other prost message the peer service or the apply loop decodes
//!   (forwarded membership and lease calls, `InternalRequest`,
//!   `MemberChange`, `Membership`, plugin sets) and raft's `ConfChange`s.
//!
//! Checks: nothing panics or overflows the stack (the driver runs targets
//! on a thread with tokio's 2 MiB worker stack); a message that decodes
//! re-encodes to bytes that decode to the same message (for rust-protobuf:
//! the same known fields), and prost's `encoded_len` is the length it
//! encodes to.
//!
//! Found on the way (rust-protobuf 2.28, which raft-rs pins, not Cairn): a
//! singular message field that occurs twice is replaced by the second
//! occurrence instead of merged as protobuf specifies (a `ConfState` sent
//! as `voters: [2, 3]` then `{}` decodes empty); unknown fields are kept in
//! a HashMap, so they re-encode in a different order each time; and its
//! `PartialEq` tells an empty unknown-field set from none. Every member
//! decodes alike, so this changes nothing a forging peer could not do anyway.

use super::{Cursor, MIB};
use crate::engine::{Outcome, Target, feature, tag};
use cairn::pb::cairnpb;
use cairn::pb::etcdserverpb as pb;
use cairn::raftwire::check_raft_message;
use protobuf::Message as _;

pub const TARGET: Target = Target {
    name: "peer-messages",
    about: "peer-port and raft-entry messages: wire check + rust-protobuf raft Message, prost decodes, round trips",
    run,
    dict: &[
        // Tags: raft Message fields (msg_type, to, from, term, entries,
        // snapshot...), length-delimited, groups, bad wire types.
        b"\x08\x03",
        b"\x10\x01",
        b"\x18\x02",
        b"\x20\x05",
        b"\x3a\x00",
        b"\x3a\x04\x10\x01\x18\x01",
        b"\x4a\x00",
        b"\x4a\x06\x12\x04\x0a\x02\x08\x01",
        b"\x0a\x00",
        b"\x12\x00",
        b"\x1a\x00",
        b"\x0b",
        b"\x0c",
        b"\x0e",
        b"\x0f",
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
        b"\xff\xff\xff\xff\x0f",
        b"\x0a\x7f",
    ],
    max_len: 16 * 1024,
    // rust-protobuf 2.28 allocates a bytes field's declared length before
    // reading it when it is under 10 MB (`READ_RAW_BYTES_MAX_ALLOC`): a
    // 20-byte raft message can make it allocate that much.
    heap_budget_bytes: 12 * MIB,
};

/// A raft message as the peer service reads it. Returns a feature word.
fn raft_message(bytes: &[u8]) -> Result<&'static str, String> {
    let checked = check_raft_message(bytes);
    // Production decodes only what passed the check; the fuzzer decodes
    // the rest too, since the check is what keeps the decoder safe.
    let decoded = raft::eraftpb::Message::parse_from_bytes(bytes);
    let (Ok(()), Ok(m)) = (&checked, &decoded) else {
        return Ok(match (checked.is_ok(), decoded.is_ok()) {
            (true, false) => "check passed, decode failed",
            (false, true) => "check refused, decode passed",
            _ => "refused",
        });
    };
    let again = m
        .write_to_bytes()
        .map_err(|e| format!("a decoded raft message does not encode: {e}"))?;
    check_raft_message(&again)
        .map_err(|e| format!("the wire check refuses a re-encoded raft message: {e}"))?;
    let mut back = raft::eraftpb::Message::parse_from_bytes(&again)
        .map_err(|e| format!("a re-encoded raft message does not decode: {e}"))?;
    let mut m = m.clone();
    known_only(&mut m);
    known_only(&mut back);
    if back != m {
        return Err(format!(
            "a raft message changed through encode and decode: {m:?} became {back:?}"
        ));
    }
    Ok("raft message")
}

/// A prost message: decode, and if that works, the round trip.
fn prost_round_trip<M: prost::Message + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<Option<M>, String> {
    let Ok(m) = M::decode(bytes) else {
        return Ok(None);
    };
    let again = m.encode_to_vec();
    if again.len() != m.encoded_len() {
        return Err(format!(
            "encoded_len {} but {} bytes encoded",
            m.encoded_len(),
            again.len()
        ));
    }
    let back =
        M::decode(&again[..]).map_err(|e| format!("re-encoded message does not decode: {e}"))?;
    if back != m {
        return Err(format!("message changed through encode and decode: {m:?}"));
    }
    Ok(Some(m))
}

/// rust-protobuf keeps unknown fields in a HashMap (re-encoded in no fixed
/// order) and its `PartialEq` tells an empty set from none: round trips
/// are compared on the known fields.
fn known_only(m: &mut raft::eraftpb::Message) {
    use raft::eraftpb::Message as M;
    *M::mut_unknown_fields(m) = Default::default();
    for e in m.mut_entries().iter_mut() {
        *protobuf::Message::mut_unknown_fields(e) = Default::default();
    }
    if m.has_snapshot() {
        let s = m.mut_snapshot();
        *protobuf::Message::mut_unknown_fields(s) = Default::default();
        if s.has_metadata() {
            let md = s.mut_metadata();
            *protobuf::Message::mut_unknown_fields(md) = Default::default();
            if md.has_conf_state() {
                *protobuf::Message::mut_unknown_fields(md.mut_conf_state()) = Default::default();
            }
        }
    }
}

/// A raft `ConfChange`/`ConfChangeV2`: the same round trip on the known
/// fields (`strip` drops the unknown ones).
fn protobuf_round_trip<M: protobuf::Message + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    strip: fn(&mut M),
) -> Result<bool, String> {
    let Ok(mut m) = M::parse_from_bytes(bytes) else {
        return Ok(false);
    };
    let again = m.write_to_bytes().map_err(|e| e.to_string())?;
    let mut back = M::parse_from_bytes(&again).map_err(|e| e.to_string())?;
    strip(&mut m);
    strip(&mut back);
    if back != m {
        return Err(format!(
            "raft message changed through encode and decode: {m:?} became {back:?}"
        ));
    }
    Ok(true)
}

fn strip_conf_change(m: &mut raft::eraftpb::ConfChange) {
    *protobuf::Message::mut_unknown_fields(m) = Default::default();
}

fn strip_conf_change_v2(m: &mut raft::eraftpb::ConfChangeV2) {
    *protobuf::Message::mut_unknown_fields(m) = Default::default();
    for c in m.mut_changes().iter_mut() {
        *protobuf::Message::mut_unknown_fields(c) = Default::default();
    }
}

fn run(data: &[u8]) -> Outcome {
    let mut c = Cursor::new(data);
    let selector = c.byte() % 20;
    let bytes = c.rest();
    let word: String = match selector {
        0..=3 => raft_message(bytes)?.into(),
        4 | 5 => match prost_round_trip::<cairnpb::RaftBatch>(bytes)? {
            Some(batch) => {
                let mut words = Vec::new();
                for m in batch.messages.iter().take(64) {
                    words.push(raft_message(m)?);
                }
                words.sort_unstable();
                words.dedup();
                format!("batch {}", words.join(","))
            }
            None => "batch refused".into(),
        },
        6 => match prost_round_trip::<cairnpb::SnapshotChunk>(bytes)? {
            Some(cairnpb::SnapshotChunk {
                chunk: Some(cairnpb::snapshot_chunk::Chunk::Message(m)),
            }) => format!("snapshot header {}", raft_message(&m)?),
            Some(_) => "snapshot chunk".into(),
            None => "snapshot chunk refused".into(),
        },
        7 => decoded(prost_round_trip::<cairnpb::InternalRequest>(bytes)?),
        8 => decoded(prost_round_trip::<cairnpb::MemberChange>(bytes)?),
        9 => decoded(prost_round_trip::<cairnpb::Membership>(bytes)?),
        10 => decoded(prost_round_trip::<cairnpb::PluginSetChange>(bytes)?),
        11 => decoded(prost_round_trip::<cairnpb::LeaseRenewRequest>(bytes)?),
        12 => decoded(prost_round_trip::<pb::LeaseTimeToLiveRequest>(bytes)?),
        13 => decoded(prost_round_trip::<pb::MemberAddRequest>(bytes)?),
        14 => decoded(prost_round_trip::<pb::MemberUpdateRequest>(bytes)?),
        15 => decoded(prost_round_trip::<pb::MoveLeaderRequest>(bytes)?),
        16 => decoded(prost_round_trip::<pb::TxnRequest>(bytes)?),
        17 => decoded(prost_round_trip::<cairnpb::PluginSet>(bytes)?),
        18 => bool_word(protobuf_round_trip(bytes, strip_conf_change)?),
        _ => bool_word(protobuf_round_trip(bytes, strip_conf_change_v2)?),
    };
    Ok(feature(&[&word, &tag(selector.into())]))
}

fn decoded<M>(m: Option<M>) -> String {
    bool_word(m.is_some())
}

fn bool_word(ok: bool) -> String {
    if ok { "decoded" } else { "refused" }.into()
}
