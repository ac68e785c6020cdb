/*
 * The native stack's frame path: Ethernet demux, IPv4 validation, ICMP, and
 * frame output; plus creation of the per-stack pools. TCP is net_tcp.c and
 * ARP net_arp.c.
 */
#include "net/net_stack.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net_csum.h"
#include "net/net_int.h"
#include "worker/timer_wheel.h"

#define ETH_IP_HLEN (NET_ETH_HLEN + NET_IP_HLEN)
/* Stacks whose counters net_stats_total can see (one per worker). */
#define PUB_SLOTS 128u
#define STATS_WORDS (sizeof(struct net_stats) / sizeof(uint64_t))

_Static_assert(sizeof(struct net_stats) % sizeof(uint64_t) == 0, "net_stats is all uint64_t");

/* Published copies of each stack's counters: written by the owning worker
 * with relaxed atomic stores, read by anyone; static, so a reader never
 * touches a destroyed stack. */
static struct net_stats pub_stats[PUB_SLOTS];
static uint8_t pub_used[PUB_SLOTS];

static struct net_stats *pub_claim(void)
{
	for (uint32_t i = 0; i < PUB_SLOTS; i++) {
		uint8_t free_slot = 0;
		if (__atomic_compare_exchange_n(&pub_used[i], &free_slot, 1, false, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			return &pub_stats[i];
	}
	return NULL;
}

static void pub_write(struct net_stack *s)
{
	const uint64_t *src = (const uint64_t *)(const void *)&s->st;
	uint64_t *dst = (uint64_t *)(void *)s->pub;
	for (size_t i = 0; i < STATS_WORDS; i++)
		__atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
	s->pub_ms = s->now_ms;
}

uint32_t net_stats_total(struct net_stats *out)
{
	uint64_t *dst = (uint64_t *)(void *)out;
	uint32_t n = 0;
	memset(out, 0, sizeof(*out));
	for (uint32_t i = 0; i < PUB_SLOTS; i++) {
		if (!__atomic_load_n(&pub_used[i], __ATOMIC_ACQUIRE))
			continue;
		const uint64_t *src = (const uint64_t *)(const void *)&pub_stats[i];
		for (size_t k = 0; k < STATS_WORDS; k++)
			dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
		n++;
	}
	return n;
}
/* ICMP errors sent per second at most (RFC 1812 4.3.2.8 style limit). */
#define ICMP_ERR_PER_S 100u

void net_stack_conf_defaults(struct net_stack_conf *c)
{
	c->mtu = 1500;
	c->max_conns = 16384;
	c->syn_backlog = 1024;
	c->time_wait_max = 4096;
	c->snd_buf = 65536;
	c->rcv_buf = 65536;
	c->tx_chunks = 16384;
	c->rx_bufs = 1024;
	c->keepalive_s = 75;
	c->keepalive_intvl_s = 15;
	c->keepalive_cnt = 5;
	c->msl_ms = 15000;
	c->fin_wait2_ms = 60000;
	c->challenge_acks_per_s = 10;
	c->arp_timeout_ms = 60000;
	c->syn_cookies = true;
}

static void tcp_tmpl_init(struct net_stack *s);

static uint32_t pow2_at_least(uint32_t v)
{
	uint32_t p = 1;
	while (p < v && p < (1u << 30))
		p <<= 1;
	return p;
}

/* Checks the conf and fills zeros that have a documented default. */
static bool conf_check(struct net_stack_conf *c, char *err, size_t errlen)
{
	if (c->mtu < 576 || c->mtu > 9000) {
		snprintf(err, errlen, "net: mtu %u out of 576..9000", c->mtu);
		return false;
	}
	if (c->prefix > 32 || c->ipv4 == 0) {
		snprintf(err, errlen, "net: bad IPv4 address or prefix");
		return false;
	}
	if (c->listen_ports[0] == 0) {
		snprintf(err, errlen, "net: no listen port");
		return false;
	}
	if (c->max_conns == 0 || c->max_conns > (1u << 24)) {
		snprintf(err, errlen, "net: max_conns %u out of 1..%u", c->max_conns, 1u << 24);
		return false;
	}
	if (c->rcv_buf < 4096 || c->rcv_buf > (1u << 30) || c->snd_buf < 4096 ||
	    c->snd_buf > (1u << 30)) {
		snprintf(err, errlen, "net: snd_buf/rcv_buf out of 4096..1 GiB");
		return false;
	}
	if (c->tx_chunks == 0 || c->rx_bufs == 0) {
		snprintf(err, errlen, "net: tx_chunks and rx_bufs must be > 0");
		return false;
	}
	if (c->keepalive_intvl_s == 0)
		c->keepalive_intvl_s = 15;
	if (c->keepalive_cnt == 0)
		c->keepalive_cnt = 5;
	if (c->msl_ms == 0)
		c->msl_ms = 15000;
	if (c->fin_wait2_ms == 0)
		c->fin_wait2_ms = 60000;
	if (c->challenge_acks_per_s == 0)
		c->challenge_acks_per_s = 10;
	if (c->arp_timeout_ms == 0)
		c->arp_timeout_ms = 60000;
	if (c->syn_backlog == 0)
		c->syn_backlog = 1;
	return true;
}

struct net_stack *net_stack_create(const struct net_stack_conf *conf, const struct net_io *io,
				   void *io_arg, struct tw_wheel *wheel,
				   const struct tp_upcalls *up, void *app, char *err,
				   size_t errlen)
{
	struct net_stack *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "net: out of memory");
		return NULL;
	}
	s->conf = *conf;
	if (!conf_check(&s->conf, err, errlen))
		goto fail;
	if (!io || !io->tx_alloc || !io->tx_send || !io->tx_free || !wheel || !up) {
		snprintf(err, errlen, "net: missing io, wheel or upcalls");
		goto fail;
	}
	s->tp.ops = &net_tcp_ops;
	s->io = *io;
	s->io_arg = io_arg;
	s->wheel = wheel;
	s->up = up;
	s->app = app;
	net_set_now(s, wheel->tick * 1000000ull);
	s->netmask = s->conf.prefix ? net_htonl(~0u << (32 - s->conf.prefix)) : 0;
	s->mss_local = (uint16_t)(s->conf.mtu - NET_IP_HLEN - NET_TCP_HLEN);
	memcpy(&s->hash_seed, s->conf.secret + 24, sizeof(s->hash_seed));
	tcp_tmpl_init(s);
	list_init(&s->dead);
	list_init(&s->tw_fifo);
	list_init(&s->flushq);
	list_init(&s->resumeq);

	uint32_t nb = pow2_at_least(s->conf.max_conns * 2);
	s->conns = calloc(s->conf.max_conns, sizeof(*s->conns));
	s->buckets = calloc(nb, sizeof(*s->buckets));
	s->chunks = calloc(s->conf.tx_chunks, sizeof(*s->chunks));
	s->rbufs = malloc((size_t)s->conf.rx_bufs * s->conf.rcv_buf);
	if (!s->conns || !s->buckets || !s->chunks || !s->rbufs) {
		snprintf(err, errlen, "net: out of memory for pools");
		goto fail;
	}
	s->bucket_mask = nb - 1;
	for (uint32_t i = s->conf.rx_bufs; i-- > 0;) {
		uint8_t *b = s->rbufs + (size_t)i * s->conf.rcv_buf;
		memcpy(b, &s->free_rbuf, sizeof(s->free_rbuf));
		s->free_rbuf = b;
	}
	if (!net_tcp_init(s, err, errlen))
		goto fail;
	net_arp_init(s);
	net_arp_announce(s);
	s->pub = pub_claim();
	if (s->pub)
		pub_write(s);
	return s;
fail:
	net_stack_destroy(s);
	return NULL;
}

void net_stack_destroy(struct net_stack *s)
{
	if (!s)
		return;
	if (s->conns)
		net_tcp_destroy(s);
	net_arp_flush(s);
	tw_cancel(s->wheel, &s->arp_timer);
	if (s->pub)
		__atomic_store_n(&pub_used[s->pub - pub_stats], 0, __ATOMIC_RELEASE);
	free(s->conns);
	free(s->buckets);
	free(s->chunks);
	free(s->rbufs);
	sodium_memzero(s->conf.secret, sizeof(s->conf.secret));
	sodium_memzero(&s->hash_seed, sizeof(s->hash_seed));
	free(s);
}

struct tp *net_stack_tp(struct net_stack *s)
{
	return &s->tp;
}

const struct net_stats *net_stack_stats(const struct net_stack *s)
{
	return &s->st;
}

size_t net_stack_conn_bytes(void)
{
	/* Two buckets per connection in the lookup table. */
	return sizeof(struct net_conn) + 2 * sizeof(uint32_t);
}

uint32_t net_stack_tick(struct net_stack *s, uint64_t now_ns)
{
	net_set_now(s, now_ns);
	uint32_t n = net_tcp_forwarded(s);
	n += net_tcp_pending(s);
	if (s->pub && s->now_ms != s->pub_ms)
		pub_write(s);
	return n;
}

uint8_t *net_ip_alloc(struct net_stack *s, uint32_t l4len, void **pkt)
{
	uint8_t *f = s->io.tx_alloc(s->io_arg, ETH_IP_HLEN + l4len, pkt);
	if (unlikely(!f)) {
		s->st.tx_nobuf++;
		return NULL;
	}
	return f + ETH_IP_HLEN;
}

/* The next hop for dst: the peer when on-link, else the gateway. */
static inline uint32_t ip_next_hop(const struct net_stack *s, uint32_t dst)
{
	return ((dst ^ s->conf.ipv4) & s->netmask) != 0 ? s->conf.gateway : dst;
}

void net_ip_send(struct net_stack *s, void *pkt, uint8_t *l4, uint32_t l4len, uint32_t dst,
		 uint8_t proto)
{
	uint8_t *frame = l4 - ETH_IP_HLEN;
	struct net_eth *eth = (struct net_eth *)frame;
	struct net_ip *ip = (struct net_ip *)(frame + NET_ETH_HLEN);

	memcpy(eth->src, s->conf.mac, NET_ETH_ALEN);
	eth->type = net_htons(NET_ETHERTYPE_IPV4);
	ip->ver_ihl = 0x45;
	ip->tos = 0;
	ip->total_len = net_htons((uint16_t)(NET_IP_HLEN + l4len));
	ip->id = net_htons(s->ip_id++);
	ip->frag = net_htons(NET_IP_DF);
	ip->ttl = NET_IP_TTL;
	ip->proto = proto;
	ip->csum = 0;
	ip->src = s->conf.ipv4;
	ip->dst = dst;
	ip->csum = net_htons(net_csum_final(net_csum_ip_hdr(ip)));
	net_arp_output(s, pkt, frame, ETH_IP_HLEN + l4len, 0, ip_next_hop(s, dst));
}

/* The Ethernet and IPv4 headers every TCP frame of s starts with, and the
 * partial sums of what in them is the same for every frame. */
static void tcp_tmpl_init(struct net_stack *s)
{
	struct net_eth *eth = (struct net_eth *)s->tcp_tmpl;
	struct net_ip *ip = (struct net_ip *)(s->tcp_tmpl + NET_ETH_HLEN);
	memset(s->tcp_tmpl, 0, sizeof(s->tcp_tmpl));
	memcpy(eth->src, s->conf.mac, NET_ETH_ALEN);
	eth->type = net_htons(NET_ETHERTYPE_IPV4);
	ip->ver_ihl = 0x45;
	ip->frag = net_htons(NET_IP_DF);
	ip->ttl = NET_IP_TTL;
	ip->proto = NET_IP_PROTO_TCP;
	ip->src = s->conf.ipv4;
	s->tcp_tmpl_sum = net_csum_ip_hdr(ip);
	s->tcp_pseudo_sum = net_csum_pseudo(s->conf.ipv4, 0, NET_IP_PROTO_TCP, 0);
}

void net_ip_send_tcp(struct net_stack *s, void *pkt, uint8_t *l4, uint32_t l4len, uint32_t dst,
		     uint32_t hlen, uint32_t psum)
{
	uint8_t *frame = l4 - ETH_IP_HLEN;
	struct net_ip *ip = (struct net_ip *)(frame + NET_ETH_HLEN);
	struct net_tcp *th = (struct net_tcp *)l4;
	uint32_t tot = NET_IP_HLEN + l4len;
	uint32_t id = s->ip_id++;
	uint32_t d = net_ntohl(dst);
	uint32_t dst_sum = (d >> 16) + (d & 0xffff);
	uint32_t ps = s->tcp_pseudo_sum + dst_sum + l4len;
	uint32_t flags = 0;

	memcpy(frame, s->tcp_tmpl, ETH_IP_HLEN);
	ip->total_len = net_htons((uint16_t)tot);
	ip->id = net_htons((uint16_t)id);
	ip->dst = dst;
	th->csum = 0;
	if (s->conf.csum_offload_tx) {
		th->csum = net_htons(net_csum_fold(ps));
		flags = NET_TX_CSUM;
	} else {
		/* 32: the common header, 20 bytes and the timestamps. */
		uint32_t sum = hlen == 32 ? net_csum_add32(ps, l4) : net_csum_add(ps, l4, hlen);
		th->csum = net_htons(net_csum_final(sum + psum));
		/* The template's sum plus the words that differ (RFC 1624's
		 * idea: the header is never summed again). */
		ip->csum = net_htons(net_csum_final(s->tcp_tmpl_sum + dst_sum + tot + id));
	}
	net_arp_output(s, pkt, frame, ETH_IP_HLEN + l4len, flags, ip_next_hop(s, dst));
}

/* Answers an echo request with the same identifier, sequence and data. */
static void icmp_input(struct net_stack *s, const struct net_ip *ip, const uint8_t *p,
		       uint32_t len, uint32_t rx_flags)
{
	(void)rx_flags;
	if (len < NET_ICMP_HLEN || net_csum_fold(net_csum_add(0, p, len)) != 0xffff) {
		s->st.icmp_bad++;
		return;
	}
	const struct net_icmp *ic = (const struct net_icmp *)p;
	if (ic->type == NET_ICMP_UNREACH && ic->code == NET_ICMP_UNREACH_NEEDFRAG) {
		const uint8_t *in = p + NET_ICMP_HLEN;
		uint32_t inlen = len - NET_ICMP_HLEN;
		if (inlen < NET_IP_HLEN + 8)
			return;
		const struct net_ip *iip = (const struct net_ip *)in;
		uint32_t ihl = (uint32_t)(iip->ver_ihl & 0x0f) * 4;
		if (ihl < NET_IP_HLEN || inlen < ihl + 8 || iip->proto != NET_IP_PROTO_TCP ||
		    iip->src != s->conf.ipv4)
			return;
		s->st.icmp_pmtu++;
		net_tcp_pmtu(s, iip, in + ihl, inlen - ihl, net_ntohs(ic->seq));
		return;
	}
	if (ic->type != NET_ICMP_ECHO_REQUEST || ic->code != 0)
		return;
	/* Replies only to unicast requests (no broadcast ping amplification). */
	if (ip->dst != s->conf.ipv4)
		return;
	void *pkt;
	uint8_t *out = net_ip_alloc(s, len, &pkt);
	if (!out)
		return;
	memcpy(out, p, len);
	struct net_icmp *oc = (struct net_icmp *)out;
	oc->type = NET_ICMP_ECHO_REPLY;
	oc->csum = 0;
	oc->csum = net_htons(net_csum_final(net_csum_add(0, out, len)));
	s->st.icmp_echo++;
	net_ip_send(s, pkt, out, len, ip->src, NET_IP_PROTO_ICMP);
}

/* Destination unreachable for a datagram addressed to us (RFC 1122
 * 3.2.2.1): UDP gets "port unreachable", other protocols "protocol
 * unreachable". Carries the offending IP header and 8 bytes of payload. */
static void icmp_unreach(struct net_stack *s, const struct net_ip *ip, uint32_t ihl,
			 uint32_t tot)
{
	if (ip->dst != s->conf.ipv4)
		return;
	if (s->now_ms - s->icmp_err_ms >= 1000u) {
		s->icmp_err_ms = s->now_ms;
		s->icmp_err_cnt = 0;
	}
	if (s->icmp_err_cnt >= ICMP_ERR_PER_S) {
		s->st.icmp_rate_limited++;
		return;
	}
	s->icmp_err_cnt++;
	uint32_t quote = ihl + (tot - ihl < 8 ? tot - ihl : 8);
	uint32_t len = NET_ICMP_HLEN + quote;
	void *pkt;
	uint8_t *out = net_ip_alloc(s, len, &pkt);
	if (!out)
		return;
	struct net_icmp *ic = (struct net_icmp *)out;
	ic->type = NET_ICMP_UNREACH;
	ic->code = ip->proto == NET_IP_PROTO_UDP ? NET_ICMP_UNREACH_PORT : NET_ICMP_UNREACH_PROTO;
	ic->csum = 0;
	ic->id = 0;
	ic->seq = 0;
	memcpy(out + NET_ICMP_HLEN, ip, quote);
	ic->csum = net_htons(net_csum_final(net_csum_add(0, out, len)));
	s->st.icmp_unreach_tx++;
	net_ip_send(s, pkt, out, len, ip->src, NET_IP_PROTO_ICMP);
}

/* Validates an IPv4 packet (RFC 1122 3.2.1) and hands its payload on. */
static void ip_input(struct net_stack *s, const uint8_t *p, uint32_t len, uint32_t rx_flags)
{
	if (unlikely(len < NET_IP_HLEN)) {
		s->st.rx_short++;
		return;
	}
	const struct net_ip *ip = (const struct net_ip *)p;
	uint32_t ihl = (uint32_t)(ip->ver_ihl & 0x0f) * 4;
	if (unlikely((ip->ver_ihl >> 4) != 4 || ihl < NET_IP_HLEN)) {
		s->st.ip_bad_hdr++;
		return;
	}
	uint32_t tot = net_ntohs(ip->total_len);
	/* Frames may carry Ethernet padding beyond total_len, never less. */
	if (unlikely(tot < ihl || tot > len)) {
		s->st.ip_bad_len++;
		return;
	}
	if (!(rx_flags & NET_RX_IP_CSUM_OK) &&
	    unlikely(net_csum_fold(ihl == NET_IP_HLEN ? net_csum_ip_hdr(p) : net_csum_add(0, p, ihl)) !=
		     0xffff)) {
		s->st.ip_bad_csum++;
		return;
	}
	uint32_t bcast = s->conf.ipv4 | ~s->netmask;
	if (unlikely(ip->dst != s->conf.ipv4 && ip->dst != 0xffffffffu && ip->dst != bcast)) {
		s->st.ip_not_ours++;
		return;
	}
	if (unlikely(ip->ttl == 0)) {
		s->st.ip_bad_hdr++;
		return;
	}
	/* Fragments are dropped: we advertise an MSS that fits the MTU and set
	 * DF, so well-behaved peers never fragment towards us. */
	if (unlikely(net_ntohs(ip->frag) & (NET_IP_MF | NET_IP_OFFMASK))) {
		s->st.ip_frags++;
		return;
	}
	const uint8_t *l4 = p + ihl;
	uint32_t l4len = tot - ihl;
	switch (ip->proto) {
	case NET_IP_PROTO_TCP:
		if (ip->dst != s->conf.ipv4) {
			s->st.ip_not_ours++;
			return;
		}
		net_tcp_input(s, ip, l4, l4len, rx_flags);
		return;
	case NET_IP_PROTO_ICMP:
		icmp_input(s, ip, l4, l4len, rx_flags);
		return;
	default:
		s->st.ip_bad_proto++;
		icmp_unreach(s, ip, ihl, tot);
		return;
	}
}

void net_input(struct net_stack *s, const uint8_t *frame, uint32_t len, uint32_t rx_flags,
	       uint64_t now_ns)
{
	net_set_now(s, now_ns);
	s->st.rx_frames++;
	if (unlikely(len < NET_ETH_HLEN)) {
		s->st.rx_short++;
		return;
	}
	const struct net_eth *eth = (const struct net_eth *)frame;
	/* Ours first: the broadcast test only for frames that are not. */
	if (unlikely(memcmp(eth->dst, s->conf.mac, NET_ETH_ALEN) != 0) &&
	    (eth->dst[0] & eth->dst[1] & eth->dst[2] & eth->dst[3] & eth->dst[4] & eth->dst[5]) !=
		    0xff) {
		s->st.rx_not_ours++;
		return;
	}
	uint16_t type = net_ntohs(eth->type);
	if (likely(type == NET_ETHERTYPE_IPV4))
		ip_input(s, frame + NET_ETH_HLEN, len - NET_ETH_HLEN, rx_flags);
	else if (type == NET_ETHERTYPE_ARP)
		net_arp_input(s, frame, len);
	else
		s->st.rx_bad_ethertype++;
	if (!list_empty(&s->resumeq) || !list_empty(&s->dead))
		net_tcp_pending(s);
}
