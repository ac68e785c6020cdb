"""The impairment topology of docs/testing.md, for the tests that use tests/tools/impair.

    namespace C (client, 10.77.0.1/24)  c0 ==veth== a0  [namespace B: impair --a a0 --b b1]
    b1 ==veth== s0  (the server end: in the root namespace for sluice on net_af_packet,
                     or in namespace S with 10.77.0.2/24 when Linux is the server)

Every veth end runs without offloads (ethtool -K ... tso/gso/gro/tx/rx off), so the
frames impair sees are real-sized with real checksums. Names carry the pid, so
several test processes can run at once; down() removes everything, also after a
failed up(). Needs root; stdlib only (/usr/bin/python3).
"""

import os
import re
import signal
import subprocess
import threading
import time

CLIENT_IP = "10.77.0.1"
SERVER_IP = "10.77.0.2"


class TopoError(Exception):
    pass


def sh(*cmd, check=True, timeout=30):
    p = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check and p.returncode != 0:
        raise TopoError("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                             p.stderr.decode("utf-8", "replace")[-500:]))
    return p


def no_offloads(prefix, dev):
    """Full-sized, checksummed frames: what a wire would carry."""
    p = sh(*(prefix + ["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                       "tx", "off", "rx", "off"]), check=False)
    if p.returncode != 0:
        sh(*(prefix + ["ethtool", "-K", dev, "tso", "off", "gso", "off", "tx", "off"]))


class Topo:
    """server_ns=True puts the server end in its own namespace with SERVER_IP
    (Linux as the server); False leaves it, without an address, in the root
    namespace for sluice-dataplane's net_af_packet."""

    def __init__(self, impair_bin, server_ns=False, tag=None):
        tag = tag or "%d" % (os.getpid() % 100000)
        self.impair_bin = impair_bin
        self.ns_c = "sluice-ic" + tag
        self.ns_b = "sluice-ib" + tag
        self.ns_s = ("sluice-is" + tag) if server_ns else None
        self.c0, self.a0 = "sic%s" % tag, "sia%s" % tag
        self.b1, self.s0 = "sib%s" % tag, "sis%s" % tag
        self.proc = None
        self.out_lines = []
        self._reader = None
        self.root_name = "sluice-ir" + tag
        self.root_fd = None
        self.harness = None

    def ns_prefix(self, ns):
        return ["ip", "netns", "exec", ns] if ns else []

    def client(self, *cmd, timeout=60):
        """Runs cmd inside the client namespace; returns the CompletedProcess."""
        return sh(*(self.ns_prefix(self.ns_c) + list(cmd)), check=False, timeout=timeout)

    def up(self):
        self.down()
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self):
        for ns in (self.ns_c, self.ns_b, self.ns_s):
            if ns:
                sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", self.c0, "type", "veth", "peer", "name", self.a0)
        sh("ip", "link", "add", self.b1, "type", "veth", "peer", "name", self.s0)
        sh("ip", "link", "set", self.c0, "netns", self.ns_c)
        sh("ip", "link", "set", self.a0, "netns", self.ns_b)
        sh("ip", "link", "set", self.b1, "netns", self.ns_b)
        if self.ns_s:
            sh("ip", "link", "set", self.s0, "netns", self.ns_s)
        c, b, s = (self.ns_prefix(self.ns_c), self.ns_prefix(self.ns_b),
                   self.ns_prefix(self.ns_s))
        # The bridge's kernel must stay silent: no IPv6 (router solicitations,
        # MLD) on its ports and no addresses; the server end likewise when
        # sluice owns it.
        for pre, dev in ((b, self.a0), (b, self.b1)) + (() if self.ns_s else ((s, self.s0),)):
            sh(*(pre + ["sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % dev]), check=False)
        sh(*(c + ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]), check=False)
        if self.ns_s:
            sh(*(s + ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]), check=False)
        else:
            sh("sysctl", "-qw", "net.ipv4.conf.%s.forwarding=0" % self.s0, check=False)
        for pre, dev in ((c, self.c0), (b, self.a0), (b, self.b1), (s, self.s0)):
            no_offloads(pre, dev)
            sh(*(pre + ["ip", "link", "set", dev, "up"]))
        sh(*(c + ["ip", "link", "set", "lo", "up"]))
        sh(*(c + ["ip", "addr", "add", CLIENT_IP + "/24", "dev", self.c0]))
        if self.ns_s:
            sh(*(s + ["ip", "link", "set", "lo", "up"]))
            sh(*(s + ["ip", "addr", "add", SERVER_IP + "/24", "dev", self.s0]))

    def add_client_ips(self, addrs):
        """Extra source addresses on the client's veth (more 4-tuples)."""
        for a in addrs:
            sh(*(self.ns_prefix(self.ns_c) + ["ip", "addr", "add", a + "/24", "dev", self.c0]))

    def client_mac(self):
        p = sh(*(self.ns_prefix(self.ns_c) + ["cat", "/sys/class/net/%s/address" % self.c0]))
        return p.stdout.decode().strip()

    # -- the bridge

    def start_impair(self, *args, ready_timeout=10):
        """Starts impair between a0 (client side, A) and b1 (server side, B)."""
        self.stop_impair()
        self.out_lines = []
        cmd = self.ns_prefix(self.ns_b) + [self.impair_bin, "--a", self.a0, "--b", self.b1]
        cmd += [str(a) for a in args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        ready = threading.Event()

        def read():
            for raw in iter(self.proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.out_lines.append(line)
                if line == "impair: ready":
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(ready_timeout) or self.proc.poll() is not None:
            out = "\n".join(self.out_lines)
            self.stop_impair()
            raise TopoError("impair did not start: %s" % out)

    def dump_counters(self, timeout=5):
        """SIGUSR1: the counters impair prints, parsed (see counters())."""
        n = len(self.out_lines)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = parse_counters(self.out_lines[n:])
            if len(got) == 2:
                return got
            time.sleep(0.02)
        raise TopoError("impair printed no counters after SIGUSR1: %r" % self.out_lines[n:])

    def stop_impair(self):
        """SIGTERM; returns impair's exit status and its final counters."""
        if self.proc is None:
            return None, {}
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self._reader.join(timeout=5)
        p.stdout.close()
        return p.returncode, parse_counters(self.out_lines)

    def serve_from_root(self, harness, extra=()):
        """For sluice on net_af_packet at s0: sets harness.DPDK and
        harness.SERVER_PREFIX so the harness starts its programs in the root
        namespace, then moves this process into the client namespace, where
        127.0.0.1:PORT reaches SERVER_IP:PORT through nftables (see harness.py)."""
        sh("ip", "netns", "attach", self.root_name, str(os.getpid()))
        harness.client_loopback_nat(self.ns_prefix(self.ns_c), self.c0, SERVER_IP, CLIENT_IP)
        self.root_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.harness = harness
        harness.setns_net("/run/netns/" + self.ns_c)
        harness.DPDK = {"ip": SERVER_IP, "device": "net_af_packet0,iface=%s" % self.s0,
                        "eal_args": harness.DPDK_EAL_ARGS, "extra": list(extra)}
        harness.SERVER_PREFIX[:] = ["ip", "netns", "exec", self.root_name]

    def down(self):
        self.stop_impair()
        if self.root_fd is not None:
            self.harness.setns_net(self.root_fd)
            os.close(self.root_fd)
            self.root_fd = None
            self.harness.DPDK = None
            self.harness.SERVER_PREFIX[:] = []
        sh("ip", "netns", "del", self.root_name, check=False)
        for ns in (self.ns_c, self.ns_b, self.ns_s):
            if ns:
                sh("ip", "netns", "del", ns, check=False)
        # Deleting a namespace deletes the veths in it; the root end may remain.
        sh("ip", "link", "del", self.s0, check=False)


COUNTER_RE = re.compile(r"^impair: (\S+)->(\S+) (.*)$")


def parse_counters(lines):
    """{"A->B": {...}, "B->A": {...}} from impair's last two counter lines
    (a0 is A, the client side)."""
    out = {}
    for line in lines:
        m = COUNTER_RE.match(line)
        if not m:
            continue
        kv = dict(x.split("=", 1) for x in m.group(3).split())
        key = "A->B" if m.group(1).startswith("sia") else "B->A"
        out[key] = {k: int(v) for k, v in kv.items()}
    return out
