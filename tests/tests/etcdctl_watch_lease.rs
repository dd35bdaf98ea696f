//! etcdctl 3.4's watch, lease, lock and elect commands against a
//! three-member cluster, compared with etcd 3.4.23's output (golden
//! transcripts, see `cairn_tests::golden`), plus the two-contender lock and
//! election behaviour (a resigning leader, a leader whose session expires).

use cairn_tests::golden::Transcript;
use cairn_tests::{Background, Cluster, Options, client, ok, runtime};
use std::time::{Duration, Instant};

fn hosts(test: u8) -> Option<Vec<String>> {
    Some((1..=3).map(|i| format!("127.77.{test}.{i}")).collect())
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn watch_matches_etcd() {
    let c = Cluster::start(Options {
        hosts: hosts(3),
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    let mut t = Transcript::new(&c);
    t.run(&e, &["put", "foo/a", "1"]); // rev 2
    t.run(&e, &["put", "foo/b", "2"]); // rev 3
    t.run(&e, &["put", "other", "x"]); // rev 4

    // History replay from a past revision, then live events; --prev-kv.
    let args = ["watch", "foo", "--prefix", "--rev=2", "--prev-kv"];
    let w = Background::etcdctl(&e, &args);
    assert!(
        w.wait_for(WAIT, |o| o.matches("PUT").count() >= 2),
        "{}",
        w.stdout()
    );
    t.run(&e, &["put", "foo/a", "11"]); // rev 5
    t.run(&e, &["del", "foo/b"]); // rev 6
    t.run_with_input(&e, &["txn"], Some("\nput foo/c 3\nput foo/d 4\n\n\n")); // rev 7
    assert!(w.wait_for(WAIT, |o| o.contains("foo/d")), "{}", w.stdout());
    let (out, err) = w.kill();
    t.record(&args, "", &out, &err, None);

    // A single key, from now on, JSON output.
    let args = ["watch", "other", "-w", "json"];
    let w = Background::etcdctl(&e, &args);
    std::thread::sleep(Duration::from_millis(500));
    t.run(&e, &["put", "other", "y"]); // rev 8
    assert!(w.wait_for(WAIT, |o| o.contains("Events")), "{}", w.stdout());
    let (out, err) = w.kill();
    t.record(&args, "", &out, &err, None);

    // Interactive: a watch from history, then a progress request. (One
    // watcher: the order of events across watchers is not defined.)
    let args = ["watch", "-i"];
    let mut w = Background::etcdctl(&e, &args);
    let input = "watch foo/ --prefix --rev=5\n";
    w.write_stdin(input);
    assert!(w.wait_for(WAIT, |o| o.contains("foo/d")), "{}", w.stdout());
    w.write_stdin("progress\n");
    assert!(
        w.wait_for(WAIT, |o| o.contains("progress notify")),
        "{}",
        w.stdout()
    );
    let (out, err, code) = w.finish(WAIT);
    t.record(&args, &format!("{input}progress\n"), &out, &err, code);

    // A compacted start revision cancels the watch.
    t.run(&e, &["compaction", "6"]);
    let args = ["watch", "foo", "--prefix", "--rev=3"];
    let w = Background::etcdctl(&e, &args);
    let (out, err, code) = w.finish(WAIT);
    t.record(&args, "", &out, &err, code);
    let args = ["watch", "foo", "--prefix", "--rev=3", "-w", "json"];
    let w = Background::etcdctl(&e, &args);
    let (out, err, code) = w.finish(WAIT);
    t.record(&args, "", &out, &err, code);
    t.check("watch");
}

fn lease_id(grant_output: &str) -> String {
    // "lease 694d7b4e4a8d0c05 granted with TTL(60s)"
    grant_output
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected grant output: {grant_output:?}"))
        .to_string()
}

#[test]
fn lease_matches_etcd() {
    let c = Cluster::start(Options {
        hosts: hosts(4),
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    let mut t = Transcript::new(&c);
    let id = lease_id(&t.run(&e, &["lease", "grant", "60"]));
    t.alias(
        u64::from_str_radix(&id, 16).expect("hex lease ID"),
        "<lease-a>",
    );
    t.run(&e, &["put", "k1", "v1", &format!("--lease={id}")]);
    t.run(&e, &["get", "k1", "-w", "json"]);
    t.run(&e, &["lease", "timetolive", &id]);
    // One key: with several, etcd lists them in random (Go map) order.
    t.run(&e, &["lease", "timetolive", &id, "--keys"]);
    t.run(&e, &["put", "k2", "v2", &format!("--lease={id}")]);
    t.run(&e, &["lease", "list"]);
    t.run(&e, &["lease", "keep-alive", "--once", &id]);
    // Keep-alive through a follower is forwarded to the leader.
    t.run(
        &c.members[1].endpoint(),
        &["lease", "keep-alive", "--once", &id],
    );
    let args = ["lease", "keep-alive", id.as_str()];
    let w = Background::etcdctl(&e, &args);
    assert!(
        w.wait_for(WAIT, |o| o.contains("keepalived")),
        "{}",
        w.stdout()
    );
    let (out, err) = w.kill();
    // Only the first line: how many arrive before the kill depends on timing.
    let first: String = out
        .lines()
        .next()
        .map(|l| format!("{l}\n"))
        .unwrap_or_default();
    t.record(&args, "", &first, &err, None);
    t.run(&e, &["lease", "revoke", &id]);
    t.run(&e, &["get", "k", "--prefix"]);
    t.run(&e, &["lease", "timetolive", &id]);
    t.run(&e, &["lease", "revoke", &id]);
    t.run(&e, &["lease", "keep-alive", "--once", &id]);
    t.run(&e, &["put", "k3", "v", &format!("--lease={id}")]);
    // A short lease expires by itself and takes its key along.
    let short = lease_id(&t.run(&e, &["lease", "grant", "2"]));
    t.alias(
        u64::from_str_radix(&short, 16).expect("hex lease ID"),
        "<lease-b>",
    );
    t.run(&e, &["put", "short", "v", &format!("--lease={short}")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(c.etcdctl_at(&e, &["get", "short"])).is_empty() {
        assert!(Instant::now() < deadline, "the short lease never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    t.run(&e, &["lease", "timetolive", &short]);
    t.run(&e, &["get", "short", "-w", "json"]);
    t.check("lease");
}

#[test]
fn lock_is_exclusive_and_follows_the_holder() {
    let c = Cluster::start(Options::default());
    let e = c.endpoints();
    // A holds the lock while its command runs; B queues behind it. Each
    // prints the time (ns) at which it held the lock.
    let a = Background::etcdctl(
        &e,
        &[
            "lock",
            "mylock",
            "--",
            "sh",
            "-c",
            "echo a-start $(date +%s%N); sleep 2; echo a-end $(date +%s%N)",
        ],
    );
    assert!(
        a.wait_for(WAIT, |o| o.contains("a-start")),
        "{}",
        a.stderr()
    );
    let b = Background::etcdctl(
        &e,
        &[
            "lock",
            "mylock",
            "--",
            "sh",
            "-c",
            "echo b-has-it $(date +%s%N)",
        ],
    );
    let (a_out, _, a_code) = a.finish(WAIT);
    assert_eq!(a_code, Some(0), "{a_out}");
    let (b_out, b_err, b_code) = b.finish(WAIT);
    assert_eq!(b_code, Some(0), "{b_err}");
    let stamp = |out: &str, tag: &str| -> u128 {
        out.lines()
            .find_map(|l| l.strip_prefix(tag))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {tag} in {out:?}"))
    };
    assert!(
        stamp(&b_out, "b-has-it ") >= stamp(&a_out, "a-end "),
        "B held the lock before A released it:\nA: {a_out}\nB: {b_out}"
    );

    // A holder that dies without unlocking: its session lease expires and
    // the next contender gets the lock.
    let a = Background::etcdctl(&e, &["lock", "--ttl=3", "mylock"]);
    assert!(
        a.wait_for(WAIT, |o| o.contains("mylock/")),
        "{}",
        a.stderr()
    );
    let b = Background::etcdctl(&e, &["lock", "mylock"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !b.stdout().contains("mylock/"),
        "B got the lock while A held it"
    );
    let killed = Instant::now();
    a.kill();
    assert!(
        b.wait_for(Duration::from_secs(20), |o| o.contains("mylock/")),
        "B never got the lock after A died"
    );
    // Not before A's lease could have expired (TTL 3 s, minus slack).
    assert!(
        killed.elapsed() >= Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    b.kill();
}

/// The proposals an `etcdctl elect -l` observer has printed, in order.
fn proposals(observer: &Background) -> Vec<String> {
    observer
        .stdout()
        .lines()
        .filter(|l| l.starts_with("proposal"))
        .map(String::from)
        .collect()
}

#[test]
fn elect_two_contenders() {
    let c = Cluster::start(Options::default());
    let e = c.endpoints();
    let observer = Background::etcdctl(&e, &["elect", "-l", "myelection"]);
    let a = Background::etcdctl(&e, &["elect", "myelection", "proposal-a"]);
    assert!(
        a.wait_for(WAIT, |o| o.contains("proposal-a")),
        "{}",
        a.stderr()
    );
    let b = Background::etcdctl(&e, &["elect", "myelection", "proposal-b"]);
    assert!(
        observer.wait_for(WAIT, |o| o.contains("proposal-a")),
        "{}",
        observer.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !b.stdout().contains("proposal-b"),
        "B leads while A is alive"
    );
    // A resigns (Ctrl-C): B takes over.
    a.interrupt(WAIT);
    assert!(
        b.wait_for(WAIT, |o| o.contains("proposal-b")),
        "{}",
        b.stderr()
    );
    assert!(
        observer.wait_for(WAIT, |o| o.contains("proposal-b")),
        "{}",
        observer.stdout()
    );
    let c2 = Background::etcdctl(&e, &["elect", "myelection", "proposal-c"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !c2.stdout().contains("proposal-c"),
        "C leads while B is alive"
    );
    b.interrupt(WAIT);
    assert!(
        c2.wait_for(WAIT, |o| o.contains("proposal-c")),
        "{}",
        c2.stderr()
    );
    assert!(
        observer.wait_for(WAIT, |o| o.contains("proposal-c")),
        "{}",
        observer.stdout()
    );
    assert_eq!(
        proposals(&observer),
        ["proposal-a", "proposal-b", "proposal-c"]
    );
    c2.interrupt(WAIT);
    observer.kill();
}

#[test]
fn elect_waits_for_a_dead_leaders_session_to_expire() {
    let c = Cluster::start(Options::default());
    let e = c.endpoints();
    // etcdctl 3.4's `elect` has no --ttl (its session lease lives 60 s), so
    // A's session is a short lease kept alive by an etcdctl process, and A
    // campaigns with it through the Election API; B and the observer are
    // plain `etcdctl elect`.
    const TTL: Duration = Duration::from_secs(5);
    let id = lease_id(&ok(c.etcdctl(&["lease", "grant", "5"])));
    let keepalive = Background::etcdctl(&e, &["lease", "keep-alive", &id]);
    assert!(
        keepalive.wait_for(WAIT, |o| o.contains("keepalived")),
        "{}",
        keepalive.stderr()
    );
    let lease = u64::from_str_radix(&id, 16).expect("hex lease ID") as i64;
    let rt = runtime();
    rt.block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        cl.campaign("myelection", "proposal-a", lease)
            .await
            .expect("A campaigns");
    });
    let observer = Background::etcdctl(&e, &["elect", "-l", "myelection"]);
    assert!(
        observer.wait_for(WAIT, |o| o.contains("proposal-a")),
        "{}",
        observer.stderr()
    );
    let b = Background::etcdctl(&e, &["elect", "myelection", "proposal-b"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !b.stdout().contains("proposal-b"),
        "B leads while A is alive"
    );
    // SIGKILL A's session keeper right after a keep-alive was answered: the
    // lease is not revoked and has (almost) its full TTL left.
    let answered = |o: &str| o.matches("keepalived").count();
    let before = answered(&keepalive.stdout());
    assert!(
        keepalive.wait_for(WAIT, |o| answered(o) > before),
        "{}",
        keepalive.stderr()
    );
    keepalive.kill();
    let killed = Instant::now();
    assert!(
        b.wait_for(Duration::from_secs(30), |o| o.contains("proposal-b")),
        "B never led after A's session died: {}",
        b.stderr()
    );
    let waited = killed.elapsed();
    assert!(
        waited >= TTL - Duration::from_secs(1),
        "B led {waited:?} after A's keeper died: before A's {TTL:?} lease could expire"
    );
    assert!(
        observer.wait_for(WAIT, |o| o.contains("proposal-b")),
        "{}",
        observer.stdout()
    );
    assert_eq!(proposals(&observer), ["proposal-a", "proposal-b"]);
    // A's session is gone: its lease expired rather than being revoked.
    let ttl = ok(c.etcdctl(&["lease", "timetolive", &id]));
    assert!(ttl.contains("already expired"), "{ttl}");
    b.interrupt(WAIT);
    observer.kill();
}
