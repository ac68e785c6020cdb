/* Unit tests of impair_core: the PRNG against reference values, each
 * impairment on crafted frames under a virtual clock, determinism by seed,
 * and the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "impair_core.h"

#define MS 1000000ull
#define SLOT 1600u

/* A 100-byte frame whose payload names it: byte 14.. carry n. */
static void mkframe(uint8_t *f, uint32_t len, uint32_t n)
{
	for (uint32_t i = 0; i < len; i++)
		f[i] = (uint8_t)(i * 7 + 3);
	memcpy(f + IMP_ETH_HLEN, &n, sizeof(n));
}

static uint32_t frame_id(const uint8_t *f)
{
	uint32_t n;
	memcpy(&n, f + IMP_ETH_HLEN, sizeof(n));
	return n;
}

static void feed(struct imp_dir *d, uint32_t n, uint64_t now)
{
	uint8_t f[100];
	mkframe(f, sizeof(f), n);
	imp_dir_input(d, f, sizeof(f), now);
}

/* Pops every frame due at now into ids; returns the count. */
static uint32_t drain(struct imp_dir *d, uint64_t now, uint32_t *ids, uint32_t max)
{
	uint32_t n = 0, len;
	const uint8_t *f;
	while ((f = imp_dir_peek(d, now, &len)) != NULL) {
		assert_true(n < max);
		ids[n++] = frame_id(f);
		imp_dir_pop(d);
	}
	return n;
}

static struct imp_params params(void)
{
	struct imp_params p;
	memset(&p, 0, sizeof(p));
	p.reorder_gap = 3;
	p.reorder_hold_ms = 10;
	return p;
}

/* Values computed independently (Python) for xoshiro256** seeded by splitmix64. */
static void test_rng_reference(void **state)
{
	(void)state;
	struct imp_rng r;
	imp_rng_seed(&r, 42);
	assert_int_equal(imp_rng_next(&r), 0x15780b2e0c2ec716ull);
	assert_int_equal(imp_rng_next(&r), 0x6104d9866d113a7eull);
	assert_int_equal(imp_rng_next(&r), 0xae17533239e499a1ull);
	imp_rng_seed(&r, 0);
	assert_int_equal(imp_rng_next(&r), 0x99ec5f36cb75f2b4ull);
	assert_int_equal(imp_rng_next(&r), 0xbf6e1f784956452aull);
}

static void test_rng_below_and_chance(void **state)
{
	(void)state;
	struct imp_rng r;
	imp_rng_seed(&r, 7);
	uint32_t hist[6] = {0};
	for (int i = 0; i < 60000; i++) {
		uint64_t v = imp_rng_below(&r, 6);
		assert_true(v < 6);
		hist[v]++;
	}
	for (int i = 0; i < 6; i++)
		assert_in_range(hist[i], 9000, 11000);
	for (int i = 0; i < 1000; i++) {
		assert_false(imp_rng_chance(&r, 0.0));
		assert_true(imp_rng_chance(&r, 100.0));
	}
	uint32_t hits = 0;
	for (int i = 0; i < 100000; i++)
		hits += imp_rng_chance(&r, 10.0);
	assert_in_range(hits, 9000, 11000);
	hits = 0;
	for (int i = 0; i < 100000; i++)
		hits += imp_rng_chance(&r, 0.1);
	assert_in_range(hits, 50, 150);
}

static void test_passthrough_in_order(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	assert_int_equal(imp_dir_init(&d, &p, 1, 64, SLOT), 0);
	for (uint32_t i = 0; i < 50; i++)
		feed(&d, i, 1000);
	uint32_t ids[64];
	assert_int_equal(drain(&d, 1000, ids, 64), 50);
	for (uint32_t i = 0; i < 50; i++)
		assert_int_equal(ids[i], i);
	assert_int_equal(d.c.rx, 50);
	assert_int_equal(d.c.rx_bytes, 5000);
	assert_int_equal(d.c.lost + d.c.dup + d.c.reordered + d.c.corrupted + d.c.qdrop, 0);
	assert_int_equal(imp_dir_pending(&d), 0);
	assert_int_equal(imp_dir_next_ns(&d), UINT64_MAX);
	imp_dir_free(&d);
}

static void test_loss(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.loss = 100.0;
	assert_int_equal(imp_dir_init(&d, &p, 1, 64, SLOT), 0);
	for (uint32_t i = 0; i < 20; i++)
		feed(&d, i, 0);
	assert_int_equal(d.c.lost, 20);
	assert_int_equal(imp_dir_pending(&d), 0);
	imp_dir_free(&d);

	p.loss = 10.0;
	assert_int_equal(imp_dir_init(&d, &p, 9, 16384, SLOT), 0);
	for (uint32_t i = 0; i < 10000; i++)
		feed(&d, i, 0);
	assert_in_range(d.c.lost, 800, 1200);
	assert_int_equal(imp_dir_pending(&d), 10000 - d.c.lost);
	/* Survivors keep their order. */
	static uint32_t ids[10000];
	uint32_t n = drain(&d, 0, ids, 10000);
	assert_int_equal(n, 10000 - d.c.lost);
	for (uint32_t i = 1; i < n; i++)
		assert_true(ids[i] > ids[i - 1]);
	imp_dir_free(&d);
}

static void test_corrupt_flips_one_byte_past_ethernet(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.corrupt = 100.0;
	assert_int_equal(imp_dir_init(&d, &p, 3, 64, SLOT), 0);
	for (uint32_t k = 0; k < 200; k++) {
		uint8_t f[60], orig[60];
		mkframe(orig, sizeof(orig), k);
		memcpy(f, orig, sizeof(f));
		imp_dir_input(&d, f, sizeof(f), 0);
		uint32_t len;
		const uint8_t *out = imp_dir_peek(&d, 0, &len);
		assert_non_null(out);
		assert_int_equal(len, sizeof(orig));
		uint32_t diffs = 0;
		for (uint32_t i = 0; i < len; i++) {
			if (out[i] != orig[i]) {
				diffs++;
				assert_true(i >= IMP_ETH_HLEN);
			}
		}
		assert_int_equal(diffs, 1);
		imp_dir_pop(&d);
	}
	assert_int_equal(d.c.corrupted, 200);
	/* A frame with nothing past the Ethernet header is left alone. */
	uint8_t tiny[IMP_ETH_HLEN];
	memset(tiny, 0xab, sizeof(tiny));
	imp_dir_input(&d, tiny, sizeof(tiny), 0);
	assert_int_equal(d.c.corrupted, 200);
	imp_dir_free(&d);
}

static void test_dup(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.dup = 100.0;
	assert_int_equal(imp_dir_init(&d, &p, 3, 64, SLOT), 0);
	for (uint32_t i = 0; i < 5; i++)
		feed(&d, i, 0);
	uint32_t ids[16];
	assert_int_equal(drain(&d, 0, ids, 16), 10);
	for (uint32_t i = 0; i < 10; i++)
		assert_int_equal(ids[i], i / 2);
	assert_int_equal(d.c.dup, 5);
	imp_dir_free(&d);
}

static void test_reorder_after_next_frame(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.reorder = 100.0;
	p.reorder_gap = 1;
	assert_int_equal(imp_dir_init(&d, &p, 3, 64, SLOT), 0);
	feed(&d, 1, 0);
	assert_int_equal(d.c.reordered, 1);
	assert_int_equal(imp_dir_pending(&d), 1);
	uint32_t len;
	assert_null(imp_dir_peek(&d, 0, &len));
	d.p.reorder = 0.0;
	feed(&d, 2, 0);
	feed(&d, 3, 0);
	uint32_t ids[8];
	assert_int_equal(drain(&d, 0, ids, 8), 3);
	assert_int_equal(ids[0], 2);
	assert_int_equal(ids[1], 1);
	assert_int_equal(ids[2], 3);
	imp_dir_free(&d);
}

static void test_reorder_gap_and_hold_bound(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.reorder = 25.0;
	p.reorder_gap = 3;
	assert_int_equal(imp_dir_init(&d, &p, 11, 4096, SLOT), 0);
	static uint32_t ids[3000];
	for (uint32_t i = 0; i < 2000; i++)
		feed(&d, i, 0);
	/* Whatever is still held at the end leaves when its hold time runs out. */
	assert_true(imp_dir_next_ns(&d) <= 10 * MS);
	imp_dir_tick(&d, 10 * MS - 1);
	uint32_t before = drain(&d, 10 * MS, ids, 3000);
	imp_dir_tick(&d, 10 * MS);
	uint32_t n = before + drain(&d, 10 * MS, ids + before, 3000 - before);
	assert_int_equal(n, 2000);
	assert_int_equal(imp_dir_pending(&d), 0);
	assert_in_range(d.c.reordered, 400, 600);
	/* Every frame shows up exactly once, none more than a few places late. */
	static uint8_t seen[2000];
	uint32_t moved = 0;
	for (uint32_t i = 0; i < n; i++) {
		assert_true(ids[i] < 2000);
		assert_int_equal(seen[ids[i]], 0);
		seen[ids[i]] = 1;
		if (ids[i] != i)
			moved++;
		assert_true(i <= ids[i] + 3 + IMP_HELD_MAX);
	}
	assert_true(moved > 0);
	imp_dir_free(&d);
}

static void test_hold_deadline(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.reorder = 100.0;
	p.reorder_hold_ms = 10;
	assert_int_equal(imp_dir_init(&d, &p, 5, 64, SLOT), 0);
	feed(&d, 7, 5 * MS);
	assert_int_equal(imp_dir_next_ns(&d), 15 * MS);
	imp_dir_tick(&d, 15 * MS - 1);
	uint32_t len;
	assert_null(imp_dir_peek(&d, 15 * MS - 1, &len));
	imp_dir_tick(&d, 15 * MS);
	const uint8_t *f = imp_dir_peek(&d, 15 * MS, &len);
	assert_non_null(f);
	assert_int_equal(frame_id(f), 7);
	imp_dir_free(&d);
}

static void test_delay_and_jitter(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.delay_ms = 20;
	assert_int_equal(imp_dir_init(&d, &p, 5, 64, SLOT), 0);
	feed(&d, 1, 100 * MS);
	uint32_t len;
	assert_int_equal(imp_dir_next_ns(&d), 120 * MS);
	assert_null(imp_dir_peek(&d, 120 * MS - 1, &len));
	assert_non_null(imp_dir_peek(&d, 120 * MS, &len));
	imp_dir_free(&d);

	p.jitter_ms = 5;
	assert_int_equal(imp_dir_init(&d, &p, 5, 4096, SLOT), 0);
	uint64_t prev = 0, lo = UINT64_MAX, hi = 0;
	for (uint32_t i = 0; i < 1000; i++) {
		uint64_t now = (uint64_t)i * 2 * MS;
		feed(&d, i, now);
		uint64_t due = d.due_ns[(d.tail - 1) & (d.cap - 1)];
		assert_true(due >= prev);
		assert_true(due >= now + 15 * MS);
		assert_true(due <= now + 25 * MS);
		uint64_t off = due - now;
		lo = off < lo ? off : lo;
		hi = off > hi ? off : hi;
		prev = due;
	}
	/* The delay really varies over most of the +-5 ms span. */
	assert_true(hi - lo > 8 * MS);
	imp_dir_free(&d);
}

static void test_queue_bound_and_oversize(void **state)
{
	(void)state;
	struct imp_dir d;
	struct imp_params p = params();
	p.delay_ms = 1000;
	assert_int_equal(imp_dir_init(&d, &p, 5, 4, 100), 0);
	for (uint32_t i = 0; i < 6; i++)
		feed(&d, i, 0);
	assert_int_equal(imp_dir_pending(&d), 4);
	assert_int_equal(d.c.qdrop, 2);
	uint8_t big[101];
	memset(big, 1, sizeof(big));
	imp_dir_input(&d, big, sizeof(big), 0);
	assert_int_equal(d.c.oversize, 1);
	assert_int_equal(d.c.rx, 7);
	imp_dir_free(&d);
	assert_int_equal(imp_dir_init(&d, &p, 5, 0, 100), -1);
	assert_int_equal(imp_dir_init(&d, &p, 5, 4, IMP_ETH_HLEN), -1);
}

/* Runs 3000 frames through a heavily impaired direction; returns an order-
 * and content-sensitive digest of the output. */
static uint64_t run_digest(uint64_t seed, struct imp_counters *c)
{
	struct imp_dir d;
	struct imp_params p = params();
	p.loss = 20;
	p.dup = 10;
	p.reorder = 20;
	p.corrupt = 10;
	p.delay_ms = 3;
	p.jitter_ms = 2;
	assert_int_equal(imp_dir_init(&d, &p, seed, 8192, SLOT), 0);
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint32_t i = 0; i < 3000; i++) {
		uint64_t now = (uint64_t)i * MS / 4;
		feed(&d, i, now);
		imp_dir_tick(&d, now);
		uint32_t len;
		const uint8_t *f;
		while ((f = imp_dir_peek(&d, now, &len)) != NULL) {
			for (uint32_t k = 0; k < len; k++)
				h = (h ^ f[k]) * 0x100000001b3ull;
			imp_dir_pop(&d);
		}
	}
	*c = d.c;
	imp_dir_free(&d);
	return h;
}

static void test_deterministic_by_seed(void **state)
{
	(void)state;
	struct imp_counters c1, c2, c3;
	uint64_t h1 = run_digest(1234, &c1);
	uint64_t h2 = run_digest(1234, &c2);
	uint64_t h3 = run_digest(1235, &c3);
	assert_int_equal(h1, h2);
	assert_memory_equal(&c1, &c2, sizeof(c1));
	assert_int_not_equal(h1, h3);
	assert_true(c1.lost > 0 && c1.dup > 0 && c1.reordered > 0 && c1.corrupted > 0);
}

static int parse(struct imp_opts *o, char *err, int argc, ...)
{
	char *argv[32];
	va_list ap;
	va_start(ap, argc);
	argv[0] = "impair";
	for (int i = 1; i < argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	return imp_parse_args(argc, argv, o, err, 256);
}

static void test_parse_args(void **state)
{
	(void)state;
	struct imp_opts o;
	char err[256];
	assert_int_equal(parse(&o, err, 13, "--a", "v0", "--b=v1", "--loss", "5", "--dup", "1:2.5",
	                       "--delay", "20", "--jitter=5:0", "--seed", "99"), 0);
	assert_string_equal(o.ifname[0], "v0");
	assert_string_equal(o.ifname[1], "v1");
	assert_true(o.p[0].loss == 5.0 && o.p[1].loss == 5.0);
	assert_true(o.p[0].dup == 1.0 && o.p[1].dup == 2.5);
	assert_int_equal(o.p[0].delay_ms, 20);
	assert_int_equal(o.p[1].delay_ms, 20);
	assert_int_equal(o.p[0].jitter_ms, 5);
	assert_int_equal(o.p[1].jitter_ms, 0);
	assert_int_equal(o.seed, 99);
	assert_int_equal(o.queue, 8192);
	assert_int_equal(o.p[0].reorder_gap, 3);
	assert_int_equal(o.p[1].reorder_hold_ms, 10);
	assert_int_equal(parse(&o, err, 9, "--a", "x", "--b", "y", "--corrupt", "0.1",
	                       "--duration", "30"), 0);
	assert_true(o.p[0].corrupt == 0.1);
	assert_int_equal(o.duration_s, 30);
	assert_int_equal(parse(&o, err, 2, "--help"), 1);

	assert_int_equal(parse(&o, err, 3, "--a", "x"), -1);
	assert_non_null(strstr(err, "--b"));
	assert_int_equal(parse(&o, err, 5, "--a", "x", "--b", "x"), -1);
	assert_non_null(strstr(err, "same interface"));
	const char *bad_pct[] = {"101", "-1", "abc", "5:", ":5", "nan", "1:2:3", "", "inf"};
	for (size_t i = 0; i < sizeof(bad_pct) / sizeof(bad_pct[0]); i++) {
		assert_int_equal(parse(&o, err, 7, "--a", "x", "--b", "y", "--loss", bad_pct[i]), -1);
		assert_non_null(strstr(err, "--loss"));
	}
	assert_int_equal(parse(&o, err, 7, "--a", "x", "--b", "y", "--delay", "60001"), -1);
	assert_int_equal(parse(&o, err, 7, "--a", "x", "--b", "y", "--delay", "-5"), -1);
	assert_int_equal(parse(&o, err, 7, "--a", "x", "--b", "y", "--reorder-gap", "0"), -1);
	assert_int_equal(parse(&o, err, 7, "--a", "x", "--b", "y", "--queue", "0"), -1);
	assert_int_equal(parse(&o, err, 7, "--a", "x", "--b", "y", "--seed", "-1"), -1);
	assert_int_equal(parse(&o, err, 7, "--a", "x", "--b", "y", "--bogus", "1"), -1);
	assert_non_null(strstr(err, "unknown option"));
	assert_int_equal(parse(&o, err, 6, "--a", "x", "--b", "y", "--loss"), -1);
	assert_non_null(strstr(err, "needs a value"));
	assert_int_equal(parse(&o, err, 6, "--a", "x", "--b", "y", "stray"), -1);
}

static void test_format_counters(void **state)
{
	(void)state;
	struct imp_counters c;
	memset(&c, 0, sizeof(c));
	c.rx = 10;
	c.lost = 3;
	c.txdrop = 1;
	char buf[512];
	int n = imp_format_counters(buf, sizeof(buf), "impair: a->b", &c);
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(buf));
	assert_non_null(strstr(buf, "impair: a->b rx=10 "));
	assert_non_null(strstr(buf, " lost=3 "));
	assert_non_null(strstr(buf, " txdrop=1\n"));
	assert_int_equal(imp_format_counters(buf, 20, "impair: a->b", &c), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rng_reference),
		cmocka_unit_test(test_rng_below_and_chance),
		cmocka_unit_test(test_passthrough_in_order),
		cmocka_unit_test(test_loss),
		cmocka_unit_test(test_corrupt_flips_one_byte_past_ethernet),
		cmocka_unit_test(test_dup),
		cmocka_unit_test(test_reorder_after_next_frame),
		cmocka_unit_test(test_reorder_gap_and_hold_bound),
		cmocka_unit_test(test_hold_deadline),
		cmocka_unit_test(test_delay_and_jitter),
		cmocka_unit_test(test_queue_bound_and_oversize),
		cmocka_unit_test(test_deterministic_by_seed),
		cmocka_unit_test(test_parse_args),
		cmocka_unit_test(test_format_counters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
