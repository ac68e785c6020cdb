/*
 * Health checks of network backends: GET of the models endpoint
 * ({url}/v1/models, {url}/api/tags) at start and every health_interval_ms.
 * A 200 answer marks the backend up and, for a backend configured without
 * models, is the list it serves; anything else marks it down, and routing
 * skips it until a check passes again. With health_interval_ms = 0 there
 * are no checks and the backend counts as up.
 */
#include "backends/bk_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"
#include "sluice/log.h"

#define BK_HEALTH_BODY_MAX (1u << 20)

static struct bk_backend *bk_health_owner(struct bk_xfer *x)
{
	struct bk_health_check *hc = (struct bk_health_check *)((char *)x - offsetof(struct bk_health_check, x));
	return (struct bk_backend *)((char *)hc - offsetof(struct bk_backend, hc));
}

static bool bk_health_data(struct bk_xfer *x, const char *p, size_t n)
{
	struct bk_health_check *hc = &bk_health_owner(x)->hc;
	if (hc->len + n > BK_HEALTH_BODY_MAX)
		return false;
	if (hc->len + n > hc->cap) {
		size_t cap = hc->cap ? hc->cap : 4096;
		while (cap < hc->len + n)
			cap *= 2;
		char *b = realloc(hc->buf, cap);
		if (!b)
			return false;
		hc->buf = b;
		hc->cap = cap;
	}
	memcpy(hc->buf + hc->len, p, n);
	hc->len += n;
	return true;
}

static void bk_health_set(struct bk_backend *be, enum bk_health h, const char *why)
{
	if (be->health != h)
		LOG_INFO("backend %s: %s%s%s", be->cfg.name, h == BK_HEALTH_UP ? "up" : "down", why ? ": " : "",
			 why ? why : "");
	be->health = h;
	if (why)
		snprintf(be->last_error, sizeof(be->last_error), "%s", why);
}

static void bk_health_done(struct bk_xfer *x, CURLcode rc, long status, const char *why)
{
	struct bk_backend *be = bk_health_owner(x);
	struct bk_health_check *hc = &be->hc;
	bk_curl_stop(x);
	hc->running = false;
	char msg[160];
	if (rc != CURLE_OK) {
		snprintf(msg, sizeof(msg), "health check: %s", why && why[0] ? why : curl_easy_strerror(rc));
		bk_health_set(be, BK_HEALTH_DOWN, msg);
	} else if (status != 200) {
		snprintf(msg, sizeof(msg), "health check: HTTP %ld", status);
		bk_health_set(be, BK_HEALTH_DOWN, msg);
	} else {
		if (!be->disc) {
			be->disc = calloc(BK_DISCOVER_MAX, sizeof(*be->disc));
		}
		if (be->disc) {
			be->ndisc = be->ops->models(hc->buf ? hc->buf : "", hc->len, be->disc, BK_DISCOVER_MAX);
			for (uint32_t i = 0; i < be->ndisc; i++)
				be->disc_ptrs[i] = be->disc[i];
		}
		bk_health_set(be, BK_HEALTH_UP, NULL);
	}
	hc->len = 0;
	struct bk_mgr *m = x->m;
	if (be->cfg.health_interval_ms && be->admin != BK_ADMIN_REMOVING)
		cpl_timer_arm(m->loop, &hc->timer,
			      sluice_now_ns() + (uint64_t)be->cfg.health_interval_ms * 1000000ull);
}

static void bk_health_due(void *arg, uint64_t now_ns)
{
	(void)now_ns;
	struct bk_backend *be = arg;
	struct bk_health_check *hc = &be->hc;
	struct bk_mgr *m = hc->x.m;
	if (hc->running)
		return;
	char url[CONF_URL_MAX + 64];
	uint32_t t = be->cfg.health_interval_ms < BK_HEALTH_TIMEOUT_MS ? be->cfg.health_interval_ms
									 : BK_HEALTH_TIMEOUT_MS;
	struct curl_slist *h = NULL;
	if (!bk_url(be, be->ops->models_path, url, sizeof(url)) ||
	    bk_curl_prepare(m, &hc->x, url, be, t ? t : BK_HEALTH_TIMEOUT_MS) < 0 ||
	    !(h = bk_headers(be, curl_slist_append(NULL, "Accept: application/json")))) {
		if (hc->x.easy)
			bk_curl_stop(&hc->x);
		cpl_timer_arm(m->loop, &hc->timer, sluice_now_ns() + 1000000000ull);
		return;
	}
	hc->x.hdrs = h;
	hc->x.on_data = bk_health_data;
	hc->x.on_done = bk_health_done;
	curl_easy_setopt(hc->x.easy, CURLOPT_HTTPHEADER, h);
	hc->len = 0;
	if (bk_curl_start(&hc->x) < 0) {
		bk_curl_stop(&hc->x);
		cpl_timer_arm(m->loop, &hc->timer, sluice_now_ns() + 1000000000ull);
		return;
	}
	hc->running = true;
}

int bk_health_start(struct bk_mgr *m, struct bk_backend *be)
{
	struct bk_health_check *hc = &be->hc;
	hc->x.m = m;
	cpl_timer_init(&hc->timer, bk_health_due, be);
	if (be->cfg.health_interval_ms == 0) {
		be->health = BK_HEALTH_UP;
		/* Nothing would find its models: only listed ones are served. */
		return 0;
	}
	return cpl_timer_arm(m->loop, &hc->timer, sluice_now_ns());
}

void bk_health_stop(struct bk_mgr *m, struct bk_backend *be)
{
	struct bk_health_check *hc = &be->hc;
	if (!hc->x.m)
		return;
	cpl_timer_cancel(m->loop, &hc->timer);
	if (hc->running || hc->x.easy)
		bk_curl_stop(&hc->x);
	hc->running = false;
	free(hc->buf);
	hc->buf = NULL;
	hc->len = hc->cap = 0;
}

bool bk_serves(const struct bk_backend *be, const char *model)
{
	if (!model)
		return false;
	if (be->cfg.nmodels) {
		for (uint32_t i = 0; i < be->cfg.nmodels; i++)
			if (strcmp(be->cfg.models[i], model) == 0)
				return true;
		return false;
	}
	for (uint32_t i = 0; i < be->ndisc; i++)
		if (strcmp(be->disc[i], model) == 0)
			return true;
	return false;
}
