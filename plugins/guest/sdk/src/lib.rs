//! Write Cairn policy plugins in Rust.
//!
//! A plugin is a `cdylib` built for `wasm32-wasip2`. Implement the trait of
//! each hook you want ([`Validator`], [`Authenticator`], [`Authorizer`]) on a
//! type and export it with the matching macro:
//!
//! ```ignore
//! use cairn_plugin_sdk::{Validator, Verdict, WriteRequest, export_validator};
//!
//! struct NoEmptyValues;
//!
//! impl Validator for NoEmptyValues {
//!     fn validate(request: WriteRequest) -> Verdict {
//!         match request.value {
//!             Some(v) if v.is_empty() => Verdict::deny("empty values are not allowed"),
//!             _ => Verdict::Allow,
//!         }
//!     }
//! }
//!
//! export_validator!(NoEmptyValues);
//! ```
//!
//! One type may implement several hooks; call one export macro per hook.
//! Cairn discovers the hooks from the component's exports.
//!
//! [`host`] has what a plugin can ask Cairn for: [`host::get`] (a key at the
//! request's revision), [`host::config`] (the operator's settings) and
//! logging. Nothing else is reachable: no files, network, environment or
//! clocks. Every call runs in a fresh instance, so statics do not survive
//! from one call to the next.

/// Generated bindings. One module per hook world, all sharing the types and
/// host functions of the first, so a type implementing several hooks sees
/// one `Verdict`, one `WriteRequest`, ... Each world's export macro carries
/// that world's component-type section, so a plugin's component exports
/// exactly the hooks it exported with the macros.
#[doc(hidden)]
pub mod __bindings {
    pub mod validator {
        wit_bindgen::generate!({
            world: "validator",
            path: "../../wit",
            pub_export_macro: true,
            generate_unused_types: true,
        });
    }

    pub mod authenticator {
        wit_bindgen::generate!({
            world: "authenticator",
            path: "../../wit",
            pub_export_macro: true,
            with: {
                "cairn:policy/types@0.1.0": crate::__bindings::validator::cairn::policy::types,
                "cairn:policy/host@0.1.0": crate::__bindings::validator::cairn::policy::host,
            },
        });
    }

    pub mod authorizer {
        wit_bindgen::generate!({
            world: "authorizer",
            path: "../../wit",
            pub_export_macro: true,
            with: {
                "cairn:policy/types@0.1.0": crate::__bindings::validator::cairn::policy::types,
                "cairn:policy/host@0.1.0": crate::__bindings::validator::cairn::policy::host,
            },
        });
    }
}

pub use __bindings::validator::cairn::policy::types::{
    Access, AccessRequest, AuthOutcome, Credential, Operation, PasswordCredential, Verdict,
    WriteRequest,
};

/// The validator hook: judge one write. Called once per write, and once per
/// write operation inside a transaction (`request.in_txn`).
pub use __bindings::validator::exports::cairn::policy::validation::Guest as Validator;

/// The authenticator hook: turn a credential into a principal, refuse it,
/// or abstain for kinds of credentials the plugin does not handle.
pub use __bindings::authenticator::exports::cairn::policy::authentication::Guest as Authenticator;

/// The authorizer hook: may this principal do this access on this range?
pub use __bindings::authorizer::exports::cairn::policy::authorization::Guest as Authorizer;

/// Exports a type implementing [`Validator`] as the plugin's validator.
#[macro_export]
macro_rules! export_validator {
    ($ty:ident) => {
        $crate::__bindings::validator::export!($ty with_types_in $crate::__bindings::validator);
    };
}

/// Exports a type implementing [`Authenticator`] as the plugin's
/// authenticator.
#[macro_export]
macro_rules! export_authenticator {
    ($ty:ident) => {
        $crate::__bindings::authenticator::export!($ty with_types_in $crate::__bindings::authenticator);
    };
}

/// Exports a type implementing [`Authorizer`] as the plugin's authorizer.
#[macro_export]
macro_rules! export_authorizer {
    ($ty:ident) => {
        $crate::__bindings::authorizer::export!($ty with_types_in $crate::__bindings::authorizer);
    };
}

impl Verdict {
    /// A denial with a reason for the client.
    pub fn deny(reason: impl Into<String>) -> Verdict {
        Verdict::Deny(reason.into())
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

impl AuthOutcome {
    /// A refusal with a reason (do not put secrets in it).
    pub fn refuse(reason: impl Into<String>) -> AuthOutcome {
        AuthOutcome::Refused(reason.into())
    }
}

impl WriteRequest {
    /// The key as text, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }
}

/// What the host offers a plugin.
pub mod host {
    use crate::__bindings::validator::cairn::policy::host as raw;

    pub use raw::LogLevel;

    /// Reads `key` as of the revision the current request is judged at.
    /// A call may read at most 256 keys; the plugin traps beyond that.
    pub fn get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        raw::get(key.as_ref())
    }

    /// Writes a line to Cairn's log, tagged with the plugin's name.
    pub fn log(level: LogLevel, message: &str) {
        raw::log(level, message)
    }

    pub fn debug(message: &str) {
        raw::log(LogLevel::Debug, message)
    }

    pub fn info(message: &str) {
        raw::log(LogLevel::Info, message)
    }

    pub fn warn(message: &str) {
        raw::log(LogLevel::Warn, message)
    }

    pub fn error(message: &str) {
        raw::log(LogLevel::Error, message)
    }

    /// The operator's configuration for this plugin.
    pub fn config() -> Config {
        Config(raw::config())
    }

    /// Key/value settings, in the order the operator gave them.
    #[derive(Debug, Clone, Default)]
    pub struct Config(pub Vec<(String, String)>);

    impl Config {
        /// The value of `name` (the last one if it is given twice).
        pub fn get(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        /// The value of `name` or an error message naming the setting, for
        /// plugins that refuse to run misconfigured.
        pub fn require(&self, name: &str) -> Result<&str, String> {
            self.get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("plugin misconfigured: setting `{name}` is missing"))
        }

        /// A comma-separated setting as trimmed, non-empty items.
        pub fn list(&self, name: &str) -> Vec<&str> {
            split_list(self.get(name).unwrap_or(""))
        }

        /// Settings whose name starts with `prefix`, with the prefix removed
        /// (`grant.alice = ...` → `("alice", ...)` for prefix `grant.`).
        pub fn with_prefix<'a>(
            &'a self,
            prefix: &'a str,
        ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
            self.0
                .iter()
                .filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
        }
    }

    /// Splits a comma-separated list into trimmed, non-empty items.
    pub fn split_list(s: &str) -> Vec<&str> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Key-range helpers in etcd's conventions.
pub mod keys {
    /// The exclusive end of the range of all keys starting with `prefix`
    /// (etcd's `--prefix`): the prefix with its last byte below 0xff
    /// incremented; `[0]` ("to the end of the keyspace") if there is none.
    pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0]
    }

    /// Whether every key of [`key`, `range_end`) starts with `prefix`.
    /// `range_end` is `None` for a single key, etcd's encoding otherwise.
    pub fn range_within_prefix(key: &[u8], range_end: Option<&[u8]>, prefix: &[u8]) -> bool {
        if !key.starts_with(prefix) {
            return false;
        }
        match range_end {
            None => true,
            // "Every key from `key` on": only the empty prefix covers that.
            Some([0]) => prefix.is_empty(),
            Some(_) if prefix.is_empty() => true,
            Some(end) => {
                let limit = prefix_end(prefix);
                limit == [0] || end <= limit.as_slice()
            }
        }
    }
}
