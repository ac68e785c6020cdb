#!/usr/bin/python3
"""WebSocket /ws/chat with python3-websockets (10.x asyncio API) and, where
that client cannot misbehave on purpose, a raw socket client."""

import asyncio
import base64
import hashlib
import itertools
import json
import os
import socket
import struct
import sys

import websockets

import harness
from harness import check, check_eq, check_message_events

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
STREAM_TYPES = ("token", "status_update", "usage", "done")
_request_ids = itertools.count(1)


def ws_url(srv):
    return srv.ws_url()


async def connect(srv):
    ws = await asyncio.wait_for(websockets.connect(ws_url(srv), ping_interval=None,
                                                   max_size=None, open_timeout=10,
                                                   extra_headers=srv.auth_headers(),
                                                   ssl=srv.ws_ssl()), 10)
    hello = await recv_json(ws)
    check_eq(hello.get("type"), "connected", "first message after open")
    check(isinstance(hello.get("worker"), int), "connected.worker %r is not an int" % hello)
    return ws, hello


async def recv_json(ws, timeout=15):
    raw = await asyncio.wait_for(ws.recv(), timeout)
    check(isinstance(raw, str), "server sent a binary message: %r" % raw[:100])
    try:
        return json.loads(raw)
    except ValueError as e:
        raise harness.TestFailure("server message is not JSON (%s): %r" % (e, raw[:300]))


async def request(ws, msg, pending):
    """Sends msg with an id and returns the reply carrying that id.

    Stream events arriving meanwhile are appended to `pending`.
    """
    rid = "r%d" % next(_request_ids)
    msg = dict(msg, id=rid)
    await ws.send(json.dumps(msg))
    while True:
        m = await recv_json(ws)
        if m.get("type") in STREAM_TYPES:
            pending.append(m)
            continue
        check_eq(m.get("id"), rid, "reply to %r: id echo (got %r)" % (msg, m))
        return m


async def collect(ws, mid, pending, timeout=30):
    """Stream events of message mid up to its done."""
    out = [e for e in pending if e.get("message_id") == mid]
    other = [e for e in pending if e.get("message_id") != mid]
    check(not other, "events of another message: %r" % other[:2])
    pending.clear()
    while not out or out[-1].get("type") != "done":
        m = await recv_json(ws, timeout)
        check(m.get("type") in STREAM_TYPES, "unexpected message during stream: %r" % m)
        check_eq(m.get("message_id"), mid, "stream event message_id")
        out.append(m)
    return out


async def subscribe_and_send(ws, sid, prompt, pending):
    r = await request(ws, {"type": "subscribe", "session_id": sid}, pending)
    check_eq((r.get("type"), r.get("request"), r.get("session_id")), ("response", "subscribe", sid),
             "subscribe reply")
    r = await request(ws, {"type": "send", "session_id": sid, "content": prompt}, pending)
    check_eq((r.get("type"), r.get("request"), r.get("session_id")), ("response", "send", sid),
             "send reply")
    mid = r.get("message_id")
    check(isinstance(mid, str) and mid.startswith("m_"), "send reply message_id %r" % mid)
    return mid


def arun(coro, timeout=60):
    asyncio.run(asyncio.wait_for(coro, timeout))


# ---- raw client --------------------------------------------------------

class RawWs:
    """Just enough RFC 6455 to send what a correct client never sends."""

    def __init__(self, srv):
        port = srv.port
        self.sock = srv.connect(timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join("%s: %s\r\n" % kv for kv in srv.auth_headers().items())
        self.sock.sendall(("GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n%s"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (port, key, extra)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            check(chunk, "raw ws: connection closed during handshake: %r" % head)
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        check(lines[0].startswith("HTTP/1.1 101"), "raw ws: handshake status line %r" % lines[0])
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        check_eq(hdrs.get("sec-websocket-accept"), accept, "raw ws: Sec-WebSocket-Accept")

    def send_frame(self, opcode, payload, fin=True, mask=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            hdr = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            hdr += key
        self.sock.sendall(hdr + payload)

    def _need(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise harness.TestFailure("raw ws: nothing from the server for 10 s (have %d of %d "
                                          "bytes of a frame)" % (len(self.buf), n))
            if not chunk:
                raise EOFError("connection closed with %d of %d bytes" % (len(self.buf), n))
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._need(2)
        check(not b1 & 0x80, "raw ws: server frame is masked")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self._need(n)

    def recv_json(self):
        fin, op, data = self.recv_frame()
        check_eq((fin, op), (True, OP_TEXT), "raw ws: frame kind (payload %r)" % data[:100])
        return json.loads(data.decode("utf-8"))

    def expect_close(self, code, what):
        """Reads frames until a close; checks its code and that TCP closes after."""
        while True:
            try:
                fin, op, data = self.recv_frame()
            except EOFError as e:
                raise harness.TestFailure("%s: expected close %d, connection ended: %s" % (what, code, e))
            if op == OP_CLOSE:
                got = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                check_eq(got, code, what + ": close code")
                break
            check(op in (OP_TEXT, OP_PONG), "%s: unexpected frame op %d %r" % (what, op, data[:80]))
        self.sock.settimeout(5)
        try:
            self.send_frame(OP_CLOSE, struct.pack("!H", code))
            rest = self.sock.recv(100)
        except ConnectionError:
            rest = b""
        except socket.timeout:
            rest = "nothing for 5 s"
        check_eq(rest, b"", what + ": bytes after the close handshake (TCP should close)")

    def close(self):
        self.sock.close()


# ---- tests -------------------------------------------------------------

def test_stream_complete(env):
    srv = env.server()
    sid = srv.create_session("synth")

    async def body():
        ws, _ = await connect(srv)
        pending = []
        prompt = "websocket \"quotes\" and \u65e5\u672c"
        mid = await subscribe_and_send(ws, sid, prompt, pending)
        ev = await collect(ws, mid, pending)
        check_message_events(ev, sid, mid, prompt, 24, model="synth")
        await ws.close()
    arun(body())


def test_cancel(env):
    srv = env.server()
    sid = srv.create_session("synth-slow")

    async def body():
        ws, _ = await connect(srv)
        pending = []
        mid = await subscribe_and_send(ws, sid, "cancel over ws", pending)
        ev = list(pending)
        pending.clear()
        while not any(e.get("type") == "token" and e["seq"] >= 3 for e in ev):
            m = await recv_json(ws)
            check(m.get("type") != "done", "done before cancel: %r" % m)
            ev.append(m)
        r = await request(ws, {"type": "cancel", "session_id": sid}, pending)
        check_eq((r.get("type"), r.get("request"), r.get("message_id")), ("response", "cancel", mid),
                 "cancel reply")
        ev += await collect(ws, mid, pending)
        toks = check_message_events(ev, sid, mid, "cancel over ws", 40, status="cancelled",
                                    model="synth-slow")
        check(toks[-1]["seq"] < 40, "cancel: all 40 tokens were sent")
        try:
            m = await recv_json(ws, timeout=0.5)
            raise harness.TestFailure("message after done cancelled: %r" % m)
        except asyncio.TimeoutError:
            pass
        await ws.close()
    arun(body())


def test_ping_message(env):
    srv = env.server()

    async def body():
        ws, _ = await connect(srv)
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        m = await recv_json(ws)
        check_eq(m, {"type": "pong", "id": "p1"}, "reply to {type:ping,id:p1}")
        await ws.send(json.dumps({"type": "ping"}))
        check_eq(await recv_json(ws), {"type": "pong"}, "reply to {type:ping}")
        await ws.close()
    arun(body())


def test_protocol_ping_during_stream(env):
    srv = env.server()
    sid = srv.create_session("synth-slow")

    async def body():
        ws, _ = await connect(srv)
        pending = []
        mid = await subscribe_and_send(ws, sid, "ping me", pending)
        ev = list(pending)
        pending.clear()
        while not any(e.get("type") == "token" for e in ev):
            ev.append(await recv_json(ws))
        waiter = await ws.ping(b"mid-stream")
        await asyncio.wait_for(waiter, 3)
        before = max(e["seq"] for e in ev if e.get("type") == "token")
        while True:
            m = await recv_json(ws)
            ev.append(m)
            if m.get("type") == "token":
                break
        check(m["seq"] > before, "stream did not go on after the pong")
        await request(ws, {"type": "cancel", "session_id": sid}, pending)
        await collect(ws, mid, pending)
        await ws.close()
    arun(body())


def test_fragmented_message(env):
    srv = env.server()

    async def body():
        ws, _ = await connect(srv)
        await ws.send(['{"type":', '"ping",', '"id":"frag"}'])
        check_eq(await recv_json(ws), {"type": "pong", "id": "frag"}, "reply to a 3-fragment ping")

        async def parts():
            for p in ('{"ty', 'pe":"pi', 'ng"}'):
                yield p
        await ws.send(parts())
        check_eq(await recv_json(ws), {"type": "pong"}, "reply to an async-iterated fragmented ping")
        await ws.close()
    arun(body())


def test_ping_inside_fragmented_message(env):
    srv = env.server()
    c = RawWs(srv)
    try:
        check_eq(c.recv_json().get("type"), "connected", "raw ws: first message")
        c.send_frame(OP_TEXT, b'{"type":', fin=False)
        c.send_frame(OP_PING, b"between")
        fin, op, data = c.recv_frame()
        check_eq((op, data), (OP_PONG, b"between"), "pong to a ping between fragments")
        c.send_frame(OP_CONT, b'"ping"}', fin=True)
        check_eq(c.recv_json(), {"type": "pong"}, "reply to the fragmented ping message")
        c.send_frame(OP_CLOSE, struct.pack("!H", 1000))
        fin, op, data = c.recv_frame()
        check_eq((op, data[:2]), (OP_CLOSE, struct.pack("!H", 1000)), "raw close reply")
    finally:
        c.close()


def test_close_handshake(env):
    srv = env.server()

    async def body():
        ws, _ = await connect(srv)
        await asyncio.wait_for(ws.close(code=1000, reason="bye"), 5)
        check_eq(ws.close_code, 1000, "server's close code in reply to client close 1000")
    arun(body())


async def expect_server_close(ws, code, what):
    try:
        while True:
            m = await asyncio.wait_for(ws.recv(), 5)
            check(isinstance(m, str), "%s: binary message before close" % what)
    except websockets.exceptions.ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        raise harness.TestFailure("%s: server did not close within 5 s" % what)
    check_eq(ws.close_code, code, what + ": close code")


def test_binary_message(env):
    srv = env.server()

    async def body():
        ws, _ = await connect(srv)
        await ws.send(b"\x00\x01binary")
        await expect_server_close(ws, 1003, "binary message")
    arun(body())


def test_oversize_message(env):
    srv = env.server(ws_max_message=4096)

    async def body():
        ws, _ = await connect(srv)
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 4096}))
        await expect_server_close(ws, 1009, "text message of 4121 bytes with ws_max_message=4096")
        ws, _ = await connect(srv)
        await ws.send(["x" * 3000, "y" * 3000])
        await expect_server_close(ws, 1009, "two fragments adding up to 6000 bytes (limit 4096)")
        ws, _ = await connect(srv)
        msg = json.dumps({"type": "ping", "pad": ""})
        msg = msg[:-2] + "z" * (4096 - len(msg)) + msg[-2:]
        check_eq(len(msg), 4096, "test message size")
        await ws.send(msg)
        check_eq(await recv_json(ws), {"type": "pong"}, "a message of exactly ws_max_message bytes")
        await ws.close()
    arun(body())


def test_invalid_json(env):
    srv = env.server()

    async def body():
        ws, _ = await connect(srv)
        await ws.send("{not json")
        m = await recv_json(ws)
        check_eq(m.get("type"), "error", "reply to invalid JSON")
        check(isinstance(m.get("error", {}).get("code"), str), "error message without code: %r" % m)
        await ws.send(json.dumps({"type": "no_such_type"}))
        m = await recv_json(ws)
        check_eq(m.get("type"), "error", "reply to an unknown type")
        await ws.send(json.dumps({"type": "ping"}))
        check_eq(await recv_json(ws), {"type": "pong"}, "socket still usable after errors")
        await ws.close()
        check_eq(ws.close_code, 1000, "close code after error messages")
    arun(body())


def test_invalid_utf8(env):
    srv = env.server()
    c = RawWs(srv)
    try:
        check_eq(c.recv_json().get("type"), "connected", "raw ws: first message")
        c.send_frame(OP_TEXT, b'{"type":"ping","x":"\xc3\x28"}')
        c.expect_close(1007, "text frame with invalid UTF-8")
    finally:
        c.close()


def test_unmasked_frame(env):
    srv = env.server()
    c = RawWs(srv)
    try:
        check_eq(c.recv_json().get("type"), "connected", "raw ws: first message")
        c.send_frame(OP_TEXT, b'{"type":"ping"}', mask=False)
        c.expect_close(1002, "unmasked client text frame")
    finally:
        c.close()


def test_reserved_bits_and_bad_opcode(env):
    srv = env.server()
    for what, frame in (("RSV1 set", bytes([0x80 | 0x40 | OP_TEXT])),
                        ("opcode 3", bytes([0x80 | 0x3])),
                        ("continuation without start", bytes([0x80 | OP_CONT]))):
        c = RawWs(srv)
        try:
            check_eq(c.recv_json().get("type"), "connected", "raw ws: first message")
            key = os.urandom(4)
            payload = b"{}"
            c.sock.sendall(frame + bytes([0x80 | len(payload)]) + key
                           + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))
            c.expect_close(1002, what)
        finally:
            c.close()


TESTS = [test_stream_complete, test_cancel, test_ping_message, test_protocol_ping_during_stream,
         test_fragmented_message, test_ping_inside_fragmented_message, test_close_handshake,
         test_binary_message, test_oversize_message, test_invalid_json, test_invalid_utf8,
         test_unmasked_frame, test_reserved_bits_and_bad_opcode]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
