#include "api/api.h"
#include "api/api_auth.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "sluice/log.h"

/* The parts of a REQUEST record the handlers use; pointers into the record. */
struct api_req {
	const struct chan_request *hdr;
	const char *path;
	size_t path_len;
	const char *body;
	size_t body_len;
	const char *last_event_id;
	size_t lei_len;
	const char *query; /* after '?', undecoded; NULL when absent */
	size_t query_len;
	/* The authenticated caller ("" until auth says otherwise); every
	 * conversation handler acts for this user only. */
	const char *user;
	uint64_t uid; /* which user of that name (store_user.uid); 0 without auth */
	uint8_t role; /* enum store_user_role */
	/* The whole identity (NULL without auth): SSE streams are registered
	 * under it so that its revocation or expiry ends them. */
	const struct auth_ident *id;
};

static bool api_send(struct api *a, const struct chat_reply *r, const struct co_resp *resp)
{
	if (co_response(a->out, r->conn, r->req_id, resp))
		return true;
	a->stats.reply_drops++;
	LOG_WARN("response to worker %u dropped: channel full", r->conn.worker);
	return false;
}

/* Serialises obj (taking the reference) and sends it as the response body. */
static void api_send_json(struct api *a, const struct chat_reply *r, uint16_t status, uint8_t action,
			  const char *sid, json_t *obj, const char *header)
{
	char *txt = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!txt) {
		LOG_ERROR("out of memory building a response");
		return;
	}
	struct co_resp resp = {
		.status = status, .action = action, .session_id = sid,
		.body = txt, .body_len = strlen(txt), .header = header,
	};
	api_send(a, r, &resp);
	free(txt);
}

/* A WebSocket message object starting with "type" and ending with the
 * client's "id" when it sent one. */
static json_t *api_ws_obj(const char *type)
{
	json_t *o = json_object();
	if (o)
		json_object_set_new(o, "type", json_string(type));
	return o;
}

static void api_ws_finish(const struct chat_reply *r, json_t *o)
{
	if (!o || !r->echo_len)
		return;
	json_t *id = json_loadb(r->echo, r->echo_len, JSON_DECODE_ANY, NULL);
	if (id)
		json_object_set_new(o, "id", id);
}

static void api_error(struct api *a, const struct chat_reply *r, uint16_t status, const char *code,
		      const char *msg, const char *header)
{
	json_t *err = json_pack("{s:s,s:s}", "code", code, "message", msg);
	json_t *o;
	if (r->kind == CHAN_REQ_WS) {
		o = api_ws_obj("error");
		if (o && err)
			json_object_set(o, "error", err);
		api_ws_finish(r, o);
	} else {
		o = err ? json_pack("{s:O}", "error", err) : NULL;
	}
	json_decref(err);
	api_send_json(a, r, status, CHAN_RESP_PLAIN, NULL, o, header);
}

/* A store write that failed. A full map (-ENOSPC) is 503 store_full: the
 * request was fine and succeeds once an operator grows store_map_mb. */
static void api_store_error(struct api *a, const struct chat_reply *r, int err, const char *msg)
{
	if (err == -ENOSPC)
		api_error(a, r, 503, "store_full", "the store is full; retry later", "Retry-After: 60");
	else
		api_error(a, r, 500, "internal", msg, NULL);
}

static void api_not_found(struct api *a, const struct chat_reply *r, const char *what)
{
	api_error(a, r, 404, "not_found", what, NULL);
}

static json_t *api_session_json(const struct store_session *ss)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:b}", "id", ss->id, "agent_id", ss->agent_id,
			 "model_id", ss->model_id, "title", ss->title, "created_at",
			 (json_int_t)ss->created_at, "updated_at", (json_int_t)ss->updated_at,
			 "archived", ss->archived != 0);
}

static bool api_msg_ended(const struct store_message *m)
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

/* ---- chat hooks: store writes completed -------------------------------- */

static void api_session_created(void *arg, const struct chat_reply *r, const char *sid, int err)
{
	struct api *a = arg;
	struct store_session ss;
	if (err || store_session_get(a->st, sid, &ss) < 0) {
		api_store_error(a, r, err, "the session could not be stored");
		return;
	}
	api_send_json(a, r, 201, CHAN_RESP_PLAIN, NULL, api_session_json(&ss), NULL);
}

static void api_message_accepted(void *arg, const struct chat_reply *r, const char *sid,
				 const char *mid, int err)
{
	struct api *a = arg;
	if (err) {
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

static void api_on_record(void *arg, uint16_t type, const void *payload, uint32_t len);

int api_init(struct api *a, const struct api_deps *d, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	a->conf = d->conf;
	a->st = d->st;
	a->out = d->out;
	a->chat = d->chat;
	a->auth = d->auth;
	a->cp_epoch = cpl_epoch(d->loop);
	static const uint16_t types[] = { CHAN_REC_REQUEST, CHAN_REC_SUBSCRIBE, CHAN_REC_UNSUBSCRIBE,
					  CHAN_REC_CONN_CLOSED };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(types); i++) {
		if (cpl_on_record(d->loop, types[i], api_on_record, a) < 0) {
			snprintf(err, errlen, "api: record type %u has another handler", types[i]);
			return -1;
		}
	}
	struct chat_hooks h = { .session_created = api_session_created,
				.message_accepted = api_message_accepted, .arg = a };
	chat_set_hooks(a->chat, &h);
	return 0;
}

/* ---- handlers ------------------------------------------------------------ */

/* Parses a JSON body into an object: not JSON at all is invalid_json, JSON
 * of another shape (an array, a number) is invalid_request. */
static json_t *api_parse_body(struct api *a, const struct chat_reply *r, const char *body, size_t len)
{
	json_t *j = body ? json_loadb(body, len, 0, NULL) : NULL;
	if (!j) {
		api_error(a, r, 400, "invalid_json", "the body is not valid JSON", NULL);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		api_error(a, r, 400, "invalid_request", "the body must be a JSON object", NULL);
		return NULL;
	}
	return j;
}

/* Copies an optional string member into dst; false (after answering) when
 * it has the wrong type or does not fit. */
static bool api_opt_str(struct api *a, const struct chat_reply *r, json_t *o, const char *key,
			char *dst, size_t cap, const char *dflt)
{
	json_t *v = json_object_get(o, key);
	const char *s = dflt;
	size_t len = strlen(dflt);
	if (v) {
		if (!json_is_string(v))
			goto bad;
		s = json_string_value(v);
		len = json_string_length(v);
	}
	if (len >= cap || memchr(s, 0, len))
		goto bad;
	memcpy(dst, s, len);
	dst[len] = 0;
	return true;
bad:
	api_error(a, r, 400, "invalid_request", key, NULL);
	return false;
}

/* The session id names, when the caller owns it; else answers 404 exactly as
 * for a missing session (another user's conversation is not disclosed). */
static struct chat_session *api_owned(struct api *a, const struct chat_reply *r,
				      const struct api_req *q, const char *id, size_t len)
{
	struct chat_session *s = chat_session_get(a->chat, id, len);
	if (!s || strcmp(s->user, q->user) != 0 || s->owner_uid != q->uid) {
		api_not_found(a, r, "no such session");
		return NULL;
	}
	return s;
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

static void api_sessions_create(struct api *a, const struct chat_reply *r, const struct api_req *q)
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
	const struct conf_backend *be = conf_backend_for_model(a->conf, ss.model_id);
	if (!be) {
		api_error(a, r, 400, "unknown_model", "no backend serves this model", NULL);
		goto out;
	}
	if (strlen(q->user) >= sizeof(ss.user)) {
		api_error(a, r, 500, "internal", "user name too long", NULL);
		goto out;
	}
	strcpy(ss.user, q->user);
	ss.owner_uid = q->uid;
	chat_new_id("s_", ss.id);
	ss.created_at = (int64_t)time(NULL);
	ss.updated_at = ss.created_at;
	if (chat_session_create(a->chat, be, &ss, r) < 0)
		api_error(a, r, 500, "internal", "the session could not be stored", NULL);
out:
	json_decref(j);
}

static void api_session_get(struct api *a, const struct chat_reply *r, const struct api_req *q,
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

/*
 * Finds `key` in an application/x-www-form-urlencoded query and decodes its
 * value (%XX, '+') into out, NUL-terminated. Returns the decoded length, -1
 * when the key is absent, -2 when the value is malformed, holds a NUL or does
 * not fit.
 */
static int api_query(const struct api_req *q, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	const char *p = q->query, *end = q->query ? q->query + q->query_len : NULL;
	while (p && p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *pe = amp ? amp : end;
		if ((size_t)(pe - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t n = 0;
			for (const char *v = p + kl + 1; v < pe; v++) {
				int ch = (unsigned char)*v;
				if (ch == '+') {
					ch = ' ';
				} else if (ch == '%') {
					unsigned hv = 0;
					if (pe - v < 3 || sscanf(v + 1, "%2x", &hv) != 1 ||
					    !isxdigit((unsigned char)v[1]) || !isxdigit((unsigned char)v[2]))
						return -2;
					ch = (int)hv;
					v += 2;
				}
				if (ch == 0 || n + 1 >= cap)
					return -2;
				out[n++] = (char)ch;
			}
			out[n] = 0;
			return (int)n;
		}
		p = amp ? amp + 1 : end;
	}
	return -1;
}

/* Parses a decimal number in [lo, hi] (a fraction allowed); false otherwise. */
static bool api_parse_num(const char *txt, double lo, double hi, double *out)
{
	char *e;
	errno = 0;
	double v = strtod(txt, &e);
	if (errno || e == txt || *e || !isfinite(v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
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

static void api_sessions_list(struct api *a, const struct chat_reply *r, const struct api_req *q)
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

static void api_session_patch(struct api *a, const struct chat_reply *r, const struct api_req *q,
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
	}
	free(x);
}

static void api_session_delete(struct api *a, const struct chat_reply *r, const struct api_req *q,
			       const char *id, size_t len)
{
	struct chat_session *s = api_owned(a, r, q, id, len);
	if (!s)
		return;
	struct api_wctx *x = api_wctx_new(a, r);
	if (!x)
		return;
	memcpy(x->ss.id, s->node.id, CHAN_ID_LEN);
	if (chat_session_drop(a->chat, s) < 0) {
		free(x);
		api_error(a, r, 409, "busy", "a message of this session waits for its commit", NULL);
		return;
	}
	chat_event(a->chat, x->ss.id, "deleted", NULL);
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

static void api_export(struct api *a, const struct chat_reply *r, const struct api_req *q,
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

static void api_agents(struct api *a, const struct chat_reply *r)
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
static void api_post_message(struct api *a, const struct chat_reply *r, const struct api_req *q,
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
	int rc = chat_message_post(a->chat, s, json_string_value(content), json_string_length(content), r);
	if (rc == -EBUSY)
		api_error(a, r, 409, "busy", "an answer is already running in this session", NULL);
	else if (rc < 0)
		api_error(a, r, 500, "internal", "the message could not be stored", NULL);
}

static void api_message_http(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	json_t *j = api_parse_body(a, r, q->body, q->body_len);
	if (!j)
		return;
	api_post_message(a, r, q, j);
	json_decref(j);
}

static void api_cancel(struct api *a, const struct chat_reply *r, const struct api_req *q,
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

/* Parses "<mid>:<seq>", "<mid>:u" or "<mid>:d"; anything else means no
 * resume point (the client then gets the running answer from its start). */
static enum chat_resume api_parse_resume(const char *v, size_t len, char mid[CHAN_ID_LEN], uint32_t *seq)
{
	const char *colon = v ? memrchr(v, ':', len) : NULL;
	if (!colon)
		return CHAT_RESUME_NONE;
	size_t ml = (size_t)(colon - v);
	size_t tl = len - ml - 1;
	const char *t = colon + 1;
	if (ml == 0 || ml >= CHAN_ID_LEN || memchr(v, 0, ml) || tl == 0)
		return CHAT_RESUME_NONE;
	memset(mid, 0, CHAN_ID_LEN);
	memcpy(mid, v, ml);
	if (tl == 1 && t[0] == 'u')
		return CHAT_RESUME_USAGE;
	if (tl == 1 && t[0] == 'd')
		return CHAT_RESUME_DONE;
	uint64_t n = 0;
	for (size_t i = 0; i < tl; i++) {
		if (t[i] < '0' || t[i] > '9')
			return CHAT_RESUME_NONE;
		n = n * 10 + (uint64_t)(t[i] - '0');
		if (n > UINT32_MAX)
			return CHAT_RESUME_NONE;
	}
	*seq = (uint32_t)n;
	return CHAT_RESUME_SEQ;
}

/* An SSE stream lives as long as the credential that opened it: it is
 * registered with auth like a WebSocket, so a logout, the user's deletion or
 * the session's expiry KICKs it. False (answered 503) when it cannot be
 * registered: an untracked stream would outlive its credential. */
static bool api_track_sse(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	if (r->kind != CHAN_REQ_HTTP)
		return true;
	if (auth_conn_add(a->auth, r->conn, q->id) == 0)
		return true;
	api_error(a, r, 503, "overloaded", "out of memory", "Retry-After: 1");
	return false;
}

/* Sends the response that subscribes the conn to resp->session_id: the SSE
 * stream head, or for a WebSocket the "response" message o (taken; NULL when
 * it could not be built). False when nothing was sent. */
static bool api_send_subscribe(struct api *a, const struct chat_reply *r, struct co_resp *resp, json_t *o)
{
	char *txt = NULL;
	bool ok = false;

	resp->status = 200;
	resp->action = CHAN_RESP_SSE_SUBSCRIBE;
	if (r->kind == CHAN_REQ_WS) {
		api_ws_finish(r, o);
		txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (!txt) {
			LOG_ERROR("out of memory building a response");
			goto out;
		}
		resp->action = CHAN_RESP_WS_SUBSCRIBE;
		resp->body = txt;
		resp->body_len = strlen(txt);
	}
	ok = api_send(a, r, resp);
out:
	free(txt);
	json_decref(o);
	return ok;
}

/* SSE (HTTP) or WebSocket subscription: the subscribe response, then the
 * backlog, then live records; all on the conn's worker ring, so in order. */
static void api_subscribe(struct api *a, const struct chat_reply *r, const struct api_req *q,
			  const char *id, size_t len, const char *resume, size_t resume_len)
{
	struct chat_session *s = api_owned(a, r, q, id, len);
	if (!s || !api_track_sse(a, r, q))
		return;
	char mid[CHAN_ID_LEN] = { 0 };
	uint32_t seq = 0;
	enum chat_resume kind = api_parse_resume(resume, resume_len, mid, &seq);
	if (kind != CHAT_RESUME_NONE) {
		struct store_message m;
		int64_t idx = store_message_find(a->st, s->node.id, mid);
		if (idx < 0 || chat_message_get(a->chat, s, (uint32_t)idx, &m) < 0)
			kind = CHAT_RESUME_NONE;
		else if (kind != CHAT_RESUME_SEQ)
			seq = m.ntokens;
	}
	json_t *o = NULL;
	if (r->kind == CHAN_REQ_WS)
		o = json_pack("{s:s,s:s,s:s}", "type", "response", "request", "subscribe", "session_id",
			      s->node.id);
	struct co_resp resp = { .session_id = s->node.id,
				.resume_message_id = kind != CHAT_RESUME_NONE ? mid : NULL,
				.resume_seq = seq };
	if (api_send_subscribe(a, r, &resp, o) && !chat_subscribe(a->chat, s, r->conn, kind, mid, seq))
		LOG_WARN("backlog for a subscriber on worker %u incomplete: channel full", r->conn.worker);
}

/* The message a replay plays: message_id when given, else the last ended
 * assistant message. Answers the client and returns false when there is none. */
static bool api_replay_pick(struct api *a, const struct chat_reply *r, struct chat_session *s,
			    const char *mid, struct store_message *m)
{
	const char *sid = s->node.id;
	if (mid) {
		int64_t idx = store_message_find(a->st, sid, mid);
		if (idx < 0 || chat_message_get(a->chat, s, (uint32_t)idx, m) < 0 ||
		    m->role != STORE_ROLE_ASSISTANT) {
			api_not_found(a, r, "no such assistant message");
			return false;
		}
		if (!api_msg_ended(m)) {
			api_error(a, r, 409, "not_ended", "the answer is still running", NULL);
			return false;
		}
		return true;
	}
	for (uint32_t i = store_message_count(a->st, sid); i-- > 0;) {
		if (chat_message_get(a->chat, s, i, m) < 0)
			break;
		if (m->role == STORE_ROLE_ASSISTANT && api_msg_ended(m))
			return true;
	}
	api_not_found(a, r, "no recorded answer to replay");
	return false;
}

/* Replay over SSE or WebSocket: the response subscribes the conn to the
 * session (so its filter starts afresh), then the replay runs on the timer
 * heap as unicast records to that conn. */
static void api_replay(struct api *a, const struct chat_reply *r, const struct api_req *q,
		       const char *id, size_t len, const char *mid, double speed)
{
	struct chat_session *s = api_owned(a, r, q, id, len);
	struct store_message m;
	if (!s || !api_replay_pick(a, r, s, mid, &m) || !api_track_sse(a, r, q))
		return;
	json_t *o = NULL;
	if (r->kind == CHAN_REQ_WS)
		o = json_pack("{s:s,s:s,s:s,s:s,s:f}", "type", "response", "request", "replay",
			      "session_id", s->node.id, "message_id", m.id, "speed", speed);
	struct co_resp resp = { .session_id = s->node.id };
	if (api_send_subscribe(a, r, &resp, o) && chat_replay_start(a->chat, s, r->conn, &m, speed) < 0)
		LOG_WARN("replay of %s to worker %u not started", m.id, r->conn.worker);
}

/* HEAD on an SSE route: GET's status and content type without the stream
 * (a HEAD answer has no body and an SSE stream is all body), so nothing is
 * subscribed. */
static void api_sse_head(struct api *a, const struct chat_reply *r)
{
	struct co_resp resp = { .status = 200, .action = CHAN_RESP_PLAIN,
				.content_type = "text/event-stream" };
	if (!api_send(a, r, &resp))
		LOG_WARN("HEAD answer to worker %u dropped: channel full", r->conn.worker);
}

static void api_replay_http(struct api *a, const struct chat_reply *r, const struct api_req *q,
			    const char *id, size_t len, bool head)
{
	char sp[32], mid[CHAN_ID_LEN];
	double speed = 1;
	int n = api_query(q, "speed", sp, sizeof(sp));
	if (n == -2 || (n >= 0 && !api_parse_num(sp, 0.1, 100, &speed))) {
		api_error(a, r, 400, "invalid_request", "speed must be a number from 0.1 to 100", NULL);
		return;
	}
	n = api_query(q, "message_id", mid, sizeof(mid));
	if (n == -2) {
		api_error(a, r, 400, "invalid_request", "bad message_id", NULL);
		return;
	}
	if (head) {
		struct chat_session *s = api_owned(a, r, q, id, len);
		struct store_message m;
		if (s && api_replay_pick(a, r, s, n >= 0 ? mid : NULL, &m))
			api_sse_head(a, r);
		return;
	}
	api_replay(a, r, q, id, len, n >= 0 ? mid : NULL, speed);
}

static void api_models(struct api *a, const struct chat_reply *r)
{
	json_t *arr = json_array();
	if (!arr)
		return;
	for (uint32_t i = 0; i < a->conf->nbackends; i++) {
		const struct conf_backend *be = &a->conf->backends[i];
		for (uint32_t k = 0; k < be->nmodels; k++) {
			json_t *m = json_pack("{s:s,s:s,s:I,s:f,s:f}", "id", be->models[k],
					      "backend", be->name, "context_window",
					      (json_int_t)be->context_window, "cost_in_per_mtok",
					      be->cost_in_per_mtok, "cost_out_per_mtok", be->cost_out_per_mtok);
			if (!m || json_array_append_new(arr, m) < 0) {
				json_decref(arr);
				api_error(a, r, 500, "internal", "out of memory", NULL);
				return;
			}
		}
	}
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, json_pack("{s:o}", "models", arr), NULL);
}

static bool api_path_is(const struct api_req *q, const char *p)
{
	size_t n = strlen(p);
	return q->path_len == n && memcmp(q->path, p, n) == 0;
}

/* When the path is prefix + one id segment (+ suffix), points *id at the segment. */
static bool api_path_id(const struct api_req *q, const char *prefix, const char *suffix,
			const char **id, size_t *idlen)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	if (q->path_len <= pl + sl || memcmp(q->path, prefix, pl) != 0 ||
	    memcmp(q->path + q->path_len - sl, suffix, sl) != 0)
		return false;
	*id = q->path + pl;
	*idlen = q->path_len - pl - sl;
	return memchr(*id, '/', *idlen) == NULL;
}

static void api_method_not_allowed(struct api *a, const struct chat_reply *r, const char *allow)
{
	char hdr[64];
	int n = snprintf(hdr, sizeof(hdr), "Allow: %s", allow);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return;
	api_error(a, r, 405, "method_not_allowed", "method not allowed on this path", hdr);
}

static void api_http(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	/* HEAD is answered like GET: the dataplane drops the body and keeps
	 * its length. */
	bool head = q->hdr->method == CHAN_M_HEAD;
	uint8_t m = head ? CHAN_M_GET : q->hdr->method;
	const char *id;
	size_t idlen;
	if (api_path_is(q, "/api/models")) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET, HEAD");
		return api_models(a, r);
	}
	if (api_path_is(q, "/api/agents")) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET, HEAD");
		return api_agents(a, r);
	}
	if (api_path_is(q, "/api/chat/sessions")) {
		if (m == CHAN_M_GET)
			return api_sessions_list(a, r, q);
		if (m != CHAN_M_POST)
			return api_method_not_allowed(a, r, "GET, HEAD, POST");
		return api_sessions_create(a, r, q);
	}
	if (api_path_is(q, "/api/chat/message")) {
		if (m != CHAN_M_POST)
			return api_method_not_allowed(a, r, "POST");
		return api_message_http(a, r, q);
	}
	if (api_path_id(q, "/api/chat/sessions/", "/cancel", &id, &idlen)) {
		if (m != CHAN_M_POST)
			return api_method_not_allowed(a, r, "POST");
		return api_cancel(a, r, q, id, idlen);
	}
	if (api_path_id(q, "/api/chat/sessions/", "/export", &id, &idlen)) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET, HEAD");
		return api_export(a, r, q, id, idlen);
	}
	if (api_path_id(q, "/api/chat/sessions/", "", &id, &idlen)) {
		if (m == CHAN_M_GET)
			return api_session_get(a, r, q, id, idlen);
		if (m == CHAN_M_PATCH)
			return api_session_patch(a, r, q, id, idlen);
		if (m == CHAN_M_DELETE)
			return api_session_delete(a, r, q, id, idlen);
		return api_method_not_allowed(a, r, "GET, HEAD, PATCH, DELETE");
	}
	if (api_path_id(q, "/api/chat/stream/", "", &id, &idlen)) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET, HEAD");
		if (head) {
			if (api_owned(a, r, q, id, idlen))
				api_sse_head(a, r);
			return;
		}
		return api_subscribe(a, r, q, id, idlen, q->last_event_id, q->lei_len);
	}
	if (api_path_id(q, "/api/replay/session/", "", &id, &idlen)) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET, HEAD");
		return api_replay_http(a, r, q, id, idlen, head);
	}
	api_not_found(a, r, "no such resource");
}

/* Keeps the client's "id" (as JSON text) for the reply; false when too long. */
static bool api_ws_echo(struct chat_reply *r, json_t *j)
{
	json_t *id = json_object_get(j, "id");
	if (!id)
		return true;
	char *txt = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!txt)
		return false;
	size_t n = strlen(txt);
	bool ok = n <= sizeof(r->echo);
	if (ok) {
		memcpy(r->echo, txt, n);
		r->echo_len = (uint32_t)n;
	}
	free(txt);
	return ok;
}

static void api_ws_replay(struct api *a, const struct chat_reply *r, const struct api_req *q,
			  json_t *j, json_t *sid)
{
	json_t *mid = json_object_get(j, "message_id");
	json_t *sp = json_object_get(j, "speed");
	double speed = sp ? json_number_value(sp) : 1;
	if ((mid && !json_is_string(mid)) || (sp && !json_is_number(sp)) || !(speed >= 0.1 && speed <= 100)) {
		api_error(a, r, 400, "invalid_request",
			  "message_id must be a string and speed a number from 0.1 to 100", NULL);
		return;
	}
	char m[CHAN_ID_LEN] = { 0 };
	if (mid && !chan_id_set(m, json_string_value(mid), json_string_length(mid))) {
		api_not_found(a, r, "no such assistant message");
		return;
	}
	api_replay(a, r, q, json_string_value(sid), json_string_length(sid), mid ? m : NULL, speed);
}

static void api_ws_pause(struct api *a, const struct chat_reply *r, bool pause)
{
	if (chat_replay_pause(a->chat, r->conn, pause) < 0) {
		api_error(a, r, 409, "no_replay", "no replay is running on this connection", NULL);
		return;
	}
	json_t *o = api_ws_obj("response");
	if (o) {
		json_object_set_new(o, "request", json_string(pause ? "pause" : "resume"));
		json_object_set_new(o, "paused", json_boolean(pause));
	}
	api_ws_finish(r, o);
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
}

/* {"type":"state","subscriptions":[sid…],"replay":{…}|null} for this conn. */
static void api_ws_state(struct api *a, const struct chat_reply *r)
{
	struct chat_conn *cc = chat_conn_get(a->chat, r->conn, false);
	json_t *o = api_ws_obj("state");
	json_t *subs = json_array();
	json_t *rp = json_null();
	if (cc && cc->sub_sid[0])
		json_array_append_new(subs, json_string(cc->sub_sid));
	if (cc && cc->rp.active)
		rp = json_pack("{s:s,s:s,s:f,s:b,s:i,s:i}", "session_id", cc->rp.sid, "message_id",
			       cc->rp.mid, "speed", cc->rp.speed, "paused", cc->rp.paused_ns != 0,
			       "sent", (int)(cc->rp.next - 1), "total", (int)cc->rp.ntokens);
	if (o) {
		json_object_set_new(o, "subscriptions", subs ? subs : json_null());
		json_object_set_new(o, "replay", rp ? rp : json_null());
	} else {
		json_decref(subs);
		json_decref(rp);
	}
	api_ws_finish(r, o);
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
}

static void api_ws(struct api *a, struct chat_reply *r, const struct api_req *q)
{
	json_t *j = q->body ? json_loadb(q->body, q->body_len, 0, NULL) : NULL;
	if (!j || !json_is_object(j)) {
		json_decref(j);
		api_error(a, r, 400, "invalid_json", "the message is not a JSON object", NULL);
		return;
	}
	if (!api_ws_echo(r, j)) {
		api_error(a, r, 400, "invalid_request", "id is too long", NULL);
		goto out;
	}
	const char *type = json_string_value(json_object_get(j, "type"));
	json_t *sid = json_object_get(j, "session_id");
	if (!type) {
		api_error(a, r, 400, "invalid_request", "type must be a string", NULL);
	} else if (strcmp(type, "ping") == 0) {
		json_t *o = api_ws_obj("pong");
		api_ws_finish(r, o);
		api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
	} else if (strcmp(type, "send") == 0) {
		api_post_message(a, r, q, j);
	} else if (strcmp(type, "pause") == 0 || strcmp(type, "resume") == 0) {
		api_ws_pause(a, r, strcmp(type, "pause") == 0);
	} else if (strcmp(type, "get_state") == 0) {
		api_ws_state(a, r);
	} else if (strcmp(type, "subscribe") != 0 && strcmp(type, "cancel") != 0 &&
		   strcmp(type, "replay") != 0) {
		api_error(a, r, 400, "unknown_type", "unknown message type", NULL);
	} else if (!json_is_string(sid)) {
		api_error(a, r, 400, "invalid_request", "session_id must be a string", NULL);
	} else if (strcmp(type, "cancel") == 0) {
		api_cancel(a, r, q, json_string_value(sid), json_string_length(sid));
	} else if (strcmp(type, "replay") == 0) {
		api_ws_replay(a, r, q, j, sid);
	} else {
		json_t *rf = json_object_get(j, "resume_from");
		if (rf && !json_is_string(rf))
			api_error(a, r, 400, "invalid_request", "resume_from must be a string", NULL);
		else
			api_subscribe(a, r, q, json_string_value(sid), json_string_length(sid),
				      rf ? json_string_value(rf) : NULL, rf ? json_string_length(rf) : 0);
	}
out:
	json_decref(j);
}

static void api_request(struct api *a, const void *payload, uint32_t len)
{
	struct api_req q = { .hdr = payload, .user = "" };
	const uint8_t *p = (const uint8_t *)payload + sizeof(struct chan_request);
	const uint8_t *end = (const uint8_t *)payload + len;
	const struct chan_field *f;
	bool bad = false;
	while ((f = chan_field_next(&p, end, &bad)) != NULL) {
		const char *d = (const char *)f->data;
		switch (f->tag) {
		case CHAN_F_PATH:
			q.path = d;
			q.path_len = f->len;
			break;
		case CHAN_F_BODY:
			q.body = d;
			q.body_len = f->len;
			break;
		case CHAN_F_LAST_EVENT_ID:
			q.last_event_id = d;
			q.lei_len = f->len;
			break;
		case CHAN_F_QUERY:
			q.query = d;
			q.query_len = f->len;
			break;
		default:
			break;
		}
	}
	if (bad) {
		a->stats.invalid_records++;
		return;
	}
	struct chat_reply r = { .conn = q.hdr->conn, .req_id = q.hdr->req_id, .kind = q.hdr->kind };
	/* Who is asking (api_auth.c); q.user points into it. */
	struct auth_ident who;
	memset(&who, 0, sizeof(who));
	a->stats.requests++;
	switch (q.hdr->kind) {
	case CHAN_REQ_HTTP:
		if (!q.path) {
			api_error(a, &r, 400, "bad_request", "no path", NULL);
			return;
		}
		if (api_auth_http(a, &r, payload, len, &who))
			break;
		q.user = who.user;
		q.uid = who.uid;
		q.role = who.role;
		q.id = &who;
		api_http(a, &r, &q);
		break;
	case CHAN_REQ_WS:
		if (!api_auth_ws_msg(a, &r, payload, len, &who))
			break;
		q.user = who.user;
		q.uid = who.uid;
		q.role = who.role;
		q.id = &who;
		api_ws(a, &r, &q);
		break;
	case CHAN_REQ_WS_OPEN:
		api_auth_ws_open(a, &r, payload, len);
		return;
	default:
		api_error(a, &r, 400, "bad_request", "unknown request kind", NULL);
	}
	/* It holds the session's CSRF token. */
	sodium_memzero(&who, sizeof(who));
}

/* The records the dataplane sends control about clients (the loop has
 * validated them). */
static void api_on_record(void *arg, uint16_t type, const void *payload, uint32_t len)
{
	struct api *a = arg;
	switch (type) {
	case CHAN_REC_REQUEST:
		if (((const struct chan_request *)payload)->cp_epoch != a->cp_epoch) {
			a->stats.stale_requests++;
			return;
		}
		api_request(a, payload, len);
		return;
	case CHAN_REC_SUBSCRIBE:
	case CHAN_REC_UNSUBSCRIBE: {
		const struct chan_sub *sub = payload;
		struct chat_session *s = chat_session_get(a->chat, sub->session_id,
							  strnlen(sub->session_id, CHAN_ID_LEN));
		if (!s)
			return;
		if (type == CHAN_REC_SUBSCRIBE) {
			if (!api_auth_resubscribe(a, s, sub->conn))
				return;
			chat_conn_subscribed(a->chat, s, sub);
		} else {
			chat_sub_del(s, sub->conn.worker);
			chat_conn_unsubscribed(a->chat, sub->conn, s->node.id);
		}
		return;
	}
	case CHAN_REC_CONN_CLOSED:
		/* Subscriptions are counted per worker and released by UNSUBSCRIBE;
		 * the conn's entry (and replay) goes here. */
		chat_conn_closed(a->chat, ((const struct chan_conn_closed *)payload)->conn);
		api_auth_conn_closed(a, ((const struct chan_conn_closed *)payload)->conn);
		return;
	default:
		a->stats.invalid_records++;
	}
}
