/*
 * libFuzzer target for the upstream stream parsers: the SSE event parser
 * and the NDJSON splitter (control/backends/). The first byte picks the
 * parser (bit 0) and a chunk size (the rest); the remaining bytes are the
 * stream. Beyond "no crash, no out-of-bounds read" (every call gets its own
 * exact-size copy, so ASan sees any overread) it checks that:
 *   - feeding the stream in chunks gives the same events as feeding it
 *     whole, so no split changes what the clients see;
 *   - every event lies inside the bytes it consumed;
 *   - "need more" never answers for more than the limit's bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/ndjson.h"
#include "backends/sse.h"

#define FUZZ_MAX 512u
#define FUZZ_EVENTS 4096u

struct trace {
	uint64_t h[FUZZ_EVENTS];
	size_t n;
	int err;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static void trace_add(struct trace *t, uint64_t h)
{
	if (t->n < FUZZ_EVENTS)
		t->h[t->n] = h;
	t->n++;
}

/* Offers pend to the parser until it needs more; false after an error. */
static int drain(int ndj_mode, struct sse_parser *sp, struct ndj *np, uint8_t *pend, size_t *plen,
		 struct trace *t)
{
	for (;;) {
		char *b = malloc(*plen ? *plen : 1);
		if (!b)
			abort();
		memcpy(b, pend, *plen);
		int r;
		uint64_t h = 0xcbf29ce484222325ull;
		if (ndj_mode) {
			const char *line;
			size_t ll;
			r = ndj_next(np, b, *plen, &line, &ll);
			if (r > 0) {
				if (line < b || line + ll >= b + r)
					abort();
				h = fnv(h, line, ll);
			} else if (r == NDJ_INCOMPLETE && *plen > FUZZ_MAX + 1) {
				abort();
			}
		} else {
			struct sse_event ev;
			r = sse_next(sp, b, *plen, &ev);
			if (r > 0) {
				if (ev.data && (ev.data < b || ev.data + ev.data_len > b + r))
					abort();
				h = fnv(h, ev.name, strlen(ev.name) + 1);
				if (ev.data)
					h = fnv(h, ev.data, ev.data_len);
				h = fnv(h, &ev.done, sizeof(ev.done));
			} else if (r == SSE_INCOMPLETE && *plen > FUZZ_MAX + 1) {
				abort();
			}
		}
		free(b);
		if (r < 0 && r != SSE_ERROR && r != NDJ_ERROR)
			return 1;
		if (r < 0) {
			t->err = 1;
			return 0;
		}
		trace_add(t, h);
		memmove(pend, pend + r, *plen - (size_t)r);
		*plen -= (size_t)r;
	}
}

static void run(int ndj_mode, const uint8_t *in, size_t len, size_t chunk, struct trace *t)
{
	struct sse_parser sp;
	struct ndj np;
	sse_init(&sp, FUZZ_MAX);
	ndj_init(&np, FUZZ_MAX);
	uint8_t *pend = malloc(len + 1);
	if (!pend)
		abort();
	size_t plen = 0, off = 0;
	memset(t, 0, sizeof(*t));
	while (off < len) {
		size_t n = chunk < len - off ? chunk : len - off;
		memcpy(pend + plen, in + off, n);
		plen += n;
		off += n;
		if (!drain(ndj_mode, &sp, &np, pend, &plen, t))
			break;
	}
	free(pend);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int ndj_mode = data[0] & 1;
	size_t chunk = (size_t)(data[0] >> 1) + 1;
	const uint8_t *in = data + 1;
	size_t len = size - 1;
	static struct trace whole, split;
	run(ndj_mode, in, len, len ? len : 1, &whole);
	run(ndj_mode, in, len, chunk, &split);
	if (whole.err != split.err || whole.n != split.n)
		abort();
	for (size_t i = 0; i < whole.n && i < FUZZ_EVENTS; i++)
		if (whole.h[i] != split.h[i])
			abort();
	return 0;
}
