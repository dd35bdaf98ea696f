//! Unit tests of the gateway's JSON mapping. Expected texts are what etcd
//! 3.4.23's gateway answered to the same input (checked with curl).

use super::*;
use crate::pb::mvccpb::{Event, KeyValue, event::EventType};
use bytes::Bytes;

fn json<T: serde::Serialize>(v: &T) -> String {
    String::from_utf8(gojson::to_vec(v).unwrap()).unwrap()
}

fn decode<T: HasSchema + DeserializeOwned>(s: &str) -> Result<T, String> {
    jsonpb::decode::<T>(s.as_bytes())
}

fn header() -> pb::ResponseHeader {
    pb::ResponseHeader {
        cluster_id: 14841639068965178418,
        member_id: 10276657743932975437,
        revision: 2,
        raft_term: 3,
    }
}

#[test]
fn range_response_reads_like_etcd_docs() {
    let resp = pb::RangeResponse {
        header: Some(header()),
        kvs: vec![KeyValue {
            key: Bytes::from_static(b"foo"),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: Bytes::from_static(b"bar"),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    assert_eq!(
        json(&resp),
        r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"2","raft_term":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
    );
}

#[test]
fn output_uses_proto_names_and_omits_defaults() {
    // A delete event: type by name; a put event has no `type` at all.
    let ev = Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: Bytes::from_static(b"foo"),
            mod_revision: 4,
            ..Default::default()
        }),
        prev_kv: None,
    };
    assert_eq!(
        json(&ev),
        r#"{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"}}"#
    );
    let put = Event::default();
    assert_eq!(json(&put), "{}");
    // etcd's proto names are not all snake case.
    let grant = pb::LeaseTimeToLiveResponse {
        header: None,
        id: 7,
        ttl: 59,
        granted_ttl: 60,
        keys: vec![],
    };
    assert_eq!(json(&grant), r#"{"ID":"7","TTL":"59","grantedTTL":"60"}"#);
    // 32-bit integers are numbers; a negative 64-bit one a string.
    let hash = pb::HashResponse {
        header: None,
        hash: 3341253052,
    };
    assert_eq!(json(&hash), r#"{"hash":3341253052}"#);
    let w = pb::WatchResponse {
        watch_id: -1,
        created: true,
        ..Default::default()
    };
    assert_eq!(json(&w), r#"{"watch_id":"-1","created":true}"#);
}

#[test]
fn requests_accept_both_names() {
    let a: pb::RangeRequest = decode(r#"{"key":"Zm9v","range_end":"Zm9w"}"#).unwrap();
    let b: pb::RangeRequest = decode(r#"{"key":"Zm9v","rangeEnd":"Zm9w"}"#).unwrap();
    assert_eq!(a, b);
    assert_eq!(&a.range_end[..], b"fop");
    // Both present: the lowerCamel one wins (Go's jsonpb).
    let c: pb::RangeRequest =
        decode(r#"{"key":"Zm9v","rangeEnd":"Zm9w","range_end":"AA=="}"#).unwrap();
    assert_eq!(&c.range_end[..], b"fop");
    // The generated pbjson impls themselves take either name too.
    let d: pb::RangeRequest = serde_json::from_str(r#"{"key":"Zm9v","rangeEnd":"Zm9w"}"#).unwrap();
    assert_eq!(a, d);
    let e: pb::LeaseGrantRequest = decode(r#"{"TTL":"60","ID":5}"#).unwrap();
    assert_eq!((e.ttl, e.id), (60, 5));
}

#[test]
fn requests_follow_jsonpb_rules() {
    // Unknown fields are ignored; null means unset; duplicates: last wins.
    let r: pb::RangeRequest =
        decode(r#"{"key":"Zm9v","unknown":{"x":[1,2]},"limit":null,"key":"YmFy"}"#).unwrap();
    assert_eq!(&r.key[..], b"bar");
    assert_eq!(r.limit, 0);
    // 64-bit integers as strings or numbers; whitespace inside quotes.
    let r: pb::RangeRequest = decode(r#"{"revision":" 7 ","limit":-3}"#).unwrap();
    assert_eq!((r.revision, r.limit), (7, -3));
    // Enums by name or number.
    let r: pb::RangeRequest = decode(r#"{"sort_order":"DESCEND","sortTarget":3}"#).unwrap();
    assert_eq!((r.sort_order, r.sort_target), (2, 3));
    // Bytes: base64 with newlines, or an array of byte values.
    let r: pb::RangeRequest = decode("{\"key\":\"Zm\\n9v\",\"range_end\":[102,111,112]}").unwrap();
    assert_eq!((&r.key[..], &r.range_end[..]), (&b"foo"[..], &b"fop"[..]));
    // A null request is the default request.
    let r: pb::RangeRequest = decode("null").unwrap();
    assert_eq!(r, pb::RangeRequest::default());
}

#[test]
fn txn_with_oneofs_and_nesting() {
    let t: pb::TxnRequest = decode(
        r#"{"compare":[{"target":"VALUE","result":"EQUAL","key":"Zm9v","value":"YmFy"}],
            "success":[{"request_put":{"key":"Zm9v","value":"YmF6"}},
                       {"requestTxn":{"success":[{"request_range":{"key":"Zm9v"}}]}}],
            "failure":[{"request_delete_range":null}]}"#,
    )
    .unwrap();
    use pb::compare::TargetUnion;
    use pb::request_op::Request as Op;
    assert_eq!(
        t.compare[0].target_union,
        Some(TargetUnion::Value(Bytes::from_static(b"bar")))
    );
    assert_eq!(
        t.compare[0].target,
        pb::compare::CompareTarget::Value as i32
    );
    assert!(matches!(&t.success[0].request, Some(Op::RequestPut(p)) if &p.value[..] == b"baz"));
    assert!(matches!(&t.success[1].request, Some(Op::RequestTxn(n)) if n.success.len() == 1));
    // Naming a oneof member selects it, even with null.
    assert!(matches!(
        &t.failure[0].request,
        Some(Op::RequestDeleteRange(_))
    ));
}

#[test]
fn request_errors_read_like_etcd() {
    let err = |s: &str| decode::<pb::RangeRequest>(s).unwrap_err();
    assert_eq!(
        err(r#"{"key":"Zm9v","sort_order":"FOO"}"#),
        r#"unknown value "FOO" for enum etcdserverpb.RangeRequest_SortOrder"#
    );
    assert_eq!(
        err(r#"{"key":"Zm9v","sort_order":"1"}"#),
        r#"unknown value "1" for enum etcdserverpb.RangeRequest_SortOrder"#
    );
    assert_eq!(
        err(r#"{"sort_order":1.5}"#),
        "json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.RangeRequest_SortOrder"
    );
    assert_eq!(
        err(r#"{"revision":"abc"}"#),
        "invalid character 'a' looking for beginning of value"
    );
    assert_eq!(err(r#"{"revision":""}"#), "unexpected end of JSON input");
    assert_eq!(
        err(r#"{"revision":1.0}"#),
        "json: cannot unmarshal number 1.0 into Go value of type int64"
    );
    assert_eq!(
        err(r#"{"revision":true}"#),
        "json: cannot unmarshal bool into Go value of type int64"
    );
    assert_eq!(
        err(r#"{"revision":99999999999999999999}"#),
        "json: cannot unmarshal number 99999999999999999999 into Go value of type int64"
    );
    assert_eq!(
        err(r#"{"min_mod_revision":"0x10"}"#),
        "invalid character 'x' after top-level value"
    );
    assert_eq!(
        err(r#"{"revision":"1 2"}"#),
        "invalid character '2' after top-level value"
    );
    assert_eq!(
        err(r#"{"keys_only":"true"}"#),
        "json: cannot unmarshal string into Go value of type bool"
    );
    assert_eq!(
        err(r#"{"keys_only":1}"#),
        "json: cannot unmarshal number into Go value of type bool"
    );
    assert_eq!(
        err(r#"{"key":5}"#),
        "json: cannot unmarshal number into Go value of type []uint8"
    );
    assert_eq!(
        err(r#"{"key":{}}"#),
        "json: cannot unmarshal object into Go value of type []uint8"
    );
    assert_eq!(
        err(r#"{"key":"Zm9"}"#),
        "illegal base64 data at input byte 0"
    );
    assert_eq!(
        err(r#"{"key":"Zm9v=="}"#),
        "illegal base64 data at input byte 4"
    );
    assert_eq!(
        err(r#"{"key":"Zm-v"}"#),
        "illegal base64 data at input byte 2"
    );
    assert_eq!(
        err(r#"{"key":[102,"a"]}"#),
        "json: cannot unmarshal string into Go value of type uint8"
    );
    assert_eq!(
        err(r#"{"key":[300]}"#),
        "json: cannot unmarshal number 300 into Go value of type uint8"
    );
    assert_eq!(
        err(r#""str""#),
        "json: cannot unmarshal string into Go value of type map[string]json.RawMessage"
    );
    assert_eq!(
        err("[1]"),
        "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
    );
    assert_eq!(
        err("true"),
        "json: cannot unmarshal bool into Go value of type map[string]json.RawMessage"
    );
    let err = |s: &str| decode::<pb::TxnRequest>(s).unwrap_err();
    assert_eq!(
        err(r#"{"compare":{}}"#),
        "json: cannot unmarshal object into Go value of type []json.RawMessage"
    );
    assert_eq!(
        err(r#"{"success":[5]}"#),
        "json: cannot unmarshal number into Go value of type map[string]json.RawMessage"
    );
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let mut s = String::new();
    for _ in 0..200 {
        s.push_str(r#"{"success":[{"request_txn":"#);
    }
    s.push_str("{}");
    for _ in 0..200 {
        s.push_str("}]}");
    }
    let e = decode::<pb::TxnRequest>(&s).unwrap_err();
    assert!(e.contains("deeper than"), "{e}");
    // Deep nesting inside an ignored field costs nothing.
    let ignored = format!("{{\"x\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    assert!(decode::<pb::RangeRequest>(&ignored).is_ok());
}

#[test]
fn every_route_is_distinct_and_etcd_paths_are_served() {
    let table = route_table();
    let paths: std::collections::HashSet<_> = table.iter().map(|(p, _)| *p).collect();
    assert_eq!(paths.len(), table.len());
    for p in [
        "/v3/kv/range",
        "/v3/kv/put",
        "/v3/kv/deleterange",
        "/v3/kv/txn",
        "/v3/kv/compaction",
        "/v3/watch",
        "/v3/lease/grant",
        "/v3/lease/revoke",
        "/v3/kv/lease/revoke",
        "/v3/lease/keepalive",
        "/v3/lease/timetolive",
        "/v3/kv/lease/timetolive",
        "/v3/lease/leases",
        "/v3/kv/lease/leases",
        "/v3/cluster/member/add",
        "/v3/cluster/member/remove",
        "/v3/cluster/member/update",
        "/v3/cluster/member/list",
        "/v3/cluster/member/promote",
        "/v3/maintenance/alarm",
        "/v3/maintenance/status",
        "/v3/maintenance/defragment",
        "/v3/maintenance/hash",
        "/v3/maintenance/hashkv",
        "/v3/maintenance/snapshot",
        "/v3/maintenance/transfer-leadership",
        "/v3/auth/enable",
        "/v3/auth/disable",
        "/v3/auth/authenticate",
        "/v3/auth/user/add",
        "/v3/auth/user/get",
        "/v3/auth/user/list",
        "/v3/auth/user/delete",
        "/v3/auth/user/changepw",
        "/v3/auth/user/grant",
        "/v3/auth/user/revoke",
        "/v3/auth/role/add",
        "/v3/auth/role/get",
        "/v3/auth/role/list",
        "/v3/auth/role/delete",
        "/v3/auth/role/grant",
        "/v3/auth/role/revoke",
        "/v3/lock/lock",
        "/v3/lock/unlock",
        "/v3/election/campaign",
        "/v3/election/proclaim",
        "/v3/election/leader",
        "/v3/election/observe",
        "/v3/election/resign",
    ] {
        assert!(paths.contains(p), "{p} not routed");
    }
}

#[test]
fn paths_are_cleaned_like_go() {
    assert_eq!(percent_decode("/v3/kv/%72ange"), "/v3/kv/range");
    assert_eq!(percent_decode("/v3/%zz"), "/v3/%zz");
}

#[test]
fn headers_become_grpc_metadata() {
    let mut h = HeaderMap::new();
    h.insert("authorization", "tok".parse().unwrap());
    h.insert("grpc-metadata-hasleader", "true".parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    let md = metadata(&h);
    assert_eq!(md.get("token").unwrap(), "tok");
    assert_eq!(md.get("hasleader").unwrap(), "true");
    assert!(md.get("content-type").is_none());
}

/// Mutated and truncated requests, decoded the way the gateway does:
/// every outcome is a value or an error, never a panic.
#[test]
fn arbitrary_input_never_panics() {
    let seeds: [&[u8]; 3] = [
        br#"{"compare":[{"target":"VALUE","key":"Zm9v","value":"YmFy","range_end":[1,2]}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6","lease":"7"}},{"requestTxn":{"success":[{"request_range":{"key":"Zm9v","sort_order":"DESCEND","revision":" 3 "}}]}}],"failure":[{"request_delete_range":null}]}"#,
        br#"{"create_request":{"key":"Zm9v","filters":["NOPUT",1,null],"start_revision":"-0","prev_kv":true}}"#,
        b"{\"key\":\"\\ud83d\\ude00\\u00e9\xff\",\"x\":[[[{}]]],\"limit\":1e3}",
    ];
    // xorshift: deterministic, no extra dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const NOISE: &[u8] = b"{}[]\":,\\ -0123456789.eEtrufalsn\x00\xff\nxu";
    for i in 0..20_000 {
        let mut input = seeds[i % seeds.len()].to_vec();
        for _ in 0..(rand() % 4) {
            if input.is_empty() {
                break;
            }
            let at = (rand() as usize) % input.len();
            match rand() % 3 {
                0 => input[at] = NOISE[(rand() as usize) % NOISE.len()],
                1 => input.truncate(at),
                _ => input.insert(at, NOISE[(rand() as usize) % NOISE.len()]),
            }
        }
        // As served: only what the scanner accepts reaches the decoder...
        if gojson::check_document(&input).is_ok() {
            let _ = decode::<pb::TxnRequest>(std::str::from_utf8(&input).unwrap_or("{}"));
            let _ = jsonpb::decode::<pb::WatchRequest>(&input);
            let _ = jsonpb::decode::<pb::RangeRequest>(&input);
        }
        // ... but the decoder copes with anything.
        let _ = jsonpb::decode::<pb::TxnRequest>(&input);
    }
}

#[test]
fn enum_numbers_without_a_name_are_kept() {
    // proto3 enums are open: Go's jsonpb keeps 99, and so does etcd.
    let r: pb::RangeRequest =
        decode(r#"{"key":"Zm9v","sort_order":99,"sort_target":"MOD"}"#).unwrap();
    assert_eq!(r.sort_order, 99);
    assert_eq!(r.sort_target, pb::range_request::SortTarget::Mod as i32);
    let w: pb::WatchCreateRequest = decode(r#"{"key":"Zm9v","filters":[0,7]}"#).unwrap();
    assert_eq!(w.filters, [0, 7]);
    // And they are written back as numbers.
    let perm = crate::pb::authpb::Permission {
        perm_type: 9,
        key: bytes::Bytes::from_static(b"a"),
        range_end: bytes::Bytes::new(),
    };
    assert_eq!(json(&perm), r#"{"permType":9,"key":"YQ=="}"#);
}
