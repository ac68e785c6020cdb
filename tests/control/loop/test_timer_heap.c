/* The timer heap: ordering, cancel, reschedule, due-only pops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "loop/timer_heap.h"

#define N 200

static void test_pops_in_deadline_order(void **state)
{
	(void)state;
	struct timer_heap h;
	static struct th_node nodes[N];
	assert_int_equal(th_init(&h, 4), 0); /* small, so it must grow */
	srand(7);
	for (int i = 0; i < N; i++) {
		th_node_init(&nodes[i]);
		assert_int_equal(th_schedule(&h, &nodes[i], (uint64_t)(rand() % 1000) + 1), 0);
	}
	assert_int_equal(h.n, N);
	uint64_t last = 0;
	for (int i = 0; i < N; i++) {
		struct th_node *t = th_pop_due(&h, UINT64_MAX);
		assert_non_null(t);
		assert_true(t->deadline_ns >= last);
		assert_false(th_queued(t));
		last = t->deadline_ns;
	}
	assert_null(th_pop_due(&h, UINT64_MAX));
	th_free(&h);
}

static void test_pop_due_respects_now(void **state)
{
	(void)state;
	struct timer_heap h;
	struct th_node a, b;
	th_node_init(&a);
	th_node_init(&b);
	assert_int_equal(th_init(&h, 0), 0);
	assert_int_equal(th_schedule(&h, &a, 100), 0);
	assert_int_equal(th_schedule(&h, &b, 50), 0);
	assert_ptr_equal(th_peek(&h), &b);
	assert_null(th_pop_due(&h, 49));
	assert_ptr_equal(th_pop_due(&h, 50), &b);
	assert_null(th_pop_due(&h, 99));
	assert_ptr_equal(th_pop_due(&h, 1000), &a);
	th_free(&h);
}

static void test_cancel_and_reschedule(void **state)
{
	(void)state;
	struct timer_heap h;
	static struct th_node nodes[10];
	assert_int_equal(th_init(&h, 2), 0);
	for (int i = 0; i < 10; i++) {
		th_node_init(&nodes[i]);
		assert_int_equal(th_schedule(&h, &nodes[i], (uint64_t)(i + 1) * 10), 0);
	}
	th_cancel(&h, &nodes[4]);         /* 50 gone */
	th_cancel(&h, &nodes[4]);         /* second cancel is a no-op */
	assert_false(th_queued(&nodes[4]));
	assert_int_equal(th_schedule(&h, &nodes[9], 5), 0);  /* 100 -> 5: moves up */
	assert_int_equal(th_schedule(&h, &nodes[0], 95), 0); /* 10 -> 95: moves down */
	const uint64_t want[] = { 5, 20, 30, 40, 60, 70, 80, 90, 95 };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct th_node *t = th_pop_due(&h, UINT64_MAX);
		assert_non_null(t);
		assert_int_equal(t->deadline_ns, want[i]);
	}
	assert_null(th_peek(&h));
	th_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pops_in_deadline_order),
		cmocka_unit_test(test_pop_due_respects_now),
		cmocka_unit_test(test_cancel_and_reschedule),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
