//! The Cluster service. MemberList is served; runtime membership changes
//! answer etcd's `Unimplemented` until their issue lands.

use super::check_leader;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{MemberListRequest, MemberListResponse};
use crate::server::EtcdServer;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ClusterService {
    pub srv: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        check_leader(&self.srv, &req)?;
        if req.get_ref().linearizable {
            self.srv.linearizable_read_notify().await?;
        }
        let mut header = self.srv.header(0);
        // etcd leaves the revision out of MemberList's header.
        header.revision = 0;
        Ok(Response::new(MemberListResponse {
            header: Some(header),
            members: self.srv.membership.api_members(),
        }))
    }
}
