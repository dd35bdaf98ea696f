//! The Cluster service: member list and runtime membership changes (the
//! changes themselves live in `server::cluster`).

use super::check_leader;
use crate::etcdserver::EtcdServer;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ClusterService {
    pub srv: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_admin(&ctx)?;
        Ok(Response::new(
            self.srv.member_add(&ctx, req.into_inner()).await?,
        ))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_admin(&ctx)?;
        Ok(Response::new(
            self.srv.member_remove(&ctx, req.into_inner()).await?,
        ))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_admin(&ctx)?;
        Ok(Response::new(
            self.srv.member_update(&ctx, req.into_inner()).await?,
        ))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_admin(&ctx)?;
        Ok(Response::new(
            self.srv.member_promote(&ctx, req.into_inner()).await?,
        ))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        check_leader(&self.srv, &req)?;
        if req.get_ref().linearizable {
            let ctx = super::request_ctx(&self.srv, &req);
            self.srv.linearizable_read_until(ctx.deadline()).await?;
        }
        let mut header = self.srv.header(0);
        // etcd leaves the revision out of MemberList's header.
        header.revision = 0;
        Ok(Response::new(MemberListResponse {
            header: Some(header),
            members: self.srv.membership().api_members(),
        }))
    }
}
