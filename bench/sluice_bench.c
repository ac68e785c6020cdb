/*
 * sluice-bench: offers a scenario's load to sluice (or to a peer server,
 * bench/peers/) and measures what arrives: time to first token, gaps between
 * frames, the delay from each token's creation stamp to its arrival,
 * delivered tokens and frames per second, errors by kind, and the server's
 * CPU time and resident memory from /proc. docs/performance.md shows how
 * bench/compare drives it.
 *
 *   sluice-bench [--scenario bench/scenarios/NAME.conf] [--KEY VALUE]...
 *
 * Set-up (log in, create sessions) runs blocking on one keep-alive
 * connection before the load starts; the load itself is sb_run's epoll loop,
 * in this process or (--procs N) in N forked ones, each a slice of the
 * sessions (sb_procs).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sb_conf.h"
#include "sb_http.h"
#include "sb_json.h"
#include "sb_proc.h"
#include "sb_procs.h"
#include "sb_report.h"
#include "sb_run.h"

/* One blocking keep-alive connection for the set-up requests. */
struct setup {
	const struct sb_conf *c;
	int fd;
	char buf[64 * 1024];
};

static int setup_connect(struct setup *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->c->port) };
	struct timeval tv = { .tv_sec = 10 };

	if (inet_pton(AF_INET, s->c->host, &sa.sin_addr) != 1)
		return -1;
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return -1;
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(s->fd);
		s->fd = -1;
		return -1;
	}
	return 0;
}

/* Sends one request and reads its answer; returns the status and points
 * *body at the body (in s->buf), or -1. Reconnects once after a close. */
static int setup_call(struct setup *s, const char *method, const char *path, const char *auth,
		      const char *body, const char **rbody, size_t *rlen)
{
	char req[2048];
	int n = snprintf(req, sizeof(req),
			 "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n%s\r\n%s",
			 method, path, s->c->host, strlen(body), auth, body);

	for (int attempt = 0; attempt < 2; attempt++) {
		size_t have = 0;
		struct sb_http_head h;
		int hl = 0;

		if (s->fd < 0 && setup_connect(s) < 0)
			return -1;
		if (send(s->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
			goto again;
		for (;;) {
			ssize_t r = recv(s->fd, s->buf + have, sizeof(s->buf) - 1 - have, 0);

			if (r <= 0)
				goto again;
			have += (size_t)r;
			if (!hl) {
				hl = sb_http_head_parse(s->buf, have, &h);
				if (hl < 0)
					return -1;
			}
			if (hl > 0 && (h.content_length < 0 || have >= (size_t)hl + (size_t)h.content_length))
				break;
			if (have >= sizeof(s->buf) - 1)
				return -1;
		}
		s->buf[have] = '\0';
		*rbody = s->buf + hl;
		*rlen = h.content_length >= 0 ? (size_t)h.content_length : have - (size_t)hl;
		if (h.close || h.content_length < 0) {
			close(s->fd);
			s->fd = -1;
		}
		return h.status;
again:
		close(s->fd);
		s->fd = -1;
	}
	return -1;
}

static int copy_str(const char *body, size_t len, const char *key, char *out, size_t cap)
{
	const char *v;
	size_t vl;

	if (!sb_json_str(body, len, key, &v, &vl) || vl >= cap)
		return -1;
	memcpy(out, v, vl);
	out[vl] = '\0';
	return 0;
}

/* The Authorization header line every request carries. */
static int make_auth(struct setup *s, char *auth, size_t cap)
{
	const struct sb_conf *c = s->c;
	char body[512], tok[160];
	const char *rb;
	size_t rl;
	int st;

	auth[0] = '\0';
	if (c->target != SB_TARGET_SLUICE)
		return 0;
	if (c->token[0]) {
		snprintf(auth, cap, "Authorization: Bearer %.*s\r\n", 160, c->token);
		return 0;
	}
	snprintf(body, sizeof(body), "{\"username\":\"%.64s\",\"password\":\"%.128s\"}", c->user,
		 c->password);
	st = setup_call(s, "POST", "/api/auth/login", "", body, &rb, &rl);
	if (st != 200 || copy_str(rb, rl, "session_token", tok, sizeof(tok)) < 0) {
		fprintf(stderr, "sluice-bench: login as %s failed (status %d)\n", c->user, st);
		return -1;
	}
	snprintf(auth, cap, "Authorization: Bearer %.*s\r\n", 160, tok);
	return 0;
}

static int make_sessions(struct setup *s, const char *auth, char (*sids)[40], long n)
{
	const struct sb_conf *c = s->c;
	char body[256];

	for (long i = 0; i < n; i++) {
		const char *rb;
		size_t rl;
		int st;

		if (c->target != SB_TARGET_SLUICE || c->proto == SB_PROTO_OPENAI) {
			snprintf(sids[i], 40, "s_%016lx", (unsigned long)i + 1);
			continue;
		}
		snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", c->model);
		st = setup_call(s, "POST", "/api/chat/sessions", auth, body, &rb, &rl);
		if (st != 201 || copy_str(rb, rl, "id", sids[i], 40) < 0) {
			fprintf(stderr, "sluice-bench: creating session %ld failed (status %d)\n", i, st);
			return -1;
		}
	}
	return 0;
}

/* Every stream is a descriptor; the limit is raised as far as allowed and
 * a scenario that cannot fit is refused before it starts. */
static int raise_fd_limit(long need, char *err, size_t errlen)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur >= (rlim_t)need)
		return 0;
	rl.rlim_cur = (rlim_t)need;
	if (rl.rlim_max < (rlim_t)need)
		rl.rlim_max = (rlim_t)need;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		return 0;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur >= (rlim_t)need)
		return 0;
	snprintf(err, errlen, "the scenario needs %ld open files (its connections and 1024 spare); the "
		 "hard limit is %llu (raising it needs CAP_SYS_RESOURCE)", need,
		 (unsigned long long)rl.rlim_max);
	return -1;
}

static void read_pids(const struct sb_conf *c, struct sb_proc_sample *s)
{
	pid_t pids[SB_PROC_MAX];
	int n = 0;
	char buf[sizeof(c->pids_s)], *tok, *save;

	snprintf(buf, sizeof(buf), "%s", c->pids_s);
	for (tok = strtok_r(buf, ",", &save); tok && n < SB_PROC_MAX; tok = strtok_r(NULL, ",", &save))
		pids[n++] = (pid_t)atoi(tok);
	sb_proc_read(pids, n, s);
}

/* The load of one process: c's streams over sids[0..nsess). With procs
 * (a --procs child), every process meets the others after the ramp and
 * before each step; only child 0 (or the only process) reads the idle
 * memory sample, once all of them are open. */
struct slice_run {
	const struct sb_conf *c;
	struct sb_procs *procs;
	bool reads_idle;
	struct sb_run *r;
};

static void pump(void *arg)
{
	sb_run_pump(arg, 1);
}

static int run_slice(struct slice_run *sr, char (*sids)[40], long nsess, const char *auth,
		     struct sb_results *res)
{
	const struct sb_conf *c = sr->c;
	/* A barrier waits for the slowest process's ramp, which ends at its
	 * deadline (ramp + 30 s). */
	double sync_s = c->ramp_s + 60;
	char err[512];
	struct sb_run *r = sb_run_create(c, sids, nsess, auth, res, err, sizeof(err));

	if (!r) {
		fprintf(stderr, "sluice-bench: %s\n", err);
		return 1;
	}
	if (sb_run_open(r) < c->connections)
		fprintf(stderr, "sluice-bench: only %ld of %ld streams opened\n", res->conns_open,
			c->connections);
	if (sr->procs && !sb_procs_sync(sr->procs, pump, r, sync_s))
		fprintf(stderr, "sluice-bench: a load process did not finish its ramp\n");
	/* Idle memory: every stream open and subscribed, no answer running. */
	if (sr->reads_idle)
		read_pids(c, &res->idle);
	for (int i = 0; i < c->nsteps; i++) {
		if (sr->procs)
			sb_procs_sync(sr->procs, pump, r, sync_s);
		sb_run_step(r, &res->steps[i], c->prompt_rates[i]);
		res->nsteps = i + 1;
	}
	sb_run_drain(r, c->drain_s);
	sb_run_destroy(r);
	return 0;
}

/* --procs: forks c->procs children over slices of the sessions and merges
 * their results into res. Returns the exit status. */
static int run_procs(const struct sb_conf *c, char (*sids)[40], long nsess, const char *auth,
		     struct sb_results *res)
{
	int n = c->procs < nsess ? (int)c->procs : (int)nsess;
	struct sb_procs *p = sb_procs_create(n);
	double run_s = c->ramp_s + 30 + c->nsteps * (c->duration_s + c->ramp_s + 60) + c->drain_s;
	int me, rc;

	if (!p) {
		fprintf(stderr, "sluice-bench: no shared mapping for %d load processes\n", n);
		return 1;
	}
	fflush(NULL);
	me = sb_procs_fork(p);
	if (me >= 0) {
		static struct sb_slice sl;
		struct slice_run sr = { .c = &sl.conf, .procs = p, .reads_idle = me == 0 };
		struct sb_results *mine = sb_procs_results(p, me);

		sb_procs_slice(c, nsess, n, me, &sl);
		mine->conf = &sl.conf;
		_exit(run_slice(&sr, sids + sl.sess_first, sl.nsess, auth, mine));
	}
	if (me == -2) {
		fprintf(stderr, "sluice-bench: fork failed\n");
		sb_procs_destroy(p);
		return 1;
	}
	rc = sb_procs_wait(p, c, run_s + 60, res) < 0 ? 1 : 0;
	res->idle = sb_procs_results(p, 0)->idle;
	sb_procs_destroy(p);
	return rc;
}

int main(int argc, char **argv)
{
	static struct sb_conf c;
	static struct sb_results res;
	static struct setup su;
	char err[512], auth[512];
	char (*sids)[40];
	long nsess, most;
	int rc;

	rc = sb_conf_load(&c, argc, argv, err, sizeof(err));
	if (rc == 1) {
		sb_conf_usage(stdout);
		return 0;
	}
	if (rc < 0) {
		fprintf(stderr, "sluice-bench: %s\n", err);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	nsess = c.proto == SB_PROTO_OPENAI ? c.connections
					  : (c.connections + c.subscribers - 1) / c.subscribers;
	/* The descriptors of the largest slice: a process holds them all. */
	most = c.connections;
	if (c.procs > 1) {
		static struct sb_slice sl;

		sb_procs_slice(&c, nsess, c.procs < nsess ? (int)c.procs : (int)nsess, 0, &sl);
		most = sl.conf.connections + sl.conf.prompt_conns;
	} else {
		most += c.prompt_conns;
	}
	if (raise_fd_limit(most + 1024, err, sizeof(err)) < 0) {
		fprintf(stderr, "sluice-bench: %s\n", err);
		return 1;
	}
	res.conf = &c;
	su.c = &c;
	su.fd = -1;
	sids = calloc((size_t)nsess, sizeof(*sids));
	if (!sids || make_auth(&su, auth, sizeof(auth)) < 0 || make_sessions(&su, auth, sids, nsess) < 0)
		return 1;
	if (su.fd >= 0)
		close(su.fd);
	read_pids(&c, &res.base);
	if (c.procs > 1) {
		rc = run_procs(&c, sids, nsess, auth, &res);
	} else {
		struct slice_run sr = { .c = &c, .reads_idle = true };

		rc = run_slice(&sr, sids, nsess, auth, &res);
	}
	free(sids);
	if (rc)
		return rc;
	sb_report_table(stdout, &res);
	if (c.json[0] && sb_report_json(c.json, &res) < 0) {
		fprintf(stderr, "sluice-bench: cannot write %s\n", c.json);
		rc = 1;
	}
	if (c.plot[0] && sb_report_plot(c.plot, &res) < 0)
		rc = 1;
	return rc;
}
