/* sb_procs: slices that partition the sessions and streams, results that
 * add up, and a real fork + barrier + merge over the shared mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sb_procs.h"

static struct sb_conf conf;
static struct sb_slice sl;
static struct sb_results a, b, sum;

static void base_conf(long conns, long subs)
{
	memset(&conf, 0, sizeof(conf));
	conf.connections = conns;
	conf.subscribers = subs;
	conf.prompt_conns = 16;
	conf.nsteps = 2;
	conf.prompt_rates[0] = 0;
	conf.prompt_rates[1] = 300;
	conf.progress = true;
}

/* Every session lands in exactly one slice, every stream too, and each
 * slice's streams are what its sessions hold in the whole run (stream k
 * belongs to session k % nsess). */
static void test_slices_partition(void **state)
{
	static const long cases[][3] = { { 100000, 10, 6 }, { 40, 10, 3 }, { 17, 5, 4 }, { 7, 1, 7 },
					  { 100, 3, 16 } };

	(void)state;
	for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
		long conns = cases[t][0], nsess = (conns + cases[t][1] - 1) / cases[t][1];
		int n = (int)cases[t][2];
		long next_sess = 0, total = 0;

		base_conf(conns, cases[t][1]);
		for (int i = 0; i < n; i++) {
			long want = 0;

			sb_procs_slice(&conf, nsess, n, i, &sl);
			assert_int_equal(sl.sess_first, next_sess);
			for (long k = 0; k < conns; k++)
				want += k % nsess >= sl.sess_first && k % nsess < sl.sess_first + sl.nsess;
			assert_int_equal(sl.conf.connections, want);
			assert_int_equal(sl.conf.prompt_conns, (16 + n - 1) / n);
			assert_true(sl.conf.prompt_rates[1] * n > 299.999 && sl.conf.prompt_rates[1] * n < 300.001);
			assert_false(sl.conf.progress);
			next_sess += sl.nsess;
			total += sl.conf.connections;
		}
		assert_int_equal(next_sess, nsess);
		assert_int_equal(total, conns);
	}
}

static void fill(struct sb_results *r, uint64_t k)
{
	memset(r, 0, sizeof(*r));
	r->nsteps = 1;
	r->conns_open = (long)(10 * k);
	r->ramp_took_s = (double)k;
	r->errors[SB_ERR_UNFINISHED] = k;
	r->streaming.mem_bytes = 1000 * k;
	r->streaming.ok = 1;
	sb_hist_reset(&r->steps[0].delay);
	for (uint64_t i = 1; i <= 100; i++)
		sb_hist_add(&r->steps[0].delay, i * 1000 * k);
	r->steps[0].tokens = 100 * k;
	r->steps[0].seconds = 60 + (double)k;
	r->steps[0].prompt_rate = 50;
	r->steps[0].errors[SB_ERR_SEQ] = k;
	r->steps[0].bench_cpu_s = 0.5;
	r->steps[0].p0 = (struct sb_proc_sample){ .cpu_ns = 100 - k, .ok = 1 };
	r->steps[0].p1 = (struct sb_proc_sample){ .cpu_ns = 200 + k, .ok = 1 };
}

/* Counters and histograms add; the longest time and the widest CPU
 * interval win. */
static void test_results_add(void **state)
{
	(void)state;
	fill(&a, 1);
	fill(&b, 2);
	memset(&sum, 0, sizeof(sum));
	sb_results_add(&sum, &a, true);
	sb_results_add(&sum, &b, false);
	assert_int_equal(sum.conns_open, 30);
	assert_true(sum.ramp_took_s == 2);
	assert_int_equal(sum.errors[SB_ERR_UNFINISHED], 3);
	assert_int_equal(sum.streaming.mem_bytes, 2000);
	assert_int_equal(sum.nsteps, 1);
	assert_int_equal(sum.steps[0].tokens, 300);
	assert_int_equal(sum.steps[0].errors[SB_ERR_SEQ], 3);
	assert_int_equal(sum.steps[0].delay.count, 200);
	assert_int_equal(sum.steps[0].delay.max, 200000);
	assert_int_equal(sum.steps[0].delay.min, 1000);
	assert_true(sum.steps[0].seconds == 62);
	assert_true(sum.steps[0].prompt_rate == 100);
	assert_true(sum.steps[0].bench_cpu_s == 1.0);
	assert_int_equal(sum.steps[0].p0.cpu_ns, 98);
	assert_int_equal(sum.steps[0].p1.cpu_ns, 202);
}

static int pumped;

static void pump(void *arg)
{
	(void)arg;
	pumped++;
	usleep(1000);
}

/* Three children pass two barriers (each child arrives at its own time)
 * and write their results; the parent merges what they wrote. */
static void test_fork_sync_merge(void **state)
{
	struct sb_procs *p = sb_procs_create(3);
	int me;

	(void)state;
	assert_non_null(p);
	base_conf(30, 10);
	conf.nsteps = 1;
	conf.progress = false;
	me = sb_procs_fork(p);
	if (me >= 0) {
		struct sb_results *r = sb_procs_results(p, me);
		bool ok;

		usleep((useconds_t)(me * 20000));
		ok = sb_procs_sync(p, pump, NULL, 10);
		ok = ok && sb_procs_sync(p, pump, NULL, 10);
		fill(r, (uint64_t)me + 1);
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(me, -1);
	memset(&sum, 0, sizeof(sum));
	assert_int_equal(sb_procs_wait(p, &conf, 30, &sum), 0);
	assert_int_equal(sum.conns_open, 60);
	assert_int_equal(sum.steps[0].tokens, 600);
	assert_int_equal(sum.steps[0].delay.count, 300);
	sb_procs_destroy(p);
}

/* A child that never arrives: the others' barrier ends at its timeout. */
static void test_sync_timeout(void **state)
{
	struct sb_procs *p = sb_procs_create(2);
	int me;

	(void)state;
	assert_non_null(p);
	base_conf(20, 10);
	conf.progress = false;
	me = sb_procs_fork(p);
	if (me == 0)
		_exit(sb_procs_sync(p, pump, NULL, 0.2) ? 0 : 3);
	if (me == 1)
		_exit(0);
	memset(&sum, 0, sizeof(sum));
	assert_int_equal(sb_procs_wait(p, &conf, 30, &sum), -1);
	sb_procs_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slices_partition),
		cmocka_unit_test(test_results_add),
		cmocka_unit_test(test_fork_sync_merge),
		cmocka_unit_test(test_sync_timeout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
