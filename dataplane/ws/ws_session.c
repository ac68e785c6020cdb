/*
 * Per-connection RFC 6455 engine. Input is consumed frame header by frame
 * header; payload bytes go straight from the caller's buffer into the
 * reassembly buffer (data) or a control frame's 125-byte buffer as they
 * arrive, so a frame never has to be present whole.
 *
 * Reentrancy: ops may call ws_session_send / ws_session_close (and
 * ws_session_free from on_closed); the struct itself must stay valid until
 * the ws_session_* call that invoked the op returns.
 */
#include "ws/ws_session.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"

/* Smallest reassembly buffer; small messages then never cause a regrowth. */
#define WS_SESSION_MIN_CAP 4096

void ws_session_init(struct ws_session *s, const struct ws_session_ops *ops, void *arg,
		     uint32_t max_message)
{
	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->arg = arg;
	s->max_message = max_message < WS_SESSION_MAX_MESSAGE ? max_message : WS_SESSION_MAX_MESSAGE;
	s->state = WS_STATE_OPEN;
	s->utf8_state = WS_UTF8_ACCEPT;
}

void ws_session_set_deflate(struct ws_session *s, struct ws_deflate *codec, const struct ws_pmd *pmd)
{
	s->pmd_codec = codec;
	s->pmd = *pmd;
	if (!codec)
		s->pmd.on = false;
}

/* Leaves the session CLOSED, so input offered afterwards is ignored. */
void ws_session_free(struct ws_session *s)
{
	free(s->ctl);
	s->ctl = NULL;
	free(s->msg);
	s->msg = NULL;
	s->msg_len = 0;
	s->msg_cap = 0;
	s->state = WS_STATE_CLOSED;
}

static void ws_session_finish(struct ws_session *s, uint16_t code)
{
	s->state = WS_STATE_CLOSED;
	s->ops->on_closed(s->arg, code);
}

/* Sends one control frame (payload <= 125). A refused write ends the session
 * with 1011; returns false then. */
static bool ws_session_send_control(struct ws_session *s, uint8_t opcode, const uint8_t *payload,
				    size_t len)
{
	uint8_t frame[2 + 125];
	size_t h = ws_build_header(frame, true, opcode, len);
	if (len)
		memcpy(frame + h, payload, len);
	if (unlikely(!s->ops->write(s->arg, frame, h + len))) {
		ws_session_finish(s, WS_CLOSE_INTERNAL);
		return false;
	}
	return true;
}

/* Builds and queues a close frame; the caller decides the next state. */
static bool ws_session_send_close(struct ws_session *s, uint16_t code, const char *reason)
{
	uint8_t p[125];
	size_t rlen = reason ? strlen(reason) : 0;
	if (rlen > sizeof(p) - 2) {
		rlen = sizeof(p) - 2;
		/* Back off to a code-point boundary: the client must fail a close
		 * whose reason is not valid UTF-8. */
		while (rlen && ((uint8_t)reason[rlen] & 0xc0) == 0x80)
			rlen--;
	}
	p[0] = (uint8_t)(code >> 8);
	p[1] = (uint8_t)code;
	if (rlen)
		memcpy(p + 2, reason, rlen);
	return ws_session_send_control(s, WS_OP_CLOSE, p, 2 + rlen);
}

/* Fails the connection: close frame with code (unless one went out already),
 * then on_closed at once. */
static void ws_session_fail(struct ws_session *s, uint16_t code)
{
	if (s->state == WS_STATE_OPEN && !ws_session_send_close(s, code, NULL))
		return;
	ws_session_finish(s, code);
}

void ws_session_close(struct ws_session *s, uint16_t code, const char *reason, bool fail)
{
	if (s->state == WS_STATE_CLOSED)
		return;
	if (s->state == WS_STATE_OPEN) {
		if (!ws_session_send_close(s, code, reason))
			return;
		s->state = WS_STATE_CLOSE_SENT;
	}
	if (fail)
		ws_session_finish(s, code);
}

bool ws_session_send(struct ws_session *s, uint8_t opcode, const void *data, size_t len)
{
	if (s->state != WS_STATE_OPEN)
		return false;
	uint8_t h[10];
	size_t clen;
	const uint8_t *z = s->pmd.on ? ws_deflate_message(s->pmd_codec, s->pmd.server_bits, data, len, &clen)
				     : NULL;
	if (z) {
		data = z;
		len = clen;
	}
	size_t hl = ws_build_header(h, true, opcode, len);
	if (z)
		h[0] |= 0x40; /* RSV1: compressed (RFC 7692 6) */
	if (unlikely(!s->ops->write(s->arg, h, hl)) ||
	    (len && unlikely(!s->ops->write(s->arg, data, len)))) {
		ws_session_finish(s, WS_CLOSE_INTERNAL);
		return false;
	}
	return true;
}

/*
 * The most a message may take as it arrives: max_message, or for a
 * compressed one a little more, since deflate stores data it cannot shrink
 * in blocks with a few bytes of framing each (zlib's deflateBound is below
 * len + len/8 + 64). What it inflates to is held to max_message.
 */
static uint64_t ws_session_wire_max(const struct ws_session *s, bool deflated)
{
	uint64_t max = s->max_message;

	return deflated ? max + (max >> 3) + 64 : max;
}

void ws_session_release_idle(struct ws_session *s)
{
	if (s->msg_opcode != 0 || !s->msg)
		return;
	free(s->msg);
	s->msg = NULL;
	s->msg_cap = 0;
}

bool ws_session_send_frame(struct ws_session *s, const void *frame, size_t len)
{
	if (s->state != WS_STATE_OPEN)
		return false;
	if (unlikely(!s->ops->write(s->arg, frame, len))) {
		ws_session_finish(s, WS_CLOSE_INTERNAL);
		return false;
	}
	return true;
}

/* Makes room for `need` bytes of message. Grows geometrically up to
 * max_message so a message costs O(log n) reallocations. */
static bool ws_session_reserve(struct ws_session *s, size_t need)
{
	if (need <= s->msg_cap)
		return true;
	size_t cap = s->msg_cap ? s->msg_cap * 2 : WS_SESSION_MIN_CAP;
	if (cap > ws_session_wire_max(s, s->msg_deflated))
		cap = (size_t)ws_session_wire_max(s, s->msg_deflated);
	if (cap < need)
		cap = need;
	uint8_t *p = realloc(s->msg, cap);
	if (!p)
		return false;
	s->msg = p;
	s->msg_cap = (uint32_t)cap; /* at most ws_session_wire_max: < 1.2 GiB */
	return true;
}

/* Checks a just-parsed frame header against the message state. Returns 0 to
 * go on with its payload, or the close code to fail with. */
static uint16_t ws_session_begin_frame(struct ws_session *s)
{
	const struct ws_frame *f = &s->cur;
	if (f->opcode & 0x08) {
		/* The frame parser holds control payloads to 125 bytes. */
		if (f->payload_len && !s->ctl && !(s->ctl = malloc(125)))
			return WS_CLOSE_INTERNAL;
		return 0;
	}
	if (s->state != WS_STATE_OPEN)
		return 0; /* payload is discarded: we are closing */
	if (f->opcode == WS_OP_CONT) {
		if (s->msg_opcode == 0)
			return WS_CLOSE_PROTOCOL;
	} else {
		if (s->msg_opcode != 0)
			return WS_CLOSE_PROTOCOL;
		s->msg_opcode = f->opcode;
		s->msg_len = 0;
		s->utf8_state = WS_UTF8_ACCEPT;
		s->msg_deflated = f->rsv1;
	}
	if (f->payload_len > ws_session_wire_max(s, s->msg_deflated) - s->msg_len)
		return WS_CLOSE_TOO_BIG;
	if (!ws_session_reserve(s, s->msg_len + (size_t)f->payload_len))
		return WS_CLOSE_INTERNAL;
	return 0;
}

/* Takes n payload bytes of the current frame. Returns 0 or a close code. */
static uint16_t ws_session_payload(struct ws_session *s, const uint8_t *p, size_t n)
{
	const struct ws_frame *f = &s->cur;
	if (n == 0)
		return 0; /* an empty frame: msg may still be NULL */
	if (f->opcode & 0x08) {
		memcpy(s->ctl + s->cur_off, p, n);
		ws_unmask(s->ctl + s->cur_off, n, f->mask, s->cur_off);
		return 0;
	}
	if (s->state != WS_STATE_OPEN)
		return 0;
	uint8_t *dst = s->msg + s->msg_len;
	memcpy(dst, p, n);
	ws_unmask(dst, n, f->mask, s->cur_off);
	s->msg_len += n;
	/* A compressed text is checked once inflated. */
	if (s->msg_opcode == WS_OP_TEXT && !s->msg_deflated) {
		s->utf8_state = ws_utf8_step(s->utf8_state, dst, n);
		if (s->utf8_state == WS_UTF8_REJECT)
			return WS_CLOSE_BAD_DATA;
	}
	return 0;
}

/* Handles a control frame whose payload sits in ctl. */
static void ws_session_control(struct ws_session *s)
{
	size_t len = (size_t)s->cur.payload_len;
	switch (s->cur.opcode) {
	case WS_OP_PING:
		if (s->state == WS_STATE_OPEN)
			ws_session_send_control(s, WS_OP_PONG, s->ctl, len);
		break;
	case WS_OP_CLOSE: {
		uint16_t code = ws_close_payload_code(s->ctl, len);
		if (s->state == WS_STATE_CLOSE_SENT) {
			/* The handshake we started is complete; report the client's
			 * code (1002 when its payload was malformed). */
			ws_session_finish(s, code ? code : WS_CLOSE_PROTOCOL);
			break;
		}
		if (code == 0) {
			ws_session_fail(s, WS_CLOSE_PROTOCOL);
			break;
		}
		if (code == WS_CLOSE_NO_STATUS)
			code = WS_CLOSE_NORMAL;
		uint8_t p[2] = { (uint8_t)(code >> 8), (uint8_t)code };
		if (ws_session_send_control(s, WS_OP_CLOSE, p, sizeof(p)))
			ws_session_finish(s, code);
		break;
	}
	default:
		break; /* pong: unsolicited or not, nothing to do */
	}
}

/* The current frame's payload is complete. Returns 0 or a close code. */
static uint16_t ws_session_end_frame(struct ws_session *s)
{
	s->in_frame = false;
	if (s->cur.opcode & 0x08) {
		ws_session_control(s);
		/* on_closed may have freed the session (ctl NULL then). */
		free(s->ctl);
		s->ctl = NULL;
		return 0;
	}
	if (!s->cur.fin || s->state != WS_STATE_OPEN)
		return 0;
	if (s->msg_opcode == WS_OP_TEXT && !s->msg_deflated && s->utf8_state != WS_UTF8_ACCEPT)
		return WS_CLOSE_BAD_DATA;
	uint8_t opcode = s->msg_opcode;
	static const uint8_t empty[1];
	const uint8_t *data = s->msg ? s->msg : empty;
	size_t len = s->msg_len;
	s->msg_opcode = 0;
	s->msg_len = 0;
	if (s->msg_deflated) {
		s->msg_deflated = false;
		switch (ws_inflate_message(s->pmd_codec, data, len, s->max_message, &data, &len)) {
		case WS_INFLATE_OK:
			break;
		case WS_INFLATE_TOO_BIG:
			return WS_CLOSE_TOO_BIG;
		case WS_INFLATE_BAD:
			return WS_CLOSE_BAD_DATA;
		default:
			return WS_CLOSE_INTERNAL;
		}
		if (opcode == WS_OP_TEXT && ws_utf8_step(WS_UTF8_ACCEPT, data, len) != WS_UTF8_ACCEPT)
			return WS_CLOSE_BAD_DATA;
	}
	s->ops->on_message(s->arg, opcode, data, len);
	return 0;
}

size_t ws_session_input(struct ws_session *s, const uint8_t *data, size_t len)
{
	size_t pos = 0;
	uint16_t code;
	while (s->state != WS_STATE_CLOSED) {
		if (!s->in_frame) {
			if (pos == len)
				return pos;
			int r = ws_parse_frame_ext(data + pos, len - pos, ws_session_wire_max(s, s->pmd.on),
						   s->pmd.on, &s->cur, &code);
			if (r == WS_PARSE_INCOMPLETE)
				return pos;
			if (r == WS_PARSE_ERROR)
				goto fail;
			pos += (size_t)r;
			s->in_frame = true;
			s->cur_off = 0;
			code = ws_session_begin_frame(s);
			if (code)
				goto fail;
		}
		uint64_t left = s->cur.payload_len - s->cur_off;
		size_t n = len - pos < left ? len - pos : (size_t)left;
		code = ws_session_payload(s, data + pos, n);
		if (code)
			goto fail;
		pos += n;
		s->cur_off += n;
		if (s->cur_off < s->cur.payload_len)
			return pos;
		code = ws_session_end_frame(s);
		if (code)
			goto fail;
	}
	return len;

fail:
	ws_session_fail(s, code);
	return len;
}
