//! Clients waiting for their raft entries to be applied.
//!
//! A proposal registers its request ID here before it enters raft; the apply
//! loop completes it with the result once the entry is applied on this
//! member. The map is sharded so that many concurrent writers do not contend
//! on one lock, and bounded so a flood of writes is refused, not queued.

use crate::error::Error;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

const SHARDS: usize = 16;

type Shard<T> = Mutex<HashMap<u64, oneshot::Sender<Result<T, Error>>>>;

pub struct Waiters<T> {
    shards: [Shard<T>; SHARDS],
    len: AtomicUsize,
    max: usize,
}

impl<T> Waiters<T> {
    pub fn new(max: usize) -> Self {
        Waiters {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            len: AtomicUsize::new(0),
            max,
        }
    }

    #[allow(clippy::indexing_slicing)] // `% SHARDS` keeps it inside the fixed-size array
    fn shard(&self, id: u64) -> &Shard<T> {
        // IDs share their high bits per member; mix the low bits.
        &self.shards[(id as usize ^ (id >> 17) as usize) % SHARDS]
    }

    /// Registers a waiter; fails with `TooManyRequests` when full.
    pub fn register(&self, id: u64) -> Result<oneshot::Receiver<Result<T, Error>>, Error> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::TooManyRequests);
        }
        let (tx, rx) = oneshot::channel();
        if self.shard(id).lock().insert(id, tx).is_some() {
            // Same ID twice would be a generator bug; keep the count honest.
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(rx)
    }

    /// Completes a waiter if one is registered here (entries proposed by
    /// other members have none).
    pub fn complete(&self, id: u64, result: Result<T, Error>) {
        if let Some(tx) = self.shard(id).lock().remove(&id) {
            self.len.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(result);
        }
    }

    pub fn is_registered(&self, id: u64) -> bool {
        self.shard(id).lock().contains_key(&id)
    }

    /// Forgets a waiter whose client gave up.
    pub fn cancel(&self, id: u64) {
        if self.shard(id).lock().remove(&id).is_some() {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_complete_cancel_and_bound() {
        let w: Waiters<u32> = Waiters::new(2);
        let mut a = w.register(1).unwrap();
        let _b = w.register(2).unwrap();
        assert_eq!(w.register(3).unwrap_err(), Error::TooManyRequests);
        w.complete(1, Ok(7));
        assert_eq!(a.try_recv().unwrap(), Ok(7));
        w.cancel(2);
        assert!(w.is_empty());
        w.complete(99, Ok(1)); // unknown: ignored
        assert!(w.register(3).is_ok());
    }
}
