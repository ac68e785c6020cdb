/*
 * TCP output: segments with and without a TCB, ACKs, RSTs, the advertised
 * window, and tcp_out_send(), which sends what the windows allow.
 */
#include <string.h>

#include "net/net_tcp_int.h"
#include "worker/timer_wheel.h"

static uint32_t tcp_out_put_ts(uint8_t *o, uint32_t tsval, uint32_t tsecr)
{
	o[0] = NET_TCPOPT_NOP;
	o[1] = NET_TCPOPT_NOP;
	o[2] = NET_TCPOPT_TS;
	o[3] = NET_TCPOLEN_TS;
	net_put32(o + 4, tsval);
	net_put32(o + 8, tsecr);
	return TCP_TS_OPT_LEN;
}

/* SACK blocks of our out-of-order ranges at o, after olen option bytes, as
 * many as fit beside dlen data bytes in one MSS; the bytes written. */
static uint32_t tcp_out_put_sack(const struct net_conn *c, uint8_t *o, uint32_t olen,
				 uint32_t dlen)
{
	uint32_t room = c->mss > dlen + olen ? c->mss - dlen - olen : 0;
	room = tcp_min(room, NET_TCP_MAX_OPTLEN - olen);
	uint32_t nb = room >= 4 ? (room - 4) / 8 : 0;
	nb = tcp_min(nb, c->n_ooo);
	if (nb == 0)
		return 0;
	olen = 0;
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
	return olen;
}

/* The TCP header of a segment from lport to rport; options follow it. */
static void tcp_out_header(uint8_t *l4, uint16_t lport, uint16_t rport, uint32_t seq,
			   uint32_t ack, uint8_t flags, uint16_t win, uint32_t olen)
{
	struct net_tcp *th = (struct net_tcp *)l4;
	th->sport = lport;
	th->dport = rport;
	th->seq = net_htonl(seq);
	th->ack = net_htonl(ack);
	th->off = (uint8_t)(((NET_TCP_HLEN + olen) / 4) << 4);
	th->flags = flags;
	th->win = net_htons(win);
	th->urp = 0;
}

/* Counts the segment and hands it to IPv4 (hlen, psum: net_ip_send_tcp). */
static void tcp_out_ip(struct net_stack *s, void *pkt, uint8_t *l4, uint32_t l4len,
		       uint32_t raddr, uint8_t flags, uint32_t hlen, uint32_t psum)
{
	s->st.tcp_tx++;
	if (flags & NET_TCP_RST)
		s->st.tcp_rst_tx++;
	net_ip_send_tcp(s, pkt, l4, l4len, raddr, hlen, psum);
}

void tcp_out_raw(struct net_stack *s, uint32_t raddr, uint16_t rport, uint16_t lport,
		 uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win, const uint8_t *opts,
		 uint32_t olen)
{
	void *pkt;
	uint32_t l4len = NET_TCP_HLEN + olen;
	uint8_t *l4 = net_ip_alloc(s, l4len, &pkt);
	if (!l4)
		return;
	tcp_out_header(l4, lport, rport, seq, ack, flags, win, olen);
	if (olen)
		memcpy(l4 + NET_TCP_HLEN, opts, olen);
	tcp_out_ip(s, pkt, l4, l4len, raddr, flags, l4len, 0);
}

/* The window field for c, never moving the right edge left (RFC 9293
 * 3.8.6.2.2) and not advertising small increases (receiver SWS). */
static uint16_t tcp_out_window(struct net_conn *c)
{
	uint32_t space = c->s->conf.rcv_buf - c->rb_len;
	uint32_t adv = net_seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t sws = tcp_min(c->s->conf.rcv_buf / 2, c->mss);
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

void tcp_out_seg(struct net_conn *c, uint32_t seq, uint8_t flags, uint32_t dlen)
{
	struct net_stack *s = c->s;
	uint8_t sack[NET_TCP_MAX_OPTLEN];
	uint32_t tslen = (c->flags & NC_TS) ? TCP_TS_OPT_LEN : 0;
	uint32_t slen = 0;

	if ((c->flags & NC_SACK) && c->n_ooo > 0 && (flags & NET_TCP_ACK))
		slen = tcp_out_put_sack(c, sack, tslen, dlen);
	void *pkt;
	uint32_t olen = tslen + slen;
	uint32_t l4len = NET_TCP_HLEN + olen + dlen;
	uint8_t *l4 = net_ip_alloc(s, l4len, &pkt);
	if (!l4) {
		s->st.tcp_tx_nobuf++;
		return;
	}
	/* Options straight into the frame; the common segment has only the
	 * timestamps. */
	tcp_out_header(l4, c->lport, c->rport, seq, c->rcv_nxt, flags, tcp_out_window(c), olen);
	if (tslen)
		tcp_out_put_ts(l4 + NET_TCP_HLEN, tcp_ts_now(c), c->ts_recent);
	if (slen)
		memcpy(l4 + NET_TCP_HLEN + tslen, sack, slen);
	uint32_t hlen = l4len, psum = 0;
	if (dlen) {
		tcp_conn_sq_copy(c, seq - c->snd_una, l4 + NET_TCP_HLEN + olen, dlen);
		/* A segment that reaches into the summed run ends it, so the
		 * run never outlives its bytes' first transmission; the
		 * segment of exactly those bytes takes its sum. */
		if (c->sum_len && net_seq_gt(seq + dlen, c->sum_seq)) {
			if (seq == c->sum_seq && dlen == c->sum_len) {
				hlen = NET_TCP_HLEN + olen;
				psum = c->sum;
			}
			c->sum_len = 0;
		}
	}
	if (flags & NET_TCP_ACK) {
		c->last_ack_sent = c->rcv_nxt;
		c->flags &= ~(uint32_t)(NC_DELACK | NC_ACK_NOW);
		c->rx_segs = 0;
		if (c->ack_timer.armed)
			tw_cancel(s->wheel, &c->ack_timer);
	}
	tcp_out_ip(s, pkt, l4, l4len, c->raddr, flags, hlen, psum);
}

void tcp_out_ack(struct net_conn *c)
{
	tcp_out_seg(c, c->snd_nxt, NET_TCP_ACK, 0);
}

void tcp_out_challenge(struct net_conn *c)
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
	tcp_out_ack(c);
}

void tcp_out_rst_reply(struct net_stack *s, const struct net_ip *ip, const struct net_tcp *th,
		       const struct tcp_seg *sg)
{
	if (sg->flags & NET_TCP_RST)
		return;
	if (sg->flags & NET_TCP_ACK) {
		tcp_out_raw(s, ip->src, th->sport, th->dport, sg->ack, 0, NET_TCP_RST, 0, NULL, 0);
	} else {
		uint32_t len = sg->dlen + !!(sg->flags & NET_TCP_SYN) + !!(sg->flags & NET_TCP_FIN);
		tcp_out_raw(s, ip->src, th->sport, th->dport, 0, sg->seq + len,
			    NET_TCP_RST | NET_TCP_ACK, 0, NULL, 0);
	}
}

uint32_t tcp_out_resend(struct net_conn *c, uint32_t seq)
{
	uint32_t end = c->snd_una + c->sq_len;
	if (net_seq_ge(seq, end)) {
		if ((c->flags & NC_FIN_SENT) && seq == end) {
			tcp_out_seg(c, seq, NET_TCP_ACK | NET_TCP_FIN, 0);
			c->s->st.tcp_retransmits++;
			return 1;
		}
		return 0;
	}
	/* Only what went out before: queued bytes beyond snd_max would pass
	 * the peer's window, and its ACK of them, above snd_max, would be
	 * refused (RFC 5961 5). */
	uint32_t sent = (c->flags & NC_FIN_SENT) ? end : c->snd_max;
	if (!net_seq_lt(seq, sent))
		return 0;
	uint32_t len = tcp_min(sent - seq, tcp_seg_max(c));
	len = tcp_sack_next(c, seq, seq + len) - seq;
	tcp_out_seg(c, seq, NET_TCP_ACK, len);
	c->flags &= ~(uint32_t)NC_RTT;
	c->s->st.tcp_retransmits++;
	return len;
}

void tcp_out_abort(struct net_conn *c)
{
	if (c->state != NET_TCPS_CLOSED && c->state != NET_TCPS_SYN_RCVD &&
	    c->state != NET_TCPS_TIME_WAIT)
		tcp_out_seg(c, c->snd_nxt, NET_TCP_RST | NET_TCP_ACK, 0);
	c->flags |= NC_RESET;
	tcp_conn_kill(c);
}

/* With nothing left to send below it: our FIN when the app closed, first
 * sent or, after going back to snd_una, again. True when it went out. */
static bool tcp_out_fin(struct net_conn *c, uint32_t end)
{
	struct net_stack *s = c->s;
	bool fin_due = (c->flags & NC_APP_CLOSE) && c->snd_nxt == end &&
		       (c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_CLOSE_WAIT ||
			(c->flags & NC_FIN_SENT));
	if (!fin_due || ((c->flags & NC_FIN_SENT) && !net_seq_lt(c->snd_nxt, c->snd_max)))
		return false;
	tcp_out_seg(c, c->snd_nxt, NET_TCP_ACK | NET_TCP_FIN, 0);
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
	return true;
}

/* The app hears that everything it queued went out. */
static void tcp_out_drained(struct net_conn *c)
{
	if (tcp_unsent(c) == 0 && (c->flags & NC_HAD_TX) && tcp_app_reads(c)) {
		c->flags &= ~(uint32_t)NC_HAD_TX;
		c->s->up->on_drained(c->s->app, c->ctx);
	}
}

/* len bytes from snd_nxt out, PSH when they are all there is, and the
 * sequence space, the counters and the RTT sample that go with them. */
static inline void tcp_out_data(struct net_conn *c, uint32_t len, uint32_t avail)
{
	struct net_stack *s = c->s;
	bool rtx = net_seq_lt(c->snd_nxt, c->snd_max);
	tcp_out_seg(c, c->snd_nxt, NET_TCP_ACK | (len == avail ? NET_TCP_PSH : 0), len);
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
}

/* What tcp_out_send() does after its segments: the ACK still owed (when a
 * segment could not be sent), the retransmission timer, the app's drain. */
static inline void tcp_out_sent(struct net_conn *c, bool sent)
{
	if (c->flags & NC_ACK_NOW)
		tcp_out_ack(c);
	else if (c->flags & NC_DELACK)
		tcp_timer_delack(c);
	if (sent && c->snd_max != c->snd_una && !tcp_timer_rtx_armed(c))
		tcp_timer_rtx_arm(c);
	tcp_out_drained(c);
}

void tcp_out_send(struct net_conn *c)
{
	struct net_stack *s = c->s;
	/* The common call from ACK input: everything queued is out, nothing to
	 * resend, no FIN to come, no ACK owed, no recovery. The loop below
	 * would find nothing to do either. */
	if (!(c->flags & (NC_RECOVERY | NC_APP_CLOSE | NC_ACK_NOW | NC_DELACK)) &&
	    c->snd_nxt == c->snd_max && c->snd_nxt == c->snd_una + c->sq_len) {
		c->flags &= ~(uint32_t)NC_BLOCKED;
		tcp_out_drained(c);
		return;
	}
	/* The common call from a flush: new data that fits one segment and
	 * both windows, in ESTABLISHED, with nothing to resend, no FIN to
	 * come, no recovery and no SACKed bytes. The loop below would send it
	 * as this one segment and stop. */
	uint32_t end = c->snd_una + c->sq_len;
	if (!(c->flags & (NC_RECOVERY | NC_APP_CLOSE)) && c->state == NET_TCPS_ESTABLISHED &&
	    c->snd_nxt == c->snd_max && net_seq_lt(c->snd_nxt, end) && c->n_sacked == 0) {
		uint32_t len = end - c->snd_nxt;
		uint32_t wnd = tcp_min(tcp_min(c->snd_wnd, c->cwnd), s->conf.snd_buf);
		if (len <= tcp_seg_max(c) && c->snd_nxt - c->snd_una + len <= wnd) {
			c->flags &= ~(uint32_t)NC_BLOCKED;
			tcp_out_data(c, len, len);
			tcp_out_sent(c, true);
			return;
		}
	}
	bool can_send = c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_CLOSE_WAIT ||
			c->state == NET_TCPS_FIN_WAIT_1 || c->state == NET_TCPS_CLOSING ||
			c->state == NET_TCPS_LAST_ACK;
	bool sent = false;
	uint32_t seg_max = tcp_seg_max(c);
	bool sack_rec = can_send && (c->flags & (NC_SACK | NC_RECOVERY)) == (NC_SACK | NC_RECOVERY);
	/* Outside recovery, SACKed bytes have left the network too: new data
	 * may use the room they free (limited transmit by pipe, RFC 6675 5),
	 * which brings the further SACKs that reveal a loss in a small window. */
	bool use_pipe = sack_rec || (can_send && (c->flags & NC_SACK) && c->n_sacked > 0 &&
				     c->snd_nxt == c->snd_max);
	uint32_t pipe = 0, lost = 0;

	c->flags &= ~(uint32_t)NC_BLOCKED;
	if (use_pipe)
		pipe = tcp_sack_pipe(c, seg_max, &lost);
	if (sack_rec) {
		/* Lost ranges first, then new data, both within cwnd - pipe. */
		sent = tcp_loss_resend(c, seg_max, lost, &pipe);
		c->snd_nxt = c->snd_max;
	}
	while (can_send) {
		end = c->snd_una + c->sq_len;
		if (net_seq_lt(c->snd_nxt, c->snd_max))
			c->snd_nxt = tcp_sack_skip(c, c->snd_nxt);
		if (net_seq_gt(c->snd_nxt, end) && !(c->flags & NC_FIN_SENT))
			c->snd_nxt = end;
		uint32_t avail = net_seq_lt(c->snd_nxt, end) ? end - c->snd_nxt : 0;
		if (avail == 0) {
			if (tcp_out_fin(c, end))
				sent = true;
			break;
		}
		uint32_t inflight = c->snd_nxt - c->snd_una;
		uint32_t wnd = tcp_min(tcp_min(c->snd_wnd, c->cwnd), s->conf.snd_buf);
		uint32_t room = wnd > inflight ? wnd - inflight : 0;
		if (use_pipe) {
			uint32_t w = tcp_min(c->snd_wnd, s->conf.snd_buf);
			room = tcp_min(c->cwnd > pipe ? c->cwnd - pipe : 0,
				       w > inflight ? w - inflight : 0);
		}
		uint32_t len = tcp_min(tcp_min(avail, seg_max), room);
		if (net_seq_lt(c->snd_nxt, c->snd_max))
			len = tcp_sack_next(c, c->snd_nxt, c->snd_nxt + len) - c->snd_nxt;
		/* Sender-side SWS avoidance (RFC 9293 3.8.6.2.1). */
		if (len == 0 || (len < seg_max && len < avail && inflight > 0 &&
				 len < c->max_snd_wnd / 2)) {
			c->flags |= NC_BLOCKED;
			break;
		}
		tcp_out_data(c, len, avail);
		pipe += len;
		sent = true;
	}
	/* Nothing new to send: un-SACKed ranges below the highest SACK that
	 * are not yet called lost (RFC 6675 NextSeg rule 3). */
	if (sack_rec && tcp_unsent(c) == 0 && tcp_loss_resend(c, seg_max, tcp_sack_high(c), &pipe))
		sent = true;
	tcp_out_sent(c, sent);
}
