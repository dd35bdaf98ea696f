//! Entry points for the fuzz targets (`fuzz/`, `cargo xtask fuzz`): thin
//! `pub` wrappers over the crate-private parsers that see bytes from
//! outside, so the fuzz crate needs no other visibility change and a move of
//! those parsers only has to update the paths in this file.
//!
//! Not an API: nothing here is stable, and only the fuzz crate calls it.
//! Each function returns what the parser returned (made comparable), or an
//! `Err` naming a broken invariant; the fuzz driver catches panics itself.

use crate::api::gateway::fuzzing as gateway;
use crate::pb::etcdserverpb as pb;

/// The HTTP/2 `:authority` rewriter's pieces (`api::h2_authority`).
pub mod h2 {
    pub use crate::net::h2_authority::NormalizeAuthority;
    pub use crate::net::h2_authority::fuzzing::{
        huffman_decode, literals, normalize_authority, rewrite_block,
    };
}

/// What a new member's discovery reads from outside: DNS responses and v2
/// keys answers (`discovery::dns`, `discovery::v2`).
pub mod discovery {
    pub use crate::discovery::fuzzing::{dns_reply, keys_answer};
}

/// The request types the `/v3` gateway decodes, by a selector byte.
pub const GATEWAY_REQUEST_TYPES: &[&str] = &[
    "RangeRequest",
    "PutRequest",
    "DeleteRangeRequest",
    "TxnRequest",
    "CompactionRequest",
    "WatchRequest",
    "LeaseGrantRequest",
    "LeaseKeepAliveRequest",
    "LeaseTimeToLiveRequest",
    "MemberAddRequest",
    "MemberUpdateRequest",
    "AlarmRequest",
    "AuthenticateRequest",
    "AuthUserAddRequest",
    "AuthRoleGrantPermissionRequest",
    "HashKvRequest",
    "MoveLeaderRequest",
    "LockRequest",
    "CampaignRequest",
];

/// One gateway request body, as `read_one`/`bidi` see it: the body (split
/// into `chunk_bytes`-sized frames) is read value by value with Go's
/// decoder rules, each value decoded as request type `selector` (modulo
/// [`GATEWAY_REQUEST_TYPES`]). Checks that every value the reader returns
/// is a valid JSON document, and that a decoded request survives a round
/// trip through its JSON rendition. Returns how many values decoded.
pub fn gateway_body(
    selector: u8,
    body: &[u8],
    chunk_bytes: usize,
    limit_bytes: usize,
) -> Result<usize, String> {
    let values = gateway::read_values(body, chunk_bytes, limit_bytes);
    let mut decoded = 0;
    for raw in values {
        gateway::check_document(&raw)
            .map_err(|e| format!("body reader returned a value Go's scanner refuses: {e}"))?;
        let ok = match usize::from(selector) % GATEWAY_REQUEST_TYPES.len() {
            0 => gateway::round_trip::<pb::RangeRequest>(&raw)?,
            1 => gateway::round_trip::<pb::PutRequest>(&raw)?,
            2 => gateway::round_trip::<pb::DeleteRangeRequest>(&raw)?,
            3 => gateway::round_trip::<pb::TxnRequest>(&raw)?,
            4 => gateway::round_trip::<pb::CompactionRequest>(&raw)?,
            5 => gateway::round_trip::<pb::WatchRequest>(&raw)?,
            6 => gateway::round_trip::<pb::LeaseGrantRequest>(&raw)?,
            7 => gateway::round_trip::<pb::LeaseKeepAliveRequest>(&raw)?,
            8 => gateway::round_trip::<pb::LeaseTimeToLiveRequest>(&raw)?,
            9 => gateway::round_trip::<pb::MemberAddRequest>(&raw)?,
            10 => gateway::round_trip::<pb::MemberUpdateRequest>(&raw)?,
            11 => gateway::round_trip::<pb::AlarmRequest>(&raw)?,
            12 => gateway::round_trip::<pb::AuthenticateRequest>(&raw)?,
            13 => gateway::round_trip::<pb::AuthUserAddRequest>(&raw)?,
            14 => gateway::round_trip::<pb::AuthRoleGrantPermissionRequest>(&raw)?,
            15 => gateway::round_trip::<pb::HashKvRequest>(&raw)?,
            16 => gateway::round_trip::<pb::MoveLeaderRequest>(&raw)?,
            17 => gateway::round_trip::<crate::pb::v3lockpb::LockRequest>(&raw)?,
            _ => gateway::round_trip::<crate::pb::v3electionpb::CampaignRequest>(&raw)?,
        };
        decoded += usize::from(ok);
    }
    Ok(decoded)
}

/// Go's `json.Unmarshal` syntax check (`gojson::check_document`).
pub fn gateway_check_document(data: &[u8]) -> Result<(), String> {
    gateway::check_document(data)
}

/// Go's base64 decoding of `bytes` fields as the gateway applies it.
pub fn gateway_base64(src: &[u8]) -> Result<Vec<u8>, String> {
    gateway::base64_decode(src)
}

/// The gateway's URL path handling: `%XX` unescaping, then Go's
/// `path.Clean` with the trailing slash kept.
pub fn gateway_path(path: &str) -> (String, String) {
    gateway::path(path)
}

/// The checks the plugin admin routes make on a request body before they
/// touch the server: `route` 0 deploy (`PUT /cairn/v1/plugins/{name}`),
/// 1 dry run, 2 check. `Ok` if the body would be accepted.
pub fn plugin_admin_body(route: u8, name: &str, body: &[u8]) -> Result<(), String> {
    crate::api::plugins::check_body(route, name, body)
}
