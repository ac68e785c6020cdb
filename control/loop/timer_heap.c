#include "loop/timer_heap.h"

#include <stdlib.h>

int th_init(struct timer_heap *h, uint32_t cap)
{
	h->n = 0;
	h->cap = cap ? cap : 16;
	h->v = calloc(h->cap, sizeof(*h->v));
	return h->v ? 0 : -1;
}

void th_free(struct timer_heap *h)
{
	for (uint32_t i = 0; i < h->n; i++)
		h->v[i]->idx = TH_NONE;
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}

static inline void th_set(struct timer_heap *h, uint32_t i, struct th_node *t)
{
	h->v[i] = t;
	t->idx = i;
}

static void th_up(struct timer_heap *h, uint32_t i)
{
	struct th_node *t = h->v[i];
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (h->v[p]->deadline_ns <= t->deadline_ns)
			break;
		th_set(h, i, h->v[p]);
		i = p;
	}
	th_set(h, i, t);
}

static void th_down(struct timer_heap *h, uint32_t i)
{
	struct th_node *t = h->v[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->deadline_ns < h->v[c]->deadline_ns)
			c++;
		if (t->deadline_ns <= h->v[c]->deadline_ns)
			break;
		th_set(h, i, h->v[c]);
		i = c;
	}
	th_set(h, i, t);
}

int th_schedule(struct timer_heap *h, struct th_node *t, uint64_t deadline_ns)
{
	if (th_queued(t)) {
		uint64_t old = t->deadline_ns;
		t->deadline_ns = deadline_ns;
		if (deadline_ns < old)
			th_up(h, t->idx);
		else
			th_down(h, t->idx);
		return 0;
	}
	if (h->n == h->cap) {
		if (h->cap > UINT32_MAX / 2)
			return -1;
		struct th_node **nv = realloc(h->v, (size_t)h->cap * 2 * sizeof(*nv));
		if (!nv)
			return -1;
		h->v = nv;
		h->cap *= 2;
	}
	t->deadline_ns = deadline_ns;
	th_set(h, h->n++, t);
	th_up(h, t->idx);
	return 0;
}

void th_cancel(struct timer_heap *h, struct th_node *t)
{
	if (!th_queued(t))
		return;
	uint32_t i = t->idx;
	t->idx = TH_NONE;
	h->n--;
	if (i == h->n)
		return;
	/* Move the last node into the hole and restore order in whichever
	 * direction it violates. */
	struct th_node *moved = h->v[h->n];
	th_set(h, i, moved);
	th_up(h, i);
	if (moved->idx == i)
		th_down(h, i);
}

struct th_node *th_pop_due(struct timer_heap *h, uint64_t now_ns)
{
	if (!h->n || h->v[0]->deadline_ns > now_ns)
		return NULL;
	struct th_node *t = h->v[0];
	th_cancel(h, t);
	return t;
}
