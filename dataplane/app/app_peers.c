/*
 * Per-address connection counts (see app_peers.h). A slot with count 0 is
 * empty; an address is hashed with a multiplicative hash, since addresses
 * of one subnet differ in their low bits only.
 */
#include "app/app_peers.h"

#include <stdlib.h>

struct app_peer_slot {
	uint32_t ipv4;
	uint32_t count; /* 0: empty */
};

struct app_peers {
	uint32_t mask; /* slots - 1 */
	uint32_t used, max_used;
	struct app_peer_slot slot[];
};

static uint32_t app_peers_home(const struct app_peers *p, uint32_t ipv4)
{
	return (uint32_t)(((uint64_t)ipv4 * 0x9e3779b97f4a7c15ull) >> 32) & p->mask;
}

struct app_peers *app_peers_create(uint32_t max_addrs)
{
	uint32_t n = 16;

	while (n < 2u * max_addrs && n < (1u << 31))
		n <<= 1;
	struct app_peers *p = calloc(1, sizeof(*p) + (size_t)n * sizeof(p->slot[0]));
	if (!p)
		return NULL;
	p->mask = n - 1;
	p->max_used = max_addrs;
	return p;
}

void app_peers_destroy(struct app_peers *p)
{
	free(p);
}

/* The slot holding ipv4, or the empty slot where it would go. */
static struct app_peer_slot *app_peers_find(const struct app_peers *p, uint32_t ipv4)
{
	uint32_t i = app_peers_home(p, ipv4);

	for (;;) {
		const struct app_peer_slot *s = &p->slot[i];
		if (s->count == 0 || s->ipv4 == ipv4)
			return (struct app_peer_slot *)s;
		i = (i + 1) & p->mask;
	}
}

uint32_t app_peers_add(struct app_peers *p, uint32_t ipv4, uint32_t cap)
{
	struct app_peer_slot *s = app_peers_find(p, ipv4);

	if (s->count == 0) {
		if (p->used == p->max_used || cap == 0)
			return 0;
		p->used++;
		s->ipv4 = ipv4;
	} else if (s->count >= cap) {
		return 0;
	}
	return ++s->count;
}

void app_peers_del(struct app_peers *p, uint32_t ipv4)
{
	struct app_peer_slot *s = app_peers_find(p, ipv4);

	if (s->count == 0 || --s->count > 0)
		return;
	p->used--;
	/* Backward shift: pull later members of the run into the hole when
	 * their home does not lie between the hole and them. */
	uint32_t hole = (uint32_t)(s - p->slot);
	uint32_t i = hole;
	for (;;) {
		i = (i + 1) & p->mask;
		struct app_peer_slot *n = &p->slot[i];
		if (n->count == 0)
			break;
		uint32_t home = app_peers_home(p, n->ipv4);
		if (((i - home) & p->mask) >= ((i - hole) & p->mask)) {
			p->slot[hole] = *n;
			n->count = 0;
			hole = i;
		}
	}
}

uint32_t app_peers_count(const struct app_peers *p, uint32_t ipv4)
{
	return app_peers_find(p, ipv4)->count;
}
