/*
 * The operator dashboard's sockets: /ws/admin (an api WebSocket endpoint,
 * admin role only) and its HTTP fallback under /api/admin/ (docs/api.md).
 *
 * A client picks topics (metrics, session_events, alerts, heartbeat) and
 * its metrics period, and may change both at any time. Events come from the
 * control plane's bus the moment they are published and are pushed as
 * BROADCAST records (one per client; operators are few); snapshots and
 * heartbeats run on one loop timer. A client whose worker cannot take a
 * message (ring and backlog full) is closed with 1013; one that stops
 * reading is closed by its worker (BROADCAST max_pending, 1008
 * slow_consumer). A client whose user lost the admin role is closed with
 * 1008 at the next message or tick; a revoked login closes it through auth
 * like any WebSocket.
 *
 * The last ADM_WS_EVENTS events are kept, numbered, so the HTTP fallback
 * (GET /api/admin/events?after=N) shows what a page missed while its socket
 * was down.
 */
#include "admin/admin_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "sluice/log.h"

static const struct {
	const char *name;
	uint32_t bit;
} adm_topics[] = {
	{ "metrics", ADM_TOPIC_METRICS },
	{ "session_events", ADM_TOPIC_SESSION },
	{ "alerts", ADM_TOPIC_ALERTS },
	{ "heartbeat", ADM_TOPIC_HEARTBEAT },
};

static double adm_ws_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool adm_conn_eq(struct chan_conn a, struct chan_conn b)
{
	return a.worker == b.worker && a.slot == b.slot && a.gen == b.gen;
}

static struct adm_ws_client *adm_ws_find(struct admin *ad, struct chan_conn conn)
{
	for (uint32_t i = 0; i < ADM_WS_MAX; i++)
		if (ad->dash.cl[i].used && adm_conn_eq(ad->dash.cl[i].conn, conn))
			return &ad->dash.cl[i];
	return NULL;
}

static json_t *adm_topics_json(uint32_t topics)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < SLUICE_ARRAY_LEN(adm_topics); i++)
		if (topics & adm_topics[i].bit)
			json_array_append_new(arr, json_string(adm_topics[i].name));
	return arr;
}

/* ---- closing a client ------------------------------------------------------------ */

/* A KICK for one conn: its worker closes it with code and reason. */
static void adm_ws_kick(struct admin *ad, struct chan_conn conn, uint16_t code, const char *reason_code,
			const char *reason)
{
	struct chan_kick *k = co_begin(ad->d.out, conn.worker, CHAN_REC_KICK, sizeof(*k));
	if (!k) {
		LOG_WARN("admin: closing an admin socket on worker %u: channel full", conn.worker);
		return;
	}
	memset(k, 0, sizeof(*k));
	k->conn = conn;
	k->code = code;
	snprintf(k->reason_code, sizeof(k->reason_code), "%s", reason_code);
	snprintf(k->reason, sizeof(k->reason), "%s", reason);
	co_end(ad->d.out, conn.worker, sizeof(*k));
}

static void adm_ws_drop(struct admin *ad, struct adm_ws_client *cl, uint16_t code, const char *reason_code,
			const char *reason)
{
	adm_ws_kick(ad, cl->conn, code, reason_code, reason);
	LOG_INFO("admin: admin socket of %s closed: %s", cl->user, reason);
	memset(cl, 0, sizeof(*cl));
}

/* False (and the client closed 1013) when its worker could take nothing more. */
static bool adm_ws_push(struct admin *ad, struct adm_ws_client *cl, const char *text, size_t len)
{
	if (co_broadcast(ad->d.out, cl->conn, ad->d.conf->dash_max_pending, text, len)) {
		ad->dash.sends++;
		return true;
	}
	ad->dash.send_drops++;
	adm_ws_drop(ad, cl, 1013, "overloaded", "events could not be queued for this socket");
	return false;
}

static void adm_ws_push_json(struct admin *ad, struct adm_ws_client *cl, json_t *o)
{
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!txt) {
		LOG_ERROR("admin: out of memory building a dashboard message");
		return;
	}
	adm_ws_push(ad, cl, txt, strlen(txt));
	free(txt);
}

/* The user still exists as the same user and is still an admin. */
static bool adm_ws_role_ok(struct admin *ad, const struct adm_ws_client *cl)
{
	struct store_user u;
	if (ad->d.st->ops->user_get(ad->d.st, cl->user, &u) < 0)
		return false;
	bool ok = u.uid == cl->uid && u.role == STORE_USER_ROLE_ADMIN;
	sodium_memzero(&u, sizeof(u));
	return ok;
}

static void adm_ws_role_lost(struct admin *ad, struct adm_ws_client *cl)
{
	adm_ws_drop(ad, cl, 1008, "forbidden", "the admin role is required");
}

/* ---- the timer: snapshots, heartbeats, role checks ---------------------------------- */

static void adm_ws_arm(struct admin *ad)
{
	struct adm_dash *d = &ad->dash;
	uint64_t next = UINT64_MAX;
	bool any = false;
	for (uint32_t i = 0; i < ADM_WS_MAX; i++) {
		const struct adm_ws_client *cl = &d->cl[i];
		if (!cl->used)
			continue;
		any = true;
		if ((cl->topics & ADM_TOPIC_METRICS) && cl->next_metrics_ns < next)
			next = cl->next_metrics_ns;
	}
	if (!any) {
		cpl_timer_cancel(ad->d.loop, &d->timer);
		return;
	}
	if (d->next_heartbeat_ns < next)
		next = d->next_heartbeat_ns;
	cpl_timer_arm(ad->d.loop, &d->timer, next);
}

static char *adm_ws_snapshot_text(struct admin *ad)
{
	json_t *o = adm_metrics_snapshot(ad);
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!txt)
		LOG_ERROR("admin: out of memory building a metrics snapshot");
	return txt;
}

static void adm_ws_timer(void *arg, uint64_t now)
{
	struct admin *ad = arg;
	struct adm_dash *d = &ad->dash;
	char *snap = NULL;
	bool beat = now >= d->next_heartbeat_ns;
	char hb[128];
	int hbn = snprintf(hb, sizeof(hb), "{\"type\":\"heartbeat\",\"ts\":%.3f,\"seq\":%llu}", adm_ws_wall(),
			   (unsigned long long)d->seq);
	for (uint32_t i = 0; i < ADM_WS_MAX; i++) {
		struct adm_ws_client *cl = &d->cl[i];
		if (!cl->used)
			continue;
		if (!adm_ws_role_ok(ad, cl)) {
			adm_ws_role_lost(ad, cl);
			continue;
		}
		if ((cl->topics & ADM_TOPIC_METRICS) && cl->next_metrics_ns <= now) {
			if (!snap)
				snap = adm_ws_snapshot_text(ad);
			if (snap && !adm_ws_push(ad, cl, snap, strlen(snap)))
				continue;
			cl->next_metrics_ns += (uint64_t)cl->interval_ms * 1000000u;
			if (cl->next_metrics_ns <= now)
				cl->next_metrics_ns = now + (uint64_t)cl->interval_ms * 1000000u;
		}
		if (beat && (cl->topics & ADM_TOPIC_HEARTBEAT) && hbn > 0 && (size_t)hbn < sizeof(hb))
			adm_ws_push(ad, cl, hb, (size_t)hbn);
	}
	free(snap);
	if (beat)
		d->next_heartbeat_ns = now + (uint64_t)ad->d.conf->dash_heartbeat_ms * 1000000u;
	adm_ws_arm(ad);
}

/* ---- events ---------------------------------------------------------------------------- */

/* How an event changed a count the dashboard shows: conversations in the
 * store, answers running, login sessions. Publishers run after the change,
 * so the count read now is the "to" side. */
static void adm_ev_change(struct admin *ad, struct adm_ev *r)
{
	struct store_stats ss;
	enum ev_kind k = r->e.kind;
	bool st = (k == EV_CREATED || k == EV_DELETED || k == EV_LOGIN || k == EV_LOGOUT) &&
		  ad->d.st->ops->stats && ad->d.st->ops->stats(ad->d.st, &ss) == 0;
	r->what = NULL;
	switch (k) {
	case EV_CREATED:
	case EV_DELETED:
		if (!st)
			return;
		r->what = "conversations";
		r->to = (int64_t)ss.sessions;
		r->from = k == EV_CREATED ? r->to - 1 : r->to + 1;
		break;
	case EV_LOGIN:
	case EV_LOGOUT:
		if (!st)
			return;
		r->what = "login_sessions";
		r->to = (int64_t)ss.auth_sessions;
		r->from = k == EV_LOGIN ? r->to - 1 : r->to + 1;
		break;
	case EV_ANSWER_STARTED:
	case EV_ANSWER_ENDED:
		r->what = "answers_running";
		r->to = (int64_t)ad->d.chat->running;
		r->from = k == EV_ANSWER_STARTED ? r->to - 1 : r->to + 1;
		break;
	default:
		return;
	}
	if (r->from < 0)
		r->from = 0;
}

/* Copies v into r->text at *off; NULL stays NULL. A string longer than
 * what is left is cut (the bus's strings are names, ids and short texts,
 * far below ADM_EV_TEXT together). */
static const char *adm_ev_str(struct adm_ev *r, size_t *off, const char *v)
{
	if (!v)
		return NULL;
	size_t room = sizeof(r->text) - *off;
	if (!room)
		return "";
	char *dst = r->text + *off;
	size_t n = strnlen(v, room - 1);
	memcpy(dst, v, n);
	dst[n] = '\0';
	*off += n + 1;
	return dst;
}

static void adm_ev_keep(struct admin *ad, struct adm_ev *r, const struct ev *e, uint64_t seq)
{
	size_t off = 0;
	r->seq = seq;
	r->ts = adm_ws_wall();
	r->e = (struct ev){ .kind = e->kind };
	r->e.user = adm_ev_str(r, &off, e->user);
	r->e.session_id = adm_ev_str(r, &off, e->session_id);
	r->e.message_id = adm_ev_str(r, &off, e->message_id);
	r->e.status = adm_ev_str(r, &off, e->status);
	r->e.reason = adm_ev_str(r, &off, e->reason);
	r->e.role = adm_ev_str(r, &off, e->role);
	if (e->kind == EV_ALERT) {
		const struct ev_alert *a = &e->alert;
		r->e.alert = (struct ev_alert){ .raised = a->raised, .value = a->value, .limit = a->limit };
		r->e.alert.name = adm_ev_str(r, &off, a->name);
		r->e.alert.subject = adm_ev_str(r, &off, a->subject);
		r->e.alert.level = adm_ev_str(r, &off, a->level);
		r->e.alert.message = adm_ev_str(r, &off, a->message);
	}
	adm_ev_change(ad, r);
}

static void adm_set_str(json_t *o, const char *key, const char *v)
{
	if (v)
		json_object_set_new(o, key, json_string(v));
}

/* The event's JSON (a new reference), NULL when out of memory. */
static json_t *adm_ev_json(const struct adm_ev *r)
{
	const struct ev *e = &r->e;
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (e->kind == EV_ALERT) {
		const struct ev_alert *a = &e->alert;
		json_object_set_new(o, "type", json_string("alert"));
		json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
		json_object_set_new(o, "ts", json_real(r->ts));
		adm_set_str(o, "alert", a->name);
		json_object_set_new(o, "subject", json_string(a->subject ? a->subject : ""));
		adm_set_str(o, "level", a->level ? a->level : "warning");
		json_object_set_new(o, "state", json_string(a->raised ? "raised" : "cleared"));
		json_object_set_new(o, "value", json_real(a->value));
		json_object_set_new(o, "limit", json_real(a->limit));
		adm_set_str(o, "message", a->message ? a->message : "");
		return o;
	}
	json_object_set_new(o, "type", json_string("session_event"));
	json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
	json_object_set_new(o, "ts", json_real(r->ts));
	json_object_set_new(o, "kind", json_string(ev_kind_name(e->kind)));
	adm_set_str(o, "user", e->user);
	adm_set_str(o, "session_id", e->session_id);
	adm_set_str(o, "message_id", e->message_id);
	adm_set_str(o, "status", e->status);
	adm_set_str(o, "reason", e->reason);
	adm_set_str(o, "role", e->role);
	if (r->what)
		json_object_set_new(o, "change", json_pack("{s:s,s:I,s:I}", "what", r->what, "from",
							   (json_int_t)r->from, "to", (json_int_t)r->to));
	return o;
}

/* Every event of the bus: numbered, kept for the fallback, pushed to the
 * clients that chose its topic. With none, no JSON is built: at a thousand
 * prompts a second that was a third of control's work per prompt. */
static void adm_ws_on_event(void *arg, const struct ev *e)
{
	struct admin *ad = arg;
	struct adm_dash *d = &ad->dash;
	if (e->kind == EV_ALERT)
		adm_alerts_track(ad, &e->alert);
	struct adm_ev *r = &d->events[++d->seq % ADM_WS_EVENTS];
	adm_ev_keep(ad, r, e, d->seq);
	uint32_t topic = e->kind == EV_ALERT ? ADM_TOPIC_ALERTS : ADM_TOPIC_SESSION;
	bool wanted = false;
	for (uint32_t i = 0; i < ADM_WS_MAX && !wanted; i++)
		wanted = d->cl[i].used && (d->cl[i].topics & topic);
	if (!wanted)
		return;
	json_t *o = adm_ev_json(r);
	char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!txt) {
		LOG_ERROR("admin: out of memory sending a dashboard event");
		return;
	}
	size_t len = strlen(txt);
	for (uint32_t i = 0; i < ADM_WS_MAX; i++) {
		struct adm_ws_client *cl = &d->cl[i];
		if (cl->used && (cl->topics & topic))
			adm_ws_push(ad, cl, txt, len);
	}
	free(txt);
}

/* ---- the endpoint ------------------------------------------------------------------------ */

static void adm_ws_opened(void *arg, struct chan_conn conn, const struct auth_ident *id)
{
	struct admin *ad = arg;
	struct adm_dash *d = &ad->dash;
	/* A conn authorised again (control restart) starts afresh in its slot. */
	struct adm_ws_client *cl = adm_ws_find(ad, conn);
	if (cl)
		memset(cl, 0, sizeof(*cl));
	for (uint32_t i = 0; i < ADM_WS_MAX && !cl; i++)
		if (!d->cl[i].used)
			cl = &d->cl[i];
	if (!cl) {
		adm_ws_kick(ad, conn, 1013, "overloaded", "too many admin sockets open");
		return;
	}
	bool first = true;
	for (uint32_t i = 0; i < ADM_WS_MAX; i++)
		first = first && !d->cl[i].used;
	memset(cl, 0, sizeof(*cl));
	cl->used = true;
	cl->conn = conn;
	memcpy(cl->user, id->user, sizeof(cl->user));
	cl->uid = id->uid;
	cl->interval_ms = 5000;
	if (first)
		d->next_heartbeat_ns = cpl_now(ad->d.loop) + (uint64_t)ad->d.conf->dash_heartbeat_ms * 1000000u;
	json_t *o = json_pack("{s:s,s:s,s:I,s:[ssss],s:[ii],s:I}", "type", "hello", "user", cl->user,
			      "heartbeat_ms", (json_int_t)ad->d.conf->dash_heartbeat_ms, "topics", "metrics",
			      "session_events", "alerts", "heartbeat", "interval_bounds_s",
			      ADM_WS_MIN_INTERVAL_MS / 1000, ADM_WS_MAX_INTERVAL_MS / 1000, "events_seq",
			      (json_int_t)d->seq);
	adm_ws_push_json(ad, cl, o);
	adm_ws_arm(ad);
}

static void adm_ws_closed(void *arg, struct chan_conn conn)
{
	struct admin *ad = arg;
	struct adm_ws_client *cl = adm_ws_find(ad, conn);
	if (!cl)
		return;
	memset(cl, 0, sizeof(*cl));
	adm_ws_arm(ad);
}

/* A reply to the client's message, echoing its "id". */
static void adm_ws_reply(struct api *a, const struct api_call *c, json_t *req, json_t *o)
{
	json_t *id = json_object_get(req, "id");
	if (o && id)
		json_object_set(o, "id", id);
	api_reply_json(a, c->r, 200, o);
}

/* topics: a list of names; false when one is unknown. */
static bool adm_ws_topics(json_t *arr, uint32_t *out)
{
	uint32_t t = 0;
	size_t i;
	json_t *v;
	if (!json_is_array(arr))
		return false;
	json_array_foreach(arr, i, v) {
		uint32_t bit = 0;
		for (size_t k = 0; k < SLUICE_ARRAY_LEN(adm_topics) && json_is_string(v); k++)
			if (strcmp(json_string_value(v), adm_topics[k].name) == 0)
				bit = adm_topics[k].bit;
		if (!bit)
			return false;
		t |= bit;
	}
	*out = t;
	return true;
}

static void adm_ws_subscribe(struct admin *ad, struct api *a, const struct api_call *c,
			     struct adm_ws_client *cl, json_t *req, bool add)
{
	uint32_t topics = 0;
	json_t *tj = json_object_get(req, "topics");
	json_t *iv = json_object_get(req, "interval_s");
	if (tj && !adm_ws_topics(tj, &topics)) {
		api_reply_error(a, c->r, 400, "invalid_request",
				"topics must be a list of metrics, session_events, alerts, heartbeat");
		return;
	}
	if (!tj)
		topics = ADM_TOPIC_METRICS | ADM_TOPIC_SESSION | ADM_TOPIC_ALERTS | ADM_TOPIC_HEARTBEAT;
	uint32_t interval = cl->interval_ms;
	if (iv) {
		double s = json_is_number(iv) ? json_number_value(iv) : -1;
		if (!(s >= ADM_WS_MIN_INTERVAL_MS / 1000.0 && s <= ADM_WS_MAX_INTERVAL_MS / 1000.0)) {
			api_reply_error(a, c->r, 400, "invalid_request", "interval_s must be a number from 1 to 60");
			return;
		}
		interval = (uint32_t)(s * 1000.0 + 0.5);
	}
	uint32_t before = cl->topics;
	cl->topics = add ? topics : (cl->topics & ~topics);
	cl->interval_ms = interval;
	json_t *o = json_pack("{s:s,s:o,s:f,s:I,s:I}", "type", "subscribed", "topics",
			      adm_topics_json(cl->topics), "interval_s", interval / 1000.0, "heartbeat_ms",
			      (json_int_t)ad->d.conf->dash_heartbeat_ms, "events_seq", (json_int_t)ad->dash.seq);
	adm_ws_reply(a, c, req, o);
	/* A new metrics subscription (or period) gets its first snapshot now. */
	if ((cl->topics & ADM_TOPIC_METRICS) && (!(before & ADM_TOPIC_METRICS) || iv))
		cl->next_metrics_ns = cpl_now(ad->d.loop);
	adm_ws_arm(ad);
}

static void adm_ws_kill(struct admin *ad, struct api *a, const struct api_call *c, json_t *req)
{
	json_t *sid = json_object_get(req, "session_id");
	struct chat_session *s = json_is_string(sid) ?
					 chat_session_get(ad->d.chat, json_string_value(sid), json_string_length(sid)) :
					 NULL;
	if (!json_is_string(sid)) {
		api_reply_error(a, c->r, 400, "invalid_request", "session_id must be a string");
		return;
	}
	if (!s) {
		api_reply_error(a, c->r, 404, "not_found", "no such session");
		return;
	}
	char mid[CHAN_ID_LEN];
	uint32_t kicked = adm_session_kill(ad, s, mid);
	json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:I}", "type", "response", "request", "kill", "session_id",
			      s->node.id, "cancelled_message_id", mid[0] ? json_string(mid) : json_null(),
			      "workers_kicked", (json_int_t)kicked);
	adm_ws_reply(a, c, req, o);
}

static void adm_ws_message(void *arg, struct api *a, const struct api_call *c)
{
	struct admin *ad = arg;
	struct adm_ws_client *cl = adm_ws_find(ad, c->r->conn);
	if (!cl) {
		/* Not known here (control restarted and re-admitted the socket):
		 * adopt it, the upgrade's credentials were checked again. */
		adm_ws_opened(ad, c->r->conn, c->id);
		cl = adm_ws_find(ad, c->r->conn);
		if (!cl)
			return;
	}
	if (!adm_ws_role_ok(ad, cl)) {
		adm_ws_role_lost(ad, cl);
		return;
	}
	json_t *req = c->body ? json_loadb(c->body, c->body_len, 0, NULL) : NULL;
	const char *type = json_string_value(json_object_get(req, "type"));
	if (!json_is_object(req) || !type)
		api_reply_error(a, c->r, 400, "invalid_json", "a message must be a JSON object with a type");
	else if (strcmp(type, "subscribe") == 0)
		adm_ws_subscribe(ad, a, c, cl, req, true);
	else if (strcmp(type, "unsubscribe") == 0)
		adm_ws_subscribe(ad, a, c, cl, req, false);
	else if (strcmp(type, "get_metrics") == 0)
		adm_ws_reply(a, c, req, adm_metrics_snapshot(ad));
	else if (strcmp(type, "kill") == 0)
		adm_ws_kill(ad, a, c, req);
	else
		api_reply_error(a, c->r, 400, "unknown_type", "unknown message type");
	json_decref(req);
}

/* ---- the HTTP fallback: /api/admin/... ------------------------------------------------------ */

static void adm_http_events(struct admin *ad, struct api *a, const struct api_call *c)
{
	struct adm_dash *d = &ad->dash;
	char v[32];
	uint64_t after = 0;
	int n = api_call_query(c, "after", v, sizeof(v));
	if (n == -2 || (n >= 0 && sscanf(v, "%llu", (unsigned long long *)&after) != 1)) {
		api_reply_error(a, c->r, 400, "invalid_request", "after must be an event number");
		return;
	}
	uint64_t oldest = d->seq >= ADM_WS_EVENTS ? d->seq - ADM_WS_EVENTS + 1 : 1;
	json_t *arr = json_array();
	for (uint64_t s = after + 1 > oldest ? after + 1 : oldest; arr && s <= d->seq; s++)
		if (d->events[s % ADM_WS_EVENTS].seq == s)
			json_array_append_new(arr, adm_ev_json(&d->events[s % ADM_WS_EVENTS]));
	api_reply_json(a, c->r, 200, json_pack("{s:o,s:I,s:b}", "events", arr ? arr : json_array(), "seq",
					       (json_int_t)d->seq, "missed", after + 1 < oldest && d->seq >= oldest));
}

static void adm_http_kill(struct admin *ad, struct api *a, const struct api_call *c, const char *id, size_t len)
{
	struct chat_session *s = chat_session_get(ad->d.chat, id, len);
	if (!s) {
		api_reply_error(a, c->r, 404, "not_found", "no such session");
		return;
	}
	char mid[CHAN_ID_LEN];
	uint32_t kicked = adm_session_kill(ad, s, mid);
	api_reply_json(a, c->r, 200, json_pack("{s:b,s:s,s:o,s:I}", "killed", 1, "session_id", s->node.id,
					       "cancelled_message_id", mid[0] ? json_string(mid) : json_null(),
					       "workers_kicked", (json_int_t)kicked));
}

static bool adm_path_is(const struct api_call *c, const char *p)
{
	return c->path_len == strlen(p) && memcmp(c->path, p, c->path_len) == 0;
}

static void adm_http_405(struct api *a, const struct api_call *c, const char *allow)
{
	api_reply_405(a, c->r, allow);
}

static void adm_http(void *arg, struct api *a, const struct api_call *c)
{
	struct admin *ad = arg;
	static const char kill_pre[] = "/api/admin/sessions/";
	static const char kill_suf[] = "/kill";
	if (c->id->role != STORE_USER_ROLE_ADMIN) {
		api_reply_error(a, c->r, 403, "forbidden", "this resource needs the admin role");
		return;
	}
	if (adm_path_is(c, "/api/admin/metrics")) {
		if (c->method != CHAN_M_GET)
			return adm_http_405(a, c, "GET, HEAD");
		api_reply_json(a, c->r, 200, adm_metrics_snapshot(ad));
		return;
	}
	if (adm_path_is(c, "/api/admin/events")) {
		if (c->method != CHAN_M_GET)
			return adm_http_405(a, c, "GET, HEAD");
		adm_http_events(ad, a, c);
		return;
	}
	size_t pl = sizeof(kill_pre) - 1, sl = sizeof(kill_suf) - 1;
	if (c->path_len > pl + sl && memcmp(c->path, kill_pre, pl) == 0 &&
	    memcmp(c->path + c->path_len - sl, kill_suf, sl) == 0 &&
	    !memchr(c->path + pl, '/', c->path_len - pl - sl)) {
		if (c->method != CHAN_M_POST)
			return adm_http_405(a, c, "POST");
		adm_http_kill(ad, a, c, c->path + pl, c->path_len - pl - sl);
		return;
	}
	api_reply_error(a, c->r, 404, "not_found", "no such resource");
}

/* ---- set-up ----------------------------------------------------------------------------------- */

void adm_ws_stats(struct admin *ad, uint32_t w)
{
	(void)w;
	if (ad->dash.on)
		adm_alerts_check(ad);
}

void adm_ws_prepare(struct admin *ad)
{
	cpl_timer_init(&ad->dash.timer, adm_ws_timer, ad);
}

int adm_ws_init(struct admin *ad, char *err, size_t errlen)
{
	struct adm_dash *d = &ad->dash;
	if (!ad->d.api || !ad->d.bus)
		return 0;
	struct api_ws_endpoint ep = { .path = "/ws/admin", .role = STORE_USER_ROLE_ADMIN,
				      .opened = adm_ws_opened, .message = adm_ws_message,
				      .closed = adm_ws_closed, .arg = ad };
	d->events = calloc(ADM_WS_EVENTS, sizeof(*d->events));
	if (!d->events) {
		snprintf(err, errlen, "admin: out of memory for the dashboard's recent events");
		return -1;
	}
	if (api_ws_add(ad->d.api, &ep) < 0 || api_route_add(ad->d.api, "/api/admin/", adm_http, ad) < 0 ||
	    ev_subscribe(ad->d.bus, EV_T_SESSION | EV_T_ALERT, adm_ws_on_event, ad) < 0 ||
	    admin_metrics_provider(ad, "backends", adm_metrics_backends, ad) < 0) {
		free(d->events);
		d->events = NULL;
		snprintf(err, errlen, "admin: the dashboard cannot register with the api or the event bus");
		return -1;
	}
	d->on = true;
	return 0;
}

void adm_ws_free(struct admin *ad)
{
	struct adm_dash *d = &ad->dash;
	cpl_timer_cancel(ad->d.loop, &d->timer);
	if (d->on)
		ev_unsubscribe(ad->d.bus, adm_ws_on_event, ad);
	free(d->events);
	d->events = NULL;
	d->on = false;
}
