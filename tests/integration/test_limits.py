#!/usr/bin/python3
"""Quotas, rate limits and the store's reserve (issue 12).

Reproduces the finding "with the default 1 GiB map, ~1,000 messages of
~1 MB from one account made every other user's messages fail with 503
store_full and lost in-flight writes" and shows it fixed: one user runs
into each of its limits in turn (stored text, conversations, messages per
minute, answers at once, tokens per minute and per day, an API key's own
limit), gets 429 with Retry-After and a code naming the limit, nothing of a
refused message is stored, everything acknowledged is there, and another
user's logins and messages keep working throughout. With the quotas off,
users filling the store together get 503 store_full for new data while an
answer accepted before still streams and is stored in full (the reserve).
"""

import json
import sys
import time

import harness
from harness import check, check_eq

MB_TEXT = "x" * 1000000


class User:
    def __init__(self, srv, name):
        self.srv, self.name = srv, name
        self.pw = name + "-password"
        srv.add_user(name, self.pw)
        self.token = srv.login(name, self.pw)
        self.acked = []  # (sid, content) of every 202

    def req(self, method, path, body=None, token=None):
        return self.srv.request(method, path, body,
                                headers={"Authorization": "Bearer " + (token or self.token)},
                                auth=False, timeout=30)

    def session(self, model="synth"):
        r = self.req("POST", "/api/chat/sessions", {"model_id": model})
        check_eq(r.status, 201, "%s: create session (body %r)" % (self.name, r.body[:200]))
        return r.json()["id"]

    def post(self, sid, content, token=None):
        r = self.req("POST", "/api/chat/message", {"session_id": sid, "content": content}, token)
        if r.status == 202:
            self.acked.append((sid, content))
        return r

    def wait_idle(self, sid, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.req("GET", "/api/chat/sessions/" + sid).json()["messages"]
            if not msgs or msgs[-1]["status"] not in ("queued", "streaming"):
                return msgs
            check(time.monotonic() < deadline, "%s: answer in %s did not end" % (self.name, sid))
            time.sleep(0.05)


def limits_set(srv, who, *pairs):
    p = srv.sluicectl("limits", "set", *(list(who) + list(pairs)))
    check_eq(p.returncode, 0, "sluicectl limits set %s %s: %r" % (who, pairs, p.stderr[-300:]))


def expect_limit(r, code, what):
    check_eq(r.status, 429, "%s: status (body %r)" % (what, r.body[:200]))
    check_eq(r.json()["error"]["code"], code, "%s: error code" % what)
    ra = r.headers.get("retry-after", "")
    check(ra.isdigit() and int(ra) >= 1, "%s: Retry-After %r" % (what, ra))


def other_still_works(other, sid, what):
    st, _, _ = other.srv.login(other.name, other.pw, full=True).status, None, None
    check_eq(st, 200, "%s: the other user's login" % what)
    r = other.post(sid, "still here after " + what)
    check_eq(r.status, 202, "%s: the other user's message (body %r)" % (what, r.body[:200]))
    other.wait_idle(sid)


def check_acked(user):
    """Every acknowledged message is stored, byte for byte, exactly once."""
    by_sid = {}
    for sid, content in user.acked:
        by_sid.setdefault(sid, []).append(content)
    for sid, contents in by_sid.items():
        msgs = user.wait_idle(sid)
        stored = [m["content"] for m in msgs if m["role"] == "user"]
        check_eq(stored, contents, "%s: the user messages stored in %s" % (user.name, sid))


def test_one_user_hits_every_limit(env):
    srv = env.fresh(sections={"limits.user": {"stored_mb": 4, "sessions": 3}},
                    auth={"login_rate_user": 1000})
    try:
        srv.start()
        hog, other = User(srv, "hog"), User(srv, "other")
        osid = other.session()
        hog_s = [hog.session(), hog.session(), hog.session()]

        # Conversations: the role allows 3.
        expect_limit(hog.req("POST", "/api/chat/sessions", {"model_id": "synth"}), "limit_sessions",
                     "4th conversation")
        other_still_works(other, osid, "limit_sessions")

        # Messages per minute (first: the minute's count starts here).
        limits_set(srv, ["--user", "hog"], "messages_per_min=3")
        for i in range(3):
            check_eq(hog.post(hog_s[1], "m%d" % i).status, 202, "message %d within the rate" % i)
            hog.wait_idle(hog_s[1])
        r = hog.post(hog_s[1], "one too many")
        expect_limit(r, "limit_messages_per_min", "4th message in a minute")
        check(int(r.headers["retry-after"]) <= 60, "Retry-After within the minute")
        other_still_works(other, osid, "limit_messages_per_min")
        limits_set(srv, ["--user", "hog"], "messages_per_min=0")

        # Stored text: 4 MiB; 1 MB messages, each answered before the next.
        n = 0
        while n < 10:
            r = hog.post(hog_s[0], MB_TEXT)
            if r.status != 202:
                break
            n += 1
            hog.wait_idle(hog_s[0])
        expect_limit(r, "limit_stored_mb", "message past 4 MiB of stored text")
        check_eq(n, 4, "1 MB messages accepted under a 4 MiB quota")
        msgs = hog.wait_idle(hog_s[0])
        check_eq(len(msgs), 2 * n, "messages stored in the conversation: nothing of the refused one")
        other_still_works(other, osid, "limit_stored_mb")
        limits_set(srv, ["--user", "hog"], "stored_mb=0")

        # Answers at once: one slow answer runs, a second session must wait.
        limits_set(srv, ["--user", "hog"], "concurrent_answers=1", "sessions=0")
        slow = hog.req("POST", "/api/chat/sessions", {"model_id": "synth-slow"})
        check_eq(slow.status, 201, "slow session")
        slow_sid = slow.json()["id"]
        check_eq(hog.post(slow_sid, "a slow one").status, 202, "the running answer")
        expect_limit(hog.post(hog_s[2], "a second at once"), "limit_concurrent_answers",
                     "a second answer at once")
        other_still_works(other, osid, "limit_concurrent_answers")
        r = hog.req("POST", "/api/chat/sessions/%s/cancel" % slow_sid)
        check_eq(r.status, 200, "cancel the slow answer")
        check_eq(hog.post(hog_s[2], "now it may run").status, 202, "after the first ended")
        hog.wait_idle(hog_s[2])
        limits_set(srv, ["--user", "hog"], "concurrent_answers=0")

        # Tokens per minute (synth answers 24 tokens), then per day.
        for limit, code in (("tokens_per_min=30", "limit_tokens_per_min"),
                            ("tokens_per_day=30", "limit_tokens_per_day")):
            sid = hog.session()
            # The counters of this minute / day already hold earlier answers:
            # the first message may be refused at once.
            limits_set(srv, ["--user", "hog"], limit)
            r = None
            for _ in range(5):
                r = hog.post(sid, "count my tokens")
                if r.status != 202:
                    break
                hog.wait_idle(sid)
            expect_limit(r, code, limit)
            other_still_works(other, osid, code)
            limits_set(srv, ["--user", "hog"], limit.split("=")[0] + "=0")

        # An API key's own limit: the key is held to 1 message a minute,
        # the user's login session is not.
        p = srv.sluicectl("--json", "keys", "create", "--user", "hog")
        check_eq(p.returncode, 0, "keys create")
        key = json.loads(p.stdout)
        limits_set(srv, ["--key", key["id"]], "messages_per_min=1")
        ksid = hog.session()
        check_eq(hog.post(ksid, "with the key", token=key["key"]).status, 202, "first message by key")
        hog.wait_idle(ksid)
        r = hog.post(ksid, "again with the key", token=key["key"])
        expect_limit(r, "limit_messages_per_min", "second message by key")
        check("API key" in r.json()["error"]["message"], "the refusal names the key: %r" % r.body)
        check_eq(hog.post(ksid, "with the login").status, 202, "the login session is not held")
        hog.wait_idle(ksid)

        p = srv.sluicectl("--json", "limits", "show", "--key", key["id"])
        check_eq(p.returncode, 0, "limits show --key")
        shown = json.loads(p.stdout)["limits"]["messages_per_min"]
        check_eq((shown["value"], shown["overridden"], shown["used"]), (1, True, 1), "key's limit shown")
        p = srv.sluicectl("--json", "limits", "list")
        keys = [o.get("key") or o.get("user") for o in json.loads(p.stdout)["overrides"]]
        check(key["id"] in keys and "hog" in keys, "limits list: %r" % keys)

        check_acked(hog)
        check_acked(other)
    finally:
        srv.stop()


def test_overrides_survive_restart(env):
    srv = env.fresh(sections={"limits.user": {"messages_per_min": 100, "sessions": 10000}})
    try:
        srv.start()
        User(srv, "ivy")
        limits_set(srv, ["--user", "ivy"], "messages_per_min=2", "tokens_per_day=0")
        srv.stop_proc("sluice-control")
        srv.start_control()
        srv.wait_ready()
        deadline = time.monotonic() + 10
        while True:
            p = srv.sluicectl("--json", "limits", "show", "--user", "ivy")
            if p.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check_eq(p.returncode, 0, "limits show after a restart (%r)" % p.stderr[-300:])
        got = json.loads(p.stdout)["limits"]
        check_eq((got["messages_per_min"]["value"], got["messages_per_min"]["overridden"]),
                 (2, True), "override after a restart")
        check_eq((got["sessions"]["value"], got["sessions"]["overridden"]),
                 (10000, False), "role value")
        limits_set(srv, ["--user", "ivy"], "messages_per_min=role")
        got = json.loads(srv.sluicectl("--json", "limits", "show", "--user", "ivy").stdout)["limits"]
        check_eq(got["messages_per_min"]["value"], 100, "back to the role's value")
        p = srv.sluicectl("limits", "set", "--user", "ivy", "bogus=1")
        check(p.returncode != 0 and b"unknown limit" in p.stderr, "unknown limit name: %r" % p.stderr)
        p = srv.sluicectl("limits", "show", "--user", "nobody")
        check(p.returncode != 0, "limits of a missing user")
    finally:
        srv.stop()


def test_reserve_keeps_accepted_answers(env):
    """Quotas off, a 16 MiB store with a 4 MiB reserve: a user filling it gets
    503 store_full for new messages, and the answer another user's message
    started before streams on and is stored whole."""
    srv = env.fresh(sections={"limits.user": {}}, auth={"login_rate_user": 1000})
    srv.write_conf(srv.conf_text().replace("[control]\n", "[control]\nstore_map_mb = 16\n"
                                           "store_reserve_mb = 4\n"))
    try:
        srv.start()
        filler, other = User(srv, "filler"), User(srv, "other2")
        osid = other.session("synth-slow")
        r = other.post(osid, "a long answer while the store fills")
        check_eq(r.status, 202, "the answer accepted first")
        full = None
        sids = [filler.session() for _ in range(4)]
        for i in range(40):
            r = filler.post(sids[i % 4], MB_TEXT)
            if r.status != 202:
                full = r
                break
            filler.wait_idle(sids[i % 4])
        check(full is not None, "the store never filled")
        check_eq((full.status, full.json()["error"]["code"]), (503, "store_full"),
                 "a new message once only the reserve is left")
        check(full.headers.get("retry-after"), "store_full without Retry-After")
        msgs = other.wait_idle(osid, timeout=60)
        check_eq(msgs[-1]["status"], "complete", "the answer accepted before the store filled")
        words = harness.expected_answer("a long answer while the store fills", 40)
        check_eq(msgs[-1]["content"], words, "its stored text")
        check_acked(filler)
        check_acked(other)
        st = json.loads(srv.sluicectl("--json", "store", "stats").stdout)
        check(st.get("reserve_refusals", 0) >= 1, "store stats count the refusals: %r" % st)
    finally:
        srv.stop()


TESTS = [test_one_user_hits_every_limit, test_overrides_survive_restart,
         test_reserve_keeps_accepted_answers]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
