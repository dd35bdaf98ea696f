//! The integrity check `etcdctl snapshot status` runs (bbolt's `tx.Check`):
//! every page below the high-water mark is reachable exactly once or free.

use super::page::{FLAG_FREELIST, PAGE_HEADER_BYTES, PageHeader, le_u64};
use super::read::{BoltReader, Bucket, Entry, Readahead};
use super::{BoltError, MAX_BUCKET_NESTING};

/// The freelist page's count field saturates here; the real count follows.
const FREELIST_COUNT_OVERFLOW: u16 = 0xFFFF;

struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
}

impl BoltReader {
    /// Checks the whole file the way bbolt's `tx.Check` does and returns the
    /// first problem: a page out of range, referenced twice, of the wrong
    /// type, both reachable and free, freed twice, or (with a stored
    /// freelist) neither reachable nor free. Also decodes every element on
    /// the way, so a clean check means every bucket can be read.
    pub fn check(&self) -> Result<(), BoltError> {
        self.check_visiting(&mut |_, _| Ok(()))
    }

    /// [`BoltReader::check`], handing every entry of every bucket to
    /// `visit` on the way (see `check_bucket`), so a caller that needs to
    /// read everything anyway does it in the same pass.
    pub(crate) fn check_visiting(
        &self,
        visit: &mut dyn FnMut(usize, &Entry) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        let n = self.meta().page_count;
        let mut reached = Bits::new(n);
        reached.set(0);
        reached.set(1);
        let mut window = Readahead::default();
        let integrity = |page, problem| BoltError::Integrity {
            path: self.path().to_path_buf(),
            page,
            problem,
        };

        let mut free_ids = Vec::new();
        if self.meta().has_freelist_page() {
            let id = self.meta().freelist;
            let span = self.load_span(&mut window, id)?;
            let hdr =
                PageHeader::parse(&span).ok_or_else(|| integrity(id, "short freelist page"))?;
            if hdr.flags != FLAG_FREELIST {
                return Err(integrity(id, "freelist page has the wrong type"));
            }
            for p in id..=id + u64::from(hdr.overflow) {
                self.mark(&mut reached, p)?;
            }
            let (count, first) = if hdr.count == FREELIST_COUNT_OVERFLOW {
                let c = le_u64(&span, PAGE_HEADER_BYTES)
                    .ok_or_else(|| integrity(id, "freelist count beyond the page"))?;
                (c, PAGE_HEADER_BYTES + 8)
            } else {
                (u64::from(hdr.count), PAGE_HEADER_BYTES)
            };
            if count > (span.len().saturating_sub(first) / 8) as u64 {
                return Err(integrity(id, "freelist ids run past the page"));
            }
            for i in 0..count as usize {
                let fid = le_u64(&span, first + i * 8)
                    .ok_or_else(|| integrity(id, "freelist ids run past the page"))?;
                free_ids.push(fid);
            }
        }

        self.check_bucket(&self.root(), &mut reached, 0, visit)?;

        let mut freed = Bits::new(n);
        for &fid in &free_ids {
            if fid >= n {
                return Err(BoltError::PageOutOfRange {
                    path: self.path().to_path_buf(),
                    page: fid,
                    page_count: n,
                });
            }
            if freed.get(fid) {
                return Err(integrity(fid, "page freed twice"));
            }
            freed.set(fid);
            if reached.get(fid) {
                return Err(integrity(fid, "reachable page is in the freelist"));
            }
        }
        // Without a stored freelist bbolt computes it as exactly the
        // unreachable pages, so only a stored one can miss a page.
        if self.meta().has_freelist_page() {
            for p in 0..n {
                if !reached.get(p) && !freed.get(p) {
                    return Err(integrity(p, "page is neither reachable nor free"));
                }
            }
        }
        Ok(())
    }

    fn mark(&self, reached: &mut Bits, page: u64) -> Result<(), BoltError> {
        if page >= self.meta().page_count {
            return Err(BoltError::PageOutOfRange {
                path: self.path().to_path_buf(),
                page,
                page_count: self.meta().page_count,
            });
        }
        if reached.get(page) {
            return Err(BoltError::Integrity {
                path: self.path().to_path_buf(),
                page,
                problem: "page referenced more than once",
            });
        }
        reached.set(page);
        Ok(())
    }

    /// Walks a bucket with a cursor (which decodes every element and checks
    /// key order, depth and cycles), marking each page it loads — a page
    /// reached twice is an error — and descending into nested buckets.
    /// `visit` sees every entry with its nesting level (0: the root
    /// bucket's entries, the top-level buckets).
    fn check_bucket(
        &self,
        bucket: &Bucket,
        reached: &mut Bits,
        nesting: usize,
        visit: &mut dyn FnMut(usize, &Entry) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        if nesting > MAX_BUCKET_NESTING {
            return Err(BoltError::BadPage {
                path: self.path().to_path_buf(),
                page: 0,
                problem: format!("buckets nested deeper than {MAX_BUCKET_NESTING}"),
            });
        }
        let mut cursor = self.cursor(bucket);
        cursor.track_pages();
        loop {
            let next = cursor.next();
            for (first, pages) in cursor.take_visited() {
                for p in first..first + pages {
                    self.mark(reached, p)?;
                }
            }
            let Some(entry) = next else {
                return Ok(());
            };
            let entry = entry?;
            visit(nesting, &entry)?;
            if entry.is_bucket {
                let sub = self.open_bucket(&entry)?;
                self.check_bucket(&sub, reached, nesting + 1, visit)?;
            }
        }
    }
}
