/* Scenario keys, files and flags (see sb_conf.h). */
#include "sb_conf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_STR, K_LONG, K_DOUBLE, K_BOOL };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	size_t size;
	const char *def;
	const char *help;
};

#define STR(f) K_STR, offsetof(struct sb_conf, f), sizeof(((struct sb_conf *)0)->f)
#define LNG(f) K_LONG, offsetof(struct sb_conf, f), 0
#define DBL(f) K_DOUBLE, offsetof(struct sb_conf, f), 0
#define BOOL(f) K_BOOL, offsetof(struct sb_conf, f), 0

static const struct key keys[] = {
	{ "target", STR(target_s), "sluice", "sluice | peer (bench/peers: /sub/ID, /prompt/ID) | nchan (the bench publishes)" },
	{ "protocol", STR(protocol_s), "sse", "sse | ws | openai (POST /v1/chat/completions, stream)" },
	{ "host", STR(host), "127.0.0.1", "server address" },
	{ "port", LNG(port), "8080", "server port" },
	{ "name", STR(name), "", "label of this run in reports" },
	{ "connections", LNG(connections), "100", "stream connections" },
	{ "subscribers", LNG(subscribers), "10", "subscribers per session (sse, ws)" },
	{ "prompt_rate", STR(prompt_rate_s), "0", "new prompts/s over all sessions; a list (10,20,40) runs load steps; 0 = each session's next prompt when its answer ends" },
	{ "answer_tokens", LNG(answer_tokens), "200", "tokens per answer (the backend's answer_tokens)" },
	{ "ttft_ms", LNG(ttft_ms), "50", "the backend's time to first token" },
	{ "token_rate", LNG(token_rate), "20", "the backend's tokens/s per answer" },
	{ "duration", DBL(duration_s), "10", "seconds measured per step" },
	{ "ramp", DBL(ramp_s), "2", "seconds to open every connection" },
	{ "drain", DBL(drain_s), "0", "seconds to wait for running answers after the last step" },
	{ "src", STR(src), "127.0.0.1", "client source addresses: a.b.c.d[/prefix],... (127.0.0.0/8 for 100,000+ connections)" },
	{ "model", STR(model), "bench", "model id of the sessions" },
	{ "user", STR(user), "", "log in as this user (sluice)" },
	{ "password", STR(password), "", "its password" },
	{ "token", STR(token), "", "bearer token or API key (instead of user/password)" },
	{ "timing", BOOL(timing), "true", "ask for token creation stamps (X-Sluice-Timing: 1, docs/api.md)" },
	{ "pids", STR(pids_s), "", "server pids whose CPU and memory are read from /proc, comma separated" },
	{ "json", STR(json), "", "also write the results as JSON to this file" },
	{ "plot", STR(plot), "", "draw latency percentiles and CPU against offered load into this PNG (gnuplot)" },
	{ "progress", BOOL(progress), "true", "a progress line on stderr every second" },
	{ "prompt_conns", LNG(prompt_conns), "16", "keep-alive connections that post prompts" },
	{ "text", STR(text), " word", "token text the bench publishes (target nchan)" },
	{ "procs", LNG(procs), "1", "load processes sharing the streams by session (each holds its share of the descriptors; 1..16)" },
};

static const struct key *find(const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static int set(struct sb_conf *c, const struct key *k, const char *v, char *err, size_t errlen)
{
	char *end;
	void *dst = (char *)c + k->off;

	switch (k->kind) {
	case K_STR:
		if (strlen(v) >= k->size)
			goto bad;
		strcpy(dst, v);
		return 0;
	case K_LONG:
		errno = 0;
		*(long *)dst = strtol(v, &end, 10);
		if (errno || *end || *(long *)dst < 0)
			goto bad;
		return 0;
	case K_DOUBLE:
		*(double *)dst = strtod(v, &end);
		if (*end || *(double *)dst < 0)
			goto bad;
		return 0;
	case K_BOOL:
		if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
			*(bool *)dst = true;
		else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
			*(bool *)dst = false;
		else
			goto bad;
		return 0;
	}
bad:
	snprintf(err, errlen, "bad value '%s' for %s", v, k->name);
	return -1;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static int load_file(struct sb_conf *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int no = 0;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *l = trim(line), *eq;
		const struct key *k;
		size_t elen;

		no++;
		if (*l == '\0' || *l == '#' || *l == '[')
			continue;
		eq = strchr(l, '=');
		if (!eq) {
			snprintf(err, errlen, "%s:%d: expected key = value", path, no);
			fclose(f);
			return -1;
		}
		*eq = '\0';
		k = find(trim(l));
		if (!k) {
			snprintf(err, errlen, "%s:%d: unknown key '%s'", path, no, trim(l));
			fclose(f);
			return -1;
		}
		if (set(c, k, trim(eq + 1), err, errlen) < 0) {
			elen = strlen(err);
			snprintf(err + elen, errlen - elen, " (%s:%d)", path, no);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

/* Names to enums, the list of prompt rates, and the checks between keys. */
static int finish(struct sb_conf *c, char *err, size_t errlen)
{
	char buf[sizeof(c->prompt_rate_s)], *tok, *save;

	if (!strcmp(c->target_s, "sluice"))
		c->target = SB_TARGET_SLUICE;
	else if (!strcmp(c->target_s, "peer"))
		c->target = SB_TARGET_PEER;
	else if (!strcmp(c->target_s, "nchan"))
		c->target = SB_TARGET_NCHAN;
	else
		goto bad_target;
	if (!strcmp(c->protocol_s, "sse"))
		c->proto = SB_PROTO_SSE;
	else if (!strcmp(c->protocol_s, "ws"))
		c->proto = SB_PROTO_WS;
	else if (!strcmp(c->protocol_s, "openai"))
		c->proto = SB_PROTO_OPENAI;
	else {
		snprintf(err, errlen, "protocol must be sse, ws or openai");
		return -1;
	}
	if (c->proto == SB_PROTO_OPENAI && c->target != SB_TARGET_SLUICE) {
		snprintf(err, errlen, "protocol openai needs target sluice");
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", c->prompt_rate_s);
	c->nsteps = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		double r = strtod(trim(tok), &end);

		if (*end || r < 0 || c->nsteps == SB_STEPS_MAX) {
			snprintf(err, errlen, "prompt_rate: a list of at most %d rates >= 0", SB_STEPS_MAX);
			return -1;
		}
		c->prompt_rates[c->nsteps++] = r;
	}
	if (c->nsteps == 0)
		c->prompt_rates[c->nsteps++] = 0;
	if (c->port == 0 || c->port > 65535) {
		snprintf(err, errlen, "port must be 1..65535");
		return -1;
	}
	if (c->connections == 0 || c->answer_tokens == 0 || c->token_rate == 0) {
		snprintf(err, errlen, "connections, answer_tokens and token_rate must be > 0");
		return -1;
	}
	if (c->procs < 1 || c->procs > SB_PROCS_MAX) {
		snprintf(err, errlen, "procs must be 1..%d", SB_PROCS_MAX);
		return -1;
	}
	if (c->proto == SB_PROTO_OPENAI || c->subscribers == 0)
		c->subscribers = 1;
	if (c->subscribers > c->connections)
		c->subscribers = c->connections;
	if (c->prompt_conns == 0)
		c->prompt_conns = 1;
	if (c->target == SB_TARGET_SLUICE && !c->token[0] && !c->user[0]) {
		snprintf(err, errlen, "target sluice needs --token or --user and --password");
		return -1;
	}
	if (!c->name[0])
		snprintf(c->name, sizeof(c->name), "%s-%s", c->target_s, c->protocol_s);
	return 0;
bad_target:
	snprintf(err, errlen, "target must be sluice, peer or nchan");
	return -1;
}

int sb_conf_load(struct sb_conf *c, int argc, char **argv, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (set(c, &keys[i], keys[i].def, err, errlen) < 0)
			return -1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return 1;
		if (!strcmp(argv[i], "--scenario")) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "--scenario needs a file");
				return -1;
			}
			if (load_file(c, argv[i + 1], err, errlen) < 0)
				return -1;
		}
	}
	for (int i = 1; i < argc; i++) {
		const struct key *k;

		if (!strcmp(argv[i], "--scenario")) {
			i++;
			continue;
		}
		if (strncmp(argv[i], "--", 2) != 0 || !(k = find(argv[i] + 2))) {
			snprintf(err, errlen, "unknown argument '%s' (--help lists them)", argv[i]);
			return -1;
		}
		if (k->kind == K_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))) {
			if (set(c, k, "true", err, errlen) < 0)
				return -1;
			continue;
		}
		if (i + 1 >= argc) {
			snprintf(err, errlen, "%s needs a value", argv[i]);
			return -1;
		}
		if (set(c, k, argv[++i], err, errlen) < 0)
			return -1;
	}
	return finish(c, err, errlen);
}

void sb_conf_usage(FILE *f)
{
	fprintf(f, "usage: sluice-bench [--scenario FILE] [--KEY VALUE]...\n\n"
		   "Every key may be given in the scenario file (key = value) or as a flag:\n\n");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		fprintf(f, "  --%-14s %s (default: %s)\n", keys[i].name, keys[i].help,
			keys[i].def[0] ? keys[i].def : "none");
}
