/*
 * HTTP/1.1 client pieces for sluice-bench: the response head (status,
 * Content-Length, chunked, close) and a decoder for chunked bodies that hands
 * out the payload bytes in place. Heads are parsed only once complete.
 */
#ifndef SB_HTTP_H
#define SB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_HTTP_HEAD_MAX (16u * 1024u)

struct sb_http_head {
	int status;
	int64_t content_length; /* -1 when absent */
	bool chunked;
	bool close;
};

/* Parses a head at p[0..len). Returns its length (through the blank line), 0
 * when incomplete, -1 when malformed or too large. */
int sb_http_head_parse(const char *p, size_t len, struct sb_http_head *h);

enum sb_chunk_state { SB_CH_SIZE = 0, SB_CH_DATA, SB_CH_DATA_END, SB_CH_TRAILER, SB_CH_DONE };

struct sb_chunked {
	uint8_t state;
	uint64_t left; /* bytes of the current chunk still to come */
	uint32_t line; /* bytes of the size or trailer line seen (bounded) */
	bool ext;     /* the size line has an extension */
};

/* Payload bytes found in place. */
typedef bool (*sb_chunk_fn)(void *arg, const char *data, size_t len);

/* Feeds body bytes; calls fn for each payload piece. Returns the bytes of
 * `data` used (all of them unless the body ended inside), -1 when malformed
 * or fn returned false. state == SB_CH_DONE once the last chunk is through. */
long sb_chunked_feed(struct sb_chunked *c, const char *data, size_t len, sb_chunk_fn fn, void *arg);

#endif
