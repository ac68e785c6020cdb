/*
 * Channel throughput: one producer thread and one consumer thread over a
 * region in /dev/shm (the dataplane's d2c ring of worker 0), records of a
 * fixed payload size, publish every BATCH records and release once per
 * drain as the real loops do. Prints records/s and ns/record for 32 and
 * 256-byte payloads (or the sizes given as arguments).
 *
 *   chan-bench [RECORDS] [SIZE...]
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/chan.h"

#define RING (1u << 20)
#define BATCH 32u

struct run {
	struct chan_prod *p;
	uint64_t records;
	uint32_t size;
};

static void *produce(void *arg)
{
	struct run *r = arg;
	for (uint64_t i = 0; i < r->records;) {
		uint8_t *d = chan_reserve(r->p, 1, r->size);
		if (!d) {
			chan_publish(r->p);
			sched_yield();
			continue;
		}
		memcpy(d, &i, sizeof(i));
		memset(d + sizeof(i), (int)(i & 0xff), r->size - sizeof(i));
		chan_commit(r->p, r->size);
		if (++i % BATCH == 0)
			chan_publish(r->p);
	}
	chan_publish(r->p);
	return NULL;
}

/* Returns the number of records whose sequence number was out of place. */
static uint64_t consume(struct chan_cons *c, uint64_t records)
{
	uint64_t bad = 0;
	for (uint64_t want = 0; want < records;) {
		const struct chan_rec *rec;
		bool any = false;
		while ((rec = chan_peek(c))) {
			uint64_t seq;
			memcpy(&seq, rec->payload, sizeof(seq));
			bad += seq != want;
			want++;
			any = true;
			chan_consume(c);
		}
		chan_release(c);
		if (!any)
			sched_yield();
	}
	return bad;
}

static int bench(const char *path, uint64_t records, uint32_t size)
{
	char err[512];
	chan_unlink(path, 1);
	struct chan_region *dp = chan_open(path, 1, RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	if (!dp) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	struct chan_region *cp = chan_open(path, 1, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	if (!cp) {
		fprintf(stderr, "%s\n", err);
		chan_close(dp);
		return 1;
	}
	struct run r = { .p = chan_producer(dp, 0), .records = records, .size = size };
	int rc = 1;
	pthread_t th;
	uint64_t t0 = sluice_now_ns();
	if (pthread_create(&th, NULL, produce, &r) != 0) {
		fprintf(stderr, "pthread_create failed\n");
		goto out;
	}
	uint64_t bad = consume(chan_consumer(cp, 0), records);
	if (pthread_join(th, NULL) != 0)
		goto out;
	uint64_t ns = sluice_now_ns() - t0;
	printf("payload %4u B: %12.0f records/s  %7.1f ns/record  %8.1f MB/s  (%llu records, %llu full)\n",
	       size, (double)records * 1e9 / (double)ns, (double)ns / (double)records,
	       (double)records * size * 1e3 / (double)ns, (unsigned long long)records,
	       (unsigned long long)r.p->full_count);
	rc = bad ? 1 : 0;
	if (bad)
		fprintf(stderr, "%llu records out of order\n", (unsigned long long)bad);
out:
	chan_close(cp);
	chan_close(dp);
	chan_unlink(path, 1);
	return rc;
}

int main(int argc, char **argv)
{
	uint64_t records = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000000ull;
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/sluice-chan-bench-%d", (int)getpid());
	int rc = 0;
	if (argc > 2) {
		for (int i = 2; i < argc; i++) {
			unsigned long s = strtoul(argv[i], NULL, 10);
			if (s < 8 || s > RING / 4 - sizeof(struct chan_rec)) {
				fprintf(stderr, "size %s out of range 8..%zu\n", argv[i],
					RING / 4 - sizeof(struct chan_rec));
				return 2;
			}
			rc |= bench(path, records, (uint32_t)s);
		}
		return rc;
	}
	rc |= bench(path, records, 32);
	rc |= bench(path, records, 256);
	return rc;
}
