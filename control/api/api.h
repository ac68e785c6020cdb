/*
 * Request handlers: the records the dataplane sends about clients (REQUEST,
 * SUBSCRIBE, UNSUBSCRIBE, CONN_CLOSED), registered with the control loop
 * and routed to the chat and auth layers, with JSON bodies (jansson) and
 * errors exactly as docs/api.md lists them. Every request is authenticated
 * first (api_auth.c); there is no unauthenticated mode.
 *
 * Handler shape: each handler answers exactly once, through api_send_json /
 * api_error (a RESPONSE record), either at once or from the completion of
 * the store write it started; internal failures answer 500 `internal` and
 * log. Single-threaded on the control loop.
 */
#ifndef CONTROL_API_H
#define CONTROL_API_H

#include <stddef.h>
#include <stdint.h>

#include "chat/chat.h"

struct auth;
struct limits;

struct api_stats {
	uint64_t requests;
	uint64_t invalid_records;
	uint64_t reply_drops; /* responses that fitted neither ring nor backlog */
	uint64_t stale_requests; /* stamped with another control epoch: dropped */
};

/* What the api is built on; every pointer stays owned by the caller and
 * must outlive the api. */
struct api_deps {
	const struct sluice_conf *conf;
	struct cp_loop *loop;
	struct store *st;
	struct chan_out *out;
	struct chat *chat;
	struct auth *auth;
	struct limits *limits;
};

struct api {
	const struct sluice_conf *conf;
	struct store *st;
	struct chan_out *out;
	struct chat *chat;
	struct auth *auth;
	struct limits *limits;
	struct api_stats stats;
	/* This control's epoch (chan_open bumped it); requests stamped with
	 * another one were meant for a previous control and are dropped, the
	 * worker answers them 503 itself. */
	uint32_t cp_epoch;
};

/* Registers the record handlers with d->loop and the store-completion hooks
 * with d->chat. Returns 0, or -1 with a message in err. */
int api_init(struct api *a, const struct api_deps *d, char *err, size_t errlen);

#endif
