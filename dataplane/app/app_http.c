/*
 * HTTP/1.1 on a connection: request heads through http_parse_request, bodies
 * by Content-Length, routing (local operations routes, the WebSocket upgrade,
 * /api/ and /v1/ to control), responses from control, and the header-read and
 * idle timers. One request is in flight at a time: while it waits for
 * control, on_data consumes nothing, so pipelined requests stay in the
 * transport and are answered in order once tp_rx_resume() offers them again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "app/app_metrics.h"
#include "app/app_static.h"
#include "http/http_parse.h"
#include "sluice/conf.h"
#include "sluice/log.h"

#define CT_JSON "application/json; charset=utf-8"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

static const char *reason_phrase(unsigned status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 308: return "Permanent Redirect";
	case 415: return "Unsupported Media Type";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

static bool slice_eq(struct http_slice s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len == n && memcmp(s.p, lit, n) == 0;
}

static bool slice_prefix(struct http_slice s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len >= n && memcmp(s.p, lit, n) == 0;
}

/* Header values from control go on the wire verbatim: refuse line breaks so
 * a value can never start another header. */
static bool hdr_value_ok(const uint8_t *p, size_t n)
{
	return memchr(p, '\r', n) == NULL && memchr(p, '\n', n) == NULL;
}

/* A /ws/chat upgrade has its answer or was dropped: ws_accept, which shares
 * prov_mid's bytes while the upgrade runs, is over. */
static void app_http_upgrade_over(struct conn *c)
{
	c->ws_upgrading = false;
	c->prov_mid[0] = '\0';
}

/* A /ws/chat upgrade that will not become a WebSocket: its auth fields are
 * no longer needed. */
static void app_http_upgrade_dropped(struct conn *c)
{
	if (!c->ws_upgrading)
		return;
	app_http_upgrade_over(c);
	app_ws_auth_free(c);
}

static void count_response(struct conn *c, unsigned status)
{
	unsigned cls = status / 100;

	if (cls >= 1 && cls <= 5)
		DP_STAT_ADD(c->app->st, http_responses[cls], 1);
}

/* After a response: close, or get ready for the next request (arming the
 * idle timer and, when the request had paused input, resuming it). */
static void app_http_finish(struct conn *c, bool close_after)
{
	struct app *a = c->app;
	bool was_waiting = c->hstate == HS_WAIT;

	if (close_after || c->eof || !c->keep_alive) {
		app_conn_close(c, false);
		return;
	}
	c->hstate = HS_HEAD;
	tw_arm(a->h->wheel, &c->timer,
	       host_now(a->h) + (uint64_t)a->conf->idle_timeout_s * 1000000000ull);
	if (was_waiting)
		tp_rx_resume(a->h->tp, c->tc);
}

/*
 * The policy every response states, whoever produced it: scripts, styles,
 * images and fonts only from this origin, no inline script or style, fetch
 * and WebSocket connections only to this origin (CSP 3's 'self' covers ws:
 * and wss: of the page's own host and port), never framed, no MIME
 * sniffing, no Referer sent to anyone.
 */
#define APP_HTTP_CSP "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " \
	"font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; " \
	"form-action 'self'; frame-ancestors 'none'"

void app_http_head_common(const struct conn *c, struct app_buf *b, const char *cache)
{
	app_buf_str(b, "X-Sluice-Worker: ");
	app_buf_u64(b, c->app->wid);
	app_buf_str(b, "\r\nContent-Security-Policy: " APP_HTTP_CSP
		    "\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n");
	if (cache) {
		app_buf_str(b, "Cache-Control: ");
		app_buf_str(b, cache);
		app_buf_str(b, "\r\n");
	}
	if (c->peer.tls && c->app->conf->tls_hsts_max_age_s) {
		app_buf_str(b, "Strict-Transport-Security: max-age=");
		app_buf_u64(b, c->app->conf->tls_hsts_max_age_s);
		app_buf_str(b, "\r\n");
	}
}

/*
 * Writes a whole response. `cache` is its Cache-Control (NULL: no-store,
 * the rule for everything but static files: API answers carry tokens and
 * conversations). `extra` holds ready header lines (CRLF-ended); `r`
 * (optional) adds the SET_COOKIE / HEADER / CONTENT_TYPE fields of a
 * single-part control response. The body is omitted for HEAD, the length
 * kept; 204 and 304 have neither body nor length.
 * Returns false when the connection had to be aborted.
 */
static bool app_http_emit(struct conn *c, unsigned status, const char *ctype, size_t ctype_len,
			  const char *cache, const void *extra, size_t extra_len,
			  const struct chan_response *r, uint32_t rlen, const void *body, size_t blen,
			  bool close_after)
{
	struct app *a = c->app;
	char head[1024];
	struct app_buf b;
	bool ok, bodyless = status == 204 || status == 304;

	if (r) {
		const uint8_t *p = (const uint8_t *)(r + 1);
		const uint8_t *end = (const uint8_t *)r + rlen;
		const struct chan_field *f;
		bool bad = false;

		while ((f = chan_field_next(&p, end, &bad)) != NULL) {
			if (f->tag == CHAN_F_CONTENT_TYPE && hdr_value_ok(f->data, f->len)) {
				ctype = (const char *)f->data;
				ctype_len = f->len;
			}
		}
	}
	if (!close_after && !c->keep_alive)
		close_after = true;
	app_buf_init(&b, head, sizeof(head));
	app_buf_str(&b, "HTTP/1.1 ");
	app_buf_u64(&b, status);
	app_buf_put(&b, " ", 1);
	app_buf_str(&b, reason_phrase(status));
	app_buf_str(&b, "\r\n");
	app_http_head_common(c, &b, cache ? cache : "no-store");
	/* RFC 9110 6.4.1 / 8.6 / 15.4.5: a 204 has no content and no
	 * Content-Length; a 304 is the headers of a 200 the client has. */
	if (bodyless)
		blen = 0;
	if (ctype && !bodyless) {
		app_buf_str(&b, "Content-Type: ");
		app_buf_put(&b, ctype, ctype_len);
		app_buf_str(&b, "\r\n");
	}
	if (!bodyless) {
		app_buf_str(&b, "Content-Length: ");
		app_buf_u64(&b, blen);
		app_buf_str(&b, "\r\n");
	}
	if (close_after)
		app_buf_str(&b, "Connection: close\r\n");
	else if (c->http10)
		app_buf_str(&b, "Connection: keep-alive\r\n");
	if (b.overflow) {
		LOG_WARN("worker %u: response head too large, slot %u aborted", a->wid, c->slot);
		app_conn_close(c, true);
		return false;
	}
	ok = app_conn_send(c, b.p, b.len);
	if (ok && extra_len)
		ok = app_conn_send(c, extra, extra_len);
	if (ok && r) {
		const uint8_t *p = (const uint8_t *)(r + 1);
		const uint8_t *end = (const uint8_t *)r + rlen;
		const struct chan_field *f;
		bool bad = false;

		while (ok && (f = chan_field_next(&p, end, &bad)) != NULL) {
			if (f->tag != CHAN_F_SET_COOKIE && f->tag != CHAN_F_HEADER)
				continue;
			if (!hdr_value_ok(f->data, f->len))
				continue;
			if (f->tag == CHAN_F_SET_COOKIE)
				ok = app_conn_send(c, "Set-Cookie: ", 12);
			ok = ok && app_conn_send(c, f->data, f->len) && app_conn_send(c, "\r\n", 2);
		}
	}
	ok = ok && app_conn_send(c, "\r\n", 2);
	if (ok && blen && !c->head_req)
		ok = app_conn_send(c, body, blen);
	if (!ok) {
		app_conn_close(c, true);
		return false;
	}
	count_response(c, status);
	app_conn_account(c);
	return true;
}

static void app_http_send_json(struct conn *c, unsigned status, const char *json, const char *extra,
			       bool close_after)
{
	if (app_http_emit(c, status, CT_JSON, strlen(CT_JSON), NULL, extra, extra ? strlen(extra) : 0,
			  NULL, 0, json, strlen(json), close_after))
		app_http_finish(c, close_after);
}

void app_http_send_error(struct conn *c, int status, const char *code, const char *message,
			 bool close_after)
{
	char body[512];
	struct app_buf b;
	const char *extra = status == 503 || status == 429 ? "Retry-After: 1\r\n" : NULL;

	app_buf_init(&b, body, sizeof(body) - 1);
	app_event_error_json(&b, APP_EVENT_SSE, code, message);
	if (b.overflow) {
		app_conn_close(c, true);
		return;
	}
	body[b.len] = '\0';
	app_http_send_json(c, (unsigned)status, body, extra, close_after);
}

/* The error of a request whose framing cannot be trusted: answer, then close. */
static void app_http_framing_error(struct conn *c, int status)
{
	const char *code = "bad_request", *msg = "malformed request";

	switch (status) {
	case 505: code = "http_version_not_supported"; msg = "only HTTP/1.0 and HTTP/1.1 are served"; break;
	case 414: code = "uri_too_long"; msg = "request line longer than 8 KiB"; break;
	case 431: code = "headers_too_large"; msg = "header section too large"; break;
	case 413: code = "payload_too_large"; msg = "request body too large"; break;
	case 501: code = "not_implemented"; msg = "transfer coding or method not implemented"; break;
	case 408: code = "request_timeout"; msg = "request not complete in time"; break;
	default: status = 400; break;
	}
	c->keep_alive = false;
	app_http_send_error(c, status, code, msg, true);
	c->hstate = HS_CLOSING;
}

static uint8_t method_of(struct http_slice m)
{
	static const struct { const char *name; uint8_t m; } tab[] = {
		{ "GET", CHAN_M_GET }, { "HEAD", CHAN_M_HEAD }, { "POST", CHAN_M_POST },
		{ "PUT", CHAN_M_PUT }, { "PATCH", CHAN_M_PATCH }, { "DELETE", CHAN_M_DELETE },
		{ "OPTIONS", CHAN_M_OPTIONS },
	};

	for (size_t i = 0; i < SLUICE_ARRAY_LEN(tab); i++)
		if (slice_eq(m, tab[i].name))
			return tab[i].m;
	return CHAN_M_OTHER;
}

static bool is_base64_key(struct http_slice k)
{
	/* 16 bytes encode to 22 significant characters and "==". */
	if (k.len != 24 || k.p[22] != '=' || k.p[23] != '=')
		return false;
	for (size_t i = 0; i < 22; i++) {
		char ch = k.p[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
			return false;
	}
	/* The last significant character carries 2 bits; the rest must be 0. */
	return strchr("AQgw", k.p[21]) != NULL;
}

/* The request went to control (wait for its answer) or could not (answer now). */
static void app_http_wait_control(struct conn *c, enum app_req_result res)
{
	if (res != APP_REQ_OK) {
		app_http_upgrade_dropped(c);
		c->admitting = false;
	}
	switch (res) {
	case APP_REQ_OK:
		c->hstate = HS_WAIT;
		tw_cancel(c->app->h->wheel, &c->timer);
		break;
	case APP_REQ_NO_CONTROL:
		app_http_send_error(c, 503, "control_unavailable", "control is not attached", false);
		break;
	case APP_REQ_FULL:
		app_http_send_error(c, 503, "overloaded", "channel to control is full", false);
		break;
	case APP_REQ_TOO_BIG:
		app_http_send_error(c, 413, "payload_too_large", "request too large to forward", false);
		break;
	}
}

/* permessage-deflate: the first acceptable offer of the upgrade's
 * Sec-WebSocket-Extensions lines, in order; off when the worker has none. */
static void app_http_ws_extensions(struct conn *c, const struct http_request *req)
{
	char resp[WS_PMD_RESPONSE_MAX];

	memset(&c->pmd, 0, sizeof(c->pmd));
	if (!c->app->wsd)
		return;
	for (size_t i = 0; i < req->num_headers; i++) {
		const struct http_header *h = &req->headers[i];

		if (http_slice_ieq(h->name, "sec-websocket-extensions") &&
		    ws_pmd_negotiate(h->value.p, h->value.len, (uint8_t)c->app->conf->ws_deflate_bits,
				     &c->pmd, resp))
			return;
	}
}

static void app_http_route_ws(struct conn *c, const struct http_request *req, bool echo)
{
	const struct http_header *up = http_find_header(req, "Upgrade");
	const struct http_header *cn = http_find_header(req, "Connection");
	const struct http_header *ver = http_find_header(req, "Sec-WebSocket-Version");
	const struct http_header *key = http_find_header(req, "Sec-WebSocket-Key");

	if (c->method != CHAN_M_GET) {
		app_http_send_json(c, 405,
				   "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use GET\"}}",
				   "Allow: GET\r\n", false);
		return;
	}
	if (!up || !http_value_has_token(up->value, "websocket") || !cn ||
	    !http_value_has_token(cn->value, "upgrade") || !key || !is_base64_key(key->value) ||
	    !ver || req->minor_version != 1) {
		app_http_send_error(c, 400, "bad_request", "not a valid WebSocket upgrade", false);
		return;
	}
	app_http_ws_extensions(c, req);
	if (!slice_eq(ver->value, "13")) {
		app_http_send_json(c, 426,
				   "{\"error\":{\"code\":\"upgrade_required\",\"message\":\"WebSocket version 13 only\"}}",
				   "Sec-WebSocket-Version: 13\r\n", false);
		return;
	}
	if (echo) {
		char accept[29];

		ws_accept_key(key->value.p, key->value.len, accept);
		app_ws_start(c, accept, NULL, 0, true);
		return;
	}
	/* /ws/chat: control authorises the upgrade (cookie, bearer or
	 * subprotocol token; Origin allowlist) before the 101. */
	if (!app_ws_auth_keep(c, req, &key->value)) {
		LOG_WARN("worker %u: no memory for an upgrade's auth fields", c->app->wid);
		app_http_send_error(c, 503, "overloaded", "out of memory", true);
		return;
	}
	c->ws_upgrading = true;
	app_http_wait_control(c, app_ws_auth_send(c));
}

static void app_http_route_local(struct conn *c, const struct http_request *req)
{
	struct app *a = c->app;

	if (c->method != CHAN_M_GET && c->method != CHAN_M_HEAD) {
		app_http_send_json(c, 405,
				   "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use GET or HEAD\"}}",
				   "Allow: GET, HEAD\r\n", false);
		return;
	}
	if (slice_eq(req->path, "/healthz")) {
		app_http_send_json(c, 200, "{\"status\":\"ok\"}", NULL, false);
	} else if (slice_eq(req->path, "/readyz")) {
		if (a->h->serving(a->h))
			app_http_send_json(c, 200, "{\"ready\":true}", NULL, false);
		else
			app_http_send_error(c, 503, "control_unavailable", "control is not attached", false);
	} else {
		size_t n = app_metrics_render(a->h, a->scratch, a->scratch_cap);
		bool over = false;

		if (n)
			n += app_metrics_render_backends(a, a->scratch + n, a->scratch_cap - n, &over);
		if (n == 0 || over) {
			app_http_send_error(c, 500, "internal", "metrics do not fit", false);
			return;
		}
		if (app_http_emit(c, 200, CT_METRICS, strlen(CT_METRICS), NULL, NULL, 0, NULL, 0,
				  a->scratch, n, false))
			app_http_finish(c, false);
	}
}

static const struct http_slice *hdr_val(const struct http_request *req, const char *name)
{
	const struct http_header *h = http_find_header(req, name);

	return h ? &h->value : NULL;
}

/* Sends the request (kind HTTP, or HTTP_ADMIT with its BODY_LEN) to
 * control and waits for the answer. */
static void app_http_forward(struct conn *c, const struct http_request *req, uint8_t kind,
			     const uint8_t *body, size_t blen, const char *body_len, size_t bl_len)
{
	static const struct { uint16_t tag; const char *name; } hdrs[] = {
		{ CHAN_F_AUTHORIZATION, "Authorization" }, { CHAN_F_COOKIE, "Cookie" },
		{ CHAN_F_ORIGIN, "Origin" }, { CHAN_F_LAST_EVENT_ID, "Last-Event-ID" },
		{ CHAN_F_CONTENT_TYPE, "Content-Type" }, { CHAN_F_CSRF, "X-CSRF-Token" },
		{ CHAN_F_WS_PROTOCOL, "Sec-WebSocket-Protocol" },
	};
	struct app_field f[5 + SLUICE_ARRAY_LEN(hdrs)];
	char peer[APP_CONN_PEER_STR_MAX];
	size_t n = 0;
	size_t pl = app_conn_peer_str(c, peer);

	c->v1_req = slice_prefix(req->path, "/v1/");
	f[n++] = (struct app_field){ CHAN_F_PATH, req->path.p, req->path.len };
	f[n++] = (struct app_field){ CHAN_F_QUERY, req->query.len ? req->query.p : NULL, req->query.len };
	f[n++] = (struct app_field){ CHAN_F_BODY, blen ? body : NULL, blen };
	f[n++] = (struct app_field){ CHAN_F_BODY_LEN, body_len, bl_len };
	f[n++] = (struct app_field){ CHAN_F_PEER, peer, pl };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(hdrs); i++) {
		const struct http_slice *v = hdr_val(req, hdrs[i].name);

		f[n++] = (struct app_field){ hdrs[i].tag, v ? v->p : NULL, v ? v->len : 0 };
	}
	app_http_wait_control(c, app_send_request(c, kind, c->method, f, n));
}

/* A Host header value that can go into a Location as it is: a name, a
 * dotted quad or a bracketed IPv6 literal, with an optional port. Returns
 * the length without the port, or 0 for anything else. */
static size_t host_part(struct http_slice h)
{
	size_t n = 0;

	if (h.len == 0 || h.len > 255)
		return 0;
	if (h.p[0] == '[') {
		while (n < h.len && h.p[n] != ']') {
			char ch = h.p[n];
			if (n > 0 && !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
				       (ch >= 'A' && ch <= 'F') || ch == ':' || ch == '.'))
				return 0;
			n++;
		}
		if (n == h.len)
			return 0;
		n++;
	} else {
		while (n < h.len && h.p[n] != ':') {
			char ch = h.p[n];
			if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
			      (ch >= 'A' && ch <= 'Z') || ch == '.' || ch == '-'))
				return 0;
			n++;
		}
	}
	for (size_t i = n + (n < h.len); i < h.len; i++)
		if (h.p[i] < '0' || h.p[i] > '9')
			return 0;
	return n;
}

/* The plain-HTTP listener of redirect_listen: every request is sent to the
 * same host and target over https (308 keeps a POST a POST). */
static void app_http_redirect(struct conn *c, const struct http_request *req)
{
	const struct sluice_conf *conf = c->app->conf;
	const struct http_header *host = http_find_header(req, "Host");
	size_t hn = host ? host_part(host->value) : 0;
	char loc[2048];
	struct app_buf b;

	if (hn == 0) {
		app_http_send_error(c, 400, "bad_request", "a redirect to https needs a Host header",
				    false);
		return;
	}
	app_buf_init(&b, loc, sizeof(loc));
	app_buf_str(&b, "Location: https://");
	app_buf_put(&b, host->value.p, hn);
	if (conf->listen_port != 443) {
		app_buf_put(&b, ":", 1);
		app_buf_u64(&b, conf->listen_port);
	}
	app_buf_put(&b, req->path.p, req->path.len);
	if (req->query.len) {
		app_buf_put(&b, "?", 1);
		app_buf_put(&b, req->query.p, req->query.len);
	}
	app_buf_str(&b, "\r\n");
	if (b.overflow) {
		app_http_send_error(c, 414, "uri_too_long", "target too long to redirect", false);
		return;
	}
	unsigned status = c->method == CHAN_M_GET || c->method == CHAN_M_HEAD ? 301 : 308;
	if (app_http_emit(c, status, NULL, 0, NULL, b.p, b.len, NULL, 0, NULL, 0, false))
		app_http_finish(c, false);
}

/*
 * A file of the web UI: the encoding the client accepts, 304 when its copy
 * is current, a year of caching for content-hashed names and revalidation
 * (no-cache) for the pages, which name the current hashes.
 */
static void app_http_route_static(struct conn *c, const struct http_request *req,
				  const struct app_asset *as)
{
	static const char *const enc_name[APP_ENC_N] = { NULL, "gzip", "br" };
	const struct http_slice *ae = hdr_val(req, "Accept-Encoding");
	const struct http_slice *inm = hdr_val(req, "If-None-Match");
	enum app_enc e;
	const struct app_asset_body *bd;
	char extra[256];
	struct app_buf x;
	bool fresh;

	if (c->method != CHAN_M_GET && c->method != CHAN_M_HEAD) {
		app_http_send_json(c, 405,
				   "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use GET or HEAD\"}}",
				   "Allow: GET, HEAD\r\n", false);
		return;
	}
	e = app_static_pick(as, ae ? ae->p : NULL, ae ? ae->len : 0);
	bd = &as->enc[e];
	fresh = inm && app_static_fresh(as, inm->p, inm->len);
	app_buf_init(&x, extra, sizeof(extra));
	app_buf_str(&x, "ETag: ");
	app_buf_str(&x, bd->etag);
	app_buf_str(&x, "\r\nVary: Accept-Encoding\r\n");
	if (enc_name[e] && !fresh) {
		app_buf_str(&x, "Content-Encoding: ");
		app_buf_str(&x, enc_name[e]);
		app_buf_str(&x, "\r\n");
	}
	if (x.overflow) {
		app_http_send_error(c, 500, "internal", "asset headers do not fit", false);
		return;
	}
	DP_STAT_ADD(c->app->st, static_responses, 1);
	if (app_http_emit(c, fresh ? 304 : 200, as->mime, strlen(as->mime),
			  as->immutable ? "public, max-age=31536000, immutable" : "no-cache", x.p, x.len,
			  NULL, 0, bd->data, fresh ? 0 : bd->len, false))
		app_http_finish(c, false);
}

/* A complete request (head parsed, body in hand): route it. */
static void app_http_route(struct conn *c, const struct http_request *req, const uint8_t *body,
			   size_t blen)
{
	const struct http_header *cn = http_find_header(req, "Connection");
	const struct app_asset *as;

	DP_STAT_ADD(c->app->st, http_requests, 1);
	c->method = method_of(req->method);
	c->head_req = c->method == CHAN_M_HEAD;
	c->http10 = req->minor_version == 0;
	if (c->http10)
		c->keep_alive = cn && http_value_has_token(cn->value, "keep-alive");
	else
		c->keep_alive = !(cn && http_value_has_token(cn->value, "close"));
	if (c->app->draining)
		c->keep_alive = false;

	/* Opt-in creation stamps on token events (docs/api.md), for benchmarks. */
	{
		const struct http_header *tm = http_find_header(req, "X-Sluice-Timing");

		c->timing = tm && slice_eq(tm->value, "1");
	}
	if (c->app->conf->redirect_port && c->peer.local_port == c->app->conf->redirect_port &&
	    !c->peer.tls)
		app_http_redirect(c, req);
	else if (c->method == CHAN_M_OTHER)
		app_http_send_error(c, 501, "not_implemented", "method not implemented", false);
	else if (slice_eq(req->path, "/healthz") || slice_eq(req->path, "/readyz") ||
		 slice_eq(req->path, "/metrics"))
		app_http_route_local(c, req);
	else if (slice_eq(req->path, "/ws/chat"))
		app_http_route_ws(c, req, false);
	else if (slice_eq(req->path, "/ws/admin")) {
		c->ws_admin = true;
		app_http_route_ws(c, req, false);
	}
	else if (slice_eq(req->path, "/ws/echo") && c->app->conf->ws_echo)
		app_http_route_ws(c, req, true);
	else if (slice_prefix(req->path, "/api/") || slice_prefix(req->path, "/v1/"))
		app_http_forward(c, req, CHAN_REQ_HTTP, body, blen, NULL, 0);
	else if ((as = app_static_find(req->path.p, req->path.len)) != NULL)
		app_http_route_static(c, req, as);
	else
		app_http_send_error(c, 404, "not_found", "no such path", false);
}

/* Gives the body buffer back (wiped when it may hold a login's password). */
static void app_http_body_release(struct conn *c, bool wipe)
{
	struct app *a = c->app;

	if (!c->req_buf)
		return;
	if (wipe)
		explicit_bzero(c->req_buf, c->req_len);
	free(c->req_buf);
	DP_STAT_SUB(a->st, body_bytes, c->req_cap);
	a->body_bytes -= c->req_cap;
	c->req_buf = NULL;
	c->req_cap = c->req_len = 0;
}

/* Grows the body buffer to `cap` bytes within the worker's body budget;
 * false when over the budget or out of memory. */
static bool app_http_body_reserve(struct conn *c, size_t cap)
{
	struct app *a = c->app;
	uint8_t *p;

	if (cap <= c->req_cap)
		return true;
	if (a->body_bytes - c->req_cap + cap > (uint64_t)a->conf->body_budget_mb << 20)
		return false;
	p = realloc(c->req_buf, cap);
	if (!p)
		return false;
	a->body_bytes += cap - c->req_cap;
	DP_STAT_ADD(a->st, body_bytes, cap - c->req_cap);
	c->req_buf = p;
	c->req_cap = cap;
	return true;
}

/* Asks control whether the body behind this head may be read (a body
 * larger than the worker reads unasked, or chunked): nothing is consumed,
 * so the head and what followed it stay in the transport's stash, and are
 * parsed again once control answered CONTINUE. */
static void app_http_admit(struct conn *c, const struct http_request *req, bool chunked,
			   size_t clen)
{
	char len_txt[24];
	int n = snprintf(len_txt, sizeof(len_txt), "%zu", clen);

	DP_STAT_ADD(c->app->st, body_admissions, 1);
	c->method = method_of(req->method);
	c->head_req = false;
	c->http10 = req->minor_version == 0;
	/* A refusal leaves the body unread: the conn closes after it. */
	c->keep_alive = false;
	c->admitting = true;
	app_http_forward(c, req, CHAN_REQ_HTTP_ADMIT, NULL, 0,
			 chunked ? NULL : len_txt, n > 0 ? (size_t)n : 0);
}

/* Parses one request head at data; returns bytes consumed (0: need more). */
static size_t app_http_head(struct conn *c, const uint8_t *data, size_t len)
{
	struct app *a = c->app;
	struct http_header hdrs[HTTP_MAX_HEADERS];
	struct http_request req = { .headers = hdrs, .num_headers = HTTP_MAX_HEADERS };
	const struct http_header *expect;
	int status = 400;
	int r = http_parse_request((const char *)data, len, c->parse_last, &req, &status);
	size_t head_len, clen;
	int chunked;

	if (r == HTTP_PARSE_INCOMPLETE) {
		if (c->parse_last == 0)
			tw_arm(a->h->wheel, &c->timer, host_now(a->h) +
			       (uint64_t)a->conf->header_timeout_s * 1000000000ull);
		c->parse_last = len;
		return 0;
	}
	c->parse_last = 0;
	if (r < 0) {
		app_http_framing_error(c, status);
		return len;
	}
	head_len = (size_t)r;
	status = http_request_body_length(&req, APP_MAX_BODY, &clen, &chunked);
	if (status != 0) {
		app_http_framing_error(c, status);
		return len;
	}
	if (!chunked && len - head_len >= clen) {
		app_http_route(c, &req, data + head_len, clen);
		return head_len + clen;
	}
	/* A body is about to be buffered: never for a method sluice does not
	 * serve, and beyond a small bound only with control's admission. */
	if (method_of(req.method) == CHAN_M_OTHER) {
		app_http_framing_error(c, 501);
		return len;
	}
	if (!c->admitted && (chunked || clen > APP_BODY_FREE)) {
		app_http_admit(c, &req, chunked, clen);
		return 0;
	}
	/* Control's word holds for this one body. */
	c->body_max = c->admitted ? c->body_max : APP_MAX_BODY;
	c->admitted = false;
	if (clen > c->body_max) {
		app_http_framing_error(c, 413);
		return len;
	}
	c->chunked = chunked;
	c->req_head_len = head_len;
	c->req_need = head_len + clen;
	if (!app_http_body_reserve(c, chunked ? head_len + (c->body_max < APP_BODY_FREE ?
							    c->body_max : APP_BODY_FREE)
					      : head_len + clen)) {
		DP_STAT_ADD(a->st, body_refused, 1);
		c->keep_alive = false;
		app_http_send_error(c, 503, "overloaded", "too many request bodies in flight", true);
		c->hstate = HS_CLOSING;
		return len;
	}
	memcpy(c->req_buf, data, head_len);
	c->req_len = head_len;
	if (chunked)
		http_chunked_init(&c->chk, c->body_max);
	c->hstate = HS_BODY;
	expect = http_find_header(&req, "Expect");
	if (expect && http_slice_ieq(expect->value, "100-continue") &&
	    !app_conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25)) {
		app_conn_close(c, true);
		return len;
	}
	tw_arm(a->h->wheel, &c->timer,
	       host_now(a->h) + (uint64_t)a->conf->idle_timeout_s * 1000000000ull);
	return head_len;
}

/* The body is complete in req_buf: route the request, give the buffer back. */
static void app_http_body_done(struct conn *c)
{
	struct http_header hdrs[HTTP_MAX_HEADERS];
	struct http_request req = { .headers = hdrs, .num_headers = HTTP_MAX_HEADERS };
	int status = 400;
	/* Detached while the request is routed: a close on the way must not
	 * free it under the router's feet. */
	uint8_t *buf = c->req_buf;
	size_t cap = c->req_cap, used = c->req_len;
	struct app *a = c->app;

	c->req_buf = NULL;
	c->req_cap = c->req_len = 0;
	c->hstate = HS_HEAD;
	/* A login body holds a password: it is wiped before the buffer is
	 * freed (so is one whose head no longer parses). */
	bool secret = true;
	if (http_parse_request((const char *)buf, c->req_head_len, 0, &req, &status) !=
	    (int)c->req_head_len) {
		app_http_framing_error(c, 400);
	} else {
		secret = slice_eq(req.path, "/api/auth/login");
		app_http_route(c, &req, buf + c->req_head_len, used - c->req_head_len);
	}
	if (secret)
		explicit_bzero(buf, used);
	free(buf);
	a->body_bytes -= cap;
	DP_STAT_SUB(a->st, body_bytes, cap);
}

/* More chunked body bytes: decoded into req_buf. */
static size_t app_http_chunks(struct conn *c, const uint8_t *data, size_t len)
{
	size_t off = 0;

	while (off < len) {
		struct http_slice d;
		size_t used = 0;
		int status = 400;
		int r = http_chunked_step(&c->chk, data + off, len - off, &used, &d, &status);

		off += used;
		if (r == HTTP_CHUNKED_ERROR) {
			app_http_body_release(c, true);
			app_http_framing_error(c, status);
			return len;
		}
		if (r == HTTP_CHUNKED_DONE) {
			app_http_body_done(c);
			return off;
		}
		if (r == HTTP_CHUNKED_DATA) {
			size_t need = c->req_len + d.len;
			size_t cap = c->req_cap;

			while (cap < need)
				cap *= 2;
			if (cap > c->req_head_len + c->body_max)
				cap = c->req_head_len + c->body_max;
			if (!app_http_body_reserve(c, cap)) {
				DP_STAT_ADD(c->app->st, body_refused, 1);
				app_http_body_release(c, true);
				c->keep_alive = false;
				app_http_send_error(c, 503, "overloaded",
						    "too many request bodies in flight", true);
				c->hstate = HS_CLOSING;
				return len;
			}
			memcpy(c->req_buf + c->req_len, d.p, d.len);
			c->req_len += d.len;
		}
	}
	return off;
}

/* More body bytes for the request collected in req_buf. */
static size_t app_http_body(struct conn *c, const uint8_t *data, size_t len)
{
	size_t take = c->req_need - c->req_len;

	if (c->chunked)
		return app_http_chunks(c, data, len);
	if (take > len)
		take = len;
	memcpy(c->req_buf + c->req_len, data, take);
	c->req_len += take;
	if (c->req_len == c->req_need)
		app_http_body_done(c);
	return take;
}

size_t app_http_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	size_t off = 0;

	while (off < len && !c->closing) {
		size_t n;

		if (c->mode == CONN_WS)
			return off + app_ws_on_data(c, data + off, len - off);
		if (c->mode != CONN_HTTP || c->hstate == HS_CLOSING)
			return len;
		if (c->hstate == HS_WAIT)
			return off;
		if (c->hstate == HS_BODY)
			n = app_http_body(c, data + off, len - off);
		else
			n = app_http_head(c, data + off, len - off);
		if (n == 0)
			return off;
		off += n;
	}
	return c->closing ? len : off;
}

void app_http_timer_fired(struct conn *c)
{
	if (c->hstate == HS_WAIT || c->closing)
		return;
	if (c->hstate == HS_BODY || c->parse_last > 0) {
		app_http_framing_error(c, 408);
		return;
	}
	app_conn_close(c, false);
}

void app_http_control_lost(struct conn *c)
{
	if (c->hstate != HS_WAIT)
		return;
	if (c->resp_stream) {
		/* Half a stream can only be cut: the client sees an error, never
		 * a clean end. */
		app_conn_close(c, true);
		return;
	}
	app_resp_reset(c);
	app_http_upgrade_dropped(c);
	c->admitting = false;
	app_http_send_error(c, 503, "control_unavailable", "control went away", false);
}

/* The BODY_MAX of control's CONTINUE, at most APP_MAX_BODY. */
static size_t app_http_body_max(const struct chan_response *r, uint32_t len)
{
	const uint8_t *p = (const uint8_t *)(r + 1);
	const uint8_t *end = (const uint8_t *)r + len;
	const struct chan_field *f;
	bool bad = false;
	size_t max = APP_MAX_BODY;

	while ((f = chan_field_next(&p, end, &bad)) != NULL) {
		size_t v = 0;

		if (f->tag != CHAN_F_BODY_MAX)
			continue;
		/* A value this code cannot read admits nothing. */
		if (f->len == 0 || f->len > 7)
			return 0;
		for (uint32_t i = 0; i < f->len; i++) {
			if (f->data[i] < '0' || f->data[i] > '9')
				return 0;
			v = v * 10 + (size_t)(f->data[i] - '0');
		}
		if (v < max)
			max = v;
	}
	return bad ? 0 : max;
}

/* Control's answer to an admission: read the body, or pass its refusal on
 * (the conn closes after it: the body was never read). */
static bool app_http_admission(struct conn *c, const struct chan_response *r, uint32_t len)
{
	struct app *a = c->app;

	c->admitting = false;
	if (r->action == CHAN_RESP_CONTINUE) {
		c->body_max = app_http_body_max(r, len);
		c->admitted = true;
		c->hstate = HS_HEAD;
		tp_rx_resume(a->h->tp, c->tc);
		return true;
	}
	DP_STAT_ADD(a->st, body_refused, 1);
	if (r->action != CHAN_RESP_PLAIN) {
		app_http_send_error(c, 500, "internal", "unexpected response from control", true);
		return true;
	}
	return false;
}

/* A streamed response's head: chunked for HTTP/1.1, ended by the close for
 * HTTP/1.0. */
static bool app_http_stream_head(struct conn *c, const struct chan_response *r, uint32_t len)
{
	struct app *a = c->app;
	const uint8_t *p = (const uint8_t *)(r + 1);
	const uint8_t *end = (const uint8_t *)r + len;
	const struct chan_field *f;
	const char *ctype = "text/event-stream";
	size_t ctype_len = strlen(ctype);
	bool bad = false, ok;
	char head[512];
	struct app_buf b;

	while ((f = chan_field_next(&p, end, &bad)) != NULL) {
		if (f->tag == CHAN_F_CONTENT_TYPE && hdr_value_ok(f->data, f->len)) {
			ctype = (const char *)f->data;
			ctype_len = f->len;
		}
	}
	if (c->http10)
		c->keep_alive = false;
	app_buf_init(&b, head, sizeof(head));
	app_buf_str(&b, "HTTP/1.1 ");
	app_buf_u64(&b, r->status);
	app_buf_put(&b, " ", 1);
	app_buf_str(&b, reason_phrase(r->status));
	app_buf_str(&b, "\r\nX-Sluice-Worker: ");
	app_buf_u64(&b, a->wid);
	app_buf_str(&b, "\r\nContent-Type: ");
	app_buf_put(&b, ctype, ctype_len);
	app_buf_str(&b, "\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
	app_buf_str(&b, c->http10 ? "Connection: close\r\n"
				  : c->keep_alive ? "Transfer-Encoding: chunked\r\n"
						  : "Transfer-Encoding: chunked\r\nConnection: close\r\n");
	ok = !b.overflow && app_conn_send(c, b.p, b.len);
	p = (const uint8_t *)(r + 1);
	while (ok && (f = chan_field_next(&p, end, &bad)) != NULL) {
		if (f->tag != CHAN_F_HEADER || !hdr_value_ok(f->data, f->len))
			continue;
		ok = app_conn_send(c, f->data, f->len) && app_conn_send(c, "\r\n", 2);
	}
	ok = ok && app_conn_send(c, "\r\n", 2);
	if (ok)
		count_response(c, r->status);
	return ok;
}

/* One part of a streamed response: its body goes out now (one chunk). */
static void app_http_stream_part(struct conn *c, const struct chan_response *r, uint32_t len)
{
	const uint8_t *p = (const uint8_t *)(r + 1);
	const uint8_t *end = (const uint8_t *)r + len;
	const struct chan_field *f;
	bool bad = false, ok = true;

	if (!c->resp_stream) {
		if (!app_http_stream_head(c, r, len)) {
			app_conn_close(c, true);
			return;
		}
		c->resp_stream = true;
	}
	while (ok && (f = chan_field_next(&p, end, &bad)) != NULL) {
		if (f->tag != CHAN_F_BODY || f->len == 0)
			continue;
		if (!c->http10) {
			char sz[24];
			int n = snprintf(sz, sizeof(sz), "%x\r\n", (unsigned)f->len);
			ok = app_conn_send(c, sz, (size_t)n) && app_conn_send(c, f->data, f->len) &&
			     app_conn_send(c, "\r\n", 2);
		} else {
			ok = app_conn_send(c, f->data, f->len);
		}
	}
	if (!ok || bad) {
		if (bad)
			host_count_bad_record(c->app->h);
		app_conn_close(c, true);
		return;
	}
	if (r->flags & CHAN_RESP_MORE) {
		app_conn_account(c);
		return;
	}
	c->resp_stream = false;
	if (!c->http10 && !app_conn_send(c, "0\r\n\r\n", 5)) {
		app_conn_close(c, true);
		return;
	}
	app_conn_account(c);
	app_http_finish(c, c->http10);
}

void app_http_on_response(struct conn *c, const struct chan_response *r, uint32_t len)
{
	struct app *a = c->app;
	const uint8_t *body;
	size_t blen;
	bool bad, upgrade;

	if (c->hstate != HS_WAIT || r->req_id != c->req_id) {
		DP_STAT_ADD(a->st, stale_records, 1);
		return;
	}
	if (c->admitting && app_http_admission(c, r, len))
		return;
	if (c->ws_upgrading && r->action == CHAN_RESP_WS_ACCEPT && !(r->flags & CHAN_RESP_MORE)) {
		if (c->eof) {
			/* The client left while control decided. */
			app_http_upgrade_dropped(c);
			app_conn_close(c, false);
			return;
		}
		app_ws_start(c, c->ws_accept, r, len, false);
		app_http_upgrade_over(c);
		/* Frames the client sent right behind its upgrade request wait in
		 * the transport's stash: offer them to the WebSocket engine. */
		if (!c->closing)
			tp_rx_resume(a->h->tp, c->tc);
		return;
	}
	upgrade = c->ws_upgrading;
	if (upgrade) {
		/* Control refused the upgrade (or answered nonsense): its answer
		 * goes out as it is and the conn closes after it. */
		c->keep_alive = false;
		if (r->action != CHAN_RESP_PLAIN || !(r->flags & CHAN_RESP_MORE)) {
			DP_STAT_ADD(a->st, ws_auth_refused, 1);
			app_http_upgrade_dropped(c);
		}
	}
	if (r->action == CHAN_RESP_SSE_SUBSCRIBE && !upgrade) {
		char head[768];
		struct app_buf b;
		bool ok;

		app_buf_init(&b, head, sizeof(head));
		app_buf_str(&b, "HTTP/1.1 200 OK\r\n");
		app_http_head_common(c, &b, NULL);
		app_buf_str(&b, "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
				"X-Accel-Buffering: no\r\n");
		ok = !b.overflow && app_conn_send(c, b.p, b.len);
		if (ok) {
			const uint8_t *p = (const uint8_t *)(r + 1);
			const uint8_t *end = (const uint8_t *)r + len;
			const struct chan_field *f;

			bad = false;
			while (ok && (f = chan_field_next(&p, end, &bad)) != NULL) {
				if ((f->tag != CHAN_F_SET_COOKIE && f->tag != CHAN_F_HEADER) ||
				    !hdr_value_ok(f->data, f->len))
					continue;
				if (f->tag == CHAN_F_SET_COOKIE)
					ok = app_conn_send(c, "Set-Cookie: ", 12);
				ok = ok && app_conn_send(c, f->data, f->len) && app_conn_send(c, "\r\n", 2);
			}
			/* A comment right after the head: clients and proxies that
			 * wait for body bytes before reporting the response see the
			 * stream as open at once, not at the first event. */
			ok = ok && app_conn_send(c, "\r\n:ok\n\n", 7);
		}
		if (!ok) {
			app_conn_close(c, true);
			return;
		}
		count_response(c, 200);
		DP_STAT_ADD(a->st, sse_streams, 1);
		DP_STAT_ADD(a->st, sse_active, 1);
		c->mode = CONN_SSE;
		c->hstate = HS_HEAD;
		app_stream_subscribe(c, r);
		/* Input after the stream started is discarded; let the transport
		 * offer what it stashed so it is not held forever. */
		tp_rx_resume(a->h->tp, c->tc);
		return;
	}
	if (r->action == CHAN_RESP_HTTP_STREAM && !upgrade) {
		app_http_stream_part(c, r, len);
		return;
	}
	if (r->action != CHAN_RESP_PLAIN) {
		LOG_WARN("worker %u: response action %u on an HTTP conn", a->wid, r->action);
		app_resp_reset(c);
		app_http_send_error(c, 500, "internal", "unexpected response from control", false);
		return;
	}
	if (!app_resp_collect(c, r, len, &body, &blen, &bad)) {
		if (bad) {
			host_count_bad_record(a->h);
			app_resp_reset(c);
			app_http_send_error(c, 500, "internal", "bad response from control", false);
		}
		return;
	}
	if (c->resp) {
		bool ok = app_http_emit(c, c->resp_status, c->resp_ctype ? NULL : CT_JSON,
					c->resp_ctype ? 0 : strlen(CT_JSON), NULL, c->resp->hdrs.p,
					c->resp->hdrs.len, NULL, 0, body, blen, false);

		app_resp_reset(c);
		if (ok)
			app_http_finish(c, false);
		return;
	}
	if (app_http_emit(c, r->status, CT_JSON, strlen(CT_JSON), NULL, NULL, 0, r, len, body, blen, false))
		app_http_finish(c, false);
}
