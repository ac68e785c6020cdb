/*
 * RFC 6455 framing, server side: a frame-header parser in the same shape as
 * the HTTP parser (no state, done / need more / error on any split of input),
 * payload unmasking, frame-header building, and the helpers of the handshake.
 */
#ifndef SLUICE_WS_FRAME_H
#define SLUICE_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};

enum ws_close_code {
	WS_CLOSE_NORMAL = 1000,
	WS_CLOSE_GOING_AWAY = 1001,
	WS_CLOSE_PROTOCOL = 1002,
	WS_CLOSE_UNSUPPORTED = 1003,
	WS_CLOSE_NO_STATUS = 1005, /* never sent on the wire */
	WS_CLOSE_ABNORMAL = 1006,  /* never sent on the wire */
	WS_CLOSE_BAD_DATA = 1007,
	WS_CLOSE_POLICY = 1008,
	WS_CLOSE_TOO_BIG = 1009,
	WS_CLOSE_INTERNAL = 1011,
	WS_CLOSE_TRY_AGAIN = 1013,
};

struct ws_frame {
	bool fin;
	bool rsv1;        /* permessage-deflate: the message is compressed */
	uint8_t opcode;
	bool masked;
	uint8_t mask[4];
	uint64_t payload_len;
	size_t header_len;
};

#define WS_PARSE_INCOMPLETE 0
#define WS_PARSE_ERROR (-1)

/*
 * Parses a client frame header at buf[0..len). Returns header length (> 0)
 * when the header is complete, WS_PARSE_INCOMPLETE, or WS_PARSE_ERROR with
 * *close_code set: 1002 for reserved bits, unknown opcodes, an unmasked
 * frame, a fragmented or oversized (>125) control frame, a non-minimal length
 * encoding or a 64-bit length with the top bit set; 1009 when payload_len
 * exceeds max_payload.
 */
int ws_parse_frame(const uint8_t *buf, size_t len, uint64_t max_payload,
		   struct ws_frame *f, uint16_t *close_code);
/* The same, where permessage-deflate was negotiated (rsv1_ok): RSV1 is then
 * allowed on the first frame of a data message (TEXT or BINARY), never on
 * a continuation or a control frame (RFC 7692 6.1). */
int ws_parse_frame_ext(const uint8_t *buf, size_t len, uint64_t max_payload, bool rsv1_ok,
		       struct ws_frame *f, uint16_t *close_code);

/* XORs data with the mask; `offset` is the payload offset of data[0], so a
 * payload may be unmasked in pieces. */
void ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset);

/* Writes an unmasked server frame header into out (>= 10 bytes); returns its length. */
size_t ws_build_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t payload_len);

/* Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF). Start with state WS_UTF8_ACCEPT. */
#define WS_UTF8_ACCEPT 0u
#define WS_UTF8_REJECT 1u
uint32_t ws_utf8_step(uint32_t state, const uint8_t *data, size_t len);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)),
 * written NUL-terminated into out (>= 29 bytes). */
void ws_accept_key(const char *key, size_t key_len, char out[29]);

/* Validates a close frame payload: empty, or a valid code (1000-1003,
 * 1007-1014, 3000-4999) plus UTF-8 reason. Returns the code (1005 when
 * empty) or 0 when invalid. */
uint16_t ws_close_payload_code(const uint8_t *payload, size_t len);

#endif
