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

#include "sluice/chan.h"
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
	K_MODE,      /* octal permission bits */
	K_UNIX_NAME, /* user or group name, resolved by control at run time */
	K_ORIGINS,
	K_LCORES,
	K_TEXT,      /* rest of the line, max bytes incl. NUL */
	K_DEVICE,    /* printable non-blank ASCII, max bytes incl. NUL */
	K_IPV4_PREFIX,
	K_IPV4,
	K_MODEL,
};

struct key_spec {
	const char *name;
	enum val_kind kind;
	size_t off; /* into struct sluice_conf, or the open sub-section's struct */
	uint32_t min, max;
};

#define CF(f) offsetof(struct sluice_conf, f)
#define BF(f) offsetof(struct conf_backend, f)
#define AF(f) offsetof(struct conf_agent, f)
#define PF(f) offsetof(struct conf_port, f)
#define FSIZE(type, f) ((uint32_t)sizeof(((struct type *)0)->f))

/* Highest lcore id DPDK accepts (RTE_MAX_LCORE 128 in Debian's build). */
#define CONF_LCORE_MAX 127u

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
	{ "lcores", K_LCORES, CF(lcores), 0, FSIZE(sluice_conf, lcores) },
	{ "eal_args", K_TEXT, CF(eal_args), 0, FSIZE(sluice_conf, eal_args) },
};
#define DATAPLANE_KEY_TRANSPORT 0u
#define DATAPLANE_KEY_LCORES 11u

static const struct key_spec tcp_keys[] = {
	{ "snd_buf", K_U32, CF(tcp_snd_buf), 4096, 16777216 },
	{ "rcv_buf", K_U32, CF(tcp_rcv_buf), 4096, 16777216 },
	{ "syn_backlog", K_U32, CF(tcp_syn_backlog), 1, 1048576 },
	{ "time_wait_max", K_U32, CF(tcp_time_wait_max), 1, 1048576 },
	{ "keepalive_s", K_U32, CF(tcp_keepalive_s), 1, 86400 },
};

/* The smallest record payload a ring may allow: a 1 MiB request body (the
 * dataplane's limit) plus 64 KiB of request fields (path, headers, ids). */
#define CONF_RING_PAYLOAD_MIN ((1u << 20) + (64u << 10))

static const struct key_spec channel_keys[] = {
	{ "path", K_PATH, CF(chan_path), 0, 0 },
	{ "ring_bytes", K_POW2, CF(ring_bytes), 65536, 268435456 },
};

static const struct key_spec control_keys[] = {
	{ "admin_socket", K_SOCK_PATH, CF(admin_socket), 0, 0 },
	{ "store", K_PATH, CF(store), 0, 0 },
	{ "admin_socket_mode", K_MODE, CF(admin_socket_mode), 0, 0777 },
	{ "admin_socket_owner", K_UNIX_NAME, CF(admin_socket_owner), 0, 0 },
	{ "admin_socket_group", K_UNIX_NAME, CF(admin_socket_group), 0, 0 },
	{ "token_commit_ms", K_U32, CF(token_commit_ms), 1, 10000 },
	{ "store_map_mb", K_U32, CF(store_map_mb), 16, 1048576 },
};

static const struct key_spec auth_keys[] = {
	{ "session_ttl_s", K_U32, CF(session_ttl_s), 60, 31536000 },
	{ "allowed_origins", K_ORIGINS, 0, 0, 0 },
	{ "login_max_inflight", K_U32, CF(login_max_inflight), 1, 64 },
	{ "login_fail_user", K_U32, CF(login_fail_user), 1, 1000 },
	{ "login_fail_ip", K_U32, CF(login_fail_ip), 1, 10000 },
	{ "login_window_s", K_U32, CF(login_window_s), 1, 86400 },
	{ "pwhash_ops", K_U32, CF(pwhash_ops), 1, 10 },
	{ "pwhash_mem_kib", K_U32, CF(pwhash_mem_kib), 8, 4194304 },
	{ "cookie_secure", K_BOOL, CF(cookie_secure), 0, 0 },
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

static const struct key_spec agent_keys[] = {
	{ "model", K_MODEL, AF(model), 0, 0 },
	{ "description", K_TEXT, AF(description), 0, FSIZE(conf_agent, description) },
	{ "system_prompt", K_TEXT, AF(system_prompt), 0, FSIZE(conf_agent, system_prompt) },
};
#define AGENT_KEY_MODEL 0u

/* device and ipv4 are indexes 0 and 1: a port must set both. */
static const struct key_spec port_keys[] = {
	{ "device", K_DEVICE, PF(device), 0, FSIZE(conf_port, device) },
	{ "ipv4", K_IPV4_PREFIX, 0, 1, 32 },
	{ "gateway", K_IPV4, PF(gateway), 0, 0 },
	{ "mtu", K_U32, PF(mtu), 576, 9000 },
	{ "rx_desc", K_POW2, PF(rx_desc), 64, 16384 },
	{ "tx_desc", K_POW2, PF(tx_desc), 64, 16384 },
	{ "mbufs", K_U32, PF(mbufs), 255, 16777215 },
};
#define PORT_KEY_GATEWAY 2u

/* A sub-section is one of several ([backend.NAME], [agent.NAME], [port.N]);
 * `required` lists the keys it must set, checked when it ends. */
enum sub_kind { SUB_NONE, SUB_BACKEND, SUB_AGENT, SUB_PORT };

struct section_spec {
	const char *name;
	const struct key_spec *keys;
	size_t nkeys;
	enum sub_kind sub;
	uint32_t required; /* bit i: keys[i] must be set */
};

static const struct section_spec sections[] = {
	{ "dataplane", dataplane_keys, SLUICE_ARRAY_LEN(dataplane_keys), SUB_NONE, 0 },
	{ "tcp", tcp_keys, SLUICE_ARRAY_LEN(tcp_keys), SUB_NONE, 0 },
	{ "channel", channel_keys, SLUICE_ARRAY_LEN(channel_keys), SUB_NONE, 0 },
	{ "control", control_keys, SLUICE_ARRAY_LEN(control_keys), SUB_NONE, 0 },
	{ "auth", auth_keys, SLUICE_ARRAY_LEN(auth_keys), SUB_NONE, 0 },
	{ "batching", batching_keys, SLUICE_ARRAY_LEN(batching_keys), SUB_NONE, 0 },
};

static const struct section_spec backend_section = {
	"backend", backend_keys, SLUICE_ARRAY_LEN(backend_keys), SUB_BACKEND, 0x3u
};
static const struct section_spec agent_section = {
	"agent", agent_keys, SLUICE_ARRAY_LEN(agent_keys), SUB_AGENT, 1u << AGENT_KEY_MODEL
};
static const struct section_spec port_section = {
	"port", port_keys, SLUICE_ARRAY_LEN(port_keys), SUB_PORT, 0x3u
};

struct parser {
	const char *file;
	unsigned line;
	struct sluice_conf *c;
	const struct section_spec *sec; /* NULL before the first header */
	char *obj;                      /* struct the open section's offsets point into */
	char sub_name[CONF_NAME_MAX];   /* NAME or N of the open sub-section */
	unsigned sub_line;              /* line of its header, for missing-key errors */
	uint32_t seen_keys;             /* bit i: key i of sec already set */
	uint32_t seen_sections;         /* bit i: sections[i] already opened */
	unsigned transport_line;        /* 0: transport not set in the file */
	unsigned lcores_line;           /* 0: lcores not set in the file */
	uint32_t nlcores;               /* lcores listed by the lcores key */
	unsigned gateway_line;          /* of the open [port.N], 0: none */
	unsigned agent_model_line[CONF_MAX_AGENTS];
	char *err;
	size_t errlen;
};

_Static_assert(SLUICE_ARRAY_LEN(dataplane_keys) <= 32 && SLUICE_ARRAY_LEN(tcp_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(channel_keys) <= 32 && SLUICE_ARRAY_LEN(control_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(auth_keys) <= 32 && SLUICE_ARRAY_LEN(batching_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(backend_keys) <= 32 && SLUICE_ARRAY_LEN(agent_keys) <= 32 &&
		       SLUICE_ARRAY_LEN(port_keys) <= 32,
	       "seen_keys is a 32-bit mask");
_Static_assert(SLUICE_ARRAY_LEN(sections) <= 32, "seen_sections is a 32-bit mask");
_Static_assert(CONF_SOCK_PATH_MAX <= CONF_PATH_MAX, "admin_socket must fit its field");
_Static_assert(sizeof(((struct sluice_conf *)0)->listen_addr) >= INET_ADDRSTRLEN,
	       "listen_addr must hold a dotted quad");
_Static_assert(CONF_MAX_PORTS <= 10, "[port.N] takes a single digit");

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

/* One model id: 1..63 printable non-blank bytes. */
static int check_model(struct parser *p, const struct key_spec *k, const char *m)
{
	size_t n = strlen(m);
	if (n == 0)
		return fail(p, "%s: empty model name", k->name);
	if (n >= CONF_NAME_MAX)
		return fail(p, "%s: model name longer than %d bytes", k->name, CONF_NAME_MAX - 1);
	if (!model_name_ok(m))
		return fail(p, "%s: bad model name '%s'", k->name, m);
	return 0;
}

/* "a, b, c" into the open backend's models. A model may belong to one
 * backend only, so routing by model is unambiguous. Splits v in place. */
static int parse_models(struct parser *p, const struct key_spec *k, char *v)
{
	struct conf_backend *be = (struct conf_backend *)p->obj;
	be->nmodels = 0;
	for (char *item = v; item;) {
		char *comma = strchr(item, ',');
		if (comma)
			*comma = '\0';
		char *m = trim(item);
		item = comma ? comma + 1 : NULL;
		if (check_model(p, k, m) != 0)
			return -1;
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
		memcpy(be->models[be->nmodels++], m, strlen(m) + 1);
	}
	return 0;
}

/* Permission bits in octal as chmod takes them (0660, 660). The admin socket
 * hands out full control of the appliance, so others may never write
 * (connect) to it, and setuid/setgid/sticky bits mean nothing on a socket. */
static int parse_mode(struct parser *p, const struct key_spec *k, const char *v, void *field)
{
	size_t n = strlen(v);
	if (n > 4 || strspn(v, "01234567") != n)
		return fail(p, "%s: expected an octal mode like 0660: '%s'", k->name, v);
	uint32_t x = (uint32_t)strtoul(v, NULL, 8);
	if (x > k->max)
		return fail(p, "%s: out of range 0..0%o: '%s'", k->name, k->max, v);
	if (x & 0002)
		return fail(p, "%s: must not be writable by others: '%s'", k->name, v);
	memcpy(field, &x, sizeof(x));
	return 0;
}

/* User and group names as useradd/groupadd accept them by default (letter or
 * '_' first, then letters, digits, '_', '.', '-', an optional final '$'),
 * up to Linux's 32 bytes. Only the spelling is checked here: the name is
 * looked up when control creates the socket, on the machine that runs it. */
static int parse_unix_name(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	bool ok = n <= 32;
	for (size_t i = 0; ok && i < n; i++) {
		char ch = v[i];
		bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
		bool rest = (ch >= '0' && ch <= '9') || ch == '.' || ch == '-';
		if (i == 0)
			ok = alpha;
		else if (ch == '$')
			ok = i == n - 1;
		else
			ok = alpha || rest;
	}
	if (!ok)
		return fail(p, "%s: bad name '%s' (1..32 of A-Z a-z 0-9 _ . -, first a letter or _)",
			    k->name, v);
	memcpy(dst, v, n + 1);
	return 0;
}

/* "http://host[:port]" or "https://..." exactly as a browser serializes an
 * Origin header (lowercase, no path, no default port), so the comparison at
 * upgrade time is a plain string match and a listed origin can match. */
static int check_origin(struct parser *p, const struct key_spec *k, const char *o)
{
	const char *host;
	const char *dflt;
	if (strncmp(o, "http://", 7) == 0) {
		host = o + 7;
		dflt = "80";
	} else if (strncmp(o, "https://", 8) == 0) {
		host = o + 8;
		dflt = "443";
	} else {
		goto bad;
	}
	const char *q = host;
	if (*q == '[') {
		q++;
		size_t n = strspn(q, "0123456789abcdef:.");
		if (n == 0 || q[n] != ']')
			goto bad;
		q += n + 1;
	} else {
		size_t n = strspn(q, "abcdefghijklmnopqrstuvwxyz0123456789.-");
		if (n == 0)
			goto bad;
		q += n;
	}
	if (*q == ':') {
		uint32_t port;
		if (q[1] == '0' || parse_u32(q + 1, 1, 65535, &port) != NUM_OK)
			goto bad;
		if (strcmp(q + 1, dflt) == 0)
			return fail(p, "%s: '%s' never matches: browsers leave out the default port",
				    k->name, o);
	} else if (*q != '\0') {
		goto bad;
	}
	return 0;
bad:
	return fail(p, "%s: bad origin '%s' (http or https://host[:port], lowercase, no path)",
		    k->name, o);
}

/* A comma list of origins; it replaces the default list. Splits v in place. */
static int parse_origins(struct parser *p, const struct key_spec *k, char *v)
{
	struct sluice_conf *c = p->c;
	const size_t cap = sizeof(c->allowed_origins[0]);
	c->norigins = 0;
	for (char *item = v; item;) {
		char *comma = strchr(item, ',');
		if (comma)
			*comma = '\0';
		char *o = trim(item);
		item = comma ? comma + 1 : NULL;
		size_t n = strlen(o);
		if (n == 0)
			return fail(p, "%s: empty origin", k->name);
		if (n >= cap)
			return fail(p, "%s: origin longer than %zu bytes", k->name, cap - 1);
		if (check_origin(p, k, o) != 0)
			return -1;
		if (c->norigins == CONF_MAX_ORIGINS)
			return fail(p, "%s: more than %d origins", k->name, CONF_MAX_ORIGINS);
		for (uint32_t i = 0; i < c->norigins; i++)
			if (strcmp(c->allowed_origins[i], o) == 0)
				return fail(p, "%s: origin '%s' listed twice", k->name, o);
		memcpy(c->allowed_origins[c->norigins++], o, n + 1);
	}
	return 0;
}

/* "1,2" or "1-4,8": the lcore ids DPDK runs workers on, each once. The text
 * is kept as written (EAL parses it again); the count is checked against
 * workers when the file ends. */
static int parse_lcores(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	if (n >= k->max)
		return fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	char list[sizeof(p->c->lcores)];
	memcpy(list, v, n + 1);
	uint64_t used[(CONF_LCORE_MAX + 64) / 64] = { 0 };
	uint32_t count = 0;
	for (char *item = list; item;) {
		char *comma = strchr(item, ',');
		if (comma)
			*comma = '\0';
		char *r = trim(item);
		item = comma ? comma + 1 : NULL;
		char *dash = strchr(r, '-');
		if (dash)
			*dash = '\0';
		uint32_t lo, hi;
		if (parse_u32(r, 0, CONF_LCORE_MAX, &lo) != NUM_OK ||
		    parse_u32(dash ? dash + 1 : r, lo, CONF_LCORE_MAX, &hi) != NUM_OK)
			return fail(p, "%s: bad lcore list '%s' (N or N-M, comma separated, 0..%u)",
				    k->name, v, CONF_LCORE_MAX);
		for (uint32_t id = lo; id <= hi; id++) {
			if (used[id / 64] & (1ull << (id % 64)))
				return fail(p, "%s: lcore %u listed twice", k->name, id);
			used[id / 64] |= 1ull << (id % 64);
			count++;
		}
	}
	memcpy(dst, v, n + 1);
	p->nlcores = count;
	p->lcores_line = p->line;
	return 0;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_ok(const unsigned char *s)
{
	while (*s) {
		unsigned char b = *s;
		size_t len;
		uint32_t cp, min;
		if (b < 0x80) {
			s++;
			continue;
		} else if ((b & 0xe0) == 0xc0) {
			len = 2;
			cp = b & 0x1f;
			min = 0x80;
		} else if ((b & 0xf0) == 0xe0) {
			len = 3;
			cp = b & 0x0f;
			min = 0x800;
		} else if ((b & 0xf8) == 0xf0) {
			len = 4;
			cp = b & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		for (size_t i = 1; i < len; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		s += len;
	}
	return true;
}

/* Free text (descriptions, prompts, EAL arguments): it ends up in JSON and
 * argv, so it must be valid UTF-8 without control bytes other than tab. */
static int parse_text(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	if (n >= k->max)
		return fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	for (const unsigned char *q = (const unsigned char *)v; *q; q++)
		if ((*q < ' ' && *q != '\t') || *q == 0x7f)
			return fail(p, "%s: control byte in text", k->name);
	if (!utf8_ok((const unsigned char *)v))
		return fail(p, "%s: not valid UTF-8", k->name);
	memcpy(dst, v, n + 1);
	return 0;
}

/* A PCI address or a vdev string ("net_tap0,iface=sl0"): printable ASCII
 * without blanks, so it passes to EAL as one argument. */
static int parse_device(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	if (n >= k->max)
		return fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	if (!model_name_ok(v))
		return fail(p, "%s: bad device '%s' (printable, no blanks)", k->name, v);
	memcpy(dst, v, n + 1);
	return 0;
}

/* "A.B.C.D/P": the port's own address and its subnet's prefix length. */
static int parse_ipv4_prefix(struct parser *p, const struct key_spec *k, const char *v)
{
	struct conf_port *port = (struct conf_port *)p->obj;
	const char *slash = strchr(v, '/');
	size_t alen = slash ? (size_t)(slash - v) : 0;
	char addr[INET_ADDRSTRLEN];
	struct in_addr in;
	if (!slash || alen == 0 || alen >= sizeof(addr))
		return fail(p, "%s: expected A.B.C.D/PREFIX: '%s'", k->name, v);
	memcpy(addr, v, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, &in) != 1)
		return fail(p, "%s: bad IPv4 address: '%s'", k->name, v);
	uint32_t prefix;
	if (parse_u32(slash + 1, k->min, k->max, &prefix) != NUM_OK)
		return fail(p, "%s: prefix out of range %u..%u: '%s'", k->name, k->min, k->max, v);
	port->ipv4 = in.s_addr;
	port->prefix = (uint8_t)prefix;
	return 0;
}

/* "A.B.C.D" into a uint32_t in network byte order. */
static int parse_ipv4(struct parser *p, const struct key_spec *k, const char *v, void *field)
{
	struct in_addr in;
	if (inet_pton(AF_INET, v, &in) != 1)
		return fail(p, "%s: bad IPv4 address: '%s'", k->name, v);
	memcpy(field, &in.s_addr, sizeof(in.s_addr));
	p->gateway_line = p->line;
	return 0;
}

static int set_value(struct parser *p, const struct key_spec *k, char *v)
{
	void *field = p->obj + k->off;
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
		/* A REQUEST record carries the whole body: the largest one the
		 * dataplane accepts must fit with its fields (docs/channel.md). */
		if (field == (void *)&p->c->ring_bytes &&
		    x / 4u - (uint32_t)sizeof(struct chan_rec) < CONF_RING_PAYLOAD_MIN)
			return fail(p,
				    "%s: records of a %u-byte ring carry at most %u bytes, less than a "
				    "1 MiB request body plus 64 KiB of fields; use 8388608 or more",
				    k->name, x, x / 4u - (uint32_t)sizeof(struct chan_rec));
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
		p->transport_line = p->line;
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
	case K_MODE:
		return parse_mode(p, k, v, field);
	case K_IPV4:
		return parse_ipv4(p, k, v, field);
	case K_LISTEN:
		return parse_listen(p, k, v);
	case K_PATH:
		return parse_path(p, k, v, field, CONF_PATH_MAX);
	case K_SOCK_PATH:
		return parse_path(p, k, v, field, CONF_SOCK_PATH_MAX);
	case K_MODELS:
		return parse_models(p, k, v);
	case K_UNIX_NAME:
		return parse_unix_name(p, k, v, field);
	case K_ORIGINS:
		return parse_origins(p, k, v);
	case K_LCORES:
		return parse_lcores(p, k, v, field);
	case K_TEXT:
		return parse_text(p, k, v, field);
	case K_DEVICE:
		return parse_device(p, k, v, field);
	case K_IPV4_PREFIX:
		return parse_ipv4_prefix(p, k, v);
	case K_MODEL:
		if (check_model(p, k, v) != 0)
			return -1;
		memcpy(field, v, strlen(v) + 1);
		p->agent_model_line[p->c->nagents - 1] = p->line;
		return 0;
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

static void port_defaults(struct conf_port *port)
{
	memset(port, 0, sizeof(*port));
	port->mtu = 1500;
	port->rx_desc = 1024;
	port->tx_desc = 1024;
	port->mbufs = 16383;
}

/* Checks that need the whole [port.N]: its gateway must be reachable on
 * its subnet, and its mbuf pool must outnumber the descriptors it fills. */
static int close_port(struct parser *p)
{
	const struct conf_port *port = (const struct conf_port *)p->obj;
	if (p->gateway_line && port->gateway) {
		uint32_t mask = htonl(port->prefix == 32 ? UINT32_MAX : ~(UINT32_MAX >> port->prefix));
		if ((port->gateway & mask) != (port->ipv4 & mask)) {
			char gw[INET_ADDRSTRLEN], ip[INET_ADDRSTRLEN];
			if (!inet_ntop(AF_INET, &port->gateway, gw, sizeof(gw)) ||
			    !inet_ntop(AF_INET, &port->ipv4, ip, sizeof(ip)))
				return fail(p, "internal error: inet_ntop");
			p->line = p->gateway_line;
			return fail(p, "gateway: %s is outside %s/%u", gw, ip, port->prefix);
		}
	}
	if (port->mbufs <= port->rx_desc + port->tx_desc)
		return fail(p, "port '%s': mbufs %u must exceed rx_desc + tx_desc (%u)", p->sub_name,
			    port->mbufs, port->rx_desc + port->tx_desc);
	return 0;
}

/* A sub-section must set its required keys; checked when it ends, and
 * reported at the line of its header. */
static int close_section(struct parser *p)
{
	if (!p->sec || p->sec->sub == SUB_NONE)
		return 0;
	unsigned line = p->line;
	p->line = p->sub_line;
	int rc = 0;
	uint32_t missing = p->sec->required & ~p->seen_keys;
	if (missing) {
		unsigned i = (unsigned)__builtin_ctz(missing);
		rc = fail(p, "%s '%s' has no %s", p->sec->name, p->sub_name, p->sec->keys[i].name);
	} else if (p->sec->sub == SUB_PORT) {
		rc = close_port(p);
	}
	p->line = line;
	p->sec = NULL;
	return rc;
}

static bool sub_name_ok(const char *n)
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

/* [backend.NAME] or [agent.NAME]: a new entry in its array. */
static int open_named(struct parser *p, const char *full, const char *name,
		      const struct section_spec *sec)
{
	bool backend = sec->sub == SUB_BACKEND;
	uint32_t *count = backend ? &p->c->nbackends : &p->c->nagents;
	uint32_t max = backend ? CONF_MAX_BACKENDS : CONF_MAX_AGENTS;
	if (!sub_name_ok(name))
		return fail(p, "bad %s name '%s' (1..%d of A-Z a-z 0-9 _ -)", sec->name, name,
			    CONF_NAME_MAX - 1);
	for (uint32_t i = 0; i < *count; i++) {
		const char *other = backend ? p->c->backends[i].name : p->c->agents[i].name;
		if (strcmp(other, name) == 0)
			return fail(p, "duplicate section [%s]", full);
	}
	if (*count == max)
		return fail(p, "more than %u %ss", max, sec->name);
	if (backend) {
		struct conf_backend *be = &p->c->backends[*count];
		backend_defaults(be);
		memcpy(be->name, name, strlen(name) + 1);
		p->obj = (char *)be;
	} else {
		struct conf_agent *ag = &p->c->agents[*count];
		memset(ag, 0, sizeof(*ag));
		memcpy(ag->name, name, strlen(name) + 1);
		p->obj = (char *)ag;
	}
	(*count)++;
	return 0;
}

/* [port.N] with N a single digit below CONF_MAX_PORTS. */
static int open_port(struct parser *p, const char *full, const char *num)
{
	if (num[0] < '0' || num[0] >= '0' + CONF_MAX_PORTS || num[1] != '\0')
		return fail(p, "bad port number '%s' (0..%d)", num, CONF_MAX_PORTS - 1);
	struct conf_port *port = &p->c->ports[num[0] - '0'];
	if (port->present)
		return fail(p, "duplicate section [%s]", full);
	port->present = true;
	p->obj = (char *)port;
	p->gateway_line = 0;
	return 0;
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

	static const struct section_spec *const subs[] = { &backend_section, &agent_section,
							   &port_section };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(subs); i++) {
		size_t plen = strlen(subs[i]->name);
		if (strncmp(name, subs[i]->name, plen) != 0 || name[plen] != '.')
			continue;
		const char *sub = name + plen + 1;
		int rc = subs[i]->sub == SUB_PORT ? open_port(p, name, sub)
						   : open_named(p, name, sub, subs[i]);
		if (rc != 0)
			return -1;
		memcpy(p->sub_name, sub, strlen(sub) + 1);
		p->sub_line = p->line;
		p->sec = subs[i];
		return 0;
	}
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(sections); i++) {
		if (strcmp(name, sections[i].name) != 0)
			continue;
		if (p->seen_sections & (1u << i))
			return fail(p, "duplicate section [%s]", name);
		p->seen_sections |= 1u << i;
		p->sec = &sections[i];
		p->obj = (char *)p->c;
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
	if (sec->sub != SUB_NONE)
		return fail(p, "unknown key '%s' in [%s.%s]", key, sec->name, p->sub_name);
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
	memcpy(c->lcores, "1", sizeof("1"));
	c->tcp_snd_buf = 65536;
	c->tcp_rcv_buf = 65536;
	c->tcp_syn_backlog = 1024;
	c->tcp_time_wait_max = 4096;
	c->tcp_keepalive_s = 75;
	for (size_t i = 0; i < CONF_MAX_PORTS; i++)
		port_defaults(&c->ports[i]);
	memcpy(c->chan_path, "/dev/shm/sluice", sizeof("/dev/shm/sluice"));
	c->ring_bytes = 8u << 20;
	memcpy(c->admin_socket, "/tmp/sluice-admin.sock", sizeof("/tmp/sluice-admin.sock"));
	memcpy(c->store, "/tmp/sluice-store", sizeof("/tmp/sluice-store"));
	c->admin_socket_mode = 0600;
	c->token_commit_ms = 50;
	c->store_map_mb = 1024;
	c->session_ttl_s = 86400;
	static const char *const origins[] = { "http://127.0.0.1:8080", "http://localhost:8080" };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(origins); i++)
		memcpy(c->allowed_origins[i], origins[i], strlen(origins[i]) + 1);
	c->norigins = SLUICE_ARRAY_LEN(origins);
	c->login_max_inflight = 4;
	c->login_fail_user = 5;
	c->login_fail_ip = 20;
	c->login_window_s = 300;
	c->pwhash_ops = 2;
	c->pwhash_mem_kib = 65536;
	c->cookie_secure = false;
	c->batch_mode = CONF_BATCH_ADAPTIVE;
	c->max_delay_us = 2000;
	c->max_bytes = 16384;
	c->nbackends = 0;
	c->nagents = 0;
}

/* Checks that need the whole file, and defaults that depend on other keys. */
static int finish(struct parser *p)
{
	struct sluice_conf *c = p->c;
	if (c->nbackends == 0)
		return fail_file(p->err, p->errlen, p->file, "no [backend.NAME] section");
	for (uint32_t i = 0; i < c->nagents; i++) {
		if (conf_backend_for_model(c, c->agents[i].model))
			continue;
		p->line = p->agent_model_line[i];
		return fail(p, "agent '%s': model '%s' is not served by any backend",
			    c->agents[i].name, c->agents[i].model);
	}
	if (c->nagents == 0) {
		struct conf_agent *ag = &c->agents[c->nagents++];
		memcpy(ag->name, "assistant", sizeof("assistant"));
		memcpy(ag->model, c->backends[0].models[0], strlen(c->backends[0].models[0]) + 1);
		memcpy(ag->description, "General-purpose assistant",
		       sizeof("General-purpose assistant"));
	}
	if (c->transport == CONF_TRANSPORT_DPDK && !c->ports[0].present) {
		p->line = p->transport_line;
		return fail(p, "transport = dpdk needs a [port.0] section");
	}
	if (p->lcores_line) {
		if (p->nlcores != c->workers) {
			p->line = p->lcores_line;
			return fail(p, "lcores: %u lcores for %u workers", p->nlcores, c->workers);
		}
	} else {
		int n = c->workers == 1 ? snprintf(c->lcores, sizeof(c->lcores), "1")
					: snprintf(c->lcores, sizeof(c->lcores), "1-%u", c->workers);
		if (n < 0 || (size_t)n >= sizeof(c->lcores))
			return fail_file(p->err, p->errlen, p->file, "internal error: lcores");
	}
	return 0;
}

int conf_load(const char *path, struct sluice_conf *c, char *err, size_t errlen)
{
	if (errlen > 0)
		err[0] = '\0';
	size_t plen = strlen(path);
	if (plen >= CONF_PATH_MAX)
		return fail_file(err, errlen, path, "path longer than %d bytes", CONF_PATH_MAX - 1);

	/* Scratch copy (about 46 KiB): c is replaced only by a file that loads. */
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
	if (close_section(&p) != 0 || finish(&p) != 0)
		goto fail;
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

const struct conf_agent *conf_agent_find(const struct sluice_conf *c, const char *name)
{
	if (!name)
		return NULL;
	for (uint32_t i = 0; i < c->nagents; i++)
		if (strcmp(c->agents[i].name, name) == 0)
			return &c->agents[i];
	return NULL;
}
