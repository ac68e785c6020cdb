/*
 * Quotas and rates (see limits.h). Entries are keyed by a hash of "u:NAME"
 * or "k:ID" (the id map takes short keys only); each keeps its override,
 * fixed-window counters (the minute and the UTC day they belong to) and,
 * for users, the stored text and conversation counts.
 */
#include "limits/limits.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "sluice/log.h"

struct lim_ent {
	struct idmap_node node; /* first: the map hands back this pointer */
	char key[STORE_LIMITS_KEY_MAX];
	struct store_limits ovr;
	int64_t minute, day;
	uint32_t msgs_min;
	uint64_t toks_min, toks_day;
	uint32_t running;
	uint8_t role; /* of the last message begun: what its answer's tokens weigh against */
	bool usage_known;
	uint64_t stored;
	uint64_t sessions;
};

static const struct {
	const char *key;
	const char *code;
	const char *what;
} lim_names[CONF_LIM_N] = {
	[CONF_LIM_STORED_MB] = { "stored_mb", "limit_stored_mb", "MiB of stored messages" },
	[CONF_LIM_SESSIONS] = { "sessions", "limit_sessions", "conversations" },
	[CONF_LIM_MESSAGES_PER_MIN] = { "messages_per_min", "limit_messages_per_min", "messages per minute" },
	[CONF_LIM_CONCURRENT] = { "concurrent_answers", "limit_concurrent_answers", "answers at once" },
	[CONF_LIM_TOKENS_PER_MIN] = { "tokens_per_min", "limit_tokens_per_min", "answer tokens per minute" },
	[CONF_LIM_TOKENS_PER_DAY] = { "tokens_per_day", "limit_tokens_per_day", "answer tokens per day" },
};

const char *lim_code(lim_id id)
{
	return id >= 0 && id < CONF_LIM_N ? lim_names[id].code : "limit";
}

const char *lim_key_name(lim_id id)
{
	return id >= 0 && id < CONF_LIM_N ? lim_names[id].key : "";
}

lim_id lim_by_name(const char *name)
{
	for (int i = 0; i < CONF_LIM_N; i++)
		if (strcmp(lim_names[i].key, name) == 0)
			return i;
	return -1;
}

static int64_t lim_wall(void *arg)
{
	(void)arg;
	return (int64_t)time(NULL);
}

int lim_init(struct limits *l, const struct sluice_conf *conf, struct store *st, char *err,
	     size_t errlen)
{
	memset(l, 0, sizeof(*l));
	l->conf = conf;
	l->st = st;
	l->now = lim_wall;
	if (idmap_init(&l->ents, 64) < 0) {
		snprintf(err, errlen, "limits: out of memory");
		return -1;
	}
	return 0;
}

static void lim_free_ent(struct idmap_node *n, void *arg)
{
	(void)arg;
	free(n);
}

void lim_free(struct limits *l)
{
	idmap_foreach(&l->ents, lim_free_ent, NULL);
	idmap_free(&l->ents);
}

/* The id map's key for a limits key: 'h' + 28 hex digits of its hash. */
static size_t lim_map_key(const char *key, char out[CHAN_ID_LEN])
{
	uint8_t h[14];
	crypto_generichash(h, sizeof(h), (const unsigned char *)key, strlen(key), NULL, 0);
	out[0] = 'h';
	sodium_bin2hex(out + 1, CHAN_ID_LEN - 1, h, sizeof(h));
	return 1 + 2 * sizeof(h);
}

static void lim_key(char out[STORE_LIMITS_KEY_MAX], char kind, const char *name)
{
	snprintf(out, STORE_LIMITS_KEY_MAX, "%c:%s", kind, name);
}

/* The entry of key, created (with its override read from the store) when
 * absent; NULL when out of memory. */
static struct lim_ent *lim_ent_get(struct limits *l, const char *key)
{
	char mk[CHAN_ID_LEN];
	size_t ml = lim_map_key(key, mk);
	struct lim_ent *e = (struct lim_ent *)idmap_find(&l->ents, mk, ml);
	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	snprintf(e->key, sizeof(e->key), "%s", key);
	for (int i = 0; i < CONF_LIM_N; i++)
		e->ovr.v[i] = STORE_LIMIT_UNSET;
	struct store_limits got;
	if (l->st->ops->limits_get && l->st->ops->limits_get(l->st, key, &got) == 0)
		memcpy(e->ovr.v, got.v, sizeof(e->ovr.v));
	if (idmap_insert(&l->ents, &e->node, mk, ml) < 0) {
		free(e);
		return NULL;
	}
	return e;
}

static struct lim_ent *lim_user_ent(struct limits *l, const char *user)
{
	char k[STORE_LIMITS_KEY_MAX];
	lim_key(k, 'u', user);
	return lim_ent_get(l, k);
}

static struct lim_ent *lim_key_ent(struct limits *l, const char *key_id)
{
	char k[STORE_LIMITS_KEY_MAX];
	if (!key_id || !key_id[0])
		return NULL;
	lim_key(k, 'k', key_id);
	return lim_ent_get(l, k);
}

/* The value in force: the override, else the role's (0: no limit). */
static uint32_t lim_value(const struct limits *l, const struct lim_ent *e, uint8_t role, lim_id id)
{
	if (e->ovr.v[id] != STORE_LIMIT_UNSET)
		return e->ovr.v[id];
	return l->conf->role_limits[role < CONF_NROLES ? role : CONF_ROLE_USER].v[id];
}

/* Moves the windows of e to now. */
static void lim_tick(struct limits *l, struct lim_ent *e)
{
	int64_t now = l->now(l->now_arg);
	if (now / 60 != e->minute) {
		e->minute = now / 60;
		e->msgs_min = 0;
		e->toks_min = 0;
	}
	if (now / 86400 != e->day) {
		e->day = now / 86400;
		e->toks_day = 0;
	}
}

struct lim_sids {
	char (*v)[CHAN_ID_LEN];
	uint32_t n, cap;
	bool oom;
};

static void lim_collect_sid(void *arg, const struct store_session *s)
{
	struct lim_sids *x = arg;
	if (x->n == x->cap) {
		uint32_t cap = x->cap ? x->cap * 2 : 64;
		void *v = realloc(x->v, cap * sizeof(*x->v));
		if (!v) {
			x->oom = true;
			return;
		}
		x->v = v;
		x->cap = cap;
	}
	memcpy(x->v[x->n++], s->id, CHAN_ID_LEN);
}

/* Bytes of message text stored in conversation sid. */
static uint64_t lim_session_bytes(struct limits *l, const char *sid)
{
	uint64_t b = 0;
	uint32_t n = store_message_count(l->st, sid);
	for (uint32_t i = 0; i < n; i++) {
		struct store_message m;
		if (store_message_get(l->st, sid, i, &m) == 0)
			b += m.content_len;
	}
	return b;
}

/* Reads a user's stored text and conversations from the store, once. */
static void lim_usage_load(struct limits *l, struct lim_ent *e, const char *user, uint64_t uid)
{
	struct lim_sids x = { NULL, 0, 0, false };
	char cursor[128] = "", next[128];
	if (e->usage_known)
		return;
	for (;;) {
		struct store_list_query q = { .user = user, .owner_uid = uid, .cursor = cursor,
					      .limit = 100, .q = NULL, .archived = -1 };
		next[0] = 0;
		if (store_session_list(l->st, &q, lim_collect_sid, &x, next, sizeof(next)) < 0 || x.oom)
			break;
		if (!next[0])
			break;
		memcpy(cursor, next, sizeof(cursor));
	}
	e->sessions = x.n;
	e->stored = 0;
	for (uint32_t i = 0; i < x.n; i++)
		e->stored += lim_session_bytes(l, x.v[i]);
	free(x.v);
	e->usage_known = true;
}

static int64_t lim_to_minute_end(const struct limits *l)
{
	int64_t now = l->now(l->now_arg);
	return 60 - now % 60;
}

static int64_t lim_to_day_end(const struct limits *l)
{
	int64_t now = l->now(l->now_arg);
	return 86400 - now % 86400;
}

static bool lim_refuse(struct limits *l, struct lim_refusal *why, lim_id id, bool by_key, uint64_t v,
		       int64_t retry)
{
	why->limit = id;
	why->by_key = by_key;
	why->value = v;
	why->retry_after = retry > 0 ? retry : 1;
	l->stats.refused[id]++;
	return false;
}

/* The rate and concurrency checks a user and a key share. */
static bool lim_rates_ok(struct limits *l, struct lim_ent *e, uint8_t role, bool by_key,
			 struct lim_refusal *why)
{
	uint32_t v;
	lim_tick(l, e);
	if ((v = lim_value(l, e, role, CONF_LIM_MESSAGES_PER_MIN)) && e->msgs_min >= v)
		return lim_refuse(l, why, CONF_LIM_MESSAGES_PER_MIN, by_key, v, lim_to_minute_end(l));
	if ((v = lim_value(l, e, role, CONF_LIM_CONCURRENT)) && e->running >= v)
		return lim_refuse(l, why, CONF_LIM_CONCURRENT, by_key, v, 5);
	if ((v = lim_value(l, e, role, CONF_LIM_TOKENS_PER_MIN)) && e->toks_min >= v)
		return lim_refuse(l, why, CONF_LIM_TOKENS_PER_MIN, by_key, v, lim_to_minute_end(l));
	if ((v = lim_value(l, e, role, CONF_LIM_TOKENS_PER_DAY)) && e->toks_day >= v)
		return lim_refuse(l, why, CONF_LIM_TOKENS_PER_DAY, by_key, v, lim_to_day_end(l));
	return true;
}

bool lim_message_begin(struct limits *l, const struct lim_who *w, size_t len, struct lim_refusal *why)
{
	struct lim_ent *u = lim_user_ent(l, w->user);
	struct lim_ent *k = lim_key_ent(l, w->key_id);
	uint32_t v;
	/* Without memory for the counters the message is let through: a
	 * limit must never turn into an outage. */
	if (!u)
		return true;
	if (!lim_rates_ok(l, u, w->role, false, why) || (k && !lim_rates_ok(l, k, w->role, true, why)))
		return false;
	lim_usage_load(l, u, w->user, w->uid);
	v = lim_value(l, u, w->role, CONF_LIM_STORED_MB);
	if (v && u->stored + len > (uint64_t)v << 20)
		return lim_refuse(l, why, CONF_LIM_STORED_MB, false, v, 60);
	u->msgs_min++;
	u->running++;
	u->stored += len;
	u->role = w->role;
	if (k) {
		k->msgs_min++;
		k->running++;
		k->role = w->role;
	}
	return true;
}

static void lim_each(struct limits *l, const char *user, const char *key_id,
		     void (*fn)(struct lim_ent *e, void *arg), void *arg)
{
	struct lim_ent *u = lim_user_ent(l, user);
	struct lim_ent *k = lim_key_ent(l, key_id);
	if (u)
		fn(u, arg);
	if (k)
		fn(k, arg);
}

static void lim_end_one(struct lim_ent *e, void *arg)
{
	(void)arg;
	if (e->running)
		e->running--;
}

void lim_message_failed(struct limits *l, const char *user, const char *key_id, size_t len)
{
	struct lim_ent *u = lim_user_ent(l, user);
	if (u)
		u->stored = u->stored > len ? u->stored - len : 0;
	lim_each(l, user, key_id, lim_end_one, NULL);
}

struct lim_toks {
	struct limits *l;
	int64_t n; /* may be negative: a correction */
};

static uint64_t lim_add(uint64_t v, int64_t n)
{
	if (n >= 0)
		return v + (uint64_t)n;
	return v > (uint64_t)-n ? v - (uint64_t)-n : 0;
}

static void lim_tokens_one(struct lim_ent *e, void *arg)
{
	struct lim_toks *t = arg;
	lim_tick(t->l, e);
	e->toks_min = lim_add(e->toks_min, t->n);
	e->toks_day = lim_add(e->toks_day, t->n);
}

void lim_answer_end(struct limits *l, const char *user, const char *key_id, int64_t extra_tokens)
{
	if (extra_tokens) {
		struct lim_toks t = { l, extra_tokens };
		lim_each(l, user, key_id, lim_tokens_one, &t);
	}
	lim_each(l, user, key_id, lim_end_one, NULL);
}

/* e's tokens went past its daily budget: fills *cut (when not NULL). An
 * answer that ends exactly at the budget is whole; the next is refused. */
static bool lim_day_spent(struct limits *l, const struct lim_ent *e, bool by_key, struct lim_refusal *cut)
{
	uint32_t v = lim_value(l, e, e->role, CONF_LIM_TOKENS_PER_DAY);
	if (!v || e->toks_day <= v)
		return false;
	if (cut)
		*cut = (struct lim_refusal){ .limit = CONF_LIM_TOKENS_PER_DAY, .by_key = by_key, .value = v,
					     .retry_after = lim_to_day_end(l) };
	return true;
}

bool lim_answer_tokens(struct limits *l, const char *user, const char *key_id, uint32_t n,
		       size_t bytes, struct lim_refusal *cut)
{
	struct lim_toks t = { l, n };
	lim_each(l, user, key_id, lim_tokens_one, &t);
	struct lim_ent *u = lim_user_ent(l, user);
	struct lim_ent *k = lim_key_ent(l, key_id);
	if (u)
		u->stored += bytes;
	/* The key's budget is named first: it is the narrower one when both
	 * are spent. */
	return (k && lim_day_spent(l, k, true, cut)) || (u && lim_day_spent(l, u, false, cut));
}

bool lim_session_begin(struct limits *l, const struct lim_who *w, struct lim_refusal *why)
{
	struct lim_ent *u = lim_user_ent(l, w->user);
	if (!u)
		return true;
	lim_usage_load(l, u, w->user, w->uid);
	uint32_t v = lim_value(l, u, w->role, CONF_LIM_SESSIONS);
	if (v && u->sessions >= v)
		return lim_refuse(l, why, CONF_LIM_SESSIONS, false, v, 60);
	u->sessions++;
	return true;
}

void lim_session_failed(struct limits *l, const char *user)
{
	struct lim_ent *u = lim_user_ent(l, user);
	if (u && u->sessions)
		u->sessions--;
}

void lim_session_deleting(struct limits *l, const char *user, const char *sid)
{
	struct lim_ent *u = lim_user_ent(l, user);
	/* Not counted yet: the store is read after the delete, when needed. */
	if (!u || !u->usage_known)
		return;
	uint64_t b = lim_session_bytes(l, sid);
	u->stored = u->stored > b ? u->stored - b : 0;
	if (u->sessions)
		u->sessions--;
}

int lim_view(struct limits *l, const char *key, uint8_t role, uint64_t uid, struct lim_view *out)
{
	struct lim_ent *e = lim_ent_get(l, key);
	if (!e)
		return -ENOMEM;
	memset(out, 0, sizeof(*out));
	lim_tick(l, e);
	if (key[0] == 'u')
		lim_usage_load(l, e, key + 2, uid);
	for (int i = 0; i < CONF_LIM_N; i++) {
		out->value[i] = lim_value(l, e, role, i);
		out->overridden[i] = e->ovr.v[i] != STORE_LIMIT_UNSET;
	}
	out->used[CONF_LIM_STORED_MB] = e->stored;
	out->used[CONF_LIM_SESSIONS] = e->sessions;
	out->used[CONF_LIM_MESSAGES_PER_MIN] = e->msgs_min;
	out->used[CONF_LIM_CONCURRENT] = e->running;
	out->used[CONF_LIM_TOKENS_PER_MIN] = e->toks_min;
	out->used[CONF_LIM_TOKENS_PER_DAY] = e->toks_day;
	return 0;
}

int lim_override_put(struct limits *l, const struct store_limits *o, store_done_fn done, void *arg)
{
	if (!l->st->ops->limits_put)
		return -ENOTSUP;
	int rc = l->st->ops->limits_put(l->st, o, done, arg);
	if (rc < 0)
		return rc;
	/* In force from the next request on; the store follows within a commit. */
	struct lim_ent *e = lim_ent_get(l, o->key);
	if (e)
		memcpy(e->ovr.v, o->v, sizeof(e->ovr.v));
	return 0;
}
