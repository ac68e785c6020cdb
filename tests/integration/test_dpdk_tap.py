#!/usr/bin/python3
"""transport = dpdk on a TAP device, the one-machine demo of
firmware-config/sluice-tap.conf: DPDK's net_tap creates the interface, the
host keeps it in its own (root) namespace with the .1 address, and sluice's
own stack answers as .2. Linux is the client: ping, curl and http.client run
on the host itself.

The TAP path differs from the veth one (test_dpdk_basic.py) where it broke
before: net_tap gives its kernel interface the port's own MAC address, and it
offers TX checksum offload (done in software by the driver), so frames leave
with checksums filled in by the device, or not, per protocol.

Needs root (TAP devices): exits 77 (skipped) otherwise, and when
sluice-dataplane was built without DPDK. The interface, processes and EAL
runtime files go away even when a check fails.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import harness
from harness import check, check_eq, check_message_events

SKIP = 77
PID = os.getpid()
# A private interface name and /24 per run, so a demo on sluice0 /
# 10.99.0.0/24 or another test run on this machine is never disturbed.
TAP = "sltap%d" % (PID % 1000000)
NET = "10.98.%d" % (PID % 250 + 1)
HOST_IP = NET + ".1"
SLUICE_IP = NET + ".2"
EAL_ARGS = "--no-huge -m 512 --no-pci"


def sh(*cmd, check_rc=True, timeout=30):
    p = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise harness.TestFailure("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                                       p.stderr.decode("utf-8", "replace")[-500:]))
    return p


def link_mac(dev):
    with open("/sys/class/net/%s/address" % dev, encoding="ascii") as f:
        return f.read().strip().lower()


class TapSluice(harness.Sluice):
    """A harness server whose dataplane creates the TAP; start() gives the
    host side its address once the interface exists."""

    def start(self, ready_timeout=20.0):
        self.host = SLUICE_IP
        self.start_control()
        dp = self.start_dataplane()
        deadline = time.monotonic() + ready_timeout
        while not os.path.exists("/sys/class/net/" + TAP):
            if dp.poll() is not None:
                raise harness.TestFailure("sluice-dataplane exited with status %s before "
                                          "creating %s" % (dp.returncode, TAP))
            check(time.monotonic() < deadline, "%s did not appear within %.0f s"
                  % (TAP, ready_timeout))
            time.sleep(0.1)
        # Only sluice's frames and the test's on the interface: no IPv6 chatter.
        sh("sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % TAP, check_rc=False)
        sh("ip", "addr", "add", HOST_IP + "/24", "dev", TAP)
        sh("ip", "link", "set", TAP, "up")
        self.wait_ready(max(1.0, deadline - time.monotonic()))
        self.add_user(*harness.DEFAULT_USER, role="user")
        self.token = self.login(*harness.DEFAULT_USER)
        return self

    def dataplane_log(self):
        out = []
        for log in self.logs.get("sluice-dataplane", []):
            try:
                with open(log, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(out)


def server(env):
    """The one TAP server of this run, restarted when one of its processes died."""
    s = env._servers.get("tap")
    if s is not None and all(p.poll() is None for p in s.procs.values()):
        env.used.append(s)
        return s
    env.close()
    s = TapSluice(env.build)
    env.every.append(s)
    env.used.append(s)
    try:
        s.start()
    except BaseException:
        s.stop()
        raise
    env._servers["tap"] = s
    return s


# ---- tests -------------------------------------------------------------

def test_port_is_tap(env):
    """The port is net_tap and the stack's MAC is not the host interface's:
    the host would otherwise ARP from "our" address and never get a reply."""
    srv = server(env)
    log = srv.dataplane_log()
    m = re.search(r"driver net_tap\): MAC ([0-9A-Fa-f:]{17}),.*checksum offload rx (\w+) tx (\w+)",
                  log)
    check(m is not None, "no net_tap port line in the dataplane's log: %r" % log[-1500:])
    stack_mac = m.group(1).lower()
    check(stack_mac != link_mac(TAP), "the stack answers with %s, the MAC of %s itself"
          % (stack_mac, TAP))
    if m.group(3) != "on":
        print("note: net_tap offers no TX checksum offload here; software sums only", flush=True)


def test_ping(env):
    server(env)
    for size in ("56", "1472"):
        p = sh("ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", size, SLUICE_IP, check_rc=False)
        out = p.stdout.decode("utf-8", "replace")
        check(p.returncode == 0 and " 3 received" in out, "ping -s %s %s from the host: %s"
              % (size, SLUICE_IP, out))
    p = sh("ip", "neigh", "show", SLUICE_IP, "dev", TAP)
    neigh = p.stdout.decode("utf-8", "replace")
    check("lladdr" in neigh and link_mac(TAP) not in neigh.lower(),
          "host's neighbour entry for %s: %r (%s is %s)" % (SLUICE_IP, neigh, TAP, link_mac(TAP)))


def curl(srv, path):
    p = sh("curl", "-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}",
           "%s%s" % (srv.base, path), check_rc=False)
    check(p.returncode == 0, "curl %s: exit %d: %s" % (path, p.returncode, p.stderr[-300:]))
    body, _, code = p.stdout.decode("utf-8", "replace").rpartition("\n")
    return int(code), body


def test_health_ready(env):
    srv = server(env)
    check_eq(curl(srv, "/healthz"), (200, '{"status":"ok"}'), "curl /healthz over the TAP")
    code, body = curl(srv, "/readyz")
    check_eq(code, 200, "curl /readyz over the TAP (body %r)" % body)
    r = srv.request("GET", "/metrics", auth=False)
    check_eq(r.status, 200, "GET /metrics over the TAP")
    check("sluice_connections_accepted_total" in r.body.decode("utf-8", "replace"),
          "/metrics lacks connection counters")


def stream_one(srv, headers, model, prompt, n_tokens):
    sid = srv.create_session(model)
    c = harness.CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=headers)
    try:
        check_eq(c.wait_head(), 200, "GET /api/chat/stream/%s status over the TAP" % sid)
        mid = srv.post_message(sid, prompt)
        ev = c.collect_message(mid, timeout=60)
        check_message_events(ev, sid, mid, prompt, n_tokens, model=model, sse=True)
    finally:
        c.close()


def test_login_and_sse(env):
    """A user logs in over the TAP and streams whole answers; the long one
    fills full-sized segments whose TCP sums the device completes."""
    srv = server(env)
    srv.add_user("demo", "demo-password-1")
    tok = srv.login("demo", "demo-password-1")
    srv.token = tok
    stream_one(srv, srv.auth_headers(tok), "synth", "hello over the tap", 24)
    stream_one(srv, srv.auth_headers(tok), "synth-long", "a long answer over the tap please", 2000)


def main():
    if os.geteuid() != 0:
        print("skip: needs root (TAP devices)")
        return SKIP
    args = harness.parse_args()
    why = harness.dpdk_unavailable(os.path.abspath(args.build))
    if why and "needs root" not in why and " not installed" not in why:
        print("skip: %s" % why)
        return SKIP
    for tool in ("ip", "ping", "curl", "sysctl"):
        if shutil.which(tool) is None:
            print("skip: %s not installed (firmware-config/setup-deps.sh)" % tool)
            return SKIP
    if not os.path.exists("/dev/net/tun"):
        print("skip: no /dev/net/tun")
        return SKIP
    if os.path.exists("/sys/class/net/" + TAP):
        print("FAIL: interface %s already exists" % TAP)
        return 1
    harness.DPDK = {"ip": SLUICE_IP, "device": "net_tap0,iface=%s" % TAP, "eal_args": EAL_ARGS}
    try:
        return harness.run([test_port_is_tap, test_ping, test_health_ready, test_login_and_sse])
    finally:
        harness.DPDK = None
        harness.dpdk_clean_runtime()
        # The dataplane's exit removes the TAP; a leftover means it hung.
        sh("ip", "link", "del", TAP, check_rc=False)


if __name__ == "__main__":
    sys.exit(main())
