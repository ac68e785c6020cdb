/*
 * Stream delivery for SSE and WebSocket connections: subscriptions, the
 * resume filter, the adaptive batcher's use (batch.h), event framing
 * (app_event.h), keep-alives, and the control attach/detach duties of a
 * stream (interrupted `done`, re-announce).
 *
 * Per connection, (last_mid, last_seq) is the last token handed to the
 * batcher; a token of last_mid with seq <= last_seq is never delivered again,
 * which also applies the resume point control gives at subscribe time.
 */
#include <stdlib.h>
#include <string.h>

#include "app/jsonw.h"
#include "app/app_int.h"
#include "sluice/conf.h"
#include "sluice/log.h"

static enum app_event_proto proto_of(const struct conn *c)
{
	return c->mode == CONN_WS ? APP_EVENT_WS : APP_EVENT_SSE;
}

/* Ids are NUL-padded arrays, and a conn's last_mid is copied whole from a
 * record: the same id nearly always has the same CHAN_ID_LEN bytes, which
 * four word compares decide (asked per subscriber of every record); arrays
 * that differ are compared as strings. */
static bool same_id(const char *a, const char *b)
{
	uint64_t x[CHAN_ID_LEN / 8], y[CHAN_ID_LEN / 8];

	memcpy(x, a, sizeof(x));
	memcpy(y, b, sizeof(y));
	if (((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0)
		return true;
	return strncmp(a, b, CHAN_ID_LEN) == 0;
}
_Static_assert(CHAN_ID_LEN == 32, "same_id compares four words");

static void pending_add(struct conn *c)
{
	struct app *a = c->app;

	if (c->pend_idx != APP_NO_SLOT)
		return;
	c->pend_idx = a->npending;
	a->pending[a->npending++] = c->slot;
}

void app_stream_pending_remove(struct conn *c)
{
	struct app *a = c->app;
	uint32_t last;

	if (c->pend_idx == APP_NO_SLOT)
		return;
	last = a->pending[--a->npending];
	a->pending[c->pend_idx] = last;
	a->conns[last].pend_idx = c->pend_idx;
	c->pend_idx = APP_NO_SLOT;
}

bool app_stream_emit(struct conn *c, const struct app_buf *b)
{
	bool ok;

	if (unlikely(b->overflow)) {
		LOG_WARN("worker %u: event larger than the frame buffer, slot %u closed",
			 c->app->wid, c->slot);
		app_conn_close(c, true);
		return false;
	}
	if (c->mode == CONN_WS)
		return app_ws_send_text(c, b->p, b->len);
	ok = app_conn_send(c, b->p, b->len);
	if (!ok)
		app_conn_close(c, true);
	return ok;
}

static uint8_t variant_of(const struct conn *c)
{
	return (uint8_t)((c->mode == CONN_WS ? APP_FRAME_WS : 0u) | (c->timing ? APP_FRAME_STAMPS : 0u));
}

/* Counts n tokens framed for c now and records their delay samples. */
static void count_framed(struct conn *c, uint32_t n, const struct batch_tok *toks)
{
	struct app *a = c->app;
	uint64_t now = host_now(a->h);

	for (uint32_t i = 0; i < n; i++) {
		app_stats_delay(a->st->delay_hist, &a->st->delay_sum_ns,
				now > toks[i].arrival_ns ? now - toks[i].arrival_ns : 0);
		app_stats_delay(a->st->e2e_hist, &a->st->e2e_sum_ns,
				now > toks[i].created_ns ? now - toks[i].created_ns : 0);
	}
	DP_STAT_ADD(a->st, tokens_out, n);
	DP_STAT_ADD(a->st, frames_out, 1);
}

/* Queues a finished token frame: SSE event bytes, or a whole WebSocket frame. */
/* h: the frame's hint when the frame cache keeps it, else NULL. */
static bool send_frame(struct conn *c, const char *p, size_t len, struct tp_tx_hint *h)
{
	if (c->mode == CONN_WS)
		return app_ws_send_framed(c, p, len, h);
	if (app_conn_send_hinted(c, p, len, h))
		return true;
	app_conn_close(c, true);
	return false;
}

/* The WebSocket header goes in front of the JSON: the JSON is written this
 * far into the scratch and the header right before it. */
#define WS_HDR_ROOM 10u

/*
 * Formats the token frame of `key` in the scratch and keeps it in the cache
 * for the subscribers that come next (*kept: its slot, NULL when too large
 * to keep). Returns the bytes, or NULL when the frame does not fit the
 * scratch: the conn is closed (logged) rather than sent a cut frame.
 */
static const char *format_frame(struct conn *c, const struct app_frame_key *key, const char *esc,
				size_t esc_len, uint32_t n, const struct batch_tok *toks, size_t *len_out,
				struct app_frame_slot **kept)
{
	struct app *a = c->app;
	uint64_t stamps[BATCH_MAX_TOKENS];
	size_t off = key->variant & APP_FRAME_WS ? WS_HDR_ROOM : 0;
	bool with_stamps = key->variant & APP_FRAME_STAMPS;
	struct app_buf b;
	char *p;
	size_t len;

	for (uint32_t i = 0; with_stamps && i < n; i++)
		stamps[i] = toks[i].created_ns;
	app_buf_init(&b, a->scratch + off, a->scratch_cap - off);
	app_event_token(&b, off ? APP_EVENT_WS : APP_EVENT_SSE, c->sid, key->mid, key->last_seq, n, esc,
			esc_len, with_stamps ? stamps : NULL, n);
	if (unlikely(b.overflow)) {
		LOG_WARN("worker %u: event larger than the frame buffer, slot %u closed", a->wid, c->slot);
		app_conn_close(c, true);
		return NULL;
	}
	p = b.p;
	len = b.len;
	if (off) {
		uint8_t h[WS_HDR_ROOM];
		size_t hl = ws_build_header(h, true, WS_OP_TEXT, len);

		p -= hl;
		memcpy(p, h, hl);
		len += hl;
	}
	*kept = app_frame_put(&a->frames, key, p, len);
	*len_out = len;
	return p;
}

/* Frames held tokens as one event: the shared frame when another subscriber
 * of this worker already needed the same one, else formatted here. */
static bool emit_tokens(struct conn *c, const char *mid, uint32_t last_seq, uint32_t n,
			const char *esc, size_t esc_len, const struct batch_tok *toks)
{
	struct app_frame_key key;
	struct app_frame_slot *fs;

	const char *p;
	size_t len;

	count_framed(c, n, toks);
	app_frame_key_set(&key, variant_of(c), mid, last_seq - n + 1, last_seq);
	fs = app_frame_find(&c->app->frames, &key);
	if (fs)
		return send_frame(c, fs->bytes, fs->len, &fs->hint);
	p = format_frame(c, &key, esc, esc_len, n, toks, &len, &fs);
	return p && send_frame(c, p, len, fs ? &fs->hint : NULL);
}

bool app_stream_flush(struct conn *c)
{
	struct app *a = c->app;
	struct batch *bt = &c->batch;
	bool ok;

	if (bt->count == 0)
		return !c->closing;
	app_stream_pending_remove(c);
	ok = emit_tokens(c, bt->mid, bt->last_seq, bt->count, bt->buf->text, bt->len, bt->buf->toks);
	batch_clear(bt, &a->pool);
	return ok;
}

/* Whether c can take bytes at once: not blocked, nothing queued from earlier
 * turns (bytes this conn queued in this turn leave at this turn's flush) and
 * a window the transport does not report as used up. No syscall: the
 * transport's own view, and where it keeps count of stalled connections and
 * has none (the healthy fan-out), not even a call per connection. */
static inline bool conn_tx_idle(struct conn *c)
{
	struct app *a = c->app;
	struct tp_conn_info ti;
	uint64_t mine;

	if (tp_none_stalled(a->h->tp))
		return true;
	mine = c->turn_no == a->turn_no ? c->turn_bytes : 0;
	tp_tx_state(a->h->tp, c->tc, &ti);
	return !ti.blocked && ti.tx_queued <= mine && tp_window_open(&ti);
}

/* Makes mid the conn's current message when it is another one. */
static void track_message(struct conn *c, const char *mid)
{
	if (same_id(mid, c->last_mid))
		return;
	memcpy(c->last_mid, mid, CHAN_ID_LEN);
	c->last_seq = 0;
	c->done_sent = false;
}

/*
 * TOKENS delivery. A record is handled in runs of up to FAN_RUN tokens; each
 * run is walked once for all its subscribers: every token is escaped once,
 * and the frames of a token framed alone (mode off, a slow stream) are found
 * or formatted by the first subscriber of each variant that needs them and
 * reached by the others through the run's table, with no key to build or
 * compare. The delay samples and the token counters of a run are added once
 * (a token framed alone for k subscribers is k samples of one delay: the
 * clock is the turn's). Per subscriber stays only what is its own: the
 * resume filter, the batcher's decision, its sends and its accounting. A
 * record of more than FAN_RUN tokens is delivered as consecutive records of
 * at most FAN_RUN would be (each subscriber gets every token once, in
 * order; its accounting runs after each run).
 */
#define FAN_RUN APP_FRAME_RUN
#define FAN_VARIANTS 4u /* APP_FRAME_WS | APP_FRAME_STAMPS */

struct fan_tok {
	const struct chan_token *t;
	const char *esc;  /* escaped text, in app.esc */
	size_t esc_len;   /* JSONW_NOSPACE: too large to frame */
	/* Its frame alone in each variant: the cache slot and the slot's gen
	 * then (NULL: not needed yet, or too large to keep). */
	struct app_frame_slot *frame[FAN_VARIANTS];
	uint32_t frame_gen[FAN_VARIANTS];
	uint32_t singles; /* subscribers it was framed alone for */
};

struct fan {
	struct app *a;
	const struct chan_tokens *rec;
	uint64_t now;       /* the turn's: every token's arrival */
	uint32_t first_seq; /* of tok[0] */
	uint32_t n;
	uint64_t tokens_in; /* as counted per subscriber, added at the run's end */
	struct fan_tok tok[FAN_RUN];
};

/* Takes the next run, from t on (left tokens remain); returns the token
 * after it. Escapes end to end in app.esc: a token that does not fit behind
 * the others starts the next run, one that does not fit alone is marked. */
static const struct chan_token *fan_fill(struct fan *f, const struct chan_token *t, uint32_t left)
{
	struct app *a = f->a;
	size_t used = 0;

	f->n = 0;
	while (f->n < FAN_RUN && f->n < left) {
		struct fan_tok *ft = &f->tok[f->n];
		size_t w = jsonw_escape(a->esc + used, a->esc_cap - used, t->text, t->len);

		if (w == JSONW_NOSPACE && used > 0)
			break;
		ft->t = t;
		ft->esc = a->esc + used;
		ft->esc_len = w;
		memset(ft->frame, 0, sizeof(ft->frame));
		ft->singles = 0;
		if (w != JSONW_NOSPACE)
			used += w;
		f->n++;
		t = chan_token_after(t);
	}
	return t;
}

/* Token i framed by itself for c (variant v). */
static bool fan_single(struct fan *f, uint32_t i, struct conn *c, uint8_t v)
{
	struct app *a = f->a;
	struct fan_tok *ft = &f->tok[i];
	struct app_frame_slot *fs = ft->frame[v];
	struct app_frame_key key;
	struct batch_tok bt;
	const char *p;
	size_t len;

	if (likely(fs && fs->gen == ft->frame_gen[v])) {
		ft->singles++;
		return send_frame(c, fs->bytes, fs->len, &fs->hint);
	}
	app_frame_key_set(&key, v, f->rec->message_id, f->first_seq + i, f->first_seq + i);
	fs = app_frame_find(&a->frames, &key);
	if (!fs && unlikely(ft->esc_len == JSONW_NOSPACE)) {
		/* Its escaped text alone fills the escape buffer: it could not be
		 * framed in the scratch either. */
		LOG_WARN("worker %u: token of %u bytes too large to frame, slot %u closed", a->wid,
			 ft->t->len, c->slot);
		app_conn_close(c, true);
		return false;
	}
	ft->singles++;
	if (fs) {
		p = fs->bytes;
		len = fs->len;
	} else {
		bt.arrival_ns = f->now;
		bt.created_ns = ft->t->created_ns;
		p = format_frame(c, &key, ft->esc, ft->esc_len, 1, &bt, &len, &fs);
		if (!p)
			return false;
	}
	ft->frame[v] = fs;
	if (fs)
		ft->frame_gen[v] = fs->gen;
	return send_frame(c, p, len, fs ? &fs->hint : NULL);
}

static enum batch_add_result fan_add(struct fan *f, uint32_t i, struct conn *c)
{
	const struct fan_tok *ft = &f->tok[i];

	if (unlikely(ft->esc_len == JSONW_NOSPACE))
		return BATCH_TOO_BIG;
	return batch_add(&c->batch, &f->a->pool, f->rec->message_id, f->first_seq + i, ft->esc,
			 ft->esc_len, ft->t->created_ns, f->now);
}

/* Token i for c: framed at once (always with batching off, and a slow
 * stream's token whenever the conn can take it: holding it would coalesce
 * nothing), else held by the batcher. False when c was closed. */
static bool fan_take(struct fan *f, uint32_t i, struct conn *c, uint8_t v)
{
	struct app *a = f->a;
	enum batch_add_result r;

	if (a->pol.off || (batch_stream_slow(&c->batch, &a->pol, f->now) && conn_tx_idle(c))) {
		batch_note_arrival(&c->batch, f->now);
		return fan_single(f, i, c, v);
	}
	r = fan_add(f, i, c);
	if (r == BATCH_FLUSH_FIRST) {
		if (!app_stream_flush(c))
			return false;
		r = fan_add(f, i, c);
	}
	if (r == BATCH_TOO_BIG || r == BATCH_NOMEM)
		return app_stream_flush(c) && fan_single(f, i, c, v);
	if (r != BATCH_ADDED) {
		app_conn_close(c, true);
		return false;
	}
	pending_add(c);
	return true;
}

/* c takes the run's tokens in order, past its resume point; then its
 * accounting. */
static void fan_deliver(struct fan *f, struct conn *c)
{
	const char *mid = f->rec->message_id;
	uint8_t v = variant_of(c);
	bool fresh;

	if (f->n == 0) {
		app_conn_account(c);
		return;
	}
	fresh = !same_id(mid, c->last_mid);
	if (fresh) {
		track_message(c, mid);
	} else if (c->done_sent) {
		f->tokens_in += f->n; /* already ended for the client */
		return;
	}
	for (uint32_t i = 0; i < f->n; i++) {
		uint32_t seq = f->first_seq + i;

		/* Already with the client (resume or replay); the first token
		 * of a message new to the conn always goes. */
		if (seq <= c->last_seq && !(fresh && i == 0))
			continue;
		c->msg_running = true;
		if (!fan_take(f, i, c, v)) {
			f->tokens_in += i + 1;
			return;
		}
		c->last_seq = seq;
	}
	f->tokens_in += f->n;
	app_conn_account(c);
}

/* The run's counters and delay samples, once. */
static void fan_count(struct fan *f)
{
	struct app_stats *st = f->a->st;
	uint64_t frames = 0;

	for (uint32_t i = 0; i < f->n; i++) {
		const struct fan_tok *ft = &f->tok[i];

		if (!ft->singles)
			continue;
		frames += ft->singles;
		/* Framed in the turn it arrived in: no batching delay. */
		app_stats_delay_n(st->delay_hist, &st->delay_sum_ns, 0, ft->singles);
		app_stats_delay_n(st->e2e_hist, &st->e2e_sum_ns,
				  f->now > ft->t->created_ns ? f->now - ft->t->created_ns : 0, ft->singles);
	}
	DP_STAT_ADD(st, tokens_in, f->tokens_in);
	DP_STAT_ADD(st, tokens_out, frames);
	DP_STAT_ADD(st, frames_out, frames);
}

/* A TOKENS record for one conn (`only`), or for every subscriber of its
 * session (only == NULL). */
static void deliver_tokens(struct app *a, struct conn *only, const struct chan_tokens *rec,
			   uint32_t len)
{
	struct fan f;
	const struct chan_token *t = (const struct chan_token *)(const void *)(rec + 1);
	uint32_t left;

	if (!chan_tokens_walk(rec, len, NULL, NULL)) {
		host_count_bad_record(a->h);
		return;
	}
	f.a = a;
	f.rec = rec;
	f.now = host_now(a->h);
	f.first_seq = rec->first_seq;
	left = rec->count;
	do {
		t = fan_fill(&f, t, left);
		left -= f.n;
		f.tokens_in = 0;
		if (only) {
			fan_deliver(&f, only);
		} else {
			uint32_t slot = app_subs_first(a->subs, rec->session_id);

			while (slot != APP_SUBS_NONE) {
				/* Delivery may close this conn and unsubscribe it. */
				uint32_t next = app_subs_next(a->subs, slot);
				struct conn *c = &a->conns[slot];

				if (c->tc && !c->closing)
					fan_deliver(&f, c);
				slot = next;
			}
		}
		fan_count(&f);
		f.first_seq += f.n;
	} while (left > 0);
}

/* Seq for the id of a status_update: tokens of mid delivered so far. */
static uint32_t seq_for(const struct conn *c, const char *mid)
{
	return same_id(mid, c->last_mid) ? c->last_seq : 0;
}

static void deliver_status(struct conn *c, const struct chan_status *s)
{
	struct app_buf b;

	if (!app_stream_flush(c))
		return;
	track_message(c, s->message_id);
	if (c->done_sent)
		return;
	c->msg_running = true;
	if (strcmp(s->status, "streaming") == 0) {
		memcpy(c->prov_mid, s->message_id, CHAN_ID_LEN);
		c->prov_prompt = s->prompt_tokens;
		c->prov_cost = s->prompt_cost;
		c->prov_per_token = s->cost_per_token;
	}
	app_buf_init(&b, c->app->scratch, c->app->scratch_cap);
	app_event_status(&b, proto_of(c), c->sid, s->message_id, seq_for(c, s->message_id), s->status);
	if (app_stream_emit(c, &b))
		app_conn_account(c);
}

static void deliver_usage(struct conn *c, const struct chan_usage *u)
{
	struct app_buf b;

	if (!app_stream_flush(c))
		return;
	if (same_id(u->message_id, c->last_mid) && c->done_sent)
		return;
	app_buf_init(&b, c->app->scratch, c->app->scratch_cap);
	app_event_usage(&b, proto_of(c), c->sid, u->message_id, u->prompt_tokens, u->completion_tokens,
			u->total_tokens, u->cost_usd);
	if (app_stream_emit(c, &b))
		app_conn_account(c);
}

static void deliver_done(struct conn *c, const struct chan_done *d, uint32_t len)
{
	const uint8_t *p = (const uint8_t *)(d + 1);
	const uint8_t *end = (const uint8_t *)d + len;
	const struct chan_field *f, *code = NULL, *msg = NULL;
	const char *status = app_event_done_status_name(d->status);
	bool bad = false;
	struct app_buf b;

	while ((f = chan_field_next(&p, end, &bad)) != NULL) {
		if (f->tag == CHAN_F_ERROR_CODE)
			code = f;
		else if (f->tag == CHAN_F_ERROR_MESSAGE)
			msg = f;
	}
	if (bad || !status) {
		host_count_bad_record(c->app->h);
		return;
	}
	if (!app_stream_flush(c))
		return;
	track_message(c, d->message_id);
	if (c->done_sent)
		return; /* e.g. already ended as interrupted */
	/* Every token of the message is accounted for once done is out. */
	if (d->last_seq > c->last_seq)
		c->last_seq = d->last_seq;
	c->msg_running = false;
	c->done_sent = true;
	app_buf_init(&b, c->app->scratch, c->app->scratch_cap);
	app_event_done(&b, proto_of(c), c->sid, d->message_id, status,
		       code ? (const char *)code->data : NULL, code ? code->len : 0,
		       msg ? (const char *)msg->data : "", msg ? msg->len : 0);
	if (app_stream_emit(c, &b) && app_conn_account(c) && c->app->draining)
		app_drain_conn(c, false);
}

static void deliver(struct conn *c, uint16_t type, const void *payload, uint32_t len)
{
	switch (type) {
	case CHAN_REC_TOKENS:
		deliver_tokens(c->app, c, payload, len);
		break;
	case CHAN_REC_STATUS:
		deliver_status(c, payload);
		break;
	case CHAN_REC_USAGE:
		deliver_usage(c, payload);
		break;
	case CHAN_REC_DONE:
		deliver_done(c, payload, len);
		break;
	default:
		break;
	}
}

/* TOKENS, STATUS, USAGE and DONE all start with a conn handle and the
 * session id, which is all routing needs. */
struct app_stream_rec_head {
	struct chan_conn conn;
	char session_id[CHAN_ID_LEN];
};

void app_stream_on_record(struct app *a, uint16_t type, const void *payload, uint32_t len)
{
	const struct app_stream_rec_head *h = payload;

	if (len < sizeof(*h)) {
		host_count_bad_record(a->h);
		return;
	}
	if (h->conn.slot == CHAN_SLOT_ALL && type == CHAN_REC_TOKENS) {
		deliver_tokens(a, NULL, payload, len);
		return;
	}
	if (h->conn.slot == CHAN_SLOT_ALL) {
		uint32_t slot = app_subs_first(a->subs, h->session_id);

		while (slot != APP_SUBS_NONE) {
			/* Delivery may close this conn and unsubscribe it. */
			uint32_t next = app_subs_next(a->subs, slot);
			struct conn *c = &a->conns[slot];

			if (c->tc && !c->closing)
				deliver(c, type, payload, len);
			slot = next;
		}
		return;
	}
	{
		struct conn *c = app_conn_lookup(a, &h->conn);

		if (!c || !c->subscribed || !same_id(c->sid, h->session_id)) {
			DP_STAT_ADD(a->st, stale_records, 1);
			return;
		}
		deliver(c, type, payload, len);
	}
}

void app_stream_subscribe(struct conn *c, const struct chan_response *r)
{
	struct app *a = c->app;

	if (c->subscribed)
		app_stream_unsubscribe(c);
	memcpy(c->sid, r->session_id, CHAN_ID_LEN);
	c->sid[CHAN_ID_LEN - 1] = '\0';
	if (app_subs_add(a->subs, c->sid, c->slot) != 0) {
		LOG_WARN("worker %u: subscribe without a session id on slot %u", a->wid, c->slot);
		return;
	}
	c->subscribed = true;
	c->msg_running = false;
	c->done_sent = false;
	memcpy(c->last_mid, r->resume_message_id, CHAN_ID_LEN);
	c->last_mid[CHAN_ID_LEN - 1] = '\0';
	c->last_seq = r->resume_seq;
	if (c->mode == CONN_SSE) {
		c->last_write_ns = host_now(a->h);
		tw_arm(a->h->wheel, &c->timer,
		       c->last_write_ns + (uint64_t)a->conf->sse_keepalive_s * 1000000000ull);
	}
}

/* SUBSCRIBE and UNSUBSCRIBE carry the same struct chan_sub. */
static void send_sub(struct conn *c, uint16_t type)
{
	struct app *a = c->app;
	struct chan_sub *s = a->h->rec_reserve(a->h, type, sizeof(*s));

	if (!s) {
		host_count_ring_full(a->h);
		LOG_WARN("worker %u: channel full, %s for slot %u lost", a->wid,
			 type == CHAN_REC_SUBSCRIBE ? "SUBSCRIBE" : "UNSUBSCRIBE", c->slot);
		return;
	}
	memset(s, 0, sizeof(*s));
	app_conn_fill_handle(c, &s->conn);
	memcpy(s->session_id, c->sid, CHAN_ID_LEN);
	memcpy(s->message_id, c->last_mid, CHAN_ID_LEN);
	s->seq = c->last_seq;
	a->h->rec_commit(a->h, sizeof(*s));
}

void app_stream_unsubscribe(struct conn *c)
{
	if (!c->subscribed)
		return;
	app_subs_remove(c->app->subs, c->slot);
	c->subscribed = false;
	if (c->app->h->attached)
		send_sub(c, CHAN_REC_UNSUBSCRIBE);
}

void app_stream_announce(struct conn *c)
{
	if (c->subscribed)
		send_sub(c, CHAN_REC_SUBSCRIBE);
}

void app_stream_interrupt(struct conn *c)
{
	struct app_buf b;

	if (!app_stream_flush(c))
		return;
	c->msg_running = false;
	c->done_sent = true;
	/* Its one usage comes first, counting what this client received, at
	 * the price control announced when the answer started. */
	bool prov = same_id(c->prov_mid, c->last_mid);
	uint32_t pt = prov ? c->prov_prompt : 0;
	app_buf_init(&b, c->app->scratch, c->app->scratch_cap);
	app_event_usage(&b, proto_of(c), c->sid, c->last_mid, pt, c->last_seq, pt + c->last_seq,
			prov ? c->prov_cost + c->prov_per_token * c->last_seq : 0.0);
	if (!app_stream_emit(c, &b))
		return;
	app_buf_init(&b, c->app->scratch, c->app->scratch_cap);
	app_event_done(&b, proto_of(c), c->sid, c->last_mid, "interrupted", NULL, 0, NULL, 0);
	if (app_stream_emit(c, &b) && app_conn_account(c) && c->app->draining)
		app_drain_conn(c, false);
}

/* Keeps the worker's one batch guard at the earliest held deadline. */
static void arm_batch_timer(struct app *a, uint64_t at)
{
	if (at == UINT64_MAX)
		return; /* an armed guard finds nothing due and stops */
	if (!a->batch_timer.armed || at < a->batch_timer_at) {
		tw_arm(a->h->wheel, &a->batch_timer, at);
		a->batch_timer_at = at;
	}
}

/* Flushes the held batches the rule says to flush (batch_decide) and keeps
 * the guard on the earliest deadline of those still held. */
static void scan_pending(struct app *a, bool busy, bool timer)
{
	uint32_t i = 0;
	uint64_t now = host_now(a->h), next = UINT64_MAX;

	while (i < a->npending) {
		uint32_t slot = a->pending[i];
		struct conn *c = &a->conns[slot];
		/* From the guard only what reached a bound leaves: the conn's
		 * state is the end of turn's to judge. */
		bool idle = !timer && conn_tx_idle(c);

		if (batch_decide(&c->batch, &a->pol, now, busy, idle) == BATCH_FLUSH) {
			if (app_stream_flush(c))
				app_conn_account(c);
			if (i < a->npending && a->pending[i] == slot)
				i++; /* still held (cannot happen after a flush, but never spin) */
			continue;
		}
		if (batch_deadline(&c->batch, &a->pol) < next)
			next = batch_deadline(&c->batch, &a->pol);
		i++;
	}
	arm_batch_timer(a, next);
	a->h->holding = a->npending > 0;
}

void app_stream_end_of_turn(struct app *a, bool busy)
{
	scan_pending(a, busy, false);
}

void app_stream_batch_timer(void *arg, struct tw_timer *t)
{
	(void)t;
	scan_pending(arg, true, true);
}

void app_stream_keepalive(struct conn *c)
{
	struct app *a = c->app;
	uint64_t now = host_now(a->h);
	uint64_t period = (uint64_t)a->conf->sse_keepalive_s * 1000000000ull;

	if (now - c->last_write_ns >= period) {
		if (!app_conn_send(c, ":keep-alive\n\n", 13)) {
			app_conn_close(c, true);
			return;
		}
		app_conn_account(c);
	}
	tw_arm(a->h->wheel, &c->timer, c->last_write_ns + period);
}
