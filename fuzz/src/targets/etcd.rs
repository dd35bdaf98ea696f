//! etcd 3.4's files as the `etcd_formats` crate reads them: what a
//! `cairn snapshot restore` of an etcd snapshot or a migration from an etcd
//! data dir takes.
//!
//! `etcd-bolt`: a bbolt database (an `etcdctl snapshot save` file, with or
//! without its SHA-256 trailer), read from memory: every typed reader
//! (`status`, `meta`, keys, leases, auth, users, roles, members, alarms),
//! the full consistency `check`, and the trailer check on a file. Checks:
//! no panic, memory bounded; a database `check` accepts is one the
//! bucket-walking readers can read (unless a root key is a plain value,
//! which bbolt's check skips and the readers refuse cleanly).
//!
//! `etcd-wal`: a mode byte, then: 0 raw WAL segment bytes; 1 records
//! (`type`, `u16` length, data…) framed and CRC-chained as etcd writes them,
//! so the fuzzer gets past the checksums; 2 a `.snap` file; 3 a `.snap`
//! whose CRC-32C is made right; 4 the v2 store JSON a `.snap` carries;
//! 5 a raft entry's payload. WAL and `.snap` inputs are read as a data dir
//! (`MemberData::read`) the way etcd boots.

use super::{Cursor, MIB, scratch_dir};
use crate::engine::{Outcome, Target, feature, tag, with_count};
use bytes::Bytes;
use etcd_formats::bolt::BoltReader;
use etcd_formats::checksum::{crc32c, crc32c_append};
use etcd_formats::datadir::MemberData;
use etcd_formats::etcd::EtcdDb;
use etcd_formats::pb::{raftpb, snappb, walpb};
use prost::Message as _;

pub const BOLT: Target = Target {
    name: "etcd-bolt",
    about: "etcd bbolt databases (snapshot save files): every typed reader, check, trailer",
    run: run_bolt,
    dict: &[
        // bbolt magic and version, page flags, etcd bucket names.
        b"\xed\xda\x0c\xed",
        b"\x02\x00\x00\x00",
        b"\x00\x10\x00\x00",
        b"\x01\x00",
        b"\x02\x00",
        b"\x04\x00",
        b"\x10\x00",
        b"\x01\x00\x00\x00",
        b"key",
        b"meta",
        b"lease",
        b"auth",
        b"authUsers",
        b"authRoles",
        b"members",
        b"members_removed",
        b"cluster",
        b"alarm",
        b"consistent_index",
        b"scheduledCompactRev",
    ],
    max_len: 96 * 1024,
    heap_budget_bytes: 64 * MIB,
};

pub const WAL: Target = Target {
    name: "etcd-wal",
    about: "etcd WAL segments, .snap files, the v2 store JSON and raft entry payloads, read as a data dir",
    run: run_wal,
    dict: &[
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x04",
        b"\x05",
        b"\x08\x02\x10\x05\x18\x03",
        b"{\"Root\":{\"Path\":\"/\",\"Dir\":true,\"Nodes\":{}}}",
        b"\"/0/members/",
        b"/attributes",
        b"/raftAttributes",
        b"\"peerURLs\"",
        b"\"Nodes\"",
        b"\"Value\"",
        b"\"Dir\":true",
        b"\x12\x00",
        b"\x1a\x00",
        b"\x22\x00",
        b"\x7f",
    ],
    max_len: 32 * 1024,
    heap_budget_bytes: 64 * MIB,
};

fn run_bolt(data: &[u8]) -> Outcome {
    let Ok(bolt) = BoltReader::from_bytes(Bytes::copy_from_slice(data), "fuzz.db") else {
        return Ok(feature(&["not bolt", &trailer(data)]));
    };
    let checked = bolt.check();
    let db = EtcdDb::from_bolt(bolt);
    let mut failed = Vec::new();
    let mut note = |what: &'static str, ok: bool| {
        if !ok {
            failed.push(what);
        }
    };
    // A root key that is not a bucket passes bbolt's check (it skips
    // values) but fails the readers that walk every bucket, cleanly.
    let not_a_bucket = |e: &dyn std::fmt::Debug| format!("{e:?}").contains("NotABucket");
    let status = db.status();
    let snapshot_status = etcd_formats::snapshot::status(db.bolt());
    let odd_root = status.as_ref().err().is_some_and(|e| not_a_bucket(e))
        || snapshot_status
            .as_ref()
            .err()
            .is_some_and(|e| not_a_bucket(e));
    note("buckets", db.bucket_names().is_ok());
    note("status", status.is_ok());
    note("snapshot status", snapshot_status.is_ok());
    note("meta", db.meta().is_ok());
    let mut keys = 0;
    match db.keys() {
        Ok(iter) => {
            for k in iter.take(100_000) {
                keys += 1;
                if k.is_err() {
                    note("key", false);
                    break;
                }
            }
        }
        Err(_) => note("keys", false),
    }
    match db.leases() {
        Ok(iter) => {
            for l in iter.take(100_000) {
                if l.is_err() {
                    note("lease", false);
                    break;
                }
            }
        }
        Err(_) => note("leases", false),
    }
    note("auth", db.auth().is_ok());
    note("users", db.users().is_ok());
    note("roles", db.roles().is_ok());
    note("members", db.members().is_ok());
    note("removed", db.removed_members().is_ok());
    note("version", db.cluster_version().is_ok());
    note("alarms", db.alarms().is_ok());
    // A clean check means every bucket can be read (check.rs's promise);
    // the typed readers may still refuse values etcd would not write.
    if checked.is_ok()
        && !odd_root
        && failed
            .iter()
            .any(|f| ["buckets", "status", "snapshot status"].contains(f))
    {
        return Err(format!("check passed but readers failed: {failed:?}"));
    }
    let word = match &checked {
        Ok(()) => "checked".to_string(),
        Err(e) => e.to_string(),
    };
    Ok(with_count(feature(&[&word, &failed.join(",")]), keys))
}

/// The trailer check on the bytes as a file.
fn trailer(data: &[u8]) -> String {
    let path = scratch_dir().join("bolt-trailer");
    if std::fs::write(&path, data).is_err() {
        return "scratch".into();
    }
    let r = etcd_formats::snapshot::check_trailer(&path);
    let _ = std::fs::remove_file(&path);
    match r {
        Ok(t) => format!("{t:?}")
            .chars()
            .filter(|c| c.is_alphabetic())
            .take(24)
            .collect(),
        Err(e) => e.to_string(),
    }
}

/// Frames WAL records as etcd's encoder does (8-byte length word with the
/// padding in its top byte, zero padding to 8 bytes).
fn frame(out: &mut Vec<u8>, rec: &walpb::Record) {
    let data = rec.encode_to_vec();
    let len = data.len() as u64;
    let pad = (8 - len % 8) % 8;
    let word = if pad == 0 {
        len
    } else {
        len | ((0x80 | pad) << 56)
    };
    out.extend_from_slice(&word.to_le_bytes());
    out.extend_from_slice(&data);
    out.resize(out.len() + pad as usize, 0);
}

/// A segment from (type, data) records with a correct CRC chain.
fn segment(mut c: Cursor<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut crc = 0u32;
    frame(
        &mut out,
        &walpb::Record {
            record_type: 4,
            crc: 0,
            data: Bytes::new(),
        },
    );
    for _ in 0..256 {
        let kind = i64::from(c.byte() % 6);
        let len = usize::from(c.u16() % 2048);
        let data = c.take(len);
        if kind == 0 && data.is_empty() {
            break;
        }
        let rec = if kind == 4 {
            walpb::Record {
                record_type: 4,
                crc,
                data: Bytes::new(),
            }
        } else {
            crc = crc32c_append(crc, data);
            walpb::Record {
                record_type: kind,
                crc,
                data: Bytes::copy_from_slice(data),
            }
        };
        frame(&mut out, &rec);
    }
    out
}

fn run_wal(data: &[u8]) -> Outcome {
    let mut c = Cursor::new(data);
    let mode = c.byte() % 6;
    let (wal, snap): (Option<Vec<u8>>, Option<Vec<u8>>) = match mode {
        0 => (Some(c.rest().to_vec()), None),
        1 => (Some(segment(c)), None),
        2 => (None, Some(c.rest().to_vec())),
        3 => {
            let inner = c.rest();
            let file = snappb::Snapshot {
                crc: crc32c(inner),
                data: Bytes::copy_from_slice(inner),
            };
            (None, Some(file.encode_to_vec()))
        }
        4 => {
            let word = match etcd_formats::v2store::parse(c.rest()) {
                Ok(store) => match store.membership() {
                    Ok(_) => "membership".to_string(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            return Ok(feature(&["v2 store", &word]));
        }
        _ => {
            let kind = i32::from(c.byte() % 3);
            let entry = raftpb::Entry {
                entry_type: kind,
                term: 2,
                index: 9,
                data: Bytes::copy_from_slice(c.rest()),
            };
            let word = match etcd_formats::request::decode_entry(&entry) {
                Ok(p) => format!("{p:?}")
                    .chars()
                    .take_while(|c| c.is_alphabetic())
                    .collect(),
                Err(e) => e.to_string(),
            };
            return Ok(feature(&["entry", &word]));
        }
    };
    let dir = scratch_dir().join("etcd-data");
    let _ = std::fs::remove_dir_all(&dir);
    let member = dir.join("member");
    let made = std::fs::create_dir_all(member.join("wal"))
        .and_then(|()| std::fs::create_dir_all(member.join("snap")));
    if let Err(e) = made {
        return Err(format!("scratch dir: {e}"));
    }
    let wal = wal.unwrap_or_else(|| segment(Cursor::new(&[])));
    let mut written = std::fs::write(
        member.join("wal/0000000000000000-0000000000000000.wal"),
        &wal,
    );
    if let Some(snap) = snap {
        written = written.and_then(|()| {
            std::fs::write(
                member.join("snap/0000000000000002-0000000000000005.snap"),
                &snap,
            )
        });
    }
    written.map_err(|e| format!("scratch file: {e}"))?;
    let word = match MemberData::read(&dir) {
        Ok(m) => format!(
            "read {} {} {}",
            tag(m.wal.entries.len().min(3) as u64),
            tag(m.snapshot_index().min(1)),
            m.wal.torn_tail.is_some()
        ),
        Err(e) => e.to_string(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(feature(&[&word, &tag(mode.into())]))
}
