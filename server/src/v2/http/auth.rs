//! `/v2/auth/*`: etcd 3.4's v2 auth API (`etcdctl` v2 `user`, `role`,
//! `auth enable|disable`) and the checks it adds to the keys and members
//! APIs once enabled.
//!
//! As in etcd, users, roles and the switch are JSON documents in the v2
//! store's internal keyspace (`/2/users/<name>`, `/2/roles/<name>`,
//! `/2/enabled`), written through raft like any v2 write — so they use v2
//! indexes exactly where etcd's do — and read locally. Credentials are HTTP
//! Basic on every request; bcrypt's verdicts are remembered (bounded, see
//! `auth::verified`) so a v2 client's steady stream of requests does not
//! pay bcrypt each time.

use super::*;
use crate::auth::verified::VerifiedPasswords;
use crate::v2::auth::{AuthError, GUEST_ROLE, ROOT_ROLE, Role, User, auth_err, decode_go};
use crate::v2::error::{KEY_NOT_FOUND, NODE_EXIST};
use crate::v2::{V2Op, V2Request};
use axum::extract::State;
use base64::Engine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Largest user or role document read from a request.
pub const MAX_AUTH_BODY_BYTES: usize = 1 << 20;
/// bcrypt cost of v2 passwords: etcd's v2 auth always uses Go's
/// `bcrypt.DefaultCost`, whatever `--bcrypt-cost` says.
const V2_BCRYPT_COST: u32 = 10;
const AUTH_PREFIX: &str = "/v2/auth";

/// The v2 auth store: users and roles in the internal keyspace.
pub(super) struct V2Auth {
    backend: Arc<dyn V2Backend>,
    /// etcd creates `/2`, `/2/users`, `/2/roles` and `/2/enabled` before
    /// its first auth write (once per process).
    ensured: AtomicBool,
    verified: VerifiedPasswords,
}

/// A failure of a v2 auth operation: etcd's auth error (`{"message":..}`)
/// or a store/raft error (the v2 error body).
enum Failure {
    Auth(AuthError),
    Store(V2Error),
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        Failure::Auth(e)
    }
}

impl From<V2Error> for Failure {
    fn from(e: V2Error) -> Self {
        Failure::Store(e)
    }
}

type Res<T> = Result<T, Failure>;

impl V2Auth {
    pub(super) fn new(backend: Arc<dyn V2Backend>) -> Self {
        V2Auth {
            backend,
            ensured: AtomicBool::new(false),
            verified: VerifiedPasswords::default(),
        }
    }

    fn now(&self) -> i64 {
        self.backend.now_unix_nanos()
    }

    /// Whether v2 auth is on (`/2/enabled` holds JSON `true`).
    pub(super) fn enabled(&self) -> bool {
        let store = self.backend.store().read();
        store
            .internal_value("/2/enabled")
            .and_then(|v| serde_json::from_str::<bool>(v).ok())
            .unwrap_or(false)
    }

    /// A document, read locally or (`quorum`) through raft.
    async fn read(&self, path: &str, quorum: bool) -> Res<Option<String>> {
        if !quorum {
            let store = self.backend.store().read();
            return Ok(store.internal_value(path).map(str::to_string));
        }
        match self
            .backend
            .propose(V2Request::internal(V2Op::QGet, path, self.now()))
            .await
        {
            Ok(a) => Ok(a.event.node.and_then(|n| n.value)),
            Err(e) if e.code == KEY_NOT_FOUND => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write(&self, op: V2Op, path: &str, value: Option<String>) -> Result<(), V2Error> {
        self.ensure_dirs().await?;
        let mut r = V2Request::internal(op, path, self.now());
        r.value = value.unwrap_or_default();
        self.backend.propose(r).await.map(|_| ())
    }

    async fn ensure_dirs(&self) -> Result<(), V2Error> {
        if self.ensured.load(Ordering::Acquire) {
            return Ok(());
        }
        for dir in ["/2", "/2/users", "/2/roles"] {
            let mut r = V2Request::internal(V2Op::Create, dir, self.now());
            r.dir = true;
            match self.backend.propose(r).await {
                Ok(_) => {}
                Err(e) if e.code == NODE_EXIST => {}
                Err(e) => return Err(e),
            }
        }
        let mut r = V2Request::internal(V2Op::Create, "/2/enabled", self.now());
        r.value = "false".into();
        match self.backend.propose(r).await {
            Ok(_) => {}
            Err(e) if e.code == NODE_EXIST => {}
            Err(e) => return Err(e),
        }
        self.ensured.store(true, Ordering::Release);
        Ok(())
    }

    async fn get_user(&self, name: &str, quorum: bool) -> Res<User> {
        let doc = self.read(&format!("/2/users/{name}"), quorum).await?;
        let Some(doc) = doc else {
            return Err(auth_err(404, format!("User {name} does not exist.")).into());
        };
        let u: User = serde_json::from_str(&doc)
            .map_err(|e| V2Error::raft_internal(format!("v2 auth user {name}: {e}")))?;
        Ok(u.with_root_role())
    }

    async fn get_role(&self, name: &str, quorum: bool) -> Res<Role> {
        if name == ROOT_ROLE {
            return Ok(Role::root());
        }
        let doc = self.read(&format!("/2/roles/{name}"), quorum).await?;
        let Some(doc) = doc else {
            return Err(auth_err(404, format!("Role {name} does not exist.")).into());
        };
        serde_json::from_str(&doc)
            .map_err(|e| V2Error::raft_internal(format!("v2 auth role {name}: {e}")).into())
    }

    fn all(&self, dir: &str) -> Vec<String> {
        let store = self.backend.store().read();
        store
            .internal_list(dir)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let pw = password.to_string();
        tokio::task::spawn_blocking(move || {
            crate::auth::password::hash_password(&pw, V2_BCRYPT_COST)
        })
        .await
        .map_err(|e| auth_err(500, e.to_string()))?
        .map_err(|e| auth_err(500, e.to_string()))
    }

    async fn create_user(&self, user: User) -> Res<User> {
        let mut user = user.with_root_role();
        if user.password.is_empty() {
            return Err(auth_err(
                400,
                format!("Cannot create user {} with an empty password", user.user),
            )
            .into());
        }
        user.password = self.hash(&user.password).await?;
        let doc = serde_json::to_string(&user).unwrap_or_default();
        match self
            .write(V2Op::Create, &format!("/2/users/{}", user.user), Some(doc))
            .await
        {
            Ok(()) => {
                tracing::info!(user = %user.user, "v2 auth: created a user");
                Ok(user)
            }
            Err(e) if e.code == NODE_EXIST => {
                Err(auth_err(409, format!("User {} already exists.", user.user)).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn update_user(&self, user: &User) -> Res<User> {
        let old = match self.get_user(&user.user, true).await {
            Ok(u) => u,
            Err(Failure::Auth(e)) if e.status == 404 => {
                return Err(auth_err(404, format!("User {} doesn't exist.", user.user)).into());
            }
            Err(e) => return Err(e),
        };
        let hashed = if user.password.is_empty() {
            None
        } else {
            Some(self.hash(&user.password).await?)
        };
        let new = old.merge(user, |_| Ok(hashed.clone().unwrap_or_default()))?;
        if new == old {
            return Err(auth_err(
                400,
                "User not updated. Use grant/revoke/password to update the user.",
            )
            .into());
        }
        let doc = serde_json::to_string(&new).unwrap_or_default();
        self.write(V2Op::Update, &format!("/2/users/{}", user.user), Some(doc))
            .await?;
        tracing::info!(user = %user.user, "v2 auth: updated a user");
        Ok(new)
    }

    async fn create_role(&self, role: &Role) -> Res<()> {
        if role.role == ROOT_ROLE {
            return Err(root_role_error(&role.role).into());
        }
        let doc = serde_json::to_string(role).unwrap_or_default();
        match self
            .write(V2Op::Create, &format!("/2/roles/{}", role.role), Some(doc))
            .await
        {
            Ok(()) => {
                tracing::info!(role = %role.role, "v2 auth: created a role");
                Ok(())
            }
            Err(e) if e.code == NODE_EXIST => {
                Err(auth_err(409, format!("Role {} already exists.", role.role)).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn update_role(&self, role: &Role) -> Res<Role> {
        if role.role == ROOT_ROLE {
            return Err(root_role_error(&role.role).into());
        }
        let old = match self.get_role(&role.role, true).await {
            Ok(r) => r,
            Err(Failure::Auth(e)) if e.status == 404 => {
                return Err(auth_err(404, format!("Role {} doesn't exist.", role.role)).into());
            }
            Err(e) => return Err(e),
        };
        let new = old.merge(role)?;
        if new == old {
            return Err(auth_err(
                400,
                "Role not updated. Use grant/revoke to update the role.",
            )
            .into());
        }
        let doc = serde_json::to_string(&new).unwrap_or_default();
        self.write(V2Op::Update, &format!("/2/roles/{}", role.role), Some(doc))
            .await?;
        tracing::info!(role = %role.role, "v2 auth: updated a role");
        Ok(new)
    }

    async fn delete(&self, path: &str, missing: AuthError) -> Res<()> {
        match self.write(V2Op::Delete, path, None).await {
            Ok(()) => Ok(()),
            Err(e) if e.code == KEY_NOT_FOUND => Err(missing.into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn enable(&self) -> Res<()> {
        if self.enabled() {
            return Err(auth_err(409, "already enabled").into());
        }
        if self.get_user("root", true).await.is_err() {
            return Err(auth_err(409, "No root user available, please create one").into());
        }
        if self.get_role(GUEST_ROLE, true).await.is_err() {
            tracing::info!("v2 auth: no guest role access found; creating default");
            self.create_role(&Role::guest()).await?;
        }
        self.write(V2Op::Update, "/2/enabled", Some("true".into()))
            .await?;
        tracing::info!("v2 auth: enabled auth");
        Ok(())
    }

    async fn disable(&self) -> Res<()> {
        if !self.enabled() {
            return Err(auth_err(409, "already disabled").into());
        }
        self.write(V2Op::Update, "/2/enabled", Some("false".into()))
            .await?;
        tracing::info!("v2 auth: disabled auth");
        Ok(())
    }

    /// The user whose HTTP Basic credentials the request carries, if they
    /// are valid (etcd's `userFromBasicAuth`).
    async fn basic_user(&self, headers: &HeaderMap) -> Option<User> {
        let (name, password) = basic_auth(headers)?;
        let user = self.get_user(&name, false).await.ok()?;
        let f = self.verified.fingerprint(&name, &password, &user.password);
        if self.verified.contains(&f, Instant::now()) {
            return Some(user);
        }
        let hash = user.password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::password::verify_password(&hash, &password)
        })
        .await
        .unwrap_or(false);
        if !ok {
            tracing::warn!(user = %name, "v2 auth: invalid password");
            return None;
        }
        self.verified.insert(f, Instant::now());
        Some(user)
    }

    /// etcd's `userFromClientCertificate`: with `--client-cert-auth`, the
    /// v2 user named by the verified client certificate's common name.
    async fn cert_user(&self, cn: Option<&str>) -> Option<User> {
        let cn = cn.filter(|c| !c.is_empty())?;
        self.get_user(cn, false).await.ok()
    }

    /// etcd's `hasRootAccess`: auth off, or a user with the root role —
    /// from Basic credentials, or without an `Authorization` header from
    /// the client certificate (`cn`, see [`client_cn`]).
    pub(super) async fn has_root_access(&self, headers: &HeaderMap, cn: Option<&str>) -> bool {
        if !self.enabled() {
            return true;
        }
        let user = if !headers.contains_key(http::header::AUTHORIZATION) && cn.is_some() {
            self.cert_user(cn).await
        } else {
            self.basic_user(headers).await
        };
        match user {
            Some(u) => u.role_names().iter().any(|r| r == ROOT_ROLE),
            None => false,
        }
    }

    /// etcd's `hasWriteRootAccess`: reads are open, writes need root.
    pub(super) async fn has_write_root_access(
        &self,
        method: &Method,
        headers: &HeaderMap,
        cn: Option<&str>,
    ) -> bool {
        *method == Method::GET || *method == Method::HEAD || self.has_root_access(headers, cn).await
    }

    /// etcd's `hasKeyPrefixAccess`: without credentials the client
    /// certificate's user decides, or failing that the guest role (on the
    /// key alone); with them, any of the user's roles.
    pub(super) async fn has_key_access(
        &self,
        method: &Method,
        headers: &HeaderMap,
        cn: Option<&str>,
        key: &str,
        recursive: bool,
    ) -> bool {
        if !self.enabled() {
            return true;
        }
        let write = *method != Method::GET && *method != Method::HEAD;
        let user = if headers.contains_key(http::header::AUTHORIZATION) {
            let Some(user) = self.basic_user(headers).await else {
                return false;
            };
            user
        } else {
            match self.cert_user(cn).await {
                Some(user) => user,
                None => {
                    return match self.get_role(GUEST_ROLE, false).await {
                        Ok(role) => role.has_key_access(key, write),
                        Err(_) => false,
                    };
                }
            }
        };
        for name in user.role_names() {
            let Ok(role) = self.get_role(name, false).await else {
                continue;
            };
            let ok = if recursive {
                role.has_recursive_access(key, write)
            } else {
                role.has_key_access(key, write)
            };
            if ok {
                return true;
            }
        }
        tracing::warn!(user = %user.user, key, "v2 auth: invalid access for user on key");
        false
    }
}

fn root_role_error(name: &str) -> AuthError {
    auth_err(403, format!("Cannot modify role {name}: is root role."))
}

/// The common name of the client certificate the TLS layer verified for
/// this request (`--client-cert-auth`), if any.
pub(super) fn client_cn<B>(req: &http::Request<B>) -> Option<String> {
    req.extensions()
        .get::<crate::tls::PeerIdentity>()
        .and_then(|p| p.common_name.clone())
}

/// Go's `Request.BasicAuth`.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case("basic ") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// etcd's `writeNoAuth`.
pub(super) fn no_auth() -> Response {
    http_error(StatusCode::UNAUTHORIZED, "Insufficient credentials")
}

fn failure_response(f: Failure, cluster: &HeaderValue) -> Response {
    let mut resp = match f {
        Failure::Auth(e) => http_error(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &e.message,
        ),
        Failure::Store(e) => error_response(&e, cluster, false),
    };
    resp.headers_mut()
        .insert("x-etcd-cluster-id", cluster.clone());
    resp
}

/// A JSON body written by Go's `json.Encoder` (trailing newline), with the
/// cluster header.
fn ok_json<T: serde::Serialize>(status: StatusCode, v: &T, cluster: &HeaderValue) -> Response {
    let mut resp = json_response(status, v, true);
    resp.headers_mut()
        .insert("x-etcd-cluster-id", cluster.clone());
    resp
}

/// 200 with no body (etcd's handlers write nothing after a delete).
fn ok_empty(cluster: &HeaderValue) -> Response {
    let mut resp = (StatusCode::OK, [(CONTENT_TYPE, JSON)]).into_response();
    resp.headers_mut()
        .insert("x-etcd-cluster-id", cluster.clone());
    resp
}

fn allow(method: &Method, allowed: &[Method], header: &'static str) -> Option<Response> {
    (!allowed.contains(method)).then(|| method_not_allowed(header))
}

/// `/v2/auth/users` and `/v2/auth/users/<name>`.
pub(super) async fn users(State(st): State<Arc<V2State>>, req: Request) -> Response {
    resource(st, req, Kind::Users).await
}

/// `/v2/auth/roles` and `/v2/auth/roles/<name>`.
pub(super) async fn roles(State(st): State<Arc<V2State>>, req: Request) -> Response {
    resource(st, req, Kind::Roles).await
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Users,
    Roles,
}

async fn resource(st: Arc<V2State>, req: Request, kind: Kind) -> Response {
    let path = match decoded_path(&req) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    if let Some(resp) = redirect_unclean(&path, &req) {
        return resp;
    }
    let cluster = cluster_header(st.backend.as_ref());
    let sub = clean_path(&path[AUTH_PREFIX.len()..]);
    let pieces: Vec<&str> = sub.split('/').collect();
    let method = req.method().clone();
    // `/v2/auth/users` is registered apart from `/v2/auth/users/`: the
    // collection allows GET only.
    if pieces.len() == 2 {
        if let Some(resp) = allow(&method, &[Method::GET], "GET") {
            return resp;
        }
        if !st
            .auth
            .has_root_access(req.headers(), client_cn(&req).as_deref())
            .await
        {
            return no_auth();
        }
        return match kind {
            Kind::Users => list_users(&st.auth, &cluster).await,
            Kind::Roles => list_roles(&st.auth, &cluster).await,
        };
    }
    let [_, _, name] = pieces.as_slice() else {
        return failure_response(auth_err_plain(400, "Invalid path").into(), &cluster);
    };
    let name = name.to_string();
    if let Some(resp) = allow(
        &method,
        &[Method::GET, Method::PUT, Method::DELETE],
        "GET,PUT,DELETE",
    ) {
        return resp;
    }
    if !st
        .auth
        .has_root_access(req.headers(), client_cn(&req).as_deref())
        .await
    {
        return no_auth();
    }
    let body = if method == Method::PUT {
        match axum::body::to_bytes(req.into_body(), MAX_AUTH_BODY_BYTES).await {
            Ok(b) => Some(b),
            Err(_) => {
                return failure_response(
                    auth_err_plain(400, "Invalid JSON in request body.").into(),
                    &cluster,
                );
            }
        }
    } else {
        None
    };
    let r = match kind {
        Kind::Users => for_user(&st.auth, &method, &name, body.as_deref(), &cluster).await,
        Kind::Roles => for_role(&st.auth, &method, &name, body.as_deref(), &cluster).await,
    };
    r.unwrap_or_else(|f| failure_response(f, &cluster))
}

/// An error with etcd's `httptypes.HTTPError` message as is (no "auth: ").
fn auth_err_plain(status: u16, message: &str) -> AuthError {
    AuthError {
        status,
        message: message.to_string(),
    }
}

/// etcd's `userWithRoles`.
#[derive(serde::Serialize)]
struct UserWithRoles {
    user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<Role>,
}

async fn list_users(auth: &V2Auth, cluster: &HeaderValue) -> Response {
    #[derive(serde::Serialize)]
    struct Users {
        users: Option<Vec<UserWithRoles>>,
    }
    let mut out = Vec::new();
    for name in auth.all("/2/users") {
        let user = match auth.get_user(&name, false).await {
            Ok(u) => u,
            Err(f) => return failure_response(f, cluster),
        };
        let mut roles = Vec::new();
        for r in user.role_names() {
            if let Ok(role) = auth.get_role(r, false).await {
                roles.push(role);
            }
        }
        out.push(UserWithRoles {
            user: user.user,
            roles,
        });
    }
    let users = (!out.is_empty()).then_some(out);
    ok_json(StatusCode::OK, &Users { users }, cluster)
}

async fn list_roles(auth: &V2Auth, cluster: &HeaderValue) -> Response {
    #[derive(serde::Serialize)]
    struct Roles {
        roles: Option<Vec<Role>>,
    }
    let mut names = auth.all("/2/roles");
    names.push(ROOT_ROLE.to_string());
    names.sort();
    let mut out = Vec::new();
    for name in names {
        match auth.get_role(&name, false).await {
            Ok(r) => out.push(r),
            Err(f) => return failure_response(f, cluster),
        }
    }
    ok_json(StatusCode::OK, &Roles { roles: Some(out) }, cluster)
}

async fn for_user(
    auth: &V2Auth,
    method: &Method,
    name: &str,
    body: Option<&[u8]>,
    cluster: &HeaderValue,
) -> Res<Response> {
    if *method == Method::GET {
        let user = auth.get_user(name, false).await?;
        let mut roles = Vec::new();
        for r in user.role_names() {
            roles.push(auth.get_role(r, false).await?);
        }
        let out = UserWithRoles {
            user: user.user,
            roles,
        };
        return Ok(ok_json(StatusCode::OK, &out, cluster));
    }
    if *method == Method::DELETE {
        if auth.enabled() && name == "root" {
            return Err(auth_err(403, "Cannot delete root user while auth is enabled.").into());
        }
        let missing = auth_err(404, format!("User {name} does not exist"));
        auth.delete(&format!("/2/users/{name}"), missing).await?;
        tracing::info!(user = name, "v2 auth: deleted a user");
        return Ok(ok_empty(cluster));
    }
    let Some(u) = body.and_then(decode_go::<User>) else {
        return Err(auth_err_plain(400, "Invalid JSON in request body.").into());
    };
    if u.user != name {
        return Err(
            auth_err_plain(400, "User JSON name does not match the name in the URL").into(),
        );
    }
    let no_changes =
        u.grant.as_ref().is_none_or(Vec::is_empty) && u.revoke.as_ref().is_none_or(Vec::is_empty);
    let (mut out, created) = if no_changes {
        if !u.role_names().is_empty() {
            (auth.create_user(u).await?, false)
        } else if auth.get_user(name, true).await.is_ok() {
            (auth.update_user(&u).await?, false)
        } else {
            (auth.create_user(u).await?, true)
        }
    } else {
        if !u.role_names().is_empty() {
            return Err(
                auth_err_plain(400, "User JSON contains both roles and grant/revoke").into(),
            );
        }
        (auth.update_user(&u).await?, false)
    };
    out.password.clear();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(ok_json(status, &out, cluster))
}

async fn for_role(
    auth: &V2Auth,
    method: &Method,
    name: &str,
    body: Option<&[u8]>,
    cluster: &HeaderValue,
) -> Res<Response> {
    if *method == Method::GET {
        let role = auth.get_role(name, false).await?;
        return Ok(ok_json(StatusCode::OK, &role, cluster));
    }
    if *method == Method::DELETE {
        if name == ROOT_ROLE {
            return Err(root_role_error(name).into());
        }
        let missing = auth_err(404, format!("Role {name} doesn't exist."));
        auth.delete(&format!("/2/roles/{name}"), missing).await?;
        tracing::info!(role = name, "v2 auth: deleted a role");
        return Ok(ok_empty(cluster));
    }
    let Some(r) = body.and_then(decode_go::<Role>) else {
        return Err(auth_err_plain(400, "Invalid JSON in request body.").into());
    };
    if r.role != name {
        return Err(
            auth_err_plain(400, "Role JSON name does not match the name in the URL").into(),
        );
    }
    let empty = |p: &Option<crate::v2::auth::Permissions>| p.as_ref().is_none_or(|p| p.is_empty());
    if empty(&r.grant) && empty(&r.revoke) {
        auth.create_role(&r).await?;
        return Ok(ok_json(StatusCode::CREATED, &r, cluster));
    }
    if !r.permissions.is_empty() {
        return Err(
            auth_err_plain(400, "Role JSON contains both permissions and grant/revoke").into(),
        );
    }
    let out = auth.update_role(&r).await?;
    Ok(ok_json(StatusCode::OK, &out, cluster))
}

/// `/v2/auth/enable`: GET shows the switch, PUT turns auth on (a root user
/// must exist; the guest role is created with full access if missing),
/// DELETE turns it off.
pub(super) async fn enable(State(st): State<Arc<V2State>>, req: Request) -> Response {
    let method = req.method().clone();
    if let Some(resp) = allow(
        &method,
        &[Method::GET, Method::PUT, Method::DELETE],
        "GET,PUT,DELETE",
    ) {
        return resp;
    }
    if !st
        .auth
        .has_write_root_access(&method, req.headers(), client_cn(&req).as_deref())
        .await
    {
        return no_auth();
    }
    let cluster = cluster_header(st.backend.as_ref());
    let r = if method == Method::GET {
        #[derive(serde::Serialize)]
        struct Enabled {
            enabled: bool,
        }
        let enabled = st.auth.enabled();
        return ok_json(StatusCode::OK, &Enabled { enabled }, &cluster);
    } else if method == Method::PUT {
        st.auth.enable().await
    } else {
        st.auth.disable().await
    };
    match r {
        Ok(()) => ok_empty(&cluster),
        Err(f) => failure_response(f, &cluster),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_like_go() {
        let mut h = HeaderMap::new();
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:pw:x");
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("basic {enc}")).unwrap(),
        );
        assert_eq!(
            basic_auth(&h),
            Some(("alice".to_string(), "pw:x".to_string()))
        );
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer x"),
        );
        assert_eq!(basic_auth(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic !!"),
        );
        assert_eq!(basic_auth(&h), None);
    }
}
