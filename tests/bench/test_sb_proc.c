/* sb_proc: the memory it reports is the processes' own (heap and shared
 * memory), and file-backed pages, which a store's mapping fills, are apart.
 * Read on this test's own process while it maps and touches memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sys/mman.h>

#include "sb_proc.h"

#define MIB (1024u * 1024u)
#define SIZE (32u * MIB)

static struct sb_proc_sample sample(void)
{
	pid_t me = getpid();
	struct sb_proc_sample s;
	sb_proc_read(&me, 1, &s);
	assert_int_equal(s.ok, 1);
	return s;
}

/* Writes every page, so each is resident. */
static void touch(uint8_t *p, size_t len)
{
	long page = sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < len; i += (size_t)page)
		p[i] = (uint8_t)(i >> 12 | 1);
}

static void test_anon_shared_file(void **state)
{
	(void)state;
	struct sb_proc_sample s0 = sample();
	assert_true(s0.mem_bytes > 0);
	assert_true(s0.file_bytes > 0); /* this program's own text at least */

	/* Heap: counted. */
	uint8_t *heap = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(heap != MAP_FAILED);
	touch(heap, SIZE);
	struct sb_proc_sample s1 = sample();
	assert_true(s1.mem_bytes >= s0.mem_bytes + SIZE - MIB);
	assert_true(s1.file_bytes < s0.file_bytes + 4 * MIB);

	/* Shared memory (as the channel ring and DPDK's memory are): counted. */
	uint8_t *shm = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(shm != MAP_FAILED);
	touch(shm, SIZE);
	struct sb_proc_sample s2 = sample();
	assert_true(s2.mem_bytes >= s1.mem_bytes + SIZE - MIB);

	/* A mapped file (as LMDB's store is): apart, not counted. */
	char path[] = "/tmp/test_sb_proc.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, SIZE), 0);
	uint8_t *file = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(file != MAP_FAILED);
	touch(file, SIZE);
	struct sb_proc_sample s3 = sample();
	assert_true(s3.file_bytes >= s2.file_bytes + SIZE - MIB);
	assert_true(s3.mem_bytes < s2.mem_bytes + 4 * MIB);

	munmap(file, SIZE);
	close(fd);
	munmap(shm, SIZE);
	munmap(heap, SIZE);
}

/* A process that is gone is left out: nothing added, not counted. */
static void test_gone(void **state)
{
	(void)state;
	pid_t pids[2] = { getpid(), 0x3fffffff };
	struct sb_proc_sample s;
	sb_proc_read(pids, 2, &s);
	assert_int_equal(s.ok, 1);
	assert_true(s.mem_bytes > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_anon_shared_file),
		cmocka_unit_test(test_gone),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
