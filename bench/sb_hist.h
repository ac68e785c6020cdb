/*
 * A fixed-size latency histogram for sluice-bench: log-linear buckets (64
 * linear steps in every power of two above 64 ns), so a sample is one
 * increment with no allocation and any percentile is within 1/64 (1.6%) of
 * the true value. Values are nanoseconds; anything past 2^40 ns (18 minutes)
 * lands in the last bucket.
 */
#ifndef SB_HIST_H
#define SB_HIST_H

#include <stdint.h>

#define SB_HIST_SUB 64u
#define SB_HIST_MAXLOG 40u
#define SB_HIST_BUCKETS ((SB_HIST_MAXLOG - 4u) * SB_HIST_SUB)

struct sb_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t max;
	uint64_t min;
	uint64_t b[SB_HIST_BUCKETS];
};

void sb_hist_reset(struct sb_hist *h);
void sb_hist_add(struct sb_hist *h, uint64_t v);
/* Adds every sample of src to dst. */
void sb_hist_merge(struct sb_hist *dst, const struct sb_hist *src);
/* The value at quantile q (0..1): the upper bound of the bucket holding the
 * ceil(q * count)-th sample, never above max; 0 for an empty histogram. */
uint64_t sb_hist_quantile(const struct sb_hist *h, double q);
/* Bucket index of v and the largest value that bucket holds (for tests). */
uint32_t sb_hist_index(uint64_t v);
uint64_t sb_hist_upper(uint32_t idx);

#endif
