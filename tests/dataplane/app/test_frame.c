/* The worker's shared token frames (app_frame.h): keys, lookups, the
 * slot of a seq, frames too large to keep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "app/app_frame.h"

static struct app_frame_cache fc;

static const struct app_frame_slot *find(uint8_t v, const char *mid, uint32_t a, uint32_t b)
{
	struct app_frame_key k;

	app_frame_key_set(&k, v, mid, a, b);
	return app_frame_find(&fc, &k);
}

static void put(uint8_t v, const char *mid, uint32_t a, uint32_t b, const char *bytes)
{
	struct app_frame_key k;

	app_frame_key_set(&k, v, mid, a, b);
	app_frame_put(&fc, &k, bytes, strlen(bytes));
}

static void test_keys(void **state)
{
	const struct app_frame_slot *s;

	(void)state;
	memset(&fc, 0, sizeof(fc));
	assert_null(find(0, "m_1", 1, 1));
	put(0, "m_1", 1, 3, "sse");
	put(APP_FRAME_WS, "m_1", 1, 3, "ws");
	s = find(0, "m_1", 1, 3);
	assert_non_null(s);
	assert_int_equal(s->len, 3);
	assert_memory_equal(s->bytes, "sse", 3);
	assert_memory_equal(find(APP_FRAME_WS, "m_1", 1, 3)->bytes, "ws", 2);
	/* Every part of the key counts. */
	assert_null(find(APP_FRAME_STAMPS, "m_1", 1, 3));
	assert_null(find(0, "m_1", 2, 3));
	assert_null(find(0, "m_1", 1, 2));
	assert_null(find(0, "m_2", 1, 3));
}

/* A record's run of consecutive seqs, as long as the cache, stays whole
 * (every subscriber walks it in turn); the next run replaces it. */
static void test_run_kept(void **state)
{
	(void)state;
	memset(&fc, 0, sizeof(fc));
	for (uint32_t i = 1; i <= APP_FRAME_SLOTS; i++)
		put(0, "m_x", i, i, "f");
	for (uint32_t i = 1; i <= APP_FRAME_SLOTS; i++)
		assert_non_null(find(0, "m_x", i, i));
	put(0, "m_x", APP_FRAME_SLOTS + 1, APP_FRAME_SLOTS + 1, "g");
	assert_null(find(0, "m_x", 1, 1));
	assert_memory_equal(find(0, "m_x", APP_FRAME_SLOTS + 1, APP_FRAME_SLOTS + 1)->bytes, "g", 1);
	for (uint32_t i = 2; i <= APP_FRAME_SLOTS; i++)
		assert_non_null(find(0, "m_x", i, i));
	/* Both variants of one seq are kept side by side. */
	put(APP_FRAME_WS, "m_x", 5, 5, "w");
	assert_memory_equal(find(APP_FRAME_WS, "m_x", 5, 5)->bytes, "w", 1);
	assert_memory_equal(find(0, "m_x", 5, 5)->bytes, "f", 1);
	/* A full-width id (no NUL) is a key like any other. */
	{
		char full[CHAN_ID_LEN];

		memset(full, 'q', sizeof(full));
		put(0, full, 7, 7, "full");
		assert_non_null(find(0, full, 7, 7));
	}
}

/* A fan-out run (APP_FRAME_RUN consecutive seqs) in all four variants stays
 * whole, wherever it starts; a put changes its slot's gen, so a holder of
 * the slot sees its frame replaced. */
static void test_run_all_variants(void **state)
{
	const struct app_frame_slot *s;
	uint32_t gen;

	(void)state;
	for (uint32_t start = 1; start <= APP_FRAME_SLOTS; start += 7) {
		memset(&fc, 0, sizeof(fc));
		for (uint8_t v = 0; v < 4; v++)
			for (uint32_t i = start; i < start + APP_FRAME_RUN; i++)
				put(v, "m_r", i, i, "r");
		for (uint8_t v = 0; v < 4; v++)
			for (uint32_t i = start; i < start + APP_FRAME_RUN; i++)
				assert_non_null(find(v, "m_r", i, i));
	}
	s = find(0, "m_r", APP_FRAME_SLOTS + 1, APP_FRAME_SLOTS + 1);
	assert_non_null(s);
	gen = s->gen;
	put(0, "m_r", 2 * APP_FRAME_SLOTS + 1, 2 * APP_FRAME_SLOTS + 1, "z");
	assert_int_not_equal(s->gen, gen);
	assert_null(find(0, "m_r", APP_FRAME_SLOTS + 1, APP_FRAME_SLOTS + 1));
}

static void test_too_large_not_kept(void **state)
{
	static char big[APP_FRAME_MAX + 2];
	struct app_frame_key k;

	(void)state;
	memset(&fc, 0, sizeof(fc));
	memset(big, 'b', sizeof(big) - 1);
	app_frame_key_set(&k, 0, "m_b", 1, 1);
	assert_null(app_frame_put(&fc, &k, big, sizeof(big) - 1));
	assert_null(app_frame_find(&fc, &k));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_run_kept),
		cmocka_unit_test(test_run_all_variants),
		cmocka_unit_test(test_too_large_not_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
