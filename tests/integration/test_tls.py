#!/usr/bin/python3
"""HTTPS and WSS terminated in the dataplane (docs/tls.md), with real clients:
curl --cacert, python3 ssl (http.client, websockets), openssl s_client (ALPN,
TLS 1.2 and 1.3, resumption with tickets across workers, SNI, OCSP stapling),
node's https and headless Chromium. Also the redirect listener, HSTS,
certificate reload under load, refused certificates and keys, and the
handshake caps and timeout. Runs on the kernel transport, and on the native
stack with SLUICE_TEST_TRANSPORT=dpdk (the harness's DpdkNet)."""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import websockets

import harness
from harness import CurlSse, check, check_eq, check_message_events

CERTS = tempfile.mkdtemp(prefix="sluice-tls-certs-")
_made = {}


def certs():
    """Two certificates of one CA: `main` (localhost, 127.0.0.1, sluice.test)
    and `other` (other.test, *.wild.test), made once."""
    if not _made:
        main = harness.make_test_cert(CERTS, "main", "DNS:localhost,DNS:sluice.test,IP:127.0.0.1")
        other = harness.make_test_cert(CERTS, "other", "DNS:other.test,DNS:*.wild.test")
        _made.update(main=main, other=other, ca=main[2])
    return _made


def tls_conf(**opts):
    c = certs()
    return {"certs": [("main",) + c["main"][:2], ("other",) + c["other"][:2]], "ca": c["ca"],
            "redirect": True, "opts": dict({"hsts_max_age_s": 600}, **opts)}


def server(env):
    return env.server(workers=2, tls=tls_conf())


def client_cmd(*cmd):
    return subprocess.run(harness.CLIENT_PREFIX + list(cmd), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


def s_client(srv, *args, stdin=b"", timeout=20):
    """openssl s_client against the listener; returns its stdout+stderr text."""
    cmd = harness.CLIENT_PREFIX + ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                                   "-CAfile", srv.tls["ca"], "-verify_return_error"] + list(args)
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def metric(srv, name):
    r = srv.request("GET", "/metrics")
    check_eq(r.status, 200, "GET /metrics")
    total = 0
    for line in r.body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def http_get(srv, path, request_extra=""):
    """GET over s_client with a fixed request; returns the whole output."""
    req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n" % (path, request_extra)
    return s_client(srv, "-quiet", "-ign_eof", stdin=req.encode())


# ---- tests --------------------------------------------------------------

def test_curl_https(env):
    srv = server(env)
    p = client_cmd("curl", "-sS", "-v", "--cacert", srv.tls["ca"], "%s/healthz" % srv.base)
    err = p.stderr.decode("utf-8", "replace")
    check_eq(p.returncode, 0, "curl --cacert %s/healthz exit (stderr %r)" % (srv.base, err[-600:]))
    check_eq(json.loads(p.stdout), {"status": "ok"}, "/healthz body over https")
    check("TLSv1.3" in err, "curl did not negotiate TLS 1.3: %r" % err[-800:])
    check("ALPN: server accepted http/1.1" in err, "no ALPN http/1.1 in curl's log: %r" % err[-800:])
    check(re.search(r"< strict-transport-security: max-age=600", err, re.I),
          "no HSTS header on the https answer: %r" % err[-800:])
    # Without the CA the certificate is not trusted: curl fails verification.
    p = client_cmd("curl", "-sS", "%s/healthz" % srv.base)
    check(p.returncode != 0, "curl without --cacert trusted the test certificate")
    check(metric(srv, "sluice_tls_handshakes_total") >= 1, "handshakes not counted in /metrics")


def test_python_ssl_http(env):
    srv = server(env)
    r = srv.request("GET", "/readyz")
    check_eq((r.status, r.json()), (200, {"ready": True}), "GET /readyz with http.client over TLS")
    check_eq(r.headers.get("strict-transport-security"), "max-age=600", "HSTS header")
    # A session and a message through control, over https.
    sid = srv.create_session("synth")
    check(sid.startswith("s_"), "session over https")
    # Pipelined requests on one TLS connection are answered in order.
    s = srv.connect()
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    heads = re.findall(rb"HTTP/1\.1 (\d{3})", data)
    check_eq(heads, [b"200", b"200"], "two pipelined answers over TLS")
    check(b'{"status":"ok"}' in data and b'{"ready":true}' in data, "pipelined bodies: %r" % data[-300:])


def test_sse_over_https(env):
    srv = server(env)
    sid = srv.create_session("synth")
    c = CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers(),
                cacert=srv.tls["ca"])
    try:
        check_eq(c.wait_head(), 200, "SSE over https status")
        mid = srv.post_message(sid, "tls stream")
        ev = c.collect_message(mid)
        check_message_events(ev, sid, mid, "tls stream", 24, model="synth", sse=True)
        check(not c.errors, "SSE parse errors: %r" % c.errors)
    finally:
        c.close()


def test_wss_stream(env):
    srv = server(env)
    sid = srv.create_session("synth")

    async def body():
        ws = await asyncio.wait_for(websockets.connect(
            srv.ws_url(), ssl=srv.ssl_context(), ping_interval=None, max_size=None,
            open_timeout=10, extra_headers=srv.auth_headers()), 10)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        check_eq(hello.get("type"), "connected", "first wss message")
        await ws.send(json.dumps({"type": "subscribe", "session_id": sid, "id": "a"}))
        await ws.send(json.dumps({"type": "send", "session_id": sid, "content": "over wss", "id": "b"}))
        events, mid = [], None
        while not events or events[-1].get("type") != "done":
            m = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if m.get("type") == "response":
                if m.get("request") == "send":
                    mid = m.get("message_id")
                continue
            events.append(m)
        check(mid, "no send response over wss")
        check_message_events(events, sid, mid, "over wss", 24, model="synth")
        await ws.close()
    asyncio.run(asyncio.wait_for(body(), 60))


def test_redirect_listener(env):
    srv = server(env)
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.redirect_port, timeout=10)
    try:
        conn.request("GET", "/api/chat/sessions?x=1", headers={"Host": "sluice.test:%d" % srv.redirect_port})
        r = conn.getresponse()
        r.read()
        check_eq(r.status, 301, "GET on the redirect listener")
        check_eq(r.getheader("Location"), "https://sluice.test:%d/api/chat/sessions?x=1" % srv.port,
                 "redirect Location (host kept, https port, target kept)")
        check(r.getheader("Strict-Transport-Security") is None, "HSTS must not be sent over plain http")
        conn.request("POST", "/api/chat/message", body=b"{}", headers={"Host": "127.0.0.1"})
        r = conn.getresponse()
        r.read()
        check_eq(r.status, 308, "POST on the redirect listener keeps its method")
    finally:
        conn.close()
    # A Host that cannot be put into a Location as it is gets 400.
    s = socket.create_connection(("127.0.0.1", srv.redirect_port), timeout=5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a/b@c\r\nConnection: close\r\n\r\n")
        data = s.recv(4096)
    finally:
        s.close()
    check(data.startswith(b"HTTP/1.1 400 "), "redirect with a bad Host: %r" % data[:200])
    # curl follows the redirect onto https.
    p = client_cmd("curl", "-sS", "-L", "--cacert", srv.tls["ca"],
                   "http://127.0.0.1:%d/healthz" % srv.redirect_port)
    check_eq((p.returncode, p.stdout), (0, b'{"status":"ok"}'), "curl -L from http to https")
    # Plain HTTP on the TLS port is a failed handshake, not an answer.
    before = metric(srv, "sluice_tls_handshake_failures_total")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
    except (ConnectionResetError, socket.timeout):
        data = b""
    finally:
        s.close()
    check(not data.startswith(b"HTTP/"), "plain HTTP on the TLS port got an HTTP answer: %r" % data[:100])
    deadline = time.monotonic() + 5
    while metric(srv, "sluice_tls_handshake_failures_total") <= before:
        check(time.monotonic() < deadline, "plain HTTP on the TLS port not counted as a failed handshake")
        time.sleep(0.1)


def test_versions_and_alpn(env):
    srv = server(env)
    for flag, proto in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        rc, out = s_client(srv, flag, "-alpn", "http/1.1")
        check_eq(rc, 0, "s_client %s exit (output %r)" % (flag, out[-600:]))
        check(re.search(r"New, %s, Cipher is" % re.escape(proto), out),
              "%s not negotiated: %r" % (proto, out[-600:]))
        check("ALPN protocol: http/1.1" in out, "%s: ALPN http/1.1 not selected: %r" % (flag, out[-600:]))
        check("Verify return code: 0 (ok)" in out, "%s: chain does not verify: %r" % (flag, out[-600:]))
    rc, out = s_client(srv, "-alpn", "h2")
    check_eq(rc, 0, "s_client -alpn h2 exit")
    check("No ALPN negotiated" in out, "only h2 offered: expected no ALPN, got %r" % out[-600:])
    # Old protocols and weak suites are refused (the client is told to
    # offer them at any security level; the server says no).
    for args in (["-tls1_1"], ["-tls1"], ["-tls1_2", "-cipher", "AES128-SHA"],
                 ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256"],
                 ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]):
        if "-cipher" in args:
            args[args.index("-cipher") + 1] += "@SECLEVEL=0"
        else:
            args += ["-cipher", "DEFAULT@SECLEVEL=0"]
        rc, out = s_client(srv, *args)
        check(rc != 0 and re.search(r"alert|no protocols available|no cipher", out),
              "s_client %s should fail, got: %r" % (" ".join(args), out[-400:]))
    # This certificate names no OCSP responder: nothing is stapled.
    rc, out = s_client(srv, "-status")
    check("OCSP response: no response sent" in out, "unexpected staple: %r" % out[:1200])


def test_resumption_across_workers(env):
    srv = server(env)
    for flag in ("-tls1_2", "-tls1_3"):
        sess = os.path.join(CERTS, "sess%s.pem" % flag)
        # TLS 1.3 tickets come after the handshake: keep the first connection
        # open a moment so s_client stores one.
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        rc, out = s_client(srv, flag, "-sess_out", sess, "-ign_eof", stdin=req)
        check(rc == 0 and "New, " in out, "%s first connection: %r" % (flag, out[-400:]))
        workers = set()
        for _ in range(24):
            rc, out = s_client(srv, flag, "-sess_in", sess, "-ign_eof", stdin=req)
            check(rc == 0, "%s resumed connection exit %d: %r" % (flag, rc, out[-400:]))
            check("Reused, " in out, "%s: session not resumed: %r" % (flag, out[-600:]))
            m = re.search(r"X-Sluice-Worker: (\d+)", out)
            check(m, "%s: no answer on the resumed connection: %r" % (flag, out[-400:]))
            workers.add(m.group(1))
            if len(workers) == 2:
                break
        check_eq(sorted(workers), ["0", "1"], "%s: a ticket of one worker resumes on the other" % flag)
    check(metric(srv, 'sluice_tls_handshakes_total{kind="resumed"}') >= 2, "resumed handshakes not counted")


def test_sni(env):
    srv = server(env)
    for name, want in (("other.test", "CN = other"), ("a.wild.test", "CN = other"),
                       ("sluice.test", "CN = main"), ("unknown.example", "CN = main")):
        rc, out = s_client(srv, "-servername", name)
        m = re.search(r"subject=(.*)", out)
        check(m and want.replace(" = ", "=") in m.group(1).replace(" = ", "="),
              "SNI %s: expected %s, got %r" % (name, want, m.group(1) if m else out[-300:]))
    p = client_cmd("curl", "-sS", "--cacert", srv.tls["ca"], "--resolve",
                   "other.test:%d:127.0.0.1" % srv.port, "https://other.test:%d/healthz" % srv.port)
    check_eq((p.returncode, p.stdout), (0, b'{"status":"ok"}'),
             "curl to other.test (SNI picks its certificate): %r" % p.stderr[-300:])


def test_node_https(env):
    if shutil.which("node") is None:
        print("note: node not installed; test_node_https checks nothing", flush=True)
        return
    srv = server(env)
    script = ("const https=require('https'),fs=require('fs');"
              "https.get({host:'127.0.0.1',port:%d,path:'/healthz',ca:fs.readFileSync('%s'),"
              "ALPNProtocols:['http/1.1']},r=>{let b='';const p=r.socket.getProtocol(),"
              "a=r.socket.alpnProtocol;r.on('data',d=>b+=d);"
              "r.on('end',()=>{console.log(JSON.stringify({s:r.statusCode,p:p,a:a,b:b}));});})"
              ".on('error',e=>{console.error(e.message);process.exit(2);});"
              % (srv.port, srv.tls["ca"]))
    p = client_cmd("node", "-e", script)
    check_eq(p.returncode, 0, "node https.get exit (stderr %r)" % p.stderr[-400:])
    got = json.loads(p.stdout)
    check_eq(got, {"s": 200, "p": "TLSv1.3", "a": "http/1.1", "b": '{"status":"ok"}'},
             "node's https: status, protocol, ALPN, body")


def test_chromium(env):
    chromium = shutil.which("chromium")
    certutil = shutil.which("certutil")
    if not chromium or not certutil:
        print("note: chromium or certutil (libnss3-tools) missing; test_chromium checks nothing",
              flush=True)
        return
    srv = server(env)
    home = harness.browser_home_with_ca(srv.tls["ca"])
    try:
        env_ = dict(os.environ, HOME=home)
        p = subprocess.run(harness.CLIENT_PREFIX + [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--user-data-dir=" + os.path.join(home, "profile"), "--dump-dom",
            "https://localhost:%d/" % srv.port], env=env_, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
        dom = p.stdout.decode("utf-8", "replace")
        check("<title>sluice chat</title>" in dom and 'id="login-form"' in dom,
              "Chromium loading the web UI over https with the test CA: dom %r, stderr %r"
              % (dom[-300:], p.stderr.decode("utf-8", "replace")[-600:]))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def same_ca_dir(prefix):
    """A directory holding the shared test CA, for certificates of their own."""
    certs()
    d = tempfile.mkdtemp(prefix=prefix, dir=CERTS)
    for f in ("ca.crt", "ca.key", "intermediate.crt", "intermediate.key"):
        shutil.copy(os.path.join(CERTS, f), os.path.join(d, f))
    open(os.path.join(d, "index.txt"), "w").close()
    return d


def test_reload_under_load(env):
    d = same_ca_dir("sluice-tls-reload-")
    chain, key, ca = harness.make_test_cert(d, "live")
    srv = env.fresh(workers=2, tls={"certs": [("live", chain, key)], "ca": ca})
    streams = []
    try:
        srv.start()
        serial0 = cert_serial(srv)
        sid = srv.create_session("synth-slow")
        streams = [CurlSse("%s/api/chat/stream/%s" % (srv.base, sid), headers=srv.auth_headers(),
                           cacert=ca) for _ in range(6)]
        for c in streams:
            check_eq(c.wait_head(), 200, "stream before reload")
        mid = srv.post_message(sid, "reload me")
        time.sleep(0.5)
        # A new certificate and key at the same paths, then SIGHUP.
        shutil.copy(chain, chain + ".old")
        harness.make_test_cert(d, "live")
        srv.procs["sluice-dataplane"].send_signal(signal.SIGHUP)
        wait_log(srv, "reload: certificates loaded")
        serial1 = cert_serial(srv)
        check(serial1 != serial0, "new handshakes still get the old certificate (%s)" % serial0)
        # A malformed certificate file is refused; the loaded one stays.
        good = open(chain).read()
        with open(chain, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        srv.procs["sluice-dataplane"].send_signal(signal.SIGHUP)
        wait_log(srv, "reload refused")
        check_eq(cert_serial(srv), serial1, "certificate after a refused reload")
        # So is a key others may read.
        with open(chain, "w") as f:
            f.write(good)
        os.chmod(key, 0o644)
        srv.procs["sluice-dataplane"].send_signal(signal.SIGHUP)
        wait_log(srv, "accessible by group or others")
        os.chmod(key, 0o600)
        check_eq(cert_serial(srv), serial1, "certificate after a refused key")
        # Every stream opened before the reloads got its whole answer.
        for c in streams:
            ev = c.collect_message(mid, timeout=30)
            check_message_events(ev, sid, mid, "reload me", 40, model="synth-slow", sse=True)
            check(not c.errors, "stream errors across the reloads: %r" % c.errors)
            check(c.proc.poll() is None, "a stream ended across the reloads")
    finally:
        for c in streams:
            c.close()
        srv.stop()


def cert_serial(srv):
    rc, out = s_client(srv, "-showcerts")
    check_eq(rc, 0, "s_client for the certificate: %r" % out[-300:])
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S).group(0)
    p = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem.encode(),
                       stdout=subprocess.PIPE, timeout=10)
    return p.stdout.decode().strip()


def wait_log(srv, text, count=1, timeout=10):
    deadline = time.monotonic() + timeout
    while srv.stderr_text(limit=200000).count(text) < count:
        check(time.monotonic() < deadline, "dataplane did not log %r: %s" % (text, srv.stderr_text(limit=1500)))
        time.sleep(0.1)


def test_refused_at_start(env):
    d = tempfile.mkdtemp(prefix="sluice-tls-bad-", dir=CERTS)
    chain, key, _ = harness.make_test_cert(d, "x")
    srv = harness.Sluice(env.build, tls={"certs": [("x", chain, key)], "ca": certs()["ca"]})
    try:
        def check_fails(what, want):
            srv.write_conf()
            p = subprocess.run(harness.SERVER_PREFIX + [srv.binary("sluice-dataplane"), "-c",
                                                        srv.conf_path, "--check"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            err = p.stderr.decode("utf-8", "replace")
            check(p.returncode == 1 and want in err, "%s: exit %d, stderr %r" % (what, p.returncode, err))
        os.chmod(key, 0o640)
        check_fails("group-readable key", "accessible by group or others (mode 0640)")
        os.chmod(key, 0o600)
        with open(os.path.join(d, "garbage.pem"), "w") as f:
            f.write("garbage\n")
        srv.tls["certs"] = [("x", os.path.join(d, "garbage.pem"), key)]
        check_fails("malformed chain", "[cert.x]: chain")
        other = harness.make_test_cert(d, "y")
        srv.tls["certs"] = [("x", chain, other[1])]
        check_fails("key of another certificate", "does not match the certificate")
        srv.tls["certs"] = [("x", chain, key)]
        srv.write_conf()
        p = subprocess.run(harness.SERVER_PREFIX + [srv.binary("sluice-dataplane"), "-c",
                                                    srv.conf_path, "--check"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        check_eq(p.returncode, 0, "--check with a good certificate (stderr %r)" % p.stderr[-300:])
    finally:
        srv.stop()


def test_handshake_caps_and_timeout(env):
    srv = env.fresh(workers=1, tls=tls_conf(handshakes_per_addr=4, handshake_timeout_s=2))
    try:
        srv.start()
        socks = []
        reset = held = 0
        for _ in range(12):
            s = None
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                s.sendall(b"\x16\x03\x01")  # the start of a record, never finished
            except ConnectionResetError:
                # A refusal may come before the client's first bytes, even
                # before its connect() returns.
                reset += 1
                if s:
                    s.close()
                continue
            socks.append(s)
        time.sleep(0.5)
        for s in list(socks):
            s.settimeout(0.3)
            try:
                got = s.recv(1)
                reset += 1 if got == b"" else 0
                socks.remove(s)
                s.close()
            except ConnectionResetError:
                reset += 1
                socks.remove(s)
                s.close()
            except socket.timeout:
                held += 1
        check_eq((held, reset), (4, 8), "half-open handshakes held vs reset at accept "
                 "(handshakes_per_addr = 4)")
        # After handshake_timeout_s the held ones are reset too.
        time.sleep(2.5)
        for s in socks:
            s.settimeout(2)
            try:
                got = s.recv(1)
                check_eq(got, b"", "a timed-out handshake's connection")
            except ConnectionResetError:
                pass
            s.close()
        check_eq(metric(srv, "sluice_tls_handshake_timeouts_total"), 4, "handshake timeouts counted")
        check_eq(metric(srv, 'sluice_tls_handshakes_refused_total{reason="addr_cap"}'), 8,
                 "refused handshakes counted")
        check_eq(metric(srv, "sluice_tls_handshakes_in_progress"), 0, "handshakes in progress after")
    finally:
        srv.stop()


def test_ocsp_stapling(env):
    port = harness.free_port()
    d = same_ca_dir("sluice-tls-ocsp-")
    chain, key, ca = harness.make_test_cert(d, "stapled", "DNS:localhost,IP:127.0.0.1",
                                            "http://127.0.0.1:%d" % port)
    # The responder runs where the dataplane's main thread fetches from.
    resp = subprocess.Popen(harness.SERVER_PREFIX + [
        "openssl", "ocsp", "-index", os.path.join(d, "index.txt"), "-port", str(port),
        "-rsigner", os.path.join(d, "intermediate.crt"), "-rkey", os.path.join(d, "intermediate.key"),
        "-CA", os.path.join(d, "intermediate.crt"), "-nmin", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = env.fresh(tls={"certs": [("stapled", chain, key)], "ca": ca})
    try:
        time.sleep(0.5)
        srv.start()
        wait_log(srv, "OCSP staple of")
        rc, out = s_client(srv, "-status")
        check_eq(rc, 0, "s_client -status exit: %r" % out[-400:])
        check("OCSP Response Status: successful" in out and "Cert Status: good" in out,
              "no good OCSP staple in the handshake: %r" % out[:2000])
    finally:
        srv.stop()
        resp.terminate()
        resp.wait(timeout=10)


# What depends on the transport below TLS; the rest (other clients, SNI,
# files refused at start, OCSP fetched by the main thread) is the same on
# both, so the dpdk run leaves it to the kernel one and stays short.
TRANSPORT_TESTS = [
    test_curl_https, test_python_ssl_http, test_sse_over_https, test_wss_stream,
    test_redirect_listener, test_versions_and_alpn, test_resumption_across_workers,
    test_reload_under_load, test_handshake_caps_and_timeout,
]
OTHER_TESTS = [test_sni, test_node_https, test_chromium, test_refused_at_start, test_ocsp_stapling]

if __name__ == "__main__":
    dpdk = os.environ.get("SLUICE_TEST_TRANSPORT", "kernel") == "dpdk"
    try:
        sys.exit(harness.run(TRANSPORT_TESTS + ([] if dpdk else OTHER_TESTS)))
    finally:
        shutil.rmtree(CERTS, ignore_errors=True)
