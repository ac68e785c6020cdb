/*
 * Strict HTTP/1.1 request-head parser (see http_parse.h and docs/http.md).
 *
 * The head is judged line by line: a line is checked when its LF arrives, or
 * earlier when it has already outgrown its limit. Judging whole lines makes
 * the answer a function of the bytes alone (the same for any way the head was
 * split across calls), and lets a call whose new bytes hold no LF return
 * "need more" without re-reading the buffer.
 */
#include "http/http_parse.h"

#include <string.h>

#include "sluice/common.h"

#define CT 0x01u /* tchar: method, field-name */
#define CP 0x02u /* origin-form target: pchar, '/', '?', '%' */
#define CH 0x04u /* Host value: reg-name, IP-literal brackets, ':' port */
#define CV 0x08u /* field value: VCHAR, obs-text, SP, HTAB */
#define CX (CT | CP | CH | CV)

static const uint8_t char_class[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, CV, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* SP ! " # $ % & ' ( ) * + , - . / */
	CV, CX, CV, CT | CV, CX, CX, CX, CX,
	CP | CH | CV, CP | CH | CV, CX, CX, CP | CH | CV, CX, CX, CP | CV,
	/* 0-9 : ; < = > ? */
	CX, CX, CX, CX, CX, CX, CX, CX, CX, CX,
	CP | CH | CV, CP | CH | CV, CV, CP | CH | CV, CV, CP | CV,
	/* @ A-O */
	CP | CV, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX,
	/* P-Z [ \ ] ^ _ */
	CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CH | CV, CV, CH | CV, CT | CV, CX,
	/* ` a-o */
	CT | CV, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX,
	/* p-z { | } ~ DEL */
	CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CX, CV, CT | CV, CV, CX, 0,
	/* 0x80-0xff: obs-text, allowed in field values only */
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
	CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV, CV,
};

static inline int has_class(unsigned char c, unsigned cls)
{
	return (char_class[c] & cls) != 0;
}

static inline int is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static inline int is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static inline unsigned char ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/*
 * origin-form (absolute-path [ "?" query ]) with every '%' followed by two
 * hex digits. Splits it into path and query. The caller has checked that
 * it starts with '/'.
 */
static int parse_origin_form(const unsigned char *t, size_t len, struct http_request *req)
{
	size_t qmark = len;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = t[i];
		if (unlikely(!has_class(c, CP)))
			return -1;
		if (c == '%') {
			if (len - i < 3 || !is_hex(t[i + 1]) || !is_hex(t[i + 2]))
				return -1;
			i += 2;
		} else if (c == '?' && qmark == len) {
			qmark = i;
		}
	}
	req->path.p = (const char *)t;
	req->path.len = qmark;
	if (qmark < len) {
		req->query.p = (const char *)t + qmark + 1;
		req->query.len = len - qmark - 1;
	} else {
		req->query.p = (const char *)t + len;
		req->query.len = 0;
	}
	return 0;
}

/*
 * request-line = method SP request-target SP HTTP-version, without its CRLF.
 * Returns 0 or the status to answer (400, 505). Absolute-form and
 * authority-form targets are refused with 400: sluice is an origin server
 * and never a proxy, so only origin-form (and "*" for OPTIONS) can be meant.
 */
static int parse_request_line(const unsigned char *line, size_t len, struct http_request *req)
{
	size_t i = 0;

	while (i < len && has_class(line[i], CT))
		i++;
	if (i == 0 || i == len || line[i] != ' ')
		return 400;
	req->method.p = (const char *)line;
	req->method.len = i;

	size_t tstart = ++i;
	while (i < len && line[i] != ' ')
		i++;
	size_t tlen = i - tstart;
	if (tlen == 0 || i == len)
		return 400;
	const unsigned char *t = line + tstart;
	req->target.p = (const char *)t;
	req->target.len = tlen;
	if (t[0] == '*') {
		if (tlen != 1 || req->method.len != 7 || memcmp(req->method.p, "OPTIONS", 7) != 0)
			return 400;
		req->path = req->target;
		req->query.p = (const char *)t + 1;
		req->query.len = 0;
	} else if (t[0] != '/' || parse_origin_form(t, tlen, req) != 0) {
		return 400;
	}

	/* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3) */
	const unsigned char *v = line + i + 1;
	if (len - i - 1 != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
	    v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
		return 400;
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
		return 505;
	req->minor_version = v[7] - '0';
	return 0;
}

/*
 * field-line = field-name ":" OWS field-value OWS, without its CRLF. A line
 * starting with whitespace (obs-fold) or with whitespace before the colon
 * fails the field-name scan. Returns 0 or 400.
 */
static int parse_header_line(const unsigned char *line, size_t len, struct http_header *h)
{
	size_t i = 0;

	while (i < len && has_class(line[i], CT))
		i++;
	if (i == 0 || i == len || line[i] != ':')
		return 400;
	h->name.p = (const char *)line;
	h->name.len = i;

	i++;
	while (i < len && is_ows(line[i]))
		i++;
	size_t vstart = i;
	size_t vend = i;
	for (; i < len; i++) {
		if (unlikely(!has_class(line[i], CV)))
			return 400;
		if (!is_ows(line[i]))
			vend = i + 1;
	}
	h->value.p = (const char *)line + vstart;
	h->value.len = vend - vstart;
	return 0;
}

/* Host = uri-host [ ":" port ] (RFC 9110 7.2); empty is allowed. */
static int valid_host(struct http_slice v)
{
	for (size_t i = 0; i < v.len; i++)
		if (!has_class((unsigned char)v.p[i], CH))
			return 0;
	return 1;
}

/* RFC 9112 3.2: one Host on HTTP/1.1, never more than one on any version. */
static int check_host(const struct http_request *req, size_t count)
{
	const struct http_header *host = NULL;

	for (size_t i = 0; i < count; i++) {
		if (!http_slice_ieq(req->headers[i].name, "host"))
			continue;
		if (host)
			return 400;
		host = &req->headers[i];
	}
	if (!host)
		return req->minor_version == 1 ? 400 : 0;
	return valid_host(host->value) ? 0 : 400;
}

/*
 * Parses the whole head from the start. Returns the head length,
 * HTTP_PARSE_INCOMPLETE, or minus the status to answer. req->num_headers
 * is only overwritten (with the count) on success, so after "need more" the
 * caller can call again with the same struct.
 */
static int parse_head(const unsigned char *buf, size_t len, struct http_request *req)
{
	size_t capacity = req->num_headers;
	const unsigned char *lf = memchr(buf, '\n', len);

	if (!lf) {
		/* The line is at least this long once its CRLF arrives. */
		size_t min_content = len - (len > 0 && buf[len - 1] == '\r');
		return min_content > HTTP_MAX_REQUEST_LINE ? -414 : HTTP_PARSE_INCOMPLETE;
	}
	size_t line_len = (size_t)(lf - buf);
	int has_cr = line_len > 0 && buf[line_len - 1] == '\r';
	if (line_len - (size_t)has_cr > HTTP_MAX_REQUEST_LINE)
		return -414;
	if (!has_cr)
		return -400;
	int st = parse_request_line(buf, line_len - 1, req);
	if (st)
		return -st;

	size_t hs = line_len + 1;
	size_t pos = hs;
	size_t count = 0;
	for (;;) {
		size_t off = pos - hs;
		size_t avail = len - pos;
		lf = memchr(buf + pos, '\n', avail);
		if (!lf) {
			int maybe_end = avail == 0 || (avail == 1 && buf[pos] == '\r');
			/* Its LF would land past the limit. */
			if (!maybe_end && off + avail >= HTTP_MAX_HEADER_BYTES)
				return -431;
			return HTTP_PARSE_INCOMPLETE;
		}
		line_len = (size_t)(lf - (buf + pos)) + 1;
		if (line_len == 2 && buf[pos] == '\r')
			break;
		if (off + line_len > HTTP_MAX_HEADER_BYTES || count == HTTP_MAX_HEADERS ||
		    count == capacity)
			return -431;
		if (line_len < 2 || buf[pos + line_len - 2] != '\r')
			return -400;
		st = parse_header_line(buf + pos, line_len - 2, &req->headers[count]);
		if (st)
			return -st;
		count++;
		pos += line_len;
	}

	st = check_host(req, count);
	if (st)
		return -st;
	req->num_headers = count;
	return (int)(pos + 2);
}

/*
 * When the previous call (on the same bytes, shorter) said "need more" and
 * the new bytes complete no line, the answer can only change by a line
 * outgrowing its limit. Returns 1 when the full parse must run.
 */
static int must_reparse(const unsigned char *buf, size_t len, size_t last_len)
{
	if (last_len == 0 || last_len >= len)
		return 1;
	if (memchr(buf + last_len, '\n', len - last_len))
		return 1;
	const unsigned char *lf = memchr(buf, '\n', last_len);
	if (!lf)
		return len > HTTP_MAX_REQUEST_LINE;
	size_t hs = (size_t)(lf - buf) + 1;
	return len - hs >= HTTP_MAX_HEADER_BYTES;
}

int http_parse_request(const char *buf, size_t len, size_t last_len,
		       struct http_request *req, int *status)
{
	const unsigned char *b = (const unsigned char *)buf;

	if (len == 0 || !must_reparse(b, len, last_len))
		return HTTP_PARSE_INCOMPLETE;
	int r = parse_head(b, len, req);
	if (likely(r >= 0) || r == HTTP_PARSE_INCOMPLETE)
		return r;
	*status = -r;
	return HTTP_PARSE_ERROR;
}

int http_char_is_token(unsigned char c)
{
	return has_class(c, CT);
}

int http_char_is_field_value(unsigned char c)
{
	return has_class(c, CV);
}

int http_slice_ieq(struct http_slice s, const char *str)
{
	size_t n = strlen(str);

	if (s.len != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (ascii_lower((unsigned char)s.p[i]) != ascii_lower((unsigned char)str[i]))
			return 0;
	return 1;
}

const struct http_header *http_find_header(const struct http_request *req, const char *name)
{
	for (size_t i = 0; i < req->num_headers; i++)
		if (http_slice_ieq(req->headers[i].name, name))
			return &req->headers[i];
	return NULL;
}

/*
 * Elements are split at ',' and compared up to any ";parameters", with OWS
 * trimmed, so "Upgrade" matches "keep-alive, upgrade" and "chunked" matches
 * "chunked;x=1".
 */
int http_value_has_token(struct http_slice value, const char *token)
{
	size_t i = 0;

	while (i < value.len) {
		size_t start = i;
		while (i < value.len && value.p[i] != ',')
			i++;
		size_t end = i;
		for (size_t k = start; k < end; k++) {
			if (value.p[k] == ';') {
				end = k;
				break;
			}
		}
		while (start < end && is_ows((unsigned char)value.p[start]))
			start++;
		while (end > start && is_ows((unsigned char)value.p[end - 1]))
			end--;
		struct http_slice elem = { value.p + start, end - start };
		if (elem.len > 0 && http_slice_ieq(elem, token))
			return 1;
		i++;
	}
	return 0;
}

/* 1*DIGIT without overflow; anything else (sign, space) fails. */
static int parse_content_length(const char *p, size_t len, uint64_t *out)
{
	uint64_t n = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < '0' || c > '9')
			return -1;
		if (n > (UINT64_MAX - (c - '0')) / 10)
			return -1;
		n = n * 10 + (c - '0');
	}
	*out = n;
	return 0;
}

/* Calls fn for each element of a comma-separated list with OWS trimmed
 * (empty elements included); stops at fn's first non-zero answer. */
static int each_element(struct http_slice v, int (*fn)(struct http_slice e, void *arg), void *arg)
{
	size_t i = 0;

	for (;;) {
		size_t start = i;
		while (i < v.len && v.p[i] != ',')
			i++;
		size_t end = i;
		while (start < end && is_ows((unsigned char)v.p[start]))
			start++;
		while (end > start && is_ows((unsigned char)v.p[end - 1]))
			end--;
		int r = fn((struct http_slice){ v.p + start, end - start }, arg);
		if (r || i >= v.len)
			return r;
		i++;
	}
}

/* Content-Length elements: every one a valid number, all spelled alike
 * (RFC 9112 6.3 item 5: "42, 42" and repeated lines mean 42). */
struct cl_scan {
	struct http_slice first;
	int seen;
};

static int cl_element(struct http_slice e, void *arg)
{
	struct cl_scan *s = arg;
	uint64_t n;

	if (parse_content_length(e.p, e.len, &n) != 0)
		return 400;
	if (s->seen && (e.len != s->first.len || memcmp(e.p, s->first.p, e.len) != 0))
		return 400;
	s->first = e;
	s->seen = 1;
	return 0;
}

/* Transfer-Encoding elements in order, over every TE line. */
struct te_scan {
	int elements;
	int chunked;      /* chunked seen */
	int after_chunked; /* a coding follows chunked */
	int other;        /* a coding other than chunked */
	int bad;          /* empty element, or chunked with parameters */
};

static int te_element(struct http_slice e, void *arg)
{
	struct te_scan *s = arg;
	size_t name = 0;

	while (name < e.len && e.p[name] != ';')
		name++;
	struct http_slice coding = { e.p, name };
	while (coding.len && is_ows((unsigned char)coding.p[coding.len - 1]))
		coding.len--;
	if (coding.len == 0) {
		/* An empty list element (", chunked") is tolerated by the list
		 * syntax; an empty coding with parameters is not. */
		if (name < e.len)
			s->bad = 1;
		return 0;
	}
	s->elements++;
	if (s->chunked)
		s->after_chunked = 1;
	if (http_slice_ieq(coding, "chunked")) {
		if (s->chunked || name < e.len)
			s->bad = 1; /* twice (RFC 9112 6.1), or chunked;param */
		s->chunked = 1;
	} else {
		s->other = 1;
	}
	return 0;
}

int http_request_body_length(const struct http_request *req, size_t max_body,
			     size_t *content_length, int *chunked)
{
	struct cl_scan cl = { { NULL, 0 }, 0 };
	struct te_scan te = { 0, 0, 0, 0, 0 };
	int has_te = 0, has_cl = 0;

	*chunked = 0;
	for (size_t i = 0; i < req->num_headers; i++) {
		const struct http_header *h = &req->headers[i];
		if (http_slice_ieq(h->name, "content-length")) {
			has_cl = 1;
			int st = each_element(h->value, cl_element, &cl);
			if (st)
				return st;
		} else if (http_slice_ieq(h->name, "transfer-encoding")) {
			has_te = 1;
			each_element(h->value, te_element, &te);
		}
	}

	if (has_te) {
		/* RFC 9112 6.1 and 6.3: both framings, TE on 1.0, no coding at
		 * all, chunked twice or not last: the length cannot be known. */
		if (has_cl || req->minor_version == 0 || te.elements == 0 || te.bad ||
		    te.after_chunked)
			return 400;
		if (te.other)
			return 501; /* a coding sluice does not implement */
		*content_length = 0;
		*chunked = 1;
		return 0;
	}
	if (!has_cl) {
		*content_length = 0;
		return 0;
	}
	uint64_t n;
	if (parse_content_length(cl.first.p, cl.first.len, &n) != 0)
		return 400;
	if (n > max_body)
		return 413;
	*content_length = (size_t)n;
	return 0;
}
