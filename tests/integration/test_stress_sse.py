#!/usr/bin/python3
"""1,000 concurrent SSE streams (100 sessions x 10 subscribers) with aiohttp;
every token of every stream is accounted for (exact text per stream)."""

import asyncio
import json
import resource
import sys
import time

import aiohttp

import harness
from harness import check, check_eq, check_message_events

SESSIONS = 100
SUBSCRIBERS = 10
OVERALL_TIMEOUT = 120
TOKENS = harness.DEFAULT_MODELS["synth"]["answer_tokens"]


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        check(new >= need, "RLIMIT_NOFILE hard limit %d < %d needed" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


async def read_stream(resp, events):
    """Parses one SSE response into events until the stream's first done."""
    ev, data = {}, []
    while True:
        raw = await resp.content.readline()
        if not raw:
            raise harness.TestFailure("stream ended after %d events" % len(events))
        line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
        if line == "":
            if data:
                obj = json.loads("\n".join(data))
                obj["type"] = ev.get("event", "message")
                obj["_id"] = ev.get("id")
                events.append(obj)
                if obj["type"] == "done":
                    return
            ev, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "data":
                data.append(v)
            else:
                ev[k] = v


async def stress(srv):
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout,
                                     headers=srv.auth_headers()) as http:
        async def create():
            async with http.post(srv.base + "/api/chat/sessions", json={"model_id": "synth"}) as r:
                check_eq(r.status, 201, "POST /api/chat/sessions status")
                return (await r.json())["id"]
        sids = await asyncio.gather(*[create() for _ in range(SESSIONS)])

        opened = []
        results = {}

        async def subscriber(sid, i):
            resp = await http.get(srv.base + "/api/chat/stream/" + sid)
            check_eq(resp.status, 200, "GET /api/chat/stream status")
            opened.append(resp)
            events = []
            results[(sid, i)] = events
            await ready.wait()
            try:
                await read_stream(resp, events)
            finally:
                resp.release()

        ready = asyncio.Event()
        t_open = time.monotonic()
        subs = [asyncio.ensure_future(subscriber(sid, i)) for sid in sids for i in range(SUBSCRIBERS)]
        while len(opened) < len(subs):
            failed = [t for t in subs if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
            check(time.monotonic() - t_open < 60, "only %d of %d streams opened within 60 s"
                  % (len(opened), len(subs)))
            await asyncio.sleep(0.05)
        ready.set()
        print("     %d streams open after %.1f s" % (len(opened), time.monotonic() - t_open), flush=True)

        prompts = {sid: "stress prompt %d for %s" % (n, sid) for n, sid in enumerate(sids)}
        mids = {}

        async def send(sid):
            async with http.post(srv.base + "/api/chat/message",
                                 json={"session_id": sid, "content": prompts[sid]}) as r:
                check_eq(r.status, 202, "POST /api/chat/message status")
                mids[sid] = (await r.json())["message_id"]
        t0 = time.monotonic()
        await asyncio.gather(*[send(sid) for sid in sids])
        await asyncio.gather(*subs)
        took = time.monotonic() - t0

    bad = []
    total_events = 0
    for (sid, i), events in sorted(results.items()):
        total_events += sum(1 for e in events if e["type"] == "token")
        try:
            check_message_events(events, sid, mids[sid], prompts[sid], TOKENS, model="synth", sse=True)
        except harness.TestFailure as e:
            bad.append("%s subscriber %d: %s" % (sid, i, e))
    check(not bad, "%d of %d streams wrong; first: %s" % (len(bad), len(results), bad[:3]))
    n_tokens = len(results) * TOKENS
    print("     %d streams, %d tokens in %d token events, %.2f s after posting: %.0f tokens/s"
          % (len(results), n_tokens, total_events, took, n_tokens / took), flush=True)


def test_thousand_streams(env):
    raise_fd_limit(SESSIONS * SUBSCRIBERS * 2 + 512)
    srv = env.server(workers=2)
    try:
        asyncio.run(asyncio.wait_for(stress(srv), OVERALL_TIMEOUT))
    except asyncio.TimeoutError:
        raise harness.TestFailure("%d streams not complete within %d s"
                                  % (SESSIONS * SUBSCRIBERS, OVERALL_TIMEOUT))


TESTS = [test_thousand_streams]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
