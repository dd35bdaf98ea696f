//! What a raft entry of etcd 3.4 carries.
//!
//! A normal entry's data is an `etcdserverpb.InternalRaftRequest` (v3
//! requests, field numbers below) or, when that does not parse, a bare v2
//! `Request` — etcd 3.4 still proposes those for v2 writes, member attribute
//! publication, cluster version updates and `SYNC`. etcd tells them apart
//! by trying the v3 parse; a v2 `Request`'s `Method` string (field 2) never
//! parses as the nested message field 2 holds in the v3 envelope, so the
//! check below — known fields with their wire types, nested messages
//! well-formed at their top level, no groups — draws the same line.
//!
//! Each v3 request stays raw bytes: the server decodes it with its own etcd
//! types. Repeated occurrences of one field are concatenated, which is how
//! protobuf merges repeated embedded messages.

use crate::pb::etcdserverpb::{Request, RequestHeader};
use crate::pb::raftpb::{ConfChange, ConfChangeV2, Entry, entry_type};
use bytes::Bytes;
use prost::Message as _;

/// The request fields of `InternalRaftRequest`, in the order etcd's apply
/// loop tests them (the first one set is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compaction,
    LeaseGrant,
    LeaseRevoke,
    LeaseCheckpoint,
    Alarm,
    Authenticate,
    AuthEnable,
    AuthDisable,
    AuthUserAdd,
    AuthUserDelete,
    AuthUserGet,
    AuthUserChangePassword,
    AuthUserGrantRole,
    AuthUserRevokeRole,
    AuthUserList,
    AuthRoleList,
    AuthRoleAdd,
    AuthRoleDelete,
    AuthRoleGet,
    AuthRoleGrantPermission,
    AuthRoleRevokePermission,
    /// etcd 3.5's `membershippb.ClusterVersionSetRequest`; never in a 3.4 WAL.
    ClusterVersionSet,
    /// etcd 3.5's `membershippb.ClusterMemberAttrSetRequest`; never in a 3.4 WAL.
    ClusterMemberAttrSet,
}

/// Field number of each request kind, in apply order.
pub const REQUEST_FIELDS: [(RequestKind, u32); 27] = [
    (RequestKind::Range, 3),
    (RequestKind::Put, 4),
    (RequestKind::DeleteRange, 5),
    (RequestKind::Txn, 6),
    (RequestKind::Compaction, 7),
    (RequestKind::LeaseGrant, 8),
    (RequestKind::LeaseRevoke, 9),
    (RequestKind::LeaseCheckpoint, 11),
    (RequestKind::Alarm, 10),
    (RequestKind::Authenticate, 1012),
    (RequestKind::AuthEnable, 1000),
    (RequestKind::AuthDisable, 1011),
    (RequestKind::AuthUserAdd, 1100),
    (RequestKind::AuthUserDelete, 1101),
    (RequestKind::AuthUserGet, 1102),
    (RequestKind::AuthUserChangePassword, 1103),
    (RequestKind::AuthUserGrantRole, 1104),
    (RequestKind::AuthUserRevokeRole, 1105),
    (RequestKind::AuthUserList, 1106),
    (RequestKind::AuthRoleList, 1107),
    (RequestKind::AuthRoleAdd, 1200),
    (RequestKind::AuthRoleDelete, 1201),
    (RequestKind::AuthRoleGet, 1202),
    (RequestKind::AuthRoleGrantPermission, 1203),
    (RequestKind::AuthRoleRevokePermission, 1204),
    (RequestKind::ClusterVersionSet, 1300),
    (RequestKind::ClusterMemberAttrSet, 1301),
];

/// `InternalRaftRequest.ID`.
const FIELD_ID: u32 = 1;
/// `InternalRaftRequest.v2`.
const FIELD_V2: u32 = 2;
/// `InternalRaftRequest.header`.
const FIELD_HEADER: u32 = 100;

impl RequestKind {
    /// The field number in `InternalRaftRequest`.
    pub fn field_number(self) -> u32 {
        REQUEST_FIELDS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or(0, |(_, n)| *n)
    }

    fn from_field(n: u32) -> Option<RequestKind> {
        REQUEST_FIELDS
            .iter()
            .find(|(_, f)| *f == n)
            .map(|(k, _)| *k)
    }
}

/// A decoded `InternalRaftRequest` (v2 requests are [`EntryPayload::V2`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftRequest {
    pub id: u64,
    pub header: Option<RequestHeader>,
    /// Every request field present, with its encoded message.
    pub requests: Vec<(RequestKind, Bytes)>,
}

impl RaftRequest {
    /// The request etcd applies: the first present in apply order.
    pub fn request(&self) -> Option<(RequestKind, &Bytes)> {
        REQUEST_FIELDS.iter().find_map(|(kind, _)| {
            self.requests
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(k, b)| (*k, b))
        })
    }
}

/// What one raft entry means to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPayload {
    /// A normal entry without data: the no-op a new leader appends.
    Empty,
    ConfChange(ConfChange),
    ConfChangeV2(ConfChangeV2),
    V3(RaftRequest),
    /// A v2 request, bare or wrapped in `InternalRaftRequest.v2`.
    V2(Request),
}

/// Why an entry's payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("entry {index}: {problem}")]
pub struct PayloadError {
    pub index: u64,
    pub problem: String,
}

/// Classifies and decodes an entry's data.
pub fn decode_entry(entry: &Entry) -> Result<EntryPayload, PayloadError> {
    let err = |problem: String| PayloadError {
        index: entry.index,
        problem,
    };
    match entry.entry_type {
        entry_type::CONF_CHANGE => ConfChange::decode(entry.data.clone())
            .map(EntryPayload::ConfChange)
            .map_err(|e| err(format!("bad ConfChange: {e}"))),
        entry_type::CONF_CHANGE_V2 => ConfChangeV2::decode(entry.data.clone())
            .map(EntryPayload::ConfChangeV2)
            .map_err(|e| err(format!("bad ConfChangeV2: {e}"))),
        entry_type::NORMAL if entry.data.is_empty() => Ok(EntryPayload::Empty),
        entry_type::NORMAL => decode_normal(&entry.data).map_err(err),
        t => Err(err(format!("unknown entry type {t}"))),
    }
}

fn decode_normal(data: &Bytes) -> Result<EntryPayload, String> {
    if let Some(parsed) = parse_v3(data) {
        if let Some(v2) = parsed.1 {
            return Request::decode(v2)
                .map(EntryPayload::V2)
                .map_err(|e| format!("bad v2 request in InternalRaftRequest: {e}"));
        }
        return Ok(EntryPayload::V3(parsed.0));
    }
    Request::decode(data.clone())
        .map(EntryPayload::V2)
        .map_err(|e| format!("neither an InternalRaftRequest nor a v2 Request: {e}"))
}

/// A field as found on the wire.
enum Value {
    Varint(u64),
    Len(Bytes),
    Fixed,
}

/// Splits a message into fields; `None` on malformed input or groups.
fn fields(data: &Bytes) -> Option<Vec<(u32, Value)>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let key = varint(data, &mut pos)?;
        let field = u32::try_from(key >> 3).ok().filter(|&f| f != 0)?;
        let v = match key & 7 {
            0 => Value::Varint(varint(data, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|&p| p <= data.len())?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(varint(data, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|&e| e <= data.len())?;
                let b = data.slice(pos..end);
                pos = end;
                Value::Len(b)
            }
            5 => {
                pos = pos.checked_add(4).filter(|&p| p <= data.len())?;
                Value::Fixed
            }
            _ => return None,
        };
        out.push((field, v));
    }
    Some(out)
}

fn varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The v3 envelope, and its `v2` field if set; `None` if `data` is not an
/// `InternalRaftRequest`.
fn parse_v3(data: &Bytes) -> Option<(RaftRequest, Option<Bytes>)> {
    let mut req = RaftRequest::default();
    let mut v2: Option<Vec<u8>> = None;
    let mut header: Option<Vec<u8>> = None;
    for (field, value) in fields(data)? {
        match (field, value) {
            (FIELD_ID, Value::Varint(id)) => req.id = id,
            (FIELD_ID, _) => return None,
            (FIELD_HEADER, Value::Len(b)) => {
                header.get_or_insert_with(Vec::new).extend_from_slice(&b)
            }
            (FIELD_V2, Value::Len(b)) => {
                fields(&b)?;
                v2.get_or_insert_with(Vec::new).extend_from_slice(&b);
            }
            (f, Value::Len(b)) => {
                if let Some(kind) = RequestKind::from_field(f) {
                    fields(&b)?;
                    match req.requests.iter_mut().find(|(k, _)| *k == kind) {
                        Some((_, prev)) => {
                            let mut joined = prev.to_vec();
                            joined.extend_from_slice(&b);
                            *prev = Bytes::from(joined);
                        }
                        None => req.requests.push((kind, b)),
                    }
                }
            }
            (f, _)
                if f == FIELD_V2 || f == FIELD_HEADER || RequestKind::from_field(f).is_some() =>
            {
                return None;
            }
            _ => {}
        }
    }
    if let Some(h) = header {
        req.header = Some(RequestHeader::decode(h.as_slice()).ok()?);
    }
    Some((req, v2.map(Bytes::from)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::raftpb::conf_change_type;

    fn normal(data: Vec<u8>) -> Entry {
        Entry {
            entry_type: entry_type::NORMAL,
            term: 1,
            index: 7,
            data: data.into(),
        }
    }

    #[test]
    fn bare_v2_requests_are_not_taken_for_v3() {
        for method in ["PUT", "POST", "DELETE", "QGET", "SYNC", "GET", "HEAD"] {
            let r = Request {
                id: 0x1234_5678_9abc,
                method: Bytes::from(method),
                path: Bytes::from_static(b"/0/members/8e9e05c52164694d/attributes"),
                val: Bytes::from_static(br#"{"name":"default"}"#),
                time: 1_700_000_000_000_000_000,
                ..Default::default()
            };
            match decode_entry(&normal(r.encode_to_vec())).unwrap() {
                EntryPayload::V2(got) => assert_eq!(got, r, "{method}"),
                other => panic!("{method}: decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn v3_put_keeps_raw_request_and_header() {
        // PutRequest{key: "a", value: "1"} by hand: 0a 01 61 12 01 31.
        let put = vec![0x0a, 0x01, b'a', 0x12, 0x01, b'1'];
        let header = RequestHeader {
            id: 9,
            username: Bytes::from_static(b"root"),
            auth_revision: 3,
        };
        let mut data = Vec::new();
        // ID = 42 (field 1), put (field 4), header (field 100).
        data.extend_from_slice(&[0x08, 42]);
        data.extend_from_slice(&[0x22, put.len() as u8]);
        data.extend_from_slice(&put);
        let h = header.encode_to_vec();
        data.extend_from_slice(&[0xa2, 0x06, h.len() as u8]);
        data.extend_from_slice(&h);
        let EntryPayload::V3(req) = decode_entry(&normal(data)).unwrap() else {
            panic!("not v3");
        };
        assert_eq!(req.id, 42);
        assert_eq!(req.header, Some(header));
        assert_eq!(req.request(), Some((RequestKind::Put, &Bytes::from(put))));
    }

    #[test]
    fn request_field_numbers_are_distinct() {
        let mut seen: Vec<u32> = REQUEST_FIELDS.iter().map(|(_, n)| *n).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), REQUEST_FIELDS.len());
        assert_eq!(RequestKind::AuthRoleRevokePermission.field_number(), 1204);
        assert_eq!(RequestKind::LeaseCheckpoint.field_number(), 11);
    }

    #[test]
    fn conf_change_and_empty_entries() {
        let cc = ConfChange {
            id: 0,
            change_type: conf_change_type::ADD_NODE,
            node_id: 0x8e9e_05c5_2164_694d,
            context: Bytes::from_static(b"{}"),
        };
        let e = Entry {
            entry_type: entry_type::CONF_CHANGE,
            term: 1,
            index: 1,
            data: cc.encode_to_vec().into(),
        };
        assert_eq!(decode_entry(&e).unwrap(), EntryPayload::ConfChange(cc));
        assert_eq!(decode_entry(&normal(vec![])).unwrap(), EntryPayload::Empty);
        let err = decode_entry(&normal(vec![0xff])).unwrap_err();
        assert_eq!(err.index, 7);
    }
}
