/* The app's counters (see app_stats.h). */
#include "app/app_stats.h"

const uint32_t app_stats_delay_bounds_us[APP_DELAY_BUCKETS] = {
	10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000, 250000,
};

void app_stats_delay_n(uint64_t *hist, uint64_t *sum_ns, uint64_t delay_ns, uint64_t n)
{
	uint32_t i = 0;

	while (i < APP_DELAY_BUCKETS && delay_ns > (uint64_t)app_stats_delay_bounds_us[i] * 1000u)
		i++;
	__atomic_store_n(&hist[i], __atomic_load_n(&hist[i], __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
	__atomic_store_n(sum_ns, __atomic_load_n(sum_ns, __ATOMIC_RELAXED) + delay_ns * n,
			 __ATOMIC_RELAXED);
}

void app_stats_delay(uint64_t *hist, uint64_t *sum_ns, uint64_t delay_ns)
{
	app_stats_delay_n(hist, sum_ns, delay_ns, 1);
}
