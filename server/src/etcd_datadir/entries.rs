//! etcd 3.4's raft entries, for starting on an etcd data dir
//! (`etcd_datadir`). Two uses:
//!
//! * [`Replay::apply_offline`]: an entry the bbolt database already
//!   reflects (index ≤ its consistent index). Its v3 effects are in the
//!   database; what etcd keeps elsewhere — membership and the v2 tree —
//!   is replayed here, as etcd replays it at boot from the `.snap` file.
//! * [`Replay::translate`]: an entry the database does not reflect yet
//!   (committed after the last database commit, or not known to be
//!   committed). It becomes the equivalent Cairn raft entry at the same
//!   index and term, so Cairn's apply loop applies the committed ones at
//!   startup with Cairn's (= etcd's) rules, and raft decides the fate of
//!   the others exactly as etcd's raft would have. Every member translates
//!   the same entry to the same bytes (password hashes included), so the
//!   log stays identical across members.

use crate::pb::cairnpb::{
    AlarmEntry, InternalRequest, MemberAttributes, MemberChange, MemberRecord, RequestAuth,
    internal_request::Request as Cairn, member_change::Kind,
};
use crate::pb::etcdserverpb as pb;
use crate::v2::{NodeRecord, V2Op, V2Request, V2Store};
use etcd_formats::etcd::Member as EtcdMember;
use etcd_formats::pb::etcdserverpb::Request as V2Raw;
use etcd_formats::pb::raftpb::{self, conf_change_type};
use etcd_formats::request::{EntryPayload, RequestKind, decode_entry};
use etcd_formats::snap::LoadedSnapshot;
use etcd_formats::v2store::{NO_EXPIRY, V2Node};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The v2 store's key space in etcd's tree (membership lives under `/0`).
const V2_KEYS_PREFIX: &str = "/1";
const V2_MEMBERS_PREFIX: &str = "/0/members/";

/// Why an entry cannot be carried over; names the raft index.
#[derive(Debug, thiserror::Error)]
#[error("raft entry {index}: {problem}")]
pub struct EntryError {
    pub index: u64,
    pub problem: String,
}

/// Settings translation depends on (the importing member's config).
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// etcd raises short lease TTLs at apply; Cairn's proposer does.
    pub min_lease_ttl_secs: i64,
    /// etcd 3.4 hashes passwords at apply; Cairn's proposer does.
    pub bcrypt_cost: u32,
    pub cluster_id: u64,
}

/// Membership, configuration and the v2 tree as etcd would hold them at
/// the entry last replayed.
pub struct Replay {
    pub members: BTreeMap<u64, MemberRecord>,
    pub removed: BTreeSet<u64>,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    pub v2: V2Store,
    /// v2 nodes under `/1` (for the log).
    pub v2_keys: usize,
    opts: ReplayOptions,
}

impl Replay {
    /// The state of etcd's raft snapshot (`None`: the log's beginning).
    pub fn new(snapshot: Option<&LoadedSnapshot>, opts: ReplayOptions) -> Result<Replay, String> {
        let mut r = Replay {
            members: BTreeMap::new(),
            removed: BTreeSet::new(),
            voters: BTreeSet::new(),
            learners: BTreeSet::new(),
            v2: V2Store::new(),
            v2_keys: 0,
            opts,
        };
        let Some(snap) = snapshot else {
            return Ok(r);
        };
        let path = snap.path.display();
        let store = snap
            .v2_store()
            .map_err(|e| format!("{path}: the v2 store in it: {e}"))?;
        let m = store
            .membership()
            .map_err(|e| format!("{path}: membership in its v2 store: {e}"))?;
        for mem in m.members {
            r.members.insert(mem.id, record(&mem));
        }
        r.removed = m.removed.into_iter().collect();
        let cs = snap.conf_state();
        if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() {
            return Err(format!(
                "{path}: the raft configuration is in a joint state, which etcd 3.4 never enters"
            ));
        }
        r.voters = cs.voters.into_iter().collect();
        r.learners = cs.learners.into_iter().collect();
        let mut records = Vec::new();
        for n in &store.nodes {
            let Some(key) = v2_key(&n.path) else { continue };
            if key == "/" {
                continue;
            }
            let rec = node_record(n).map_err(|e| format!("{path}: v2 node {}: {e}", n.path))?;
            let bytes = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
            records.push((key, bytes));
        }
        r.v2_keys = records.len();
        r.v2.load(records, store.current_index)
            .map_err(|e| format!("{path}: v2 store: {e}"))?;
        Ok(r)
    }

    /// The raft configuration now.
    pub fn conf_state(&self) -> raft::prelude::ConfState {
        raft::prelude::ConfState {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            ..Default::default()
        }
    }

    /// Applies the membership and v2 effects of an entry the database
    /// already reflects.
    pub fn apply_offline(&mut self, e: &raftpb::Entry) -> Result<(), EntryError> {
        let err = |problem: String| EntryError {
            index: e.index,
            problem,
        };
        match decode_entry(e).map_err(|p| err(p.problem))? {
            EntryPayload::ConfChange(cc) => {
                self.conf_change(&cc).map_err(err)?;
            }
            EntryPayload::ConfChangeV2(_) => {
                return Err(err(
                    "a ConfChangeV2 entry, which etcd 3.4 never writes".into()
                ));
            }
            EntryPayload::V2(r) => match v2_effect(&r).map_err(err)? {
                V2Effect::Attributes(a) => self.attributes(&a),
                V2Effect::Store(req) => {
                    // A refusal (compare failed, key missing) is an answer
                    // that changes nothing, as in etcd.
                    let _ = self.v2.apply(&req);
                }
                V2Effect::Nothing => {}
            },
            EntryPayload::V3(req) => {
                if let Some((kind, _)) = req.request()
                    && matches!(
                        kind,
                        RequestKind::ClusterVersionSet | RequestKind::ClusterMemberAttrSet
                    )
                {
                    return Err(err(format!("{kind:?}: an etcd 3.5 request")));
                }
            }
            EntryPayload::Empty => {}
        }
        Ok(())
    }

    /// The Cairn raft entry equivalent to `e`, at its index and term.
    pub fn translate(&mut self, e: &raftpb::Entry) -> Result<Entry, EntryError> {
        let err = |problem: String| EntryError {
            index: e.index,
            problem,
        };
        let mut out = Entry {
            term: e.term,
            index: e.index,
            ..Default::default()
        };
        match decode_entry(e).map_err(|p| err(p.problem))? {
            // A new leader's no-op stays one (Cairn starts lease clocks on it).
            EntryPayload::Empty => out.set_entry_type(EntryType::EntryNormal),
            EntryPayload::ConfChangeV2(_) => {
                return Err(err(
                    "a ConfChangeV2 entry, which etcd 3.4 never writes".into()
                ));
            }
            EntryPayload::ConfChange(cc) => {
                let change = self.conf_change(&cc).map_err(err)?;
                match change {
                    Applied::Conf(kind, change_type, record) => {
                        let mut single = ConfChangeSingle::default();
                        single.set_change_type(change_type);
                        single.node_id = record.id;
                        let mut ccv2 = ConfChangeV2::default();
                        ccv2.set_changes(vec![single].into());
                        out.set_entry_type(EntryType::EntryConfChangeV2);
                        out.data = ccv2
                            .write_to_bytes()
                            .map_err(|e| err(e.to_string()))?
                            .into();
                        out.context = MemberChange {
                            request_id: 0,
                            kind: kind as i32,
                            member: Some(record),
                        }
                        .encode_to_vec()
                        .into();
                    }
                    Applied::Update(record) => {
                        out.set_entry_type(EntryType::EntryNormal);
                        out.data = internal(Some(Cairn::MemberUpdate(record)), None).into();
                    }
                    Applied::Refused => {
                        out.set_entry_type(EntryType::EntryNormal);
                        out.data = internal(None, None).into();
                    }
                }
            }
            EntryPayload::V2(r) => {
                out.set_entry_type(EntryType::EntryNormal);
                let request = match v2_effect(&r).map_err(err)? {
                    V2Effect::Attributes(a) => {
                        self.attributes(&a);
                        Some(Cairn::Publish(a))
                    }
                    V2Effect::Store(req) => Some(Cairn::V2(
                        serde_json::to_vec(&req)
                            .map_err(|e| err(e.to_string()))?
                            .into(),
                    )),
                    V2Effect::Nothing => None,
                };
                out.data = internal(request, None).into();
            }
            EntryPayload::V3(req) => {
                out.set_entry_type(EntryType::EntryNormal);
                let auth = req
                    .header
                    .as_ref()
                    .filter(|h| !h.username.is_empty())
                    .map(|h| RequestAuth {
                        username: String::from_utf8_lossy(&h.username).into_owned(),
                        revision: h.auth_revision,
                    });
                let request = match req.request() {
                    None => None,
                    Some((kind, bytes)) => self.v3(kind, bytes, e).map_err(err)?,
                };
                out.data = internal(request, auth).into();
            }
        }
        Ok(out)
    }

    /// A v3 request as Cairn's, or `None` for one that changes nothing.
    fn v3(
        &self,
        kind: RequestKind,
        bytes: &bytes::Bytes,
        e: &raftpb::Entry,
    ) -> Result<Option<Cairn>, String> {
        fn de<M: prost::Message + Default>(b: &bytes::Bytes) -> Result<M, String> {
            M::decode(b.as_ref()).map_err(|e| e.to_string())
        }
        use RequestKind as K;
        Ok(Some(match kind {
            K::Put => Cairn::Put(de(bytes)?),
            K::DeleteRange => Cairn::DeleteRange(de(bytes)?),
            K::Txn => Cairn::Txn(de(bytes)?),
            K::Compaction => Cairn::Compaction(de(bytes)?),
            K::LeaseGrant => {
                let mut g: pb::LeaseGrantRequest = de(bytes)?;
                g.ttl = g.ttl.max(self.opts.min_lease_ttl_secs);
                Cairn::LeaseGrant(g)
            }
            K::LeaseRevoke => Cairn::LeaseRevoke(de(bytes)?),
            K::Alarm => {
                let a: pb::AlarmRequest = de(bytes)?;
                if a.action == pb::alarm_request::AlarmAction::Get as i32 {
                    return Ok(None);
                }
                Cairn::Alarm(AlarmEntry {
                    request: Some(a),
                    reply_token: 0,
                })
            }
            K::AuthEnable => Cairn::AuthEnable(de(bytes)?),
            K::AuthDisable => Cairn::AuthDisable(de(bytes)?),
            K::AuthUserAdd => {
                let mut r: pb::AuthUserAddRequest = de(bytes)?;
                let password = std::mem::take(&mut r.password);
                if !r.options.as_ref().is_some_and(|o| o.no_password)
                    && r.hashed_password.is_empty()
                {
                    r.hashed_password = self.hash(&password, e, &r.name)?;
                }
                Cairn::UserAdd(r)
            }
            K::AuthUserChangePassword => {
                let mut r: pb::AuthUserChangePasswordRequest = de(bytes)?;
                let password = std::mem::take(&mut r.password);
                if r.hashed_password.is_empty() {
                    r.hashed_password = self.hash(&password, e, &r.name)?;
                }
                Cairn::UserChangePassword(r)
            }
            K::AuthUserDelete => Cairn::UserDelete(de(bytes)?),
            K::AuthUserGrantRole => Cairn::UserGrantRole(de(bytes)?),
            K::AuthUserRevokeRole => Cairn::UserRevokeRole(de(bytes)?),
            K::AuthRoleAdd => Cairn::RoleAdd(de(bytes)?),
            K::AuthRoleDelete => Cairn::RoleDelete(de(bytes)?),
            K::AuthRoleGrantPermission => Cairn::RoleGrantPermission(de(bytes)?),
            K::AuthRoleRevokePermission => Cairn::RoleRevokePermission(de(bytes)?),
            // etcd's lease checkpoints (--experimental-enable-lease-checkpoint),
            // which Cairn records the same way.
            K::LeaseCheckpoint => Cairn::LeaseCheckpoint(de(bytes)?),
            // Reads etcd 3.4 sends through raft, and logins (tokens do not
            // outlive the process that issued them).
            K::Range
            | K::AuthUserGet
            | K::AuthUserList
            | K::AuthRoleGet
            | K::AuthRoleList
            | K::Authenticate => return Ok(None),
            K::ClusterVersionSet | K::ClusterMemberAttrSet => {
                return Err(format!("{kind:?}: an etcd 3.5 request"));
            }
        }))
    }

    /// bcrypt with a salt derived from the entry, so every member stores
    /// the same hash for the same entry (etcd 3.4 hashed at apply, with a
    /// random salt per member).
    fn hash(&self, password: &str, e: &raftpb::Entry, name: &str) -> Result<String, String> {
        crate::auth::password::check_cost(self.opts.bcrypt_cost).map_err(|e| e.to_string())?;
        let mut h = Sha256::new();
        h.update(b"cairn etcd import salt");
        h.update(self.opts.cluster_id.to_be_bytes());
        h.update(e.index.to_be_bytes());
        h.update(e.term.to_be_bytes());
        h.update(name.as_bytes());
        let digest = h.finalize();
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&digest[..16]);
        // Like etcd (Go's bcrypt): only the first 72 bytes count.
        let bytes = password.as_bytes();
        let bytes = &bytes[..bytes.len().min(72)];
        bcrypt::hash_with_salt(bytes, self.opts.bcrypt_cost, salt)
            .map(|p| p.format_for_version(bcrypt::Version::TwoA))
            .map_err(|e| format!("bcrypt: {e}"))
    }

    fn attributes(&mut self, a: &MemberAttributes) {
        if let Some(m) = self.members.get_mut(&a.member_id) {
            m.name = a.name.clone();
            m.client_urls = a.client_urls.clone();
        }
    }

    /// etcd's `applyConfChange` with its validation: an invalid change is
    /// applied as nothing.
    fn conf_change(&mut self, cc: &raftpb::ConfChange) -> Result<Applied, String> {
        let id = cc.node_id;
        let ctx = || -> Result<EtcdMember, String> {
            serde_json::from_slice::<EtcdMember>(&cc.context)
                .map_err(|e| format!("ConfChange for {id:x}: member context: {e}"))
        };
        if self.removed.contains(&id) {
            return Ok(Applied::Refused);
        }
        let exists = self.members.get(&id).cloned();
        Ok(match (cc.change_type, exists) {
            (conf_change_type::ADD_NODE, Some(m)) => {
                let c = ctx()?;
                if !m.is_learner || c.is_learner {
                    return Ok(Applied::Refused);
                }
                let mut m = m;
                m.is_learner = false;
                self.members.insert(id, m.clone());
                self.learners.remove(&id);
                self.voters.insert(id);
                Applied::Conf(Kind::Promote, ConfChangeType::AddNode, m)
            }
            (conf_change_type::ADD_NODE | conf_change_type::ADD_LEARNER_NODE, None) => {
                let c = ctx()?;
                if c.id != id {
                    return Err(format!(
                        "ConfChange adds {id:x} but its context describes {:x}",
                        c.id
                    ));
                }
                let learner = cc.change_type == conf_change_type::ADD_LEARNER_NODE;
                let mut m = record(&c);
                m.is_learner = learner;
                self.members.insert(id, m.clone());
                let change_type = if learner {
                    self.learners.insert(id);
                    ConfChangeType::AddLearnerNode
                } else {
                    self.voters.insert(id);
                    ConfChangeType::AddNode
                };
                Applied::Conf(Kind::Add, change_type, m)
            }
            (conf_change_type::ADD_LEARNER_NODE, Some(_)) => Applied::Refused,
            (conf_change_type::REMOVE_NODE, Some(m)) => {
                self.members.remove(&id);
                self.removed.insert(id);
                self.voters.remove(&id);
                self.learners.remove(&id);
                Applied::Conf(Kind::Remove, ConfChangeType::RemoveNode, m)
            }
            (conf_change_type::UPDATE_NODE, Some(mut m)) => {
                m.peer_urls = ctx()?.peer_urls;
                self.members.insert(id, m.clone());
                Applied::Update(m)
            }
            (conf_change_type::REMOVE_NODE | conf_change_type::UPDATE_NODE, None) => {
                Applied::Refused
            }
            (t, _) => return Err(format!("ConfChange of unknown type {t}")),
        })
    }
}

/// What a conf change did to the model.
enum Applied {
    Conf(Kind, ConfChangeType, MemberRecord),
    Update(MemberRecord),
    Refused,
}

fn record(m: &EtcdMember) -> MemberRecord {
    MemberRecord {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// A Cairn entry's data. An entry that changes nothing still carries a
/// (empty) field, because an entry without data is a leader's no-op.
fn internal(request: Option<Cairn>, auth: Option<RequestAuth>) -> Vec<u8> {
    let nothing = request.is_none() && auth.is_none();
    InternalRequest {
        id: 0,
        request,
        auth: if nothing {
            Some(RequestAuth::default())
        } else {
            auth
        },
        plugin_stamp: None,
        // etcd's log carries no such condition.
        leader_term: 0,
    }
    .encode_to_vec()
}

/// What a v2 request means to Cairn.
enum V2Effect {
    /// A member publishing its name and client URLs.
    Attributes(MemberAttributes),
    /// A write (or expiry sweep) of the v2 key space.
    Store(V2Request),
    /// A read, the cluster version, or etcd-internal bookkeeping.
    Nothing,
}

/// `/1/a/b` → `/a/b` (`/1` → `/`); `None` outside the v2 key space.
fn v2_key(path: &str) -> Option<String> {
    let rest = path.strip_prefix(V2_KEYS_PREFIX)?;
    if rest.is_empty() {
        return Some("/".into());
    }
    rest.starts_with('/').then(|| rest.to_string())
}

/// etcd 3.4's `applyV2Request`, as an operation of Cairn's v2 store.
fn v2_effect(r: &V2Raw) -> Result<V2Effect, String> {
    let text = |b: &bytes::Bytes, what: &str| {
        String::from_utf8(b.to_vec()).map_err(|_| format!("v2 request: {what} is not UTF-8"))
    };
    let path = text(&r.path, "path")?;
    let method = text(&r.method, "method")?;
    let prev_value = text(&r.prev_value, "prevValue")?;
    let compare = r.prev_index > 0 || !prev_value.is_empty();
    let op = match method.as_str() {
        "POST" => V2Op::CreateInOrder,
        "PUT" => match r.prev_exist {
            Some(true) if compare => V2Op::CompareAndSwap,
            Some(true) => V2Op::Update,
            Some(false) => V2Op::Create,
            None if compare => V2Op::CompareAndSwap,
            None => {
                if let Some(rest) = path.strip_prefix(V2_MEMBERS_PREFIX)
                    && let Some((hex, "attributes")) = rest.split_once('/')
                    && (1..=16).contains(&hex.len())
                    && let Ok(member_id) = u64::from_str_radix(hex, 16)
                {
                    #[derive(serde::Deserialize)]
                    struct Attrs {
                        #[serde(default)]
                        name: String,
                        #[serde(rename = "clientURLs", default)]
                        client_urls: Option<Vec<String>>,
                    }
                    let a: Attrs = serde_json::from_slice(&r.val)
                        .map_err(|e| format!("member attributes at {path}: {e}"))?;
                    return Ok(V2Effect::Attributes(MemberAttributes {
                        member_id,
                        name: a.name,
                        client_urls: a.client_urls.unwrap_or_default(),
                    }));
                }
                V2Op::Set
            }
        },
        "DELETE" if compare => V2Op::CompareAndDelete,
        "DELETE" => V2Op::Delete,
        "SYNC" => {
            return Ok(V2Effect::Store(V2Request::new(V2Op::Sync, "/", r.time)));
        }
        // QGET is a read; anything else etcd answers with "unknown method".
        _ => return Ok(V2Effect::Nothing),
    };
    // Writes outside `/1` touch etcd's own records (`/0/version`), which
    // Cairn keeps elsewhere or not at all.
    let Some(key) = v2_key(&path) else {
        return Ok(V2Effect::Nothing);
    };
    Ok(V2Effect::Store(V2Request {
        op,
        path: key,
        value: text(&r.val, "value")?,
        dir: r.dir,
        prev_value,
        prev_index: r.prev_index,
        recursive: r.recursive,
        sorted: r.sorted,
        expiration: (r.expiration != 0).then_some(r.expiration),
        refresh: r.refresh.unwrap_or(false),
        time: r.time,
        internal: false,
    }))
}

/// A node of the `.snap` v2 tree as Cairn persists it.
fn node_record(n: &V2Node) -> Result<NodeRecord, String> {
    let expiration = if n.expire_time.is_empty() || n.expire_time == NO_EXPIRY {
        None
    } else {
        Some(parse_rfc3339_nanos(&n.expire_time)?)
    };
    Ok(NodeRecord {
        dir: n.value.is_none(),
        value: n.value.clone(),
        created_index: n.created_index,
        modified_index: n.modified_index,
        expiration,
    })
}

/// Go's `time.Time` JSON (RFC 3339 with optional fraction and any UTC
/// offset) as Unix nanoseconds.
pub fn parse_rfc3339_nanos(s: &str) -> Result<i64, String> {
    let bad = || format!("bad time {s:?}");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return Err(bad());
        }
        nanos = frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - frac.len() as u32);
    }
    let offset_secs = match &s[i..] {
        "Z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad()),
    };
    // Days from civil (proleptic Gregorian), after Howard Hinnant.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_formats::pb::raftpb::{ConfChange, entry_type};

    fn opts() -> ReplayOptions {
        ReplayOptions {
            min_lease_ttl_secs: 2,
            bcrypt_cost: 4,
            cluster_id: 7,
        }
    }

    fn entry(index: u64, entry_type: i32, data: Vec<u8>) -> raftpb::Entry {
        raftpb::Entry {
            entry_type,
            term: 3,
            index,
            data: data.into(),
        }
    }

    fn add(index: u64, id: u64, learner: bool, change_type: i32) -> raftpb::Entry {
        let m = EtcdMember {
            id,
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            is_learner: learner,
            ..Default::default()
        };
        let cc = ConfChange {
            id: 0,
            change_type,
            node_id: id,
            context: m.to_json().into(),
        };
        entry(index, entry_type::CONF_CHANGE, cc.encode_to_vec())
    }

    #[test]
    fn times_parse_like_go() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_nanos("2026-12-06T10:43:23.592Z"),
            Ok(1_796_553_803_592_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-12-06T12:43:23.000000001+02:00"),
            Ok(1_796_553_803_000_000_001)
        );
        assert!(parse_rfc3339_nanos("2026-13-06T10:43:23Z").is_err());
        assert!(parse_rfc3339_nanos("yesterday").is_err());
    }

    #[test]
    fn membership_follows_etcd_conf_changes() {
        let mut r = Replay::new(None, opts()).unwrap();
        r.apply_offline(&add(1, 1, false, conf_change_type::ADD_NODE))
            .unwrap();
        r.apply_offline(&add(2, 2, true, conf_change_type::ADD_LEARNER_NODE))
            .unwrap();
        assert_eq!(r.conf_state().voters, vec![1]);
        assert_eq!(r.conf_state().learners, vec![2]);
        // Publishing attributes is a bare v2 PUT.
        let publish = V2Raw {
            id: 9,
            method: "PUT".into(),
            path: "/0/members/2/attributes".into(),
            val: r#"{"name":"b","clientURLs":["http://10.0.0.2:2379"]}"#.into(),
            ..Default::default()
        };
        r.apply_offline(&entry(3, entry_type::NORMAL, publish.encode_to_vec()))
            .unwrap();
        assert_eq!(r.members[&2].name, "b");
        // Promotion: AddNode of a learner, context not a learner.
        let e = r
            .translate(&add(4, 2, false, conf_change_type::ADD_NODE))
            .unwrap();
        assert_eq!(e.get_entry_type(), EntryType::EntryConfChangeV2);
        let mc = MemberChange::decode(e.context.as_ref()).unwrap();
        assert_eq!(mc.kind, Kind::Promote as i32);
        assert_eq!(r.conf_state().voters, vec![1, 2]);
        // Adding an existing member is refused: a no-op, not an empty entry.
        let e = r
            .translate(&add(5, 1, false, conf_change_type::ADD_NODE))
            .unwrap();
        assert_eq!(e.get_entry_type(), EntryType::EntryNormal);
        assert!(!e.data.is_empty());
        let req = InternalRequest::decode(e.data.as_ref()).unwrap();
        assert!(req.request.is_none());
        let rm = ConfChange {
            id: 0,
            change_type: conf_change_type::REMOVE_NODE,
            node_id: 1,
            context: Default::default(),
        };
        r.translate(&entry(6, entry_type::CONF_CHANGE, rm.encode_to_vec()))
            .unwrap();
        assert!(r.removed.contains(&1));
        // A removed ID never comes back.
        let e = r
            .translate(&add(7, 1, false, conf_change_type::ADD_NODE))
            .unwrap();
        assert_eq!(e.get_entry_type(), EntryType::EntryNormal);
        assert_eq!(r.conf_state().voters, vec![2]);
    }

    #[test]
    fn v3_requests_become_cairn_requests() {
        let mut r = Replay::new(None, opts()).unwrap();
        // InternalRaftRequest{header{username "u", auth_revision 4},
        // auth_user_add{name "u2", password "pw"}, lease_grant skipped}.
        let header = etcd_formats::pb::etcdserverpb::RequestHeader {
            id: 1,
            username: "u".into(),
            auth_revision: 4,
        };
        let add = pb::AuthUserAddRequest {
            name: "u2".into(),
            password: "pw".into(),
            ..Default::default()
        };
        let mut data = Vec::new();
        prost::encoding::message::encode(1100, &add, &mut data);
        prost::encoding::message::encode(100, &header, &mut data);
        let e1 = r
            .translate(&entry(10, entry_type::NORMAL, data.clone()))
            .unwrap();
        let e2 = r.translate(&entry(10, entry_type::NORMAL, data)).unwrap();
        // Same entry, same bytes: the salt comes from the entry.
        assert_eq!(e1.data, e2.data);
        let req = InternalRequest::decode(e1.data.as_ref()).unwrap();
        assert_eq!(
            req.auth,
            Some(RequestAuth {
                username: "u".into(),
                revision: 4
            })
        );
        let Some(Cairn::UserAdd(u)) = req.request else {
            panic!("{:?}", req.request);
        };
        assert!(u.password.is_empty());
        assert!(crate::auth::password::verify_password(
            &u.hashed_password,
            "pw"
        ));
        // A short lease gets the minimum TTL, as etcd's lessor gives it.
        let grant = pb::LeaseGrantRequest { ttl: 1, id: 42 };
        let mut data = Vec::new();
        prost::encoding::message::encode(8, &grant, &mut data);
        let e = r.translate(&entry(11, entry_type::NORMAL, data)).unwrap();
        let req = InternalRequest::decode(e.data.as_ref()).unwrap();
        assert_eq!(
            req.request,
            Some(Cairn::LeaseGrant(pb::LeaseGrantRequest { ttl: 2, id: 42 }))
        );
        assert_eq!(req.auth, None);
        // The leader's no-op stays empty.
        let e = r.translate(&entry(12, entry_type::NORMAL, vec![])).unwrap();
        assert!(e.data.is_empty());
    }

    #[test]
    fn v2_writes_map_to_cairn_operations() {
        let put = |path: &str, prev_exist: Option<bool>| V2Raw {
            method: "PUT".into(),
            path: path.to_string().into(),
            val: "v".into(),
            prev_exist,
            time: 5,
            ..Default::default()
        };
        let op = |r: &V2Raw| match v2_effect(r).unwrap() {
            V2Effect::Store(q) => Some((q.op, q.path)),
            _ => None,
        };
        assert_eq!(op(&put("/1/a", None)), Some((V2Op::Set, "/a".into())));
        assert_eq!(
            op(&put("/1/a", Some(false))),
            Some((V2Op::Create, "/a".into()))
        );
        assert_eq!(
            op(&put("/1/a", Some(true))),
            Some((V2Op::Update, "/a".into()))
        );
        assert_eq!(op(&put("/0/version", None)), None);
        let mut del = put("/1/d", None);
        del.method = "DELETE".into();
        del.prev_index = 3;
        assert_eq!(op(&del), Some((V2Op::CompareAndDelete, "/d".into())));
        // Applied offline, the store changes as etcd's would.
        let mut r = Replay::new(None, opts()).unwrap();
        r.apply_offline(&entry(
            1,
            entry_type::NORMAL,
            put("/1/dir/k", None).encode_to_vec(),
        ))
        .unwrap();
        let recs = r.v2.records();
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert_eq!(recs[1].0, "/dir/k");
    }
}
