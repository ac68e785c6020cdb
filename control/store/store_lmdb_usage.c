/*
 * The LMDB store's usage log: one record per ended answer (who asked,
 * with which API key, which model on which backend, prompt and completion
 * tokens, cost), keyed by be64(end time in unix ns) then the message id, so
 * a listing since a time is one cursor walk from there. The message family
 * writes it when an answer ends (store_lmdb_msg.c); sluicectl usage reads it.
 */
#include <string.h>

#include "store/store_lmdb_int.h"

/* The stored layout: fixed, host order, memcpy'd in and out. */
struct lm_usage_v {
	char sid[CHAN_ID_LEN];
	char mid[CHAN_ID_LEN];
	char user[STORE_USER_MAX];
	uint64_t uid;
	char key_id[STORE_KEYID_MAX];
	char model[CONF_NAME_MAX];
	char backend[CONF_NAME_MAX];
	uint32_t prompt_tokens, completion_tokens;
	double cost_usd;
	int64_t t_ns;
	uint8_t status;
	uint8_t pad[7];
};

static MDB_val lm_usage_key(uint8_t *b, int64_t t_ns, const char *mid)
{
	uint8_t *p = lm_put_be64(b, (uint64_t)(t_ns < 0 ? 0 : t_ns));
	return lm_val(b, lm_put_str(p, mid, CHAN_ID_LEN));
}

int lm_usage_put(struct lm_store *s, MDB_txn *t, const struct store_usage_rec *u)
{
	struct lm_usage_v v;
	memset(&v, 0, sizeof(v));
	lm_strcpy(v.sid, sizeof(v.sid), u->sid);
	lm_strcpy(v.mid, sizeof(v.mid), u->mid);
	lm_strcpy(v.user, sizeof(v.user), u->user);
	v.uid = u->uid;
	lm_strcpy(v.key_id, sizeof(v.key_id), u->key_id);
	lm_strcpy(v.model, sizeof(v.model), u->model);
	lm_strcpy(v.backend, sizeof(v.backend), u->backend);
	v.prompt_tokens = u->prompt_tokens;
	v.completion_tokens = u->completion_tokens;
	v.cost_usd = u->cost_usd;
	v.t_ns = u->t_ns;
	v.status = u->status;
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_usage_key(kb, u->t_ns, u->mid), val = { sizeof(v), &v };
	return mdb_put(t, s->dbi[LM_USAGE], &k, &val, 0);
}

int lm_usage_list(struct store *st, const struct store_usage_query *q,
		  void (*each)(void *arg, const struct store_usage_rec *u), void *arg)
{
	struct lm_store *s = LM_S(st);
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_USAGE], &cur);
	if (rc)
		return lm_errno(rc);
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_usage_key(kb, q->since_ns, ""), v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct lm_usage_v r;
		if (v.mv_size != sizeof(r))
			continue;
		memcpy(&r, v.mv_data, sizeof(r));
		if ((q->user && strncmp(q->user, r.user, sizeof(r.user)) != 0) ||
		    (q->key_id && strncmp(q->key_id, r.key_id, sizeof(r.key_id)) != 0))
			continue;
		struct store_usage_rec u;
		memset(&u, 0, sizeof(u));
		memcpy(u.sid, r.sid, sizeof(u.sid));
		memcpy(u.mid, r.mid, sizeof(u.mid));
		memcpy(u.user, r.user, sizeof(u.user));
		u.uid = r.uid;
		memcpy(u.key_id, r.key_id, sizeof(u.key_id));
		memcpy(u.model, r.model, sizeof(u.model));
		memcpy(u.backend, r.backend, sizeof(u.backend));
		u.sid[sizeof(u.sid) - 1] = u.mid[sizeof(u.mid) - 1] = u.user[sizeof(u.user) - 1] = 0;
		u.key_id[sizeof(u.key_id) - 1] = u.model[sizeof(u.model) - 1] = u.backend[sizeof(u.backend) - 1] = 0;
		u.prompt_tokens = r.prompt_tokens;
		u.completion_tokens = r.completion_tokens;
		u.cost_usd = r.cost_usd;
		u.t_ns = r.t_ns;
		u.status = r.status;
		each(arg, &u);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : lm_errno(rc);
}
