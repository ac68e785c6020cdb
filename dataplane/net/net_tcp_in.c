/*
 * TCP input: segment parsing and validation, the per-state input machine
 * (RFC 9293 3.10.7 with the RFC 5961 checks and PAWS), in-order and
 * out-of-order receive into the stash, TIME_WAIT, and ICMP's PMTU news.
 */
#include <string.h>

#include "net/net_csum.h"
#include "net/net_tcp_int.h"
#include "worker/timer_wheel.h"

/* Parses options into sg; false when their framing is broken (a length of
 * 0 or 1, or one that runs past the header). */
static bool tcp_in_parse_opts(struct tcp_seg *sg, const uint8_t *o, uint32_t olen)
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

/* Bytes from rcv_nxt to the end of the highest out-of-order range. */
static inline uint32_t tcp_in_ooo_extent(const struct net_conn *c)
{
	uint32_t hi = 0;
	for (uint32_t i = 0; i < c->n_ooo; i++)
		hi = tcp_max(hi, c->ooo[i].end - c->rcv_nxt);
	return hi;
}

void tcp_in_offer(struct net_conn *c)
{
	struct net_stack *s = c->s;
	if (!tcp_app_reads(c) || (c->flags & NC_RX_FULL) || c->rb_len == 0)
		return;
	uint32_t before = s->conf.rcv_buf - c->rb_len;
	size_t used = s->up->on_data(s->app, c->ctx, c->rbuf, c->rb_len);
	if (!tcp_app_reads(c) || !c->rbuf)
		return;
	if (used > c->rb_len)
		used = c->rb_len;
	uint32_t keep = c->rb_len - (uint32_t)used;
	if (used > 0)
		memmove(c->rbuf, c->rbuf + used, keep + tcp_in_ooo_extent(c));
	c->rb_len = keep;
	if (keep >= tcp_min(s->conf.rcv_buf, TP_RX_STASH_MAX))
		c->flags |= NC_RX_FULL;
	if (c->rb_len == 0 && c->n_ooo == 0)
		tcp_conn_rbuf_put(c);
	/* Tell the peer when a closed or small window opened by a lot. */
	uint32_t after = s->conf.rcv_buf - c->rb_len;
	if (after - before >= tcp_min(s->conf.rcv_buf / 2, 2u * c->mss) && before < 2u * c->mss)
		c->flags |= NC_ACK_NOW;
}

/* Moves rcv_nxt over out-of-order ranges the new data reached; their bytes
 * are already in place behind the stash. Without keep_bytes the app reads
 * no more, so the bytes are left where they are: only the ranges count. */
static void tcp_in_ooo_merge(struct net_conn *c, bool keep_bytes)
{
	bool moved = true;
	while (moved) {
		moved = false;
		for (uint32_t i = 0; i < c->n_ooo; i++) {
			struct net_range *r = &c->ooo[i];
			if (net_seq_gt(r->start, c->rcv_nxt))
				continue;
			if (net_seq_gt(r->end, c->rcv_nxt)) {
				if (keep_bytes)
					c->rb_len += r->end - c->rcv_nxt;
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
static void tcp_in_inorder(struct net_conn *c, const uint8_t *data, uint32_t len)
{
	struct net_stack *s = c->s;
	s->st.tcp_bytes_in += len;
	if (!tcp_app_reads(c)) {
		c->rcv_nxt += len;
		if (c->n_ooo)
			tcp_in_ooo_merge(c, false);
		if (c->rbuf && c->n_ooo == 0)
			tcp_conn_rbuf_put(c);
		return;
	}
	if (c->rb_len == 0 && c->n_ooo == 0 && !(c->flags & NC_RX_FULL)) {
		size_t used = s->up->on_data(s->app, c->ctx, data, len);
		if (used > len)
			used = len;
		if (!tcp_app_reads(c)) {
			c->rcv_nxt += len;
			return;
		}
		uint32_t rest = len - (uint32_t)used;
		if (rest > 0) {
			if (!tcp_conn_rbuf_get(c)) {
				c->rcv_nxt += (uint32_t)used;
				return;
			}
			memcpy(c->rbuf, data + used, rest);
			c->rb_len = rest;
			if (rest >= tcp_min(s->conf.rcv_buf, TP_RX_STASH_MAX))
				c->flags |= NC_RX_FULL;
		}
		c->rcv_nxt += len;
		return;
	}
	if (!tcp_conn_rbuf_get(c))
		return;
	memcpy(c->rbuf + c->rb_len, data, len);
	c->rb_len += len;
	c->rcv_nxt += len;
	tcp_in_ooo_merge(c, true);
	tcp_in_offer(c);
}

/* Out-of-order bytes: kept in place in the buffer when they fit in the
 * bounded range list, else dropped (the peer resends them). */
static void tcp_in_ooo(struct net_conn *c, uint32_t seq, const uint8_t *data, uint32_t len)
{
	struct net_stack *s = c->s;
	struct net_range r = {seq, seq + len};
	uint32_t merged = 0;
	for (uint32_t i = 0; i < c->n_ooo; i++)
		if (tcp_range_touch(&c->ooo[i], &r))
			merged++;
	if ((merged == 0 && c->n_ooo == NET_OOO_MAX) || !tcp_conn_rbuf_get(c)) {
		s->st.tcp_ooo_drops++;
		return;
	}
	s->st.tcp_ooo_segs++;
	memcpy(c->rbuf + c->rb_len + (seq - c->rcv_nxt), data, len);
	tcp_range_absorb(c->ooo, &c->n_ooo, &r);
	c->ooo_last = c->n_ooo;
	c->ooo[c->n_ooo++] = r;
}

/* TIME_WAIT: re-ACK a retransmitted FIN; a new SYN above the old
 * sequence space (or timestamps) reopens the tuple (RFC 6191 idea).
 * True when the TCB is gone and the segment goes to the listener. */
static bool tcp_in_time_wait(struct net_conn *c, const struct tcp_seg *sg)
{
	if (sg->flags & NET_TCP_RST)
		return false;
	if ((sg->flags & (NET_TCP_SYN | NET_TCP_ACK)) == NET_TCP_SYN) {
		bool newer = net_seq_gt(sg->seq, c->rcv_nxt) ||
			     ((c->flags & NC_TS) && sg->has_ts && net_seq_gt(sg->tsval, c->ts_recent));
		if (newer) {
			tcp_conn_kill(c);
			return true;
		}
		tcp_out_challenge(c);
		return false;
	}
	if (sg->flags & NET_TCP_FIN) {
		tcp_out_ack(c);
		tcp_timer_set(c, NT_TIMEWAIT, 2 * c->s->conf.msl_ms);
	}
	return false;
}

/* What comes before the ACK: a retransmitted SYN while half-open, PAWS,
 * sequence acceptability, RST and SYN (RFC 5961 3 and 4). True when the
 * segment goes on to its ACK. */
static bool tcp_in_check(struct net_conn *c, const struct tcp_seg *sg)
{
	struct net_stack *s = c->s;
	uint32_t seq = sg->seq;

	/* A retransmitted SYN while half-open: the same SYN-ACK again. */
	if (c->state == NET_TCPS_SYN_RCVD &&
	    (sg->flags & (NET_TCP_SYN | NET_TCP_ACK | NET_TCP_RST)) == NET_TCP_SYN &&
	    seq == c->irs) {
		tcp_syn_synack(c);
		return false;
	}

	/* PAWS (RFC 7323 5.3). */
	if ((c->flags & NC_TS) && sg->has_ts && !(sg->flags & NET_TCP_RST) &&
	    net_seq_lt(sg->tsval, c->ts_recent) &&
	    s->now_ms - c->ts_recent_ms < NET_TCP_PAWS_IDLE_MS) {
		s->st.tcp_paws_drops++;
		tcp_out_ack(c);
		return false;
	}

	/* Sequence acceptability. */
	uint32_t wnd = net_seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t slen = sg->dlen + !!(sg->flags & NET_TCP_FIN) + !!(sg->flags & NET_TCP_SYN);
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
			tcp_out_ack(c);
		return false;
	}

	/* RST (RFC 5961 section 3). */
	if (sg->flags & NET_TCP_RST) {
		s->st.tcp_rst_rx++;
		if (seq != c->rcv_nxt) {
			tcp_out_challenge(c);
			return false;
		}
		c->flags |= NC_RESET;
		tcp_conn_kill(c);
		return false;
	}

	/* SYN (RFC 5961 section 4). */
	if (sg->flags & NET_TCP_SYN) {
		if (c->state == NET_TCPS_SYN_RCVD && seq == c->irs)
			tcp_syn_synack(c);
		else
			tcp_out_challenge(c);
		return false;
	}
	return (sg->flags & NET_TCP_ACK) != 0;
}

/* Our FIN was ACKed: FIN_WAIT_2, or the end of CLOSING and LAST_ACK.
 * False when the connection left the synchronized states. */
static bool tcp_in_fin_acked(struct net_conn *c)
{
	if (c->state == NET_TCPS_FIN_WAIT_1) {
		c->state = NET_TCPS_FIN_WAIT_2;
		tcp_conn_detach(c);
	} else if (c->state == NET_TCPS_CLOSING) {
		tcp_conn_time_wait(c);
		return false;
	} else if (c->state == NET_TCPS_LAST_ACK) {
		tcp_conn_kill(c);
		return false;
	}
	return true;
}

/* The ACK field: completes a half-open handshake, validates (RFC 5961 5),
 * takes RTT samples, frees acknowledged bytes, drives loss recovery.
 * *advanced: snd_una moved. False when the segment ends here. */
static bool tcp_in_ack(struct net_conn *c, const struct tcp_seg *sg, bool *advanced)
{
	struct net_stack *s = c->s;

	if (c->state == NET_TCPS_SYN_RCVD) {
		if (sg->ack != c->iss + 1) {
			tcp_out_raw(s, c->raddr, c->rport, c->lport, sg->ack, 0, NET_TCP_RST, 0, NULL,
				    0);
			return false;
		}
		s->n_synrcvd--;
		c->state = NET_TCPS_ESTABLISHED;
		tcp_syn_established(c, sg);
		if (c->flags & NC_DEAD)
			return false;
	}

	if (net_seq_gt(sg->ack, c->snd_max) ||
	    net_seq_lt(sg->ack, c->snd_una - c->max_snd_wnd)) {
		tcp_out_challenge(c);
		return false;
	}

	uint32_t newly = ((c->flags & NC_SACK) && sg->nsack) ? tcp_sack_update(c, sg) : 0;

	*advanced = net_seq_gt(sg->ack, c->snd_una);
	if (*advanced) {
		uint32_t acked = sg->ack - c->snd_una;
		bool fin_acked = (c->flags & NC_FIN_SENT) && sg->ack == c->snd_una + c->sq_len + 1;
		/* An echoed timestamp times the very segment that was ACKed, a
		 * retransmission included, so it is sampled even while backed
		 * off (RFC 7323 4.1); cookie option bits may put TSecr ahead.
		 * Without one, the timed segment (Karn). */
		if ((c->flags & NC_TS) && sg->has_ts && sg->tsecr &&
		    net_seq_le(sg->tsecr, tcp_ts_now(c)))
			tcp_timer_rtt_sample(c, tcp_ts_now(c) - sg->tsecr);
		else if ((c->flags & NC_RTT) && net_seq_gt(sg->ack, c->rtt_seq))
			tcp_timer_rtt_sample(c, s->now_ms - c->rtt_start_ms);
		if ((c->flags & NC_RTT) && net_seq_gt(sg->ack, c->rtt_seq))
			c->flags &= ~(uint32_t)NC_RTT;
		tcp_conn_sq_consume(c, acked - fin_acked);
		c->snd_una = sg->ack;
		if (net_seq_lt(c->snd_nxt, c->snd_una))
			c->snd_nxt = c->snd_una;
		c->backoff = 0;
		c->retries = 0;
		c->flags &= ~(uint32_t)NC_TLP;
		tcp_sack_trim(c);
		tcp_loss_on_ack(c, acked);
		if (fin_acked && !tcp_in_fin_acked(c))
			return false;
	} else if (sg->ack == c->snd_una && c->snd_max != c->snd_una &&
		   ((c->flags & NC_SACK) ? newly > 0
					 : sg->dlen == 0 && !(sg->flags & NET_TCP_FIN) &&
						   (sg->wnd << c->snd_ws) == c->snd_wnd)) {
		/* With SACK, an ACK that SACKs new data is a duplicate whatever
		 * else it carries (RFC 6675 2): a peer that sends data or moves
		 * its window still reports the loss. */
		tcp_loss_dupack(c);
	}
	if (c->flags & NC_SACK)
		tcp_loss_sack_check(c, newly);
	return true;
}

/*
 * Window update (RFC 9293 3.10.7.4, SND.WL1/WL2). The window counts from
 * snd_una, so it is taken from an ACK at or above snd_una only (an older
 * one's would move the right edge past what the peer offered), and always
 * from one that advanced snd_una, as Linux does: an out-of-order segment
 * with a higher sequence number may hold SND.WL1, and the old window from
 * the new snd_una would again reach past the peer's offer.
 */
static void tcp_in_window(struct net_conn *c, const struct tcp_seg *sg, bool advanced)
{
	if (net_seq_lt(sg->ack, c->snd_una))
		return;
	if (advanced || net_seq_lt(c->snd_wl1, sg->seq) ||
	    (c->snd_wl1 == sg->seq && net_seq_le(c->snd_wl2, sg->ack))) {
		c->snd_wnd = sg->wnd << c->snd_ws;
		c->snd_wl1 = sg->seq;
		c->snd_wl2 = sg->ack;
		if (c->snd_wnd > c->max_snd_wnd)
			c->max_snd_wnd = c->snd_wnd;
		if (c->snd_wnd > 0 && c->tmode == NT_PERSIST) {
			c->backoff = 0;
			tcp_timer_stop(c);
		}
	}
}

/* The peer's FIN, in order: CLOSE_WAIT, CLOSING or TIME_WAIT. False when
 * the connection left the synchronized states. */
static bool tcp_in_fin(struct net_conn *c)
{
	struct net_stack *s = c->s;
	c->rcv_nxt++;
	c->flags |= NC_FIN_RCVD | NC_ACK_NOW;
	switch (c->state) {
	case NET_TCPS_ESTABLISHED:
		c->state = NET_TCPS_CLOSE_WAIT;
		if (tcp_app_reads(c))
			s->up->on_eof(s->app, c->ctx);
		break;
	case NET_TCPS_FIN_WAIT_1:
		if (net_seq_ge(c->snd_una, c->snd_max)) {
			tcp_out_ack(c);
			tcp_conn_time_wait(c);
			return false;
		}
		c->state = NET_TCPS_CLOSING;
		break;
	case NET_TCPS_FIN_WAIT_2:
		tcp_out_ack(c);
		tcp_conn_time_wait(c);
		return false;
	default:
		break;
	}
	return !(c->flags & NC_DEAD);
}

/* The segment's data and FIN, trimmed to what is new and fits the
 * buffer. False when the connection ended. */
static bool tcp_in_data(struct net_conn *c, const struct tcp_seg *sg)
{
	struct net_stack *s = c->s;
	uint32_t seq = sg->seq;
	uint32_t dlen = sg->dlen;
	const uint8_t *data = sg->data;
	bool fin = sg->flags & NET_TCP_FIN;

	if (c->state != NET_TCPS_ESTABLISHED && c->state != NET_TCPS_FIN_WAIT_1 &&
	    c->state != NET_TCPS_FIN_WAIT_2) {
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
			tcp_in_inorder(c, data, dlen);
			if (c->flags & NC_DEAD)
				return false;
			if (had_ooo || c->rcv_nxt != seq + dlen || ++c->rx_segs >= 2)
				c->flags |= NC_ACK_NOW;
			else
				c->flags |= NC_DELACK;
		} else {
			tcp_in_ooo(c, seq, data, dlen);
			c->flags |= NC_ACK_NOW;
			fin = false;
		}
	}
	if (fin && seq + dlen == c->rcv_nxt && !(c->flags & NC_FIN_RCVD))
		return tcp_in_fin(c);
	return true;
}

/*
 * Header prediction for the commonest segment of a server that streams: a
 * pure ACK (ACK alone, no data) at rcv_nxt that moves snd_una within what
 * is in flight, with the window unchanged, timestamps in order, no SACK
 * blocks either way and no recovery or persist timer. For such a segment
 * every check of the general path passes (PAWS, acceptability, RFC 5961),
 * the scoreboard and the loss machinery have nothing to do, the window
 * update stores the same window and no data or FIN is taken, so only what
 * changes is done here. ESTABLISHED only: no FIN of ours can be acked.
 * False when the segment does not qualify (nothing changed).
 */
static bool tcp_in_fast_ack(struct net_conn *c, const struct tcp_seg *sg)
{
	struct net_stack *s = c->s;
	uint32_t acked = sg->ack - c->snd_una;
	if (c->state != NET_TCPS_ESTABLISHED || sg->flags != NET_TCP_ACK || sg->dlen != 0 ||
	    sg->seq != c->rcv_nxt || acked == 0 || acked > c->snd_max - c->snd_una ||
	    (sg->wnd << c->snd_ws) != c->snd_wnd || sg->nsack != 0 || c->n_sacked != 0 ||
	    (c->flags & NC_RECOVERY) || c->tmode == NT_PERSIST)
		return false;
	bool ts = c->flags & NC_TS;
	if (ts && (!sg->has_ts || net_seq_lt(sg->tsval, c->ts_recent)))
		return false;

	s->st.tcp_fast_acks++;
	c->last_rx_ms = s->now_ms;
	c->ka_probes = 0;
	uint32_t ts_now = tcp_ts_now(c);
	if (ts && sg->tsecr && net_seq_le(sg->tsecr, ts_now))
		tcp_timer_rtt_sample(c, ts_now - sg->tsecr);
	else if ((c->flags & NC_RTT) && net_seq_gt(sg->ack, c->rtt_seq))
		tcp_timer_rtt_sample(c, s->now_ms - c->rtt_start_ms);
	if ((c->flags & NC_RTT) && net_seq_gt(sg->ack, c->rtt_seq))
		c->flags &= ~(uint32_t)NC_RTT;
	tcp_conn_sq_consume(c, acked);
	c->snd_una = sg->ack;
	if (net_seq_lt(c->snd_nxt, c->snd_una))
		c->snd_nxt = c->snd_una;
	c->backoff = 0;
	c->retries = 0;
	c->flags &= ~(uint32_t)NC_TLP;
	c->dupacks = 0;
	s->cc->on_ack(c, acked);
	c->snd_wl1 = sg->seq;
	c->snd_wl2 = sg->ack;
	if (ts && net_seq_le(sg->seq, c->last_ack_sent)) {
		c->ts_recent = sg->tsval;
		c->ts_recent_ms = s->now_ms;
	}
	tcp_out_send(c);
	if (!(c->flags & NC_DEAD))
		tcp_timer_update(c, true);
	return true;
}

void tcp_in_segment(struct net_conn *c, const struct tcp_seg *sg)
{
	struct net_stack *s = c->s;
	bool advanced = false;

	if (tcp_in_fast_ack(c, sg))
		return;
	if (!tcp_in_check(c, sg))
		return;
	c->last_rx_ms = s->now_ms;
	c->ka_probes = 0;
	if (!tcp_in_ack(c, sg, &advanced))
		return;
	tcp_in_window(c, sg, advanced);

	/* Timestamp to echo (RFC 7323 4.3). */
	if ((c->flags & NC_TS) && sg->has_ts && net_seq_ge(sg->tsval, c->ts_recent) &&
	    net_seq_le(sg->seq, c->last_ack_sent)) {
		c->ts_recent = sg->tsval;
		c->ts_recent_ms = s->now_ms;
	}

	if (!tcp_in_data(c, sg))
		return;
	tcp_out_send(c);
	if (c->flags & NC_DEAD)
		return;
	tcp_timer_update(c, advanced);
}

/* Validates a segment and parses it into *sg; false when it is dropped
 * (counted). */
static bool tcp_in_parse(struct net_stack *s, const struct net_ip *ip, const uint8_t *p,
			 uint32_t len, uint32_t rx_flags, struct tcp_seg *sg)
{
	if (unlikely(len < NET_TCP_HLEN)) {
		s->st.tcp_bad_hdr++;
		return false;
	}
	const struct net_tcp *th = (const struct net_tcp *)p;
	uint32_t doff = (uint32_t)(th->off >> 4) * 4;
	if (unlikely(doff < NET_TCP_HLEN || doff > len)) {
		s->st.tcp_bad_hdr++;
		return false;
	}
	if (!(rx_flags & NET_RX_L4_CSUM_OK)) {
		uint32_t sum = net_csum_pseudo(ip->src, ip->dst, NET_IP_PROTO_TCP, (uint16_t)len);
		sum = len == 32 ? net_csum_add32(sum, p) : net_csum_add(sum, p, len);
		if (unlikely(net_csum_fold(sum) != 0xffff)) {
			s->st.tcp_bad_csum++;
			return false;
		}
	}
	uint32_t src = net_ntohl(ip->src);
	if (unlikely(src == 0 || src >= 0xe0000000u || th->sport == 0 || th->dport == 0 ||
		     ip->src == (s->conf.ipv4 | ~s->netmask))) {
		s->st.tcp_bad_hdr++;
		return false;
	}
	*sg = (struct tcp_seg){.ws = -1};
	const uint8_t *o = p + NET_TCP_HLEN;
	uint32_t olen = doff - NET_TCP_HLEN;
	/* Every segment after the handshake from a peer with timestamps (Linux
	 * among them) has exactly NOP NOP TS: read it without the loop. */
	if (olen == TCP_TS_OPT_LEN && net_get32(o) == TCP_TS_OPT_WORD) {
		sg->has_ts = true;
		sg->tsval = net_get32(o + 4);
		sg->tsecr = net_get32(o + 8);
	} else if (unlikely(!tcp_in_parse_opts(sg, o, olen))) {
		s->st.tcp_bad_opts++;
		return false;
	}
	sg->seq = net_ntohl(th->seq);
	sg->ack = net_ntohl(th->ack);
	sg->wnd = net_ntohs(th->win);
	sg->flags = th->flags;
	sg->data = p + doff;
	sg->dlen = len - doff;
	return true;
}

/* A parsed segment to its TCB; with none here, to the stack of the group
 * that holds it (unless it came from there), else to the listener. */
static void tcp_in_dispatch(struct net_stack *s, const struct net_ip *ip, const uint8_t *p,
			    uint32_t len, const struct tcp_seg *sg, bool forwarded)
{
	const struct net_tcp *th = (const struct net_tcp *)p;
	struct net_conn *c = tcp_conn_lookup(s, ip->src, th->sport, th->dport);
	if (c && c->state == NET_TCPS_TIME_WAIT) {
		if (!tcp_in_time_wait(c, sg))
			return;
		c = NULL;
	}
	if (c) {
		tcp_in_segment(c, sg);
		return;
	}
	if (s->group && !forwarded) {
		int owner = tcp_group_owner(s, ip->src, th->sport, th->dport);
		if (owner >= 0 && (uint32_t)owner != s->group_id) {
			if (tcp_group_forward(s, owner, ip, p, len))
				s->st.tcp_forwarded++;
			else
				s->st.tcp_stray_drops++;
			return;
		}
	}
	tcp_syn_listen(s, ip, th, sg);
}

void net_tcp_input(struct net_stack *s, const struct net_ip *ip, const uint8_t *p, uint32_t len,
		   uint32_t rx_flags)
{
	struct tcp_seg sg;
	s->st.tcp_rx++;
	if (tcp_in_parse(s, ip, p, len, rx_flags, &sg))
		tcp_in_dispatch(s, ip, p, len, &sg, false);
}

void tcp_in_forwarded(struct net_stack *s, const struct net_ip *ip, const uint8_t *p,
		      uint32_t len)
{
	struct tcp_seg sg;
	if (tcp_in_parse(s, ip, p, len, NET_RX_L4_CSUM_OK, &sg))
		tcp_in_dispatch(s, ip, p, len, &sg, true);
}

/* ICMP fragmentation needed (RFC 1191): lower the connection's MSS. */
void net_tcp_pmtu(struct net_stack *s, const struct net_ip *inner, const uint8_t *l4,
		  uint32_t l4len, uint32_t mtu)
{
	(void)l4len;
	const struct net_tcp *th = (const struct net_tcp *)l4;
	struct net_conn *c = tcp_conn_lookup(s, inner->dst, th->dport, th->sport);
	if (!c || mtu < 576 || mtu - NET_IP_HLEN - NET_TCP_HLEN >= c->mss)
		return;
	uint32_t seq = net_ntohl(th->seq);
	if (net_seq_lt(seq, c->snd_una) || net_seq_ge(seq, c->snd_max))
		return;
	c->mss = (uint16_t)(mtu - NET_IP_HLEN - NET_TCP_HLEN);
}
