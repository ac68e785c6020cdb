/*
 * One scenario spread over several sluice-bench processes (--procs N):
 * every stream is a descriptor, and one process may hold fewer than the
 * hard RLIMIT_NOFILE, so 100,000 streams take several. The parent forks
 * after the scenario is parsed and the sessions are made; each child runs
 * a slice of the sessions (all the subscribers of a session stay in one
 * child, so its answers are counted whole) and writes its struct
 * sb_results into a shared mapping, which the parent merges into the one
 * report. Children meet at a barrier after the ramp and before every step,
 * so the steps are measured over the same seconds.
 */
#ifndef SB_PROCS_H
#define SB_PROCS_H

#include <stdbool.h>

#include "sb_conf.h"
#include "sb_report.h"

struct sb_procs;

/* One child's share of the scenario. */
struct sb_slice {
	struct sb_conf conf; /* connections, prompt_conns and prompt rates: this child's share */
	long sess_first;     /* its sessions: [sess_first, sess_first + nsess) */
	long nsess;
};

/* The shared mapping for n children; NULL on failure. */
struct sb_procs *sb_procs_create(int n);
/* Child i's share of c's streams over nsess sessions. */
void sb_procs_slice(const struct sb_conf *c, long nsess, int n, int i, struct sb_slice *out);
/* Forks the children. Returns the child's index (0..n-1) in a child, -1 in
 * the parent, -2 when a fork failed (the children started are waited for). */
int sb_procs_fork(struct sb_procs *p);
/* Child i's results, in the shared mapping. */
struct sb_results *sb_procs_results(struct sb_procs *p, int i);
/* A child's barrier: waits, calling pump(arg) (which must return within
 * milliseconds), until every child has arrived here, or timeout_s has passed
 * (a child that died). Returns false on the timeout. */
bool sb_procs_sync(struct sb_procs *p, void (*pump)(void *), void *arg, double timeout_s);
/* The parent: waits up to timeout_s for every child (printing the merged
 * progress line every second when c->progress), kills what is left, and
 * merges the children's results into out (conf and base are the caller's).
 * Returns 0, or -1 when a child failed or did not finish. */
int sb_procs_wait(struct sb_procs *p, const struct sb_conf *c, double timeout_s,
		  struct sb_results *out);
void sb_procs_destroy(struct sb_procs *p);

#endif
