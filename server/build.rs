//! Compiles Cairn's .proto files with protox (a pure-Rust protobuf compiler),
//! so building Cairn never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/etcd/mvccpb/kv.proto",
        "proto/etcd/authpb/auth.proto",
        "proto/etcd/etcdserverpb/rpc.proto",
        "proto/etcd/v3lockpb/v3lock.proto",
        "proto/etcd/v3electionpb/v3election.proto",
        "proto/cairn/internal.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Methods Cairn does not serve yet answer etcd's `Unimplemented`
        // instead of failing to compile.
        .generate_default_stubs(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
