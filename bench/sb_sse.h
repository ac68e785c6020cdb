/*
 * A client-side Server-Sent Events reader for sluice-bench: bytes in any
 * split, one callback per `data:` line with the event name seen before it
 * (`event:` lines; sluice and the peers send the name before the data), one
 * per comment line. Multi-line data is delivered line by line, which none of
 * the servers measured sends. No allocation per event: lines are handed out
 * from the caller's buffer, only a line cut by a read is copied (sb_carry).
 */
#ifndef SB_SSE_H
#define SB_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sb_carry.h"

/* Longest line accepted; a longer one is a protocol error. */
#define SB_SSE_LINE_MAX (256u * 1024u)
#define SB_SSE_EVENT_MAX 32u

struct sb_sse {
	struct sb_carry carry;
	char event[SB_SSE_EVENT_MAX]; /* name of the event being read, "" when none */
};

struct sb_sse_ops {
	/* A data line of the event `event` ("" when the event has no name). */
	void (*on_data)(void *arg, const char *event, const char *data, size_t len);
	void (*on_comment)(void *arg, const char *text, size_t len);
};

void sb_sse_init(struct sb_sse *s);
void sb_sse_free(struct sb_sse *s);
/* Feeds bytes; false on a line longer than SB_SSE_LINE_MAX (or no memory). */
bool sb_sse_feed(struct sb_sse *s, const char *data, size_t len, const struct sb_sse_ops *ops,
		 void *arg);

#endif
