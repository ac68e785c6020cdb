/*
 * transport = dpdk: DPDK 22.11 ports under sluice's own TCP/IPv4 stack
 * (dataplane/net/). Built only when meson finds libdpdk (SLUICE_HAVE_DPDK).
 *
 * Process-wide part (main thread, before and after the workers):
 *   tp_dpdk_init()  EAL from the configuration, [port.0] with one RX/TX queue
 *                   pair and one mbuf pool per worker, RSS on TCP/IPv4 and
 *                   checksum offloads where the device offers them, start.
 *   tp_dpdk_launch()/tp_dpdk_wait()  run worker i on its EAL lcore (the i-th
 *                   entry of `lcores`); EAL pins that thread.
 *   tp_dpdk_fini()  stop and close the port, free pools, rte_eal_cleanup().
 * Per worker: tp_dpdk_create() gives the worker a struct tp whose connection
 * calls are the stack's and whose poll/flush drive the queue pair. Poll never
 * blocks and makes no syscall for a hardware PMD.
 *
 * The header names no DPDK type, so main.c and worker.c build without DPDK's
 * compiler flags.
 */
#ifndef SLUICE_TP_DPDK_H
#define SLUICE_TP_DPDK_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

struct sluice_conf;
struct tw_wheel;

/* Most EAL arguments tp_dpdk_eal_args() produces (eal_args words included). */
#define TP_DPDK_MAX_ARGS 64

/*
 * Builds the EAL command line for conf into argv (at most TP_DPDK_MAX_ARGS
 * entries, NULL-terminated; the strings live in buf). Returns argc, or -1 with
 * a message in err when something does not fit or lcores is malformed.
 */
int tp_dpdk_eal_args(const struct sluice_conf *conf, const char *argv0, char *buf, size_t buflen,
		     char **argv, char *err, size_t errlen);

/* EAL and port setup; conf must outlive tp_dpdk_fini(). Returns 0, or -1 with
 * a message in err (whatever was set up is released again). */
int tp_dpdk_init(const struct sluice_conf *conf, const char *argv0, char *err, size_t errlen);

/* Worker i's transport: its queue pair and pool, a stack instance whose timers
 * live in `wheel`. Returns NULL with a message in err. */
struct tp *tp_dpdk_create(uint32_t worker_id, struct tw_wheel *wheel, const struct tp_upcalls *up,
			  void *app, char *err, size_t errlen);

/* Runs fn(arg) on worker i's lcore. Returns 0, or -1 with a message in err. */
int tp_dpdk_launch(uint32_t worker_id, int (*fn)(void *), void *arg, char *err, size_t errlen);
/* Waits for the function launched on worker i's lcore; returns its result. */
int tp_dpdk_wait(uint32_t worker_id);

/* Releases the port and EAL; only after every worker's transport is destroyed. */
void tp_dpdk_fini(void);

#endif
