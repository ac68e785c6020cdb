/*
 * sluice.conf reader. Table-driven: each section lists its keys with a value
 * kind, the field's offset and its allowed range, so adding a key is one line
 * and every key gets the same strict checks (duplicate, empty, junk, range).
 * The file is parsed into a scratch copy and only copied out on success, so a
 * failed reload leaves the caller's configuration untouched.
 */
#include "sluice/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "sluice/common.h"

#define CONF_LINE_MAX 4096u
/* sockaddr_un.sun_path holds 108 bytes including the NUL. */
#define CONF_SOCK_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

enum val_kind {
	K_U32,
	K_BOOL,
	K_TRANSPORT,
	K_BATCH_MODE,
	K_LISTEN,
	K_POW2,
	K_PATH,
	K_SOCK_PATH,
	K_BACKEND_TYPE,
	K_MODELS,
	K_COST,
};

struct key_spec {
	const char *name;
	enum val_kind kind;
	size_t off; /* into struct sluice_conf, or struct conf_backend in [backend.*] */
	uint32_t min, max;
};

#define CF(f) offsetof(struct sluice_conf, f)
#define BF(f) offsetof(struct conf_backend, f)

static const struct key_spec dataplane_keys[] = {
	{ "transport", K_TRANSPORT, CF(transport), 0, 0 },
	{ "workers", K_U32, CF(workers), 1, 64 },
	{ "listen", K_LISTEN, 0, 1, 65535 },
	{ "max_conns", K_U32, CF(max_conns), 1, 1048576 },
	{ "idle_timeout_s", K_U32, CF(idle_timeout_s), 1, 86400 },
	{ "header_timeout_s", K_U32, CF(header_timeout_s), 1, 3600 },
	{ "sse_keepalive_s", K_U32, CF(sse_keepalive_s), 1, 3600 },
	{ "ws_max_message", K_U32, CF(ws_max_message), 125, 67108864 },
	{ "max_pending_bytes", K_U32, CF(max_pending_bytes), 4096, 1073741824 },
	{ "pin_workers", K_BOOL, CF(pin_workers), 0, 0 },
	{ "ws_echo", K_BOOL, CF(ws_echo), 0, 0 },
};

static const struct key_spec channel_keys[] = {
	{ "path", K_PATH, CF(chan_path), 0, 0 },
	{ "ring_bytes", K_POW2, CF(ring_bytes), 65536, 268435456 },
};

static const struct key_spec control_keys[] = {
	{ "admin_socket", K_SOCK_PATH, CF(admin_socket), 0, 0 },
	{ "store", K_PATH, CF(store), 0, 0 },
};

static const struct key_spec batching_keys[] = {
	{ "mode", K_BATCH_MODE, CF(batch_mode), 0, 0 },
	{ "max_delay_us", K_U32, CF(max_delay_us), 0, 1000000 },
	{ "max_bytes", K_U32, CF(max_bytes), 64, 16777216 },
};

/* type and models are indexes 0 and 1: a backend must set both. */
static const struct key_spec backend_keys[] = {
	{ "type", K_BACKEND_TYPE, BF(type), 0, 0 },
	{ "models", K_MODELS, 0, 0, 0 },
	{ "ttft_ms", K_U32, BF(ttft_ms), 0, 3600000 },
	{ "tokens_per_s", K_U32, BF(tokens_per_s), 1, 1000000 },
	{ "answer_tokens", K_U32, BF(answer_tokens), 1, 1000000 },
	{ "max_concurrency", K_U32, BF(max_concurrency), 0, 1000000 },
	{ "context_window", K_U32, BF(context_window), 1, 100000000 },
	{ "cost_in_per_mtok", K_COST, BF(cost_in_per_mtok), 0, 1000000 },
	{ "cost_out_per_mtok", K_COST, BF(cost_out_per_mtok), 0, 1000000 },
};
#define BACKEND_KEY_TYPE 0u
#define BACKEND_KEY_MODELS 1u

struct section_spec {
	const char *name;
	const struct key_spec *keys;
	size_t nkeys;
};

static const struct section_spec sections[] = {
	{ "dataplane", dataplane_keys, SLUICE_ARRAY_LEN(dataplane_keys) },
	{ "channel", channel_keys, SLUICE_ARRAY_LEN(channel_keys) },
	{ "control", control_keys, SLUICE_ARRAY_LEN(control_keys) },
	{ "batching", batching_keys, SLUICE_ARRAY_LEN(batching_keys) },
};

static const struct section_spec backend_section = {
	"backend", backend_keys, SLUICE_ARRAY_LEN(backend_keys)
};

struct parser {
	const char *file;
	unsigned line;
	struct sluice_conf *c;
	const struct section_spec *sec; /* NULL before the first header */
	struct conf_backend *be;        /* the open [backend.NAME], else NULL */
	unsigned be_line;               /* line of its header, for missing-key errors */
	uint32_t seen_keys;             /* bit i: key i of sec already set */
	uint32_t seen_sections;         /* bit i: sections[i] already opened */
	char *err;
	size_t errlen;
};

_Static_assert(SLUICE_ARRAY_LEN(dataplane_keys) <= 32 && SLUICE_ARRAY_LEN(backend_keys) <= 32,
	       "seen_keys is a 32-bit mask");
_Static_assert(CONF_SOCK_PATH_MAX <= CONF_PATH_MAX, "admin_socket must fit its field");
_Static_assert(sizeof(((struct sluice_conf *)0)->listen_addr) >= INET_ADDRSTRLEN,
	       "listen_addr must hold a dotted quad");

/* Writes "FILE:LINE: reason" ("FILE: reason" for line 0) into err. A message
 * longer than the caller's buffer ends in "..." so the cut is visible. */
static void format_err(char *err, size_t errlen, const char *file, unsigned line,
		       const char *fmt, va_list ap)
{
	if (errlen == 0)
		return;
	int n = line ? snprintf(err, errlen, "%s:%u: ", file, line)
		     : snprintf(err, errlen, "%s: ", file);
	int m = 0;
	if (n >= 0 && (size_t)n < errlen)
		m = vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	bool cut = n < 0 || m < 0 || (size_t)n + (size_t)m >= errlen;
	if (cut && errlen >= 4)
		memcpy(err + errlen - 4, "...", 4);
}

static int fail(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports a problem on the current line; always returns -1. */
static int fail(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	format_err(p->err, p->errlen, p->file, p->line, fmt, ap);
	va_end(ap);
	return -1;
}

static int fail_file(char *err, size_t errlen, const char *file, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Reports a problem that belongs to no line; always returns -1. */
static int fail_file(char *err, size_t errlen, const char *file, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	format_err(err, errlen, file, 0, fmt, ap);
	va_end(ap);
	return -1;
}

static inline bool is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* Trims s in place and returns the first non-blank byte. */
static char *trim(char *s)
{
	while (is_ws(*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && is_ws(s[n - 1]))
		s[--n] = '\0';
	return s;
}

enum num_status { NUM_OK, NUM_NOT_NUMBER, NUM_NEGATIVE, NUM_RANGE };

/* Plain decimal only: no sign, no hex, no suffix, so "1e3" or "0x10" or
 * "10k" are errors instead of strtoul's silent partial reads. */
static enum num_status parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	if (*s == '-' && s[1] >= '0' && s[1] <= '9')
		return NUM_NEGATIVE;
	if (*s == '\0')
		return NUM_NOT_NUMBER;
	uint64_t v = 0;
	bool big = false;
	for (const char *q = s; *q; q++) {
		if (*q < '0' || *q > '9')
			return NUM_NOT_NUMBER;
		if (!big) {
			v = v * 10 + (uint64_t)(*q - '0');
			if (v > UINT32_MAX)
				big = true;
		}
	}
	if (big || v < min || v > max)
		return NUM_RANGE;
	*out = (uint32_t)v;
	return NUM_OK;
}

/* DIGITS[.DIGITS]: no exponent, inf or nan, which strtod would accept. */
static enum num_status parse_cost(const char *s, double max, double *out)
{
	if (*s == '-' && ((s[1] >= '0' && s[1] <= '9') || s[1] == '.'))
		return NUM_NEGATIVE;
	const char *q = s;
	size_t int_digits = 0, frac_digits = 0;
	while (*q >= '0' && *q <= '9') {
		q++;
		int_digits++;
	}
	if (*q == '.') {
		q++;
		while (*q >= '0' && *q <= '9') {
			q++;
			frac_digits++;
		}
	}
	if (*q != '\0' || int_digits == 0 || (q[-1] == '.' && frac_digits == 0))
		return NUM_NOT_NUMBER;
	errno = 0;
	double v = strtod(s, NULL);
	if (errno != 0 || v > max)
		return NUM_RANGE;
	*out = v;
	return NUM_OK;
}

static int number_error(struct parser *p, const struct key_spec *k, enum num_status st,
			const char *v)
{
	switch (st) {
	case NUM_NEGATIVE:
		return fail(p, "%s: must not be negative: '%s'", k->name, v);
	case NUM_RANGE:
		return fail(p, "%s: out of range %u..%u: '%s'", k->name, k->min, k->max, v);
	case NUM_NOT_NUMBER:
	case NUM_OK:
		break;
	}
	return fail(p, "%s: not a number: '%s'", k->name, v);
}

/* "A.B.C.D:PORT" with a dotted-quad IPv4 address (inet_pton rules: no
 * leading zeros, each part 0..255). */
static int parse_listen(struct parser *p, const struct key_spec *k, const char *v)
{
	const char *colon = strrchr(v, ':');
	size_t alen = colon ? (size_t)(colon - v) : 0;
	char addr[INET_ADDRSTRLEN];
	struct in_addr in;
	if (!colon || alen == 0 || alen >= sizeof(addr))
		return fail(p, "%s: expected A.B.C.D:PORT: '%s'", k->name, v);
	memcpy(addr, v, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, &in) != 1)
		return fail(p, "%s: bad IPv4 address: '%s'", k->name, v);
	uint32_t port;
	enum num_status st = parse_u32(colon + 1, k->min, k->max, &port);
	if (st == NUM_RANGE || st == NUM_NEGATIVE)
		return fail(p, "%s: port out of range 1..65535: '%s'", k->name, v);
	if (st != NUM_OK)
		return fail(p, "%s: port not a number: '%s'", k->name, v);
	memcpy(p->c->listen_addr, addr, alen + 1);
	p->c->listen_port = (uint16_t)port;
	return 0;
}

/* Absolute paths only, so the processes do not depend on their working
 * directory; a path that does not fit is an error, never cut short. */
static int parse_path(struct parser *p, const struct key_spec *k, const char *v, char *dst,
		      size_t cap)
{
	size_t n = strlen(v);
	if (n >= cap)
		return fail(p, "%s: longer than %zu bytes", k->name, cap - 1);
	if (v[0] != '/')
		return fail(p, "%s: not an absolute path: '%s'", k->name, v);
	memcpy(dst, v, n + 1);
	return 0;
}

static bool model_name_ok(const char *m)
{
	for (; *m; m++)
		if (*m <= ' ' || *m > '~')
			return false;
	return true;
}

/* "a, b, c" into be->models. A model may belong to one backend only, so
 * routing by model is unambiguous. Splits v in place. */
static int parse_models(struct parser *p, const struct key_spec *k, char *v)
{
	struct conf_backend *be = p->be;
	be->nmodels = 0;
	for (char *item = v; item;) {
		char *comma = strchr(item, ',');
		if (comma)
			*comma = '\0';
		char *m = trim(item);
		item = comma ? comma + 1 : NULL;
		size_t n = strlen(m);
		if (n == 0)
			return fail(p, "%s: empty model name", k->name);
		if (n >= CONF_NAME_MAX)
			return fail(p, "%s: model name longer than %d bytes", k->name,
				    CONF_NAME_MAX - 1);
		if (!model_name_ok(m))
			return fail(p, "%s: bad model name '%s'", k->name, m);
		if (be->nmodels == CONF_MAX_MODELS)
			return fail(p, "%s: more than %d models", k->name, CONF_MAX_MODELS);
		for (uint32_t i = 0; i < be->nmodels; i++)
			if (strcmp(be->models[i], m) == 0)
				return fail(p, "%s: model '%s' listed twice", k->name, m);
		for (uint32_t b = 0; b + 1 < p->c->nbackends; b++) {
			const struct conf_backend *o = &p->c->backends[b];
			for (uint32_t i = 0; i < o->nmodels; i++)
				if (strcmp(o->models[i], m) == 0)
					return fail(p, "%s: model '%s' is already served by backend '%s'",
						    k->name, m, o->name);
		}
		memcpy(be->models[be->nmodels++], m, n + 1);
	}
	return 0;
}

static int set_value(struct parser *p, const struct key_spec *k, char *v)
{
	char *base = p->be ? (char *)p->be : (char *)p->c;
	void *field = base + k->off;
	enum num_status st;

	switch (k->kind) {
	case K_U32: {
		uint32_t x;
		st = parse_u32(v, k->min, k->max, &x);
		if (st != NUM_OK)
			return number_error(p, k, st, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_POW2: {
		uint32_t x;
		st = parse_u32(v, k->min, k->max, &x);
		if (st != NUM_OK)
			return number_error(p, k, st, v);
		if ((x & (x - 1)) != 0)
			return fail(p, "%s: not a power of two: '%s'", k->name, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_COST: {
		double x;
		st = parse_cost(v, k->max, &x);
		if (st != NUM_OK)
			return number_error(p, k, st, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_BOOL: {
		bool x;
		if (strcmp(v, "true") == 0)
			x = true;
		else if (strcmp(v, "false") == 0)
			x = false;
		else
			return fail(p, "%s: expected true or false: '%s'", k->name, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_TRANSPORT: {
		enum conf_transport x;
		if (strcmp(v, "kernel") == 0)
			x = CONF_TRANSPORT_KERNEL;
		else if (strcmp(v, "dpdk") == 0)
			x = CONF_TRANSPORT_DPDK;
		else
			return fail(p, "%s: expected kernel or dpdk: '%s'", k->name, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_BATCH_MODE: {
		enum conf_batch_mode x;
		if (strcmp(v, "adaptive") == 0)
			x = CONF_BATCH_ADAPTIVE;
		else if (strcmp(v, "off") == 0)
			x = CONF_BATCH_OFF;
		else
			return fail(p, "%s: expected adaptive or off: '%s'", k->name, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_BACKEND_TYPE: {
		enum conf_backend_type x;
		if (strcmp(v, "synthetic") == 0)
			x = CONF_BACKEND_SYNTHETIC;
		else
			return fail(p, "%s: expected synthetic: '%s'", k->name, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_LISTEN:
		return parse_listen(p, k, v);
	case K_PATH:
		return parse_path(p, k, v, field, CONF_PATH_MAX);
	case K_SOCK_PATH:
		return parse_path(p, k, v, field, CONF_SOCK_PATH_MAX);
	case K_MODELS:
		return parse_models(p, k, v);
	}
	return fail(p, "internal error: key kind %d", (int)k->kind);
}

static void backend_defaults(struct conf_backend *be)
{
	memset(be, 0, sizeof(*be));
	be->type = CONF_BACKEND_SYNTHETIC;
	be->ttft_ms = 200;
	be->tokens_per_s = 20;
	be->answer_tokens = 32;
	be->max_concurrency = 0;
	be->context_window = 8192;
}

/* A backend must name its type and models; checked when its section ends. */
static int close_section(struct parser *p)
{
	if (!p->be)
		return 0;
	unsigned line = p->line;
	p->line = p->be_line;
	int rc = 0;
	if (!(p->seen_keys & (1u << BACKEND_KEY_TYPE)))
		rc = fail(p, "backend '%s' has no type", p->be->name);
	else if (!(p->seen_keys & (1u << BACKEND_KEY_MODELS)))
		rc = fail(p, "backend '%s' has no models", p->be->name);
	p->line = line;
	p->be = NULL;
	return rc;
}

static bool backend_name_ok(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len >= CONF_NAME_MAX)
		return false;
	for (; *n; n++) {
		char ch = *n;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

/* s is the trimmed line starting with '['. */
static int open_section(struct parser *p, char *s)
{
	size_t n = strlen(s);
	if (n < 3 || s[n - 1] != ']')
		return fail(p, "bad section header '%s'", s);
	s[n - 1] = '\0';
	char *name = trim(s + 1);
	if (close_section(p) != 0)
		return -1;
	p->seen_keys = 0;

	if (strncmp(name, "backend.", 8) == 0) {
		const char *bname = name + 8;
		if (!backend_name_ok(bname))
			return fail(p, "bad backend name '%s' (1..%d of A-Z a-z 0-9 _ -)", bname,
				    CONF_NAME_MAX - 1);
		for (uint32_t i = 0; i < p->c->nbackends; i++)
			if (strcmp(p->c->backends[i].name, bname) == 0)
				return fail(p, "duplicate section [%s]", name);
		if (p->c->nbackends == CONF_MAX_BACKENDS)
			return fail(p, "more than %d backends", CONF_MAX_BACKENDS);
		p->be = &p->c->backends[p->c->nbackends++];
		backend_defaults(p->be);
		memcpy(p->be->name, bname, strlen(bname) + 1);
		p->be_line = p->line;
		p->sec = &backend_section;
		return 0;
	}
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(sections); i++) {
		if (strcmp(name, sections[i].name) != 0)
			continue;
		if (p->seen_sections & (1u << i))
			return fail(p, "duplicate section [%s]", name);
		p->seen_sections |= 1u << i;
		p->sec = &sections[i];
		return 0;
	}
	return fail(p, "unknown section [%s]", name);
}

static int key_value(struct parser *p, char *s)
{
	char *eq = strchr(s, '=');
	if (!eq)
		return fail(p, "missing '=' in '%s'", s);
	*eq = '\0';
	char *key = trim(s);
	char *val = trim(eq + 1);
	if (*key == '\0')
		return fail(p, "missing key before '='");
	if (!p->sec)
		return fail(p, "key '%s' outside a section", key);
	const struct section_spec *sec = p->sec;
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct key_spec *k = &sec->keys[i];
		if (strcmp(k->name, key) != 0)
			continue;
		if (p->seen_keys & (1u << i))
			return fail(p, "duplicate key '%s'", key);
		p->seen_keys |= 1u << i;
		if (*val == '\0')
			return fail(p, "%s: empty value", key);
		return set_value(p, k, val);
	}
	if (p->be)
		return fail(p, "unknown key '%s' in [backend.%s]", key, p->be->name);
	return fail(p, "unknown key '%s' in [%s]", key, sec->name);
}

/* Drops a '#' or ';' comment: at the start of the (left-trimmed) line, or
 * after a blank, so "a#b" stays a value but "a # b" is "a". */
static void strip_comment(char *s)
{
	for (char *q = s; *q; q++) {
		if ((*q == '#' || *q == ';') && (q == s || is_ws(q[-1]))) {
			*q = '\0';
			return;
		}
	}
}

static int parse_line(struct parser *p, char *line)
{
	char *s = line;
	while (is_ws(*s))
		s++;
	strip_comment(s);
	s = trim(s);
	if (*s == '\0')
		return 0;
	if (*s == '[')
		return open_section(p, s);
	return key_value(p, s);
}

enum read_status { RL_LINE, RL_EOF, RL_TOO_LONG, RL_NUL, RL_ERROR };

/* Reads one line without its '\n' into buf (CONF_LINE_MAX + 1 bytes). Stops
 * at the first byte beyond the limit rather than growing a buffer. */
static enum read_status read_line(FILE *f, char *buf)
{
	size_t n = 0;
	int ch;
	while ((ch = getc(f)) != EOF) {
		if (ch == '\n')
			break;
		if (ch == '\0')
			return RL_NUL;
		if (n == CONF_LINE_MAX)
			return RL_TOO_LONG;
		buf[n++] = (char)ch;
	}
	if (ch == EOF) {
		if (ferror(f))
			return RL_ERROR;
		if (n == 0)
			return RL_EOF;
	}
	buf[n] = '\0';
	return RL_LINE;
}

void conf_defaults(struct sluice_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->transport = CONF_TRANSPORT_KERNEL;
	c->workers = 1;
	memcpy(c->listen_addr, "127.0.0.1", sizeof("127.0.0.1"));
	c->listen_port = 8080;
	c->max_conns = 16384;
	c->idle_timeout_s = 60;
	c->header_timeout_s = 10;
	c->sse_keepalive_s = 15;
	c->ws_max_message = 65536;
	c->max_pending_bytes = 1u << 20;
	c->pin_workers = true;
	memcpy(c->chan_path, "/dev/shm/sluice", sizeof("/dev/shm/sluice"));
	c->ring_bytes = 4u << 20;
	memcpy(c->admin_socket, "/tmp/sluice-admin.sock", sizeof("/tmp/sluice-admin.sock"));
	memcpy(c->store, "/tmp/sluice-store", sizeof("/tmp/sluice-store"));
	c->batch_mode = CONF_BATCH_ADAPTIVE;
	c->max_delay_us = 2000;
	c->max_bytes = 16384;
	c->nbackends = 0;
}

int conf_load(const char *path, struct sluice_conf *c, char *err, size_t errlen)
{
	if (errlen > 0)
		err[0] = '\0';
	size_t plen = strlen(path);
	if (plen >= CONF_PATH_MAX)
		return fail_file(err, errlen, path, "path longer than %d bytes", CONF_PATH_MAX - 1);

	/* Scratch copy (about 20 KiB): c is replaced only by a file that loads. */
	struct sluice_conf *tmp = malloc(sizeof(*tmp));
	char *buf = malloc(CONF_LINE_MAX + 1);
	FILE *f = NULL;
	int rc = -1;
	if (!tmp || !buf) {
		fail_file(err, errlen, path, "out of memory");
		goto fail;
	}
	conf_defaults(tmp);
	memcpy(tmp->path, path, plen + 1);

	f = fopen(path, "r");
	if (!f) {
		fail_file(err, errlen, path, "cannot open: %s", strerror(errno));
		goto fail;
	}
	struct parser p = { .file = path, .c = tmp, .err = err, .errlen = errlen };
	for (;;) {
		enum read_status st = read_line(f, buf);
		if (st == RL_EOF)
			break;
		p.line++;
		if (st == RL_TOO_LONG) {
			fail(&p, "line longer than %u bytes", CONF_LINE_MAX);
			goto fail;
		}
		if (st == RL_NUL) {
			fail(&p, "NUL byte in line");
			goto fail;
		}
		if (st == RL_ERROR) {
			fail_file(err, errlen, path, "read error: %s", strerror(errno));
			goto fail;
		}
		if (parse_line(&p, buf) != 0)
			goto fail;
	}
	if (close_section(&p) != 0)
		goto fail;
	if (tmp->nbackends == 0) {
		fail_file(err, errlen, path, "no [backend.NAME] section");
		goto fail;
	}
	memcpy(c, tmp, sizeof(*c));
	rc = 0;
fail:
	if (f)
		fclose(f);
	free(buf);
	free(tmp);
	return rc;
}

const struct conf_backend *conf_backend_for_model(const struct sluice_conf *c, const char *model)
{
	if (!model)
		return NULL;
	for (uint32_t b = 0; b < c->nbackends; b++)
		for (uint32_t i = 0; i < c->backends[b].nmodels; i++)
			if (strcmp(c->backends[b].models[i], model) == 0)
				return &c->backends[b];
	return NULL;
}
