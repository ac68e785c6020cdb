/*
 * Internals shared by the api module's files: api.c (answers, request
 * decoding, the HTTP and WebSocket routers, the record handler),
 * api_conv.c (conversations: sessions, messages, export, agents, models),
 * api_stream.c (SSE and WebSocket streams: subscribe and resume, replay)
 * and api_auth.c (authentication). Nothing outside control/api includes it.
 *
 * Every handler answers exactly once through api_send_json / api_error,
 * at once or from the completion of the store write it started.
 */
#ifndef CONTROL_API_INT_H
#define CONTROL_API_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api/api.h"
#include "auth/auth.h"
#include "limits/limits.h"

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
	/* The authenticated caller; every conversation handler acts for
	 * this user only ("" on a public route). */
	const char *user;
	uint64_t uid; /* which user of that name (store_user.uid) */
	uint8_t role; /* enum store_user_role */
	/* The whole identity: SSE streams are registered under it so that its
	 * revocation or expiry ends them. */
	const struct auth_ident *id;
};

/* ---- answers (api.c) ------------------------------------------------------ */

/* Sends a response; false (counted in reply_drops) when the channel is full. */
bool api_send(struct api *a, const struct chat_reply *r, const struct co_resp *resp);
/* Serialises obj (taking the reference) as the body, sends it and wipes the
 * text (it may hold a token). */
void api_send_json(struct api *a, const struct chat_reply *r, uint16_t status, uint8_t action,
		   const char *sid, json_t *obj, const char *header);
/* A WebSocket message object starting with "type", and its completion with
 * the client's "id" when it sent one. */
json_t *api_ws_obj(const char *type);
void api_ws_finish(const struct chat_reply *r, json_t *o);
/* {"error":{code,message}} (HTTP) or an "error" message (WebSocket). */
void api_error(struct api *a, const struct chat_reply *r, uint16_t status, const char *code,
	       const char *msg, const char *header);
/* A failed store write: -ENOSPC is 503 store_full, the rest 500. */
void api_store_error(struct api *a, const struct chat_reply *r, int err, const char *msg);
void api_not_found(struct api *a, const struct chat_reply *r, const char *what);
struct lim_refusal;
struct lim_who;
/* 429 with Retry-After and the limit's code. */
void api_limit_error(struct api *a, const struct chat_reply *r, const struct lim_refusal *why);
/* The message of a running answer cut by a limit (docs/api.md "Limits"). */
void api_limit_cut_message(const struct lim_refusal *cut, char *out, size_t len);
/* OpenAI's error type of a limit: insufficient_quota for what is kept,
 * rate_limit_exceeded for the rates. */
const char *api_limit_type(lim_id id);
/* Whom a request counts against (its user, and its API key). */
struct lim_who api_lim_who(const struct api_req *q);
void api_method_not_allowed(struct api *a, const struct chat_reply *r, const char *allow);

/* ---- request parts (api.c) ---------------------------------------------- */

/* The registered WebSocket endpoint serving path, or NULL (then /ws/chat). */
const struct api_ws_endpoint *api_ws_find(struct api *a, const char *path, size_t len);

/* A JSON object body, or NULL after answering 400. */
json_t *api_parse_body(struct api *a, const struct chat_reply *r, const char *body, size_t len);
/* An optional string member copied into dst; false after answering 400. */
bool api_opt_str(struct api *a, const struct chat_reply *r, json_t *o, const char *key, char *dst,
		 size_t cap, const char *dflt);
/* The session when the caller owns it; else NULL after answering 404. */
struct chat_session *api_owned(struct api *a, const struct chat_reply *r, const struct api_req *q,
			       const char *id, size_t len);
/* Decodes query parameter key into out: its length, -1 absent, -2 malformed. */
int api_query(const struct api_req *q, const char *key, char *out, size_t cap);
bool api_parse_num(const char *txt, double lo, double hi, double *out);

/* ---- conversations (api_conv.c) ----------------------------------------- */

bool api_msg_ended(const struct store_message *m);
/* chat hooks: a session or message write completed. */
void api_session_created(void *arg, const struct chat_reply *r, const char *sid, const char *user,
			 int err);
const char *api_answer_tokens(void *arg, const struct chat_session *s, uint32_t n, size_t bytes, char *why,
			      size_t whylen);
void api_answer_ended(void *arg, const struct chat_session *s);
void api_message_accepted(void *arg, const struct chat_reply *r, const char *sid, const char *mid,
			  int err);
void api_sessions_create(struct api *a, const struct chat_reply *r, const struct api_req *q);
void api_sessions_list(struct api *a, const struct chat_reply *r, const struct api_req *q);
void api_session_get(struct api *a, const struct chat_reply *r, const struct api_req *q,
		     const char *id, size_t len);
void api_session_patch(struct api *a, const struct chat_reply *r, const struct api_req *q,
		       const char *id, size_t len);
void api_session_delete(struct api *a, const struct chat_reply *r, const struct api_req *q,
			const char *id, size_t len);
void api_export(struct api *a, const struct chat_reply *r, const struct api_req *q, const char *id,
		size_t len);
void api_agents(struct api *a, const struct chat_reply *r);
void api_models(struct api *a, const struct chat_reply *r);
/* POST /api/chat/message and WebSocket "send": body j {session_id, content}. */
void api_post_message(struct api *a, const struct chat_reply *r, const struct api_req *q, json_t *j);
void api_message_http(struct api *a, const struct chat_reply *r, const struct api_req *q);
void api_cancel(struct api *a, const struct chat_reply *r, const struct api_req *q, const char *id,
		size_t len);

/* ---- the OpenAI-compatible API (api_v1.c) ------------------------------ */

/* Routes a /v1/ request (answered, always). */
void api_v1_route(struct api *a, const struct chat_reply *r, const struct api_req *q);
/* OpenAI's error type for an HTTP status (invalid_request_error, ...). */
const char *api_v1_error_type(uint16_t status);

/* ---- streams (api_stream.c) ------------------------------------------------ */

/* GET /api/chat/stream/{id} and WebSocket "subscribe", resuming from
 * `resume` (Last-Event-ID or resume_from) when given. */
void api_subscribe(struct api *a, const struct chat_reply *r, const struct api_req *q, const char *id,
		   size_t len, const char *resume, size_t resume_len);
/* HEAD on an SSE route: the status and content type, no stream. */
void api_sse_head(struct api *a, const struct chat_reply *r);
void api_replay_http(struct api *a, const struct chat_reply *r, const struct api_req *q,
		     const char *id, size_t len, bool head);
void api_ws_replay(struct api *a, const struct chat_reply *r, const struct api_req *q, json_t *j,
		   json_t *sid);
void api_ws_pause(struct api *a, const struct chat_reply *r, bool pause);
void api_ws_state(struct api *a, const struct chat_reply *r);

#endif
