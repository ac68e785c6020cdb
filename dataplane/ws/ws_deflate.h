/*
 * permessage-deflate (RFC 7692): the negotiation of an upgrade's
 * Sec-WebSocket-Extensions offers, and the compressor and decompressor a
 * worker shares between all its WebSocket connections.
 *
 * sluice always answers with server_no_context_takeover and
 * client_no_context_takeover: every message is compressed and decompressed
 * on its own, so no LZ77 window outlives a message and a connection keeps
 * no zlib state at all. Each worker has one deflate stream per window size
 * in use (made on first use, reset between messages) and one inflate stream
 * (window 15, what any client may use), so per connection the extension
 * costs the few bytes of struct ws_pmd, whatever the window; per worker
 * it costs the streams and two buffers (docs/dataplane.md "permessage-
 * deflate"). A compressed client message is reassembled whole (at most
 * max_message compressed bytes) and then inflated into the worker's buffer,
 * which stops at max_message decompressed bytes: a compression bomb closes
 * the connection with 1009.
 *
 * A message that would not shrink is sent uncompressed (RSV1 clear), which
 * RFC 7692 allows at any time. Single-threaded: one codec per worker.
 */
#ifndef SLUICE_WS_DEFLATE_H
#define SLUICE_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What one connection negotiated. */
struct ws_pmd {
	bool on;
	bool announce_bits;  /* the response names server_max_window_bits */
	uint8_t server_bits; /* our window, 9..15 */
};

/* Longest Sec-WebSocket-Extensions answer ws_pmd_negotiate writes. */
#define WS_PMD_RESPONSE_MAX 128

/*
 * Reads the offers of a Sec-WebSocket-Extensions value (all the header's
 * lines joined by ", " are one list) and accepts the first permessage-
 * deflate offer it can honour. max_bits is the window sluice uses at most
 * (9..15). Fills *pmd and writes the response header value (without the
 * name, NUL-terminated) into resp; returns false (pmd->on false) when no
 * offer is acceptable: malformed, unknown or repeated parameters, or a
 * server_max_window_bits below 9 (zlib cannot deflate with 256 bytes).
 */
bool ws_pmd_negotiate(const char *value, size_t len, uint8_t max_bits, struct ws_pmd *pmd,
		      char resp[WS_PMD_RESPONSE_MAX]);
/* The response header value for what pmd says was negotiated. */
void ws_pmd_format(const struct ws_pmd *pmd, char resp[WS_PMD_RESPONSE_MAX]);

struct ws_deflate;

/* A worker's codec: level is zlib's (1..9), mem_level deflate's (1..9),
 * min_len the smallest message worth compressing. NULL when out of memory. */
struct ws_deflate *ws_deflate_create(int level, int mem_level, size_t min_len);
void ws_deflate_destroy(struct ws_deflate *d);

/*
 * Compresses one message with window `bits` into the codec's buffer.
 * Returns the compressed bytes (valid until the next call) and sets *out_len,
 * or NULL when the message is better sent as it is (shorter than min_len,
 * not smaller compressed, or no memory).
 */
const uint8_t *ws_deflate_message(struct ws_deflate *d, uint8_t bits, const uint8_t *in, size_t len,
				  size_t *out_len);

enum ws_inflate_result {
	WS_INFLATE_OK = 0,
	WS_INFLATE_TOO_BIG = 1, /* more than max bytes: close 1009 */
	WS_INFLATE_BAD = 2,     /* not a valid deflate stream: close 1007 */
	WS_INFLATE_NOMEM = 3,   /* close 1011 */
};

/* Decompresses one whole message (RFC 7692 7.2.2: the payload with
 * 00 00 FF FF appended) into the codec's buffer, at most max bytes. *out
 * stays valid until the next call. */
int ws_inflate_message(struct ws_deflate *d, const uint8_t *in, size_t len, uint64_t max,
		       const uint8_t **out, size_t *out_len);

struct ws_deflate_stats {
	uint64_t messages_out;  /* compressed */
	uint64_t bytes_in;      /* their size before */
	uint64_t bytes_out;     /* and after */
	uint64_t skipped;       /* sent uncompressed: small or incompressible */
	uint64_t messages_in;   /* inflated */
	uint64_t bombs;         /* refused for passing max */
	uint64_t mem;           /* bytes the codec holds (streams and buffers) */
};
void ws_deflate_get_stats(const struct ws_deflate *d, struct ws_deflate_stats *out);

#endif
