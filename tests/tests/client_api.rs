//! The `etcd-client` crate against Cairn: the Range, Txn and Compact options
//! etcdctl cannot reach, and the errors etcd answers for bad requests.

use cairn_tests::{Cluster, Options, client, runtime};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

fn one_member() -> Cluster {
    Cluster::start(Options {
        members: 1,
        ..Options::default()
    })
}

fn status(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[track_caller]
fn assert_status(e: etcd_client::Error, code: Code, message: &str) {
    let s = status(e);
    assert_eq!(s.code(), code, "{s:?}");
    assert_eq!(s.message(), message);
}

async fn keys(c: &mut Client, key: &str, opts: GetOptions) -> Vec<String> {
    c.get(key, Some(opts))
        .await
        .expect("get")
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf8").to_string())
        .collect()
}

#[test]
fn range_options() {
    let cluster = one_member();
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        // a..e created at revisions 2..6; then c and a modified (7, 8).
        for k in ["a", "b", "c", "d", "e"] {
            c.put(k, format!("v-{k}"), None).await.unwrap();
        }
        c.put("c", "zz", None).await.unwrap();
        let r = c.put("a", "aa", None).await.unwrap();
        assert_eq!(r.header().unwrap().revision(), 8);

        // limit, more and count
        let r = c
            .get("a", Some(GetOptions::new().with_range("e").with_limit(2)))
            .await
            .unwrap();
        assert_eq!(r.kvs().len(), 2);
        assert!(r.more());
        assert_eq!(r.count(), 4);

        // count_only
        let r = c
            .get(
                "",
                Some(GetOptions::new().with_all_keys().with_count_only()),
            )
            .await
            .unwrap();
        assert!(r.kvs().is_empty());
        assert_eq!(r.count(), 5);

        // keys_only keeps metadata, drops values
        let r = c
            .get("c", Some(GetOptions::new().with_keys_only()))
            .await
            .unwrap();
        let kv = &r.kvs()[0];
        assert!(kv.value().is_empty());
        assert_eq!(
            (kv.create_revision(), kv.mod_revision(), kv.version()),
            (4, 7, 2)
        );

        // mod / create revision filters (count is before filtering, as in etcd)
        let all = || GetOptions::new().with_all_keys();
        assert_eq!(
            keys(&mut c, "", all().with_min_mod_revision(7)).await,
            ["a", "c"]
        );
        assert_eq!(
            keys(&mut c, "", all().with_max_mod_revision(3)).await,
            ["b"]
        );
        assert_eq!(
            keys(&mut c, "", all().with_min_create_revision(5)).await,
            ["d", "e"]
        );
        assert_eq!(
            keys(&mut c, "", all().with_max_create_revision(3)).await,
            ["a", "b"]
        );
        let r = c
            .get("", Some(all().with_min_mod_revision(7)))
            .await
            .unwrap();
        assert_eq!(r.count(), 5);

        // sorting on every target
        let sorted = |t, o| GetOptions::new().with_all_keys().with_sort(t, o);
        assert_eq!(
            keys(&mut c, "", sorted(SortTarget::Mod, SortOrder::Descend)).await,
            ["a", "c", "e", "d", "b"]
        );
        assert_eq!(
            keys(&mut c, "", sorted(SortTarget::Version, SortOrder::Descend)).await,
            ["a", "c", "b", "d", "e"]
        );
        assert_eq!(
            keys(&mut c, "", sorted(SortTarget::Value, SortOrder::Ascend)).await,
            ["a", "b", "d", "e", "c"]
        );
        assert_eq!(
            keys(&mut c, "", sorted(SortTarget::Create, SortOrder::Descend)).await,
            ["e", "d", "c", "b", "a"]
        );
        assert_eq!(
            keys(&mut c, "", sorted(SortTarget::Key, SortOrder::Descend)).await,
            ["e", "d", "c", "b", "a"]
        );
        // Sorting happens before the limit.
        let r = c
            .get(
                "",
                Some(sorted(SortTarget::Mod, SortOrder::Descend).with_limit(2)),
            )
            .await
            .unwrap();
        assert_eq!(r.kvs().len(), 2);
        assert_eq!(r.kvs()[0].key(), b"a");
        assert!(r.more());

        // reads at a past revision, serializable reads
        let r = c
            .get("a", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap();
        assert_eq!(r.kvs()[0].value(), b"v-a");
        assert_eq!(
            r.header().unwrap().revision(),
            8,
            "header carries the current revision"
        );
        let r = c
            .get("a", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert_eq!(r.kvs()[0].value(), b"aa");
    });
}

#[test]
fn txn_compares_and_nesting() {
    let cluster = one_member();
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        c.put("k1", "v1", None).await.unwrap(); // rev 2
        c.put("k2", "v2", None).await.unwrap(); // rev 3
        c.put("k2", "v2b", None).await.unwrap(); // rev 4

        let ok = |cmp: Compare| Txn::new().when([cmp]);
        let cases: Vec<(Compare, bool)> = vec![
            (Compare::version("k2", CompareOp::Equal, 2), true),
            (Compare::version("k2", CompareOp::Greater, 2), false),
            (Compare::version("k2", CompareOp::Less, 3), true),
            (Compare::version("k2", CompareOp::NotEqual, 2), false),
            (Compare::create_revision("k2", CompareOp::Equal, 3), true),
            (Compare::mod_revision("k2", CompareOp::Equal, 4), true),
            (Compare::mod_revision("k1", CompareOp::Less, 3), true),
            (Compare::value("k1", CompareOp::Equal, "v1"), true),
            (Compare::value("k1", CompareOp::Greater, "v0"), true),
            (Compare::value("k1", CompareOp::Less, "v0"), false),
            (Compare::lease("k1", CompareOp::Equal, 0), true),
            // A missing key: version/create/mod compare against 0 ...
            (Compare::version("nope", CompareOp::Equal, 0), true),
            (Compare::create_revision("nope", CompareOp::Equal, 0), true),
            // ... but a value compare on a missing key always fails.
            (Compare::value("nope", CompareOp::NotEqual, "x"), false),
            // range_end on a compare: every key in [k1, k3) must match.
            (
                Compare::version("k1", CompareOp::Greater, 0).with_range("k3"),
                true,
            ),
            (
                Compare::version("k1", CompareOp::Equal, 1).with_range("k3"),
                false,
            ),
            (
                Compare::mod_revision("k", CompareOp::Less, 5).with_prefix(),
                true,
            ),
        ];
        for (i, (cmp, want)) in cases.into_iter().enumerate() {
            let r = c.txn(ok(cmp)).await.unwrap();
            assert_eq!(r.succeeded(), want, "case {i}");
            assert_eq!(
                r.header().unwrap().revision(),
                4,
                "a txn without writes keeps the revision"
            );
        }

        // Nested txns; every op of the taken branches runs under one revision.
        let inner = Txn::new()
            .when([Compare::value("k1", CompareOp::Equal, "v1")])
            .and_then([TxnOp::put("n1", "x", None), TxnOp::get("k1", None)])
            .or_else([TxnOp::put("n1", "never", None)]);
        let outer = Txn::new()
            .when([Compare::version("k2", CompareOp::Equal, 2)])
            .and_then([
                TxnOp::put("o1", "y", None),
                TxnOp::txn(inner),
                TxnOp::delete("k2", None),
                TxnOp::get("o1", None),
            ]);
        let r = c.txn(outer).await.unwrap();
        assert!(r.succeeded());
        assert_eq!(r.header().unwrap().revision(), 5);
        let resps = r.op_responses();
        assert_eq!(resps.len(), 4);
        match &resps[1] {
            TxnOpResponse::Txn(t) => {
                assert!(t.succeeded());
                let inner = t.op_responses();
                match &inner[1] {
                    TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"v1"),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        match &resps[3] {
            // Reads inside a txn see the txn's own earlier writes.
            TxnOpResponse::Get(g) => {
                assert_eq!(g.kvs()[0].value(), b"y");
                assert_eq!(g.kvs()[0].mod_revision(), 5);
            }
            other => panic!("{other:?}"),
        }
        let n1 = c.get("n1", None).await.unwrap();
        assert_eq!(n1.kvs()[0].mod_revision(), 5);
        assert!(c.get("k2", None).await.unwrap().kvs().is_empty());

        // A read-only txn with a range at an old revision.
        let r = c
            .txn(Txn::new().and_then([TxnOp::get("k2", Some(GetOptions::new().with_revision(3)))]))
            .await
            .unwrap();
        match &r.op_responses()[0] {
            TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"v2"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn txn_limits_and_errors() {
    let cluster = one_member();
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let ops: Vec<TxnOp> = (0..129)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect();
        let e = c.txn(Txn::new().and_then(ops)).await.unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        let ops: Vec<TxnOp> = (0..128)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect();
        c.txn(Txn::new().and_then(ops))
            .await
            .expect("128 ops are allowed");

        let e = c
            .txn(Txn::new().and_then([TxnOp::put("a", "1", None), TxnOp::put("a", "2", None)]))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        let e = c
            .txn(Txn::new().and_then([
                TxnOp::delete("a", Some(DeleteOptions::new().with_prefix())),
                TxnOp::put("ab", "2", None),
            ]))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );

        // A failing put inside a txn changes nothing, not even earlier ops.
        let before = c
            .get("zz", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let e = c
            .txn(Txn::new().and_then([
                TxnOp::put("zz", "1", None),
                TxnOp::put("yy", "", Some(PutOptions::new().with_ignore_value())),
            ]))
            .await
            .unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key not found");
        let r = c.get("zz", None).await.unwrap();
        assert!(r.kvs().is_empty());
        assert_eq!(r.header().unwrap().revision(), before);

        let e = c.put("", "v", None).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key is not provided");
        let e = c.get("", None).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key is not provided");
        let e = c.delete("", None).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key is not provided");
        let e = c
            .put("k", "v", Some(PutOptions::new().with_lease(12345)))
            .await
            .unwrap_err();
        assert_status(e, Code::NotFound, "etcdserver: requested lease not found");
        let e = c
            .put("k", "v", Some(PutOptions::new().with_ignore_value()))
            .await
            .unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: value is provided");
    });
}

#[test]
fn put_options_and_prev_kv() {
    let cluster = one_member();
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let e = c
            .put("k", "", Some(PutOptions::new().with_ignore_value()))
            .await
            .unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key not found");
        c.put("k", "v1", None).await.unwrap();
        let r = c
            .put(
                "k",
                "",
                Some(PutOptions::new().with_ignore_value().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(r.prev_key().unwrap().value(), b"v1");
        let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
        assert_eq!((kv.value(), kv.version()), (&b"v1"[..], 2));
        let r = c
            .put("k", "v3", Some(PutOptions::new().with_ignore_lease()))
            .await
            .unwrap();
        assert!(r.prev_key().is_none());
        let r = c
            .delete("k", Some(DeleteOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(r.deleted(), 1);
        assert_eq!(r.prev_kvs()[0].value(), b"v3");
        // Recreated: a new generation starts at version 1.
        c.put("k", "again", None).await.unwrap();
        let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
        assert_eq!(kv.version(), 1);
        assert_eq!(kv.create_revision(), kv.mod_revision());
    });
}

#[test]
fn compaction_rules() {
    let cluster = one_member();
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        for i in 0..10 {
            c.put("k", i.to_string(), None).await.unwrap(); // revs 2..=11
        }
        // etcd allows compacting revision 0 on a fresh history too.
        c.compact(0, None).await.expect("compact 0");
        let e = c.compact(12, None).await.unwrap_err();
        assert_status(
            e,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        c.compact(5, Some(CompactionOptions::new().with_physical()))
            .await
            .expect("physical compaction");
        let e = c.compact(5, None).await.unwrap_err();
        assert_status(
            e,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        let e = c
            .get("k", Some(GetOptions::new().with_revision(4)))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        let r = c
            .get("k", Some(GetOptions::new().with_revision(5)))
            .await
            .unwrap();
        assert_eq!(r.kvs()[0].value(), b"3");
        let e = c
            .get("k", Some(GetOptions::new().with_revision(99)))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        // A txn ranging at a compacted revision fails as a whole.
        let e = c
            .txn(Txn::new().and_then([
                TxnOp::put("other", "x", None),
                TxnOp::get("k", Some(GetOptions::new().with_revision(3))),
            ]))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert!(c.get("other", None).await.unwrap().kvs().is_empty());
    });
}

#[test]
fn request_size_limits() {
    let cluster = one_member();
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        // Above --max-request-bytes (1.5 MiB) but within gRPC's allowance.
        let big = vec![b'x'; 1024 * 1024 + 600 * 1024];
        let e = c.put("big", big, None).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: request is too large");
        // Above the gRPC receive limit (max-request-bytes + 512 KiB).
        let huge = vec![b'x'; 2 * 1024 * 1024 + 100];
        let s = status(c.put("huge", huge, None).await.unwrap_err());
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert!(
            s.message()
                .starts_with("grpc: received message larger than max"),
            "{s:?}"
        );
        // Just under the limit works, and the member keeps serving.
        let ok = vec![b'y'; 1024 * 1024];
        c.put("ok", ok.clone(), None).await.expect("1 MiB put");
        assert_eq!(c.get("ok", None).await.unwrap().kvs()[0].value(), &ok[..]);
    });
}
