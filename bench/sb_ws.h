/*
 * The client side of RFC 6455 for sluice-bench: reads server frames (never
 * masked) in any split and hands out each complete text/binary/close frame;
 * builds masked client frames. Fragmented messages are handed out frame by
 * frame (none of the measured servers fragments token messages). No
 * allocation per frame: frames are handed out from the caller's buffer, only
 * a frame cut by a read is copied (sb_carry).
 */
#ifndef SB_WS_H
#define SB_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sb_carry.h"

#define SB_WS_FRAME_MAX (1024u * 1024u)

struct sb_ws {
	struct sb_carry carry;
	uint64_t mask_state; /* xorshift state for client masking keys */
};

/* A complete frame: opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong). */
typedef void (*sb_ws_frame_fn)(void *arg, uint8_t opcode, const uint8_t *payload, size_t len);

void sb_ws_init(struct sb_ws *w, uint64_t seed);
void sb_ws_free(struct sb_ws *w);
/* Feeds bytes; false on a protocol error (masked or oversized frame). */
bool sb_ws_feed(struct sb_ws *w, const uint8_t *data, size_t len, sb_ws_frame_fn fn, void *arg);
/* Parses one frame header at p[0..len): returns header bytes and fills the
 * opcode and payload length, 0 when incomplete, -1 when invalid. */
int sb_ws_header(const uint8_t *p, size_t len, uint8_t *opcode, uint64_t *plen);
/* Writes a masked FIN frame into out (len + 14 bytes at most); returns its size. */
size_t sb_ws_build(struct sb_ws *w, uint8_t *out, uint8_t opcode, const void *payload, size_t len);

#endif
