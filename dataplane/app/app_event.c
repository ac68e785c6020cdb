/* Stream event and JSON body formatting (see app_event.h). */
#include "app/app_event.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "app/jsonw.h"
#include "sluice/chan_proto.h"

/* Ids come from fixed CHAN_ID_LEN arrays that may lack a NUL when full. */
static void put_id(struct app_buf *b, const char *id)
{
	app_buf_esc(b, id, strnlen(id, CHAN_ID_LEN));
}

/* Opens an event: the SSE id/event lines and the JSON object up to and
 * including the common session_id/message_id members. `id_seq` < 0 means
 * the id suffix is `id_tag` instead of a number. */
static void event_open(struct app_buf *b, enum app_event_proto proto, const char *event,
		       const char *sid, const char *mid, int64_t id_seq, char id_tag)
{
	if (proto == APP_EVENT_SSE) {
		app_buf_str(b, "id: ");
		put_id(b, mid);
		app_buf_put(b, ":", 1);
		if (id_seq >= 0)
			app_buf_u64(b, (uint64_t)id_seq);
		else
			app_buf_put(b, &id_tag, 1);
		app_buf_str(b, "\nevent: ");
		app_buf_str(b, event);
		app_buf_str(b, "\ndata: {");
	} else {
		app_buf_str(b, "{\"type\":\"");
		app_buf_str(b, event);
		app_buf_str(b, "\",");
	}
	app_buf_str(b, "\"session_id\":\"");
	put_id(b, sid);
	app_buf_str(b, "\",\"message_id\":\"");
	put_id(b, mid);
	app_buf_put(b, "\"", 1);
}

static void event_close(struct app_buf *b, enum app_event_proto proto)
{
	if (proto == APP_EVENT_SSE)
		app_buf_put(b, "}\n\n", 3);
	else
		app_buf_put(b, "}", 1);
}

void app_event_token(struct app_buf *b, enum app_event_proto proto, const char *sid,
		     const char *mid, uint32_t seq, uint32_t n, const char *esc, size_t esc_len,
		     const uint64_t *stamps, uint32_t nstamps)
{
	event_open(b, proto, "token", sid, mid, seq, 0);
	app_buf_str(b, ",\"seq\":");
	app_buf_u64(b, seq);
	app_buf_str(b, ",\"n\":");
	app_buf_u64(b, n);
	app_buf_str(b, ",\"text\":\"");
	app_buf_put(b, esc, esc_len);
	app_buf_put(b, "\"", 1);
	if (stamps) {
		app_buf_str(b, ",\"created_ns\":[");
		for (uint32_t i = 0; i < nstamps; i++) {
			if (i)
				app_buf_put(b, ",", 1);
			app_buf_u64(b, stamps[i]);
		}
		app_buf_put(b, "]", 1);
	}
	event_close(b, proto);
}

void app_event_status(struct app_buf *b, enum app_event_proto proto, const char *sid,
		      const char *mid, uint32_t seq, const char *status)
{
	event_open(b, proto, "status_update", sid, mid, seq, 0);
	app_buf_str(b, ",\"status\":\"");
	app_buf_esc(b, status, strnlen(status, CHAN_STATUS_LEN));
	app_buf_put(b, "\"", 1);
	event_close(b, proto);
}

void app_event_usage(struct app_buf *b, enum app_event_proto proto, const char *sid,
		     const char *mid, uint32_t prompt, uint32_t completion, uint32_t total,
		     double cost_usd)
{
	char tmp[40];
	int n;

	/* JSON has no NaN or infinity; a broken cost must not break the stream. */
	if (!isfinite(cost_usd))
		cost_usd = 0;
	n = snprintf(tmp, sizeof(tmp), "%.12g", cost_usd);
	event_open(b, proto, "usage", sid, mid, -1, 'u');
	app_buf_str(b, ",\"prompt_tokens\":");
	app_buf_u64(b, prompt);
	app_buf_str(b, ",\"completion_tokens\":");
	app_buf_u64(b, completion);
	app_buf_str(b, ",\"total_tokens\":");
	app_buf_u64(b, total);
	app_buf_str(b, ",\"cost_usd\":");
	app_buf_put(b, tmp, (size_t)n);
	event_close(b, proto);
}

void app_event_done(struct app_buf *b, enum app_event_proto proto, const char *sid,
		    const char *mid, const char *status, const char *err_code, size_t err_code_len,
		    const char *err_msg, size_t err_msg_len)
{
	event_open(b, proto, "done", sid, mid, -1, 'd');
	app_buf_str(b, ",\"status\":\"");
	app_buf_str(b, status);
	app_buf_put(b, "\"", 1);
	if (err_code) {
		app_buf_str(b, ",\"error\":{\"code\":\"");
		app_buf_esc(b, err_code, err_code_len);
		app_buf_str(b, "\",\"message\":\"");
		app_buf_esc(b, err_msg, err_msg_len);
		app_buf_str(b, "\"}");
	}
	event_close(b, proto);
}

void app_event_error_json(struct app_buf *b, enum app_event_proto proto, const char *code,
			  const char *message)
{
	if (proto == APP_EVENT_WS)
		app_buf_str(b, "{\"type\":\"error\",");
	else
		app_buf_put(b, "{", 1);
	app_buf_str(b, "\"error\":{\"code\":\"");
	app_buf_esc(b, code, strlen(code));
	app_buf_str(b, "\",\"message\":\"");
	app_buf_esc(b, message, strlen(message));
	app_buf_str(b, "\"}}");
}

void app_event_sse_error(struct app_buf *b, const char *code, const char *message)
{
	app_buf_str(b, "event: error\ndata: ");
	app_event_error_json(b, APP_EVENT_SSE, code, message);
	app_buf_put(b, "\n\n", 2);
}

const char *app_event_done_status_name(uint32_t status)
{
	switch (status) {
	case CHAN_DONE_COMPLETE: return "complete";
	case CHAN_DONE_CANCELLED: return "cancelled";
	case CHAN_DONE_ERROR: return "error";
	case CHAN_DONE_INTERRUPTED: return "interrupted";
	default: return NULL;
	}
}
