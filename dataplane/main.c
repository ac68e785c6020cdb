/*
 * sluice-dataplane -c FILE [--check]
 *
 * Loads the configuration, attaches to the channel, sets up one worker per
 * configured worker and runs each on its own thread (pinned when asked).
 * With transport = dpdk, EAL and the port are set up first and the workers
 * run on EAL lcores (transport/tp_dpdk.h) instead of threads started here.
 * SIGINT/SIGTERM drain (drain_timeout_s), then stop the workers after their
 * current turn; they close what is left and the process exits 0. SIGHUP (or
 * control's ADMIN RELOAD) reloads the configuration's live keys and, with
 * tls = on, the certificates (dataplane_reload). Fatal problems at start
 * exit 1.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "app/app.h"
#include "sluice/chan.h"
#include "sluice/conf.h"
#include "sluice/log.h"
#include "tls/tls.h"
#include "worker/worker.h"
#ifdef SLUICE_HAVE_DPDK
#include "transport/tp_dpdk.h"
#endif

static void usage(FILE *f)
{
	fprintf(f, "usage: sluice-dataplane -c FILE [--check]\n"
		   "  -c FILE   configuration (sluice.conf)\n"
		   "  --check   validate the configuration and exit\n"
		   "  --help    this text\n"
		   "Serves HTTP, SSE and WebSocket clients until SIGTERM or SIGINT, which drain\n"
		   "first (drain_timeout_s; docs/man/sluice-dataplane.md).\n");
}

/* The kernel's struct sched_attr, its first version (SCHED_ATTR_SIZE_VER0):
 * <linux/sched/types.h> cannot be included beside <sched.h>. */
struct dp_sched_attr {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
};

/* conf.worker_slice_us, set before the workers start. */
static uint32_t worker_slice_us;

/*
 * Asks the scheduler for a short slice for the calling worker thread
 * (CONF_WORKER_SLICE_US says why). Read-modify-write, so a nice value the
 * operator gave the process stays. glibc 2.36 has no wrapper for either
 * call. A kernel that refuses is only a warning: the worker runs with the
 * default slice; one that predates EEVDF's custom slices ignores it.
 */
static void worker_sched_slice(uint32_t id)
{
	if (!worker_slice_us)
		return;
	struct dp_sched_attr a;
	memset(&a, 0, sizeof(a));
	if (syscall(SYS_sched_getattr, 0, &a, (unsigned)sizeof(a), 0u) != 0) {
		LOG_WARN("worker %u: sched_getattr: %s; the default slice stays", id, strerror(errno));
		return;
	}
	if (a.sched_policy != SCHED_OTHER && a.sched_policy != SCHED_BATCH)
		return; /* a real-time policy the operator chose: not ours to change */
	a.size = sizeof(a);
	a.sched_flags = 0;
	a.sched_runtime = (uint64_t)worker_slice_us * 1000u;
	if (syscall(SYS_sched_setattr, 0, &a, 0u) != 0)
		LOG_WARN("worker %u: cannot ask for a %u us slice: %s", id, worker_slice_us, strerror(errno));
}

static void *worker_thread(void *arg)
{
	uint32_t id = (uint32_t)(uintptr_t)arg;
	worker_sched_slice(id);
	return (void *)(intptr_t)worker_run(id);
}

#ifdef SLUICE_HAVE_DPDK
static int worker_lcore(void *arg)
{
	uint32_t id = (uint32_t)(uintptr_t)arg;
	worker_sched_slice(id);
	return worker_run(id);
}

/* Starts workers 0..n-1 on their EAL lcores; returns how many started. */
static uint32_t launch_lcores(uint32_t n)
{
	char err[256];
	for (uint32_t i = 0; i < n; i++) {
		if (tp_dpdk_launch(i, worker_lcore, (void *)(uintptr_t)i, err, sizeof(err)) != 0) {
			LOG_ERROR("%s", err);
			return i;
		}
	}
	return n;
}
#endif

/* Pins a started worker; a machine with fewer CPUs or a restricted cpuset
 * still runs, so a failure is only a warning. */
static void pin_worker(pthread_t th, uint32_t id)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 1)
		ncpu = 1;
	uint32_t cpu = id % (uint32_t)ncpu;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	int rc = pthread_setaffinity_np(th, sizeof(set), &set);
	if (rc != 0)
		LOG_WARN("worker %u: cannot pin to CPU %u: %s", id, cpu, strerror(rc));
}

/*
 * Reads the certificate and key files again; new handshakes use them, open
 * connections keep theirs. A file that does not load is refused and the old
 * certificates stay. The one entry point for SIGHUP and for the
 * configuration reload of docs/operations.md. Returns 0 or -1.
 */
static int dataplane_reload_certs(struct tls_shared *tls)
{
	char err[512];

	if (!tls) {
		LOG_INFO("reload: tls is off, no certificates to reload");
		return 0;
	}
	if (tls_shared_reload(tls, err, sizeof(err)) != 0) {
		LOG_ERROR("reload refused, the current certificates stay: %s", err);
		return -1;
	}
	LOG_INFO("reload: certificates loaded; new handshakes use them");
	return 0;
}

/* The configuration the workers run with, across reloads. */
struct dp_reload {
	const char *path;
	struct tls_shared *tls;
	const struct sluice_conf *cur;
	struct sluice_conf *owned;   /* cur when a reload made it (heap), else NULL */
	struct sluice_conf *retired; /* the one before; freed once no worker runs it */
};

struct dp_diff {
	char restart[1024];
	size_t rlen;
	unsigned changed;
};

static void dp_diff_key(void *arg, const char *section, const char *key, bool live)
{
	struct dp_diff *d = arg;
	d->changed++;
	LOG_INFO("reload: [%s]%s%s changed%s", section, key ? " " : "", key ? key : "",
		 live ? "" : " (needs a restart)");
	if (live || d->rlen >= sizeof(d->restart))
		return;
	int n = snprintf(d->restart + d->rlen, sizeof(d->restart) - d->rlen, "%s[%s]%s%s", d->rlen ? ", " : "",
			 section, key ? " " : "", key ? key : "");
	if (n > 0)
		d->rlen += (size_t)n;
}

/*
 * Reads the configuration file into a scratch copy, refuses it whole when
 * it does not load or changes a key that needs a restart, reloads the
 * certificates, then hands the copy to the workers (docs/configuration.md
 * "Reload"). `by` names who asked, for the audit line. Returns 0 or -1.
 */
static int dataplane_reload(struct dp_reload *r, const char *by)
{
	char err[512];
	struct dp_diff d = { .rlen = 0 };
	if (r->retired) {
		LOG_WARN("reload refused: the workers are still taking the previous one; try again");
		return -1;
	}
	struct sluice_conf *next = malloc(sizeof(*next));
	if (!next || conf_load(r->path, next, err, sizeof(err)) != 0) {
		LOG_ERROR("reload refused, nothing changed: %s", next ? err : "out of memory");
		free(next);
		return -1;
	}
	int restart = conf_diff(r->cur, next, dp_diff_key, &d);
	if (restart != 0) {
		LOG_ERROR("reload refused: %s %s a restart; nothing was changed",
			  restart < 0 ? "out of memory:" : d.restart, restart == 1 ? "needs" : "need");
		log_audit("config_reload", "result", "refused", "by", by, NULL);
		free(next);
		return -1;
	}
	if (dataplane_reload_certs(r->tls) != 0) {
		log_audit("config_reload", "result", "refused", "by", by, NULL);
		free(next);
		return -1;
	}
	if (next->log_level != r->cur->log_level)
		log_set_level((enum log_level)next->log_level);
	log_set_format((enum log_format)next->log_format);
	workers_set_conf(next);
	r->retired = r->owned;
	r->owned = next;
	r->cur = next;
	char n[16];
	snprintf(n, sizeof(n), "%u", d.changed);
	log_audit("config_reload", "result", "ok", "changed", n, "by", by, NULL);
	return 0;
}

/*
 * Waits on the main thread for SIGINT/SIGTERM (blocked in every thread, so
 * no handler runs in a worker) or for a worker that stopped on its own.
 * The first signal drains (workers_drain) until every connection ended or
 * drain_timeout_s passed; then the rest are ended at once and given a
 * second to flush. A second signal stops at once.
 * SIGHUP, or control's ADMIN RELOAD, reloads the configuration and the
 * certificates; the TLS layer's timed work (ticket key rotation, OCSP
 * refresh, freeing replaced snapshots) runs every tick, and so does freeing
 * a replaced configuration once no worker runs it.
 */
static void wait_for_stop(const sigset_t *set, struct dp_reload *r, uint32_t drain_timeout_s)
{
	const struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
	/* The drain's end (0 before the first signal), then one flush period
	 * for what the timeout's ending wrote. */
	uint64_t deadline = 0;
	bool ending = false;
	while (!workers_stopping()) {
		int sig = sigtimedwait(set, NULL, &tick);
		int wait_errno = errno; /* what follows may change errno */
		uint64_t now = sluice_now_ns();
		if (r->tls)
			tls_shared_tick(r->tls);
		if (r->retired && workers_conf_settled(r->cur)) {
			free(r->retired);
			r->retired = NULL;
		}
		if (workers_take_reload())
			(void)dataplane_reload(r, "control");
		if (sig == SIGINT || sig == SIGTERM) {
			if (deadline || drain_timeout_s == 0) {
				LOG_INFO("signal %d: stopping workers", sig);
				return;
			}
			LOG_INFO("signal %d: draining for up to %u s (again: stop at once)", sig, drain_timeout_s);
			workers_drain(false);
			deadline = now + (uint64_t)drain_timeout_s * 1000000000ull;
			continue;
		}
		if (deadline && workers_drained()) {
			LOG_INFO("drained: every connection ended, stopping workers");
			return;
		}
		if (deadline && now >= deadline) {
			if (ending) {
				LOG_INFO("drain: stopping workers");
				return;
			}
			LOG_INFO("drain timeout (%u s): ending every connection", drain_timeout_s);
			workers_drain(true);
			ending = true;
			deadline = now + 1000000000ull;
			continue;
		}
		if (sig == SIGHUP) {
			(void)dataplane_reload(r, "signal");
			continue;
		}
		if (sig < 0 && wait_errno != EAGAIN && wait_errno != EINTR) {
			LOG_ERROR("sigtimedwait: %s", strerror(wait_errno));
			return;
		}
	}
}

int main(int argc, char **argv)
{
	const char *conf_path = NULL;
	bool check_only = false;
	static struct sluice_conf conf;
	char err[512];
	struct chan_region *chan = NULL;
	struct tls_shared *tls = NULL;
	pthread_t threads[CHAN_MAX_WORKERS];
	uint32_t started = 0;
	int status = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			conf_path = argv[++i];
		} else if (strcmp(argv[i], "--check") == 0) {
			check_only = true;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 1;
		}
	}
	if (!conf_path) {
		usage(stderr);
		return 1;
	}

	log_init("sluice-dataplane", LOG_LVL_INFO);
	if (conf_load(conf_path, &conf, err, sizeof(err)) != 0) {
		LOG_ERROR("%s", err);
		return 1;
	}
	/* Again, now with the file's level (SLUICE_LOG still wins) and format. */
	log_init("sluice-dataplane", (enum log_level)conf.log_level);
	log_set_format((enum log_format)conf.log_format);
#ifndef SLUICE_HAVE_DPDK
	if (conf.transport == CONF_TRANSPORT_DPDK) {
		LOG_ERROR("%s: transport = dpdk: this sluice-dataplane was built without DPDK "
			  "(install libdpdk-dev and run meson setup again)", conf_path);
		return 1;
	}
#endif
	bool dpdk = conf.transport == CONF_TRANSPORT_DPDK;
	/* Certificates load before anything starts, also for --check. */
	if (conf.tls && !(tls = tls_shared_create(&conf, err, sizeof(err)))) {
		LOG_ERROR("%s: %s", conf_path, err);
		return 1;
	}
	struct dp_reload reload = { .path = conf_path, .tls = tls, .cur = &conf };
	if (check_only) {
		tls_shared_destroy(tls);
		printf("%s: configuration ok\n", conf_path);
		return 0;
	}

	/* Workers inherit this mask: signals are taken only by sigtimedwait below.
	 * SIGPIPE is ignored in case a write to a doorbell or socket races a close. */
	sigset_t stop_set;
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGINT);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGHUP);
	int rc = pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
	if (rc != 0) {
		LOG_ERROR("pthread_sigmask: %s", strerror(rc));
		goto out;
	}
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		LOG_ERROR("signal(SIGPIPE): %s", strerror(errno));
		goto out;
	}

#ifdef SLUICE_HAVE_DPDK
	/* After the signal mask: EAL's threads inherit it. */
	if (dpdk && tp_dpdk_init(&conf, argv[0], err, sizeof(err)) != 0) {
		LOG_ERROR("%s", err);
		tls_shared_destroy(tls);
		return 1;
	}
#endif
	chan = chan_open(conf.chan_path, conf.workers, conf.ring_bytes, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	if (!chan) {
		LOG_ERROR("channel %s: %s", conf.chan_path, err);
		goto out;
	}
	if (chan_open_note(chan))
		LOG_INFO("channel %s: %s", conf.chan_path, chan_open_note(chan));
	if (workers_setup(&conf, chan, &app_ops, tls, err, sizeof(err)) != 0) {
		LOG_ERROR("%s", err);
		goto out;
	}

	worker_slice_us = conf.worker_slice_us;
#ifdef SLUICE_HAVE_DPDK
	if (dpdk)
		started = launch_lcores(conf.workers);
#endif
	for (uint32_t i = 0; !dpdk && i < conf.workers; i++) {
		rc = pthread_create(&threads[i], NULL, worker_thread, (void *)(uintptr_t)i);
		if (rc != 0) {
			LOG_ERROR("worker %u: pthread_create: %s", i, strerror(rc));
			break;
		}
		started++;
		char name[16];
		snprintf(name, sizeof(name), "sluice-w%u", i);
		/* The name only helps top/perf; failing to set it changes nothing. */
		(void)pthread_setname_np(threads[i], name);
		if (conf.pin_workers)
			pin_worker(threads[i], i);
	}
	if (started == conf.workers) {
		if (dpdk)
			LOG_INFO("serving port %u%s on [port.0] %s with %u worker(s), channel %s",
				 (unsigned)conf.listen_port, tls ? " (tls)" : "", conf.ports[0].device,
				 conf.workers, conf.chan_path);
		else
			LOG_INFO("listening on %s:%u%s with %u worker(s), channel %s", conf.listen_addr,
				 (unsigned)conf.listen_port, tls ? " (tls)" : "", conf.workers,
				 conf.chan_path);
		if (conf.redirect_port)
			LOG_INFO("redirecting plain HTTP on port %u to https", (unsigned)conf.redirect_port);
		wait_for_stop(&stop_set, &reload, conf.drain_timeout_s);
	}

	workers_stop();
	bool failed = started != conf.workers;
	for (uint32_t i = 0; i < started; i++) {
#ifdef SLUICE_HAVE_DPDK
		if (dpdk) {
			if (tp_dpdk_wait(i) != 0)
				failed = true;
			continue;
		}
#endif
		void *ret = NULL;
		rc = pthread_join(threads[i], &ret);
		if (rc != 0) {
			LOG_ERROR("worker %u: pthread_join: %s", i, strerror(rc));
			failed = true;
		} else if ((intptr_t)ret != 0) {
			failed = true;
		}
	}
	workers_teardown();
	free(reload.owned);
	free(reload.retired);
	status = failed ? 1 : 0;
	LOG_INFO("stopped");
out:
	if (chan_close(chan))
		LOG_INFO("channel %s: removed (control had stopped too)", conf.chan_path);
	tls_shared_destroy(tls);
#ifdef SLUICE_HAVE_DPDK
	if (dpdk)
		tp_dpdk_fini();
#endif
	return status;
}
