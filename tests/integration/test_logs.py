#!/usr/bin/env python3
"""Logs (issue 11 item 3): the audit lines of every security decision, the
live log level of each process (sluicectl log level), JSON lines
(`[log] format = json`), and no secret in any log."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq  # noqa: E402

PW = "Corr3ct-Horse-Battery"
PW2 = "N3w-Staple-Passphrase"
EVIL = "http://evil.example"


def log_text(srv, name=None):
    out = []
    for proc, logs in srv.logs.items():
        if name and proc != name:
            continue
        for path in logs:
            with open(path, "rb") as f:
                out.append(f.read().decode("utf-8", "replace"))
    return "\n".join(out)


def audit_lines(srv, event, name="sluice-control"):
    return [ln for ln in log_text(srv, name).splitlines() if (" INFO audit %s" % event) in ln]


def wait_audit(srv, event, pattern, name="sluice-control", timeout=5.0):
    """The audit lines of `event` matching `pattern`, waiting for the first."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        hits = [ln for ln in audit_lines(srv, event, name) if rx.search(ln)]
        if hits or time.monotonic() > deadline:
            check(hits, "no audit line %s matching /%s/ in %s's log:\n%s"
                  % (event, pattern, name, "\n".join(audit_lines(srv, event, name))[-2000:]))
            return hits
        time.sleep(0.05)


def ctl(srv, *args, stdin=None):
    p = srv.sluicectl(*args, stdin=stdin)
    check_eq(p.returncode, 0, "sluicectl %s (stderr %r)" % (" ".join(args), p.stderr[-300:]))
    return p.stdout.decode()


def test_audit_lines(env):
    srv = env.fresh(auth={"login_fail_user": 2, "login_window_s": 60}, default_user=False)
    try:
        srv.start()
        uid = str(os.getuid())
        ctl(srv, "users", "add", "alice", "--role", "user", stdin=(PW + "\n").encode())
        wait_audit(srv, "user_add", r"user=alice uid=%s$" % uid)
        wait_audit(srv, "admin_command", r"cmd=users\.add uid=%s pid=[0-9]+$" % uid)
        check_eq(len(audit_lines(srv, "admin_command")), 1, "one audit line per admin command")

        r = srv.login("alice", PW, full=True)
        check_eq(r.status, 200, "login")
        body = r.json()
        tok, csrf = body["session_token"], body["csrf_token"]
        wait_audit(srv, "login", r"result=ok user=alice peer=127\.0\.0\.1$")

        check_eq(srv.login("alice", "wrong-" + PW, full=True).status, 401, "wrong password")
        wait_audit(srv, "login", r"result=failed user=alice known=true peer=127\.0\.0\.1$")
        ghost = "ghost-Hunter2-typed-here"
        check_eq(srv.login(ghost, PW, full=True).status, 401, "unknown user")
        wait_audit(srv, "login", r"result=failed user=- known=false peer=")
        check_eq(srv.login("alice", "wrong-again", full=True).status, 401, "second failure")
        check_eq(srv.login("alice", PW, full=True).status, 429, "throttled")
        wait_audit(srv, "login", r"result=throttled peer=127\.0\.0\.1 limit=user$")

        r = srv.request("POST", "/api/auth/login", {"username": "alice", "password": PW},
                        headers={"Origin": EVIL}, auth=False)
        check_eq(r.status, 403, "login from another Origin")
        wait_audit(srv, "origin_refused", r"user=- peer=127\.0\.0\.1 path=/api/auth/login "
                                          r"origin=http://evil\.example$")

        ck = {"Cookie": "sluice_session=" + tok}
        r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth"}, headers=ck)
        check_eq(r.status, 403, "cookie POST without X-CSRF-Token")
        wait_audit(srv, "csrf_refused", r"user=alice peer=127\.0\.0\.1 path=/api/chat/sessions origin=-$")

        out = ctl(srv, "keys", "create", "--user", "alice", "--label", "ci key")
        key = out.strip().splitlines()[-1]
        check(key.startswith("sk_"), "keys create printed %r" % out)
        kid = wait_audit(srv, "key_create", r"id=k_[0-9a-f]+ user=alice uid=%s$" % uid)[0]
        kid = re.search(r"id=(k_[0-9a-f]+)", kid).group(1)
        r = srv.request("GET", "/api/auth/session", headers={"Authorization": "Bearer " + key})
        check_eq(r.status, 200, "the API key works")
        ctl(srv, "keys", "revoke", kid)
        wait_audit(srv, "key_revoke", r"id=%s uid=%s$" % (kid, uid))

        r = srv.request("POST", "/api/auth/logout", headers={"Authorization": "Bearer " + tok})
        check_eq(r.status, 200, "logout")
        wait_audit(srv, "logout", r"user=alice$")

        ctl(srv, "users", "passwd", "alice", stdin=(PW2 + "\n").encode())
        wait_audit(srv, "user_passwd", r"user=alice uid=%s$" % uid)
        ctl(srv, "users", "del", "alice")
        wait_audit(srv, "user_del", r"user=alice uid=%s$" % uid)

        # Levels per process, live.
        check_eq(ctl(srv, "log", "level").split(), ["control", "info", "dataplane", "info"],
                 "log level")
        check_eq(ctl(srv, "log", "level", "dataplane", "debug").split(),
                 ["control", "info", "dataplane", "debug"], "log level dataplane debug")
        wait_audit(srv, "log_level", r"proc=dataplane level=debug by=control$", name="sluice-dataplane")
        ctl(srv, "log", "level", "control", "warn")
        wait_audit(srv, "log_level", r"proc=control level=warn uid=%s$" % uid)
        # At warn, control's INFO lines stop; audit lines do not.
        ctl(srv, "users", "add", "bob", "--role", "user", stdin=(PW + "\n").encode())
        wait_audit(srv, "user_add", r"user=bob uid=%s$" % uid)
        p = srv.sluicectl("log", "level", "control", "loud")
        check_eq(p.returncode, 1, "a bad level is refused")
        check(b"level must be debug, info, warn or error" in p.stderr, "refusal says why: %r" % p.stderr)
        p = srv.sluicectl("log", "level", "kernel", "info", "x")
        check_eq(p.returncode, 2, "a malformed log command")

        text = log_text(srv)
        for secret, what in ((PW, "password"), (PW2, "new password"), (tok, "session token"),
                             (csrf, "CSRF token"), (key, "API key"), (key[3:], "API key body"),
                             (ghost, "unknown user name")):
            check(secret not in text, "the %s appears in a log" % what)
    finally:
        srv.stop()


def test_json_lines(env):
    srv = env.fresh(default_user=False)
    srv.write_conf(srv.conf_text() + "\n[log]\nformat = json\nlevel = debug\n")
    try:
        srv.start()
        ctl(srv, "users", "add", "carol", "--role", "user", stdin=(PW + "\n").encode())
        check_eq(srv.login("carol", PW, full=True).status, 200, "login")
        check_eq(ctl(srv, "log", "level").split(), ["control", "debug", "dataplane", "debug"],
                 "levels from the file")
        ctl(srv, "log", "level", "dataplane", "error")
        deadline = time.monotonic() + 5
        while "log_level" not in log_text(srv, "sluice-dataplane") and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = set()
        for name in ("sluice-control", "sluice-dataplane"):
            lines = [ln for ln in log_text(srv, name).splitlines() if ln]
            check(lines, "%s logged nothing" % name)
            for ln in lines:
                try:
                    o = json.loads(ln)
                except ValueError:
                    raise harness.TestFailure("%s: not a JSON line: %r" % (name, ln))
                for k in ("ts", "level", "proc", "pid", "msg"):
                    check(k in o, "%s: line without %s: %r" % (name, k, ln))
                check_eq(o["proc"], name, "proc")
                if o.get("cat") == "audit":
                    check(isinstance(o.get("fields"), dict), "audit line without fields: %r" % ln)
                    seen.add((name, o["msg"], o["fields"].get("result", "")))
        for want in (("sluice-control", "login", "ok"), ("sluice-control", "user_add", ""),
                     ("sluice-control", "admin_command", ""), ("sluice-dataplane", "log_level", "")):
            check(want in seen, "no JSON line %r" % (want,))
        check(PW not in log_text(srv), "the password appears in a log")
    finally:
        srv.stop()


TESTS = [test_audit_lines, test_json_lines]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
