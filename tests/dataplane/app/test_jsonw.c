/* jsonw.h: JSON string escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "app/jsonw.h"

static size_t esc(char *out, size_t cap, const char *in, size_t len)
{
	size_t n = jsonw_escape(out, cap, in, len);

	if (n != JSONW_NOSPACE && n < cap)
		out[n] = '\0';
	return n;
}

static void test_control_chars(void **state)
{
	char in[32], out[256], want[16];

	(void)state;
	for (int ch = 0; ch < 0x20; ch++) {
		const char *shortform = NULL;

		in[0] = (char)ch;
		switch (ch) {
		case '\b': shortform = "\\b"; break;
		case '\f': shortform = "\\f"; break;
		case '\n': shortform = "\\n"; break;
		case '\r': shortform = "\\r"; break;
		case '\t': shortform = "\\t"; break;
		default: break;
		}
		if (shortform)
			strcpy(want, shortform);
		else
			snprintf(want, sizeof(want), "\\u%04x", ch);
		assert_int_equal(esc(out, sizeof(out), in, 1), strlen(want));
		assert_string_equal(out, want);
		assert_int_equal(jsonw_escaped_len(in, 1), strlen(want));
	}
}

static void test_quotes_backslash(void **state)
{
	char out[64];
	const char *in = "say \"hi\" \\ there/";

	(void)state;
	assert_int_equal(esc(out, sizeof(out), in, strlen(in)), strlen(in) + 3);
	assert_string_equal(out, "say \\\"hi\\\" \\\\ there/");
}

static void test_utf8_passes(void **state)
{
	char out[64];
	const char *in = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f";

	(void)state;
	assert_int_equal(esc(out, sizeof(out), in, strlen(in)), strlen(in));
	assert_memory_equal(out, in, strlen(in));
}

static void test_nospace_never_truncates(void **state)
{
	char out[8];

	(void)state;
	/* "a\n" needs 3 bytes: 2 is too few, 3 fits exactly. */
	assert_true(jsonw_escape(out, 2, "a\n", 2) == JSONW_NOSPACE);
	assert_int_equal(jsonw_escape(out, 3, "a\n", 2), 3);
	assert_memory_equal(out, "a\\n", 3);
	/* A 6-byte \u escape must not be cut to fit. */
	assert_true(jsonw_escape(out, 5, "\x01", 1) == JSONW_NOSPACE);
	assert_int_equal(jsonw_escape(out, 0, "", 0), 0);
}

static void test_escaped_len_matches(void **state)
{
	uint8_t in[256];
	char out[256 * 6];

	(void)state;
	for (int i = 0; i < 256; i++)
		in[i] = (uint8_t)i;
	assert_int_equal(jsonw_escaped_len(in, sizeof(in)),
			 jsonw_escape(out, sizeof(out), in, sizeof(in)));
	/* 32 control chars: 5 short (2 bytes) + 27 \u00XX (6 bytes); '"' and
	 * '\\' 2 bytes each; 222 other bytes 1 each. */
	assert_int_equal(jsonw_escaped_len(in, sizeof(in)), 5 * 2 + 27 * 6 + 2 * 2 + 222);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_control_chars),
		cmocka_unit_test(test_quotes_backslash),
		cmocka_unit_test(test_utf8_passes),
		cmocka_unit_test(test_nospace_never_truncates),
		cmocka_unit_test(test_escaped_len_matches),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
