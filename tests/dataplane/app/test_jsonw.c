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

/* The escape of one byte, written the plain way. */
static size_t ref_char(char *out, uint8_t ch)
{
	switch (ch) {
	case '"': return (size_t)snprintf(out, 8, "\\\"");
	case '\\': return (size_t)snprintf(out, 8, "\\\\");
	case '\b': return (size_t)snprintf(out, 8, "\\b");
	case '\f': return (size_t)snprintf(out, 8, "\\f");
	case '\n': return (size_t)snprintf(out, 8, "\\n");
	case '\r': return (size_t)snprintf(out, 8, "\\r");
	case '\t': return (size_t)snprintf(out, 8, "\\t");
	default:
		if (ch < 0x20)
			return (size_t)snprintf(out, 8, "\\u%04x", ch);
		out[0] = (char)ch;
		return 1;
	}
}

/* Plain runs go 8 bytes at a time: every byte value at every place of
 * inputs of every length up to 24 (word-aligned or not, near the end or
 * not) escapes exactly as byte by byte, and every cap short of the whole
 * is refused. */
static void test_words_match_bytes(void **state)
{
	uint8_t in[24];
	char want[24 * 6], got[24 * 6];

	(void)state;
	for (size_t len = 1; len <= sizeof(in); len++) {
		for (size_t at = 0; at < len; at++) {
			for (int ch = 0; ch < 256; ch++) {
				size_t wl = 0;

				for (size_t i = 0; i < len; i++)
					in[i] = (uint8_t)('a' + i);
				in[at] = (uint8_t)ch;
				for (size_t i = 0; i < len; i++)
					wl += ref_char(want + wl, in[i]);
				assert_int_equal(jsonw_escape(got, sizeof(got), in, len), wl);
				assert_memory_equal(got, want, wl);
				if (ch == '"' || ch == 0x1f || ch == 0x80) {
					for (size_t cap = 0; cap < wl; cap++)
						assert_true(jsonw_escape(got, cap, in, len) == JSONW_NOSPACE);
					assert_int_equal(jsonw_escape(got, wl, in, len), wl);
				}
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_control_chars),
		cmocka_unit_test(test_quotes_backslash),
		cmocka_unit_test(test_utf8_passes),
		cmocka_unit_test(test_nospace_never_truncates),
		cmocka_unit_test(test_escaped_len_matches),
		cmocka_unit_test(test_words_match_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
