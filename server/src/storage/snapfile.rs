//! Raft snapshots as files: the state machine (the `kv` and `meta` keyspaces)
//! at one applied index, written from a consistent fjall snapshot.
//!
//! File layout (all integers big endian):
//! `MAGIC`, index u64, term u64, conf-state length u32 + bytes, then records
//! `tag u8 (1 = kv, 2 = meta) ‖ key length u32 ‖ key ‖ value length u32 ‖ value`,
//! then tag 0, then the SHA-256 of every preceding byte.
//!
//! Files live in `<data-dir>/member/snap/` named `<term>-<index>.snap` (hex).
//! The leader streams one to a follower that fell behind its log; the
//! follower verifies the checksum before raft ever sees the snapshot.
//!
//! The *portable* form is what `Maintenance.Snapshot` streams to clients and
//! `etcdctl snapshot save` stores: the same body, zero-padded to a multiple
//! of 512 bytes, then the SHA-256 of everything before it. etcdctl accepts a
//! download only if its size is 32 more than a multiple of 512 and treats the
//! last 32 bytes as that digest (its bbolt files are page-aligned). Readers
//! here accept both forms: the body is self-delimiting.

use super::{Db, Error, Result};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::prelude::{ConfState, Snapshot};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const MAGIC: &[u8; 10] = b"CAIRNSNAP\x01";
const TAG_END: u8 = 0;
/// Largest key or value a record may hold; anything bigger is corruption.
const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;
/// The longest key fjall stores (it asserts on longer ones, and on empty).
const MAX_KEY_BYTES: usize = u16::MAX as usize;
/// Records loaded per write batch when installing a snapshot.
const LOAD_BATCH_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    pub path: PathBuf,
    pub size_bytes: u64,
}

impl SnapshotInfo {
    pub fn to_raft_snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        let md = s.mut_metadata();
        md.index = self.index;
        md.term = self.term;
        md.set_conf_state(self.conf_state.clone());
        // The data travels as a file on the snapshot stream, not inside the
        // raft message; the message only names the format.
        s.data = bytes::Bytes::from_static(b"cairn-snapfile-v1");
        s
    }

    /// Whether raft can send this snapshot where it needs one of at least
    /// `index` for member `to` (0: any member). A snapshot taken before `to`
    /// joined does not list it in its configuration, and raft on `to`
    /// would ignore it forever: only a newer one will do.
    pub fn serves(&self, index: u64, to: u64) -> bool {
        let cs = &self.conf_state;
        self.index >= index
            && self.index > 0
            && (to == 0
                || cs.voters.contains(&to)
                || cs.learners.contains(&to)
                || cs.voters_outgoing.contains(&to)
                || cs.learners_next.contains(&to))
    }
}

/// What raft asked a snapshot for: at least `index`, for member `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    index: u64,
    to: u64,
}

/// Distinct members with an outstanding snapshot request; past it, the
/// requests merge into one for any member.
const MAX_WANTS: usize = 64;

pub fn file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// Shared between the raft thread (which asks for snapshots), the apply loop
/// (which builds them) and the transport (which sends them).
pub struct SnapshotRegistry {
    dir: PathBuf,
    latest: Mutex<Option<SnapshotInfo>>,
    /// Requests not yet served. Raft repeats its request on every attempt
    /// to reach a follower, also while a snapshot is being written; one
    /// that the file being written will serve must not start another
    /// (which, at a million keys, doubled a new member's wait).
    wanted: Mutex<Vec<Want>>,
    generating: AtomicBool,
    /// Snapshot files kept after a new one is written (`--max-snapshots`,
    /// live: a reload stores the new value); 0 keeps all, as in etcd.
    max_files: AtomicUsize,
}

impl SnapshotRegistry {
    /// `max_files`: see [`SnapshotRegistry::set_max_files`].
    pub fn new(dir: PathBuf, max_files: usize) -> Result<SnapshotRegistry> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Leftovers of interrupted transfers are useless.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for ent in rd.flatten() {
                if ent.path().extension().is_some_and(|x| x == "tmp") {
                    let _ = std::fs::remove_file(ent.path());
                }
            }
        }
        Ok(SnapshotRegistry {
            dir,
            latest: Mutex::new(None),
            wanted: Mutex::new(Vec::new()),
            generating: AtomicBool::new(false),
            max_files: AtomicUsize::new(max_files),
        })
    }

    /// How many snapshot files to keep from the next one written on (0
    /// keeps all). Files already over a lowered limit go with the next
    /// snapshot, not at once: nothing is deleted outside a generation.
    pub fn set_max_files(&self, max_files: usize) {
        self.max_files.store(max_files, Ordering::Relaxed);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn latest(&self) -> Option<SnapshotInfo> {
        self.latest.lock().clone()
    }

    /// The newest snapshot if it [serves](SnapshotInfo::serves) `index`
    /// and `to`.
    pub fn latest_serving(&self, index: u64, to: u64) -> Option<SnapshotInfo> {
        self.latest
            .lock()
            .as_ref()
            .filter(|s| s.serves(index, to))
            .cloned()
    }

    /// Asks for a snapshot of at least `index` that member `to` (0: any)
    /// can use.
    pub fn request_generation(&self, index: u64, to: u64) {
        let mut wanted = self.wanted.lock();
        if let Some(w) = wanted.iter_mut().find(|w| w.to == to) {
            w.index = w.index.max(index);
        } else if wanted.len() < MAX_WANTS {
            wanted.push(Want { index, to });
        } else {
            // Any newer snapshot lists every current member.
            let index = wanted.iter().map(|w| w.index).max().unwrap_or(0).max(index);
            *wanted = vec![Want { index, to: 0 }];
        }
    }

    /// Claims the pending requests if the newest snapshot does not already
    /// serve them all; at most one generation runs at a time.
    pub fn take_request(&self) -> bool {
        let mut wanted = self.wanted.lock();
        if let Some(latest) = self.latest.lock().as_ref() {
            // Asked while `latest` was being written: raft finds it on its
            // next attempt.
            wanted.retain(|w| !latest.serves(w.index, w.to));
        }
        if wanted.is_empty() || self.generating.swap(true, Ordering::AcqRel) {
            return false;
        }
        wanted.clear();
        true
    }

    /// Whether a snapshot file is being written now.
    pub fn is_generating(&self) -> bool {
        self.generating.load(Ordering::Acquire)
    }

    pub fn finish_generation(&self, result: Option<SnapshotInfo>) {
        if let Some(info) = result {
            *self.latest.lock() = Some(info);
            self.prune();
        }
        self.generating.store(false, Ordering::Release);
    }

    /// Keeps only the newest `max_files` snapshot files (all when 0).
    fn prune(&self) {
        let max_files = self.max_files.load(Ordering::Relaxed);
        if max_files == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .collect();
        // Names sort by (term, index) because both are fixed-width hex.
        files.sort();
        let keep_from = files.len().saturating_sub(max_files);
        for p in &files[..keep_from] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Registers a snapshot received from the leader (already verified).
    pub fn adopt_received(&self, info: SnapshotInfo) {
        let mut latest = self.latest.lock();
        if latest.as_ref().is_none_or(|l| l.index < info.index) {
            *latest = Some(info);
        }
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the body — header, records, end tag, SHA-256 of all of it — of
/// the state machine as seen by `view` to `out`. Returns `out` and the
/// number of bytes written. `path` only names the file in errors.
fn write_body<W: Write>(
    db: &Db,
    view: &fjall::Snapshot,
    out: W,
    path: &Path,
    index: u64,
    term: u64,
    conf_state: &ConfState,
) -> Result<(W, u64)> {
    use fjall::Readable;
    let io = |e| Error::io(path, e);
    let mut w = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        written: 0,
    };
    let cs = conf_state
        .write_to_bytes()
        .map_err(|e| Error::corrupt("conf state", e))?;
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&index.to_be_bytes()).map_err(io)?;
    w.write_all(&term.to_be_bytes()).map_err(io)?;
    w.write_all(&(cs.len() as u32).to_be_bytes()).map_err(io)?;
    w.write_all(&cs).map_err(io)?;
    for (tag, ks) in [(1u8, &db.kv), (2u8, &db.meta)] {
        for guard in view.iter(ks) {
            let (k, v) = guard.into_inner()?;
            w.write_all(&[tag]).map_err(io)?;
            w.write_all(&(k.len() as u32).to_be_bytes()).map_err(io)?;
            w.write_all(&k).map_err(io)?;
            w.write_all(&(v.len() as u32).to_be_bytes()).map_err(io)?;
            w.write_all(&v).map_err(io)?;
        }
    }
    w.write_all(&[TAG_END]).map_err(io)?;
    let digest = w.hasher.finalize_reset();
    let written = w.written;
    let mut inner = w.inner;
    inner.write_all(&digest).map_err(io)?;
    Ok((inner, written + 32))
}

/// Writes the state machine as seen by `view` to `dir/<term>-<index>.snap`.
pub fn write(
    db: &Db,
    view: &fjall::Snapshot,
    dir: &Path,
    index: u64,
    term: u64,
    conf_state: &ConfState,
) -> Result<SnapshotInfo> {
    let final_path = dir.join(file_name(term, index));
    let tmp_path = dir.join(format!("{}.tmp", file_name(term, index)));
    let io = |e| Error::io(&tmp_path, e);
    let file = File::create(&tmp_path).map_err(io)?;
    let (inner, size_bytes) = write_body(
        db,
        view,
        BufWriter::with_capacity(1 << 20, file),
        &tmp_path,
        index,
        term,
        conf_state,
    )?;
    // No fsync: a file written here only serves this process, from the
    // page cache (the registry starts empty at every start, and only a
    // file *received* from a leader, which the receiver syncs, is ever
    // read after a restart). Syncing hundreds of megabytes only delayed
    // the member waiting for the file.
    drop(inner.into_inner().map_err(|e| io(e.into_error()))?);
    std::fs::rename(&tmp_path, &final_path).map_err(|e| Error::io(&final_path, e))?;
    Ok(SnapshotInfo {
        index,
        term,
        conf_state: conf_state.clone(),
        path: final_path,
        size_bytes,
    })
}

/// etcdctl's alignment for downloaded snapshots (see the module comment).
pub const PORTABLE_ALIGN: u64 = 512;

/// Writes the portable form of the state machine as seen by `view` to
/// `path` (created; the caller picks a name and removes it). Its header
/// carries the applied index and conf state from the same view. Returns the
/// file size.
pub fn write_portable(db: &Db, view: &fjall::Snapshot, path: &Path) -> Result<u64> {
    let (applied, conf_state) = super::meta::position_in(db, view)?;
    let io = |e| Error::io(path, e);
    let file = File::create(path).map_err(io)?;
    let outer = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        written: 0,
    };
    let (mut outer, body) = write_body(
        db,
        view,
        outer,
        path,
        applied.index,
        applied.term,
        &conf_state,
    )?;
    let padding = (PORTABLE_ALIGN - body % PORTABLE_ALIGN) % PORTABLE_ALIGN;
    outer.write_all(&vec![0u8; padding as usize]).map_err(io)?;
    let digest = outer.hasher.finalize_reset();
    let mut inner = outer.inner;
    inner.write_all(&digest).map_err(io)?;
    // Flushed, not fsynced: the copy is read back at once and then deleted.
    inner.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(body + padding + 32)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

struct Reader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Reader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hasher.update(&*buf);
        Ok(())
    }
    fn u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let n = self.u32().map_err(|e| Error::corrupt(what, e))?;
        if n > MAX_RECORD_BYTES {
            return Err(Error::corrupt(what, format!("record of {n} bytes")));
        }
        // Grown as the bytes arrive rather than allocated from the length
        // field: a short, damaged file cannot make us allocate 64 MiB.
        let mut v = Vec::new();
        (&mut self.inner)
            .take(u64::from(n))
            .read_to_end(&mut v)
            .map_err(|e| Error::corrupt(what, e))?;
        if v.len() != n as usize {
            return Err(Error::corrupt(
                what,
                format!("record of {n} bytes cut short at {}", v.len()),
            ));
        }
        self.hasher.update(&v);
        Ok(v)
    }
}

/// Snapshot header fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    /// Whether the file is in the portable form (padding and outer digest).
    pub portable: bool,
}

/// A reader that hashes everything read through it (the portable form's
/// outer digest).
struct OuterHash<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for OuterHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a snapshot file in either form, checking structure and the body's
/// checksum (and, for the portable form, the outer digest unless
/// `skip_outer_hash`); calls `record` for each record. Returns the header.
fn scan(
    path: &Path,
    skip_outer_hash: bool,
    mut record: impl FnMut(u8, Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<Header> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = Reader {
        inner: OuterHash {
            inner: BufReader::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
        },
        hasher: Sha256::new(),
    };
    let bad = |e: std::io::Error| Error::corrupt("snapshot file", e);
    let mut magic = [0u8; 10];
    r.exact(&mut magic).map_err(bad)?;
    if &magic != MAGIC {
        return Err(Error::corrupt("snapshot file", "not a cairn snapshot"));
    }
    let index = r.u64().map_err(bad)?;
    let term = r.u64().map_err(bad)?;
    let cs_bytes = r.bytes("snapshot conf state")?;
    // Checked before rust-protobuf sees it: the checksum that would catch
    // damage is only read at the end of the file.
    crate::raftwire::check_conf_state(&cs_bytes)
        .map_err(|e| Error::corrupt("snapshot conf state", e))?;
    let mut conf_state = ConfState::default();
    conf_state
        .merge_from_bytes(&cs_bytes)
        .map_err(|e| Error::corrupt("snapshot conf state", e))?;
    loop {
        let mut tag = [0u8; 1];
        r.exact(&mut tag).map_err(bad)?;
        if tag[0] == TAG_END {
            break;
        }
        if tag[0] != 1 && tag[0] != 2 {
            return Err(Error::corrupt(
                "snapshot file",
                format!("record tag {}", tag[0]),
            ));
        }
        let k = r.bytes("snapshot key")?;
        // fjall asserts on an empty key or one over 64 KiB: a damaged file
        // must be refused here, not panic the restore or the apply thread.
        if k.is_empty() || k.len() > MAX_KEY_BYTES {
            return Err(Error::corrupt(
                "snapshot key",
                format!("a key of {} bytes (1 to {MAX_KEY_BYTES})", k.len()),
            ));
        }
        let v = r.bytes("snapshot value")?;
        record(tag[0], k, v)?;
    }
    let computed = r.hasher.finalize();
    let mut stored = [0u8; 32];
    r.inner.read_exact(&mut stored).map_err(bad)?;
    if computed.as_slice() != stored {
        return Err(Error::corrupt("snapshot file", "checksum mismatch"));
    }
    // Nothing more (the raft form), or the portable form's padding and
    // outer digest: fewer than 512 zeros, then 32 bytes.
    let before_trailer = r.inner.hasher.clone();
    let mut trailer = Vec::new();
    (&mut r.inner.inner)
        .take(PORTABLE_ALIGN + 32)
        .read_to_end(&mut trailer)
        .map_err(bad)?;
    if !trailer.is_empty() {
        let body_len = trailer
            .len()
            .checked_sub(32)
            .filter(|&pad| (pad as u64) < PORTABLE_ALIGN && trailer[..pad].iter().all(|&b| b == 0));
        let Some(pad) = body_len else {
            return Err(Error::corrupt("snapshot file", "trailing bytes"));
        };
        if !skip_outer_hash {
            let mut outer = before_trailer;
            outer.update(&trailer[..pad]);
            if outer.finalize().as_slice() != &trailer[pad..] {
                return Err(Error::corrupt("snapshot file", "sha256 mismatch"));
            }
        }
    }
    Ok(Header {
        index,
        term,
        conf_state,
        portable: !trailer.is_empty(),
    })
}

/// Checks a snapshot file end to end without loading it.
pub fn verify(path: &Path) -> Result<Header> {
    scan(path, false, |_, _, _| Ok(()))
}

/// Bytes of the header's fixed part: magic, index, term.
const FIXED_HEADER_BYTES: usize = MAGIC.len() + 8 + 8;
/// Bytes of the SHA-256 that ends the raft form.
const DIGEST_BYTES: usize = 32;

/// Checks a raft-form snapshot as its bytes arrive from the leader, so the
/// receiving member needs no second read of the file before raft sees it:
/// the SHA-256 of everything but the last 32 bytes against those 32 bytes,
/// and the header's index and term. The records' structure is checked
/// where they are read, by [`load`], before it changes anything.
pub struct Arriving {
    hasher: Sha256,
    /// The last (at most 32) bytes so far: the digest once the stream ends.
    tail: Vec<u8>,
    /// The first bytes, until the fixed part of the header is complete.
    head: Vec<u8>,
}

impl Default for Arriving {
    fn default() -> Self {
        Arriving {
            hasher: Sha256::new(),
            tail: Vec::with_capacity(2 * DIGEST_BYTES),
            head: Vec::with_capacity(FIXED_HEADER_BYTES),
        }
    }
}

impl Arriving {
    /// The next bytes of the stream, in order.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.head.len() < FIXED_HEADER_BYTES {
            let take = (FIXED_HEADER_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        // Everything but the last 32 bytes of the stream so far is hashed;
        // those stay in `tail` until more arrive behind them.
        if chunk.len() >= DIGEST_BYTES {
            let (body, last) = chunk.split_at(chunk.len() - DIGEST_BYTES);
            self.hasher.update(&self.tail);
            self.hasher.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(last);
        } else {
            self.tail.extend_from_slice(chunk);
            let extra = self.tail.len().saturating_sub(DIGEST_BYTES);
            self.hasher.update(&self.tail[..extra]);
            self.tail.drain(..extra);
        }
    }

    /// The stream ended: its digest must match and its header must name
    /// `index` and `term` (the raft message it came with).
    pub fn finish(self, index: u64, term: u64) -> Result<()> {
        let bad = |why: String| Error::corrupt("snapshot file", why);
        if self.head.len() < FIXED_HEADER_BYTES || self.tail.len() < DIGEST_BYTES {
            return Err(bad("shorter than a snapshot header".into()));
        }
        if self.hasher.finalize().as_slice() != self.tail {
            return Err(bad("checksum mismatch".into()));
        }
        let (magic, rest) = self.head.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(bad("not a cairn snapshot".into()));
        }
        let (i, t) = rest.split_at(8);
        let (got_index, got_term) = (
            u64::from_be_bytes(i.try_into().unwrap_or_default()),
            u64::from_be_bytes(t.try_into().unwrap_or_default()),
        );
        if (got_index, got_term) != (index, term) {
            return Err(bad(format!(
                "the file holds index {got_index} term {got_term}; its message \
                 named index {index} term {term}"
            )));
        }
        Ok(())
    }
}

/// Reads every record of a snapshot file in either form (see `scan`): tag
/// 1 for the `kv` keyspace, 2 for `meta`.
pub fn read_records(
    path: &Path,
    skip_outer_hash: bool,
    record: impl FnMut(u8, Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<Header> {
    scan(path, skip_outer_hash, record)
}

/// Record tags (see the module comment).
pub const TAG_KV: u8 = 1;
pub const TAG_META: u8 = 2;

/// Replaces the state machine with the snapshot's contents, durably. The
/// caller has verified the file and made sure nothing else writes the state
/// machine meanwhile. Crash safety: the raft log is only truncated after this
/// returns, and an interrupted install is redone at startup (see
/// `raftlog::RaftLog` and `server::node`), so the file must stay on disk
/// until then.
///
/// The `kv` records, most of the file, are ingested: fjall writes them as
/// tables directly, past the journal and the memtables, about three times
/// faster than write batches at a million keys. That rules out
/// `Keyspace::clear` for `kv`: fjall replays a journaled clear at every
/// start by dropping all of the keyspace's tables, ingested ones included,
/// for as long as that journal lives. So what `kv` held goes with
/// tombstones instead (journaled; older than the ingested tables, which
/// win), which costs nothing on a new member and little next to the
/// transfer on a lagging one.
///
/// Nothing the member holds changes until the whole file has been read and
/// checked (structure and checksum): the ingested tables stay invisible
/// until `finish`, and the tombstones are written just before it. fjall
/// gives the ingested tables a sequence number at `finish`, after flushing
/// the memtable that holds the tombstones, so the tables are newer.
///
/// `on_kv` sees every `kv` record (key, value) before it is ingested: the
/// caller builds its in-memory index from them instead of reading the
/// keyspace back.
pub fn load(
    db: &Db,
    path: &Path,
    mut on_kv: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<Header> {
    let mut ingestion = db.kv.start_ingestion()?;
    let mut last_key: Option<Vec<u8>> = None;
    let mut meta_records = Vec::new();
    let header = scan(path, false, |tag, k, v| {
        if tag == 2 {
            // Metadata (including the applied index) goes in last, so a
            // half-loaded state machine never claims to be complete.
            meta_records.push((k, v));
            return Ok(());
        }
        // fjall asserts that ingested keys ascend: a file that breaks the
        // order is corrupt, and must not panic the apply thread.
        if last_key.as_ref().is_some_and(|last| k <= *last) {
            return Err(Error::corrupt(
                "snapshot file",
                "state machine records out of key order",
            ));
        }
        on_kv(&k, &v)?;
        ingestion.write(k.clone(), v)?;
        last_key = Some(k);
        Ok(())
    })?;
    remove_all(db, &db.kv)?;
    db.meta.clear()?;
    ingestion.finish()?;
    let mut batch = db.db.batch();
    for (k, v) in meta_records {
        batch.insert(&db.meta, k, v);
    }
    batch
        .durability(Some(fjall::PersistMode::SyncData))
        .commit()?;
    // Alarms are replicated state: the snapshot's replace this member's.
    db.alarms.reload(db)?;
    Ok(header)
}

/// Deletes every key of `keyspace` with journaled tombstones, in bounded
/// batches (see [`load`] for why not `clear`).
fn remove_all(db: &Db, keyspace: &fjall::Keyspace) -> Result<()> {
    let mut batch = db.db.batch();
    let mut batch_bytes = 0usize;
    for guard in keyspace.iter() {
        let key = guard.key()?;
        batch_bytes += key.len();
        batch.remove(keyspace, key);
        if batch_bytes >= LOAD_BATCH_BYTES {
            let full = std::mem::replace(&mut batch, db.db.batch());
            full.durability(Some(fjall::PersistMode::Buffer)).commit()?;
            batch_bytes = 0;
        }
    }
    batch
        .durability(Some(fjall::PersistMode::Buffer))
        .commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fakes one generated snapshot file at `index` and registers it.
    fn generate(reg: &SnapshotRegistry, index: u64) {
        let path = reg.dir().join(file_name(1, index));
        std::fs::write(&path, b"x").unwrap();
        reg.request_generation(index, 0);
        assert!(reg.take_request());
        reg.finish_generation(Some(SnapshotInfo {
            index,
            term: 1,
            conf_state: ConfState::default(),
            path,
            size_bytes: 1,
        }));
    }

    #[test]
    fn a_request_repeated_while_writing_is_served_by_that_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SnapshotRegistry::new(dir.path().to_path_buf(), 0).unwrap();
        reg.request_generation(5, 7);
        assert!(reg.take_request(), "a first request starts a snapshot");
        // Raft retries on every attempt to reach member 7 meanwhile.
        reg.request_generation(5, 7);
        assert!(!reg.take_request(), "one generation at a time");
        let conf_state = ConfState {
            voters: vec![1, 7],
            ..Default::default()
        };
        reg.finish_generation(Some(SnapshotInfo {
            index: 10,
            term: 1,
            conf_state,
            path: dir.path().join(file_name(1, 10)),
            size_bytes: 1,
        }));
        assert!(
            !reg.take_request(),
            "the snapshot just written serves the retries"
        );
        assert!(reg.latest_serving(5, 7).is_some());
        // A member it does not list, or a later index, needs a new one.
        reg.request_generation(5, 9);
        assert!(reg.latest_serving(5, 9).is_none());
        assert!(reg.take_request());
        reg.finish_generation(None);
        reg.request_generation(11, 7);
        assert!(reg.take_request());
    }

    /// A snapshot file made by hand in `dir`: at `index` (term 2), an empty
    /// conf state, `records` as (tag, key, value), the end tag and the
    /// body's SHA-256, so only what the records break is wrong with it.
    fn crafted(dir: &Path, index: u64, records: &[(u8, &[u8], &[u8])]) -> PathBuf {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&index.to_be_bytes());
        f.extend_from_slice(&2u64.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        for (tag, key, value) in records {
            f.push(*tag);
            f.extend_from_slice(&(key.len() as u32).to_be_bytes());
            f.extend_from_slice(key);
            f.extend_from_slice(&(value.len() as u32).to_be_bytes());
            f.extend_from_slice(value);
        }
        f.push(TAG_END);
        let digest = Sha256::digest(&f);
        f.extend_from_slice(&digest);
        let path = dir.join(format!("crafted-{index}.snap"));
        std::fs::write(&path, &f).unwrap();
        path
    }

    fn snap_files(reg: &SnapshotRegistry) -> usize {
        std::fs::read_dir(reg.dir())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
            .count()
    }

    #[test]
    fn a_record_longer_than_the_file_is_refused() {
        // Magic, index, term, then a conf state that claims 60 MiB and has
        // 3 bytes. (The fuzz target snapshot-file checks the reader holds
        // no more than it read.)
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&5u64.to_be_bytes());
        f.extend_from_slice(&2u64.to_be_bytes());
        f.extend_from_slice(&(60u32 << 20).to_be_bytes());
        f.extend_from_slice(b"abc");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.snap");
        std::fs::write(&path, &f).unwrap();
        let err = verify(&path).unwrap_err().to_string();
        assert!(
            err.contains("snapshot conf state") && err.contains("cut short at 3"),
            "{err}"
        );
    }

    #[test]
    fn a_conf_state_field_longer_than_its_record_is_refused() {
        // Field 9, length-delimited, claiming 9 MB in a 5-byte record
        // (rust-protobuf would allocate the 9 MB before finding out).
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&5u64.to_be_bytes());
        f.extend_from_slice(&2u64.to_be_bytes());
        let cs = [0x4a, 0x80, 0xa8, 0xa5, 0x04];
        f.extend_from_slice(&(cs.len() as u32).to_be_bytes());
        f.extend_from_slice(&cs);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cs.snap");
        std::fs::write(&path, &f).unwrap();
        let err = verify(&path).unwrap_err().to_string();
        assert!(
            err.contains("snapshot conf state") && err.contains("truncated field"),
            "{err}"
        );
    }

    #[test]
    fn empty_and_oversized_keys_are_refused_before_anything_is_written() {
        for key_len in [0usize, 65_536] {
            let dir = tempfile::tempdir().unwrap();
            let key = vec![b'k'; key_len];
            let path = crafted(dir.path(), 5, &[(TAG_META, &key, b"v")]);
            let err = verify(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("a key of {key_len} bytes")), "{err}");
            // A restore refuses it too, leaving nothing behind (fjall used
            // to panic on the empty key).
            let data_dir = dir.path().join("restored");
            let r = super::super::restore::restore(&super::super::restore::RestoreOptions {
                snapshot: path.clone(),
                data_dir: data_dir.clone(),
                name: "m1".into(),
                members: vec![("m1".into(), vec!["http://127.0.0.1:2380".into()])],
                token: "t".into(),
                skip_hash_check: false,
            });
            assert!(r.is_err());
            assert!(!data_dir.exists());
            assert!(!dir.path().join("restored.restoring").exists());
        }
    }

    #[test]
    fn max_files_changes_take_effect_at_the_next_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SnapshotRegistry::new(dir.path().join("snap"), 0).unwrap();
        // 0 keeps every file.
        for i in 1..=4 {
            generate(&reg, i);
        }
        assert_eq!(snap_files(&reg), 4);
        // What a reload of --max-snapshots does: the next one prunes.
        reg.set_max_files(2);
        assert_eq!(snap_files(&reg), 4);
        generate(&reg, 5);
        assert_eq!(snap_files(&reg), 2);
        assert!(reg.dir().join(file_name(1, 5)).exists());
        assert!(reg.dir().join(file_name(1, 4)).exists());
        reg.set_max_files(1);
        generate(&reg, 6);
        assert_eq!(snap_files(&reg), 1);
        assert_eq!(reg.latest().map(|s| s.index), Some(6));
    }

    #[test]
    fn write_verify_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a")).unwrap();
        let mut b = db.db.batch();
        b.insert(&db.kv, b"k1".to_vec(), b"v1".to_vec());
        b.insert(&db.kv, b"k2".to_vec(), vec![7u8; 100_000]);
        b.insert(&db.meta, b"m".to_vec(), b"x".to_vec());
        b.commit().unwrap();
        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        let snapdir = dir.path().join("snap");
        std::fs::create_dir_all(&snapdir).unwrap();
        let info = write(&db, &db.db.snapshot(), &snapdir, 42, 3, &cs).unwrap();
        let h = verify(&info.path).unwrap();
        assert_eq!((h.index, h.term), (42, 3));
        assert_eq!(h.conf_state.voters, vec![1, 2, 3]);

        let other = Db::open(&dir.path().join("b")).unwrap();
        other.kv.insert(b"stale".to_vec(), b"x".to_vec()).unwrap();
        // The caller sees exactly the kv records, in order (it builds the
        // in-memory index from them).
        let mut seen = Vec::new();
        load(&other, &info.path, |k, v| {
            seen.push((k.to_vec(), v.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(b"k1".to_vec(), 2), (b"k2".to_vec(), 100_000)]);
        assert!(other.kv.get(b"stale").unwrap().is_none());
        assert_eq!(&*other.kv.get(b"k1").unwrap().unwrap(), b"v1");
        assert_eq!(other.kv.get(b"k2").unwrap().unwrap().len(), 100_000);
        assert_eq!(&*other.meta.get(b"m").unwrap().unwrap(), b"x");
    }

    #[test]
    fn records_out_of_key_order_are_refused_not_a_panic() {
        // A well-formed, correctly checksummed file whose state machine
        // records go backwards: fjall's ingestion would assert.
        let dir = tempfile::tempdir().unwrap();
        let path = crafted(dir.path(), 7, &[(TAG_KV, b"b", b"v"), (TAG_KV, b"a", b"v")]);
        assert_eq!(verify(&path).unwrap().index, 7, "the file itself is valid");
        let db = Db::open(&dir.path().join("m")).unwrap();
        let err = load(&db, &path, |_, _| Ok(())).unwrap_err().to_string();
        assert!(err.contains("out of key order"), "{err}");
    }

    /// A file that fails its checks part-way (records out of order, a
    /// damaged byte caught by the checksum at the end) leaves the member's
    /// state machine as it was; a good file then installs as usual.
    #[test]
    fn a_file_refused_part_way_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m")).unwrap();
        db.kv.insert(b"old".to_vec(), b"1".to_vec()).unwrap();
        db.meta.insert(b"meta".to_vec(), b"x".to_vec()).unwrap();
        let unchanged = |db: &Db| {
            assert_eq!(db.kv.get(b"old").unwrap().as_deref(), Some(&b"1"[..]));
            assert_eq!(db.meta.get(b"meta").unwrap().as_deref(), Some(&b"x"[..]));
            assert!(db.kv.get(b"a").unwrap().is_none());
        };
        let disordered = crafted(dir.path(), 7, &[(TAG_KV, b"b", b"v"), (TAG_KV, b"a", b"v")]);
        assert!(load(&db, &disordered, |_, _| Ok(())).is_err());
        unchanged(&db);

        let good = crafted(
            dir.path(),
            8,
            &[
                (TAG_KV, b"a", b"new"),
                (TAG_KV, b"b", b"v"),
                (TAG_META, b"n", b"y"),
            ],
        );
        let mut damaged = std::fs::read(&good).unwrap();
        // A byte of a value: only the checksum at the end can tell.
        let at = damaged.windows(3).position(|w| w == b"new").unwrap();
        damaged[at] ^= 0x01;
        let damaged_path = dir.path().join("damaged.snap");
        std::fs::write(&damaged_path, &damaged).unwrap();
        let err = load(&db, &damaged_path, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum"), "{err}");
        unchanged(&db);

        load(&db, &good, |_, _| Ok(())).unwrap();
        assert!(db.kv.get(b"old").unwrap().is_none());
        assert!(db.meta.get(b"meta").unwrap().is_none());
        assert_eq!(db.kv.get(b"a").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(db.meta.get(b"n").unwrap().as_deref(), Some(&b"y"[..]));
    }

    /// The install must hold across a restart: fjall replays its journal
    /// then, and a journaled `clear` would drop the ingested tables.
    #[test]
    fn an_installed_snapshot_survives_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let source = Db::open(&dir.path().join("a")).unwrap();
        let snapdir = dir.path().join("snap");
        std::fs::create_dir_all(&snapdir).unwrap();
        let cs = ConfState {
            voters: vec![1],
            ..Default::default()
        };
        let mut b = source.db.batch();
        for i in 0..1000u32 {
            b.insert(&source.kv, i.to_be_bytes().to_vec(), vec![1u8; 100]);
        }
        b.insert(&source.meta, b"m".to_vec(), b"first".to_vec());
        b.commit().unwrap();
        let first = write(&source, &source.db.snapshot(), &snapdir, 10, 1, &cs).unwrap();
        // The second snapshot drops half the keys and changes the rest.
        let mut b = source.db.batch();
        for i in 0..1000u32 {
            if i % 2 == 0 {
                b.remove(&source.kv, i.to_be_bytes().to_vec());
            } else {
                b.insert(&source.kv, i.to_be_bytes().to_vec(), vec![2u8; 100]);
            }
        }
        b.insert(&source.meta, b"m".to_vec(), b"second".to_vec());
        b.commit().unwrap();
        let second = write(&source, &source.db.snapshot(), &snapdir, 20, 1, &cs).unwrap();

        let member = dir.path().join("b");
        {
            // A member with state of its own, that installs both in turn
            // (a lagging member), each on top of the one before.
            let db = Db::open(&member).unwrap();
            db.kv.insert(b"stale".to_vec(), b"x".to_vec()).unwrap();
            load(&db, &first.path, |_, _| Ok(())).unwrap();
            load(&db, &second.path, |_, _| Ok(())).unwrap();
            db.sync().unwrap();
        }
        let db = Db::open(&member).unwrap();
        let keys: Vec<Vec<u8>> = db.kv.iter().map(|g| g.key().unwrap().to_vec()).collect();
        let expected: Vec<Vec<u8>> = (0..1000u32)
            .filter(|i| i % 2 == 1)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        assert_eq!(keys, expected);
        assert_eq!(
            &*db.kv.get(1u32.to_be_bytes()).unwrap().unwrap(),
            &[2u8; 100][..]
        );
        assert_eq!(&*db.meta.get(b"m").unwrap().unwrap(), b"second");
    }

    #[test]
    fn portable_form_is_what_etcdctl_accepts_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a")).unwrap();
        let mut b = db.db.batch();
        b.insert(&db.kv, b"k1".to_vec(), b"v1".to_vec());
        b.insert(&db.kv, b"k2".to_vec(), vec![9u8; 70_000]);
        super::super::meta::put_applied(
            &mut b,
            &db,
            super::super::meta::AppliedState { index: 9, term: 2 },
        );
        b.commit().unwrap();
        let path = dir.path().join("snap.db");
        let size = write_portable(&db, &db.db.snapshot(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size);
        // etcdctl's checks: size % 512 == 32, and the trailer is the
        // SHA-256 of everything before it.
        assert_eq!(size % 512, 32);
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        assert_eq!(Sha256::digest(body).as_slice(), digest);

        let h = verify(&path).unwrap();
        assert_eq!((h.index, h.term), (9, 2));
        let mut kv = Vec::new();
        read_records(&path, false, |tag, k, v| {
            if tag == TAG_KV {
                kv.push((k, v.len()));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(kv, vec![(b"k1".to_vec(), 2), (b"k2".to_vec(), 70_000)]);

        // A flipped padding byte or digest byte is caught by the outer
        // digest; --skip-hash-check ignores only that digest.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(verify(&path).is_err());
        assert!(read_records(&path, true, |_, _, _| Ok(())).is_ok());
        // Garbage after the trailer is not a snapshot.
        let mut long = bytes.clone();
        long.extend_from_slice(&[0u8; 600]);
        std::fs::write(&path, &long).unwrap();
        assert!(read_records(&path, true, |_, _, _| Ok(())).is_err());
        // A truncated download neither.
        std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
        assert!(verify(&path).is_err());
    }

    /// Feeds `bytes` to an [`Arriving`] in chunks of `chunk` bytes.
    fn arrive(bytes: &[u8], chunk: usize) -> Arriving {
        let mut a = Arriving::default();
        for c in bytes.chunks(chunk) {
            a.update(c);
        }
        a
    }

    #[test]
    fn a_snapshot_is_checked_as_it_arrives_in_any_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let value = vec![9u8; 3000];
        let path = crafted(
            dir.path(),
            7,
            &[
                (TAG_KV, b"a", &value),
                (TAG_KV, b"b", b"x"),
                (TAG_META, b"m", b"y"),
            ],
        );
        let bytes = std::fs::read(&path).unwrap();
        for chunk in [1, 5, 31, 32, 33, 64, 1000, bytes.len()] {
            arrive(&bytes, chunk)
                .finish(7, 2)
                .unwrap_or_else(|e| panic!("chunks of {chunk}: {e}"));
        }
        let err = arrive(&bytes, 100).finish(8, 2).unwrap_err().to_string();
        assert!(err.contains("index 7 term 2"), "{err}");

        // One flipped bit anywhere (header, record, digest), a cut, or an
        // extra byte: refused.
        for at in [
            3,
            12,
            40,
            bytes.len() / 2,
            bytes.len() - 40,
            bytes.len() - 1,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(arrive(&bad, 33).finish(7, 2).is_err(), "flip at {at}");
        }
        assert!(arrive(&bytes[..bytes.len() - 1], 33).finish(7, 2).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(arrive(&longer, 33).finish(7, 2).is_err());
        assert!(arrive(&bytes[..20], 7).finish(7, 2).is_err());
        assert!(Arriving::default().finish(7, 2).is_err());
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a")).unwrap();
        db.kv.insert(b"k".to_vec(), b"v".to_vec()).unwrap();
        let snapdir = dir.path().join("snap");
        std::fs::create_dir_all(&snapdir).unwrap();
        let info = write(
            &db,
            &db.db.snapshot(),
            &snapdir,
            5,
            1,
            &ConfState::default(),
        )
        .unwrap();
        let mut bytes = std::fs::read(&info.path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&info.path, &bytes).unwrap();
        assert!(verify(&info.path).is_err());
        std::fs::write(&info.path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(verify(&info.path).is_err());
    }
}
