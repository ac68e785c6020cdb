/*
 * Intrusive circular doubly linked list. A head is a node whose next/prev
 * point to itself when the list is empty; a node taken off a list by
 * list_del() is left self-linked too, so list_del() on a node that is on no
 * list is harmless. The list owns no memory: nodes live inside their objects.
 */
#ifndef SLUICE_LIST_H
#define SLUICE_LIST_H

#include <stdbool.h>

#include "sluice/common.h"

struct list_node {
	struct list_node *next, *prev;
};

#define list_entry(p, type, member) sluice_container_of(p, type, member)

static inline void list_init(struct list_node *h)
{
	h->next = h->prev = h;
}

static inline bool list_empty(const struct list_node *h)
{
	return h->next == h;
}

static inline void list_add_tail(struct list_node *h, struct list_node *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void list_del(struct list_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n);
}

/* Moves every node of `from` to the tail of `to`, in order, and leaves `from`
 * empty; lets a caller walk a private copy while callbacks append to the
 * original. */
static inline void list_splice_tail(struct list_node *to, struct list_node *from)
{
	if (list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	list_init(from);
}

#endif
