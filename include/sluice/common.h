/* Small definitions shared by every sluice module. */
#ifndef SLUICE_COMMON_H
#define SLUICE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

#define SLUICE_CACHELINE 64
#define SLUICE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* The object that embeds member at address p (intrusive lists, timers). */
#define sluice_container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

/* CLOCK_MONOTONIC is system-wide, so timestamps taken in control and in the
 * dataplane are comparable (token creation time vs. frame send time). */
static inline uint64_t sluice_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* FNV-1a, 64 bits: the hash of short text keys (ids, user names) in both
 * processes' tables, and the synthetic backend's seed (docs/api.md). */
static inline uint64_t sluice_fnv1a64(const void *p, size_t len)
{
	const uint8_t *s = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

#endif
