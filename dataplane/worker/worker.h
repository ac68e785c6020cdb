/*
 * A dataplane worker: one thread pinned to one core, owning one transport
 * instance, one pair of channel rings, one timer wheel, one app and the
 * counters of both. Shared-nothing: the only data another thread touches is
 * the counters, which other workers read (never write) to render /metrics.
 *
 * The worker runs its app through struct host_app_ops and serves it through
 * struct host (worker/host.h); it knows nothing else of the app.
 *
 * Loop turn:
 *   now = clock; transport poll (rx, accepts, upcalls into the app);
 *   drain c2d ring -> on_record(); timers due -> callbacks;
 *   end_of_turn(busy) (batcher flush decisions); transport flush;
 *   publish d2c records; heartbeat/attach checks every 100 ms.
 * A poll-mode turn in which nothing happened (no event from the poll, no
 * record, no timer, no batch held, nothing run since the last flush) skips
 * end_of_turn and flush.
 * The worker blocks (kernel transport only) when nothing is pending, until
 * the next timer, a socket event or its channel doorbell.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/host.h"

struct chan_region;
struct sluice_conf;
struct tls_shared;

/*
 * Sets up conf->workers workers before any thread starts, all on the calling
 * thread: channel handles, timer wheel, the app (app->create) and the
 * transport (kernel or dpdk, plus the redirect listener when configured)
 * with app->upcalls, under the TLS layer (tls/tls.h) when `tls` is not NULL.
 * When listen port 0 is configured, worker 0 picks an ephemeral port and the
 * others share it. `app` and `tls` must outlive the workers. Returns 0, or -1
 * with a message in err (what was set up is torn down again).
 */
int workers_setup(const struct sluice_conf *conf, struct chan_region *chan,
		  const struct host_app_ops *app, struct tls_shared *tls, char *err, size_t errlen);
/* Runs worker i's loop on the calling thread until workers_stop(); then
 * closes its connections (on_close reaches the app) and destroys its app.
 * Returns 0, or -1 after a fatal transport error (then it calls workers_stop()). */
int worker_run(uint32_t i);
/* Asks every worker to finish its turn and leave worker_run(); async-signal-safe. */
void workers_stop(void);
bool workers_stopping(void);
/*
 * A configuration reload, between the main thread and the workers: main
 * publishes c (which must stay valid until every worker has moved past it;
 * workers_conf_settled tells) and each worker switches to it at the start
 * of its next loop turn. The app asks for a reload through its host (on
 * control's ADMIN RELOAD); main takes the request on its next tick.
 */
void workers_set_conf(const struct sluice_conf *c);
bool workers_conf_settled(const struct sluice_conf *c);
bool workers_take_reload(void);
/* Drain: each worker's app refuses new connections and ends its open ones
 * in their protocols once idle (now: at once), at the worker's next turn. */
void workers_drain(bool now);
/* Every worker has begun the drain and has no connection left. */
bool workers_drained(void);
/* Frees all workers; only after every worker_run() has returned (or none started). */
void workers_teardown(void);
/* Workers set up now (0 before workers_setup() and after workers_teardown()). */
uint32_t worker_count(void);

#endif
