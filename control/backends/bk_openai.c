/*
 * The OpenAI-compatible client: POST {url}/v1/chat/completions with
 * "stream": true and "stream_options": {"include_usage": true}, the
 * caller's parameters passed through as they are; the answer is an SSE
 * stream of chat.completion.chunk objects ending in "data: [DONE]". An
 * {"error": ...} object in the stream (some servers send it with
 * "event: error") fails the call. Models come from GET {url}/v1/models.
 *
 * Each event's data is parsed with jansson once per upstream chunk, on the
 * loop; the text then travels to subscribers without being parsed again.
 */
#include "backends/bk_int.h"

#include <string.h>

static int oai_request(struct bk_call *c)
{
	json_t *body = c->params ? json_deep_copy(c->params) : json_object();
	json_t *so = json_object_get(body, "stream_options");
	if (!body)
		return -1;
	if (!json_is_object(so)) {
		so = json_object();
		json_object_set_new(body, "stream_options", so);
	}
	if (json_object_set_new(body, "model", json_string(c->model)) < 0 ||
	    json_object_set(body, "messages", c->messages) < 0 ||
	    json_object_set_new(body, "stream", json_true()) < 0 || !so ||
	    json_object_set_new(so, "include_usage", json_true()) < 0) {
		json_decref(body);
		return -1;
	}
	return bk_net_request(c, "/v1/chat/completions", body);
}

/* One chunk: its text, its tool-call delta, its finish_reason, its usage.
 * False when the call must stop. */
static bool oai_chunk(struct bk_call *c, json_t *j)
{
	json_t *choice = json_array_get(json_object_get(j, "choices"), 0);
	json_t *delta = json_object_get(choice, "delta");
	json_t *content = json_object_get(delta, "content");
	if (json_is_string(content) && json_string_length(content) &&
	    !bk_emit_token(c, json_string_value(content), json_string_length(content)))
		return false;
	json_t *tools = json_object_get(delta, "tool_calls");
	if (tools && !json_is_null(tools)) {
		json_t *d = json_pack("{s:O}", "tool_calls", tools);
		char *txt = d ? json_dumps(d, JSON_COMPACT) : NULL;
		json_decref(d);
		bool ok = !txt || bk_emit_delta(c, txt, strlen(txt));
		free(txt);
		if (!ok)
			return false;
	}
	json_t *fr = json_object_get(choice, "finish_reason");
	if (json_is_string(fr))
		snprintf(c->finish, sizeof(c->finish), "%s", json_string_value(fr));
	json_t *u = json_object_get(j, "usage");
	if (json_is_object(u)) {
		json_int_t pt = json_integer_value(json_object_get(u, "prompt_tokens"));
		json_int_t ct = json_integer_value(json_object_get(u, "completion_tokens"));
		bk_emit_usage(c, pt > 0 ? (uint32_t)pt : 0, ct > 0 ? (uint32_t)ct : 0);
	}
	return !c->cancelled;
}

/* One SSE event; false when the call ended or must stop. */
static bool oai_event(struct bk_call *c, const struct sse_event *ev)
{
	if (!ev->data)
		return true; /* a comment or keep-alive: only activity */
	if (ev->done) {
		c->end_marker = true;
		bk_emit_complete(c, c->finish[0] ? c->finish : NULL);
		return false;
	}
	json_error_t jerr;
	json_t *j = json_loadb(ev->data, ev->data_len, 0, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		bk_fail(c, true, 502, "backend_error", "%s sent an event that is not a JSON object",
			c->be->cfg.name);
		return false;
	}
	if (json_object_get(j, "error") || strcmp(ev->name, "error") == 0) {
		const char *msg = bk_error_message(j);
		bk_fail(c, true, 502, c->relayed ? "backend_lost" : "backend_error", "%s: %s", c->be->cfg.name,
			msg ? msg : "error in the stream");
		json_decref(j);
		return false;
	}
	bool ok = oai_chunk(c, j);
	json_decref(j);
	return ok;
}

static bool oai_data(struct bk_call *c, const char *p, size_t n)
{
	if (!bk_buf_put(c, p, n)) {
		bk_fail(c, true, 502, "backend_error", "%s sent an event over %u bytes", c->be->cfg.name,
			BK_EVENT_MAX);
		return false;
	}
	size_t off = 0;
	bool go = true;
	while (go && off < c->blen) {
		struct sse_event ev;
		int r = sse_next(&c->sse, c->buf + off, c->blen - off, &ev);
		if (r == SSE_INCOMPLETE)
			break;
		if (r == SSE_ERROR) {
			bk_fail(c, true, 502, "backend_error", "%s sent a malformed event stream", c->be->cfg.name);
			return false;
		}
		off += (size_t)r;
		go = oai_event(c, &ev);
	}
	if (c->state != BK_C_RUNNING)
		return false;
	memmove(c->buf, c->buf + off, c->blen - off);
	c->blen -= off;
	return go;
}

/* A stream that ended without [DONE] still ended well when its last chunk
 * gave a finish_reason (some servers stop there). */
static bool oai_finish(struct bk_call *c)
{
	if (!c->finish[0])
		return false;
	bk_emit_complete(c, c->finish);
	return true;
}

static uint32_t oai_models(const char *body, size_t len, char names[][CONF_NAME_MAX], uint32_t max)
{
	json_t *j = json_loadb(body, len, 0, NULL);
	uint32_t n = 0;
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(j, "data"), i, m) {
		const char *id = json_string_value(json_object_get(m, "id"));
		if (id && n < max && strlen(id) < CONF_NAME_MAX)
			snprintf(names[n++], CONF_NAME_MAX, "%s", id);
	}
	json_decref(j);
	return n;
}

const struct bk_type_ops bk_oai_ops = {
	.name = "openai",
	.models_path = "/v1/models",
	.request = oai_request,
	.data = oai_data,
	.finish = oai_finish,
	.models = oai_models,
};
