/*
 * Ring and region tests for the channel: both roles are opened in this
 * process over a real file in /dev/shm, so every test goes through the same
 * mapping, validation and doorbell code the two programs use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sluice/chan.h"
#include "sluice/chan_proto.h"
#include "sluice/common.h"

#define RING CHAN_RING_MIN

struct fix {
	char path[128];
	struct chan_region *dp;
	struct chan_region *cp;
	char err[512];
};

static unsigned path_counter;

static void fix_path(struct fix *f)
{
	snprintf(f->path, sizeof(f->path), "/dev/shm/sluice-test-chan-%d-%u", (int)getpid(), path_counter++);
	chan_unlink(f->path, CHAN_MAX_WORKERS);
}

static struct fix *fix_new(uint32_t nworkers, uint32_t ring)
{
	struct fix *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	fix_path(f);
	f->dp = chan_open(f->path, nworkers, ring, CHAN_ROLE_DATAPLANE, f->err, sizeof(f->err));
	if (!f->dp)
		fail_msg("dataplane open: %s", f->err);
	f->cp = chan_open(f->path, nworkers, ring, CHAN_ROLE_CONTROL, f->err, sizeof(f->err));
	if (!f->cp)
		fail_msg("control open: %s", f->err);
	return f;
}

static void fix_free(struct fix *f)
{
	chan_close(f->dp);
	chan_close(f->cp);
	assert_int_equal(chan_unlink(f->path, CHAN_MAX_WORKERS), 0);
	free(f);
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill(uint8_t *p, uint32_t len, uint64_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 31u + i * 7u + (i >> 8));
}

static int check_fill(const uint8_t *p, uint32_t len, uint64_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)(seed * 31u + i * 7u + (i >> 8)))
			return -1;
	return 0;
}

static bool send_one(struct chan_prod *p, uint16_t type, uint32_t len, uint64_t seed)
{
	uint8_t *d = chan_reserve(p, type, len);
	if (!d)
		return false;
	fill(d, len, seed);
	chan_commit(p, len);
	return true;
}

/* Records of every size class, far more bytes than the ring holds, so the
 * producer pads the ring end many times at many different offsets. */
static void test_wrap_sizes(void **state)
{
	(void)state;
	struct fix *f = fix_new(1, RING);
	struct chan_prod *p = chan_producer(f->dp, 0);
	struct chan_cons *c = chan_consumer(f->cp, 0);
	uint64_t rng = 42;
	uint64_t sent = 0, got = 0, pads = 0;
	uint32_t lens[4096];
	while (p->head < 40ull * RING) {
		uint32_t n = 0;
		for (;;) {
			uint64_t r = splitmix(&rng);
			uint32_t len = (r & 3) == 0 ? (uint32_t)(r >> 8) % (p->max_payload + 1)
						    : (uint32_t)(r >> 8) % 300;
			uint64_t gap = RING - (p->head & p->mask);
			uint64_t head0 = p->head;
			if (!send_one(p, (uint16_t)(1 + (sent + n) % 500), len, sent + n))
				break;
			if (chan_rec_size(len) > gap) {
				pads++;
				assert_int_equal(p->head - head0, gap + chan_rec_size(len));
			}
			lens[n++] = len;
			if (n == SLUICE_ARRAY_LEN(lens))
				break;
		}
		chan_publish(p);
		for (uint32_t i = 0; i < n; i++) {
			const struct chan_rec *rec = chan_peek(c);
			assert_non_null(rec);
			assert_int_equal(rec->len, lens[i]);
			assert_int_equal(rec->type, 1 + (got % 500));
			assert_int_equal(check_fill(rec->payload, rec->len, got), 0);
			chan_consume(c);
			got++;
		}
		assert_null(chan_peek(c));
		chan_release(c);
		sent += n;
	}
	assert_int_equal(sent, got);
	assert_true(pads > 10);
	fix_free(f);
}

static void test_full_recovers(void **state)
{
	(void)state;
	struct fix *f = fix_new(1, RING);
	struct chan_prod *p = chan_producer(f->dp, 0);
	struct chan_cons *c = chan_consumer(f->cp, 0);
	uint32_t n = 0;
	while (send_one(p, 7, 1000, n))
		n++;
	assert_int_equal(n, RING / chan_rec_size(1000));
	assert_int_equal(p->full_count, 1);
	assert_true(chan_free_bytes(p) < chan_rec_size(1000));
	assert_null(chan_reserve(p, 7, 1000));
	assert_int_equal(p->full_count, 2);
	chan_publish(p);

	/* Consumed but not released: the producer must still see a full ring. */
	for (int i = 0; i < 2; i++) {
		assert_non_null(chan_peek(c));
		chan_consume(c);
	}
	assert_null(chan_reserve(p, 7, 1000));
	/* Two records free: one is not enough, since the record no longer
	 * fits before the ring end and needs a PAD in front of it. */
	chan_release(c);
	assert_true(send_one(p, 7, 1000, n));
	chan_publish(p);
	for (uint32_t i = 2; i <= n; i++) {
		const struct chan_rec *rec = chan_peek(c);
		assert_non_null(rec);
		assert_int_equal(check_fill(rec->payload, rec->len, i), 0);
		chan_consume(c);
	}
	assert_null(chan_peek(c));
	chan_release(c);
	assert_int_equal(chan_free_bytes(p), RING);
	fix_free(f);
}

static void test_publish_batching(void **state)
{
	(void)state;
	struct fix *f = fix_new(1, RING);
	struct chan_prod *p = chan_producer(f->dp, 0);
	struct chan_cons *c = chan_consumer(f->cp, 0);
	for (uint32_t i = 0; i < 10; i++) {
		assert_true(send_one(p, 3, 40 + i, i));
		assert_null(chan_peek(c));
	}
	/* A reservation that is not committed is not published either. */
	assert_non_null(chan_reserve(p, 3, 100));
	chan_publish(p);
	for (uint32_t i = 0; i < 10; i++) {
		const struct chan_rec *rec = chan_peek(c);
		assert_non_null(rec);
		assert_int_equal(rec->len, 40 + i);
		assert_int_equal(check_fill(rec->payload, rec->len, i), 0);
		chan_consume(c);
	}
	assert_null(chan_peek(c));
	/* Commit may shrink the record to what was written. */
	uint8_t *d = chan_reserve(p, 4, 500);
	assert_non_null(d);
	fill(d, 12, 99);
	chan_commit(p, 12);
	assert_true(send_one(p, 5, 8, 100));
	chan_publish(p);
	const struct chan_rec *rec = chan_peek(c);
	assert_non_null(rec);
	assert_int_equal(rec->type, 4);
	assert_int_equal(rec->len, 12);
	assert_int_equal(check_fill(rec->payload, 12, 99), 0);
	chan_consume(c);
	rec = chan_peek(c);
	assert_non_null(rec);
	assert_int_equal(rec->type, 5);
	chan_consume(c);
	chan_release(c);
	fix_free(f);
}

/* ---- threads: torn records --------------------------------------------- */

#define TORN_RECORDS 1000000u

static uint32_t hash32(const uint8_t *p, uint32_t len, uint32_t seed)
{
	uint32_t h = 2166136261u ^ seed;
	for (uint32_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static uint32_t torn_len(uint32_t seq)
{
	uint64_t s = seq;
	return 8 + (uint32_t)(splitmix(&s) % 1017);
}

struct torn_arg {
	struct chan_prod *p;
};

static void *torn_producer(void *arg)
{
	struct chan_prod *p = ((struct torn_arg *)arg)->p;
	for (uint32_t seq = 0; seq < TORN_RECORDS;) {
		uint32_t len = torn_len(seq);
		uint8_t *d = chan_reserve(p, 9, len);
		if (!d) {
			chan_publish(p);
			sched_yield();
			continue;
		}
		memcpy(d, &seq, 4);
		uint64_t s = seq;
		for (uint32_t i = 8; i < len; i++)
			d[i] = (uint8_t)splitmix(&s);
		uint32_t h = hash32(d + 8, len - 8, seq);
		memcpy(d + 4, &h, 4);
		chan_commit(p, len);
		seq++;
		if ((seq & 15) == 0)
			chan_publish(p);
	}
	chan_publish(p);
	return NULL;
}

static void test_torn_threads(void **state)
{
	(void)state;
	struct fix *f = fix_new(1, RING);
	struct torn_arg a = { .p = chan_producer(f->dp, 0) };
	struct chan_cons *c = chan_consumer(f->cp, 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, torn_producer, &a), 0);
	uint32_t bad = 0;
	for (uint32_t want = 0; want < TORN_RECORDS;) {
		const struct chan_rec *rec = chan_peek(c);
		if (!rec) {
			chan_release(c);
			sched_yield();
			continue;
		}
		uint32_t seq, h;
		memcpy(&seq, rec->payload, 4);
		memcpy(&h, rec->payload + 4, 4);
		if (rec->type != 9 || seq != want || rec->len != torn_len(want) ||
		    h != hash32(rec->payload + 8, rec->len - 8, seq))
			bad++;
		chan_consume(c);
		want++;
	}
	chan_release(c);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(bad, 0);
	assert_null(chan_peek(c));
	fix_free(f);
}

/* ---- doorbells --------------------------------------------------------- */

#define HANDOFFS 100000u

struct bell_arg {
	struct chan_prod *p;
	struct chan_ring *ring;
	_Atomic uint32_t acked;
	_Atomic uint32_t empty_seen; /* consumer found the ring empty waiting for record N-1 */
	uint32_t n;
};

/*
 * Sends one record at a time, each only after the consumer took the one
 * before. The record is committed before waiting, so it can be published
 * the instant the chosen moment comes: a third go out once the previous one
 * was taken, a third once the consumer has set its sleeping flag (the
 * producer must ring), and a third right after the consumer found the ring
 * empty but before it set the flag (the consumer's re-check must catch
 * them), so every ordering of the race recurs often.
 */
static void *bell_producer(void *arg)
{
	struct bell_arg *a = arg;
	for (uint32_t i = 0; i < a->n; i++) {
		uint32_t *d = chan_reserve(a->p, 11, sizeof(uint32_t));
		if (!d)
			abort();
		*d = i;
		chan_commit(a->p, sizeof(uint32_t));
		if (i % 3 == 2) {
			while (atomic_load(&a->empty_seen) != i + 1)
				sched_yield();
		} else {
			while (atomic_load(&a->acked) != i)
				sched_yield();
			while (i % 3 == 1 && !atomic_load(&a->ring->sleeping))
				sched_yield();
		}
		chan_publish(a->p);
	}
	while (atomic_load(&a->acked) != a->n)
		sched_yield();
	return NULL;
}

/* Busy-waits a pseudo-random 0..~4 microseconds. */
static void jitter(uint64_t *rng)
{
	for (volatile uint32_t i = (uint32_t)(splitmix(rng) % 4096); i > 0; i--)
		;
}

/*
 * Consumes n records, sleeping on the doorbell whenever the ring is empty.
 * A poll that times out means a wake-up was lost. Every third record is
 * published while the consumer is held between finding the ring empty and
 * announcing sleep, the case the re-check in chan_prepare_sleep() exists
 * for; for the others a random delay there varies the interleaving.
 * `rechecks` counts how often the re-check kept the consumer awake.
 */
static void bell_consume(struct chan_region *r, uint32_t w, struct chan_cons *c, struct bell_arg *a,
			 uint32_t *sleeps, uint32_t *rechecks)
{
	int fd = chan_doorbell_fd(r, w);
	assert_true(fd >= 0);
	uint64_t rng = 7;
	for (uint32_t want = 0; want < a->n;) {
		const struct chan_rec *rec = chan_peek(c);
		if (rec) {
			uint32_t v;
			memcpy(&v, rec->payload, sizeof(v));
			assert_int_equal(v, want);
			chan_consume(c);
			chan_release(c);
			want++;
			atomic_store(&a->acked, want);
			continue;
		}
		if (want % 3 == 2) {
			/* Hold the consumer between "empty" and "sleeping" until the
			 * record is published: only the re-check can see it now. */
			atomic_store(&a->empty_seen, want + 1);
			while (atomic_load(&c->ring->head) == c->tail)
				sched_yield();
		} else {
			jitter(&rng);
		}
		if (!chan_prepare_sleep(c)) {
			(*rechecks)++;
			continue;
		}
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int n = poll(&pfd, 1, 5000);
		if (n == 0)
			fail_msg("lost wake-up at record %u", want);
		assert_int_equal(n, 1);
		chan_doorbell_drain(r, w);
		(*sleeps)++;
	}
}

static void test_doorbell_handoffs(void **state)
{
	(void)state;
	struct fix *f = fix_new(2, RING);
	/* dataplane worker 0 -> control, control waits on PATH.bell-c */
	struct bell_arg a = { .p = chan_producer(f->dp, 0), .n = HANDOFFS };
	a.ring = a.p->ring;
	pthread_t th;
	uint32_t sleeps = 0, rechecks = 0;
	assert_int_equal(pthread_create(&th, NULL, bell_producer, &a), 0);
	bell_consume(f->cp, 0, chan_consumer(f->cp, 0), &a, &sleeps, &rechecks);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(sleeps >= HANDOFFS / 3);
	assert_true(a.p->bell_count >= sleeps);
	assert_true(rechecks >= (HANDOFFS + 1) / 3);

	/* control -> dataplane worker 1, which waits on PATH.bell-1 */
	struct bell_arg b = { .p = chan_producer(f->cp, 1), .n = 2000 };
	b.ring = b.p->ring;
	sleeps = 0;
	assert_int_equal(pthread_create(&th, NULL, bell_producer, &b), 0);
	bell_consume(f->dp, 1, chan_consumer(f->dp, 1), &b, &sleeps, &rechecks);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(sleeps >= b.n / 3);
	fix_free(f);
}

static void test_prepare_sleep_sees_data(void **state)
{
	(void)state;
	struct fix *f = fix_new(1, RING);
	struct chan_prod *p = chan_producer(f->cp, 0);
	struct chan_cons *c = chan_consumer(f->dp, 0);
	assert_true(chan_prepare_sleep(c));
	assert_int_equal(atomic_load(&c->ring->sleeping), 1);
	chan_cancel_sleep(c);
	assert_int_equal(atomic_load(&c->ring->sleeping), 0);
	/* Published while the consumer was deciding: it must not sleep. */
	assert_true(send_one(p, 2, 16, 1));
	chan_publish(p);
	assert_false(chan_prepare_sleep(c));
	assert_int_equal(atomic_load(&c->ring->sleeping), 0);
	assert_int_equal(p->bell_count, 0);
	/* Flag set, then data: the producer rings exactly once. */
	assert_non_null(chan_peek(c));
	chan_consume(c);
	assert_true(chan_prepare_sleep(c));
	assert_true(send_one(p, 2, 16, 2));
	chan_publish(p);
	assert_int_equal(p->bell_count, 1);
	assert_int_equal(atomic_load(&c->ring->sleeping), 0);
	struct pollfd pfd = { .fd = chan_doorbell_fd(f->dp, 0), .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 0), 1);
	chan_doorbell_drain(f->dp, 0);
	assert_int_equal(poll(&pfd, 1, 0), 0);
	fix_free(f);
}

/* ---- limits and layout ------------------------------------------------- */

static void test_max_payload(void **state)
{
	(void)state;
	const uint32_t ring = 2 * RING;
	struct fix *f = fix_new(1, ring);
	struct chan_prod *p = chan_producer(f->dp, 0);
	struct chan_cons *c = chan_consumer(f->cp, 0);
	uint32_t max = ring / 4 - (uint32_t)sizeof(struct chan_rec);
	assert_int_equal(p->max_payload, max);
	assert_null(chan_reserve(p, 1, max + 1));
	assert_null(chan_reserve(p, 1, UINT32_MAX));
	assert_int_equal(p->full_count, 0);
	for (int i = 0; i < 9; i++) {
		assert_true(send_one(p, 1, max, (uint64_t)i));
		chan_publish(p);
		const struct chan_rec *rec = chan_peek(c);
		assert_non_null(rec);
		assert_int_equal(rec->len, max);
		assert_int_equal(check_fill(rec->payload, max, (uint64_t)i), 0);
		chan_consume(c);
		chan_release(c);
	}
	fix_free(f);
}

static void test_second_role(void **state)
{
	(void)state;
	struct fix *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	fix_path(f);
	f->dp = chan_open(f->path, 3, RING, CHAN_ROLE_DATAPLANE, f->err, sizeof(f->err));
	assert_non_null(f->dp);
	struct chan_hdr *h = chan_header(f->dp);
	assert_int_equal(h->magic, CHAN_MAGIC);
	assert_int_equal(h->nworkers, 3);
	assert_int_equal(atomic_load(&h->dp_epoch), 1);
	assert_int_equal(atomic_load(&h->dp_pid), (uint32_t)getpid());
	assert_int_equal(chan_peer_epoch(f->dp), 0);
	assert_false(chan_peer_alive(f->dp, sluice_now_ns(), 1000000000ull));
	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, h->total_size);
	assert_int_equal(h->rings[0].data_off % 4096, 0);

	f->cp = chan_open(f->path, 3, RING, CHAN_ROLE_CONTROL, f->err, sizeof(f->err));
	assert_non_null(f->cp);
	assert_int_equal(chan_nworkers(f->cp), 3);
	assert_int_equal(chan_peer_epoch(f->dp), 1);
	assert_int_equal(chan_peer_epoch(f->cp), 1);
	/* Attached is not alive: control is seen only from its first heartbeat. */
	assert_false(chan_peer_alive(f->dp, sluice_now_ns(), 1000000000ull));
	chan_heartbeat(f->cp, 5000);
	assert_true(chan_peer_alive(f->dp, 5000 + 100, 100));
	assert_false(chan_peer_alive(f->dp, 5000 + 101, 100));
	/* Control waits on one doorbell for all workers, each worker on its own. */
	assert_int_equal(chan_doorbell_fd(f->cp, 0), chan_doorbell_fd(f->cp, 2));
	assert_int_not_equal(chan_doorbell_fd(f->dp, 0), chan_doorbell_fd(f->dp, 2));
	assert_null(chan_producer(f->dp, 3));
	for (uint32_t w = 0; w < 3; w++) {
		assert_true(send_one(chan_producer(f->dp, w), 1, 24, 10 + w));
		chan_publish(chan_producer(f->dp, w));
		assert_true(send_one(chan_producer(f->cp, w), 16, 32, 20 + w));
		chan_publish(chan_producer(f->cp, w));
	}
	for (uint32_t w = 0; w < 3; w++) {
		const struct chan_rec *rec = chan_peek(chan_consumer(f->cp, w));
		assert_non_null(rec);
		assert_int_equal(rec->type, 1);
		assert_int_equal(check_fill(rec->payload, 24, 10 + w), 0);
		rec = chan_peek(chan_consumer(f->dp, w));
		assert_non_null(rec);
		assert_int_equal(rec->type, 16);
		assert_int_equal(check_fill(rec->payload, 32, 20 + w), 0);
	}
	chan_close(f->cp);
	f->cp = NULL;
	assert_false(chan_peer_alive(f->dp, 5000, 100));
	assert_int_equal(atomic_load(&h->cp_pid), 0);
	chan_close(f->dp);
	assert_int_equal(chan_unlink(f->path, 3), 0);
	assert_int_equal(access(f->path, F_OK), -1);
	free(f);
}

/* Opens `path` expecting a refusal whose message contains `want`. */
static void expect_refused(const char *path, uint32_t nworkers, uint32_t ring, const char *want)
{
	char err[512] = "";
	struct chan_region *r = chan_open(path, nworkers, ring, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (r) {
		chan_close(r);
		fail_msg("open of %s succeeded, expected \"%s\"", path, want);
	}
	if (!strstr(err, want))
		fail_msg("message \"%s\" lacks \"%s\"", err, want);
}

static void test_mismatch_refused(void **state)
{
	(void)state;
	struct fix *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	fix_path(f);
	f->dp = chan_open(f->path, 2, RING, CHAN_ROLE_DATAPLANE, f->err, sizeof(f->err));
	assert_non_null(f->dp);
	struct chan_hdr *h = chan_header(f->dp);

	expect_refused(f->path, 3, RING, "nworkers 2 in region, configured 3");
	expect_refused(f->path, 2, 2 * RING, "ring_size 65536 in region, configured 131072");

	char want[128];
	h->version = CHAN_VERSION + 1;
	snprintf(want, sizeof(want), "version %u in region, this build speaks %u; stop the other process",
		 CHAN_VERSION + 1, CHAN_VERSION);
	expect_refused(f->path, 2, RING, want);
	h->version = CHAN_VERSION;
	h->hdr_size += 64;
	expect_refused(f->path, 2, RING, "hdr_size");
	h->hdr_size -= 64;
	h->total_size += 1;
	expect_refused(f->path, 2, RING, "total_size");
	h->total_size -= 1;
	h->magic = 0x1122334455667788ull;
	expect_refused(f->path, 2, RING, "magic 0x1122334455667788 in region");
	h->magic = CHAN_MAGIC;
	h->rings[3].data_off += 8;
	expect_refused(f->path, 2, RING, "ring 3 block corrupt");
	h->rings[3].data_off -= 8;
	/* A short file is refused while the peer holds it (the peer maps the
	 * whole of it and never touches the cut-off page here). */
	uint64_t total = h->total_size;
	assert_int_equal(truncate(f->path, (off_t)(total - 4096)), 0);
	expect_refused(f->path, 2, RING, "file size");

	/* The file is still good enough to be refused the same way again. */
	assert_int_equal(truncate(f->path, (off_t)total), 0);
	struct chan_region *r = chan_open(f->path, 2, RING, CHAN_ROLE_CONTROL, f->err, sizeof(f->err));
	if (!r)
		fail_msg("reopen after repair: %s", f->err);
	assert_null(chan_open_note(r));
	/* Not the last one out: the dataplane still holds the region. */
	assert_false(chan_close(r));
	assert_int_equal(access(f->path, F_OK), 0);
	assert_true(chan_close(f->dp));
	assert_int_equal(access(f->path, F_OK), -1);

	expect_refused(f->path, 0, RING, "nworkers 0 out of range");
	expect_refused(f->path, CHAN_MAX_WORKERS + 1, RING, "nworkers 65 out of range");
	expect_refused(f->path, 2, RING + 8, "power of two");
	expect_refused(f->path, 2, CHAN_RING_MIN / 2, "power of two");
	assert_int_equal(chan_unlink(f->path, 2), 0);
	free(f);
}

/* A process that dies attached: its lock goes with it, the file stays. */
static void attach_and_die(const char *path, uint32_t nworkers)
{
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		char err[256];
		struct chan_region *r = chan_open(path, nworkers, RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
		_exit(r ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(kid, &st, 0), kid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(access(path, F_OK), 0);
}

/* Opens path as control, expecting a note that contains want. */
static void expect_note(const char *path, uint32_t nworkers, const char *want)
{
	char err[512] = "";
	struct chan_region *r = chan_open(path, nworkers, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (!r)
		fail_msg("open of %s failed: %s", path, err);
	const char *note = chan_open_note(r);
	if (!note || !strstr(note, want))
		fail_msg("note \"%s\" lacks \"%s\"", note ? note : "(none)", want);
	assert_true(chan_close(r));
}

/* What nobody holds was left by a crash: a region of this layout is reused,
 * one of another version or layout, or whose creator died before publishing
 * magic, is replaced; a file with another magic is never touched. */
static void test_stale_regions(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/sluice-test-chan-%d-init", (int)getpid());
	chan_unlink(path, 2);

	attach_and_die(path, 2);
	expect_note(path, 2, "reused the region a previous run left");
	assert_int_equal(access(path, F_OK), -1);

	attach_and_die(path, 2);
	expect_note(path, 3, "replaced a stale region (channel ");
	attach_and_die(path, 2);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint32_t v = CHAN_VERSION + 1;
	assert_int_equal(pwrite(fd, &v, sizeof(v), offsetof(struct chan_hdr, version)), (ssize_t)sizeof(v));
	close(fd);
	expect_note(path, 2, "version");

	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	expect_note(path, 1, "region never initialised (file size 1048576, magic unset)");

	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	uint64_t other = 0x1122334455667788ull;
	assert_int_equal(write(fd, &other, sizeof(other)), (ssize_t)sizeof(other));
	close(fd);
	expect_refused(path, 1, RING, "magic 0x1122334455667788 in region");
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(unlink(path), 0);
}

static void test_epoch_reattach(void **state)
{
	(void)state;
	struct fix *f = fix_new(1, RING);
	struct chan_hdr *h = chan_header(f->dp);
	struct chan_prod *dp_p = chan_producer(f->dp, 0);
	/* Records for the control about to restart, and records from it. */
	for (int i = 0; i < 5; i++)
		assert_true(send_one(dp_p, 1, 64, (uint64_t)i));
	chan_publish(dp_p);
	struct chan_prod *cp_p = chan_producer(f->cp, 0);
	for (int i = 0; i < 3; i++)
		assert_true(send_one(cp_p, 16, 48, 100 + (uint64_t)i));
	chan_publish(cp_p);
	assert_int_equal(atomic_load(&h->cp_epoch), 1);

	chan_close(f->cp);
	f->cp = chan_open(f->path, 1, RING, CHAN_ROLE_CONTROL, f->err, sizeof(f->err));
	assert_non_null(f->cp);
	assert_int_equal(atomic_load(&h->cp_epoch), 2);
	assert_int_equal(chan_peer_epoch(f->dp), 2);
	assert_int_equal(atomic_load(&h->dp_epoch), 1);
	struct chan_cons *cp_c = chan_consumer(f->cp, 0);
	assert_null(chan_peek(cp_c));
	/* The producer sees the discarded space as free again. */
	assert_int_equal(chan_free_bytes(dp_p), RING);
	assert_true(send_one(dp_p, 1, 64, 77));
	chan_publish(dp_p);
	const struct chan_rec *rec = chan_peek(cp_c);
	assert_non_null(rec);
	assert_int_equal(check_fill(rec->payload, 64, 77), 0);
	chan_consume(cp_c);
	assert_null(chan_peek(cp_c));

	/* What the old control wrote still reaches the dataplane, and the new
	 * control continues behind it. */
	cp_p = chan_producer(f->cp, 0);
	assert_true(send_one(cp_p, 16, 48, 103));
	chan_publish(cp_p);
	struct chan_cons *dp_c = chan_consumer(f->dp, 0);
	for (uint64_t i = 0; i < 4; i++) {
		rec = chan_peek(dp_c);
		assert_non_null(rec);
		assert_int_equal(check_fill(rec->payload, 48, 100 + i), 0);
		chan_consume(dp_c);
	}
	assert_null(chan_peek(dp_c));
	chan_release(dp_c);

	/* A dataplane restart bumps its own epoch and drops its unread input. */
	assert_true(send_one(cp_p, 16, 48, 104));
	chan_publish(cp_p);
	chan_close(f->dp);
	f->dp = chan_open(f->path, 1, RING, CHAN_ROLE_DATAPLANE, f->err, sizeof(f->err));
	assert_non_null(f->dp);
	h = chan_header(f->dp);
	assert_int_equal(atomic_load(&h->dp_epoch), 2);
	assert_null(chan_peek(chan_consumer(f->dp, 0)));
	fix_free(f);
}

/* Presence comes from the kernel: a peer that withdrew (clean stop) is not
 * alive but still attached until it closes; one that dies is seen gone at
 * once, although its last heartbeat is fresh. */
static void test_presence_and_withdraw(void **state)
{
	(void)state;
	struct fix *f = fix_new(1, RING);
	uint64_t now = 5000000000ull;
	chan_heartbeat(f->cp, now);
	assert_true(chan_peer_alive(f->dp, now, 1000000000ull));
	assert_true(chan_peer_attached(f->dp));
	assert_true(chan_peer_attached(f->cp));
	assert_false(chan_peer_withdrawn(f->dp));

	chan_heartbeat_stop(f->cp);
	chan_heartbeat(f->cp, now + 1);
	assert_false(chan_peer_alive(f->dp, now + 1, 1000000000ull));
	assert_true(chan_peer_withdrawn(f->dp));
	assert_true(chan_peer_attached(f->dp));
	assert_false(chan_close(f->cp));
	f->cp = NULL;
	assert_false(chan_peer_attached(f->dp));
	assert_false(chan_peer_withdrawn(f->dp));

	/* A control that dies with a fresh heartbeat. It tells it attached on
	 * `ready` and then waits on `hold`, which nobody writes, until killed;
	 * the parent keeps no write end of `ready`, so a child that fails is
	 * an EOF there, not a hang. */
	int ready[2], hold[2];
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(hold), 0);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		char err[256], b;
		close(ready[0]);
		close(hold[1]);
		struct chan_region *r = chan_open(f->path, 1, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
		if (!r)
			_exit(1);
		chan_heartbeat(r, sluice_now_ns());
		if (write(ready[1], "x", 1) != 1 || read(hold[0], &b, 1) < 0)
			_exit(2);
		_exit(0);
	}
	close(ready[1]);
	close(hold[0]);
	char b;
	assert_int_equal(read(ready[0], &b, 1), 1);
	assert_true(chan_peer_attached(f->dp));
	assert_true(chan_peer_alive(f->dp, sluice_now_ns(), 1000000000ull));
	assert_int_equal(kill(kid, SIGKILL), 0);
	int st;
	assert_int_equal(waitpid(kid, &st, 0), kid);
	assert_false(chan_peer_attached(f->dp));
	assert_true(chan_peer_alive(f->dp, sluice_now_ns(), 1000000000ull));
	close(ready[0]);
	close(hold[1]);
	fix_free(f);
}

/* Several processes open the same new path at once: exactly one creates,
 * the others wait for its magic, and all of them end up attached to the
 * same region; the last one out removes it. */
static void test_open_race(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		char path[128];
		snprintf(path, sizeof(path), "/dev/shm/sluice-test-chan-%d-race", (int)getpid());
		chan_unlink(path, 2);
		int gate[2], ready[2], release[2];
		assert_int_equal(pipe(gate), 0);
		assert_int_equal(pipe(ready), 0);
		assert_int_equal(pipe(release), 0);
		pid_t kids[4];
		for (int k = 0; k < 4; k++) {
			kids[k] = fork();
			assert_true(kids[k] >= 0);
			if (kids[k] == 0) {
				char b, err[256];
				close(gate[1]);
				close(ready[0]);
				close(release[1]);
				if (read(gate[0], &b, 1) != 0)
					_exit(3);
				struct chan_region *r = chan_open(path, 2, RING,
								  k & 1 ? CHAN_ROLE_CONTROL : CHAN_ROLE_DATAPLANE,
								  err, sizeof(err));
				if (!r) {
					fprintf(stderr, "child %d: %s\n", k, err);
					_exit(1);
				}
				int ok = chan_header(r)->rings[3].size == RING && chan_nworkers(r) == 2;
				/* Stay attached until every process has attached. */
				if (write(ready[1], "x", 1) != 1 || read(release[0], &b, 1) != 0)
					_exit(4);
				chan_close(r);
				_exit(ok ? 0 : 2);
			}
		}
		close(gate[0]);
		close(gate[1]);
		close(ready[1]);
		close(release[0]);
		for (int k = 0; k < 4; k++) {
			char b;
			assert_int_equal(read(ready[0], &b, 1), 1);
		}
		char err[256];
		struct chan_region *r = chan_open(path, 2, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
		assert_non_null(r);
		assert_int_equal(atomic_load(&chan_header(r)->dp_epoch), 2);
		assert_int_equal(atomic_load(&chan_header(r)->cp_epoch), 3);
		assert_false(chan_close(r));
		close(release[1]);
		close(ready[0]);
		for (int k = 0; k < 4; k++) {
			int st;
			assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
			assert_true(WIFEXITED(st));
			assert_int_equal(WEXITSTATUS(st), 0);
		}
		assert_int_equal(access(path, F_OK), -1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wrap_sizes),
		cmocka_unit_test(test_full_recovers),
		cmocka_unit_test(test_publish_batching),
		cmocka_unit_test(test_torn_threads),
		cmocka_unit_test(test_doorbell_handoffs),
		cmocka_unit_test(test_prepare_sleep_sees_data),
		cmocka_unit_test(test_max_payload),
		cmocka_unit_test(test_second_role),
		cmocka_unit_test(test_mismatch_refused),
		cmocka_unit_test(test_stale_regions),
		cmocka_unit_test(test_epoch_reattach),
		cmocka_unit_test(test_open_race),
		cmocka_unit_test(test_presence_and_withdraw),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	/* A failed test leaves its region behind; remove every path this run used. */
	char path[128];
	for (unsigned i = 0; i < path_counter; i++) {
		snprintf(path, sizeof(path), "/dev/shm/sluice-test-chan-%d-%u", (int)getpid(), i);
		chan_unlink(path, CHAN_MAX_WORKERS);
	}
	snprintf(path, sizeof(path), "/dev/shm/sluice-test-chan-%d-init", (int)getpid());
	chan_unlink(path, 1);
	snprintf(path, sizeof(path), "/dev/shm/sluice-test-chan-%d-race", (int)getpid());
	chan_unlink(path, 2);
	return failed;
}
