#include "idmap/connmap.h"

#include "sluice/common.h"

#define CM_NODE(l) sluice_container_of(l, struct connmap_node, link)

/* Handles come from the dataplane, not from clients, so a fast mix is
 * enough: slots are dense and generations change on every reuse. */
static uint64_t connmap_hash(struct chan_conn c)
{
	uint64_t h = ((uint64_t)c.slot << 32 | c.gen) ^ ((uint64_t)c.worker * 0x9e3779b97f4a7c15ull);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static uint64_t connmap_node_hash(const struct hc_link *l)
{
	return connmap_hash(CM_NODE(l)->conn);
}

int connmap_init(struct connmap *m, uint32_t nbuckets)
{
	return hc_init(&m->t, nbuckets, connmap_node_hash);
}

void connmap_free(struct connmap *m)
{
	hc_free(&m->t);
}

struct connmap_node *connmap_find(const struct connmap *m, struct chan_conn conn)
{
	for (struct hc_link *l = hc_chain(&m->t, connmap_hash(conn)); l; l = l->next)
		if (connmap_same(CM_NODE(l)->conn, conn))
			return CM_NODE(l);
	return NULL;
}

int connmap_insert(struct connmap *m, struct connmap_node *n, struct chan_conn conn)
{
	if (connmap_find(m, conn))
		return -1;
	n->conn = conn;
	hc_insert(&m->t, &n->link, connmap_hash(conn));
	return 0;
}

void connmap_remove(struct connmap *m, struct connmap_node *n)
{
	hc_remove(&m->t, &n->link, connmap_hash(n->conn));
}

struct cm_walk {
	void (*fn)(struct connmap_node *n, void *arg);
	void *arg;
};

static void connmap_visit(struct hc_link *l, void *arg)
{
	struct cm_walk *w = arg;
	w->fn(CM_NODE(l), w->arg);
}

void connmap_foreach(struct connmap *m, void (*fn)(struct connmap_node *n, void *arg), void *arg)
{
	struct cm_walk w = { fn, arg };
	hc_foreach(&m->t, connmap_visit, &w);
}

void connmap_clear(struct connmap *m)
{
	hc_clear(&m->t);
}
