#!/usr/bin/env python3
"""Reload without restart (issue 11 item 2): sluicectl config show (secrets
redacted) and config reload; a reload changes the batching mode and an
allowed Origin while an SSE stream runs (the stream is unaffected), adds and
removes a backend, changes quotas ([limits.ROLE]) and the dataplane's
[limits]; a key that needs a restart is named in the refusal and
the running configuration stays as it was (config show proves it); SIGHUP
to either process takes the same path; certificates the dataplane could not
load refuse the reload in control, before anything changes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CurlSse, check, check_eq, check_message_events  # noqa: E402

NEW_ORIGIN = "http://new.example"
SECRET_HEADER = "org-Hunter2-header-value"
SECRET_KEY = "sk-upstream-Hunter2-key"
PROMPT = "tell me about reloads"


def ctl_json(srv, *args):
    p = srv.sluicectl("--json", *args)
    check_eq(p.returncode, 0, "sluicectl %s (stderr %r)" % (" ".join(args), p.stderr[-400:]))
    return json.loads(p.stdout.decode())


def show(srv):
    return ctl_json(srv, "config", "show")["config"]


def login_from(srv, origin):
    r = srv.request("POST", "/api/auth/login",
                    {"username": harness.DEFAULT_USER[0], "password": harness.DEFAULT_USER[1]},
                    headers={"Origin": origin}, auth=False)
    return r.status


def log_text(srv, name):
    out = []
    for path in srv.logs.get(name, []):
        with open(path, "rb") as f:
            out.append(f.read().decode("utf-8", "replace"))
    return "\n".join(out)


def wait_log(srv, name, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while text not in log_text(srv, name):
        check(time.monotonic() < deadline, "%s never logged %r; log tail:\n%s"
              % (name, text, log_text(srv, name)[-2500:]))
        time.sleep(0.05)


def test_reload(env):
    srv = env.fresh(env={"UP_KEY": SECRET_KEY},
                    backends=[("up", {"type": "openai", "url": "http://127.0.0.1:9",
                                      "api_key_env": "UP_KEY", "health_interval_ms": 0,
                                      "models": "up-model",
                                      "headers": "X-Org: %s | X-Team: t1" % SECRET_HEADER})])
    origin = "http://127.0.0.1:%d" % srv.port
    srv.auth = {"allowed_origins": origin}
    srv.write_conf()
    base_text = srv.conf_text()
    try:
        srv.start()
        conf = show(srv)
        check_eq(conf["batching"]["mode"], "adaptive", "config show: mode")
        check_eq(conf["auth"]["allowed_origins"], origin, "config show: allowed_origins")
        check_eq(conf["backend.up"]["api_key_env"], "UP_KEY", "config show: api_key_env")
        check_eq(conf["backend.up"]["headers"], "X-Org: <redacted> | X-Team: <redacted>",
                 "config show: headers")
        p = srv.sluicectl("config", "show")
        check_eq(p.returncode, 0, "config show as INI")
        ini = p.stdout.decode()
        check("[batching]\nmode = adaptive\n" in ini, "INI form: %r" % ini[:400])
        # What it prints is a file sluice reads again.
        again = os.path.join(srv.tmp, "shown.conf")
        with open(again, "w") as f:
            f.write(ini)
        p = subprocess.run([srv.binary("sluice-control"), "-c", again, "--check"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        check_eq((p.returncode, p.stdout), (0, b"config OK\n"), "config show output loads (%r)" % p.stderr)
        for text in (ini, json.dumps(conf)):
            check(SECRET_HEADER not in text and SECRET_KEY not in text, "config show leaks a secret")
        check_eq(login_from(srv, NEW_ORIGIN), 403, "login from an Origin not yet allowed")

        # A stream runs across the reload.
        sid = srv.create_session("synth-slow")
        c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
        try:
            check_eq(c.wait_head(), 200, "stream status")
            mid = srv.post_message(sid, PROMPT)
            first = c.next_event(10)
            while first is not None and first["type"] == ":comment":
                first = c.next_event(10)
            check(first is not None, "no event before the reload")
            events = [first]
            srv.auth = {"allowed_origins": origin + "," + NEW_ORIGIN}
            srv.batching = "off"
            srv.write_conf()
            a = ctl_json(srv, "config", "reload")
            check_eq(sorted(a["changed"]), ["[auth] allowed_origins", "[batching] mode"], "reload: changed")
            check_eq(a["dataplane"], "told", "reload: dataplane")
            wait_log(srv, "sluice-dataplane", "reload: [batching] mode changed")
            wait_log(srv, "sluice-dataplane", "audit config_reload result=ok changed=2 by=control")
            check_eq(show(srv)["batching"]["mode"], "off", "config show after reload: mode")
            check_eq(login_from(srv, NEW_ORIGIN), 200, "login from the newly allowed Origin")
            events += c.collect_message(mid, timeout=30)
            check_message_events(events, sid, mid, PROMPT, 40, model="synth-slow", sse=True)
            check(not c.errors, "SSE parse errors: %r" % c.errors)
        finally:
            c.close()

        # A key that needs a restart: refused whole, named, nothing changed.
        srv.workers = 2
        srv.batching = "adaptive"
        srv.write_conf()
        p = srv.sluicectl("config", "reload")
        check_eq(p.returncode, 1, "reload with a restart key")
        err = p.stderr.decode()
        check("[dataplane] workers" in err and "restart" in err and "nothing was changed" in err,
              "the refusal names the key: %r" % err)
        conf = show(srv)
        check_eq(conf["batching"]["mode"], "off", "mode after a refused reload")
        check_eq(conf["dataplane"]["workers"], "1", "workers after a refused reload")
        srv.procs["sluice-dataplane"].send_signal(signal.SIGHUP)
        wait_log(srv, "sluice-dataplane", "reload refused: [dataplane] workers, [dataplane] lcores need a restart")
        check(srv.procs["sluice-dataplane"].poll() is None, "dataplane still runs")

        # Backends follow the file; SIGHUP to control reloads too.
        srv.workers = 1
        srv.models = dict(harness.DEFAULT_MODELS, extra={"ttft_ms": 10, "tokens_per_s": 500,
                                                           "answer_tokens": 3})
        srv.write_conf()
        srv.procs["sluice-control"].send_signal(signal.SIGHUP)
        wait_log(srv, "sluice-control", "audit config_reload result=ok changed=2 dataplane=told uid=signal")
        conf = show(srv)
        check("backend.extra" in conf, "backend added by SIGHUP: %r" % sorted(conf))
        check_eq(conf["batching"]["mode"], "adaptive", "mode back to adaptive")
        b = ctl_json(srv, "backends", "list")
        check("extra" in [x["name"] for x in b["backends"]], "backends list after reload: %r" % b)
        sid2 = srv.create_session("extra")
        check(sid2, "a session on the new backend's model")
        srv.write_conf(base_text)
        a = ctl_json(srv, "config", "reload")
        check("[backend.extra]" in a["changed"], "reload removes the backend: %r" % a)
        deadline = time.monotonic() + 5
        while "extra" in [x["name"] for x in ctl_json(srv, "backends", "list")["backends"]]:
            check(time.monotonic() < deadline, "backend extra still listed after its removal")
            time.sleep(0.1)
        # Quotas ([limits.ROLE], control) and the dataplane's [limits] take the same path.
        before = ctl_json(srv, "limits", "show", "--user", harness.DEFAULT_USER[0])
        check(before["limits"]["messages_per_min"]["value"] != 7, "messages_per_min is not 7 yet")
        check("messages_per_min = 0\n" in base_text and "[limits]\n" not in base_text, "harness limits")
        srv.write_conf(base_text.replace("messages_per_min = 0\n", "messages_per_min = 7\n")
                       + "\n[limits]\nconns_per_ip = 100\n")
        a = ctl_json(srv, "config", "reload")
        check_eq(sorted(a["changed"]), ["[limits.user] messages_per_min", "[limits] conns_per_ip"],
                 "reload of limits: changed")
        after = ctl_json(srv, "limits", "show", "--user", harness.DEFAULT_USER[0])
        check_eq(after["limits"]["messages_per_min"]["value"], 7, "messages_per_min in force after reload")
        check_eq(show(srv)["limits"]["conns_per_ip"], "100", "config show: conns_per_ip")
        wait_log(srv, "sluice-dataplane", "reload: [limits] conns_per_ip changed")
        srv.write_conf(base_text)
        ctl_json(srv, "config", "reload")
        # A file that does not load changes nothing either.
        srv.write_conf(base_text + "\n[batching]\nmode = sometimes\n")
        p = srv.sluicectl("config", "reload")
        check_eq(p.returncode, 1, "reload of a broken file")
        check("sluice.conf:" in p.stderr.decode(), "the refusal names the file: %r" % p.stderr)
        for name in ("sluice-control", "sluice-dataplane"):
            text = log_text(srv, name)
            check(SECRET_KEY not in text and SECRET_HEADER not in text, "%s logged a secret" % name)
    finally:
        srv.stop()


def test_reload_refuses_what_the_dataplane_would(env):
    """A reload whose certificates the dataplane could not load (here a key
    file readable by others) is refused whole by control before anything
    changes, naming the certificate: no key is applied in one process and
    refused in the other."""
    certs = tempfile.mkdtemp(prefix="sluice-reload-certs-")
    chain, key, ca = harness.make_test_cert(certs, "main")
    srv = env.fresh(tls={"certs": [("main", chain, key)], "ca": ca})
    try:
        srv.start()
        check_eq(show(srv)["batching"]["mode"], "adaptive", "mode at start")
        srv.batching = "off"
        srv.write_conf()
        os.chmod(key, 0o644)
        p = srv.sluicectl("config", "reload")
        check_eq(p.returncode, 1, "reload with a key readable by others")
        err = p.stderr.decode()
        check("[cert.main]" in err and "accessible by group or others" in err,
              "the refusal names the certificate and why: %r" % err)
        check_eq(show(srv)["batching"]["mode"], "adaptive", "nothing applied in control")
        check("reload: [batching] mode changed" not in log_text(srv, "sluice-dataplane"),
              "the dataplane was not asked to reload")
        os.chmod(key, 0o600)
        a = ctl_json(srv, "config", "reload")
        check("[batching] mode" in a["changed"], "the same file once the key is private: %r" % a)
        check_eq(show(srv)["batching"]["mode"], "off", "mode after the reload")
        wait_log(srv, "sluice-dataplane", "reload: [batching] mode changed")
    finally:
        srv.stop()
        shutil.rmtree(certs, ignore_errors=True)


TESTS = [test_reload, test_reload_refuses_what_the_dataplane_would]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
