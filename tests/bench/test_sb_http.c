/* sb_http and sb_json: response heads, chunked bodies in every split, and
 * the member lookups the bench reads events with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sb_http.h"
#include "sb_json.h"

static void test_head(void **state)
{
	const char *ok = "HTTP/1.1 202 Accepted\r\ncontent-length: 16\r\nConnection: keep-alive\r\n\r\n{}";
	const char *ch = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
	struct sb_http_head h;

	(void)state;
	assert_int_equal(sb_http_head_parse(ok, strlen(ok), &h), (int)strlen(ok) - 2);
	assert_int_equal(h.status, 202);
	assert_int_equal(h.content_length, 16);
	assert_false(h.chunked);
	assert_false(h.close);
	assert_int_equal(sb_http_head_parse(ch, strlen(ch), &h), (int)strlen(ch));
	assert_true(h.chunked);
	assert_true(h.close);
	assert_int_equal(h.content_length, -1);
	assert_int_equal(sb_http_head_parse(ok, 20, &h), 0);
	assert_int_equal(sb_http_head_parse("SMTP ready\r\n\r\n", 14, &h), -1);
}

struct body {
	char buf[256];
	size_t len;
};

static bool collect(void *arg, const char *d, size_t n)
{
	struct body *b = arg;

	assert_true(b->len + n < sizeof(b->buf));
	memcpy(b->buf + b->len, d, n);
	b->len += n;
	return true;
}

static void test_chunked_every_split(void **state)
{
	const char body[] = "6\r\ndata: \r\n17;ext=1\r\n{\"x\":1}\n\ndata: [DONE]\n\n\r\n0\r\n\r\nNEXT";
	size_t len = sizeof(body) - 1;

	(void)state;
	for (size_t step = 1; step <= len; step++) {
		struct sb_chunked c;
		struct body b;
		size_t off = 0;

		memset(&c, 0, sizeof(c));
		memset(&b, 0, sizeof(b));
		while (off < len && c.state != SB_CH_DONE) {
			size_t n = len - off < step ? len - off : step;
			long used = sb_chunked_feed(&c, body + off, n, collect, &b);

			assert_true(used >= 0);
			off += (size_t)used;
		}
		assert_int_equal(c.state, SB_CH_DONE);
		assert_int_equal(b.len, 6 + 23);
		assert_memory_equal(b.buf, "data: {\"x\":1}\n\ndata: [DONE]\n\n", 29);
		/* The bytes after the body are not the body's. */
		assert_string_equal(body + off, "NEXT");
	}
}

static void test_chunked_malformed(void **state)
{
	struct sb_chunked c;
	struct body b;

	(void)state;
	memset(&c, 0, sizeof(c));
	memset(&b, 0, sizeof(b));
	assert_true(sb_chunked_feed(&c, "2\r\nabX", 6, collect, &b) < 0);
}

static void test_json_members(void **state)
{
	const char ev[] = "{\"session_id\":\"s_1\",\"message_id\":\"m_2\",\"seq\":41,\"n\":3,"
			  "\"text\":\"say \\\"seq\\\":9, \\\"n\\\":[\",\"created_ns\":[5, 6,700]}";
	uint64_t v, arr[4];
	const char *s;
	size_t sl;

	(void)state;
	assert_true(sb_json_u64(ev, sizeof(ev) - 1, "seq", &v));
	assert_int_equal(v, 41);
	assert_true(sb_json_u64(ev, sizeof(ev) - 1, "n", &v));
	assert_int_equal(v, 3);
	assert_false(sb_json_u64(ev, sizeof(ev) - 1, "missing", &v));
	assert_true(sb_json_str(ev, sizeof(ev) - 1, "text", &s, &sl));
	assert_int_equal(sl, strlen("say \\\"seq\\\":9, \\\"n\\\":["));
	assert_int_equal(sb_json_u64_array(ev, sizeof(ev) - 1, "created_ns", arr, 4), 3);
	assert_int_equal(arr[0], 5);
	assert_int_equal(arr[2], 700);
	assert_int_equal(sb_json_u64_array(ev, sizeof(ev) - 1, "created_ns", arr, 2), 2);
	assert_int_equal(sb_json_u64_array(ev, sizeof(ev) - 1, "nope", arr, 2), -1);
	assert_true(sb_json_str(ev, sizeof(ev) - 1, "message_id", &s, &sl));
	assert_memory_equal(s, "m_2", 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_head),
		cmocka_unit_test(test_chunked_every_split),
		cmocka_unit_test(test_chunked_malformed),
		cmocka_unit_test(test_json_members),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
