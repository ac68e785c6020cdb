/*
 * HTTP/1.1: local routes, requests forwarded to control and their answers,
 * framing errors, timers and long bodies.
 * Through the flow harness (flow_harness.h): the real app on a test host.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_harness.h"
#include "app/app_static.h"

static void test_healthz_and_local_routes(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const char *req = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
			  "POST /readyz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
			  "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";

	(void)state;
	/* Three pipelined local requests, answered in order in one pass. */
	assert_int_equal(flow_feed(c, req), strlen(req));
	assert_string_equal(flow_take(c),
			    "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 15\r\n\r\n"
			    "{\"status\":\"ok\"}"
			    "HTTP/1.1 405 Method Not Allowed\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 67\r\n"
			    "Allow: GET, HEAD\r\n\r\n"
			    "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use GET or HEAD\"}}"
			    "HTTP/1.1 404 Not Found\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 55\r\n\r\n"
			    "{\"error\":{\"code\":\"not_found\",\"message\":\"no such path\"}}");
	assert_false(c->closed);
	/* HEAD keeps Content-Length, drops the body; HTTP/1.0 closes. */
	flow_feed(c, "HEAD /readyz HTTP/1.0\r\n\r\n");
	assert_string_equal(flow_take(c),
			    "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 14\r\n"
			    "Connection: close\r\n\r\n");
	assert_true(c->closed);
	assert_int_equal(W.st.http_responses[2], 2);
	assert_int_equal(W.st.http_responses[4], 2);
	flow_conn_gone(c);
}

static void test_forward_and_pipelining(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const char *r1 = "POST /api/chat/message?x=1 HTTP/1.1\r\nHost: a\r\n"
			 "Authorization: Bearer tok\r\nContent-Length: 2\r\n\r\n{}";
	const char *r2 = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
	char both[512];
	const struct sink_rec *rq;
	const struct chan_request *req;
	const struct fld f[] = {
		{ CHAN_F_BODY, "{\"message_id\":\"m_1\"}" },
		{ CHAN_F_SET_COOKIE, "a=b; HttpOnly" },
	};

	(void)state;
	snprintf(both, sizeof(both), "%s%s", r1, r2);
	/* Only the first request is consumed; the second waits its turn. */
	assert_int_equal(flow_feed(c, both), strlen(r1));
	assert_int_equal(flow_feed(c, ""), 0);
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_non_null(rq);
	req = (const void *)(W.recs + rq->off);
	assert_int_equal(req->kind, CHAN_REQ_HTTP);
	assert_int_equal(req->method, CHAN_M_POST);
	assert_int_equal(req->conn.worker, WID);
	assert_int_equal(req->conn.gen >> 20, 5); /* seeded from the epoch */
	flow_assert_field(rq, sizeof(*req), CHAN_F_PATH, "/api/chat/message");
	flow_assert_field(rq, sizeof(*req), CHAN_F_QUERY, "x=1");
	flow_assert_field(rq, sizeof(*req), CHAN_F_BODY, "{}");
	flow_assert_field(rq, sizeof(*req), CHAN_F_AUTHORIZATION, "Bearer tok");
	flow_assert_field(rq, sizeof(*req), CHAN_F_PEER, "127.0.0.1:40000");
	assert_null(flow_rec_field(rq, sizeof(*req), CHAN_F_COOKIE));
	assert_string_equal(flow_take(c), "");
	/* A response for another request id is stale. */
	flow_response(req->conn, req->req_id + 1, 202, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, f, 2);
	assert_int_equal(W.st.stale_records, 1);
	flow_response(req->conn, req->req_id, 202, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, f, 2);
	assert_string_equal(flow_take(c),
			    "HTTP/1.1 202 Accepted\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 20\r\n"
			    "Set-Cookie: a=b; HttpOnly\r\n\r\n{\"message_id\":\"m_1\"}");
	assert_int_equal(c->resumes, 1);
	assert_int_equal(flow_feed(c, ""), strlen(r2));
	assert_non_null(strstr(flow_take(c), "{\"status\":\"ok\"}"));
	app_ops.upcalls->on_close(flow_app, c->ctx);
	/* A conn that talked to control is reported closed, and its handle goes stale. */
	rq = flow_last_rec(CHAN_REC_CONN_CLOSED);
	assert_non_null(rq);
	flow_response(((const struct chan_conn_closed *)(W.recs + rq->off))->conn, 1, 200,
		      CHAN_RESP_PLAIN, 0, NULL, NULL, 0, NULL, 0);
	assert_int_equal(W.st.stale_records, 2);
	free(c);
}

static void test_multipart_response(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const struct sink_rec *rq;
	const struct chan_request *req;
	const struct fld p1[] = { { CHAN_F_CONTENT_TYPE, "text/markdown" }, { CHAN_F_BODY, "# Ti" } };
	const struct fld p2[] = { { CHAN_F_BODY, "tle\n" } };

	(void)state;
	flow_feed(c, "GET /api/chat/sessions/s_1/export HTTP/1.1\r\nHost: a\r\n\r\n");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	req = (const void *)(W.recs + rq->off);
	flow_response(req->conn, req->req_id, 200, CHAN_RESP_PLAIN, CHAN_RESP_MORE, NULL, NULL, 0, p1, 2);
	assert_string_equal(flow_take(c), "");
	flow_response(req->conn, req->req_id, 200, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, p2, 1);
	assert_string_equal(flow_take(c),
			    "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE "Content-Length: 8\r\n"
			    "Content-Type: text/markdown\r\n\r\n# Title\n");
	flow_conn_gone(c);
}

static void test_control_unavailable(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const char *want503 = "HTTP/1.1 503 Service Unavailable\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE
			      "Content-Type: application/json; charset=utf-8\r\nContent-Length: 70\r\n"
			      "Retry-After: 1\r\n\r\n"
			      "{\"error\":{\"code\":\"control_unavailable\",\"message\":\"control went away\"}}";

	(void)state;
	W.h.attached = false;
	flow_feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(flow_take(c), "\"control_unavailable\""));
	W.h.attached = true;
	W.ring_full = true;
	flow_feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(flow_take(c), "503 Service Unavailable\r\n"));
	assert_int_equal(W.hst.chan_full, 1);
	W.ring_full = false;
	/* A request waiting when control leaves gets 503. */
	flow_feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_string_equal(flow_take(c), "");
	W.h.attached = false;
	flow_control_changed(false);
	assert_string_equal(flow_take(c), want503);
	assert_false(c->closed);
	W.h.attached = true;
	/* A request stamped with the epoch of a control that has since been
	 * replaced (seen as a new epoch, no gap) may have been discarded by the
	 * new one: 503 too. One stamped with the current epoch keeps waiting. */
	W.cp_epoch = 7;
	flow_feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_int_equal(flow_req_of(flow_last_rec(CHAN_REC_REQUEST))->cp_epoch, 7);
	assert_string_equal(flow_take(c), "");
	flow_control_changed(true);
	assert_string_equal(flow_take(c), "");
	W.cp_epoch = 8;
	flow_control_changed(true);
	assert_string_equal(flow_take(c), want503);
	flow_conn_gone(c);
}

static void test_framing_errors_and_timeout(void **state)
{
	struct tp_conn *c = flow_conn_open();

	(void)state;
	flow_feed(c, "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n");
	assert_string_equal(flow_take(c),
			    "HTTP/1.1 501 Not Implemented\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC FLOW_NOSTORE
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 90\r\n"
			    "Connection: close\r\n\r\n"
			    "{\"error\":{\"code\":\"not_implemented\",\"message\":"
			    "\"transfer coding or method not implemented\"}}");
	assert_true(c->closed);
	flow_conn_gone(c);

	/* An unknown method on a well-framed request: 501, the conn stays. */
	c = flow_conn_open();
	flow_feed(c, "BREW /api/pot HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 501 Not Implemented\r\n"));
	assert_false(c->closed);
	flow_feed(c, "BREW /api/pot HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 501 Not Implemented\r\n"));
	assert_false(c->closed);
	/* ... but its body is never buffered. */
	assert_int_equal(flow_feed(c, "BREW /api/pot HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nab"),
			 strlen("BREW /api/pot HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nab"));
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 501 Not Implemented\r\n"));
	assert_true(c->closed);
	flow_conn_gone(c);

	/* A head that does not complete in header_timeout_s gets 408. */
	c = flow_conn_open();
	assert_int_equal(flow_feed(c, "GET /healthz HTTP/1.1\r\nHo"), 0);
	flow_advance((uint64_t)W.conf.header_timeout_s * SEC - MS);
	assert_false(c->closed);
	flow_advance(2 * MS);
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 408 Request Timeout\r\n"));
	assert_true(c->closed);
	flow_conn_gone(c);

	/* An idle keep-alive conn is closed after idle_timeout_s. */
	c = flow_conn_open();
	flow_feed(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
	flow_take(c);
	flow_advance((uint64_t)W.conf.idle_timeout_s * SEC + 2 * MS);
	assert_true(c->closed);
	assert_false(c->aborted);
	assert_string_equal(flow_take(c), "");
	flow_conn_gone(c);
}

/* Two bodies larger than one delivery on one conn, each admitted by
 * control, collected whole and given back once the request went out. */
static void test_large_body_collected(void **state)
{
	struct tp_conn *c = flow_conn_open();
	static char body[50000];
	char head[128];
	const struct sink_rec *rq;
	const struct chan_field *f;

	(void)state;
	W.conf.max_conns = 16;
	snprintf(head, sizeof(head),
		 "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n", sizeof(body));
	for (int round = 0; round < 2; round++) {
		size_t off = 0;

		memset(body, round ? 'c' : 'b', sizeof(body));
		/* Larger than APP_BODY_FREE: the head goes to control first and
		 * stays in the stash; nothing is buffered by the app. */
		assert_int_equal(flow_feed(c, head), 0);
		rq = flow_last_rec(CHAN_REC_REQUEST);
		assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_HTTP_ADMIT);
		assert_null(flow_rec_field(rq, sizeof(struct chan_request), CHAN_F_BODY));
		flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_BODY_LEN, "50000");
		assert_int_equal(W.st.body_bytes, 0);
		flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 100, CHAN_RESP_CONTINUE, 0,
			      NULL, NULL, 0, NULL, 0);
		assert_int_equal(c->resumes, 2 * round + 1);
		assert_string_equal(flow_take(c), "");
		while (off < sizeof(body)) {
			size_t n = sizeof(body) - off < 20000 ? sizeof(body) - off : 20000;

			flow_feed_n(c, body + off, n);
			off += n;
			if (off < sizeof(body))
				assert_true(W.st.body_bytes >= strlen(head) + sizeof(body));
		}
		rq = flow_last_rec(CHAN_REC_REQUEST);
		assert_non_null(rq);
		assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_HTTP);
		f = flow_rec_field(rq, sizeof(struct chan_request), CHAN_F_BODY);
		assert_non_null(f);
		assert_int_equal(f->len, sizeof(body));
		assert_memory_equal(f->data, body, sizeof(body));
		assert_int_equal(c->stash_len, 0);
		/* Given back while the request waits for its answer. */
		assert_int_equal(W.st.body_bytes, 0);
		const struct chan_request *req = flow_req_of(rq);
		flow_response(req->conn, req->req_id, 204, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, NULL, 0);
		assert_non_null(strstr(flow_take(c), "HTTP/1.1 204 No Content\r\n"));
	}
	assert_false(c->closed);
	flow_conn_gone(c);
}

/* CHAN_RESP_HTTP_STREAM: the head at the first part, each part a chunk as
 * it comes, the last part ends the response and keep-alive goes on; a /v1
 * client that leaves mid-stream is closed at once (control hears of it). */
static void test_streamed_response(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const struct sink_rec *rq;
	const struct chan_request *req;
	const struct fld p2[] = { { CHAN_F_BODY, "data: a\n\n" } };
	const struct fld p3[] = { { CHAN_F_BODY, "data: [DONE]\n\n" } };
	const struct fld h[] = { { CHAN_F_CONTENT_TYPE, "text/event-stream" } };

	(void)state;
	flow_feed(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	req = (const void *)(W.recs + rq->off);
	flow_response(req->conn, req->req_id, 200, CHAN_RESP_HTTP_STREAM, CHAN_RESP_MORE, NULL, NULL, 0, h, 1);
	assert_string_equal(flow_take(c), "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n"
					  "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
					  "X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n");
	flow_response(req->conn, req->req_id, 200, CHAN_RESP_HTTP_STREAM, CHAN_RESP_MORE, NULL, NULL, 0, p2, 1);
	assert_string_equal(flow_take(c), "9\r\ndata: a\n\n\r\n");
	flow_response(req->conn, req->req_id, 200, CHAN_RESP_HTTP_STREAM, 0, NULL, NULL, 0, p3, 1);
	assert_string_equal(flow_take(c), "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
	assert_false(c->closed);
	/* The next request on the same connection. */
	flow_feed(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(flow_take(c), "{\"status\":\"ok\"}"));

	/* A client that half-closes while its /v1 stream runs is closed. */
	flow_feed(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	req = (const void *)(W.recs + rq->off);
	flow_response(req->conn, req->req_id, 200, CHAN_RESP_HTTP_STREAM, CHAN_RESP_MORE, NULL, NULL, 0, h, 1);
	flow_take(c);
	app_ops.upcalls->on_eof(flow_app, c->ctx);
	assert_true(c->closed);
	flow_conn_gone(c);
}

/* The value of header `name` in a response head, as a static string. */
static const char *head_value(const char *resp, const char *name)
{
	static char v[256];
	char key[64];
	snprintf(key, sizeof(key), "\r\n%s: ", name);
	const char *p = strstr(resp, key);
	const char *end = p ? strstr(p + strlen(key), "\r\n") : NULL;
	if (!p || !end || (size_t)(end - p - strlen(key)) >= sizeof(v))
		return NULL;
	memcpy(v, p + strlen(key), (size_t)(end - p - strlen(key)));
	v[end - p - strlen(key)] = 0;
	return v;
}

/*
 * The web UI's files: the page with no-cache and its ETag, a hashed asset
 * immutable for a year, the encoding the client takes, 304 for a current
 * copy (no body, no length), HEAD without the body, 405 for other methods,
 * and the security headers on all of them.
 */
static void test_static_files(void **state)
{
	struct tp_conn *c = flow_conn_open();
	const struct app_asset *page = app_static_find("/", 1);
	const struct app_asset *js = NULL;
	char req[512], etag[128];
	const char *out;

	(void)state;
	for (uint32_t i = 0; i < app_nassets && !js; i++)
		if (strstr(app_assets[i].path, ".js") && app_assets[i].enc[APP_ENC_GZIP].data)
			js = &app_assets[i];
	assert_non_null(page);
	assert_non_null(js);
	flow_feed(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC "Cache-Control: no-cache\r\n"
				    "Content-Type: text/html; charset=utf-8\r\n"));
	snprintf(etag, sizeof(etag), "%s", head_value(out, "ETag"));
	assert_string_equal(etag, page->enc[APP_ENC_IDENTITY].etag);
	assert_string_equal(head_value(out, "Vary"), "Accept-Encoding");
	assert_null(head_value(out, "Content-Encoding"));
	assert_int_equal(atoi(head_value(out, "Content-Length")), page->enc[APP_ENC_IDENTITY].len);
	assert_non_null(strstr(out, "<!doctype html>"));
	/* The current copy: 304, the same validators, nothing else. */
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\", %s\r\n\r\n", etag);
	flow_feed(c, req);
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 304 Not Modified\r\n"));
	assert_string_equal(head_value(out, "ETag"), etag);
	assert_null(head_value(out, "Content-Length"));
	assert_null(head_value(out, "Content-Type"));
	assert_non_null(strstr(out, FLOW_SEC));
	assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\n");
	/* A hashed asset, gzip for a client that takes it. */
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, deflate\r\n\r\n",
		 js->path);
	flow_feed(c, req);
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
	assert_string_equal(head_value(out, "Cache-Control"), "public, max-age=31536000, immutable");
	assert_string_equal(head_value(out, "Content-Type"), "text/javascript; charset=utf-8");
	assert_string_equal(head_value(out, "Content-Encoding"), "gzip");
	assert_string_equal(head_value(out, "ETag"), js->enc[APP_ENC_GZIP].etag);
	assert_int_equal(atoi(head_value(out, "Content-Length")), js->enc[APP_ENC_GZIP].len);
	flow_tx_flush(c);
	/* HEAD: the same head, no body. */
	snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: a\r\n\r\n", js->path);
	flow_feed(c, req);
	out = flow_take(c);
	assert_int_equal(atoi(head_value(out, "Content-Length")), js->enc[APP_ENC_IDENTITY].len);
	assert_string_equal(strstr(out, "\r\n\r\n"), "\r\n\r\n");
	flow_feed(c, "POST /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
	out = flow_take(c);
	assert_non_null(strstr(out, "HTTP/1.1 405 Method Not Allowed\r\n"));
	assert_string_equal(head_value(out, "Allow"), "GET, HEAD");
	flow_feed(c, "GET /assets/missing.js HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(flow_take(c), "HTTP/1.1 404 Not Found\r\n"));
	assert_false(c->closed);
	assert_int_equal(W.nrec, 0); /* control was never asked */
	assert_int_equal(W.st.static_responses, 4);
	flow_conn_gone(c);
}

/* Slots are handed out as connections come (a worker configured for many
 * holds memory only for those it had), refused past max_conns, and a slot
 * given back serves the next connection. */
static void test_slots_on_demand(void **state)
{
	struct tp_conn *c[3], *extra;
	void *second;

	(void)state;
	W.conf.max_conns = 3;
	flow_restart();
	for (int i = 0; i < 3; i++)
		c[i] = flow_conn_open();
	assert_ptr_not_equal(c[0]->ctx, c[1]->ctx);
	assert_ptr_not_equal(c[1]->ctx, c[2]->ctx);
	extra = flow_conn_open_from(0x0100007f);
	assert_null(extra->ctx);
	assert_int_equal(W.st.conns_refused, 1);
	free(extra);
	second = c[1]->ctx;
	flow_conn_gone(c[1]);
	c[1] = flow_conn_open();
	assert_ptr_equal(c[1]->ctx, second);
	flow_feed(c[1], "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(flow_take(c[1]), "{\"status\":\"ok\"}"));
	for (int i = 0; i < 3; i++)
		flow_conn_gone(c[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_static_files, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_healthz_and_local_routes, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_forward_and_pipelining, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_multipart_response, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_control_unavailable, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_framing_errors_and_timeout, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_large_body_collected, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_streamed_response, flow_setup, flow_teardown),
		cmocka_unit_test_setup_teardown(test_slots_on_demand, flow_setup, flow_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
