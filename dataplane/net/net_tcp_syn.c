/*
 * TCP connection establishment: the listening ports, the ISN (RFC 6528),
 * SYN cookies, SYN-ACK options and the move to ESTABLISHED.
 */
#include <sodium.h>
#include <string.h>

#include "net/net_tcp_int.h"
#include "worker/timer_wheel.h"

static const uint16_t cookie_mss[8] = {536, 1200, 1360, 1400, 1440, 1460, 4312, 8960};

/* SipHash-2-4 of the 4-tuple and x, y under a 16-byte key. */
static uint64_t tcp_syn_hash(const struct net_stack *s, const uint8_t *key, uint32_t raddr,
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

static uint32_t tcp_syn_isn(const struct net_stack *s, uint32_t raddr, uint16_t rport,
			    uint16_t lport)
{
	uint64_t h = tcp_syn_hash(s, s->conf.secret, raddr, rport, lport, 0, 0);
	return (uint32_t)h + (uint32_t)(s->now_ns / 4000u);
}

/* The timestamp offset of a 4-tuple (RFC 7323 7.1): TSval no longer tells
 * the stack's uptime, and since it is a function of the tuple and the
 * secret, every incarnation of a tuple (and every worker) gets the same
 * one, so our TSvals never go back for a peer's PAWS or TIME_WAIT. */
static uint32_t tcp_syn_ts_off(const struct net_stack *s, uint32_t raddr, uint16_t rport,
			       uint16_t lport)
{
	return (uint32_t)tcp_syn_hash(s, s->conf.secret, raddr, rport, lport, 0x54534f46u, 0);
}

static uint32_t tcp_syn_cookie_make(const struct net_stack *s, uint32_t raddr, uint16_t rport,
				    uint16_t lport, uint32_t peer_isn, uint32_t t,
				    uint32_t mssidx)
{
	uint64_t h = tcp_syn_hash(s, s->conf.secret + 16, raddr, rport, lport, peer_isn, t);
	return (t & 0x1fu) << 27 | (mssidx & 7u) << 24 | ((uint32_t)h & 0xffffffu);
}

/* The MSS index of a valid cookie, or -1. */
static int tcp_syn_cookie_check(const struct net_stack *s, uint32_t raddr, uint16_t rport,
				uint16_t lport, uint32_t peer_isn, uint32_t cookie)
{
	uint32_t now_t = s->now_ms / NET_TCP_COOKIE_PERIOD_MS;
	for (uint32_t back = 0; back < 2 && back <= now_t; back++) {
		uint32_t t = now_t - back;
		if ((cookie >> 27) != (t & 0x1fu))
			continue;
		uint32_t idx = (cookie >> 24) & 7u;
		if (tcp_syn_cookie_make(s, raddr, rport, lport, peer_isn, t, idx) == cookie)
			return (int)idx;
	}
	return -1;
}

/* Our window shift: the smallest that fits rcv_buf in 16 bits. */
static uint8_t tcp_syn_rcv_ws(const struct net_stack *s)
{
	uint8_t ws = 0;
	while (ws < NET_TCP_MAX_WS && (s->conf.rcv_buf >> ws) > 0xffff)
		ws++;
	return ws;
}

/* SYN-ACK options: MSS, SACK-permitted, timestamps, window scale. */
static uint32_t tcp_syn_put_opts(uint8_t *o, uint16_t mss, bool sack, bool ts, uint32_t tsval,
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

void tcp_syn_synack(struct net_conn *c)
{
	struct net_stack *s = c->s;
	uint8_t o[NET_TCP_MAX_OPTLEN];
	uint32_t olen = tcp_syn_put_opts(o, s->mss_local, c->flags & NC_SACK, c->flags & NC_TS,
					 tcp_ts_now(c), c->ts_recent,
					 (c->flags & NC_WS) ? c->rcv_ws : -1);
	c->rcv_adv = c->rcv_nxt + tcp_min(s->conf.rcv_buf, 0xffff);
	c->last_ack_sent = c->rcv_nxt;
	tcp_out_raw(s, c->raddr, c->rport, c->lport, c->iss, c->rcv_nxt, NET_TCP_SYN | NET_TCP_ACK,
		    (uint16_t)tcp_min(s->conf.rcv_buf, 0xffff), o, olen);
}

void tcp_syn_established(struct net_conn *c, const struct tcp_seg *sg)
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
	s->cc->init(c);
	c->backoff = 0;
	c->retries = 0;
	c->last_rx_ms = s->now_ms;
	tcp_timer_stop(c);
	s->st.tcp_accepted++;
	struct tp_peer peer = {
		.ipv4 = c->raddr, .port = net_ntohs(c->rport), .local_port = net_ntohs(c->lport),
	};
	/* NC_APP is set while on_open runs so the app may already send. */
	c->flags |= NC_APP;
	void *ctx = s->up->on_open(s->app, (struct tp_conn *)c, &peer);
	if (!ctx) {
		c->flags &= ~(uint32_t)NC_APP;
		s->st.tcp_refused++;
		tcp_out_abort(c);
		return;
	}
	c->ctx = ctx;
}

/* Negotiated options of a SYN into a new TCB. */
static void tcp_syn_options(struct net_conn *c, const struct tcp_seg *sg)
{
	struct net_stack *s = c->s;
	uint32_t mss = sg->has_mss ? sg->mss : NET_TCP_DEFAULT_MSS;
	c->mss = (uint16_t)tcp_max(tcp_min(mss, s->mss_local), 88u);
	if (sg->ws >= 0) {
		c->flags |= NC_WS;
		c->snd_ws = (uint8_t)sg->ws;
		c->rcv_ws = tcp_syn_rcv_ws(s);
	}
	if (sg->sack_perm)
		c->flags |= NC_SACK;
	if (sg->has_ts) {
		c->flags |= NC_TS;
		c->ts_recent = sg->tsval;
		c->ts_recent_ms = s->now_ms;
		c->ts_off = tcp_syn_ts_off(s, c->raddr, c->rport, c->lport);
	}
}

/* A segment for a listening port that matches no connection and no
 * cookie. Alone on the port it is reset; with shared_port the connection
 * may live on another stack that missed this frame (its peer will send it
 * again), so a RST here would kill a healthy connection. */
static void tcp_syn_stray(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
			  const struct tcp_seg *sg)
{
	if (s->conf.shared_port) {
		s->st.tcp_stray_drops++;
		return;
	}
	tcp_out_rst_reply(s, ip, th, sg);
}

/* An ACK for no TCB: a valid cookie creates an ESTABLISHED TCB and its
 * segment is processed at once. */
static void tcp_syn_cookie_ack(struct net_stack *s, const struct net_ip *ip,
			       const struct net_tcp *th, const struct tcp_seg *sg)
{
	uint32_t iss = sg->ack - 1, irs = sg->seq - 1;
	int idx = s->conf.syn_cookies
			  ? tcp_syn_cookie_check(s, ip->src, th->sport, th->dport, irs, iss)
			  : -1;
	if (idx < 0) {
		if (s->conf.syn_cookies)
			s->st.tcp_cookies_bad++;
		tcp_syn_stray(s, ip, th, sg);
		return;
	}
	struct net_conn *c = tcp_conn_new(s, ip->src, th->sport, th->dport);
	if (!c)
		return;
	s->st.tcp_cookies_ok++;
	struct tcp_seg syn = {.ws = -1, .has_mss = true, .mss = cookie_mss[idx]};
	/* Options travelled in the low bits of our timestamp. */
	if (sg->has_ts && (sg->tsecr & 0x20u)) {
		syn.has_ts = true;
		syn.tsval = sg->tsval;
		syn.sack_perm = (sg->tsecr & 0x10u) != 0;
		if (sg->tsecr & 0x40u)
			syn.ws = (int8_t)(sg->tsecr & 0x0fu);
	}
	tcp_syn_options(c, &syn);
	c->iss = iss;
	c->irs = irs;
	c->rcv_nxt = sg->seq;
	c->rcv_adv = c->rcv_nxt + (sg->wnd ? tcp_min(s->conf.rcv_buf, 0xffff) : 0);
	c->last_ack_sent = c->rcv_nxt;
	c->state = NET_TCPS_SYN_RCVD;
	tcp_syn_established(c, sg);
	if (!(c->flags & NC_DEAD))
		tcp_in_segment(c, sg);
}

/* SYN cookie: no state until the ACK comes back. */
static void tcp_syn_cookie_send(struct net_stack *s, const struct net_ip *ip,
				const struct net_tcp *th, const struct tcp_seg *sg)
{
	uint32_t mss = sg->has_mss ? sg->mss : NET_TCP_DEFAULT_MSS;
	mss = tcp_min(mss, s->mss_local);
	uint32_t idx = 0;
	for (uint32_t i = 0; i < 8; i++)
		if (cookie_mss[i] <= mss)
			idx = i;
	uint32_t t = s->now_ms / NET_TCP_COOKIE_PERIOD_MS;
	uint32_t iss = tcp_syn_cookie_make(s, ip->src, th->sport, th->dport, sg->seq, t, idx);
	uint8_t ws = tcp_syn_rcv_ws(s);
	uint32_t ts_now = s->now_ms + tcp_syn_ts_off(s, ip->src, th->sport, th->dport);
	uint32_t tsval = (ts_now & ~0x7fu) | 0x20u;
	if (sg->sack_perm)
		tsval |= 0x10u;
	/* The peer's shift: ours is recomputed from rcv_buf on the ACK. */
	if (sg->ws >= 0)
		tsval |= 0x40u | (uint32_t)sg->ws;
	/* Never ahead of the clock: our next segments carry TSval = now, and
	 * a peer's PAWS drops any below the SYN-ACK's (RFC 7323 5.3), which
	 * left the first answer of a cookie connection to the RTO. */
	if (net_seq_gt(tsval, ts_now))
		tsval -= 0x80u;
	uint8_t o[NET_TCP_MAX_OPTLEN];
	uint32_t olen = tcp_syn_put_opts(o, s->mss_local, sg->has_ts && sg->sack_perm, sg->has_ts,
					 tsval, sg->tsval, (sg->has_ts && sg->ws >= 0) ? ws : -1);
	s->st.tcp_cookies_sent++;
	tcp_out_raw(s, ip->src, th->sport, th->dport, iss, sg->seq + 1, NET_TCP_SYN | NET_TCP_ACK,
		    (uint16_t)tcp_min(s->conf.rcv_buf, 0xffff), o, olen);
}

void tcp_syn_listen(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
		    const struct tcp_seg *sg)
{
	bool listening = false;
	for (uint32_t i = 0; i < NET_MAX_LISTEN && s->conf.listen_ports[i]; i++)
		if (net_htons(s->conf.listen_ports[i]) == th->dport)
			listening = true;
	if (!listening) {
		s->st.tcp_no_port++;
		tcp_out_rst_reply(s, ip, th, sg);
		return;
	}
	if (sg->flags & NET_TCP_RST)
		return;
	if ((sg->flags & (NET_TCP_SYN | NET_TCP_ACK)) == NET_TCP_ACK) {
		tcp_syn_cookie_ack(s, ip, th, sg);
		return;
	}
	if ((sg->flags & (NET_TCP_SYN | NET_TCP_ACK | NET_TCP_FIN)) != NET_TCP_SYN) {
		tcp_syn_stray(s, ip, th, sg);
		return;
	}
	s->st.tcp_syn_rx++;
	if (s->n_synrcvd < s->conf.syn_backlog && !(s->conf.shared_port && s->conf.syn_cookies)) {
		struct net_conn *c = tcp_conn_new(s, ip->src, th->sport, th->dport);
		if (c) {
			tcp_syn_options(c, sg);
			c->state = NET_TCPS_SYN_RCVD;
			s->n_synrcvd++;
			c->irs = sg->seq;
			c->rcv_nxt = sg->seq + 1;
			c->iss = tcp_syn_isn(s, ip->src, th->sport, th->dport);
			c->snd_una = c->iss;
			c->snd_nxt = c->snd_max = c->iss + 1;
			tcp_syn_synack(c);
			tcp_timer_set(c, NT_SYNACK, tcp_timer_rto_cur(c));
			return;
		}
	}
	if (s->conf.syn_cookies)
		tcp_syn_cookie_send(s, ip, th, sg);
}
