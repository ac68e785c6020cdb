/*
 * The worker loop (see worker.h for the turn). Workers live in a static array
 * filled before threads start; after that only the owning thread writes a
 * worker, and other threads read nothing but its counters (through the
 * host's peer()).
 */
#include "worker/worker.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/chan.h"
#include "sluice/chan_proto.h"
#include "sluice/conf.h"
#include "sluice/log.h"
#include "tls/tls.h"
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
/* How long a control that withdrew (clean stop) may take to send its last
 * records and close before its streams are ended for it. */
#define WITHDRAW_MAX_NS (5000ull * MS_NS)

struct worker {
	struct host host;    /* what the app sees; host.now is the turn's time */
	uint32_t peer_epoch; /* control's epoch when last seen alive */
	uint64_t serving_ns; /* when control was last seen serving */
	bool poll_mode;      /* dpdk: never sleep, the doorbell is not used */
	bool dirty;          /* the app ran after this turn's flush (heartbeat, drain, reload) */
	int bell_fd;
	uint64_t next_hb_ns;
	struct chan_region *chan;
	struct chan_prod *d2c;
	struct chan_cons *c2d;
	const struct host_app_ops *ops;
	void *app;       /* owned: destroyed by worker_run's exit or teardown */
	void *app_stats; /* owned: ops->stats_size bytes, freed at teardown */
	struct tw_wheel wheel;
	/* A reload: main stores conf_next, the worker the one it runs with. */
	_Atomic(const struct sluice_conf *) conf_next;
	_Atomic(const struct sluice_conf *) conf_seen;
	/* Read by other workers for /metrics: kept off the lines above. */
	alignas(SLUICE_CACHELINE) struct host_stats stats;
	/* The control epoch this worker forwards requests to, 0 while it
	 * forwards none: what other workers read for /readyz (serving()). */
	_Atomic uint32_t serving_epoch;
	/* The drain phase this worker's app was told, and its connections
	 * still open once it drains (UINT64_MAX before: workers_drained()). */
	uint32_t drain_seen;
	_Atomic uint64_t open_pub;
};

static struct worker *workers[CHAN_MAX_WORKERS];
static uint32_t nworkers;
static atomic_bool stop_flag;
static atomic_bool reload_flag;
/* 0, then DRAIN_SOFT (workers_drain(false)), then DRAIN_NOW. */
enum { DRAIN_SOFT = 1, DRAIN_NOW = 2 };
static _Atomic uint32_t drain_phase;

static struct worker *worker_of(struct host *h)
{
	return sluice_container_of(h, struct worker, host);
}

/* ---- the host's services -------------------------------------------------- */

static void *worker_rec_reserve(struct host *h, uint16_t type, uint32_t len)
{
	return chan_reserve(worker_of(h)->d2c, type, len);
}

static void worker_rec_commit(struct host *h, uint32_t len)
{
	struct worker *w = worker_of(h);

	chan_commit(w->d2c, len);
	DP_STAT_ADD(&w->stats, chan_records_out, 1);
}

static uint32_t worker_control_epoch(const struct host *h)
{
	return chan_peer_epoch(sluice_container_of(h, const struct worker, host)->chan);
}

static const struct host *worker_peer(const struct host *h, uint32_t i)
{
	(void)h;
	return i < nworkers ? &workers[i]->host : NULL;
}

uint32_t worker_count(void)
{
	return nworkers;
}

/* Control serves requests: a fresh heartbeat, and its process attached (a
 * crash drops its lock at once, long before its last heartbeat goes stale). */
static bool control_serving(struct worker *w, uint64_t now)
{
	return chan_peer_alive(w->chan, now, PEER_TIMEOUT_NS) && chan_peer_attached(w->chan);
}

/*
 * /readyz: 200 exactly when a request sent now would be served. The live
 * check comes first, so control withdrawing turns it 503 at once, a grace
 * (CPL_WITHDRAW_NS) before any request goes unanswered; then
 * every worker must already forward to this incarnation, since a request
 * goes to whichever worker accepted its connection and each one notices a
 * (re)attach only at its next check, up to HEARTBEAT_NS later.
 */
static bool worker_serving(struct host *h)
{
	struct worker *w = worker_of(h);

	if (!control_serving(w, sluice_now_ns()))
		return false;
	uint32_t epoch = chan_peer_epoch(w->chan);
	for (uint32_t i = 0; i < nworkers; i++)
		if (atomic_load_explicit(&workers[i]->serving_epoch, memory_order_acquire) != epoch)
			return false;
	return true;
}

/* ---- the loop ------------------------------------------------------------ */

static uint32_t drain_c2d(struct worker *w);

/*
 * Stamps our heartbeat and tells the app when control came, went, or came
 * back as a new incarnation (new epoch) without a gap seen. A control that
 * withdrew (clean stop: still attached, heartbeat CHAN_HB_WITHDRAWN) is not
 * gone yet: /readyz already says 503 (worker_serving), but requests are
 * still forwarded and answered for its grace (CPL_WITHDRAW_NS), and it ends
 * its answers with records (usage, done) before it closes. Before control
 * counts as gone, what it published last is read.
 */
static void check_control(struct worker *w)
{
	uint64_t now = w->host.now;

	chan_heartbeat(w->chan, now);
	bool serving = control_serving(w, now);
	if (serving)
		w->serving_ns = now;
	bool present = serving || (w->host.attached && chan_peer_withdrawn(w->chan) &&
				   chan_peer_attached(w->chan) && now - w->serving_ns < WITHDRAW_MAX_NS);
	uint32_t epoch = serving ? chan_peer_epoch(w->chan) : w->peer_epoch;
	if (!present && w->host.attached) {
		/* Bounded: a ring holds at most this many turns' worth. */
		for (uint32_t i = 0; i < 64 && drain_c2d(w) == DRAIN_MAX; i++)
			;
	}
	if (present != w->host.attached || epoch != w->peer_epoch) {
		w->host.attached = present;
		w->peer_epoch = epoch;
		w->ops->control_changed(w->app, present);
	}
	/* Published after control_changed(): the streams of a previous
	 * incarnation are ended before /readyz may count this worker. */
	atomic_store_explicit(&w->serving_epoch, serving ? epoch : 0, memory_order_release);
	w->next_hb_ns = now + HEARTBEAT_NS;
}

static uint32_t drain_c2d(struct worker *w)
{
	uint32_t n = 0;
	const struct chan_rec *r;
	while (n < DRAIN_MAX && (r = chan_peek(w->c2d)) != NULL) {
		if (likely(chan_rec_valid(r->type, r->payload, r->len))) {
			DP_STAT_ADD(&w->stats, chan_records_in, 1);
			w->ops->on_record(w->app, r->type, r->payload, r->len);
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
	uint64_t now = w->host.now;
	uint64_t deadline = tw_next_ns(&w->wheel);
	if (w->next_hb_ns < deadline)
		deadline = w->next_hb_ns;
	if (deadline <= now)
		return 0;
	uint64_t ms = (deadline - now + MS_NS - 1) / MS_NS;
	return ms > HEARTBEAT_NS / MS_NS ? (int)(HEARTBEAT_NS / MS_NS) : (int)ms;
}

/* Closes the worker's connections (the app hears on_close for each) and
 * destroys its app; its d2c records written meanwhile are published. */
static void worker_shutdown(struct worker *w)
{
	if (w->host.tp) {
		w->host.tp->ops->destroy(w->host.tp);
		w->host.tp = NULL;
	}
	if (w->app) {
		w->ops->destroy(w->app);
		w->app = NULL;
	}
	if (w->d2c)
		chan_publish(w->d2c);
}

/* Tells the app of a new drain phase, then publishes what is still open;
 * true when the app was told. */
static bool drain_turn(struct worker *w)
{
	uint32_t phase = atomic_load_explicit(&drain_phase, memory_order_acquire);
	bool told = phase != w->drain_seen;
	if (told) {
		w->drain_seen = phase;
		w->ops->drain(w->app, phase == DRAIN_NOW);
	}
	atomic_store_explicit(&w->open_pub, w->ops->open_conns(w->app), memory_order_release);
	return told;
}

int worker_run(uint32_t i)
{
	struct worker *w = workers[i];
	struct host *h = &w->host;
	int rc = 0;
	bool more = false;

	h->now = sluice_now_ns();
	check_control(w);
	while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
		h->now = sluice_now_ns();
		h->now_stale = false;
		const struct sluice_conf *nc = atomic_load_explicit(&w->conf_next, memory_order_acquire);
		if (unlikely(nc != h->conf)) {
			h->conf = nc;
			if (w->ops->conf_changed)
				w->ops->conf_changed(w->app);
			atomic_store_explicit(&w->conf_seen, nc, memory_order_release);
			w->dirty = true;
		}
		int timeout = more || w->poll_mode ? 0 : idle_timeout_ms(w);
		bool slept = false;
		if (timeout > 0) {
			if (chan_prepare_sleep(w->c2d))
				slept = true;
			else
				timeout = 0;
		}
		h->now_stale = slept;
		int n = h->tp->ops->poll(h->tp, timeout, w->bell_fd);
		if (slept) {
			chan_cancel_sleep(w->c2d);
			chan_doorbell_drain(w->chan, h->id);
		}
		if (unlikely(n < 0)) {
			LOG_ERROR("worker %u: transport poll failed, stopping", h->id);
			rc = -1;
			workers_stop();
			break;
		}
		uint64_t now = host_now(h);

		uint32_t drained = drain_c2d(w);
		uint32_t fired = tw_run(&w->wheel, now);
		bool busy = drained >= BUSY_RECORDS || sluice_now_ns() - now > BUSY_TURN_NS;
		/* A spinning turn in which nothing reached the app (no event,
		 * record or timer, no batch held, nothing run after the last
		 * flush) leaves end_of_turn and flush nothing to do: skipped, an
		 * idle poll-mode turn costs the poll and no more. */
		if (!w->poll_mode || n > 0 || drained > 0 || fired > 0 || h->holding || w->dirty) {
			w->ops->end_of_turn(w->app, busy);
			h->tp->ops->flush(h->tp);
		}
		w->dirty = false;
		chan_publish(w->d2c);

		DP_STAT_ADD(&w->stats, loop_turns, 1);
		if (busy)
			DP_STAT_ADD(&w->stats, busy_turns, 1);
		if (now >= w->next_hb_ns) {
			check_control(w);
			w->dirty = true;
		}
		if (unlikely(atomic_load_explicit(&drain_phase, memory_order_relaxed) != 0) &&
		    drain_turn(w))
			w->dirty = true;
		more = drained >= DRAIN_MAX || chan_peek(w->c2d) != NULL;
	}
	worker_shutdown(w);
	return rc;
}

void workers_set_conf(const struct sluice_conf *c)
{
	for (uint32_t i = 0; i < nworkers; i++)
		atomic_store_explicit(&workers[i]->conf_next, c, memory_order_release);
}

bool workers_conf_settled(const struct sluice_conf *c)
{
	for (uint32_t i = 0; i < nworkers; i++)
		if (atomic_load_explicit(&workers[i]->conf_seen, memory_order_acquire) != c)
			return false;
	return true;
}

/* host.request_reload: process-wide, whichever worker asks. */
static void worker_request_reload(struct host *h)
{
	(void)h;
	atomic_store(&reload_flag, true);
}

bool workers_take_reload(void)
{
	return atomic_exchange(&reload_flag, false);
}

void workers_stop(void)
{
	atomic_store(&stop_flag, true);
}

bool workers_stopping(void)
{
	return atomic_load(&stop_flag);
}

void workers_drain(bool now)
{
	atomic_store(&drain_phase, now ? DRAIN_NOW : DRAIN_SOFT);
}

bool workers_drained(void)
{
	for (uint32_t i = 0; i < nworkers; i++)
		if (atomic_load_explicit(&workers[i]->open_pub, memory_order_acquire) != 0)
			return false;
	return true;
}

/* ---- setup --------------------------------------------------------------- */

static size_t cacheline_round(size_t n)
{
	return (n + SLUICE_CACHELINE - 1) & ~(size_t)(SLUICE_CACHELINE - 1);
}

/* A worker with its host filled in, before its app and transport exist. */
static struct worker *worker_new(uint32_t i, uint32_t epoch, const struct sluice_conf *conf,
				 struct chan_region *chan, const struct host_app_ops *ops)
{
	size_t size = cacheline_round(sizeof(struct worker));
	size_t stats_size = cacheline_round(ops->stats_size);
	struct worker *w = aligned_alloc(SLUICE_CACHELINE, size);

	if (!w)
		return NULL;
	memset(w, 0, size);
	if (stats_size) {
		w->app_stats = aligned_alloc(SLUICE_CACHELINE, stats_size);
		if (!w->app_stats) {
			free(w);
			return NULL;
		}
		memset(w->app_stats, 0, stats_size);
	}
	w->ops = ops;
	w->chan = chan;
	w->d2c = chan_producer(chan, i);
	w->c2d = chan_consumer(chan, i);
	w->bell_fd = chan_doorbell_fd(chan, i);
	atomic_init(&w->conf_next, conf);
	atomic_init(&w->conf_seen, conf);
	w->host = (struct host){
		.id = i,
		.epoch = epoch,
		.rec_max = w->d2c->max_payload,
		.conf = conf,
		.wheel = &w->wheel,
		.stats = &w->stats,
		.app_stats = w->app_stats,
		.now = sluice_now_ns(),
		.rec_reserve = worker_rec_reserve,
		.rec_commit = worker_rec_commit,
		.request_reload = worker_request_reload,
		.control_epoch = worker_control_epoch,
		.peer = worker_peer,
		.serving = worker_serving,
	};
	atomic_init(&w->open_pub, UINT64_MAX);
	tw_wheel_init(&w->wheel, w->host.now);
	return w;
}

/* Worker w's transport: kernel or dpdk, with the redirect listener, under
 * the TLS layer when `tls` is given; port 0 becomes the picked port. */
static struct tp *transport_new(struct worker *w, const struct sluice_conf *conf,
				struct tls_shared *tls, uint16_t *port, char *why, size_t whylen)
{
	const struct tp_upcalls *up = w->ops->upcalls;
	void *upa = w->app;
	struct tls *tl = NULL;
	struct tp *tp = NULL;

	if (tls) {
		tl = tls_create(tls, w->host.id, up, upa, why, whylen);
		if (!tl)
			return NULL;
		up = &tls_inner_upcalls;
		upa = tl;
	}
	if (conf->transport == CONF_TRANSPORT_DPDK) {
#ifdef SLUICE_HAVE_DPDK
		tp = tp_dpdk_create(w->host.id, &w->wheel, up, upa, why, whylen);
		w->poll_mode = true;
#else
		snprintf(why, whylen, "transport = dpdk: built without DPDK");
#endif
	} else {
		tp = tp_kernel_listen(conf->listen_addr, *port, up, upa, why, whylen);
		if (tp && tp_kernel_set_send(tp, conf->kernel_send, why, whylen) != 0) {
			tp->ops->destroy(tp);
			tp = NULL;
		}
		if (tp && *port == 0)
			*port = tp_kernel_port(tp);
		if (tp && conf->redirect_port &&
		    tp_kernel_listen_also(tp, conf->redirect_addr, conf->redirect_port, why, whylen) != 0) {
			tp->ops->destroy(tp);
			tp = NULL;
		}
	}
	if (!tp) {
		tls_discard(tl);
		return NULL;
	}
	return tl ? tls_start(tl, tp) : tp;
}

int workers_setup(const struct sluice_conf *conf, struct chan_region *chan,
		  const struct host_app_ops *app, struct tls_shared *tls, char *err, size_t errlen)
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

	for (uint32_t i = 0; i < n; i++) {
		struct worker *w = worker_new(i, epoch, conf, chan, app);
		if (!w) {
			snprintf(err, errlen, "worker %u: out of memory", i);
			goto fail;
		}
		/* Counted before create so the app already finds itself among its peers. */
		workers[i] = w;
		nworkers = i + 1;

		w->app = app->create(&w->host, why, sizeof(why));
		if (!w->app) {
			snprintf(err, errlen, "worker %u: %s", i, why);
			goto fail;
		}
		w->host.tp = transport_new(w, conf, tls, &port, why, sizeof(why));
		if (!w->host.tp) {
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
		free(workers[i]->app_stats);
		free(workers[i]);
		workers[i] = NULL;
	}
	nworkers = 0;
}
