/*
 * The app's counters: connections, HTTP, SSE, WebSocket, tokens, frames,
 * bytes and the delay histograms. One struct per worker, in memory the worker
 * keeps for its app (host.app_stats), updated with DP_STAT_ADD by the owning
 * worker only and read by every worker for /metrics (docs/metrics.md).
 */
#ifndef SLUICE_APP_STATS_H
#define SLUICE_APP_STATS_H

#include <stdint.h>

#include "worker/host.h"

/* Upper bounds (µs) of the delay histogram buckets; a last +Inf bucket
 * follows. The one table /metrics renders and every test reads. */
#define APP_DELAY_BUCKETS 12
extern const uint32_t app_stats_delay_bounds_us[APP_DELAY_BUCKETS];

struct app_stats {
	uint64_t conns_accepted;
	uint64_t conns_closed;
	uint64_t conns_refused;       /* over max_conns */
	uint64_t http_requests;
	uint64_t http_responses[6];   /* by class: [1]=1xx .. [5]=5xx */
	uint64_t ws_upgrades;
	uint64_t ws_messages_in;
	uint64_t ws_closes_sent;
	uint64_t sse_streams;
	uint64_t tokens_in;           /* tokens received from control (per subscriber) */
	uint64_t tokens_out;          /* tokens written into frames */
	uint64_t frames_out;          /* token frames (WS messages / SSE events) */
	uint64_t bytes_out;
	uint64_t pending_bytes;       /* gauge: bytes held by the batcher + tx queues */
	uint64_t slow_consumer_closes;
	uint64_t stale_records;       /* addressed to a closed conn (generation) */
	/* batching-added delay: token arrival at the worker -> framed */
	uint64_t delay_hist[APP_DELAY_BUCKETS + 1];
	uint64_t delay_sum_ns;
	/* end-to-end: token created by the backend -> framed */
	uint64_t e2e_hist[APP_DELAY_BUCKETS + 1];
	uint64_t e2e_sum_ns;
	uint64_t sse_active;          /* gauge: SSE streams open */
	uint64_t ws_active;           /* gauge: WebSocket conns open (after 101) */
	uint64_t kicks;               /* conns closed on control's KICK */
	uint64_t ws_auth_refused;     /* upgrades or re-checks control refused */
	/* Overload manager (issue 12) */
	uint64_t conns_refused_ip;    /* over conns_per_ip */
	uint64_t conns_refused_mem;   /* over worker_mem_mb */
	uint64_t body_admissions;     /* request heads sent to control before their body */
	uint64_t body_refused;        /* bodies not read: control refused, or over body_budget_mb */
	uint64_t body_bytes;          /* gauge: request body buffers held */
	uint64_t static_responses;    /* web UI files served (200 and 304) */
	uint64_t broadcasts;          /* pushed messages (BROADCAST) sent to WebSockets */
};

/* The app counters of a worker (its own, or a peer's for /metrics). */
static inline struct app_stats *app_stats_of(const struct host *h)
{
	return h->app_stats;
}

/* Records a delay sample in one histogram (delay_hist or e2e_hist). */
void app_stats_delay(uint64_t *hist, uint64_t *sum_ns, uint64_t delay_ns);
/* Records n samples of the same delay (a token framed for n subscribers). */
void app_stats_delay_n(uint64_t *hist, uint64_t *sum_ns, uint64_t delay_ns, uint64_t n);

#endif
