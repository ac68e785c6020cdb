#!/usr/bin/python3
"""Running it like an appliance (issue 11): readiness that means serving
(items 4) and drain and shutdown (item 1).

Readiness: a client polls /readyz and a request that control answers, one
after the other on fresh connections spread over two workers, while
sluice-control is stopped (SIGTERM) and started 20 times. A /readyz 200
followed by a 503 for the request is a lie, unless the test's SIGTERM fell
between the two; every cycle must also see the service come back (200 for
both), so a /readyz that never says 200 does not pass either."""

import sys
import threading
import time

import harness
from harness import check, check_eq

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


TESTS = [test_readiness_across_control_restarts]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
