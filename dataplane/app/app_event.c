/* Stream event and JSON body formatting (see app_event.h). */
#include "app/app_event.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "app/jsonw.h"
#include "sluice/chan_proto.h"

void evb_put(struct ev_buf *b, const void *s, size_t n)
{
	if (unlikely(b->overflow || b->cap - b->len < n)) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void evb_str(struct ev_buf *b, const char *s)
{
	evb_put(b, s, strlen(s));
}

void evb_u64(struct ev_buf *b, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);

	evb_put(b, tmp, (size_t)n);
}

void evb_esc(struct ev_buf *b, const void *s, size_t n)
{
	size_t w;

	if (b->overflow)
		return;
	w = jsonw_escape(b->p + b->len, b->cap - b->len, s, n);
	if (w == JSONW_NOSPACE) {
		b->overflow = true;
		return;
	}
	b->len += w;
}

/* Ids come from fixed CHAN_ID_LEN arrays that may lack a NUL when full. */
static void evb_id(struct ev_buf *b, const char *id)
{
	evb_esc(b, id, strnlen(id, CHAN_ID_LEN));
}

/* Opens an event: the SSE id/event lines and the JSON object up to and
 * including the common session_id/message_id members. `id_seq` < 0 means
 * the id suffix is `id_tag` instead of a number. */
static void ev_open(struct ev_buf *b, enum ev_proto proto, const char *event,
		    const char *sid, const char *mid, int64_t id_seq, char id_tag)
{
	if (proto == EV_SSE) {
		evb_str(b, "id: ");
		evb_id(b, mid);
		evb_put(b, ":", 1);
		if (id_seq >= 0)
			evb_u64(b, (uint64_t)id_seq);
		else
			evb_put(b, &id_tag, 1);
		evb_str(b, "\nevent: ");
		evb_str(b, event);
		evb_str(b, "\ndata: {");
	} else {
		evb_str(b, "{\"type\":\"");
		evb_str(b, event);
		evb_str(b, "\",");
	}
	evb_str(b, "\"session_id\":\"");
	evb_id(b, sid);
	evb_str(b, "\",\"message_id\":\"");
	evb_id(b, mid);
	evb_put(b, "\"", 1);
}

static void ev_close(struct ev_buf *b, enum ev_proto proto)
{
	if (proto == EV_SSE)
		evb_put(b, "}\n\n", 3);
	else
		evb_put(b, "}", 1);
}

void ev_token(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	      uint32_t seq, uint32_t n, const char *esc, size_t esc_len)
{
	ev_open(b, proto, "token", sid, mid, seq, 0);
	evb_str(b, ",\"seq\":");
	evb_u64(b, seq);
	evb_str(b, ",\"n\":");
	evb_u64(b, n);
	evb_str(b, ",\"text\":\"");
	evb_put(b, esc, esc_len);
	evb_put(b, "\"", 1);
	ev_close(b, proto);
}

void ev_status(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	       uint32_t seq, const char *status)
{
	ev_open(b, proto, "status_update", sid, mid, seq, 0);
	evb_str(b, ",\"status\":\"");
	evb_esc(b, status, strnlen(status, CHAN_STATUS_LEN));
	evb_put(b, "\"", 1);
	ev_close(b, proto);
}

void ev_usage(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	      uint32_t prompt, uint32_t completion, uint32_t total, double cost_usd)
{
	char tmp[40];
	int n;

	/* JSON has no NaN or infinity; a broken cost must not break the stream. */
	if (!isfinite(cost_usd))
		cost_usd = 0;
	n = snprintf(tmp, sizeof(tmp), "%.12g", cost_usd);
	ev_open(b, proto, "usage", sid, mid, -1, 'u');
	evb_str(b, ",\"prompt_tokens\":");
	evb_u64(b, prompt);
	evb_str(b, ",\"completion_tokens\":");
	evb_u64(b, completion);
	evb_str(b, ",\"total_tokens\":");
	evb_u64(b, total);
	evb_str(b, ",\"cost_usd\":");
	evb_put(b, tmp, (size_t)n);
	ev_close(b, proto);
}

void ev_done(struct ev_buf *b, enum ev_proto proto, const char *sid, const char *mid,
	     const char *status, const char *err_code, size_t err_code_len,
	     const char *err_msg, size_t err_msg_len)
{
	ev_open(b, proto, "done", sid, mid, -1, 'd');
	evb_str(b, ",\"status\":\"");
	evb_str(b, status);
	evb_put(b, "\"", 1);
	if (err_code) {
		evb_str(b, ",\"error\":{\"code\":\"");
		evb_esc(b, err_code, err_code_len);
		evb_str(b, "\",\"message\":\"");
		evb_esc(b, err_msg, err_msg_len);
		evb_str(b, "\"}");
	}
	ev_close(b, proto);
}

void ev_error_json(struct ev_buf *b, enum ev_proto proto, const char *code, const char *message)
{
	if (proto == EV_WS)
		evb_str(b, "{\"type\":\"error\",");
	else
		evb_put(b, "{", 1);
	evb_str(b, "\"error\":{\"code\":\"");
	evb_esc(b, code, strlen(code));
	evb_str(b, "\",\"message\":\"");
	evb_esc(b, message, strlen(message));
	evb_str(b, "\"}}");
}

void ev_sse_error(struct ev_buf *b, const char *code, const char *message)
{
	evb_str(b, "event: error\ndata: ");
	ev_error_json(b, EV_SSE, code, message);
	evb_put(b, "\n\n", 2);
}

const char *ev_done_status_name(uint32_t status)
{
	switch (status) {
	case CHAN_DONE_COMPLETE: return "complete";
	case CHAN_DONE_CANCELLED: return "cancelled";
	case CHAN_DONE_ERROR: return "error";
	case CHAN_DONE_INTERRUPTED: return "interrupted";
	default: return NULL;
	}
}
