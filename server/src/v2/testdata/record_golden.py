#!/usr/bin/env python3
"""Records golden v2 responses from a real etcd 3.4 for http_tests.rs.

Run against a *fresh* single-member etcd 3.4.23 started with --enable-v2
(its v2 index is 3 after boot: the test backend starts its store there):

  etcd --enable-v2 --name e1 --data-dir /tmp/e1 \
    --listen-client-urls http://127.0.0.1:23791 \
    --advertise-client-urls http://127.0.0.1:23791 \
    --listen-peer-urls http://127.0.0.1:23801 \
    --initial-advertise-peer-urls http://127.0.0.1:23801 \
    --initial-cluster e1=http://127.0.0.1:23801
  python3 record_golden.py http://127.0.0.1:23791 > golden.jsonl

Each output line: the request (method, raw target, optional body and
content type) and the response (status, selected headers, body).
"loose": compare status and headers only (Go-specific error text).
Not recorded, because they belong to etcd's outer HTTP layers rather than
the v2 handlers: CORS (OPTIONS answered 200, Access-Control-* headers) and
paths outside /v2/ (e.g. "//v2/keys", which Go's mux redirects).
"""
import http.client
import json
import sys
import urllib.parse

FORM = "application/x-www-form-urlencoded"
JSONCT = "application/json"

# (method, target, body, content-type, flags)
CASES = [
    ("GET", "/v2/keys/", None, None, ""),
    ("GET", "/v2/keys", None, None, ""),
    ("PUT", "/v2/keys/foo", "value=bar", FORM, ""),
    ("PUT", "/v2/keys/foo", "value=baz", FORM, ""),
    ("GET", "/v2/keys/foo", None, None, ""),
    ("HEAD", "/v2/keys/foo", None, None, ""),
    ("GET", "/v2/keys/nokey", None, None, ""),
    ("HEAD", "/v2/keys/nokey", None, None, ""),
    ("PUT", "/v2/keys/foo/bar", "value=x", FORM, ""),
    ("GET", "/v2/keys/foo/bar/baz", None, None, ""),
    ("PUT", "/v2/keys/dir/a", "value=1", FORM, ""),
    ("PUT", "/v2/keys/dir/b", "value=2", FORM, ""),
    ("PUT", "/v2/keys/dir/_hidden", "value=h", FORM, ""),
    ("PUT", "/v2/keys/dir/sub/c", "value=3", FORM, ""),
    ("GET", "/v2/keys/dir", None, None, ""),
    ("GET", "/v2/keys/dir/?recursive=true&sorted=true", None, None, ""),
    ("GET", "/v2/keys/dir/_hidden", None, None, ""),
    ("GET", "/v2/keys/?quorum=false&recursive=true&sorted=true", None, None, ""),
    ("GET", "/v2/keys/dir?quorum=true&recursive=false&sorted=false", None, None, ""),
    ("GET", "/v2/keys/nokey?quorum=true", None, None, ""),
    ("PUT", "/v2/keys/dir", "value=x", FORM, ""),
    ("DELETE", "/v2/keys/dir", None, None, ""),
    ("DELETE", "/v2/keys/dir?dir=true", None, None, ""),
    ("PUT", "/v2/keys/", "value=x", FORM, ""),
    ("DELETE", "/v2/keys/?recursive=true", None, None, ""),
    ("DELETE", "/v2/keys/?prevValue=x", None, None, ""),
    ("PUT", "/v2/keys/?prevExist=true", "value=1", FORM, ""),
    ("POST", "/v2/keys/queue", "value=job1", FORM, ""),
    ("POST", "/v2/keys/queue", "dir=true", FORM, ""),
    ("POST", "/v2/keys/queue", None, None, ""),
    ("GET", "/v2/keys/queue?sorted=true", None, None, ""),
    ("POST", "/v2/keys/", "value=x", FORM, ""),
    ("GET", "/v2/keys/foo?wait=true&waitIndex=abc", None, None, ""),
    ("PUT", "/v2/keys/k?ttl=abc", "value=x", FORM, ""),
    ("PUT", "/v2/keys/k", "value=x&ttl=-5", FORM, ""),
    ("PUT", "/v2/keys/k", "value=x&ttl=", FORM, ""),
    ("PUT", "/v2/keys/k", "value=x&ttl=99999999999999999999", FORM, ""),
    ("PUT", "/v2/keys/k", "value=x&ttl=9999999999", FORM, ""),
    ("PUT", "/v2/keys/k?prevIndex=abc", "value=x", FORM, ""),
    ("PUT", "/v2/keys/k?prevIndex=0", "value=y", FORM, ""),
    ("PUT", "/v2/keys/k?prevValue=", "value=x", FORM, ""),
    ("PUT", "/v2/keys/k?prevExist=maybe", "value=x", FORM, ""),
    ("PUT", "/v2/keys/k?refresh=true", "value=x", FORM, ""),
    ("PUT", "/v2/keys/k?refresh=true", None, None, ""),
    ("PUT", "/v2/keys/k?refresh=maybe", None, None, ""),
    ("PUT", "/v2/keys/k?wait=true", "value=x", FORM, ""),
    ("PUT", "/v2/keys/k?recursive=yes", None, None, ""),
    ("GET", "/v2/keys/k?sorted=2", None, None, ""),
    ("GET", "/v2/keys/k?stream=x", None, None, ""),
    ("GET", "/v2/keys/k?noValueOnSuccess=x", None, None, ""),
    ("GET", "/v2/keys/k?quorum=x&dir=x", None, None, ""),
    ("GET", "/v2/keys/k?wait=x", None, None, ""),
    ("GET", "/v2/keys/k?recursive=T&sorted=0", None, None, ""),
    ("PUT", "/v2/keys/k?prevIndex=%zz", "value=1", FORM, ""),
    ("PUT", "/v2/keys/k", "value=%zz", FORM, ""),
    ("PUT", "/v2/keys/k?a=1;b=2", "value=1", FORM, ""),
    ("PUT", "/v2/keys/k?dir=true", "value=x", FORM, ""),
    ("PATCH", "/v2/keys/k", None, None, ""),
    ("PUT", "/v2/keys/t1", "value=a&ttl=100", FORM, ""),
    ("GET", "/v2/keys/t1", None, None, ""),
    ("PUT", "/v2/keys/t1?refresh=true", "ttl=200", FORM, ""),
    ("PUT", "/v2/keys/t1?refresh=true&prevExist=true", "ttl=300", FORM, ""),
    ("PUT", "/v2/keys/t1?prevValue=a&refresh=true", "ttl=400", FORM, ""),
    ("PUT", "/v2/keys/t1?prevExist=true", "value=b", FORM, ""),
    ("PUT", "/v2/keys/nope?refresh=true", "ttl=5", FORM, ""),
    ("PUT", "/v2/keys/tdir?dir=true&prevExist=false", "ttl=100", FORM, ""),
    ("PUT", "/v2/keys/tdir?prevExist=true&dir=true", "ttl=500", FORM, ""),
    ("GET", "/v2/keys/tdir", None, None, ""),
    ("PUT", "/v2/keys/tdir?prevExist=true", "value=x", FORM, ""),
    ("PUT", "/v2/keys/tdir?prevExist=true", None, None, ""),
    ("GET", "/v2/keys/tdir", None, None, ""),
    ("PUT", "/v2/keys/nope?prevExist=true", "value=x", FORM, ""),
    ("PUT", "/v2/keys/c1", "value=one", FORM, ""),
    ("PUT", "/v2/keys/c1?prevValue=two", "value=x", FORM, ""),
    ("PUT", "/v2/keys/c1?prevIndex=3", "value=x", FORM, ""),
    ("PUT", "/v2/keys/c1?prevIndex=3&prevValue=two", "value=x", FORM, ""),
    ("PUT", "/v2/keys/c1?prevValue=one", "value=x", FORM, ""),
    ("PUT", "/v2/keys/c1?prevExist=true&prevValue=x", "value=y", FORM, ""),
    ("PUT", "/v2/keys/c9?prevValue=one", "value=x", FORM, ""),
    ("PUT", "/v2/keys/c1?prevExist=false", "value=x", FORM, ""),
    ("PUT", "/v2/keys/c1?prevExist=false&prevValue=x", "value=x", FORM, ""),
    ("PUT", "/v2/keys/queue?prevValue=x", "value=x", FORM, ""),
    ("DELETE", "/v2/keys/c1?prevValue=zz", None, None, ""),
    ("DELETE", "/v2/keys/c1?prevIndex=1", None, None, ""),
    ("DELETE", "/v2/keys/queue?prevIndex=1", None, None, ""),
    ("DELETE", "/v2/keys/c1?prevValue=y&prevIndex=0", None, None, ""),
    ("PUT", "/v2/keys/nv?noValueOnSuccess=true", "value=3", FORM, ""),
    ("GET", "/v2/keys/nv?noValueOnSuccess=true", None, None, ""),
    ("DELETE", "/v2/keys/nv?noValueOnSuccess=true", None, None, ""),
    ("PUT", "/v2/keys/tp", "value=abc", "text/plain", ""),
    ("PUT", "/v2/keys/tp", "value=abc", None, ""),
    ("PUT", "/v2/keys/tp?value=fromquery", "value=frombody", FORM, ""),
    ("PUT", "/v2/keys/tp?value=fromquery", None, None, ""),
    ("PUT", "/v2/keys/tp", "value=1&value=2", FORM, ""),
    ("DELETE", "/v2/keys/tp", "value=ignored", FORM, ""),
    ("PUT", "/v2/keys/a%2Fb", "value=1", FORM, ""),
    ("PUT", "/v2/keys/sp%20ace", "value=h%C3%A9llo+world", FORM, ""),
    ("PUT", "/v2/keys/html%3C", "value=%3Ca%26b%3E", FORM, ""),
    ("PUT", "/v2/keys/ctl", "value=a%09b%01c%E2%80%A8%22%5C", FORM, ""),
    ("GET", "/v2/keys/a/", None, None, ""),
    ("PUT", "/v2/keys/e?dir=true", None, None, ""),
    ("DELETE", "/v2/keys/e?dir=true", None, None, ""),
    ("PUT", "/v2/keys/f", "value=1", FORM, ""),
    ("DELETE", "/v2/keys/f?dir=true", None, None, ""),
    ("DELETE", "/v2/keys/dir?recursive=true", None, None, ""),
    ("GET", "/v2/keys/foo?wait=true&waitIndex=4", None, None, ""),
    ("GET", "/v2/keys/?wait=true&waitIndex=6&recursive=true", None, None, ""),
    ("GET", "/v2/keys/dir/sub/c?wait=true&waitIndex=20", None, None, ""),
    ("PUT", "/v2/keys//dbl//slash/", "value=1", FORM, ""),
    ("GET", "/v2/keys/x/../y?wait=true", None, None, ""),
    ("GET", "/v2/members", None, None, ""),
    ("GET", "/v2/members/", None, None, ""),
    ("GET", "/v2/members/leader", None, None, ""),
    ("GET", "/v2/members/foo", None, None, ""),
    ("HEAD", "/v2/members", None, None, ""),
    ("PATCH", "/v2/members", None, None, ""),
    ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:23802"]}', FORM, ""),
    ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:23802"]}', "Application/JSON", ""),
    ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:23801"]}', JSONCT, ""),
    ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:23801"]}', "application/JSON; charset=utf-8", ""),
    ("POST", "/v2/members", '{"peerURLs":["foo"]}', JSONCT, ""),
    ("POST", "/v2/members", '{"peerURLs":["http://h"]}', JSONCT, ""),
    ("POST", "/v2/members", '{"peerURLs":["http://h:1/p"]}', JSONCT, ""),
    ("POST", "/v2/members", '{"peerURLs":[]}', JSONCT, ""),
    ("POST", "/v2/members", '{}', JSONCT, ""),
    ("POST", "/v2/members", '{bad', JSONCT, "loose"),
    ("DELETE", "/v2/members/zzz", None, None, ""),
    ("DELETE", "/v2/members/1234", None, None, ""),
    ("DELETE", "/v2/members/00001234", None, None, ""),
    ("DELETE", "/v2/members", None, None, ""),
    ("DELETE", "/v2/members/", None, None, ""),
    ("PUT", "/v2/members/1234", '{"peerURLs":["http://127.0.0.1:23805"]}', JSONCT, ""),
    ("PUT", "/v2/members/1234", '{"peerURLs":["http://127.0.0.1:23805"]}', FORM, ""),
    ("PUT", "/v2/members/zz", '{"peerURLs":["http://127.0.0.1:23805"]}', FORM, ""),
    ("PUT", "/v2/members/bdae9bbc11dd390d", '{"peerURLs":["http://127.0.0.1:23801"]}', JSONCT, ""),
    ("GET", "/v2/machines", None, None, ""),
    ("HEAD", "/v2/machines", None, None, ""),
    ("POST", "/v2/machines", None, None, ""),
    ("HEAD", "/v2/stats/store", None, None, ""),
    ("PUT", "/v2/stats/self", None, None, ""),
    ("DELETE", "/v2/stats/leader", None, None, ""),
    ("GET", "/v2/stats/leader", None, None, "loose"),
]

KEEP = ["content-type", "x-etcd-index", "x-etcd-cluster-id", "allow", "location",
        "x-content-type-options"]


def main():
    base = urllib.parse.urlparse(sys.argv[1])
    for method, target, body, ctype, flags in CASES:
        conn = http.client.HTTPConnection(base.hostname, base.port, timeout=5)
        headers = {}
        if ctype:
            headers["Content-Type"] = ctype
        data = body.encode() if body is not None else None
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        rbody = resp.read().decode("utf-8", "replace")
        hdrs = {k: resp.getheader(k) for k in KEEP if resp.getheader(k) is not None}
        if method == "HEAD":
            hdrs["content-length"] = resp.getheader("content-length")
        rec = {"method": method, "target": target, "status": resp.status,
               "headers": hdrs, "body": rbody}
        if body is not None:
            rec["req_body"] = body
        if ctype:
            rec["req_content_type"] = ctype
        if flags:
            rec["loose"] = True
        print(json.dumps(rec, ensure_ascii=False))
        conn.close()


if __name__ == "__main__":
    main()
