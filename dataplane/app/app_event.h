/*
 * Byte-exact formatting of what the app sends to clients: stream events
 * (token, status_update, usage, done) as SSE events or WebSocket JSON text,
 * and the small fixed JSON bodies. docs/api.md is the contract; the unit tests
 * compare these bytes with it.
 *
 * Everything writes into a caller-owned struct ev_buf. A write that does not
 * fit sets `overflow` and leaves len unchanged from that point, so a caller
 * checks once at the end and never sends a cut message.
 */
#ifndef SLUICE_APP_EVENT_H
#define SLUICE_APP_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ev_proto { EV_SSE = 0, EV_WS = 1 };

struct ev_buf {
	char *p;
	size_t len, cap;
	bool overflow;
};

static inline void evb_init(struct ev_buf *b, char *p, size_t cap)
{
	b->p = p;
	b->len = 0;
	b->cap = cap;
	b->overflow = false;
}

void evb_put(struct ev_buf *b, const void *s, size_t n);
void evb_str(struct ev_buf *b, const char *s);
void evb_u64(struct ev_buf *b, uint64_t v);
/* Appends s escaped for a JSON string (without the quotes). */
void evb_esc(struct ev_buf *b, const void *s, size_t n);

/* token: `esc` is the already escaped concatenation of the tokens' text. */
void ev_token(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	      uint32_t seq, uint32_t n, const char *esc, size_t esc_len);
/* status_update; `seq` is the last token seq delivered for mid (SSE id). */
void ev_status(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	       uint32_t seq, const char *status);
void ev_usage(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	      uint32_t prompt, uint32_t completion, uint32_t total, double cost_usd);
/* done; err_code may be NULL (then no "error" member). */
void ev_done(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	     const char *status, const char *err_code, size_t err_code_len,
	     const char *err_msg, size_t err_msg_len);
/* SSE `event: error` without an id, so the client's Last-Event-ID stays on
 * the last event it really got. */
void ev_sse_error(struct ev_buf *b, const char *code, const char *message);
/* {"error":{"code":...,"message":...}} (HTTP bodies) or, for WS,
 * {"type":"error","error":{...}}. */
void ev_error_json(struct ev_buf *b, enum ev_proto proto, const char *code, const char *message);

/* Name of a chan_done_status, or NULL for an unknown value. */
const char *ev_done_status_name(uint32_t status);

#endif
