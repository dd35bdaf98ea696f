#!/usr/bin/env python3
# Writes the seed corpus (see README.md). The recordings it reads
# (etcdctl bytes, etcd and Cairn files) are made as README.md describes.
import os, struct, hashlib, sys
rec = "/tmp/rec"
def w(target, name, data):
    os.makedirs(target, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(os.path.join(target, name), "wb").write(data)

def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def key(f, wt): return varint(f << 3 | wt)
def fv(f, n): return key(f, 0) + varint(n)
def fb(f, b):
    if isinstance(b, str): b = b.encode()
    return key(f, 2) + varint(len(b)) + b

# ---- h2-authority: etcdctl's bytes (recorded), shape byte + outer-size byte first
for n in ["es", "put", "get"]:
    b = open(f"{rec}/{n}.bin", "rb").read()
    w("h2-authority", f"etcdctl-{n}", b"\x00\x00" + b)
    w("h2-authority", f"etcdctl-{n}-bytewise", b"\x01\x00" + b)
# one HTTP/1.1 request: must pass through unchanged
w("h2-authority", "http1", b"\x02\x01GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n")

# ---- hpack: the header blocks in those recordings, and hand-made ones
def blocks(b):
    at = 24; out = []
    while at + 9 <= len(b):
        ln = int.from_bytes(b[at:at+3], "big"); kind = b[at+3]; fl = b[at+4]
        p = b[at+9:at+9+ln]
        if kind == 1:
            if fl & 8: pad = p[0]; p = p[1:len(p)-pad]
            if fl & 0x20: p = p[5:]
            out.append(p)
        at += 9 + ln
    return out
i = 0
for n in ["es", "put", "get"]:
    for blk in blocks(open(f"{rec}/{n}.bin", "rb").read()):
        w("hpack", f"etcdctl-{n}-{i}", blk); i += 1
w("hpack", "raw-authority-indexed", b"\x83\x86\x84\x41\x15http://127.0.0.1:2379")
w("hpack", "raw-authority-never", b"\x83\x86\x11\x16https://10.0.0.1:2379/x")
w("hpack", "literal-name", b"\x40\x0a:authority\x0funix://sock:123")
w("hpack", "plain-authority", b"\x82\x86\x84\x41\x0e127.0.0.1:2379")
w("hpack", "size-update", b"\x3f\xe1\x1f\x82\x41\x08http://a")

# ---- gateway-json: selector (request type), frame size, body
G = {"RangeRequest":0,"PutRequest":1,"DeleteRangeRequest":2,"TxnRequest":3,"CompactionRequest":4,
     "WatchRequest":5,"LeaseGrantRequest":6,"LeaseKeepAliveRequest":7,"LeaseTimeToLiveRequest":8,
     "MemberAddRequest":9,"MemberUpdateRequest":10,"AlarmRequest":11,"AuthenticateRequest":12,
     "AuthUserAddRequest":13,"AuthRoleGrantPermissionRequest":14,"HashKvRequest":15,
     "MoveLeaderRequest":16,"LockRequest":17,"CampaignRequest":18}
gw = [
 ("RangeRequest", '{"key":"Zm9v","range_end":"Zm9w","limit":"10","sort_order":"DESCEND","sort_target":"MOD","serializable":true}'),
 ("RangeRequest", '{"key":"AA==","rangeEnd":"AA==","keysOnly":true,"countOnly":false,"minModRevision":3}'),
 ("PutRequest", '{"key":"Zm9v","value":"YmFy","lease":"7587862072907332621","prev_kv":true}'),
 ("DeleteRangeRequest", '{"key":"YQ==","range_end":"Yg==","prev_kv":true}'),
 ("TxnRequest", '{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"},{"key":"YQ==","target":"MOD","mod_revision":"4","result":"LESS"}],"success":[{"request_put":{"key":"Zm9v","value":"Yg=="}},{"requestTxn":{"success":[{"request_range":{"key":"YQ=="}}]}}],"failure":[{"request_delete_range":{"key":"Zm9v"}}]}'),
 ("CompactionRequest", '{"revision":"5","physical":true}'),
 ("WatchRequest", '{"create_request":{"key":"Zm9v","range_end":"AA==","start_revision":1,"progress_notify":true,"filters":["NOPUT"],"prev_kv":true}}\n{"cancel_request":{"watch_id":0}}\n{"progress_request":{}}'),
 ("LeaseGrantRequest", '{"TTL":60,"ID":0}'),
 ("LeaseKeepAliveRequest", '{"ID":"7587862072907332621"} {"ID":1}'),
 ("LeaseTimeToLiveRequest", '{"ID":1,"keys":true}'),
 ("MemberAddRequest", '{"peerURLs":["http://127.0.0.1:2380"],"isLearner":true}'),
 ("MemberUpdateRequest", '{"ID":"1","peerURLs":["http://127.0.0.1:2381"]}'),
 ("AlarmRequest", '{"action":"GET","memberID":0,"alarm":"NOSPACE"}'),
 ("AuthenticateRequest", '{"name":"root","password":"pw"}'),
 ("AuthUserAddRequest", '{"name":"u","password":"p","options":{"no_password":true}}'),
 ("AuthRoleGrantPermissionRequest", '{"name":"r","perm":{"permType":"READWRITE","key":"YQ==","range_end":"Yg=="}}'),
 ("HashKvRequest", '{"revision":2}'),
 ("MoveLeaderRequest", '{"targetID":"12345"}'),
 ("LockRequest", '{"name":"bG9jaw==","lease":1}'),
 ("CampaignRequest", '{"name":"ZWxlY3Rpb24=","lease":1,"value":"djE="}'),
 ("RangeRequest", '  null  '),
 ("PutRequest", '{"key":"\\u0041\\ud83d\\ude00","value":1e400}'),
]
for i, (t, body) in enumerate(gw):
    w("gateway-json", f"{i:02d}-{t}", bytes([G[t], 255]) + body.encode())
w("gateway-json", "chunked-txn", bytes([3, 2]) + gw[4][1].encode())

# ---- v2-http: requests separated by NUL; method byte (GET 0, PUT 1, POST 2,
# DELETE 3, HEAD 4), flags byte (low 3 bits: path prefix /v2/keys 0,
# /v2/members 1, none 2, /v2/stats 3, /v2/machines 4; bits 4-5: content type)
def req(method, prefix, target, body=b"", ctype=0):
    if isinstance(body, str): body = body.encode()
    return bytes([method, prefix | (ctype << 4)]) + target.encode() + b"\n" + body
v2 = [
 [req(1,0,"/foo","value=bar"), req(0,0,"/foo"), req(0,0,"/?recursive=true&sorted=true")],
 [req(1,0,"/dir?dir=true"), req(2,0,"/dir","value=x&ttl=5"), req(0,0,"/dir?recursive=true"), req(3,0,"/dir?dir=true&recursive=true")],
 [req(1,0,"/k?value=1&prevExist=false"), req(1,0,"/k?value=2&prevValue=1"), req(1,0,"/k?prevIndex=5&value=3"), req(3,0,"/k?prevValue=2")],
 [req(1,0,"/t","value=v&ttl=100"), req(1,0,"/t?refresh=true&ttl=50&prevExist=true"), req(0,0,"/t?wait=true&waitIndex=1")],
 [req(0,1,""), req(2,1,"", b'{"peerURLs":["http://127.0.0.1:2390"]}', 1), req(1,1,"/1000", b'{"peerURLs":["http://127.0.0.1:2391"]}', 1), req(3,1,"/1000")],
 [req(0,3,"/self"), req(0,3,"/leader"), req(0,3,"/store"), req(0,4,"")],
 [req(1,0,"/_hidden%2Fkey?value=%00&noValueOnSuccess=true"), req(0,0,"//a/../b/./c?quorum=true"), req(5,0,"/x")],
]
for i, reqs in enumerate(v2):
    w("v2-http", f"seq-{i}", b"\x00".join(reqs))

# ---- peer-messages: selector, then the message
def entry(term, index, data=b"", et=0):
    return (fv(1, et) if et else b"") + fv(2, term) + fv(3, index) + (fb(4, data) if data else b"")
def raft_msg(mt, to, frm, term, log_term=0, index=0, entries=(), commit=0, snap=None, reject=False, ctx=b""):
    b = fv(1, mt) + fv(2, to) + fv(3, frm) + fv(4, term)
    if log_term: b += fv(5, log_term)
    if index: b += fv(6, index)
    for e in entries: b += fb(7, e)
    if commit: b += fv(8, commit)
    if snap is not None: b += fb(9, snap)
    if reject: b += fv(10, 1)
    if ctx: b += fb(12, ctx)
    return b
internal_put = fv(1, 7) + fb(2, fb(1, "foo") + fb(2, "bar"))
app = raft_msg(3, 2, 1, 5, 5, 10, [entry(5, 11, internal_put), entry(5, 12, b"", 1)], 10)
hb = raft_msg(8, 2, 1, 5, commit=10, ctx=b"ctx")
vote = raft_msg(5, 2, 1, 6, 5, 12)
conf_state = fv(1, 1) + fv(1, 2) + fv(1, 3)
snap = fb(1, b"") + fb(2, fb(1, conf_state) + fv(2, 20) + fv(3, 5))
snapmsg = raft_msg(7, 2, 1, 5, snap=snap)
w("peer-messages", "raft-append", b"\x00" + app)
w("peer-messages", "raft-heartbeat", b"\x01" + hb)
w("peer-messages", "raft-vote", b"\x02" + vote)
w("peer-messages", "raft-batch", b"\x04" + fb(1, app) + fb(1, hb))
w("peer-messages", "snapshot-header", b"\x06" + fb(1, snapmsg))
w("peer-messages", "snapshot-data", b"\x06" + fb(2, b"CAIRNSNAP\x01"))
w("peer-messages", "internal-put", b"\x07" + internal_put)
txn = fb(1, fb(1, "a") + fv(2, 0) + fv(3, 0) + fv(4, 3)) + fb(2, fb(2, fb(1, "a") + fb(2, "b"))) + fb(3, fb(1, fb(1, "a")))
w("peer-messages", "internal-txn", b"\x07" + fv(1, 8) + fb(4, txn))
member = fv(1, 0x1234) + fb(2, "m2") + fb(3, "http://127.0.0.1:2380") + fb(4, "http://127.0.0.1:2379")
w("peer-messages", "member-change", b"\x08" + fv(1, 9) + fv(2, 0) + fb(3, member))
w("peer-messages", "membership", b"\x09" + fv(1, 0xabc) + fb(2, member) + fb(2, member))
w("peer-messages", "lease-renew", b"\x0b" + fv(1, 42))
w("peer-messages", "member-add", b"\x0d" + fb(1, "http://127.0.0.1:2380") + fv(2, 1))
w("peer-messages", "txn", b"\x10" + txn)
w("peer-messages", "conf-change", b"\x12" + fv(1, 0) + fv(2, 0) + fv(3, 2) + fb(4, member))
w("peer-messages", "conf-change-v2", b"\x13" + fv(1, 0) + fb(2, fv(1, 0) + fv(2, 3)) + fb(3, b"ctx"))

# ---- plugin-admin: route (0 deploy, 1 dry run, 2 check), name selector, body
pa = [
 (0, 0, '{"wasm_base64":"AGFzbQ0AAQA=","hooks":["validator"],"prefixes":["/app/"],"mode":"enforce","failure_policy":"fail-closed","deadline":"50ms","memory":"16MiB","config":{"max":"10"},"order":1}'),
 (0, 3, '{"wasm_base64":"AGFzbQ0AAQA=","memory":1048576,"config":[["a","b"],["c","d"]]}'),
 (0, 2, '{"wasm_base64":"!!"}'),
 (1, 0, '{"name":"policy","revision":5,"max_keys":100,"max_reported":10}'),
 (1, 0, '{"wasm_base64":"AGFzbQ0AAQA=","prefixes":["a"],"deadline":"1s","memory":"64MiB"}'),
 (2, 0, '{"authenticate":{"token":"t"},"authorize":{"access":"read","key":"a","range_end":"b"}}'),
 (2, 0, '{"authenticate":{"name":"u","password":"p"},"authorize":{"principal":"u","access":"delete-range","key":"k"}}'),
]
for i, (r, n, body) in enumerate(pa):
    w("plugin-admin", f"body-{i}", bytes([r, n]) + body.encode())

# ---- config files
w("config-envfile", "etcd.conf", """# distro etcd.conf
ETCD_NAME="m1"
ETCD_DATA_DIR=/var/lib/etcd/default.etcd
ETCD_LISTEN_CLIENT_URLS="http://127.0.0.1:2379"
ETCD_ADVERTISE_CLIENT_URLS='http://127.0.0.1:2379'
ETCD_INITIAL_CLUSTER="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381"
ETCD_HEARTBEAT_INTERVAL=100
ETCD_ELECTION_TIMEOUT="1000"
export ETCD_AUTO_COMPACTION_RETENTION=1h
ETCD_CLIENT_CERT_AUTH=false
#ETCD_LOG_LEVEL=debug
""")
w("config-envfile", "continued", 'ETCD_NAME=a\\\nb\nETCD_QUOTA_BACKEND_BYTES=8589934592\nETCD_UNKNOWN=1\n')
w("config-yaml", "etcd.yaml", """name: m1
data-dir: /var/lib/etcd
listen-client-urls: http://127.0.0.1:2379
advertise-client-urls: http://127.0.0.1:2379
initial-cluster: m1=http://127.0.0.1:2380
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
auto-compaction-mode: periodic
auto-compaction-retention: "1"
client-transport-security:
  cert-file: /etc/etcd/server.crt
  key-file: /etc/etcd/server.key
  client-cert-auth: false
  auto-tls: false
peer-transport-security:
  trusted-ca-file: /etc/etcd/ca.crt
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
log-outputs: [stderr]
""")
w("config-yaml", "anchors", "---\nname: &n m1\ninitial-cluster-token: *n\nenable-v2: true\nmax-request-bytes: 1.5e6\n")
w("config-toml", "cairn.toml", """name = "m1"
data-dir = "/var/lib/cairn"
listen-client-urls = "http://127.0.0.1:2379"
initial-cluster = "m1=http://127.0.0.1:2380"
heartbeat-interval = 100
election-timeout = "1s"
quota-backend-bytes = 8589934592
client-cert-auth = false

[plugins.policy]
path = "/etc/cairn/policy.wasm"
hooks = ["validator"]
prefixes = ["/app/"]
mode = "audit"
deadline = "50ms"
memory = "16MiB"

[plugins.policy.config]
max = "10"
""")
w("config-toml", "types", 'name = 1\nlisten-client-urls = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]\n[log]\nlevel = "debug"\n')

# ---- discovery: selector 0 + a DNS response to ID 0x1234; 1 + status (LE) + keys answer
def dns_name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.rstrip(".").split(".")) + b"\x00"
def dns_reply(qname, qtype, answers, rcode=0):
    q = dns_name(qname) + struct.pack(">HH", qtype, 1)
    head = struct.pack(">HHHHHH", 0x1234, 0x8180 | rcode, 1, len(answers), 0, 0)
    body = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", t, 1, 60, len(d)) + d for t, d in answers)
    return head + q + body
srv = lambda prio, weight, port, target: struct.pack(">HHH", prio, weight, port) + dns_name(target)
w("discovery", "dns-srv", b"\x00" + dns_reply("_etcd-server._tcp.example.test", 33,
    [(33, srv(0, 10, 2380, "m1.example.test")), (33, srv(0, 10, 2380, "m2.example.test"))]))
w("discovery", "dns-srv-compressed", b"\x00" + dns_reply("_etcd-server._tcp.example.test", 33,
    [(33, struct.pack(">HHH", 1, 5, 2380) + b"\x02m1\xc0\x1e")]))
w("discovery", "dns-a", b"\x00" + dns_reply("localhost", 1, [(1, bytes([127, 0, 0, 1])), (28, bytes(15) + b"\x01")]))
w("discovery", "dns-nxdomain", b"\x00" + dns_reply("_etcd-server-ssl._tcp.example.test", 33, [], 3))
w("discovery", "keys-size", b"\x01" + struct.pack("<H", 100) + b'{"action":"get","node":{"key":"/_etcd/registry/t/_config/size","value":"3","modifiedIndex":5,"createdIndex":5}}')
w("discovery", "keys-listing", b"\x01" + struct.pack("<H", 100) + b'{"action":"get","node":{"key":"/_etcd/registry/t","dir":true,"nodes":[{"key":"/_etcd/registry/t/_config","dir":true},{"key":"/_etcd/registry/t/7e48c47444dc14f7","value":"m1=http://127.0.0.1:2380","modifiedIndex":7,"createdIndex":7},{"key":"/_etcd/registry/t/de296f25ee7077e","value":"m2=http://127.0.0.2:2380,m2=http://127.0.0.3:2380","modifiedIndex":8,"createdIndex":8}],"modifiedIndex":6,"createdIndex":6}}')
w("discovery", "keys-error", b"\x01" + struct.pack("<H", 304) + b'{"errorCode":100,"message":"Key not found","cause":"/_etcd","index":4}')

# ---- etcd-bolt: etcdctl snapshot save of a small etcd 3.4 (with trailer), and its db
snapdb = open(f"{rec}/snap.db", "rb").read()
w("etcd-bolt", "etcdctl-snapshot-save", snapdb)
w("etcd-bolt", "member-db", snapdb[:-32])

# ---- etcd-wal: mode 0 raw segment, 2 .snap file, 4 v2 store JSON, 5 entry payload
w("etcd-wal", "wal-segment", b"\x00" + open(f"{rec}/wal.bin", "rb").read())
snaps = sorted(os.listdir(f"{rec}/etcd-data/member/snap"))
snapfile = open(f"{rec}/etcd-data/member/snap/" + [s for s in snaps if s.endswith(".snap")][-1], "rb").read()
w("etcd-wal", "snap-file", b"\x02" + snapfile)
w("etcd-wal", "v2-store", b"\x04" + b'{"Root":{"Path":"/","CreatedIndex":0,"ModifiedIndex":0,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{"0":{"Path":"/0","CreatedIndex":0,"ModifiedIndex":0,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{"members":{"Path":"/0/members","CreatedIndex":1,"ModifiedIndex":1,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{"8e9e05c52164694d":{"Path":"/0/members/8e9e05c52164694d","CreatedIndex":1,"ModifiedIndex":1,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{"raftAttributes":{"Path":"/0/members/8e9e05c52164694d/raftAttributes","CreatedIndex":1,"ModifiedIndex":1,"ExpireTime":"0001-01-01T00:00:00Z","Value":"{\\"peerURLs\\":[\\"http://localhost:2380\\"]}","Children":null}}}}}}}}},"WatcherHub":{"EventHistory":{"Queue":{"Events":[],"Size":0,"Front":0,"Back":0,"Capacity":1000},"StartIndex":0,"LastIndex":0}}}')
put = fb(1, fv(1, 1)) + fb(4, fb(1, "foo") + fb(2, "bar"))
w("etcd-wal", "entry-put", b"\x05\x00" + put)
w("etcd-wal", "entry-v2", b"\x05\x00" + fv(1, 5) + fb(2, "PUT") + fb(3, "/0/members/1/attributes") + fb(4, '{"name":"m1"}'))
w("etcd-wal", "records", b"\x01" + b"\x01" + struct.pack("<H", 4) + fv(1, 1) + fv(2, 2) + b"\x02" + struct.pack("<H", len(entry(2, 1, put))) + entry(2, 1, put) + b"\x03" + struct.pack("<H", 6) + fv(1, 2) + fv(2, 0) + fv(3, 1))
print("ok")
