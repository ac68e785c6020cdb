/*
 * The kernel transport's send-queue memory: chunks from free lists, and the
 * turn's send arena that holds the bytes of connections with nothing else
 * queued end to end (tp_kernel.h says why).
 */
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"
#include "transport/tp_kernel_int.h"

/* ---- send-queue chunks ----------------------------------------------------- */

/* A chunk of at least min bytes: small when `small` and min fits, else full
 * size (or exactly min beyond that), from the free lists when possible. */
struct chunk *ktq_chunk_get(struct ktp *t, size_t min, bool small)
{
	struct chunk *k;
	size_t cap;
	if (small && min <= TP_KERNEL_SMALL_CHUNK) {
		cap = TP_KERNEL_SMALL_CHUNK;
		k = t->free_small;
		if (k) {
			t->free_small = k->next;
			t->nfree_small--;
		}
	} else {
		cap = min <= TP_KERNEL_CHUNK ? TP_KERNEL_CHUNK : min;
		k = cap == TP_KERNEL_CHUNK ? t->free_chunks : NULL;
		if (k) {
			t->free_chunks = k->next;
			t->nfree--;
		}
	}
	if (!k) {
		if (cap > UINT32_MAX)
			return NULL;
		k = malloc(sizeof(*k) + cap);
		if (!k)
			return NULL;
		k->cap = (uint32_t)cap;
		t->nchunks++;
	}
	k->next = NULL;
	k->head = k->tail = 0;
	k->in_arena = 0;
	return k;
}

void ktq_chunk_put(struct ktp *t, struct chunk *k)
{
	if (ktq_in_arena(k))
		return; /* the arena starts over as a whole */
	if (k->cap == TP_KERNEL_CHUNK && t->nfree < FREE_CHUNKS_MAX) {
		k->next = t->free_chunks;
		t->free_chunks = k;
		t->nfree++;
		return;
	}
	if (k->cap == TP_KERNEL_SMALL_CHUNK && t->nfree_small < FREE_SMALL_MAX) {
		k->next = t->free_small;
		t->free_small = k;
		t->nfree_small++;
		return;
	}
	free(k);
	t->nchunks--;
}

void ktq_release(struct ktp *t, struct tp_conn *c)
{
	while (c->txh) {
		struct chunk *k = c->txh;
		c->txh = k->next;
		ktq_chunk_put(t, k);
	}
	c->txt = NULL;
	c->tx_queued = 0;
	if (c->flags & KC_ARENA) {
		t->arena_conns[c->arena_idx] = NULL;
		c->flags &= ~(uint32_t)KC_ARENA;
	}
}

/* ---- the send arena -------------------------------------------------------- */

/* The arena is full in the middle of a turn: carving goes on in a new
 * segment of twice its size (at most a few mallocs per turn, while the
 * turn outgrows every arena so far, never one per connection). False at
 * TP_KERNEL_ARENA_MAX or out of memory: the turn's rest goes to chunks. */
static bool arena_grow(struct ktp *t)
{
	if (t->arena_cap >= TP_KERNEL_ARENA_MAX || t->narena_prev == ARENA_SEGS_MAX)
		return false;
	uint8_t *p = malloc((size_t)t->arena_cap * 2);
	if (!p)
		return false;
	t->arena_prev[t->narena_prev++] = t->arena;
	t->arena = p;
	t->arena_cap *= 2;
	t->arena_used = 0;
	t->arena_top = NULL;
	return true;
}

/*
 * A chunk from the arena for c, with room for at least min bytes: only for a
 * connection that is not waiting for EPOLLOUT and whose queue is empty or
 * ends in arena chunks (so the arena never holds bytes behind a chunk that
 * outlives the turn), and only while it stays small. NULL: use a chunk.
 */
struct chunk *ktq_arena_get(struct ktp *t, struct tp_conn *c, size_t min)
{
	if ((c->flags & KC_BLOCKED) || (c->txt && !ktq_in_arena(c->txt)) ||
	    c->tx_queued + min > TP_KERNEL_ARENA_CONN_MAX)
		return NULL;
	if (!t->arena) {
		t->arena = malloc(TP_KERNEL_ARENA_MIN);
		if (!t->arena)
			return NULL;
		t->arena_cap = TP_KERNEL_ARENA_MIN;
	}
	if (!(c->flags & KC_ARENA) && t->narena_conns == t->arena_conns_cap) {
		uint32_t n = t->arena_conns_cap ? t->arena_conns_cap * 2 : 1024;
		struct tp_conn **p = realloc(t->arena_conns, n * sizeof(*p));
		if (!p)
			return NULL;
		t->arena_conns = p;
		t->arena_conns_cap = n;
	}
	/* The top chunk stops growing where its bytes end. */
	if (t->arena_top) {
		t->arena_top->cap = t->arena_top->tail;
		t->arena_used = (uint32_t)((uint8_t *)t->arena_top->data + t->arena_top->tail - t->arena);
		t->arena_used = (t->arena_used + 7u) & ~7u;
		t->arena_top = NULL;
	}
	if ((size_t)t->arena_cap - t->arena_used < sizeof(struct chunk) + min && !arena_grow(t)) {
		t->arena_overflowed = true;
		return NULL;
	}
	struct chunk *k = (struct chunk *)(void *)(t->arena + t->arena_used);
	k->next = NULL;
	k->head = k->tail = 0;
	k->in_arena = 1;
	k->cap = t->arena_cap - t->arena_used - (uint32_t)sizeof(struct chunk);
	if (k->cap > TP_KERNEL_ARENA_CONN_MAX - c->tx_queued)
		k->cap = (uint32_t)(TP_KERNEL_ARENA_CONN_MAX - c->tx_queued);
	t->arena_top = k;
	if (!(c->flags & KC_ARENA)) {
		c->arena_idx = t->narena_conns;
		t->arena_conns[t->narena_conns++] = c;
		c->flags |= KC_ARENA;
	}
	return k;
}

/* Moves what c could not send out of the arena into chunks of its own, in
 * order. False when memory ran out (the caller resets c). */
static bool arena_evict(struct ktp *t, struct tp_conn *c)
{
	struct chunk **link = &c->txh, *last = NULL;
	while (*link) {
		struct chunk *k = *link;
		if (!ktq_in_arena(k)) {
			last = k;
			link = &k->next;
			continue;
		}
		uint32_t n = k->tail - k->head;
		struct chunk *h = n ? ktq_chunk_get(t, n, n <= TP_KERNEL_SMALL_CHUNK) : NULL;
		if (n && !h)
			return false;
		if (!h) {
			*link = k->next;
			continue;
		}
		memcpy(h->data, k->data + k->head, n);
		h->tail = n;
		h->next = k->next;
		*link = h;
		last = h;
		link = &h->next;
	}
	c->txt = last;
	return true;
}

/* After a flush: the arena's leftovers move to chunks, the segments the
 * turn filled are freed, and it starts over in the last (larger, while
 * empty, if even that overflowed). */
void ktq_arena_reset(struct ktp *t)
{
	for (uint32_t i = 0; i < t->narena_conns; i++) {
		struct tp_conn *c = t->arena_conns[i];
		if (!c)
			continue;
		c->flags &= ~(uint32_t)KC_ARENA;
		if (!arena_evict(t, c))
			kt_conn_finish(c, true);
	}
	t->narena_conns = 0;
	t->arena_used = 0;
	t->arena_top = NULL;
	while (t->narena_prev > 0)
		free(t->arena_prev[--t->narena_prev]);
	if (t->arena_overflowed && t->arena_cap < TP_KERNEL_ARENA_MAX) {
		uint8_t *p = malloc((size_t)t->arena_cap * 2);
		if (p) {
			free(t->arena);
			t->arena = p;
			t->arena_cap *= 2;
		}
	}
	t->arena_overflowed = false;
}
