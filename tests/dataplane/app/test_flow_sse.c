/*
 * Streams and the batcher, seen through SSE: resume, coalescing under load,
 * batching off, control leaving and coming back, slow consumers, tokens too
 * large for a batch.
 * Through the flow harness (flow_harness.h): the real app on a test host.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_harness.h"

static void test_sse_resume_and_light_load(void **state)
{
	struct tp_conn *c = flow_sse_open("m_1", 2);
	const char *const t4[] = { "a", " b", " \"c\"", " d" };

	(void)state;
	flow_status_rec(flow_all_of(), "s_1", "m_1", "streaming");
	assert_string_equal(flow_take(c), "id: m_1:2\nevent: status_update\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_1\",\"status\":\"streaming\"}\n\n");
	flow_tx_flush(c);
	/* Tokens 1 and 2 were delivered before the resume: only 3 and 4 go. */
	flow_tokens(flow_all_of(), "s_1", "m_1", 1, t4, 4);
	assert_string_equal(flow_take(c), ""); /* held until the end of the turn */
	flow_end_of_turn(false);
	assert_string_equal(flow_take(c), "id: m_1:4\nevent: token\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_1\",\"seq\":4,\"n\":2,"
				          "\"text\":\" \\\"c\\\" d\"}\n\n");
	assert_int_equal(W.st.tokens_in, 4);
	assert_int_equal(W.st.tokens_out, 2);
	assert_int_equal(W.st.frames_out, 1);
	/* Redelivery of the same tokens is dropped. */
	flow_tokens(flow_all_of(), "s_1", "m_1", 3, t4, 2);
	flow_end_of_turn(false);
	assert_string_equal(flow_take(c), "");
	flow_done_rec(flow_all_of(), "s_1", "m_1", CHAN_DONE_COMPLETE, 4);
	assert_string_equal(flow_take(c), "id: m_1:d\nevent: done\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_1\",\"status\":\"complete\"}\n\n");
	app_ops.upcalls->on_close(flow_app, c->ctx);
	assert_non_null(flow_last_rec(CHAN_REC_UNSUBSCRIBE));
	free(c);
}

static void test_busy_coalesces_until_max_delay(void **state)
{
	struct tp_conn *c = flow_sse_open("", 0);
	const char *const one[] = { "x" };
	uint64_t delay_ns = (uint64_t)W.conf.max_delay_us * 1000u;

	(void)state;
	for (uint32_t s = 1; s <= 3; s++) {
		flow_tokens(flow_all_of(), "s_1", "m_9", s, one, 1);
		flow_end_of_turn(true);
		flow_advance(100000);
	}
	assert_string_equal(flow_take(c), "");
	/* The oldest token's max_delay deadline flushes all three at once. */
	flow_advance(delay_ns - 300000 + MS);
	assert_string_equal(flow_take(c), "id: m_9:3\nevent: token\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_9\",\"seq\":3,\"n\":3,"
				          "\"text\":\"xxx\"}\n\n");
	assert_int_equal(W.st.frames_out, 1);
	assert_int_equal(W.st.tokens_out, 3);
	flow_end_of_turn(false);
	/* Not busy, but bytes from an earlier turn still queued: hold. */
	flow_tokens(flow_all_of(), "s_1", "m_9", 4, one, 1);
	flow_end_of_turn(false);
	assert_string_equal(flow_take(c), "");
	flow_tx_flush(c);
	flow_tokens(flow_all_of(), "s_1", "m_9", 5, one, 1);
	flow_end_of_turn(false);
	assert_non_null(strstr(flow_take(c), "\"seq\":5,\"n\":2,"));
	/* Not busy, nothing queued, but the window is used up (un-ACKed bytes
	 * reach the smaller of cwnd and the peer's window): hold. */
	flow_tx_flush(c);
	c->cwnd = 14600;
	c->snd_wnd = 65535;
	c->unacked = 14600;
	flow_tokens(flow_all_of(), "s_1", "m_9", 6, one, 1);
	flow_end_of_turn(false);
	assert_string_equal(flow_take(c), "");
	c->unacked = 1460;
	flow_tokens(flow_all_of(), "s_1", "m_9", 7, one, 1);
	flow_end_of_turn(false);
	assert_non_null(strstr(flow_take(c), "\"seq\":7,\"n\":2,"));
	c->cwnd = c->snd_wnd = c->unacked = 0;
	/* A status event flushes held tokens first (ordering). */
	flow_tx_flush(c);
	flow_tokens(flow_all_of(), "s_1", "m_9", 8, one, 1);
	flow_end_of_turn(true);
	flow_done_rec(flow_all_of(), "s_1", "m_9", CHAN_DONE_CANCELLED, 8);
	const char *out = flow_take(c);
	assert_true(strstr(out, "event: token") < strstr(out, "event: done"));
	assert_non_null(strstr(out, "\"status\":\"cancelled\""));
	flow_conn_gone(c);
}

static void test_mode_off_one_frame_per_token(void **state)
{
	struct tp_conn *c;
	const char *const t3[] = { "a", "b", "c" };

	(void)state;
	W.conf.batch_mode = CONF_BATCH_OFF;
	flow_restart();
	c = flow_sse_open("", 0);
	flow_tokens(flow_all_of(), "s_1", "m_2", 1, t3, 3);
	assert_int_equal(W.st.frames_out, 3);
	assert_non_null(strstr(flow_take(c), "\"seq\":3,\"n\":1,\"text\":\"c\""));
	flow_conn_gone(c);
	W.conf.batch_mode = CONF_BATCH_ADAPTIVE;
}

/* A reload switches the batching mode of a stream that is already open. */
static void test_reload_switches_mode(void **state)
{
	static struct sluice_conf next;
	const char *const t3[] = { "a", "b", "c" };
	struct tp_conn *c = flow_sse_open("", 0);
	uint64_t frames;

	(void)state;
	flow_tokens(flow_all_of(), "s_1", "m_4", 1, t3, 3);
	flow_end_of_turn(false);
	flow_take(c);
	frames = W.st.frames_out;
	next = W.conf;
	next.batch_mode = CONF_BATCH_OFF;
	W.h.conf = &next;
	flow_conf_changed();
	flow_tokens(flow_all_of(), "s_1", "m_4", 4, t3, 3);
	assert_int_equal(W.st.frames_out - frames, 3);
	assert_non_null(strstr(flow_take(c), "\"seq\":6,\"n\":1,\"text\":\"c\""));
	W.h.conf = &W.conf;
	flow_conf_changed();
	flow_conn_gone(c);
}

static void test_detach_interrupts_and_reattach_announces(void **state)
{
	struct tp_conn *c = flow_sse_open("", 0);
	const char *const t2[] = { "a", "b" };
	const struct sink_rec *r;
	const struct chan_sub *s;

	(void)state;
	flow_tokens(flow_all_of(), "s_1", "m_3", 1, t2, 2);
	flow_end_of_turn(false);
	flow_take(c);
	W.h.attached = false;
	flow_control_changed(false);
	/* Its one usage comes first (no terms arrived: the tokens delivered, at
	 * no known price), then done. */
	assert_string_equal(flow_take(c), "id: m_3:u\nevent: usage\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_3\",\"prompt_tokens\":0,"
				          "\"completion_tokens\":2,\"total_tokens\":2,\"cost_usd\":0}\n\n"
				          "id: m_3:d\nevent: done\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_3\",\"status\":\"interrupted\"}\n\n");
	W.h.attached = true;
	flow_control_changed(true);
	r = flow_last_rec(CHAN_REC_SUBSCRIBE);
	assert_non_null(r);
	s = (const void *)(W.recs + r->off);
	assert_string_equal(s->session_id, "s_1");
	assert_string_equal(s->message_id, "m_3");
	assert_int_equal(s->seq, 2);
	/* The restarted control's own done for m_3 is not sent a second time. */
	flow_done_rec(flow_all_of(), "s_1", "m_3", CHAN_DONE_INTERRUPTED, 2);
	assert_string_equal(flow_take(c), "");
	/* A control restart seen only as a new epoch also ends running streams. */
	flow_tx_flush(c);
	flow_tokens(flow_all_of(), "s_1", "m_4", 1, t2, 1);
	flow_end_of_turn(false);
	assert_non_null(strstr(flow_take(c), "\"message_id\":\"m_4\",\"seq\":1,"));
	W.nrec = 0;
	flow_control_changed(true);
	assert_string_equal(flow_take(c), "id: m_4:u\nevent: usage\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_4\",\"prompt_tokens\":0,"
				          "\"completion_tokens\":1,\"total_tokens\":1,\"cost_usd\":0}\n\n"
				          "id: m_4:d\nevent: done\n"
				          "data: {\"session_id\":\"s_1\",\"message_id\":\"m_4\",\"status\":\"interrupted\"}\n\n");
	assert_non_null(flow_last_rec(CHAN_REC_SUBSCRIBE));
	flow_conn_gone(c);
}

static void test_slow_consumer(void **state)
{
	struct tp_conn *c = flow_sse_open("", 0);
	const char *const one[] = { "x" };

	(void)state;
	c->extra_queued = W.conf.max_pending_bytes;
	flow_tokens(flow_all_of(), "s_1", "m_4", 1, one, 1);
	assert_int_equal(W.st.slow_consumer_closes, 1);
	assert_string_equal(flow_take(c), "event: error\ndata: {\"error\":{\"code\":\"slow_consumer\","
				          "\"message\":\"pending data passed max_pending_bytes; reconnect with Last-Event-ID\"}}\n\n");
	assert_true(c->closed);
	flow_conn_gone(c);
	assert_int_equal(W.st.pending_bytes, 0);
}

static void test_oversized_token_framed_alone(void **state)
{
	struct tp_conn *c = flow_sse_open("", 0);
	static char big[400];
	const char *const t[] = { "a", big, "b" };
	const char *out;

	(void)state;
	memset(big, 'Q', sizeof(big) - 1);
	flow_tokens(flow_all_of(), "s_1", "m_7", 1, t, 3);
	flow_end_of_turn(false);
	out = flow_take(c);
	/* "a" is flushed before the big token, which goes alone; "b" follows. */
	assert_non_null(strstr(out, "\"seq\":1,\"n\":1,\"text\":\"a\"}"));
	assert_non_null(strstr(out, "\"seq\":2,\"n\":1,\"text\":\"QQQQ"));
	assert_non_null(strstr(out, "\"seq\":3,\"n\":1,\"text\":\"b\"}"));
	assert_int_equal(W.st.frames_out, 3);
	assert_int_equal(W.st.tokens_out, 3);
	flow_conn_gone(c);
}

/* A token framed alone (too big for a batch buffer) is escaped into the
 * worker's own buffer: no allocation per token, even on this path. One whose
 * escaped text could not be framed closes the conn instead of being cut.
 * Returns the malloc calls made while the big token was framed. */
static unsigned token_alone(void)
{
	struct tp_conn *c = flow_sse_open("", 0);
	static char big[2000];
	static char huge[40000];
	const char *const a[] = { "a" };
	const char *const t[] = { big };
	const char *const h[] = { huge };
	const char *out;
	unsigned mallocs;

	/* The batch pool takes its buffer once, on the first token. */
	flow_tokens(flow_all_of(), "s_1", "m_8", 1, a, 1);
	flow_end_of_turn(false);
	flow_take(c);
	memset(big, '"', sizeof(big) - 1); /* escapes to twice its size */
	flow_mallocs_start();
	flow_tokens(flow_all_of(), "s_1", "m_8", 2, t, 1);
	mallocs = flow_mallocs_stop();
	out = flow_take(c);
	assert_non_null(strstr(out, "\"seq\":2,\"n\":1,\"text\":\"\\\"\\\""));
	assert_int_equal(W.st.tokens_out, 2);
	assert_false(c->closed);

	/* 40000 '"' escape to 80000 bytes, more than max_bytes + 64 KiB. */
	memset(huge, '"', sizeof(huge) - 1);
	flow_tokens(flow_all_of(), "s_1", "m_8", 3, h, 1);
	assert_true(c->closed);
	assert_int_equal(W.st.tokens_out, 2);
	flow_conn_gone(c);
	return mallocs;
}

static void test_token_alone_framed_or_closed(void **state)
{
	(void)state;
	token_alone();
}

static void test_token_alone_allocates_nothing(void **state)
{
	(void)state;
	flow_assert_no_mallocs(token_alone);
}

/* Drain (docs/api.md, "When the dataplane drains"): an idle keep-alive
 * conn is closed, a stream whose answer runs gets that answer's done and
 * then the shutdown event with retry: and no id, new conns are refused, and
 * drain(now) ends a running stream at once. */
static void test_drain(void **state)
{
	static const char shutdown_ev[] = "retry: 1000\nevent: shutdown\n"
					  "data: {\"type\":\"shutdown\",\"reason\":\"draining\",\"retry_ms\":1000}\n\n";
	struct tp_conn *idle = flow_conn_open();
	struct tp_conn *c = flow_sse_open("", 0);
	const char *const one[] = { "x" };

	(void)state;
	flow_status_rec(flow_all_of(), "s_1", "m_1", "streaming");
	flow_take(c);
	app_ops.drain(flow_app, false);
	assert_true(idle->closed);
	assert_false(c->closed);
	assert_int_equal(app_ops.open_conns(flow_app), 2);
	struct tp_conn extra = { 0 };
	struct tp_peer peer = { .ipv4 = 0x0100007f, .port = 40001 };
	assert_null(app_ops.upcalls->on_open(flow_app, &extra, &peer));
	flow_tokens(flow_all_of(), "s_1", "m_1", 1, one, 1);
	flow_done_rec(flow_all_of(), "s_1", "m_1", CHAN_DONE_COMPLETE, 1);
	const char *out = flow_take(c);
	const char *done = strstr(out, "event: done\n");
	assert_non_null(done);
	assert_string_equal(strstr(out, "retry: "), shutdown_ev);
	assert_true(strstr(out, "event: token") < done);
	assert_true(c->closed);
	flow_conn_gone(idle);
	flow_conn_gone(c);
	assert_int_equal(app_ops.open_conns(flow_app), 0);

	flow_restart();
	c = flow_sse_open("", 0);
	flow_status_rec(flow_all_of(), "s_1", "m_2", "streaming");
	flow_take(c);
	app_ops.drain(flow_app, false);
	assert_false(c->closed);
	app_ops.drain(flow_app, true);
	assert_string_equal(flow_take(c), shutdown_ev);
	assert_true(c->closed);
	flow_conn_gone(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sse_resume_and_light_load, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_busy_coalesces_until_max_delay, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_mode_off_one_frame_per_token, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_reload_switches_mode, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_detach_interrupts_and_reattach_announces, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_slow_consumer, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_oversized_token_framed_alone, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_token_alone_framed_or_closed, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_token_alone_allocates_nothing, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_drain, flow_setup, flow_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
