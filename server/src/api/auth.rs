//! The Auth service, and the layer that tells every client request who is
//! calling.

use super::check_leader;
use super::request_ctx;
use crate::error::Error;
use crate::etcdserver::EtcdServer;
use crate::etcdserver::auth::Credential;
use crate::pb::cairnpb::internal_request::Request as Internal;
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// gRPC metadata key etcd clients put their token in.
const TOKEN_METADATA: &str = "token";

/// Resolves the caller of a gRPC call from its `token` metadata (see
/// [`caller_layer`]).
pub async fn grpc_caller_layer(
    axum::extract::State(srv): axum::extract::State<Arc<EtcdServer>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    caller_layer(srv, true, req, next).await
}

/// Resolves the caller of an HTTP request from its `Authorization` header on
/// the JSON gateway (see [`caller_layer`]).
pub async fn http_caller_layer(
    axum::extract::State(srv): axum::extract::State<Arc<EtcdServer>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    caller_layer(srv, false, req, next).await
}

/// Resolves the caller of a client request (gRPC `token` metadata; the
/// `Authorization` header on the JSON gateway) and runs the request as that
/// caller. A token that does not resolve is refused before any handler
/// runs, with `invalid auth token`, as etcd does.
async fn caller_layer(
    srv: Arc<EtcdServer>,
    is_grpc: bool,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    let header = if is_grpc {
        Some(TOKEN_METADATA)
    } else if path.starts_with("/v3/") || path.starts_with("/v3beta/") {
        Some("authorization")
    } else {
        None
    };
    let token = header
        .and_then(|h| req.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|t| !t.is_empty());
    let (caller, credential) = match token {
        // etcd: without a token, the verified client certificate's common
        // name is the user (`--client-cert-auth`).
        None => {
            let cn = req
                .extensions()
                .get::<crate::tls::PeerIdentity>()
                .and_then(|p| p.common_name.clone())
                .filter(|cn| !cn.is_empty());
            let info = cn.clone().map(|cn| crate::auth::AuthInfo {
                username: cn,
                revision: srv.auth().store.read().revision(),
            });
            (info, cn.map(Credential::CommonName))
        }
        Some(t) => match resolve_token(&srv, &t).await {
            Ok(info) => (Some(info), Some(Credential::Token(t))),
            Err(e) => return refuse(is_grpc, e),
        },
    };
    let mut req = req;
    req.extensions_mut()
        .insert(srv.request_ctx(caller, credential));
    next.run(req).await
}

/// Who a token stands for: a token of etcd's auth, or else one only a policy
/// plugin's authenticator knows (docs/plugins.md).
pub async fn resolve_token(srv: &EtcdServer, token: &str) -> Result<crate::auth::AuthInfo, Error> {
    match srv.resolve_token(token).await {
        Ok(info) => Ok(info),
        Err(e) => crate::etcdserver::policy::authenticate_token(srv, token)
            .await
            .ok_or(e),
    }
}

fn refuse(is_grpc: bool, e: Error) -> axum::response::Response {
    let status = Status::from(e);
    if is_grpc {
        status.into_http::<axum::body::Body>()
    } else {
        super::gateway::error_response(&status)
    }
}

pub struct AuthService {
    pub srv: Arc<EtcdServer>,
}

impl AuthService {
    /// An auth write through raft (the request's message, wrapped by
    /// `wrap`); every such response holds only a header.
    async fn write_inner<T>(
        &self,
        req: Request<T>,
        wrap: impl FnOnce(T) -> Internal,
    ) -> Result<ResponseHeader, Status> {
        let ctx = request_ctx(&self.srv, &req);
        self.srv.auth_write(&ctx, wrap(req.into_inner())).await?;
        Ok(self.srv.header(self.srv.store().current_rev()))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::AuthEnable).await?;
        Ok(Response::new(AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::AuthDisable).await?;
        Ok(Response::new(AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::UserAdd).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::UserDelete).await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::UserChangePassword).await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::UserGrantRole).await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::UserRevokeRole).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::RoleAdd).await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::RoleDelete).await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self.write_inner(req, Internal::RoleGrantPermission).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let header = self
            .write_inner(req, Internal::RoleRevokePermission)
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }

    async fn auth_status(
        &self,
        req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = request_ctx(&self.srv, &req);
        let mut resp = self.srv.auth_read(&ctx, |s, _| Ok(s.status())).await?;
        resp.header = Some(self.srv.header(self.srv.store().current_rev()));
        Ok(Response::new(resp))
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        check_leader(&self.srv, &req)?;
        Ok(Response::new(
            self.srv.authenticate(req.into_inner()).await?,
        ))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = request_ctx(&self.srv, &req);
        let r = req.into_inner();
        let mut resp = self
            .srv
            .auth_read(&ctx, |s, info| {
                s.check_user_get(info, &r.name)?;
                s.user_get(&r)
            })
            .await?;
        resp.header = Some(self.srv.header(self.srv.store().current_rev()));
        Ok(Response::new(resp))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = request_ctx(&self.srv, &req);
        let r = req.into_inner();
        let mut resp = self
            .srv
            .auth_read(&ctx, |s, info| {
                s.authorize_request(info, crate::auth::Access::Admin, b"", b"")?;
                Ok(s.user_list(&r))
            })
            .await?;
        resp.header = Some(self.srv.header(self.srv.store().current_rev()));
        Ok(Response::new(resp))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = request_ctx(&self.srv, &req);
        let r = req.into_inner();
        let mut resp = self
            .srv
            .auth_read(&ctx, |s, info| {
                s.check_role_get(info, &r.role)?;
                s.role_get(&r)
            })
            .await?;
        resp.header = Some(self.srv.header(self.srv.store().current_rev()));
        Ok(Response::new(resp))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = request_ctx(&self.srv, &req);
        let r = req.into_inner();
        let mut resp = self
            .srv
            .auth_read(&ctx, |s, info| {
                s.authorize_request(info, crate::auth::Access::Admin, b"", b"")?;
                Ok(s.role_list(&r))
            })
            .await?;
        resp.header = Some(self.srv.header(self.srv.store().current_rev()));
        Ok(Response::new(resp))
    }
}
