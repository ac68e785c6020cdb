#include "idmap/hchain.h"

#include <stdlib.h>
#include <string.h>

int hc_init(struct hc_table *t, uint32_t nbuckets, hc_hash_fn hash)
{
	uint32_t nb = 16;
	while (nb < nbuckets && nb < (1u << 30))
		nb <<= 1;
	t->b = calloc(nb, sizeof(*t->b));
	if (!t->b)
		return -1;
	t->nbuckets = nb;
	t->n = 0;
	t->hash = hash;
	return 0;
}

void hc_free(struct hc_table *t)
{
	free(t->b);
	t->b = NULL;
	t->nbuckets = t->n = 0;
}

static void hc_grow(struct hc_table *t)
{
	if (t->nbuckets >= (1u << 30))
		return;
	uint32_t nb = t->nbuckets * 2;
	struct hc_link **b = calloc(nb, sizeof(*b));
	if (!b)
		return;
	for (uint32_t i = 0; i < t->nbuckets; i++) {
		struct hc_link *l = t->b[i];
		while (l) {
			struct hc_link *next = l->next;
			uint64_t j = t->hash(l) & (nb - 1);
			l->next = b[j];
			b[j] = l;
			l = next;
		}
	}
	free(t->b);
	t->b = b;
	t->nbuckets = nb;
}

void hc_insert(struct hc_table *t, struct hc_link *l, uint64_t h)
{
	if (t->n >= t->nbuckets)
		hc_grow(t);
	struct hc_link **head = &t->b[h & (t->nbuckets - 1)];
	l->next = *head;
	*head = l;
	t->n++;
}

void hc_remove(struct hc_table *t, struct hc_link *l, uint64_t h)
{
	for (struct hc_link **pp = &t->b[h & (t->nbuckets - 1)]; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			l->next = NULL;
			t->n--;
			return;
		}
	}
}

void hc_foreach(struct hc_table *t, void (*fn)(struct hc_link *l, void *arg), void *arg)
{
	for (uint32_t i = 0; i < t->nbuckets; i++) {
		struct hc_link *l = t->b[i];
		while (l) {
			struct hc_link *next = l->next;
			fn(l, arg);
			l = next;
		}
	}
}

void hc_clear(struct hc_table *t)
{
	memset(t->b, 0, t->nbuckets * sizeof(*t->b));
	t->n = 0;
}
