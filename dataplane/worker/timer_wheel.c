/*
 * Timer wheel (see timer_wheel.h). A timer with tick e sits at the level of
 * the highest base-64 digit in which e differs from the wheel's current tick,
 * in the slot named by e's digit there. When the current tick reaches a
 * multiple of 64^L, the level-L slot for that digit is cascaded: its timers
 * are placed again and land on finer levels. Level 0 slots hold timers of the
 * current 64 ms block and are run when the tick reaches them.
 */
#include "worker/timer_wheel.h"

#include <stddef.h>

#define NS_PER_TICK 1000000ull
#define TW_MASK (TW_SLOTS - 1u)
#define TW_SPAN_BITS (TW_BITS * TW_LEVELS)

static inline uint64_t tick_ceil(uint64_t ns)
{
	return ns / NS_PER_TICK + (ns % NS_PER_TICK != 0);
}

void tw_init(struct tw_timer *t, tw_cb cb, void *arg)
{
	list_init(&t->link);
	t->deadline_ns = 0;
	t->cb = cb;
	t->arg = arg;
	t->armed = 0;
	t->_pad = 0;
}

void tw_wheel_init(struct tw_wheel *w, uint64_t now_ns)
{
	w->tick = now_ns / NS_PER_TICK;
	w->count = 0;
	w->running = false;
	for (uint32_t l = 0; l < TW_LEVELS; l++) {
		w->occupied[l] = 0;
		for (uint32_t s = 0; s < TW_SLOTS; s++)
			list_init(&w->slots[l][s]);
	}
	list_init(&w->overflow);
	list_init(&w->due);
}

/* Puts an armed, unlinked timer on the list its deadline belongs to now. */
static void place(struct tw_wheel *w, struct tw_timer *t)
{
	uint64_t e = tick_ceil(t->deadline_ns);
	if (e < w->tick) {
		if (!w->running) {
			list_add_tail(&w->due, &t->link);
			return;
		}
		e = w->tick;
	}
	uint64_t diff = e ^ w->tick;
	uint32_t level = diff ? (uint32_t)(63 - __builtin_clzll(diff)) / TW_BITS : 0;
	if (unlikely(level >= TW_LEVELS)) {
		list_add_tail(&w->overflow, &t->link);
		return;
	}
	uint32_t slot = (uint32_t)(e >> (level * TW_BITS)) & TW_MASK;
	list_add_tail(&w->slots[level][slot], &t->link);
	w->occupied[level] |= 1ull << slot;
}

/* Unlinks t; when that empties a wheel slot, clears the slot's occupied bit
 * so tw_next_ns() does not wake the worker for nothing. */
static void unlink_timer(struct tw_wheel *w, struct tw_timer *t)
{
	struct list_node *n = t->link.next;
	list_del(&t->link);
	uintptr_t first = (uintptr_t)&w->slots[0][0];
	uintptr_t p = (uintptr_t)n;
	if (list_empty(n) && p >= first && p < first + sizeof(w->slots)) {
		size_t idx = (p - first) / sizeof(struct list_node);
		w->occupied[idx / TW_SLOTS] &= ~(1ull << (idx % TW_SLOTS));
	}
}

void tw_arm(struct tw_wheel *w, struct tw_timer *t, uint64_t deadline_ns)
{
	if (t->armed)
		unlink_timer(w, t);
	else
		w->count++;
	t->armed = 1;
	t->deadline_ns = deadline_ns;
	place(w, t);
}

void tw_cancel(struct tw_wheel *w, struct tw_timer *t)
{
	if (!t->armed)
		return;
	unlink_timer(w, t);
	t->armed = 0;
	w->count--;
}

/* Places again every timer of one list (a cascading slot or the overflow). */
static void replace_all(struct tw_wheel *w, struct list_node *head)
{
	struct list_node local;
	list_init(&local);
	list_splice_tail(&local, head);
	while (!list_empty(&local)) {
		struct tw_timer *t = list_entry(local.next, struct tw_timer, link);
		list_del(&t->link);
		place(w, t);
	}
}

/* The tick to look at after `t`: skips blocks in which no level can hold a
 * timer, so idle wheels and far deadlines cost a few steps, not one per ms. */
static uint64_t next_tick(const struct tw_wheel *w, uint64_t t, uint64_t now_tick)
{
	if (w->occupied[0])
		return t + 1;
	for (uint32_t l = 1; l < TW_LEVELS; l++) {
		if (w->occupied[l])
			return ((t >> (l * TW_BITS)) + 1) << (l * TW_BITS);
	}
	if (!list_empty(&w->overflow))
		return ((t >> TW_SPAN_BITS) + 1) << TW_SPAN_BITS;
	return now_tick + 1;
}

uint32_t tw_run(struct tw_wheel *w, uint64_t now_ns)
{
	uint64_t now_tick = now_ns / NS_PER_TICK;
	while (w->tick <= now_tick) {
		uint64_t t = w->tick;
		if ((t & ((1ull << TW_SPAN_BITS) - 1)) == 0)
			replace_all(w, &w->overflow);
		for (uint32_t l = TW_LEVELS - 1; l >= 1; l--) {
			uint32_t shift = l * TW_BITS;
			if ((t & ((1ull << shift) - 1)) != 0)
				continue;
			uint32_t slot = (uint32_t)(t >> shift) & TW_MASK;
			if (w->occupied[l] & (1ull << slot)) {
				w->occupied[l] &= ~(1ull << slot);
				replace_all(w, &w->slots[l][slot]);
			}
		}
		uint32_t s = (uint32_t)t & TW_MASK;
		if (w->occupied[0] & (1ull << s)) {
			w->occupied[0] &= ~(1ull << s);
			list_splice_tail(&w->due, &w->slots[0][s]);
		}
		uint64_t nt = next_tick(w, t, now_tick);
		w->tick = nt < now_tick + 1 ? nt : now_tick + 1;
	}

	/* Callbacks only now: whatever they arm lands at tick > now_tick. */
	uint32_t ran = 0;
	w->running = true;
	while (!list_empty(&w->due)) {
		struct tw_timer *t = list_entry(w->due.next, struct tw_timer, link);
		list_del(&t->link);
		t->armed = 0;
		w->count--;
		ran++;
		t->cb(t->arg, t);
	}
	w->running = false;
	return ran;
}

uint64_t tw_next_ns(const struct tw_wheel *w)
{
	if (w->count == 0)
		return UINT64_MAX;
	if (!list_empty(&w->due))
		return 0;
	uint64_t t = w->tick;
	uint64_t m0 = w->occupied[0] & (~0ull << (t & TW_MASK));
	if (m0)
		return ((t & ~(uint64_t)TW_MASK) | (uint64_t)__builtin_ctzll(m0)) * NS_PER_TICK;
	for (uint32_t l = 1; l < TW_LEVELS; l++) {
		uint32_t shift = l * TW_BITS;
		uint32_t digit = (uint32_t)(t >> shift) & TW_MASK;
		if (digit == TW_MASK)
			continue;
		uint64_t m = w->occupied[l] & (~0ull << (digit + 1));
		if (m) {
			uint64_t block = (t >> (shift + TW_BITS)) << (shift + TW_BITS);
			return (block | ((uint64_t)__builtin_ctzll(m) << shift)) * NS_PER_TICK;
		}
	}
	/* Only overflow timers (or stale bits): the next top-level wrap. */
	return (((t >> TW_SPAN_BITS) + 1) << TW_SPAN_BITS) * NS_PER_TICK;
}
