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
    for package in JSON_PACKAGES {
        let path = out_dir.join(format!("{package}.serde.rs"));
        let code = std::fs::read_to_string(&path)?;
        std::fs::write(&path, open_enums(&code))?;
    }
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

/// Makes pbjson's code treat enums as proto3 does and Go's jsonpb shows
/// them: a number without a name is kept, not refused. pbjson generates
/// (a) decoders that parse an enum field through the Rust enum, refusing
/// unknown numbers — the gateway hands them numbers only (see
/// `api::gateway::jsonpb`), so they now read the `i32` directly; and (b)
/// encoders that fail on a number without a name — they now write the
/// number (`pb::GoEnum`). Each rewrite is checked to have happened, so a
/// pbjson upgrade that changes the shape fails the build instead of
/// silently bringing the refusals back.
fn open_enums(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut lines = code.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        // (a) `x__ = Some(map_.next_value::<Enum>()? as i32);`
        if let Some(start) = t.find("map_.next_value::<")
            && t.ends_with(">()? as i32);")
        {
            out.push_str(&format!(
                "{indent}{}map_.next_value::<i32>()?);\n",
                &t[..start]
            ));
            continue;
        }
        // (a) repeated: `Some(map_.next_value::<Vec<Enum>>()?.into_iter().map(|x| x as i32).collect());`
        if let Some(start) = t.find("map_.next_value::<Vec<")
            && t.ends_with(">>()?.into_iter().map(|x| x as i32).collect());")
        {
            out.push_str(&format!(
                "{indent}{}map_.next_value::<Vec<i32>>()?);\n",
                &t[..start]
            ));
            continue;
        }
        // (b) `.map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.f)))?;`
        const INVALID: &str =
            ".map_err(|_| serde::ser::Error::custom(format!(\"Invalid variant {}\", ";
        if let Some(rest) = t.strip_prefix(INVALID) {
            if let Some(field) = rest.strip_suffix(")))?;") {
                out.push_str(&format!(
                    "{indent}.map_or(crate::pb::GoEnum::Number({field}), crate::pb::GoEnum::Named);\n"
                ));
                continue;
            }
            // repeated: `.map_err(..., v)))` then `}).collect::<std::result::Result<Vec<_>, _>>()?;`
            if let Some(field) = rest.strip_suffix(")))") {
                out.push_str(&format!(
                    "{indent}.map_or(crate::pb::GoEnum::Number({field}), crate::pb::GoEnum::Named)\n"
                ));
                if let Some(next) = lines.peek()
                    && next.trim_start() == "}).collect::<std::result::Result<Vec<_>, _>>()?;"
                {
                    let next_indent = &next[..next.len() - next.trim_start().len()];
                    out.push_str(&format!("{next_indent}}}).collect::<Vec<_>>();\n"));
                    lines.next();
                }
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        !out.contains("Invalid variant") && !out.contains("as i32"),
        "pbjson's enum code changed shape; update open_enums in build.rs"
    );
    out
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
