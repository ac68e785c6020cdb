/*
 * The fan-out path: token frames formatted once per worker and copied to
 * every subscriber (SSE and WebSocket variants, creation stamps on request),
 * slow streams framed at once even on busy turns with no timer armed, one
 * batch guard per worker, and what stays allocated per connection (the
 * batch pool's bound, a parked WebSocket's buffers, response parts, the
 * request state a WebSocket's slot hands on).
 * Through the flow harness (flow_harness.h): the real app on a test host.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "flow_harness.h"

#define NSUB 3

static struct app *app_of(void)
{
	return flow_app;
}

/* mode=off: the three subscribers get the same bytes, formatted once. */
static void test_shared_frames_sse(void **state)
{
	struct tp_conn *c[NSUB];
	const char *const t2[] = { "a", " \"b\"" };
	const char *first = NULL;
	struct app_frame_key key;

	(void)state;
	W.conf.batch_mode = CONF_BATCH_OFF;
	flow_restart();
	for (int i = 0; i < NSUB; i++)
		c[i] = flow_sse_open("", 0);
	flow_tokens(flow_all_of(), "s_1", "m_5", 1, t2, 2);
	for (int i = 0; i < NSUB; i++) {
		const char *out = flow_take(c[i]);

		assert_string_equal(out,
				    "id: m_5:1\nevent: token\n"
				    "data: {\"session_id\":\"s_1\",\"message_id\":\"m_5\",\"seq\":1,\"n\":1,\"text\":\"a\"}\n\n"
				    "id: m_5:2\nevent: token\n"
				    "data: {\"session_id\":\"s_1\",\"message_id\":\"m_5\",\"seq\":2,\"n\":1,"
				    "\"text\":\" \\\"b\\\"\"}\n\n");
		if (first)
			assert_string_equal(out, first);
		first = out;
	}
	assert_int_equal(W.st.frames_out, 2 * NSUB);
	assert_int_equal(W.st.tokens_out, 2 * NSUB);
	/* Both frames are in the worker's cache, keyed by message and seq. */
	app_frame_key_set(&key, 0, "m_5", 2, 2);
	assert_non_null(app_frame_find(&app_of()->frames, &key));
	app_frame_key_set(&key, APP_FRAME_WS, "m_5", 2, 2);
	assert_null(app_frame_find(&app_of()->frames, &key));
	for (int i = 0; i < NSUB; i++)
		flow_conn_gone(c[i]);
	W.conf.batch_mode = CONF_BATCH_ADAPTIVE;
}

/* Adaptive: subscribers that held the same run get one shared event. */
static void test_shared_batch_frame(void **state)
{
	struct tp_conn *c[NSUB];
	const char *const t3[] = { "x", "y", "z" };
	struct app_frame_key key;

	(void)state;
	for (int i = 0; i < NSUB; i++)
		c[i] = flow_sse_open("", 0);
	flow_tokens(flow_all_of(), "s_1", "m_6", 1, t3, 3);
	flow_end_of_turn(false);
	for (int i = 0; i < NSUB; i++)
		assert_string_equal(flow_take(c[i]),
				    "id: m_6:3\nevent: token\n"
				    "data: {\"session_id\":\"s_1\",\"message_id\":\"m_6\",\"seq\":3,\"n\":3,\"text\":\"xyz\"}\n\n");
	app_frame_key_set(&key, 0, "m_6", 1, 3);
	assert_non_null(app_frame_find(&app_of()->frames, &key));
	assert_int_equal(W.st.frames_out, NSUB);
	for (int i = 0; i < NSUB; i++)
		flow_conn_gone(c[i]);
}

/* A WebSocket and an SSE subscriber of one session: each gets its own
 * variant, the WebSocket one a whole frame (header included). */
static void test_shared_frames_ws_and_sse(void **state)
{
	struct tp_conn *ws = flow_ws_open_conn(), *sse;
	const char *const t1[] = { "hi" };
	const char *out;

	(void)state;
	flow_ws_subscribe(ws, "s_1");
	sse = flow_sse_open("", 0);
	W.conf.batch_mode = CONF_BATCH_OFF;
	app_of()->pol.off = true;
	flow_tokens(flow_all_of(), "s_1", "m_7", 1, t1, 1);
	out = flow_take(ws);
	assert_string_equal(flow_ws_text(&out), "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":\"m_7\","
					        "\"seq\":1,\"n\":1,\"text\":\"hi\"}");
	assert_non_null(strstr(flow_take(sse), "data: {\"session_id\":\"s_1\",\"message_id\":\"m_7\",\"seq\":1,"));
	/* The subscribe message was handed out: the parked socket keeps no
	 * reassembly buffer. */
	assert_null(((struct conn *)ws->ctx)->ws.msg);
	app_of()->pol.off = false;
	W.conf.batch_mode = CONF_BATCH_ADAPTIVE;
	flow_conn_gone(ws);
	flow_conn_gone(sse);
}

/* A transport that counts stalled conns: with none stalled a slow stream's
 * token is framed at once without asking the conn; with this conn stalled
 * (blocked on a full socket) it is held for the guard. */
static void test_stall_count(void **state)
{
	struct tp_conn *c = flow_sse_open("", 0);
	struct tp *tp = app_of()->h->tp;
	const char *const one[] = { "x" };
	uint64_t delay_ns = (uint64_t)W.conf.max_delay_us * 1000u;

	(void)state;
	tp->stall_counted = true;
	flow_tokens(flow_all_of(), "s_1", "m_9", 1, one, 1);
	flow_end_of_turn(true);
	flow_advance(delay_ns + MS);
	assert_non_null(strstr(flow_take(c), "\"seq\":1,"));
	flow_tx_flush(c);
	/* None stalled: the conn's own view is not read (here it would say
	 * blocked; a transport keeping count never lets the two disagree). */
	c->blocked = true;
	flow_advance(50 * MS);
	flow_tokens(flow_all_of(), "s_1", "m_9", 2, one, 1);
	assert_non_null(strstr(flow_take(c), "\"seq\":2,"));
	flow_tx_flush(c);
	/* Blocked, and the transport says so. */
	c->blocked = true;
	tp->stalled = 1;
	flow_advance(50 * MS);
	flow_tokens(flow_all_of(), "s_1", "m_9", 3, one, 1);
	assert_string_equal(flow_take(c), "");
	assert_int_equal(app_of()->npending, 1);
	c->blocked = false;
	tp->stalled = 0;
	tp->stall_counted = false;
	flow_end_of_turn(false);
	assert_non_null(strstr(flow_take(c), "\"seq\":3,"));
	flow_conn_gone(c);
}

/* A stream whose tokens come max_delay or more apart is framed at once,
 * even on a busy turn, and arms no timer; a fast one still coalesces. */
static void test_slow_stream_not_held(void **state)
{
	struct tp_conn *c = flow_sse_open("", 0);
	const char *const one[] = { "x" };
	uint64_t delay_ns = (uint64_t)W.conf.max_delay_us * 1000u;
	const char *out;

	(void)state;
	/* The conn's first token: pace unknown, held on a busy turn. */
	flow_tokens(flow_all_of(), "s_1", "m_8", 1, one, 1);
	flow_end_of_turn(true);
	assert_string_equal(flow_take(c), "");
	assert_true(app_of()->batch_timer.armed);
	flow_advance(delay_ns + MS);
	assert_non_null(strstr(flow_take(c), "\"seq\":1,\"n\":1,"));
	flow_tx_flush(c);
	assert_false(app_of()->batch_timer.armed);
	/* 50 ms later (20 tokens/s): out at once, before the turn ends. */
	for (uint32_t s = 2; s <= 4; s++) {
		flow_advance(50 * MS);
		flow_tokens(flow_all_of(), "s_1", "m_8", s, one, 1);
		assert_non_null(strstr(flow_take(c), "\"n\":1,"));
		flow_end_of_turn(true);
		assert_false(app_of()->batch_timer.armed);
		assert_int_equal(app_of()->npending, 0);
		flow_tx_flush(c);
	}
	/* Fast again (two tokens 100 us apart on busy turns): coalesced. */
	flow_advance(50 * MS);
	flow_tokens(flow_all_of(), "s_1", "m_8", 5, one, 1);
	flow_take(c);
	flow_tx_flush(c);
	flow_advance(100000);
	flow_tokens(flow_all_of(), "s_1", "m_8", 6, one, 1);
	flow_end_of_turn(true);
	flow_advance(100000);
	flow_tokens(flow_all_of(), "s_1", "m_8", 7, one, 1);
	flow_end_of_turn(true);
	assert_string_equal(flow_take(c), "");
	assert_true(app_of()->batch_timer.armed);
	flow_advance(delay_ns + MS); /* the wheel's tick: at most 1 ms late */
	out = flow_take(c);
	assert_non_null(strstr(out, "\"seq\":7,\"n\":2,"));
	assert_int_equal(W.st.tokens_out, 7);
	flow_conn_gone(c);
}

/* Held batches of many conns share the worker's one guard, armed at the
 * earliest deadline. */
static void test_one_guard_for_all(void **state)
{
	struct tp_conn *c[NSUB];
	const char *const one[] = { "q" };
	uint64_t delay_ns = (uint64_t)W.conf.max_delay_us * 1000u;

	(void)state;
	for (int i = 0; i < NSUB; i++)
		c[i] = flow_sse_open("", 0);
	flow_tokens(flow_all_of(), "s_1", "m_9", 1, one, 1);
	flow_end_of_turn(true);
	assert_int_equal(app_of()->npending, NSUB);
	assert_true(app_of()->batch_timer.armed);
	assert_true(app_of()->batch_timer_at == W.h.now + delay_ns);
	flow_advance(delay_ns + MS);
	assert_int_equal(app_of()->npending, 0);
	for (int i = 0; i < NSUB; i++) {
		assert_non_null(strstr(flow_take(c[i]), "\"seq\":1,\"n\":1,\"text\":\"q\""));
		flow_conn_gone(c[i]);
	}
}

/* X-Sluice-Timing: 1 on the stream request adds each token's creation time. */
static void test_timing_stamps(void **state)
{
	struct tp_conn *c = flow_conn_open(), *plain = flow_sse_open("", 0);
	const struct sink_rec *rq;
	const char *const t2[] = { "a", "b" };
	const char *out;

	(void)state;
	flow_feed(c, "GET /api/chat/stream/s_1 HTTP/1.1\r\nHost: a\r\nX-Sluice-Timing: 1\r\n\r\n");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	flow_response(flow_handle_of(rq), flow_req_of(rq)->req_id, 200, CHAN_RESP_SSE_SUBSCRIBE, 0, "s_1", "",
		      0, NULL, 0);
	flow_take(c);
	flow_tx_flush(c);
	flow_tokens(flow_all_of(), "s_1", "m_a", 1, t2, 2);
	flow_end_of_turn(false);
	out = flow_take(c);
	assert_non_null(strstr(out, "\"seq\":2,\"n\":2,\"text\":\"ab\",\"created_ns\":["));
	assert_null(strstr(flow_take(plain), "created_ns"));
	flow_conn_gone(c);
	flow_conn_gone(plain);
}

/* Delivering a record to every subscriber allocates nothing once the
 * subscribers exist (returns the mallocs made while it ran). */
static unsigned fan_out_record(void)
{
	struct tp_conn *c[NSUB];
	const char *const t2[] = { "m", "n" };
	unsigned mallocs;

	for (int i = 0; i < NSUB; i++)
		c[i] = flow_sse_open("", 0);
	/* A first record and turn: the batch pool and the frames warm up. */
	flow_tokens(flow_all_of(), "s_1", "m_b", 1, t2, 2);
	flow_end_of_turn(false);
	for (int i = 0; i < NSUB; i++) {
		flow_take(c[i]);
		flow_tx_flush(c[i]);
	}
	flow_mallocs_start();
	flow_tokens(flow_all_of(), "s_1", "m_b", 3, t2, 2);
	flow_end_of_turn(true);
	flow_advance(50 * MS);
	flow_tokens(flow_all_of(), "s_1", "m_b", 5, t2, 1);
	flow_end_of_turn(true);
	mallocs = flow_mallocs_stop();
	for (int i = 0; i < NSUB; i++) {
		assert_non_null(strstr(flow_take(c[i]), "\"seq\":5,"));
		flow_conn_gone(c[i]);
	}
	return mallocs;
}

static void test_fan_out_allocates_nothing(void **state)
{
	(void)state;
	flow_assert_no_mallocs(fan_out_record);
}

/* Past BATCH_POOL_KEEP, a batch buffer goes back to malloc when its batch
 * empties: once every subscriber held a token in the same busy turn and the
 * guard flushed them, no conn holds a buffer and the pool keeps exactly its
 * bound for the next turn. */
static void test_drained_batches_bounded(void **state)
{
	enum { N = BATCH_POOL_KEEP + 8 };
	struct tp_conn *c[N];
	const char *const one[] = { "x" };

	(void)state;
	W.conf.max_conns = N;
	flow_restart();
	for (int i = 0; i < N; i++)
		c[i] = flow_sse_open("", 0);
	/* The conns' first token: pace unknown, held on a busy turn. */
	flow_tokens(flow_all_of(), "s_1", "m_p", 1, one, 1);
	flow_end_of_turn(true);
	assert_int_equal(app_of()->npending, N);
	assert_int_equal(app_of()->pool.allocated, N);
	flow_advance((uint64_t)W.conf.max_delay_us * 1000u + MS);
	assert_int_equal(app_of()->npending, 0);
	for (int i = 0; i < N; i++) {
		assert_non_null(strstr(flow_take(c[i]), "\"seq\":1,\"n\":1,"));
		assert_null(((struct conn *)c[i]->ctx)->batch.buf);
	}
	assert_int_equal(app_of()->pool.allocated, BATCH_POOL_KEEP);
	assert_int_equal(app_of()->pool.small.nfree, BATCH_POOL_KEEP);
	for (int i = 0; i < N; i++)
		flow_conn_gone(c[i]);
}

/* A parked WebSocket holds no buffer of its own: the reassembly buffer
 * exists only while a message arrives, the control-frame buffer only
 * while a control frame does, no response parts, no batch buffer. */
static void test_parked_ws_holds_no_buffers(void **state)
{
	struct tp_conn *t = flow_ws_open_conn();
	struct conn *c = t->ctx;
	static const uint8_t ping[10] = { 0x89, 0x84, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2, 'c' ^ 3, 'd' ^ 4 };
	uint8_t fr[128];
	size_t n = flow_ws_frame(fr, "{\"type\":\"nothing-yet\"}");
	const char *const one[] = { "x" };

	(void)state;
	flow_ws_subscribe(t, "s_1");
	assert_null(c->ws.msg);
	assert_null(c->ws.ctl);
	assert_null(c->resp);
	/* A ping cut after two payload bytes, then the rest. */
	flow_feed_n(t, ping, 8);
	assert_non_null(c->ws.ctl);
	flow_feed_n(t, ping + 8, 2);
	assert_null(c->ws.ctl);
	assert_int_equal(((const uint8_t *)flow_take(t))[0], 0x8a); /* the pong */
	flow_tx_flush(t);
	/* A text message cut in its payload. */
	flow_feed_n(t, fr, n - 4);
	assert_non_null(c->ws.msg);
	flow_feed_n(t, fr + n - 4, 4);
	assert_null(c->ws.msg);
	flow_take(t);
	flow_tx_flush(t);
	/* A token held on a busy turn, then flushed by the guard. */
	flow_tokens(flow_all_of(), "s_1", "m_w", 1, one, 1);
	flow_end_of_turn(true);
	assert_non_null(c->batch.buf);
	flow_advance((uint64_t)W.conf.max_delay_us * 1000u + MS);
	assert_null(c->batch.buf);
	flow_take(t);
	flow_conn_gone(t);
}

/* Response parts are collected only between a part flagged MORE and the
 * last one: the conn holds no parts buffer before or after. */
static void test_response_parts_given_back(void **state)
{
	struct tp_conn *t = flow_conn_open();
	struct conn *c = t->ctx;
	const struct fld p1[] = { { CHAN_F_BODY, "ab" } };
	const struct fld p2[] = { { CHAN_F_BODY, "cd" } };
	const struct sink_rec *rq;

	(void)state;
	flow_feed(t, "GET /api/chat/sessions/s_1/export HTTP/1.1\r\nHost: a\r\n\r\n");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_null(c->resp);
	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 200, CHAN_RESP_PLAIN, CHAN_RESP_MORE,
		      NULL, NULL, 0, p1, 1);
	assert_non_null(c->resp);
	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 200, CHAN_RESP_PLAIN, 0, NULL, NULL, 0,
		      p2, 1);
	assert_null(c->resp);
	assert_non_null(strstr(flow_take(t), "Content-Length: 4\r\n"));
	/* A single-part response takes none. */
	flow_feed(t, "GET /api/chat/sessions/s_1/export HTTP/1.1\r\nHost: a\r\n\r\n");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 200, CHAN_RESP_PLAIN, 0, NULL, NULL, 0,
		      p2, 1);
	assert_null(c->resp);
	assert_non_null(strstr(flow_take(t), "Content-Length: 2\r\n"));
	flow_conn_gone(t);
}

/* The request state shares its bytes with the WebSocket engine: a slot a
 * WebSocket left in the middle of a message serves the next conn's split
 * body from a clean request state. */
static void test_ws_slot_reused_for_a_body(void **state)
{
	struct tp_conn *t = flow_ws_open_conn();
	struct conn *c = t->ctx;
	uint8_t fr[128];
	size_t n = flow_ws_frame(fr, "{\"type\":\"half-a-message\"}");
	static char body[16384];
	char head[128];
	const struct sink_rec *rq;

	(void)state;
	flow_feed_n(t, fr, n - 4);
	assert_non_null(c->ws.msg);
	flow_conn_gone(t);
	t = flow_conn_open();
	assert_ptr_equal(t->ctx, c); /* the slot given back last is handed out first */
	memset(body, 'z', sizeof(body));
	snprintf(head, sizeof(head), "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n",
		 sizeof(body));
	flow_feed(t, head);
	flow_feed_n(t, body, 100);
	assert_non_null(c->req_buf);
	assert_int_equal(c->req_len, strlen(head) + 100);
	flow_feed_n(t, body, sizeof(body) - 100);
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_HTTP);
	assert_int_equal(flow_rec_field(rq, sizeof(struct chan_request), CHAN_F_BODY)->len, sizeof(body));
	assert_null(c->req_buf);
	assert_int_equal(W.st.body_bytes, 0);
	flow_conn_gone(t);
}

/* ---- a long record to many subscribers ---------------------------------------- */

#define LONG_N 40u /* tokens: more than two of the fan-out's runs */
#define NPLAIN 6

static char long_text[LONG_N][8];
static const char *long_tok[LONG_N];

static void long_tokens(void)
{
	for (uint32_t i = 0; i < LONG_N; i++) {
		/* Token 20 needs escaping: the shared escape is what is framed. */
		snprintf(long_text[i], sizeof(long_text[i]), i == 19 ? "q\"%u" : "t%u", i + 1);
		long_tok[i] = long_text[i];
	}
}

/* The (seq, n) of every token event in out, in order (SSE or WebSocket:
 * the JSON is on the wire as is). */
static uint32_t events_of(const char *out, uint32_t *seq, uint32_t *n, uint32_t max)
{
	uint32_t k = 0;

	while (k < max && (out = strstr(out, "\"seq\":")) != NULL) {
		char *end;

		seq[k] = (uint32_t)strtoul(out + 6, &end, 10);
		assert_true(strncmp(end, ",\"n\":", 5) == 0);
		n[k] = (uint32_t)strtoul(end + 5, NULL, 10);
		k++;
		out = end;
	}
	return k;
}

/* Every put into the frame cache since the app was made. */
static uint64_t frame_puts(void)
{
	uint64_t puts = 0;

	for (uint32_t i = 0; i < APP_FRAME_SLOTS; i++)
		puts += app_of()->frames.slot[i].gen;
	return puts;
}

static struct tp_conn *timing_open(void)
{
	struct tp_conn *c = flow_conn_open();
	const struct sink_rec *rq;

	flow_feed(c, "GET /api/chat/stream/s_1 HTTP/1.1\r\nHost: a\r\nX-Sluice-Timing: 1\r\n\r\n");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	flow_response(flow_handle_of(rq), flow_req_of(rq)->req_id, 200, CHAN_RESP_SSE_SUBSCRIBE, 0, "s_1", "",
		      0, NULL, 0);
	flow_take(c);
	flow_tx_flush(c);
	return c;
}

struct long_subs {
	struct tp_conn *plain[NPLAIN], *ws[2], *timing, *resumed, *slow;
};

/* Six plain SSE subscribers, two WebSockets, one with creation stamps, one
 * resuming after seq 10 and one whose queue is past max_pending_bytes. */
static void long_open(struct long_subs *s)
{
	for (int i = 0; i < NPLAIN; i++)
		s->plain[i] = flow_sse_open("", 0);
	for (int i = 0; i < 2; i++) {
		s->ws[i] = flow_ws_open_conn();
		flow_ws_subscribe(s->ws[i], "s_1");
		flow_take(s->ws[i]);
		flow_tx_flush(s->ws[i]);
	}
	s->timing = timing_open();
	s->resumed = flow_sse_open("m_L", 10);
	s->slow = flow_sse_open("", 0);
	s->slow->extra_queued = W.conf.max_pending_bytes;
}

static void long_close(struct long_subs *s)
{
	for (int i = 0; i < NPLAIN; i++)
		flow_conn_gone(s->plain[i]);
	for (int i = 0; i < 2; i++)
		flow_conn_gone(s->ws[i]);
	flow_conn_gone(s->timing);
	flow_conn_gone(s->resumed);
	flow_conn_gone(s->slow);
}

/* Each of seq..LONG_N once, in order, one event each. */
static void assert_singles(const char *out, uint32_t from)
{
	uint32_t seq[LONG_N + 1], n[LONG_N + 1];
	uint32_t k = events_of(out, seq, n, LONG_N + 1);

	assert_int_equal(k, LONG_N - from + 1);
	for (uint32_t i = 0; i < k; i++) {
		assert_int_equal(seq[i], from + i);
		assert_int_equal(n[i], 1);
	}
}

/* mode=off: every subscriber gets every token once, in order, each frame
 * formatted once per variant for all of them; the resumed one only what it
 * lacks; the slow one is dropped at its accounting after the first run,
 * having had that run's tokens in order. */
static void test_long_record_off(void **state)
{
	struct long_subs s;
	char want[LONG_N * 160];
	size_t wl = 0;
	uint64_t puts0;
	const char *out;
	uint32_t seq[LONG_N], n[LONG_N], k;

	(void)state;
	W.conf.batch_mode = CONF_BATCH_OFF;
	flow_restart();
	long_tokens();
	long_open(&s);
	for (uint32_t i = 0; i < LONG_N; i++)
		wl += (size_t)snprintf(want + wl, sizeof(want) - wl,
				       "id: m_L:%u\nevent: token\ndata: {\"session_id\":\"s_1\",\"message_id\":\"m_L\","
				       "\"seq\":%u,\"n\":1,\"text\":\"%s\"}\n\n",
				       i + 1, i + 1, i == 19 ? "q\\\"20" : long_text[i]);
	puts0 = frame_puts();
	flow_tokens(flow_all_of(), "s_1", "m_L", 1, long_tok, LONG_N);
	/* SSE, WebSocket and stamped frames: each token formatted once per
	 * variant, whatever the number of subscribers. */
	assert_int_equal(frame_puts() - puts0, 3 * LONG_N);
	for (int i = 0; i < NPLAIN; i++)
		assert_string_equal(flow_take(s.plain[i]), want);
	for (int i = 0; i < 2; i++) {
		out = flow_take(s.ws[i]);
		for (uint32_t t = 0; t < LONG_N; t++) {
			char w[512];

			snprintf(w, sizeof(w), "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":\"m_L\","
				 "\"seq\":%u,\"n\":1,\"text\":\"%s\"}", t + 1, t == 19 ? "q\\\"20" : long_text[t]);
			assert_string_equal(flow_ws_text(&out), w);
		}
		assert_string_equal(out, "");
	}
	out = flow_take(s.timing);
	assert_singles(out, 1);
	assert_non_null(strstr(out, "\"seq\":40,\"n\":1,\"text\":\"t40\",\"created_ns\":["));
	assert_singles(flow_take(s.resumed), 11);
	out = flow_take(s.slow);
	k = events_of(out, seq, n, LONG_N);
	assert_int_equal(k, APP_FRAME_RUN);
	for (uint32_t i = 0; i < k; i++)
		assert_int_equal(seq[i], i + 1);
	assert_non_null(strstr(out, "event: error\ndata: {\"error\":{\"code\":\"slow_consumer\""));
	assert_true(s.slow->closed);
	assert_int_equal(W.st.slow_consumer_closes, 1);
	/* Counted per subscriber as before: every token of the record for
	 * those that took all of it, the first run for the dropped one. */
	assert_int_equal(W.st.tokens_in, 10 * LONG_N + APP_FRAME_RUN);
	assert_int_equal(W.st.tokens_out, 9 * LONG_N + (LONG_N - 10) + APP_FRAME_RUN);
	assert_int_equal(W.st.frames_out, W.st.tokens_out);
	{
		uint64_t samples = 0;

		for (uint32_t b = 0; b <= APP_DELAY_BUCKETS; b++)
			samples += W.st.delay_hist[b];
		assert_int_equal(samples, W.st.tokens_out);
		assert_int_equal(W.st.delay_hist[0], W.st.tokens_out);
	}
	long_close(&s);
	W.conf.batch_mode = CONF_BATCH_ADAPTIVE;
}

/* Adaptive, a quiet turn: each holds the whole record and sends it as one
 * event at the end of the turn; subscribers with the same run and variant
 * share one frame; the slow one is dropped with nothing sent. */
static void test_long_record_adaptive(void **state)
{
	struct long_subs s;
	uint64_t puts0;
	const char *out;
	uint32_t seq[2], n[2];

	(void)state;
	long_tokens();
	long_open(&s);
	puts0 = frame_puts();
	flow_tokens(flow_all_of(), "s_1", "m_L", 1, long_tok, LONG_N);
	assert_true(s.slow->closed);
	assert_int_equal(W.st.slow_consumer_closes, 1);
	assert_int_equal(frame_puts(), puts0);
	flow_end_of_turn(false);
	/* 1..40 in the SSE, WebSocket and stamped variants, 11..40 in SSE. */
	assert_int_equal(frame_puts() - puts0, 4);
	for (int i = 0; i < NPLAIN; i++) {
		out = flow_take(s.plain[i]);
		assert_int_equal(events_of(out, seq, n, 2), 1);
		assert_int_equal(seq[0], LONG_N);
		assert_int_equal(n[0], LONG_N);
		assert_non_null(strstr(out, "\"text\":\"t1t2t3"));
		assert_non_null(strstr(out, "t19q\\\"20t21"));
	}
	for (int i = 0; i < 2; i++) {
		/* One text frame (a 16-bit length: past flow_ws_text's reach). */
		out = flow_take(s.ws[i]);
		assert_int_equal((uint8_t)out[0], 0x81);
		assert_int_equal((uint8_t)out[1], 126);
		out += 4;
		assert_int_equal(events_of(out, seq, n, 2), 1);
		{
			static const char head[] = "{\"type\":\"token\",\"session_id\":\"s_1\","
						   "\"message_id\":\"m_L\",\"seq\":40,\"n\":40,\"text\":\"t1t2";

			assert_memory_equal(out, head, sizeof(head) - 1);
		}
	}
	assert_non_null(strstr(flow_take(s.timing), "\"seq\":40,\"n\":40,"));
	out = flow_take(s.resumed);
	assert_int_equal(events_of(out, seq, n, 2), 1);
	assert_int_equal(n[0], LONG_N - 10);
	assert_non_null(strstr(out, "\"text\":\"t11t12"));
	assert_null(strstr(flow_take(s.slow), "\"seq\":"));
	assert_int_equal(W.st.tokens_out, 9 * LONG_N + (LONG_N - 10));
	assert_int_equal(W.st.frames_out, 10);
	long_close(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_shared_frames_sse, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_shared_batch_frame, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_shared_frames_ws_and_sse, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_slow_stream_not_held, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_stall_count, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_one_guard_for_all, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_timing_stamps, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_fan_out_allocates_nothing, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_drained_batches_bounded, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_parked_ws_holds_no_buffers, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_response_parts_given_back, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_ws_slot_reused_for_a_body, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_long_record_off, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_long_record_adaptive, flow_setup, flow_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
