//! Hostile input: one request, packet or peer must never crash, hang, starve
//! or take over a member. Each test here reproduces an attack that worked
//! once and checks the member now refuses it cheaply and keeps serving.

use cairn_tests::{Cluster, Options, client, ok, runtime};
use etcd_client::{Txn, TxnOp};
use std::time::{Duration, Instant};

/// A binary tree of nested txns, `depth` levels: each inner txn has one
/// nested txn in its success and one in its failure branch; each leaf puts
/// `leaf_puts` distinct keys. Within etcd's shared op budget (the depth uses
/// one op per level) but with 2^depth × leaf_puts keys.
fn nested_tree(depth: u32, leaf_puts: usize, next: &mut usize) -> Txn {
    if depth == 0 {
        let puts = (0..leaf_puts)
            .map(|_| {
                *next += 1;
                TxnOp::put(format!("k{next}"), "v", None)
            })
            .collect::<Vec<_>>();
        return Txn::new().and_then(puts);
    }
    let a = nested_tree(depth - 1, leaf_puts, next);
    let b = nested_tree(depth - 1, leaf_puts, next);
    Txn::new()
        .and_then(vec![TxnOp::txn(a)])
        .or_else(vec![TxnOp::txn(b)])
}

/// 16,384 puts in nested txns whose last op repeats a key: etcd answers
/// `duplicate key` at once; a check that is quadratic in the number of puts
/// used to hold an async worker for seconds per request (two at once cost a
/// 3-member cluster its leader). Now the answer comes back well under a
/// second and other clients' writes go on meanwhile.
#[test]
fn a_huge_txn_with_a_repeated_key_is_refused_at_once() {
    let c = Cluster::start(Options::default());
    let leader = c.wait_leader(Duration::from_secs(10));
    let endpoint = c.members[leader].endpoint();
    let rt = runtime();
    rt.block_on(async {
        let mut bystander = client(std::slice::from_ref(&endpoint)).await;
        bystander.put("warm", "up", None).await.expect("put");
        let hostile = |_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut cl = client(&[endpoint]).await;
                let mut next = 0;
                let tree = nested_tree(13, 2, &mut next);
                let txn = Txn::new().and_then(vec![TxnOp::txn(tree), TxnOp::put("k1", "v", None)]);
                let started = Instant::now();
                let res = cl.txn(txn).await;
                (res.map(drop), started.elapsed())
            })
        };
        let attacks: Vec<_> = (0..2).map(hostile).collect();
        // Meanwhile an ordinary client keeps writing; none of its writes
        // may wait behind the hostile checks.
        let mut worst = Duration::ZERO;
        let writes_until = Instant::now() + Duration::from_secs(3);
        let mut i = 0;
        while Instant::now() < writes_until {
            let started = Instant::now();
            bystander
                .put(format!("bystander{i}"), "v", None)
                .await
                .expect("bystander put");
            worst = worst.max(started.elapsed());
            i += 1;
        }
        for a in attacks {
            let (res, took) = a.await.expect("attack task");
            let err = res.expect_err("a repeated key must be refused");
            assert!(
                err.to_string()
                    .contains("etcdserver: duplicate key given in txn request"),
                "{err}"
            );
            assert!(
                took < Duration::from_millis(900),
                "refused only after {took:?}"
            );
        }
        assert!(
            worst < Duration::from_millis(900),
            "an ordinary put waited {worst:?} behind the hostile txns"
        );
    });
    // Nothing of the hostile txns was written, and the leader stayed.
    assert_eq!(ok(c.etcdctl(&["get", "k1"])), "");
    assert_eq!(c.leader(), Some(leader));
}

/// gRPC calls to made-up methods are refused before anything counts them:
/// 2,000 calls with 8 KiB paths used to add a metrics series each (34 MB
/// of memory, a 36.7 MB `/metrics`). Now each gets grpc-go's Unimplemented
/// and `/metrics` stays the size it was.
#[test]
fn made_up_grpc_methods_do_not_grow_the_metrics() {
    let c = Cluster::start(Options {
        members: 1,
        ..Options::default()
    });
    let addr = c.members[0].client_addr();
    let metrics_bytes = || {
        let (status, body) = cairn_tests::http_get(&addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        body.len()
    };
    let before = metrics_bytes();
    let rt = runtime();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        for i in 0..2000 {
            let path = format!("/etcdserverpb.KV/{i}{}", "x".repeat(8 * 1024));
            grpc.ready().await.expect("ready");
            let status = grpc
                .unary::<(), (), _>(
                    tonic::Request::new(()),
                    path.parse().expect("path"),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .expect_err("no such method");
            assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
            if i == 0 {
                assert!(
                    status.message().starts_with("unknown method 0xxx"),
                    "{}",
                    status.message()
                );
                assert!(status.message().len() < 512, "the path is echoed whole");
            }
        }
        // Services that do not exist at all, likewise.
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                "/no.such.Service/Call".parse().expect("path"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("no such service");
        assert_eq!(status.message(), "unknown service no.such.Service");
    });
    let after = metrics_bytes();
    assert!(
        after < before + 16 * 1024,
        "/metrics grew from {before} to {after} bytes"
    );
    // The member still serves.
    ok(c.etcdctl(&["put", "after", "1"]));
}
