#!/usr/bin/python3
"""Installing as a service (issue 11 item 5): firmware-config/install.sh
--no-system writes the programs, the configuration (store and admin socket
moved to /var/lib/sluice and /run/sluice), the two systemd units, the docs
pages and the bash completion; `systemd-analyze verify` accepts the units
with no complaint about them; the installed configuration passes --check;
--help of every program exits 0 with its usage on stdout; the completion,
sourced in bash, completes commands and subcommands.

Exits 77 (skipped) only when systemd-analyze is not installed (Debian's
`systemd` package provides it)."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

PROGRAMS = ["sluice-dataplane", "sluice-control", "sluicectl", "sluice-bench"]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                          universal_newlines=True, **kw)


def complete(comp, words, cword):
    """COMPREPLY of _sluicectl for COMP_WORDS=words, COMP_CWORD=cword."""
    script = ("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _sluicectl; echo \"${COMPREPLY[*]}\""
              % (comp, " ".join("'%s'" % w for w in words), cword))
    p = run(["bash", "--norc", "--noprofile", "-c", script])
    if p.returncode != 0:
        fail("completion for %r: exit %d, stderr %r" % (words, p.returncode, p.stderr))
    return p.stdout.split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    build = os.path.abspath(a.build)

    for prog in PROGRAMS:
        p = run([os.path.join(build, prog), "--help"])
        if p.returncode != 0 or not p.stdout.startswith("usage: " + prog):
            fail("%s --help: exit %d, stdout %r, stderr %r" % (prog, p.returncode, p.stdout[:200], p.stderr[:200]))
        if not os.path.exists(os.path.join(a.source, "docs", "man", prog + ".md")):
            fail("no docs page docs/man/%s.md" % prog)

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("SKIP: systemd-analyze is not installed (Debian package systemd)")
        sys.exit(77)

    tmp = tempfile.mkdtemp(prefix="sluice-install-")
    try:
        d = {k: os.path.join(tmp, k) for k in ("usr", "etc", "units", "comp")}
        p = run([os.path.join(a.source, "firmware-config", "install.sh"), "--no-system", "--build", build,
                 "--prefix", d["usr"], "--etc", d["etc"], "--unitdir", d["units"], "--completions", d["comp"]])
        if p.returncode != 0:
            fail("install.sh: exit %d, stdout %r, stderr %r" % (p.returncode, p.stdout, p.stderr))
        for prog in PROGRAMS:
            if not os.access(os.path.join(d["usr"], "bin", prog), os.X_OK):
                fail("install.sh did not install %s" % prog)
            if not os.path.exists(os.path.join(d["usr"], "share", "doc", "sluice", "man", prog + ".md")):
                fail("install.sh did not install the docs page of %s" % prog)
        conf = os.path.join(d["etc"], "sluice.conf")
        text = open(conf).read()
        for line in ("store = /var/lib/sluice/store", "admin_socket = /run/sluice/admin.sock"):
            if line not in text.splitlines():
                fail("the installed configuration lacks %r" % line)
        p = run([os.path.join(d["usr"], "bin", "sluice-control"), "-c", conf, "--check"])
        if p.returncode != 0:
            fail("the installed configuration: --check exit %d: %s" % (p.returncode, p.stderr))

        units = [os.path.join(d["units"], u) for u in ("sluice-control.service", "sluice-dataplane.service")]
        for u in units:
            body = open(u).read()
            if "@" in body.replace("$MAINPID", ""):
                fail("%s still has a placeholder" % u)
            for want in ("User=sluice", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet="):
                if want not in body:
                    fail("%s lacks %s" % (u, want))
        p = run([analyze, "verify"] + units)
        ours = [l for l in (p.stdout + p.stderr).splitlines() if "sluice" in l]
        if p.returncode != 0 or ours:
            fail("systemd-analyze verify: exit %d:\n%s" % (p.returncode, "\n".join(ours) or p.stderr))
        print("ok   systemd-analyze verify: both units")

        comp = os.path.join(d["comp"], "sluicectl")
        checks = [
            (["sluicectl", "us"], 1, ["users", "usage"]),
            (["sluicectl", "-c", "/etc/sluice/sluice.conf", "dr"], 3, ["drain"]),
            (["sluicectl", "backends", "d"], 2, ["drain"]),
            (["sluicectl", "users", "add", "bob", "--role", ""], 5, ["admin", "user"]),
            (["sluicectl", "sessions", "list", "--l"], 3, ["--limit"]),
            (["sluicectl", "limits", "s"], 2, ["set", "show"]),
        ]
        for words, cword, want in checks:
            got = sorted(complete(comp, words, cword))
            if got != sorted(want):
                fail("completion of %r: %r, expected %r" % (words, got, want))
        print("ok   bash completion of sluicectl")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok   --help of %s; install.sh --no-system" % ", ".join(PROGRAMS))


if __name__ == "__main__":
    main()
