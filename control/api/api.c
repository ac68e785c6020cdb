#include "api/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

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

static void api_not_found(struct api *a, const struct chat_reply *r, const char *what)
{
	api_error(a, r, 404, "not_found", what, NULL);
}

static const char *api_status_name(enum store_msg_status st)
{
	static const char *const names[] = { "queued", "streaming", "complete",
					     "cancelled", "error", "interrupted" };
	return (unsigned)st < SLUICE_ARRAY_LEN(names) ? names[st] : "error";
}

static json_t *api_session_json(const struct store_session *ss)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:I}", "id", ss->id, "agent_id", ss->agent_id,
			 "model_id", ss->model_id, "title", ss->title, "created_at",
			 (json_int_t)ss->created_at);
}

/* ---- chat hooks: store writes completed -------------------------------- */

static void api_session_created(void *arg, const struct chat_reply *r, const char *sid, int err)
{
	struct api *a = arg;
	struct store_session ss;
	if (err || store_session_get(a->st, sid, &ss) < 0) {
		api_error(a, r, 500, "internal", "the session could not be stored", NULL);
		return;
	}
	api_send_json(a, r, 201, CHAN_RESP_PLAIN, NULL, api_session_json(&ss), NULL);
}

static void api_message_accepted(void *arg, const struct chat_reply *r, const char *sid,
				 const char *mid, int err)
{
	struct api *a = arg;
	if (err) {
		api_error(a, r, 500, "internal", "the message could not be stored", NULL);
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

int api_init(struct api *a, const struct sluice_conf *conf, struct store *st, struct chan_out *out)
{
	memset(a, 0, sizeof(*a));
	a->conf = conf;
	a->st = st;
	a->out = out;
	struct chat_hooks h = { .session_created = api_session_created,
				.message_accepted = api_message_accepted, .arg = a };
	return chat_init(&a->chat, conf, st, out, &h);
}

void api_free(struct api *a)
{
	chat_free(&a->chat);
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

static void api_sessions_create(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	json_t *j = api_parse_body(a, r, q->body, q->body_len);
	if (!j)
		return;
	struct store_session ss;
	memset(&ss, 0, sizeof(ss));
	json_t *model = json_object_get(j, "model_id");
	if (!json_is_string(model)) {
		api_error(a, r, 400, "invalid_request", "model_id must be a string", NULL);
		goto out;
	}
	if (!api_opt_str(a, r, j, "model_id", ss.model_id, sizeof(ss.model_id), "") ||
	    !api_opt_str(a, r, j, "agent_id", ss.agent_id, sizeof(ss.agent_id), "assistant") ||
	    !api_opt_str(a, r, j, "title", ss.title, sizeof(ss.title), ""))
		goto out;
	const struct conf_backend *be = conf_backend_for_model(a->conf, ss.model_id);
	if (!be) {
		api_error(a, r, 400, "unknown_model", "no backend serves this model", NULL);
		goto out;
	}
	chat_new_id("s_", ss.id);
	ss.created_at = (int64_t)time(NULL);
	if (chat_session_create(&a->chat, be, &ss, r) < 0)
		api_error(a, r, 500, "internal", "the session could not be stored", NULL);
out:
	json_decref(j);
}

static void api_session_get(struct api *a, const struct chat_reply *r, const char *id, size_t len)
{
	struct chat_session *s = chat_session_get(&a->chat, id, len);
	struct store_session ss;
	if (!s || store_session_get(a->st, s->node.id, &ss) < 0) {
		api_not_found(a, r, "no such session");
		return;
	}
	json_t *o = api_session_json(&ss);
	json_t *msgs = json_array();
	if (!o || !msgs)
		goto fail;
	uint32_t n = store_message_count(a->st, ss.id);
	for (uint32_t i = 0; i < n; i++) {
		struct store_message m;
		if (store_message_get(a->st, ss.id, i, &m) < 0)
			goto fail;
		json_t *mo = json_pack("{s:s,s:s,s:s%,s:s}", "id", m.id,
				       "role", m.role == STORE_ROLE_USER ? "user" : "assistant",
				       "content", m.content ? m.content : "", m.content_len,
				       "status", api_status_name(m.status));
		if (!mo || json_array_append_new(msgs, mo) < 0)
			goto fail;
	}
	json_object_set_new(o, "messages", msgs);
	api_send_json(a, r, 200, CHAN_RESP_PLAIN, NULL, o, NULL);
	return;
fail:
	json_decref(o);
	json_decref(msgs);
	api_error(a, r, 500, "internal", "the session could not be read", NULL);
}

/* The message logic shared by POST /api/chat/message and WS send. */
static void api_post_message(struct api *a, const struct chat_reply *r, json_t *j)
{
	json_t *sid = json_object_get(j, "session_id");
	json_t *content = json_object_get(j, "content");
	if (!json_is_string(sid) || !json_is_string(content) || json_string_length(content) == 0) {
		api_error(a, r, 400, "invalid_request", "session_id and a non-empty content are required", NULL);
		return;
	}
	struct chat_session *s = chat_session_get(&a->chat, json_string_value(sid), json_string_length(sid));
	if (!s) {
		api_not_found(a, r, "no such session");
		return;
	}
	int rc = chat_message_post(&a->chat, s, json_string_value(content), json_string_length(content), r);
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
	api_post_message(a, r, j);
	json_decref(j);
}

static void api_cancel(struct api *a, const struct chat_reply *r, const char *id, size_t len)
{
	struct chat_session *s = chat_session_get(&a->chat, id, len);
	if (!s) {
		api_not_found(a, r, "no such session");
		return;
	}
	char mid[CHAN_ID_LEN];
	if (chat_cancel(&a->chat, s, mid) < 0) {
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

/* SSE (HTTP) or WebSocket subscription: the subscribe response, then the
 * backlog, then live records; all on the conn's worker ring, so in order. */
static void api_subscribe(struct api *a, const struct chat_reply *r, const char *id, size_t len,
			  const char *resume, size_t resume_len)
{
	struct chat_session *s = chat_session_get(&a->chat, id, len);
	if (!s) {
		api_not_found(a, r, "no such session");
		return;
	}
	char mid[CHAN_ID_LEN] = { 0 };
	uint32_t seq = 0;
	enum chat_resume kind = api_parse_resume(resume, resume_len, mid, &seq);
	if (kind != CHAT_RESUME_NONE) {
		struct store_message m;
		int64_t idx = store_message_find(a->st, s->node.id, mid);
		if (idx < 0 || store_message_get(a->st, s->node.id, (uint32_t)idx, &m) < 0)
			kind = CHAT_RESUME_NONE;
		else if (kind != CHAT_RESUME_SEQ)
			seq = m.ntokens;
	}
	const char *rmid = kind != CHAT_RESUME_NONE ? mid : NULL;
	bool ok;
	if (r->kind == CHAN_REQ_WS) {
		json_t *o = api_ws_obj("response");
		if (o) {
			json_object_set_new(o, "request", json_string("subscribe"));
			json_object_set_new(o, "session_id", json_string(s->node.id));
		}
		api_ws_finish(r, o);
		char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		if (!txt)
			return;
		struct co_resp resp = { .status = 200, .action = CHAN_RESP_WS_SUBSCRIBE,
					.session_id = s->node.id, .resume_message_id = rmid,
					.resume_seq = seq, .body = txt, .body_len = strlen(txt) };
		ok = api_send(a, r, &resp);
		free(txt);
	} else {
		struct co_resp resp = { .status = 200, .action = CHAN_RESP_SSE_SUBSCRIBE,
					.session_id = s->node.id, .resume_message_id = rmid,
					.resume_seq = seq };
		ok = api_send(a, r, &resp);
	}
	if (ok && !chat_subscribe(&a->chat, s, r->conn, kind, mid, seq))
		LOG_WARN("backlog for a subscriber on worker %u incomplete: channel full", r->conn.worker);
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
	char hdr[32];
	int n = snprintf(hdr, sizeof(hdr), "Allow: %s", allow);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return;
	api_error(a, r, 405, "method_not_allowed", "method not allowed on this path", hdr);
}

static void api_http(struct api *a, const struct chat_reply *r, const struct api_req *q)
{
	uint8_t m = q->hdr->method;
	const char *id;
	size_t idlen;
	if (api_path_is(q, "/api/models")) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET");
		return api_models(a, r);
	}
	if (api_path_is(q, "/api/chat/sessions")) {
		if (m != CHAN_M_POST)
			return api_method_not_allowed(a, r, "POST");
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
		return api_cancel(a, r, id, idlen);
	}
	if (api_path_id(q, "/api/chat/sessions/", "", &id, &idlen)) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET");
		return api_session_get(a, r, id, idlen);
	}
	if (api_path_id(q, "/api/chat/stream/", "", &id, &idlen)) {
		if (m != CHAN_M_GET)
			return api_method_not_allowed(a, r, "GET");
		return api_subscribe(a, r, id, idlen, q->last_event_id, q->lei_len);
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
		api_post_message(a, r, j);
	} else if (strcmp(type, "subscribe") != 0 && strcmp(type, "cancel") != 0) {
		api_error(a, r, 400, "unknown_type", "unknown message type", NULL);
	} else if (!json_is_string(sid)) {
		api_error(a, r, 400, "invalid_request", "session_id must be a string", NULL);
	} else if (strcmp(type, "cancel") == 0) {
		api_cancel(a, r, json_string_value(sid), json_string_length(sid));
	} else {
		json_t *rf = json_object_get(j, "resume_from");
		if (rf && !json_is_string(rf))
			api_error(a, r, 400, "invalid_request", "resume_from must be a string", NULL);
		else
			api_subscribe(a, r, json_string_value(sid), json_string_length(sid),
				      rf ? json_string_value(rf) : NULL, rf ? json_string_length(rf) : 0);
	}
out:
	json_decref(j);
}

static void api_request(struct api *a, const void *payload, uint32_t len)
{
	struct api_req q = { .hdr = payload };
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
		default:
			break;
		}
	}
	if (bad) {
		a->stats.invalid_records++;
		return;
	}
	struct chat_reply r = { .conn = q.hdr->conn, .req_id = q.hdr->req_id, .kind = q.hdr->kind };
	a->stats.requests++;
	switch (q.hdr->kind) {
	case CHAN_REQ_HTTP:
		if (!q.path) {
			api_error(a, &r, 400, "bad_request", "no path", NULL);
			return;
		}
		api_http(a, &r, &q);
		return;
	case CHAN_REQ_WS:
		api_ws(a, &r, &q);
		return;
	case CHAN_REQ_WS_OPEN: {
		/* Authorisation comes with issue 3; until then every upgrade is accepted. */
		struct co_resp resp = { .status = 101, .action = CHAN_RESP_WS_ACCEPT };
		api_send(a, &r, &resp);
		return;
	}
	default:
		api_error(a, &r, 400, "bad_request", "unknown request kind", NULL);
	}
}

void api_dispatch(struct api *a, uint16_t type, const void *payload, uint32_t len)
{
	if (!chan_rec_valid(type, payload, len)) {
		a->stats.invalid_records++;
		return;
	}
	switch (type) {
	case CHAN_REC_REQUEST:
		api_request(a, payload, len);
		return;
	case CHAN_REC_SUBSCRIBE:
	case CHAN_REC_UNSUBSCRIBE: {
		const struct chan_sub *sub = payload;
		struct chat_session *s = chat_session_get(&a->chat, sub->session_id,
							  strnlen(sub->session_id, CHAN_ID_LEN));
		if (!s)
			return;
		if (type == CHAN_REC_SUBSCRIBE)
			chat_sub_add(s, sub->conn.worker);
		else
			chat_sub_del(s, sub->conn.worker);
		return;
	}
	case CHAN_REC_CONN_CLOSED:
		/* Subscriptions are counted per worker and released by UNSUBSCRIBE;
		 * control keeps no other per-connection state. */
		return;
	default:
		a->stats.invalid_records++;
	}
}
