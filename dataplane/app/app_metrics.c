/* /metrics rendering (see app_metrics.h and docs/metrics.md). */
#include "app/app_metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_event.h"
#include "app/app_int.h"
#include "app/app_stats.h"
#include "transport/transport.h"
#include "worker/host.h"

/* Where a counter lives: the app's counters or the worker's own. */
enum metric_src { SRC_APP, SRC_HOST };

struct metric_def {
	const char *name;
	const char *type;
	const char *help;
	uint8_t src;  /* enum metric_src */
	size_t off;   /* offset of the uint64_t in struct app_stats or host_stats */
};

#define A(name, type, field, help) { name, type, help, SRC_APP, offsetof(struct app_stats, field) }
#define H(name, type, field, help) { name, type, help, SRC_HOST, offsetof(struct host_stats, field) }

static const struct metric_def metric_defs[] = {
	A("sluice_connections_accepted_total", "counter", conns_accepted, "Client connections accepted."),
	A("sluice_connections_closed_total", "counter", conns_closed, "Client connections closed."),
	A("sluice_connections_refused_total", "counter", conns_refused, "Connections refused because a worker had max_conns open."),
	A("sluice_http_requests_total", "counter", http_requests, "HTTP requests parsed."),
	A("sluice_ws_upgrades_total", "counter", ws_upgrades, "WebSocket upgrades accepted (101)."),
	A("sluice_ws_messages_in_total", "counter", ws_messages_in, "WebSocket messages received from clients."),
	A("sluice_ws_closes_sent_total", "counter", ws_closes_sent, "WebSocket closes started by the server."),
	A("sluice_sse_streams_total", "counter", sse_streams, "SSE streams opened."),
	A("sluice_sse_active", "gauge", sse_active, "SSE streams open now."),
	A("sluice_ws_active", "gauge", ws_active, "WebSocket connections open now (after 101)."),
	A("sluice_ws_auth_refused_total", "counter", ws_auth_refused, "WebSocket upgrades, or re-checks after a control restart, that control refused."),
	A("sluice_connections_refused_ip_total", "counter", conns_refused_ip, "Connections refused because their client address had conns_per_ip open on the worker."),
	A("sluice_connections_refused_overload_total", "counter", conns_refused_mem, "Connections refused because the worker's buffered bytes passed worker_mem_mb."),
	A("sluice_body_admissions_total", "counter", body_admissions, "Request heads sent to control before their body was read (large or chunked bodies)."),
	A("sluice_bodies_refused_total", "counter", body_refused, "Request bodies never read: refused by control (unauthenticated, over a limit) or over body_budget_mb."),
	A("sluice_body_bytes", "gauge", body_bytes, "Bytes of request body buffers held now."),
	A("sluice_static_responses_total", "counter", static_responses, "Web UI files served (200 and 304)."),
	A("sluice_ws_broadcasts_total", "counter", broadcasts, "Messages control pushed to WebSockets (/ws/admin events and snapshots)."),
	A("sluice_kicks_total", "counter", kicks, "Connections closed because control asked (revoked or expired login, sessions kill)."),
	A("sluice_tokens_in_total", "counter", tokens_in, "Tokens received from control, counted per subscribed connection."),
	A("sluice_tokens_out_total", "counter", tokens_out, "Tokens written into frames."),
	A("sluice_frames_out_total", "counter", frames_out, "Token frames sent (SSE token events or WebSocket token messages); frames per token = frames_out / tokens_out."),
	A("sluice_bytes_out_total", "counter", bytes_out, "Bytes queued to clients."),
	A("sluice_pending_bytes", "gauge", pending_bytes, "Bytes held by the batcher plus bytes queued in transports and not yet sent."),
	A("sluice_slow_consumer_closes_total", "counter", slow_consumer_closes, "Connections closed because their pending bytes passed max_pending_bytes."),
	H("sluice_chan_records_in_total", "counter", chan_records_in, "Records read from control."),
	H("sluice_chan_records_out_total", "counter", chan_records_out, "Records written to control."),
	H("sluice_chan_full_total", "counter", chan_full, "Records that did not fit in the channel to control (answered 503)."),
	H("sluice_chan_bad_records_total", "counter", chan_bad_records, "Malformed records from control, dropped."),
	A("sluice_stale_records_total", "counter", stale_records, "Records for connections that had closed (generation mismatch), dropped."),
	H("sluice_loop_turns_total", "counter", loop_turns, "Worker loop turns."),
	H("sluice_busy_turns_total", "counter", busy_turns, "Worker loop turns judged busy (the batcher coalesces on those)."),
};

/* One counter summed over every worker of the process. */
static uint64_t sum_field(const struct host *h, enum metric_src src, size_t off)
{
	const struct host *p;
	uint64_t v = 0;

	for (uint32_t i = 0; (p = h->peer(h, i)) != NULL; i++) {
		const void *base = src == SRC_APP ? (const void *)app_stats_of(p) : (const void *)p->stats;

		v += DP_STAT_GET((const uint64_t *)(const void *)((const char *)base + off));
	}
	return v;
}

static uint32_t count_workers(const struct host *h)
{
	uint32_t n = 0;

	while (h->peer(h, n))
		n++;
	return n;
}

static void header(struct app_buf *b, const char *name, const char *type, const char *help)
{
	app_buf_str(b, "# HELP ");
	app_buf_str(b, name);
	app_buf_put(b, " ", 1);
	app_buf_str(b, help);
	app_buf_str(b, "\n# TYPE ");
	app_buf_str(b, name);
	app_buf_put(b, " ", 1);
	app_buf_str(b, type);
	app_buf_put(b, "\n", 1);
}

static void sample(struct app_buf *b, const char *name, const char *labels, uint64_t v)
{
	app_buf_str(b, name);
	app_buf_str(b, labels);
	app_buf_put(b, " ", 1);
	app_buf_u64(b, v);
	app_buf_put(b, "\n", 1);
}

static void histogram(struct app_buf *b, const struct host *h, const char *name, const char *help,
		      size_t hist_off, size_t sum_off)
{
	uint64_t cum = 0;
	char tmp[160];
	int n;

	header(b, name, "histogram", help);
	for (uint32_t i = 0; i <= APP_DELAY_BUCKETS; i++) {
		cum += sum_field(h, SRC_APP, hist_off + i * sizeof(uint64_t));
		if (i < APP_DELAY_BUCKETS)
			n = snprintf(tmp, sizeof(tmp), "%s_bucket{le=\"%g\"} ", name,
				     app_stats_delay_bounds_us[i] / 1e6);
		else
			n = snprintf(tmp, sizeof(tmp), "%s_bucket{le=\"+Inf\"} ", name);
		app_buf_put(b, tmp, (size_t)n);
		app_buf_u64(b, cum);
		app_buf_put(b, "\n", 1);
	}
	n = snprintf(tmp, sizeof(tmp), "%s_sum %.9f\n", name, sum_field(h, SRC_APP, sum_off) / 1e9);
	app_buf_put(b, tmp, (size_t)n);
	n = snprintf(tmp, sizeof(tmp), "%s_count ", name);
	app_buf_put(b, tmp, (size_t)n);
	app_buf_u64(b, cum);
	app_buf_put(b, "\n", 1);
}

/* The transport's own samples (the native stack's TCP and drop counters);
 * a family's HELP and TYPE lines come with its first sample. */
static void transport_samples(struct app_buf *b, const struct tp_ops *ops)
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

size_t app_metrics_render(const struct host *h, char *buf, size_t cap)
{
	static const char *const classes[] = { "", "1xx", "2xx", "3xx", "4xx", "5xx" };
	struct app_buf b;
	uint64_t accepted, closed;

	app_buf_init(&b, buf, cap);
	for (size_t i = 0; i < sizeof(metric_defs) / sizeof(metric_defs[0]); i++) {
		header(&b, metric_defs[i].name, metric_defs[i].type, metric_defs[i].help);
		sample(&b, metric_defs[i].name, "",
		       sum_field(h, metric_defs[i].src, metric_defs[i].off));
	}
	accepted = sum_field(h, SRC_APP, offsetof(struct app_stats, conns_accepted));
	closed = sum_field(h, SRC_APP, offsetof(struct app_stats, conns_closed));
	header(&b, "sluice_connections_active", "gauge", "Client connections open now.");
	sample(&b, "sluice_connections_active", "", accepted >= closed ? accepted - closed : 0);
	header(&b, "sluice_http_responses_total", "counter", "HTTP responses sent, by status class.");
	for (uint32_t k = 1; k <= 5; k++) {
		char labels[24];

		snprintf(labels, sizeof(labels), "{class=\"%s\"}", classes[k]);
		sample(&b, "sluice_http_responses_total", labels,
		       sum_field(h, SRC_APP,
				 offsetof(struct app_stats, http_responses) + k * sizeof(uint64_t)));
	}
	histogram(&b, h, "sluice_token_batch_delay_seconds",
		  "Delay the batcher added: token arrival at the worker to being framed.",
		  offsetof(struct app_stats, delay_hist), offsetof(struct app_stats, delay_sum_ns));
	histogram(&b, h, "sluice_token_e2e_delay_seconds",
		  "Token creation by the backend to being framed by the worker.",
		  offsetof(struct app_stats, e2e_hist), offsetof(struct app_stats, e2e_sum_ns));
	header(&b, "sluice_control_attached", "gauge", "1 while sluice-control is attached (fresh heartbeat, or withdrawing until it closes).");
	sample(&b, "sluice_control_attached", "", h->attached ? 1 : 0);
	header(&b, "sluice_workers", "gauge", "Dataplane workers in this process.");
	sample(&b, "sluice_workers", "", count_workers(h));
	transport_samples(&b, h->tp->ops);
	return b.overflow ? 0 : b.len;
}

/* ---- control's backend counters --------------------------------------- */

void app_metrics_backends(struct app *a, const void *payload, uint32_t len)
{
	if (len > a->bk_cap) {
		uint8_t *p = realloc(a->bk_rec, len);
		if (!p)
			return; /* the previous copy stays: /metrics lags a second */
		a->bk_rec = p;
		a->bk_cap = len;
	}
	memcpy(a->bk_rec, payload, len);
	a->bk_len = len;
}

/* A label value as Prometheus wants it: backslash, quote and newline escaped. */
static void label_value(struct app_buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			app_buf_put(b, "\\", 1);
		app_buf_put(b, v, 1);
	}
}

static void bk_labels(struct app_buf *b, const char *name, const struct chan_backend_entry *e, bool model,
		      const char *suffix)
{
	app_buf_str(b, name);
	app_buf_str(b, "{backend=\"");
	label_value(b, e->backend);
	if (model) {
		app_buf_str(b, "\",model=\"");
		label_value(b, e->model);
	}
	app_buf_str(b, "\"");
	if (suffix)
		app_buf_str(b, suffix);
	app_buf_str(b, "} ");
}

size_t app_metrics_render_backends(const struct app *a, char *buf, size_t cap, bool *overflow)
{
	struct app_buf b;
	app_buf_init(&b, buf, cap);
	*overflow = false;
	if (!a->bk_len)
		return 0;
	const struct chan_backends *h = (const struct chan_backends *)a->bk_rec;
	const struct chan_backend_entry *e = (const struct chan_backend_entry *)(h + 1);
	static const struct {
		const char *name, *type, *help;
		size_t off;
	} per_model[] = {
		{ "sluice_backend_requests_total", "counter", "Requests sent to a backend for a model (failed-over attempts included).",
		  offsetof(struct chan_backend_entry, requests) },
		{ "sluice_backend_errors_total", "counter", "Requests to a backend that failed (failed over, or ended in error).",
		  offsetof(struct chan_backend_entry, errors) },
		{ "sluice_backend_prompt_tokens_total", "counter", "Prompt tokens the backend counted.",
		  offsetof(struct chan_backend_entry, prompt_tokens) },
		{ "sluice_backend_completion_tokens_total", "counter", "Completion tokens the backend counted.",
		  offsetof(struct chan_backend_entry, completion_tokens) },
	};
	for (size_t k = 0; k < sizeof(per_model) / sizeof(per_model[0]); k++) {
		header(&b, per_model[k].name, per_model[k].type, per_model[k].help);
		for (uint32_t i = 0; i < h->count; i++) {
			uint64_t v;
			memcpy(&v, (const char *)&e[i] + per_model[k].off, sizeof(v));
			bk_labels(&b, per_model[k].name, &e[i], true, NULL);
			app_buf_u64(&b, v);
			app_buf_put(&b, "\n", 1);
		}
	}
	header(&b, "sluice_backend_inflight", "gauge", "Requests running on a backend for a model now.");
	for (uint32_t i = 0; i < h->count; i++) {
		bk_labels(&b, "sluice_backend_inflight", &e[i], true, NULL);
		app_buf_u64(&b, e[i].inflight);
		app_buf_put(&b, "\n", 1);
	}
	static const struct {
		const char *name, *help;
		size_t off;
		size_t size;
	} per_backend[] = {
		{ "sluice_backend_queued", "Requests waiting for a slot of a backend.",
		  offsetof(struct chan_backend_entry, queued), sizeof(uint32_t) },
		{ "sluice_backend_up", "1 while a backend passes its health checks (or has none).",
		  offsetof(struct chan_backend_entry, up), sizeof(uint8_t) },
		{ "sluice_backend_breaker_state", "A backend's circuit breaker: 0 closed, 1 open, 2 half-open.",
		  offsetof(struct chan_backend_entry, breaker), sizeof(uint8_t) },
	};
	for (size_t k = 0; k < sizeof(per_backend) / sizeof(per_backend[0]); k++) {
		header(&b, per_backend[k].name, "gauge", per_backend[k].help);
		for (uint32_t i = 0; i < h->count; i++) {
			if (i && strcmp(e[i].backend, e[i - 1].backend) == 0)
				continue;
			const uint8_t *f = (const uint8_t *)&e[i] + per_backend[k].off;
			uint32_t v = 0;
			if (per_backend[k].size == sizeof(uint32_t))
				memcpy(&v, f, sizeof(v));
			else
				v = *f;
			bk_labels(&b, per_backend[k].name, &e[i], false, NULL);
			app_buf_u64(&b, v);
			app_buf_put(&b, "\n", 1);
		}
	}
	header(&b, "sluice_backend_ttft_seconds", "histogram",
	       "Time from sending a request to a backend to its first token.");
	for (uint32_t i = 0; i < h->count; i++) {
		char le[48];
		for (uint32_t k = 0; k < CHAN_TTFT_BUCKETS; k++) {
			snprintf(le, sizeof(le), ",le=\"%g\"", h->ttft_le[k]);
			bk_labels(&b, "sluice_backend_ttft_seconds_bucket", &e[i], true, le);
			app_buf_u64(&b, e[i].ttft_buckets[k]);
			app_buf_put(&b, "\n", 1);
		}
		bk_labels(&b, "sluice_backend_ttft_seconds_bucket", &e[i], true, ",le=\"+Inf\"");
		app_buf_u64(&b, e[i].ttft_count);
		app_buf_put(&b, "\n", 1);
		char sum[48];
		int n = snprintf(sum, sizeof(sum), "%.6f\n", e[i].ttft_sum_s);
		bk_labels(&b, "sluice_backend_ttft_seconds_sum", &e[i], true, NULL);
		app_buf_put(&b, sum, (size_t)n);
		bk_labels(&b, "sluice_backend_ttft_seconds_count", &e[i], true, NULL);
		app_buf_u64(&b, e[i].ttft_count);
		app_buf_put(&b, "\n", 1);
	}
	*overflow = b.overflow;
	return b.overflow ? 0 : b.len;
}
