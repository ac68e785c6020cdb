#!/usr/bin/python3
"""transport = dpdk at scale, Linux as the client (harness.DpdkNet: a veth
pair, sluice-dataplane on net_af_packet with qpairs=2 in the root namespace,
this process and its clients in the client namespace, 10.77.0.1):

  (a) two workers: connections spread over both (X-Sluice-Worker), and every
      request of a connection is answered by the worker `sluicectl conns`
      lists for that connection's 4-tuple;
  (b) 10,000 concurrent keep-alive connections opened and held, a request
      answered on each, /metrics counting them all active, then closed and
      gone within 30 s;
  (b') the same with 4,000 connections while a busy loop pinned to the last
      CPU keeps the other core busy (bounded, killed at the end): a worker
      that loses its core lets af_packet roll frames over to the other
      worker, and every connection must still close;
  (c) ping answered;
  (d) 100,000 SYNs with spoofed sources in 10.77.0.0/16 (built with
      python3-scapy, written to the veth by a raw socket in a separate
      process) while a legitimate client keeps connecting and getting
      /healthz: SYN cookies must keep it served.

Prints the numbers (time to open 10,000 connections, SYN rate, the legitimate
client's connect times). Needs root; exits 77 (skipped) otherwise or when
sluice-dataplane was built without DPDK. Bounded well under 5 minutes.
"""

import asyncio
import http.client
import json
import os
import re
import resource
import subprocess
import sys
import time

import harness
from harness import check, check_eq

SKIP = 77
CONNS = 10000
HOG_CONNS = 4000
HOG_MAX_S = 150  # the busy loop ends by itself after this, whatever happens
SYNS = 100000
SERVER = {"workers": 2, "header_timeout_s": 60}
NET = None  # the harness.DpdkNet main() set up


def server(env):
    return env.server(**SERVER)


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # root may raise it
            return
        except (ValueError, OSError):
            raise harness.TestFailure("RLIMIT_NOFILE hard limit %d < %d needed" % (hard, need))
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def ctl_json(srv, *args):
    p = srv.sluicectl("--json", *args)
    check(p.returncode == 0, "sluicectl --json %s: exit %d: %r" % (" ".join(args), p.returncode,
                                                                   p.stderr[-300:]))
    return json.loads(p.stdout.decode())


# ---- (a) ---------------------------------------------------------------

def test_two_workers_own_their_connections(env):
    srv = server(env)
    conns = []
    try:
        for _ in range(32):
            c = http.client.HTTPConnection(harness.DPDK_IP, srv.port, timeout=10)
            c.connect()
            conns.append(c)
        seen = {}
        for rnd in range(3):
            for c in conns:
                c.request("GET", "/healthz")
                r = c.getresponse()
                body = r.read()
                check_eq((r.status, body), (200, b'{"status":"ok"}'), "GET /healthz")
                w = r.getheader("X-Sluice-Worker")
                check(w is not None and w.isdigit() and int(w) < 2, "X-Sluice-Worker %r" % w)
                port = c.sock.getsockname()[1]
                check(seen.setdefault(port, int(w)) == int(w),
                      "connection from port %d answered by worker %s after worker %d"
                      % (port, w, seen[port]))
        per_worker = [sum(1 for w in seen.values() if w == k) for k in (0, 1)]
        print("     32 connections: %d on worker 0, %d on worker 1" % tuple(per_worker))
        check(min(per_worker) > 0, "connections not spread over both workers: %r" % per_worker)
        # The dataplane's own view: each connection sits in its worker's table.
        listed = ctl_json(srv, "conns").get("conns", [])
        by_peer = {}
        for e in listed:
            ip, _, p = e["peer"].rpartition(":")
            if ip == harness.DPDK_PEER_IP:
                by_peer[int(p)] = e["worker"]
        swapped = {((p & 0xFF) << 8) | (p >> 8): w for p, w in by_peer.items()}
        table = by_peer if set(seen) <= set(by_peer) else swapped
        check(set(seen) <= set(table), "sluicectl conns lacks client ports: %r vs %r"
              % (sorted(seen), sorted(by_peer)))
        wrong = {p: (w, table[p]) for p, w in seen.items() if table[p] != w}
        check(not wrong, "X-Sluice-Worker against sluicectl conns (port: (header, listed)): %r"
              % wrong)
    finally:
        for c in conns:
            c.close()


# ---- (b) ---------------------------------------------------------------

async def hold_many(srv, n):
    sem = asyncio.Semaphore(400)
    streams = []

    async def open_one():
        async with sem:
            for attempt in range(3):
                try:
                    return await asyncio.wait_for(
                        asyncio.open_connection(harness.DPDK_IP, srv.port), 20)
                except (OSError, asyncio.TimeoutError) as e:
                    err = e
            raise harness.TestFailure("connect failed 3 times: %r" % err)

    t0 = time.monotonic()
    try:
        streams = await asyncio.gather(*[open_one() for _ in range(n)])
        t_open = time.monotonic() - t0
        active = srv.metric("sluice_connections_active")
        check(active >= n, "/metrics sluice_connections_active %d with %d connections open"
              % (active, n))
        req = b"GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n"

        async def ask(rw):
            r, w = rw
            w.write(req)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            check(head.startswith(b"HTTP/1.1 200 "), "answer %r" % head[:60])
            m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
            check(m is not None, "no Content-Length in %r" % head)
            body = await asyncio.wait_for(r.readexactly(int(m.group(1))), 30)
            check_eq(body, b'{"status":"ok"}', "body")

        t1 = time.monotonic()
        await asyncio.gather(*[ask(rw) for rw in streams])
        t_serve = time.monotonic() - t1
        # Still all open after being served (keep-alive).
        active2 = srv.metric("sluice_connections_active")
        check(active2 >= n, "after answering: %d active, expected >= %d" % (active2, n))
        return t_open, t_serve, active
    finally:
        for _, w in streams:
            w.close()


def many_connections(env, n):
    """n connections opened, held, answered, closed; none left 30 s later."""
    raise_fd_limit(n + 1024)
    srv = server(env)
    t_open, t_serve, active = asyncio.run(asyncio.wait_for(hold_many(srv, n), 150))
    print("     %d connections opened in %.2f s (%.0f/s), all answered in %.2f s; /metrics "
          "active %d" % (n, t_open, n / t_open, t_serve, active), flush=True)
    deadline = time.monotonic() + 30
    while srv.metric("sluice_connections_active") > 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    left = srv.metric("sluice_connections_active")
    if left > 10:
        ss = subprocess.run(["ss", "-tan"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
        states = {}
        for line in ss.splitlines()[1:]:
            states[line.split()[0]] = states.get(line.split()[0], 0) + 1
        workers = [(w.get("worker"), w.get("conns_active"))
                   for w in ctl_json(srv, "workers").get("workers", [])]
        raise harness.TestFailure("%d connections still active 30 s after the client closed "
                                  "them; client socket states %r; (worker, conns_active) %r"
                                  % (left, states, workers))


def test_ten_thousand_connections(env):
    many_connections(env, CONNS)


# A busy loop pinned to CPU argv[1] for at most argv[2] seconds.
HOG = ("import os, sys, time\n"
       "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
       "end = time.monotonic() + float(sys.argv[2])\n"
       "while time.monotonic() < end:\n"
       "    pass\n")


def test_connections_with_a_busy_core(env):
    cpu = max(os.sched_getaffinity(0))
    hog = subprocess.Popen(["/usr/bin/python3", "-c", HOG, str(cpu), str(HOG_MAX_S)])
    t0 = time.monotonic()
    try:
        many_connections(env, HOG_CONNS)
    finally:
        hog.kill()
        hog.wait()
    print("     CPU %d kept busy for %.0f s" % (cpu, time.monotonic() - t0), flush=True)


# ---- (c) ---------------------------------------------------------------

def test_ping(env):
    server(env)
    p = subprocess.run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", harness.DPDK_IP],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    out = p.stdout.decode()
    check(p.returncode == 0 and " 3 received" in out, "ping %s: %s" % (harness.DPDK_IP, out))


# ---- (d) ---------------------------------------------------------------

# Builds SYNS frames from one scapy template (spoofed source in 10.77.0.0/16
# outside 10.77.0.0/24, random port and ISN, checksums recomputed), then
# writes them to the veth in bursts so the flood lasts a few seconds.
FLOOD = r"""
import random, socket, struct, sys, time
from scapy.all import Ether, IP, TCP
iface, smac, dmac, dst = sys.argv[1:5]
dport, count = int(sys.argv[5]), int(sys.argv[6])
tmpl = bytearray(bytes(Ether(src=smac, dst=dmac) / IP(src="10.77.1.1", dst=dst, ttl=64) /
                       TCP(sport=1, dport=dport, flags="S", seq=1, window=64240,
                           options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])))
ihl = (tmpl[14] & 15) * 4
tcp = 14 + ihl
def csum(b):
    if len(b) % 2:
        b = b + b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
rnd = random.Random(99)
dst_b = socket.inet_aton(dst)
frames = []
for i in range(count):
    f = bytearray(tmpl)
    src = struct.pack("!BBBB", 10, 77, rnd.randrange(1, 256), rnd.randrange(1, 255))
    f[26:30] = src
    f[24:26] = b"\0\0"
    f[24:26] = struct.pack("!H", csum(bytes(f[14:tcp])))
    struct.pack_into("!HI", f, tcp, rnd.randrange(1024, 65536), rnd.getrandbits(32))
    f[tcp + 16:tcp + 18] = b"\0\0"
    seg = bytes(f[tcp:])
    pseudo = src + dst_b + struct.pack("!BBH", 0, 6, len(seg))
    f[tcp + 16:tcp + 18] = struct.pack("!H", csum(pseudo + seg))
    frames.append(bytes(f))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
print("flooding", flush=True)
t0 = time.monotonic()
sent = 0
burst = 2500
for k in range(0, count, burst):
    for f in frames[k:k + burst]:
        while True:
            try:
                s.send(f)
                break
            except BlockingIOError:
                time.sleep(0.001)
        sent += 1
    time.sleep(0.1)
print("sent %d seconds %.3f" % (sent, time.monotonic() - t0), flush=True)
"""


def neigh_mac(ip):
    p = subprocess.run(["ip", "neigh", "show", ip], stdout=subprocess.PIPE, timeout=10)
    m = re.search(r"lladdr ([0-9a-f:]{17})", p.stdout.decode())
    check(m is not None, "no ARP entry for %s: %r" % (ip, p.stdout))
    return m.group(1)


def legit_healthz(port):
    """One connection and GET /healthz: (status, body, seconds), status None
    and the error as body when it failed."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection(harness.DPDK_IP, port, timeout=20)
    try:
        c.request("GET", "/healthz")
        r = c.getresponse()
        return r.status, r.read(), time.monotonic() - t0
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e), time.monotonic() - t0
    finally:
        c.close()


def test_syn_flood(env):
    srv = server(env)
    status, body, _ = legit_healthz(srv.port)
    check_eq(status, 200, "GET /healthz before the flood")
    dmac = neigh_mac(harness.DPDK_IP)
    link = subprocess.run(["ip", "-o", "link", "show", "dev", NET.inner], stdout=subprocess.PIPE,
                          timeout=10).stdout.decode()
    smac = re.search(r"link/ether ([0-9a-f:]{17})", link)
    check(smac is not None, "no MAC for %s: %r" % (NET.inner, link))
    flood = subprocess.Popen(["/usr/bin/python3", "-c", FLOOD, NET.inner, smac.group(1), dmac,
                              harness.DPDK_IP, str(srv.port), str(SYNS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = []
    try:
        line = flood.stdout.readline().decode().strip()
        check(line == "flooding", "SYN flood did not start: %r %r"
              % (line, flood.stderr.read()[-800:] if flood.poll() is not None else ""))
        # Connect again and again while the flood runs.
        while flood.poll() is None:
            results.append(legit_healthz(srv.port))
        out, err = flood.communicate(timeout=60)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    m = re.search(r"sent (\d+) seconds ([\d.]+)", out.decode())
    check(flood.returncode == 0 and m, "flood: exit %r: %r %r" % (flood.returncode, out,
                                                                 err[-500:]))
    sent, secs = int(m.group(1)), float(m.group(2))
    check(sent >= SYNS, "only %d SYNs sent" % sent)
    times = [r[2] for r in results]
    good = [r for r in results if r[:2] == (200, b'{"status":"ok"}')]
    print("     %d spoofed SYNs in %.2f s (%.0f/s); legitimate client during the flood: %d of %d "
          "connections + GET /healthz answered 200, connect+answer %.3f..%.3f s"
          % (sent, secs, sent / secs, len(good), len(results),
             min(times) if times else 0, max(times) if times else 0), flush=True)
    check(len(results) >= 3, "only %d legitimate requests during a %.1f s flood"
          % (len(results), secs))
    bad = [r for r in results if r not in good]
    check(not bad, "%d of %d legitimate connections failed during the SYN flood; first: %r"
          % (len(bad), len(results), bad[:3]))
    status, body, _ = legit_healthz(srv.port)
    check_eq((status, body), (200, b'{"status":"ok"}'), "GET /healthz after the flood")
    check(srv.procs["sluice-dataplane"].poll() is None, "sluice-dataplane died")


TESTS = [test_ping, test_two_workers_own_their_connections, test_ten_thousand_connections,
         test_connections_with_a_busy_core, test_syn_flood]


def main():
    if os.geteuid() != 0:
        print("skip: needs root (network namespaces, AF_PACKET)")
        return SKIP
    args = harness.parse_args()
    why = harness.dpdk_unavailable(os.path.abspath(args.build))
    if why:
        print("skip: %s" % why)
        return SKIP
    try:
        import scapy.all  # noqa: F401
    except ImportError:
        print("skip: python3-scapy not installed (firmware-config/setup-deps.sh)")
        return SKIP
    global NET
    net = NET = harness.DpdkNet()
    try:
        net.up()
        # Replies to the spoofed sources (outside the /24) go to the client's
        # kernel, which drops them: half-open connections that never complete.
        harness.DPDK["port_extra"] = ["gateway = %s" % harness.DPDK_PEER_IP]
        # The held connections send nothing until every one is open, which
        # on a loaded machine can take longer than the default 60 s.
        harness.DPDK["extra"] = ["idle_timeout_s = 600"]
        return harness.run(TESTS)
    finally:
        net.down()


if __name__ == "__main__":
    sys.exit(main())
