/*
 * A binary min-heap of deadlines. Nodes are intrusive: the owner embeds a
 * struct th_node and the heap stores pointers, so scheduling the next token of
 * an answer never allocates once the heap has grown to its working size.
 * Single-threaded (the control loop owns it).
 */
#ifndef CONTROL_TIMER_HEAP_H
#define CONTROL_TIMER_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TH_NONE UINT32_MAX

struct th_node {
	uint64_t deadline_ns;
	uint32_t idx; /* position in the heap, TH_NONE when not queued */
};

struct timer_heap {
	struct th_node **v;
	uint32_t n;
	uint32_t cap;
};

int th_init(struct timer_heap *h, uint32_t cap);
void th_free(struct timer_heap *h);

static inline void th_node_init(struct th_node *t)
{
	t->deadline_ns = 0;
	t->idx = TH_NONE;
}

static inline bool th_queued(const struct th_node *t)
{
	return t->idx != TH_NONE;
}

/* Queues t at deadline_ns, or moves it there when already queued.
 * Returns -1 only when growing the heap fails. */
int th_schedule(struct timer_heap *h, struct th_node *t, uint64_t deadline_ns);
/* Unqueues t; a no-op when t is not queued. */
void th_cancel(struct timer_heap *h, struct th_node *t);

/* The earliest node, or NULL when empty. */
static inline struct th_node *th_peek(const struct timer_heap *h)
{
	return h->n ? h->v[0] : NULL;
}

/* Removes and returns the earliest node whose deadline is <= now_ns, or NULL. */
struct th_node *th_pop_due(struct timer_heap *h, uint64_t now_ns);

#endif
