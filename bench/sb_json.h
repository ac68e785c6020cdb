/*
 * Just enough JSON reading for the bench's hot path: a member's number or
 * string found by its key in a flat object, without building a tree. Keys are
 * matched as `"key":`; inside a JSON string every quote is escaped, so a key
 * never matches inside a string value.
 */
#ifndef SB_JSON_H
#define SB_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The unsigned integer value of member `key`; false when absent. */
bool sb_json_u64(const char *s, size_t n, const char *key, uint64_t *out);
/* The raw (still escaped) string value of member `key`. */
bool sb_json_str(const char *s, size_t n, const char *key, const char **v, size_t *vlen);
/* Up to max numbers of the array member `key`; returns how many, -1 absent. */
int sb_json_u64_array(const char *s, size_t n, const char *key, uint64_t *out, int max);

#endif
