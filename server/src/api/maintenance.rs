//! The Maintenance service. Status is served; the rest answers etcd's
//! `Unimplemented` until its issue lands (generated default methods).

use super::{ETCD_COMPAT_VERSION, check_leader};
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{StatusRequest, StatusResponse};
use crate::server::EtcdServer;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tonic::{Request, Response, Status};

pub struct MaintenanceService {
    pub srv: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let srv = &self.srv;
        let st = &srv.status;
        let db_size = srv.db.disk_space() as i64;
        let is_learner = srv
            .membership
            .member(srv.member_id)
            .is_some_and(|m| m.is_learner);
        Ok(Response::new(StatusResponse {
            header: Some(srv.header(srv.store.current_rev())),
            version: ETCD_COMPAT_VERSION.to_string(),
            db_size,
            leader: st.leader(),
            raft_index: st.last_index.load(Ordering::Acquire),
            raft_term: st.term(),
            raft_applied_index: st.applied.load(Ordering::Acquire),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner,
            ..Default::default()
        }))
    }
}
