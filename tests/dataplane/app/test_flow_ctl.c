/*
 * Control's operator records and what the worker reports: /metrics, KICK,
 * the STATS record every second and ADMIN LIST_CONNS.
 * Through the flow harness (flow_harness.h): the real app on a test host.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_metrics.h"
#include "flow_harness.h"

static void test_metrics_text(void **state)
{
	static char buf[1 << 16];
	char want[96];
	size_t n;

	(void)state;
	W.st.tokens_in = 7;
	W.st.frames_out = 3;
	W.st.delay_hist[0] = 2;
	W.st.delay_hist[APP_DELAY_BUCKETS] = 1;
	W.st.http_responses[5] = 4;
	W.st.ws_active = 2;
	W.st.kicks = 5;
	n = app_metrics_render(&W.h, buf, sizeof(buf));
	assert_true(n > 0 && n < sizeof(buf));
	buf[n] = '\0';
	assert_non_null(strstr(buf, "# TYPE sluice_tokens_in_total counter\nsluice_tokens_in_total 7\n"));
	assert_non_null(strstr(buf, "sluice_frames_out_total 3\n"));
	assert_non_null(strstr(buf, "sluice_http_responses_total{class=\"5xx\"} 4\n"));
	assert_non_null(strstr(buf, "sluice_token_batch_delay_seconds_bucket{le=\"1e-05\"} 2\n"));
	/* Buckets are cumulative: the last bound production has holds all but the
	 * +Inf sample; +Inf equals the count. */
	snprintf(want, sizeof(want), "sluice_token_batch_delay_seconds_bucket{le=\"%g\"} 2\n",
		 app_stats_delay_bounds_us[APP_DELAY_BUCKETS - 1] / 1e6);
	assert_non_null(strstr(buf, want));
	assert_non_null(strstr(buf, "sluice_token_batch_delay_seconds_bucket{le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(buf, "sluice_token_batch_delay_seconds_count 3\n"));
	assert_non_null(strstr(buf, "sluice_control_attached 1\n"));
	assert_non_null(strstr(buf, "# TYPE sluice_ws_active gauge\nsluice_ws_active 2\n"));
	assert_non_null(strstr(buf, "sluice_kicks_total 5\n"));
	assert_int_equal(app_metrics_render(&W.h, buf, 100), 0);
}

/* A transport with counters of its own: two families, one of them labelled. */
static const struct tp_counter_def tp_defs[] = {
	{ "sluice_x_total", "counter", "X.", "" },
	{ "sluice_y_total", "counter", "Y by reason.", "{reason=\"a\"}" },
	{ "sluice_y_total", "counter", "Y by reason.", "{reason=\"b\"}" },
};
static uint32_t tp_instances;

static uint32_t tp_counters(uint64_t *v)
{
	for (uint32_t i = 0; i < SLUICE_ARRAY_LEN(tp_defs); i++)
		v[i] = i + 1;
	return tp_instances;
}

/* The transport's own samples come last, HELP and TYPE once per family;
 * none with no instance counted, or from a transport without counters. */
static void test_metrics_transport_counters(void **state)
{
	static char buf[1 << 16];
	static const char fams[] = "# HELP sluice_x_total X.\n# TYPE sluice_x_total counter\n"
				   "sluice_x_total 1\n"
				   "# HELP sluice_y_total Y by reason.\n# TYPE sluice_y_total counter\n"
				   "sluice_y_total{reason=\"a\"} 2\nsluice_y_total{reason=\"b\"} 3\n";
	struct tp *plain = W.h.tp;
	struct tp_ops ops = *plain->ops;
	struct tp with = { .ops = &ops };
	size_t n;

	(void)state;
	n = app_metrics_render(&W.h, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	assert_null(strstr(buf, "sluice_tcp_"));
	ops.counter_defs = tp_defs;
	ops.ncounters = SLUICE_ARRAY_LEN(tp_defs);
	ops.counters = tp_counters;
	W.h.tp = &with;
	tp_instances = 2;
	n = app_metrics_render(&W.h, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	assert_true(n > strlen(fams));
	assert_string_equal(buf + n - strlen(fams), fams);
	tp_instances = 0;
	n = app_metrics_render(&W.h, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	assert_null(strstr(buf, "sluice_x_total"));
	W.h.tp = plain;
}

static void kick_rec(struct chan_conn h, const char *sid, uint16_t code, const char *rcode,
		     const char *reason)
{
	struct chan_kick *k = (void *)flow_rbuf;

	memset(k, 0, sizeof(*k));
	k->conn = h;
	chan_id_set(k->session_id, sid, strlen(sid));
	k->code = code;
	snprintf(k->reason_code, sizeof(k->reason_code), "%s", rcode);
	snprintf(k->reason, sizeof(k->reason), "%s", reason);
	flow_rec_in(CHAN_REC_KICK, sizeof(*k));
}

/* The conn handle control knows a WebSocket conn by (from its WS_OPEN). */
static struct chan_conn ws_handle(void)
{
	const struct sink_rec *rq = flow_last_rec(CHAN_REC_REQUEST);

	return flow_req_of(rq)->conn;
}

static void test_kick_one_conn(void **state)
{
	struct tp_conn *ws = flow_ws_open_conn();
	struct chan_conn h = ws_handle();
	struct chan_conn old = h;
	const char *const one[] = { "x" };
	uint8_t fr[64];

	(void)state;
	flow_ws_subscribe(ws, "s_1");
	W.nrec = 0;
	/* A handle of an earlier generation is stale. */
	old.gen--;
	kick_rec(old, "", 1008, "unauthenticated", "session expired");
	assert_int_equal(W.st.stale_records, 1);
	assert_string_equal(flow_take(ws), "");
	kick_rec(h, "", 1008, "unauthenticated", "session expired");
	flow_assert_ws_close(flow_take(ws), 1008, "session expired");
	assert_int_equal(W.st.kicks, 1);
	assert_non_null(flow_last_rec(CHAN_REC_UNSUBSCRIBE));
	/* Nothing more reaches the client, and what it sends is not forwarded. */
	flow_tokens(flow_all_of(), "s_1", "m_1", 1, one, 1);
	flow_end_of_turn(false);
	assert_string_equal(flow_take(ws), "");
	flow_feed_n(ws, fr, flow_ws_frame(fr, "{\"type\":\"get_state\"}"));
	assert_null(flow_last_rec(CHAN_REC_REQUEST));
	/* A client that never answers the close is dropped after 5 s. */
	flow_advance(5 * SEC - MS);
	assert_false(ws->closed);
	flow_advance(2 * MS);
	assert_true(ws->closed);
	assert_false(ws->aborted);
	flow_conn_gone(ws);

	/* A client that answers the close is closed at once. */
	ws = flow_ws_open_conn();
	kick_rec(ws_handle(), "", 4001, "session_killed", "killed by an operator");
	flow_assert_ws_close(flow_take(ws), 4001, "killed by an operator");
	fr[0] = 0x88;
	fr[1] = 0x82;
	memset(fr + 2, 0, 4);
	fr[6] = 0x03;
	fr[7] = 0xe8;
	flow_feed_n(ws, fr, 8);
	assert_true(ws->closed);
	flow_conn_gone(ws);

	/* A code that must not go on the wire becomes 1008; a plain HTTP conn just closes. */
	ws = flow_ws_open_conn();
	kick_rec(ws_handle(), "", 1005, "unauthenticated", "x");
	flow_assert_ws_close(flow_take(ws), 1008, "x");
	flow_conn_gone(ws);
	struct tp_conn *c = flow_conn_open();
	flow_feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	kick_rec(flow_handle_of(flow_last_rec(CHAN_REC_REQUEST)), "", 1008, "unauthenticated", "bye");
	assert_string_equal(flow_take(c), "");
	assert_true(c->closed);
	assert_false(c->aborted);
	flow_conn_gone(c);
	assert_int_equal(W.st.kicks, 4);
}

static void test_kick_session(void **state)
{
	struct tp_conn *s1 = flow_sse_open("", 0);
	struct tp_conn *s2 = flow_sse_open("", 0);
	struct tp_conn *ws = flow_ws_open_conn();
	struct tp_conn *other = flow_ws_open_conn();
	const char *const one[] = { "y" };
	const char *want = "event: error\ndata: {\"error\":{\"code\":\"unauthenticated\","
			   "\"message\":\"logged out\"}}\n\n";

	(void)state;
	flow_ws_subscribe(ws, "s_1");
	flow_ws_subscribe(other, "s_2");
	/* A held token goes out before the error event. */
	flow_tokens(flow_all_of(), "s_1", "m_1", 1, one, 1);
	kick_rec(flow_all_of(), "s_1", 1008, "unauthenticated", "logged out");
	const char *out = flow_take(s1);
	assert_non_null(strstr(out, "event: token\n"));
	assert_non_null(strstr(out, want));
	assert_true(strstr(out, "event: token\n") < strstr(out, want));
	assert_true(s1->closed);
	assert_false(s1->aborted);
	out = flow_take(s2);
	assert_non_null(strstr(out, want));
	assert_true(s2->closed);
	out = flow_take(ws);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":"
					        "\"m_1\",\"seq\":1,\"n\":1,\"text\":\"y\"}");
	flow_assert_ws_close(out, 1008, "logged out");
	assert_false(ws->closed);
	assert_string_equal(flow_take(other), "");
	assert_false(other->closed);
	assert_int_equal(W.st.kicks, 3);
	/* The session's other subscribers are gone; s_2 still streams. */
	flow_tokens(flow_all_of(), "s_2", "m_2", 1, one, 1);
	flow_end_of_turn(false);
	out = flow_take(other);
	assert_non_null(strstr(flow_ws_text(&out), "\"session_id\":\"s_2\""));
	flow_conn_gone(s1);
	flow_conn_gone(s2);
	flow_conn_gone(ws);
	flow_conn_gone(other);
	assert_int_equal(W.st.sse_active, 0);
	assert_int_equal(W.st.ws_active, 0);
}

static const struct chan_stats *stats_at(uint32_t k)
{
	uint32_t seen = 0;

	for (uint32_t i = 0; i < W.nrec; i++)
		if (W.rec[i].type == CHAN_REC_STATS && seen++ == k) {
			assert_int_equal(W.rec[i].len, sizeof(struct chan_stats));
			return (const void *)(W.recs + W.rec[i].off);
		}
	return NULL;
}

static void test_stats_every_second(void **state)
{
	struct tp_conn *s1 = flow_sse_open("", 0);
	struct tp_conn *ws = flow_ws_open_conn();
	struct tp_conn *idle = flow_conn_open();
	const struct chan_stats *st;

	(void)state;
	W.nrec = 0;
	W.st.tokens_out = 11;
	W.hst.chan_full = 2;
	W.hst.loop_turns = 99;
	flow_advance(SEC - 2 * MS);
	assert_null(stats_at(0));
	flow_advance(3 * MS);
	st = stats_at(0);
	assert_non_null(st);
	assert_null(stats_at(1));
	assert_int_equal(st->worker, WID);
	assert_int_equal(st->uptime_ms, 1001);
	assert_int_equal(st->conns_active, 3);
	assert_int_equal(st->conns_accepted, 3);
	assert_int_equal(st->sse_active, 1);
	assert_int_equal(st->ws_active, 1);
	assert_int_equal(st->http_requests, 2);
	assert_int_equal(st->tokens_out, 11);
	assert_int_equal(st->chan_full, 2);
	assert_int_equal(st->loop_turns, 99);
	assert_int_equal(st->bytes_out, W.st.bytes_out);
	flow_conn_gone(idle);
	flow_advance(SEC);
	st = stats_at(1);
	assert_non_null(st);
	assert_int_equal(st->conns_active, 2);
	assert_int_equal(st->uptime_ms, 2001);
	/* A loop that ran late sends one record, not a burst. */
	flow_advance(5 * SEC);
	assert_non_null(stats_at(2));
	assert_null(stats_at(3));
	flow_advance(SEC - 2 * MS);
	assert_null(stats_at(3));
	/* Nothing while control is away. */
	W.h.attached = false;
	flow_advance(3 * SEC);
	assert_null(stats_at(3));
	W.h.attached = true;
	flow_conn_gone(s1);
	flow_conn_gone(ws);
}

/* The CONNS pages answering req_id, in ring order. */
static uint32_t conns_pages(uint32_t req_id, const struct chan_conns **pages, uint32_t max)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < W.nrec; i++) {
		const struct chan_conns *pg = (const void *)(W.recs + W.rec[i].off);

		if (W.rec[i].type != CHAN_REC_CONNS || pg->req_id != req_id)
			continue;
		assert_true(chan_rec_valid(CHAN_REC_CONNS, pg, W.rec[i].len));
		assert_true(n < max);
		pages[n++] = pg;
	}
	return n;
}

static void list_conns_rec(uint32_t req_id)
{
	struct chan_admin *q = (void *)flow_rbuf;

	*q = (struct chan_admin){ .op = CHAN_ADMIN_LIST_CONNS, .req_id = req_id };
	flow_rec_in(CHAN_REC_ADMIN, sizeof(*q));
}

static void test_list_conns_paging(void **state)
{
	struct tp_conn *c[7];
	const struct chan_conns *pg[8];
	uint32_t seen = 0, sse = 0, ws = 0;
	uint32_t page = (uint32_t)(sizeof(struct chan_conns) + 3 * sizeof(struct chan_conn_info));

	(void)state;
	c[0] = flow_sse_open("", 0);
	c[1] = flow_ws_open_conn();
	for (int i = 2; i < 7; i++)
		c[i] = flow_conn_open();
	flow_advance(1500 * MS);
	W.h.rec_max = page;
	list_conns_rec(41);
	assert_int_equal(conns_pages(41, pg, 8), 3);
	for (uint32_t p = 0; p < 3; p++) {
		const struct chan_conn_info *ci = (const void *)(pg[p] + 1);

		assert_int_equal(pg[p]->worker, WID);
		assert_int_equal(pg[p]->count, p < 2 ? 3 : 1);
		assert_int_equal(pg[p]->flags, p == 2 ? CHAN_CONNS_LAST : 0);
		for (uint32_t j = 0; j < pg[p]->count; j++) {
			assert_int_equal(ci[j].conn.worker, WID);
			assert_true(ci[j].conn.slot < 16);
			assert_false(seen & (1u << ci[j].conn.slot));
			seen |= 1u << ci[j].conn.slot;
			assert_int_equal(ci[j].peer_ipv4, 0x0100007f);
			assert_int_equal(ci[j].peer_port, 40000);
			assert_int_equal(ci[j].age_ms, 1500);
			if (ci[j].mode == CHAN_CONN_SSE) {
				sse++;
				assert_string_equal(ci[j].session_id, "s_1");
				assert_true(ci[j].bytes_out > 0);
			} else if (ci[j].mode == CHAN_CONN_WS) {
				ws++;
				assert_string_equal(ci[j].session_id, "");
			}
		}
	}
	assert_int_equal(__builtin_popcount(seen), 7);
	assert_int_equal(sse, 1);
	assert_int_equal(ws, 1);

	/* Room for a full page and a bit: the second page shrinks to what
	 * fits and is the last. */
	W.nrec = 0;
	W.limited = true;
	W.room = 8 + page + 8 + (uint32_t)(sizeof(struct chan_conns) + 2 * sizeof(struct chan_conn_info));
	list_conns_rec(42);
	assert_int_equal(conns_pages(42, pg, 8), 2);
	assert_int_equal(pg[0]->count, 3);
	assert_int_equal(pg[0]->flags, 0);
	assert_int_equal(pg[1]->count, 1);
	assert_int_equal(pg[1]->flags, CHAN_CONNS_LAST);
	/* Room for one page only: that page becomes the last. */
	W.nrec = 0;
	W.room = 8 + page + 8;
	list_conns_rec(43);
	assert_int_equal(conns_pages(43, pg, 8), 1);
	assert_int_equal(pg[0]->count, 3);
	assert_int_equal(pg[0]->flags, CHAN_CONNS_LAST);
	/* No room at all: nothing, counted. */
	W.nrec = 0;
	W.room = 0;
	uint64_t full = W.hst.chan_full;
	list_conns_rec(44);
	assert_int_equal(conns_pages(44, pg, 8), 0);
	assert_int_equal(W.hst.chan_full, full + 1);
	W.limited = false;
	for (int i = 0; i < 7; i++)
		flow_conn_gone(c[i]);
	/* An empty worker answers with one empty last page. */
	W.nrec = 0;
	list_conns_rec(45);
	assert_int_equal(conns_pages(45, pg, 8), 1);
	assert_int_equal(pg[0]->count, 0);
	assert_int_equal(pg[0]->flags, CHAN_CONNS_LAST);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_metrics_text, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_metrics_transport_counters, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_kick_one_conn, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_kick_session, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_stats_every_second, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_list_conns_paging, flow_setup, flow_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
