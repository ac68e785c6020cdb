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

/* A record being migrated, in any of the layouts a migration grows. */
union lm_schema_rec {
	struct lm_user_rec user;
	struct lm_conv_rec conv;
};

/*
 * Grows every record of db from old_size bytes to new_size: the old bytes
 * are kept, the new tail starts zeroed and fill sets it. A record of another
 * size stops the migration (MDB_CORRUPTED), as does an error from fill.
 */
static int lm_schema_extend(struct lm_store *s, MDB_txn *t, enum lm_db db, size_t old_size, size_t new_size,
			    int (*fill)(struct lm_store *s, MDB_txn *t, union lm_schema_rec *r))
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(t, s->dbi[db], &cur);
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		union lm_schema_rec r;
		if (v.mv_size != old_size || new_size > sizeof(r)) {
			rc = MDB_CORRUPTED;
			break;
		}
		memset(&r, 0, sizeof(r));
		memcpy(&r, v.mv_data, old_size);
		rc = fill(s, t, &r);
		if (!rc)
			rc = lm_schema_migrate_put(s, t, db, cur, &k, &(MDB_val){ new_size, &r });
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int lm_schema_v1_uid(struct lm_store *s, MDB_txn *t, union lm_schema_rec *r)
{
	(void)s;
	(void)t;
	return lm_ident_new_uid(&r->user.uid) < 0 ? EIO : 0;
}

/* Run after the users got their uids. A conversation older than its owner's
 * record was left by an earlier user of that name: it keeps uid 0, which
 * nobody has. */
static int lm_schema_v1_owner(struct lm_store *s, MDB_txn *t, union lm_schema_rec *r)
{
	struct lm_user_rec u;
	int rc = lm_get_fixed(s, t, LM_USERS, lm_str_key(r->conv.user, STORE_USER_MAX), &u, sizeof(u));
	if (rc == 0 && r->conv.created_at >= u.created_at)
		r->conv.owner_uid = u.uid;
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* 1 -> 2: gives every user a random uid and every conversation its owner's. */
static int lm_schema_v1_identities(struct lm_store *s, MDB_txn *t)
{
	int rc = lm_schema_extend(s, t, LM_USERS, LM_USER_V1_SIZE, sizeof(struct lm_user_rec), lm_schema_v1_uid);
	if (rc)
		return rc;
	return lm_schema_extend(s, t, LM_CONVS, LM_CONV_V1_SIZE, sizeof(struct lm_conv_rec), lm_schema_v1_owner);
}

/* 2 -> 3: the usage log (created empty when the store opened) gets the
 * answers that ended before it existed. */
static int lm_schema_v2_usage(struct lm_store *s, MDB_txn *t)
{
	return lm_msg_usage_backfill(s, t);
}

/* 3 -> 4: the limits database (operators' overrides of quotas and rates).
 * Opening created it empty and no record changes layout, so a store of
 * schema 3 only has to be told it is 4 now; a store of schema 4 opened by
 * an older build is refused by that build's version check. */
static int lm_schema_v3_limits(struct lm_store *s, MDB_txn *t)
{
	MDB_stat ms;
	int rc = mdb_stat(t, s->dbi[LM_LIMITS], &ms);
	if (rc)
		return rc;
	return ms.ms_entries == 0 ? 0 : MDB_CORRUPTED;
}

/* Entry N-1 turns schema N into N+1. */
typedef int (*lm_schema_migrate_fn)(struct lm_store *s, MDB_txn *t);
static const lm_schema_migrate_fn lm_schema_migrations[LM_SCHEMA_VERSION] = {
	lm_schema_v1_identities, lm_schema_v2_usage, lm_schema_v3_limits, NULL
};

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
