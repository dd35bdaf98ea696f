//! Generated protobuf and gRPC code (see `build.rs` and `server/proto/`).
#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    // JSON mapping for the /v3/ gateway (pbjson-build, see build.rs).
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod authpb {
    tonic::include_proto!("authpb");
    // JSON mapping for the /v3/ gateway (pbjson-build, see build.rs).
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    // JSON mapping for the /v3/ gateway (pbjson-build, see build.rs).
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    // JSON mapping for the /v3/ gateway (pbjson-build, see build.rs).
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    // JSON mapping for the /v3/ gateway (pbjson-build, see build.rs).
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

/// An enum field as Go's jsonpb writes it: the value's name, or the bare
/// number when the number has no name (proto3 enums are open; etcd keeps
/// and echoes such numbers). Used by the generated JSON encoders (see
/// `open_enums` in build.rs).
pub enum GoEnum<T> {
    Named(T),
    Number(i32),
}

impl<T: serde::Serialize> serde::Serialize for GoEnum<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GoEnum::Named(v) => v.serialize(s),
            GoEnum::Number(n) => s.serialize_i32(*n),
        }
    }
}
