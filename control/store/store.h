/*
 * The store: users, API keys, auth sessions, conversations (sessions),
 * messages, the token log and the event trail. Callers go through this
 * interface only; the implementation is LMDB (store_lmdb.c, one writer thread,
 * group commit; see docs/storage.md).
 *
 * Writes that a client is told about (a created session, an accepted message,
 * user, key and auth changes) take a completion callback: the caller answers
 * the client from it. The store calls it from the control loop once the write
 * is committed (fsync included). Token appends, status changes and events
 * have no callback: they are committed in batches, at least every
 * conf.token_commit_ms.
 *
 * A write call that returns < 0 failed and will not call its callback; one
 * that returns 0 calls it exactly once, never before returning. Errors found
 * by the writer (a missing session, an existing name, a full map: -ENOSPC)
 * arrive through the callback.
 *
 * Reads see committed data only: they may lag writes that are still queued
 * by at most one commit. Reads fill caller structs; `content` and token
 * `text` pointers stay valid until the next write call or until control
 * returns to its loop, whichever comes first.
 */
#ifndef CONTROL_STORE_H
#define CONTROL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/chan_proto.h"
#include "sluice/conf.h"

#define STORE_AGENT_MAX 64
#define STORE_TITLE_MAX 256
#define STORE_USER_MAX 64      /* user names: [A-Za-z0-9_.-]{1,63} */
#define STORE_PWHASH_MAX 128   /* crypto_pwhash_STRBYTES */
#define STORE_HASH_LEN 32      /* keyed hash of a token or key (crypto_generichash) */
#define STORE_CSRF_MAX 48      /* base64 of 32 random bytes, NUL-terminated */
#define STORE_KEYID_MAX 24

struct store;

/* err is 0 on success, else a negative errno-style value. */
typedef void (*store_done_fn)(void *arg, int err);

struct store_session {
	char id[CHAN_ID_LEN];
	char user[STORE_USER_MAX];      /* owner; every conversation belongs to one user */
	uint64_t owner_uid;             /* the owner's store_user.uid: a re-created name is another user */
	char agent_id[STORE_AGENT_MAX];
	char model_id[CONF_NAME_MAX];
	char title[STORE_TITLE_MAX];
	int64_t created_at; /* unix seconds */
	int64_t updated_at; /* unix seconds: last message or patch */
	uint8_t archived;
};

enum store_user_role { STORE_USER_ROLE_USER = 0, STORE_USER_ROLE_ADMIN = 1 };

struct store_user {
	char name[STORE_USER_MAX];
	uint8_t role;                    /* enum store_user_role */
	char pwhash[STORE_PWHASH_MAX];   /* crypto_pwhash_str output */
	int64_t created_at;
	/* Immutable identity, random and never 0: assigned by the store when the
	 * user is created (the caller's value is ignored) and kept on updates. */
	uint64_t uid;
};

struct store_apikey {
	uint8_t hash[STORE_HASH_LEN];    /* keyed hash of the key; the key itself is never stored */
	char id[STORE_KEYID_MAX];        /* public id, e.g. "k_" + 16 hex */
	char owner[STORE_USER_MAX];
	char label[64];
	int64_t created_at;
};

struct store_auth {
	uint8_t hash[STORE_HASH_LEN];    /* keyed hash of the session token */
	char user[STORE_USER_MAX];
	char csrf[STORE_CSRF_MAX];
	int64_t created_at;
	int64_t expires_at;              /* unix seconds */
};

/* Conversation listing: newest updated first; cursor is opaque text the
 * previous page returned (empty for the first page). */
struct store_list_query {
	const char *user;
	uint64_t owner_uid;   /* only sessions of this identity of `user`; 0: any (operators) */
	const char *cursor;   /* NUL-terminated, may be "" */
	uint32_t limit;       /* 1..100 */
	const char *q;        /* case-insensitive substring of the title, or NULL */
	int archived;         /* -1 any, 0 not archived, 1 archived only */
};

struct store_stats {
	uint64_t map_size, map_used;     /* bytes */
	uint64_t users, sessions, messages, tokens, events, auth_sessions, api_keys, usage;
	uint64_t commits, commit_batches; /* writer thread: transactions, and those holding > 1 write */
	uint64_t writes, write_errors;   /* writes committed, writes refused or lost */
	uint64_t last_commit_ns;         /* duration of the last commit (fsync included) */
	uint64_t reserve;                /* bytes only accepted answers may use (store_reserve_mb) */
	uint64_t reserve_refusals;       /* new data refused (-ENOSPC) because only the reserve was left */
	uint32_t schema_version;
};

/* The limits of one user or API key that an operator set (sluicectl
 * limits); the others come from the role ([limits.ROLE]). Values are in the
 * units of conf's keys, indexed by enum conf_limit. */
#define STORE_LIMITS_KEY_MAX 80 /* "u:" + user name, or "k:" + key id */
#define STORE_LIMIT_UNSET UINT32_MAX

struct store_limits {
	char key[STORE_LIMITS_KEY_MAX];
	uint32_t v[CONF_LIM_N]; /* STORE_LIMIT_UNSET: the role's value applies */
};

enum store_role { STORE_ROLE_USER = 0, STORE_ROLE_ASSISTANT = 1 };

enum store_msg_status {
	STORE_MSG_QUEUED = 0,
	STORE_MSG_STREAMING,
	STORE_MSG_COMPLETE,
	STORE_MSG_CANCELLED,
	STORE_MSG_ERROR,
	STORE_MSG_INTERRUPTED,
};

/* The status as the API, the event trail and exports spell it; a value
 * outside the enum (a damaged record) reads as "error". */
static inline const char *store_msg_status_name(enum store_msg_status st)
{
	switch (st) {
	case STORE_MSG_QUEUED: return "queued";
	case STORE_MSG_STREAMING: return "streaming";
	case STORE_MSG_COMPLETE: return "complete";
	case STORE_MSG_CANCELLED: return "cancelled";
	case STORE_MSG_ERROR: return "error";
	case STORE_MSG_INTERRUPTED: return "interrupted";
	}
	return "error";
}

struct store_usage {
	uint32_t prompt_tokens;
	uint32_t completion_tokens;
	double cost_usd;
	char backend[CONF_NAME_MAX];  /* status writes: where it ran ("" keeps the stored name) */
	char key_id[STORE_KEYID_MAX]; /* status writes: the API key it was posted with ("": as added) */
};

/* One ended answer in the usage log (who, which key, which model, how much). */
struct store_usage_rec {
	char sid[CHAN_ID_LEN];
	char mid[CHAN_ID_LEN];
	char user[STORE_USER_MAX];
	uint64_t uid;
	char key_id[STORE_KEYID_MAX];  /* "" for a login session */
	char model[CONF_NAME_MAX];
	char backend[CONF_NAME_MAX];
	uint32_t prompt_tokens, completion_tokens;
	double cost_usd;
	int64_t t_ns;                  /* unix ns when the answer ended */
	uint8_t status;                /* enum store_msg_status */
};

/* Filters of a usage listing; NULL / 0 match everything. */
struct store_usage_query {
	const char *user;
	const char *key_id;
	int64_t since_ns; /* unix ns: answers that ended at or after it */
};

struct store_message {
	char id[CHAN_ID_LEN];
	enum store_role role;
	enum store_msg_status status;
	int64_t created_at;       /* unix seconds */
	uint32_t ntokens;         /* tokens in the log (assistant) */
	struct store_usage usage; /* set when the message ended */
	const char *content;      /* not NUL-terminated */
	size_t content_len;
};

struct store_token {
	const char *text;
	uint32_t len;
	uint64_t offset_ns; /* creation time minus the message's start */
};

struct store_ops {
	void (*close)(struct store *st);
	int (*session_create)(struct store *st, const struct store_session *s,
			      store_done_fn done, void *arg);
	int (*session_get)(struct store *st, const char *sid, struct store_session *out);
	/* Appends the user message (content given) and the assistant placeholder
	 * (empty, QUEUED, expecting about hint_tokens tokens), posted with the
	 * API key key_id ("" or NULL for a login: the usage log says who paid). */
	int (*message_add)(struct store *st, const char *sid, const char *user_mid,
			   const char *content, size_t len, const char *asst_mid,
			   uint32_t hint_tokens, const char *key_id, store_done_fn done, void *arg);
	uint32_t (*message_count)(struct store *st, const char *sid);
	int (*message_get)(struct store *st, const char *sid, uint32_t idx, struct store_message *out);
	/* Index of message mid in its session, or -1. */
	int64_t (*message_find)(struct store *st, const char *sid, const char *mid);
	/* Appends tokens first_seq .. first_seq+n-1 to the log and to the
	 * message content. A durable store may apply it later: a first_seq that
	 * does not follow the stored tokens (a gap after a lost append, or an
	 * overlap) is then refused, logged and counted in write_errors, never
	 * renumbered. */
	int (*tokens_append)(struct store *st, const char *sid, const char *mid, uint32_t first_seq,
			     const struct store_token *t, uint32_t n);
	/* Token seq (1-based) of message mid. */
	int (*token_get)(struct store *st, const char *sid, const char *mid, uint32_t seq,
			 struct store_token *out);
	/* An ended assistant message enters the usage log. Without usage at the
	 * end, its usage is the prompt count stored before (at streaming), the
	 * tokens stored, and their cost at the model's price. */
	int (*message_status)(struct store *st, const char *sid, const char *mid,
			      enum store_msg_status status, const struct store_usage *usage);
	/* Calls each for every ended answer matching q, oldest first. */
	int (*usage_list)(struct store *st, const struct store_usage_query *q,
			  void (*each)(void *arg, const struct store_usage_rec *u), void *arg);

	/* Conversations. */
	int (*session_list)(struct store *st, const struct store_list_query *q,
			    void (*each)(void *arg, const struct store_session *s), void *arg,
			    char *next_cursor, size_t cursor_cap);
	int (*session_update)(struct store *st, const struct store_session *s,
			      store_done_fn done, void *arg); /* title, archived, updated_at */
	int (*session_delete)(struct store *st, const char *sid, store_done_fn done, void *arg);

	/* Users (-EEXIST on create of an existing name, -ENOENT on a missing one). */
	int (*user_put)(struct store *st, const struct store_user *u, int create_only,
			store_done_fn done, void *arg);
	int (*user_get)(struct store *st, const char *name, struct store_user *out);
	int (*user_del)(struct store *st, const char *name, store_done_fn done, void *arg);
	int (*user_list)(struct store *st, void (*each)(void *arg, const struct store_user *u), void *arg);

	/* API keys, by keyed hash. */
	int (*apikey_put)(struct store *st, const struct store_apikey *k, store_done_fn done, void *arg);
	int (*apikey_get)(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_apikey *out);
	int (*apikey_del)(struct store *st, const char *id, store_done_fn done, void *arg);
	int (*apikey_list)(struct store *st, const char *owner /* NULL: all */,
			   void (*each)(void *arg, const struct store_apikey *k), void *arg);

	/* Auth sessions, by keyed hash of the token. */
	int (*auth_put)(struct store *st, const struct store_auth *a, store_done_fn done, void *arg);
	int (*auth_get)(struct store *st, const uint8_t hash[STORE_HASH_LEN], struct store_auth *out);
	int (*auth_del)(struct store *st, const uint8_t hash[STORE_HASH_LEN], store_done_fn done, void *arg);
	/* Every login session of user (expired ones included). */
	int (*auth_list)(struct store *st, const char *user,
			 void (*each)(void *arg, const struct store_auth *a), void *arg);

	/* Limit overrides: put replaces the record (all values unset deletes
	 * it); get is -ENOENT when none is stored. */
	int (*limits_put)(struct store *st, const struct store_limits *l, store_done_fn done, void *arg);
	int (*limits_get)(struct store *st, const char *key, struct store_limits *out);
	int (*limits_list)(struct store *st, void (*each)(void *arg, const struct store_limits *l),
			   void *arg);

	/* The audit trail: state transitions of sessions and messages (batched). */
	int (*event_add)(struct store *st, const char *sid, const char *kind, const char *detail);

	int (*stats)(struct store *st, struct store_stats *out);
	/* A compacted, consistent copy into the empty or absent directory `path`. */
	int (*backup)(struct store *st, const char *path, store_done_fn done, void *arg);
};

struct store {
	const struct store_ops *ops;
};

struct cp_loop;
/*
 * Opens (creating when absent) the LMDB store in directory `dir`, starting
 * its writer thread. Completion callbacks run on the control loop `loop`
 * (the writer wakes it through an eventfd registered there), which must
 * outlive the store. conf (map size, token_commit_ms,
 * backends) must outlive the store. On open, answers left QUEUED or STREAMING
 * by a previous run are marked INTERRUPTED. Returns NULL with a message in err.
 */
struct store *store_lmdb_open(const char *dir, struct cp_loop *loop, const struct sluice_conf *conf,
			      char *err, size_t errlen);
/* Blocks until every write queued so far is committed, then runs the pending
 * completion callbacks on the calling (loop) thread: a synchronous barrier,
 * where the loop would otherwise deliver them on its next turn. */
void store_lmdb_flush(struct store *st);

static inline void store_close(struct store *st)
{
	st->ops->close(st);
}

static inline int store_session_create(struct store *st, const struct store_session *s,
				       store_done_fn done, void *arg)
{
	return st->ops->session_create(st, s, done, arg);
}

static inline int store_session_get(struct store *st, const char *sid, struct store_session *out)
{
	return st->ops->session_get(st, sid, out);
}

static inline int store_message_add(struct store *st, const char *sid, const char *user_mid,
				    const char *content, size_t len, const char *asst_mid,
				    uint32_t hint_tokens, const char *key_id, store_done_fn done, void *arg)
{
	return st->ops->message_add(st, sid, user_mid, content, len, asst_mid, hint_tokens, key_id, done,
				    arg);
}

static inline uint32_t store_message_count(struct store *st, const char *sid)
{
	return st->ops->message_count(st, sid);
}

static inline int store_message_get(struct store *st, const char *sid, uint32_t idx,
				    struct store_message *out)
{
	return st->ops->message_get(st, sid, idx, out);
}

static inline int64_t store_message_find(struct store *st, const char *sid, const char *mid)
{
	return st->ops->message_find(st, sid, mid);
}

static inline int store_tokens_append(struct store *st, const char *sid, const char *mid,
				      uint32_t first_seq, const struct store_token *t, uint32_t n)
{
	return st->ops->tokens_append(st, sid, mid, first_seq, t, n);
}

static inline int store_token_get(struct store *st, const char *sid, const char *mid,
				  uint32_t seq, struct store_token *out)
{
	return st->ops->token_get(st, sid, mid, seq, out);
}

static inline int store_message_status(struct store *st, const char *sid, const char *mid,
				       enum store_msg_status status, const struct store_usage *usage)
{
	return st->ops->message_status(st, sid, mid, status, usage);
}

static inline int store_usage_list(struct store *st, const struct store_usage_query *q,
				   void (*each)(void *arg, const struct store_usage_rec *u), void *arg)
{
	return st->ops->usage_list(st, q, each, arg);
}

static inline int store_session_list(struct store *st, const struct store_list_query *q,
				     void (*each)(void *arg, const struct store_session *s), void *arg,
				     char *next_cursor, size_t cursor_cap)
{
	return st->ops->session_list(st, q, each, arg, next_cursor, cursor_cap);
}

static inline int store_session_update(struct store *st, const struct store_session *s,
				       store_done_fn done, void *arg)
{
	return st->ops->session_update(st, s, done, arg);
}

static inline int store_session_delete(struct store *st, const char *sid, store_done_fn done, void *arg)
{
	return st->ops->session_delete(st, sid, done, arg);
}

static inline int store_user_put(struct store *st, const struct store_user *u, int create_only,
				 store_done_fn done, void *arg)
{
	return st->ops->user_put(st, u, create_only, done, arg);
}

static inline int store_user_get(struct store *st, const char *name, struct store_user *out)
{
	return st->ops->user_get(st, name, out);
}

static inline int store_user_del(struct store *st, const char *name, store_done_fn done, void *arg)
{
	return st->ops->user_del(st, name, done, arg);
}

static inline int store_user_list(struct store *st, void (*each)(void *arg, const struct store_user *u),
				  void *arg)
{
	return st->ops->user_list(st, each, arg);
}

static inline int store_apikey_put(struct store *st, const struct store_apikey *k, store_done_fn done,
				   void *arg)
{
	return st->ops->apikey_put(st, k, done, arg);
}

static inline int store_apikey_get(struct store *st, const uint8_t hash[STORE_HASH_LEN],
				   struct store_apikey *out)
{
	return st->ops->apikey_get(st, hash, out);
}

static inline int store_apikey_del(struct store *st, const char *id, store_done_fn done, void *arg)
{
	return st->ops->apikey_del(st, id, done, arg);
}

static inline int store_apikey_list(struct store *st, const char *owner,
				    void (*each)(void *arg, const struct store_apikey *k), void *arg)
{
	return st->ops->apikey_list(st, owner, each, arg);
}

static inline int store_auth_put(struct store *st, const struct store_auth *a, store_done_fn done,
				 void *arg)
{
	return st->ops->auth_put(st, a, done, arg);
}

static inline int store_auth_get(struct store *st, const uint8_t hash[STORE_HASH_LEN],
				 struct store_auth *out)
{
	return st->ops->auth_get(st, hash, out);
}

static inline int store_auth_del(struct store *st, const uint8_t hash[STORE_HASH_LEN],
				 store_done_fn done, void *arg)
{
	return st->ops->auth_del(st, hash, done, arg);
}

static inline int store_event_add(struct store *st, const char *sid, const char *kind,
				  const char *detail)
{
	return st->ops->event_add(st, sid, kind, detail);
}

static inline int store_stats(struct store *st, struct store_stats *out)
{
	return st->ops->stats(st, out);
}

static inline int store_backup(struct store *st, const char *path, store_done_fn done, void *arg)
{
	return st->ops->backup(st, path, done, arg);
}

#endif
