#!/usr/bin/python3
"""sluicectl against a running control (human and --json output), with
control stopped (non-zero exit and a clear message), malformed commands
(exit 2 and usage), the admin socket's mode, a stale socket after kill -9,
and store backup: mdb_stat accepts the copy and a fresh control started on
it serves the same conversations."""

import grp
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time

import harness
from harness import CurlSse, check, check_eq

PASSWORD = "correct horse battery"


def ctl(srv, *args, stdin=None, timeout=30, cwd=None):
    """Runs build/sluicectl -c CONF args; returns (rc, stdout, stderr) as text."""
    p = subprocess.run([srv.binary("sluicectl"), "-c", srv.conf_path] + list(args),
                       input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def ctl_ok(srv, *args, **kw):
    rc, out, err = ctl(srv, *args, **kw)
    check(rc == 0, "sluicectl %s: exit %d, stderr %r" % (" ".join(args), rc, err[-500:]))
    return out


def ctl_json(srv, *args, **kw):
    out = ctl_ok(srv, *(args + ("--json",)), **kw)
    lines = out.splitlines()
    check_eq(len(lines), 1, "sluicectl %s --json: answer lines" % " ".join(args))
    a = json.loads(lines[0])
    check_eq(a.get("ok"), True, "sluicectl %s --json: ok" % " ".join(args))
    return a


def ctl_fails(srv, code, *args, **kw):
    """The command exits 1 with `code` named on stderr."""
    rc, out, err = ctl(srv, *args, **kw)
    check_eq(rc, 1, "sluicectl %s: exit status (stderr %r)" % (" ".join(args), err[-300:]))
    check(code in err, "sluicectl %s: stderr %r does not name %s" % (" ".join(args), err, code))
    return err


def wait_for(what, fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise harness.TestFailure("%s: not within %.0f s (last %r)" % (what, timeout, last))


def admin_sock(srv):
    return os.path.join(srv.tmp, "admin.sock")


def run_message(srv, sid, prompt, model_tokens=24):
    """Posts a message and streams it to its done; returns (mid, events)."""
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
    try:
        check_eq(c.wait_head(), 200, "SSE stream status")
        mid = srv.post_message(sid, prompt)
        evs = c.collect_message(mid)
        harness.check_message_events(evs, sid, mid, prompt, model_tokens)
        return mid, evs
    finally:
        c.close()


# ---- running control ---------------------------------------------------------

def test_socket_mode_0600(env):
    srv = env.server(workers=2)
    st = os.lstat(admin_sock(srv))
    check(stat.S_ISSOCK(st.st_mode), "admin socket is not a socket: %o" % st.st_mode)
    check_eq(oct(st.st_mode & 0o7777), oct(0o600), "admin socket mode")
    check_eq(st.st_uid, os.getuid(), "admin socket owner")


def test_socket_mode_and_group_from_config(env):
    group = grp.getgrgid(os.getgid()).gr_name
    srv = env.fresh(workers=1)
    try:
        text = srv.conf_text()
        check("[control]\n" in text, "harness config has no [control] section")
        srv.write_conf(text.replace("[control]\n", "[control]\nadmin_socket_mode = 0660\n"
                                    "admin_socket_group = %s\n" % group, 1))
        old = os.umask(0o077)  # the configured mode wins over the umask
        try:
            srv.start()
        finally:
            os.umask(old)
        st = os.lstat(admin_sock(srv))
        check_eq(oct(st.st_mode & 0o7777), oct(0o660), "configured admin socket mode")
        check_eq(st.st_gid, os.getgid(), "configured admin socket group")
        ctl_ok(srv, "status")
    finally:
        srv.stop()


def test_status(env):
    srv = env.server(workers=2)
    a = ctl_json(srv, "status")
    check_eq(a["workers"], 2, "status workers")
    check_eq(a["dataplane_attached"], True, "status dataplane_attached")
    check_eq(a["store"], os.path.join(srv.tmp, "store"), "status store")
    check_eq(a["pid"], srv.procs["sluice-control"].pid, "status pid")
    for k in ("uptime_ms", "sessions_in_memory", "answers_running", "workers_reporting"):
        check(isinstance(a.get(k), int), "status %s: %r" % (k, a.get(k)))
    out = ctl_ok(srv, "status")
    check(re.search(r"^dataplane\s+attached \(epoch \d+\), 2 workers", out, re.M),
          "status human output: %r" % out)
    check(re.search(r"^store\s+%s$" % re.escape(a["store"]), out, re.M), "status store line: %r" % out)
    # --socket reaches the same control.
    p = subprocess.run([srv.binary("sluicectl"), "--socket", admin_sock(srv), "status", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    check_eq(p.returncode, 0, "sluicectl --socket status exit")
    check_eq(json.loads(p.stdout)["pid"], a["pid"], "--socket status pid")


def test_stats_and_workers(env):
    srv = env.server(workers=2)
    wait_for("both workers report STATS",
             lambda: ctl_json(srv, "status")["workers_reporting"] == 2)
    before = ctl_json(srv, "stats")
    sid = srv.create_session("synth")
    run_message(srv, sid, "count my tokens")
    # STATS records come every second: wait for the tokens to show up.
    a = wait_for("tokens_out in stats",
                 lambda: (lambda s: s if s["dataplane"]["tokens_out"] >=
                          before["dataplane"]["tokens_out"] + 24 else None)(ctl_json(srv, "stats")))
    check(a["dataplane"]["http_requests"] > before["dataplane"]["http_requests"],
          "stats http_requests did not grow: %r" % a)
    check_eq(a["dataplane"]["workers_reporting"], 2, "stats workers_reporting")
    check(a["control"]["requests"] >= 3, "control requests: %r" % a["control"])
    check(a["control"]["tokens"] >= 24, "control tokens: %r" % a["control"])
    out = ctl_ok(srv, "stats")
    check(re.search(r"^\s+tokens_out\s+\d+$", out, re.M) and "control" in out,
          "stats human output: %r" % out)

    # --watch, bounded by --count: one JSON line per sample.
    rc, out, err = ctl(srv, "stats", "--watch", "--interval", "0.2", "--count", "3", "--json")
    check_eq(rc, 0, "stats --watch exit (stderr %r)" % err)
    lines = out.splitlines()
    check_eq(len(lines), 3, "stats --watch --count 3 --json lines")
    for ln in lines:
        check_eq(json.loads(ln).get("ok"), True, "stats --watch sample")
    out = ctl_ok(srv, "stats", "--watch", "--interval", "0.2", "--count", "2")
    check_eq(len(re.findall(r"^---- \d{4}-", out, re.M)), 2, "stats --watch human samples")

    w = ctl_json(srv, "workers")["workers"]
    check_eq([x["worker"] for x in w], [0, 1], "workers list")
    for x in w:
        check(isinstance(x["stats_age_ms"], int) and x["stats_age_ms"] < 5000,
              "worker %d stats age %r" % (x["worker"], x["stats_age_ms"]))
    check_eq(sum(x["tokens_out"] for x in w) >= 24, True, "workers tokens_out sum")
    out = ctl_ok(srv, "workers")
    check(out.startswith("WORKER") and len(out.splitlines()) == 3, "workers human output: %r" % out)


def test_conns(env):
    srv = env.server(workers=2)
    sid = srv.create_session("synth")
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
    try:
        check_eq(c.wait_head(), 200, "SSE stream status")
        a = ctl_json(srv, "conns")
        check_eq(a["missing_workers"], [], "conns missing_workers")
        sse = [x for x in a["conns"] if x.get("session_id") == sid]
        check_eq(len(sse), 1, "conns: the SSE stream of %s in %r" % (sid, a["conns"]))
        check_eq(sse[0]["mode"], "sse", "conns mode")
        check(re.fullmatch(r"127\.0\.0\.1:\d+", sse[0]["peer"]), "conns peer %r" % sse[0]["peer"])
        w = sse[0]["worker"]
        only = ctl_json(srv, "conns", "--worker", str(w))["conns"]
        check(all(x["worker"] == w for x in only) and any(x.get("session_id") == sid for x in only),
              "conns --worker %d: %r" % (w, only))
        other = ctl_json(srv, "conns", "--worker", str(1 - w))["conns"]
        check(not any(x.get("session_id") == sid for x in other), "conns --worker %d: %r" % (1 - w, other))
        out = ctl_ok(srv, "conns")
        check(re.search(r"\bsse\b.*%s" % sid, out) and re.search(r"^\d+ connections$", out, re.M),
              "conns human output: %r" % out)
        ctl_fails(srv, "invalid_request", "conns", "--worker", "5")
    finally:
        c.close()


def test_sessions_list_and_show(env):
    srv = env.server(workers=2)
    sid = srv.create_session("synth")
    prompt = "tell me about sluices"
    mid, _ = run_message(srv, sid, prompt)
    a = ctl_json(srv, "sessions", "list")
    mine = [s for s in a["sessions"] if s["id"] == sid]
    check_eq(len(mine), 1, "sessions list has %s" % sid)
    check_eq(mine[0]["user"], harness.DEFAULT_USER[0], "sessions list user")
    check_eq(mine[0]["model_id"], "synth", "sessions list model")
    a = ctl_json(srv, "sessions", "list", "--user", harness.DEFAULT_USER[0], "--limit", "1")
    check_eq(len(a["sessions"]), 1, "sessions list --limit 1")
    check_eq(a["sessions"][0]["user"], harness.DEFAULT_USER[0], "sessions list --user")
    # Another user's conversation is listed under that user only.
    srv.add_user("lister", PASSWORD)
    tok = srv.login("lister", PASSWORD)
    r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth"}, headers=srv.auth_headers(tok))
    check_eq(r.status, 201, "lister's session")
    other = r.json()["id"]
    check_eq([x["id"] for x in ctl_json(srv, "sessions", "list", "--user", "lister")["sessions"]],
             [other], "sessions list --user lister")
    every = [x["id"] for x in ctl_json(srv, "sessions", "list")["sessions"]]
    check(other in every and sid in every, "sessions list of every user: %r" % every)
    check_eq(ctl_json(srv, "sessions", "list", "--user", "nobody")["sessions"], [],
             "sessions list --user nobody")
    out = ctl_ok(srv, "sessions", "list")
    check(re.search(r"^%s\s+%s\s" % (sid, harness.DEFAULT_USER[0]), out, re.M),
          "sessions list human output: %r" % out)

    # The answer's last tokens and status are committed in batches.
    s = wait_for("answer of %s committed" % sid,
                 lambda: (lambda x: x if x["messages"][-1]["status"] == "complete" else None)(
                     ctl_json(srv, "sessions", "show", sid)["session"]))
    check_eq(s["id"], sid, "sessions show id")
    msgs = s["messages"]
    check_eq([m["role"] for m in msgs], ["user", "assistant"], "sessions show roles")
    check_eq(msgs[0]["content"], prompt, "sessions show user content")
    check_eq(msgs[1]["id"], mid, "sessions show assistant id")
    check_eq(msgs[1]["status"], "complete", "sessions show assistant status")
    check_eq(msgs[1]["content"], harness.expected_answer(prompt, 24), "sessions show answer")
    check_eq(msgs[1]["ntokens"], 24, "sessions show ntokens")
    out = ctl_ok(srv, "sessions", "show", sid)
    check(re.search(r"^messages\s+2$", out, re.M) and harness.expected_answer(prompt, 24) in out,
          "sessions show human output: %r" % out)
    ctl_fails(srv, "not_found", "sessions", "show", "s_0000000000000000")


def test_sessions_kill(env):
    srv = env.server(workers=2)
    sid = srv.create_session("synth-slow")
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
    try:
        check_eq(c.wait_head(), 200, "SSE stream status")
        mid = srv.post_message(sid, "a long answer please")
        # Wait for the first token, so the answer is running.
        while True:
            e = c.next_event(10)
            check(e is not None, "SSE ended before the first token")
            if e["type"] == "token":
                break
        check_eq(ctl_json(srv, "status")["answers_running"] >= 1, True, "an answer runs")
        a = ctl_json(srv, "sessions", "kill", sid)
        check_eq(a["cancelled_message_id"], mid, "kill cancelled_message_id")
        check_eq(a["workers_kicked"], 2, "kill workers_kicked")
        types = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            e = c.next_event(max(0.1, deadline - time.monotonic()))
            if e is None:
                break
            types.append((e["type"], e.get("status") or e.get("error", {}).get("code")))
        check(("done", "cancelled") in types, "kill: no done cancelled on the stream: %r" % types)
        check(("error", "session_killed") in types, "kill: no session_killed error event: %r" % types)
        c.proc.wait(timeout=10)
    finally:
        c.close()
    # Status changes are committed in batches (token_commit_ms): wait for it.
    s = wait_for("the killed answer stored as cancelled",
                 lambda: (lambda x: x if x["messages"][1]["status"] == "cancelled" else None)(
                     ctl_json(srv, "sessions", "show", sid)["session"]))
    check_eq(s["running"], False, "killed session running")
    out = ctl_ok(srv, "sessions", "kill", sid)
    check("no answer was running" in out, "second kill human output: %r" % out)
    ctl_fails(srv, "not_found", "sessions", "kill", "s_0000000000000000")


def test_users(env):
    srv = env.server(workers=2)
    rc, out, err = ctl(srv, "users", "add", "alice", "--role", "admin", stdin=(PASSWORD + "\n").encode())
    check_eq(rc, 0, "users add alice exit (stderr %r)" % err)
    check_eq(out.strip(), "alice: user added", "users add human output")
    tok = srv.login("alice", PASSWORD)
    a = ctl_json(srv, "users", "add", "bert", "--role", "user", stdin=b"bert-pw\n")
    check_eq((a["user"], a["done"]), ("bert", "user added"), "users add --json")
    ctl_fails(srv, "exists", "users", "add", "alice", "--role", "user", stdin=b"whatever\n")
    ctl_fails(srv, "invalid_request", "users", "add", "no way", "--role", "user", stdin=b"x\n")
    ctl_fails(srv, "no password", "users", "add", "carol", "--role", "user", stdin=b"")
    ctl_fails(srv, "longer than", "users", "add", "carol", "--role", "user", stdin=b"x" * 2000 + b"\n")

    users = {u["name"]: u for u in ctl_json(srv, "users", "list")["users"]}
    check_eq(users["alice"]["role"], "admin", "users list alice role")
    check_eq(users["bert"]["role"], "user", "users list bert role")
    check(harness.DEFAULT_USER[0] in users and "carol" not in users, "users list: %r" % sorted(users))
    check(all("pwhash" not in u for u in users.values()), "users list leaks hashes")
    out = ctl_ok(srv, "users", "list")
    check(re.search(r"^alice\s+admin\s+\d{4}-", out, re.M), "users list human output: %r" % out)

    # A new password ends the logins made with the old one.
    check_eq(srv.request("GET", "/api/chat/sessions", headers=srv.auth_headers(tok)).status, 200,
             "alice's token before passwd")
    a = ctl_json(srv, "users", "passwd", "alice", stdin=b"new-secret\n")
    check_eq(a["done"], "password changed", "users passwd --json")
    check_eq(srv.request("GET", "/api/chat/sessions", headers=srv.auth_headers(tok)).status, 401,
             "alice's old token after passwd")
    check_eq(srv.login("alice", PASSWORD, full=True).status, 401, "old password after passwd")
    tok = srv.login("alice", "new-secret")
    ctl_fails(srv, "not_found", "users", "passwd", "nobody", stdin=b"x\n")

    out = ctl_ok(srv, "users", "del", "alice")
    check_eq(out.strip(), "alice: user deleted", "users del human output")
    check_eq(srv.request("GET", "/api/chat/sessions", headers=srv.auth_headers(tok)).status, 401,
             "deleted user's token")
    check_eq(srv.login("alice", "new-secret", full=True).status, 401, "deleted user's login")
    ctl_fails(srv, "not_found", "users", "del", "alice")
    a = ctl_json(srv, "users", "del", "bert")
    check_eq(a["done"], "user deleted", "users del --json")
    names = [u["name"] for u in ctl_json(srv, "users", "list")["users"]]
    check("alice" not in names and "bert" not in names, "users list after del: %r" % names)


def sse_error_code(c, timeout=10):
    """The code of the next `error` event on SSE stream c (keep-alives skipped), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        e = c.next_event(max(0.1, deadline - time.monotonic()))
        if e is None:
            return None
        if e["type"] == "error":
            return e.get("error", {}).get("code")
    return None


def test_keys(env):
    srv = env.server(workers=2)
    srv.add_user("kim", "kim-password")
    rc, out, err = ctl(srv, "keys", "create", "--user", "kim", "--label", "ci")
    check_eq(rc, 0, "keys create exit (stderr %r)" % err)
    key = out.strip()
    check(re.fullmatch(r"sk_[A-Za-z0-9_-]{43}", key), "keys create prints the key: %r" % out)
    check("shown only this once" in err, "keys create note on stderr: %r" % err)
    a = ctl_json(srv, "keys", "create", "--user", "kim")
    check(a["id"].startswith("k_") and a["key"].startswith("sk_") and a["user"] == "kim",
          "keys create --json: %r" % a)
    bearer = {"Authorization": "Bearer " + key}
    check_eq(srv.request("GET", "/api/chat/sessions", headers=bearer).status, 200, "key as Bearer")
    keys = ctl_json(srv, "keys", "list", "--user", "kim")["keys"]
    check_eq(sorted(k["label"] for k in keys), ["", "ci"], "keys list --user kim labels")
    check(all("key" not in k and "hash" not in k for k in keys), "keys list leaks keys: %r" % keys)
    kid = [k["id"] for k in keys if k["label"] == "ci"][0]
    out = ctl_ok(srv, "keys", "list")
    check(re.search(r"^%s\s+kim\s" % kid, out, re.M), "keys list human output: %r" % out)
    check_eq(ctl_json(srv, "keys", "list", "--user", harness.DEFAULT_USER[0])["keys"], [],
             "another user's keys")
    ctl_fails(srv, "not_found", "keys", "create", "--user", "nobody")
    ctl_fails(srv, "invalid_request", "keys", "create", "--user", "kim", "--label", "x" * 80)

    # A stream opened with the key ends when the key is revoked.
    r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth-slow"}, headers=bearer)
    check_eq(r.status, 201, "create a session with the key")
    sid = r.json()["id"]
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=bearer)
    try:
        check_eq(c.wait_head(), 200, "SSE with the key")
        a = ctl_json(srv, "keys", "revoke", kid)
        check_eq((a["id"], a["done"]), (kid, "key revoked"), "keys revoke --json")
        check_eq(sse_error_code(c), "unauthenticated", "SSE after keys revoke")
        c.proc.wait(timeout=10)
    finally:
        c.close()
    check_eq(srv.request("GET", "/api/chat/sessions", headers=bearer).status, 401, "revoked key")
    ctl_fails(srv, "not_found", "keys", "revoke", kid)
    for bad in (["keys"], ["keys", "create"], ["keys", "revoke"], ["keys", "list", "x"],
                ["keys", "revoke", kid, "--label", "x"], ["users", "list", "--label", "x"]):
        rc, _, err = ctl(srv, *bad)
        check_eq(rc, 2, "sluicectl %s: exit (stderr %r)" % (" ".join(bad), err))


def test_recreated_user_and_sse_logout(env):
    srv = env.server(workers=2)
    srv.add_user("rob", "rob-password")
    tok = srv.login("rob", "rob-password")
    h = srv.auth_headers(tok)
    r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth-slow"}, headers=h)
    check_eq(r.status, 201, "rob creates a session")
    sid = r.json()["id"]
    # Logout ends rob's SSE stream.
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=h)
    try:
        check_eq(c.wait_head(), 200, "rob's SSE stream")
        check_eq(srv.request("POST", "/api/auth/logout", headers=h).status, 200, "logout")
        check_eq(sse_error_code(c), "unauthenticated", "SSE after logout")
        c.proc.wait(timeout=10)
    finally:
        c.close()
    # users del ends the stream of another login of his.
    tok = srv.login("rob", "rob-password")
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers(tok))
    try:
        check_eq(c.wait_head(), 200, "rob's second SSE stream")
        ctl_ok(srv, "users", "del", "rob")
        check_eq(sse_error_code(c), "unauthenticated", "SSE after users del")
        c.proc.wait(timeout=10)
    finally:
        c.close()
    # A new rob gets nothing of the old one.
    srv.add_user("rob", "rob-password")
    h = srv.auth_headers(srv.login("rob", "rob-password"))
    for path in ("/api/chat/sessions/" + sid, "/api/chat/sessions/%s/export" % sid,
                 "/api/chat/stream/" + sid):
        check_eq(srv.request("GET", path, headers=h).status, 404, "new rob: GET " + path)
    r = srv.request("GET", "/api/chat/sessions", headers=h)
    check_eq((r.status, r.json()["sessions"]), (200, []), "new rob's list")
    # Operators still see the old conversation.
    a = ctl_json(srv, "sessions", "list", "--user", "rob")
    check_eq([x["id"] for x in a["sessions"]], [sid], "sessions list --user rob")


def run_tty(srv, args, typed, timeout=20):
    """Runs sluicectl on a pseudo-terminal, typing each line of `typed` once
    the next prompt shows; returns (exit status, everything the terminal showed)."""
    m, s = os.openpty()
    p = subprocess.Popen([srv.binary("sluicectl"), "-c", srv.conf_path] + list(args),
                         stdin=s, stdout=s, stderr=s, start_new_session=True)
    os.close(s)
    seen = b""
    deadline = time.monotonic() + timeout
    prompts = 0
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([m], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(m, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            n = seen.count(b"Password")
            if n > prompts and prompts < len(typed) and seen.rstrip().endswith(b":"):
                os.write(m, typed[prompts] + b"\n")
                prompts += 1
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        os.close(m)
        if p.poll() is None:
            p.kill()
            p.wait()
    return rc, seen.decode("utf-8", "replace")


def test_users_add_on_terminal(env):
    srv = env.server(workers=2)
    rc, shown = run_tty(srv, ["users", "add", "terry", "--role", "user"], [b"tty-secret-1", b"tty-secret-1"])
    check_eq(rc, 0, "users add on a terminal: exit (terminal %r)" % shown)
    check("Password: " in shown and "Password again: " in shown, "prompts: %r" % shown)
    check("tty-secret-1" not in shown, "the password was echoed: %r" % shown)
    check("terry: user added" in shown, "users add on a terminal output: %r" % shown)
    srv.login("terry", "tty-secret-1")
    rc, shown = run_tty(srv, ["users", "passwd", "terry"], [b"one-thing", b"another"])
    check_eq(rc, 1, "mismatched passwords: exit (terminal %r)" % shown)
    check("do not match" in shown, "mismatched passwords message: %r" % shown)
    srv.login("terry", "tty-secret-1")


def test_store_stats_and_backup(env):
    srv = env.server(workers=2)
    sids = []
    answers = {}
    for i in range(2):
        sid = srv.create_session("synth")
        prompt = "backup prompt %d" % i
        run_message(srv, sid, prompt)
        sids.append(sid)
        answers[sid] = harness.expected_answer(prompt, 24)
        # Tokens are committed in batches (token_commit_ms): the copy holds
        # what is committed, so wait until the store has the whole answer.
        wait_for("answer of %s committed" % sid,
                 lambda: ctl_json(srv, "sessions", "show", sid)["session"]["messages"][1]["status"]
                 == "complete")
    st = ctl_json(srv, "store", "stats")
    check(st["schema_version"] >= 1, "store stats schema_version %r" % st)
    check(st["users"] >= 1 and st["sessions"] >= 2 and st["messages"] >= 4, "store stats counts %r" % st)
    check(0 < st["map_used"] <= st["map_size"], "store stats map %r" % st)
    out = ctl_ok(srv, "store", "stats")
    check(re.search(r"^\s+map_size\s+\d+$", out, re.M), "store stats human output: %r" % out)

    bk = os.path.join(srv.tmp, "backup")
    a = ctl_json(srv, "store", "backup", bk)
    check_eq(a["path"], bk, "backup path")
    p = subprocess.run(["mdb_stat", bk], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    check_eq(p.returncode, 0, "mdb_stat on the backup (stderr %r)" % p.stderr)
    # A relative PATH is the caller's, not control's.
    out = ctl_ok(srv, "store", "backup", "bk-rel", cwd=srv.tmp)
    check("store backed up to %s" % os.path.join(srv.tmp, "bk-rel") in out, "backup human output %r" % out)
    check(os.path.exists(os.path.join(srv.tmp, "bk-rel", "data.mdb")), "relative backup has data.mdb")
    ctl_fails(srv, "sluicectl:", "store", "backup", bk)  # not empty any more

    # A fresh control on the copy serves the same conversations.
    fresh = env.fresh(workers=1, default_user=False)
    try:
        store = os.path.join(fresh.tmp, "store")
        for name in os.listdir(bk):
            shutil.copy(os.path.join(bk, name), os.path.join(store, name))
        fresh.start()
        fresh.token = fresh.login(*harness.DEFAULT_USER)
        r = fresh.request("GET", "/api/chat/sessions")
        check_eq(r.status, 200, "GET /api/chat/sessions on the copy")
        listed = sorted(s["id"] for s in r.json().get("sessions", []))
        check(set(sids) <= set(listed), "sessions on the copy %r, want %r" % (listed, sids))
        for sid in sids:
            r = fresh.request("GET", "/api/chat/sessions/%s" % sid)
            check_eq(r.status, 200, "GET /api/chat/sessions/%s on the copy" % sid)
            msgs = r.json().get("messages", [])
            check_eq([m.get("content") for m in msgs if m.get("role") == "assistant"], [answers[sid]],
                     "answer of %s on the copy" % sid)
    finally:
        fresh.stop()


# ---- malformed commands and a stopped control ------------------------------------

MALFORMED = [
    [], ["bogus"], ["status", "extra"], ["--frob", "status"], ["-c"],
    ["stats", "--count", "3"], ["stats", "--watch", "--interval", "0"], ["workers", "--watch"],
    ["conns", "--worker", "x"], ["conns", "extra"],
    ["sessions"], ["sessions", "show"], ["sessions", "kill"], ["sessions", "list", "x"],
    ["sessions", "list", "--limit", "0"], ["sessions", "frob", "x"], ["status", "--user", "u"],
    ["users"], ["users", "add"], ["users", "add", "x"], ["users", "add", "x", "--role", "root"],
    ["users", "passwd", "x", "--role", "user"], ["users", "del"], ["users", "list", "x"],
    ["users", "frob", "x"],
    ["store"], ["store", "backup"], ["store", "stats", "x"], ["store", "frob"],
]


def test_malformed_commands(env):
    exe = os.path.join(env.build, "sluicectl")
    check(os.access(exe, os.X_OK), "%s is missing" % exe)
    for args in MALFORMED:
        p = subprocess.run([exe, "--socket", "/nonexistent/admin.sock"] + args,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        err = p.stderr.decode("utf-8", "replace")
        check_eq(p.returncode, 2, "sluicectl %s: exit status (stderr %r)" % (" ".join(args), err[:200]))
        check("usage: sluicectl" in err, "sluicectl %s: no usage on stderr: %r" % (" ".join(args), err[:200]))
        check_eq(p.stdout, b"", "sluicectl %s: stdout" % " ".join(args))
    p = subprocess.run([exe, "-c", "/nonexistent/sluice.conf", "status"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    check_eq(p.returncode, 1, "sluicectl -c missing file: exit")
    check(b"/nonexistent/sluice.conf" in p.stderr, "missing config not named: %r" % p.stderr)


ALL_COMMANDS = [
    (["status"], None), (["status", "--json"], None), (["stats"], None),
    (["stats", "--watch", "--count", "2", "--interval", "0.1"], None), (["workers"], None),
    (["conns"], None), (["conns", "--worker", "0"], None), (["sessions", "list"], None),
    (["sessions", "list", "--user", "tester", "--limit", "5"], None),
    (["sessions", "show", "s_0000000000000000"], None), (["sessions", "kill", "s_0000000000000000"], None),
    (["users", "add", "dora", "--role", "user"], b"pw\n"), (["users", "passwd", "dora"], b"pw\n"),
    (["users", "del", "dora"], None), (["users", "list"], None), (["store", "stats"], None),
    (["store", "backup", "/tmp/sluicectl-never"], None),
]


def check_all_fail(srv, why):
    sock = admin_sock(srv)
    for args, stdin in ALL_COMMANDS:
        rc, out, err = ctl(srv, *args, stdin=stdin)
        check_eq(rc, 1, "%s: sluicectl %s exit (stderr %r)" % (why, " ".join(args), err))
        check(("cannot connect to control at %s: " % sock) in err,
              "%s: sluicectl %s: stderr %r" % (why, " ".join(args), err))
        check_eq(out, "", "%s: sluicectl %s stdout" % (why, " ".join(args)))


def test_control_stopped(env):
    srv = env.fresh(workers=1)
    try:
        srv.start()
        ctl_ok(srv, "status")
        # A clean stop removes the socket: "No such file or directory".
        srv.stop_proc("sluice-control")
        check(not os.path.exists(admin_sock(srv)), "admin socket left after SIGTERM")
        check_all_fail(srv, "control stopped")
        # kill -9 leaves the socket file; nobody answers on it.
        srv.start_control()
        wait_for("control answers again", lambda: ctl(srv, "status")[0] == 0)
        srv.kill("sluice-control", signal.SIGKILL)
        check(os.path.exists(admin_sock(srv)), "kill -9 should leave the socket file")
        check_all_fail(srv, "control killed")
        rc, out, err = ctl(srv, "status")
        check("Connection refused" in err, "stale socket message: %r" % err)
        # The next control replaces the stale socket and serves again.
        srv.start_control()
        a = wait_for("control replaces the stale socket",
                     lambda: (lambda r: json.loads(r[1]) if r[0] == 0 else None)(ctl(srv, "status", "--json")))
        check_eq(a["pid"], srv.procs["sluice-control"].pid, "status pid after restart")
        check_eq(oct(os.lstat(admin_sock(srv)).st_mode & 0o7777), oct(0o600), "mode after restart")
    finally:
        srv.stop()


def test_errors_in_words_and_escaped_text(env):
    """Operator mistakes are said in words with what to do (and the code);
    user-supplied text reaches the terminal escaped, --json untouched."""
    srv = env.server(workers=2)
    name = "words%d" % os.getpid()
    ctl_ok(srv, "users", "add", name, "--role", "user", stdin=b"pw-words\n")
    err = ctl_fails(srv, "exists", "users", "add", name, "--role", "user", stdin=b"pw\n")
    check("user %s already exists" % name in err and "sluicectl users passwd %s" % name in err,
          "users add of an existing user says what to do: %r" % err)
    check("File exists" not in err, "no system error text: %r" % err)
    err = ctl_fails(srv, "not_found", "users", "del", "nobody-" + name)
    check("there is no user nobody-%s" % name in err and "users list" in err, "users del: %r" % err)
    err = ctl_fails(srv, "not_found", "sessions", "show", "s_0000000000000000")
    check("there is no conversation s_0000000000000000" in err, "sessions show: %r" % err)
    bk = os.path.join(srv.tmp, "full-dir")
    os.makedirs(bk)
    with open(os.path.join(bk, "something"), "w") as f:
        f.write("x")
    err = ctl_fails(srv, "exists", "store", "backup", bk)
    check("already exists and is not empty" in err and "new or empty directory" in err,
          "store backup into a non-empty directory: %r" % err)
    check("Directory not empty" not in err and "internal" not in err, "no system error text: %r" % err)

    title = "evil \x1b[2J\x1b]0;owned\x07 title \u009b end"
    content = "content \x1b[31mred\x1b[0m"
    tok = srv.login(name, "pw-words")
    hdr = {"Authorization": "Bearer " + tok}
    r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth", "title": title}, headers=hdr)
    check_eq(r.status, 201, "create a session with control characters in its title (%r)" % r.body)
    sid = r.json()["id"]
    r = srv.request("POST", "/api/chat/message", {"session_id": sid, "content": content}, headers=hdr)
    check_eq(r.status, 202, "post a message with escapes (%r)" % r.body)
    out = ctl_ok(srv, "sessions", "list", "--user", name)
    check("\x1b" not in out and "\x07" not in out and "\u009b" not in out,
          "no raw control characters in sessions list: %r" % out)
    check("evil \\x1b[2J\\x1b]0;owned\\x07 title \\u009b end" in out, "the title shown escaped: %r" % out)
    out = wait_for("the message stored", lambda: (lambda o: o if "content" in o else None)(
        ctl_ok(srv, "sessions", "show", sid)))
    check("\x1b" not in out, "no raw ESC in sessions show: %r" % out)
    check("content \\x1b[31mred\\x1b[0m" in out, "the content shown escaped: %r" % out)
    a = ctl_json(srv, "sessions", "show", sid)
    check_eq(a["title"] if "title" in a else a.get("session", {}).get("title"), title,
             "--json keeps the title untouched")


if __name__ == "__main__":
    sys.exit(harness.run([
        test_socket_mode_0600,
        test_socket_mode_and_group_from_config,
        test_status,
        test_stats_and_workers,
        test_conns,
        test_sessions_list_and_show,
        test_sessions_kill,
        test_users,
        test_users_add_on_terminal,
        test_keys,
        test_recreated_user_and_sse_logout,
        test_store_stats_and_backup,
        test_malformed_commands,
        test_control_stopped,
        test_errors_in_words_and_escaped_text,
    ]))
