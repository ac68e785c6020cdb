/*
 * The configuration as the file would say it, walked over the schema of
 * conf_schema.c: conf_show() (sluicectl config show) and conf_diff() (a
 * reload's check of what changed and whether it may change live). One walk
 * serves both, so a key the reader knows is always shown and compared.
 */
#include "conf_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"

#define SHOW_VALUE_MAX (CONF_HEADERS_MAX + CONF_MAX_MODELS * CONF_NAME_MAX)


static void show_join(char *out, size_t cap, const char *items, size_t stride, uint32_t n)
{
	size_t len = 0;
	out[0] = '\0';
	for (uint32_t i = 0; i < n && len < cap; i++) {
		int w = snprintf(out + len, cap - len, "%s%s", i ? "," : "", items + (size_t)i * stride);
		if (w < 0)
			break;
		len += (size_t)w;
	}
}

/* "Name: value | Name: value" with every value replaced: header values are
 * where hosted APIs take secrets. */
static void show_headers_redacted(char *out, size_t cap, const char *h)
{
	size_t len = 0;
	out[0] = '\0';
	while (*h && len < cap) {
		const char *bar = strchr(h, '|');
		size_t item = bar ? (size_t)(bar - h) : strlen(h);
		const char *colon = memchr(h, ':', item);
		size_t name = colon ? (size_t)(colon - h) : item;
		while (name && (h[0] == ' ' || h[0] == '\t')) {
			h++;
			name--;
			item--;
		}
		int w = snprintf(out + len, cap - len, "%s%.*s: <redacted>", len ? " | " : "", (int)name, h);
		if (w < 0)
			break;
		len += (size_t)w;
		h += item + (bar ? 1 : 0);
	}
}

/*
 * Writes key k of obj (the section's struct; c for what lives at the top)
 * into out. False when the key has no value to show (an optional key left
 * unset): the file would not name it either.
 */
static bool show_value(const struct sluice_conf *c, const char *obj, const struct key_spec *k, bool redact,
		       char *out, size_t cap)
{
	const void *f = obj + k->off;
	uint32_t u;
	out[0] = '\0';
	switch (k->kind) {
	case K_U32:
	case K_U32Z:
	case K_POW2:
		memcpy(&u, f, sizeof(u));
		snprintf(out, cap, "%u", u);
		return true;
	case K_MODE:
		memcpy(&u, f, sizeof(u));
		snprintf(out, cap, "0%03o", u);
		return true;
	case K_COST: {
		double d;
		memcpy(&d, f, sizeof(d));
		snprintf(out, cap, "%.10g", d);
		return true;
	}
	case K_BOOL:
		snprintf(out, cap, "%s", *(const bool *)f ? "true" : "false");
		return true;
	case K_ONOFF:
		snprintf(out, cap, "%s", *(const bool *)f ? "on" : "off");
		return true;
	case K_TRANSPORT:
	case K_KERNEL_SEND:
	case K_BATCH_MODE:
	case K_TLS_VERSION:
	case K_BACKEND_TYPE:
	case K_LOG_LEVEL:
	case K_LOG_FORMAT: {
		uint32_t n;
		const char *const *w = conf_enum_words(k->kind, &n);
		memcpy(&u, f, sizeof(u));
		snprintf(out, cap, "%s", u < n ? w[u] : "?");
		return true;
	}
	case K_LISTEN:
		snprintf(out, cap, "%s:%u", c->listen_addr, (unsigned)c->listen_port);
		return true;
	case K_REDIRECT_LISTEN:
		if (!c->redirect_port)
			return false;
		snprintf(out, cap, "%s:%u", c->redirect_addr, (unsigned)c->redirect_port);
		return true;
	case K_ORIGINS:
		show_join(out, cap, c->allowed_origins[0], sizeof(c->allowed_origins[0]), c->norigins);
		return true;
	case K_MODELS: {
		const struct conf_backend *be = (const struct conf_backend *)obj;
		show_join(out, cap, be->models[0], sizeof(be->models[0]), be->nmodels);
		return be->nmodels > 0;
	}
	case K_IPV4_PREFIX: {
		const struct conf_port *port = (const struct conf_port *)obj;
		char ip[INET_ADDRSTRLEN];
		if (!inet_ntop(AF_INET, &port->ipv4, ip, sizeof(ip)))
			return false;
		snprintf(out, cap, "%s/%u", ip, (unsigned)port->prefix);
		return true;
	}
	case K_IPV4: {
		uint32_t a;
		char ip[INET_ADDRSTRLEN];
		memcpy(&a, f, sizeof(a));
		if (!a || !inet_ntop(AF_INET, &a, ip, sizeof(ip)))
			return false;
		snprintf(out, cap, "%s", ip);
		return true;
	}
	case K_HEADERS:
		if (redact)
			show_headers_redacted(out, cap, (const char *)f);
		else
			snprintf(out, cap, "%s", (const char *)f);
		return out[0] != '\0';
	case K_PATH:
	case K_SOCK_PATH:
	case K_UNIX_NAME:
	case K_LCORES:
	case K_TEXT:
	case K_DEVICE:
	case K_URL:
	case K_ENV_NAME:
	case K_MODEL:
		snprintf(out, cap, "%s", (const char *)f);
		return out[0] != '\0';
	}
	return false;
}

/* Entry i of a sub-section kind and its name, or NULL past the last one. */
static const char *sub_entry(const struct sluice_conf *c, enum sub_kind k, uint32_t i, char *name, size_t cap)
{
	switch (k) {
	case SUB_BACKEND:
		if (i >= c->nbackends)
			return NULL;
		snprintf(name, cap, "%s", c->backends[i].name);
		return (const char *)&c->backends[i];
	case SUB_MODEL:
		if (i >= c->nmodels)
			return NULL;
		snprintf(name, cap, "%s", c->models[i].name);
		return (const char *)&c->models[i];
	case SUB_AGENT:
		if (i >= c->nagents)
			return NULL;
		snprintf(name, cap, "%s", c->agents[i].name);
		return (const char *)&c->agents[i];
	case SUB_CERT:
		if (i >= c->ncerts)
			return NULL;
		snprintf(name, cap, "%s", c->certs[i].name);
		return (const char *)&c->certs[i];
	case SUB_PORT:
		if (i >= CONF_MAX_PORTS)
			return NULL;
		snprintf(name, cap, "%u", i);
		return (const char *)&c->ports[i];
	case SUB_LIMITS:
		/* Both roles, always: their defaults are in force without a section. */
		if (i >= CONF_NROLES)
			return NULL;
		snprintf(name, cap, "%s", i == CONF_ROLE_ADMIN ? "admin" : "user");
		return (const char *)&c->role_limits[i];
	default:
		return NULL;
	}
}

typedef void (*show_fn)(void *arg, const char *section, const struct key_spec *k, const char *value,
			bool sub_live);

/* Calls fn for every key with a value, section by section in file order:
 * the top-level sections, then role limits, certs, ports, backends, models,
 * agents.
 * False when out of memory (nothing was walked). */
static bool conf_walk(const struct sluice_conf *c, bool redact, show_fn fn, void *arg)
{
	char *v = malloc(SHOW_VALUE_MAX);
	if (!v)
		return false;
	for (size_t s = 0; s < conf_nsections; s++) {
		const struct section_spec *sec = &conf_sections[s];
		for (size_t i = 0; i < sec->nkeys; i++)
			if (show_value(c, (const char *)c, &sec->keys[i], redact, v, SHOW_VALUE_MAX))
				fn(arg, sec->name, &sec->keys[i], v, false);
	}
	static const enum sub_kind order[] = { SUB_LIMITS, SUB_CERT, SUB_PORT, SUB_BACKEND, SUB_MODEL, SUB_AGENT };
	for (size_t o = 0; o < SLUICE_ARRAY_LEN(order); o++) {
		const struct section_spec *sec = conf_sub_spec(order[o]);
		char name[CONF_NAME_MAX], full[CONF_NAME_MAX + 16];
		const char *obj;
		for (uint32_t e = 0; (obj = sub_entry(c, order[o], e, name, sizeof(name))) != NULL; e++) {
			if (order[o] == SUB_PORT && !((const struct conf_port *)obj)->present)
				continue;
			snprintf(full, sizeof(full), "%s.%s", sec->name, name);
			for (size_t i = 0; i < sec->nkeys; i++)
				if (show_value(c, obj, &sec->keys[i], redact, v, SHOW_VALUE_MAX))
					fn(arg, full, &sec->keys[i], v, sec->live);
		}
	}
	free(v);
	return true;
}

struct show_ctx {
	conf_show_fn fn;
	void *arg;
};

static void show_one(void *arg, const char *section, const struct key_spec *k, const char *value, bool sub_live)
{
	struct show_ctx *x = arg;
	(void)sub_live;
	x->fn(x->arg, section, k->name, value, k->live);
}

void conf_show(const struct sluice_conf *c, conf_show_fn fn, void *arg)
{
	struct show_ctx x = { fn, arg };
	(void)conf_walk(c, true, show_one, &x);
}

/* ---- diff -------------------------------------------------------------------- */

struct diff_ent {
	char *section;
	const struct key_spec *k;
	char *value;
	bool sub_live;
};

struct diff_list {
	struct diff_ent *e;
	size_t n, cap;
	bool oom;
};

static void diff_collect(void *arg, const char *section, const struct key_spec *k, const char *value,
			 bool sub_live)
{
	struct diff_list *l = arg;
	if (l->oom)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct diff_ent *e = realloc(l->e, cap * sizeof(*e));
		if (!e) {
			l->oom = true;
			return;
		}
		l->e = e;
		l->cap = cap;
	}
	struct diff_ent *d = &l->e[l->n];
	d->section = strdup(section);
	d->value = strdup(value);
	d->k = k;
	d->sub_live = sub_live;
	if (!d->section || !d->value) {
		free(d->section);
		free(d->value);
		l->oom = true;
		return;
	}
	l->n++;
}

static void diff_free(struct diff_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->e[i].section);
		free(l->e[i].value);
	}
	free(l->e);
}

static const struct diff_ent *diff_find(const struct diff_list *l, const char *section, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->e[i].k->name, key) == 0 && strcmp(l->e[i].section, section) == 0)
			return &l->e[i];
	return NULL;
}

static bool diff_has_section(const struct diff_list *l, const char *section)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->e[i].section, section) == 0)
			return true;
	return false;
}

static bool sub_section(const char *section)
{
	return strchr(section, '.') != NULL;
}

/*
 * One side's keys against the other's: a key that differs (or is set on
 * one side only) is reported once, from `a`'s walk, or from `b`'s when `a`
 * lacks it. A sub-section on one side only is reported as a whole (key
 * NULL), with its kind's live flag.
 */
static void diff_side(const struct diff_list *a, const struct diff_list *b, bool from_b, conf_diff_fn fn,
		      void *arg, unsigned *restart)
{
	const char *last_whole = NULL;
	for (size_t i = 0; i < a->n; i++) {
		const struct diff_ent *x = &a->e[i];
		bool sub = sub_section(x->section);
		if (sub && !diff_has_section(b, x->section)) {
			if (!last_whole || strcmp(last_whole, x->section) != 0) {
				last_whole = x->section;
				fn(arg, x->section, NULL, x->sub_live);
				if (!x->sub_live)
					(*restart)++;
			}
			continue;
		}
		const struct diff_ent *y = diff_find(b, x->section, x->k->name);
		if (from_b ? y != NULL : (y && strcmp(x->value, y->value) == 0))
			continue;
		fn(arg, x->section, x->k->name, x->k->live);
		if (!x->k->live)
			(*restart)++;
	}
}

int conf_diff(const struct sluice_conf *a, const struct sluice_conf *b, conf_diff_fn fn, void *arg)
{
	struct diff_list la = { 0 }, lb = { 0 };
	if (!conf_walk(a, false, diff_collect, &la) || !conf_walk(b, false, diff_collect, &lb))
		la.oom = true;
	int rc = -1;
	if (!la.oom && !lb.oom) {
		unsigned restart = 0;
		diff_side(&la, &lb, false, fn, arg, &restart);
		diff_side(&lb, &la, true, fn, arg, &restart);
		rc = (int)restart;
	}
	diff_free(&la);
	diff_free(&lb);
	return rc;
}
