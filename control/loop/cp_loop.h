/*
 * The control loop: one thread, one epoll set over the channel's control
 * doorbell, a timerfd armed for the earliest of (next token deadline, next
 * heartbeat, backlog retry) and a signalfd for SIGTERM/SIGINT.
 *
 * A turn: heartbeat when due, check the dataplane's epoch, drain every d2c
 * ring (bounded per ring), produce due tokens, flush the c2d rings (one
 * publish per worker). It sleeps only when every d2c ring stayed empty after
 * chan_prepare_sleep().
 */
#ifndef CONTROL_CP_LOOP_H
#define CONTROL_CP_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "api/api.h"
#include "sluice/chan.h"

#define CPL_HEARTBEAT_NS 100000000ull
/* Records taken from one ring per turn, so timers and other rings get a turn. */
#define CPL_DRAIN_BUDGET 1024u
/* Retry period while a c2d backlog waits for ring space (nobody rings for that). */
#define CPL_BACKLOG_RETRY_NS 1000000ull
/* The dataplane counts as gone after this long without a heartbeat (10 missed). */
#define CPL_PEER_TIMEOUT_NS 1000000000ull

/* Other readable fds the loop watches (store completions, admin socket,
 * password-hashing pool). The callback runs on the loop thread. */
#define CPL_MAX_WATCH 32
struct cpl_watch {
	int fd;
	void (*cb)(void *arg);
	void *arg;
};

struct cp_loop {
	struct chan_region *r;
	struct api *api;
	struct chan_out *out;
	int ep;
	int tfd;
	int sfd;
	uint32_t peer_epoch;
	bool peer_alive; /* last seen state, to log transitions only */
	uint64_t next_hb_ns;
	uint64_t armed_ns; /* current timerfd deadline, 0 when disarmed */
	bool stop;
	struct cpl_watch watch[CPL_MAX_WATCH];
	uint32_t nwatch;
};

/* Blocks SIGTERM/SIGINT for the calling thread and opens the fds. The region,
 * api and output stay owned by the caller. */
int cpl_init(struct cp_loop *l, struct chan_region *r, struct api *api, struct chan_out *out);
void cpl_free(struct cp_loop *l);
/* Watches fd for readability; cb runs on the loop thread each time it is
 * readable (level-triggered: cb must consume what made it readable).
 * Returns 0, or -1 when the table is full or epoll refuses. */
int cpl_add_fd(struct cp_loop *l, int fd, void (*cb)(void *arg), void *arg);
/* Stops watching fd (before closing it). */
void cpl_del_fd(struct cp_loop *l, int fd);
/* One turn; sleeps when allowed and may_block is true. Returns the number of
 * d2c records handled. */
uint32_t cpl_turn(struct cp_loop *l, bool may_block);
/* Turns until SIGTERM or SIGINT. */
int cpl_run(struct cp_loop *l);

#endif
