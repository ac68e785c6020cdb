#!/usr/bin/python3
"""Running it like an appliance (issue 11): readiness that means serving
(item 4) and drain and shutdown (item 1).

Readiness: a client polls /readyz and a request that control answers, one
after the other on fresh connections spread over two workers, while
sluice-control is stopped (SIGTERM) and started 20 times. A /readyz 200
followed by a 503 for the request is a lie, unless the test's SIGTERM fell
between the two; every cycle must also see the service come back (200 for
both), so a /readyz that never says 200 does not pass either.

Drain: SIGTERM to the dataplane (new connections refused) with an idle SSE stream, one whose short
answer is still running, one whose long answer outlasts drain_timeout_s, a
WebSocket on that long answer and a slow replay stream. The idle one gets
the `shutdown` event (with `retry:`) at once; the short answer ends
`complete`, then `shutdown`; at the timeout the others get `shutdown` or
close 1001; the dataplane exits 0; a restarted dataplane resumes the long
answer from the Last-Event-ID the client kept (EventSource-style)."""

import asyncio
import json
import signal
import socket
import sys
import threading
import time

import websockets

import harness
from harness import check, check_eq
from test_conv import sse_until, text_of, ws_connect, ws_until

RESTARTS = 20


def test_readiness_across_control_restarts(env):
    srv = env.fresh(workers=2)
    srv.start()
    log = []  # (what, t_sent, t_answered, status)
    sigterms = []  # when the test sent each SIGTERM
    stop = threading.Event()

    def poll_one(what, path):
        t0 = time.monotonic()
        try:
            st = srv.request("GET", path, timeout=5).status
        except OSError as e:
            st = "error: %s" % e
        log.append((what, t0, time.monotonic(), st))

    def poller():
        while not stop.is_set():
            poll_one("readyz", "/readyz")
            poll_one("request", "/api/chat/sessions")

    th = threading.Thread(target=poller, daemon=True)
    th.start()
    try:
        for i in range(RESTARTS):
            sigterms.append(time.monotonic())
            srv.stop_proc("sluice-control")
            check_eq(srv.procs["sluice-control"].returncode, 0, "control's exit status on SIGTERM (cycle %d)" % i)
            srv.start_control()
            srv.wait_ready(timeout=20)
            # Served again: a request that follows a 200 answers 200.
            deadline = time.monotonic() + 10
            while not any(w == "request" and st == 200 and t0 > sigterms[-1] for w, t0, _, st in log[-6:]):
                check(time.monotonic() < deadline, "cycle %d: no request served after /readyz said 200" % i)
                time.sleep(0.02)
    finally:
        stop.set()
        th.join(timeout=10)

    lies = []
    for (w1, s1, _, st1), (w2, _, e2, st2) in zip(log, log[1:]):
        if w1 != "readyz" or w2 != "request" or st1 != 200 or st2 == 200:
            continue
        if any(s1 <= t <= e2 for t in sigterms):
            continue
        lies.append("readyz 200 sent at %.3f, then request -> %s answered at %.3f" % (s1, st2, e2))
    check(not lies, "%d time(s) /readyz said 200 while a request got no answer: %s"
          % (len(lies), "; ".join(lies[:5])))
    ready = [st for w, _, _, st in log if w == "readyz"]
    print("  %d polls over %d control restarts: readyz 200 x%d, 503 x%d"
          % (len(log), RESTARTS, ready.count(200), ready.count(503)))
    srv.stop()


DRAIN_S = 3
MODELS = dict(harness.DEFAULT_MODELS)
MODELS["synth-mid"] = {"ttft_ms": 50, "tokens_per_s": 25, "answer_tokens": 30}


def shutdown_event(c, timeout, what):
    """Events up to the `shutdown` event; checks its retry hint and that the stream ends after it."""
    out = []
    while True:
        e = c.next_event(timeout)
        check(e is not None, "%s: stream ended or timed out before the shutdown event; got %r"
              % (what, [x.get("type") for x in out][-8:]))
        if e["type"] == ":comment":
            continue
        out.append(e)
        if e["type"] == "shutdown":
            check_eq(e.get("_retry"), "1000", "%s: the shutdown event's retry: hint" % what)
            check_eq(e.get("_id"), None, "%s: the shutdown event has no id (Last-Event-ID stays)" % what)
            check_eq(c.next_event(5), None, "%s: the stream ends after the shutdown event" % what)
            return out


def test_sigterm_drain_and_resume(env):
    srv = env.fresh(models=MODELS, drain_timeout_s=DRAIN_S)
    srv.start()
    hdrs = srv.auth_headers()

    def stream(path, **kw):
        c = harness.CurlSse(srv.base + path, headers=dict(hdrs, **kw))
        check_eq(c.wait_head(), 200, "SSE %s status" % path)
        return c

    async def body():
        s0 = srv.create_session("synth-mid")
        idle = stream("/api/chat/stream/" + s0)
        m0 = srv.post_message(s0, "the recorded answer")
        idle.collect_message(m0)
        s1 = srv.create_session("synth-slow")
        s2 = srv.create_session("synth-mid")
        long_ = stream("/api/chat/stream/" + s1)
        short = stream("/api/chat/stream/" + s2)
        replay = stream("/api/replay/session/%s?speed=0.1" % s0)
        ws = await ws_connect(srv, srv.token)
        await ws.send(json.dumps({"type": "subscribe", "session_id": s1}))
        await ws_until(ws, lambda m: m["type"] == "response")
        prompt1 = "a long answer cut by the drain"
        m1 = srv.post_message(s1, prompt1)
        m2 = srv.post_message(s2, "a short answer that finishes")
        sse_until(short, lambda e: e["type"] == "token" and e["seq"] >= 20)
        sse_until(replay, lambda e: e["type"] == "token")
        got1 = sse_until(long_, lambda e: e["type"] == "token")

        t0 = time.monotonic()
        srv.procs["sluice-dataplane"].send_signal(signal.SIGTERM)
        shutdown_event(idle, 2, "idle stream")
        check(time.monotonic() - t0 < 1.5, "the idle stream got its shutdown event at once (%.2f s)"
              % (time.monotonic() - t0))
        try:
            s = socket.create_connection((srv.host, srv.port), timeout=2)
            s.close()
            check(False, "a new connection during the drain was accepted")
        except ConnectionRefusedError:
            pass
        ev = shutdown_event(short, 5, "short answer")
        done = [e for e in ev if e["type"] == "done"]
        check(done and done[0]["status"] == "complete" and done[0]["message_id"] == m2,
              "the running short answer finished before the shutdown event: %r" % [e["type"] for e in ev])
        got1 += shutdown_event(long_, DRAIN_S + 3, "long answer")
        t_long = time.monotonic() - t0
        check(DRAIN_S - 0.5 <= t_long <= DRAIN_S + 2, "the long answer's stream ended at the drain timeout "
              "(%.2f s after SIGTERM, drain_timeout_s = %d)" % (t_long, DRAIN_S))
        check(not any(e["type"] == "done" for e in got1), "the long answer was cut, not finished")
        shutdown_event(replay, 5, "replay")
        try:
            await ws_until(ws, lambda m: False, timeout=5)
        except websockets.exceptions.ConnectionClosed as e:
            check_eq(e.rcvd.code if e.rcvd else None, 1001, "WebSocket close code")
        p = srv.procs["sluice-dataplane"]
        p.wait(timeout=5)
        check_eq(p.returncode, 0, "dataplane exit status after the drain")

        # EventSource reconnects after retry: with the last id it saw.
        last_id = [e["_id"] for e in got1 if e.get("_id")][-1]
        seq = int(last_id.split(":")[1])
        srv.start_dataplane()
        srv.wait_ready()
        c = stream("/api/chat/stream/" + s1, **{"Last-Event-ID": last_id})
        ev = c.collect_message(m1, timeout=20)
        check_eq(text_of(ev), "".join(harness.expected_tokens(prompt1, 40, env.source)[seq:]),
                 "resumed from %s on the restarted dataplane" % last_id)
        check_eq(ev[-1]["status"], "complete", "the resumed answer's done")
        for x in (idle, short, long_, replay, c):
            x.close()

    try:
        asyncio.run(body())
    finally:
        srv.stop()


def test_sluicectl_drain(env):
    """`sluicectl drain` is the same drain; without a dataplane it says so."""
    srv = env.fresh()
    srv.start()
    try:
        sid = srv.create_session()
        c = harness.CurlSse(srv.base + "/api/chat/stream/" + sid, headers=srv.auth_headers())
        check_eq(c.wait_head(), 200, "SSE status")
        p = srv.sluicectl("drain")
        check_eq(p.returncode, 0, "sluicectl drain exit status (stderr %r)" % p.stderr)
        check(b"is draining" in p.stdout, "sluicectl drain says what happens: %r" % p.stdout)
        shutdown_event(c, 5, "stream during sluicectl drain")
        c.close()
        dp = srv.procs["sluice-dataplane"]
        dp.wait(timeout=5)
        check_eq(dp.returncode, 0, "dataplane exit status after sluicectl drain")
        deadline = time.monotonic() + 5
        while True:
            p = srv.sluicectl("drain")
            if p.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        check(p.returncode != 0, "sluicectl drain without a dataplane fails")
        check(b"no dataplane is attached" in p.stderr, "and says why: %r" % p.stderr)
    finally:
        srv.stop()


TESTS = [test_readiness_across_control_restarts, test_sigterm_drain_and_resume, test_sluicectl_drain]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
