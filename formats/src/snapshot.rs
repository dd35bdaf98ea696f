//! etcd snapshot files and `etcdctl snapshot status`.
//!
//! A snapshot (what `Maintenance.Snapshot` streams and `etcdctl snapshot
//! save` stores) is the bbolt database's bytes followed by the SHA-256 of
//! those bytes. etcdctl recognises the trailer by the file size alone:
//! `size % 512 == 32` (a page-aligned database never has that remainder).
//! `etcdctl snapshot restore` verifies it unless `--skip-hash-check`, and
//! refuses a file without one in that case.

use crate::bolt::{BoltError, BoltReader};
use crate::checksum::crc32c_append;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

/// Bytes of the SHA-256 trailer.
pub const TRAILER_BYTES: u64 = 32;
/// etcdctl's trailer test: `size % TRAILER_ALIGN_BYTES == TRAILER_BYTES`.
pub const TRAILER_ALIGN_BYTES: u64 = 512;
/// Read size when hashing a file.
const HASH_READ_BYTES: usize = 4 << 20;

/// What `etcdctl snapshot status -w json` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DbStatus {
    /// CRC-32C over every top-level bucket name and each of its keys and
    /// values, in order.
    pub hash: u32,
    /// Main revision of the last entry of the `key` bucket (0 if empty).
    pub revision: i64,
    /// Entries in all top-level buckets.
    pub total_key: u64,
    /// `page_count * page_size`.
    pub total_size: u64,
}

/// Computes [`DbStatus`] incrementally, bucket by bucket in order.
#[derive(Debug, Default)]
pub(crate) struct StatusHasher {
    crc: u32,
    revision: i64,
    total_key: u64,
    in_key_bucket: bool,
}

impl StatusHasher {
    pub fn bucket(&mut self, name: &[u8]) {
        self.crc = crc32c_append(self.crc, name);
        self.in_key_bucket = name == crate::etcd::bucket::KEY;
    }

    pub fn entry(&mut self, key: &[u8], value: &[u8]) {
        self.crc = crc32c_append(crc32c_append(self.crc, key), value);
        self.total_key += 1;
        if self.in_key_bucket
            && let Some(main) = key.get(..8)
        {
            let mut b = [0u8; 8];
            b.copy_from_slice(main);
            self.revision = i64::from_be_bytes(b);
        }
    }

    pub fn finish(&self, total_size: u64) -> DbStatus {
        DbStatus {
            hash: self.crc,
            revision: self.revision,
            total_key: self.total_key,
            total_size,
        }
    }
}

/// `etcdctl snapshot status`: the integrity check, then the hash, key
/// count and revision over every top-level bucket. Like etcdctl, fails if
/// a top-level key is not a bucket.
pub fn status(db: &BoltReader) -> Result<DbStatus, BoltError> {
    // One pass: the integrity check hands over every entry as it reads it.
    let mut h = StatusHasher::default();
    db.check_visiting(&mut |nesting, e| {
        match nesting {
            0 if !e.is_bucket => {
                return Err(BoltError::NotABucket {
                    path: db.path().to_path_buf(),
                    key: crate::bolt::show(&e.key),
                });
            }
            0 => h.bucket(&e.key),
            // bbolt's ForEach hands nested buckets over with a nil value.
            1 => h.entry(&e.key, if e.is_bucket { &[] } else { &e.value }),
            _ => {}
        }
        Ok(())
    })?;
    Ok(h.finish(db.size_bytes()))
}

/// Whether etcdctl would treat a file of `len_bytes` as carrying a trailer.
pub fn has_trailer(len_bytes: u64) -> bool {
    len_bytes % TRAILER_ALIGN_BYTES == TRAILER_BYTES
}

/// What a file's trailer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailerCheck {
    /// The size rule finds no trailer (a raw `member/snap/db`, say).
    Absent,
    /// The trailer equals the SHA-256 of the bytes before it.
    Valid,
    /// The trailer does not match: the file is corrupt.
    Mismatch {
        stored: [u8; 32],
        computed: [u8; 32],
    },
}

/// Checks a snapshot file's trailer as `etcdctl snapshot restore` does.
pub fn check_trailer(path: impl AsRef<Path>) -> Result<TrailerCheck, BoltError> {
    let path = path.as_ref();
    let io = |source| BoltError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if !has_trailer(len) {
        return Ok(TrailerCheck::Absent);
    }
    let computed = sha256_prefix(&mut f, len - TRAILER_BYTES).map_err(io)?;
    let mut stored = [0u8; 32];
    f.read_exact(&mut stored).map_err(io)?;
    Ok(if stored == computed {
        TrailerCheck::Valid
    } else {
        TrailerCheck::Mismatch { stored, computed }
    })
}

/// Appends the SHA-256 of the whole file to it, making a database file a
/// snapshot etcdctl accepts. Returns the digest.
pub fn append_trailer(path: impl AsRef<Path>) -> Result<[u8; 32], BoltError> {
    let path = path.as_ref();
    let io = |source| BoltError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let digest = sha256_prefix(&mut f, len).map_err(io)?;
    f.write_all(&digest)
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    Ok(digest)
}

/// SHA-256 of the first `len` bytes of `r`.
pub fn sha256_prefix(r: &mut impl Read, len: u64) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; HASH_READ_BYTES];
    let mut left = len;
    while left > 0 {
        let n = (left.min(HASH_READ_BYTES as u64)) as usize;
        r.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finalize().into())
}
