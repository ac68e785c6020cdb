/*
 * The dataplane's single-writer counters: the worker's (struct host_stats)
 * and its app's. The owning worker updates them with a relaxed load and store
 * (no locked instruction, there is one writer); any worker reads them with
 * DP_STAT_GET to render /metrics.
 */
#ifndef SLUICE_DP_STAT_H
#define SLUICE_DP_STAT_H

#include <stdint.h>

#define DP_STAT_ADD(s, field, n) \
	__atomic_store_n(&(s)->field, __atomic_load_n(&(s)->field, __ATOMIC_RELAXED) + (uint64_t)(n), __ATOMIC_RELAXED)
#define DP_STAT_SUB(s, field, n) \
	__atomic_store_n(&(s)->field, __atomic_load_n(&(s)->field, __ATOMIC_RELAXED) - (uint64_t)(n), __ATOMIC_RELAXED)
#define DP_STAT_GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)

#endif
