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
The same limits hold on /v1/chat/completions (429 in OpenAI's error shape),
with the tokens of real backends (OpenAI-compatible, Ollama) counted as
their usage reports say. A running answer whose tokens take its user or
key past tokens_per_day is cut at once, its backend request closed.
"""

import http.client
import json
import sys
import time

import harness
import llm
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
        clear_of_window_end(60, 20)
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
            clear_of_window_end(60 if limit.startswith("tokens_per_min") else 86400, 20)
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
        clear_of_window_end(60, 15)
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


def clear_of_window_end(window_s, need_s):
    """Waits, when the current UTC window of window_s seconds ends within
    need_s, until the next one starts: a fixed-window count must not roll
    over in the middle of a check."""
    left = window_s - time.time() % window_s
    if left < need_s:
        time.sleep(left + 0.2)


def v1_body(stream=False):
    return {"model": "fx-model", "stream": stream,
            "messages": [{"role": "user", "content": "five tokens please"}]}


def expect_v1_limit(r, etype, code, what):
    """A /v1 refusal: 429, Retry-After, OpenAI's error object."""
    expect_limit(r, code, what)
    e = r.json()["error"]
    check_eq(sorted(e), ["code", "message", "param", "type"], "%s: OpenAI's error members" % what)
    check_eq(e["type"], etype, "%s: error type" % what)
    check("limit of this API key" in e["message"], "%s: message %r" % (what, e["message"]))


def test_v1_limits_real_backends(env):
    """/v1/chat/completions against OpenAI-compatible and Ollama backends
    (upstream.py) runs into the limits of chat messages per API key, with
    python's http.client: tokens per minute counted from the backend's
    events and corrected to its usage report, answers at once (a client
    that leaves gives its place back at once); a refused request reaches no
    backend and stores nothing. The Ollama backend's eval_count counts on a
    chat session too."""
    fx = llm.Upstream(models=["fx-model"])
    slow = llm.Upstream(models=["fx-slow"], ttft_ms=20000)
    oll = llm.Upstream(models=["llama3.2"])
    srv = env.fresh(backends=[("up", {"type": "openai", "url": fx.url, "models": "fx-model"}),
                              ("slow", {"type": "openai", "url": slow.url, "models": "fx-slow"}),
                              ("oll", {"type": "ollama", "url": oll.url, "models": "llama3.2"})])
    try:
        srv.start()

        def sessions():
            return len(srv.request("GET", "/api/chat/sessions?archived=any&limit=100").json()["sessions"])

        def upstream_calls(u):
            return len([e for e in u.log() if e["path"] == "/v1/chat/completions"])

        # 5 tokens an answer against 12 a minute: the fourth is refused.
        key, kid = llm.api_key_with_id(srv)
        limits_set(srv, ["--key", kid], "tokens_per_min=12")
        clear_of_window_end(60, 20)
        for i in range(3):
            r = llm.v1(srv, v1_body(stream=i == 1), key)
            check_eq(r.status, 200, "completion %d under the limit (body %r)" % (i, r.body[:200]))
        before, calls = sessions(), upstream_calls(fx)
        r = llm.v1(srv, v1_body(), key)
        expect_v1_limit(r, "rate_limit_exceeded", "limit_tokens_per_min", "the 4th completion")
        check(1 <= int(r.headers["retry-after"]) <= 60, "Retry-After to the minute's end")
        check_eq(sessions(), before, "a refused completion records nothing")
        check_eq(upstream_calls(fx), calls, "a refused completion reaches no backend")
        got = json.loads(srv.sluicectl("--json", "limits", "show", "--key", kid).stdout)["limits"]
        check_eq(got["tokens_per_min"]["used"], 15, "three answers of a real backend counted")

        # The backend bills 40 tokens for 5 sent: its count holds.
        fx.config(billed=40)
        key2, kid2 = llm.api_key_with_id(srv)
        limits_set(srv, ["--key", kid2], "tokens_per_min=30")
        clear_of_window_end(60, 10)
        r = llm.v1(srv, v1_body(stream=True), key2)
        check_eq(r.status, 200, "the billed completion")
        got = json.loads(srv.sluicectl("--json", "limits", "show", "--key", kid2).stdout)["limits"]
        check_eq(got["tokens_per_min"]["used"], 40, "the backend's usage report counted")
        expect_v1_limit(llm.v1(srv, v1_body(), key2), "rate_limit_exceeded", "limit_tokens_per_min",
                        "after a billed answer")
        fx.config(billed=0)

        # One answer at once: a held stream takes the place, leaving frees it.
        key3, kid3 = llm.api_key_with_id(srv)
        limits_set(srv, ["--key", kid3], "concurrent_answers=1")
        held = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        held.request("POST", "/v1/chat/completions", json.dumps(
            {"model": "fx-slow", "stream": True, "messages": [{"role": "user", "content": "wait"}]}),
            {"Authorization": "Bearer " + key3, "Content-Type": "application/json"})
        hr = held.getresponse()
        check_eq(hr.status, 200, "the held stream's head")
        expect_v1_limit(llm.v1(srv, v1_body(), key3), "rate_limit_exceeded", "limit_concurrent_answers",
                        "a second answer at once")
        held.close()
        deadline = time.monotonic() + 5
        while True:
            r = llm.v1(srv, v1_body(), key3)
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check_eq(r.status, 200, "the place given back by the client that left (body %r)" % r.body[:200])

        # Ollama on a chat session: eval_count against tokens per day.
        u = User(srv, "olly")
        limits_set(srv, ["--user", "olly"], "tokens_per_day=5")
        clear_of_window_end(86400, 30)
        sid = u.session("llama3.2")
        check_eq(u.post(sid, "why is the sky blue").status, 202, "the first message")
        check_eq(u.wait_idle(sid)[-1]["status"], "complete", "the Ollama answer")
        expect_limit(u.post(sid, "and at night?"), "limit_tokens_per_day", "after an Ollama answer")
        check_eq(len(u.wait_idle(sid)), 2, "the refused message is not stored")
        check_acked(u)
    finally:
        srv.stop()
        for x in (fx, slow, oll):
            x.stop()


def stamp_of(text):
    """When upstream.py sent the last token of text (its "K@NS" stamps)."""
    return int(text.rsplit("@", 1)[1]) / 1e9


def closed_at(fx, what):
    """The time the backend fixture saw the one request it had to see closed."""
    e = []
    deadline = time.monotonic() + 5
    while not e and time.monotonic() < deadline:
        e = [x for x in fx.log() if x["end"] == "client_closed"]
        time.sleep(0.02)
    check_eq(len(e), 1, "%s: one backend request closed (log %r)" % (what, [x["end"] for x in fx.log()]))
    return e[0]["closed_at"]


def test_budget_cuts_running_answer(env):
    """A running answer through a real OpenAI-compatible backend is cut in
    the loop turn its tokens take its user (chat) or API key (/v1) past
    tokens_per_day: the backend sees its request closed right after the
    token that went past (measured from the backend's side, with the
    tokens' send times), the client gets usage then done error
    limit_tokens_per_day (/v1: OpenAI's error event and [DONE], or 429 not
    streamed), the store keeps the tokens up to the cut with their usage,
    and another user's answer streams on to its end."""
    fx = llm.Upstream(models=["fx-model"], tokens=150, interval_ms=20, stamp=True, usage=True)
    srv = env.fresh(backends=[("up", {"type": "openai", "url": fx.url, "models": "fx-model"})])
    try:
        srv.start()
        spender, other = User(srv, "spender"), User(srv, "bystander")
        limits_set(srv, ["--user", "spender"], "tokens_per_day=30")
        clear_of_window_end(86400, 60)
        sid, sid2 = spender.session("fx-model"), other.session("fx-model")
        c = harness.CurlSse(srv.base + "/api/chat/stream/" + sid, headers={"Authorization": "Bearer " + spender.token})
        c2 = harness.CurlSse(srv.base + "/api/chat/stream/" + sid2, headers={"Authorization": "Bearer " + other.token})
        c.wait_head()
        c2.wait_head()
        r2 = other.post(sid2, "a long answer")
        check_eq(r2.status, 202, "the bystander's message")
        r = spender.post(sid, "a long answer")
        check_eq(r.status, 202, "the spender's message")
        mid, mid2 = r.json()["message_id"], r2.json()["message_id"]
        ev = []
        while not ev or ev[-1].get("type") != "done":
            e = c.next_event(30)
            check(e is not None, "the spender's stream ended before done: %r" % [x.get("type") for x in ev])
            if e.get("message_id") == mid:
                ev.append(e)
        got_done = time.time()
        text = "".join(e["text"] for e in ev if e["type"] == "token")
        ntok = max(e["seq"] for e in ev if e["type"] == "token")
        done, usage = ev[-1], [e for e in ev if e["type"] == "usage"]
        check_eq(done["status"], "error", "done error (%r)" % done)
        check_eq(done["error"]["code"], "limit_tokens_per_day", "the limit's code")
        check("tokens_per_day limit of this user (30)" in done["error"]["message"], "message %r" % done["error"])
        check_eq(len(usage), 1, "one usage event")
        check_eq(ev[-2]["type"], "usage", "usage right before done")
        check(30 < ntok < 40, "cut just past the budget: %d tokens" % ntok)
        check_eq(usage[0]["completion_tokens"], ntok, "usage counts the tokens up to the cut")
        dt = closed_at(fx, "chat cut") - stamp_of(text)
        print("  chat: the backend saw its request closed %.1f ms after sending the token past the budget "
              "(%d tokens, done reached the client %.1f ms after it)" % (dt * 1000, ntok,
                                                                        (got_done - stamp_of(text)) * 1000))
        check(dt < 0.5, "the cut reached the backend after %.3f s" % dt)
        msgs = spender.wait_idle(sid)
        check_eq((msgs[-1]["status"], msgs[-1]["content"]), ("error", text), "stored: the tokens up to the cut")
        check_eq(msgs[-1]["usage"]["completion_tokens"], ntok, "stored usage")
        expect_limit(spender.post(sid, "more"), "limit_tokens_per_day", "after the cut")
        # The bystander's answer streamed on, whole.
        ev2 = []
        while not ev2 or ev2[-1].get("type") != "done":
            e = c2.next_event(30)
            check(e is not None, "the bystander's stream ended before done")
            if e.get("message_id") == mid2:
                ev2.append(e)
        check_eq((ev2[-1]["status"], max(e["seq"] for e in ev2 if e["type"] == "token")), ("complete", 150),
                 "the bystander's answer")
        c.close()
        c2.close()

        # /v1 with an API key whose own budget is 20: streamed, then not.
        fx.reset()
        key, kid = llm.api_key_with_id(srv)
        limits_set(srv, ["--key", kid], "tokens_per_day=20")
        r = llm.v1(srv, {"model": "fx-model", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "a long answer"}]}, key)
        check_eq(r.status, 200, "the streamed completion's head")
        data = llm.sse_data(r.body)
        check_eq(data[-1], "[DONE]", "[DONE] last")
        err = json.loads(data[-2])["error"]
        check_eq((err["code"], err["type"], err["param"]), ("limit_tokens_per_day", "rate_limit_exceeded", None),
                 "OpenAI's error event (%r)" % err)
        check("limit of this API key (20)" in err["message"], "message %r" % err["message"])
        chunks = [json.loads(d) for d in data[:-2]]
        text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch.get("choices"))
        ntok = len([ch for ch in chunks if ch.get("choices")])
        check(20 < ntok < 30, "cut just past the key's budget: %d tokens" % ntok)
        check_eq(chunks[-1]["usage"]["completion_tokens"], ntok, "the usage chunk before the error")
        dt = closed_at(fx, "/v1 cut") - stamp_of(text)
        print("  /v1: the backend saw its request closed %.1f ms after sending the token past the budget "
              "(%d tokens)" % (dt * 1000, ntok))
        check(dt < 0.5, "the /v1 cut reached the backend after %.3f s" % dt)
        deadline = time.monotonic() + 5
        while True:
            p = srv.sluicectl("--json", "usage", "--key", kid)
            check_eq(p.returncode, 0, "usage --key (stderr %r)" % p.stderr)
            u = json.loads(p.stdout)["total"]
            if u["answers"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check_eq((u["answers"], u["completion_tokens"]), (1, ntok), "the cut completion's usage under the key")
        v1s = [x for x in srv.request("GET", "/api/chat/sessions").json()["sessions"] if x["agent_id"] == "openai-api"]
        m = srv.request("GET", "/api/chat/sessions/" + v1s[0]["id"]).json()["messages"][-1]
        check_eq((m["status"], m["content"], m["usage"]["completion_tokens"]), ("error", text, ntok),
                 "the recorded /v1 answer: the tokens up to the cut")
        key2, kid2 = llm.api_key_with_id(srv)
        limits_set(srv, ["--key", kid2], "tokens_per_day=20")
        r = llm.v1(srv, {"model": "fx-model", "messages": [{"role": "user", "content": "a long answer"}]}, key2)
        expect_v1_limit(r, "rate_limit_exceeded", "limit_tokens_per_day", "a completion not streamed, cut")
        check_eq(len([x for x in fx.log() if x["end"] == "client_closed"]), 2, "its backend request closed too")
    finally:
        srv.stop()
        fx.stop()


TESTS = [test_one_user_hits_every_limit, test_overrides_survive_restart,
         test_reserve_keeps_accepted_answers, test_v1_limits_real_backends,
         test_budget_cuts_running_answer]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
