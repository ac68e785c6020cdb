/*
 * Unit tests of the native stack's TCP, driven by crafted segments under a
 * virtual clock (see net_harness.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/net_csum.h"
#include "net/net_int.h"
#include "net/net_tcp.h"
#include "net_harness.h"
#include "tcp_cases.h"


static void test_handshake_options(void **state)
{
	struct h *h = *state;
	uint8_t o[40];
	struct h_seg sa;
	uint32_t olen = h_opt_syn(o, 1400, 7, true, true, 777);
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, o, olen, NULL, 0);
	assert_true(h_pop(h, &sa));
	assert_int_equal(sa.flags, NET_TCP_SYN | NET_TCP_ACK);
	assert_int_equal(sa.ack, ISN + 1);
	assert_true(sa.has_mss);
	assert_int_equal(sa.mss, 1460);
	assert_int_equal(sa.ws, 1); /* 65536-byte buffer needs a shift of 1 */
	assert_true(sa.sack_perm);
	assert_true(sa.has_ts);
	assert_int_equal(sa.tsecr, 777);
	assert_int_equal(h->app.opens, 0);
	/* The ACK completes it. */
	olen = h_opt_ts(o, 778, sa.tsval);
	h_tcp(h, H_CPORT, NET_TCP_ACK, ISN + 1, sa.seq + 1, 65535, o, olen, NULL, 0);
	assert_int_equal(h->app.opens, 1);
	assert_int_equal(h_pending(h), 0);
	/* Data segments carry timestamps and an MSS-sized payload minus them. */
	static uint8_t big[4000];
	assert_true(tp_send(tp(h), h->app.conn, big, sizeof(big)));
	tp(h)->ops->flush(tp(h));
	struct h_seg d;
	assert_true(h_pop(h, &d));
	assert_true(d.has_ts);
	assert_int_equal(d.dlen, 1400 - 12);
	assert_int_equal(d.tsecr, 778);

	/* Without options: MSS only, default peer MSS 536. */
	h_tcp(h, H_CPORT + 1, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	h_drain(h);
	h_tcp(h, H_CPORT + 2, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &sa));
	assert_true(sa.has_mss);
	assert_false(sa.has_ts);
	assert_false(sa.sack_perm);
	assert_int_equal(sa.ws, -1);
	assert_int_equal(sa.win, 65535);
}

static void test_isn_differs(void **state)
{
	struct h *h = *state;
	struct h_seg a, b;
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &a));
	h_tcp(h, H_CPORT + 1, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &b));
	assert_int_not_equal(a.seq, b.seq);
	/* A retransmitted SYN gets the same SYN-ACK. */
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &b));
	assert_int_equal(a.seq, b.seq);
}

static void test_data_in_delayed_ack(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	h_tcp(h, H_CPORT, NET_TCP_ACK | NET_TCP_PSH, cseq, snd, 65535, NULL, 0, "hello", 5);
	assert_int_equal(h->app.rx_len, 5);
	assert_memory_equal(h->app.rx, "hello", 5);
	assert_int_equal(h_pending(h), 0); /* delayed */
	h_advance(h, NET_TCP_DELACK_MS - 1);
	assert_int_equal(h_pending(h), 0);
	h_advance(h, 2);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 5);
	cseq += 5;
	/* Every second segment is ACKed at once. */
	static uint8_t d[1460];
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, NULL, 0, d, sizeof(d));
	assert_int_equal(h_pending(h), 0);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 1460, snd, 65535, NULL, 0, d, sizeof(d));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 2920);
}

static void test_data_out_and_drain(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	uint8_t d[3000];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)i;
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	struct tp_conn_info ti;
	tp_info(tp(h), h->app.conn, &ti);
	assert_int_equal(ti.tx_queued, 3000);
	tp(h)->ops->flush(tp(h));
	assert_int_equal(h->app.drains, 1);
	uint32_t got = 0;
	while (h_pop(h, &s)) {
		assert_int_equal(s.seq, snd + got);
		assert_memory_equal(s.data, d + got, s.dlen);
		assert_true(s.dlen <= 1460);
		got += s.dlen;
	}
	assert_int_equal(got, 3000);
	tp_info(tp(h), h->app.conn, &ti);
	assert_int_equal(ti.tx_queued, 0);
	assert_int_equal(ti.unacked, 3000);
	assert_int_equal(ti.cwnd, 10 * 1460);
	assert_int_equal(ti.snd_wnd, 65535);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 3000, 65535, NULL, 0, NULL, 0);
	tp_info(tp(h), h->app.conn, &ti);
	assert_int_equal(ti.unacked, 0);
	/* All acknowledged: the connection holds no chunk. */
	assert_int_equal(h_pending(h), 0);
}

/* The send pool is handed out untouched chunks first, runs dry at exactly
 * tx_chunks (the send fails and is counted), and serves again from what
 * acknowledged data gave back, without touching new chunks. */
static void test_send_pool_dry_and_reused(void **state)
{
	struct net_stack_conf c;
	h_conf(&c);
	c.tx_chunks = 3;
	struct h *h = h_reinit(state, &c);
	uint32_t snd, cseq;
	struct h_seg s;
	static uint8_t d[3 * NET_CHUNK_DATA];
	open_plain(h, ISN, &snd, &cseq);
	assert_int_equal(h->s->chunks_fresh, 0);
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	assert_int_equal(h->s->chunks_fresh, 3);
	assert_false(tp_send(tp(h), h->app.conn, "x", 1));
	assert_int_equal(st(h)->tcp_tx_nobuf, 1);
	tp(h)->ops->flush(tp(h));
	h_drain(h);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + sizeof(d), 65535, NULL, 0, NULL, 0);
	assert_true(tp_send(tp(h), h->app.conn, d, 2 * NET_CHUNK_DATA));
	assert_int_equal(h->s->chunks_fresh, 3);
	tp(h)->ops->flush(tp(h));
	uint32_t got = 0;
	while (h_pop(h, &s))
		got += s.dlen;
	assert_int_equal(got, 2 * NET_CHUNK_DATA);
	assert_int_equal(st(h)->tcp_tx_nobuf, 1);
}

static void test_passive_close(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	h_tcp(h, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq, snd, 65535, NULL, 0, "x", 1);
	assert_int_equal(h->app.eofs, 1);
	assert_int_equal(h->app.rx_len, 1);
	assert_true(h_pop(h, &s)); /* CLOSE_WAIT: FIN ACKed at once */
	assert_int_equal(s.ack, cseq + 2);
	assert_int_equal(s.flags, NET_TCP_ACK);
	/* The app still sends in CLOSE_WAIT, then closes: data, then FIN (LAST_ACK). */
	assert_true(tp_send(tp(h), h->app.conn, "bye", 3));
	tp_close(tp(h), h->app.conn, false);
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.dlen, 3);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_ACK | NET_TCP_FIN);
	assert_int_equal(s.seq, snd + 3);
	assert_int_equal(h->app.closes, 0);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 2, snd + 4, 65535, NULL, 0, NULL, 0);
	assert_int_equal(h->app.closes, 1);
	assert_int_equal(st(h)->conns_open, 0);
}

static void test_active_close_time_wait(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	tp_close(tp(h), h->app.conn, false);
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_ACK | NET_TCP_FIN); /* FIN_WAIT_1 */
	/* FIN ACKed: FIN_WAIT_2, the app is done with it. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1, 65535, NULL, 0, NULL, 0);
	assert_int_equal(h->app.closes, 1);
	/* Data in FIN_WAIT_2 is ACKed and discarded. */
	h_tcp(h, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq, snd + 1, 65535, NULL, 0, "zz", 2);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 3);
	assert_int_equal(h->app.rx_len, 0);
	assert_int_equal(st(h)->conns_open, 1); /* TIME_WAIT */
	/* A retransmitted FIN is ACKed again. */
	h_tcp(h, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq, snd + 1, 65535, NULL, 0, "zz", 2);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 3);
	h_advance(h, 29990);
	assert_int_equal(st(h)->conns_open, 1);
	h_advance(h, 20);
	assert_int_equal(st(h)->conns_open, 0);
}

static void test_fin_wait2_timeout(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	open_plain(h, ISN, &snd, &cseq);
	tp_close(tp(h), h->app.conn, false);
	tp(h)->ops->flush(tp(h));
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1, 65535, NULL, 0, NULL, 0);
	h_drain(h);
	assert_int_equal(st(h)->conns_open, 1);
	h_advance(h, 60010);
	assert_int_equal(st(h)->conns_open, 0);
}

static void test_simultaneous_close(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	tp_close(tp(h), h->app.conn, false);
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags & NET_TCP_FIN, NET_TCP_FIN);
	/* The peer's FIN crosses ours: CLOSING. */
	h_tcp(h, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq, snd, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 1);
	assert_int_equal(st(h)->conns_open, 1);
	/* Its ACK of our FIN: TIME_WAIT. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 1, snd + 1, 65535, NULL, 0, NULL, 0);
	assert_int_equal(h->app.closes, 1);
	assert_int_equal(st(h)->conns_open, 1);
	h_advance(h, 30001);
	assert_int_equal(st(h)->conns_open, 0);
}

static void test_rst_handling(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	/* Out of window: ignored silently. */
	h_tcp(h, H_CPORT, NET_TCP_RST, cseq + 200000, 0, 0, NULL, 0, NULL, 0);
	assert_int_equal(h_pending(h), 0);
	assert_int_equal(h->app.closes, 0);
	/* In window but not exact: challenge ACK (RFC 5961 3.2). */
	h_tcp(h, H_CPORT, NET_TCP_RST, cseq + 100, 0, 0, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_ACK);
	assert_int_equal(s.ack, cseq);
	assert_int_equal(h->app.closes, 0);
	assert_int_equal(st(h)->tcp_challenge_acks, 1);
	/* Exact: reset. */
	h_tcp(h, H_CPORT, NET_TCP_RST, cseq, 0, 0, NULL, 0, NULL, 0);
	assert_int_equal(h->app.closes, 1);
	assert_int_equal(h_pending(h), 0);
	assert_int_equal(st(h)->conns_open, 0);
}

static void test_syn_in_window_challenge_limit(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	for (int i = 0; i < 25; i++)
		h_tcp(h, H_CPORT, NET_TCP_SYN, cseq + (uint32_t)i, 0, 65535, NULL, 0, NULL, 0);
	int acks = 0;
	while (h_pop(h, &s)) {
		assert_int_equal(s.flags, NET_TCP_ACK);
		assert_int_equal(s.ack, cseq);
		acks++;
	}
	assert_int_equal(acks, 10);
	assert_int_equal(st(h)->tcp_challenge_limited, 15);
	assert_int_equal(h->app.closes, 0);
	/* A new second, a new allowance. A SYN out of window is challenged too. */
	h_advance(h, 1000);
	h_tcp(h, H_CPORT, NET_TCP_SYN, cseq - 5000000, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_ACK);
	assert_int_equal(h->app.closes, 0);
}

static void test_ack_validation(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	/* ACK of data never sent: ACK back, segment dropped. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 5000, 65535, NULL, 0, "abc", 3);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq);
	assert_int_equal(h->app.rx_len, 0);
	/* Far in the past (beyond the max window): same. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd - 200000, 65535, NULL, 0, "abc", 3);
	assert_true(h_pop(h, &s));
	assert_int_equal(h->app.rx_len, 0);
	/* Slightly old ACKs are fine: the data is taken. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd - 10, 65535, NULL, 0, "abc", 3);
	assert_int_equal(h->app.rx_len, 3);
}

static void test_closed_port_and_stray(void **state)
{
	struct h *h = *state;
	struct h_seg s;
	uint8_t f[200];
	uint32_t len = h_build(f, H_CPORT, NET_TCP_SYN, 555, 0, 65535, NULL, 0, NULL, 0);
	struct net_tcp *t = (struct net_tcp *)(f + NET_ETH_HLEN + NET_IP_HLEN);
	/* Another destination port, checksum fixed by incremental update. */
	uint16_t old = net_ntohs(t->csum);
	t->dport = net_htons(9999);
	t->csum = net_htons(net_csum_update16(old, H_PORT, 9999));
	h_input(h, f, len);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_RST | NET_TCP_ACK);
	assert_int_equal(s.seq, 0);
	assert_int_equal(s.ack, 556);
	assert_int_equal(st(h)->tcp_no_port, 1);
	/* A stray ACK to the listening port: RST with seq = its ack. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, 1, 12345, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_RST);
	assert_int_equal(s.seq, 12345);
	/* A stray RST gets nothing. */
	h_tcp(h, H_CPORT, NET_TCP_RST, 1, 0, 0, NULL, 0, NULL, 0);
	assert_int_equal(h_pending(h), 0);
}

static void test_refused_by_app(void **state)
{
	struct h *h = *state;
	struct h_seg sa, s;
	h->app.refuse = true;
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &sa));
	h_tcp(h, H_CPORT, NET_TCP_ACK, ISN + 1, sa.seq + 1, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_true(s.flags & NET_TCP_RST);
	assert_int_equal(h->app.closes, 0);
	assert_int_equal(st(h)->conns_open, 0);
}

static void test_sequence_wrap(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, 0xffffff00u, &snd, &cseq);
	static uint8_t d[1000];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(i * 3);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, NULL, 0, d, 500);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 500, snd, 65535, NULL, 0, d + 500, 500);
	assert_int_equal(h->app.rx_len, 1000);
	assert_memory_equal(h->app.rx, d, 1000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 1000);
	assert_true(s.ack < 0x1000u); /* wrapped */
	/* A duplicate from before the wrap is ACKed, not delivered. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, NULL, 0, d, 500);
	assert_int_equal(h->app.rx_len, 1000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 1000);
}

/*
 * TSval = the stack's clock + a per-connection offset, a keyed hash of the
 * 4-tuple (RFC 7323 7.1): it no longer tells the uptime, differs between
 * connections, advances with the clock, is the same again for the same
 * tuple, and echoes still time the round trip.
 */
static void test_timestamp_offsets(void **state)
{
	struct h *h = *state;
	struct h_seg a1, a2, a3, s;
	uint32_t snd, cseq, snd2, cseq2;
	uint32_t ms = (uint32_t)(h->now / H_MS);
	h_handshake(h, H_CPORT, ISN, true, 7, true, &snd, &cseq, &a1);
	struct tp_conn *c1 = h->app.conn;
	h_handshake(h, H_CPORT + 1, ISN, true, 7, true, &snd2, &cseq2, &a2);
	assert_int_equal(h->app.opens, 2);
	assert_int_not_equal(a1.tsval, ms);
	assert_int_not_equal(a2.tsval, ms);
	assert_int_not_equal(a1.tsval, a2.tsval);

	/* It advances with the clock; an echo 30 ms old is a 30 ms RTT. */
	h_advance(h, 100);
	assert_true(tp_send(tp(h), c1, "x", 1));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.tsval, a1.tsval + 100);
	h_advance(h, 30);
	uint8_t o[40];
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1, 65535, o, h_opt_ts(o, h->ts, s.tsval), NULL,
	      0);
	assert_int_equal(((struct net_conn *)(void *)c1)->srtt8 / 8, 30);

	/* The same tuple again: the same offset, so never a step back. */
	tp_close(tp(h), c1, true);
	h_drain(h);
	h_advance(h, 1);
	h_handshake(h, H_CPORT, ISN + 100000, true, 7, true, &snd, &cseq, &a3);
	assert_int_equal(a3.tsval, a1.tsval + 131);
}

static void test_malformed_options(void **state)
{
	struct h *h = *state;
	struct h_seg s;
	static const uint8_t bad[][8] = {
		{NET_TCPOPT_MSS, 0, 5, 0xb4, 1, 1, 1, 1},             /* length 0 */
		{NET_TCPOPT_MSS, 1, 5, 0xb4, 1, 1, 1, 1},             /* length 1 */
		{1, 1, 1, 1, 1, 1, NET_TCPOPT_TS, 10},                /* runs past the end */
		{1, 1, 1, 1, 1, 1, 1, NET_TCPOPT_SACK_PERM},          /* kind with no length */
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++)
		h_tcp(h, (uint16_t)(H_CPORT + i), NET_TCP_SYN, ISN, 0, 65535, bad[i], 8, NULL, 0);
	assert_int_equal(h_pending(h), 0);
	assert_int_equal(st(h)->tcp_bad_opts, SLUICE_ARRAY_LEN(bad));
	/* Unknown kinds and a known kind with a wrong length are skipped. */
	static const uint8_t odd[8] = {99, 4, 0, 0, NET_TCPOPT_WS, 4, 7, 0};
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, odd, 8, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_SYN | NET_TCP_ACK);
	assert_int_equal(s.ws, -1);
}

static void test_paws(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	uint8_t o[12];
	open_ts(h, &snd, &cseq);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 512, o, h_opt_ts(o, h->ts + 10, 0), "ab", 2);
	assert_int_equal(h->app.rx_len, 2);
	/* An older timestamp: dropped (PAWS), ACKed. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 2, snd, 512, o, h_opt_ts(o, h->ts + 5, 0), "cd", 2);
	assert_int_equal(h->app.rx_len, 2);
	assert_int_equal(st(h)->tcp_paws_drops, 1);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.tsecr, h->ts + 10);
	/* The echo follows the newest timestamp. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 2, snd, 512, o, h_opt_ts(o, h->ts + 20, 0), "cd", 2);
	assert_int_equal(h->app.rx_len, 4);
	h_advance(h, 50);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.tsecr, h->ts - 50 + 20);
}

static void test_ooo_and_sack_blocks(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	uint8_t o[12];
	open_ts(h, &snd, &cseq);
	uint8_t d[4000];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(i * 7 + 3);
	uint32_t ol = h_opt_ts(o, h->ts, 0);
	/* Segments 2 and 4 first: two SACK blocks, newest first. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 1000, snd, 512, o, ol, d + 1000, 1000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq);
	assert_int_equal(s.nsack, 1);
	assert_int_equal(s.sack[0][0], cseq + 1000);
	assert_int_equal(s.sack[0][1], cseq + 2000);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 3000, snd, 512, o, ol, d + 3000, 1000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.nsack, 2);
	assert_int_equal(s.sack[0][0], cseq + 3000);
	assert_int_equal(s.sack[1][0], cseq + 1000);
	assert_int_equal(h->app.rx_len, 0);
	/* The first hole fills: 0..2000 delivered, one block left. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 512, o, ol, d, 1000);
	assert_int_equal(h->app.rx_len, 2000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 2000);
	assert_int_equal(s.nsack, 1);
	assert_int_equal(s.sack[0][0], cseq + 3000);
	/* The last hole: everything, no blocks. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 2000, snd, 512, o, ol, d + 2000, 1000);
	assert_int_equal(h->app.rx_len, 4000);
	assert_memory_equal(h->app.rx, d, 4000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 4000);
	assert_int_equal(s.nsack, 0);
}

static void test_ooo_bounded(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	open_plain(h, ISN, &snd, &cseq);
	uint8_t d[100] = {0};
	/* NET_OOO_MAX + 1 disjoint ranges: the last is dropped. */
	for (uint32_t i = 0; i < NET_OOO_MAX + 1; i++)
		h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 200 * (i + 1), snd, 65535, NULL, 0, d, 100);
	assert_int_equal(st(h)->tcp_ooo_segs, NET_OOO_MAX);
	assert_int_equal(st(h)->tcp_ooo_drops, 1);
	/* An overlapping one still merges. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 250, snd, 65535, NULL, 0, d, 100);
	assert_int_equal(st(h)->tcp_ooo_segs, NET_OOO_MAX + 1);
}

/* After the app closed, in-order data that covers one held out-of-order
 * range and reaches into another (added before it) is discarded with both:
 * the discard once moved the buffer by the distance to the covered range's
 * end, a negative length, and crashed the worker. */
static void test_ooo_merge_after_close(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	tp_close(tp(h), h->app.conn, false);
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_ACK | NET_TCP_FIN);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1, 65535, NULL, 0, NULL, 0); /* FIN_WAIT_2 */
	assert_int_equal(h->app.closes, 1);
	static uint8_t d[3500];
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 3000, snd + 1, 65535, NULL, 0, d, 1000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 1000, snd + 1, 65535, NULL, 0, d, 1000);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1, 65535, NULL, 0, d, 3500);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 4000);
	assert_int_equal(h->app.rx_len, 0);
	/* The peer's FIN still ends it in TIME_WAIT. */
	h_tcp(h, H_CPORT, NET_TCP_ACK | NET_TCP_FIN, cseq + 4000, snd + 1, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 4001);
	assert_int_equal(st(h)->conns_open, 1);
}


static void test_zero_window_probe(void **state)
{
	struct h *h = *state;
	struct h_seg sa, s;
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &sa));
	uint32_t snd = sa.seq + 1, cseq = ISN + 1;
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 0, NULL, 0, NULL, 0);
	assert_true(tp_send(tp(h), h->app.conn, "blocked", 7));
	tp(h)->ops->flush(tp(h));
	assert_int_equal(h_pending(h), 0);
	struct tp_conn_info ti;
	tp_info(tp(h), h->app.conn, &ti);
	assert_true(ti.blocked);
	assert_int_equal(ti.tx_queued, 7);
	/* Probes at 1 s, then 2 s, then 4 s later. */
	static const uint32_t gaps[] = {1000, 2000, 4000};
	for (size_t i = 0; i < 3; i++) {
		h_advance(h, gaps[i] - 1);
		assert_int_equal(h_pending(h), 0);
		h_advance(h, 1);
		assert_true(h_pop(h, &s));
		assert_int_equal(s.seq, snd - 1);
		assert_int_equal(s.dlen, 0);
		/* The peer answers, window still zero. */
		h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 0, NULL, 0, NULL, 0);
		assert_int_equal(h_pending(h), 0);
	}
	assert_int_equal(st(h)->tcp_zwp, 3);
	/* Window opens: the data goes. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 1000, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.dlen, 7);
	assert_int_equal(h->app.closes, 0);
}

static void test_window_edges(void **state)
{
	struct h *h = *state;
	struct h_seg sa, s;
	/* Send side: exactly the peer's window, not a byte more. */
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &sa));
	uint32_t snd = sa.seq + 1, cseq = ISN + 1;
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 1100, NULL, 0, NULL, 0);
	static uint8_t d[70000];
	assert_true(tp_send(tp(h), h->app.conn, d, 3000));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.dlen, 536); /* no MSS option: 536 */
	/* 564 bytes of window left, one more full segment fits. */
	assert_true(h_pop(h, &s));
	assert_int_equal(s.dlen, 536);
	/* 28 bytes left: sender SWS avoidance waits. */
	assert_int_equal(h_pending(h), 0);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1072, 1100, NULL, 0, NULL, 0);
	uint32_t got = 0;
	while (h_pop(h, &s))
		got += s.dlen;
	assert_int_equal(got, 1072);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 2144, 1100, NULL, 0, NULL, 0);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 2144, 1100, NULL, 0, NULL, 0);
	got = 0;
	while (h_pop(h, &s))
		got += s.dlen;
	assert_int_equal(got, 856); /* the rest: 536 + 320 (the tail goes as is) */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 3000, 1100, NULL, 0, NULL, 0);

	/* Receive side: the app takes nothing; the window closes at rcv_buf. */
	h->app.consume_max = 0;
	uint32_t off = 0;
	while (off < 65536) {
		uint32_t n = 65536 - off < 536 ? 65536 - off : 536;
		h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + off, snd + 3000, 65535, NULL, 0, d, n);
		off += n;
	}
	h_advance(h, 50);
	uint32_t last_ack = 0, last_win = 1;
	while (h_pop(h, &s)) {
		last_ack = s.ack;
		last_win = s.win;
	}
	assert_int_equal(last_ack, cseq + 65536);
	assert_int_equal(last_win, 0);
	/* Beyond the window: not taken; the probe is answered with the edge. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 65536, snd + 3000, 65535, NULL, 0, d, 100);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 65536);
	assert_int_equal(s.win, 0);
	/* The app reads: window update. */
	h->app.consume_max = SIZE_MAX;
	tp_rx_resume(tp(h), h->app.conn);
	tp(h)->ops->poll(tp(h), 0, -1);
	assert_int_equal(h->app.rx_len, 65536);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.ack, cseq + 65536);
	assert_true(s.win >= 32768);
}

/*
 * The peer's window is taken from every ACK that moves snd_una, even when an
 * out-of-order segment with a higher sequence number set SND.WL1 (before,
 * the old window then counted from the new snd_una: data went past the
 * peer's offer); and never from an ACK below snd_una.
 */
static void test_window_update_rules(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq + 100, snd, 1460, NULL, 0, "0123456789", 10);
	h_drain(h);
	static uint8_t d[4000];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	uint32_t sent = 0;
	while (h_pop(h, &s))
		sent += s.dlen;
	assert_int_equal(sent, 1460);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1460, 500, NULL, 0, NULL, 0);
	sent = 0;
	while (h_pop(h, &s)) {
		assert_true((int32_t)(s.seq + s.dlen - (snd + 1460 + 500)) <= 0);
		sent += s.dlen;
	}
	assert_int_equal(sent, 500);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd + 1000, 65535, NULL, 0, NULL, 0);
	assert_int_equal(h_pending(h), 0);
}

static void test_syn_cookies(void **state)
{
	struct net_stack_conf c;
	h_conf(&c);
	c.syn_backlog = 1;
	struct h *h = h_reinit(state, &c);
	struct h_seg s1, s2, s;
	uint8_t o[40];
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s1));
	assert_int_equal(st(h)->tcp_cookies_sent, 0);
	/* Backlog full: a cookie, with options carried in the timestamp. */
	uint32_t ol = h_opt_syn(o, 1460, 5, true, true, 4242);
	h_tcp(h, H_CPORT + 1, NET_TCP_SYN, 777, 0, 65535, o, ol, NULL, 0);
	assert_true(h_pop(h, &s2));
	assert_int_equal(s2.flags, NET_TCP_SYN | NET_TCP_ACK);
	assert_int_equal(st(h)->tcp_cookies_sent, 1);
	assert_int_equal(st(h)->conns_open, 1);
	assert_true(s2.has_ts);
	assert_true(s2.sack_perm);
	/* A wrong cookie is refused. */
	h_tcp(h, H_CPORT + 1, NET_TCP_ACK, 778, s2.seq + 2, 65535, o, h_opt_ts(o, 4243, s2.tsval),
	      NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_RST);
	assert_int_equal(h->app.opens, 0);
	/* The right one completes the handshake, data included. */
	h_tcp(h, H_CPORT + 1, NET_TCP_ACK, 778, s2.seq + 1, 65535, o, h_opt_ts(o, 4243, s2.tsval),
	      "GET", 3);
	assert_int_equal(h->app.opens, 1);
	assert_int_equal(h->app.rx_len, 3);
	assert_int_equal(st(h)->tcp_cookies_ok, 1);
	/* Negotiated: SACK and timestamps from the echoed bits, MSS from the index. */
	static uint8_t d[3000];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	h_advance(h, 50);
	assert_true(h_pop(h, &s));
	assert_true(s.has_ts);
	assert_int_equal(s.tsecr, 4243);
	assert_int_equal(s.dlen, 1460 - 12);
}

/*
 * A cookie carries the peer's window shift (ours is recomputed from
 * rcv_buf). It carried ours: with a Linux peer's shift of 7 and ours of 1,
 * every cookie connection - all of them with several workers - read the
 * peer's window 64 times too small and trickled a segment or two per RTT.
 */
static void test_syn_cookie_window_scale(void **state)
{
	struct net_stack_conf c;
	h_conf(&c);
	c.shared_port = true;
	struct h *h = h_reinit(state, &c);
	struct h_seg sa, s;
	uint8_t o[40];
	uint32_t ol = h_opt_syn(o, 1460, 7, true, true, h->ts);
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, o, ol, NULL, 0);
	assert_true(h_pop(h, &sa));
	assert_int_equal(st(h)->tcp_cookies_sent, 1);
	assert_int_equal(sa.ws, 1); /* ours, for a 64 KiB buffer */
	/* 100 << 7 = 12800 bytes of window. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, ISN + 1, sa.seq + 1, 100, o, h_opt_ts(o, h->ts, sa.tsval),
	      NULL, 0);
	assert_int_equal(h->app.opens, 1);
	static uint8_t d[10000];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	uint32_t sent = 0;
	while (h_pop(h, &s))
		sent += s.dlen;
	assert_int_equal(sent, sizeof(d));
}

static void test_time_wait_bound(void **state)
{
	struct h *h = *state;
	for (uint16_t i = 0; i < 10; i++) {
		uint32_t snd, cseq;
		struct h_seg sa;
		h->app.opens = 0;
		h_handshake(h, (uint16_t)(H_CPORT + i), ISN, false, -1, false, &snd, &cseq, &sa);
		assert_int_equal(h->app.opens, 1);
		tp_close(tp(h), h->app.conn, false);
		tp(h)->ops->flush(tp(h));
		h_tcp(h, (uint16_t)(H_CPORT + i), NET_TCP_ACK | NET_TCP_FIN, cseq, snd + 1, 65535,
		      NULL, 0, NULL, 0);
		h_drain(h);
	}
	assert_int_equal(h->app.closes, 10);
	assert_int_equal(st(h)->conns_open, 8);
	assert_int_equal(st(h)->tcp_tw_recycled, 2);
	/* A new SYN for a recycled tuple is a fresh connection. */
	struct h_seg s;
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN + 5000, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_SYN | NET_TCP_ACK);
	/* So is one above the old sequence space of a TIME_WAIT tuple. */
	h_tcp(h, H_CPORT + 9, NET_TCP_SYN, ISN + 5000, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_SYN | NET_TCP_ACK);
}

static void test_keepalive(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	h_advance(h, 75000 - 1);
	assert_int_equal(h_pending(h), 0);
	h_advance(h, 2);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd - 1);
	/* Answered: the idle clock restarts. */
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, NULL, 0, NULL, 0);
	h_advance(h, 74000);
	assert_int_equal(h_pending(h), 0);
	/* Unanswered: five probes 15 s apart, then a reset. */
	h_advance(h, 1001);
	int probes = 0;
	for (int i = 0; i < 6 && h->app.closes == 0; i++) {
		while (h_pop(h, &s)) {
			if (s.flags & NET_TCP_RST)
				continue;
			probes++;
		}
		h_advance(h, 15000);
	}
	assert_int_equal(probes, 5);
	assert_int_equal(h->app.closes, 1);
}

/*
 * The protocol timer is re-armed lazily: after each segment and its ACK the
 * wheel entry stays at the RTO deadline, fires there early, sends nothing,
 * and moves on, so the keepalive still goes out 75 s after the last segment
 * in. An RTO armed earlier than the entry on the wheel (75 s out) moves it
 * and fires at its own deadline.
 */
static void test_timer_lazy_rearm(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	uint8_t d[100] = {0};
	open_plain(h, ISN, &snd, &cseq);
	for (uint32_t i = 0; i < 20; i++) {
		assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
		tp(h)->ops->flush(tp(h));
		assert_true(h_pop(h, &s));
		assert_int_equal(s.seq, snd);
		assert_int_equal(s.dlen, sizeof(d));
		snd += sizeof(d);
		h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, NULL, 0, NULL, 0);
		/* Past the 200 ms RTO the segment armed: nothing resent. */
		h_advance(h, i == 19 ? 300 : 100);
		assert_int_equal(h_pending(h), 0);
	}
	h_advance(h, 75000 - 300 - 1);
	assert_int_equal(h_pending(h), 0);
	h_advance(h, 2);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd - 1);
	assert_int_equal(s.dlen, 0);
	h_tcp(h, H_CPORT, NET_TCP_ACK, cseq, snd, 65535, NULL, 0, NULL, 0);
	/* A segment that is never acknowledged: resent at its RTO (every RTT
	 * sample above was 0 ms, so the minimum), not 75 s later. */
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	h_advance(h, NET_TCP_RTO_MIN_MS - 1);
	assert_int_equal(h_pending(h), 0);
	h_advance(h, 2);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd);
	assert_int_equal(s.dlen, sizeof(d));
}

static void test_abort_sends_rst(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	open_plain(h, ISN, &snd, &cseq);
	assert_true(tp_send(tp(h), h->app.conn, "queued", 6));
	tp_close(tp(h), h->app.conn, true);
	assert_true(h_pop(h, &s));
	assert_true(s.flags & NET_TCP_RST);
	assert_int_equal(s.seq, snd);
	tp(h)->ops->flush(tp(h));
	assert_int_equal(h_pending(h), 0);
	assert_int_equal(h->app.closes, 1);
}

/* An ICMP "fragmentation needed" from a router, quoting segment `s`. */
static uint32_t frag_needed(uint8_t *f, const struct h_seg *s, uint16_t mtu)
{
	memset(f, 0, 128);
	struct net_eth *e = (struct net_eth *)f;
	memcpy(e->dst, h_mac, 6);
	memcpy(e->src, h_cmac, 6);
	e->type = net_htons(NET_ETHERTYPE_IPV4);
	struct net_ip *ip = (struct net_ip *)(f + NET_ETH_HLEN);
	uint32_t l4 = NET_ICMP_HLEN + NET_IP_HLEN + 8;
	ip->ver_ihl = 0x45;
	ip->total_len = net_htons((uint16_t)(NET_IP_HLEN + l4));
	ip->ttl = 64;
	ip->proto = NET_IP_PROTO_ICMP;
	ip->src = h_gw;
	ip->dst = h_ip;
	ip->csum = net_htons(net_csum_final(net_csum_add(0, ip, NET_IP_HLEN)));
	struct net_icmp *ic = (struct net_icmp *)(f + NET_ETH_HLEN + NET_IP_HLEN);
	ic->type = NET_ICMP_UNREACH;
	ic->code = NET_ICMP_UNREACH_NEEDFRAG;
	ic->seq = net_htons(mtu);
	struct net_ip *in = (struct net_ip *)((uint8_t *)ic + NET_ICMP_HLEN);
	in->ver_ihl = 0x45;
	in->total_len = net_htons(1500);
	in->proto = NET_IP_PROTO_TCP;
	in->src = h_ip;
	in->dst = h_cip;
	uint8_t *t = (uint8_t *)in + NET_IP_HLEN;
	net_put16(t, s->sport);
	net_put16(t + 2, s->dport);
	net_put32(t + 4, s->seq);
	ic->csum = net_htons(net_csum_final(net_csum_add(0, ic, l4)));
	return NET_ETH_HLEN + NET_IP_HLEN + l4;
}

static void test_pmtu(void **state)
{
	struct h *h = *state;
	uint32_t snd, cseq;
	struct h_seg s;
	uint8_t f[128];
	open_ts(h, &snd, &cseq);
	static uint8_t d[6000];
	assert_true(tp_send(tp(h), h->app.conn, d, sizeof(d)));
	tp(h)->ops->flush(tp(h));
	assert_true(h_pop(h, &s));
	assert_int_equal(s.dlen, 1448);
	h_drain(h);
	h_input(h, f, frag_needed(f, &s, 1000));
	assert_int_equal(st(h)->icmp_pmtu, 1);
	/* The lost segment comes back smaller on the next RTO. */
	h_advance(h, 1001);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.seq, snd);
	assert_int_equal(s.dlen, 1000 - 40 - 12);
	/* A bogus MTU below the minimum is ignored. */
	h_input(h, f, frag_needed(f, &s, 200));
	h_advance(h, 2001);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.dlen, 948);
}

static void test_synack_retransmit(void **state)
{
	struct h *h = *state;
	struct h_seg s;
	h_tcp(h, H_CPORT, NET_TCP_SYN, ISN, 0, 65535, NULL, 0, NULL, 0);
	assert_true(h_pop(h, &s));
	h_advance(h, 1001);
	assert_true(h_pop(h, &s));
	assert_int_equal(s.flags, NET_TCP_SYN | NET_TCP_ACK);
	h_advance(h, 2001);
	assert_true(h_pop(h, &s));
	for (int i = 0; i < 6; i++)
		h_advance(h, 60001);
	h_drain(h);
	assert_int_equal(st(h)->conns_open, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_handshake_options, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_isn_differs, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_data_in_delayed_ack, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_data_out_and_drain, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_send_pool_dry_and_reused, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_passive_close, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_active_close_time_wait, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_fin_wait2_timeout, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_simultaneous_close, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_rst_handling, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_syn_in_window_challenge_limit, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_ack_validation, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_closed_port_and_stray, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_refused_by_app, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_sequence_wrap, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_malformed_options, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_paws, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_timestamp_offsets, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_ooo_and_sack_blocks, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_ooo_bounded, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_ooo_merge_after_close, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_zero_window_probe, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_window_edges, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_window_update_rules, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_syn_cookies, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_syn_cookie_window_scale, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_time_wait_bound, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_keepalive, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_timer_lazy_rearm, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_abort_sends_rst, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_synack_retransmit, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(test_pmtu, h_setup, h_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
