//! Rust types and glue generated from `plugins/wit/policy.wit`.
//!
//! One `bindgen!` for the `policy` world covers every hook: the host side of
//! the `host` interface, the shared `types`, and an export wrapper per hook
//! interface. A plugin that exports only some hooks is handled by looking each
//! hook interface up separately (see `plugin.rs`), not by this world.

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit",
    // `host.get` returns an error (a trap) when a plugin exceeds its read
    // budget, so that a plugin never mistakes "you read too much" for "the
    // key does not exist".
    imports: {
        "cairn:policy/host.get": trappable,
    },
    additional_derives: [PartialEq, Eq],
});
