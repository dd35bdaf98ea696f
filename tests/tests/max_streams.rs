//! `--max-concurrent-streams`: the per-connection HTTP/2 stream limit the
//! member advertises. A client at the limit holds further requests back
//! until a stream ends, as with etcd; nothing fails.

use cairn_tests::*;
use std::time::Duration;

#[test]
fn requests_beyond_max_concurrent_streams_wait_for_a_free_stream() {
    let c = Cluster::start(Options {
        members: 1,
        extra_args: vec!["--max-concurrent-streams=2".into()],
        ..Default::default()
    });
    runtime().block_on(async {
        // One connection: the client shares its channel between requests.
        let mut cl = client(&c.endpoint_list()).await;
        let w1 = cl.watch("a", None).await.expect("first watch stream");
        let w2 = cl.watch("b", None).await.expect("second watch stream");

        let mut third = cl.clone();
        let get = tokio::spawn(async move { third.get("a", None).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !get.is_finished(),
            "a third concurrent stream was not held back: {:?}",
            get.await
        );

        // Ending one stream lets the waiting request through.
        drop(w1);
        let resp = tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .expect("the request went ahead once a stream ended")
            .expect("task")
            .expect("get");
        assert_eq!(resp.count(), 0);
        drop(w2);

        // Well under the limit, requests flow as usual.
        cl.put("a", "1", None).await.expect("put");
        assert_eq!(cl.get("a", None).await.expect("get").count(), 1);
    });
}
