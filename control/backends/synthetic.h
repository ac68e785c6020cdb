/*
 * The synthetic backend, exactly as docs/api.md defines it, so tests and
 * benchmarks can compute every answer in advance. It runs behind the
 * backend manager like any backend (type = synthetic); these are the pure
 * functions that define it.
 */
#ifndef CONTROL_SYNTHETIC_H
#define CONTROL_SYNTHETIC_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/conf.h"

/* The longest synthetic token (a word and its leading space). */
#define SYN_TOKEN_MAX 64

uint64_t syn_seed(const char *prompt, size_t len);
uint64_t syn_splitmix64(uint64_t x);
/* Text of token k (1-based) for seed: the word, preceded by a space for k > 1.
 * Returns its length; buf must hold SYN_TOKEN_MAX bytes. */
int syn_token(uint64_t seed, uint32_t k, char *buf);
/* Number of maximal runs of non-whitespace bytes. */
uint32_t syn_prompt_tokens(const char *prompt, size_t len);
/* Offset of token k from the start of the answer. */
uint64_t syn_due_offset_ns(const struct conf_backend *cfg, uint32_t k);
double syn_cost(const struct conf_backend *cfg, uint32_t prompt_tokens, uint32_t completion_tokens);

#endif
