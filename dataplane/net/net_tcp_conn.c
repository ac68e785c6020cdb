/*
 * TCP connection table and pools: the lookup hash, TCB allocation and
 * release, receive buffers, send-queue chunks, and the lifetime of a TCB
 * (kill, TIME_WAIT, the dead list that net_tcp_pending() empties).
 */
#include <string.h>

#include "net/net_tcp_int.h"
#include "worker/timer_wheel.h"

static inline uint32_t tcp_conn_hash(const struct net_stack *s, uint32_t raddr, uint16_t rport,
				     uint16_t lport)
{
	return (uint32_t)tcp_tuple_mix(s->hash_seed, raddr, rport, lport) & s->bucket_mask;
}

struct net_conn *tcp_conn_lookup(struct net_stack *s, uint32_t raddr, uint16_t rport,
				 uint16_t lport)
{
	uint32_t i = s->buckets[tcp_conn_hash(s, raddr, rport, lport)];
	while (i) {
		struct net_conn *c = &s->conns[i - 1];
		if (c->raddr == raddr && c->rport == rport && c->lport == lport)
			return c;
		i = c->hnext;
	}
	return NULL;
}

static void tcp_conn_unhash(struct net_conn *c)
{
	struct net_stack *s = c->s;
	uint32_t *p = &s->buckets[tcp_conn_hash(s, c->raddr, c->rport, c->lport)];
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

struct net_conn *tcp_conn_new(struct net_stack *s, uint32_t raddr, uint16_t rport,
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
	if (s->group && !tcp_group_claim(s, c)) {
		/* Another stack holds the tuple (a race the lookup missed): this
		 * segment is lost, its resend is handed over. */
		c->hnext = s->free_conn;
		s->free_conn = idx + 1;
		s->st.tcp_stray_drops++;
		return NULL;
	}
	c->rto_ms = NET_TCP_RTO_INIT_MS;
	tw_init(&c->timer, tcp_timer_cb, c);
	tw_init(&c->ack_timer, tcp_timer_ack_cb, c);
	list_init(&c->q);
	list_init(&c->dq);
	list_init(&c->fq);
	list_init(&c->rq);
	uint32_t b = tcp_conn_hash(s, raddr, rport, lport);
	c->hnext = s->buckets[b];
	s->buckets[b] = idx + 1;
	s->st.conns_open++;
	return c;
}

bool tcp_conn_rbuf_get(struct net_conn *c)
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

void tcp_conn_rbuf_put(struct net_conn *c)
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

static void tcp_conn_chunk_put(struct net_stack *s, struct net_chunk *k)
{
	k->next = s->free_chunks;
	s->free_chunks = k;
}

uint8_t *tcp_conn_sq_reserve(struct net_conn *c, uint32_t min, size_t *avail)
{
	struct net_chunk *k = c->sq_tail;
	if (!k || NET_CHUNK_DATA - k->len < min) {
		struct net_stack *s = c->s;
		k = s->free_chunks;
		if (likely(k)) {
			s->free_chunks = k->next;
		} else if (s->chunks_fresh < s->conf.tx_chunks) {
			k = &s->chunks[s->chunks_fresh++];
		} else {
			s->st.tcp_tx_nobuf++;
			return NULL;
		}
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

static void tcp_conn_sq_release(struct net_conn *c)
{
	while (c->sq_head) {
		struct net_chunk *k = c->sq_head;
		c->sq_head = k->next;
		tcp_conn_chunk_put(c->s, k);
	}
	c->sq_tail = NULL;
	c->sq_off = 0;
	c->sq_len = 0;
}

void tcp_conn_sq_consume(struct net_conn *c, uint32_t n)
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
		tcp_conn_chunk_put(c->s, k);
	}
	/* An emptied head that is also the tail goes back too: an idle
	 * connection holds no chunk. */
	if (c->sq_head && c->sq_len == 0) {
		tcp_conn_chunk_put(c->s, c->sq_head);
		c->sq_head = c->sq_tail = NULL;
		c->sq_off = 0;
	}
}

void tcp_conn_sq_copy(const struct net_conn *c, uint32_t off, uint8_t *dst, uint32_t len)
{
	const struct net_chunk *k = c->sq_head;
	uint32_t pos = c->sq_off + off;
	while (pos >= k->len) {
		pos -= k->len;
		k = k->next;
	}
	while (len > 0) {
		uint32_t n = tcp_min(k->len - pos, len);
		memcpy(dst, k->data + pos, n);
		dst += n;
		len -= n;
		k = k->next;
		pos = 0;
	}
}

/* Queues c on the dead list: net_tcp_pending() runs on_close if the app
 * holds it and returns it to the pool if NC_DEAD is set. */
static void tcp_conn_defer(struct net_conn *c)
{
	if (c->dq.next == &c->dq)
		list_add_tail(&c->s->dead, &c->dq);
}

void tcp_conn_detach(struct net_conn *c)
{
	if (c->flags & NC_APP)
		tcp_conn_defer(c);
}

void tcp_conn_kill(struct net_conn *c)
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
	tcp_conn_unhash(c);
	tcp_group_release(s, c);
	tw_cancel(s->wheel, &c->timer);
	tw_cancel(s->wheel, &c->ack_timer);
	list_del(&c->fq);
	list_del(&c->rq);
	tcp_conn_sq_release(c);
	tcp_conn_rbuf_put(c);
	c->state = NET_TCPS_CLOSED;
	c->flags |= NC_DEAD;
	c->flags &= ~(uint32_t)(NC_FLUSHQ | NC_RESUMEQ);
	s->st.tcp_closed++;
	tcp_conn_defer(c);
}

void tcp_conn_release(struct net_conn *c)
{
	struct net_stack *s = c->s;
	c->hnext = s->free_conn;
	s->free_conn = (uint32_t)(c - s->conns) + 1;
	s->st.conns_open--;
}

void tcp_conn_time_wait(struct net_conn *c)
{
	struct net_stack *s = c->s;
	c->state = NET_TCPS_TIME_WAIT;
	tcp_conn_sq_release(c);
	tcp_conn_rbuf_put(c);
	tcp_conn_detach(c);
	list_del(&c->fq);
	list_del(&c->rq);
	tw_cancel(s->wheel, &c->ack_timer);
	list_add_tail(&s->tw_fifo, &c->q);
	c->flags |= NC_TWQ;
	s->n_tw++;
	tcp_timer_set(c, NT_TIMEWAIT, 2 * s->conf.msl_ms);
	if (s->n_tw > s->conf.time_wait_max) {
		struct net_conn *old = list_entry(s->tw_fifo.next, struct net_conn, q);
		s->st.tcp_tw_recycled++;
		tcp_conn_kill(old);
	}
}

bool net_tcp_init(struct net_stack *s, char *err, size_t errlen)
{
	s->cc = &tcp_newreno_ops;
	s->free_conn = 0;
	for (uint32_t i = s->conf.max_conns; i-- > 0;) {
		s->conns[i].hnext = s->free_conn;
		s->free_conn = i + 1;
	}
	return !s->conf.shared_port || tcp_group_join(s, err, errlen);
}

void net_tcp_destroy(struct net_stack *s)
{
	for (uint32_t i = 0; i < s->conf.max_conns; i++) {
		struct net_conn *c = &s->conns[i];
		if (c->s == s && c->state != NET_TCPS_CLOSED)
			tcp_conn_kill(c);
	}
	net_tcp_pending(s);
	tcp_group_leave(s);
}
