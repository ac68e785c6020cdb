#!/usr/bin/python3
"""Operations: health and readiness (also across a control crash and
restart), Prometheus metrics, configuration errors and a channel file of
another version."""

import glob
import os
import re
import signal
import struct
import subprocess
import sys
import time

import harness
from harness import CurlSse, check, check_eq, check_message_events

CHAN_MAGIC = 0x314C4E4843434C53
PROGRAMS = ("sluice-control", "sluice-dataplane")


def error_code(r):
    return r.json().get("error", {}).get("code")


def test_health_and_ready(env):
    srv = env.server()
    r = srv.request("GET", "/healthz")
    check_eq((r.status, r.json()), (200, {"status": "ok"}), "GET /healthz")
    r = srv.request("GET", "/readyz")
    check_eq((r.status, r.json()), (200, {"ready": True}), "GET /readyz")
    r = srv.request("GET", "/api/models")
    check_eq(r.status, 200, "GET /api/models status")
    models = {m.get("id"): m for m in r.json().get("models", [])}
    check(set(harness.DEFAULT_MODELS) <= set(models), "GET /api/models ids %r" % sorted(models))
    synth = models["synth"]
    for k in ("backend", "context_window", "cost_in_per_mtok", "cost_out_per_mtok"):
        check(k in synth, "GET /api/models: model without %s: %r" % (k, synth))
    check_eq(synth["cost_out_per_mtok"], 3.0, "synth cost_out_per_mtok")


def test_control_crash_and_restart(env):
    srv = env.fresh()
    try:
        srv.start()
        srv.kill("sluice-control", signal.SIGKILL)
        r = srv.wait_ready(timeout=5, want=503)
        check_eq(error_code(r), "control_unavailable", "/readyz 503 error code")
        r = srv.request("POST", "/api/chat/sessions", {"model_id": "synth"})
        check_eq(r.status, 503, "POST /api/chat/sessions without control: status")
        check_eq(error_code(r), "control_unavailable", "POST without control: error code")
        check_eq(r.headers.get("retry-after"), "1", "POST without control: Retry-After")
        r = srv.request("GET", "/healthz")
        check_eq(r.status, 200, "GET /healthz without control")
        srv.start_control()
        srv.wait_ready(timeout=10, want=200)
        sid = srv.create_session("synth")
        c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
        try:
            check_eq(c.wait_head(), 200, "stream after control restart")
            mid = srv.post_message(sid, "after restart")
            check_message_events(c.collect_message(mid), sid, mid, "after restart", 24,
                                 model="synth", sse=True)
        finally:
            c.close()
    finally:
        srv.stop()


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
                         r' ([-+]?(?:[0-9.eE+-]+|Inf|NaN))( -?[0-9]+)?$')


def parse_metrics(text):
    """Parses Prometheus text 0.0.4; returns ({series: value}, {name: type})."""
    series, types = {}, {}
    for n, line in enumerate(text.split("\n"), 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] == "TYPE":
                check(len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram",
                                                       "summary", "untyped"),
                      "metrics line %d: bad TYPE line %r" % (n, line))
                check(parts[2] not in types, "metrics line %d: second TYPE for %s" % (n, parts[2]))
                types[parts[2]] = parts[3]
            continue
        m = METRIC_LINE.match(line)
        check(m is not None, "metrics line %d is not a sample: %r" % (n, line))
        key = m.group(1) + (m.group(2) or "")
        check(key not in series, "metrics line %d: duplicate series %s" % (n, key))
        series[key] = float(m.group(3))
    check(text.endswith("\n"), "metrics text does not end with a newline")
    return series, types


def counter_series(series, types):
    out = {}
    for key, v in series.items():
        name = key.split("{", 1)[0]
        base = re.sub(r"_total$", "", name)
        if types.get(name) == "counter" or types.get(base) == "counter":
            out[key] = v
    return out


def test_metrics(env):
    srv = env.server()
    r = srv.request("GET", "/metrics")
    check_eq(r.status, 200, "GET /metrics status")
    ct = r.headers.get("content-type", "")
    check(ct.startswith("text/plain") and "0.0.4" in ct, "GET /metrics Content-Type %r" % ct)
    before, types = parse_metrics(r.body.decode("utf-8"))
    counters0 = counter_series(before, types)
    check(counters0, "no counter in /metrics: %r" % sorted(types.items())[:20])
    sid = srv.create_session("synth")
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers())
    try:
        check_eq(c.wait_head(), 200, "stream status")
        mid = srv.post_message(sid, "count me")
        check_message_events(c.collect_message(mid), sid, mid, "count me", 24, sse=True)
    finally:
        c.close()
    after, types1 = parse_metrics(srv.request("GET", "/metrics").body.decode("utf-8"))
    counters1 = counter_series(after, types1)
    went_back = {k: (v, counters1.get(k)) for k, v in counters0.items()
                 if k in counters1 and counters1[k] < v}
    check(not went_back, "counters decreased: %r" % went_back)
    grew = {k: counters1[k] - counters0.get(k, 0.0) for k in counters1
            if counters1[k] > counters0.get(k, 0.0)}
    check(grew, "no counter moved after a request, a stream and 24 tokens")
    check(any(d >= 24 for d in grew.values()),
          "no counter grew by >= 24 after streaming 24 tokens; grew: %r" % grew)


def run_expect_failure(srv, program, what, must_contain):
    """Runs program -c srv.conf_path; it must exit non-zero within 10 s."""
    path = srv.binary(program)
    p = subprocess.Popen([path, "-c", srv.conf_path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise harness.TestFailure("%s with %s: still running after 10 s (stderr %r)"
                                  % (program, what, err[-500:]))
    text = (err + out).decode("utf-8", "replace")
    check(p.returncode != 0, "%s with %s: exit status 0 (output %r)" % (program, what, text[-500:]))
    for s in must_contain:
        check(s.lower() in text.lower(), "%s with %s: output lacks %r: %r"
              % (program, what, s, text[-500:]))


def bad_conf_cases(srv):
    lines = srv.conf_text().split("\n")
    i_workers = lines.index("workers = %d" % srv.workers)
    cases = []
    cases.append(("an unknown section", lines + ["[nosuchsection]", "x = 1"], len(lines) + 1))
    l2 = list(lines)
    l2.insert(1, "no_such_key = 1")
    cases.append(("an unknown key", l2, 2))
    l3 = list(lines)
    l3[i_workers] = "workers = banana"
    cases.append(("workers = banana", l3, i_workers + 1))
    l4 = list(lines)
    l4[i_workers] = "workers = 0"
    cases.append(("workers = 0", l4, i_workers + 1))
    l5 = list(lines)
    l5.insert(1, "this line has no equals sign")
    cases.append(("a line without '='", l5, 2))
    return cases


def test_bad_config(env):
    srv = env.fresh()
    try:
        for what, lines, lineno in bad_conf_cases(srv):
            srv.write_conf("\n".join(lines) + "\n")
            for prog in PROGRAMS:
                run_expect_failure(srv, prog, what, ["%s:%d:" % (srv.conf_path, lineno)])
        missing = srv.conf_path + ".missing"
        for prog in PROGRAMS:
            p = subprocess.run([srv.binary(prog), "-c", missing], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10)
            check(p.returncode != 0, "%s -c <missing file>: exit 0" % prog)
            check(missing.encode() in p.stderr, "%s -c <missing file>: stderr does not name it: %r"
                  % (prog, p.stderr[-300:]))
    finally:
        srv.stop()


def write_foreign_channel(path, magic, version):
    hdr = struct.pack("<QIIIIQ", magic, version, 256, 1, 4 << 20, 16 << 20)
    with open(path, "wb") as f:
        f.write(hdr + b"\0" * (1 << 20))


def test_channel_other_version(env):
    """A channel file nobody holds was left by a crash: a sluice region of
    another version is replaced (and said so in the log); a file with
    another magic is refused and left untouched."""
    srv = env.fresh()
    try:
        write_foreign_channel(srv.chan_path, CHAN_MAGIC, 99)
        srv.start()
        check("replaced a stale region" in srv.stderr_text(), "no log line says the stale "
              "version-99 region was replaced: %r" % srv.stderr_text()[-800:])
        for prog in ("sluice-dataplane", "sluice-control"):
            srv.stop_proc(prog)
        for path in [srv.chan_path] + glob.glob(srv.chan_path + ".bell-*"):
            check(not os.path.exists(path), "a clean stop of both processes left %s" % path)

        write_foreign_channel(srv.chan_path, 0x1122334455667788, 1)
        for prog in PROGRAMS:
            run_expect_failure(srv, prog, "a foreign magic", ["magic"])
        with open(srv.chan_path, "rb") as f:
            head = f.read(16)
        check_eq(struct.unpack("<QI", head[:12]), (0x1122334455667788, 1),
                 "a foreign magic: the refused channel header was modified")
        os.unlink(srv.chan_path)
    finally:
        srv.stop()


def test_sigterm_exits_cleanly(env):
    srv = env.fresh()
    try:
        srv.start()
        for prog in ("sluice-dataplane", "sluice-control"):
            p = srv.procs[prog]
            p.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                rc = p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                raise harness.TestFailure("%s did not exit within 5 s of SIGTERM" % prog)
            check_eq(rc, 0, "%s exit status after SIGTERM (%.1f s)" % (prog, time.monotonic() - t0))
    finally:
        srv.stop()


TESTS = [test_health_and_ready, test_control_crash_and_restart, test_metrics, test_bad_config,
         test_channel_other_version, test_sigterm_exits_cleanly]

if __name__ == "__main__":
    sys.exit(harness.run(TESTS))
