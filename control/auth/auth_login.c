/*
 * Fair admission to the password pool and the per-user session cap (see
 * auth_login.h). The running checks are few (at most PWH_MAX_SLOTS), so
 * they are an array scanned whole; the rates use the throttling tables of
 * auth.c with every admitted login counted as a "failure".
 */
#include "auth/auth_login.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"

static uint64_t auth_login_key(const struct auth_throttle *t, const char *key, size_t len)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)key, len, t->key);
	return h;
}

int64_t auth_login_admit(struct auth *a, const char *user, size_t ul, const char *addr, size_t al,
			 int64_t now, struct auth_login_ticket *t)
{
	int64_t wu = auth_throttle_wait(&a->rate_user, user, ul, now);
	int64_t wa = auth_throttle_wait(&a->rate_addr, addr, al, now);
	if (wu > 0 || wa > 0)
		return wu > wa ? wu : wa;
	uint64_t hu = auth_login_key(&a->rate_user, user, ul);
	uint64_t ha = auth_login_key(&a->rate_addr, addr, al);
	uint32_t nu = 0, na = 0, free_slot = PWH_MAX_SLOTS;
	for (uint32_t i = 0; i < PWH_MAX_SLOTS; i++) {
		const struct auth_login_run *r = &a->running[i];
		if (!r->used) {
			if (free_slot == PWH_MAX_SLOTS)
				free_slot = i;
			continue;
		}
		nu += r->user == hu;
		na += r->addr == ha;
	}
	/* A slot of this table exists for every slot of the pool; when the
	 * pool is full the submit itself answers 503. */
	if (nu >= a->conf->login_inflight_user || na >= a->conf->login_inflight_ip ||
	    free_slot == PWH_MAX_SLOTS)
		return 1;
	auth_throttle_fail(&a->rate_user, user, ul, now);
	auth_throttle_fail(&a->rate_addr, addr, al, now);
	a->running[free_slot] = (struct auth_login_run){ .user = hu, .addr = ha, .used = true };
	t->slot = free_slot;
	return 0;
}

void auth_login_release(struct auth *a, const struct auth_login_ticket *t)
{
	if (t->slot < PWH_MAX_SLOTS)
		memset(&a->running[t->slot], 0, sizeof(a->running[t->slot]));
}

struct auth_login_list {
	struct store_auth *v;
	uint32_t n, cap;
	bool oom;
};

static void auth_login_collect(void *arg, const struct store_auth *s)
{
	struct auth_login_list *l = arg;
	if (l->n == l->cap) {
		uint32_t cap = l->cap ? l->cap * 2 : 16;
		struct store_auth *v = realloc(l->v, cap * sizeof(*v));
		if (!v) {
			l->oom = true;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	/* Only what the trim needs: no CSRF token copied around. */
	struct store_auth *d = &l->v[l->n++];
	memset(d, 0, sizeof(*d));
	memcpy(d->hash, s->hash, sizeof(d->hash));
	d->created_at = s->created_at;
	d->expires_at = s->expires_at;
}

static int auth_login_older(const void *x, const void *y)
{
	const struct store_auth *a = x, *b = y;
	return (a->created_at > b->created_at) - (a->created_at < b->created_at);
}

static void auth_login_ignore(void *arg, int err)
{
	(void)arg;
	if (err && err != -ENOENT)
		LOG_WARN("auth: ending an old login session failed (%d)", err);
}

uint32_t auth_login_trim_sessions(struct auth *a, const char *user, int64_t now)
{
	struct auth_login_list l = { NULL, 0, 0, false };
	uint32_t ended = 0, live = 0;
	if (a->st->ops->auth_list(a->st, user, auth_login_collect, &l) < 0 || l.oom) {
		LOG_WARN("auth: cannot list the login sessions of a user; none ended");
		free(l.v);
		return 0;
	}
	if (l.n > 1) /* a user's first login has no list: qsort takes no NULL */
		qsort(l.v, l.n, sizeof(*l.v), auth_login_older);
	for (uint32_t i = 0; i < l.n; i++)
		live += now < l.v[i].expires_at;
	for (uint32_t i = 0; i < l.n; i++) {
		bool expired = now >= l.v[i].expires_at;
		if (!expired && live < a->conf->login_max_sessions)
			continue;
		if (!expired) {
			live--;
			ended++;
		}
		if (auth_session_revoke(a, l.v[i].hash, auth_login_ignore, NULL) < 0)
			LOG_WARN("auth: ending an old login session could not be queued");
	}
	if (ended)
		a->stats.sessions_ended_by_cap += ended;
	free(l.v);
	return ended;
}
