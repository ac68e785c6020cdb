/*
 * The store: sessions, messages and the token log. Callers go through this
 * interface only, so the in-memory store (store_mem.c) and the LMDB store of
 * a later issue are interchangeable.
 *
 * Writes that a client is told about (a created session, an accepted message)
 * take a completion callback: the caller answers the client from it. The
 * memory store calls it before returning; a durable store calls it from the
 * control loop once the write is committed. Token appends and status changes
 * have no callback: they may be committed in batches.
 *
 * A write call that returns < 0 failed and will not call its callback; one
 * that returns 0 calls it exactly once (perhaps before returning).
 *
 * Reads fill caller structs; `content` and token `text` pointers stay valid
 * until the next write to the store.
 */
#ifndef CONTROL_STORE_H
#define CONTROL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/chan_proto.h"
#include "sluice/conf.h"

#define STORE_AGENT_MAX 64
#define STORE_TITLE_MAX 256

struct store;

/* err is 0 on success, else a negative errno-style value. */
typedef void (*store_done_fn)(void *arg, int err);

struct store_session {
	char id[CHAN_ID_LEN];
	char agent_id[STORE_AGENT_MAX];
	char model_id[CONF_NAME_MAX];
	char title[STORE_TITLE_MAX];
	int64_t created_at; /* unix seconds */
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

struct store_usage {
	uint32_t prompt_tokens;
	uint32_t completion_tokens;
	double cost_usd;
};

struct store_message {
	char id[CHAN_ID_LEN];
	enum store_role role;
	enum store_msg_status status;
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
	 * (empty, QUEUED, expecting about hint_tokens tokens). */
	int (*message_add)(struct store *st, const char *sid, const char *user_mid,
			   const char *content, size_t len, const char *asst_mid,
			   uint32_t hint_tokens, store_done_fn done, void *arg);
	uint32_t (*message_count)(struct store *st, const char *sid);
	int (*message_get)(struct store *st, const char *sid, uint32_t idx, struct store_message *out);
	/* Index of message mid in its session, or -1. */
	int64_t (*message_find)(struct store *st, const char *sid, const char *mid);
	/* Appends tokens (seq continues from the message's ntokens) to the log
	 * and to the message content. */
	int (*tokens_append)(struct store *st, const char *sid, const char *mid,
			     const struct store_token *t, uint32_t n);
	/* Token seq (1-based) of message mid. */
	int (*token_get)(struct store *st, const char *sid, const char *mid, uint32_t seq,
			 struct store_token *out);
	int (*message_status)(struct store *st, const char *sid, const char *mid,
			      enum store_msg_status status, const struct store_usage *usage);
};

struct store {
	const struct store_ops *ops;
};

/* Opens the in-memory store; NULL on allocation failure. */
struct store *store_mem_open(void);

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
				    uint32_t hint_tokens, store_done_fn done, void *arg)
{
	return st->ops->message_add(st, sid, user_mid, content, len, asst_mid, hint_tokens, done, arg);
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
				      const struct store_token *t, uint32_t n)
{
	return st->ops->tokens_append(st, sid, mid, t, n);
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

#endif
