//! Reading a bbolt file: meta selection, bucket lookup and ordered cursors.

use super::page::{BUCKET_HEADER_BYTES, BUCKET_LEAF_FLAG, LeafElem, Node, PageHeader, le_u64};
use super::{
    BoltError, MAX_PAGE_SIZE, MAX_TREE_DEPTH, MIN_PAGE_SIZE, Meta, MetaProblem,
    READAHEAD_MAX_BYTES, show,
};
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the bytes come from.
enum Source {
    /// Positional reads; nothing is held beyond the pages a cursor uses.
    File(File),
    /// A file already in memory (tests, small snapshots received whole).
    Memory(Bytes),
}

/// An open bbolt database (read only).
///
/// Cheap to share between threads: every cursor does its own positional
/// reads. Reads stop at `page_count * page_size`, so a snapshot's SHA-256
/// trailer or a file bbolt grew beyond its pages is no problem.
pub struct BoltReader {
    src: Source,
    path: PathBuf,
    meta: Meta,
    meta_page: u64,
    len_bytes: u64,
}

/// A bucket: its root page, or the node image of an inline bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    root: BucketRoot,
}

impl Bucket {
    /// The root page, or `None` for an inline bucket.
    pub fn root_page(&self) -> Option<u64> {
        match self.root {
            BucketRoot::Page(p) => Some(p),
            BucketRoot::Inline(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
enum BucketRoot {
    Page(u64),
    Inline(Node),
}

/// One key/value of a bucket, in key order. Key and value share the page
/// buffer they were read into (no copy); copy them if you keep a few for
/// long, since each holds its whole read buffer alive.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Bytes,
    /// For a nested bucket ([`Entry::is_bucket`]) this is the raw bucket
    /// header (and inline page); open it with [`BoltReader::open_bucket`].
    pub value: Bytes,
    pub is_bucket: bool,
    page: u64,
}

impl BoltReader {
    /// Opens the file at `path` and selects its active meta page.
    pub fn open(path: impl AsRef<Path>) -> Result<BoltReader, BoltError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| BoltError::Io {
            path: path.clone(),
            source,
        })?;
        BoltReader::from_file(file, path)
    }

    /// Uses an open file; `path` only names it in errors.
    pub fn from_file(file: File, path: PathBuf) -> Result<BoltReader, BoltError> {
        let len_bytes = file
            .metadata()
            .map_err(|source| BoltError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        BoltReader::init(Source::File(file), path, len_bytes)
    }

    /// Reads a database held in memory; `name` only names it in errors.
    pub fn from_bytes(bytes: Bytes, name: impl Into<PathBuf>) -> Result<BoltReader, BoltError> {
        let len = bytes.len() as u64;
        BoltReader::init(Source::Memory(bytes), name.into(), len)
    }

    fn init(src: Source, path: PathBuf, len_bytes: u64) -> Result<BoltReader, BoltError> {
        let mut r = BoltReader {
            src,
            path,
            // Placeholder until a meta is chosen; only raw reads happen before.
            meta: Meta {
                page_size: 0,
                flags: 0,
                root: 0,
                root_sequence: 0,
                freelist: 0,
                page_count: 0,
                txid: 0,
                checksum: 0,
            },
            meta_page: 0,
            len_bytes,
        };
        if len_bytes < 2 * u64::from(MIN_PAGE_SIZE) {
            return Err(BoltError::TooSmall {
                path: r.path,
                len_bytes,
            });
        }
        let meta0 = r.meta_at(0);
        // Like bbolt: the page size comes from meta 0; if meta 0 is bad,
        // look for a meta 1 that agrees with its own position.
        let page_size = match &meta0 {
            Ok(m) => Some(m.page_size),
            Err(_) => {
                let mut found = None;
                let mut ps = MIN_PAGE_SIZE;
                while ps <= MAX_PAGE_SIZE {
                    if let Ok(m) = r.meta_at(u64::from(ps))
                        && m.page_size == ps
                    {
                        found = Some(ps);
                        break;
                    }
                    ps *= 2;
                }
                found
            }
        };
        // Without a page size, report what is at bbolt's default position.
        let ps1 = page_size.unwrap_or(super::WRITE_PAGE_SIZE as u32);
        let meta1 = r.meta_at(u64::from(ps1)).and_then(|m| {
            if m.page_size == ps1 {
                Ok(m)
            } else {
                Err(MetaProblem::PageSizeMismatch {
                    found: m.page_size,
                    expected: ps1,
                })
            }
        });
        let (meta, meta_page) = match (meta0, meta1) {
            (Ok(a), Ok(b)) if b.txid > a.txid => (b, 1),
            (Ok(a), _) => (a, 0),
            (Err(_), Ok(b)) => (b, 1),
            (Err(meta0), Err(meta1)) => {
                return Err(BoltError::NoValidMeta {
                    path: r.path,
                    meta0,
                    meta1,
                });
            }
        };
        let ps = u64::from(meta.page_size);
        if len_bytes < 2 * ps {
            return Err(BoltError::TooSmall {
                path: r.path,
                len_bytes,
            });
        }
        let need_bytes = meta.page_count.saturating_mul(ps);
        if need_bytes > len_bytes {
            return Err(BoltError::Truncated {
                path: r.path,
                meta_page,
                page_count: meta.page_count,
                need_bytes,
                have_bytes: len_bytes,
            });
        }
        r.meta = meta;
        r.meta_page = meta_page;
        Ok(r)
    }

    fn meta_at(&self, offset: u64) -> Result<Meta, MetaProblem> {
        const META_PREFIX_BYTES: usize = 80;
        if offset + META_PREFIX_BYTES as u64 > self.len_bytes {
            return Err(MetaProblem::Missing);
        }
        let b = self
            .read_exact(offset, META_PREFIX_BYTES)
            .map_err(|_| MetaProblem::Missing)?;
        Meta::parse(&b)
    }

    /// The file's name, as used in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The active meta page's contents.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Which meta page (0 or 1) is active.
    pub fn active_meta_page(&self) -> u64 {
        self.meta_page
    }

    pub fn page_size(&self) -> usize {
        self.meta.page_size as usize
    }

    /// Bytes of the database proper, `page_count * page_size` (bbolt's
    /// `tx.Size()`, what `etcdctl snapshot status` reports as totalSize).
    pub fn size_bytes(&self) -> u64 {
        self.meta.page_count * u64::from(self.meta.page_size)
    }

    /// Bytes of the file (a snapshot's trailer included).
    pub fn file_len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// The root bucket (whose entries are the top-level buckets).
    pub fn root(&self) -> Bucket {
        Bucket {
            root: BucketRoot::Page(self.meta.root),
        }
    }

    /// A top-level bucket by name (`None` if absent; an error if the key
    /// exists but is not a bucket).
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        self.sub_bucket(&self.root(), name)
    }

    /// A bucket nested in `parent`.
    pub fn sub_bucket(&self, parent: &Bucket, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        match self.lookup(parent, name)? {
            None => Ok(None),
            Some(e) if e.flags & BUCKET_LEAF_FLAG == 0 => Err(BoltError::NotABucket {
                path: self.path.clone(),
                key: show(name),
            }),
            Some(e) => self.bucket_from_value(e.value, self.meta.root).map(Some),
        }
    }

    /// The value of `key` in `bucket` (`None` if absent or a nested bucket,
    /// like bbolt's `Get`).
    pub fn get(&self, bucket: &Bucket, key: &[u8]) -> Result<Option<Bytes>, BoltError> {
        Ok(self
            .lookup(bucket, key)?
            .filter(|e| e.flags & BUCKET_LEAF_FLAG == 0)
            .map(|e| e.value))
    }

    /// Opens the nested bucket an entry of [`Cursor`] points at.
    pub fn open_bucket(&self, entry: &Entry) -> Result<Bucket, BoltError> {
        if !entry.is_bucket {
            return Err(BoltError::NotABucket {
                path: self.path.clone(),
                key: show(&entry.key),
            });
        }
        self.bucket_from_value(entry.value.clone(), entry.page)
    }

    /// All entries of `bucket` in key order.
    pub fn cursor(&self, bucket: &Bucket) -> Cursor<'_> {
        Cursor {
            reader: self,
            window: Readahead::default(),
            root: Some(bucket.root.clone()),
            stack: Vec::new(),
            visits: 0,
            prev_key: None,
            done: false,
            visited: None,
        }
    }

    fn bucket_from_value(&self, value: Bytes, page: u64) -> Result<Bucket, BoltError> {
        let bad = |problem| BoltError::BadPage {
            path: self.path.clone(),
            page,
            problem,
        };
        let root =
            le_u64(&value, 0).ok_or_else(|| bad("bucket value shorter than its header".into()))?;
        if root != 0 {
            return Ok(Bucket {
                root: BucketRoot::Page(root),
            });
        }
        let node = Node::parse(
            value.slice(BUCKET_HEADER_BYTES.min(value.len())..),
            page,
            None,
        )
        .map_err(|p| bad(format!("inline bucket: {p}")))?;
        if !node.is_leaf {
            return Err(bad("inline bucket is not a leaf".into()));
        }
        Ok(Bucket {
            root: BucketRoot::Inline(node),
        })
    }

    /// Descends from the bucket's root to the leaf that would hold `key`.
    fn lookup(&self, bucket: &Bucket, key: &[u8]) -> Result<Option<LeafElem>, BoltError> {
        let mut window = Readahead::default();
        let mut node = match &bucket.root {
            BucketRoot::Inline(n) => n.clone(),
            BucketRoot::Page(p) => self.load_node(&mut window, *p)?,
        };
        let mut depth = 0;
        loop {
            let (idx, exact) = node
                .lower_bound(key)
                .map_err(|(i, p)| self.bad_elem(&node, i, p))?;
            if node.is_leaf {
                if !exact {
                    return Ok(None);
                }
                return node
                    .leaf(idx)
                    .map(Some)
                    .map_err(|p| self.bad_elem(&node, idx, p));
            }
            // Branch: the child whose first key is the last one <= key.
            let idx = if exact { idx } else { idx.saturating_sub(1) };
            let child = node.child(idx).map_err(|p| self.bad_elem(&node, idx, p))?;
            depth += 1;
            if depth >= MAX_TREE_DEPTH {
                return Err(BoltError::TooDeep {
                    path: self.path.clone(),
                    page: child,
                });
            }
            node = self.load_node(&mut window, child)?;
        }
    }

    fn bad_elem(&self, node: &Node, index: usize, problem: &'static str) -> BoltError {
        BoltError::BadElement {
            path: self.path.clone(),
            page: node.page,
            index,
            problem,
        }
    }

    /// Reads and checks the branch or leaf page `id` (with its overflow).
    pub(crate) fn load_node(&self, window: &mut Readahead, id: u64) -> Result<Node, BoltError> {
        let span = self.load_span(window, id)?;
        Node::parse(span, id, Some(id)).map_err(|problem| BoltError::BadPage {
            path: self.path.clone(),
            page: id,
            problem,
        })
    }

    /// The bytes of page `id` and its overflow pages.
    pub(crate) fn load_span(&self, window: &mut Readahead, id: u64) -> Result<Bytes, BoltError> {
        let ps = self.meta.page_size as usize;
        if id >= self.meta.page_count {
            return Err(self.out_of_range(id));
        }
        let off = id * ps as u64;
        let first = self.window_read(window, off, ps)?;
        let hdr = PageHeader::parse(&first).ok_or_else(|| self.out_of_range(id))?;
        let last = id
            .checked_add(u64::from(hdr.overflow))
            .filter(|&l| l < self.meta.page_count)
            .ok_or_else(|| BoltError::BadPage {
                path: self.path.clone(),
                page: id,
                problem: format!(
                    "{} overflow pages run past the {} pages in use",
                    hdr.overflow, self.meta.page_count
                ),
            })?;
        if hdr.overflow == 0 {
            return Ok(first);
        }
        let span = ((last - id + 1) as usize) * ps;
        self.window_read(window, off, span)
    }

    fn out_of_range(&self, page: u64) -> BoltError {
        BoltError::PageOutOfRange {
            path: self.path.clone(),
            page,
            page_count: self.meta.page_count,
        }
    }

    /// `len` bytes at `off` (within the database), through the window.
    fn window_read(&self, w: &mut Readahead, off: u64, len: usize) -> Result<Bytes, BoltError> {
        if let Source::Memory(_) = &self.src {
            return self.read_exact(off, len);
        }
        if let Some(b) = w.slice(off, len) {
            return Ok(b);
        }
        let db_end = self.size_bytes();
        let ps = self.meta.page_size as usize;
        let clip = |want: usize| want.min((db_end - off) as usize).max(len);
        if w.seq
            .as_ref()
            .is_some_and(|(s, b)| s + b.len() as u64 == off)
        {
            // Reading on in file order: double the read, up to the cap.
            let grown = w.seq.as_ref().map_or(ps, |(_, b)| b.len() * 2);
            let data = self.read_exact(off, clip(grown.min(READAHEAD_MAX_BYTES)))?;
            w.seq = Some((off, data));
        } else if w
            .rand
            .as_ref()
            .is_some_and(|(s, b)| s + b.len() as u64 == off)
        {
            // The page after the last random read: a new sequential run.
            let data = self.read_exact(off, clip(2 * ps))?;
            w.seq = Some((off, data));
        } else {
            let data = self.read_exact(off, len)?;
            w.rand = Some((off, data));
        }
        w.slice(off, len).ok_or_else(|| BoltError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("read-ahead window does not cover the page"),
        })
    }

    /// `len` bytes at `offset` straight from the source.
    pub(crate) fn read_exact(&self, offset: u64, len: usize) -> Result<Bytes, BoltError> {
        match &self.src {
            Source::Memory(b) => {
                let start = offset as usize;
                if offset > b.len() as u64 || len > b.len() - start {
                    return Err(BoltError::Io {
                        path: self.path.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    });
                }
                Ok(b.slice(start..start + len))
            }
            Source::File(f) => {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset)
                    .map_err(|source| BoltError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// The last sequential and the last random read of one cursor. Branch pages
/// of one subtree are usually stored apart from its leaves; keeping the two
/// windows apart stops every branch read from throwing away the leaf run.
#[derive(Default)]
pub(crate) struct Readahead {
    seq: Option<(u64, Bytes)>,
    rand: Option<(u64, Bytes)>,
}

impl Readahead {
    fn slice(&self, off: u64, len: usize) -> Option<Bytes> {
        [&self.seq, &self.rand]
            .into_iter()
            .flatten()
            .find_map(|(s, b)| {
                let rel = off.checked_sub(*s)? as usize;
                (rel.checked_add(len)? <= b.len()).then(|| b.slice(rel..rel + len))
            })
    }
}

/// Iterates one bucket's entries in key order (nested buckets appear as
/// entries with `is_bucket`). Checks on the way that keys ascend, that no
/// page is its own ancestor, that the tree is at most [`MAX_TREE_DEPTH`]
/// deep and that no more pages are visited than the file has. After the
/// first error it yields nothing more.
pub struct Cursor<'r> {
    reader: &'r BoltReader,
    window: Readahead,
    root: Option<BucketRoot>,
    stack: Vec<Frame>,
    visits: u64,
    prev_key: Option<Bytes>,
    done: bool,
    /// When tracking (for the integrity check): pages loaded since the
    /// last [`Cursor::take_visited`], as (first page, pages spanned).
    visited: Option<Vec<(u64, u64)>>,
}

struct Frame {
    node: Node,
    next: usize,
}

impl Cursor<'_> {
    /// Starts recording the pages this cursor loads.
    pub(crate) fn track_pages(&mut self) {
        self.visited = Some(Vec::new());
    }

    /// The pages loaded since the last call (when tracking).
    pub(crate) fn take_visited(&mut self) -> Vec<(u64, u64)> {
        self.visited
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn step(&mut self) -> Result<Option<Entry>, BoltError> {
        let r = self.reader;
        if let Some(root) = self.root.take() {
            let node = match root {
                BucketRoot::Inline(n) => n,
                BucketRoot::Page(p) => self.visit(p)?,
            };
            self.stack.push(Frame { node, next: 0 });
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            if top.next >= top.node.count {
                self.stack.pop();
                continue;
            }
            let i = top.next;
            top.next += 1;
            if top.node.is_leaf {
                let e = top.node.leaf(i).map_err(|p| r.bad_elem(&top.node, i, p))?;
                if self.prev_key.as_ref().is_some_and(|p| e.key <= *p) {
                    return Err(BoltError::KeysOutOfOrder {
                        path: r.path.clone(),
                        page: top.node.page,
                        index: i,
                    });
                }
                self.prev_key = Some(e.key.clone());
                return Ok(Some(Entry {
                    key: e.key,
                    value: e.value,
                    is_bucket: e.flags & BUCKET_LEAF_FLAG != 0,
                    page: top.node.page,
                }));
            }
            let child = top.node.child(i).map_err(|p| r.bad_elem(&top.node, i, p))?;
            if self.stack.iter().any(|f| f.node.page == child) {
                return Err(BoltError::Cycle {
                    path: r.path.clone(),
                    page: child,
                });
            }
            if self.stack.len() >= MAX_TREE_DEPTH {
                return Err(BoltError::TooDeep {
                    path: r.path.clone(),
                    page: child,
                });
            }
            let node = self.visit(child)?;
            self.stack.push(Frame { node, next: 0 });
        }
    }

    fn visit(&mut self, page: u64) -> Result<Node, BoltError> {
        let r = self.reader;
        let mut node = r.load_node(&mut self.window, page)?;
        // Count pages, not nodes: in a tree each page is loaded once, so
        // more than the file's pages means shared subtrees — and counting
        // spans stops one huge overflow page referenced over and over.
        let span_pages = (node.data.len() / r.page_size()) as u64;
        self.visits += span_pages;
        if self.visits > r.meta.page_count {
            return Err(BoltError::TooManyVisits {
                path: r.path.clone(),
                page,
            });
        }
        if let Some(v) = self.visited.as_mut() {
            v.push((page, span_pages));
        }
        if !node.is_leaf {
            // Branches stay on the stack while their whole subtree is read:
            // copy them out so they do not pin a read-ahead buffer.
            node.data = Bytes::copy_from_slice(&node.data);
        }
        Ok(node)
    }
}

impl Iterator for Cursor<'_> {
    type Item = Result<Entry, BoltError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
