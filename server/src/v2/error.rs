//! v2 errors: etcd 3.4's numbered error codes, their fixed messages and the
//! HTTP status each maps to. The v2 client prints `code: message (cause)
//! [index]` and some tools match on the code, so codes, messages and
//! statuses are API.

use serde::Serialize;
use serde::ser::SerializeMap;

pub const KEY_NOT_FOUND: u32 = 100;
pub const TEST_FAILED: u32 = 101;
pub const NOT_FILE: u32 = 102;
pub const NOT_DIR: u32 = 104;
pub const NODE_EXIST: u32 = 105;
/// Defined by etcd but never produced by 3.4 (it guarded the 0.4 `/_etcd`
/// keyspace); kept so the table is complete.
pub const KEY_IS_PRESERVED: u32 = 106;
pub const ROOT_READ_ONLY: u32 = 107;
pub const DIR_NOT_EMPTY: u32 = 108;
pub const UNAUTHORIZED: u32 = 110;

pub const PREV_VALUE_REQUIRED: u32 = 201;
pub const TTL_NAN: u32 = 202;
pub const INDEX_NAN: u32 = 203;
pub const INVALID_FIELD: u32 = 209;
pub const INVALID_FORM: u32 = 210;
pub const REFRESH_VALUE: u32 = 211;
pub const REFRESH_TTL_REQUIRED: u32 = 212;

pub const RAFT_INTERNAL: u32 = 300;
pub const LEADER_ELECT: u32 = 301;

pub const WATCHER_CLEARED: u32 = 400;
pub const EVENT_INDEX_CLEARED: u32 = 401;

/// The message etcd attaches to a code (`v2error.errors`).
pub fn message(code: u32) -> &'static str {
    match code {
        KEY_NOT_FOUND => "Key not found",
        TEST_FAILED => "Compare failed",
        NOT_FILE => "Not a file",
        103 => "Reached the max number of peers in the cluster",
        NOT_DIR => "Not a directory",
        NODE_EXIST => "Key already exists",
        KEY_IS_PRESERVED => "The prefix of given key is a keyword in etcd",
        ROOT_READ_ONLY => "Root is read only",
        DIR_NOT_EMPTY => "Directory not empty",
        109 => "Peer address has existed",
        UNAUTHORIZED => "The request requires user authentication",
        200 => "Value is Required in POST form",
        PREV_VALUE_REQUIRED => "PrevValue is Required in POST form",
        TTL_NAN => "The given TTL in POST form is not a number",
        INDEX_NAN => "The given index in POST form is not a number",
        204 => "Value or TTL is required in POST form",
        205 => "The given timeout in POST form is not a number",
        206 => "Name is required in POST form",
        207 => "Index or value is required",
        208 => "Index and value cannot both be specified",
        INVALID_FIELD => "Invalid field",
        INVALID_FORM => "Invalid POST form",
        REFRESH_VALUE => "Value provided on refresh",
        REFRESH_TTL_REQUIRED => "A TTL must be provided on refresh",
        RAFT_INTERNAL => "Raft Internal Error",
        LEADER_ELECT => "During Leader Election",
        WATCHER_CLEARED => "watcher is cleared due to etcd recovery",
        EVENT_INDEX_CLEARED => "The event in requested index is outdated and cleared",
        _ => "",
    }
}

/// A v2 error as etcd writes it: `{"errorCode":..,"message":..,"cause":..,
/// "index":..}`. `index` is the store index when the error happened (0 for
/// errors found before the request reached the store).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {} ({cause}) [{index}]", message(*.code))]
pub struct V2Error {
    pub code: u32,
    pub cause: String,
    pub index: u64,
}

impl V2Error {
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> Self {
        V2Error {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// An error found while parsing the HTTP request (index 0, as etcd).
    pub fn request(code: u32, cause: impl Into<String>) -> Self {
        V2Error::new(code, cause, 0)
    }

    /// Anything that went wrong outside the store: raft timeouts, a stopped
    /// server, storage failures. etcd answers all of these with 300 and the
    /// Go error text as the cause (e.g. "etcdserver: request timed out").
    pub fn raft_internal(cause: impl Into<String>) -> Self {
        V2Error::new(RAFT_INTERNAL, cause, 0)
    }

    pub fn message(&self) -> &'static str {
        message(self.code)
    }

    /// etcd's `errorStatus` table; every code not in it is a 400.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self.code {
            KEY_NOT_FOUND => StatusCode::NOT_FOUND,
            NOT_FILE | DIR_NOT_EMPTY => StatusCode::FORBIDDEN,
            UNAUTHORIZED => StatusCode::UNAUTHORIZED,
            TEST_FAILED | NODE_EXIST => StatusCode::PRECONDITION_FAILED,
            RAFT_INTERNAL | LEADER_ELECT => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The response body: the JSON object followed by a newline, with Go's
    /// HTML-safe escaping.
    pub fn to_body(&self) -> String {
        let mut s = super::event::to_go_json(self);
        s.push('\n');
        s
    }
}

impl Serialize for V2Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("errorCode", &self.code)?;
        m.serialize_entry("message", self.message())?;
        if !self.cause.is_empty() {
            m.serialize_entry("cause", &self.cause)?;
        }
        m.serialize_entry("index", &self.index)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_and_status() {
        let e = V2Error::new(KEY_NOT_FOUND, "/foo", 6);
        assert_eq!(
            e.to_body(),
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/foo\",\"index\":6}\n"
        );
        assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
        let e = V2Error::new(NOT_FILE, "", 3);
        assert_eq!(
            e.to_body(),
            "{\"errorCode\":102,\"message\":\"Not a file\",\"index\":3}\n"
        );
        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(V2Error::new(TEST_FAILED, "", 0).status().as_u16(), 412);
        assert_eq!(V2Error::new(NODE_EXIST, "", 0).status().as_u16(), 412);
        assert_eq!(V2Error::new(DIR_NOT_EMPTY, "", 0).status().as_u16(), 403);
        assert_eq!(V2Error::new(UNAUTHORIZED, "", 0).status().as_u16(), 401);
        assert_eq!(V2Error::new(RAFT_INTERNAL, "", 0).status().as_u16(), 500);
        assert_eq!(V2Error::new(LEADER_ELECT, "", 0).status().as_u16(), 500);
        for code in [
            NOT_DIR,
            KEY_IS_PRESERVED,
            ROOT_READ_ONLY,
            PREV_VALUE_REQUIRED,
            TTL_NAN,
            INDEX_NAN,
            INVALID_FIELD,
            INVALID_FORM,
            REFRESH_VALUE,
            REFRESH_TTL_REQUIRED,
            WATCHER_CLEARED,
            EVENT_INDEX_CLEARED,
        ] {
            assert_eq!(V2Error::new(code, "", 0).status().as_u16(), 400, "{code}");
            assert!(!message(code).is_empty());
        }
        assert_eq!(
            V2Error::new(TEST_FAILED, "[two != one]", 8).to_string(),
            "101: Compare failed ([two != one]) [8]"
        );
    }
}
