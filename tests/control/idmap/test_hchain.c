/*
 * control/idmap/hchain: the bucket array under control's maps. Sizes round
 * up to a power of two; growth keeps every node in the chain of its hash
 * (the hash asked of the node again); removal of an unlinked node, removal
 * during a walk, clear. Node sizes of the maps built on it stay as they
 * were (they count in the memory per connection).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "idmap/connmap.h"
#include "idmap/hchain.h"
#include "idmap/idmap.h"
#include "sluice/common.h"

struct item {
	uint32_t key;
	struct hc_link link;
};

static uint64_t key_hash(uint32_t k)
{
	return (uint64_t)k * 0x9e3779b97f4a7c15ull;
}

static int hashed;

static uint64_t item_hash(const struct hc_link *l)
{
	hashed++;
	return key_hash(sluice_container_of(l, struct item, link)->key);
}

static struct item *find(const struct hc_table *t, uint32_t k)
{
	for (struct hc_link *l = hc_chain(t, key_hash(k)); l; l = l->next) {
		struct item *it = sluice_container_of(l, struct item, link);
		if (it->key == k)
			return it;
	}
	return NULL;
}

static void test_sizes(void **state)
{
	(void)state;
	struct hc_table t;
	assert_int_equal(hc_init(&t, 0, item_hash), 0);
	assert_int_equal(t.nbuckets, 16);
	hc_free(&t);
	assert_int_equal(hc_init(&t, 17, item_hash), 0);
	assert_int_equal(t.nbuckets, 32);
	assert_int_equal(t.n, 0);
	hc_free(&t);
	assert_null(t.b);
	hc_free(&t); /* twice is harmless */
	assert_int_equal(sizeof(struct connmap_node), sizeof(void *) + sizeof(struct chan_conn));
	assert_int_equal(sizeof(struct auth_name), sizeof(void *) + 8);
	assert_int_equal(sizeof(struct idmap_node), sizeof(void *) + 8 + CHAN_ID_LEN);
}

#define MANY 5000u

static void test_grow_keeps_all(void **state)
{
	(void)state;
	struct hc_table t;
	assert_int_equal(hc_init(&t, 16, item_hash), 0);
	struct item *v = calloc(MANY, sizeof(*v));
	assert_non_null(v);
	hashed = 0;
	for (uint32_t i = 0; i < MANY; i++) {
		v[i].key = i * 7u;
		hc_insert(&t, &v[i].link, key_hash(v[i].key));
		assert_int_equal(t.n, i + 1);
		/* It grows once it holds as many nodes as buckets, not later. */
		assert_true(t.n <= t.nbuckets * 2);
	}
	assert_true(t.nbuckets >= MANY / 2);
	/* Each growth asks every linked node's hash once: 16 + 32 + ... +
	 * 4,096 in all, fewer than two per node. */
	assert_true(hashed > 0 && (uint32_t)hashed < 2 * MANY);
	for (uint32_t i = 0; i < MANY; i++)
		assert_ptr_equal(find(&t, i * 7u), &v[i]);
	assert_null(find(&t, 3));

	/* Unlinking what is not linked changes nothing. */
	hc_remove(&t, &v[10].link, key_hash(v[10].key));
	assert_int_equal(t.n, MANY - 1);
	hc_remove(&t, &v[10].link, key_hash(v[10].key));
	assert_int_equal(t.n, MANY - 1);
	assert_null(find(&t, 70));
	hc_insert(&t, &v[10].link, key_hash(v[10].key));
	assert_ptr_equal(find(&t, 70), &v[10]);

	uint32_t nb = t.nbuckets;
	hc_clear(&t);
	assert_int_equal(t.n, 0);
	assert_int_equal(t.nbuckets, nb);
	for (uint32_t i = 0; i < MANY; i++)
		assert_null(find(&t, i * 7u));
	hc_free(&t);
	free(v);
}

struct walk {
	struct hc_table *t;
	uint32_t seen, dropped;
};

static void drop_even(struct hc_link *l, void *arg)
{
	struct walk *w = arg;
	struct item *it = sluice_container_of(l, struct item, link);
	w->seen++;
	if (it->key % 2 == 0) {
		hc_remove(w->t, l, key_hash(it->key));
		memset(it, 0xa5, sizeof(*it)); /* as if freed */
		w->dropped++;
	}
}

static void test_walk_removing(void **state)
{
	(void)state;
	struct hc_table t;
	assert_int_equal(hc_init(&t, 16, item_hash), 0);
	struct item v[100];
	for (uint32_t i = 0; i < 100; i++) {
		v[i].key = i;
		hc_insert(&t, &v[i].link, key_hash(i));
	}
	struct walk w = { .t = &t };
	hc_foreach(&t, drop_even, &w);
	assert_int_equal(w.seen, 100);
	assert_int_equal(w.dropped, 50);
	assert_int_equal(t.n, 50);
	for (uint32_t i = 1; i < 100; i += 2)
		assert_ptr_equal(find(&t, i), &v[i]);
	hc_free(&t);
}

static void test_fnv1a(void **state)
{
	(void)state;
	/* The published FNV-1a 64 vectors. */
	assert_true(sluice_fnv1a64("", 0) == 0xcbf29ce484222325ull);
	assert_true(sluice_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
	assert_true(sluice_fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_grow_keeps_all),
		cmocka_unit_test(test_walk_removing),
		cmocka_unit_test(test_fnv1a),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
