/*
 * A hash map from ids (sessions, messages: short ASCII strings of at most
 * CHAN_ID_LEN-1 bytes) to intrusive nodes. The owner embeds struct idmap_node
 * in its object and keeps ownership of it; the map only links nodes.
 * Single-threaded.
 */
#ifndef CONTROL_IDMAP_H
#define CONTROL_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "idmap/hchain.h"
#include "sluice/chan_proto.h"

struct idmap_node {
	struct hc_link link;
	uint64_t hash;
	char id[CHAN_ID_LEN]; /* NUL-terminated key */
};

struct idmap {
	struct hc_table t;
};

int idmap_init(struct idmap *m, uint32_t nbuckets);
void idmap_free(struct idmap *m);
static inline uint32_t idmap_count(const struct idmap *m)
{
	return m->t.n;
}
/* Sets n->id from id (length len) and links it. Returns -1 when the id is
 * empty, too long, holds a NUL or is already present. */
int idmap_insert(struct idmap *m, struct idmap_node *n, const char *id, size_t len);
struct idmap_node *idmap_find(const struct idmap *m, const char *id, size_t len);
void idmap_remove(struct idmap *m, struct idmap_node *n);
/* Calls fn for every node. fn may free the node it is given (teardown) but
 * must not insert or remove nodes. */
void idmap_foreach(struct idmap *m, void (*fn)(struct idmap_node *n, void *arg), void *arg);

#endif
