/* The adaptive batcher's state (see batch.h). */
#include "app/batch.h"

#include <stdlib.h>
#include <string.h>


static void class_init(struct batch_pool_class *k, uint32_t tok_cap, uint32_t text_cap)
{
	k->free = NULL;
	k->nfree = 0;
	k->out = 0;
	k->tok_cap = tok_cap;
	k->text_cap = text_cap;
}

int batch_pool_init(struct batch_pool *p, uint32_t max_bytes, uint32_t limit)
{
	p->max_bytes = max_bytes;
	p->allocated = 0;
	p->limit = limit;
	class_init(&p->small, BATCH_SMALL_TOKENS,
		   max_bytes < BATCH_SMALL_TEXT ? max_bytes : BATCH_SMALL_TEXT);
	class_init(&p->large, BATCH_MAX_TOKENS, max_bytes);
	return 0;
}

static void class_drain(struct batch_pool *p, struct batch_pool_class *k)
{
	while (k->free) {
		struct batch_buf *bb = k->free;

		k->free = bb->next_free;
		free(bb);
		k->out--;
		p->allocated--;
	}
	k->nfree = 0;
}

/* Buffers still held by batches are their owners' to clear first (the app
 * clears every conn's batch before it destroys the pool). */
void batch_pool_destroy(struct batch_pool *p)
{
	class_drain(p, &p->small);
	class_drain(p, &p->large);
}

/* Buffers are recycled through a short free list per size, so a steady flow
 * of held batches allocates nothing; only a burst past BATCH_POOL_KEEP
 * holders at once mallocs, and gives the memory back when it is over. */
static struct batch_buf *pool_get(struct batch_pool *p, struct batch_pool_class *k)
{
	struct batch_buf *bb = k->free;

	if (likely(bb != NULL)) {
		k->free = bb->next_free;
		k->nfree--;
		return bb;
	}
	if (k->out >= p->limit)
		return NULL;
	bb = malloc(sizeof(*bb) + (size_t)k->tok_cap * sizeof(struct batch_tok) + k->text_cap);
	if (!bb)
		return NULL;
	bb->large = k == &p->large;
	bb->tok_cap = k->tok_cap;
	bb->text_cap = k->text_cap;
	bb->toks = (struct batch_tok *)(void *)(bb + 1);
	bb->text = (char *)(bb->toks + k->tok_cap);
	k->out++;
	p->allocated++;
	return bb;
}

static void pool_put(struct batch_pool *p, struct batch_buf *bb)
{
	struct batch_pool_class *k = bb->large ? &p->large : &p->small;

	if (k->nfree < BATCH_POOL_KEEP) {
		bb->next_free = k->free;
		k->free = bb;
		k->nfree++;
		return;
	}
	free(bb);
	k->out--;
	p->allocated--;
}

/* Moves a batch from its small buffer to a large one; false when none can
 * be had (the caller flushes what is held and starts again). */
static bool grow(struct batch *b, struct batch_pool *p)
{
	struct batch_buf *big;

	if (b->buf->large)
		return false;
	big = pool_get(p, &p->large);
	if (!big)
		return false;
	memcpy(big->toks, b->buf->toks, (size_t)b->count * sizeof(struct batch_tok));
	memcpy(big->text, b->buf->text, b->len);
	pool_put(p, b->buf);
	b->buf = big;
	return true;
}

enum batch_add_result batch_add(struct batch *b, struct batch_pool *p, const char *mid,
				uint32_t seq, const char *esc, size_t esc_len,
				uint64_t created_ns, uint64_t arrival_ns)
{
	bool fits;

	if (b->count > 0) {
		/* One event covers a contiguous run of one message's tokens. */
		if (seq != b->last_seq + 1 || strncmp(b->mid, mid, CHAN_ID_LEN) != 0 ||
		    b->count >= BATCH_MAX_TOKENS)
			return BATCH_FLUSH_FIRST;
		if (b->count >= b->buf->tok_cap && !grow(b, p))
			return BATCH_FLUSH_FIRST;
	} else if (!b->buf) {
		b->buf = pool_get(p, &p->small);
		if (unlikely(!b->buf))
			return BATCH_NOMEM;
	}
	for (;;) {
		fits = esc_len <= b->buf->text_cap - b->len;
		if (fits || b->buf->text_cap >= p->large.text_cap || !grow(b, p))
			break;
	}
	if (!fits) {
		if (b->count > 0)
			return BATCH_FLUSH_FIRST;
		batch_clear(b, p);
		return BATCH_TOO_BIG;
	}
	if (b->count == 0) {
		memcpy(b->mid, mid, CHAN_ID_LEN);
		b->first_seq = seq;
	}
	memcpy(b->buf->text + b->len, esc, esc_len);
	b->last_arrival_ns = arrival_ns;
	b->buf->toks[b->count].arrival_ns = arrival_ns;
	b->buf->toks[b->count].created_ns = created_ns;
	b->count++;
	b->last_seq = seq;
	b->len += (uint32_t)esc_len;
	return BATCH_ADDED;
}

void batch_clear(struct batch *b, struct batch_pool *p)
{
	if (b->buf)
		pool_put(p, b->buf);
	b->buf = NULL;
	b->len = 0;
	b->count = 0;
}
