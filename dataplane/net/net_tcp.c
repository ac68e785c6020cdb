/*
 * The TCP module's face to the app: the transport interface (struct tp_ops,
 * name "dpdk") over the stack's connections, and the deferred work
 * (rx_resume offers, on_close and release of dead TCBs) that keeps
 * on_close out of every other upcall. See net_tcp_int.h for the module's
 * files and docs/tcp.md for the behaviour.
 */
#include <string.h>

#include "net/net_csum.h"
#include "net/net_tcp_int.h"

uint32_t net_tcp_pending(struct net_stack *s)
{
	uint32_t n = 0;
	while (!list_empty(&s->resumeq)) {
		struct net_conn *c = list_entry(s->resumeq.next, struct net_conn, rq);
		list_del(&c->rq);
		c->flags &= ~(uint32_t)NC_RESUMEQ;
		n++;
		tcp_in_offer(c);
		if (!(c->flags & NC_DEAD))
			tcp_out_send(c);
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
			tcp_conn_release(c);
	}
	return n;
}

static inline struct net_conn *nt_conn(struct tp_conn *tc)
{
	return (struct net_conn *)(void *)tc;
}

/* Puts c on the list nt_flush() sends from. */
static void nt_flush_later(struct net_conn *c)
{
	if (!(c->flags & NC_FLUSHQ)) {
		c->flags |= NC_FLUSHQ;
		list_add_tail(&c->s->flushq, &c->fq);
	}
}

static int nt_poll(struct tp *t, int timeout_ms, int extra_fd)
{
	(void)timeout_ms;
	(void)extra_fd;
	struct net_stack *s = sluice_container_of(t, struct net_stack, tp);
	return (int)net_tcp_pending(s);
}

static bool nt_writable(const struct net_conn *c)
{
	return tcp_app_reads(c) &&
	       (c->state == NET_TCPS_ESTABLISHED || c->state == NET_TCPS_CLOSE_WAIT);
}

static uint8_t *nt_tx_reserve(struct tp_conn *tc, size_t min, size_t *avail)
{
	struct net_conn *c = nt_conn(tc);
	if (unlikely(!nt_writable(c) || min > NET_CHUNK_DATA))
		return NULL;
	return tcp_conn_sq_reserve(c, min ? (uint32_t)min : 1u, avail);
}

/* Commits up to n reserved bytes; the bytes committed (fewer than n only
 * past the chunk's end, 0 when the connection takes none). */
static inline uint32_t nt_commit(struct net_conn *c, size_t n)
{
	if (unlikely(!nt_writable(c) || n == 0 || !c->sq_tail))
		return 0;
	if (n > NET_CHUNK_DATA - c->sq_tail->len)
		n = NET_CHUNK_DATA - c->sq_tail->len;
	c->sq_tail->len += (uint32_t)n;
	c->sq_len += (uint32_t)n;
	c->flags |= NC_HAD_TX;
	nt_flush_later(c);
	return (uint32_t)n;
}

static void nt_tx_commit(struct tp_conn *tc, size_t n)
{
	nt_commit(nt_conn(tc), n);
}

/* A commit of bytes the app sends to many connections: their sum, taken by
 * the first of them, extends the run of summed bytes when it follows it. */
static void nt_tx_commit_hinted(struct tp_conn *tc, size_t n, struct tp_tx_hint *h)
{
	struct net_conn *c = nt_conn(tc);
	uint32_t at = c->snd_una + c->sq_len;
	const uint8_t *bytes = c->sq_tail ? c->sq_tail->data + c->sq_tail->len : NULL;

	if (nt_commit(c, n) != n || c->s->conf.csum_offload_tx || n > UINT16_MAX)
		return;
	if (!h->valid) {
		h->sum = net_csum_add(0, bytes, n);
		h->valid = true;
	}
	if (c->sum_len && c->sum_seq + c->sum_len == at && c->sum_len + n <= UINT16_MAX) {
		c->sum = net_csum_fold(net_csum_append(c->sum, c->sum_len, h->sum));
		c->sum_len = (uint16_t)(c->sum_len + n);
	} else {
		c->sum_seq = at;
		c->sum_len = (uint16_t)n;
		c->sum = net_csum_fold(h->sum);
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
		tcp_out_send(c);
		if (!(c->flags & NC_DEAD))
			tcp_timer_update(c, false);
	}
	net_tcp_pending(s);
}

static void nt_close(struct tp_conn *tc, bool abort)
{
	struct net_conn *c = nt_conn(tc);
	if (c->flags & (NC_DEAD | NC_APP_CLOSE) || !(c->flags & NC_APP))
		return;
	if (abort) {
		tcp_out_abort(c);
		return;
	}
	c->flags |= NC_APP_CLOSE;
	c->flags &= ~(uint32_t)NC_RX_FULL;
	/* Unread input is dropped, as a kernel socket does on close; so are
	 * out-of-order bytes (RFC 2018 lets a receiver renege on SACKed data). */
	tcp_conn_rbuf_put(c);
	list_del(&c->rq);
	nt_flush_later(c);
}

static void nt_info(struct tp_conn *tc, struct tp_conn_info *out)
{
	const struct net_conn *c = nt_conn(tc);
	memset(out, 0, sizeof(*out));
	if (c->flags & NC_DEAD)
		return;
	out->tx_queued = tcp_unsent(c);
	out->snd_wnd = c->snd_wnd;
	out->cwnd = c->cwnd;
	out->unacked = c->snd_max - c->snd_una;
	out->blocked = (c->flags & NC_BLOCKED) != 0;
}

static uint64_t nt_tx_queued(struct tp_conn *tc)
{
	const struct net_conn *c = nt_conn(tc);
	return (c->flags & NC_DEAD) ? 0 : tcp_unsent(c);
}

static void nt_rx_resume(struct tp_conn *tc)
{
	struct net_conn *c = nt_conn(tc);
	if (!tcp_app_reads(c))
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
	.tx_commit_hinted = nt_tx_commit_hinted,
	.flush = nt_flush,
	.close = nt_close,
	.info = nt_info,
	.tx_queued = nt_tx_queued,
	.rx_resume = nt_rx_resume,
	.destroy = nt_destroy,
};
