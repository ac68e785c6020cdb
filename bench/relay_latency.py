#!/usr/bin/python3
"""Time sluice adds on the relay path: to the first token and to every
token, against the same backend reached directly.

The backend is tests/integration/upstream.py with "stamp": every token's
text carries the time (CLOCK_REALTIME ns) it left the backend, so a client
on the same machine knows each token's delay exactly. For R requests of N
tokens each, streamed:

  direct      POST {backend}/v1/chat/completions
  via /v1     POST {sluice}/v1/chat/completions (the OpenAI-compatible API)
  via chat    POST /api/chat/message, tokens on an SSE stream (the client
              subscribed first; TTFT here includes the store's commit of the
              message, fsync included, which the 202 waits for)

and reports p50 / p99 of the time to first token (request sent to first
token received) and of the per-token delay (received minus sent), and
sluice's share: via minus direct. Never asserted; numbers for
docs/performance.md.

    /usr/bin/python3 bench/relay_latency.py --build build [--requests 40 --tokens 50]
"""
import argparse
import http.client
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402
import llm  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Conn:
    """One keep-alive connection (plain socket, TCP_NODELAY), so neither
    path pays a connect per request and nothing buffers between the wire and
    the clock."""

    def __init__(self, host, port):
        self.s = socket.create_connection((host, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def stream(self, path, body, headers):
        """(t_sent, [(t_recv, data line)]) of one streamed POST."""
        data = json.dumps(body).encode()
        hdr = "".join("%s: %s\r\n" % kv for kv in headers.items())
        req = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
               % (path, len(data), hdr)).encode() + data
        t0 = time.time_ns()
        self.s.sendall(req)
        out = []
        done = False
        while True:
            while b"\n" in self.buf and not done:
                line, self.buf = self.buf.split(b"\n", 1)
                if line.startswith(b"data: "):
                    out.append((self._t, line[6:].decode()))
                    done = line.startswith(b"data: [DONE]") or b'"error"' in line
            # The response ends with the last chunk; then the connection is free.
            if done and b"0\r\n\r\n" in self.buf:
                self.buf = self.buf.split(b"0\r\n\r\n", 1)[1]
                return t0, out
            b = self.s.recv(65536)
            self._t = time.time_ns()
            if not b:
                raise SystemExit("the connection closed mid-response")
            self.buf += b


def delays(t0, chunks):
    """TTFT and the delays of each stamped token."""
    ttft, per = None, []
    for t, d in chunks:
        if d == "[DONE]":
            continue
        j = json.loads(d)
        c = (j.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
        for tok in c.split():
            if "@" in tok:
                sent = int(tok.split("@")[1])
                per.append(t - sent)
                if ttft is None:
                    ttft = t - t0
    return ttft, per


def chat_run(srv, sid, sse, tokens):
    t0 = time.time_ns()
    mid = srv.post_message(sid, "go")
    ttft, per = None, []
    while True:
        e = sse.next_event(30)
        now = time.time_ns()
        if e is None or (e.get("type") == "done" and e.get("message_id") == mid):
            break
        if e.get("type") != "token":
            continue
        for tok in e["text"].split():
            if "@" in tok:
                per.append(now - int(tok.split("@")[1]))
                if ttft is None:
                    ttft = now - t0
    return ttft, per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--interval-ms", type=int, default=5)
    args = ap.parse_args()
    fx = llm.Upstream(models=["fx-model"], stamp=True, tokens=args.tokens, ttft_ms=0,
                          interval_ms=args.interval_ms)
    srv = harness.Sluice(os.path.abspath(args.build),
                         backends=[("up", {"type": "openai", "url": fx.url, "models": "fx-model"})])
    res = {}
    try:
        srv.start()
        body = {"model": "fx-model", "stream": True, "messages": [{"role": "user", "content": "go"}]}
        auth = {"Authorization": "Bearer " + srv.token}
        runs = {"direct": ("127.0.0.1", fx.port, {}), "via /v1": ("127.0.0.1", srv.port, auth)}
        for name, (h, p, hd) in runs.items():
            tt, pt = [], []
            conn = Conn(h, p)
            for i in range(args.requests + 3):
                t0, ch = conn.stream("/v1/chat/completions", body, hd)
                ttft, per = delays(t0, ch)
                if i >= 3:  # warm-up: connections made, caches filled
                    tt.append(ttft)
                    pt += per
            res[name] = (tt, pt)
        sid = srv.create_session("fx-model")
        sse = harness.CurlSse(srv.base + "/api/chat/stream/" + sid, headers=srv.auth_headers())
        sse.wait_head()
        tt, pt = [], []
        for i in range(args.requests + 3):
            ttft, per = chat_run(srv, sid, sse, args.tokens)
            if i >= 3:
                tt.append(ttft)
                pt += per
        sse.close()
        res["via chat (SSE)"] = (tt, pt)
    finally:
        srv.stop()
        fx.stop()
    d_tt, d_pt = res["direct"]
    print("%d requests x %d tokens, %d ms apart, per path (ms):" % (args.requests, args.tokens, args.interval_ms))
    print("%-16s %10s %10s %12s %12s %14s %14s" % ("path", "ttft p50", "ttft p99", "token p50", "token p99",
                                                   "added ttft p50", "added tok p50"))
    for name, (tt, pt) in res.items():
        print("%-16s %10.3f %10.3f %12.3f %12.3f %14.3f %14.3f" % (
            name, pct(tt, 50) / 1e6, pct(tt, 99) / 1e6, pct(pt, 50) / 1e6, pct(pt, 99) / 1e6,
            (pct(tt, 50) - pct(d_tt, 50)) / 1e6, (pct(pt, 50) - pct(d_pt, 50)) / 1e6))
    for name, (tt, pt) in res.items():
        print("%-16s added p99: ttft %.3f ms, token %.3f ms" % (
            name, (pct(tt, 99) - pct(d_tt, 99)) / 1e6, (pct(pt, 99) - pct(d_pt, 99)) / 1e6))


if __name__ == "__main__":
    main()
