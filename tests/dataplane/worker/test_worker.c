/*
 * The worker loop with the real channel and kernel transport, running a
 * small test app through the ops table (struct host_app_ops) that records
 * what the loop does.
 * The test thread plays sluice-control on the other side of the channel.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "sluice/chan.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "transport/tp_kernel.h"
#include "worker/timer_wheel.h"
#include "worker/worker.h"

#define WAIT_LIMIT_NS (10ull * 1000000000ull)
/* The worker's heartbeat period (worker.c). */
#define HB_NS (100ull * 1000000ull)

/* ---- the test app (runs on the worker thread) ----------------------------- */

struct app {
	struct host *h;
	struct tw_timer timer;
};

static struct host *the_host;
static atomic_int created, destroyed, opens, closes;
static atomic_int records, attach_calls, detach_calls, timer_fired, busy_ends;
static atomic_int max_per_turn;
static atomic_bool attached_seen;
static int turn_records; /* worker thread only */

static void on_timer(void *arg, struct tw_timer *t)
{
	struct app *a = arg;
	assert_ptr_equal(t, &a->timer);
	atomic_fetch_add(&timer_fired, 1);
}

static void *t_create(struct host *h, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	struct app *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	a->h = h;
	tw_init(&a->timer, on_timer, a);
	the_host = h;
	/* The worker exists for the app before its transport does. */
	assert_int_equal(worker_count(), 1);
	assert_ptr_equal(h->peer(h, 0), h);
	assert_null(h->peer(h, 1));
	assert_null(h->tp);
	assert_false(h->attached);
	atomic_fetch_add(&created, 1);
	return a;
}

static void t_destroy(void *app)
{
	struct app *a = app;
	atomic_fetch_add(&destroyed, 1);
	free(a);
}

static void *t_open(void *app, struct tp_conn *c, const struct tp_peer *peer)
{
	(void)c;
	(void)peer;
	atomic_fetch_add(&opens, 1);
	return app;
}

static size_t t_data(void *app, void *ctx, const uint8_t *data, size_t len)
{
	(void)app;
	(void)ctx;
	(void)data;
	return len;
}

static void t_eof(void *app, void *ctx)
{
	(void)app;
	(void)ctx;
}

static void t_drained(void *app, void *ctx)
{
	(void)app;
	(void)ctx;
}

static void t_close(void *app, void *ctx)
{
	(void)app;
	(void)ctx;
	atomic_fetch_add(&closes, 1);
}

static const struct tp_upcalls test_upcalls = {
	.on_open = t_open,
	.on_data = t_data,
	.on_eof = t_eof,
	.on_drained = t_drained,
	.on_close = t_close,
};

/* Every STATUS record is answered with a CONN_CLOSED record carrying the same
 * slot; status "timer" also arms a 30 ms timer. */
static void t_on_record(void *app, uint16_t type, const void *payload, uint32_t len)
{
	struct app *a = app;
	assert_int_equal(type, CHAN_REC_STATUS);
	assert_int_equal(len, sizeof(struct chan_status));
	const struct chan_status *s = payload;
	struct chan_conn_closed *cc = a->h->rec_reserve(a->h, CHAN_REC_CONN_CLOSED, sizeof(*cc));
	assert_non_null(cc);
	memset(cc, 0, sizeof(*cc));
	cc->conn = s->conn;
	a->h->rec_commit(a->h, sizeof(*cc));
	if (strcmp(s->status, "timer") == 0)
		tw_arm(a->h->wheel, &a->timer, host_now(a->h) + 30 * 1000000ull);
	turn_records++;
	atomic_fetch_add(&records, 1);
}

static void t_end_of_turn(void *app, bool busy)
{
	(void)app;
	if (turn_records > atomic_load(&max_per_turn))
		atomic_store(&max_per_turn, turn_records);
	if (busy)
		atomic_fetch_add(&busy_ends, 1);
	turn_records = 0;
}

static void t_control_changed(void *app, bool attached)
{
	struct app *a = app;
	assert_int_equal(a->h->attached, attached);
	if (attached)
		atomic_fetch_add(&attach_calls, 1);
	else
		atomic_fetch_add(&detach_calls, 1);
	atomic_store(&attached_seen, attached);
}

static const struct host_app_ops test_app = {
	.upcalls = &test_upcalls,
	.create = t_create,
	.destroy = t_destroy,
	.on_record = t_on_record,
	.end_of_turn = t_end_of_turn,
	.control_changed = t_control_changed,
};

/* ---- control side (test thread) ------------------------------------------ */

static char chan_path[128];
static struct sluice_conf conf;
static pthread_t th;
static atomic_int run_rc = -99;

static void *run_worker(void *arg)
{
	(void)arg;
	atomic_store(&run_rc, worker_run(0));
	return NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Waits for cond while keeping control's heartbeat fresh (when ctl != NULL). */
#define WAIT_FOR(ctl, cond)                                                   \
	do {                                                                  \
		uint64_t start_ = sluice_now_ns();                            \
		while (!(cond)) {                                             \
			assert_true(sluice_now_ns() - start_ < WAIT_LIMIT_NS); \
			if (ctl)                                              \
				chan_heartbeat((ctl), sluice_now_ns());       \
			sleep_ms(2);                                          \
		}                                                             \
	} while (0)

static void put_status(struct chan_prod *p, uint32_t slot, const char *status)
{
	struct chan_status *s = chan_reserve(p, CHAN_REC_STATUS, sizeof(*s));
	assert_non_null(s);
	memset(s, 0, sizeof(*s));
	s->conn.slot = slot;
	assert_true(chan_id_set(s->session_id, "s_1", 3));
	assert_true(chan_id_set(s->message_id, "m_1", 3));
	snprintf(s->status, sizeof(s->status), "%s", status);
	chan_commit(p, sizeof(*s));
}

/* Reads d2c answers; checks their slots run on from *next. */
static int read_answers(struct chan_cons *c, uint32_t *next)
{
	int n = 0;
	const struct chan_rec *r;
	while ((r = chan_peek(c)) != NULL) {
		assert_int_equal(r->type, CHAN_REC_CONN_CLOSED);
		const struct chan_conn_closed *cc = (const void *)r->payload;
		assert_int_equal(cc->conn.slot, *next);
		(*next)++;
		chan_consume(c);
		n++;
	}
	chan_release(c);
	return n;
}

static void test_worker_loop(void **state)
{
	(void)state;
	char err[256];
	snprintf(chan_path, sizeof(chan_path), "/dev/shm/sluice-test-worker-%d", (int)getpid());
	conf_defaults(&conf);
	conf.workers = 1;
	snprintf(conf.listen_addr, sizeof(conf.listen_addr), "127.0.0.1");
	conf.listen_port = 0;
	/* Room for the burst below (500 STATUS records) without a reader. */
	conf.ring_bytes = 128 * 1024;
	conf.pin_workers = false;

	struct chan_region *dp = chan_open(chan_path, 1, conf.ring_bytes, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	if (!dp)
		fail_msg("chan_open: %s", err);
	if (workers_setup(&conf, dp, &test_app, NULL, err, sizeof(err)) != 0)
		fail_msg("workers_setup: %s", err);
	assert_int_equal(atomic_load(&created), 1);
	assert_int_equal(worker_count(), 1);
	assert_int_equal(the_host->epoch, chan_header(dp)->dp_epoch);
	uint16_t port = tp_kernel_port(the_host->tp);
	assert_true(port != 0);
	assert_int_equal(pthread_create(&th, NULL, run_worker, NULL), 0);

	/* No control yet: the worker stays detached and sleeps. It is seen
	 * blocked with its doorbell asked for, and over three of its own
	 * heartbeats (100 ms apart, stamped by the worker) it takes a turn or
	 * two per heartbeat, never spins. Both sides are read from the worker's
	 * own stamps and counters, so a slow machine only makes fewer turns. */
	const struct host_stats *st = the_host->stats;
	assert_non_null(st);
	struct chan_hdr *hdr = chan_header(dp);
	WAIT_FOR((struct chan_region *)NULL, atomic_load(&chan_consumer(dp, 0)->ring->sleeping) != 0);
	uint64_t turns0 = DP_STAT_GET(&st->loop_turns);
	uint64_t hb0 = atomic_load(&hdr->dp_heartbeat_ns);
	WAIT_FOR((struct chan_region *)NULL, atomic_load(&hdr->dp_heartbeat_ns) - hb0 >= 3 * HB_NS);
	uint64_t beats = (atomic_load(&hdr->dp_heartbeat_ns) - hb0) / HB_NS + 1;
	assert_true(DP_STAT_GET(&st->loop_turns) - turns0 <= 2 * beats + 2);
	assert_int_equal(atomic_load(&attach_calls), 0);

	/* Control attaches. */
	struct chan_region *ctl = chan_open(chan_path, 1, conf.ring_bytes, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (!ctl)
		fail_msg("chan_open control: %s", err);
	WAIT_FOR(ctl, atomic_load(&attach_calls) == 1);
	assert_true(atomic_load(&attached_seen));

	/* A record while the worker sleeps: the doorbell wakes it. */
	struct chan_prod *p = chan_producer(ctl, 0);
	struct chan_cons *c = chan_consumer(ctl, 0);
	uint32_t next_slot = 0, answered = 0;
	put_status(p, 0, "hello");
	chan_publish(p);
	WAIT_FOR(ctl, atomic_load(&records) == 1);
	WAIT_FOR(ctl, (answered += (uint32_t)read_answers(c, &next_slot)) == 1);

	/* A malformed record is counted and dropped. */
	uint8_t *bad = chan_reserve(p, CHAN_REC_STATUS, 8);
	assert_non_null(bad);
	memset(bad, 0, 8);
	chan_commit(p, 8);
	put_status(p, 1, "timer");
	chan_publish(p);
	WAIT_FOR(ctl, atomic_load(&records) == 2);
	assert_int_equal(DP_STAT_GET(&st->chan_bad_records), 1);
	/* The timer armed by that record fires while the loop blocks. */
	WAIT_FOR(ctl, atomic_load(&timer_fired) == 1);

	/* A burst: at most 256 records per turn, and such a turn is busy. */
	enum { BURST = 500 };
	for (uint32_t i = 0; i < BURST; i++)
		put_status(p, 2 + i, "burst");
	chan_publish(p);
	WAIT_FOR(ctl, atomic_load(&records) == 2 + BURST);
	assert_true(atomic_load(&max_per_turn) <= 256);
	assert_true(atomic_load(&max_per_turn) >= 64);
	assert_true(atomic_load(&busy_ends) >= 1);
	WAIT_FOR(ctl, (answered += (uint32_t)read_answers(c, &next_slot)) == 2 + BURST);
	assert_int_equal(DP_STAT_GET(&st->chan_records_in), 2 + BURST);
	assert_int_equal(DP_STAT_GET(&st->chan_records_out), 2 + BURST);

	/* Control restarts quickly: same liveness, new epoch -> re-announce. */
	chan_close(ctl);
	ctl = chan_open(chan_path, 1, conf.ring_bytes, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (!ctl)
		fail_msg("chan_open control: %s", err);
	WAIT_FOR(ctl, atomic_load(&attach_calls) == 2);
	assert_int_equal(atomic_load(&detach_calls), 0);

	/* A client connection is open when the worker stops. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	WAIT_FOR(ctl, atomic_load(&opens) == 1);

	/* Control goes silent: detached after the 1 s liveness timeout. */
	WAIT_FOR((struct chan_region *)NULL, atomic_load(&detach_calls) == 1);
	assert_false(atomic_load(&attached_seen));

	workers_stop();
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(atomic_load(&run_rc), 0);
	/* Stopping closed the connection through the app and destroyed it. */
	assert_int_equal(atomic_load(&closes), 1);
	assert_int_equal(atomic_load(&destroyed), 1);
	char b;
	assert_int_equal(recv(fd, &b, 1, 0), 0);
	close(fd);
	workers_teardown();
	assert_int_equal(worker_count(), 0);
	chan_close(ctl);
	chan_close(dp);
	assert_int_equal(chan_unlink(chan_path, 1), 0);
}

/* A listen address that cannot work fails setup cleanly, app destroyed. */
static void test_setup_failure(void **state)
{
	(void)state;
	char err[256];
	snprintf(chan_path, sizeof(chan_path), "/dev/shm/sluice-test-worker-f%d", (int)getpid());
	conf_defaults(&conf);
	conf.workers = 1;
	snprintf(conf.listen_addr, sizeof(conf.listen_addr), "256.1.1.1");
	conf.listen_port = 0;
	conf.ring_bytes = 64 * 1024;
	struct chan_region *dp = chan_open(chan_path, 1, conf.ring_bytes, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	if (!dp)
		fail_msg("chan_open: %s", err);
	int before = atomic_load(&destroyed);
	assert_int_equal(workers_setup(&conf, dp, &test_app, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "256.1.1.1"));
	assert_int_equal(atomic_load(&destroyed), before + 1);
	assert_int_equal(worker_count(), 0);
	conf.workers = 2; /* more workers than the channel has */
	assert_int_equal(workers_setup(&conf, dp, &test_app, NULL, err, sizeof(err)), -1);
	chan_close(dp);
	assert_int_equal(chan_unlink(chan_path, 1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_worker_loop),
		cmocka_unit_test(test_setup_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
