//! The plugin admin API's request bodies (`api/plugins.rs`,
//! `/cairn/v1/plugins`): a selector byte for the route (deploy, dry run,
//! check) and one for the `{name}` path segment, then the JSON body. Runs
//! every check a route makes before it touches the server (serde decoding,
//! base64 of the component, hooks, mode, failure policy, Go durations,
//! sizes, limits). No panic, and memory bounded by the body.

use super::{Cursor, MIB};
use crate::engine::{Outcome, Target, feature, tag};
use cairn::fuzz_api;

pub const TARGET: Target = Target {
    name: "plugin-admin",
    about: "plugin admin JSON bodies (deploy, dry-run, check) up to the point they touch the server",
    run,
    dict: &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\"",
        b"null",
        b"\"wasm_base64\"",
        b"\"AGFzbQ==\"",
        b"\"hooks\"",
        b"\"validator\"",
        b"\"authenticator\"",
        b"\"authorizer\"",
        b"\"prefixes\"",
        b"\"mode\"",
        b"\"enforce\"",
        b"\"audit\"",
        b"\"failure_policy\"",
        b"\"fail-open\"",
        b"\"deadline\"",
        b"\"50ms\"",
        b"\"1h\"",
        b"\"memory\"",
        b"\"16MiB\"",
        b"18446744073709551615",
        b"\"config\"",
        b"\"order\"",
        b"\"name\"",
        b"\"revision\"",
        b"\"max_keys\"",
        b"\"max_reported\"",
        b"\"authenticate\"",
        b"\"token\"",
        b"\"password\"",
        b"\"authorize\"",
        b"\"access\"",
        b"\"read\"",
        b"\"key\"",
        b"\"range_end\"",
        b"\"principal\"",
    ],
    max_len: 8192,
    heap_budget_bytes: 16 * MIB,
};

const NAMES: &[&str] = &["policy", "", "a b", "x.y-z_1", "\u{e9}", "..", "a/b"];

fn run(data: &[u8]) -> Outcome {
    let mut c = Cursor::new(data);
    let route = c.byte();
    let name = NAMES[usize::from(c.byte()) % NAMES.len()];
    let body = c.rest();
    let word = match fuzz_api::plugin_admin_body(route, name, body) {
        Ok(()) => "accepted".to_string(),
        // serde's messages carry the input's text; its first words say
        // what kind of problem it was.
        Err(e) => e.split([':', '`', '"']).next().unwrap_or("").to_string(),
    };
    Ok(feature(&[&word, &tag((route % 3).into())]))
}
