/*
 * Reads bytes on stdin and prints, one JSON line per request, how sluice's
 * parser frames them: {"method","target","body":hex} for every request it
 * accepts, then {"error":STATUS} when it refuses one, or {"incomplete":N}
 * when the bytes end inside a request. The same calls as the app
 * (dataplane/app/app_http.c): http_parse_request, http_request_body_length
 * with the 1 MiB limit, and http_chunked_step for chunked bodies. Used by
 * integration_framing_diff to compare sluice with other parsers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_chunked.h"
#include "http/http_parse.h"

#define FRAME_MAX_BODY (1024u * 1024u)

static void print_hex(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static void print_slice(struct http_slice s)
{
	for (size_t i = 0; i < s.len; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
}

int main(void)
{
	static unsigned char in[4 << 20];
	static unsigned char body[FRAME_MAX_BODY];
	size_t len = fread(in, 1, sizeof(in), stdin), pos = 0;

	while (pos < len) {
		struct http_header hdrs[HTTP_MAX_HEADERS];
		struct http_request req = { .headers = hdrs, .num_headers = HTTP_MAX_HEADERS };
		int status = 400;
		int r = http_parse_request((const char *)in + pos, len - pos, 0, &req, &status);
		if (r == HTTP_PARSE_INCOMPLETE) {
			printf("{\"incomplete\":%zu}\n", len - pos);
			return 0;
		}
		if (r < 0) {
			printf("{\"error\":%d}\n", status);
			return 0;
		}
		size_t head = (size_t)r, clen = 0, blen = 0;
		int chunked = 0;
		status = http_request_body_length(&req, FRAME_MAX_BODY, &clen, &chunked);
		if (status) {
			printf("{\"error\":%d}\n", status);
			return 0;
		}
		pos += head;
		if (chunked) {
			struct http_chunked d;
			http_chunked_init(&d, FRAME_MAX_BODY);
			for (;;) {
				struct http_slice data;
				size_t used = 0;
				int rc = http_chunked_step(&d, in + pos, len - pos, &used, &data, &status);
				if (rc == HTTP_CHUNKED_ERROR) {
					printf("{\"error\":%d}\n", status);
					return 0;
				}
				if (rc == HTTP_CHUNKED_DATA) {
					memcpy(body + blen, data.p, data.len);
					blen += data.len;
				}
				pos += used;
				if (rc == HTTP_CHUNKED_DONE)
					break;
				if (rc == HTTP_CHUNKED_MORE) {
					printf("{\"incomplete\":0}\n");
					return 0;
				}
			}
		} else {
			if (len - pos < clen) {
				printf("{\"incomplete\":%zu}\n", len - pos);
				return 0;
			}
			memcpy(body, in + pos, clen);
			blen = clen;
			pos += clen;
		}
		printf("{\"method\":\"");
		print_slice(req.method);
		printf("\",\"target\":\"");
		print_slice(req.target);
		printf("\",\"body\":\"");
		print_hex(body, blen);
		printf("\"}\n");
	}
	return 0;
}
