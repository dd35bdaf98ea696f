//! A check of fjall's journal that fjall's own recovery does not make: the
//! batches' sequence numbers, in write order.
//!
//! fjall checksums the items of each batch, but not the sequence number in
//! the batch's start marker. A flipped bit there passes recovery and gives
//! the batch's writes a place in the version order they never had: a batch
//! numbered above the ones written after it shadows their values of the
//! same keys (the applied index, raft's hard state) while their other
//! writes stay, and one numbered below those before it is shadowed by them.
//! The member would come back in a state it never passed through, and say
//! nothing. fjall numbers each batch while it holds the journal's lock, so
//! in a sound journal the numbers strictly increase in file order; this
//! reads them before fjall opens the database and refuses a journal where
//! they do not.
//!
//! The layout read here is fjall 3's journal format, a fact about the
//! dependency that a test pins by writing through fjall and reading it
//! back. The scan stops at the first bytes it cannot parse as a whole
//! batch: that is the tail fjall's recovery cuts off, fjall's decision.

use super::{Error, Result};
use std::io::{BufReader, ErrorKind, Read, Seek};
use std::path::{Path, PathBuf};

/// What a scan saw: the whole batches and the last one's number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scanned {
    pub batches: u64,
    pub last_seqno: Option<u64>,
}

// fjall 3's entry tags and its end-of-batch trailer.
const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;
const TRAILER: [u8; 4] = [b'F', b'J', b'L', 3];

/// Read buffer of the scan: journals can hold hundreds of MiB.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Checks every journal file of the database in `dir` (fjall keeps them
/// there as `<id>.jnl`), oldest first.
pub fn check(dir: &Path) -> Result<Scanned> {
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Scanned::default()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            files.push((id, path));
        }
    }
    files.sort_by_key(|(id, _)| *id);
    let mut scanned = Scanned::default();
    for (_, path) in files {
        scan_file(&path, &mut scanned)?;
    }
    Ok(scanned)
}

fn scan_file(path: &Path, scanned: &mut Scanned) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    loop {
        let at = r.stream_position().map_err(|e| Error::io(path, e))?;
        match read_batch(&mut r) {
            Ok(Some(seqno)) => {
                if let Some(before) = scanned.last_seqno
                    && seqno <= before
                {
                    return Err(Error::corrupt(
                        "journal",
                        format!(
                            "{}: the batch at byte {at} is numbered {seqno}, not after the \
                             batch before it ({before}): the journal is damaged where fjall's \
                             checksums do not look. This member's data cannot be trusted; \
                             remove it from the cluster and add it back with an empty data dir",
                            path.display()
                        ),
                    ));
                }
                scanned.last_seqno = Some(seqno);
                scanned.batches += 1;
            }
            // The end of the data, or bytes that are not a whole batch:
            // fjall's recovery cuts the file there.
            Ok(None) => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

/// One whole batch (start, its items, end with the trailer): its number.
/// `None` where the bytes are not one.
fn read_batch(r: &mut BufReader<std::fs::File>) -> std::io::Result<Option<u64>> {
    macro_rules! or_none {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
        };
    }
    if or_none!(u8_at(r)) != TAG_START {
        return Ok(None);
    }
    let items = or_none!(u32_at(r));
    let seqno = or_none!(u64_at(r));
    for _ in 0..items {
        match or_none!(u8_at(r)) {
            TAG_ITEM => {
                // value type, compression, keyspace id
                or_none!(skip(r, 1 + 1 + 8));
                let key_len = or_none!(u16_at(r));
                let _value_len = or_none!(u32_at(r));
                let stored_len = or_none!(u32_at(r));
                or_none!(skip(r, u64::from(key_len) + u64::from(stored_len)));
            }
            TAG_CLEAR => or_none!(skip(r, 8)),
            _ => return Ok(None),
        }
    }
    if or_none!(u8_at(r)) != TAG_END {
        return Ok(None);
    }
    or_none!(skip(r, 8));
    let mut trailer = [0u8; 4];
    or_none!(r.read_exact(&mut trailer));
    Ok((trailer == TRAILER).then_some(seqno))
}

fn u8_at(r: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn u16_at(r: &mut impl Read) -> std::io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn u32_at(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_at(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Skips `n` bytes without reading them (most are values). A skip past the
/// end of the file is noticed by the next read, which every batch has (its
/// end marker).
fn skip(r: &mut BufReader<std::fs::File>, n: u64) -> std::io::Result<()> {
    let n = i64::try_from(n).map_err(|_| std::io::Error::from(ErrorKind::UnexpectedEof))?;
    r.seek_relative(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Db;

    fn journal(dir: &Path) -> PathBuf {
        dir.join("db").join("0.jnl")
    }

    /// Writes `n` batches through fjall (each with a kv and a meta item).
    fn write_batches(dir: &Path, n: u64) {
        let db = Db::open(dir).unwrap();
        for i in 0..n {
            let mut b = db.db.batch();
            b.insert(&db.kv, i.to_be_bytes(), vec![7u8; 100 + i as usize]);
            b.insert(&db.meta, b"applied", i.to_be_bytes());
            b.commit().unwrap();
        }
        db.sync().unwrap();
    }

    /// Byte offsets of the batches' start markers, found by the scan's own
    /// reader (a batch's number sits 5 bytes past its start).
    fn batch_starts(path: &Path) -> Vec<u64> {
        let mut r = BufReader::new(std::fs::File::open(path).unwrap());
        let mut starts = Vec::new();
        loop {
            let at = r.stream_position().unwrap();
            match read_batch(&mut r).unwrap() {
                Some(_) => starts.push(at),
                None => return starts,
            }
        }
    }

    /// The scan reads what fjall writes: every batch, numbers increasing.
    /// A change of fjall's journal format fails here, not silently.
    #[test]
    fn reads_every_batch_fjall_wrote() {
        let dir = tempfile::tempdir().unwrap();
        write_batches(dir.path(), 50);
        let s = check(&dir.path().join("db")).unwrap();
        // Opening the database writes batches of its own too.
        assert!(s.batches >= 50, "{s:?}");
        assert_eq!(batch_starts(&journal(dir.path())).len() as u64, s.batches);
        // And the database opens as usual.
        drop(Db::open(dir.path()).unwrap());
    }

    /// A flipped bit in a batch's number, which fjall's recovery accepts,
    /// is refused; the same flip in the last batch's number upward is
    /// harmless (nothing later to shadow) and passes.
    #[test]
    fn a_batch_numbered_out_of_order_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_batches(dir.path(), 20);
        let path = journal(dir.path());
        let original = std::fs::read(&path).unwrap();
        let starts = batch_starts(&path);
        let middle = starts[starts.len() / 2] as usize + 5;

        let mut up = original.clone();
        up[middle] ^= 1 << 3; // +8 (or -8): out of order either way
        std::fs::write(&path, &up).unwrap();
        let err = check(&dir.path().join("db")).unwrap_err().to_string();
        assert!(err.contains("not after the batch before it"), "{err}");

        let mut high = original.clone();
        high[middle + 7] ^= 1 << 6; // far above everything after it
        std::fs::write(&path, &high).unwrap();
        assert!(check(&dir.path().join("db")).is_err());

        let mut last = original.clone();
        last[*starts.last().unwrap() as usize + 5 + 7] ^= 1 << 6;
        std::fs::write(&path, &last).unwrap();
        assert!(check(&dir.path().join("db")).is_ok());

        // A torn tail is fjall's to cut: the scan stops there.
        let mut torn = original.clone();
        let cut = starts[starts.len() - 3] as usize + 9;
        torn[cut..].fill(0);
        std::fs::write(&path, &torn).unwrap();
        let s = check(&dir.path().join("db")).unwrap();
        assert_eq!(s.batches, starts.len() as u64 - 3);
    }

    /// What the refusal prevents: fjall opens the damaged journal and the
    /// older batch's value wins over the newer ones.
    #[test]
    fn fjall_alone_lets_an_older_batch_shadow_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        write_batches(dir.path(), 20);
        let path = journal(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let starts = batch_starts(&path);
        // The batch that wrote applied = 10, numbered far ahead.
        let tenth = starts[starts.len() - 10] as usize + 5;
        bytes[tenth + 6] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Db::open(dir.path()).is_err());
        let db = fjall::Database::builder(dir.path().join("db"))
            .open()
            .unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let kv = db
            .keyspace("kv", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let applied = meta.get(b"applied").unwrap().unwrap();
        assert_eq!(&*applied, &10u64.to_be_bytes());
        assert!(kv.get(19u64.to_be_bytes()).unwrap().is_some());
    }
}
