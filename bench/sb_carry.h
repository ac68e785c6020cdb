/*
 * The bytes of one incomplete protocol unit (an SSE line, a WebSocket frame,
 * an HTTP head) that a read ended in the middle of, kept for the next read.
 * Every parser of sluice-bench consumes whole units straight from the read
 * buffer and copies only such a tail here, so the common case copies
 * nothing. The buffer is taken on first need and kept for the connection's
 * life (no allocation per token); it never grows past the cap given.
 */
#ifndef SB_CARRY_H
#define SB_CARRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sb_carry {
	char *p;     /* owned; NULL until first needed */
	uint32_t len;
	uint32_t cap;
};

/* Appends n bytes; false when that would pass max (the unit is too large)
 * or memory ran out. */
bool sb_carry_put(struct sb_carry *c, const void *data, size_t n, size_t max);
static inline void sb_carry_clear(struct sb_carry *c)
{
	c->len = 0;
}
void sb_carry_free(struct sb_carry *c);

#endif
