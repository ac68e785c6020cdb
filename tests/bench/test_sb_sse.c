/* sb_sse: the client-side SSE reader, fed the same stream in every split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sb_sse.h"

struct got {
	int n, comments;
	char ev[16][32];
	char data[16][256];
};

static void on_data(void *arg, const char *event, const char *data, size_t len)
{
	struct got *g = arg;

	assert_true(g->n < 16);
	snprintf(g->ev[g->n], sizeof(g->ev[0]), "%s", event);
	snprintf(g->data[g->n], sizeof(g->data[0]), "%.*s", (int)len, data);
	g->n++;
}

static void on_comment(void *arg, const char *text, size_t len)
{
	struct got *g = arg;

	(void)text;
	(void)len;
	g->comments++;
}

static const struct sb_sse_ops ops = { .on_data = on_data, .on_comment = on_comment };

static const char stream[] =
	":ok\n\n"
	"id: m_1:1\nevent: token\ndata: {\"seq\":1,\"n\":1,\"text\":\"a: b\"}\n\n"
	"id: m_1:u\r\nevent: usage\r\ndata:{\"x\":1}\r\n\r\n"
	"data: {\"type\":\"token\",\"seq\":2}\n\n"
	":keep-alive\n\n";

static void check(const struct got *g)
{
	assert_int_equal(g->n, 3);
	assert_int_equal(g->comments, 2);
	assert_string_equal(g->ev[0], "token");
	assert_string_equal(g->data[0], "{\"seq\":1,\"n\":1,\"text\":\"a: b\"}");
	assert_string_equal(g->ev[1], "usage");
	assert_string_equal(g->data[1], "{\"x\":1}");
	/* The event name does not leak into the next event. */
	assert_string_equal(g->ev[2], "");
	assert_string_equal(g->data[2], "{\"type\":\"token\",\"seq\":2}");
}

static void test_every_split(void **state)
{
	size_t len = strlen(stream);

	(void)state;
	for (size_t step = 1; step <= len; step++) {
		struct sb_sse s;
		struct got g;

		memset(&g, 0, sizeof(g));
		sb_sse_init(&s);
		for (size_t off = 0; off < len; off += step) {
			size_t n = len - off < step ? len - off : step;

			assert_true(sb_sse_feed(&s, stream + off, n, &ops, &g));
		}
		check(&g);
		/* Nothing pending once the stream ended on a line break. */
		assert_int_equal(s.carry.len, 0);
		sb_sse_free(&s);
	}
}

static void test_line_too_long(void **state)
{
	static char big[SB_SSE_LINE_MAX + 16];
	struct sb_sse s;
	struct got g;

	(void)state;
	memset(&g, 0, sizeof(g));
	memset(big, 'x', sizeof(big));
	sb_sse_init(&s);
	assert_true(sb_sse_feed(&s, big, SB_SSE_LINE_MAX / 2, &ops, &g));
	assert_false(sb_sse_feed(&s, big, sizeof(big) - SB_SSE_LINE_MAX / 2, &ops, &g));
	sb_sse_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_line_too_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
