/*
 * The control loop as a library: what layers register with it (record
 * handlers, fds, timers, before-sleep and peer-reset hooks) over a real
 * channel region, with the test playing the dataplane.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop/cp_loop.h"
#include "sluice/chan.h"
#include "sluice/chan_proto.h"

#define RING (64u * 1024u)

struct fx {
	char shm[96];
	struct chan_region *cp, *dp;
	struct cp_loop *l;
};

static int setup(void **state)
{
	static int counter;
	static struct fx f;
	char err[256];
	memset(&f, 0, sizeof(f));
	snprintf(f.shm, sizeof(f.shm), "/dev/shm/sluice-test-loop-%d-%d", (int)getpid(), counter++);
	f.cp = chan_open(f.shm, 2, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	assert_non_null(f.cp);
	f.dp = chan_open(f.shm, 2, RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	assert_non_null(f.dp);
	f.l = cpl_create(f.cp, err, sizeof(err));
	assert_non_null(f.l);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	cpl_destroy(f->l);
	chan_close(f->dp);
	chan_close(f->cp);
	chan_unlink(f->shm, 2);
	return 0;
}

/* ---- records ------------------------------------------------------------- */

struct seen {
	uint32_t n;
	uint16_t type;
	uint32_t worker;
};

static void on_conn_closed(void *arg, uint16_t type, const void *payload, uint32_t len)
{
	struct seen *s = arg;
	assert_int_equal(len, sizeof(struct chan_conn_closed));
	s->n++;
	s->type = type;
	s->worker = ((const struct chan_conn_closed *)payload)->conn.worker;
}

static void put_closed(struct fx *f, uint32_t w)
{
	struct chan_prod *p = chan_producer(f->dp, w);
	struct chan_conn_closed *c = chan_reserve(p, CHAN_REC_CONN_CLOSED, sizeof(*c));
	assert_non_null(c);
	memset(c, 0, sizeof(*c));
	c->conn.worker = (uint16_t)w;
	c->conn.slot = 3;
	assert_true(chan_commit(p, sizeof(*c)));
	chan_publish(p);
}

static void test_record_handlers(void **state)
{
	struct fx *f = *state;
	struct seen s = { 0 }, other = { 0 };
	assert_int_equal(cpl_on_record(f->l, CHAN_REC_CONN_CLOSED, on_conn_closed, &s), 0);
	/* One handler per type. */
	assert_int_equal(cpl_on_record(f->l, CHAN_REC_CONN_CLOSED, on_conn_closed, &other), -1);
	assert_int_equal(cpl_on_record(f->l, 999, on_conn_closed, &other), -1);

	put_closed(f, 0);
	put_closed(f, 1);
	assert_int_equal(cpl_turn(f->l, false), 2);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.type, CHAN_REC_CONN_CLOSED);
	assert_int_equal(s.worker, 1);

	/* An invalid record is counted, never handed over. */
	struct chan_conn_closed bad;
	memset(&bad, 0, sizeof(bad));
	cpl_dispatch(f->l, CHAN_REC_CONN_CLOSED, &bad, 3);
	assert_int_equal(s.n, 2);
	assert_int_equal(cpl_stats(f->l)->invalid_records, 1);

	/* Removed: valid records of the type are counted as unhandled. */
	assert_int_equal(cpl_on_record(f->l, CHAN_REC_CONN_CLOSED, NULL, NULL), 0);
	put_closed(f, 0);
	assert_int_equal(cpl_turn(f->l, false), 1);
	assert_int_equal(s.n, 2);
	assert_int_equal(cpl_stats(f->l)->unhandled_records, 1);
	assert_int_equal(cpl_on_record(f->l, CHAN_REC_CONN_CLOSED, on_conn_closed, &other), 0);
}

/* ---- fds ----------------------------------------------------------------- */

struct fdx {
	struct cp_loop *l;
	int fds[2][2]; /* two pipes */
	uint32_t calls[2];
	uint32_t events[2];
	bool remove_other; /* the first callback removes the second watch */
};

static void on_fd(void *arg, int fd, uint32_t events)
{
	struct fdx *x = arg;
	int i = fd == x->fds[0][0] || fd == x->fds[0][1] ? 0 : 1;
	x->calls[i]++;
	x->events[i] = events;
	char b[16];
	if (events & CPL_READ)
		assert_true(read(fd, b, sizeof(b)) > 0);
	if (x->remove_other)
		cpl_del_fd(x->l, x->fds[1 - i][0]);
}

static void test_fds(void **state)
{
	struct fx *f = *state;
	static struct fdx x;
	memset(&x, 0, sizeof(x));
	x.l = f->l;
	assert_int_equal(pipe(x.fds[0]), 0);
	assert_int_equal(pipe(x.fds[1]), 0);
	assert_int_equal(cpl_add_fd(f->l, x.fds[0][0], CPL_READ, on_fd, &x), 0);
	assert_int_equal(cpl_add_fd(f->l, x.fds[1][0], CPL_READ, on_fd, &x), 0);
	assert_int_equal(cpl_add_fd(f->l, x.fds[1][0], CPL_READ, on_fd, &x), -1);
	assert_int_equal(errno, EEXIST);

	assert_int_equal(write(x.fds[0][1], "a", 1), 1);
	cpl_turn(f->l, true);
	assert_int_equal(x.calls[0], 1);
	assert_int_equal(x.calls[1], 0);
	assert_int_equal(x.events[0], CPL_READ);

	/* Both ready; whichever runs first removes the other, whose event of
	 * the same batch is then not delivered. */
	x.remove_other = true;
	assert_int_equal(write(x.fds[0][1], "b", 1), 1);
	assert_int_equal(write(x.fds[1][1], "c", 1), 1);
	cpl_turn(f->l, false);
	assert_int_equal(x.calls[0] + x.calls[1], 2);
	x.remove_other = false;

	/* Write interest on the write end; then none. */
	cpl_del_fd(f->l, x.fds[0][0]);
	cpl_del_fd(f->l, x.fds[1][0]);
	assert_int_equal(cpl_add_fd(f->l, x.fds[1][1], CPL_WRITE, on_fd, &x), 0);
	uint32_t before = x.calls[1];
	cpl_turn(f->l, false);
	assert_int_equal(x.calls[1], before + 1);
	assert_int_equal(x.events[1] & CPL_WRITE, CPL_WRITE);
	assert_int_equal(cpl_mod_fd(f->l, x.fds[1][1], 0), 0);
	cpl_turn(f->l, false);
	assert_int_equal(x.calls[1], before + 1);
	assert_int_equal(cpl_mod_fd(f->l, x.fds[0][1], CPL_READ), -1);
	cpl_del_fd(f->l, x.fds[1][1]);
	for (int i = 0; i < 2; i++) {
		close(x.fds[i][0]);
		close(x.fds[i][1]);
	}
}

/* ---- timers and hooks ---------------------------------------------------- */

struct tx {
	struct cp_loop *l;
	struct cpl_timer t[3];
	uint32_t order[8];
	uint32_t n;
	uint64_t last_now;
	bool rearm_past; /* timer 0 re-arms itself at the time it ran */
};

static struct tx TX;

static void on_timer(void *arg, uint64_t now_ns)
{
	struct cpl_timer *t = arg;
	uint32_t i = (uint32_t)(t - TX.t);
	assert_true(TX.n < SLUICE_ARRAY_LEN(TX.order));
	TX.order[TX.n++] = i;
	TX.last_now = now_ns;
	assert_int_equal(cpl_now(TX.l), now_ns);
	if (i == 0 && TX.rearm_past)
		cpl_timer_arm(TX.l, t, now_ns);
}

static void test_timers(void **state)
{
	struct fx *f = *state;
	memset(&TX, 0, sizeof(TX));
	TX.l = f->l;
	for (int i = 0; i < 3; i++)
		cpl_timer_init(&TX.t[i], on_timer, &TX.t[i]);
	assert_int_equal(cpl_next_deadline(f->l), UINT64_MAX);
	assert_int_equal(cpl_timer_arm(f->l, &TX.t[0], 3000), 0);
	assert_int_equal(cpl_timer_arm(f->l, &TX.t[1], 1000), 0);
	assert_int_equal(cpl_timer_arm(f->l, &TX.t[2], 2000), 0);
	assert_true(cpl_timer_armed(&TX.t[2]));
	cpl_timer_cancel(f->l, &TX.t[2]);
	assert_false(cpl_timer_armed(&TX.t[2]));
	assert_int_equal(cpl_next_deadline(f->l), 1000);

	assert_int_equal(cpl_run_due(f->l, 999), 1000);
	assert_int_equal(TX.n, 0);
	assert_int_equal(cpl_run_due(f->l, 5000), UINT64_MAX);
	assert_int_equal(TX.n, 2);
	assert_int_equal(TX.order[0], 1);
	assert_int_equal(TX.order[1], 0);
	assert_int_equal(TX.last_now, 5000);

	/* A timer re-armed into the past by its callback waits for the next
	 * run: one run cannot spin on it. */
	TX.rearm_past = true;
	cpl_timer_arm(f->l, &TX.t[0], 6000);
	assert_int_equal(cpl_run_due(f->l, 7000), 7000);
	assert_int_equal(TX.n, 3);
	assert_int_equal(cpl_run_due(f->l, 7000), 7000);
	assert_int_equal(TX.n, 4);
	TX.rearm_past = false;
	cpl_timer_cancel(f->l, &TX.t[0]);
	assert_int_equal(cpl_next_deadline(f->l), UINT64_MAX);

	/* A turn runs what is due by the clock. */
	cpl_timer_arm(f->l, &TX.t[1], sluice_now_ns());
	cpl_turn(f->l, false);
	assert_int_equal(TX.n, 5);
	assert_int_equal(TX.order[4], 1);
}

static uint32_t sleeps, resets;

static void on_before_sleep(void *arg)
{
	(void)arg;
	sleeps++;
}

static void on_reset(void *arg)
{
	(void)arg;
	resets++;
}

static void test_hooks(void **state)
{
	struct fx *f = *state;
	char err[256];
	sleeps = resets = 0;
	assert_int_equal(cpl_before_sleep(f->l, on_before_sleep, NULL), 0);
	assert_int_equal(cpl_on_peer_reset(f->l, on_reset, NULL), 0);
	cpl_turn(f->l, false);
	cpl_turn(f->l, false);
	assert_int_equal(sleeps, 2);
	assert_int_equal(resets, 0);

	/* A new dataplane incarnation (its epoch changes). */
	chan_close(f->dp);
	f->dp = chan_open(f->shm, 2, RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	assert_non_null(f->dp);
	cpl_turn(f->l, false);
	assert_int_equal(resets, 1);
	assert_int_equal(cpl_peer_epoch(f->l), chan_peer_epoch(f->cp));
	cpl_turn(f->l, false);
	assert_int_equal(resets, 1);

	/* A dataplane that has just stamped its first heartbeat counts as
	 * attached at once, before the loop's next heartbeat check (an operator's
	 * command in its first tenth of a second is not refused). */
	assert_false(cpl_peer_alive(f->l));
	chan_heartbeat(f->dp, sluice_now_ns());
	assert_true(cpl_peer_alive(f->l));

	/* The heartbeat check sees a live dataplane. */
	uint64_t deadline = sluice_now_ns() + 5000000000ull;
	while (!cpl_peer_alive(f->l)) {
		assert_true(sluice_now_ns() < deadline);
		cpl_turn(f->l, true);
	}
	assert_true(chan_peer_alive(f->dp, sluice_now_ns(), CPL_PEER_TIMEOUT_NS));

	/* The hook tables are bounded. */
	int rc = 0;
	for (uint32_t i = 0; i < CPL_MAX_HOOKS && rc == 0; i++)
		rc = cpl_before_sleep(f->l, on_before_sleep, NULL);
	assert_int_equal(rc, -1);
}

static void test_stop(void **state)
{
	struct fx *f = *state;
	assert_false(cpl_stopping(f->l));
	cpl_stop(f->l);
	assert_true(cpl_stopping(f->l));
	assert_int_equal(cpl_run(f->l), 0);
	assert_true(cpl_epoch(f->l) != 0);
	assert_ptr_equal(cpl_region(f->l), f->cp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_record_handlers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hooks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
