/*
 * libFuzzer target for the native stack's input path. The input is a
 * sequence of records: ctl (1 byte), len (2 bytes, big endian), frame.
 * ctl bits 0-3 advance the virtual clock by that many 50 ms steps before
 * the frame; bit 4 marks the frame's checksums as verified by the NIC (so
 * the fuzzer reaches TCP states without computing checksums) and, in a
 * TCP frame whose ACK field is 1, replaces it with the stack's last sent
 * sequence end (so seeds can complete handshakes with a secret ISN); bits 5-7
 * pick an app action after the frame (send, close, abort, resume, a shared
 * frame's hinted sends, ...). A fresh stack per input keeps runs
 * independent. Every TCP frame the stack sends must carry right IPv4 and
 * TCP checksums (the payload sums of hinted runs included): else abort.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/net_csum.h"
#include "net/net_stack.h"
#include "worker/timer_wheel.h"

#define FRAMES 64
#define FRAME_MAX 9216

struct fz {
	uint8_t buf[FRAMES][FRAME_MAX];
	bool used[FRAMES];
	uint32_t snd_end; /* seq + len of the last TCP segment sent (host order) */
	struct tp_conn *conn;
	size_t consume;
	uint64_t rx;
};

static uint8_t *fz_alloc(void *arg, uint32_t len, void **pkt)
{
	struct fz *z = arg;
	if (len > FRAME_MAX)
		abort();
	for (uint32_t i = 0; i < FRAMES; i++) {
		if (!z->used[i]) {
			z->used[i] = true;
			*pkt = (void *)(uintptr_t)(i + 1);
			memset(z->buf[i], 0xee, len);
			return z->buf[i];
		}
	}
	return NULL;
}

static void fz_release(void *arg, void *pkt)
{
	struct fz *z = arg;
	uintptr_t i = (uintptr_t)pkt;
	if (i == 0 || i > FRAMES || !z->used[i - 1])
		abort(); /* double free or foreign buffer */
	z->used[i - 1] = false;
}

static void fz_send(void *arg, void *pkt, uint32_t len, uint32_t flags)
{
	struct fz *z = arg;
	(void)flags;
	if (len < 14 || len > FRAME_MAX)
		abort();
	const uint8_t *f = z->buf[(uintptr_t)pkt - 1];
	if (len >= 54 && f[12] == 0x08 && f[13] == 0x00 && f[23] == 6) {
		uint32_t tot = (uint32_t)f[16] << 8 | f[17];
		uint32_t src, dst;
		if (tot < 40 || 14 + tot > len || net_csum_fold(net_csum_add(0, f + 14, 20)) != 0xffff)
			abort(); /* a bad IPv4 header */
		memcpy(&src, f + 26, 4);
		memcpy(&dst, f + 30, 4);
		uint32_t ps = net_csum_pseudo(src, dst, 6, (uint16_t)(tot - 20));
		if (net_csum_fold(net_csum_add(ps, f + 34, tot - 20)) != 0xffff)
			abort(); /* a wrong TCP checksum */
		uint32_t doff = (uint32_t)(f[46] >> 4) * 4;
		uint32_t seq = (uint32_t)f[38] << 24 | (uint32_t)f[39] << 16 |
			       (uint32_t)f[40] << 8 | f[41];
		uint32_t dlen = tot - 20 - doff;
		z->snd_end = seq + dlen + !!(f[47] & 0x02) + !!(f[47] & 0x01);
	}
	fz_release(arg, pkt);
}

static void *fz_open(void *app, struct tp_conn *c, const struct tp_peer *peer)
{
	struct fz *z = app;
	(void)peer;
	z->conn = c;
	return z;
}

static size_t fz_data(void *app, void *ctx, const uint8_t *d, size_t len)
{
	struct fz *z = app;
	(void)ctx;
	size_t n = len < z->consume ? len : z->consume;
	for (size_t i = 0; i < n; i++)
		z->rx += d[i];
	return n;
}

static void fz_eof(void *app, void *ctx)
{
	(void)app;
	(void)ctx;
}

static void fz_drained(void *app, void *ctx)
{
	(void)app;
	(void)ctx;
}

static void fz_close(void *app, void *ctx)
{
	struct fz *z = app;
	(void)ctx;
	z->conn = NULL;
}

static const struct tp_upcalls fz_up = {fz_open, fz_data, fz_eof, fz_drained, fz_close};
static const struct net_io fz_io = {fz_alloc, fz_send, fz_release};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz z;
	static struct tw_wheel wheel;
	static uint8_t frame[FRAME_MAX];
	static uint8_t payload[6000];
	/* The shared frames' hints, fresh per input like the stack: reused
	 * by every hinted send of the same bytes in it. */
	struct tp_tx_hint hint_a = {0}, hint_b = {0};
	struct net_stack_conf c;
	char err[128];
	uint64_t now = 1000ull * 1000000000ull;

	memset(&z, 0, sizeof(z));
	z.consume = SIZE_MAX;
	if (payload[1] == 0)
		for (size_t i = 0; i < sizeof(payload); i++)
			payload[i] = (uint8_t)(i * 31 + (i >> 8) + 1);
	memset(&c, 0, sizeof(c));
	net_stack_conf_defaults(&c);
	static const uint8_t mac[6] = {0x02, 0, 0, 0, 0, 0x01};
	memcpy(c.mac, mac, 6);
	c.ipv4 = 0x0100000a; /* 10.0.0.1 */
	c.prefix = 24;
	c.gateway = 0xfe00000a;
	c.listen_ports[0] = 8080;
	c.max_conns = 16;
	c.syn_backlog = 4;
	c.time_wait_max = 2;
	c.tx_chunks = 64;
	c.rx_bufs = 4;
	c.rcv_buf = 16384;
	for (int i = 0; i < NET_SECRET_LEN; i++)
		c.secret[i] = (uint8_t)i;
	tw_wheel_init(&wheel, now);
	struct net_stack *s = net_stack_create(&c, &fz_io, &z, &wheel, &fz_up, &z, err, sizeof(err));
	if (!s)
		abort();
	struct tp *t = net_stack_tp(s);

	size_t off = 0;
	while (off + 3 <= size) {
		uint8_t ctl = data[off];
		uint32_t len = (uint32_t)data[off + 1] << 8 | data[off + 2];
		off += 3;
		if (len > size - off)
			len = (uint32_t)(size - off);
		if (len > FRAME_MAX)
			len = FRAME_MAX;
		now += (uint64_t)(ctl & 0x0f) * 50000000ull;
		net_stack_tick(s, now);
		tw_run(&wheel, now);
		/* A private copy: the stack must not depend on the input staying put. */
		memcpy(frame, data + off, len);
		if ((ctl & 0x10) && len >= 54 && frame[23] == 6 && frame[42] == 0 &&
		    frame[43] == 0 && frame[44] == 0 && frame[45] == 1) {
			frame[42] = (uint8_t)(z.snd_end >> 24);
			frame[43] = (uint8_t)(z.snd_end >> 16);
			frame[44] = (uint8_t)(z.snd_end >> 8);
			frame[45] = (uint8_t)z.snd_end;
		}
		net_input(s, frame, len, (ctl & 0x10) ? 3u : 0u, now);
		off += len;
		switch (ctl >> 5) {
		case 1:
			if (z.conn)
				tp_send(t, z.conn, payload, 100);
			break;
		case 2:
			if (z.conn)
				tp_close(t, z.conn, false);
			break;
		case 3:
			if (z.conn)
				tp_close(t, z.conn, true);
			break;
		case 4:
			z.consume = z.consume ? 0 : SIZE_MAX;
			if (z.conn)
				tp_rx_resume(t, z.conn);
			break;
		case 5:
			if (z.conn)
				tp_send(t, z.conn, payload, sizeof(payload));
			break;
		case 6:
			if (z.conn) {
				struct tp_conn_info ti;
				tp_info(t, z.conn, &ti);
			}
			break;
		case 7:
			/* Two shared frames of odd length back to back: one
			 * run, the second's sum byte-swapped. */
			if (z.conn && tp_send_hinted(t, z.conn, payload, 151, &hint_a))
				tp_send_hinted(t, z.conn, payload + 151, 77, &hint_b);
			break;
		default:
			break;
		}
		t->ops->flush(t);
		t->ops->poll(t, 0, -1);
	}
	/* Let every timer run out, then tear down. */
	for (int i = 0; i < 8; i++) {
		now += 60ull * 1000000000ull;
		net_stack_tick(s, now);
		tw_run(&wheel, now);
	}
	net_stack_destroy(s);
	for (uint32_t i = 0; i < FRAMES; i++)
		if (z.used[i])
			abort(); /* a frame buffer leaked */
	return 0;
}
