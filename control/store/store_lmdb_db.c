/*
 * The LMDB store's databases: key layouts, record layouts, the writer's
 * operations (run inside the group-commit transaction) and the reads (run on
 * the loop thread in its read snapshot). docs/storage.md has the tables.
 *
 * Records are fixed C layouts in host byte order (the appliance is x86-64;
 * schema_version guards a change); numbers inside keys are big-endian so
 * LMDB's byte order is their numeric order. Values are only 2-byte aligned
 * in the map, so records are memcpy'd out, never cast.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "sluice/log.h"
#include "store/store_lmdb_int.h"

#define LM_USIZE(m) sizeof(((struct lm_op *)0)->u.m)
#define LM_KEY_MAX 160
#define LM_DETAIL_MAX 1024

struct lm_conv_rec {
	char user[STORE_USER_MAX];
	char agent_id[STORE_AGENT_MAX];
	char model_id[CONF_NAME_MAX];
	char title[STORE_TITLE_MAX];
	int64_t created_at, updated_at;
	uint32_t nmsg;
	uint8_t archived;
	uint8_t pad[3];
	uint64_t owner_uid; /* schema 2 */
};

/* Followed by the content, for user messages and ended answers; a running
 * answer's content is its token log. */
struct lm_msg_rec {
	char id[CHAN_ID_LEN];
	uint8_t role, status, type, pad;
	uint32_t ntokens;
	uint32_t prompt_tokens, completion_tokens;
	double cost_usd;
	int64_t created_at, ended_at; /* unix seconds */
	uint64_t content_len;
	char model[CONF_NAME_MAX];
	char backend[CONF_NAME_MAX];
};

struct lm_user_rec {
	uint8_t role;
	uint8_t pad[7];
	int64_t created_at;
	char pwhash[STORE_PWHASH_MAX];
	uint64_t uid; /* schema 2 */
};

struct lm_key_rec {
	char id[STORE_KEYID_MAX];
	char owner[STORE_USER_MAX];
	char label[64];
	int64_t created_at;
};

struct lm_auth_rec {
	char user[STORE_USER_MAX];
	char csrf[STORE_CSRF_MAX];
	int64_t created_at, expires_at;
};

/* Followed by the detail text. */
struct lm_ev_rec {
	int64_t t_ns; /* unix nanoseconds */
	char sid[CHAN_ID_LEN];
	char kind[LM_KIND_MAX];
};

static const char lm_open_prefix[] = "open:";

/* ---- small helpers ----------------------------------------------------- */

static int lm_fatal(struct lm_store *s, int rc)
{
	s->wrc = rc;
	return LM_FATAL;
}

#define LM_W(s, call)                                    \
	do {                                             \
		int rc_ = (call);                        \
		if (rc_)                                 \
			return lm_fatal((s), rc_);       \
	} while (0)

/* A fresh user identity: 64 random bits, never 0 (0 is "nobody"). */
static int lm_new_uid(uint64_t *uid)
{
	do {
		if (getrandom(uid, sizeof(*uid), 0) != (ssize_t)sizeof(*uid))
			return -1;
	} while (*uid == 0);
	return 0;
}

static bool lm_str_ok(const char *v, size_t cap)
{
	size_t n = strnlen(v, cap);
	return n > 0 && n < cap;
}

/* Copies a NUL-terminated string into a fixed field, always terminating. */
static void lm_strcpy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	memset(dst + n, 0, cap - n);
}

static uint8_t *lm_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static uint8_t *lm_put_be64(uint8_t *p, uint64_t v)
{
	p = lm_put_be32(p, (uint32_t)(v >> 32));
	return lm_put_be32(p, (uint32_t)v);
}

static uint64_t lm_get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint8_t *lm_put_str(uint8_t *p, const char *str, size_t cap)
{
	size_t n = strnlen(str, cap);
	memcpy(p, str, n);
	return p + n;
}

static MDB_val lm_val(uint8_t *b, uint8_t *end)
{
	return (MDB_val){ (size_t)(end - b), b };
}

/* messages: sid \0 be32(index) */
static MDB_val lm_msg_key(uint8_t *b, const char *sid, uint32_t idx)
{
	uint8_t *p = lm_put_str(b, sid, CHAN_ID_LEN);
	*p++ = 0;
	return lm_val(b, lm_put_be32(p, idx));
}

/* tokens: sid \0 mid \0 be32(seq); the prefix without seq is tok_prefix. */
static MDB_val lm_tok_key(uint8_t *b, const char *sid, const char *mid, uint32_t seq)
{
	uint8_t *p = lm_put_str(b, sid, CHAN_ID_LEN);
	*p++ = 0;
	p = lm_put_str(p, mid, CHAN_ID_LEN);
	*p++ = 0;
	return lm_val(b, lm_put_be32(p, seq));
}

/* conversations_by_user: user \0 be64(INT64_MAX - updated_at) sid, so a
 * forward walk is newest first. */
static MDB_val lm_byuser_key(uint8_t *b, const char *user, int64_t updated_at, const char *sid)
{
	uint8_t *p = lm_put_str(b, user, STORE_USER_MAX);
	*p++ = 0;
	p = lm_put_be64(p, (uint64_t)(INT64_MAX - updated_at));
	return lm_val(b, lm_put_str(p, sid, CHAN_ID_LEN));
}

/* meta: "open:" sid \0 mid -> be32(index): answers not ended yet. */
static MDB_val lm_open_key(uint8_t *b, const char *sid, const char *mid)
{
	uint8_t *p = lm_put_str(b, lm_open_prefix, sizeof(lm_open_prefix));
	p = lm_put_str(p, sid, CHAN_ID_LEN);
	*p++ = 0;
	return lm_val(b, lm_put_str(p, mid, CHAN_ID_LEN));
}

static MDB_val lm_str_key(const char *str, size_t cap)
{
	return (MDB_val){ strnlen(str, cap), (void *)str };
}

static bool lm_has_prefix(const MDB_val *k, const MDB_val *prefix)
{
	return k->mv_size >= prefix->mv_size && memcmp(k->mv_data, prefix->mv_data, prefix->mv_size) == 0;
}

static bool lm_terminal(uint8_t status)
{
	return status >= STORE_MSG_COMPLETE;
}

const char *lm_op_name(uint16_t type)
{
	static const char *const names[] = {
		[LM_OP_SESSION_CREATE] = "session create", [LM_OP_SESSION_UPDATE] = "session update",
		[LM_OP_SESSION_DELETE] = "session delete", [LM_OP_MESSAGE_ADD] = "message add",
		[LM_OP_TOKENS] = "tokens",                 [LM_OP_STATUS] = "message status",
		[LM_OP_USER_PUT] = "user put",             [LM_OP_USER_DEL] = "user delete",
		[LM_OP_APIKEY_PUT] = "api key put",        [LM_OP_APIKEY_DEL] = "api key delete",
		[LM_OP_AUTH_PUT] = "auth put",             [LM_OP_AUTH_DEL] = "auth delete",
		[LM_OP_EVENT] = "event",
	};
	return type < SLUICE_ARRAY_LEN(names) ? names[type] : "unknown";
}

/* ---- record access (either thread, given its transaction) --------------- */

static int lm_conv_load(struct lm_store *s, MDB_txn *t, const char *sid, struct lm_conv_rec *out)
{
	MDB_val k = lm_str_key(sid, CHAN_ID_LEN), v;
	int rc = mdb_get(t, s->dbi[LM_CONVS], &k, &v);
	if (rc)
		return rc;
	if (v.mv_size != sizeof(*out))
		return MDB_CORRUPTED;
	memcpy(out, v.mv_data, sizeof(*out));
	return 0;
}

static int lm_msg_load(struct lm_store *s, MDB_txn *t, const char *sid, uint32_t idx,
		       struct lm_msg_rec *out, MDB_val *val)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_msg_key(kb, sid, idx);
	int rc = mdb_get(t, s->dbi[LM_MSGS], &k, val);
	if (rc)
		return rc;
	if (val->mv_size < sizeof(*out))
		return MDB_CORRUPTED;
	memcpy(out, val->mv_data, sizeof(*out));
	return 0;
}

/* Finds message mid, newest first (lookups are nearly always for the answer
 * that runs). MDB_NOTFOUND when the session or the message is unknown. */
static int lm_msg_locate(struct lm_store *s, MDB_txn *t, const char *sid, const char *mid,
			 uint32_t *idx, struct lm_msg_rec *out, MDB_val *val)
{
	struct lm_conv_rec c;
	int rc = lm_conv_load(s, t, sid, &c);
	if (rc)
		return rc;
	for (uint32_t i = c.nmsg; i-- > 0;) {
		rc = lm_msg_load(s, t, sid, i, out, val);
		if (rc)
			return rc;
		if (strncmp(out->id, mid, CHAN_ID_LEN) == 0) {
			*idx = i;
			return 0;
		}
	}
	return MDB_NOTFOUND;
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

/* Calls fn for each token of sid/mid in order; stops at the first error. */
static int lm_tokens_walk(struct lm_store *s, MDB_txn *t, const char *sid, const char *mid,
			  int (*fn)(void *arg, const uint8_t *text, size_t len), void *arg)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_tok_key(kb, sid, mid, 1), v;
	MDB_val prefix = { k.mv_size - 4, kb };
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_TOKENS], &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && lm_has_prefix(&k, &prefix);
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (v.mv_size < 8) {
			rc = MDB_CORRUPTED;
			break;
		}
		rc = fn(arg, (const uint8_t *)v.mv_data + 8, v.mv_size - 8);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int lm_sum_cb(void *arg, const uint8_t *text, size_t len)
{
	(void)text;
	*(uint64_t *)arg += len;
	return 0;
}

struct lm_fill {
	uint8_t *p;
	size_t left;
};

static int lm_fill_cb(void *arg, const uint8_t *text, size_t len)
{
	struct lm_fill *f = arg;
	if (len > f->left)
		return MDB_CORRUPTED;
	memcpy(f->p, text, len);
	f->p += len;
	f->left -= len;
	return 0;
}

/* ---- writer: events ---------------------------------------------------- */

static int lm_event_put(struct lm_store *s, MDB_txn *t, int64_t t_ns, const char *sid, const char *kind,
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

/* The chat layer's shape for a message state change (kind "message"), used
 * for the answers this store marks interrupted on open. */
static int lm_event_msg(struct lm_store *s, MDB_txn *t, int64_t t_ns, const char *sid, const char *mid,
			uint8_t status)
{
	char detail[96];
	int n = snprintf(detail, sizeof(detail), "{\"message_id\":\"%s\",\"status\":\"%s\"}", mid,
			 store_msg_status_name((enum store_msg_status)status));
	return lm_event_put(s, t, t_ns, sid, "message", detail, (size_t)n);
}

int lm_events_init(struct lm_store *s, MDB_txn *t)
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

/* ---- writer: conversations --------------------------------------------- */

static int lm_conv_put(struct lm_store *s, MDB_txn *t, const char *sid, const struct lm_conv_rec *c)
{
	MDB_val k = lm_str_key(sid, CHAN_ID_LEN), v = { sizeof(*c), (void *)c };
	return mdb_put(t, s->dbi[LM_CONVS], &k, &v, 0);
}

/* Moves the conversation's listing entry from old (NULL: none) to c. */
static int lm_byuser_move(struct lm_store *s, MDB_txn *t, const char *sid, const struct lm_conv_rec *old,
			  const struct lm_conv_rec *c)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k;
	if (old) {
		k = lm_byuser_key(kb, old->user, old->updated_at, sid);
		int rc = mdb_del(t, s->dbi[LM_CONVS_BY_USER], &k, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return rc;
	}
	if (!c)
		return 0;
	k = lm_byuser_key(kb, c->user, c->updated_at, sid);
	MDB_val v = lm_str_key(sid, CHAN_ID_LEN);
	return mdb_put(t, s->dbi[LM_CONVS_BY_USER], &k, &v, 0);
}

static int lm_w_session_create(struct lm_store *s, MDB_txn *t, struct lm_op *op)
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
	LM_W(s, lm_conv_put(s, t, ss->id, &c));
	LM_W(s, lm_byuser_move(s, t, ss->id, NULL, &c));
	return 0;
}

static int lm_w_session_update(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_session *ss = &op->u.sess;
	struct lm_conv_rec old, c;
	int rc = lm_conv_load(s, t, ss->id, &old);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return lm_fatal(s, rc);
	c = old;
	lm_strcpy(c.title, sizeof(c.title), ss->title);
	c.archived = ss->archived;
	c.updated_at = ss->updated_at ? ss->updated_at : op->t_ns / 1000000000;
	LM_W(s, lm_conv_put(s, t, ss->id, &c));
	LM_W(s, lm_byuser_move(s, t, ss->id, &old, &c));
	return 0;
}

/* Deletes every key of db that starts with prefix. */
static int lm_del_prefix(struct lm_store *s, MDB_txn *t, enum lm_db db, MDB_val prefix)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[db], &cur);
	if (rc)
		return rc;
	MDB_val k = prefix, v;
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) == 0 && lm_has_prefix(&k, &prefix)) {
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
		k = prefix;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

static int lm_w_session_delete(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const char *sid = op->u.msg.sid;
	struct lm_conv_rec c;
	int rc = lm_conv_load(s, t, sid, &c);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return lm_fatal(s, rc);
	uint8_t kb[LM_KEY_MAX];
	uint8_t *p = lm_put_str(kb, sid, CHAN_ID_LEN);
	*p++ = 0;
	MDB_val prefix = lm_val(kb, p);
	LM_W(s, lm_del_prefix(s, t, LM_MSGS, prefix));
	LM_W(s, lm_del_prefix(s, t, LM_TOKENS, prefix));
	uint8_t ob[LM_KEY_MAX];
	p = lm_put_str(ob, lm_open_prefix, sizeof(lm_open_prefix));
	p = lm_put_str(p, sid, CHAN_ID_LEN);
	*p++ = 0;
	LM_W(s, lm_del_prefix(s, t, LM_META, lm_val(ob, p)));
	LM_W(s, lm_byuser_move(s, t, sid, &c, NULL));
	MDB_val k = lm_str_key(sid, CHAN_ID_LEN);
	LM_W(s, mdb_del(t, s->dbi[LM_CONVS], &k, NULL));
	return 0;
}

/* ---- writer: messages and tokens --------------------------------------- */

static int lm_msg_put(struct lm_store *s, MDB_txn *t, const char *sid, uint32_t idx,
		      const struct lm_msg_rec *m, const void *content, size_t len)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_msg_key(kb, sid, idx), v = { sizeof(*m) + len, NULL };
	int rc = mdb_put(t, s->dbi[LM_MSGS], &k, &v, MDB_RESERVE);
	if (rc)
		return rc;
	memcpy(v.mv_data, m, sizeof(*m));
	if (len)
		memcpy((uint8_t *)v.mv_data + sizeof(*m), content, len);
	return 0;
}

static int lm_w_message_add(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const char *sid = op->u.add.sid;
	struct lm_conv_rec old, c;
	int rc = lm_conv_load(s, t, sid, &old);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return lm_fatal(s, rc);
	if (old.nmsg > UINT32_MAX - 2)
		return -EFBIG;
	int64_t now_s = op->t_ns / 1000000000;
	const struct conf_backend *be = conf_backend_for_model(s->conf, old.model_id);
	struct lm_msg_rec m;
	memset(&m, 0, sizeof(m));
	lm_strcpy(m.model, sizeof(m.model), old.model_id);
	lm_strcpy(m.backend, sizeof(m.backend), be ? be->name : "");
	m.created_at = now_s;

	lm_strcpy(m.id, sizeof(m.id), op->u.add.umid);
	m.role = STORE_ROLE_USER;
	m.status = STORE_MSG_COMPLETE;
	m.ended_at = now_s;
	m.content_len = op->n;
	LM_W(s, lm_msg_put(s, t, sid, old.nmsg, &m, lm_op_payload(op), op->n));

	lm_strcpy(m.id, sizeof(m.id), op->u.add.amid);
	m.role = STORE_ROLE_ASSISTANT;
	m.status = STORE_MSG_QUEUED;
	m.ended_at = 0;
	m.content_len = 0;
	LM_W(s, lm_msg_put(s, t, sid, old.nmsg + 1, &m, NULL, 0));

	uint8_t kb[LM_KEY_MAX], ib[4];
	MDB_val k = lm_open_key(kb, sid, op->u.add.amid), v = { 4, ib };
	lm_put_be32(ib, old.nmsg + 1);
	LM_W(s, mdb_put(t, s->dbi[LM_META], &k, &v, 0));

	c = old;
	c.nmsg += 2;
	c.updated_at = now_s;
	LM_W(s, lm_conv_put(s, t, sid, &c));
	LM_W(s, lm_byuser_move(s, t, sid, &old, &c));
	return 0;
}

static int lm_w_tokens(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const char *sid = op->u.msg.sid, *mid = op->u.msg.mid;
	struct lm_msg_rec m;
	MDB_val mv;
	uint32_t idx;
	int rc = lm_msg_locate(s, t, sid, mid, &idx, &m, &mv);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return lm_fatal(s, rc);
	if (lm_terminal(m.status) || m.ntokens > UINT32_MAX - op->n)
		return -EINVAL;
	if (op->u.msg.first_seq != m.ntokens + 1) {
		/* Renumbering would shift every later token of the answer. */
		LOG_ERROR("store: tokens %u..%u of %s refused: %s after token %u", op->u.msg.first_seq,
			  op->u.msg.first_seq + op->n - 1, mid,
			  op->u.msg.first_seq > m.ntokens ? "a gap" : "an overlap", m.ntokens);
		return -ERANGE;
	}
	const struct lm_tokhdr *h = (const struct lm_tokhdr *)lm_op_payload(op);
	const uint8_t *text = (const uint8_t *)(h + op->n);
	for (uint32_t i = 0; i < op->n; i++) {
		uint8_t kb[LM_KEY_MAX];
		MDB_val k = lm_tok_key(kb, sid, mid, m.ntokens + 1 + i), v = { 8 + h[i].len, NULL };
		LM_W(s, mdb_put(t, s->dbi[LM_TOKENS], &k, &v, MDB_RESERVE));
		memcpy(v.mv_data, &h[i].offset_ns, 8);
		memcpy((uint8_t *)v.mv_data + 8, text, h[i].len);
		text += h[i].len;
		m.content_len += h[i].len;
	}
	m.ntokens += op->n;
	/* A running answer keeps no inline content: its tokens are it. */
	LM_W(s, lm_msg_put(s, t, sid, idx, &m, NULL, 0));
	return 0;
}

/* Sets a message's status; an ended answer gets its content put together
 * from the token log once, so reading it later is one lookup. */
static int lm_set_status(struct lm_store *s, MDB_txn *t, const char *sid, const char *mid, uint8_t status,
			 const struct store_usage *usage, int64_t t_ns)
{
	struct lm_msg_rec m;
	MDB_val mv;
	uint32_t idx;
	int rc = lm_msg_locate(s, t, sid, mid, &idx, &m, &mv);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return lm_fatal(s, rc);
	bool inline_content = mv.mv_size > sizeof(m);
	m.status = status;
	if (usage) {
		m.prompt_tokens = usage->prompt_tokens;
		m.completion_tokens = usage->completion_tokens;
		m.cost_usd = usage->cost_usd;
	}
	if (!lm_terminal(status) || inline_content || m.role != STORE_ROLE_ASSISTANT) {
		if (inline_content) {
			/* Re-put the content too: copy it out first, the put may
			 * move the page under it. */
			size_t len = mv.mv_size - sizeof(m);
			uint8_t *tmp = malloc(len);
			if (!tmp)
				return lm_fatal(s, ENOMEM);
			memcpy(tmp, (uint8_t *)mv.mv_data + sizeof(m), len);
			rc = lm_msg_put(s, t, sid, idx, &m, tmp, len);
			free(tmp);
			LM_W(s, rc);
		} else {
			LM_W(s, lm_msg_put(s, t, sid, idx, &m, NULL, 0));
		}
	} else {
		uint64_t total = 0;
		LM_W(s, lm_tokens_walk(s, t, sid, mid, lm_sum_cb, &total));
		m.content_len = total;
		m.ended_at = t_ns / 1000000000;
		uint8_t kb[LM_KEY_MAX];
		MDB_val k = lm_msg_key(kb, sid, idx), v = { sizeof(m) + total, NULL };
		LM_W(s, mdb_put(t, s->dbi[LM_MSGS], &k, &v, MDB_RESERVE));
		memcpy(v.mv_data, &m, sizeof(m));
		struct lm_fill f = { (uint8_t *)v.mv_data + sizeof(m), total };
		LM_W(s, lm_tokens_walk(s, t, sid, mid, lm_fill_cb, &f));
	}
	if (lm_terminal(status)) {
		uint8_t kb[LM_KEY_MAX];
		MDB_val k = lm_open_key(kb, sid, mid);
		rc = mdb_del(t, s->dbi[LM_META], &k, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return lm_fatal(s, rc);
	}
	return 0;
}

static int lm_w_status(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	return lm_set_status(s, t, op->u.msg.sid, op->u.msg.mid, op->status, op->flag ? &op->u.msg.usage : NULL,
			     op->t_ns);
}

/* Answers a killed run left QUEUED or STREAMING become INTERRUPTED. */
int lm_repair(struct lm_store *s, MDB_txn *t, uint32_t *fixed)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_META], &cur);
	if (rc)
		return rc;
	MDB_val prefix = { sizeof(lm_open_prefix) - 1, (void *)lm_open_prefix };
	MDB_val k = prefix, v;
	int64_t now = lm_unix_ns();
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) == 0 && lm_has_prefix(&k, &prefix)) {
		char sid[CHAN_ID_LEN] = { 0 }, mid[CHAN_ID_LEN] = { 0 };
		const char *p = (const char *)k.mv_data + prefix.mv_size;
		size_t rest = k.mv_size - prefix.mv_size;
		const char *nul = memchr(p, 0, rest);
		size_t sl = nul ? (size_t)(nul - p) : 0;
		size_t ml = nul ? rest - sl - 1 : 0;
		if (nul && sl < CHAN_ID_LEN && ml < CHAN_ID_LEN) {
			memcpy(sid, p, sl);
			memcpy(mid, nul + 1, ml);
		}
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
		if (!sid[0] || !mid[0]) {
			LOG_WARN("store: dropping a malformed open-answer marker");
			k = prefix;
			continue;
		}
		struct lm_msg_rec m;
		MDB_val mv;
		uint32_t idx;
		rc = lm_msg_locate(s, t, sid, mid, &idx, &m, &mv);
		if (rc == 0 && !lm_terminal(m.status)) {
			s->wrc = 0;
			rc = lm_set_status(s, t, sid, mid, STORE_MSG_INTERRUPTED, NULL, now);
			if (rc == LM_FATAL) {
				rc = s->wrc;
				break;
			}
			rc = lm_event_msg(s, t, now, sid, mid, STORE_MSG_INTERRUPTED);
			if (rc)
				break;
			(*fixed)++;
		}
		if (rc && rc != MDB_NOTFOUND && rc != -ENOENT)
			break;
		k = prefix;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND || rc == 0 || rc == -ENOENT ? 0 : rc;
}

/* ---- writer: users, keys, auth ----------------------------------------- */

static int lm_w_user_put(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_user *u = &op->u.user;
	MDB_val k = lm_str_key(u->name, STORE_USER_MAX), v;
	int rc = mdb_get(t, s->dbi[LM_USERS], &k, &v);
	if (rc && rc != MDB_NOTFOUND)
		return lm_fatal(s, rc);
	if (rc == 0 && op->flag)
		return -EEXIST;
	if (rc == MDB_NOTFOUND && !op->flag)
		return -ENOENT;
	struct lm_user_rec r;
	memset(&r, 0, sizeof(r));
	if (rc == 0) {
		if (v.mv_size != sizeof(r))
			return lm_fatal(s, MDB_CORRUPTED);
		memcpy(&r, v.mv_data, sizeof(r));
	} else if (lm_new_uid(&r.uid) < 0) {
		return -EIO;
	}
	r.role = u->role;
	r.created_at = u->created_at ? u->created_at : op->t_ns / 1000000000;
	lm_strcpy(r.pwhash, sizeof(r.pwhash), u->pwhash);
	v = (MDB_val){ sizeof(r), &r };
	LM_W(s, mdb_put(t, s->dbi[LM_USERS], &k, &v, 0));
	return 0;
}

/* Deletes the entries of db (auth or api_keys) whose owner field is name. */
static int lm_del_owned(struct lm_store *s, MDB_txn *t, enum lm_db db, size_t owner_off, const char *name)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[db], &cur);
	if (rc)
		return rc;
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;) {
		char owner[STORE_USER_MAX];
		if (v.mv_size >= owner_off + sizeof(owner)) {
			memcpy(owner, (uint8_t *)v.mv_data + owner_off, sizeof(owner));
			if (strncmp(owner, name, sizeof(owner)) == 0 && k.mv_size <= LM_KEY_MAX) {
				/* Re-seek from the deleted key: where a cursor stands
				 * after a delete is not worth relying on. */
				uint8_t kb[LM_KEY_MAX];
				memcpy(kb, k.mv_data, k.mv_size);
				k.mv_data = kb;
				rc = mdb_cursor_del(cur, 0);
				if (rc)
					break;
				rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
				continue;
			}
		}
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int lm_w_user_del(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	MDB_val k = lm_str_key(op->u.name, STORE_USER_MAX);
	int rc = mdb_del(t, s->dbi[LM_USERS], &k, NULL);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return lm_fatal(s, rc);
	/* The user's logins and keys go with it; conversations stay. */
	LM_W(s, lm_del_owned(s, t, LM_AUTH, offsetof(struct lm_auth_rec, user), op->u.name));
	LM_W(s, lm_del_owned(s, t, LM_APIKEYS, offsetof(struct lm_key_rec, owner), op->u.name));
	return 0;
}

static int lm_put_new(struct lm_store *s, MDB_txn *t, enum lm_db db, MDB_val k, MDB_val v)
{
	int rc = mdb_put(t, s->dbi[db], &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST)
		return -EEXIST;
	return rc ? lm_fatal(s, rc) : 0;
}

static int lm_w_apikey_put(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_apikey *kk = &op->u.key;
	struct lm_key_rec r;
	memset(&r, 0, sizeof(r));
	lm_strcpy(r.id, sizeof(r.id), kk->id);
	lm_strcpy(r.owner, sizeof(r.owner), kk->owner);
	lm_strcpy(r.label, sizeof(r.label), kk->label);
	r.created_at = kk->created_at ? kk->created_at : op->t_ns / 1000000000;
	return lm_put_new(s, t, LM_APIKEYS, (MDB_val){ STORE_HASH_LEN, (void *)kk->hash },
			  (MDB_val){ sizeof(r), &r });
}

static int lm_w_apikey_del(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_APIKEYS], &cur);
	if (rc)
		return lm_fatal(s, rc);
	MDB_val k, v;
	bool found = false;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct lm_key_rec r;
		if (v.mv_size != sizeof(r))
			continue;
		memcpy(&r, v.mv_data, sizeof(r));
		if (strncmp(r.id, op->u.name, sizeof(r.id)) == 0) {
			rc = mdb_cursor_del(cur, 0);
			found = rc == 0;
			break;
		}
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return lm_fatal(s, rc);
	return found ? 0 : -ENOENT;
}

static int lm_w_auth_put(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_auth *a = &op->u.auth;
	struct lm_auth_rec r;
	memset(&r, 0, sizeof(r));
	lm_strcpy(r.user, sizeof(r.user), a->user);
	lm_strcpy(r.csrf, sizeof(r.csrf), a->csrf);
	r.created_at = a->created_at;
	r.expires_at = a->expires_at;
	return lm_put_new(s, t, LM_AUTH, (MDB_val){ STORE_HASH_LEN, (void *)a->hash }, (MDB_val){ sizeof(r), &r });
}

static int lm_w_auth_del(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	MDB_val k = { STORE_HASH_LEN, op->u.hash };
	int rc = mdb_del(t, s->dbi[LM_AUTH], &k, NULL);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	return rc ? lm_fatal(s, rc) : 0;
}

static int lm_w_event(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	LM_W(s, lm_event_put(s, t, op->t_ns, op->u.ev.sid, op->u.ev.kind, (const char *)lm_op_payload(op), op->n));
	return 0;
}

/* Applies one queued write inside t: 0, a negative errno (nothing of this op
 * was written), or LM_FATAL (t is broken; s->wrc says why). */
int lm_apply(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	switch (op->type) {
	case LM_OP_SESSION_CREATE:
		return lm_w_session_create(s, t, op);
	case LM_OP_SESSION_UPDATE:
		return lm_w_session_update(s, t, op);
	case LM_OP_SESSION_DELETE:
		return lm_w_session_delete(s, t, op);
	case LM_OP_MESSAGE_ADD:
		return lm_w_message_add(s, t, op);
	case LM_OP_TOKENS:
		return lm_w_tokens(s, t, op);
	case LM_OP_STATUS:
		return lm_w_status(s, t, op);
	case LM_OP_USER_PUT:
		return lm_w_user_put(s, t, op);
	case LM_OP_USER_DEL:
		return lm_w_user_del(s, t, op);
	case LM_OP_APIKEY_PUT:
		return lm_w_apikey_put(s, t, op);
	case LM_OP_APIKEY_DEL:
		return lm_w_apikey_del(s, t, op);
	case LM_OP_AUTH_PUT:
		return lm_w_auth_put(s, t, op);
	case LM_OP_AUTH_DEL:
		return lm_w_auth_del(s, t, op);
	case LM_OP_EVENT:
		return lm_w_event(s, t, op);
	}
	return -EINVAL;
}

/* ---- migrations -------------------------------------------------------- */

/* Schema 1 records are the schema 2 ones without their trailing identity. */
#define LM_USER_V1_SIZE offsetof(struct lm_user_rec, uid)
#define LM_CONV_V1_SIZE offsetof(struct lm_conv_rec, owner_uid)

/* Replaces the value of key *k (where cur stands) with a larger one, then
 * puts cur back on that key: a resized value is deleted and inserted again,
 * and where the cursor stood after that is not worth relying on. */
static int lm_migrate_put(struct lm_store *s, MDB_txn *t, enum lm_db db, MDB_cursor *cur, MDB_val *k,
			  MDB_val *nv)
{
	uint8_t kb[LM_KEY_MAX];
	if (k->mv_size > sizeof(kb))
		return MDB_CORRUPTED;
	memcpy(kb, k->mv_data, k->mv_size);
	k->mv_data = kb;
	int rc = mdb_put(t, s->dbi[db], k, nv, 0);
	if (rc)
		return rc;
	MDB_val v;
	return mdb_cursor_get(cur, k, &v, MDB_SET_KEY);
}

/* Gives every user a random uid and every conversation its owner's uid. A
 * conversation older than its owner's record was left by an earlier user of
 * that name: it gets uid 0, which nobody has. */
int lm_migrate_identities(struct lm_store *s, MDB_txn *t)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(t, s->dbi[LM_USERS], &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct lm_user_rec r;
		if (v.mv_size != LM_USER_V1_SIZE) {
			rc = MDB_CORRUPTED;
			break;
		}
		memset(&r, 0, sizeof(r));
		memcpy(&r, v.mv_data, LM_USER_V1_SIZE);
		if (lm_new_uid(&r.uid) < 0) {
			rc = EIO;
			break;
		}
		rc = lm_migrate_put(s, t, LM_USERS, cur, &k, &(MDB_val){ sizeof(r), &r });
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return rc;
	rc = mdb_cursor_open(t, s->dbi[LM_CONVS], &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct lm_conv_rec c;
		if (v.mv_size != LM_CONV_V1_SIZE) {
			rc = MDB_CORRUPTED;
			break;
		}
		memset(&c, 0, sizeof(c));
		memcpy(&c, v.mv_data, LM_CONV_V1_SIZE);
		MDB_val uk = lm_str_key(c.user, STORE_USER_MAX), uv;
		rc = mdb_get(t, s->dbi[LM_USERS], &uk, &uv);
		if (rc == 0 && uv.mv_size == sizeof(struct lm_user_rec)) {
			struct lm_user_rec u;
			memcpy(&u, uv.mv_data, sizeof(u));
			if (c.created_at >= u.created_at)
				c.owner_uid = u.uid;
		} else if (rc == 0) {
			rc = MDB_CORRUPTED;
			break;
		} else if (rc != MDB_NOTFOUND) {
			break;
		}
		rc = lm_migrate_put(s, t, LM_CONVS, cur, &k, &(MDB_val){ sizeof(c), &c });
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- loop side: queueing writes ---------------------------------------- */

#define LM_S(st) ((struct lm_store *)(st))

int lm_session_create(struct store *st, const struct store_session *ss, store_done_fn done, void *arg)
{
	if (!lm_str_ok(ss->id, CHAN_ID_LEN) || strnlen(ss->user, STORE_USER_MAX) == STORE_USER_MAX)
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_SESSION_CREATE, LM_USIZE(sess), 0, done, arg);
	if (!op)
		return -ENOMEM;
	op->u.sess = *ss;
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_session_update(struct store *st, const struct store_session *ss, store_done_fn done, void *arg)
{
	if (!lm_str_ok(ss->id, CHAN_ID_LEN))
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_SESSION_UPDATE, LM_USIZE(sess), 0, done, arg);
	if (!op)
		return -ENOMEM;
	op->u.sess = *ss;
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_session_delete(struct store *st, const char *sid, store_done_fn done, void *arg)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN))
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_SESSION_DELETE, LM_USIZE(msg), 0, done, arg);
	if (!op)
		return -ENOMEM;
	lm_strcpy(op->u.msg.sid, CHAN_ID_LEN, sid);
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_message_add(struct store *st, const char *sid, const char *user_mid, const char *content,
		   size_t len, const char *asst_mid, uint32_t hint_tokens, store_done_fn done, void *arg)
{
	/* LMDB grows pages as needed: nothing to reserve for the answer. */
	(void)hint_tokens;
	if (!lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(user_mid, CHAN_ID_LEN) ||
	    !lm_str_ok(asst_mid, CHAN_ID_LEN) || len > UINT32_MAX)
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_MESSAGE_ADD, LM_USIZE(add), len, done, arg);
	if (!op)
		return -ENOMEM;
	lm_strcpy(op->u.add.sid, CHAN_ID_LEN, sid);
	lm_strcpy(op->u.add.umid, CHAN_ID_LEN, user_mid);
	lm_strcpy(op->u.add.amid, CHAN_ID_LEN, asst_mid);
	op->n = (uint32_t)len;
	if (len)
		memcpy(lm_op_payload(op), content, len);
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_tokens_append(struct store *st, const char *sid, const char *mid, uint32_t first_seq,
		     const struct store_token *tk, uint32_t n)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(mid, CHAN_ID_LEN))
		return -EINVAL;
	if (n == 0)
		return 0;
	if (first_seq == 0 || first_seq - 1 > UINT32_MAX - n)
		return -EINVAL;
	size_t bytes = 0;
	for (uint32_t i = 0; i < n; i++)
		bytes += tk[i].len;
	if (bytes > UINT32_MAX || n > UINT32_MAX / sizeof(struct lm_tokhdr))
		return -EFBIG;
	size_t payload = (size_t)n * sizeof(struct lm_tokhdr) + bytes;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_TOKENS, LM_USIZE(msg), payload, NULL, NULL);
	if (!op)
		return -ENOMEM;
	lm_strcpy(op->u.msg.sid, CHAN_ID_LEN, sid);
	lm_strcpy(op->u.msg.mid, CHAN_ID_LEN, mid);
	op->u.msg.first_seq = first_seq;
	op->n = n;
	struct lm_tokhdr *h = (struct lm_tokhdr *)lm_op_payload(op);
	uint8_t *text = (uint8_t *)(h + n);
	for (uint32_t i = 0; i < n; i++) {
		h[i] = (struct lm_tokhdr){ .len = tk[i].len, .offset_ns = tk[i].offset_ns };
		memcpy(text, tk[i].text, tk[i].len);
		text += tk[i].len;
	}
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_message_status(struct store *st, const char *sid, const char *mid, enum store_msg_status status,
		      const struct store_usage *usage)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(mid, CHAN_ID_LEN) ||
	    (unsigned)status > STORE_MSG_INTERRUPTED)
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_STATUS, LM_USIZE(msg), 0, NULL, NULL);
	if (!op)
		return -ENOMEM;
	lm_strcpy(op->u.msg.sid, CHAN_ID_LEN, sid);
	lm_strcpy(op->u.msg.mid, CHAN_ID_LEN, mid);
	op->status = (uint8_t)status;
	if (usage) {
		op->flag = 1;
		op->u.msg.usage = *usage;
	}
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_user_put(struct store *st, const struct store_user *u, int create_only, store_done_fn done, void *arg)
{
	if (!lm_str_ok(u->name, STORE_USER_MAX) || !lm_str_ok(u->pwhash, STORE_PWHASH_MAX) ||
	    u->role > STORE_USER_ROLE_ADMIN)
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_USER_PUT, LM_USIZE(user), 0, done, arg);
	if (!op)
		return -ENOMEM;
	op->u.user = *u;
	op->flag = create_only != 0;
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

/* Queues an op whose whole argument is one short name (user, key id). */
static int lm_name_op(struct store *st, uint16_t type, const char *name, size_t cap, store_done_fn done,
		      void *arg)
{
	if (!lm_str_ok(name, cap))
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), type, LM_USIZE(name), 0, done, arg);
	if (!op)
		return -ENOMEM;
	lm_strcpy(op->u.name, sizeof(op->u.name), name);
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_user_del(struct store *st, const char *name, store_done_fn done, void *arg)
{
	return lm_name_op(st, LM_OP_USER_DEL, name, STORE_USER_MAX, done, arg);
}

int lm_apikey_put(struct store *st, const struct store_apikey *k, store_done_fn done, void *arg)
{
	if (!lm_str_ok(k->id, STORE_KEYID_MAX) || !lm_str_ok(k->owner, STORE_USER_MAX) ||
	    strnlen(k->label, sizeof(k->label)) == sizeof(k->label))
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_APIKEY_PUT, LM_USIZE(key), 0, done, arg);
	if (!op)
		return -ENOMEM;
	op->u.key = *k;
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_apikey_del(struct store *st, const char *id, store_done_fn done, void *arg)
{
	return lm_name_op(st, LM_OP_APIKEY_DEL, id, STORE_KEYID_MAX, done, arg);
}

int lm_auth_put(struct store *st, const struct store_auth *a, store_done_fn done, void *arg)
{
	if (!lm_str_ok(a->user, STORE_USER_MAX) || strnlen(a->csrf, STORE_CSRF_MAX) == STORE_CSRF_MAX)
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_AUTH_PUT, LM_USIZE(auth), 0, done, arg);
	if (!op)
		return -ENOMEM;
	op->u.auth = *a;
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_auth_del(struct store *st, const uint8_t hash[STORE_HASH_LEN], store_done_fn done, void *arg)
{
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_AUTH_DEL, LM_USIZE(hash), 0, done, arg);
	if (!op)
		return -ENOMEM;
	memcpy(op->u.hash, hash, STORE_HASH_LEN);
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

int lm_event_add(struct store *st, const char *sid, const char *kind, const char *detail)
{
	if (!lm_str_ok(kind, LM_KIND_MAX) || (sid && strnlen(sid, CHAN_ID_LEN) == CHAN_ID_LEN))
		return -EINVAL;
	size_t dlen = detail ? strnlen(detail, LM_DETAIL_MAX + 1) : 0;
	if (dlen > LM_DETAIL_MAX)
		return -EINVAL;
	struct lm_op *op = lm_enqueue_begin(LM_S(st), LM_OP_EVENT, LM_USIZE(ev), dlen, NULL, NULL);
	if (!op)
		return -ENOMEM;
	lm_strcpy(op->u.ev.sid, CHAN_ID_LEN, sid ? sid : "");
	lm_strcpy(op->u.ev.kind, LM_KIND_MAX, kind);
	op->n = (uint32_t)dlen;
	if (dlen)
		memcpy(lm_op_payload(op), detail, dlen);
	lm_enqueue_end(LM_S(st), op);
	return 0;
}

/* ---- loop side: reads -------------------------------------------------- */

/* The read snapshot, and the errno for a failed read. */
static int lm_rerr(int rc)
{
	return rc == MDB_NOTFOUND ? -ENOENT : lm_errno(rc);
}

/* Copies the record of exactly `size` bytes stored under k in database db,
 * read from the loop's snapshot; -EIO for a record of another size. */
static int lm_read_fixed(struct lm_store *s, unsigned db, MDB_val k, void *rec, size_t size)
{
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	MDB_val v;
	int rc = mdb_get(t, s->dbi[db], &k, &v);
	if (rc)
		return lm_rerr(rc);
	if (v.mv_size != size)
		return -EIO;
	memcpy(rec, v.mv_data, size);
	return 0;
}

int lm_session_get(struct store *st, const char *sid, struct store_session *out)
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

uint32_t lm_message_count(struct store *st, const char *sid)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN))
		return 0;
	MDB_txn *t = lm_rtxn(LM_S(st));
	struct lm_conv_rec c;
	if (!t || lm_conv_load(LM_S(st), t, sid, &c))
		return 0;
	return c.nmsg;
}

int lm_message_get(struct store *st, const char *sid, uint32_t idx, struct store_message *out)
{
	struct lm_store *s = LM_S(st);
	if (!lm_str_ok(sid, CHAN_ID_LEN))
		return -ENOENT;
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	struct lm_msg_rec m;
	MDB_val v;
	int rc = lm_msg_load(s, t, sid, idx, &m, &v);
	if (rc)
		return lm_rerr(rc);
	memset(out, 0, sizeof(*out));
	lm_strcpy(out->id, sizeof(out->id), m.id);
	out->role = m.role;
	out->status = m.status;
	out->created_at = m.created_at;
	out->ntokens = m.ntokens;
	out->usage = (struct store_usage){ .prompt_tokens = m.prompt_tokens,
					   .completion_tokens = m.completion_tokens,
					   .cost_usd = m.cost_usd };
	if (v.mv_size > sizeof(m) || m.content_len == 0) {
		out->content = (const char *)v.mv_data + sizeof(m);
		out->content_len = v.mv_size - sizeof(m);
		return 0;
	}
	/* A running answer: its content so far is its token log. */
	uint8_t *buf = lm_arena_alloc(s, m.content_len);
	if (!buf)
		return -ENOMEM;
	struct lm_fill f = { buf, m.content_len };
	rc = lm_tokens_walk(s, t, sid, m.id, lm_fill_cb, &f);
	if (rc)
		return lm_rerr(rc);
	out->content = (const char *)buf;
	out->content_len = m.content_len - f.left;
	return 0;
}

int64_t lm_message_find(struct store *st, const char *sid, const char *mid)
{
	struct lm_store *s = LM_S(st);
	if (!lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(mid, CHAN_ID_LEN))
		return -1;
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -1;
	struct lm_msg_rec m;
	MDB_val v;
	uint32_t idx;
	return lm_msg_locate(s, t, sid, mid, &idx, &m, &v) ? -1 : (int64_t)idx;
}

int lm_token_get(struct store *st, const char *sid, const char *mid, uint32_t seq, struct store_token *out)
{
	struct lm_store *s = LM_S(st);
	if (seq == 0 || !lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(mid, CHAN_ID_LEN))
		return -ENOENT;
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_tok_key(kb, sid, mid, seq), v;
	int rc = mdb_get(t, s->dbi[LM_TOKENS], &k, &v);
	if (rc)
		return lm_rerr(rc);
	if (v.mv_size < 8)
		return -EIO;
	memcpy(&out->offset_ns, v.mv_data, 8);
	out->text = (const char *)v.mv_data + 8;
	out->len = (uint32_t)(v.mv_size - 8);
	return 0;
}

/* Cursor text: "<updated_at>.<session id>" of the last session returned. */
static int lm_cursor_parse(const char *cur, int64_t *updated_at, char sid[CHAN_ID_LEN])
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

int lm_session_list(struct store *st, const struct store_list_query *q,
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
		if (lm_cursor_parse(q->cursor, &ua, sid) < 0)
			return -EINVAL;
		after = lm_byuser_key(ckb, q->user, ua, sid);
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

/* Fills a store_user from its key (the name, not NUL-terminated) and record. */
static void lm_user_out(const void *name, size_t name_len, const struct lm_user_rec *r,
			struct store_user *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->name, name, name_len);
	out->role = r->role;
	out->created_at = r->created_at;
	out->uid = r->uid;
	lm_strcpy(out->pwhash, sizeof(out->pwhash), r->pwhash);
}

int lm_user_get(struct store *st, const char *name, struct store_user *out)
{
	struct lm_store *s = LM_S(st);
	if (!lm_str_ok(name, STORE_USER_MAX))
		return -ENOENT;
	struct lm_user_rec r;
	int rc = lm_read_fixed(s, LM_USERS, lm_str_key(name, STORE_USER_MAX), &r, sizeof(r));
	if (rc)
		return rc;
	lm_user_out(name, strlen(name), &r, out);
	return 0;
}

/*
 * Calls fn for every (key, value) of database db in a read transaction; fn
 * answers 0 to go on or an MDB error (MDB_CORRUPTED for a record of the wrong
 * shape) to stop. Returns 0 or a negative errno.
 */
static int lm_walk(struct lm_store *s, int db, int (*fn)(void *ctx, const MDB_val *k, const MDB_val *v),
		   void *ctx)
{
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[db], &cur);
	if (rc)
		return lm_errno(rc);
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		rc = fn(ctx, &k, &v);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : lm_errno(rc);
}

struct lm_user_walk {
	void (*each)(void *arg, const struct store_user *u);
	void *arg;
};

static int lm_user_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	const struct lm_user_walk *w = ctx;
	struct lm_user_rec r;
	struct store_user u;
	if (v->mv_size != sizeof(r) || k->mv_size >= sizeof(u.name))
		return MDB_CORRUPTED;
	memcpy(&r, v->mv_data, sizeof(r));
	lm_user_out(k->mv_data, k->mv_size, &r, &u);
	w->each(w->arg, &u);
	return 0;
}

int lm_user_list(struct store *st, void (*each)(void *arg, const struct store_user *u), void *arg)
{
	struct lm_user_walk w = { each, arg };
	return lm_walk(LM_S(st), LM_USERS, lm_user_step, &w);
}

static void lm_key_out(const void *hash, const struct lm_key_rec *r, struct store_apikey *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->hash, hash, STORE_HASH_LEN);
	lm_strcpy(out->id, sizeof(out->id), r->id);
	lm_strcpy(out->owner, sizeof(out->owner), r->owner);
	lm_strcpy(out->label, sizeof(out->label), r->label);
	out->created_at = r->created_at;
}

int lm_apikey_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_apikey *out)
{
	struct lm_key_rec r;
	MDB_val k = { STORE_HASH_LEN, (void *)hash };
	int rc = lm_read_fixed(LM_S(st), LM_APIKEYS, k, &r, sizeof(r));
	if (rc)
		return rc;
	lm_key_out(hash, &r, out);
	return 0;
}

struct lm_key_walk {
	const char *owner;
	void (*each)(void *arg, const struct store_apikey *k);
	void *arg;
};

static int lm_key_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	const struct lm_key_walk *w = ctx;
	struct lm_key_rec r;
	if (v->mv_size != sizeof(r) || k->mv_size != STORE_HASH_LEN)
		return MDB_CORRUPTED;
	memcpy(&r, v->mv_data, sizeof(r));
	if (w->owner && strncmp(w->owner, r.owner, sizeof(r.owner)) != 0)
		return 0;
	struct store_apikey out;
	lm_key_out(k->mv_data, &r, &out);
	w->each(w->arg, &out);
	return 0;
}

int lm_apikey_list(struct store *st, const char *owner, void (*each)(void *arg, const struct store_apikey *k),
		   void *arg)
{
	struct lm_key_walk w = { owner, each, arg };
	return lm_walk(LM_S(st), LM_APIKEYS, lm_key_step, &w);
}

int lm_auth_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_auth *out)
{
	struct lm_auth_rec r;
	MDB_val k = { STORE_HASH_LEN, (void *)hash };
	int rc = lm_read_fixed(LM_S(st), LM_AUTH, k, &r, sizeof(r));
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	memcpy(out->hash, hash, STORE_HASH_LEN);
	lm_strcpy(out->user, sizeof(out->user), r.user);
	lm_strcpy(out->csrf, sizeof(out->csrf), r.csrf);
	out->created_at = r.created_at;
	out->expires_at = r.expires_at;
	return 0;
}
