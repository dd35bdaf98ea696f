//! Cairn snapshot files (`storage/snapfile.rs`: what a leader sends and
//! `etcdctl snapshot save` gets) and `cairn snapshot restore`
//! (`storage/restore.rs`).
//!
//! Input: a mode byte, then the file. Mode 0 writes the bytes as they are;
//! the other modes make the checksums right so the fuzzer gets past them:
//! 1 appends the body's SHA-256 (the raft form), 2 also pads to 512 bytes
//! and appends the outer digest (the portable form `snapshot save` writes),
//! 3 is 2 with a wrong outer digest. A `CAIRNSNAP\x01` magic is put in
//! front for modes 4..7 (otherwise as 0..3).
//!
//! `snapshot-file` checks: `verify`, `read_records` and `status` agree on
//! whether the file is good, and on a good file about the records (also
//! with the outer digest skipped). `snapshot-restore`
//! restores into a fresh data dir: a file `read_records` refuses must be
//! refused with nothing left behind; a good one gives a data dir and the
//! count of revisions read.

use super::{Cursor, MIB, scratch_dir};
use crate::engine::{Outcome, Target, feature, with_count};
use cairn::storage::restore::{self, RestoreOptions};
use cairn::storage::snapfile;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

const MAGIC: &[u8] = b"CAIRNSNAP\x01";

const DICT: &[&[u8]] = &[
    b"CAIRNSNAP\x01",
    b"\x00\x00\x00\x00\x00\x00\x00\x05",
    b"\x00\x00\x00\x00",
    b"\x00\x00\x00\x08",
    b"\x04\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x01",
    b"\x02",
    b"\x00",
    // A revision key (8-byte main, 8-byte sub, big-endian) and a meta key.
    b"\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00",
    b"consistent_index",
    b"\x08\x01",
];

pub const FILE: Target = Target {
    name: "snapshot-file",
    about: "Cairn snapshot files: verify, read_records, status (checksums fixed up by mode)",
    run: run_file,
    dict: DICT,
    max_len: 16 * 1024,
    // Records are read as their bytes arrive, and the conf state is checked
    // before rust-protobuf (which allocates a bytes field's declared length
    // up front) decodes it: a length field alone once made the reader
    // allocate 64 MiB, and a damaged conf state 10 MB (docs/security.md).
    heap_budget_bytes: 4 * MIB,
};

pub const RESTORE: Target = Target {
    name: "snapshot-restore",
    about: "cairn snapshot restore into a fresh data dir (fjall), same file modes",
    run: run_restore,
    dict: DICT,
    max_len: 16 * 1024,
    // fjall's write buffers and caches for the new data dir.
    heap_budget_bytes: 64 * MIB,
};

/// Builds the file for a mode (see the module docs).
fn build(data: &[u8]) -> (u8, Vec<u8>) {
    let mut c = Cursor::new(data);
    let mode = c.byte() % 8;
    let mut file = Vec::new();
    if mode >= 4 {
        file.extend_from_slice(MAGIC);
    }
    file.extend_from_slice(c.rest());
    if mode % 4 >= 1 {
        let body = Sha256::digest(&file);
        file.extend_from_slice(&body);
    }
    if mode % 4 >= 2 {
        let pad = (512 - file.len() % 512) % 512;
        file.resize(file.len() + pad, 0);
        let mut outer: [u8; 32] = Sha256::digest(&file).into();
        if mode % 4 == 3 {
            outer[0] ^= 1;
        }
        file.extend_from_slice(&outer);
    }
    (mode, file)
}

fn write(name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("scratch file: {e}"))?;
    Ok(path)
}

fn run_file(data: &[u8]) -> Outcome {
    let (_, file) = build(data);
    let path = write("snapshot-file", &file)?;
    let verified = snapfile::verify(&path);
    let mut records = Vec::new();
    let read = snapfile::read_records(&path, false, |tag, k, v| {
        records.push((tag, k.len(), v.len()));
        Ok(())
    });
    let mut skipped = 0usize;
    let read_skip = snapfile::read_records(&path, true, |_, _, _| {
        skipped += 1;
        Ok(())
    });
    let status = restore::status(&path);
    let _ = std::fs::remove_file(&path);

    match (&verified, &read, &status) {
        (Ok(h1), Ok(h2), Ok(s)) => {
            if h1 != h2 {
                return Err("verify and read_records read different headers".into());
            }
            if s.total_keys != records.len() as u64 {
                return Err(format!(
                    "status counts {} records, read_records {}",
                    s.total_keys,
                    records.len()
                ));
            }
            if read_skip.is_err() || skipped != records.len() {
                return Err("skipping the outer hash changed what a good file reads as".into());
            }
            Ok(with_count(
                feature(&["good", &h1.portable.to_string()]),
                records.len(),
            ))
        }
        (Err(e), Err(_), Err(_)) => Ok(feature(&["refused", &e.to_string()])),
        _ => Err(format!(
            "verify {:?}, read_records {:?}, status {:?} disagree",
            verified.as_ref().map(drop).map_err(|e| e.to_string()),
            read.as_ref().map(drop).map_err(|e| e.to_string()),
            status.as_ref().map(drop).map_err(|e| e.to_string()),
        )),
    }
}

fn run_restore(data: &[u8]) -> Outcome {
    let (mode, file) = build(data);
    let path = write("restore-input", &file)?;
    let skip_hash_check = mode % 2 == 1;
    let mut kv_records = 0u64;
    let readable = snapfile::read_records(&path, skip_hash_check, |tag, _, _| {
        kv_records += u64::from(tag == snapfile::TAG_KV);
        Ok(())
    });
    let data_dir = scratch_dir().join("restored");
    let staging = scratch_dir().join("restored.restoring");
    let _ = std::fs::remove_dir_all(&data_dir);
    let result = restore::restore(&RestoreOptions {
        snapshot: path.clone(),
        data_dir: data_dir.clone(),
        name: "m1".into(),
        members: vec![("m1".into(), vec!["http://127.0.0.1:2380".into()])],
        token: "fuzz".into(),
        skip_hash_check,
    });
    let made_dir = data_dir.exists();
    let left_staging = staging.exists();
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_file(&path);
    if left_staging {
        return Err("restore left its staging dir behind".into());
    }
    match (readable, result) {
        (Err(_), Ok(_)) => Err("restore accepted a file read_records refuses".into()),
        (Err(_), Err(e)) => {
            if made_dir {
                return Err(format!("a refused restore left a data dir ({e})"));
            }
            Ok(feature(&["refused", &e.to_string()]))
        }
        (Ok(_), Ok(r)) => {
            if !made_dir {
                return Err("restore succeeded without a data dir".into());
            }
            if r.revisions != kv_records {
                return Err(format!(
                    "restore counted {} revisions, the file has {kv_records} kv records",
                    r.revisions
                ));
            }
            Ok(with_count(feature(&["restored"]), kv_records as usize))
        }
        // A readable file can still hold records restore refuses (a kv key
        // that is not a revision).
        (Ok(_), Err(e)) => {
            if made_dir {
                return Err(format!("a refused restore left a data dir ({e})"));
            }
            Ok(feature(&["refused after reading", &e.to_string()]))
        }
    }
}
