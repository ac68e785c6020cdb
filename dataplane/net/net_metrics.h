/*
 * The native stack's counters on /metrics, through the transport interface:
 * the counter members of struct tp_ops (transport.h) describe every TCP and
 * drop sample, and fill them from net_stats_total(), so the app renders them
 * without knowing the stack. docs/metrics.md lists them.
 */
#ifndef SLUICE_NET_METRICS_H
#define SLUICE_NET_METRICS_H

#include "transport/transport.h"

/* Sets ops->counter_defs, ->ncounters and ->counters to the stack's. */
void net_metrics_ops(struct tp_ops *ops);

#endif
