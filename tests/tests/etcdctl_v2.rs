//! etcdctl 3.4 with `ETCDCTL_API=2` against a three-member cluster: the
//! commands of old runbooks, compared with etcd 3.4.23's output (golden
//! transcript, see `cairn_tests::golden`), and the v2 keyspace surviving a
//! restart.

use cairn_tests::golden::Transcript;
use cairn_tests::{Background, Cluster, Options, etcdctl, eventually, stdout};
use std::time::Duration;

fn hosts(test: u8) -> Option<Vec<String>> {
    Some((1..=3).map(|i| format!("127.77.{test}.{i}")).collect())
}

const WAIT: Duration = Duration::from_secs(15);

fn v2(endpoints: &str, args: &[&str]) -> std::process::Output {
    etcdctl(endpoints, args, Some("2"))
}

#[test]
fn v2_commands_match_etcd() {
    let c = Cluster::start(Options {
        hosts: hosts(8),
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    let other = c.members[1].endpoint();
    let mut t = Transcript::new(&c);

    // Keys: set/get/mk/update and their errors.
    t.run_v2(&e, &["set", "foo", "bar"]);
    t.run_v2(&other, &["get", "foo"]);
    t.run_v2(&e, &["get", "missing"]);
    t.run_v2(&e, &["mk", "foo", "again"]);
    t.run_v2(&e, &["mk", "newkey", "v"]);
    t.run_v2(&e, &["update", "foo", "baz"]);
    t.run_v2(&e, &["update", "nokey", "x"]);
    t.run_v2(&e, &["get", "foo"]);

    // Directories and listings.
    t.run_v2(&e, &["mkdir", "dir1"]);
    t.run_v2(&e, &["mkdir", "dir1"]);
    t.run_v2(&e, &["set", "dir1/a", "1"]);
    t.run_v2(&e, &["set", "dir1/b", "2"]);
    t.run_v2(&e, &["set", "dir1/sub/c", "3"]);
    t.run_v2(&e, &["mkdir", "emptydir"]);
    t.run_v2(&e, &["ls", "--sort"]);
    t.run_v2(&e, &["ls", "--sort", "-r"]);
    t.run_v2(&e, &["ls", "--sort", "-p"]);
    t.run_v2(&e, &["ls", "--sort", "-r", "-p", "dir1"]);
    t.run_v2(&e, &["ls", "nodir"]);
    t.run_v2(&e, &["get", "dir1"]);

    // Removal: compare-and-delete, files vs directories.
    t.run_v2(&e, &["rm", "foo", "--with-value", "wrong"]);
    t.run_v2(&e, &["rm", "foo", "--with-value", "baz"]);
    t.run_v2(&e, &["get", "foo"]);
    t.run_v2(&e, &["rm", "dir1"]);
    t.run_v2(&e, &["rm", "--dir", "dir1"]);
    t.run_v2(&e, &["rmdir", "dir1/sub"]);
    t.run_v2(&e, &["rm", "-r", "dir1/sub"]);
    t.run_v2(&e, &["rmdir", "emptydir"]);
    t.run_v2(&e, &["rm", "--dir", "emptydir"]);
    t.run_v2(&e, &["ls", "--sort", "-r"]);

    // Watches: one event; --forever; --after-index from the history.
    let args = ["watch", "wkey"];
    let w = Background::etcdctl_v2(&e, &args);
    std::thread::sleep(Duration::from_millis(500));
    t.run_v2(&other, &["set", "wkey", "first"]);
    let (out, err, code) = w.finish(WAIT);
    t.record_v2(&args, &out, &err, code);

    let args = ["watch", "--forever", "wkey"];
    let w = Background::etcdctl_v2(&e, &args);
    std::thread::sleep(Duration::from_millis(500));
    t.run_v2(&other, &["set", "wkey", "second"]);
    t.run_v2(&other, &["set", "wkey", "third"]);
    assert!(w.wait_for(WAIT, |o| o.contains("third")), "{}", w.stdout());
    let (out, err) = w.kill();
    t.record_v2(&args, &out, &err, None);

    // The index of "second" differs between etcd and Cairn (etcd's v2 index
    // also counts its membership records), so ask for it and show it
    // symbolically.
    let out = v2(&e, &["-o", "extended", "set", "wkey", "fourth"]);
    let modified: u64 = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("Modified-Index: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Modified-Index in {}", stdout(&out)));
    t.run_v2(&e, &["set", "wkey", "fifth"]);
    let after = (modified - 1).to_string();
    let w = Background::etcdctl_v2(&e, &["watch", "--after-index", &after, "wkey"]);
    let (out, err, code) = w.finish(WAIT);
    t.record_v2(
        &["watch", "--after-index", "<index of fourth - 1>", "wkey"],
        &out,
        &err,
        code,
    );

    let args = ["watch", "-r", "tree"];
    let w = Background::etcdctl_v2(&e, &args);
    std::thread::sleep(Duration::from_millis(500));
    t.run_v2(&other, &["set", "tree/leaf", "green"]);
    let (out, err, code) = w.finish(WAIT);
    t.record_v2(&args, &out, &err, code);

    // Members and health.
    t.run_v2(&e, &["member", "list"]);
    t.run_v2(&e, &["cluster-health"]);
    // A voter change waits until every peer connection has been up for a
    // while (etcd's strict reconfiguration check); not recorded.
    let new_peer = "http://127.77.8.4:2380";
    let added = eventually(Duration::from_secs(20), || {
        let out = v2(&e, &["member", "add", "m4", new_peer]);
        out.status.success().then_some(out)
    })
    .expect("member add never succeeded");
    let text = stdout(&added);
    let id_hex = text
        .split_whitespace()
        .skip_while(|w| *w != "ID")
        .nth(1)
        .unwrap_or_else(|| panic!("no ID in {text}"))
        .to_string();
    let id = u64::from_str_radix(&id_hex, 16).expect("hex id");
    t.alias(id, "<id:m4>");
    // Members are listed by ID, and the new member's ID is time-derived, so
    // its position varies: record the cluster line with its entries sorted
    // by name, and check the member list without recording it.
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
            Some(rest) => {
                let mut parts: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                parts.sort();
                format!("ETCD_INITIAL_CLUSTER=\"{}\" (sorted)\n", parts.join(","))
            }
            None => format!("{l}\n"),
        })
        .collect();
    t.record_v2(
        &["member", "add", "m4", new_peer],
        &text,
        &String::from_utf8_lossy(&added.stderr),
        added.status.code(),
    );
    let list = stdout(&v2(&e, &["member", "list"]));
    assert!(
        list.contains(&format!("{id_hex}[unstarted]: peerURLs={new_peer}\n")),
        "{list}"
    );
    assert_eq!(list.lines().count(), 4, "{list}");
    t.run_v2(&e, &["member", "remove", &id_hex]);
    t.run_v2(&e, &["member", "remove", &id_hex]);
    t.run_v2(&e, &["member", "list"]);
    t.run_v2(&e, &["cluster-health"]);
    t.check("v2");
}

#[test]
fn v2_keys_survive_restart_and_expire_by_ttl() {
    let mut c = Cluster::start(Options::default());
    let e = c.members[0].endpoint();
    let out = v2(&e, &["set", "keep", "me"]);
    assert!(out.status.success(), "{out:?}");
    let out = v2(&e, &["set", "--ttl", "2", "brief", "x"]);
    assert!(out.status.success(), "{out:?}");
    // Expired by the leader's sweep, everywhere.
    let gone = eventually(Duration::from_secs(10), || {
        let out = v2(&c.endpoints(), &["get", "brief"]);
        String::from_utf8_lossy(&out.stderr)
            .contains("Key not found")
            .then_some(())
    });
    assert!(gone.is_some(), "the TTL key never expired");
    // The v2 keyspace is separate from v3.
    let out = etcdctl(&e, &["get", "keep"], None);
    assert_eq!(stdout(&out), "", "v2 keys must not show up in v3");
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_healthy(Duration::from_secs(30));
    for m in &c.members {
        let out = v2(&m.endpoint(), &["get", "keep"]);
        assert_eq!(stdout(&out).trim(), "me", "{}: {out:?}", m.name);
    }
}

#[test]
fn v2_stats_machines_and_members_endpoints() {
    let c = Cluster::start(Options::default());
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let out = v2(&c.members[leader].endpoint(), &["set", "s", "1"]);
    assert!(out.status.success(), "{out:?}");
    let get = |i: usize, path: &str| {
        let (status, body) = cairn_tests::http_get(&c.members[i].client_addr(), path).expect(path);
        let json =
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null);
        (status, body, json)
    };
    let (status, _, me) = get(leader, "/v2/stats/self");
    assert_eq!(status, 200);
    assert_eq!(me["state"], "StateLeader", "{me}");
    assert_eq!(me["name"], c.members[leader].name.as_str());
    assert!(me["sendAppendRequestCnt"].as_u64().unwrap_or(0) > 0, "{me}");
    let (_, _, f) = get(follower, "/v2/stats/self");
    assert_eq!(f["state"], "StateFollower", "{f}");
    assert_eq!(f["leaderInfo"]["leader"], me["id"], "{f}");
    assert!(f["recvAppendRequestCnt"].as_u64().unwrap_or(0) > 0, "{f}");
    // Leader stats: one entry per follower; only the leader answers.
    let (status, _, ls) = get(leader, "/v2/stats/leader");
    assert_eq!(status, 200);
    assert_eq!(
        ls["followers"].as_object().map(|o| o.len()),
        Some(2),
        "{ls}"
    );
    let (status, _, _) = get(follower, "/v2/stats/leader");
    assert_eq!(status, 403);
    let (_, _, store) = get(leader, "/v2/stats/store");
    assert!(store["setsSuccess"].as_u64().unwrap_or(0) >= 1, "{store}");
    let (status, body, _) = get(follower, "/v2/machines");
    assert_eq!(status, 200);
    for m in &c.members {
        assert!(body.contains(&m.client_url()), "{body}");
    }
    let (_, _, members) = get(follower, "/v2/members");
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );
    let (status, _, l) = get(follower, "/v2/members/leader");
    assert_eq!(status, 200);
    assert_eq!(l["name"], c.members[leader].name.as_str(), "{l}");
}

/// The v2 auth API through etcdctl's `user`, `role` and `auth` commands:
/// users and roles, grants and revokes, enabling auth (root needed, guest
/// created), and keys checked against roles once it is on.
#[test]
fn v2_auth_commands_match_etcd() {
    let c = Cluster::start(Options {
        hosts: Some((1..=3).map(|i| format!("127.77.21.{i}")).collect()),
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    let other = c.members[1].endpoint();
    let mut t = Transcript::new(&c);
    let root = ["--username", "root:rootpw"];
    let as_root = |args: &[&'static str]| -> Vec<&'static str> {
        root.iter().chain(args.iter()).copied().collect()
    };

    t.run_v2(&e, &["auth", "enable"]);
    t.run_v2(&e, &["user", "add", "root:rootpw"]);
    t.run_v2(&e, &["user", "add", "alice:pw"]);
    t.run_v2(&other, &["user", "list"]);
    t.run_v2(&e, &["user", "get", "root"]);
    t.run_v2(&e, &["user", "get", "alice"]);
    t.run_v2(&e, &["user", "get", "nobody"]);
    t.run_v2(&e, &["role", "add", "reader"]);
    t.run_v2(&e, &["role", "add", "reader"]);
    t.run_v2(&e, &["role", "add", "root"]);
    t.run_v2(&e, &["role", "list"]);
    t.run_v2(
        &e,
        &["role", "grant", "reader", "--path", "/foo/*", "--read"],
    );
    t.run_v2(
        &e,
        &["role", "grant", "reader", "--path", "/foo/*", "--read"],
    );
    t.run_v2(&e, &["role", "get", "reader"]);
    t.run_v2(&e, &["role", "get", "root"]);
    t.run_v2(&e, &["role", "get", "nobody"]);
    t.run_v2(&e, &["user", "grant", "alice", "--roles", "reader"]);
    t.run_v2(&e, &["user", "grant", "alice", "--roles", "reader"]);
    t.run_v2(&e, &["user", "get", "alice"]);
    t.run_v2(&e, &["set", "/foo/x", "before"]);

    // On: guest (full access until changed) for anonymous requests, roles
    // for users, root for the auth API itself.
    t.run_v2(&e, &["auth", "enable"]);
    t.run_v2(&e, &["auth", "enable"]);
    t.run_v2(&e, &["role", "list"]);
    t.run_v2(&other, &as_root(&["role", "list"]));
    t.run_v2(&e, &as_root(&["role", "get", "guest"]));
    t.run_v2(&e, &["get", "/foo/x"]);
    t.run_v2(
        &e,
        &as_root(&["role", "revoke", "guest", "--path", "/*", "--readwrite"]),
    );
    t.run_v2(&other, &["get", "/foo/x"]);
    t.run_v2(&e, &["set", "/foo/x", "anon"]);
    t.run_v2(&e, &as_root(&["set", "/foo/x", "root"]));
    t.run_v2(&other, &["--username", "alice:pw", "get", "/foo/x"]);
    t.run_v2(&e, &["--username", "alice:pw", "set", "/foo/x", "alice"]);
    t.run_v2(&e, &["--username", "alice:bad", "get", "/foo/x"]);
    t.run_v2(&e, &["--username", "alice:pw", "role", "list"]);

    t.run_v2(
        &e,
        &as_root(&["user", "revoke", "alice", "--roles", "reader"]),
    );
    t.run_v2(
        &e,
        &as_root(&["user", "revoke", "alice", "--roles", "reader"]),
    );
    t.run_v2(&e, &["--username", "alice:pw", "get", "/foo/x"]);
    t.run_v2(
        &e,
        &as_root(&["role", "revoke", "reader", "--path", "/foo/*", "--read"]),
    );
    t.run_v2(&e, &as_root(&["user", "remove", "root"]));
    t.run_v2(&e, &as_root(&["role", "remove", "root"]));
    t.run_v2(&e, &as_root(&["role", "remove", "reader"]));
    t.run_v2(&e, &as_root(&["role", "remove", "reader"]));
    t.run_v2(&e, &as_root(&["user", "remove", "alice"]));
    t.run_v2(&e, &as_root(&["user", "remove", "alice"]));
    t.run_v2(&e, &as_root(&["auth", "disable"]));
    t.run_v2(&e, &["auth", "disable"]);
    t.run_v2(&e, &["get", "/foo/x"]);
    t.check("v2_auth");
}

/// The v2 auth API's bodies and status codes, with curl: the JSON etcd
/// writes, a password change (etcdctl's `passwd` needs a terminal), and the
/// checks on request bodies.
#[test]
fn v2_auth_http_api() {
    let c = Cluster::start(Options {
        members: 1,
        ..Options::default()
    });
    let url = c.members[0].client_url();
    let curl = |args: &[&str]| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (body.to_string(), code.to_string())
    };
    let put = |path: &str, body: &str, creds: Option<&str>| {
        let mut args = vec![
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ];
        if let Some(cr) = creds {
            args.extend(["-u", cr]);
        }
        let full = format!("{url}{path}");
        args.push(&full);
        curl(&args)
    };
    assert_eq!(
        curl(&[&format!("{url}/v2/auth/enable")]),
        ("{\"enabled\":false}\n".into(), "200".into())
    );
    assert_eq!(
        curl(&[&format!("{url}/v2/auth/users")]),
        ("{\"users\":null}\n".into(), "200".into())
    );
    assert_eq!(
        put(
            "/v2/auth/users/root",
            r#"{"user":"root","password":"pw1"}"#,
            None
        ),
        (
            "{\"user\":\"root\",\"roles\":[\"root\"]}\n".into(),
            "201".into()
        )
    );
    // Go's decoder: the first value only, field names in any case.
    assert_eq!(
        put(
            "/v2/auth/users/bob",
            r#"{"USER":"bob","Password":"x"} junk"#,
            None
        )
        .1,
        "201"
    );
    assert_eq!(
        put(
            "/v2/auth/users/bob",
            r#"{"user":"carol","password":"x"}"#,
            None
        ),
        (
            "{\"message\":\"User JSON name does not match the name in the URL\"}".into(),
            "400".into()
        )
    );
    assert_eq!(
        put("/v2/auth/users/bob", "{", None),
        (
            "{\"message\":\"Invalid JSON in request body.\"}".into(),
            "400".into()
        )
    );
    assert_eq!(
        put("/v2/auth/users/dave", r#"{"user":"dave"}"#, None),
        (
            "{\"message\":\"auth: Cannot create user dave with an empty password\"}".into(),
            "400".into()
        )
    );
    assert_eq!(
        put(
            "/v2/auth/roles/r1",
            r#"{"role":"r1","permissions":{"kv":{"read":["/a/*"],"write":[]}}}"#,
            None
        ),
        (
            "{\"role\":\"r1\",\"permissions\":{\"kv\":{\"read\":[\"/a/*\"],\"write\":[]}}}\n"
                .into(),
            "201".into()
        )
    );
    assert_eq!(
        curl(&[&format!("{url}/v2/auth/roles")]),
        (
            "{\"roles\":[{\"role\":\"r1\",\"permissions\":{\"kv\":{\"read\":[\"/a/*\"],\"write\":[]}}},\
             {\"role\":\"root\",\"permissions\":{\"kv\":{\"read\":[\"/*\"],\"write\":[\"/*\"]}}}]}\n"
                .into(),
            "200".into()
        )
    );
    assert_eq!(
        curl(&["-X", "PUT", &format!("{url}/v2/auth/enable")]).1,
        "200"
    );
    // Everything but GET of the switch now needs root.
    assert_eq!(
        curl(&[&format!("{url}/v2/auth/users")]),
        (
            "{\"message\":\"Insufficient credentials\"}".into(),
            "401".into()
        )
    );
    assert_eq!(
        curl(&["-u", "root:pw1", &format!("{url}/v2/auth/enable")]),
        ("{\"enabled\":true}\n".into(), "200".into())
    );
    // Changing root's password: the old one stops working at once.
    assert_eq!(
        put(
            "/v2/auth/users/root",
            r#"{"user":"root","password":"pw2"}"#,
            Some("root:pw1")
        )
        .1,
        "200"
    );
    assert_eq!(
        curl(&["-u", "root:pw1", &format!("{url}/v2/auth/users")]).1,
        "401"
    );
    let (body, code) = curl(&["-u", "root:pw2", &format!("{url}/v2/auth/users/bob")]);
    assert_eq!(
        (body.as_str(), code.as_str()),
        ("{\"user\":\"bob\"}\n", "200")
    );
    assert_eq!(
        curl(&["-u", "root:pw2", &format!("{url}/v2/auth/users/a/b")]),
        ("{\"message\":\"Invalid path\"}".into(), "400".into())
    );
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "-u",
            "root:pw2",
            &format!("{url}/v2/auth/users")
        ])
        .1,
        "405"
    );
    // Membership changes need root too; reading the list does not.
    assert_eq!(curl(&[&format!("{url}/v2/members")]).1, "200");
    let (body, code) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"peerURLs":["http://127.0.0.1:1"]}"#,
        &format!("{url}/v2/members"),
    ]);
    assert_eq!(
        (body.as_str(), code.as_str()),
        ("{\"message\":\"Insufficient credentials\"}", "401")
    );
}

/// etcd's v2 index also counts the membership records it keeps in the v2
/// store, so `watch --after-index=1` set right after start waits for the
/// next change instead of missing it (or failing with 401), and member
/// changes move the index as etcd's do.
#[test]
fn v2_index_counts_membership_records() {
    let c = Cluster::start(Options::default());
    let e = c.members[0].endpoint();
    let index = |ep: &str| -> u64 {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-D",
                "-",
                "-o",
                "/dev/null",
                &format!("{ep}/v2/keys/"),
            ])
            .output()
            .expect("curl");
        let head = String::from_utf8_lossy(&out.stdout).into_owned();
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-etcd-index")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no X-Etcd-Index in {head}"))
    };
    // Three raftAttributes, three published attributes, one cluster
    // version (etcd may write the version twice while members come up).
    let start = index(&e);
    assert!((7..=8).contains(&start), "v2 index after start: {start}");

    let w = Background::etcdctl_v2(&e, &["watch", "--after-index=1", "foo"]);
    std::thread::sleep(Duration::from_millis(500));
    let out = v2(&c.members[1].endpoint(), &["set", "foo", "bar"]);
    assert!(out.status.success(), "{out:?}");
    let (out, err, code) = w.finish(WAIT);
    assert_eq!((out.as_str(), code), ("bar\n", Some(0)), "{err}");

    // A member add writes one record, a removal two.
    let before = index(&e);
    let added = eventually(Duration::from_secs(20), || {
        let out = etcdctl(
            &e,
            &["member", "add", "m4", "--peer-urls=http://127.0.0.1:9"],
            None,
        );
        out.status.success().then_some(out)
    })
    .expect("member add never succeeded");
    // "Member <hex id> added to cluster <hex id>"
    let id = stdout(&added)
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .map(str::to_string)
        .expect("member ID");
    let after_add = eventually(WAIT, || {
        let i = index(&e);
        (i > before).then_some(i)
    })
    .expect("index never moved");
    assert_eq!(after_add, before + 1);
    let out = etcdctl(&e, &["member", "remove", &id], None);
    assert!(out.status.success(), "{out:?}");
    let after_remove = eventually(WAIT, || {
        let i = index(&e);
        (i > after_add + 1).then_some(i)
    })
    .expect("index never moved");
    assert_eq!(after_remove, after_add + 2);
}
