/*
 * Chunked request bodies (RFC 9112 section 7.1): a byte-at-a-time state
 * machine that keeps no copy of the input, so it resumes on any split of
 * the bytes and its answer depends on the bytes alone. Chunk data comes
 * back as slices into the caller's buffer; extensions are checked against
 * the grammar and skipped; trailer fields are checked like header lines
 * and discarded (RFC 9112 7.1.2: a server may ignore them).
 *
 * Limits (docs/http.md): the decoded body at most `max_body` (else 413, as
 * soon as a chunk size announces more), a chunk-size line at most
 * HTTP_CHUNK_LINE_MAX bytes and all extensions of a body together at most
 * HTTP_CHUNK_EXT_MAX bytes (400), the trailer section like a header section
 * (HTTP_MAX_HEADER_BYTES, HTTP_MAX_HEADERS: 431). So the framing a client
 * adds around a body of N bytes is bounded by its chunk count, and each
 * chunk costs at least one data byte.
 */
#ifndef SLUICE_HTTP_CHUNKED_H
#define SLUICE_HTTP_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#include "http/http_parse.h"

#define HTTP_CHUNK_LINE_MAX 4096u /* chunk-size [ chunk-ext ], without CRLF */
#define HTTP_CHUNK_EXT_MAX 8192u  /* extension bytes of one body, all chunks */

struct http_chunked {
	uint64_t remaining; /* data bytes left in the current chunk */
	uint64_t body;      /* data bytes decoded so far */
	uint64_t max_body;
	uint32_t line;      /* bytes of the current size or trailer line */
	uint32_t ext;       /* extension bytes so far */
	uint32_t trailer;   /* trailer section bytes so far */
	uint16_t trailers;  /* trailer lines so far */
	uint8_t state;
	uint8_t ndigits;    /* significant hex digits of the current size */
};

enum http_chunked_result {
	HTTP_CHUNKED_DONE = 0,   /* the message ended; *consumed bytes were its last */
	HTTP_CHUNKED_DATA = 1,   /* *data is chunk data (inside the consumed bytes) */
	HTTP_CHUNKED_MORE = 2,   /* every byte was consumed; call again with more */
	HTTP_CHUNKED_ERROR = -1, /* *status: 400, 413 or 431 */
};

void http_chunked_init(struct http_chunked *d, size_t max_body);

/*
 * Reads in[0..len) from where the last call stopped. Sets *consumed to the
 * bytes it used (all of them for MORE; the caller passes the rest next
 * time). DATA returns one slice of chunk data at a time; call again with
 * the bytes after *consumed. After DONE or ERROR the decoder must be
 * initialised again before any further use.
 */
int http_chunked_step(struct http_chunked *d, const uint8_t *in, size_t len, size_t *consumed,
		      struct http_slice *data, int *status);

#endif
