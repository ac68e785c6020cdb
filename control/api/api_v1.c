/*
 * The OpenAI-compatible API (docs/api.md "OpenAI-compatible API"):
 * GET /v1/models and POST /v1/chat/completions, stream true or false.
 *
 * A completion is a backend call (backends/backends.h) with the client's
 * messages and parameters passed through. Streamed, the answer is a
 * streamed RESPONSE (CHAN_RESP_HTTP_STREAM): the head at once, then OpenAI
 * chunks ("data: {...}\n\n") as one part per request per loop turn (the
 * channel output's flush hook), the final chunk with finish_reason, the
 * usage chunk when stream_options.include_usage, "data: [DONE]". While no
 * token came, a ": keep-alive" comment goes every sse_keepalive_s. Not
 * streamed, it is one JSON response at the end. A CONN_CLOSED for the
 * connection cancels the backend call in the same loop turn.
 *
 * Conversations made here are recorded in the store like chat ones (agent
 * "openai-api", owned by the caller, the last user message and the answer,
 * usage under the API key) unless the request says "store": false.
 */
#include "api/api_int.h"
#include "api/api_v1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/synthetic.h"
#include "limits/limits.h"
#include "sluice/common.h"
#include "sluice/log.h"

#define V1_AGENT "openai-api"

struct v1_buf {
	char *p;
	size_t len, cap;
	bool oom;
};

/* One completion in flight. */
struct v1_req {
	struct idmap_node node; /* first; key: the conn handle */
	struct api *a;
	struct chat_reply r;
	struct bk_call *call;
	struct v1_req *pnext;   /* the api's list of requests with unsent chunks */
	bool pending;
	bool stream, include_usage, record;
	bool relayed;           /* a token or delta reached the client (or the buffer) */
	bool usage_seen;
	uint32_t up, uc;        /* the backend's counts */
	uint32_t tokens;        /* token events */
	uint32_t prompt_est;
	char id[48];
	char model[CONF_NAME_MAX];
	char backend[CONF_NAME_MAX];
	char key_id[STORE_KEYID_MAX];
	char user[STORE_USER_MAX];
	/* Limits (docs/api.md "Limits"): counted at the start, token events
	 * not yet handed to the counters, and those that were. */
	uint32_t lim_n, lim_counted;
	size_t lim_bytes;
	int64_t created;
	uint64_t start_ns;
	struct v1_buf out;      /* streamed: chunks of this turn; not streamed: the content */
	json_t *tool_calls;     /* not streamed: merged tool-call deltas */
	struct cpl_timer ka;    /* keep-alive while nothing is sent */
	uint64_t last_sent_ns;
	/* recording */
	char sid[CHAN_ID_LEN], mid[CHAN_ID_LEN];
	uint32_t stored;        /* tokens appended to the store */
	struct chat_tok *toks;  /* owned: offsets into text of the tokens not yet stored */
	uint32_t ntoks, tok_cap;
	struct v1_buf text;     /* recording: the answer's text */
};

/* ---- buffers and JSON text ------------------------------------------------- */

static void v1_put(struct v1_buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void v1_str(struct v1_buf *b, const char *s)
{
	v1_put(b, s, strlen(s));
}

/* s as the inside of a JSON string (the text is UTF-8 from a backend). */
static void v1_esc(struct v1_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		v1_put(b, s + run, i - run);
		char e[6] = { '\\', 0, 0, 0, 0, 0 };
		size_t el = 2;
		switch (ch) {
		case '"': e[1] = '"'; break;
		case '\\': e[1] = '\\'; break;
		case '\n': e[1] = 'n'; break;
		case '\r': e[1] = 'r'; break;
		case '\t': e[1] = 't'; break;
		default:
			e[1] = 'u';
			e[2] = '0';
			e[3] = '0';
			e[4] = hex[ch >> 4];
			e[5] = hex[ch & 15];
			el = 6;
		}
		v1_put(b, e, el);
		run = i + 1;
	}
	v1_put(b, s + run, n - run);
}

/* The start of a chunk up to its choices. */
static void v1_chunk_head(struct v1_req *v, struct v1_buf *b)
{
	char num[32];
	v1_str(b, "data: {\"id\":\"");
	v1_str(b, v->id);
	v1_str(b, "\",\"object\":\"chat.completion.chunk\",\"created\":");
	snprintf(num, sizeof(num), "%lld", (long long)v->created);
	v1_str(b, num);
	v1_str(b, ",\"model\":\"");
	v1_esc(b, v->model, strlen(v->model));
	v1_str(b, "\",");
}

/* {"prompt_tokens":..,"completion_tokens":..,"total_tokens":..,"cost_usd":..} */
static void v1_usage_obj(struct v1_req *v, struct v1_buf *b)
{
	uint32_t pt = v->usage_seen ? v->up : v->prompt_est;
	uint32_t ct = v->usage_seen ? v->uc : v->tokens;
	char txt[160];
	snprintf(txt, sizeof(txt), "{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%u,\"cost_usd\":%.9g}",
		 pt, ct, pt + ct, conf_model_cost(v->a->conf, v->model, pt, ct));
	v1_str(b, txt);
}

/* The usage chunk, when the client asked for one. */
static void v1_usage_chunk(struct v1_req *v, struct v1_buf *b)
{
	if (!v->include_usage)
		return;
	v1_chunk_head(v, b);
	v1_str(b, "\"choices\":[],\"usage\":");
	v1_usage_obj(v, b);
	v1_str(b, "}\n\n");
}

/* OpenAI's error object as a stream event. */
static void v1_error_event(struct v1_buf *b, const char *type, const char *code, const char *msg)
{
	v1_str(b, "data: {\"error\":{\"message\":\"");
	v1_esc(b, msg, strlen(msg));
	v1_str(b, "\",\"type\":\"");
	v1_str(b, type);
	v1_str(b, "\",\"param\":null,\"code\":\"");
	v1_str(b, code);
	v1_str(b, "\"}}\n\n");
}

/* OpenAI's error type for a status; api_error gives /v1 errors that shape. */
const char *api_v1_error_type(uint16_t status)
{
	switch (status) {
	case 401:
		return "authentication_error";
	case 403:
		return "permission_error";
	case 404:
	case 400:
	case 409:
	case 413:
	case 422:
		return "invalid_request_error";
	case 429:
		return "rate_limit_error";
	default:
		return "api_error";
	}
}

/* ---- the request table ---------------------------------------------------- */

static size_t v1_key(struct chan_conn conn, char key[CHAN_ID_LEN])
{
	int n = snprintf(key, CHAN_ID_LEN, "%x.%x.%x", conn.worker, conn.slot, conn.gen);
	return n > 0 ? (size_t)n : 0;
}

static void v1_pending_remove(struct api *a, struct v1_req *v)
{
	if (!v->pending)
		return;
	for (struct v1_req **pp = &a->v1_pending; *pp; pp = &(*pp)->pnext) {
		if (*pp == v) {
			*pp = v->pnext;
			break;
		}
	}
	v->pending = false;
	v->pnext = NULL;
}

static void v1_free(struct v1_req *v)
{
	struct api *a = v->a;
	cpl_timer_cancel(a->loop, &v->ka);
	v1_pending_remove(a, v);
	idmap_remove(&a->v1_reqs, &v->node);
	json_decref(v->tool_calls);
	free(v->out.p);
	free(v->text.p);
	free(v->toks);
	free(v);
}

/* ---- streamed parts --------------------------------------------------------- */

/* Sends b as one part of the streamed response (more: not the last). */
static bool v1_part(struct v1_req *v, const char *body, size_t len, bool more)
{
	struct co_resp resp = { .status = 200, .action = CHAN_RESP_HTTP_STREAM, .body = body, .body_len = len,
				.content_type = "text/event-stream" };
	if (!co_response_part(v->a->out, v->r.conn, v->r.req_id, &resp, more)) {
		v->a->stats.reply_drops++;
		LOG_WARN("a /v1 stream to worker %u was cut: channel full", v->r.conn.worker);
		return false;
	}
	v->last_sent_ns = cpl_now(v->a->loop);
	return true;
}

/* The chunks this turn produced, in one part. */
static bool v1_flush(struct v1_req *v)
{
	v1_pending_remove(v->a, v);
	if (!v->stream || v->out.len == 0)
		return true;
	bool ok = !v->out.oom && v1_part(v, v->out.p, v->out.len, true);
	v->out.len = 0;
	return ok;
}

/* ---- recording -------------------------------------------------------------- */

static void v1_store_tokens(struct v1_req *v)
{
	struct api *a = v->a;
	if (!v->record || !v->ntoks || v->text.oom)
		return;
	struct store_token st[64];
	uint32_t i = 0;
	while (i < v->ntoks) {
		uint32_t n = 0;
		for (; n < 64 && i + n < v->ntoks; n++) {
			const struct chat_tok *t = &v->toks[i + n];
			st[n] = (struct store_token){ .text = v->text.p + t->off, .len = t->len,
						      .offset_ns = t->offset_ns };
		}
		if (store_tokens_append(a->st, v->sid, v->mid, v->stored + 1, st, n) < 0)
			LOG_ERROR("store: cannot append tokens to %s", v->mid);
		v->stored += n;
		i += n;
	}
	v->ntoks = 0;
}

static void v1_record_token(struct v1_req *v, const char *text, size_t len)
{
	if (!v->record)
		return;
	if (v->ntoks == v->tok_cap) {
		uint32_t cap = v->tok_cap ? v->tok_cap * 2 : 64;
		struct chat_tok *t = realloc(v->toks, cap * sizeof(*t));
		if (!t) {
			v->text.oom = true;
			return;
		}
		v->toks = t;
		v->tok_cap = cap;
	}
	v->toks[v->ntoks++] = (struct chat_tok){ .off = (uint32_t)v->text.len, .len = (uint32_t)len,
						 .offset_ns = sluice_now_ns() - v->start_ns };
	v1_put(&v->text, text, len);
}

/* The last user message's text (what a recorded completion stores of the
 * request), "" when there is none. */
static const char *v1_last_user(json_t *messages, size_t *len)
{
	size_t i = json_array_size(messages);
	while (i-- > 0) {
		json_t *m = json_array_get(messages, i);
		const char *role = json_string_value(json_object_get(m, "role"));
		json_t *c = json_object_get(m, "content");
		if (role && strcmp(role, "user") == 0 && json_is_string(c)) {
			*len = json_string_length(c);
			return json_string_value(c);
		}
	}
	*len = 0;
	return "";
}

/* The conversation and the two messages, queued at the start; nothing
 * waits for their commit (the client is told nothing about them). */
static void v1_record_start(struct v1_req *v, const struct api_req *q, json_t *messages)
{
	struct api *a = v->a;
	size_t clen;
	const char *content = v1_last_user(messages, &clen);
	struct store_session ss;
	memset(&ss, 0, sizeof(ss));
	chat_new_id("s_", ss.id);
	snprintf(ss.user, sizeof(ss.user), "%s", q->user);
	ss.owner_uid = q->uid;
	snprintf(ss.agent_id, sizeof(ss.agent_id), "%s", V1_AGENT);
	snprintf(ss.model_id, sizeof(ss.model_id), "%s", v->model);
	ss.created_at = ss.updated_at = (int64_t)time(NULL);
	char umid[CHAN_ID_LEN];
	chat_new_id("m_", umid);
	chat_new_id("m_", v->mid);
	memcpy(v->sid, ss.id, CHAN_ID_LEN);
	if (store_session_create(a->st, &ss, NULL, NULL) < 0 ||
	    store_message_add(a->st, v->sid, umid, content, clen, v->mid, 0, v->key_id, NULL, NULL) < 0) {
		LOG_WARN("store: the /v1 conversation %s is not recorded", v->sid);
		v->record = false;
		lim_session_failed(a->limits, v->user);
		return;
	}
	chat_event(a->chat, v->sid, "created", NULL);
}

/* The token events since the last turn go to the limits' counters (once
 * per loop turn, as chat answers' do). True when they took the caller
 * past its daily token budget, *cut (may be NULL) saying which. */
static bool v1_lim_tokens(struct v1_req *v, struct lim_refusal *cut)
{
	if (!v->lim_n)
		return false;
	bool over = lim_answer_tokens(v->a->limits, v->user, v->key_id, v->lim_n, v->lim_bytes, cut);
	v->lim_counted += v->lim_n;
	v->lim_n = 0;
	v->lim_bytes = 0;
	return over;
}

/* Ends the completion's record and its share of the limits (the backend's
 * usage report, when it sent one, is the token count that holds). Every
 * path that ends a started completion comes here once, before v1_free. */
static void v1_record_end(struct v1_req *v, enum store_msg_status st)
{
	struct store_usage u = { 0 };
	u.prompt_tokens = v->usage_seen ? v->up : v->prompt_est;
	u.completion_tokens = v->usage_seen ? v->uc : v->tokens;
	u.cost_usd = conf_model_cost(v->a->conf, v->model, u.prompt_tokens, u.completion_tokens);
	chat_count_usage(v->a->chat, &u);
	v1_lim_tokens(v, NULL);
	lim_answer_end(v->a->limits, v->user, v->key_id, (int64_t)u.completion_tokens - (int64_t)v->lim_counted);
	if (!v->record)
		return;
	v1_store_tokens(v);
	snprintf(u.backend, sizeof(u.backend), "%s", v->backend);
	snprintf(u.key_id, sizeof(u.key_id), "%s", v->key_id);
	if (store_message_status(v->a->st, v->sid, v->mid, st, &u) < 0)
		LOG_ERROR("store: cannot end message %s", v->mid);
}

/* ---- the backend's events -------------------------------------------------- */

static void v1_mark_pending(struct v1_req *v)
{
	if (v->pending)
		return;
	v->pending = true;
	v->pnext = v->a->v1_pending;
	v->a->v1_pending = v;
}

static void v1_on_status(void *arg, enum bk_status st, const char *backend)
{
	struct v1_req *v = arg;
	snprintf(v->backend, sizeof(v->backend), "%s", backend);
	if (st == BK_STATUS_STREAMING && v->record) {
		struct store_usage u = { .prompt_tokens = v->prompt_est };
		snprintf(u.backend, sizeof(u.backend), "%s", backend);
		store_message_status(v->a->st, v->sid, v->mid, STORE_MSG_STREAMING, &u);
	}
}

static void v1_on_token(void *arg, const char *text, size_t len)
{
	struct v1_req *v = arg;
	v->tokens++;
	v->lim_n++;
	if (v->record)
		v->lim_bytes += len;
	v1_record_token(v, text, len);
	if (!v->stream) {
		v1_put(&v->out, text, len);
		v1_mark_pending(v);
		return;
	}
	v1_chunk_head(v, &v->out);
	v1_str(&v->out, "\"choices\":[{\"index\":0,\"delta\":{");
	if (!v->relayed)
		v1_str(&v->out, "\"role\":\"assistant\",");
	v1_str(&v->out, "\"content\":\"");
	v1_esc(&v->out, text, len);
	v1_str(&v->out, "\"},\"finish_reason\":null}]}\n\n");
	v->relayed = true;
	v1_mark_pending(v);
}

/* Not streamed: tool-call deltas merge by index (ids, names, argument
 * pieces appended), as clients assemble them. */
static void v1_merge_tools(struct v1_req *v, json_t *deltas)
{
	if (!v->tool_calls)
		v->tool_calls = json_array();
	size_t i;
	json_t *d;
	json_array_foreach(deltas, i, d) {
		json_int_t idx = json_integer_value(json_object_get(d, "index"));
		while (v->tool_calls && (json_int_t)json_array_size(v->tool_calls) <= idx && idx < 128)
			json_array_append_new(v->tool_calls,
					      json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", "", "type", "function", "function",
							"name", "", "arguments", ""));
		json_t *tc = json_array_get(v->tool_calls, (size_t)idx);
		if (!tc)
			continue;
		const char *id = json_string_value(json_object_get(d, "id"));
		if (id)
			json_object_set_new(tc, "id", json_string(id));
		json_t *fn = json_object_get(d, "function"), *tfn = json_object_get(tc, "function");
		const char *name = json_string_value(json_object_get(fn, "name"));
		if (name && name[0])
			json_object_set_new(tfn, "name", json_string(name));
		const char *args = json_string_value(json_object_get(fn, "arguments"));
		if (args) {
			const char *old = json_string_value(json_object_get(tfn, "arguments"));
			size_t ol = old ? strlen(old) : 0, al = strlen(args);
			char *cat = malloc(ol + al + 1);
			if (cat) {
				memcpy(cat, old ? old : "", ol);
				memcpy(cat + ol, args, al + 1);
				json_object_set_new(tfn, "arguments", json_string(cat));
				free(cat);
			}
		}
	}
}

static void v1_on_delta(void *arg, const char *json, size_t len)
{
	struct v1_req *v = arg;
	if (!v->stream) {
		json_t *d = json_loadb(json, len, 0, NULL);
		json_t *tools = json_object_get(d, "tool_calls");
		if (json_is_array(tools))
			v1_merge_tools(v, tools);
		json_decref(d);
		return;
	}
	v1_chunk_head(v, &v->out);
	v1_str(&v->out, "\"choices\":[{\"index\":0,\"delta\":");
	if (!v->relayed && len > 1 && json[0] == '{') {
		v1_str(&v->out, "{\"role\":\"assistant\",");
		v1_put(&v->out, json + 1, len - 1);
	} else {
		v1_put(&v->out, json, len);
	}
	v1_str(&v->out, ",\"finish_reason\":null}]}\n\n");
	v->relayed = true;
	v1_mark_pending(v);
}

static void v1_on_usage(void *arg, uint32_t prompt_tokens, uint32_t completion_tokens)
{
	struct v1_req *v = arg;
	v->usage_seen = true;
	v->up = prompt_tokens;
	v->uc = completion_tokens;
}



/* The whole answer of a request that was not streamed. */
static void v1_send_whole(struct v1_req *v, const char *finish)
{
	json_t *msg = json_pack("{s:s}", "role", "assistant");
	if (v->out.len || !v->tool_calls)
		json_object_set_new(msg, "content", json_stringn(v->out.p ? v->out.p : "", v->out.len));
	else
		json_object_set_new(msg, "content", json_null());
	if (v->tool_calls)
		json_object_set(msg, "tool_calls", v->tool_calls);
	struct v1_buf u = { 0 };
	v1_usage_obj(v, &u);
	json_t *usage = u.p ? json_loads(u.p, 0, NULL) : NULL;
	free(u.p);
	json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s}],s:o?}", "id", v->id, "object", "chat.completion",
			      "created", (json_int_t)v->created, "model", v->model, "choices", "index", 0,
			      "message", msg, "finish_reason", finish ? finish : "stop", "usage", usage);
	api_send_json(v->a, &v->r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
}

static void v1_on_end(void *arg, const struct bk_end *e)
{
	struct v1_req *v = arg;
	v->call = NULL;
	enum store_msg_status st = e->kind == BK_END_COMPLETE ? STORE_MSG_COMPLETE
				 : e->kind == BK_END_INTERRUPTED ? STORE_MSG_INTERRUPTED : STORE_MSG_ERROR;
	const char *finish = e->finish_reason ? e->finish_reason : "stop";
	if (!v->stream) {
		if (e->kind == BK_END_COMPLETE)
			v1_send_whole(v, finish);
		else
			api_error(v->a, &v->r, e->http_status ? e->http_status : 502, e->code ? e->code : "backend_error",
				 e->message ? e->message : "the backend failed", NULL);
		v1_record_end(v, st);
		v1_free(v);
		return;
	}
	struct v1_buf *b = &v->out;
	if (e->kind == BK_END_COMPLETE) {
		v1_chunk_head(v, b);
		v1_str(b, "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"");
		v1_esc(b, finish, strlen(finish));
		v1_str(b, "\"}]}\n\n");
		v1_usage_chunk(v, b);
		v1_str(b, "data: [DONE]\n\n");
	} else {
		/* An explicit error event, never a clean end after a failure. */
		uint16_t status = e->http_status ? e->http_status : 502;
		v1_error_event(b, api_v1_error_type(status), e->code ? e->code : "backend_error",
			       e->message ? e->message : "the backend failed");
	}
	v1_pending_remove(v->a, v);
	if (!b->oom)
		v1_part(v, b->p, b->len, false);
	v1_record_end(v, st);
	v1_free(v);
}

/*
 * The caller's tokens went past its daily budget (docs/api.md "Limits"): the
 * upstream request closes in this loop turn and the answer is recorded with
 * its tokens so far, status error. Streamed, the client gets the usage
 * chunk (when it asked for one), the error event with the limit's code and
 * [DONE]: sluice ended the stream on purpose, unlike a backend failure.
 * Not streamed, nothing was sent yet: 429 with the limit's error.
 */
static void v1_cut(struct v1_req *v, const struct lim_refusal *cut)
{
	bk_call_cancel(v->call);
	v->call = NULL;
	v->a->chat->stats.answers_cut++;
	if (v->stream) {
		char msg[160];
		struct v1_buf *b = &v->out;
		api_limit_cut_message(cut, msg, sizeof(msg));
		v1_usage_chunk(v, b);
		v1_error_event(b, api_limit_type(cut->limit), lim_code(cut->limit), msg);
		v1_str(b, "data: [DONE]\n\n");
		if (!b->oom)
			v1_part(v, b->p, b->len, false);
	} else {
		api_limit_error(v->a, &v->r, cut);
	}
	v1_record_end(v, STORE_MSG_ERROR);
	v1_free(v);
}

static const struct bk_events v1_bk_events = {
	.status = v1_on_status,
	.token = v1_on_token,
	.delta = v1_on_delta,
	.usage = v1_on_usage,
	.end = v1_on_end,
};

/* ---- flush hook, keep-alives, closed conns ---------------------------------- */

static void v1_flush_hook(void *arg)
{
	struct api *a = arg;
	while (a->v1_pending) {
		struct v1_req *v = a->v1_pending;
		struct lim_refusal cut;
		bool ok = v1_flush(v);
		v1_store_tokens(v);
		bool over = v1_lim_tokens(v, &cut);
		if (!ok) {
			bk_call_cancel(v->call);
			v->call = NULL;
			v1_record_end(v, STORE_MSG_ERROR);
			v1_free(v);
		} else if (over) {
			v1_cut(v, &cut);
		}
	}
}

static void v1_keepalive(void *arg, uint64_t now_ns)
{
	struct v1_req *v = arg;
	uint64_t every = (uint64_t)v->a->conf->sse_keepalive_s * 1000000000ull;
	if (now_ns - v->last_sent_ns >= every && !v->pending) {
		static const char ka[] = ": keep-alive\n\n";
		if (!v1_part(v, ka, sizeof(ka) - 1, true)) {
			bk_call_cancel(v->call);
			v->call = NULL;
			v1_record_end(v, STORE_MSG_ERROR);
			v1_free(v);
			return;
		}
	}
	cpl_timer_arm(v->a->loop, &v->ka, v->last_sent_ns + every);
}

void api_v1_conn_closed(struct api *a, struct chan_conn conn)
{
	char key[CHAN_ID_LEN];
	size_t kl = v1_key(conn, key);
	struct v1_req *v = (struct v1_req *)idmap_find(&a->v1_reqs, key, kl);
	if (!v)
		return;
	/* The client left: the upstream request closes now. */
	bk_call_cancel(v->call);
	v->call = NULL;
	v1_record_end(v, STORE_MSG_CANCELLED);
	v1_free(v);
}

static void v1_free_node(struct idmap_node *n, void *arg)
{
	(void)arg;
	struct v1_req *v = (struct v1_req *)n;
	cpl_timer_cancel(v->a->loop, &v->ka);
	json_decref(v->tool_calls);
	free(v->out.p);
	free(v->text.p);
	free(v->toks);
	free(v);
}

struct v1_collect {
	struct v1_req **v;
	uint32_t n;
};

static void v1_collect_each(struct idmap_node *n, void *arg)
{
	struct v1_collect *x = arg;
	x->v[x->n++] = (struct v1_req *)n;
}

/* A new dataplane incarnation: the connections of every completion are
 * gone (no CONN_CLOSED will come), so their backend calls stop now. */
static void v1_peer_reset(void *arg)
{
	struct api *a = arg;
	struct v1_collect x = { .v = calloc(idmap_count(&a->v1_reqs) + 1, sizeof(*x.v)) };
	if (!x.v)
		return;
	idmap_foreach(&a->v1_reqs, v1_collect_each, &x);
	for (uint32_t i = 0; i < x.n; i++) {
		struct v1_req *v = x.v[i];
		bk_call_cancel(v->call);
		v->call = NULL;
		v1_record_end(v, STORE_MSG_CANCELLED);
		v1_free(v);
	}
	free(x.v);
}

int api_v1_init(struct api *a)
{
	if (idmap_init(&a->v1_reqs, 256) < 0)
		return -1;
	if (cpl_on_peer_reset(a->loop, v1_peer_reset, a) < 0)
		return -1;
	return co_on_flush(a->out, v1_flush_hook, a);
}

void api_v1_free(struct api *a)
{
	idmap_foreach(&a->v1_reqs, v1_free_node, NULL);
	idmap_free(&a->v1_reqs);
	a->v1_pending = NULL;
}

/* ---- the handlers ----------------------------------------------------------- */

struct v1_models_ctx {
	json_t *arr;
};

static void v1_models_each(void *arg, const char *model, const char *backend)
{
	struct v1_models_ctx *x = arg;
	json_array_append_new(x->arr, json_pack("{s:s,s:s,s:i,s:s}", "id", model, "object", "model", "created", 0,
						"owned_by", backend));
}

static void v1_models(struct api *a, const struct chat_reply *r)
{
	struct v1_models_ctx x = { json_array() };
	if (!x.arr)
		return;
	bk_models_foreach(a->bk, v1_models_each, &x);
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, json_pack("{s:s,s:o}", "object", "list", "data", x.arr),
		      NULL);
}

/* Words of every message's text: the prompt estimate when the backend gives
 * no count. */
static uint32_t v1_words(json_t *messages)
{
	uint32_t n = 0;
	size_t i;
	json_t *m;
	json_array_foreach(messages, i, m) {
		json_t *c = json_object_get(m, "content");
		if (json_is_string(c))
			n += syn_prompt_tokens(json_string_value(c), json_string_length(c));
	}
	return n;
}

static void v1_completions(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	json_t *j = q->body ? json_loadb(q->body, q->body_len, 0, NULL) : NULL;
	if (!json_is_object(j)) {
		json_decref(j);
		api_error(a, r, 400, "invalid_json", "the body is not a JSON object", NULL);
		return;
	}
	json_t *model = json_object_get(j, "model"), *messages = json_object_get(j, "messages");
	json_t *stream = json_object_get(j, "stream"), *so = json_object_get(j, "stream_options");
	json_t *store = json_object_get(j, "store"), *n = json_object_get(j, "n");
	const char *bad = !json_is_string(model) ? "model must be a string"
			  : !json_is_array(messages) || !json_array_size(messages) ? "messages must be a non-empty array"
			  : stream && !json_is_boolean(stream) && !json_is_null(stream) ? "stream must be a boolean"
			  : store && !json_is_boolean(store) && !json_is_null(store) ? "store must be a boolean"
			  : n && !json_is_null(n) && json_integer_value(n) != 1 ? "only n = 1 is supported"
			  : json_string_length(model) >= CONF_NAME_MAX ? "model is too long" : NULL;
	if (bad) {
		api_error(a, r, 400, "invalid_request", bad, NULL);
		json_decref(j);
		return;
	}
	/* The limits of chat messages, checked before anything is stored or
	 * sent: a recorded completion is a new conversation holding the last
	 * user message. */
	bool record = !json_is_false(store);
	size_t stored_len = 0;
	if (record)
		v1_last_user(messages, &stored_len);
	struct lim_who w = api_lim_who(q);
	struct lim_refusal why;
	if (record && !lim_session_begin(a->limits, &w, &why)) {
		api_limit_error(a, r, &why);
		json_decref(j);
		return;
	}
	if (!lim_message_begin(a->limits, &w, stored_len, &why)) {
		if (record)
			lim_session_failed(a->limits, q->user);
		api_limit_error(a, r, &why);
		json_decref(j);
		return;
	}
	struct v1_req *v = calloc(1, sizeof(*v));
	if (!v) {
		lim_message_failed(a->limits, q->user, w.key_id, stored_len);
		if (record)
			lim_session_failed(a->limits, q->user);
		api_error(a, r, 500, "internal", "out of memory", NULL);
		json_decref(j);
		return;
	}
	v->a = a;
	v->r = *r;
	v->stream = json_is_true(stream);
	v->include_usage = json_is_true(json_object_get(so, "include_usage"));
	v->record = record;
	snprintf(v->model, sizeof(v->model), "%s", json_string_value(model));
	snprintf(v->key_id, sizeof(v->key_id), "%s", w.key_id ? w.key_id : "");
	snprintf(v->user, sizeof(v->user), "%s", q->user);
	v->created = (int64_t)time(NULL);
	v->start_ns = sluice_now_ns();
	char rid[CHAN_ID_LEN];
	chat_new_id("", rid);
	snprintf(v->id, sizeof(v->id), "chatcmpl-%s", rid);
	v->prompt_est = v1_words(messages);
	cpl_timer_init(&v->ka, v1_keepalive, v);
	/* Everything else goes to the backend as the client sent it. */
	json_t *params = json_deep_copy(j);
	static const char *const ours[] = { "model", "messages", "stream", "stream_options", "store", "n" };
	for (size_t i = 0; params && i < SLUICE_ARRAY_LEN(ours); i++)
		json_object_del(params, ours[i]);
	char *ptxt = params ? json_dumps(params, JSON_COMPACT) : NULL;
	char *mtxt = json_dumps(messages, JSON_COMPACT);
	json_decref(params);
	char key[CHAN_ID_LEN];
	size_t kl = v1_key(r->conn, key);
	int rc = -ENOMEM;
	if (ptxt && mtxt && !idmap_find(&a->v1_reqs, key, kl) && idmap_insert(&a->v1_reqs, &v->node, key, kl) == 0) {
		struct bk_request req = { .model = v->model, .messages_json = mtxt, .messages_json_len = strlen(mtxt),
					  .params_json = ptxt, .params_len = strlen(ptxt) };
		v->call = bk_call_start(a->bk, &req, &v1_bk_events, v, &rc);
		if (!v->call)
			idmap_remove(&a->v1_reqs, &v->node);
	}
	free(ptxt);
	free(mtxt);
	if (!v->call) {
		char msg[160];
		switch (rc) {
		case -ENOENT:
			snprintf(msg, sizeof(msg), "The model `%s` does not exist or no backend serves it", v->model);
			api_error(a, r, 404, "model_not_found", msg, NULL);
			break;
		case -EAGAIN:
			api_error(a, r, 429, "overloaded", "every backend of this model is busy and its queue is full",
				 "Retry-After: 1");
			break;
		case -ENETDOWN:
			api_error(a, r, 503, "backend_unavailable", "no backend of this model is reachable now",
				 "Retry-After: 1");
			break;
		case -EINVAL:
			api_error(a, r, 400, "invalid_request", "messages or parameters are not valid JSON", NULL);
			break;
		default:
			api_error(a, r, 500, "internal", "the completion could not be started", NULL);
		}
		lim_message_failed(a->limits, v->user, v->key_id, stored_len);
		if (record)
			lim_session_failed(a->limits, v->user);
		cpl_timer_cancel(a->loop, &v->ka);
		free(v);
		json_decref(j);
		return;
	}
	if (v->record)
		v1_record_start(v, q, messages);
	json_decref(j);
	if (v->stream) {
		/* The head now: the client sees the stream open while the
		 * backend works. */
		if (!v1_part(v, NULL, 0, true)) {
			bk_call_cancel(v->call);
			v->call = NULL;
			v1_record_end(v, STORE_MSG_ERROR);
			v1_free(v);
			return;
		}
		cpl_timer_arm(a->loop, &v->ka,
			      v->last_sent_ns + (uint64_t)a->conf->sse_keepalive_s * 1000000000ull);
	}
}

void api_v1_route(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	if (q->path_len == 10 && memcmp(q->path, "/v1/models", 10) == 0) {
		if (q->hdr->method != CHAN_M_GET && q->hdr->method != CHAN_M_HEAD)
			return api_error(a, r, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD");
		return v1_models(a, r);
	}
	if (q->path_len == 20 && memcmp(q->path, "/v1/chat/completions", 20) == 0) {
		if (q->hdr->method != CHAN_M_POST)
			return api_error(a, r, 405, "method_not_allowed", "use POST", "Allow: POST");
		return v1_completions(a, r, q);
	}
	api_error(a, r, 404, "not_found", "no such resource", NULL);
}
