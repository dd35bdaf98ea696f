//! The crate against files the real etcd 3.4 writes, and the real etcd 3.4
//! against files the crate writes. Every test here starts etcd processes
//! (nextest runs them in the `cluster` group) and fails — does not skip —
//! when `/usr/bin/etcd` is missing.

// Scenario tests (write with one side, read with the other) read top to
// bottom; their length is the scenario's.
#![allow(clippy::too_many_lines)]

mod common;

use bytes::Bytes;
use common::{
    Etcd, KvTuple, Ports, get_all, lease_list, num, snapshot_restore, snapshot_status, unum,
};
use etcd_formats::bolt::{BoltError, BoltReader, WriteSummary};
use etcd_formats::datadir::MemberData;
use etcd_formats::etcd::{EtcdDb, EtcdDbWriter, KeyRecord, Revision};
use etcd_formats::pb::authpb::perm_type;
use etcd_formats::pb::raftpb::{conf_change_type, entry_type};
use etcd_formats::request::{EntryPayload, RequestKind, decode_entry};
use etcd_formats::snapshot::{self, DbStatus, TrailerCheck};
use etcd_formats::wal::{RecordReader, WalError, list_wal_files};
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One `key` bucket entry as the test expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    rev: Revision,
    tombstone: bool,
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
}

impl From<&KeyRecord> for Rec {
    fn from(r: &KeyRecord) -> Rec {
        Rec {
            rev: r.revision,
            tombstone: r.tombstone,
            key: r.kv.key.to_vec(),
            value: r.kv.value.to_vec(),
            lease: r.kv.lease,
        }
    }
}

/// What the `key` bucket should hold after a series of writes.
#[derive(Default)]
struct Model {
    recs: Vec<Rec>,
    live: BTreeSet<Vec<u8>>,
}

impl Model {
    fn put(&mut self, main: i64, sub: i64, key: &str, value: &[u8], lease: i64) {
        self.live.insert(key.as_bytes().to_vec());
        self.recs.push(Rec {
            rev: Revision::new(main, sub),
            tombstone: false,
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            lease,
        });
    }

    /// Deletes the live keys in `[from, to)` (or `from` alone), in key
    /// order, subs from `first_sub`.
    fn delete(&mut self, main: i64, first_sub: i64, from: &str, to: Option<&str>) {
        let keys: Vec<Vec<u8>> = self
            .live
            .iter()
            .filter(|k| match to {
                None => k.as_slice() == from.as_bytes(),
                Some(to) => k.as_slice() >= from.as_bytes() && k.as_slice() < to.as_bytes(),
            })
            .cloned()
            .collect();
        for (i, k) in keys.into_iter().enumerate() {
            self.live.remove(&k);
            self.recs.push(Rec {
                rev: Revision::new(main, first_sub + i as i64),
                tombstone: true,
                key: k,
                value: vec![],
                lease: 0,
            });
        }
    }

    /// etcd's compaction: of the entries at or below `at`, each key keeps
    /// only its latest, and not even that if it is a tombstone.
    fn compact(&mut self, at: i64) {
        let mut latest: BTreeMap<Vec<u8>, Revision> = BTreeMap::new();
        for r in self.recs.iter().filter(|r| r.rev.main <= at) {
            latest.insert(r.key.clone(), r.rev);
        }
        self.recs
            .retain(|r| r.rev.main > at || (latest.get(&r.key) == Some(&r.rev) && !r.tombstone));
    }
}

fn status_json(s: &DbStatus) -> Value {
    json!({"hash": s.hash, "revision": s.revision, "totalKey": s.total_key, "totalSize": s.total_size})
}

/// The latest live state from the `key` bucket, as `etcdctl get` tuples.
fn latest_state(db: &EtcdDb) -> Vec<KvTuple> {
    let mut state: BTreeMap<Vec<u8>, KvTuple> = BTreeMap::new();
    for r in db.keys().unwrap() {
        let r = r.unwrap();
        let k = r.kv.key.to_vec();
        if r.tombstone {
            state.remove(&k);
        } else {
            state.insert(
                k.clone(),
                (
                    k,
                    r.kv.value.to_vec(),
                    r.kv.create_revision,
                    r.kv.mod_revision,
                    r.kv.version,
                    r.kv.lease,
                ),
            );
        }
    }
    state.into_values().collect()
}

/// Writes `dst` from everything the crate reads in `src`.
fn rewrite(src: &EtcdDb, dst: &Path) -> WriteSummary {
    let mut w = EtcdDbWriter::create(dst).unwrap();
    w.alarms(&src.alarms().unwrap()).unwrap();
    w.auth(&src.auth().unwrap()).unwrap();
    w.roles(&src.roles().unwrap()).unwrap();
    w.users(&src.users().unwrap()).unwrap();
    if let Some(v) = src.cluster_version().unwrap() {
        w.cluster_version(&v).unwrap();
    }
    for r in src.keys().unwrap() {
        w.put_key(&r.unwrap()).unwrap();
    }
    for l in src.leases().unwrap() {
        w.put_lease(&l.unwrap()).unwrap();
    }
    w.members(&src.members().unwrap()).unwrap();
    w.removed_members(&src.removed_members().unwrap()).unwrap();
    w.meta(&src.meta().unwrap()).unwrap();
    // Unsynced, as a streamed Maintenance.Snapshot would write it.
    w.finish_without_sync().unwrap()
}

/// `PutRequest{key=1, value=2, lease=3}`, for reading WAL entries.
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
    #[prost(int64, tag = "3")]
    lease: i64,
}

fn role_perms(e: &Etcd, role: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let v = e.ctl_json(&["role", "get", role]);
    let mut perms: Vec<_> = v["perm"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|p| {
            // Go prints the enum as its number (0, READ, is left out).
            let t = match num(&p["permType"]) {
                0 => "READ",
                1 => "WRITE",
                _ => "READWRITE",
            };
            (
                t.to_string(),
                common::unb64(&p["key"]),
                common::unb64(&p["range_end"]),
            )
        })
        .collect();
    perms.sort();
    perms
}

/// Real etcd writes keys, leases, a txn, deletes, a compaction and auth
/// data; the crate must read all of it from the snapshot, the db and the
/// WAL, and a copy the crate writes must be served identically by etcd.
#[test]
fn reads_and_rewrites_what_real_etcd_wrote() {
    common::require_etcd();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("member1");
    let ports = Ports::free();
    let mut etcd = Etcd::start(&data, ports, &[]);
    let mut m = Model::default();
    let mut puts = 0usize;

    let mut put = |etcd: &Etcd, m: &mut Model, k: &str, v: &[u8], lease: i64| {
        let rev = etcd.put(k, v, lease);
        m.put(rev, 0, k, v, lease);
        puts += 1;
        rev
    };
    assert_eq!(
        put(&etcd, &mut m, "a", b"1", 0),
        2,
        "a fresh store's first write is revision 2"
    );
    put(&etcd, &mut m, "b", b"2", 0);
    put(&etcd, &mut m, "a", b"11", 0);
    let rev = etcd.delete("a", None);
    m.delete(rev, 0, "a", None);
    let lease1 = etcd.lease_grant(600);
    let lease2 = etcd.lease_grant(900);
    put(&etcd, &mut m, "c", b"3", lease1);
    put(&etcd, &mut m, "d", b"4", lease1);
    // One transaction: two puts and a delete share a main revision.
    let txn = etcd.gateway(
        "/v3/kv/txn",
        &json!({
            "compare": [{"key": common::b64(b"b"), "result": "EQUAL", "target": "VERSION", "version": "1"}],
            "success": [
                {"request_put": {"key": common::b64(b"e"), "value": common::b64(b"5")}},
                {"request_put": {"key": common::b64(b"f"), "value": common::b64(b"6"), "lease": lease1.to_string()}},
                {"request_delete_range": {"key": common::b64(b"b")}},
            ],
        }),
    );
    assert_eq!(txn["succeeded"], json!(true), "{txn}");
    let rev = num(&txn["header"]["revision"]);
    m.put(rev, 0, "e", b"5", 0);
    m.put(rev, 1, "f", b"6", lease1);
    m.delete(rev, 2, "b", None);
    // Enough keys for branch pages, and a value spanning overflow pages.
    let mut compact_at = 0;
    for i in 0..1500 {
        let v = format!("value-{i:04}-").repeat(8);
        let r = put(&etcd, &mut m, &format!("k{i:04}"), v.as_bytes(), 0);
        if i == 749 {
            compact_at = r;
        }
    }
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i * 31 % 253) as u8).collect();
    put(&etcd, &mut m, "big", &big, 0);
    for i in 0..10 {
        put(&etcd, &mut m, &format!("k{i:04}"), b"overwritten", 0);
    }
    etcd.ctl(&["compaction", &compact_at.to_string(), "--physical"]);
    m.compact(compact_at);
    put(&etcd, &mut m, "a", b"again", 0);
    let rev = etcd.delete("k0100", Some("k0110"));
    m.delete(rev, 0, "k0100", Some("k0110"));

    // Auth: users, roles, permissions, then enable it.
    etcd.ctl(&["user", "add", "root:rootpw"]);
    etcd.ctl(&["role", "add", "reader"]);
    etcd.ctl(&[
        "role",
        "grant-permission",
        "reader",
        "read",
        "k",
        "--prefix",
    ]);
    etcd.ctl(&["role", "grant-permission", "reader", "readwrite", "c"]);
    etcd.ctl(&["user", "add", "alice:alicepw"]);
    etcd.ctl(&["user", "grant-role", "alice", "reader"]);
    etcd.ctl(&["auth", "enable"]);
    etcd.user = Some("root:rootpw".into());
    etcd.ctl(&["put", "g", "after-auth"]);
    let g = etcd.ctl_json(&["get", "g"]);
    let rev = num(&g["kvs"][0]["mod_revision"]);
    m.put(rev, 0, "g", b"after-auth", 0);
    puts += 1;

    // What etcd itself says, before it stops.
    let (head_rev, kvs) = get_all(&etcd);
    let leases = lease_list(&etcd);
    assert_eq!(leases, {
        let mut l = vec![lease1, lease2];
        l.sort_unstable();
        l
    });
    let members = etcd.ctl_json(&["member", "list"]);
    let member_id = unum(&members["members"][0]["ID"]);
    let cluster_id = unum(&members["header"]["cluster_id"]);
    let ep = etcd.ctl_json(&["endpoint", "status"]);
    let raft_index = unum(&ep[0]["Status"]["raftIndex"]);
    let reader_perms = role_perms(&etcd, "reader");
    let snap = tmp.path().join("etcd-snapshot.db");
    etcd.ctl(&["snapshot", "save", snap.to_str().unwrap()]);
    etcd.stop();

    // --- The snapshot, through the crate.
    let db = EtcdDb::open(&snap).unwrap();
    let st = db.status().unwrap();
    assert_eq!(status_json(&st), snapshot_status(&snap));
    assert_eq!(snapshot::check_trailer(&snap).unwrap(), TrailerCheck::Valid);
    let names: Vec<Bytes> = db.bucket_names().unwrap();
    assert_eq!(
        names.iter().map(|b| b.as_ref()).collect::<Vec<_>>(),
        etcd_formats::etcd::bucket::ALL.to_vec()
    );
    let recs: Vec<Rec> = db.keys().unwrap().map(|r| Rec::from(&r.unwrap())).collect();
    assert_eq!(recs.len(), m.recs.len());
    for (got, want) in recs.iter().zip(&m.recs) {
        assert_eq!(got, want);
    }
    assert_eq!(st.revision, head_rev);
    assert_eq!(latest_state(&db), kvs);
    let meta = db.meta().unwrap();
    assert_eq!(meta.finished_compact_rev, Some(compact_at));
    assert_eq!(meta.scheduled_compact_rev, Some(compact_at));
    let ci = meta.consistent_index.unwrap();
    assert!(
        ci > 0 && ci <= raft_index,
        "consistent index {ci}, raft index {raft_index}"
    );
    let got_leases: Vec<_> = db.leases().unwrap().map(|l| l.unwrap()).collect();
    assert_eq!(
        got_leases.iter().map(|l| (l.id, l.ttl)).collect::<Vec<_>>(),
        {
            let mut l = vec![(lease1, 600), (lease2, 900)];
            l.sort_unstable();
            l
        }
    );
    let auth = db.auth().unwrap();
    assert_eq!(auth.enabled, Some(true));
    assert!(auth.revision.unwrap() > 1);
    let users = db.users().unwrap();
    let user_roles: Vec<(&[u8], Vec<String>)> = users
        .iter()
        .map(|u| (u.name.as_ref(), u.roles.clone()))
        .collect();
    assert_eq!(
        user_roles,
        vec![
            (&b"alice"[..], vec!["reader".to_string()]),
            (&b"root"[..], vec!["root".to_string()])
        ]
    );
    assert!(
        users.iter().all(|u| u.password.starts_with(b"$2")),
        "bcrypt hashes"
    );
    let roles = db.roles().unwrap();
    assert_eq!(
        roles.iter().map(|r| r.name.as_ref()).collect::<Vec<_>>(),
        vec![&b"reader"[..], b"root"]
    );
    let mut perms: Vec<_> = roles[0]
        .key_permission
        .iter()
        .map(|p| {
            let t = match p.perm_type {
                perm_type::READ => "READ",
                perm_type::WRITE => "WRITE",
                _ => "READWRITE",
            };
            (t.to_string(), p.key.to_vec(), p.range_end.to_vec())
        })
        .collect();
    perms.sort();
    assert_eq!(perms, reader_perms);
    let db_members = db.members().unwrap();
    assert_eq!(db_members.len(), 1);
    assert_eq!(db_members[0].id, member_id);
    assert_eq!(db_members[0].name, "default");
    assert_eq!(db_members[0].peer_urls, vec![ports.peer_url()]);
    assert_eq!(db_members[0].client_urls, vec![ports.client_url()]);
    assert_eq!(db.cluster_version().unwrap().as_deref(), Some("3.4.0"));
    assert!(db.alarms().unwrap().is_empty());

    // --- The stopped member's own db file (no trailer).
    let member_db = data.join("member/snap/db");
    let mdb = EtcdDb::open(&member_db).unwrap();
    assert_eq!(
        status_json(&mdb.status().unwrap()),
        snapshot_status(&member_db)
    );
    assert_eq!(
        snapshot::check_trailer(&member_db).unwrap(),
        TrailerCheck::Absent
    );
    assert_eq!(latest_state(&mdb), kvs);

    // --- The WAL of the stopped member.
    let md = MemberData::read(&data).unwrap();
    assert_eq!(md.member_id(), Some(member_id));
    assert_eq!(md.cluster_id(), Some(cluster_id));
    assert!(
        md.snapshot.is_none(),
        "no .snap below the default snapshot count"
    );
    assert!(md.wal.torn_tail.is_none());
    let backend = md.backend.clone().unwrap();
    assert_eq!(backend.path, member_db);
    assert_eq!(
        Some(backend.consistent_index),
        mdb.meta().unwrap().consistent_index
    );
    let hs = md.wal.hard_state;
    assert_eq!(hs.vote, member_id);
    assert!(hs.commit >= backend.consistent_index && hs.commit >= raft_index);
    let first = &md.wal.entries[0];
    assert_eq!(
        (first.index, first.entry_type),
        (1, entry_type::CONF_CHANGE)
    );
    match decode_entry(first).unwrap() {
        EntryPayload::ConfChange(cc) => {
            assert_eq!(cc.change_type, conf_change_type::ADD_NODE);
            assert_eq!(cc.node_id, member_id);
            let ctx: Value = serde_json::from_slice(&cc.context).unwrap();
            assert_eq!(ctx["peerURLs"], json!([ports.peer_url()]));
        }
        other => panic!("{other:?}"),
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut put_keys = BTreeSet::new();
    let mut v2_paths = BTreeSet::new();
    for (i, e) in md.wal.committed_entries().iter().enumerate() {
        assert_eq!(e.index, i as u64 + 1, "entries are contiguous from 1");
        match decode_entry(e).unwrap() {
            EntryPayload::V3(r) => {
                let (kind, body) = r.request().unwrap();
                *kinds.entry(format!("{kind:?}")).or_default() += 1;
                if kind == RequestKind::Put {
                    put_keys.insert(PutRequest::decode(body.clone()).unwrap().key);
                }
            }
            EntryPayload::V2(r) => {
                v2_paths.insert(String::from_utf8_lossy(&r.path).into_owned());
            }
            _ => {}
        }
    }
    assert_eq!(kinds.get("Put"), Some(&puts), "{kinds:?}");
    for (k, n) in [
        ("Txn", 1),
        ("DeleteRange", 2),
        ("Compaction", 1),
        ("LeaseGrant", 2),
        // etcdctl's first enable fails (no root role), it adds the role,
        // grants it to root and enables again: both attempts are entries.
        ("AuthEnable", 2),
        ("AuthUserGrantRole", 2),
        ("AuthUserAdd", 2),
        ("AuthRoleAdd", 2),
        ("AuthRoleGrantPermission", 2),
    ] {
        assert_eq!(kinds.get(k), Some(&n), "{k}: {kinds:?}");
    }
    // Every key written by a plain put (e and f came in the txn).
    let model_keys: BTreeSet<Vec<u8>> = m
        .recs
        .iter()
        .filter(|r| !r.tombstone && r.key != b"e" && r.key != b"f")
        .map(|r| r.key.clone())
        .collect();
    assert!(put_keys.is_superset(&model_keys));
    assert!(
        v2_paths.contains(&format!("/0/members/{member_id:x}/attributes")),
        "member attributes are published as a bare v2 request: {v2_paths:?}"
    );
    assert!(v2_paths.contains("/0/version"), "{v2_paths:?}");

    // --- Round trip: read the snapshot, write it back, restore it into a
    // fresh etcd: same keys, revisions, leases, users and roles.
    let copy = tmp.path().join("cairn-copy.db");
    let summary = rewrite(&db, &copy);
    assert_eq!(
        summary.status.hash, st.hash,
        "every bucket's bytes survive the round trip"
    );
    assert_eq!(summary.status.revision, st.revision);
    assert_eq!(summary.status.total_key, st.total_key);
    assert_eq!(status_json(&summary.status), snapshot_status(&copy));
    snapshot::append_trailer(&copy).unwrap();
    assert_eq!(snapshot::check_trailer(&copy).unwrap(), TrailerCheck::Valid);
    let restored = tmp.path().join("restored");
    let ports2 = Ports::free();
    let out = snapshot_restore(&copy, &restored, ports2, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // etcdctl's restore output, read before etcd touches it: a .snap at
    // index 1 and a WAL with one conf change.
    let rmd = MemberData::read(&restored).unwrap();
    let rs = rmd.snapshot.as_ref().unwrap();
    assert_eq!((rs.index(), rs.term()), (1, 1));
    assert_eq!(rs.conf_state().voters, vec![rmd.member_id().unwrap()]);
    assert_eq!(rmd.backend.as_ref().unwrap().consistent_index, 1);
    assert!(
        rmd.wal.entries.is_empty(),
        "the conf change is at the snapshot index"
    );
    assert_eq!(rmd.wal.hard_state.commit, 1);
    let v2 = rs.v2_store().unwrap().membership().unwrap();
    assert_eq!(v2.members.len(), 1);
    assert_eq!(v2.members[0].id, rmd.member_id().unwrap());
    assert_eq!(v2.members[0].peer_urls, vec![ports2.peer_url()]);
    // etcdctl restore does not clear the db's members bucket (a 3.4
    // quirk): it still names the old member; the v2 store is what counts.
    let stale = EtcdDb::open(&rmd.backend.as_ref().unwrap().path)
        .unwrap()
        .members()
        .unwrap();
    assert!(stale.iter().any(|m| m.id == member_id), "{stale:?}");

    let mut etcd2 = Etcd::start(&restored, ports2, &[]);
    etcd2.user = Some("root:rootpw".into());
    assert_eq!(get_all(&etcd2), (head_rev, kvs.clone()));
    assert_eq!(lease_list(&etcd2), leases);
    assert_eq!(role_perms(&etcd2, "reader"), reader_perms);
    assert_eq!(etcd2.ctl(&["user", "list"]), "alice\nroot\n");
    // alice's bcrypt hash and role came through: she may read under k,
    // not write there.
    let alice = etcd2.ctl_output(&["--user", "alice:alicepw", "get", "k0200"]);
    assert!(
        alice.status.success(),
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );
    let alice = etcd2.ctl_output(&["--user", "alice:alicepw", "put", "k0200", "x"]);
    assert!(!alice.status.success());
    let compacted = etcd2.ctl_output(&["get", "k0001", &format!("--rev={}", compact_at - 1)]);
    assert!(!compacted.status.success());
    assert!(
        String::from_utf8_lossy(&compacted.stderr).contains("compacted"),
        "{}",
        String::from_utf8_lossy(&compacted.stderr)
    );
    etcd2.stop();
}

/// A database the crate writes from scratch: accepted by `snapshot
/// status` and `restore`, and served by etcd with the revisions, leases
/// and auth data it was written with.
#[test]
fn crate_written_db_is_served_by_real_etcd() {
    common::require_etcd();
    use etcd_formats::etcd::{AuthState, MetaRecords};
    use etcd_formats::pb::authpb::{Permission, Role, User};
    use etcd_formats::pb::leasepb::Lease;
    use etcd_formats::pb::mvccpb::KeyValue;

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cairn.db");
    let mut w = EtcdDbWriter::create(&file).unwrap();
    w.auth(&AuthState {
        enabled: Some(true),
        revision: Some(7),
    })
    .unwrap();
    let rw = |key: &[u8], end: &[u8], t| Permission {
        perm_type: t,
        key: Bytes::copy_from_slice(key),
        range_end: Bytes::copy_from_slice(end),
    };
    w.roles(&[
        Role {
            name: "root".into(),
            key_permission: vec![],
        },
        Role {
            name: "writer".into(),
            key_permission: vec![
                rw(b"k", b"l", perm_type::READWRITE),
                rw(b"a", b"", perm_type::WRITE),
            ],
        },
    ])
    .unwrap();
    let hash = |pw: &str| Bytes::from(bcrypt::hash(pw, 4).unwrap());
    w.users(&[
        User {
            name: "root".into(),
            password: hash("rootpw"),
            roles: vec!["root".into()],
            options: None,
        },
        User {
            name: "bob".into(),
            password: hash("bobpw"),
            roles: vec!["writer".into()],
            options: None,
        },
    ])
    .unwrap();
    w.cluster_version("3.4.0").unwrap();

    let (lease_a, lease_b) = (0x1111_2222_3333_4444_i64, 0x0000_0000_0000_0042_i64);
    let mut expect: BTreeMap<Vec<u8>, KvTuple> = BTreeMap::new();
    let put = |w: &mut EtcdDbWriter,
               expect: &mut BTreeMap<Vec<u8>, KvTuple>,
               (main, sub): (i64, i64),
               key: &[u8],
               value: &[u8],
               (create, version, lease): (i64, i64, i64)| {
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key),
            create_revision: create,
            mod_revision: main,
            version,
            value: Bytes::copy_from_slice(value),
            lease,
        };
        w.put_key_parts(Revision::new(main, sub), false, &kv)
            .unwrap();
        expect.insert(
            key.to_vec(),
            (key.to_vec(), value.to_vec(), create, main, version, lease),
        );
    };
    let e = &mut expect;
    put(&mut w, e, (2, 0), b"a", b"v1", (2, 1, 0));
    put(&mut w, e, (3, 0), b"a", b"v2", (2, 2, 0));
    // A transaction at revision 4: two puts and a delete.
    put(&mut w, e, (4, 0), b"b", b"bee", (4, 1, 0));
    put(&mut w, e, (4, 1), b"c", b"sea", (4, 1, lease_a));
    let tomb = KeyValue {
        key: Bytes::from_static(b"a"),
        ..Default::default()
    };
    w.put_key_parts(Revision::new(4, 2), true, &tomb).unwrap();
    e.remove(&b"a"[..]);
    let mut rev = 5;
    for i in 0..5000 {
        let k = format!("k{i:05}");
        let lease = if i % 1000 == 0 { lease_b } else { 0 };
        put(
            &mut w,
            e,
            (rev, 0),
            k.as_bytes(),
            format!("{i}-").repeat(30).as_bytes(),
            (rev, 1, lease),
        );
        rev += 1;
    }
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    put(&mut w, e, (rev, 0), b"big", &big, (rev, 1, 0));
    rev += 1;
    put(&mut w, e, (rev, 0), b"a", b"again", (rev, 1, 0));
    let last_rev = rev;
    // Lease IDs in key order (u64 big endian).
    w.put_lease(&Lease {
        id: lease_b,
        ttl: 3600,
        remaining_ttl: 0,
    })
    .unwrap();
    w.put_lease(&Lease {
        id: lease_a,
        ttl: 1800,
        remaining_ttl: 0,
    })
    .unwrap();
    w.meta(&MetaRecords {
        consistent_index: Some(last_rev as u64),
        scheduled_compact_rev: Some(2),
        finished_compact_rev: Some(2),
    })
    .unwrap();
    // Buckets must come in file order.
    let err = w.cluster_version("3.4.0").unwrap_err();
    assert!(err.to_string().contains("must be written before"), "{err}");
    let summary = w.finish().unwrap();
    assert_eq!(summary.status.revision, last_rev);

    // status accepts it and agrees with what the writer computed.
    assert_eq!(status_json(&summary.status), snapshot_status(&file));
    assert_eq!(
        summary.status,
        EtcdDb::open(&file).unwrap().status().unwrap()
    );

    // Without the trailer restore refuses unless told to skip the check.
    let ports = Ports::free();
    let out = snapshot_restore(&file, &tmp.path().join("r0"), ports, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("snapshot missing hash but --skip-hash-check=false"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = snapshot_restore(&file, &tmp.path().join("r1"), ports, &["--skip-hash-check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the trailer it restores; a flipped byte is caught.
    let digest = snapshot::append_trailer(&file).unwrap();
    assert_eq!(snapshot::check_trailer(&file).unwrap(), TrailerCheck::Valid);
    let bad = tmp.path().join("bad.db");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[5 * 4096 + 100] ^= 1;
    std::fs::write(&bad, &bytes).unwrap();
    assert!(
        matches!(snapshot::check_trailer(&bad).unwrap(), TrailerCheck::Mismatch { stored, .. } if stored == digest)
    );
    let out = snapshot_restore(&bad, &tmp.path().join("r2"), ports, &[]);
    assert!(
        !out.status.success(),
        "etcdctl must refuse a snapshot whose hash does not match"
    );

    let restored = tmp.path().join("restored");
    let out = snapshot_restore(&file, &restored, ports, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut etcd = Etcd::start(&restored, ports, &[]);
    // Auth is on and root's bcrypt hash works.
    let denied = etcd.ctl_output(&["get", "a"]);
    assert!(!denied.status.success(), "auth must be enabled");
    etcd.user = Some("root:rootpw".into());
    let (head_rev, kvs) = get_all(&etcd);
    assert_eq!(head_rev, last_rev);
    assert_eq!(kvs, expect.into_values().collect::<Vec<_>>());
    let mut want_leases = vec![lease_a, lease_b];
    want_leases.sort_unstable();
    assert_eq!(lease_list(&etcd), want_leases);
    let ttl = etcd.ctl_json(&["lease", "timetolive", &format!("{lease_a:x}"), "--keys"]);
    assert_eq!(num(&ttl["granted-ttl"]), 1800, "{ttl}");
    assert_eq!(
        ttl["keys"].as_array().map(Vec::len),
        Some(1),
        "c is attached to lease a: {ttl}"
    );
    assert_eq!(etcd.ctl(&["user", "list"]), "bob\nroot\n");
    let writer = role_perms(&etcd, "writer");
    assert_eq!(
        writer,
        vec![
            ("READWRITE".to_string(), b"k".to_vec(), b"l".to_vec()),
            ("WRITE".to_string(), b"a".to_vec(), vec![]),
        ]
    );
    // bob may write under k but not read a.
    let bob_put = etcd.ctl_output(&["--user", "bob:bobpw", "put", "k-new", "x"]);
    assert!(
        bob_put.status.success(),
        "{}",
        String::from_utf8_lossy(&bob_put.stderr)
    );
    let bob_get = etcd.ctl_output(&["--user", "bob:bobpw", "get", "a"]);
    assert!(!bob_get.status.success());
    // The compaction mark holds: revision 1 is gone, 2 is there.
    let old = etcd.ctl_output(&["get", "a", "--rev=1"]);
    assert!(String::from_utf8_lossy(&old.stderr).contains("compacted"));
    let at2 = etcd.ctl_json(&["get", "a", "--rev=2"]);
    assert_eq!(common::unb64(&at2["kvs"][0]["value"]), b"v1");
    let at4 = etcd.ctl_json(&["get", "", "--prefix", "--rev=4", "--keys-only"]);
    assert_eq!(num(&at4["count"]), 2, "b and c at revision 4: {at4}");
    etcd.stop();
}

/// Writes enough to cut a second WAL segment and several `.snap` files,
/// then crashes etcd (SIGKILL): the crate must pick the snapshot etcd
/// would, follow the CRC chain across segments, and its "entries to apply"
/// on top of the db must give etcd's final state.
#[test]
fn wal_segments_snapshots_and_crash_import() {
    common::require_etcd();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("m");
    let ports = Ports::free();
    // The backend commits only when a snapshot forces it, so after the
    // crash the db lags the WAL and the import must replay entries.
    let etcd = Etcd::start(
        &data,
        ports,
        &[
            "--snapshot-count",
            "40",
            "--backend-batch-interval",
            "1h",
            "--backend-batch-limit",
            "1000000",
            "--max-request-bytes",
            "10000000",
        ],
    );
    // ~72 MB of WAL, past the 64 MB segment size, in few big writes.
    let value: Vec<u8> = (0..8_000_000).map(|i| (i % 199) as u8).collect();
    for i in 0..9 {
        etcd.put(&format!("big{:02}", i % 5), &value[i..], 0);
    }
    for i in 0..300 {
        etcd.put(&format!("small{i:03}"), format!("v{i}").as_bytes(), 0);
    }
    let (head_rev, kvs) = get_all(&etcd);
    let members = etcd.ctl_json(&["member", "list"]);
    let member_id = unum(&members["members"][0]["ID"]);
    etcd.kill();

    let wal_files = list_wal_files(&data.join("member/wal")).unwrap();
    assert!(
        wal_files.len() >= 2,
        "expected a cut segment: {wal_files:?}"
    );
    let md = MemberData::read(&data).unwrap();
    assert_eq!(md.member_id(), Some(member_id));
    let snap = md.snapshot.as_ref().expect("etcd wrote .snap files");
    // The newest .snap file whose index the WAL committed.
    let newest = etcd_formats::snap::list_snap_files(&data.join("member/snap")).unwrap();
    assert_eq!(snap.path, newest[0]);
    let v2 = snap.v2_store().unwrap().membership().unwrap();
    assert_eq!(v2.cluster_version.as_deref(), Some("3.4.0"));
    assert_eq!(v2.members.len(), 1);
    assert_eq!(v2.members[0].id, member_id);
    assert_eq!(v2.members[0].name, "default");
    assert_eq!(v2.members[0].peer_urls, vec![ports.peer_url()]);
    assert_eq!(v2.members[0].client_urls, vec![ports.client_url()]);
    assert_eq!(snap.conf_state().voters, vec![member_id]);
    assert!(md.wal.entries.iter().all(|e| e.index > snap.index()));
    assert_eq!(
        md.wal.entries.first().map(|e| e.index),
        Some(snap.index() + 1)
    );
    // The whole log from the first segment also reads, CRCs chained
    // across the segment boundary.
    let mut r = RecordReader::new(wal_files.clone());
    let mut seen_files = BTreeSet::new();
    while let Some(rec) = r.next_record().unwrap() {
        seen_files.insert(rec.file);
    }
    assert_eq!(seen_files.len(), wal_files.len());

    // Import: the backend db plus the committed entries it lacks.
    let backend = md.backend.clone().unwrap();
    assert!(
        md.entries_to_apply().len() > 10,
        "the db should lag the WAL: consistent index {}, commit {}",
        backend.consistent_index,
        md.wal.hard_state.commit
    );
    let db = EtcdDb::open(&backend.path).unwrap();
    let mut state: BTreeMap<Vec<u8>, Vec<u8>> =
        latest_state(&db).into_iter().map(|t| (t.0, t.1)).collect();
    let mut rev = db.status().unwrap().revision;
    for e in md.entries_to_apply() {
        if let EntryPayload::V3(r) = decode_entry(e).unwrap()
            && let Some((RequestKind::Put, body)) = r.request()
        {
            let p = PutRequest::decode(body.clone()).unwrap();
            state.insert(p.key, p.value);
            rev += 1;
        }
    }
    let want: BTreeMap<Vec<u8>, Vec<u8>> = kvs.into_iter().map(|t| (t.0, t.1)).collect();
    assert_eq!(state, want);
    assert_eq!(rev, head_rev);
}

/// Damaged copies of real etcd files: typed errors naming file and place,
/// never a panic; a torn WAL tail is the end of the log, not an error.
#[test]
fn damaged_real_files_give_typed_errors() {
    common::require_etcd();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("m");
    let ports = Ports::free();
    let etcd = Etcd::start(&data, ports, &[]);
    let lease = etcd.lease_grant(300);
    for i in 0..400 {
        etcd.put(
            &format!("key{i:03}"),
            format!("value{i}").repeat(10).as_bytes(),
            if i % 50 == 0 { lease } else { 0 },
        );
    }
    etcd.delete("key100", Some("key150"));
    let snap = tmp.path().join("s.db");
    etcd.ctl(&["snapshot", "save", snap.to_str().unwrap()]);
    etcd.stop();
    let good = std::fs::read(&snap).unwrap();

    // Truncated: named as such, with the sizes.
    let cut = tmp.path().join("cut.db");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    match BoltReader::open(&cut).err().unwrap() {
        BoltError::Truncated {
            path,
            need_bytes,
            have_bytes,
            ..
        } => {
            assert_eq!(path, cut);
            assert_eq!(have_bytes, good.len() as u64 / 2);
            assert!(need_bytes > have_bytes);
        }
        e => panic!("{e}"),
    }
    // A damaged active meta page: the other one is used (etcdctl agrees).
    let one = tmp.path().join("meta.db");
    let mut b = good.clone();
    b[40] ^= 0x80; // meta 0's root page id
    std::fs::write(&one, &b).unwrap();
    let r = BoltReader::open(&one).unwrap();
    assert_eq!(r.active_meta_page(), 1);
    let st = EtcdDb::from_bolt(r).status().unwrap();
    assert_eq!(num(&snapshot_status(&one)["totalKey"]), st.total_key as i64);

    // Random damage: every outcome is a value or a typed error.
    let mut rng = fastrand::Rng::with_seed(0xe7cd);
    let db_len = good.len() - 32;
    let (mut ok, mut errs) = (0, 0);
    for round in 0..300 {
        let mut b = good.clone();
        if round % 15 == 0 {
            b.truncate(rng.usize(..b.len()));
        } else {
            for _ in 0..rng.usize(1..6) {
                let i = rng.usize(..db_len);
                b[i] ^= 1 << rng.u8(..8);
            }
        }
        let outcome = (|| -> Result<(), Box<dyn std::error::Error>> {
            let db = EtcdDb::from_bolt(BoltReader::from_bytes(Bytes::from(b), "damaged")?);
            db.status()?;
            db.meta()?;
            for r in db.keys()? {
                r?;
            }
            for l in db.leases()? {
                l?;
            }
            db.users()?;
            db.roles()?;
            db.members()?;
            db.auth()?;
            Ok(())
        })();
        match outcome {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(
                    e.to_string().contains("damaged"),
                    "errors name the file: {e}"
                );
                errs += 1;
            }
        }
    }
    assert!(errs > 0 && ok > 0, "ok {ok} errors {errs}");

    // WAL: a flipped byte inside a record in the middle is a CRC error
    // naming the segment and the record's offset.
    let wal_dir = data.join("member/wal");
    let files = list_wal_files(&wal_dir).unwrap();
    let seg = files[0].path.clone();
    let mut recs = Vec::new();
    let mut r = RecordReader::new(files.clone());
    while let Some(rec) = r.next_record().unwrap() {
        recs.push(rec);
    }
    let n = recs.len();
    let pick = recs[n / 2..]
        .iter()
        .find(|rec| {
            let start = rec.offset + 8;
            rec.data.len() > 20 && start / 512 == (start + rec.data.len() as u64 + 16) / 512
        })
        .unwrap()
        .clone();
    let original = std::fs::read(&seg).unwrap();
    let mut damaged = original.clone();
    let at = (pick.offset + 8 + 12) as usize;
    damaged[at] ^= 0x10;
    std::fs::write(&seg, &damaged).unwrap();
    let mut r = RecordReader::new(files.clone());
    let err = loop {
        match r.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("damage not detected"),
            Err(e) => break e,
        }
    };
    match &err {
        WalError::Crc { path, offset, .. } | WalError::BadRecord { path, offset, .. } => {
            assert_eq!(path, &seg);
            assert_eq!(*offset, pick.offset);
        }
        e => panic!("{e}"),
    }
    assert!(MemberData::read(&data).is_err());

    // A torn last record (cut short) ends the log at its offset.
    let last = recs.last().unwrap().clone();
    let cut_at = (last.offset + 8 + last.data.len() as u64 / 2) as usize;
    std::fs::write(&seg, &original[..cut_at]).unwrap();
    let md = MemberData::read(&data).unwrap();
    let torn = md.wal.torn_tail.clone().unwrap();
    assert_eq!((torn.path, torn.offset), (seg.clone(), last.offset));
    // A last record whose sector was never written (zeros) is torn too.
    let mut zeroed = original.clone();
    let start = (last.offset + 8) as usize;
    let mut word = [0u8; 8];
    word.copy_from_slice(&original[start - 8..start]);
    let word = u64::from_le_bytes(word);
    let frame_len = (word & 0x00ff_ffff_ffff_ffff) + ((word >> 56) & 0x7);
    zeroed[start..start + frame_len as usize].fill(0);
    std::fs::write(&seg, &zeroed).unwrap();
    match MemberData::read(&data) {
        Ok(md) => assert_eq!(md.wal.torn_tail.unwrap().offset, last.offset),
        Err(e) => panic!("a torn tail must not be an error: {e}"),
    }
    std::fs::write(&seg, &original).unwrap();
    assert!(MemberData::read(&data).unwrap().wal.torn_tail.is_none());

    // Random damage to the written part of the WAL (the preallocated
    // zeros left off: the end of the file ends the log just the same).
    let used = &original[..start + frame_len as usize];
    let (mut ok, mut errs) = (0, 0);
    for round in 0..200 {
        let mut b = used.to_vec();
        if round % 10 == 0 {
            b.truncate(rng.usize(..b.len()));
        } else {
            for _ in 0..rng.usize(1..5) {
                let i = rng.usize(..b.len());
                b[i] ^= 1 << rng.u8(..8);
            }
        }
        std::fs::write(&seg, &b).unwrap();
        match MemberData::read(&data) {
            Ok(_) => ok += 1,
            Err(_) => errs += 1,
        }
    }
    assert!(errs > 100, "ok {ok} errors {errs}");
    std::fs::write(&seg, &original).unwrap();

    // A real .snap file (from etcdctl snapshot restore), damaged at random.
    let restored = tmp.path().join("restored");
    let out = snapshot_restore(&snap, &restored, Ports::free(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap_file =
        etcd_formats::snap::list_snap_files(&restored.join("member/snap")).unwrap()[0].clone();
    let good_snap = std::fs::read(&snap_file).unwrap();
    let damaged_snap = tmp.path().join("damaged.snap");
    let mut caught = 0;
    for round in 0..200 {
        let mut b = good_snap.clone();
        if round % 10 == 0 {
            b.truncate(rng.usize(..b.len()));
        } else {
            let i = rng.usize(..b.len());
            b[i] ^= 1 << rng.u8(..8);
        }
        std::fs::write(&damaged_snap, &b).unwrap();
        match etcd_formats::snap::read_snap_file(&damaged_snap) {
            Ok(s) => {
                let _ = etcd_formats::v2store::parse(&s.data).map(|v| v.membership());
            }
            Err(e) => {
                assert!(e.to_string().contains("damaged.snap"), "{e}");
                caught += 1;
            }
        }
    }
    assert!(caught > 190, "CRC-32C catches single flips: {caught}");
}
