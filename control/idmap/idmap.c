#include "idmap/idmap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static uint64_t idmap_hash(const char *id, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)id[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

int idmap_init(struct idmap *m, uint32_t nbuckets)
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

void idmap_free(struct idmap *m)
{
	free(m->b);
	m->b = NULL;
	m->nbuckets = m->n = 0;
}

/* Doubles the bucket array; keeps the old one when memory is short, since a
 * longer chain is slower but still correct. */
static void idmap_grow(struct idmap *m)
{
	if (m->nbuckets >= (1u << 30))
		return;
	uint32_t nb = m->nbuckets * 2;
	struct idmap_node **b = calloc(nb, sizeof(*b));
	if (!b)
		return;
	for (uint32_t i = 0; i < m->nbuckets; i++) {
		struct idmap_node *n = m->b[i];
		while (n) {
			struct idmap_node *next = n->next;
			uint32_t j = (uint32_t)(n->hash & (nb - 1));
			n->next = b[j];
			b[j] = n;
			n = next;
		}
	}
	free(m->b);
	m->b = b;
	m->nbuckets = nb;
}

static bool idmap_eq(const struct idmap_node *n, uint64_t h, const char *id, size_t len)
{
	return n->hash == h && strlen(n->id) == len && memcmp(n->id, id, len) == 0;
}

struct idmap_node *idmap_find(const struct idmap *m, const char *id, size_t len)
{
	if (len >= CHAN_ID_LEN)
		return NULL;
	uint64_t h = idmap_hash(id, len);
	for (struct idmap_node *n = m->b[h & (m->nbuckets - 1)]; n; n = n->next)
		if (idmap_eq(n, h, id, len))
			return n;
	return NULL;
}

int idmap_insert(struct idmap *m, struct idmap_node *n, const char *id, size_t len)
{
	if (len == 0 || len >= CHAN_ID_LEN || memchr(id, 0, len) || idmap_find(m, id, len))
		return -1;
	if (m->n >= m->nbuckets)
		idmap_grow(m);
	memset(n->id, 0, sizeof(n->id));
	memcpy(n->id, id, len);
	n->hash = idmap_hash(id, len);
	uint32_t j = (uint32_t)(n->hash & (m->nbuckets - 1));
	n->next = m->b[j];
	m->b[j] = n;
	m->n++;
	return 0;
}

void idmap_remove(struct idmap *m, struct idmap_node *n)
{
	struct idmap_node **pp = &m->b[n->hash & (m->nbuckets - 1)];
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

void idmap_foreach(struct idmap *m, void (*fn)(struct idmap_node *n, void *arg), void *arg)
{
	for (uint32_t i = 0; i < m->nbuckets; i++) {
		struct idmap_node *n = m->b[i];
		while (n) {
			struct idmap_node *next = n->next;
			fn(n, arg);
			n = next;
		}
	}
}
