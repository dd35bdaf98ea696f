//! Consistency checksums: CRC-32C (Castagnoli, the checksum etcd's Hash and
//! HashKV use) and the whole-state-machine hash behind `Maintenance.Hash`.
//!
//! The values need not equal etcd's numbers (the stores differ), but every
//! Cairn member holding the same data must compute the same value, so the
//! input is a canonical encoding, never anything member-specific.

use super::{Db, Result, meta};

const POLY: u32 = 0x82F6_3B78; // Castagnoli, bit-reversed.

const TABLE: [u32; 256] = make_table();

const fn make_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// A running CRC-32C.
#[derive(Debug, Clone)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c(!0)
    }
}

impl Crc32c {
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    /// A length-prefixed field, so that field boundaries count: ("ab", "c")
    /// and ("a", "bc") hash differently.
    pub fn field(&mut self, data: &[u8]) {
        self.update(&(data.len() as u64).to_be_bytes());
        self.update(data);
    }

    pub fn finish(&self) -> u32 {
        !self.0
    }
}

/// `Maintenance.Hash`: every record of the state machine (the `kv` and
/// `meta` keyspaces) as one consistent view holds them, in key order.
/// Like etcd's, this hashes the physical store: while a compaction is still
/// deleting old revisions on one member, members can briefly differ.
/// Member-local metadata (applied index, compaction progress) is left out.
pub fn hash_state_machine(db: &Db) -> Result<u32> {
    use fjall::Readable;
    let view = db.db.snapshot();
    let mut h = Crc32c::default();
    for (name, ks, is_meta) in [(&b"kv"[..], &db.kv, false), (&b"meta"[..], &db.meta, true)] {
        h.field(name);
        for guard in view.iter(ks) {
            let (k, v) = guard.into_inner()?;
            if is_meta && meta::is_member_local(&k) {
                continue;
            }
            h.field(&k);
            h.field(&v);
        }
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answers() {
        let mut h = Crc32c::default();
        h.update(b"123456789");
        assert_eq!(h.finish(), 0xE306_9283);
        assert_eq!(Crc32c::default().finish(), 0);
        // 32 zero bytes (RFC 3720, B.4).
        let mut h = Crc32c::default();
        h.update(&[0u8; 32]);
        assert_eq!(h.finish(), 0x8A91_36AA);
        // Feeding in pieces changes nothing.
        let mut a = Crc32c::default();
        a.update(b"1234");
        a.update(b"56789");
        assert_eq!(a.finish(), 0xE306_9283);
    }

    #[test]
    fn state_hash_ignores_member_local_records() {
        let dir = tempfile::tempdir().unwrap();
        let a = Db::open(&dir.path().join("a")).unwrap();
        let b = Db::open(&dir.path().join("b")).unwrap();
        for db in [&a, &b] {
            db.kv.insert(b"k".to_vec(), b"v".to_vec()).unwrap();
            db.meta
                .insert(b"membership".to_vec(), b"m".to_vec())
                .unwrap();
        }
        // Different applied indexes: same hash.
        a.meta.insert(b"applied".to_vec(), vec![1u8; 16]).unwrap();
        b.meta.insert(b"applied".to_vec(), vec![2u8; 16]).unwrap();
        assert_eq!(
            hash_state_machine(&a).unwrap(),
            hash_state_machine(&b).unwrap()
        );
        b.kv.insert(b"k2".to_vec(), b"v".to_vec()).unwrap();
        assert_ne!(
            hash_state_machine(&a).unwrap(),
            hash_state_machine(&b).unwrap()
        );
    }
}
