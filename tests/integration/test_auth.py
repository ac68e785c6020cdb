#!/usr/bin/python3
"""Authentication (docs/api.md, "Authentication") with curl and
python3-websockets (10.x asyncio API): login and logout, wrong password and
unknown user, expired, revoked and tampered tokens, CSRF with cookies,
WebSocket upgrades (Origin, bearer, cookie, Sec-WebSocket-Protocol token),
revocation and expiry of open WebSockets (close 1008), other users'
conversations (404) and login throttling (429)."""

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time

import websockets

import harness
from harness import check, check_eq

GOOD_ORIGIN = "https://chat.example"
AUTH = {"allowed_origins": GOOD_ORIGIN, "login_fail_user": 50, "login_fail_ip": 500}
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MISSING_SID = "s_0000000000000000"


def curl(srv, method, path, headers=None, body=None):
    """One request with curl; returns (status, lower-case headers, body bytes)."""
    cmd = ["curl", "-sS", "-i", "--max-time", "20", "-X", method, srv.base + path]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    check_eq(p.returncode, 0, "curl %s %s exit status (stderr %r)" % (method, path, p.stderr))
    head, _, payload = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    check(m, "curl %s %s: status line %r" % (method, path, lines[0]))
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return int(m.group(1)), hdrs, payload


def error_code(body):
    try:
        return json.loads(body.decode("utf-8"))["error"]["code"]
    except (ValueError, KeyError, TypeError):
        raise harness.TestFailure("not an error body: %r" % body[:300])


def new_user(srv, name, role="user"):
    pw = "pw-%s-secret" % name
    srv.add_user(name, pw, role)
    return pw


def login_full(srv, name, pw):
    r = srv.login(name, pw, full=True)
    check_eq(r.status, 200, "login %s status (body %r)" % (name, r.body))
    return r


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def create_session(srv, tok):
    r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth"}, headers=bearer(tok))
    check_eq(r.status, 201, "POST /api/chat/sessions status (body %r)" % r.body)
    return r.json()["id"]


def ws_url(srv):
    return "ws://127.0.0.1:%d/ws/chat" % srv.port


async def ws_open(srv, **kw):
    ws = await asyncio.wait_for(websockets.connect(ws_url(srv), ping_interval=None,
                                                   open_timeout=10, **kw), 15)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    check_eq(hello.get("type"), "connected", "first WebSocket message")
    return ws


async def ws_refused(srv, want_status, **kw):
    try:
        ws = await asyncio.wait_for(websockets.connect(ws_url(srv), ping_interval=None,
                                                       open_timeout=10, **kw), 15)
    except websockets.exceptions.InvalidStatusCode as e:
        check_eq(e.status_code, want_status, "WebSocket upgrade refused with")
        return
    await ws.close()
    raise harness.TestFailure("WebSocket upgrade %r was accepted; expected %d" % (kw, want_status))


async def wait_close(ws, timeout):
    """Reads until the server closes; returns the close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed as e:
        return e.code
    except asyncio.TimeoutError:
        raise harness.TestFailure("WebSocket still open after %.0f s" % timeout)


# ---- login and logout ------------------------------------------------------------

def test_login_response(env):
    srv = env.server(auth=AUTH)
    pw = new_user(srv, "lara", "admin")
    t0 = int(time.time())
    r = login_full(srv, "lara", pw)
    b = r.json()
    tok, csrf = b.get("session_token"), b.get("csrf_token")
    check(isinstance(tok, str) and re.fullmatch(r"[A-Za-z0-9_-]{43}", tok), "session_token %r" % tok)
    check(isinstance(csrf, str) and re.fullmatch(r"[A-Za-z0-9_-]{43}", csrf), "csrf_token %r" % csrf)
    check(tok != csrf, "csrf_token equals the session token")
    check(isinstance(b.get("expires_at"), int) and t0 + 86400 - 5 <= b["expires_at"] <= t0 + 86400 + 5,
          "expires_at %r is not about now + 86400" % b.get("expires_at"))
    check_eq(b.get("user"), {"name": "lara", "role": "admin"}, "login user")
    cookie = r.headers.get("set-cookie", "")
    parts = [p.strip() for p in cookie.split(";")]
    check_eq(parts[0], "sluice_session=" + tok, "Set-Cookie value")
    for attr in ("Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=86400"):
        check(attr in parts, "Set-Cookie %r lacks %s" % (cookie, attr))
    check("Secure" not in parts, "Secure without cookie_secure: %r" % cookie)
    # A second login is another session.
    tok2 = srv.login("lara", pw)
    check(tok2 != tok, "two logins gave the same token")
    st, _, body = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, bearer(tok))
    check_eq((st, error_code(body)), (404, "not_found"), "authenticated GET of a missing session")
    st, _, _ = curl(srv, "POST", "/api/auth/login", body={"username": "lara", "password": pw + "!"})
    check_eq(st, 401, "wrong password")
    logs = srv.stderr_text(limit=10 ** 7)
    for secret, what in ((tok, "session token"), (tok2, "session token"), (csrf, "CSRF token"),
                         (pw, "password")):
        check(secret not in logs, "a %s appears in the programs' logs" % what)


def test_wrong_password_and_unknown_user(env):
    srv = env.server(auth=AUTH)
    pw = new_user(srv, "walt")
    a = curl(srv, "POST", "/api/auth/login", body={"username": "walt", "password": pw + "x"})
    b = curl(srv, "POST", "/api/auth/login", body={"username": "nobody-here", "password": pw})
    check_eq(a[0], 401, "wrong password status")
    check_eq(b[0], 401, "unknown user status")
    check_eq(error_code(a[2]), "invalid_credentials", "wrong password code")
    check_eq(a[2], b[2], "wrong password and unknown user bodies")
    check("set-cookie" not in a[1] and "set-cookie" not in b[1], "a failed login set a cookie")
    st, _, body = curl(srv, "POST", "/api/auth/login", body={"username": "walt"})
    check_eq((st, error_code(body)), (400, "invalid_request"), "login without password")
    st, _, body = curl(srv, "GET", "/api/auth/login")
    check_eq((st, error_code(body)), (405, "method_not_allowed"), "GET /api/auth/login")


def test_unauthenticated_and_public(env):
    srv = env.server(auth=AUTH)
    for hdrs in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic dXNlcjpwdw=="},
                 bearer("A" * 43), bearer("sk_" + "A" * 43), {"Cookie": "sluice_session=" + "A" * 43}):
        for method, path, body in (("GET", "/api/chat/sessions/" + MISSING_SID, None),
                                   ("POST", "/api/chat/sessions", {"model_id": "synth"}),
                                   ("POST", "/api/auth/logout", None)):
            st, h, b = curl(srv, method, path, hdrs, body)
            check_eq((st, error_code(b)), (401, "unauthenticated"), "%s %s with %r" % (method, path, hdrs))
    st, _, b = curl(srv, "GET", "/api/models")
    check_eq(st, 200, "GET /api/models without credentials (body %r)" % b[:200])


def test_revoked_token(env):
    srv = env.server(auth=AUTH)
    pw = new_user(srv, "rita")
    tok = srv.login("rita", pw)
    other = srv.login("rita", pw)
    st, _, _ = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, bearer(tok))
    check_eq(st, 404, "before logout")
    st, h, b = curl(srv, "POST", "/api/auth/logout", bearer(tok))
    check_eq(st, 200, "logout status (body %r)" % b)
    check_eq(json.loads(b), {"logged_out": True}, "logout body")
    cookie = h.get("set-cookie", [""])[0]
    check(cookie.startswith("sluice_session=;") and "Max-Age=0" in cookie, "logout cookie %r" % cookie)
    st, _, b = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, bearer(tok))
    check_eq((st, error_code(b)), (401, "unauthenticated"), "revoked token")
    st, _, b = curl(srv, "POST", "/api/auth/logout", bearer(tok))
    check_eq(st, 401, "second logout with the revoked token")
    st, _, _ = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, bearer(other))
    check_eq(st, 404, "the user's other session after one logout")


def test_tampered_token(env):
    """Each of the 6 bits of each of the 43 characters flipped in turn: 258
    requests on one keep-alive connection, each 401."""
    srv = env.server(auth=AUTH)
    pw = new_user(srv, "tina")
    tok = srv.login("tina", pw)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    statuses = {}
    try:
        for i in range(43):
            for bit in range(6):
                t = tok[:i] + B64URL[B64URL.index(tok[i]) ^ (1 << bit)] + tok[i + 1:]
                conn.request("GET", "/api/chat/sessions/" + MISSING_SID, headers=bearer(t))
                r = conn.getresponse()
                body = r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
                check_eq((r.status, error_code(body)), (401, "unauthenticated"),
                         "token with bit %d of char %d flipped" % (bit, i))
        conn.request("GET", "/api/chat/sessions/" + MISSING_SID, headers=bearer(tok))
        r = conn.getresponse()
        r.read()
        check_eq(r.status, 404, "the untampered token afterwards")
    finally:
        conn.close()
    check_eq(statuses, {401: 258}, "statuses of tampered tokens")


def test_csrf_with_cookie(env):
    srv = env.server(auth=AUTH)
    pw = new_user(srv, "cora")
    b = login_full(srv, "cora", pw).json()
    tok, csrf = b["session_token"], b["csrf_token"]
    ck = {"Cookie": "theme=dark; sluice_session=" + tok}
    body = {"model_id": "synth"}
    st, _, rb = curl(srv, "POST", "/api/chat/sessions", ck, body)
    check_eq((st, error_code(rb)), (403, "csrf_failed"), "cookie POST without X-CSRF-Token")
    wrong = csrf[:-2] + ("AA" if csrf[-2:] != "AA" else "QA")
    st, _, rb = curl(srv, "POST", "/api/chat/sessions", dict(ck, **{"X-CSRF-Token": wrong}), body)
    check_eq((st, error_code(rb)), (403, "csrf_failed"), "cookie POST with a wrong X-CSRF-Token")
    other = login_full(srv, "cora", pw).json()["csrf_token"]
    st, _, rb = curl(srv, "POST", "/api/chat/sessions", dict(ck, **{"X-CSRF-Token": other}), body)
    check_eq((st, error_code(rb)), (403, "csrf_failed"), "cookie POST with another session's CSRF token")
    st, _, rb = curl(srv, "POST", "/api/chat/sessions", dict(ck, **{"X-CSRF-Token": csrf}), body)
    check_eq(st, 201, "cookie POST with the right X-CSRF-Token (body %r)" % rb[:200])
    st, _, _ = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, ck)
    check_eq(st, 404, "cookie GET needs no CSRF token")
    st, _, rb = curl(srv, "POST", "/api/chat/sessions", bearer(tok), body)
    check_eq(st, 201, "bearer POST needs no CSRF token (body %r)" % rb[:200])
    st, _, rb = curl(srv, "POST", "/api/auth/logout", ck)
    check_eq((st, error_code(rb)), (403, "csrf_failed"), "cookie logout without X-CSRF-Token")
    st, _, rb = curl(srv, "POST", "/api/auth/logout", dict(ck, **{"X-CSRF-Token": csrf}))
    check_eq(st, 200, "cookie logout with X-CSRF-Token")


# ---- WebSocket ---------------------------------------------------------------------

def test_ws_origin(env):
    srv = env.server(auth=AUTH)

    async def run():
        await ws_refused(srv, 403, origin="https://evil.example", extra_headers=srv.auth_headers())
        await ws_refused(srv, 403, origin="null", extra_headers=srv.auth_headers())
        ws = await ws_open(srv, origin=GOOD_ORIGIN, extra_headers=srv.auth_headers())
        await ws.close()
    asyncio.run(run())
    # The refusal comes before any 101, with the documented body.
    st, h, b = curl(srv, "GET", "/ws/chat", dict(srv.auth_headers(), **{
        "Origin": "https://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}))
    check_eq((st, error_code(b)), (403, "origin_not_allowed"), "upgrade from a disallowed Origin")


def test_ws_credentials(env):
    srv = env.server(auth=AUTH)
    tok = srv.token

    async def run():
        ws = await ws_open(srv, extra_headers=bearer(tok))
        await ws.send(json.dumps({"type": "subscribe", "session_id": MISSING_SID, "id": 1}))
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        check_eq((m.get("type"), m.get("error", {}).get("code")), ("error", "not_found"),
                 "subscribe to a missing session over a bearer WebSocket")
        await ws.close()
        ws = await ws_open(srv, extra_headers={"Cookie": "sluice_session=" + tok})
        await ws.close()
        ws = await ws_open(srv, subprotocols=["sluice.v1", "sluice.auth." + tok])
        check_eq(ws.subprotocol, "sluice.v1", "negotiated subprotocol")
        await ws.close()
        await ws_refused(srv, 401)
        await ws_refused(srv, 401, extra_headers=bearer("A" * 43))
        await ws_refused(srv, 401, subprotocols=["sluice.v1", "sluice.auth.garbage"])
        flipped = ("B" if tok[0] != "B" else "C") + tok[1:]
        await ws_refused(srv, 401, extra_headers={"Cookie": "sluice_session=" + flipped})
    asyncio.run(run())


def test_logout_closes_ws(env):
    srv = env.server(auth=AUTH)
    pw = new_user(srv, "wes")
    tok = srv.login("wes", pw)
    keep = srv.login("wes", pw)

    async def run():
        ws = await ws_open(srv, extra_headers=bearer(tok))
        ws2 = await ws_open(srv, subprotocols=["sluice.v1", "sluice.auth." + keep])
        st, _, b = await asyncio.get_running_loop().run_in_executor(
            None, lambda: curl(srv, "POST", "/api/auth/logout", bearer(tok)))
        check_eq(st, 200, "logout (body %r)" % b)
        code = await wait_close(ws, 10)
        check_eq(code, 1008, "close code of a WebSocket whose session was revoked")
        # The user's other session keeps its socket.
        await ws2.send(json.dumps({"type": "ping", "id": "p"}))
        m = json.loads(await asyncio.wait_for(ws2.recv(), 10))
        check_eq(m.get("type"), "pong", "the other session's WebSocket after the logout")
        await ws2.close()
    asyncio.run(run())


# ---- ownership ------------------------------------------------------------------------

def test_other_users_conversation(env):
    srv = env.server(auth=AUTH)
    ta = srv.login("olga", new_user(srv, "olga"))
    tb = srv.login("omar", new_user(srv, "omar"))
    sid = create_session(srv, ta)
    r = srv.request("POST", "/api/chat/message", {"session_id": sid, "content": "mine"}, headers=bearer(ta))
    check_eq(r.status, 202, "owner's message (body %r)" % r.body)
    missing = {}
    for label, sess in (("other", sid), ("missing", MISSING_SID)):
        got = []
        for method, path, body in (("GET", "/api/chat/sessions/" + sess, None),
                                   ("GET", "/api/chat/stream/" + sess, None),
                                   ("POST", "/api/chat/message", {"session_id": sess, "content": "x"}),
                                   ("POST", "/api/chat/sessions/%s/cancel" % sess, None)):
            st, _, b = curl(srv, method, path, bearer(tb), body)
            got.append((method, path.replace(sess, "ID"), st, b))
        missing[label] = got
    for (m, p, st, b), (_, _, st2, b2) in zip(missing["other"], missing["missing"]):
        check_eq((st, error_code(b)), (404, "not_found"), "%s %s on another user's conversation" % (m, p))
        check_eq(b, b2, "%s %s: another user's conversation answers like a missing one" % (m, p))

    async def run():
        ws = await ws_open(srv, extra_headers=bearer(tb))
        for req in ({"type": "subscribe", "session_id": sid}, {"type": "cancel", "session_id": sid},
                    {"type": "send", "session_id": sid, "content": "x"}):
            await ws.send(json.dumps(dict(req, id="q")))
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            check_eq((m.get("type"), m.get("error", {}).get("code")), ("error", "not_found"),
                     "WebSocket %s on another user's conversation" % req["type"])
        await ws.close()
    asyncio.run(run())
    st, _, _ = curl(srv, "GET", "/api/chat/sessions/" + sid, bearer(ta))
    check_eq(st, 200, "the owner still reads the conversation")


# ---- throttling ----------------------------------------------------------------------------

def test_login_throttling(env):
    srv = env.fresh(auth={"login_fail_user": 3, "login_fail_ip": 6, "login_window_s": 120})
    try:
        srv.start()
        pw = new_user(srv, "vic")
        pw2 = new_user(srv, "val")
        # The harness's own login counted nothing: it succeeded.
        for i in range(3):
            st, _, b = curl(srv, "POST", "/api/auth/login", body={"username": "vic", "password": "no%d" % i})
            check_eq(st, 401, "wrong password %d" % i)
        st, h, b = curl(srv, "POST", "/api/auth/login", body={"username": "vic", "password": pw})
        check_eq((st, error_code(b)), (429, "too_many_attempts"), "4th login of vic, right password")
        ra = h.get("retry-after", ["0"])[0]
        check(ra.isdigit() and 1 <= int(ra) <= 120, "Retry-After %r" % ra)
        # Another user from the same address still logs in (3 failures < 6).
        st, _, b = curl(srv, "POST", "/api/auth/login", body={"username": "val", "password": pw2})
        check_eq(st, 200, "login of another user (body %r)" % b)
        for i in range(3):
            st, _, _ = curl(srv, "POST", "/api/auth/login", body={"username": "ghost%d" % i, "password": "x"})
            check_eq(st, 401, "unknown user %d" % i)
        st, h, b = curl(srv, "POST", "/api/auth/login", body={"username": "val", "password": pw2})
        check_eq((st, error_code(b)), (429, "too_many_attempts"), "login after 6 failures from this address")
        check("retry-after" in h, "429 without Retry-After")
        # Existing sessions are not affected by throttling.
        st, _, _ = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, srv.auth_headers())
        check_eq(st, 404, "a session token while the address is throttled")
    finally:
        srv.stop()


# ---- expiry (last: it waits for the shortest session lifetime, 60 s) -----------------------------

def test_expired_token(env):
    srv = env.fresh(auth={"session_ttl_s": 60})
    try:
        srv.start()
        pw = new_user(srv, "eve")
        b = login_full(srv, "eve", pw).json()
        tok, exp = b["session_token"], b["expires_at"]
        check(exp - time.time() <= 61, "expires_at %r is not within session_ttl_s" % exp)

        async def run():
            ws = await ws_open(srv, extra_headers=bearer(tok))
            st, _, _ = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, bearer(tok))
            check_eq(st, 404, "token before expiry")
            code = await wait_close(ws, exp - time.time() + 10)
            check_eq(code, 1008, "close code when the session expired")
            check(time.time() >= exp - 1, "WebSocket closed %.1f s before expiry" % (exp - time.time()))
        asyncio.run(run())
        while time.time() < exp + 1:
            time.sleep(0.2)
        st, _, b = curl(srv, "GET", "/api/chat/sessions/" + MISSING_SID, bearer(tok))
        check_eq((st, error_code(b)), (401, "unauthenticated"), "expired token")
    finally:
        srv.stop()


TESTS = [test_login_response, test_wrong_password_and_unknown_user, test_unauthenticated_and_public,
         test_revoked_token, test_tampered_token, test_csrf_with_cookie, test_ws_origin,
         test_ws_credentials, test_logout_closes_ws, test_other_users_conversation,
         test_login_throttling, test_expired_token]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
