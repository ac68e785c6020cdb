/*
 * Hierarchical timer wheel with a 1 ms tick, one per worker. Timers are
 * intrusive (struct tw_timer lives in the object that owns it). Six levels of 64 slots cover 64^6 ms (about
 * two years); a deadline beyond that waits on an overflow list that is
 * re-sorted every 64^6 ms. Arm and cancel are O(1); a timer is cascaded to a
 * finer level at most once per level on its way down.
 *
 * Ticks are absolute: tick = ns / 1e6 on the sluice_now_ns() clock. A timer
 * for deadline D goes to tick ceil(D / 1 ms) and fires on the first tw_run()
 * whose now_ns lies in that tick or later, so never before D and at most 1 ms
 * after it (plus however late tw_run() is called).
 *
 * tw_run() first collects every due timer and only then runs callbacks, so a
 * timer armed from a callback fires on a later tw_run() even when its deadline
 * has passed, and a callback may cancel or re-arm any timer, itself included.
 *
 * Threading: a wheel belongs to one thread.
 */
#ifndef SLUICE_TIMER_WHEEL_H
#define SLUICE_TIMER_WHEEL_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/list.h"

struct tw_timer;
typedef void (*tw_cb)(void *arg, struct tw_timer *t);

/* Intrusive timer: embed it in the owning object. Not armed after tw_init. */
struct tw_timer {
	struct list_node link; /* on a wheel slot, the overflow or the due list */
	uint64_t deadline_ns;
	tw_cb cb;
	void *arg;
	uint32_t armed;
	uint32_t _pad;
};

#define TW_BITS 6u
#define TW_SLOTS (1u << TW_BITS)
#define TW_LEVELS 6u

struct tw_wheel {
	uint64_t tick;                 /* next tick to process; all earlier ones are done */
	uint64_t occupied[TW_LEVELS];  /* bit s set: slot s of that level may hold timers */
	uint32_t count;                /* timers armed (in the wheel or due) */
	bool running;                  /* tw_run() is calling callbacks */
	struct list_node slots[TW_LEVELS][TW_SLOTS]; /* lists of struct tw_timer */
	struct list_node overflow;     /* deadlines beyond the top level */
	struct list_node due;          /* collected by tw_run, callbacks pending */
};

void tw_init(struct tw_timer *t, tw_cb cb, void *arg);
void tw_wheel_init(struct tw_wheel *w, uint64_t now_ns);
/* Arms or re-arms t. A deadline in a tick tw_run() has already passed fires
 * on the next tw_run(), or, when armed from a callback, on the one after. */
void tw_arm(struct tw_wheel *w, struct tw_timer *t, uint64_t deadline_ns);
/* Disarms t; harmless when t is not armed. */
void tw_cancel(struct tw_wheel *w, struct tw_timer *t);
/* Runs the callbacks of every timer due at now_ns; returns how many ran. */
uint32_t tw_run(struct tw_wheel *w, uint64_t now_ns);
/*
 * A time no later than the earliest armed deadline (exact for deadlines less
 * than 64 ms ahead, a lower bound otherwise: waking there lets tw_run()
 * cascade), or UINT64_MAX when nothing is armed.
 */
uint64_t tw_next_ns(const struct tw_wheel *w);

static inline uint32_t tw_count(const struct tw_wheel *w)
{
	return w->count;
}

#endif
