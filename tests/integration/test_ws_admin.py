#!/usr/bin/python3
"""The operator dashboard's socket, /ws/admin (docs/api.md), with
python3-websockets: who may open it (admin role only: 401 / 403 before any
101, 1008 once the login or the role goes), topics chosen and changed at any
time, an event of every kind pushed as it happens (conversation created and
deleted, answer started and ended, login, logout, kicked, alerts raised and
cleared), metrics snapshots at the chosen period, heartbeats, the kill
command, the HTTP fallback under /api/admin/, and a client that stops
reading: bounded by [dashboard] max_pending, then dropped with a reason."""

import asyncio
import http.client
import json
import socket
import sys
import threading
import time

import websockets

import harness
from harness import check, check_eq

ADMIN = ("olga", "olga-admin-pass")
USER = ("ursula", "ursula-user-pass")
DASH = {"heartbeat_ms": 300, "alert_connections": 4, "max_pending": 16384}


def url(srv):
    return "ws://127.0.0.1:%d/ws/admin" % srv.port


def server(env):
    srv = env.server(dashboard=DASH)
    if not getattr(srv, "dash_users", False):
        srv.add_user(*ADMIN, role="admin")
        srv.add_user(*USER, role="user")
        srv.dash_users = True
    return srv


async def recv_json(ws, timeout=10):
    raw = await asyncio.wait_for(ws.recv(), timeout)
    check(isinstance(raw, str), "binary message %r" % raw[:80])
    return json.loads(raw)


async def recv_type(ws, types, timeout=10, skip=("heartbeat", "metrics")):
    """The next message of one of `types`, skipping periodic ones."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        check(left > 0, "no %s message within %.0f s" % ("/".join(types), timeout))
        m = await recv_json(ws, left)
        if m.get("type") in types:
            return m
        check(m.get("type") in skip, "unexpected message while waiting for %s: %r" % (types, m))


async def admin_socket(srv, token, topics=None, interval_s=None, **kw):
    ws = await asyncio.wait_for(websockets.connect(
        url(srv), extra_headers={"Authorization": "Bearer " + token}, ping_interval=None,
        open_timeout=10, **kw), 10)
    check_eq((await recv_json(ws)).get("type"), "connected", "first message (the worker's)")
    hello = await recv_json(ws)
    check_eq(hello.get("type"), "hello", "second message")
    check_eq(hello.get("heartbeat_ms"), DASH["heartbeat_ms"], "hello heartbeat_ms")
    check_eq(hello.get("interval_bounds_s"), [1, 60], "hello interval bounds")
    check_eq(sorted(hello.get("topics")), ["alerts", "heartbeat", "metrics", "session_events"],
             "hello topics")
    if topics is not None:
        msg = {"type": "subscribe", "topics": topics, "id": "sub"}
        if interval_s is not None:
            msg["interval_s"] = interval_s
        await ws.send(json.dumps(msg))
        ack = await recv_type(ws, ("subscribed",))
        check_eq((sorted(ack["topics"]), ack.get("id")), (sorted(topics), "sub"), "subscribed ack")
    return ws


async def upgrade_status(srv, headers):
    try:
        ws = await asyncio.wait_for(websockets.connect(
            url(srv), extra_headers=headers, ping_interval=None, open_timeout=10), 10)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    raise harness.TestFailure("upgrade with %r answered 101" % sorted(headers))


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---- tests -----------------------------------------------------------------


def test_role_checks(env):
    """401 without credentials, 403 for a user and for a foreign Origin, all
    before a 101; the HTTP fallback is admin-only too."""
    srv = server(env)
    user_tok = srv.login(*USER)
    admin_tok = srv.login(*ADMIN)

    async def body():
        check_eq(await upgrade_status(srv, {}), 401, "no credentials")
        check_eq(await upgrade_status(srv, {"Authorization": "Bearer " + user_tok}), 403,
                 "a user's token")
        check_eq(await upgrade_status(srv, {"Authorization": "Bearer " + admin_tok,
                                            "Origin": "http://evil.example"}), 403, "foreign Origin")
        ws = await admin_socket(srv, admin_tok)
        await ws.close()

    run(body())
    for path in ("/api/admin/metrics", "/api/admin/events"):
        r = srv.request("GET", path, headers={"Authorization": "Bearer " + user_tok})
        check_eq((r.status, r.json()["error"]["code"]), (403, "forbidden"), "user GET " + path)
        r = srv.request("GET", path, headers={"Authorization": "Bearer " + admin_tok})
        check_eq(r.status, 200, "admin GET " + path)
        check_eq(r.headers.get("cache-control"), "no-store", path + " Cache-Control")
    r = srv.request("GET", "/api/admin/metrics", auth=False)
    check_eq(r.status, 401, "anonymous GET /api/admin/metrics")


def check_snapshot(m, what):
    check_eq(m.get("type"), "metrics", what + " type")
    t = m.get("totals", {})
    for k in ("connections", "streams", "sse", "ws", "answers_running", "tokens_per_s",
              "frames_per_s", "frames_per_token", "bytes_per_s", "pending_bytes"):
        check(k in t, "%s: totals lack %s: %r" % (what, k, t))
    for k in ("p50", "p90", "p99"):
        check(k in m.get("delay_us", {}), "%s: delay_us lacks %s" % (what, k))
    check(isinstance(m.get("workers"), list) and m["workers"], what + ": workers")
    check(0 <= m.get("ring_fill_max", -1) <= 1, what + ": ring_fill_max %r" % m.get("ring_fill_max"))
    check(isinstance(m.get("store", {}).get("conversations"), int), what + ": store.conversations")
    check(isinstance(m.get("streams"), list), what + ": streams")
    check(isinstance(m.get("alerts"), list), what + ": alerts")
    names = [b.get("name") for b in m.get("backends", [])]
    check("synth" in names, what + ": backends %r" % names)


def test_topics_and_session_events(env):
    """Only the chosen topics arrive; topics and the period change at any
    time; every session event kind is pushed with the count it changed."""
    srv = server(env)
    admin_tok = srv.login(*ADMIN)
    user_tok = srv.login(*USER)
    uh = {"Authorization": "Bearer " + user_tok}

    async def body():
        ws = await admin_socket(srv, admin_tok, topics=["session_events"])
        try:
            # created
            r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth"}, headers=uh)
            check_eq(r.status, 201, "create")
            sid = r.json()["id"]
            e = await recv_type(ws, ("session_event",), skip=())
            check_eq((e["kind"], e["session_id"], e["user"]), ("created", sid, USER[0]), "created event")
            check_eq(e["change"]["what"], "conversations", "created change")
            check_eq(e["change"]["to"], e["change"]["from"] + 1, "created count")
            check(isinstance(e["seq"], int) and e["seq"] > 0, "event seq %r" % e.get("seq"))
            # answer started and ended
            r = srv.request("POST", "/api/chat/message", {"session_id": sid, "content": "hi"}, headers=uh)
            check_eq(r.status, 202, "post")
            mid = r.json()["message_id"]
            e = await recv_type(ws, ("session_event",), skip=())
            check_eq((e["kind"], e["message_id"]), ("answer_started", mid), "answer_started")
            check_eq(e["change"], {"what": "answers_running", "from": e["change"]["to"] - 1,
                                   "to": e["change"]["to"]}, "answer_started change")
            e = await recv_type(ws, ("session_event",), skip=())
            check_eq((e["kind"], e["message_id"], e["status"]), ("answer_ended", mid, "complete"),
                     "answer_ended")
            # Topics change: metrics every second, session events off.
            await ws.send(json.dumps({"type": "subscribe", "topics": ["metrics"], "interval_s": 1}))
            check_eq((await recv_type(ws, ("subscribed",), skip=("session_event",)))["interval_s"], 1,
                     "interval")
            m1 = await recv_type(ws, ("metrics",), skip=())
            check_snapshot(m1, "first snapshot")
            m2 = await recv_type(ws, ("metrics",), skip=())
            gap = m2["ts"] - m1["ts"]
            check(0.7 <= gap <= 1.8, "snapshots %.2f s apart with interval_s 1" % gap)
            srv.request("DELETE", "/api/chat/sessions/" + sid, headers=uh)
            m3 = await recv_type(ws, ("metrics",), skip=())
            check_eq(m3["type"], "metrics", "no session event without the topic")
            # Back to session events (add), metrics off (unsubscribe).
            await ws.send(json.dumps({"type": "subscribe", "topics": ["session_events"]}))
            await recv_type(ws, ("subscribed",), skip=("metrics",))
            await ws.send(json.dumps({"type": "unsubscribe", "topics": ["metrics"]}))
            ack = await recv_type(ws, ("subscribed",), skip=("metrics",))
            check_eq(ack["topics"], ["session_events"], "after unsubscribe")
            # deleted, login, logout
            r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth"}, headers=uh)
            sid2 = r.json()["id"]
            await recv_type(ws, ("session_event",), skip=("metrics",))
            srv.request("DELETE", "/api/chat/sessions/" + sid2, headers=uh)
            e = await recv_type(ws, ("session_event",), skip=("metrics",))
            check_eq((e["kind"], e["session_id"], e["change"]["to"]),
                     ("deleted", sid2, e["change"]["from"] - 1), "deleted")
            tok = srv.login(*USER)
            e = await recv_type(ws, ("session_event",), skip=("metrics",))
            check_eq((e["kind"], e["user"], e["role"]), ("login", USER[0], "user"), "login")
            srv.request("POST", "/api/auth/logout", {}, headers={"Authorization": "Bearer " + tok})
            e = await recv_type(ws, ("session_event",), skip=("metrics",))
            check_eq((e["kind"], e["user"]), ("logout", USER[0]), "logout")
            # kicked, by the kill command on this socket
            r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth-slow"}, headers=uh)
            sid3 = r.json()["id"]
            await recv_type(ws, ("session_event",), skip=("metrics",))
            srv.request("POST", "/api/chat/message", {"session_id": sid3, "content": "slow"}, headers=uh)
            await recv_type(ws, ("session_event",), skip=("metrics",))
            await ws.send(json.dumps({"type": "kill", "session_id": sid3, "id": 9}))
            got = {}
            while len(got) < 3:
                m = await recv_type(ws, ("session_event", "response"), skip=("metrics",))
                got[m.get("kind") or m["type"]] = m
            check_eq((got["response"]["request"], got["response"]["id"]), ("kill", 9), "kill response")
            check(got["response"]["cancelled_message_id"], "kill cancelled the answer")
            check_eq((got["answer_ended"]["status"]), "cancelled", "killed answer")
            check_eq((got["kicked"]["session_id"], got["kicked"]["reason"]),
                     (sid3, "killed by operator"), "kicked")
            # Mistakes get an error, not a close.
            for bad, code in (({"type": "subscribe", "topics": ["weather"]}, "invalid_request"),
                              ({"type": "subscribe", "interval_s": 0.5}, "invalid_request"),
                              ({"type": "subscribe", "interval_s": 61}, "invalid_request"),
                              ({"type": "launch"}, "unknown_type"),
                              ({"type": "kill", "session_id": "s_0000000000000000"}, "not_found")):
                await ws.send(json.dumps(bad))
                e = await recv_type(ws, ("error",), skip=("metrics", "session_event"))
                check_eq(e["error"]["code"], code, "error for %r" % bad)
        finally:
            await ws.close()

    run(body())


def test_heartbeat(env):
    """heartbeat every heartbeat_ms (300 ms here; 30 s by default)."""
    srv = server(env)
    tok = srv.login(*ADMIN)

    async def body():
        ws = await admin_socket(srv, tok, topics=["heartbeat"])
        try:
            beats = [await recv_type(ws, ("heartbeat",), skip=()) for _ in range(4)]
            ts = [b["ts"] for b in beats]
            gaps = [b - a for a, b in zip(ts, ts[1:])]
            check(all(0.15 <= g <= 0.8 for g in gaps), "heartbeat gaps %r for 300 ms" % gaps)
        finally:
            await ws.close()

    run(body())


def test_alerts_and_fallback(env):
    """connections (alert_connections = 4) is raised when a fifth connection
    opens and cleared when they close; the snapshot lists active alerts and
    GET /api/admin/events replays what was pushed."""
    srv = server(env)
    tok = srv.login(*ADMIN)

    async def body():
        ws = await admin_socket(srv, tok, topics=["alerts"])
        socks = []
        try:
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                socks.append(s)
            a = await recv_type(ws, ("alert",), timeout=10, skip=())
            check_eq((a["alert"], a["state"], a["limit"]), ("connections", "raised", 4), "raised")
            check(a["value"] >= 4, "alert value %r" % a["value"])
            r = srv.request("GET", "/api/admin/metrics", headers={"Authorization": "Bearer " + tok})
            names = [x["alert"] for x in r.json()["alerts"]]
            check("connections" in names, "active alerts in the snapshot: %r" % names)
            for s in socks:
                s.close()
            socks.clear()
            a2 = await recv_type(ws, ("alert",), timeout=10, skip=())
            check_eq((a2["alert"], a2["state"]), ("connections", "cleared"), "cleared")
            r = srv.request("GET", "/api/admin/events?after=%d" % (a["seq"] - 1),
                            headers={"Authorization": "Bearer " + tok})
            evs = r.json()["events"]
            check_eq([(e["type"], e.get("alert"), e.get("state")) for e in evs[:2]],
                     [("alert", "connections", "raised"), ("alert", "connections", "cleared")],
                     "fallback events")
            check_eq(r.json()["seq"], evs[-1]["seq"], "fallback seq")
            r = srv.request("GET", "/api/admin/events?after=x", headers={"Authorization": "Bearer " + tok})
            check_eq(r.status, 400, "bad after")
        finally:
            for s in socks:
                s.close()
            await ws.close()

    run(body())


def test_login_and_role_lost(env):
    """A logout of the login behind the socket closes it with 1008; so does
    the deletion of the admin."""
    srv = server(env)
    srv.add_user("temp-admin", "temp-admin-pass", role="admin")
    tok = srv.login("temp-admin", "temp-admin-pass")
    tok2 = srv.login(*ADMIN)

    async def body():
        ws = await admin_socket(srv, tok, topics=["heartbeat"])
        p = srv.sluicectl("users", "del", "temp-admin")
        check_eq(p.returncode, 0, "users del (stderr %r)" % p.stderr)
        try:
            while True:
                await recv_json(ws, 10)
        except websockets.exceptions.ConnectionClosed as e:
            check_eq(e.code, 1008, "close code after the admin was deleted")
        ws = await admin_socket(srv, tok2, topics=["heartbeat"])
        srv.request("POST", "/api/auth/logout", {}, headers={"Authorization": "Bearer " + tok2})
        try:
            while True:
                await recv_json(ws, 10)
        except websockets.exceptions.ConnectionClosed as e:
            check_eq(e.code, 1008, "close code after logout")

    run(body())


def flood_sessions(srv, headers, stop, threads=6, most=4000):
    """Creates conversations from several keep-alive connections at once
    (the store commits them in groups) until stop() or `most` are made."""
    made = [0]
    lock = threading.Lock()

    def one():
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            while not stop():
                with lock:
                    if made[0] >= most:
                        return
                    made[0] += 1
                conn.request("POST", "/api/chat/sessions", json.dumps({"model_id": "synth"}),
                             dict(headers, **{"Content-Type": "application/json"}))
                r = conn.getresponse()
                r.read()
                check_eq(r.status, 201, "create")
        finally:
            conn.close()

    ts = [threading.Thread(target=one, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return made[0]


def slow_closes(srv):
    text = srv.request("GET", "/metrics", auth=False).body.decode()
    for line in text.splitlines():
        if line.startswith("sluice_slow_consumer_closes_total "):
            return int(line.split()[1])
    return 0


def test_slow_admin_client(env):
    """A client that stops reading is bounded: once more than max_pending
    (16 KiB here) is unsent its worker drops it with 1008 "slow consumer";
    the other operators see the slow_consumers alert. The client's small
    receive buffer and MSS keep the kernel from absorbing megabytes first."""
    srv = server(env)
    tok = srv.login(*ADMIN)
    uh = {"Authorization": "Bearer " + srv.login(*USER)}
    before = slow_closes(srv)

    async def body():
        watcher = await admin_socket(srv, tok, topics=["alerts"])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.connect(("127.0.0.1", srv.port))
        sock.setblocking(False)
        slow = await admin_socket(srv, tok, topics=["session_events"], sock=sock, max_queue=1,
                                  read_limit=2048)
        try:
            # Stop reading: the library's queue fills, then TCP pushes back.
            done = [False]
            asked = [0]

            def stop():
                asked[0] += 1
                if not done[0] and asked[0] % 100 == 0:
                    done[0] = slow_closes(srv) > before
                return done[0]

            made = await asyncio.get_running_loop().run_in_executor(
                None, flood_sessions, srv, uh, stop)
            check(slow_closes(srv) > before, "no slow-consumer close after %d events" % made)
            while True:
                a = await recv_type(watcher, ("alert",), timeout=10, skip=())
                if a["alert"] != "connections":  # the flood's connections
                    break
            check_eq((a["alert"], a["state"]), ("slow_consumers", "raised"), "watcher's alert")
            # Reading again: what was queued, then the close with its reason.
            n = 0
            try:
                while True:
                    await recv_json(slow, 10)
                    n += 1
            except websockets.exceptions.ConnectionClosed as e:
                check_eq((e.code, e.reason), (1008, "slow consumer"), "close of the slow client")
            check(n < made, "the slow client got all %d events" % made)
        finally:
            await slow.close()
            await watcher.close()

    run(body(), timeout=120)


TESTS = [test_role_checks, test_topics_and_session_events, test_heartbeat, test_alerts_and_fallback,
         test_login_and_role_lost, test_slow_admin_client]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
