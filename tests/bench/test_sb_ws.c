/* sb_ws: server frames read in every split; client frames masked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sb_ws.h"

struct got {
	int n;
	uint8_t op[8];
	size_t len[8];
	uint8_t first[8];
};

static void on_frame(void *arg, uint8_t op, const uint8_t *p, size_t len)
{
	struct got *g = arg;

	assert_true(g->n < 8);
	g->op[g->n] = op;
	g->len[g->n] = len;
	g->first[g->n] = len ? p[0] : 0;
	for (size_t i = 0; i < len; i++)
		assert_int_equal(p[i], (uint8_t)(p[0] + i));
	g->n++;
}

/* A server frame (unmasked) of len bytes counting up from start. */
static size_t server_frame(uint8_t *out, uint8_t op, size_t len, uint8_t start)
{
	size_t h = 2;

	out[0] = (uint8_t)(0x80 | op);
	if (len < 126) {
		out[1] = (uint8_t)len;
	} else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		h = 4;
	} else {
		out[1] = 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
		h = 10;
	}
	for (size_t i = 0; i < len; i++)
		out[h + i] = (uint8_t)(start + i);
	return h + len;
}

static void test_every_split(void **state)
{
	static uint8_t buf[80000];
	size_t n = 0;

	(void)state;
	n += server_frame(buf + n, 1, 5, 10);
	n += server_frame(buf + n, 1, 0, 0);
	n += server_frame(buf + n, 1, 300, 20);
	n += server_frame(buf + n, 2, 70000, 30);
	n += server_frame(buf + n, 8, 2, 3);
	for (size_t step = 1; step <= n; step = step < 64 ? step + 1 : step * 3) {
		struct sb_ws w;
		struct got g;

		memset(&g, 0, sizeof(g));
		sb_ws_init(&w, 7);
		for (size_t off = 0; off < n; off += step)
			assert_true(sb_ws_feed(&w, buf + off, n - off < step ? n - off : step, on_frame, &g));
		assert_int_equal(g.n, 5);
		assert_int_equal(g.len[0], 5);
		assert_int_equal(g.first[0], 10);
		assert_int_equal(g.len[1], 0);
		assert_int_equal(g.len[2], 300);
		assert_int_equal(g.op[3], 2);
		assert_int_equal(g.len[3], 70000);
		assert_int_equal(g.op[4], 8);
		assert_int_equal(w.carry.len, 0);
		sb_ws_free(&w);
	}
}

static void test_masked_server_frame_refused(void **state)
{
	const uint8_t bad[] = { 0x81, 0x81, 1, 2, 3, 4, 'a' };
	struct sb_ws w;
	struct got g;

	(void)state;
	memset(&g, 0, sizeof(g));
	sb_ws_init(&w, 1);
	assert_false(sb_ws_feed(&w, bad, sizeof(bad), on_frame, &g));
	sb_ws_free(&w);
}

static void test_client_frame_masked(void **state)
{
	struct sb_ws w;
	uint8_t out[400];
	const char msg[] = "{\"type\":\"subscribe\"}";
	size_t n;

	(void)state;
	sb_ws_init(&w, 99);
	n = sb_ws_build(&w, out, 1, msg, sizeof(msg) - 1);
	assert_int_equal(n, 2 + 4 + sizeof(msg) - 1);
	assert_int_equal(out[0], 0x81);
	assert_int_equal(out[1], 0x80 | (sizeof(msg) - 1));
	for (size_t i = 0; i < sizeof(msg) - 1; i++)
		assert_int_equal(out[6 + i] ^ out[2 + (i & 3)], (uint8_t)msg[i]);
	/* 126..65535 bytes: the 16-bit length form. */
	{
		static uint8_t big[300], fr[320];

		n = sb_ws_build(&w, fr, 1, big, sizeof(big));
		assert_int_equal(fr[1], 0x80 | 126);
		assert_int_equal((fr[2] << 8) | fr[3], sizeof(big));
		assert_int_equal(n, 4 + 4 + sizeof(big));
	}
	sb_ws_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_masked_server_frame_refused),
		cmocka_unit_test(test_client_frame_masked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
