/* batch.h: the adaptive batcher's decisions under a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "app/batch.h"
#include "app/jsonw.h"

#define MS 1000000ull

static struct batch_pool pool;
static char mid_a[CHAN_ID_LEN] = "m_a";
static char mid_b[CHAN_ID_LEN] = "m_b";

static const struct batch_policy adaptive = { .off = false, .max_delay_ns = 2 * MS, .max_bytes = 64 };
static const struct batch_policy off = { .off = true, .max_delay_ns = 2 * MS, .max_bytes = 64 };

static int setup(void **state)
{
	(void)state;
	return batch_pool_init(&pool, 64, 4);
}

static int teardown(void **state)
{
	(void)state;
	batch_pool_destroy(&pool);
	return 0;
}

/* Adds text as the fan-out does: escaped first. */
static enum batch_add_result add(struct batch *b, const char *mid, uint32_t seq, const char *text,
				 uint64_t now)
{
	char esc[512];
	size_t n = jsonw_escape(esc, sizeof(esc), text, strlen(text));

	assert_true(n != JSONW_NOSPACE);
	return batch_add(b, &pool, mid, seq, esc, n, now - 5, now);
}

static void test_light_load_flushes_same_turn(void **state)
{
	struct batch b;
	uint64_t now = 1000 * MS;

	(void)state;
	batch_init(&b);
	assert_int_equal(batch_decide(&b, &adaptive, now, false, true), BATCH_HOLD); /* empty */
	assert_int_equal(add(&b, mid_a, 1, "hello", now), BATCH_ADDED);
	/* Not busy and the connection idle: the token leaves now, no wait. */
	assert_int_equal(batch_decide(&b, &adaptive, now, false, true), BATCH_FLUSH);
	/* Not busy but the connection still has bytes queued: coalesce. */
	assert_int_equal(batch_decide(&b, &adaptive, now, false, false), BATCH_HOLD);
	batch_clear(&b, &pool);
}

static void test_busy_coalesces(void **state)
{
	struct batch b;
	uint64_t now = 1000 * MS;

	(void)state;
	batch_init(&b);
	assert_int_equal(add(&b, mid_a, 1, "a", now), BATCH_ADDED);
	assert_int_equal(add(&b, mid_a, 2, "\"b\"", now + 10), BATCH_ADDED);
	assert_int_equal(add(&b, mid_a, 3, "\n", now + 20), BATCH_ADDED);
	assert_int_equal(batch_decide(&b, &adaptive, now + 30, true, true), BATCH_HOLD);
	assert_int_equal(b.count, 3);
	assert_int_equal(b.first_seq, 1);
	assert_int_equal(b.last_seq, 3);
	assert_int_equal(b.len, 1 + 5 + 2);
	assert_memory_equal(b.buf->text, "a\\\"b\\\"\\n", 8);
	assert_true(b.buf->toks[1].arrival_ns == now + 10);
	assert_true(b.buf->toks[2].created_ns == now + 15);
	/* The guard deadline is the oldest token's arrival + max_delay. */
	assert_true(batch_deadline(&b, &adaptive) == now + 2 * MS);
	batch_clear(&b, &pool);
}

static void test_max_delay_bound(void **state)
{
	struct batch b;
	uint64_t now = 1000 * MS;

	(void)state;
	batch_init(&b);
	assert_int_equal(add(&b, mid_a, 1, "x", now), BATCH_ADDED);
	assert_int_equal(add(&b, mid_a, 2, "y", now + MS), BATCH_ADDED);
	assert_int_equal(batch_decide(&b, &adaptive, now + 2 * MS - 1, true, false), BATCH_HOLD);
	/* Measured from the oldest token, not the newest. */
	assert_int_equal(batch_decide(&b, &adaptive, now + 2 * MS, true, false), BATCH_FLUSH);
	batch_clear(&b, &pool);
}

static void test_max_bytes_bound(void **state)
{
	struct batch b;
	char tok[17];
	uint64_t now = 1000 * MS;

	(void)state;
	memset(tok, 'z', 16);
	tok[16] = '\0';
	batch_init(&b);
	for (uint32_t s = 1; s <= 4; s++)
		assert_int_equal(add(&b, mid_a, s, tok, now), BATCH_ADDED);
	/* Exactly max_bytes (64) held: flush even when busy and young. */
	assert_int_equal(b.len, 64);
	assert_int_equal(batch_decide(&b, &adaptive, now, true, false), BATCH_FLUSH);
	/* One more does not fit: the caller must flush first. */
	assert_int_equal(add(&b, mid_a, 5, "q", now), BATCH_FLUSH_FIRST);
	assert_int_equal(b.count, 4);
	batch_clear(&b, &pool);
	assert_int_equal(add(&b, mid_a, 5, "q", now), BATCH_ADDED);
	batch_clear(&b, &pool);
}

static void test_too_big_token(void **state)
{
	struct batch b;
	char tok[40];
	uint64_t now = 1000 * MS;

	(void)state;
	/* 33 control bytes escape to 6 bytes each: far above 64. */
	memset(tok, 0x01, 33);
	tok[33] = '\0';
	batch_init(&b);
	assert_int_equal(add(&b, mid_a, 1, tok, now), BATCH_TOO_BIG);
	assert_null(b.buf);
	assert_int_equal(b.count, 0);
}

static void test_message_change_and_gap(void **state)
{
	struct batch b;
	uint64_t now = 1000 * MS;

	(void)state;
	batch_init(&b);
	assert_int_equal(add(&b, mid_a, 1, "a", now), BATCH_ADDED);
	assert_int_equal(add(&b, mid_b, 1, "b", now), BATCH_FLUSH_FIRST);
	assert_int_equal(add(&b, mid_a, 3, "c", now), BATCH_FLUSH_FIRST); /* gap: seq 2 missing */
	assert_int_equal(b.count, 1);
	batch_clear(&b, &pool);
	assert_int_equal(add(&b, mid_b, 1, "b", now), BATCH_ADDED);
	assert_string_equal(b.mid, "m_b");
	batch_clear(&b, &pool);
}

static void test_mode_off(void **state)
{
	struct batch b;
	uint64_t now = 1000 * MS;

	(void)state;
	batch_init(&b);
	assert_int_equal(add(&b, mid_a, 1, "a", now), BATCH_ADDED);
	/* Busy, blocked and young: mode=off still frames at once. */
	assert_int_equal(batch_decide(&b, &off, now, true, false), BATCH_FLUSH);
	batch_clear(&b, &pool);
}

static void test_pool_limit_and_reuse(void **state)
{
	struct batch b[5];
	uint64_t now = 1000 * MS;

	(void)state;
	for (int i = 0; i < 5; i++)
		batch_init(&b[i]);
	for (int i = 0; i < 4; i++)
		assert_int_equal(add(&b[i], mid_a, 1, "t", now), BATCH_ADDED);
	assert_int_equal(add(&b[4], mid_a, 1, "t", now), BATCH_NOMEM);
	struct batch_buf *held = b[2].buf;
	batch_clear(&b[2], &pool);
	assert_int_equal(add(&b[4], mid_a, 1, "t", now), BATCH_ADDED);
	assert_ptr_equal(b[4].buf, held); /* recycled, not allocated */
	assert_int_equal(pool.allocated, 4);
	for (int i = 0; i < 5; i++)
		batch_clear(&b[i], &pool);
}

static void test_token_count_bound(void **state)
{
	struct batch_pool big;
	struct batch b;
	uint64_t now = 1000 * MS;
	uint32_t s;

	(void)state;
	assert_int_equal(batch_pool_init(&big, 4096, 1), 0);
	batch_init(&b);
	for (s = 1; s <= BATCH_MAX_TOKENS; s++)
		assert_int_equal(batch_add(&b, &big, mid_a, s, "x", 1, now, now),
				 BATCH_ADDED);
	assert_int_equal(batch_add(&b, &big, mid_a, s, "x", 1, now, now),
			 BATCH_FLUSH_FIRST);
	assert_int_equal(batch_decide(&b, &adaptive, now, true, false), BATCH_FLUSH);
	batch_clear(&b, &big);
	batch_pool_destroy(&big);
}

/* A batch starts in a small buffer and moves to a large one when it
 * outgrows it, keeping what it held. */
static void test_small_then_large(void **state)
{
	struct batch_pool big;
	struct batch b;
	uint64_t now = 1000 * MS;
	uint32_t s;

	(void)state;
	assert_int_equal(batch_pool_init(&big, 4096, 2), 0);
	batch_init(&b);
	for (s = 1; s <= BATCH_SMALL_TOKENS; s++)
		assert_int_equal(batch_add(&b, &big, mid_a, s, "ab", 2, now, now + s),
				 BATCH_ADDED);
	assert_false(b.buf->large);
	assert_int_equal(big.allocated, 1);
	assert_int_equal(batch_add(&b, &big, mid_a, s, "ab", 2, now, now + s), BATCH_ADDED);
	assert_true(b.buf->large);
	assert_int_equal(b.count, BATCH_SMALL_TOKENS + 1);
	assert_int_equal(b.len, 2 * (BATCH_SMALL_TOKENS + 1));
	assert_memory_equal(b.buf->text, "abababab", 8);
	assert_true(b.buf->toks[3].arrival_ns == now + 4);
	/* The small buffer went back to its free list. */
	assert_int_equal(big.small.nfree, 1);
	/* Text past the small size grows it too. */
	batch_clear(&b, &big);
	{
		char tok[BATCH_SMALL_TEXT + 10];

		memset(tok, 'k', sizeof(tok));
		assert_int_equal(batch_add(&b, &big, mid_a, 1, tok, sizeof(tok), now, now),
				 BATCH_ADDED);
		assert_true(b.buf->large);
		assert_int_equal(b.len, sizeof(tok));
	}
	batch_clear(&b, &big);
	batch_pool_destroy(&big);
	assert_int_equal(big.allocated, 0);
}

/* Past BATCH_POOL_KEEP free buffers a returned one is freed: a burst of
 * holders does not pin its memory. */
static void test_pool_gives_back(void **state)
{
	enum { N = BATCH_POOL_KEEP + 8 };
	struct batch_pool p;
	struct batch b[N];
	uint64_t now = 1000 * MS;

	(void)state;
	assert_int_equal(batch_pool_init(&p, 64, N), 0);
	for (int i = 0; i < N; i++) {
		batch_init(&b[i]);
		assert_int_equal(batch_add(&b[i], &p, mid_a, 1, "t", 1, now, now), BATCH_ADDED);
	}
	assert_int_equal(p.allocated, N);
	for (int i = 0; i < N; i++)
		batch_clear(&b[i], &p);
	assert_int_equal(p.allocated, BATCH_POOL_KEEP);
	assert_int_equal(p.small.nfree, BATCH_POOL_KEEP);
	batch_pool_destroy(&p);
	assert_int_equal(p.allocated, 0);
}

/* A stream is slow when the conn's previous token came max_delay or more
 * before: known only after its first token, and only for an empty batch. */
static void test_stream_pace(void **state)
{
	struct batch b;
	uint64_t now = 1000 * MS;

	(void)state;
	batch_init(&b);
	assert_false(batch_stream_slow(&b, &adaptive, now));
	batch_note_arrival(&b, now);
	assert_false(batch_stream_slow(&b, &adaptive, now + 2 * MS - 1));
	assert_true(batch_stream_slow(&b, &adaptive, now + 2 * MS));
	assert_int_equal(add(&b, mid_a, 1, "a", now + 3 * MS), BATCH_ADDED);
	assert_false(batch_stream_slow(&b, &adaptive, now + 9 * MS)); /* tokens held */
	batch_clear(&b, &pool);
	/* The pace survives the clear: it is the conn's, not the batch's. */
	assert_true(batch_stream_slow(&b, &adaptive, now + 5 * MS));
	assert_false(batch_stream_slow(&b, &adaptive, now + 4 * MS));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_light_load_flushes_same_turn),
		cmocka_unit_test(test_busy_coalesces),
		cmocka_unit_test(test_max_delay_bound),
		cmocka_unit_test(test_max_bytes_bound),
		cmocka_unit_test(test_too_big_token),
		cmocka_unit_test(test_message_change_and_gap),
		cmocka_unit_test(test_mode_off),
		cmocka_unit_test(test_pool_limit_and_reuse),
		cmocka_unit_test(test_token_count_bound),
		cmocka_unit_test(test_small_then_large),
		cmocka_unit_test(test_pool_gives_back),
		cmocka_unit_test(test_stream_pace),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
