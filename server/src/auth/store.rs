//! The replicated auth state: users, roles, key permissions, the enabled
//! flag and the auth revision.
//!
//! Every mutation is applied by the apply loop from a committed raft entry,
//! so each member computes the same state from the same entries: nothing in
//! here reads a clock, draws a random number or hashes a password (hashes
//! arrive ready-made, see `password.rs`). Reads (`user_get`, the permission
//! checks) take `&self`, so the lead can keep the store behind a `RwLock`.
//!
//! The auth revision (etcd's `authRevision`) starts at 1 and is bumped by
//! every change that can alter what a token may do, with etcd 3.4.23's
//! exceptions (all checked against it): `AuthEnable` does not bump it, and
//! neither does granting a user a role it already has. Requests carry the
//! revision their token was checked at; a request checked before a change
//! and applied after it fails with `revision of auth store is old`
//! (see [`AuthStore::authorize_request`]).
//!
//! Permission checks read per-user merged interval sets (`perms.rs`) that
//! every mutation recomputes for the users it touches, so the hot path is a
//! hash lookup and a binary search.

use super::password::looks_like_bcrypt;
use super::perms::UserPerms;
use super::{AuthError, ROOT_ROLE, ROOT_USER};
use crate::pb::authpb::{Permission, Role, User, UserAddOptions};
use crate::pb::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusResponse,
    AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
    request_op,
};
use bytes::Bytes;
use prost::Message;
use std::collections::{BTreeMap, HashMap};

/// What a request wants to do, for [`AuthStore::authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Range, Watch, Txn compares, `prev_kv` of writes: READ over
    /// `[key, range_end)`.
    Read,
    /// Put: WRITE on the single key (`range_end` is ignored).
    Put,
    /// DeleteRange: WRITE over `[key, range_end)`.
    DeleteRange,
    /// Auth management, membership changes, defragment, snapshot, hash:
    /// the `root` role (keys are ignored).
    Admin,
}

/// Who sent a request and the auth revision its token stands for (etcd's
/// `AuthInfo`). Build it with `TokenProvider::info`; carry it in the raft
/// entry of a write so apply can check it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

#[derive(Clone, PartialEq, Eq)]
struct UserRecord {
    /// bcrypt hash; empty for users created with `no_password`.
    password: String,
    /// Sorted, no duplicates (etcd keeps them sorted too: `user get` lists
    /// roles in byte order).
    roles: Vec<String>,
    no_password: bool,
}

// Hashes stay out of logs and panic messages.
impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("roles", &self.roles)
            .field("no_password", &self.no_password)
            .finish_non_exhaustive()
    }
}

/// The result of the fast half of a password check; see
/// [`AuthStore::password_check`].
#[derive(Clone)]
pub struct PasswordCheck {
    hash: String,
    revision: u64,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl PasswordCheck {
    /// The auth revision this check was taken at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// What [`super::verified::VerifiedPasswords`] remembers a success by.
    pub fn fingerprint(
        &self,
        cache: &super::verified::VerifiedPasswords,
        user: &str,
        password: &str,
    ) -> super::verified::Fingerprint {
        cache.fingerprint(user, password, &self.hash)
    }

    /// The slow half: bcrypt. Run it without holding the store's lock.
    /// Returns the auth revision the check is valid for: etcd retries
    /// `Authenticate` when the store's revision moved on meanwhile.
    pub fn verify(&self, password: &str) -> Result<u64, AuthError> {
        if super::password::verify_password(&self.hash, password) {
            Ok(self.revision)
        } else {
            Err(AuthError::AuthFailed)
        }
    }
}

/// etcd's auth store, as a deterministic state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, UserRecord>,
    /// Role name → permissions sorted by (key, range_end), no duplicates.
    roles: BTreeMap<String, Vec<Permission>>,
    /// Derived: each user's merged permissions.
    perms: HashMap<String, UserPerms>,
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore {
            enabled: false,
            // etcd commits revision 1 when it creates a fresh auth store.
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            perms: HashMap::new(),
        }
    }
}

/// Version of the [`AuthStore::save`] encoding.
const FORMAT: u32 = 1;

/// The persisted form: one protobuf message holding etcd's own `authpb`
/// records (a user's `password` is its bcrypt hash).
#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    #[prost(uint32, tag = "1")]
    format: u32,
    #[prost(bool, tag = "2")]
    enabled: bool,
    #[prost(uint64, tag = "3")]
    revision: u64,
    #[prost(message, repeated, tag = "4")]
    users: Vec<User>,
    #[prost(message, repeated, tag = "5")]
    roles: Vec<Role>,
}

fn perm_order(a: &Permission, b: &Permission) -> std::cmp::Ordering {
    (&a.key[..], &a.range_end[..]).cmp(&(&b.key[..], &b.range_end[..]))
}

impl AuthStore {
    /// A fresh store: auth disabled, no users or roles, revision 1.
    pub fn new() -> AuthStore {
        AuthStore::default()
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// `AuthStatus` (etcd 3.5+; 3.4 has no such RPC).
    pub fn status(&self) -> AuthStatusResponse {
        AuthStatusResponse {
            header: None,
            enabled: self.enabled,
            auth_revision: self.revision,
        }
    }

    fn bump(&mut self) {
        self.revision = self.revision.saturating_add(1);
    }

    // --- derived permissions ------------------------------------------------

    fn compute(&self, user: &UserRecord) -> UserPerms {
        let root = user
            .roles
            .binary_search_by(|r| r.as_str().cmp(ROOT_ROLE))
            .is_ok();
        let perms = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|ps| ps.iter());
        UserPerms::build(root, perms)
    }

    fn refresh_user(&mut self, name: &str) {
        match self.users.get(name) {
            Some(u) => {
                let p = self.compute(u);
                self.perms.insert(name.to_string(), p);
            }
            None => {
                self.perms.remove(name);
            }
        }
    }

    fn refresh_role_holders(&mut self, role: &str) {
        let holders: Vec<String> = self
            .users
            .iter()
            .filter(|(_, u)| u.roles.iter().any(|r| r == role))
            .map(|(n, _)| n.clone())
            .collect();
        for n in holders {
            self.refresh_user(&n);
        }
    }

    fn refresh_all(&mut self) {
        self.perms = self
            .users
            .iter()
            .map(|(n, u)| (n.clone(), self.compute(u)))
            .collect();
    }

    // --- AuthEnable / AuthDisable -------------------------------------------

    /// Needs user `root` holding role `root` (the role itself need not
    /// exist: a role is "root" by name). Enabling an enabled store is a
    /// no-op; enabling does not bump the revision (as etcd).
    pub fn auth_enable(&mut self, _r: &AuthEnableRequest) -> Result<AuthEnableResponse, AuthError> {
        if self.enabled {
            return Ok(AuthEnableResponse::default());
        }
        let root = self
            .users
            .get(ROOT_USER)
            .ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.iter().any(|r| r == ROOT_ROLE) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(AuthEnableResponse::default())
    }

    /// Disabling bumps the revision. The lead also calls
    /// `TokenProvider::disable` (etcd drops all simple tokens).
    pub fn auth_disable(
        &mut self,
        _r: &AuthDisableRequest,
    ) -> Result<AuthDisableResponse, AuthError> {
        if self.enabled {
            self.enabled = false;
            self.bump();
        }
        Ok(AuthDisableResponse::default())
    }

    // --- users ---------------------------------------------------------------

    /// `hashed_password` must hold the bcrypt hash made by the proposing
    /// member (`prepare_user_add`) and `password` must be empty: plaintext
    /// never belongs in the raft log, and apply never hashes.
    pub fn user_add(&mut self, r: &AuthUserAddRequest) -> Result<AuthUserAddResponse, AuthError> {
        if r.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let password = if no_password {
            String::new()
        } else {
            checked_hash(&r.password, &r.hashed_password)?
        };
        self.users.insert(
            r.name.clone(),
            UserRecord {
                password,
                roles: Vec::new(),
                no_password,
            },
        );
        self.refresh_user(&r.name);
        self.bump();
        Ok(AuthUserAddResponse::default())
    }

    /// Any user may read its own record (as etcd 3.4); see
    /// [`AuthStore::check_user_get`].
    pub fn user_get(&self, r: &AuthUserGetRequest) -> Result<AuthUserGetResponse, AuthError> {
        let u = self.users.get(&r.name).ok_or(AuthError::UserNotFound)?;
        Ok(AuthUserGetResponse {
            header: None,
            roles: u.roles.clone(),
        })
    }

    pub fn user_list(&self, _r: &AuthUserListRequest) -> AuthUserListResponse {
        AuthUserListResponse {
            header: None,
            users: self.users.keys().cloned().collect(),
        }
    }

    /// `root` cannot be deleted while auth is enabled. The lead also calls
    /// `TokenProvider::invalidate_user` (etcd drops the user's simple tokens).
    pub fn user_delete(
        &mut self,
        r: &AuthUserDeleteRequest,
    ) -> Result<AuthUserDeleteResponse, AuthError> {
        if self.enabled && r.name == ROOT_USER {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.users.remove(&r.name).is_none() {
            return Err(AuthError::UserNotFound);
        }
        self.refresh_user(&r.name);
        self.bump();
        Ok(AuthUserDeleteResponse::default())
    }

    /// Stores the new hash (made by `prepare_change_password`). A
    /// `no_password` user stays one: etcd 3.4.23 answers "Password updated"
    /// and still refuses password logins for it (checked). The lead also
    /// calls `TokenProvider::invalidate_user`.
    pub fn user_change_password(
        &mut self,
        r: &AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordResponse, AuthError> {
        if !self.users.contains_key(&r.name) {
            return Err(AuthError::UserNotFound);
        }
        let hash = checked_hash(&r.password, &r.hashed_password)?;
        if let Some(u) = self.users.get_mut(&r.name) {
            u.password = hash;
        }
        self.refresh_user(&r.name);
        self.bump();
        Ok(AuthUserChangePasswordResponse::default())
    }

    /// The role must exist, except `root`, which needs no role record.
    /// Granting a role the user already has changes nothing, not even the
    /// revision (as etcd).
    pub fn user_grant_role(
        &mut self,
        r: &AuthUserGrantRoleRequest,
    ) -> Result<AuthUserGrantRoleResponse, AuthError> {
        let Some(user) = self.users.get(&r.user) else {
            return Err(AuthError::UserNotFound);
        };
        if r.role != ROOT_ROLE && !self.roles.contains_key(&r.role) {
            return Err(AuthError::RoleNotFound);
        }
        let Err(at) = user.roles.binary_search(&r.role) else {
            return Ok(AuthUserGrantRoleResponse::default());
        };
        if let Some(u) = self.users.get_mut(&r.user) {
            u.roles.insert(at, r.role.clone());
        }
        self.refresh_user(&r.user);
        self.bump();
        Ok(AuthUserGrantRoleResponse::default())
    }

    /// `root` cannot lose role `root` while auth is enabled.
    pub fn user_revoke_role(
        &mut self,
        r: &AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse, AuthError> {
        if self.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let Some(user) = self.users.get_mut(&r.name) else {
            return Err(AuthError::UserNotFound);
        };
        let Ok(at) = user.roles.binary_search(&r.role) else {
            return Err(AuthError::RoleNotGranted);
        };
        user.roles.remove(at);
        self.refresh_user(&r.name);
        self.bump();
        Ok(AuthUserRevokeRoleResponse::default())
    }

    // --- roles ---------------------------------------------------------------

    pub fn role_add(&mut self, r: &AuthRoleAddRequest) -> Result<AuthRoleAddResponse, AuthError> {
        if r.name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(&r.name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.roles.insert(r.name.clone(), Vec::new());
        self.refresh_role_holders(&r.name);
        self.bump();
        Ok(AuthRoleAddResponse::default())
    }

    /// Permissions in (key, range_end) order. Users may read roles they
    /// hold (see [`AuthStore::check_role_get`]). `root` without a role
    /// record is "role name not found", as etcd 3.4.
    pub fn role_get(&self, r: &AuthRoleGetRequest) -> Result<AuthRoleGetResponse, AuthError> {
        let perms = self.roles.get(&r.role).ok_or(AuthError::RoleNotFound)?;
        Ok(AuthRoleGetResponse {
            header: None,
            perm: perms.clone(),
        })
    }

    pub fn role_list(&self, _r: &AuthRoleListRequest) -> AuthRoleListResponse {
        AuthRoleListResponse {
            header: None,
            roles: self.roles.keys().cloned().collect(),
        }
    }

    /// `root` cannot be deleted while auth is enabled. Deleting a role takes
    /// it away from every user holding it.
    pub fn role_delete(
        &mut self,
        r: &AuthRoleDeleteRequest,
    ) -> Result<AuthRoleDeleteResponse, AuthError> {
        if self.enabled && r.role == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.roles.remove(&r.role).is_none() {
            return Err(AuthError::RoleNotFound);
        }
        let mut touched = Vec::new();
        for (name, u) in self.users.iter_mut() {
            if let Ok(at) = u.roles.binary_search(&r.role) {
                u.roles.remove(at);
                touched.push(name.clone());
            }
        }
        for n in touched {
            self.refresh_user(&n);
        }
        self.bump();
        Ok(AuthRoleDeleteResponse::default())
    }

    /// Adds the permission, or changes the type of the permission with the
    /// same `[key, range_end)`. Always bumps the revision (as etcd, even
    /// when nothing changed). Any range form is stored, as etcd 3.4 does;
    /// degenerate ones simply grant nothing (`perms.rs`).
    pub fn role_grant_permission(
        &mut self,
        r: &AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse, AuthError> {
        let perm = r.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
        let perms = self.roles.get_mut(&r.name).ok_or(AuthError::RoleNotFound)?;
        let new = Permission {
            perm_type: perm.perm_type,
            key: perm.key.clone(),
            range_end: perm.range_end.clone(),
        };
        match perms.binary_search_by(|p| perm_order(p, &new)) {
            Ok(at) => perms[at].perm_type = new.perm_type,
            Err(at) => perms.insert(at, new),
        }
        self.refresh_role_holders(&r.name);
        self.bump();
        Ok(AuthRoleGrantPermissionResponse::default())
    }

    /// Removes the permission with exactly this `[key, range_end)`; there is
    /// no partial revoke (as etcd: revoking `[a,c)` out of `[a,z)` is
    /// "permission is not granted to the role").
    pub fn role_revoke_permission(
        &mut self,
        r: &AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse, AuthError> {
        let perms = self.roles.get_mut(&r.role).ok_or(AuthError::RoleNotFound)?;
        let Some(at) = perms
            .iter()
            .position(|p| p.key == r.key && p.range_end == r.range_end)
        else {
            return Err(AuthError::PermissionNotGranted);
        };
        perms.remove(at);
        self.refresh_role_holders(&r.role);
        self.bump();
        Ok(AuthRoleRevokePermissionResponse::default())
    }

    // --- Authenticate --------------------------------------------------------

    /// The fast half of `Authenticate`'s password check, on the member that
    /// received it (etcd's `CheckPassword`): copies the hash so bcrypt can
    /// run without the lock. Errors: auth disabled, unknown user (reported
    /// as a failed login), `no_password` user.
    pub fn password_check(&self, name: &str) -> Result<PasswordCheck, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let u = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if u.no_password {
            return Err(AuthError::NoPasswordUser);
        }
        Ok(PasswordCheck {
            hash: u.password.clone(),
            revision: self.revision,
        })
    }

    /// `Authenticate` as applied from raft on every member: re-checks that
    /// the login is still possible and returns the auth revision to put in
    /// the token. The password was checked before proposing.
    pub fn authenticate(&self, name: &str) -> Result<u64, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let u = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if u.no_password {
            return Err(AuthError::NoPasswordUser);
        }
        Ok(self.revision)
    }

    // --- permission checks ---------------------------------------------------

    /// The decision point: may `principal` do `op` on `[key, range_end)`?
    ///
    /// Everything is allowed while auth is disabled. With auth enabled: no
    /// principal is `user name is empty`; the `root` role may do anything;
    /// an unknown user is `permission denied` for key access and `user name
    /// not found` for admin operations (as etcd 3.4); otherwise every key of
    /// the range must be covered by the union of the user's grants of that
    /// type (`perms.rs` has the range forms). This checks permissions only;
    /// [`AuthStore::authorize_request`] adds etcd's auth-revision check.
    pub fn authorize(
        &self,
        principal: Option<&str>,
        op: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(user) = principal.filter(|u| !u.is_empty()) else {
            return Err(AuthError::UserEmpty);
        };
        let Some(p) = self.perms.get(user) else {
            return Err(match op {
                Access::Admin => AuthError::UserNotFound,
                _ => AuthError::PermissionDenied,
            });
        };
        if p.root {
            return Ok(());
        }
        let allowed = match op {
            Access::Read => p.read.covers(key, range_end),
            Access::Put => p.write.covers(key, b""),
            Access::DeleteRange => p.write.covers(key, range_end),
            Access::Admin => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// READ over `[key, range_end)`.
    pub fn check_range(&self, user: &str, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.authorize(Some(user), Access::Read, key, range_end)
    }

    /// WRITE on `key`.
    pub fn check_put(&self, user: &str, key: &[u8]) -> Result<(), AuthError> {
        self.authorize(Some(user), Access::Put, key, b"")
    }

    /// WRITE over `[key, range_end)`.
    pub fn check_delete_range(
        &self,
        user: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.authorize(Some(user), Access::DeleteRange, key, range_end)
    }

    /// The `root` role.
    pub fn check_admin(&self, user: &str) -> Result<(), AuthError> {
        self.authorize(Some(user), Access::Admin, b"", b"")
    }

    /// etcd's full check of a request, with the auth revision: what apply
    /// runs for a write (with the [`AuthInfo`] carried in its raft entry)
    /// and what the read path runs before a Range or Watch.
    ///
    /// For key access (etcd 3.4 `isOpPermitted`): no token, or revision 0,
    /// is `user name is empty`; a token revision older than the store's is
    /// `revision of auth store is old` (clientv3 then re-authenticates and
    /// retries); then [`AuthStore::authorize`]. Admin checks do not look at
    /// the revision (etcd 3.4 `IsAdminPermitted`; checked: an old token
    /// still lists users).
    pub fn authorize_request(
        &self,
        info: Option<&AuthInfo>,
        op: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if op == Access::Admin {
            return self.authorize(info.map(|i| i.username.as_str()), op, key, range_end);
        }
        let Some(info) = info.filter(|i| i.revision != 0) else {
            return Err(AuthError::UserEmpty);
        };
        if info.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        self.authorize(Some(&info.username), op, key, range_end)
    }

    /// For reads served without raft (etcd's `doSerialize`): after the data
    /// was read, fail with `revision of auth store is old` if the auth store
    /// changed since the request was checked, so a revoked permission never
    /// leaks data read concurrently with the revoke.
    pub fn check_unchanged(&self, info: Option<&AuthInfo>) -> Result<(), AuthError> {
        match info {
            Some(i) if i.revision != 0 && i.revision != self.revision => {
                Err(AuthError::AuthOldRevision)
            }
            _ => Ok(()),
        }
    }

    /// Range: READ over its range.
    pub fn check_range_request(
        &self,
        info: Option<&AuthInfo>,
        r: &RangeRequest,
    ) -> Result<(), AuthError> {
        self.authorize_request(info, Access::Read, &r.key, &r.range_end)
    }

    /// Put: WRITE on the key, plus READ on it with `prev_kv` (as etcd).
    /// A Put that attaches a lease also needs WRITE on every key already
    /// attached to that lease: see [`AuthStore::check_keys_writable`].
    pub fn check_put_request(
        &self,
        info: Option<&AuthInfo>,
        r: &PutRequest,
    ) -> Result<(), AuthError> {
        self.authorize_request(info, Access::Put, &r.key, b"")?;
        if r.prev_kv {
            self.authorize_request(info, Access::Read, &r.key, b"")?;
        }
        Ok(())
    }

    /// DeleteRange: WRITE over the range, plus READ with `prev_kv`.
    pub fn check_delete_range_request(
        &self,
        info: Option<&AuthInfo>,
        r: &DeleteRangeRequest,
    ) -> Result<(), AuthError> {
        self.authorize_request(info, Access::DeleteRange, &r.key, &r.range_end)?;
        if r.prev_kv {
            self.authorize_request(info, Access::Read, &r.key, &r.range_end)?;
        }
        Ok(())
    }

    /// Txn: READ for every compare, and every operation of both branches
    /// checked as if sent alone, whichever branch will run (as etcd). Two
    /// deliberate differences from etcd 3.4, both stricter: nested txns are
    /// checked recursively, and a Put with `prev_kv` inside a txn needs
    /// READ too (etcd 3.4 checks neither).
    pub fn check_txn(&self, info: Option<&AuthInfo>, t: &TxnRequest) -> Result<(), AuthError> {
        self.check_txn_depth(info, t, 0)
    }

    fn check_txn_depth(
        &self,
        info: Option<&AuthInfo>,
        t: &TxnRequest,
        depth: usize,
    ) -> Result<(), AuthError> {
        // Txns nest only as deep as the request size allows; refuse absurd
        // nesting instead of recursing without bound.
        if depth > 64 {
            return Err(AuthError::PermissionDenied);
        }
        for c in &t.compare {
            self.authorize_request(info, Access::Read, &c.key, &c.range_end)?;
        }
        for op in t.success.iter().chain(t.failure.iter()) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => self.check_range_request(info, r)?,
                Some(request_op::Request::RequestPut(r)) => self.check_put_request(info, r)?,
                Some(request_op::Request::RequestDeleteRange(r)) => {
                    self.check_delete_range_request(info, r)?
                }
                Some(request_op::Request::RequestTxn(r)) => {
                    self.check_txn_depth(info, r, depth + 1)?
                }
                None => {}
            }
        }
        Ok(())
    }

    /// WRITE on each key (etcd's lease rule: revoking a lease, or putting a
    /// key with a lease, needs WRITE on every key attached to the lease).
    pub fn check_keys_writable<'a>(
        &self,
        info: Option<&AuthInfo>,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), AuthError> {
        for k in keys {
            self.authorize_request(info, Access::Put, k, b"")?;
        }
        Ok(())
    }

    /// `UserGet`: admins, and any user asking about itself (etcd 3.4).
    pub fn check_user_get(&self, info: Option<&AuthInfo>, name: &str) -> Result<(), AuthError> {
        match self.authorize_request(info, Access::Admin, b"", b"") {
            Err(_) if info.is_some_and(|i| i.username == name) => Ok(()),
            other => other,
        }
    }

    /// `RoleGet`: admins, and users holding the role (etcd 3.4).
    pub fn check_role_get(&self, info: Option<&AuthInfo>, role: &str) -> Result<(), AuthError> {
        match self.authorize_request(info, Access::Admin, b"", b"") {
            Err(_) if info.is_some_and(|i| self.has_role(&i.username, role)) => Ok(()),
            other => other,
        }
    }

    /// Does `user` hold `role`?
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.binary_search_by(|r| r.as_str().cmp(role)).is_ok())
    }

    // --- persistence ---------------------------------------------------------

    /// The whole state as one opaque, deterministic record (equal states
    /// give equal bytes): a protobuf message holding a format number, the
    /// enabled flag, the revision, and etcd's own `authpb.User` /
    /// `authpb.Role` records sorted by name (a user's `password` is its
    /// bcrypt hash, `options.no_password` its flag; permissions sorted by
    /// key and range end).
    pub fn save(&self) -> Vec<u8> {
        self.snapshot().encode_to_vec()
    }

    /// etcd's own records of this store — what its `auth`, `authUsers`
    /// and `authRoles` buckets hold: (enabled, revision, users, roles),
    /// sorted by name.
    pub fn etcd_records(&self) -> (bool, u64, Vec<User>, Vec<Role>) {
        let s = self.snapshot();
        (s.enabled, s.revision, s.users, s.roles)
    }

    /// A store from etcd's records (see [`AuthStore::etcd_records`]), with
    /// [`AuthStore::load`]'s checks. etcd starts counting at revision 1.
    pub fn from_etcd_records(
        enabled: bool,
        revision: u64,
        users: Vec<User>,
        roles: Vec<Role>,
    ) -> Result<AuthStore, AuthError> {
        let snap = Snapshot {
            format: FORMAT,
            enabled,
            revision: revision.max(1),
            users,
            roles,
        };
        AuthStore::load(&snap.encode_to_vec())
    }

    fn snapshot(&self) -> Snapshot {
        let users = self
            .users
            .iter()
            .map(|(name, u)| User {
                name: Bytes::copy_from_slice(name.as_bytes()),
                password: Bytes::copy_from_slice(u.password.as_bytes()),
                roles: u.roles.clone(),
                options: u
                    .no_password
                    .then_some(UserAddOptions { no_password: true }),
            })
            .collect();
        let roles = self
            .roles
            .iter()
            .map(|(name, perms)| Role {
                name: Bytes::copy_from_slice(name.as_bytes()),
                key_permission: perms.clone(),
            })
            .collect();
        Snapshot {
            format: FORMAT,
            enabled: self.enabled,
            revision: self.revision,
            users,
            roles,
        }
    }

    /// Rebuilds a store from [`AuthStore::save`]'s bytes. Refuses anything
    /// it cannot read faithfully (undecodable bytes, an unknown format,
    /// duplicate or non-UTF-8 names) rather than guess.
    pub fn load(bytes: &[u8]) -> Result<AuthStore, AuthError> {
        let corrupt = |what: String| AuthError::Internal(format!("corrupt auth state: {what}"));
        let snap = Snapshot::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        if snap.format != FORMAT {
            return Err(corrupt(format!("unknown format {}", snap.format)));
        }
        if snap.revision == 0 {
            return Err(corrupt("revision 0".into()));
        }
        let name_of = |b: &Bytes| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| corrupt("name is not UTF-8".into()))
        };
        let mut store = AuthStore {
            enabled: snap.enabled,
            revision: snap.revision,
            ..AuthStore::default()
        };
        for r in snap.roles {
            let name = name_of(&r.name)?;
            let mut perms = r.key_permission;
            perms.sort_by(perm_order);
            perms.dedup_by(|a, b| perm_order(a, b).is_eq());
            if store.roles.insert(name.clone(), perms).is_some() {
                return Err(corrupt(format!("duplicate role {name:?}")));
            }
        }
        for u in snap.users {
            let name = name_of(&u.name)?;
            let password = String::from_utf8(u.password.to_vec())
                .map_err(|_| corrupt(format!("password hash of {name:?} is not UTF-8")))?;
            let mut roles = u.roles;
            roles.sort();
            roles.dedup();
            let rec = UserRecord {
                password,
                roles,
                no_password: u.options.is_some_and(|o| o.no_password),
            };
            if store.users.insert(name.clone(), rec).is_some() {
                return Err(corrupt(format!("duplicate user {name:?}")));
            }
        }
        store.refresh_all();
        Ok(store)
    }
}

/// The hash to store for a user-add or change-password request reaching
/// apply: the proposer must have replaced the password by its hash.
fn checked_hash(password: &str, hashed: &str) -> Result<String, AuthError> {
    if !password.is_empty() {
        return Err(AuthError::Internal(
            "plaintext password in a replicated request".into(),
        ));
    }
    if !looks_like_bcrypt(hashed) {
        return Err(AuthError::Internal(
            "password was not hashed before proposing".into(),
        ));
    }
    Ok(hashed.to_string())
}

/// Run on the member that received `UserAdd`, before proposing: hashes the
/// password into `hashed_password` and clears `password` (nothing to hash
/// for a `no_password` user). Also fails fast on an empty name.
pub fn prepare_user_add(r: &mut AuthUserAddRequest, bcrypt_cost: u32) -> Result<(), AuthError> {
    if r.name.is_empty() {
        return Err(AuthError::UserEmpty);
    }
    let password = std::mem::take(&mut r.password);
    if r.options.as_ref().is_some_and(|o| o.no_password) {
        r.hashed_password.clear();
    } else {
        r.hashed_password = super::password::hash_password(&password, bcrypt_cost)?;
    }
    Ok(())
}

/// Run on the member that received `UserChangePassword`, before proposing.
pub fn prepare_change_password(
    r: &mut AuthUserChangePasswordRequest,
    bcrypt_cost: u32,
) -> Result<(), AuthError> {
    let password = std::mem::take(&mut r.password);
    r.hashed_password = super::password::hash_password(&password, bcrypt_cost)?;
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
