#!/usr/bin/python3
"""workers=2: WebSocket clients on two different workers subscribe to one
session and both receive the whole answer (fan-out across workers)."""

import asyncio
import sys

import harness
from harness import check, check_message_events
from test_ws import collect, connect, request, subscribe_and_send

MAX_ATTEMPTS = 64


async def two_workers(srv, sid):
    spare = []
    by_worker = {}
    try:
        for _ in range(MAX_ATTEMPTS):
            ws, hello = await connect(srv)
            if hello["worker"] in by_worker:
                spare.append(ws)
                continue
            by_worker[hello["worker"]] = ws
            if len(by_worker) == 2:
                break
        check(len(by_worker) == 2, "%d connections all landed on worker(s) %r"
              % (MAX_ATTEMPTS, sorted(by_worker)))
        (wa, a), (wb, b) = sorted(by_worker.items())
        check(0 <= wa < 2 and 0 <= wb < 2, "worker numbers %r, %r outside 0..1" % (wa, wb))
        pb = []
        r = await request(b, {"type": "subscribe", "session_id": sid}, pb)
        check(r.get("request") == "subscribe", "worker %d subscribe reply %r" % (wb, r))
        pa = []
        prompt = "fan out across workers"
        mid = await subscribe_and_send(a, sid, prompt, pa)
        for w, ws, pending in ((wa, a, pa), (wb, b, pb)):
            ev = await collect(ws, mid, pending)
            try:
                check_message_events(ev, sid, mid, prompt, 24, model="synth")
            except harness.TestFailure as e:
                raise harness.TestFailure("client on worker %d: %s" % (w, e))
    finally:
        for ws in spare + list(by_worker.values()):
            await ws.close()


def test_two_workers_one_session(env):
    srv = env.server(workers=2)
    sid = srv.create_session("synth")
    asyncio.run(asyncio.wait_for(two_workers(srv, sid), 60))


def test_x_sluice_worker_header(env):
    srv = env.server(workers=2)
    seen = set()
    for _ in range(MAX_ATTEMPTS):
        r = srv.request("GET", "/healthz")
        check(r.status == 200, "GET /healthz: %r" % r)
        w = r.headers.get("x-sluice-worker")
        check(w is not None and w.isdigit() and int(w) < 2, "X-Sluice-Worker %r" % w)
        seen.add(int(w))
        if len(seen) == 2:
            break
    check(seen == {0, 1}, "%d new connections served only by worker(s) %r" % (MAX_ATTEMPTS, seen))


TESTS = [test_two_workers_one_session, test_x_sluice_worker_header]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
