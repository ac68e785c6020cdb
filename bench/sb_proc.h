/*
 * What the appliance spends, read from /proc: CPU time (user + system, all
 * threads) and resident memory of the server processes sluice-bench was
 * given (--pid), summed. Memory is the processes' own: anonymous and shared
 * pages (heap, stacks, shared-memory rings, DPDK's memory), not file-backed
 * ones (binaries, libraries, a store's mapped file), which are the kernel's
 * page cache and move with what the disk holds, not with connections.
 */
#ifndef SB_PROC_H
#define SB_PROC_H

#include <stdint.h>
#include <sys/types.h>

#define SB_PROC_MAX 8

struct sb_proc_sample {
	uint64_t cpu_ns;     /* user + system */
	uint64_t sys_ns;     /* of which in the kernel (on loopback that includes TCP receive for the client) */
	uint64_t mem_bytes;  /* resident anonymous + shared (RssAnon + RssShmem) */
	uint64_t file_bytes; /* resident file-backed (RssFile), reported apart */
	int ok; /* processes read */
};

/* Sums over pids[0..n); a process that cannot be read is left out. */
void sb_proc_read(const pid_t *pids, int n, struct sb_proc_sample *s);

#endif
