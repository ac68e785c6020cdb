#!/usr/bin/python3
"""The web UI in a real browser: each test starts its own sluice pair (free
port, private channel; the page's origin allowed), creates a user and an
admin, and runs one scenario of tests/browser/ui_test.mjs: headless Debian
chromium driven by playwright-core from ui/node_modules (installed by
firmware-config/setup-deps.sh; no browser is downloaded). Screenshots land
in BUILD/browser-shots/. Any console error, uncaught exception, CSP
violation or request to another origin fails the scenario."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import harness
from harness import check

USER = ("bea", "bea-user-password")
ADMIN = ("ada", "ada-admin-password")
# Beside the harness's models: 20 tokens at 10/s, so a replay at 4x is short
# and still measurably faster than the original.
MODELS = dict(harness.DEFAULT_MODELS, **{"synth-replay": {"ttft_ms": 50, "tokens_per_s": 10,
                                                          "answer_tokens": 20}})
PROMPTS = {"slow": "tell me about rivers", "fast": "a quick one", "reload": "long answer please",
           "replay": "record this", "drop": "keep talking"}
TOKENS = {"slow": 40, "fast": 24, "reload": 40, "replay": 20, "drop": 40}


def restart_dataplane(srv):
    """A network drop for every client: the dataplane dies and comes back
    on the same port; control and the running answers go on."""
    srv.kill("sluice-dataplane")
    time.sleep(1.5)
    srv.start_dataplane()
    srv.wait_ready(timeout=10)


DRIVER = {"restart-dataplane": restart_dataplane}


def run_scenario(env, name):
    node = shutil.which("node")
    check(node, "node is not installed: run firmware-config/setup-deps.sh")
    check(os.access("/usr/bin/chromium", os.X_OK),
          "/usr/bin/chromium is missing: run firmware-config/setup-deps.sh")
    pw = os.path.join(env.source, "ui", "node_modules", "playwright-core")
    check(os.path.isdir(pw), "%s is missing: run firmware-config/setup-deps.sh (npm ci in ui/)" % pw)
    srv = env.fresh(models=MODELS)
    srv.auth["allowed_origins"] = srv.base
    srv.write_conf()
    # Over TLS (SLUICE_TEST_TLS=1) the browser trusts the test CA through its
    # NSS database, node's own fetch through NODE_EXTRA_CA_CERTS.
    home = harness.browser_home_with_ca(srv.tls["ca"]) if srv.tls else None
    shots = os.path.join(env.build, "browser-shots")
    os.makedirs(shots, exist_ok=True)
    try:
        srv.start()
        srv.add_user(*USER, role="user")
        srv.add_user(*ADMIN, role="admin")
        cfg = {
            "base": srv.base,
            "source": env.source,
            "shots": shots,
            "user": USER,
            "admin": ADMIN,
            "userToken": srv.login(*USER),
            "prompts": PROMPTS,
            "tokens": {p: harness.expected_tokens(p, TOKENS[k], env.source) for k, p in PROMPTS.items()},
        }
        envv = dict(os.environ, SLUICE_BROWSER=json.dumps(cfg), PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
        if home:
            envv.update(HOME=home, NODE_EXTRA_CA_CERTS=srv.tls["ca"])
        p = subprocess.Popen([node, os.path.join(env.source, "tests", "browser", "ui_test.mjs"), name],
                             env=envv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        timer = threading.Timer(150, p.kill)
        timer.start()
        lines = []
        try:
            # The scenario may ask for something done to the servers.
            for raw in p.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if line.startswith("SIGNAL "):
                    what = line[7:]
                    DRIVER[what](srv)
                    p.stdin.write(("done %s\n" % what).encode())
                    p.stdin.flush()
            rc = p.wait()
        finally:
            timer.cancel()
        out = "\n".join(lines).strip()
        last = lines[-1] if lines else ""
        check(rc == 0 and last == "ok " + name, "scenario %s (exit %d):\n%s" % (name, rc, out[-4000:]))
        for line in out.splitlines():
            if (line.startswith("info ") and line != "info {}") or line.startswith("tolerated: "):
                print("     %s: %s" % (name, line.replace("info ", "", 1)), flush=True)
    finally:
        srv.stop()
        if home:
            shutil.rmtree(home, ignore_errors=True)


def test_chat_stream_cancel(env):
    run_scenario(env, "chat_stream_cancel")


def test_chat_reload_resume(env):
    run_scenario(env, "chat_reload_resume")


def test_chat_network_drop(env):
    run_scenario(env, "chat_network_drop")


def test_chat_export_replay(env):
    run_scenario(env, "chat_export_replay")


def test_admin_dashboard(env):
    run_scenario(env, "admin_dashboard")


TESTS = [test_chat_stream_cancel, test_chat_reload_resume, test_chat_network_drop,
         test_chat_export_replay, test_admin_dashboard]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
