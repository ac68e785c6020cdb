#!/usr/bin/python3
"""Differential request framing (issue 12).

The same request bytes go to sluice's parser (build/tests/dataplane/http/
http-frame: the calls the app makes), to node:http (llhttp, a node server
that answers each request with how it read it) and to python3-h11. The test
fails on any case where sluice accepts a framing — which requests, their
methods, targets and bodies — that another parser reads differently. A
parser that refuses the bytes is no disagreement (it cannot be smuggled
through); refusals are listed. The cases: every request of
test_http_errors.py, the http fuzz corpus, and chunked, Content-Length and
Transfer-Encoding variants known from request-smuggling work.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import h11

import harness
from harness import check

H = b"Host: a\r\n"


def chunked(*chunks, trailer=b""):
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailer + b"\r\n"


EXTRA = [
    ("te_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"abc", b"de")),
    ("te_chunked_ext", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"3;a=b;c=\"d\"\r\nabc\r\n0\r\n\r\n"),
    ("te_chunked_trailer", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     + chunked(b"abc", trailer=b"X-T: 1\r\n")),
    ("te_chunked_pipelined", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     + chunked(b"x") + b"GET /second HTTP/1.1\r\n" + H + b"\r\n"),
    ("te_chunked_upper", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: CHUNKED\r\n\r\n" + chunked(b"ab")),
    ("te_space_value", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:  chunked \r\n\r\n" + chunked(b"ab")),
    ("te_leading_comma", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: , chunked\r\n\r\n" + chunked(b"ab")),
    ("te_identity_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity, chunked\r\n\r\n"
     + chunked(b"ab")),
    ("te_chunked_identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n"
     + chunked(b"ab")),
    ("te_two_lines", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
     + chunked(b"ab")),
    ("te_xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n" + chunked(b"ab")),
    ("te_chunked_cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
     + chunked(b"ab")),
    ("cl_te_chunked", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
    ("te_tab", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\tchunked\r\n\r\n" + chunked(b"ab")),
    ("te_space_before_colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n" + chunked(b"ab")),
    ("te_obs_fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + chunked(b"ab")),
    ("te_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"ab")),
    ("chunk_size_space", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n"),
    ("chunk_size_0x", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n"),
    ("chunk_size_plus", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n+2\r\nab\r\n0\r\n\r\n"),
    ("chunk_size_leading_zeros", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0002\r\nab\r\n00\r\n\r\n"),
    ("chunk_size_overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"10000000000000002\r\nab\r\n0\r\n\r\n"),
    ("chunk_bare_lf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\nab\n0\n\n"),
    ("chunk_data_no_crlf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n"),
    ("chunk_data_lf_only", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\n0\r\n\r\n"),
    ("chunk_ext_bare_lf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2;x\nab\r\n0\r\n\r\n"),
    ("chunk_ext_ctl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2;x\x01\r\nab\r\n0\r\n\r\n"),
    ("chunk_trailer_obs_fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     + chunked(b"ab", trailer=b"X: 1\r\n 2\r\n")),
    ("chunk_last_with_smuggle", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
    ("cl_list_same", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2, 2\r\n\r\nab"),
    ("cl_list_diff", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2, 3\r\n\r\nabc"),
    ("cl_two_same", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab"),
    ("cl_two_diff", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc"),
    ("cl_leading_zero", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 02\r\n\r\nab"),
    ("cl_plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +2\r\n\r\nab"),
    ("cl_space_inside", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 2\r\n\r\n" + b"a" * 12),
    ("cl_pipelined", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n" + H
     + b"\r\n"),
    ("get_with_cl_body", b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n" + H
     + b"\r\n"),
    ("unknown_method_body", b"BREW / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"),
]


def cases():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import test_http_errors
    out = []
    for c in test_http_errors.CASES:
        if not callable(c[1]):
            out.append(("http_errors:" + c[0], c[1]))
    for p in sorted(glob.glob(os.path.join(harness.SOURCE_DIR or ".", "tests/fuzz/http/corpus/*"))):
        with open(p, "rb") as f:
            out.append(("corpus:" + os.path.basename(p), f.read()[2:]))
    return out + EXTRA


def sluice_frames(build, data):
    p = subprocess.run([os.path.join(build, "tests/dataplane/http/http-frame")], input=data,
                       capture_output=True, timeout=10)
    check(p.returncode == 0, "http-frame failed: %r" % p.stderr)
    reqs, err = [], None
    for line in p.stdout.decode().splitlines():
        o = json.loads(line)
        if "method" in o:
            reqs.append((o["method"], o["target"], bytes.fromhex(o["body"])))
        else:
            err = o
    return reqs, err


def h11_frames(data):
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16388)
    conn.receive_data(data)
    conn.receive_data(b"")  # the client is done sending
    reqs, cur, body = [], None, b""
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED or isinstance(ev, h11.ConnectionClosed):
                if ev is h11.PAUSED and cur is None:
                    conn.start_next_cycle()
                    continue
                return reqs, None if ev is not h11.NEED_DATA else {"incomplete": True}
            if isinstance(ev, h11.Request):
                cur, body = (ev.method.decode(), ev.target.decode("latin-1")), b""
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                reqs.append((cur[0], cur[1], body))
                cur = None
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:
                    return reqs, None
                conn.start_next_cycle()
    except h11.RemoteProtocolError as e:
        return reqs, {"error": str(e)}


NODE_SERVER = r"""
const http = require('http');
const srv = http.createServer({requireHostHeader: false}, (req, res) => {
  const chunks = [];
  req.on('data', d => chunks.push(d));
  req.on('end', () => {
    const b = JSON.stringify({method: req.method, target: req.url,
                              body: Buffer.concat(chunks).toString('hex')});
    res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b)});
    res.end(b);
  });
});
srv.on('clientError', (err, sock) => {
  const b = JSON.stringify({error: err.code || 'error'});
  sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: ' + b.length + '\r\nConnection: close\r\n\r\n' + b);
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
"""


def node_frames(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    buf = b""
    s.settimeout(2)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        pass
    s.close()
    reqs, err = [], None
    while b"\r\n\r\n" in buf:
        head, _, rest = buf.partition(b"\r\n\r\n")
        n = 0
        for l in head.split(b"\r\n")[1:]:
            k, _, v = l.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        o = json.loads(rest[:n] or b"{}")
        buf = rest[n:]
        if "method" in o:
            reqs.append((o["method"], o["target"], bytes.fromhex(o["body"])))
        else:
            err = o
    return reqs, err


def test_framing_agrees(env):
    node = shutil.which("node")
    check(node, "node not installed (firmware-config/setup-deps.sh)")
    p = subprocess.Popen([node, "-e", NODE_SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(p.stdout.readline())
        disagreements, refused, accepted = [], {}, 0
        for name, data in cases():
            s_reqs, s_err = sluice_frames(env.build, data)
            if not s_reqs:
                continue
            accepted += 1
            for other, (o_reqs, o_err) in (("node:http", node_frames(port, data)),
                                           ("h11", h11_frames(data))):
                # Compare what both read as requests; a parser that stopped
                # earlier with an error refused the rest.
                n = min(len(s_reqs), len(o_reqs))
                sluice_refused = s_err is not None and "error" in s_err
                if s_reqs[:n] != o_reqs[:n] or (len(o_reqs) > len(s_reqs) and not sluice_refused):
                    disagreements.append((name, other, s_reqs, o_reqs))
                elif len(o_reqs) < len(s_reqs):
                    refused.setdefault(other, []).append("%s (%s)" % (name, o_err))
        print("    %d cases sluice accepts; refused by node:http: %s; by h11: %s"
              % (accepted, refused.get("node:http", []), refused.get("h11", [])))
        check(not disagreements, "framings read differently: %s" % "; ".join(
            "%s: sluice %r, %s %r" % (n, s, o, r) for n, o, s, r in disagreements))
        check(accepted >= 20, "only %d cases accepted: the test tests nothing" % accepted)
    finally:
        p.kill()
        p.wait()


TESTS = [test_framing_agrees]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
