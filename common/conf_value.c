/*
 * sluice.conf values: one parser per kind of value (conf_int.h, enum
 * val_kind), each strict about junk and range and reporting in words.
 */
#include "conf_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/chan.h"
#include "sluice/common.h"
#include "sluice/log.h"

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
		return conf_fail(p, "%s: must not be negative: '%s'", k->name, v);
	case NUM_RANGE:
		return conf_fail(p, "%s: out of range %u..%u: '%s'", k->name, k->min, k->max, v);
	case NUM_NOT_NUMBER:
	case NUM_OK:
		break;
	}
	return conf_fail(p, "%s: not a number: '%s'", k->name, v);
}

/* "A.B.C.D:PORT" with a dotted-quad IPv4 address (inet_pton rules: no
 * leading zeros, each part 0..255). */
static int parse_listen(struct parser *p, const struct key_spec *k, const char *v, char *dst_addr,
			uint16_t *dst_port)
{
	const char *colon = strrchr(v, ':');
	size_t alen = colon ? (size_t)(colon - v) : 0;
	char addr[INET_ADDRSTRLEN];
	struct in_addr in;
	if (!colon || alen == 0 || alen >= sizeof(addr))
		return conf_fail(p, "%s: expected A.B.C.D:PORT: '%s'", k->name, v);
	memcpy(addr, v, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, &in) != 1)
		return conf_fail(p, "%s: bad IPv4 address: '%s'", k->name, v);
	uint32_t port;
	enum num_status st = parse_u32(colon + 1, k->min, k->max, &port);
	if (st == NUM_RANGE || st == NUM_NEGATIVE)
		return conf_fail(p, "%s: port out of range 1..65535: '%s'", k->name, v);
	if (st != NUM_OK)
		return conf_fail(p, "%s: port not a number: '%s'", k->name, v);
	memcpy(dst_addr, addr, alen + 1);
	*dst_port = (uint16_t)port;
	return 0;
}

/* Absolute paths only, so the processes do not depend on their working
 * directory; a path that does not fit is an error, never cut short. */
static int parse_path(struct parser *p, const struct key_spec *k, const char *v, char *dst,
		      size_t cap)
{
	size_t n = strlen(v);
	if (n >= cap)
		return conf_fail(p, "%s: longer than %zu bytes", k->name, cap - 1);
	if (v[0] != '/')
		return conf_fail(p, "%s: not an absolute path: '%s'", k->name, v);
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

bool conf_model_name_ok(const char *m)
{
	size_t n = strlen(m);
	return n > 0 && n < CONF_NAME_MAX && model_name_ok(m);
}

/* One model id: 1..63 printable non-blank bytes. */
static int check_model(struct parser *p, const struct key_spec *k, const char *m)
{
	size_t n = strlen(m);
	if (n == 0)
		return conf_fail(p, "%s: empty model name", k->name);
	if (n >= CONF_NAME_MAX)
		return conf_fail(p, "%s: model name longer than %d bytes", k->name, CONF_NAME_MAX - 1);
	if (!model_name_ok(m))
		return conf_fail(p, "%s: bad model name '%s'", k->name, m);
	return 0;
}

/* "a, b, c" into the open backend's models. Several backends may serve a
 * model: requests for it are routed over them. Splits v in place. */
static int parse_models(struct parser *p, const struct key_spec *k, char *v)
{
	struct conf_backend *be = (struct conf_backend *)p->obj;
	be->nmodels = 0;
	for (char *item = v; item;) {
		char *comma = strchr(item, ',');
		if (comma)
			*comma = '\0';
		char *m = conf_trim(item);
		item = comma ? comma + 1 : NULL;
		if (check_model(p, k, m) != 0)
			return -1;
		if (be->nmodels == CONF_MAX_MODELS)
			return conf_fail(p, "%s: more than %d models", k->name, CONF_MAX_MODELS);
		for (uint32_t i = 0; i < be->nmodels; i++)
			if (strcmp(be->models[i], m) == 0)
				return conf_fail(p, "%s: model '%s' listed twice", k->name, m);
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
		return conf_fail(p, "%s: expected an octal mode like 0660: '%s'", k->name, v);
	uint32_t x = (uint32_t)strtoul(v, NULL, 8);
	if (x > k->max)
		return conf_fail(p, "%s: out of range 0..0%o: '%s'", k->name, k->max, v);
	if (x & 0002)
		return conf_fail(p, "%s: must not be writable by others: '%s'", k->name, v);
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
		return conf_fail(p, "%s: bad name '%s' (1..32 of A-Z a-z 0-9 _ . -, first a letter or _)",
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
			return conf_fail(p, "%s: '%s' never matches: browsers leave out the default port",
				    k->name, o);
	} else if (*q != '\0') {
		goto bad;
	}
	return 0;
bad:
	return conf_fail(p, "%s: bad origin '%s' (http or https://host[:port], lowercase, no path)",
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
		char *o = conf_trim(item);
		item = comma ? comma + 1 : NULL;
		size_t n = strlen(o);
		if (n == 0)
			return conf_fail(p, "%s: empty origin", k->name);
		if (n >= cap)
			return conf_fail(p, "%s: origin longer than %zu bytes", k->name, cap - 1);
		if (check_origin(p, k, o) != 0)
			return -1;
		if (c->norigins == CONF_MAX_ORIGINS)
			return conf_fail(p, "%s: more than %d origins", k->name, CONF_MAX_ORIGINS);
		for (uint32_t i = 0; i < c->norigins; i++)
			if (strcmp(c->allowed_origins[i], o) == 0)
				return conf_fail(p, "%s: origin '%s' listed twice", k->name, o);
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
		return conf_fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	char list[sizeof(p->c->lcores)];
	memcpy(list, v, n + 1);
	uint64_t used[(CONF_LCORE_MAX + 64) / 64] = { 0 };
	uint32_t count = 0;
	for (char *item = list; item;) {
		char *comma = strchr(item, ',');
		if (comma)
			*comma = '\0';
		char *r = conf_trim(item);
		item = comma ? comma + 1 : NULL;
		char *dash = strchr(r, '-');
		if (dash)
			*dash = '\0';
		uint32_t lo, hi;
		if (parse_u32(r, 0, CONF_LCORE_MAX, &lo) != NUM_OK ||
		    parse_u32(dash ? dash + 1 : r, lo, CONF_LCORE_MAX, &hi) != NUM_OK)
			return conf_fail(p, "%s: bad lcore list '%s' (N or N-M, comma separated, 0..%u)",
				    k->name, v, CONF_LCORE_MAX);
		for (uint32_t id = lo; id <= hi; id++) {
			if (used[id / 64] & (1ull << (id % 64)))
				return conf_fail(p, "%s: lcore %u listed twice", k->name, id);
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
		return conf_fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	for (const unsigned char *q = (const unsigned char *)v; *q; q++)
		if ((*q < ' ' && *q != '\t') || *q == 0x7f)
			return conf_fail(p, "%s: control byte in text", k->name);
	if (!utf8_ok((const unsigned char *)v))
		return conf_fail(p, "%s: not valid UTF-8", k->name);
	memcpy(dst, v, n + 1);
	return 0;
}

/* A PCI address or a vdev string ("net_tap0,iface=sl0"): printable ASCII
 * without blanks, so it passes to EAL as one argument. */
static int parse_device(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	if (n >= k->max)
		return conf_fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	if (!model_name_ok(v))
		return conf_fail(p, "%s: bad device '%s' (printable, no blanks)", k->name, v);
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
		return conf_fail(p, "%s: expected A.B.C.D/PREFIX: '%s'", k->name, v);
	memcpy(addr, v, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, &in) != 1)
		return conf_fail(p, "%s: bad IPv4 address: '%s'", k->name, v);
	uint32_t prefix;
	if (parse_u32(slash + 1, k->min, k->max, &prefix) != NUM_OK)
		return conf_fail(p, "%s: prefix out of range %u..%u: '%s'", k->name, k->min, k->max, v);
	port->ipv4 = in.s_addr;
	port->prefix = (uint8_t)prefix;
	return 0;
}

/* "A.B.C.D" into a uint32_t in network byte order. */
static int parse_ipv4(struct parser *p, const struct key_spec *k, const char *v, void *field)
{
	struct in_addr in;
	if (inet_pton(AF_INET, v, &in) != 1)
		return conf_fail(p, "%s: bad IPv4 address: '%s'", k->name, v);
	memcpy(field, &in.s_addr, sizeof(in.s_addr));
	p->gateway_line = p->line;
	return 0;
}

/* "http://host[:port][/path]" or "https://...": where a backend listens.
 * The host is a name or a dotted quad (a bracketed IPv6 address too); the
 * path is a prefix the API paths are appended to, so it has no trailing
 * '/', no query and no fragment. */
static int parse_url(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	if (n >= k->max)
		return conf_fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	const char *host = strncmp(v, "http://", 7) == 0 ? v + 7 : strncmp(v, "https://", 8) == 0 ? v + 8 : NULL;
	const char *q = host;
	bool ok = host != NULL;
	if (ok && *q == '[') {
		size_t h = strspn(q + 1, "0123456789abcdefABCDEF:.");
		ok = h > 0 && q[1 + h] == ']';
		q += h + 2;
	} else if (ok) {
		size_t h = strspn(q, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_");
		ok = h > 0;
		q += h;
	}
	if (ok && *q == ':') {
		uint32_t port;
		size_t d = strspn(q + 1, "0123456789");
		char num[8];
		ok = d > 0 && d < sizeof(num);
		if (ok) {
			memcpy(num, q + 1, d);
			num[d] = '\0';
			ok = parse_u32(num, 1, 65535, &port) == NUM_OK;
		}
		q += 1 + d;
	}
	if (ok && *q) {
		ok = *q == '/' && q[strlen(q) - 1] != '/' && !strpbrk(q, "?#") && model_name_ok(q);
	}
	if (!ok)
		return conf_fail(p, "%s: expected http(s)://host[:port][/path] without a trailing '/': '%s'",
			    k->name, v);
	memcpy(dst, v, n + 1);
	return 0;
}

/* An environment variable's name: [A-Za-z_][A-Za-z0-9_]*. Only the name is
 * configured: the value (a secret) is read at start and kept in memory. */
static int parse_env_name(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	bool ok = n < CONF_NAME_MAX && !(v[0] >= '0' && v[0] <= '9');
	for (size_t i = 0; ok && i < n; i++)
		ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
		     (v[i] >= '0' && v[i] <= '9') || v[i] == '_';
	if (!ok)
		return conf_fail(p, "%s: bad variable name '%s' (1..63 of A-Z a-z 0-9 _, not first a digit)",
			    k->name, v);
	memcpy(dst, v, n + 1);
	return 0;
}

/* "Name: value | Name: value": extra request headers for a backend. Names
 * are HTTP tokens; values printable ASCII without '|'; at most 16. */
static int parse_headers(struct parser *p, const struct key_spec *k, const char *v, char *dst)
{
	size_t n = strlen(v);
	if (n >= k->max)
		return conf_fail(p, "%s: longer than %u bytes", k->name, k->max - 1);
	char tmp[CONF_HEADERS_MAX];
	memcpy(tmp, v, n + 1);
	unsigned count = 0;
	for (char *item = tmp; item;) {
		char *bar = strchr(item, '|');
		if (bar)
			*bar = '\0';
		char *h = conf_trim(item);
		item = bar ? bar + 1 : NULL;
		char *colon = strchr(h, ':');
		size_t nl = colon ? strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`~") : 0;
		bool ok = colon && nl > 0 && h + nl == colon;
		for (const char *c = colon ? colon + 1 : h; ok && *c; c++)
			ok = (*c >= ' ' && *c <= '~') || *c == '\t';
		if (!ok)
			return conf_fail(p, "%s: bad header '%s' (Name: value, separated by |)", k->name, h);
		if (++count > 16)
			return conf_fail(p, "%s: more than 16 headers", k->name);
	}
	memcpy(dst, v, n + 1);
	return 0;
}

static const char *const words_transport[] = { "kernel", "dpdk" };
static const char *const words_kernel_send[] = { "auto", "uring", "sendmsg" };
static const char *const words_batch_mode[] = { "adaptive", "off" };
static const char *const words_backend_type[] = { "synthetic", "openai", "ollama" };
static const char *const words_tls_version[] = { "1.2", "1.3" };
static const char *const words_log_level[] = { "debug", "info", "warn", "error" };
static const char *const words_log_format[] = { "plain", "json" };

_Static_assert(CONF_TRANSPORT_DPDK == 1 && CONF_KSEND_SENDMSG == 2 && CONF_BATCH_OFF == 1 &&
		       CONF_BACKEND_OLLAMA == 2 && CONF_TLS_1_3 == 1 && LOG_FMT_JSON == 1,
	       "the word tables follow the enums' values");
_Static_assert(sizeof(enum conf_transport) == 4 && sizeof(enum conf_kernel_send) == 4 &&
		       sizeof(enum conf_batch_mode) == 4 && sizeof(enum conf_backend_type) == 4 &&
		       sizeof(enum conf_tls_version) == 4,
	       "enumerated fields are stored as 4-byte indexes");

const char *const *conf_enum_words(enum val_kind kind, uint32_t *n)
{
#define WORDS(w) (*n = (uint32_t)SLUICE_ARRAY_LEN(w), w)
	switch (kind) {
	case K_TRANSPORT:
		return WORDS(words_transport);
	case K_KERNEL_SEND:
		return WORDS(words_kernel_send);
	case K_BATCH_MODE:
		return WORDS(words_batch_mode);
	case K_BACKEND_TYPE:
		return WORDS(words_backend_type);
	case K_TLS_VERSION:
		return WORDS(words_tls_version);
	case K_LOG_LEVEL:
		return WORDS(words_log_level);
	case K_LOG_FORMAT:
		return WORDS(words_log_format);
	default:
		*n = 0;
		return NULL;
	}
#undef WORDS
}

/* One of the kind's words, stored as its index; else "expected a, b or c". */
static int parse_enum(struct parser *p, const struct key_spec *k, const char *v, void *field)
{
	uint32_t n;
	const char *const *w = conf_enum_words(k->kind, &n);
	char list[128];
	size_t len = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (strcmp(v, w[i]) == 0) {
			memcpy(field, &i, sizeof(i));
			return 0;
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
		int m = snprintf(list + len, sizeof(list) - len, "%s%s", sep, w[i]);
		if (m > 0 && (size_t)m < sizeof(list) - len)
			len += (size_t)m;
	}
	return conf_fail(p, "%s: expected %s: '%s'", k->name, list, v);
}

int conf_set_value(struct parser *p, const struct key_spec *k, char *v)
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
	case K_U32Z: {
		uint32_t x;
		st = parse_u32(v, 0, k->max, &x);
		if (st != NUM_OK || (x != 0 && x < k->min))
			return conf_fail(p, "%s: expected 0 or %u..%u: '%s'", k->name, k->min, k->max, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_POW2: {
		uint32_t x;
		st = parse_u32(v, k->min, k->max, &x);
		if (st != NUM_OK)
			return number_error(p, k, st, v);
		if ((x & (x - 1)) != 0)
			return conf_fail(p, "%s: not a power of two: '%s'", k->name, v);
		/* A REQUEST record carries the whole body: the largest one the
		 * dataplane accepts must fit with its fields (docs/channel.md). */
		if (field == (void *)&p->c->ring_bytes &&
		    x / 4u - (uint32_t)sizeof(struct chan_rec) < CONF_RING_PAYLOAD_MIN)
			return conf_fail(p,
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
			return conf_fail(p, "%s: expected true or false: '%s'", k->name, v);
		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case K_TRANSPORT:
		if (parse_enum(p, k, v, field) < 0)
			return -1;
		p->transport_line = p->line;
		return 0;
	case K_KERNEL_SEND:
	case K_BATCH_MODE:
	case K_BACKEND_TYPE:
	case K_TLS_VERSION:
	case K_LOG_LEVEL:
	case K_LOG_FORMAT:
		return parse_enum(p, k, v, field);
	case K_MODE:
		return parse_mode(p, k, v, field);
	case K_IPV4:
		return parse_ipv4(p, k, v, field);
	case K_LISTEN:
		return parse_listen(p, k, v, p->c->listen_addr, &p->c->listen_port);
	case K_REDIRECT_LISTEN:
		p->redirect_line = p->line;
		return parse_listen(p, k, v, p->c->redirect_addr, &p->c->redirect_port);
	case K_ONOFF: {
		bool x;
		if (strcmp(v, "on") == 0)
			x = true;
		else if (strcmp(v, "off") == 0)
			x = false;
		else
			return conf_fail(p, "%s: expected on or off: '%s'", k->name, v);
		memcpy(field, &x, sizeof(x));
		p->tls_line = p->line;
		return 0;
	}
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
	case K_URL:
		return parse_url(p, k, v, field);
	case K_ENV_NAME:
		return parse_env_name(p, k, v, field);
	case K_HEADERS:
		return parse_headers(p, k, v, field);
	case K_MODEL:
		if (check_model(p, k, v) != 0)
			return -1;
		memcpy(field, v, strlen(v) + 1);
		p->agent_model_line[p->c->nagents - 1] = p->line;
		return 0;
	}
	return conf_fail(p, "internal error: key kind %d", (int)k->kind);
}
