/*
 * The bucket array of an intrusive chained hash table, shared by control's
 * maps (connmap.h, idmap.h, auth's user names): a node embeds struct
 * hc_link, the map keeps its key and compares it; this file links, unlinks,
 * walks and grows. A power-of-two array that doubles once it holds as many
 * nodes as buckets (keeping the old one when memory is short: longer
 * chains, still correct). The table owns only its array; nodes stay their
 * owners'. Single-threaded.
 */
#ifndef CONTROL_HCHAIN_H
#define CONTROL_HCHAIN_H

#include <stddef.h>
#include <stdint.h>

struct hc_link {
	struct hc_link *next;
};

/* A linked node's hash, for regrowing: the maps that do not keep it in the
 * node (a connection handle is its own key) compute it again. */
typedef uint64_t (*hc_hash_fn)(const struct hc_link *l);

struct hc_table {
	struct hc_link **b;
	uint32_t nbuckets; /* power of two */
	uint32_t n;
	hc_hash_fn hash;
};

/* nbuckets is rounded up to a power of two, 16 at least. -1 when out of memory. */
int hc_init(struct hc_table *t, uint32_t nbuckets, hc_hash_fn hash);
void hc_free(struct hc_table *t);

/* The chain a hash falls in; walk it with ->next. */
static inline struct hc_link *hc_chain(const struct hc_table *t, uint64_t h)
{
	return t->b[h & (t->nbuckets - 1)];
}

/* Links l under h (the caller made sure its key is not present). */
void hc_insert(struct hc_table *t, struct hc_link *l, uint64_t h);
/* Unlinks l, linked under h; a no-op when it is not linked. */
void hc_remove(struct hc_table *t, struct hc_link *l, uint64_t h);
/* Calls fn for every node; fn may unlink and free the node it is given. */
void hc_foreach(struct hc_table *t, void (*fn)(struct hc_link *l, void *arg), void *arg);
/* Forgets every node without touching them. */
void hc_clear(struct hc_table *t);

#endif
