//! The operator console (`/ui/`, docs/console.md) against real three-member
//! clusters, over real sockets, driven with curl (a cookie jar per
//! "browser") and a raw socket for the server-sent event streams:
//!
//! - the cluster page lists every member with the leader, and the others'
//!   status (from the prober) arrives;
//! - keys: browse, view, put and delete through the forms with their CSRF
//!   token, writes without it (or from another origin) refused and not
//!   applied, markup in keys and values escaped, a plugin's denial shown
//!   with its reason;
//! - watch: the event stream sees a write made with etcdctl;
//! - `--enable-ui` turned off by a config edit takes the console away live;
//! - with auth on: sign-in through Authenticate, a user sees only what its
//!   role may read, root-only pages refused to others, sign-out.

use cairn_tests::curl::Reply;
use cairn_tests::{Cluster, Options, cairn_bin, etcdctl, eventually, wait_output};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// What curl got back; header names in lower case.
/// One browser: a cookie jar and the member it talks to.
struct Browser {
    base: String,
    jar: PathBuf,
}

impl Browser {
    fn new(dir: &Path, name: &str, client_url: &str) -> Browser {
        Browser {
            base: client_url.to_string(),
            jar: dir.join(format!("{name}.cookies")),
        }
    }

    fn request(&self, method: &str, path: &str, form: Option<&str>, extra: &[&str]) -> Reply {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--max-time", "20", "-X", method]);
        cmd.arg("-b").arg(&self.jar).arg("-c").arg(&self.jar);
        for h in extra {
            cmd.args(["-H", h]);
        }
        if let Some(f) = form {
            cmd.args(["--data-raw", f]);
        }
        cairn_tests::curl::run(cmd, &format!("{}{path}", self.base))
    }

    /// A `multipart/form-data` POST from the console's own page, as the
    /// plugin forms send it: text fields taken literally, and files.
    fn upload(&self, path: &str, fields: &[(&str, &str)], files: &[(&str, &str)]) -> Reply {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--max-time", "20"]);
        cmd.arg("-b").arg(&self.jar).arg("-c").arg(&self.jar);
        cmd.args(["-H", &format!("Origin: {}", self.base)]);
        for (k, v) in fields {
            cmd.arg("--form-string").arg(format!("{k}={v}"));
        }
        for (k, f) in files {
            cmd.arg("-F").arg(format!("{k}=@{f}"));
        }
        cairn_tests::curl::run(cmd, &format!("{}{path}", self.base))
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[])
    }

    /// A form POST as the browser sends it from the console's own page.
    fn post(&self, path: &str, form: &str) -> Reply {
        let origin = format!("Origin: {}", self.base);
        self.request("POST", path, Some(form), &[&origin])
    }

    /// The browser's cookies as a `Cookie` header value (from curl's jar,
    /// where HttpOnly cookies' lines start with `#HttpOnly_`).
    fn cookie_header(&self) -> String {
        let jar = std::fs::read_to_string(&self.jar).unwrap_or_default();
        jar.lines()
            .filter(|l| l.starts_with("#HttpOnly_") || !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 7).then(|| format!("{}={}", f[5], f[6]))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The CSRF token the console put in this browser's forms.
    fn csrf(&self) -> String {
        let page = self.get("/ui/keys");
        let marker = r#"name="csrf" value=""#;
        let token = page
            .body
            .split_once(marker)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(t, _)| t.to_string());
        token.unwrap_or_else(|| {
            // The login page carries one too (auth on, signed out).
            let login = self.get("/ui/login");
            let (_, rest) = login.body.split_once(marker).expect("a csrf field");
            rest.split_once('"').expect("quoted").0.to_string()
        })
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn ok(o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Reads a server-sent event stream on a raw socket until `needle` shows
/// up or `timeout` passes; returns what arrived. `after_open` runs once the
/// response headers are in (the watcher exists by then).
fn sse_until(
    client_url: &str,
    cookie: &str,
    path: &str,
    needle: &str,
    timeout: Duration,
    after_open: impl FnOnce(),
) -> String {
    let addr = client_url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut opened = Some(after_open);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the event stream: {e}"),
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("event: start")
            && let Some(f) = opened.take()
        {
            f();
        }
        if text.contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn plugins_dist(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

#[test]
fn console_shows_the_cluster_and_edits_keys_with_csrf_and_plugins() {
    // etcd has no console.
    if cairn_tests::target() == cairn_tests::Target::Etcd {
        return;
    }
    let c = Cluster::start(Options {
        config_toml: Some(String::new()),
        ..Options::default()
    });
    let leader = c.wait_leader(WAIT);
    let b = Browser::new(c.dir.path(), "b0", &c.members[0].client_url());

    // The cluster page: every member, the leader named, auth-off warning;
    // the peers' figures arrive from the prober within a few rounds.
    let page = eventually(WAIT, || {
        let p = b.get("/ui/");
        (p.status == 200 && p.body.matches(r#"<span class="ok">healthy</span>"#).count() == 3)
            .then_some(p)
    })
    .unwrap_or_else(|| panic!("not three healthy members: {}", b.get("/ui/").body));
    for m in &c.members {
        assert!(
            page.body.contains(&format!("<th scope=\"row\">{}", m.name)),
            "{}",
            page.body
        );
        assert!(page.body.contains(&m.client_url()), "{}", page.body);
    }
    assert!(
        page.body.contains(&format!(
            r#"<dd id="leader">{}</dd>"#,
            c.members[leader].name
        )),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches(r#"badge leader"#).count(), 1);
    assert!(page.body.contains(r#"id="auth-off""#));
    assert!(page.body.contains("Leader changes"));
    assert!(
        page.body.contains(" ms</td>"),
        "no RTT shown: {}",
        page.body
    );
    // Nothing outside the member: only our own assets, under a CSP.
    assert!(!page.body.contains("src=\"http") && !page.body.contains("href=\"http"));
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let js = b.get("/ui/assets/console.js");
    assert_eq!(js.status, 200);
    assert!(js.body.contains("EventSource"));
    // The live stream sends the same fragment.
    let live = sse_until(
        &c.members[1].client_url(),
        "",
        "/ui/events/cluster",
        "id=\"members\"",
        WAIT,
        || {},
    );
    assert!(live.contains("event: cluster"), "{live}");

    // Markup in a key and a value is shown as text, never as markup.
    let e = c.endpoints();
    ok(etcdctl(
        &e,
        &["put", "/c/<script>alert(1)", "<img src=x onerror=alert(2)>"],
        None,
    ));
    ok(etcdctl(
        &e,
        &["put", "/c/doc", r#"{"b":[1,2],"a":"x"}"#],
        None,
    ));
    ok(etcdctl(&e, &["put", "/c/dir/inner", "v"], None));
    let list = b.get("/ui/keys?prefix=%2Fc%2F");
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains("&lt;script&gt;alert(1)</a>"),
        "{}",
        list.body
    );
    assert!(!list.body.contains("<script>alert"), "{}", list.body);
    assert!(
        list.body
            .contains(r#"href="/ui/keys?prefix=%2Fc%2Fdir%2F">dir/</a>"#),
        "{}",
        list.body
    );
    let view = b.get(&format!("/ui/key?key={}", enc("/c/<script>alert(1)")));
    assert_eq!(view.status, 200);
    assert!(
        view.body.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{}",
        view.body
    );
    assert!(!view.body.contains("<img src=x"), "{}", view.body);
    let doc = b.get("/ui/key?key=%2Fc%2Fdoc");
    assert!(doc.body.contains("(JSON)"), "{}", doc.body);
    assert!(
        doc.body.contains("&quot;b&quot;: [\n    1,"),
        "{}",
        doc.body
    );

    // A write without the CSRF token, with a wrong one, or from another
    // origin is refused and changes nothing.
    let token = b.csrf();
    let no_token = b.post("/ui/key/put", "key=%2Fc%2Fnew&value=1&confirm=yes");
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    let wrong = b.post(
        "/ui/key/put",
        &format!("key=%2Fc%2Fnew&value=1&confirm=yes&csrf={}", "0".repeat(64)),
    );
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let cross = b.request(
        "POST",
        "/ui/key/put",
        Some(&format!("key=%2Fc%2Fnew&value=1&confirm=yes&csrf={token}")),
        &["Origin: http://evil.example"],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let absent = ok(etcdctl(&e, &["get", "/c/new", "--print-value-only"], None));
    assert!(absent.trim().is_empty(), "a refused form wrote: {absent}");

    // With the token: a confirmation page first, then the write.
    let review = b.post(
        "/ui/key/put",
        &format!("key=%2Fc%2Fnew&value=first&csrf={token}"),
    );
    assert_eq!(review.status, 200);
    assert!(
        review.body.contains(r#"name="confirm" value="yes""#),
        "{}",
        review.body
    );
    assert!(ok(etcdctl(&e, &["get", "/c/new"], None)).trim().is_empty());
    let done = b.post(
        "/ui/key/put",
        &format!("key=%2Fc%2Fnew&value=second&confirm=yes&csrf={token}"),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let rev: i64 = done
        .body
        .split_once("Written at revision ")
        .and_then(|(_, r)| r.split_once('.'))
        .and_then(|(r, _)| r.parse().ok())
        .unwrap_or_else(|| panic!("{}", done.body));
    assert_eq!(
        ok(etcdctl(&e, &["get", "/c/new", "--print-value-only"], None)).trim(),
        "second"
    );
    let after = b.get("/ui/key?key=%2Fc%2Fnew");
    assert!(
        after
            .body
            .contains(&format!(r#"<dd id="mod-revision">{rev}</dd>"#)),
        "{}",
        after.body
    );

    // A textarea's CRLF line breaks (what browsers send) are stored as the
    // LFs the text had.
    let lines = b.post(
        "/ui/key/put",
        &format!("key=%2Fc%2Flines&value=l1%0D%0Al2&confirm=yes&csrf={token}"),
    );
    assert_eq!(lines.status, 200, "{}", lines.body);
    let stored = ok(etcdctl(&e, &["get", "/c/lines", "-w", "json"], None));
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(v["kvs"][0]["value"], "bDEKbDI=", "not l1\\nl2: {stored}");

    // Delete: confirmation, then gone.
    let hex: String = "/c/new".bytes().map(|b| format!("{b:02x}")).collect();
    let confirm = b.post("/ui/key/delete", &format!("hex={hex}&csrf={token}"));
    assert!(
        confirm.body.contains("Delete <code>/c/new</code>?"),
        "{}",
        confirm.body
    );
    assert!(!ok(etcdctl(&e, &["get", "/c/new"], None)).trim().is_empty());
    let deleted = b.post(
        "/ui/key/delete",
        &format!("hex={hex}&csrf={token}&confirm=yes"),
    );
    assert!(
        deleted.body.contains("Deleted 1 key(s)"),
        "{}",
        deleted.body
    );
    assert!(ok(etcdctl(&e, &["get", "/c/new"], None)).trim().is_empty());

    // A plugin's denial comes back with its reason.
    let mut deploy = Command::new(cairn_bin());
    deploy
        .args(["plugin", "deploy", "naming", &plugins_dist("key-naming")])
        .args(["--deadline", "2s", "--prefix", "/apps/"])
        .args([
            "--config",
            "prefixes=/apps/",
            "--config",
            "pattern=^/apps/[a-z0-9-]+$",
        ])
        .arg(format!("--endpoints={}", c.members[0].endpoint()))
        .env_remove("ETCDCTL_ENDPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(deploy.spawn().expect("cairn plugin"), WAIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let denied = eventually(WAIT, || {
        let r = b.post(
            "/ui/key/put",
            &format!("key=%2Fapps%2FBad_Name&value=x&confirm=yes&csrf={token}"),
        );
        (r.status == 403).then_some(r)
    })
    .expect("the plugin never denied the console's write");
    assert!(
        denied
            .body
            .contains("plugin &quot;naming&quot; denied the write"),
        "{}",
        denied.body
    );
    assert!(
        denied.body.contains("does not match the naming pattern"),
        "{}",
        denied.body
    );

    // The plugins page lists it, with its prefix, mode and the denial.
    let plugins = b.get("/ui/plugins");
    assert_eq!(plugins.status, 200);
    assert!(
        plugins.body.contains(r#"<th scope="row">naming</th>"#),
        "{}",
        plugins.body
    );
    assert!(
        plugins.body.contains("<code>/apps/</code>"),
        "{}",
        plugins.body
    );
    assert!(plugins.body.contains("enforce"), "{}", plugins.body);

    // The metrics page charts this member's own figures: puts sent to it
    // show up as calls to KV/Put once two samples (5 s apart) are in.
    let member0 = c.members[0].endpoint();
    for i in 0..3 {
        ok(etcdctl(&member0, &["put", &format!("/m/{i}"), "x"], None));
    }
    let charts = eventually(WAIT, || {
        let m = b.get("/ui/metrics?minutes=5");
        m.body
            .contains("<code>etcdserverpb.KV/Put</code>")
            .then_some(m)
    })
    .unwrap_or_else(|| panic!("no KV/Put rate: {}", b.get("/ui/metrics").body));
    for title in [
        "Requests",
        "Proposals",
        "Log fsync duration",
        "Database size",
        "Watchers and watch streams",
    ] {
        assert!(
            charts.body.contains(&format!("<h2>{title}</h2>")),
            "{title}: {}",
            charts.body
        );
    }
    assert!(charts.body.contains("<polyline"), "{}", charts.body);

    // Watch: a write made elsewhere arrives on the stream.
    let member2 = c.members[2].endpoint();
    let stream = sse_until(
        &c.members[1].client_url(),
        "",
        "/ui/events/watch?key=%2Fw%2F&prefix=1",
        r#""key":"/w/seen""#,
        WAIT,
        || {
            ok(etcdctl(&member2, &["put", "/w/seen", "<now>"], None));
        },
    );
    assert!(stream.contains("event: kv"), "{stream}");
    assert!(stream.contains(r#""value":"<now>""#), "{stream}");
    let watch_page = b.get("/ui/watch?key=%2Fw%2F&prefix=1");
    assert!(
        watch_page
            .body
            .contains(r#"data-src="/ui/events/watch?key=%2Fw%2F&amp;prefix=1&amp;rev=""#),
        "{}",
        watch_page.body
    );

    // --host-whitelist guards the console like every HTTP route.
    c.set_config_line(0, "host-whitelist", "\"localhost\"");
    let misdirected = eventually(WAIT, || (b.get("/ui/").status == 421).then_some(()));
    assert!(
        misdirected.is_some(),
        "the console ignores --host-whitelist"
    );
    c.set_config_line(0, "host-whitelist", "\"*\"");
    let served = eventually(WAIT, || (b.get("/ui/").status == 200).then_some(()));
    assert!(served.is_some());

    // --enable-ui=false in the config file takes the console away, live.
    c.set_config_line(0, "enable-ui", "false");
    let gone = eventually(WAIT, || (b.get("/ui/").status == 404).then_some(()));
    assert!(
        gone.is_some(),
        "the console is still served after enable-ui = false"
    );
    assert_eq!(b.get("/health").status, 200);
    c.set_config_line(0, "enable-ui", "true");
    let back = eventually(WAIT, || (b.get("/ui/").status == 200).then_some(()));
    assert!(back.is_some());
}

#[test]
fn console_with_auth_signs_in_and_shows_only_what_roles_allow() {
    // etcd has no console.
    if cairn_tests::target() == cairn_tests::Target::Etcd {
        return;
    }
    let c = Cluster::start(Options::default());
    let e = c.endpoints();
    let root = ["--user", "root:rootpw"];
    ok(etcdctl(&e, &["user", "add", "root:rootpw"], None));
    ok(etcdctl(&e, &["user", "add", "alice:alicepw"], None));
    ok(etcdctl(&e, &["role", "add", "reader"], None));
    ok(etcdctl(
        &e,
        &[
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "readwrite",
            "/public/",
        ],
        None,
    ));
    ok(etcdctl(
        &e,
        &["user", "grant-role", "alice", "reader"],
        None,
    ));
    ok(etcdctl(&e, &["auth", "enable"], None));
    let as_root = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(root);
        ok(etcdctl(&e, &a, None))
    };
    as_root(&["put", "/public/p", "open"]);
    as_root(&["put", "/secret/s", "topsecret"]);

    let b = Browser::new(c.dir.path(), "alice", &c.members[1].client_url());
    // Signed out: every page leads to the login form; streams refuse.
    let r = b.get("/ui/keys?prefix=%2Fsecret%2F");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/ui/login"));
    assert!(!r.body.contains("topsecret"));
    assert_eq!(b.get("/ui/events/cluster").status, 401);
    let login = b.get("/ui/login");
    assert_eq!(login.status, 200);
    assert!(!login.body.contains(r#"id="auth-off""#));
    let token = b.csrf();

    // A wrong password is etcd's refusal; a login without the token is
    // refused before any password is checked.
    let bad = b.post(
        "/ui/login",
        &format!("name=alice&password=nope&csrf={token}"),
    );
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("authentication failed"), "{}", bad.body);
    assert_eq!(
        b.post("/ui/login", "name=alice&password=alicepw").status,
        403
    );
    let good = b.post(
        "/ui/login",
        &format!("name=alice&password=alicepw&csrf={token}"),
    );
    assert_eq!(good.status, 303, "{}", good.body);
    let cookies: Vec<&str> = good
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("cairn_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );

    // Alice reads /public/ and nothing else.
    let home = b.get("/ui/");
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Signed in as <strong>alice</strong>"));
    let public = b.get("/ui/keys?prefix=%2Fpublic%2F");
    assert!(
        public.body.contains(r#"href="/ui/key?key=%2Fpublic%2Fp""#),
        "{}",
        public.body
    );
    for path in [
        "/ui/keys?prefix=%2Fsecret%2F",
        "/ui/keys",
        "/ui/keys?prefix=%2F",
    ] {
        let r = b.get(path);
        assert!(r.body.contains("permission denied"), "{path}: {}", r.body);
        assert!(
            !r.body.contains("/secret/s\"") && !r.body.contains("%2Fsecret%2Fs"),
            "{path}: {}",
            r.body
        );
    }
    let secret = b.get("/ui/key?key=%2Fsecret%2Fs");
    assert_eq!(secret.status, 403);
    assert!(!secret.body.contains("topsecret"), "{}", secret.body);
    // A watch stream: refused without the session, and with it for a
    // prefix alice may not read — with etcd's reason.
    let url = c.members[1].client_url();
    let anon = sse_until(
        &url,
        "",
        "/ui/events/watch?key=%2Fsecret%2F&prefix=1",
        "Sign in first",
        WAIT,
        || {},
    );
    assert!(anon.starts_with("HTTP/1.1 401"), "{anon}");
    let cookie = b.cookie_header();
    let denied = sse_until(
        &url,
        &cookie,
        "/ui/events/watch?key=%2Fsecret%2F&prefix=1",
        "event: end",
        WAIT,
        || {},
    );
    assert!(
        denied.contains("refused: etcdserver: permission denied"),
        "{denied}"
    );
    let allowed = sse_until(
        &url,
        &cookie,
        "/ui/events/watch?key=%2Fpublic%2F&prefix=1",
        r#""key":"/public/new""#,
        WAIT,
        || {
            as_root(&["put", "/public/new", "seen"]);
        },
    );
    assert!(allowed.contains(r#""value":"seen""#), "{allowed}");
    // Alice's writes go through auth in the apply loop like any other.
    let token = b.csrf();
    let w = b.post(
        "/ui/key/put",
        &format!("key=%2Fsecret%2Fs&value=mine&confirm=yes&csrf={token}"),
    );
    assert_eq!(w.status, 403);
    assert!(w.body.contains("permission denied"), "{}", w.body);
    let w = b.post(
        "/ui/key/put",
        &format!("key=%2Fpublic%2Fp&value=edited&confirm=yes&csrf={token}"),
    );
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(
        as_root(&["get", "/public/p", "--print-value-only"]).trim(),
        "edited"
    );
    // The configuration, plugins and metrics are root's.
    for page in ["/ui/config", "/ui/plugins", "/ui/metrics"] {
        let r = b.get(page);
        assert_eq!(r.status, 403, "{page}");
        assert!(r.body.contains("permission denied"), "{page}: {}", r.body);
    }

    // Sign out: the session is gone.
    let out = b.post("/ui/logout", &format!("csrf={token}"));
    assert_eq!(out.status, 303);
    assert_eq!(b.get("/ui/").status, 303);

    // Root sees everything, the configuration included.
    let r = Browser::new(c.dir.path(), "root", &c.members[2].client_url());
    let token = r.csrf();
    assert_eq!(
        r.post(
            "/ui/login",
            &format!("name=root&password=rootpw&csrf={token}")
        )
        .status,
        303
    );
    let all = r.get("/ui/keys?prefix=%2Fsecret%2F");
    assert!(
        all.body.contains(r#"href="/ui/key?key=%2Fsecret%2Fs""#),
        "{}",
        all.body
    );
    let cfg = r.get("/ui/config");
    assert_eq!(cfg.status, 200, "{}", cfg.body);
    assert!(
        cfg.body.contains("<code>--enable-ui</code>"),
        "{}",
        cfg.body
    );
    assert!(cfg.body.contains("live"), "{}", cfg.body);
    assert_eq!(r.get("/ui/plugins").status, 200);
    assert_eq!(r.get("/ui/metrics").status, 200);
}

#[test]
fn console_plugin_forms_dry_run_deploy_and_remove_for_root_only() {
    // etcd has no console.
    if cairn_tests::target() == cairn_tests::Target::Etcd {
        return;
    }
    let c = Cluster::start(Options::default());
    let e = c.endpoints();
    let root = ["--user", "root:rootpw"];
    ok(etcdctl(&e, &["user", "add", "root:rootpw"], None));
    ok(etcdctl(&e, &["user", "add", "alice:alicepw"], None));
    ok(etcdctl(&e, &["auth", "enable"], None));
    let as_root = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(root);
        etcdctl(&e, &a, None)
    };
    ok(as_root(&["put", "/apps/Bad_Name", "x"]));
    ok(as_root(&["put", "/apps/good-name", "x"]));
    ok(as_root(&["put", "/other/Whatever", "x"]));

    let sign_in = |who: &str, pw: &str, member: usize| {
        let b = Browser::new(c.dir.path(), who, &c.members[member].client_url());
        let token = b.csrf();
        let r = b.post(
            "/ui/login",
            &format!("name={who}&password={pw}&csrf={token}"),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        // A new session, a new CSRF token.
        (b.csrf(), b)
    };
    let (token, r) = sign_in("root", "rootpw", 0);
    let wasm = plugins_dist("key-naming");
    let settings = [
        ("prefixes", "/apps/"),
        ("config", "prefixes=/apps/\npattern=^/apps/[a-z0-9-]+$"),
        ("deadline", "2s"),
    ];
    let with = |extra: &[(&'static str, &'static str)], token: &str| {
        let mut f: Vec<(&str, String)> = vec![("csrf", token.to_string())];
        f.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
        f.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        f
    };
    let fields = |f: &[(&str, String)]| -> Vec<(String, String)> {
        f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    let upload = |b: &Browser, path: &str, f: &[(String, String)]| {
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.upload(path, &f, &[("wasm", wasm.as_str())])
    };

    // The page offers the forms to root.
    let page = r.get("/ui/plugins");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"action="/ui/plugins/dry-run""#));
    assert!(page.body.contains(r#"enctype="multipart/form-data""#));

    // Dry run: the existing key the candidate would reject, and only it.
    let dry = upload(&r, "/ui/plugins/dry-run", &fields(&with(&[], &token)));
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert!(dry.body.contains(r#"id="dry-run-report""#), "{}", dry.body);
    assert!(
        dry.body.contains("<code>/apps/Bad_Name</code>"),
        "{}",
        dry.body
    );
    assert!(
        dry.body.contains("does not match the naming pattern"),
        "{}",
        dry.body
    );
    assert!(dry.body.contains("<strong>1</strong> would be rejected"));
    assert!(!dry.body.contains("<code>/apps/good-name</code>"));
    assert!(!dry.body.contains("<code>/other/Whatever</code>"));
    // Bad input gets the admin API's own error.
    let bad = upload(
        &r,
        "/ui/plugins/dry-run",
        &fields(&with(&[("memory", "lots")], &token)),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("Dry run refused"), "{}", bad.body);

    // Without the CSRF token (or from another origin): refused, nothing
    // deployed.
    let no_csrf: Vec<(String, String)> = fields(&with(&[("name", "naming")], &token))
        .into_iter()
        .filter(|(k, _)| k != "csrf")
        .collect();
    let refused = upload(&r, "/ui/plugins/deploy", &no_csrf);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("CSRF"), "{}", refused.body);
    let elsewhere = r.request(
        "POST",
        "/ui/plugins/remove",
        Some(&format!("name=naming&confirm=yes&csrf={token}")),
        &["Origin: http://evil.example"],
    );
    assert_eq!(elsewhere.status, 403);
    assert!(r.get("/ui/plugins").body.contains(r#"id="no-plugins""#));

    // A user without the root role: 403 on every form, nothing changes.
    let (alice_token, alice) = sign_in("alice", "alicepw", 1);
    for path in ["/ui/plugins/dry-run", "/ui/plugins/deploy"] {
        let f = fields(&with(&[("name", "naming")], &alice_token));
        let denied = upload(&alice, path, &f);
        assert_eq!(denied.status, 403, "{path}: {}", denied.body);
        assert!(
            denied.body.contains("permission denied"),
            "{path}: {}",
            denied.body
        );
    }
    let denied = alice.post(
        "/ui/plugins/remove",
        &format!("name=naming&confirm=yes&csrf={alice_token}"),
    );
    assert_eq!(denied.status, 403, "{}", denied.body);

    // Deploy through the form; a put it forbids is then denied with the
    // plugin's reason.
    let deployed = upload(
        &r,
        "/ui/plugins/deploy",
        &fields(&with(
            &[
                ("name", "naming"),
                ("hooks", "validator"),
                ("mode", "enforce"),
            ],
            &token,
        )),
    );
    assert_eq!(deployed.status, 200, "{}", deployed.body);
    assert!(
        deployed.body.contains(r#"id="deployed""#),
        "{}",
        deployed.body
    );
    assert!(deployed.body.contains(r#"<th scope="row">naming</th>"#));
    // Until every member has compiled it: before that a member refuses
    // with `not_loaded` (fail-closed), which is not the answer asked for.
    let refusal = eventually(WAIT, || {
        let o = as_root(&["put", "/apps/Another_Bad", "x"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (!o.status.success() && err.contains("denied the write")).then_some(err)
    })
    .expect("the deployed plugin never denied a put");
    assert!(
        refusal.contains("does not match the naming pattern"),
        "{refusal}"
    );
    eventually(WAIT, || {
        as_root(&["put", "/apps/fine", "x"])
            .status
            .success()
            .then_some(())
    })
    .expect("a put the plugin allows stayed refused");

    // Remove: a confirmation page first (nothing removed yet), then the
    // removal; the put then succeeds.
    let confirm = r.post("/ui/plugins/remove", &format!("name=naming&csrf={token}"));
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm.body.contains(r#"name="confirm" value="yes""#),
        "{}",
        confirm.body
    );
    assert!(!as_root(&["put", "/apps/Still_Bad", "x"]).status.success());
    let removed = r.post(
        "/ui/plugins/remove",
        &format!("name=naming&confirm=yes&csrf={token}"),
    );
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert!(removed.body.contains(r#"id="removed""#), "{}", removed.body);
    eventually(WAIT, || {
        as_root(&["put", "/apps/Now_Fine", "x"])
            .status
            .success()
            .then_some(())
    })
    .expect("the put stayed denied after the plugin's removal");
    // Removing it again: the admin API's own "not deployed" error.
    let again = r.post(
        "/ui/plugins/remove",
        &format!("name=naming&confirm=yes&csrf={token}"),
    );
    assert_eq!(again.status, 404, "{}", again.body);
    assert!(again.body.contains("no plugin named"), "{}", again.body);
}

#[test]
fn console_plugins_page_shows_every_members_load_status() {
    if cairn_tests::target() == cairn_tests::Target::Etcd {
        return;
    }
    // Member 2 fails to load the plugin (a test hook standing in for, say,
    // a member short of memory); the deploy goes through member 0, whose
    // candidate check passes.
    let mut c = Cluster::start(Options {
        config_toml: Some(String::new()),
        member_env: vec![(2, "CAIRN_TEST_PLUGIN_LOAD_FAILURE".into(), "naming".into())],
        ..Options::default()
    });
    c.wait_leader(WAIT);
    let b = Browser::new(c.dir.path(), "b0", &c.members[0].client_url());
    let mut deploy = Command::new(cairn_bin());
    deploy
        .args(["plugin", "deploy", "naming", &plugins_dist("key-naming")])
        .args(["--deadline", "2s", "--prefix", "/apps/"])
        .args([
            "--config",
            "prefixes=/apps/",
            "--config",
            "pattern=^/apps/[a-z0-9-]+$",
        ])
        .arg(format!("--endpoints={}", c.members[0].endpoint()))
        .env_remove("ETCDCTL_ENDPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(deploy.spawn().expect("cairn plugin"), WAIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A denial on member 1, so its counts differ from member 0's.
    let e1 = c.members[1].endpoint();
    // (Until its component is compiled there, a call may fail instead.)
    eventually(WAIT, || {
        let out = etcdctl(&e1, &["put", "/apps/Bad_Name", "x"], None);
        String::from_utf8_lossy(&out.stderr)
            .contains("does not match the naming pattern")
            .then_some(())
    })
    .expect("member 1 never denied a put");

    // The page on member 0 lists every member's status of the plugin: its
    // own and member 1's loaded, member 2's failed with member 2's error,
    // and member 1's denial (reported by member 1's probe answers).
    let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
    let row = |body: &str, i: usize| -> Option<String> {
        let (_, rest) = body.split_once(r#"id="plugin-members""#)?;
        let marker = format!("<th scope=\"row\">{}", names[i]);
        let (_, rest) = rest.split_once(&marker)?;
        Some(rest.split_once("</tr>")?.0.to_string())
    };
    let page = eventually(WAIT, || {
        let p = b.get("/ui/plugins");
        let rows: Option<Vec<String>> = (0..3).map(|i| row(&p.body, i)).collect();
        let rows = rows?;
        (rows[0].contains("loaded")
            && rows[1].contains("loaded")
            // Load status, calls, denials, errors, mean latency.
            && rows[1].split("<td>").nth(3) == Some("1</td>")
            && rows[2].contains("failed"))
        .then_some(p)
    })
    .unwrap_or_else(|| panic!("not every member's status: {}", b.get("/ui/plugins").body));
    let failed = row(&page.body, 2).unwrap();
    assert!(
        failed.contains("refused on this member by CAIRN_TEST_PLUGIN_LOAD_FAILURE"),
        "{failed}"
    );
    assert!(row(&page.body, 0).unwrap().contains("(this member)"));
    for m in &c.members {
        assert!(
            page.body.contains(&format!("<li>{}: ", m.name)),
            "{}",
            page.body
        );
    }

    // The admin API answers the same, per plugin and member.
    let api = b.get("/cairn/v1/plugins");
    assert_eq!(api.status, 200, "{}", api.body);
    let v: serde_json::Value = serde_json::from_str(&api.body).expect("JSON");
    let members = v["plugins"][0]["members"].as_array().expect("members");
    let state = |i: usize| {
        members
            .iter()
            .find(|m| m["member"] == c.members[i].name.as_str())
            .map(|m| m["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state(0).as_deref(), Some("ready"), "{}", api.body);
    assert_eq!(state(1).as_deref(), Some("ready"), "{}", api.body);
    assert_eq!(state(2).as_deref(), Some("failed"), "{}", api.body);

    // A member that stops answering shows as unreachable; the page still
    // answers at once (it reads the last probes, it calls no peer).
    c.stop(1);
    eventually(WAIT, || {
        let started = Instant::now();
        let p = b.get("/ui/plugins");
        assert!(started.elapsed() < Duration::from_secs(10), "slow page");
        row(&p.body, 1)
            .is_some_and(|r| r.contains("unreachable"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("member 1 not unreachable: {}", b.get("/ui/plugins").body));
}
