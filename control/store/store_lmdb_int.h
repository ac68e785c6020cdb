/*
 * Inside the LMDB store; nothing outside control/store/ includes this.
 *
 *   store_lmdb.c         environment, writer thread and group commit,
 *                        completions, reads' snapshot, backup, stats, open
 *   store_lmdb_conv.c    conversations, conversations_by_user, events
 *   store_lmdb_msg.c     messages, tokens, the open-answer markers in meta
 *   store_lmdb_ident.c   users, api_keys, auth (login sessions)
 *   store_lmdb_schema.c  meta's schema_version and the migrations
 *
 * Prefixes: a function of store_lmdb_<family>.c is lm_<family>_* (lm_conv_,
 * lm_msg_, lm_ident_, lm_schema_); plain lm_* is store_lmdb.c or a helper of
 * this header (keys, fixed fields, the writer's error paths), which every
 * family shares. Families meet only through what this header declares.
 */
#ifndef CONTROL_STORE_LMDB_INT_H
#define CONTROL_STORE_LMDB_INT_H

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sluice/common.h"
#include "store/store.h"

#define LM_SCHEMA_VERSION 4u
#define LM_CHUNK (64u * 1024u)
#define LM_ALIGN8(n) (((n) + 7u) & ~(size_t)7u)
/* A writer step's answer when the transaction itself broke (s->wrc says why). */
#define LM_FATAL INT32_MIN
/* Room for any key built here: ids, names, separators and big-endian numbers. */
#define LM_KEY_MAX 160

enum lm_db {
	LM_USERS,
	LM_APIKEYS,
	LM_AUTH,
	LM_CONVS,
	LM_CONVS_BY_USER,
	LM_MSGS,
	LM_TOKENS,
	LM_EVENTS,
	LM_META,
	LM_USAGE,  /* schema 3 */
	LM_LIMITS, /* schema 4 */
	LM_NDB
};

enum lm_op_type {
	LM_OP_SESSION_CREATE,
	LM_OP_SESSION_UPDATE,
	LM_OP_SESSION_DELETE,
	LM_OP_MESSAGE_ADD,
	LM_OP_TOKENS,
	LM_OP_STATUS,
	LM_OP_USER_PUT,
	LM_OP_USER_DEL,
	LM_OP_APIKEY_PUT,
	LM_OP_APIKEY_DEL,
	LM_OP_AUTH_PUT,
	LM_OP_AUTH_DEL,
	LM_OP_EVENT,
	LM_OP_LIMITS_PUT,
};

/* One token inside a TOKENS op; the bytes follow all headers. */
struct lm_tokhdr {
	uint32_t len;
	uint32_t pad;
	uint64_t offset_ns;
};

#define LM_KIND_MAX 32

/*
 * A queued write: a header, the op-specific part (u) and `n` payload bytes
 * at hsize. Ops are 8-aligned and packed back to back in a queue buffer.
 */
struct lm_op {
	uint32_t size;  /* whole op, 8-aligned */
	uint16_t hsize; /* offset of the payload */
	uint16_t type;  /* enum lm_op_type */
	int32_t result; /* set by the writer */
	uint32_t n;     /* payload: content bytes, tokens, detail bytes */
	uint8_t flag;   /* USER_PUT: create only; STATUS: usage given */
	uint8_t status; /* STATUS: enum store_msg_status */
	store_done_fn done;
	void *arg;
	int64_t t_ns;   /* unix time when queued */
	union {
		struct store_session sess;
		struct {
			char sid[CHAN_ID_LEN];
			char umid[CHAN_ID_LEN];
			char amid[CHAN_ID_LEN];
			char key_id[STORE_KEYID_MAX];
		} add;
		struct {
			char sid[CHAN_ID_LEN];
			char mid[CHAN_ID_LEN];
			struct store_usage usage;
			uint32_t first_seq; /* TOKENS */
		} msg;
		struct store_user user;
		struct store_apikey key;
		struct store_auth auth;
		struct store_limits lim;
		char name[STORE_USER_MAX];
		uint8_t hash[STORE_HASH_LEN];
		struct {
			char sid[CHAN_ID_LEN];
			char kind[LM_KIND_MAX];
		} ev;
	} u;
};

/* The size of the op-specific part `m` of an op. */
#define LM_USIZE(m) sizeof(((struct lm_op *)0)->u.m)

static inline uint8_t *lm_op_payload(struct lm_op *op)
{
	return (uint8_t *)op + op->hsize;
}

struct lm_buf {
	uint8_t *p;
	size_t len, cap;
};

struct lm_chunk {
	struct lm_chunk *next;
	size_t cap, used;
	_Alignas(8) uint8_t data[];
};

struct lm_done {
	store_done_fn fn;
	void *arg;
	int err;
};

struct lm_wstats {
	uint64_t commits, commit_batches, writes, write_errors, last_commit_ns;
	uint64_t reserve_refusals; /* new data refused because only the reserve was left */
};

struct lm_store {
	struct store base; /* first: struct store * converts to this */
	MDB_env *env;
	MDB_dbi dbi[LM_NDB];
	const struct sluice_conf *conf;
	char dir[CONF_PATH_MAX];
	uint32_t commit_ms;
	/* Bytes of the map that only writes belonging to what was already
	 * accepted (tokens, status) may use: new data is refused before. */
	uint64_t reserve;
	struct cp_loop *loop;
	int efd;

	/* Loop thread only. */
	MDB_txn *rtxn;
	bool rlive;
	struct lm_chunk *arena;

	/* Shared, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* wakes the writer */
	pthread_cond_t cv_done; /* a batch finished (flush waits) */
	bool sync_init;
	struct lm_buf q;        /* the loop fills it */
	uint32_t q_ops;
	bool q_acked, q_unacked;
	uint64_t q_deadline_ns; /* CLOCK_MONOTONIC: commit batched writes by then */
	uint64_t flush_req, flush_done;
	bool stop;
	struct lm_done *done;   /* completions waiting for the loop */
	uint32_t ndone, done_cap;
	uint32_t acked_inflight; /* callbacks promised: done_cap never falls below */
	struct lm_wstats wstats;
	bool backup_running;

	/* Writer thread only. */
	pthread_t writer;
	bool writer_started;
	struct lm_buf w;
	int wrc;                /* the LMDB error behind LM_FATAL */
	uint64_t ev_next;       /* next event key */

	/* Backup (one at a time). */
	pthread_t backup_thread;
	bool backup_joinable;
	char backup_path[CONF_PATH_MAX];
	store_done_fn backup_done;
	void *backup_arg;
};

#define LM_S(st) ((struct lm_store *)(st))

/*
 * The records more than one family reads. Records are fixed C layouts in
 * host byte order (the appliance is x86-64; schema_version guards a change);
 * numbers inside keys are big-endian so LMDB's byte order is their numeric
 * order. Values are only 2-byte aligned in the map, so records are memcpy'd
 * out, never cast.
 */
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

struct lm_user_rec {
	uint8_t role;
	uint8_t pad[7];
	int64_t created_at;
	char pwhash[STORE_PWHASH_MAX];
	uint64_t uid; /* schema 2 */
};

/* ---- store_lmdb.c ------------------------------------------------------ */

int lm_errno(int rc);
int64_t lm_unix_ns(void);
void *lm_arena_alloc(struct lm_store *s, size_t n);
MDB_txn *lm_rtxn(struct lm_store *s);
struct lm_op *lm_enqueue_begin(struct lm_store *s, uint16_t type, size_t head, size_t payload,
			       store_done_fn done, void *arg);
void lm_enqueue_end(struct lm_store *s, struct lm_op *op);
/* Queues the write described by op (type, done, arg, flag, status and the
 * first usize bytes of u; the rest is the queue's), followed by the n bytes
 * at payload: 0, or -ENOMEM. An op whose payload is gathered from pieces
 * (tokens) uses begin and end instead. */
int lm_enqueue(struct lm_store *s, const struct lm_op *op, size_t usize, const void *payload, size_t n);

/* ---- helpers every family shares --------------------------------------- */

/* The writer's way out of a broken transaction: remembers why. */
static inline int lm_fatal(struct lm_store *s, int rc)
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

/* The errno of a failed read. */
static inline int lm_rerr(int rc)
{
	return rc == MDB_NOTFOUND ? -ENOENT : lm_errno(rc);
}

/* The writer's answer to a failed lookup of what an op names: a missing
 * record refuses the op (-ENOENT, the batch goes on); anything else broke
 * the transaction. */
static inline int lm_werr(struct lm_store *s, int rc)
{
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	return rc ? lm_fatal(s, rc) : 0;
}

/* Copies the record of exactly `size` bytes stored under k in db;
 * MDB_CORRUPTED for a record of another size. */
static inline int lm_get_fixed(struct lm_store *s, MDB_txn *t, enum lm_db db, MDB_val k, void *rec,
			       size_t size)
{
	MDB_val v;
	int rc = mdb_get(t, s->dbi[db], &k, &v);
	if (rc)
		return rc;
	if (v.mv_size != size)
		return MDB_CORRUPTED;
	memcpy(rec, v.mv_data, size);
	return 0;
}

static inline bool lm_str_ok(const char *v, size_t cap)
{
	size_t n = strnlen(v, cap);
	return n > 0 && n < cap;
}

/* Copies a NUL-terminated string into a fixed field, always terminating. */
static inline void lm_strcpy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	memset(dst + n, 0, cap - n);
}

static inline uint8_t *lm_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static inline uint8_t *lm_put_be64(uint8_t *p, uint64_t v)
{
	p = lm_put_be32(p, (uint32_t)(v >> 32));
	return lm_put_be32(p, (uint32_t)v);
}

static inline uint64_t lm_get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline uint8_t *lm_put_str(uint8_t *p, const char *str, size_t cap)
{
	size_t n = strnlen(str, cap);
	memcpy(p, str, n);
	return p + n;
}

static inline MDB_val lm_val(uint8_t *b, uint8_t *end)
{
	return (MDB_val){ (size_t)(end - b), b };
}

static inline MDB_val lm_str_key(const char *str, size_t cap)
{
	return (MDB_val){ strnlen(str, cap), (void *)str };
}

static inline bool lm_has_prefix(const MDB_val *k, const MDB_val *prefix)
{
	return k->mv_size >= prefix->mv_size && memcmp(k->mv_data, prefix->mv_data, prefix->mv_size) == 0;
}

/*
 * The lm_*_w_* functions below are the writer's steps, one per op type (the
 * table in store_lmdb.c), run inside the group-commit transaction: they
 * answer 0, a negative errno (nothing of this op was written), or LM_FATAL
 * (t is broken; s->wrc says why). The other lm_<family>_* functions without
 * a comment are the store_ops entries of store.h.
 */

/* ---- store_lmdb_conv.c ------------------------------------------------- */

/* Conversation sid's record, in either thread's transaction: 0 or an MDB error
 * (MDB_NOTFOUND, MDB_CORRUPTED for a record of another size). */
int lm_conv_load(struct lm_store *s, MDB_txn *t, const char *sid, struct lm_conv_rec *out);
/* Writes c and moves its listing entry from old (NULL: none). */
int lm_conv_store(struct lm_store *s, MDB_txn *t, const char *sid, const struct lm_conv_rec *old,
		  const struct lm_conv_rec *c);
/* Records a message state change in the chat layer's shape (kind "message"). */
int lm_conv_event_msg(struct lm_store *s, MDB_txn *t, int64_t t_ns, const char *sid, const char *mid,
		      uint8_t status);
/* Finds the next event key (open). */
int lm_conv_events_init(struct lm_store *s, MDB_txn *t);
int lm_conv_w_create(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_conv_w_update(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_conv_w_delete(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_conv_w_event(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_conv_create(struct store *st, const struct store_session *ss, store_done_fn done, void *arg);
int lm_conv_get(struct store *st, const char *sid, struct store_session *out);
int lm_conv_list(struct store *st, const struct store_list_query *q,
		 void (*each)(void *arg, const struct store_session *s), void *arg, char *next_cursor,
		 size_t cursor_cap);
int lm_conv_update(struct store *st, const struct store_session *ss, store_done_fn done, void *arg);
int lm_conv_delete(struct store *st, const char *sid, store_done_fn done, void *arg);
int lm_conv_event_add(struct store *st, const char *sid, const char *kind, const char *detail);

/* ---- store_lmdb_msg.c -------------------------------------------------- */

/* Deletes a conversation's messages, tokens and open-answer markers. */
int lm_msg_purge(struct lm_store *s, MDB_txn *t, const char *sid);
/* Marks the answers a killed run left QUEUED or STREAMING as INTERRUPTED (open). */
int lm_msg_repair(struct lm_store *s, MDB_txn *t, uint32_t *fixed);
int lm_msg_w_add(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_msg_w_tokens(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_msg_w_status(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_msg_add(struct store *st, const char *sid, const char *user_mid, const char *content, size_t len,
	       const char *asst_mid, uint32_t hint_tokens, const char *key_id, store_done_fn done, void *arg);
uint32_t lm_msg_count(struct store *st, const char *sid);
int lm_msg_get(struct store *st, const char *sid, uint32_t idx, struct store_message *out);
int64_t lm_msg_find(struct store *st, const char *sid, const char *mid);
int lm_msg_tokens_append(struct store *st, const char *sid, const char *mid, uint32_t first_seq,
			 const struct store_token *t, uint32_t n);
int lm_msg_token_get(struct store *st, const char *sid, const char *mid, uint32_t seq,
		     struct store_token *out);
int lm_msg_status(struct store *st, const char *sid, const char *mid, enum store_msg_status status,
		  const struct store_usage *usage);
/* The schema 2 -> 3 migration: every ended answer into the usage log. */
int lm_msg_usage_backfill(struct lm_store *s, MDB_txn *t);

/* ---- store_lmdb_usage.c ------------------------------------------------ */

/* Writes u into the usage log (keyed by its end time and message id). */
int lm_usage_put(struct lm_store *s, MDB_txn *t, const struct store_usage_rec *u);
int lm_usage_list(struct store *st, const struct store_usage_query *q,
		  void (*each)(void *arg, const struct store_usage_rec *u), void *arg);

/* ---- store_lmdb_ident.c ------------------------------------------------ */

/* A fresh user identity: 64 random bits, never 0 (0 is "nobody"). */
int lm_ident_new_uid(uint64_t *uid);
int lm_ident_w_user_put(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_ident_w_user_del(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_ident_w_apikey_put(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_ident_w_apikey_del(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_ident_w_auth_put(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_ident_w_auth_del(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_ident_user_put(struct store *st, const struct store_user *u, int create_only, store_done_fn done,
		      void *arg);
int lm_ident_user_get(struct store *st, const char *name, struct store_user *out);
int lm_ident_user_del(struct store *st, const char *name, store_done_fn done, void *arg);
int lm_ident_user_list(struct store *st, void (*each)(void *arg, const struct store_user *u), void *arg);
int lm_ident_apikey_put(struct store *st, const struct store_apikey *k, store_done_fn done, void *arg);
int lm_ident_apikey_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_apikey *out);
int lm_ident_apikey_del(struct store *st, const char *id, store_done_fn done, void *arg);
int lm_ident_apikey_list(struct store *st, const char *owner,
			 void (*each)(void *arg, const struct store_apikey *k), void *arg);
int lm_ident_auth_put(struct store *st, const struct store_auth *a, store_done_fn done, void *arg);
int lm_ident_auth_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_auth *out);
int lm_ident_auth_del(struct store *st, const uint8_t hash[STORE_HASH_LEN], store_done_fn done, void *arg);
int lm_ident_auth_list(struct store *st, const char *user,
		       void (*each)(void *arg, const struct store_auth *a), void *arg);

/* ---- store_lmdb_limits.c ----------------------------------------------- */

int lm_limits_w_put(struct lm_store *s, MDB_txn *t, struct lm_op *op);
int lm_limits_put(struct store *st, const struct store_limits *l, store_done_fn done, void *arg);
int lm_limits_get(struct store *st, const char *key, struct store_limits *out);
int lm_limits_list(struct store *st, void (*each)(void *arg, const struct store_limits *l), void *arg);

/* ---- store_lmdb_schema.c ----------------------------------------------- */

/*
 * Inside the open transaction: reads meta/schema_version, refuses a newer
 * store or data without a version, runs the migrations from an older one and
 * writes the version. -1 with a message in err.
 */
int lm_schema_open(struct lm_store *s, MDB_txn *t, bool was_empty, char *err, size_t errlen);

#endif
