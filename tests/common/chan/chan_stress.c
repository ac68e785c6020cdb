/*
 * Two-process stress test of the channel over a real region file in
 * /dev/shm. The child is the dataplane: two worker threads each push
 * RECORDS_PER_WORKER records of 8..512 payload bytes into their d2c ring.
 * The parent is control: one thread drains both rings, checks order, length
 * and checksum of every record and the final counts, and sleeps on its
 * doorbell whenever both rings are empty, so the two processes do not burn
 * both cores spinning. Either side exits non-zero on any violation; both
 * give up after a deadline instead of hanging.
 *
 * Payload: u32 seq (per worker), u32 checksum of seq and the bytes after
 * the first 8, which come from a generator seeded by seq; the length is
 * also derived from seq, so a record of the wrong size is caught too.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice/chan.h"

#define WORKERS 2u
#define RECORDS_PER_WORKER 5000000u
#define RING (1u << 20)
#define DEADLINE_NS (90ull * 1000000000ull)
#define BATCH 32u

static char path[128];

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static inline uint32_t rec_len(uint32_t w, uint32_t seq)
{
	return 8u + (uint32_t)(mix64(((uint64_t)w << 32) | seq) % 505u);
}

/* Word-at-a-time FNV-style hash, with the tail bytes folded in one by one. */
static inline uint32_t rec_sum(uint32_t seq, const uint8_t *p, uint32_t len)
{
	uint64_t h = 0xcbf29ce484222325ull ^ seq;
	uint32_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		h = (h ^ v) * 0x100000001b3ull;
	}
	for (; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return (uint32_t)(h ^ (h >> 32));
}

static inline void rec_fill(uint32_t w, uint32_t seq, uint8_t *p, uint32_t len)
{
	uint64_t s = mix64(((uint64_t)seq << 8) ^ w ^ 0x5bd1e995u);
	for (uint32_t i = 0; i < len; i += 8) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		uint32_t n = len - i < 8 ? len - i : 8;
		memcpy(p + i, &s, n);
	}
}

struct worker_arg {
	struct chan_prod *p;
	uint32_t w;
	int rc;
};

/* Publishes every BATCH records and whenever the ring is full; on a full
 * ring it naps briefly, because control is draining and will make room. */
static void *producer(void *arg)
{
	struct worker_arg *a = arg;
	uint64_t deadline = sluice_now_ns() + DEADLINE_NS;
	struct timespec nap = { 0, 20000 };
	for (uint32_t seq = 0; seq < RECORDS_PER_WORKER;) {
		uint32_t len = rec_len(a->w, seq);
		uint8_t *d = chan_reserve(a->p, 1, len);
		if (!d) {
			chan_publish(a->p);
			if (sluice_now_ns() > deadline) {
				fprintf(stderr, "producer %u: stuck at seq %u\n", a->w, seq);
				a->rc = 1;
				return NULL;
			}
			nanosleep(&nap, NULL);
			continue;
		}
		rec_fill(a->w, seq, d + 8, len - 8);
		uint32_t sum = rec_sum(seq, d + 8, len - 8);
		memcpy(d, &seq, 4);
		memcpy(d + 4, &sum, 4);
		chan_commit(a->p, len);
		seq++;
		if (seq % BATCH == 0)
			chan_publish(a->p);
	}
	chan_publish(a->p);
	a->rc = 0;
	return NULL;
}

static int run_dataplane(void)
{
	char err[512];
	struct chan_region *r = chan_open(path, WORKERS, RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	if (!r) {
		fprintf(stderr, "dataplane: %s\n", err);
		return 1;
	}
	/* Like sluice-dataplane: nothing is sent to a control that is not
	 * attached and alive (its attach discards what was sent before). */
	uint64_t until = sluice_now_ns() + DEADLINE_NS;
	while (!chan_peer_alive(r, sluice_now_ns(), DEADLINE_NS)) {
		if (sluice_now_ns() > until) {
			fprintf(stderr, "dataplane: control never attached\n");
			chan_close(r);
			return 1;
		}
		usleep(1000);
	}
	struct worker_arg a[WORKERS];
	pthread_t th[WORKERS];
	int rc = 0;
	for (uint32_t w = 0; w < WORKERS; w++) {
		a[w] = (struct worker_arg){ .p = chan_producer(r, w), .w = w, .rc = 1 };
		if (pthread_create(&th[w], NULL, producer, &a[w]) != 0) {
			fprintf(stderr, "dataplane: pthread_create failed\n");
			_exit(1);
		}
	}
	for (uint32_t w = 0; w < WORKERS; w++) {
		if (pthread_join(th[w], NULL) != 0)
			rc = 1;
		rc |= a[w].rc;
	}
	chan_close(r);
	return rc;
}

struct verify {
	uint32_t next[WORKERS];
	uint64_t sleeps;
};

/* Drains one ring; returns records taken, or -1 on the first bad record. */
static long drain(struct chan_cons *c, uint32_t w, struct verify *v)
{
	long n = 0;
	const struct chan_rec *rec;
	while ((rec = chan_peek(c))) {
		uint32_t seq, sum;
		if (rec->len < 8) {
			fprintf(stderr, "worker %u: record of %u bytes\n", w, rec->len);
			return -1;
		}
		memcpy(&seq, rec->payload, 4);
		memcpy(&sum, rec->payload + 4, 4);
		if (rec->type != 1 || seq != v->next[w] || rec->len != rec_len(w, seq) ||
		    sum != rec_sum(seq, rec->payload + 8, rec->len - 8)) {
			fprintf(stderr, "worker %u: bad record: type %u seq %u (want %u) len %u (want %u)\n",
				w, rec->type, seq, v->next[w], rec->len, rec_len(w, v->next[w]));
			return -1;
		}
		v->next[w]++;
		chan_consume(c);
		if (++n % 256 == 0)
			chan_release(c);
	}
	chan_release(c);
	return n;
}

static int run_control(pid_t child)
{
	char err[512];
	struct chan_region *r = chan_open(path, WORKERS, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (!r) {
		fprintf(stderr, "control: %s\n", err);
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		return 1;
	}
	/* Like sluice-control: alive (and so fed by the dataplane) only once it
	 * serves; records sent before its attach would have been discarded. */
	chan_heartbeat(r, sluice_now_ns());
	struct verify v = { { 0 }, 0 };
	uint64_t deadline = sluice_now_ns() + DEADLINE_NS;
	int fd = chan_doorbell_fd(r, 0);
	int rc = 1;
	for (;;) {
		long got = 0;
		bool done = true;
		for (uint32_t w = 0; w < WORKERS; w++) {
			long n = drain(chan_consumer(r, w), w, &v);
			if (n < 0)
				goto out;
			got += n;
			if (v.next[w] > RECORDS_PER_WORKER) {
				fprintf(stderr, "worker %u: more than %u records\n", w, RECORDS_PER_WORKER);
				goto out;
			}
			done = done && v.next[w] == RECORDS_PER_WORKER;
		}
		if (done)
			break;
		if (sluice_now_ns() > deadline) {
			fprintf(stderr, "control: deadline passed at %u/%u records\n", v.next[0], v.next[1]);
			goto out;
		}
		if (got)
			continue;
		/* Both rings must agree to sleep; otherwise undo the flags set. */
		uint32_t w = 0;
		while (w < WORKERS && chan_prepare_sleep(chan_consumer(r, w)))
			w++;
		if (w < WORKERS) {
			while (w-- > 0)
				chan_cancel_sleep(chan_consumer(r, w));
			continue;
		}
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int n = poll(&pfd, 1, 1000);
		if (n < 0 && errno != EINTR) {
			perror("poll");
			goto out;
		}
		chan_doorbell_drain(r, 0);
		v.sleeps++;
	}
	/* Nothing may follow the last record. */
	for (uint32_t w = 0; w < WORKERS; w++) {
		if (chan_peek(chan_consumer(r, w))) {
			fprintf(stderr, "worker %u: extra records\n", w);
			goto out;
		}
	}
	rc = 0;
out:
	if (rc)
		kill(child, SIGKILL);
	int st = 0;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "control: dataplane process failed (status 0x%x)\n", st);
		rc = 1;
	}
	if (rc == 0)
		printf("chan_stress: %u workers x %u records verified, control slept %llu times\n",
		       WORKERS, RECORDS_PER_WORKER, (unsigned long long)v.sleeps);
	chan_close(r);
	return rc;
}

int main(void)
{
	snprintf(path, sizeof(path), "/dev/shm/sluice-chan-stress-%d", (int)getpid());
	chan_unlink(path, WORKERS);
	fflush(NULL);
	/* Both processes open at once: one creates, the other waits for it. */
	pid_t child = fork();
	if (child < 0) {
		perror("fork");
		return 1;
	}
	if (child == 0)
		_exit(run_dataplane());
	int rc = run_control(child);
	if (chan_unlink(path, WORKERS) != 0) {
		perror("chan_unlink");
		rc = 1;
	}
	return rc;
}
