//! Bad input gets a clear error and loses nothing: garbage on the client and
//! peer ports, raft-looking nonsense, oversized and malformed requests — and
//! the cluster keeps serving throughout.

use cairn_tests::{Cluster, Options, client, http_get, ok, raw_exchange, runtime};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use std::time::Duration;

fn cluster() -> Cluster {
    Cluster::start(Options::default())
}

#[test]
fn garbage_bytes_on_client_and_peer_ports() {
    let c = cluster();
    ok(c.etcdctl(&["put", "before", "1"]));
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for m in &c.members {
        for addr in [m.client_addr(), m.peer_addr()] {
            // Random bytes: an HTTP 400 (as etcd's peer port answers) or a
            // closed connection, never a crash.
            let resp = raw_exchange(&addr, &garbage);
            let text = String::from_utf8_lossy(&resp);
            assert!(
                resp.is_empty() || text.starts_with("HTTP/1.1 400"),
                "unexpected answer to garbage on {addr}: {text:?}"
            );
            // A valid HTTP/2 preface followed by junk frames.
            let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            h2.extend_from_slice(&[0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
            let _ = raw_exchange(&addr, &h2);
            // Plain HTTP to an unknown path: 404, as etcd's HTTP mux.
            let (status, _) = http_get(&addr, "/no/such/path").expect("http");
            assert_eq!(status, 404);
        }
    }
    // Raft endpoints reject gRPC calls from a different cluster (a grpc
    // stream with wrong metadata): covered by the peer service's checks; here
    // we only need the members to still be fine.
    for m in &c.members {
        assert_eq!(
            cairn_tests::health(&m.client_addr()),
            Some(true),
            "{} unhealthy",
            m.name
        );
    }
    ok(c.etcdctl(&["put", "after", "2"]));
    let out = ok(c.etcdctl(&["get", "before", "--prefix"]));
    assert_eq!(out, "before\n1\n");
}

#[test]
fn malformed_and_oversized_requests_get_etcd_errors() {
    let c = cluster();
    let rt = runtime();
    rt.block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        cl.put("keep", "me", None).await.unwrap();
        // Empty key, oversized value, too many ops, duplicate keys, bad
        // revisions: each refused with etcd's error, nothing written.
        let cases: Vec<(Result<(), etcd_client::Error>, &str)> = vec![
            (
                cl.put("", "v", None).await.map(drop),
                "etcdserver: key is not provided",
            ),
            (
                cl.put("big", vec![0u8; 1600 * 1024], None).await.map(drop),
                "etcdserver: request is too large",
            ),
            (
                cl.txn(
                    Txn::new().and_then(
                        (0..200)
                            .map(|i| TxnOp::put(format!("t{i}"), "v", None))
                            .collect::<Vec<_>>(),
                    ),
                )
                .await
                .map(drop),
                "etcdserver: too many operations in txn request",
            ),
            (
                cl.txn(
                    Txn::new()
                        .when([Compare::version("keep", CompareOp::Greater, 0)])
                        .and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]),
                )
                .await
                .map(drop),
                "etcdserver: duplicate key given in txn request",
            ),
            (
                cl.get(
                    "keep",
                    Some(etcd_client::GetOptions::new().with_revision(1_000_000)),
                )
                .await
                .map(drop),
                "etcdserver: mvcc: required revision is a future revision",
            ),
        ];
        for (i, (r, want)) in cases.into_iter().enumerate() {
            match r {
                Err(etcd_client::Error::GRpcStatus(s)) => assert_eq!(s.message(), want, "case {i}"),
                other => panic!("case {i}: expected {want:?}, got {other:?}"),
            }
        }
        let r = cl.get("keep", None).await.unwrap();
        assert_eq!(r.kvs()[0].value(), b"me");
        // Only the one put happened.
        assert_eq!(r.header().unwrap().revision(), 2);
    });
    // etcdctl sees the same errors.
    let out = c.etcdctl(&["get", "keep", "--rev=99999"]);
    assert!(!out.status.success());
    assert!(cairn_tests::stderr(&out).contains("required revision is a future revision"));
    c.wait_healthy(Duration::from_secs(10));
}
