/*
 * Unit tests for the chunked body decoder. Every case is fed whole, one
 * byte at a time, and split in two at every point; each piece is placed so
 * that its last byte touches a PROT_NONE page (a read past the end
 * faults). Every way must give the same answer, the same decoded body and
 * end at the same byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http_chunked.h"
#include "sluice/common.h"
#include "util/guardbuf.h"

#define MAX_BODY 64u

struct chunk_case {
	const char *name;
	const char *in;
	int status;       /* 0: DONE; -1: still incomplete at the end; else the error */
	const char *body; /* decoded body when status is 0 or -1 */
	size_t end;       /* bytes of the message on DONE (0: the whole input) */
};

static const struct chunk_case cases[] = {
	{ "empty body", "0\r\n\r\n", 0, "", 0 },
	{ "one chunk", "5\r\nhello\r\n0\r\n\r\n", 0, "hello", 0 },
	{ "two chunks", "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 0, "abcde", 0 },
	{ "hex upper and lower", "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", 0,
	  "0123456789abcdefghij", 0 },
	{ "leading zeros", "0005\r\nhello\r\n000\r\n\r\n", 0, "hello", 0 },
	{ "data with crlf inside", "4\r\n\r\n\r\n\r\n0\r\n\r\n", 0, "\r\n\r\n", 0 },
	{ "extension", "5;name\r\nhello\r\n0\r\n\r\n", 0, "hello", 0 },
	{ "extension with value", "5;a=b;c=\"d e\\\"\"\r\nhello\r\n0;last=1\r\n\r\n", 0, "hello", 0 },
	{ "extension bws", "5 ; a = b ;c\r\nhello\r\n0\r\n\r\n", 0, "hello", 0 },
	{ "quoted value then bws", "5;a=\"x\" ;b\r\nhello\r\n0\r\n\r\n", 0, "hello", 0 },
	{ "trailers", "5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:\r\n\r\n", 0, "hello", 0 },
	{ "next request follows", "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, "hi",
	  sizeof("2\r\nhi\r\n0\r\n\r\n") - 1 },
	{ "body of max size", "40\r\n0123456789012345678901234567890123456789012345678901234567890123"
	  "\r\n0\r\n\r\n", 0, "0123456789012345678901234567890123456789012345678901234567890123", 0 },
	{ "incomplete in data", "5\r\nhel", -1, "hel", 0 },
	{ "incomplete in trailers", "1\r\na\r\n0\r\nX: y\r\n", -1, "a", 0 },

	{ "empty size", "\r\n", 400, NULL, 0 },
	{ "0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", 400, NULL, 0 },
	{ "sign", "+5\r\nhello\r\n0\r\n\r\n", 400, NULL, 0 },
	{ "negative", "-1\r\n", 400, NULL, 0 },
	{ "space before size", " 5\r\n", 400, NULL, 0 },
	{ "space after size without ext", "5 \r\nhello\r\n0\r\n\r\n", 400, NULL, 0 },
	{ "bare lf after size", "5\nhello\r\n0\r\n\r\n", 400, NULL, 0 },
	{ "bare cr after size", "5\rhello", 400, NULL, 0 },
	{ "bare lf after data", "5\r\nhello\n0\r\n\r\n", 400, NULL, 0 },
	{ "data longer than size", "3\r\nhello\r\n0\r\n\r\n", 400, NULL, 0 },
	{ "no crlf after data", "5\r\nhelloX\r\n", 400, NULL, 0 },
	{ "bad hex digit", "5g\r\n", 400, NULL, 0 },
	{ "empty extension name", "5;\r\n", 400, NULL, 0 },
	{ "extension name bad char", "5;a@b\r\n", 400, NULL, 0 },
	{ "extension empty value", "5;a=\r\n", 400, NULL, 0 },
	{ "extension name then space then crlf", "5;a \r\n", 400, NULL, 0 },
	{ "extension unterminated quote", "5;a=\"x\r\n", 400, NULL, 0 },
	{ "extension ctl in quote", "5;a=\"\x01\"\r\n", 400, NULL, 0 },
	{ "extension junk after quote", "5;a=\"x\"y\r\n", 400, NULL, 0 },
	{ "bare lf in trailers", "0\r\nX: y\n\r\n", 400, NULL, 0 },
	{ "obs-fold in trailers", "0\r\nX: y\r\n z\r\n\r\n", 400, NULL, 0 },
	{ "space before colon in trailers", "0\r\nX : y\r\n\r\n", 400, NULL, 0 },
	{ "empty trailer name", "0\r\n: y\r\n\r\n", 400, NULL, 0 },
	{ "ctl in trailer value", "0\r\nX: a\x7f\r\n\r\n", 400, NULL, 0 },
	{ "bare lf at end", "0\r\n\n", 400, NULL, 0 },
	{ "cr then junk at end", "0\r\n\rX", 400, NULL, 0 },
	{ "nul in size", "5\0\r\n", 400, NULL, 0 },
	{ "chunk over max", "41\r\n", 413, NULL, 0 },
	{ "sum over max", "40\r\n0123456789012345678901234567890123456789012345678901234567890123"
	  "\r\n1\r\n", 413, NULL, 0 },
	{ "size overflow", "10000000000000001\r\n", 413, NULL, 0 },
	{ "size overflow after zeros", "0000000000000000000000000000010000000000000000\r\n", 413, NULL, 0 },
};

struct outcome {
	int status;  /* as in chunk_case */
	size_t end;  /* bytes consumed when it ended */
	char body[MAX_BODY + 1];
	size_t blen;
};

/*
 * Feeds in[0..n) in pieces that end at the offsets in cuts[] (the last is
 * n), each piece on its own guard page. A piece ends where the decoder
 * stops; what it left unconsumed is fed again with the next piece, as the
 * transport does.
 */
static void run(const char *in, size_t n, const size_t *cuts, size_t ncuts, struct outcome *o)
{
	struct http_chunked d;
	size_t pos = 0; /* first byte not consumed */

	assert_true(ncuts > 0 && cuts[ncuts - 1] == n);
	memset(o, 0, sizeof(*o));
	o->status = -1;
	http_chunked_init(&d, MAX_BODY);
	for (size_t k = 0; k < ncuts; k++) {
		size_t stop = cuts[k];
		struct guardbuf g;
		const uint8_t *p = guardbuf_place(&g, in + pos, stop - pos);
		size_t off = 0, len = stop - pos;

		while (off < len) {
			struct http_slice data;
			size_t used = 0;
			int st = 0;
			int r = http_chunked_step(&d, p + off, len - off, &used, &data, &st);

			assert_true(used <= len - off);
			if (r == HTTP_CHUNKED_DATA) {
				assert_true(data.p >= (const char *)p + off &&
					    data.p + data.len <= (const char *)p + off + used);
				assert_true(o->blen + data.len <= MAX_BODY);
				memcpy(o->body + o->blen, data.p, data.len);
				o->blen += data.len;
			}
			off += used;
			if (r == HTTP_CHUNKED_DONE || r == HTTP_CHUNKED_ERROR) {
				o->status = r == HTTP_CHUNKED_DONE ? 0 : st;
				o->end = pos + off;
				guardbuf_free(&g);
				return;
			}
			if (r == HTTP_CHUNKED_MORE)
				assert_int_equal(off, len);
		}
		pos = stop;
		guardbuf_free(&g);
	}
}

static void expect(const struct chunk_case *c, size_t n, const struct outcome *o, const char *how)
{
	if (o->status != c->status)
		fail_msg("%s (%s): status %d, want %d", c->name, how, o->status, c->status);
	if (c->body && (o->blen != strlen(c->body) || memcmp(o->body, c->body, o->blen) != 0))
		fail_msg("%s (%s): body '%.*s', want '%s'", c->name, how, (int)o->blen, o->body,
			 c->body);
	if (c->status == 0 && o->end != (c->end ? c->end : n))
		fail_msg("%s (%s): ended at %zu, want %zu", c->name, how, o->end,
			 c->end ? c->end : n);
}

static size_t case_len(const struct chunk_case *c)
{
	/* The one case with a NUL inside: "5", NUL, CR, LF. */
	if (strcmp(c->name, "nul in size") == 0)
		return 4;
	return strlen(c->in);
}

static void test_every_split(void **state)
{
	(void)state;
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
		const struct chunk_case *c = &cases[i];
		size_t n = case_len(c);
		struct outcome whole, o;
		size_t cuts[2];
		char how[64];

		cuts[0] = n;
		run(c->in, n, cuts, 1, &whole);
		expect(c, n, &whole, "whole");
		for (size_t k = 0; k <= n; k++) {
			cuts[0] = k;
			cuts[1] = n;
			run(c->in, n, cuts, 2, &o);
			snprintf(how, sizeof(how), "split at %zu", k);
			if (o.status != whole.status || (whole.status == 0 && o.end != whole.end) ||
			    o.blen != whole.blen ||
			    memcmp(o.body, whole.body, o.blen) != 0)
				fail_msg("%s (%s): differs from the whole input", c->name, how);
		}
		size_t *bytes = malloc((n ? n : 1) * sizeof(*bytes));
		assert_non_null(bytes);
		for (size_t k = 0; k < n; k++)
			bytes[k] = k + 1;
		run(c->in, n, bytes, n, &o);
		free(bytes);
		if (o.status != whole.status || (whole.status == 0 && o.end != whole.end) ||
		    o.blen != whole.blen)
			fail_msg("%s (byte at a time): differs from the whole input", c->name);
	}
}

/* The limits of docs/http.md, each at its bound and one past it. */
static void test_limits(void **state)
{
	(void)state;
	char *in = malloc(3 * HTTP_MAX_HEADER_BYTES);
	struct outcome o;
	size_t n, cut;

	assert_non_null(in);
	/* A size line of exactly HTTP_CHUNK_LINE_MAX bytes, then one more. */
	for (size_t extra = 0; extra <= 1; extra++) {
		n = 0;
		in[n++] = '1';
		in[n++] = ';';
		while (n < HTTP_CHUNK_LINE_MAX + extra)
			in[n++] = 'x';
		memcpy(in + n, "\r\na\r\n0\r\n\r\n", 10);
		n += 10;
		cut = n;
		run(in, n, &cut, 1, &o);
		assert_int_equal(o.status, extra ? 400 : 0);
	}
	/* Extensions over several chunks: HTTP_CHUNK_EXT_MAX bytes in all. */
	n = 0;
	size_t ext = 0;
	while (ext + 1001 <= HTTP_CHUNK_EXT_MAX + 1001) {
		in[n++] = '1';
		in[n++] = ';';
		for (size_t k = 0; k < 999; k++)
			in[n++] = 'e';
		ext += 1001; /* ';' and 999 name bytes, counted after the size */
		memcpy(in + n, "\r\na\r\n", 5);
		n += 5;
		if (n + 1100 > 3 * HTTP_MAX_HEADER_BYTES)
			break;
	}
	memcpy(in + n, "0\r\n\r\n", 5);
	n += 5;
	cut = n;
	run(in, n, &cut, 1, &o);
	assert_int_equal(o.status, 400);
	/* A trailer section of exactly HTTP_MAX_HEADER_BYTES, then one more. */
	for (size_t extra = 0; extra <= 1; extra++) {
		n = 0;
		memcpy(in, "0\r\n", 3);
		n = 3;
		size_t tb = 0;
		while (tb + 1000 <= HTTP_MAX_HEADER_BYTES) {
			memcpy(in + n, "X:", 2);
			memset(in + n + 2, 'v', 996);
			memcpy(in + n + 998, "\r\n", 2);
			n += 1000;
			tb += 1000;
		}
		size_t rest = HTTP_MAX_HEADER_BYTES + extra - tb;
		memcpy(in + n, "Y:", 2);
		memset(in + n + 2, 'v', rest - 4);
		memcpy(in + n + rest - 2, "\r\n", 2);
		n += rest;
		memcpy(in + n, "\r\n", 2);
		n += 2;
		cut = n;
		run(in, n, &cut, 1, &o);
		assert_int_equal(o.status, extra ? 431 : 0);
	}
	/* HTTP_MAX_HEADERS trailer lines, then one more. */
	for (size_t extra = 0; extra <= 1; extra++) {
		memcpy(in, "0\r\n", 3);
		n = 3;
		for (size_t k = 0; k < HTTP_MAX_HEADERS + extra; k++) {
			memcpy(in + n, "T:\r\n", 4);
			n += 4;
		}
		memcpy(in + n, "\r\n", 2);
		n += 2;
		cut = n;
		run(in, n, &cut, 1, &o);
		assert_int_equal(o.status, extra ? 431 : 0);
	}
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
