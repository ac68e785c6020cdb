#!/usr/bin/python3
"""A fault-injecting LLM backend for the integration tests: an
OpenAI-compatible server (POST /v1/chat/completions streaming SSE, GET
/v1/models) and an Ollama replayer (POST /api/chat streaming NDJSON, GET
/api/tags) whose answers follow Ollama's documented format, line for line
the shape of tests/integration/fixtures/ollama_chat.ndjson.

Run: upstream.py --port P [--tls-cert C --tls-key K] [--models a,b]

What it does is set over HTTP (POST /_fixture/config with a JSON object,
merged into the current one) and what it saw is read back (GET
/_fixture/log): every request with its body, its Authorization header, when
it started, when its first token left, and how it ended ("complete",
"client_closed" with the time, "died" when the fixture cut it on purpose).

config keys:
  mode          normal | tools | die_after | error_mid | slow_first | status | hang
  tokens        tokens per answer (5)
  ttft_ms       delay before the first token (20)
  interval_ms   between tokens (10)
  die_after     tokens sent before the connection is cut (die_after, error_mid)
  status        HTTP status of mode "status" (500); its body is an OpenAI error
  usage         send the usage chunk when asked to (true)
  billed        completion_tokens the usage reports (default: the tokens sent)
  first_delay_s mode slow_first: silence before anything (30)
  stamp         tokens carry the time they left ("K@NS"), for bench/relay_latency.py
Tokens are "t1", " t2", ... so a test knows the exact text.
"""

import argparse
import asyncio
import json
import os
import socket
import ssl
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OLLAMA_FIXTURE = os.path.join(HERE, "fixtures", "ollama_chat.ndjson")

CONFIG = {"mode": "normal", "tokens": 5, "ttft_ms": 20, "interval_ms": 10, "die_after": 2,
          "status": 500, "usage": True, "first_delay_s": 30}
LOG = []
MODELS = []


def token_text(k):
    if CONFIG.get("stamp"):
        # The time it left, for the relay benchmark (bench/relay_latency.py).
        return "%s%d@%d" % ("" if k == 1 else " ", k, time.time_ns())
    return ("t%d" % k) if k == 1 else (" t%d" % k)


def usage_obj(cfg, n):
    """OpenAI's usage for an answer of n tokens: 7 prompt tokens, and the
    completion tokens `billed` says when it is set."""
    c = int(cfg.get("billed") or n)
    return {"prompt_tokens": 7, "completion_tokens": c, "total_tokens": 7 + c}


class Peer:
    """The client side of a connection, buffered so that watching it for a
    close while an answer streams never loses the bytes of its next
    request."""

    def __init__(self, reader):
        self.r = reader
        self.buf = bytearray()
        self.eof = False

    async def fill(self):
        try:
            data = await self.r.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def readline(self):
        while b"\n" not in self.buf:
            if self.eof or not await self.fill():
                return b""
        i = self.buf.index(b"\n") + 1
        line = bytes(self.buf[:i])
        del self.buf[:i]
        return line

    async def readexactly(self, n):
        while len(self.buf) < n:
            if self.eof or not await self.fill():
                raise asyncio.IncompleteReadError(bytes(self.buf), n)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


async def read_request(reader):
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return method, path, headers, body


def head(status, ctype, chunked=True, extra=""):
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
              429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
    h = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n" % (status, reason.get(status, "X"), ctype)
    h += "Transfer-Encoding: chunked\r\n" if chunked else ""
    return (h + extra + "\r\n").encode()


def chunk(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return b"%x\r\n%s\r\n" % (len(data), data)


def plain(status, obj):
    body = json.dumps(obj).encode()
    return (head(status, "application/json", chunked=False, extra="Content-Length: %d\r\n" % len(body))
            + body)


def cut(writer):
    """Resets the connection, as a crashed server would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class Gone(Exception):
    pass


async def watch_close(peer, entry):
    """Notes when the client closes the connection (EOF or reset); bytes it
    sends meanwhile stay in the peer's buffer."""
    while await peer.fill():
        pass
    if entry["end"] is None:
        entry["end"] = "client_closed"
        entry["closed_at"] = time.time()


async def sleep_or_gone(entry, seconds):
    t = time.monotonic() + seconds
    while time.monotonic() < t:
        if entry["end"] == "client_closed":
            raise Gone()
        await asyncio.sleep(min(0.005, max(0.0, t - time.monotonic())))


async def send(writer, entry, data):
    if entry["end"] == "client_closed":
        raise Gone()
    writer.write(data)
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        entry["end"] = "client_closed"
        entry["closed_at"] = time.time()
        raise Gone()


def openai_chunk(cid, model, delta, finish=None):
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def openai_completion(reader, writer, req, entry):
    cfg = dict(CONFIG)
    body = req["body"]
    model = body.get("model", "?")
    mode = cfg["mode"]
    if mode == "hang":
        await sleep_or_gone(entry, 3600)
    if mode == "status":
        st = int(cfg["status"])
        await send(writer, entry, plain(st, {"error": {"message": "fixture says %d" % st,
                                                        "type": "server_error", "code": "fixture"}}))
        entry["end"] = "complete"
        return True
    if not body.get("stream"):
        text = "".join(token_text(k) for k in range(1, int(cfg["tokens"]) + 1))
        await send(writer, entry, plain(200, {
            "id": "chatcmpl-fixture", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
            "usage": usage_obj(cfg, int(cfg["tokens"]))}))
        entry["end"] = "complete"
        return True
    await send(writer, entry, head(200, "text/event-stream"))
    cid = "chatcmpl-fx%d" % entry["id"]
    if mode == "slow_first":
        await sleep_or_gone(entry, float(cfg["first_delay_s"]))
    await sleep_or_gone(entry, cfg["ttft_ms"] / 1000.0)
    n = int(cfg["tokens"])
    if mode == "tools":
        parts = [{"role": "assistant", "tool_calls": [{"index": 0, "id": "call_fx1", "type": "function",
                                                       "function": {"name": "get_weather", "arguments": ""}}]},
                 {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]},
                 {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}]
        for i, d in enumerate(parts):
            await send(writer, entry, chunk("data: %s\n\n" % json.dumps(openai_chunk(cid, model, d))))
            if i == 0:
                entry["first_token_at"] = time.time()
            await sleep_or_gone(entry, cfg["interval_ms"] / 1000.0)
        await send(writer, entry, chunk("data: %s\n\n" % json.dumps(openai_chunk(cid, model, {}, "tool_calls"))))
        n = 0
        finish = None
    else:
        finish = "stop"
    for k in range(1, n + 1):
        if mode in ("die_after", "error_mid") and k > int(cfg["die_after"]):
            if mode == "die_after":
                entry["end"] = "died"
                cut(writer)
                return False
            await send(writer, entry, chunk("data: %s\n\n" % json.dumps(
                {"error": {"message": "the fixture failed mid-stream", "type": "server_error",
                           "code": "fixture_mid"}})))
            await send(writer, entry, b"0\r\n\r\n")
            entry["end"] = "complete"
            return True
        delta = {"content": token_text(k)}
        if k == 1:
            delta["role"] = "assistant"
        await send(writer, entry, chunk("data: %s\n\n" % json.dumps(openai_chunk(cid, model, delta))))
        if k == 1:
            entry["first_token_at"] = time.time()
        if k < n:
            await sleep_or_gone(entry, cfg["interval_ms"] / 1000.0)
    if finish:
        await send(writer, entry, chunk("data: %s\n\n" % json.dumps(openai_chunk(cid, model, {}, finish))))
    if cfg["usage"] and (body.get("stream_options") or {}).get("include_usage"):
        u = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [], "usage": usage_obj(cfg, n)}
        await send(writer, entry, chunk("data: %s\n\n" % json.dumps(u)))
    await send(writer, entry, chunk("data: [DONE]\n\n"))
    await send(writer, entry, b"0\r\n\r\n")
    entry["end"] = "complete"
    return True


async def ollama_chat(reader, writer, req, entry):
    """Replays the recorded Ollama stream, with this request's model name
    and, between lines, the configured pacing."""
    cfg = dict(CONFIG)
    model = req["body"].get("model", "?")
    with open(OLLAMA_FIXTURE, encoding="utf-8") as f:
        lines = [json.loads(x) for x in f if x.strip()]
    if cfg["mode"] == "status":
        st = int(cfg["status"])
        await send(writer, entry, plain(st, {"error": "fixture says %d" % st}))
        entry["end"] = "complete"
        return True
    await send(writer, entry, head(200, "application/x-ndjson"))
    await sleep_or_gone(entry, cfg["ttft_ms"] / 1000.0)
    for i, obj in enumerate(lines):
        obj["model"] = model
        if cfg["mode"] == "die_after" and i >= int(cfg["die_after"]):
            entry["end"] = "died"
            cut(writer)
            return False
        await send(writer, entry, chunk(json.dumps(obj) + "\n"))
        if i == 0:
            entry["first_token_at"] = time.time()
        await sleep_or_gone(entry, cfg["interval_ms"] / 1000.0)
    await send(writer, entry, b"0\r\n\r\n")
    entry["end"] = "complete"
    return True


async def handle(reader, writer):
    reader = Peer(reader)
    try:
        while True:
            r = await read_request(reader)
            if r is None:
                break
            method, path, headers, raw = r
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            if path == "/_fixture/log":
                writer.write(plain(200, LOG))
                await writer.drain()
                continue
            if path == "/_fixture/config" and method == "POST":
                CONFIG.update(body)
                writer.write(plain(200, CONFIG))
                await writer.drain()
                continue
            if path == "/_fixture/reset":
                LOG.clear()
                writer.write(plain(200, {}))
                await writer.drain()
                continue
            if path == "/v1/models" and method == "GET":
                if CONFIG["mode"] == "status":
                    writer.write(plain(int(CONFIG["status"]), {"error": {"message": "down"}}))
                else:
                    writer.write(plain(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fixture"} for m in MODELS]}))
                await writer.drain()
                continue
            if path == "/api/tags" and method == "GET":
                writer.write(plain(200, {"models": [
                    {"name": m, "model": m, "modified_at": "2024-01-01T00:00:00Z", "size": 1,
                     "digest": "sha256:0", "details": {"format": "gguf", "family": "llama"}} for m in MODELS]}))
                await writer.drain()
                continue
            entry = {"id": len(LOG) + 1, "path": path, "body": body,
                     "authorization": headers.get("authorization"),
                     "headers": headers, "start": time.time(), "first_token_at": None,
                     "end": None, "closed_at": None}
            LOG.append(entry)
            watcher = asyncio.ensure_future(watch_close(reader, entry))
            try:
                if path == "/v1/chat/completions" and method == "POST":
                    keep = await openai_completion(reader, writer, {"body": body}, entry)
                elif path == "/api/chat" and method == "POST":
                    keep = await ollama_chat(reader, writer, {"body": body}, entry)
                else:
                    writer.write(plain(404, {"error": {"message": "no route"}}))
                    await writer.drain()
                    keep = True
            except Gone:
                keep = False
            if not watcher.done():
                watcher.cancel()
                try:
                    await watcher
                except asyncio.CancelledError:
                    pass
            if not keep or reader.eof:
                break
    except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main_async(args):
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    srv = await asyncio.start_server(handle, "127.0.0.1", args.port, ssl=ctx)
    print("listening on %d" % args.port, flush=True)
    async with srv:
        await srv.serve_forever()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--models", default="fx-model")
    args = ap.parse_args()
    MODELS.extend(m for m in args.models.split(",") if m)
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
