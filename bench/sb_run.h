/*
 * The load generator of sluice-bench: one epoll loop over every stream
 * connection, the prompt connections and (target nchan) the publishers. It
 * opens the streams over the ramp, then runs each load step and counts into
 * that step's struct sb_step. Every run is bounded in time: a phase that
 * cannot complete ends at its deadline and counts what is missing.
 *
 * Nothing is allocated per token: connections and sessions are allocated at
 * create, a connection's partial-unit buffers once at most (sb_carry).
 */
#ifndef SB_RUN_H
#define SB_RUN_H

#include <stddef.h>

#include "sb_conf.h"
#include "sb_report.h"

struct sb_run;

/* sids: nsessions session ids (sluice and the peers: made by the caller;
 * nchan: channel names). auth: a full header line ("Authorization: ...\r\n")
 * or "". */
struct sb_run *sb_run_create(const struct sb_conf *c, char (*sids)[40], long nsessions,
			     const char *auth, struct sb_results *res, char *err, size_t errlen);
/* Opens every stream over the ramp (and subscribes it); returns how many
 * are open when all are, or at the deadline. */
long sb_run_open(struct sb_run *r);
/* One load step of c->duration_s at prompt_rate. */
void sb_run_step(struct sb_run *r, struct sb_step *st, double prompt_rate);
/* Serves the connections for up to ms milliseconds, outside any phase
 * (the --procs barrier: tokens that arrive then are checked, not counted). */
void sb_run_pump(struct sb_run *r, int ms);
/* Waits up to `seconds` for running answers; counts the ones left. */
void sb_run_drain(struct sb_run *r, double seconds);
void sb_run_destroy(struct sb_run *r);

#endif
