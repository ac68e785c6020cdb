/* /metrics rendering (see app_metrics.h and docs/metrics.md). */
#include "app/app_metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "app/app_event.h"
#include "net/net_stack.h"
#include "worker/worker.h"

struct metric_def {
	const char *name;
	const char *type;
	const char *help;
	size_t off; /* offset of the uint64_t in struct dp_stats */
};

#define M(name, type, field, help) { name, type, help, offsetof(struct dp_stats, field) }

static const struct metric_def metric_defs[] = {
	M("sluice_connections_accepted_total", "counter", conns_accepted, "Client connections accepted."),
	M("sluice_connections_closed_total", "counter", conns_closed, "Client connections closed."),
	M("sluice_connections_refused_total", "counter", conns_refused, "Connections refused because a worker had max_conns open."),
	M("sluice_http_requests_total", "counter", http_requests, "HTTP requests parsed."),
	M("sluice_ws_upgrades_total", "counter", ws_upgrades, "WebSocket upgrades accepted (101)."),
	M("sluice_ws_messages_in_total", "counter", ws_messages_in, "WebSocket messages received from clients."),
	M("sluice_ws_closes_sent_total", "counter", ws_closes_sent, "WebSocket closes started by the server."),
	M("sluice_sse_streams_total", "counter", sse_streams, "SSE streams opened."),
	M("sluice_sse_active", "gauge", sse_active, "SSE streams open now."),
	M("sluice_ws_active", "gauge", ws_active, "WebSocket connections open now (after 101)."),
	M("sluice_ws_auth_refused_total", "counter", ws_auth_refused, "WebSocket upgrades, or re-checks after a control restart, that control refused."),
	M("sluice_kicks_total", "counter", kicks, "Connections closed because control asked (revoked or expired login, sessions kill)."),
	M("sluice_tokens_in_total", "counter", tokens_in, "Tokens received from control, counted per subscribed connection."),
	M("sluice_tokens_out_total", "counter", tokens_out, "Tokens written into frames."),
	M("sluice_frames_out_total", "counter", frames_out, "Token frames sent (SSE token events or WebSocket token messages); frames per token = frames_out / tokens_out."),
	M("sluice_bytes_out_total", "counter", bytes_out, "Bytes queued to clients."),
	M("sluice_pending_bytes", "gauge", pending_bytes, "Bytes held by the batcher plus bytes queued in transports and not yet sent."),
	M("sluice_slow_consumer_closes_total", "counter", slow_consumer_closes, "Connections closed because their pending bytes passed max_pending_bytes."),
	M("sluice_chan_records_in_total", "counter", chan_records_in, "Records read from control."),
	M("sluice_chan_records_out_total", "counter", chan_records_out, "Records written to control."),
	M("sluice_chan_full_total", "counter", chan_full, "Records that did not fit in the channel to control (answered 503)."),
	M("sluice_chan_bad_records_total", "counter", chan_bad_records, "Malformed records from control, dropped."),
	M("sluice_stale_records_total", "counter", stale_records, "Records for connections that had closed (generation mismatch), dropped."),
	M("sluice_loop_turns_total", "counter", loop_turns, "Worker loop turns."),
	M("sluice_busy_turns_total", "counter", busy_turns, "Worker loop turns judged busy (the batcher coalesces on those)."),
};

/* Counters of the native TCP/IPv4 stack (transport = dpdk), summed over
 * the workers' stacks; offsets into struct net_stats. */
#define N(name, type, field, help) { name, type, help, offsetof(struct net_stats, field) }

static const struct metric_def net_defs[] = {
	N("sluice_tcp_segments_in_total", "counter", tcp_rx, "TCP segments received by the native stack."),
	N("sluice_tcp_segments_out_total", "counter", tcp_tx, "TCP segments sent by the native stack."),
	N("sluice_tcp_retransmits_total", "counter", tcp_retransmits, "Segments sent again (any cause)."),
	N("sluice_tcp_fast_retransmits_total", "counter", tcp_fast_retransmits, "Segments resent by fast retransmit / SACK loss recovery."),
	N("sluice_tcp_recoveries_total", "counter", tcp_recoveries, "Fast recovery episodes entered."),
	N("sluice_tcp_rto_total", "counter", tcp_rto, "Retransmission timeouts that fired."),
	N("sluice_tcp_tail_loss_probes_total", "counter", tcp_tlp, "Tail loss probes sent (before an RTO)."),
	N("sluice_tcp_dup_acks_total", "counter", tcp_dup_acks, "Duplicate ACKs received."),
	N("sluice_tcp_timeouts_total", "counter", tcp_timeouts, "Connections ended by a timer (retransmission, keepalive, FIN_WAIT_2, SYN-ACK)."),
	N("sluice_tcp_syn_received_total", "counter", tcp_syn_rx, "SYNs received for listening ports."),
	N("sluice_tcp_accepted_total", "counter", tcp_accepted, "Handshakes completed."),
	N("sluice_tcp_syn_cookies_sent_total", "counter", tcp_cookies_sent, "SYN-ACKs sent with a SYN cookie (backlog full)."),
	N("sluice_tcp_syn_cookies_accepted_total", "counter", tcp_cookies_ok, "ACKs that completed a handshake with a valid SYN cookie."),
	N("sluice_tcp_syn_cookies_rejected_total", "counter", tcp_cookies_bad, "ACKs for no connection whose cookie did not validate."),
	N("sluice_tcp_resets_sent_total", "counter", tcp_rst_tx, "RSTs sent."),
	N("sluice_tcp_resets_received_total", "counter", tcp_rst_rx, "RSTs received in window."),
	N("sluice_tcp_challenge_acks_total", "counter", tcp_challenge_acks, "RFC 5961 challenge ACKs sent."),
	N("sluice_tcp_time_wait_recycled_total", "counter", tcp_tw_recycled, "TIME_WAIT connections recycled early (time_wait_max)."),
	N("sluice_tcp_zero_window_probes_total", "counter", tcp_zwp, "Zero-window probes sent."),
	N("sluice_tcp_keepalive_probes_total", "counter", tcp_keepalive, "Keepalive probes sent."),
	N("sluice_tcp_connections", "gauge", conns_open, "TCBs in use (half-open and TIME_WAIT included)."),
};

/* Why the native stack dropped a frame or segment: label and offset. */
struct drop_def {
	const char *reason;
	size_t off;
};

#define D(reason, field) { reason, offsetof(struct net_stats, field) }

static const struct drop_def drop_defs[] = {
	D("short_frame", rx_short), D("not_our_mac", rx_not_ours),
	D("bad_ethertype", rx_bad_ethertype), D("ip_bad_header", ip_bad_hdr),
	D("ip_bad_checksum", ip_bad_csum), D("ip_bad_length", ip_bad_len),
	D("ip_fragment", ip_frags), D("ip_bad_protocol", ip_bad_proto),
	D("ip_not_ours", ip_not_ours), D("icmp_bad", icmp_bad),
	D("arp_queue_full", arp_pending_drops), D("arp_timeout", arp_timeouts),
	D("tx_no_buffer", tx_nobuf), D("tcp_bad_checksum", tcp_bad_csum),
	D("tcp_bad_header", tcp_bad_hdr), D("tcp_bad_options", tcp_bad_opts),
	D("tcp_no_listener", tcp_no_port), D("tcp_paws", tcp_paws_drops),
	D("tcp_out_of_window", tcp_out_of_window), D("tcp_ooo_full", tcp_ooo_drops),
	D("tcp_conn_pool_empty", tcp_conn_pool_empty), D("tcp_rx_no_buffer", tcp_rx_nobuf),
	D("tcp_tx_no_buffer", tcp_tx_nobuf), D("tcp_stray", tcp_stray_drops),
};

static uint64_t net_field(const struct net_stats *ns, size_t off)
{
	return *(const uint64_t *)(const void *)((const char *)ns + off);
}

static uint64_t sum_field(size_t off)
{
	uint64_t v = 0;

	for (uint32_t i = 0; i < worker_count(); i++) {
		const struct dp_stats *s = worker_stats_of(i);

		if (s)
			v += DP_STAT_GET((const uint64_t *)((const char *)s + off));
	}
	return v;
}

static void header(struct ev_buf *b, const char *name, const char *type, const char *help)
{
	evb_str(b, "# HELP ");
	evb_str(b, name);
	evb_put(b, " ", 1);
	evb_str(b, help);
	evb_str(b, "\n# TYPE ");
	evb_str(b, name);
	evb_put(b, " ", 1);
	evb_str(b, type);
	evb_put(b, "\n", 1);
}

static void sample(struct ev_buf *b, const char *name, const char *labels, uint64_t v)
{
	evb_str(b, name);
	evb_str(b, labels);
	evb_put(b, " ", 1);
	evb_u64(b, v);
	evb_put(b, "\n", 1);
}

static void histogram(struct ev_buf *b, const char *name, const char *help, size_t hist_off,
		      size_t sum_off)
{
	uint64_t cum = 0;
	char tmp[160];
	int n;

	header(b, name, "histogram", help);
	for (uint32_t i = 0; i <= DP_DELAY_BUCKETS; i++) {
		cum += sum_field(hist_off + i * sizeof(uint64_t));
		if (i < DP_DELAY_BUCKETS)
			n = snprintf(tmp, sizeof(tmp), "%s_bucket{le=\"%g\"} ", name,
				     dp_delay_bounds_us[i] / 1e6);
		else
			n = snprintf(tmp, sizeof(tmp), "%s_bucket{le=\"+Inf\"} ", name);
		evb_put(b, tmp, (size_t)n);
		evb_u64(b, cum);
		evb_put(b, "\n", 1);
	}
	n = snprintf(tmp, sizeof(tmp), "%s_sum %.9f\n", name, sum_field(sum_off) / 1e9);
	evb_put(b, tmp, (size_t)n);
	n = snprintf(tmp, sizeof(tmp), "%s_count ", name);
	evb_put(b, tmp, (size_t)n);
	evb_u64(b, cum);
	evb_put(b, "\n", 1);
}

size_t app_metrics_render(char *buf, size_t cap, bool control_attached)
{
	static const char *const classes[] = { "", "1xx", "2xx", "3xx", "4xx", "5xx" };
	struct ev_buf b;
	uint64_t accepted, closed;

	evb_init(&b, buf, cap);
	for (size_t i = 0; i < sizeof(metric_defs) / sizeof(metric_defs[0]); i++) {
		header(&b, metric_defs[i].name, metric_defs[i].type, metric_defs[i].help);
		sample(&b, metric_defs[i].name, "", sum_field(metric_defs[i].off));
	}
	accepted = sum_field(offsetof(struct dp_stats, conns_accepted));
	closed = sum_field(offsetof(struct dp_stats, conns_closed));
	header(&b, "sluice_connections_active", "gauge", "Client connections open now.");
	sample(&b, "sluice_connections_active", "", accepted >= closed ? accepted - closed : 0);
	header(&b, "sluice_http_responses_total", "counter", "HTTP responses sent, by status class.");
	for (uint32_t k = 1; k <= 5; k++) {
		char labels[24];

		snprintf(labels, sizeof(labels), "{class=\"%s\"}", classes[k]);
		sample(&b, "sluice_http_responses_total", labels,
		       sum_field(offsetof(struct dp_stats, http_responses) + k * sizeof(uint64_t)));
	}
	histogram(&b, "sluice_token_batch_delay_seconds",
		  "Delay the batcher added: token arrival at the worker to being framed.",
		  offsetof(struct dp_stats, delay_hist), offsetof(struct dp_stats, delay_sum_ns));
	histogram(&b, "sluice_token_e2e_delay_seconds",
		  "Token creation by the backend to being framed by the worker.",
		  offsetof(struct dp_stats, e2e_hist), offsetof(struct dp_stats, e2e_sum_ns));
	header(&b, "sluice_control_attached", "gauge", "1 while sluice-control is attached (fresh heartbeat).");
	sample(&b, "sluice_control_attached", "", control_attached ? 1 : 0);
	header(&b, "sluice_workers", "gauge", "Dataplane workers in this process.");
	sample(&b, "sluice_workers", "", worker_count());
	struct net_stats ns;
	if (net_stats_total(&ns) > 0) {
		for (size_t i = 0; i < sizeof(net_defs) / sizeof(net_defs[0]); i++) {
			header(&b, net_defs[i].name, net_defs[i].type, net_defs[i].help);
			sample(&b, net_defs[i].name, "", net_field(&ns, net_defs[i].off));
		}
		header(&b, "sluice_net_drops_total", "counter",
		       "Frames and segments the native stack dropped, by reason.");
		for (size_t i = 0; i < sizeof(drop_defs) / sizeof(drop_defs[0]); i++) {
			char labels[48];

			snprintf(labels, sizeof(labels), "{reason=\"%s\"}", drop_defs[i].reason);
			sample(&b, "sluice_net_drops_total", labels, net_field(&ns, drop_defs[i].off));
		}
	}
	return b.overflow ? 0 : b.len;
}
