#!/usr/bin/python3
"""workers=2: WebSocket clients on two different workers subscribe to one
session and both receive the whole answer (fan-out across workers)."""

import asyncio
import os
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


def thread_slices(pid):
    """{thread name: its scheduler slice in ns} for every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, tid)
        with open(base + "comm") as f:
            name = f.read().strip()
        with open(base + "sched") as f:
            for line in f:
                if line.startswith("se.slice"):
                    out[name] = int(line.split(":")[1])
    return out


def custom_slices():
    """Whether this kernel takes a fair task's slice from sched_setattr
    (EEVDF, 6.12 and later) and shows it in /proc/PID/sched."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    with open("/proc/self/sched") as f:
        shown = any(line.startswith("se.slice") for line in f)
    return shown and (major, minor) >= (6, 12)


def test_worker_slice(env):
    if not custom_slices():
        # Older kernels ignore the request: the workers must still run.
        srv = env.server(workers=2, dataplane={"worker_slice_us": "250"})
        r = srv.request("GET", "/healthz")
        check(r.status == 200, "GET /healthz with worker_slice_us on an older kernel: %r" % r)
        print("note: kernel %s has no custom slices; only checked that the workers run"
              % os.uname().release, flush=True)
        return
    for conf, want in (({"worker_slice_us": "250"}, 250000), ({}, 100000), ({"worker_slice_us": "0"}, None)):
        srv = env.fresh(workers=2, dataplane=conf).start()
        try:
            slices = thread_slices(srv.procs["sluice-dataplane"].pid)
        finally:
            srv.stop()
        workers = {k: v for k, v in slices.items() if k.startswith("sluice-w")}
        check(sorted(workers) == ["sluice-w0", "sluice-w1"], "worker threads %r" % sorted(slices))
        # 0 leaves the kernel's default, which the main thread has too.
        expect = want if want is not None else slices["sluice-dataplan"]
        check(all(v == expect for v in workers.values()),
              "%r: worker slices %r, want %d ns" % (conf, workers, expect))


TESTS = [test_two_workers_one_session, test_x_sluice_worker_header, test_worker_slice]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
