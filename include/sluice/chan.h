/*
 * The channel between sluice-dataplane and sluice-control.
 *
 * One shared-memory region (a file under /dev/shm or hugetlbfs) holds a
 * versioned header and, per worker, two single-producer single-consumer rings
 * of length-prefixed records:
 *   d2c[w]  dataplane worker w -> control
 *   c2d[w]  control -> dataplane worker w
 *
 * Ring positions are free-running 64-bit byte counters kept in the shared
 * region, so either process may restart and continue where the region says.
 * A record is written completely before the producer publishes the new head
 * with a release store, so a consumer never sees a torn record. Records never
 * straddle the end of the ring: when one does not fit in the tail space, the
 * producer writes a PAD record over the rest and starts again at offset 0.
 *
 * Wake-ups: a consumer that wants to block sets its ring's `sleeping` flag,
 * re-checks the ring, and waits on its doorbell (a FIFO next to the region:
 * PATH.bell-c for control, PATH.bell-N for worker N). A producer that publishes
 * while the flag is set clears it and writes one byte to the doorbell, so an
 * active consumer costs no syscall per record.
 *
 * Threading: each chan_prod / chan_cons is used by exactly one thread.
 * Ownership: chan_open() returns a region the caller frees with chan_close();
 * producer and consumer handles point into it and die with it.
 */
#ifndef SLUICE_CHAN_H
#define SLUICE_CHAN_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/common.h"

#define CHAN_MAGIC 0x314c4e4843434c53ull /* "SLCCHNL1" little-endian */
#define CHAN_VERSION 7u
#define CHAN_MAX_WORKERS 64u
#define CHAN_ALIGN 8u
/* Ring data size bounds; must be a power of two. */
#define CHAN_RING_MIN (64u * 1024u)
#define CHAN_RING_MAX (256u * 1024u * 1024u)

enum chan_role { CHAN_ROLE_DATAPLANE = 0, CHAN_ROLE_CONTROL = 1 };

/* Every record starts with this header; `len` counts payload bytes only.
 * The next record starts at the following CHAN_ALIGN boundary. */
struct chan_rec {
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	uint8_t payload[];
};

/* Shared ring control block. Producer and consumer fields live on separate
 * cache lines so the two processes never write the same line. */
struct chan_ring {
	alignas(SLUICE_CACHELINE) _Atomic uint64_t head; /* written by producer */
	alignas(SLUICE_CACHELINE) _Atomic uint64_t tail; /* written by consumer */
	alignas(SLUICE_CACHELINE) _Atomic uint32_t sleeping; /* consumer asks for a doorbell */
	uint32_t size;                                       /* bytes of data, power of two */
	uint64_t data_off;                                   /* offset of data from region start */
};

/* Region header; the first bytes of the shared file. */
struct chan_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;     /* sizeof(struct chan_hdr), catches layout drift */
	uint32_t nworkers;
	uint32_t ring_size;
	uint64_t total_size;
	/* Liveness: each side stamps sluice_now_ns() at least every 100 ms. */
	alignas(SLUICE_CACHELINE) _Atomic uint64_t dp_heartbeat_ns;
	_Atomic uint32_t dp_pid;
	_Atomic uint32_t dp_epoch; /* bumped by every dataplane attach */
	alignas(SLUICE_CACHELINE) _Atomic uint64_t cp_heartbeat_ns;
	_Atomic uint32_t cp_pid;
	_Atomic uint32_t cp_epoch; /* bumped by every control attach */
	alignas(SLUICE_CACHELINE) struct chan_ring rings[]; /* d2c[0], c2d[0], d2c[1], ... */
};

struct chan_region;

/* Producer handle: private to the producing thread. */
struct chan_prod {
	struct chan_ring *ring;
	uint8_t *data;
	uint64_t mask;
	uint64_t head;        /* local head, published by chan_publish() */
	uint64_t cached_tail; /* last tail read from the ring */
	uint64_t pending;     /* records committed but not yet published */
	int bell_fd;          /* the consumer's doorbell, or -1 */
	uint32_t max_payload; /* largest payload a record may carry */
	uint64_t full_count;  /* reserve attempts refused for lack of space */
	uint64_t bell_count;  /* doorbell writes */
	uint64_t bad_commits; /* commits larger than their reservation: dropped */
};

/* Consumer handle: private to the consuming thread. */
struct chan_cons {
	struct chan_ring *ring;
	uint8_t *data;
	uint64_t mask;
	uint64_t tail;        /* local tail, released by chan_release() */
	uint64_t cached_head; /* last head read from the ring */
};

/*
 * Opens (creating when absent) the region at `path` for `role`.
 *
 * Every attached process holds a shared flock on the file. A file nobody
 * holds is left by a crash (or a run that could not remove it): when its
 * layout matches it is reused (rings continue), otherwise — another magic,
 * version, layout, or a creator that died before publishing magic — it is
 * replaced by a fresh region; chan_open_note() says which, for the log.
 * While a peer is attached, nworkers and ring_size must match the region; a
 * mismatch is refused with a message naming both sides' values. On attach
 * the role's epoch is bumped and its pid recorded; the attaching side
 * discards what is unread in the rings it consumes, because those records
 * were addressed to its previous incarnation.
 * Returns NULL and writes a message into err on failure.
 */
struct chan_region *chan_open(const char *path, uint32_t nworkers, uint32_t ring_size,
			      enum chan_role role, char *err, size_t errlen);
/* How chan_open found the file: NULL when it created it or attached beside
 * a live peer, else a sentence for the log ("reused the region a previous
 * run left", "replaced a stale region: version 2 in region, ..."). */
const char *chan_open_note(const struct chan_region *r);
/*
 * Unmaps and closes. The last process out (no other holds the file's lock)
 * removes the file and its doorbells, so a clean stop of both processes
 * leaves nothing in /dev/shm; a peer still attached keeps them. Returns true
 * when it removed them.
 */
bool chan_close(struct chan_region *r);
/* Removes the region file and its doorbells whoever holds them (tests,
 * tooling that knows both processes are gone). */
int chan_unlink(const char *path, uint32_t nworkers);

struct chan_hdr *chan_header(struct chan_region *r);
uint32_t chan_nworkers(const struct chan_region *r);

/* The producer and consumer handles this role owns for worker w. */
struct chan_prod *chan_producer(struct chan_region *r, uint32_t w);
struct chan_cons *chan_consumer(struct chan_region *r, uint32_t w);
/* The doorbell fd this role waits on: control has one for all workers,
 * each worker has its own. Readable when a producer rang. */
int chan_doorbell_fd(struct chan_region *r, uint32_t w);
/* Reads and discards pending doorbell bytes (after a wake-up). */
void chan_doorbell_drain(struct chan_region *r, uint32_t w);

/* Liveness. */
void chan_heartbeat(struct chan_region *r, uint64_t now_ns);
bool chan_peer_alive(struct chan_region *r, uint64_t now_ns, uint64_t timeout_ns);
uint32_t chan_peer_epoch(struct chan_region *r);
/* This side stops serving but stays attached: its heartbeat is set to
 * CHAN_HB_WITHDRAWN now and never stamped again, so the peer sees it not
 * alive at once, and chan_peer_withdrawn() tells it that the records this
 * side still sends (last answers, their usage) are worth waiting for until
 * chan_close. */
#define CHAN_HB_WITHDRAWN 1ull
void chan_heartbeat_stop(struct chan_region *r);
bool chan_peer_withdrawn(struct chan_region *r);
/* Whether a peer process is attached at all, from the kernel's view (its
 * role lock): false the moment the peer dies, where its heartbeat would
 * still look fresh for up to the timeout. One fcntl; not for per-record
 * paths. */
bool chan_peer_attached(struct chan_region *r);

/* ---- producer fast path ------------------------------------------------ */

static inline uint32_t chan_rec_size(uint32_t len)
{
	return (uint32_t)((sizeof(struct chan_rec) + len + CHAN_ALIGN - 1) & ~(size_t)(CHAN_ALIGN - 1));
}

/*
 * Reserves a record of `len` payload bytes and returns its payload, or NULL
 * when the ring has no room now (the caller counts and pushes back; it never
 * spins) or len exceeds max_payload. The record becomes visible to the
 * consumer only after chan_commit() and chan_publish().
 */
void *chan_reserve(struct chan_prod *p, uint16_t type, uint32_t len);
/* Ends the record reserved last; `len` may shrink it to the bytes written.
 * A len larger than the reservation drops the record: false, counted in
 * bad_commits. */
bool chan_commit(struct chan_prod *p, uint32_t len);
/* Makes committed records visible and rings the doorbell if the consumer sleeps. */
void chan_publish(struct chan_prod *p);
/* Bytes free right now (after refreshing the cached tail). */
uint64_t chan_free_bytes(struct chan_prod *p);

/* ---- consumer fast path ------------------------------------------------ */

/* Returns the next record, or NULL when the ring is empty. PAD records are
 * skipped internally. The pointer stays valid until chan_consume(). */
const struct chan_rec *chan_peek(struct chan_cons *c);
/* Steps past the record chan_peek() returned. */
void chan_consume(struct chan_cons *c);
/* Publishes consumed space to the producer (batch: once per drain). */
void chan_release(struct chan_cons *c);
/*
 * Before blocking: sets the sleeping flag and re-checks. Returns true when the
 * ring is still empty and the caller may wait on its doorbell; false when data
 * arrived meanwhile (the flag is cleared again).
 */
bool chan_prepare_sleep(struct chan_cons *c);
void chan_cancel_sleep(struct chan_cons *c);

#endif
