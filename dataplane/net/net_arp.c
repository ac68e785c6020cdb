/* ARP (see net_arp.h). */
#include "net/net_arp.h"

#include <string.h>

#include "net/net_int.h"
#include "worker/timer_wheel.h"

#define ARP_FRAME_LEN (NET_ETH_HLEN + (uint32_t)sizeof(struct net_arp))
#define MS 1000000ull

static const uint8_t bcast_mac[NET_ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};


/* The entry for ip, or NULL; linear probing over the whole small table. */
static struct net_arp_entry *arp_find(struct net_stack *s, uint32_t ip)
{
	uint32_t i = net_arp_slot(ip);
	for (uint32_t n = 0; n < NET_ARP_SIZE; n++, i = (i + 1) & (NET_ARP_SIZE - 1)) {
		if (s->arp[i].ip == ip)
			return &s->arp[i];
	}
	return NULL;
}

/* A slot for ip: its own, a free one, or the one closest to expiry. */
static struct net_arp_entry *arp_slot_for(struct net_stack *s, uint32_t ip)
{
	struct net_arp_entry *e = arp_find(s, ip);
	if (e)
		return e;
	uint32_t i = net_arp_slot(ip);
	struct net_arp_entry *victim = &s->arp[i];
	for (uint32_t n = 0; n < NET_ARP_SIZE; n++, i = (i + 1) & (NET_ARP_SIZE - 1)) {
		e = &s->arp[i];
		if (e->ip == 0 || (e->resolved && e->expire_ns <= s->now_ns))
			return e;
		if (e->expire_ns < victim->expire_ns)
			victim = e;
	}
	return victim;
}

static void arp_send(struct net_stack *s, uint16_t op, const uint8_t *tha, uint32_t tpa,
		     const uint8_t *eth_dst)
{
	void *pkt;
	uint8_t *f = s->io.tx_alloc(s->io_arg, ARP_FRAME_LEN, &pkt);
	if (!f) {
		s->st.tx_nobuf++;
		return;
	}
	struct net_eth *eth = (struct net_eth *)f;
	struct net_arp *a = (struct net_arp *)(f + NET_ETH_HLEN);
	memcpy(eth->dst, eth_dst, NET_ETH_ALEN);
	memcpy(eth->src, s->conf.mac, NET_ETH_ALEN);
	eth->type = net_htons(NET_ETHERTYPE_ARP);
	a->htype = net_htons(NET_ARP_HW_ETHER);
	a->ptype = net_htons(NET_ETHERTYPE_IPV4);
	a->hlen = NET_ETH_ALEN;
	a->plen = 4;
	a->op = net_htons(op);
	memcpy(a->sha, s->conf.mac, NET_ETH_ALEN);
	a->spa = s->conf.ipv4;
	memcpy(a->tha, tha, NET_ETH_ALEN);
	a->tpa = tpa;
	if (op == NET_ARP_OP_REPLY)
		s->st.arp_replies++;
	else
		s->st.arp_requests++;
	s->st.tx_frames++;
	s->io.tx_send(s->io_arg, pkt, ARP_FRAME_LEN, 0);
}

static void arp_request(struct net_stack *s, uint32_t ip)
{
	static const uint8_t zero[NET_ETH_ALEN];
	arp_send(s, NET_ARP_OP_REQUEST, zero, ip, bcast_mac);
}

void net_arp_announce(struct net_stack *s)
{
	static const uint8_t zero[NET_ETH_ALEN];
	arp_send(s, NET_ARP_OP_REQUEST, zero, s->conf.ipv4, bcast_mac);
}

/* Sends every queued frame whose next hop is now known. */
static void pending_release(struct net_stack *s, const struct net_arp_entry *e)
{
	uint32_t keep = 0;
	for (uint32_t i = 0; i < s->n_pend; i++) {
		struct net_arp_pending *p = &s->pend[i];
		if (p->nh == e->ip) {
			memcpy(p->frame, e->mac, NET_ETH_ALEN);
			s->st.tx_frames++;
			s->io.tx_send(s->io_arg, p->pkt, p->len, p->flags);
		} else {
			s->pend[keep++] = *p;
		}
	}
	s->n_pend = keep;
}

/* Retries unresolved entries and drops frames for the ones that gave up. */
static void arp_timer_cb(void *arg, struct tw_timer *t)
{
	struct net_stack *s = arg;
	uint64_t now = s->now_ns > t->deadline_ns ? s->now_ns : t->deadline_ns;
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < NET_ARP_SIZE; i++) {
		struct net_arp_entry *e = &s->arp[i];
		if (e->ip == 0 || e->resolved)
			continue;
		if (e->expire_ns > now) {
			next = e->expire_ns < next ? e->expire_ns : next;
			continue;
		}
		if (e->tries >= NET_ARP_TRIES) {
			uint32_t keep = 0;
			for (uint32_t j = 0; j < s->n_pend; j++) {
				if (s->pend[j].nh == e->ip) {
					s->io.tx_free(s->io_arg, s->pend[j].pkt);
					s->st.arp_timeouts++;
				} else {
					s->pend[keep++] = s->pend[j];
				}
			}
			s->n_pend = keep;
			e->ip = 0;
			continue;
		}
		e->tries++;
		e->expire_ns = now + NET_ARP_RETRY_MS * MS;
		next = e->expire_ns < next ? e->expire_ns : next;
		arp_request(s, e->ip);
	}
	/* Frames whose entry was taken over by another address (a full
	 * table) have nobody asking for them any more. */
	uint32_t keep = 0;
	for (uint32_t j = 0; j < s->n_pend; j++) {
		if (arp_find(s, s->pend[j].nh)) {
			s->pend[keep++] = s->pend[j];
		} else {
			s->io.tx_free(s->io_arg, s->pend[j].pkt);
			s->st.arp_timeouts++;
		}
	}
	s->n_pend = keep;
	if (next != UINT64_MAX)
		tw_arm(s->wheel, &s->arp_timer, next);
}

void net_arp_init(struct net_stack *s)
{
	memset(s->arp, 0, sizeof(s->arp));
	s->n_pend = 0;
	tw_init(&s->arp_timer, arp_timer_cb, s);
}

void net_arp_flush(struct net_stack *s)
{
	for (uint32_t i = 0; i < s->n_pend; i++)
		s->io.tx_free(s->io_arg, s->pend[i].pkt);
	s->n_pend = 0;
}

/* Records ip -> mac as resolved and releases frames waiting for it. */
static void arp_learn(struct net_stack *s, uint32_t ip, const uint8_t *mac, bool create)
{
	struct net_arp_entry *e = arp_find(s, ip);
	if (!e) {
		if (!create)
			return;
		e = arp_slot_for(s, ip);
	}
	e->ip = ip;
	memcpy(e->mac, mac, NET_ETH_ALEN);
	e->resolved = 1;
	e->tries = 0;
	e->expire_ns = s->now_ns + (uint64_t)s->conf.arp_timeout_ms * MS;
	pending_release(s, e);
}

void net_arp_input(struct net_stack *s, const uint8_t *frame, uint32_t len)
{
	s->st.arp_rx++;
	if (len < ARP_FRAME_LEN) {
		s->st.rx_short++;
		return;
	}
	const struct net_arp *a = (const struct net_arp *)(frame + NET_ETH_HLEN);
	if (net_ntohs(a->htype) != NET_ARP_HW_ETHER || net_ntohs(a->ptype) != NET_ETHERTYPE_IPV4 ||
	    a->hlen != NET_ETH_ALEN || a->plen != 4)
		return;
	uint16_t op = net_ntohs(a->op);
	/* Ignore nonsense senders: ourselves, zero, broadcast or multicast MACs. */
	if (a->spa == s->conf.ipv4 || (a->sha[0] & 1) ||
	    memcmp(a->sha, s->conf.mac, NET_ETH_ALEN) == 0)
		return;
	bool for_us = a->tpa == s->conf.ipv4;
	/* RFC 826 merge: update an existing entry always, create one only when
	 * the packet is addressed to us (the sender is about to talk to us). */
	if (a->spa != 0)
		arp_learn(s, a->spa, a->sha, for_us);
	if (for_us && op == NET_ARP_OP_REQUEST)
		arp_send(s, NET_ARP_OP_REPLY, a->sha, a->spa, a->sha);
}

void net_arp_output_slow(struct net_stack *s, void *pkt, uint8_t *frame, uint32_t len,
			 uint32_t flags, uint32_t nh)
{
	if (unlikely(nh == 0)) {
		s->io.tx_free(s->io_arg, pkt);
		s->st.arp_pending_drops++;
		return;
	}
	struct net_arp_entry *e = arp_find(s, nh);
	if (likely(e && e->resolved)) {
		/* An aged entry stays usable while one refresh request is out,
		 * so a busy peer's traffic never stalls on re-resolution. */
		uint64_t grace = (uint64_t)NET_ARP_TRIES * NET_ARP_RETRY_MS * MS;
		if (unlikely(e->expire_ns <= s->now_ns) && e->tries == 0) {
			e->tries = 1;
			arp_request(s, nh);
		}
		if (likely(s->now_ns < e->expire_ns + grace)) {
			memcpy(frame, e->mac, NET_ETH_ALEN);
			s->st.tx_frames++;
			s->io.tx_send(s->io_arg, pkt, len, flags);
			return;
		}
		e->resolved = 0;
		e->tries = 0;
	}
	if (s->n_pend == NET_ARP_PENDING) {
		s->io.tx_free(s->io_arg, pkt);
		s->st.arp_pending_drops++;
		return;
	}
	s->pend[s->n_pend++] = (struct net_arp_pending){
		.pkt = pkt, .frame = frame, .len = len, .flags = flags, .nh = nh};
	if (!e)
		e = arp_slot_for(s, nh);
	if (e->ip == nh && !e->resolved && e->tries > 0)
		return; /* a request is already out; the timer retries */
	e->ip = nh;
	e->resolved = 0;
	e->tries = 1;
	e->expire_ns = s->now_ns + NET_ARP_RETRY_MS * MS;
	arp_request(s, nh);
	tw_arm(s->wheel, &s->arp_timer,
	       s->arp_timer.armed && s->arp_timer.deadline_ns < e->expire_ns
		       ? s->arp_timer.deadline_ns
		       : e->expire_ns);
}
