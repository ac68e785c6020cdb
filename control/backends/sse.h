/*
 * A Server-Sent Events parser for upstream streams (OpenAI-compatible
 * servers), in the house parser shape: it reads only the slice it is given,
 * resumes where the previous call stopped looking, and answers done (bytes
 * consumed), need more, or error.
 *
 * Follows the WHATWG event-stream rules: lines end in LF, CRLF or CR; a
 * blank line ends an event; ':' starts a comment; "field: value" drops one
 * space after the colon; several data lines join with LF; unknown fields
 * (id, retry, ...) are ignored. An event without data lines (a comment, a
 * keep-alive) is reported with data NULL, so callers can count it as
 * activity.
 */
#ifndef CONTROL_SSE_H
#define CONTROL_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SSE_INCOMPLETE (-1)
#define SSE_ERROR (-2)
#define SSE_NAME_MAX 64

enum sse_err { SSE_OK = 0, SSE_TOO_LONG, SSE_NAME_TOO_LONG, SSE_NUL };

struct sse_parser {
	size_t max_event; /* bytes one event may take, line ends included (its blank line's CRLF as one) */
	size_t scan;      /* where the last INCOMPLETE call stopped: a line start */
	size_t start;     /* where the event begins: 1 when an LF of the last one's CRLF leads */
	bool skip_lf;     /* the last event ended in a CR at the end of its bytes */
	enum sse_err err; /* why the last call answered SSE_ERROR */
};

struct sse_event {
	char name[SSE_NAME_MAX]; /* the event field, "" when absent (a "message") */
	char *data;              /* joined data lines inside the caller's buffer, NULL: none */
	size_t data_len;
	uint32_t data_lines;
	uint32_t comments;
	bool done;               /* data is exactly "[DONE]" (OpenAI's end of stream) */
};

void sse_init(struct sse_parser *p, size_t max_event);

/*
 * Parses the event at the front of buf[0, len), which starts at an event
 * boundary: the caller drops the bytes each successful call consumed and
 * calls again with the same bytes plus new ones after SSE_INCOMPLETE.
 * Returns the bytes of one event (its blank line included) with ev filled,
 * SSE_INCOMPLETE, or SSE_ERROR (p->err: an event longer than max_event, an
 * event name of SSE_NAME_MAX bytes or more, a NUL byte). A multi-line data
 * value is joined in place, so buf is written to inside the consumed range
 * only; ev->data stays valid until the caller reuses those bytes.
 */
int sse_next(struct sse_parser *p, char *buf, size_t len, struct sse_event *ev);

#endif
