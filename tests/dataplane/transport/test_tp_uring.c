/*
 * tp_uring over real sockets: Unix stream socketpairs, one end sent on
 * through the ring, the other read back with recv().
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "transport/tp_uring.h"

static struct tpu *ring(unsigned depth)
{
	char err[128];
	struct tpu *u = tpu_new(depth, err, sizeof(err));
	if (!u)
		fail_msg("tpu_new: %s", err);
	return u;
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* Reads exactly n bytes that are already queued on fd. */
static void expect_bytes(int fd, const char *want, size_t n)
{
	char buf[256];
	assert_true(n <= sizeof(buf));
	assert_int_equal(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), (ssize_t)n);
	assert_memory_equal(buf, want, n);
}

/* One run of sends on different sockets: each result is its byte count,
 * read back in queue order with its tag. */
static void test_sends(void **state)
{
	(void)state;
	struct tpu *u = ring(8);
	int a[2], b[2];
	pair(a);
	pair(b);
	char one[] = "data: one\n\n", two[] = "data: two\n\n";
	tpu_send(u, a[0], one, strlen(one), 101);
	tpu_send(u, b[0], two, strlen(two), 202);
	tpu_send(u, a[0], two, 4, 303); /* a second send on one socket follows the first */
	assert_int_equal(tpu_pending(u), 3);
	assert_int_equal(tpu_run(u), 3);
	assert_int_equal(tpu_pending(u), 0);
	uint64_t tag;
	assert_int_equal(tpu_result(u, 0, &tag), (int)strlen(one));
	assert_int_equal(tag, 101);
	assert_int_equal(tpu_result(u, 1, &tag), (int)strlen(two));
	assert_int_equal(tag, 202);
	assert_int_equal(tpu_result(u, 2, &tag), 4);
	assert_int_equal(tag, 303);
	assert_int_equal(tpu_result(u, 3, &tag), -EINVAL);
	expect_bytes(a[1], "data: one\n\ndata", strlen(one) + 4);
	expect_bytes(b[1], two, strlen(two));
	/* A run with nothing queued is no run. */
	assert_int_equal(tpu_run(u), 0);
	tpu_free(u);
	for (int i = 0; i < 2; i++) {
		close(a[i]);
		close(b[i]);
	}
}

/* A full socket answers -EAGAIN at once (the run never waits for room), a
 * closed peer -EPIPE without SIGPIPE, a closed fd -EBADF; the other sends
 * of the same run still go out. */
static void test_errors_do_not_stop_the_run(void **state)
{
	(void)state;
	struct tpu *u = ring(8);
	int full[2], gone[2], ok[2];
	pair(full);
	pair(gone);
	pair(ok);
	static char junk[4096];
	while (send(full[0], junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	close(gone[1]);
	int dup_fd = dup(ok[0]);
	assert_true(dup_fd >= 0);
	close(dup_fd); /* a descriptor number that names nothing now */
	tpu_send(u, full[0], "tok", 3, 1);
	tpu_send(u, gone[0], "tok", 3, 2);
	tpu_send(u, dup_fd, "tok", 3, 3);
	tpu_send(u, ok[0], "tok", 3, 4);
	assert_int_equal(tpu_run(u), 4);
	uint64_t tag;
	assert_int_equal(tpu_result(u, 0, &tag), -EAGAIN);
	assert_int_equal(tpu_result(u, 1, &tag), -EPIPE);
	assert_int_equal(tpu_result(u, 2, &tag), -EBADF);
	assert_int_equal(tpu_result(u, 3, &tag), 3);
	assert_int_equal(tag, 4);
	expect_bytes(ok[1], "tok", 3);
	tpu_free(u);
	close(full[0]);
	close(full[1]);
	close(gone[0]);
	close(ok[0]);
	close(ok[1]);
}

/* A run holds at most depth sends; after it the ring takes depth more, and
 * many runs in a row neither leak completions nor mix up their results. */
static void test_depth_and_reuse(void **state)
{
	(void)state;
	enum { DEPTH = 4, RUNS = 300 };
	struct tpu *u = ring(DEPTH);
	int sv[DEPTH][2];
	for (int i = 0; i < DEPTH; i++)
		pair(sv[i]);
	for (int r = 0; r < RUNS; r++) {
		char msg[DEPTH][16];
		size_t len[DEPTH];
		for (int i = 0; i < DEPTH; i++) {
			assert_true(tpu_room(u));
			len[i] = (size_t)snprintf(msg[i], sizeof(msg[i]), "%d.%d;", r, i);
			tpu_send(u, sv[i][0], msg[i], len[i], (uint64_t)(r * DEPTH + i));
		}
		assert_false(tpu_room(u));
		assert_int_equal(tpu_run(u), DEPTH);
		for (int i = 0; i < DEPTH; i++) {
			uint64_t tag;
			assert_int_equal(tpu_result(u, (unsigned)i, &tag), (int)len[i]);
			assert_int_equal(tag, (uint64_t)(r * DEPTH + i));
			expect_bytes(sv[i][1], msg[i], len[i]);
		}
	}
	tpu_free(u);
	for (int i = 0; i < DEPTH; i++) {
		close(sv[i][0]);
		close(sv[i][1]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sends),
		cmocka_unit_test(test_errors_do_not_stop_the_run),
		cmocka_unit_test(test_depth_and_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
