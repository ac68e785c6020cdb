/*
 * Conversations at run time: the session table (a cache over the store),
 * the running answers (each a backend call, backends/backends.h), the
 * subscription table, the connection table and replays of recorded answers.
 *
 * Files: chat.c (sessions, subscriptions, conns, overload kicks), 
 * chat_answer.c (messages and the answers the backends produce: history,
 * token batching, usage, the end), chat_replay.c (replays), chat_int.h
 * between them.
 *
 * Subscription table: per session, one reference count per dataplane worker
 * (how many of that worker's connections stream the session). Control never
 * tracks single streaming connections: a broadcast is one record per worker
 * with a count > 0, and the worker fans it out.
 *
 * Connection table: the connections that subscribed (or replay), keyed by
 * their handle, so a WebSocket can ask for its state, a replay has a place to
 * live, and a closed connection's replay stops. Entries are created at
 * subscribe time (never per token) and freed on CONN_CLOSED.
 *
 * Single-threaded: everything runs on the control loop.
 */
#ifndef CONTROL_CHAT_H
#define CONTROL_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backends.h"
#include "channel/chan_out.h"
#include "events/ev.h"
#include "loop/cp_loop.h"
#include "sluice/chan.h"
#include "sluice/conf.h"
#include "store/store.h"
#include "idmap/connmap.h"
#include "idmap/idmap.h"

/* Largest JSON text of a WebSocket request "id" echoed in the reply. */
#define CHAT_ECHO_MAX 64
/* A KICK that waits for ring space is retried this often. */
#define CHAT_KICK_RETRY_NS 1000000ull
/* Tokens per TOKENS record built from memory (a batch may be several). */
#define CHAT_TURN_TOKENS 256

/* Where and how to answer a request whose result arrives later
 * (store completion). */
struct chat_reply {
	struct chan_conn conn;
	uint32_t req_id;
	uint8_t kind; /* enum chan_req_kind */
	bool openai;  /* a /v1 request: errors in OpenAI's shape */
	uint32_t echo_len;
	char echo[CHAT_ECHO_MAX];
};

struct chat;
struct chat_session;

/* A token of a session's latest answer: its bytes are text[off, off+len). */
struct chat_tok {
	uint32_t off;
	uint32_t len;
	uint64_t offset_ns;
};

/*
 * The session's latest answer. Its tokens, status and usage stay in memory
 * (`have`) until the next message of the session starts, because store
 * reads may lag the batched token commits: resume, replay and reads of this
 * answer use this copy, older answers come from the store.
 */
struct chat_answer {
	struct bk_call *call; /* the backend call while it runs, else NULL */
	struct chat_session *s;
	struct chat_answer *pnext; /* the chat's list of answers with unsent tokens */
	char mid[CHAN_ID_LEN];
	uint32_t seq;  /* tokens produced so far */
	uint32_t sent; /* of those, broadcast and given to the store */
	bool running;
	bool streaming;
	bool waiting;  /* waiting_backend was broadcast */
	bool pending_flush;
	bool have;
	bool usage_seen; /* the backend counted the tokens */
	enum store_msg_status status;
	struct store_usage usage;
	uint64_t start_ns;     /* when the message was accepted */
	uint32_t prompt_est;   /* words of the messages sent, when the backend gives no count */
	uint32_t up, uc;       /* the backend's counts */
	char key_id[STORE_KEYID_MAX]; /* the API key that posted the message, "" for a login */
	char backend[CONF_NAME_MAX];  /* where it runs (or ran) */
	/* Set when the api's answer_tokens hook cut the answer (a budget):
	 * the code and message its done error carries; "" otherwise. */
	char cut_code[32];
	char cut_msg[160];
	char *text; /* owned; reserved when the message is posted */
	size_t text_len, text_cap;
	struct chat_tok *toks; /* owned; seq k is toks[k - 1] */
	uint32_t tok_cap;
};

struct chat_session {
	struct idmap_node node; /* first: the map hands back this pointer */
	struct chat *chat;
	char model[CONF_NAME_MAX];    /* cached from the store */
	char agent[STORE_AGENT_MAX];
	char user[STORE_USER_MAX]; /* owner, cached from the store */
	uint64_t owner_uid;        /* the owner's identity (store_user.uid), cached */
	uint32_t refs[CHAN_MAX_WORKERS];
	/* Subscribers dropped when their worker's ring stayed full: their
	 * UNSUBSCRIBE (after the KICK) is still due and must not take a
	 * newer subscriber's count. */
	uint32_t orphans[CHAN_MAX_WORKERS];
	struct chat_answer ans;
	bool pending;            /* a message waits for its store commit */
	struct chat_reply reply; /* whom to answer when the commit completes */
	char user_mid[CHAN_ID_LEN];
	/* The api's note of the latest message's content size, for its
	 * limits (who posted it is ans.key_id). */
	size_t acct_len;
};

/* A recorded answer sent again to one connection with its original token
 * timing divided by speed; one timer per replay. */
struct chat_replay {
	struct cpl_timer timer;
	char sid[CHAN_ID_LEN];
	char mid[CHAN_ID_LEN];
	double speed;
	uint64_t start_ns;     /* token offsets count from here; pauses push it later */
	uint64_t paused_ns;    /* when the pause began, 0 while playing */
	uint32_t next;         /* seq of the next token to send */
	uint32_t ntokens;
	enum store_msg_status status; /* how the recorded answer ended */
	struct store_usage usage;
	bool streaming;
};

/* One allocation per conn that subscribed or replays, owned by chat's
 * table (chat_conn_get creates it; UNSUBSCRIBE without a replay, CONN_CLOSED,
 * a peer reset or chat_free frees it). */
struct chat_conn {
	struct connmap_node node; /* first; its key is the conn's handle */
	struct chat *chat;
	char sub_sid[CHAN_ID_LEN]; /* the session it streams, "" when none */
	/* The replay running on this conn (owned, malloc'd by chat_replay_start,
	 * freed by chat_stop_replay), NULL when none: most conns never replay,
	 * so they do not carry its 250 bytes. */
	struct chat_replay *rp;
};

/* How the api layer learns that a store write finished, and what an
 * answer used (its quotas, docs/api.md "Limits"). The answer hooks may be
 * NULL. */
struct chat_hooks {
	void (*session_created)(void *arg, const struct chat_reply *r, const char *sid,
				const char *user, int err);
	void (*message_accepted)(void *arg, const struct chat_reply *r, const char *sid,
				 const char *mid, int err);
	/* n tokens of bytes text were generated for s's running answer (once
	 * per loop turn). An error code (why filled with its message) cuts the
	 * answer in this turn: its backend call is cancelled and it ends with
	 * done error and that code. NULL lets it go on. */
	const char *(*answer_tokens)(void *arg, const struct chat_session *s, uint32_t n, size_t bytes,
				     char *why, size_t whylen);
	/* s's answer ended (complete, cancelled, error). */
	void (*answer_ended)(void *arg, const struct chat_session *s);
	void *arg;
};

struct chat_stats {
	uint64_t tokens;
	uint64_t token_batches; /* TOKENS broadcasts of running answers (one per answer per turn) */
	uint64_t answers_failed; /* answers that ended in error */
	uint64_t answers_cut;    /* answers (chat and /v1) cut past their owner's daily token budget */
	/* Usage of every answer that ended since control started (chat and /v1). */
	uint64_t usage_answers, usage_prompt_tokens, usage_completion_tokens;
	double usage_cost_usd;
	uint64_t replay_tokens;
	uint64_t sub_drops; /* worker subscriptions dropped because its ring stayed full */
	uint64_t overload_kicks; /* KICK "overloaded" sent for those drops */
	uint64_t kick_losses;    /* drops whose KICK could not even be remembered (no memory) */
};

/* A worker whose subscribers of sid were dropped and still have to be told
 * (KICK "overloaded") once its ring has room. */
struct chat_kick {
	char sid[CHAN_ID_LEN];
	uint32_t worker;
};

struct chat {
	const struct sluice_conf *conf;
	struct cp_loop *loop;
	struct store *st;
	struct chan_out *out;
	struct bk_mgr *bk;
	struct chat_answer *pending; /* answers with tokens to send this turn */
	struct cpl_timer kick_timer; /* retries pending KICKs while rings are full */
	struct idmap sessions;
	struct connmap conns; /* struct chat_conn by handle */
	struct chat_hooks hooks;
	struct chat_stats stats;
	struct ev_bus *bus;   /* answers, new conversations and overload kicks are published here; may be NULL */
	uint32_t running;     /* answers running now */
	struct chat_kick *kicks; /* owned; grows only when a drop happens */
	uint32_t nkicks, kick_cap;
	struct co_tok toks[CHAT_TURN_TOKENS];
	struct store_token stoks[CHAT_TURN_TOKENS];
	char *scratch; /* owned: replay token bytes of one step */
	size_t scratch_cap;
};

enum chat_resume { CHAT_RESUME_NONE = 0, CHAT_RESUME_SEQ, CHAT_RESUME_USAGE, CHAT_RESUME_DONE };

/* The config, loop, store, output and backends stay owned by the caller
 * and must outlive c (end the backends' calls with bk_shutdown before
 * chat_free). Tokens of running answers are sent once per turn, when the
 * output flushes; replays run on loop timers; a new dataplane incarnation
 * drops every subscription (peer-reset hook). Returns 0, or -1 with a
 * message in err. */
int chat_init(struct chat *c, const struct sluice_conf *conf, struct cp_loop *loop, struct store *st,
	      struct chan_out *out, struct bk_mgr *bk, char *err, size_t errlen);
void chat_free(struct chat *c);
/* Who hears of finished store writes (the api layer, above chat). */
void chat_set_hooks(struct chat *c, const struct chat_hooks *hooks);
/* Where chat publishes what happens to conversations and answers
 * (created, answer started and ended, overload kicks); stays owned by the
 * caller and must outlive c. */
void chat_set_bus(struct chat *c, struct ev_bus *bus);

/* Writes prefix + 16 random hex digits + NUL into out (CHAN_ID_LEN bytes). */
void chat_new_id(const char *prefix, char out[CHAN_ID_LEN]);

/* The session, loading it from the store when it is not cached; NULL when unknown. */
struct chat_session *chat_session_get(struct chat *c, const char *sid, size_t len);
/* The session only when it is in memory (never touches the store). */
struct chat_session *chat_session_cached(struct chat *c, const char *sid, size_t len);
/* Calls fn for every session in memory; fn must not add or drop sessions. */
void chat_session_foreach(struct chat *c, void (*fn)(const struct chat_session *s, void *arg), void *arg);

/* Creates a session; hooks.session_created reports the result. Returns < 0
 * when the store refused at once (the hook is not called then). */
int chat_session_create(struct chat *c, const struct store_session *ss, const struct chat_reply *r);

/* Accepts a user message (posted with the API key key_id, or "" for a
 * login); hooks.message_accepted reports the result, then the answer
 * starts. -EBUSY when an answer is running or pending, -ENOENT when no
 * backend serves the session's model, -EAGAIN when every backend of it is
 * busy with a full queue (checked now; one that fills meanwhile ends the
 * answer with the error "overloaded"). */
int chat_message_post(struct chat *c, struct chat_session *s, const char *content, size_t len,
		      const char *key_id, const struct chat_reply *r);

/* Stops the running answer (its backend request is closed now; USAGE then
 * DONE cancelled to subscribers) and copies its message id into mid.
 * -ENOENT when nothing runs. */
int chat_cancel(struct chat *c, struct chat_session *s, char mid[CHAN_ID_LEN]);

/* Sends conn what it missed (docs/api.md "Resume") as unicast records, then
 * registers it as a subscriber. rmid/rseq: the resume point, when kind is not
 * NONE. Tokens of the running answer waiting for this turn's batch go to the
 * other subscribers first, so the new one sees each token once. */
bool chat_subscribe(struct chat *c, struct chat_session *s, struct chan_conn conn,
		    enum chat_resume kind, const char *rmid, uint32_t rseq);
void chat_sub_add(struct chat_session *s, uint32_t worker);
void chat_sub_del(struct chat_session *s, uint32_t worker);

/* Message idx of s (store order), with the latest answer's content, status,
 * token count and usage overlaid from memory. Pointers stay valid as for
 * store reads and until the session's next message starts. */
int chat_message_get(struct chat *c, struct chat_session *s, uint32_t idx, struct store_message *out);
/* Token seq (1-based) of message mid of s, from memory for the latest answer. */
int chat_token_get(struct chat *c, struct chat_session *s, const char *mid, uint32_t seq,
		   struct store_token *out);

/* Counts an ended answer's usage in the stats (chat's and /v1's). */
void chat_count_usage(struct chat *c, const struct store_usage *u);

/* Records a session lifecycle event (store event trail); detail is JSON text
 * or NULL. Failures are logged: the trail never fails a client request. */
void chat_event(struct chat *c, const char *sid, const char *kind, const char *detail);

/* Forgets s: cancels its running answer (subscribers get USAGE then DONE
 * cancelled), stops replays of it and frees it. The caller deletes it from
 * the store. -EBUSY while a message waits for its commit (the store
 * completion still points at s). */
int chat_session_drop(struct chat *c, struct chat_session *s);

/* The entry of conn, created when `create` (NULL on allocation failure or
 * when absent). */
struct chat_conn *chat_conn_get(struct chat *c, struct chan_conn conn, bool create);
/* A SUBSCRIBE record: the dataplane re-announces a streaming conn. */
void chat_conn_subscribed(struct chat *c, struct chat_session *s, const struct chan_sub *sub);
/* An UNSUBSCRIBE record for session sid. */
void chat_conn_unsubscribed(struct chat *c, struct chan_conn conn, const char *sid);
/* The conn closed: its replay stops and its entry goes. */
void chat_conn_closed(struct chat *c, struct chan_conn conn);

/* Starts replaying message m of s to conn (which the caller has just
 * subscribed to s through its response): STATUS queued now, then the tokens
 * at offset / speed, then USAGE and DONE with the recorded status. Replaces
 * a replay the conn already had. */
int chat_replay_start(struct chat *c, struct chat_session *s, struct chan_conn conn,
		      const struct store_message *m, double speed);
/* Pauses (pause true) or resumes the conn's replay; -ENOENT without one. */
int chat_replay_pause(struct chat *c, struct chan_conn conn, bool pause);

#endif
