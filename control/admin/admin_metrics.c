/*
 * The dashboard's numbers: the metrics snapshot (docs/api.md, /ws/admin
 * `metrics`) built from the workers' STATS records, the channel, the store
 * and the running answers, extended by providers (the backends' part); and
 * the alerts, raised and cleared on the event bus when a threshold is
 * crossed.
 */
#include "admin/admin_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sluice/log.h"

static double adm_wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- per worker ------------------------------------------------------------- */

/* Counter increase per second between a worker's last two STATS records;
 * 0 until it sent two. */
static double adm_rate(const struct adm_worker *aw, size_t off)
{
	if (!aw->prev_ns || aw->at_ns <= aw->prev_ns)
		return 0;
	uint64_t now, before;
	memcpy(&now, (const char *)&aw->s + off, sizeof(now));
	memcpy(&before, (const char *)&aw->prev + off, sizeof(before));
	if (now < before)
		return 0;
	return (double)(now - before) * 1e9 / (double)(aw->at_ns - aw->prev_ns);
}

#define ADM_RATE(aw, field) adm_rate((aw), offsetof(struct chan_stats, field))

/* How full worker w's c2d ring is, control's backlog for it included. */
static double adm_ring_fill(struct admin *ad, uint32_t w)
{
	struct co_worker *cw = &ad->d.out->w[w];
	double size = (double)chan_header(cpl_region(ad->d.loop))->ring_size;
	if (!cw->prod || size <= 0)
		return 0;
	double used = size - (double)chan_free_bytes(cw->prod);
	if (cw->blen)
		used += (double)cw->blen;
	double f = used / size;
	return f > 1 ? 1 : f < 0 ? 0 : f;
}

/* ---- added-delay percentiles ------------------------------------------------ */

/* Percentile p (0..1) of the delays framed between each worker's last two
 * STATS records, as the upper bound of the bucket it falls in (µs); the
 * +Inf bucket reports the largest finite bound. -1 without samples. */
static double adm_delay_pct(const struct admin *ad, double p)
{
	uint64_t hist[CHAN_STATS_DELAY_BUCKETS + 1] = { 0 };
	uint64_t total = 0;
	const uint32_t *bounds = NULL;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		const struct adm_worker *aw = &ad->w[w];
		if (!aw->at_ns || !aw->prev_ns)
			continue;
		bounds = aw->s.delay_bounds_us;
		for (size_t i = 0; i <= CHAN_STATS_DELAY_BUCKETS; i++) {
			uint64_t d = aw->s.delay_hist[i] >= aw->prev.delay_hist[i] ?
					     aw->s.delay_hist[i] - aw->prev.delay_hist[i] : 0;
			hist[i] += d;
			total += d;
		}
	}
	if (!total || !bounds)
		return -1;
	uint64_t want = (uint64_t)ceil(p * (double)total), seen = 0;
	if (want == 0)
		want = 1;
	for (size_t i = 0; i <= CHAN_STATS_DELAY_BUCKETS; i++) {
		seen += hist[i];
		if (seen >= want)
			return i < CHAN_STATS_DELAY_BUCKETS ? bounds[i] : bounds[CHAN_STATS_DELAY_BUCKETS - 1];
	}
	return bounds[CHAN_STATS_DELAY_BUCKETS - 1];
}

static json_t *adm_num_or_null(double v)
{
	return v < 0 ? json_null() : json_real(v);
}

/* ---- live streams -------------------------------------------------------------- */

struct adm_streams {
	json_t *arr;
	uint64_t now_ns;
	uint32_t n;
};

static void adm_stream_of(const struct chat_session *s, void *arg)
{
	struct adm_streams *x = arg;
	const struct chat_answer *a = &s->ans;
	if (!a->running || x->n >= ADM_WS_STREAMS_MAX)
		return;
	uint64_t age = x->now_ns > a->start_ns ? x->now_ns - a->start_ns : 0;
	uint64_t subs = 0;
	for (uint32_t w = 0; w < CHAN_MAX_WORKERS; w++)
		subs += s->refs[w];
	double secs = (double)age / 1e9;
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:f,s:I,s:I,s:s}", "session_id", s->node.id, "message_id",
			      a->mid, "user", s->user, "tokens", (json_int_t)a->seq, "tokens_per_s",
			      secs > 0 ? (double)a->seq / secs : 0.0, "age_ms", (json_int_t)(age / 1000000u),
			      "subscribers", (json_int_t)subs, "backend", a->backend);
	if (o && json_array_append_new(x->arr, o) == 0)
		x->n++;
}

/* ---- the snapshot ---------------------------------------------------------------- */

json_t *adm_metrics_snapshot(struct admin *ad)
{
	json_t *o = json_object();
	json_t *workers = json_array();
	json_t *streams = json_array();
	if (!o || !workers || !streams) {
		json_decref(o);
		json_decref(workers);
		json_decref(streams);
		return NULL;
	}
	double conns = 0, sse = 0, ws = 0, pending = 0, slow = 0, tps = 0, fps = 0, bps = 0, rps = 0;
	double ring_max = 0;
	uint32_t reporting = 0;
	uint64_t now = sluice_now_ns();
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		const struct adm_worker *aw = &ad->w[w];
		double fill = adm_ring_fill(ad, w);
		ring_max = fill > ring_max ? fill : ring_max;
		json_t *wo;
		if (aw->at_ns) {
			reporting++;
			double t = ADM_RATE(aw, tokens_out), f = ADM_RATE(aw, frames_out);
			conns += (double)aw->s.conns_active;
			sse += (double)aw->s.sse_active;
			ws += (double)aw->s.ws_active;
			pending += (double)aw->s.pending_bytes;
			slow += (double)aw->s.slow_consumer_closes;
			tps += t;
			fps += f;
			bps += ADM_RATE(aw, bytes_out);
			rps += ADM_RATE(aw, http_requests);
			wo = json_pack("{s:i,s:I,s:I,s:I,s:f,s:f,s:I,s:f,s:I}", "worker", (int)w,
				       "connections", (json_int_t)aw->s.conns_active, "sse",
				       (json_int_t)aw->s.sse_active, "ws", (json_int_t)aw->s.ws_active,
				       "tokens_per_s", t, "frames_per_s", f, "pending_bytes",
				       (json_int_t)aw->s.pending_bytes, "ring_fill", fill, "stats_age_ms",
				       (json_int_t)((now - aw->at_ns) / 1000000u));
		} else {
			wo = json_pack("{s:i,s:n,s:f}", "worker", (int)w, "stats_age_ms", "ring_fill", fill);
		}
		json_array_append_new(workers, wo);
	}
	struct adm_streams x = { .arr = streams, .now_ns = now };
	chat_session_foreach(ad->d.chat, adm_stream_of, &x);

	struct store_stats ss;
	memset(&ss, 0, sizeof(ss));
	bool have_store = ad->d.st->ops->stats && ad->d.st->ops->stats(ad->d.st, &ss) == 0;

	json_object_set_new(o, "type", json_string("metrics"));
	json_object_set_new(o, "ts", json_real(adm_wall_now()));
	json_object_set_new(o, "dataplane_attached", json_boolean(cpl_peer_alive(ad->d.loop)));
	json_object_set_new(o, "workers_reporting", json_integer((json_int_t)reporting));
	json_object_set_new(o, "totals", json_pack("{s:f,s:f,s:f,s:f,s:I,s:f,s:f,s:o,s:f,s:f,s:f,s:f}",
		"connections", conns, "streams", sse + ws, "sse", sse, "ws", ws,
		"answers_running", (json_int_t)ad->d.chat->running,
		"tokens_per_s", tps, "frames_per_s", fps,
		"frames_per_token", tps > 0 ? json_real(fps / tps) : json_null(),
		"bytes_per_s", bps, "http_requests_per_s", rps, "pending_bytes", pending,
		"slow_consumer_closes", slow));
	json_object_set_new(o, "delay_us", json_pack("{s:o,s:o,s:o}",
		"p50", adm_num_or_null(adm_delay_pct(ad, 0.5)),
		"p90", adm_num_or_null(adm_delay_pct(ad, 0.9)),
		"p99", adm_num_or_null(adm_delay_pct(ad, 0.99))));
	json_object_set_new(o, "ring_fill_max", json_real(ring_max));
	json_object_set_new(o, "workers", workers);
	json_object_set_new(o, "streams", streams);
	if (have_store)
		json_object_set_new(o, "store", json_pack("{s:I,s:I,s:f,s:I,s:I}",
			"used_bytes", (json_int_t)ss.map_used, "map_bytes", (json_int_t)ss.map_size,
			"used_fraction", ss.map_size ? (double)ss.map_used / (double)ss.map_size : 0.0,
			"conversations", (json_int_t)ss.sessions, "messages", (json_int_t)ss.messages));
	else
		json_object_set_new(o, "store", json_pack("{s:n,s:n,s:n,s:n,s:n}", "used_bytes",
			"map_bytes", "used_fraction", "conversations", "messages"));
	json_object_set_new(o, "alerts", adm_alerts_json(ad));
	for (uint32_t i = 0; i < ad->dash.nprov; i++)
		ad->dash.prov[i].fill(ad->dash.prov[i].arg, o);
	return o;
}

int admin_metrics_provider(struct admin *ad, const char *name, void (*fill)(void *arg, json_t *snap),
			   void *arg)
{
	struct adm_dash *d = &ad->dash;
	for (uint32_t i = 0; i < d->nprov; i++) {
		if (strcmp(d->prov[i].name, name) == 0) {
			d->prov[i] = (struct adm_provider){ name, fill, arg };
			return 0;
		}
	}
	if (d->nprov == ADM_PROVIDERS_MAX)
		return -1;
	d->prov[d->nprov++] = (struct adm_provider){ name, fill, arg };
	return 0;
}

/* ---- the default backends part ------------------------------------------------------- */

struct adm_be_ctx {
	struct admin *ad;
	json_t *arr;
};

static void adm_be_part(void *arg, const struct bk_info *b)
{
	struct adm_be_ctx *x = arg;
	static const char *const types[] = { "synthetic", "openai", "ollama" };
	static const char *const breakers[] = { "closed", "open", "half_open" };
	json_t *models = json_array();
	for (uint32_t m = 0; models && m < b->cfg->nmodels; m++)
		json_array_append_new(models, json_string(b->cfg->models[m]));
	for (uint32_t m = 0; models && !b->cfg->nmodels && m < b->ndiscovered; m++)
		json_array_append_new(models, json_string(b->discovered[m]));
	bool up = b->health != BK_HEALTH_DOWN;
	json_array_append_new(x->arr, json_pack("{s:s,s:s,s:o,s:b,s:I,s:I,s:s,s:s}", "name", b->cfg->name, "type",
						types[b->cfg->type], "models", models ? models : json_array(),
						"up", up, "running", (json_int_t)b->inflight, "queued",
						(json_int_t)b->queued, "breaker", breakers[b->breaker], "detail",
						up ? "" : b->last_error));
}

/* "backends": each backend, its requests running and queued, its breaker,
 * and down while its health checks fail (with why). */
void adm_metrics_backends(void *arg, json_t *snap)
{
	struct admin *ad = arg;
	struct adm_be_ctx x = { .ad = ad, .arr = json_array() };
	if (x.arr && ad->d.bk)
		bk_foreach(ad->d.bk, adm_be_part, &x);
	if (x.arr)
		json_object_set_new(snap, "backends", x.arr);
}

/* ---- alerts ---------------------------------------------------------------------------- */

static struct adm_alert *adm_alert_find(struct admin *ad, const char *name, const char *subject, bool make)
{
	struct adm_alert *free_slot = NULL;
	for (uint32_t i = 0; i < ADM_ALERTS_MAX; i++) {
		struct adm_alert *a = &ad->dash.alerts[i];
		if (a->active && strcmp(a->name, name) == 0 && strcmp(a->subject, subject) == 0)
			return a;
		if (!a->active && !free_slot)
			free_slot = a;
	}
	return make ? free_slot : NULL;
}

void adm_alerts_track(struct admin *ad, const struct ev_alert *e)
{
	const char *subject = e->subject ? e->subject : "";
	struct adm_alert *a = adm_alert_find(ad, e->name, subject, e->raised);
	if (!a)
		return;
	if (!e->raised) {
		a->active = false;
		return;
	}
	if (!a->active)
		a->since = (int64_t)time(NULL);
	a->active = true;
	snprintf(a->name, sizeof(a->name), "%s", e->name);
	snprintf(a->subject, sizeof(a->subject), "%s", subject);
	snprintf(a->level, sizeof(a->level), "%s", e->level ? e->level : "warning");
	snprintf(a->message, sizeof(a->message), "%s", e->message ? e->message : "");
	a->value = e->value;
	a->limit = e->limit;
}

json_t *adm_alerts_json(const struct admin *ad)
{
	json_t *arr = json_array();
	for (uint32_t i = 0; arr && i < ADM_ALERTS_MAX; i++) {
		const struct adm_alert *a = &ad->dash.alerts[i];
		if (!a->active)
			continue;
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:f,s:f,s:s,s:I}", "alert", a->name,
						     "subject", a->subject, "level", a->level, "state",
						     "raised", "value", a->value, "limit", a->limit, "message",
						     a->message, "since", (json_int_t)a->since));
	}
	return arr;
}

/* Publishes a state change of one alert (the bus brings it back to
 * adm_alerts_track through the dashboard's subscription). */
static void adm_alert_set(struct admin *ad, const char *name, const char *subject, bool on,
			  double value, double limit, const char *level, const char *fmt_msg)
{
	bool active = adm_alert_find(ad, name, subject, false) != NULL;
	if (on == active)
		return;
	struct ev e = { .kind = EV_ALERT,
			.alert = { .name = name, .subject = subject, .level = level, .raised = on,
				   .value = value, .limit = limit, .message = fmt_msg } };
	LOG_INFO("alert %s%s%s %s (%.3g, limit %.3g)", name, subject[0] ? " " : "", subject,
		 on ? "raised" : "cleared", value, limit);
	ev_publish(ad->d.bus, &e);
}

/* backend_down: raised while a backend's health checks fail. */
static void adm_alert_backend(void *arg, const struct bk_info *b)
{
	struct admin *ad = arg;
	char msg[224];
	bool down = b->health == BK_HEALTH_DOWN;
	snprintf(msg, sizeof(msg), "backend %s is %s%s%s", b->cfg->name, down ? "down" : "up",
		 down && b->last_error[0] ? ": " : "", down ? b->last_error : "");
	adm_alert_set(ad, "backend_down", b->cfg->name, down, down ? 1 : 0, 1, "critical", msg);
}

/*
 * Runs on every STATS record: the inputs change at most that often. Each
 * alert is raised when its measure reaches the limit and cleared when it is
 * back below; slow_consumers (an event, not a level) stays raised until no
 * client was dropped for ADM_SLOW_QUIET_NS.
 */
void adm_alerts_check(struct admin *ad)
{
	const struct sluice_conf *conf = ad->d.conf;
	struct adm_dash *d = &ad->dash;
	char msg[128];
	double conns = 0, pending = 0;
	uint64_t slow = 0;
	uint64_t now = sluice_now_ns();
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		const struct adm_worker *aw = &ad->w[w];
		if (!aw->at_ns)
			continue;
		conns += (double)aw->s.conns_active;
		pending += (double)aw->s.pending_bytes;
		slow += aw->s.slow_consumer_closes;
	}
	double climit = conf->dash_alert_connections ?
				(double)conf->dash_alert_connections :
				0.9 * (double)conf->max_conns * (double)conf->workers;
	snprintf(msg, sizeof(msg), "%.0f connections open (limit %.0f)", conns, climit);
	adm_alert_set(ad, "connections", "", conns >= climit, conns, climit, "warning", msg);

	double plimit = (double)conf->dash_alert_pending_mb * 1048576.0;
	snprintf(msg, sizeof(msg), "%.1f MiB waiting to be sent to clients (limit %u MiB)",
		 pending / 1048576.0, conf->dash_alert_pending_mb);
	adm_alert_set(ad, "memory", "", pending >= plimit, pending, plimit, "critical", msg);

	double rlimit = conf->dash_alert_ring_pct / 100.0;
	for (uint32_t w = 0; w < adm_nworkers(ad); w++) {
		char subj[24];
		uint64_t deferred = ad->d.out->w[w].deferred;
		double fill = adm_ring_fill(ad, w);
		bool backlog = deferred > d->deferred_seen[w];
		d->deferred_seen[w] = deferred;
		snprintf(subj, sizeof(subj), "worker %u", w);
		snprintf(msg, sizeof(msg), "channel ring to worker %u is %.0f%% full%s", w, fill * 100,
			 backlog ? "; records waited in control's backlog" : "");
		adm_alert_set(ad, "ring_full", subj, fill >= rlimit || backlog, fill, rlimit, "critical", msg);
	}

	struct store_stats ss;
	if (ad->d.st->ops->stats && ad->d.st->ops->stats(ad->d.st, &ss) == 0 && ss.map_size) {
		double used = (double)ss.map_used / (double)ss.map_size;
		double slimit = conf->dash_alert_store_pct / 100.0;
		snprintf(msg, sizeof(msg), "the store map is %.0f%% used (store_map_mb = %u)", used * 100,
			 conf->store_map_mb);
		adm_alert_set(ad, "store_full", "", used >= slimit, used, slimit, "critical", msg);
	}

	if (ad->d.bk)
		bk_foreach(ad->d.bk, adm_alert_backend, ad);

	/* Drops from before this control started are history, not news. */
	if (!d->primed) {
		d->slow_seen = slow;
		d->primed = true;
	}
	if (slow > d->slow_seen) {
		snprintf(msg, sizeof(msg), "%llu slow clients dropped (%llu in all)",
			 (unsigned long long)(slow - d->slow_seen), (unsigned long long)slow);
		d->slow_last_ns = now;
		struct adm_alert *a = adm_alert_find(ad, "slow_consumers", "", false);
		if (a) {
			/* Still raised: the count moves on, so does the banner. */
			a->value = (double)slow;
			snprintf(a->message, sizeof(a->message), "%s", msg);
		}
		adm_alert_set(ad, "slow_consumers", "", true, (double)slow, 1, "warning", msg);
	} else if (d->slow_last_ns && now - d->slow_last_ns >= ADM_SLOW_QUIET_NS) {
		adm_alert_set(ad, "slow_consumers", "", false, (double)slow, 1, "warning",
			      "no slow client dropped for 30 s");
		d->slow_last_ns = 0;
	}
	d->slow_seen = slow;
}
