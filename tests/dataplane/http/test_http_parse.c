/*
 * Unit tests for the HTTP/1.1 request-head parser. Every input is placed so
 * that its last byte touches a PROT_NONE page (a read past the end faults),
 * and every case is fed at every split: each prefix must answer "need more"
 * until the point where the answer is known, then the same answer on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http_parse.h"
#include "sluice/common.h"
#include "util/guardbuf.h"

#define NHDR 128

struct parse_case {
	const char *name;
	const char *in;
	int status;        /* 0: complete, else the expected error status */
	size_t decided_at; /* prefix length where the answer is known (the head
			    * length on success); 0: the whole input */
	size_t len;        /* input length when it holds a NUL; 0: strlen(in) */
};

static const struct parse_case cases[] = {
	/* valid */
	{ "simple get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 0, 0 },
	{ "http/1.0 without host", "GET /x HTTP/1.0\r\n\r\n", 0, 0, 0 },
	{ "http/1.0 with host", "GET /x HTTP/1.0\r\nHost: a\r\n\r\n", 0, 0, 0 },
	{ "query", "GET /a/b?c=d&e=%41 HTTP/1.1\r\nHost: h\r\n\r\n", 0, 0, 0 },
	{ "empty query", "GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", 0, 0, 0 },
	{ "options star", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 0, 0, 0 },
	{ "extension method", "PURGE-X /c HTTP/1.1\r\nHost: h\r\n\r\n", 0, 0, 0 },
	{ "ows trimmed", "GET / HTTP/1.1\r\nHost: \t a \t\r\nX:\r\n\r\n", 0, 0, 0 },
	{ "htab and obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\xc3\xa9\r\n\r\n", 0, 0, 0 },
	{ "host with port and ipv6", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 0, 0, 0 },
	{ "empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0, 0, 0 },
	{ "body follows head", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd", 0,
	  sizeof("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n") - 1, 0 },
	{ "pipelined second request", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n", 0,
	  sizeof("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n") - 1, 0 },
	{ "tchar-rich header name", "GET / HTTP/1.1\r\nHost: a\r\nX-!#$%&'*+.^_`|~: v\r\n\r\n", 0, 0, 0 },
	{ "sub-delims in target", "GET /!$&'()*+,;=:@-._~ HTTP/1.1\r\nHost: a\r\n\r\n", 0, 0, 0 },

	/* malformed request line */
	{ "empty line first", "\r\n", 400, 0, 0 },
	{ "bare lf request line", "GET / HTTP/1.1\n", 400, 0, 0 },
	{ "double space", "GET  / HTTP/1.1\r\n", 400, 0, 0 },
	{ "tab separator", "GET\t/ HTTP/1.1\r\n", 400, 0, 0 },
	{ "no version", "GET /\r\n", 400, 0, 0 },
	{ "trailing space", "GET / HTTP/1.1 \r\n", 400, 0, 0 },
	{ "lowercase http", "GET / http/1.1\r\n", 400, 0, 0 },
	{ "bad method char", "G@T / HTTP/1.1\r\n", 400, 0, 0 },
	{ "absolute form", "GET http://a/ HTTP/1.1\r\n", 400, 0, 0 },
	{ "authority form", "CONNECT a:443 HTTP/1.1\r\n", 400, 0, 0 },
	{ "star for get", "GET * HTTP/1.1\r\n", 400, 0, 0 },
	{ "star with suffix", "OPTIONS *x HTTP/1.1\r\n", 400, 0, 0 },
	{ "bad percent", "GET /%4g HTTP/1.1\r\n", 400, 0, 0 },
	{ "short percent", "GET /% HTTP/1.1\r\n", 400, 0, 0 },
	{ "fragment in target", "GET /a#b HTTP/1.1\r\n", 400, 0, 0 },
	{ "control in target", "GET /a\x01 HTTP/1.1\r\n", 400, 0, 0 },
	{ "non-ascii in target", "GET /\xc3\xa9 HTTP/1.1\r\n", 400, 0, 0 },
	{ "version two digits", "GET / HTTP/1.10\r\n", 400, 0, 0 },
	{ "bare cr in request line", "GET / HT\rTP/1.1\r\n", 400, 0, 0 },
	{ "version 2.0", "GET / HTTP/2.0\r\n", 505, 0, 0 },
	{ "version 1.2", "GET / HTTP/1.2\r\n", 505, 0, 0 },
	{ "version 0.9", "GET / HTTP/0.9\r\n", 505, 0, 0 },

	/* malformed header lines */
	{ "bare lf header", "GET / HTTP/1.1\r\nHost: a\n", 400, 0, 0 },
	{ "bare lf terminator", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400, 0, 0 },
	{ "space before colon", "GET / HTTP/1.1\r\nHost : a\r\n", 400, 0, 0 },
	{ "obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n", 400, 0, 0 },
	{ "leading space", "GET / HTTP/1.1\r\n Host: a\r\n", 400, 0, 0 },
	{ "no colon", "GET / HTTP/1.1\r\nHost\r\n", 400, 0, 0 },
	{ "empty name", "GET / HTTP/1.1\r\n: a\r\n", 400, 0, 0 },
	{ "control in value", "GET / HTTP/1.1\r\nX: a\x7f\r\n", 400, 0, 0 },
	{ "nul in value", "GET / HTTP/1.1\r\nX: a\0b\r\n", 400, 0, sizeof("GET / HTTP/1.1\r\nX: a\0b\r\n") - 1 },
	{ "bare cr in value", "GET / HTTP/1.1\r\nX: a\rb\r\n", 400, 0, 0 },
	{ "cr cr lf", "GET / HTTP/1.1\r\nX: a\r\r\n", 400, 0, 0 },
	{ "bad name char", "GET / HTTP/1.1\r\nX(y): a\r\n", 400, 0, 0 },
	{ "missing host", "GET / HTTP/1.1\r\nX: a\r\n\r\n", 400, 0, 0 },
	{ "duplicate host", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400, 0, 0 },
	{ "duplicate host 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n", 400, 0, 0 },
	{ "host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, 0, 0 },
	{ "host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, 0, 0 },
};

/* Copies the first n bytes of src so that they end at `end` (a guard page). */
static const char *place_prefix(uint8_t *end, const char *src, size_t n)
{
	memcpy(end - n, src, n);
	return (const char *)(end - n);
}

/*
 * Parses buf[0..n), `last` being the previous length (0: fresh), and checks
 * the answer a prefix of that length must get: "need more" before
 * decided_at, then the error `status`, or success returning decided_at.
 */
static void expect_prefix(const char *name, const char *buf, size_t n, size_t last,
			  size_t decided_at, int status)
{
	struct http_header hdrs[NHDR];
	struct http_request req = { .headers = hdrs, .num_headers = NHDR };
	int st = -1;
	int r = http_parse_request(buf, n, last, &req, &st);

	if (n < decided_at) {
		if (r != HTTP_PARSE_INCOMPLETE)
			fail_msg("%s: prefix %zu (last %zu): got %d (status %d), want incomplete", name,
				 n, last, r, st);
		assert_int_equal(req.num_headers, NHDR);
	} else if (status) {
		if (r != HTTP_PARSE_ERROR || st != status)
			fail_msg("%s: prefix %zu (last %zu): got %d (status %d), want error %d", name, n,
				 last, r, st, status);
		assert_int_equal(req.num_headers, NHDR);
	} else if (r < 0 || (size_t)r != decided_at) {
		fail_msg("%s: prefix %zu (last %zu): got %d (status %d), want %zu", name, n, last, r,
			 st, decided_at);
	}
}

/*
 * Feeds every prefix of in[0..len): from scratch, chained one byte at a time
 * through last_len, and chained in bigger steps (several new bytes a call).
 */
static void run_every_split(const char *name, const char *in, size_t len, size_t decided_at,
			    int status)
{
	struct guardbuf g;
	uint8_t *end = guardbuf_place(&g, in, len) + len;

	for (size_t n = 0; n <= len; n++) {
		const char *buf = place_prefix(end, in, n);
		expect_prefix(name, buf, n, 0, decided_at, status);
		if (n > 0 && n <= decided_at)
			expect_prefix(name, buf, n, n - 1, decided_at, status);
	}
	static const size_t steps[] = { 2, 3, 7, 64, 1000 };
	for (size_t s = 0; s < SLUICE_ARRAY_LEN(steps); s++) {
		size_t last = 0;
		for (size_t n = steps[s];; n += steps[s]) {
			size_t m = n > len ? len : n;
			const char *buf = place_prefix(end, in, m);
			expect_prefix(name, buf, m, last, decided_at, status);
			if (m >= decided_at || m == len)
				break;
			last = m;
		}
	}
	guardbuf_free(&g);
}

static void test_table_every_split(void **state)
{
	(void)state;
	assert_true(SLUICE_ARRAY_LEN(cases) >= 40);
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
		const struct parse_case *c = &cases[i];
		size_t len = c->len ? c->len : strlen(c->in);
		size_t decided = c->decided_at ? c->decided_at : len;
		run_every_split(c->name, c->in, len, decided, c->status);
	}
}

static int parse_once(const char *in, size_t len, struct http_request *req,
		      struct http_header *hdrs, size_t cap, int *status, struct guardbuf *g)
{
	const char *buf = (const char *)guardbuf_place(g, in, len);

	req->headers = hdrs;
	req->num_headers = cap;
	return http_parse_request(buf, len, 0, req, status);
}

static int slice_is(struct http_slice s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

static void test_fields(void **state)
{
	(void)state;
	const char *in = "POST /v1/chat?stream=1&x=%2F HTTP/1.0\r\n"
			 "Host: example.org:80\r\n"
			 "X-Empty:   \r\n"
			 "Content-Type:\t application/json \t\r\n\r\nbody";
	struct http_header hdrs[8];
	struct http_request req;
	struct guardbuf g;
	int st = 0;
	int r = parse_once(in, strlen(in), &req, hdrs, 8, &st, &g);

	assert_int_equal(r, (int)(strlen(in) - 4));
	assert_true(slice_is(req.method, "POST"));
	assert_true(slice_is(req.target, "/v1/chat?stream=1&x=%2F"));
	assert_true(slice_is(req.path, "/v1/chat"));
	assert_true(slice_is(req.query, "stream=1&x=%2F"));
	assert_int_equal(req.minor_version, 0);
	assert_int_equal(req.num_headers, 3);
	assert_true(slice_is(req.headers[0].name, "Host"));
	assert_true(slice_is(req.headers[0].value, "example.org:80"));
	assert_true(slice_is(req.headers[1].name, "X-Empty"));
	assert_int_equal(req.headers[1].value.len, 0);
	assert_true(slice_is(req.headers[2].name, "Content-Type"));
	assert_true(slice_is(req.headers[2].value, "application/json"));
	guardbuf_free(&g);

	in = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
	r = parse_once(in, strlen(in), &req, hdrs, 8, &st, &g);
	assert_int_equal(r, (int)strlen(in));
	assert_true(slice_is(req.target, "*"));
	assert_true(slice_is(req.path, "*"));
	assert_int_equal(req.query.len, 0);
	assert_int_equal(req.minor_version, 1);
	guardbuf_free(&g);

	in = "GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n";
	r = parse_once(in, strlen(in), &req, hdrs, 8, &st, &g);
	assert_int_equal(r, (int)strlen(in));
	assert_true(slice_is(req.path, "/a"));
	assert_true(slice_is(req.query, "b?c"));
	guardbuf_free(&g);
}

/* The caller's header array is a limit too: more lines than it holds is 431. */
static void test_header_capacity(void **state)
{
	(void)state;
	const char *in = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
	struct http_header hdrs[3];
	struct http_request req;
	struct guardbuf g;
	int st = 0;

	assert_int_equal(parse_once(in, strlen(in), &req, hdrs, 3, &st, &g), (int)strlen(in));
	assert_int_equal(req.num_headers, 3);
	guardbuf_free(&g);

	assert_int_equal(parse_once(in, strlen(in), &req, hdrs, 2, &st, &g), HTTP_PARSE_ERROR);
	assert_int_equal(st, 431);
	assert_int_equal(req.num_headers, 2);
	guardbuf_free(&g);

	assert_int_equal(parse_once(in, 20, &req, hdrs, 3, &st, &g), HTTP_PARSE_INCOMPLETE);
	assert_int_equal(req.num_headers, 3);
	guardbuf_free(&g);
}

/* Fills dst with "GET /aaa...a HTTP/1.1\r\n" whose line (without CRLF) is n bytes. */
static size_t put_request_line(char *dst, size_t n)
{
	static const char pre[] = "GET /";
	static const char post[] = " HTTP/1.1\r\n";
	size_t fill = n - (sizeof(pre) - 1) - (sizeof(post) - 3);

	memcpy(dst, pre, sizeof(pre) - 1);
	memset(dst + sizeof(pre) - 1, 'a', fill);
	memcpy(dst + sizeof(pre) - 1 + fill, post, sizeof(post) - 1);
	return n + 2;
}

/* Appends "X: vvv...v\r\n" of exactly n bytes (n >= 5). */
static size_t put_header_line(char *dst, size_t n)
{
	memcpy(dst, "X: ", 3);
	memset(dst + 3, 'v', n - 5);
	memcpy(dst + n - 2, "\r\n", 2);
	return n;
}

static void test_request_line_limit(void **state)
{
	(void)state;
	char *in = malloc(HTTP_MAX_HEAD + 64);
	assert_non_null(in);

	/* exactly 8192 bytes: fine */
	size_t n = put_request_line(in, HTTP_MAX_REQUEST_LINE);
	memcpy(in + n, "Host: a\r\n\r\n", 11);
	run_every_split("line 8192", in, n + 11, n + 11, 0);

	/* 8193 bytes: 414, known as soon as byte 8193 is not the CR */
	n = put_request_line(in, HTTP_MAX_REQUEST_LINE + 1);
	memcpy(in + n, "Host: a\r\n\r\n", 11);
	run_every_split("line 8193", in, n + 11, HTTP_MAX_REQUEST_LINE + 1, 414);

	/* too long and malformed: the limit is what is reported */
	memset(in, 'G', HTTP_MAX_REQUEST_LINE + 1);
	memcpy(in + HTTP_MAX_REQUEST_LINE + 1, "\n", 1);
	run_every_split("line 8193 bare lf", in, HTTP_MAX_REQUEST_LINE + 2,
			HTTP_MAX_REQUEST_LINE + 1, 414);
	free(in);
}

static void test_header_count_limit(void **state)
{
	(void)state;
	char *in = malloc(HTTP_MAX_HEAD);
	assert_non_null(in);
	size_t n = put_request_line(in, 14);
	memcpy(in + n, "Host: a\r\n", 9);
	n += 9;
	for (unsigned i = 1; i < HTTP_MAX_HEADERS; i++)
		n += put_header_line(in + n, 6);
	memcpy(in + n, "\r\n", 2);
	run_every_split("100 headers", in, n + 2, n + 2, 0);

	n += put_header_line(in + n, 6);
	memcpy(in + n, "\r\n", 2);
	run_every_split("101 headers", in, n + 2, n, 431);
	free(in);
}

static void test_header_bytes_limit(void **state)
{
	(void)state;
	char *in = malloc(HTTP_MAX_HEAD + 64);
	assert_non_null(in);
	size_t hs = put_request_line(in, 14);
	memcpy(in + hs, "Host: a\r\n", 9);

	/* header lines of exactly 8192 bytes: fine */
	size_t n = hs + 9 + put_header_line(in + hs + 9, HTTP_MAX_HEADER_BYTES - 9);
	memcpy(in + n, "\r\n", 2);
	run_every_split("headers 8192", in, n + 2, n + 2, 0);

	/* 8193 bytes: 431 once the line can no longer end in time */
	n = hs + 9 + put_header_line(in + hs + 9, HTTP_MAX_HEADER_BYTES - 8);
	memcpy(in + n, "\r\n", 2);
	run_every_split("headers 8193", in, n + 2, hs + HTTP_MAX_HEADER_BYTES, 431);

	/* the largest head there is: 8192-byte line and 8192 header bytes */
	n = put_request_line(in, HTTP_MAX_REQUEST_LINE);
	hs = n;
	memcpy(in + n, "Host: a\r\n", 9);
	n += 9;
	n += put_header_line(in + n, HTTP_MAX_HEADER_BYTES - 9);
	memcpy(in + n, "\r\n", 2);
	assert_int_equal(n + 2, HTTP_MAX_HEAD);
	run_every_split("max head", in, n + 2, n + 2, 0);

	/* 8192 header bytes, then a byte that cannot start the blank line */
	in[n + 1] = 'X';
	run_every_split("max head, no blank line", in, n + 2, n + 2, 431);
	(void)hs;
	free(in);
}

/*
 * Streams that never end a valid head must be refused by the time they pass
 * HTTP_MAX_HEAD bytes, whatever the shape: one endless line, endless
 * header lines, an endless value.
 */
static void test_never_holds_more_than_max_head(void **state)
{
	(void)state;
	size_t cap = HTTP_MAX_HEAD + 2;
	char *in = malloc(cap);
	assert_non_null(in);
	struct http_header hdrs[NHDR];

	for (int shape = 0; shape < 4; shape++) {
		size_t n = 0;
		if (shape == 0) {
			memset(in, 'a', cap);
		} else {
			n = put_request_line(in, 14);
			if (shape == 1) {
				while (n + 6 <= cap)
					n += put_header_line(in + n, 6);
				memset(in + n, 'X', cap - n);
			} else if (shape == 2) {
				memset(in + n, 'v', cap - n);
			} else {
				n = put_request_line(in, HTTP_MAX_REQUEST_LINE);
				memcpy(in + n, "X: ", 3);
				memset(in + n + 3, '\t', cap - n - 3);
			}
		}
		struct guardbuf g;
		uint8_t *end = guardbuf_place(&g, in, cap) + cap;
		size_t last = 0;
		int refused = 0;
		for (size_t len = 1; len <= cap; len++) {
			struct http_request req = { .headers = hdrs, .num_headers = NHDR };
			int st = 0;
			int r = http_parse_request(place_prefix(end, in, len), len, last, &req, &st);
			if (r == HTTP_PARSE_INCOMPLETE) {
				if (len > HTTP_MAX_HEAD)
					fail_msg("shape %d: still incomplete at %zu bytes", shape, len);
				last = len;
				continue;
			}
			assert_int_equal(r, HTTP_PARSE_ERROR);
			assert_true(st == 414 || st == 431);
			refused = 1;
			break;
		}
		assert_true(refused);
		guardbuf_free(&g);
	}
	free(in);
}

static void test_lookup_helpers(void **state)
{
	(void)state;
	const char *in = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive,  Upgrade \r\n"
			 "Upgrade: websocket\r\nX-List: a;q=1, ,b\t,c\r\n\r\n";
	struct http_header hdrs[8];
	struct http_request req;
	struct guardbuf g;
	int st = 0;
	assert_true(parse_once(in, strlen(in), &req, hdrs, 8, &st, &g) > 0);

	const struct http_header *h = http_find_header(&req, "CONNECTION");
	assert_non_null(h);
	assert_ptr_equal(h, &req.headers[1]);
	assert_null(http_find_header(&req, "connectio"));
	assert_null(http_find_header(&req, "connection2"));
	assert_ptr_equal(http_find_header(&req, "upgrade"), &req.headers[2]);

	assert_true(http_value_has_token(h->value, "upgrade"));
	assert_true(http_value_has_token(h->value, "Keep-Alive"));
	assert_false(http_value_has_token(h->value, "keep"));
	assert_false(http_value_has_token(h->value, "close"));
	assert_false(http_value_has_token(h->value, ""));
	const struct http_header *l = http_find_header(&req, "x-list");
	assert_non_null(l);
	assert_true(http_value_has_token(l->value, "a"));
	assert_true(http_value_has_token(l->value, "b"));
	assert_true(http_value_has_token(l->value, "c"));
	assert_false(http_value_has_token(l->value, "q=1"));

	struct http_slice s = { "WebSocket", 9 };
	assert_true(http_slice_ieq(s, "websocket"));
	assert_false(http_slice_ieq(s, "websocke"));
	assert_false(http_slice_ieq(s, "websockets"));
	assert_false(http_slice_ieq(s, "websocked"));
	struct http_slice empty = { "", 0 };
	assert_true(http_slice_ieq(empty, ""));
	guardbuf_free(&g);
}

struct body_case {
	const char *headers; /* header lines after the request line */
	int minor;
	int want;            /* 0 or the status */
	size_t length;       /* when want == 0 */
	int chunked;         /* when want == 0: a chunked body */
};

static const struct body_case body_cases[] = {
	{ "", 1, 0, 0, 0 },
	{ "Content-Length: 0\r\n", 1, 0, 0, 0 },
	{ "Content-Length: 42\r\n", 1, 0, 42, 0 },
	{ "Content-Length:  007 \r\n", 1, 0, 7, 0 },
	{ "Content-Length: 1048576\r\n", 1, 0, 1048576, 0 },
	{ "Content-Length: 5\r\ncontent-length: 5\r\n", 1, 0, 5, 0 },
	{ "Content-Length: 5\r\nContent-Length: 6\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 5\r\nContent-Length: 05\r\n", 1, 400, 0, 0 },
	/* RFC 9112 6.3 item 5: a list of one value repeated is that value. */
	{ "Content-Length: 5, 5\r\n", 1, 0, 5, 0 },
	{ "Content-Length: 5,5\r\nContent-Length: 5\r\n", 1, 0, 5, 0 },
	{ "Content-Length: 5, 6\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 5, 05\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 5,\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 5,,5\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 1048577, 1048577\r\n", 1, 413, 0, 0 },
	{ "Content-Length:\r\n", 1, 400, 0, 0 },
	{ "Content-Length: -1\r\n", 1, 400, 0, 0 },
	{ "Content-Length: +1\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 1 2\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 0x10\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 18446744073709551615\r\n", 1, 413, 0, 0 },
	{ "Content-Length: 18446744073709551616\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 99999999999999999999999999\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 1048577\r\n", 1, 413, 0, 0 },
	{ "Transfer-Encoding: chunked\r\n", 1, 0, 0, 1 },
	{ "Transfer-Encoding: CHUNKED\r\n", 1, 0, 0, 1 },
	{ "Transfer-Encoding: , chunked\r\n", 1, 0, 0, 1 },
	{ "Transfer-Encoding: gzip, chunked\r\n", 1, 501, 0, 0 },
	{ "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 1, 501, 0, 0 },
	{ "Transfer-Encoding: chunked, gzip\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: chunked, chunked\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: chunked;q=1\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: ;x\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: gzip\r\n", 1, 501, 0, 0 },
	{ "Transfer-Encoding: chunkedx\r\n", 1, 501, 0, 0 },
	{ "Transfer-Encoding:\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: ,\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 1, 400, 0, 0 },
	{ "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n", 1, 400, 0, 0 },
	{ "Transfer-Encoding: chunked\r\n", 0, 400, 0, 0 },
	{ "Content-Length: 3\r\n", 0, 0, 3, 0 },
};

static void test_body_length(void **state)
{
	(void)state;
	char in[512];
	struct http_header hdrs[8];

	for (size_t i = 0; i < SLUICE_ARRAY_LEN(body_cases); i++) {
		const struct body_case *c = &body_cases[i];
		int n = snprintf(in, sizeof(in), "POST /p HTTP/1.%d\r\nHost: a\r\n%s\r\n", c->minor,
				 c->headers);
		assert_true(n > 0 && (size_t)n < sizeof(in));
		struct http_request req;
		struct guardbuf g;
		int st = 0;
		assert_int_equal(parse_once(in, (size_t)n, &req, hdrs, 8, &st, &g), n);
		size_t len = 12345;
		int chunked = -1;
		int got = http_request_body_length(&req, 1048576, &len, &chunked);
		if (got != c->want || (c->want == 0 && (len != c->length || chunked != c->chunked)))
			fail_msg("body case %zu (%s): got %d len %zu chunked %d, want %d len %zu chunked %d",
				 i, c->headers, got, len, chunked, c->want, c->length, c->chunked);
		guardbuf_free(&g);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_every_split),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_header_capacity),
		cmocka_unit_test(test_request_line_limit),
		cmocka_unit_test(test_header_count_limit),
		cmocka_unit_test(test_header_bytes_limit),
		cmocka_unit_test(test_never_holds_more_than_max_head),
		cmocka_unit_test(test_lookup_helpers),
		cmocka_unit_test(test_body_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
