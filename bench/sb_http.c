/* HTTP/1.1 response heads and chunked bodies (see sb_http.h). */
#include "sb_http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool name_is(const char *l, size_t n, const char *name)
{
	size_t k = strlen(name);

	return n > k && l[k] == ':' && strncasecmp(l, name, k) == 0;
}

static bool value_has(const char *v, size_t n, const char *tok)
{
	size_t k = strlen(tok);

	for (size_t i = 0; i + k <= n; i++)
		if (strncasecmp(v + i, tok, k) == 0)
			return true;
	return false;
}

int sb_http_head_parse(const char *p, size_t len, struct sb_http_head *h)
{
	const char *end, *l, *nl;
	size_t hl;

	end = NULL;
	for (size_t i = 3; i < len; i++) {
		if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') {
			end = p + i + 1;
			break;
		}
	}
	if (!end)
		return len > SB_HTTP_HEAD_MAX ? -1 : 0;
	hl = (size_t)(end - p);
	if (hl < 16 || memcmp(p, "HTTP/1.", 7) != 0)
		return -1;
	h->status = atoi(p + 9);
	h->content_length = -1;
	h->chunked = false;
	h->close = p[7] == '0';
	l = memchr(p, '\n', hl) + 1;
	while (l < end && (nl = memchr(l, '\n', (size_t)(end - l))) != NULL) {
		size_t n = (size_t)(nl - l);
		const char *v;

		if (n && l[n - 1] == '\r')
			n--;
		v = memchr(l, ':', n);
		if (v) {
			size_t vn = n - (size_t)(v - l) - 1;

			v++;
			if (name_is(l, n, "content-length"))
				h->content_length = strtoll(v, NULL, 10);
			else if (name_is(l, n, "transfer-encoding") && value_has(v, vn, "chunked"))
				h->chunked = true;
			else if (name_is(l, n, "connection") && value_has(v, vn, "close"))
				h->close = true;
		}
		l = nl + 1;
	}
	return (int)hl;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

long sb_chunked_feed(struct sb_chunked *c, const char *data, size_t len, sb_chunk_fn fn, void *arg)
{
	size_t i = 0;

	while (i < len && c->state != SB_CH_DONE) {
		char ch = data[i];

		switch (c->state) {
		case SB_CH_SIZE: {
			int hv;

			i++;
			if (ch == '\n') {
				c->state = c->left ? SB_CH_DATA : SB_CH_TRAILER;
				c->line = 0;
				c->ext = false;
				break;
			}
			if (++c->line > 256)
				return -1;
			if (c->ext || ch == '\r')
				break;
			hv = hexval(ch);
			if (hv < 0) {
				c->ext = true; /* a chunk extension: the rest of the line is ignored */
				break;
			}
			if (c->left >> 56)
				return -1;
			c->left = c->left * 16 + (uint64_t)hv;
			break;
		}
		case SB_CH_DATA: {
			size_t n = len - i < c->left ? len - i : (size_t)c->left;

			if (!fn(arg, data + i, n))
				return -1;
			i += n;
			c->left -= n;
			if (c->left == 0)
				c->state = SB_CH_DATA_END;
			break;
		}
		case SB_CH_DATA_END:
			i++;
			if (ch == '\n')
				c->state = SB_CH_SIZE;
			else if (ch != '\r')
				return -1;
			break;
		case SB_CH_TRAILER:
			i++;
			if (ch == '\n') {
				if (c->line == 0)
					c->state = SB_CH_DONE;
				c->line = 0;
			} else if (ch != '\r') {
				c->line++;
			}
			break;
		default:
			return -1;
		}
	}
	return (long)i;
}
