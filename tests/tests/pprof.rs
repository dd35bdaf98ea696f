//! `--enable-pprof`: Go's `/debug/pprof/` paths on the client URL. A CPU
//! profile taken while clients write is fetched with curl, gunzipped and
//! decoded as `profile.proto` (by our own minimal reading of the format,
//! independent of the server's encoder); without the flag the paths are
//! 404, as etcd's.

use cairn_tests::{Cluster, Options, Target, etcdctl, target};
use prost::Message;
use std::io::Read;
use std::process::Command;
use std::time::Duration;

/// The fields of `perftools.profiles.Profile` the checks read.
#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
}

/// `curl` a path: (status, headers, body).
fn curl(url: &str, max_secs: u64) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-s", "--max-time", &max_secs.to_string(), "-D"])
        .arg(&headers)
        .args(["-w", "%{http_code}", "-o"])
        .arg(dir.path().join("body"))
        .arg(url)
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        code,
        std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .to_lowercase(),
        std::fs::read(dir.path().join("body")).unwrap_or_default(),
    )
}

#[test]
fn a_cpu_profile_is_gzipped_pprof_protobuf() {
    let c = Cluster::start(Options {
        members: 1,
        extra_args: vec!["--enable-pprof".into()],
        ..Options::default()
    });
    let base = format!("{}/debug/pprof", c.members[0].client_url());
    let (code, _, body) = curl(&format!("{base}/"), 10);
    assert_eq!(code, 200);
    let index = String::from_utf8_lossy(&body);
    assert!(index.contains("profile?debug=1"), "{index}");

    // Writes meanwhile, so the member has something to be sampled doing.
    let ep = c.members[0].endpoint();
    let load = std::thread::spawn(move || {
        for i in 0..300 {
            let _ = etcdctl(&ep, &["put", &format!("k{i}"), "v"], None);
        }
    });
    let (code, headers, body) = curl(&format!("{base}/profile?seconds=2"), 30);
    load.join().unwrap();
    assert_eq!(code, 200, "{headers}");
    assert!(
        headers.contains("content-type: application/octet-stream"),
        "{headers}"
    );
    assert!(
        headers.contains("content-disposition: attachment; filename=\"profile\""),
        "{headers}"
    );
    assert_eq!(&body[..2], [0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body.as_slice())
        .read_to_end(&mut raw)
        .expect("gunzip");
    let p = Profile::decode(raw.as_slice()).expect("profile.proto");
    let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].as_str();
    assert_eq!(s(0), "");
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|v| (s(v.r#type), s(v.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let period_type = p.period_type.as_ref().expect("period type");
    assert_eq!(
        (s(period_type.r#type), s(period_type.unit)),
        ("cpu", "nanoseconds")
    );
    // 100 Hz, as Go.
    assert_eq!(p.period, 10_000_000);
    assert!(
        (1_900_000_000..10_000_000_000).contains(&p.duration_nanos),
        "{}",
        p.duration_nanos
    );
    assert!(!p.sample.is_empty(), "no samples");
    // Every sample's locations and their functions resolve.
    let functions: std::collections::HashMap<u64, &str> =
        p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locations: std::collections::HashMap<u64, &Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let mut names = Vec::new();
    for sample in &p.sample {
        assert_eq!(sample.value.len(), 2);
        assert_eq!(sample.value[1], sample.value[0] * p.period);
        for id in &sample.location_id {
            let loc = locations.get(id).expect("location");
            for line in &loc.line {
                names.push(*functions.get(&line.function_id).expect("function"));
            }
        }
    }
    // Symbolized: the server's own functions by name.
    let own = if target() == Target::Etcd {
        "go.etcd.io/etcd"
    } else {
        "cairn::"
    };
    assert!(names.iter().any(|n| n.contains(own)), "{names:?}");

    // One profile at a time (Go's message).
    let busy_url = format!("{base}/profile?seconds=3");
    let first = std::thread::spawn(move || curl(&busy_url, 30));
    std::thread::sleep(Duration::from_millis(1000));
    let (code, _, body) = curl(&format!("{base}/profile?seconds=1"), 30);
    assert_eq!(code, 500);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "Could not enable CPU profiling: cpu profiling already in use\n"
    );
    assert_eq!(first.join().unwrap().0, 200);

    if target() == Target::Cairn {
        // Go runtime profiles have no Cairn counterpart: Go's answer for an
        // unknown profile, never made-up data.
        for name in ["heap", "goroutine", "allocs", "nonesuch"] {
            let (code, _, body) = curl(&format!("{base}/{name}"), 10);
            assert_eq!(code, 404, "{name}");
            assert_eq!(
                String::from_utf8_lossy(&body),
                "Unknown profile\n",
                "{name}"
            );
        }
        let (code, _, body) = curl(&format!("{base}/profile?seconds=100000"), 10);
        assert_eq!(code, 400);
        assert!(String::from_utf8_lossy(&body).contains("exceeds"));
    }
}

#[test]
fn without_the_flag_there_is_no_pprof() {
    let c = Cluster::start(Options {
        members: 1,
        ..Options::default()
    });
    let base = format!("{}/debug/pprof", c.members[0].client_url());
    for path in ["/", "/profile?seconds=1", "/heap"] {
        let (code, _, _) = curl(&format!("{base}{path}"), 10);
        assert_eq!(code, 404, "{path}");
    }
}
