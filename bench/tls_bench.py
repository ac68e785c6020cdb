#!/usr/bin/python3
"""What TLS in the workers costs: server CPU per delivered token with and
without TLS (and with nginx terminating TLS in front of plain sluice),
handshakes per second per worker beside nginx, and how long a handshake
flood delays token delivery on an open stream. Never asserted; the numbers
go to docs/tls.md and docs/performance.md.

    /usr/bin/python3 bench/tls_bench.py --build build [--subs 50 --tokens 600 --rate 300]

Server CPU is read from /proc (utime + stime of sluice-dataplane, and of
nginx's worker when it is in the path) over the streaming window only. The
clients run on the same 2-core machine, so wall-clock rates are shared with
them; CPU per token and per handshake are the comparable figures.
"""
import argparse
import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402
import sse_fanout  # noqa: E402

try:
    import aiohttp
except ImportError:
    sys.exit("bench/tls_bench.py needs python3-aiohttp (firmware-config/setup-deps.sh installs it)")

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def metrics(srv):
    r = srv.request("GET", "/metrics")
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


class Nginx:
    """Debian's nginx, one worker, TLS with the same certificate: a static
    answer for handshake runs, or a TLS proxy in front of plain sluice."""

    def __init__(self, chain, key, upstream_port=None):
        self.dir = tempfile.mkdtemp(prefix="sluice-bench-nginx-")
        self.port = harness.free_port()
        loc = ("proxy_pass http://up; proxy_http_version 1.1; proxy_buffering off; "
               "proxy_set_header Connection \"\"; proxy_read_timeout 600s;"
               if upstream_port else "return 200 '{\"status\":\"ok\"}';")
        conf = """
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s;
  uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
  upstream up { server 127.0.0.1:%(up)d; keepalive 64; }
  server {
    listen 127.0.0.1:%(port)d ssl;
    ssl_certificate %(chain)s; ssl_certificate_key %(key)s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    location / { %(loc)s }
  }
}
""" % {"d": self.dir, "port": self.port, "chain": chain, "key": key, "up": upstream_port or 9,
       "loc": loc}
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def workers(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], stdout=subprocess.PIPE,
                             text=True).stdout.split()
        return [int(p) for p in out]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_fanout(build, tls, args, nginx_front=False):
    models = {"bench": {"ttft_ms": 200, "tokens_per_s": args.rate, "answer_tokens": args.tokens}}
    srv = harness.Sluice(build, models=models, tls=tls if not nginx_front else None)
    srv.start()
    ng = None
    try:
        sid = srv.create_session("bench")
        hdr = srv.auth_headers()
        base, ctx, pids = srv.base, (srv.ssl_context() if srv.tls else None), [
            srv.procs["sluice-dataplane"].pid]
        if nginx_front:
            ng = Nginx(tls["certs"][0][1], tls["certs"][0][2], upstream_port=srv.port)
            base = "https://127.0.0.1:%d" % ng.port
            ctx = ssl.create_default_context(cafile=tls["ca"])
        m0 = metrics(srv)
        holder = {}

        async def post(_session):
            holder["c0"] = cpu_s(pids) + (cpu_s(ng.workers()) if ng else 0)
            holder["s0"] = cpu_s(pids)
            srv.post_message(sid, "bench")
        dt = asyncio.run(sse_fanout.fan_out(base, sid, hdr, args.subs, args.tokens, ctx, post))
        ntok = args.subs * args.tokens
        c1 = cpu_s(pids) + (cpu_s(ng.workers()) if ng else 0)
        s1 = cpu_s(pids)
        m1 = metrics(srv)
        frames = m1["sluice_frames_out_total"] - m0["sluice_frames_out_total"]
        recs = m1.get("sluice_tls_records_out_total", 0) - m0.get("sluice_tls_records_out_total", 0)
        return {"tokens": ntok, "wall_s": dt, "cpu_s": c1 - holder["c0"], "dp_cpu_s": s1 - holder["s0"],
                "frames": frames, "records": recs}
    finally:
        if ng:
            ng.stop()
        srv.stop()


def s_time(port, ca, seconds, reuse):
    """openssl s_time, one client: (connections, real seconds)."""
    # s_time resumes reliably only with TLS 1.2 (it reuses the session of
    # its first connection, before a TLS 1.3 ticket has arrived).
    cmd = ["openssl", "s_time", "-connect", "127.0.0.1:%d" % port, "-CAfile", ca,
           "-time", str(seconds)] + (["-reuse", "-tls1_2"] if reuse else ["-new"])
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=seconds + 60).stdout
    for line in out.splitlines():
        # "N connections in T real seconds, ..."
        parts = line.split()
        if len(parts) > 4 and parts[1:3] == ["connections", "in"] and parts[4] == "real":
            return int(parts[0]), float(parts[3])
    raise RuntimeError("s_time: %s" % out[-300:])


def handshakes(build, tls, seconds):
    rows = []
    srv = harness.Sluice(build, tls=tls)
    srv.start()
    try:
        pid = srv.procs["sluice-dataplane"].pid
        for reuse in (False, True):
            c0 = cpu_s([pid])
            n, secs = s_time(srv.port, tls["ca"], seconds, reuse)
            c1 = cpu_s([pid])
            rows.append(("sluice", "resumed" if reuse else "full", n / secs, (c1 - c0) / max(n, 1)))
    finally:
        srv.stop()
    ng = Nginx(tls["certs"][0][1], tls["certs"][0][2])
    try:
        for reuse in (False, True):
            w = ng.workers()
            c0 = cpu_s(w)
            n, secs = s_time(ng.port, tls["ca"], seconds, reuse)
            c1 = cpu_s(w)
            rows.append(("nginx", "resumed" if reuse else "full", n / secs, (c1 - c0) / max(n, 1)))
    finally:
        ng.stop()
    return rows


def client_hello(ca):
    """One TLS 1.3 ClientHello as a real client sends it, to replay: the
    server does a handshake's expensive half (key share, signature) for each
    copy, the flooder almost nothing."""
    ctx = ssl.create_default_context(cafile=ca)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def flood(port, hello, stop, burst):
    """Until stop is set: `burst` connections at once, each sends the
    ClientHello and reads the server's first flight, then all close."""
    while not stop.is_set():
        socks = []
        for _ in range(burst):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(hello)
                socks.append(s)
            except OSError:
                pass
        for s in socks:
            try:
                s.recv(65536)
            except OSError:
                pass
            s.close()


def e2e_hist(m):
    """Cumulative counts of sluice_token_e2e_delay_seconds by bound (s)."""
    out = {}
    for k, v in m.items():
        if k.startswith("sluice_token_e2e_delay_seconds_bucket{le=\""):
            le = k.split('"')[1]
            out[float("inf") if le == "+Inf" else float(le)] = v
    return out


async def gaps(base, sid, hdr, ctx, post):
    """Inter-token gaps (ms) seen by one SSE client of a steady answer."""
    stamps = []
    conn = aiohttp.TCPConnector(ssl=ctx)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=600)) as s:
        async with s.get("%s/api/chat/stream/%s" % (base, sid), headers=hdr) as r:
            post()
            event = None
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "token":
                    stamps.append(time.monotonic())
                elif line.startswith("data: ") and event == "done":
                    break
    return [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]


def stall(build, tls, args):
    """A steady answer (100 tokens/s, batching off) on one stream of a
    1-worker dataplane while replayed ClientHellos flood the same worker,
    with the handshake budget and without one (1 s). Server side: the token
    e2e delay histogram (backend creation to framed, which includes waiting
    in the ring while the worker does handshakes); client side: gaps."""
    models = {"steady": {"ttft_ms": 100, "tokens_per_s": 100, "answer_tokens": 400}}
    hello = client_hello(tls["ca"])
    out = {}
    for budget in (args.budget_us, 1000000):
        for flooding in (False, True):
            t = dict(tls, opts=dict(tls.get("opts", {}), handshake_budget_us=budget,
                                     handshakes_per_addr=100000, handshakes_max=100000))
            srv = harness.Sluice(build, models=models, tls=t, batching="off")
            srv.start()
            stop = threading.Event()
            threads = []
            try:
                sid = srv.create_session("steady")
                m0 = metrics(srv)
                if flooding:
                    threads = [threading.Thread(target=flood, args=(srv.port, hello, stop,
                                                                    args.burst), daemon=True)
                               for _ in range(args.flooders)]
                    for th in threads:
                        th.start()
                g = asyncio.run(gaps(srv.base, sid, srv.auth_headers(), srv.ssl_context(),
                                     lambda: srv.post_message(sid, "steady")))
                stop.set()
                for th in threads:
                    th.join(timeout=30)
                m1 = metrics(srv)
                h0, h1 = e2e_hist(m0), e2e_hist(m1)
                d = {k: h1[k] - h0.get(k, 0) for k in h1}
                n = d[float("inf")]
                over = {b: (n - d[b]) / n for b in (0.002, 0.005, 0.01, 0.05)}
                g.sort()
                cpu = (m1["sluice_tls_handshake_cpu_microseconds_total"]
                       - m0["sluice_tls_handshake_cpu_microseconds_total"])
                out[(budget, flooding)] = {
                    "over": over, "gap_p99": g[int(len(g) * 0.99)], "gap_max": g[-1],
                    "hs_cpu_ms": cpu / 1000.0,
                    "deferred": m1["sluice_tls_handshakes_deferred_total"]
                    - m0["sluice_tls_handshakes_deferred_total"]}
            finally:
                stop.set()
                srv.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--subs", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=600)
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=5, help="per s_time run")
    ap.add_argument("--flooders", type=int, default=2, help="flooding threads")
    ap.add_argument("--burst", type=int, default=32, help="ClientHellos each thread sends at once")
    ap.add_argument("--budget-us", type=int, default=2000)
    ap.add_argument("--keytype", default="ec", choices=("ec", "rsa"))
    ap.add_argument("--only", default="", help="fanout, handshakes or stall")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    d = tempfile.mkdtemp(prefix="sluice-bench-tls-")
    try:
        chain, key, ca = harness.make_test_cert(d, keytype=args.keytype)
        tls = {"certs": [("bench", chain, key)], "ca": ca}
        # Every subscriber connects at once from 127.0.0.1: lift the
        # per-address handshake cap for the runs.
        tls["opts"] = {"handshakes_per_addr": 100000}
        if args.only in ("", "fanout"):
            print("fan-out: %d SSE subscribers, one answer of %d tokens at %d tokens/s, 1 worker"
                  % (args.subs, args.tokens, args.rate))
            print("%-22s %8s %8s %10s %12s %10s %10s" % ("path", "tokens", "wall s", "cpu s",
                                                         "cpu us/tok", "frames", "records"))
            for name, t, front in (("plain", None, False), ("tls in sluice", tls, False),
                                   ("nginx tls -> sluice", tls, True)):
                r = run_fanout(build, t, args, nginx_front=front)
                print("%-22s %8d %8.2f %10.2f %12.2f %10d %10d" % (
                    name, r["tokens"], r["wall_s"], r["cpu_s"], r["cpu_s"] * 1e6 / r["tokens"],
                    r["frames"], r["records"]))
                if front:
                    print("%-22s %8s %8s %10.2f %12.2f   (of which sluice-dataplane)" % (
                        "", "", "", r["dp_cpu_s"], r["dp_cpu_s"] * 1e6 / r["tokens"]))
        if args.only in ("", "handshakes"):
            print("\nhandshakes (%s key), openssl s_time for %d s each, 1 worker"
                  % (args.keytype, args.seconds))
            print("%-8s %-8s %14s %16s %18s" % ("server", "kind", "conns/s", "cpu us/handshake",
                                                 "handshakes/cpu-s"))
            for srvname, kind, rate, cpu in handshakes(build, tls, args.seconds):
                print("%-8s %-8s %14.0f %16.0f %18.0f" % (srvname, kind, rate, cpu * 1e6,
                                                          1 / cpu if cpu else 0))
        if args.only in ("", "stall"):
            print("\nhandshake flood (%d threads x %d replayed ClientHellos at a time) against one "
                  "worker streaming 100 tokens/s, batching off" % (args.flooders, args.burst))
            print("%-10s %-6s %9s %9s %9s %9s %10s %10s %12s %9s" % (
                "budget_us", "flood", ">2ms", ">5ms", ">10ms", ">50ms", "gap p99", "gap max",
                "hs cpu ms", "deferred"))
            for (budget, flooding), r in sorted(stall(build, tls, args).items()):
                o = r["over"]
                print("%-10d %-6s %8.2f%% %8.2f%% %8.2f%% %8.2f%% %10.1f %10.1f %12.0f %9d" % (
                    budget, "yes" if flooding else "no", 100 * o[0.002], 100 * o[0.005],
                    100 * o[0.01], 100 * o[0.05], r["gap_p99"], r["gap_max"], r["hs_cpu_ms"],
                    r["deferred"]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
