//! etcd 3.4's v2 auth model (`etcdserver/api/v2auth`): users with roles,
//! roles with key patterns to read and write, the `root` and `guest`
//! roles, and the set arithmetic of grants and revokes — everything that
//! does not touch the store. The store side (users and roles as JSON
//! documents under the internal `/2` keyspace) and the HTTP API are in
//! `http::auth`.
//!
//! The JSON shapes are etcd's, `null` for a nil list included, because
//! they are what `/v2/auth/*` returns and what is stored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The role with every permission, always present, never stored.
pub const ROOT_ROLE: &str = "root";
/// The role of requests without credentials; created (full access) when
/// auth is first enabled.
pub const GUEST_ROLE: &str = "guest";

/// A v2 auth failure as etcd's `v2auth.Error`: an HTTP status and a message
/// (most start with "auth: ").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub status: u16,
    pub message: String,
}

pub fn auth_err(status: u16, message: impl Into<String>) -> AuthError {
    AuthError {
        status,
        message: format!("auth: {}", message.into()),
    }
}

/// A stored user, or a user change as clients send it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    #[serde(default)]
    pub user: String,
    /// The bcrypt hash when stored; the new password in a request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// `None` is Go's nil slice, shown as `null`.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Vec<String>>,
}

impl User {
    pub fn role_names(&self) -> &[String] {
        self.roles.as_deref().unwrap_or(&[])
    }

    /// etcd attaches the root role to the user named root whenever it is
    /// read or created.
    pub fn with_root_role(mut self) -> User {
        if self.user == "root" && !self.role_names().iter().any(|r| r == ROOT_ROLE) {
            self.roles
                .get_or_insert_with(Vec::new)
                .push(ROOT_ROLE.into());
        }
        self
    }

    /// etcd's `User.merge`: the stored user `self` with the request `nu`
    /// applied (a new password hashed by `hash`, grants, revokes). A grant
    /// of a held role or a revoke of a missing one is a 409.
    pub fn merge(
        &self,
        nu: &User,
        hash: impl FnOnce(&str) -> Result<String, AuthError>,
    ) -> Result<User, AuthError> {
        if self.user != nu.user {
            return Err(auth_err(
                409,
                format!(
                    "Merging user data with conflicting usernames: {} {}",
                    self.user, nu.user
                ),
            ));
        }
        let password = if nu.password.is_empty() {
            self.password.clone()
        } else {
            hash(&nu.password)?
        };
        let mut roles: BTreeSet<String> = self.role_names().iter().cloned().collect();
        for g in nu.grant.iter().flatten() {
            if !roles.insert(g.clone()) {
                return Err(auth_err(
                    409,
                    format!("Granting duplicate role {g} for user {}", nu.user),
                ));
            }
        }
        for r in nu.revoke.iter().flatten() {
            if !roles.remove(r) {
                return Err(auth_err(
                    409,
                    format!("Revoking ungranted role {r} for user {}", nu.user),
                ));
            }
        }
        Ok(User {
            user: self.user.clone(),
            password,
            roles: Some(roles.into_iter().collect()),
            grant: None,
            revoke: None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RwPermission {
    #[serde(default)]
    pub read: Option<Vec<String>>,
    #[serde(default)]
    pub write: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub kv: RwPermission,
}

impl Permissions {
    pub fn is_empty(&self) -> bool {
        self.kv.read.as_ref().is_none_or(Vec::is_empty)
            && self.kv.write.as_ref().is_none_or(Vec::is_empty)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Role {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Permissions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Permissions>,
}

fn everything() -> Permissions {
    Permissions {
        kv: RwPermission {
            read: Some(vec!["/*".into()]),
            write: Some(vec!["/*".into()]),
        },
    }
}

impl Role {
    pub fn root() -> Role {
        Role {
            role: ROOT_ROLE.into(),
            permissions: everything(),
            ..Role::default()
        }
    }

    pub fn guest() -> Role {
        Role {
            role: GUEST_ROLE.into(),
            permissions: everything(),
            ..Role::default()
        }
    }

    /// etcd's `Role.merge`: grants (a duplicate is a 409), then revokes
    /// (a missing pattern is ignored).
    pub fn merge(&self, n: &Role) -> Result<Role, AuthError> {
        if self.role != n.role {
            return Err(auth_err(
                409,
                format!(
                    "Merging role with conflicting names: {} {}",
                    self.role, n.role
                ),
            ));
        }
        let mut kv = self.permissions.kv.clone();
        if let Some(g) = &n.grant {
            kv = RwPermission {
                read: Some(grant(&kv.read, &g.kv.read, "read")?),
                write: Some(grant(&kv.write, &g.kv.write, "write")?),
            };
        }
        if let Some(r) = &n.revoke {
            kv = RwPermission {
                read: Some(revoke(&kv.read, &r.kv.read)),
                write: Some(revoke(&kv.write, &r.kv.write)),
            };
        }
        Ok(Role {
            role: self.role.clone(),
            permissions: Permissions { kv },
            grant: None,
            revoke: None,
        })
    }

    /// May this role read (or write) `key` itself?
    pub fn has_key_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT_ROLE || self.patterns(write).iter().any(|p| simple_match(p, key))
    }

    /// May this role read (or write) everything under `key`? Only a
    /// pattern ending in `*` grants a subtree.
    pub fn has_recursive_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT_ROLE || self.patterns(write).iter().any(|p| prefix_match(p, key))
    }

    fn patterns(&self, write: bool) -> &[String] {
        let kv = &self.permissions.kv;
        let list = if write { &kv.write } else { &kv.read };
        list.as_deref().unwrap_or(&[])
    }
}

fn grant(
    current: &Option<Vec<String>>,
    add: &Option<Vec<String>>,
    what: &str,
) -> Result<Vec<String>, AuthError> {
    let mut set: BTreeSet<String> = current.iter().flatten().cloned().collect();
    for p in add.iter().flatten() {
        if !set.insert(p.clone()) {
            return Err(auth_err(
                409,
                format!("Granting duplicate {what} permission {p}"),
            ));
        }
    }
    Ok(set.into_iter().collect())
}

fn revoke(current: &Option<Vec<String>>, remove: &Option<Vec<String>>) -> Vec<String> {
    let mut set: BTreeSet<String> = current.iter().flatten().cloned().collect();
    for p in remove.iter().flatten() {
        // etcd logs an ungranted revoke and goes on.
        set.remove(p);
    }
    set.into_iter().collect()
}

/// `pat*` matches keys starting with `pat`; anything else matches only
/// itself. (etcd indexes the pattern's last byte unchecked: an empty
/// pattern panics its handler; here it matches nothing.)
fn simple_match(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => !pattern.is_empty() && key == pattern,
    }
}

fn prefix_match(pattern: &str, key: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|prefix| key.starts_with(prefix))
}

/// Parses a request body as Go's `json.NewDecoder(r.Body).Decode(&v)`
/// does: the first JSON value (anything after it is left unread), object
/// keys matched to fields case-insensitively.
pub fn decode_go<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    let v: serde_json::Value = serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()?;
    serde_json::from_value(lower_keys(v)).ok()
}

/// Every object key lower-cased (all v2 auth field names are lower case),
/// which is Go's case-insensitive field matching for these types.
fn lower_keys(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_lowercase(), lower_keys(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(lower_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_hash(p: &str) -> Result<String, AuthError> {
        Ok(format!("hashed:{p}"))
    }

    #[test]
    fn user_merge_grants_and_revokes() {
        let old = User {
            user: "alice".into(),
            password: "h".into(),
            roles: Some(vec!["a".into()]),
            ..User::default()
        };
        let req = User {
            user: "alice".into(),
            grant: Some(vec!["b".into()]),
            revoke: Some(vec!["a".into()]),
            ..User::default()
        };
        let out = old.merge(&req, no_hash).unwrap();
        assert_eq!(out.roles, Some(vec!["b".to_string()]));
        assert_eq!(out.password, "h");
        let dup = User {
            user: "alice".into(),
            grant: Some(vec!["a".into()]),
            ..User::default()
        };
        assert_eq!(
            old.merge(&dup, no_hash).unwrap_err().message,
            "auth: Granting duplicate role a for user alice"
        );
        let missing = User {
            user: "alice".into(),
            revoke: Some(vec!["zz".into()]),
            ..User::default()
        };
        assert_eq!(old.merge(&missing, no_hash).unwrap_err().status, 409);
        let pw = User {
            user: "alice".into(),
            password: "new".into(),
            ..User::default()
        };
        assert_eq!(old.merge(&pw, no_hash).unwrap().password, "hashed:new");
    }

    #[test]
    fn role_merge_and_matching() {
        let r = Role {
            role: "reader".into(),
            ..Role::default()
        };
        let g = Role {
            role: "reader".into(),
            grant: Some(Permissions {
                kv: RwPermission {
                    read: Some(vec!["/foo/*".into()]),
                    write: None,
                },
            }),
            ..Role::default()
        };
        let r = r.merge(&g).unwrap();
        assert_eq!(
            r.merge(&g).unwrap_err().message,
            "auth: Granting duplicate read permission /foo/*"
        );
        assert!(r.has_key_access("/foo/x", false));
        assert!(!r.has_key_access("/foo/x", true));
        assert!(!r.has_key_access("/bar", false));
        assert!(r.has_recursive_access("/foo/", false));
        let exact = Role {
            role: "e".into(),
            permissions: Permissions {
                kv: RwPermission {
                    read: Some(vec!["/k".into(), String::new()]),
                    write: None,
                },
            },
            ..Role::default()
        };
        assert!(exact.has_key_access("/k", false));
        assert!(!exact.has_recursive_access("/k", false));
        assert!(!exact.has_key_access("", false));
        assert!(Role::root().has_key_access("/anything", true));
    }

    #[test]
    fn go_json_decoding() {
        let u: User = decode_go(br#"{"User":"a","PASSWORD":"p"} trailing"#).unwrap();
        assert_eq!((u.user.as_str(), u.password.as_str()), ("a", "p"));
        assert!(decode_go::<User>(b"{").is_none());
        assert!(decode_go::<User>(br#"{"user":1}"#).is_none());
        // A nil list is `null` on the wire, as Go writes it.
        let s = serde_json::to_string(&Role {
            role: "r".into(),
            ..Role::default()
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"role":"r","permissions":{"kv":{"read":null,"write":null}}}"#
        );
    }
}
