/*
 * The LMDB store's identities: users (by name), API keys and auth (login)
 * sessions (both by the keyed hash of their secret). Deleting a user takes
 * its keys and logins along; its conversations stay (docs/storage.md "User
 * identity"). Writer steps run inside the group-commit transaction; reads
 * run on the loop thread in its read snapshot.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/random.h>

#include "store/store_lmdb_int.h"

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

int lm_ident_new_uid(uint64_t *uid)
{
	do {
		if (getrandom(uid, sizeof(*uid), 0) != (ssize_t)sizeof(*uid))
			return -1;
	} while (*uid == 0);
	return 0;
}

/* ---- writer ------------------------------------------------------------ */

int lm_ident_w_user_put(struct lm_store *s, MDB_txn *t, struct lm_op *op)
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
	} else if (lm_ident_new_uid(&r.uid) < 0) {
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
static int lm_ident_del_owned(struct lm_store *s, MDB_txn *t, enum lm_db db, size_t owner_off,
			      const char *name)
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

int lm_ident_w_user_del(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	MDB_val k = lm_str_key(op->u.name, STORE_USER_MAX);
	int rc = lm_werr(s, mdb_del(t, s->dbi[LM_USERS], &k, NULL));
	if (rc)
		return rc;
	/* The user's logins and keys go with it; conversations stay. */
	LM_W(s, lm_ident_del_owned(s, t, LM_AUTH, offsetof(struct lm_auth_rec, user), op->u.name));
	LM_W(s, lm_ident_del_owned(s, t, LM_APIKEYS, offsetof(struct lm_key_rec, owner), op->u.name));
	return 0;
}

static int lm_ident_put_new(struct lm_store *s, MDB_txn *t, enum lm_db db, MDB_val k, MDB_val v)
{
	int rc = mdb_put(t, s->dbi[db], &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST)
		return -EEXIST;
	return rc ? lm_fatal(s, rc) : 0;
}

int lm_ident_w_apikey_put(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_apikey *kk = &op->u.key;
	struct lm_key_rec r;
	memset(&r, 0, sizeof(r));
	lm_strcpy(r.id, sizeof(r.id), kk->id);
	lm_strcpy(r.owner, sizeof(r.owner), kk->owner);
	lm_strcpy(r.label, sizeof(r.label), kk->label);
	r.created_at = kk->created_at ? kk->created_at : op->t_ns / 1000000000;
	return lm_ident_put_new(s, t, LM_APIKEYS, (MDB_val){ STORE_HASH_LEN, (void *)kk->hash },
				(MDB_val){ sizeof(r), &r });
}

int lm_ident_w_apikey_del(struct lm_store *s, MDB_txn *t, struct lm_op *op)
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

int lm_ident_w_auth_put(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	const struct store_auth *a = &op->u.auth;
	struct lm_auth_rec r;
	memset(&r, 0, sizeof(r));
	lm_strcpy(r.user, sizeof(r.user), a->user);
	lm_strcpy(r.csrf, sizeof(r.csrf), a->csrf);
	r.created_at = a->created_at;
	r.expires_at = a->expires_at;
	return lm_ident_put_new(s, t, LM_AUTH, (MDB_val){ STORE_HASH_LEN, (void *)a->hash },
				(MDB_val){ sizeof(r), &r });
}

int lm_ident_w_auth_del(struct lm_store *s, MDB_txn *t, struct lm_op *op)
{
	MDB_val k = { STORE_HASH_LEN, op->u.hash };
	return lm_werr(s, mdb_del(t, s->dbi[LM_AUTH], &k, NULL));
}

/* ---- loop side: queueing writes ---------------------------------------- */

int lm_ident_user_put(struct store *st, const struct store_user *u, int create_only, store_done_fn done,
		      void *arg)
{
	if (!lm_str_ok(u->name, STORE_USER_MAX) || !lm_str_ok(u->pwhash, STORE_PWHASH_MAX) ||
	    u->role > STORE_USER_ROLE_ADMIN)
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_USER_PUT, .done = done, .arg = arg, .flag = create_only != 0,
			    .u.user = *u };
	return lm_enqueue(LM_S(st), &op, LM_USIZE(user), NULL, 0);
}

/* Queues an op whose whole argument is one short name (user, key id). */
static int lm_ident_name_op(struct store *st, uint16_t type, const char *name, size_t cap, store_done_fn done,
			    void *arg)
{
	if (!lm_str_ok(name, cap))
		return -EINVAL;
	struct lm_op op = { .type = type, .done = done, .arg = arg };
	lm_strcpy(op.u.name, sizeof(op.u.name), name);
	return lm_enqueue(LM_S(st), &op, LM_USIZE(name), NULL, 0);
}

int lm_ident_user_del(struct store *st, const char *name, store_done_fn done, void *arg)
{
	return lm_ident_name_op(st, LM_OP_USER_DEL, name, STORE_USER_MAX, done, arg);
}

int lm_ident_apikey_put(struct store *st, const struct store_apikey *k, store_done_fn done, void *arg)
{
	if (!lm_str_ok(k->id, STORE_KEYID_MAX) || !lm_str_ok(k->owner, STORE_USER_MAX) ||
	    strnlen(k->label, sizeof(k->label)) == sizeof(k->label))
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_APIKEY_PUT, .done = done, .arg = arg, .u.key = *k };
	return lm_enqueue(LM_S(st), &op, LM_USIZE(key), NULL, 0);
}

int lm_ident_apikey_del(struct store *st, const char *id, store_done_fn done, void *arg)
{
	return lm_ident_name_op(st, LM_OP_APIKEY_DEL, id, STORE_KEYID_MAX, done, arg);
}

int lm_ident_auth_put(struct store *st, const struct store_auth *a, store_done_fn done, void *arg)
{
	if (!lm_str_ok(a->user, STORE_USER_MAX) || strnlen(a->csrf, STORE_CSRF_MAX) == STORE_CSRF_MAX)
		return -EINVAL;
	struct lm_op op = { .type = LM_OP_AUTH_PUT, .done = done, .arg = arg, .u.auth = *a };
	return lm_enqueue(LM_S(st), &op, LM_USIZE(auth), NULL, 0);
}

int lm_ident_auth_del(struct store *st, const uint8_t hash[STORE_HASH_LEN], store_done_fn done, void *arg)
{
	struct lm_op op = { .type = LM_OP_AUTH_DEL, .done = done, .arg = arg };
	memcpy(op.u.hash, hash, STORE_HASH_LEN);
	return lm_enqueue(LM_S(st), &op, LM_USIZE(hash), NULL, 0);
}

/* ---- loop side: reads -------------------------------------------------- */

/* lm_get_fixed from the loop's snapshot, as an errno: -EIO for a record of
 * another size. */
static int lm_ident_read_fixed(struct lm_store *s, enum lm_db db, MDB_val k, void *rec, size_t size)
{
	MDB_txn *t = lm_rtxn(s);
	return t ? lm_rerr(lm_get_fixed(s, t, db, k, rec, size)) : -EIO;
}

/* Fills a store_user from its key (the name, not NUL-terminated) and record. */
static void lm_ident_user_out(const void *name, size_t name_len, const struct lm_user_rec *r,
			      struct store_user *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->name, name, name_len);
	out->role = r->role;
	out->created_at = r->created_at;
	out->uid = r->uid;
	lm_strcpy(out->pwhash, sizeof(out->pwhash), r->pwhash);
}

int lm_ident_user_get(struct store *st, const char *name, struct store_user *out)
{
	struct lm_store *s = LM_S(st);
	if (!lm_str_ok(name, STORE_USER_MAX))
		return -ENOENT;
	struct lm_user_rec r;
	int rc = lm_ident_read_fixed(s, LM_USERS, lm_str_key(name, STORE_USER_MAX), &r, sizeof(r));
	if (rc)
		return rc;
	lm_ident_user_out(name, strlen(name), &r, out);
	return 0;
}

/*
 * Calls fn for every (key, value) of database db in a read transaction; fn
 * answers 0 to go on or an MDB error (MDB_CORRUPTED for a record of the wrong
 * shape) to stop. Returns 0 or a negative errno.
 */
static int lm_ident_walk(struct lm_store *s, int db, int (*fn)(void *ctx, const MDB_val *k, const MDB_val *v),
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

struct lm_ident_user_walk {
	void (*each)(void *arg, const struct store_user *u);
	void *arg;
};

static int lm_ident_user_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	const struct lm_ident_user_walk *w = ctx;
	struct lm_user_rec r;
	struct store_user u;
	if (v->mv_size != sizeof(r) || k->mv_size >= sizeof(u.name))
		return MDB_CORRUPTED;
	memcpy(&r, v->mv_data, sizeof(r));
	lm_ident_user_out(k->mv_data, k->mv_size, &r, &u);
	w->each(w->arg, &u);
	return 0;
}

int lm_ident_user_list(struct store *st, void (*each)(void *arg, const struct store_user *u), void *arg)
{
	struct lm_ident_user_walk w = { each, arg };
	return lm_ident_walk(LM_S(st), LM_USERS, lm_ident_user_step, &w);
}

static void lm_ident_key_out(const void *hash, const struct lm_key_rec *r, struct store_apikey *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->hash, hash, STORE_HASH_LEN);
	lm_strcpy(out->id, sizeof(out->id), r->id);
	lm_strcpy(out->owner, sizeof(out->owner), r->owner);
	lm_strcpy(out->label, sizeof(out->label), r->label);
	out->created_at = r->created_at;
}

int lm_ident_apikey_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_apikey *out)
{
	struct lm_key_rec r;
	MDB_val k = { STORE_HASH_LEN, (void *)hash };
	int rc = lm_ident_read_fixed(LM_S(st), LM_APIKEYS, k, &r, sizeof(r));
	if (rc)
		return rc;
	lm_ident_key_out(hash, &r, out);
	return 0;
}

struct lm_ident_key_walk {
	const char *owner;
	void (*each)(void *arg, const struct store_apikey *k);
	void *arg;
};

static int lm_ident_key_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	const struct lm_ident_key_walk *w = ctx;
	struct lm_key_rec r;
	if (v->mv_size != sizeof(r) || k->mv_size != STORE_HASH_LEN)
		return MDB_CORRUPTED;
	memcpy(&r, v->mv_data, sizeof(r));
	if (w->owner && strncmp(w->owner, r.owner, sizeof(r.owner)) != 0)
		return 0;
	struct store_apikey out;
	lm_ident_key_out(k->mv_data, &r, &out);
	w->each(w->arg, &out);
	return 0;
}

int lm_ident_apikey_list(struct store *st, const char *owner,
			 void (*each)(void *arg, const struct store_apikey *k), void *arg)
{
	struct lm_ident_key_walk w = { owner, each, arg };
	return lm_ident_walk(LM_S(st), LM_APIKEYS, lm_ident_key_step, &w);
}

static void lm_ident_auth_out(const void *hash, const struct lm_auth_rec *r, struct store_auth *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->hash, hash, STORE_HASH_LEN);
	lm_strcpy(out->user, sizeof(out->user), r->user);
	lm_strcpy(out->csrf, sizeof(out->csrf), r->csrf);
	out->created_at = r->created_at;
	out->expires_at = r->expires_at;
}

int lm_ident_auth_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_auth *out)
{
	struct lm_auth_rec r;
	MDB_val k = { STORE_HASH_LEN, (void *)hash };
	int rc = lm_ident_read_fixed(LM_S(st), LM_AUTH, k, &r, sizeof(r));
	if (rc)
		return rc;
	lm_ident_auth_out(hash, &r, out);
	explicit_bzero(&r, sizeof(r));
	return 0;
}

struct lm_ident_auth_walk {
	const char *user;
	void (*each)(void *arg, const struct store_auth *a);
	void *arg;
};

static int lm_ident_auth_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	const struct lm_ident_auth_walk *w = ctx;
	struct lm_auth_rec r;
	if (v->mv_size != sizeof(r) || k->mv_size != STORE_HASH_LEN)
		return MDB_CORRUPTED;
	memcpy(&r, v->mv_data, sizeof(r));
	if (strncmp(w->user, r.user, sizeof(r.user)) == 0) {
		struct store_auth out;
		lm_ident_auth_out(k->mv_data, &r, &out);
		w->each(w->arg, &out);
		explicit_bzero(&out, sizeof(out));
	}
	explicit_bzero(&r, sizeof(r));
	return 0;
}

/* Every login session is visited: they are keyed by token hash, and a
 * per-user index is not worth its writes for a check made once per login. */
int lm_ident_auth_list(struct store *st, const char *user,
		       void (*each)(void *arg, const struct store_auth *a), void *arg)
{
	struct lm_ident_auth_walk w = { user, each, arg };
	return lm_ident_walk(LM_S(st), LM_AUTH, lm_ident_auth_step, &w);
}
