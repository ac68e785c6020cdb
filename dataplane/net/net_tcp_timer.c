/*
 * TCP timers: one protocol timer per TCB whose meaning follows the state
 * (SYN-ACK retransmission, RTO per RFC 6298, tail loss probe, zero-window
 * probe, keepalive, FIN_WAIT_2, TIME_WAIT), the delayed-ACK timer, and the
 * RTT estimate the RTO comes from.
 */
#include "net/net_tcp_int.h"
#include "worker/timer_wheel.h"

/*
 * Lazy: a wheel entry already armed no later than the new deadline stays
 * where it is, and when it fires the callback moves it on to t_due_ms. So
 * the re-arms of every segment and ACK (RTO or probe on send, keepalive once
 * all is acknowledged) are stores, and the wheel moves about once per
 * timeout instead of twice per segment. The timer still fires in the tick
 * of its deadline, never before it.
 */
void tcp_timer_set(struct net_conn *c, uint8_t mode, uint32_t delay_ms)
{
	uint64_t at = c->s->now_ns + (uint64_t)delay_ms * TCP_NS_PER_MS;
	c->tmode = mode;
	c->t_due_ms = (uint32_t)((at + TCP_NS_PER_MS - 1) / TCP_NS_PER_MS);
	if (!c->timer.armed || c->timer.deadline_ns > at)
		tw_arm(c->s->wheel, &c->timer, at);
}

void tcp_timer_stop(struct net_conn *c)
{
	tw_cancel(c->s->wheel, &c->timer);
	c->tmode = NT_NONE;
}

/* With SACK and an RTT estimate, first a tail loss probe at
 * max(2 SRTT, 10 ms) (RFC 8985 7.2): a lost tail then shows up in SACKs of
 * the probe within a few RTTs instead of after a 200 ms+ RTO. */
void tcp_timer_rtx_arm(struct net_conn *c)
{
	if ((c->flags & (NC_SACK | NC_RECOVERY | NC_TLP)) == NC_SACK && c->srtt8 && !c->backoff) {
		uint32_t pto = tcp_max(c->srtt8 / 4, NET_TCP_TLP_MIN_MS);
		if (c->snd_max - c->snd_una <= tcp_seg_max(c))
			pto += NET_TCP_TLP_DELACK_MS;
		if (pto < tcp_timer_rto_cur(c)) {
			tcp_timer_set(c, NT_TLP, pto);
			return;
		}
	}
	tcp_timer_set(c, NT_RTX, tcp_timer_rto_cur(c));
}

void tcp_timer_update(struct net_conn *c, bool restart)
{
	struct net_stack *s = c->s;
	bool armed = c->timer.armed;
	if (c->state == NET_TCPS_SYN_RCVD || c->state == NET_TCPS_TIME_WAIT ||
	    c->state == NET_TCPS_CLOSED)
		return;
	if (c->snd_max != c->snd_una) {
		if (restart || !tcp_timer_rtx_armed(c))
			tcp_timer_rtx_arm(c);
	} else if (tcp_unsent(c) > 0 && c->snd_wnd == 0) {
		if (!armed || c->tmode != NT_PERSIST)
			tcp_timer_set(c, NT_PERSIST, tcp_timer_rto_cur(c));
	} else if (c->state == NET_TCPS_FIN_WAIT_2) {
		if (!armed || c->tmode != NT_FINWAIT2)
			tcp_timer_set(c, NT_FINWAIT2, s->conf.fin_wait2_ms);
	} else if (s->conf.keepalive_s &&
		   (c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_CLOSE_WAIT)) {
		if (!armed || c->tmode != NT_KEEPALIVE) {
			c->backoff = 0;
			tcp_timer_set(c, NT_KEEPALIVE, s->conf.keepalive_s * 1000u);
		}
	} else {
		tcp_timer_stop(c);
	}
}

void tcp_timer_delack(struct net_conn *c)
{
	if (!c->ack_timer.armed)
		tw_arm(c->s->wheel, &c->ack_timer, c->s->now_ns + NET_TCP_DELACK_MS * TCP_NS_PER_MS);
}

/* RFC 6298 section 2 with a 1 ms clock granularity. */
void tcp_timer_rtt_sample(struct net_conn *c, uint32_t r)
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
	uint32_t rto = c->srtt8 / 8 + tcp_max(1u, c->rttvar4);
	c->rto_ms = rto < NET_TCP_RTO_MIN_MS ? NET_TCP_RTO_MIN_MS
		    : rto > NET_TCP_RTO_MAX_MS ? NET_TCP_RTO_MAX_MS : rto;
}

/* The retransmission timeout: back off, go back to snd_una, or give up
 * after NET_TCP_RTX_RETRIES expiries without progress. */
static void tcp_timer_on_rto(struct net_conn *c)
{
	struct net_stack *s = c->s;
	if (c->retries >= NET_TCP_RTX_RETRIES) {
		s->st.tcp_timeouts++;
		tcp_out_abort(c);
		return;
	}
	c->retries++;
	if (c->backoff < 16)
		c->backoff++;
	s->st.tcp_rto++;
	tcp_loss_on_rto(c);
	tcp_out_send(c);
	if (!(c->flags & NC_DEAD))
		tcp_timer_set(c, NT_RTX, tcp_timer_rto_cur(c));
}

/* One probe: a new segment when there is one and the windows let it go
 * (cwnd grows by it), else the last segment sent again (RFC 8985 7.3);
 * then the RTO proper. */
static void tcp_timer_on_tlp(struct net_conn *c)
{
	uint32_t seg = tcp_seg_max(c);
	uint32_t before = c->snd_max;
	c->flags |= NC_TLP;
	c->s->st.tcp_tlp++;
	if (tcp_unsent(c) > 0 && c->snd_nxt == c->snd_max) {
		c->cwnd += seg;
		tcp_out_send(c);
	}
	if (!(c->flags & NC_DEAD) && c->snd_max == before) {
		uint32_t end = c->snd_una + c->sq_len;
		if ((c->flags & NC_FIN_SENT) && c->snd_max == end + 1)
			tcp_out_resend(c, end);
		else if (c->snd_max != c->snd_una)
			tcp_out_resend(c, c->snd_max - tcp_min(c->snd_max - c->snd_una, seg));
	}
	if (!(c->flags & NC_DEAD))
		tcp_timer_set(c, NT_RTX, tcp_timer_rto_cur(c));
}

/* now: the later of the stack's clock and the timer's own deadline. */
static void tcp_timer_on_keepalive(struct net_conn *c, uint32_t now)
{
	struct net_stack *s = c->s;
	uint32_t idle = now - c->last_rx_ms;
	uint32_t need = s->conf.keepalive_s * 1000u + c->ka_probes * s->conf.keepalive_intvl_s * 1000u;
	if (idle < need) {
		tcp_timer_set(c, NT_KEEPALIVE, need - idle);
		return;
	}
	if (c->ka_probes >= s->conf.keepalive_cnt) {
		s->st.tcp_timeouts++;
		tcp_out_abort(c);
		return;
	}
	c->ka_probes++;
	s->st.tcp_keepalive++;
	tcp_out_seg(c, c->snd_una - 1, NET_TCP_ACK, 0);
	tcp_timer_set(c, NT_KEEPALIVE, s->conf.keepalive_intvl_s * 1000u);
}

void tcp_timer_cb(void *arg, struct tw_timer *t)
{
	struct net_conn *c = arg;
	struct net_stack *s = c->s;
	/* An entry left early by tcp_timer_set(): on to the real deadline. */
	if (net_seq_lt(s->now_ms, c->t_due_ms)) {
		tw_arm(s->wheel, t, (uint64_t)c->t_due_ms * TCP_NS_PER_MS);
		return;
	}
	uint32_t dl_ms = (uint32_t)(t->deadline_ns / TCP_NS_PER_MS);
	uint32_t now = net_seq_gt(dl_ms, s->now_ms) ? dl_ms : s->now_ms;

	switch (c->tmode) {
	case NT_SYNACK:
		if (c->retries >= NET_TCP_SYNACK_RETRIES) {
			s->st.tcp_timeouts++;
			tcp_conn_kill(c);
			break;
		}
		c->retries++;
		c->backoff++;
		s->st.tcp_retransmits++;
		tcp_syn_synack(c);
		tcp_timer_set(c, NT_SYNACK, tcp_timer_rto_cur(c));
		break;
	case NT_RTX:
		tcp_timer_on_rto(c);
		break;
	case NT_TLP:
		tcp_timer_on_tlp(c);
		break;
	case NT_PERSIST:
		s->st.tcp_zwp++;
		tcp_out_seg(c, c->snd_una - 1, NET_TCP_ACK, 0);
		if (c->backoff < 16)
			c->backoff++;
		tcp_timer_set(c, NT_PERSIST, tcp_timer_rto_cur(c));
		break;
	case NT_KEEPALIVE:
		tcp_timer_on_keepalive(c, now);
		break;
	case NT_FINWAIT2:
		s->st.tcp_timeouts++;
		tcp_conn_kill(c);
		break;
	case NT_TIMEWAIT:
		tcp_conn_kill(c);
		break;
	default:
		break;
	}
	net_tcp_pending(s);
}

void tcp_timer_ack_cb(void *arg, struct tw_timer *t)
{
	struct net_conn *c = arg;
	(void)t;
	if ((c->flags & NC_DELACK) && c->state != NET_TCPS_CLOSED)
		tcp_out_ack(c);
}
