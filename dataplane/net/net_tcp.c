/*
 * TCP as a server (see net_tcp.h and docs/tcp.md).
 *
 * Ownership: TCBs, send chunks and receive buffers belong to the stack's
 * pools. A TCB is handed to the app as its struct tp_conn * from on_open
 * until on_close; on_close always runs from net_tcp_pending() (never inside
 * another upcall), so the app may close or abort from any upcall.
 *
 * Receive buffer layout: rbuf[0, rb_len) holds in-order bytes the app has
 * not consumed; an out-of-order byte with sequence x sits at
 * rb_len + (x - rcv_nxt), so it is already in place when the hole fills.
 * In-order data that arrives with an empty buffer goes to the app straight
 * from the frame; only what the app leaves is copied.
 */
#include "net/net_tcp.h"

#include <sodium.h>
#include <string.h>

#include "net/net_csum.h"
#include "net/net_int.h"
#include "worker/timer_wheel.h"

#define MS 1000000ull
#define TS_OPT_LEN 12u

/* A parsed segment. */
struct seg {
	uint32_t seq, ack, wnd;
	uint32_t dlen;
	const uint8_t *data;
	uint8_t flags;
	bool has_ts, sack_perm, has_mss;
	int8_t ws; /* -1: no option */
	uint16_t mss;
	uint32_t tsval, tsecr;
	uint8_t nsack;
	struct net_range sack[4];
};

static const uint16_t cookie_mss[8] = {536, 1200, 1360, 1400, 1440, 1460, 4312, 8960};

static void tcp_output(struct net_conn *c);
static void conn_kill(struct net_conn *c);
static void conn_input(struct net_conn *c, const struct seg *sg);
static uint32_t retransmit_at(struct net_conn *c, uint32_t seq);

static inline uint32_t umin(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}
static inline uint32_t umax(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}

/* ---- pools and lookup --------------------------------------------------- */

static inline uint32_t conn_hash(const struct net_stack *s, uint32_t raddr, uint16_t rport,
				 uint16_t lport)
{
	uint64_t x = ((uint64_t)raddr << 32 | (uint64_t)rport << 16 | lport) ^ s->hash_seed;
	x ^= x >> 31;
	x *= 0x9e3779b97f4a7c15ull;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return (uint32_t)x & s->bucket_mask;
}

static struct net_conn *conn_lookup(struct net_stack *s, uint32_t raddr, uint16_t rport,
				    uint16_t lport)
{
	uint32_t i = s->buckets[conn_hash(s, raddr, rport, lport)];
	while (i) {
		struct net_conn *c = &s->conns[i - 1];
		if (c->raddr == raddr && c->rport == rport && c->lport == lport)
			return c;
		i = c->hnext;
	}
	return NULL;
}

static void conn_unhash(struct net_conn *c)
{
	struct net_stack *s = c->s;
	uint32_t *p = &s->buckets[conn_hash(s, c->raddr, c->rport, c->lport)];
	uint32_t me = (uint32_t)(c - s->conns) + 1;
	while (*p) {
		if (*p == me) {
			*p = c->hnext;
			c->hnext = 0;
			return;
		}
		p = &s->conns[*p - 1].hnext;
	}
}

static void conn_timer_cb(void *arg, struct tw_timer *t);
static void ack_timer_cb(void *arg, struct tw_timer *t);

/* A zeroed TCB from the pool, hashed under the 4-tuple, or NULL. */
static struct net_conn *conn_new(struct net_stack *s, uint32_t raddr, uint16_t rport,
				 uint16_t lport)
{
	if (!s->free_conn) {
		s->st.tcp_conn_pool_empty++;
		return NULL;
	}
	uint32_t idx = s->free_conn - 1;
	struct net_conn *c = &s->conns[idx];
	s->free_conn = c->hnext;
	memset(c, 0, sizeof(*c));
	c->s = s;
	c->raddr = raddr;
	c->rport = rport;
	c->lport = lport;
	c->laddr = s->conf.ipv4;
	c->rto_ms = NET_TCP_RTO_INIT_MS;
	tw_init(&c->timer, conn_timer_cb, c);
	tw_init(&c->ack_timer, ack_timer_cb, c);
	list_init(&c->q);
	list_init(&c->dq);
	list_init(&c->fq);
	list_init(&c->rq);
	uint32_t b = conn_hash(s, raddr, rport, lport);
	c->hnext = s->buckets[b];
	s->buckets[b] = idx + 1;
	s->st.conns_open++;
	return c;
}

static bool rbuf_get(struct net_conn *c)
{
	struct net_stack *s = c->s;
	if (c->rbuf)
		return true;
	if (!s->free_rbuf) {
		s->st.tcp_rx_nobuf++;
		return false;
	}
	c->rbuf = s->free_rbuf;
	memcpy(&s->free_rbuf, c->rbuf, sizeof(s->free_rbuf));
	return true;
}

static void rbuf_put(struct net_conn *c)
{
	struct net_stack *s = c->s;
	if (!c->rbuf)
		return;
	memcpy(c->rbuf, &s->free_rbuf, sizeof(s->free_rbuf));
	s->free_rbuf = c->rbuf;
	c->rbuf = NULL;
	c->rb_len = 0;
	c->n_ooo = 0;
}

static void chunk_put(struct net_stack *s, struct net_chunk *k)
{
	k->next = s->free_chunks;
	s->free_chunks = k;
}

static void sq_release(struct net_conn *c)
{
	while (c->sq_head) {
		struct net_chunk *k = c->sq_head;
		c->sq_head = k->next;
		chunk_put(c->s, k);
	}
	c->sq_tail = NULL;
	c->sq_off = 0;
	c->sq_len = 0;
}

/* Drops n acknowledged bytes from the head of the send queue. */
static void sq_consume(struct net_conn *c, uint32_t n)
{
	c->sq_len -= n;
	while (n > 0 && c->sq_head) {
		struct net_chunk *k = c->sq_head;
		uint32_t avail = k->len - c->sq_off;
		if (n < avail) {
			c->sq_off += n;
			return;
		}
		n -= avail;
		c->sq_off = 0;
		c->sq_head = k->next;
		if (!c->sq_head)
			c->sq_tail = NULL;
		chunk_put(c->s, k);
	}
	/* An emptied head that is also the tail goes back too: an idle
	 * connection holds no chunk. */
	if (c->sq_head && c->sq_len == 0) {
		chunk_put(c->s, c->sq_head);
		c->sq_head = c->sq_tail = NULL;
		c->sq_off = 0;
	}
}

static void sq_copy(const struct net_conn *c, uint32_t off, uint8_t *dst, uint32_t len)
{
	const struct net_chunk *k = c->sq_head;
	uint32_t pos = c->sq_off + off;
	while (pos >= k->len) {
		pos -= k->len;
		k = k->next;
	}
	while (len > 0) {
		uint32_t n = umin(k->len - pos, len);
		memcpy(dst, k->data + pos, n);
		dst += n;
		len -= n;
		k = k->next;
		pos = 0;
	}
}

/* Queues c on the dead list: net_tcp_pending() runs on_close if the app
 * holds it and returns it to the pool if NC_DEAD is set. */
static void conn_defer(struct net_conn *c)
{
	if (c->dq.next == &c->dq)
		list_add_tail(&c->s->dead, &c->dq);
}

static void app_detach(struct net_conn *c)
{
	if (c->flags & NC_APP)
		conn_defer(c);
}

/* Ends the connection now: no more segments in or out. The app (if any)
 * gets on_close from net_tcp_pending, which also frees the TCB. */
static void conn_kill(struct net_conn *c)
{
	struct net_stack *s = c->s;
	if (c->flags & NC_DEAD)
		return;
	if (c->state == NET_TCPS_SYN_RCVD)
		s->n_synrcvd--;
	if (c->flags & NC_TWQ) {
		list_del(&c->q);
		c->flags &= ~(uint32_t)NC_TWQ;
		s->n_tw--;
	}
	conn_unhash(c);
	tw_cancel(s->wheel, &c->timer);
	tw_cancel(s->wheel, &c->ack_timer);
	list_del(&c->fq);
	list_del(&c->rq);
	sq_release(c);
	rbuf_put(c);
	c->state = NET_TCPS_CLOSED;
	c->flags |= NC_DEAD;
	c->flags &= ~(uint32_t)(NC_FLUSHQ | NC_RESUMEQ);
	s->st.tcp_closed++;
	conn_defer(c);
}

static void conn_release(struct net_conn *c)
{
	struct net_stack *s = c->s;
	c->hnext = s->free_conn;
	s->free_conn = (uint32_t)(c - s->conns) + 1;
	s->st.conns_open--;
}

/* ---- keys: ISN (RFC 6528) and SYN cookies ------------------------------- */

static uint64_t keyed_hash(const struct net_stack *s, const uint8_t *key, uint32_t raddr,
			   uint16_t rport, uint16_t lport, uint32_t x, uint32_t y)
{
	uint8_t in[20];
	uint8_t out[crypto_shorthash_BYTES];
	uint64_t h;
	memcpy(in, &raddr, 4);
	memcpy(in + 4, &s->conf.ipv4, 4);
	memcpy(in + 8, &rport, 2);
	memcpy(in + 10, &lport, 2);
	memcpy(in + 12, &x, 4);
	memcpy(in + 16, &y, 4);
	crypto_shorthash(out, in, sizeof(in), key);
	memcpy(&h, out, sizeof(h));
	return h;
}

static uint32_t isn_for(const struct net_stack *s, uint32_t raddr, uint16_t rport, uint16_t lport)
{
	uint64_t h = keyed_hash(s, s->conf.secret, raddr, rport, lport, 0, 0);
	return (uint32_t)h + (uint32_t)(s->now_ns / 4000u);
}

static uint32_t cookie_make(const struct net_stack *s, uint32_t raddr, uint16_t rport,
			    uint16_t lport, uint32_t peer_isn, uint32_t t, uint32_t mssidx)
{
	uint64_t h = keyed_hash(s, s->conf.secret + 16, raddr, rport, lport, peer_isn, t);
	return (t & 0x1fu) << 27 | (mssidx & 7u) << 24 | ((uint32_t)h & 0xffffffu);
}

/* The MSS index of a valid cookie, or -1. */
static int cookie_check(const struct net_stack *s, uint32_t raddr, uint16_t rport, uint16_t lport,
			uint32_t peer_isn, uint32_t cookie)
{
	uint32_t now_t = s->now_ms / NET_TCP_COOKIE_PERIOD_MS;
	for (uint32_t back = 0; back < 2 && back <= now_t; back++) {
		uint32_t t = now_t - back;
		if ((cookie >> 27) != (t & 0x1fu))
			continue;
		uint32_t idx = (cookie >> 24) & 7u;
		if (cookie_make(s, raddr, rport, lport, peer_isn, t, idx) == cookie)
			return (int)idx;
	}
	return -1;
}

/* ---- options ------------------------------------------------------------ */

/* Parses options into sg; false when their framing is broken (a length of
 * 0 or 1, or one that runs past the header). */
static bool parse_opts(struct seg *sg, const uint8_t *o, uint32_t olen)
{
	uint32_t i = 0;
	while (i < olen) {
		uint8_t k = o[i];
		if (k == NET_TCPOPT_EOL)
			break;
		if (k == NET_TCPOPT_NOP) {
			i++;
			continue;
		}
		if (i + 1 >= olen)
			return false;
		uint32_t l = o[i + 1];
		if (l < 2 || i + l > olen)
			return false;
		const uint8_t *v = o + i + 2;
		switch (k) {
		case NET_TCPOPT_MSS:
			if (l == NET_TCPOLEN_MSS) {
				sg->has_mss = true;
				sg->mss = net_get16(v);
			}
			break;
		case NET_TCPOPT_WS:
			if (l == NET_TCPOLEN_WS)
				sg->ws = (int8_t)(v[0] > NET_TCP_MAX_WS ? NET_TCP_MAX_WS : v[0]);
			break;
		case NET_TCPOPT_SACK_PERM:
			if (l == NET_TCPOLEN_SACK_PERM)
				sg->sack_perm = true;
			break;
		case NET_TCPOPT_TS:
			if (l == NET_TCPOLEN_TS) {
				sg->has_ts = true;
				sg->tsval = net_get32(v);
				sg->tsecr = net_get32(v + 4);
			}
			break;
		case NET_TCPOPT_SACK:
			if (l >= 10 && (l - 2) % 8 == 0) {
				uint32_t n = (l - 2) / 8;
				for (uint32_t j = 0; j < n && sg->nsack < 4; j++) {
					sg->sack[sg->nsack].start = net_get32(v + 8 * j);
					sg->sack[sg->nsack].end = net_get32(v + 8 * j + 4);
					sg->nsack++;
				}
			}
			break;
		default:
			break;
		}
		i += l;
	}
	return true;
}

static uint32_t put_ts(uint8_t *o, uint32_t tsval, uint32_t tsecr)
{
	o[0] = NET_TCPOPT_NOP;
	o[1] = NET_TCPOPT_NOP;
	o[2] = NET_TCPOPT_TS;
	o[3] = NET_TCPOLEN_TS;
	net_put32(o + 4, tsval);
	net_put32(o + 8, tsecr);
	return TS_OPT_LEN;
}

/* SYN-ACK options: MSS, SACK-permitted, timestamps, window scale. */
static uint32_t put_syn_opts(uint8_t *o, uint16_t mss, bool sack, bool ts, uint32_t tsval,
			     uint32_t tsecr, int ws)
{
	uint32_t n = 0;
	o[n++] = NET_TCPOPT_MSS;
	o[n++] = NET_TCPOLEN_MSS;
	net_put16(o + n, mss);
	n += 2;
	if (ts) {
		if (sack) {
			o[n++] = NET_TCPOPT_SACK_PERM;
			o[n++] = NET_TCPOLEN_SACK_PERM;
		} else {
			o[n++] = NET_TCPOPT_NOP;
			o[n++] = NET_TCPOPT_NOP;
		}
		o[n++] = NET_TCPOPT_TS;
		o[n++] = NET_TCPOLEN_TS;
		net_put32(o + n, tsval);
		net_put32(o + n + 4, tsecr);
		n += 8;
	} else if (sack) {
		o[n++] = NET_TCPOPT_NOP;
		o[n++] = NET_TCPOPT_NOP;
		o[n++] = NET_TCPOPT_SACK_PERM;
		o[n++] = NET_TCPOLEN_SACK_PERM;
	}
	if (ws >= 0) {
		o[n++] = NET_TCPOPT_NOP;
		o[n++] = NET_TCPOPT_WS;
		o[n++] = NET_TCPOLEN_WS;
		o[n++] = (uint8_t)ws;
	}
	return n;
}

/* ---- segment output ----------------------------------------------------- */

/* Builds and sends one segment with no TCB (RSTs and cookie SYN-ACKs). */
static void emit_raw(struct net_stack *s, uint32_t raddr, uint16_t rport, uint16_t lport,
		     uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win, const uint8_t *opts,
		     uint32_t olen)
{
	void *pkt;
	uint32_t l4len = NET_TCP_HLEN + olen;
	uint8_t *l4 = net_ip_alloc(s, l4len, &pkt);
	if (!l4)
		return;
	struct net_tcp *th = (struct net_tcp *)l4;
	th->sport = lport;
	th->dport = rport;
	th->seq = net_htonl(seq);
	th->ack = net_htonl(ack);
	th->off = (uint8_t)(((NET_TCP_HLEN + olen) / 4) << 4);
	th->flags = flags;
	th->win = net_htons(win);
	th->urp = 0;
	if (olen)
		memcpy(l4 + NET_TCP_HLEN, opts, olen);
	s->st.tcp_tx++;
	if (flags & NET_TCP_RST)
		s->st.tcp_rst_tx++;
	net_ip_send(s, pkt, l4, l4len, raddr, NET_IP_PROTO_TCP);
}

/* The window field for c, never moving the right edge left (RFC 9293
 * 3.8.6.2.2) and not advertising small increases (receiver SWS). */
static uint16_t rcv_window(struct net_conn *c)
{
	uint32_t space = c->s->conf.rcv_buf - c->rb_len;
	uint32_t adv = net_seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t sws = umin(c->s->conf.rcv_buf / 2, c->mss);
	if (space < adv || space - adv < sws)
		space = adv;
	uint32_t f = space >> c->rcv_ws;
	if ((f << c->rcv_ws) < adv)
		f++;
	if (f > 0xffff)
		f = 0xffff;
	uint32_t edge = c->rcv_nxt + (f << c->rcv_ws);
	if (net_seq_gt(edge, c->rcv_adv))
		c->rcv_adv = edge;
	return (uint16_t)f;
}

/* Sends one segment of c: seq, flags and dlen bytes from the send queue at
 * seq. Carries the ACK, timestamps and, room permitting, SACK blocks. */
static void xmit(struct net_conn *c, uint32_t seq, uint8_t flags, uint32_t dlen)
{
	struct net_stack *s = c->s;
	uint8_t o[NET_TCP_MAX_OPTLEN];
	uint32_t olen = 0;

	if (c->flags & NC_TS)
		olen = put_ts(o, s->now_ms, c->ts_recent);
	if ((c->flags & NC_SACK) && c->n_ooo > 0 && (flags & NET_TCP_ACK)) {
		uint32_t room = c->mss > dlen + olen ? c->mss - dlen - olen : 0;
		room = umin(room, NET_TCP_MAX_OPTLEN - olen);
		uint32_t nb = room >= 4 ? (room - 4) / 8 : 0;
		nb = umin(nb, c->n_ooo);
		if (nb > 0) {
			o[olen++] = NET_TCPOPT_NOP;
			o[olen++] = NET_TCPOPT_NOP;
			o[olen++] = NET_TCPOPT_SACK;
			o[olen++] = (uint8_t)(2 + 8 * nb);
			/* The most recently changed block first (RFC 2018). */
			uint32_t order[NET_OOO_MAX];
			uint32_t k = 0;
			order[k++] = c->ooo_last;
			for (uint32_t i = 0; i < c->n_ooo; i++)
				if (i != c->ooo_last)
					order[k++] = i;
			for (uint32_t i = 0; i < nb; i++) {
				net_put32(o + olen, c->ooo[order[i]].start);
				net_put32(o + olen + 4, c->ooo[order[i]].end);
				olen += 8;
			}
		}
	}
	void *pkt;
	uint32_t l4len = NET_TCP_HLEN + olen + dlen;
	uint8_t *l4 = net_ip_alloc(s, l4len, &pkt);
	if (!l4) {
		s->st.tcp_tx_nobuf++;
		return;
	}
	struct net_tcp *th = (struct net_tcp *)l4;
	th->sport = c->lport;
	th->dport = c->rport;
	th->seq = net_htonl(seq);
	th->ack = net_htonl(c->rcv_nxt);
	th->off = (uint8_t)(((NET_TCP_HLEN + olen) / 4) << 4);
	th->flags = flags;
	th->win = net_htons(rcv_window(c));
	th->urp = 0;
	memcpy(l4 + NET_TCP_HLEN, o, olen);
	if (dlen)
		sq_copy(c, seq - c->snd_una, l4 + NET_TCP_HLEN + olen, dlen);
	if (flags & NET_TCP_ACK) {
		c->last_ack_sent = c->rcv_nxt;
		c->flags &= ~(uint32_t)(NC_DELACK | NC_ACK_NOW);
		c->rx_segs = 0;
		tw_cancel(s->wheel, &c->ack_timer);
	}
	s->st.tcp_tx++;
	if (flags & NET_TCP_RST)
		s->st.tcp_rst_tx++;
	net_ip_send(s, pkt, l4, l4len, c->raddr, NET_IP_PROTO_TCP);
}

static void send_ack(struct net_conn *c)
{
	xmit(c, c->snd_nxt, NET_TCP_ACK, 0);
}

static void send_synack(struct net_conn *c)
{
	struct net_stack *s = c->s;
	uint8_t o[NET_TCP_MAX_OPTLEN];
	uint32_t olen = put_syn_opts(o, s->mss_local, c->flags & NC_SACK, c->flags & NC_TS,
				     s->now_ms, c->ts_recent, (c->flags & NC_WS) ? c->rcv_ws : -1);
	c->rcv_adv = c->rcv_nxt + umin(s->conf.rcv_buf, 0xffff);
	c->last_ack_sent = c->rcv_nxt;
	emit_raw(s, c->raddr, c->rport, c->lport, c->iss, c->rcv_nxt, NET_TCP_SYN | NET_TCP_ACK,
		 (uint16_t)umin(s->conf.rcv_buf, 0xffff), o, olen);
}

/* RFC 5961 section 7: at most challenge_acks_per_s per connection. */
static void challenge_ack(struct net_conn *c)
{
	struct net_stack *s = c->s;
	if (s->now_ms - c->chal_ms >= 1000u) {
		c->chal_ms = s->now_ms;
		c->chal_cnt = 0;
	}
	if (c->chal_cnt >= s->conf.challenge_acks_per_s) {
		s->st.tcp_challenge_limited++;
		return;
	}
	c->chal_cnt++;
	s->st.tcp_challenge_acks++;
	send_ack(c);
}

/* A RST answering a segment that has no connection (RFC 9293 3.10.7.1). */
static void rst_reply(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
		      const struct seg *sg)
{
	if (sg->flags & NET_TCP_RST)
		return;
	if (sg->flags & NET_TCP_ACK) {
		emit_raw(s, ip->src, th->sport, th->dport, sg->ack, 0, NET_TCP_RST, 0, NULL, 0);
	} else {
		uint32_t len = sg->dlen + !!(sg->flags & NET_TCP_SYN) + !!(sg->flags & NET_TCP_FIN);
		emit_raw(s, ip->src, th->sport, th->dport, 0, sg->seq + len,
			 NET_TCP_RST | NET_TCP_ACK, 0, NULL, 0);
	}
}

/* ---- timers ------------------------------------------------------------- */

static inline uint32_t rto_cur(const struct net_conn *c)
{
	uint64_t r = (uint64_t)c->rto_ms << c->backoff;
	return r > NET_TCP_RTO_MAX_MS ? NET_TCP_RTO_MAX_MS : (uint32_t)r;
}

static void timer_set(struct net_conn *c, uint8_t mode, uint32_t delay_ms)
{
	c->tmode = mode;
	tw_arm(c->s->wheel, &c->timer, c->s->now_ns + (uint64_t)delay_ms * MS);
}

static inline uint32_t unsent(const struct net_conn *c)
{
	uint32_t end = c->snd_una + c->sq_len;
	return net_seq_lt(c->snd_nxt, end) ? end - c->snd_nxt : 0;
}

/* Arms the retransmission timer; with SACK and an RTT estimate, first a tail
 * loss probe at max(2 SRTT, 10 ms) (RFC 8985 7.2): a lost tail then shows up
 * in SACKs of the probe within a few RTTs instead of after a 200 ms+ RTO. */
static void rtx_arm(struct net_conn *c)
{
	if ((c->flags & (NC_SACK | NC_RECOVERY | NC_TLP)) == NC_SACK && c->srtt8 && !c->backoff) {
		uint32_t seg = c->mss - ((c->flags & NC_TS) ? TS_OPT_LEN : 0);
		uint32_t pto = umax(c->srtt8 / 4, NET_TCP_TLP_MIN_MS);
		if (c->snd_max - c->snd_una <= seg)
			pto += NET_TCP_TLP_DELACK_MS;
		if (pto < rto_cur(c)) {
			timer_set(c, NT_TLP, pto);
			return;
		}
	}
	timer_set(c, NT_RTX, rto_cur(c));
}

static inline bool rtx_armed(const struct net_conn *c)
{
	return c->timer.armed && (c->tmode == NT_RTX || c->tmode == NT_TLP);
}

/* Puts the protocol timer in the mode the connection's state calls for.
 * restart: re-arm a running retransmission timer (new data was ACKed). */
static void timer_update(struct net_conn *c, bool restart)
{
	struct net_stack *s = c->s;
	bool armed = c->timer.armed;
	if (c->state == NET_TCPS_SYN_RCVD || c->state == NET_TCPS_TIME_WAIT ||
	    c->state == NET_TCPS_CLOSED)
		return;
	if (c->snd_max != c->snd_una) {
		if (restart || !rtx_armed(c))
			rtx_arm(c);
	} else if (unsent(c) > 0 && c->snd_wnd == 0) {
		if (!armed || c->tmode != NT_PERSIST)
			timer_set(c, NT_PERSIST, rto_cur(c));
	} else if (c->state == NET_TCPS_FIN_WAIT_2) {
		if (!armed || c->tmode != NT_FINWAIT2)
			timer_set(c, NT_FINWAIT2, s->conf.fin_wait2_ms);
	} else if (s->conf.keepalive_s &&
		   (c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_CLOSE_WAIT)) {
		if (!armed || c->tmode != NT_KEEPALIVE) {
			c->backoff = 0;
			timer_set(c, NT_KEEPALIVE, s->conf.keepalive_s * 1000u);
		}
	} else {
		tw_cancel(s->wheel, &c->timer);
		c->tmode = NT_NONE;
	}
}

/* Resets the connection from our side: RST out, app told, TCB freed. */
static void conn_abort(struct net_conn *c)
{
	if (c->state != NET_TCPS_CLOSED && c->state != NET_TCPS_SYN_RCVD &&
	    c->state != NET_TCPS_TIME_WAIT)
		xmit(c, c->snd_nxt, NET_TCP_RST | NET_TCP_ACK, 0);
	c->flags |= NC_RESET;
	conn_kill(c);
}

static void enter_time_wait(struct net_conn *c)
{
	struct net_stack *s = c->s;
	c->state = NET_TCPS_TIME_WAIT;
	sq_release(c);
	rbuf_put(c);
	app_detach(c);
	list_del(&c->fq);
	list_del(&c->rq);
	tw_cancel(s->wheel, &c->ack_timer);
	list_add_tail(&s->tw_fifo, &c->q);
	c->flags |= NC_TWQ;
	s->n_tw++;
	timer_set(c, NT_TIMEWAIT, 2 * s->conf.msl_ms);
	if (s->n_tw > s->conf.time_wait_max) {
		struct net_conn *old = list_entry(s->tw_fifo.next, struct net_conn, q);
		s->st.tcp_tw_recycled++;
		conn_kill(old);
	}
}

static void conn_timer_cb(void *arg, struct tw_timer *t)
{
	struct net_conn *c = arg;
	struct net_stack *s = c->s;
	uint32_t dl_ms = (uint32_t)(t->deadline_ns / MS);
	uint32_t now = net_seq_gt(dl_ms, s->now_ms) ? dl_ms : s->now_ms;

	switch (c->tmode) {
	case NT_SYNACK:
		if (c->retries >= NET_TCP_SYNACK_RETRIES) {
			s->st.tcp_timeouts++;
			conn_kill(c);
			break;
		}
		c->retries++;
		c->backoff++;
		s->st.tcp_retransmits++;
		send_synack(c);
		timer_set(c, NT_SYNACK, rto_cur(c));
		break;
	case NT_RTX:
		if (c->retries >= NET_TCP_RTX_RETRIES) {
			s->st.tcp_timeouts++;
			conn_abort(c);
			break;
		}
		c->retries++;
		if (c->backoff < 16)
			c->backoff++;
		s->st.tcp_rto++;
		/* RFC 5681 eq. 4 and RFC 6582: collapse cwnd, go back to snd_una. */
		c->ssthresh = umax((c->snd_max - c->snd_una) / 2, 2u * c->mss);
		c->cwnd = c->mss;
		c->flags &= ~(uint32_t)(NC_RECOVERY | NC_RTT | NC_TLP);
		c->recover = c->snd_max;
		c->dupacks = 0;
		c->rtx_hi = c->snd_una;
		/* The scoreboard survives the first expiry so that going back to
		 * snd_una skips what the peer holds (RFC 6675 5.1); a repeated
		 * expiry drops it in case the peer reneged (RFC 2018 8). */
		if (c->backoff > 1)
			c->n_sacked = 0;
		c->snd_nxt = c->snd_una;
		tcp_output(c);
		if (!(c->flags & NC_DEAD))
			timer_set(c, NT_RTX, rto_cur(c));
		break;
	case NT_TLP: {
		/* One probe: a new segment when there is one (cwnd grows by it),
		 * else the last segment again; then the RTO proper. */
		uint32_t seg = c->mss - ((c->flags & NC_TS) ? TS_OPT_LEN : 0);
		uint32_t before = c->snd_max;
		c->flags |= NC_TLP;
		s->st.tcp_tlp++;
		if (unsent(c) > 0 && c->snd_nxt == c->snd_max) {
			c->cwnd += seg;
			tcp_output(c);
		}
		if (!(c->flags & NC_DEAD) && c->snd_max == before) {
			uint32_t end = c->snd_una + c->sq_len;
			uint32_t data = net_seq_gt(end, c->snd_una) ? end - c->snd_una : 0;
			if ((c->flags & NC_FIN_SENT) && c->snd_max == end + 1)
				retransmit_at(c, end);
			else if (data > 0)
				retransmit_at(c, end - umin(data, seg));
		}
		if (!(c->flags & NC_DEAD))
			timer_set(c, NT_RTX, rto_cur(c));
		break;
	}
	case NT_PERSIST:
		s->st.tcp_zwp++;
		xmit(c, c->snd_una - 1, NET_TCP_ACK, 0);
		if (c->backoff < 16)
			c->backoff++;
		timer_set(c, NT_PERSIST, rto_cur(c));
		break;
	case NT_KEEPALIVE: {
		uint32_t idle = now - c->last_rx_ms;
		uint32_t need = s->conf.keepalive_s * 1000u +
				c->ka_probes * s->conf.keepalive_intvl_s * 1000u;
		if (idle < need) {
			timer_set(c, NT_KEEPALIVE, need - idle);
			break;
		}
		if (c->ka_probes >= s->conf.keepalive_cnt) {
			s->st.tcp_timeouts++;
			conn_abort(c);
			break;
		}
		c->ka_probes++;
		s->st.tcp_keepalive++;
		xmit(c, c->snd_una - 1, NET_TCP_ACK, 0);
		timer_set(c, NT_KEEPALIVE, s->conf.keepalive_intvl_s * 1000u);
		break;
	}
	case NT_FINWAIT2:
		s->st.tcp_timeouts++;
		conn_kill(c);
		break;
	case NT_TIMEWAIT:
		conn_kill(c);
		break;
	default:
		break;
	}
	net_tcp_pending(s);
}

static void ack_timer_cb(void *arg, struct tw_timer *t)
{
	struct net_conn *c = arg;
	(void)t;
	if ((c->flags & NC_DELACK) && c->state != NET_TCPS_CLOSED)
		send_ack(c);
}

/* ---- RTT and congestion control ----------------------------------------- */

/* RFC 6298 section 2 with a 1 ms clock granularity. */
static void rtt_sample(struct net_conn *c, uint32_t r)
{
	if (c->srtt8 == 0) {
		c->srtt8 = r * 8 + 1;
		c->rttvar4 = r * 2;
	} else {
		int32_t delta = (int32_t)r - (int32_t)(c->srtt8 / 8);
		c->srtt8 = (uint32_t)((int32_t)c->srtt8 + delta);
		int32_t ad = delta < 0 ? -delta : delta;
		c->rttvar4 = (uint32_t)((int32_t)c->rttvar4 + ad - (int32_t)(c->rttvar4 / 4));
	}
	uint32_t rto = c->srtt8 / 8 + umax(1u, c->rttvar4);
	c->rto_ms = rto < NET_TCP_RTO_MIN_MS ? NET_TCP_RTO_MIN_MS
		    : rto > NET_TCP_RTO_MAX_MS ? NET_TCP_RTO_MAX_MS : rto;
}

/* The first sequence at or after seq the peer has not SACKed. */
static uint32_t skip_sacked(const struct net_conn *c, uint32_t seq)
{
	bool moved = true;
	while (moved) {
		moved = false;
		for (uint32_t i = 0; i < c->n_sacked; i++) {
			if (net_seq_le(c->sacked[i].start, seq) && net_seq_lt(seq, c->sacked[i].end)) {
				seq = c->sacked[i].end;
				moved = true;
			}
		}
	}
	return seq;
}

/* The lowest SACKed start above seq, or `limit`. */
static uint32_t next_sacked(const struct net_conn *c, uint32_t seq, uint32_t limit)
{
	for (uint32_t i = 0; i < c->n_sacked; i++)
		if (net_seq_gt(c->sacked[i].start, seq) && net_seq_lt(c->sacked[i].start, limit))
			limit = c->sacked[i].start;
	return limit;
}

/* Resends the segment at seq (data and/or FIN) without moving snd_nxt. */
static uint32_t retransmit_at(struct net_conn *c, uint32_t seq)
{
	uint32_t end = c->snd_una + c->sq_len;
	if (net_seq_ge(seq, end)) {
		if ((c->flags & NC_FIN_SENT) && seq == end) {
			xmit(c, seq, NET_TCP_ACK | NET_TCP_FIN, 0);
			c->s->st.tcp_retransmits++;
			return 1;
		}
		return 0;
	}
	uint32_t len = umin(end - seq, c->mss - ((c->flags & NC_TS) ? TS_OPT_LEN : 0));
	len = next_sacked(c, seq, seq + len) - seq;
	xmit(c, seq, NET_TCP_ACK, len);
	c->flags &= ~(uint32_t)NC_RTT;
	c->s->st.tcp_retransmits++;
	return len;
}

static uint32_t sacked_bytes(const struct net_conn *c)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->n_sacked; i++)
		n += c->sacked[i].end - c->sacked[i].start;
	return n;
}

/* Records the peer's SACK blocks (RFC 2018) that lie in [snd_una, snd_max);
 * returns how many bytes the scoreboard gained (0: nothing new). */
static uint32_t sack_update(struct net_conn *c, const struct seg *sg)
{
	uint32_t before = sacked_bytes(c);
	for (uint32_t i = 0; i < sg->nsack; i++) {
		struct net_range r = sg->sack[i];
		if (!net_seq_lt(r.start, r.end) || !net_seq_gt(r.start, c->snd_una) ||
		    net_seq_gt(r.end, c->snd_max))
			continue;
		uint32_t j = 0;
		while (j < c->n_sacked) {
			struct net_range *x = &c->sacked[j];
			if (net_seq_le(x->start, r.end) && net_seq_ge(x->end, r.start)) {
				if (net_seq_lt(x->start, r.start))
					r.start = x->start;
				if (net_seq_gt(x->end, r.end))
					r.end = x->end;
				c->sacked[j] = c->sacked[--c->n_sacked];
				continue;
			}
			j++;
		}
		if (c->n_sacked == NET_SACKED_MAX) {
			uint32_t lo = 0;
			for (uint32_t k = 1; k < c->n_sacked; k++)
				if (net_seq_lt(c->sacked[k].start, c->sacked[lo].start))
					lo = k;
			c->sacked[lo] = r;
		} else {
			c->sacked[c->n_sacked++] = r;
		}
	}
	uint32_t after = sacked_bytes(c);
	return after > before ? after - before : 0;
}

static void sack_trim(struct net_conn *c)
{
	uint32_t j = 0;
	while (j < c->n_sacked) {
		if (net_seq_le(c->sacked[j].end, c->snd_una)) {
			c->sacked[j] = c->sacked[--c->n_sacked];
			continue;
		}
		if (net_seq_lt(c->sacked[j].start, c->snd_una))
			c->sacked[j].start = c->snd_una;
		j++;
	}
}

/* The highest SACKed sequence, or snd_una. */
static uint32_t sack_high(const struct net_conn *c)
{
	uint32_t h = c->snd_una;
	for (uint32_t i = 0; i < c->n_sacked; i++)
		if (net_seq_gt(c->sacked[i].end, h))
			h = c->sacked[i].end;
	return h;
}

/*
 * RFC 6675 over the scoreboard. IsLost(x) holds when three SACKed blocks or
 * more than two segments' worth of SACKed bytes lie above x; it is monotone,
 * so it is described by one edge: every un-SACKed byte below *lost is lost.
 * Returns the pipe: un-SACKed bytes at or above the edge (still in flight)
 * plus those below it that were retransmitted (below rtx_hi).
 */
static uint32_t sack_pipe(const struct net_conn *c, uint32_t seg, uint32_t *lost)
{
	uint32_t edge = c->snd_una, above = 0, blocks = 0, hi = c->snd_max;
	for (uint32_t k = 0; k < c->n_sacked; k++) {
		int best = -1;
		for (uint32_t i = 0; i < c->n_sacked; i++)
			if (net_seq_lt(c->sacked[i].start, hi) &&
			    (best < 0 || net_seq_gt(c->sacked[i].start, c->sacked[best].start)))
				best = (int)i;
		if (best < 0)
			break;
		hi = c->sacked[best].start;
		above += c->sacked[best].end - c->sacked[best].start;
		if (++blocks >= 3 || above > 2u * seg) {
			edge = hi;
			break;
		}
	}
	if (edge == c->snd_una)
		above = sacked_bytes(c);
	uint32_t pipe = c->snd_max - edge - above;
	uint32_t r = net_seq_lt(c->rtx_hi, edge) ? c->rtx_hi : edge;
	if (net_seq_gt(r, c->snd_una)) {
		uint32_t held = 0;
		for (uint32_t i = 0; i < c->n_sacked; i++) {
			uint32_t a = net_seq_gt(c->sacked[i].start, c->snd_una) ? c->sacked[i].start
										: c->snd_una;
			uint32_t b = net_seq_lt(c->sacked[i].end, r) ? c->sacked[i].end : r;
			if (net_seq_lt(a, b))
				held += b - a;
		}
		pipe += r - c->snd_una - held;
	}
	*lost = edge;
	return pipe;
}

/* SACK recovery: resends un-SACKed ranges below `limit` above rtx_hi while
 * cwnd - pipe allows a segment (RFC 6675 NextSeg rules 1 and 3). */
static bool sack_rtx(struct net_conn *c, uint32_t seg, uint32_t limit, uint32_t *pipe)
{
	bool sent = false;
	while (*pipe + seg <= c->cwnd) {
		uint32_t from = net_seq_gt(c->rtx_hi, c->snd_una) ? c->rtx_hi : c->snd_una;
		from = skip_sacked(c, from);
		if (!net_seq_lt(from, limit))
			break;
		uint32_t n = retransmit_at(c, from);
		if (n == 0)
			break;
		c->s->st.tcp_fast_retransmits++;
		c->rtx_hi = from + n;
		*pipe += n;
		sent = true;
	}
	return sent;
}

/* NewReno (RFC 5681 / 6582) on an ACK that acknowledged `acked` bytes. */
static void cc_on_ack(struct net_conn *c, uint32_t acked)
{
	if (c->flags & NC_RECOVERY) {
		if (net_seq_ge(c->snd_una, c->recover)) {
			/* Full ACK (RFC 6582 3.2 step 3): ssthresh with SACK, as the
			 * pipe rule keeps bursts in check; NewReno takes
			 * min(ssthresh, max(flight, MSS) + MSS). Never below two
			 * segments: with one, a single loss can only end in an RTO. */
			c->flags &= ~(uint32_t)NC_RECOVERY;
			if (c->flags & NC_SACK)
				c->cwnd = c->ssthresh;
			else
				c->cwnd = umin(c->ssthresh,
					       umax(c->snd_max - c->snd_una, c->mss) + c->mss);
			c->dupacks = 0;
			return;
		}
		/* Partial ACK. With SACK, tcp_output resends what the scoreboard
		 * calls lost as pipe allows (RFC 6675); NewReno resends the next
		 * hole and deflates by what was ACKed (RFC 6582). */
		if (c->flags & NC_SACK) {
			if (net_seq_lt(c->rtx_hi, c->snd_una))
				c->rtx_hi = c->snd_una;
			/* The new snd_una was resent at some point before now:
			 * judge its resend only by what is sent from here on. */
			c->rtx_mark = c->snd_max;
			return;
		}
		uint32_t n = retransmit_at(c, c->snd_una);
		if (net_seq_lt(c->rtx_hi, c->snd_una + n))
			c->rtx_hi = c->snd_una + n;
		c->cwnd = c->cwnd > acked ? c->cwnd - acked : 0;
		c->cwnd += c->mss;
		return;
	}
	c->dupacks = 0;
	if (c->cwnd < c->ssthresh)
		c->cwnd += umin(acked, c->mss);
	else
		c->cwnd += umax(1u, c->mss * c->mss / c->cwnd);
}

/* Fast retransmit: halve, remember the recovery point, resend snd_una.
 * NewReno inflates cwnd by the three duplicates (RFC 5681); SACK recovery
 * counts the pipe instead (RFC 6675), so cwnd is ssthresh. */
static void enter_recovery(struct net_conn *c)
{
	struct net_stack *s = c->s;
	/* After an RTO (snd_una below recover) cwnd was already collapsed:
	 * this is a loss among the retransmissions, not a new congestion
	 * event, so cwnd and ssthresh stay. */
	if (net_seq_ge(c->snd_una, c->recover)) {
		c->ssthresh = umax((c->snd_max - c->snd_una) / 2, 2u * c->mss);
		c->cwnd = (c->flags & NC_SACK) ? c->ssthresh : c->ssthresh + 3u * c->mss;
	}
	c->recover = c->snd_max;
	c->flags |= NC_RECOVERY;
	s->st.tcp_recoveries++;
	s->st.tcp_fast_retransmits++;
	c->rtx_hi = c->snd_una + retransmit_at(c, c->snd_una);
	c->rtx_mark = c->snd_max;
}

/* In SACK recovery: when more than two segments' worth of data sent after
 * snd_una was last resent has been SACKed while snd_una stays, that resend
 * was lost too (the idea of RACK, RFC 8985, on the scoreboard): resend it
 * and walk the holes again now rather than at the RTO. */
static void sack_lost_rtx(struct net_conn *c)
{
	uint32_t seg = c->mss - ((c->flags & NC_TS) ? TS_OPT_LEN : 0), after = 0;
	for (uint32_t i = 0; i < c->n_sacked; i++) {
		const struct net_range *r = &c->sacked[i];
		if (net_seq_gt(r->end, c->rtx_mark))
			after += r->end - (net_seq_gt(r->start, c->rtx_mark) ? r->start : c->rtx_mark);
	}
	if (after <= 2u * seg)
		return;
	c->s->st.tcp_fast_retransmits++;
	c->rtx_hi = c->snd_una + retransmit_at(c, c->snd_una);
	c->rtx_mark = c->snd_max;
}

static void on_dupack(struct net_conn *c)
{
	struct net_stack *s = c->s;
	s->st.tcp_dup_acks++;
	if (c->dupacks < 255)
		c->dupacks++;
	if (c->flags & NC_RECOVERY) {
		if (!(c->flags & NC_SACK))
			c->cwnd += c->mss;
		return;
	}
	if ((c->flags & NC_SACK) || c->dupacks != 3 || !net_seq_gt(c->snd_una, c->recover))
		return;
	enter_recovery(c);
}

/* With SACK, recovery starts on the third duplicate or as soon as the
 * scoreboard calls snd_una lost (RFC 6675 5 step 2), whichever ACK it
 * is: a cumulative ACK that leaves a hole counts too. */
static void sack_loss_check(struct net_conn *c, bool probe_sacked)
{
	uint32_t lost;
	uint32_t seg = c->mss - ((c->flags & NC_TS) ? TS_OPT_LEN : 0);
	sack_pipe(c, seg, &lost);
	/* A SACK for the tail loss probe with snd_una still missing: snd_una
	 * went out at least a probe timeout (2 SRTT) before the probe, which
	 * is RACK's test for lost (RFC 8985 6.2). */
	if (c->dupacks >= 3 || net_seq_gt(lost, c->snd_una) || probe_sacked)
		enter_recovery(c);
}

/* ---- receive ------------------------------------------------------------ */

static bool app_reads(const struct net_conn *c)
{
	return (c->flags & (NC_APP | NC_APP_CLOSE | NC_DEAD)) == NC_APP;
}

static inline uint32_t ooo_extent(const struct net_conn *c)
{
	uint32_t hi = 0;
	for (uint32_t i = 0; i < c->n_ooo; i++)
		hi = umax(hi, c->ooo[i].end - c->rcv_nxt);
	return hi;
}

/* Offers the stash to the app and keeps what it leaves. */
static void offer(struct net_conn *c)
{
	struct net_stack *s = c->s;
	if (!app_reads(c) || (c->flags & NC_RX_FULL) || c->rb_len == 0)
		return;
	uint32_t before = s->conf.rcv_buf - c->rb_len;
	size_t used = s->up->on_data(s->app, c->ctx, c->rbuf, c->rb_len);
	if (!app_reads(c) || !c->rbuf)
		return;
	if (used > c->rb_len)
		used = c->rb_len;
	uint32_t keep = c->rb_len - (uint32_t)used;
	if (used > 0)
		memmove(c->rbuf, c->rbuf + used, keep + ooo_extent(c));
	c->rb_len = keep;
	if (keep >= umin(s->conf.rcv_buf, TP_RX_STASH_MAX))
		c->flags |= NC_RX_FULL;
	if (c->rb_len == 0 && c->n_ooo == 0)
		rbuf_put(c);
	/* Tell the peer when a closed or small window opened by a lot. */
	uint32_t after = s->conf.rcv_buf - c->rb_len;
	if (after - before >= umin(s->conf.rcv_buf / 2, 2u * c->mss) && before < 2u * c->mss)
		c->flags |= NC_ACK_NOW;
}

/* Moves rcv_nxt over out-of-order ranges the new data reached; their bytes
 * are already in place behind the stash. */
static void ooo_merge(struct net_conn *c, bool keep_bytes)
{
	bool moved = true;
	while (moved) {
		moved = false;
		for (uint32_t i = 0; i < c->n_ooo; i++) {
			struct net_range *r = &c->ooo[i];
			if (net_seq_gt(r->start, c->rcv_nxt))
				continue;
			if (net_seq_gt(r->end, c->rcv_nxt)) {
				uint32_t n = r->end - c->rcv_nxt;
				if (keep_bytes)
					c->rb_len += n;
				else if (c->rbuf)
					memmove(c->rbuf + c->rb_len, c->rbuf + c->rb_len + n,
						ooo_extent(c) - n);
				c->rcv_nxt = r->end;
			}
			c->ooo[i] = c->ooo[--c->n_ooo];
			c->ooo_last = 0;
			moved = true;
			break;
		}
	}
}

/* In-order bytes at rcv_nxt. When what the app leaves finds no buffer,
 * rcv_nxt stops before it, so the peer sends it again. */
static void rcv_inorder(struct net_conn *c, const uint8_t *data, uint32_t len)
{
	struct net_stack *s = c->s;
	s->st.tcp_bytes_in += len;
	if (!app_reads(c)) {
		c->rcv_nxt += len;
		if (c->n_ooo)
			ooo_merge(c, false);
		if (c->rbuf && c->n_ooo == 0)
			rbuf_put(c);
		return;
	}
	if (c->rb_len == 0 && c->n_ooo == 0 && !(c->flags & NC_RX_FULL)) {
		size_t used = s->up->on_data(s->app, c->ctx, data, len);
		if (used > len)
			used = len;
		if (!app_reads(c)) {
			c->rcv_nxt += len;
			return;
		}
		uint32_t rest = len - (uint32_t)used;
		if (rest > 0) {
			if (!rbuf_get(c)) {
				c->rcv_nxt += (uint32_t)used;
				return;
			}
			memcpy(c->rbuf, data + used, rest);
			c->rb_len = rest;
			if (rest >= umin(s->conf.rcv_buf, TP_RX_STASH_MAX))
				c->flags |= NC_RX_FULL;
		}
		c->rcv_nxt += len;
		return;
	}
	if (!rbuf_get(c))
		return;
	memcpy(c->rbuf + c->rb_len, data, len);
	c->rb_len += len;
	c->rcv_nxt += len;
	ooo_merge(c, true);
	offer(c);
}

/* Out-of-order bytes: kept in place in the buffer when they fit in the
 * bounded range list, else dropped (the peer resends them). */
static void rcv_ooo(struct net_conn *c, uint32_t seq, const uint8_t *data, uint32_t len)
{
	struct net_stack *s = c->s;
	struct net_range r = {seq, seq + len};
	uint32_t merged = 0;
	for (uint32_t i = 0; i < c->n_ooo; i++)
		if (net_seq_le(c->ooo[i].start, r.end) && net_seq_ge(c->ooo[i].end, r.start))
			merged++;
	if ((merged == 0 && c->n_ooo == NET_OOO_MAX) || !rbuf_get(c)) {
		s->st.tcp_ooo_drops++;
		return;
	}
	s->st.tcp_ooo_segs++;
	memcpy(c->rbuf + c->rb_len + (seq - c->rcv_nxt), data, len);
	uint32_t j = 0;
	while (j < c->n_ooo) {
		struct net_range *x = &c->ooo[j];
		if (net_seq_le(x->start, r.end) && net_seq_ge(x->end, r.start)) {
			if (net_seq_lt(x->start, r.start))
				r.start = x->start;
			if (net_seq_gt(x->end, r.end))
				r.end = x->end;
			c->ooo[j] = c->ooo[--c->n_ooo];
			continue;
		}
		j++;
	}
	c->ooo_last = c->n_ooo;
	c->ooo[c->n_ooo++] = r;
}

/* ---- input -------------------------------------------------------------- */

static void conn_established(struct net_conn *c, const struct seg *sg)
{
	struct net_stack *s = c->s;
	c->state = NET_TCPS_ESTABLISHED;
	c->snd_una = c->iss + 1;
	c->snd_nxt = c->snd_max = c->snd_una;
	c->recover = c->iss;
	c->snd_wnd = sg->wnd << c->snd_ws;
	c->max_snd_wnd = c->snd_wnd;
	c->snd_wl1 = sg->seq;
	c->snd_wl2 = sg->ack;
	c->cwnd = NET_TCP_INIT_CWND_SEGS * c->mss;
	c->ssthresh = UINT32_MAX / 2;
	c->backoff = 0;
	c->retries = 0;
	c->last_rx_ms = s->now_ms;
	tw_cancel(s->wheel, &c->timer);
	c->tmode = NT_NONE;
	s->st.tcp_accepted++;
	struct tp_peer peer = {.ipv4 = c->raddr, .port = net_ntohs(c->rport)};
	/* NC_APP is set while on_open runs so the app may already send. */
	c->flags |= NC_APP;
	void *ctx = s->up->on_open(s->app, (struct tp_conn *)c, &peer);
	if (!ctx) {
		c->flags &= ~(uint32_t)NC_APP;
		s->st.tcp_refused++;
		conn_abort(c);
		return;
	}
	c->ctx = ctx;
}

/* Negotiated options of a SYN into a new TCB. */
static void syn_options(struct net_conn *c, const struct seg *sg)
{
	struct net_stack *s = c->s;
	uint32_t mss = sg->has_mss ? sg->mss : NET_TCP_DEFAULT_MSS;
	c->mss = (uint16_t)umax(umin(mss, s->mss_local), 88u);
	if (sg->ws >= 0) {
		c->flags |= NC_WS;
		c->snd_ws = (uint8_t)sg->ws;
		uint8_t ws = 0;
		while (ws < NET_TCP_MAX_WS && (s->conf.rcv_buf >> ws) > 0xffff)
			ws++;
		c->rcv_ws = ws;
	}
	if (sg->sack_perm)
		c->flags |= NC_SACK;
	if (sg->has_ts) {
		c->flags |= NC_TS;
		c->ts_recent = sg->tsval;
		c->ts_recent_ms = s->now_ms;
	}
}

/* A segment for a listening port that matches no connection and no
 * cookie. Alone on the port it is reset; with shared_port the connection
 * may live on another stack that missed this frame (its peer will send it
 * again), so a RST here would kill a healthy connection. */
static void stray(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
		  const struct seg *sg)
{
	if (s->conf.shared_port) {
		s->st.tcp_stray_drops++;
		return;
	}
	rst_reply(s, ip, th, sg);
}

/* A SYN, or an ACK that may complete a cookie handshake, for no TCB. */
static void listen_input(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
			 const struct seg *sg)
{
	bool listening = false;
	for (uint32_t i = 0; i < NET_MAX_LISTEN && s->conf.listen_ports[i]; i++)
		if (net_htons(s->conf.listen_ports[i]) == th->dport)
			listening = true;
	if (!listening) {
		s->st.tcp_no_port++;
		rst_reply(s, ip, th, sg);
		return;
	}
	if (sg->flags & NET_TCP_RST)
		return;
	if ((sg->flags & (NET_TCP_SYN | NET_TCP_ACK)) == NET_TCP_ACK) {
		uint32_t iss = sg->ack - 1, irs = sg->seq - 1;
		int idx = s->conf.syn_cookies
				  ? cookie_check(s, ip->src, th->sport, th->dport, irs, iss)
				  : -1;
		if (idx < 0) {
			if (s->conf.syn_cookies)
				s->st.tcp_cookies_bad++;
			stray(s, ip, th, sg);
			return;
		}
		struct net_conn *c = conn_new(s, ip->src, th->sport, th->dport);
		if (!c)
			return;
		s->st.tcp_cookies_ok++;
		struct seg syn = {.ws = -1, .has_mss = true, .mss = cookie_mss[idx]};
		/* Options travelled in the low bits of our timestamp. */
		if (sg->has_ts && (sg->tsecr & 0x20u)) {
			syn.has_ts = true;
			syn.tsval = sg->tsval;
			syn.sack_perm = (sg->tsecr & 0x10u) != 0;
			if (sg->tsecr & 0x40u)
				syn.ws = (int8_t)(sg->tsecr & 0x0fu);
		}
		syn_options(c, &syn);
		c->iss = iss;
		c->irs = irs;
		c->rcv_nxt = sg->seq;
		c->rcv_adv = c->rcv_nxt + (sg->wnd ? umin(s->conf.rcv_buf, 0xffff) : 0);
		c->last_ack_sent = c->rcv_nxt;
		c->state = NET_TCPS_SYN_RCVD;
		conn_established(c, sg);
		if (!(c->flags & NC_DEAD))
			conn_input(c, sg);
		return;
	}
	if ((sg->flags & (NET_TCP_SYN | NET_TCP_ACK | NET_TCP_FIN)) != NET_TCP_SYN) {
		stray(s, ip, th, sg);
		return;
	}
	s->st.tcp_syn_rx++;
	if (s->n_synrcvd < s->conf.syn_backlog && !(s->conf.shared_port && s->conf.syn_cookies)) {
		struct net_conn *c = conn_new(s, ip->src, th->sport, th->dport);
		if (c) {
			syn_options(c, sg);
			c->state = NET_TCPS_SYN_RCVD;
			s->n_synrcvd++;
			c->irs = sg->seq;
			c->rcv_nxt = sg->seq + 1;
			c->iss = isn_for(s, ip->src, th->sport, th->dport);
			c->snd_una = c->iss;
			c->snd_nxt = c->snd_max = c->iss + 1;
			send_synack(c);
			timer_set(c, NT_SYNACK, rto_cur(c));
			return;
		}
	}
	if (!s->conf.syn_cookies)
		return;
	/* SYN cookie: no state until the ACK comes back. */
	uint32_t mss = sg->has_mss ? sg->mss : NET_TCP_DEFAULT_MSS;
	mss = umin(mss, s->mss_local);
	uint32_t idx = 0;
	for (uint32_t i = 0; i < 8; i++)
		if (cookie_mss[i] <= mss)
			idx = i;
	uint32_t t = s->now_ms / NET_TCP_COOKIE_PERIOD_MS;
	uint32_t iss = cookie_make(s, ip->src, th->sport, th->dport, sg->seq, t, idx);
	uint8_t ws = 0;
	while (ws < NET_TCP_MAX_WS && (s->conf.rcv_buf >> ws) > 0xffff)
		ws++;
	uint32_t tsval = (s->now_ms & ~0x7fu) | 0x20u;
	if (sg->sack_perm)
		tsval |= 0x10u;
	if (sg->ws >= 0)
		tsval |= 0x40u | ws;
	/* Never ahead of the clock: our next segments carry TSval = now, and
	 * a peer's PAWS drops any below the SYN-ACK's (RFC 7323 5.3), which
	 * left the first answer of a cookie connection to the RTO. */
	if (net_seq_gt(tsval, s->now_ms))
		tsval -= 0x80u;
	uint8_t o[NET_TCP_MAX_OPTLEN];
	uint32_t olen = put_syn_opts(o, s->mss_local, sg->has_ts && sg->sack_perm, sg->has_ts,
				     tsval, sg->tsval, (sg->has_ts && sg->ws >= 0) ? ws : -1);
	s->st.tcp_cookies_sent++;
	emit_raw(s, ip->src, th->sport, th->dport, iss, sg->seq + 1, NET_TCP_SYN | NET_TCP_ACK,
		 (uint16_t)umin(s->conf.rcv_buf, 0xffff), o, olen);
}

/* TIME_WAIT: re-ACK a retransmitted FIN; a new SYN above the old
 * sequence space (or timestamps) reopens the tuple (RFC 6191 idea). */
static bool time_wait_input(struct net_conn *c, const struct seg *sg)
{
	if (sg->flags & NET_TCP_RST)
		return false;
	if ((sg->flags & (NET_TCP_SYN | NET_TCP_ACK)) == NET_TCP_SYN) {
		bool newer = net_seq_gt(sg->seq, c->rcv_nxt) ||
			     ((c->flags & NC_TS) && sg->has_ts && net_seq_gt(sg->tsval, c->ts_recent));
		if (newer) {
			conn_kill(c);
			return true;
		}
		challenge_ack(c);
		return false;
	}
	if (sg->flags & NET_TCP_FIN) {
		send_ack(c);
		timer_set(c, NT_TIMEWAIT, 2 * c->s->conf.msl_ms);
	}
	return false;
}

/* RFC 9293 3.10.7.4 for SYN_RCVD and the synchronized states. */
static void conn_input(struct net_conn *c, const struct seg *sg)
{
	struct net_stack *s = c->s;
	uint32_t seq = sg->seq;
	uint32_t dlen = sg->dlen;
	const uint8_t *data = sg->data;
	bool fin = sg->flags & NET_TCP_FIN;

	/* A retransmitted SYN while half-open: the same SYN-ACK again. */
	if (c->state == NET_TCPS_SYN_RCVD &&
	    (sg->flags & (NET_TCP_SYN | NET_TCP_ACK | NET_TCP_RST)) == NET_TCP_SYN &&
	    seq == c->irs) {
		send_synack(c);
		return;
	}

	/* PAWS (RFC 7323 5.3). */
	if ((c->flags & NC_TS) && sg->has_ts && !(sg->flags & NET_TCP_RST) &&
	    net_seq_lt(sg->tsval, c->ts_recent) &&
	    s->now_ms - c->ts_recent_ms < NET_TCP_PAWS_IDLE_MS) {
		s->st.tcp_paws_drops++;
		send_ack(c);
		return;
	}

	/* Sequence acceptability. */
	uint32_t wnd = net_seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t slen = dlen + fin + !!(sg->flags & NET_TCP_SYN);
	bool ok;
	if (slen == 0)
		ok = wnd == 0 ? seq == c->rcv_nxt
			      : net_seq_ge(seq, c->rcv_nxt) && net_seq_lt(seq, c->rcv_nxt + wnd);
	else
		ok = wnd != 0 &&
		     ((net_seq_ge(seq, c->rcv_nxt) && net_seq_lt(seq, c->rcv_nxt + wnd)) ||
		      (net_seq_ge(seq + slen - 1, c->rcv_nxt) &&
		       net_seq_lt(seq + slen - 1, c->rcv_nxt + wnd)));
	if (!ok && slen == 0 && wnd == 0 && seq == c->rcv_nxt)
		ok = true;
	if (!ok) {
		/* A zero-window probe or duplicate: just ACK (not for RSTs). */
		s->st.tcp_out_of_window++;
		if (!(sg->flags & NET_TCP_RST))
			send_ack(c);
		return;
	}

	/* RST (RFC 5961 section 3). */
	if (sg->flags & NET_TCP_RST) {
		s->st.tcp_rst_rx++;
		if (seq != c->rcv_nxt) {
			challenge_ack(c);
			return;
		}
		c->flags |= NC_RESET;
		conn_kill(c);
		return;
	}

	/* SYN (RFC 5961 section 4). */
	if (sg->flags & NET_TCP_SYN) {
		if (c->state == NET_TCPS_SYN_RCVD && seq == c->irs) {
			send_synack(c);
			return;
		}
		challenge_ack(c);
		return;
	}
	if (!(sg->flags & NET_TCP_ACK))
		return;

	c->last_rx_ms = s->now_ms;
	c->ka_probes = 0;

	if (c->state == NET_TCPS_SYN_RCVD) {
		if (sg->ack != c->iss + 1) {
			emit_raw(s, c->raddr, c->rport, c->lport, sg->ack, 0, NET_TCP_RST, 0, NULL, 0);
			return;
		}
		s->n_synrcvd--;
		c->state = NET_TCPS_ESTABLISHED;
		conn_established(c, sg);
		if (c->flags & NC_DEAD)
			return;
	}

	/* ACK validation (RFC 5961 section 5). */
	if (net_seq_gt(sg->ack, c->snd_max) ||
	    net_seq_lt(sg->ack, c->snd_una - c->max_snd_wnd)) {
		challenge_ack(c);
		return;
	}

	uint32_t newly = ((c->flags & NC_SACK) && sg->nsack) ? sack_update(c, sg) : 0;

	/* RTT from the echoed timestamp, or the timed segment (Karn). */
	bool advanced = net_seq_gt(sg->ack, c->snd_una);
	if (advanced) {
		uint32_t acked = sg->ack - c->snd_una;
		bool fin_acked = (c->flags & NC_FIN_SENT) && sg->ack == c->snd_una + c->sq_len + 1;
		/* An echoed timestamp times the very segment that was ACKed, a
		 * retransmission included, so it is sampled even while backed
		 * off (RFC 7323 4.1); cookie option bits may put TSecr ahead. */
		if ((c->flags & NC_TS) && sg->has_ts && sg->tsecr &&
		    net_seq_le(sg->tsecr, s->now_ms))
			rtt_sample(c, s->now_ms - sg->tsecr);
		else if ((c->flags & NC_RTT) && net_seq_gt(sg->ack, c->rtt_seq))
			rtt_sample(c, s->now_ms - c->rtt_start_ms);
		if ((c->flags & NC_RTT) && net_seq_gt(sg->ack, c->rtt_seq))
			c->flags &= ~(uint32_t)NC_RTT;
		sq_consume(c, acked - fin_acked);
		c->snd_una = sg->ack;
		if (net_seq_lt(c->snd_nxt, c->snd_una))
			c->snd_nxt = c->snd_una;
		c->backoff = 0;
		c->retries = 0;
		c->flags &= ~(uint32_t)NC_TLP;
		sack_trim(c);
		cc_on_ack(c, acked);
		if (fin_acked) {
			if (c->state == NET_TCPS_FIN_WAIT_1) {
				c->state = NET_TCPS_FIN_WAIT_2;
				app_detach(c);
			} else if (c->state == NET_TCPS_CLOSING) {
				enter_time_wait(c);
				return;
			} else if (c->state == NET_TCPS_LAST_ACK) {
				conn_kill(c);
				return;
			}
		}
	} else if (sg->ack == c->snd_una && c->snd_max != c->snd_una &&
		   ((c->flags & NC_SACK) ? newly > 0
					 : dlen == 0 && !fin && (sg->wnd << c->snd_ws) == c->snd_wnd)) {
		/* With SACK, an ACK that SACKs new data is a duplicate whatever
		 * else it carries (RFC 6675 2): a peer that sends data or moves
		 * its window still reports the loss. */
		on_dupack(c);
	}
	/* With SACK, duplicates of go-back-N resends carry no new SACK
	 * information, so once the resends after an RTO are out (snd_nxt back
	 * at snd_max) a hole the scoreboard calls lost is a lost resend. */
	if ((c->flags & (NC_SACK | NC_RECOVERY)) == NC_SACK && c->snd_max != c->snd_una &&
	    (net_seq_ge(c->snd_una, c->recover) || c->snd_nxt == c->snd_max))
		sack_loss_check(c, newly > 0 && (c->flags & NC_TLP));
	else if ((c->flags & (NC_SACK | NC_RECOVERY)) == (NC_SACK | NC_RECOVERY) && newly > 0)
		sack_lost_rtx(c);

	/* Window update (RFC 9293 3.10.7.4, SND.WL1/WL2). */
	if (net_seq_lt(c->snd_wl1, seq) ||
	    (c->snd_wl1 == seq && net_seq_le(c->snd_wl2, sg->ack))) {
		c->snd_wnd = sg->wnd << c->snd_ws;
		c->snd_wl1 = seq;
		c->snd_wl2 = sg->ack;
		if (c->snd_wnd > c->max_snd_wnd)
			c->max_snd_wnd = c->snd_wnd;
		if (c->snd_wnd > 0 && c->tmode == NT_PERSIST) {
			c->backoff = 0;
			tw_cancel(s->wheel, &c->timer);
			c->tmode = NT_NONE;
		}
	}

	/* Timestamp to echo (RFC 7323 4.3). */
	if ((c->flags & NC_TS) && sg->has_ts && net_seq_ge(sg->tsval, c->ts_recent) &&
	    net_seq_le(seq, c->last_ack_sent)) {
		c->ts_recent = sg->tsval;
		c->ts_recent_ms = s->now_ms;
	}

	/* Data. */
	bool data_state = c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_FIN_WAIT_1 ||
			  c->state == NET_TCPS_FIN_WAIT_2;
	if (!data_state) {
		dlen = 0;
		fin = false;
	}
	if (net_seq_lt(seq, c->rcv_nxt)) {
		/* Old bytes (and an old FIN) are trimmed; a pure duplicate is
		 * ACKed at once so the sender learns where we are. */
		uint32_t d = c->rcv_nxt - seq;
		if (d > dlen) {
			dlen = 0;
			fin = false;
		} else {
			data += d;
			dlen -= d;
		}
		seq = c->rcv_nxt;
		if (dlen == 0 && !fin && (sg->dlen > 0 || (sg->flags & NET_TCP_FIN)))
			c->flags |= NC_ACK_NOW;
	}
	uint32_t space = s->conf.rcv_buf - c->rb_len;
	if (dlen > 0) {
		uint32_t right = c->rcv_nxt + space;
		if (!net_seq_lt(seq, right)) {
			dlen = 0;
			fin = false;
		} else if (net_seq_gt(seq + dlen, right)) {
			dlen = right - seq;
			fin = false;
		}
	}
	if (dlen > 0) {
		if (seq == c->rcv_nxt) {
			bool had_ooo = c->n_ooo > 0;
			rcv_inorder(c, data, dlen);
			if (c->flags & NC_DEAD)
				return;
			if (had_ooo || c->rcv_nxt != seq + dlen || ++c->rx_segs >= 2)
				c->flags |= NC_ACK_NOW;
			else
				c->flags |= NC_DELACK;
		} else {
			rcv_ooo(c, seq, data, dlen);
			c->flags |= NC_ACK_NOW;
			fin = false;
		}
	}

	if (fin && seq + dlen == c->rcv_nxt && !(c->flags & NC_FIN_RCVD)) {
		c->rcv_nxt++;
		c->flags |= NC_FIN_RCVD | NC_ACK_NOW;
		switch (c->state) {
		case NET_TCPS_ESTABLISHED:
			c->state = NET_TCPS_CLOSE_WAIT;
			if (app_reads(c))
				s->up->on_eof(s->app, c->ctx);
			break;
		case NET_TCPS_FIN_WAIT_1:
			if (net_seq_ge(c->snd_una, c->snd_max)) {
				send_ack(c);
				enter_time_wait(c);
				return;
			}
			c->state = NET_TCPS_CLOSING;
			break;
		case NET_TCPS_FIN_WAIT_2:
			send_ack(c);
			enter_time_wait(c);
			return;
		default:
			break;
		}
		if (c->flags & NC_DEAD)
			return;
	}
	tcp_output(c);
	if (c->flags & NC_DEAD)
		return;
	timer_update(c, advanced);
}

void net_tcp_input(struct net_stack *s, const struct net_ip *ip, const uint8_t *p, uint32_t len,
		   uint32_t rx_flags)
{
	s->st.tcp_rx++;
	if (unlikely(len < NET_TCP_HLEN)) {
		s->st.tcp_bad_hdr++;
		return;
	}
	const struct net_tcp *th = (const struct net_tcp *)p;
	uint32_t doff = (uint32_t)(th->off >> 4) * 4;
	if (unlikely(doff < NET_TCP_HLEN || doff > len)) {
		s->st.tcp_bad_hdr++;
		return;
	}
	if (!(rx_flags & NET_RX_L4_CSUM_OK)) {
		uint32_t sum = net_csum_pseudo(ip->src, ip->dst, NET_IP_PROTO_TCP, (uint16_t)len);
		if (unlikely(net_csum_fold(net_csum_add(sum, p, len)) != 0xffff)) {
			s->st.tcp_bad_csum++;
			return;
		}
	}
	uint32_t src = net_ntohl(ip->src);
	if (unlikely(src == 0 || src >= 0xe0000000u || th->sport == 0 || th->dport == 0 ||
		     ip->src == (s->conf.ipv4 | ~s->netmask))) {
		s->st.tcp_bad_hdr++;
		return;
	}
	struct seg sg = {.ws = -1};
	if (unlikely(!parse_opts(&sg, p + NET_TCP_HLEN, doff - NET_TCP_HLEN))) {
		s->st.tcp_bad_opts++;
		return;
	}
	sg.seq = net_ntohl(th->seq);
	sg.ack = net_ntohl(th->ack);
	sg.wnd = net_ntohs(th->win);
	sg.flags = th->flags;
	sg.data = p + doff;
	sg.dlen = len - doff;

	struct net_conn *c = conn_lookup(s, ip->src, th->sport, th->dport);
	if (c && c->state == NET_TCPS_TIME_WAIT) {
		if (!time_wait_input(c, &sg))
			return;
		c = NULL;
	}
	if (!c) {
		listen_input(s, ip, th, &sg);
		return;
	}
	conn_input(c, &sg);
}

/* ---- output ------------------------------------------------------------- */

/* Sends what cwnd, the peer's window and snd_buf allow; then FIN when the
 * app closed and everything before it went out; then any owed ACK. */
static void tcp_output(struct net_conn *c)
{
	struct net_stack *s = c->s;
	bool can_send = c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_CLOSE_WAIT ||
			c->state == NET_TCPS_FIN_WAIT_1 || c->state == NET_TCPS_CLOSING ||
			c->state == NET_TCPS_LAST_ACK;
	bool sent = false;
	uint32_t seg_max = c->mss - ((c->flags & NC_TS) ? TS_OPT_LEN : 0);
	bool sack_rec = can_send && (c->flags & (NC_SACK | NC_RECOVERY)) == (NC_SACK | NC_RECOVERY);
	/* Outside recovery, SACKed bytes have left the network too: new data
	 * may use the room they free (limited transmit by pipe, RFC 6675 5),
	 * which brings the further SACKs that reveal a loss in a small window. */
	bool use_pipe = sack_rec || (can_send && (c->flags & NC_SACK) && c->n_sacked > 0 &&
				     c->snd_nxt == c->snd_max);
	uint32_t pipe = 0, lost = 0;

	c->flags &= ~(uint32_t)NC_BLOCKED;
	if (use_pipe)
		pipe = sack_pipe(c, seg_max, &lost);
	if (sack_rec) {
		/* Lost ranges first, then new data, both within cwnd - pipe. */
		sent = sack_rtx(c, seg_max, lost, &pipe);
		c->snd_nxt = c->snd_max;
	}
	while (can_send) {
		uint32_t end = c->snd_una + c->sq_len;
		if (net_seq_lt(c->snd_nxt, c->snd_max))
			c->snd_nxt = skip_sacked(c, c->snd_nxt);
		if (net_seq_gt(c->snd_nxt, end) && !(c->flags & NC_FIN_SENT))
			c->snd_nxt = end;
		uint32_t avail = net_seq_lt(c->snd_nxt, end) ? end - c->snd_nxt : 0;
		if (avail == 0) {
			bool fin_due = (c->flags & NC_APP_CLOSE) && c->snd_nxt == end &&
				       (c->state == NET_TCPS_ESTABLISHED ||
					c->state == NET_TCPS_CLOSE_WAIT || (c->flags & NC_FIN_SENT));
			if (fin_due && (!(c->flags & NC_FIN_SENT) || net_seq_lt(c->snd_nxt, c->snd_max))) {
				xmit(c, c->snd_nxt, NET_TCP_ACK | NET_TCP_FIN, 0);
				if (!(c->flags & NC_FIN_SENT)) {
					c->flags |= NC_FIN_SENT;
					if (c->state == NET_TCPS_ESTABLISHED)
						c->state = NET_TCPS_FIN_WAIT_1;
					else if (c->state == NET_TCPS_CLOSE_WAIT)
						c->state = NET_TCPS_LAST_ACK;
				} else {
					s->st.tcp_retransmits++;
				}
				c->snd_nxt = end + 1;
				if (net_seq_gt(c->snd_nxt, c->snd_max))
					c->snd_max = c->snd_nxt;
				sent = true;
			}
			break;
		}
		uint32_t inflight = c->snd_nxt - c->snd_una;
		uint32_t wnd = umin(umin(c->snd_wnd, c->cwnd), s->conf.snd_buf);
		uint32_t room = wnd > inflight ? wnd - inflight : 0;
		if (use_pipe) {
			uint32_t w = umin(c->snd_wnd, s->conf.snd_buf);
			room = umin(c->cwnd > pipe ? c->cwnd - pipe : 0, w > inflight ? w - inflight : 0);
		}
		uint32_t len = umin(umin(avail, seg_max), room);
		if (net_seq_lt(c->snd_nxt, c->snd_max))
			len = next_sacked(c, c->snd_nxt, c->snd_nxt + len) - c->snd_nxt;
		/* Sender-side SWS avoidance (RFC 9293 3.8.6.2.1). */
		if (len == 0 || (len < seg_max && len < avail && inflight > 0 &&
				 len < c->max_snd_wnd / 2)) {
			c->flags |= NC_BLOCKED;
			break;
		}
		bool rtx = net_seq_lt(c->snd_nxt, c->snd_max);
		xmit(c, c->snd_nxt, NET_TCP_ACK | (len == avail ? NET_TCP_PSH : 0), len);
		if (rtx) {
			s->st.tcp_retransmits++;
		} else {
			s->st.tcp_bytes_out += len;
			if (!(c->flags & NC_RTT) && !c->backoff) {
				c->flags |= NC_RTT;
				c->rtt_seq = c->snd_nxt;
				c->rtt_start_ms = s->now_ms;
			}
		}
		c->snd_nxt += len;
		if (net_seq_gt(c->snd_nxt, c->snd_max))
			c->snd_max = c->snd_nxt;
		pipe += len;
		sent = true;
	}
	/* Nothing new to send: un-SACKed ranges below the highest SACK that
	 * are not yet called lost (RFC 6675 NextSeg rule 3). */
	if (sack_rec && unsent(c) == 0 && sack_rtx(c, seg_max, sack_high(c), &pipe))
		sent = true;
	if (c->flags & NC_ACK_NOW)
		send_ack(c);
	else if ((c->flags & NC_DELACK) && !c->ack_timer.armed)
		tw_arm(s->wheel, &c->ack_timer, s->now_ns + NET_TCP_DELACK_MS * MS);
	if (sent && c->snd_max != c->snd_una && !rtx_armed(c))
		rtx_arm(c);
	if (unsent(c) == 0 && (c->flags & NC_HAD_TX) && app_reads(c)) {
		c->flags &= ~(uint32_t)NC_HAD_TX;
		s->up->on_drained(s->app, c->ctx);
	}
}

/* ICMP fragmentation needed (RFC 1191): lower the connection's MSS. */
void net_tcp_pmtu(struct net_stack *s, const struct net_ip *inner, const uint8_t *l4,
		  uint32_t l4len, uint32_t mtu)
{
	(void)l4len;
	const struct net_tcp *th = (const struct net_tcp *)l4;
	struct net_conn *c = conn_lookup(s, inner->dst, th->dport, th->sport);
	if (!c || mtu < 576 || mtu - NET_IP_HLEN - NET_TCP_HLEN >= c->mss)
		return;
	uint32_t seq = net_ntohl(th->seq);
	if (net_seq_lt(seq, c->snd_una) || net_seq_ge(seq, c->snd_max))
		return;
	c->mss = (uint16_t)(mtu - NET_IP_HLEN - NET_TCP_HLEN);
}

/* ---- deferred work and the tp interface --------------------------------- */

uint32_t net_tcp_pending(struct net_stack *s)
{
	uint32_t n = 0;
	while (!list_empty(&s->resumeq)) {
		struct net_conn *c = list_entry(s->resumeq.next, struct net_conn, rq);
		list_del(&c->rq);
		c->flags &= ~(uint32_t)NC_RESUMEQ;
		n++;
		offer(c);
		if (!(c->flags & NC_DEAD))
			tcp_output(c);
	}
	while (!list_empty(&s->dead)) {
		struct net_conn *c = list_entry(s->dead.next, struct net_conn, dq);
		list_del(&c->dq);
		n++;
		if (c->flags & NC_APP) {
			c->flags &= ~(uint32_t)NC_APP;
			s->up->on_close(s->app, c->ctx);
			c->ctx = NULL;
		}
		if (c->flags & NC_DEAD)
			conn_release(c);
	}
	return n;
}

void net_tcp_init(struct net_stack *s)
{
	s->free_conn = 0;
	for (uint32_t i = s->conf.max_conns; i-- > 0;) {
		s->conns[i].hnext = s->free_conn;
		s->free_conn = i + 1;
	}
}

void net_tcp_destroy(struct net_stack *s)
{
	for (uint32_t i = 0; i < s->conf.max_conns; i++) {
		struct net_conn *c = &s->conns[i];
		if (c->s == s && c->state != NET_TCPS_CLOSED)
			conn_kill(c);
	}
	net_tcp_pending(s);
}

static inline struct net_conn *conn_of(struct tp_conn *tc)
{
	return (struct net_conn *)(void *)tc;
}

static int nt_poll(struct tp *t, int timeout_ms, int extra_fd)
{
	(void)timeout_ms;
	(void)extra_fd;
	struct net_stack *s = sluice_container_of(t, struct net_stack, tp);
	return (int)net_tcp_pending(s);
}

static bool conn_writable(const struct net_conn *c)
{
	return app_reads(c) &&
	       (c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_CLOSE_WAIT);
}

static uint8_t *nt_tx_reserve(struct tp_conn *tc, size_t min, size_t *avail)
{
	struct net_conn *c = conn_of(tc);
	if (unlikely(!conn_writable(c) || min > NET_CHUNK_DATA))
		return NULL;
	if (min == 0)
		min = 1;
	struct net_chunk *k = c->sq_tail;
	if (!k || NET_CHUNK_DATA - k->len < min) {
		k = c->s->free_chunks;
		if (unlikely(!k)) {
			c->s->st.tcp_tx_nobuf++;
			return NULL;
		}
		c->s->free_chunks = k->next;
		k->next = NULL;
		k->len = 0;
		if (c->sq_tail)
			c->sq_tail->next = k;
		else
			c->sq_head = k;
		c->sq_tail = k;
	}
	*avail = NET_CHUNK_DATA - k->len;
	return k->data + k->len;
}

static void nt_tx_commit(struct tp_conn *tc, size_t n)
{
	struct net_conn *c = conn_of(tc);
	if (unlikely(!conn_writable(c) || n == 0 || !c->sq_tail))
		return;
	if (n > NET_CHUNK_DATA - c->sq_tail->len)
		n = NET_CHUNK_DATA - c->sq_tail->len;
	c->sq_tail->len += (uint32_t)n;
	c->sq_len += (uint32_t)n;
	c->flags |= NC_HAD_TX;
	if (!(c->flags & NC_FLUSHQ)) {
		c->flags |= NC_FLUSHQ;
		list_add_tail(&c->s->flushq, &c->fq);
	}
}

static void nt_flush(struct tp *t)
{
	struct net_stack *s = sluice_container_of(t, struct net_stack, tp);
	while (!list_empty(&s->flushq)) {
		struct net_conn *c = list_entry(s->flushq.next, struct net_conn, fq);
		list_del(&c->fq);
		c->flags &= ~(uint32_t)NC_FLUSHQ;
		if (c->flags & NC_DEAD)
			continue;
		tcp_output(c);
		if (!(c->flags & NC_DEAD))
			timer_update(c, false);
	}
	net_tcp_pending(s);
}

static void nt_close(struct tp_conn *tc, bool abort)
{
	struct net_conn *c = conn_of(tc);
	if (c->flags & (NC_DEAD | NC_APP_CLOSE) || !(c->flags & NC_APP))
		return;
	if (abort) {
		conn_abort(c);
		return;
	}
	c->flags |= NC_APP_CLOSE;
	c->flags &= ~(uint32_t)NC_RX_FULL;
	/* Unread input is dropped, as a kernel socket does on close; so are
	 * out-of-order bytes (RFC 2018 lets a receiver renege on SACKed data). */
	rbuf_put(c);
	list_del(&c->rq);
	if (!(c->flags & NC_FLUSHQ)) {
		c->flags |= NC_FLUSHQ;
		list_add_tail(&c->s->flushq, &c->fq);
	}
}

static void nt_info(struct tp_conn *tc, struct tp_conn_info *out)
{
	const struct net_conn *c = conn_of(tc);
	memset(out, 0, sizeof(*out));
	if (c->flags & NC_DEAD)
		return;
	out->tx_queued = unsent(c);
	out->snd_wnd = c->snd_wnd;
	out->cwnd = c->cwnd;
	out->unacked = c->snd_max - c->snd_una;
	out->blocked = (c->flags & NC_BLOCKED) != 0;
}

static void nt_rx_resume(struct tp_conn *tc)
{
	struct net_conn *c = conn_of(tc);
	if (!app_reads(c))
		return;
	c->flags &= ~(uint32_t)NC_RX_FULL;
	if (!(c->flags & NC_RESUMEQ)) {
		c->flags |= NC_RESUMEQ;
		list_add_tail(&c->s->resumeq, &c->rq);
	}
}

static void nt_destroy(struct tp *t)
{
	if (t)
		net_stack_destroy(sluice_container_of(t, struct net_stack, tp));
}

const struct tp_ops net_tcp_ops = {
	.name = "dpdk",
	.refuse_by_reset = true,
	.poll = nt_poll,
	.tx_reserve = nt_tx_reserve,
	.tx_commit = nt_tx_commit,
	.flush = nt_flush,
	.close = nt_close,
	.info = nt_info,
	.rx_resume = nt_rx_resume,
	.destroy = nt_destroy,
};
