#!/usr/bin/python3
"""permessage-deflate (RFC 7692) on /ws/chat and /ws/echo (issue 12).

python3-websockets negotiates the extension by default: a chat streams its
exact answer through it. Raw handshakes check the answer to each kind of
offer (Autobahn|Testsuite group 13: every server and client window size,
the context-takeover parameters, an offer sluice cannot honour followed by
one it can); /ws/echo sends messages of 16 B .. 1 MiB back through the
extension, text and binary, fragmented or not (group 12); a compression
bomb is refused with 1009; Chromium negotiates the extension and streams
tokens from a page.
"""

import asyncio
import base64
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import zlib

import websockets

import harness
from harness import check, check_eq

SERVER = {"ws_max_message": 2 * 1024 * 1024,
          "dataplane": {"ws_echo": "true", "max_pending_bytes": 33554432}}
PMD = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def server(env):
    return env.server(**SERVER)


class Raw:
    """A WebSocket client written out here: handshake with a given offer,
    frames compressed by zlib, server frames read back and inflated."""

    def __init__(self, srv, path, offer):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        auth = "".join("%s: %s\r\n" % kv for kv in srv.auth_headers().items())
        ext = "Sec-WebSocket-Extensions: %s\r\n" % offer if offer is not None else ""
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n%s%s"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key, auth, ext)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            check(chunk, "handshake: closed (%r)" % self.buf)
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        check(lines[0].startswith("HTTP/1.1 101"), "handshake answer %r" % lines[0])
        self.headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.ext = self.headers.get("sec-websocket-extensions")

    def send(self, payload, op=1, compress=True, fragments=1, rsv1=None):
        if compress:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
            payload = payload[:-4]
        step = max(1, -(-len(payload) // fragments))
        parts = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        out = b""
        for i, part in enumerate(parts):
            b0 = (0x80 if i == len(parts) - 1 else 0) | (op if i == 0 else 0)
            if i == 0 and (compress if rsv1 is None else rsv1):
                b0 |= 0x40
            n = len(part)
            h = bytes([b0]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                              if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
            mask = os.urandom(4)
            out += h + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(part))
        self.sock.sendall(out)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk

    def recv(self):
        """(opcode, payload inflated, was it compressed) of the next message."""
        data, op, rsv1 = b"", None, False
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n, h = b1 & 0x7f, 2
            if n == 126:
                self._need(4)
                n, h = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10)
                n, h = struct.unpack(">Q", self.buf[2:10])[0], 10
            self._need(h + n)
            payload, self.buf = self.buf[h:h + n], self.buf[h + n:]
            if (b0 & 0x0f) >= 8:
                return b0 & 0x0f, payload, False
            if op is None:
                op, rsv1 = b0 & 0x0f, bool(b0 & 0x40)
            data += payload
            if b0 & 0x80:
                break
        if rsv1:
            d = zlib.decompressobj(-15)
            data = d.decompress(data + b"\x00\x00\xff\xff")
        return op, data, rsv1

    def close(self):
        self.sock.close()


def test_negotiation_answers(env):
    """Group 13: what each offer gets back."""
    srv = server(env)
    cases = [
        (None, None),
        ("permessage-deflate", PMD),
        ("permessage-deflate; client_max_window_bits", PMD),
        ("permessage-deflate; client_no_context_takeover; server_no_context_takeover", PMD),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate", PMD),
        ("foo, permessage-deflate; bogus", None),
    ]
    for bits in range(9, 16):
        cases.append(("permessage-deflate; server_max_window_bits=%d; client_max_window_bits=%d"
                      % (bits, bits), PMD + "; server_max_window_bits=%d" % bits))
    for offer, want in cases:
        for path in ("/ws/chat", "/ws/echo"):
            r = Raw(srv, path, offer)
            check_eq(r.ext, want, "answer to %r on %s" % (offer, path))
            r.close()


def test_echo_sizes(env):
    """Group 12: messages of 16 B .. 1 MiB, text and binary, whole and in
    fragments, through the extension both ways; every window size."""
    srv = server(env)
    words = b"sluice streams tokens to very many clients "
    for bits in (9, 12, 15):
        r = Raw(srv, "/ws/echo", "permessage-deflate; server_max_window_bits=%d" % bits)
        size = 16
        while size <= 1 << 20:
            text = (words * (size // len(words) + 1))[:size]
            for op, frags in ((1, 1), (2, 4)):
                r.send(text, op=op, fragments=frags)
                got_op, got, compressed = r.recv()
                check_eq((got_op, len(got)), (op, size), "echo of %d bytes (window %d)" % (size, bits))
                check(got == text, "echo of %d bytes differs" % size)
                if size >= 1024:
                    check(compressed, "an echo of %d bytes came back uncompressed" % size)
            size *= 4
        # A client that does not compress is fine too.
        r.send(b"plain text", compress=False)
        check_eq(r.recv()[1], b"plain text", "an uncompressed message on a deflate socket")
        r.close()


def test_bomb_closes_1009(env):
    srv = server(env)
    # 64 MiB of zeros: about 64 KB compressed, far over ws_max_message once inflated.
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = b"".join(zeros.compress(bytes(1 << 20)) for _ in range(64)) + zeros.flush(zlib.Z_SYNC_FLUSH)
    r = Raw(srv, "/ws/echo", "permessage-deflate")
    r.send(bomb[:-4], op=2, compress=False, rsv1=True)
    op, data, _ = r.recv()
    check_eq((op, struct.unpack(">H", data[:2])[0]), (8, 1009), "close after a compression bomb")
    r.close()


def test_chat_streams_through_deflate(env):
    """python3-websockets (which offers permessage-deflate by default) gets
    the extension and the exact answer through it (token events go in
    issue 9's shared plain frames, the other messages compressed)."""
    srv = server(env)
    sid = srv.create_session("synth-long")
    prompt = "compress the stream please"

    async def run():
        async with websockets.connect("ws://127.0.0.1:%d/ws/chat" % srv.port,
                                      extra_headers=srv.auth_headers(), max_size=None) as ws:
            check_eq(ws.response_headers.get("Sec-WebSocket-Extensions"), PMD, "negotiated extension")
            check(any(type(e).__name__ == "PerMessageDeflate" for e in ws.extensions),
                  "websockets did not enable permessage-deflate: %r" % ws.extensions)
            json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "subscribe", "session_id": sid}))
            json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "send", "session_id": sid, "content": prompt}))
            text = ""
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if m["type"] == "token":
                    text += m["text"]
                if m["type"] == "done":
                    check_eq(m["status"], "complete", "done status")
                    break
            check_eq(text, harness.expected_answer(prompt, 2000), "streamed answer through deflate")
    asyncio.run(run())


PAGE = """<!doctype html><html><body><pre id="out">waiting</pre><script>
const out = document.getElementById('out');
const ws = new WebSocket('ws://127.0.0.1:%(port)d/ws/chat', ['sluice.v1', 'sluice.auth.%(token)s']);
let text = '', sent = false;
ws.onmessage = ev => {
  const m = JSON.parse(ev.data);
  if (m.type === 'connected') ws.send(JSON.stringify({type: 'subscribe', session_id: '%(sid)s'}));
  else if (m.type === 'response' && !sent) { sent = true;
    ws.send(JSON.stringify({type: 'send', session_id: '%(sid)s', content: '%(prompt)s'})); }
  else if (m.type === 'token') text += m.text;
  else if (m.type === 'done') report('DONE ' + ws.extensions + ' ' + JSON.stringify(text));
};
ws.onerror = () => report('ERROR');
function report(s) { out.textContent = s; fetch('/result', {method: 'POST', body: s}); }
</script></body></html>"""


def test_chromium(env):
    chromium = shutil.which("chromium")
    if not chromium:
        raise harness.TestFailure("chromium not installed (firmware-config/setup-deps.sh)")
    tmp = tempfile.mkdtemp(prefix="sluice-chromium-")
    # The page's own origin must be allowed to open WebSockets.
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    page_port = httpd.server_address[1]
    srv = env.fresh(auth={"allowed_origins": "http://127.0.0.1:%d" % page_port})
    try:
        srv.start()
        sid = srv.create_session("synth")
        prompt = "hello from chromium"
        with open(os.path.join(tmp, "page.html"), "w") as f:
            f.write(PAGE % {"port": srv.port, "token": srv.token, "sid": sid, "prompt": prompt})
        result = {}
        got = threading.Event()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=tmp, **kw)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                result["text"] = self.rfile.read(n).decode()
                self.send_response(204)
                self.end_headers()
                got.set()

            def log_message(self, *a):
                pass
        httpd.RequestHandlerClass = Handler
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        # The page reports what it streamed with a POST; the browser runs
        # until then (bounded) and is stopped by its pid.
        p = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                              "--user-data-dir=" + os.path.join(tmp, "profile"),
                              "--remote-debugging-port=0",
                              "http://127.0.0.1:%d/page.html" % page_port],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            got.wait(60)
        finally:
            p.kill()
            err = p.communicate(timeout=30)[1]
        dom = result.get("text", "")
        check("DONE permessage-deflate" in dom, "Chromium's page: %r (stderr %r)"
              % (dom[-400:], err[-400:]))
        want = json.dumps(harness.expected_answer(prompt, 24))
        check(want.replace("<", "&lt;").replace(">", "&gt;").replace("&", "&amp;") in dom or want in dom
              or json.dumps(harness.expected_answer(prompt, 24), ensure_ascii=False) in dom,
              "Chromium streamed another text: %r" % dom[-600:])
    finally:
        httpd.shutdown()
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


TESTS = [test_negotiation_answers, test_echo_sizes, test_bomb_closes_1009,
         test_chat_streams_through_deflate, test_chromium]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
