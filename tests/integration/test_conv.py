#!/usr/bin/python3
"""The conversation API (docs/api.md "Conversations"): sessions with agents,
listing with cursors, search and the archived filter, patch, delete,
ownership, export, resume over SSE and WebSocket (mid-answer and after done)
and replay with its recorded timing. The helpers at the top are shared with
test_restart.py."""

import asyncio
import json
import subprocess
import sys
import time
import urllib.parse

import harness
from harness import check, check_eq

MODELS = dict(harness.DEFAULT_MODELS)
# About 1.2 s per answer: long enough to drop a connection in the middle.
MODELS["synth-mid"] = {"ttft_ms": 50, "tokens_per_s": 25, "answer_tokens": 30}

EXTRA_CONF = """
[auth]
pwhash_ops = 1
pwhash_mem_kib = 8192

[agent.coder]
model = synth-mid
description = Writes code
"""


def start(env):
    """A private server with the extra configuration; the caller stops it."""
    srv = env.fresh(models=MODELS)
    text = srv.conf_text()
    extra = EXTRA_CONF
    if "[auth]" in text:
        extra = extra.replace("[auth]\npwhash_ops = 1\npwhash_mem_kib = 8192\n", "")
    srv.write_conf(text + extra)
    srv.start()
    return srv


def add_user(srv, name, password, role="user"):
    if hasattr(srv, "add_user"):
        return srv.add_user(name, password, role)
    p = subprocess.run([srv.binary("sluicectl"), "-c", srv.conf_path, "users", "add", name,
                        "--role", role], input=(password + "\n").encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    check_eq(p.returncode, 0, "sluicectl users add %s (stderr %r)" % (name, p.stderr[-300:]))
    return None


def login(srv, name, password):
    if hasattr(srv, "login"):
        return srv.login(name, password)
    r = srv.request("POST", "/api/auth/login", {"username": name, "password": password})
    check_eq(r.status, 200, "POST /api/auth/login as %s (body %r)" % (name, r.body))
    return r.json()["session_token"]


def user(srv, name):
    """Creates user `name` and returns a bearer token for it."""
    add_user(srv, name, "pw-" + name)
    return login(srv, name, "pw-" + name)


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def api(srv, tok, method, path, body=None):
    return srv.request(method, path, body, headers=bearer(tok))


def create(srv, tok, agent="coder", **kw):
    body = dict(kw, agent_id=agent)
    r = api(srv, tok, "POST", "/api/chat/sessions", body)
    check_eq(r.status, 201, "POST /api/chat/sessions %r (body %r)" % (body, r.body))
    return r.json()


def post(srv, tok, sid, content):
    r = api(srv, tok, "POST", "/api/chat/message", {"session_id": sid, "content": content})
    check_eq(r.status, 202, "POST /api/chat/message (body %r)" % r.body)
    return r.json()["message_id"]


def sse(srv, tok, path, last_event_id=None):
    hdrs = bearer(tok)
    if last_event_id:
        hdrs["Last-Event-ID"] = last_event_id
    c = harness.CurlSse(srv.base + path, headers=hdrs)
    check_eq(c.wait_head(), 200, "SSE %s status" % path)
    return c


def sse_until(c, pred, timeout=20):
    """Events (comments skipped) up to and including the first for which pred holds."""
    out = []
    while True:
        e = c.next_event(timeout)
        check(e is not None, "SSE ended or timed out; got %r" % [x.get("type") for x in out][-8:])
        if e["type"] == ":comment":
            continue
        out.append(e)
        if pred(e):
            return out


async def ws_connect(srv, tok):
    import websockets
    ws = await asyncio.wait_for(websockets.connect(
        srv.ws_url(), ping_interval=None, max_size=None,
        open_timeout=10, extra_headers=bearer(tok), ssl=srv.ws_ssl()), 10)
    hello = await ws_recv(ws)
    check_eq(hello.get("type"), "connected", "first WebSocket message")
    return ws


async def ws_recv(ws, timeout=20):
    raw = await asyncio.wait_for(ws.recv(), timeout)
    check(isinstance(raw, str), "binary WebSocket message %r" % raw[:80])
    return json.loads(raw)


async def ws_until(ws, pred, timeout=20):
    out = []
    while True:
        m = await ws_recv(ws, timeout)
        out.append(m)
        if pred(m):
            return out


def text_of(events):
    """Concatenated token text, checking seq continuity inside each message."""
    last = {}
    parts = []
    for e in events:
        if e.get("type") != "token":
            continue
        mid = e["message_id"]
        first = e["seq"] - e["n"] + 1
        if mid in last:
            check_eq(first, last[mid] + 1, "first seq of a token event of %s" % mid)
        last[mid] = e["seq"]
        parts.append(e["text"])
    return "".join(parts)


def expected(prompt, n=30):
    return harness.expected_answer(prompt, n)


# ---- tests ----------------------------------------------------------------

def test_agents_and_models(env):
    srv = start(env)
    try:
        r = srv.request("GET", "/api/agents")
        check_eq(r.status, 200, "GET /api/agents status")
        check_eq(r.json(), {"agents": [{"id": "coder", "description": "Writes code",
                                        "model": "synth-mid"}]}, "GET /api/agents body")
        r = srv.request("GET", "/api/models")
        check_eq(r.status, 200, "GET /api/models status")
        check_eq(sorted(m["id"] for m in r.json()["models"]), sorted(MODELS), "model ids")
        tok = user(srv, "alice")
        s = create(srv, tok, title="x")
        check_eq((s["agent_id"], s["model_id"], s["title"], s["archived"]),
                 ("coder", "synth-mid", "x", False), "created session")
        s = create(srv, tok, model_id="synth")
        check_eq(s["model_id"], "synth", "model_id overrides the agent's model")
        for body, code in (({"agent_id": "nobody"}, "unknown_agent"),
                           ({"agent_id": "coder", "model_id": "gpt-9"}, "unknown_model"),
                           ({"agent_id": 3}, "invalid_request"), ({}, "invalid_request")):
            r = api(srv, tok, "POST", "/api/chat/sessions", body)
            check_eq((r.status, r.json()["error"]["code"]), (400, code), "create %r" % body)
    finally:
        srv.stop()


def list_all(srv, tok, query, limit):
    """Every page of GET /api/chat/sessions?query, following next_cursor."""
    ids, cursor, pages = [], None, 0
    while True:
        q = "limit=%d%s" % (limit, "&" + query if query else "")
        if cursor:
            q += "&cursor=" + urllib.parse.quote(cursor, safe="")
        r = api(srv, tok, "GET", "/api/chat/sessions?" + q)
        check_eq(r.status, 200, "GET /api/chat/sessions?%s (body %r)" % (q, r.body))
        page = r.json()
        check(len(page["sessions"]) <= limit, "page longer than limit %d" % limit)
        ids += [s["id"] for s in page["sessions"]]
        stamps = [s["updated_at"] for s in page["sessions"]]
        check(stamps == sorted(stamps, reverse=True), "page not newest first: %r" % stamps)
        pages += 1
        cursor = page["next_cursor"]
        check(pages < 50, "pagination does not end")
        if cursor is None:
            return ids


def test_list_patch_delete_ownership(env):
    srv = start(env)
    try:
        alice, bob = user(srv, "alice"), user(srv, "bob")
        made = []
        for i in range(7):
            made.append(create(srv, alice, title="%s %d" % ("Alpha" if i % 2 else "beta", i))["id"])
            time.sleep(0.01)
        bobs = create(srv, bob, title="Alpha of bob")["id"]
        got = list_all(srv, alice, "", 3)
        check_eq(sorted(got), sorted(made), "all of alice's sessions over pages of 3, once each")
        check_eq(sorted(list_all(srv, alice, "q=alpha", 2)), sorted(made[1::2]),
                 "q=alpha (case-insensitive title search)")
        check_eq(list_all(srv, bob, "", 20), [bobs], "bob sees only his session")
        for q in ("limit=0", "limit=101", "limit=x", "archived=maybe"):
            r = api(srv, alice, "GET", "/api/chat/sessions?" + q)
            check_eq(r.status, 400, "GET /api/chat/sessions?%s" % q)

        path = "/api/chat/sessions/" + made[0]
        r = api(srv, alice, "PATCH", path, {"title": "Renamed", "archived": True})
        check_eq(r.status, 200, "PATCH (body %r)" % r.body)
        check_eq((r.json()["title"], r.json()["archived"]), ("Renamed", True), "PATCH result")
        r = api(srv, alice, "PATCH", path, {"archived": "yes"})
        check_eq(r.status, 400, "PATCH archived of the wrong type")
        g = api(srv, alice, "GET", path).json()
        check_eq((g["title"], g["archived"]), ("Renamed", True), "GET after PATCH")
        check(made[0] not in list_all(srv, alice, "", 20), "archived session listed by default")
        check_eq(list_all(srv, alice, "archived=true", 20), [made[0]], "archived=true")
        check_eq(len(list_all(srv, alice, "archived=any", 20)), 7, "archived=any")

        # Another user's conversation answers exactly like a missing one.
        for method, p, body in (("GET", path, None), ("PATCH", path, {"title": "x"}),
                                ("DELETE", path, None), ("GET", path + "/export", None),
                                ("POST", path + "/cancel", None),
                                ("GET", "/api/replay/session/" + made[0], None),
                                ("POST", "/api/chat/message", {"session_id": made[0], "content": "x"})):
            r = api(srv, bob, method, p, body)
            check_eq((r.status, r.json()["error"]["code"]), (404, "not_found"),
                     "bob: %s %s" % (method, p))
        c = harness.CurlSse(srv.base + "/api/chat/stream/" + made[0], headers=bearer(bob))
        check_eq(c.wait_head(), 404, "bob: SSE stream of alice's session")
        c.close()

        r = api(srv, alice, "DELETE", path)
        check_eq((r.status, r.body), (204, b""), "DELETE")
        check_eq(api(srv, alice, "GET", path).status, 404, "GET after DELETE")
        check_eq(api(srv, alice, "DELETE", path).status, 404, "DELETE again")
        check(made[0] not in list_all(srv, alice, "archived=any", 20), "deleted session listed")
    finally:
        srv.stop()


def test_delete_cancels_running_answer(env):
    srv = start(env)
    try:
        tok = user(srv, "alice")
        sid = create(srv, tok)["id"]
        c = sse(srv, tok, "/api/chat/stream/" + sid)
        mid = post(srv, tok, sid, "delete me")
        sse_until(c, lambda e: e["type"] == "token")
        r = api(srv, tok, "DELETE", "/api/chat/sessions/" + sid)
        check_eq(r.status, 204, "DELETE while answering")
        ev = sse_until(c, lambda e: e["type"] == "done")
        check_eq([e["type"] for e in ev[-2:]], ["usage", "done"], "end of the cancelled answer")
        check_eq((ev[-1]["message_id"], ev[-1]["status"]), (mid, "cancelled"), "done")
        c.close()
    finally:
        srv.stop()


def test_export(env):
    srv = start(env)
    try:
        tok = user(srv, "alice")
        sid = create(srv, tok, title="Export me")["id"]
        c = sse(srv, tok, "/api/chat/stream/" + sid)
        mid = post(srv, tok, sid, "hello export")
        c.collect_message(mid)
        c.close()
        r = api(srv, tok, "GET", "/api/chat/sessions/%s/export?format=json" % sid)
        check_eq(r.status, 200, "export json")
        check(r.headers["content-type"].startswith("application/json"), "json content type")
        j = r.json()
        check_eq((j["id"], j["title"]), (sid, "Export me"), "exported session")
        msgs = j["messages"]
        check_eq([(m["role"], m["status"]) for m in msgs],
                 [("user", "complete"), ("assistant", "complete")], "exported messages")
        check_eq(msgs[0]["content"], "hello export", "user content")
        check_eq(msgs[1]["content"], expected("hello export"), "assistant content")
        check_eq(msgs[1]["usage"]["completion_tokens"], 30, "usage")
        check_eq(r.json(), api(srv, tok, "GET", "/api/chat/sessions/" + sid).json(),
                 "export json equals GET")
        r = api(srv, tok, "GET", "/api/chat/sessions/%s/export?format=markdown" % sid)
        check_eq(r.status, 200, "export markdown")
        check_eq(r.headers["content-type"], "text/markdown; charset=utf-8", "markdown type")
        md = r.body.decode("utf-8")
        check(md.startswith("# Export me\n"), "markdown header: %r" % md[:80])
        check(sid in md and "synth-mid" in md, "markdown facts")
        want = "\n## User\n\nhello export\n\n## Assistant\n\n%s\n" % expected("hello export")
        check(want in md, "markdown transcript %r lacks %r" % (md, want))
        r = api(srv, tok, "GET", "/api/chat/sessions/%s/export?format=pdf" % sid)
        check_eq(r.status, 400, "export format=pdf")
    finally:
        srv.stop()


def test_sse_resume_mid_answer(env):
    srv = start(env)
    try:
        tok = user(srv, "alice")
        sid = create(srv, tok)["id"]
        c = sse(srv, tok, "/api/chat/stream/" + sid)
        prompt = "resume me over sse"
        mid = post(srv, tok, sid, prompt)
        first = sse_until(c, lambda e: e["type"] == "token" and e["seq"] >= 5)
        c.close()
        last_id = first[-1]["_id"]
        check_eq(last_id, "%s:%d" % (mid, first[-1]["seq"]), "last token event id")
        c = sse(srv, tok, "/api/chat/stream/" + sid, last_event_id=last_id)
        rest = c.collect_message(mid)
        c.close()
        check(first[-1]["seq"] < 30, "the drop happened mid-answer")
        check_eq(text_of(first) + text_of(rest), expected(prompt), "two parts = the answer")
        check_eq([e["type"] for e in rest[-2:]], ["usage", "done"], "resumed part ends")
        check(all(e["type"] != "status_update" for e in rest), "no status replayed after a seq")

        # After done: from a seq, from usage, from done.
        c = sse(srv, tok, "/api/chat/stream/" + sid, last_event_id="%s:3" % mid)
        ev = c.collect_message(mid)
        c.close()
        check_eq(text_of(ev), "".join(harness.expected_tokens(prompt, 30, env.source)[3:]),
                 "resume after done from seq 3")
        check_eq(ev[0]["seq"] - ev[0]["n"], 3, "first resumed token follows seq 3")
        c = sse(srv, tok, "/api/chat/stream/" + sid, last_event_id="%s:u" % mid)
        ev = c.collect_message(mid)
        check_eq([e["type"] for e in ev], ["done"], "resume from usage")
        mid2 = post(srv, tok, sid, "and then")
        ev = c.collect_message(mid2)
        check_eq(text_of(ev), expected("and then"), "later message after a resume from usage")
        c.close()
        c = sse(srv, tok, "/api/chat/stream/" + sid, last_event_id="%s:d" % mid)
        ev = c.collect_message(mid2)
        check_eq(text_of(ev), expected("and then"), "resume from done: the later message in full")
        c.close()
    finally:
        srv.stop()


def test_ws_resume_mid_answer(env):
    srv = start(env)

    async def body():
        tok = user(srv, "alice")
        sid = create(srv, tok)["id"]
        ws = await ws_connect(srv, tok)
        await ws.send(json.dumps({"type": "subscribe", "session_id": sid}))
        r = await ws_recv(ws)
        check_eq((r["type"], r["request"]), ("response", "subscribe"), "subscribe reply")
        prompt = "resume me over websocket"
        await ws.send(json.dumps({"type": "send", "session_id": sid, "content": prompt}))
        first = await ws_until(ws, lambda m: m["type"] == "token" and m["seq"] >= 5)
        mid = first[-1]["message_id"]
        await ws.close()
        ws = await ws_connect(srv, tok)
        await ws.send(json.dumps({"type": "subscribe", "session_id": sid,
                                  "resume_from": "%s:%d" % (mid, first[-1]["seq"])}))
        rest = await ws_until(ws, lambda m: m["type"] == "done")
        check_eq(rest[0]["type"], "response", "subscribe reply first")
        check(first[-1]["seq"] < 30, "the drop happened mid-answer")
        check_eq(text_of(first) + text_of(rest), expected(prompt), "two parts = the answer")
        check_eq(rest[-1]["status"], "complete", "done status")
        await ws.close()
        # After done, from seq 10.
        ws = await ws_connect(srv, tok)
        await ws.send(json.dumps({"type": "subscribe", "session_id": sid,
                                  "resume_from": "%s:10" % mid}))
        ev = await ws_until(ws, lambda m: m["type"] == "done")
        check_eq(text_of(ev), "".join(harness.expected_tokens(prompt, 30, env.source)[10:]),
                 "WebSocket resume after done from seq 10")
        await ws.close()

    try:
        asyncio.run(body())
    finally:
        srv.stop()


def token_times(c, mid):
    """(seq, arrival time) of each token event of a replay, read until done."""
    out, ev = [], []
    while True:
        e = c.next_event(20)
        check(e is not None, "replay ended early: %r" % [x.get("type") for x in ev])
        if e["type"] == ":comment":
            continue
        ev.append(e)
        if e["type"] == "token":
            out.append((e["seq"], time.monotonic()))
        if e["type"] == "done":
            return out, ev


def test_replay_speed(env):
    srv = start(env)
    try:
        tok = user(srv, "alice")
        sid = create(srv, tok)["id"]
        r = api(srv, tok, "GET", "/api/replay/session/" + sid)
        check_eq(r.status, 404, "replay with nothing recorded")
        c = sse(srv, tok, "/api/chat/stream/" + sid)
        prompt = "replay this answer"
        mid = post(srv, tok, sid, prompt)
        c.collect_message(mid)
        c.close()
        for q in ("speed=0", "speed=101", "speed=fast"):
            r = api(srv, tok, "GET", "/api/replay/session/%s?%s" % (sid, q))
            check_eq(r.status, 400, "replay ?%s" % q)
        spans = {}
        for speed in (1, 4):
            c = sse(srv, tok, "/api/replay/session/%s?speed=%d&message_id=%s" % (sid, speed, mid))
            times, ev = token_times(c, mid)
            c.close()
            harness.check_message_events(ev, sid, mid, prompt, 30, sse=True)
            # Tokens 5 and 30 were produced 25 / 25 s apart: the replay keeps
            # the spacing, divided by speed. An event carries every token up
            # to its seq, and a busy worker may coalesce several, so token k
            # arrived with the first event whose seq is k or more.
            def arrival(k):
                return min((t for seq, t in times if seq >= k), default=None)
            t5, t30 = arrival(5), arrival(30)
            check(t5 is not None and t30 is not None,
                  "replay token events reach seq 30: %r" % sorted(seq for seq, _ in times))
            spans[speed] = t30 - t5
        ratio = spans[1] / max(spans[4], 1e-6)
        check(2.5 <= ratio <= 6.0, "speed 1 vs speed 4 span ratio %.2f (spans %r)" % (ratio, spans))
    finally:
        srv.stop()


def test_ws_replay_pause_resume(env):
    srv = start(env)

    async def body():
        tok = user(srv, "alice")
        sid = create(srv, tok)["id"]
        prompt = "pause the replay"
        mid = post(srv, tok, sid, prompt)
        ws = await ws_connect(srv, tok)
        # Wait for the answer to end (the replay needs an ended answer).
        for _ in range(100):
            g = api(srv, tok, "GET", "/api/chat/sessions/" + sid).json()
            if g["messages"][-1]["status"] == "complete":
                break
            await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "replay", "session_id": sid, "speed": 1}))
        r = await ws_recv(ws)
        check_eq((r["type"], r["request"], r["message_id"]), ("response", "replay", mid), "reply")
        ev = await ws_until(ws, lambda m: m["type"] == "token")
        await ws.send(json.dumps({"type": "pause"}))
        ev += await ws_until(ws, lambda m: m["type"] == "response")
        check(ev[-1]["paused"] is True, "pause reply %r" % ev[-1])
        await ws.send(json.dumps({"type": "get_state"}))
        st = await ws_until(ws, lambda m: m["type"] == "state")
        ev += st[:-1]
        state = st[-1]
        check_eq(state["subscriptions"], [sid], "state subscriptions")
        check_eq((state["replay"]["message_id"], state["replay"]["paused"]), (mid, True), "state")
        sent = state["replay"]["sent"]
        # Paused: nothing arrives while the answer would have run for a while.
        try:
            m = await asyncio.wait_for(ws.recv(), 0.6)
            raise harness.TestFailure("message while paused: %r" % m)
        except asyncio.TimeoutError:
            pass
        await ws.send(json.dumps({"type": "resume"}))
        ev += await ws_until(ws, lambda m: m["type"] == "done")
        stream = [m for m in ev if m["type"] != "response"]
        harness.check_message_events(stream, sid, mid, prompt, 30)
        check(0 < sent < 30, "paused mid-replay (sent %d)" % sent)
        await ws.send(json.dumps({"type": "resume"}))
        e = await ws_recv(ws)
        check_eq((e["type"], e["error"]["code"]), ("error", "no_replay"), "resume without a replay")
        await ws.close()

    try:
        asyncio.run(body())
    finally:
        srv.stop()


TESTS = [test_agents_and_models, test_list_patch_delete_ownership,
         test_delete_cancels_running_answer, test_export, test_sse_resume_mid_answer,
         test_ws_resume_mid_answer, test_replay_speed, test_ws_replay_pause_resume]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
