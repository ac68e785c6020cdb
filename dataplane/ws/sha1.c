/* SHA-1 as specified in FIPS 180-4, section 6.1. */
#include "ws/sha1.h"

#include <string.h>

static inline uint32_t sha1_rol(uint32_t x, unsigned n)
{
	return (x << n) | (x >> (32 - n));
}

static inline uint32_t sha1_load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void sha1_store_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Runs the 80 rounds over one 64-byte block. The message schedule is kept
 * as a 16-word ring, which is all the recurrence W[t-3..t-16] ever needs. */
static void sha1_block(uint32_t h[5], const uint8_t *p)
{
	uint32_t w[16];
	for (int i = 0; i < 16; i++)
		w[i] = sha1_load_be32(p + 4 * i);

	uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
	for (int t = 0; t < 80; t++) {
		if (t >= 16) {
			uint32_t x = w[(t - 3) & 15] ^ w[(t - 8) & 15] ^ w[(t - 14) & 15] ^ w[t & 15];
			w[t & 15] = sha1_rol(x, 1);
		}
		uint32_t f, k;
		if (t < 20) {
			f = (b & c) | (~b & d);
			k = 0x5a827999u;
		} else if (t < 40) {
			f = b ^ c ^ d;
			k = 0x6ed9eba1u;
		} else if (t < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8f1bbcdcu;
		} else {
			f = b ^ c ^ d;
			k = 0xca62c1d6u;
		}
		uint32_t tmp = sha1_rol(a, 5) + f + e + k + w[t & 15];
		e = d;
		d = c;
		c = sha1_rol(b, 30);
		b = a;
		a = tmp;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
}

void sha1_init(struct sha1_ctx *c)
{
	c->h[0] = 0x67452301u;
	c->h[1] = 0xefcdab89u;
	c->h[2] = 0x98badcfeu;
	c->h[3] = 0x10325476u;
	c->h[4] = 0xc3d2e1f0u;
	c->total = 0;
	c->block_len = 0;
}

void sha1_update(struct sha1_ctx *c, const void *data, size_t len)
{
	const uint8_t *p = data;
	if (len == 0)
		return; /* data may be NULL then */
	c->total += len;
	if (c->block_len) {
		size_t n = 64 - c->block_len;
		if (n > len)
			n = len;
		memcpy(c->block + c->block_len, p, n);
		c->block_len += n;
		p += n;
		len -= n;
		if (c->block_len < 64)
			return;
		sha1_block(c->h, c->block);
		c->block_len = 0;
	}
	while (len >= 64) {
		sha1_block(c->h, p);
		p += 64;
		len -= 64;
	}
	memcpy(c->block, p, len);
	c->block_len = len;
}

void sha1_final(struct sha1_ctx *c, uint8_t out[SHA1_DIGEST_LEN])
{
	uint64_t bits = c->total * 8;
	c->block[c->block_len++] = 0x80;
	if (c->block_len > 56) {
		memset(c->block + c->block_len, 0, 64 - c->block_len);
		sha1_block(c->h, c->block);
		c->block_len = 0;
	}
	memset(c->block + c->block_len, 0, 56 - c->block_len);
	sha1_store_be32(c->block + 56, (uint32_t)(bits >> 32));
	sha1_store_be32(c->block + 60, (uint32_t)bits);
	sha1_block(c->h, c->block);
	for (int i = 0; i < 5; i++)
		sha1_store_be32(out + 4 * i, c->h[i]);
}

void sha1_digest(const void *data, size_t len, uint8_t out[SHA1_DIGEST_LEN])
{
	struct sha1_ctx c;
	sha1_init(&c);
	sha1_update(&c, data, len);
	sha1_final(&c, out);
}
