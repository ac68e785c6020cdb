/*
 * WebSocket: the upgrade control authorises (WS_OPEN), local answers,
 * forwarding, the pending bound on input, and the re-check after a control
 * restart.
 * Through the flow harness (flow_harness.h): the real app on a test host.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_harness.h"

static void test_websocket(void **state)
{
	struct tp_conn *c = flow_conn_open();
	uint8_t fr[128];
	const char *out;
	const struct sink_rec *rq;
	const struct chan_request *req;
	const char *const one[] = { "hi" };

	(void)state;
	flow_ws_accept(flow_ws_upgrade(c, ""), NULL);
	const char *head101 = HEAD101 "\r\n";
	out = flow_take(c);
	assert_memory_equal(out, head101, strlen(head101));
	out += strlen(head101);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"connected\",\"worker\":3}");
	flow_feed_n(c, fr, flow_ws_frame(fr, "{\"type\":\"ping\",\"id\":7}"));
	out = flow_take(c);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"pong\",\"id\":7}");
	flow_feed_n(c, fr, flow_ws_frame(fr, "{nope"));
	out = flow_take(c);
	assert_non_null(strstr(flow_ws_text(&out), "\"code\":\"invalid_json\""));
	flow_feed_n(c, fr, flow_ws_frame(fr, "{\"type\":\"subscribe\",\"session_id\":\"s_1\"}"));
	rq = flow_last_rec(CHAN_REC_REQUEST);
	req = (const void *)(W.recs + rq->off);
	assert_int_equal(req->kind, CHAN_REQ_WS);
	flow_assert_field(rq, sizeof(*req), CHAN_F_BODY, "{\"type\":\"subscribe\",\"session_id\":\"s_1\"}");
	const struct fld f[] = { { CHAN_F_BODY, "{\"type\":\"response\",\"request\":\"subscribe\"}" } };
	flow_response(req->conn, req->req_id, 200, CHAN_RESP_WS_SUBSCRIBE, 0, "s_1", NULL, 0, f, 1);
	out = flow_take(c);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"response\",\"request\":\"subscribe\"}");
	flow_tx_flush(c);
	flow_tokens(flow_all_of(), "s_1", "m_5", 1, one, 1);
	flow_end_of_turn(false);
	out = flow_take(c);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":\"m_5\","
					        "\"seq\":1,\"n\":1,\"text\":\"hi\"}");
	/* A binary message closes with 1003. */
	fr[0] = 0x82;
	fr[1] = 0x80;
	memset(fr + 2, 0, 4);
	flow_feed_n(c, fr, 6);
	out = flow_take(c);
	assert_int_equal((uint8_t)out[0], 0x88);
	assert_int_equal(((uint8_t)out[2] << 8) | (uint8_t)out[3], 1003);
	flow_conn_gone(c);
}

/* Input that queues output with nothing from control behind it (here pongs
 * on /ws/echo) still obeys max_pending_bytes: a client that sends and never
 * reads is closed 1008 instead of growing the send queue. */
static void test_ws_input_bounded_by_pending(void **state)
{
	static const uint8_t ping[6] = { 0x89, 0x80, 0, 0, 0, 0 };
	struct tp_conn *c;
	const char *out;

	(void)state;
	W.conf.ws_echo = true;
	flow_restart();
	c = flow_conn_open();
	flow_feed(c, "GET /ws/echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	assert_string_equal(flow_take(c), HEAD101 "\r\n");
	flow_feed_n(c, ping, sizeof(ping));
	assert_memory_equal(flow_take(c), "\x8a\x00", 2);
	assert_false(c->closed);
	c->extra_queued = W.conf.max_pending_bytes;
	flow_feed_n(c, ping, sizeof(ping));
	out = flow_take(c);
	assert_memory_equal(out, "\x8a\x00", 2);
	flow_assert_ws_close(out + 2, 1008, "slow consumer");
	assert_true(c->closed);
	assert_int_equal(W.st.slow_consumer_closes, 1);
	flow_conn_gone(c);
	assert_int_equal(W.st.pending_bytes, 0);
}

static void test_bad_upgrades(void **state)
{
	struct tp_conn *c = flow_conn_open();

	(void)state;
	flow_feed(c, "GET /ws/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n");
	const char *out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 426 Upgrade Required\r\n"));
	assert_non_null(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n"));
	flow_feed(c, "GET /ws/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		     "Sec-WebSocket-Key: short==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 400 Bad Request\r\n"));
	flow_feed(c, "POST /ws/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 405 Method Not Allowed\r\n"));
	assert_non_null(strstr(out, "\r\nAllow: GET\r\n"));
	assert_false(c->closed);
	flow_conn_gone(c);
}

static void test_ws_open_accept_with_protocol(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const struct sink_rec *rq;
	char both[1024];
	size_t n;
	const char *out;
	const char *up = UPGRADE_HEAD "Authorization: Bearer abc\r\nCookie: sluice_session=xyz\r\n"
			 "Origin: https://chat.example\r\n"
			 "Sec-WebSocket-Protocol: sluice.v1, sluice.auth.tok\r\n\r\n";

	(void)state;
	/* A ping frame right behind the upgrade waits until the 101 is out. */
	memcpy(both, up, strlen(up));
	n = strlen(up) + flow_ws_frame((uint8_t *)both + strlen(up), "{\"type\":\"ping\"}");
	assert_int_equal(flow_feed_n(c, both, n), strlen(up));
	assert_string_equal(flow_take(c), "");
	rq = flow_last_ws_open();
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_AUTHORIZATION, "Bearer abc");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_COOKIE, "sluice_session=xyz");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_ORIGIN, "https://chat.example");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_WS_PROTOCOL, "sluice.v1, sluice.auth.tok");
	assert_int_equal(W.st.ws_upgrades, 0);
	/* The idle timer does not run while control decides. */
	flow_advance((uint64_t)W.conf.idle_timeout_s * SEC + SEC);
	assert_false(c->closed);
	flow_ws_accept(rq, "Sec-WebSocket-Protocol: sluice.v1");
	out = flow_take(c);
	assert_memory_equal(out, HEAD101 "Sec-WebSocket-Protocol: sluice.v1\r\n\r\n",
			    strlen(HEAD101) + 37);
	out += strlen(HEAD101) + 37;
	assert_string_equal(flow_ws_text(&out), CONNECTED);
	assert_int_equal(W.st.ws_upgrades, 1);
	assert_int_equal(W.st.ws_active, 1);
	assert_int_equal(W.st.http_responses[1], 1);
	/* The stashed ping is offered again and answered locally. */
	assert_int_equal(c->resumes, 1);
	assert_int_equal(flow_feed(c, ""), n - strlen(up));
	out = flow_take(c);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"pong\"}");
	/* A second accept for the same request is stale now. */
	flow_ws_accept(rq, NULL);
	assert_string_equal(flow_take(c), "");
	flow_conn_gone(c);
	assert_int_equal(W.st.ws_active, 0);
}

static void test_ws_open_refused(void **state)
{
	static const struct { uint16_t status; const char *code, *line; } cases[] = {
		{ 401, "unauthenticated", "HTTP/1.1 401 Unauthorized\r\n" },
		{ 403, "origin_not_allowed", "HTTP/1.1 403 Forbidden\r\n" },
	};

	(void)state;
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
		struct tp_conn *c = flow_conn_open();
		const struct sink_rec *rq = flow_ws_upgrade(c, "Origin: https://evil.example\r\n");
		char want[256];
		const char *out;

		flow_refuse(rq, cases[i].status, cases[i].code);
		out = flow_take(c);
		assert_memory_equal(out, cases[i].line, strlen(cases[i].line));
		assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
		snprintf(want, sizeof(want), "\r\n\r\n{\"error\":{\"code\":\"%s\",\"message\":\"no\"}}",
			 cases[i].code);
		assert_non_null(strstr(out, want));
		assert_null(strstr(out, "101"));
		assert_true(c->closed);
		assert_false(c->aborted);
		assert_int_equal(W.st.ws_auth_refused, i + 1);
		flow_conn_gone(c);
	}
	assert_int_equal(W.st.ws_upgrades, 0);
	assert_int_equal(W.st.ws_active, 0);
}

static void test_ws_open_without_control(void **state)
{
	struct tp_conn *c = flow_conn_open();
	char req[512];
	const char *out;

	(void)state;
	snprintf(req, sizeof(req), "%s\r\n", UPGRADE_HEAD);
	W.h.attached = false;
	flow_feed(c, req);
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "\r\nRetry-After: 1\r\n"));
	assert_non_null(strstr(out, "\"code\":\"control_unavailable\""));
	assert_null(flow_last_rec(CHAN_REC_REQUEST));
	W.h.attached = true;
	W.ring_full = true;
	flow_feed(c, req);
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "\"code\":\"overloaded\""));
	assert_int_equal(W.hst.chan_full, 1);
	W.ring_full = false;
	/* Control leaves while it decides: 503, and a late accept is stale. */
	flow_feed(c, req);
	assert_string_equal(flow_take(c), "");
	const struct sink_rec *rq = flow_last_ws_open();
	W.h.attached = false;
	flow_control_changed(false);
	assert_non_null(strstr(flow_take(c), "\"message\":\"control went away\""));
	W.h.attached = true;
	flow_ws_accept(rq, NULL);
	assert_string_equal(flow_take(c), "");
	assert_int_equal(W.st.ws_upgrades, 0);
	flow_conn_gone(c);
	/* /ws/echo is not authorised by control. */
	W.conf.ws_echo = true;
	flow_restart();
	W.nrec = 0;
	W.h.attached = false;
	c = flow_conn_open();
	flow_feed(c, "GET /ws/echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	assert_string_equal(flow_take(c), HEAD101 "\r\n");
	assert_null(flow_last_rec(CHAN_REC_REQUEST));
	flow_conn_gone(c);
	W.h.attached = true;
}

static void test_ws_reauth_after_control_restart(void **state)
{
	struct tp_conn *ws = flow_conn_open();
	const struct sink_rec *rq, *open_rq = NULL, *sub = NULL;
	const char *const two[] = { "a", "b" };
	uint8_t fr[128];
	const char *out;
	uint32_t req_id;

	(void)state;
	flow_ws_accept(flow_ws_upgrade(ws, "Cookie: sluice_session=c00k1e\r\nOrigin: https://ok.example\r\n"
				           "Sec-WebSocket-Protocol: sluice.auth.tok\r\n"), NULL);
	flow_take(ws);
	flow_tx_flush(ws);
	flow_ws_subscribe(ws, "s_1");
	flow_tokens(flow_all_of(), "s_1", "m_1", 1, two, 2);
	flow_end_of_turn(false);
	flow_take(ws);
	flow_tx_flush(ws);
	/* Control restarted (a new epoch seen as an attach): the running answer
	 * ends interrupted, the conn is authorised again with the upgrade's
	 * headers, and only then is its subscription re-announced. */
	W.nrec = 0;
	flow_control_changed(true);
	out = flow_take(ws);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"usage\",\"session_id\":\"s_1\",\"message_id\":"
					        "\"m_1\",\"prompt_tokens\":0,\"completion_tokens\":2,\"total_tokens\":2,"
					        "\"cost_usd\":0}");
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"done\",\"session_id\":\"s_1\",\"message_id\":"
					        "\"m_1\",\"status\":\"interrupted\"}");
	assert_string_equal(out, "");
	for (uint32_t i = 0; i < W.nrec; i++) {
		if (W.rec[i].type == CHAN_REC_REQUEST && !open_rq)
			open_rq = &W.rec[i];
		if (W.rec[i].type == CHAN_REC_SUBSCRIBE) {
			assert_non_null(open_rq);
			sub = &W.rec[i];
		}
	}
	assert_non_null(sub);
	assert_int_equal(((const struct chan_sub *)(W.recs + sub->off))->seq, 2);
	rq = flow_last_ws_open();
	assert_ptr_equal(rq, open_rq);
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_COOKIE, "sluice_session=c00k1e");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_ORIGIN, "https://ok.example");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_WS_PROTOCOL, "sluice.auth.tok");
	assert_null(flow_rec_field(rq, sizeof(struct chan_request), CHAN_F_AUTHORIZATION));
	/* Accepted: nothing visible, and new messages go to control as before. */
	flow_ws_accept(rq, "Sec-WebSocket-Protocol: sluice.v1");
	assert_string_equal(flow_take(ws), "");
	assert_false(ws->closed);
	flow_feed_n(ws, fr, flow_ws_frame(fr, "{\"type\":\"send\",\"session_id\":\"s_1\",\"content\":\"hi\"}"));
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_WS);
	req_id = flow_req_of(rq)->req_id;
	const struct fld ok[] = { { CHAN_F_BODY, "{\"type\":\"response\",\"request\":\"send\"}" } };
	flow_response(flow_req_of(rq)->conn, req_id, 401, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, ok, 1);
	out = flow_take(ws);
	/* An ordinary answer is a text message, even with an error status. */
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"response\",\"request\":\"send\"}");
	flow_tx_flush(ws);
	/* Another restart; this time the login has gone meanwhile: 1008. */
	W.nrec = 0;
	flow_control_changed(true);
	rq = flow_last_ws_open();
	assert_true(flow_req_of(rq)->req_id > req_id);
	flow_refuse(rq, 401, "unauthenticated");
	flow_assert_ws_close(flow_take(ws), 1008, "unauthenticated");
	assert_int_equal(W.st.ws_auth_refused, 1);
	assert_non_null(flow_last_rec(CHAN_REC_UNSUBSCRIBE));
	flow_conn_gone(ws);

	/* A disallowed Origin after the restart closes 1008 with that reason. */
	ws = flow_ws_open_conn();
	W.nrec = 0;
	flow_control_changed(true);
	flow_refuse(flow_last_ws_open(), 403, "origin_not_allowed");
	flow_assert_ws_close(flow_take(ws), 1008, "origin_not_allowed");
	flow_conn_gone(ws);
	/* A busy control (503) leaves the conn open. */
	ws = flow_ws_open_conn();
	W.nrec = 0;
	flow_control_changed(true);
	flow_refuse(flow_last_ws_open(), 503, "overloaded");
	assert_string_equal(flow_take(ws), "");
	assert_false(ws->closed);
	flow_conn_gone(ws);
	assert_int_equal(W.st.ws_auth_refused, 2);
}

/* A BROADCAST of text for conn h, limited to max_pending unsent bytes. */
static void broadcast(struct chan_conn h, uint32_t max_pending, const char *text)
{
	struct chan_broadcast *b = (void *)flow_rbuf;
	uint8_t *p = (uint8_t *)(b + 1);

	memset(b, 0, sizeof(*b));
	b->conn = h;
	b->max_pending = max_pending;
	chan_field_put(&p, CHAN_F_BODY, text, (uint32_t)strlen(text));
	flow_rec_in(CHAN_REC_BROADCAST, (uint32_t)(p - flow_rbuf));
}

/*
 * /ws/admin: the upgrade and every message name the endpoint (PATH), so
 * control routes them to the dashboard; BROADCAST records arrive as text
 * messages; a client holding more than max_pending unsent bytes is dropped
 * with 1008 "slow consumer"; records for closed or non-WebSocket conns are
 * dropped and counted.
 */
static void test_ws_admin_and_broadcast(void **state)
{
	struct tp_conn *c = flow_conn_open(), *http;
	const struct sink_rec *rq;
	struct chan_conn h;
	uint8_t fr[128];
	const char *out;

	(void)state;
	flow_feed(c, "GET /ws/admin HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
		     "Cookie: sluice_session=abc\r\n\r\n");
	assert_string_equal(flow_take(c), "");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_WS_OPEN);
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_PATH, "/ws/admin");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_COOKIE, "sluice_session=abc");
	h = flow_req_of(rq)->conn;
	flow_ws_accept(rq, NULL);
	out = flow_take(c);
	assert_memory_equal(out, HEAD101 "\r\n", strlen(HEAD101) + 2);
	out += strlen(HEAD101) + 2;
	assert_string_equal(flow_ws_text(&out), CONNECTED);
	flow_tx_flush(c);

	flow_feed_n(c, fr, flow_ws_frame(fr, "{\"type\":\"subscribe\"}"));
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_WS);
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_PATH, "/ws/admin");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_BODY, "{\"type\":\"subscribe\"}");

	broadcast(h, 4096, "{\"type\":\"heartbeat\"}");
	out = flow_take(c);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"heartbeat\"}");
	assert_int_equal(W.st.broadcasts, 1);
	/* The client reads nothing: past the bound, it is dropped. */
	c->extra_queued = 5000;
	broadcast(h, 4096, "{\"type\":\"metrics\"}");
	flow_assert_ws_close(flow_take(c), 1008, "slow consumer");
	assert_int_equal(W.st.slow_consumer_closes, 1);
	assert_int_equal(W.st.broadcasts, 1);
	/* Nothing more reaches a closing socket. */
	uint64_t stale = W.st.stale_records;
	broadcast(h, 4096, "{\"type\":\"late\"}");
	assert_string_equal(flow_take(c), "");
	assert_int_equal(W.st.stale_records, stale + 1);
	flow_conn_gone(c);
	broadcast(h, 4096, "{\"type\":\"gone\"}");
	assert_int_equal(W.st.stale_records, stale + 2);

	/* A plain HTTP conn never gets one. */
	http = flow_conn_open();
	flow_feed(http, "GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n");
	broadcast(flow_req_of(flow_last_rec(CHAN_REC_REQUEST))->conn, 4096, "{}");
	assert_string_equal(flow_take(http), "");
	assert_int_equal(W.st.stale_records, stale + 3);
	flow_conn_gone(http);

	/* /ws/chat messages name no path: control's default endpoint. */
	c = flow_ws_open_conn();
	flow_feed_n(c, fr, flow_ws_frame(fr, "{\"type\":\"get_state\"}"));
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_null(flow_rec_field(rq, sizeof(struct chan_request), CHAN_F_PATH));
	flow_conn_gone(c);
}

/* Drain: an idle WebSocket is closed 1001 at once. */
static void test_ws_drain(void **state)
{
	struct tp_conn *ws = flow_ws_open_conn();

	(void)state;
	app_ops.drain(flow_app, false);
	flow_assert_ws_close(flow_take(ws), 1001, "server shutting down");
	flow_conn_gone(ws);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ws_admin_and_broadcast, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_websocket, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_ws_input_bounded_by_pending, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_bad_upgrades, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_ws_open_accept_with_protocol, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_ws_open_refused, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_ws_open_without_control, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_ws_reauth_after_control_restart, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_ws_drain, flow_setup, flow_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
