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
        return srv.instructions()
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


def run(args, build):
    print("%-10s %14s %14s %18s" % ("mode", "Ir short", "Ir long", "Ir/token/subscriber"))
    res = {}
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
                a = measure(build, mode, args.subs, args.short, args.rate, t)
                b = measure(build, mode, args.subs, args.long, args.rate, t)
                res[name + mode] = (b - a) / ((args.long - args.short) * args.subs)
                print("%-10s %14d %14d %18.0f" % (name + mode, a, b, res[name + mode]))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("adaptive/off: %.2f" % (res["adaptive"] / res["off"]))
    if tls:
        print("tls/plain: off %.2f, adaptive %.2f" % (res["tls off"] / res["off"],
                                                     res["tls adaptive"] / res["adaptive"]))


if __name__ == "__main__":
    main()
