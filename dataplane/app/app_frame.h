/*
 * Token frames shared by every subscriber of a worker. A token event's bytes
 * depend only on its message, its seq range and the subscriber's variant
 * (SSE or WebSocket, creation stamps or not): the session id belongs to the
 * message and the SSE id is <message_id>:<last seq>. So the first subscriber
 * that needs a frame formats it (ids, numbers, escaping, the WebSocket
 * header) and the others copy the same bytes. Entries never go stale (a
 * message's token N is always the same token); a frame's slot follows from
 * its last seq and variant (direct-mapped): APP_FRAME_RUN consecutive seqs
 * in all four variants sit in different slots (the fan-out handles a TOKENS
 * record in runs that long, app_stream.c), and one variant's frames stay
 * whole up to APP_FRAME_SLOTS consecutive seqs; a lookup reads one slot. A
 * frame replaces whatever held its slot, and the slot's gen changes, so a
 * holder of a slot pointer (the fan-out's table of a run's frames) can tell
 * that it no longer holds its frame. Frames larger than APP_FRAME_MAX are
 * formatted per subscriber.
 *
 * Threading: one cache per worker (struct app), used on its thread only.
 */
#ifndef SLUICE_APP_FRAME_H
#define SLUICE_APP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sluice/chan_proto.h"
#include "transport/transport.h"

#define APP_FRAME_SLOTS 64u /* a power of two */
#define APP_FRAME_MAX 1024u
/* Consecutive seqs whose frames of every variant are kept side by side. */
#define APP_FRAME_RUN (APP_FRAME_SLOTS / 4u)

/* Variant bits of a frame. */
#define APP_FRAME_WS 1u     /* a WebSocket text frame, header included (else an SSE event) */
#define APP_FRAME_STAMPS 2u /* with "created_ns" (X-Sluice-Timing) */

struct app_frame_key {
	uint32_t first_seq, last_seq;
	uint8_t variant;
	char mid[CHAN_ID_LEN];
};

struct app_frame_slot {
	struct app_frame_key key;
	bool used;
	uint32_t gen; /* changes at every put into the slot */
	uint32_t len;
	/* What the transport learnt of the bytes (their checksum on the native
	 * stack): reset at every put. */
	struct tp_tx_hint hint;
	char bytes[APP_FRAME_MAX];
};

struct app_frame_cache {
	struct app_frame_slot slot[APP_FRAME_SLOTS];
};

static inline void app_frame_key_set(struct app_frame_key *k, uint8_t variant, const char *mid,
				     uint32_t first_seq, uint32_t last_seq)
{
	k->variant = variant;
	k->first_seq = first_seq;
	k->last_seq = last_seq;
	/* Ids are fixed arrays that may lack a NUL when full. */
	size_t n = strnlen(mid, CHAN_ID_LEN);
	memcpy(k->mid, mid, n);
	memset(k->mid + n, 0, CHAN_ID_LEN - n);
}

/* The cached frame for key, or NULL. */
struct app_frame_slot *app_frame_find(struct app_frame_cache *fc, const struct app_frame_key *key);
/* Keeps len bytes as the frame for key, replacing the frame in its slot;
 * returns the slot, or NULL when len > APP_FRAME_MAX (not kept). */
struct app_frame_slot *app_frame_put(struct app_frame_cache *fc, const struct app_frame_key *key,
				     const void *bytes, size_t len);

#endif
