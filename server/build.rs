//! Compiles Cairn's .proto files with protox (a pure-Rust protobuf compiler),
//! so building Cairn never needs a system `protoc`.
//!
//! Besides the prost/tonic code it generates the JSON mapping of etcd's
//! packages for the `/v3/` gateway (`api::gateway`): serde impls from
//! pbjson-build (`<package>.serde.rs`) and a table of every message's fields
//! (`gateway_schema.rs`) that the gateway's request decoder walks.

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use std::fmt::Write as _;

/// The packages clients reach through the JSON gateway.
const JSON_PACKAGES: [&str; 5] = [
    "mvccpb",
    "authpb",
    "etcdserverpb",
    "v3lockpb",
    "v3electionpb",
];

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

    // JSON mapping, from the same descriptors as the prost types so the two
    // cannot drift. Output uses the proto field names (etcd's gateway runs
    // with OrigName); input accepts both names and ignores unknown fields,
    // as etcd's does. Bytes fields need no option: pbjson's decoder fills
    // any `From<Vec<u8>>` type, so the `bytes::Bytes` fields below just work.
    let prefixes: Vec<String> = JSON_PACKAGES.iter().map(|p| format!(".{p}")).collect();
    pbjson_build::Builder::new()
        .register_descriptors(&fds.encode_to_vec())?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&prefixes)?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("gateway_schema.rs"), gateway_schema(&fds)?)?;
    std::fs::write(out_dir.join("grpc_methods.rs"), grpc_methods(&fds)?)?;

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

/// One message or enum of the JSON packages, flattened.
struct Named<'a, T> {
    /// Proto full name without the leading dot (`etcdserverpb.RangeRequest`).
    full: String,
    /// For enums, the name Go gives the type
    /// (`etcdserverpb.RangeRequest_SortOrder`): Go's JSON errors print it,
    /// and the gateway repeats them.
    go: String,
    /// Rust path of a top-level message (`crate::pb::etcdserverpb::RangeRequest`).
    rust: Option<String>,
    desc: &'a T,
}

fn collect<'a>(
    package: &str,
    outer: Option<(&str, &str)>,
    msg: &'a DescriptorProto,
    messages: &mut Vec<Named<'a, DescriptorProto>>,
    enums: &mut Vec<Named<'a, EnumDescriptorProto>>,
) {
    let name = msg.name();
    let (full, go) = match outer {
        Some((full, go)) => (format!("{full}.{name}"), format!("{go}_{name}")),
        None => (format!("{package}.{name}"), format!("{package}.{name}")),
    };
    // prost names a type by upper-camel-casing its proto name (`HashKV`
    // becomes `HashKv`); only top-level messages get a path here, which
    // covers every request the gateway decodes.
    let rust = outer.is_none().then(|| {
        format!(
            "crate::pb::{package}::{}",
            heck::ToUpperCamelCase::to_upper_camel_case(name)
        )
    });
    for e in &msg.enum_type {
        enums.push(Named {
            full: format!("{full}.{}", e.name()),
            go: format!("{go}_{}", e.name()),
            rust: None,
            desc: e,
        });
    }
    for nested in &msg.nested_type {
        collect(package, Some((&full, &go)), nested, messages, enums);
    }
    messages.push(Named {
        full,
        go: String::new(),
        rust,
        desc: msg,
    });
}

/// Writes the field table of every message in the JSON packages: what the
/// gateway needs to decode a request the way Go's jsonpb does (both field
/// names, per-type rules and Go's error texts) before pbjson builds it.
fn gateway_schema(fds: &FileDescriptorSet) -> Result<String, Box<dyn std::error::Error>> {
    let mut messages = Vec::new();
    let mut enums = Vec::new();
    for file in &fds.file {
        let package = file.package();
        if !JSON_PACKAGES.contains(&package) {
            continue;
        }
        for e in &file.enum_type {
            enums.push(Named {
                full: format!("{package}.{}", e.name()),
                go: format!("{package}.{}", e.name()),
                rust: None,
                desc: e,
            });
        }
        for m in &file.message_type {
            collect(package, None, m, &mut messages, &mut enums);
        }
    }
    let msg_index = |name: &str| {
        messages
            .iter()
            .position(|m| format!(".{}", m.full) == name)
            .ok_or_else(|| format!("gateway schema: unknown message {name}"))
    };
    let enum_index = |name: &str| {
        enums
            .iter()
            .position(|e| format!(".{}", e.full) == name)
            .ok_or_else(|| format!("gateway schema: unknown enum {name}"))
    };

    let mut out = String::from("// @generated by build.rs from the proto descriptors.\n\n");
    writeln!(out, "pub(super) static MESSAGES: &[Message] = &[")?;
    for (i, m) in messages.iter().enumerate() {
        writeln!(out, "    // {i}: {}", m.full)?;
        writeln!(out, "    Message {{")?;
        writeln!(out, "        fields: &[")?;
        for f in &m.desc.field {
            let kind = match f.r#type() {
                Type::Int64 | Type::Sint64 | Type::Sfixed64 => "Kind::Int64".to_string(),
                Type::Uint64 | Type::Fixed64 => "Kind::Uint64".to_string(),
                Type::Int32 | Type::Sint32 | Type::Sfixed32 => "Kind::Int32".to_string(),
                Type::Uint32 | Type::Fixed32 => "Kind::Uint32".to_string(),
                Type::Bool => "Kind::Bool".to_string(),
                Type::String => "Kind::String".to_string(),
                Type::Bytes => "Kind::Bytes".to_string(),
                Type::Enum => format!("Kind::Enum({})", enum_index(f.type_name())?),
                Type::Message => format!("Kind::Message({})", msg_index(f.type_name())?),
                other => {
                    // Not used by etcd's API; fail the build rather than
                    // decode it wrongly at run time.
                    return Err(format!(
                        "gateway schema: {}.{} has unsupported type {other:?}",
                        m.full,
                        f.name()
                    )
                    .into());
                }
            };
            let json = if f.json_name().is_empty() {
                lower_camel(f.name())
            } else {
                f.json_name().to_string()
            };
            let oneof = f.oneof_index.is_some() && !f.proto3_optional();
            writeln!(
                out,
                "            Field {{ name: {:?}, json: {:?}, kind: {kind}, repeated: {}, oneof: {oneof} }},",
                f.name(),
                json,
                f.label() == Label::Repeated,
            )?;
        }
        writeln!(out, "        ],")?;
        writeln!(out, "    }},")?;
    }
    writeln!(out, "];\n")?;

    writeln!(out, "pub(super) static ENUMS: &[Enum] = &[")?;
    for e in &enums {
        let values: Vec<String> = e
            .desc
            .value
            .iter()
            .map(|v| format!("({:?}, {})", v.name(), v.number()))
            .collect();
        writeln!(
            out,
            "    Enum {{ go: {:?}, values: &[{}] }},",
            e.go,
            values.join(", ")
        )?;
    }
    writeln!(out, "];\n")?;

    for (i, m) in messages.iter().enumerate() {
        if let Some(rust) = &m.rust {
            writeln!(
                out,
                "impl HasSchema for {rust} {{\n    const SCHEMA: usize = {i};\n}}"
            )?;
        }
    }
    Ok(out)
}

/// Writes the table of every gRPC method the protos define, sorted by path
/// (`api::grpc_methods` binary-searches it): which requests are gRPC calls,
/// and the labels the gRPC metrics may use.
fn grpc_methods(fds: &FileDescriptorSet) -> Result<String, Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for file in &fds.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for m in &service.method {
                let kind = match (m.client_streaming(), m.server_streaming()) {
                    (false, false) => "Unary",
                    (true, false) => "ClientStream",
                    (false, true) => "ServerStream",
                    (true, true) => "BidiStream",
                };
                rows.push((
                    format!("/{full}/{}", m.name()),
                    full.clone(),
                    m.name().to_string(),
                    kind,
                ));
            }
        }
    }
    rows.sort();
    let mut out = String::from("// @generated by build.rs from the proto descriptors.\n\n");
    writeln!(out, "pub(super) static GENERATED: &[GrpcMethod] = &[")?;
    for (path, service, method, kind) in rows {
        writeln!(
            out,
            "    GrpcMethod {{ path: {path:?}, service: {service:?}, method: {method:?}, kind: Kind::{kind} }},"
        )?;
    }
    writeln!(out, "];")?;
    Ok(out)
}

/// protoc's default JSON name: drop underscores, upper-case the letter after
/// each one (`range_end` → `rangeEnd`, `remaining_TTL` → `remainingTTL`).
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
