/*
 * The stacks that share one address and port (conf.shared_port: one per
 * worker) form a group, so that every connection has exactly one TCB among
 * them and every segment reaches it.
 *
 * Why: the device spreads frames over the workers by flow hash, but
 * af_packet rolls frames over to another worker's queue when one is full.
 * A cookie validates for the first data segment of a connection as well as
 * for the handshake's ACK, so a rolled-over request used to open a second
 * TCB on the other worker, which answered; the client's ACKs and FIN kept
 * going to the first one, which could only send challenge ACKs: the
 * client's FIN was never acknowledged and both TCBs stayed open. Likewise a
 * connection opened by a rolled-over ACK lived on the worker that does not
 * receive its frames.
 *
 * How: a registry maps each 4-tuple to the stack holding its TCB (claimed
 * when the TCB is created, released when it dies), and a stack that holds
 * no TCB for a segment's tuple copies the segment into the owner's ring,
 * which the owner empties from net_stack_tick().
 *
 * Concurrency: members run on different threads. Joining and leaving take
 * a mutex (stack creation and destruction only). The registry is lock-free:
 * buckets of REG_WAYS 64-bit words, each word one tuple and its owner,
 * written only with compare-and-swap by its owner; a claim that finds a
 * second word for its tuple after its own CAS withdraws (sequentially
 * consistent atomics guarantee that of two simultaneous claims at least one
 * sees the other, so never both stay). The rings are bounded multi-producer
 * single-consumer queues (D. Vyukov's design). A ring outlives its member
 * until the whole group is freed, so a producer never writes freed memory.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net_tcp_int.h"

#define REG_WAYS 8u             /* words per bucket: one cache line */
#define REG_WORDS_PER_CONN 32u  /* registry size per TCB of the first member */
#define FWD_CELLS 512u          /* segments a member can be handed between two ticks */

/* Registry word: raddr (bits 0-31), rport (32-47), index of the listening
 * port (48-49), owner (50-56), valid (63). */
#define REG_VALID (1ull << 63)
#define REG_KEY_MASK (REG_VALID | ((1ull << 50) - 1))
#define REG_OWNER_SHIFT 50

_Static_assert(NET_GROUP_MAX <= 128, "owner index fits 7 bits");

struct tcp_fwd_cell {
	uint64_t seq;       /* Vyukov: pos + 1 when full, pos + cells when free */
	uint32_t len;       /* segment bytes after the cell header */
	uint32_t pad;
	struct net_ip ip;   /* the datagram's IPv4 header (addresses) */
};

struct tcp_fwd_ring {
	uint64_t tail;      /* next cell producers claim (atomic) */
	uint64_t head;      /* next cell the owner reads */
	uint32_t cap;       /* segment bytes a cell holds */
	uint32_t stride;    /* bytes per cell */
	uint8_t *cells;
};

struct tcp_group {
	struct tcp_group *next;
	uint32_t ipv4;
	uint16_t ports[NET_MAX_LISTEN];
	uint8_t fingerprint[crypto_shorthash_BYTES]; /* of the shared secret */
	uint32_t refs;
	uint64_t seed;
	uint64_t *reg;
	uint64_t reg_mask;  /* buckets - 1 */
	struct net_stack *members[NET_GROUP_MAX]; /* atomic; NULL: free or gone */
	struct tcp_fwd_ring rings[NET_GROUP_MAX];
};

static pthread_mutex_t groups_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tcp_group *groups;

static void tcp_group_fingerprint(const struct net_stack *s, uint8_t *out)
{
	static const uint8_t label[] = "sluice tcp group";
	crypto_shorthash(out, label, sizeof(label), s->conf.secret);
}

static bool tcp_group_matches(const struct tcp_group *g, const struct net_stack *s,
			      const uint8_t *fp)
{
	return g->ipv4 == s->conf.ipv4 &&
	       memcmp(g->ports, s->conf.listen_ports, sizeof(g->ports)) == 0 &&
	       memcmp(g->fingerprint, fp, sizeof(g->fingerprint)) == 0;
}

static void tcp_group_free(struct tcp_group *g)
{
	for (uint32_t i = 0; i < NET_GROUP_MAX; i++)
		free(g->rings[i].cells);
	free(g->reg);
	free(g);
}

static struct tcp_group *tcp_group_new(const struct net_stack *s, const uint8_t *fp)
{
	struct tcp_group *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->ipv4 = s->conf.ipv4;
	memcpy(g->ports, s->conf.listen_ports, sizeof(g->ports));
	memcpy(g->fingerprint, fp, sizeof(g->fingerprint));
	g->seed = s->hash_seed ^ 0x6a09e667f3bcc908ull;
	uint64_t words = REG_WAYS;
	while (words < (uint64_t)s->conf.max_conns * REG_WORDS_PER_CONN)
		words <<= 1;
	g->reg = calloc(words, sizeof(*g->reg));
	if (!g->reg) {
		free(g);
		return NULL;
	}
	g->reg_mask = words / REG_WAYS - 1;
	return g;
}

static bool tcp_group_ring_init(struct tcp_fwd_ring *r, uint32_t mtu)
{
	r->cap = mtu;
	r->stride = (uint32_t)((sizeof(struct tcp_fwd_cell) + mtu + 63u) & ~63u);
	r->cells = aligned_alloc(64, (size_t)FWD_CELLS * r->stride);
	if (!r->cells)
		return false;
	for (uint32_t i = 0; i < FWD_CELLS; i++)
		((struct tcp_fwd_cell *)(void *)(r->cells + (size_t)i * r->stride))->seq = i;
	r->head = r->tail = 0;
	return true;
}

bool tcp_group_join(struct net_stack *s, char *err, size_t errlen)
{
	uint8_t fp[crypto_shorthash_BYTES];
	tcp_group_fingerprint(s, fp);
	pthread_mutex_lock(&groups_lock);
	struct tcp_group *g = groups;
	while (g && !tcp_group_matches(g, s, fp))
		g = g->next;
	bool created = false;
	if (!g) {
		g = tcp_group_new(s, fp);
		if (!g) {
			pthread_mutex_unlock(&groups_lock);
			snprintf(err, errlen, "net: out of memory for the shared-port registry");
			return false;
		}
		created = true;
	}
	uint32_t i = 0;
	while (i < NET_GROUP_MAX && (g->members[i] || g->rings[i].cells))
		i++;
	const char *why = NULL;
	if (i == NET_GROUP_MAX)
		why = "net: more than 64 stacks share one address";
	else if (!tcp_group_ring_init(&g->rings[i], s->conf.mtu))
		why = "net: out of memory for the forwarding ring";
	if (why) {
		if (created)
			tcp_group_free(g);
		pthread_mutex_unlock(&groups_lock);
		snprintf(err, errlen, "%s", why);
		return false;
	}
	if (created) {
		g->next = groups;
		groups = g;
	}
	g->refs++;
	__atomic_store_n(&g->members[i], s, __ATOMIC_RELEASE);
	s->group = g;
	s->group_id = i;
	pthread_mutex_unlock(&groups_lock);
	return true;
}

void tcp_group_leave(struct net_stack *s)
{
	struct tcp_group *g = s->group;
	if (!g)
		return;
	pthread_mutex_lock(&groups_lock);
	/* The ring stays allocated (and its slot taken) until the group goes:
	 * another member may be writing into it right now. */
	__atomic_store_n(&g->members[s->group_id], NULL, __ATOMIC_RELEASE);
	s->group = NULL;
	if (--g->refs == 0) {
		struct tcp_group **p = &groups;
		while (*p != g)
			p = &(*p)->next;
		*p = g->next;
		tcp_group_free(g);
	}
	pthread_mutex_unlock(&groups_lock);
}

/* The tuple's registry key, or 0 when lport is not one of the group's
 * listening ports (no TCB can exist for it). */
static uint64_t tcp_group_key(const struct net_stack *s, uint32_t raddr, uint16_t rport,
			      uint16_t lport)
{
	for (uint32_t i = 0; i < NET_MAX_LISTEN && s->conf.listen_ports[i]; i++)
		if (net_htons(s->conf.listen_ports[i]) == lport)
			return REG_VALID | (uint64_t)i << 48 | (uint64_t)rport << 32 | raddr;
	return 0;
}

static uint64_t *tcp_group_bucket(const struct tcp_group *g, uint32_t raddr, uint16_t rport,
				  uint16_t lport)
{
	return g->reg + (tcp_tuple_mix(g->seed, raddr, rport, lport) & g->reg_mask) * REG_WAYS;
}

/* The index of the word in b holding key, other than skip, or -1. */
static int tcp_group_find(const uint64_t *b, uint64_t key, int skip)
{
	for (uint32_t i = 0; i < REG_WAYS; i++) {
		uint64_t w = __atomic_load_n(&b[i], __ATOMIC_SEQ_CST);
		if ((int)i != skip && (w & REG_KEY_MASK) == key)
			return (int)i;
	}
	return -1;
}

int tcp_group_owner(const struct net_stack *s, uint32_t raddr, uint16_t rport, uint16_t lport)
{
	uint64_t key = tcp_group_key(s, raddr, rport, lport);
	if (!key)
		return -1;
	const uint64_t *b = tcp_group_bucket(s->group, raddr, rport, lport);
	int i = tcp_group_find(b, key, -1);
	if (i < 0)
		return -1;
	return (int)((__atomic_load_n(&b[i], __ATOMIC_SEQ_CST) >> REG_OWNER_SHIFT) & 0x7f);
}

bool tcp_group_claim(struct net_stack *s, struct net_conn *c)
{
	uint64_t key = tcp_group_key(s, c->raddr, c->rport, c->lport);
	if (!key)
		return true;
	uint64_t word = key | (uint64_t)s->group_id << REG_OWNER_SHIFT;
	uint64_t *b = tcp_group_bucket(s->group, c->raddr, c->rport, c->lport);
	/* Each failed CAS means another member changed this bucket; a few
	 * rounds settle it, and a bucket that stays full leaves the TCB
	 * unregistered (as if there were no group). */
	for (uint32_t round = 0; round < 2 * REG_WAYS; round++) {
		int held = tcp_group_find(b, key, -1);
		if (held >= 0) {
			if (__atomic_load_n(&b[held], __ATOMIC_SEQ_CST) != word)
				return false;
			c->flags |= NC_GROUP;
			return true;
		}
		int slot = -1;
		for (uint32_t i = 0; i < REG_WAYS && slot < 0; i++)
			if (__atomic_load_n(&b[i], __ATOMIC_SEQ_CST) == 0)
				slot = (int)i;
		if (slot < 0)
			return true;
		uint64_t expect = 0;
		if (!__atomic_compare_exchange_n(&b[slot], &expect, word, false, __ATOMIC_SEQ_CST,
						 __ATOMIC_SEQ_CST))
			continue;
		if (tcp_group_find(b, key, slot) >= 0) {
			__atomic_store_n(&b[slot], 0, __ATOMIC_SEQ_CST);
			return false;
		}
		c->flags |= NC_GROUP;
		return true;
	}
	return true;
}

void tcp_group_release(struct net_stack *s, struct net_conn *c)
{
	if (!(c->flags & NC_GROUP))
		return;
	c->flags &= ~(uint32_t)NC_GROUP;
	uint64_t word = tcp_group_key(s, c->raddr, c->rport, c->lport) |
			(uint64_t)s->group_id << REG_OWNER_SHIFT;
	uint64_t *b = tcp_group_bucket(s->group, c->raddr, c->rport, c->lport);
	for (uint32_t i = 0; i < REG_WAYS; i++) {
		uint64_t expect = word;
		if (__atomic_compare_exchange_n(&b[i], &expect, 0, false, __ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST))
			return;
	}
}

static inline struct tcp_fwd_cell *tcp_group_cell(const struct tcp_fwd_ring *r, uint64_t pos)
{
	return (struct tcp_fwd_cell *)(void *)(r->cells + (size_t)(pos & (FWD_CELLS - 1)) * r->stride);
}

bool tcp_group_forward(struct net_stack *s, int owner, const struct net_ip *ip,
		       const uint8_t *seg, uint32_t len)
{
	struct tcp_group *g = s->group;
	struct tcp_fwd_ring *r = &g->rings[owner];
	if (!__atomic_load_n(&g->members[owner], __ATOMIC_ACQUIRE) || len > r->cap)
		return false;
	uint64_t pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
	struct tcp_fwd_cell *cell;
	for (;;) {
		cell = tcp_group_cell(r, pos);
		uint64_t seq = __atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE);
		int64_t dif = (int64_t)(seq - pos);
		if (dif == 0) {
			if (__atomic_compare_exchange_n(&r->tail, &pos, pos + 1, true,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
				break;
		} else if (dif < 0) {
			return false; /* full */
		} else {
			pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
		}
	}
	cell->len = len;
	cell->ip = *ip;
	memcpy(cell + 1, seg, len);
	__atomic_store_n(&cell->seq, pos + 1, __ATOMIC_RELEASE);
	return true;
}

uint32_t net_tcp_forwarded(struct net_stack *s)
{
	struct tcp_group *g = s->group;
	if (!g)
		return 0;
	struct tcp_fwd_ring *r = &g->rings[s->group_id];
	/* At most one ring's worth per tick, so a flood of forwards cannot
	 * hold the worker here. */
	uint32_t n = 0;
	for (; n < FWD_CELLS; n++) {
		struct tcp_fwd_cell *cell = tcp_group_cell(r, r->head);
		if (__atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE) != r->head + 1)
			break;
		tcp_in_forwarded(s, &cell->ip, (const uint8_t *)(cell + 1), cell->len);
		__atomic_store_n(&cell->seq, r->head + FWD_CELLS, __ATOMIC_RELEASE);
		r->head++;
	}
	return n;
}
