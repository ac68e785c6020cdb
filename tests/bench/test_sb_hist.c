/* sb_hist: bucket bounds, quantiles against exact ranks, merge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sb_hist.h"

static struct sb_hist h, h2;

/* Every value lands in a bucket whose upper bound is >= it and within 1/64. */
static void test_buckets(void **state)
{
	(void)state;
	for (uint64_t v = 0; v < 200000; v += 1 + v / 97) {
		uint32_t i = sb_hist_index(v);
		uint64_t up = sb_hist_upper(i);

		assert_true(i < SB_HIST_BUCKETS);
		assert_true(up >= v);
		assert_true(up - v <= v / 64 + 1);
		if (i > 0)
			assert_true(sb_hist_upper(i - 1) < v);
	}
	assert_int_equal(sb_hist_index(UINT64_MAX), SB_HIST_BUCKETS - 1);
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Quantiles match the exact ceil(q*n)-th sample within the bucket width. */
static void test_quantiles(void **state)
{
	enum { N = 10000 };
	static uint64_t v[N];
	const double qs[] = { 0.5, 0.9, 0.99, 0.999, 1.0 };
	uint64_t seed = 42;

	(void)state;
	sb_hist_reset(&h);
	assert_int_equal(sb_hist_quantile(&h, 0.99), 0);
	for (int i = 0; i < N; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		v[i] = 1000 + (seed >> 33) % 5000000; /* 1 us .. 5 ms */
		sb_hist_add(&h, v[i]);
	}
	qsort(v, N, sizeof(v[0]), cmp);
	for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
		size_t rank = (size_t)(qs[k] * N + 0.999999);
		uint64_t exact = v[rank - 1], got = sb_hist_quantile(&h, qs[k]);

		assert_true(got >= exact);
		assert_true(got - exact <= exact / 64 + 1);
	}
	assert_true(sb_hist_quantile(&h, 1.0) == v[N - 1]); /* never above max */
	assert_true(h.min == v[0]);
	assert_int_equal(h.count, N);
}

static void test_small_counts_and_merge(void **state)
{
	(void)state;
	sb_hist_reset(&h);
	sb_hist_reset(&h2);
	sb_hist_add(&h, 10);
	assert_int_equal(sb_hist_quantile(&h, 0.5), 10);
	assert_int_equal(sb_hist_quantile(&h, 0.999), 10);
	sb_hist_add(&h2, 5000);
	sb_hist_add(&h2, 7000);
	sb_hist_merge(&h, &h2);
	assert_int_equal(h.count, 3);
	assert_int_equal(h.max, 7000);
	assert_int_equal(h.min, 10);
	assert_int_equal(sb_hist_quantile(&h, 0.34), sb_hist_upper(sb_hist_index(5000)));
	assert_int_equal(sb_hist_quantile(&h, 0.33), 10);
	assert_int_equal(h.sum, 12010);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_quantiles),
		cmocka_unit_test(test_small_counts_and_merge),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
