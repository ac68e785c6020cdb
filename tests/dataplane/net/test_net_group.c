/*
 * Unit tests of the stacks that share one address and port (shared_port,
 * one per worker): SYN cookies on every SYN, strays without RSTs, and the
 * group that gives every connection one TCB and hands every segment that
 * lands on the wrong stack to the one that holds it (net_tcp_group.c).
 * Each test runs two stacks in one thread; a stack takes over what it was
 * handed at its next tick (h_advance).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/net_int.h"
#include "net_harness.h"

#define ISN 1000000u

static const struct net_stats *st(struct h *h)
{
	return net_stack_stats(h->s);
}

static struct tp *tp(struct h *h)
{
	return net_stack_tp(h->s);
}

/*
 * Two workers on one address (shared_port), as with af_packet fanout: a
 * frame can reach the stack that does not own its connection. The SYN that
 * lands on worker b is answered with a cookie and no TCB, so the ACK that
 * lands on a completes the handshake there; the client's FIN that lands on
 * b gets no RST from b (before: the client was reset and a kept the
 * connection open forever) but is handed to a; the resent FIN reaches a and
 * the connection closes, on_close included.
 */
static void test_shared_port_strays(void **state)
{
	struct net_stack_conf c;
	struct h_seg sa, s;
	uint8_t o[40];
	h_conf(&c);
	c.shared_port = true;
	c.syn_cookies = true;
	struct h *a = h_reinit(state, &c);
	struct h *b = calloc(1, sizeof(*b));
	assert_non_null(b);
	h_init(b, &c, false);

	uint32_t ol = h_opt_syn(o, 1460, 7, true, true, b->ts);
	h_tcp(b, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, o, ol, NULL, 0);
	assert_true(h_pop(b, &sa));
	assert_int_equal(sa.flags, NET_TCP_SYN | NET_TCP_ACK);
	assert_int_equal(st(b)->tcp_cookies_sent, 1);
	assert_int_equal(st(b)->conns_open, 0);

	h_tcp(a, H_CPORT, NET_TCP_ACK, ISN + 1, sa.seq + 1, 65535, o, h_opt_ts(o, a->ts, sa.tsval),
	      NULL, 0);
	assert_int_equal(a->app.opens, 1);
	assert_int_equal(st(a)->tcp_cookies_ok, 1);
	assert_int_equal(st(a)->tcp_rst_tx, 0);

	/* A request and its answer, so the FIN is not at the start of either
	 * sequence space (where b would take it for a cookie ACK). */
	h_tcp(a, H_CPORT, NET_TCP_ACK | NET_TCP_PSH, ISN + 1, sa.seq + 1, 65535, o,
	      h_opt_ts(o, a->ts, 0), "GET ", 4);
	assert_true(tp_send(tp(a), a->app.conn, "resp", 4));
	tp(a)->ops->flush(tp(a));
	h_drain(a);
	h_tcp(a, H_CPORT, NET_TCP_ACK, ISN + 5, sa.seq + 5, 65535, o, h_opt_ts(o, a->ts, 0), NULL,
	      0);
	h_drain(a);

	h_tcp(b, H_CPORT, NET_TCP_FIN | NET_TCP_ACK, ISN + 5, sa.seq + 5, 65535, o,
	      h_opt_ts(o, b->ts, 0), NULL, 0);
	assert_int_equal(h_pending(b), 0);
	assert_int_equal(st(b)->tcp_rst_tx, 0);
	assert_int_equal(st(b)->tcp_forwarded, 1);

	h_tcp(a, H_CPORT, NET_TCP_FIN | NET_TCP_ACK, ISN + 5, sa.seq + 5, 65535, o,
	      h_opt_ts(o, a->ts, 0), NULL, 0);
	assert_int_equal(a->app.eofs, 1);
	tp_close(tp(a), a->app.conn, false);
	tp(a)->ops->flush(tp(a));
	uint32_t fin_seq = 0;
	bool fin = false;
	while (h_pop(a, &s))
		if (s.flags & NET_TCP_FIN) {
			fin = true;
			fin_seq = s.seq;
		}
	assert_true(fin);
	h_tcp(a, H_CPORT, NET_TCP_ACK, ISN + 6, fin_seq + 1, 65535, o, h_opt_ts(o, a->ts, 0), NULL,
	      0);
	h_advance(a, 1);
	assert_int_equal(a->app.closes, 1);
	assert_int_equal(st(a)->conns_open, 0);
	assert_int_equal(st(a)->tcp_rst_tx, 0);

	/* Alone on the port (the default), the same stray is reset. */
	c.shared_port = false;
	h_fini(b);
	memset(b, 0, sizeof(*b));
	h_init(b, &c, false);
	h_tcp(b, H_CPORT, NET_TCP_FIN | NET_TCP_ACK, ISN + 5, sa.seq + 5, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(b, &s));
	assert_true(s.flags & NET_TCP_RST);
	h_fini(b);
	free(b);
}

/* A second stack on the shared address (the first is *state). */
static struct h *shared_pair(void **state, struct h **b)
{
	struct net_stack_conf c;
	h_conf(&c);
	c.shared_port = true;
	struct h *a = h_reinit(state, &c);
	*b = calloc(1, sizeof(**b));
	assert_non_null(*b);
	h_init(*b, &c, false);
	return a;
}

/* The first data segment of x (skipping pure ACKs); its length. */
static uint32_t pop_data(struct h *x, struct h_seg *s)
{
	while (h_pop(x, s))
		if (s->dlen > 0)
			return s->dlen;
	return 0;
}

/* The SYN to a, the handshake's ACK to `owner` and the request to `lands`
 * (the other stack), which must hand it over: the owner has it. */
static void rollover_request(struct h *a, struct h *owner, struct h *lands, uint32_t *snd,
			     uint32_t *cseq)
{
	struct h_seg sa;
	h_tcp(a, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(a, &sa));
	*snd = sa.seq + 1;
	*cseq = ISN + 1;
	h_tcp(owner, H_CPORT, NET_TCP_ACK, *cseq, *snd, 65535, NULL, 0, NULL, 0);
	assert_int_equal(owner->app.opens, 1);
	h_tcp(lands, H_CPORT, NET_TCP_ACK | NET_TCP_PSH, *cseq, *snd, 65535, NULL, 0, "GET /", 5);
	assert_int_equal(lands->app.opens, 0);
	assert_int_equal(st(lands)->conns_open, 0);
	assert_int_equal(h_pending(lands), 0);
	assert_int_equal(st(lands)->tcp_forwarded, 1);
	h_advance(owner, 1);
	assert_int_equal(owner->app.rx_len, 5);
	assert_memory_equal(owner->app.rx, "GET /", 5);
}

/*
 * dpdk_scale under a CPU hog: the handshake's ACK lands on a, the request
 * rolls over to b (a's af_packet ring was full). A cookie validates for the
 * first data segment too, so b opened a second TCB and answered; the
 * client's ACK and FIN kept landing on a, which saw an ACK for data it
 * never sent and only sent challenge ACKs. The FIN was never acknowledged
 * (the client stuck in FIN-WAIT-1) and both TCBs stayed open. Now b hands
 * the request to a, which holds the connection.
 */
static void test_shared_port_request_rolls_over(void **state)
{
	struct h *b;
	struct h *a = shared_pair(state, &b);
	struct h_seg s;
	uint32_t snd, cseq;
	rollover_request(a, a, b, &snd, &cseq);
	assert_true(tp_send(tp(a), a->app.conn, "200", 3));
	tp(a)->ops->flush(tp(a));
	assert_int_equal(pop_data(a, &s), 3);
	assert_int_equal(s.ack, cseq + 5);

	/* The client closes: its FIN is acknowledged, not challenged. */
	h_tcp(a, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq + 5, snd + 3, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(a, &s));
	assert_int_equal(s.ack, cseq + 6);
	assert_int_equal(a->app.eofs, 1);
	assert_int_equal(st(a)->tcp_challenge_acks, 0);
	tp_close(tp(a), a->app.conn, false);
	tp(a)->ops->flush(tp(a));
	assert_true(h_pop(a, &s));
	assert_true(s.flags & NET_TCP_FIN);
	h_tcp(a, H_CPORT, NET_TCP_ACK, cseq + 6, snd + 4, 65535, NULL, 0, NULL, 0);
	h_advance(a, 1);
	h_advance(b, 1);
	assert_int_equal(a->app.closes, 1);
	assert_int_equal(st(a)->conns_open, 0);
	assert_int_equal(st(b)->conns_open, 0);
	assert_int_equal(st(a)->tcp_rst_tx + st(b)->tcp_rst_tx, 0);
	h_fini(b);
	free(b);
}

/*
 * The mirror case: the handshake's ACK rolls over to b, which opens the
 * connection, and every later segment lands on a, which hands it to b
 * (before, a opened a second TCB from the request, and b's lingered until
 * keepalive). The app closes first; the client's FIN, resent because our
 * ACK of it was lost, lands on a and reaches b's TIME_WAIT, which
 * acknowledges it again (before: dropped as a stray, the client kept
 * resending).
 */
static void test_shared_port_handshake_rolls_over(void **state)
{
	struct h *b;
	struct h *a = shared_pair(state, &b);
	struct h_seg s;
	uint32_t snd, cseq;
	rollover_request(a, b, a, &snd, &cseq);
	assert_true(tp_send(tp(b), b->app.conn, "200", 3));
	tp_close(tp(b), b->app.conn, false);
	tp(b)->ops->flush(tp(b));
	assert_int_equal(pop_data(b, &s), 3);
	assert_true(h_pop(b, &s));
	assert_true(s.flags & NET_TCP_FIN);
	assert_int_equal(s.seq, snd + 3);

	h_tcp(a, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq + 5, snd + 4, 65535, NULL, 0, NULL, 0);
	h_advance(b, 1);
	assert_true(h_pop(b, &s));
	assert_int_equal(s.ack, cseq + 6);
	assert_int_equal(st(b)->conns_open, 1); /* TIME_WAIT */
	assert_int_equal(b->app.closes, 1);
	h_tcp(a, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq + 5, snd + 4, 65535, NULL, 0, NULL, 0);
	assert_int_equal(h_pending(a), 0);
	h_advance(b, 1);
	assert_true(h_pop(b, &s));
	assert_int_equal(s.ack, cseq + 6);
	assert_int_equal(st(a)->tcp_forwarded, 3);
	assert_int_equal(st(a)->conns_open, 0);
	assert_int_equal(st(a)->tcp_rst_tx + st(b)->tcp_rst_tx, 0);
	h_fini(b);
	free(b);
}

/* With shared_port every SYN gets a cookie, even with room in the backlog:
 * a half-open TCB on one worker could never see the ACK that lands on the
 * other. The cookie encodes MSS, window scale and SACK in the timestamp. */
static void test_shared_port_always_cookies(void **state)
{
	struct net_stack_conf c;
	struct h_seg sa;
	uint8_t o[40];
	h_conf(&c);
	c.shared_port = true;
	struct h *h = h_reinit(state, &c);
	uint32_t ol = h_opt_syn(o, 1460, 7, true, true, h->ts);
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, o, ol, NULL, 0);
	assert_true(h_pop(h, &sa));
	assert_int_equal(st(h)->tcp_cookies_sent, 1);
	assert_int_equal(st(h)->conns_open, 0);
	assert_true(sa.sack_perm);
	assert_true(sa.ws >= 0);
	h_tcp(h, H_CPORT, NET_TCP_ACK, ISN + 1, sa.seq + 1, 65535, o, h_opt_ts(o, h->ts, sa.tsval),
	      NULL, 0);
	assert_int_equal(h->app.opens, 1);
	assert_int_equal(st(h)->tcp_cookies_ok, 1);
	/* The options ride in TSval's low bits, yet TSval is not ahead of the
	 * connection's timestamp clock (the stack's plus its offset, the same
	 * for the cookie and the TCB it became), and at most 127 ms behind. */
	uint32_t clock = (uint32_t)(h->now / H_MS) + ((struct net_conn *)(void *)h->app.conn)->ts_off;
	assert_true((int32_t)(sa.tsval - clock) <= 0);
	assert_true((int32_t)(clock - sa.tsval) < 128);
	/* The first answer passes the client's PAWS: TSval not below the
	 * SYN-ACK's (before, it was up to 127 ms below and the client dropped
	 * it, leaving the answer to the 1 s RTO). */
	struct h_seg d;
	assert_true(tp_send(tp(h), h->app.conn, "answer", 6));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &d));
	assert_int_equal(d.dlen, 6);
	assert_true((int32_t)(d.tsval - sa.tsval) >= 0);
	h_drain(h);
	/* A forged ACK (wrong cookie) is dropped, not reset, and not opened. */
	h_tcp(h, H_CPORT + 1, NET_TCP_ACK, ISN + 1, sa.seq + 1, 65535, NULL, 0, NULL, 0);
	assert_int_equal(h_pending(h), 0);
	assert_int_equal(st(h)->tcp_cookies_bad, 1);
	assert_int_equal(h->app.opens, 1);
}


/*
 * Property test of the group: 300 connections one after another, each
 * client frame landing on the connection's usual stack 70 % of the time and
 * on the other 30 % (af_packet rolling over). The client resends its SYN,
 * request and FIN until they are acknowledged, as Linux does; the app
 * answers the request and closes at EOF. Every connection must complete -
 * answer received, client FIN acknowledged, our FIN received - with no RST
 * and no challenge ACK, and leave no TCB on either stack.
 */
struct rr_client {
	uint16_t port;
	bool ts;
	uint32_t cseq;      /* client ISN + 1 */
	uint32_t snd;       /* server ISN + 1; 0 before the SYN-ACK */
	uint32_t rcv_nxt;
	uint32_t peer_ts;
	uint32_t acked;     /* client bytes the server acknowledged (the FIN counts 1) */
	uint32_t resp;      /* answer bytes received */
	bool fin_sent, srv_fin;
	uint64_t rtx_at;
	uint32_t rtx_gap;
};

struct rr {
	struct h *usual, *other;
	uint64_t rnd;
	struct rr_client k;
};

static uint32_t rr_rand(struct rr *r, uint32_t n)
{
	r->rnd ^= r->rnd << 13;
	r->rnd ^= r->rnd >> 7;
	r->rnd ^= r->rnd << 17;
	return (uint32_t)(r->rnd >> 32) % n;
}

/* The stack a client frame lands on. */
static struct h *rr_to(struct rr *r)
{
	return rr_rand(r, 100) < 30 ? r->other : r->usual;
}

static void rr_send(struct rr *r, uint8_t flags, uint32_t seq, const void *data, uint32_t dlen)
{
	uint8_t o[40];
	uint32_t ol = r->k.ts ? h_opt_ts(o, r->usual->ts, r->k.peer_ts) : 0;
	h_tcp(rr_to(r), r->k.port, flags, seq, r->k.rcv_nxt, 65535, o, ol, data, dlen);
}

static void rr_syn(struct rr *r)
{
	uint8_t o[40];
	uint32_t ol = h_opt_syn(o, 1460, 7, true, r->k.ts, r->usual->ts);
	h_tcp(rr_to(r), r->k.port, NET_TCP_SYN, r->k.cseq - 1, 0, 65535, o, ol, NULL, 0);
}

static void rr_resend_after(struct rr_client *k, uint64_t now, uint32_t gap)
{
	k->rtx_gap = gap;
	k->rtx_at = now + gap;
}

/* One segment from either stack to the client. */
static void rr_input(struct rr *r, const struct h_seg *s, uint64_t now)
{
	struct rr_client *k = &r->k;
	assert_int_equal(s->dport, k->port);
	assert_false(s->flags & NET_TCP_RST);
	if (s->has_ts)
		k->peer_ts = s->tsval;
	if (s->flags & NET_TCP_SYN) {
		if (!k->snd) {
			k->snd = s->seq + 1;
			k->rcv_nxt = k->snd;
			k->ts = k->ts && s->has_ts;
			rr_send(r, NET_TCP_ACK, k->cseq, NULL, 0);
			rr_send(r, NET_TCP_ACK | NET_TCP_PSH, k->cseq, "GET /", 5);
			rr_resend_after(k, now, 200);
		}
		return;
	}
	uint32_t acked = s->ack - k->cseq;
	if ((s->flags & NET_TCP_ACK) && acked <= 6 && acked > k->acked)
		k->acked = acked;
	bool in_order = s->seq == k->rcv_nxt;
	if (s->dlen > 0 && in_order) {
		k->rcv_nxt += s->dlen;
		k->resp += s->dlen;
	}
	if ((s->flags & NET_TCP_FIN) && s->seq + s->dlen == k->rcv_nxt) {
		k->rcv_nxt++;
		k->srv_fin = true;
	}
	if (s->dlen > 0 || (s->flags & NET_TCP_FIN))
		rr_send(r, NET_TCP_ACK, k->cseq + (k->fin_sent ? 6 : 5), NULL, 0);
	if (k->resp == 3 && k->acked >= 5 && !k->fin_sent) {
		rr_send(r, NET_TCP_ACK | NET_TCP_FIN, k->cseq + 5, NULL, 0);
		k->fin_sent = true;
		rr_resend_after(k, now, 200);
	}
}

/* What the client resends when its timer runs out. */
static void rr_resend(struct rr *r, uint64_t now)
{
	struct rr_client *k = &r->k;
	if (!k->snd)
		rr_syn(r);
	else if (k->acked < 5)
		rr_send(r, NET_TCP_ACK | NET_TCP_PSH, k->cseq, "GET /", 5);
	else if (k->fin_sent && k->acked < 6)
		rr_send(r, NET_TCP_ACK | NET_TCP_FIN, k->cseq + 5, NULL, 0);
	rr_resend_after(k, now, k->rtx_gap * 2);
}

/* The app on stack x: answers the request once, closes at EOF. */
static void rr_app(struct h *x, bool *answered)
{
	if (!x->app.conn)
		return;
	if (x->app.rx_len >= 5 && !*answered) {
		assert_true(tp_send(tp(x), x->app.conn, "200", 3));
		*answered = true;
	}
	if (x->app.eofs > 0)
		tp_close(tp(x), x->app.conn, false);
	tp(x)->ops->flush(tp(x));
}

static void test_shared_port_random_rollover(void **state)
{
	struct h *b;
	struct h *a = shared_pair(state, &b);
	struct rr r = {.rnd = 0x9e3779b97f4a7c15ull};
	for (uint32_t n = 0; n < 300; n++) {
		r.usual = rr_rand(&r, 2) ? a : b;
		r.other = r.usual == a ? b : a;
		r.k = (struct rr_client){.port = (uint16_t)(20000 + n), .ts = rr_rand(&r, 2) != 0,
					 .cseq = (uint32_t)r.rnd + 1};
		bool answered[2] = {false, false};
		a->app.rx_len = b->app.rx_len = 0;
		a->app.eofs = b->app.eofs = 0;
		rr_syn(&r);
		rr_resend_after(&r.k, 0, 1000);
		for (uint64_t t = 0; t < 60000 && !(r.k.srv_fin && r.k.acked == 6); t++) {
			struct h_seg s;
			rr_app(a, &answered[0]);
			rr_app(b, &answered[1]);
			while (h_pop(a, &s))
				rr_input(&r, &s, t);
			while (h_pop(b, &s))
				rr_input(&r, &s, t);
			if (t >= r.k.rtx_at)
				rr_resend(&r, t);
			h_advance(a, 1);
			h_advance(b, 1);
		}
		assert_int_equal(r.k.resp, 3);
		assert_int_equal(r.k.acked, 6);
		assert_true(r.k.srv_fin);
		/* The client's ACK of our FIN; then neither stack holds anything. */
		rr_send(&r, NET_TCP_ACK, r.k.cseq + 6, NULL, 0);
		h_advance(a, 1);
		h_advance(b, 1);
		assert_int_equal(h_pending(a) + h_pending(b), 0);
		assert_int_equal(st(a)->conns_open + st(b)->conns_open, 0);
	}
	assert_int_equal(a->app.opens + b->app.opens, 300);
	assert_int_equal(a->app.closes + b->app.closes, 300);
	assert_int_equal(st(a)->tcp_challenge_acks + st(b)->tcp_challenge_acks, 0);
	assert_true(st(a)->tcp_forwarded > 0 && st(b)->tcp_forwarded > 0);
	h_fini(b);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_shared_port_strays, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_shared_port_always_cookies, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_shared_port_request_rolls_over, h_setup,
						h_teardown),
		cmocka_unit_test_setup_teardown(test_shared_port_handshake_rolls_over, h_setup,
						h_teardown),
		cmocka_unit_test_setup_teardown(test_shared_port_random_rollover, h_setup,
						h_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
