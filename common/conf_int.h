/*
 * Internals of the sluice.conf reader, shared by its three files: conf.c
 * (the INI engine: lines, sections, keys, errors, load), conf_value.c (one
 * parser per kind of value) and conf_schema.c (the sections and keys, the
 * defaults and the checks that need the whole file). Nothing outside
 * common/conf*.c includes this.
 *
 * Adding a key: a field in struct sluice_conf (include/sluice/conf.h), a
 * row in its section's table (LIVE when a reload may apply it: then the
 * processes that use it must read it at run time or take it in their
 * reload hook) and its default in conf_schema.c, how conf_show.c writes it
 * when its kind is new, and a line in docs/configuration.md. conf_show.c
 * (sluicectl config show, the reload's diff) walks the same tables.
 */
#ifndef SLUICE_CONF_INT_H
#define SLUICE_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#include "sluice/conf.h"

#define CONF_LINE_MAX 4096u
/* sockaddr_un.sun_path holds 108 bytes including the NUL. */
#define CONF_SOCK_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

enum val_kind {
	K_U32,
	K_U32Z,      /* 0, or min..max */
	K_BOOL,
	K_TRANSPORT,
	K_KERNEL_SEND,
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
	K_ONOFF,
	K_TLS_VERSION,
	K_REDIRECT_LISTEN,
	K_URL,       /* http(s)://host[:port][/path], max bytes incl. NUL */
	K_ENV_NAME,  /* an environment variable's name */
	K_HEADERS,   /* "Name: value | Name: value" */
	K_LOG_LEVEL, /* debug | info | warn | error */
	K_LOG_FORMAT, /* plain | json */
};

struct key_spec {
	const char *name;
	enum val_kind kind;
	size_t off; /* into struct sluice_conf, or the open sub-section's struct */
	uint32_t min, max;
	bool live;  /* a reload applies it to running processes (docs/configuration.md "Reload") */
};

/* key_spec.live and section_spec.live. */
#define LIVE true
#define RESTART false

#define CF(f) offsetof(struct sluice_conf, f)
#define BF(f) offsetof(struct conf_backend, f)
#define AF(f) offsetof(struct conf_agent, f)
#define PF(f) offsetof(struct conf_port, f)
#define LF(i) (offsetof(struct conf_role_limits, v) + (i) * sizeof(uint32_t))
#define XF(f) offsetof(struct conf_cert, f)
#define MF(f) offsetof(struct conf_model, f)
#define FSIZE(type, f) ((uint32_t)sizeof(((struct type *)0)->f))

/* Highest lcore id DPDK accepts (RTE_MAX_LCORE 128 in Debian's build). */
#define CONF_LCORE_MAX 127u

/* The smallest record payload a ring may allow: a 1 MiB request body (the
 * dataplane's limit) plus 64 KiB of request fields (path, headers, ids). */
#define CONF_RING_PAYLOAD_MIN ((1u << 20) + (64u << 10))

/* A sub-section is one of several ([backend.NAME], [agent.NAME], [cert.NAME],
 * [model.NAME], [port.N], [limits.ROLE]); `required` lists the keys it must
 * set, checked when it ends. */
enum sub_kind { SUB_NONE, SUB_BACKEND, SUB_AGENT, SUB_PORT, SUB_CERT, SUB_MODEL, SUB_LIMITS };

struct section_spec {
	const char *name;
	const struct key_spec *keys;
	size_t nkeys;
	enum sub_kind sub;
	uint32_t required; /* bit i: keys[i] must be set */
	bool live;         /* sub-sections: one may be added or removed by a reload */
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
	uint32_t top_keys[32];          /* [i] bit j: key j of conf_sections[i] set in the file */
	unsigned transport_line;        /* 0: transport not set in the file */
	unsigned lcores_line;           /* 0: lcores not set in the file */
	unsigned tls_line;              /* 0: tls not set in the file */
	unsigned redirect_line;         /* 0: redirect_listen not set in the file */
	uint32_t nlcores;               /* lcores listed by the lcores key */
	unsigned gateway_line;          /* of the open [port.N], 0: none */
	unsigned agent_model_line[CONF_MAX_AGENTS];
	char *err;
	size_t errlen;
};

/* ---- conf.c ---------------------------------------------------------------- */

/* "FILE:LINE: reason" into p->err; returns -1. */
int conf_fail(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "FILE: reason" into err; returns -1. */
int conf_fail_file(char *err, size_t errlen, const char *file, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static inline bool conf_is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}
/* Trims blanks at both ends, in place. */
char *conf_trim(char *s);

/* ---- conf_value.c --------------------------------------------------------- */

/* Parses v (trimmed, not empty) as key k into the open section's struct. */
int conf_set_value(struct parser *p, const struct key_spec *k, char *v);
/* The words of an enumerated kind (K_TRANSPORT, K_KERNEL_SEND, K_BATCH_MODE,
 * K_BACKEND_TYPE, K_TLS_VERSION, K_LOG_LEVEL, K_LOG_FORMAT) in the order of
 * the values they stand for, stored as 4 bytes; NULL for other kinds. */
const char *const *conf_enum_words(enum val_kind kind, uint32_t *n);
/* A model id: 1..63 printable non-blank bytes. */
bool conf_model_name_ok(const char *m);

/* ---- conf_schema.c -------------------------------------------------------- */

extern const struct section_spec conf_sections[];
extern const size_t conf_nsections;
extern const struct section_spec conf_backend_section, conf_agent_section, conf_port_section,
	conf_cert_section, conf_model_section, conf_role_limits_section;
/* The spec of a sub-section kind. */
const struct section_spec *conf_sub_spec(enum sub_kind k);
/* The role a [limits.NAME] section names, or -1. */
int conf_role_of(const char *name);
/* Whether key `key` of top-level section `sec` was set in the file. */
bool conf_key_set(const struct parser *p, const char *sec, const char *key);
void conf_backend_defaults(struct conf_backend *be);
void conf_model_defaults(struct conf_model *m);
/* Checks that need a whole [port.N] (its header line is p->sub_line). */
int conf_close_port(struct parser *p);
/* Checks that need a whole [backend.NAME]: what its type requires. */
int conf_close_backend(struct parser *p);
/* Checks that need the whole file, and defaults that depend on other keys. */
int conf_finish(struct parser *p);

#endif
