/*
 * A dataplane worker: one thread pinned to one core, owning one transport
 * instance, one pair of channel rings, one timer wheel, one app instance and
 * its own counters. Shared-nothing: the only data another thread touches is
 * the counters, which other workers read (never write) to render /metrics.
 *
 * Loop turn:
 *   now = clock; transport poll (rx, accepts, upcalls into the app);
 *   drain c2d ring -> app_on_record(); timers due -> callbacks;
 *   app_end_of_turn(busy) (batcher flush decisions); transport flush;
 *   publish d2c records; heartbeat/attach checks every 100 ms.
 * The worker blocks (kernel transport only) when nothing is pending, until
 * the next timer, a socket event or its channel doorbell.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/common.h"
#include "worker/timer_wheel.h"

struct worker;
struct sluice_conf;
struct tp;

/* ---- timers (hierarchical wheel, 1 ms resolution, per worker) ---------- */

/* Arms (or re-arms) t to fire at or after deadline_ns (within 1 ms). */
void worker_timer_arm(struct worker *w, struct tw_timer *t, uint64_t deadline_ns);
void worker_timer_cancel(struct worker *w, struct tw_timer *t);

/* ---- counters ------------------------------------------------------------ */

/* Upper bounds (µs) of the added-delay histogram buckets; a last +Inf bucket follows. */
#define DP_DELAY_BUCKETS 12
extern const uint32_t dp_delay_bounds_us[DP_DELAY_BUCKETS];

struct dp_stats {
	uint64_t conns_accepted;
	uint64_t conns_closed;
	uint64_t conns_refused;       /* over max_conns */
	uint64_t http_requests;
	uint64_t http_responses[6];   /* by class: [1]=1xx .. [5]=5xx */
	uint64_t ws_upgrades;
	uint64_t ws_messages_in;
	uint64_t ws_closes_sent;
	uint64_t sse_streams;
	uint64_t tokens_in;           /* tokens received from control (per subscriber) */
	uint64_t tokens_out;          /* tokens written into frames */
	uint64_t frames_out;          /* token frames (WS messages / SSE events) */
	uint64_t bytes_out;
	uint64_t pending_bytes;       /* gauge: bytes held by the batcher + tx queues */
	uint64_t slow_consumer_closes;
	uint64_t chan_records_in;
	uint64_t chan_records_out;
	uint64_t chan_full;           /* d2c reserve refused -> 503 */
	uint64_t chan_bad_records;    /* malformed records dropped */
	uint64_t stale_records;       /* addressed to a closed conn (generation) */
	uint64_t loop_turns;
	uint64_t busy_turns;
	/* batching-added delay: token arrival at the worker -> framed */
	uint64_t delay_hist[DP_DELAY_BUCKETS + 1];
	uint64_t delay_sum_ns;
	/* end-to-end: token created by the backend -> framed */
	uint64_t e2e_hist[DP_DELAY_BUCKETS + 1];
	uint64_t e2e_sum_ns;
	uint64_t sse_active;          /* gauge: SSE streams open */
	uint64_t ws_active;           /* gauge: WebSocket conns open (after 101) */
	uint64_t kicks;               /* conns closed on control's KICK */
	uint64_t ws_auth_refused;     /* upgrades or re-checks control refused */
};

/* Single-writer counters: the owning worker updates with plain relaxed
 * load+store (no locked instruction); readers use DP_STAT_GET. */
#define DP_STAT_ADD(s, field, n) \
	__atomic_store_n(&(s)->field, __atomic_load_n(&(s)->field, __ATOMIC_RELAXED) + (uint64_t)(n), __ATOMIC_RELAXED)
#define DP_STAT_SUB(s, field, n) \
	__atomic_store_n(&(s)->field, __atomic_load_n(&(s)->field, __ATOMIC_RELAXED) - (uint64_t)(n), __ATOMIC_RELAXED)
#define DP_STAT_GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/* Records an added-delay sample in the given histogram (delay_hist or e2e_hist). */
void dp_stats_delay(uint64_t *hist, uint64_t *sum_ns, uint64_t delay_ns);

/* ---- services the worker gives its app ---------------------------------- */

uint32_t worker_id(const struct worker *w);
/* Time at the start of this loop turn (sluice_now_ns()). */
uint64_t worker_now(const struct worker *w);
const struct sluice_conf *worker_conf(const struct worker *w);
struct dp_stats *worker_stats(struct worker *w);
struct tp *worker_tp(struct worker *w);
/* True while control's heartbeat is fresh. */
bool worker_control_attached(const struct worker *w);
/* Control's epoch as last seen by this worker (stamped on requests). */
uint32_t worker_control_epoch(const struct worker *w);
/* This dataplane's attach epoch (seed for connection generations). */
uint32_t worker_epoch(const struct worker *w);

/* A d2c record: reserve, write the payload, commit (len may shrink). Returns
 * NULL when the ring is full; the caller answers 503 and counts chan_full.
 * Records are published at the end of the loop turn. */
void *worker_rec_reserve(struct worker *w, uint16_t type, uint32_t len);
void worker_rec_commit(struct worker *w, uint32_t len);
/* Largest payload a d2c record may have. */
uint32_t worker_rec_max(const struct worker *w);

/* All workers of this process (for /metrics). */
uint32_t worker_count(void);
const struct dp_stats *worker_stats_of(uint32_t i);

/* ---- lifecycle (main.c) --------------------------------------------------- */

struct chan_region;

/*
 * Sets up conf->workers workers before any thread starts: channel handles,
 * timer wheel, app (app_create) and kernel transport, all on the calling
 * thread. When listen port 0 is configured, worker 0 picks an ephemeral port
 * and the others share it. Returns 0, or -1 with a message in err (what was
 * set up is torn down again).
 */
int workers_setup(const struct sluice_conf *conf, struct chan_region *chan, char *err, size_t errlen);
/* Runs worker i's loop on the calling thread until workers_stop(); then
 * closes its connections (on_close reaches the app) and destroys its app.
 * Returns 0, or -1 after a fatal transport error (then it calls workers_stop()). */
int worker_run(uint32_t i);
/* Asks every worker to finish its turn and leave worker_run(); async-signal-safe. */
void workers_stop(void);
bool workers_stopping(void);
/* Frees all workers; only after every worker_run() has returned (or none started). */
void workers_teardown(void);

#endif
