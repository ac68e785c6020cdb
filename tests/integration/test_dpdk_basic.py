#!/usr/bin/python3
"""transport = dpdk against Linux: sluice-dataplane drives net_af_packet on one
end of a veth pair; the other end sits in a private network namespace
(sluice-t<pid>, 10.77.0.1/24) where ping, curl, python3-websockets and the
harness's HTTP client run. sluice owns 10.77.0.2 through its own stack; the
outer veth end has no address, so Linux's TCP never answers for it.

Needs root (namespaces, raw sockets): exits 77 (skipped) otherwise, and when
sluice-dataplane was built without DPDK. Everything it creates (namespace,
veth, processes, EAL runtime files) is removed even when a check fails.
"""

import ctypes
import glob
import os
import shutil
import subprocess
import sys
import threading

import harness
from harness import check, check_eq, check_message_events

SKIP = 77
NS = "sluice-t%d" % os.getpid()
VETH_OUT = "slt%da" % (os.getpid() % 10000000)
VETH_IN = "slt%db" % (os.getpid() % 10000000)
PEER_IP = "10.77.0.1"
SLUICE_IP = "10.77.0.2"
PORT = 8080
CLONE_NEWNET = 0x40000000
NOHUGE_ARGS = "--no-huge -m 512 --no-pci"
HUGE_ARGS = "-m 128 --no-pci"


def sh(*cmd, check_rc=True, timeout=20):
    p = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise harness.TestFailure("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                                       p.stderr.decode("utf-8", "replace")[-500:]))
    return p


def in_ns(*cmd, timeout=20):
    return sh("ip", "netns", "exec", NS, *cmd, check_rc=False, timeout=timeout)


def no_offloads(prefix, dev):
    """af_packet must see complete frames with real checksums: no GSO/TSO
    super-frames and no checksums left to a NIC that does not exist."""
    p = sh(*(prefix + ["ethtool", "-K", dev, "rx", "off", "tx", "off", "tso", "off", "gso", "off",
                       "gro", "off"]), check_rc=False)
    if p.returncode != 0:
        # Some of the features may be fixed; what matters is tx checksumming and segmentation.
        sh(*(prefix + ["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off"]))


def netns_up():
    netns_down()
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VETH_OUT, "type", "veth", "peer", "name", VETH_IN)
    sh("ip", "link", "set", VETH_IN, "netns", NS)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", PEER_IP + "/24", "dev", VETH_IN)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", VETH_IN, "up")
    sh("ip", "link", "set", VETH_OUT, "up")
    # The outer end carries sluice's frames only: no IPv6 chatter, and never
    # forwarded by this host's kernel even when forwarding is on elsewhere.
    for key in ("net.ipv6.conf.%s.disable_ipv6=1" % VETH_OUT,
                "net.ipv4.conf.%s.forwarding=0" % VETH_OUT):
        sh("sysctl", "-qw", key, check_rc=False)
    no_offloads([], VETH_OUT)
    no_offloads(["ip", "netns", "exec", NS], VETH_IN)


def netns_down():
    sh("ip", "link", "del", VETH_OUT, check_rc=False)
    sh("ip", "netns", "del", NS, check_rc=False)


def ns_call(fn, *args, **kw):
    """Runs fn in a thread that joined the namespace: sockets it opens live
    there (setns(CLONE_NEWNET) changes the calling thread only)."""
    out = {}

    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/run/netns/" + NS, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                out["err"] = OSError(ctypes.get_errno(), "setns " + NS)
                return
        finally:
            os.close(fd)
        try:
            out["ret"] = fn(*args, **kw)
        except BaseException as e:  # handed to the caller's thread
            out["err"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(120)
    check(not t.is_alive(), "client call in namespace %s did not finish in 120 s" % NS)
    if "err" in out:
        raise out["err"]
    return out.get("ret")


class DpdkSluice(harness.Sluice):
    """A harness server whose dataplane runs transport = dpdk on the veth;
    its HTTP helpers run inside the namespace."""

    def __init__(self, build, eal_args=NOHUGE_ARGS, workers=1, **kw):
        self.eal_args = eal_args
        self.qpairs = workers
        super().__init__(build, workers=workers, **kw)
        self.port = PORT
        self.host = SLUICE_IP
        self.write_conf()

    def conf_text(self):
        text = super().conf_text()
        lcores = "1" if self.qpairs == 1 else "0-%d" % (self.qpairs - 1)
        dev = "net_af_packet0,iface=%s" % VETH_OUT
        if self.qpairs > 1:
            dev += ",qpairs=%d" % self.qpairs
        text = text.replace("transport = kernel", "transport = dpdk")
        text = text.replace("listen = 127.0.0.1:%d" % self.port,
                            "listen = %s:%d\nws_echo = true\nlcores = %s\neal_args = %s"
                            % (SLUICE_IP, PORT, lcores, self.eal_args))
        return text + "\n[port.0]\ndevice = %s\nipv4 = %s/24\n" % (dev, SLUICE_IP)

    def request(self, *args, **kw):
        return ns_call(harness.Sluice.request, self, *args, **kw)

    def stop(self):
        super().stop()
        # A dataplane that was killed leaves EAL's runtime directory behind.
        for d in glob.glob("/var/run/dpdk/sluice-*"):
            if not glob.glob(os.path.join(d, "mp_socket*")):
                shutil.rmtree(d, ignore_errors=True)


def server(env, **kw):
    """The running dpdk server of this configuration, started when needed.
    Only one may run at a time: they would share the veth and the address."""
    key = repr(("dpdk", sorted(kw.items())))
    s = env._servers.get(key)
    if s is not None and all(p.poll() is None for p in s.procs.values()):
        env.used.append(s)
        return s
    for k in list(env._servers):
        env._servers.pop(k).stop()
    s = DpdkSluice(env.build, **kw)
    env.every.append(s)
    env.used.append(s)
    try:
        s.start(ready_timeout=30)
    except BaseException:
        s.stop()
        raise
    env._servers[key] = s
    return s


# ---- tests -------------------------------------------------------------

def test_ping(env):
    server(env)
    p = in_ns("ping", "-c", "3", "-i", "0.2", "-W", "2", SLUICE_IP)
    out = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 0 and " 3 received" in out, "ping %s from %s: %s" % (SLUICE_IP, NS, out))


def curl(path, *extra):
    p = in_ns("curl", "-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}", *extra,
              "http://%s:%d%s" % (SLUICE_IP, PORT, path), timeout=30)
    check(p.returncode == 0, "curl %s: exit %d: %s" % (path, p.returncode, p.stderr[-300:]))
    body, _, code = p.stdout.decode("utf-8", "replace").rpartition("\n")
    return int(code), body


def test_health_ready_metrics(env):
    server(env)
    code, body = curl("/healthz")
    check_eq((code, body), (200, '{"status":"ok"}'), "GET /healthz over dpdk")
    code, body = curl("/readyz")
    check_eq(code, 200, "GET /readyz over dpdk (body %r)" % body)
    code, body = curl("/metrics")
    check_eq(code, 200, "GET /metrics over dpdk")
    check("sluice_connections_accepted_total" in body, "/metrics lacks connection counters: %r"
          % body[:300])
    code, _ = curl("/no-such-page")
    check_eq(code, 404, "GET /no-such-page over dpdk")


WS_CLIENT = r"""
import asyncio, hashlib, os, sys, websockets
async def main():
    url = sys.argv[1]
    async with websockets.connect(url, max_size=None, ping_interval=None, open_timeout=10) as ws:
        await ws.send("hello over dpdk")
        assert await asyncio.wait_for(ws.recv(), 10) == "hello over dpdk"
        rnd = __import__("random").Random(7)
        for size in (1, 1460, 1461, 20000, 60000):
            data = bytes(rnd.getrandbits(8) for _ in range(size))
            await ws.send(data)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), size
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, 10)
        await ws.close()
        assert ws.close_code == 1000, ws.close_code
    print("ws ok")
asyncio.run(main())
"""


def test_ws_echo(env):
    server(env)
    p = in_ns("/usr/bin/python3", "-c", WS_CLIENT, "ws://%s:%d/ws/echo" % (SLUICE_IP, PORT),
              timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 0 and "ws ok" in out, "WebSocket echo over dpdk: exit %d: %s %s"
          % (p.returncode, out, p.stderr.decode("utf-8", "replace")[-800:]))


def test_sse_flow(env):
    srv = server(env)
    sid = srv.create_session("synth")
    prompt = "stream me over dpdk"
    harness.CLIENT_PREFIX[:] = ["ip", "netns", "exec", NS]
    try:
        c = harness.CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
        try:
            check_eq(c.wait_head(), 200, "GET /api/chat/stream/%s status over dpdk" % sid)
            mid = srv.post_message(sid, prompt)
            ev = c.collect_message(mid)
            check_message_events(ev, sid, mid, prompt, 24, model="synth", sse=True)
        finally:
            c.close()
    finally:
        harness.CLIENT_PREFIX[:] = []


def test_two_workers(env):
    """qpairs=2: two workers on one veth, each with its own queue pair."""
    server(env, workers=2)
    for i in range(4):
        code, body = curl("/healthz")
        check_eq((code, body), (200, '{"status":"ok"}'), "GET /healthz #%d with 2 workers" % i)
    p = in_ns("ping", "-c", "2", "-i", "0.2", "-W", "2", SLUICE_IP)
    check(p.returncode == 0, "ping with 2 workers: %s" % p.stdout.decode("utf-8", "replace"))


def hugepages_free():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_hugepages(env):
    """The same path with EAL memory from 2 MiB hugepages, when reserved
    (firmware-config/setup-hugepages.sh); a note otherwise."""
    if hugepages_free() < 96 or not os.path.ismount("/dev/hugepages"):
        print("note: no free hugepages mounted on /dev/hugepages: --no-huge only", flush=True)
        return
    srv = server(env, eal_args=HUGE_ARGS)
    code, body = curl("/healthz")
    check_eq((code, body), (200, '{"status":"ok"}'), "GET /healthz on hugepages")
    srv.stop()


def main():
    if os.geteuid() != 0:
        print("skip: needs root (network namespaces, AF_PACKET)")
        return SKIP
    args = harness.parse_args()
    dp = os.path.join(os.path.abspath(args.build), "sluice-dataplane")
    try:
        with open(dp, "rb") as f:
            if b"rte_eal_init" not in f.read():
                print("skip: %s was built without DPDK" % dp)
                return SKIP
    except OSError as e:
        print("FAIL: %s: %s" % (dp, e))
        return 1
    for tool in ("ip", "ethtool", "ping", "curl"):
        if shutil.which(tool) is None:
            print("skip: %s not installed (firmware-config/setup-deps.sh)" % tool)
            return SKIP
    try:
        netns_up()
        return harness.run([test_ping, test_health_ready_metrics, test_ws_echo, test_sse_flow,
                            test_two_workers, test_hugepages])
    finally:
        netns_down()


if __name__ == "__main__":
    sys.exit(main())
