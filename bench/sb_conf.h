/*
 * A sluice-bench scenario: what load to offer to which server and how to
 * measure it. One table of keys serves the scenario files
 * (bench/scenarios/NAME.conf, `key = value` lines, `#` comments) and the
 * command line (`--key value` overrides the file); `sluice-bench --help`
 * prints it.
 */
#ifndef SB_CONF_H
#define SB_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SB_STEPS_MAX 16
#define SB_SRC_MAX 64
#define SB_PROCS_MAX 16

enum sb_target { SB_TARGET_SLUICE = 0, SB_TARGET_PEER, SB_TARGET_NCHAN };
enum sb_proto { SB_PROTO_SSE = 0, SB_PROTO_WS, SB_PROTO_OPENAI };

struct sb_conf {
	char target_s[16];
	char protocol_s[16];
	enum sb_target target;
	enum sb_proto proto;
	char host[64];
	long port;
	char name[64];        /* label in reports */
	long connections;     /* stream connections (subscribers, or OpenAI requests in flight) */
	long subscribers;     /* per session (sse, ws) */
	char prompt_rate_s[256]; /* new prompts per second, all sessions; a list = load steps; 0 = back to back */
	double prompt_rates[SB_STEPS_MAX];
	int nsteps;
	long answer_tokens;   /* the synthetic backend's answer length */
	long ttft_ms;         /* its time to first token */
	long token_rate;      /* its tokens per second per answer */
	double duration_s;    /* measured time per step */
	double ramp_s;        /* time to open every connection */
	double drain_s;       /* after the last step: how long to wait for running answers */
	char src[512];        /* client addresses: CIDRs or addresses, comma separated */
	char model[64];
	char user[64];
	char password[128];
	char token[128];      /* bearer token or API key instead of user/password */
	bool timing;          /* ask for creation stamps (X-Sluice-Timing: 1) */
	char pids_s[128];     /* server pids whose CPU and memory count, comma separated */
	char json[256];       /* write the results as JSON here */
	char plot[256];       /* draw a PNG here (gnuplot) */
	bool progress;
	long prompt_conns;    /* keep-alive connections that post prompts */
	char text[64];        /* token text the bench publishes (target nchan) */
	long procs;           /* load processes sharing the streams (sb_procs.h) */
};

/* Defaults, then the scenario file given by --scenario (if any), then the
 * other flags. Returns 0, 1 for --help (printed), -1 with a message in err. */
int sb_conf_load(struct sb_conf *c, int argc, char **argv, char *err, size_t errlen);
void sb_conf_usage(FILE *f);

#endif
