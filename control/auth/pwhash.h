/*
 * Password hashing off the control loop: a few threads run Argon2id
 * (crypto_pwhash_str, _str_verify, _str_needs_rehash) and hand finished jobs
 * back to the loop through an eventfd the loop watches (cpl_add_fd).
 *
 * The pool has a fixed number of job slots (login_max_inflight): a submit
 * when every slot is taken fails with -EBUSY at once, so a login flood costs
 * a 503, never an unbounded queue or unbounded Argon2 memory.
 *
 * Submits, pwh_drain() and completion callbacks run on the loop thread; only
 * the job slots are shared with the hashing threads, under one mutex (the
 * pool is not on a per-worker or per-token path).
 * Passwords are copied into the slot and wiped as soon as the hash ran.
 */
#ifndef CONTROL_PWHASH_H
#define CONTROL_PWHASH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define PWH_PASSWORD_MAX 1024 /* longest accepted password, bytes */
#define PWH_MAX_SLOTS 64
#define PWH_MAX_THREADS 8

enum pwh_op { PWH_VERIFY = 0, PWH_HASH = 1 };
enum pwh_state { PWH_FREE = 0, PWH_QUEUED, PWH_RUNNING, PWH_DONE };

struct pwh_job;
/* Runs on the loop thread; the job (and its hash) is valid during the call only. */
typedef void (*pwh_done_fn)(void *arg, const struct pwh_job *j);

struct pwh_job {
	enum pwh_op op;
	enum pwh_state state;
	uint64_t seq; /* submit order: threads take the oldest queued job */
	char password[PWH_PASSWORD_MAX];
	size_t password_len;
	/* VERIFY: the stored hash in, and the fresh hash out when rehashed.
	 * HASH: the result. */
	char hash[STORE_PWHASH_MAX];
	bool check_rehash;
	int rc;        /* VERIFY: 0 match, -1 mismatch; HASH: 0, or -ENOMEM */
	bool rehashed; /* VERIFY matched and the hash was redone under the current parameters */
	pwh_done_fn done;
	void *arg;
};

struct pwh_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t threads[PWH_MAX_THREADS];
	uint32_t nthreads;
	struct pwh_job jobs[PWH_MAX_SLOTS];
	uint32_t nslots;
	uint32_t inflight; /* slots not FREE */
	uint64_t next_seq;
	unsigned long long opslimit;
	size_t memlimit;
	int efd;
	bool stop;
};

/* max_inflight slots (1..PWH_MAX_SLOTS), min(max_inflight, PWH_MAX_THREADS)
 * threads, Argon2id with opslimit and memlimit (bytes). Returns 0 or -errno. */
int pwh_init(struct pwh_pool *p, uint32_t max_inflight, unsigned long long opslimit, size_t memlimit);
/* Stops and joins the threads; jobs still queued are dropped (their callbacks
 * never run) and every slot is wiped. */
void pwh_free(struct pwh_pool *p);

/* The eventfd that becomes readable when jobs finished. */
static inline int pwh_fd(const struct pwh_pool *p)
{
	return p->efd;
}

/* Verifies password against hash; with check_rehash, a match whose hash uses
 * other parameters is rehashed. -EBUSY: every slot taken; -EINVAL: the
 * password or hash is too long. */
int pwh_submit_verify(struct pwh_pool *p, const char *hash, const char *password, size_t len,
		      bool check_rehash, pwh_done_fn done, void *arg);
/* Hashes password under the pool's parameters. Errors as for verify. */
int pwh_submit_hash(struct pwh_pool *p, const char *password, size_t len, pwh_done_fn done, void *arg);

/* Loop side: consumes the eventfd and runs the callbacks of finished jobs,
 * then frees their slots. Returns the number of callbacks run. */
uint32_t pwh_drain(struct pwh_pool *p);

#endif
