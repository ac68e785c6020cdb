#include "backends/sse.h"

#include <string.h>

void sse_init(struct sse_parser *p, size_t max_event)
{
	p->max_event = max_event;
	p->scan = p->start = 0;
	p->skip_lf = false;
	p->err = SSE_OK;
}

/* The end of the line starting at i: sets *next to the next line's start.
 * -1 when the line is not complete in buf[0, len) (a CR at the very end may
 * still be half of a CRLF). */
static ptrdiff_t sse_line_end(const char *buf, size_t len, size_t i, size_t *next)
{
	const char *nl = memchr(buf + i, '\n', len - i);
	const char *cr = memchr(buf + i, '\r', (nl ? (size_t)(nl - buf) : len) - i);
	if (cr) {
		size_t at = (size_t)(cr - buf);
		if (at + 1 == len)
			return -1;
		*next = at + (buf[at + 1] == '\n' ? 2 : 1);
		return (ptrdiff_t)at;
	}
	if (!nl)
		return -1;
	*next = (size_t)(nl - buf) + 1;
	return nl - buf;
}

static int sse_fail(struct sse_parser *p, enum sse_err e)
{
	p->err = e;
	p->scan = p->start = 0;
	return SSE_ERROR;
}

/* One complete line [s, e) of the event: applies it to ev, appending a data
 * value at *w (never beyond s, so the join overwrites only bytes already
 * read). */
static int sse_field(struct sse_parser *p, char *buf, size_t s, size_t e, struct sse_event *ev,
		     size_t *w)
{
	if (s < e && buf[s] == ':') {
		ev->comments++;
		return 0;
	}
	const char *colon = memchr(buf + s, ':', e - s);
	size_t nlen = colon ? (size_t)(colon - (buf + s)) : e - s;
	size_t v = colon ? (size_t)(colon - buf) + 1 : e;
	if (v < e && buf[v] == ' ')
		v++;
	if (nlen == 4 && memcmp(buf + s, "data", 4) == 0) {
		if (ev->data_lines++ == 0) {
			ev->data = buf + v;
			*w = e;
		} else {
			buf[(*w)++] = '\n';
			memmove(buf + *w, buf + v, e - v);
			*w += e - v;
		}
		ev->data_len = (size_t)(buf + *w - ev->data);
	} else if (nlen == 5 && memcmp(buf + s, "event", 5) == 0) {
		if (e - v >= SSE_NAME_MAX)
			return sse_fail(p, SSE_NAME_TOO_LONG);
		memcpy(ev->name, buf + v, e - v);
		ev->name[e - v] = '\0';
	}
	return 0;
}

int sse_next(struct sse_parser *p, char *buf, size_t len, struct sse_event *ev)
{
	/* The last event ended in a CR at the end of the bytes: an LF right
	 * after it belongs to that CRLF, not to a blank line of its own. */
	if (p->skip_lf) {
		if (len == 0)
			return SSE_INCOMPLETE;
		p->skip_lf = false;
		p->start = buf[0] == '\n' ? 1 : 0;
		p->scan = p->start;
	}
	size_t start = p->start <= len ? p->start : 0;
	size_t i = p->scan <= len && p->scan >= start ? p->scan : start;
	size_t next = 0;
	/* Find the blank line that ends the event, resuming at the first line
	 * the previous call could not finish. */
	for (;;) {
		if (i - start > p->max_event)
			return sse_fail(p, SSE_TOO_LONG);
		ptrdiff_t e = sse_line_end(buf, len, i, &next);
		if (e < 0 && i + 1 == len && buf[i] == '\r') {
			/* A blank line whatever follows: the event is complete. */
			p->skip_lf = true;
			next = len;
			break;
		}
		if (e < 0) {
			if (len - start > p->max_event)
				return sse_fail(p, SSE_TOO_LONG);
			p->scan = i;
			return SSE_INCOMPLETE;
		}
		if (memchr(buf + i, '\0', (size_t)e - i))
			return sse_fail(p, SSE_NUL);
		if ((size_t)e == i)
			break;
		i = next;
	}
	/* Sizes count from the event's start (after an LF that finished the
	 * last one's CRLF), and the blank line's CRLF counts as its CR alone: a
	 * split right after the CR ends the event there (skip_lf above), and
	 * the limit must not depend on where the input was split. */
	size_t used = next == i + 2 && buf[i] == '\r' ? i + 1 : next;
	if (used - start > p->max_event)
		return sse_fail(p, SSE_TOO_LONG);
	memset(ev, 0, sizeof(*ev));
	size_t w = 0;
	for (size_t s = start; s < i;) {
		size_t n;
		ptrdiff_t e = sse_line_end(buf, len, s, &n);
		if (sse_field(p, buf, s, (size_t)e, ev, &w) < 0)
			return SSE_ERROR;
		s = n;
	}
	ev->done = ev->data && ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0;
	p->scan = p->start = 0;
	return (int)next;
}
