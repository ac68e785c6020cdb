/*
 * impair_core: the socket-free half of the impairment bridge (tests/tools/impair).
 *
 * One struct imp_dir per direction decides, with its own seeded PRNG, what
 * happens to each frame (lost, corrupted, duplicated, held back for
 * reordering) and keeps the survivors in a bounded FIFO with a due time each.
 * The FIFO is allocated once; frames are copied into its slots, so the
 * per-frame path never allocates. Kept apart from the sockets so unit tests
 * drive it with crafted frames and a virtual clock.
 */
#ifndef SLUICE_TESTS_IMPAIR_CORE_H
#define SLUICE_TESTS_IMPAIR_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMP_ETH_HLEN 14u
#define IMP_HELD_MAX 16u        /* frames one direction may hold back at once */
#define IMP_MAX_MS 60000u       /* bound for --delay, --jitter, --reorder-hold */
#define IMP_MAX_GAP 64u         /* bound for --reorder-gap */
#define IMP_MAX_QUEUE 65536u    /* bound for --queue */

/* xoshiro256** seeded through splitmix64: small, fast and the same stream on
 * every machine for a given seed. */
struct imp_rng {
	uint64_t s[4];
};

void imp_rng_seed(struct imp_rng *r, uint64_t seed);
uint64_t imp_rng_next(struct imp_rng *r);
/* A uniform value in [0, n); n > 0. */
uint64_t imp_rng_below(struct imp_rng *r, uint64_t n);
/* True with probability pct percent (0 never draws, so a disabled
 * impairment does not shift the stream of the others). */
bool imp_rng_chance(struct imp_rng *r, double pct);

/* Impairments of one direction. Percentages are in [0, 100]. */
struct imp_params {
	double loss;
	double reorder;
	double dup;
	double corrupt;
	uint32_t delay_ms;
	uint32_t jitter_ms;
	uint32_t reorder_gap;     /* a held frame leaves after 1..reorder_gap later frames */
	uint32_t reorder_hold_ms; /* ... or after this long when no frame follows */
};

struct imp_counters {
	uint64_t rx, rx_bytes;    /* frames read from the input interface */
	uint64_t tx, tx_bytes;    /* frames written to the output interface */
	uint64_t lost;            /* dropped by --loss */
	uint64_t dup;             /* extra copies made by --dup */
	uint64_t reordered;       /* frames held back by --reorder */
	uint64_t corrupted;       /* frames with one byte flipped by --corrupt */
	uint64_t qdrop;           /* dropped because the delay queue was full */
	uint64_t oversize;        /* dropped because larger than a slot */
	uint64_t txdrop;          /* dropped by the output device or socket */
};

struct imp_held {
	uint32_t len;
	uint32_t gap;             /* later frames still to pass before release */
	uint64_t deadline_ns;     /* release time when traffic stops */
	uint8_t *data;
};

/* One direction. Owns mem (slots and held buffers); imp_dir_free releases it. */
struct imp_dir {
	struct imp_params p;
	struct imp_rng rng;
	struct imp_counters c;
	uint32_t slot_size;       /* largest frame accepted */
	uint32_t cap;             /* FIFO slots, a power of two */
	uint32_t head, tail;      /* free-running indices */
	uint64_t last_due_ns;     /* due times never decrease: the FIFO stays ordered */
	uint64_t *due_ns;
	uint32_t *len;
	uint8_t *mem;
	struct imp_held held[IMP_HELD_MAX];
	uint32_t nheld;
};

/* Allocates a FIFO of at least queue slots of slot_size bytes. 0 or -1 (ENOMEM/EINVAL). */
int imp_dir_init(struct imp_dir *d, const struct imp_params *p, uint64_t seed,
                 uint32_t queue, uint32_t slot_size);
void imp_dir_free(struct imp_dir *d);

/* Runs one received frame through the impairments at time now_ns. The frame
 * is copied into the queue; a corrupted byte is flipped in the caller's
 * buffer first (its receive scratch), so copies of it are corrupted alike. */
void imp_dir_input(struct imp_dir *d, uint8_t *frame, uint32_t len, uint64_t now_ns);

/* Releases held frames whose hold time ran out. */
void imp_dir_tick(struct imp_dir *d, uint64_t now_ns);

/* The oldest queued frame if it is due at now_ns (its bytes stay valid until
 * imp_dir_pop), or NULL. */
const uint8_t *imp_dir_peek(const struct imp_dir *d, uint64_t now_ns, uint32_t *len);
void imp_dir_pop(struct imp_dir *d);

/* Frames queued plus frames held back. */
uint32_t imp_dir_pending(const struct imp_dir *d);

/* The earliest time something is due (a queued frame or a hold deadline), or
 * UINT64_MAX when the direction is idle. */
uint64_t imp_dir_next_ns(const struct imp_dir *d);

/* Command line: interfaces, per-direction parameters ([0] A->B, [1] B->A). */
struct imp_opts {
	const char *ifname[2];
	struct imp_params p[2];
	uint64_t seed;
	uint32_t duration_s;      /* 0 = until SIGINT/SIGTERM */
	uint32_t queue;           /* FIFO slots per direction */
};

/* Parses argv into o. Returns 0, 1 for --help (usage wanted), or -1 with a
 * message in err. */
int imp_parse_args(int argc, char **argv, struct imp_opts *o, char *err, size_t errlen);

/* Formats one direction's counters as "key=value ..." into buf; returns the
 * length or -1 when buf is too small. */
int imp_format_counters(char *buf, size_t cap, const char *label, const struct imp_counters *c);

#endif
