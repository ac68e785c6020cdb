#!/usr/bin/python3
"""Adaptive batching vs one frame per token, side by side in one run.

For each batching mode it starts a private sluice pair (tests/integration/
harness.py), opens CLIENTS SSE streams spread over SESSIONS sessions (aiohttp),
posts one message per session at once and reads every stream to its `done`.
It reports, per mode: tokens and frames delivered, frames per token, client
tokens/s, the dataplane's CPU seconds per million tokens (from /proc), and the
batching-added and end-to-end token delay quantiles from /metrics.

    /usr/bin/python3 bench/batching.py --build build [--clients 400 --sessions 40
        --tokens 400 --rate 400] [--json out.json]

Every run is bounded: one answer per session and a hard timeout.
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402

try:
    import aiohttp
except ImportError:
    sys.exit("bench/batching.py needs python3-aiohttp (firmware-config/setup-deps.sh installs it)")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck


def metrics(srv):
    r = srv.request("GET", "/metrics", auth=False)
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, val = line.rpartition(" ")
        out[name] = float(val)
    return out


def quantile(m, base, q):
    """Quantile upper bound (seconds) from a Prometheus histogram's buckets."""
    buckets = sorted((float(k.split('le="')[1].split('"')[0]) if "+Inf" not in k else float("inf"), v)
                     for k, v in m.items() if k.startswith(base + "_bucket{"))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for le, cnt in buckets:
        if cnt >= q * total:
            return le
    return float("inf")


def delta(after, before, key):
    return after.get(key, 0.0) - before.get(key, 0.0)


async def stream(session, url, headers, want_mid, out, deadline):
    tokens = frames = 0
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError("stream %s: %d" % (url, resp.status))
        out["open"] += 1
        event = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "token":
                d = json.loads(line[6:])
                tokens += d["n"]
                frames += 1
            elif line.startswith("data: ") and event == "done":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("stream %s: timed out" % url)
    out["tokens"] += tokens
    out["frames"] += frames


async def run_mode(srv, args):
    base = srv.base
    hdr = srv.auth_headers()
    sids = [srv.create_session("bench") for _ in range(args.sessions)]
    out = {"open": 0, "tokens": 0, "frames": 0}
    deadline = time.monotonic() + args.timeout
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=args.timeout)) as s:
        tasks = [asyncio.create_task(stream(s, "%s/api/chat/stream/%s" % (base, sids[i % len(sids)]),
                                            hdr, None, out, deadline))
                 for i in range(args.clients)]
        while out["open"] < args.clients:
            if time.monotonic() > deadline:
                raise RuntimeError("only %d of %d streams opened" % (out["open"], args.clients))
            await asyncio.sleep(0.05)
        m0 = metrics(srv)
        cpu0 = cpu_seconds(srv.procs["sluice-dataplane"].pid)
        t0 = time.monotonic()
        for sid in sids:
            async with s.post(base + "/api/chat/message", headers=hdr,
                              json={"session_id": sid, "content": "bench " + sid}) as r:
                if r.status != 202:
                    raise RuntimeError("post: %d" % r.status)
        await asyncio.gather(*tasks)
        wall = time.monotonic() - t0
        cpu1 = cpu_seconds(srv.procs["sluice-dataplane"].pid)
        m1 = metrics(srv)
    want = args.clients * args.tokens
    if out["tokens"] != want:
        raise RuntimeError("got %d tokens, expected %d" % (out["tokens"], want))
    tok_out = delta(m1, m0, "sluice_tokens_out_total")
    fr_out = delta(m1, m0, "sluice_frames_out_total")
    diff = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
    return {
        "tokens": out["tokens"], "frames": out["frames"],
        "frames_per_token": fr_out / tok_out if tok_out else None,
        "client_tokens_per_s": out["tokens"] / wall, "wall_s": wall,
        "dataplane_cpu_s_per_mtok": (cpu1 - cpu0) / out["tokens"] * 1e6,
        "batch_delay_p50_s": quantile(diff, "sluice_token_batch_delay_seconds", 0.5),
        "batch_delay_p99_s": quantile(diff, "sluice_token_batch_delay_seconds", 0.99),
        "e2e_delay_p50_s": quantile(diff, "sluice_token_e2e_delay_seconds", 0.5),
        "e2e_delay_p99_s": quantile(diff, "sluice_token_e2e_delay_seconds", 0.99),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--clients", type=int, default=400)
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=400, help="tokens per answer")
    ap.add_argument("--rate", type=int, default=400, help="tokens/s per answer")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-delay-us", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients + 256)), hard))
    models = {"bench": {"ttft_ms": 20, "tokens_per_s": args.rate, "answer_tokens": args.tokens}}
    results = {}
    for mode in ("off", "adaptive"):
        srv = harness.Sluice(os.path.abspath(args.build), workers=args.workers, batching=mode,
                             models=models)
        try:
            srv.start()
            results[mode] = asyncio.run(run_mode(srv, args))
        finally:
            srv.stop()
    cols = ["tokens", "frames", "frames_per_token", "client_tokens_per_s",
            "dataplane_cpu_s_per_mtok", "batch_delay_p50_s", "batch_delay_p99_s",
            "e2e_delay_p50_s", "e2e_delay_p99_s"]
    print("%-28s %14s %14s" % ("metric", "mode=off", "mode=adaptive"))
    for c in cols:
        vals = [results[m][c] for m in ("off", "adaptive")]
        print("%-28s %14s %14s" % (c, *("%.4g" % v if isinstance(v, float) else str(v) for v in vals)))
    off, ad = results["off"], results["adaptive"]
    if off["dataplane_cpu_s_per_mtok"] and ad["dataplane_cpu_s_per_mtok"]:
        print("adaptive/off CPU per token: %.2f" % (ad["dataplane_cpu_s_per_mtok"] / off["dataplane_cpu_s_per_mtok"]))
    if off["frames_per_token"] and ad["frames_per_token"]:
        print("adaptive/off frames per token: %.2f" % (ad["frames_per_token"] / off["frames_per_token"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
