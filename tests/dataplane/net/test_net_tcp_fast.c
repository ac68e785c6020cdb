/*
 * Header prediction for pure ACKs (tcp_in_fast_ack in net_tcp_in.c): the
 * segments it takes, the ones it must leave to the general path, and that
 * what it does equals what the general path does. For the last, two stacks
 * with the same secret and clock run the same exchange; one gets each ACK
 * as it is, the other the same ACK with PSH set, which the prediction
 * refuses and the general path treats exactly alike (PSH means nothing to a
 * segment without data). Their TCBs and output must then agree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/net_int.h"
#include "tcp_cases.h"

static struct net_conn *tcb(struct h *h)
{
	return (struct net_conn *)(void *)h->app.conn;
}

/* Every field an ACK may change, compared between the two stacks. */
static void assert_same_tcb(const struct net_conn *a, const struct net_conn *b)
{
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->snd_una, b->snd_una);
	assert_int_equal(a->snd_nxt, b->snd_nxt);
	assert_int_equal(a->snd_max, b->snd_max);
	assert_int_equal(a->snd_wnd, b->snd_wnd);
	assert_int_equal(a->max_snd_wnd, b->max_snd_wnd);
	assert_int_equal(a->snd_wl1, b->snd_wl1);
	assert_int_equal(a->snd_wl2, b->snd_wl2);
	assert_int_equal(a->cwnd, b->cwnd);
	assert_int_equal(a->ssthresh, b->ssthresh);
	assert_int_equal(a->recover, b->recover);
	assert_int_equal(a->sq_len, b->sq_len);
	assert_int_equal(a->sq_off, b->sq_off);
	assert_int_equal(a->sq_head == NULL, b->sq_head == NULL);
	assert_int_equal(a->dupacks, b->dupacks);
	assert_int_equal(a->n_sacked, b->n_sacked);
	assert_int_equal(a->rcv_nxt, b->rcv_nxt);
	assert_int_equal(a->rcv_adv, b->rcv_adv);
	assert_int_equal(a->last_ack_sent, b->last_ack_sent);
	assert_int_equal(a->backoff, b->backoff);
	assert_int_equal(a->retries, b->retries);
	assert_int_equal(a->srtt8, b->srtt8);
	assert_int_equal(a->rttvar4, b->rttvar4);
	assert_int_equal(a->rto_ms, b->rto_ms);
	assert_int_equal(a->rtt_seq, b->rtt_seq);
	assert_int_equal(a->rtt_start_ms, b->rtt_start_ms);
	assert_int_equal(a->ts_recent, b->ts_recent);
	assert_int_equal(a->ts_recent_ms, b->ts_recent_ms);
	assert_int_equal(a->last_rx_ms, b->last_rx_ms);
	assert_int_equal(a->ka_probes, b->ka_probes);
	assert_int_equal(a->tmode, b->tmode);
	assert_int_equal(a->t_due_ms, b->t_due_ms);
	assert_int_equal(a->timer.armed, b->timer.armed);
	assert_int_equal(a->ack_timer.armed, b->ack_timer.armed);
}

/* Both stacks sent the same frames since the last call. */
static void assert_same_output(struct h *a, struct h *b)
{
	static uint8_t fa[H_FRAME_MAX], fb[H_FRAME_MAX];
	assert_int_equal(h_pending(a), h_pending(b));
	for (;;) {
		uint32_t la = h_pop_raw(a, fa), lb = h_pop_raw(b, fb);
		assert_int_equal(la, lb);
		if (la == 0)
			return;
		assert_memory_equal(fa, fb, la);
	}
}

struct twin {
	struct h *a, *b; /* a: ACKs as they are; b: the same with PSH */
	uint32_t snd, cseq;
	bool ts;
};

static void twin_open(struct twin *t, bool ts)
{
	t->a = calloc(1, sizeof(*t->a));
	t->b = calloc(1, sizeof(*t->b));
	assert_non_null(t->a);
	assert_non_null(t->b);
	h_init(t->a, NULL, false);
	h_init(t->b, NULL, false);
	t->ts = ts;
	struct h_seg sa;
	uint32_t snd_b, cseq_b;
	h_handshake(t->a, H_CPORT, ISN, ts, ts ? 7 : -1, ts, &t->snd, &t->cseq, &sa);
	h_handshake(t->b, H_CPORT, ISN, ts, ts ? 7 : -1, ts, &snd_b, &cseq_b, &sa);
	assert_int_equal(t->snd, snd_b);
	assert_same_tcb(tcb(t->a), tcb(t->b));
}

static void twin_close(struct twin *t)
{
	h_fini(t->a);
	h_fini(t->b);
	free(t->a);
	free(t->b);
}

/* n bytes queued and flushed on both. */
static void twin_send(struct twin *t, uint32_t n)
{
	static uint8_t d[32 * 1024];
	assert_true(n <= sizeof(d));
	for (uint32_t i = 0; i < n; i++)
		d[i] = (uint8_t)(i * 13);
	assert_true(tp_send(tp(t->a), t->a->app.conn, d, n));
	assert_true(tp_send(tp(t->b), t->b->app.conn, d, n));
	tp(t->a)->ops->flush(tp(t->a));
	tp(t->b)->ops->flush(tp(t->b));
}

/* The client ACKs up to our sequence `ack` (echoing tsecr) on both. */
static void twin_ack(struct twin *t, uint32_t ack, uint32_t tsecr)
{
	uint8_t o[40];
	uint32_t olen = t->ts ? h_opt_ts(o, t->a->ts, tsecr) : 0;
	uint64_t fast_a = st(t->a)->tcp_fast_acks, fast_b = st(t->b)->tcp_fast_acks;
	h_tcp(t->a, H_CPORT, NET_TCP_ACK, t->cseq, ack, 65535, o, olen, NULL, 0);
	h_tcp(t->b, H_CPORT, NET_TCP_ACK | NET_TCP_PSH, t->cseq, ack, 65535, o, olen, NULL, 0);
	assert_int_equal(st(t->a)->tcp_fast_acks, fast_a + 1);
	assert_int_equal(st(t->b)->tcp_fast_acks, fast_b);
	assert_same_tcb(tcb(t->a), tcb(t->b));
	assert_same_output(t->a, t->b);
}

static void twin_advance(struct twin *t, uint64_t ms)
{
	h_advance(t->a, ms);
	h_advance(t->b, ms);
	assert_same_output(t->a, t->b);
}

/* With timestamps: RTT from the echo, slow start, the queue freed, the
 * window opened by each ACK filled at once, the timer re-armed, and the
 * last ACK emptying the flight (keepalive, no chunk held). */
static void test_fast_ack_equals_slow_ts(void **state)
{
	(void)state;
	struct twin t;
	twin_open(&t, true);
	uint32_t tsval = tcb(t.a)->s->now_ms + tcb(t.a)->ts_off;
	twin_send(&t, 20 * 1448);
	assert_int_equal(tcb(t.a)->snd_max - t.snd, 10 * 1448);
	assert_same_output(t.a, t.b);

	twin_advance(&t, 25);
	twin_ack(&t, t.snd + 1448, tsval);
	assert_int_equal(tcb(t.a)->srtt8 / 8, 25);
	assert_int_equal(tcb(t.a)->cwnd, 10 * 1460 + 1448);
	twin_advance(&t, 3);
	twin_ack(&t, t.snd + 4 * 1448, tsval + 25);
	twin_advance(&t, 10);
	twin_ack(&t, tcb(t.a)->snd_max, tsval + 28);
	assert_int_equal(tcb(t.a)->snd_max, t.snd + 20 * 1448);
	assert_true(tcb(t.a)->snd_una != tcb(t.a)->snd_max);
	twin_ack(&t, t.snd + 20 * 1448, tsval + 38);
	assert_int_equal(tcb(t.a)->snd_una, t.snd + 20 * 1448);
	assert_null(tcb(t.a)->sq_head);
	assert_int_equal(tcb(t.a)->tmode, NT_KEEPALIVE);
	twin_close(&t);
}

/* Without timestamps: the timed segment (Karn) gives the RTT sample. */
static void test_fast_ack_equals_slow_plain(void **state)
{
	(void)state;
	struct twin t;
	twin_open(&t, false);
	twin_send(&t, 6000);
	assert_same_output(t.a, t.b);
	assert_true(tcb(t.a)->flags & NC_RTT);
	twin_advance(&t, 40);
	twin_ack(&t, t.snd + 1460, 0);
	assert_false(tcb(t.a)->flags & NC_RTT);
	assert_int_equal(tcb(t.a)->srtt8 / 8, 40);
	twin_ack(&t, t.snd + 6000, 0);
	assert_null(tcb(t.a)->sq_head);
	twin_close(&t);
}

/* What the prediction must leave to the general path, each shown by its
 * effect there: a window change is taken, a duplicate counted, a SACK
 * block recorded, an old timestamp dropped by PAWS, data received. */
static void test_fast_ack_refused(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	uint8_t o[40];
	open_ts(h, &snd, &cseq);
	uint32_t tsv = tcb(h)->s->now_ms + tcb(h)->ts_off;
	static uint8_t d[6 * 1448];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	h_advance(h, 5);

	/* A new window: 1000 << 7 where the handshake's ACK gave 65535 << 7. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1448, 1000, o, h_opt_ts(o, h->ts, tsv), NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 0);
	assert_int_equal(tcb(h)->snd_wnd, 1000u << 7);
	assert_int_equal(tcb(h)->snd_una, snd + 1448);

	/* The same window again now predicts. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 2 * 1448, 1000, o, h_opt_ts(o, h->ts, tsv),
	      NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 1);

	/* A duplicate (snd_una does not move; with SACK and no block it is
	 * no duplicate for recovery either). */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 2 * 1448, 1000, o, h_opt_ts(o, h->ts, tsv),
	      NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 1);
	assert_int_equal(tcb(h)->snd_una, snd + 2 * 1448);

	/* A SACK block. */
	uint32_t olen = h_opt_ts(o, h->ts, tsv);
	o[olen++] = NET_TCPOPT_NOP;
	o[olen++] = NET_TCPOPT_NOP;
	o[olen++] = NET_TCPOPT_SACK;
	o[olen++] = 10;
	net_put32(o + olen, snd + 4 * 1448);
	net_put32(o + olen + 4, snd + 5 * 1448);
	olen += 8;
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 3 * 1448, 1000, o, olen, NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 1);
	assert_int_equal(tcb(h)->n_sacked, 1);
	assert_int_equal(tcb(h)->snd_una, snd + 3 * 1448);

	/* With the scoreboard holding a block, a plain ACK is not predicted
	 * either (the trim has work). */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 4 * 1448, 1000, o, h_opt_ts(o, h->ts, tsv),
	      NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 1);
	assert_int_equal(tcb(h)->snd_una, snd + 4 * 1448);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 5 * 1448, 1000, o, h_opt_ts(o, h->ts, tsv),
	      NULL, 0);
	assert_int_equal(tcb(h)->n_sacked, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 1);

	/* An old timestamp: PAWS drops it, snd_una stays. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 5 * 1448 + 100, 1000,
	      o, h_opt_ts(o, h->ts - 100, tsv), NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 1);
	assert_int_equal(st(h)->tcp_paws_drops, 1);
	assert_int_equal(tcb(h)->snd_una, snd + 5 * 1448);

	/* Data with the ACK goes to the app. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 5 * 1448 + 100, 1000,
	      o, h_opt_ts(o, h->ts, tsv), "hi", 2);
	assert_int_equal(st(h)->tcp_fast_acks, 1);
	assert_int_equal(h->app.rx_len, 2);
	assert_int_equal(tcb(h)->snd_una, snd + 5 * 1448 + 100);
}

/* The common layout of the timestamps option (NOP NOP TS) is read without
 * the option loop; another layout goes through it and counts the same. */
static void test_fast_ack_ts_layouts(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	uint8_t o[40];
	open_ts(h, &snd, &cseq);
	uint32_t tsv = tcb(h)->s->now_ms + tcb(h)->ts_off;
	static uint8_t d[3 * 1448];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	h_advance(h, 7);

	/* TS first, the NOPs after it. */
	o[0] = NET_TCPOPT_TS;
	o[1] = NET_TCPOLEN_TS;
	net_put32(o + 2, h->ts);
	net_put32(o + 6, tsv);
	o[10] = NET_TCPOPT_NOP;
	o[11] = NET_TCPOPT_NOP;
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1448, 65535, o, 12, NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 1);
	assert_int_equal(tcb(h)->ts_recent, h->ts);
	assert_int_equal(tcb(h)->srtt8 / 8, 7);

	h_advance(h, 1);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 2 * 1448, 65535, o, h_opt_ts(o, h->ts, tsv + 7),
	      NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 2);
	assert_int_equal(tcb(h)->ts_recent, h->ts);

	/* Without the option on a timestamp connection: the general path. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 3 * 1448, 65535, NULL, 0, NULL, 0);
	assert_int_equal(st(h)->tcp_fast_acks, 2);
	assert_int_equal(tcb(h)->snd_una, snd + 3 * 1448);
}

/* A segment whose payload starts at an odd offset of a send-queue chunk and
 * runs on into the next (its second piece at an odd offset of the segment)
 * still carries the right sum (h_pop checks every one) and the right bytes. */
static void test_copy_sum_odd_pieces(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg sg;
	open_plain(h, ISN, &snd, &cseq);
	static uint8_t d[5001];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(i * 7 + (i >> 8));
	assert_true(tp_send(tp(h), h->app.conn, d, 2001));
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1461, 65535, NULL, 0, NULL, 0);
	assert_int_equal(tcb(h)->sq_off, 1461);
	assert_true(tp_send(tp(h), h->app.conn, d + 2001, 3000));
	tp(h)->ops->flush(tp(h));
	uint32_t got = 0;
	while (h_pop(h, &sg)) {
		assert_int_equal(sg.seq, snd + 2001 + got);
		assert_memory_equal(sg.data, d + 2001 + got, sg.dlen);
		got += sg.dlen;
	}
	assert_int_equal(got, 3000);
}

/*
 * The send path's prediction (tcp_out_send): new bytes that fit one segment
 * and the windows leave as one segment with PSH, and with it everything the
 * general loop does: the sequence space, the counter, the RTT timing, the
 * retransmission timer and the app's drain. Bytes that do not fit the peer's
 * window are left to the loop, which sends what fits (no PSH) and marks the
 * connection blocked.
 */
static void test_send_prediction(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg sg;
	static uint8_t d[200];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(i + 3);
	open_plain(h, ISN, &snd, &cseq);
	struct net_conn *c = tcb(h);
	int drains = h->app.drains;
	uint64_t out0 = st(h)->tcp_bytes_out;

	assert_true(tp_send(tp(h), h->app.conn, d, 100));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &sg));
	assert_int_equal(sg.seq, snd);
	assert_int_equal(sg.dlen, 100);
	assert_int_equal(sg.flags, NET_TCP_ACK | NET_TCP_PSH);
	assert_memory_equal(sg.data, d, 100);
	assert_false(h_pop(h, &sg));
	assert_int_equal(c->snd_nxt, snd + 100);
	assert_int_equal(c->snd_max, snd + 100);
	assert_true(c->flags & NC_RTT);
	assert_int_equal(c->rtt_seq, snd);
	assert_true(c->timer.armed);
	assert_int_equal(st(h)->tcp_bytes_out - out0, 100);
	assert_int_equal(h->app.drains, drains + 1);
	assert_false(c->flags & NC_BLOCKED);

	/* The peer's window shrinks to 50 bytes. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 100, 50, NULL, 0, NULL, 0);
	assert_int_equal(c->snd_wnd, 50);
	assert_true(tp_send(tp(h), h->app.conn, d + 100, 100));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &sg));
	assert_int_equal(sg.seq, snd + 100);
	assert_int_equal(sg.dlen, 50);
	assert_int_equal(sg.flags, NET_TCP_ACK);
	assert_memory_equal(sg.data, d + 100, 50);
	assert_false(h_pop(h, &sg));
	assert_true(c->flags & NC_BLOCKED);
	assert_int_equal(c->snd_nxt, snd + 150);
}

/* Sends n bytes of d with hint hi, as the app sends a shared frame. */
static void send_hinted(struct h *h, const uint8_t *d, size_t n, struct tp_tx_hint *hi)
{
	assert_true(tp_send_hinted(tp(h), h->app.conn, d, n, hi));
}

/* Pops every segment the flush sent, checking the bytes (h_pop checks the
 * checksums); returns how many. */
static uint32_t pop_all(struct h *h, uint32_t snd, const uint8_t *d, uint32_t *got)
{
	struct h_seg sg;
	uint32_t n = 0;
	while (h_pop(h, &sg)) {
		if (sg.dlen == 0)
			continue;
		assert_int_equal(sg.seq, snd + *got);
		assert_memory_equal(sg.data, d + *got, sg.dlen);
		*got += sg.dlen;
		n++;
	}
	return n;
}

/*
 * Bytes sent with a hint (the app's shared frames): the first connection
 * takes their sum into the hint, and a segment of exactly the summed bytes
 * sums only its header. Runs of odd length follow each other in one segment
 * (the second run's sum then byte-swapped), a run is cut by the MSS, a run
 * follows unhinted bytes, and a run is sent again after a timeout: every
 * segment's checksum is checked by h_pop, on a timestamp connection (32-byte
 * header) and on a plain one (20).
 */
static void hinted_case(struct h *h, bool ts)
{
	uint32_t snd, cseq, got = 0;
	static uint8_t d[6000];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(i * 13 + (i >> 7) + 1);
	if (ts)
		open_ts(h, &snd, &cseq);
	else
		open_plain(h, ISN, &snd, &cseq);
	struct net_conn *c = tcb(h);

	/* One run, one segment: the hint is filled and the run recorded. */
	struct tp_tx_hint a = {0};
	send_hinted(h, d, 151, &a);
	assert_true(a.valid);
	assert_int_equal(c->sum_len, 151);
	tp(h)->ops->flush(tp(h));
	assert_int_equal(pop_all(h, snd, d, &got), 1);
	assert_int_equal(c->sum_len, 0);

	/* The same bytes again with the same hint, valid already: its sum is
	 * taken as it is (h_pop's check would catch a wrong one). */
	memcpy(d + 151, d, 151);
	uint32_t sum_a = a.sum;
	send_hinted(h, d + 151, 151, &a);
	assert_int_equal(a.sum, sum_a);
	assert_int_equal(c->sum_len, 151);
	tp(h)->ops->flush(tp(h));
	assert_int_equal(pop_all(h, snd, d, &got), 1);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + got, 65535, NULL, 0, NULL, 0);

	/* Odd runs back to back, each with its own hint: one run of 151 + 77
	 * + 300 bytes, one segment. */
	struct tp_tx_hint r1 = {0}, r2 = {0}, r3 = {0};
	send_hinted(h, d + got, 151, &r1);
	send_hinted(h, d + got + 151, 77, &r2);
	send_hinted(h, d + got + 228, 300, &r3);
	assert_int_equal(c->sum_len, 528);
	tp(h)->ops->flush(tp(h));
	uint32_t base = got;
	assert_int_equal(pop_all(h, snd, d, &got), 1);
	assert_int_equal(got - base, 528);

	/* Unhinted bytes, then a run: the run starts after them, the segment
	 * holds both (summed whole). */
	assert_true(tp_send(tp(h), h->app.conn, d + got, 33));
	struct tp_tx_hint r4 = {0};
	send_hinted(h, d + got + 33, 90, &r4);
	assert_int_equal(c->sum_seq, snd + got + 33);
	tp(h)->ops->flush(tp(h));
	assert_int_equal(pop_all(h, snd, d, &got), 1);
	assert_int_equal(c->sum_len, 0);

	/* A run longer than one segment: cut by the MSS, summed whole. */
	struct tp_tx_hint r5 = {0};
	send_hinted(h, d + got, 3001, &r5);
	tp(h)->ops->flush(tp(h));
	assert_true(pop_all(h, snd, d, &got) >= 3);
	assert_int_equal(c->sum_len, 0);

	/* A run lost and sent again after the timeout: summed again, right
	 * (every copy, the probe's and the RTO's alike). */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + got, 65535, NULL, 0, NULL, 0);
	struct tp_tx_hint r6 = {0};
	send_hinted(h, d + got, 201, &r6);
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	h_advance(h, 2000);
	struct h_seg sg;
	uint32_t copies = 0;
	while (h_pop(h, &sg)) {
		if (sg.dlen == 0)
			continue;
		assert_int_equal(sg.seq, snd + got);
		assert_int_equal(sg.dlen, 201);
		assert_memory_equal(sg.data, d + got, 201);
		copies++;
	}
	assert_true(copies >= 1);
}

static void test_hinted_sums_ts(void **state)
{
	hinted_case(*state, true);
}

static void test_hinted_sums_plain(void **state)
{
	hinted_case(*state, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fast_ack_equals_slow_ts),
		cmocka_unit_test(test_fast_ack_equals_slow_plain),
		cmocka_unit_test_setup_teardown(test_fast_ack_refused, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_fast_ack_ts_layouts, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_copy_sum_odd_pieces, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_send_prediction, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_hinted_sums_ts, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_hinted_sums_plain, h_setup, h_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
