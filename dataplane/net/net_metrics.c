/* The native stack's /metrics samples (see net_metrics.h). */
#include "net/net_metrics.h"

#include <stddef.h>

#include "net/net_stack.h"

#define DROPS "sluice_net_drops_total"
#define DROPS_HELP "Frames and segments the native stack dropped, by reason."

/*
 * Every sample once: C(name, type, field, help) is a family of its own,
 * D(reason, field) one sample of the drops family. Both the descriptor table
 * and the offsets are generated from this list, so they cannot drift apart.
 */
#define NET_METRICS(C, D)                                                                          \
	C("sluice_tcp_segments_in_total", "counter", tcp_rx, "TCP segments received by the native stack.") \
	C("sluice_tcp_segments_out_total", "counter", tcp_tx, "TCP segments sent by the native stack.") \
	C("sluice_tcp_retransmits_total", "counter", tcp_retransmits, "Segments sent again (any cause).") \
	C("sluice_tcp_fast_retransmits_total", "counter", tcp_fast_retransmits, "Segments resent by fast retransmit / SACK loss recovery.") \
	C("sluice_tcp_recoveries_total", "counter", tcp_recoveries, "Fast recovery episodes entered.") \
	C("sluice_tcp_rto_total", "counter", tcp_rto, "Retransmission timeouts that fired.")           \
	C("sluice_tcp_tail_loss_probes_total", "counter", tcp_tlp, "Tail loss probes sent (before an RTO).") \
	C("sluice_tcp_dup_acks_total", "counter", tcp_dup_acks, "Duplicate ACKs received.")             \
	C("sluice_tcp_timeouts_total", "counter", tcp_timeouts, "Connections ended by a timer (retransmission, keepalive, FIN_WAIT_2, SYN-ACK).") \
	C("sluice_tcp_syn_received_total", "counter", tcp_syn_rx, "SYNs received for listening ports.") \
	C("sluice_tcp_accepted_total", "counter", tcp_accepted, "Handshakes completed.")                \
	C("sluice_tcp_syn_cookies_sent_total", "counter", tcp_cookies_sent, "SYN-ACKs sent with a SYN cookie (backlog full).") \
	C("sluice_tcp_syn_cookies_accepted_total", "counter", tcp_cookies_ok, "ACKs that completed a handshake with a valid SYN cookie.") \
	C("sluice_tcp_syn_cookies_rejected_total", "counter", tcp_cookies_bad, "ACKs for no connection whose cookie did not validate.") \
	C("sluice_tcp_resets_sent_total", "counter", tcp_rst_tx, "RSTs sent.")                          \
	C("sluice_tcp_resets_received_total", "counter", tcp_rst_rx, "RSTs received in window.")        \
	C("sluice_tcp_challenge_acks_total", "counter", tcp_challenge_acks, "RFC 5961 challenge ACKs sent.") \
	C("sluice_tcp_time_wait_recycled_total", "counter", tcp_tw_recycled, "TIME_WAIT connections recycled early (time_wait_max).") \
	C("sluice_tcp_zero_window_probes_total", "counter", tcp_zwp, "Zero-window probes sent.")        \
	C("sluice_tcp_keepalive_probes_total", "counter", tcp_keepalive, "Keepalive probes sent.")      \
	C("sluice_tcp_connections", "gauge", conns_open, "TCBs in use (half-open and TIME_WAIT included).") \
	D("short_frame", rx_short) D("not_our_mac", rx_not_ours)                                         \
	D("bad_ethertype", rx_bad_ethertype) D("ip_bad_header", ip_bad_hdr)                              \
	D("ip_bad_checksum", ip_bad_csum) D("ip_bad_length", ip_bad_len)                                 \
	D("ip_fragment", ip_frags) D("ip_bad_protocol", ip_bad_proto)                                    \
	D("ip_not_ours", ip_not_ours) D("icmp_bad", icmp_bad)                                            \
	D("arp_queue_full", arp_pending_drops) D("arp_timeout", arp_timeouts)                            \
	D("tx_no_buffer", tx_nobuf) D("tcp_bad_checksum", tcp_bad_csum)                                  \
	D("tcp_bad_header", tcp_bad_hdr) D("tcp_bad_options", tcp_bad_opts)                              \
	D("tcp_no_listener", tcp_no_port) D("tcp_paws", tcp_paws_drops)                                  \
	D("tcp_out_of_window", tcp_out_of_window) D("tcp_ooo_full", tcp_ooo_drops)                       \
	D("tcp_conn_pool_empty", tcp_conn_pool_empty) D("tcp_rx_no_buffer", tcp_rx_nobuf)                \
	D("tcp_tx_no_buffer", tcp_tx_nobuf) D("tcp_stray", tcp_stray_drops)

#define DEF_C(name, type, field, help) { name, type, help, "" },
#define DEF_D(reason, field) { DROPS, "counter", DROPS_HELP, "{reason=\"" reason "\"}" },
#define OFF_C(name, type, field, help) offsetof(struct net_stats, field),
#define OFF_D(reason, field) offsetof(struct net_stats, field),

static const struct tp_counter_def defs[] = { NET_METRICS(DEF_C, DEF_D) };
static const size_t offs[] = { NET_METRICS(OFF_C, OFF_D) };

_Static_assert(sizeof(defs) / sizeof(defs[0]) <= TP_COUNTERS_MAX, "too many stack counters");

/* tp_ops.counters: one published sum over every stack, so any worker may
 * call it while the others run. */
static uint32_t net_metrics_fill(uint64_t *values)
{
	struct net_stats ns;
	uint32_t n = net_stats_total(&ns);

	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++)
		values[i] = *(const uint64_t *)(const void *)((const char *)&ns + offs[i]);
	return n;
}

void net_metrics_ops(struct tp_ops *ops)
{
	ops->counter_defs = defs;
	ops->ncounters = (uint32_t)(sizeof(defs) / sizeof(defs[0]));
	ops->counters = net_metrics_fill;
}
