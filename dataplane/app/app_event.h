/*
 * Byte-exact formatting of what the app sends to clients: stream events
 * (token, status_update, usage, done) as SSE events or WebSocket JSON text,
 * and the small fixed JSON bodies. docs/api.md is the contract; the unit tests
 * compare these bytes with it.
 *
 * Everything writes into a caller-owned struct app_buf (app_buf.h), so a
 * message that does not fit is never sent cut.
 */
#ifndef SLUICE_APP_EVENT_H
#define SLUICE_APP_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/app_buf.h"

enum app_event_proto { APP_EVENT_SSE = 0, APP_EVENT_WS = 1 };

/* token: `esc` is the already escaped concatenation of the tokens' text.
 * `stamps` (nstamps of them, or NULL) are the tokens' creation times, added
 * as "created_ns" for clients that asked with X-Sluice-Timing (docs/api.md). */
void app_event_token(struct app_buf *b, enum app_event_proto proto, const char *sid,
		     const char *mid, uint32_t seq, uint32_t n, const char *esc, size_t esc_len,
		     const uint64_t *stamps, uint32_t nstamps);
/* status_update; `seq` is the last token seq delivered for mid (SSE id). */
void app_event_status(struct app_buf *b, enum app_event_proto proto, const char *sid,
		      const char *mid, uint32_t seq, const char *status);
void app_event_usage(struct app_buf *b, enum app_event_proto proto, const char *sid,
		     const char *mid, uint32_t prompt, uint32_t completion, uint32_t total,
		     double cost_usd);
/* done; err_code may be NULL (then no "error" member). */
void app_event_done(struct app_buf *b, enum app_event_proto proto, const char *sid,
		    const char *mid, const char *status, const char *err_code, size_t err_code_len,
		    const char *err_msg, size_t err_msg_len);
/* SSE `event: error` without an id, so the client's Last-Event-ID stays on
 * the last event it really got. */
void app_event_sse_error(struct app_buf *b, const char *code, const char *message);
/* {"error":{"code":...,"message":...}} (HTTP bodies) or, for WS,
 * {"type":"error","error":{...}}. */
void app_event_error_json(struct app_buf *b, enum app_event_proto proto, const char *code,
			  const char *message);

/* Name of a chan_done_status, or NULL for an unknown value. */
const char *app_event_done_status_name(uint32_t status);

#endif
