//! Generated protobuf and gRPC code (see `build.rs` and `server/proto/`).
#![allow(clippy::all, missing_docs, unreachable_pub)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}
