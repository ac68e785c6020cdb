/*
 * The app's request bodies and overload manager (issue 12): bodies beyond
 * APP_BODY_FREE and chunked bodies are read only after control admitted
 * them, buffers are counted and given back, the body budget, the memory
 * watermark and the per-address cap turn clients away cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_harness.h"

#define FIXED sizeof(struct chan_request)

static const struct chan_request *last_req(void)
{
	const struct sink_rec *rq = flow_last_rec(CHAN_REC_REQUEST);

	assert_non_null(rq);
	return flow_req_of(rq);
}

static void admit(const char *body_max)
{
	const struct chan_request *rq = last_req();
	const struct fld f[] = { { CHAN_F_BODY_MAX, body_max } };

	assert_int_equal(rq->kind, CHAN_REQ_HTTP_ADMIT);
	flow_response(rq->conn, rq->req_id, 100, CHAN_RESP_CONTINUE, 0, NULL, NULL, 0, f,
		      body_max ? 1 : 0);
}

/* An unauthenticated client announcing a large body: control refuses the
 * head, the body is never read and the conn closes. */
static void test_admission_refused(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const char *head = "POST /api/chat/message HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n"
			   "Expect: 100-continue\r\n\r\n";
	static char chunk[30000];

	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	assert_int_equal(flow_feed(c, head), 0);
	flow_feed_n(c, chunk, sizeof(chunk));
	assert_int_equal(W.st.body_bytes, 0);
	assert_int_equal(W.st.body_admissions, 1);
	/* No 100 Continue before control said yes. */
	assert_string_equal(flow_take(c), "");
	const struct sink_rec *rq = flow_last_rec(CHAN_REC_REQUEST);
	flow_assert_field(rq, FIXED, CHAN_F_PATH, "/api/chat/message");
	flow_assert_field(rq, FIXED, CHAN_F_BODY_LEN, "1048576");
	assert_null(flow_rec_field(rq, FIXED, CHAN_F_BODY));
	flow_refuse(rq, 401, "unauthenticated");
	const char *out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 401 Unauthorized\r\n"));
	assert_non_null(strstr(out, "Connection: close\r\n"));
	assert_true(c->closed);
	assert_int_equal(W.st.body_refused, 1);
	assert_int_equal(W.st.body_bytes, 0);
	flow_conn_gone(c);

	/* Control going away while it decides: 503, and the conn closes. */
	c = flow_conn_open();
	assert_int_equal(flow_feed(c, head), 0);
	flow_control_changed(false);
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "Retry-After: 1\r\n"));
	assert_true(c->closed);
	flow_conn_gone(c);
	/* Not attached at all: 503 at once, closed. */
	W.h.attached = false;
	c = flow_conn_open();
	flow_feed(c, head);
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_true(c->closed);
	flow_conn_gone(c);
}

/* Admitted: 100 Continue, then the body; a small body split across reads
 * is collected without asking. */
static void test_admitted_and_small_bodies(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const char *head = "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n"
			   "Expect: 100-continue\r\n\r\n";
	static char body[20000];

	(void)state;
	memset(body, 'y', sizeof(body));
	assert_int_equal(flow_feed(c, head), 0);
	admit(NULL);
	flow_feed_n(c, "", 0);
	assert_string_equal(flow_take(c), "HTTP/1.1 100 Continue\r\n\r\n");
	flow_feed_n(c, body, sizeof(body));
	const struct sink_rec *rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_HTTP);
	assert_int_equal(flow_rec_field(rq, FIXED, CHAN_F_BODY)->len, sizeof(body));
	assert_int_equal(W.st.body_bytes, 0);
	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 204, CHAN_RESP_PLAIN, 0, NULL,
		      NULL, 0, NULL, 0);
	flow_take(c);

	/* 16 KiB split in two: no admission, one buffer while it comes in. */
	uint64_t asked = W.st.body_admissions;
	char small_head[128];
	snprintf(small_head, sizeof(small_head),
		 "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: %u\r\n\r\n", 16384u);
	flow_feed(c, small_head);
	flow_feed_n(c, body, 100);
	assert_true(W.st.body_bytes > 16384);
	flow_feed_n(c, body, 16384 - 100);
	assert_int_equal(W.st.body_admissions, asked);
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_HTTP);
	assert_int_equal(flow_rec_field(rq, FIXED, CHAN_F_BODY)->len, 16384);
	assert_int_equal(W.st.body_bytes, 0);
	flow_conn_gone(c);
	/* A conn closed in the middle of a body gives its buffer back too. */
	c = flow_conn_open();
	flow_feed(c, small_head);
	flow_feed_n(c, body, 100);
	assert_true(W.st.body_bytes > 0);
	flow_conn_gone(c);
	assert_int_equal(W.st.body_bytes, 0);
}

/* A chunked body: admitted first, decoded whatever the split, within the
 * admitted size. */
static void test_chunked_body(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const char *head = "POST /api/chat/message HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
	const char *body = "7\r\n{\"a\":1,\r\n6;ext=1\r\n\"b\":2}\r\n0\r\nX-T: 1\r\n\r\n";

	(void)state;
	assert_int_equal(flow_feed(c, head), 0);
	const struct sink_rec *rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_null(flow_rec_field(rq, FIXED, CHAN_F_BODY_LEN));
	admit("100");
	for (size_t i = 0; body[i]; i++)
		flow_feed_n(c, body + i, 1);
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_HTTP);
	flow_assert_field(rq, FIXED, CHAN_F_BODY, "{\"a\":1,\"b\":2}");
	assert_int_equal(W.st.body_bytes, 0);
	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 204, CHAN_RESP_PLAIN, 0, NULL,
		      NULL, 0, NULL, 0);
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 204 No Content\r\n"));
	assert_false(c->closed);

	/* Larger than control admitted: 413 and close. */
	assert_int_equal(flow_feed(c, head), 0);
	admit("10");
	flow_feed(c, "b\r\n");
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 413 Content Too Large\r\n"));
	assert_true(c->closed);
	assert_int_equal(W.st.body_bytes, 0);
	flow_conn_gone(c);

	/* A framing error inside the chunks: 400 and close. */
	c = flow_conn_open();
	assert_int_equal(flow_feed(c, head), 0);
	admit(NULL);
	flow_feed(c, "5\nhello\r\n");
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 400 Bad Request\r\n"));
	assert_true(c->closed);
	assert_int_equal(W.st.body_bytes, 0);
	flow_conn_gone(c);
}

/* body_budget_mb: bodies beyond it are refused with 503, not buffered. */
static void test_body_budget(void **state)
{
	struct tp_conn *a = flow_conn_open(), *b = flow_conn_open();
	const char *head = "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n";

	(void)state;
	W.conf.body_budget_mb = 2;
	flow_feed(a, head);
	admit(NULL);
	flow_feed_n(a, "", 0);
	flow_feed_n(a, "z", 1);
	assert_true(W.st.body_bytes > 1048576);
	flow_feed(b, head);
	admit(NULL);
	flow_feed_n(b, "", 0);
	const char *out = flow_take(b);
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "Retry-After: 1\r\n"));
	assert_non_null(strstr(out, "\"overloaded\""));
	assert_true(b->closed);
	assert_int_equal(W.st.body_refused, 1);
	flow_conn_gone(b);
	flow_conn_gone(a);
	assert_int_equal(W.st.body_bytes, 0);
}

/* worker_mem_mb: past it new conns are refused (503 here, a reset on a
 * transport that refuses by reset) while an open conn keeps working. */
static void test_memory_watermark(void **state)
{
	struct tp_conn *old = flow_conn_open(), *c;

	(void)state;
	W.conf.worker_mem_mb = 16;
	W.st.pending_bytes = 16u << 20;
	c = flow_conn_open();
	const char *out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "Retry-After: 1\r\n"));
	assert_true(c->closed);
	assert_int_equal(W.st.conns_refused_mem, 1);
	flow_conn_gone(c);
	flow_tp_ops.refuse_by_reset = true;
	c = flow_conn_open_from(0x0100007f);
	assert_null(c->ctx);
	assert_int_equal(c->out_len, 0);
	free(c);
	assert_int_equal(W.st.conns_refused_mem, 2);
	flow_feed(old, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(flow_take(old), "HTTP/1.1 200 OK\r\n"));
	W.st.pending_bytes = 0;
	c = flow_conn_open();
	assert_false(c->closed);
	flow_conn_gone(c);
	flow_conn_gone(old);
}

/* conns_per_ip: one address may hold that many conns; others are not
 * affected, and a closed conn frees its place. */
static void test_conns_per_ip(void **state)
{
	struct tp_conn *c[3], *other, *extra;

	(void)state;
	W.conf.conns_per_ip = 2;
	c[0] = flow_conn_open();
	c[1] = flow_conn_open();
	c[2] = flow_conn_open();
	const char *out = flow_take(c[2]);
	assert_non_null(strstr(out, "HTTP/1.1 429 Too Many Requests\r\n"));
	assert_non_null(strstr(out, "\"too_many_connections\""));
	assert_non_null(strstr(out, "Retry-After: 1\r\n"));
	assert_true(c[2]->closed);
	assert_int_equal(W.st.conns_refused_ip, 1);
	flow_conn_gone(c[2]);
	other = flow_conn_open_from(0x0200007f);
	assert_non_null(other->ctx);
	assert_false(other->closed);
	flow_conn_gone(c[0]);
	extra = flow_conn_open();
	assert_false(extra->closed);
	flow_tp_ops.refuse_by_reset = true;
	struct tp_conn *reset = flow_conn_open_from(0x0100007f);
	assert_null(reset->ctx);
	free(reset);
	assert_int_equal(W.st.conns_refused_ip, 2);
	flow_conn_gone(extra);
	flow_conn_gone(other);
	flow_conn_gone(c[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_admission_refused, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_admitted_and_small_bodies, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_chunked_body, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_body_budget, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_memory_watermark, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_conns_per_ip, flow_setup, flow_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
