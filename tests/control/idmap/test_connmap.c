/*
 * control/idmap/connmap: handles as keys (worker, slot and generation all
 * count, the pads do not), duplicates refused, growth past the initial
 * buckets keeping every node, removal during a walk, clear.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idmap/connmap.h"

static struct chan_conn cc(uint16_t w, uint32_t slot, uint32_t gen)
{
	struct chan_conn c;
	memset(&c, 0, sizeof(c));
	c.worker = w;
	c.slot = slot;
	c.gen = gen;
	return c;
}

static void test_keys(void **state)
{
	(void)state;
	struct connmap m;
	assert_int_equal(connmap_init(&m, 4), 0);
	assert_int_equal(m.t.nbuckets, 16);
	struct connmap_node a, b, c, d, dup;
	assert_int_equal(connmap_insert(&m, &a, cc(0, 1, 7)), 0);
	/* Same slot, another generation or worker: other conns. */
	assert_int_equal(connmap_insert(&m, &b, cc(0, 1, 8)), 0);
	assert_int_equal(connmap_insert(&m, &c, cc(1, 1, 7)), 0);
	assert_int_equal(connmap_insert(&m, &d, cc(0, 2, 7)), 0);
	assert_int_equal(connmap_insert(&m, &dup, cc(0, 1, 7)), -1);
	assert_int_equal(m.t.n, 4);
	assert_ptr_equal(connmap_find(&m, cc(0, 1, 7)), &a);
	assert_ptr_equal(connmap_find(&m, cc(0, 1, 8)), &b);
	assert_ptr_equal(connmap_find(&m, cc(1, 1, 7)), &c);
	assert_ptr_equal(connmap_find(&m, cc(0, 2, 7)), &d);
	assert_null(connmap_find(&m, cc(0, 1, 9)));
	/* The pads are not part of the key. */
	struct chan_conn padded = cc(1, 1, 7);
	padded._pad = 0xffff;
	padded._pad2 = 0xffffffffu;
	assert_ptr_equal(connmap_find(&m, padded), &c);
	connmap_remove(&m, &b);
	assert_null(connmap_find(&m, cc(0, 1, 8)));
	assert_ptr_equal(connmap_find(&m, cc(0, 1, 7)), &a);
	/* Removing a node that is not linked changes nothing. */
	connmap_remove(&m, &b);
	assert_int_equal(m.t.n, 3);
	/* Gone, its handle can come back. */
	assert_int_equal(connmap_insert(&m, &b, cc(0, 1, 8)), 0);
	assert_int_equal(m.t.n, 4);
	connmap_free(&m);
}

#define MANY 5000u

struct walk {
	struct connmap *m;
	uint32_t seen, removed;
};

/* Removes the nodes of odd slots while the walk runs over them. */
static void walk_drop_odd(struct connmap_node *n, void *arg)
{
	struct walk *w = arg;
	w->seen++;
	if (n->conn.slot & 1) {
		connmap_remove(w->m, n);
		w->removed++;
	}
}

static void test_grow_walk_clear(void **state)
{
	(void)state;
	struct connmap m;
	assert_int_equal(connmap_init(&m, 16), 0);
	struct connmap_node *v = calloc(MANY, sizeof(*v));
	assert_non_null(v);
	/* Every worker's slots from 0, as the dataplane hands them out: the
	 * same slot and generation in several workers. */
	for (uint32_t i = 0; i < MANY; i++)
		assert_int_equal(connmap_insert(&m, &v[i], cc((uint16_t)(i % 4), i / 4, 1)), 0);
	assert_int_equal(m.t.n, MANY);
	assert_true(m.t.nbuckets >= MANY);
	for (uint32_t i = 0; i < MANY; i++)
		assert_ptr_equal(connmap_find(&m, cc((uint16_t)(i % 4), i / 4, 1)), &v[i]);
	/* No bucket holds a long chain. */
	uint32_t longest = 0;
	for (uint32_t b = 0; b < m.t.nbuckets; b++) {
		uint32_t len = 0;
		for (struct hc_link *l = m.t.b[b]; l; l = l->next)
			len++;
		if (len > longest)
			longest = len;
	}
	assert_true(longest <= 8);

	struct walk w = { .m = &m };
	connmap_foreach(&m, walk_drop_odd, &w);
	assert_int_equal(w.seen, MANY);
	assert_int_equal(m.t.n, MANY - w.removed);
	for (uint32_t i = 0; i < MANY; i++) {
		struct connmap_node *n = connmap_find(&m, cc((uint16_t)(i % 4), i / 4, 1));
		if ((i / 4) & 1)
			assert_null(n);
		else
			assert_ptr_equal(n, &v[i]);
	}

	uint32_t nb = m.t.nbuckets;
	connmap_clear(&m);
	assert_int_equal(m.t.n, 0);
	assert_int_equal(m.t.nbuckets, nb);
	assert_null(connmap_find(&m, cc(0, 0, 1)));
	assert_int_equal(connmap_insert(&m, &v[0], cc(0, 0, 1)), 0);
	assert_ptr_equal(connmap_find(&m, cc(0, 0, 1)), &v[0]);
	connmap_free(&m);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_grow_walk_clear),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
