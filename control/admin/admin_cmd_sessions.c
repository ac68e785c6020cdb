/*
 * Command family "sessions": sessions list, show and kill.
 */
#include "admin/admin_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"

#define ADM_LIST_DEFAULT 50u
#define ADM_LIST_MAX 1000u

struct adm_vec {
	void *v;
	size_t n, cap, elem;
	bool oom;
};

static void *adm_vec_push(struct adm_vec *a)
{
	if (a->oom)
		return NULL;
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		void *p = realloc(a->v, cap * a->elem);
		if (!p) {
			a->oom = true;
			return NULL;
		}
		a->v = p;
		a->cap = cap;
	}
	return (char *)a->v + a->elem * a->n++;
}

static void adm_each_session(void *arg, const struct store_session *s)
{
	struct store_session *d = adm_vec_push(arg);
	if (d)
		*d = *s;
}

static void adm_each_user_name(void *arg, const struct store_user *u)
{
	char *d = adm_vec_push(arg);
	if (d)
		memcpy(d, u->name, STORE_USER_MAX);
}

/* Newest update first, as the store lists one user's sessions. */
static int adm_session_cmp(const void *a, const void *b)
{
	const struct store_session *x = a, *y = b;
	if (x->updated_at != y->updated_at)
		return x->updated_at > y->updated_at ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* Appends up to limit sessions of user, following the store's cursors. */
static int adm_list_user(struct store *st, const char *user, uint32_t limit, struct adm_vec *out)
{
	char cursor[256] = "";
	uint32_t got = 0;
	do {
		char next[256] = "";
		size_t before = out->n;
		struct store_list_query q = {
			.user = user, .cursor = cursor, .archived = -1,
			.limit = limit - got > 100 ? 100 : limit - got,
		};
		int rc = st->ops->session_list(st, &q, adm_each_session, out, next, sizeof(next));
		if (rc < 0)
			return rc;
		if (out->oom)
			return -ENOMEM;
		got += (uint32_t)(out->n - before);
		if (out->n == before)
			break;
		memcpy(cursor, next, sizeof(cursor));
	} while (got < limit && cursor[0]);
	return 0;
}

static json_t *adm_session_json(const struct store_session *s)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:b}", "id", s->id, "user", s->user,
			 "agent_id", s->agent_id, "model_id", s->model_id, "title", s->title,
			 "created_at", (json_int_t)s->created_at, "updated_at", (json_int_t)s->updated_at,
			 "archived", (int)s->archived);
}

static void cmd_sessions_list(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->d.st;
	const char *user = adm_arg_str(req, "user");
	uint64_t limit = ADM_LIST_DEFAULT;
	if (!adm_arg_uint(req, "limit", 1, ADM_LIST_MAX, &limit)) {
		adm_fail(ad, cl, "invalid_request", "limit must be 1..1000");
		return;
	}
	if (json_object_get(req, "user") && !adm_user_ok(user)) {
		adm_fail(ad, cl, "invalid_request", "user must be a user name");
		return;
	}
	if (!st->ops->session_list || !st->ops->user_list) {
		adm_fail(ad, cl, "not_supported", "this store cannot list sessions");
		return;
	}
	struct adm_vec names = { .elem = STORE_USER_MAX };
	struct adm_vec ses = { .elem = sizeof(struct store_session) };
	int rc = 0;
	if (user) {
		rc = adm_list_user(st, user, (uint32_t)limit, &ses);
	} else {
		/* No listing across users: take each user's newest `limit` and merge. */
		rc = st->ops->user_list(st, adm_each_user_name, &names);
		if (rc == 0 && names.oom)
			rc = -ENOMEM;
		for (size_t i = 0; rc == 0 && i < names.n; i++) {
			char name[STORE_USER_MAX];
			memcpy(name, (char *)names.v + i * STORE_USER_MAX, STORE_USER_MAX);
			rc = adm_list_user(st, name, (uint32_t)limit, &ses);
		}
	}
	free(names.v);
	if (rc < 0) {
		free(ses.v);
		adm_fail_errno(ad, cl, rc, "listing sessions");
		return;
	}
	if (ses.n)
		qsort(ses.v, ses.n, ses.elem, adm_session_cmp);
	json_t *arr = json_array();
	size_t n = ses.n < limit ? ses.n : (size_t)limit;
	for (size_t i = 0; arr && i < n; i++) {
		if (json_array_append_new(arr, adm_session_json((struct store_session *)ses.v + i)) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	free(ses.v);
	json_t *o = adm_ok();
	if (!o || !arr) {
		json_decref(o);
		json_decref(arr);
		adm_fail(ad, cl, "internal", "out of memory");
		return;
	}
	json_object_set_new(o, "sessions", arr);
	adm_send(cl, o);
}

static json_t *adm_message_json(const struct store_message *m)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:{s:I,s:I,s:f}}", "id", m->id,
			      "role", m->role == STORE_ROLE_USER ? "user" : "assistant",
			      "status", store_msg_status_name(m->status), "created_at", (json_int_t)m->created_at,
			      "ntokens", (json_int_t)m->ntokens, "content_bytes", (json_int_t)m->content_len,
			      "usage", "prompt_tokens", (json_int_t)m->usage.prompt_tokens,
			      "completion_tokens", (json_int_t)m->usage.completion_tokens,
			      "cost_usd", m->usage.cost_usd);
	/* Content that is not UTF-8 cannot be a JSON string; its size still shows. */
	json_t *c = json_stringn(m->content ? m->content : "", m->content_len);
	if (o)
		json_object_set_new(o, "content", c ? c : json_null());
	else
		json_decref(c);
	return o;
}

static void cmd_sessions_show(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->d.st;
	const char *sid = adm_arg_str(req, "id");
	if (!adm_sid_ok(sid)) {
		adm_fail(ad, cl, "invalid_request", "id must be a session id");
		return;
	}
	struct store_session ss;
	if (store_session_get(st, sid, &ss) < 0) {
		adm_fail(ad, cl, "not_found", "no such session");
		return;
	}
	json_t *o = adm_ok();
	json_t *s = adm_session_json(&ss);
	json_t *msgs = json_array();
	if (!o || !s || !msgs)
		goto oom;
	uint32_t n = store_message_count(st, sid);
	for (uint32_t i = 0; i < n; i++) {
		struct store_message m;
		if (store_message_get(st, sid, i, &m) < 0) {
			json_decref(o);
			json_decref(s);
			json_decref(msgs);
			adm_fail(ad, cl, "internal", "a message of this session cannot be read");
			return;
		}
		if (json_array_append_new(msgs, adm_message_json(&m)) < 0)
			goto oom;
	}
	const struct chat_session *cs = chat_session_cached(ad->d.chat, sid, strlen(sid));
	uint64_t subs = 0;
	for (uint32_t w = 0; cs && w < CHAN_MAX_WORKERS; w++)
		subs += cs->refs[w];
	json_object_set_new(s, "cached", json_boolean(cs != NULL));
	json_object_set_new(s, "running", json_boolean(cs && cs->ans.running));
	json_object_set_new(s, "answer_message_id",
			    cs && cs->ans.running ? json_string(cs->ans.mid) : json_null());
	json_object_set_new(s, "subscribers", json_integer((json_int_t)subs));
	json_object_set_new(s, "messages", msgs);
	json_object_set_new(o, "session", s);
	adm_send(cl, o);
	return;
oom:
	json_decref(o);
	json_decref(s);
	json_decref(msgs);
	adm_fail(ad, cl, "internal", "out of memory");
}

uint32_t adm_session_kill(struct admin *ad, struct chat_session *s, char mid[CHAN_ID_LEN])
{
	mid[0] = 0;
	chat_cancel(ad->d.chat, s, mid);
	uint32_t kicked = 0;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		struct chan_kick *k = co_begin(ad->d.out, w, CHAN_REC_KICK, sizeof(*k));
		if (!k)
			continue;
		memset(k, 0, sizeof(*k));
		k->conn.worker = (uint16_t)w;
		k->conn.slot = CHAN_SLOT_ALL;
		memcpy(k->session_id, s->node.id, CHAN_ID_LEN);
		k->code = 1008;
		snprintf(k->reason_code, sizeof(k->reason_code), "session_killed");
		snprintf(k->reason, sizeof(k->reason), "session killed by operator");
		co_end(ad->d.out, w, sizeof(*k));
		kicked++;
	}
	chat_event(ad->d.chat, s->node.id, "killed", "by operator");
	ev_publish(ad->d.bus, &(struct ev){ .kind = EV_KICKED, .user = s->user, .session_id = s->node.id,
					    .reason = "killed by operator" });
	LOG_INFO("admin: session %s killed by operator", s->node.id);
	return kicked;
}

/* Cancels the running answer (its subscribers get usage and done cancelled),
 * then asks every worker to close the session's subscribers with 1008. */
static void cmd_sessions_kill(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *sid = adm_arg_str(req, "id");
	if (!adm_sid_ok(sid)) {
		adm_fail(ad, cl, "invalid_request", "id must be a session id");
		return;
	}
	struct chat_session *s = chat_session_get(ad->d.chat, sid, strlen(sid));
	if (!s) {
		adm_fail(ad, cl, "not_found", "no such session");
		return;
	}
	char mid[CHAN_ID_LEN];
	uint32_t kicked = adm_session_kill(ad, s, mid);
	json_t *o = adm_ok();
	json_object_set_new(o, "id", json_string(s->node.id));
	json_object_set_new(o, "cancelled_message_id", mid[0] ? json_string(mid) : json_null());
	json_object_set_new(o, "workers_kicked", json_integer((json_int_t)kicked));
	adm_send(cl, o);
}

const struct adm_cmd adm_sessions_cmds[] = {
	{ "sessions.list", cmd_sessions_list },
	{ "sessions.show", cmd_sessions_show },
	{ "sessions.kill", cmd_sessions_kill },
	{ NULL, NULL },
};
