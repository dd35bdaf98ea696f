//! The replicated membership table, mirrored in memory.
//!
//! The durable copy is the `membership` record in the state machine's
//! metadata, written by the apply loop; this mirror is refreshed after each
//! apply batch that changed it, and after a snapshot is installed.

use crate::pb::cairnpb::{MemberRecord, Membership as MembershipPb};
use crate::pb::etcdserverpb::Member;
use crate::storage::{self, Db};
use parking_lot::RwLock;

pub struct Membership {
    inner: RwLock<MembershipPb>,
}

impl Membership {
    pub fn new(m: MembershipPb) -> Membership {
        Membership {
            inner: RwLock::new(m),
        }
    }

    pub fn reload(&self, db: &Db) -> storage::Result<()> {
        if let Some(m) = storage::meta::membership(db)? {
            *self.inner.write() = m;
        }
        Ok(())
    }

    pub fn set(&self, m: MembershipPb) {
        *self.inner.write() = m;
    }

    pub fn snapshot(&self) -> MembershipPb {
        self.inner.read().clone()
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.read().cluster_id
    }

    pub fn member(&self, id: u64) -> Option<MemberRecord> {
        self.inner
            .read()
            .members
            .iter()
            .find(|m| m.id == id)
            .cloned()
    }

    /// Whether `id` is a current member (voter or learner).
    pub fn contains(&self, id: u64) -> bool {
        self.inner.read().members.iter().any(|m| m.id == id)
    }

    pub fn peer_urls(&self, id: u64) -> Vec<String> {
        self.member(id).map(|m| m.peer_urls).unwrap_or_default()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.inner.read().members.iter().map(|m| m.id).collect()
    }

    /// Members as the Cluster API returns them, ordered by ID like etcd.
    pub fn api_members(&self) -> Vec<Member> {
        let mut out: Vec<Member> = self
            .inner
            .read()
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect();
        out.sort_by_key(|m| m.id);
        out
    }
}
