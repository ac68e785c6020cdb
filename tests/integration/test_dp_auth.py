#!/usr/bin/python3
"""Dataplane side of issue 3: a /ws/chat upgrade is answered only once control
has decided (401 passed through, 503 while control is away), a logout closes
the WebSockets of that login with 1008 (KICK), an open WebSocket survives a
control crash and restart (the dataplane asks the new control to authorise it
again with the upgrade's headers) and new messages on it work, and /metrics
shows the live WebSocket gauge."""

import asyncio
import json
import re
import signal
import sys

import websockets

import harness
from harness import check, check_eq, check_message_events



def ws_url(srv):
    return "ws://127.0.0.1:%d/ws/chat" % srv.port


async def ws_connect(srv, hdrs):
    ws = await asyncio.wait_for(websockets.connect(
        ws_url(srv), extra_headers=hdrs, ping_interval=None, open_timeout=10), 10)
    check_eq((await recv_json(ws)).get("type"), "connected", "first message")
    return ws


async def upgrade_status(srv, hdrs):
    """The HTTP status of a refused upgrade (fails on a 101)."""
    try:
        ws = await asyncio.wait_for(websockets.connect(
            ws_url(srv), extra_headers=hdrs, ping_interval=None, open_timeout=10), 10)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    raise harness.TestFailure("upgrade with headers %r answered 101" % sorted(hdrs))


async def recv_json(ws, timeout=15):
    raw = await asyncio.wait_for(ws.recv(), timeout)
    check(isinstance(raw, str), "server sent a binary message: %r" % raw[:100])
    return json.loads(raw)


async def reply(ws, msg, rid):
    """Sends msg with id rid; returns the reply with that id (stream events of
    earlier messages may not arrive meanwhile)."""
    await ws.send(json.dumps(dict(msg, id=rid)))
    while True:
        m = await recv_json(ws)
        if m.get("id") == rid:
            return m
        check(m.get("type") in ("status_update", "token", "usage", "done"),
              "unexpected message %r" % m)


async def one_answer(ws, sid, prompt, tag):
    r = await reply(ws, {"type": "subscribe", "session_id": sid}, tag + "-sub")
    check_eq((r.get("type"), r.get("request")), ("response", "subscribe"), tag + ": subscribe reply")
    r = await reply(ws, {"type": "send", "session_id": sid, "content": prompt}, tag + "-send")
    check_eq((r.get("type"), r.get("request")), ("response", "send"), tag + ": send reply (%r)" % r)
    mid = r["message_id"]
    events = []
    while not events or events[-1].get("type") != "done":
        m = await recv_json(ws, 30)
        if m.get("message_id") == mid:
            events.append(m)
    check_message_events(events, sid, mid, prompt, 24, model="synth")


def metric(srv, name):
    r = srv.request("GET", "/metrics")
    check_eq(r.status, 200, "GET /metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.body.decode(), re.M)
    check(m, "/metrics has no %s" % name)
    return int(m.group(1))


def test_refused_upgrade_and_logout_kick(env):
    srv = env.server()
    srv.add_user("dp_kick", "dp-kick-password", "user")
    tok = srv.login("dp_kick", "dp-kick-password")

    async def body():
        check_eq(await upgrade_status(srv, {}), 401, "upgrade without credentials: status")
        check_eq(await upgrade_status(srv, {"Authorization": "Bearer " + "A" * 43}), 401,
                 "upgrade with an unknown token: status")
        ws = await ws_connect(srv, srv.auth_headers(tok))
        try:
            r = srv.request("POST", "/api/auth/logout", {}, headers=srv.auth_headers(tok))
            check_eq(r.status, 200, "POST /api/auth/logout status (body %r)" % r.body)
            try:
                m = await asyncio.wait_for(ws.recv(), 10)
                raise harness.TestFailure("after logout: message %r instead of a close" % m)
            except websockets.exceptions.ConnectionClosed as e:
                check_eq(e.code, 1008, "close code after logout")
        finally:
            await ws.close()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_ws_survives_control_restart(env):
    srv = env.fresh()
    try:
        srv.start()

        async def body():
            ws = await ws_connect(srv, srv.auth_headers())
            try:
                check_eq(metric(srv, "sluice_ws_active"), 1, "sluice_ws_active with one WebSocket")
                await one_answer(ws, srv.create_session("synth"), "before restart", "a")
                srv.kill("sluice-control", signal.SIGKILL)
                srv.wait_ready(timeout=5, want=503)
                # An upgrade while control is away cannot be authorised.
                check_eq(await upgrade_status(srv, srv.auth_headers()), 503,
                         "upgrade without control: status")
                srv.start_control()
                srv.wait_ready(timeout=10, want=200)
                # The same socket: still open, still this user's.
                await one_answer(ws, srv.create_session("synth"), "after restart", "b")
                check_eq(metric(srv, "sluice_ws_active"), 1, "sluice_ws_active after restart")
            finally:
                await ws.close()

        asyncio.run(asyncio.wait_for(body(), 90))
    finally:
        srv.stop()


TESTS = [test_refused_upgrade_and_logout_kick, test_ws_survives_control_restart]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
