/*
 * Inside the kernel transport: the state tp_kernel.c (connections, epoll,
 * sending) and tp_kernel_txq.c (the send queue's memory: chunks and the
 * turn's arena) share. Nothing outside those two files includes it.
 */
#ifndef SLUICE_TP_KERNEL_INT_H
#define SLUICE_TP_KERNEL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include "sluice/list.h"
#include "transport/tp_kernel.h"
#include "transport/tp_uring.h"

#define MAX_EVENTS 256
/* Free chunks kept per worker for the next sender (2 MiB of full-size ones,
 * 1 MiB of small ones); past that a sent chunk goes back to malloc. */
#define FREE_CHUNKS_MAX 128u
#define FREE_SMALL_MAX 2048u
/* Arena segments of one turn: doubling from TP_KERNEL_ARENA_MIN, the last
 * one reaches TP_KERNEL_ARENA_MAX. */
#define ARENA_SEGS_MAX 8u

/* A send-queue chunk: bytes [head, tail) are committed and not yet sent. */
struct chunk {
	struct chunk *next;
	uint32_t cap;
	uint32_t head;
	uint32_t tail;
	uint32_t in_arena; /* carved from a segment of the send arena */
	uint8_t data[];
};

enum {
	KC_CLOSING = 1u << 0, /* graceful close asked: discard input, send the rest, FIN */
	KC_RD_EOF = 1u << 1,  /* peer's FIN seen */
	KC_WR_SHUT = 1u << 2, /* our FIN sent */
	KC_DEAD = 1u << 3,    /* fd closed; on_close and free pending */
	KC_BLOCKED = 1u << 4, /* last send hit EAGAIN; waiting for EPOLLOUT */
	KC_RX_FULL = 1u << 5, /* stash full; not read until rx_resume */
	KC_HAD_TX = 1u << 6,  /* bytes queued since the last on_drained */
	KC_ARENA = 1u << 7,   /* has arena chunks: listed in ktp.arena_conns[arena_idx] */
};

struct ktp;

/* A listening socket; epoll events carry its address. */
struct klisten {
	int fd;
	uint16_t port;
};

struct tp_conn {
	struct ktp *tp;
	int fd;
	uint32_t flags;
	uint32_t ev; /* epoll interest now registered */
	uint32_t stash_len, stash_cap;
	uint32_t arena_idx; /* with KC_ARENA */
	void *ctx;   /* the app's; NULL while on_open runs or when refused */
	uint8_t *stash; /* unconsumed input, owned here */
	struct chunk *txh, *txt;
	uint64_t tx_queued;
	uint64_t linger_deadline;
	struct list_node all;    /* ktp.conns, or ktp.dead once DEAD */
	struct list_node flush;  /* ktp.flushq: has bytes to send */
	/* One link for two queues a conn is never on at once: kt_close takes
	 * it off resumeq before it joins lingerq, and a CLOSING conn is never
	 * queued for a resume again (list_del on either name is harmless). */
	union {
		struct list_node resume; /* ktp.resumeq: rx_resume asked */
		struct list_node linger; /* ktp.lingerq: graceful close running */
	};
};

/* One send of a flush's ring run: to whom, and how many bytes it offered. */
struct ksend {
	struct tp_conn *c;
	size_t offered;
};

struct ktp {
	struct tp base; /* first: struct tp * converts to struct ktp * */
	const struct tp_upcalls *up;
	void *app;
	struct klisten ls[TP_KERNEL_MAX_LISTEN];
	uint32_t nls;
	int epfd, extra_fd;
	uint16_t port; /* of ls[0] */
	bool listen_paused;
	uint32_t nconns;
	uint32_t nfree, nfree_small;
	uint32_t nchunks; /* send-queue chunks that exist: queued or free */
	/* Times the app broke the interface's contract (consumed more than it
	 * was offered, committed more than it reserved); each reset its conn. */
	uint64_t app_errors;
	uint64_t listen_resume_ns;
	uint8_t *scratch;
	struct chunk *free_chunks, *free_small;
	/* The send arena (TP_KERNEL_ARENA_*): chunks carved end to end from
	 * arena[0, arena_used); arena_top is the last one, the only one that
	 * may still grow. A turn that fills the arena goes on in a new one of
	 * twice the size (the full ones wait in arena_prev until the turn's
	 * flush has moved their leftovers out, then go back to malloc), so
	 * the turn's bytes never spill into a chunk per connection.
	 * arena_conns lists the connections holding arena chunks (NULL where
	 * one died since). */
	uint8_t *arena;
	uint32_t arena_cap, arena_used;
	uint8_t *arena_prev[ARENA_SEGS_MAX];
	uint32_t narena_prev;
	struct chunk *arena_top;
	bool arena_overflowed; /* a reservation found the arena full */
	struct tp_conn **arena_conns;
	uint32_t narena_conns, arena_conns_cap;
	struct list_node conns, dead, flushq, resumeq, lingerq;
	/* The flush's batched sends (NULL: sendmsg only), with the iovecs and
	 * offered byte counts of one run, URING_IOV slots per send. */
	bool use_uring; /* flushes go through the ring, made at the first */
	struct tpu *uring;
	struct ksend *usend;
	struct epoll_event events[MAX_EVENTS];
};

static inline struct ktp *ktp_of(struct tp *t)
{
	return (struct ktp *)(void *)t;
}

static inline bool ktq_in_arena(const struct chunk *k)
{
	return k->in_arena != 0;
}

/* Closes the socket now; on_close runs at the end of the pass (tp_kernel.c). */
void kt_conn_finish(struct tp_conn *c, bool reset);

/* tp_kernel_txq.c. A chunk of at least min bytes: small when `small` and
 * min fits, else full size (or exactly min beyond that); NULL when out of
 * memory. */
struct chunk *ktq_chunk_get(struct ktp *t, size_t min, bool small);
/* Back to the free lists or malloc; arena chunks go with the arena. */
void ktq_chunk_put(struct ktp *t, struct chunk *k);
/* Drops every queued byte of c. */
void ktq_release(struct ktp *t, struct tp_conn *c);
/* A chunk of the turn's arena for c, or NULL: use ktq_chunk_get. */
struct chunk *ktq_arena_get(struct ktp *t, struct tp_conn *c, size_t min);
/* After a flush: leftovers move to chunks, the arena starts over. */
void ktq_arena_reset(struct ktp *t);

#endif
