/*
 * Command family "status": status, stats, workers, conns — what the control
 * loop and the workers report about themselves — and drain, which asks the
 * dataplane to drain and stop.
 */
#include "admin/admin_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sluice/log.h"

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

static void adm_count_session(const struct chat_session *s, void *arg)
{
	struct adm_count *c = arg;
	c->sessions++;
	c->running += s->ans.running;
}

static void cmd_status(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct adm_count c = { 0 };
	chat_session_foreach(ad->d.chat, adm_count_session, &c);
	uint32_t clients = 0;
	for (uint32_t i = 0; i < ADM_MAX_CLIENTS; i++)
		clients += ad->cl[i].fd >= 0;
	json_t *o = adm_ok();
	json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
	json_object_set_new(o, "uptime_ms",
			    json_integer((json_int_t)((sluice_now_ns() - ad->started_ns) / 1000000u)));
	json_object_set_new(o, "dataplane_attached", json_boolean(cpl_peer_alive(ad->d.loop)));
	json_object_set_new(o, "dataplane_epoch", json_integer((json_int_t)cpl_peer_epoch(ad->d.loop)));
	json_object_set_new(o, "workers", json_integer((json_int_t)adm_nworkers(ad)));
	json_object_set_new(o, "workers_reporting", json_integer((json_int_t)adm_reporting(ad)));
	json_object_set_new(o, "store", json_string(ad->d.conf->store));
	json_object_set_new(o, "sessions_in_memory", json_integer((json_int_t)c.sessions));
	json_object_set_new(o, "answers_running", json_integer((json_int_t)c.running));
	json_object_set_new(o, "admin_clients", json_integer((json_int_t)clients));
	adm_send(cl, o);
}

/* The worker counters by name, for stats (summed) and workers (each). */
#define ADM_WC(f) { #f, offsetof(struct chan_stats, f) }
static const struct {
	const char *name;
	size_t off;
} adm_worker_counters[] = {
	ADM_WC(conns_active), ADM_WC(conns_accepted), ADM_WC(sse_active), ADM_WC(ws_active),
	ADM_WC(http_requests), ADM_WC(tokens_out), ADM_WC(frames_out), ADM_WC(bytes_out),
	ADM_WC(pending_bytes), ADM_WC(chan_full), ADM_WC(slow_consumer_closes), ADM_WC(loop_turns),
	ADM_WC(busy_turns),
};

static uint64_t adm_counter(const struct chan_stats *s, size_t i)
{
	uint64_t v;
	memcpy(&v, (const char *)s + adm_worker_counters[i].off, sizeof(v));
	return v;
}

static void adm_put_worker_counters(json_t *o, const uint64_t *v)
{
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(adm_worker_counters); i++)
		json_object_set_new(o, adm_worker_counters[i].name, json_integer((json_int_t)v[i]));
}

static void cmd_stats(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	uint64_t sum[SLUICE_ARRAY_LEN(adm_worker_counters)] = { 0 };
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		if (!ad->w[w].at_ns)
			continue;
		for (size_t i = 0; i < SLUICE_ARRAY_LEN(sum); i++)
			sum[i] += adm_counter(&ad->w[w].s, i);
	}
	const struct cpl_stats *ls = cpl_stats(ad->d.loop);
	struct bk_stats bs = { 0 };
	if (ad->d.bk)
		bk_totals(ad->d.bk, &bs);
	uint64_t deferred = 0, dropped = 0;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		deferred += ad->d.out->w[w].deferred;
		dropped += ad->d.out->w[w].dropped;
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
	adm_put_worker_counters(dp, sum);
	const struct {
		const char *name;
		uint64_t v;
	} f[] = {
		{ "requests", ad->d.api_stats->requests },
		{ "invalid_records", ad->d.api_stats->invalid_records + ls->invalid_records + ls->unhandled_records },
		{ "reply_drops", ad->d.api_stats->reply_drops },
		{ "tokens", ad->d.chat->stats.tokens },
		{ "token_batches", ad->d.chat->stats.token_batches },
		{ "answers_failed", ad->d.chat->stats.answers_failed },
		{ "answers_cut", ad->d.chat->stats.answers_cut },
		{ "usage_answers", ad->d.chat->stats.usage_answers },
		{ "usage_prompt_tokens", ad->d.chat->stats.usage_prompt_tokens },
		{ "usage_completion_tokens", ad->d.chat->stats.usage_completion_tokens },
		{ "usage_cost_microusd", (uint64_t)(ad->d.chat->stats.usage_cost_usd * 1e6 + 0.5) },
		{ "backend_calls", bs.calls },
		{ "backend_rejected", bs.rejected },
		{ "backend_failovers", bs.failovers },
		{ "backend_errors", bs.upstream_errors },
		{ "backend_cancels", bs.cancels },
		{ "backend_inflight", bs.inflight },
		{ "backend_queued", bs.queued },
		{ "sub_drops", ad->d.chat->stats.sub_drops },
		{ "overload_kicks", ad->d.chat->stats.overload_kicks },
		{ "kick_losses", ad->d.chat->stats.kick_losses },
		{ "stale_requests", ad->d.api_stats->stale_requests },
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
			uint64_t v[SLUICE_ARRAY_LEN(adm_worker_counters)];
			for (size_t i = 0; i < SLUICE_ARRAY_LEN(v); i++)
				v[i] = adm_counter(&ad->w[w].s, i);
			adm_put_worker_counters(o, v);
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

/* ---- conns: a LIST_CONNS query to every worker, answers gathered ----- */

void adm_status_conns_finish(struct admin *ad, struct adm_client *cl)
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
	if (!cpl_peer_alive(ad->d.loop)) {
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
		struct chan_admin *q = co_begin(ad->d.out, w, CHAN_REC_ADMIN, sizeof(*q));
		if (!q)
			continue;
		*q = (struct chan_admin){ .op = CHAN_ADMIN_LIST_CONNS, .req_id = cl->conns_req };
		co_end(ad->d.out, w, sizeof(*q));
		asked = true;
	}
	if (!asked)
		adm_status_conns_finish(ad, cl);
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

void adm_status_conns_record(struct admin *ad, const struct chan_conns *c)
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
	adm_status_conns_finish(ad, cl);
}

/*
 * `sluicectl drain` is SIGTERM to the dataplane, whose pid the channel
 * holds: one drain path (docs/operations.md), and control, which runs as the
 * same user, may signal it where the operator's shell may not.
 */
static void cmd_drain(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	struct chan_region *r = cpl_region(ad->d.loop);
	uint32_t pid = atomic_load(&chan_header(r)->dp_pid);
	/* The kernel's view, not the loop's liveness flag: that one follows the
	 * heartbeat check every 100 ms, so a dataplane that attached a moment
	 * ago (and already serves) would be refused. */
	if (!chan_peer_attached(r) || pid == 0) {
		adm_fail(ad, cl, "not_attached", "no dataplane is attached, so there is nothing to drain");
		return;
	}
	if (kill((pid_t)pid, SIGTERM) < 0) {
		adm_fail_errno(ad, cl, errno, "signalling the dataplane");
		return;
	}
	LOG_INFO("admin: drain: SIGTERM to the dataplane (pid %u)", pid);
	json_t *o = adm_ok();
	json_object_set_new(o, "pid", json_integer((json_int_t)pid));
	json_object_set_new(o, "drain_timeout_s", json_integer((json_int_t)ad->d.conf->drain_timeout_s));
	adm_send(cl, o);
}

const struct adm_cmd adm_status_cmds[] = {
	{ "status", cmd_status },
	{ "stats", cmd_stats },
	{ "workers", cmd_workers },
	{ "conns", cmd_conns },
	{ "drain", cmd_drain },
	{ NULL, NULL },
};
