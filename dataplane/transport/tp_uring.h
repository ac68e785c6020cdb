/*
 * Batched socket sends through io_uring (tp_uring.c): the kernel transport
 * queues one send per connection for a loop turn's flush and pays one
 * io_uring_enter for all of them instead of one sendmsg each.
 *
 * The sends are nonblocking (MSG_DONTWAIT): a full socket completes at once
 * with -EAGAIN, exactly as sendmsg would answer, and tpu_run() returns only
 * when every queued send has completed. So the caller's view is that of a
 * loop of sendmsg calls whose results arrive together.
 *
 * Knows nothing of connections: a send is an fd, one run of bytes and a
 * tag. One instance belongs to the thread that made it (a single-issuer
 * ring serves no other).
 */
#ifndef SLUICE_TP_URING_H
#define SLUICE_TP_URING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tpu;

/* A ring for up to `depth` sends per tpu_run (rounded up to a power of two
 * by the kernel). NULL with a message in err when the kernel has no usable
 * io_uring (too old, io_uring_disabled, a seccomp filter): the caller then
 * sends with sendmsg. */
struct tpu *tpu_new(unsigned depth, char *err, size_t errlen);
void tpu_free(struct tpu *u);

/* Sends queued and not yet run. */
unsigned tpu_pending(const struct tpu *u);
/* True while another send fits before tpu_run must be called. */
bool tpu_room(const struct tpu *u);

/* Queues a send of buf[0, len) on fd. The bytes are the caller's and must
 * stay unchanged until tpu_run() returns. Call only while tpu_room(). */
void tpu_send(struct tpu *u, int fd, const void *buf, size_t len, uint64_t tag);

/* Submits the queued sends and waits until all have completed. Returns how
 * many there were (their results are then read with tpu_result, in the
 * order they were queued, until the next tpu_send), or a negative errno
 * when the ring failed: the sends it could not complete then read as failed
 * with that errno, and the caller should stop using the ring. */
int tpu_run(struct tpu *u);
/* The i-th send of the last run: its tag in *tag (unless NULL); returns the
 * bytes sent or a negative errno. */
int tpu_result(const struct tpu *u, unsigned i, uint64_t *tag);

#endif
