/* The adaptive batcher's state (see batch.h). */
#include "app/batch.h"

#include <stdlib.h>
#include <string.h>

#include "app/jsonw.h"

int batch_pool_init(struct batch_pool *p, uint32_t max_bytes, uint32_t limit)
{
	p->free = NULL;
	p->max_bytes = max_bytes;
	p->allocated = 0;
	p->nfree = 0;
	p->limit = limit;
	return 0;
}

/* Buffers still held by batches are the batches' owners' to clear first
 * (the app clears every conn's batch at on_close). */
void batch_pool_destroy(struct batch_pool *p)
{
	while (p->free) {
		struct batch_buf *bb = p->free;

		p->free = bb->next_free;
		free(bb);
		p->allocated--;
	}
	p->nfree = 0;
}

/* Buffers are recycled through a short free list, so a steady flow of held
 * batches allocates nothing; only a burst past BATCH_POOL_KEEP holders at
 * once mallocs, and gives the memory back when it is over. */
static struct batch_buf *pool_get(struct batch_pool *p)
{
	struct batch_buf *bb = p->free;

	if (likely(bb != NULL)) {
		p->free = bb->next_free;
		p->nfree--;
		return bb;
	}
	if (p->allocated >= p->limit)
		return NULL;
	bb = malloc(sizeof(*bb) + p->max_bytes);
	if (!bb)
		return NULL;
	p->allocated++;
	return bb;
}

enum batch_add_result batch_add(struct batch *b, struct batch_pool *p, const char *mid,
				uint32_t seq, const uint8_t *text, uint32_t len,
				uint64_t created_ns, uint64_t arrival_ns)
{
	size_t w;

	if (b->count > 0) {
		/* One event covers a contiguous run of one message's tokens. */
		if (seq != b->last_seq + 1 || strncmp(b->mid, mid, CHAN_ID_LEN) != 0 ||
		    b->count >= BATCH_MAX_TOKENS)
			return BATCH_FLUSH_FIRST;
	} else if (!b->buf) {
		b->buf = pool_get(p);
		if (unlikely(!b->buf))
			return BATCH_NOMEM;
	}
	w = jsonw_escape(b->buf->text + b->len, p->max_bytes - b->len, text, len);
	if (w == JSONW_NOSPACE) {
		if (b->count > 0)
			return BATCH_FLUSH_FIRST;
		batch_clear(b, p);
		return BATCH_TOO_BIG;
	}
	if (b->count == 0) {
		memcpy(b->mid, mid, CHAN_ID_LEN);
		b->first_seq = seq;
	}
	b->last_arrival_ns = arrival_ns;
	b->buf->toks[b->count].arrival_ns = arrival_ns;
	b->buf->toks[b->count].created_ns = created_ns;
	b->count++;
	b->last_seq = seq;
	b->len += (uint32_t)w;
	return BATCH_ADDED;
}

void batch_clear(struct batch *b, struct batch_pool *p)
{
	if (b->buf && p->nfree < BATCH_POOL_KEEP) {
		b->buf->next_free = p->free;
		p->free = b->buf;
		p->nfree++;
	} else if (b->buf) {
		free(b->buf);
		p->allocated--;
	}
	b->buf = NULL;
	b->len = 0;
	b->count = 0;
}
