/*
 * The LMDB store's conversations: the conversations database (one record a
 * session), its listing index conversations_by_user, and the events audit
 * trail. Writer steps run inside the group-commit transaction; reads run on
 * the loop thread in its read snapshot. docs/storage.md has the tables.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_lmdb_int.h"

#define LM_DETAIL_MAX 1024

/* Followed by the detail text. */
struct lm_ev_rec {
	int64_t t_ns; /* unix nanoseconds */
	char sid[CHAN_ID_LEN];
	char kind[LM_KIND_MAX];
};

/* conversations_by_user: user \0 be64(INT64_MAX - updated_at) sid, so a
 * forward walk is newest first. */
static MDB_val lm_conv_index_key(uint8_t *b, const char *user, int64_t updated_at, const char *sid)
{
	uint8_t *p = lm_put_str(b, user, STORE_USER_MAX);
	*p++ = 0;
	p = lm_put_be64(p, (uint64_t)(INT64_MAX - updated_at));
	return lm_val(b, lm_put_str(p, sid, CHAN_ID_LEN));
}

int lm_conv_load(struct lm_store *s, MDB_txn *t, const char *sid, struct lm_conv_rec *out)
{
	return lm_get_fixed(s, t, LM_CONVS, lm_str_key(sid, CHAN_ID_LEN), out, sizeof(*out));
}

static void lm_conv_to_session(const char *sid, const struct lm_conv_rec *c, struct store_session *out)
{
	memset(out, 0, sizeof(*out));
	lm_strcpy(out->id, sizeof(out->id), sid);
	lm_strcpy(out->user, sizeof(out->user), c->user);
	lm_strcpy(out->agent_id, sizeof(out->agent_id), c->agent_id);
	lm_strcpy(out->model_id, sizeof(out->model_id), c->model_id);
	lm_strcpy(out->title, sizeof(out->title), c->title);
	out->created_at = c->created_at;
	out->updated_at = c->updated_at;
	out->archived = c->archived;
	out->owner_uid = c->owner_uid;
}

/* ---- writer: events ---------------------------------------------------- */

static int lm_conv_event_put(struct lm_store *s, MDB_txn *t, int64_t t_ns, const char *sid, const char *kind,
			     const char *detail, size_t dlen)
{
	struct lm_ev_rec r;
	memset(&r, 0, sizeof(r));
	r.t_ns = t_ns;
	lm_strcpy(r.sid, sizeof(r.sid), sid ? sid : "");
	lm_strcpy(r.kind, sizeof(r.kind), kind);
	uint8_t kb[8];
	MDB_val k = { 8, kb }, v = { sizeof(r) + dlen, NULL };
	lm_put_be64(kb, s->ev_next);
	/* Keys only grow, so MDB_APPEND skips the search. */
	int rc = mdb_put(t, s->dbi[LM_EVENTS], &k, &v, MDB_APPEND | MDB_RESERVE);
	if (rc)
		return rc;
	s->ev_next++;
	memcpy(v.mv_data, &r, sizeof(r));
	if (dlen)
		memcpy((uint8_t *)v.mv_data + sizeof(r), detail, dlen);
	return 0;
}

/* Used for the answers the store marks interrupted on open, so they read
 * like the chat layer's own events. */
int lm_conv_event_msg(struct lm_store *s, MDB_txn *t, int64_t t_ns, const char *sid, const char *mid,
		      uint8_t status)
{
	char detail[96];
	int n = snprintf(detail, sizeof(detail), "{\"message_id\":\"%s\",\"status\":\"%s\"}", mid,
			 store_msg_status_name((enum store_msg_status)status));
	return lm_conv_event_put(s, t, t_ns, sid, "message", detail, (size_t)n);
}

int lm_conv_events_init(struct lm_store *s, MDB_txn *t)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_EVENTS], &cur);
	if (rc)
		return rc;
	MDB_val k, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	s->ev_next = 1;
	if (rc == 0 && k.mv_size == 8)
		s->ev_next = lm_get_be64(k.mv_data) + 1;
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int lm_conv_w_event(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	LM_W(s, lm_conv_event_put(s, t, op->t_ns, op->u.ev.sid, op->u.ev.kind, (const char *)lm_op_payload(op),
				  op->n));
	return 0;
}

/* ---- writer: conversations --------------------------------------------- */

/* Drops the listing entry of conversation sid as record c placed it. */
static int lm_conv_index_del(struct lm_store *s, MDB_txn *t, const char *sid, const struct lm_conv_rec *c)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_conv_index_key(kb, c->user, c->updated_at, sid);
	int rc = mdb_del(t, s->dbi[LM_CONVS_BY_USER], &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int lm_conv_store(struct lm_store *s, MDB_txn *t, const char *sid, const struct lm_conv_rec *old,
		  const struct lm_conv_rec *c)
{
	MDB_val k = lm_str_key(sid, CHAN_ID_LEN), v = { sizeof(*c), (void *)c };
	int rc = mdb_put(t, s->dbi[LM_CONVS], &k, &v, 0);
	if (!rc && old)
		rc = lm_conv_index_del(s, t, sid, old);
	if (rc)
		return rc;
	uint8_t kb[LM_KEY_MAX];
	k = lm_conv_index_key(kb, c->user, c->updated_at, sid);
	v = lm_str_key(sid, CHAN_ID_LEN);
	return mdb_put(t, s->dbi[LM_CONVS_BY_USER], &k, &v, 0);
}

int lm_conv_w_create(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_session *ss = &op->u.sess;
	struct lm_conv_rec c;
	int rc = lm_conv_load(s, t, ss->id, &c);
	if (rc == 0)
		return -EEXIST;
	if (rc != MDB_NOTFOUND)
		return lm_fatal(s, rc);
	memset(&c, 0, sizeof(c));
	lm_strcpy(c.user, sizeof(c.user), ss->user);
	lm_strcpy(c.agent_id, sizeof(c.agent_id), ss->agent_id);
	lm_strcpy(c.model_id, sizeof(c.model_id), ss->model_id);
	lm_strcpy(c.title, sizeof(c.title), ss->title);
	c.created_at = ss->created_at;
	c.updated_at = ss->updated_at ? ss->updated_at : ss->created_at;
	c.archived = ss->archived;
	c.owner_uid = ss->owner_uid;
	LM_W(s, lm_conv_store(s, t, ss->id, NULL, &c));
	return 0;
}

int lm_conv_w_update(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_session *ss = &op->u.sess;
	struct lm_conv_rec old, c;
	int rc = lm_werr(s, lm_conv_load(s, t, ss->id, &old));
	if (rc)
		return rc;
	c = old;
	lm_strcpy(c.title, sizeof(c.title), ss->title);
	c.archived = ss->archived;
	c.updated_at = ss->updated_at ? ss->updated_at : op->t_ns / 1000000000;
	LM_W(s, lm_conv_store(s, t, ss->id, &old, &c));
	return 0;
}

/* Events stay: they are the audit trail of what was deleted. */
int lm_conv_w_delete(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const char *sid = op->u.msg.sid;
	struct lm_conv_rec c;
	int rc = lm_werr(s, lm_conv_load(s, t, sid, &c));
	if (rc)
		return rc;
	LM_W(s, lm_msg_purge(s, t, sid));
	LM_W(s, lm_conv_index_del(s, t, sid, &c));
	MDB_val k = lm_str_key(sid, CHAN_ID_LEN);
	LM_W(s, mdb_del(t, s->dbi[LM_CONVS], &k, NULL));
	return 0;
}

/* ---- loop side: queueing writes ---------------------------------------- */

int lm_conv_create(struct store *st, const struct store_session *ss, store_done_fn done, void *arg)
{
	if (!lm_str_ok(ss->id, CHAN_ID_LEN) || strnlen(ss->user, STORE_USER_MAX) == STORE_USER_MAX)
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_SESSION_CREATE, .done = done, .arg = arg, .u.sess = *ss };
	return lm_enqueue(LM_S(st), &op, LM_USIZE(sess), NULL, 0);
}

int lm_conv_update(struct store *st, const struct store_session *ss, store_done_fn done, void *arg)
{
	if (!lm_str_ok(ss->id, CHAN_ID_LEN))
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_SESSION_UPDATE, .done = done, .arg = arg, .u.sess = *ss };
	return lm_enqueue(LM_S(st), &op, LM_USIZE(sess), NULL, 0);
}

int lm_conv_delete(struct store *st, const char *sid, store_done_fn done, void *arg)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN))
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_SESSION_DELETE, .done = done, .arg = arg };
	lm_strcpy(op.u.msg.sid, CHAN_ID_LEN, sid);
	return lm_enqueue(LM_S(st), &op, LM_USIZE(msg), NULL, 0);
}

int lm_conv_event_add(struct store *st, const char *sid, const char *kind, const char *detail)
{
	if (!lm_str_ok(kind, LM_KIND_MAX) || (sid && strnlen(sid, CHAN_ID_LEN) == CHAN_ID_LEN))
		return -EINVAL;
	size_t dlen = detail ? strnlen(detail, LM_DETAIL_MAX + 1) : 0;
	if (dlen > LM_DETAIL_MAX)
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_EVENT };
	lm_strcpy(op.u.ev.sid, CHAN_ID_LEN, sid ? sid : "");
	lm_strcpy(op.u.ev.kind, LM_KIND_MAX, kind);
	return lm_enqueue(LM_S(st), &op, LM_USIZE(ev), detail, dlen);
}

/* ---- loop side: reads -------------------------------------------------- */

int lm_conv_get(struct store *st, const char *sid, struct store_session *out)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN))
		return -ENOENT;
	MDB_txn *t = lm_rtxn(LM_S(st));
	if (!t)
		return -EIO;
	struct lm_conv_rec c;
	int rc = lm_conv_load(LM_S(st), t, sid, &c);
	if (rc)
		return lm_rerr(rc);
	lm_conv_to_session(sid, &c, out);
	return 0;
}

/* Cursor text: "<updated_at>.<session id>" of the last session returned. */
static int lm_conv_cursor_parse(const char *cur, int64_t *updated_at, char sid[CHAN_ID_LEN])
{
	char *end;
	errno = 0;
	long long v = strtoll(cur, &end, 10);
	if (errno || end == cur || *end != '.' || !lm_str_ok(end + 1, CHAN_ID_LEN))
		return -EINVAL;
	*updated_at = v;
	lm_strcpy(sid, CHAN_ID_LEN, end + 1);
	return 0;
}

int lm_conv_list(struct store *st, const struct store_list_query *q,
		 void (*each)(void *arg, const struct store_session *s), void *arg, char *next_cursor,
		 size_t cursor_cap)
{
	struct lm_store *s = LM_S(st);
	if (!q->user || strnlen(q->user, STORE_USER_MAX) == STORE_USER_MAX || q->limit < 1 ||
	    q->limit > 100 || !next_cursor || cursor_cap == 0)
		return -EINVAL;
	next_cursor[0] = 0;
	uint8_t kb[LM_KEY_MAX];
	uint8_t *p = lm_put_str(kb, q->user, STORE_USER_MAX);
	*p++ = 0;
	MDB_val prefix = lm_val(kb, p), k = prefix, v;
	uint8_t ckb[LM_KEY_MAX];
	MDB_val after = { 0, NULL };
	if (q->cursor && q->cursor[0]) {
		int64_t ua;
		char sid[CHAN_ID_LEN];
		if (lm_conv_cursor_parse(q->cursor, &ua, sid) < 0)
			return -EINVAL;
		after = lm_conv_index_key(ckb, q->user, ua, sid);
		k = after;
	}
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_CONVS_BY_USER], &cur);
	if (rc)
		return lm_errno(rc);
	uint32_t n = 0;
	struct store_session last;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && lm_has_prefix(&k, &prefix);
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (after.mv_size && k.mv_size == after.mv_size && memcmp(k.mv_data, after.mv_data, k.mv_size) == 0)
			continue;
		char sid[CHAN_ID_LEN] = { 0 };
		size_t sl = k.mv_size - prefix.mv_size - 8;
		if (k.mv_size < prefix.mv_size + 8 || sl == 0 || sl >= CHAN_ID_LEN) {
			rc = MDB_CORRUPTED;
			break;
		}
		memcpy(sid, (uint8_t *)k.mv_data + prefix.mv_size + 8, sl);
		struct lm_conv_rec c;
		rc = lm_conv_load(s, t, sid, &c);
		if (rc)
			break;
		/* Conversations of an earlier user of the same name stay in the
		 * index but belong to nobody who can log in now. */
		if (q->owner_uid && c.owner_uid != q->owner_uid)
			continue;
		if ((q->archived == 0 && c.archived) || (q->archived == 1 && !c.archived))
			continue;
		if (q->q && q->q[0] && !strcasestr(c.title, q->q))
			continue;
		if (n == q->limit) {
			/* One more matches: the caller gets a cursor to it. */
			int len = snprintf(next_cursor, cursor_cap, "%" PRId64 ".%s", last.updated_at, last.id);
			if (len < 0 || (size_t)len >= cursor_cap) {
				next_cursor[0] = 0;
				rc = ERANGE;
			}
			break;
		}
		lm_conv_to_session(sid, &c, &last);
		each(arg, &last);
		n++;
	}
	mdb_cursor_close(cur);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : lm_errno(rc);
}
