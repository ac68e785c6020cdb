/*
 * The contract between a worker and the app it runs, both ways. The worker
 * knows its app only by struct host_app_ops, which main.c hands to
 * workers_setup(); the app knows its worker only by the struct host it gets
 * at create. Neither calls the other by name, so each can be driven by a
 * small double in its tests.
 *
 * Ownership: the worker owns its struct host, its counters (host_stats) and
 * the memory of the app's counters (app_stats). All of them live from
 * workers_setup() to workers_teardown(), after every worker thread has
 * returned, so a peer reading them for /metrics never touches a destroyed
 * app. The app owns what create() returned until destroy().
 *
 * Threading: every call either way happens on the worker's thread. Other
 * workers read only the counters, through peer().
 */
#ifndef SLUICE_HOST_H
#define SLUICE_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/common.h"
#include "transport/transport.h"
#include "worker/dp_stat.h"

struct sluice_conf;
struct tw_wheel;

/* The worker's own counters: the loop and its channel rings. */
struct host_stats {
	uint64_t chan_records_in;
	uint64_t chan_records_out;
	uint64_t chan_full;        /* d2c records the app needed and did not get */
	uint64_t chan_bad_records; /* malformed records from control, dropped */
	uint64_t loop_turns;
	uint64_t busy_turns;
};

struct host {
	/* Set before create(), constant afterwards (conf: until a reload). */
	uint32_t id;
	uint32_t epoch;           /* this dataplane's attach epoch (seeds conn generations) */
	uint32_t rec_max;         /* largest payload a d2c record may have */
	/* The configuration; a reload replaces it between two loop turns
	 * (then conf_changed runs) with one whose restart keys are the same. */
	const struct sluice_conf *conf;
	/* The worker's timer wheel: the app arms and cancels its own timers on
	 * it (tw_arm, tw_cancel); the worker runs it once per turn. */
	struct tw_wheel *wheel;
	struct host_stats *stats;
	void *app_stats;          /* host_app_ops.stats_size bytes, zeroed */
	/* NULL inside create(): the transport is made after the app, since it
	 * needs the app's upcalls. */
	struct tp *tp;
	/* Kept by the worker; the app reads `now` through host_now(). */
	uint64_t now;             /* start of this loop turn (sluice_now_ns()) */
	bool now_stale;           /* the loop blocked since `now` was taken */
	/* Set by the app while it holds output that end_of_turn decides on
	 * (batches): a poll-mode worker then runs end_of_turn every turn, not
	 * only in turns where something happened. */
	bool holding;
	bool attached;            /* control attached: requests are forwarded */

	/* A d2c record: reserve, write the payload, commit (len may shrink).
	 * NULL when the ring is full: the caller answers 503 and counts it with
	 * host_count_ring_full(). Records go out at the end of the loop turn. */
	void *(*rec_reserve)(struct host *h, uint16_t type, uint32_t len);
	void (*rec_commit)(struct host *h, uint32_t len);
	/* Control's epoch, read live: a request sent right after a new control
	 * attached must carry its epoch, or that control would drop it. */
	uint32_t (*control_epoch)(const struct host *h);
	/* Worker i's host (any i below the number of workers, h itself
	 * included), NULL beyond: /metrics sums every worker's counters. */
	const struct host *(*peer)(const struct host *h, uint32_t i);
	/* Asks the dataplane's main thread to read the configuration file
	 * again (control's ADMIN RELOAD); NULL in hosts that cannot. */
	void (*request_reload)(struct host *h);
	/* Whether a request sent now would be served (/readyz): control
	 * serves by a live check (its heartbeat, and its process by the
	 * kernel's word), and every worker forwards to that incarnation. A
	 * syscall: not for per-request paths. */
	bool (*serving)(struct host *h);
};

/*
 * The time of this loop turn. When the turn began with a blocking wait, the
 * first call after it re-reads the clock: upcalls for the events that ended
 * the wait see their own time, not the one from before a 100 ms sleep, and
 * arm no timer early.
 */
static inline uint64_t host_now(struct host *h)
{
	if (unlikely(h->now_stale)) {
		h->now = sluice_now_ns();
		h->now_stale = false;
	}
	return h->now;
}

/* The app's verdicts that the worker's counters keep: a record from control
 * it found malformed, and a d2c record it needed and could not get. */
static inline void host_count_bad_record(struct host *h)
{
	DP_STAT_ADD(h->stats, chan_bad_records, 1);
}

static inline void host_count_ring_full(struct host *h)
{
	DP_STAT_ADD(h->stats, chan_full, 1);
}

/* What a worker runs: its app. `app` is what create() returned. */
struct host_app_ops {
	/* Bytes of counters the worker keeps for the app (host.app_stats). */
	size_t stats_size;
	/* The upcalls the worker's transport is created with. */
	const struct tp_upcalls *upcalls;
	/* Returns the app, or NULL with a message in err. */
	void *(*create)(struct host *h, char *err, size_t errlen);
	/* After the transport is gone (every conn had its on_close). */
	void (*destroy)(void *app);
	/* A record from control, already checked with chan_rec_valid(). */
	void (*on_record)(void *app, uint16_t type, const void *payload, uint32_t len);
	/* End of a loop turn, before the transport's flush; `busy` is the
	 * worker's judgement of load (many records drained or a long turn). */
	void (*end_of_turn)(void *app, bool busy);
	/* Control attached, went away, or came back as a new epoch (one that
	 * withdrew counts as attached until it closes: its last records come). */
	void (*control_changed)(void *app, bool attached);
	/* host.conf was replaced by a reload: take its live keys. */
	void (*conf_changed)(void *app);
	/* Drain: refuse new connections and end each open one in its protocol
	 * once nothing runs on it; `now` (the drain timeout) ends all of them. */
	void (*drain)(void *app, bool now);
	/* Connections open now (the drain is over at 0). */
	uint64_t (*open_conns)(const void *app);
};

#endif
