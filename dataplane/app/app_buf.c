/* The bounded text buffer (see app_buf.h). */
#include "app/app_buf.h"

#include <string.h>

#include "app/jsonw.h"
#include "sluice/common.h"

/* Digits written backwards into a small array: numbers are on every event
 * (seq, n, stamps), and snprintf's format parsing cost more than the rest of
 * an event's framing together. */
void app_buf_u64(struct app_buf *b, uint64_t v)
{
	char tmp[20];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	app_buf_put(b, tmp + i, sizeof(tmp) - i);
}

void app_buf_esc(struct app_buf *b, const void *s, size_t n)
{
	size_t w;

	if (b->overflow)
		return;
	w = jsonw_escape(b->p + b->len, b->cap - b->len, s, n);
	if (w == JSONW_NOSPACE) {
		b->overflow = true;
		return;
	}
	b->len += w;
}
