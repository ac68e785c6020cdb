"""Shared harness for sluice's integration tests (stdlib only, /usr/bin/python3).

It writes a private configuration (free loopback port, private channel file,
store and admin socket), starts sluice-control and sluice-dataplane from a
build directory, waits until /readyz answers 200 and stops both afterwards,
removing the channel files. It also computes the synthetic backend's answers
(docs/api.md) so every test can check the exact text it was streamed.
"""

import argparse
import atexit
import ctypes
import glob
import http.client
import ipaddress
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import traceback

MASK64 = (1 << 64) - 1
SANITIZER_RE = re.compile(r"ERROR: (?:Address|Leak|Thread|Memory)Sanitizer|runtime error: ")
_instance_counter = itertools.count()
# Prepended to client commands (curl): a test whose server is reachable only
# from a network namespace sets ["ip", "netns", "exec", NAME].
CLIENT_PREFIX = []
# Prepended to the programs' commands (sluice-control, sluice-dataplane,
# sluicectl) when the test process itself runs inside a client namespace.
SERVER_PREFIX = []
# transport = dpdk settings (see DpdkNet) when the servers run on the native
# stack, else None: {"ip": "10.77.0.2", "device": "net_af_packet0,iface=…",
# "eal_args": "…", "extra": [dataplane lines], "port_extra": [port.0 lines]}.
DPDK = None
# SLUICE_TEST_TLS=1 runs the spine's scripts over TLS unchanged: every server
# gets tls = on with a certificate of a test CA (default_tls()), clients
# speak https/wss through the helpers below (Sluice.base, ws_url, connect,
# CurlSse). CURL_CACERT is the CA curl trusts for https URLs.
TLS_MODE = os.environ.get("SLUICE_TEST_TLS") == "1"
CURL_CACERT = None
_default_tls = {}

# Models every test server offers; see the brief in docs/testing.md.
DEFAULT_MODELS = {
    "synth": {"ttft_ms": 50, "tokens_per_s": 200, "answer_tokens": 24,
              "cost_in_per_mtok": 1.5, "cost_out_per_mtok": 3.0},
    "synth-slow": {"ttft_ms": 100, "tokens_per_s": 5, "answer_tokens": 40},
    "synth-long": {"ttft_ms": 10, "tokens_per_s": 2000, "answer_tokens": 2000},
}


# [limits.user] with every quota and rate off (docs/configuration.md).
UNLIMITED_USER = {"stored_mb": 0, "sessions": 0, "messages_per_min": 0, "concurrent_answers": 0,
                  "tokens_per_min": 0, "tokens_per_day": 0}


class TestFailure(Exception):
    """A check failed; the message says what was sent, expected and got."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(got, expected, what):
    if got != expected:
        raise TestFailure("%s: expected %r, got %r" % (what, expected, got))


# ---- synthetic backend --------------------------------------------------

def _decode_c_literal(body):
    """Decodes the inside of a C string literal into bytes (C escapes)."""
    simple = {"n": 0x0A, "t": 0x09, "r": 0x0D, "\\": 0x5C, '"': 0x22, "'": 0x27,
              "a": 0x07, "b": 0x08, "f": 0x0C, "v": 0x0B, "?": 0x3F}
    out = bytearray()
    raw = body.encode("utf-8")
    i = 0
    while i < len(raw):
        c = raw[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(raw):
            raise ValueError("dangling backslash in %r" % body)
        e = chr(raw[i])
        if e in simple:
            out.append(simple[e])
            i += 1
        elif e == "x":
            j = i + 1
            while j < len(raw) and chr(raw[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(raw[i + 1:j], 16) & 0xFF)
            i = j
        elif e in "01234567":
            j = i
            while j < len(raw) and j < i + 3 and chr(raw[j]) in "01234567":
                j += 1
            out.append(int(raw[i:j], 8) & 0xFF)
            i = j
        else:
            raise ValueError("unknown escape \\%s in %r" % (e, body))
    return bytes(out)


_words_cache = {}


def synthetic_words(source):
    """The 64-word vocabulary, parsed from control/backends/synthetic_words.h."""
    if source in _words_cache:
        return _words_cache[source]
    path = os.path.join(source, "control", "backends", "synthetic_words.h")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.index("synthetic_words[")
    words = []
    for line in text[start:].splitlines()[1:]:
        m = re.match(r'^\s*"((?:[^"\\]|\\.)*)",?\s*$', line)
        if m:
            words.append(_decode_c_literal(m.group(1)).decode("utf-8"))
        elif line.strip().startswith("}"):
            break
    if len(words) != 64:
        raise TestFailure("%s: expected 64 words, parsed %d" % (path, len(words)))
    _words_cache[source] = words
    return words


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK64
    return h


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def expected_tokens(prompt, n, source):
    """The n tokens the synthetic backend produces for prompt (a str)."""
    words = synthetic_words(source)
    seed = fnv1a64(prompt.encode("utf-8"))
    toks = []
    for k in range(1, n + 1):
        w = words[splitmix64((seed + k) & MASK64) % 64]
        toks.append(w if k == 1 else " " + w)
    return toks


def expected_answer(prompt, n, source=None):
    """The full answer text for prompt with n tokens."""
    return "".join(expected_tokens(prompt, n, source or SOURCE_DIR))


def prompt_tokens(prompt):
    """docs/api.md: maximal runs of non-whitespace bytes (space, tab, CR, LF)."""
    return len([r for r in re.split(rb"[ \t\r\n]+", prompt.encode("utf-8")) if r])


# ---- event-sequence checks shared by SSE and WebSocket tests --------------

def check_message_events(events, session_id, message_id, prompt, n_tokens,
                         status="complete", model=None, sse=False):
    """Checks one message's events (dicts with "type" and, for SSE, "_id").

    Order: status_update queued, status_update streaming, tokens (seq
    continuous, each token exactly once), usage exactly once, done last.
    Returns the list of token events. For a cancelled message, n_tokens is the
    number of tokens the answer would have; the streamed prefix must match it.
    """
    label = "message %s" % message_id
    check(events, "%s: no events" % label)
    for e in events:
        check_eq(e.get("session_id"), session_id, "%s %s event session_id" % (label, e.get("type")))
        check_eq(e.get("message_id"), message_id, "%s %s event message_id" % (label, e.get("type")))
    types = [e["type"] for e in events]
    check(len(events) >= 4, "%s: too few events: %r" % (label, types))
    check_eq((types[0], events[0].get("status")), ("status_update", "queued"), label + " first event")
    check_eq((types[1], events[1].get("status")), ("status_update", "streaming"), label + " second event")
    check_eq(types[-1], "done", label + " last event type")
    check_eq(types[-2], "usage", label + " event before done")
    check_eq(types.count("usage"), 1, label + " usage count")
    check_eq(types.count("done"), 1, label + " done count")
    check_eq(events[-1].get("status"), status, label + " done status")
    tokens = events[2:-2]
    for e in tokens:
        check_eq(e["type"], "token", label + " events between streaming and usage")
    seq = 0
    text = []
    for e in tokens:
        nn = e.get("n")
        check(isinstance(nn, int) and nn >= 1, "%s: token event n=%r" % (label, nn))
        check_eq(e.get("seq"), seq + nn, "%s token seq (previous seq %d, n %d)" % (label, seq, nn))
        seq = e["seq"]
        text.append(e.get("text"))
        if sse:
            check_eq(e.get("_id"), "%s:%d" % (message_id, seq), label + " token SSE id")
    if sse:
        check_eq(events[0].get("_id"), "%s:0" % message_id, label + " queued SSE id")
        check_eq(events[1].get("_id"), "%s:0" % message_id, label + " streaming SSE id")
        check_eq(events[-2].get("_id"), "%s:u" % message_id, label + " usage SSE id")
        check_eq(events[-1].get("_id"), "%s:d" % message_id, label + " done SSE id")
    got = "".join(text)
    usage = events[-2]
    if status == "complete":
        check_eq(seq, n_tokens, label + " tokens delivered")
        check_eq(got, expected_answer(prompt, n_tokens), label + " text")
    else:
        check(seq <= n_tokens, "%s: %d tokens > %d" % (label, seq, n_tokens))
        check_eq(got, expected_answer(prompt, seq), label + " text prefix")
    check_eq(usage.get("prompt_tokens"), prompt_tokens(prompt), label + " usage prompt_tokens")
    check_eq(usage.get("completion_tokens"), seq, label + " usage completion_tokens")
    check_eq(usage.get("total_tokens"), prompt_tokens(prompt) + seq, label + " usage total_tokens")
    if model and model in DEFAULT_MODELS:
        m = DEFAULT_MODELS[model]
        cost = (prompt_tokens(prompt) * m.get("cost_in_per_mtok", 0.0)
                + seq * m.get("cost_out_per_mtok", 0.0)) / 1e6
        got_cost = usage.get("cost_usd")
        check(isinstance(got_cost, (int, float)) and abs(got_cost - cost) <= 1e-9 + cost * 1e-6,
              "%s usage cost_usd: expected %r, got %r" % (label, cost, got_cost))
    return tokens


# ---- HTTP helpers -------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value (last one wins)
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise TestFailure("response body is not JSON (%s): %r" % (e, self.body[:300]))

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


# ---- the server pair ----------------------------------------------------

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# The user every server gets on start (tests that need several users add
# their own with add_user / login); requests carry its bearer token.
DEFAULT_USER = ("tester", "tester-password")


class Sluice:
    """A private sluice-control + sluice-dataplane pair on 127.0.0.1.

    `auth` adds keys to the [auth] section (e.g. allowed_origins), `dashboard`
    keys to a [dashboard] section (heartbeat_ms, alert thresholds); start()
    creates DEFAULT_USER with sluicectl and logs in, so request() and
    auth_headers() authenticate as it (default_user=False skips that).
    """

    def __init__(self, build, workers=1, batching="adaptive", sse_keepalive_s=15,
                 ws_max_message=65536, header_timeout_s=10, drain_timeout_s=2, models=None, auth=None,
                 default_user=True, sections=None, dataplane=None, dashboard=None, tls=None,
                 backends=None, model_terms=None, env=None, agents=None):
        """backends: [(name, {key: value})] written as [backend.NAME] sections
        after the synthetic `models` (type included); model_terms:
        {model: {key: value}} as [model.NAME]; agents: {name: {key: value}};
        env: extra environment of sluice-control (API key variables)."""
        self.build = build
        self.backends = list(backends or [])
        self.model_terms = dict(model_terms or {})
        self.agents = dict(agents or {})
        self.env = dict(env or {})
        self.auth = dict(auth or {})
        # Further sections, {"limits": {"conns_per_ip": 8}, "limits.user": {...}}.
        # The per-user quotas are off unless a test sets them: the other
        # tests stream hundreds of answers for one user at once.
        self.dataplane = dict(dataplane or {})  # more [dataplane] keys
        self.sections = {"limits.user": dict(UNLIMITED_USER)}
        for k, v in (sections or {}).items():
            self.sections.setdefault(k, {}).update(v)
        if dashboard:
            self.sections.setdefault("dashboard", {}).update(dashboard)
        self.default_user = default_user
        self.token = None
        self.workers = workers
        self.batching = batching
        self.sse_keepalive_s = sse_keepalive_s
        self.ws_max_message = ws_max_message
        self.header_timeout_s = header_timeout_s
        # Short, so a test that stops the server with answers running does
        # not wait the default 30 s (stop_proc kills after 5 s anyway).
        self.drain_timeout_s = drain_timeout_s
        self.models = models or DEFAULT_MODELS
        self.port = free_port()
        # tls: {"certs": [(name, chain, key), ...], "ca": CA file clients trust,
        # "redirect": bool (a redirect_listen port), "opts": {[tls] key: value}}.
        self.tls = dict(tls) if tls else None
        if self.tls:
            global CURL_CACERT
            CURL_CACERT = self.tls["ca"]
        self.redirect_port = free_port() if self.tls and self.tls.get("redirect") else None
        # Where clients reach the dataplane (a dpdk test serves another address).
        self.host = "127.0.0.1"
        self.tmp = tempfile.mkdtemp(prefix="sluice-it-")
        self.chan_path = "/dev/shm/sluice-test-%d-%d" % (os.getpid(), next(_instance_counter))
        self.conf_path = os.path.join(self.tmp, "sluice.conf")
        self.procs = {}
        self.logs = {}
        self.sanitizer_hits = []
        self.write_conf()

    # -- configuration

    def conf_text(self):
        lines = [
            "[dataplane]",
            "transport = kernel",
            "workers = %d" % self.workers,
            "listen = 127.0.0.1:%d" % self.port,
            "header_timeout_s = %d" % self.header_timeout_s,
            "drain_timeout_s = %d" % self.drain_timeout_s,
            "sse_keepalive_s = %d" % self.sse_keepalive_s,
            "ws_max_message = %d" % self.ws_max_message,
            "pin_workers = false",
        ] + ["%s = %s" % kv for kv in sorted(self.dataplane.items())]
        if self.tls:
            lines.append("tls = on")
            if self.redirect_port:
                lines.append("redirect_listen = 127.0.0.1:%d" % self.redirect_port)
        lines += [
            "",
            "[channel]",
            "path = %s" % self.chan_path,
            "",
            "[control]",
            "admin_socket = %s" % os.path.join(self.tmp, "admin.sock"),
            "store = %s" % os.path.join(self.tmp, "store"),
            "",
            "[batching]",
            "mode = %s" % self.batching,
            "",
            # The cheapest Argon2id libsodium accepts: logins in tests take
            # milliseconds (production defaults are 2 / 65536).
            "[auth]",
        ]
        auth = {"pwhash_ops": 1, "pwhash_mem_kib": 8192}
        auth.update(self.auth)
        for k, v in sorted(auth.items()):
            lines.append("%s = %s" % (k, v))
        lines.append("")
        if self.tls:
            lines.append("[tls]")
            for k, v in sorted(self.tls.get("opts", {}).items()):
                lines.append("%s = %s" % (k, v))
            lines.append("")
            for name, chain, key in self.tls["certs"]:
                lines += ["[cert.%s]" % name, "chain = %s" % chain, "key = %s" % key, ""]
        for name, keys in sorted(self.sections.items()):
            lines.append("[%s]" % name)
            lines.extend("%s = %s" % kv for kv in sorted(keys.items()))
            lines.append("")
        if DPDK is not None:
            lines = dpdk_conf_lines(lines, self)
        for name, m in self.models.items():
            lines.append("[backend.%s]" % name)
            lines.append("type = synthetic")
            lines.append("models = %s" % name)
            for k, v in m.items():
                lines.append("%s = %s" % (k, v))
            lines.append("")
        for kind, sections in (("backend", self.backends), ("model", list(self.model_terms.items())),
                               ("agent", list(self.agents.items()))):
            for name, m in sections:
                lines.append("[%s.%s]" % (kind, name))
                for k, v in m.items():
                    lines.append("%s = %s" % (k, v))
                lines.append("")
        return "\n".join(lines)

    def write_conf(self, text=None):
        os.makedirs(os.path.join(self.tmp, "store"), exist_ok=True)
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(self.conf_text() if text is None else text)

    # -- processes

    def binary(self, name):
        path = os.path.join(self.build, name)
        if not os.access(path, os.X_OK):
            raise TestFailure("%s is missing or not executable: build it first "
                              "(ninja -C %s %s)" % (path, self.build, name))
        return path

    def _spawn(self, name):
        n = sum(len(v) for v in self.logs.values())
        log = os.path.join(self.tmp, "%s.%d.stderr" % (name, n))
        self.logs.setdefault(name, []).append(log)
        env = dict(os.environ)
        env.update(self.env)
        with open(log, "wb") as errf:
            p = subprocess.Popen(SERVER_PREFIX + [self.binary(name), "-c", self.conf_path],
                                 stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, env=env)
        self.procs[name] = p
        return p

    def start_control(self):
        return self._spawn("sluice-control")

    def start_dataplane(self):
        return self._spawn("sluice-dataplane")

    def start(self, ready_timeout=20.0):
        self.start_control()
        self.start_dataplane()
        self.wait_ready(ready_timeout)
        if self.default_user and self.token is None:
            self.add_user(*DEFAULT_USER, role="user")
            self.token = self.login(*DEFAULT_USER)
        return self

    # -- users (docs/api.md "Authentication")

    def sluicectl(self, *args, stdin=None, timeout=30):
        """Runs build/sluicectl -c CONF args...; returns the CompletedProcess."""
        return subprocess.run(SERVER_PREFIX + [self.binary("sluicectl"), "-c", self.conf_path]
                              + list(args),
                              input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)

    def add_user(self, name, password, role="user"):
        """Creates a user through sluicectl (password on stdin, never argv)."""
        p = self.sluicectl("users", "add", name, "--role", role,
                           stdin=(password + "\n").encode("utf-8"))
        check(p.returncode == 0, "sluicectl users add %s --role %s: exit %d, stderr %r"
              % (name, role, p.returncode, p.stderr[-400:]))

    def login(self, name, password, full=False):
        """POST /api/auth/login; returns the session token (or the whole Response)."""
        r = self.request("POST", "/api/auth/login", {"username": name, "password": password},
                         auth=False)
        if full:
            return r
        check_eq(r.status, 200, "POST /api/auth/login as %s status (body %r)" % (name, r.body))
        tok = r.json().get("session_token")
        check(isinstance(tok, str) and len(tok) == 43, "login: session_token %r" % tok)
        return tok

    def auth_headers(self, token=None):
        """{"Authorization": "Bearer <token>"} for curl, websockets and raw clients."""
        tok = token or self.token
        return {"Authorization": "Bearer " + tok} if tok else {}

    def wait_ready(self, timeout=20.0, want=200):
        """Polls /readyz until it answers `want`; bounded by timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None and (want == 200 or name == "sluice-dataplane"):
                    raise TestFailure("%s exited with status %s while waiting for /readyz %d"
                                      % (name, p.returncode, want))
            try:
                r = self.request("GET", "/readyz", timeout=2)
                last = r
                if r.status == want:
                    return r
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.1)
        raise TestFailure("GET /readyz did not answer %d within %.0f s (last: %r)"
                          % (want, timeout, last))

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.get(name)
        if p and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=10)

    def stop_proc(self, name):
        p = self.procs.get(name)
        if not p or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def stop(self):
        for name in ("sluice-dataplane", "sluice-control"):
            self.stop_proc(name)
        for path in [self.chan_path] + glob.glob(self.chan_path + ".bell-*"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if os.path.isdir(self.tmp):
            self._saved_logs = self.stderr_text(limit=20000)
            self.sanitizer_hits += self._sanitizer_reports()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if DPDK is not None:
            dpdk_clean_runtime()

    def _sanitizer_reports(self):
        """Sanitizer reports in the programs' stderr (ASan/UBSan builds)."""
        hits = []
        for name, logs in self.logs.items():
            for log in logs:
                try:
                    with open(log, "rb") as f:
                        text = f.read().decode("utf-8", "replace")
                except OSError:
                    continue
                for m in SANITIZER_RE.finditer(text):
                    hits.append("%s: %s" % (name, text[m.start():m.start() + 1500]))
        return hits

    def stderr_text(self, limit=6000):
        if not os.path.isdir(self.tmp):
            return getattr(self, "_saved_logs", "")[-limit:]
        out = []
        for name, logs in self.logs.items():
            for log in logs:
                try:
                    with open(log, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                if not data:
                    continue
                text = data[-limit:].decode("utf-8", "replace")
                out.append("---- %s (%s) ----\n%s" % (name, log, text))
        return "\n".join(out)

    # -- client helpers

    @property
    def base(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    def ssl_context(self):
        """A client context trusting the test CA (tls servers only)."""
        return ssl.create_default_context(cafile=self.tls["ca"])

    def ws_url(self, path="/ws/chat"):
        return "%s://%s:%d%s" % ("wss" if self.tls else "ws", self.host, self.port, path)

    def ws_ssl(self):
        """The `ssl` argument for websockets.connect: None for ws://."""
        return self.ssl_context() if self.tls else None

    def connect(self, timeout=10):
        """A raw client socket to the dataplane, TLS-wrapped when it speaks TLS."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.tls:
            sock = self.ssl_context().wrap_socket(sock, server_hostname=self.host)
        return sock

    def request(self, method, path, body=None, headers=None, timeout=10, auth=True):
        """One request on a fresh connection (https when the server speaks
        TLS); with auth, the default user's bearer token unless headers carry
        Authorization or Cookie."""
        if self.tls:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=self.ssl_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if auth and not any(k.lower() in ("authorization", "cookie") for k in hdrs):
                hdrs.update(self.auth_headers())
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
            hs = {k.lower(): v for k, v in r.getheaders()}
            return Response(r.status, hs, payload)
        finally:
            conn.close()

    def metric(self, name):
        """The value of /metrics sample `name` (its labelled samples summed)."""
        r = self.request("GET", "/metrics", auth=False)
        check_eq(r.status, 200, "GET /metrics status")
        vals = [float(line.rsplit(" ", 1)[1]) for line in r.body.decode().splitlines()
                if line.startswith(name + " ") or line.startswith(name + "{")]
        check(vals, "/metrics has no %s" % name)
        total = sum(vals)
        return int(total) if total.is_integer() else total

    def create_session(self, model="synth"):
        r = self.request("POST", "/api/chat/sessions", {"model_id": model})
        check_eq(r.status, 201, "POST /api/chat/sessions {model_id:%s} status (body %r)" % (model, r.body))
        s = r.json()
        check(isinstance(s.get("id"), str) and re.fullmatch(r"s_[0-9a-f]{16}", s["id"]),
              "session id %r is not s_ + 16 hex digits" % s.get("id"))
        return s["id"]

    def post_message(self, session_id, content):
        r = self.request("POST", "/api/chat/message", {"session_id": session_id, "content": content})
        check_eq(r.status, 202, "POST /api/chat/message status (body %r)" % r.body)
        mid = r.json().get("message_id")
        check(isinstance(mid, str) and re.fullmatch(r"m_[0-9a-f]{16}", mid),
              "message id %r is not m_ + 16 hex digits" % mid)
        return mid


# ---- SSE client over curl -------------------------------------------------

def default_tls():
    """The tls= of SLUICE_TEST_TLS=1 servers: one certificate for 127.0.0.1
    and localhost from a CA made once per process."""
    if not _default_tls:
        d = tempfile.mkdtemp(prefix="sluice-it-ca-")
        atexit.register(shutil.rmtree, d, True)
        chain, key, ca = make_test_cert(d)
        _default_tls.update({"certs": [("main", chain, key)], "ca": ca})
    return dict(_default_tls)


def browser_home_with_ca(ca):
    """A temporary HOME whose NSS database (what Chromium on Linux trusts)
    holds the test CA; the caller removes it. Needs certutil (libnss3-tools)."""
    home = tempfile.mkdtemp(prefix="sluice-browser-home-")
    nss = os.path.join(home, ".pki", "nssdb")
    os.makedirs(nss)
    for cmd in (["certutil", "-d", "sql:" + nss, "-N", "--empty-password"],
                ["certutil", "-d", "sql:" + nss, "-A", "-t", "C,,", "-n", "sluice-test", "-i", ca]):
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if p.returncode != 0:
            shutil.rmtree(home, ignore_errors=True)
            raise TestFailure("%s: %s" % (" ".join(cmd), p.stderr.decode("utf-8", "replace")))
    return home


def make_test_cert(directory, name="server", sans="DNS:localhost,IP:127.0.0.1", ocsp_url="",
                   keytype="ec"):
    """firmware-config/make-test-cert.sh: a CA in `directory` (made once, then
    shared) and a server certificate; returns (chain, key, ca) paths."""
    script = os.path.join(SOURCE_DIR, "firmware-config", "make-test-cert.sh")
    p = subprocess.run(["bash", script, directory, name, sans, ocsp_url, keytype],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise TestFailure("make-test-cert.sh: exit %d: %s"
                          % (p.returncode, p.stderr.decode("utf-8", "replace")[-600:]))
    return (os.path.join(directory, name + "-chain.pem"), os.path.join(directory, name + ".key"),
            os.path.join(directory, "ca.crt"))


class CurlSse:
    """curl -N as the SSE client; a reader thread parses its stdout as it comes.

    Events land in self.events (a queue) as dicts: the data JSON plus "type"
    (the SSE event name) and "_id" (the id field); comments as {"type":
    ":comment", "text": ...}. The raw header block (curl -i) is kept.
    """

    def __init__(self, url, headers=None, max_time=120, cacert=None):
        cmd = CLIENT_PREFIX + ["curl", "-sS", "-N", "-i", "--max-time", str(max_time), url]
        if cacert is None and url.startswith("https://"):
            cacert = CURL_CACERT
        if cacert:
            cmd += ["--cacert", cacert]
        for k, v in (headers or {}).items():
            cmd += ["-H", "%s: %s" % (k, v)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.events = queue.Queue()
        self.status = None
        self.headers = {}
        self.head_done = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        f = self.proc.stdout
        try:
            line = f.readline()
            m = re.match(rb"HTTP/1\.[01] (\d{3})", line)
            if m:
                self.status = int(m.group(1))
            while True:
                line = f.readline()
                if not line or line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                self.headers[k.strip().lower()] = v.strip()
            self.head_done.set()
            ev = {}
            data = []
            for raw in iter(f.readline, b""):
                line = raw.decode("utf-8").rstrip("\n")
                if line.endswith("\r"):
                    line = line[:-1]
                if line == "":
                    # An event without data lines is not dispatched (SSE spec).
                    if data:
                        self._emit(ev, data)
                    ev, data = {}, []
                elif line.startswith(":"):
                    self.events.put({"type": ":comment", "text": line[1:]})
                else:
                    k, _, v = line.partition(":")
                    if v.startswith(" "):
                        v = v[1:]
                    if k == "data":
                        data.append(v)
                    elif k in ("event", "id", "retry"):
                        ev[k] = v
                    else:
                        self.errors.append("unknown SSE field line %r" % line)
        except Exception as e:  # reported by the test through self.errors
            self.errors.append("SSE reader: %r" % e)
        finally:
            self.head_done.set()
            self.events.put(None)

    def _emit(self, ev, data):
        try:
            obj = json.loads("\n".join(data)) if data else {}
        except ValueError as e:
            self.errors.append("event data is not JSON (%s): %r" % (e, data))
            return
        if not isinstance(obj, dict):
            self.errors.append("event data is not an object: %r" % data)
            return
        if "type" in obj:
            self.errors.append("SSE data carries a type member: %r" % data)
        obj["type"] = ev.get("event", "message")
        obj["_id"] = ev.get("id")
        if "retry" in ev:
            obj["_retry"] = ev["retry"]
        self.events.put(obj)

    def wait_head(self, timeout=10):
        check(self.head_done.wait(timeout), "SSE response head not received within %ds" % timeout)
        return self.status

    def next_event(self, timeout):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def collect_message(self, message_id, timeout=30):
        """Events of message_id up to its done; keep-alive comments are skipped."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            check(left > 0, "SSE: no done for %s within %ds; got %d events: %r"
                  % (message_id, timeout, len(out), [e.get("type") for e in out][-10:]))
            e = self.next_event(left)
            if e is None:
                ended = self.proc.poll() is not None
                raise TestFailure("SSE: %s before done of %s (curl rc %r, stderr %r, reader errors %r); "
                                  "last events %r"
                                  % ("curl stream ended" if ended else "timeout %ds" % timeout,
                                     message_id, self.proc.poll(), self._stderr(), self.errors,
                                     [x.get("type") for x in out][-10:]))
            if e["type"] == ":comment":
                continue
            check(e.get("message_id") == message_id,
                  "SSE: event for another message %r while waiting for %s: %r"
                  % (e.get("message_id"), message_id, e))
            out.append(e)
            if e["type"] == "done":
                return out

    def _stderr(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")[-500:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.thread.join(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()


# ---- runner -------------------------------------------------------------

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="meson build directory with the programs")
    ap.add_argument("--source", default=SOURCE_DIR, help="source tree (for synthetic_words.h)")
    ap.add_argument("-k", dest="only", default=None, help="run only tests whose name contains this")
    return ap.parse_args(argv)


class Env:
    """What a test function gets: the arguments and a cache of running servers.

    Servers are shared between the tests of one file by configuration, and
    replaced when one of their processes died (so one crash fails one test).
    """

    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.source = args.source
        self._servers = {}
        self.used = []
        self.every = []

    def server(self, **kw):
        if TLS_MODE and "tls" not in kw:
            kw["tls"] = default_tls()
        key = repr(sorted(kw.items()))
        s = self._servers.get(key)
        if s is not None and any(p.poll() is not None for p in s.procs.values()):
            s.stop()
            s = None
        if s is None:
            if DPDK is not None:
                # One dataplane owns the veth and the address at a time.
                self.close()
            s = Sluice(self.build, **kw)
            self.every.append(s)
            try:
                s.start()
            except BaseException:
                self.used.append(s)
                s.stop()
                raise
            self._servers[key] = s
        self.used.append(s)
        return s

    def fresh(self, **kw):
        """A server private to one test; the caller stops it."""
        if TLS_MODE and "tls" not in kw:
            kw["tls"] = default_tls()
        if DPDK is not None:
            self.close()
        s = Sluice(self.build, **kw)
        self.every.append(s)
        self.used.append(s)
        return s

    def close(self):
        for s in self._servers.values():
            s.stop()
        self._servers.clear()


def run(tests, argv=None):
    """Runs test functions fn(env) in order; prints one line each and a summary.

    Exit status 0 only if every selected test passed; a missing binary fails
    every test with a message naming it. A failed test prints the tail of the
    programs' stderr it used.
    """
    global SOURCE_DIR
    args = parse_args(argv)
    args.build = os.path.abspath(args.build)
    args.source = os.path.abspath(args.source)
    SOURCE_DIR = args.source
    if os.environ.get("SLUICE_TEST_TRANSPORT", "kernel") == "dpdk" and DPDK is None:
        why = dpdk_unavailable(args.build)
        if why:
            print("skip: %s" % why, flush=True)
            return 77
        net = DpdkNet()
        try:
            net.up()
            return _run(tests, args)
        finally:
            net.down()
    return _run(tests, args)


def _run(tests, args):
    env = Env(args)
    selected = [t for t in tests if not args.only or args.only in t.__name__]
    passed = failed = 0
    try:
        for t in selected:
            t0 = time.monotonic()
            env.used = []
            try:
                t(env)
            except Exception as e:
                failed += 1
                detail = str(e) if isinstance(e, TestFailure) else traceback.format_exc()
                print("FAIL %s (%.1fs): %s" % (t.__name__, time.monotonic() - t0, detail), flush=True)
                for s in env.used:
                    print(s.stderr_text(limit=3000), flush=True)
            else:
                passed += 1
                print("ok   %s (%.1fs)" % (t.__name__, time.monotonic() - t0), flush=True)
    finally:
        env.close()
    # Sanitizer builds: a report in any program's stderr fails the run, even
    # when every client saw the right bytes.
    hits = [h for s in env.every for h in s.sanitizer_hits]
    if hits:
        failed += 1
        print("FAIL sanitizer_reports: %d report(s) in the programs' stderr; first:\n%s"
              % (len(hits), hits[0]), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 and passed > 0 else 1


# ---- transport = dpdk (SLUICE_TEST_TRANSPORT=dpdk) ----------------------
#
# The same tests over sluice's own TCP/IPv4 stack: sluice-dataplane drives
# net_af_packet on the outer end of a veth pair in this (root) namespace and
# owns DPDK_IP; the inner end sits in a private client namespace. The test
# process then moves itself into that namespace, so every client it runs
# (http.client, curl, python websockets, aiohttp, raw sockets) is Linux's TCP
# on the far side of the veth, while the programs start back in the root
# namespace through SERVER_PREFIX. The scripts keep connecting to
# 127.0.0.1:PORT: in the client namespace nftables rewrites that to
# DPDK_IP:PORT (and the source to DPDK_PEER_IP), so no test needs editing.

DPDK_IP = "10.77.0.2"
DPDK_PEER_IP = "10.77.0.1"
DPDK_EAL_ARGS = "--no-huge -m 512 --no-pci"
CLONE_NEWNET = 0x40000000


def dpdk_unavailable(build):
    """Why transport = dpdk cannot be tested here, or None."""
    if os.geteuid() != 0:
        return "SLUICE_TEST_TRANSPORT=dpdk needs root (network namespaces, AF_PACKET)"
    dp = os.path.join(build, "sluice-dataplane")
    try:
        with open(dp, "rb") as f:
            if b"rte_eal_init" not in f.read():
                return "%s was built without DPDK" % dp
    except OSError as e:
        return "%s: %s" % (dp, e)
    for tool in ("ip", "ethtool", "nft"):
        if shutil.which(tool) is None:
            return "%s not installed (firmware-config/setup-deps.sh)" % tool
    return None


def dpdk_conf_lines(lines, srv):
    """Turns a kernel configuration into the dpdk one: one lcore and one
    af_packet queue pair per worker, the port's address, the same port."""
    out = []
    for line in lines:
        if line == "transport = kernel":
            line = "transport = dpdk"
        elif line.startswith("redirect_listen = "):
            line = "redirect_listen = %s:%s" % (DPDK["ip"], line.rsplit(":", 1)[1])
        elif line.startswith("listen = "):
            n = srv.workers
            out.append("listen = %s:%d" % (DPDK["ip"], srv.port))
            out.append("lcores = %s" % ("1" if n == 1 else "0-%d" % (n - 1)))
            out.append("eal_args = %s" % DPDK["eal_args"])
            out.extend(DPDK.get("extra", []))
            continue
        out.append(line)
    dev = DPDK["device"] + (",qpairs=%d" % srv.workers if srv.workers > 1 else "")
    return out + ["[port.0]", "device = %s" % dev, "ipv4 = %s/24" % DPDK["ip"]] + \
        DPDK.get("port_extra", []) + [""]


def dpdk_clean_runtime():
    """EAL runtime directories a killed dataplane left behind. A directory
    without its mp_socket may also be one a dataplane is creating right now
    (another test run on the machine), so only old ones go."""
    now = time.time()
    for d in glob.glob("/var/run/dpdk/sluice-*"):
        try:
            young = now - os.stat(d).st_mtime < 60
        except OSError:
            continue
        if not young and not glob.glob(os.path.join(d, "mp_socket*")):
            shutil.rmtree(d, ignore_errors=True)


def _sh(*cmd, check_rc=True, stdin=None):
    p = subprocess.run(list(cmd), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if check_rc and p.returncode != 0:
        raise TestFailure("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                               p.stderr.decode("utf-8", "replace")[-400:]))
    return p


def setns_net(path_or_fd):
    """Moves the calling thread (and the threads and children it creates
    later) into a network namespace."""
    fd = path_or_fd if isinstance(path_or_fd, int) else os.open(path_or_fd, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (path_or_fd, os.strerror(e)))
    finally:
        if not isinstance(path_or_fd, int):
            os.close(fd)


def client_loopback_nat(ns_prefix, dev, server_ip, client_ip):
    """In the client namespace, 127.0.0.1:ANY goes to server_ip:ANY."""
    rules = ("table ip sluice_loop {\n"
             " chain out {\n  type nat hook output priority -100;\n"
             "  ip daddr 127.0.0.1 tcp dport 1-65535 dnat to %s;\n }\n"
             " chain post {\n  type nat hook postrouting priority 100;\n"
             "  oifname \"%s\" ip saddr 127.0.0.0/8 snat to %s;\n }\n}\n"
             % (server_ip, dev, client_ip))
    _sh(*(ns_prefix + ["nft", "-f", "-"]), stdin=rules.encode())
    for key in ("all", dev):
        _sh(*(ns_prefix + ["sysctl", "-qw", "net.ipv4.conf.%s.route_localnet=1" % key]))


class DpdkNet:
    """The namespace and veth pair of SLUICE_TEST_TRANSPORT=dpdk; up() sets
    DPDK and SERVER_PREFIX and moves the process into the client namespace,
    down() undoes all of it. sources > 0 also gives the client namespace
    that many more addresses (SOURCES_BASE and up, in the server's /24) for
    clients that bind their own: one address reaches the server's one
    address:port from at most its ephemeral ports (ip_local_port_range)."""

    SOURCES_BASE = "10.77.0.64"

    def __init__(self, sources=0):
        if not 0 <= sources <= 64:
            raise ValueError("DpdkNet: sources must be 0..64")
        self.sources = sources
        tag = "%d" % (os.getpid() % 100000)
        self.ns = "sluice-hc" + tag
        self.root_name = "sluice-hr" + tag
        self.out, self.inner = "shd%so" % tag, "shd%si" % tag
        self.root_fd = None

    def up(self):
        global DPDK, SERVER_PREFIX
        self.down()
        ns = ["ip", "netns", "exec", self.ns]
        try:
            _sh("ip", "netns", "add", self.ns)
            # A name for this (root) namespace, for SERVER_PREFIX.
            _sh("ip", "netns", "attach", self.root_name, str(os.getpid()))
            _sh("ip", "link", "add", self.out, "type", "veth", "peer", "name", self.inner)
            _sh("ip", "link", "set", self.inner, "netns", self.ns)
            _sh("sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % self.out, check_rc=False)
            _sh("sysctl", "-qw", "net.ipv4.conf.%s.forwarding=0" % self.out, check_rc=False)
            for pre, dev in (([], self.out), (ns, self.inner)):
                # Real-sized frames with real checksums on both ends.
                if _sh(*(pre + ["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                                "tx", "off", "rx", "off"]), check_rc=False).returncode != 0:
                    _sh(*(pre + ["ethtool", "-K", dev, "tso", "off", "gso", "off", "tx", "off"]))
                _sh(*(pre + ["ip", "link", "set", dev, "up"]))
            _sh(*(ns + ["ip", "link", "set", "lo", "up"]))
            _sh(*(ns + ["ip", "addr", "add", DPDK_PEER_IP + "/24", "dev", self.inner]))
            for ip in self.source_addrs():
                _sh(*(ns + ["ip", "addr", "add", ip + "/24", "dev", self.inner]))
            client_loopback_nat(ns, self.inner, DPDK_IP, DPDK_PEER_IP)
            self.root_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            setns_net("/run/netns/" + self.ns)
        except BaseException:
            self.down()
            raise
        DPDK = {"ip": DPDK_IP, "device": "net_af_packet0,iface=%s" % self.out,
                "eal_args": DPDK_EAL_ARGS}
        SERVER_PREFIX[:] = ["ip", "netns", "exec", self.root_name]

    def source_addrs(self):
        """The extra client addresses, in order (a CIDR block when sources
        is a power of two: source_cidr())."""
        base = ipaddress.ip_address(self.SOURCES_BASE)
        return [str(base + i) for i in range(self.sources)]

    def source_cidr(self):
        """The extra addresses as one CIDR block (sluice-bench's src)."""
        net = ipaddress.ip_network("%s/%d" % (self.SOURCES_BASE, 32 - (self.sources.bit_length() - 1)))
        if net.num_addresses != self.sources:
            raise ValueError("DpdkNet: sources %d is not a power of two" % self.sources)
        return str(net)

    def down(self):
        global DPDK
        if self.root_fd is not None:
            setns_net(self.root_fd)
            os.close(self.root_fd)
            self.root_fd = None
        DPDK = None
        SERVER_PREFIX[:] = []
        _sh("ip", "link", "del", self.out, check_rc=False)
        _sh("ip", "netns", "del", self.ns, check_rc=False)
        _sh("ip", "netns", "del", self.root_name, check_rc=False)
        dpdk_clean_runtime()
