/*
 * Internet checksum (RFC 1071) with incremental update (RFC 1624) and the
 * TCP/UDP pseudo-header sum. Sums are carried as 32-bit partial sums and
 * folded to 16 bits at the end, so pieces can be added in any order as long
 * as every piece but the last starts at an even offset.
 */
#ifndef SLUICE_NET_CSUM_H
#define SLUICE_NET_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Adds len bytes at p to the partial sum (big-endian 16-bit words). */
uint32_t net_csum_add(uint32_t sum, const void *p, size_t len);

/* net_csum_add(0, p, 20) for an IPv4 header without options, inline: the
 * same words added as 32-bit halves (no carry can leave 64 bits), folded
 * the same way. */
static inline uint32_t net_csum_ip_hdr(const void *p)
{
	uint64_t a, b;
	uint32_t c;
	memcpy(&a, p, 8);
	memcpy(&b, (const uint8_t *)p + 8, 8);
	memcpy(&c, (const uint8_t *)p + 16, 4);
	uint64_t s = (uint64_t)c + (a & 0xffffffffu) + (a >> 32) + (b & 0xffffffffu) + (b >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return __builtin_bswap16((uint16_t)s);
}

static inline uint16_t net_csum_fold(uint32_t sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* The checksum to store (network order bytes written by the caller with
 * net_put16): the one's complement of the folded sum. */
static inline uint16_t net_csum_final(uint32_t sum)
{
	return (uint16_t)~net_csum_fold(sum);
}

/* Pseudo-header partial sum: addresses in network byte order as stored in
 * the frame, proto, and the L4 length in host order. Inline: every TCP
 * segment in takes one. */
static inline uint32_t net_csum_pseudo(uint32_t src_be, uint32_t dst_be, uint8_t proto,
				       uint16_t l4len)
{
	uint32_t s = __builtin_bswap32(src_be);
	uint32_t d = __builtin_bswap32(dst_be);
	return (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + proto + l4len;
}

/* net_csum_add(sum, p, 32) inline, the same steps (a pure ACK with
 * timestamps is 32 bytes of TCP): four 64-bit words with end-around
 * carry, folded, swapped once, added to sum. */
static inline uint32_t net_csum_add32(uint32_t sum, const void *p)
{
	uint64_t w[4], acc;
	memcpy(w, p, sizeof(w));
	acc = w[0];
	for (int i = 1; i < 4; i++) {
		uint64_t r;
		acc = __builtin_add_overflow(acc, w[i], &r) ? r + 1 : r;
	}
	acc = (acc & 0xffffffffu) + (acc >> 32);
	acc = (acc & 0xffffffffu) + (acc >> 32);
	uint32_t f = (uint32_t)acc;
	f = (f & 0xffff) + (f >> 16);
	f = (f & 0xffff) + (f >> 16);
	uint64_t t = (uint64_t)sum + __builtin_bswap16((uint16_t)f);
	return (uint32_t)((t & 0xffff) + (t >> 16));
}

/* RFC 1624 eqn. 3: the new checksum after a 16-bit field changes from
 * old_v to new_v (all host order). */
static inline uint16_t net_csum_update16(uint16_t csum, uint16_t old_v, uint16_t new_v)
{
	uint32_t sum = (uint16_t)~csum + (uint32_t)(uint16_t)~old_v + new_v;
	return (uint16_t)~net_csum_fold(sum);
}

/* The sum of a run of bytes followed by another: part is the second run's
 * own sum (as net_csum_add(0, ...) gives it) and first_len the first run's
 * length. After an odd length the second run's bytes sit in the other half
 * of each 16-bit word, so its folded sum is byte-swapped (RFC 1071 2.B). */
static inline uint32_t net_csum_append(uint32_t sum, uint32_t first_len, uint32_t part)
{
	uint16_t p = net_csum_fold(part);
	if (first_len & 1)
		p = __builtin_bswap16(p);
	return (uint32_t)net_csum_fold(sum) + p;
}

#endif
