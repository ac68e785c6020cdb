/*
 * Conversations at run time: the session table (a cache over the store),
 * the running answers and the subscription table.
 *
 * Subscription table: per session, one reference count per dataplane worker
 * (how many of that worker's connections stream the session). Control never
 * tracks single streaming connections: a broadcast is one record per worker
 * with a count > 0, and the worker fans it out.
 *
 * Single-threaded: everything runs on the control loop.
 */
#ifndef CONTROL_CHAT_H
#define CONTROL_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"
#include "loop/timer_heap.h"
#include "out/chan_out.h"
#include "sluice/chan.h"
#include "sluice/conf.h"
#include "store/store.h"
#include "util/idmap.h"

/* Largest JSON text of a WebSocket request "id" echoed in the reply. */
#define CHAT_ECHO_MAX 64
/* Tokens pulled from a backend per answer per loop turn. */
#define CHAT_TURN_TOKENS 256

/* Where and how to answer a request whose result arrives later
 * (store completion). */
struct chat_reply {
	struct chan_conn conn;
	uint32_t req_id;
	uint8_t kind; /* enum chan_req_kind */
	uint32_t echo_len;
	char echo[CHAT_ECHO_MAX];
};

struct chat;
struct chat_session;

struct chat_answer {
	struct th_node timer;
	struct backend_answer be;
	struct chat_session *s;
	char mid[CHAN_ID_LEN];
	uint32_t seq; /* tokens produced so far */
	bool running;
	bool streaming;
};

struct chat_session {
	struct idmap_node node; /* first: the map hands back this pointer */
	struct chat *chat;
	const struct conf_backend *backend;
	uint32_t refs[CHAN_MAX_WORKERS];
	struct chat_answer ans;
	bool pending;            /* a message waits for its store commit */
	struct chat_reply reply; /* whom to answer when the commit completes */
	char user_mid[CHAN_ID_LEN];
};

/* How the api layer learns that a store write finished. */
struct chat_hooks {
	void (*session_created)(void *arg, const struct chat_reply *r, const char *sid, int err);
	void (*message_accepted)(void *arg, const struct chat_reply *r, const char *sid,
				 const char *mid, int err);
	void *arg;
};

struct chat_stats {
	uint64_t tokens;
	uint64_t sub_drops; /* worker subscriptions dropped because its ring stayed full */
};

struct chat {
	const struct sluice_conf *conf;
	struct store *st;
	struct chan_out *out;
	struct timer_heap timers;
	struct idmap sessions;
	struct chat_hooks hooks;
	struct chat_stats stats;
	struct co_tok toks[CHAT_TURN_TOKENS];
	char tokbuf[CHAT_TURN_TOKENS][BACKEND_TOKEN_MAX];
	struct store_token stoks[CHAT_TURN_TOKENS];
};

enum chat_resume { CHAT_RESUME_NONE = 0, CHAT_RESUME_SEQ, CHAT_RESUME_USAGE, CHAT_RESUME_DONE };

/* The config, store and output stay owned by the caller and must outlive c. */
int chat_init(struct chat *c, const struct sluice_conf *conf, struct store *st,
	      struct chan_out *out, const struct chat_hooks *hooks);
void chat_free(struct chat *c);

/* Writes prefix + 16 random hex digits + NUL into out (CHAN_ID_LEN bytes). */
void chat_new_id(const char *prefix, char out[CHAN_ID_LEN]);

/* The session, loading it from the store when it is not cached; NULL when unknown. */
struct chat_session *chat_session_get(struct chat *c, const char *sid, size_t len);

/* Creates a session; hooks.session_created reports the result. Returns < 0
 * when the store refused at once (the hook is not called then). */
int chat_session_create(struct chat *c, const struct conf_backend *be, const struct store_session *ss,
			const struct chat_reply *r);

/* Accepts a user message; hooks.message_accepted reports the result, then
 * the answer starts. -EBUSY when an answer is running or pending. */
int chat_message_post(struct chat *c, struct chat_session *s, const char *content, size_t len,
		      const struct chat_reply *r);

/* Stops the running answer (USAGE then DONE cancelled to subscribers) and
 * copies its message id into mid. -ENOENT when nothing runs. */
int chat_cancel(struct chat *c, struct chat_session *s, char mid[CHAN_ID_LEN]);

/* Sends conn what it missed (docs/api.md "Resume") as unicast records, then
 * registers it as a subscriber. rmid/rseq: the resume point, when kind is not NONE. */
bool chat_subscribe(struct chat *c, struct chat_session *s, struct chan_conn conn,
		    enum chat_resume kind, const char *rmid, uint32_t rseq);
void chat_sub_add(struct chat_session *s, uint32_t worker);
void chat_sub_del(struct chat_session *s, uint32_t worker);
/* The dataplane restarted: every connection, hence every subscription, is gone. */
void chat_drop_all_subs(struct chat *c);

/* Produces every token that is due; returns the next deadline (UINT64_MAX: none). */
uint64_t chat_run_timers(struct chat *c, uint64_t now_ns);

#endif
