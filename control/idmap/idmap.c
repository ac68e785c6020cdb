#include "idmap/idmap.h"

#include <stdbool.h>
#include <string.h>

#include "sluice/common.h"

#define IM_NODE(l) sluice_container_of(l, struct idmap_node, link)

static uint64_t idmap_node_hash(const struct hc_link *l)
{
	return IM_NODE(l)->hash;
}

int idmap_init(struct idmap *m, uint32_t nbuckets)
{
	return hc_init(&m->t, nbuckets, idmap_node_hash);
}

void idmap_free(struct idmap *m)
{
	hc_free(&m->t);
}

static bool idmap_eq(const struct idmap_node *n, uint64_t h, const char *id, size_t len)
{
	return n->hash == h && strlen(n->id) == len && memcmp(n->id, id, len) == 0;
}

struct idmap_node *idmap_find(const struct idmap *m, const char *id, size_t len)
{
	if (len >= CHAN_ID_LEN)
		return NULL;
	uint64_t h = sluice_fnv1a64(id, len);
	for (struct hc_link *l = hc_chain(&m->t, h); l; l = l->next)
		if (idmap_eq(IM_NODE(l), h, id, len))
			return IM_NODE(l);
	return NULL;
}

int idmap_insert(struct idmap *m, struct idmap_node *n, const char *id, size_t len)
{
	if (len == 0 || len >= CHAN_ID_LEN || memchr(id, 0, len) || idmap_find(m, id, len))
		return -1;
	memset(n->id, 0, sizeof(n->id));
	memcpy(n->id, id, len);
	n->hash = sluice_fnv1a64(id, len);
	hc_insert(&m->t, &n->link, n->hash);
	return 0;
}

void idmap_remove(struct idmap *m, struct idmap_node *n)
{
	hc_remove(&m->t, &n->link, n->hash);
}

struct im_walk {
	void (*fn)(struct idmap_node *n, void *arg);
	void *arg;
};

static void idmap_visit(struct hc_link *l, void *arg)
{
	struct im_walk *w = arg;
	w->fn(IM_NODE(l), w->arg);
}

void idmap_foreach(struct idmap *m, void (*fn)(struct idmap_node *n, void *arg), void *arg)
{
	struct im_walk w = { fn, arg };
	hc_foreach(&m->t, idmap_visit, &w);
}
