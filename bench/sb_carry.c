/* The partial-unit buffer (see sb_carry.h). */
#include "sb_carry.h"

#include <stdlib.h>
#include <string.h>

bool sb_carry_put(struct sb_carry *c, const void *data, size_t n, size_t max)
{
	if ((size_t)c->len + n > max)
		return false;
	if (c->len + n > c->cap) {
		size_t cap = c->cap ? c->cap : 512;
		char *p;

		while (cap < c->len + n)
			cap *= 2;
		if (cap > max)
			cap = max;
		p = realloc(c->p, cap);
		if (!p)
			return false;
		c->p = p;
		c->cap = (uint32_t)cap;
	}
	memcpy(c->p + c->len, data, n);
	c->len += (uint32_t)n;
	return true;
}

void sb_carry_free(struct sb_carry *c)
{
	free(c->p);
	c->p = NULL;
	c->len = c->cap = 0;
}
