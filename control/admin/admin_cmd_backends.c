/*
 * Command families "backends" (list, add, drain, enable, remove) and
 * "usage", and the backend counters sent to the workers once a second for
 * /metrics (CHAN_REC_BACKENDS). Changes to backends take effect at once and
 * last until control restarts (docs/operations.md): the configuration file
 * is what a restart reads.
 */
#include "admin/admin_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backends.h"
#include "sluice/log.h"

static const char *const adm_health_names[] = { "unknown", "up", "down" };
static const char *const adm_breaker_names[] = { "closed", "open", "half_open" };
static const char *const adm_admin_names[] = { "enabled", "draining", "removing" };

static const char *adm_type_name(enum conf_backend_type t)
{
	return t == CONF_BACKEND_OPENAI ? "openai" : t == CONF_BACKEND_OLLAMA ? "ollama" : "synthetic";
}

static void adm_backend_each(void *arg, const struct bk_info *b)
{
	json_t *arr = arg;
	json_t *models = json_array();
	for (uint32_t i = 0; models && i < b->cfg->nmodels; i++)
		json_array_append_new(models, json_string(b->cfg->models[i]));
	json_t *disc = json_array();
	for (uint32_t i = 0; disc && i < b->ndiscovered; i++)
		json_array_append_new(disc, json_string(b->discovered[i]));
	json_t *per = json_array();
	for (uint32_t i = 0; per && i < b->nmodels; i++) {
		const struct bk_model_stats *m = &b->models[i];
		json_array_append_new(per, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:f}", "model", m->model,
						     "requests", (json_int_t)m->requests, "errors",
						     (json_int_t)m->errors, "inflight", (json_int_t)m->inflight,
						     "prompt_tokens", (json_int_t)m->prompt_tokens,
						     "completion_tokens", (json_int_t)m->completion_tokens,
						     "ttft_avg_s",
						     m->ttft_count ? m->ttft_sum_s / (double)m->ttft_count : 0.0));
	}
	json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:o,s:s,s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:o}",
			      "name", b->cfg->name, "type", adm_type_name(b->cfg->type), "url", b->cfg->url,
			      "models", models, "discovered_models", disc,
			      "health", adm_health_names[b->health], "breaker", adm_breaker_names[b->breaker],
			      "state", adm_admin_names[b->admin], "runtime", b->runtime,
			      "weight", (json_int_t)b->cfg->weight, "max_concurrency",
			      (json_int_t)b->cfg->max_concurrency, "max_queue", (json_int_t)b->cfg->max_queue,
			      "inflight", (json_int_t)b->inflight, "queued", (json_int_t)b->queued,
			      "requests", (json_int_t)b->requests, "errors", (json_int_t)b->errors,
			      "failovers", (json_int_t)b->failovers, "rejected", (json_int_t)b->rejected,
			      "consecutive_failures", (json_int_t)b->consecutive_failures, "last_error",
			      b->last_error, "per_model", per);
	if (o)
		json_array_append_new(arr, o);
}

static void cmd_backends_list(struct admin *ad, struct adm_client *cl, json_t *req)
{
	(void)req;
	json_t *arr = json_array();
	json_t *o = adm_ok();
	if (!arr || !o) {
		json_decref(arr);
		json_decref(o);
		adm_fail(ad, cl, "internal", "out of memory");
		return;
	}
	bk_foreach(ad->d.bk, adm_backend_each, arr);
	json_object_set_new(o, "backends", arr);
	adm_send(cl, o);
}

/* One definition member as the file would spell it: strings as they are,
 * numbers in decimal, a models array as a comma list. */
static int adm_backend_member(struct conf_backend *be, const char *key, json_t *v, char *err, size_t errlen)
{
	char txt[CONF_HEADERS_MAX + 64];
	if (json_is_string(v)) {
		snprintf(txt, sizeof(txt), "%s", json_string_value(v));
	} else if (json_is_integer(v) && json_integer_value(v) >= 0) {
		snprintf(txt, sizeof(txt), "%lld", (long long)json_integer_value(v));
	} else if (json_is_real(v) && json_real_value(v) >= 0) {
		snprintf(txt, sizeof(txt), "%.6f", json_real_value(v));
	} else if (json_is_array(v) && strcmp(key, "models") == 0) {
		size_t n = 0, i;
		json_t *m;
		txt[0] = 0;
		json_array_foreach(v, i, m) {
			if (!json_is_string(m)) {
				snprintf(err, errlen, "models: names must be strings");
				return -1;
			}
			n += (size_t)snprintf(txt + n, sizeof(txt) - n, "%s%s", i ? "," : "", json_string_value(m));
			if (n >= sizeof(txt)) {
				snprintf(err, errlen, "models: too long");
				return -1;
			}
		}
	} else {
		snprintf(err, errlen, "%s: not a string or a number", key);
		return -1;
	}
	return conf_backend_key(be, key, txt, err, errlen);
}

static bool adm_backend_name_ok(const char *n)
{
	size_t len = n ? strlen(n) : 0;
	if (len == 0 || len >= CONF_NAME_MAX)
		return false;
	return strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == len;
}

static void cmd_backends_add(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *name = adm_arg_str(req, "name");
	json_t *def = json_object_get(req, "backend");
	if (!adm_backend_name_ok(name) || !json_is_object(def)) {
		adm_fail(ad, cl, "invalid_request",
			 "name must be 1..63 of A-Z a-z 0-9 _ - and backend an object of configuration keys");
		return;
	}
	struct conf_backend be;
	conf_backend_defaults(&be);
	snprintf(be.name, sizeof(be.name), "%s", name);
	char err[512];
	const char *key;
	json_t *v;
	/* type first: the other keys do not depend on it, but its error is the
	 * one to see first. */
	json_t *type = json_object_get(def, "type");
	if (!type || adm_backend_member(&be, "type", type, err, sizeof(err)) < 0) {
		adm_fail(ad, cl, "invalid_request", type ? err : "backend needs a type");
		return;
	}
	json_object_foreach(def, key, v) {
		if (strcmp(key, "type") != 0 && adm_backend_member(&be, key, v, err, sizeof(err)) < 0) {
			adm_fail(ad, cl, "invalid_request", err);
			return;
		}
	}
	if (conf_backend_check(&be, err, sizeof(err)) < 0) {
		adm_fail(ad, cl, "invalid_request", err);
		return;
	}
	int rc = bk_backend_add(ad->d.bk, &be, err, sizeof(err));
	if (rc < 0) {
		adm_fail(ad, cl, rc == -EEXIST ? "exists" : rc == -ENOSPC ? "no_space" : "invalid_request", err);
		return;
	}
	LOG_INFO("admin: backend %s added by operator", name);
	json_t *o = adm_ok();
	json_object_set_new(o, "name", json_string(name));
	json_object_set_new(o, "done", json_string("backend added (until control restarts)"));
	adm_send(cl, o);
}

static void adm_backend_state(struct admin *ad, struct adm_client *cl, json_t *req,
			      int (*fn)(struct bk_mgr *m, const char *name), const char *done)
{
	const char *name = adm_arg_str(req, "name");
	if (!adm_backend_name_ok(name)) {
		adm_fail(ad, cl, "invalid_request", "name must be a backend name");
		return;
	}
	if (fn(ad->d.bk, name) < 0) {
		adm_fail(ad, cl, "not_found", "no such backend");
		return;
	}
	LOG_INFO("admin: backend %s: %s", name, done);
	json_t *o = adm_ok();
	json_object_set_new(o, "name", json_string(name));
	json_object_set_new(o, "done", json_string(done));
	adm_send(cl, o);
}

static void cmd_backends_drain(struct admin *ad, struct adm_client *cl, json_t *req)
{
	adm_backend_state(ad, cl, req, bk_backend_drain, "draining: no new requests");
}

static void cmd_backends_enable(struct admin *ad, struct adm_client *cl, json_t *req)
{
	adm_backend_state(ad, cl, req, bk_backend_enable, "enabled");
}

static void cmd_backends_remove(struct admin *ad, struct adm_client *cl, json_t *req)
{
	adm_backend_state(ad, cl, req, bk_backend_remove, "removed (its running requests finish)");
}

/* ---- usage -------------------------------------------------------------------- */

struct adm_usage_group {
	char user[STORE_USER_MAX];
	char key_id[STORE_KEYID_MAX];
	char model[CONF_NAME_MAX];
	uint64_t answers, prompt_tokens, completion_tokens;
	double cost_usd;
};

struct adm_usage_ctx {
	struct adm_usage_group *g;
	size_t n, cap;
	bool oom;
	struct adm_usage_group total;
};

static void adm_usage_each(void *arg, const struct store_usage_rec *u)
{
	struct adm_usage_ctx *x = arg;
	x->total.answers++;
	x->total.prompt_tokens += u->prompt_tokens;
	x->total.completion_tokens += u->completion_tokens;
	x->total.cost_usd += u->cost_usd;
	struct adm_usage_group *g = NULL;
	for (size_t i = 0; i < x->n && !g; i++)
		if (strcmp(x->g[i].user, u->user) == 0 && strcmp(x->g[i].key_id, u->key_id) == 0 &&
		    strcmp(x->g[i].model, u->model) == 0)
			g = &x->g[i];
	if (!g) {
		if (x->n == x->cap) {
			size_t cap = x->cap ? x->cap * 2 : 16;
			struct adm_usage_group *p = realloc(x->g, cap * sizeof(*p));
			if (!p) {
				x->oom = true;
				return;
			}
			x->g = p;
			x->cap = cap;
		}
		g = &x->g[x->n++];
		memset(g, 0, sizeof(*g));
		snprintf(g->user, sizeof(g->user), "%s", u->user);
		snprintf(g->key_id, sizeof(g->key_id), "%s", u->key_id);
		snprintf(g->model, sizeof(g->model), "%s", u->model);
	}
	g->answers++;
	g->prompt_tokens += u->prompt_tokens;
	g->completion_tokens += u->completion_tokens;
	g->cost_usd += u->cost_usd;
}

static json_t *adm_usage_json(const struct adm_usage_group *g, bool keys)
{
	json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:f}", "answers", (json_int_t)g->answers, "prompt_tokens",
			      (json_int_t)g->prompt_tokens, "completion_tokens", (json_int_t)g->completion_tokens,
			      "total_tokens", (json_int_t)(g->prompt_tokens + g->completion_tokens), "cost_usd",
			      g->cost_usd);
	if (o && keys) {
		json_object_set_new(o, "user", json_string(g->user));
		json_object_set_new(o, "key_id", g->key_id[0] ? json_string(g->key_id) : json_null());
		json_object_set_new(o, "model", json_string(g->model));
	}
	return o;
}

/* Totals per user, API key and model of the answers that ended since a
 * time, read from the store's usage log. */
static void cmd_usage(struct admin *ad, struct adm_client *cl, json_t *req)
{
	const char *user = adm_arg_str(req, "user");
	const char *key = adm_arg_str(req, "key");
	uint64_t since = 0;
	if ((json_object_get(req, "user") && !adm_user_ok(user)) ||
	    (json_object_get(req, "key") && (!key || !key[0] || strlen(key) >= STORE_KEYID_MAX)) ||
	    !adm_arg_uint(req, "since", 0, INT64_MAX / 1000000000, &since)) {
		adm_fail(ad, cl, "invalid_request", "user must be a user name, key a key id, since unix seconds");
		return;
	}
	struct store_usage_query q = { .user = user, .key_id = key, .since_ns = (int64_t)since * 1000000000 };
	struct adm_usage_ctx x = { 0 };
	int rc = store_usage_list(ad->d.st, &q, adm_usage_each, &x);
	json_t *arr = json_array();
	json_t *o = adm_ok();
	if (rc < 0 || x.oom || !arr || !o) {
		free(x.g);
		json_decref(arr);
		json_decref(o);
		adm_fail_errno(ad, cl, rc < 0 ? rc : -ENOMEM, "reading the usage log");
		return;
	}
	for (size_t i = 0; i < x.n; i++)
		json_array_append_new(arr, adm_usage_json(&x.g[i], true));
	free(x.g);
	json_object_set_new(o, "since", json_integer((json_int_t)since));
	json_object_set_new(o, "groups", arr);
	json_object_set_new(o, "total", adm_usage_json(&x.total, false));
	adm_send(cl, o);
}

/* ---- /metrics: the counters to every worker ------------------------------- */

struct adm_bk_ctx {
	struct chan_backend_entry *e;
	uint32_t n, cap;
};

static struct chan_backend_entry *adm_bk_entry(struct adm_bk_ctx *x)
{
	if (x->n == x->cap) {
		uint32_t cap = x->cap ? x->cap * 2 : 32;
		struct chan_backend_entry *p = realloc(x->e, cap * sizeof(*p));
		if (!p)
			return NULL;
		x->e = p;
		x->cap = cap;
	}
	struct chan_backend_entry *e = &x->e[x->n++];
	memset(e, 0, sizeof(*e));
	return e;
}

static void adm_bk_each(void *arg, const struct bk_info *b)
{
	struct adm_bk_ctx *x = arg;
	uint32_t first = x->n;
	for (uint32_t i = 0; i <= b->nmodels; i++) {
		if (i == b->nmodels && x->n > first)
			break; /* every backend has at least one entry */
		struct chan_backend_entry *e = adm_bk_entry(x);
		if (!e)
			return;
		snprintf(e->backend, sizeof(e->backend), "%s", b->cfg->name);
		e->queued = b->queued;
		e->up = b->health != BK_HEALTH_DOWN;
		e->breaker = (uint8_t)b->breaker;
		if (i == b->nmodels)
			continue;
		const struct bk_model_stats *m = &b->models[i];
		snprintf(e->model, sizeof(e->model), "%s", m->model);
		e->requests = m->requests;
		e->errors = m->errors;
		e->prompt_tokens = m->prompt_tokens;
		e->completion_tokens = m->completion_tokens;
		e->ttft_count = m->ttft_count;
		memcpy(e->ttft_buckets, m->ttft_buckets, sizeof(e->ttft_buckets));
		e->ttft_sum_s = m->ttft_sum_s;
		e->inflight = m->inflight;
	}
}

_Static_assert(CHAN_TTFT_BUCKETS == BK_TTFT_BUCKETS, "the channel carries every TTFT bucket");

void adm_backends_publish(struct admin *ad)
{
	struct adm_bk_ctx x = { 0 };
	bk_foreach(ad->d.bk, adm_bk_each, &x);
	size_t len = sizeof(struct chan_backends) + (size_t)x.n * sizeof(struct chan_backend_entry);
	for (uint32_t w = 0; w < adm_nworkers(ad) && len <= ad->d.out->max_payload; w++) {
		struct chan_backends *h = co_begin(ad->d.out, w, CHAN_REC_BACKENDS, (uint32_t)len);
		if (!h)
			continue; /* a full ring: /metrics lags a second */
		memset(h, 0, sizeof(*h));
		h->count = x.n;
		for (uint32_t i = 0; i < BK_TTFT_BUCKETS; i++)
			h->ttft_le[i] = bk_ttft_bounds[i];
		if (x.n)
			memcpy(h + 1, x.e, (size_t)x.n * sizeof(*x.e));
		co_end(ad->d.out, w, (uint32_t)len);
	}
	free(x.e);
}

const struct adm_cmd adm_backends_cmds[] = {
	{ "backends.list", cmd_backends_list },
	{ "backends.add", cmd_backends_add },
	{ "backends.drain", cmd_backends_drain },
	{ "backends.enable", cmd_backends_enable },
	{ "backends.remove", cmd_backends_remove },
	{ "usage", cmd_usage },
	{ NULL, NULL },
};
