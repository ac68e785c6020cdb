/*
 * The kernel transport (tp_kernel.c): nonblocking sockets, level-triggered
 * epoll, one SO_REUSEPORT listening socket per worker; workers configured
 * with port 0 share the ephemeral port the first one picked.
 */
#ifndef SLUICE_TP_KERNEL_H
#define SLUICE_TP_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/conf.h"
#include "transport/transport.h"

/* Sizes of send-queue chunks: an empty queue starts with a small one (a
 * token frame is a few hundred bytes, and thousands of subscribers each
 * queue one in the same turn), more bytes go to full-size ones; larger
 * reservations get a one-off chunk. */
#define TP_KERNEL_CHUNK (16u * 1024u)
#define TP_KERNEL_SMALL_CHUNK 512u
/* The turn's send arena: bytes committed between two flushes to a
 * connection with nothing queued go here, end to end for all connections,
 * instead of into a chunk of each; what a flush could not send moves to
 * chunks, and the arena starts over. A turn that fills it goes on in a new
 * arena of twice the size, up to TP_KERNEL_ARENA_MAX (the turn's full ones
 * are freed at its flush); a connection takes at most
 * TP_KERNEL_ARENA_CONN_MAX of it per turn. */
#define TP_KERNEL_ARENA_MIN (256u * 1024u)
#define TP_KERNEL_ARENA_MAX (16u * 1024u * 1024u)
#define TP_KERNEL_ARENA_CONN_MAX (4u * 1024u)
/* Sends one io_uring run of a flush takes at most (tp_uring.h); the unit
 * tests build with a small one so a flush takes several runs. */
#ifndef TP_KERNEL_URING_DEPTH
#define TP_KERNEL_URING_DEPTH 1024u
#endif
/* Listening sockets one instance may have (the listener and a redirect one). */
#define TP_KERNEL_MAX_LISTEN 2u
/* Graceful close gives the peer this long to take the data and send its FIN. */
#define TP_KERNEL_LINGER_NS (5ull * 1000000000ull)

/* Listens on addr (dotted IPv4) : port; port 0 picks an ephemeral port,
 * tp_kernel_port() tells which. Returns NULL with a message in err. */
struct tp *tp_kernel_listen(const char *addr, uint16_t port, const struct tp_upcalls *up, void *app,
			    char *err, size_t errlen);
/* One more listening socket on the same instance: its connections come to
 * the same upcalls, told apart by tp_peer.local_port. Returns 0, or -1 with a
 * message in err. */
int tp_kernel_listen_also(struct tp *t, const char *addr, uint16_t port, char *err, size_t errlen);
/* How a flush sends (sluice.conf's kernel_send): AUTO batches a turn's
 * sends through io_uring and falls back to one sendmsg per connection when
 * the first flush finds no usable ring (what tp_kernel_listen sets up);
 * URING insists, probing now; SENDMSG never uses the ring. Reads and
 * EPOLLOUT resends always use plain calls. Returns 0, or -1 with a message
 * in err (URING without a usable ring). */
int tp_kernel_set_send(struct tp *t, enum conf_kernel_send how, char *err, size_t errlen);
/* True while flushes are to go through io_uring (until a flush finds the
 * ring unusable). */
bool tp_kernel_uring(const struct tp *t);
/* The port the instance listens on (host byte order). */
uint16_t tp_kernel_port(const struct tp *t);
/* Connections the instance holds (open or closing). */
uint32_t tp_kernel_conns(const struct tp *t);
/* Send-queue chunks that exist now, queued or kept free (the send arena
 * is not counted): what the instance holds beyond the turn's arena. */
uint32_t tp_kernel_chunks(const struct tp *t);
/* Connections reset because the app broke the contract of transport.h:
 * on_data returned more than it was offered, or tx_commit went past what
 * tx_reserve handed out. Per-record paths never abort; they count here. */
uint64_t tp_kernel_app_errors(const struct tp *t);

#endif
