#include "idmap/connmap.h"

#include <stdlib.h>
#include <string.h>

/* Handles come from the dataplane, not from clients, so a fast mix is
 * enough: slots are dense and generations change on every reuse. */
static uint32_t connmap_hash(struct chan_conn c)
{
	uint64_t h = ((uint64_t)c.slot << 32 | c.gen) ^ ((uint64_t)c.worker * 0x9e3779b97f4a7c15ull);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return (uint32_t)h;
}

int connmap_init(struct connmap *m, uint32_t nbuckets)
{
	uint32_t nb = 16;
	while (nb < nbuckets && nb < (1u << 30))
		nb <<= 1;
	m->b = calloc(nb, sizeof(*m->b));
	if (!m->b)
		return -1;
	m->nbuckets = nb;
	m->n = 0;
	return 0;
}

void connmap_free(struct connmap *m)
{
	free(m->b);
	m->b = NULL;
	m->nbuckets = m->n = 0;
}

/* Doubles the bucket array; keeps the old one when memory is short, since a
 * longer chain is slower but still correct. */
static void connmap_grow(struct connmap *m)
{
	if (m->nbuckets >= (1u << 30))
		return;
	uint32_t nb = m->nbuckets * 2;
	struct connmap_node **b = calloc(nb, sizeof(*b));
	if (!b)
		return;
	for (uint32_t i = 0; i < m->nbuckets; i++) {
		struct connmap_node *n = m->b[i];
		while (n) {
			struct connmap_node *next = n->next;
			uint32_t j = connmap_hash(n->conn) & (nb - 1);
			n->next = b[j];
			b[j] = n;
			n = next;
		}
	}
	free(m->b);
	m->b = b;
	m->nbuckets = nb;
}

struct connmap_node *connmap_find(const struct connmap *m, struct chan_conn conn)
{
	for (struct connmap_node *n = m->b[connmap_hash(conn) & (m->nbuckets - 1)]; n; n = n->next)
		if (connmap_same(n->conn, conn))
			return n;
	return NULL;
}

int connmap_insert(struct connmap *m, struct connmap_node *n, struct chan_conn conn)
{
	if (connmap_find(m, conn))
		return -1;
	if (m->n >= m->nbuckets)
		connmap_grow(m);
	n->conn = conn;
	uint32_t j = connmap_hash(conn) & (m->nbuckets - 1);
	n->next = m->b[j];
	m->b[j] = n;
	m->n++;
	return 0;
}

void connmap_remove(struct connmap *m, struct connmap_node *n)
{
	struct connmap_node **pp = &m->b[connmap_hash(n->conn) & (m->nbuckets - 1)];
	while (*pp) {
		if (*pp == n) {
			*pp = n->next;
			n->next = NULL;
			m->n--;
			return;
		}
		pp = &(*pp)->next;
	}
}

void connmap_foreach(struct connmap *m, void (*fn)(struct connmap_node *n, void *arg), void *arg)
{
	for (uint32_t i = 0; i < m->nbuckets; i++) {
		struct connmap_node *n = m->b[i];
		while (n) {
			struct connmap_node *next = n->next;
			fn(n, arg);
			n = next;
		}
	}
}

void connmap_clear(struct connmap *m)
{
	memset(m->b, 0, m->nbuckets * sizeof(*m->b));
	m->n = 0;
}
