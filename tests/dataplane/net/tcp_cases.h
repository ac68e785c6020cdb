/*
 * What the native stack's TCP unit tests share (test_net_tcp.c,
 * test_net_tcp_loss.c): the ISN of the test client and opening a connection.
 */
#ifndef SLUICE_TESTS_TCP_CASES_H
#define SLUICE_TESTS_TCP_CASES_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/net_tcp.h"
#include "net_harness.h"

#define ISN 1000000u

static inline const struct net_stats *st(struct h *h)
{
	return net_stack_stats(h->s);
}

static inline struct tp *tp(struct h *h)
{
	return net_stack_tp(h->s);
}

/* Handshake with timestamps, SACK and window scale 7 from port H_CPORT. */
static inline void open_ts(struct h *h, uint32_t *snd, uint32_t *cseq)
{
	struct h_seg sa;
	h_handshake(h, H_CPORT, ISN, true, 7, true, snd, cseq, &sa);
	assert_int_equal(h->app.opens, 1);
}

static inline void open_plain(struct h *h, uint32_t isn, uint32_t *snd, uint32_t *cseq)
{
	struct h_seg sa;
	h_handshake(h, H_CPORT, isn, false, -1, false, snd, cseq, &sa);
	assert_int_equal(h->app.opens, 1);
}

#endif
