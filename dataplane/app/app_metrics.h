/*
 * /metrics: the Prometheus text format (0.0.4) over the counters of every
 * worker of this process (worker_count(), worker_stats_of()). Every metric is
 * described in docs/metrics.md.
 */
#ifndef SLUICE_APP_METRICS_H
#define SLUICE_APP_METRICS_H

#include <stdbool.h>
#include <stddef.h>

struct tp;

/* Renders into buf[0..cap); `tp` (this worker's transport) adds its own
 * counters. Returns the length, or 0 when cap is too small. */
size_t app_metrics_render(char *buf, size_t cap, bool control_attached, const struct tp *tp);

#endif
