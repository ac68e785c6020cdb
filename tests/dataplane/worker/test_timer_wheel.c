/* Unit tests of the timer wheel, driven by a synthetic clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker/timer_wheel.h"

#define MS 1000000ull
#define HOUR (3600ull * 1000 * MS)

/* Base time far from zero and not tick-aligned, like a real monotonic clock. */
#define T0 (123456789ull * MS + 4321)

struct rec {
	uint64_t fired_at[64];
	int order[64];
	int n;
};

struct tmr {
	struct tw_timer t;
	struct rec *rec;
	int id;
	uint64_t *now;
	/* Actions run from the callback. */
	struct tw_wheel *wheel;
	struct tw_timer *cancel_other;
	uint64_t rearm_delta;
};

static void on_fire(void *arg, struct tw_timer *t)
{
	struct tmr *m = arg;
	assert_ptr_equal(&m->t, t);
	m->rec->fired_at[m->rec->n] = *m->now;
	m->rec->order[m->rec->n] = m->id;
	m->rec->n++;
	if (m->cancel_other)
		tw_cancel(m->wheel, m->cancel_other);
	if (m->rearm_delta) {
		uint64_t d = m->rearm_delta;
		m->rearm_delta = 0;
		tw_arm(m->wheel, &m->t, *m->now + d);
	}
}

static void tmr_init(struct tmr *m, struct tw_wheel *w, struct rec *r, int id, uint64_t *now)
{
	memset(m, 0, sizeof(*m));
	tw_init(&m->t, on_fire, m);
	m->rec = r;
	m->id = id;
	m->now = now;
	m->wheel = w;
}

/* Advances the clock in `step` increments up to `until`, running the wheel. */
static void advance(struct tw_wheel *w, uint64_t *now, uint64_t until, uint64_t step)
{
	while (*now < until) {
		*now += step;
		if (*now > until)
			*now = until;
		tw_run(w, *now);
	}
}

static void test_ordering(void **state)
{
	(void)state;
	static struct tw_wheel w;
	struct rec r = {0};
	uint64_t now = T0;
	tw_wheel_init(&w, now);
	/* Deadlines given out of order, some in one tick, across level 0/1. */
	static const uint64_t dl_ms[] = {50, 3, 700, 3, 64, 65, 1, 4000, 63, 200};
	enum { N = SLUICE_ARRAY_LEN(dl_ms) };
	struct tmr m[N];
	for (int i = 0; i < N; i++) {
		tmr_init(&m[i], &w, &r, i, &now);
		tw_arm(&w, &m[i].t, now + dl_ms[i] * MS);
	}
	assert_int_equal(tw_count(&w), N);
	advance(&w, &now, T0 + 5000 * MS, MS / 4);
	assert_int_equal(r.n, N);
	assert_int_equal(tw_count(&w), 0);
	for (int i = 0; i < N; i++) {
		uint64_t dl = T0 + dl_ms[r.order[i]] * MS;
		/* Never early, at most one tick (plus one step) late. */
		assert_true(r.fired_at[i] >= dl);
		assert_true(r.fired_at[i] <= dl + MS + MS / 4);
		if (i > 0)
			assert_true(dl_ms[r.order[i - 1]] <= dl_ms[r.order[i]]);
	}
	/* Same-tick timers keep arming order. */
	assert_int_equal(r.order[1], 1);
	assert_int_equal(r.order[2], 3);
}

static void test_far_deadlines(void **state)
{
	(void)state;
	static struct tw_wheel w;
	struct rec r = {0};
	uint64_t now = T0;
	tw_wheel_init(&w, now);
	static const uint64_t dl[] = {3 * HOUR + 17 * MS, HOUR, 26 * HOUR + 5, 400 * 24 * HOUR,
				      3 * 365 * 24 * HOUR + 999 * MS};
	enum { N = SLUICE_ARRAY_LEN(dl) };
	struct tmr m[N];
	for (int i = 0; i < N; i++) {
		tmr_init(&m[i], &w, &r, i, &now);
		tw_arm(&w, &m[i].t, T0 + dl[i]);
	}
	int expect[] = {1, 0, 2, 3, 4};
	for (int i = 0; i < N; i++) {
		uint64_t target = T0 + dl[expect[i]];
		/* The wheel may wake up to the start of the deadline's tick. */
		uint64_t target_tick = (target + MS - 1) / MS * MS;
		/* Jump near the deadline in big steps: nothing may fire early. */
		uint64_t next = tw_next_ns(&w);
		assert_true(next <= target_tick);
		while (now + 10 * MS < target) {
			uint64_t nx = tw_next_ns(&w);
			if (nx > target_tick)
				fail_msg("i=%d next %llu > target %llu (now %llu)", i, (unsigned long long)nx,
					 (unsigned long long)target, (unsigned long long)now);
			now = nx > now ? (nx < target - 10 * MS ? nx : target - 10 * MS) : now + MS;
			tw_run(&w, now);
			assert_int_equal(r.n, i);
		}
		advance(&w, &now, target + 2 * MS, MS / 2);
		assert_int_equal(r.n, i + 1);
		assert_int_equal(r.order[i], expect[i]);
		assert_true(r.fired_at[i] >= target);
		assert_true(r.fired_at[i] <= target + MS + MS / 2);
	}
	assert_int_equal(tw_next_ns(&w), UINT64_MAX);
}

static void test_cancel(void **state)
{
	(void)state;
	static struct tw_wheel w;
	struct rec r = {0};
	uint64_t now = T0;
	tw_wheel_init(&w, now);
	struct tmr a, b, c;
	tmr_init(&a, &w, &r, 1, &now);
	tmr_init(&b, &w, &r, 2, &now);
	tmr_init(&c, &w, &r, 3, &now);
	tw_arm(&w, &a.t, now + 10 * MS);
	tw_arm(&w, &b.t, now + 10 * MS);
	tw_arm(&w, &c.t, now + 2 * HOUR);
	tw_cancel(&w, &b.t);
	tw_cancel(&w, &b.t); /* twice is harmless */
	tw_cancel(&w, &c.t);
	assert_int_equal(tw_count(&w), 1);
	advance(&w, &now, T0 + 20 * MS, MS);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.order[0], 1);
	/* Nothing armed: no wake-up wanted. */
	assert_int_equal(tw_next_ns(&w), UINT64_MAX);
	advance(&w, &now, T0 + 3 * HOUR, 7 * MS);
	assert_int_equal(r.n, 1);

	/* A callback cancels a timer due in the same run, and one due later. */
	struct tmr d, e, f;
	tmr_init(&d, &w, &r, 4, &now);
	tmr_init(&e, &w, &r, 5, &now);
	tmr_init(&f, &w, &r, 6, &now);
	tw_arm(&w, &d.t, now + 5 * MS);
	tw_arm(&w, &e.t, now + 5 * MS);
	tw_arm(&w, &f.t, now + 500 * MS);
	d.cancel_other = &e.t;
	uint64_t base = now;
	advance(&w, &now, base + 10 * MS, 10 * MS); /* d and e due in one run */
	assert_int_equal(r.n, 2);
	assert_int_equal(r.order[1], 4);
	d.cancel_other = NULL;
	/* A callback cancelling itself after it fired, and cancelling f. */
	tw_arm(&w, &d.t, now + MS);
	d.cancel_other = &f.t;
	advance(&w, &now, base + 1000 * MS, MS);
	assert_int_equal(r.n, 3);
	assert_int_equal(tw_count(&w), 0);
}

static void test_rearm(void **state)
{
	(void)state;
	static struct tw_wheel w;
	struct rec r = {0};
	uint64_t now = T0;
	tw_wheel_init(&w, now);
	struct tmr a;
	tmr_init(&a, &w, &r, 1, &now);
	tw_arm(&w, &a.t, now + 100 * MS);
	/* Re-arm earlier, then later; only the last one counts. */
	tw_arm(&w, &a.t, now + 10 * MS);
	tw_arm(&w, &a.t, now + HOUR);
	assert_int_equal(tw_count(&w), 1);
	advance(&w, &now, T0 + 200 * MS, MS);
	assert_int_equal(r.n, 0);
	tw_arm(&w, &a.t, now + 30 * MS);
	advance(&w, &now, T0 + 300 * MS, MS);
	assert_int_equal(r.n, 1);
	assert_true(r.fired_at[0] >= T0 + 230 * MS);
	assert_true(r.fired_at[0] <= T0 + 232 * MS);
	/* A deadline in the past fires on the next run. */
	tw_arm(&w, &a.t, now - 50 * MS);
	assert_int_equal(tw_run(&w, now), 1);
	assert_int_equal(r.n, 2);
}

static void test_arm_from_callback(void **state)
{
	(void)state;
	static struct tw_wheel w;
	struct rec r = {0};
	uint64_t now = T0;
	tw_wheel_init(&w, now);
	struct tmr a;
	tmr_init(&a, &w, &r, 1, &now);
	/* Re-arms itself for "now": must not fire again within the same run. */
	a.rearm_delta = 1;
	tw_arm(&w, &a.t, now + 5 * MS);
	now += 6 * MS;
	assert_int_equal(tw_run(&w, now), 1);
	assert_int_equal(r.n, 1);
	assert_int_equal(tw_count(&w), 1);
	assert_true(tw_next_ns(&w) > now);
	now += MS;
	assert_int_equal(tw_run(&w, now), 1);
	assert_int_equal(r.n, 2);
	/* Re-armed far out from the callback: cascades correctly. */
	a.rearm_delta = 2 * HOUR;
	tw_arm(&w, &a.t, now - MS);
	assert_int_equal(tw_run(&w, now), 1);
	uint64_t target = now + 2 * HOUR;
	advance(&w, &now, target - MS, 37 * MS);
	assert_int_equal(r.n, 3);
	advance(&w, &now, target + 2 * MS, MS);
	assert_int_equal(r.n, 4);
	assert_true(r.fired_at[3] >= target);
}

/* Many timers at random deadlines, some cancelled: every live one fires
 * exactly once, never early, and in deadline order (to the tick). */
enum { RAND_N = 2000 };
static struct tw_timer rnd_t[RAND_N];
static uint64_t rnd_dl[RAND_N];
static int rnd_fired[RAND_N];
static uint64_t rnd_now, rnd_last_tick;

static void rnd_fire(void *arg, struct tw_timer *t)
{
	int i = (int)(intptr_t)arg;
	assert_ptr_equal(&rnd_t[i], t);
	assert_true(rnd_now >= rnd_dl[i]);
	assert_true(rnd_now < rnd_dl[i] + 3 * MS);
	uint64_t tick = (rnd_dl[i] + MS - 1) / MS;
	assert_true(tick >= rnd_last_tick);
	rnd_last_tick = tick;
	rnd_fired[i]++;
}

static void test_random_many(void **state)
{
	(void)state;
	static struct tw_wheel w;
	rnd_now = T0;
	rnd_last_tick = 0;
	tw_wheel_init(&w, rnd_now);
	srand(7);
	for (int i = 0; i < RAND_N; i++) {
		rnd_dl[i] = rnd_now + (uint64_t)(rand() % 3000000) * (MS / 10);
		rnd_fired[i] = 0;
		tw_init(&rnd_t[i], rnd_fire, (void *)(intptr_t)i);
		tw_arm(&w, &rnd_t[i], rnd_dl[i]);
	}
	for (int i = 0; i < RAND_N; i += 3)
		tw_cancel(&w, &rnd_t[i]);
	uint64_t end = T0 + 301000 * MS;
	while (rnd_now < end) {
		rnd_now += (uint64_t)(rand() % 1500) * (MS / 1000) + 1;
		tw_run(&w, rnd_now);
	}
	for (int i = 0; i < RAND_N; i++)
		assert_int_equal(rnd_fired[i], i % 3 == 0 ? 0 : 1);
	assert_int_equal(tw_count(&w), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ordering),
		cmocka_unit_test(test_far_deadlines),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_rearm),
		cmocka_unit_test(test_arm_from_callback),
		cmocka_unit_test(test_random_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
