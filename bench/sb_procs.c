/* Several load processes for one scenario (see sb_procs.h). */
#include "sb_procs.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice/common.h"

/* The mapping every process shares: the barrier's count and one results
 * block per child (about 1.2 MiB each, mostly histograms). */
struct shared {
	atomic_uint arrived; /* barrier arrivals over the run: the k-th barrier ends at k x n */
	struct sb_results res[];
};

struct sb_procs {
	int n;
	int self;      /* this process's child index; -1 in the parent */
	unsigned gen;  /* barriers this child has passed */
	pid_t pids[SB_PROCS_MAX];
	struct shared *sh;
	size_t sh_len;
};

struct sb_procs *sb_procs_create(int n)
{
	struct sb_procs *p;

	if (n < 1 || n > SB_PROCS_MAX)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->n = n;
	p->self = -1;
	p->sh_len = sizeof(struct shared) + (size_t)n * sizeof(struct sb_results);
	p->sh = mmap(NULL, p->sh_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p->sh == MAP_FAILED) {
		free(p);
		return NULL;
	}
	atomic_init(&p->sh->arrived, 0);
	return p;
}

void sb_procs_slice(const struct sb_conf *c, long nsess, int n, int i, struct sb_slice *out)
{
	long q = c->connections / nsess, rem = c->connections % nsess, conns = 0;

	out->conf = *c;
	out->sess_first = nsess * i / n;
	out->nsess = nsess * (i + 1) / n - out->sess_first;
	/* Stream k of the whole run belongs to session k % nsess: session j
	 * has q streams, one more when j < rem. */
	for (long j = out->sess_first; j < out->sess_first + out->nsess; j++)
		conns += q + (j < rem);
	out->conf.connections = conns;
	out->conf.prompt_conns = c->prompt_conns ? (c->prompt_conns + n - 1) / n : 0;
	for (int s = 0; s < c->nsteps; s++)
		out->conf.prompt_rates[s] = c->prompt_rates[s] / n;
	/* The parent prints the merged progress line. */
	out->conf.progress = false;
}

int sb_procs_fork(struct sb_procs *p)
{
	for (int i = 0; i < p->n; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			p->self = i;
			return i;
		}
		if (pid < 0) {
			for (int j = 0; j < i; j++)
				kill(p->pids[j], SIGKILL);
			for (int j = 0; j < i; j++)
				waitpid(p->pids[j], NULL, 0);
			return -2;
		}
		p->pids[i] = pid;
	}
	return -1;
}

struct sb_results *sb_procs_results(struct sb_procs *p, int i)
{
	return &p->sh->res[i];
}

bool sb_procs_sync(struct sb_procs *p, void (*pump)(void *), void *arg, double timeout_s)
{
	uint64_t end = sluice_now_ns() + (uint64_t)(timeout_s * 1e9);
	unsigned want = ++p->gen * (unsigned)p->n;

	atomic_fetch_add(&p->sh->arrived, 1);
	while (atomic_load(&p->sh->arrived) < want) {
		if (sluice_now_ns() >= end)
			return false;
		pump(arg);
	}
	return true;
}

/* The merged progress line: open streams, tokens/s since the last line,
 * the p99 delay of the step child 0 is in, every error so far. */
static void progress(struct sb_procs *p, const struct sb_conf *c, double t, uint64_t *last_tok,
		     double *last_t)
{
	static struct sb_hist delay;
	uint64_t tok = 0, errs = 0;
	long open = 0;
	int cur = p->sh->res[0].nsteps < c->nsteps ? p->sh->res[0].nsteps : c->nsteps - 1;

	sb_hist_reset(&delay);
	for (int i = 0; i < p->n; i++) {
		const struct sb_results *r = &p->sh->res[i];

		open += r->open_now;
		for (int e = 0; e < SB_ERR_MAX; e++)
			errs += r->errors[e];
		for (int s = 0; s < c->nsteps; s++) {
			tok += r->steps[s].tokens;
			for (int e = 0; e < SB_ERR_MAX; e++)
				errs += r->steps[s].errors[e];
		}
		sb_hist_merge(&delay, &r->steps[cur].delay);
	}
	sb_report_progress(stderr, "all", t, open, c->connections,
			   t > *last_t ? (double)(tok - *last_tok) / (t - *last_t) : 0.0,
			   (double)sb_hist_quantile(&delay, 0.99) / 1e6, errs);
	*last_tok = tok;
	*last_t = t;
}

int sb_procs_wait(struct sb_procs *p, const struct sb_conf *c, double timeout_s,
		  struct sb_results *out)
{
	uint64_t t0 = sluice_now_ns(), end = t0 + (uint64_t)(timeout_s * 1e9), next = t0 + 1000000000ull;
	uint64_t last_tok = 0;
	double last_t = 0;
	int left = p->n, rc = 0;
	struct timespec tick = { .tv_nsec = 50 * 1000000L };

	while (left > 0 && sluice_now_ns() < end) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);

		if (pid > 0) {
			left--;
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				fprintf(stderr, "sluice-bench: load process %d failed (status %#x)\n", (int)pid, st);
				rc = -1;
			}
			continue;
		}
		if (pid < 0 && errno != EINTR)
			break;
		if (c->progress && sluice_now_ns() >= next) {
			progress(p, c, (double)(sluice_now_ns() - t0) / 1e9, &last_tok, &last_t);
			next += 1000000000ull;
		}
		nanosleep(&tick, NULL);
	}
	if (left > 0) {
		fprintf(stderr, "sluice-bench: %d load process(es) still running after %.0f s: killed\n", left,
			timeout_s);
		for (int i = 0; i < p->n; i++)
			kill(p->pids[i], SIGKILL);
		while (waitpid(-1, NULL, 0) > 0)
			;
		rc = -1;
	}
	for (int i = 0; i < p->n; i++)
		sb_results_add(out, &p->sh->res[i], i == 0);
	return rc;
}

void sb_procs_destroy(struct sb_procs *p)
{
	if (!p)
		return;
	munmap(p->sh, p->sh_len);
	free(p);
}
