/* The SSE reader (see sb_sse.h). */
#include "sb_sse.h"

#include <string.h>

void sb_sse_init(struct sb_sse *s)
{
	memset(s, 0, sizeof(*s));
}

void sb_sse_free(struct sb_sse *s)
{
	sb_carry_free(&s->carry);
}

/* One complete line without its LF (a CR before it is dropped). */
static void sse_line(struct sb_sse *s, const char *l, size_t n, const struct sb_sse_ops *ops,
		     void *arg)
{
	const char *v;
	size_t fl, vl;

	if (n && l[n - 1] == '\r')
		n--;
	if (n == 0) {
		s->event[0] = '\0';
		return;
	}
	if (l[0] == ':') {
		if (ops->on_comment)
			ops->on_comment(arg, l + 1, n - 1);
		return;
	}
	v = memchr(l, ':', n);
	fl = v ? (size_t)(v - l) : n;
	if (v) {
		v++;
		vl = n - fl - 1;
		if (vl && *v == ' ') {
			v++;
			vl--;
		}
	} else {
		v = l + n;
		vl = 0;
	}
	if (fl == 4 && memcmp(l, "data", 4) == 0) {
		ops->on_data(arg, s->event, v, vl);
	} else if (fl == 5 && memcmp(l, "event", 5) == 0) {
		if (vl >= SB_SSE_EVENT_MAX)
			vl = SB_SSE_EVENT_MAX - 1;
		memcpy(s->event, v, vl);
		s->event[vl] = '\0';
	}
}

bool sb_sse_feed(struct sb_sse *s, const char *data, size_t len, const struct sb_sse_ops *ops,
		 void *arg)
{
	const char *p = data, *end = data + len, *nl;

	if (s->carry.len) {
		nl = memchr(p, '\n', len);
		if (!nl)
			return sb_carry_put(&s->carry, p, len, SB_SSE_LINE_MAX);
		if (!sb_carry_put(&s->carry, p, (size_t)(nl - p), SB_SSE_LINE_MAX))
			return false;
		sse_line(s, s->carry.p, s->carry.len, ops, arg);
		sb_carry_clear(&s->carry);
		p = nl + 1;
	}
	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		sse_line(s, p, (size_t)(nl - p), ops, arg);
		p = nl + 1;
	}
	if (p < end)
		return sb_carry_put(&s->carry, p, (size_t)(end - p), SB_SSE_LINE_MAX);
	return true;
}
