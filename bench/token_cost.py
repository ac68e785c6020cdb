#!/usr/bin/python3
"""Instructions the dataplane spends per delivered token, counted by callgrind.

Runs sluice-dataplane under `valgrind --tool=callgrind` (control runs natively),
streams one answer of N tokens to SUBS SSE subscribers, stops the dataplane and
reads callgrind's instruction total. It does this for two answer lengths and
reports the marginal cost, (Ir(long) - Ir(short)) / (extra tokens x SUBS), so
start-up, the handshake and the HTTP requests cancel out. Instruction counts do
not depend on the machine's load, unlike timings. Both batching modes run;
--tls runs them again with tls = on (docs/tls.md), the subscribers on https.

    /usr/bin/python3 bench/token_cost.py --build build [--subs 20 --short 100 --long 600]
        [--transport dpdk] [--tls]

With --transport dpdk (root) the dataplane runs sluice's own TCP/IPv4 stack on
net_af_packet over a veth into a client namespace (tests/integration/harness.py
DpdkNet). A poll-mode worker spins while idle, so there callgrind collects only
inside the per-token work: the app's record handling and end of turn (fan-out,
framing, send queues), the stack's input (ACKs) and the transport's flush (TCP
output, checksums, the burst) -- the idle polling in between is not counted.
How often the client's kernel ACKs depends on its timing (delayed ACKs), and
each ACK costs ~600 instructions, so beside the marginal figure the script
prints the segments in and out per token per subscriber, and the three parts
priced apart (the app per token per subscriber, the flush per segment out,
the input per segment in) with their sum at one segment and one ACK each:
what a fan-out at 20 tokens/s, one segment per token, pays.
"""
import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402

try:
    import sse_fanout  # aiohttp
except ImportError:
    sys.exit("bench/token_cost.py needs python3-aiohttp (firmware-config/setup-deps.sh installs it)")


# Where a poll-mode worker's per-token instructions are spent (--transport dpdk).
DPDK_COLLECT = ["app_on_record", "app_end_of_turn", "app_stream_batch_timer", "net_input", "dpdk_flush"]
# TCP segments in (the subscribers' ACKs, mostly) and out, counted by
# the calls callgrind saw: how often the client ACKs depends on its timing,
# and each ACK costs ~600 instructions, so the figure is read beside them.
DPDK_CALLS = ("net_tcp_input", "tcp_out_seg")


def call_counts(path, names):
    """Calls of each function in names, summed over its callers, from a
    callgrind output file (cfn= names a callee, the calls= line after it the
    count; a name is given once, with its id, on an fn= or cfn= line)."""
    ids, counts, callee = {}, dict.fromkeys(names, 0), None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(3):
                    ids[m.group(2)] = m.group(3).strip()
                callee = ids.get(m.group(2)) if m.group(1) else None
                continue
            m = re.match(r"calls=(\d+)", line)
            if m and callee in counts:
                counts[callee] += int(m.group(1))
            callee = None
    return counts


# The three parts of a poll-mode worker's per-token work, by the collected
# roots that hold them: the app (records in, end of turn: fan-out, framing,
# the copy into the send queues), the transport's flush (TCP output, the
# burst) and the stack's input (the ACKs).
DPDK_PARTS = (("app", ("app_on_record", "app_end_of_turn", "app_stream_batch_timer")),
              ("tx", ("dpdk_flush",)), ("rx", ("net_input",)))


def inclusive(path, names):
    """Inclusive instructions of each function in names (callgrind_annotate;
    an inlined copy's lines count apart and smaller, so the largest entry of
    a name is the function's own)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    got = dict.fromkeys(names, 0)
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S+:(\S+)", line)
        if m and m.group(2) in got:
            got[m.group(2)] = max(got[m.group(2)], int(m.group(1).replace(",", "")))
    return got


class Callgrind(harness.Sluice):
    """A pair whose dataplane runs under callgrind."""

    collect = []

    def start_dataplane(self):
        self.cg_out = os.path.join(self.tmp, "callgrind.out")
        log = os.path.join(self.tmp, "dataplane.cg.stderr")
        self.logs.setdefault("sluice-dataplane", []).append(log)
        toggles = ["--toggle-collect=" + f for f in self.collect]
        if toggles:
            toggles.append("--collect-atstart=no")
        with open(log, "wb") as errf:
            p = subprocess.Popen(harness.SERVER_PREFIX +
                                 ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + self.cg_out]
                                 + toggles + [self.binary("sluice-dataplane"), "-c", self.conf_path],
                                 stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
        self.procs["sluice-dataplane"] = p
        return p

    keep = None

    def instructions(self):
        p = self.procs["sluice-dataplane"]
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
        if self.keep:
            os.makedirs(self.keep, exist_ok=True)
            shutil.copy(self.cg_out, os.path.join(self.keep, "callgrind.%s.%d" % (self.batching, self.ntok)))
        self.calls = None
        if self.collect:
            self.calls = call_counts(self.cg_out, DPDK_CALLS)
            self.calls.update(inclusive(self.cg_out, [f for _, fs in DPDK_PARTS for f in fs]))
        with open(self.cg_out, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"(summary|totals):\s+(\d+)", line)
                if m:
                    return int(m.group(2))
        raise RuntimeError("no instruction total in " + self.cg_out)


async def post_prompt(srv, sid, s):
    async with s.post(srv.base + "/api/chat/message", headers=srv.auth_headers(),
                      json={"session_id": sid, "content": "cost"}) as r:
        if r.status != 202:
            raise RuntimeError("post: %d" % r.status)


def measure(build, mode, subs, ntok, rate, tls=None):
    models = {"cost": {"ttft_ms": 50, "tokens_per_s": rate, "answer_tokens": ntok}}
    srv = Callgrind(build, batching=mode, models=models, tls=tls)
    srv.ntok = ntok
    try:
        srv.start(ready_timeout=120)
        sid = srv.create_session("cost")
        asyncio.run(sse_fanout.fan_out(srv.base, sid, srv.auth_headers(), subs, ntok,
                                       srv.ssl_context() if srv.tls else None,
                                       lambda s: post_prompt(srv, sid, s)))
        return srv.instructions(), srv.calls
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--subs", type=int, default=20)
    ap.add_argument("--short", type=int, default=100)
    ap.add_argument("--long", type=int, default=600)
    ap.add_argument("--rate", type=int, default=200, help="tokens/s (valgrind must keep up)")
    ap.add_argument("--transport", choices=("kernel", "dpdk"), default="kernel")
    ap.add_argument("--keep", help="copy each callgrind output here (callgrind_annotate them)")
    ap.add_argument("--tls", action="store_true", help="also with tls = on")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed")
    build = os.path.abspath(args.build)
    net = None
    Callgrind.keep = args.keep
    if args.transport == "dpdk":
        why = harness.dpdk_unavailable(build)
        if why:
            sys.exit(why)
        Callgrind.collect = DPDK_COLLECT
        net = harness.DpdkNet()
        net.up()
    try:
        run(args, build)
    finally:
        if net:
            net.down()


def split(ca, cb, per):
    """The app's instructions per token per subscriber, the flush's per TCP
    segment out and the input's per segment in, from the short and the long
    run's counts."""
    def part(fs):
        return sum(cb[f] - ca[f] for f in fs)
    segs = max(cb["tcp_out_seg"] - ca["tcp_out_seg"], 1)
    ins = max(cb["net_tcp_input"] - ca["net_tcp_input"], 1)
    p = dict(DPDK_PARTS)
    return part(p["app"]) / per, part(p["tx"]) / segs, part(p["rx"]) / ins


def run(args, build):
    dpdk = args.transport == "dpdk"
    print("%-10s %14s %14s %18s%s" % ("mode", "Ir short", "Ir long", "Ir/token/subscriber",
                                       "  segments in, out per token/subscriber" if dpdk else ""))
    res, parts = {}, {}
    d = tempfile.mkdtemp(prefix="sluice-bench-cert-")
    try:
        tls = None
        if args.tls:
            chain, key, ca = harness.make_test_cert(d)
            # Under callgrind a handshake takes long: no budget or timeout
            # may reset the subscribers while they connect.
            tls = {"certs": [("bench", chain, key)], "ca": ca,
                   "opts": {"handshakes_per_addr": 100000, "handshake_timeout_s": 300,
                            "handshake_budget_us": 1000000}}
        for name, t in (("", None), ("tls ", tls)) if tls else (("", None),):
            for mode in ("off", "adaptive"):
                a, ca = measure(build, mode, args.subs, args.short, args.rate, t)
                b, cb = measure(build, mode, args.subs, args.long, args.rate, t)
                per = (args.long - args.short) * args.subs
                res[name + mode] = (b - a) / per
                extra = ""
                if ca is not None:
                    extra = "  %.2f, %.2f" % tuple((cb[k] - ca[k]) / per for k in DPDK_CALLS)
                    parts[name + mode] = split(ca, cb, per)
                print("%-10s %14d %14d %18.0f%s" % (name + mode, a, b, res[name + mode], extra))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("adaptive/off: %.2f" % (res["adaptive"] / res["off"]))
    if parts:
        # How often the client ACKs moves the marginal figure by ~600
        # instructions per ACK; priced per part, one segment and one ACK per
        # token per subscriber is what a fan-out at 20 tokens/s pays.
        print("\n%-10s %14s %14s %14s %22s" % ("mode", "app/token/sub", "tx/segment", "rx/segment in",
                                                "at 1 segment + 1 ACK"))
        for k, (app, tx, rx) in parts.items():
            print("%-10s %14.0f %14.0f %14.0f %22.0f" % (k, app, tx, rx, app + tx + rx))
    if tls:
        print("tls/plain: off %.2f, adaptive %.2f" % (res["tls off"] / res["off"],
                                                     res["tls adaptive"] / res["adaptive"]))


if __name__ == "__main__":
    main()
