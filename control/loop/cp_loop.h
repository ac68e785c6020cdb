/*
 * The control loop: one thread, one epoll set. It knows the channel (it
 * drains the d2c rings, heartbeats, watches the dataplane's epoch) and
 * nothing above it: the layers of sluice-control register with it the way
 * Redis's server registers with ae.c.
 *
 *   record handlers  one per channel record type (d2c records, validated with
 *                    chan_rec_valid before the handler sees them)
 *   fds              readable/writable interest and a callback
 *   timers           intrusive one-shot deadlines (a min-heap)
 *   before-sleep     hooks run once per turn, after the turn's work and
 *                    before the loop waits (flush outputs, end snapshots)
 *   peer reset       hooks run when a new dataplane incarnation attached
 *
 * A turn: heartbeat when due, check the dataplane's epoch, drain every d2c
 * ring (bounded per ring), run due timers (bounded: a timer re-armed into the
 * past waits for the next turn), run the before-sleep hooks, then wait for
 * fds — without blocking while work is pending, else until the earliest
 * timer or heartbeat. It sleeps only when every d2c ring stayed empty after
 * chan_prepare_sleep().
 *
 * Single-threaded: every function and callback runs on the loop thread;
 * callbacks may register, re-arm and remove anything, their own entry too.
 */
#ifndef CONTROL_CP_LOOP_H
#define CONTROL_CP_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop/timer_heap.h"
#include "sluice/chan.h"

#define CPL_HEARTBEAT_NS 100000000ull
/* Records taken from one ring per turn, so timers and other rings get a turn. */
#define CPL_DRAIN_BUDGET 1024u
/* The dataplane counts as gone after this long without a heartbeat (10 missed). */
#define CPL_PEER_TIMEOUT_NS 1000000000ull
/* After the first SIGTERM control serves this long with its heartbeat
 * withdrawn: three dataplane checks, so every worker stops forwarding
 * before control stops answering (cpl_run). */
#define CPL_WITHDRAW_NS (3u * CPL_HEARTBEAT_NS)
/* Hooks of each kind; a fixed table, the layers register at start. */
#define CPL_MAX_HOOKS 16u

/* fd interest and readiness. */
#define CPL_READ 1u
#define CPL_WRITE 2u
#define CPL_ERROR 4u /* reported only: error or hang-up */

struct cp_loop;

typedef void (*cpl_record_fn)(void *arg, uint16_t type, const void *payload, uint32_t len);
typedef void (*cpl_fd_fn)(void *arg, int fd, uint32_t events);
typedef void (*cpl_fn)(void *arg);
/* now_ns: the time the loop judged the timer due at (tests pass their own). */
typedef void (*cpl_timer_fn)(void *arg, uint64_t now_ns);

/* A timer: embed it, cpl_timer_init once, arm and cancel freely. */
struct cpl_timer {
	struct th_node node; /* first: the heap hands back this pointer */
	cpl_timer_fn cb;
	void *arg;
};

struct cpl_stats {
	uint64_t turns;
	uint64_t records;
	uint64_t invalid_records; /* failed chan_rec_valid */
	uint64_t unhandled_records; /* valid, but no handler registered for the type */
	uint64_t timer_failures;  /* cpl_timer_arm could not grow the heap */
};

/*
 * Blocks SIGTERM/SIGINT/SIGHUP for the calling thread (the first two end
 * cpl_run through a signalfd, SIGHUP runs the cpl_on_hangup hook) and opens the loop over region r, which stays owned by the
 * caller and must outlive the loop. Returns NULL with a message in err.
 */
struct cp_loop *cpl_create(struct chan_region *r, char *err, size_t errlen);
/* Closes the loop's fds; registered fds stay open (their owners close them). */
void cpl_destroy(struct cp_loop *l);

/* The region the loop drains, and this control's epoch (stamped on the
 * requests meant for it). */
struct chan_region *cpl_region(const struct cp_loop *l);
uint32_t cpl_epoch(const struct cp_loop *l);
const struct cpl_stats *cpl_stats(const struct cp_loop *l);
/* The dataplane as the last heartbeat check saw it, or, when that check
 * found none, as its heartbeat in the region says now. */
bool cpl_peer_alive(const struct cp_loop *l);
uint32_t cpl_peer_epoch(const struct cp_loop *l);

/* Hands every valid d2c record of `type` to fn. One handler per type;
 * -1 when the type already has one or is out of range. fn NULL removes
 * the handler (records of the type are then counted as unhandled). */
int cpl_on_record(struct cp_loop *l, uint16_t type, cpl_record_fn fn, void *arg);
/* fn runs when a new dataplane incarnation attached: the old one's
 * connections, and every record still queued for them, are gone. Hooks run
 * in registration order. -1 when the table is full. */
int cpl_on_peer_reset(struct cp_loop *l, cpl_fn fn, void *arg);
/* fn runs on the loop for each SIGHUP (one hook; NULL: SIGHUP is logged
 * and ignored). */
void cpl_on_hangup(struct cp_loop *l, cpl_fn fn, void *arg);
/* fn runs once per turn before the loop waits. -1 when the table is full. */
int cpl_before_sleep(struct cp_loop *l, cpl_fn fn, void *arg);

/* Watches fd for `events` (CPL_READ | CPL_WRITE; level-triggered: the
 * callback must consume what made it ready). fn gets the ready events,
 * CPL_ERROR included. -1 (errno set) when fd is watched already or epoll
 * refuses. */
int cpl_add_fd(struct cp_loop *l, int fd, uint32_t events, cpl_fd_fn fn, void *arg);
/* Changes the interest of a watched fd; -1 when it is not watched. */
int cpl_mod_fd(struct cp_loop *l, int fd, uint32_t events);
/* Stops watching fd (before it is closed); a no-op when not watched. An
 * event of the current batch for it is not delivered. */
void cpl_del_fd(struct cp_loop *l, int fd);

void cpl_timer_init(struct cpl_timer *t, cpl_timer_fn cb, void *arg);
/* Arms t at deadline_ns (CLOCK_MONOTONIC, sluice_now_ns), or moves it there.
 * Returns -1 only when the heap cannot grow (counted in timer_failures). */
int cpl_timer_arm(struct cp_loop *l, struct cpl_timer *t, uint64_t deadline_ns);
void cpl_timer_cancel(struct cp_loop *l, struct cpl_timer *t);
static inline bool cpl_timer_armed(const struct cpl_timer *t)
{
	return th_queued(&t->node);
}

/* Runs the timers due at now_ns (a turn passes the clock; tests may pass
 * any time) and returns the earliest remaining deadline, UINT64_MAX when
 * none. The budget is the heap's size on entry: a timer re-armed at or
 * before now_ns by its callback waits for the next call. */
uint64_t cpl_run_due(struct cp_loop *l, uint64_t now_ns);
/* The time the loop is acting at: the now_ns of the timers being run, else
 * the clock read when the turn (or the wait's callbacks) began. Arm timers
 * relative to it, so a test driving cpl_run_due with its own times stays
 * consistent. */
uint64_t cpl_now(const struct cp_loop *l);
/* The earliest armed deadline, UINT64_MAX when none. */
uint64_t cpl_next_deadline(const struct cp_loop *l);
/* Hands one d2c record to its handler as a drained record would be:
 * validated, routed by type, counted. */
void cpl_dispatch(struct cp_loop *l, uint16_t type, const void *payload, uint32_t len);

/* One turn; sleeps when allowed and may_block is true. Returns the number
 * of d2c records handled. */
uint32_t cpl_turn(struct cp_loop *l, bool may_block);
/* Turns until SIGTERM, SIGINT (each withdraws first, see cpl_on_signal;
 * a second one ends at once) or cpl_stop. */
int cpl_run(struct cp_loop *l);
/* Makes cpl_run return after the current turn. */
void cpl_stop(struct cp_loop *l);
bool cpl_stopping(const struct cp_loop *l);

#endif
