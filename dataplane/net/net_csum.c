/* Internet checksum (see net_csum.h). */
#include "net/net_csum.h"

#include <string.h>

uint32_t net_csum_add(uint32_t sum, const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t acc = sum;
	/* 4 bytes at a time into a 64-bit accumulator: carries cannot overflow
	 * for any frame size we handle, and folding once at the end is exact. */
	while (len >= 4) {
		uint32_t w;
		memcpy(&w, b, 4);
		acc += __builtin_bswap32(w);
		b += 4;
		len -= 4;
	}
	if (len >= 2) {
		acc += (uint32_t)b[0] << 8 | b[1];
		b += 2;
		len -= 2;
	}
	if (len)
		acc += (uint32_t)b[0] << 8;
	acc = (acc & 0xffffffffu) + (acc >> 32);
	acc = (acc & 0xffffffffu) + (acc >> 32);
	uint32_t r = (uint32_t)acc;
	return (r & 0xffff) + (r >> 16);
}

uint32_t net_csum_pseudo(uint32_t src_be, uint32_t dst_be, uint8_t proto, uint16_t l4len)
{
	uint32_t s = __builtin_bswap32(src_be);
	uint32_t d = __builtin_bswap32(dst_be);
	return (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + proto + l4len;
}
