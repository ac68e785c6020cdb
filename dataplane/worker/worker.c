/*
 * The worker loop (see worker.h for the turn). Workers live in a static array
 * filled before threads start; after that only the owning thread writes a
 * worker, and other threads read nothing but its counters.
 */
#include "worker/worker.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "sluice/chan.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "sluice/log.h"
#include "transport/tp_kernel.h"
#ifdef SLUICE_HAVE_DPDK
#include "transport/tp_dpdk.h"
#endif
#include "worker/timer_wheel.h"

#define MS_NS 1000000ull
/* Records taken from the c2d ring per turn, so I/O is never starved. */
#define DRAIN_MAX 256u
/* A turn counts as busy past this many records or this much time. */
#define BUSY_RECORDS 64u
#define BUSY_TURN_NS 200000ull
/* Heartbeat and attach check period; the longest the loop ever blocks. */
#define HEARTBEAT_NS (100ull * MS_NS)
#define PEER_TIMEOUT_NS (1000ull * MS_NS)

struct worker {
	uint32_t id;
	uint32_t epoch;      /* this dataplane's attach epoch */
	uint32_t peer_epoch; /* control's epoch when last seen alive */
	bool attached;
	bool now_stale;      /* the loop blocked since `now` was taken */
	bool poll_mode;      /* dpdk: never sleep, the doorbell is not used */
	int bell_fd;
	uint64_t now;
	uint64_t next_hb_ns;
	const struct sluice_conf *conf;
	struct chan_region *chan;
	struct chan_prod *d2c;
	struct chan_cons *c2d;
	struct tp *tp;   /* owned: destroyed by worker_run's exit or teardown */
	struct app *app; /* owned, likewise */
	struct tw_wheel wheel;
	/* Read by other workers for /metrics: kept off the lines above. */
	alignas(SLUICE_CACHELINE) struct dp_stats stats;
};

static struct worker *workers[CHAN_MAX_WORKERS];
static uint32_t nworkers;
static atomic_bool stop_flag;

const uint32_t dp_delay_bounds_us[DP_DELAY_BUCKETS] = {
	10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000, 250000,
};

void dp_stats_delay(uint64_t *hist, uint64_t *sum_ns, uint64_t delay_ns)
{
	uint32_t i = 0;
	while (i < DP_DELAY_BUCKETS && delay_ns > (uint64_t)dp_delay_bounds_us[i] * 1000u)
		i++;
	__atomic_store_n(&hist[i], __atomic_load_n(&hist[i], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
	__atomic_store_n(sum_ns, __atomic_load_n(sum_ns, __ATOMIC_RELAXED) + delay_ns, __ATOMIC_RELAXED);
}

/* ---- services ------------------------------------------------------------ */

uint32_t worker_id(const struct worker *w)
{
	return w->id;
}

/*
 * The turn's time. When the loop blocked in the transport, upcalls made after
 * the wait would otherwise see the time from before it (up to 100 ms old)
 * and arm their timers early; the first call after a wait re-reads the clock.
 * The worker is never const to its own thread, so the cast is sound.
 */
uint64_t worker_now(const struct worker *w)
{
	if (unlikely(w->now_stale)) {
		struct worker *m = (struct worker *)(uintptr_t)w;
		m->now = sluice_now_ns();
		m->now_stale = false;
	}
	return w->now;
}

const struct sluice_conf *worker_conf(const struct worker *w)
{
	return w->conf;
}

struct dp_stats *worker_stats(struct worker *w)
{
	return &w->stats;
}

struct tp *worker_tp(struct worker *w)
{
	return w->tp;
}

/* Read live, not from the 100 ms check: a request sent right after a new
 * control attached must carry its epoch, or that control would drop it. */
uint32_t worker_control_epoch(const struct worker *w)
{
	return chan_peer_epoch(w->chan);
}

bool worker_control_attached(const struct worker *w)
{
	return w->attached;
}

uint32_t worker_epoch(const struct worker *w)
{
	return w->epoch;
}

void worker_timer_arm(struct worker *w, struct tw_timer *t, uint64_t deadline_ns)
{
	tw_arm(&w->wheel, t, deadline_ns);
}

void worker_timer_cancel(struct worker *w, struct tw_timer *t)
{
	tw_cancel(&w->wheel, t);
}

void *worker_rec_reserve(struct worker *w, uint16_t type, uint32_t len)
{
	return chan_reserve(w->d2c, type, len);
}

void worker_rec_commit(struct worker *w, uint32_t len)
{
	chan_commit(w->d2c, len);
	DP_STAT_ADD(&w->stats, chan_records_out, 1);
}

uint32_t worker_rec_max(const struct worker *w)
{
	return w->d2c->max_payload;
}

uint32_t worker_count(void)
{
	return nworkers;
}

const struct dp_stats *worker_stats_of(uint32_t i)
{
	return i < nworkers ? &workers[i]->stats : NULL;
}

/* ---- the loop ------------------------------------------------------------ */

/* Stamps our heartbeat and tells the app when control came, went, or came
 * back as a new incarnation (new epoch) without us noticing a gap. */
static void check_control(struct worker *w)
{
	chan_heartbeat(w->chan, w->now);
	bool alive = chan_peer_alive(w->chan, w->now, PEER_TIMEOUT_NS);
	uint32_t epoch = alive ? chan_peer_epoch(w->chan) : w->peer_epoch;
	if (alive != w->attached || epoch != w->peer_epoch) {
		w->attached = alive;
		w->peer_epoch = epoch;
		app_control_changed(w->app, alive);
	}
	w->next_hb_ns = w->now + HEARTBEAT_NS;
}

static uint32_t drain_c2d(struct worker *w)
{
	uint32_t n = 0;
	const struct chan_rec *r;
	while (n < DRAIN_MAX && (r = chan_peek(w->c2d)) != NULL) {
		if (likely(chan_rec_valid(r->type, r->payload, r->len))) {
			DP_STAT_ADD(&w->stats, chan_records_in, 1);
			app_on_record(w->app, r->type, r->payload, r->len);
		} else {
			DP_STAT_ADD(&w->stats, chan_bad_records, 1);
		}
		chan_consume(w->c2d);
		n++;
	}
	if (n > 0)
		chan_release(w->c2d);
	return n;
}

/* How long the transport may block: until the next timer or heartbeat. */
static int idle_timeout_ms(const struct worker *w)
{
	uint64_t deadline = tw_next_ns(&w->wheel);
	if (w->next_hb_ns < deadline)
		deadline = w->next_hb_ns;
	if (deadline <= w->now)
		return 0;
	uint64_t ms = (deadline - w->now + MS_NS - 1) / MS_NS;
	return ms > HEARTBEAT_NS / MS_NS ? (int)(HEARTBEAT_NS / MS_NS) : (int)ms;
}

/* Closes the worker's connections (the app hears on_close for each) and
 * destroys its app; its d2c records written meanwhile are published. */
static void worker_shutdown(struct worker *w)
{
	if (w->tp) {
		w->tp->ops->destroy(w->tp);
		w->tp = NULL;
	}
	if (w->app) {
		app_destroy(w->app);
		w->app = NULL;
	}
	if (w->d2c)
		chan_publish(w->d2c);
}

int worker_run(uint32_t i)
{
	struct worker *w = workers[i];
	int rc = 0;
	bool more = false;

	w->now = sluice_now_ns();
	check_control(w);
	while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
		w->now = sluice_now_ns();
		w->now_stale = false;
		int timeout = more || w->poll_mode ? 0 : idle_timeout_ms(w);
		bool slept = false;
		if (timeout > 0) {
			if (chan_prepare_sleep(w->c2d))
				slept = true;
			else
				timeout = 0;
		}
		w->now_stale = slept;
		int n = w->tp->ops->poll(w->tp, timeout, w->bell_fd);
		if (slept) {
			chan_cancel_sleep(w->c2d);
			chan_doorbell_drain(w->chan, w->id);
		}
		if (unlikely(n < 0)) {
			LOG_ERROR("worker %u: transport poll failed, stopping", w->id);
			rc = -1;
			workers_stop();
			break;
		}
		uint64_t now = worker_now(w);

		uint32_t drained = drain_c2d(w);
		tw_run(&w->wheel, now);
		bool busy = drained >= BUSY_RECORDS || sluice_now_ns() - now > BUSY_TURN_NS;
		app_end_of_turn(w->app, busy);
		w->tp->ops->flush(w->tp);
		chan_publish(w->d2c);

		DP_STAT_ADD(&w->stats, loop_turns, 1);
		if (busy)
			DP_STAT_ADD(&w->stats, busy_turns, 1);
		if (now >= w->next_hb_ns)
			check_control(w);
		more = drained >= DRAIN_MAX || chan_peek(w->c2d) != NULL;
	}
	worker_shutdown(w);
	return rc;
}

void workers_stop(void)
{
	atomic_store(&stop_flag, true);
}

bool workers_stopping(void)
{
	return atomic_load(&stop_flag);
}

/* ---- setup --------------------------------------------------------------- */

int workers_setup(const struct sluice_conf *conf, struct chan_region *chan, char *err, size_t errlen)
{
	char why[256];
	uint32_t n = conf->workers;

	if (n == 0 || n > CHAN_MAX_WORKERS || n > chan_nworkers(chan)) {
		snprintf(err, errlen, "workers = %u: must be 1..%u and match the channel (%u)", n,
			 CHAN_MAX_WORKERS, chan_nworkers(chan));
		return -1;
	}
	atomic_store(&stop_flag, false);
	uint32_t epoch = atomic_load(&chan_header(chan)->dp_epoch);
	uint16_t port = conf->listen_port;
	size_t size = (sizeof(struct worker) + SLUICE_CACHELINE - 1) & ~(size_t)(SLUICE_CACHELINE - 1);

	for (uint32_t i = 0; i < n; i++) {
		struct worker *w = aligned_alloc(SLUICE_CACHELINE, size);
		if (!w) {
			snprintf(err, errlen, "worker %u: out of memory", i);
			goto fail;
		}
		memset(w, 0, size);
		w->id = i;
		w->epoch = epoch;
		w->conf = conf;
		w->chan = chan;
		w->d2c = chan_producer(chan, i);
		w->c2d = chan_consumer(chan, i);
		w->bell_fd = chan_doorbell_fd(chan, i);
		w->now = sluice_now_ns();
		tw_wheel_init(&w->wheel, w->now);
		/* Counted before app_create so the app already sees itself in worker_count(). */
		workers[i] = w;
		nworkers = i + 1;

		w->app = app_create(w, why, sizeof(why));
		if (!w->app) {
			snprintf(err, errlen, "worker %u: %s", i, why);
			goto fail;
		}
		if (conf->transport == CONF_TRANSPORT_DPDK) {
#ifdef SLUICE_HAVE_DPDK
			w->tp = tp_dpdk_create(i, &w->wheel, app_upcalls(), w->app, why, sizeof(why));
			w->poll_mode = true;
#else
			snprintf(why, sizeof(why), "transport = dpdk: built without DPDK");
#endif
		} else {
			w->tp = tp_kernel_listen(conf->listen_addr, port, app_upcalls(), w->app, why,
						 sizeof(why));
			if (w->tp && port == 0)
				port = tp_kernel_port(w->tp);
		}
		if (!w->tp) {
			snprintf(err, errlen, "worker %u: %s", i, why);
			goto fail;
		}
	}
	return 0;
fail:
	workers_teardown();
	return -1;
}

void workers_teardown(void)
{
	for (uint32_t i = 0; i < nworkers; i++) {
		worker_shutdown(workers[i]);
		free(workers[i]);
		workers[i] = NULL;
	}
	nworkers = 0;
}
