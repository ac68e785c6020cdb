/* The log-linear latency histogram (see sb_hist.h). */
#include "sb_hist.h"

#include <string.h>

void sb_hist_reset(struct sb_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

/* Values below 64 ns get one bucket each; above, the power of two picks a
 * group of 64 buckets and the next 6 bits below the top bit the bucket. */
uint32_t sb_hist_index(uint64_t v)
{
	unsigned lg;
	uint32_t idx;

	if (v < SB_HIST_SUB)
		return (uint32_t)v;
	lg = 63u - (unsigned)__builtin_clzll(v);
	if (lg > SB_HIST_MAXLOG)
		return SB_HIST_BUCKETS - 1u;
	idx = (lg - 5u) * SB_HIST_SUB + (uint32_t)((v >> (lg - 6u)) & (SB_HIST_SUB - 1u));
	return idx < SB_HIST_BUCKETS ? idx : SB_HIST_BUCKETS - 1u;
}

uint64_t sb_hist_upper(uint32_t idx)
{
	uint32_t grp, sub;
	unsigned lg;

	if (idx < SB_HIST_SUB)
		return idx;
	grp = idx / SB_HIST_SUB;
	sub = idx % SB_HIST_SUB;
	lg = grp + 5u;
	return ((uint64_t)(SB_HIST_SUB + sub + 1u) << (lg - 6u)) - 1u;
}

void sb_hist_add(struct sb_hist *h, uint64_t v)
{
	h->b[sb_hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	if (v < h->min)
		h->min = v;
}

void sb_hist_merge(struct sb_hist *dst, const struct sb_hist *src)
{
	for (uint32_t i = 0; i < SB_HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
	if (src->min < dst->min)
		dst->min = src->min;
}

uint64_t sb_hist_quantile(const struct sb_hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	if (q <= 0)
		return h->min;
	rank = (uint64_t)(q * (double)h->count);
	if ((double)rank < q * (double)h->count)
		rank++;
	if (rank == 0)
		rank = 1;
	for (uint32_t i = 0; i < SB_HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t up = sb_hist_upper(i);

			return up < h->max ? up : h->max;
		}
	}
	return h->max;
}
