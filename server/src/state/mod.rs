//! Deterministic semantics with no threads: what a request does to the
//! replicated state, computed the same way on every member — etcd's txn
//! rules and request checks, the lease table, the member table.

pub mod lease;
pub mod membership;
pub mod txn;
mod txn_check;

/// The key after every key starting with `prefix` (etcd's prefix range end).
pub fn prefix_end(prefix: &[u8]) -> bytes::Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return bytes::Bytes::from(end);
        }
    }
    bytes::Bytes::from_static(b"\0")
}
