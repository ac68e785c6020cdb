#!/usr/bin/python3
"""sluice's own TCP/IPv4 stack against Linux's TCP through the impairment
bridge (tests/tools/impair, docs/testing.md):

    namespace C: Linux clients, 10.77.0.1 -- veth -- namespace B: impair
    -- veth -- root namespace: sluice-dataplane on net_af_packet, 10.77.0.2

For each scenario (loss 1 %, 5 %, 10 %; reorder 25 %; duplicate 5 %; delay
20 ms +- 5 ms; corrupt 0.1 %, the same rate both ways, fixed seeds):
  (a) 10 MiB each way over a WebSocket to /ws/echo, 160 binary messages of
      64 KiB, SHA-256 of what was sent against what came back;
  (b) 200 concurrent SSE token streams (aiohttp), each checked event by event
      against the synthetic backend's exact answer.
Prints the goodput of every transfer and the bridge's counters, and checks
that the bridge really impaired the traffic. Each scenario is bounded
(SCENARIO_TIMEOUT, 80 s, and less when the file's budget of 570 s runs
short), so the whole file stays under 10 minutes.

Needs root; exits 77 (skipped) otherwise or when sluice-dataplane was built
without DPDK.
"""

import asyncio
import json
import os
import resource
import subprocess
import sys
import time

import harness
from harness import check, check_eq, check_message_events

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import impair_topo  # noqa: E402

SKIP = 77
MIB = 1 << 20
WS_BYTES = 10 * MIB
WS_MESSAGE = 64 * 1024
STREAMS = 200
SCENARIO_TIMEOUT = 80
FILE_BUDGET = 570     # seconds for the whole file, setup included: under 10 minutes
T_START = time.monotonic()
TOKENS = harness.DEFAULT_MODELS["synth"]["answer_tokens"]

# name, impair arguments, counter that must be non-zero
SCENARIOS = [
    ("loss_1", ["--loss", "1", "--seed", "101"], "lost"),
    ("loss_5", ["--loss", "5", "--seed", "105"], "lost"),
    ("loss_10", ["--loss", "10", "--seed", "110"], "lost"),
    ("reorder_25", ["--reorder", "25", "--seed", "125"], "reordered"),
    ("dup_5", ["--dup", "5", "--seed", "205"], "dup"),
    ("delay_20_jitter_5", ["--delay", "20", "--jitter", "5", "--seed", "320"], None),
    ("corrupt_0.1", ["--corrupt", "0.1", "--seed", "401"], "corrupted"),
]

# The WebSocket client, run as its own process (python3-websockets): up to
# WINDOW messages in flight, so the echo never has more than WINDOW x 64 KiB
# pending (well under the dataplane's slow-consumer bound).
WS_CLIENT = r"""
import asyncio, hashlib, random, sys, time, websockets
url, total, msg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
WINDOW = 6
async def main():
    rnd = random.Random(total)
    n = total // msg
    sent, got = hashlib.sha256(), hashlib.sha256()
    async with websockets.connect(url, max_size=None, ping_interval=None, open_timeout=20,
                                  close_timeout=20) as ws:
        t0 = time.monotonic()
        credit = asyncio.Semaphore(WINDOW)
        async def reader():
            rx = 0
            for _ in range(n):
                m = await asyncio.wait_for(ws.recv(), 60)
                assert isinstance(m, bytes), type(m)
                got.update(m); rx += len(m)
                credit.release()
            return rx
        rt = asyncio.ensure_future(reader())
        for _ in range(n):
            await credit.acquire()
            data = rnd.randbytes(msg)
            sent.update(data)
            await ws.send(data)
        rx = await rt
        dt = time.monotonic() - t0
        await ws.close()
    print("ws sent=%s echoed=%s bytes=%d seconds=%.3f" % (sent.hexdigest(), got.hexdigest(), rx, dt))
asyncio.run(main())
"""


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def ws_transfer(srv, deadline):
    """(a): returns seconds for 10 MiB each way."""
    url = "ws://%s:%d/ws/echo" % (impair_topo.SERVER_IP, srv.port)
    left = max(5, deadline - time.monotonic())
    try:
        p = subprocess.run(["/usr/bin/python3", "-c", WS_CLIENT, url, str(WS_BYTES),
                            str(WS_MESSAGE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=left)
    except subprocess.TimeoutExpired:
        raise harness.TestFailure("WebSocket echo of %d MiB not done within %.0f s"
                                  % (WS_BYTES // MIB, left))
    out = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 0 and out.startswith("ws "), "WebSocket echo client: exit %d: %s %s"
          % (p.returncode, out, p.stderr.decode("utf-8", "replace")[-1500:]))
    kv = dict(x.split("=", 1) for x in out.split()[1:])
    check_eq(int(kv["bytes"]), WS_BYTES, "bytes echoed")
    check_eq(kv["echoed"], kv["sent"], "SHA-256 of the echoed bytes against the sent ones")
    return float(kv["seconds"])


async def read_sse(resp, events):
    """One SSE response into events until its first done."""
    ev, data = {}, []
    while True:
        raw = await resp.content.readline()
        if not raw:
            raise harness.TestFailure("stream ended after %d events" % len(events))
        line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
        if line == "":
            if data:
                obj = json.loads("\n".join(data))
                obj["type"] = ev.get("event", "message")
                obj["_id"] = ev.get("id")
                events.append(obj)
                if obj["type"] == "done":
                    return
            ev, data = {}, []
        elif not line.startswith(":"):
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "data":
                data.append(v)
            else:
                ev[k] = v


async def token_streams(srv, tag):
    """(b): STREAMS sessions, one SSE subscriber each, all streaming at once."""
    import aiohttp
    base = "http://%s:%d" % (impair_topo.SERVER_IP, srv.port)
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout,
                                     headers=srv.auth_headers()) as http:
        results, mids, prompts = {}, {}, {}
        opened = asyncio.Event()
        n_open = [0]

        async def one(i):
            async with http.post(base + "/api/chat/sessions", json={"model_id": "synth"}) as r:
                check_eq(r.status, 201, "POST /api/chat/sessions status")
                sid = (await r.json())["id"]
            prompts[sid] = "impaired stream %d of %s" % (i, tag)
            async with http.get(base + "/api/chat/stream/" + sid) as resp:
                check_eq(resp.status, 200, "GET /api/chat/stream status")
                n_open[0] += 1
                if n_open[0] == STREAMS:
                    opened.set()
                # Every stream is open before any answer starts: 200 at once.
                await opened.wait()
                async with http.post(base + "/api/chat/message",
                                     json={"session_id": sid, "content": prompts[sid]}) as r:
                    check_eq(r.status, 202, "POST /api/chat/message status")
                    mids[sid] = (await r.json())["message_id"]
                events = []
                results[sid] = events
                await read_sse(resp, events)

        t0 = time.monotonic()
        await asyncio.gather(*[one(i) for i in range(STREAMS)])
        took = time.monotonic() - t0
    bad = []
    for sid, events in results.items():
        try:
            check_message_events(events, sid, mids[sid], prompts[sid], TOKENS, model="synth",
                                 sse=True)
        except harness.TestFailure as e:
            bad.append("%s: %s" % (sid, e))
    check_eq(len(results), STREAMS, "streams completed")
    check(not bad, "%d of %d streams wrong; first: %s" % (len(bad), STREAMS, bad[:2]))
    return took


def run_streams(srv, tag, deadline):
    left = max(5, deadline - time.monotonic())
    try:
        return asyncio.run(asyncio.wait_for(token_streams(srv, tag), left))
    except asyncio.TimeoutError:
        raise harness.TestFailure("%d token streams not complete within %.0f s" % (STREAMS, left))


def make_test(name, args, counter):
    def test(env):
        topo = env.topo
        topo.start_impair(*args)
        srv = env.dpdk_server()
        deadline = min(time.monotonic() + SCENARIO_TIMEOUT, T_START + FILE_BUDGET)
        try:
            ws_s = ws_transfer(srv, deadline)
            st_s = run_streams(srv, name, deadline)
        finally:
            rc, c = topo.stop_impair()
        check_eq(rc, 0, "impair exit status")
        ab, ba = c["A->B"], c["B->A"]
        print("     %-18s ws echo 10 MiB each way: %6.2f s = %6.2f MiB/s per direction; "
              "%d SSE streams: %.2f s" % (name, ws_s, WS_BYTES / MIB / ws_s, STREAMS, st_s),
              flush=True)
        print("     %-18s impair client->sluice %s" % ("", " ".join(
            "%s=%d" % kv for kv in ab.items() if kv[0] not in ("rx_bytes", "tx_bytes"))))
        print("     %-18s impair sluice->client %s" % ("", " ".join(
            "%s=%d" % kv for kv in ba.items() if kv[0] not in ("rx_bytes", "tx_bytes"))))
        # 10 MiB each way crossed the bridge, so each side carried at least that.
        check(ab["tx_bytes"] >= WS_BYTES and ba["tx_bytes"] >= WS_BYTES,
              "bridge carried too little: %r" % c)
        if counter:
            check(ab[counter] > 0 and ba[counter] > 0,
                  "scenario %s: the bridge never applied %s: %r" % (name, counter, c))
        check(srv.procs["sluice-dataplane"].poll() is None, "sluice-dataplane died")
    test.__name__ = "test_" + name
    return test


TESTS = [make_test(*s) for s in SCENARIOS]


# Issue 11's stranded connections, behind the bridge: CLOSE_CONNS keep-alive
# connections to two workers are opened, each answered once and closed by the client while
# frames are lost, reordered and duplicated both ways; every FIN must be
# acknowledged, so none is left on sluice's side CLOSE_WAIT_S later.
CLOSE_CONNS = 1000
CLOSE_WAIT_S = 30
CLOSE_ARGS = ["--loss", "3", "--reorder", "10", "--dup", "2", "--seed", "611"]


async def open_answer_close(port, n, deadline):
    sem = asyncio.Semaphore(200)
    req = b"GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n"

    async def one():
        async with sem:
            left = max(1, deadline - time.monotonic())
            r, w = await asyncio.wait_for(
                asyncio.open_connection(impair_topo.SERVER_IP, port), left)
            try:
                w.write(req)
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), left)
                check(head.startswith(b"HTTP/1.1 200 "), "answer %r" % head[:60])
            finally:
                w.close()

    await asyncio.gather(*[one() for _ in range(n)])


def test_connections_close_under_loss(env):
    topo = env.topo
    topo.start_impair(*CLOSE_ARGS)
    # Two workers: af_packet spreads the connections over two queues, and
    # SYN cookies (always on with several workers) carry the window scale.
    srv = env.server(workers=2)
    deadline = min(time.monotonic() + SCENARIO_TIMEOUT, T_START + FILE_BUDGET)
    try:
        t0 = time.monotonic()
        try:
            asyncio.run(asyncio.wait_for(open_answer_close(srv.port, CLOSE_CONNS, deadline),
                                         max(5, deadline - time.monotonic())))
        except asyncio.TimeoutError:
            raise harness.TestFailure("%d connections not opened, answered and closed in time"
                                      % CLOSE_CONNS)
        t_served = time.monotonic() - t0
        gone_by = time.monotonic() + CLOSE_WAIT_S
        left = srv.metric("sluice_connections_active")
        while left > 1 and time.monotonic() < gone_by:
            time.sleep(0.25)
            left = srv.metric("sluice_connections_active")
        t_gone = time.monotonic() - t0 - t_served
    finally:
        rc, c = topo.stop_impair()
    check_eq(rc, 0, "impair exit status")
    print("     %d connections answered and closed in %.2f s, gone %.2f s later; bridge lost "
          "%d/%d, reordered %d/%d" % (CLOSE_CONNS, t_served, t_gone, c["A->B"]["lost"],
                                      c["B->A"]["lost"], c["A->B"]["reordered"],
                                      c["B->A"]["reordered"]), flush=True)
    # At most the /metrics request's own connection is left.
    check(left <= 1, "%d connections still active %d s after their clients closed them"
          % (left, CLOSE_WAIT_S))
    check(srv.procs["sluice-dataplane"].poll() is None, "sluice-dataplane died")


TESTS.append(test_connections_close_under_loss)


class ImpairEnv(harness.Env):
    """One dpdk server for every scenario; the bridge changes between them."""

    def __init__(self, args, topo):
        super().__init__(args)
        self.topo = topo

    def dpdk_server(self):
        return self.server(workers=1)


def main():
    if os.geteuid() != 0:
        print("skip: needs root (network namespaces, AF_PACKET)")
        return SKIP
    args = harness.parse_args()
    args.build = os.path.abspath(args.build)
    args.source = os.path.abspath(args.source)
    why = harness.dpdk_unavailable(args.build)
    if why:
        print("skip: %s" % why)
        return SKIP
    impair_bin = os.path.join(args.build, "tests", "tools", "impair")
    if not os.access(impair_bin, os.X_OK):
        print("FAIL: %s is missing: ninja -C %s tests/tools/impair" % (impair_bin, args.build))
        return 1
    harness.SOURCE_DIR = args.source
    raise_fd_limit(max(4 * STREAMS, CLOSE_CONNS) + 256)
    topo = impair_topo.Topo(impair_bin)
    t_all = time.monotonic()
    passed = failed = 0
    try:
        topo.up()
        topo.serve_from_root(harness, extra=["ws_echo = true"])
        env = ImpairEnv(args, topo)
        selected = [t for t in TESTS if not args.only or args.only in t.__name__]
        try:
            # The server starts behind a clean bridge (ARP, login).
            topo.start_impair("--seed", "1")
            env.dpdk_server()
            topo.stop_impair()
            for t in selected:
                t0 = time.monotonic()
                env.used = []
                try:
                    t(env)
                except Exception as e:
                    failed += 1
                    detail = str(e) if isinstance(e, harness.TestFailure) else repr(e)
                    print("FAIL %s (%.1fs): %s" % (t.__name__, time.monotonic() - t0, detail),
                          flush=True)
                    for s in env.used:
                        print(s.stderr_text(limit=3000), flush=True)
                else:
                    passed += 1
                    print("ok   %s (%.1fs)" % (t.__name__, time.monotonic() - t0), flush=True)
        except Exception as e:
            failed += 1
            print("FAIL server start behind a clean bridge: %s" % e, flush=True)
            for s in env.every:
                print(s.stderr_text(limit=3000), flush=True)
        finally:
            env.close()
        hits = [h for s in env.every for h in s.sanitizer_hits]
        if hits:
            failed += 1
            print("FAIL sanitizer_reports: %s" % hits[0], flush=True)
    finally:
        topo.down()
    print("%d passed, %d failed (%.0f s)" % (passed, failed, time.monotonic() - t_all), flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
