/*
 * Internals shared by the chat module's files: chat.c (sessions,
 * subscriptions, conns, overload kicks, resume), chat_answer.c (messages
 * and the answers backends produce) and chat_replay.c (replays). Nothing
 * outside control/chat includes it.
 */
#ifndef CONTROL_CHAT_INT_H
#define CONTROL_CHAT_INT_H

#include "chat/chat.h"
#include "sluice/log.h"

/* Remembers that worker w's subscribers of sid were dropped (chat.c). */
void chat_kick_later(struct chat *c, const char *sid, uint32_t w);

/* Sends a record to every worker subscribed to s. A worker whose ring and
 * backlog are both full loses its subscriptions to s; its clients get a KICK
 * "overloaded" as soon as the ring has room, so they resume with
 * Last-Event-ID instead of waiting for ever. */
#define CHAT_BROADCAST(c, s, call)                                                         \
	do {                                                                               \
		for (uint32_t w_ = 0; w_ < (c)->out->nworkers; w_++) {                     \
			if (!(s)->refs[w_])                                                \
				continue;                                                  \
			struct chan_conn conn = { .worker = (uint16_t)w_, .slot = CHAN_SLOT_ALL }; \
			if (!(call)) {                                                     \
				LOG_WARN("worker %u backlog full: dropping its %u subscriptions to %s", \
					 w_, (s)->refs[w_], (s)->node.id);                 \
				(s)->orphans[w_] += (s)->refs[w_];                         \
				(s)->refs[w_] = 0;                                         \
				(c)->stats.sub_drops++;                                    \
				chat_kick_later((c), (s)->node.id, w_);                    \
			}                                                                  \
		}                                                                          \
	} while (0)

/* ---- chat.c ------------------------------------------------------------------ */

void chat_broadcast_status(struct chat *c, struct chat_session *s, const char *mid, const char *st);
/* A message state change on the event trail: kind "message". */
void chat_msg_event(struct chat *c, const char *sid, const char *mid, enum store_msg_status st);
uint32_t chat_done_code(enum store_msg_status st);
/* Sends message m (or its part after `after` tokens) to conn: statuses when
 * `with_status`, tokens after `after`, then USAGE and DONE when it ended. */
bool chat_send_message(struct chat *c, struct chat_session *s, struct chan_conn conn,
		       const struct store_message *m, bool with_status, uint32_t after);

/* ---- chat_answer.c ------------------------------------------------------ */

/* Registers the token batch flush with the output. 0 or -1. */
int chat_answer_init(struct chat *c);
/* Sends s's batched tokens now (to the subscribers and the store). */
void chat_answer_flush(struct chat *c, struct chat_session *s);
/* What a worker reports for the running answer of s if it has to end it
 * itself: the prompt estimate and the model's prices (STATUS "streaming"). */
void chat_answer_terms(struct chat *c, struct chat_session *s, struct co_terms *t);
/* Frees what an answer owns. */
void chat_answer_free(struct chat *c, struct chat_answer *a);

/* ---- chat_replay.c ------------------------------------------------------- */

void chat_replay_due_cb(void *arg, uint64_t now_ns);
void chat_stop_replay(struct chat *c, struct chat_conn *cc);

#endif
