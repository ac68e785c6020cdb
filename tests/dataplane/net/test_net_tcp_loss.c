/*
 * Unit tests of the native stack's loss recovery (net_tcp_loss.c,
 * net_tcp_newreno.c, net_tcp_sack.c): retransmission timeouts and their
 * back-off, fast retransmit, SACK recovery, tail loss probes and NewReno's
 * partial ACKs, driven by crafted segments under a virtual clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/net_int.h"
#include "net/net_tcp.h"
#include "net_harness.h"
#include "tcp_cases.h"

static void test_rto_backoff(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	assert_true(tp_send(tp(h), h->app.conn, "data", 4));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	static const uint32_t gaps[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(gaps); i++) {
		h_advance(h, gaps[i] - 1);
		assert_int_equal(h_pending(h), 0);
		h_advance(h, 1);
		assert_true(h_pop(h, &s));
		assert_int_equal(s.seq, snd);
		assert_int_equal(s.dlen, 4);
	}
	assert_int_equal(st(h)->tcp_rto, SLUICE_ARRAY_LEN(gaps));
	/* An ACK resets the back-off; RTT samples pull the RTO down to 200 ms. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 4, 65535, NULL, 0, NULL, 0);
	assert_true(tp_send(tp(h), h->app.conn, "more", 4));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	h_advance(h, 10);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 8, 65535, NULL, 0, NULL, 0);
	assert_true(tp_send(tp(h), h->app.conn, "again", 5));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	h_advance(h, NET_TCP_RTO_MIN_MS + 1);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd + 8);
}

static void test_give_up_after_retries(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	open_plain(h, ISN, &snd, &cseq);
	assert_true(tp_send(tp(h), h->app.conn, "data", 4));
	tp(h)->ops->flush(tp(h));
	for (int i = 0; i < 20 && h->app.closes == 0; i++) {
		h_advance(h, 60001);
		h_drain(h);
	}
	assert_int_equal(h->app.closes, 1);
	assert_int_equal(st(h)->tcp_timeouts, 1);
	assert_int_equal(st(h)->conns_open, 0);
}

static void test_fast_retransmit(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	uint8_t o[40];
	open_ts(h, &snd, &cseq);
	static uint8_t d[8000];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	uint32_t mss = 1460 - 12, n = 0;
	while (h_pop(h, &s))
		n++;
	assert_int_equal(n, (8000 + mss - 1) / mss);
	/* Segment 1 lost: three duplicate ACKs with SACK blocks. */
	for (uint32_t i = 1; i <= 3; i++) {
		uint32_t ol = h_opt_ts(o, h->ts, 0);
		o[ol++] = NET_TCPOPT_NOP;
		o[ol++] = NET_TCPOPT_NOP;
		o[ol++] = NET_TCPOPT_SACK;
		o[ol++] = 10;
		net_put32(o + ol, snd + mss);
		net_put32(o + ol + 4, snd + mss * (i + 1));
		ol += 8;
		h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, o, ol, NULL, 0);
		if (i < 3)
			assert_int_equal(h_pending(h), 0);
	}
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd);
	assert_int_equal(s.dlen, mss);
	assert_int_equal(st(h)->tcp_fast_retransmits, 1);
	assert_int_equal(st(h)->tcp_rto, 0);
	/* The full ACK ends recovery. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 8000, 65535, o, h_opt_ts(o, h->ts, 0), NULL, 0);
	struct tp_conn_info ti;
	tp_info(tp(h), h->app.conn, &ti);
	assert_int_equal(ti.unacked, 0);
}

/* An ACK from the client at `ack` with timestamps and the given SACK
 * blocks, carrying dlen bytes of the client's own data and window win. */
static void ack_sack(struct h *h, uint32_t *cseq, uint32_t ack, uint16_t win,
		     const uint32_t (*blk)[2], uint32_t nblk, uint32_t dlen)
{
	static const uint8_t junk[64];
	uint8_t o[40];
	uint32_t ol = h_opt_ts(o, h->ts, 0);
	if (nblk) {
		o[ol++] = NET_TCPOPT_NOP;
		o[ol++] = NET_TCPOPT_NOP;
		o[ol++] = NET_TCPOPT_SACK;
		o[ol++] = (uint8_t)(2 + 8 * nblk);
		for (uint32_t i = 0; i < nblk; i++) {
			net_put32(o + ol, blk[i][0]);
			net_put32(o + ol + 4, blk[i][1]);
			ol += 8;
		}
	}
	h_tcp(h, H_CPORT, NET_TCP_ACK, *cseq, ack, win, o, ol, junk, dlen);
	*cseq += dlen;
}

/* 100 bytes out and ACKed 5 ms later with window win: an RTT sample. */
static void rtt_exchange(struct h *h, uint32_t *snd, uint32_t *cseq, uint16_t win)
{
	static const uint8_t d[100];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	h_advance(h, 5);
	ack_sack(h, cseq, *snd + 100, win, NULL, 0, 0);
	*snd += 100;
}

/* Data segments the stack sent below `below` (retransmissions), in order. */
static uint32_t pop_rtx(struct h *h, uint32_t below, uint32_t *seqs, uint32_t max)
{
	struct h_seg s;
	uint32_t n = 0;
	while (h_pop(h, &s))
		if (s.dlen > 0 && (int32_t)(s.seq - below) < 0 && n < max)
			seqs[n++] = s.seq;
	return n;
}

/*
 * Three segments lost out of ten while the peer keeps sending data and
 * moving its window (the WebSocket echo case): every ACK carries data and a
 * different window, so only the SACK information says "duplicate". All three
 * holes must be resent within the same round trip, with no timer running.
 */
static void test_sack_recovery_all_holes(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq, seqs[16];
	struct h_seg s;
	open_ts(h, &snd, &cseq);
	const uint32_t mss = 1460 - 12;
	static uint8_t d[20 * 1448];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	uint32_t n = 0;
	while (h_pop(h, &s))
		n += s.dlen > 0;
	assert_int_equal(n, 10);
	uint32_t seg[16];
	for (uint32_t i = 0; i < 16; i++)
		seg[i] = snd + i * mss;
	/* Segments 1, 3 and 5 are lost; the peer reports 2, 4, 6..9 as they
	 * come, most recent block first, at most three blocks. */
	uint16_t win = 60000;
	ack_sack(h, &cseq, seg[1], win--, NULL, 0, 10);
	const uint32_t b2[][2] = {{seg[2], seg[3]}};
	ack_sack(h, &cseq, seg[1], win--, b2, 1, 10);
	const uint32_t b4[][2] = {{seg[4], seg[5]}, {seg[2], seg[3]}};
	ack_sack(h, &cseq, seg[1], win--, b4, 2, 10);
	assert_int_equal(pop_rtx(h, seg[10], seqs, 16), 0);
	const uint32_t b6[][2] = {{seg[6], seg[7]}, {seg[4], seg[5]}, {seg[2], seg[3]}};
	ack_sack(h, &cseq, seg[1], win--, b6, 3, 10);
	/* Three SACKed blocks above segment 1: it is lost, recovery starts. */
	assert_int_equal(pop_rtx(h, seg[10], seqs, 16), 1);
	assert_int_equal(seqs[0], seg[1]);
	assert_int_equal(st(h)->tcp_recoveries, 1);
	/* The rest of the flight, and the new segments that pipe let out
	 * meanwhile, are SACKed as they arrive: the same round trip. */
	uint32_t got = 0;
	struct tp_conn_info ti;
	for (uint32_t k = 7; k < 15 && got < 2; k++) {
		tp_info(tp(h), h->app.conn, &ti);
		uint32_t hi = seg[1] + ti.unacked;
		uint32_t end = (int32_t)(seg[k + 1] - hi) < 0 ? seg[k + 1] : hi;
		const uint32_t b[][2] = {{seg[6], end}, {seg[4], seg[5]}, {seg[2], seg[3]}};
		ack_sack(h, &cseq, seg[1], win--, b, 3, 10);
		got += pop_rtx(h, seg[10], seqs + got, 16 - got);
	}
	/* Segments 3 and 5 went out again, each once, before any timer. */
	assert_int_equal(got, 2);
	assert_int_equal(seqs[0], seg[3]);
	assert_int_equal(seqs[1], seg[5]);
	assert_int_equal(st(h)->tcp_rto, 0);
	assert_int_equal(st(h)->tcp_fast_retransmits, 3);
	assert_int_equal(pop_rtx(h, seg[10], seqs, 16), 0);
	/* The retransmissions arrive: a full ACK ends recovery. */
	tp_info(tp(h), h->app.conn, &ti);
	ack_sack(h, &cseq, seg[1] + ti.unacked, win, NULL, 0, 0);
	tp_info(tp(h), h->app.conn, &ti);
	assert_true(ti.cwnd >= 2 * mss);
	assert_int_equal(st(h)->tcp_rto, 0);
}

/* A lost tail (nothing after it to be SACKed) is probed after about two
 * SRTTs (RFC 8985 7), long before the 200 ms minimum RTO; the SACK of the
 * probe with the hole still open starts recovery at once. */
static void test_tail_loss_probe(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq, seqs[16];
	open_ts(h, &snd, &cseq);
	const uint32_t mss = 1460 - 12;
	static uint8_t d[4 * 1448];
	rtt_exchange(h, &snd, &cseq, 60000);
	assert_true(tp_send(tp(h), h->app.conn, d, 3 * mss));
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	/* Segment 0 arrives, 1 and 2 are lost: one ACK, then silence. */
	ack_sack(h, &cseq, snd + mss, 60000, NULL, 0, 0);
	h_drain(h);
	h_advance(h, NET_TCP_TLP_MIN_MS + NET_TCP_TLP_DELACK_MS / 2);
	assert_int_equal(st(h)->tcp_tlp, 1);
	assert_int_equal(st(h)->tcp_rto, 0);
	assert_int_equal(pop_rtx(h, snd + 3 * mss, seqs, 16), 1);
	assert_int_equal(seqs[0], snd + 2 * mss);
	/* The probe is SACKed, segment 1 is still missing: recovery resends it. */
	const uint32_t b[][2] = {{snd + 2 * mss, snd + 3 * mss}};
	ack_sack(h, &cseq, snd + mss, 60000, b, 1, 0);
	assert_int_equal(st(h)->tcp_recoveries, 1);
	assert_int_equal(pop_rtx(h, snd + 3 * mss, seqs, 16), 1);
	assert_int_equal(seqs[0], snd + mss);
	assert_int_equal(st(h)->tcp_rto, 0);
}

/*
 * A probe with the peer's window full: new data cannot go, so the probe is
 * the last segment sent. It used to be the last segment *queued* - bytes
 * never sent, past the peer's window and past snd_max - so the peer's ACK
 * of them was above snd_max and refused with a challenge ACK, every time:
 * its FIN too (a /metrics client stuck in FIN-WAIT-1 under load).
 */
static void test_tail_loss_probe_window_full(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_ts(h, &snd, &cseq);
	const uint32_t mss = 1460 - 12;
	static uint8_t d[10000];
	/* 23 << 7 = 2944 bytes: two full segments, then 48 that wait (SWS). */
	rtt_exchange(h, &snd, &cseq, 23);
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	uint32_t sent = 0;
	while (h_pop(h, &s))
		sent += s.dlen;
	assert_int_equal(sent, 2 * mss);
	h_advance(h, NET_TCP_TLP_MIN_MS + 1);
	assert_int_equal(st(h)->tcp_tlp, 1);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd + mss);
	assert_int_equal(s.dlen, mss);
	assert_int_equal(h_pending(h), 0);
	/* The peer ACKs all it got, then closes: both are taken. */
	ack_sack(h, &cseq, snd + 2 * mss, 23, NULL, 0, 0);
	assert_int_equal(st(h)->tcp_challenge_acks, 0);
	h_drain(h);
	uint8_t o[40];
	h_tcp(h, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq, snd + 2 * mss, 23, o,
	      h_opt_ts(o, h->ts, 0), NULL, 0);
	assert_int_equal(h->app.eofs, 1);
	assert_int_equal(st(h)->tcp_challenge_acks, 0);
}

/* Without SACK: NewReno. A partial ACK resends the next hole at once
 * (RFC 6582) instead of waiting for three more duplicates or the RTO. */
static void test_newreno_partial_ack(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	const uint32_t mss = 1460;
	static uint8_t d[10 * 1460];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	/* Segments 0 and 4 lost: duplicates of snd. */
	for (int i = 0; i < 3; i++)
		h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd);
	assert_int_equal(st(h)->tcp_fast_retransmits, 1);
	h_drain(h);
	/* The retransmission fills the first hole: the ACK stops at 4. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 4 * mss, 65535, NULL, 0, NULL, 0);
	bool resent = false;
	while (h_pop(h, &s))
		if (s.dlen > 0 && s.seq == snd + 4 * mss)
			resent = true;
	assert_true(resent);
	assert_int_equal(st(h)->tcp_rto, 0);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 10 * mss, 65535, NULL, 0, NULL, 0);
	struct tp_conn_info ti;
	tp_info(tp(h), h->app.conn, &ti);
	assert_int_equal(ti.unacked, 0);
	assert_int_equal(st(h)->tcp_rto, 0);
}
int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rto_backoff, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_give_up_after_retries, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_fast_retransmit, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_sack_recovery_all_holes, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_tail_loss_probe, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_tail_loss_probe_window_full, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_newreno_partial_ack, h_setup, h_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
