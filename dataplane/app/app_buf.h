/*
 * A bounded text buffer over caller-owned memory, for everything the app
 * writes in one piece: response heads, stream events, /metrics. A write that
 * does not fit sets `overflow` and leaves len unchanged from that point, so a
 * caller checks once at the end and never sends a cut message.
 */
#ifndef SLUICE_APP_BUF_H
#define SLUICE_APP_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct app_buf {
	char *p;
	size_t len, cap;
	bool overflow;
};

static inline void app_buf_init(struct app_buf *b, char *p, size_t cap)
{
	b->p = p;
	b->len = 0;
	b->cap = cap;
	b->overflow = false;
}

/* Inline: every event is a dozen short pieces, most of them literals whose
 * length the compiler then knows. */
static inline void app_buf_put(struct app_buf *b, const void *s, size_t n)
{
	if (__builtin_expect(b->overflow || b->cap - b->len < n, 0)) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static inline void app_buf_str(struct app_buf *b, const char *s)
{
	app_buf_put(b, s, strlen(s));
}

void app_buf_u64(struct app_buf *b, uint64_t v);
/* Appends s escaped for a JSON string (without the quotes). */
void app_buf_esc(struct app_buf *b, const void *s, size_t n);

#endif
