/*
 * The RFC 6455 protocol engine for one server-side connection, independent of
 * the transport: it takes raw bytes from the client (any split), reassembles
 * fragmented messages, validates UTF-8 of text messages incrementally, answers
 * pings, runs the close handshake, and fails the connection with the right
 * close code. The app layer embeds one in each WebSocket connection.
 *
 * Memory: the reassembly buffer is allocated when a data message starts and
 * grows up to max_message; it is reused by the messages that follow and
 * released by ws_session_release_idle() (between messages) or
 * ws_session_free(). Control-frame payloads use a fixed 125-byte buffer.
 */
#ifndef SLUICE_WS_SESSION_H
#define SLUICE_WS_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"

struct ws_session_ops {
	/* A complete message: text (already UTF-8 valid) or binary. `data` is
	 * valid only during the call. */
	void (*on_message)(void *arg, uint8_t opcode, const uint8_t *data, size_t len);
	/* Queue bytes for the client. Returns false when they cannot be queued
	 * (the session then stops and reports close code 1011). */
	bool (*write)(void *arg, const void *data, size_t len);
	/* The session is over: the close handshake finished, or the session
	 * failed the connection (a close frame with `code` was queued). The app
	 * closes the TCP connection gracefully now; no more calls follow. */
	void (*on_closed)(void *arg, uint16_t code);
};

enum ws_session_state {
	WS_STATE_OPEN = 0,
	WS_STATE_CLOSE_SENT = 1, /* we sent close, waiting for the client's */
	WS_STATE_CLOSED = 2,
};

/* The largest max_message a session takes (ws_session_init clamps to it;
 * the configuration's ws_max_message is at most 64 MiB): a message's
 * compressed form, an eighth more, then still fits the 32-bit lengths. */
#define WS_SESSION_MAX_MESSAGE (1u << 30)


struct ws_session {
	const struct ws_session_ops *ops;
	void *arg;
	uint32_t max_message;
	uint8_t state;
	uint8_t msg_opcode;    /* TEXT/BINARY of the message being reassembled, 0 when none */
	bool in_frame;         /* a frame header was parsed, payload still arriving */
	bool msg_deflated;     /* the message being reassembled is compressed */
	/* permessage-deflate: the worker's codec (not owned, below) and what
	 * was negotiated. */
	struct ws_pmd pmd;
	uint8_t utf8_state;    /* ws_utf8_step's DFA state (0..8) */
	uint32_t msg_len;      /* reassembled so far */
	struct ws_frame cur;   /* header of the frame being received */
	uint64_t cur_off;      /* payload bytes of cur consumed so far */
	uint8_t *msg;          /* reassembly buffer, msg_cap bytes */
	uint32_t msg_cap;
	struct ws_deflate *pmd_codec;
	/* A control frame's payload (<= 125 bytes) while it arrives: malloc'd
	 * at the frame's start and freed at its end, so a parked session holds
	 * no buffer at all. */
	uint8_t *ctl;
};

void ws_session_init(struct ws_session *s, const struct ws_session_ops *ops, void *arg,
		     uint32_t max_message);
void ws_session_free(struct ws_session *s);
/* Turns permessage-deflate on (before the first input): messages are
 * compressed with the worker's codec, and compressed client messages are
 * accepted (their compressed form may exceed max_message by the framing of
 * data deflate cannot shrink, an eighth at most) and inflated at most to
 * max_message. */
void ws_session_set_deflate(struct ws_session *s, struct ws_deflate *codec, const struct ws_pmd *pmd);

/* Feeds client bytes; returns how many were consumed (all of them, except an
 * incomplete frame header, which the caller offers again with more bytes).
 * Calls ops as events complete. After on_closed, consumes and ignores input. */
size_t ws_session_input(struct ws_session *s, const uint8_t *data, size_t len);

/* Gives the reassembly buffer back unless a message is half received: the
 * app calls it when the bytes at hand are consumed, so a parked subscriber
 * holds no buffer while a burst of messages in one read reuses one. */
void ws_session_release_idle(struct ws_session *s);

/* Starts the server-side close: queues a close frame with code and reason
 * (truncated to fit 123 bytes on a UTF-8 boundary). on_closed follows when
 * the client answers, or at once when `fail` (protocol failure: don't wait). */
void ws_session_close(struct ws_session *s, uint16_t code, const char *reason, bool fail);

/* Queues one unfragmented message. Returns false when write() refused. */
bool ws_session_send(struct ws_session *s, uint8_t opcode, const void *data, size_t len);
/* Queues a message the caller framed already (ws_build_header + payload),
 * e.g. one frame copied to many sessions; same result as ws_session_send. */
bool ws_session_send_frame(struct ws_session *s, const void *frame, size_t len);

#endif
