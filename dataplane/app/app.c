/*
 * The app instance of a worker: the connection table, the transport upcalls,
 * dispatch of control's records by connection handle, the end-of-turn and
 * control-attach hooks, and app_ops, the table the worker runs them by.
 * Protocol work lives in app_http.c, app_ws.c and app_stream.c.
 */
#include "app/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_int.h"
#include "app/app_metrics.h"
#include "sluice/conf.h"
#include "sluice/log.h"

static void app_conn_timer_cb(void *arg, struct tw_timer *t)
{
	struct conn *c = arg;

	(void)t;
	if (c->mode == CONN_SSE)
		app_stream_keepalive(c);
	else if (c->mode == CONN_HTTP)
		app_http_timer_fired(c);
	else
		app_conn_close(c, false); /* a WebSocket close the client never answered */
}

static void app_destroy(void *app);

/* The batching keys a reload may change (max_bytes sizes buffers: it
 * needs a restart). */
static void app_take_policy(struct app *a)
{
	a->pol.off = a->conf->batch_mode == CONF_BATCH_OFF;
	a->pol.max_delay_ns = (uint64_t)a->conf->max_delay_us * 1000u;
}

/* A reload replaced host.conf: timeouts and keep-alive periods are read
 * from a->conf when next armed; the batching policy from the next token. */
static void app_conf_changed(void *app)
{
	struct app *a = app;
	a->conf = a->h->conf;
	app_take_policy(a);
}

static void *app_create(struct host *h, char *err, size_t errlen)
{
	const struct sluice_conf *conf = h->conf;
	struct app *a = calloc(1, sizeof(*a));

	if (!a) {
		snprintf(err, errlen, "app: out of memory");
		return NULL;
	}
	a->h = h;
	a->st = app_stats_of(h);
	a->conf = conf;
	a->wid = h->id;
	a->max_conns = conf->max_conns;
	app_take_policy(a);
	a->pol.max_bytes = conf->max_bytes;
	/* Over TLS a coalesced frame should fit one record, framing included. */
	if (conf->tls && a->pol.max_bytes > APP_TLS_FRAME_TEXT)
		a->pol.max_bytes = APP_TLS_FRAME_TEXT;
	if (a->max_conns == 0 || conf->max_bytes == 0) {
		snprintf(err, errlen, "app: max_conns and max_bytes must be > 0");
		goto fail;
	}
	a->conns = calloc(a->max_conns, sizeof(*a->conns));
	a->subs = app_subs_create(a->max_conns);
	a->scratch_cap = (size_t)conf->max_bytes + APP_SCRATCH_EXTRA;
	a->scratch = malloc(a->scratch_cap);
	a->esc_cap = a->scratch_cap;
	a->esc = malloc(a->esc_cap);
	a->pending = calloc(a->max_conns, sizeof(*a->pending));
	a->peers = app_peers_create(a->max_conns);
	if (conf->ws_deflate) {
		a->wsd = ws_deflate_create((int)conf->ws_deflate_level, 8, conf->ws_deflate_min);
		if (!a->wsd) {
			snprintf(err, errlen, "app: no memory for permessage-deflate");
			goto fail;
		}
	}
	if (!a->conns || !a->subs || !a->scratch || !a->esc || !a->pending || !a->peers ||
	    batch_pool_init(&a->pool, a->pol.max_bytes, a->max_conns) != 0) {
		snprintf(err, errlen, "app: cannot allocate %u connections", a->max_conns);
		goto fail;
	}
	/* Generations start from the attach epoch so records addressed to
	 * connections of an earlier dataplane never match a live one. */
	a->gen0 = h->epoch << 20;
	a->free_head = APP_NO_SLOT;
	a->used_slots = 0;
	tw_init(&a->batch_timer, app_stream_batch_timer, a);
	a->start_ns = host_now(h);
	app_ctl_stats_start(a);
	return a;
fail:
	app_destroy(a);
	return NULL;
}

static void app_destroy(void *app)
{
	struct app *a = app;

	if (!a)
		return;
	app_ctl_stats_stop(a);
	if (a->batch_timer.armed)
		tw_cancel(a->h->wheel, &a->batch_timer);
	if (a->conns) {
		for (uint32_t i = 0; i < a->used_slots; i++) {
			struct conn *c = &a->conns[i];

			batch_clear(&c->batch, &a->pool);
			free(c->ws_auth);
			app_resp_reset(c);
			if (c->ws_open)
				ws_session_free(&c->ws);
			else
				free(c->req_buf);
		}
	}
	batch_pool_destroy(&a->pool);
	app_subs_destroy(a->subs);
	app_peers_destroy(a->peers);
	ws_deflate_destroy(a->wsd);
	free(a->scratch);
	free(a->bk_rec);
	free(a->esc);
	free(a->pending);
	free(a->conns);
	free(a);
}

void app_conn_fill_handle(const struct conn *c, struct chan_conn *h)
{
	memset(h, 0, sizeof(*h));
	h->worker = (uint16_t)c->app->wid;
	h->slot = c->slot;
	h->gen = c->gen;
}

size_t app_conn_peer_str(const struct conn *c, char out[APP_CONN_PEER_STR_MAX])
{
	const uint8_t *ip = (const uint8_t *)&c->peer.ipv4;
	int n = snprintf(out, APP_CONN_PEER_STR_MAX, "%u.%u.%u.%u:%u", ip[0], ip[1], ip[2], ip[3],
			 c->peer.port);

	return n > 0 ? (size_t)n : 0;
}

struct conn *app_conn_lookup(struct app *a, const struct chan_conn *h)
{
	struct conn *c;

	if (h->worker != a->wid || h->slot >= a->used_slots)
		return NULL;
	c = &a->conns[h->slot];
	if (!c->tc || c->gen != h->gen || c->closing)
		return NULL;
	return c;
}

/* Bytes the worker holds for its clients beyond its fixed tables: request
 * bodies and what waits to be sent (batcher and transport queues). */
static uint64_t app_mem_used(const struct app *a)
{
	return a->body_bytes + DP_STAT_GET(&a->st->pending_bytes);
}

/*
 * A connection the overload manager turns away. A transport that refuses
 * at the TCP level (the native stack) gets NULL and resets it; on the
 * kernel transport the client is told why (503 or 429 with Retry-After)
 * and the conn closes after that answer.
 */
static void *app_refuse(struct app *a, struct conn *c, int status, const char *code,
			const char *message)
{
	if (a->h->tp->ops->refuse_by_reset) {
		c->tc = NULL;
		c->next_free = a->free_head;
		a->free_head = c->slot;
		return NULL;
	}
	DP_STAT_ADD(a->st, conns_accepted, 1);
	c->keep_alive = false;
	app_http_send_error(c, status, code, message, true);
	return c;
}

/* A free slot: the last one given back, else one never used (set up
 * now: its page is touched for the first time); NULL when all are open. */
static struct conn *app_slot_take(struct app *a)
{
	struct conn *c;

	if (a->free_head != APP_NO_SLOT) {
		c = &a->conns[a->free_head];
		a->free_head = c->next_free;
		return c;
	}
	if (a->used_slots == a->max_conns)
		return NULL;
	c = &a->conns[a->used_slots];
	c->app = a;
	c->slot = a->used_slots++;
	c->gen = a->gen0;
	tw_init(&c->timer, app_conn_timer_cb, c);
	c->pend_idx = APP_NO_SLOT;
	batch_init(&c->batch);
	return c;
}

static void *app_on_open(void *app, struct tp_conn *tc, const struct tp_peer *peer)
{
	struct app *a = app;
	struct conn *c = a->draining ? NULL : app_slot_take(a);

	if (!c) {
		DP_STAT_ADD(a->st, conns_refused, 1);
		return NULL;
	}
	c->tc = tc;
	c->peer = *peer;
	c->peer_counted = false;
	c->mode = CONN_HTTP;
	c->hstate = HS_HEAD;
	c->keep_alive = true;
	c->head_req = c->requested = c->eof = c->subscribed = false;
	c->msg_running = c->done_sent = c->ws_open = c->closing = false;
	c->ws_upgrading = c->ws_reauth = c->ws_admin = c->timing = false;
	c->admitting = c->admitted = c->chunked = false;
	memset(&c->pmd, 0, sizeof(c->pmd));
	c->body_max = APP_MAX_BODY;
	c->open_ns = host_now(a->h);
	c->bytes_out = 0;
	c->req_id = 0;
	c->parse_last = 0;
	c->req_len = c->req_need = c->req_head_len = 0;
	c->req_buf = NULL;
	c->req_cap = 0;
	c->pend_acct = 0;
	c->turn_no = 0;
	c->turn_bytes = 0;
	c->pend_idx = APP_NO_SLOT;
	c->batch.last_arrival_ns = 0;
	c->sid[0] = c->last_mid[0] = c->prov_mid[0] = '\0';
	c->last_seq = 0;
	/* Existing streams keep flowing past the watermark; only new conns
	 * are turned away. */
	if (app_mem_used(a) >= (uint64_t)a->conf->worker_mem_mb << 20) {
		DP_STAT_ADD(a->st, conns_refused_mem, 1);
		return app_refuse(a, c, 503, "overloaded", "the worker is overloaded; retry later");
	}
	if (!app_peers_add(a->peers, peer->ipv4, a->conf->conns_per_ip)) {
		DP_STAT_ADD(a->st, conns_refused_ip, 1);
		return app_refuse(a, c, 429, "too_many_connections",
				  "too many connections from this address");
	}
	c->peer_counted = true;
	c->resp_stream = c->v1_req = false;
	DP_STAT_ADD(a->st, conns_accepted, 1);
	/* An idle connection that never sends a byte is closed like an idle
	 * keep-alive one. */
	tw_arm(a->h->wheel, &c->timer,
	       host_now(a->h) + (uint64_t)a->conf->idle_timeout_s * 1000000000ull);
	return c;
}

static size_t app_on_data(void *app, void *ctx, const uint8_t *data, size_t len)
{
	struct conn *c = ctx;

	(void)app;
	if (unlikely(c->closing))
		return len;
	if (c->mode == CONN_WS)
		return app_ws_on_data(c, data, len);
	if (c->mode == CONN_SSE)
		return len; /* an event stream takes no further input */
	return app_http_on_data(c, data, len);
}

static void app_on_eof(void *app, void *ctx)
{
	struct conn *c = ctx;

	(void)app;
	c->eof = true;
	/* A request still waiting for control is answered first; the close
	 * follows its response (app_http.c). A /v1 client that leaves abandons
	 * its request: the close tells control, which stops the backend. */
	if (c->mode == CONN_HTTP && c->hstate == HS_WAIT && !c->v1_req && !c->resp_stream)
		return;
	app_conn_close(c, false);
}

static void app_on_drained(void *app, void *ctx)
{
	(void)app;
	app_conn_account(ctx);
}

static void app_on_close(void *app, void *ctx)
{
	struct app *a = app;
	struct conn *c = ctx;
	struct chan_conn_closed *cc;

	tw_cancel(a->h->wheel, &c->timer);
	if (c->subscribed)
		app_stream_unsubscribe(c);
	batch_clear(&c->batch, &a->pool);
	app_stream_pending_remove(c);
	if (c->pend_acct) {
		DP_STAT_SUB(a->st, pending_bytes, c->pend_acct);
		c->pend_acct = 0;
	}
	if (c->requested) {
		cc = a->h->rec_reserve(a->h, CHAN_REC_CONN_CLOSED, sizeof(*cc));
		if (cc) {
			app_conn_fill_handle(c, &cc->conn);
			a->h->rec_commit(a->h, sizeof(*cc));
		} else {
			host_count_ring_full(a->h);
			LOG_WARN("worker %u: channel full, CONN_CLOSED for slot %u lost",
				 a->wid, c->slot);
		}
	}
	if (c->mode == CONN_SSE)
		DP_STAT_SUB(a->st, sse_active, 1);
	else if (c->mode == CONN_WS)
		DP_STAT_SUB(a->st, ws_active, 1);
	c->mode = CONN_HTTP;
	if (c->ws_open) {
		/* The engine holds the union: no request state to give back. */
		ws_session_free(&c->ws);
		c->ws_open = false;
	} else if (c->req_buf) {
		/* A body cut short may be part of a login's password. */
		explicit_bzero(c->req_buf, c->req_len);
		free(c->req_buf);
		a->body_bytes -= c->req_cap;
		DP_STAT_SUB(a->st, body_bytes, c->req_cap);
	}
	app_ws_auth_free(c);
	c->ws_upgrading = c->ws_reauth = false;
	c->req_buf = NULL;
	c->req_cap = 0;
	c->req_len = 0;
	if (c->peer_counted)
		app_peers_del(a->peers, c->peer.ipv4);
	c->peer_counted = false;
	app_resp_reset(c);
	c->tc = NULL;
	c->gen = (c->gen & ~0xfffffu) | ((c->gen + 1) & 0xfffffu);
	c->next_free = a->free_head;
	a->free_head = c->slot;
	DP_STAT_ADD(a->st, conns_closed, 1);
}

static const struct tp_upcalls upcalls = {
	.on_open = app_on_open,
	.on_data = app_on_data,
	.on_eof = app_on_eof,
	.on_drained = app_on_drained,
	.on_close = app_on_close,
};


void app_conn_close(struct conn *c, bool abort)
{
	if (c->closing || !c->tc)
		return;
	c->closing = true;
	c->hstate = HS_CLOSING;
	tw_cancel(c->app->h->wheel, &c->timer);
	tp_close(c->app->h->tp, c->tc, abort);
}

bool app_conn_send_hinted(struct conn *c, const void *data, size_t len, struct tp_tx_hint *h)
{
	struct app *a = c->app;

	if (unlikely(c->closing))
		return false;
	if (unlikely(!tp_send_hinted(a->h->tp, c->tc, data, len, h)))
		return false;
	if (c->turn_no != a->turn_no) {
		c->turn_no = a->turn_no;
		c->turn_bytes = 0;
	}
	c->turn_bytes += len;
	c->bytes_out += len;
	c->last_write_ns = host_now(a->h);
	DP_STAT_ADD(a->st, bytes_out, len);
	return true;
}

void app_conn_drop_slow(struct conn *c)
{
	struct app *a = c->app;

	DP_STAT_ADD(a->st, slow_consumer_closes, 1);
	batch_clear(&c->batch, &a->pool);
	/* Nothing is held any more: the end of turn must not look at it (its
	 * on_close, which would take it off the list, comes at the transport's
	 * next pass, after that end of turn). */
	app_stream_pending_remove(c);
	if (c->mode == CONN_SSE) {
		struct app_buf b;

		app_buf_init(&b, a->scratch, a->scratch_cap);
		app_event_sse_error(&b, "slow_consumer",
				    "pending data passed max_pending_bytes; reconnect with Last-Event-ID");
		/* The bound is already passed; the error event is best effort. */
		if (!b.overflow && app_conn_send(c, b.p, b.len))
			app_conn_close(c, false);
		else
			app_conn_close(c, true);
	} else {
		app_ws_close_with(c, WS_CLOSE_POLICY, "slow consumer", true);
	}
}

bool app_conn_account(struct conn *c)
{
	struct app *a = c->app;
	uint64_t now_acct;

	if (!c->tc || c->closing)
		return false;
	now_acct = tp_tx_queued(a->h->tp, c->tc) + c->batch.len;
	if (now_acct >= c->pend_acct)
		DP_STAT_ADD(a->st, pending_bytes, now_acct - c->pend_acct);
	else
		DP_STAT_SUB(a->st, pending_bytes, c->pend_acct - now_acct);
	c->pend_acct = now_acct;
	if (unlikely(c->mode != CONN_HTTP && now_acct > a->conf->max_pending_bytes)) {
		app_conn_drop_slow(c);
		return false;
	}
	return true;
}

enum app_req_result app_send_request(struct conn *c, uint8_t kind, uint8_t method,
		     const struct app_field *fields, size_t nfields)
{
	struct app *a = c->app;
	struct chan_request *rq;
	size_t total = sizeof(*rq);
	uint8_t *p;

	if (!a->h->attached)
		return APP_REQ_NO_CONTROL;
	for (size_t i = 0; i < nfields; i++)
		if (fields[i].data)
			total += chan_field_size(fields[i].len);
	if (total > a->h->rec_max)
		return APP_REQ_TOO_BIG;
	rq = a->h->rec_reserve(a->h, CHAN_REC_REQUEST, (uint32_t)total);
	if (!rq) {
		host_count_ring_full(a->h);
		return APP_REQ_FULL;
	}
	memset(rq, 0, sizeof(*rq));
	app_conn_fill_handle(c, &rq->conn);
	rq->req_id = ++c->req_id;
	rq->kind = kind;
	rq->method = method;
	rq->cp_epoch = a->h->control_epoch(a->h);
	c->req_epoch = rq->cp_epoch;
	p = (uint8_t *)(rq + 1);
	for (size_t i = 0; i < nfields; i++)
		if (fields[i].data)
			chan_field_put(&p, fields[i].tag, fields[i].data, (uint32_t)fields[i].len);
	a->h->rec_commit(a->h, (uint32_t)total);
	c->requested = true;
	return APP_REQ_OK;
}

static void app_on_response(struct app *a, const struct chan_response *r, uint32_t len)
{
	struct conn *c = app_conn_lookup(a, &r->conn);

	if (!c) {
		DP_STAT_ADD(a->st, stale_records, 1);
		return;
	}
	if (c->mode == CONN_WS)
		app_ws_on_response(c, r, len);
	else if (c->mode == CONN_HTTP)
		app_http_on_response(c, r, len);
	else
		DP_STAT_ADD(a->st, stale_records, 1);
}

static void app_on_record(void *app, uint16_t type, const void *payload, uint32_t len)
{
	struct app *a = app;

	switch (type) {
	case CHAN_REC_RESPONSE:
		app_on_response(a, payload, len);
		break;
	case CHAN_REC_TOKENS:
	case CHAN_REC_STATUS:
	case CHAN_REC_USAGE:
	case CHAN_REC_DONE:
		app_stream_on_record(a, type, payload, len);
		break;
	case CHAN_REC_KICK:
		app_ctl_on_kick(a, payload);
		break;
	case CHAN_REC_ADMIN:
		app_ctl_on_admin(a, payload);
		break;
	case CHAN_REC_BACKENDS:
		app_metrics_backends(a, payload, len);
		break;
	case CHAN_REC_BROADCAST:
		app_ws_on_broadcast(a, payload, len);
		break;
	default:
		host_count_bad_record(a->h);
		break;
	}
}

static void app_end_of_turn(void *app, bool busy)
{
	struct app *a = app;

	app_stream_end_of_turn(a, busy);
	a->turn_no++;
}

static void app_control_changed(void *app, bool attached)
{
	struct app *a = app;

	for (uint32_t i = 0; i < a->used_slots; i++) {
		struct conn *c = &a->conns[i];

		if (!c->tc || c->closing)
			continue;
		/* A request sent to a control that is gone, or to the one before a
		 * restart (its records may have been discarded), is answered 503. */
		if (c->mode == CONN_HTTP &&
		    (!attached || c->req_epoch != a->h->control_epoch(a->h)))
			app_http_control_lost(c);
		/* On attach too: a control that restarted between two heartbeat
		 * checks (new epoch, no gap seen) will not finish the old streams. */
		if (c->subscribed && c->msg_running)
			app_stream_interrupt(c);
		/* The new control knows neither who is on a WebSocket nor who
		 * listens to what: the auth check goes first, so control can
		 * place the SUBSCRIBE that follows it on the same ring. */
		if (attached && c->mode == CONN_WS && !c->closing)
			app_ws_reauthorise(c);
		if (attached && c->subscribed && !c->closing)
			app_stream_announce(c);
	}
}

const struct host_app_ops app_ops = {
	.stats_size = sizeof(struct app_stats),
	.upcalls = &upcalls,
	.create = app_create,
	.destroy = app_destroy,
	.on_record = app_on_record,
	.end_of_turn = app_end_of_turn,
	.control_changed = app_control_changed,
	.conf_changed = app_conf_changed,
	.drain = app_drain,
	.open_conns = app_open_conns,
};

/* Largest multi-part response body collected. */
#define APP_MAX_RESP (16u * 1024u * 1024u)

static bool app_dbuf_put(struct app_dbuf *d, const void *p, size_t n)
{
	if (d->cap - d->len < n) {
		size_t cap = d->cap ? d->cap : 4096;
		uint8_t *np;

		while (cap - d->len < n) {
			if (cap >= APP_MAX_RESP)
				return false;
			cap *= 2;
		}
		np = realloc(d->p, cap);
		if (!np)
			return false;
		d->p = np;
		d->cap = cap;
	}
	memcpy(d->p + d->len, p, n);
	d->len += n;
	return true;
}

void app_resp_reset(struct conn *c)
{
	if (!c->resp)
		return;
	free(c->resp->body.p);
	free(c->resp->hdrs.p);
	free(c->resp);
	c->resp = NULL;
}

/* Parts collected so far: none when no part arrived or the ones that did
 * carried neither body nor header fields. */
static bool app_resp_started(const struct conn *c)
{
	return c->resp && (c->resp->body.len || c->resp->hdrs.len);
}

/*
 * Response parts: a single-part response is used straight from the record;
 * parts flagged CHAN_RESP_MORE are copied into c->resp (taken at the first
 * of them): the body, and the header fields as ready-made header lines,
 * until the last part. The caller gives c->resp back (app_resp_reset).
 */
bool app_resp_collect(struct conn *c, const struct chan_response *r, uint32_t len,
		      const uint8_t **body, size_t *blen, bool *bad)
{
	const uint8_t *p = (const uint8_t *)(r + 1);
	const uint8_t *end = (const uint8_t *)r + len;
	const struct chan_field *f;
	bool single = !(r->flags & CHAN_RESP_MORE) && !app_resp_started(c);

	*bad = false;
	*body = NULL;
	*blen = 0;
	if (single) {
		app_resp_reset(c);
		while ((f = chan_field_next(&p, end, bad)) != NULL) {
			if (f->tag == CHAN_F_BODY) {
				*body = f->data;
				*blen = f->len;
			}
		}
		return !*bad;
	}
	if (!app_resp_started(c)) {
		c->resp_status = r->status;
		c->resp_ctype = false;
	}
	if (!c->resp) {
		c->resp = calloc(1, sizeof(*c->resp));
		if (!c->resp) {
			*bad = true;
			return false;
		}
	}
	while ((f = chan_field_next(&p, end, bad)) != NULL) {
		bool ok = true;

		if (f->tag == CHAN_F_BODY) {
			ok = app_dbuf_put(&c->resp->body, f->data, f->len);
		} else if (f->tag == CHAN_F_SET_COOKIE || f->tag == CHAN_F_HEADER ||
			   f->tag == CHAN_F_CONTENT_TYPE) {
			if (memchr(f->data, '\r', f->len) || memchr(f->data, '\n', f->len))
				continue; /* a value must never start another header */
			if (f->tag == CHAN_F_CONTENT_TYPE)
				c->resp_ctype = true;
			const char *name = f->tag == CHAN_F_SET_COOKIE ? "Set-Cookie: " :
					   f->tag == CHAN_F_CONTENT_TYPE ? "Content-Type: " : "";

			ok = app_dbuf_put(&c->resp->hdrs, name, strlen(name)) &&
			     app_dbuf_put(&c->resp->hdrs, f->data, f->len) &&
			     app_dbuf_put(&c->resp->hdrs, "\r\n", 2);
		}
		if (!ok) {
			*bad = true;
			return false;
		}
	}
	if (*bad || (r->flags & CHAN_RESP_MORE))
		return false;
	*body = c->resp->body.p;
	*blen = c->resp->body.len;
	return true;
}
