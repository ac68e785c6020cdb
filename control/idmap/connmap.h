/*
 * A hash map from connection handles (struct chan_conn: worker, slot,
 * generation) to intrusive nodes: the per-stream tables of auth and chat.
 * The key is the handle itself, so a node costs a link and the 16-byte
 * handle (the text keys of idmap.h cost 48 bytes a node) and a lookup does
 * no formatting. The owner embeds struct connmap_node in its object and keeps
 * ownership of it; the map only links nodes and owns its bucket array.
 * Single-threaded.
 */
#ifndef CONTROL_CONNMAP_H
#define CONTROL_CONNMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "idmap/hchain.h"
#include "sluice/chan_proto.h"

struct connmap_node {
	struct hc_link link;
	struct chan_conn conn; /* the key: worker, slot, gen (the pads are ignored) */
};

struct connmap {
	struct hc_table t;
};

int connmap_init(struct connmap *m, uint32_t nbuckets);
/* Frees the buckets; the nodes stay their owners'. */
void connmap_free(struct connmap *m);
static inline uint32_t connmap_count(const struct connmap *m)
{
	return m->t.n;
}
static inline bool connmap_same(struct chan_conn a, struct chan_conn b)
{
	return a.worker == b.worker && a.slot == b.slot && a.gen == b.gen;
}
/* Sets n->conn and links n. -1 when conn is already present. Never fails
 * otherwise: when the bucket array cannot grow, chains get longer. */
int connmap_insert(struct connmap *m, struct connmap_node *n, struct chan_conn conn);
struct connmap_node *connmap_find(const struct connmap *m, struct chan_conn conn);
/* Unlinks n; a no-op when n is not in m. */
void connmap_remove(struct connmap *m, struct connmap_node *n);
/* Calls fn for every node. fn may remove (and free) the node it is given,
 * but no other, and must not insert. */
void connmap_foreach(struct connmap *m, void (*fn)(struct connmap_node *n, void *arg), void *arg);
/* Forgets every node without touching them (their owner freed them or is
 * about to); keeps the bucket array, so it cannot fail. */
void connmap_clear(struct connmap *m);

#endif
