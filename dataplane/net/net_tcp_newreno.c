/*
 * NewReno congestion control (RFC 5681 with RFC 6928's initial window):
 * slow start by min(acked, MSS) per ACK, congestion avoidance by
 * MSS * MSS / cwnd per ACK, half the flight on a loss. The recovery that
 * RFC 6582 adds to it is net_tcp_loss.c, shared with any other algorithm.
 */
#include "net/net_tcp_int.h"

/* RFC 5681 eq. 4: half the flight, at least two segments. */
static uint32_t tcp_newreno_half(const struct net_conn *c)
{
	return tcp_max((c->snd_max - c->snd_una) / 2, 2u * c->mss);
}

static void tcp_newreno_init(struct net_conn *c)
{
	c->cwnd = NET_TCP_INIT_CWND_SEGS * c->mss;
	c->ssthresh = UINT32_MAX / 2;
}

static void tcp_newreno_on_ack(struct net_conn *c, uint32_t acked)
{
	if (c->cwnd < c->ssthresh)
		c->cwnd += tcp_min(acked, c->mss);
	else
		c->cwnd += tcp_max(1u, c->mss * c->mss / c->cwnd);
}

static void tcp_newreno_enter_recovery(struct net_conn *c)
{
	c->ssthresh = tcp_newreno_half(c);
	c->cwnd = c->ssthresh;
}

static void tcp_newreno_exit_recovery(struct net_conn *c)
{
	c->cwnd = c->ssthresh;
}

static void tcp_newreno_on_rto(struct net_conn *c)
{
	c->ssthresh = tcp_newreno_half(c);
	c->cwnd = c->mss;
}

const struct tcp_cc_ops tcp_newreno_ops = {
	.init = tcp_newreno_init,
	.on_ack = tcp_newreno_on_ack,
	.enter_recovery = tcp_newreno_enter_recovery,
	.exit_recovery = tcp_newreno_exit_recovery,
	.on_rto = tcp_newreno_on_rto,
};
