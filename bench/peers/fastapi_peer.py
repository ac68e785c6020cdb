"""FastAPI on uvicorn (Debian python3-fastapi, python3-uvicorn), the seed
projects' stack: GET /sub/ID (SSE through a StreamingResponse) and a
WebSocket on the same path, POST /prompt/ID {tokens,rate,ttft_ms} starts an
answer. Each event is built once per token and queued to every subscriber."""
import asyncio
import itertools
import json
import time

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse

WORDS = [" the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog",
         " stream", " token", " fast", " bench", " \u00e9t\u00e9", ' "q"', " line", " end"]
app = FastAPI()
subs = {}  # sid -> set of asyncio.Queue
counter = itertools.count(1)


def queues(sid):
    return subs.setdefault(sid, set())


def token_json(sid, mid, seq, typed):
    word = WORDS[seq % len(WORDS)]
    text = json.dumps(word[1:] if seq == 1 else word)
    return ('{%s"session_id":"%s","message_id":"%s","seq":%d,"n":1,"text":%s,"created_ns":[%d]}'
            % ('"type":"token",' if typed else "", sid, mid, seq, text, time.monotonic_ns()))


async def answer(sid, tokens, rate, ttft_ms):
    mid = "m_%016x" % next(counter)
    t0 = time.monotonic() + ttft_ms / 1000.0
    for seq in range(1, tokens + 1):
        delay = t0 + (seq - 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sse = "id: %s:%d\nevent: token\ndata: %s\n\n" % (mid, seq, token_json(sid, mid, seq, False))
        ws = token_json(sid, mid, seq, True)
        for q in list(queues(sid)):
            q.put_nowait((sse, ws))
    done = '"session_id":"%s","message_id":"%s","status":"complete"}' % (sid, mid)
    for q in list(queues(sid)):
        q.put_nowait(("id: %s:d\nevent: done\ndata: {%s\n\n" % (mid, done), '{"type":"done",' + done))


@app.post("/prompt/{sid}")
async def prompt(sid: str, request: Request):
    opts = await request.json()
    asyncio.get_running_loop().create_task(
        answer(sid, int(opts["tokens"]), float(opts["rate"]), float(opts.get("ttft_ms", 0))))
    return JSONResponse({"started": True}, status_code=202)


@app.get("/sub/{sid}")
async def sse(sid: str):
    q = asyncio.Queue()
    queues(sid).add(q)

    async def gen():
        try:
            yield ":ok\n\n"
            while True:
                item = await q.get()
                yield item[0]
        finally:
            queues(sid).discard(q)
    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@app.websocket("/sub/{sid}")
async def ws(sid: str, sock: WebSocket):
    await sock.accept()
    q = asyncio.Queue()
    queues(sid).add(q)
    try:
        while True:
            item = await q.get()
            await sock.send_text(item[1])
    except WebSocketDisconnect:
        pass
    finally:
        queues(sid).discard(q)
