/*
 * libFuzzer target for the HTTP request-head parser. The first two bytes
 * choose a split point; the rest is the input. Checks, beyond "no crash and
 * no out-of-bounds read" (each buffer is its own exact-size allocation, so
 * ASan sees any overread):
 *   - a prefix answers "need more" or exactly what the whole input answers;
 *   - continuing from the prefix with last_len gives the whole's answer;
 *   - "need more" never comes back for more than HTTP_MAX_HEAD bytes;
 *   - a complete head lies inside the input with its slices, and its framing
 *     answer is one of the documented ones.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_parse.h"

#define FUZZ_HEADERS 128
#define FUZZ_MAX_BODY (1024u * 1024u)

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

static void check_slice(struct http_slice s, const char *buf, size_t head)
{
	if (s.len > head || s.p < buf || s.p + s.len > buf + head)
		__builtin_trap();
}

/* What a complete head must satisfy. */
static void check_complete(const char *buf, size_t len, const struct http_request *req, int r)
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
	int st = http_request_body_length(req, FUZZ_MAX_BODY, &body);
	if (st != 0 && st != 400 && st != 411 && st != 413 && st != 501)
		__builtin_trap();
	if (st == 0 && body > FUZZ_MAX_BODY)
		__builtin_trap();
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
		check_complete(whole_buf, size, &req, whole.r);

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
