/*
 * Chunked body decoder (see http_chunked.h and docs/http.md). Grammar,
 * RFC 9112 7.1:
 *
 *   chunked-body   = *chunk last-chunk trailer-section CRLF
 *   chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-size     = 1*HEXDIG
 *   last-chunk     = 1*("0") [ chunk-ext ] CRLF
 *   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-val  = token / quoted-string
 *   trailer-section = *( field-line CRLF )
 *
 * Strict where parsers are known to disagree (the request-smuggling
 * shapes): CRLF only (a bare LF or CR is 400), no whitespace between the
 * size and CRLF without an extension, no "0x" or sign, no size that
 * overflows, a CRLF right after the chunk data, no obs-fold in trailers.
 */
#include "http/http_chunked.h"

#include "sluice/common.h"

enum {
	S_SIZE0,      /* first hex digit of a chunk size */
	S_SIZE,       /* more hex digits */
	S_SIZE_WS,    /* BWS after the size: only ";" may follow */
	S_EXT_NAME0,  /* BWS, then the first char of an extension name */
	S_EXT_NAME,
	S_EXT_NAME_WS, /* BWS after a name: "=" or ";" */
	S_EXT_VAL0,   /* BWS, then a token or a quoted string */
	S_EXT_TOKEN,
	S_EXT_QUOTED,
	S_EXT_QPAIR,  /* after a backslash in a quoted string */
	S_EXT_QEND,   /* the closing quote seen */
	S_EXT_VAL_WS, /* BWS after a value: only ";" may follow */
	S_SIZE_LF,    /* CR seen at the end of the size line */
	S_DATA,
	S_DATA_CR,    /* chunk data done: CRLF */
	S_DATA_LF,
	S_TRAILER0,   /* start of a trailer line, or the final CRLF */
	S_TRAILER_NAME,
	S_TRAILER_VALUE,
	S_TRAILER_LF,
	S_END_LF,     /* CR of the final CRLF seen */
};

void http_chunked_init(struct http_chunked *d, size_t max_body)
{
	*d = (struct http_chunked){ .max_body = max_body, .state = S_SIZE0 };
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int is_ws(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
static int is_qdtext(unsigned char c)
{
	return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
	       (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

/* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
static int is_qpair_char(unsigned char c)
{
	return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);
}

static int fail(int *status, int st, size_t *consumed, size_t at)
{
	*status = st;
	*consumed = at;
	return HTTP_CHUNKED_ERROR;
}

/* The end of the size line (its LF): a chunk of data, or the trailers. */
static void size_line_done(struct http_chunked *d)
{
	d->line = 0;
	d->state = d->remaining ? S_DATA : S_TRAILER0;
}

/*
 * One byte of a size line. Returns 0, or the status of the error. The line
 * limit counts every byte before the CR; the extension budget every byte
 * after the size.
 */
static int size_line_byte(struct http_chunked *d, unsigned char c)
{
	if (d->state != S_SIZE_LF && c != '\r') {
		if (++d->line > HTTP_CHUNK_LINE_MAX)
			return 400;
		if (d->state >= S_SIZE_WS && ++d->ext > HTTP_CHUNK_EXT_MAX)
			return 400;
	}
	switch (d->state) {
	case S_SIZE0:
	case S_SIZE: {
		int v = hex_value(c);
		if (v >= 0) {
			if (d->ndigits || v) {
				/* 16 digits hold any uint64; more never fit. */
				if (++d->ndigits > 16)
					return 413;
				d->remaining = d->remaining << 4 | (uint64_t)v;
				if (d->remaining > d->max_body - d->body)
					return 413;
			}
			d->state = S_SIZE;
			return 0;
		}
		if (d->state == S_SIZE0)
			return 400;
		if (c == '\r')
			d->state = S_SIZE_LF;
		else if (c == ';')
			d->state = S_EXT_NAME0;
		else if (is_ws(c))
			d->state = S_SIZE_WS;
		else
			return 400;
		return 0;
	}
	case S_SIZE_WS:
	case S_EXT_VAL_WS:
		if (c == ';')
			d->state = S_EXT_NAME0;
		else if (!is_ws(c))
			return 400;
		return 0;
	case S_EXT_NAME0:
		if (http_char_is_token(c))
			d->state = S_EXT_NAME;
		else if (!is_ws(c))
			return 400;
		return 0;
	case S_EXT_NAME:
		if (http_char_is_token(c))
			return 0;
		if (c == '\r')
			d->state = S_SIZE_LF;
		else if (c == ';')
			d->state = S_EXT_NAME0;
		else if (c == '=')
			d->state = S_EXT_VAL0;
		else if (is_ws(c))
			d->state = S_EXT_NAME_WS;
		else
			return 400;
		return 0;
	case S_EXT_NAME_WS:
		if (c == '=')
			d->state = S_EXT_VAL0;
		else if (c == ';')
			d->state = S_EXT_NAME0;
		else if (!is_ws(c))
			return 400;
		return 0;
	case S_EXT_VAL0:
		if (c == '"')
			d->state = S_EXT_QUOTED;
		else if (http_char_is_token(c))
			d->state = S_EXT_TOKEN;
		else if (!is_ws(c))
			return 400;
		return 0;
	case S_EXT_TOKEN:
		if (http_char_is_token(c))
			return 0;
		if (c == '\r')
			d->state = S_SIZE_LF;
		else if (c == ';')
			d->state = S_EXT_NAME0;
		else if (is_ws(c))
			d->state = S_EXT_VAL_WS;
		else
			return 400;
		return 0;
	case S_EXT_QUOTED:
		if (c == '"')
			d->state = S_EXT_QEND;
		else if (c == '\\')
			d->state = S_EXT_QPAIR;
		else if (!is_qdtext(c))
			return 400;
		return 0;
	case S_EXT_QEND:
		if (c == '\r')
			d->state = S_SIZE_LF;
		else if (c == ';')
			d->state = S_EXT_NAME0;
		else if (is_ws(c))
			d->state = S_EXT_VAL_WS;
		else
			return 400;
		return 0;
	case S_EXT_QPAIR:
		if (!is_qpair_char(c))
			return 400;
		d->state = S_EXT_QUOTED;
		return 0;
	case S_SIZE_LF:
		if (c != '\n')
			return 400;
		size_line_done(d);
		return 0;
	}
	return 400;
}

/* One byte of the trailer section. Returns 0 or the status of the error;
 * sets *done on the final LF. */
static int trailer_byte(struct http_chunked *d, unsigned char c, int *done)
{
	/* The final CRLF is not part of the limit, as for a head's blank line. */
	if (d->state != S_END_LF && !(d->state == S_TRAILER0 && c == '\r') &&
	    ++d->trailer > HTTP_MAX_HEADER_BYTES)
		return 431;
	switch (d->state) {
	case S_TRAILER0:
		if (c == '\r') {
			d->state = S_END_LF;
			return 0;
		}
		if (d->trailers == HTTP_MAX_HEADERS)
			return 431;
		if (!http_char_is_token(c))
			return 400; /* obs-fold, empty name, bare LF */
		d->state = S_TRAILER_NAME;
		return 0;
	case S_TRAILER_NAME:
		if (c == ':')
			d->state = S_TRAILER_VALUE;
		else if (!http_char_is_token(c))
			return 400;
		return 0;
	case S_TRAILER_VALUE:
		if (c == '\r')
			d->state = S_TRAILER_LF;
		else if (!http_char_is_field_value(c))
			return 400;
		return 0;
	case S_TRAILER_LF:
		if (c != '\n')
			return 400;
		d->trailers++;
		d->state = S_TRAILER0;
		return 0;
	case S_END_LF:
		if (c != '\n')
			return 400;
		*done = 1;
		return 0;
	}
	return 400;
}

int http_chunked_step(struct http_chunked *d, const uint8_t *in, size_t len, size_t *consumed,
		      struct http_slice *data, int *status)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = in[i];
		int st, done = 0;

		switch (d->state) {
		case S_DATA: {
			size_t n = len - i;
			if (n > d->remaining)
				n = (size_t)d->remaining;
			d->remaining -= n;
			d->body += n;
			if (!d->remaining)
				d->state = S_DATA_CR;
			data->p = (const char *)in + i;
			data->len = n;
			*consumed = i + n;
			return HTTP_CHUNKED_DATA;
		}
		case S_DATA_CR:
			if (c != '\r')
				return fail(status, 400, consumed, i);
			d->state = S_DATA_LF;
			break;
		case S_DATA_LF:
			if (c != '\n')
				return fail(status, 400, consumed, i);
			d->state = S_SIZE0;
			d->ndigits = 0;
			d->line = 0;
			break;
		case S_TRAILER0:
		case S_TRAILER_NAME:
		case S_TRAILER_VALUE:
		case S_TRAILER_LF:
		case S_END_LF:
			st = trailer_byte(d, c, &done);
			if (st)
				return fail(status, st, consumed, i);
			if (done) {
				*consumed = i + 1;
				return HTTP_CHUNKED_DONE;
			}
			break;
		default:
			st = size_line_byte(d, c);
			if (st)
				return fail(status, st, consumed, i);
			break;
		}
		i++;
	}
	*consumed = len;
	return HTTP_CHUNKED_MORE;
}
