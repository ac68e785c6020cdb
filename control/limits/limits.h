/*
 * Quotas and rate limits per user and per API key (docs/api.md "Limits"):
 * stored message text, conversations, messages per minute, answers running
 * at once, answer tokens per minute and per (UTC) day. A user's limits are
 * its role's ([limits.ROLE]), an API key's its owner's, each replaced value
 * by value by an operator's override kept in the store (sluicectl limits).
 * A request made with an API key must pass both the key's limits and its
 * user's; stored text and conversations belong to the user only.
 *
 * The counters live in memory, one entry per user or key seen since control
 * started: a restart forgets the rates and the day's tokens (at most a
 * minute's and a day's allowance again). Stored text and conversation
 * counts are read from the store the first time a user needs them, then
 * kept current from the writes the api makes.
 *
 * Single-threaded on the control loop.
 */
#ifndef CONTROL_LIMITS_H
#define CONTROL_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idmap/idmap.h"
#include "sluice/conf.h"
#include "store/store.h"

/* The limit a request ran into; CONF_LIM_N: none. */
typedef int lim_id;

struct lim_stats {
	uint64_t refused[CONF_LIM_N];
};

struct limits {
	const struct sluice_conf *conf;
	struct store *st;
	struct idmap ents;
	/* Unix seconds: time(NULL) unless a test sets its clock. */
	int64_t (*now)(void *arg);
	void *now_arg;
	struct lim_stats stats;
};

/* Who a request counts against. key_id is the API key's public id when the
 * request was made with one, else NULL. */
struct lim_who {
	const char *user;
	uint64_t uid;
	uint8_t role; /* enum store_user_role */
	const char *key_id;
};

/* What a refusal tells the client. */
struct lim_refusal {
	lim_id limit;
	bool by_key;        /* the API key's limit, not the user's */
	uint64_t value;     /* the limit in its unit */
	int64_t retry_after; /* seconds */
};

/* conf and st stay the caller's and must outlive l. 0, or -1 with err. */
int lim_init(struct limits *l, const struct sluice_conf *conf, struct store *st, char *err,
	     size_t errlen);
void lim_free(struct limits *l);

/* The error code of a limit ("limit_messages_per_min", ...) and the name of
 * its configuration key ("messages_per_min", ...). */
const char *lim_code(lim_id id);
const char *lim_key_name(lim_id id);
/* The limit of that key name, or -1. */
lim_id lim_by_name(const char *name);

/*
 * A new message of len content bytes: false with *why filled when a limit
 * refuses it (nothing is counted then), true when it may be stored (it is
 * counted: messages per minute, an answer running, the stored text). Every
 * true is followed by lim_message_failed or, once its answer ends,
 * lim_answer_end.
 */
bool lim_message_begin(struct limits *l, const struct lim_who *w, size_t len, struct lim_refusal *why);
/* The message was not stored after all: its answer never runs. */
void lim_message_failed(struct limits *l, const char *user, const char *key_id, size_t len);
/*
 * n tokens of a running answer, bytes of text (0 when it is not stored).
 * True when they took the answer's user or key past its tokens_per_day
 * budget: the caller cuts the answer now (docs/api.md "Limits"), and *cut
 * (may be NULL) says which limit, as a refusal would. Only the daily quota
 * cuts: tokens_per_min is a rate that refuses new messages, and cutting an
 * answer half-way for it would throw away what was already paid for.
 */
bool lim_answer_tokens(struct limits *l, const char *user, const char *key_id, uint32_t n,
		       size_t bytes, struct lim_refusal *cut);
/* The answer ended. extra_tokens corrects the tokens counted so far to the
 * backend's own count (its usage report: completion tokens minus the token
 * events counted), so a real backend's tokens weigh as its bill says; 0
 * when it gave none. The token counts never go below 0. */
void lim_answer_end(struct limits *l, const char *user, const char *key_id, int64_t extra_tokens);

/* A new conversation: false with *why when the user has its quota. */
bool lim_session_begin(struct limits *l, const struct lim_who *w, struct lim_refusal *why);
/* The conversation was not stored after all. */
void lim_session_failed(struct limits *l, const char *user);
/* Conversation sid of user is about to be deleted: its text is no longer
 * counted (read from the store now, before the delete). */
void lim_session_deleting(struct limits *l, const char *user, const char *sid);

/* What sluicectl limits show shows: the values in force (override or role)
 * and which are overridden, and the usage counted now. key is "u:NAME" or
 * "k:ID"; role is that of the user (of the key's owner). */
struct lim_view {
	uint32_t value[CONF_LIM_N];  /* 0: no limit */
	bool overridden[CONF_LIM_N];
	uint64_t used[CONF_LIM_N];   /* stored: bytes; rates: this window */
};
int lim_view(struct limits *l, const char *key, uint8_t role, uint64_t uid, struct lim_view *out);
/* Stores an override (values STORE_LIMIT_UNSET are the role's); done runs
 * once the store committed it, and the cache follows at once. */
int lim_override_put(struct limits *l, const struct store_limits *o, store_done_fn done, void *arg);

#endif
