//! bbolt (v1.3.6) database files: the format of etcd's `member/snap/db` and
//! of the snapshots `etcdctl snapshot save` stores.
//!
//! A file is a run of fixed-size pages; page `n` starts at `n * page_size`.
//! Pages 0 and 1 are meta pages (the valid one with the higher txid wins);
//! the active meta names the root bucket's page, the freelist page and the
//! number of pages in use (`page_count`, bbolt's `pgid`). Buckets are B+trees
//! of branch and leaf pages; a page bigger than one page spans `overflow`
//! extra pages. A small bucket may live *inline* in its parent's leaf value.
//!
//! [`BoltReader`] reads pages with positional reads and a per-cursor
//! read-ahead window, so a 1 GiB file is never held whole; every offset taken
//! from the file is checked before use, so hostile bytes give a
//! [`BoltError`], never a panic. [`BoltWriter`] builds a file bucket by
//! bucket from sorted keys, writing each page as soon as it is full.

mod check;
mod page;
mod read;
mod write;

pub use read::{BoltReader, Bucket, Cursor, Entry};
pub use write::{BoltWriter, WriteSummary};

use crate::checksum::fnv1a64;
use std::path::PathBuf;

/// bbolt's magic number, in every meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The only data file version bbolt v1.3 reads and writes.
pub const VERSION: u32 = 2;
/// The page size the writer uses (bbolt's default on Linux/x86-64).
pub const WRITE_PAGE_SIZE: usize = 4096;
/// Smallest page size the reader accepts.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest page size the reader accepts (bbolt's biggest OS page is 64 KiB).
pub const MAX_PAGE_SIZE: u32 = 64 * 1024;
/// `meta.freelist` when the freelist is not stored (etcd on Linux opens
/// bbolt with `NoFreelistSync`; readers rebuild the freelist by scanning).
pub const NO_FREELIST: u64 = u64::MAX;
/// Deepest B+tree the reader follows. A 4 KiB-page tree of a billion keys
/// is about six levels deep; anything near this bound is a cycle or garbage.
pub const MAX_TREE_DEPTH: usize = 32;
/// Deepest nesting of buckets inside buckets the integrity check follows.
pub const MAX_BUCKET_NESTING: usize = 16;
/// bbolt's `MaxKeySize`.
pub const MAX_KEY_BYTES: usize = 32768;
/// bbolt's `MaxValueSize`.
pub const MAX_VALUE_BYTES: usize = (1 << 31) - 2;
/// Largest read a cursor makes when it sees pages being read in file order.
pub const READAHEAD_MAX_BYTES: usize = 4 << 20;

/// Everything that can be wrong with a bbolt file or with the input given to
/// the writer. Every variant names the file; page-level ones the page id.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {len_bytes} bytes is too small for a bbolt database")]
    TooSmall { path: PathBuf, len_bytes: u64 },
    #[error("{path}: no valid meta page (page 0: {meta0}; page 1: {meta1})")]
    NoValidMeta {
        path: PathBuf,
        meta0: MetaProblem,
        meta1: MetaProblem,
    },
    #[error(
        "{path}: truncated: meta page {meta_page} needs {need_bytes} bytes ({page_count} pages) but the file has {have_bytes}"
    )]
    Truncated {
        path: PathBuf,
        meta_page: u64,
        page_count: u64,
        need_bytes: u64,
        have_bytes: u64,
    },
    #[error("{path}: page {page} is out of range (the database has {page_count} pages)")]
    PageOutOfRange {
        path: PathBuf,
        page: u64,
        page_count: u64,
    },
    #[error("{path}: page {page}: {problem}")]
    BadPage {
        path: PathBuf,
        page: u64,
        problem: String,
    },
    #[error("{path}: page {page}: element {index}: {problem}")]
    BadElement {
        path: PathBuf,
        page: u64,
        index: usize,
        problem: &'static str,
    },
    #[error("{path}: page {page}: cycle: the page is its own ancestor in the tree")]
    Cycle { path: PathBuf, page: u64 },
    #[error("{path}: page {page}: tree deeper than {MAX_TREE_DEPTH} levels")]
    TooDeep { path: PathBuf, page: u64 },
    #[error(
        "{path}: page {page}: more page visits than pages in the file (pages shared between subtrees)"
    )]
    TooManyVisits { path: PathBuf, page: u64 },
    #[error("{path}: page {page}: element {index}: key not above the previous key")]
    KeysOutOfOrder {
        path: PathBuf,
        page: u64,
        index: usize,
    },
    #[error("{path}: key {key} is not a bucket")]
    NotABucket { path: PathBuf, key: String },
    #[error("{path}: integrity check: page {page}: {problem}")]
    Integrity {
        path: PathBuf,
        page: u64,
        problem: &'static str,
    },
    #[error("{path}: bucket {bucket}: {problem}")]
    BadInput {
        path: PathBuf,
        bucket: String,
        problem: String,
    },
}

/// Why one meta page is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaProblem {
    #[error("beyond the end of the file")]
    Missing,
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported version {0}")]
    BadVersion(u32),
    #[error("checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    Checksum { stored: u64, computed: u64 },
    #[error("page size {0} out of range")]
    BadPageSize(u32),
    #[error("page size {found} differs from the file's {expected}")]
    PageSizeMismatch { found: u32, expected: u32 },
    #[error("{0}")]
    BadField(&'static str),
}

/// A decoded meta page (bbolt's `meta` struct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// Page of the root bucket's root node.
    pub root: u64,
    pub root_sequence: u64,
    /// Page of the freelist, or [`NO_FREELIST`].
    pub freelist: u64,
    /// Pages in use: the high-water mark (`pgid`).
    pub page_count: u64,
    pub txid: u64,
    pub checksum: u64,
}

/// Offset of the meta struct in its page (after the page header).
const META_OFFSET: usize = 16;
/// Bytes of the meta struct, checksum included.
const META_BYTES: usize = 64;
/// The checksum covers the meta struct up to the checksum field.
const META_CHECKSUMMED_BYTES: usize = 56;

impl Meta {
    /// Decodes and validates the meta struct of a meta page image (at
    /// least the first 80 bytes of the page) the way bbolt's `validate`
    /// does, plus the field checks `meta.write` would panic on.
    pub(crate) fn parse(page: &[u8]) -> Result<Meta, MetaProblem> {
        let m = page
            .get(META_OFFSET..META_OFFSET + META_BYTES)
            .ok_or(MetaProblem::Missing)?;
        let u32_at = |o: usize| u32::from_le_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&m[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let meta = Meta {
            page_size: u32_at(8),
            flags: u32_at(12),
            root: u64_at(16),
            root_sequence: u64_at(24),
            freelist: u64_at(32),
            page_count: u64_at(40),
            txid: u64_at(48),
            checksum: u64_at(56),
        };
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(MetaProblem::BadMagic(magic));
        }
        let version = u32_at(4);
        if version != VERSION {
            return Err(MetaProblem::BadVersion(version));
        }
        // bbolt skips the check when the stored checksum is 0.
        let computed = fnv1a64(&m[..META_CHECKSUMMED_BYTES]);
        if meta.checksum != 0 && meta.checksum != computed {
            return Err(MetaProblem::Checksum {
                stored: meta.checksum,
                computed,
            });
        }
        if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&meta.page_size) {
            return Err(MetaProblem::BadPageSize(meta.page_size));
        }
        if meta.page_count < 3 {
            return Err(MetaProblem::BadField(
                "fewer than 3 pages in use (2 meta pages and a root)",
            ));
        }
        if meta.root < 2 || meta.root >= meta.page_count {
            return Err(MetaProblem::BadField("root page outside the pages in use"));
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.page_count) {
            return Err(MetaProblem::BadField(
                "freelist page outside the pages in use",
            ));
        }
        Ok(meta)
    }

    /// Writes this meta (checksum recomputed) as meta page `page_id` into
    /// `page`, which must be zeroed and at least 80 bytes.
    pub(crate) fn encode_page(&self, page_id: u64, page: &mut [u8]) {
        page[0..8].copy_from_slice(&page_id.to_le_bytes());
        page[8..10].copy_from_slice(&page::FLAG_META.to_le_bytes());
        let m = &mut page[META_OFFSET..META_OFFSET + META_BYTES];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        m[12..16].copy_from_slice(&self.flags.to_le_bytes());
        m[16..24].copy_from_slice(&self.root.to_le_bytes());
        m[24..32].copy_from_slice(&self.root_sequence.to_le_bytes());
        m[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        m[40..48].copy_from_slice(&self.page_count.to_le_bytes());
        m[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&m[..META_CHECKSUMMED_BYTES]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
    }

    /// Whether the freelist is stored in a page.
    pub fn has_freelist_page(&self) -> bool {
        self.freelist != NO_FREELIST
    }
}

/// Bytes for an error message: printable ASCII as is, the rest escaped,
/// cut after 64 bytes.
pub(crate) fn show(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut s = String::from("\"");
    for &b in bytes.iter().take(SHOWN) {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    if bytes.len() > SHOWN {
        s.push_str("...");
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests;
