/* The test worker host and in-memory transport (see flow_harness.h). */
#include "flow_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Counts malloc calls while counting is on. glibc's own entry point does the
 * work; under AddressSanitizer, which owns malloc, nothing is counted. */
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

void flow_mallocs_start(void)
{
	nmallocs = 0;
	count_mallocs = true;
}

unsigned flow_mallocs_stop(void)
{
	count_mallocs = false;
	return nmallocs;
}

void flow_assert_no_mallocs(unsigned (*scenario)(void))
{
#ifdef FLOW_ASAN
	(void)scenario;
	skip();
#else
	assert_int_equal(scenario(), 0);
#endif
}

/* ---- the worker host -------------------------------------------------------- */

struct flow_worker W;
void *flow_app;

/* The ring: refused when the test says it is full, or when `room` is used up. */
static void *w_rec_reserve(struct host *h, uint16_t type, uint32_t len)
{
	(void)h;
	if (W.ring_full || W.nrec == SLUICE_ARRAY_LEN(W.rec) ||
	    sizeof(W.recs) - W.rec_used < chan_align8(len) || len > W.h.rec_max ||
	    (W.limited && 8 + chan_align8(len) > W.room))
		return NULL;
	W.rec[W.nrec] = (struct sink_rec){ type, W.rec_used, len };
	return W.recs + W.rec_used;
}

static void w_rec_commit(struct host *h, uint32_t len)
{
	(void)h;
	W.rec[W.nrec].len = len;
	W.rec_used += (uint32_t)chan_align8(len);
	W.nrec++;
	if (W.limited)
		W.room -= 8 + (uint32_t)chan_align8(len);
}

static uint32_t w_control_epoch(const struct host *h)
{
	(void)h;
	return W.cp_epoch;
}

/* A worker of its own: the only peer. */
static const struct host *w_peer(const struct host *h, uint32_t i)
{
	return i == 0 ? h : NULL;
}

/* One worker: serving exactly while control is attached. */
static bool w_serving(struct host *h)
{
	return h->attached;
}

/* ---- the in-memory transport ------------------------------------------------- */

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

/* Not const: a test may make it refuse conns the way the native stack does. */
struct tp_ops flow_tp_ops = {
	.name = "flow", .poll = f_poll, .tx_reserve = f_reserve, .tx_commit = f_commit,
	.flush = f_flush, .close = f_close, .info = f_info, .rx_resume = f_rx_resume,
	.destroy = f_destroy,
};
static struct tp flow_tp = { .ops = &flow_tp_ops };

/* ---- the app's life ------------------------------------------------------------ */

/* As the worker does it: the transport is made after the app, so it is not
 * there while the app is created. */
void flow_restart(void)
{
	char err[128];

	if (flow_app)
		app_ops.destroy(flow_app);
	W.h.tp = NULL;
	flow_app = app_ops.create(&W.h, err, sizeof(err));
	if (!flow_app)
		fail_msg("app create: %s", err);
	W.h.tp = &flow_tp;
}

int flow_setup(void **state)
{
	(void)state;
	memset(&W, 0, sizeof(W));
	conf_defaults(&W.conf);
	flow_tp_ops.refuse_by_reset = false;
	W.conf.max_conns = 16;
	W.conf.max_bytes = 256;
	W.conf.max_delay_us = 2000;
	W.h = (struct host){
		.id = WID,
		.epoch = FLOW_EPOCH,
		.rec_max = 64 * 1024,
		.conf = &W.conf,
		.wheel = &W.wheel,
		.stats = &W.hst,
		.app_stats = &W.st,
		.now = 1000 * SEC,
		.attached = true,
		.rec_reserve = w_rec_reserve,
		.rec_commit = w_rec_commit,
		.control_epoch = w_control_epoch,
		.peer = w_peer,
		.serving = w_serving,
	};
	tw_wheel_init(&W.wheel, W.h.now);
	flow_app = NULL;
	flow_restart();
	return 0;
}

int flow_teardown(void **state)
{
	(void)state;
	app_ops.destroy(flow_app);
	flow_app = NULL;
	return 0;
}

void flow_end_of_turn(bool busy)
{
	app_ops.end_of_turn(flow_app, busy);
}

void flow_control_changed(bool attached)
{
	app_ops.control_changed(flow_app, attached);
}

void flow_conf_changed(void)
{
	app_ops.conf_changed(flow_app);
}

/* ---- the client side and control's records ----------------------------------- */

alignas(8) uint8_t flow_rbuf[1 << 16];

struct tp_conn *flow_conn_open_from(uint32_t ipv4)
{
	struct tp_conn *c = calloc(1, sizeof(*c));
	struct tp_peer peer = { .ipv4 = ipv4, .port = 40000 };

	assert_non_null(c);
	c->ctx = app_ops.upcalls->on_open(flow_app, c, &peer);
	return c;
}

struct tp_conn *flow_conn_open(void)
{
	struct tp_conn *c = flow_conn_open_from(0x0100007f);

	assert_non_null(c->ctx);
	return c;
}

void flow_conn_gone(struct tp_conn *c)
{
	app_ops.upcalls->on_close(flow_app, c->ctx);
	free(c);
}

size_t flow_feed_n(struct tp_conn *c, const void *p, size_t n)
{
	size_t used;

	memcpy(c->stash + c->stash_len, p, n);
	c->stash_len += n;
	used = app_ops.upcalls->on_data(flow_app, c->ctx, c->stash, c->stash_len);
	assert_true(used <= c->stash_len);
	memmove(c->stash, c->stash + used, c->stash_len - used);
	c->stash_len -= used;
	return used;
}

size_t flow_feed(struct tp_conn *c, const char *s)
{
	return flow_feed_n(c, s, strlen(s));
}

const char *flow_take(struct tp_conn *c)
{
	static char buf[1 << 18];
	size_t n = c->out_len - c->taken;

	memcpy(buf, c->out + c->taken, n);
	buf[n] = '\0';
	c->taken = c->out_len;
	return buf;
}

void flow_tx_flush(struct tp_conn *c)
{
	c->flushed = c->out_len;
}

void flow_advance(uint64_t ns)
{
	W.h.now += ns;
	tw_run(&W.wheel, W.h.now);
}

const struct sink_rec *flow_last_rec(uint16_t type)
{
	for (uint32_t i = W.nrec; i-- > 0;)
		if (W.rec[i].type == type)
			return &W.rec[i];
	return NULL;
}

const struct chan_request *flow_req_of(const struct sink_rec *r)
{
	return (const void *)(W.recs + r->off);
}

struct chan_conn flow_handle_of(const struct sink_rec *req)
{
	return flow_req_of(req)->conn;
}

const struct chan_field *flow_rec_field(const struct sink_rec *r, size_t fixed, uint16_t tag)
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

void flow_assert_field(const struct sink_rec *r, size_t fixed, uint16_t tag, const char *want)
{
	const struct chan_field *f = flow_rec_field(r, fixed, tag);

	assert_non_null(f);
	assert_int_equal(f->len, strlen(want));
	assert_memory_equal(f->data, want, f->len);
}

void flow_rec_in(uint16_t type, uint32_t len)
{
	assert_true(chan_rec_valid(type, flow_rbuf, len));
	app_ops.on_record(flow_app, type, flow_rbuf, len);
}

void flow_response(struct chan_conn h, uint32_t req_id, uint16_t status, uint8_t action,
		   uint8_t flags, const char *sid, const char *rmid, uint32_t rseq,
		   const struct fld *f, size_t nf)
{
	struct chan_response *r = (void *)flow_rbuf;
	uint8_t *p = (uint8_t *)(r + 1);

	memset(flow_rbuf, 0, sizeof(*r));
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
	flow_rec_in(CHAN_REC_RESPONSE, (uint32_t)(p - flow_rbuf));
}

struct chan_conn flow_all_of(void)
{
	struct chan_conn h = { .worker = WID, .slot = CHAN_SLOT_ALL };

	return h;
}

/* TOKENS, STATUS and DONE start alike: the record of `size` bytes in
 * flow_rbuf, zeroed, with its conn handle, session and message ids set. */
static void *stream_rec(size_t size, struct chan_conn h, const char *sid, const char *mid)
{
	struct {
		struct chan_conn conn;
		char session_id[CHAN_ID_LEN];
		char message_id[CHAN_ID_LEN];
	} *head = (void *)flow_rbuf;

	memset(flow_rbuf, 0, size);
	head->conn = h;
	chan_id_set(head->session_id, sid, strlen(sid));
	chan_id_set(head->message_id, mid, strlen(mid));
	return flow_rbuf;
}

void flow_tokens(struct chan_conn h, const char *sid, const char *mid, uint32_t first,
		 const char *const *texts, uint32_t n)
{
	struct chan_tokens *t = stream_rec(sizeof(*t), h, sid, mid);
	size_t off = sizeof(*t);

	t->first_seq = first;
	t->count = n;
	for (uint32_t i = 0; i < n; i++) {
		struct chan_token *k = (void *)(flow_rbuf + off);
		size_t l = strlen(texts[i]);

		memset(k, 0, sizeof(*k));
		k->created_ns = W.h.now - 1000;
		k->len = (uint32_t)l;
		memcpy(k->text, texts[i], l);
		off = chan_align8(off + sizeof(*k) + l);
	}
	flow_rec_in(CHAN_REC_TOKENS, (uint32_t)off);
}

void flow_status_rec(struct chan_conn h, const char *sid, const char *mid, const char *st)
{
	struct chan_status *s = stream_rec(sizeof(*s), h, sid, mid);

	snprintf(s->status, sizeof(s->status), "%s", st);
	flow_rec_in(CHAN_REC_STATUS, sizeof(*s));
}

void flow_done_rec(struct chan_conn h, const char *sid, const char *mid, uint32_t st,
		   uint32_t last_seq)
{
	struct chan_done *d = stream_rec(sizeof(*d), h, sid, mid);

	d->status = st;
	d->last_seq = last_seq;
	flow_rec_in(CHAN_REC_DONE, sizeof(*d));
}

struct tp_conn *flow_sse_open(const char *rmid, uint32_t rseq)
{
	struct tp_conn *c = flow_conn_open();
	const struct sink_rec *rq;

	flow_feed(c, "GET /api/chat/stream/s_1 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: m_1:2\r\n\r\n");
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_non_null(rq);
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_LAST_EVENT_ID, "m_1:2");
	flow_response(flow_handle_of(rq), flow_req_of(rq)->req_id, 200, CHAN_RESP_SSE_SUBSCRIBE, 0, "s_1", rmid, rseq, NULL, 0);
	assert_string_equal(flow_take(c), "HTTP/1.1 200 OK\r\nX-Sluice-Worker: 3\r\n" FLOW_SEC
				          "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
				          "X-Accel-Buffering: no\r\n\r\n:ok\n\n");
	flow_tx_flush(c);
	return c;
}

size_t flow_ws_frame(uint8_t *out, const char *text)
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

const char *flow_ws_text(const char **s)
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

const struct sink_rec *flow_last_ws_open(void)
{
	const struct sink_rec *rq = flow_last_rec(CHAN_REC_REQUEST);

	assert_non_null(rq);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_WS_OPEN);
	assert_int_equal(flow_req_of(rq)->method, CHAN_M_GET);
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_PATH, "/ws/chat");
	flow_assert_field(rq, sizeof(struct chan_request), CHAN_F_PEER, "127.0.0.1:40000");
	return rq;
}

const struct sink_rec *flow_ws_upgrade(struct tp_conn *c, const char *extra)
{
	char req[1024];

	snprintf(req, sizeof(req), "%s%s\r\n", UPGRADE_HEAD, extra);
	assert_int_equal(flow_feed(c, req), strlen(req));
	assert_string_equal(flow_take(c), "");
	return flow_last_ws_open();
}

void flow_ws_accept(const struct sink_rec *rq, const char *hdr)
{
	const struct fld f[] = { { CHAN_F_HEADER, hdr } };

	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 101, CHAN_RESP_WS_ACCEPT, 0, NULL, NULL, 0,
		      f, hdr ? 1 : 0);
}

void flow_refuse(const struct sink_rec *rq, uint16_t status, const char *code)
{
	char body[128];

	snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"no\"}}", code);
	const struct fld f[] = { { CHAN_F_BODY, body } };
	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, status, CHAN_RESP_PLAIN, 0, NULL, NULL, 0,
		      f, 1);
}

struct tp_conn *flow_ws_open_conn(void)
{
	struct tp_conn *c = flow_conn_open();
	const char *out;

	flow_ws_accept(flow_ws_upgrade(c, "Authorization: Bearer t0k\r\n"), NULL);
	out = flow_take(c);
	assert_memory_equal(out, HEAD101 "\r\n", strlen(HEAD101) + 2);
	out += strlen(HEAD101) + 2;
	assert_string_equal(flow_ws_text(&out), CONNECTED);
	flow_tx_flush(c);
	return c;
}

void flow_ws_subscribe(struct tp_conn *c, const char *sid)
{
	uint8_t fr[128];
	char msg[96];
	const struct sink_rec *rq;
	const struct fld f[] = { { CHAN_F_BODY, "{\"type\":\"response\"}" } };

	snprintf(msg, sizeof(msg), "{\"type\":\"subscribe\",\"session_id\":\"%s\"}", sid);
	flow_feed_n(c, fr, flow_ws_frame(fr, msg));
	rq = flow_last_rec(CHAN_REC_REQUEST);
	assert_int_equal(flow_req_of(rq)->kind, CHAN_REQ_WS);
	flow_response(flow_req_of(rq)->conn, flow_req_of(rq)->req_id, 200, CHAN_RESP_WS_SUBSCRIBE, 0, sid, NULL, 0,
		      f, 1);
	flow_take(c);
	flow_tx_flush(c);
}

void flow_assert_ws_close(const char *out, uint16_t code, const char *reason)
{
	const uint8_t *p = (const uint8_t *)out;

	assert_int_equal(p[0], 0x88);
	assert_int_equal(p[1], 2 + strlen(reason));
	assert_int_equal((p[2] << 8) | p[3], code);
	assert_memory_equal(p + 4, reason, strlen(reason));
}
