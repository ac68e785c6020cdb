/*
 * The upstream stream parsers: SSE events (control/backends/sse.c) and
 * NDJSON lines (ndjson.c). Every stream is fed split at every byte (and one
 * byte at a time) through a driver that keeps the unconsumed bytes, as the
 * clients do; each call's input ends right before a PROT_NONE page, so a
 * read past the slice faults. The events seen must be the same for every
 * split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/ndjson.h"
#include "backends/sse.h"
#include "util/guardbuf.h"

#define MAX_EV 16

/* What one event looked like: "name|data" ("name|-" without data, a
 * trailing "!" when done). */
struct seen {
	char ev[MAX_EV][256];
	int n;
	int err; /* the stream ended in SSE_ERROR / NDJ_ERROR */
};

static void seen_add(struct seen *s, const char *txt)
{
	assert_true(s->n < MAX_EV);
	snprintf(s->ev[s->n++], sizeof(s->ev[0]), "%s", txt);
}

/* One of the two parsers behind the same driver: its state, set up for a
 * limit, and its next item out of b[0..len) as text (checked to lie inside
 * the bytes it consumed). next returns the bytes consumed, 0 when it needs
 * more, -1 on a parse error. */
union parser {
	struct sse_parser sse;
	struct ndj ndj;
};

struct parser_ops {
	void (*init)(union parser *p, size_t max);
	int (*next)(union parser *p, char *b, size_t len, char *txt, size_t cap);
};

/* Offers pending bytes (placed against a guard page) to the parser until it
 * needs more; returns false after an error. */
static bool drain(const struct parser_ops *ops, union parser *p, char *pend, size_t *plen, struct seen *s)
{
	for (;;) {
		struct guardbuf g;
		char *b = (char *)guardbuf_place(&g, pend, *plen);
		char txt[256];
		int r = ops->next(p, b, *plen, txt, sizeof(txt));
		guardbuf_free(&g);
		if (r == 0)
			return true;
		if (r < 0) {
			s->err = 1;
			return false;
		}
		assert_true((size_t)r <= *plen);
		seen_add(s, txt);
		memmove(pend, pend + r, *plen - (size_t)r);
		*plen -= (size_t)r;
	}
}

/* The events of `in` fed in chunks of `step` bytes after a first chunk of
 * `first` bytes. */
static void feed(const struct parser_ops *ops, const char *in, size_t len, size_t first, size_t step,
		 size_t max, struct seen *s)
{
	union parser p;
	ops->init(&p, max);
	char *pend = malloc(len + 1);
	assert_non_null(pend);
	size_t plen = 0, off = 0;
	memset(s, 0, sizeof(*s));
	while (off < len) {
		size_t n = off == 0 ? first : step;
		if (n > len - off)
			n = len - off;
		memcpy(pend + plen, in + off, n);
		plen += n;
		off += n;
		if (!drain(ops, &p, pend, &plen, s))
			break;
	}
	free(pend);
}

/* Checks the events of `in` for every split and byte by byte. */
static void expect(const struct parser_ops *ops, const char *in, size_t max, int err, int n, va_list ap)
{
	size_t len = strlen(in);
	struct seen want;
	memset(&want, 0, sizeof(want));
	for (int i = 0; i < n; i++)
		seen_add(&want, va_arg(ap, const char *));
	want.err = err;
	for (size_t k = 1; k <= len; k++) {
		for (size_t step = 1; step <= len; step = step == 1 ? len : len + 1) {
			struct seen got;
			feed(ops, in, len, k, step, max, &got);
			if (got.n != want.n || got.err != want.err)
				fail_msg("split %zu step %zu: %d events (err %d), want %d (err %d)", k, step,
					 got.n, got.err, want.n, want.err);
			for (int i = 0; i < n; i++)
				if (strcmp(got.ev[i], want.ev[i]) != 0)
					fail_msg("split %zu step %zu: event %d is '%s', want '%s'", k, step, i,
						 got.ev[i], want.ev[i]);
		}
	}
}

static void sse_init_any(union parser *p, size_t max)
{
	sse_init(&p->sse, max);
}

static int sse_next_any(union parser *p, char *b, size_t len, char *txt, size_t cap)
{
	struct sse_event ev;
	int r = sse_next(&p->sse, b, len, &ev);
	if (r == SSE_INCOMPLETE)
		return 0;
	if (r == SSE_ERROR)
		return -1;
	assert_true(r > 0);
	if (ev.data) {
		assert_true(ev.data >= b && ev.data + ev.data_len <= b + r);
		snprintf(txt, cap, "%s|%.*s%s", ev.name, (int)ev.data_len, ev.data, ev.done ? "!" : "");
	} else {
		snprintf(txt, cap, "%s|-", ev.name);
	}
	return r;
}

static const struct parser_ops sse_ops = { sse_init_any, sse_next_any };

static void sse_expect(const char *in, size_t max, int err, int n, ...)
{
	va_list ap;
	va_start(ap, n);
	expect(&sse_ops, in, max, err, n, ap);
	va_end(ap);
}

static void sse_feed(const char *in, size_t len, size_t first, size_t step, size_t max, struct seen *s)
{
	feed(&sse_ops, in, len, first, step, max, s);
}

static void test_sse_basic(void **state)
{
	(void)state;
	sse_expect("data: {\"a\":1}\n\n", 4096, 0, 1, "|{\"a\":1}");
	sse_expect("data: x\r\n\r\ndata: y\r\n\r\n", 4096, 0, 2, "|x", "|y");
	sse_expect("data: x\r\rdata: y\r\r", 4096, 0, 2, "|x", "|y");
	sse_expect("data:x\n\ndata:  two\n\n", 4096, 0, 2, "|x", "| two");
	sse_expect("data: a:b\n\n", 4096, 0, 1, "|a:b");
	sse_expect("data\n\n", 4096, 0, 1, "|");
	/* An event without its blank line is not an event yet. */
	sse_expect("data: a\n\ndata: b\n", 4096, 0, 1, "|a");
	sse_expect("data: a\n\ndata: b\r", 4096, 0, 1, "|a");
}

static void test_sse_comments_fields(void **state)
{
	(void)state;
	sse_expect(": keep-alive\n\n:\n\n", 4096, 0, 2, "|-", "|-");
	sse_expect(": hi\ndata: x\n: mid\n\n", 4096, 0, 1, "|x");
	sse_expect("id: 7\nretry: 100\nfoo: bar\ndata: z\n\n", 4096, 0, 1, "|z");
	sse_expect("event: error\ndata: {\"error\":{\"message\":\"boom\"}}\n\n", 4096, 0, 1,
		   "error|{\"error\":{\"message\":\"boom\"}}");
	/* The name is kept even when data lines around it are joined over it. */
	sse_expect("data: a\nevent: e2\ndata: b\n\n", 4096, 0, 1, "e2|a\nb");
	sse_expect("data: a\ndata: b\ndata:\ndata: c\n\n", 4096, 0, 1, "|a\nb\n\nc");
	sse_expect("data: [DONE]\n\n", 4096, 0, 1, "|[DONE]!");
	sse_expect("data: [DONE] \n\n", 4096, 0, 1, "|[DONE] ");
}

static void test_sse_openai_stream(void **state)
{
	(void)state;
	sse_expect("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
		   ": OPENROUTER PROCESSING\n\n"
		   "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n"
		   "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"
		   "data: [DONE]\n\n",
		   4096, 0, 5, "|{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}", "|-",
		   "|{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}",
		   "|{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}", "|[DONE]!");
}

static void test_sse_limits(void **state)
{
	(void)state;
	/* 20 bytes allowed: the first event fits, the second does not. */
	sse_expect("data: 0123456789\n\ndata: 0123456789abcdef\n\n", 20, 1, 1, "|0123456789");
	sse_expect("data: 0123456789abcdefghij", 20, 1, 0);
	char name[128];
	snprintf(name, sizeof(name), "event: %064d\ndata: x\n\n", 0);
	sse_expect(name, 4096, 1, 0);
	snprintf(name, sizeof(name), "event: %063d\ndata: x\n\n", 0);
	struct seen got;
	sse_feed(name, strlen(name), 1, 1, 4096, &got);
	assert_int_equal(got.n, 1);
	assert_int_equal(got.err, 0);
	static const char nul[] = "data: a\0b\n\n";
	sse_feed(nul, sizeof(nul) - 1, sizeof(nul) - 1, 1, 4096, &got);
	assert_int_equal(got.err, 1);
	assert_int_equal(got.n, 0);
}

/* ---- NDJSON -------------------------------------------------------------- */

static void ndj_init_any(union parser *p, size_t max)
{
	ndj_init(&p->ndj, max);
}

static int ndj_next_any(union parser *p, char *b, size_t len, char *txt, size_t cap)
{
	const char *line;
	size_t ll;
	int r = ndj_next(&p->ndj, b, len, &line, &ll);
	if (r == NDJ_INCOMPLETE)
		return 0;
	if (r == NDJ_ERROR)
		return -1;
	assert_true(r > 0 && line >= b && line + ll < b + r);
	snprintf(txt, cap, "%.*s", (int)ll, line);
	return r;
}

static const struct parser_ops ndj_ops = { ndj_init_any, ndj_next_any };

static void ndj_expect(const char *in, size_t max, int err, int n, ...)
{
	va_list ap;
	va_start(ap, n);
	expect(&ndj_ops, in, max, err, n, ap);
	va_end(ap);
}

static void test_ndjson(void **state)
{
	(void)state;
	ndj_expect("{\"a\":1}\n{\"b\":2}\r\n", 4096, 0, 2, "{\"a\":1}", "{\"b\":2}");
	ndj_expect("\n\r\n  \n{\"a\":1}\n\n{\"b\":2}\n", 4096, 0, 2, "{\"a\":1}", "{\"b\":2}");
	ndj_expect("{\"a\":1}\n{\"partial\":", 4096, 0, 1, "{\"a\":1}");
	ndj_expect("{\"a\":1}\n0123456789abcdefghij\n", 16, 1, 1, "{\"a\":1}");
	ndj_expect("0123456789abcdefghij", 16, 1, 0);
	/* Blank lines count toward the next line's limit, on every split
	 * (fuzz-upstream: whole accepted what a split refused). */
	ndj_expect("  \n \n0123456789\n", 16, 0, 1, "0123456789");
	ndj_expect("  \n \n \n0123456789\n", 16, 1, 0);
	ndj_expect("{\"a\":1}\n  \n \n \n0123456789\n{\"b\":2}\n", 16, 1, 1, "{\"a\":1}");
	/* An Ollama chat stream as its API documents it. */
	ndj_expect("{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\","
		   "\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n"
		   "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":"
		   "{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"total_duration\":4883583458,"
		   "\"prompt_eval_count\":26,\"eval_count\":282}\n",
		   4096, 0, 2,
		   "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\","
		   "\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}",
		   "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":"
		   "{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"total_duration\":4883583458,"
		   "\"prompt_eval_count\":26,\"eval_count\":282}");
	struct ndj p;
	ndj_init(&p, 64);
	static const char nul[] = "{\"a\":\0}\n";
	const char *line;
	size_t ll;
	assert_int_equal(ndj_next(&p, nul, sizeof(nul) - 1, &line, &ll), NDJ_ERROR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sse_basic),
		cmocka_unit_test(test_sse_comments_fields),
		cmocka_unit_test(test_sse_openai_stream),
		cmocka_unit_test(test_sse_limits),
		cmocka_unit_test(test_ndjson),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
