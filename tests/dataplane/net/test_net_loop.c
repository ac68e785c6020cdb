/*
 * Loopback transfer through the native stack: a scripted client (go-back-N
 * sender, in-order receiver, cumulative ACKs, timestamps) exchanges 1 MiB
 * each way with a test app, while the harness drops every Nth frame and
 * swaps adjacent frames in both directions. Both byte streams are checked
 * by hash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <stdio.h>
#include <sodium.h>

#include "net_harness.h"

#define TOTAL (1u << 20)
#define CSEG 1000u
#define CWIN (16u * CSEG)
#define MAX_BATCH 64

struct imp {
	uint32_t n;      /* frames seen */
	uint32_t drop_every, swap_every;
	uint32_t dropped, swapped;
};

struct batch {
	uint8_t f[MAX_BATCH][1600];
	uint32_t len[MAX_BATCH];
	uint32_t n;
};

struct cli {
	uint32_t isn, una, nxt;
	uint32_t srv_next;
	uint32_t peer_wnd, peer_ts;
	uint64_t progress_ms;
	uint8_t *rx;
	uint32_t rx_len;
	const uint8_t *tx;
};

/* Drops and swaps frames of a batch in place. */
static void impair(struct imp *im, struct batch *b)
{
	uint32_t out = 0;
	for (uint32_t i = 0; i < b->n; i++) {
		im->n++;
		if (im->n % im->drop_every == 0) {
			im->dropped++;
			continue;
		}
		if (out != i) {
			memcpy(b->f[out], b->f[i], b->len[i]);
			b->len[out] = b->len[i];
		}
		out++;
	}
	b->n = out;
	for (uint32_t i = 0; i + 1 < b->n; i++) {
		if ((im->n + i) % im->swap_every == 0) {
			uint8_t tmp[1600];
			uint32_t tl = b->len[i];
			memcpy(tmp, b->f[i], tl);
			memcpy(b->f[i], b->f[i + 1], b->len[i + 1]);
			b->len[i] = b->len[i + 1];
			memcpy(b->f[i + 1], tmp, tl);
			b->len[i + 1] = tl;
			im->swapped++;
			i++;
		}
	}
}

static void cli_frame(struct h *h, struct cli *c, struct batch *b, uint32_t seq,
		      const uint8_t *d, uint32_t dlen)
{
	uint8_t o[12];
	assert_true(b->n < MAX_BATCH);
	uint32_t ol = h_opt_ts(o, h->ts, c->peer_ts);
	b->len[b->n] = h_build(b->f[b->n], H_CPORT, NET_TCP_ACK | (dlen ? NET_TCP_PSH : 0), seq,
			       c->srv_next, 65535, o, ol, d, dlen);
	b->n++;
}

static void hash(uint8_t out[32], const uint8_t *p, size_t len)
{
	assert_int_equal(crypto_generichash(out, 32, p, len, NULL, 0), 0);
}

static void transfer(uint32_t drop_every, uint32_t swap_every)
{
	struct h *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h_init(h, NULL, false);
	uint8_t *up = malloc(TOTAL), *down = malloc(TOTAL);
	assert_non_null(up);
	assert_non_null(down);
	randombytes_buf_deterministic(up, TOTAL, (const uint8_t[32]){1});
	randombytes_buf_deterministic(down, TOTAL, (const uint8_t[32]){2});
	struct cli c = {.isn = 0xfff00000u, .tx = up};
	c.rx = malloc(TOTAL);
	assert_non_null(c.rx);

	/* Handshake with timestamps, no window scaling, no SACK. */
	struct h_seg sa;
	uint32_t snd, cseq;
	h_handshake(h, H_CPORT, c.isn, true, -1, false, &snd, &cseq, &sa);
	assert_int_equal(h->app.opens, 1);
	c.una = c.nxt = cseq;
	c.srv_next = snd;
	c.peer_wnd = sa.win;
	c.peer_ts = sa.tsval;
	c.progress_ms = 0;

	struct imp to_cli = {.drop_every = drop_every, .swap_every = swap_every};
	struct imp to_srv = {.drop_every = drop_every + 2, .swap_every = swap_every + 1};
	uint32_t app_sent = 0;
	uint64_t ms = 0;
	static struct batch b;
	struct tp *t = net_stack_tp(h->s);

	while ((h->app.rx_len < TOTAL || c.rx_len < TOTAL) && ms < 600000) {
		/* The app writes while its queue is short. */
		if (h->app.conn && app_sent < TOTAL) {
			struct tp_conn_info ti;
			tp_info(t, h->app.conn, &ti);
			if (ti.tx_queued < 65536) {
				uint32_t n = TOTAL - app_sent < 16384 ? TOTAL - app_sent : 16384;
				assert_true(tp_send(t, h->app.conn, down + app_sent, n));
				app_sent += n;
			}
		}
		t->ops->flush(t);

		/* Stack -> client. */
		b.n = 0;
		uint8_t raw[H_FRAME_MAX];
		uint32_t len;
		while ((len = h_pop_raw(h, raw)) > 0) {
			if (h_answer_arp(h, raw, len))
				continue;
			assert_true(b.n < MAX_BATCH && len <= 1600);
			memcpy(b.f[b.n], raw, len);
			b.len[b.n++] = len;
		}
		impair(&to_cli, &b);
		static struct batch acksb;
		acksb.n = 0;
		for (uint32_t i = 0; i < b.n; i++) {
			uint8_t *f = b.f[i];
			uint16_t type = net_ntohs(((struct net_eth *)f)->type);
			if (type != NET_ETHERTYPE_IPV4)
				continue;
			const struct net_tcp *th =
				(const struct net_tcp *)(f + NET_ETH_HLEN + NET_IP_HLEN);
			const struct net_ip *ip = (const struct net_ip *)(f + NET_ETH_HLEN);
			uint32_t doff = (uint32_t)(th->off >> 4) * 4;
			uint32_t dlen = net_ntohs(ip->total_len) - NET_IP_HLEN - doff;
			uint32_t seq = net_ntohl(th->seq), ack = net_ntohl(th->ack);
			const uint8_t *o = (const uint8_t *)th + NET_TCP_HLEN;
			for (uint32_t k = 0; k + 9 < doff - NET_TCP_HLEN; k++)
				if (o[k] == NET_TCPOPT_TS && o[k + 1] == 10) {
					c.peer_ts = net_get32(o + k + 2);
					break;
				}
			if (dlen) {
				if (seq == c.srv_next) {
					assert_true(c.rx_len + dlen <= TOTAL);
					memcpy(c.rx + c.rx_len, (const uint8_t *)th + doff, dlen);
					c.rx_len += dlen;
					c.srv_next += dlen;
				}
				/* One ACK per data segment, so losses show as
				 * duplicate ACKs. */
				cli_frame(h, &c, &acksb, c.nxt, NULL, 0);
			}
			if (net_seq_gt(ack, c.una) && net_seq_le(ack, c.nxt)) {
				c.una = ack;
				c.progress_ms = ms;
			}
			c.peer_wnd = net_ntohs(th->win);
		}

		/* Client -> stack: ACK and new data within its window. */
		impair(&to_srv, &acksb);
		for (uint32_t i = 0; i < acksb.n; i++)
			h_input(h, acksb.f[i], acksb.len[i]);
		b.n = 0;
		uint32_t end = cseq + TOTAL;
		uint32_t wnd = c.peer_wnd < CWIN ? c.peer_wnd : CWIN;
		while (net_seq_lt(c.nxt, end) && c.nxt - c.una + CSEG <= wnd && b.n < MAX_BATCH) {
			uint32_t n = end - c.nxt < CSEG ? end - c.nxt : CSEG;
			cli_frame(h, &c, &b, c.nxt, up + (c.nxt - cseq), n);
			c.nxt += n;
		}
		if (net_seq_lt(c.una, c.nxt) && ms - c.progress_ms > 300) {
			c.nxt = c.una; /* go back N */
			c.progress_ms = ms;
		}
		impair(&to_srv, &b);
		for (uint32_t i = 0; i < b.n; i++)
			h_input(h, b.f[i], b.len[i]);
		h_advance(h, 1);
		ms++;
	}
	if (h->app.rx_len != TOTAL || c.rx_len != TOTAL) {
		/* Where a stall happened, for whoever reads the failure. */
		const struct net_stats *x = net_stack_stats(h->s);
		fprintf(stderr, "stalled at %llu ms: app rx %zu, client rx %u, client una %u nxt %u, "
			"rtx %llu rto %llu ooo %llu timeouts %llu open %llu\n",
			(unsigned long long)ms, h->app.rx_len, c.rx_len, c.una - cseq, c.nxt - cseq,
			(unsigned long long)x->tcp_retransmits, (unsigned long long)x->tcp_rto,
			(unsigned long long)x->tcp_ooo_segs, (unsigned long long)x->tcp_timeouts,
			(unsigned long long)x->conns_open);
	}
	assert_int_equal(h->app.rx_len, TOTAL);
	assert_int_equal(c.rx_len, TOTAL);
	uint8_t a[32], e[32];
	hash(a, h->app.rx, TOTAL);
	hash(e, up, TOTAL);
	assert_memory_equal(a, e, 32);
	hash(a, c.rx, TOTAL);
	hash(e, down, TOTAL);
	assert_memory_equal(a, e, 32);
	/* The impairment really happened, and the stack really recovered. */
	if (drop_every < 1000) {
		assert_true(to_cli.dropped > 0 && to_srv.dropped > 0);
		assert_true(to_cli.swapped > 0 && to_srv.swapped > 0);
		assert_true(net_stack_stats(h->s)->tcp_retransmits > 0);
		assert_true(net_stack_stats(h->s)->tcp_ooo_segs > 0);
	}
	free(c.rx);
	free(up);
	free(down);
	h_fini(h);
	free(h);
}

static void test_clean_link(void **state)
{
	(void)state;
	transfer(1000000, 1000000);
}

static void test_loss_and_reorder(void **state)
{
	(void)state;
	transfer(13, 7);
}

static void test_heavy_loss(void **state)
{
	(void)state;
	transfer(5, 3);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_link),
		cmocka_unit_test(test_loss_and_reorder),
		cmocka_unit_test(test_heavy_loss),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
