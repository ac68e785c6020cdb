#!/usr/bin/python3
"""Malformed, oversized and edge-case HTTP/1.1 requests over raw sockets,
each checked against docs/api.md's status and error code, while a curl SSE
stream on the same server keeps flowing."""

import json
import socket
import sys
import time

import harness
from harness import CurlSse, check, check_eq

HOST = b"Host: 127.0.0.1\r\n"
SERVER = {"header_timeout_s": 1}
# Closing statuses (docs/api.md): framing errors end the connection.
CLOSING = {400, 411, 413, 414, 431, 501, 505, 408}
# ... except the application 400s of well-framed requests, which keep it.
APP_400_CODES = {"invalid_json", "invalid_request", "unknown_model"}

_state = {}


class RawConn:
    def __init__(self, srv, timeout=5):
        self.sock = srv.connect(timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise harness.TestFailure("no (complete) response within %.0f s; got %r"
                                      % (self.sock.gettimeout(), self.buf[:300]))
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self):
        """Reads one response: (status, headers dict lower-case, body bytes)."""
        try:
            while b"\r\n\r\n" not in self.buf:
                self._fill()
        except EOFError:
            raise harness.TestFailure("connection closed before a complete response head; got %r"
                                      % self.buf[:300])
        except ConnectionResetError:
            raise harness.TestFailure("connection reset before a complete response head; got %r "
                                      "(a server closing with unread input sends RST and loses its "
                                      "response: it should shut down writes and drain first)"
                                      % self.buf[:300])
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        check(len(parts) >= 2 and parts[0] == "HTTP/1.1" and parts[1].isdigit(),
              "bad status line %r" % lines[0])
        hdrs = {}
        for l in lines[1:]:
            k, sep, v = l.partition(":")
            check(sep, "bad response header line %r" % l)
            hdrs[k.strip().lower()] = v.strip()
        check("content-length" in hdrs, "response without Content-Length: %r" % lines)
        n = int(hdrs["content-length"])
        while len(self.buf) < n:
            try:
                self._fill()
            except EOFError:
                raise harness.TestFailure("body cut at %d of %d bytes" % (len(self.buf), n))
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(parts[1]), hdrs, body

    def closed_by_peer(self, wait=2.0):
        """True when the server closed the connection (EOF or reset) within wait."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            return False
        return True

    def close(self):
        self.sock.close()


def error_code(body):
    try:
        obj = json.loads(body.decode("utf-8"))
    except ValueError:
        raise harness.TestFailure("error body is not JSON: %r" % body[:200])
    err = obj.get("error") if isinstance(obj, dict) else None
    check(isinstance(err, dict) and isinstance(err.get("message"), str),
          "error body is not {\"error\":{\"code\",\"message\"}}: %r" % body[:200])
    return err.get("code")


def with_auth(srv, raw):
    """Adds the harness user's Authorization header after the request line of
    a request for /api/ (docs/api.md "Authentication"); others stay as built."""
    line, sep, rest = raw.partition(b"\r\n")
    parts = line.split(b" ")
    if not sep or len(parts) < 2 or not parts[1].startswith(b"/api/"):
        return raw
    hdr = "".join("%s: %s\r\n" % kv for kv in srv.auth_headers().items()).encode()
    return line + sep + hdr + rest


def expect(env, raw, status, code, what, closes=None, allow=None, auth=True):
    """Sends raw bytes on a new connection and checks the single response.

    Framing errors must close the connection; other errors must keep it open,
    which is checked by a following GET /healthz on the same connection.
    """
    srv = env.server(**SERVER)
    if auth:
        raw = with_auth(srv, raw)
    c = RawConn(srv)
    try:
        req = raw[:120] + (b"..." if len(raw) > 120 else b"")
        try:
            c.send(raw)
            st, hdrs, body = c.response()
        except harness.TestFailure as e:
            raise harness.TestFailure("%s: request %r: %s" % (what, req, e))
        except OSError as e:
            raise harness.TestFailure("%s: request %r: socket error %r" % (what, req, e))
        check_eq(st, status, "%s: request %r: status (body %r)" % (what, req, body[:200]))
        if code is not None:
            check_eq(error_code(body), code, "%s: request %r: error code" % (what, req))
        if status == 401:
            check_eq(hdrs.get("www-authenticate"), "Bearer", "%s: WWW-Authenticate on a 401" % what)
        check("x-sluice-worker" in hdrs, "%s: no X-Sluice-Worker header: %r" % (what, hdrs))
        if allow is not None:
            got = {m.strip() for m in hdrs.get("allow", "").split(",") if m.strip()}
            method = raw.split(b" ", 1)[0].decode()
            check(set(allow) <= got and method not in got,
                  "%s: Allow header %r should list %s and not %s" % (what, hdrs.get("allow"),
                                                                      allow, method))
        if closes is None:
            closes = status in CLOSING and code not in APP_400_CODES
        if closes:
            if status in CLOSING:
                check_eq(hdrs.get("connection", "").lower(), "close", what + ": Connection header")
            check(c.closed_by_peer(), "%s: connection still open after a %d" % (what, status))
        else:
            c.send(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
            st2, _, _ = c.response()
            check_eq(st2, 200, "%s: GET /healthz on the same connection after the %d" % (what, status))
    finally:
        c.close()


def post(path, body, extra=b""):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\n" + HOST + extra
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def get(path, extra=b"", version=b"HTTP/1.1"):
    return b"GET " + path.encode() + b" " + version + b"\r\n" + HOST + extra + b"\r\n"


def session(env):
    srv = env.server(**SERVER)
    if "sid" not in _state:
        _state["sid"] = srv.create_session("synth")
    return _state["sid"]


# (name, request bytes or fn(env) -> bytes, status, error code, extra checks)
CASES = [
    ("garbage_request_line", b"GARBAGE\r\n\r\n", 400, "bad_request"),
    ("method_only", b"GET\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("http09_no_version", b"GET /healthz\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("extra_request_line_field", b"GET /healthz HTTP/1.1 x\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("double_space_request_line", b"GET  /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("bad_version_token", b"GET /healthz HTTP/1.x\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("bad_protocol_name", b"GET /healthz FOO/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("nul_in_request_line", b"GET /heal\x00thz HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    ("version_2_0", b"GET /healthz HTTP/2.0\r\n" + HOST + b"\r\n", 505, "http_version_not_supported"),
    ("version_1_2", b"GET /healthz HTTP/1.2\r\n" + HOST + b"\r\n", 505, "http_version_not_supported"),
    ("request_line_8193", b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
     414, "uri_too_long"),
    ("header_section_9k", b"GET /healthz HTTP/1.1\r\n" + HOST
     + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(9)) + b"\r\n",
     431, "headers_too_large"),
    ("single_header_9k", b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Big: " + b"v" * 9000 + b"\r\n\r\n",
     431, "headers_too_large"),
    ("header_lines_101", b"GET /healthz HTTP/1.1\r\n" + HOST
     + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n", 431, "headers_too_large"),
    ("body_1mib_plus_1", b"POST /api/chat/message HTTP/1.1\r\n" + HOST
     + b"Content-Type: application/json\r\nContent-Length: 1048577\r\n\r\n", 413, "payload_too_large"),
    # Exactly the documented limit: the framing and the channel take it (one
    # record), so control answers (an unknown session), not 413 or 503.
    ("body_1mib_exactly", post("/api/chat/message", b'{"session_id":"s_0123456789abcdef","content":"'
                               + b"a" * (1048576 - 48) + b'"}'), 404, "not_found"),
    # Chunked request bodies are read (RFC 9112 7.1) once control admitted
    # them; framing errors inside the chunks close like any other.
    ("chunked_body", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"b;ext=1\r\n{\"model_id\"\r\n9\r\n:\"synth\"}\r\n0\r\nX-Trailer: t\r\n\r\n", 201, None),
    ("chunked_app_error", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 400, "invalid_request"),
    ("chunked_unauthenticated", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 401, "unauthenticated",
     {"auth": False, "closes": True}),
    # Larger than the transport's stash, so never in hand with its head.
    ("content_length_unauthenticated", post("/api/chat/sessions", b"{" + b" " * 200000 + b"}"),
     401, "unauthenticated", {"auth": False, "closes": True}),
    ("chunked_space_after_size", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\n\r\n2 \r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
    ("chunked_bare_lf", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n", 400, "bad_request"),
    ("chunked_over_1mib", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\n\r\n100001\r\n", 413, "payload_too_large"),
    ("chunked_not_last", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("chunked_twice", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, "bad_request"),
    ("content_length_list", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Content-Length: 20, 20\r\n\r\n{\"model_id\":\"synth\"}", 201, None),
    ("login_wrong_password", post("/api/auth/login", {"username": "nobody", "password": "x"}),
     401, "invalid_credentials"),
    ("unknown_method", b"BREW /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 501, "not_implemented",
     {"closes": False}),
    ("unknown_method_api", b"PROPFIND /api/chat/sessions HTTP/1.1\r\n" + HOST + b"\r\n", 501,
     "not_implemented", {"closes": False}),
    ("gzip_te_with_cl", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}", 400, "bad_request"),
    ("gzip_te_only", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"),
    ("cl_and_te", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("content_length_letters", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Content-Length: abc\r\n\r\n", 400, "bad_request"),
    ("content_length_negative", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Content-Length: -1\r\n\r\n", 400, "bad_request"),
    ("content_length_conflicting", b"POST /api/chat/sessions HTTP/1.1\r\n" + HOST
     + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "bad_request"),
    ("bare_lf_everywhere", b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n", 400, "bad_request"),
    ("bare_lf_in_headers", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\nX-A: b\r\n\r\n",
     400, "bad_request"),
    ("obs_fold", b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A: one\r\n  two\r\n\r\n", 400, "bad_request"),
    ("space_before_colon", b"GET /healthz HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n", 400, "bad_request"),
    ("missing_host_http11", b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"),
    ("nul_in_header_value", b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n",
     400, "bad_request"),
    ("header_without_colon", b"GET /healthz HTTP/1.1\r\n" + HOST + b"NoColonHere\r\n\r\n",
     400, "bad_request"),
    ("empty_header_name", b"GET /healthz HTTP/1.1\r\n" + HOST + b": value\r\n\r\n", 400, "bad_request"),
    ("bad_char_in_header_name", b"GET /healthz HTTP/1.1\r\n" + HOST + b"X(A): v\r\n\r\n",
     400, "bad_request"),
    ("unknown_path", get("/no/such/path"), 404, "not_found"),
    ("unknown_api_path", get("/api/nothing"), 404, "not_found"),
    ("delete_healthz", b"DELETE /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 405, "method_not_allowed",
     {"allow": ["GET"]}),
    ("get_chat_message", get("/api/chat/message"), 405, "method_not_allowed", {"allow": ["POST"]}),
    ("post_models", post("/api/models", {}), 405, "method_not_allowed", {"allow": ["GET"]}),
    ("invalid_json", post("/api/chat/sessions", b"{bad json"), 400, "invalid_json"),
    ("json_not_object", post("/api/chat/sessions", b"[1,2]"), 400, "invalid_request"),
    ("model_id_missing", post("/api/chat/sessions", {}), 400, "invalid_request"),
    ("model_id_wrong_type", post("/api/chat/sessions", {"model_id": 5}), 400, "invalid_request"),
    ("unknown_model", post("/api/chat/sessions", {"model_id": "no-such-model"}), 400, "unknown_model"),
    ("message_unknown_session",
     post("/api/chat/message", {"session_id": "s_0123456789abcdef", "content": "hi"}), 404, "not_found"),
    ("message_empty_content",
     lambda env: post("/api/chat/message", {"session_id": session(env), "content": ""}),
     400, "invalid_request"),
    ("message_content_missing",
     lambda env: post("/api/chat/message", {"session_id": session(env)}), 400, "invalid_request"),
    ("get_unknown_session", get("/api/chat/sessions/s_0123456789abcdef"), 404, "not_found"),
    ("cancel_unknown_session", post("/api/chat/sessions/s_0123456789abcdef/cancel", b""),
     404, "not_found"),
    ("cancel_idle_session",
     lambda env: post("/api/chat/sessions/%s/cancel" % session(env), b""), 409, "not_streaming"),
    ("http10_without_host", get("/healthz", version=b"HTTP/1.0").replace(HOST, b""), 200, None,
     {"closes": True}),
]


def make_case(name, raw, status, code, extra=None):
    extra = extra or {}

    def t(env):
        data = raw(env) if callable(raw) else raw
        expect(env, data, status, code, name, closes=extra.get("closes"), allow=extra.get("allow"),
               auth=extra.get("auth", True))
    t.__name__ = "test_" + name
    return t


def test_start_background_stream(env):
    srv = env.server(**SERVER)
    sid = srv.create_session("synth-slow")
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
    check_eq(c.wait_head(), 200, "background SSE stream status")
    _state["bg"] = (c, sid, srv.post_message(sid, "keep flowing while errors fly"))


def test_keepalive_two_requests(env):
    srv = env.server(**SERVER)
    c = RawConn(srv)
    try:
        for i in range(3):
            c.send(get("/healthz"))
            st, hdrs, body = c.response()
            check_eq(st, 200, "keep-alive request %d status" % (i + 1))
            check_eq(json.loads(body), {"status": "ok"}, "GET /healthz body")
        c.send(get("/healthz", extra=b"Connection: close\r\n"))
        st, hdrs, _ = c.response()
        check_eq(st, 200, "Connection: close request status")
        check(c.closed_by_peer(), "Connection: close not honoured")
    finally:
        c.close()
    c = RawConn(srv)
    try:
        c.send(get("/healthz", version=b"HTTP/1.0", extra=b"Connection: keep-alive\r\n"))
        check_eq(c.response()[0], 200, "HTTP/1.0 keep-alive status")
        c.send(get("/healthz", version=b"HTTP/1.0"))
        check_eq(c.response()[0], 200, "second HTTP/1.0 request on a keep-alive connection")
        check(c.closed_by_peer(), "HTTP/1.0 without keep-alive: connection not closed")
    finally:
        c.close()


def test_pipelining(env):
    srv = env.server(**SERVER)
    c = RawConn(srv)
    try:
        c.send(get("/healthz") + get("/api/models") + get("/no/such/thing"))
        got = []
        for _ in range(3):
            st, hdrs, body = c.response()
            got.append(st)
            if st == 200 and b"models" in body:
                models = [m.get("id") for m in json.loads(body)["models"]]
                check(set(harness.DEFAULT_MODELS) <= set(models), "GET /api/models: %r" % models)
        check_eq(got, [200, 200, 404], "statuses of 3 pipelined requests (healthz, models, unknown)")
        c.send(with_auth(srv, post("/api/chat/sessions", {"model_id": "synth"})) + get("/healthz"))
        st1, _, b1 = c.response()
        st2, _, b2 = c.response()
        check_eq((st1, st2), (201, 200), "pipelined POST session + GET healthz")
        check(b"\"id\"" in b1 and b"status" in b2, "pipelined bodies out of order: %r / %r" % (b1, b2))
    finally:
        c.close()


def test_header_timeout_408(env):
    srv = env.server(**SERVER)
    c = RawConn(srv, timeout=6)
    try:
        t0 = time.monotonic()
        c.send(b"GET /healthz HTTP/1.1\r\n" + HOST)
        st, hdrs, body = c.response()
        took = time.monotonic() - t0
        check_eq(st, 408, "incomplete head with header_timeout_s=1: status")
        check_eq(error_code(body), "request_timeout", "408 error code")
        check(0.5 <= took <= 4.0, "408 after %.1f s with header_timeout_s=1" % took)
        check(c.closed_by_peer(), "connection open after 408")
    finally:
        c.close()


def test_background_stream_complete(env):
    check("bg" in _state, "background stream was not started")
    c, sid, mid = _state.pop("bg")
    try:
        ev = c.collect_message(mid, timeout=40)
        harness.check_message_events(ev, sid, mid, "keep flowing while errors fly", 40,
                                     model="synth-slow", sse=True)
    finally:
        c.close()


TESTS = ([test_start_background_stream]
         + [make_case(*c) for c in CASES]
         + [test_keepalive_two_requests, test_pipelining, test_header_timeout_408,
            test_background_stream_complete])

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
