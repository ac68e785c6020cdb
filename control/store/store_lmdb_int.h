/*
 * Inside the LMDB store, shared by its two files: store_lmdb.c (environment,
 * writer thread, completions, reads' snapshot, backup) and store_lmdb_db.c
 * (keys, record layouts, the operations per database). Nothing outside
 * control/store/ includes this.
 */
#ifndef CONTROL_STORE_LMDB_INT_H
#define CONTROL_STORE_LMDB_INT_H

#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "sluice/common.h"
#include "store/store.h"

#define LM_SCHEMA_VERSION 2u
#define LM_CHUNK (64u * 1024u)
#define LM_ALIGN8(n) (((n) + 7u) & ~(size_t)7u)
/* lm_apply's answer when the transaction itself broke (s->wrc says why). */
#define LM_FATAL INT32_MIN

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
		char name[STORE_USER_MAX];
		uint8_t hash[STORE_HASH_LEN];
		struct {
			char sid[CHAN_ID_LEN];
			char kind[LM_KIND_MAX];
		} ev;
	} u;
};

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
};

struct lm_store {
	struct store base; /* first: struct store * converts to this */
	MDB_env *env;
	MDB_dbi dbi[LM_NDB];
	const struct sluice_conf *conf;
	char dir[CONF_PATH_MAX];
	uint32_t commit_ms;
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

/* store_lmdb.c */
int lm_errno(int rc);
int64_t lm_unix_ns(void);
void *lm_arena_alloc(struct lm_store *s, size_t n);
MDB_txn *lm_rtxn(struct lm_store *s);
struct lm_op *lm_enqueue_begin(struct lm_store *s, uint16_t type, size_t head, size_t payload,
			       store_done_fn done, void *arg);
void lm_enqueue_end(struct lm_store *s, struct lm_op *op);

/* store_lmdb_db.c: the writer side */
int lm_apply(struct lm_store *s, MDB_txn *t, struct lm_op *op);
const char *lm_op_name(uint16_t type);
int lm_repair(struct lm_store *s, MDB_txn *t, uint32_t *fixed);
int lm_events_init(struct lm_store *s, MDB_txn *t);
/* Schema 1 -> 2: user uids and conversation owner uids. */
int lm_migrate_identities(struct lm_store *s, MDB_txn *t);

/* store_lmdb_db.c: the store_ops entries */
int lm_session_create(struct store *st, const struct store_session *ss, store_done_fn done, void *arg);
int lm_session_get(struct store *st, const char *sid, struct store_session *out);
int lm_message_add(struct store *st, const char *sid, const char *user_mid, const char *content,
		   size_t len, const char *asst_mid, uint32_t hint_tokens, store_done_fn done, void *arg);
uint32_t lm_message_count(struct store *st, const char *sid);
int lm_message_get(struct store *st, const char *sid, uint32_t idx, struct store_message *out);
int64_t lm_message_find(struct store *st, const char *sid, const char *mid);
int lm_tokens_append(struct store *st, const char *sid, const char *mid, uint32_t first_seq,
		     const struct store_token *t, uint32_t n);
int lm_token_get(struct store *st, const char *sid, const char *mid, uint32_t seq,
		 struct store_token *out);
int lm_message_status(struct store *st, const char *sid, const char *mid,
		      enum store_msg_status status, const struct store_usage *usage);
int lm_session_list(struct store *st, const struct store_list_query *q,
		    void (*each)(void *arg, const struct store_session *s), void *arg, char *next_cursor,
		    size_t cursor_cap);
int lm_session_update(struct store *st, const struct store_session *ss, store_done_fn done, void *arg);
int lm_session_delete(struct store *st, const char *sid, store_done_fn done, void *arg);
int lm_user_put(struct store *st, const struct store_user *u, int create_only, store_done_fn done,
		void *arg);
int lm_user_get(struct store *st, const char *name, struct store_user *out);
int lm_user_del(struct store *st, const char *name, store_done_fn done, void *arg);
int lm_user_list(struct store *st, void (*each)(void *arg, const struct store_user *u), void *arg);
int lm_apikey_put(struct store *st, const struct store_apikey *k, store_done_fn done, void *arg);
int lm_apikey_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_apikey *out);
int lm_apikey_del(struct store *st, const char *id, store_done_fn done, void *arg);
int lm_apikey_list(struct store *st, const char *owner,
		   void (*each)(void *arg, const struct store_apikey *k), void *arg);
int lm_auth_put(struct store *st, const struct store_auth *a, store_done_fn done, void *arg);
int lm_auth_get(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_auth *out);
int lm_auth_del(struct store *st, const uint8_t hash[STORE_HASH_LEN], store_done_fn done, void *arg);
int lm_event_add(struct store *st, const char *sid, const char *kind, const char *detail);

#endif
