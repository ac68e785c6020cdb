#!/usr/bin/python3
"""testssl.sh (Debian's `testssl`) against a TLS listener of this build, by
hand: it takes about 4 minutes in full (1m40 with --fast), too long for CI.

    /usr/bin/python3 tests/integration/testssl_check.py --build build [--fast]

Starts a server with tls = on (a certificate of make-test-cert.sh, HSTS on),
runs testssl with a JSON report and fails on any finding rated MEDIUM, HIGH
or CRITICAL, on an offered protocol older than TLS 1.2 and on a cipher
without forward secrecy or AEAD. --fast runs protocols, cipher categories
and vulnerabilities only (-p -s -U). Exits 77 when testssl is missing.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import harness
from harness import check

FAST = "--fast" in sys.argv
if FAST:
    sys.argv.remove("--fast")


def test_testssl(env):
    d = tempfile.mkdtemp(prefix="sluice-testssl-")
    try:
        chain, key, ca = harness.make_test_cert(d)
        srv = env.server(tls={"certs": [("main", chain, key)], "ca": ca,
                              "opts": {"hsts_max_age_s": 31536000}})
        report = os.path.join(d, "report.json")
        cmd = harness.CLIENT_PREFIX + [
            "testssl", "--quiet", "--color", "0", "--warnings", "batch", "--ip", "127.0.0.1",
            "--add-ca", ca, "--jsonfile", report] + (["-p", "-s", "-U"] if FAST else []) + [
            "https://localhost:%d/" % srv.port]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
        out = p.stdout.decode("utf-8", "replace")
        print(out, flush=True)
        with open(report, encoding="utf-8") as f:
            findings = json.load(f)
        bad = [x for x in findings if x.get("severity") in ("MEDIUM", "HIGH", "CRITICAL")]
        check(not bad, "testssl findings: %r" % bad)
        for x in findings:
            if x["id"] in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
                check(x["finding"].startswith("not offered"), "%s: %s" % (x["id"], x["finding"]))
            if x["id"] in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT",
                           "cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
                check(x["finding"].startswith("not offered"), "%s: %s" % (x["id"], x["finding"]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    if shutil.which("testssl") is None:
        print("skip: testssl not installed (firmware-config/setup-deps.sh)")
        sys.exit(77)
    sys.exit(harness.run([test_testssl]))
