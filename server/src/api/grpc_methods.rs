//! Which requests are gRPC calls, and to which method.
//!
//! A request is served as gRPC only when it is HTTP/2, says
//! `application/grpc`, and names a method registered on that listener: every
//! other request is HTTP and passes the access checks (`--host-whitelist`,
//! CORS) first. A gRPC-shaped request for a method nobody serves is refused
//! with grpc-go's `Unimplemented` wording before any layer sees it, so
//! nothing per-path (metrics labels, say) grows with what clients make up.
//!
//! The method table is generated from the same proto descriptors as the
//! services (`build.rs`), plus the standard health service.

use http::Request;

/// A gRPC method's shape, as go-grpc-prometheus labels it (`grpc_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ClientStream => "client_stream",
            Kind::ServerStream => "server_stream",
            Kind::BidiStream => "bidi_stream",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct GrpcMethod {
    /// `/etcdserverpb.KV/Range`
    pub path: &'static str,
    /// `etcdserverpb.KV`
    pub service: &'static str,
    /// `Range`
    pub method: &'static str,
    pub kind: Kind,
}

include!(concat!(env!("OUT_DIR"), "/grpc_methods.rs"));

/// grpc.health.v1 comes from tonic-health, not from our protos.
static HEALTH: &[GrpcMethod] = &[
    GrpcMethod {
        path: "/grpc.health.v1.Health/Check",
        service: "grpc.health.v1.Health",
        method: "Check",
        kind: Kind::Unary,
    },
    GrpcMethod {
        path: "/grpc.health.v1.Health/Watch",
        service: "grpc.health.v1.Health",
        method: "Watch",
        kind: Kind::ServerStream,
    },
];

/// The services one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Client URLs: etcd's services and gRPC health.
    Client,
    /// Peer URLs: Cairn's peer service.
    Peer,
}

impl Surface {
    fn serves(self, service: &str) -> bool {
        match self {
            Surface::Client => {
                service.starts_with("etcdserverpb.")
                    || service == "v3lockpb.Lock"
                    || service == "v3electionpb.Election"
                    || service == "grpc.health.v1.Health"
            }
            Surface::Peer => service == "cairnpb.Peer",
        }
    }
}

/// How a listener treats one request.
#[derive(Debug)]
pub enum Route {
    /// A registered gRPC method.
    Grpc(&'static GrpcMethod),
    /// gRPC-shaped, but no such method here: refused with this status.
    UnknownGrpc(tonic::Status),
    /// Everything else.
    Http,
}

/// Looks a method up by its path.
pub fn lookup(path: &str) -> Option<&'static GrpcMethod> {
    GENERATED
        .binary_search_by(|m| m.path.cmp(path))
        .ok()
        .and_then(|i| GENERATED.get(i))
        .or_else(|| HEALTH.iter().find(|m| m.path == path))
}

/// Whether the request is shaped as a gRPC call: HTTP/2 with a gRPC content
/// type. (tonic would also answer gRPC framed over HTTP/1.1; etcd does not.)
pub fn is_grpc_shaped<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Classifies a request arriving on a listener serving `surface`.
pub fn route<B>(surface: Surface, req: &Request<B>) -> Route {
    if !is_grpc_shaped(req) {
        return Route::Http;
    }
    let path = req.uri().path();
    if let Some(m) = lookup(path).filter(|m| surface.serves(m.service)) {
        return Route::Grpc(m);
    }
    Route::UnknownGrpc(unknown(surface, path))
}

/// grpc-go's answers for a method it does not serve. The path is echoed
/// only up to a bound: it is the client's text.
fn unknown(surface: Surface, path: &str) -> tonic::Status {
    const SHOWN_CHARS: usize = 256;
    let shown: String = path.chars().take(SHOWN_CHARS).collect();
    let Some((service, method)) = shown.trim_start_matches('/').split_once('/') else {
        return tonic::Status::unimplemented(format!("malformed method name: {shown:?}"));
    };
    let known_service =
        surface.serves(service) && GENERATED.iter().chain(HEALTH).any(|m| m.service == service);
    if known_service {
        tonic::Status::unimplemented(format!("unknown method {method} for service {service}"))
    } else {
        tonic::Status::unimplemented(format!("unknown service {service}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: http::Version, ct: &str, path: &str) -> Request<()> {
        Request::builder()
            .version(version)
            .uri(path)
            .header(http::header::CONTENT_TYPE, ct)
            .body(())
            .expect("request")
    }

    #[test]
    fn table_is_sorted_and_covers_every_etcd_service() {
        assert!(GENERATED.windows(2).all(|w| w[0].path < w[1].path));
        for path in [
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.Watch/Watch",
            "/etcdserverpb.Lease/LeaseKeepAlive",
            "/etcdserverpb.Cluster/MemberList",
            "/etcdserverpb.Maintenance/Snapshot",
            "/etcdserverpb.Auth/Authenticate",
            "/v3lockpb.Lock/Lock",
            "/v3electionpb.Election/Observe",
            "/grpc.health.v1.Health/Check",
            "/cairnpb.Peer/Stream",
        ] {
            assert!(lookup(path).is_some(), "{path}");
        }
        assert_eq!(
            lookup("/etcdserverpb.Watch/Watch").map(|m| m.kind),
            Some(Kind::BidiStream)
        );
        assert_eq!(
            lookup("/etcdserverpb.Maintenance/Snapshot").map(|m| m.kind),
            Some(Kind::ServerStream)
        );
    }

    #[test]
    fn only_http2_registered_methods_of_the_surface_are_grpc() {
        let h2 = http::Version::HTTP_2;
        let grpc = "application/grpc";
        assert!(matches!(
            route(Surface::Client, &req(h2, grpc, "/etcdserverpb.KV/Put")),
            Route::Grpc(_)
        ));
        // gRPC framing over HTTP/1.1, or an HTTP route with a gRPC content
        // type: HTTP, so the access checks apply.
        assert!(matches!(
            route(
                Surface::Client,
                &req(http::Version::HTTP_11, grpc, "/etcdserverpb.KV/Put")
            ),
            Route::Http
        ));
        assert!(matches!(
            route(Surface::Client, &req(h2, "application/json", "/v3/kv/put")),
            Route::Http
        ));
        // gRPC-shaped requests nobody serves here.
        for (surface, path, msg) in [
            (Surface::Client, "/v3/kv/put", "unknown service v3"),
            (
                Surface::Client,
                "/etcdserverpb.KV/Nope",
                "unknown method Nope for service etcdserverpb.KV",
            ),
            (
                Surface::Client,
                "/cairnpb.Peer/Stream",
                "unknown service cairnpb.Peer",
            ),
            (
                Surface::Peer,
                "/etcdserverpb.KV/Put",
                "unknown service etcdserverpb.KV",
            ),
        ] {
            match route(surface, &req(h2, grpc, path)) {
                Route::UnknownGrpc(s) => {
                    assert_eq!(s.code(), tonic::Code::Unimplemented);
                    assert_eq!(s.message(), msg);
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        let long = format!("/{}/x", "a".repeat(10_000));
        match route(Surface::Client, &req(h2, grpc, &long)) {
            Route::UnknownGrpc(s) => assert!(s.message().len() < 300),
            other => panic!("{other:?}"),
        }
    }
}
