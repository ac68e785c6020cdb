/*
 * The backend manager: backends, routing, the circuit breaker, the wait
 * queues and the life of a call (backends.h). The clients (bk_openai.c,
 * bk_ollama.c, synthetic.c) report what their upstream said through the
 * bk_emit_* functions and bk_fail; this file decides what the caller hears.
 */
#include "backends/bk_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"
#include "sluice/log.h"

const double bk_ttft_bounds[BK_TTFT_BUCKETS] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };

static int bk_route(struct bk_call *c);
static void bk_pump(struct bk_backend *be);
static void bk_collect(struct bk_mgr *m);
static void bk_fail_now(struct bk_call *c, bool retry, uint16_t status, const char *code, const char *msg);
static void bk_call_timer(void *arg, uint64_t now_ns);

/* ---- backends ------------------------------------------------------------ */

static struct bk_backend *bk_find(struct bk_mgr *m, const char *name)
{
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++)
		if (m->be[i].used && strcmp(m->be[i].cfg.name, name) == 0)
			return &m->be[i];
	return NULL;
}

static void bk_backend_release(struct bk_mgr *m, struct bk_backend *be)
{
	bk_health_stop(m, be);
	if (be->auth_header) {
		explicit_bzero(be->auth_header, strlen(be->auth_header));
		free(be->auth_header);
	}
	free(be->ms);
	free(be->disc);
	memset(be, 0, sizeof(*be));
}

/* Fills slot with cfg: its client, its key (from the environment: the
 * value is never written anywhere but the request header) and its health
 * checks. */
static int bk_backend_init(struct bk_mgr *m, uint32_t slot, const struct conf_backend *cfg, bool runtime,
			   char *err, size_t errlen)
{
	struct bk_backend *be = &m->be[slot];
	memset(be, 0, sizeof(*be));
	be->cfg = *cfg;
	be->slot = slot;
	be->runtime = runtime;
	be->ops = cfg->type == CONF_BACKEND_OPENAI ? &bk_oai_ops
		  : cfg->type == CONF_BACKEND_OLLAMA ? &bk_oll_ops : NULL;
	if (cfg->api_key_env[0]) {
		const char *key = getenv(cfg->api_key_env);
		if (!key || !key[0]) {
			snprintf(err, errlen, "backend %s: api_key_env %s is not set", cfg->name, cfg->api_key_env);
			return -1;
		}
		size_t n = strlen("Authorization: Bearer ") + strlen(key) + 1;
		be->auth_header = malloc(n);
		if (!be->auth_header) {
			snprintf(err, errlen, "backend %s: out of memory", cfg->name);
			return -1;
		}
		snprintf(be->auth_header, n, "Authorization: Bearer %s", key);
	}
	be->used = true;
	if (be->ops && bk_health_start(m, be) < 0) {
		snprintf(err, errlen, "backend %s: cannot start its health checks", cfg->name);
		bk_backend_release(m, be);
		return -1;
	}
	return 0;
}

struct bk_mgr *bk_create(const struct sluice_conf *conf, struct cp_loop *loop, char *err, size_t errlen)
{
	struct bk_mgr *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "backends: out of memory");
		return NULL;
	}
	m->conf = conf;
	m->loop = loop;
	if (bk_curl_init(m, err, errlen) < 0) {
		free(m);
		return NULL;
	}
	for (uint32_t i = 0; i < conf->nbackends; i++) {
		if (bk_backend_init(m, i, &conf->backends[i], false, err, errlen) < 0) {
			bk_destroy(m);
			return NULL;
		}
	}
	return m;
}

static void bk_queue_remove(struct bk_call *c)
{
	struct bk_backend *be = c->be;
	if (c->qprev)
		c->qprev->qnext = c->qnext;
	else
		be->qhead = c->qnext;
	if (c->qnext)
		c->qnext->qprev = c->qprev;
	else
		be->qtail = c->qprev;
	c->qprev = c->qnext = NULL;
	be->queued--;
}

void bk_shutdown(struct bk_mgr *m)
{
	if (!m)
		return;
	m->shutting_down = true;
	while (m->calls) {
		struct bk_call *c = m->calls;
		bool tell = c->state != BK_C_ENDED && !c->cancelled;
		if (c->state == BK_C_QUEUED)
			bk_queue_remove(c);
		if (c->x.active)
			bk_curl_stop(&c->x);
		cpl_timer_cancel(m->loop, &c->timer);
		if (c->counted)
			c->be->inflight--;
		c->counted = false;
		c->state = BK_C_ENDED;
		if (tell) {
			struct bk_end e = { .kind = BK_END_INTERRUPTED, .code = "interrupted",
					    .message = "sluice-control is stopping", .http_status = 503 };
			c->ev->end(c->arg, &e);
		}
		bk_call_free(c);
	}
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++)
		if (m->be[i].used)
			bk_health_stop(m, &m->be[i]);
}

void bk_destroy(struct bk_mgr *m)
{
	if (!m)
		return;
	bk_shutdown(m);
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++)
		if (m->be[i].used)
			bk_backend_release(m, &m->be[i]);
	bk_curl_free(m);
	free(m);
}

bool bk_model_served(const struct bk_mgr *m, const char *model)
{
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
		const struct bk_backend *be = &m->be[i];
		if (be->used && be->admin != BK_ADMIN_REMOVING && bk_serves(be, model))
			return true;
	}
	return false;
}

void bk_models_foreach(const struct bk_mgr *m, void (*fn)(void *arg, const char *model, const char *backend),
		       void *arg)
{
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
		const struct bk_backend *be = &m->be[i];
		if (!be->used || be->admin == BK_ADMIN_REMOVING)
			continue;
		uint32_t n = be->cfg.nmodels ? be->cfg.nmodels : be->ndisc;
		for (uint32_t k = 0; k < n; k++) {
			const char *model = be->cfg.nmodels ? be->cfg.models[k] : be->disc[k];
			bool first = true;
			for (uint32_t j = 0; j < i && first; j++)
				first = !(m->be[j].used && m->be[j].admin != BK_ADMIN_REMOVING &&
					  bk_serves(&m->be[j], model));
			if (first)
				fn(arg, model, be->cfg.name);
		}
	}
}

/* ---- counters ------------------------------------------------------------ */

/* The counters of model on be, created on first use (NULL when out of room:
 * the call then goes uncounted per model, never refused for it). */
static struct bk_model_stats *bk_ms(struct bk_backend *be, const char *model)
{
	for (uint32_t i = 0; i < be->nms; i++)
		if (strcmp(be->ms[i].model, model) == 0)
			return &be->ms[i];
	if (be->nms == be->ms_cap) {
		uint32_t cap = be->ms_cap ? be->ms_cap * 2 : 4;
		if (cap > CONF_MAX_MODELS + BK_DISCOVER_MAX)
			return NULL;
		struct bk_model_stats *p = realloc(be->ms, cap * sizeof(*p));
		if (!p)
			return NULL;
		be->ms = p;
		be->ms_cap = cap;
	}
	struct bk_model_stats *s = &be->ms[be->nms++];
	memset(s, 0, sizeof(*s));
	snprintf(s->model, sizeof(s->model), "%s", model);
	return s;
}

static void bk_ttft(struct bk_call *c, uint64_t now)
{
	if (!c->ms)
		return;
	double s = (double)(now - c->sent_ns) / 1e9;
	c->ms->ttft_count++;
	c->ms->ttft_sum_s += s;
	for (uint32_t i = 0; i < BK_TTFT_BUCKETS; i++)
		if (s <= bk_ttft_bounds[i])
			c->ms->ttft_buckets[i]++;
}

/* ---- the breaker ----------------------------------------------------------- */

/* May be take a call now? An open breaker lets one probe through once its
 * time is up. */
static bool bk_breaker_allows(const struct bk_backend *be, uint64_t now)
{
	switch (be->breaker) {
	case BK_BREAKER_CLOSED:
		return true;
	case BK_BREAKER_OPEN:
		return now >= be->open_until_ns && !be->probing;
	case BK_BREAKER_HALF_OPEN:
		return !be->probing;
	}
	return false;
}

static void bk_breaker_ok(struct bk_backend *be)
{
	if (be->breaker != BK_BREAKER_CLOSED)
		LOG_INFO("backend %s: breaker closed", be->cfg.name);
	be->breaker = BK_BREAKER_CLOSED;
	be->failures = 0;
	be->probing = false;
}

static void bk_breaker_fail(struct bk_mgr *m, struct bk_backend *be)
{
	be->failures++;
	if (be->breaker == BK_BREAKER_HALF_OPEN || be->breaker == BK_BREAKER_OPEN ||
	    be->failures >= be->cfg.breaker_failures) {
		if (be->breaker == BK_BREAKER_CLOSED)
			LOG_WARN("backend %s: breaker open after %u failures", be->cfg.name, be->failures);
		be->breaker = BK_BREAKER_OPEN;
		be->open_until_ns = cpl_now(m->loop) + (uint64_t)be->cfg.breaker_open_ms * 1000000ull;
	}
	be->probing = false;
}

/* ---- routing ----------------------------------------------------------- */

static bool bk_has_slot(const struct bk_backend *be)
{
	return be->cfg.max_concurrency == 0 || be->inflight < be->cfg.max_concurrency;
}

/* a's load per weight below b's? */
static bool bk_lighter(const struct bk_backend *a, const struct bk_backend *b)
{
	uint64_t la = (uint64_t)(a->inflight + a->queued), lb = (uint64_t)(b->inflight + b->queued);
	uint64_t wa = a->cfg.weight ? a->cfg.weight : 1, wb = b->cfg.weight ? b->cfg.weight : 1;
	return la * wb < lb * wa;
}


static void bk_status(struct bk_call *c, enum bk_status st)
{
	c->in_cb++;
	c->ev->status(c->arg, st, c->be ? c->be->cfg.name : "");
	c->in_cb--;
}

static void bk_arm(struct bk_call *c, uint64_t deadline)
{
	if (cpl_timer_arm(c->m->loop, &c->timer, deadline) < 0)
		LOG_ERROR("backend call: the timer heap is full; its deadline is lost");
}

/* Sends c to be now. -1 when it could not even be sent (the failure is
 * counted on be and c->tried marks it). */
static int bk_dispatch(struct bk_call *c, struct bk_backend *be, uint64_t now)
{
	struct bk_mgr *m = c->m;
	cpl_timer_cancel(m->loop, &c->timer);
	cpl_timer_init(&c->timer, bk_call_timer, c);
	c->be = be;
	c->state = BK_C_RUNNING;
	c->tried |= 1u << be->slot;
	c->counted = true;
	be->inflight++;
	be->requests++;
	c->ms = bk_ms(be, c->model);
	if (c->ms) {
		c->ms->requests++;
		c->ms->inflight++;
	}
	m->calls_total++;
	if (be->breaker != BK_BREAKER_CLOSED) {
		be->breaker = BK_BREAKER_HALF_OPEN;
		be->probing = true;
		c->probe = true;
	}
	c->sent_ns = c->last_rx_ns = now;
	if (!be->ops)
		return bk_syn_start(c);
	c->http_status = 0;
	c->blen = 0;
	c->end_marker = false;
	c->usage_seen = false;
	c->finish[0] = '\0';
	sse_init(&c->sse, BK_EVENT_MAX);
	ndj_init(&c->ndj, BK_EVENT_MAX);
	if (be->ops->request(c) < 0 || bk_curl_start(&c->x) < 0) {
		if (c->x.easy)
			bk_curl_stop(&c->x);
		snprintf(be->last_error, sizeof(be->last_error), "the request could not be started");
		return -1;
	}
	bk_arm(c, now + (uint64_t)be->cfg.first_token_timeout_ms * 1000000ull);
	bk_status(c, BK_STATUS_WAITING);
	return 0;
}

/* Takes back a dispatch that failed before anything was sent: the failure
 * counts on be. */
static void bk_undispatch(struct bk_call *c, struct bk_backend *be)
{
	c->counted = false;
	be->inflight--;
	be->errors++;
	if (c->ms) {
		c->ms->errors++;
		c->ms->inflight--;
	}
	c->probe = false;
	bk_breaker_fail(c->m, be);
	cpl_timer_cancel(c->m->loop, &c->timer);
	c->state = BK_C_NEW;
	c->be = NULL;
}

/* Gives back c's slot on its backend, which may start a queued call. */
static void bk_release(struct bk_call *c)
{
	if (!c->counted)
		return;
	c->counted = false;
	struct bk_backend *be = c->be;
	be->inflight--;
	if (c->ms && c->ms->inflight)
		c->ms->inflight--;
	if (c->probe && be->probing)
		be->probing = false;
	c->probe = false;
	bk_pump(be);
}

/* May be take a call for model now (routing's checks, no tried mask)? */
static bool bk_candidate(const struct bk_backend *be, const char *model, uint64_t now)
{
	return be->used && be->admin == BK_ADMIN_ENABLED && be->health != BK_HEALTH_DOWN &&
	       bk_serves(be, model) && bk_breaker_allows(be, now);
}

bool bk_has_room(const struct bk_mgr *m, const char *model)
{
	uint64_t now = cpl_now(m->loop);
	bool any = false;
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
		const struct bk_backend *be = &m->be[i];
		if (!bk_candidate(be, model, now))
			continue;
		any = true;
		if (bk_has_slot(be) || be->queued < be->cfg.max_queue)
			return true;
	}
	return !any; /* none at all is another error, found when the call starts */
}

/*
 * Routes c to a backend serving its model that it has not tried: one with
 * a free slot, the least loaded per weight, else the least loaded whose
 * queue has room. Returns 0 (sent or queued), -EAGAIN (every queue full) or
 * -ENETDOWN (none up, enabled and allowed by its breaker).
 */
static int bk_route(struct bk_call *c)
{
	struct bk_mgr *m = c->m;
	uint64_t now = cpl_now(m->loop);
	for (;;) {
		struct bk_backend *best = NULL, *bestq = NULL;
		bool any = false;
		for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
			struct bk_backend *be = &m->be[i];
			if ((c->tried & (1u << i)) || !bk_candidate(be, c->model, now))
				continue;
			any = true;
			if (bk_has_slot(be)) {
				if (!best || bk_lighter(be, best))
					best = be;
			} else if (be->queued < be->cfg.max_queue && (!bestq || bk_lighter(be, bestq))) {
				bestq = be;
			}
		}
		if (best) {
			if (bk_dispatch(c, best, now) == 0)
				return 0;
			bk_undispatch(c, best);
			continue;
		}
		if (bestq) {
			c->be = bestq;
			c->state = BK_C_QUEUED;
			c->qprev = bestq->qtail;
			c->qnext = NULL;
			if (bestq->qtail)
				bestq->qtail->qnext = c;
			else
				bestq->qhead = c;
			bestq->qtail = c;
			bestq->queued++;
			bk_status(c, BK_STATUS_WAITING);
			return 0;
		}
		return any ? -EAGAIN : -ENETDOWN;
	}
}

/* Ends c with an error (it was never or is no longer running upstream). */
static void bk_end_error(struct bk_call *c, uint16_t status, const char *code, const char *msg)
{
	c->state = BK_C_ENDED;
	struct bk_end e = { .kind = BK_END_ERROR, .code = code, .message = msg, .http_status = status,
			    .finish_reason = c->finish[0] ? c->finish : NULL };
	c->in_cb++;
	c->ev->end(c->arg, &e);
	c->in_cb--;
	bk_call_free(c);
}

/* Starts queued calls while be has slots (a draining backend still serves
 * what it queued). A queued call its backend can no longer take goes to
 * another, or fails. */
static void bk_pump(struct bk_backend *be)
{
	while (be->qhead && bk_has_slot(be)) {
		struct bk_call *c = be->qhead;
		struct bk_mgr *m = c->m;
		uint64_t now = cpl_now(m->loop);
		bk_queue_remove(c);
		c->be = NULL;
		c->state = BK_C_NEW;
		if (be->admin != BK_ADMIN_REMOVING && be->health != BK_HEALTH_DOWN &&
		    bk_breaker_allows(be, now)) {
			if (bk_dispatch(c, be, now) == 0)
				continue;
			bk_undispatch(c, be);
		}
		c->tried |= 1u << be->slot;
		c->be = NULL;
		int rc = bk_route(c);
		if (rc < 0)
			bk_end_error(c, 503, "backend_unavailable", "no backend can take the request now");
	}
}

/* ---- calls --------------------------------------------------------------- */

/* The text of a message's content: a string, or the text parts of an array. */
static void bk_content_text(json_t *msg, const char **p, size_t *n)
{
	json_t *content = json_object_get(msg, "content");
	*p = NULL;
	*n = 0;
	if (json_is_string(content)) {
		*p = json_string_value(content);
		*n = json_string_length(content);
		return;
	}
	size_t i;
	json_t *part;
	json_array_foreach(content, i, part) {
		json_t *t = json_object_get(part, "text");
		if (json_is_string(t)) {
			*p = json_string_value(t);
			*n = json_string_length(t);
		}
	}
}

static int bk_copy_request(struct bk_call *c, const struct bk_request *req)
{
	static const char *const roles[] = { "system", "user", "assistant" };
	snprintf(c->model, sizeof(c->model), "%s", req->model);
	if (req->messages_json) {
		c->messages = json_loadb(req->messages_json, req->messages_json_len, 0, NULL);
		if (!json_is_array(c->messages))
			return -EINVAL;
	} else {
		c->messages = json_array();
		for (uint32_t i = 0; c->messages && i < req->nmsgs; i++) {
			const struct bk_msg *mm = &req->msgs[i];
			json_t *o = json_pack("{s:s,s:s%}", "role", roles[mm->role], "content",
					      mm->content ? mm->content : "", mm->len);
			if (!o || json_array_append_new(c->messages, o) < 0)
				return -ENOMEM;
		}
		if (!c->messages)
			return -ENOMEM;
	}
	if (req->params_json) {
		c->params = json_loadb(req->params_json, req->params_len, 0, NULL);
		if (!json_is_object(c->params))
			return -EINVAL;
	}
	size_t i = json_array_size(c->messages);
	while (i-- > 0) {
		json_t *msg = json_array_get(c->messages, i);
		if (json_is_string(json_object_get(msg, "role")) &&
		    strcmp(json_string_value(json_object_get(msg, "role")), "user") == 0) {
			const char *p;
			size_t n;
			bk_content_text(msg, &p, &n);
			c->prompt = malloc(n + 1);
			if (!c->prompt)
				return -ENOMEM;
			if (n)
				memcpy(c->prompt, p, n);
			c->prompt[n] = '\0';
			c->prompt_len = n;
			break;
		}
	}
	return 0;
}

struct bk_call *bk_call_start(struct bk_mgr *m, const struct bk_request *req, const struct bk_events *ev,
			      void *arg, int *rc)
{
	if (m->shutting_down) {
		*rc = -ENETDOWN;
		return NULL;
	}
	if (!bk_model_served(m, req->model)) {
		*rc = -ENOENT;
		return NULL;
	}
	struct bk_call *c = calloc(1, sizeof(*c));
	if (!c) {
		*rc = -ENOMEM;
		return NULL;
	}
	c->m = m;
	c->ev = ev;
	c->arg = arg;
	cpl_timer_init(&c->timer, bk_call_timer, c);
	c->next = m->calls;
	if (m->calls)
		m->calls->prev = c;
	m->calls = c;
	*rc = bk_copy_request(c, req);
	if (*rc == 0) {
		c->start_ns = req->start_ns ? req->start_ns : sluice_now_ns();
		*rc = bk_route(c);
	}
	if (*rc < 0) {
		if (*rc == -EAGAIN)
			m->rejected++;
		for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++)
			if (*rc == -EAGAIN && m->be[i].used && bk_serves(&m->be[i], req->model))
				m->be[i].rejected++;
		bk_call_free(c);
		return NULL;
	}
	if (c->state == BK_C_QUEUED)
		bk_arm(c, cpl_now(m->loop) + (uint64_t)c->be->cfg.first_token_timeout_ms * 1000000ull);
	return c;
}

void bk_call_free(struct bk_call *c)
{
	struct bk_mgr *m = c->m;
	cpl_timer_cancel(m->loop, &c->timer);
	if (c->prev)
		c->prev->next = c->next;
	else
		m->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	json_decref(c->messages);
	json_decref(c->params);
	free(c->prompt);
	free(c->buf);
	bool removing = c->be && c->be->admin == BK_ADMIN_REMOVING;
	free(c);
	if (removing)
		bk_collect(m);
}

/* Stops whatever c has running upstream (safe outside libcurl's callbacks). */
static void bk_stop(struct bk_call *c)
{
	if (c->state == BK_C_QUEUED)
		bk_queue_remove(c);
	if (c->x.active || c->x.easy)
		bk_curl_stop(&c->x);
	cpl_timer_cancel(c->m->loop, &c->timer);
}

/* Finishes a cancel: nothing more reaches the caller. */
static void bk_cancel_now(struct bk_call *c)
{
	c->m->cancels++;
	bk_stop(c);
	bk_release(c);
	bk_call_free(c);
}

void bk_call_cancel(struct bk_call *c)
{
	if (!c || c->cancelled)
		return;
	c->cancelled = true;
	if (c->in_cb || c->m->in_curl)
		return; /* finished when the callback or libcurl returns (bk_reap) */
	if (c->state == BK_C_ENDED) {
		/* Ended, only its transfer still finishing: close it now. */
		bk_stop(c);
		bk_call_free(c);
		return;
	}
	bk_cancel_now(c);
}

void bk_reap(struct bk_mgr *m)
{
	if (m->in_curl)
		return;
	for (struct bk_call *c = m->calls, *next; c; c = next) {
		next = c->next;
		if (c->in_cb)
			continue;
		if (c->cancelled) {
			if (c->state == BK_C_ENDED) {
				bk_stop(c);
				bk_call_free(c);
			} else {
				bk_cancel_now(c);
			}
		} else if (c->pf.set && !c->x.active) {
			struct bk_pending_fail f = c->pf;
			c->pf.set = false;
			bk_fail_now(c, f.retry, f.status, f.code, f.msg);
		} else {
			continue;
		}
		next = m->calls; /* the list changed: start over (this is rare) */
	}
}

/* ---- events ---------------------------------------------------------------- */

/* The first thing the caller gets from the answer: the breaker hears of a
 * success and the caller of the stream. */
static bool bk_first(struct bk_call *c)
{
	if (c->relayed)
		return true;
	c->relayed = true;
	bk_ttft(c, sluice_now_ns());
	bk_breaker_ok(c->be);
	bk_status(c, BK_STATUS_STREAMING);
	return !c->cancelled;
}

/* Cuts len bytes at a UTF-8 character boundary at or below max. */
static size_t bk_utf8_cut(const char *p, size_t len, size_t max)
{
	if (len <= max)
		return len;
	size_t n = max;
	while (n > 0 && ((unsigned char)p[n] & 0xc0) == 0x80)
		n--;
	return n ? n : max;
}

bool bk_emit_token(struct bk_call *c, const char *text, size_t len)
{
	if (c->cancelled || c->state != BK_C_RUNNING || !bk_first(c))
		return false;
	while (len > 0) {
		size_t n = bk_utf8_cut(text, len, BK_TOKEN_MAX);
		c->in_cb++;
		c->ev->token(c->arg, text, n);
		c->in_cb--;
		if (c->cancelled)
			return false;
		text += n;
		len -= n;
	}
	return true;
}

bool bk_emit_delta(struct bk_call *c, const char *json, size_t len)
{
	if (c->cancelled || c->state != BK_C_RUNNING || !bk_first(c))
		return false;
	c->in_cb++;
	c->ev->delta(c->arg, json, len);
	c->in_cb--;
	return !c->cancelled;
}

void bk_emit_usage(struct bk_call *c, uint32_t prompt_tokens, uint32_t completion_tokens)
{
	if (c->cancelled || c->state != BK_C_RUNNING)
		return;
	c->usage_seen = true;
	c->prompt_tokens = prompt_tokens;
	c->completion_tokens = completion_tokens;
	c->in_cb++;
	c->ev->usage(c->arg, prompt_tokens, completion_tokens);
	c->in_cb--;
}

void bk_emit_complete(struct bk_call *c, const char *finish_reason)
{
	if (c->cancelled || c->state != BK_C_RUNNING)
		return;
	if (!c->relayed)
		bk_breaker_ok(c->be);
	if (c->ms && c->usage_seen) {
		c->ms->prompt_tokens += c->prompt_tokens;
		c->ms->completion_tokens += c->completion_tokens;
	}
	c->state = BK_C_ENDED;
	cpl_timer_cancel(c->m->loop, &c->timer);
	bk_release(c);
	struct bk_end e = { .kind = BK_END_COMPLETE, .finish_reason = finish_reason };
	c->in_cb++;
	c->ev->end(c->arg, &e);
	c->in_cb--;
	if (c->x.active) {
		/* The answer is complete; the transfer ends on its own (its
		 * connection then serves the next request). Give it a moment. */
		bk_arm(c, cpl_now(c->m->loop) + 1000000000ull);
		return;
	}
	bk_call_free(c);
}

/* The attempt failed (outside libcurl's callbacks): the transfer stops and
 * the call goes to another backend when nothing was relayed and retry
 * allows, else ends with the error. */
static void bk_fail_now(struct bk_call *c, bool retry, uint16_t status, const char *code, const char *msg)
{
	struct bk_mgr *m = c->m;
	struct bk_backend *be = c->be;
	bool ran = c->state == BK_C_RUNNING;
	bk_stop(c);
	if (be && ran) {
		be->errors++;
		if (c->ms)
			c->ms->errors++;
		snprintf(be->last_error, sizeof(be->last_error), "%s", msg);
		if (retry)
			bk_breaker_fail(m, be);
	}
	bk_release(c);
	m->upstream_errors++;
	if (retry && !c->relayed && !m->shutting_down) {
		c->be = NULL;
		c->state = BK_C_NEW;
		if (bk_route(c) == 0) {
			m->failovers++;
			if (be)
				be->failovers++;
			LOG_INFO("backend %s failed (%s): the request went to %s", be ? be->cfg.name : "-", msg,
				 c->be ? c->be->cfg.name : "-");
			return;
		}
		c->be = be;
	}
	bk_end_error(c, status, code, msg);
}

void bk_fail(struct bk_call *c, bool retry, uint16_t status, const char *code, const char *fmt, ...)
{
	char msg[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->cancelled)
		return;
	if (c->m->in_curl) {
		struct bk_pending_fail *p = &c->pf;
		p->set = true;
		p->retry = retry;
		p->status = status;
		snprintf(p->code, sizeof(p->code), "%s", code);
		snprintf(p->msg, sizeof(p->msg), "%s", msg);
		return;
	}
	bk_fail_now(c, retry, status, code, msg);
}

/* Deadlines: a queued call waited too long, no first token, the upstream
 * went silent, or a completed call's transfer did not end. */
static void bk_call_timer(void *arg, uint64_t now_ns)
{
	struct bk_call *c = arg;
	if (c->state == BK_C_ENDED) {
		bk_stop(c);
		bk_call_free(c);
		return;
	}
	if (c->state == BK_C_QUEUED) {
		bk_fail_now(c, false, 503, "backend_busy", "no backend slot became free in time");
		return;
	}
	if (!c->be || !c->be->ops)
		return;
	const struct conf_backend *cfg = &c->be->cfg;
	if (!c->relayed) {
		char msg[96];
		snprintf(msg, sizeof(msg), "no first token from %s within %u ms", cfg->name,
			 cfg->first_token_timeout_ms);
		bk_fail_now(c, true, 504, "backend_timeout", msg);
		return;
	}
	uint64_t idle = (uint64_t)cfg->idle_timeout_ms * 1000000ull;
	if (now_ns - c->last_rx_ns < idle) {
		bk_arm(c, c->last_rx_ns + idle);
		return;
	}
	char msg[96];
	snprintf(msg, sizeof(msg), "%s sent nothing for %u ms", cfg->name, cfg->idle_timeout_ms);
	bk_fail_now(c, true, 504, "backend_timeout", msg);
}

/* ---- what the network clients share -------------------------------------- */

void bk_call_xfer_done(struct bk_call *c, CURLcode rc, long status, const char *why)
{
	struct bk_pending_fail *p = &c->pf;
	bk_curl_stop(&c->x);
	if (c->cancelled) {
		p->set = false;
		bk_reap(c->m);
		return;
	}
	if (c->state == BK_C_ENDED) {
		p->set = false;
		bk_call_free(c);
		return;
	}
	if (p->set) {
		struct bk_pending_fail f = *p;
		p->set = false;
		bk_fail_now(c, f.retry, f.status, f.code, f.msg);
		return;
	}
	const char *name = c->be->cfg.name;
	if (rc != CURLE_OK) {
		char msg[160];
		snprintf(msg, sizeof(msg), "%s: %s", name, why && why[0] ? why : curl_easy_strerror(rc));
		bool timeout = rc == CURLE_OPERATION_TIMEDOUT;
		bk_fail_now(c, true, timeout ? 504 : 502, c->relayed ? "backend_lost" : "backend_unavailable",
			    msg);
		return;
	}
	if (status != 200) {
		json_t *body = c->blen ? json_loadb(c->buf, c->blen, 0, NULL) : NULL;
		const char *um = bk_error_message(body);
		char msg[160];
		snprintf(msg, sizeof(msg), "%s answered %ld%s%s", name, status, um ? ": " : "", um ? um : "");
		json_decref(body);
		/* The request's own fault (unknown model, bad parameters) is the
		 * client's to hear; the backend's (5xx, overload, refused key) may
		 * be another backend's to serve. */
		bool retry = status >= 500 || status == 429 || status == 401 || status == 403 || status == 408;
		uint16_t st = status == 400 || status == 404 || status == 413 || status == 422 ? (uint16_t)status
			      : status == 429 ? 429 : 502;
		bk_fail_now(c, retry, st, status == 404 ? "model_not_found" : retry ? "backend_error"
									     : "invalid_request", msg);
		return;
	}
	if (!c->be->ops->finish(c)) {
		char msg[160];
		snprintf(msg, sizeof(msg), "%s closed the stream before its end", name);
		bk_fail_now(c, true, 502, "backend_lost", msg);
	}
}

static struct bk_call *bk_of_xfer(struct bk_xfer *x)
{
	return (struct bk_call *)((char *)x - offsetof(struct bk_call, x));
}

/* Response bytes of a call: an error answer is kept (bounded) for its
 * message, a 200 answer goes to the client's parser. */
static bool bk_net_on_data(struct bk_xfer *x, const char *p, size_t n)
{
	struct bk_call *c = bk_of_xfer(x);
	if (c->cancelled || c->pf.set)
		return false;
	if (c->state == BK_C_ENDED)
		return true;
	c->last_rx_ns = sluice_now_ns();
	if (!c->http_status)
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &c->http_status);
	if (c->http_status != 200) {
		size_t room = c->bcap - c->blen;
		if (room < n && c->bcap < 65536) {
			size_t cap = c->blen + n < 65536 ? c->blen + n : 65536;
			char *b = realloc(c->buf, cap);
			if (b) {
				c->buf = b;
				c->bcap = cap;
				room = cap - c->blen;
			}
		}
		size_t k = n < room ? n : room;
		if (k) {
			memcpy(c->buf + c->blen, p, k);
			c->blen += k;
		}
		return true;
	}
	if (c->be->ops->data(c, p, n))
		return true;
	return !(c->pf.set || c->cancelled);
}

static void bk_net_on_done(struct bk_xfer *x, CURLcode rc, long status, const char *why)
{
	bk_call_xfer_done(bk_of_xfer(x), rc, status, why);
}

int bk_net_request(struct bk_call *c, const char *path, json_t *body)
{
	struct bk_backend *be = c->be;
	char url[CONF_URL_MAX + 64];
	char *txt = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!txt || !bk_url(be, path, url, sizeof(url)) || bk_curl_prepare(c->m, &c->x, url, be, 0) < 0) {
		free(txt);
		return -1;
	}
	c->x.body = txt;
	c->x.on_data = bk_net_on_data;
	c->x.on_done = bk_net_on_done;
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	h = h ? curl_slist_append(h, "Accept: text/event-stream, application/x-ndjson") : NULL;
	h = h ? bk_headers(be, h) : NULL;
	if (!h)
		return -1;
	c->x.hdrs = h;
	curl_easy_setopt(c->x.easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c->x.easy, CURLOPT_POSTFIELDS, txt);
	curl_easy_setopt(c->x.easy, CURLOPT_POSTFIELDSIZE, (long)strlen(txt));
	return 0;
}

/* Appends n stream bytes to c's pending buffer: false when out of room. */
bool bk_buf_put(struct bk_call *c, const char *p, size_t n)
{
	if (c->blen + n > c->bcap) {
		size_t cap = c->bcap ? c->bcap : 4096;
		while (cap < c->blen + n)
			cap *= 2;
		if (cap > 2 * BK_EVENT_MAX)
			return false;
		char *b = realloc(c->buf, cap);
		if (!b)
			return false;
		c->buf = b;
		c->bcap = cap;
	}
	memcpy(c->buf + c->blen, p, n);
	c->blen += n;
	return true;
}

struct curl_slist *bk_headers(const struct bk_backend *be, struct curl_slist *h)
{
	char tmp[CONF_HEADERS_MAX];
	snprintf(tmp, sizeof(tmp), "%s", be->cfg.headers);
	for (char *item = tmp; h && *tmp && item;) {
		char *bar = strchr(item, '|');
		if (bar)
			*bar = '\0';
		while (*item == ' ' || *item == '\t')
			item++;
		size_t n = strlen(item);
		while (n && (item[n - 1] == ' ' || item[n - 1] == '\t'))
			item[--n] = '\0';
		struct curl_slist *nh = curl_slist_append(h, item);
		if (!nh) {
			curl_slist_free_all(h);
			return NULL;
		}
		h = nh;
		item = bar ? bar + 1 : NULL;
	}
	if (h && be->auth_header) {
		struct curl_slist *nh = curl_slist_append(h, be->auth_header);
		if (!nh)
			curl_slist_free_all(h);
		h = nh;
	}
	return h;
}

bool bk_url(const struct bk_backend *be, const char *path, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s%s", be->cfg.url, path);
	return n > 0 && (size_t)n < cap;
}

const char *bk_error_message(json_t *body)
{
	json_t *e = json_object_get(body, "error");
	if (json_is_string(e))
		return json_string_value(e);
	return json_string_value(json_object_get(e, "message"));
}

/* ---- operators --------------------------------------------------------------- */

void bk_foreach(const struct bk_mgr *m, void (*fn)(void *arg, const struct bk_info *b), void *arg)
{
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
		const struct bk_backend *be = &m->be[i];
		if (!be->used)
			continue;
		struct bk_info b = {
			.cfg = &be->cfg, .health = be->health, .breaker = be->breaker, .admin = be->admin,
			.runtime = be->runtime, .inflight = be->inflight, .queued = be->queued,
			.consecutive_failures = be->failures, .requests = be->requests, .errors = be->errors,
			.failovers = be->failovers, .rejected = be->rejected, .last_error = be->last_error,
			.models = be->ms, .nmodels = be->nms, .discovered = be->disc_ptrs,
			.ndiscovered = be->ndisc,
		};
		fn(arg, &b);
	}
}

int bk_backend_add(struct bk_mgr *m, const struct conf_backend *cfg, char *err, size_t errlen)
{
	if (bk_find(m, cfg->name)) {
		snprintf(err, errlen, "backend %s exists", cfg->name);
		return -EEXIST;
	}
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
		if (m->be[i].used)
			continue;
		if (bk_backend_init(m, i, cfg, true, err, errlen) < 0)
			return -EINVAL;
		LOG_INFO("backend %s added (%s, until control restarts)", cfg->name,
			 cfg->type == CONF_BACKEND_OPENAI ? "openai" : cfg->type == CONF_BACKEND_OLLAMA ? "ollama"
												: "synthetic");
		return 0;
	}
	snprintf(err, errlen, "already %u backends", CONF_MAX_BACKENDS);
	return -ENOSPC;
}

int bk_backend_drain(struct bk_mgr *m, const char *name)
{
	struct bk_backend *be = bk_find(m, name);
	if (!be || be->admin == BK_ADMIN_REMOVING)
		return -ENOENT;
	be->admin = BK_ADMIN_DRAINING;
	LOG_INFO("backend %s draining", name);
	return 0;
}

int bk_backend_enable(struct bk_mgr *m, const char *name)
{
	struct bk_backend *be = bk_find(m, name);
	if (!be || be->admin == BK_ADMIN_REMOVING)
		return -ENOENT;
	be->admin = BK_ADMIN_ENABLED;
	bk_breaker_ok(be);
	LOG_INFO("backend %s enabled", name);
	return 0;
}

/* Frees removed backends whose last call ended. */
static void bk_collect(struct bk_mgr *m)
{
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
		struct bk_backend *be = &m->be[i];
		if (!be->used || be->admin != BK_ADMIN_REMOVING || be->inflight || be->queued)
			continue;
		bool referenced = false;
		for (const struct bk_call *c = m->calls; c && !referenced; c = c->next)
			referenced = c->be == be;
		if (!referenced) {
			LOG_INFO("backend %s removed", be->cfg.name);
			bk_backend_release(m, be);
		}
	}
}

int bk_backend_remove(struct bk_mgr *m, const char *name)
{
	struct bk_backend *be = bk_find(m, name);
	if (!be || be->admin == BK_ADMIN_REMOVING)
		return -ENOENT;
	be->admin = BK_ADMIN_REMOVING;
	bk_health_stop(m, be);
	bk_collect(m);
	return 0;
}

void bk_totals(const struct bk_mgr *m, struct bk_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->calls = m->calls_total;
	out->rejected = m->rejected;
	out->failovers = m->failovers;
	out->upstream_errors = m->upstream_errors;
	out->cancels = m->cancels;
	for (uint32_t i = 0; i < CONF_MAX_BACKENDS; i++) {
		if (!m->be[i].used)
			continue;
		out->inflight += m->be[i].inflight;
		out->queued += m->be[i].queued;
	}
}
