/* Test harness for the native stack (see net_harness.h). */
#include "net_harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/net_csum.h"

const uint8_t h_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
const uint8_t h_cmac[6] = {0x02, 0, 0, 0, 0, 0x02};
/* 10.0.0.1 (us), 10.0.0.2 (client), 10.0.0.254 (gateway), network order */
const uint32_t h_ip = 0x0100000a;
const uint32_t h_cip = 0x0200000a;
const uint32_t h_gw = 0xfe00000a;

static uint8_t *io_alloc(void *arg, uint32_t len, void **pkt)
{
	struct h *h = arg;
	if (h->allocs_failing) {
		h->allocs_failing--;
		return NULL;
	}
	assert_true(len <= H_FRAME_MAX);
	for (uint32_t i = 0; i < H_FRAMES; i++) {
		if (!h->frames[i].used) {
			h->frames[i].used = true;
			*pkt = &h->frames[i];
			return h->frames[i].buf;
		}
	}
	return NULL;
}

static void io_send(void *arg, void *pkt, uint32_t len, uint32_t flags)
{
	struct h *h = arg;
	struct h_frame *f = pkt;
	f->len = len;
	f->flags = flags;
	assert_true(h->out_tail - h->out_head < H_FRAMES);
	h->outq[h->out_tail++ % H_FRAMES] = (uint32_t)(f - h->frames);
}

static void io_free(void *arg, void *pkt)
{
	(void)arg;
	((struct h_frame *)pkt)->used = false;
}

static const struct net_io h_io = {io_alloc, io_send, io_free};

static void *up_open(void *app, struct tp_conn *c, const struct tp_peer *peer)
{
	struct h_app *a = app;
	(void)peer;
	if (a->refuse)
		return NULL;
	a->opens++;
	a->conn = c;
	return a;
}

static size_t up_data(void *app, void *ctx, const uint8_t *d, size_t len)
{
	struct h_app *a = app;
	(void)ctx;
	size_t n = len < a->consume_max ? len : a->consume_max;
	if (n == 0)
		return 0;
	if (a->rx_len + n > a->rx_cap) {
		size_t cap = a->rx_cap ? a->rx_cap * 2 : 65536;
		while (cap < a->rx_len + n)
			cap *= 2;
		a->rx = realloc(a->rx, cap);
		assert_non_null(a->rx);
		a->rx_cap = cap;
	}
	memcpy(a->rx + a->rx_len, d, n);
	a->rx_len += n;
	return n;
}

static void up_eof(void *app, void *ctx)
{
	struct h_app *a = app;
	(void)ctx;
	a->eofs++;
}

static void up_drained(void *app, void *ctx)
{
	(void)ctx;
	((struct h_app *)app)->drains++;
}

static void up_close(void *app, void *ctx)
{
	struct h_app *a = app;
	(void)ctx;
	a->closes++;
	a->conn = NULL;
}

static const struct tp_upcalls h_up = {up_open, up_data, up_eof, up_drained, up_close};

const struct tp_upcalls *h_upcalls(void)
{
	return &h_up;
}

void h_conf(struct net_stack_conf *c)
{
	memset(c, 0, sizeof(*c));
	net_stack_conf_defaults(c);
	memcpy(c->mac, h_mac, 6);
	c->ipv4 = h_ip;
	c->prefix = 24;
	c->gateway = h_gw;
	c->listen_ports[0] = H_PORT;
	c->max_conns = 64;
	c->syn_backlog = 16;
	c->time_wait_max = 8;
	c->tx_chunks = 1024;
	c->rx_bufs = 16;
	for (int i = 0; i < NET_SECRET_LEN; i++)
		c->secret[i] = (uint8_t)(i * 7 + 1);
}

void h_init(struct h *h, const struct net_stack_conf *conf, bool no_arp)
{
	char err[128];
	if (conf)
		h->conf = *conf;
	else
		h_conf(&h->conf);
	h->now = H_T0;
	h->ts = 5000;
	h->app.consume_max = SIZE_MAX;
	tw_wheel_init(&h->wheel, h->now);
	h->s = net_stack_create(&h->conf, &h_io, h, &h->wheel, &h_up, &h->app, err, sizeof(err));
	assert_non_null(h->s);
	h_drain(h);
	if (no_arp)
		return;
	/* The client ARPs for us first, as a real peer does. */
	uint8_t f[64];
	memset(f, 0, sizeof(f));
	struct net_eth *e = (struct net_eth *)f;
	memset(e->dst, 0xff, 6);
	memcpy(e->src, h_cmac, 6);
	e->type = net_htons(NET_ETHERTYPE_ARP);
	struct net_arp *a = (struct net_arp *)(f + NET_ETH_HLEN);
	a->htype = net_htons(1);
	a->ptype = net_htons(NET_ETHERTYPE_IPV4);
	a->hlen = 6;
	a->plen = 4;
	a->op = net_htons(NET_ARP_OP_REQUEST);
	memcpy(a->sha, h_cmac, 6);
	a->spa = h_cip;
	a->tpa = h_ip;
	h_input(h, f, 60);
	h_drain(h);
}

void h_fini(struct h *h)
{
	net_stack_destroy(h->s);
	free(h->app.rx);
	memset(&h->app, 0, sizeof(h->app));
}

int h_setup(void **state)
{
	struct h *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h_init(h, NULL, false);
	*state = h;
	return 0;
}

int h_teardown(void **state)
{
	struct h *h = *state;
	h_fini(h);
	free(h);
	return 0;
}

struct h *h_reinit(void **state, const struct net_stack_conf *c)
{
	struct h *h = *state;
	h_fini(h);
	memset(h, 0, sizeof(*h));
	h_init(h, c, false);
	return h;
}

void h_advance(struct h *h, uint64_t ms)
{
	/* Step 1 ms at a time so timers fire at their own deadlines. */
	for (uint64_t i = 0; i < ms; i++) {
		h->now += H_MS;
		h->ts++;
		net_stack_tick(h->s, h->now);
		tw_run(&h->wheel, h->now);
	}
}

void h_input(struct h *h, const uint8_t *frame, uint32_t len)
{
	uint8_t copy[H_FRAME_MAX];
	memcpy(copy, frame, len);
	net_input(h->s, copy, len, 0, h->now);
	memset(copy, 0xa5, len);
}

uint32_t h_build(uint8_t *f, uint16_t cport, uint8_t flags, uint32_t seq, uint32_t ack,
		 uint16_t win, const uint8_t *opts, uint32_t olen, const void *data, uint32_t dlen)
{
	struct net_eth *e = (struct net_eth *)f;
	memcpy(e->dst, h_mac, 6);
	memcpy(e->src, h_cmac, 6);
	e->type = net_htons(NET_ETHERTYPE_IPV4);
	struct net_ip *ip = (struct net_ip *)(f + NET_ETH_HLEN);
	uint32_t l4len = NET_TCP_HLEN + olen + dlen;
	memset(ip, 0, sizeof(*ip));
	ip->ver_ihl = 0x45;
	ip->total_len = net_htons((uint16_t)(NET_IP_HLEN + l4len));
	ip->ttl = 64;
	ip->proto = NET_IP_PROTO_TCP;
	ip->src = h_cip;
	ip->dst = h_ip;
	ip->frag = net_htons(NET_IP_DF);
	ip->csum = net_htons(net_csum_final(net_csum_add(0, ip, NET_IP_HLEN)));
	uint8_t *l4 = f + NET_ETH_HLEN + NET_IP_HLEN;
	struct net_tcp *t = (struct net_tcp *)l4;
	memset(t, 0, sizeof(*t));
	t->sport = net_htons(cport);
	t->dport = net_htons(H_PORT);
	t->seq = net_htonl(seq);
	t->ack = net_htonl(ack);
	t->off = (uint8_t)(((NET_TCP_HLEN + olen) / 4) << 4);
	t->flags = flags;
	t->win = net_htons(win);
	if (olen)
		memcpy(l4 + NET_TCP_HLEN, opts, olen);
	if (dlen)
		memcpy(l4 + NET_TCP_HLEN + olen, data, dlen);
	uint32_t ps = net_csum_pseudo(h_cip, h_ip, NET_IP_PROTO_TCP, (uint16_t)l4len);
	t->csum = net_htons(net_csum_final(net_csum_add(ps, l4, l4len)));
	return NET_ETH_HLEN + NET_IP_HLEN + l4len;
}

void h_tcp(struct h *h, uint16_t cport, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t win,
	   const uint8_t *opts, uint32_t olen, const void *data, uint32_t dlen)
{
	uint8_t f[H_FRAME_MAX];
	uint32_t len = h_build(f, cport, flags, seq, ack, win, opts, olen, data, dlen);
	h_input(h, f, len);
}

uint32_t h_pending(const struct h *h)
{
	return h->out_tail - h->out_head;
}

uint32_t h_pop_raw(struct h *h, uint8_t *out)
{
	if (h->out_head == h->out_tail)
		return 0;
	struct h_frame *f = &h->frames[h->outq[h->out_head++ % H_FRAMES]];
	uint32_t len = f->len;
	memcpy(out, f->buf, len);
	f->used = false;
	return len;
}

/* Parses and checks one frame the stack sent: addresses and checksums. */
static bool parse(const uint8_t *f, uint32_t len, struct h_seg *sg)
{
	memset(sg, 0, sizeof(*sg));
	sg->ws = -1;
	if (len < NET_ETH_HLEN + NET_IP_HLEN + NET_TCP_HLEN)
		return false;
	const struct net_eth *e = (const struct net_eth *)f;
	if (net_ntohs(e->type) != NET_ETHERTYPE_IPV4)
		return false;
	assert_memory_equal(e->src, h_mac, 6);
	const struct net_ip *ip = (const struct net_ip *)(f + NET_ETH_HLEN);
	if (ip->proto != NET_IP_PROTO_TCP)
		return false;
	assert_int_equal(net_csum_fold(net_csum_add(0, ip, NET_IP_HLEN)), 0xffff);
	assert_int_equal(net_ntohs(ip->frag) & NET_IP_DF, NET_IP_DF);
	uint32_t l4len = net_ntohs(ip->total_len) - NET_IP_HLEN;
	const uint8_t *l4 = f + NET_ETH_HLEN + NET_IP_HLEN;
	uint32_t ps = net_csum_pseudo(ip->src, ip->dst, NET_IP_PROTO_TCP, (uint16_t)l4len);
	assert_int_equal(net_csum_fold(net_csum_add(ps, l4, l4len)), 0xffff);
	const struct net_tcp *t = (const struct net_tcp *)l4;
	sg->dst = ip->dst;
	sg->sport = net_ntohs(t->sport);
	sg->dport = net_ntohs(t->dport);
	sg->seq = net_ntohl(t->seq);
	sg->ack = net_ntohl(t->ack);
	sg->flags = t->flags;
	sg->win = net_ntohs(t->win);
	uint32_t doff = (uint32_t)(t->off >> 4) * 4;
	const uint8_t *o = l4 + NET_TCP_HLEN;
	uint32_t i = 0, olen = doff - NET_TCP_HLEN;
	while (i < olen) {
		if (o[i] == NET_TCPOPT_EOL)
			break;
		if (o[i] == NET_TCPOPT_NOP) {
			i++;
			continue;
		}
		uint32_t l = o[i + 1];
		assert_true(l >= 2 && i + l <= olen);
		switch (o[i]) {
		case NET_TCPOPT_MSS:
			sg->has_mss = true;
			sg->mss = net_get16(o + i + 2);
			break;
		case NET_TCPOPT_WS:
			sg->ws = o[i + 2];
			break;
		case NET_TCPOPT_SACK_PERM:
			sg->sack_perm = true;
			break;
		case NET_TCPOPT_TS:
			sg->has_ts = true;
			sg->tsval = net_get32(o + i + 2);
			sg->tsecr = net_get32(o + i + 6);
			break;
		case NET_TCPOPT_SACK:
			for (uint32_t j = 0; j < (l - 2) / 8 && sg->nsack < 4; j++) {
				sg->sack[sg->nsack][0] = net_get32(o + i + 2 + 8 * j);
				sg->sack[sg->nsack][1] = net_get32(o + i + 6 + 8 * j);
				sg->nsack++;
			}
			break;
		default:
			break;
		}
		i += l;
	}
	sg->dlen = l4len - doff;
	memcpy(sg->data, l4 + doff, sg->dlen);
	return true;
}

/* Answers an ARP request for the client or the gateway, as they would. */
bool h_answer_arp(struct h *h, const uint8_t *f, uint32_t len)
{
	const struct net_eth *e = (const struct net_eth *)f;
	if (len < NET_ETH_HLEN + sizeof(struct net_arp) ||
	    net_ntohs(e->type) != NET_ETHERTYPE_ARP)
		return false;
	const struct net_arp *a = (const struct net_arp *)(f + NET_ETH_HLEN);
	if (net_ntohs(a->op) != NET_ARP_OP_REQUEST || (a->tpa != h_cip && a->tpa != h_gw))
		return true;
	uint8_t r[60];
	memset(r, 0, sizeof(r));
	struct net_eth *re = (struct net_eth *)r;
	memcpy(re->dst, h_mac, 6);
	memcpy(re->src, h_cmac, 6);
	re->type = net_htons(NET_ETHERTYPE_ARP);
	struct net_arp *ra = (struct net_arp *)(r + NET_ETH_HLEN);
	ra->htype = net_htons(1);
	ra->ptype = net_htons(NET_ETHERTYPE_IPV4);
	ra->hlen = 6;
	ra->plen = 4;
	ra->op = net_htons(NET_ARP_OP_REPLY);
	memcpy(ra->sha, h_cmac, 6);
	ra->spa = a->tpa;
	memcpy(ra->tha, h_mac, 6);
	ra->tpa = h_ip;
	h_input(h, r, sizeof(r));
	return true;
}

bool h_pop(struct h *h, struct h_seg *sg)
{
	uint8_t f[H_FRAME_MAX];
	for (;;) {
		uint32_t len = h_pop_raw(h, f);
		if (!len)
			return false;
		if (!h_answer_arp(h, f, len))
			return parse(f, len, sg);
	}
}

void h_drain(struct h *h)
{
	uint8_t f[H_FRAME_MAX];
	while (h_pop_raw(h, f))
		;
}

uint32_t h_opt_syn(uint8_t *o, uint16_t mss, int ws, bool sack, bool ts, uint32_t tsval)
{
	uint32_t n = 0;
	o[n++] = NET_TCPOPT_MSS;
	o[n++] = 4;
	net_put16(o + n, mss);
	n += 2;
	if (sack) {
		o[n++] = NET_TCPOPT_SACK_PERM;
		o[n++] = 2;
	} else {
		o[n++] = NET_TCPOPT_NOP;
		o[n++] = NET_TCPOPT_NOP;
	}
	if (ts) {
		o[n++] = NET_TCPOPT_TS;
		o[n++] = 10;
		net_put32(o + n, tsval);
		net_put32(o + n + 4, 0);
		n += 8;
	} else {
		memset(o + n, NET_TCPOPT_NOP, 10);
		n += 10;
	}
	o[n++] = NET_TCPOPT_NOP;
	if (ws >= 0) {
		o[n++] = NET_TCPOPT_WS;
		o[n++] = 3;
		o[n++] = (uint8_t)ws;
	} else {
		o[n++] = NET_TCPOPT_NOP;
		o[n++] = NET_TCPOPT_NOP;
		o[n++] = NET_TCPOPT_NOP;
	}
	return n;
}

uint32_t h_opt_ts(uint8_t *o, uint32_t tsval, uint32_t tsecr)
{
	o[0] = NET_TCPOPT_NOP;
	o[1] = NET_TCPOPT_NOP;
	o[2] = NET_TCPOPT_TS;
	o[3] = 10;
	net_put32(o + 4, tsval);
	net_put32(o + 8, tsecr);
	return 12;
}

void h_handshake(struct h *h, uint16_t cport, uint32_t isn, bool ts, int ws, bool sack,
		 uint32_t *snd, uint32_t *cseq, struct h_seg *synack)
{
	uint8_t o[40];
	uint32_t olen = h_opt_syn(o, 1460, ws, sack, ts, h->ts);
	h_tcp(h, cport, NET_TCP_SYN, isn, 0, 65535, o, olen, NULL, 0);
	assert_true(h_pop(h, synack));
	assert_int_equal(synack->flags, NET_TCP_SYN | NET_TCP_ACK);
	assert_int_equal(synack->ack, isn + 1);
	assert_int_equal(synack->dport, cport);
	*snd = synack->seq + 1;
	*cseq = isn + 1;
	olen = ts ? h_opt_ts(o, h->ts, synack->tsval) : 0;
	h_tcp(h, cport, NET_TCP_ACK, *cseq, *snd, 65535, o, olen, NULL, 0);
}
