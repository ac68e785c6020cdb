/* Unit tests of the native stack below TCP: checksums, ARP, IPv4, ICMP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/net_csum.h"
#include "net/net_metrics.h"
#include "net_harness.h"

static int setup_noarp(void **state)
{
	struct h *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h_init(h, NULL, true);
	*state = h;
	return 0;
}

static int setup(void **state)
{
	struct h *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h_init(h, NULL, false);
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct h *h = *state;
	h_fini(h);
	free(h);
	return 0;
}

static const struct net_stats *st(struct h *h)
{
	return net_stack_stats(h->s);
}

static void test_csum(void **state)
{
	(void)state;
	/* RFC 1071 section 3 example: the sum of these words is ddf2. */
	static const uint8_t b[8] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
	assert_int_equal(net_csum_fold(net_csum_add(0, b, 8)), 0xddf2);
	/* Split at an even offset gives the same sum; odd tail is padded. */
	assert_int_equal(net_csum_fold(net_csum_add(net_csum_add(0, b, 2), b + 2, 6)), 0xddf2);
	static const uint8_t odd[3] = {0x12, 0x34, 0x56};
	assert_int_equal(net_csum_fold(net_csum_add(0, odd, 3)), 0x1234 + 0x5600);
	/* Incremental update equals recomputation. */
	uint8_t w[20];
	for (int i = 0; i < 20; i++)
		w[i] = (uint8_t)(i * 37 + 11);
	uint16_t c0 = net_csum_final(net_csum_add(0, w, 20));
	uint16_t old = net_get16(w + 6);
	net_put16(w + 6, 0xbeef);
	uint16_t c1 = net_csum_final(net_csum_add(0, w, 20));
	assert_int_equal(net_csum_update16(c0, old, 0xbeef), c1);
	/* Pseudo header: 10.0.0.2 -> 10.0.0.1, TCP, 20 bytes. */
	assert_int_equal(net_csum_pseudo(h_cip, h_ip, 6, 20), 0x0a00 + 2 + 0x0a00 + 1 + 6 + 20);
}

/* RFC 1071 word by word in network order, the definition net_csum_add's
 * wide loop must agree with. */
static uint32_t csum_ref(uint32_t sum, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

/* Every length 0..300 at every alignment 0..7, split at every even offset,
 * with a start sum, over bytes that make carries (0xff runs) and not. */
static void test_csum_wide(void **state)
{
	(void)state;
	static uint8_t buf[320];
	for (int pat = 0; pat < 2; pat++) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pat ? 0xff : (uint8_t)(i * 131 + 7);
		for (size_t off = 0; off < 8; off++) {
			for (size_t len = 0; len <= 300; len++) {
				const uint8_t *p = buf + off;
				uint16_t want = net_csum_fold(csum_ref(0x1234, p, len));
				assert_int_equal(net_csum_fold(net_csum_add(0x1234, p, len)), want);
				for (size_t cut = 0; cut <= len; cut += 2) {
					uint32_t a = net_csum_add(0x1234, p, cut);
					assert_int_equal(net_csum_fold(net_csum_add(a, p + cut, len - cut)), want);
				}
			}
		}
	}
	/* The inline IPv4 header sum is the same as the general one, at every
	 * alignment, carries or not. */
	for (int pat = 0; pat < 3; pat++) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pat == 0 ? 0xff : pat == 1 ? 0 : (uint8_t)(i * 53 + 1);
		for (size_t off = 0; off < 8; off++)
			assert_int_equal(net_csum_ip_hdr(buf + off), net_csum_add(0, buf + off, 20));
	}
	/* So is the inline 32-byte sum of a pure ACK, with any start sum the
	 * pseudo-header gives. */
	static const uint32_t starts[] = {0, 1, 0xffff, 0x1234, 0x3fffc};
	for (int pat = 0; pat < 3; pat++) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pat == 0 ? 0xff : pat == 1 ? 0 : (uint8_t)(i * 97 + 3);
		for (size_t off = 0; off < 8; off++)
			for (size_t k = 0; k < sizeof(starts) / sizeof(starts[0]); k++)
				assert_int_equal(net_csum_add32(starts[k], buf + off),
						 net_csum_add(starts[k], buf + off, 32));
	}
	/* The largest sum the stack chains in: a pseudo-header sum. */
	assert_int_equal(net_csum_fold(net_csum_add(0x3fffc, buf, 40)),
			 net_csum_fold(csum_ref(0x3fffc, buf, 40)));
}

static uint32_t arp_frame(uint8_t *f, uint16_t op, const uint8_t *sha, uint32_t spa,
			  uint32_t tpa, const uint8_t *dst)
{
	memset(f, 0, 60);
	struct net_eth *e = (struct net_eth *)f;
	memcpy(e->dst, dst, 6);
	memcpy(e->src, sha, 6);
	e->type = net_htons(NET_ETHERTYPE_ARP);
	struct net_arp *a = (struct net_arp *)(f + NET_ETH_HLEN);
	a->htype = net_htons(1);
	a->ptype = net_htons(NET_ETHERTYPE_IPV4);
	a->hlen = 6;
	a->plen = 4;
	a->op = net_htons(op);
	memcpy(a->sha, sha, 6);
	a->spa = spa;
	a->tpa = tpa;
	return 60;
}

static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static void test_gratuitous_arp(void **state)
{
	(void)state;
	struct h *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	struct net_stack_conf c;
	h_conf(&c);
	char err[128];
	h_init(h, &c, true);
	/* h_init drained it; the counter shows it went out. */
	assert_int_equal(st(h)->arp_requests, 1);
	h_fini(h);
	/* A conf error is reported, not crashed on. */
	c.mtu = 100;
	assert_null(net_stack_create(&c, NULL, NULL, &h->wheel, h_upcalls(), NULL, err,
				     sizeof(err)));
	assert_non_null(strstr(err, "mtu"));
	free(h);
}

static void test_arp_reply(void **state)
{
	struct h *h = *state;
	uint8_t f[64], out[128];
	h_input(h, f, arp_frame(f, NET_ARP_OP_REQUEST, h_cmac, h_cip, h_ip, bcast));
	uint32_t len = h_pop_raw(h, out);
	assert_int_equal(len, 42);
	const struct net_eth *e = (const struct net_eth *)out;
	const struct net_arp *a = (const struct net_arp *)(out + NET_ETH_HLEN);
	assert_memory_equal(e->dst, h_cmac, 6);
	assert_int_equal(net_ntohs(a->op), NET_ARP_OP_REPLY);
	assert_memory_equal(a->sha, h_mac, 6);
	assert_int_equal(a->spa, h_ip);
	assert_int_equal(a->tpa, h_cip);
	/* Requests for other addresses are not answered. */
	h_input(h, f, arp_frame(f, NET_ARP_OP_REQUEST, h_cmac, h_cip, h_gw, bcast));
	assert_int_equal(h_pending(h), 0);
	/* Truncated ARP: dropped. */
	h_input(h, f, 30);
	assert_int_equal(h_pending(h), 0);
}

/* An echo request from the client (or from `src` via the gateway). */
static uint32_t ping_frame(uint8_t *f, uint32_t src, uint32_t dst, uint16_t seq)
{
	memset(f, 0, 128);
	struct net_eth *e = (struct net_eth *)f;
	memcpy(e->dst, h_mac, 6);
	memcpy(e->src, h_cmac, 6);
	e->type = net_htons(NET_ETHERTYPE_IPV4);
	struct net_ip *ip = (struct net_ip *)(f + NET_ETH_HLEN);
	uint32_t l4 = NET_ICMP_HLEN + 32;
	ip->ver_ihl = 0x45;
	ip->total_len = net_htons((uint16_t)(NET_IP_HLEN + l4));
	ip->ttl = 64;
	ip->proto = NET_IP_PROTO_ICMP;
	ip->src = src;
	ip->dst = dst;
	ip->csum = net_htons(net_csum_final(net_csum_add(0, ip, NET_IP_HLEN)));
	struct net_icmp *ic = (struct net_icmp *)(f + NET_ETH_HLEN + NET_IP_HLEN);
	ic->type = NET_ICMP_ECHO_REQUEST;
	ic->id = net_htons(0x4242);
	ic->seq = net_htons(seq);
	uint8_t *d = (uint8_t *)ic + NET_ICMP_HLEN;
	for (int i = 0; i < 32; i++)
		d[i] = (uint8_t)('a' + i % 26);
	ic->csum = net_htons(net_csum_final(net_csum_add(0, ic, l4)));
	return NET_ETH_HLEN + NET_IP_HLEN + l4;
}

static void test_arp_resolve_and_aging(void **state)
{
	struct h *h = *state;
	uint8_t f[128], out[256];
	/* No cache entry: the echo reply waits for ARP. */
	h_input(h, f, ping_frame(f, h_cip, h_ip, 1));
	uint32_t len = h_pop_raw(h, out);
	assert_int_equal(len, 42);
	const struct net_arp *a = (const struct net_arp *)(out + NET_ETH_HLEN);
	assert_int_equal(net_ntohs(a->op), NET_ARP_OP_REQUEST);
	assert_int_equal(a->tpa, h_cip);
	assert_int_equal(h_pending(h), 0);
	/* Retries every second. */
	h_advance(h, 1000);
	assert_int_equal(h_pop_raw(h, out), 42);
	/* The reply releases the queued frame. */
	h_input(h, f, arp_frame(f, NET_ARP_OP_REPLY, h_cmac, h_cip, h_ip, h_mac));
	len = h_pop_raw(h, out);
	assert_true(len > 42);
	assert_memory_equal(out, h_cmac, 6);
	/* Fresh: no request. */
	h_input(h, f, ping_frame(f, h_cip, h_ip, 2));
	assert_int_equal(h_pending(h), 1);
	h_drain(h);
	/* Aged: the stale entry is still used, and refreshed. */
	h_advance(h, 60001);
	h_input(h, f, ping_frame(f, h_cip, h_ip, 3));
	assert_int_equal(h_pending(h), 2);
	len = h_pop_raw(h, out);
	assert_int_equal(len, 42);
	assert_true(h_pop_raw(h, out) > 42);
	/* Unanswered past the grace period: resolution again, then give up. */
	h_advance(h, 4000);
	h_input(h, f, ping_frame(f, h_cip, h_ip, 4));
	assert_int_equal(h_pop_raw(h, out), 42);
	assert_int_equal(h_pending(h), 0);
	h_advance(h, 5000);
	h_drain(h);
	assert_int_equal(st(h)->arp_timeouts, 1);
}

static void test_off_link_via_gateway(void **state)
{
	struct h *h = *state;
	uint8_t f[128], out[256];
	uint32_t far = 0x08080808;
	h_input(h, f, ping_frame(f, far, h_ip, 1));
	assert_int_equal(h_pop_raw(h, out), 42);
	const struct net_arp *a = (const struct net_arp *)(out + NET_ETH_HLEN);
	assert_int_equal(a->tpa, h_gw);
}

static void test_icmp_echo(void **state)
{
	struct h *h = *state;
	uint8_t f[128], out[256];
	uint32_t len = ping_frame(f, h_cip, h_ip, 7);
	h_input(h, f, len);
	uint32_t olen = h_pop_raw(h, out);
	assert_int_equal(olen, len);
	const struct net_ip *ip = (const struct net_ip *)(out + NET_ETH_HLEN);
	assert_int_equal(ip->src, h_ip);
	assert_int_equal(ip->dst, h_cip);
	assert_int_equal(net_csum_fold(net_csum_add(0, ip, NET_IP_HLEN)), 0xffff);
	const struct net_icmp *ic = (const struct net_icmp *)(out + NET_ETH_HLEN + NET_IP_HLEN);
	assert_int_equal(ic->type, NET_ICMP_ECHO_REPLY);
	assert_int_equal(net_ntohs(ic->id), 0x4242);
	assert_int_equal(net_ntohs(ic->seq), 7);
	assert_int_equal(net_csum_fold(net_csum_add(0, ic, NET_ICMP_HLEN + 32)), 0xffff);
	assert_memory_equal(out + len - 32, f + len - 32, 32);
	assert_int_equal(st(h)->icmp_echo, 1);
	/* A corrupted request is dropped. */
	f[len - 1] ^= 1;
	h_input(h, f, len);
	assert_int_equal(h_pending(h), 0);
	assert_int_equal(st(h)->icmp_bad, 1);
}

static void test_ip_validation(void **state)
{
	struct h *h = *state;
	uint8_t f[128];
	uint32_t len;
	struct net_ip *ip = (struct net_ip *)(f + NET_ETH_HLEN);

	memset(f, 0, sizeof(f));
	h_input(h, f, 10); /* shorter than Ethernet */
	assert_int_equal(st(h)->rx_short, 1);
	len = ping_frame(f, h_cip, h_ip, 1);
	h_input(h, f, NET_ETH_HLEN + 10); /* shorter than IPv4 */
	assert_int_equal(st(h)->rx_short, 2);

	len = ping_frame(f, h_cip, h_ip, 1);
	ip->ver_ihl = 0x65;
	h_input(h, f, len);
	len = ping_frame(f, h_cip, h_ip, 1);
	ip->ver_ihl = 0x44;
	h_input(h, f, len);
	assert_int_equal(st(h)->ip_bad_hdr, 2);

	len = ping_frame(f, h_cip, h_ip, 1);
	h_input(h, f, len - 1); /* total_len beyond the frame */
	assert_int_equal(st(h)->ip_bad_len, 1);

	len = ping_frame(f, h_cip, h_ip, 1);
	ip->ttl ^= 1; /* checksum now wrong */
	h_input(h, f, len);
	assert_int_equal(st(h)->ip_bad_csum, 1);
	/* ...unless the NIC verified it. */
	net_input(h->s, f, len, NET_RX_IP_CSUM_OK, h->now);
	assert_int_equal(st(h)->icmp_echo, 1);
	h_drain(h);

	len = ping_frame(f, h_cip, h_ip, 1);
	ip->frag = net_htons(NET_IP_MF);
	ip->csum = 0;
	ip->csum = net_htons(net_csum_final(net_csum_add(0, ip, NET_IP_HLEN)));
	h_input(h, f, len);
	assert_int_equal(st(h)->ip_frags, 1);

	len = ping_frame(f, h_cip, 0x0900000a, 1); /* not our address */
	h_input(h, f, len);
	assert_int_equal(st(h)->ip_not_ours, 1);

	len = ping_frame(f, h_cip, h_ip, 1);
	f[0] ^= 0x10; /* another host's MAC */
	h_input(h, f, len);
	assert_int_equal(st(h)->rx_not_ours, 1);

	/* Ethernet padding after total_len is fine. */
	len = ping_frame(f, h_cip, h_ip, 1);
	h_input(h, f, len + 6);
	assert_int_equal(st(h)->icmp_echo, 2);
	h_drain(h);

	/* A TCP segment with a bad checksum. */
	len = h_build(f, H_CPORT, NET_TCP_SYN, 1, 0, 100, NULL, 0, NULL, 0);
	f[len - 1] ^= 0x40;
	h_input(h, f, len);
	assert_int_equal(st(h)->tcp_bad_csum, 1);
	assert_int_equal(h_pending(h), 0);
}

static void test_unknown_protocol(void **state)
{
	struct h *h = *state;
	uint8_t f[128], out[256];
	struct net_ip *ip = (struct net_ip *)(f + NET_ETH_HLEN);
	for (uint32_t i = 0; i < 105; i++) {
		uint32_t len = ping_frame(f, h_cip, h_ip, 1);
		ip->proto = NET_IP_PROTO_UDP;
		ip->csum = 0;
		ip->csum = net_htons(net_csum_final(net_csum_add(0, ip, NET_IP_HLEN)));
		h_input(h, f, len);
	}
	uint32_t olen = h_pop_raw(h, out);
	assert_int_equal(olen, NET_ETH_HLEN + NET_IP_HLEN + NET_ICMP_HLEN + NET_IP_HLEN + 8);
	const struct net_icmp *ic = (const struct net_icmp *)(out + NET_ETH_HLEN + NET_IP_HLEN);
	assert_int_equal(ic->type, NET_ICMP_UNREACH);
	assert_int_equal(ic->code, NET_ICMP_UNREACH_PORT);
	assert_int_equal(net_csum_fold(net_csum_add(0, ic, olen - NET_ETH_HLEN - NET_IP_HLEN)),
			 0xffff);
	assert_memory_equal((const uint8_t *)ic + NET_ICMP_HLEN, ip, NET_IP_HLEN);
	/* Rate limited to 100 a second. */
	assert_int_equal(st(h)->icmp_unreach_tx, 100);
	assert_int_equal(st(h)->icmp_rate_limited, 5);
	h_drain(h);
}

/* The stack's counters reach /metrics through the transport's counter hook:
 * one value per descriptor, from the published sum over every stack. */
static void test_metrics_counters(void **state)
{
	struct h *h = *state;
	struct tp_ops ops = { .name = "metrics" };
	uint64_t v[TP_COUNTERS_MAX];
	uint8_t f[16];
	uint32_t tcp_rx = 0, drops = 0, short_frame = 0;

	net_metrics_ops(&ops);
	assert_true(ops.ncounters > 0 && ops.ncounters <= TP_COUNTERS_MAX);
	memset(f, 0, sizeof(f));
	h_input(h, f, 10);
	h_input(h, f, 10);
	h_advance(h, 2); /* a stack publishes at most once a millisecond */
	assert_int_equal(ops.counters(v), 1);
	for (uint32_t i = 0; i < ops.ncounters; i++) {
		const struct tp_counter_def *d = &ops.counter_defs[i];

		assert_true(strcmp(d->type, "counter") == 0 || strcmp(d->type, "gauge") == 0);
		if (strcmp(d->name, "sluice_tcp_segments_in_total") == 0) {
			tcp_rx++;
			assert_int_equal(v[i], st(h)->tcp_rx);
		}
		if (strcmp(d->name, "sluice_net_drops_total") == 0) {
			drops++;
			if (strcmp(d->labels, "{reason=\"short_frame\"}") == 0) {
				short_frame++;
				assert_int_equal(v[i], 2);
			}
		} else {
			assert_string_equal(d->labels, "");
		}
	}
	assert_int_equal(tcp_rx, 1);
	assert_int_equal(short_frame, 1);
	assert_int_equal(drops, 24);
}

static void test_conn_memory(void **state)
{
	(void)state;
	/* docs/tcp.md quotes this figure; a TCB that grows must be noticed. */
	assert_true(net_stack_conn_bytes() <= 512);
	assert_true(net_stack_conn_bytes() >= 256);
}

static void test_tx_pool_empty(void **state)
{
	struct h *h = *state;
	uint8_t f[128];
	h->allocs_failing = 1;
	h_input(h, f, ping_frame(f, h_cip, h_ip, 1));
	assert_int_equal(h_pending(h), 0);
	assert_int_equal(st(h)->tx_nobuf, 1);
}

static void test_offload_flags(void **state)
{
	struct h *h = *state;
	struct net_stack_conf c;
	h_fini(h);
	memset(h, 0, sizeof(*h));
	h_conf(&c);
	c.csum_offload_tx = true;
	h_init(h, &c, false);
	uint8_t f[128];
	h_tcp(h, H_CPORT, NET_TCP_SYN, 1, 0, 100, NULL, 0, NULL, 0);
	uint32_t len = h_pop_raw(h, f);
	assert_true(len > 0);
	const struct net_ip *ip = (const struct net_ip *)(f + NET_ETH_HLEN);
	assert_int_equal(ip->csum, 0);
	/* The TCP field holds the pseudo-header sum for the NIC to finish. */
	const struct net_tcp *t = (const struct net_tcp *)(f + NET_ETH_HLEN + NET_IP_HLEN);
	uint16_t l4 = (uint16_t)(len - NET_ETH_HLEN - NET_IP_HLEN);
	assert_int_equal(net_ntohs(t->csum), net_csum_fold(net_csum_pseudo(h_ip, h_cip, 6, l4)));
	assert_int_equal(h->frames[0].flags | h->frames[1].flags, NET_TX_CSUM);
}

/* Under TX checksum offload only TCP is left to the device: an echo reply
 * leaves with no offload flag and a complete IPv4 header checksum. */
static void test_offload_icmp(void **state)
{
	struct h *h = *state;
	struct net_stack_conf c;
	h_fini(h);
	memset(h, 0, sizeof(*h));
	h_conf(&c);
	c.csum_offload_tx = true;
	h_init(h, &c, false);
	uint8_t f[128], out[256];
	h_input(h, f, ping_frame(f, h_cip, h_ip, 9));
	assert_int_equal(h_pending(h), 1);
	assert_int_equal(h->frames[h->outq[h->out_head % H_FRAMES]].flags, 0);
	uint32_t len = h_pop_raw(h, out);
	assert_int_equal(len, NET_ETH_HLEN + NET_IP_HLEN + NET_ICMP_HLEN + 32);
	const struct net_ip *ip = (const struct net_ip *)(out + NET_ETH_HLEN);
	assert_int_equal(ip->proto, NET_IP_PROTO_ICMP);
	assert_int_not_equal(ip->csum, 0);
	assert_int_equal(net_csum_fold(net_csum_add(0, ip, NET_IP_HLEN)), 0xffff);
	assert_int_equal(net_csum_fold(net_csum_add(0, out + NET_ETH_HLEN + NET_IP_HLEN,
						    len - NET_ETH_HLEN - NET_IP_HLEN)), 0xffff);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csum),
		cmocka_unit_test(test_csum_wide),
		cmocka_unit_test(test_gratuitous_arp),
		cmocka_unit_test_setup_teardown(test_arp_reply, setup_noarp, teardown),
		cmocka_unit_test_setup_teardown(test_arp_resolve_and_aging, setup_noarp, teardown),
		cmocka_unit_test_setup_teardown(test_off_link_via_gateway, setup_noarp, teardown),
		cmocka_unit_test_setup_teardown(test_icmp_echo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ip_validation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_pool_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_protocol, setup, teardown),
		cmocka_unit_test(test_conn_memory),
		cmocka_unit_test_setup_teardown(test_metrics_counters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_offload_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_offload_icmp, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
