/*
 * Control's side of the channel's c2d rings: records from control to the
 * dataplane, with the ring-full policy: a record that does not fit in its worker's ring goes to that
 * worker's backlog (a fixed buffer allocated once) and every later record for
 * the worker queues behind it, so per-worker order is kept. co_flush() moves
 * backlogs into the rings and publishes; it runs once per loop turn as a
 * before-sleep hook, and a 1 ms timer retries while a backlog waits (nobody
 * rings when ring space frees up). A new dataplane incarnation empties the
 * backlogs (peer-reset hook). A record that
 * does not fit in the backlog either is dropped and reported to the caller,
 * which then gives up on that worker for the session concerned. Nothing here
 * blocks or spins.
 */
#ifndef CONTROL_CHAN_OUT_H
#define CONTROL_CHAN_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop/cp_loop.h"
#include "sluice/chan.h"
#include "sluice/chan_proto.h"

/* Retry period while a backlog waits for ring space. */
#define CO_BACKLOG_RETRY_NS 1000000ull

struct co_worker {
	struct chan_prod *prod;
	uint8_t *backlog; /* records as in the ring: struct chan_rec + payload, 8-aligned */
	size_t blen;
	size_t bcap;
	size_t cur_off;     /* the record being built, when it lives in the backlog */
	bool cur_backlog;
	bool unpublished;
	uint64_t deferred;  /* records that went to the backlog */
	uint64_t dropped;   /* records that fitted nowhere */
};

/* Producers that batch records for a turn and write them when the output
 * flushes (the chat layer's token batches). */
#define CO_MAX_FLUSH_HOOKS 4

struct chan_out {
	struct cp_loop *loop;
	struct cpl_timer retry;
	void (*flush_fn[CO_MAX_FLUSH_HOOKS])(void *arg);
	void *flush_arg[CO_MAX_FLUSH_HOOKS];
	uint32_t nflush;
	struct co_worker w[CHAN_MAX_WORKERS];
	uint32_t nworkers;
	uint32_t max_payload;
};

/* A token to send: text is copied into the record. */
struct co_tok {
	const char *text;
	uint32_t len;
	uint64_t created_ns;
};

/* backlog_bytes per worker, over the loop's region; registers the flush and
 * reset hooks with the loop, which stays owned by the caller and must
 * outlive o. Returns 0, or -1 with a message in err. */
int co_init(struct chan_out *o, struct cp_loop *l, size_t backlog_bytes, char *err, size_t errlen);
void co_free(struct chan_out *o);

/* Payload of a new record of type and len for worker w, or NULL when it is
 * dropped (counted). After filling it, co_end() with the bytes written. */
void *co_begin(struct chan_out *o, uint32_t w, uint16_t type, uint32_t len);
void co_end(struct chan_out *o, uint32_t w, uint32_t len);

/* Moves backlogs into the rings and publishes, after the flush hooks wrote
 * what they batched. */
void co_flush(struct chan_out *o);
/* fn(arg) runs at the start of every co_flush (once per turn, and whenever a
 * caller flushes). -1 when the table is full. */
int co_on_flush(struct chan_out *o, void (*fn)(void *arg), void *arg);
/* Forgets every backlog (the dataplane restarted: those records' conns are gone). */
void co_reset(struct chan_out *o);
size_t co_backlog_bytes(const struct chan_out *o, uint32_t w);

/* Builders. They return false when a record was dropped. */
bool co_tokens(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	       uint32_t first_seq, const struct co_tok *t, uint32_t n);
bool co_status(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	       const char *status);
bool co_usage(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	      uint32_t prompt_tokens, uint32_t completion_tokens, double cost_usd);
/* STATUS "streaming" with what a worker reports for the message if it has
 * to end it itself: the prompt's tokens and cost, the cost of each
 * completion token. */
struct co_terms {
	uint32_t prompt_tokens;
	double prompt_cost;
	double cost_per_token;
};
bool co_status_streaming(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
			 const struct co_terms *t);
/* code and message (NULL: none) go with status CHAN_DONE_ERROR. */
bool co_done(struct chan_out *o, struct chan_conn conn, const char *sid, const char *mid,
	     uint32_t status, uint32_t last_seq, const char *code, const char *message);

/* What a RESPONSE carries besides conn and req_id. */
struct co_resp {
	uint16_t status;
	uint8_t action;
	const char *session_id;        /* subscribe actions */
	const char *resume_message_id; /* subscribe actions, may be NULL */
	uint32_t resume_seq;
	const char *body;
	size_t body_len;
	const char *content_type; /* NULL: the dataplane's default */
	const char *header;       /* one extra "Name: value" line, or NULL */
	uint16_t header_tag;      /* the field `header` goes in; 0: CHAN_F_HEADER
				   * (CONTINUE: CHAN_F_BODY_MAX) */
};

/* Sends a response, split over several records (CHAN_RESP_MORE) when the
 * body is larger than one record carries. */
bool co_response(struct chan_out *o, struct chan_conn conn, uint32_t req_id, const struct co_resp *r);
/* One part of a streamed response: like co_response, with CHAN_RESP_MORE on
 * its last record too when `more` (the response goes on). */
bool co_response_part(struct chan_out *o, struct chan_conn conn, uint32_t req_id, const struct co_resp *r,
		      bool more);

/* Pushes a WebSocket text message to one conn (BROADCAST); the worker drops
 * it and closes the conn when more than max_pending bytes are unsent there.
 * False when the record was dropped or the text exceeds one record. */
bool co_broadcast(struct chan_out *o, struct chan_conn conn, uint32_t max_pending, const char *text,
		  size_t len);

#endif
