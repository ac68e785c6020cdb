/*
 * Decoding and validation of channel records (see chan_proto.h).
 *
 * Every length read from a record is checked against the record's end
 * before anything past it is touched, with size_t arithmetic that cannot
 * wrap. Records in a ring always start on an 8-byte boundary; the decoders
 * insist on that alignment so the struct pointers they hand out are safe to
 * dereference.
 */
#include "sluice/chan_proto.h"

#include <math.h>
#include <string.h>

#include "sluice/common.h"

static inline bool chan_aligned8(const void *p)
{
	return ((uintptr_t)p & 7u) == 0;
}

/*
 * Every field, the last one included, must be present with its alignment
 * gap: chan_field_put() always writes it, so a run that stops inside a gap
 * was cut short.
 */
const struct chan_field *chan_field_next(const uint8_t **p, const uint8_t *end, bool *bad)
{
	const uint8_t *cur = *p;
	if (cur == end)
		return NULL;
	if (unlikely(cur > end || !chan_aligned8(cur)))
		goto fail;
	size_t left = (size_t)(end - cur);
	if (unlikely(left < sizeof(struct chan_field)))
		goto fail;
	const struct chan_field *f = (const struct chan_field *)cur;
	if (unlikely(f->tag == 0 || f->len > left - sizeof(struct chan_field)))
		goto fail;
	size_t step = chan_field_size(f->len);
	if (unlikely(step > left))
		goto fail;
	*p = cur + step;
	return f;
fail:
	*bad = true;
	return NULL;
}

void chan_field_put(uint8_t **p, uint16_t tag, const void *data, uint32_t len)
{
	struct chan_field *f = (struct chan_field *)*p;
	size_t used = sizeof(*f) + len;
	size_t total = chan_field_size(len);
	f->tag = tag;
	f->_pad = 0;
	f->len = len;
	if (len)
		memcpy(f->data, data, len);
	/* Zero the alignment gap so no stale bytes cross to the other process. */
	memset(*p + used, 0, total - used);
	*p += total;
}

/*
 * Checks the whole token run first and only then calls fn, so a caller
 * never acts on the front half of a record whose back half is corrupt.
 */
bool chan_tokens_walk(const void *payload, uint32_t len,
		      void (*fn)(void *arg, const struct chan_token *t), void *arg)
{
	if (!chan_aligned8(payload) || len < sizeof(struct chan_tokens))
		return false;
	const uint8_t *base = payload;
	const struct chan_tokens *hdr = payload;
	size_t off = sizeof(*hdr);
	size_t end = sizeof(*hdr);
	for (uint32_t i = 0; i < hdr->count; i++) {
		if (off > len || len - off < sizeof(struct chan_token))
			return false;
		const struct chan_token *t = (const struct chan_token *)(base + off);
		if (t->len > len - off - sizeof(*t))
			return false;
		end = off + sizeof(*t) + t->len;
		off = chan_align8(end);
	}
	/* The run ends with the last token's alignment gap, nothing more or less. */
	if (len != chan_align8(end))
		return false;
	if (!fn)
		return true;
	off = sizeof(*hdr);
	for (uint32_t i = 0; i < hdr->count; i++) {
		const struct chan_token *t = (const struct chan_token *)(base + off);
		fn(arg, t);
		off = chan_align8(off + sizeof(*t) + t->len);
	}
	return true;
}

static bool chan_str_ok(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static bool chan_fields_ok(const uint8_t *p, const uint8_t *end)
{
	bool bad = false;
	while (chan_field_next(&p, end, &bad))
		;
	return !bad;
}

static bool chan_ids_ok(const char *session_id, const char *message_id)
{
	return chan_str_ok(session_id, CHAN_ID_LEN) && chan_str_ok(message_id, CHAN_ID_LEN);
}

/*
 * Records with only a fixed part must have exactly its size: the producer
 * reserves sizeof() and a different length means a layout disagreement.
 * PAD is never handed to a consumer (chan_peek skips it), so seeing one here
 * means the caller is looking at something that is not a record.
 */
bool chan_rec_valid(uint16_t type, const void *payload, uint32_t len)
{
	if (!chan_aligned8(payload))
		return false;
	const uint8_t *base = payload;
	const uint8_t *end = base + len;
	switch (type) {
	case CHAN_REC_REQUEST: {
		const struct chan_request *r = payload;
		if (len < sizeof(*r))
			return false;
		if (r->kind < CHAN_REQ_HTTP || r->kind > CHAN_REQ_HTTP_ADMIT || r->method > CHAN_M_OPTIONS)
			return false;
		return chan_fields_ok(base + sizeof(*r), end);
	}
	case CHAN_REC_SUBSCRIBE:
	case CHAN_REC_UNSUBSCRIBE: {
		const struct chan_sub *s = payload;
		return len == sizeof(*s) && chan_ids_ok(s->session_id, s->message_id);
	}
	case CHAN_REC_CONN_CLOSED:
		return len == sizeof(struct chan_conn_closed);
	case CHAN_REC_RESPONSE: {
		const struct chan_response *r = payload;
		if (len < sizeof(*r))
			return false;
		if (r->action > CHAN_RESP_CONTINUE || !chan_ids_ok(r->session_id, r->resume_message_id))
			return false;
		return chan_fields_ok(base + sizeof(*r), end);
	}
	case CHAN_REC_TOKENS: {
		const struct chan_tokens *t = payload;
		if (len < sizeof(*t) || !chan_ids_ok(t->session_id, t->message_id))
			return false;
		/* seq is 1-based and the last token's seq must not wrap. */
		if (t->count == 0 || t->first_seq == 0 || t->count - 1 > UINT32_MAX - t->first_seq)
			return false;
		return chan_tokens_walk(payload, len, NULL, NULL);
	}
	case CHAN_REC_STATUS: {
		const struct chan_status *s = payload;
		return len == sizeof(*s) && chan_ids_ok(s->session_id, s->message_id) &&
		       chan_str_ok(s->status, CHAN_STATUS_LEN) && isfinite(s->prompt_cost) &&
		       s->prompt_cost >= 0.0 && isfinite(s->cost_per_token) && s->cost_per_token >= 0.0;
	}
	case CHAN_REC_USAGE: {
		const struct chan_usage *u = payload;
		return len == sizeof(*u) && chan_ids_ok(u->session_id, u->message_id) &&
		       isfinite(u->cost_usd) && u->cost_usd >= 0.0;
	}
	case CHAN_REC_DONE: {
		const struct chan_done *d = payload;
		if (len < sizeof(*d) || !chan_ids_ok(d->session_id, d->message_id))
			return false;
		if (d->status > CHAN_DONE_INTERRUPTED)
			return false;
		return chan_fields_ok(base + sizeof(*d), end);
	}
	case CHAN_REC_KICK: {
		const struct chan_kick *k = payload;
		return len == sizeof(*k) && chan_str_ok(k->session_id, CHAN_ID_LEN) &&
		       chan_str_ok(k->reason_code, sizeof(k->reason_code)) &&
		       chan_str_ok(k->reason, sizeof(k->reason));
	}
	case CHAN_REC_STATS:
		return len == sizeof(struct chan_stats);
	case CHAN_REC_BACKENDS: {
		const struct chan_backends *b = payload;
		if (len < sizeof(*b) || (len - sizeof(*b)) % sizeof(struct chan_backend_entry) != 0 ||
		    (len - sizeof(*b)) / sizeof(struct chan_backend_entry) != b->count)
			return false;
		const struct chan_backend_entry *e = (const struct chan_backend_entry *)(b + 1);
		for (uint32_t i = 0; i < b->count; i++)
			if (!chan_str_ok(e[i].backend, sizeof(e[i].backend)) ||
			    !chan_str_ok(e[i].model, sizeof(e[i].model)) || !isfinite(e[i].ttft_sum_s))
				return false;
		for (uint32_t i = 0; i < CHAN_TTFT_BUCKETS; i++)
			if (!isfinite(b->ttft_le[i]))
				return false;
		return true;
	}
	case CHAN_REC_BROADCAST: {
		const struct chan_broadcast *b = payload;
		if (len < sizeof(*b) || b->conn.slot == CHAN_SLOT_ALL ||
		    b->max_pending < CHAN_BROADCAST_MIN_PENDING)
			return false;
		return chan_fields_ok(base + sizeof(*b), end);
	}
	case CHAN_REC_ADMIN: {
		const struct chan_admin *a = payload;
		return len == sizeof(*a) && a->op == CHAN_ADMIN_LIST_CONNS;
	}
	case CHAN_REC_CONNS: {
		const struct chan_conns *c = payload;
		if (len < sizeof(*c) || (len - sizeof(*c)) % sizeof(struct chan_conn_info) != 0 ||
		    (len - sizeof(*c)) / sizeof(struct chan_conn_info) != c->count)
			return false;
		const struct chan_conn_info *ci = (const struct chan_conn_info *)(c + 1);
		for (uint32_t i = 0; i < c->count; i++)
			if (!chan_str_ok(ci[i].session_id, CHAN_ID_LEN) || ci[i].mode > CHAN_CONN_WS)
				return false;
		return true;
	}
	default:
		return false;
	}
}

/* An embedded NUL would shorten the id on the other side without anyone
 * noticing, so it is refused like an over-long id. */
bool chan_id_set(char dst[CHAN_ID_LEN], const char *src, size_t len)
{
	if (len >= CHAN_ID_LEN || (len && memchr(src, '\0', len)))
		return false;
	memset(dst, 0, CHAN_ID_LEN);
	if (len)
		memcpy(dst, src, len);
	return true;
}
