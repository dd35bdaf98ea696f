//! etcd's raft snapshot files (`member/snap/<term:016x>-<index:016x>.snap`).
//!
//! A file is a `snappb.Snapshot{crc, data}` where `data` is an encoded
//! `raftpb.Snapshot` and `crc` its CRC-32C. In etcd 3.4 the raft snapshot's
//! own data is the v2 store as JSON (membership under `/0`); the v3 keys are
//! in the bbolt database next to it.

use crate::checksum::crc32c;
use crate::pb::raftpb::{ConfState, Snapshot};
use crate::pb::snappb;
use crate::pb::walpb::Snapshot as WalSnapshot;
use crate::wal::WalError;
use bytes::Bytes;
use prost::Message as _;
use std::path::{Path, PathBuf};

/// Largest `.snap` file read (it holds the v2 store, which etcd keeps in
/// memory too).
pub const MAX_SNAP_FILE_BYTES: u64 = 1 << 30;

/// Parses `<term:016x>-<index:016x>.snap`.
pub fn parse_snap_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// The `*.snap` files in `dir`, newest (greatest name) first. A missing
/// directory has none.
pub fn list_snap_files(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let io = |source| WalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(io)?;
        if let Some(n) = e.file_name().to_str()
            && n.ends_with(".snap")
        {
            names.push(n.to_string());
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Reads and verifies one `.snap` file.
pub fn read_snap_file(path: &Path) -> Result<Snapshot, WalError> {
    let io = |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len_bytes = std::fs::metadata(path).map_err(io)?.len();
    if len_bytes > MAX_SNAP_FILE_BYTES {
        return Err(WalError::SnapTooLarge {
            path: path.to_path_buf(),
            len_bytes,
            limit_bytes: MAX_SNAP_FILE_BYTES,
        });
    }
    let bytes = Bytes::from(std::fs::read(path).map_err(io)?);
    let empty = || WalError::SnapEmpty {
        path: path.to_path_buf(),
    };
    if bytes.is_empty() {
        return Err(empty());
    }
    let decode_err = |source| WalError::SnapDecode {
        path: path.to_path_buf(),
        source,
    };
    let outer = snappb::Snapshot::decode(bytes).map_err(decode_err)?;
    if outer.data.is_empty() || outer.crc == 0 {
        return Err(empty());
    }
    let computed = crc32c(&outer.data);
    if computed != outer.crc {
        return Err(WalError::SnapCrc {
            path: path.to_path_buf(),
            stored: outer.crc,
            computed,
        });
    }
    Snapshot::decode(outer.data).map_err(decode_err)
}

/// A `.snap` file that did not read, and why.
pub type BrokenSnapshot = (PathBuf, WalError);

/// A `.snap` file etcd would boot from.
#[derive(Debug, Clone)]
pub struct LoadedSnapshot {
    pub path: PathBuf,
    pub snapshot: Snapshot,
}

impl LoadedSnapshot {
    pub fn index(&self) -> u64 {
        self.snapshot.metadata.as_ref().map_or(0, |m| m.index)
    }

    pub fn term(&self) -> u64 {
        self.snapshot.metadata.as_ref().map_or(0, |m| m.term)
    }

    pub fn conf_state(&self) -> ConfState {
        self.snapshot
            .metadata
            .as_ref()
            .and_then(|m| m.conf_state.clone())
            .unwrap_or_default()
    }

    /// The v2 store JSON (etcd 3.4).
    pub fn data(&self) -> &Bytes {
        &self.snapshot.data
    }

    /// The v2 store, parsed (membership at the snapshot's index).
    pub fn v2_store(&self) -> Result<crate::v2store::V2Store, crate::v2store::V2Error> {
        crate::v2store::parse(&self.snapshot.data)
    }
}

/// etcd's `LoadNewestAvailable`: the newest `.snap` file that reads cleanly
/// and whose (index, term) is one of `valid` (the WAL's snapshot records up
/// to the commit index). Files that fail to read are returned with their
/// error (etcd renames them `*.broken`; this reader changes nothing).
pub fn load_newest_available(
    dir: &Path,
    valid: &[WalSnapshot],
) -> Result<(Option<LoadedSnapshot>, Vec<BrokenSnapshot>), WalError> {
    let mut broken = Vec::new();
    for path in list_snap_files(dir)? {
        match read_snap_file(&path) {
            Ok(snapshot) => {
                let loaded = LoadedSnapshot { path, snapshot };
                let (index, term) = (loaded.index(), loaded.term());
                if valid.iter().any(|s| s.index == index && s.term == term) {
                    return Ok((Some(loaded), broken));
                }
            }
            Err(e) => broken.push((path, e)),
        }
    }
    Ok((None, broken))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::raftpb::SnapshotMetadata;

    fn write_snap(dir: &Path, snap: &Snapshot) -> PathBuf {
        let m = snap.metadata.as_ref().unwrap();
        let data = snap.encode_to_vec();
        let outer = snappb::Snapshot {
            crc: crc32c(&data),
            data: data.into(),
        };
        let p = dir.join(format!("{:016x}-{:016x}.snap", m.term, m.index));
        std::fs::write(&p, outer.encode_to_vec()).unwrap();
        p
    }

    fn snap(index: u64, term: u64) -> Snapshot {
        Snapshot {
            data: Bytes::from_static(b"{}"),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(ConfState {
                    voters: vec![1, 2],
                    ..Default::default()
                }),
                index,
                term,
            }),
        }
    }

    #[test]
    fn newest_matching_snapshot_wins_and_broken_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_snap(dir.path(), &snap(10, 2));
        write_snap(dir.path(), &snap(20, 2));
        let p30 = write_snap(dir.path(), &snap(30, 3));
        // Not in the WAL's list (written after the last commit): skipped.
        let valid = [
            WalSnapshot { index: 10, term: 2 },
            WalSnapshot { index: 20, term: 2 },
        ];
        let (got, broken) = load_newest_available(dir.path(), &valid).unwrap();
        assert_eq!(got.unwrap().index(), 20);
        assert!(broken.is_empty());
        // Corrupt the 20 one: the 10 one is used, the 20 one reported.
        let p20 = dir.path().join(format!("{:016x}-{:016x}.snap", 2, 20));
        let mut b = std::fs::read(&p20).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        std::fs::write(&p20, b).unwrap();
        let (got, broken) = load_newest_available(dir.path(), &valid).unwrap();
        assert_eq!(got.unwrap().index(), 10);
        assert_eq!(broken.len(), 1);
        assert!(
            matches!(broken[0].1, WalError::SnapCrc { .. }),
            "{:?}",
            broken[0].1
        );
        std::fs::write(&p30, b"").unwrap();
        assert!(matches!(
            read_snap_file(&p30),
            Err(WalError::SnapEmpty { .. })
        ));
    }
}
