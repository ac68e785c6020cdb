"""One answer streamed to many SSE subscribers of one session, for the
benchmarks that need real clients on the fan-out path (token_cost.py,
tls_bench.py): subscribers open, the prompt goes out once all are open, and
every subscriber must see the whole answer."""

import asyncio
import time

import aiohttp


async def fan_out(base, sid, hdr, subs, ntok, ctx, post):
    """subs SSE streams of session sid at base; once all are open,
    `await post(session)` sends the prompt. Returns the seconds from the
    post to the last done; raises when a subscriber did not end at seq ntok."""
    got = [0] * subs
    opened = asyncio.Event()
    nopen = [0]

    async def one(i, s):
        async with s.get("%s/api/chat/stream/%s" % (base, sid), headers=hdr) as r:
            nopen[0] += 1
            if nopen[0] == subs:
                opened.set()
            event = None
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "token":
                    got[i] = int(line.split('"seq":')[1].split(",")[0])
                elif line.startswith("data: ") and event == "done":
                    return

    conn = aiohttp.TCPConnector(limit=0, ssl=ctx if ctx else False)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=600)) as s:
        tasks = [asyncio.create_task(one(i, s)) for i in range(subs)]
        await asyncio.wait_for(opened.wait(), 120)
        t0 = time.monotonic()
        await post(s)
        await asyncio.gather(*tasks)
        dt = time.monotonic() - t0
    if got != [ntok] * subs:
        raise RuntimeError("subscribers ended at seqs %r, expected %d" % (got[:5], ntok))
    return dt
