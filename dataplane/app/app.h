/*
 * The app layer of a worker: HTTP/1.1 connections, routing, SSE streams,
 * WebSocket sessions, the per-worker subscription table and the adaptive
 * batcher. It sits on the transport interface (transport.h) and on the
 * worker's services (worker.h), and never knows which transport it runs on.
 *
 * One app instance per worker; every call on the worker's thread.
 */
#ifndef SLUICE_APP_H
#define SLUICE_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "transport/transport.h"

struct worker;
struct app;

/* Creates the app for worker w; the upcalls the transport must be given. */
struct app *app_create(struct worker *w, char *err, size_t errlen);
const struct tp_upcalls *app_upcalls(void);
void app_destroy(struct app *a);

/* A record from control (c2d ring), already checked with chan_rec_valid(). */
void app_on_record(struct app *a, uint16_t type, const void *payload, uint32_t len);

/*
 * End of a loop turn: the batcher decides, per connection with held tokens,
 * whether to frame them now. `busy` is the worker's judgement of load this
 * turn (many records drained or a long turn). Tokens it keeps are guarded by
 * a worker timer at their max_delay deadline, so the loop never blocks past it.
 */
void app_end_of_turn(struct app *a, bool busy);

/*
 * Control attached or went away. On detach: requests waiting for control get
 * 503, running streams end with done status "interrupted". On attach with a
 * new epoch: every live subscription is re-announced (CHAN_REC_SUBSCRIBE).
 */
void app_control_changed(struct app *a, bool attached);

#endif
