//! Page images: the 16-byte header and the branch/leaf element arrays.
//!
//! Element offsets (`pos`) are relative to the element header's own
//! address. Every accessor checks its offsets against the image and returns
//! a static description of what is wrong instead of indexing out of bounds.

use bytes::Bytes;

pub(crate) const PAGE_HEADER_BYTES: usize = 16;
/// Branch and leaf element headers are both 16 bytes.
pub(crate) const ELEMENT_BYTES: usize = 16;
/// `root u64 | sequence u64` at the start of a bucket value.
pub(crate) const BUCKET_HEADER_BYTES: usize = 16;

pub(crate) const FLAG_BRANCH: u16 = 0x01;
pub(crate) const FLAG_LEAF: u16 = 0x02;
pub(crate) const FLAG_META: u16 = 0x04;
pub(crate) const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a nested bucket.
pub(crate) const BUCKET_LEAF_FLAG: u32 = 0x01;

/// bbolt's page header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(b: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: le_u64(b, 0)?,
            flags: le_u16(b, 8)?,
            count: le_u16(b, 10)?,
            overflow: le_u32(b, 12)?,
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..10].copy_from_slice(&self.flags.to_le_bytes());
        b[10..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

pub(crate) fn le_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// A branch or leaf node: a page span read from the file, or the page
/// image inside an inline bucket's value.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The page this node is (or, for an inline bucket, the page holding it).
    pub page: u64,
    pub is_leaf: bool,
    pub count: usize,
    pub data: Bytes,
}

/// One leaf element.
#[derive(Debug, Clone)]
pub(crate) struct LeafElem {
    pub flags: u32,
    pub key: Bytes,
    pub value: Bytes,
}

impl Node {
    /// Checks the header of a node image. `expect_id` is the page id the
    /// header must carry (None for inline pages, whose id is 0).
    pub fn parse(data: Bytes, page: u64, expect_id: Option<u64>) -> Result<Node, String> {
        let h = PageHeader::parse(&data).ok_or("page header beyond the end of the data")?;
        if let Some(id) = expect_id
            && h.id != id
        {
            return Err(format!("header carries page id {}", h.id));
        }
        let is_leaf = match h.flags {
            FLAG_LEAF => true,
            FLAG_BRANCH => false,
            f => {
                return Err(format!(
                    "page type {f:#x} where a branch or leaf page belongs"
                ));
            }
        };
        let count = usize::from(h.count);
        if !is_leaf && count == 0 {
            return Err("empty branch page".into());
        }
        let elems_end = PAGE_HEADER_BYTES + count * ELEMENT_BYTES;
        if elems_end > data.len() {
            return Err(format!(
                "{count} elements do not fit in {} bytes",
                data.len()
            ));
        }
        Ok(Node {
            page,
            is_leaf,
            count,
            data,
        })
    }

    fn elems_end(&self) -> usize {
        PAGE_HEADER_BYTES + self.count * ELEMENT_BYTES
    }

    /// Byte range of a `len`-byte field `pos` bytes after element `i`'s header.
    fn field(&self, i: usize, pos: u32, len: u32) -> Result<(usize, usize), &'static str> {
        let elem = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        let start = elem.checked_add(pos as usize).ok_or("offset overflows")?;
        let end = start.checked_add(len as usize).ok_or("length overflows")?;
        if start < self.elems_end() {
            return Err("data offset points into the element headers");
        }
        if end > self.data.len() {
            return Err("data runs past the end of the page");
        }
        Ok((start, end))
    }

    /// The key of element `i` (branch or leaf).
    pub fn key(&self, i: usize) -> Result<&[u8], &'static str> {
        let (s, e) = self.key_range(i)?;
        Ok(&self.data[s..e])
    }

    fn key_range(&self, i: usize) -> Result<(usize, usize), &'static str> {
        if i >= self.count {
            return Err("element index past count");
        }
        let base = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        let d = &self.data;
        let (pos, ksize) = if self.is_leaf {
            (le_u32(d, base + 4), le_u32(d, base + 8))
        } else {
            (le_u32(d, base), le_u32(d, base + 4))
        };
        let (pos, ksize) = (pos.ok_or("truncated")?, ksize.ok_or("truncated")?);
        if ksize == 0 {
            return Err("empty key");
        }
        self.field(i, pos, ksize)
    }

    /// Element `i` of a leaf.
    pub fn leaf(&self, i: usize) -> Result<LeafElem, &'static str> {
        let (ks, ke) = self.key_range(i)?;
        let base = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        let flags = le_u32(&self.data, base).ok_or("truncated")?;
        let vsize = le_u32(&self.data, base + 12).ok_or("truncated")?;
        let ve = ke.checked_add(vsize as usize).ok_or("length overflows")?;
        if ve > self.data.len() {
            return Err("value runs past the end of the page");
        }
        Ok(LeafElem {
            flags,
            key: self.data.slice(ks..ke),
            value: self.data.slice(ke..ve),
        })
    }

    /// The child page of branch element `i`.
    pub fn child(&self, i: usize) -> Result<u64, &'static str> {
        if i >= self.count {
            return Err("element index past count");
        }
        le_u64(&self.data, PAGE_HEADER_BYTES + i * ELEMENT_BYTES + 8).ok_or("truncated")
    }

    /// Index of the first element whose key is >= `target` (`count` if none).
    pub fn lower_bound(&self, target: &[u8]) -> Result<(usize, bool), (usize, &'static str)> {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = self.key(mid).map_err(|p| (mid, p))?;
            if k < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let exact = lo < self.count && self.key(lo).map_err(|p| (lo, p))? == target;
        Ok((lo, exact))
    }
}

/// Builds node images for the writer: elements first, then keys and values
/// in element order, as bbolt's `node.write` lays them out.
#[derive(Debug, Default)]
pub(crate) struct NodeBuilder {
    /// `(flags, key length, value length, child page)` per element.
    elems: Vec<(u32, u32, u32, u64)>,
    data: Vec<u8>,
}

impl NodeBuilder {
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    /// Bytes of the image: header, element headers, data.
    pub fn size(&self) -> usize {
        PAGE_HEADER_BYTES + self.elems.len() * ELEMENT_BYTES + self.data.len()
    }

    pub fn first_key(&self) -> &[u8] {
        match self.elems.first() {
            Some(&(_, k, _, _)) => &self.data[..k as usize],
            None => &[],
        }
    }

    pub fn push_leaf(&mut self, flags: u32, key: &[u8], value: &[u8]) {
        self.elems
            .push((flags, key.len() as u32, value.len() as u32, 0));
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
    }

    pub fn push_branch(&mut self, key: &[u8], child: u64) {
        self.elems.push((0, key.len() as u32, 0, child));
        self.data.extend_from_slice(key);
    }

    pub fn clear(&mut self) {
        self.elems.clear();
        self.data.clear();
    }

    /// Appends the image to `out`, padded with zeros to `span_bytes`
    /// (`span_bytes` >= `size()`).
    pub fn write(
        &self,
        id: u64,
        is_leaf: bool,
        overflow: u32,
        span_bytes: usize,
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        out.resize(
            start + PAGE_HEADER_BYTES + self.elems.len() * ELEMENT_BYTES,
            0,
        );
        PageHeader {
            id,
            flags: if is_leaf { FLAG_LEAF } else { FLAG_BRANCH },
            count: self.elems.len() as u16,
            overflow,
        }
        .write(&mut out[start..]);
        let mut data_off = self.elems.len() * ELEMENT_BYTES;
        for (i, &(flags, klen, vlen, child)) in self.elems.iter().enumerate() {
            let e = start + PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
            let pos = (data_off - i * ELEMENT_BYTES) as u32;
            if is_leaf {
                out[e..e + 4].copy_from_slice(&flags.to_le_bytes());
                out[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
                out[e + 8..e + 12].copy_from_slice(&klen.to_le_bytes());
                out[e + 12..e + 16].copy_from_slice(&vlen.to_le_bytes());
            } else {
                out[e..e + 4].copy_from_slice(&pos.to_le_bytes());
                out[e + 4..e + 8].copy_from_slice(&klen.to_le_bytes());
                out[e + 8..e + 16].copy_from_slice(&child.to_le_bytes());
            }
            data_off += klen as usize + vlen as usize;
        }
        out.extend_from_slice(&self.data);
        out.resize(start + span_bytes, 0);
    }
}
