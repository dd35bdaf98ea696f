//! A bounded look at peer bytes before rust-protobuf decodes them.
//!
//! raft-rs 0.7 decodes its messages with rust-protobuf 2.28, which
//! RUSTSEC-2024-0437 flags for unbounded recursion into the groups of
//! unknown fields (a few kilobytes of nested group tags overflow the stack).
//! The 2.28 code we link happens to refuse a group nested in a group rather
//! than recurse, and caps known-message nesting at 100 — but that is an
//! accident of one version of a crate we do not control. So peer bytes pass
//! this check first: we walk the wire format iteratively along raft's own
//! schema (no groups, at most four levels: Message → Snapshot →
//! SnapshotMetadata → ConfState) and refuse any group, any malformed field,
//! and anything nested deeper. What passes cannot make any decoder recurse
//! more than the schema does.
//!
//! This bounds a decoder, it does not authenticate anyone: peer ports still
//! need `--peer-client-cert-auth` outside a private network (docs/security.md).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated field at byte {0}")]
    Truncated(usize),
    #[error("malformed varint at byte {0}")]
    Varint(usize),
    #[error("field number 0 at byte {0}")]
    FieldZero(usize),
    #[error("group or unknown wire type {wire_type} at byte {at}")]
    WireType { wire_type: u64, at: usize },
}

/// Which fields of a message are themselves messages (by field number).
#[derive(Clone, Copy)]
enum Schema {
    /// eraftpb.Message: 7 entries, 9 snapshot.
    Message,
    /// eraftpb.Entry: scalars and bytes only.
    Entry,
    /// eraftpb.Snapshot: 2 metadata.
    Snapshot,
    /// eraftpb.SnapshotMetadata: 1 conf_state.
    SnapshotMetadata,
    /// eraftpb.ConfState, and any field we treat as opaque bytes.
    Leaf,
}

impl Schema {
    fn nested(self, field: u64) -> Option<Schema> {
        match (self, field) {
            (Schema::Message, 7) => Some(Schema::Entry),
            (Schema::Message, 9) => Some(Schema::Snapshot),
            (Schema::Snapshot, 2) => Some(Schema::SnapshotMetadata),
            (Schema::SnapshotMetadata, 1) => Some(Schema::Leaf),
            _ => None,
        }
    }
}

/// Checks that `bytes` is a well-formed raft `Message` on the wire, with no
/// groups, before rust-protobuf sees it.
pub fn check_raft_message(bytes: &[u8]) -> Result<(), WireError> {
    check(bytes, Schema::Message)
}

/// The same check for a raft `ConfState` (a snapshot file's header): no
/// groups, and no field longer than what is left of the message —
/// rust-protobuf allocates an unknown bytes field's declared length (under
/// 10 MB) before it reads it.
pub fn check_conf_state(bytes: &[u8]) -> Result<(), WireError> {
    check(bytes, Schema::Leaf)
}

fn check(bytes: &[u8], top: Schema) -> Result<(), WireError> {
    // The schema is four levels deep, so an explicit stack of
    // (schema, end offset) never holds more than five frames.
    let mut stack: Vec<(Schema, usize)> = vec![(top, bytes.len())];
    let mut at = 0usize;
    while let Some(&(schema, end)) = stack.last() {
        if at == end {
            stack.pop();
            continue;
        }
        let field_at = at;
        let key = varint(bytes, &mut at, end)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return Err(WireError::FieldZero(field_at));
        }
        match wire_type {
            0 => {
                varint(bytes, &mut at, end)?;
            }
            1 => at = skip(at, 8, end)?,
            5 => at = skip(at, 4, end)?,
            2 => {
                let len = varint(bytes, &mut at, end)?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated(at))?;
                let body_end = skip(at, len, end)?;
                match schema.nested(field) {
                    Some(inner) => stack.push((inner, body_end)),
                    None => at = body_end,
                }
            }
            // 3 and 4 are groups; 6 and 7 do not exist.
            other => {
                return Err(WireError::WireType {
                    wire_type: other,
                    at: field_at,
                });
            }
        }
    }
    Ok(())
}

fn skip(at: usize, len: usize, end: usize) -> Result<usize, WireError> {
    at.checked_add(len)
        .filter(|&next| next <= end)
        .ok_or(WireError::Truncated(at))
}

fn varint(bytes: &[u8], at: &mut usize, end: usize) -> Result<u64, WireError> {
    let start = *at;
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if *at >= end {
            return Err(WireError::Truncated(start));
        }
        let b = *bytes.get(*at).ok_or(WireError::Truncated(start))?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Varint(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message as _;
    use raft::prelude::{ConfState, Entry, Message, MessageType, Snapshot};

    fn real_message() -> Vec<u8> {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        m.from = 1;
        m.term = 7;
        m.commit = 40;
        let e = Entry {
            index: 41,
            term: 7,
            data: vec![1, 2, 3].into(),
            context: vec![9; 300].into(),
            ..Default::default()
        };
        m.mut_entries().push(e.clone());
        m.mut_entries().push(e);
        let mut snap = Snapshot {
            data: vec![5; 1000].into(),
            ..Default::default()
        };
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        snap.mut_metadata().set_conf_state(cs);
        snap.mut_metadata().index = 40;
        m.set_snapshot(snap);
        m.context = b"ctx".to_vec().into();
        m.write_to_bytes().expect("encode")
    }

    #[test]
    fn real_messages_pass() {
        assert_eq!(check_raft_message(&real_message()), Ok(()));
        assert_eq!(check_raft_message(&[]), Ok(()));
    }

    #[test]
    fn nested_groups_are_refused_before_the_decoder_recurses() {
        // Field 100, start-group, a million times: what overflows a decoder
        // that recurses into groups.
        let bomb: Vec<u8> = std::iter::repeat_n([0xa3u8, 0x06], 1_000_000)
            .flatten()
            .collect();
        assert!(matches!(
            check_raft_message(&bomb),
            Err(WireError::WireType {
                wire_type: 3,
                at: 0
            })
        ));
        // The same hidden inside an entry.
        let mut inner = vec![0x08, 0x01];
        inner.extend_from_slice(&bomb[..200]);
        let mut m = vec![0x3a]; // field 7 (entries), length-delimited
        push_varint(&mut m, inner.len() as u64);
        m.extend_from_slice(&inner);
        assert!(matches!(
            check_raft_message(&m),
            Err(WireError::WireType { wire_type: 3, .. })
        ));
    }

    #[test]
    fn malformed_bytes_are_refused_never_panic() {
        let good = real_message();
        for cut in 0..good.len() {
            // A prefix is either a valid message or an error; never a panic.
            let _ = check_raft_message(&good[..cut]);
        }
        assert!(check_raft_message(&[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert_eq!(check_raft_message(&[0x00]), Err(WireError::FieldZero(0)));
        assert_eq!(
            check_raft_message(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(WireError::Varint(1))
        );
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            if check_raft_message(&b).is_ok() {
                // Whatever passes decodes without trouble.
                let _ = Message::parse_from_bytes(&b);
            }
        }
    }

    fn push_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
}
