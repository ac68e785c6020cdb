/*
 * The api module's core: answers, request decoding, the HTTP and WebSocket
 * routers and the record handler registered with the loop.
 */
#include "api/api_int.h"
#include "limits/limits.h"
#include "api/api_auth.h"
#include "api/api_v1.h"

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


bool api_send(struct api *a, const struct chat_reply *r, const struct co_resp *resp)
{
	if (co_response(a->out, r->conn, r->req_id, resp))
		return true;
	a->stats.reply_drops++;
	LOG_WARN("response to worker %u dropped: channel full", r->conn.worker);
	return false;
}

void api_send_json(struct api *a, const struct chat_reply *r, uint16_t status, uint8_t action,
			  const char *sid, json_t *obj, const char *header)
{
	char *txt = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!txt) {
		LOG_ERROR("out of memory building a response");
		return;
	}
	size_t n = strlen(txt);
	struct co_resp resp = {
		.status = status, .action = action, .session_id = sid,
		.body = txt, .body_len = n, .header = header,
	};
	api_send(a, r, &resp);
	sodium_memzero(txt, n);
	free(txt);
}

/* A WebSocket message object starting with "type" and ending with the
 * client's "id" when it sent one. */
json_t *api_ws_obj(const char *type)
{
	json_t *o = json_object();
	if (o)
		json_object_set_new(o, "type", json_string(type));
	return o;
}

void api_ws_finish(const struct chat_reply *r, json_t *o)
{
	if (!o || !r->echo_len)
		return;
	json_t *id = json_loadb(r->echo, r->echo_len, JSON_DECODE_ANY, NULL);
	if (id)
		json_object_set_new(o, "id", id);
}

/* api_error with OpenAI's error type given (NULL: the status's). */
static void api_error_typed(struct api *a, const struct chat_reply *r, uint16_t status, const char *type,
			    const char *code, const char *msg, const char *header)
{
	/* /v1 answers in OpenAI's shape (message, type, param, code), so the
	 * SDKs raise their usual exceptions. */
	json_t *err = r->openai ? json_pack("{s:s,s:s,s:n,s:s}", "message", msg, "type",
					    type ? type : api_v1_error_type(status), "param", "code", code)
				: json_pack("{s:s,s:s}", "code", code, "message", msg);
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

void api_error(struct api *a, const struct chat_reply *r, uint16_t status, const char *code,
		      const char *msg, const char *header)
{
	api_error_typed(a, r, status, NULL, code, msg, header);
}

/* A store write that failed. A full map (-ENOSPC) is 503 store_full: the
 * request was fine and succeeds once an operator grows store_map_mb. */
void api_store_error(struct api *a, const struct chat_reply *r, int err, const char *msg)
{
	if (err == -ENOSPC)
		api_error(a, r, 503, "store_full", "the store is full; retry later", "Retry-After: 60");
	else
		api_error(a, r, 500, "internal", msg, NULL);
}

const char *api_limit_type(lim_id id)
{
	return id == CONF_LIM_STORED_MB || id == CONF_LIM_SESSIONS ? "insufficient_quota" : "rate_limit_exceeded";
}

void api_limit_cut_message(const struct lim_refusal *cut, char *out, size_t len)
{
	snprintf(out, len, "the answer reached the %s limit of this %s (%llu) and was cut; retry in %llds",
		 lim_key_name(cut->limit), cut->by_key ? "API key" : "user", (unsigned long long)cut->value,
		 (long long)cut->retry_after);
}

/* 429 with Retry-After and a code naming the limit (docs/api.md "Limits").
 * On /v1 the type is OpenAI's: insufficient_quota for what is kept (stored
 * text, conversations), rate_limit_exceeded for the rates. */
void api_limit_error(struct api *a, const struct chat_reply *r, const struct lim_refusal *why)
{
	char msg[160], hdr[48];
	snprintf(msg, sizeof(msg), "over the %s limit of this %s (%llu); retry later",
		 lim_key_name(why->limit), why->by_key ? "API key" : "user",
		 (unsigned long long)why->value);
	snprintf(hdr, sizeof(hdr), "Retry-After: %lld", (long long)why->retry_after);
	api_error_typed(a, r, 429, api_limit_type(why->limit), lim_code(why->limit), msg, hdr);
}

struct lim_who api_lim_who(const struct api_req *q)
{
	struct lim_who w = { .user = q->user, .uid = q->uid, .role = q->role, .key_id = NULL };
	if (q->id && q->id->apikey && q->id->key_id[0])
		w.key_id = q->id->key_id;
	return w;
}

void api_not_found(struct api *a, const struct chat_reply *r, const char *what)
{
	api_error(a, r, 404, "not_found", what, NULL);
}

/* ---- chat hooks: store writes completed -------------------------------- */


static void api_on_record(void *arg, uint16_t type, const void *payload, uint32_t len);

int api_init(struct api *a, const struct api_deps *d, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	a->conf = d->conf;
	a->st = d->st;
	a->out = d->out;
	a->chat = d->chat;
	a->auth = d->auth;
	a->limits = d->limits;
	a->bk = d->bk;
	a->loop = d->loop;
	a->bus = d->bus;
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
				.message_accepted = api_message_accepted,
				.answer_tokens = api_answer_tokens, .answer_ended = api_answer_ended,
				.arg = a };
	chat_set_hooks(a->chat, &h);
	if (api_v1_init(a) < 0) {
		snprintf(err, errlen, "api: out of memory, or the output's hook table is full");
		return -1;
	}
	return 0;
}

void api_free(struct api *a)
{
	api_v1_free(a);
}

int api_route_add(struct api *a, const char *prefix, api_route_fn fn, void *arg)
{
	if (a->nroutes == API_MAX_ROUTES)
		return -1;
	a->routes[a->nroutes++] = (struct api_route){ prefix, fn, arg };
	return 0;
}

int api_ws_add(struct api *a, const struct api_ws_endpoint *ep)
{
	if (a->nws == API_MAX_WS)
		return -1;
	a->ws[a->nws++] = *ep;
	return 0;
}

const struct api_ws_endpoint *api_ws_find(struct api *a, const char *path, size_t len)
{
	for (uint32_t i = 0; path && i < a->nws; i++)
		if (strlen(a->ws[i].path) == len && memcmp(a->ws[i].path, path, len) == 0)
			return &a->ws[i];
	return NULL;
}

void api_reply_json(struct api *a, const struct chat_reply *r, uint16_t status, json_t *obj)
{
	api_send_json(a, r, status, CHAN_RESP_PLAIN, NULL, obj, NULL);
}

void api_reply_error(struct api *a, const struct chat_reply *r, uint16_t status, const char *code,
		     const char *msg)
{
	api_error(a, r, status, code, msg, NULL);
}

void api_reply_405(struct api *a, const struct chat_reply *r, const char *allow)
{
	api_method_not_allowed(a, r, allow);
}

int api_call_query(const struct api_call *c, const char *key, char *out, size_t cap)
{
	struct api_req q = { .query = c->query, .query_len = c->query_len };
	return api_query(&q, key, out, cap);
}

/* The request as a layer above sees it. */
static struct api_call api_call_of(const struct chat_reply *r, const struct api_req *q)
{
	bool head = q->hdr->method == CHAN_M_HEAD;
	return (struct api_call){
		.r = r, .method = head ? CHAN_M_GET : q->hdr->method, .head = head,
		.path = q->path, .path_len = q->path_len, .query = q->query,
		.query_len = q->query_len, .body = q->body, .body_len = q->body_len, .id = q->id,
	};
}

/* ---- handlers ------------------------------------------------------------ */

/* Parses a JSON body into an object: not JSON at all is invalid_json, JSON
 * of another shape (an array, a number) is invalid_request. */
json_t *api_parse_body(struct api *a, const struct chat_reply *r, const char *body, size_t len)
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
bool api_opt_str(struct api *a, const struct chat_reply *r, json_t *o, const char *key,
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
struct chat_session *api_owned(struct api *a, const struct chat_reply *r,
				      const struct api_req *q, const char *id, size_t len)
{
	struct chat_session *s = chat_session_get(a->chat, id, len);
	if (!s || strcmp(s->user, q->user) != 0 || s->owner_uid != q->uid) {
		api_not_found(a, r, "no such session");
		return NULL;
	}
	return s;
}

/*
 * Finds `key` in an application/x-www-form-urlencoded query and decodes its
 * value (%XX, '+') into out, NUL-terminated. Returns the decoded length, -1
 * when the key is absent, -2 when the value is malformed, holds a NUL or does
 * not fit.
 */
int api_query(const struct api_req *q, const char *key, char *out, size_t cap)
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
bool api_parse_num(const char *txt, double lo, double hi, double *out)
{
	char *e;
	errno = 0;
	double v = strtod(txt, &e);
	if (errno || e == txt || *e || !isfinite(v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
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

void api_method_not_allowed(struct api *a, const struct chat_reply *r, const char *allow)
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
	if (q->path_len >= 4 && memcmp(q->path, "/v1/", 4) == 0)
		return api_v1_route(a, r, q);
	for (uint32_t i = 0; i < a->nroutes; i++) {
		size_t pl = strlen(a->routes[i].prefix);
		if (q->path_len >= pl && memcmp(q->path, a->routes[i].prefix, pl) == 0) {
			struct api_call c = api_call_of(r, q);
			a->routes[i].fn(a->routes[i].arg, a, &c);
			return;
		}
	}
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

static void api_ws(struct api *a, struct chat_reply *r, const struct api_req *q)
{
	/* Another endpoint's socket speaks its own protocol. */
	const struct api_ws_endpoint *ep = api_ws_find(a, q->path, q->path_len);
	if (ep) {
		struct api_call c = api_call_of(r, q);
		ep->message(ep->arg, a, &c);
		return;
	}
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
	struct chat_reply r = { .conn = q.hdr->conn, .req_id = q.hdr->req_id, .kind = q.hdr->kind,
				.openai = q.path && q.path_len >= 4 && memcmp(q.path, "/v1/", 4) == 0 };
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
	case CHAN_REQ_HTTP_ADMIT:
		api_auth_admit(a, &r, payload, len);
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
		api_v1_conn_closed(a, ((const struct chan_conn_closed *)payload)->conn);
		for (uint32_t i = 0; i < a->nws; i++)
			a->ws[i].closed(a->ws[i].arg, ((const struct chan_conn_closed *)payload)->conn);
		return;
	default:
		a->stats.invalid_records++;
	}
}
