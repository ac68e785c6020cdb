#!/usr/bin/python3
"""The README's first command: firmware-config/quickstart.sh --demo starts the
appliance from firmware-config/sluice.conf (here a copy moved to a free port and
private paths), creates the demo user with sluicectl, logs in, streams one
answer with curl and stops. Its answer must be the synthetic backend's."""

import os
import re
import subprocess
import sys
import tempfile

import harness
from harness import check, check_eq


def test_quickstart_demo(env):
    src = os.path.join(env.args.source, "firmware-config", "sluice.conf")
    with open(src, encoding="utf-8") as f:
        text = f.read()
    tmp = tempfile.mkdtemp(prefix="sluice-qs-")
    port = harness.free_port()
    chan = "/dev/shm/sluice-qs-%d" % os.getpid()
    subst = {
        r"^listen = .*$": "listen = 127.0.0.1:%d" % port,
        r"^path = /dev/shm/.*$": "path = " + chan,
        r"^admin_socket = .*$": "admin_socket = %s/admin.sock" % tmp,
        r"^store = .*$": "store = %s/store" % tmp,
    }
    for pat, rep in subst.items():
        text, n = re.subn(pat, rep, text, count=1, flags=re.M)
        check_eq(n, 1, "firmware-config/sluice.conf has a line matching %r" % pat)
    conf = os.path.join(tmp, "sluice.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        p = subprocess.run(["bash", os.path.join(env.args.source, "firmware-config", "quickstart.sh"),
                            "--demo", "--skip-deps", "--skip-build", "--build-dir", env.args.build,
                            "--conf", conf],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        out = p.stdout.decode("utf-8", "replace")
        check_eq(p.returncode, 0, "quickstart.sh --demo exit status (output tail %r)" % out[-1500:])
        check("TOKEN=" in out and "Authorization: Bearer" in out,
              "quickstart prints how to stream with a token: %r" % out[-1500:])
        check("(32 tokens in" in out, "the demo streamed the 32-token answer: %r" % out[-800:])
        want = harness.expected_answer("Hello, sluice! Tell me something.", 32)
        check(want in out, "the demo's answer is the synthetic backend's %r" % want)
    finally:
        for suffix in ["", ".bell-c", ".bell-0", ".bell-1"]:
            try:
                os.unlink(chan + suffix)
            except FileNotFoundError:
                pass


if __name__ == "__main__":
    sys.exit(harness.run([test_quickstart_demo]))
