/*
 * /metrics: the Prometheus text format (0.0.4) over the counters of every
 * worker of this process (the app's and the worker's own, found through the
 * host's peer()), then the transport's own counters (tp_ops.counters).
 * Every metric is described in docs/metrics.md.
 */
#ifndef SLUICE_APP_METRICS_H
#define SLUICE_APP_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>

struct app;
struct host;

/* Renders into buf[0..cap) on worker h's thread. Returns the length, or 0
 * when cap is too small. */
size_t app_metrics_render(const struct host *h, char *buf, size_t cap);
/* Keeps control's latest CHAN_REC_BACKENDS record (validated) for /metrics. */
void app_metrics_backends(struct app *a, const void *payload, uint32_t len);
/* The backend families of that record, appended to buf[0..cap): the bytes
 * written, or 0 when they do not fit (nothing when no record came yet). */
size_t app_metrics_render_backends(const struct app *a, char *buf, size_t cap, bool *overflow);

#endif
