/*
 * The LMDB store's schema: meta/schema_version (decimal text) and the
 * migrations that bring an older store up to LM_SCHEMA_VERSION inside the
 * open transaction, so a failure leaves the store as it was. A change of a
 * record layout adds a migration and bumps LM_SCHEMA_VERSION
 * (docs/storage.md "Opening, schema and migrations").
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "store/store_lmdb_int.h"

/* Schema 1 records are the schema 2 ones without their trailing identity. */
#define LM_USER_V1_SIZE offsetof(struct lm_user_rec, uid)
#define LM_CONV_V1_SIZE offsetof(struct lm_conv_rec, owner_uid)

/* Replaces the value of key *k (where cur stands) with a larger one, then
 * puts cur back on that key: a resized value is deleted and inserted again,
 * and where the cursor stood after that is not worth relying on. */
static int lm_schema_migrate_put(struct lm_store *s, MDB_txn *t, enum lm_db db, MDB_cursor *cur, MDB_val *k,
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

/* 1 -> 2: gives every user a random uid and every conversation its owner's
 * uid. A conversation older than its owner's record was left by an earlier
 * user of that name: it gets uid 0, which nobody has. */
static int lm_schema_v1_identities(struct lm_store *s, MDB_txn *t)
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
		if (lm_ident_new_uid(&r.uid) < 0) {
			rc = EIO;
			break;
		}
		rc = lm_schema_migrate_put(s, t, LM_USERS, cur, &k, &(MDB_val){ sizeof(r), &r });
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
		struct lm_user_rec u;
		rc = lm_get_fixed(s, t, LM_USERS, lm_str_key(c.user, STORE_USER_MAX), &u, sizeof(u));
		if (rc == 0 && c.created_at >= u.created_at)
			c.owner_uid = u.uid;
		else if (rc && rc != MDB_NOTFOUND)
			break;
		rc = lm_schema_migrate_put(s, t, LM_CONVS, cur, &k, &(MDB_val){ sizeof(c), &c });
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Entry N-1 turns schema N into N+1. */
typedef int (*lm_schema_migrate_fn)(struct lm_store *s, MDB_txn *t);
static const lm_schema_migrate_fn lm_schema_migrations[LM_SCHEMA_VERSION] = { lm_schema_v1_identities, NULL };

int lm_schema_open(struct lm_store *s, MDB_txn *t, bool was_empty, char *err, size_t errlen)
{
	static const char key[] = "schema_version";
	MDB_val k = { sizeof(key) - 1, (void *)key }, v;
	int rc = mdb_get(t, s->dbi[LM_META], &k, &v);
	uint32_t ver = 0;
	if (rc == 0) {
		char buf[16];
		if (v.mv_size == 0 || v.mv_size >= sizeof(buf)) {
			snprintf(err, errlen, "store %s: unreadable schema_version", s->dir);
			return -1;
		}
		memcpy(buf, v.mv_data, v.mv_size);
		buf[v.mv_size] = 0;
		char *end;
		unsigned long n = strtoul(buf, &end, 10);
		if (*end || n > UINT32_MAX) {
			snprintf(err, errlen, "store %s: unreadable schema_version \"%s\"", s->dir, buf);
			return -1;
		}
		ver = (uint32_t)n;
	} else if (rc != MDB_NOTFOUND) {
		snprintf(err, errlen, "store %s: %s", s->dir, mdb_strerror(rc));
		return -1;
	}
	if (ver == 0 && !was_empty) {
		snprintf(err, errlen,
			 "store %s holds data but no schema version: not a sluice store, or one written "
			 "before versioning; refusing to open it", s->dir);
		return -1;
	}
	if (ver > LM_SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "store %s has schema version %u, newer than the %u this build knows: refusing to "
			 "open it (run the sluice that wrote it, or restore a backup)",
			 s->dir, ver, LM_SCHEMA_VERSION);
		return -1;
	}
	if (ver == LM_SCHEMA_VERSION)
		return 0;
	for (uint32_t from = ver ? ver : LM_SCHEMA_VERSION; from < LM_SCHEMA_VERSION; from++) {
		rc = lm_schema_migrations[from - 1] ? lm_schema_migrations[from - 1](s, t) : MDB_INCOMPATIBLE;
		if (rc) {
			snprintf(err, errlen, "store %s: migration from schema %u failed: %s", s->dir, from,
				 mdb_strerror(rc));
			return -1;
		}
		LOG_INFO("store: migrated schema %u -> %u", from, from + 1);
	}
	char buf[16];
	int n = snprintf(buf, sizeof(buf), "%u", LM_SCHEMA_VERSION);
	v = (MDB_val){ (size_t)n, buf };
	rc = mdb_put(t, s->dbi[LM_META], &k, &v, 0);
	if (rc) {
		snprintf(err, errlen, "store %s: %s", s->dir, mdb_strerror(rc));
		return -1;
	}
	return 0;
}
