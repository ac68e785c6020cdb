/*
 * The backend interface: how the chat layer drives one answer without
 * knowing which backend produces it. An answer is pulled, not pushed: the
 * chat layer asks when the next token is due, sleeps on the timer heap until
 * then and pulls every token that is due. Network backends (a later issue)
 * fit the same shape by reporting "due now" while they have buffered tokens.
 */
#ifndef CONTROL_BACKEND_H
#define CONTROL_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/conf.h"

/* Longest token text a backend may return (bytes, no NUL). */
#define BACKEND_TOKEN_MAX 64

struct backend_ops;

/* Per-answer state, embedded in the chat layer's running answer. */
struct backend_answer {
	const struct backend_ops *ops;
	const struct conf_backend *cfg; /* points into the loaded config */
	uint64_t start_ns;              /* when the message was accepted */
	uint64_t seed;
	uint32_t next_k;                /* 1-based number of the next token */
	uint32_t total;                 /* tokens this answer will have */
	uint32_t prompt_tokens;
};

struct backend_ops {
	const char *type;
	/* Prepares an answer to `prompt`; the prompt is not kept. */
	int (*start)(struct backend_answer *a, const struct conf_backend *cfg,
		     const char *prompt, size_t len, uint64_t now_ns);
	/* Absolute time the next token is due, UINT64_MAX when the answer is complete. */
	uint64_t (*next_due)(const struct backend_answer *a);
	/* Writes the next token into buf (BACKEND_TOKEN_MAX bytes) when it is due
	 * at now_ns; returns its length, or -1 when nothing is due. */
	int (*next)(struct backend_answer *a, uint64_t now_ns, char *buf);
	/* Cost of an answer in USD. */
	double (*cost)(const struct backend_answer *a, uint32_t completion_tokens);
};

#endif
