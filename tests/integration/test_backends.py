#!/usr/bin/python3
"""Real backends behind sluice (issue 8), against the fault-injecting
fixture (tests/integration/upstream.py) and the Ollama replayer:

  - chat answers from an OpenAI-compatible backend with the history and the
    agent's system prompt sent, usage and cost from the backend; Ollama's
    NDJSON with its options mapped;
  - a backend down at start; killed mid-stream (an explicit error, done
    status error); slow to its first token (keep-alives, then the timeout);
    one of two failing (failover, invisible to the client); the circuit
    breaker opening and recovering;
  - a cancel, sessions kill and a /v1 client disconnect closing the
    upstream request (timed from the backend's side);
  - https with a test CA and an API key that no log ever shows;
  - sluicectl backends and /metrics; an interrupted answer's usage.
"""

import json
import os
import re
import socket
import subprocess
import time

import harness
from harness import check, check_eq
from llm import Upstream, api_key, sse_data, v1

WORDS = "t1 t2 t3 t4 t5"


def events_until_done(c, mid, timeout=30):
    """Every event of mid up to its done, keep-alive comments included."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        check(left > 0, "no done for %s: %r" % (mid, [e.get("type") for e in out]))
        e = c.next_event(left)
        check(e is not None, "the stream ended before done: %r" % [x.get("type") for x in out])
        out.append(e)
        if e.get("type") == "done" and e.get("message_id") == mid:
            return out


def chat(srv, model, content, agent=None, timeout=30):
    """A new session on model, one message, every event of its answer."""
    body = {"model_id": model}
    if agent:
        body["agent_id"] = agent
    r = srv.request("POST", "/api/chat/sessions", body)
    check_eq(r.status, 201, "session on %s (body %r)" % (model, r.body))
    sid = r.json()["id"]
    c = harness.CurlSse(srv.base + "/api/chat/stream/" + sid, headers=srv.auth_headers())
    c.wait_head()
    mid = srv.post_message(sid, content)
    ev = events_until_done(c, mid, timeout)
    return sid, c, mid, ev


def tokens_of(ev):
    return "".join(e["text"] for e in ev if e.get("type") == "token")


def wait_for(what, fn, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        check(time.monotonic() < deadline, "timed out waiting for %s" % what)
        time.sleep(0.05)


def backends(srv):
    p = srv.sluicectl("--json", "backends", "list")
    check_eq(p.returncode, 0, "backends list (stderr %r)" % p.stderr)
    return {b["name"]: b for b in json.loads(p.stdout)["backends"]}


def test_history_usage_and_ollama(env):
    fx = Upstream(models=["fx-model"])
    oll = Upstream(models=["llama3.2"])
    srv = env.fresh(backends=[("up", {"type": "openai", "url": fx.url, "models": "fx-model"}),
                              ("oll", {"type": "ollama", "url": oll.url, "models": "llama3.2"})],
                    model_terms={"fx-model": {"cost_in_per_mtok": 3, "cost_out_per_mtok": 6}},
                    agents={"brief": {"model": "fx-model", "system_prompt": "Answer in five tokens."}})
    try:
        srv.start()
        sid, c, mid, ev = chat(srv, "fx-model", "first question", agent="brief")
        kinds = [e["type"] if e["type"] != "status_update" else e["status"] for e in ev if e["type"] != ":comment"]
        check_eq(kinds[:3], ["queued", "waiting_backend", "streaming"], "statuses of a network answer")
        check_eq(tokens_of(ev), WORDS, "the answer's text")
        usage = [e for e in ev if e["type"] == "usage"]
        check_eq([(u["prompt_tokens"], u["completion_tokens"]) for u in usage], [(7, 5)], "usage from the backend")
        check(abs(usage[0]["cost_usd"] - (7 * 3 + 5 * 6) / 1e6) < 1e-12, "cost at [model] prices: %r" % usage)
        check_eq(ev[-1]["status"], "complete", "done")
        mid2 = srv.post_message(sid, "second question")
        ev2 = events_until_done(c, mid2)
        c.close()
        check_eq(tokens_of(ev2), WORDS, "second answer")
        msgs = [e["body"]["messages"] for e in fx.log() if e["path"] == "/v1/chat/completions"][-1]
        check_eq([(m["role"], m["content"]) for m in msgs],
                 [("system", "Answer in five tokens."), ("user", "first question"), ("assistant", WORDS),
                  ("user", "second question")], "the history sent with the second message")
        stored = srv.request("GET", "/api/chat/sessions/" + sid).json()["messages"]
        check_eq([(m["role"], m["content"], m["status"]) for m in stored],
                 [("user", "first question", "complete"), ("assistant", WORDS, "complete"),
                  ("user", "second question", "complete"), ("assistant", WORDS, "complete")], "stored")
        check_eq(stored[1]["usage"]["prompt_tokens"], 7, "stored usage")

        # Ollama: NDJSON, usage from the last line, options mapped.
        sid, c, mid, ev = chat(srv, "llama3.2", "why is the sky blue?")
        c.close()
        check_eq(tokens_of(ev), "The sky is blue.", "Ollama's answer")
        check_eq([(e["prompt_tokens"], e["completion_tokens"]) for e in ev if e["type"] == "usage"], [(26, 5)],
                 "usage from prompt_eval_count and eval_count")
        r = v1(srv, {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5,
                     "top_p": 0.9, "max_tokens": 10, "stop": "x", "seed": 3,
                     "response_format": {"type": "json_object"}})
        check_eq(r.status, 200, "/v1 through Ollama (body %r)" % r.body)
        check_eq(r.json()["usage"]["prompt_tokens"], 26, "Ollama usage on /v1")
        body = oll.log()[-1]["body"]
        check_eq(body["options"], {"temperature": 0.5, "top_p": 0.9, "num_predict": 10, "stop": ["x"], "seed": 3},
                 "OpenAI parameters as Ollama options")
        check_eq((body["format"], body["stream"]), ("json", True), "format and stream")
    finally:
        srv.stop()
        fx.stop()
        oll.stop()


def test_down_at_start_then_up(env):
    port = harness.free_port()
    srv = env.fresh(backends=[("late", {"type": "openai", "url": "http://127.0.0.1:%d" % port,
                                        "models": "fx-model", "health_interval_ms": 200,
                                        "connect_timeout_ms": 500})])
    fx = None
    try:
        srv.start()
        wait_for("the health check to mark it down", lambda: backends(srv)["late"]["health"] == "down")
        sid, c, mid, ev = chat(srv, "fx-model", "anyone there?")
        c.close()
        check_eq(ev[-1]["status"], "error", "done status while the backend is down")
        check_eq(ev[-1]["error"]["code"], "backend_unavailable", "the error says why")
        check_eq([e["type"] for e in ev if e["type"] in ("usage", "done")], ["usage", "done"], "usage, then done")
        r = v1(srv, {"model": "fx-model", "messages": [{"role": "user", "content": "x"}]})
        check_eq(r.status, 503, "/v1 while the backend is down (body %r)" % r.body)
        check_eq(r.headers.get("retry-after"), "1", "Retry-After")
        # It comes up: the next health check routes to it again.
        fx = Upstream.__new__(Upstream)
        fx.port, fx.tls = port, None
        fx.proc = subprocess.Popen(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "upstream.py"),
                                    "--port", str(port), "--models", "fx-model"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check(b"listening" in fx.proc.stdout.readline(), "fixture started")
        wait_for("the backend to be up", lambda: backends(srv)["late"]["health"] == "up")
        sid, c, mid, ev = chat(srv, "fx-model", "now?")
        c.close()
        check_eq((tokens_of(ev), ev[-1]["status"]), (WORDS, "complete"), "answer once it is up")
    finally:
        srv.stop()
        if fx:
            fx.stop()


def test_killed_mid_stream(env):
    fx = Upstream(models=["fx-model"], mode="die_after", die_after=2, tokens=5, interval_ms=30)
    srv = env.fresh(backends=[("up", {"type": "openai", "url": fx.url, "models": "fx-model"})])
    try:
        srv.start()
        sid, c, mid, ev = chat(srv, "fx-model", "die please")
        c.close()
        check_eq(tokens_of(ev), "t1 t2", "the tokens before the backend died")
        done = ev[-1]
        check_eq(done["status"], "error", "done status after the backend died")
        check_eq(done["error"]["code"], "backend_lost", "an explicit error, never a clean end")
        usage = [e for e in ev if e["type"] == "usage"]
        check_eq([u["completion_tokens"] for u in usage], [2], "usage counts the tokens sent")
        stored = srv.request("GET", "/api/chat/sessions/" + sid).json()["messages"][-1]
        check_eq((stored["status"], stored["content"]), ("error", "t1 t2"), "stored")
        # /v1 streamed: the error comes as an error event, and no [DONE].
        r = v1(srv, {"model": "fx-model", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        data = sse_data(r.body)
        check(data and data[-1] != "[DONE]", "no [DONE] after a failure: %r" % data[-2:])
        err = json.loads(data[-1])
        check_eq(err["error"]["code"], "backend_lost", "the stream's error event")
        text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1])
        check_eq(text, "t1 t2", "what came before the error")
    finally:
        srv.stop()
        fx.stop()


def test_slow_first_token(env):
    fx = Upstream(models=["fx-model"], mode="slow_first", first_delay_s=30)
    srv = env.fresh(sse_keepalive_s=1, backends=[("slow", {"type": "openai", "url": fx.url, "models": "fx-model",
                                                          "first_token_timeout_ms": 3000})])
    try:
        srv.start()
        t0 = time.monotonic()
        sid, c, mid, ev = chat(srv, "fx-model", "take your time", timeout=20)
        took = time.monotonic() - t0
        c.close()
        alive = [e for e in ev if e["type"] == ":comment" and e["text"] == "keep-alive"]
        check(len(alive) >= 2, "keep-alives while waiting: %r" % [e["type"] for e in ev])
        check_eq(ev[-1]["status"], "error", "done after the first-token timeout")
        check_eq(ev[-1]["error"]["code"], "backend_timeout", "the error code")
        check(2.5 < took < 8, "the timeout took %.1f s (first_token_timeout_ms = 3000)" % took)
        wait_for("the fixture to see its request closed",
                 lambda: fx.log()[-1]["end"] == "client_closed")
        print("  first-token timeout after %.2f s, %d keep-alives" % (took, len(alive)))
    finally:
        srv.stop()
        fx.stop()


def test_failover_and_breaker(env):
    bad = Upstream(models=["fx-model"], mode="status", status=500)
    good = Upstream(models=["fx-model"])
    srv = env.fresh(backends=[
        ("bad", {"type": "openai", "url": bad.url, "models": "fx-model", "health_interval_ms": 0,
                 "breaker_failures": 2, "breaker_open_ms": 1500}),
        ("good", {"type": "openai", "url": good.url, "models": "fx-model"})])
    try:
        srv.start()
        # One of two fails: the client never notices.
        for i in range(4):
            sid, c, mid, ev = chat(srv, "fx-model", "question %d" % i)
            c.close()
            check_eq((tokens_of(ev), ev[-1]["status"]), (WORDS, "complete"), "answer %d" % i)
            check(not [e for e in ev if e.get("error")], "no error reaches the client: %r" % ev)
        b = backends(srv)
        check(b["bad"]["failovers"] >= 1 and b["bad"]["errors"] >= 1, "failovers counted: %r" % b["bad"])
        tried = len(bad.log())
        check(tried >= 1, "the failing backend was tried")
        check_eq(b["bad"]["breaker"], "open", "two failures open its breaker")
        # While open, nothing is sent to it.
        sid, c, mid, ev = chat(srv, "fx-model", "while open")
        c.close()
        check_eq(ev[-1]["status"], "complete", "served by the other")
        check_eq(len(bad.log()), tried, "nothing sent to an open backend")
        # It recovers: after breaker_open_ms one request probes it.
        bad.config(mode="normal")
        time.sleep(1.6)
        for i in range(3):
            sid, c, mid, ev = chat(srv, "fx-model", "probe %d" % i)
            c.close()
            check_eq(ev[-1]["status"], "complete", "answer %d after the recovery" % i)
        wait_for("the breaker to close", lambda: backends(srv)["bad"]["breaker"] == "closed")
        check(len(bad.log()) > tried, "the recovered backend serves again")
    finally:
        srv.stop()
        bad.stop()
        good.stop()


def closed_after(fx, t0, what):
    e = wait_for("the backend to see the %s request closed" % what,
                 lambda: [x for x in fx.log() if x["end"] == "client_closed" and x["closed_at"] >= t0 - 1])
    dt = e[-1]["closed_at"] - t0
    print("  %s: the backend saw its request closed %.1f ms later" % (what, dt * 1000))
    check(dt < 1.0, "%s reached the backend after %.3f s" % (what, dt))
    return dt


def test_cancel_reaches_backend(env):
    fx = Upstream(models=["fx-model"], tokens=400, interval_ms=20)
    srv = env.fresh(backends=[("up", {"type": "openai", "url": fx.url, "models": "fx-model"})])
    try:
        srv.start()
        # A chat cancel.
        r = srv.request("POST", "/api/chat/sessions", {"model_id": "fx-model"})
        sid = r.json()["id"]
        c = harness.CurlSse(srv.base + "/api/chat/stream/" + sid, headers=srv.auth_headers())
        c.wait_head()
        mid = srv.post_message(sid, "a long answer")
        wait_for("tokens", lambda: (c.next_event(5) or {}).get("type") == "token")
        t0 = time.time()
        r = srv.request("POST", "/api/chat/sessions/%s/cancel" % sid)
        check_eq(r.status, 200, "cancel")
        ev = events_until_done(c, mid)
        check_eq(ev[-1]["status"], "cancelled", "done cancelled")
        closed_after(fx, t0, "chat cancel")
        # sluicectl sessions kill.
        mid = srv.post_message(sid, "another long answer")
        wait_for("tokens", lambda: (c.next_event(5) or {}).get("type") == "token")
        t0 = time.time()
        p = srv.sluicectl("sessions", "kill", sid)
        check_eq(p.returncode, 0, "sessions kill (stderr %r)" % p.stderr)
        closed_after(fx, t0, "sessions kill")
        c.close()
        # A /v1 client that disconnects mid-stream.
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        body = json.dumps({"model": "fx-model", "stream": True,
                           "messages": [{"role": "user", "content": "go on"}]}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (srv.token.encode(), len(body), body))
        got = b""
        while got.count(b"data: ") < 3:
            got += s.recv(65536)
        t0 = time.time()
        s.close()
        closed_after(fx, t0, "/v1 disconnect")
    finally:
        srv.stop()
        fx.stop()


def make_ca(tmp):
    """A test CA and a server certificate for 127.0.0.1 it signed (openssl CLI)."""
    def ssl(*a):
        p = subprocess.run(["openssl"] + list(a), cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check_eq(p.returncode, 0, "openssl %s: %r" % (" ".join(a), p.stderr[-300:]))
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sluice test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "srv.key", "-out", "srv.csr")
    with open(os.path.join(tmp, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "srv.pem")
    return [os.path.join(tmp, n) for n in ("srv.pem", "srv.key", "ca.pem")]


def test_https_key_never_logged(env):
    secret = "sk-live-" + os.urandom(12).hex()
    srv = env.fresh(env={"FX_API_KEY": secret})
    tls = make_ca(srv.tmp)
    fx = Upstream(models=["fx-model"], tls=tls)
    srv.backends = [("hosted", {"type": "openai", "url": fx.url, "models": "fx-model", "api_key_env": "FX_API_KEY",
                                "ca_file": tls[2], "headers": "X-Org: acme | X-Project: sluice-it"})]
    srv.write_conf()
    try:
        srv.start()
        sid, c, mid, ev = chat(srv, "fx-model", "over https")
        c.close()
        check_eq((tokens_of(ev), ev[-1]["status"]), (WORDS, "complete"), "an answer over https")
        e = fx.log()[-1]
        check_eq(e["authorization"], "Bearer " + secret, "the key from api_key_env")
        check_eq((e["headers"].get("x-org"), e["headers"].get("x-project")), ("acme", "sluice-it"), "extra headers")
        r = v1(srv, {"model": "fx-model", "messages": [{"role": "user", "content": "x"}]})
        check_eq(r.status, 200, "/v1 over https")
        out = srv.sluicectl("--json", "backends", "list").stdout + srv.sluicectl("stats").stdout
        check(secret.encode() not in out, "sluicectl never shows the key")
        # A backend whose certificate is not trusted is refused.
        srv.sluicectl("backends", "add", "untrusted", "--type", "openai", "--url", fx.url, "--models", "fx-other",
                      "--set", "health_interval_ms=0")
        r = v1(srv, {"model": "fx-other", "messages": [{"role": "user", "content": "x"}]})
        check(r.status in (502, 503), "an unverified https backend fails (status %d)" % r.status)
        srv.stop_proc("sluice-dataplane")
        srv.stop_proc("sluice-control")
        for name, logs in srv.logs.items():
            for log in logs:
                with open(log, "rb") as f:
                    check(secret.encode() not in f.read(), "the API key appears in %s's log %s" % (name, log))
        with open(srv.conf_path, "rb") as f:
            check(secret.encode() not in f.read(), "the key is not in the configuration")
        for root, _, files in os.walk(os.path.join(srv.tmp, "store")):
            for n in files:
                with open(os.path.join(root, n), "rb") as f:
                    check(secret.encode() not in f.read(), "the API key is in the store file %s" % n)
    finally:
        srv.stop()
        fx.stop()


def test_sluicectl_backends_and_metrics(env):
    a = Upstream(models=["fx-model"])
    b = Upstream(models=["fx-model"])
    srv = env.fresh(backends=[("a", {"type": "openai", "url": a.url, "models": "fx-model"})])
    try:
        srv.start()
        p = srv.sluicectl("backends", "add", "b", "--type", "openai", "--url", b.url, "--models", "fx-model",
                          "--set", "weight=3")
        check_eq(p.returncode, 0, "backends add (stderr %r)" % p.stderr)
        bs = backends(srv)
        check(bs["b"]["runtime"] and bs["b"]["weight"] == 3, "the added backend: %r" % bs["b"])
        p = srv.sluicectl("backends", "add", "bad", "--type", "openai", "--url", "ftp://x")
        check(p.returncode == 1 and b"url: expected" in p.stderr, "a bad definition is refused: %r" % p.stderr)
        p = srv.sluicectl("backends", "drain", "a")
        check_eq(p.returncode, 0, "drain")
        a.reset()
        for i in range(3):
            r = v1(srv, {"model": "fx-model", "messages": [{"role": "user", "content": "q%d" % i}]})
            check_eq(r.status, 200, "served while a drains")
        check_eq(len(a.log()), 0, "a draining backend gets no new request")
        check_eq(backends(srv)["a"]["state"], "draining", "its state")
        srv.sluicectl("backends", "enable", "a")
        srv.sluicectl("backends", "remove", "b")
        check("b" not in backends(srv), "removed")
        r = v1(srv, {"model": "fx-model", "messages": [{"role": "user", "content": "after"}]})
        check_eq(r.status, 200, "served by a again")
        check(len(a.log()) >= 1, "a serves again once enabled")
        human = srv.sluicectl("backends", "list").stdout.decode()
        check(re.search(r"^a\s+openai\s+enabled\s+up\s+closed", human, re.M), "the table: %r" % human)
        time.sleep(1.2)
        m = srv.request("GET", "/metrics").body.decode()
        for fam in ("sluice_backend_requests_total", "sluice_backend_errors_total", "sluice_backend_inflight",
                    "sluice_backend_ttft_seconds_bucket", "sluice_backend_up", "sluice_backend_breaker_state",
                    "sluice_backend_completion_tokens_total"):
            check(("# TYPE %s" % fam.replace("_bucket", "")) in m, "%s in /metrics" % fam)
        check(re.search(r'^sluice_backend_requests_total\{backend="a",model="fx-model"\} [1-9]', m, re.M),
              "requests of a counted: %r" % [l for l in m.splitlines() if "requests_total" in l])
        check(re.search(r'^sluice_backend_ttft_seconds_count\{backend="a",model="fx-model"\} [1-9]', m, re.M),
              "TTFT histogram of a")
    finally:
        srv.stop()
        a.stop()
        b.stop()


def test_interrupted_answer_usage(env):
    srv = env.fresh()
    try:
        srv.start()
        sid = srv.create_session("synth-slow")
        c = harness.CurlSse(srv.base + "/api/chat/stream/" + sid, headers=srv.auth_headers())
        c.wait_head()
        mid = srv.post_message(sid, "three word prompt")
        got = 0
        while got < 3:
            e = c.next_event(10)
            check(e is not None, "tokens")
            got = e.get("seq", got) if e.get("type") == "token" else got
        srv.kill("sluice-control")
        ev = events_until_done(c, mid, timeout=20)
        c.close()
        tail = [e for e in ev if e["type"] in ("usage", "done")]
        check_eq([e["type"] for e in tail], ["usage", "done"], "an interrupted answer gets its usage first")
        check_eq(tail[1]["status"], "interrupted", "done interrupted")
        ntok = max(e["seq"] for e in ev if e["type"] == "token") if any(e["type"] == "token" for e in ev) else got
        check_eq((tail[0]["prompt_tokens"], tail[0]["completion_tokens"]), (3, max(ntok, got)),
                 "the usage counts the prompt and the tokens delivered")
        srv.start_control()
        srv.wait_ready()
        m = wait_for("the stored interrupted answer", lambda: [
            x for x in srv.request("GET", "/api/chat/sessions/" + sid).json().get("messages", [])
            if x["role"] == "assistant" and x["status"] == "interrupted"])
        p = srv.sluicectl("--json", "sessions", "show", sid)
        stored = json.loads(p.stdout)["session"]["messages"][-1]
        check_eq(m[0]["usage"]["completion_tokens"], stored["ntokens"], "stored usage counts the tokens stored")
        check_eq(m[0]["usage"]["prompt_tokens"], 3, "and the prompt")
    finally:
        srv.stop()


if __name__ == "__main__":
    raise SystemExit(harness.run([test_history_usage_and_ollama, test_down_at_start_then_up, test_killed_mid_stream,
                                  test_slow_first_token, test_failover_and_breaker, test_cancel_reaches_backend,
                                  test_https_key_never_logged, test_sluicectl_backends_and_metrics,
                                  test_interrupted_answer_usage]))
