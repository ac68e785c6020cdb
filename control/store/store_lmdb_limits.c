/*
 * The limits database: overrides of a user's or an API key's quotas and
 * rates, set by operators (sluicectl limits). Key: "u:" + user name or
 * "k:" + key id; value: the CONF_LIM_N values in host order, 0xffffffff
 * where the role's value applies. Written rarely, read once per user or key
 * per control run (the limits layer caches them).
 */
#include <string.h>

#include "store/store_lmdb_int.h"

int lm_limits_w_put(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_limits *l = &op->u.lim;
	MDB_val k = lm_str_key(l->key, sizeof(l->key));
	bool any = false;
	for (int i = 0; i < CONF_LIM_N; i++)
		any |= l->v[i] != STORE_LIMIT_UNSET;
	if (!any) {
		int rc = mdb_del(t, s->dbi[LM_LIMITS], &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : lm_werr(s, rc);
	}
	MDB_val v = { sizeof(l->v), (void *)l->v };
	LM_W(s, mdb_put(t, s->dbi[LM_LIMITS], &k, &v, 0));
	return 0;
}

static bool lm_limits_key_ok(const char *key)
{
	size_t n = strnlen(key, STORE_LIMITS_KEY_MAX);
	return n > 2 && n < STORE_LIMITS_KEY_MAX && (key[0] == 'u' || key[0] == 'k') && key[1] == ':';
}

int lm_limits_put(struct store *st, const struct store_limits *l, store_done_fn done, void *arg)
{
	if (!lm_limits_key_ok(l->key))
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_LIMITS_PUT, .done = done, .arg = arg, .u.lim = *l };
	return lm_enqueue(LM_S(st), &op, LM_USIZE(lim), NULL, 0);
}

int lm_limits_get(struct store *st, const char *key, struct store_limits *out)
{
	struct lm_store *s = LM_S(st);
	if (!lm_limits_key_ok(key))
		return -EINVAL;
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	memset(out, 0, sizeof(*out));
	lm_strcpy(out->key, sizeof(out->key), key);
	int rc = lm_get_fixed(s, t, LM_LIMITS, lm_str_key(key, STORE_LIMITS_KEY_MAX), out->v,
			      sizeof(out->v));
	return lm_rerr(rc);
}

int lm_limits_list(struct store *st, void (*each)(void *arg, const struct store_limits *l), void *arg)
{
	struct lm_store *s = LM_S(st);
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_LIMITS], &cur);
	if (rc)
		return lm_errno(rc);
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct store_limits l;
		if (v.mv_size != sizeof(l.v) || k.mv_size >= sizeof(l.key)) {
			rc = MDB_CORRUPTED;
			break;
		}
		memset(&l, 0, sizeof(l));
		memcpy(l.key, k.mv_data, k.mv_size);
		memcpy(l.v, v.mv_data, sizeof(l.v));
		each(arg, &l);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : lm_errno(rc);
}
