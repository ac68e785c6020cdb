#!/usr/bin/python3
"""Control-plane restart (issue 3 item 5): kill -9 sluice-control while an
answer streams to an SSE client and a WebSocket client; both connections stay
open and get done "interrupted"; control restarts, rebuilds from LMDB, the
dataplane re-announces the subscriptions, and a new message streams in full
on the same two connections."""

import asyncio
import json
import sys
import time

import harness
from harness import check, check_eq
from test_conv import api, create, post, sse, sse_until, start, text_of, user, ws_connect, ws_until

LONG = 30  # tokens of a synth-mid answer


def test_kill9_mid_answer_same_connections(env):
    srv = start(env)

    async def body():
        tok = user(srv, "alice")
        sid = create(srv, tok)["id"]
        c = sse(srv, tok, "/api/chat/stream/" + sid)
        ws = await ws_connect(srv, tok)
        await ws.send(json.dumps({"type": "subscribe", "session_id": sid}))
        await ws_until(ws, lambda m: m["type"] == "response")

        mid = post(srv, tok, sid, "first answer, interrupted")
        sse_until(c, lambda e: e["type"] == "token" and e["seq"] >= 3)
        ws_ev = await ws_until(ws, lambda m: m["type"] == "token" and m["seq"] >= 3)
        srv.kill("sluice-control")

        ev = sse_until(c, lambda e: e["type"] == "done")
        check_eq((ev[-1]["message_id"], ev[-1]["status"]), (mid, "interrupted"), "SSE done")
        ws_ev = await ws_until(ws, lambda m: m["type"] == "done", timeout=20)
        check_eq((ws_ev[-1]["message_id"], ws_ev[-1]["status"]), (mid, "interrupted"), "WS done")
        check_eq(srv.procs["sluice-dataplane"].poll(), None, "dataplane still running")

        srv.start_control()
        srv.wait_ready()
        # The login and the conversation come back from the store; the
        # interrupted answer is recorded as such.
        deadline = time.monotonic() + 10
        while True:
            g = api(srv, tok, "GET", "/api/chat/sessions/" + sid)
            check_eq(g.status, 200, "GET the session after the restart (body %r)" % g.body)
            st = g.json()["messages"][-1]["status"]
            if st == "interrupted" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        check_eq(st, "interrupted", "stored status of the answer cut by the crash")

        prompt = "second answer after the restart"
        mid2 = post(srv, tok, sid, prompt)
        ev = c.collect_message(mid2)
        harness.check_message_events(ev, sid, mid2, prompt, LONG, sse=True)
        wev = await ws_until(ws, lambda m: m["type"] == "done" and m["message_id"] == mid2)
        wev = [m for m in wev if m.get("message_id") == mid2]
        harness.check_message_events(wev, sid, mid2, prompt, LONG)
        check_eq(text_of(wev), harness.expected_answer(prompt, LONG), "WebSocket text")

        # A message sent over the same WebSocket after the restart.
        prompt = "third, sent over the old websocket"
        await ws.send(json.dumps({"type": "send", "session_id": sid, "content": prompt}))
        r = await ws_until(ws, lambda m: m["type"] in ("response", "error"))
        check_eq((r[-1]["type"], r[-1].get("request")), ("response", "send"), "WS send reply %r" % r[-1])
        mid3 = r[-1]["message_id"]
        ev = c.collect_message(mid3)
        harness.check_message_events(ev, sid, mid3, prompt, LONG, sse=True)
        wev = await ws_until(ws, lambda m: m["type"] == "done" and m["message_id"] == mid3)
        wev = [m for m in r + wev if m.get("message_id") == mid3 and m["type"] != "response"]
        harness.check_message_events(wev, sid, mid3, prompt, LONG)
        c.close()
        await ws.close()

    try:
        asyncio.run(body())
    finally:
        srv.stop()


def test_sse_resume_across_restart(env):
    srv = start(env)
    try:
        tok = user(srv, "alice")
        sid = create(srv, tok)["id"]
        c = sse(srv, tok, "/api/chat/stream/" + sid)
        prompt = "complete before the crash"
        mid = post(srv, tok, sid, prompt)
        c.collect_message(mid)
        c.close()
        # Give the batched token commit its bound before the crash.
        time.sleep(0.5)
        srv.kill("sluice-control")
        # Until the dataplane has seen control go, a stream opened now would
        # be ended "interrupted" when it notices.
        srv.wait_ready(want=503)
        srv.start_control()
        srv.wait_ready()
        c = sse(srv, tok, "/api/chat/stream/" + sid, last_event_id="%s:7" % mid)
        ev = c.collect_message(mid)
        c.close()
        check_eq(text_of(ev), "".join(harness.expected_tokens(prompt, LONG, env.source)[7:]),
                 "resume from seq 7 served from the store after a restart")
        check_eq(ev[-1]["status"], "complete", "done status from the store")
        c = sse(srv, tok, "/api/replay/session/%s?speed=100" % sid)
        ev = c.collect_message(mid)
        c.close()
        harness.check_message_events(ev, sid, mid, prompt, LONG, sse=True)
    finally:
        srv.stop()


TESTS = [test_kill9_mid_answer_same_connections, test_sse_resume_across_restart]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
