/*
 * sluicectl's output: the answers of sluice-control as human tables, one
 * function per command (ctl_show_*), and the helpers they share.
 */
#include "ctl/ctl_show.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- output helpers ----------------------------------------------------- */

long long ctl_int(json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

/* Enough for every ctl_str() of one printf: each call takes the next. */
#define CTL_VIS_SLOTS 32

/*
 * Text made visible for a terminal: C0 controls and DEL as \xNN, C1
 * controls (U+0080..U+009F, which some terminals also obey) as \u00NN, the
 * rest as is. Returns one of CTL_VIS_SLOTS buffers, owned here and reused
 * round-robin, or s itself when nothing needs escaping.
 */
const char *ctl_vis(const char *s)
{
	static char *slot[CTL_VIS_SLOTS];
	static unsigned next;
	size_t n = 0;
	bool plain = true;
	if (!s)
		return "-";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
		if (*p < 0x20 || *p == 0x7f || (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
			plain = false;
	if (plain)
		return s;
	char *out = malloc(n * 6 + 1);
	if (!out)
		return "(out of memory)";
	char *o = out;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			o += sprintf(o, "\\x%02x", *p);
		} else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
			o += sprintf(o, "\\u%04x", p[1]);
			p++;
		} else {
			*o++ = (char)*p;
		}
	}
	*o = '\0';
	free(slot[next]);
	slot[next] = out;
	next = (next + 1) % CTL_VIS_SLOTS;
	return out;
}

/*
 * What went wrong in words, with what to do, for the errors an operator
 * causes; the code stays named in parentheses (scripts and --json see it
 * anyway). words are the command as typed (cmd, sub, arg).
 */
void ctl_show_error(const char *const *words, int nwords, const char *code, const char *msg)
{
	const char *cmd = words[0];
	const char *sub = nwords > 1 ? words[1] : "";
	const char *arg = nwords > 2 ? ctl_vis(words[2]) : "";
	bool users = strcmp(cmd, "users") == 0, sessions = strcmp(cmd, "sessions") == 0;
	bool nf = strcmp(code, "not_found") == 0, ex = strcmp(code, "exists") == 0;

	if (users && ex)
		fprintf(stderr, "sluicectl: user %s already exists (exists). Pick another name, or set its "
			"password with: sluicectl users passwd %s\n", arg, arg);
	else if (users && nf)
		fprintf(stderr, "sluicectl: there is no user %s (not_found). `sluicectl users list` shows "
			"the users.\n", arg);
	else if (sessions && nf)
		fprintf(stderr, "sluicectl: there is no conversation %s (not_found). `sluicectl sessions "
			"list` shows them.\n", arg);
	else if (strcmp(cmd, "keys") == 0 && strcmp(sub, "revoke") == 0 && nf)
		fprintf(stderr, "sluicectl: there is no API key %s (not_found). `sluicectl keys list` shows "
			"the keys.\n", arg);
	else if (strcmp(cmd, "keys") == 0 && nf)
		fprintf(stderr, "sluicectl: that user does not exist (not_found). Create it first with: "
			"sluicectl users add NAME --role user\n");
	else if (strcmp(cmd, "store") == 0 && strcmp(sub, "backup") == 0 && ex)
		fprintf(stderr, "sluicectl: %s already exists and is not empty (exists). A backup never "
			"overwrites: give a new or empty directory.\n", arg);
	else if (strcmp(cmd, "backends") == 0 && nf)
		fprintf(stderr, "sluicectl: there is no backend %s (not_found). `sluicectl backends list` "
			"shows them.\n", arg);
	else if (strcmp(cmd, "backends") == 0 && ex)
		fprintf(stderr, "sluicectl: a backend named %s already exists (exists). Pick another "
			"name.\n", arg);
	else if (strcmp(code, "internal") == 0)
		fprintf(stderr, "sluicectl: control could not do it: %s (internal). Its log says more "
			"(journalctl -u sluice-control, or its stderr).\n", ctl_vis(msg));
	else
		fprintf(stderr, "sluicectl: %s (%s)\n", ctl_vis(msg), ctl_vis(code));
}

/* Every string printed for a human goes through here (ctl_vis): titles,
 * content, names and labels are user-supplied. --json prints the answer
 * untouched. */
const char *ctl_str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? ctl_vis(s) : "-";
}

void ctl_print_json(json_t *o)
{
	char *txt = json_dumps(o, JSON_COMPACT);
	if (txt) {
		puts(txt);
		free(txt);
	}
}

void ctl_time(long long t, char *buf, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "-");
}

void ctl_duration(long long ms, char *buf, size_t cap)
{
	long long s = ms / 1000;
	if (s >= 86400)
		snprintf(buf, cap, "%lldd%02lldh%02lldm", s / 86400, s / 3600 % 24, s / 60 % 60);
	else if (s >= 3600)
		snprintf(buf, cap, "%lldh%02lldm%02llds", s / 3600, s / 60 % 60, s % 60);
	else if (s >= 60)
		snprintf(buf, cap, "%lldm%02llds", s / 60, s % 60);
	else
		snprintf(buf, cap, "%lld.%03llds", s, ms % 1000);
}

/* Every integer member of o as "  name  value" lines, in the order sent. */
void ctl_print_counters(json_t *o, json_t *prev, double dt_s)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) {
		if (!json_is_integer(v))
			continue;
		printf("  %-24s %lld", k, (long long)json_integer_value(v));
		json_t *pv = prev ? json_object_get(prev, k) : NULL;
		if (pv && dt_s > 0 && json_integer_value(v) >= json_integer_value(pv) &&
		    json_integer_value(v) != json_integer_value(pv))
			printf("  (+%.1f/s)", (double)(json_integer_value(v) - json_integer_value(pv)) / dt_s);
		printf("\n");
	}
}

/* ---- commands ---------------------------------------------------------------- */

void ctl_show_status(json_t *a)
{
	char up[32];
	ctl_duration(ctl_int(a, "uptime_ms"), up, sizeof(up));
	printf("control     pid %lld, up %s\n", ctl_int(a, "pid"), up);
	printf("dataplane   %s (epoch %lld), %lld workers, %lld reporting\n",
	       json_is_true(json_object_get(a, "dataplane_attached")) ? "attached" : "NOT attached",
	       ctl_int(a, "dataplane_epoch"), ctl_int(a, "workers"), ctl_int(a, "workers_reporting"));
	printf("store       %s\n", ctl_str(a, "store"));
	printf("sessions    %lld in memory, %lld answers running\n", ctl_int(a, "sessions_in_memory"),
	       ctl_int(a, "answers_running"));
	printf("admin       %lld clients\n", ctl_int(a, "admin_clients"));
}

void ctl_show_drain(json_t *a)
{
	printf("dataplane pid %lld is draining: new connections are refused, open ones end when their\n"
	       "answer is done, and it stops within drain_timeout_s = %lld s\n",
	       ctl_int(a, "pid"), ctl_int(a, "drain_timeout_s"));
}

void ctl_show_stats(json_t *a, json_t *prev, double dt_s)
{
	json_t *dp = json_object_get(a, "dataplane");
	json_t *cp = json_object_get(a, "control");
	printf("dataplane (%lld workers reporting)\n", ctl_int(dp, "workers_reporting"));
	ctl_print_counters(dp, prev ? json_object_get(prev, "dataplane") : NULL, dt_s);
	printf("control\n");
	ctl_print_counters(cp, prev ? json_object_get(prev, "control") : NULL, dt_s);
}

void ctl_show_stats_once(json_t *a)
{
	ctl_show_stats(a, NULL, 0);
}

void ctl_show_workers(json_t *a)
{
	printf("%-6s %8s %6s %6s %12s %12s %10s %10s\n", "WORKER", "CONNS", "SSE", "WS", "TOKENS_OUT",
	       "FRAMES_OUT", "PENDING", "STATS_AGE");
	size_t i;
	json_t *w;
	json_array_foreach(json_object_get(a, "workers"), i, w) {
		if (json_is_null(json_object_get(w, "stats_age_ms"))) {
			printf("%-6lld %8s %6s %6s %12s %12s %10s %10s\n", ctl_int(w, "worker"), "-", "-",
			       "-", "-", "-", "-", "never");
			continue;
		}
		char age[32];
		ctl_duration(ctl_int(w, "stats_age_ms"), age, sizeof(age));
		printf("%-6lld %8lld %6lld %6lld %12lld %12lld %10lld %10s\n", ctl_int(w, "worker"),
		       ctl_int(w, "conns_active"), ctl_int(w, "sse_active"), ctl_int(w, "ws_active"),
		       ctl_int(w, "tokens_out"), ctl_int(w, "frames_out"), ctl_int(w, "pending_bytes"), age);
	}
}

void ctl_show_conns(json_t *a)
{
	json_t *conns = json_object_get(a, "conns");
	printf("%-6s %8s %-21s %-4s %10s %12s %10s %s\n", "WORKER", "SLOT", "PEER", "MODE", "AGE",
	       "BYTES_OUT", "PENDING", "SESSION");
	size_t i;
	json_t *c;
	json_array_foreach(conns, i, c) {
		char age[32];
		ctl_duration(ctl_int(c, "age_ms"), age, sizeof(age));
		printf("%-6lld %8lld %-21s %-4s %10s %12lld %10lld %s\n", ctl_int(c, "worker"),
		       ctl_int(c, "slot"), ctl_str(c, "peer"), ctl_str(c, "mode"), age,
		       ctl_int(c, "bytes_out"), ctl_int(c, "pending_bytes"), ctl_str(c, "session_id"));
	}
	printf("%zu connections\n", json_array_size(conns));
	json_t *missing = json_object_get(a, "missing_workers");
	if (json_array_size(missing)) {
		printf("no answer from worker(s):");
		json_array_foreach(missing, i, c)
			printf(" %lld", (long long)json_integer_value(c));
		printf("\n");
	}
}

void ctl_show_sessions(json_t *a)
{
	json_t *ss = json_object_get(a, "sessions");
	printf("%-20s %-16s %-12s %-12s %-20s %-3s %s\n", "ID", "USER", "AGENT", "MODEL", "UPDATED", "ARC",
	       "TITLE");
	size_t i;
	json_t *s;
	json_array_foreach(ss, i, s) {
		char t[32];
		ctl_time(ctl_int(s, "updated_at"), t, sizeof(t));
		printf("%-20s %-16s %-12s %-12s %-20s %-3s %s\n", ctl_str(s, "id"), ctl_str(s, "user"),
		       ctl_str(s, "agent_id"), ctl_str(s, "model_id"), t,
		       json_is_true(json_object_get(s, "archived")) ? "yes" : "no", ctl_str(s, "title"));
	}
	printf("%zu sessions\n", json_array_size(ss));
}

void ctl_show_session(json_t *a)
{
	json_t *s = json_object_get(a, "session");
	char c[32], u[32];
	ctl_time(ctl_int(s, "created_at"), c, sizeof(c));
	ctl_time(ctl_int(s, "updated_at"), u, sizeof(u));
	printf("id          %s\n", ctl_str(s, "id"));
	printf("user        %s\n", ctl_str(s, "user"));
	printf("agent       %s\n", ctl_str(s, "agent_id"));
	printf("model       %s\n", ctl_str(s, "model_id"));
	printf("title       %s\n", ctl_str(s, "title"));
	printf("created     %s\n", c);
	printf("updated     %s\n", u);
	printf("archived    %s\n", json_is_true(json_object_get(s, "archived")) ? "yes" : "no");
	if (json_is_true(json_object_get(s, "running")))
		printf("running     yes, answer %s\n", ctl_str(s, "answer_message_id"));
	else
		printf("running     no\n");
	printf("subscribers %lld\n", ctl_int(s, "subscribers"));
	json_t *msgs = json_object_get(s, "messages");
	printf("messages    %zu\n", json_array_size(msgs));
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m) {
		json_t *usage = json_object_get(m, "usage");
		printf("  [%zu] %-9s %s %-11s %lld tokens, %lld bytes", i + 1, ctl_str(m, "role"),
		       ctl_str(m, "id"), ctl_str(m, "status"), ctl_int(m, "ntokens"),
		       ctl_int(m, "content_bytes"));
		if (strcmp(ctl_str(m, "role"), "assistant") == 0)
			printf(", usage %lld+%lld, $%.6f", ctl_int(usage, "prompt_tokens"),
			       ctl_int(usage, "completion_tokens"),
			       json_real_value(json_object_get(usage, "cost_usd")));
		printf("\n");
		json_t *content = json_object_get(m, "content");
		if (json_is_string(content))
			printf("      %s\n", ctl_vis(json_string_value(content)));
		else
			printf("      (content is not UTF-8)\n");
	}
}

void ctl_show_users(json_t *a)
{
	json_t *us = json_object_get(a, "users");
	printf("%-32s %-6s %s\n", "NAME", "ROLE", "CREATED");
	size_t i;
	json_t *u;
	json_array_foreach(us, i, u) {
		char t[32];
		ctl_time(ctl_int(u, "created_at"), t, sizeof(t));
		printf("%-32s %-6s %s\n", ctl_str(u, "name"), ctl_str(u, "role"), t);
	}
	printf("%zu users\n", json_array_size(us));
}

void ctl_show_keys(json_t *a)
{
	json_t *ks = json_object_get(a, "keys");
	printf("%-20s %-24s %-20s %s\n", "ID", "USER", "CREATED", "LABEL");
	size_t i;
	json_t *k;
	json_array_foreach(ks, i, k) {
		char t[32];
		ctl_time(ctl_int(k, "created_at"), t, sizeof(t));
		printf("%-20s %-24s %-20s %s\n", ctl_str(k, "id"), ctl_str(k, "user"), t, ctl_str(k, "label"));
	}
	printf("%zu keys\n", json_array_size(ks));
}

/* The key goes to stdout alone on its line, so scripts can capture it. */
void ctl_show_key_created(json_t *a)
{
	printf("%s\n", ctl_str(a, "key"));
	fprintf(stderr, "API key %s for %s created; it is shown only this once\n", ctl_str(a, "id"),
		ctl_str(a, "user"));
}

void ctl_show_key_revoked(json_t *a)
{
	printf("key %s revoked\n", ctl_str(a, "id"));
}

void ctl_show_store_stats(json_t *a)
{
	printf("store %s\n", ctl_str(a, "path"));
	ctl_print_counters(a, NULL, 0);
}


void ctl_show_done(json_t *a)
{
	const char *user = json_string_value(json_object_get(a, "user"));
	const char *name = json_string_value(json_object_get(a, "name"));
	const char *done = json_string_value(json_object_get(a, "done"));
	if (user && done)
		printf("%s: %s\n", ctl_vis(user), ctl_vis(done));
	else if (name && done)
		printf("backend %s: %s\n", ctl_vis(name), ctl_vis(done));
	else if (json_object_get(a, "workers_kicked"))
		printf("session %s killed: %s%s, %lld workers told to close its streams\n", ctl_str(a, "id"),
		       json_is_string(json_object_get(a, "cancelled_message_id")) ? "cancelled answer " :
										"no answer was running",
		       json_is_string(json_object_get(a, "cancelled_message_id")) ?
			       ctl_str(a, "cancelled_message_id") : "",
		       ctl_int(a, "workers_kicked"));
	else if (json_is_integer(json_object_get(a, "bytes")))
		printf("store backed up to %s (%lld bytes)\n", ctl_str(a, "path"), ctl_int(a, "bytes"));
	else
		printf("store backed up to %s\n", ctl_str(a, "path"));
}

void ctl_show_backends(json_t *a)
{
	json_t *bs = json_object_get(a, "backends");
	printf("%-16s %-9s %-9s %-7s %-9s %8s %6s %9s %7s %9s %s\n", "NAME", "TYPE", "STATE", "HEALTH", "BREAKER",
	       "INFLIGHT", "QUEUED", "REQUESTS", "ERRORS", "FAILOVERS", "MODELS");
	size_t i;
	json_t *b;
	json_array_foreach(bs, i, b) {
		char models[256] = "";
		size_t n = 0, k;
		json_t *m;
		json_t *list = json_array_size(json_object_get(b, "models")) ? json_object_get(b, "models")
									     : json_object_get(b, "discovered_models");
		json_array_foreach(list, k, m) {
			int w = snprintf(models + n, sizeof(models) - n, "%s%s", k ? "," : "", ctl_vis(json_string_value(m)));
			if (w < 0 || (size_t)w >= sizeof(models) - n)
				break;
			n += (size_t)w;
		}
		printf("%-16s %-9s %-9s %-7s %-9s %8lld %6lld %9lld %7lld %9lld %s%s\n", ctl_str(b, "name"),
		       ctl_str(b, "type"), ctl_str(b, "state"), ctl_str(b, "health"), ctl_str(b, "breaker"),
		       ctl_int(b, "inflight"), ctl_int(b, "queued"), ctl_int(b, "requests"), ctl_int(b, "errors"),
		       ctl_int(b, "failovers"), models, json_is_true(json_object_get(b, "runtime")) ? " (runtime)" : "");
		const char *err = json_string_value(json_object_get(b, "last_error"));
		if (err && err[0])
			printf("    last error: %s\n", ctl_vis(err));
	}
	printf("%zu backends\n", json_array_size(bs));
}

static void ctl_usage_line(json_t *g, const char *user, const char *key, const char *model)
{
	printf("%-20s %-20s %-20s %8lld %12lld %12lld %14.6f\n", user, key, model, ctl_int(g, "answers"),
	       ctl_int(g, "prompt_tokens"), ctl_int(g, "completion_tokens"),
	       json_real_value(json_object_get(g, "cost_usd")));
}

void ctl_show_usage(json_t *a)
{
	printf("%-20s %-20s %-20s %8s %12s %12s %14s\n", "USER", "KEY", "MODEL", "ANSWERS", "PROMPT", "COMPLETION",
	       "COST_USD");
	size_t i;
	json_t *g;
	json_array_foreach(json_object_get(a, "groups"), i, g) {
		const char *key = json_string_value(json_object_get(g, "key_id"));
		ctl_usage_line(g, ctl_str(g, "user"), key ? ctl_vis(key) : "(login)", ctl_str(g, "model"));
	}
	ctl_usage_line(json_object_get(a, "total"), "total", "", "");
}

void ctl_show_log_levels(json_t *a)
{
	printf("control    %s\ndataplane  %s\n", ctl_str(a, "control"), ctl_str(a, "dataplane"));
}

/* The configuration as an INI file sluice could read again (header values
 * aside: they are redacted). */
void ctl_show_config(json_t *a)
{
	const char *sec;
	json_t *keys;
	bool first = true;
	printf("# %s as sluice-control runs it\n", ctl_str(a, "path"));
	json_object_foreach(json_object_get(a, "config"), sec, keys) {
		const char *k;
		json_t *v;
		printf("%s[%s]\n", first ? "" : "\n", sec);
		first = false;
		json_object_foreach(keys, k, v)
			printf("%s = %s\n", k, json_string_value(v) ? json_string_value(v) : "");
	}
}

void ctl_show_reload(json_t *a)
{
	json_t *ch = json_object_get(a, "changed");
	size_t i;
	json_t *v;
	if (json_array_size(ch) == 0)
		printf("configuration reloaded: nothing changed\n");
	else
		printf("configuration reloaded, %zu change%s:\n", json_array_size(ch), json_array_size(ch) == 1 ? "" : "s");
	json_array_foreach(ch, i, v)
		printf("  %s\n", json_string_value(v) ? json_string_value(v) : "?");
	printf("dataplane: %s\n", ctl_str(a, "dataplane"));
}

/* limits show: the values in force, what is used, and where each comes from. */
void ctl_show_limits(json_t *a)
{
	json_t *l = json_object_get(a, "limits");
	bool user = json_object_get(a, "user") != NULL;
	printf("%s %s\n", user ? "user" : "key", ctl_str(a, user ? "user" : "key"));
	printf("%-20s %12s %12s  %s\n", "LIMIT", "VALUE", "USED", "FROM");
	const char *name;
	json_t *v;
	json_object_foreach(l, name, v) {
		long long val = ctl_int(v, "value");
		char vb[24];
		snprintf(vb, sizeof(vb), "%lld", val);
		printf("%-20s %12s %12lld  %s\n", name, val ? vb : "none", ctl_int(v, "used"),
		       json_is_true(json_object_get(v, "overridden")) ? "override" : "role");
	}
}

void ctl_show_limit_overrides(json_t *a)
{
	json_t *arr = json_object_get(a, "overrides");
	size_t i;
	json_t *o;
	json_array_foreach(arr, i, o) {
		const char *name;
		json_t *v;
		bool user = json_object_get(o, "user") != NULL;
		printf("%s %s:", user ? "user" : "key", ctl_str(o, user ? "user" : "key"));
		json_object_foreach(o, name, v)
			if (json_is_integer(v))
				printf(" %s=%lld", name, (long long)json_integer_value(v));
		printf("\n");
	}
	printf("%zu overrides\n", json_array_size(arr));
}
