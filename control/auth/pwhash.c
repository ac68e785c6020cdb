#include "auth/pwhash.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <sodium.h>

/* The hashing itself, outside the lock: the slot is RUNNING, so neither the
 * loop nor another thread touches it meanwhile. */
static void pwh_run(struct pwh_pool *p, struct pwh_job *j)
{
	/* crypto_pwhash_* want a NUL-free C string for the hash and take the
	 * password as bytes; the slot buffer is sized so neither overflows. */
	if (j->op == PWH_HASH) {
		j->rc = crypto_pwhash_str(j->hash, j->password, j->password_len, p->opslimit,
					  p->memlimit) == 0 ? 0 : -ENOMEM;
	} else {
		j->rc = crypto_pwhash_str_verify(j->hash, j->password, j->password_len) == 0 ? 0 : -1;
		if (j->rc == 0 && j->check_rehash &&
		    crypto_pwhash_str_needs_rehash(j->hash, p->opslimit, p->memlimit) != 0) {
			char fresh[STORE_PWHASH_MAX];
			if (crypto_pwhash_str(fresh, j->password, j->password_len, p->opslimit,
					      p->memlimit) == 0) {
				memcpy(j->hash, fresh, sizeof(fresh));
				j->rehashed = true;
			}
			sodium_memzero(fresh, sizeof(fresh));
		}
	}
	sodium_memzero(j->password, sizeof(j->password));
	j->password_len = 0;
}

/* The oldest queued job, or NULL. Called with the lock held. */
static struct pwh_job *pwh_take(struct pwh_pool *p)
{
	struct pwh_job *best = NULL;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pwh_job *j = &p->jobs[i];
		if (j->state == PWH_QUEUED && (!best || j->seq < best->seq))
			best = j;
	}
	return best;
}

static void *pwh_thread(void *arg)
{
	struct pwh_pool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct pwh_job *j;
		while (!p->stop && (j = pwh_take(p)) == NULL)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop)
			break;
		j->state = PWH_RUNNING;
		pthread_mutex_unlock(&p->mu);
		pwh_run(p, j);
		pthread_mutex_lock(&p->mu);
		j->state = PWH_DONE;
		uint64_t one = 1;
		/* The counter cannot overflow with at most PWH_MAX_SLOTS adds
		 * between two reads, so the write only fails on a closed fd. */
		if (write(p->efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			p->stop = true;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int pwh_init(struct pwh_pool *p, uint32_t max_inflight, unsigned long long opslimit, size_t memlimit)
{
	memset(p, 0, sizeof(*p));
	p->efd = -1;
	if (max_inflight == 0 || max_inflight > PWH_MAX_SLOTS)
		return -EINVAL;
	p->nslots = max_inflight;
	p->opslimit = opslimit;
	p->memlimit = memlimit;
	int rc = pthread_mutex_init(&p->mu, NULL);
	if (rc)
		return -rc;
	rc = pthread_cond_init(&p->cv, NULL);
	if (rc) {
		pthread_mutex_destroy(&p->mu);
		return -rc;
	}
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		rc = -errno;
		goto fail;
	}
	uint32_t want = max_inflight < PWH_MAX_THREADS ? max_inflight : PWH_MAX_THREADS;
	for (; p->nthreads < want; p->nthreads++) {
		rc = pthread_create(&p->threads[p->nthreads], NULL, pwh_thread, p);
		if (rc) {
			rc = -rc;
			goto fail;
		}
	}
	return 0;
fail:
	pwh_free(p);
	return rc;
}

void pwh_free(struct pwh_pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (uint32_t i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	p->nthreads = 0;
	if (p->efd >= 0)
		close(p->efd);
	p->efd = -1;
	sodium_memzero(p->jobs, sizeof(p->jobs));
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
}

/* Claims a free slot and fills the common part; the caller queues it. */
static struct pwh_job *pwh_claim(struct pwh_pool *p, const char *password, size_t len,
				 pwh_done_fn done, void *arg)
{
	if (len >= PWH_PASSWORD_MAX)
		return NULL;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pwh_job *j = &p->jobs[i];
		if (j->state != PWH_FREE)
			continue;
		memcpy(j->password, password, len);
		j->password_len = len;
		j->done = done;
		j->arg = arg;
		j->rc = 0;
		j->rehashed = false;
		j->check_rehash = false;
		j->hash[0] = 0;
		return j;
	}
	return NULL;
}

static void pwh_queue(struct pwh_pool *p, struct pwh_job *j)
{
	j->seq = p->next_seq++;
	j->state = PWH_QUEUED;
	p->inflight++;
	pthread_cond_signal(&p->cv);
}

int pwh_submit_verify(struct pwh_pool *p, const char *hash, const char *password, size_t len,
		      bool check_rehash, pwh_done_fn done, void *arg)
{
	size_t hl = strnlen(hash, STORE_PWHASH_MAX);
	if (len >= PWH_PASSWORD_MAX || hl == STORE_PWHASH_MAX)
		return -EINVAL;
	pthread_mutex_lock(&p->mu);
	struct pwh_job *j = pwh_claim(p, password, len, done, arg);
	if (j) {
		j->op = PWH_VERIFY;
		memcpy(j->hash, hash, hl + 1);
		j->check_rehash = check_rehash;
		pwh_queue(p, j);
	}
	pthread_mutex_unlock(&p->mu);
	return j ? 0 : -EBUSY;
}

int pwh_submit_hash(struct pwh_pool *p, const char *password, size_t len, pwh_done_fn done, void *arg)
{
	if (len >= PWH_PASSWORD_MAX)
		return -EINVAL;
	pthread_mutex_lock(&p->mu);
	struct pwh_job *j = pwh_claim(p, password, len, done, arg);
	if (j) {
		j->op = PWH_HASH;
		pwh_queue(p, j);
	}
	pthread_mutex_unlock(&p->mu);
	return j ? 0 : -EBUSY;
}

uint32_t pwh_drain(struct pwh_pool *p)
{
	uint64_t cnt;
	/* EAGAIN just means a previous drain already took the count; the slot
	 * states below are what matters. */
	if (read(p->efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		return 0;
	uint32_t ran = 0;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct pwh_job *j = &p->jobs[i];
		pthread_mutex_lock(&p->mu);
		bool done = j->state == PWH_DONE;
		pthread_mutex_unlock(&p->mu);
		if (!done)
			continue;
		/* DONE slots belong to the loop: no thread touches them. The
		 * callback may submit again; this slot stays taken until it
		 * returns, so it never sees its own job reused. */
		j->done(j->arg, j);
		ran++;
		sodium_memzero(j->hash, sizeof(j->hash));
		pthread_mutex_lock(&p->mu);
		j->state = PWH_FREE;
		p->inflight--;
		pthread_mutex_unlock(&p->mu);
	}
	return ran;
}
