/* app_subs.c: the per-worker subscription table against a plain model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_subs.h"

#define NCONN 4096u
#define NSESS 700u

static void sid_of(char out[CHAN_ID_LEN], uint32_t n)
{
	memset(out, 0, CHAN_ID_LEN);
	snprintf(out, CHAN_ID_LEN, "s_%016x", n);
}

static uint32_t count_of(struct app_subs *t, uint32_t sess, const int32_t *model, bool check)
{
	char sid[CHAN_ID_LEN];
	uint32_t n = 0;

	sid_of(sid, sess);
	for (uint32_t s = app_subs_first(t, sid); s != APP_SUBS_NONE; s = app_subs_next(t, s)) {
		if (check)
			assert_int_equal(model[s], (int32_t)sess);
		n++;
	}
	return n;
}

static void test_several_conns_per_session(void **state)
{
	struct app_subs *t = app_subs_create(8);
	char a[CHAN_ID_LEN], b[CHAN_ID_LEN];
	uint32_t seen = 0;

	(void)state;
	assert_non_null(t);
	sid_of(a, 1);
	sid_of(b, 2);
	assert_int_equal(app_subs_add(t, a, 0), 0);
	assert_int_equal(app_subs_add(t, a, 5), 0);
	assert_int_equal(app_subs_add(t, a, 7), 0);
	assert_int_equal(app_subs_add(t, b, 3), 0);
	assert_int_equal(app_subs_sessions(t), 2);
	for (uint32_t s = app_subs_first(t, a); s != APP_SUBS_NONE; s = app_subs_next(t, s))
		seen |= 1u << s;
	assert_int_equal(seen, (1u << 0) | (1u << 5) | (1u << 7));
	/* Removing the middle, the head and the tail keeps the list whole. */
	app_subs_remove(t, 5);
	app_subs_remove(t, 7);
	assert_int_equal(app_subs_first(t, a), 0);
	assert_int_equal(app_subs_next(t, 0), APP_SUBS_NONE);
	app_subs_remove(t, 0);
	assert_int_equal(app_subs_first(t, a), APP_SUBS_NONE);
	assert_int_equal(app_subs_sessions(t), 1);
	assert_int_equal(app_subs_first(t, b), 3);
	/* Moving a conn to another session takes it out of the first. */
	assert_int_equal(app_subs_add(t, a, 3), 0);
	assert_int_equal(app_subs_first(t, b), APP_SUBS_NONE);
	assert_int_equal(app_subs_first(t, a), 3);
	app_subs_remove(t, 3);
	app_subs_remove(t, 3); /* twice is harmless */
	assert_int_equal(app_subs_sessions(t), 0);
	assert_int_equal(app_subs_add(t, a, 8), -1); /* out of range */
	memset(b, 0, sizeof(b));
	assert_int_equal(app_subs_add(t, b, 1), -1); /* empty id */
	app_subs_destroy(t);
}

static void test_many_random(void **state)
{
	struct app_subs *t = app_subs_create(NCONN);
	int32_t *model = malloc(NCONN * sizeof(*model));
	uint32_t rng = 12345;

	(void)state;
	assert_non_null(t);
	assert_non_null(model);
	for (uint32_t i = 0; i < NCONN; i++)
		model[i] = -1;
	for (uint32_t step = 0; step < 200000; step++) {
		uint32_t slot, sess;
		char sid[CHAN_ID_LEN];

		rng = rng * 1103515245u + 12345u;
		slot = (rng >> 8) % NCONN;
		rng = rng * 1103515245u + 12345u;
		sess = (rng >> 8) % NSESS;
		if ((rng >> 4) % 3 == 0) {
			app_subs_remove(t, slot);
			model[slot] = -1;
		} else {
			sid_of(sid, sess);
			assert_int_equal(app_subs_add(t, sid, slot), 0);
			model[slot] = (int32_t)sess;
		}
		if (step % 20000 == 0) {
			uint32_t total = 0, nsess = 0;

			for (uint32_t s = 0; s < NSESS; s++) {
				uint32_t n = count_of(t, s, model, true);

				total += n;
				nsess += n > 0;
			}
			uint32_t want = 0;
			for (uint32_t i = 0; i < NCONN; i++)
				want += model[i] >= 0;
			assert_int_equal(total, want);
			assert_int_equal(app_subs_sessions(t), nsess);
		}
	}
	/* Remove everything: the table must end empty (backward shift leaves
	 * no stale entry behind). */
	for (uint32_t i = 0; i < NCONN; i++)
		app_subs_remove(t, i);
	assert_int_equal(app_subs_sessions(t), 0);
	for (uint32_t s = 0; s < NSESS; s++)
		assert_int_equal(count_of(t, s, model, false), 0);
	free(model);
	app_subs_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_several_conns_per_session),
		cmocka_unit_test(test_many_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
