/*
 * sluicectl: the operator's tool. Talks to sluice-control over the admin Unix
 * socket (control/admin/admin.h): one JSON request per line, one JSON answer
 * per line. Human tables by default, the answers as JSON lines with --json.
 *
 * Exit status: 0 done, 1 failed (control not running, or it answered with an
 * error), 2 malformed command (usage on stderr).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "sluice/chan.h"
#include "sluice/common.h"
#include "sluice/conf.h"

#include "ctl/ctl_show.h"

#define CTL_PW_MAX 1024          /* the hashing pool's longest password */
#define CTL_ANSWER_MAX (64u << 20)
#define CTL_TIMEOUT_MS 10000
#define CTL_SLOW_TIMEOUT_MS 120000  /* password hashing */
#define CTL_BACKUP_TIMEOUT_MS 3600000

static const char usage_text[] =
	"usage: sluicectl [-c FILE | --socket PATH] [--json] COMMAND\n"
	"\n"
	"commands:\n"
	"  status                               control uptime, dataplane, workers, store, sessions\n"
	"  stats [--watch [--interval S] [--count N]]\n"
	"                                       summed worker counters and control counters\n"
	"  workers                              per-worker counters and the age of their last report\n"
	"  conns [--worker N]                   the dataplane's connections\n"
	"  drain                                drain and stop the dataplane (as SIGTERM does): new\n"
	"                                       connections refused, open ones ended when idle\n"
	"  sessions list [--user U] [--limit N] conversations, newest first\n"
	"  sessions show ID                     one conversation with its messages\n"
	"  sessions kill ID                     cancel its answer and close its streams\n"
	"  users add NAME --role user|admin     create a user (password from the terminal or stdin)\n"
	"  users passwd NAME                    set a user's password (ends its logins)\n"
	"  users del NAME                       delete a user (ends its logins)\n"
	"  users list\n"
	"  keys create --user U [--label L]     create an API key for U (printed once, keep it)\n"
	"  keys revoke ID                       revoke a key (ends its streams)\n"
	"  keys list [--user U]                 key ids, owners, labels (never the keys)\n"
	"  limits show --user U | --key ID      quotas and rates in force, and what is used now\n"
	"  limits set --user U | --key ID NAME=N|role ...\n"
	"                                       override limits (0: none; role: the role's value)\n"
	"  limits list                          every stored override\n"
	"  store stats                          LMDB counters\n"
	"  store backup PATH                    compacted consistent copy into directory PATH\n"
	"  backends list                        backends: state, health, breaker, in flight, queued, errors\n"
	"  backends add NAME --type T --url URL [--models A,B] [--set KEY=VALUE]...\n"
	"                                       add a backend now (until control restarts)\n"
	"  backends drain|enable|remove NAME    stop routing new requests to it / route again / take it out\n"
	"  config show                          the running configuration (secrets redacted); --json\n"
	"  config reload                        read the file again and apply it live, or refuse it whole\n"
	"  log level [control|dataplane] [LEVEL]\n"
	"                                       show or set the log level (debug, info, warn, error)\n"
	"  usage [--user U] [--key K] [--since T]\n"
	"                                       tokens and cost per user, API key and model; T is unix\n"
	"                                       seconds or an age like 90m, 24h, 7d\n"
	"\n"
	"The socket is --socket PATH, else admin_socket of -c FILE, else the default\n"
	"/tmp/sluice-admin.sock. --help prints this. Exit status: 0 done, 1 control refused\n"
	"or failed (the reason on stderr), 2 a command line sluicectl does not understand.\n"
	"docs/man/sluicectl.md has the details.\n";

/* ctl_parse's answer to --help: main exits 0. */
#define CTL_HELP (-1)

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "sluicectl: %s\n", why);
	fputs(usage_text, stderr);
	return 2;
}

struct ctl {
	const char *conf_path;
	const char *sock_path;
	char sock_buf[CONF_PATH_MAX];
	bool json;
	bool watch;
	double interval_s;
	long count;       /* --count, -1 = until interrupted */
	long worker;      /* --worker, -1 = all */
	const char *user; /* --user */
	long limit;       /* --limit, -1 = control's default */
	const char *role; /* --role */
	const char *label; /* --label */
	const char *key;   /* --key */
	const char *since; /* --since */
	const char *type, *url, *models; /* backends add */
	const char *sets[32];            /* backends add --set KEY=VALUE */
	int nsets;
	const char *words[12];
	int nwords;
	int fd;
};

/* ---- option parsing ----------------------------------------------------- */

static bool ctl_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* Fills c from argv; returns 0, or 2 after printing usage. */
static int ctl_parse(struct ctl *c, int argc, char **argv)
{
	bool interval_set = false, count_set = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = strcmp(a, "-c") == 0 || strcmp(a, "--socket") == 0 ||
			     strcmp(a, "--interval") == 0 || strcmp(a, "--count") == 0 ||
			     strcmp(a, "--worker") == 0 || strcmp(a, "--user") == 0 ||
			     strcmp(a, "--limit") == 0 || strcmp(a, "--role") == 0 ||
			     strcmp(a, "--label") == 0 || strcmp(a, "--key") == 0 ||
			     strcmp(a, "--since") == 0 || strcmp(a, "--type") == 0 ||
			     strcmp(a, "--url") == 0 || strcmp(a, "--models") == 0 || strcmp(a, "--set") == 0;
		if (takes && !v) {
			char msg[64];
			snprintf(msg, sizeof(msg), "%s needs a value", a);
			return usage(msg);
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage_text, stdout);
			return CTL_HELP;
		} else if (strcmp(a, "-c") == 0) {
			c->conf_path = v;
		} else if (strcmp(a, "--socket") == 0) {
			c->sock_path = v;
		} else if (strcmp(a, "--json") == 0) {
			c->json = true;
			continue;
		} else if (strcmp(a, "--watch") == 0) {
			c->watch = true;
			continue;
		} else if (strcmp(a, "--interval") == 0) {
			char *end;
			errno = 0;
			c->interval_s = strtod(v, &end);
			if (errno || end == v || *end || !(c->interval_s >= 0.1 && c->interval_s <= 3600))
				return usage("--interval takes seconds, 0.1 to 3600");
			interval_set = true;
		} else if (strcmp(a, "--count") == 0) {
			if (!ctl_long(v, 1, 1000000000L, &c->count))
				return usage("--count takes a positive number");
			count_set = true;
		} else if (strcmp(a, "--worker") == 0) {
			if (!ctl_long(v, 0, CHAN_MAX_WORKERS - 1, &c->worker))
				return usage("--worker takes a worker number");
		} else if (strcmp(a, "--user") == 0) {
			c->user = v;
		} else if (strcmp(a, "--limit") == 0) {
			if (!ctl_long(v, 1, 1000, &c->limit))
				return usage("--limit takes 1 to 1000");
		} else if (strcmp(a, "--role") == 0) {
			c->role = v;
		} else if (strcmp(a, "--label") == 0) {
			c->label = v;
		} else if (strcmp(a, "--key") == 0) {
			c->key = v;
		} else if (strcmp(a, "--since") == 0) {
			c->since = v;
		} else if (strcmp(a, "--type") == 0) {
			c->type = v;
		} else if (strcmp(a, "--url") == 0) {
			c->url = v;
		} else if (strcmp(a, "--models") == 0) {
			c->models = v;
		} else if (strcmp(a, "--set") == 0) {
			if (c->nsets == (int)SLUICE_ARRAY_LEN(c->sets) || !strchr(v, '=') || v[0] == '=')
				return usage("--set takes KEY=VALUE (at most 32)");
			c->sets[c->nsets++] = v;
		} else if (a[0] == '-' && a[1]) {
			char msg[160];
			snprintf(msg, sizeof(msg), "unknown option %.100s", a);
			return usage(msg);
		} else {
			if (c->nwords == (int)SLUICE_ARRAY_LEN(c->words))
				return usage("too many arguments");
			c->words[c->nwords++] = a;
			continue;
		}
		i++;
	}
	if (c->conf_path && c->sock_path)
		return usage("-c and --socket exclude each other");
	if ((interval_set || count_set) && !c->watch)
		return usage("--interval and --count go with stats --watch");
	return 0;
}

/* ---- the socket ------------------------------------------------------------ */

static int ctl_socket_path(struct ctl *c)
{
	static struct sluice_conf conf;
	char err[512];
	if (c->sock_path)
		return 0;
	if (c->conf_path) {
		if (conf_load(c->conf_path, &conf, err, sizeof(err)) < 0) {
			fprintf(stderr, "sluicectl: %s\n", err);
			return -1;
		}
	} else {
		conf_defaults(&conf);
	}
	snprintf(c->sock_buf, sizeof(c->sock_buf), "%s", conf.admin_socket);
	c->sock_path = c->sock_buf;
	return 0;
}

static int ctl_connect(struct ctl *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(c->sock_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "sluicectl: cannot connect to control at %s: path too long\n", c->sock_path);
		return -1;
	}
	memcpy(sa.sun_path, c->sock_path, strlen(c->sock_path) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		fprintf(stderr, "sluicectl: cannot connect to control at %s: %s\n", c->sock_path, strerror(e));
		if (e == ENOENT || e == ECONNREFUSED)
			fprintf(stderr, "  Is sluice-control running (systemctl status sluice-control)? Its "
				"admin_socket is where -c FILE or --socket PATH says.\n");
		else if (e == EACCES)
			fprintf(stderr, "  Run sluicectl as the user sluice-control runs as, or one in the "
				"admin_socket_group of its configuration.\n");
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		return -1;
	}
	return 0;
}

static int ctl_write_all(struct ctl *c, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			fprintf(stderr, "sluicectl: writing to control at %s: %s\n", c->sock_path,
				strerror(errno));
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads one answer line; NULL (message printed) on timeout, hang-up or a line
 * that is not a JSON object. Bytes after the line stay unread on the socket
 * for the next call. */
static json_t *ctl_read_answer(struct ctl *c, int timeout_ms)
{
	static char *buf;
	static size_t cap, len;
	for (;;) {
		char *nl = len ? memchr(buf, '\n', len) : NULL;
		if (nl) {
			size_t n = (size_t)(nl - buf);
			json_error_t jerr;
			json_t *o = json_loadb(buf, n, 0, &jerr);
			memmove(buf, nl + 1, len - n - 1);
			len -= n + 1;
			if (!json_is_object(o)) {
				json_decref(o);
				fprintf(stderr, "sluicectl: control sent an answer that is not a JSON object\n");
				return NULL;
			}
			return o;
		}
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 65536;
			char *p = ncap <= CTL_ANSWER_MAX ? realloc(buf, ncap) : NULL;
			if (!p) {
				fprintf(stderr, "sluicectl: the answer is larger than %u bytes\n", CTL_ANSWER_MAX);
				return NULL;
			}
			buf = p;
			cap = ncap;
		}
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int pr = poll(&pfd, 1, timeout_ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			fprintf(stderr, "sluicectl: no answer from control at %s within %d s\n", c->sock_path,
				timeout_ms / 1000);
			return NULL;
		}
		ssize_t r = recv(c->fd, buf + len, cap - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "sluicectl: control at %s closed the connection%s%s\n", c->sock_path,
				r < 0 ? ": " : "", r < 0 ? strerror(errno) : "");
			return NULL;
		}
		len += (size_t)r;
	}
}

/* Sends req (taking the reference) plus an optional raw line, and reads the
 * answer. The request buffer is wiped since it may hold the password. */
static json_t *ctl_call(struct ctl *c, json_t *req, const char *extra, size_t extra_len, int timeout_ms)
{
	char *txt = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!txt) {
		fprintf(stderr, "sluicectl: out of memory\n");
		return NULL;
	}
	size_t tl = strlen(txt);
	size_t n = tl + 1 + (extra ? extra_len + 1 : 0);
	char *line = malloc(n);
	if (!line) {
		free(txt);
		fprintf(stderr, "sluicectl: out of memory\n");
		return NULL;
	}
	memcpy(line, txt, tl);
	line[tl] = '\n';
	if (extra) {
		memcpy(line + tl + 1, extra, extra_len);
		line[n - 1] = '\n';
	}
	free(txt);
	int rc = ctl_write_all(c, line, n);
	sodium_memzero(line, n);
	free(line);
	return rc < 0 ? NULL : ctl_read_answer(c, timeout_ms);
}

/* ---- passwords --------------------------------------------------------------- */

static struct termios ctl_saved_tty;
static volatile sig_atomic_t ctl_tty_changed;

static void ctl_restore_tty(int sig)
{
	if (ctl_tty_changed)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_saved_tty);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* One line from fd into buf (without the newline). -1: read error or EOF
 * before any byte; -2: longer than cap. */
static int ctl_read_line(int fd, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	bool any = false;
	for (;;) {
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		any = true;
		if (ch == '\n')
			break;
		if (n == cap)
			return -2;
		buf[n++] = ch;
	}
	*len = n;
	return any ? 0 : -1;
}

/* Echo off while the terminal password is typed. */
static int ctl_prompt(const char *prompt, char *buf, size_t cap, size_t *len)
{
	struct termios t;
	if (tcgetattr(STDIN_FILENO, &ctl_saved_tty) < 0)
		return -1;
	t = ctl_saved_tty;
	t.c_lflag &= ~(tcflag_t)ECHO;
	t.c_lflag |= ECHONL;
	ctl_tty_changed = 1;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0)
		return -1;
	/* The prompt comes after echo is off, so nothing typed in answer to it
	 * is echoed or flushed away. */
	fputs(prompt, stderr);
	fflush(stderr);
	int rc = ctl_read_line(STDIN_FILENO, buf, cap, len);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_saved_tty);
	ctl_tty_changed = 0;
	return rc;
}

/* The password: asked twice with echo off on a terminal, else one line of
 * stdin. Never argv, so it shows in no process list. */
static int ctl_password(char *pw, size_t cap, size_t *len)
{
	int rc;
	if (isatty(STDIN_FILENO)) {
		static char again[CTL_PW_MAX];
		size_t alen = 0;
		signal(SIGINT, ctl_restore_tty);
		signal(SIGTERM, ctl_restore_tty);
		rc = ctl_prompt("Password: ", pw, cap, len);
		if (rc == 0)
			rc = ctl_prompt("Password again: ", again, sizeof(again), &alen);
		if (rc == 0 && (alen != *len || sodium_memcmp(pw, again, alen) != 0)) {
			sodium_memzero(again, sizeof(again));
			fprintf(stderr, "sluicectl: the passwords do not match\n");
			return -1;
		}
		sodium_memzero(again, sizeof(again));
	} else {
		rc = ctl_read_line(STDIN_FILENO, pw, cap, len);
	}
	if (rc == -2) {
		fprintf(stderr, "sluicectl: the password is longer than %zu bytes\n", cap);
		return -1;
	}
	if (rc < 0) {
		fprintf(stderr, "sluicectl: no password given on %s\n",
			isatty(STDIN_FILENO) ? "the terminal" : "stdin");
		return -1;
	}
	if (*len == 0 || memchr(pw, 0, *len)) {
		fprintf(stderr, "sluicectl: the password is empty or holds a NUL byte\n");
		return -1;
	}
	return 0;
}

/* ---- dispatch ----------------------------------------------------------------- */

/* Prints an answer: ok -> show (or the JSON line), error -> stderr. Returns
 * the exit status. */
static int ctl_result(struct ctl *c, json_t *a, void (*show)(json_t *))
{
	if (!a)
		return 1;
	int rc = 0;
	if (!json_is_true(json_object_get(a, "ok"))) {
		json_t *e = json_object_get(a, "error");
		ctl_show_error(c->words, c->nwords, ctl_str(e, "code"), ctl_str(e, "message"));
		if (c->json)
			ctl_print_json(a);
		rc = 1;
	} else if (c->json) {
		ctl_print_json(a);
	} else {
		show(a);
	}
	json_decref(a);
	fflush(stdout);
	return rc;
}


static volatile sig_atomic_t ctl_stop;

static void ctl_on_stop(int sig)
{
	(void)sig;
	ctl_stop = 1;
}

static int cmd_stats_watch(struct ctl *c)
{
	signal(SIGINT, ctl_on_stop);
	signal(SIGTERM, ctl_on_stop);
	json_t *prev = NULL;
	struct timespec tprev = { 0 };
	int rc = 0;
	for (long n = 0; !ctl_stop && (c->count < 0 || n < c->count); n++) {
		if (n) {
			struct timespec d = { .tv_sec = (time_t)c->interval_s,
					      .tv_nsec = (long)((c->interval_s - (double)(time_t)c->interval_s) * 1e9) };
			while (nanosleep(&d, &d) < 0 && errno == EINTR && !ctl_stop)
				;
			if (ctl_stop)
				break;
		}
		json_t *a = ctl_call(c, json_pack("{s:s}", "cmd", "stats"), NULL, 0, CTL_TIMEOUT_MS);
		if (!a) {
			rc = 1;
			break;
		}
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (!json_is_true(json_object_get(a, "ok"))) {
			rc = ctl_result(c, a, NULL);
			break;
		}
		if (c->json) {
			ctl_print_json(a);
		} else {
			char ts[32];
			ctl_time((long long)time(NULL), ts, sizeof(ts));
			double dt = prev ? (double)(now.tv_sec - tprev.tv_sec) +
						   (double)(now.tv_nsec - tprev.tv_nsec) / 1e9 : 0;
			printf("---- %s\n", ts);
			ctl_show_stats(a, prev, dt);
		}
		fflush(stdout);
		json_decref(prev);
		prev = a;
		tprev = now;
	}
	json_decref(prev);
	return rc;
}

/* The users command's shape, checked before connecting: 0 or 2 (usage printed). */
static int ctl_users_check(struct ctl *c, const char *sub, const char *name)
{
	if (!sub)
		return usage("users takes add, passwd, del or list");
	bool add = strcmp(sub, "add") == 0;
	if (strcmp(sub, "list") == 0)
		return name || c->role ? usage("users list takes no arguments") : 0;
	if (!add && strcmp(sub, "passwd") != 0 && strcmp(sub, "del") != 0)
		return usage("users takes add, passwd, del or list");
	if (!name)
		return usage("users add|passwd|del need a NAME");
	if (!add && c->role)
		return usage("--role goes with users add");
	if (add && (!c->role || (strcmp(c->role, "user") != 0 && strcmp(c->role, "admin") != 0)))
		return usage("users add needs --role user|admin");
	return 0;
}

static int ctl_users(struct ctl *c, const char *sub, const char *name)
{
	if (strcmp(sub, "list") == 0)
		return ctl_result(c, ctl_call(c, json_pack("{s:s}", "cmd", "users.list"), NULL, 0, CTL_TIMEOUT_MS),
				  ctl_show_users);
	bool add = strcmp(sub, "add") == 0;
	if (strcmp(sub, "del") == 0)
		return ctl_result(c, ctl_call(c, json_pack("{s:s,s:s}", "cmd", "users.del", "name", name), NULL,
					      0, CTL_TIMEOUT_MS), ctl_show_done);
	static char pw[CTL_PW_MAX];
	size_t pwlen = 0;
	if (ctl_password(pw, sizeof(pw), &pwlen) < 0) {
		sodium_memzero(pw, sizeof(pw));
		return 1;
	}
	json_t *req = add ? json_pack("{s:s,s:s,s:s}", "cmd", "users.add", "name", name, "role", c->role)
			  : json_pack("{s:s,s:s}", "cmd", "users.passwd", "name", name);
	json_t *a = ctl_call(c, req, pw, pwlen, CTL_SLOW_TIMEOUT_MS);
	sodium_memzero(pw, sizeof(pw));
	return ctl_result(c, a, ctl_show_done);
}

/* The keys command's shape, checked before connecting: 0 or 2 (usage printed). */
static int ctl_keys_check(struct ctl *c, const char *sub, const char *arg)
{
	if (!sub)
		return usage("keys takes create, revoke ID or list");
	if (strcmp(sub, "create") == 0)
		return arg || !c->user ? usage("keys create takes --user U [--label L]") : 0;
	if (c->label)
		return usage("--label goes with keys create");
	if (strcmp(sub, "list") == 0)
		return arg ? usage("keys list takes [--user U]") : 0;
	if (strcmp(sub, "revoke") == 0)
		return !arg || c->user ? usage("keys revoke takes an ID") : 0;
	return usage("keys takes create, revoke ID or list");
}

static int ctl_keys(struct ctl *c, const char *sub, const char *arg)
{
	json_t *req;
	void (*show)(json_t *);
	if (strcmp(sub, "create") == 0) {
		req = json_pack("{s:s,s:s,s:s}", "cmd", "keys.create", "user", c->user, "label",
				c->label ? c->label : "");
		show = ctl_show_key_created;
	} else if (strcmp(sub, "revoke") == 0) {
		req = json_pack("{s:s,s:s}", "cmd", "keys.revoke", "id", arg);
		show = ctl_show_key_revoked;
	} else {
		req = json_pack("{s:s}", "cmd", "keys.list");
		if (req && c->user)
			json_object_set_new(req, "user", json_string(c->user));
		show = ctl_show_keys;
	}
	return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), show);
}

/* limits show|set|list; the shape is checked before connecting (2). */
static int ctl_limits(struct ctl *c, bool check)
{
	const char *sub = c->nwords > 1 ? c->words[1] : "";
	bool target = (c->user != NULL) != (c->key != NULL);
	if (strcmp(sub, "list") == 0) {
		if (c->nwords > 2 || c->user || c->key)
			return usage("limits list takes no arguments");
		return check ? 0 : ctl_result(c, ctl_call(c, json_pack("{s:s}", "cmd", "limits.list"), NULL, 0,
						    CTL_TIMEOUT_MS), ctl_show_limit_overrides);
	}
	if (strcmp(sub, "show") == 0 && !(target && c->nwords == 2))
		return usage("limits show takes --user U or --key ID");
	if (strcmp(sub, "set") == 0 && !(target && c->nwords > 2))
		return usage("limits set takes --user U or --key ID, then NAME=N|role ...");
	if (strcmp(sub, "show") != 0 && strcmp(sub, "set") != 0)
		return usage("limits takes show, set or list");
	json_t *req = json_pack("{s:s}", "cmd", strcmp(sub, "show") == 0 ? "limits.show" : "limits.set");
	json_t *set = json_object();
	for (int i = 2; req && set && i < c->nwords; i++) {
		const char *eq = strchr(c->words[i], '=');
		char name[32];
		long n;
		if (!eq || eq == c->words[i] || (size_t)(eq - c->words[i]) >= sizeof(name)) {
			json_decref(req);
			json_decref(set);
			return usage("limits set takes NAME=N|role");
		}
		memcpy(name, c->words[i], (size_t)(eq - c->words[i]));
		name[eq - c->words[i]] = 0;
		if (strcmp(eq + 1, "role") == 0) {
			json_object_set_new(set, name, json_null());
		} else if (ctl_long(eq + 1, 0, 4000000000L, &n)) {
			json_object_set_new(set, name, json_integer(n));
		} else {
			json_decref(req);
			json_decref(set);
			return usage("a limit is a number >= 0 or role");
		}
	}
	if (check || !req || !set) {
		json_decref(req);
		json_decref(set);
		return check ? 0 : 1;
	}
	json_object_set_new(req, c->user ? "user" : "key", json_string(c->user ? c->user : c->key));
	if (c->nwords > 2)
		json_object_set_new(req, "set", set);
	else
		json_decref(set);
	return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS),
			  c->nwords > 2 ? ctl_show_done : ctl_show_limits);
}

/* --since: unix seconds, or an age (N followed by s, m, h or d). */
static int ctl_since(const char *v, long long *out)
{
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || end == v || n < 0)
		return -1;
	long long mul = 0;
	if (*end == '\0')
		mul = 0;
	else if (strcmp(end, "s") == 0)
		mul = 1;
	else if (strcmp(end, "m") == 0)
		mul = 60;
	else if (strcmp(end, "h") == 0)
		mul = 3600;
	else if (strcmp(end, "d") == 0)
		mul = 86400;
	else
		return -1;
	if (mul && n > (long long)time(NULL) / mul)
		return -1;
	*out = mul ? (long long)time(NULL) - n * mul : n;
	return 0;
}

/* The shape of a backends command, checked before connecting: 0 or 2. */
static int ctl_backends_check(struct ctl *c, const char *sub, const char *arg)
{
	bool add = sub && strcmp(sub, "add") == 0;
	if (!sub || (strcmp(sub, "list") && !add && strcmp(sub, "drain") && strcmp(sub, "enable") &&
		     strcmp(sub, "remove")))
		return usage("backends takes list, add, drain, enable or remove");
	if (strcmp(sub, "list") == 0 ? arg != NULL : !arg)
		return usage("backends list takes no NAME; add, drain, enable and remove take one");
	if (!add && (c->type || c->url || c->models || c->nsets))
		return usage("--type, --url, --models and --set go with backends add");
	if (add && !c->type)
		return usage("backends add needs --type synthetic|openai|ollama");
	return 0;
}

static int ctl_backends(struct ctl *c, const char *sub, const char *arg)
{
	json_t *req;
	void (*show)(json_t *) = ctl_show_done;
	if (strcmp(sub, "list") == 0) {
		req = json_pack("{s:s}", "cmd", "backends.list");
		show = ctl_show_backends;
	} else if (strcmp(sub, "add") == 0) {
		json_t *def = json_pack("{s:s}", "type", c->type);
		if (def && c->url)
			json_object_set_new(def, "url", json_string(c->url));
		if (def && c->models)
			json_object_set_new(def, "models", json_string(c->models));
		for (int i = 0; def && i < c->nsets; i++) {
			const char *eq = strchr(c->sets[i], '=');
			char key[64];
			size_t kl = (size_t)(eq - c->sets[i]);
			if (kl >= sizeof(key)) {
				json_decref(def);
				return usage("--set: the key is too long");
			}
			memcpy(key, c->sets[i], kl);
			key[kl] = '\0';
			json_object_set_new(def, key, json_string(eq + 1));
		}
		req = json_pack("{s:s,s:s,s:o}", "cmd", "backends.add", "name", arg, "backend", def);
	} else {
		char cmd[32];
		snprintf(cmd, sizeof(cmd), "backends.%s", sub);
		req = json_pack("{s:s,s:s}", "cmd", cmd, "name", arg);
	}
	return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), show);
}

static int ctl_usage(struct ctl *c)
{
	json_t *req = json_pack("{s:s}", "cmd", "usage");
	long long since = 0;
	if (c->since && ctl_since(c->since, &since) < 0) {
		json_decref(req);
		return usage("--since takes unix seconds or an age like 90m, 24h, 7d");
	}
	if (req && c->user)
		json_object_set_new(req, "user", json_string(c->user));
	if (req && c->key)
		json_object_set_new(req, "key", json_string(c->key));
	if (req && c->since)
		json_object_set_new(req, "since", json_integer(since));
	return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), ctl_show_usage);
}

/* log level [control|dataplane] [LEVEL]: the shape is checked before
 * connecting (0 or 2), then control is asked. */
static int ctl_log(struct ctl *c)
{
	const char *proc = NULL, *level = NULL;
	if (c->nwords < 2 || strcmp(c->words[1], "level") != 0)
		return usage("log takes level [control|dataplane] [LEVEL]");
	for (int i = 2; i < c->nwords; i++) {
		const char *w = c->words[i];
		if (!proc && !level && (strcmp(w, "control") == 0 || strcmp(w, "dataplane") == 0))
			proc = w;
		else if (!level)
			level = w;
		else
			return usage("log level takes [control|dataplane] [LEVEL]");
	}
	if (ctl_socket_path(c) < 0 || ctl_connect(c) < 0)
		return 1;
	json_t *req = json_pack("{s:s}", "cmd", "log.level");
	if (req && proc)
		json_object_set_new(req, "proc", json_string(proc));
	if (req && level)
		json_object_set_new(req, "level", json_string(level));
	return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), ctl_show_log_levels);
}

/* config show | config reload. */
static int ctl_config(struct ctl *c)
{
	bool show = c->nwords == 2 && strcmp(c->words[1], "show") == 0;
	bool reload = c->nwords == 2 && strcmp(c->words[1], "reload") == 0;
	if (!show && !reload)
		return usage("config takes show or reload");
	if (ctl_socket_path(c) < 0 || ctl_connect(c) < 0)
		return 1;
	json_t *req = json_pack("{s:s}", "cmd", show ? "config.show" : "config.reload");
	return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), show ? ctl_show_config : ctl_show_reload);
}

static int ctl_run(struct ctl *c)
{
	const char *cmd = c->words[0];
	const char *sub = c->nwords > 1 ? c->words[1] : NULL;
	const char *arg = c->nwords > 2 ? c->words[2] : NULL;
	bool stats = strcmp(cmd, "stats") == 0;
	bool conns = strcmp(cmd, "conns") == 0;
	bool slist = strcmp(cmd, "sessions") == 0 && sub && strcmp(sub, "list") == 0;
	bool uadd = strcmp(cmd, "users") == 0 && sub && strcmp(sub, "add") == 0;
	bool keys = strcmp(cmd, "keys") == 0;
	bool limits = strcmp(cmd, "limits") == 0;
	bool backends = strcmp(cmd, "backends") == 0;
	bool use = strcmp(cmd, "usage") == 0;
	if (c->key && !use && !limits)
		return usage("--key goes with usage or limits");
	if (c->since && !use)
		return usage("--since goes with usage");
	if ((c->type || c->url || c->models || c->nsets) && !backends)
		return usage("--type, --url, --models and --set go with backends add");
	if (limits) {
		int rc = ctl_limits(c, true);
		if (rc)
			return rc;
		if (ctl_socket_path(c) < 0 || ctl_connect(c) < 0)
			return 1;
		return ctl_limits(c, false);
	}
	if (c->watch && !stats)
		return usage("--watch goes with stats");
	if (c->worker >= 0 && !conns)
		return usage("--worker goes with conns");
	if ((c->user && !slist && !keys && !use) || (c->limit >= 0 && !slist))
		return usage("--user and --limit go with sessions list (--user also with keys and usage)");
	if (c->label && !keys)
		return usage("--label goes with keys create");
	if (c->role && !uadd)
		return usage("--role goes with users add");
	if (strcmp(cmd, "log") == 0)
		return ctl_log(c);
	if (strcmp(cmd, "config") == 0)
		return ctl_config(c);
	if (c->nwords > 3 || (c->nwords > 2 && strcmp(cmd, "users") != 0 && strcmp(cmd, "sessions") != 0 &&
			      strcmp(cmd, "store") != 0 && !keys && !backends))
		return usage("too many arguments");

	if (strcmp(cmd, "status") == 0 || stats || strcmp(cmd, "workers") == 0 || conns ||
	    strcmp(cmd, "drain") == 0) {
		if (sub)
			return usage("too many arguments");
	} else if (strcmp(cmd, "sessions") == 0) {
		if (!sub || (strcmp(sub, "list") == 0 ? arg != NULL : !arg) ||
		    (strcmp(sub, "list") && strcmp(sub, "show") && strcmp(sub, "kill")))
			return usage("sessions takes list, show ID or kill ID");
	} else if (strcmp(cmd, "users") == 0) {
		int rc = ctl_users_check(c, sub, arg);
		if (rc)
			return rc;
	} else if (strcmp(cmd, "store") == 0) {
		if (!sub || (strcmp(sub, "stats") == 0 ? arg != NULL : strcmp(sub, "backup") || !arg))
			return usage("store takes stats or backup PATH");
	} else if (keys) {
		int rc = ctl_keys_check(c, sub, arg);
		if (rc)
			return rc;
	} else if (backends) {
		int rc = ctl_backends_check(c, sub, arg);
		if (rc)
			return rc;
	} else if (use) {
		if (sub)
			return usage("too many arguments");
	} else {
		char msg[160];
		snprintf(msg, sizeof(msg), "unknown command %.100s", cmd);
		return usage(msg);
	}

	if (ctl_socket_path(c) < 0)
		return 1;
	if (ctl_connect(c) < 0)
		return 1;

	if (strcmp(cmd, "status") == 0)
		return ctl_result(c, ctl_call(c, json_pack("{s:s}", "cmd", "status"), NULL, 0, CTL_TIMEOUT_MS),
				  ctl_show_status);
	if (strcmp(cmd, "drain") == 0)
		return ctl_result(c, ctl_call(c, json_pack("{s:s}", "cmd", "drain"), NULL, 0, CTL_TIMEOUT_MS),
				  ctl_show_drain);
	if (stats && c->watch) {
		if (c->interval_s == 0)
			c->interval_s = 1.0;
		return cmd_stats_watch(c);
	}
	if (stats)
		return ctl_result(c, ctl_call(c, json_pack("{s:s}", "cmd", "stats"), NULL, 0, CTL_TIMEOUT_MS),
				  ctl_show_stats_once);
	if (strcmp(cmd, "workers") == 0)
		return ctl_result(c, ctl_call(c, json_pack("{s:s}", "cmd", "workers"), NULL, 0, CTL_TIMEOUT_MS),
				  ctl_show_workers);
	if (conns) {
		json_t *req = json_pack("{s:s}", "cmd", "conns");
		if (req && c->worker >= 0)
			json_object_set_new(req, "worker", json_integer(c->worker));
		return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), ctl_show_conns);
	}
	if (slist) {
		json_t *req = json_pack("{s:s}", "cmd", "sessions.list");
		if (req && c->user)
			json_object_set_new(req, "user", json_string(c->user));
		if (req && c->limit >= 0)
			json_object_set_new(req, "limit", json_integer(c->limit));
		return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), ctl_show_sessions);
	}
	if (strcmp(cmd, "sessions") == 0) {
		bool show = strcmp(sub, "show") == 0;
		json_t *req = json_pack("{s:s,s:s}", "cmd", show ? "sessions.show" : "sessions.kill", "id", arg);
		return ctl_result(c, ctl_call(c, req, NULL, 0, CTL_TIMEOUT_MS), show ? ctl_show_session : ctl_show_done);
	}
	if (strcmp(cmd, "users") == 0)
		return ctl_users(c, sub, arg);
	if (keys)
		return ctl_keys(c, sub, arg);
	if (backends)
		return ctl_backends(c, sub, arg);
	if (use)
		return ctl_usage(c);
	if (strcmp(sub, "stats") == 0)
		return ctl_result(c, ctl_call(c, json_pack("{s:s}", "cmd", "store.stats"), NULL, 0,
					      CTL_TIMEOUT_MS), ctl_show_store_stats);
	/* Control runs elsewhere (another cwd): the path goes absolute. */
	char path[CONF_PATH_MAX];
	if (arg[0] == '/') {
		if ((size_t)snprintf(path, sizeof(path), "%s", arg) >= sizeof(path))
			return usage("PATH is too long");
	} else {
		char cwd[CONF_PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd))) {
			fprintf(stderr, "sluicectl: getcwd: %s\n", strerror(errno));
			return 1;
		}
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", cwd, arg) >= sizeof(path))
			return usage("PATH is too long");
	}
	return ctl_result(c, ctl_call(c, json_pack("{s:s,s:s}", "cmd", "store.backup", "path", path), NULL, 0,
				      CTL_BACKUP_TIMEOUT_MS), ctl_show_done);
}

int main(int argc, char **argv)
{
	static struct ctl c = { .count = -1, .worker = -1, .limit = -1, .fd = -1 };
	int rc = ctl_parse(&c, argc, argv);
	if (rc)
		return rc == CTL_HELP ? 0 : rc;
	if (c.nwords == 0)
		return usage("no command");
	if (sodium_init() < 0) {
		fprintf(stderr, "sluicectl: libsodium initialisation failed\n");
		return 1;
	}
	rc = ctl_run(&c);
	if (c.fd >= 0)
		close(c.fd);
	return rc;
}
