/*
 * Request handlers: the records that arrive from the dataplane (REQUEST,
 * SUBSCRIBE, UNSUBSCRIBE, CONN_CLOSED), routed to the chat layer, with JSON
 * bodies (jansson) and errors exactly as docs/api.md lists them.
 * The api owns the chat state; single-threaded on the control loop.
 */
#ifndef CONTROL_API_H
#define CONTROL_API_H

#include <stdint.h>

#include "chat/chat.h"

struct admin;
struct auth;

struct api_stats {
	uint64_t requests;
	uint64_t invalid_records;
	uint64_t reply_drops; /* responses that fitted neither ring nor backlog */
	uint64_t stale_requests; /* stamped with another control epoch: dropped */
};

struct api {
	const struct sluice_conf *conf;
	struct store *st;
	struct chan_out *out;
	struct chat chat;
	struct api_stats stats;
	/* The admin socket (control/admin), when it runs: STATS and CONNS
	 * records go there. Set by main after admin_init; NULL in tests. */
	struct admin *admin;
	/* Authentication (control/auth), set by main after auth_init; NULL
	 * only in routing unit tests, where every request acts as user "". */
	struct auth *auth;
	/* This control's epoch (chan_open bumped it); requests stamped with
	 * another one were meant for a previous control and are dropped, the
	 * worker answers them 503 itself. 0 in unit tests: accept all. */
	uint32_t cp_epoch;
};

/* conf, st and out stay owned by the caller and must outlive a. */
int api_init(struct api *a, const struct sluice_conf *conf, struct store *st, struct chan_out *out);
void api_free(struct api *a);

/* Handles one record read from a d2c ring. Invalid records are counted and dropped. */
void api_dispatch(struct api *a, uint16_t type, const void *payload, uint32_t len);

#endif
