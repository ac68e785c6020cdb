/*
 * HTTP/1.1 request-head parser in picohttpparser's shape: it works on the
 * caller's buffer, returns slices into it, fills a caller-sized header array,
 * keeps no state between calls (call again with more bytes; `last_len` lets it
 * skip re-scanning for the end of the head), and answers done / need more /
 * error. It is strict: it accepts RFC 9112 syntax only (no obs-fold, no bare
 * LF... see docs/api.md) and enforces the limits below so a client can never
 * make it hold more than HTTP_MAX_HEAD bytes.
 */
#ifndef SLUICE_HTTP_PARSE_H
#define SLUICE_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_REQUEST_LINE 8192u /* longer -> 414 */
#define HTTP_MAX_HEADER_BYTES 8192u /* header lines after the request line -> 431 */
#define HTTP_MAX_HEADERS 100u       /* more lines -> 431 */
#define HTTP_MAX_HEAD (HTTP_MAX_REQUEST_LINE + HTTP_MAX_HEADER_BYTES + 4u)

struct http_slice {
	const char *p;
	size_t len;
};

struct http_header {
	struct http_slice name;
	struct http_slice value; /* leading/trailing OWS removed */
};

struct http_request {
	struct http_slice method;
	struct http_slice target; /* request-target as sent */
	struct http_slice path;   /* target up to '?' */
	struct http_slice query;  /* after '?', empty when none */
	int minor_version;        /* 0 or 1 (HTTP/1.x) */
	struct http_header *headers;
	size_t num_headers;       /* in: capacity of headers[]; out: count */
};

enum http_parse_result {
	HTTP_PARSE_ERROR = -1,
	HTTP_PARSE_INCOMPLETE = -2,
};

/*
 * Parses the request head in buf[0..len). Returns the head's length in bytes
 * (through the blank line) when complete, HTTP_PARSE_INCOMPLETE when more
 * bytes are needed, or HTTP_PARSE_ERROR with *status set to the HTTP status
 * to answer (400, 414, 431, 505). `last_len` is the len of the previous call
 * on the same buffer (0 at first). On INCOMPLETE or ERROR req->num_headers is
 * left unchanged (still the capacity); more header lines than the caller's
 * array holds is 431; an empty line before the request line is 400.
 */
int http_parse_request(const char *buf, size_t len, size_t last_len,
		       struct http_request *req, int *status);

/* tchar (RFC 9110 5.6.2): methods, field names, chunk extensions. */
int http_char_is_token(unsigned char c);
/* A byte a field value may hold: VCHAR, obs-text, SP, HTAB. */
int http_char_is_field_value(unsigned char c);
/* Case-insensitive header lookup; NULL when absent. */
const struct http_header *http_find_header(const struct http_request *req, const char *name);
/* Case-insensitive comparison of a slice with a NUL-terminated string. */
int http_slice_ieq(struct http_slice s, const char *str);
/* True when the comma-separated header value contains token (case-insensitive). */
int http_value_has_token(struct http_slice value, const char *token);

/*
 * Request framing from the headers (RFC 9112 section 6). Returns 0 with
 * *chunked set for a chunked body (read it with http_chunked.h), else
 * *content_length (0 when no body); or an HTTP status: 400 (bad or
 * conflicting Content-Length, both Content-Length and Transfer-Encoding,
 * Transfer-Encoding on HTTP/1.0, chunked twice, not last or with
 * parameters), 501 (a transfer coding other than chunked), 413 (a
 * Content-Length larger than max_body).
 */
int http_request_body_length(const struct http_request *req, size_t max_body,
			     size_t *content_length, int *chunked);

#endif
