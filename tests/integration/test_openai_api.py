#!/usr/bin/python3
"""The OpenAI-compatible API (issue 8): sluice's /v1 in front of real
OpenAI-compatible servers, checked with the official OpenAI SDK used as its
users use it (tests/node/sdk_check.mjs: stream and non-stream with usage, a
streamed tool call, AuthenticationError for a bad key, NotFoundError for an
unknown model, RateLimitError for a full queue and for an API key over its
tokens-per-day limit, with the limit's code), and against a third-party
server, the npm package @dwmkerr/mock-llm, for /v1 and chat sessions alike.
Conversations made through /v1 are recorded per key (store: false opts out).
integration_openai_api_tls runs the same with tls = on, every client on https."""

import json
import os
import subprocess
import time

import harness
import llm
from harness import check, check_eq
from llm import MockLlm, Upstream, sse_data, v1


def test_sdk_and_mock_llm(env):
    fx = Upstream(models=["fx-model"])
    fxt = Upstream(models=["fx-tools"], mode="tools")
    fxb = Upstream(models=["fx-busy"], mode="slow_first", first_delay_s=30)
    srv = env.fresh(backends=[
        ("up", {"type": "openai", "url": fx.url, "models": "fx-model"}),
        ("tools", {"type": "openai", "url": fxt.url, "models": "fx-tools"}),
        ("busy", {"type": "openai", "url": fxb.url, "models": "fx-busy", "max_concurrency": 1,
                  "max_queue": 0}),
    ], model_terms={"fx-model": {"cost_in_per_mtok": 1, "cost_out_per_mtok": 2}})
    mock = None
    try:
        mock = MockLlm(srv.tmp)
        srv.backends.append(("mock", {"type": "openai", "url": mock.url, "models": "mock-model"}))
        srv.write_conf()
        srv.start()
        key, kid = llm.api_key_with_id(srv)
        # A key limited to one answer a day: the fixture's answers are 5 tokens, and an answer
        # that ends exactly at the budget is whole (one that went past it would be cut).
        limited, limited_id = llm.api_key_with_id(srv)
        p = srv.sluicectl("limits", "set", "--key", limited_id, "tokens_per_day=5")
        check_eq(p.returncode, 0, "limits set on the limited key: %r" % p.stderr[-300:])
        # The day's count must not roll over between its two requests.
        left = 86400 - time.time() % 86400
        if left < 30:
            time.sleep(left + 0.2)

        sdk_env = dict(os.environ, SLUICE_BASE=srv.base + "/v1", SLUICE_KEY=key, MODEL="fx-model",
                       TOOLS_MODEL="fx-tools", BUSY_MODEL="fx-busy", LIMITED_KEY=limited)
        if srv.tls:
            # integration_openai_api_tls: the SDK on https, trusting the test CA.
            sdk_env["NODE_EXTRA_CA_CERTS"] = srv.tls["ca"]
            check(srv.base.startswith("https://"), "the SDK's base URL %r is https" % srv.base)
        p = subprocess.run(["node", os.path.join(llm.NODE_DIR, "sdk_check.mjs")], env=sdk_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        results = [json.loads(l) for l in p.stdout.decode().splitlines() if l.startswith("{")]
        for r in results:
            print("  sdk %-34s %s" % (r["check"], "ok" if r["ok"] else "FAILED: %s" % r["detail"]))
        check_eq(sorted(r["check"] for r in results if r["ok"]),
                 sorted(["non_stream_with_usage", "stream_with_usage", "stream_tool_call",
                         "bad_key_is_authentication_error", "unknown_model_is_not_found",
                         "full_queue_is_rate_limit", "over_limit_is_rate_limit", "models_list"]),
                 "checks passed by the OpenAI SDK (stderr %r)" % p.stderr.decode()[-800:])
        check_eq(p.returncode, 0, "sdk_check exit status")
        # The SDK's parameters reached the backend as they were sent.
        sent = [e["body"] for e in fx.log() if e["path"] == "/v1/chat/completions"]
        check(any(b.get("temperature") == 0.2 for b in sent), "temperature passed through: %r" % sent)
        check(all(b.get("stream") is True and b["stream_options"]["include_usage"] for b in sent),
              "sluice always streams upstream with usage: %r" % sent)
        tsent = [e["body"] for e in fxt.log()][0]
        check_eq(tsent["tools"][0]["function"]["name"], "get_weather", "tools passed through")
        check_eq(tsent["tool_choice"], "auto", "tool_choice passed through")

        # The third-party server, non-streamed and streamed through sluice.
        r = v1(srv, {"model": "mock-model", "messages": [{"role": "user", "content": "Hello from the mock"}]}, key)
        check_eq(r.status, 200, "mock-llm through /v1 (body %r)" % r.body)
        check_eq(r.json()["choices"][0]["message"]["content"], "Hello from the mock", "mock-llm echo")
        r = v1(srv, {"model": "mock-model", "stream": True, "stream_options": {"include_usage": True},
                     "messages": [{"role": "user", "content": "streamed through sluice"}]}, key)
        data = sse_data(r.body)
        check_eq(data[-1], "[DONE]", "the stream ends with [DONE]")
        chunks = [json.loads(d) for d in data[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        check_eq(text, "streamed through sluice", "mock-llm streamed text")
        check(any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks), "finish_reason")
        # mock-llm counts nothing: sluice's estimate fills the usage chunk.
        usage = [c["usage"] for c in chunks if c.get("usage")]
        check(len(usage) == 1 and usage[0]["completion_tokens"] > 0, "usage chunk %r" % usage)
        # A chat session on the third-party server: the answer echoes the message.
        sid = srv.create_session("mock-model")
        c = harness.CurlSse(srv.base + "/api/chat/stream/" + sid, headers=srv.auth_headers())
        c.wait_head()
        mid = srv.post_message(sid, "echo me please")
        ev = c.collect_message(mid)
        c.close()
        check_eq("".join(e["text"] for e in ev if e["type"] == "token"), "echo me please", "chat through mock-llm")
        check_eq(ev[-1]["status"], "complete", "chat done")

        # Recorded per key and listable, unless store: false.
        before = srv.request("GET", "/api/chat/sessions?archived=any&limit=100").json()["sessions"]
        r = v1(srv, {"model": "fx-model", "store": False, "messages": [{"role": "user", "content": "forget me"}]}, key)
        check_eq(r.status, 200, "store:false completion")
        time.sleep(0.3)
        after = srv.request("GET", "/api/chat/sessions?archived=any&limit=100").json()["sessions"]
        check_eq(len(after), len(before), "store:false records nothing")
        v1s = [s for s in after if s["agent_id"] == "openai-api"]
        check(len(v1s) >= 4, "the /v1 conversations are listed: %r" % [s["model_id"] for s in after])
        got = srv.request("GET", "/api/chat/sessions/" + v1s[-1]["id"]).json()
        check_eq([m["role"] for m in got["messages"]], ["user", "assistant"], "a recorded /v1 conversation")
        p = srv.sluicectl("--json", "usage", "--key", kid)
        u = json.loads(p.stdout)
        check(u["total"]["answers"] >= 4, "usage under the key: %r" % u)
        fxm = [g for g in u["groups"] if g["model"] == "fx-model"]
        check(fxm and abs(fxm[0]["cost_usd"] - (fxm[0]["prompt_tokens"] * 1 + fxm[0]["completion_tokens"] * 2) / 1e6) < 1e-12,
              "cost at the model's price: %r" % fxm)
    finally:
        srv.stop()
        for u in (fx, fxt, fxb, mock):
            if u:
                u.stop()


if __name__ == "__main__":
    raise SystemExit(harness.run([test_sdk_and_mock_llm]))
