/*
 * The app layer end to end inside one process: real HTTP parser, WebSocket
 * engine, channel record codec and timer wheel; test doubles for the worker's
 * services (fake clock, record sink, counters) and for the transport (send
 * queues in memory). Bytes on the wire are compared with docs/api.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/app_metrics.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "transport/transport.h"
#include "worker/timer_wheel.h"
#include "worker/worker.h"

/* Counts malloc calls while `count_mallocs` is set, to prove a path
 * allocates nothing. glibc's own entry point does the work; under
 * AddressSanitizer, which owns malloc, the count is not taken. */
#if defined(__SANITIZE_ADDRESS__)
#define FLOW_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FLOW_ASAN 1
#endif
#endif
static bool count_mallocs;
static unsigned nmallocs;
#ifndef FLOW_ASAN
extern void *__libc_malloc(size_t n);
void *malloc(size_t n)
{
	if (count_mallocs)
		nmallocs++;
	return __libc_malloc(n);
}
#endif

#define MS 1000000ull
#define SEC 1000000000ull
#define WID 3u

/* ---- worker double ----------------------------------------------------- */

struct sink_rec {
	uint16_t type;
	uint32_t off, len;
};

struct worker {
	uint64_t now;
	struct sluice_conf conf;
	struct dp_stats st;
	struct tp *tp;
	bool attached;
	uint32_t cp_epoch; /* control's epoch as the worker sees it */
	bool ring_full;
	bool limited;      /* the ring has only `room` bytes left */
	uint32_t room;
	uint32_t rec_max;  /* 0: 64 KiB */
	struct tw_wheel wheel;
	alignas(8) uint8_t recs[1 << 20];
	uint32_t rec_used;
	struct sink_rec rec[256];
	uint32_t nrec;
};

static struct worker W;

const uint32_t dp_delay_bounds_us[DP_DELAY_BUCKETS] = {
	10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000, 100000, 1000000,
};

void dp_stats_delay(uint64_t *hist, uint64_t *sum_ns, uint64_t delay_ns)
{
	uint32_t i = 0;

	while (i < DP_DELAY_BUCKETS && delay_ns > (uint64_t)dp_delay_bounds_us[i] * 1000u)
		i++;
	hist[i]++;
	*sum_ns += delay_ns;
}

void worker_timer_arm(struct worker *w, struct tw_timer *t, uint64_t deadline_ns)
{
	tw_arm(&w->wheel, t, deadline_ns);
}

void worker_timer_cancel(struct worker *w, struct tw_timer *t)
{
	tw_cancel(&w->wheel, t);
}

uint32_t worker_id(const struct worker *w) { (void)w; return WID; }
uint64_t worker_now(const struct worker *w) { return w->now; }
const struct sluice_conf *worker_conf(const struct worker *w) { return &w->conf; }
struct dp_stats *worker_stats(struct worker *w) { return &w->st; }
struct tp *worker_tp(struct worker *w) { return w->tp; }
bool worker_control_attached(const struct worker *w) { return w->attached; }
uint32_t worker_control_epoch(const struct worker *w) { return w->cp_epoch; }
uint32_t worker_epoch(const struct worker *w) { (void)w; return 5; }
uint32_t worker_rec_max(const struct worker *w) { return w->rec_max ? w->rec_max : 64 * 1024; }
uint32_t worker_count(void) { return 1; }
const struct dp_stats *worker_stats_of(uint32_t i) { return i == 0 ? &W.st : NULL; }

void *worker_rec_reserve(struct worker *w, uint16_t type, uint32_t len)
{
	if (w->ring_full || w->nrec == SLUICE_ARRAY_LEN(w->rec) ||
	    sizeof(w->recs) - w->rec_used < chan_align8(len) || len > worker_rec_max(w) ||
	    (w->limited && 8 + chan_align8(len) > w->room))
		return NULL;
	w->rec[w->nrec] = (struct sink_rec){ type, w->rec_used, len };
	return w->recs + w->rec_used;
}

void worker_rec_commit(struct worker *w, uint32_t len)
{
	w->rec[w->nrec].len = len;
	w->rec_used += (uint32_t)chan_align8(len);
	w->nrec++;
	if (w->limited)
		w->room -= 8 + (uint32_t)chan_align8(len);
}

/* ---- transport double --------------------------------------------------- */

struct tp_conn {
	void *ctx;
	char out[1 << 18];
	size_t out_len, taken, flushed;
	uint64_t extra_queued; /* pretend bytes stuck in the kernel */
	uint32_t cwnd, snd_wnd, unacked; /* what the stack reports of its windows */
	bool blocked, closed, aborted;
	int resumes;
	uint8_t stash[1 << 16]; /* what the app left unconsumed */
	size_t stash_len;
};

static uint8_t *f_reserve(struct tp_conn *c, size_t min, size_t *avail)
{
	if (c->closed || sizeof(c->out) - c->out_len < min)
		return NULL;
	*avail = sizeof(c->out) - c->out_len;
	return (uint8_t *)c->out + c->out_len;
}

static void f_commit(struct tp_conn *c, size_t n) { c->out_len += n; }
static void f_flush(struct tp *t) { (void)t; }
static void f_close(struct tp_conn *c, bool abort) { c->closed = true; c->aborted = abort; }
static void f_rx_resume(struct tp_conn *c) { c->resumes++; }
static void f_destroy(struct tp *t) { (void)t; }
static int f_poll(struct tp *t, int ms, int fd) { (void)t; (void)ms; (void)fd; return 0; }

static void f_info(struct tp_conn *c, struct tp_conn_info *out)
{
	memset(out, 0, sizeof(*out));
	out->tx_queued = c->out_len - c->flushed + c->extra_queued;
	out->blocked = c->blocked;
	out->cwnd = c->cwnd;
	out->snd_wnd = c->snd_wnd;
	out->unacked = c->unacked;
}

static const struct tp_ops fake_ops = {
	.name = "fake", .poll = f_poll, .tx_reserve = f_reserve, .tx_commit = f_commit,
	.flush = f_flush, .close = f_close, .info = f_info, .rx_resume = f_rx_resume,
	.destroy = f_destroy,
};
static struct tp fake_tp = { .ops = &fake_ops };

/* ---- harness ------------------------------------------------------------ */

static struct app *A;
static const struct tp_upcalls *UP;

static int setup(void **state)
{
	char err[128];

	(void)state;
	memset(&W, 0, sizeof(W));
	conf_defaults(&W.conf);
	W.conf.max_conns = 16;
	W.conf.max_bytes = 256;
	W.conf.max_delay_us = 2000;
	W.now = 1000 * SEC;
	W.tp = &fake_tp;
	W.attached = true;
	tw_wheel_init(&W.wheel, W.now);
	A = app_create(&W, err, sizeof(err));
	assert_non_null(A);
	UP = app_upcalls();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	app_destroy(A);
	return 0;
}

static struct tp_conn *conn_open(void)
{
	struct tp_conn *c = calloc(1, sizeof(*c));
	struct tp_peer peer = { .ipv4 = 0x0100007f, .port = 40000 };

	assert_non_null(c);
	c->ctx = UP->on_open(A, c, &peer);
	assert_non_null(c->ctx);
	return c;
}

/* Runs on_close as the transport would, after a close. */
static void conn_gone(struct tp_conn *c)
{
	UP->on_close(A, c->ctx);
	free(c);
}

/* Appends bytes to the conn's stash and offers the whole stash, as the
 * transport does; returns what the app consumed. */
static size_t feed_n(struct tp_conn *c, const void *p, size_t n)
{
	size_t used;

	memcpy(c->stash + c->stash_len, p, n);
	c->stash_len += n;
	used = UP->on_data(A, c->ctx, c->stash, c->stash_len);
	assert_true(used <= c->stash_len);
	memmove(c->stash, c->stash + used, c->stash_len - used);
	c->stash_len -= used;
	return used;
}

static size_t feed(struct tp_conn *c, const char *s)
{
	return feed_n(c, s, strlen(s));
}

/* New output since the last call, NUL-terminated in a static buffer. */
static const char *take(struct tp_conn *c)
{
	static char buf[1 << 18];
	size_t n = c->out_len - c->taken;

	memcpy(buf, c->out + c->taken, n);
	buf[n] = '\0';
	c->taken = c->out_len;
	return buf;
}

/* The transport's end-of-turn flush: everything queued goes out. */
static void tx_flush(struct tp_conn *c)
{
	c->flushed = c->out_len;
}

static void advance(uint64_t ns)
{
	W.now += ns;
	tw_run(&W.wheel, W.now);
}

static const struct sink_rec *last_rec(uint16_t type)
{
	for (uint32_t i = W.nrec; i-- > 0;)
		if (W.rec[i].type == type)
			return &W.rec[i];
	return NULL;
}

static const struct chan_field *rec_field(const struct sink_rec *r, size_t fixed, uint16_t tag)
{
	const uint8_t *p = W.recs + r->off + fixed;
	const uint8_t *end = W.recs + r->off + r->len;
	const struct chan_field *f;
	bool bad = false;

	while ((f = chan_field_next(&p, end, &bad)) != NULL)
		if (f->tag == tag)
			return f;
	assert_false(bad);
	return NULL;
}

static void assert_field(const struct sink_rec *r, size_t fixed, uint16_t tag, const char *want)
{
	const struct chan_field *f = rec_field(r, fixed, tag);

	assert_non_null(f);
	assert_int_equal(f->len, strlen(want));
	assert_memory_equal(f->data, want, f->len);
}

/* Builds control records in an aligned buffer and hands them to the app. */
static alignas(8) uint8_t rbuf[1 << 16];

static void rec_in(uint16_t type, uint32_t len)
{
	assert_true(chan_rec_valid(type, rbuf, len));
	app_on_record(A, type, rbuf, len);
}

static struct chan_conn handle_of(const struct sink_rec *req)
{
	const struct chan_request *rq = (const void *)(W.recs + req->off);

	return rq->conn;
}

struct fld {
	uint16_t tag;
	const char *s;
};

static void response(struct chan_conn h, uint32_t req_id, uint16_t status, uint8_t action,
		     uint8_t flags, const char *sid, const char *rmid, uint32_t rseq,
		     const struct fld *f, size_t nf)
{
	struct chan_response *r = (void *)rbuf;
	uint8_t *p = (uint8_t *)(r + 1);

	memset(rbuf, 0, sizeof(*r));
	r->conn = h;
	r->req_id = req_id;
	r->status = status;
	r->action = action;
	r->flags = flags;
	if (sid)
		chan_id_set(r->session_id, sid, strlen(sid));
	if (rmid)
		chan_id_set(r->resume_message_id, rmid, strlen(rmid));
	r->resume_seq = rseq;
	for (size_t i = 0; i < nf; i++)
		chan_field_put(&p, f[i].tag, f[i].s, (uint32_t)strlen(f[i].s));
	rec_in(CHAN_REC_RESPONSE, (uint32_t)(p - rbuf));
}

static struct chan_conn all_of(void)
{
	struct chan_conn h = { .worker = WID, .slot = CHAN_SLOT_ALL };

	return h;
}

static void tokens(struct chan_conn h, const char *sid, const char *mid, uint32_t first,
		   const char *const *texts, uint32_t n)
{
	struct chan_tokens *t = (void *)rbuf;
	size_t off = sizeof(*t);

	memset(t, 0, sizeof(*t));
	t->conn = h;
	chan_id_set(t->session_id, sid, strlen(sid));
	chan_id_set(t->message_id, mid, strlen(mid));
	t->first_seq = first;
	t->count = n;
	for (uint32_t i = 0; i < n; i++) {
		struct chan_token *k = (void *)(rbuf + off);
		size_t l = strlen(texts[i]);

		memset(k, 0, sizeof(*k));
		k->created_ns = W.now - 1000;
		k->len = (uint32_t)l;
		memcpy(k->text, texts[i], l);
		off = chan_align8(off + sizeof(*k) + l);
	}
	rec_in(CHAN_REC_TOKENS, (uint32_t)off);
}

static void status_rec(struct chan_conn h, const char *sid, const char *mid, const char *st)
{
	struct chan_status *s = (void *)rbuf;

	memset(s, 0, sizeof(*s));
	s->conn = h;
	chan_id_set(s->session_id, sid, strlen(sid));
	chan_id_set(s->message_id, mid, strlen(mid));
	snprintf(s->status, sizeof(s->status), "%s", st);
	rec_in(CHAN_REC_STATUS, sizeof(*s));
}

static void done_rec(struct chan_conn h, const char *sid, const char *mid, uint32_t st,
		     uint32_t last_seq)
{
	struct chan_done *d = (void *)rbuf;

	memset(d, 0, sizeof(*d));
	d->conn = h;
	chan_id_set(d->session_id, sid, strlen(sid));
	chan_id_set(d->message_id, mid, strlen(mid));
	d->status = st;
	d->last_seq = last_seq;
	rec_in(CHAN_REC_DONE, sizeof(*d));
}

/* Opens an SSE stream on session s_1, resuming after (rmid, rseq). */
static struct tp_conn *sse_open(const char *rmid, uint32_t rseq)
{
	struct tp_conn *c = conn_open();
	const struct sink_rec *rq;

	feed(c, "GET /api/chat/stream/s_1 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: m_1:2\r\n\r\n");
	rq = last_rec(CHAN_REC_REQUEST);
	assert_non_null(rq);
	assert_field(rq, sizeof(struct chan_request), CHAN_F_LAST_EVENT_ID, "m_1:2");
	response(handle_of(rq), ((const struct chan_request *)(W.recs + rq->off))->req_id, 200,
		 CHAN_RESP_SSE_SUBSCRIBE, 0, "s_1", rmid, rseq, NULL, 0);
	assert_string_equal(take(c), "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n"
				     "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
				     "X-Accel-Buffering: no\r\n\r\n:ok\n\n");
	tx_flush(c);
	return c;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_healthz_and_local_routes(void **state)
{
	struct tp_conn *c = conn_open();
	const char *req = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
			  "POST /readyz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
			  "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";

	(void)state;
	/* Three pipelined local requests, answered in order in one pass. */
	assert_int_equal(feed(c, req), strlen(req));
	assert_string_equal(take(c),
			    "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n"
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 15\r\n\r\n"
			    "{\"status\":\"ok\"}"
			    "HTTP/1.1 405 Method Not Allowed\r\nX-Sluice-Worker: 3\r\n"
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 67\r\n"
			    "Allow: GET, HEAD\r\n\r\n"
			    "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use GET or HEAD\"}}"
			    "HTTP/1.1 404 Not Found\r\nX-Sluice-Worker: 3\r\n"
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 55\r\n\r\n"
			    "{\"error\":{\"code\":\"not_found\",\"message\":\"no such path\"}}");
	assert_false(c->closed);
	/* HEAD keeps Content-Length, drops the body; HTTP/1.0 closes. */
	feed(c, "HEAD /readyz HTTP/1.0\r\n\r\n");
	assert_string_equal(take(c),
			    "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n"
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 14\r\n"
			    "Connection: close\r\n\r\n");
	assert_true(c->closed);
	assert_int_equal(W.st.http_responses[2], 2);
	assert_int_equal(W.st.http_responses[4], 2);
	conn_gone(c);
}

static void test_metrics_text(void **state)
{
	static char buf[1 << 16];
	size_t n;

	(void)state;
	W.st.tokens_in = 7;
	W.st.frames_out = 3;
	W.st.delay_hist[0] = 2;
	W.st.delay_hist[DP_DELAY_BUCKETS] = 1;
	W.st.http_responses[5] = 4;
	W.st.ws_active = 2;
	W.st.kicks = 5;
	n = app_metrics_render(buf, sizeof(buf), true, &fake_tp);
	assert_true(n > 0 && n < sizeof(buf));
	buf[n] = '\0';
	assert_non_null(strstr(buf, "# TYPE sluice_tokens_in_total counter\nsluice_tokens_in_total 7\n"));
	assert_non_null(strstr(buf, "sluice_frames_out_total 3\n"));
	assert_non_null(strstr(buf, "sluice_http_responses_total{class=\"5xx\"} 4\n"));
	assert_non_null(strstr(buf, "sluice_token_batch_delay_seconds_bucket{le=\"1e-05\"} 2\n"));
	/* Buckets are cumulative; +Inf equals the count. */
	assert_non_null(strstr(buf, "sluice_token_batch_delay_seconds_bucket{le=\"1\"} 2\n"));
	assert_non_null(strstr(buf, "sluice_token_batch_delay_seconds_bucket{le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(buf, "sluice_token_batch_delay_seconds_count 3\n"));
	assert_non_null(strstr(buf, "sluice_control_attached 1\n"));
	assert_non_null(strstr(buf, "# TYPE sluice_ws_active gauge\nsluice_ws_active 2\n"));
	assert_non_null(strstr(buf, "sluice_kicks_total 5\n"));
	assert_int_equal(app_metrics_render(buf, 100, true, &fake_tp), 0);
}

static void test_forward_and_pipelining(void **state)
{
	struct tp_conn *c = conn_open();
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
	assert_int_equal(feed(c, both), strlen(r1));
	assert_int_equal(feed(c, ""), 0);
	rq = last_rec(CHAN_REC_REQUEST);
	assert_non_null(rq);
	req = (const void *)(W.recs + rq->off);
	assert_int_equal(req->kind, CHAN_REQ_HTTP);
	assert_int_equal(req->method, CHAN_M_POST);
	assert_int_equal(req->conn.worker, WID);
	assert_int_equal(req->conn.gen >> 20, 5); /* seeded from the epoch */
	assert_field(rq, sizeof(*req), CHAN_F_PATH, "/api/chat/message");
	assert_field(rq, sizeof(*req), CHAN_F_QUERY, "x=1");
	assert_field(rq, sizeof(*req), CHAN_F_BODY, "{}");
	assert_field(rq, sizeof(*req), CHAN_F_AUTHORIZATION, "Bearer tok");
	assert_field(rq, sizeof(*req), CHAN_F_PEER, "127.0.0.1:40000");
	assert_null(rec_field(rq, sizeof(*req), CHAN_F_COOKIE));
	assert_string_equal(take(c), "");
	/* A response for another request id is stale. */
	response(req->conn, req->req_id + 1, 202, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, f, 2);
	assert_int_equal(W.st.stale_records, 1);
	response(req->conn, req->req_id, 202, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, f, 2);
	assert_string_equal(take(c),
			    "HTTP/1.1 202 Accepted\r\nX-Sluice-Worker: 3\r\n"
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 20\r\n"
			    "Set-Cookie: a=b; HttpOnly\r\n\r\n{\"message_id\":\"m_1\"}");
	assert_int_equal(c->resumes, 1);
	assert_int_equal(feed(c, ""), strlen(r2));
	assert_non_null(strstr(take(c), "{\"status\":\"ok\"}"));
	UP->on_close(A, c->ctx);
	/* A conn that talked to control is reported closed, and its handle goes stale. */
	rq = last_rec(CHAN_REC_CONN_CLOSED);
	assert_non_null(rq);
	response(((const struct chan_conn_closed *)(W.recs + rq->off))->conn, 1, 200,
		 CHAN_RESP_PLAIN, 0, NULL, NULL, 0, NULL, 0);
	assert_int_equal(W.st.stale_records, 2);
	free(c);
}

static void test_multipart_response(void **state)
{
	struct tp_conn *c = conn_open();
	const struct sink_rec *rq;
	const struct chan_request *req;
	const struct fld p1[] = { { CHAN_F_CONTENT_TYPE, "text/markdown" }, { CHAN_F_BODY, "# Ti" } };
	const struct fld p2[] = { { CHAN_F_BODY, "tle\n" } };

	(void)state;
	feed(c, "GET /api/chat/sessions/s_1/export HTTP/1.1\r\nHost: a\r\n\r\n");
	rq = last_rec(CHAN_REC_REQUEST);
	req = (const void *)(W.recs + rq->off);
	response(req->conn, req->req_id, 200, CHAN_RESP_PLAIN, CHAN_RESP_MORE, NULL, NULL, 0, p1, 2);
	assert_string_equal(take(c), "");
	response(req->conn, req->req_id, 200, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, p2, 1);
	assert_string_equal(take(c),
			    "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\nContent-Length: 8\r\n"
			    "Content-Type: text/markdown\r\n\r\n# Title\n");
	conn_gone(c);
}

static const struct chan_request *req_of(const struct sink_rec *r);

static void test_control_unavailable(void **state)
{
	struct tp_conn *c = conn_open();
	const char *want503 = "HTTP/1.1 503 Service Unavailable\r\nX-Sluice-Worker: 3\r\n"
			      "Content-Type: application/json; charset=utf-8\r\nContent-Length: 70\r\n"
			      "Retry-After: 1\r\n\r\n"
			      "{\"error\":{\"code\":\"control_unavailable\",\"message\":\"control went away\"}}";

	(void)state;
	W.attached = false;
	feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(take(c), "\"control_unavailable\""));
	W.attached = true;
	W.ring_full = true;
	feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_non_null(strstr(take(c), "503 Service Unavailable\r\n"));
	assert_int_equal(W.st.chan_full, 1);
	W.ring_full = false;
	/* A request waiting when control leaves gets 503. */
	feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_string_equal(take(c), "");
	W.attached = false;
	app_control_changed(A, false);
	assert_string_equal(take(c), want503);
	assert_false(c->closed);
	W.attached = true;
	/* A request stamped with the epoch of a control that has since been
	 * replaced (seen as a new epoch, no gap) may have been discarded by the
	 * new one: 503 too. One stamped with the current epoch keeps waiting. */
	W.cp_epoch = 7;
	feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_int_equal(req_of(last_rec(CHAN_REC_REQUEST))->cp_epoch, 7);
	assert_string_equal(take(c), "");
	app_control_changed(A, true);
	assert_string_equal(take(c), "");
	W.cp_epoch = 8;
	app_control_changed(A, true);
	assert_string_equal(take(c), want503);
	conn_gone(c);
}

static void test_framing_errors_and_timeout(void **state)
{
	struct tp_conn *c = conn_open();

	(void)state;
	feed(c, "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
	assert_string_equal(take(c),
			    "HTTP/1.1 411 Length Required\r\nX-Sluice-Worker: 3\r\n"
			    "Content-Type: application/json; charset=utf-8\r\nContent-Length: 110\r\n"
			    "Connection: close\r\n\r\n"
			    "{\"error\":{\"code\":\"length_required\",\"message\":"
			    "\"chunked request bodies are not supported; send Content-Length\"}}");
	assert_true(c->closed);
	conn_gone(c);

	/* A head that does not complete in header_timeout_s gets 408. */
	c = conn_open();
	assert_int_equal(feed(c, "GET /healthz HTTP/1.1\r\nHo"), 0);
	advance((uint64_t)W.conf.header_timeout_s * SEC - MS);
	assert_false(c->closed);
	advance(2 * MS);
	assert_non_null(strstr(take(c), "HTTP/1.1 408 Request Timeout\r\n"));
	assert_true(c->closed);
	conn_gone(c);

	/* An idle keep-alive conn is closed after idle_timeout_s. */
	c = conn_open();
	feed(c, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
	take(c);
	advance((uint64_t)W.conf.idle_timeout_s * SEC + 2 * MS);
	assert_true(c->closed);
	assert_false(c->aborted);
	assert_string_equal(take(c), "");
	conn_gone(c);
}

static void test_large_body_collected(void **state)
{
	struct tp_conn *c = conn_open();
	static char body[50000];
	char head[128];
	const struct sink_rec *rq;
	const struct chan_field *f;
	size_t off = 0;

	(void)state;
	W.conf.max_conns = 16;
	memset(body, 'b', sizeof(body));
	snprintf(head, sizeof(head),
		 "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n", sizeof(body));
	feed(c, head);
	while (off < sizeof(body)) {
		size_t n = sizeof(body) - off < 20000 ? sizeof(body) - off : 20000;

		feed_n(c, body + off, n);
		off += n;
	}
	rq = last_rec(CHAN_REC_REQUEST);
	assert_non_null(rq);
	f = rec_field(rq, sizeof(struct chan_request), CHAN_F_BODY);
	assert_non_null(f);
	assert_int_equal(f->len, sizeof(body));
	assert_memory_equal(f->data, body, sizeof(body));
	assert_int_equal(c->stash_len, 0);

	/* The conn's next long body reuses the buffer of the first. */
	const struct chan_request *req = (const void *)(W.recs + rq->off);
	response(req->conn, req->req_id, 204, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, NULL, 0);
	take(c);
	memset(body, 'c', sizeof(body));
	nmallocs = 0;
	count_mallocs = true;
	feed(c, head);
	feed_n(c, body, 20000);
	feed_n(c, body + 20000, sizeof(body) - 20000);
	count_mallocs = false;
	rq = last_rec(CHAN_REC_REQUEST);
	f = rec_field(rq, sizeof(struct chan_request), CHAN_F_BODY);
	assert_non_null(f);
	assert_int_equal(f->len, sizeof(body));
	assert_memory_equal(f->data, body, sizeof(body));
	assert_int_equal(nmallocs, 0);
	conn_gone(c);
}

static void test_sse_resume_and_light_load(void **state)
{
	struct tp_conn *c = sse_open("m_1", 2);
	const char *const t4[] = { "a", " b", " \"c\"", " d" };

	(void)state;
	status_rec(all_of(), "s_1", "m_1", "streaming");
	assert_string_equal(take(c), "id: m_1:2\nevent: status_update\n"
				     "data: {\"session_id\":\"s_1\",\"message_id\":\"m_1\",\"status\":\"streaming\"}\n\n");
	tx_flush(c);
	/* Tokens 1 and 2 were delivered before the resume: only 3 and 4 go. */
	tokens(all_of(), "s_1", "m_1", 1, t4, 4);
	assert_string_equal(take(c), ""); /* held until the end of the turn */
	app_end_of_turn(A, false);
	assert_string_equal(take(c), "id: m_1:4\nevent: token\n"
				     "data: {\"session_id\":\"s_1\",\"message_id\":\"m_1\",\"seq\":4,\"n\":2,"
				     "\"text\":\" \\\"c\\\" d\"}\n\n");
	assert_int_equal(W.st.tokens_in, 4);
	assert_int_equal(W.st.tokens_out, 2);
	assert_int_equal(W.st.frames_out, 1);
	/* Redelivery of the same tokens is dropped. */
	tokens(all_of(), "s_1", "m_1", 3, t4, 2);
	app_end_of_turn(A, false);
	assert_string_equal(take(c), "");
	done_rec(all_of(), "s_1", "m_1", CHAN_DONE_COMPLETE, 4);
	assert_string_equal(take(c), "id: m_1:d\nevent: done\n"
				     "data: {\"session_id\":\"s_1\",\"message_id\":\"m_1\",\"status\":\"complete\"}\n\n");
	UP->on_close(A, c->ctx);
	assert_non_null(last_rec(CHAN_REC_UNSUBSCRIBE));
	free(c);
}

static void test_busy_coalesces_until_max_delay(void **state)
{
	struct tp_conn *c = sse_open("", 0);
	const char *const one[] = { "x" };
	uint64_t delay_ns = (uint64_t)W.conf.max_delay_us * 1000u;

	(void)state;
	for (uint32_t s = 1; s <= 3; s++) {
		tokens(all_of(), "s_1", "m_9", s, one, 1);
		app_end_of_turn(A, true);
		advance(100000);
	}
	assert_string_equal(take(c), "");
	/* The oldest token's max_delay deadline flushes all three at once. */
	advance(delay_ns - 300000 + MS);
	assert_string_equal(take(c), "id: m_9:3\nevent: token\n"
				     "data: {\"session_id\":\"s_1\",\"message_id\":\"m_9\",\"seq\":3,\"n\":3,"
				     "\"text\":\"xxx\"}\n\n");
	assert_int_equal(W.st.frames_out, 1);
	assert_int_equal(W.st.tokens_out, 3);
	app_end_of_turn(A, false);
	/* Not busy, but bytes from an earlier turn still queued: hold. */
	tokens(all_of(), "s_1", "m_9", 4, one, 1);
	app_end_of_turn(A, false);
	assert_string_equal(take(c), "");
	tx_flush(c);
	tokens(all_of(), "s_1", "m_9", 5, one, 1);
	app_end_of_turn(A, false);
	assert_non_null(strstr(take(c), "\"seq\":5,\"n\":2,"));
	/* Not busy, nothing queued, but the window is used up (un-ACKed bytes
	 * reach the smaller of cwnd and the peer's window): hold. */
	tx_flush(c);
	c->cwnd = 14600;
	c->snd_wnd = 65535;
	c->unacked = 14600;
	tokens(all_of(), "s_1", "m_9", 6, one, 1);
	app_end_of_turn(A, false);
	assert_string_equal(take(c), "");
	c->unacked = 1460;
	tokens(all_of(), "s_1", "m_9", 7, one, 1);
	app_end_of_turn(A, false);
	assert_non_null(strstr(take(c), "\"seq\":7,\"n\":2,"));
	c->cwnd = c->snd_wnd = c->unacked = 0;
	/* A status event flushes held tokens first (ordering). */
	tx_flush(c);
	tokens(all_of(), "s_1", "m_9", 8, one, 1);
	app_end_of_turn(A, true);
	done_rec(all_of(), "s_1", "m_9", CHAN_DONE_CANCELLED, 8);
	const char *out = take(c);
	assert_true(strstr(out, "event: token") < strstr(out, "event: done"));
	assert_non_null(strstr(out, "\"status\":\"cancelled\""));
	conn_gone(c);
}

static void test_mode_off_one_frame_per_token(void **state)
{
	struct tp_conn *c;
	const char *const t3[] = { "a", "b", "c" };
	char err[64];

	(void)state;
	app_destroy(A);
	W.conf.batch_mode = CONF_BATCH_OFF;
	A = app_create(&W, err, sizeof(err));
	assert_non_null(A);
	c = sse_open("", 0);
	tokens(all_of(), "s_1", "m_2", 1, t3, 3);
	assert_int_equal(W.st.frames_out, 3);
	assert_non_null(strstr(take(c), "\"seq\":3,\"n\":1,\"text\":\"c\""));
	conn_gone(c);
	W.conf.batch_mode = CONF_BATCH_ADAPTIVE;
}

static void test_detach_interrupts_and_reattach_announces(void **state)
{
	struct tp_conn *c = sse_open("", 0);
	const char *const t2[] = { "a", "b" };
	const struct sink_rec *r;
	const struct chan_sub *s;

	(void)state;
	tokens(all_of(), "s_1", "m_3", 1, t2, 2);
	app_end_of_turn(A, false);
	take(c);
	W.attached = false;
	app_control_changed(A, false);
	assert_string_equal(take(c), "id: m_3:d\nevent: done\n"
				     "data: {\"session_id\":\"s_1\",\"message_id\":\"m_3\",\"status\":\"interrupted\"}\n\n");
	W.attached = true;
	app_control_changed(A, true);
	r = last_rec(CHAN_REC_SUBSCRIBE);
	assert_non_null(r);
	s = (const void *)(W.recs + r->off);
	assert_string_equal(s->session_id, "s_1");
	assert_string_equal(s->message_id, "m_3");
	assert_int_equal(s->seq, 2);
	/* The restarted control's own done for m_3 is not sent a second time. */
	done_rec(all_of(), "s_1", "m_3", CHAN_DONE_INTERRUPTED, 2);
	assert_string_equal(take(c), "");
	/* A control restart seen only as a new epoch also ends running streams. */
	tx_flush(c);
	tokens(all_of(), "s_1", "m_4", 1, t2, 1);
	app_end_of_turn(A, false);
	assert_non_null(strstr(take(c), "\"message_id\":\"m_4\",\"seq\":1,"));
	W.nrec = 0;
	app_control_changed(A, true);
	assert_string_equal(take(c), "id: m_4:d\nevent: done\n"
				     "data: {\"session_id\":\"s_1\",\"message_id\":\"m_4\",\"status\":\"interrupted\"}\n\n");
	assert_non_null(last_rec(CHAN_REC_SUBSCRIBE));
	conn_gone(c);
}

static void test_slow_consumer(void **state)
{
	struct tp_conn *c = sse_open("", 0);
	const char *const one[] = { "x" };

	(void)state;
	c->extra_queued = W.conf.max_pending_bytes;
	tokens(all_of(), "s_1", "m_4", 1, one, 1);
	assert_int_equal(W.st.slow_consumer_closes, 1);
	assert_string_equal(take(c), "event: error\ndata: {\"error\":{\"code\":\"slow_consumer\","
				     "\"message\":\"pending data passed max_pending_bytes; reconnect with Last-Event-ID\"}}\n\n");
	assert_true(c->closed);
	conn_gone(c);
	assert_int_equal(W.st.pending_bytes, 0);
}

static void test_oversized_token_framed_alone(void **state)
{
	struct tp_conn *c = sse_open("", 0);
	static char big[400];
	const char *const t[] = { "a", big, "b" };
	const char *out;

	(void)state;
	memset(big, 'Q', sizeof(big) - 1);
	tokens(all_of(), "s_1", "m_7", 1, t, 3);
	app_end_of_turn(A, false);
	out = take(c);
	/* "a" is flushed before the big token, which goes alone; "b" follows. */
	assert_non_null(strstr(out, "\"seq\":1,\"n\":1,\"text\":\"a\"}"));
	assert_non_null(strstr(out, "\"seq\":2,\"n\":1,\"text\":\"QQQQ"));
	assert_non_null(strstr(out, "\"seq\":3,\"n\":1,\"text\":\"b\"}"));
	assert_int_equal(W.st.frames_out, 3);
	assert_int_equal(W.st.tokens_out, 3);
	conn_gone(c);
}

/* A token framed alone (too big for a batch buffer) is escaped into the
 * worker's own buffer: no allocation per token, even on this path. One whose
 * escaped text could not be framed closes the conn instead of being cut. */
static void test_token_alone_allocates_nothing(void **state)
{
	struct tp_conn *c = sse_open("", 0);
	static char big[2000];
	static char huge[40000];
	const char *const a[] = { "a" };
	const char *const t[] = { big };
	const char *const h[] = { huge };
	const char *out;

	(void)state;
	/* The batch pool takes its buffer once, on the first token. */
	tokens(all_of(), "s_1", "m_8", 1, a, 1);
	app_end_of_turn(A, false);
	take(c);
	memset(big, '"', sizeof(big) - 1); /* escapes to twice its size */
	nmallocs = 0;
	count_mallocs = true;
	tokens(all_of(), "s_1", "m_8", 2, t, 1);
	count_mallocs = false;
	assert_int_equal(nmallocs, 0);
	out = take(c);
	assert_non_null(strstr(out, "\"seq\":2,\"n\":1,\"text\":\"\\\"\\\""));
	assert_int_equal(W.st.tokens_out, 2);
	assert_false(c->closed);

	/* 40000 '"' escape to 80000 bytes, more than max_bytes + 64 KiB. */
	memset(huge, '"', sizeof(huge) - 1);
	tokens(all_of(), "s_1", "m_8", 3, h, 1);
	assert_true(c->closed);
	assert_int_equal(W.st.tokens_out, 2);
	conn_gone(c);
}

/* A masked client text frame. */
static size_t ws_frame(uint8_t *out, const char *text)
{
	static const uint8_t mask[4] = { 1, 2, 3, 4 };
	size_t n = strlen(text);

	out[0] = 0x81;
	out[1] = (uint8_t)(0x80 | n);
	memcpy(out + 2, mask, 4);
	for (size_t i = 0; i < n; i++)
		out[6 + i] = (uint8_t)text[i] ^ mask[i % 4];
	return 6 + n;
}

/* The payload of the next server text frame in s (short frames only). */
static const char *ws_text(const char **s)
{
	static char buf[512];
	const uint8_t *p = (const uint8_t *)*s;
	size_t n = p[1];

	assert_int_equal(p[0], 0x81);
	assert_true(n < 126);
	memcpy(buf, p + 2, n);
	buf[n] = '\0';
	*s += 2 + n;
	return buf;
}

#define UPGRADE_HEAD "GET /ws/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n" \
		     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" \
		     "Sec-WebSocket-Version: 13\r\n"
#define HEAD101 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" \
		"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" \
		"X-Sluice-Worker: 3\r\n"
#define CONNECTED "{\"type\":\"connected\",\"worker\":3}"

static const struct chan_request *req_of(const struct sink_rec *r)
{
	return (const void *)(W.recs + r->off);
}

/* Checks that the last REQUEST is a WS_OPEN for /ws/chat and returns it. */
static const struct sink_rec *last_ws_open(void)
{
	const struct sink_rec *rq = last_rec(CHAN_REC_REQUEST);

	assert_non_null(rq);
	assert_int_equal(req_of(rq)->kind, CHAN_REQ_WS_OPEN);
	assert_int_equal(req_of(rq)->method, CHAN_M_GET);
	assert_field(rq, sizeof(struct chan_request), CHAN_F_PATH, "/ws/chat");
	assert_field(rq, sizeof(struct chan_request), CHAN_F_PEER, "127.0.0.1:40000");
	return rq;
}

/* A /ws/chat upgrade with `extra` header lines: nothing is answered before
 * control has decided; returns the WS_OPEN request. */
static const struct sink_rec *ws_upgrade(struct tp_conn *c, const char *extra)
{
	char req[1024];

	snprintf(req, sizeof(req), "%s%s\r\n", UPGRADE_HEAD, extra);
	assert_int_equal(feed(c, req), strlen(req));
	assert_string_equal(take(c), "");
	return last_ws_open();
}

/* Control's answer to a WS_OPEN: accept, with an optional header line. */
static void ws_accept(const struct sink_rec *rq, const char *hdr)
{
	const struct fld f[] = { { CHAN_F_HEADER, hdr } };

	response(req_of(rq)->conn, req_of(rq)->req_id, 101, CHAN_RESP_WS_ACCEPT, 0, NULL, NULL, 0,
		 f, hdr ? 1 : 0);
}

/* Control's plain refusal with the error JSON of docs/api.md. */
static void refuse(const struct sink_rec *rq, uint16_t status, const char *code)
{
	char body[128];

	snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"no\"}}", code);
	const struct fld f[] = { { CHAN_F_BODY, body } };
	response(req_of(rq)->conn, req_of(rq)->req_id, status, CHAN_RESP_PLAIN, 0, NULL, NULL, 0,
		 f, 1);
}

/* A /ws/chat conn control has let in. */
static struct tp_conn *ws_open_conn(void)
{
	struct tp_conn *c = conn_open();
	const char *out;

	ws_accept(ws_upgrade(c, "Authorization: Bearer t0k\r\n"), NULL);
	out = take(c);
	assert_memory_equal(out, HEAD101 "\r\n", strlen(HEAD101) + 2);
	out += strlen(HEAD101) + 2;
	assert_string_equal(ws_text(&out), CONNECTED);
	tx_flush(c);
	return c;
}

/* Subscribes a WebSocket conn to sid through control's WS_SUBSCRIBE. */
static void ws_subscribe(struct tp_conn *c, const char *sid)
{
	uint8_t fr[128];
	char msg[96];
	const struct sink_rec *rq;
	const struct fld f[] = { { CHAN_F_BODY, "{\"type\":\"response\"}" } };

	snprintf(msg, sizeof(msg), "{\"type\":\"subscribe\",\"session_id\":\"%s\"}", sid);
	feed_n(c, fr, ws_frame(fr, msg));
	rq = last_rec(CHAN_REC_REQUEST);
	assert_int_equal(req_of(rq)->kind, CHAN_REQ_WS);
	response(req_of(rq)->conn, req_of(rq)->req_id, 200, CHAN_RESP_WS_SUBSCRIBE, 0, sid, NULL, 0,
		 f, 1);
	take(c);
	tx_flush(c);
}

/* The next server frame in out is a close with code and reason. */
static void assert_ws_close(const char *out, uint16_t code, const char *reason)
{
	const uint8_t *p = (const uint8_t *)out;

	assert_int_equal(p[0], 0x88);
	assert_int_equal(p[1], 2 + strlen(reason));
	assert_int_equal((p[2] << 8) | p[3], code);
	assert_memory_equal(p + 4, reason, strlen(reason));
}

static void test_websocket(void **state)
{
	struct tp_conn *c = conn_open();
	uint8_t fr[128];
	const char *out;
	const struct sink_rec *rq;
	const struct chan_request *req;
	const char *const one[] = { "hi" };

	(void)state;
	ws_accept(ws_upgrade(c, ""), NULL);
	const char *head101 = HEAD101 "\r\n";
	out = take(c);
	assert_memory_equal(out, head101, strlen(head101));
	out += strlen(head101);
	assert_string_equal(ws_text(&out), "{\"type\":\"connected\",\"worker\":3}");
	feed_n(c, fr, ws_frame(fr, "{\"type\":\"ping\",\"id\":7}"));
	out = take(c);
	assert_string_equal(ws_text(&out), "{\"type\":\"pong\",\"id\":7}");
	feed_n(c, fr, ws_frame(fr, "{nope"));
	out = take(c);
	assert_non_null(strstr(ws_text(&out), "\"code\":\"invalid_json\""));
	feed_n(c, fr, ws_frame(fr, "{\"type\":\"subscribe\",\"session_id\":\"s_1\"}"));
	rq = last_rec(CHAN_REC_REQUEST);
	req = (const void *)(W.recs + rq->off);
	assert_int_equal(req->kind, CHAN_REQ_WS);
	assert_field(rq, sizeof(*req), CHAN_F_BODY, "{\"type\":\"subscribe\",\"session_id\":\"s_1\"}");
	const struct fld f[] = { { CHAN_F_BODY, "{\"type\":\"response\",\"request\":\"subscribe\"}" } };
	response(req->conn, req->req_id, 200, CHAN_RESP_WS_SUBSCRIBE, 0, "s_1", NULL, 0, f, 1);
	out = take(c);
	assert_string_equal(ws_text(&out), "{\"type\":\"response\",\"request\":\"subscribe\"}");
	tx_flush(c);
	tokens(all_of(), "s_1", "m_5", 1, one, 1);
	app_end_of_turn(A, false);
	out = take(c);
	assert_string_equal(ws_text(&out), "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":\"m_5\","
					   "\"seq\":1,\"n\":1,\"text\":\"hi\"}");
	/* A binary message closes with 1003. */
	fr[0] = 0x82;
	fr[1] = 0x80;
	memset(fr + 2, 0, 4);
	feed_n(c, fr, 6);
	out = take(c);
	assert_int_equal((uint8_t)out[0], 0x88);
	assert_int_equal(((uint8_t)out[2] << 8) | (uint8_t)out[3], 1003);
	conn_gone(c);
}

/* Input that queues output with nothing from control behind it (here pongs
 * on /ws/echo) still obeys max_pending_bytes: a client that sends and never
 * reads is closed 1008 instead of growing the send queue. */
static void test_ws_input_bounded_by_pending(void **state)
{
	static const uint8_t ping[6] = { 0x89, 0x80, 0, 0, 0, 0 };
	char err[128];
	struct tp_conn *c;
	const char *out;

	(void)state;
	app_destroy(A);
	W.conf.ws_echo = true;
	A = app_create(&W, err, sizeof(err));
	assert_non_null(A);
	c = conn_open();
	feed(c, "GET /ws/echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	assert_string_equal(take(c), HEAD101 "\r\n");
	feed_n(c, ping, sizeof(ping));
	assert_memory_equal(take(c), "\x8a\x00", 2);
	assert_false(c->closed);
	c->extra_queued = W.conf.max_pending_bytes;
	feed_n(c, ping, sizeof(ping));
	out = take(c);
	assert_memory_equal(out, "\x8a\x00", 2);
	assert_ws_close(out + 2, 1008, "slow consumer");
	assert_true(c->closed);
	assert_int_equal(W.st.slow_consumer_closes, 1);
	conn_gone(c);
	assert_int_equal(W.st.pending_bytes, 0);
}

static void test_bad_upgrades(void **state)
{
	struct tp_conn *c = conn_open();

	(void)state;
	feed(c, "GET /ws/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n");
	const char *out = take(c);
	assert_non_null(strstr(out, "HTTP/1.1 426 Upgrade Required\r\n"));
	assert_non_null(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n"));
	feed(c, "GET /ws/chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: short==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	assert_non_null(strstr(take(c), "HTTP/1.1 400 Bad Request\r\n"));
	feed(c, "POST /ws/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
	out = take(c);
	assert_non_null(strstr(out, "HTTP/1.1 405 Method Not Allowed\r\n"));
	assert_non_null(strstr(out, "\r\nAllow: GET\r\n"));
	assert_false(c->closed);
	conn_gone(c);
}

static void test_ws_open_accept_with_protocol(void **state)
{
	struct tp_conn *c = conn_open();
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
	n = strlen(up) + ws_frame((uint8_t *)both + strlen(up), "{\"type\":\"ping\"}");
	assert_int_equal(feed_n(c, both, n), strlen(up));
	assert_string_equal(take(c), "");
	rq = last_ws_open();
	assert_field(rq, sizeof(struct chan_request), CHAN_F_AUTHORIZATION, "Bearer abc");
	assert_field(rq, sizeof(struct chan_request), CHAN_F_COOKIE, "sluice_session=xyz");
	assert_field(rq, sizeof(struct chan_request), CHAN_F_ORIGIN, "https://chat.example");
	assert_field(rq, sizeof(struct chan_request), CHAN_F_WS_PROTOCOL, "sluice.v1, sluice.auth.tok");
	assert_int_equal(W.st.ws_upgrades, 0);
	/* The idle timer does not run while control decides. */
	advance((uint64_t)W.conf.idle_timeout_s * SEC + SEC);
	assert_false(c->closed);
	ws_accept(rq, "Sec-WebSocket-Protocol: sluice.v1");
	out = take(c);
	assert_memory_equal(out, HEAD101 "Sec-WebSocket-Protocol: sluice.v1\r\n\r\n",
			    strlen(HEAD101) + 37);
	out += strlen(HEAD101) + 37;
	assert_string_equal(ws_text(&out), CONNECTED);
	assert_int_equal(W.st.ws_upgrades, 1);
	assert_int_equal(W.st.ws_active, 1);
	assert_int_equal(W.st.http_responses[1], 1);
	/* The stashed ping is offered again and answered locally. */
	assert_int_equal(c->resumes, 1);
	assert_int_equal(feed(c, ""), n - strlen(up));
	out = take(c);
	assert_string_equal(ws_text(&out), "{\"type\":\"pong\"}");
	/* A second accept for the same request is stale now. */
	ws_accept(rq, NULL);
	assert_string_equal(take(c), "");
	conn_gone(c);
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
		struct tp_conn *c = conn_open();
		const struct sink_rec *rq = ws_upgrade(c, "Origin: https://evil.example\r\n");
		char want[256];
		const char *out;

		refuse(rq, cases[i].status, cases[i].code);
		out = take(c);
		assert_memory_equal(out, cases[i].line, strlen(cases[i].line));
		assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
		snprintf(want, sizeof(want), "\r\n\r\n{\"error\":{\"code\":\"%s\",\"message\":\"no\"}}",
			 cases[i].code);
		assert_non_null(strstr(out, want));
		assert_null(strstr(out, "101"));
		assert_true(c->closed);
		assert_false(c->aborted);
		assert_int_equal(W.st.ws_auth_refused, i + 1);
		conn_gone(c);
	}
	assert_int_equal(W.st.ws_upgrades, 0);
	assert_int_equal(W.st.ws_active, 0);
}

static void test_ws_open_without_control(void **state)
{
	struct tp_conn *c = conn_open();
	char req[512];
	const char *out;

	(void)state;
	snprintf(req, sizeof(req), "%s\r\n", UPGRADE_HEAD);
	W.attached = false;
	feed(c, req);
	out = take(c);
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "\r\nRetry-After: 1\r\n"));
	assert_non_null(strstr(out, "\"code\":\"control_unavailable\""));
	assert_null(last_rec(CHAN_REC_REQUEST));
	W.attached = true;
	W.ring_full = true;
	feed(c, req);
	out = take(c);
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "\"code\":\"overloaded\""));
	assert_int_equal(W.st.chan_full, 1);
	W.ring_full = false;
	/* Control leaves while it decides: 503, and a late accept is stale. */
	feed(c, req);
	assert_string_equal(take(c), "");
	const struct sink_rec *rq = last_ws_open();
	W.attached = false;
	app_control_changed(A, false);
	assert_non_null(strstr(take(c), "\"message\":\"control went away\""));
	W.attached = true;
	ws_accept(rq, NULL);
	assert_string_equal(take(c), "");
	assert_int_equal(W.st.ws_upgrades, 0);
	conn_gone(c);
	/* /ws/echo is not authorised by control. */
	app_destroy(A);
	W.conf.ws_echo = true;
	A = app_create(&W, req, sizeof(req));
	assert_non_null(A);
	W.nrec = 0;
	W.attached = false;
	c = conn_open();
	feed(c, "GET /ws/echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
	assert_string_equal(take(c), HEAD101 "\r\n");
	assert_null(last_rec(CHAN_REC_REQUEST));
	conn_gone(c);
	W.attached = true;
}

static void kick_rec(struct chan_conn h, const char *sid, uint16_t code, const char *rcode,
		     const char *reason)
{
	struct chan_kick *k = (void *)rbuf;

	memset(k, 0, sizeof(*k));
	k->conn = h;
	chan_id_set(k->session_id, sid, strlen(sid));
	k->code = code;
	snprintf(k->reason_code, sizeof(k->reason_code), "%s", rcode);
	snprintf(k->reason, sizeof(k->reason), "%s", reason);
	rec_in(CHAN_REC_KICK, sizeof(*k));
}

/* The conn handle control knows a WebSocket conn by (from its WS_OPEN). */
static struct chan_conn ws_handle(void)
{
	const struct sink_rec *rq = last_rec(CHAN_REC_REQUEST);

	return req_of(rq)->conn;
}

static void test_kick_one_conn(void **state)
{
	struct tp_conn *ws = ws_open_conn();
	struct chan_conn h = ws_handle();
	struct chan_conn old = h;
	const char *const one[] = { "x" };
	uint8_t fr[64];

	(void)state;
	ws_subscribe(ws, "s_1");
	W.nrec = 0;
	/* A handle of an earlier generation is stale. */
	old.gen--;
	kick_rec(old, "", 1008, "unauthenticated", "session expired");
	assert_int_equal(W.st.stale_records, 1);
	assert_string_equal(take(ws), "");
	kick_rec(h, "", 1008, "unauthenticated", "session expired");
	assert_ws_close(take(ws), 1008, "session expired");
	assert_int_equal(W.st.kicks, 1);
	assert_non_null(last_rec(CHAN_REC_UNSUBSCRIBE));
	/* Nothing more reaches the client, and what it sends is not forwarded. */
	tokens(all_of(), "s_1", "m_1", 1, one, 1);
	app_end_of_turn(A, false);
	assert_string_equal(take(ws), "");
	feed_n(ws, fr, ws_frame(fr, "{\"type\":\"get_state\"}"));
	assert_null(last_rec(CHAN_REC_REQUEST));
	/* A client that never answers the close is dropped after 5 s. */
	advance(5 * SEC - MS);
	assert_false(ws->closed);
	advance(2 * MS);
	assert_true(ws->closed);
	assert_false(ws->aborted);
	conn_gone(ws);

	/* A client that answers the close is closed at once. */
	ws = ws_open_conn();
	kick_rec(ws_handle(), "", 4001, "session_killed", "killed by an operator");
	assert_ws_close(take(ws), 4001, "killed by an operator");
	fr[0] = 0x88;
	fr[1] = 0x82;
	memset(fr + 2, 0, 4);
	fr[6] = 0x03;
	fr[7] = 0xe8;
	feed_n(ws, fr, 8);
	assert_true(ws->closed);
	conn_gone(ws);

	/* A code that must not go on the wire becomes 1008; a plain HTTP conn just closes. */
	ws = ws_open_conn();
	kick_rec(ws_handle(), "", 1005, "unauthenticated", "x");
	assert_ws_close(take(ws), 1008, "x");
	conn_gone(ws);
	struct tp_conn *c = conn_open();
	feed(c, "GET /api/models HTTP/1.1\r\nHost: a\r\n\r\n");
	kick_rec(handle_of(last_rec(CHAN_REC_REQUEST)), "", 1008, "unauthenticated", "bye");
	assert_string_equal(take(c), "");
	assert_true(c->closed);
	assert_false(c->aborted);
	conn_gone(c);
	assert_int_equal(W.st.kicks, 4);
}

static void test_kick_session(void **state)
{
	struct tp_conn *s1 = sse_open("", 0);
	struct tp_conn *s2 = sse_open("", 0);
	struct tp_conn *ws = ws_open_conn();
	struct tp_conn *other = ws_open_conn();
	const char *const one[] = { "y" };
	const char *want = "event: error\ndata: {\"error\":{\"code\":\"unauthenticated\","
			   "\"message\":\"logged out\"}}\n\n";

	(void)state;
	ws_subscribe(ws, "s_1");
	ws_subscribe(other, "s_2");
	/* A held token goes out before the error event. */
	tokens(all_of(), "s_1", "m_1", 1, one, 1);
	kick_rec(all_of(), "s_1", 1008, "unauthenticated", "logged out");
	const char *out = take(s1);
	assert_non_null(strstr(out, "event: token\n"));
	assert_non_null(strstr(out, want));
	assert_true(strstr(out, "event: token\n") < strstr(out, want));
	assert_true(s1->closed);
	assert_false(s1->aborted);
	out = take(s2);
	assert_non_null(strstr(out, want));
	assert_true(s2->closed);
	out = take(ws);
	assert_string_equal(ws_text(&out), "{\"type\":\"token\",\"session_id\":\"s_1\",\"message_id\":"
					   "\"m_1\",\"seq\":1,\"n\":1,\"text\":\"y\"}");
	assert_ws_close(out, 1008, "logged out");
	assert_false(ws->closed);
	assert_string_equal(take(other), "");
	assert_false(other->closed);
	assert_int_equal(W.st.kicks, 3);
	/* The session's other subscribers are gone; s_2 still streams. */
	tokens(all_of(), "s_2", "m_2", 1, one, 1);
	app_end_of_turn(A, false);
	out = take(other);
	assert_non_null(strstr(ws_text(&out), "\"session_id\":\"s_2\""));
	conn_gone(s1);
	conn_gone(s2);
	conn_gone(ws);
	conn_gone(other);
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
	struct tp_conn *s1 = sse_open("", 0);
	struct tp_conn *ws = ws_open_conn();
	struct tp_conn *idle = conn_open();
	const struct chan_stats *st;

	(void)state;
	W.nrec = 0;
	W.st.tokens_out = 11;
	W.st.chan_full = 2;
	W.st.loop_turns = 99;
	advance(SEC - 2 * MS);
	assert_null(stats_at(0));
	advance(3 * MS);
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
	conn_gone(idle);
	advance(SEC);
	st = stats_at(1);
	assert_non_null(st);
	assert_int_equal(st->conns_active, 2);
	assert_int_equal(st->uptime_ms, 2001);
	/* A loop that ran late sends one record, not a burst. */
	advance(5 * SEC);
	assert_non_null(stats_at(2));
	assert_null(stats_at(3));
	advance(SEC - 2 * MS);
	assert_null(stats_at(3));
	/* Nothing while control is away. */
	W.attached = false;
	advance(3 * SEC);
	assert_null(stats_at(3));
	W.attached = true;
	conn_gone(s1);
	conn_gone(ws);
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

static void admin_rec(uint32_t req_id)
{
	struct chan_admin *q = (void *)rbuf;

	q->op = CHAN_ADMIN_LIST_CONNS;
	q->req_id = req_id;
	rec_in(CHAN_REC_ADMIN, sizeof(*q));
}

static void test_list_conns_paging(void **state)
{
	struct tp_conn *c[7];
	const struct chan_conns *pg[8];
	uint32_t seen = 0, sse = 0, ws = 0;
	uint32_t page = (uint32_t)(sizeof(struct chan_conns) + 3 * sizeof(struct chan_conn_info));

	(void)state;
	c[0] = sse_open("", 0);
	c[1] = ws_open_conn();
	for (int i = 2; i < 7; i++)
		c[i] = conn_open();
	advance(1500 * MS);
	W.rec_max = page;
	admin_rec(41);
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
	admin_rec(42);
	assert_int_equal(conns_pages(42, pg, 8), 2);
	assert_int_equal(pg[0]->count, 3);
	assert_int_equal(pg[0]->flags, 0);
	assert_int_equal(pg[1]->count, 1);
	assert_int_equal(pg[1]->flags, CHAN_CONNS_LAST);
	/* Room for one page only: that page becomes the last. */
	W.nrec = 0;
	W.room = 8 + page + 8;
	admin_rec(43);
	assert_int_equal(conns_pages(43, pg, 8), 1);
	assert_int_equal(pg[0]->count, 3);
	assert_int_equal(pg[0]->flags, CHAN_CONNS_LAST);
	/* No room at all: nothing, counted. */
	W.nrec = 0;
	W.room = 0;
	uint64_t full = W.st.chan_full;
	admin_rec(44);
	assert_int_equal(conns_pages(44, pg, 8), 0);
	assert_int_equal(W.st.chan_full, full + 1);
	W.limited = false;
	for (int i = 0; i < 7; i++)
		conn_gone(c[i]);
	/* An empty worker answers with one empty last page. */
	W.nrec = 0;
	admin_rec(45);
	assert_int_equal(conns_pages(45, pg, 8), 1);
	assert_int_equal(pg[0]->count, 0);
	assert_int_equal(pg[0]->flags, CHAN_CONNS_LAST);
}

static void test_ws_reauth_after_control_restart(void **state)
{
	struct tp_conn *ws = conn_open();
	const struct sink_rec *rq, *open_rq = NULL, *sub = NULL;
	const char *const two[] = { "a", "b" };
	uint8_t fr[128];
	const char *out;
	uint32_t req_id;

	(void)state;
	ws_accept(ws_upgrade(ws, "Cookie: sluice_session=c00k1e\r\nOrigin: https://ok.example\r\n"
				 "Sec-WebSocket-Protocol: sluice.auth.tok\r\n"), NULL);
	take(ws);
	tx_flush(ws);
	ws_subscribe(ws, "s_1");
	tokens(all_of(), "s_1", "m_1", 1, two, 2);
	app_end_of_turn(A, false);
	take(ws);
	tx_flush(ws);
	/* Control restarted (a new epoch seen as an attach): the running answer
	 * ends interrupted, the conn is authorised again with the upgrade's
	 * headers, and only then is its subscription re-announced. */
	W.nrec = 0;
	app_control_changed(A, true);
	out = take(ws);
	assert_string_equal(ws_text(&out), "{\"type\":\"done\",\"session_id\":\"s_1\",\"message_id\":"
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
	rq = last_ws_open();
	assert_ptr_equal(rq, open_rq);
	assert_field(rq, sizeof(struct chan_request), CHAN_F_COOKIE, "sluice_session=c00k1e");
	assert_field(rq, sizeof(struct chan_request), CHAN_F_ORIGIN, "https://ok.example");
	assert_field(rq, sizeof(struct chan_request), CHAN_F_WS_PROTOCOL, "sluice.auth.tok");
	assert_null(rec_field(rq, sizeof(struct chan_request), CHAN_F_AUTHORIZATION));
	/* Accepted: nothing visible, and new messages go to control as before. */
	ws_accept(rq, "Sec-WebSocket-Protocol: sluice.v1");
	assert_string_equal(take(ws), "");
	assert_false(ws->closed);
	feed_n(ws, fr, ws_frame(fr, "{\"type\":\"send\",\"session_id\":\"s_1\",\"content\":\"hi\"}"));
	rq = last_rec(CHAN_REC_REQUEST);
	assert_int_equal(req_of(rq)->kind, CHAN_REQ_WS);
	req_id = req_of(rq)->req_id;
	const struct fld ok[] = { { CHAN_F_BODY, "{\"type\":\"response\",\"request\":\"send\"}" } };
	response(req_of(rq)->conn, req_id, 401, CHAN_RESP_PLAIN, 0, NULL, NULL, 0, ok, 1);
	out = take(ws);
	/* An ordinary answer is a text message, even with an error status. */
	assert_string_equal(ws_text(&out), "{\"type\":\"response\",\"request\":\"send\"}");
	tx_flush(ws);
	/* Another restart; this time the login has gone meanwhile: 1008. */
	W.nrec = 0;
	app_control_changed(A, true);
	rq = last_ws_open();
	assert_true(req_of(rq)->req_id > req_id);
	refuse(rq, 401, "unauthenticated");
	assert_ws_close(take(ws), 1008, "unauthenticated");
	assert_int_equal(W.st.ws_auth_refused, 1);
	assert_non_null(last_rec(CHAN_REC_UNSUBSCRIBE));
	conn_gone(ws);

	/* A disallowed Origin after the restart closes 1008 with that reason. */
	ws = ws_open_conn();
	W.nrec = 0;
	app_control_changed(A, true);
	refuse(last_ws_open(), 403, "origin_not_allowed");
	assert_ws_close(take(ws), 1008, "origin_not_allowed");
	conn_gone(ws);
	/* A busy control (503) leaves the conn open. */
	ws = ws_open_conn();
	W.nrec = 0;
	app_control_changed(A, true);
	refuse(last_ws_open(), 503, "overloaded");
	assert_string_equal(take(ws), "");
	assert_false(ws->closed);
	conn_gone(ws);
	assert_int_equal(W.st.ws_auth_refused, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_healthz_and_local_routes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forward_and_pipelining, setup, teardown),
		cmocka_unit_test_setup_teardown(test_multipart_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_control_unavailable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_framing_errors_and_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_body_collected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sse_resume_and_light_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_coalesces_until_max_delay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode_off_one_frame_per_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detach_interrupts_and_reattach_announces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_consumer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ws_input_bounded_by_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_token_framed_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_alone_allocates_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_websocket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_upgrades, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ws_open_accept_with_protocol, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ws_open_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ws_open_without_control, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kick_one_conn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kick_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stats_every_second, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_conns_paging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ws_reauth_after_control_restart, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
