/*
 * The adaptive batcher's per-connection state and its decisions, kept free of
 * I/O so the rules can be tested under a fake clock (docs/batching.md).
 *
 * A struct batch holds the tokens of one message waiting to be framed: their
 * JSON-escaped text (escaped by the caller), concatenated, in a buffer of max_bytes borrowed from the
 * worker's struct batch_pool only while tokens are held, plus each held
 * token's arrival and creation times for the delay histograms.
 *
 * Threading: one pool and its batches belong to one worker thread.
 */
#ifndef SLUICE_APP_BATCH_H
#define SLUICE_APP_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/chan_proto.h"
#include "sluice/common.h"

/* Held tokens per batch; reaching it flushes like reaching max_bytes. */
#define BATCH_MAX_TOKENS 256u

struct batch_tok {
	uint64_t arrival_ns; /* when the token reached the worker */
	uint64_t created_ns; /* when the backend produced it */
};

/* One pool buffer: the held tokens' times and their escaped text. Two
 * sizes: a batch starts in a small one (most hold a token or a few) and
 * moves to a large one (BATCH_MAX_TOKENS times, max_bytes of text) only when
 * it outgrows it, so a burst in which every subscriber holds a little costs
 * little memory. */
#define BATCH_SMALL_TOKENS 16u
#define BATCH_SMALL_TEXT 256u

struct batch_buf {
	struct batch_buf *next_free;
	bool large;              /* of the large size */
	uint32_t tok_cap;        /* token times it holds */
	uint32_t text_cap;       /* escaped text bytes it holds */
	struct batch_tok *toks;  /* tok_cap entries, right after this header */
	char *text;              /* text_cap bytes, after the times */
};

/* Free buffers of each size the pool keeps for the next holder; past that a
 * returned buffer goes back to malloc, so a burst that held many batches at
 * once does not pin their memory once it is over. */
#define BATCH_POOL_KEEP 32u

struct batch_pool_class {
	struct batch_buf *free;
	uint32_t nfree;     /* on the free list (at most BATCH_POOL_KEEP) */
	uint32_t out;       /* that exist now: held or free */
	uint32_t tok_cap, text_cap;
};

struct batch_pool {
	struct batch_pool_class small, large;
	uint32_t max_bytes;
	uint32_t allocated; /* buffers of both sizes that exist now */
	uint32_t limit;     /* most buffers of each size that may exist (one per conn) */
};

struct batch_policy {
	bool off;              /* mode=off: every token is its own frame */
	uint64_t max_delay_ns;
	uint32_t max_bytes;
};

struct batch {
	struct batch_buf *buf; /* NULL while nothing is held */
	uint64_t last_arrival_ns; /* the conn's last token, held or not (kept across clears; 0: none yet) */
	uint32_t len;          /* escaped text bytes held */
	uint32_t count;        /* tokens held */
	uint32_t first_seq, last_seq;
	char mid[CHAN_ID_LEN];
};

enum batch_add_result {
	BATCH_ADDED = 0,
	BATCH_FLUSH_FIRST, /* another message, a seq gap, or no room: flush, then add again */
	BATCH_TOO_BIG,     /* the token alone exceeds max_bytes once escaped: frame it alone */
	BATCH_NOMEM,       /* no pool buffer could be had */
};

enum batch_decision { BATCH_HOLD = 0, BATCH_FLUSH = 1 };

/* The pool hands out at most `limit` buffers of each size, allocating them
 * on first need. Returns 0 (nothing is allocated up front). */
int batch_pool_init(struct batch_pool *p, uint32_t max_bytes, uint32_t limit);
void batch_pool_destroy(struct batch_pool *p);

static inline void batch_init(struct batch *b)
{
	b->buf = NULL;
	b->last_arrival_ns = 0;
	b->len = 0;
	b->count = 0;
	b->first_seq = 0;
	b->last_seq = 0;
	b->mid[0] = '\0';
}

/* Appends one token, its text JSON-escaped already (the fan-out escapes a
 * token once for every subscriber that holds it). */
enum batch_add_result batch_add(struct batch *b, struct batch_pool *p, const char *mid,
				uint32_t seq, const char *esc, size_t esc_len,
				uint64_t created_ns, uint64_t arrival_ns);

/* A token framed without the batch (mode off, or a slow stream): the
 * stream's pace is still known for the next one. */
static inline void batch_note_arrival(struct batch *b, uint64_t arrival_ns)
{
	b->last_arrival_ns = arrival_ns;
}

/*
 * A slow stream: the conn's previous token came max_delay or more before this
 * one, so holding this token could not coalesce it with the next, only delay
 * it (and cost a timer). Such a token is framed at once whenever the conn can
 * take it, even on a busy turn. Unknown pace (the conn's first token) is not
 * slow: it waits like any other.
 */
static inline bool batch_stream_slow(const struct batch *b, const struct batch_policy *pol,
				     uint64_t arrival_ns)
{
	return b->count == 0 && b->last_arrival_ns != 0 &&
	       arrival_ns - b->last_arrival_ns >= pol->max_delay_ns;
}

/* Empties the batch after its tokens were framed; the buffer goes back to the pool. */
void batch_clear(struct batch *b, struct batch_pool *p);

/*
 * End-of-turn decision for a batch holding tokens: flush now when the worker
 * is not busy and the connection can take the bytes at once (`tx_idle`), when
 * max_bytes or BATCH_MAX_TOKENS is reached, when the oldest token has waited
 * max_delay, or always in mode=off. Otherwise hold until batch_deadline().
 */
static inline enum batch_decision batch_decide(const struct batch *b,
					       const struct batch_policy *pol,
					       uint64_t now_ns, bool busy, bool tx_idle)
{
	if (b->count == 0)
		return BATCH_HOLD;
	if (pol->off || (!busy && tx_idle))
		return BATCH_FLUSH;
	if (b->len >= pol->max_bytes || b->count >= BATCH_MAX_TOKENS)
		return BATCH_FLUSH;
	if (now_ns - b->buf->toks[0].arrival_ns >= pol->max_delay_ns)
		return BATCH_FLUSH;
	return BATCH_HOLD;
}

/* When the oldest held token reaches max_delay. */
static inline uint64_t batch_deadline(const struct batch *b, const struct batch_policy *pol)
{
	return b->buf->toks[0].arrival_ns + pol->max_delay_ns;
}

#endif
