/*
 * What one sluice-bench run measured, and its three renderings: the human
 * table (stdout), JSON (--json) and a PNG of latency percentiles and CPU
 * against offered load (--plot, drawn by gnuplot).
 */
#ifndef SB_REPORT_H
#define SB_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "sb_conf.h"
#include "sb_hist.h"
#include "sb_proc.h"

enum sb_err {
	SB_ERR_CONNECT = 0, /* connect() or the socket failed */
	SB_ERR_STATUS,      /* an unexpected HTTP status (stream, upgrade) */
	SB_ERR_CLOSED,      /* the server closed a stream */
	SB_ERR_PROTOCOL,    /* bytes that do not parse */
	SB_ERR_SEQ,         /* a token seq that does not follow the last one */
	SB_ERR_MISSING,     /* a complete answer with fewer or more tokens than answer_tokens */
	SB_ERR_EVENT,       /* an error event or message from the server */
	SB_ERR_PROMPT,      /* a prompt refused (status other than 2xx) */
	SB_ERR_NO_IDLE,     /* a prompt was due and every session was still answering */
	SB_ERR_WRITE,       /* a request did not fit the socket at once */
	SB_ERR_UNFINISHED,  /* answers still running when the run ended */
	SB_ERR_MAX
};

extern const char *const sb_err_names[SB_ERR_MAX];

struct sb_step {
	double prompt_rate;   /* offered new prompts/s (0: back to back) */
	double offered_tok_s; /* what the prompts ask for: answers running x rate x subscribers */
	double seconds;
	uint64_t prompts, tokens, frames, dones;
	struct sb_hist ttft;  /* prompt sent -> first token, per subscriber */
	struct sb_hist gap;   /* between two token frames of one stream */
	struct sb_hist delay; /* token creation stamp -> arrival */
	struct sb_hist first; /* the same for each answer's first token: sluice's own share of TTFT */
	struct sb_proc_sample p0, p1;
	double bench_cpu_s;   /* sluice-bench's own CPU time in the step: near 1 per second, it is the limit */
	uint64_t errors[SB_ERR_MAX];
};

struct sb_results {
	const struct sb_conf *conf;
	long conns_open;    /* streams open and subscribed when measuring began */
	long open_now;      /* streams open and subscribed right now (the --procs progress line) */
	double ramp_took_s;
	struct sb_proc_sample base, idle, streaming; /* before connecting, all open, end of the last step */
	int npids;
	int nsteps;
	struct sb_step steps[SB_STEPS_MAX];
	uint64_t errors[SB_ERR_MAX]; /* outside the steps (ramp, drain) */
};

/* Adds one load process's results to dst (--procs, sb_procs.h); first:
 * dst is empty and takes src's steps as they are. Counters and histograms
 * add up; a step's seconds and the ramp take the longest; the server's
 * CPU is read from the widest interval any process sampled. dst's conf,
 * base and idle samples are the caller's. */
void sb_results_add(struct sb_results *dst, const struct sb_results *src, bool first);
/* The once-a-second line on stderr (--progress). */
void sb_report_progress(FILE *f, const char *phase, double t, long open, long total, double tok_s,
			double p99_ms, uint64_t errors);
void sb_report_table(FILE *f, const struct sb_results *r);
int sb_report_json(const char *path, const struct sb_results *r);
/* Runs gnuplot; returns 0, or -1 with the reason on stderr. */
int sb_report_plot(const char *path, const struct sb_results *r);

#endif
