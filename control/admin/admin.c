#include "admin/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "api/api.h"
#include "auth/auth.h"
#include "loop/cp_loop.h"
#include "sluice/common.h"
#include "sluice/log.h"
#include "store/store.h"

#define ADM_LIST_DEFAULT 50u
#define ADM_LIST_MAX 1000u

static void adm_arm(struct admin *ad);
static void adm_process(struct admin *ad, struct adm_client *cl);

/* ---- output ------------------------------------------------------------ */

static void adm_client_release(struct adm_client *cl)
{
	free(cl->out);
	json_decref(cl->conns);
	struct admin *ad = cl->ad;
	sodium_memzero(cl, sizeof(*cl));
	cl->ad = ad;
	cl->fd = -1;
}

/* Stops reading and closes the socket; the slot stays taken while an answer
 * is pending, so its completion finds a valid (closed) client. */
static void adm_client_close(struct admin *ad, struct adm_client *cl)
{
	if (cl->fd >= 0) {
		cpl_del_fd(ad->loop, cl->fd);
		close(cl->fd);
		cl->fd = -1;
	}
	if (!cl->busy)
		adm_client_release(cl);
}

/* Sends what the socket takes now; the timer retries the rest. */
static void adm_flush(struct admin *ad, struct adm_client *cl)
{
	if (cl->fd < 0)
		return;
	while (cl->outoff < cl->outlen) {
		ssize_t n = send(cl->fd, cl->out + cl->outoff, cl->outlen - cl->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			adm_client_close(ad, cl);
			return;
		}
		cl->outoff += (size_t)n;
		cl->out_since_ns = sluice_now_ns();
	}
	cl->outoff = cl->outlen = 0;
	if (cl->closing && !cl->busy)
		adm_client_close(ad, cl);
}

static bool adm_out_append(struct adm_client *cl, const char *data, size_t len)
{
	if (cl->outoff == cl->outlen)
		cl->outoff = cl->outlen = 0;
	size_t need = cl->outlen + len;
	if (need > ADM_OUT_MAX)
		return false;
	if (need > cl->outcap) {
		size_t cap = cl->outcap ? cl->outcap : 4096;
		while (cap < need)
			cap *= 2;
		if (cap > ADM_OUT_MAX)
			cap = ADM_OUT_MAX;
		char *p = realloc(cl->out, cap);
		if (!p)
			return false;
		cl->out = p;
		cl->outcap = cap;
	}
	if (cl->outlen == 0)
		cl->out_since_ns = sluice_now_ns();
	memcpy(cl->out + cl->outlen, data, len);
	cl->outlen += len;
	return true;
}

/* Queues obj (taking the reference) as one answer line. An answer that cannot
 * be built or queued closes the client: it must never see a truncated line. */
static void adm_send(struct adm_client *cl, json_t *obj)
{
	char *txt = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!txt || !adm_out_append(cl, txt, strlen(txt)) || !adm_out_append(cl, "\n", 1)) {
		LOG_WARN("admin: answer for a client could not be queued: closing it");
		free(txt);
		cl->closing = true;
		cl->outoff = cl->outlen = 0;
		return;
	}
	free(txt);
}

static json_t *adm_ok(void)
{
	return json_pack("{s:b}", "ok", 1);
}

static void adm_fail(struct admin *ad, struct adm_client *cl, const char *code, const char *msg)
{
	ad->n.errors++;
	adm_send(cl, json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code, "message", msg));
}

/* Store and hashing-pool errors as answer codes. */
static const char *adm_err_code(int err)
{
	switch (err) {
	case -EEXIST:
		return "exists";
	case -ENOENT:
		return "not_found";
	case -EINVAL:
		return "invalid_request";
	case -EBUSY:
		return "busy";
	case -ENOTSUP:
		return "not_supported";
	case -ENOSPC:
		return "no_space";
	default:
		return "internal";
	}
}

static void adm_fail_errno(struct admin *ad, struct adm_client *cl, int err, const char *what)
{
	char msg[CONF_PATH_MAX + 128];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(err < 0 ? -err : err));
	adm_fail(ad, cl, adm_err_code(err), msg);
}

/* An asynchronous answer arrived: send it and go on with queued requests, or
 * free the slot when the client hung up meanwhile. */
static void adm_async_done(struct admin *ad, struct adm_client *cl)
{
	cl->busy = false;
	cl->op = NULL;
	if (cl->fd < 0) {
		adm_client_release(cl);
		return;
	}
	adm_process(ad, cl);
	adm_arm(ad);
}

/* Call before submitting an asynchronous operation about target (NULL: none
 * yet): cl is busy, so its later requests wait, until adm_async_done. */
static void adm_async_begin(struct adm_client *cl, const char *target, const char *op)
{
	if (target)
		snprintf(cl->target, sizeof(cl->target), "%s", target);
	cl->op = op;
	cl->busy = true;
}

/* The submission returned rc. A refused one (rc < 0) will never call back, so
 * cl is free again and the error about `what` is the answer. */
static void adm_async_submitted(struct admin *ad, struct adm_client *cl, int rc, const char *what)
{
	if (rc >= 0)
		return;
	cl->busy = false;
	cl->op = NULL;
	adm_fail_errno(ad, cl, rc, what);
}

/* ---- request arguments --------------------------------------------------- */

static const char *adm_arg_str(json_t *req, const char *key)
{
	return json_string_value(json_object_get(req, key));
}

/* An optional unsigned argument: false when present and not an integer in [lo, hi]. */
static bool adm_arg_uint(json_t *req, const char *key, uint64_t lo, uint64_t hi, uint64_t *out)
{
	json_t *v = json_object_get(req, key);
	if (!v)
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < lo || (uint64_t)json_integer_value(v) > hi)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static bool adm_user_ok(const char *u)
{
	return u && auth_user_name_ok(u, strlen(u));
}

static bool adm_sid_ok(const char *sid)
{
	return sid && sid[0] && strlen(sid) < CHAN_ID_LEN;
}

/* ---- status, stats, workers ---------------------------------------------- */

static uint32_t adm_nworkers(const struct admin *ad)
{
	return ad->api->out->nworkers;
}

static uint32_t adm_reporting(const struct admin *ad)
{
	uint32_t n = 0;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++)
		n += ad->w[w].at_ns != 0;
	return n;
}

struct adm_count {
	uint64_t sessions;
	uint64_t running;
};

static void adm_count_session(struct idmap_node *n, void *arg)
{
	struct adm_count *c = arg;
	const struct chat_session *s = (const struct chat_session *)n;
	c->sessions++;
	c->running += s->ans.running;
}

static void cmd_status(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct adm_count c = { 0 };
	idmap_foreach(&ad->api->chat.sessions, adm_count_session, &c);
	uint32_t clients = 0;
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++)
		clients += ad->cl[i].fd >= 0;
	json_t *o = adm_ok();
	json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
	json_object_set_new(o, "uptime_ms",
			    json_integer((json_int_t)((sluice_now_ns() - ad->started_ns) / 1000000u)));
	json_object_set_new(o, "dataplane_attached", json_boolean(ad->loop->peer_alive));
	json_object_set_new(o, "dataplane_epoch", json_integer((json_int_t)ad->loop->peer_epoch));
	json_object_set_new(o, "workers", json_integer((json_int_t)adm_nworkers(ad)));
	json_object_set_new(o, "workers_reporting", json_integer((json_int_t)adm_reporting(ad)));
	json_object_set_new(o, "store", json_string(ad->conf->store));
	json_object_set_new(o, "sessions_in_memory", json_integer((json_int_t)c.sessions));
	json_object_set_new(o, "answers_running", json_integer((json_int_t)c.running));
	json_object_set_new(o, "admin_clients", json_integer((json_int_t)clients));
	adm_send(cl, o);
}

/* The worker counters by name, for stats (summed) and workers (each). */
static void adm_put_worker_counters(json_t *o, const struct chan_stats *s)
{
	const struct {
		const char *name;
		uint64_t v;
	} f[] = {
		{ "conns_active", s->conns_active }, { "conns_accepted", s->conns_accepted },
		{ "sse_active", s->sse_active },     { "ws_active", s->ws_active },
		{ "http_requests", s->http_requests }, { "tokens_out", s->tokens_out },
		{ "frames_out", s->frames_out },     { "bytes_out", s->bytes_out },
		{ "pending_bytes", s->pending_bytes }, { "chan_full", s->chan_full },
		{ "slow_consumer_closes", s->slow_consumer_closes },
		{ "loop_turns", s->loop_turns },     { "busy_turns", s->busy_turns },
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(f); i++)
		json_object_set_new(o, f[i].name, json_integer((json_int_t)f[i].v));
}

static void cmd_stats(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct chan_stats sum = { 0 };
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		const struct chan_stats *s = &ad->w[w].s;
		if (!ad->w[w].at_ns)
			continue;
		sum.conns_active += s->conns_active;
		sum.conns_accepted += s->conns_accepted;
		sum.sse_active += s->sse_active;
		sum.ws_active += s->ws_active;
		sum.http_requests += s->http_requests;
		sum.tokens_out += s->tokens_out;
		sum.frames_out += s->frames_out;
		sum.bytes_out += s->bytes_out;
		sum.pending_bytes += s->pending_bytes;
		sum.chan_full += s->chan_full;
		sum.slow_consumer_closes += s->slow_consumer_closes;
		sum.loop_turns += s->loop_turns;
		sum.busy_turns += s->busy_turns;
	}
	uint64_t deferred = 0, dropped = 0;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		deferred += ad->api->out->w[w].deferred;
		dropped += ad->api->out->w[w].dropped;
	}
	json_t *dp = json_object();
	json_t *cp = json_object();
	json_t *o = adm_ok();
	if (!dp || !cp || !o) {
		json_decref(dp);
		json_decref(cp);
		json_decref(o);
		adm_fail(ad, cl, "internal", "out of memory");
		return;
	}
	json_object_set_new(dp, "workers_reporting", json_integer((json_int_t)adm_reporting(ad)));
	adm_put_worker_counters(dp, &sum);
	const struct {
		const char *name;
		uint64_t v;
	} f[] = {
		{ "requests", ad->api->stats.requests },
		{ "invalid_records", ad->api->stats.invalid_records },
		{ "reply_drops", ad->api->stats.reply_drops },
		{ "tokens", ad->api->chat.stats.tokens },
		{ "sub_drops", ad->api->chat.stats.sub_drops },
		{ "overload_kicks", ad->api->chat.stats.overload_kicks },
		{ "kick_losses", ad->api->chat.stats.kick_losses },
		{ "stale_requests", ad->api->stats.stale_requests },
		{ "records_deferred", deferred },
		{ "records_dropped", dropped },
		{ "admin_requests", ad->n.requests },
		{ "admin_errors", ad->n.errors },
		{ "admin_clients", ad->n.clients },
		{ "admin_clients_refused", ad->n.clients_refused },
		{ "stats_records", ad->n.stats_records },
		{ "conns_records", ad->n.conns_records },
		{ "stale_records", ad->n.stale_records },
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(f); i++)
		json_object_set_new(cp, f[i].name, json_integer((json_int_t)f[i].v));
	json_object_set_new(o, "uptime_ms",
			    json_integer((json_int_t)((sluice_now_ns() - ad->started_ns) / 1000000u)));
	json_object_set_new(o, "dataplane", dp);
	json_object_set_new(o, "control", cp);
	adm_send(cl, o);
}

static void cmd_workers(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	json_t *arr = json_array();
	uint64_t now = sluice_now_ns();
	for (uint32_t w = 0; arr && w < adm_nworkers(ad); w++) {
		json_t *o = json_object();
		if (!o)
			break;
		json_object_set_new(o, "worker", json_integer((json_int_t)w));
		if (ad->w[w].at_ns) {
			json_object_set_new(o, "stats_age_ms",
					    json_integer((json_int_t)((now - ad->w[w].at_ns) / 1000000u)));
			json_object_set_new(o, "uptime_ms", json_integer((json_int_t)ad->w[w].s.uptime_ms));
			adm_put_worker_counters(o, &ad->w[w].s);
		} else {
			json_object_set_new(o, "stats_age_ms", json_null());
		}
		json_array_append_new(arr, o);
	}
	json_t *o = adm_ok();
	if (!o || !arr || json_array_size(arr) != adm_nworkers(ad)) {
		json_decref(o);
		json_decref(arr);
		adm_fail(ad, cl, "internal", "out of memory");
		return;
	}
	json_object_set_new(o, "workers", arr);
	adm_send(cl, o);
}

/* ---- conns ---------------------------------------------------------------- */

static void adm_conns_finish(struct admin *ad, struct adm_client *cl)
{
	json_t *missing = json_array();
	for (uint32_t w = 0; w < CHAN_MAX_WORKERS; w++) {
		if (cl->conns_wait[w])
			json_array_append_new(missing, json_integer((json_int_t)w));
		cl->conns_wait[w] = false;
	}
	cl->conns_req = 0;
	json_t *conns = cl->conns;
	cl->conns = NULL;
	if (cl->fd >= 0) {
		json_t *o = adm_ok();
		if (o && conns && missing) {
			json_object_set_new(o, "conns", conns);
			json_object_set_new(o, "missing_workers", missing);
			adm_send(cl, o);
		} else {
			json_decref(o);
			json_decref(conns);
			json_decref(missing);
			adm_fail(ad, cl, "internal", "out of memory");
		}
	} else {
		json_decref(conns);
		json_decref(missing);
	}
	adm_async_done(ad, cl);
}

static void cmd_conns(struct admin *ad, struct adm_client *cl, json_t *req)
{
	uint64_t only = UINT64_MAX;
	if (!adm_arg_uint(req, "worker", 0, adm_nworkers(ad) - 1, &only)) {
		adm_fail(ad, cl, "invalid_request", "worker must be a worker number");
		return;
	}
	if (!ad->loop->peer_alive) {
		adm_fail(ad, cl, "dataplane_unavailable", "no dataplane is attached");
		return;
	}
	cl->conns = json_array();
	if (!cl->conns) {
		adm_fail(ad, cl, "internal", "out of memory");
		return;
	}
	if (++ad->next_req == 0)
		ad->next_req = 1;
	cl->conns_req = ad->next_req;
	cl->conns_deadline_ns = sluice_now_ns() + ADM_CONNS_TIMEOUT_NS;
	cl->busy = true;
	bool asked = false;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		if (only != UINT64_MAX && w != only)
			continue;
		/* A worker whose ring and backlog are full is reported missing. */
		cl->conns_wait[w] = true;
		struct chan_admin *q = co_begin(ad->api->out, w, CHAN_REC_ADMIN, sizeof(*q));
		if (!q)
			continue;
		*q = (struct chan_admin){ .op = CHAN_ADMIN_LIST_CONNS, .req_id = cl->conns_req };
		co_end(ad->api->out, w, sizeof(*q));
		asked = true;
	}
	if (!asked)
		adm_conns_finish(ad, cl);
}

static const char *adm_mode_name(uint8_t mode)
{
	switch (mode) {
	case CHAN_CONN_SSE:
		return "sse";
	case CHAN_CONN_WS:
		return "ws";
	default:
		return "http";
	}
}

static void adm_conns_record(struct admin *ad, const struct chan_conns *c)
{
	struct adm_client *cl = NULL;
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS && c->req_id; i++)
		if (ad->cl[i].used && ad->cl[i].conns_req == c->req_id)
			cl = &ad->cl[i];
	if (!cl || c->worker >= CHAN_MAX_WORKERS || !cl->conns_wait[c->worker]) {
		ad->n.stale_records++;
		return;
	}
	const struct chan_conn_info *ci = (const struct chan_conn_info *)(c + 1);
	for (uint32_t i = 0; i < c->count; i++) {
		char ip[INET_ADDRSTRLEN];
		char peer[INET_ADDRSTRLEN + 8];
		struct in_addr a = { .s_addr = ci[i].peer_ipv4 };
		if (!inet_ntop(AF_INET, &a, ip, sizeof(ip)))
			snprintf(ip, sizeof(ip), "?");
		snprintf(peer, sizeof(peer), "%s:%u", ip, (unsigned)ci[i].peer_port);
		json_t *o = json_pack("{s:i,s:I,s:I,s:s,s:s,s:I,s:I,s:I,s:s?}",
				      "worker", (int)ci[i].conn.worker,
				      "slot", (json_int_t)ci[i].conn.slot,
				      "gen", (json_int_t)ci[i].conn.gen,
				      "peer", peer, "mode", adm_mode_name(ci[i].mode),
				      "age_ms", (json_int_t)ci[i].age_ms,
				      "bytes_out", (json_int_t)ci[i].bytes_out,
				      "pending_bytes", (json_int_t)ci[i].pending_bytes,
				      "session_id", ci[i].session_id[0] ? ci[i].session_id : NULL);
		if (!o || json_array_append_new(cl->conns, o) < 0) {
			LOG_WARN("admin: out of memory gathering connections");
			break;
		}
	}
	if (c->flags & CHAN_CONNS_LAST)
		cl->conns_wait[c->worker] = false;
	for (uint32_t w = 0; w < CHAN_MAX_WORKERS; w++)
		if (cl->conns_wait[w])
			return;
	adm_conns_finish(ad, cl);
}

/* ---- sessions ------------------------------------------------------------ */

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
	struct store *st = ad->api->st;
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
	struct store *st = ad->api->st;
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
	const struct chat_session *cs =
		(const struct chat_session *)idmap_find(&ad->api->chat.sessions, sid, strlen(sid));
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

/* Cancels the running answer (its subscribers get usage and done cancelled),
 * then asks every worker to close the session's subscribers with 1008. */
static void cmd_sessions_kill(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *sid = adm_arg_str(req, "id");
	if (!adm_sid_ok(sid)) {
		adm_fail(ad, cl, "invalid_request", "id must be a session id");
		return;
	}
	struct chat_session *s = chat_session_get(&ad->api->chat, sid, strlen(sid));
	if (!s) {
		adm_fail(ad, cl, "not_found", "no such session");
		return;
	}
	char mid[CHAN_ID_LEN] = "";
	bool cancelled = chat_cancel(&ad->api->chat, s, mid) == 0;
	uint32_t kicked = 0;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		struct chan_kick *k = co_begin(ad->api->out, w, CHAN_REC_KICK, sizeof(*k));
		if (!k)
			continue;
		memset(k, 0, sizeof(*k));
		k->conn.worker = (uint16_t)w;
		k->conn.slot = CHAN_SLOT_ALL;
		memcpy(k->session_id, s->node.id, CHAN_ID_LEN);
		k->code = 1008;
		snprintf(k->reason_code, sizeof(k->reason_code), "session_killed");
		snprintf(k->reason, sizeof(k->reason), "session killed by operator");
		co_end(ad->api->out, w, sizeof(*k));
		kicked++;
	}
	chat_event(&ad->api->chat, s->node.id, "killed", "by operator");
	LOG_INFO("admin: session %s killed by operator", s->node.id);
	json_t *o = adm_ok();
	json_object_set_new(o, "id", json_string(s->node.id));
	json_object_set_new(o, "cancelled_message_id", cancelled ? json_string(mid) : json_null());
	json_object_set_new(o, "workers_kicked", json_integer((json_int_t)kicked));
	adm_send(cl, o);
}

/* ---- users ----------------------------------------------------------------- */

static int adm_role(const char *r)
{
	if (!r)
		return -2;
	if (strcmp(r, "user") == 0)
		return STORE_USER_ROLE_USER;
	if (strcmp(r, "admin") == 0)
		return STORE_USER_ROLE_ADMIN;
	return -2;
}

static const char *adm_role_name(int role)
{
	return role == STORE_USER_ROLE_ADMIN ? "admin" : "user";
}

static void adm_user_written(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, cl->target);
		} else {
			json_t *o = adm_ok();
			json_object_set_new(o, "user", json_string(cl->target));
			json_object_set_new(o, "done", json_string(cl->op));
			adm_send(cl, o);
		}
	}
	if (!err) {
		LOG_INFO("admin: %s: %s", cl->target, cl->op);
		/* A new password ends the logins made with the old one. */
		if (strcmp(cl->op, "password changed") == 0)
			auth_revoke_user(ad->auth, cl->target);
	}
	adm_async_done(ad, cl);
}

/* users.add and users.passwd: the password (the line after the request) goes
 * to the hashing pool, which copies it; this copy is wiped by the caller. */
static void adm_set_password(struct admin *ad, struct adm_client *cl, json_t *req, const char *pw,
			     size_t pwlen, bool create)
{
	const char *name = adm_arg_str(req, "name");
	int role = -1;
	if (!adm_user_ok(name)) {
		adm_fail(ad, cl, "invalid_request", "name must match [A-Za-z0-9_.-]{1,63}");
		return;
	}
	if (create) {
		role = adm_role(adm_arg_str(req, "role"));
		if (role < 0) {
			adm_fail(ad, cl, "invalid_request", "role must be user or admin");
			return;
		}
	}
	if (pwlen == 0 || memchr(pw, 0, pwlen)) {
		adm_fail(ad, cl, "invalid_request", "the password is empty or holds a NUL byte");
		return;
	}
	if (!ad->auth || !ad->api->st->ops->user_put) {
		adm_fail(ad, cl, "not_supported", "this control keeps no users");
		return;
	}
	char buf[ADM_LINE_MAX];
	memcpy(buf, pw, pwlen);
	buf[pwlen] = 0;
	adm_async_begin(cl, name, create ? "user added" : "password changed");
	int rc = auth_set_password(ad->auth, name, buf, role, create, adm_user_written, cl);
	sodium_memzero(buf, sizeof(buf));
	adm_async_submitted(ad, cl, rc, name);
}

static void adm_user_deleted(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (!err) {
		/* Its logins die with it: sessions revoked, WebSockets closed 1008. */
		auth_revoke_user(ad->auth, cl->target);
		LOG_INFO("admin: user %s deleted", cl->target);
	}
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, cl->target);
		} else {
			json_t *o = adm_ok();
			json_object_set_new(o, "user", json_string(cl->target));
			json_object_set_new(o, "done", json_string("user deleted"));
			adm_send(cl, o);
		}
	}
	adm_async_done(ad, cl);
}

static void cmd_users_del(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->api->st;
	const char *name = adm_arg_str(req, "name");
	if (!adm_user_ok(name)) {
		adm_fail(ad, cl, "invalid_request", "name must match [A-Za-z0-9_.-]{1,63}");
		return;
	}
	if (!st->ops->user_del || !ad->auth) {
		adm_fail(ad, cl, "not_supported", "this control cannot delete users");
		return;
	}
	adm_async_begin(cl, name, NULL);
	adm_async_submitted(ad, cl, st->ops->user_del(st, name, adm_user_deleted, cl), name);
}

static void adm_each_user(void *arg, const struct store_user *u)
{
	json_t *arr = arg;
	json_array_append_new(arr, json_pack("{s:s,s:s,s:I}", "name", u->name, "role",
					     adm_role_name(u->role), "created_at",
					     (json_int_t)u->created_at));
}

static void cmd_users_list(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct store *st = ad->api->st;
	if (!st->ops->user_list) {
		adm_fail(ad, cl, "not_supported", "this store has no users");
		return;
	}
	json_t *arr = json_array();
	json_t *o = adm_ok();
	if (!arr || !o) {
		json_decref(arr);
		json_decref(o);
		adm_fail(ad, cl, "internal", "out of memory");
		return;
	}
	int rc = st->ops->user_list(st, adm_each_user, arr);
	if (rc < 0) {
		json_decref(arr);
		json_decref(o);
		adm_fail_errno(ad, cl, rc, "listing users");
		return;
	}
	json_object_set_new(o, "users", arr);
	adm_send(cl, o);
}

/* ---- API keys ------------------------------------------------------------ */

/* keys.create committed: the key (held in cl->target until now) is shown
 * this once, with the public id found again by its hash. */
static void adm_key_created(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (cl->fd >= 0) {
		struct store_apikey k;
		uint8_t h[STORE_HASH_LEN];
		auth_token_hash(ad->auth, cl->target, strlen(cl->target), h);
		if (!err)
			err = ad->api->st->ops->apikey_get(ad->api->st, h, &k);
		if (err) {
			adm_fail_errno(ad, cl, err, "creating the key");
		} else {
			json_t *o = adm_ok();
			json_object_set_new(o, "id", json_string(k.id));
			json_object_set_new(o, "user", json_string(k.owner));
			json_object_set_new(o, "label", json_string(k.label));
			json_object_set_new(o, "created_at", json_integer((json_int_t)k.created_at));
			json_object_set_new(o, "key", json_string(cl->target));
			adm_send(cl, o);
		}
	}
	if (!err)
		LOG_INFO("admin: API key created");
	sodium_memzero(cl->target, sizeof(cl->target));
	adm_async_done(ad, cl);
}

static void cmd_keys_create(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *user = adm_arg_str(req, "user");
	json_t *lv = json_object_get(req, "label");
	const char *label = lv ? json_string_value(lv) : "";
	if (!adm_user_ok(user) || !label) {
		adm_fail(ad, cl, "invalid_request", "user must be a user name and label a string");
		return;
	}
	if (!ad->auth || !ad->api->st->ops->apikey_put) {
		adm_fail(ad, cl, "not_supported", "this control keeps no API keys");
		return;
	}
	char key[64];
	adm_async_begin(cl, NULL, NULL);
	int rc = auth_apikey_create(ad->auth, user, label, key, adm_key_created, cl);
	adm_async_submitted(ad, cl, rc, rc == -EINVAL ? "label too long" : user);
	if (rc >= 0)
		snprintf(cl->target, sizeof(cl->target), "%s", key);
	sodium_memzero(key, sizeof(key));
}

static void adm_key_revoked(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (!err)
		LOG_INFO("admin: API key %s revoked", cl->target);
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, cl->target);
		} else {
			json_t *o = adm_ok();
			json_object_set_new(o, "id", json_string(cl->target));
			json_object_set_new(o, "done", json_string("key revoked"));
			adm_send(cl, o);
		}
	}
	adm_async_done(ad, cl);
}

static void cmd_keys_revoke(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *id = adm_arg_str(req, "id");
	if (!id || !id[0] || strlen(id) >= STORE_KEYID_MAX) {
		adm_fail(ad, cl, "invalid_request", "id must be a key id");
		return;
	}
	if (!ad->auth || !ad->api->st->ops->apikey_del) {
		adm_fail(ad, cl, "not_supported", "this control keeps no API keys");
		return;
	}
	adm_async_begin(cl, id, NULL);
	adm_async_submitted(ad, cl, auth_apikey_revoke(ad->auth, id, adm_key_revoked, cl), id);
}

static void adm_each_key(void *arg, const struct store_apikey *k)
{
	json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:I}", "id", k->id, "user", k->owner, "label",
					     k->label, "created_at", (json_int_t)k->created_at));
}

static void cmd_keys_list(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->api->st;
	const char *user = adm_arg_str(req, "user");
	if (json_object_get(req, "user") && !adm_user_ok(user)) {
		adm_fail(ad, cl, "invalid_request", "user must be a user name");
		return;
	}
	if (!st->ops->apikey_list) {
		adm_fail(ad, cl, "not_supported", "this store keeps no API keys");
		return;
	}
	json_t *arr = json_array();
	json_t *o = adm_ok();
	int rc = arr && o ? st->ops->apikey_list(st, user, adm_each_key, arr) : -ENOMEM;
	if (rc < 0) {
		json_decref(arr);
		json_decref(o);
		adm_fail_errno(ad, cl, rc, "listing keys");
		return;
	}
	json_object_set_new(o, "keys", arr);
	adm_send(cl, o);
}

/* ---- store ----------------------------------------------------------------- */

static void cmd_store_stats(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct store *st = ad->api->st;
	struct store_stats s;
	memset(&s, 0, sizeof(s));
	if (!st->ops->stats) {
		adm_fail(ad, cl, "not_supported", "this store keeps no statistics");
		return;
	}
	int rc = st->ops->stats(st, &s);
	if (rc < 0) {
		adm_fail_errno(ad, cl, rc, "store statistics");
		return;
	}
	json_t *o = adm_ok();
	json_object_set_new(o, "path", json_string(ad->conf->store));
	const struct {
		const char *name;
		uint64_t v;
	} f[] = {
		{ "schema_version", s.schema_version }, { "map_size", s.map_size },
		{ "map_used", s.map_used },             { "users", s.users },
		{ "sessions", s.sessions },             { "messages", s.messages },
		{ "tokens", s.tokens },                 { "events", s.events },
		{ "auth_sessions", s.auth_sessions },   { "api_keys", s.api_keys },
		{ "commits", s.commits },               { "commit_batches", s.commit_batches },
		{ "last_commit_ns", s.last_commit_ns },
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(f); i++)
		json_object_set_new(o, f[i].name, json_integer((json_int_t)f[i].v));
	adm_send(cl, o);
}

static void adm_backup_done(void *arg, int err)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (err)
		LOG_WARN("admin: store backup to %s failed: %s", cl->target, strerror(-err));
	else
		LOG_INFO("admin: store backed up to %s", cl->target);
	if (cl->fd >= 0) {
		if (err) {
			adm_fail_errno(ad, cl, err, cl->target);
		} else {
			char data[CONF_PATH_MAX + 16];
			struct stat sb;
			snprintf(data, sizeof(data), "%s/data.mdb", cl->target);
			json_t *o = adm_ok();
			json_object_set_new(o, "path", json_string(cl->target));
			json_object_set_new(o, "bytes", stat(data, &sb) == 0 ?
					    json_integer((json_int_t)sb.st_size) : json_null());
			adm_send(cl, o);
		}
	}
	adm_async_done(ad, cl);
}

static void cmd_store_backup(struct admin *ad, struct adm_client *cl, json_t *req)
{
	struct store *st = ad->api->st;
	const char *path = adm_arg_str(req, "path");
	if (!path || path[0] != '/' || strlen(path) >= sizeof(cl->target) - 16) {
		adm_fail(ad, cl, "invalid_request", "path must be an absolute directory path");
		return;
	}
	if (!st->ops->backup) {
		adm_fail(ad, cl, "not_supported", "this store cannot be backed up");
		return;
	}
	adm_async_begin(cl, path, NULL);
	adm_async_submitted(ad, cl, st->ops->backup(st, path, adm_backup_done, cl), path);
}

/* ---- requests ------------------------------------------------------------- */

struct adm_cmd {
	const char *name;
	void (*fn)(struct admin *ad, struct adm_client *cl, json_t *req);
};

static const struct adm_cmd adm_cmds[] = {
	{ "status", cmd_status },
	{ "stats", cmd_stats },
	{ "workers", cmd_workers },
	{ "conns", cmd_conns },
	{ "sessions.list", cmd_sessions_list },
	{ "sessions.show", cmd_sessions_show },
	{ "sessions.kill", cmd_sessions_kill },
	{ "users.del", cmd_users_del },
	{ "users.list", cmd_users_list },
	{ "keys.create", cmd_keys_create },
	{ "keys.revoke", cmd_keys_revoke },
	{ "keys.list", cmd_keys_list },
	{ "store.stats", cmd_store_stats },
	{ "store.backup", cmd_store_backup },
};

/* Drops n bytes from the front of the input and wipes what moved, since the
 * input may have held a password. */
static void adm_consume(struct adm_client *cl, size_t n)
{
	memmove(cl->in, cl->in + n, cl->inlen - n);
	sodium_memzero(cl->in + cl->inlen - n, n);
	cl->inlen -= n;
}

/* Handles one complete request at the front of the input. Returns false when
 * it needs more input (the password line has not arrived yet). */
static bool adm_handle(struct admin *ad, struct adm_client *cl, size_t nl)
{
	json_error_t jerr;
	json_t *req = json_loadb(cl->in, nl, 0, &jerr);
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	bool pw_add = cmd && strcmp(cmd, "users.add") == 0;
	bool pw_set = cmd && strcmp(cmd, "users.passwd") == 0;
	if (pw_add || pw_set) {
		char *end = memchr(cl->in + nl + 1, '\n', cl->inlen - nl - 1);
		if (!end) {
			json_decref(req);
			return false;
		}
		size_t pwlen = (size_t)(end - (cl->in + nl + 1));
		ad->n.requests++;
		adm_set_password(ad, cl, req, cl->in + nl + 1, pwlen, pw_add);
		json_decref(req);
		adm_consume(cl, (size_t)(end - cl->in) + 1);
		return true;
	}
	ad->n.requests++;
	if (!json_is_object(req)) {
		adm_fail(ad, cl, "invalid_json", "a request is one JSON object per line");
	} else if (!cmd) {
		adm_fail(ad, cl, "invalid_request", "the request has no cmd");
	} else {
		size_t i = 0;
		while (i < SLUICE_ARRAY_LEN(adm_cmds) && strcmp(adm_cmds[i].name, cmd) != 0)
			i++;
		if (i < SLUICE_ARRAY_LEN(adm_cmds))
			adm_cmds[i].fn(ad, cl, req);
		else
			adm_fail(ad, cl, "unknown_command", "no such command");
	}
	json_decref(req);
	adm_consume(cl, nl + 1);
	return true;
}

static void adm_process(struct admin *ad, struct adm_client *cl)
{
	while (cl->fd >= 0 && !cl->busy && !cl->closing) {
		char *nl = memchr(cl->in, '\n', cl->inlen);
		if (!nl || !adm_handle(ad, cl, (size_t)(nl - cl->in)))
			break;
	}
	if (cl->fd >= 0 && !cl->closing && cl->inlen == sizeof(cl->in) && !cl->busy) {
		adm_fail(ad, cl, "request_too_large", "a request line is longer than 4096 bytes");
		cl->closing = true;
	}
	/* After a half-close, the requests before it are still answered. */
	if (cl->eof && !cl->busy)
		cl->closing = true;
	if (cl->closing && cl->fd >= 0)
		cpl_del_fd(ad->loop, cl->fd);
	adm_flush(ad, cl);
}

static void adm_client_readable(void *arg)
{
	struct adm_client *cl = arg;
	struct admin *ad = cl->ad;
	if (cl->fd < 0 || cl->closing)
		return;
	if (cl->inlen == sizeof(cl->in)) {
		/* Full while a request is pending: a client may not queue more
		 * than one line's worth behind it. */
		adm_fail(ad, cl, "request_too_large", "too many bytes queued behind a pending request");
		cl->closing = true;
		cpl_del_fd(ad->loop, cl->fd);
		adm_flush(ad, cl);
		adm_arm(ad);
		return;
	}
	ssize_t n = recv(cl->fd, cl->in + cl->inlen, sizeof(cl->in) - cl->inlen, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n < 0) {
		adm_client_close(ad, cl);
		return;
	}
	if (n == 0) {
		cl->eof = true;
		cpl_del_fd(ad->loop, cl->fd);
	}
	cl->inlen += (size_t)n;
	adm_process(ad, cl);
	adm_arm(ad);
}

static void adm_accept(void *arg)
{
	struct admin *ad = arg;
	for (;;) {
		int fd = accept4(ad->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				LOG_WARN("admin: accept: %s", strerror(errno));
			return;
		}
		struct adm_client *cl = NULL;
		for (uint32_t i = 0; i < ADM_MAX_CLIENTS && !cl; i++)
			if (!ad->cl[i].used)
				cl = &ad->cl[i];
		if (!cl || cpl_add_fd(ad->loop, fd, adm_client_readable, cl) < 0) {
			static const char busy[] =
				"{\"ok\":false,\"error\":{\"code\":\"busy\",\"message\":\"too many admin clients\"}}\n";
			ad->n.clients_refused++;
			if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				LOG_DEBUG("admin: refusing a client: %s", strerror(errno));
			close(fd);
			continue;
		}
		cl->used = true;
		cl->fd = fd;
		ad->n.clients++;
	}
}

/* ---- timer: conns deadlines, write retries -------------------------------- */

static void adm_arm(struct admin *ad)
{
	uint64_t next = UINT64_MAX;
	uint64_t now = sluice_now_ns();
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		const struct adm_client *cl = &ad->cl[i];
		if (!cl->used)
			continue;
		if (cl->conns_req && cl->conns_deadline_ns < next)
			next = cl->conns_deadline_ns;
		if (cl->fd >= 0 && cl->outoff < cl->outlen && now + ADM_WRITE_RETRY_NS < next)
			next = now + ADM_WRITE_RETRY_NS;
	}
	struct itimerspec its = { 0 };
	if (ad->tfd < 0)
		return;
	if (next != UINT64_MAX) {
		its.it_value.tv_sec = (time_t)(next / 1000000000ull);
		its.it_value.tv_nsec = (long)(next % 1000000000ull);
	}
	if (timerfd_settime(ad->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		LOG_ERROR("admin: timerfd_settime: %s", strerror(errno));
}

static void adm_timer(void *arg)
{
	struct admin *ad = arg;
	uint64_t exp;
	if (read(ad->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
		LOG_ERROR("admin: timerfd read: %s", strerror(errno));
	uint64_t now = sluice_now_ns();
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		struct adm_client *cl = &ad->cl[i];
		if (!cl->used)
			continue;
		if (cl->conns_req && now >= cl->conns_deadline_ns)
			adm_conns_finish(ad, cl);
		if (!cl->used || cl->fd < 0 || cl->outoff == cl->outlen)
			continue;
		if (now - cl->out_since_ns > ADM_WRITE_STALL_NS) {
			LOG_WARN("admin: a client read nothing for %llu s: dropping it",
				 (unsigned long long)(ADM_WRITE_STALL_NS / 1000000000ull));
			adm_client_close(ad, cl);
			continue;
		}
		adm_flush(ad, cl);
	}
	adm_arm(ad);
}

/* ---- records from the dataplane ------------------------------------------ */

void admin_record(struct admin *ad, uint16_t type, const void *payload, uint32_t len)
{
	(void)len;
	if (type == CHAN_REC_STATS) {
		const struct chan_stats *s = payload;
		if (s->worker >= adm_nworkers(ad)) {
			ad->n.stale_records++;
			return;
		}
		ad->n.stats_records++;
		ad->w[s->worker].s = *s;
		ad->w[s->worker].at_ns = sluice_now_ns();
		return;
	}
	if (type == CHAN_REC_CONNS) {
		ad->n.conns_records++;
		adm_conns_record(ad, payload);
		adm_arm(ad);
	}
}

/* ---- the socket ------------------------------------------------------------ */

/* A socket file left by a crashed control is removed; one that answers
 * belongs to a running control, and anything else is not ours to delete. */
static int adm_clear_stale(const struct sockaddr_un *sa, char *err, size_t errlen)
{
	struct stat sb;
	if (lstat(sa->sun_path, &sb) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "admin socket %s: %s", sa->sun_path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(sb.st_mode)) {
		snprintf(err, errlen, "admin socket %s exists and is not a socket", sa->sun_path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(fd);
	if (rc == 0 || e == EAGAIN) {
		snprintf(err, errlen, "admin socket %s: another control answers on it", sa->sun_path);
		return -1;
	}
	if (e != ECONNREFUSED) {
		snprintf(err, errlen, "admin socket %s: %s", sa->sun_path, strerror(e));
		return -1;
	}
	if (unlink(sa->sun_path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "removing stale admin socket %s: %s", sa->sun_path, strerror(errno));
		return -1;
	}
	LOG_INFO("admin: removed the stale socket %s", sa->sun_path);
	return 0;
}

/* Owner and group from the configuration; -1 leaves one unchanged. */
static int adm_owner(const struct sluice_conf *conf, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
	char buf[16384];
	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (conf->admin_socket_owner[0]) {
		struct passwd pw, *res = NULL;
		int rc = getpwnam_r(conf->admin_socket_owner, &pw, buf, sizeof(buf), &res);
		if (rc || !res) {
			snprintf(err, errlen, "admin_socket_owner %s: %s", conf->admin_socket_owner,
				 rc ? strerror(rc) : "no such user");
			return -1;
		}
		*uid = pw.pw_uid;
	}
	if (conf->admin_socket_group[0]) {
		struct group gr, *res = NULL;
		int rc = getgrnam_r(conf->admin_socket_group, &gr, buf, sizeof(buf), &res);
		if (rc || !res) {
			snprintf(err, errlen, "admin_socket_group %s: %s", conf->admin_socket_group,
				 rc ? strerror(rc) : "no such group");
			return -1;
		}
		*gid = gr.gr_gid;
	}
	return 0;
}

static int adm_listen(struct admin *ad, char *err, size_t errlen)
{
	const char *path = ad->conf->admin_socket;
	mode_t mode = (mode_t)(ad->conf->admin_socket_mode & 07777);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen = strlen(path);
	bool bound = false;
	uid_t uid;
	gid_t gid;
	if (plen == 0 || plen >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "admin socket path %s is empty or too long", path);
		return -1;
	}
	memcpy(sa.sun_path, path, plen + 1);
	if (adm_owner(ad->conf, &uid, &gid, err, errlen) < 0 || adm_clear_stale(&sa, err, errlen) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* Linux gives the node bind creates the socket inode's mode less the
	 * umask: it never exists with more than `mode`. The chmod after bind only
	 * adds back bits the umask took. */
	if (fchmod(fd, mode) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	bound = true;
	struct stat sb;
	if (chmod(path, mode) < 0 || (uid != (uid_t)-1 || gid != (gid_t)-1 ? chown(path, uid, gid) : 0) < 0 ||
	    lstat(path, &sb) < 0 || listen(fd, ADM_MAX_CLIENTS) < 0)
		goto fail;
	ad->sock_dev = sb.st_dev;
	ad->sock_ino = sb.st_ino;
	ad->lfd = fd;
	return 0;
fail:
	snprintf(err, errlen, "admin socket %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	if (bound)
		unlink(path);
	return -1;
}

int admin_init(struct admin *ad, const struct sluice_conf *conf, struct cp_loop *loop,
	       struct api *api, struct auth *auth, char *err, size_t errlen)
{
	memset(ad, 0, sizeof(*ad));
	ad->conf = conf;
	ad->loop = loop;
	ad->api = api;
	ad->auth = auth;
	ad->lfd = ad->tfd = -1;
	ad->started_ns = sluice_now_ns();
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		ad->cl[i].ad = ad;
		ad->cl[i].fd = -1;
	}
	ad->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (ad->tfd < 0) {
		snprintf(err, errlen, "timerfd: %s", strerror(errno));
		goto fail;
	}
	if (adm_listen(ad, err, errlen) < 0)
		goto fail;
	if (cpl_add_fd(loop, ad->lfd, adm_accept, ad) < 0) {
		snprintf(err, errlen, "admin socket: the control loop watches too many fds");
		goto fail;
	}
	if (cpl_add_fd(loop, ad->tfd, adm_timer, ad) < 0) {
		cpl_del_fd(loop, ad->lfd);
		snprintf(err, errlen, "admin timer: the control loop watches too many fds");
		goto fail;
	}
	LOG_INFO("admin socket %s (mode %04o)", conf->admin_socket, (unsigned)(conf->admin_socket_mode & 07777));
	return 0;
fail:
	admin_free(ad);
	return -1;
}

void admin_free(struct admin *ad)
{
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++) {
		struct adm_client *cl = &ad->cl[i];
		if (!cl->used)
			continue;
		cl->busy = false;
		adm_client_close(ad, cl);
	}
	if (ad->tfd >= 0) {
		cpl_del_fd(ad->loop, ad->tfd);
		close(ad->tfd);
		ad->tfd = -1;
	}
	if (ad->lfd >= 0) {
		cpl_del_fd(ad->loop, ad->lfd);
		close(ad->lfd);
		ad->lfd = -1;
		struct stat sb;
		if (lstat(ad->conf->admin_socket, &sb) == 0 && sb.st_dev == ad->sock_dev &&
		    sb.st_ino == ad->sock_ino)
			unlink(ad->conf->admin_socket);
	}
}
