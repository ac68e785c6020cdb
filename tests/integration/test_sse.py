#!/usr/bin/python3
"""SSE streaming with curl -N as the client (docs/api.md, "Stream events")."""

import sys
import time

import harness
from harness import CurlSse, check, check_eq, check_message_events

PROMPT = "Tell me about \"sluices\", rivers & caf\u00e9s\tplease"


def open_stream(srv, sid, headers=None):
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid),
                headers=dict(srv.auth_headers(), **(headers or {})))
    status = c.wait_head()
    check_eq(status, 200, "GET /api/chat/stream/%s status" % sid)
    return c


def test_stream_complete(env):
    srv = env.server()
    sid = srv.create_session("synth")
    c = open_stream(srv, sid)
    try:
        ct = c.headers.get("content-type", "")
        check(ct.startswith("text/event-stream"), "stream Content-Type: got %r" % ct)
        check_eq(c.headers.get("cache-control"), "no-cache", "stream Cache-Control")
        check_eq(c.headers.get("x-accel-buffering"), "no", "stream X-Accel-Buffering")
        check("x-sluice-worker" in c.headers, "stream response lacks X-Sluice-Worker: %r" % c.headers)
        mid = srv.post_message(sid, PROMPT)
        ev = c.collect_message(mid)
        check_message_events(ev, sid, mid, PROMPT, 24, model="synth", sse=True)
        # A second message on the same stream is delivered too.
        mid2 = srv.post_message(sid, "second question")
        ev2 = c.collect_message(mid2)
        check_message_events(ev2, sid, mid2, "second question", 24, model="synth", sse=True)
        check(not c.errors, "SSE parse errors: %r" % c.errors)
    finally:
        c.close()
    r = srv.request("GET", "/api/chat/sessions/" + sid)
    check_eq(r.status, 200, "GET /api/chat/sessions/%s status" % sid)
    msgs = r.json().get("messages")
    check(isinstance(msgs, list), "GET session: messages missing: %r" % r.body[:300])
    contents = [(m.get("role"), m.get("content")) for m in msgs]
    check(("user", PROMPT) in contents, "GET session: user message missing: %r" % contents)
    check((any(m.get("content") == harness.expected_answer(PROMPT, 24) for m in msgs)),
          "GET session: the stored answer is not the streamed text: %r" % contents)


def test_two_subscribers(env):
    srv = env.server()
    sid = srv.create_session("synth")
    a = open_stream(srv, sid)
    b = open_stream(srv, sid)
    try:
        mid = srv.post_message(sid, "two readers")
        for who, c in (("first", a), ("second", b)):
            ev = c.collect_message(mid)
            try:
                check_message_events(ev, sid, mid, "two readers", 24, model="synth", sse=True)
            except harness.TestFailure as e:
                raise harness.TestFailure("%s subscriber: %s" % (who, e))
    finally:
        a.close()
        b.close()


def test_busy_while_running(env):
    srv = env.server()
    sid = srv.create_session("synth-slow")
    c = open_stream(srv, sid)
    try:
        mid = srv.post_message(sid, "slow one")
        r = srv.request("POST", "/api/chat/message", {"session_id": sid, "content": "again"})
        check_eq(r.status, 409, "second POST /api/chat/message while answering: status")
        check_eq(r.json().get("error", {}).get("code"), "busy", "409 error code")
        r = srv.request("POST", "/api/chat/sessions/%s/cancel" % sid)
        check_eq(r.status, 200, "cancel status")
        c.collect_message(mid)
    finally:
        c.close()


def test_cancel(env):
    srv = env.server()
    sid = srv.create_session("synth-slow")
    c = open_stream(srv, sid)
    try:
        prompt = "cancel me after three"
        mid = srv.post_message(sid, prompt)
        ev = []
        seen = 0
        deadline = time.monotonic() + 20
        while seen < 3:
            check(time.monotonic() < deadline, "no 3rd token within 20 s: %r" % ev)
            e = c.next_event(deadline - time.monotonic())
            check(e is not None, "stream ended before the 3rd token: %r" % ev)
            if e["type"] == ":comment":
                continue
            ev.append(e)
            if e["type"] == "token":
                seen = e["seq"]
            check(e["type"] != "done", "done before cancel: %r" % e)
        r = srv.request("POST", "/api/chat/sessions/%s/cancel" % sid)
        check_eq(r.status, 200, "POST cancel status (body %r)" % r.body)
        check_eq(r.json(), {"cancelled": True, "message_id": mid}, "POST cancel body")
        ev += c.collect_message(mid)
        tokens = check_message_events(ev, sid, mid, prompt, 40, status="cancelled",
                                      model="synth-slow", sse=True)
        sent = tokens[-1]["seq"]
        check(3 <= sent < 40, "cancelled after the 3rd of 40 tokens but %d were sent" % sent)
        r = srv.request("POST", "/api/chat/sessions/%s/cancel" % sid)
        check_eq(r.status, 409, "second cancel status")
        check_eq(r.json().get("error", {}).get("code"), "not_streaming", "second cancel code")
        # Nothing may follow done for 0.5 s (5 tok/s: a leaked token would show).
        e = c.next_event(0.5)
        check(e is None or e["type"] == ":comment", "event after done cancelled: %r" % e)
    finally:
        c.close()


def test_keepalive(env):
    srv = env.server(batching="off", sse_keepalive_s=1)
    sid = srv.create_session("synth")
    c = open_stream(srv, sid)
    try:
        # Other comments (an opening ":ok", say) may come first; only
        # keep-alives repeat.
        for n in ("first", "second"):
            while True:
                e = c.next_event(4)
                check(e is not None, "no %s :keep-alive comment within 4 s (sse_keepalive_s=1)" % n)
                check_eq(e["type"], ":comment", "event on an idle stream")
                if e["text"] == "keep-alive":
                    break
    finally:
        c.close()


def test_batching_off(env):
    srv = env.server(batching="off", sse_keepalive_s=1)
    sid = srv.create_session("synth-long")
    c = open_stream(srv, sid)
    try:
        mid = srv.post_message(sid, "unbatched")
        ev = c.collect_message(mid, timeout=60)
        tokens = check_message_events(ev, sid, mid, "unbatched", 2000, sse=True)
        multi = [e for e in tokens if e["n"] != 1]
        check(not multi, "batching off: %d token events with n != 1, first %r"
              % (len(multi), multi[:1]))
    finally:
        c.close()


def test_adaptive_long(env):
    srv = env.server()
    sid = srv.create_session("synth-long")
    c = open_stream(srv, sid)
    try:
        mid = srv.post_message(sid, "a long answer please")
        ev = c.collect_message(mid, timeout=60)
        tokens = check_message_events(ev, sid, mid, "a long answer please", 2000, sse=True)
        print("     adaptive: 2000 tokens in %d token events" % len(tokens))
    finally:
        c.close()


def test_resume_last_event_id(env):
    srv = env.server()
    sid = srv.create_session("synth")
    c = open_stream(srv, sid)
    try:
        mid = srv.post_message(sid, "resume me")
        ev = c.collect_message(mid)
        check_message_events(ev, sid, mid, "resume me", 24, sse=True)
    finally:
        c.close()
    r = open_stream(srv, sid, headers={"Last-Event-ID": "%s:10" % mid})
    try:
        ev = r.collect_message(mid)
        types = [e["type"] for e in ev]
        check_eq(types[-2:], ["usage", "done"], "resume from :10: last events")
        toks = [e for e in ev if e["type"] == "token"]
        check(toks, "resume from :10: no tokens: %r" % types)
        check_eq(toks[0]["seq"] - toks[0]["n"] + 1, 11, "resume from :10: first token seq")
        check_eq(toks[-1]["seq"], 24, "resume from :10: last token seq")
        text = "".join(e["text"] for e in toks)
        check_eq(text, "".join(harness.expected_tokens("resume me", 24, env.source)[10:]),
                 "resume from :10: text")
    finally:
        r.close()


def test_unknown_session_stream(env):
    srv = env.server()
    r = srv.request("GET", "/api/chat/stream/s_0000000000000000")
    check_eq(r.status, 404, "GET /api/chat/stream/<unknown> status")
    check_eq(r.json().get("error", {}).get("code"), "not_found", "unknown stream error code")


TESTS = [test_stream_complete, test_two_subscribers, test_busy_while_running, test_cancel,
         test_keepalive, test_batching_off, test_adaptive_long, test_resume_last_event_id,
         test_unknown_session_stream]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
