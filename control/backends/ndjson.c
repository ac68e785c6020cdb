#include "backends/ndjson.h"

#include <string.h>

void ndj_init(struct ndj *p, size_t max_line)
{
	p->max_line = max_line;
	p->scan = 0;
	p->start = 0;
}

int ndj_next(struct ndj *p, const char *buf, size_t len, const char **line, size_t *line_len)
{
	size_t start = p->start <= p->scan && p->scan <= len ? p->start : 0;
	size_t i = p->scan <= len ? p->scan : 0;
	for (;;) {
		const char *nl = memchr(buf + i, '\n', len - i);
		if (!nl) {
			/* Held bytes, blank lines before the partial one included: a
			 * stream of blank lines alone must not grow the caller's
			 * buffer past the limit either. */
			if (len > p->max_line) {
				p->scan = p->start = 0;
				return NDJ_ERROR;
			}
			p->scan = len;
			p->start = start;
			return NDJ_INCOMPLETE;
		}
		size_t end = (size_t)(nl - buf);
		/* The blank lines before a line count toward its limit, as they
		 * do while it is incomplete: the verdict cannot depend on where
		 * the stream was split. */
		if (end + 1 > p->max_line || memchr(buf + start, '\0', end - start)) {
			p->scan = p->start = 0;
			return NDJ_ERROR;
		}
		size_t e = end > start && buf[end - 1] == '\r' ? end - 1 : end;
		size_t s = start;
		while (s < e && (buf[s] == ' ' || buf[s] == '\t' || buf[s] == '\r'))
			s++;
		if (s == e) {
			start = i = end + 1;
			continue;
		}
		*line = buf + start;
		*line_len = e - start;
		p->scan = p->start = 0;
		return (int)(end + 1);
	}
}
