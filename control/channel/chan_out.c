#include "channel/chan_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void co_on_retry(void *arg, uint64_t now_ns)
{
	(void)now_ns;
	co_flush(arg);
}

static void co_on_before_sleep(void *arg)
{
	co_flush(arg);
}

static void co_on_peer_reset(void *arg)
{
	co_reset(arg);
}

int co_init(struct chan_out *o, struct cp_loop *l, size_t backlog_bytes, char *err, size_t errlen)
{
	struct chan_region *r = cpl_region(l);
	memset(o, 0, sizeof(*o));
	o->loop = l;
	cpl_timer_init(&o->retry, co_on_retry, o);
	o->nworkers = chan_nworkers(r);
	if (o->nworkers == 0 || o->nworkers > CHAN_MAX_WORKERS) {
		snprintf(err, errlen, "channel output: %u workers (1..%u)", o->nworkers, CHAN_MAX_WORKERS);
		return -1;
	}
	o->max_payload = UINT32_MAX;
	for (uint32_t w = 0; w < o->nworkers; w++) {
		struct co_worker *cw = &o->w[w];
		cw->prod = chan_producer(r, w);
		if (!cw->prod) {
			snprintf(err, errlen, "channel output: no ring for worker %u", w);
			goto fail;
		}
		if (cw->prod->max_payload < o->max_payload)
			o->max_payload = cw->prod->max_payload;
		cw->backlog = malloc(backlog_bytes);
		if (!cw->backlog) {
			snprintf(err, errlen, "channel output: cannot allocate %zu bytes of backlog", backlog_bytes);
			goto fail;
		}
		cw->bcap = backlog_bytes;
	}
	if (cpl_before_sleep(l, co_on_before_sleep, o) < 0 || cpl_on_peer_reset(l, co_on_peer_reset, o) < 0) {
		snprintf(err, errlen, "channel output: the loop's hook tables are full");
		goto fail;
	}
	return 0;
fail:
	co_free(o);
	return -1;
}

void co_free(struct chan_out *o)
{
	if (o->loop)
		cpl_timer_cancel(o->loop, &o->retry);
	for (uint32_t w = 0; w < o->nworkers; w++) {
		free(o->w[w].backlog);
		o->w[w].backlog = NULL;
	}
	o->nworkers = 0;
}

void *co_begin(struct chan_out *o, uint32_t w, uint16_t type, uint32_t len)
{
	if (unlikely(w >= o->nworkers))
		return NULL;
	struct co_worker *cw = &o->w[w];
	if (unlikely(len > o->max_payload)) {
		cw->dropped++;
		return NULL;
	}
	/* Straight into the ring unless older records are still waiting. */
	if (likely(cw->blen == 0)) {
		void *p = chan_reserve(cw->prod, type, len);
		if (likely(p != NULL)) {
			cw->cur_backlog = false;
			return p;
		}
	}
	size_t need = chan_rec_size(len);
	if (cw->blen + need > cw->bcap) {
		cw->dropped++;
		return NULL;
	}
	struct chan_rec *rec = (struct chan_rec *)(cw->backlog + cw->blen);
	rec->len = len;
	rec->type = type;
	rec->flags = 0;
	cw->cur_off = cw->blen;
	cw->cur_backlog = true;
	cw->deferred++;
	return rec->payload;
}

void co_end(struct chan_out *o, uint32_t w, uint32_t len)
{
	struct co_worker *cw = &o->w[w];
	if (cw->cur_backlog) {
		struct chan_rec *rec = (struct chan_rec *)(cw->backlog + cw->cur_off);
		rec->len = len;
		cw->blen = cw->cur_off + chan_rec_size(len);
		cw->cur_backlog = false;
		return;
	}
	chan_commit(cw->prod, len);
	cw->unpublished = true;
}

/* Moves as many backlog records into the ring as fit, oldest first. */
static void co_drain_backlog(struct co_worker *cw)
{
	size_t off = 0;
	while (off < cw->blen) {
		const struct chan_rec *rec = (const struct chan_rec *)(cw->backlog + off);
		void *p = chan_reserve(cw->prod, rec->type, rec->len);
		if (!p)
			break;
		memcpy(p, rec->payload, rec->len);
		chan_commit(cw->prod, rec->len);
		cw->unpublished = true;
		off += chan_rec_size(rec->len);
	}
	if (off == 0)
		return;
	memmove(cw->backlog, cw->backlog + off, cw->blen - off);
	cw->blen -= off;
}

int co_on_flush(struct chan_out *o, void (*fn)(void *arg), void *arg)
{
	if (o->nflush == CO_MAX_FLUSH_HOOKS)
		return -1;
	o->flush_fn[o->nflush] = fn;
	o->flush_arg[o->nflush] = arg;
	o->nflush++;
	return 0;
}

void co_flush(struct chan_out *o)
{
	bool waiting = false;
	for (uint32_t i = 0; i < o->nflush; i++)
		o->flush_fn[i](o->flush_arg[i]);
	for (uint32_t w = 0; w < o->nworkers; w++) {
		struct co_worker *cw = &o->w[w];
		if (cw->blen)
			co_drain_backlog(cw);
		if (cw->unpublished) {
			chan_publish(cw->prod);
			cw->unpublished = false;
		}
		waiting |= cw->blen != 0;
	}
	if (waiting && !cpl_timer_armed(&o->retry))
		cpl_timer_arm(o->loop, &o->retry, sluice_now_ns() + CO_BACKLOG_RETRY_NS);
}

void co_reset(struct chan_out *o)
{
	for (uint32_t w = 0; w < o->nworkers; w++)
		o->w[w].blen = 0;
}

size_t co_backlog_bytes(const struct chan_out *o, uint32_t w)
{
	return w < o->nworkers ? o->w[w].blen : 0;
}

static void co_ids(char sid_dst[CHAN_ID_LEN], char mid_dst[CHAN_ID_LEN], const char *sid, const char *mid)
{
	/* Ids were validated when they entered control, so they fit. */
	memset(sid_dst, 0, CHAN_ID_LEN);
	memset(mid_dst, 0, CHAN_ID_LEN);
	memcpy(sid_dst, sid, strnlen(sid, CHAN_ID_LEN - 1));
	memcpy(mid_dst, mid, strnlen(mid, CHAN_ID_LEN - 1));
}

static inline size_t co_tok_size(uint32_t len)
{
	return chan_align8(sizeof(struct chan_token) + len);
}

/* Writes tokens [0, n) into one TOKENS record of payload size len. */
static bool co_tokens_one(struct chan_out *o, struct chan_conn conn, const char *sid,
			  const char *mid, uint32_t first_seq, const struct co_tok *t, uint32_t n,
			  size_t len)
{
	uint8_t *p = co_begin(o, conn.worker, CHAN_REC_TOKENS, (uint32_t)len);
	if (!p)
		return false;
	struct chan_tokens *h = (struct chan_tokens *)p;
	memset(h, 0, sizeof(*h));
	h->conn = conn;
	co_ids(h->session_id, h->message_id, sid, mid);
	h->first_seq = first_seq;
	h->count = n;
	uint8_t *q = p + sizeof(*h);
	for (uint32_t i = 0; i < n; i++) {
		struct chan_token *ct = (struct chan_token *)q;
		size_t sz = co_tok_size(t[i].len);
		ct->created_ns = t[i].created_ns;
		ct->len = t[i].len;
		ct->_pad = 0;
		memcpy(ct->text, t[i].text, t[i].len);
		memset(ct->text + t[i].len, 0, sz - sizeof(*ct) - t[i].len);
		q += sz;
	}
	co_end(o, conn.worker, (uint32_t)len);
	return true;
}

bool co_tokens(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	       uint32_t first_seq, const struct co_tok *t, uint32_t n)
{
	uint32_t i = 0;
	while (i < n) {
		/* As many tokens as fit in one record; a token that fits in no
		 * record at all is a bug upstream (backend tokens are tiny). */
		size_t len = sizeof(struct chan_tokens);
		uint32_t j = i;
		while (j < n && len + co_tok_size(t[j].len) <= o->max_payload)
			len += co_tok_size(t[j++].len);
		if (j == i)
			return false;
		if (!co_tokens_one(o, conn, sid, mid, first_seq + i, t + i, j - i, len))
			return false;
		i = j;
	}
	return true;
}

static bool co_status_rec(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
			  const char *status, const struct co_terms *t)
{
	size_t sl = strlen(status);
	if (sl >= CHAN_STATUS_LEN)
		return false;
	struct chan_status *s = co_begin(o, conn.worker, CHAN_REC_STATUS, sizeof(*s));
	if (!s)
		return false;
	memset(s, 0, sizeof(*s));
	s->conn = conn;
	co_ids(s->session_id, s->message_id, sid, mid);
	memcpy(s->status, status, sl);
	if (t) {
		s->prompt_tokens = t->prompt_tokens;
		s->prompt_cost = t->prompt_cost;
		s->cost_per_token = t->cost_per_token;
	}
	co_end(o, conn.worker, sizeof(*s));
	return true;
}

bool co_status(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	       const char *status)
{
	return co_status_rec(o, conn, sid, mid, status, NULL);
}

bool co_status_streaming(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
			 const struct co_terms *t)
{
	return co_status_rec(o, conn, sid, mid, "streaming", t);
}

bool co_usage(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	      uint32_t prompt_tokens, uint32_t completion_tokens, double cost_usd)
{
	struct chan_usage *u = co_begin(o, conn.worker, CHAN_REC_USAGE, sizeof(*u));
	if (!u)
		return false;
	memset(u, 0, sizeof(*u));
	u->conn = conn;
	co_ids(u->session_id, u->message_id, sid, mid);
	u->prompt_tokens = prompt_tokens;
	u->completion_tokens = completion_tokens;
	u->total_tokens = prompt_tokens + completion_tokens;
	u->cost_usd = cost_usd;
	co_end(o, conn.worker, sizeof(*u));
	return true;
}

bool co_done(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	     uint32_t status, uint32_t last_seq, const char *code, const char *message)
{
	size_t cl = code ? strnlen(code, 256) : 0, ml = message ? strnlen(message, 1024) : 0;
	size_t len = sizeof(struct chan_done) + (cl ? chan_field_size(cl) : 0) + (ml ? chan_field_size(ml) : 0);
	uint8_t *p = co_begin(o, conn.worker, CHAN_REC_DONE, (uint32_t)len);
	if (!p)
		return false;
	struct chan_done *d = (struct chan_done *)p;
	memset(p, 0, len);
	d->conn = conn;
	co_ids(d->session_id, d->message_id, sid, mid);
	d->status = status;
	d->last_seq = last_seq;
	uint8_t *q = p + sizeof(*d);
	if (cl)
		chan_field_put(&q, CHAN_F_ERROR_CODE, code, (uint32_t)cl);
	if (ml)
		chan_field_put(&q, CHAN_F_ERROR_MESSAGE, message, (uint32_t)ml);
	co_end(o, conn.worker, (uint32_t)len);
	return true;
}

bool co_response(struct chan_out *o, struct chan_conn conn, uint32_t req_id, const struct co_resp *r)
{
	return co_response_part(o, conn, req_id, r, false);
}

bool co_response_part(struct chan_out *o, struct chan_conn conn, uint32_t req_id, const struct co_resp *r,
		      bool go_on)
{
	size_t ctl = r->content_type ? strlen(r->content_type) : 0;
	size_t hl = r->header ? strlen(r->header) : 0;
	size_t extras = (r->content_type ? chan_field_size(ctl) : 0) + (r->header ? chan_field_size(hl) : 0);
	size_t fixed = sizeof(struct chan_response);
	size_t rem = r->body_len;
	const char *body = r->body;
	bool first = true;

	do {
		size_t ex = first ? extras : 0;
		if (fixed + ex + sizeof(struct chan_field) + 8 > o->max_payload)
			return false;
		size_t avail = ((o->max_payload - fixed - ex) & ~(size_t)7) - sizeof(struct chan_field);
		size_t chunk = rem < avail ? rem : avail;
		bool more = chunk < rem;
		size_t len = fixed + ex + (body ? chan_field_size(chunk) : 0);
		uint8_t *p = co_begin(o, conn.worker, CHAN_REC_RESPONSE, (uint32_t)len);
		if (!p)
			return false;
		struct chan_response *h = (struct chan_response *)p;
		memset(p, 0, len);
		h->conn = conn;
		h->req_id = req_id;
		h->status = r->status;
		h->action = r->action;
		h->flags = more || go_on ? CHAN_RESP_MORE : 0;
		if (r->session_id)
			memcpy(h->session_id, r->session_id, strnlen(r->session_id, CHAN_ID_LEN - 1));
		if (r->resume_message_id)
			memcpy(h->resume_message_id, r->resume_message_id,
			       strnlen(r->resume_message_id, CHAN_ID_LEN - 1));
		h->resume_seq = r->resume_seq;
		uint8_t *q = p + fixed;
		if (first && r->content_type)
			chan_field_put(&q, CHAN_F_CONTENT_TYPE, r->content_type, (uint32_t)ctl);
		if (first && r->header)
			chan_field_put(&q, r->header_tag ? r->header_tag : CHAN_F_HEADER, r->header,
				       (uint32_t)hl);
		if (body)
			chan_field_put(&q, CHAN_F_BODY, body, (uint32_t)chunk);
		co_end(o, conn.worker, (uint32_t)len);
		if (body)
			body += chunk;
		rem -= chunk;
		first = false;
	} while (rem > 0);
	return true;
}

bool co_broadcast(struct chan_out *o, struct chan_conn conn, uint32_t max_pending, const char *text,
		  size_t len)
{
	size_t total = sizeof(struct chan_broadcast) + chan_field_size(len);
	if (total > o->max_payload || conn.slot == CHAN_SLOT_ALL)
		return false;
	uint8_t *p = co_begin(o, conn.worker, CHAN_REC_BROADCAST, (uint32_t)total);
	if (!p)
		return false;
	struct chan_broadcast *b = (struct chan_broadcast *)p;
	memset(b, 0, sizeof(*b));
	b->conn = conn;
	b->max_pending = max_pending < CHAN_BROADCAST_MIN_PENDING ? CHAN_BROADCAST_MIN_PENDING : max_pending;
	uint8_t *q = p + sizeof(*b);
	chan_field_put(&q, CHAN_F_BODY, text, (uint32_t)len);
	co_end(o, conn.worker, (uint32_t)total);
	return true;
}
