/*
 * Test helpers for the WebSocket tests: builds client frames (masked unless
 * told otherwise) the way a browser would, independently of the code under
 * test, so a shared bug in ws_build_header/ws_unmask cannot hide itself.
 */
#ifndef SLUICE_TEST_WS_TEST_H
#define SLUICE_TEST_WS_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Writes a client frame into out (room for len + 14 bytes); returns its
 * size. mask == NULL builds an unmasked frame. `rsv` is OR-ed into byte 0. */
static inline size_t wst_frame_ex(uint8_t *out, bool fin, uint8_t rsv, uint8_t opcode,
				  const void *payload, size_t len, const uint8_t *mask)
{
	size_t o = 0;
	out[o++] = (uint8_t)((fin ? 0x80 : 0) | rsv | opcode);
	uint8_t mbit = mask ? 0x80 : 0;
	if (len < 126) {
		out[o++] = (uint8_t)(mbit | len);
	} else if (len < 65536) {
		out[o++] = (uint8_t)(mbit | 126);
		out[o++] = (uint8_t)(len >> 8);
		out[o++] = (uint8_t)len;
	} else {
		out[o++] = (uint8_t)(mbit | 127);
		for (int i = 7; i >= 0; i--)
			out[o++] = (uint8_t)((uint64_t)len >> (8 * i));
	}
	if (mask) {
		memcpy(out + o, mask, 4);
		o += 4;
	}
	const uint8_t *p = payload;
	for (size_t i = 0; i < len; i++)
		out[o + i] = mask ? (uint8_t)(p[i] ^ mask[i % 4]) : p[i];
	return o + len;
}

/* A masked client frame with a mask that varies with the payload length, so
 * consecutive frames in one test use different masks. */
static inline size_t wst_frame(uint8_t *out, bool fin, uint8_t opcode, const void *payload,
			       size_t len)
{
	uint8_t mask[4] = { (uint8_t)(0x37 + len), 0xfa, 0x21, (uint8_t)(0x3d ^ len) };
	return wst_frame_ex(out, fin, 0, opcode, payload, len, mask);
}

#endif
