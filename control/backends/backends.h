/*
 * The backend manager: owns the configured backends (and those operators
 * add at run time), the libcurl multi handle that drives every network
 * request inside the control loop (its sockets and its one timer are
 * registered with the loop: no thread per request, no blocking call), and
 * the routing of calls (backend.h) to backends:
 *
 *   - per model, over the backends that serve it: least outstanding
 *     requests per unit of weight first;
 *   - per backend at most max_concurrency calls at once, more wait in its
 *     bounded queue (max_queue); when every queue is full the call is
 *     refused (-EAGAIN: the caller answers 429 with Retry-After);
 *   - health checks (the models endpoint, every health_interval_ms) and a
 *     circuit breaker (breaker_failures consecutive failures open it for
 *     breaker_open_ms, then one call probes it);
 *   - failover to another backend while no token reached the caller;
 *     afterwards an upstream failure ends the call with an error;
 *   - connect, first-token and idle timeouts.
 *
 * Files: backends.c (the manager, routing, breaker, queues, calls),
 * bk_curl.c (libcurl glue), bk_openai.c and bk_ollama.c (the two network
 * clients), bk_health.c (health checks and model discovery), synthetic.c
 * (the synthetic backend on the same interface), bk_int.h between them.
 *
 * Single-threaded on the control loop.
 */
#ifndef CONTROL_BACKENDS_H
#define CONTROL_BACKENDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "loop/cp_loop.h"
#include "sluice/conf.h"

struct bk_mgr;
struct bk_call;

/* Time-to-first-token histogram bounds, seconds (Prometheus "le"). */
#define BK_TTFT_BUCKETS 10
extern const double bk_ttft_bounds[BK_TTFT_BUCKETS];

/*
 * The backends of conf (which must outlive the manager), driven on loop.
 * API keys are read from their environment variables now: an unset one
 * fails. Health checks start at once. Returns NULL with a message in err.
 */
struct bk_mgr *bk_create(const struct sluice_conf *conf, struct cp_loop *loop, char *err, size_t errlen);
/* Ends every call still running with `end` interrupted (their owners are
 * still alive: call this before freeing them), then frees everything. */
void bk_shutdown(struct bk_mgr *m);
void bk_destroy(struct bk_mgr *m);

/*
 * Starts answering req (copied) for the caller ev/arg. Returns the call, or
 * NULL with *rc: -ENOENT (no backend serves the model), -EAGAIN (every
 * backend of the model is at max_concurrency with a full queue), -ENOMEM.
 * A call that cannot be served for another reason (every backend down or
 * open) is returned and ends with an error through ev.
 */
struct bk_call *bk_call_start(struct bk_mgr *m, const struct bk_request *req, const struct bk_events *ev,
			      void *arg, int *rc);
/* Aborts the call now: the upstream request is closed before this returns
 * (or, from inside one of the call's callbacks, when it returns), and ev
 * hears nothing more. */
void bk_call_cancel(struct bk_call *c);

/* True when a call for model would not be refused with -EAGAIN now: some
 * backend of it that routing may use has a free slot or room in its queue
 * (a check before accepting work whose answer comes later). */
bool bk_has_room(const struct bk_mgr *m, const char *model);
/* True when some backend serves model now (listed, or found by a health check). */
bool bk_model_served(const struct bk_mgr *m, const char *model);
/* Calls fn once per model served, with the first backend serving it. */
void bk_models_foreach(const struct bk_mgr *m, void (*fn)(void *arg, const char *model, const char *backend),
		       void *arg);

/* ---- operators (sluicectl backends) ----------------------------------- */

enum bk_health { BK_HEALTH_UNKNOWN = 0, BK_HEALTH_UP, BK_HEALTH_DOWN };
enum bk_breaker { BK_BREAKER_CLOSED = 0, BK_BREAKER_OPEN, BK_BREAKER_HALF_OPEN };
enum bk_admin { BK_ADMIN_ENABLED = 0, BK_ADMIN_DRAINING, BK_ADMIN_REMOVING };

/* Counters of one model on one backend. */
struct bk_model_stats {
	char model[CONF_NAME_MAX];
	uint64_t requests;          /* calls dispatched to the backend */
	uint64_t errors;            /* of those, the ones that failed (failed over or ended in error) */
	uint64_t prompt_tokens, completion_tokens;
	uint64_t ttft_count;
	uint64_t ttft_buckets[BK_TTFT_BUCKETS]; /* cumulative, as Prometheus wants them */
	double ttft_sum_s;
	uint32_t inflight;
};

/* A backend as operators see it; pointers valid until the next manager call. */
struct bk_info {
	const struct conf_backend *cfg;
	enum bk_health health;
	enum bk_breaker breaker;
	enum bk_admin admin;
	bool runtime;               /* added with sluicectl (not in the configuration) */
	uint32_t inflight, queued;
	uint32_t consecutive_failures;
	uint64_t requests, errors, failovers, rejected;
	const char *last_error;     /* "" when none */
	const struct bk_model_stats *models;
	uint32_t nmodels;           /* models with counters (served or used) */
	const char *const *discovered; /* models the health check found */
	uint32_t ndiscovered;
};

void bk_foreach(const struct bk_mgr *m, void (*fn)(void *arg, const struct bk_info *b), void *arg);
/* Adds a backend now (not persisted: it is gone after a restart). -EEXIST,
 * -ENOSPC (16 backends), -EINVAL (a bad definition or a missing api key
 * variable, with the reason in err). */
int bk_backend_add(struct bk_mgr *m, const struct conf_backend *cfg, char *err, size_t errlen);
/* Draining: no new calls; running and queued ones finish. Enabled: routed
 * again, its breaker closed. Removed: out of routing now, gone once its last
 * call ended. -ENOENT for an unknown name. */
int bk_backend_drain(struct bk_mgr *m, const char *name);
int bk_backend_enable(struct bk_mgr *m, const char *name);
int bk_backend_remove(struct bk_mgr *m, const char *name);
/*
 * A configuration reload (bk_reload.c): the configured backends become
 * next's, prev being the configuration they came from. Backends only in
 * prev are removed (as by bk_backend_remove), new ones added, changed ones
 * take their new settings at once (calls already running keep the URL and
 * headers they started with). With apply false nothing changes: only the
 * checks run (an api_key_env that is unset, more than 16 backends, a
 * backend being removed or added by an operator under a configured name).
 * 0, or -1 with the reason in err (then nothing changed).
 */
int bk_reconfigure(struct bk_mgr *m, const struct sluice_conf *prev, const struct sluice_conf *next, bool apply,
		   char *err, size_t errlen);

struct bk_stats {
	uint64_t calls, rejected, failovers, upstream_errors, cancels;
	uint32_t inflight, queued;
};
void bk_totals(const struct bk_mgr *m, struct bk_stats *out);

#endif
