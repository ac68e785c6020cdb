/* /metrics rendering (see app_metrics.h and docs/metrics.md). */
#include "app/app_metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "app/app_event.h"
#include "transport/transport.h"
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

/* The transport's own samples (the native stack's TCP and drop counters);
 * a family's HELP and TYPE lines come with its first sample. */
static void transport_samples(struct ev_buf *b, const struct tp_ops *ops)
{
	uint64_t v[TP_COUNTERS_MAX];

	if (ops->ncounters == 0 || ops->ncounters > TP_COUNTERS_MAX || ops->counters(v) == 0)
		return;
	for (uint32_t i = 0; i < ops->ncounters; i++) {
		const struct tp_counter_def *d = &ops->counter_defs[i];

		if (i == 0 || strcmp(d->name, ops->counter_defs[i - 1].name) != 0)
			header(b, d->name, d->type, d->help);
		sample(b, d->name, d->labels, v[i]);
	}
}

size_t app_metrics_render(char *buf, size_t cap, bool control_attached, const struct tp *tp)
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
	transport_samples(&b, tp->ops);
	return b.overflow ? 0 : b.len;
}
