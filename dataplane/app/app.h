/*
 * The app layer of a worker: HTTP/1.1 connections, routing, SSE streams,
 * WebSocket sessions, the per-worker subscription table and the adaptive
 * batcher. It sits on the transport interface (transport.h) and on the
 * worker's host interface (worker/host.h), and never knows which transport
 * or which worker it runs on.
 *
 * One app instance per worker; every call on the worker's thread. What the
 * hooks do:
 *   on_record        a record from control (c2d ring), already checked with
 *                    chan_rec_valid();
 *   end_of_turn      the batcher decides, per connection with held tokens,
 *                    whether to frame them now; tokens it keeps are guarded
 *                    by a timer at their max_delay deadline, so the loop never
 *                    blocks past it;
 *   control_changed  on detach, requests waiting for control get 503 and
 *                    running streams end with done status "interrupted"; on
 *                    attach with a new epoch, WebSockets are authorised again
 *                    and every live subscription is re-announced;
 *   drain            SIGTERM: no new conns, each open one ended in its
 *                    protocol once idle (app_drain.c).
 */
#ifndef SLUICE_APP_H
#define SLUICE_APP_H

#include "worker/host.h"

/* What main.c hands to workers_setup(). */
extern const struct host_app_ops app_ops;

#endif
