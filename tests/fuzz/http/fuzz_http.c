/*
 * libFuzzer target for the HTTP request-head parser. The first two bytes
 * choose a split point; the rest is the input. Checks, beyond "no crash and
 * no out-of-bounds read" (each buffer is its own exact-size allocation, so
 * ASan sees any overread):
 *   - a prefix answers "need more" or exactly what the whole input answers;
 *   - continuing from the prefix with last_len gives the whole's answer;
 *   - "need more" never comes back for more than HTTP_MAX_HEAD bytes;
 *   - a complete head lies inside the input with its slices, and its framing
 *     answer is one of the documented ones;
 *   - a chunked body after it decodes to the same answer, body and end
 *     whether it comes whole or split at the split point, every data slice
 *     lies inside the bytes of its call, and the body respects the limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_chunked.h"
#include "http/http_parse.h"

#define FUZZ_HEADERS 128
#define FUZZ_MAX_BODY (1024u * 1024u)
/* Small, so the 413 paths are reached by short inputs. */
#define FUZZ_CHUNKED_MAX 300u

struct outcome {
	int r;
	int status;
};

static struct outcome parse(const char *buf, size_t len, size_t last_len,
			    struct http_request *req, struct http_header *hdrs)
{
	struct outcome o = { 0, 0 };

	memset(req, 0, sizeof(*req));
	req->headers = hdrs;
	req->num_headers = FUZZ_HEADERS;
	o.r = http_parse_request(buf, len, last_len, req, &o.status);
	if (o.r != HTTP_PARSE_ERROR)
		o.status = 0;
	return o;
}

struct chunked_outcome {
	int r;        /* DONE, ERROR or MORE (input ran out) */
	int status;
	size_t end;   /* bytes consumed at DONE */
	size_t blen;
	uint64_t sum; /* of the body bytes, position-weighted */
};

/* Decodes in[0..len), fed in two parts cut at `cut`, each its own
 * exact-size allocation so ASan sees a read past either part. */
static struct chunked_outcome decode(const uint8_t *in, size_t len, size_t cut)
{
	struct chunked_outcome o = { HTTP_CHUNKED_MORE, 0, 0, 0, 0 };
	struct http_chunked d;
	size_t pos = 0;

	http_chunked_init(&d, FUZZ_CHUNKED_MAX);
	for (int part = 0; part < 2; part++) {
		size_t stop = part == 0 ? cut : len;
		size_t n = stop - pos;
		uint8_t *p = malloc(n ? n : 1);
		if (!p)
			__builtin_trap();
		memcpy(p, in + pos, n);
		size_t off = 0;
		while (off < n) {
			struct http_slice data;
			size_t used = 0;
			int st = 0;
			int r = http_chunked_step(&d, p + off, n - off, &used, &data, &st);
			if (used > n - off)
				__builtin_trap();
			if (r == HTTP_CHUNKED_DATA) {
				if (data.p < (const char *)p + off || data.p + data.len > (const char *)p + off + used)
					__builtin_trap();
				for (size_t i = 0; i < data.len; i++)
					o.sum = o.sum * 31 + (unsigned char)data.p[i];
				o.blen += data.len;
				if (o.blen > FUZZ_CHUNKED_MAX)
					__builtin_trap();
			}
			off += used;
			if (r == HTTP_CHUNKED_DONE || r == HTTP_CHUNKED_ERROR) {
				o.r = r;
				o.status = st;
				o.end = pos + off;
				free(p);
				return o;
			}
		}
		free(p);
		pos = stop;
	}
	return o;
}

static void check_chunked(const uint8_t *body, size_t len, size_t split)
{
	struct chunked_outcome whole = decode(body, len, len);
	struct chunked_outcome cut = decode(body, len, split % (len + 1));

	if (whole.r == HTTP_CHUNKED_ERROR && whole.status != 400 && whole.status != 413 &&
	    whole.status != 431)
		__builtin_trap();
	if (cut.r != whole.r || cut.status != whole.status || cut.blen != whole.blen ||
	    cut.sum != whole.sum || (whole.r == HTTP_CHUNKED_DONE && cut.end != whole.end))
		__builtin_trap();
}

static void check_slice(struct http_slice s, const char *buf, size_t head)
{
	if (s.len > head || s.p < buf || s.p + s.len > buf + head)
		__builtin_trap();
}

/* What a complete head must satisfy. */
static void check_complete(const char *buf, size_t len, const struct http_request *req, int r,
			   size_t split)
{
	size_t head = (size_t)r;

	if (head > len || head > HTTP_MAX_HEAD || req->num_headers > FUZZ_HEADERS ||
	    req->num_headers > HTTP_MAX_HEADERS || (req->minor_version != 0 && req->minor_version != 1))
		__builtin_trap();
	check_slice(req->method, buf, head);
	check_slice(req->target, buf, head);
	check_slice(req->path, buf, head);
	check_slice(req->query, buf, head);
	for (size_t i = 0; i < req->num_headers; i++) {
		check_slice(req->headers[i].name, buf, head);
		check_slice(req->headers[i].value, buf, head);
	}
	size_t body = 0;
	int chunked = 0;
	int st = http_request_body_length(req, FUZZ_MAX_BODY, &body, &chunked);
	if (st != 0 && st != 400 && st != 413 && st != 501)
		__builtin_trap();
	if (st == 0 && (body > FUZZ_MAX_BODY || (chunked && body != 0)))
		__builtin_trap();
	if (st == 0 && chunked)
		check_chunked((const uint8_t *)buf + head, len - head, split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t split = (size_t)data[0] << 8 | data[1];
	data += 2;
	size -= 2;
	split %= size + 1;

	char *whole_buf = malloc(size ? size : 1);
	char *prefix_buf = malloc(split ? split : 1);
	if (!whole_buf || !prefix_buf)
		goto out;
	memcpy(whole_buf, data, size);
	memcpy(prefix_buf, data, split);

	struct http_header hdrs[FUZZ_HEADERS];
	struct http_request req;
	struct outcome whole = parse(whole_buf, size, 0, &req, hdrs);
	if (whole.r == HTTP_PARSE_INCOMPLETE && size > HTTP_MAX_HEAD)
		__builtin_trap();
	if (whole.r == HTTP_PARSE_ERROR && whole.status != 400 && whole.status != 414 &&
	    whole.status != 431 && whole.status != 505)
		__builtin_trap();
	if (whole.r >= 0)
		check_complete(whole_buf, size, &req, whole.r, split);

	struct outcome pre = parse(prefix_buf, split, 0, &req, hdrs);
	if (pre.r != HTTP_PARSE_INCOMPLETE) {
		if (pre.r != whole.r || pre.status != whole.status)
			__builtin_trap();
	} else {
		struct outcome cont = parse(whole_buf, size, split, &req, hdrs);
		if (cont.r != whole.r || cont.status != whole.status)
			__builtin_trap();
	}
out:
	free(prefix_buf);
	free(whole_buf);
	return 0;
}
