/*
 * The Ollama client: POST {url}/api/chat with "stream": true; the answer is
 * NDJSON, one object per line: {"message":{"role","content"},"done":false}
 * while it streams, then {"done":true,"done_reason",...,
 * "prompt_eval_count","eval_count"}, whose counts are the usage. An
 * {"error":"..."} line fails the call. Models come from GET {url}/api/tags.
 *
 * OpenAI parameters are mapped where Ollama has them: temperature, top_p,
 * top_k, seed, stop, presence_penalty, frequency_penalty and max_tokens /
 * max_completion_tokens (num_predict) go to "options"; tools pass as they
 * are; response_format json_object is "format": "json" and json_schema its
 * schema. Ollama's tool calls (whole, not streamed) are reported as OpenAI
 * tool_calls deltas.
 */
#include "backends/bk_int.h"

#include <stdio.h>
#include <string.h>

/* Ollama wants content as a string: an OpenAI content array becomes its
 * text parts joined. */
static json_t *oll_messages(json_t *msgs)
{
	json_t *out = json_array();
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m) {
		json_t *o = json_deep_copy(m);
		json_t *content = json_object_get(o, "content");
		if (json_is_array(content)) {
			json_t *txt = json_string("");
			size_t k;
			json_t *part;
			json_array_foreach(content, k, part) {
				const char *t = json_string_value(json_object_get(part, "text"));
				if (t && txt) {
					size_t a = json_string_length(txt), b = strlen(t);
					char *cat = malloc(a + b + 1);
					if (cat) {
						memcpy(cat, json_string_value(txt), a);
						memcpy(cat + a, t, b + 1);
						json_string_setn(txt, cat, a + b);
						free(cat);
					}
				}
			}
			json_object_set_new(o, "content", txt);
		} else if (json_is_null(content)) {
			json_object_set_new(o, "content", json_string(""));
		}
		if (!o || json_array_append_new(out, o) < 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

static int oll_request(struct bk_call *c)
{
	static const char *const same[] = { "temperature", "top_p", "top_k", "seed",
					    "presence_penalty", "frequency_penalty" };
	json_t *body = json_object();
	json_t *opts = json_object();
	json_t *msgs = oll_messages(c->messages);
	if (!body || !opts || !msgs) {
		json_decref(body);
		json_decref(opts);
		json_decref(msgs);
		return -1;
	}
	json_object_set_new(body, "model", json_string(c->model));
	json_object_set_new(body, "messages", msgs);
	json_object_set_new(body, "stream", json_true());
	json_t *p = c->params;
	for (size_t i = 0; p && i < sizeof(same) / sizeof(same[0]); i++) {
		json_t *v = json_object_get(p, same[i]);
		if (v && !json_is_null(v))
			json_object_set(opts, same[i], v);
	}
	json_t *mt = json_object_get(p, "max_completion_tokens");
	if (!mt)
		mt = json_object_get(p, "max_tokens");
	if (json_is_integer(mt))
		json_object_set(opts, "num_predict", mt);
	json_t *stop = json_object_get(p, "stop");
	if (json_is_string(stop))
		json_object_set_new(opts, "stop", json_pack("[O]", stop));
	else if (json_is_array(stop))
		json_object_set(opts, "stop", stop);
	json_t *tools = json_object_get(p, "tools");
	if (json_is_array(tools))
		json_object_set(body, "tools", tools);
	json_t *rf = json_object_get(p, "response_format");
	const char *rft = json_string_value(json_object_get(rf, "type"));
	if (rft && strcmp(rft, "json_object") == 0)
		json_object_set_new(body, "format", json_string("json"));
	else if (rft && strcmp(rft, "json_schema") == 0 &&
		 json_object_get(json_object_get(rf, "json_schema"), "schema"))
		json_object_set(body, "format", json_object_get(json_object_get(rf, "json_schema"), "schema"));
	if (json_object_size(opts))
		json_object_set(body, "options", opts);
	json_decref(opts);
	return bk_net_request(c, "/api/chat", body);
}

/* Ollama's tool calls as one OpenAI tool_calls delta: indexes, ids, and the
 * arguments as a JSON string. */
static bool oll_tool_calls(struct bk_call *c, json_t *calls)
{
	json_t *arr = json_array();
	size_t i;
	json_t *tc;
	json_array_foreach(calls, i, tc) {
		json_t *fn = json_object_get(tc, "function");
		json_t *args = json_object_get(fn, "arguments");
		char *atxt = json_is_string(args) ? strdup(json_string_value(args))
						  : json_dumps(args ? args : json_object(), JSON_COMPACT);
		char id[32];
		snprintf(id, sizeof(id), "call_%zu", i);
		json_t *o = json_pack("{s:I,s:s,s:s,s:{s:s?,s:s?}}", "index", (json_int_t)i, "id", id, "type",
				      "function", "function", "name",
				      json_string_value(json_object_get(fn, "name")), "arguments", atxt);
		free(atxt);
		if (o)
			json_array_append_new(arr, o);
	}
	json_t *d = json_pack("{s:o}", "tool_calls", arr);
	char *txt = d ? json_dumps(d, JSON_COMPACT) : NULL;
	json_decref(d);
	bool ok = !txt || bk_emit_delta(c, txt, strlen(txt));
	free(txt);
	snprintf(c->finish, sizeof(c->finish), "tool_calls");
	return ok;
}

/* One line; false when the call ended or must stop. */
static bool oll_line(struct bk_call *c, const char *line, size_t len)
{
	json_t *j = json_loadb(line, len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		bk_fail(c, true, 502, "backend_error", "%s sent a line that is not a JSON object", c->be->cfg.name);
		return false;
	}
	json_t *err = json_object_get(j, "error");
	if (err) {
		const char *msg = bk_error_message(j);
		bk_fail(c, true, 502, c->relayed ? "backend_lost" : "backend_error", "%s: %s", c->be->cfg.name,
			msg ? msg : "error in the stream");
		json_decref(j);
		return false;
	}
	json_t *msg = json_object_get(j, "message");
	json_t *content = json_object_get(msg, "content");
	bool ok = true;
	if (json_is_string(content) && json_string_length(content))
		ok = bk_emit_token(c, json_string_value(content), json_string_length(content));
	json_t *tools = json_object_get(msg, "tool_calls");
	if (ok && json_is_array(tools) && json_array_size(tools))
		ok = oll_tool_calls(c, tools);
	if (ok && json_is_true(json_object_get(j, "done"))) {
		const char *dr = json_string_value(json_object_get(j, "done_reason"));
		if (dr && strcmp(c->finish, "tool_calls") != 0)
			snprintf(c->finish, sizeof(c->finish), "%s", dr);
		json_int_t pt = json_integer_value(json_object_get(j, "prompt_eval_count"));
		json_int_t ct = json_integer_value(json_object_get(j, "eval_count"));
		bk_emit_usage(c, pt > 0 ? (uint32_t)pt : 0, ct > 0 ? (uint32_t)ct : 0);
		c->end_marker = true;
		bk_emit_complete(c, c->finish[0] ? c->finish : "stop");
		ok = false;
	}
	json_decref(j);
	return ok;
}

static bool oll_data(struct bk_call *c, const char *p, size_t n)
{
	if (!bk_buf_put(c, p, n)) {
		bk_fail(c, true, 502, "backend_error", "%s sent a line over %u bytes", c->be->cfg.name, BK_EVENT_MAX);
		return false;
	}
	size_t off = 0;
	bool go = true;
	while (go && off < c->blen) {
		const char *line;
		size_t ll;
		int r = ndj_next(&c->ndj, c->buf + off, c->blen - off, &line, &ll);
		if (r == NDJ_INCOMPLETE)
			break;
		if (r == NDJ_ERROR) {
			bk_fail(c, true, 502, "backend_error", "%s sent a malformed line", c->be->cfg.name);
			return false;
		}
		off += (size_t)r;
		go = oll_line(c, line, ll);
	}
	if (c->state != BK_C_RUNNING)
		return false;
	memmove(c->buf, c->buf + off, c->blen - off);
	c->blen -= off;
	return go;
}

/* Ollama always ends with done:true; without it the stream was cut. */
static bool oll_finish(struct bk_call *c)
{
	(void)c;
	return false;
}

static uint32_t oll_models(const char *body, size_t len, char names[][CONF_NAME_MAX], uint32_t max)
{
	json_t *j = json_loadb(body, len, 0, NULL);
	uint32_t n = 0;
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(j, "models"), i, m) {
		const char *id = json_string_value(json_object_get(m, "name"));
		if (!id)
			id = json_string_value(json_object_get(m, "model"));
		if (id && n < max && strlen(id) < CONF_NAME_MAX)
			snprintf(names[n++], CONF_NAME_MAX, "%s", id);
	}
	json_decref(j);
	return n;
}

const struct bk_type_ops bk_oll_ops = {
	.name = "ollama",
	.models_path = "/api/tags",
	.request = oll_request,
	.data = oll_data,
	.finish = oll_finish,
	.models = oll_models,
};
