/*
 * The operator side of a worker's app, driven by control (hence "ctl"):
 * control's KICK (close a conn, or every
 * subscriber of a session, e.g. after a logout or `sluicectl sessions kill`),
 * ADMIN LIST_CONNS (the worker's connection table in pages), and the STATS
 * record every worker sends once a second so control can show the worker's
 * counters without reading the dataplane's memory.
 */
#include <string.h>

#include "app/app_int.h"
#include "sluice/log.h"

#define STATS_PERIOD_NS 1000000000ull

/* Close codes a server may put on the wire (RFC 6455 7.4, IANA registry);
 * anything else from control becomes 1008. */
static uint16_t kick_code(uint16_t code)
{
	if ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	    (code >= 3000 && code <= 4999))
		return code;
	return WS_CLOSE_POLICY;
}

/* One conn leaves on control's word, each mode in its own way: a close
 * frame, an SSE error event, or a plain close. */
static void kick_conn(struct conn *c, const struct chan_kick *k)
{
	struct app *a = c->app;
	struct app_buf b;
	bool sent;

	DP_STAT_ADD(a->st, kicks, 1);
	switch (c->mode) {
	case CONN_WS:
		/* What is already held goes first; nothing arrives after the close. */
		app_stream_flush(c);
		app_stream_unsubscribe(c);
		app_ws_close_with(c, kick_code(k->code), k->reason, false);
		if (!c->closing)
			app_conn_account(c);
		break;
	case CONN_SSE:
		app_stream_flush(c);
		if (c->closing)
			break;
		app_buf_init(&b, a->scratch, a->scratch_cap);
		app_event_sse_error(&b, k->reason_code, k->reason);
		/* Graceful when the event is queued, so the client reads it. */
		sent = !b.overflow && app_conn_send(c, b.p, b.len);
		app_conn_close(c, !sent);
		break;
	default:
		app_conn_close(c, false);
		break;
	}
}

void app_ctl_on_kick(struct app *a, const struct chan_kick *k)
{
	struct conn *c;

	if (k->conn.slot == CHAN_SLOT_ALL) {
		uint32_t slot = app_subs_first(a->subs, k->session_id);

		while (slot != APP_SUBS_NONE) {
			/* The kick unsubscribes this conn: step on first. */
			uint32_t next = app_subs_next(a->subs, slot);

			c = &a->conns[slot];
			if (c->tc && !c->closing)
				kick_conn(c, k);
			slot = next;
		}
		return;
	}
	c = app_conn_lookup(a, &k->conn);
	if (!c) {
		DP_STAT_ADD(a->st, stale_records, 1);
		return;
	}
	kick_conn(c, k);
}

static void fill_info(struct conn *c, struct chan_conn_info *ci, uint64_t now)
{
	struct app *a = c->app;
	struct tp_conn_info ti;

	memset(ci, 0, sizeof(*ci));
	app_conn_fill_handle(c, &ci->conn);
	ci->peer_ipv4 = c->peer.ipv4;
	ci->peer_port = c->peer.port;
	ci->mode = c->mode == CONN_SSE ? CHAN_CONN_SSE :
		   c->mode == CONN_WS ? CHAN_CONN_WS : CHAN_CONN_HTTP;
	ci->age_ms = now > c->open_ns ? (now - c->open_ns) / 1000000u : 0;
	ci->bytes_out = c->bytes_out;
	tp_info(a->h->tp, c->tc, &ti);
	ci->pending_bytes = ti.tx_queued + c->batch.len;
	if (c->subscribed)
		memcpy(ci->session_id, c->sid, CHAN_ID_LEN);
}

/* Next open conn at or after slot *i, or NULL. */
static struct conn *next_open(struct app *a, uint32_t *i)
{
	for (; *i < a->used_slots; (*i)++)
		if (a->conns[*i].tc)
			return &a->conns[(*i)++];
	return NULL;
}

/*
 * LIST_CONNS: pages of chan_conn_info, each as large as a record may be,
 * the last flagged CHAN_CONNS_LAST. A full ring never makes the worker wait:
 * a page shrinks to what fits, and when nothing more fits the list ends
 * early (the page before is flagged last; it is committed but not yet
 * published, since records go out at the end of the turn, so changing it is
 * safe).
 */
static void list_conns(struct app *a, uint32_t req_id)
{
	size_t per = (a->h->rec_max - sizeof(struct chan_conns)) /
		     sizeof(struct chan_conn_info);
	uint32_t open = 0, done = 0, cursor = 0;
	struct chan_conns *prev = NULL;
	uint64_t now = host_now(a->h);

	for (uint32_t i = 0; i < a->used_slots; i++)
		open += a->conns[i].tc != NULL;
	for (;;) {
		uint32_t want = open - done < per ? open - done : (uint32_t)per;
		uint32_t n = want, len;
		struct chan_conns *pg = NULL;
		struct chan_conn_info *ci;

		for (;;) {
			len = (uint32_t)(sizeof(*pg) + (size_t)n * sizeof(*ci));
			pg = a->h->rec_reserve(a->h, CHAN_REC_CONNS, len);
			if (pg || n == 0)
				break;
			n /= 2;
		}
		if (!pg) {
			host_count_ring_full(a->h);
			LOG_WARN("worker %u: channel full, connection list cut after %u of %u",
				 a->wid, done, open);
			if (prev)
				prev->flags |= CHAN_CONNS_LAST;
			return;
		}
		memset(pg, 0, sizeof(*pg));
		pg->req_id = req_id;
		pg->worker = (uint16_t)a->wid;
		pg->count = n;
		ci = (struct chan_conn_info *)(pg + 1);
		for (uint32_t j = 0; j < n; j++)
			fill_info(next_open(a, &cursor), &ci[j], now);
		done += n;
		if (done == open || n < want)
			pg->flags = CHAN_CONNS_LAST;
		a->h->rec_commit(a->h, len);
		if (pg->flags & CHAN_CONNS_LAST)
			return;
		prev = pg;
	}
}

void app_ctl_on_admin(struct app *a, const struct chan_admin *q)
{
	if (q->op == CHAN_ADMIN_LIST_CONNS) {
		list_conns(a, q->req_id);
	} else if (q->op == CHAN_ADMIN_LOG_LEVEL) {
		/* The level is process-wide: control asks worker 0 only. */
		log_set_level((enum log_level)q->arg);
		log_audit("log_level", "proc", "dataplane", "level", log_level_name((enum log_level)q->arg),
			  "by", "control", NULL);
	} else if (q->op == CHAN_ADMIN_RELOAD) {
		if (a->h->request_reload)
			a->h->request_reload(a->h);
	} else {
		host_count_bad_record(a->h);
	}
}

static void send_stats(struct app *a)
{
	const struct app_stats *st = a->st;
	const struct host_stats *hs = a->h->stats;
	struct chan_stats *s = a->h->rec_reserve(a->h, CHAN_REC_STATS, sizeof(*s));
	uint64_t acc, closed;

	if (!s) {
		host_count_ring_full(a->h);
		return;
	}
	memset(s, 0, sizeof(*s));
	acc = DP_STAT_GET(&st->conns_accepted);
	closed = DP_STAT_GET(&st->conns_closed);
	s->worker = a->wid;
	s->uptime_ms = (host_now(a->h) - a->start_ns) / 1000000u;
	s->conns_active = acc >= closed ? acc - closed : 0;
	s->conns_accepted = acc;
	s->sse_active = DP_STAT_GET(&st->sse_active);
	s->ws_active = DP_STAT_GET(&st->ws_active);
	s->http_requests = DP_STAT_GET(&st->http_requests);
	s->tokens_out = DP_STAT_GET(&st->tokens_out);
	s->frames_out = DP_STAT_GET(&st->frames_out);
	s->bytes_out = DP_STAT_GET(&st->bytes_out);
	s->pending_bytes = DP_STAT_GET(&st->pending_bytes);
	s->chan_full = DP_STAT_GET(&hs->chan_full);
	s->slow_consumer_closes = DP_STAT_GET(&st->slow_consumer_closes);
	s->loop_turns = DP_STAT_GET(&hs->loop_turns);
	s->busy_turns = DP_STAT_GET(&hs->busy_turns);
	_Static_assert(CHAN_STATS_DELAY_BUCKETS == APP_DELAY_BUCKETS, "STATS carries the delay histogram");
	memcpy(s->delay_bounds_us, app_stats_delay_bounds_us, sizeof(s->delay_bounds_us));
	for (size_t i = 0; i <= APP_DELAY_BUCKETS; i++)
		s->delay_hist[i] = DP_STAT_GET(&st->delay_hist[i]);
	s->delay_sum_ns = DP_STAT_GET(&st->delay_sum_ns);
	a->h->rec_commit(a->h, sizeof(*s));
}

/* Once a second on the worker's own clock; skipped while control is away
 * (the record would only fill the ring for nobody). A late loop sends one
 * record and steps the period on, never a burst. */
static void stats_timer_cb(void *arg, struct tw_timer *t)
{
	struct app *a = arg;
	uint64_t now = host_now(a->h);

	(void)t;
	if (a->h->attached)
		send_stats(a);
	a->stats_next_ns += STATS_PERIOD_NS;
	if (a->stats_next_ns <= now)
		a->stats_next_ns = now + STATS_PERIOD_NS;
	tw_arm(a->h->wheel, &a->stats_timer, a->stats_next_ns);
}

void app_ctl_stats_start(struct app *a)
{
	tw_init(&a->stats_timer, stats_timer_cb, a);
	a->stats_next_ns = host_now(a->h) + STATS_PERIOD_NS;
	tw_arm(a->h->wheel, &a->stats_timer, a->stats_next_ns);
}

void app_ctl_stats_stop(struct app *a)
{
	if (a->stats_timer.armed)
		tw_cancel(a->h->wheel, &a->stats_timer);
}
