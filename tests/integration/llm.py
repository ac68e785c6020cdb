"""The LLM backends the integration tests run beside sluice, and /v1
helpers: tests/integration/upstream.py (a fault-injecting OpenAI-compatible
server and Ollama replayer), the npm package @dwmkerr/mock-llm, API keys."""

import http.client
import json
import os
import subprocess
import time

from harness import DEFAULT_USER, check, free_port

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node")


class Upstream:
    """tests/integration/upstream.py on a free loopback port: a fault-injecting
    OpenAI-compatible server and Ollama replayer (see its docstring)."""

    def __init__(self, models=("fx-model",), tls=None, **config):
        self.port = free_port()
        self.tls = tls
        cmd = ["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "upstream.py"),
               "--port", str(self.port), "--models", ",".join(models)]
        if tls:
            cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline()
        check(b"listening" in line, "upstream fixture did not start: %r" % line)
        if config:
            self.config(**config)

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def _call(self, method, path, body=None):
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=self.tls[2])
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                         headers={"Content-Type": "application/json"} if body is not None else {})
            r = conn.getresponse()
            return json.loads(r.read() or b"null")
        finally:
            conn.close()

    def config(self, **kw):
        return self._call("POST", "/_fixture/config", kw)

    def log(self):
        return self._call("GET", "/_fixture/log")

    def reset(self):
        self._call("GET", "/_fixture/reset")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class MockLlm:
    """The npm package @dwmkerr/mock-llm (tests/node): a third-party
    OpenAI-compatible server that answers with the last user message."""

    def __init__(self, tmp):
        main = os.path.join(NODE_DIR, "node_modules", "@dwmkerr", "mock-llm", "dist", "main.js")
        check(os.path.exists(main), "%s is missing: run npm ci --prefix tests/node "
              "(firmware-config/setup-deps.sh does)" % main)
        self.port = free_port()
        cfg = os.path.join(tmp, "mock-llm.yaml")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write("streaming:\n  chunkSize: 4\n  chunkIntervalMs: 5\n"
                    "rules:\n"
                    "  - path: \"/v1/chat/completions\"\n    method: \"POST\"\n    match: \"@\"\n"
                    "    response:\n      status: 200\n      content: |\n"
                    "        {\"id\": \"chatcmpl-mock\", \"object\": \"chat.completion\", \"created\": 1,\n"
                    "         \"model\": \"{{jmes request body.model}}\",\n"
                    "         \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\",\n"
                    "           \"content\": \"{{jmes request body.messages[-1].content}}\"}, \"finish_reason\": \"stop\"}]}\n"
                    "  - path: \"/v1/models\"\n    method: \"GET\"\n    response:\n      status: 200\n"
                    "      content: '{\"object\": \"list\", \"data\": [{\"id\": \"mock-model\", \"object\": \"model\"}]}'\n")
        env = dict(os.environ, PORT=str(self.port), HOST="127.0.0.1")
        self.log_path = os.path.join(tmp, "mock-llm.log")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(["node", main, "--config", cfg], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, env=env, cwd=tmp)
        deadline = time.monotonic() + 20
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v1/models")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            check(self.proc.poll() is None and time.monotonic() < deadline,
                  "mock-llm did not start: %s" % open(self.log_path, "rb").read()[-500:])
            time.sleep(0.1)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def v1(srv, body, key=None, stream=False, timeout=30):
    """POST /v1/chat/completions; the Response, or for stream the raw body."""
    hdrs = {"Authorization": "Bearer " + (key or srv.token)}
    return srv.request("POST", "/v1/chat/completions", body, headers=hdrs, timeout=timeout)


def sse_data(body):
    """The data lines of an SSE body, in order (comments dropped)."""
    out = []
    for block in body.decode("utf-8").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(line[6:])
    return out


def api_key(srv, user=None):
    """A fresh API key of `user` (the default user) through sluicectl."""
    p = srv.sluicectl("keys", "create", "--user", user or DEFAULT_USER[0], "--label", "it")
    check(p.returncode == 0, "keys create: %r" % p.stderr)
    return p.stdout.decode().strip()


def api_key_with_id(srv, user=None):
    """A fresh API key of `user` (the default user) and its public id."""
    p = srv.sluicectl("--json", "keys", "create", "--user", user or DEFAULT_USER[0], "--label", "it")
    check(p.returncode == 0, "keys create: %r" % p.stderr)
    k = json.loads(p.stdout)
    return k["key"], k["id"]
