/*
 * The LMDB store's messages: the messages database, the token log (tokens)
 * and the markers of answers not ended yet (meta "open:" keys), which let
 * open mark a killed run's answers interrupted. Writer steps run inside the
 * group-commit transaction; reads run on the loop thread in its read
 * snapshot. docs/storage.md has the tables.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "store/store_lmdb_int.h"

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

/* A message as found: its record, the stored value (the record and any
 * inline content, pointing into the map) and its index in the session. */
struct lm_msg_at {
	struct lm_msg_rec m;
	MDB_val v;
	uint32_t idx;
};

static const char lm_msg_open_prefix[] = "open:";

/* messages: sid \0 be32(index); without the index, the session's prefix
 * (which tokens keys share). */
static MDB_val lm_msg_key(uint8_t *b, const char *sid, uint32_t idx)
{
	uint8_t *p = lm_put_str(b, sid, CHAN_ID_LEN);
	*p++ = 0;
	return lm_val(b, lm_put_be32(p, idx));
}

/* tokens: sid \0 mid \0 be32(seq); without seq, the answer's prefix. */
static MDB_val lm_msg_tok_key(uint8_t *b, const char *sid, const char *mid, uint32_t seq)
{
	uint8_t *p = lm_put_str(b, sid, CHAN_ID_LEN);
	*p++ = 0;
	p = lm_put_str(p, mid, CHAN_ID_LEN);
	*p++ = 0;
	return lm_val(b, lm_put_be32(p, seq));
}

/* meta: "open:" sid \0 mid -> be32(index): answers not ended yet. With mid
 * "", the prefix of every marker of the session. */
static MDB_val lm_msg_open_key(uint8_t *b, const char *sid, const char *mid)
{
	uint8_t *p = lm_put_str(b, lm_msg_open_prefix, sizeof(lm_msg_open_prefix));
	p = lm_put_str(p, sid, CHAN_ID_LEN);
	*p++ = 0;
	return lm_val(b, lm_put_str(p, mid, CHAN_ID_LEN));
}

static bool lm_msg_terminal(uint8_t status)
{
	return status >= STORE_MSG_COMPLETE;
}

/* ---- record access (either thread, given its transaction) --------------- */

static int lm_msg_load(struct lm_store *s, MDB_txn *t, const char *sid, uint32_t idx, struct lm_msg_at *at)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_msg_key(kb, sid, idx);
	int rc = mdb_get(t, s->dbi[LM_MSGS], &k, &at->v);
	if (rc)
		return rc;
	if (at->v.mv_size < sizeof(at->m))
		return MDB_CORRUPTED;
	memcpy(&at->m, at->v.mv_data, sizeof(at->m));
	at->idx = idx;
	return 0;
}

/* Finds message mid, newest first (lookups are nearly always for the answer
 * that runs). MDB_NOTFOUND when the session or the message is unknown. */
static int lm_msg_locate(struct lm_store *s, MDB_txn *t, const char *sid, const char *mid,
			 struct lm_msg_at *at)
{
	struct lm_conv_rec c;
	int rc = lm_conv_load(s, t, sid, &c);
	if (rc)
		return rc;
	for (uint32_t i = c.nmsg; i-- > 0;) {
		rc = lm_msg_load(s, t, sid, i, at);
		if (rc)
			return rc;
		if (strncmp(at->m.id, mid, CHAN_ID_LEN) == 0)
			return 0;
	}
	return MDB_NOTFOUND;
}

/* Calls fn for each token of sid/mid in order; stops at the first error. */
static int lm_msg_tokens_walk(struct lm_store *s, MDB_txn *t, const char *sid, const char *mid,
			      int (*fn)(void *arg, const uint8_t *text, size_t len), void *arg)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_msg_tok_key(kb, sid, mid, 1), v;
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

static int lm_msg_sum_cb(void *arg, const uint8_t *text, size_t len)
{
	(void)text;
	*(uint64_t *)arg += len;
	return 0;
}

struct lm_msg_fill {
	uint8_t *p;
	size_t left;
};

static int lm_msg_fill_cb(void *arg, const uint8_t *text, size_t len)
{
	struct lm_msg_fill *f = arg;
	if (len > f->left)
		return MDB_CORRUPTED;
	memcpy(f->p, text, len);
	f->p += len;
	f->left -= len;
	return 0;
}

/* ---- writer ------------------------------------------------------------ */

/* Deletes every key of db that starts with prefix. */
static int lm_msg_del_prefix(struct lm_store *s, MDB_txn *t, enum lm_db db, MDB_val prefix)
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

int lm_msg_purge(struct lm_store *s, MDB_txn *t, const char *sid)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val prefix = lm_msg_key(kb, sid, 0);
	prefix.mv_size -= 4;
	int rc = lm_msg_del_prefix(s, t, LM_MSGS, prefix);
	if (!rc)
		rc = lm_msg_del_prefix(s, t, LM_TOKENS, prefix);
	uint8_t ob[LM_KEY_MAX];
	if (!rc)
		rc = lm_msg_del_prefix(s, t, LM_META, lm_msg_open_key(ob, sid, ""));
	return rc;
}

/* Writes record m at idx with room for len content bytes after it, which
 * *content points to. */
static int lm_msg_reserve(struct lm_store *s, MDB_txn *t, const char *sid, uint32_t idx,
			  const struct lm_msg_rec *m, size_t len, uint8_t **content)
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_msg_key(kb, sid, idx), v = { sizeof(*m) + len, NULL };
	int rc = mdb_put(t, s->dbi[LM_MSGS], &k, &v, MDB_RESERVE);
	if (rc)
		return rc;
	memcpy(v.mv_data, m, sizeof(*m));
	*content = (uint8_t *)v.mv_data + sizeof(*m);
	return 0;
}

static int lm_msg_put(struct lm_store *s, MDB_txn *t, const char *sid, uint32_t idx,
		      const struct lm_msg_rec *m, const void *content, size_t len)
{
	uint8_t *dst;
	int rc = lm_msg_reserve(s, t, sid, idx, m, len, &dst);
	if (rc == 0 && len)
		memcpy(dst, content, len);
	return rc;
}

int lm_msg_w_add(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const char *sid = op->u.add.sid;
	struct lm_conv_rec old, c;
	int rc = lm_werr(s, lm_conv_load(s, t, sid, &old));
	if (rc)
		return rc;
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

	/* The marker also keeps the key the answer is posted with, for the
	 * usage log of an answer that never ends in this run. */
	uint8_t kb[LM_KEY_MAX], ib[4 + STORE_KEYID_MAX];
	size_t kl = strnlen(op->u.add.key_id, STORE_KEYID_MAX - 1);
	MDB_val k = lm_msg_open_key(kb, sid, op->u.add.amid), v = { 4 + kl, ib };
	lm_put_be32(ib, old.nmsg + 1);
	memcpy(ib + 4, op->u.add.key_id, kl);
	LM_W(s, mdb_put(t, s->dbi[LM_META], &k, &v, 0));

	c = old;
	c.nmsg += 2;
	c.updated_at = now_s;
	LM_W(s, lm_conv_store(s, t, sid, &old, &c));
	return 0;
}

int lm_msg_w_tokens(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const char *sid = op->u.msg.sid, *mid = op->u.msg.mid;
	struct lm_msg_at at;
	int rc = lm_werr(s, lm_msg_locate(s, t, sid, mid, &at));
	if (rc)
		return rc;
	struct lm_msg_rec *m = &at.m;
	if (lm_msg_terminal(m->status) || m->ntokens > UINT32_MAX - op->n)
		return -EINVAL;
	if (op->u.msg.first_seq != m->ntokens + 1) {
		/* Renumbering would shift every later token of the answer. */
		LOG_ERROR("store: tokens %u..%u of %s refused: %s after token %u", op->u.msg.first_seq,
			  op->u.msg.first_seq + op->n - 1, mid,
			  op->u.msg.first_seq > m->ntokens ? "a gap" : "an overlap", m->ntokens);
		return -ERANGE;
	}
	const struct lm_tokhdr *h = (const struct lm_tokhdr *)lm_op_payload(op);
	const uint8_t *text = (const uint8_t *)(h + op->n);
	for (uint32_t i = 0; i < op->n; i++) {
		uint8_t kb[LM_KEY_MAX];
		MDB_val k = lm_msg_tok_key(kb, sid, mid, m->ntokens + 1 + i), v = { 8 + h[i].len, NULL };
		LM_W(s, mdb_put(t, s->dbi[LM_TOKENS], &k, &v, MDB_RESERVE));
		memcpy(v.mv_data, &h[i].offset_ns, 8);
		memcpy((uint8_t *)v.mv_data + 8, text, h[i].len);
		text += h[i].len;
		m->content_len += h[i].len;
	}
	m->ntokens += op->n;
	/* A running answer keeps no inline content: its tokens are it. */
	LM_W(s, lm_msg_put(s, t, sid, at.idx, m, NULL, 0));
	return 0;
}

/* The key an answer was posted with, from its open marker. */
static void lm_msg_marker_key(struct lm_store *s, MDB_txn *t, const char *sid, const char *mid,
			      char key[STORE_KEYID_MAX])
{
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_msg_open_key(kb, sid, mid), v;
	key[0] = 0;
	if (mdb_get(t, s->dbi[LM_META], &k, &v) == 0 && v.mv_size > 4 && v.mv_size - 4 < STORE_KEYID_MAX) {
		memcpy(key, (const uint8_t *)v.mv_data + 4, v.mv_size - 4);
		key[v.mv_size - 4] = 0;
	}
}

/* An answer that ended enters the usage log, under its conversation's owner. */
static int lm_msg_log_usage(struct lm_store *s, MDB_txn *t, const char *sid, const struct lm_msg_rec *m,
			    const char *key, int64_t t_ns)
{
	struct lm_conv_rec c;
	struct store_usage_rec u;
	memset(&u, 0, sizeof(u));
	int rc = lm_conv_load(s, t, sid, &c);
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	if (rc == 0) {
		lm_strcpy(u.user, sizeof(u.user), c.user);
		u.uid = c.owner_uid;
	}
	lm_strcpy(u.sid, sizeof(u.sid), sid);
	lm_strcpy(u.mid, sizeof(u.mid), m->id);
	if (key && key[0])
		lm_strcpy(u.key_id, sizeof(u.key_id), key);
	else
		lm_msg_marker_key(s, t, sid, m->id, u.key_id);
	lm_strcpy(u.model, sizeof(u.model), m->model);
	lm_strcpy(u.backend, sizeof(u.backend), m->backend);
	u.prompt_tokens = m->prompt_tokens;
	u.completion_tokens = m->completion_tokens;
	u.cost_usd = m->cost_usd;
	u.t_ns = t_ns;
	u.status = m->status;
	return lm_usage_put(s, t, &u);
}

/* Sets a message's status; an ended answer gets its content put together
 * from the token log once, so reading it later is one lookup. */
static int lm_msg_set_status(struct lm_store *s, MDB_txn *t, const char *sid, const char *mid, uint8_t status,
			     const struct store_usage *usage, const char *key, int64_t t_ns)
{
	struct lm_msg_at at;
	int rc = lm_werr(s, lm_msg_locate(s, t, sid, mid, &at));
	if (rc)
		return rc;
	struct lm_msg_rec *m = &at.m;
	bool inline_content = at.v.mv_size > sizeof(*m);
	bool ends = lm_msg_terminal(status) && !lm_msg_terminal(m->status) && m->role == STORE_ROLE_ASSISTANT;
	m->status = status;
	if (usage) {
		m->prompt_tokens = usage->prompt_tokens;
		m->completion_tokens = usage->completion_tokens;
		m->cost_usd = usage->cost_usd;
		if (usage->backend[0])
			lm_strcpy(m->backend, sizeof(m->backend), usage->backend);
	} else if (ends) {
		/* Ended without a count (marked interrupted on open): the tokens
		 * stored are what it produced. */
		m->completion_tokens = m->ntokens;
		m->cost_usd = conf_model_cost(s->conf, m->model, m->prompt_tokens, m->completion_tokens);
	}
	if (ends)
		LM_W(s, lm_msg_log_usage(s, t, sid, m, usage ? usage->key_id : key, t_ns));
	if (!lm_msg_terminal(status) || inline_content || m->role != STORE_ROLE_ASSISTANT) {
		if (inline_content) {
			/* Re-put the content too: copy it out first, the put may
			 * move the page under it. */
			size_t len = at.v.mv_size - sizeof(*m);
			uint8_t *tmp = malloc(len);
			if (!tmp)
				return lm_fatal(s, ENOMEM);
			memcpy(tmp, (uint8_t *)at.v.mv_data + sizeof(*m), len);
			rc = lm_msg_put(s, t, sid, at.idx, m, tmp, len);
			free(tmp);
			LM_W(s, rc);
		} else {
			LM_W(s, lm_msg_put(s, t, sid, at.idx, m, NULL, 0));
		}
	} else {
		uint64_t total = 0;
		LM_W(s, lm_msg_tokens_walk(s, t, sid, mid, lm_msg_sum_cb, &total));
		m->content_len = total;
		m->ended_at = t_ns / 1000000000;
		uint8_t *dst;
		LM_W(s, lm_msg_reserve(s, t, sid, at.idx, m, total, &dst));
		struct lm_msg_fill f = { dst, total };
		LM_W(s, lm_msg_tokens_walk(s, t, sid, mid, lm_msg_fill_cb, &f));
	}
	if (lm_msg_terminal(status)) {
		uint8_t kb[LM_KEY_MAX];
		MDB_val k = lm_msg_open_key(kb, sid, mid);
		rc = mdb_del(t, s->dbi[LM_META], &k, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return lm_fatal(s, rc);
	}
	return 0;
}

int lm_msg_w_status(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	return lm_msg_set_status(s, t, op->u.msg.sid, op->u.msg.mid, op->status,
				 op->flag ? &op->u.msg.usage : NULL, "", op->t_ns);
}

int lm_msg_repair(struct lm_store *s, MDB_txn *t, uint32_t *fixed)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(t, s->dbi[LM_META], &cur);
	if (rc)
		return rc;
	MDB_val prefix = { sizeof(lm_msg_open_prefix) - 1, (void *)lm_msg_open_prefix };
	MDB_val k = prefix, v;
	int64_t now = lm_unix_ns();
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) == 0 && lm_has_prefix(&k, &prefix)) {
		char sid[CHAN_ID_LEN] = { 0 }, mid[CHAN_ID_LEN] = { 0 }, key[STORE_KEYID_MAX] = { 0 };
		if (v.mv_size > 4 && v.mv_size - 4 < STORE_KEYID_MAX)
			memcpy(key, (const uint8_t *)v.mv_data + 4, v.mv_size - 4);
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
		struct lm_msg_at at;
		rc = lm_msg_locate(s, t, sid, mid, &at);
		if (rc == 0 && !lm_msg_terminal(at.m.status)) {
			s->wrc = 0;
			rc = lm_msg_set_status(s, t, sid, mid, STORE_MSG_INTERRUPTED, NULL, key, now);
			if (rc == LM_FATAL) {
				rc = s->wrc;
				break;
			}
			rc = lm_conv_event_msg(s, t, now, sid, mid, STORE_MSG_INTERRUPTED);
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

/* ---- loop side: queueing writes ---------------------------------------- */

int lm_msg_add(struct store *st, const char *sid, const char *user_mid, const char *content, size_t len,
	       const char *asst_mid, uint32_t hint_tokens, const char *key_id, store_done_fn done, void *arg)
{
	/* LMDB grows pages as needed: nothing to reserve for the answer. */
	(void)hint_tokens;
	if (!lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(user_mid, CHAN_ID_LEN) ||
	    !lm_str_ok(asst_mid, CHAN_ID_LEN) || len > UINT32_MAX)
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_MESSAGE_ADD, .done = done, .arg = arg };
	lm_strcpy(op.u.add.sid, CHAN_ID_LEN, sid);
	lm_strcpy(op.u.add.umid, CHAN_ID_LEN, user_mid);
	lm_strcpy(op.u.add.amid, CHAN_ID_LEN, asst_mid);
	lm_strcpy(op.u.add.key_id, STORE_KEYID_MAX, key_id ? key_id : "");
	return lm_enqueue(LM_S(st), &op, LM_USIZE(add), content, len);
}

int lm_msg_tokens_append(struct store *st, const char *sid, const char *mid, uint32_t first_seq,
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

int lm_msg_status(struct store *st, const char *sid, const char *mid, enum store_msg_status status,
		  const struct store_usage *usage)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(mid, CHAN_ID_LEN) ||
	    (unsigned)status > STORE_MSG_INTERRUPTED)
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_STATUS, .status = (uint8_t)status, .flag = usage != NULL };
	lm_strcpy(op.u.msg.sid, CHAN_ID_LEN, sid);
	lm_strcpy(op.u.msg.mid, CHAN_ID_LEN, mid);
	if (usage)
		op.u.msg.usage = *usage;
	return lm_enqueue(LM_S(st), &op, LM_USIZE(msg), NULL, 0);
}

/* ---- loop side: reads -------------------------------------------------- */

uint32_t lm_msg_count(struct store *st, const char *sid)
{
	if (!lm_str_ok(sid, CHAN_ID_LEN))
		return 0;
	MDB_txn *t = lm_rtxn(LM_S(st));
	struct lm_conv_rec c;
	if (!t || lm_conv_load(LM_S(st), t, sid, &c))
		return 0;
	return c.nmsg;
}

int lm_msg_get(struct store *st, const char *sid, uint32_t idx, struct store_message *out)
{
	struct lm_store *s = LM_S(st);
	if (!lm_str_ok(sid, CHAN_ID_LEN))
		return -ENOENT;
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	struct lm_msg_at at;
	int rc = lm_msg_load(s, t, sid, idx, &at);
	if (rc)
		return lm_rerr(rc);
	const struct lm_msg_rec *m = &at.m;
	memset(out, 0, sizeof(*out));
	lm_strcpy(out->id, sizeof(out->id), m->id);
	out->role = m->role;
	out->status = m->status;
	out->created_at = m->created_at;
	out->ntokens = m->ntokens;
	out->usage = (struct store_usage){ .prompt_tokens = m->prompt_tokens,
					   .completion_tokens = m->completion_tokens,
					   .cost_usd = m->cost_usd };
	if (at.v.mv_size > sizeof(*m) || m->content_len == 0) {
		out->content = (const char *)at.v.mv_data + sizeof(*m);
		out->content_len = at.v.mv_size - sizeof(*m);
		return 0;
	}
	/* A running answer: its content so far is its token log. */
	uint8_t *buf = lm_arena_alloc(s, m->content_len);
	if (!buf)
		return -ENOMEM;
	struct lm_msg_fill f = { buf, m->content_len };
	rc = lm_msg_tokens_walk(s, t, sid, m->id, lm_msg_fill_cb, &f);
	if (rc)
		return lm_rerr(rc);
	out->content = (const char *)buf;
	out->content_len = m->content_len - f.left;
	return 0;
}

int64_t lm_msg_find(struct store *st, const char *sid, const char *mid)
{
	struct lm_store *s = LM_S(st);
	if (!lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(mid, CHAN_ID_LEN))
		return -1;
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -1;
	struct lm_msg_at at;
	return lm_msg_locate(s, t, sid, mid, &at) ? -1 : (int64_t)at.idx;
}

int lm_msg_token_get(struct store *st, const char *sid, const char *mid, uint32_t seq, struct store_token *out)
{
	struct lm_store *s = LM_S(st);
	if (seq == 0 || !lm_str_ok(sid, CHAN_ID_LEN) || !lm_str_ok(mid, CHAN_ID_LEN))
		return -ENOENT;
	MDB_txn *t = lm_rtxn(s);
	if (!t)
		return -EIO;
	uint8_t kb[LM_KEY_MAX];
	MDB_val k = lm_msg_tok_key(kb, sid, mid, seq), v;
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

/* Schema 2 -> 3: the answers that ended before the usage log existed enter
 * it, at their end time, with the key unknown (""). */
int lm_msg_usage_backfill(struct lm_store *s, MDB_txn *t)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(t, s->dbi[LM_MSGS], &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct lm_msg_rec m;
		const char *nul = memchr(k.mv_data, 0, k.mv_size);
		if (v.mv_size < sizeof(m) || !nul || (size_t)(nul - (const char *)k.mv_data) >= CHAN_ID_LEN) {
			rc = MDB_CORRUPTED;
			break;
		}
		memcpy(&m, v.mv_data, sizeof(m));
		if (m.role != STORE_ROLE_ASSISTANT || !lm_msg_terminal(m.status))
			continue;
		char sid[CHAN_ID_LEN] = { 0 };
		memcpy(sid, k.mv_data, (size_t)(nul - (const char *)k.mv_data));
		rc = lm_msg_log_usage(s, t, sid, &m, "", (m.ended_at ? m.ended_at : m.created_at) * 1000000000);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}
