/* Internet checksum (see net_csum.h). */
#include "net/net_csum.h"

#include <stdbool.h>
#include <string.h>

/* Like net_wire.h, this assumes a little-endian host. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian host");

/* a + b with the carry out added back in (ones'-complement addition on 64
 * bits): r + c cannot carry again, since r <= 2^64 - 2 when c is set. */
static inline uint64_t csum_add64(uint64_t a, uint64_t b)
{
	uint64_t r;
	bool c = __builtin_add_overflow(a, b, &r);
	return r + c;
}

static inline uint64_t csum_load64(const uint8_t *b)
{
	uint64_t w;
	memcpy(&w, b, 8);
	return w;
}

uint32_t net_csum_add(uint32_t sum, const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t acc = 0;
	/* The sum is taken over the machine's own 16-bit words, 8 bytes at a
	 * time with end-around carry, and byte-swapped once at the end: the
	 * ones'-complement sum does not depend on byte order (RFC 1071 2.B). */
	while (len >= 32) {
		acc = csum_add64(acc, csum_load64(b));
		acc = csum_add64(acc, csum_load64(b + 8));
		acc = csum_add64(acc, csum_load64(b + 16));
		acc = csum_add64(acc, csum_load64(b + 24));
		b += 32;
		len -= 32;
	}
	while (len >= 8) {
		acc = csum_add64(acc, csum_load64(b));
		b += 8;
		len -= 8;
	}
	/* The last 0..7 bytes, each at the bit position a word load would put
	 * it: a lone final byte is the first of its 16-bit word, as in
	 * network order. */
	uint64_t tail = 0;
	uint32_t off = 0;
	if (len & 4) {
		uint32_t w;
		memcpy(&w, b, 4);
		tail = w;
		off = 4;
	}
	if (len & 2) {
		uint16_t w;
		memcpy(&w, b + off, 2);
		tail |= (uint64_t)w << (off * 8);
		off += 2;
	}
	if (len & 1)
		tail |= (uint64_t)b[off] << (off * 8);
	acc = csum_add64(acc, tail);
	acc = (acc & 0xffffffffu) + (acc >> 32);
	acc = (acc & 0xffffffffu) + (acc >> 32);
	uint32_t r = (uint32_t)acc;
	r = (r & 0xffff) + (r >> 16);
	r = (r & 0xffff) + (r >> 16);
	/* Native order back to network order; then folded with the sum given,
	 * which keeps the result below 0x20000 as before. */
	uint64_t t = (uint64_t)sum + __builtin_bswap16((uint16_t)r);
	return (uint32_t)((t & 0xffff) + (t >> 16));
}
