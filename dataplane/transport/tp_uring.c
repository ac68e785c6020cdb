/*
 * Batched nonblocking sends through io_uring; see tp_uring.h.
 *
 * The ring is set up for one submitting thread that also reaps
 * (SINGLE_ISSUER | DEFER_TASKRUN: no task-work interrupts between runs,
 * completions are posted when we wait for them) and to go on past an SQE
 * that fails its checks (SUBMIT_ALL), so one bad fd costs one -errno, not
 * the rest of the batch. Kernels without those flags get a plain ring.
 *
 * Sends are IORING_OP_SEND of one run of bytes (a connection's turn sits
 * in the send arena as one), which skips a msghdr and iovec import; and
 * the completion queue is as deep as the submission queue, never deeper,
 * since a run never has more sends in flight: the ring is a fixed cost of
 * the worker that shows in memory per connection.
 */
#include "transport/tp_uring.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct tpu_slot {
	uint64_t tag;
	int res;
	bool done;
};

struct tpu {
	struct io_uring ring;
	unsigned depth;  /* slots, and the most sends of one run */
	unsigned queued; /* slots used by the run being built */
	unsigned nres;   /* slots holding the last run's results */
	struct tpu_slot *slots;
};

static int ring_init(struct io_uring *ring, unsigned depth)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
		  IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = depth;
	int r = io_uring_queue_init_params(depth, ring, &p);
	if (r != -EINVAL)
		return r;
	memset(&p, 0, sizeof(p));
	return io_uring_queue_init_params(depth, ring, &p);
}

struct tpu *tpu_new(unsigned depth, char *err, size_t errlen)
{
	struct tpu *u = calloc(1, sizeof(*u));
	if (!u) {
		snprintf(err, errlen, "io_uring: out of memory");
		return NULL;
	}
	int r = ring_init(&u->ring, depth);
	if (r < 0) {
		snprintf(err, errlen, "io_uring_queue_init: %s", strerror(-r));
		free(u);
		return NULL;
	}
	u->depth = depth;
	u->slots = calloc(depth, sizeof(*u->slots));
	if (!u->slots) {
		snprintf(err, errlen, "io_uring: out of memory");
		io_uring_queue_exit(&u->ring);
		free(u);
		return NULL;
	}
	return u;
}

void tpu_free(struct tpu *u)
{
	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	free(u->slots);
	free(u);
}

unsigned tpu_pending(const struct tpu *u)
{
	return u->queued;
}

bool tpu_room(const struct tpu *u)
{
	return u->queued < u->depth;
}

void tpu_send(struct tpu *u, int fd, const void *buf, size_t len, uint64_t tag)
{
	/* The ring has depth SQEs and a run never queues more, so one is free. */
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	u->nres = 0;
	unsigned i = u->queued++;
	struct tpu_slot *s = &u->slots[i];
	s->tag = tag;
	s->done = false;
	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	io_uring_sqe_set_data64(sqe, i);
}

/* Takes the completions there are; returns how many. */
static unsigned reap(struct tpu *u)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&u->ring, head, cqe) {
		struct tpu_slot *s = &u->slots[io_uring_cqe_get_data64(cqe)];
		s->res = cqe->res;
		s->done = true;
		n++;
	}
	io_uring_cq_advance(&u->ring, n);
	return n;
}

int tpu_run(struct tpu *u)
{
	unsigned want = u->queued, got = 0;
	u->queued = 0;
	u->nres = want;
	if (want == 0)
		return 0;
	/* Nonblocking sends complete during the submit itself; the wait only
	 * posts them. EINTR can cut a wait short, never loses a completion. */
	int r = io_uring_submit_and_wait(&u->ring, want);
	while (r >= 0 || r == -EINTR) {
		got += reap(u);
		if (got >= want)
			return (int)want;
		r = io_uring_submit_and_wait(&u->ring, want - got);
	}
	for (unsigned i = 0; i < want; i++)
		if (!u->slots[i].done)
			u->slots[i].res = r;
	return r;
}

int tpu_result(const struct tpu *u, unsigned i, uint64_t *tag)
{
	if (i >= u->nres) {
		if (tag)
			*tag = 0;
		return -EINVAL;
	}
	if (tag)
		*tag = u->slots[i].tag;
	return u->slots[i].res;
}
