/*
 * Loss detection and recovery, the same for every congestion-control
 * algorithm (which it consults through s->cc): with SACK, RFC 6675 over the
 * scoreboard plus two ideas of RACK (RFC 8985); without, NewReno fast
 * recovery (RFC 5681 3.2, RFC 6582). The RTO itself is net_tcp_timer.c.
 */
#include "net/net_tcp_int.h"

/* Resends snd_una and starts judging that resend by what is sent after it. */
static void tcp_loss_resend_una(struct net_conn *c)
{
	c->s->st.tcp_fast_retransmits++;
	c->rtx_hi = c->snd_una + tcp_out_resend(c, c->snd_una);
	c->rtx_mark = c->snd_max;
}

/* Fast retransmit: lower the window, remember the recovery point, resend
 * snd_una. Without SACK cwnd is inflated by the three duplicates (RFC
 * 5681); SACK recovery counts the pipe instead (RFC 6675). */
static void tcp_loss_enter(struct net_conn *c)
{
	/* After an RTO (snd_una below recover) cwnd was already collapsed:
	 * this is a loss among the retransmissions, not a new congestion
	 * event, so cwnd and ssthresh stay. */
	if (net_seq_ge(c->snd_una, c->recover)) {
		c->s->cc->enter_recovery(c);
		if (!(c->flags & NC_SACK))
			c->cwnd += 3u * c->mss;
	}
	c->recover = c->snd_max;
	c->flags |= NC_RECOVERY;
	c->s->st.tcp_recoveries++;
	tcp_loss_resend_una(c);
}

void tcp_loss_on_ack(struct net_conn *c, uint32_t acked)
{
	if (!(c->flags & NC_RECOVERY)) {
		c->dupacks = 0;
		c->s->cc->on_ack(c, acked);
		return;
	}
	if (net_seq_ge(c->snd_una, c->recover)) {
		/* Full ACK (RFC 6582 3.2 step 3): with SACK the pipe rule keeps
		 * bursts in check; NewReno recovery takes min(cwnd,
		 * max(flight, MSS) + MSS). Never below two segments: with one,
		 * a single loss can only end in an RTO. */
		c->flags &= ~(uint32_t)NC_RECOVERY;
		c->s->cc->exit_recovery(c);
		if (!(c->flags & NC_SACK))
			c->cwnd = tcp_min(c->cwnd, tcp_max(c->snd_max - c->snd_una, c->mss) + c->mss);
		c->dupacks = 0;
		return;
	}
	/* Partial ACK. With SACK, tcp_out_send resends what the scoreboard
	 * calls lost as pipe allows (RFC 6675); NewReno resends the next hole
	 * and deflates by what was ACKed (RFC 6582). */
	if (c->flags & NC_SACK) {
		if (net_seq_lt(c->rtx_hi, c->snd_una))
			c->rtx_hi = c->snd_una;
		/* The new snd_una was resent at some point before now: judge
		 * its resend only by what is sent from here on. */
		c->rtx_mark = c->snd_max;
		return;
	}
	uint32_t n = tcp_out_resend(c, c->snd_una);
	if (net_seq_lt(c->rtx_hi, c->snd_una + n))
		c->rtx_hi = c->snd_una + n;
	c->cwnd = c->cwnd > acked ? c->cwnd - acked : 0;
	c->cwnd += c->mss;
}

void tcp_loss_dupack(struct net_conn *c)
{
	c->s->st.tcp_dup_acks++;
	if (c->dupacks < 255)
		c->dupacks++;
	if (c->flags & NC_RECOVERY) {
		if (!(c->flags & NC_SACK))
			c->cwnd += c->mss;
		return;
	}
	if ((c->flags & NC_SACK) || c->dupacks != 3 || !net_seq_gt(c->snd_una, c->recover))
		return;
	tcp_loss_enter(c);
}

void tcp_loss_sack_check(struct net_conn *c, uint32_t newly)
{
	uint32_t seg = tcp_seg_max(c);
	if (!(c->flags & NC_RECOVERY)) {
		/* Duplicates of go-back-N resends carry no new SACK information,
		 * so once the resends after an RTO are out (snd_nxt back at
		 * snd_max) a hole the scoreboard calls lost is a lost resend. */
		if (c->snd_max == c->snd_una ||
		    !(net_seq_ge(c->snd_una, c->recover) || c->snd_nxt == c->snd_max))
			return;
		/* Recovery starts on the third duplicate or as soon as the
		 * scoreboard calls snd_una lost (RFC 6675 5 step 2), whichever
		 * ACK it is: a cumulative ACK that leaves a hole counts too.
		 * A SACK for the tail loss probe with snd_una still missing
		 * also does: snd_una went out at least a probe timeout (2 SRTT)
		 * before the probe, which is RACK's test for lost (RFC 8985
		 * 6.2). */
		uint32_t lost;
		tcp_sack_pipe(c, seg, &lost);
		if (c->dupacks >= 3 || net_seq_gt(lost, c->snd_una) ||
		    (newly > 0 && (c->flags & NC_TLP)))
			tcp_loss_enter(c);
		return;
	}
	/* In recovery: when more than two segments' worth of data sent after
	 * snd_una was last resent has been SACKed while snd_una stays, that
	 * resend was lost too (the idea of RACK on the scoreboard): resend it
	 * and walk the holes again now rather than at the RTO. */
	if (newly > 0 && tcp_sack_above(c, c->rtx_mark) > 2u * seg)
		tcp_loss_resend_una(c);
}

bool tcp_loss_resend(struct net_conn *c, uint32_t seg, uint32_t limit, uint32_t *pipe)
{
	bool sent = false;
	while (*pipe + seg <= c->cwnd) {
		uint32_t from = net_seq_gt(c->rtx_hi, c->snd_una) ? c->rtx_hi : c->snd_una;
		from = tcp_sack_skip(c, from);
		if (!net_seq_lt(from, limit))
			break;
		uint32_t n = tcp_out_resend(c, from);
		if (n == 0)
			break;
		c->s->st.tcp_fast_retransmits++;
		c->rtx_hi = from + n;
		*pipe += n;
		sent = true;
	}
	return sent;
}

void tcp_loss_on_rto(struct net_conn *c)
{
	c->s->cc->on_rto(c);
	c->flags &= ~(uint32_t)(NC_RECOVERY | NC_RTT | NC_TLP);
	c->recover = c->snd_max;
	c->dupacks = 0;
	c->rtx_hi = c->snd_una;
	/* The scoreboard survives the first expiry so that going back to
	 * snd_una skips what the peer holds (RFC 6675 5.1); a repeated expiry
	 * drops it in case the peer reneged (RFC 2018 8). */
	if (c->backoff > 1)
		c->n_sacked = 0;
	c->snd_nxt = c->snd_una;
}
