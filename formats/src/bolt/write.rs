//! Writing a bbolt file from sorted buckets, streamed.
//!
//! Layout: pages 0 and 1 meta, page 2 an empty freelist, then each
//! bucket's pages in the order they fill up (leaves as keys arrive, a
//! branch page whenever one fills, the rest of the tree when the bucket
//! ends), then the root bucket's leaf. Small buckets are stored inline in
//! the root leaf, as bbolt does. Memory: one page per tree level of the
//! bucket being written plus the root leaf's entries.

use super::page::{
    BUCKET_HEADER_BYTES, BUCKET_LEAF_FLAG, ELEMENT_BYTES, FLAG_FREELIST, NodeBuilder, PageHeader,
};
use super::{BoltError, MAX_KEY_BYTES, MAX_VALUE_BYTES, Meta, WRITE_PAGE_SIZE, show};
use crate::snapshot::{DbStatus, StatusHasher};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first data page (after meta 0, meta 1 and the freelist).
const FIRST_DATA_PAGE: u64 = 3;
const FREELIST_PAGE: u64 = 2;
/// Output buffer: pages go to the file in runs of this many bytes.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// A page's u16 element count must stay below 0xFFFF (bbolt panics at it).
const MAX_ELEMENTS_PER_PAGE: usize = 0xFFFE;
/// The txid of the written file (meta 0; meta 1 gets one less, as
/// `Tx.WriteTo` does). Any value works; the next writer continues from it.
const WRITE_TXID: u64 = 2;

/// Builds a bbolt file.
///
/// ```no_run
/// # fn main() -> Result<(), etcd_formats::bolt::BoltError> {
/// let mut w = etcd_formats::bolt::BoltWriter::create("db")?;
/// w.begin_bucket(b"a")?;
/// w.put(b"k1", b"v1")?;
/// w.put(b"k2", b"v2")?;
/// w.begin_bucket(b"b")?; // ends bucket "a"
/// let summary = w.finish()?;
/// # Ok(()) }
/// ```
pub struct BoltWriter {
    out: BufWriter<File>,
    path: PathBuf,
    next_page: u64,
    /// Top-level buckets: name and bucket value (header or inline image).
    root_entries: NodeBuilder,
    prev_bucket: Option<Vec<u8>>,
    current: Option<BucketBuilder>,
    page_buf: Vec<u8>,
    status: StatusHasher,
}

/// What [`BoltWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    /// Pages in use; the file is `page_count * 4096` bytes.
    pub page_count: u64,
    pub size_bytes: u64,
    pub txid: u64,
    /// What `etcdctl snapshot status` will report for the file.
    pub status: DbStatus,
}

struct BucketBuilder {
    name: Vec<u8>,
    leaf: NodeBuilder,
    /// Pending branch nodes, `branches[0]` one level above the leaves.
    branches: Vec<NodeBuilder>,
    /// Pages written per level (0 = leaves).
    written: Vec<u64>,
    prev_key: Vec<u8>,
    has_keys: bool,
}

impl BoltWriter {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<BoltWriter, BoltError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| BoltError::Io {
            path: path.clone(),
            source,
        })?;
        BoltWriter::new(file, path)
    }

    /// Writes into `file` from offset 0 (it must be empty or disposable);
    /// `path` only names it in errors.
    pub fn new(file: File, path: PathBuf) -> Result<BoltWriter, BoltError> {
        let mut w = BoltWriter {
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            path,
            next_page: FIRST_DATA_PAGE,
            root_entries: NodeBuilder::default(),
            prev_bucket: None,
            current: None,
            page_buf: Vec::with_capacity(WRITE_PAGE_SIZE),
            status: StatusHasher::default(),
        };
        // Meta pages are written last, once the root is known; page 2 is
        // an empty freelist.
        let mut first = vec![0u8; FIRST_DATA_PAGE as usize * WRITE_PAGE_SIZE];
        PageHeader {
            id: FREELIST_PAGE,
            flags: FLAG_FREELIST,
            count: 0,
            overflow: 0,
        }
        .write(&mut first[FREELIST_PAGE as usize * WRITE_PAGE_SIZE..]);
        w.write_all(&first)?;
        Ok(w)
    }

    fn write_all(&mut self, b: &[u8]) -> Result<(), BoltError> {
        self.out.write_all(b).map_err(|source| BoltError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Starts the next top-level bucket (ending the current one). Names
    /// must strictly ascend.
    pub fn begin_bucket(&mut self, name: &[u8]) -> Result<(), BoltError> {
        if name.is_empty() || name.len() > MAX_KEY_BYTES {
            return Err(self.bad_input(name, "bucket name must be 1 to 32768 bytes"));
        }
        if self.prev_bucket.as_deref().is_some_and(|p| p >= name) {
            return Err(self.bad_input(
                name,
                &format!(
                    "bucket names must ascend; it comes after {}",
                    show(self.prev_bucket.as_deref().unwrap_or_default())
                ),
            ));
        }
        self.end_bucket()?;
        self.prev_bucket = Some(name.to_vec());
        self.status.bucket(name);
        self.current = Some(BucketBuilder {
            name: name.to_vec(),
            leaf: NodeBuilder::default(),
            branches: Vec::new(),
            written: vec![0],
            prev_key: Vec::new(),
            has_keys: false,
        });
        Ok(())
    }

    /// Adds a key/value to the current bucket. Keys must strictly ascend.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BoltError> {
        let Some(b) = self.current.as_mut() else {
            return Err(self.bad_input(b"", "put before any bucket was begun"));
        };
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            let name = b.name.clone();
            return Err(self.bad_input(
                &name,
                &format!("key {} must be 1 to 32768 bytes", show(key)),
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            let name = b.name.clone();
            return Err(self.bad_input(&name, &format!("value of key {} too large", show(key))));
        }
        if b.has_keys && key <= b.prev_key.as_slice() {
            let (name, prev) = (b.name.clone(), b.prev_key.clone());
            return Err(self.bad_input(
                &name,
                &format!(
                    "keys must strictly ascend: {} after {}",
                    show(key),
                    show(&prev)
                ),
            ));
        }
        b.prev_key.clear();
        b.prev_key.extend_from_slice(key);
        b.has_keys = true;
        self.status.entry(key, value);
        let added = ELEMENT_BYTES + key.len() + value.len();
        if !b.leaf.is_empty()
            && (b.leaf.size() + added > WRITE_PAGE_SIZE || b.leaf.len() >= MAX_ELEMENTS_PER_PAGE)
        {
            self.flush_leaf()?;
        }
        if let Some(b) = self.current.as_mut() {
            b.leaf.push_leaf(0, key, value);
        }
        Ok(())
    }

    fn bad_input(&self, bucket: &[u8], problem: &str) -> BoltError {
        BoltError::BadInput {
            path: self.path.clone(),
            bucket: show(bucket),
            problem: problem.to_string(),
        }
    }

    /// Writes `node` as the next page(s); returns its page id.
    fn write_node(&mut self, node: &NodeBuilder, is_leaf: bool) -> Result<u64, BoltError> {
        let id = self.next_page;
        let pages = node.size().div_ceil(WRITE_PAGE_SIZE).max(1);
        self.page_buf.clear();
        node.write(
            id,
            is_leaf,
            (pages - 1) as u32,
            pages * WRITE_PAGE_SIZE,
            &mut self.page_buf,
        );
        let buf = std::mem::take(&mut self.page_buf);
        let res = self.write_all(&buf);
        self.page_buf = buf;
        res?;
        self.next_page += pages as u64;
        Ok(id)
    }

    fn flush_leaf(&mut self) -> Result<(), BoltError> {
        let Some(mut b) = self.current.take() else {
            return Ok(());
        };
        let res = self.flush_level(&mut b, 0);
        self.current = Some(b);
        res
    }

    /// Writes the pending node of `level` (0 = leaf) and adds it to the
    /// level above, flushing that one first if it is full.
    fn flush_level(&mut self, b: &mut BucketBuilder, level: usize) -> Result<(), BoltError> {
        let node = if level == 0 {
            std::mem::take(&mut b.leaf)
        } else {
            std::mem::take(&mut b.branches[level - 1])
        };
        let id = self.write_node(&node, level == 0)?;
        b.written[level] += 1;
        if b.branches.len() == level {
            b.branches.push(NodeBuilder::default());
            b.written.push(0);
        }
        let parent = &b.branches[level];
        let added = ELEMENT_BYTES + node.first_key().len();
        if !parent.is_empty()
            && (parent.size() + added > WRITE_PAGE_SIZE || parent.len() >= MAX_ELEMENTS_PER_PAGE)
        {
            self.flush_level(b, level + 1)?;
        }
        b.branches[level].push_branch(node.first_key(), id);
        // Hand the emptied buffer back so its allocation is reused.
        let mut node = node;
        node.clear();
        if level == 0 {
            b.leaf = node;
        } else {
            b.branches[level - 1] = node;
        }
        Ok(())
    }

    /// Finishes the current bucket: writes the rest of its tree and records
    /// it in the root leaf.
    fn end_bucket(&mut self) -> Result<(), BoltError> {
        let Some(mut b) = self.current.take() else {
            return Ok(());
        };
        let mut value = Vec::with_capacity(BUCKET_HEADER_BYTES);
        if b.written[0] == 0 && b.leaf.size() <= WRITE_PAGE_SIZE / 4 {
            // bbolt's inline rule: no sub-buckets and the page image fits
            // in a quarter page. Root 0 marks the bucket inline.
            value.extend_from_slice(&0u64.to_le_bytes());
            value.extend_from_slice(&0u64.to_le_bytes());
            let size = b.leaf.size();
            b.leaf.write(0, true, 0, size, &mut value);
        } else {
            let root = self.finish_tree(&mut b)?;
            value.extend_from_slice(&root.to_le_bytes());
            value.extend_from_slice(&0u64.to_le_bytes());
        }
        self.root_entries
            .push_leaf(BUCKET_LEAF_FLAG, &b.name, &value);
        Ok(())
    }

    /// Flushes every pending node bottom-up; the first level with a single
    /// node and nothing written before it is the root.
    fn finish_tree(&mut self, b: &mut BucketBuilder) -> Result<u64, BoltError> {
        let mut level = 0;
        loop {
            let is_top = b.branches.len() == level;
            if is_top && b.written[level] == 0 {
                let node = if level == 0 {
                    std::mem::take(&mut b.leaf)
                } else {
                    std::mem::take(&mut b.branches[level - 1])
                };
                return self.write_node(&node, level == 0);
            }
            self.flush_level(b, level)?;
            level += 1;
        }
    }

    /// Ends the last bucket, writes the root leaf and the meta pages, and
    /// flushes and fsyncs the file.
    pub fn finish(self) -> Result<WriteSummary, BoltError> {
        self.finish_inner(true)
    }

    /// [`BoltWriter::finish`] without the fsync: for a temporary file that
    /// is streamed out and deleted (a `Maintenance.Snapshot` response),
    /// where syncing a gigabyte would only add latency.
    pub fn finish_without_sync(self) -> Result<WriteSummary, BoltError> {
        self.finish_inner(false)
    }

    fn finish_inner(mut self, sync: bool) -> Result<WriteSummary, BoltError> {
        self.end_bucket()?;
        let entries = std::mem::take(&mut self.root_entries);
        let root = self.write_node(&entries, true)?;
        let page_count = self.next_page;
        let io = |path: &PathBuf, source| BoltError::Io {
            path: path.clone(),
            source,
        };
        self.out.flush().map_err(|e| io(&self.path, e))?;
        let mut meta = Meta {
            page_size: WRITE_PAGE_SIZE as u32,
            flags: 0,
            root,
            root_sequence: 0,
            freelist: FREELIST_PAGE,
            page_count,
            txid: WRITE_TXID,
            checksum: 0,
        };
        let mut pages = vec![0u8; 2 * WRITE_PAGE_SIZE];
        meta.encode_page(0, &mut pages[..WRITE_PAGE_SIZE]);
        meta.txid = WRITE_TXID - 1;
        meta.encode_page(1, &mut pages[WRITE_PAGE_SIZE..]);
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| io(&self.path, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&pages))
            .and_then(|_| if sync { file.sync_all() } else { Ok(()) })
            .map_err(|e| io(&self.path, e))?;
        let size_bytes = page_count * WRITE_PAGE_SIZE as u64;
        Ok(WriteSummary {
            page_count,
            size_bytes,
            txid: WRITE_TXID,
            status: self.status.finish(size_bytes),
        })
    }
}
