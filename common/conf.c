/*
 * sluice.conf reader, the INI engine. Table-driven: each section lists its
 * keys with a value kind, the field's offset and its allowed range
 * (conf_schema.c), so adding a key is one line and every key gets the same
 * strict checks (duplicate, empty, junk, range; conf_value.c). The file is
 * parsed into a scratch copy and only copied out on success, so a failed
 * reload leaves the caller's configuration untouched.
 */
#include "conf_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"

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

/* Reports a problem on the current line; always returns -1. */
int conf_fail(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	format_err(p->err, p->errlen, p->file, p->line, fmt, ap);
	va_end(ap);
	return -1;
}

/* Reports a problem that belongs to no line; always returns -1. */
int conf_fail_file(char *err, size_t errlen, const char *file, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	format_err(err, errlen, file, 0, fmt, ap);
	va_end(ap);
	return -1;
}

/* Trims s in place and returns the first non-blank byte. */
char *conf_trim(char *s)
{
	while (conf_is_ws(*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && conf_is_ws(s[n - 1]))
		s[--n] = '\0';
	return s;
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
		rc = conf_fail(p, "%s '%s' has no %s", p->sec->name, p->sub_name, p->sec->keys[i].name);
	} else if (p->sec->sub == SUB_PORT) {
		rc = conf_close_port(p);
	} else if (p->sec->sub == SUB_BACKEND) {
		rc = conf_close_backend(p);
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

/* The array a named sub-section kind fills: entry size, count, capacity. */
static char *named_array(struct parser *p, enum sub_kind k, size_t *size, uint32_t **count,
			 uint32_t *max)
{
	switch (k) {
	case SUB_BACKEND:
		*size = sizeof(struct conf_backend);
		*count = &p->c->nbackends;
		*max = CONF_MAX_BACKENDS;
		return (char *)p->c->backends;
	case SUB_MODEL:
		*size = sizeof(struct conf_model);
		*count = &p->c->nmodels;
		*max = CONF_MAX_MODEL_SECTIONS;
		return (char *)p->c->models;
	case SUB_CERT:
		*size = sizeof(struct conf_cert);
		*count = &p->c->ncerts;
		*max = CONF_MAX_CERTS;
		return (char *)p->c->certs;
	default:
		*size = sizeof(struct conf_agent);
		*count = &p->c->nagents;
		*max = CONF_MAX_AGENTS;
		return (char *)p->c->agents;
	}
}

/* [backend.NAME], [agent.NAME], [cert.NAME] or [model.NAME]: a new entry in its array.
 * Each entry starts with its name. Model names follow the rule of the
 * models lists, the others the section-name rule. */
static int open_named(struct parser *p, const char *full, const char *name,
		      const struct section_spec *sec)
{
	size_t size;
	uint32_t *count, max;
	char *arr = named_array(p, sec->sub, &size, &count, &max);
	bool model = sec->sub == SUB_MODEL;
	if (model ? !conf_model_name_ok(name) : !sub_name_ok(name))
		return conf_fail(p, model ? "bad %s name '%s' (1..%d printable bytes, no blanks)"
					  : "bad %s name '%s' (1..%d of A-Z a-z 0-9 _ -)",
			    sec->name, name, CONF_NAME_MAX - 1);
	for (uint32_t i = 0; i < *count; i++) {
		if (strcmp(arr + i * size, name) == 0)
			return conf_fail(p, "duplicate section [%s]", full);
	}
	if (*count == max)
		return conf_fail(p, "more than %u %ss", max, sec->name);
	char *obj = arr + (*count) * size;
	if (sec->sub == SUB_BACKEND)
		conf_backend_defaults((struct conf_backend *)obj);
	else if (model)
		conf_model_defaults((struct conf_model *)obj);
	else
		memset(obj, 0, size);
	memcpy(obj, name, strlen(name) + 1);
	p->obj = obj;
	(*count)++;
	return 0;
}

/* [port.N] with N a single digit below CONF_MAX_PORTS. */
static int open_port(struct parser *p, const char *full, const char *num)
{
	if (num[0] < '0' || num[0] >= '0' + CONF_MAX_PORTS || num[1] != '\0')
		return conf_fail(p, "bad port number '%s' (0..%d)", num, CONF_MAX_PORTS - 1);
	struct conf_port *port = &p->c->ports[num[0] - '0'];
	if (port->present)
		return conf_fail(p, "duplicate section [%s]", full);
	port->present = true;
	p->obj = (char *)port;
	p->gateway_line = 0;
	return 0;
}

/* [limits.ROLE]: a role's quotas, replacing its defaults key by key. */
static int open_role_limits(struct parser *p, const char *full, const char *role)
{
	int r = conf_role_of(role);
	if (r < 0)
		return conf_fail(p, "unknown role '%s' in [%s] (user, admin)", role, full);
	struct conf_role_limits *l = &p->c->role_limits[r];
	if (l->present)
		return conf_fail(p, "duplicate section [%s]", full);
	l->present = true;
	p->obj = (char *)l;
	return 0;
}

/* s is the trimmed line starting with '['. */
static int open_section(struct parser *p, char *s)
{
	size_t n = strlen(s);
	if (n < 3 || s[n - 1] != ']')
		return conf_fail(p, "bad section header '%s'", s);
	s[n - 1] = '\0';
	char *name = conf_trim(s + 1);
	if (close_section(p) != 0)
		return -1;
	p->seen_keys = 0;

	static const struct section_spec *const subs[] = { &conf_backend_section, &conf_agent_section,
							   &conf_port_section, &conf_cert_section,
							   &conf_model_section, &conf_role_limits_section };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(subs); i++) {
		size_t plen = strlen(subs[i]->name);
		if (strncmp(name, subs[i]->name, plen) != 0 || name[plen] != '.')
			continue;
		const char *sub = name + plen + 1;
		int rc = subs[i]->sub == SUB_PORT     ? open_port(p, name, sub)
			 : subs[i]->sub == SUB_LIMITS ? open_role_limits(p, name, sub)
						      : open_named(p, name, sub, subs[i]);
		if (rc != 0)
			return -1;
		memcpy(p->sub_name, sub, strlen(sub) + 1);
		p->sub_line = p->line;
		p->sec = subs[i];
		return 0;
	}
	for (size_t i = 0; i < conf_nsections; i++) {
		if (strcmp(name, conf_sections[i].name) != 0)
			continue;
		if (p->seen_sections & (1u << i))
			return conf_fail(p, "duplicate section [%s]", name);
		p->seen_sections |= 1u << i;
		p->sec = &conf_sections[i];
		p->obj = (char *)p->c;
		return 0;
	}
	return conf_fail(p, "unknown section [%s]", name);
}

static int key_value(struct parser *p, char *s)
{
	char *eq = strchr(s, '=');
	if (!eq)
		return conf_fail(p, "missing '=' in '%s'", s);
	*eq = '\0';
	char *key = conf_trim(s);
	char *val = conf_trim(eq + 1);
	if (*key == '\0')
		return conf_fail(p, "missing key before '='");
	if (!p->sec)
		return conf_fail(p, "key '%s' outside a section", key);
	const struct section_spec *sec = p->sec;
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct key_spec *k = &sec->keys[i];
		if (strcmp(k->name, key) != 0)
			continue;
		if (p->seen_keys & (1u << i))
			return conf_fail(p, "duplicate key '%s'", key);
		p->seen_keys |= 1u << i;
		if (sec->sub == SUB_NONE)
			p->top_keys[sec - conf_sections] |= 1u << i;
		if (*val == '\0')
			return conf_fail(p, "%s: empty value", key);
		return conf_set_value(p, k, val);
	}
	if (sec->sub != SUB_NONE)
		return conf_fail(p, "unknown key '%s' in [%s.%s]", key, sec->name, p->sub_name);
	return conf_fail(p, "unknown key '%s' in [%s]", key, sec->name);
}

/* Drops a '#' or ';' comment: at the start of the (left-trimmed) line, or
 * after a blank, so "a#b" stays a value but "a # b" is "a". */
static void strip_comment(char *s)
{
	for (char *q = s; *q; q++) {
		if ((*q == '#' || *q == ';') && (q == s || conf_is_ws(q[-1]))) {
			*q = '\0';
			return;
		}
	}
}

static int parse_line(struct parser *p, char *line)
{
	char *s = line;
	while (conf_is_ws(*s))
		s++;
	strip_comment(s);
	s = conf_trim(s);
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

int conf_load(const char *path, struct sluice_conf *c, char *err, size_t errlen)
{
	if (errlen > 0)
		err[0] = '\0';
	size_t plen = strlen(path);
	if (plen >= CONF_PATH_MAX)
		return conf_fail_file(err, errlen, path, "path longer than %d bytes", CONF_PATH_MAX - 1);

	/* Scratch copy (about 46 KiB): c is replaced only by a file that loads. */
	struct sluice_conf *tmp = malloc(sizeof(*tmp));
	char *buf = malloc(CONF_LINE_MAX + 1);
	FILE *f = NULL;
	int rc = -1;
	if (!tmp || !buf) {
		conf_fail_file(err, errlen, path, "out of memory");
		goto fail;
	}
	conf_defaults(tmp);
	memcpy(tmp->path, path, plen + 1);

	f = fopen(path, "r");
	if (!f) {
		conf_fail_file(err, errlen, path, "cannot open: %s", strerror(errno));
		goto fail;
	}
	struct parser p = { .file = path, .c = tmp, .err = err, .errlen = errlen };
	for (;;) {
		enum read_status st = read_line(f, buf);
		if (st == RL_EOF)
			break;
		p.line++;
		if (st == RL_TOO_LONG) {
			conf_fail(&p, "line longer than %u bytes", CONF_LINE_MAX);
			goto fail;
		}
		if (st == RL_NUL) {
			conf_fail(&p, "NUL byte in line");
			goto fail;
		}
		if (st == RL_ERROR) {
			conf_fail_file(err, errlen, path, "read error: %s", strerror(errno));
			goto fail;
		}
		if (parse_line(&p, buf) != 0)
			goto fail;
	}
	if (close_section(&p) != 0 || conf_finish(&p) != 0)
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

const struct conf_model *conf_model_find(const struct sluice_conf *c, const char *model)
{
	if (!model)
		return NULL;
	for (uint32_t i = 0; i < c->nmodels; i++)
		if (strcmp(c->models[i].name, model) == 0)
			return &c->models[i];
	return NULL;
}

void conf_model_terms(const struct sluice_conf *c, const char *model, struct conf_model *out)
{
	const struct conf_model *m = conf_model_find(c, model);
	if (m) {
		*out = *m;
		return;
	}
	conf_model_defaults(out);
	const struct conf_backend *be = conf_backend_for_model(c, model);
	if (be) {
		out->context_window = be->context_window;
		out->cost_in_per_mtok = be->cost_in_per_mtok;
		out->cost_out_per_mtok = be->cost_out_per_mtok;
	}
	if (model)
		snprintf(out->name, sizeof(out->name), "%s", model);
}

double conf_model_cost(const struct sluice_conf *c, const char *model, uint32_t prompt_tokens,
		       uint32_t completion_tokens)
{
	struct conf_model m;
	conf_model_terms(c, model, &m);
	return ((double)prompt_tokens * m.cost_in_per_mtok +
		(double)completion_tokens * m.cost_out_per_mtok) / 1e6;
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

int conf_backend_key(struct conf_backend *be, const char *key, const char *value, char *err, size_t errlen)
{
	/* The reasons come without the "FILE:LINE: " of a file. */
	char msg[512];
	struct parser p = { .file = "", .c = NULL, .sec = &conf_backend_section, .obj = (char *)be,
			    .err = msg, .errlen = sizeof(msg) };
	char v[CONF_LINE_MAX + 1];
	size_t n = strlen(value);
	if (n > CONF_LINE_MAX) {
		snprintf(err, errlen, "%s: longer than %u bytes", key, CONF_LINE_MAX);
		return -1;
	}
	memcpy(v, value, n + 1);
	char *t = conf_trim(v);
	for (size_t i = 0; i < conf_backend_section.nkeys; i++) {
		const struct key_spec *k = &conf_backend_section.keys[i];
		if (strcmp(k->name, key) != 0)
			continue;
		if (*t == '\0') {
			snprintf(err, errlen, "%s: empty value", key);
			return -1;
		}
		if (conf_set_value(&p, k, t) == 0)
			return 0;
		snprintf(err, errlen, "%s", msg[0] == ':' ? msg + 2 : msg);
		return -1;
	}
	snprintf(err, errlen, "unknown key '%s' of a backend", key);
	return -1;
}

int conf_backend_check(const struct conf_backend *be, char *err, size_t errlen)
{
	if (be->type == CONF_BACKEND_SYNTHETIC && be->nmodels == 0) {
		snprintf(err, errlen, "backend '%s' has no models", be->name);
		return -1;
	}
	if (be->type != CONF_BACKEND_SYNTHETIC && !be->url[0]) {
		snprintf(err, errlen, "backend '%s' has no url", be->name);
		return -1;
	}
	return 0;
}
