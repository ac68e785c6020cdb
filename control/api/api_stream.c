/*
 * Streams: SSE and WebSocket subscriptions with resume (Last-Event-ID,
 * resume_from), replays of recorded answers, and a WebSocket's replay
 * controls and state.
 */
#include "api/api_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"

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
void api_subscribe(struct api *a, const struct chat_reply *r, const struct api_req *q,
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
void api_sse_head(struct api *a, const struct chat_reply *r)
{
	struct co_resp resp = { .status = 200, .action = CHAN_RESP_PLAIN,
				.content_type = "text/event-stream" };
	if (!api_send(a, r, &resp))
		LOG_WARN("HEAD answer to worker %u dropped: channel full", r->conn.worker);
}

void api_replay_http(struct api *a, const struct chat_reply *r, const struct api_req *q,
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

void api_ws_replay(struct api *a, const struct chat_reply *r, const struct api_req *q,
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

void api_ws_pause(struct api *a, const struct chat_reply *r, bool pause)
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
void api_ws_state(struct api *a, const struct chat_reply *r)
{
	struct chat_conn *cc = chat_conn_get(a->chat, r->conn, false);
	json_t *o = api_ws_obj("state");
	json_t *subs = json_array();
	json_t *rp = json_null();
	if (cc && cc->sub_sid[0])
		json_array_append_new(subs, json_string(cc->sub_sid));
	if (cc && cc->rp)
		rp = json_pack("{s:s,s:s,s:f,s:b,s:i,s:i}", "session_id", cc->rp->sid, "message_id",
			       cc->rp->mid, "speed", cc->rp->speed, "paused", cc->rp->paused_ns != 0,
			       "sent", (int)(cc->rp->next - 1), "total", (int)cc->rp->ntokens);
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
