/*
 * SHA-1 (FIPS 180-4). Used only for the WebSocket handshake
 * (Sec-WebSocket-Accept), where the RFC fixes the hash; never for security.
 */
#ifndef SLUICE_SHA1_H
#define SLUICE_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define SHA1_DIGEST_LEN 20

struct sha1_ctx {
	uint32_t h[5];
	uint64_t total;    /* bytes hashed so far */
	uint8_t block[64]; /* partial block waiting for more input */
	size_t block_len;
};

void sha1_init(struct sha1_ctx *c);
void sha1_update(struct sha1_ctx *c, const void *data, size_t len);
/* Pads, writes the digest and leaves c unusable until sha1_init. */
void sha1_final(struct sha1_ctx *c, uint8_t out[SHA1_DIGEST_LEN]);
/* One-shot digest of data[0..len). */
void sha1_digest(const void *data, size_t len, uint8_t out[SHA1_DIGEST_LEN]);

#endif
