/*
 * WebSocket connections on /ws/chat (and /ws/echo when enabled): the 101 handshake, the RFC 6455 engine
 * (ws_session) wired to the transport, local answers (ping -> pong, JSON
 * errors), forwarding of other messages to control as CHAN_REQ_WS requests,
 * and control's responses (text messages, subscribe, close).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "sluice/conf.h"
#include "sluice/log.h"

static void wso_message(void *arg, uint8_t opcode, const uint8_t *data, size_t len);

static bool wso_write(void *arg, const void *data, size_t len)
{
	struct conn *c = arg;

	return conn_send(c, data, len);
}

static void wso_closed(void *arg, uint16_t code)
{
	struct conn *c = arg;

	(void)code;
	conn_close(c, false);
}

static const struct ws_session_ops ws_ops = {
	.on_message = wso_message,
	.write = wso_write,
	.on_closed = wso_closed,
};

void ws_start(struct conn *c, const char *key, size_t key_len, bool echo)
{
	struct app *a = c->app;
	char accept[29];
	char head[256], hello[64];
	struct ev_buf b, h;

	ws_accept_key(key, key_len, accept);
	evb_init(&b, head, sizeof(head));
	evb_str(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		    "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
	evb_str(&b, accept);
	evb_str(&b, "\r\nX-Sluice-Worker: ");
	evb_u64(&b, a->wid);
	evb_str(&b, "\r\n\r\n");
	evb_init(&h, hello, sizeof(hello));
	evb_str(&h, "{\"type\":\"connected\",\"worker\":");
	evb_u64(&h, a->wid);
	evb_put(&h, "}", 1);
	if (b.overflow || h.overflow || !conn_send(c, b.p, b.len)) {
		conn_close(c, true);
		return;
	}
	DP_STAT_ADD(a->st, http_responses[1], 1);
	DP_STAT_ADD(a->st, ws_upgrades, 1);
	worker_timer_cancel(a->w, &c->timer);
	c->mode = CONN_WS;
	c->hstate = HS_HEAD;
	ws_session_init(&c->ws, &ws_ops, c, a->conf->ws_max_message);
	c->ws_open = true;
	c->ws_echo = echo;
	if (!echo)
		ws_send_text(c, h.p, h.len);
}

size_t ws_on_data(struct conn *c, const uint8_t *data, size_t len)
{
	return ws_session_input(&c->ws, data, len);
}

bool ws_send_text(struct conn *c, const void *data, size_t len)
{
	if (!c->ws_open || c->closing)
		return false;
	return ws_session_send(&c->ws, WS_OP_TEXT, data, len);
}

void ws_close_with(struct conn *c, uint16_t code, const char *reason, bool fail)
{
	if (!c->ws_open || c->closing || c->ws.state != WS_STATE_OPEN)
		return;
	DP_STAT_ADD(c->app->st, ws_closes_sent, 1);
	ws_session_close(&c->ws, code, reason, fail);
}

/* {"type":"error","error":{...}[,"id":ID]}; `id` is the client's, re-encoded. */
static void ws_send_error(struct conn *c, const char *code, const char *message, json_t *id)
{
	char buf[512];
	struct ev_buf b;
	char *idtxt = id ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;

	evb_init(&b, buf, sizeof(buf));
	ev_error_json(&b, EV_WS, code, message);
	if (idtxt && !b.overflow) {
		b.len--; /* reopen the object to add the echoed id */
		evb_str(&b, ",\"id\":");
		evb_str(&b, idtxt);
		evb_put(&b, "}", 1);
	}
	free(idtxt);
	if (b.overflow) {
		/* An id too long to echo: answer without it rather than not at all. */
		evb_init(&b, buf, sizeof(buf));
		ev_error_json(&b, EV_WS, code, message);
	}
	ws_send_text(c, b.p, b.len);
}

static void ws_send_pong(struct conn *c, json_t *id)
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
	ws_send_text(c, msg, (size_t)n);
	free(msg);
	free(idtxt);
	return;
fail:
	free(idtxt);
	ws_close_with(c, WS_CLOSE_INTERNAL, "out of memory", true);
}

static void wso_message(void *arg, uint8_t opcode, const uint8_t *data, size_t len)
{
	struct conn *c = arg;
	struct app *a = c->app;
	json_error_t jerr;
	json_t *msg, *type, *id;
	char peer[32];
	const uint8_t *ip = (const uint8_t *)&c->peer.ipv4;
	int pl;

	DP_STAT_ADD(a->st, ws_messages_in, 1);
	if (c->ws_echo) {
		if (!ws_session_send(&c->ws, opcode, data, len))
			ws_close_with(c, WS_CLOSE_INTERNAL, "send queue full", true);
		return;
	}
	if (opcode != WS_OP_TEXT) {
		ws_close_with(c, WS_CLOSE_UNSUPPORTED, "binary messages are not supported", false);
		return;
	}
	msg = json_loadb((const char *)data, len, 0, &jerr);
	if (!msg || !json_is_object(msg)) {
		ws_send_error(c, "invalid_json", "a message must be a JSON object", NULL);
		json_decref(msg);
		return;
	}
	type = json_object_get(msg, "type");
	id = json_object_get(msg, "id");
	if (!json_is_string(type)) {
		ws_send_error(c, "invalid_json", "a message needs a string \"type\"", id);
		json_decref(msg);
		return;
	}
	if (strcmp(json_string_value(type), "ping") == 0) {
		ws_send_pong(c, id);
		json_decref(msg);
		return;
	}
	pl = snprintf(peer, sizeof(peer), "%u.%u.%u.%u:%u", ip[0], ip[1], ip[2], ip[3], c->peer.port);
	{
		const struct app_field f[] = {
			{ CHAN_F_BODY, data, len },
			{ CHAN_F_PEER, peer, (size_t)pl },
		};

		switch (app_send_request(c, CHAN_REQ_WS, CHAN_M_OTHER, f, SLUICE_ARRAY_LEN(f))) {
		case APP_REQ_OK:
			break;
		case APP_REQ_NO_CONTROL:
			ws_send_error(c, "control_unavailable", "control is not attached", id);
			break;
		case APP_REQ_FULL:
			ws_send_error(c, "overloaded", "channel to control is full", id);
			break;
		case APP_REQ_TOO_BIG:
			ws_send_error(c, "payload_too_large", "message too large to forward", id);
			break;
		}
	}
	json_decref(msg);
}

void ws_on_response(struct conn *c, const struct chan_response *r, uint32_t len)
{
	struct app *a = c->app;
	const uint8_t *body;
	size_t blen;
	bool bad;

	if (!app_resp_collect(c, r, len, &body, &blen, &bad)) {
		if (bad) {
			DP_STAT_ADD(a->st, chan_bad_records, 1);
			app_resp_reset(c);
		}
		return;
	}
	switch (r->action) {
	case CHAN_RESP_PLAIN:
		if (blen && stream_flush(c))
			ws_send_text(c, body, blen);
		break;
	case CHAN_RESP_WS_SUBSCRIBE:
		if (!stream_flush(c))
			break;
		if (blen && !ws_send_text(c, body, blen))
			break;
		stream_subscribe(c, r);
		break;
	case CHAN_RESP_WS_CLOSE: {
		char reason[124];
		size_t n = blen < sizeof(reason) - 1 ? blen : sizeof(reason) - 1;

		/* ws_session_close cuts the reason on a UTF-8 boundary to fit. */
		memcpy(reason, body ? (const char *)body : "", n);
		reason[n] = '\0';
		stream_flush(c);
		ws_close_with(c, r->status, reason, false);
		break;
	}
	default:
		DP_STAT_ADD(a->st, stale_records, 1);
		break;
	}
	app_resp_reset(c);
	conn_account(c);
}
