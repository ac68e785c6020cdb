/*
 * Conversations: sessions (create, list, get, patch, delete), messages
 * (post, cancel), export as JSON or Markdown, agents and models.
 */
#include "api/api_int.h"
#include "limits/limits.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/log.h"

static json_t *api_session_json(const struct store_session *ss)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:b}", "id", ss->id, "agent_id", ss->agent_id,
			 "model_id", ss->model_id, "title", ss->title, "created_at",
			 (json_int_t)ss->created_at, "updated_at", (json_int_t)ss->updated_at,
			 "archived", ss->archived != 0);
}

bool api_msg_ended(const struct store_message *m)
{
	return m->status >= STORE_MSG_COMPLETE;
}

/* A message as GET /api/chat/sessions/{id} and the JSON export show it;
 * usage is null until an assistant message ended. */
static json_t *api_message_json(const struct store_message *m)
{
	json_t *usage = json_null();
	if (m->role == STORE_ROLE_ASSISTANT && api_msg_ended(m))
		usage = json_pack("{s:I,s:I,s:I,s:f}", "prompt_tokens",
				  (json_int_t)m->usage.prompt_tokens, "completion_tokens",
				  (json_int_t)m->usage.completion_tokens, "total_tokens",
				  (json_int_t)m->usage.prompt_tokens +
					  (json_int_t)m->usage.completion_tokens,
				  "cost_usd", m->usage.cost_usd);
	return json_pack("{s:s,s:s,s:s%,s:s,s:o?,s:I}", "id", m->id,
			 "role", m->role == STORE_ROLE_USER ? "user" : "assistant",
			 "content", m->content ? m->content : "", m->content_len,
			 "status", store_msg_status_name(m->status), "usage", usage,
			 "created_at", (json_int_t)m->created_at);
}

/* The session with its messages; NULL on allocation or store failure. */
static json_t *api_session_full_json(struct api *a, struct chat_session *s, const struct store_session *ss)
{
	json_t *o = api_session_json(ss);
	json_t *msgs = json_array();
	if (!o || !msgs)
		goto fail;
	uint32_t n = store_message_count(a->st, ss->id);
	for (uint32_t i = 0; i < n; i++) {
		struct store_message m;
		if (chat_message_get(a->chat, s, i, &m) < 0)
			goto fail;
		if (json_array_append_new(msgs, api_message_json(&m)) < 0)
			goto fail;
	}
	if (json_object_set_new(o, "messages", msgs) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
fail:
	json_decref(o);
	json_decref(msgs);
	return NULL;
}
void api_session_created(void *arg, const struct chat_reply *r, const char *sid, const char *user,
			 int err)
{
	struct api *a = arg;
	struct store_session ss;
	if (err)
		lim_session_failed(a->limits, user);
	if (err || store_session_get(a->st, sid, &ss) < 0) {
		api_store_error(a, r, err, "the session could not be stored");
		return;
	}
	api_send_json(a, r, 201, CHAN_RESP_PLAIN, NULL, api_session_json(&ss), NULL);
}

void api_message_accepted(void *arg, const struct chat_reply *r, const char *sid,
				 const char *mid, int err)
{
	struct api *a = arg;
	if (err) {
		struct chat_session *s = chat_session_cached(a->chat, sid, strlen(sid));
		if (s)
			lim_message_failed(a->limits, s->user, s->ans.key_id, s->acct_len);
		api_store_error(a, r, err, "the message could not be stored");
		return;
	}
	if (r->kind == CHAN_REQ_WS) {
		json_t *o = api_ws_obj("response");
		if (o) {
			json_object_set_new(o, "request", json_string("send"));
			json_object_set_new(o, "session_id", json_string(sid));
			json_object_set_new(o, "message_id", json_string(mid));
		}
		api_ws_finish(r, o);
		api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
		return;
	}
	api_send_json(a, r, 202, CHAN_RESP_PLAIN, NULL, json_pack("{s:s}", "message_id", mid), NULL);
}

/* The agent a new session runs: agent_id when given (it must be configured);
 * without one, the issue-2 form {model_id} keeps working with the first
 * configured agent. */
static const struct conf_agent *api_pick_agent(struct api *a, const struct chat_reply *r, json_t *j)
{
	json_t *agent = json_object_get(j, "agent_id");
	json_t *model = json_object_get(j, "model_id");
	if (!agent && !json_is_string(model)) {
		api_error(a, r, 400, "invalid_request", "agent_id must be a string", NULL);
		return NULL;
	}
	if (agent && !json_is_string(agent)) {
		api_error(a, r, 400, "invalid_request", "agent_id must be a string", NULL);
		return NULL;
	}
	const struct conf_agent *ag = agent ? conf_agent_find(a->conf, json_string_value(agent))
					    : (a->conf->nagents ? &a->conf->agents[0] : NULL);
	if (!ag)
		api_error(a, r, 400, "unknown_agent", "no such agent", NULL);
	return ag;
}

void api_sessions_create(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	json_t *j = api_parse_body(a, r, q->body, q->body_len);
	if (!j)
		return;
	struct store_session ss;
	memset(&ss, 0, sizeof(ss));
	const struct conf_agent *ag = api_pick_agent(a, r, j);
	if (!ag)
		goto out;
	if (!api_opt_str(a, r, j, "model_id", ss.model_id, sizeof(ss.model_id), ag->model) ||
	    !api_opt_str(a, r, j, "agent_id", ss.agent_id, sizeof(ss.agent_id), ag->name) ||
	    !api_opt_str(a, r, j, "title", ss.title, sizeof(ss.title), ""))
		goto out;
	if (!bk_model_served(a->bk, ss.model_id)) {
		api_error(a, r, 400, "unknown_model", "no backend serves this model", NULL);
		goto out;
	}
	if (strlen(q->user) >= sizeof(ss.user)) {
		api_error(a, r, 500, "internal", "user name too long", NULL);
		goto out;
	}
	strcpy(ss.user, q->user);
	ss.owner_uid = q->uid;
	struct lim_who w = api_lim_who(q);
	struct lim_refusal why;
	if (!lim_session_begin(a->limits, &w, &why)) {
		api_limit_error(a, r, &why);
		goto out;
	}
	chat_new_id("s_", ss.id);
	ss.created_at = (int64_t)time(NULL);
	ss.updated_at = ss.created_at;
	if (chat_session_create(a->chat, &ss, r) < 0) {
		lim_session_failed(a->limits, q->user);
		api_error(a, r, 500, "internal", "the session could not be stored", NULL);
	}
out:
	json_decref(j);
}

void api_session_get(struct api *a, const struct chat_reply *r, const struct api_req *q,
			    const char *id, size_t len)
{
	struct chat_session *s = api_owned(a, r, q, id, len);
	struct store_session ss;
	if (!s)
		return;
	if (store_session_get(a->st, s->node.id, &ss) < 0) {
		api_not_found(a, r, "no such session");
		return;
	}
	json_t *o = api_session_full_json(a, s, &ss);
	if (!o) {
		api_error(a, r, 500, "internal", "the session could not be read", NULL);
		return;
	}
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
}

struct api_list_ctx {
	json_t *arr;
	bool failed;
};

static void api_list_each(void *arg, const struct store_session *ss)
{
	struct api_list_ctx *x = arg;
	if (json_array_append_new(x->arr, api_session_json(ss)) < 0)
		x->failed = true;
}

#define API_CURSOR_MAX 256

void api_sessions_list(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	char lim[16], cursor[API_CURSOR_MAX], qtxt[STORE_TITLE_MAX], arch[8];
	char next[API_CURSOR_MAX];
	struct store_list_query lq = { .user = q->user, .owner_uid = q->uid, .cursor = "", .limit = 20,
				       .archived = 0 };
	int n = api_query(q, "limit", lim, sizeof(lim));
	if (n == -2 || (n >= 0 && (n > 3 || strspn(lim, "0123456789") != (size_t)n ||
				   (lq.limit = (uint32_t)atoi(lim)) < 1 || lq.limit > 100))) {
		api_error(a, r, 400, "invalid_request", "limit must be an integer from 1 to 100", NULL);
		return;
	}
	n = api_query(q, "cursor", cursor, sizeof(cursor));
	if (n == -2) {
		api_error(a, r, 400, "invalid_request", "bad cursor", NULL);
		return;
	}
	if (n >= 0)
		lq.cursor = cursor;
	n = api_query(q, "q", qtxt, sizeof(qtxt));
	if (n == -2) {
		api_error(a, r, 400, "invalid_request", "q is malformed or too long", NULL);
		return;
	}
	if (n > 0)
		lq.q = qtxt;
	n = api_query(q, "archived", arch, sizeof(arch));
	if (n >= 0 && strcmp(arch, "true") == 0) {
		lq.archived = 1;
	} else if (n >= 0 && strcmp(arch, "any") == 0) {
		lq.archived = -1;
	} else if (n != -1 && !(n >= 0 && strcmp(arch, "false") == 0)) {
		api_error(a, r, 400, "invalid_request", "archived must be true, false or any", NULL);
		return;
	}
	struct api_list_ctx x = { .arr = json_array() };
	if (!x.arr)
		goto fail;
	next[0] = 0;
	int rc = a->st->ops->session_list(a->st, &lq, api_list_each, &x, next, sizeof(next));
	if (rc == -EINVAL) {
		json_decref(x.arr);
		api_error(a, r, 400, "invalid_request", "bad cursor", NULL);
		return;
	}
	if (rc < 0 || x.failed)
		goto fail;
	json_t *o = json_pack("{s:o,s:o}", "sessions", x.arr,
			      "next_cursor", next[0] ? json_string(next) : json_null());
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
	return;
fail:
	json_decref(x.arr);
	api_error(a, r, 500, "internal", "the sessions could not be listed", NULL);
}

/* A store write whose completion answers the client. */
struct api_wctx {
	struct api *a;
	struct chat_reply r;
	struct store_session ss;
};

/* The context for one such write, freed by its completion; NULL (the client
 * answered) when out of memory. */
static struct api_wctx *api_wctx_new(struct api *a, const struct chat_reply *r)
{
	struct api_wctx *x = calloc(1, sizeof(*x));
	if (!x) {
		api_error(a, r, 500, "internal", "out of memory", NULL);
		return NULL;
	}
	x->a = a;
	x->r = *r;
	return x;
}

static void api_patched(void *arg, int err)
{
	struct api_wctx *x = arg;
	if (err) {
		api_store_error(x->a, &x->r, err, "the session could not be stored");
	} else {
		chat_event(x->a->chat, x->ss.id, "patched", NULL);
		api_send_json(x->a, &x->r, 200, CHAN_RESP_PLAIN, NULL, api_session_json(&x->ss), NULL);
	}
	free(x);
}

void api_session_patch(struct api *a, const struct chat_reply *r, const struct api_req *q,
			      const char *id, size_t len)
{
	struct chat_session *s = api_owned(a, r, q, id, len);
	if (!s)
		return;
	json_t *j = api_parse_body(a, r, q->body, q->body_len);
	if (!j)
		return;
	struct api_wctx *x = api_wctx_new(a, r);
	if (!x)
		goto out;
	if (store_session_get(a->st, s->node.id, &x->ss) < 0) {
		api_not_found(a, r, "no such session");
		goto fail;
	}
	json_t *arch = json_object_get(j, "archived");
	if (arch && !json_is_boolean(arch)) {
		api_error(a, r, 400, "invalid_request", "archived must be a boolean", NULL);
		goto fail;
	}
	char title[STORE_TITLE_MAX];
	if (!api_opt_str(a, r, j, "title", title, sizeof(title), x->ss.title))
		goto fail;
	memcpy(x->ss.title, title, sizeof(title));
	if (arch)
		x->ss.archived = json_is_true(arch);
	x->ss.updated_at = (int64_t)time(NULL);
	if (a->st->ops->session_update(a->st, &x->ss, api_patched, x) < 0) {
		api_error(a, r, 500, "internal", "the session could not be stored", NULL);
		goto fail;
	}
	goto out;
fail:
	free(x);
out:
	json_decref(j);
}

static void api_deleted(void *arg, int err)
{
	struct api_wctx *x = arg;
	if (err) {
		api_store_error(x->a, &x->r, err, "the session could not be deleted");
	} else {
		struct co_resp resp = { .status = 204, .action = CHAN_RESP_PLAIN };
		api_send(x->a, &x->r, &resp);
		ev_publish(x->a->bus, &(struct ev){ .kind = EV_DELETED, .user = x->ss.user,
						    .session_id = x->ss.id });
	}
	free(x);
}

void api_session_delete(struct api *a, const struct chat_reply *r, const struct api_req *q,
			       const char *id, size_t len)
{
	struct chat_session *s = api_owned(a, r, q, id, len);
	if (!s)
		return;
	struct api_wctx *x = api_wctx_new(a, r);
	if (!x)
		return;
	memcpy(x->ss.id, s->node.id, CHAN_ID_LEN);
	memcpy(x->ss.user, s->user, sizeof(x->ss.user));
	if (chat_session_drop(a->chat, s) < 0) {
		free(x);
		api_error(a, r, 409, "busy", "a message of this session waits for its commit", NULL);
		return;
	}
	chat_event(a->chat, x->ss.id, "deleted", NULL);
	lim_session_deleting(a->limits, q->user, x->ss.id);
	if (a->st->ops->session_delete(a->st, x->ss.id, api_deleted, x) < 0) {
		free(x);
		api_error(a, r, 500, "internal", "the session could not be deleted", NULL);
	}
}

/* Appends text to a growing buffer; false when out of memory. */
struct api_buf {
	char *p;
	size_t len, cap;
};

static bool api_buf_put(struct api_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return false;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
	return true;
}

static bool api_buf_str(struct api_buf *b, const char *s)
{
	return api_buf_put(b, s, strlen(s));
}

static bool api_buf_time(struct api_buf *b, int64_t t)
{
	char txt[32];
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || strftime(txt, sizeof(txt), "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		return api_buf_str(b, "?");
	return api_buf_str(b, txt);
}

/* The transcript as Markdown: a header with the session's facts, then one
 * section per message. Content is copied verbatim (it is the user's text). */
static bool api_markdown(struct api *a, struct chat_session *s, const struct store_session *ss,
			 struct api_buf *b)
{
	bool ok = api_buf_str(b, "# ") && api_buf_str(b, ss->title[0] ? ss->title : "Untitled conversation") &&
		  api_buf_str(b, "\n\n- Session: `") && api_buf_str(b, ss->id) &&
		  api_buf_str(b, "`\n- Agent: ") && api_buf_str(b, ss->agent_id) &&
		  api_buf_str(b, "\n- Model: ") && api_buf_str(b, ss->model_id) &&
		  api_buf_str(b, "\n- Created: ") && api_buf_time(b, ss->created_at) &&
		  api_buf_str(b, ss->archived ? "\n- Archived: yes\n" : "\n");
	uint32_t n = store_message_count(a->st, ss->id);
	for (uint32_t i = 0; ok && i < n; i++) {
		struct store_message m;
		if (chat_message_get(a->chat, s, i, &m) < 0)
			return false;
		ok = api_buf_str(b, m.role == STORE_ROLE_USER ? "\n## User\n\n" : "\n## Assistant\n\n") &&
		     api_buf_put(b, m.content ? m.content : "", m.content_len) && api_buf_str(b, "\n");
		if (ok && m.role == STORE_ROLE_ASSISTANT && m.status != STORE_MSG_COMPLETE)
			ok = api_buf_str(b, "\n_(") && api_buf_str(b, store_msg_status_name(m.status)) &&
			     api_buf_str(b, ")_\n");
	}
	return ok;
}

void api_export(struct api *a, const struct chat_reply *r, const struct api_req *q,
		       const char *id, size_t len)
{
	char fmt[16];
	int n = api_query(q, "format", fmt, sizeof(fmt));
	bool md = n >= 0 && strcmp(fmt, "markdown") == 0;
	if (n != -1 && !md && !(n >= 0 && strcmp(fmt, "json") == 0)) {
		api_error(a, r, 400, "invalid_request", "format must be json or markdown", NULL);
		return;
	}
	struct chat_session *s = api_owned(a, r, q, id, len);
	struct store_session ss;
	if (!s)
		return;
	if (store_session_get(a->st, s->node.id, &ss) < 0) {
		api_not_found(a, r, "no such session");
		return;
	}
	if (!md) {
		json_t *o = api_session_full_json(a, s, &ss);
		if (!o) {
			api_error(a, r, 500, "internal", "the session could not be read", NULL);
			return;
		}
		api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
		return;
	}
	struct api_buf b = { 0 };
	if (!api_markdown(a, s, &ss, &b)) {
		free(b.p);
		api_error(a, r, 500, "internal", "the transcript could not be built", NULL);
		return;
	}
	struct co_resp resp = { .status = 200, .action = CHAN_RESP_PLAIN, .body = b.p,
				.body_len = b.len, .content_type = "text/markdown; charset=utf-8" };
	api_send(a, r, &resp);
	free(b.p);
}

void api_agents(struct api *a, const struct chat_reply *r)
{
	json_t *arr = json_array();
	if (!arr)
		return;
	for (uint32_t i = 0; i < a->conf->nagents; i++) {
		const struct conf_agent *ag = &a->conf->agents[i];
		if (json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "id", ag->name, "description",
							 ag->description, "model", ag->model)) < 0) {
			json_decref(arr);
			api_error(a, r, 500, "internal", "out of memory", NULL);
			return;
		}
	}
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, json_pack("{s:o}", "agents", arr), NULL);
}

/* The message logic shared by POST /api/chat/message and WS send. */
void api_post_message(struct api *a, const struct chat_reply *r, const struct api_req *q,
			     json_t *j)
{
	json_t *sid = json_object_get(j, "session_id");
	json_t *content = json_object_get(j, "content");
	if (!json_is_string(sid) || !json_is_string(content) || json_string_length(content) == 0) {
		api_error(a, r, 400, "invalid_request", "session_id and a non-empty content are required", NULL);
		return;
	}
	struct chat_session *s = api_owned(a, r, q, json_string_value(sid), json_string_length(sid));
	if (!s)
		return;
	if (s->ans.running || s->pending) {
		api_error(a, r, 409, "busy", "an answer is already running in this session", NULL);
		return;
	}
	/* Counted before anything is stored, so a refused message leaves
	 * nothing behind. */
	size_t len = json_string_length(content);
	struct lim_who w = api_lim_who(q);
	struct lim_refusal why;
	if (!lim_message_begin(a->limits, &w, len, &why)) {
		api_limit_error(a, r, &why);
		return;
	}
	s->acct_len = len;
	int rc = chat_message_post(a->chat, s, json_string_value(content), len, w.key_id, r);
	if (rc < 0)
		lim_message_failed(a->limits, s->user, w.key_id, len);
	if (rc == -EBUSY)
		api_error(a, r, 409, "busy", "an answer is already running in this session", NULL);
	else if (rc == -ENOENT)
		api_error(a, r, 400, "unknown_model", "no backend serves this session's model", NULL);
	else if (rc == -EAGAIN)
		api_error(a, r, 429, "overloaded", "every backend of this model is busy and its queue is full",
			  "Retry-After: 1");
	else if (rc < 0)
		api_error(a, r, 500, "internal", "the message could not be stored", NULL);
}

const char *api_answer_tokens(void *arg, const struct chat_session *s, uint32_t n, size_t bytes, char *why,
			      size_t whylen)
{
	struct api *a = arg;
	struct lim_refusal cut;
	if (!lim_answer_tokens(a->limits, s->user, s->ans.key_id, n, bytes, &cut))
		return NULL;
	api_limit_cut_message(&cut, why, whylen);
	return lim_code(cut.limit);
}

void api_answer_ended(void *arg, const struct chat_session *s)
{
	struct api *a = arg;
	/* Every token event was counted as it was flushed (seq of them); the
	 * backend's usage report, when it sent one, is the count that holds. */
	int64_t extra = (int64_t)s->ans.usage.completion_tokens - (int64_t)s->ans.seq;
	lim_answer_end(a->limits, s->user, s->ans.key_id, extra);
}

void api_message_http(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	json_t *j = api_parse_body(a, r, q->body, q->body_len);
	if (!j)
		return;
	api_post_message(a, r, q, j);
	json_decref(j);
}

void api_cancel(struct api *a, const struct chat_reply *r, const struct api_req *q,
		       const char *id, size_t len)
{
	struct chat_session *s = api_owned(a, r, q, id, len);
	if (!s)
		return;
	char mid[CHAN_ID_LEN];
	if (chat_cancel(a->chat, s, mid) < 0) {
		api_error(a, r, 409, "not_streaming", "no answer is running in this session", NULL);
		return;
	}
	json_t *o;
	if (r->kind == CHAN_REQ_WS) {
		o = api_ws_obj("response");
		if (o) {
			json_object_set_new(o, "request", json_string("cancel"));
			json_object_set_new(o, "session_id", json_string(s->node.id));
			json_object_set_new(o, "message_id", json_string(mid));
		}
		api_ws_finish(r, o);
	} else {
		o = json_pack("{s:b,s:s}", "cancelled", 1, "message_id", mid);
	}
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
}

struct api_models_ctx {
	struct api *a;
	json_t *arr;
	bool failed;
};

static void api_models_each(void *arg, const char *model, const char *backend)
{
	struct api_models_ctx *x = arg;
	struct conf_model t;
	conf_model_terms(x->a->conf, model, &t);
	json_t *m = json_pack("{s:s,s:s,s:I,s:f,s:f}", "id", model, "backend", backend, "context_window",
			      (json_int_t)t.context_window, "cost_in_per_mtok", t.cost_in_per_mtok,
			      "cost_out_per_mtok", t.cost_out_per_mtok);
	if (!m || json_array_append_new(x->arr, m) < 0)
		x->failed = true;
}

void api_models(struct api *a, const struct chat_reply *r)
{
	struct api_models_ctx x = { .a = a, .arr = json_array() };
	if (!x.arr)
		return;
	bk_models_foreach(a->bk, api_models_each, &x);
	if (x.failed) {
		json_decref(x.arr);
		api_error(a, r, 500, "internal", "out of memory", NULL);
		return;
	}
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, json_pack("{s:o}", "models", x.arr), NULL);
}
