#!/usr/bin/python3
"""Durability of the LMDB store (docs/storage.md): sluice-control is killed
with SIGKILL at random moments while clients submit messages; every message
that got a 202 must survive byte for byte, exactly once, and mdb_stat must
accept the store after every kill. A second test holds the token bound: a
kill during a long answer loses at most token_commit_ms of its tokens."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import harness
from harness import CurlSse, check, check_eq

ROUNDS = 20
SESSIONS = 4
COMMIT_MS = 50
# Receipt times are taken when the test reads the event, after curl parsed
# it: later than the true arrival, which only makes the check stricter on
# the store's side. The slack covers one fsync'd commit and clock reads.
SLACK_MS = 150

FAST = {"fast": {"ttft_ms": 1, "tokens_per_s": 5000, "answer_tokens": 2}}
LONG = {"long": {"ttft_ms": 10, "tokens_per_s": 200, "answer_tokens": 4000}}


def with_commit_ms(srv, ms):
    text = srv.conf_text().replace("[control]\n", "[control]\ntoken_commit_ms = %d\n" % ms, 1)
    check("token_commit_ms = %d" % ms in text, "could not set token_commit_ms in the test config")
    srv.write_conf(text)


def store_dir(srv):
    return os.path.join(srv.tmp, "store")


def mdb_stat_ok(srv, what):
    p = subprocess.run(["mdb_stat", "-a", store_dir(srv)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    check(p.returncode == 0, "%s: mdb_stat -a %s failed (exit %d): %r"
          % (what, store_dir(srv), p.returncode, p.stderr[-400:]))


def restart_control(srv):
    srv.start_control()
    srv.wait_ready(timeout=15, want=200)


class Submitter(threading.Thread):
    """Posts messages round-robin over the sessions until told to stop;
    records every 202 as (session, message id, content)."""

    def __init__(self, srv, sessions, round_no, accepted):
        super().__init__(daemon=True)
        self.srv = srv
        self.sessions = sessions
        self.round_no = round_no
        self.accepted = accepted
        self.stop = threading.Event()
        self.errors = []

    def run(self):
        i = 0
        while not self.stop.is_set():
            sid = self.sessions[i % len(self.sessions)]
            # Non-ASCII and quotes so "byte for byte" means something.
            content = "r%d-m%d \u00e9t\u00e9 \u2713 \"q\" %08x" % (
                self.round_no, i, random.getrandbits(32))
            i += 1
            try:
                r = self.srv.request("POST", "/api/chat/message",
                                     {"session_id": sid, "content": content}, timeout=3)
            except OSError:
                time.sleep(0.01)
                continue
            if r.status == 202:
                self.accepted.append((sid, r.json()["message_id"], content))
            elif r.status in (409, 503, 504):
                # busy (the answer still runs) or control gone: try the next one
                time.sleep(0.002)
            else:
                self.errors.append("POST /api/chat/message: %d %r" % (r.status, r.body[:200]))
                time.sleep(0.01)


def get_session(srv, sid):
    """GET the session. A request sent while the dataplane still believes the
    killed control alive is refused with 503 + Retry-After once the new control
    is seen (docs/channel.md: each request is served once or refused); a client
    honours Retry-After, so this one does too, a bounded number of times. A
    request that is never answered fails the test at once."""
    for _ in range(5):
        r = srv.request("GET", "/api/chat/sessions/%s" % sid, timeout=5)
        if r.status != 503:
            break
        check_eq(r.headers.get("retry-after"), "1", "503 Retry-After")
        time.sleep(1)
    check_eq(r.status, 200, "GET /api/chat/sessions/%s status (body %r)" % (sid, r.body[:200]))
    return r.json()


def check_accepted(srv, sessions, accepted, what):
    by_session = {}
    for sid in sessions:
        msgs = get_session(srv, sid).get("messages", [])
        by_session[sid] = msgs
    for sid, mid, content in accepted:
        # The 202 names the answer; the user's message sits right before it.
        msgs = by_session[sid]
        at = [i for i, m in enumerate(msgs) if m.get("id") == mid]
        check_eq(len(at), 1, "%s: copies of accepted answer %s in %s" % (what, mid, sid))
        check(at[0] > 0, "%s: answer %s has no message before it" % (what, mid))
        user = msgs[at[0] - 1]
        check_eq(user.get("role"), "user", "%s: role of the message before %s" % (what, mid))
        check_eq(user.get("content", "").encode("utf-8"), content.encode("utf-8"),
                 "%s: content of the message answered by %s" % (what, mid))
        same = [m for m in msgs if m.get("role") == "user" and m.get("content") == content]
        check_eq(len(same), 1, "%s: copies of the message answered by %s" % (what, mid))
    for sid, msgs in by_session.items():
        ids = [m.get("id") for m in msgs]
        check_eq(len(ids), len(set(ids)), "%s: duplicate message ids in %s" % (what, sid))


def test_kill9_rounds(env):
    srv = env.fresh(models=FAST)
    with_commit_ms(srv, COMMIT_MS)
    try:
        srv.start()
        sessions = [srv.create_session("fast") for _ in range(SESSIONS)]
        accepted = []
        rng = random.Random(os.getpid())
        t_end = time.monotonic() + 150
        for rnd in range(ROUNDS):
            check(time.monotonic() < t_end, "durability rounds exceed their time budget")
            sub = Submitter(srv, sessions, rnd, accepted)
            sub.start()
            time.sleep(rng.uniform(0.15, 0.6))
            srv.kill("sluice-control", signal.SIGKILL)
            sub.stop.set()
            sub.join(timeout=10)
            check(not sub.is_alive(), "round %d: the submitting client did not stop" % rnd)
            check(not sub.errors, "round %d: unexpected answers: %r" % (rnd, sub.errors[:3]))
            mdb_stat_ok(srv, "round %d" % rnd)
            restart_control(srv)
            check_accepted(srv, sessions, accepted, "round %d" % rnd)
        check(len(accepted) >= ROUNDS, "only %d messages were accepted in %d rounds"
              % (len(accepted), ROUNDS))
        print("  %d accepted messages survived %d kills" % (len(accepted), ROUNDS), flush=True)
    finally:
        srv.stop()


def test_token_bound(env):
    srv = env.fresh(models=LONG)
    with_commit_ms(srv, COMMIT_MS)
    try:
        srv.start()
        sid = srv.create_session("long")
        c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
        try:
            check_eq(c.wait_head(), 200, "SSE stream status")
            prompt = "tell me a long story"
            mid = srv.post_message(sid, prompt)
            received = []  # (monotonic receipt time, first seq, text)
            t_stop = time.monotonic() + 1.5
            while time.monotonic() < t_stop:
                e = c.next_event(0.5)
                if e is None or e["type"] != "token":
                    continue
                received.append((time.monotonic(), e["seq"] - e["n"] + 1, e["text"]))
            srv.kill("sluice-control", signal.SIGKILL)
            t_kill = time.monotonic()
        finally:
            c.close()
        check(len(received) > 20, "only %d token events before the kill" % len(received))
        mdb_stat_ok(srv, "after the kill")
        restart_control(srv)
        msgs = get_session(srv, sid).get("messages", [])
        ans = [m for m in msgs if m.get("role") == "assistant"]
        check_eq(len(ans), 1, "assistant messages after the restart")
        check_eq(ans[0].get("id"), mid, "the stored answer's id")
        check_eq(ans[0].get("status"), "interrupted", "the killed answer's status")
        stored = ans[0].get("content", "")
        full = harness.expected_answer(prompt, 4000)
        check(full.startswith(stored), "stored answer is not a prefix of the synthetic answer "
              "(%d chars stored)" % len(stored))
        bound = t_kill - (COMMIT_MS + SLACK_MS) / 1000.0
        must = "".join(text for t, _, text in received if t <= bound)
        delivered = "".join(text for _, _, text in received)
        check(len(must) > 0, "no token was delivered more than %d ms before the kill" % (COMMIT_MS + SLACK_MS))
        check(stored.startswith(must),
              "the store lost tokens delivered more than %d+%d ms before the kill: stored %d chars, "
              "must hold %d (delivered %d)" % (COMMIT_MS, SLACK_MS, len(stored), len(must), len(delivered)))
        print("  delivered %d chars, stored %d, bound required %d" % (len(delivered), len(stored), len(must)),
              flush=True)
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(harness.run([test_kill9_rounds, test_token_bound]))
