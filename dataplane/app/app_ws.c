/*
 * WebSocket connections on /ws/chat (and /ws/echo when enabled): the 101 handshake, the RFC 6455 engine
 * (ws_session) wired to the transport, local answers (ping -> pong, JSON
 * errors), forwarding of other messages to control as CHAN_REQ_WS requests,
 * and control's responses (text messages, subscribe, close).
 *
 * Authorisation (issue 3): a /ws/chat upgrade is answered only after control
 * accepted a CHAN_REQ_WS_OPEN built from the upgrade's auth headers. Those
 * headers stay with the conn (c->ws_auth) so that a restarted control, which
 * lost its conn -> user map, is asked again instead of the socket being
 * closed.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "http/http_parse.h"
#include "sluice/conf.h"
#include "sluice/log.h"

static void app_ws_on_message(void *arg, uint8_t opcode, const uint8_t *data, size_t len);

static bool app_ws_write(void *arg, const void *data, size_t len)
{
	struct conn *c = arg;

	struct tp_tx_hint *h = c->app->ws_tx_hint;

	c->app->ws_tx_hint = NULL;
	return app_conn_send_hinted(c, data, len, h);
}

static void app_ws_on_closed(void *arg, uint16_t code)
{
	struct conn *c = arg;

	(void)code;
	app_conn_close(c, false);
}

static const struct ws_session_ops app_ws_session_ops = {
	.on_message = app_ws_on_message,
	.write = app_ws_write,
	.on_closed = app_ws_on_closed,
};

/* Header lines control asked for in a WS_ACCEPT (e.g. the chosen
 * subprotocol). A value with a line break is dropped, never sent. */
static bool app_ws_send_resp_headers(struct conn *c, const struct chan_response *r, uint32_t rlen)
{
	const uint8_t *p = (const uint8_t *)(r + 1);
	const uint8_t *end = (const uint8_t *)r + rlen;
	const struct chan_field *f;
	bool bad = false, ok = true;

	while (ok && (f = chan_field_next(&p, end, &bad)) != NULL) {
		if (f->tag != CHAN_F_HEADER && f->tag != CHAN_F_SET_COOKIE)
			continue;
		if (memchr(f->data, '\r', f->len) || memchr(f->data, '\n', f->len))
			continue;
		if (f->tag == CHAN_F_SET_COOKIE)
			ok = app_conn_send(c, "Set-Cookie: ", 12);
		ok = ok && app_conn_send(c, f->data, f->len) && app_conn_send(c, "\r\n", 2);
	}
	return ok && !bad;
}

void app_ws_start(struct conn *c, const char *accept, const struct chan_response *r, uint32_t rlen,
		  bool echo)
{
	struct app *a = c->app;
	char head[768], hello[64];
	struct app_buf b, h;

	app_buf_init(&b, head, sizeof(head));
	app_buf_str(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
	app_buf_str(&b, accept);
	app_buf_str(&b, "\r\n");
	app_http_head_common(c, &b, NULL);
	app_buf_init(&h, hello, sizeof(hello));
	app_buf_str(&h, "{\"type\":\"connected\",\"worker\":");
	app_buf_u64(&h, a->wid);
	app_buf_put(&h, "}", 1);
	if (c->pmd.on) {
		char ext[WS_PMD_RESPONSE_MAX];

		ws_pmd_format(&c->pmd, ext);
		app_buf_str(&b, "Sec-WebSocket-Extensions: ");
		app_buf_str(&b, ext);
		app_buf_str(&b, "\r\n");
	}
	if (b.overflow || h.overflow || !app_conn_send(c, b.p, b.len) ||
	    (r && !app_ws_send_resp_headers(c, r, rlen)) || !app_conn_send(c, "\r\n", 2)) {
		app_conn_close(c, true);
		return;
	}
	DP_STAT_ADD(a->st, http_responses[1], 1);
	DP_STAT_ADD(a->st, ws_upgrades, 1);
	DP_STAT_ADD(a->st, ws_active, 1);
	tw_cancel(a->h->wheel, &c->timer);
	c->mode = CONN_WS;
	c->hstate = HS_HEAD;
	ws_session_init(&c->ws, &app_ws_session_ops, c, a->conf->ws_max_message);
	if (c->pmd.on)
		ws_session_set_deflate(&c->ws, a->wsd, &c->pmd);
	c->ws_open = true;
	c->ws_echo = echo;
	if (!echo)
		app_ws_send_text(c, h.p, h.len);
}

/* The tags of app_ws_auth's fields, in the order of its len[]. */
static const uint16_t app_ws_auth_tags[APP_WS_AUTH_FIELDS] = {
	CHAN_F_AUTHORIZATION, CHAN_F_COOKIE, CHAN_F_ORIGIN, CHAN_F_WS_PROTOCOL,
};

/* The scheme an Authorization value is stored without (and sent with). */
static const char app_ws_bearer[] = "Bearer ";
#define APP_WS_BEARER_LEN (sizeof(app_ws_bearer) - 1)

bool app_ws_auth_keep(struct conn *c, const struct http_request *req, const struct http_slice *key)
{
	static const char *const names[APP_WS_AUTH_FIELDS] = {
		"Authorization", "Cookie", "Origin", "Sec-WebSocket-Protocol",
	};
	struct http_slice v[APP_WS_AUTH_FIELDS];
	bool present[APP_WS_AUTH_FIELDS];
	bool bearer = false;
	size_t total = 0;
	struct app_ws_auth *wa;
	char *p;

	for (size_t i = 0; i < APP_WS_AUTH_FIELDS; i++) {
		const struct http_header *h = http_find_header(req, names[i]);

		present[i] = h != NULL;
		if (h) {
			v[i] = h->value;
			total += v[i].len;
		}
	}
	if (present[0] && v[0].len > APP_WS_BEARER_LEN &&
	    memcmp(v[0].p, app_ws_bearer, APP_WS_BEARER_LEN) == 0) {
		bearer = true;
		v[0].p += APP_WS_BEARER_LEN;
		v[0].len -= APP_WS_BEARER_LEN;
		total -= APP_WS_BEARER_LEN;
	}
	app_ws_auth_free(c);
	wa = malloc(sizeof(*wa) + total);
	if (!wa)
		return false;
	p = wa->data;
	for (size_t i = 0; i < APP_WS_AUTH_FIELDS; i++) {
		wa->len[i] = APP_WS_AUTH_ABSENT;
		if (!present[i])
			continue;
		memcpy(p, v[i].p, v[i].len);
		wa->len[i] = (uint16_t)v[i].len;
		p += v[i].len;
	}
	if (bearer)
		wa->len[0] |= APP_WS_AUTH_BEARER;
	ws_accept_key(key->p, key->len, c->ws_accept);
	c->ws_auth = wa;
	return true;
}

void app_ws_auth_free(struct conn *c)
{
	free(c->ws_auth);
	c->ws_auth = NULL;
}

/* The endpoint of a WebSocket conn, as control routes it. */
static const char *app_ws_path(const struct conn *c)
{
	return c->ws_admin ? "/ws/admin" : "/ws/chat";
}

enum app_req_result app_ws_auth_send(struct conn *c)
{
	const char *path = app_ws_path(c);
	struct app_field f[2 + APP_WS_AUTH_FIELDS];
	const char *p = c->ws_auth->data;
	char peer[APP_CONN_PEER_STR_MAX];
	/* An Authorization value stored without its "Bearer " gets it back
	 * here: once per upgrade or control restart, not per token. */
	char authz[APP_WS_BEARER_LEN + HTTP_MAX_HEADER_BYTES];

	f[0] = (struct app_field){ CHAN_F_PATH, path, strlen(path) };
	for (size_t i = 0; i < APP_WS_AUTH_FIELDS; i++) {
		uint16_t n = c->ws_auth->len[i];
		size_t vl = n & APP_WS_AUTH_LEN_MASK;

		f[1 + i] = (struct app_field){ app_ws_auth_tags[i], NULL, 0 };
		if (n == APP_WS_AUTH_ABSENT)
			continue;
		f[1 + i].data = p;
		f[1 + i].len = vl;
		if (n & APP_WS_AUTH_BEARER) {
			memcpy(authz, app_ws_bearer, APP_WS_BEARER_LEN);
			memcpy(authz + APP_WS_BEARER_LEN, p, vl);
			f[1 + i].data = authz;
			f[1 + i].len = APP_WS_BEARER_LEN + vl;
		}
		p += vl;
	}
	f[1 + APP_WS_AUTH_FIELDS] = (struct app_field){ CHAN_F_PEER, peer, app_conn_peer_str(c, peer) };
	return app_send_request(c, CHAN_REQ_WS_OPEN, CHAN_M_GET, f, SLUICE_ARRAY_LEN(f));
}

void app_ws_reauthorise(struct conn *c)
{
	struct app *a = c->app;
	enum app_req_result res;

	if (!c->ws_auth || !c->ws_open || c->ws.state != WS_STATE_OPEN)
		return;
	res = app_ws_auth_send(c);
	if (res != APP_REQ_OK) {
		/* The conn stays open; control closes it 1008 at its next
		 * message if it cannot place it. */
		LOG_WARN("worker %u: WebSocket re-authorisation of slot %u not sent (%s)", a->wid,
			 c->slot, res == APP_REQ_FULL ? "channel full" : "no control");
		return;
	}
	c->ws_reauth = true;
	c->ws_reauth_id = c->req_id;
}

/* Input can queue output with no record from control behind it (pongs, the
 * echo, local errors), so the slow-consumer bound is checked here too: a
 * client that sends without reading must not grow the send queue forever. */
size_t app_ws_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	size_t used = ws_session_input(&c->ws, data, len);

	if (c->ws_open)
		ws_session_release_idle(&c->ws);
	app_conn_account(c);
	return used;
}

bool app_ws_send_text(struct conn *c, const void *data, size_t len)
{
	if (!c->ws_open || c->closing)
		return false;
	return ws_session_send(&c->ws, WS_OP_TEXT, data, len);
}

bool app_ws_send_framed(struct conn *c, const void *frame, size_t len, struct tp_tx_hint *h)
{
	bool ok;

	if (!c->ws_open || c->closing)
		return false;
	/* The session writes the frame in one call of app_ws_write, which
	 * takes the hint; cleared after in case it wrote nothing. */
	c->app->ws_tx_hint = h;
	ok = ws_session_send_frame(&c->ws, frame, len);
	c->app->ws_tx_hint = NULL;
	return ok;
}

void app_ws_close_with(struct conn *c, uint16_t code, const char *reason, bool fail)
{
	struct app *a = c->app;

	if (!c->ws_open || c->closing || c->ws.state != WS_STATE_OPEN)
		return;
	DP_STAT_ADD(a->st, ws_closes_sent, 1);
	ws_session_close(&c->ws, code, reason, fail);
	/* A client that never answers the close must not hold the conn. */
	if (!fail && !c->closing)
		tw_arm(a->h->wheel, &c->timer, host_now(a->h) + APP_WS_CLOSE_WAIT_NS);
}

/*
 * Control's answer to a re-authorisation after its restart: an accept
 * changes nothing the client sees; a refusal closes with 1008 and the error
 * code of control's answer as the reason. Other answers (control busy) leave
 * the conn alone: control closes it at its next message if need be.
 */
static void app_ws_reauth_answer(struct conn *c, const struct chan_response *r, uint32_t len)
{
	const uint8_t *p = (const uint8_t *)(r + 1);
	const uint8_t *end = (const uint8_t *)r + len;
	const struct chan_field *f;
	char reason[64] = "unauthenticated";
	bool bad = false;

	if (r->flags & CHAN_RESP_MORE)
		return; /* the status is all that counts: wait for the last part */
	c->ws_reauth = false;
	if (r->action == CHAN_RESP_WS_ACCEPT || (r->status != 401 && r->status != 403))
		return;
	while ((f = chan_field_next(&p, end, &bad)) != NULL) {
		json_t *body, *code;

		if (f->tag != CHAN_F_BODY)
			continue;
		body = json_loadb((const char *)f->data, f->len, 0, NULL);
		code = json_object_get(json_object_get(body, "error"), "code");
		if (json_is_string(code) && json_string_length(code) < sizeof(reason))
			snprintf(reason, sizeof(reason), "%s", json_string_value(code));
		json_decref(body);
	}
	DP_STAT_ADD(c->app->st, ws_auth_refused, 1);
	app_stream_flush(c);
	app_stream_unsubscribe(c);
	app_ws_close_with(c, WS_CLOSE_POLICY, reason, false);
}

/* {"type":"error","error":{...}[,"id":ID]}; `id` is the client's, re-encoded. */
static void app_ws_send_error(struct conn *c, const char *code, const char *message, json_t *id)
{
	char buf[512];
	struct app_buf b;
	char *idtxt = id ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;

	app_buf_init(&b, buf, sizeof(buf));
	app_event_error_json(&b, APP_EVENT_WS, code, message);
	if (idtxt && !b.overflow) {
		b.len--; /* reopen the object to add the echoed id */
		app_buf_str(&b, ",\"id\":");
		app_buf_str(&b, idtxt);
		app_buf_put(&b, "}", 1);
	}
	free(idtxt);
	if (b.overflow) {
		/* An id too long to echo: answer without it rather than not at all. */
		app_buf_init(&b, buf, sizeof(buf));
		app_event_error_json(&b, APP_EVENT_WS, code, message);
	}
	app_ws_send_text(c, b.p, b.len);
}

static void app_ws_send_pong(struct conn *c, json_t *id)
{
	char *idtxt = id ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
	char *msg = NULL;
	int n;

	if (id && !idtxt)
		goto fail;
	n = idtxt ? asprintf(&msg, "{\"type\":\"pong\",\"id\":%s}", idtxt) :
		    asprintf(&msg, "{\"type\":\"pong\"}");
	if (n < 0)
		goto fail;
	app_ws_send_text(c, msg, (size_t)n);
	free(msg);
	free(idtxt);
	return;
fail:
	free(idtxt);
	app_ws_close_with(c, WS_CLOSE_INTERNAL, "out of memory", true);
}

static void app_ws_on_message(void *arg, uint8_t opcode, const uint8_t *data, size_t len)
{
	struct conn *c = arg;
	struct app *a = c->app;
	json_error_t jerr;
	json_t *msg, *type, *id;
	char peer[APP_CONN_PEER_STR_MAX];
	size_t pl;

	DP_STAT_ADD(a->st, ws_messages_in, 1);
	if (c->ws_echo) {
		if (!ws_session_send(&c->ws, opcode, data, len))
			app_ws_close_with(c, WS_CLOSE_INTERNAL, "send queue full", true);
		return;
	}
	if (opcode != WS_OP_TEXT) {
		app_ws_close_with(c, WS_CLOSE_UNSUPPORTED, "binary messages are not supported", false);
		return;
	}
	msg = json_loadb((const char *)data, len, 0, &jerr);
	if (!msg || !json_is_object(msg)) {
		app_ws_send_error(c, "invalid_json", "a message must be a JSON object", NULL);
		json_decref(msg);
		return;
	}
	type = json_object_get(msg, "type");
	id = json_object_get(msg, "id");
	if (!json_is_string(type)) {
		app_ws_send_error(c, "invalid_json", "a message needs a string \"type\"", id);
		json_decref(msg);
		return;
	}
	if (strcmp(json_string_value(type), "ping") == 0) {
		app_ws_send_pong(c, id);
		json_decref(msg);
		return;
	}
	pl = app_conn_peer_str(c, peer);
	{
		/* /ws/chat messages carry no path (control's default endpoint). */
		const struct app_field f[] = {
			{ CHAN_F_BODY, data, len },
			{ CHAN_F_PEER, peer, pl },
			{ CHAN_F_PATH, c->ws_admin ? app_ws_path(c) : NULL, c->ws_admin ? strlen(app_ws_path(c)) : 0 },
		};

		switch (app_send_request(c, CHAN_REQ_WS, CHAN_M_OTHER, f, SLUICE_ARRAY_LEN(f))) {
		case APP_REQ_OK:
			break;
		case APP_REQ_NO_CONTROL:
			app_ws_send_error(c, "control_unavailable", "control is not attached", id);
			break;
		case APP_REQ_FULL:
			app_ws_send_error(c, "overloaded", "channel to control is full", id);
			break;
		case APP_REQ_TOO_BIG:
			app_ws_send_error(c, "payload_too_large", "message too large to forward", id);
			break;
		}
	}
	json_decref(msg);
}

void app_ws_on_response(struct conn *c, const struct chan_response *r, uint32_t len)
{
	struct app *a = c->app;
	const uint8_t *body;
	size_t blen;
	bool bad;

	if (c->ws_reauth && r->req_id == c->ws_reauth_id) {
		app_ws_reauth_answer(c, r, len);
		return;
	}
	if (!app_resp_collect(c, r, len, &body, &blen, &bad)) {
		if (bad) {
			host_count_bad_record(a->h);
			app_resp_reset(c);
		}
		return;
	}
	switch (r->action) {
	case CHAN_RESP_PLAIN:
		if (blen && app_stream_flush(c))
			app_ws_send_text(c, body, blen);
		break;
	case CHAN_RESP_WS_SUBSCRIBE:
		if (!app_stream_flush(c))
			break;
		if (blen && !app_ws_send_text(c, body, blen))
			break;
		app_stream_subscribe(c, r);
		break;
	case CHAN_RESP_WS_CLOSE: {
		char reason[124];
		size_t n = blen < sizeof(reason) - 1 ? blen : sizeof(reason) - 1;

		/* ws_session_close cuts the reason on a UTF-8 boundary to fit. */
		memcpy(reason, body ? (const char *)body : "", n);
		reason[n] = '\0';
		app_stream_flush(c);
		app_ws_close_with(c, r->status, reason, false);
		break;
	}
	default:
		DP_STAT_ADD(a->st, stale_records, 1);
		break;
	}
	app_resp_reset(c);
	app_conn_account(c);
}

void app_ws_on_broadcast(struct app *a, const struct chan_broadcast *b, uint32_t len)
{
	struct conn *c = app_conn_lookup(a, &b->conn);
	const uint8_t *p = (const uint8_t *)(b + 1);
	const uint8_t *end = (const uint8_t *)b + len;
	const struct chan_field *f, *body = NULL;
	struct tp_conn_info ti;
	bool bad = false;

	if (!c || c->mode != CONN_WS || !c->ws_open || c->closing || c->ws.state != WS_STATE_OPEN) {
		DP_STAT_ADD(a->st, stale_records, 1);
		return;
	}
	while ((f = chan_field_next(&p, end, &bad)) != NULL)
		if (f->tag == CHAN_F_BODY)
			body = f;
	if (!body)
		return;
	tp_info(a->h->tp, c->tc, &ti);
	if (ti.tx_queued + c->batch.len > b->max_pending) {
		app_conn_drop_slow(c);
		return;
	}
	if (app_ws_send_text(c, body->data, body->len)) {
		DP_STAT_ADD(a->st, broadcasts, 1);
		app_conn_account(c);
	}
}
