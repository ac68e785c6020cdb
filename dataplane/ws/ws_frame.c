/* RFC 6455 framing: header parsing and building, unmasking, UTF-8 validation,
 * the handshake accept key and close-payload validation. */
#include "ws/ws_frame.h"

#include <string.h>

#include "sluice/common.h"
#include "ws/sha1.h"

int ws_parse_frame(const uint8_t *buf, size_t len, uint64_t max_payload,
		   struct ws_frame *f, uint16_t *close_code)
{
	return ws_parse_frame_ext(buf, len, max_payload, false, f, close_code);
}

int ws_parse_frame_ext(const uint8_t *buf, size_t len, uint64_t max_payload, bool rsv1_ok,
		       struct ws_frame *f, uint16_t *close_code)
{
	if (len < 2)
		return WS_PARSE_INCOMPLETE;

	uint8_t b0 = buf[0], b1 = buf[1];
	uint8_t len7 = b1 & 0x7f;
	bool masked = (b1 & 0x80) != 0;
	size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
	size_t hlen = 2 + ext + (masked ? 4 : 0);
	if (len < hlen)
		return WS_PARSE_INCOMPLETE;

	uint8_t opcode = b0 & 0x0f;
	bool fin = (b0 & 0x80) != 0;
	bool control = (opcode & 0x08) != 0;
	bool rsv1 = (b0 & 0x40) != 0;
	if (unlikely(b0 & 0x30))
		goto protocol;
	if (unlikely(rsv1 && (!rsv1_ok || (opcode != WS_OP_TEXT && opcode != WS_OP_BINARY))))
		goto protocol;
	if (unlikely(opcode != WS_OP_CONT && opcode != WS_OP_TEXT && opcode != WS_OP_BINARY &&
		     opcode != WS_OP_CLOSE && opcode != WS_OP_PING && opcode != WS_OP_PONG))
		goto protocol;
	if (unlikely(!masked))
		goto protocol;
	if (unlikely(control && (!fin || len7 > 125)))
		goto protocol;

	uint64_t plen = len7;
	if (len7 == 126) {
		plen = (uint64_t)buf[2] << 8 | buf[3];
		if (plen < 126)
			goto protocol;
	} else if (len7 == 127) {
		plen = 0;
		for (int i = 0; i < 8; i++)
			plen = plen << 8 | buf[2 + i];
		if ((plen >> 63) || plen <= 0xffff)
			goto protocol;
	}
	if (unlikely(plen > max_payload)) {
		*close_code = WS_CLOSE_TOO_BIG;
		return WS_PARSE_ERROR;
	}

	f->fin = fin;
	f->rsv1 = rsv1;
	f->opcode = opcode;
	f->masked = masked;
	memcpy(f->mask, buf + 2 + ext, 4);
	f->payload_len = plen;
	f->header_len = hlen;
	return (int)hlen;

protocol:
	*close_code = WS_CLOSE_PROTOCOL;
	return WS_PARSE_ERROR;
}

/* Works a word at a time with the mask rotated to the piece's offset, so a
 * payload arriving in pieces costs the same as one arriving whole. */
void ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset)
{
	uint8_t m[8];
	for (size_t i = 0; i < 8; i++)
		m[i] = mask[(offset + i) & 3];
	uint64_t m64;
	memcpy(&m64, m, sizeof(m64));

	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, data + i, sizeof(v));
		v ^= m64;
		memcpy(data + i, &v, sizeof(v));
	}
	for (; i < len; i++)
		data[i] ^= m[i & 7];
}

size_t ws_build_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t payload_len)
{
	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (payload_len < 126) {
		out[1] = (uint8_t)payload_len;
		return 2;
	}
	if (payload_len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(payload_len >> 8);
		out[3] = (uint8_t)payload_len;
		return 4;
	}
	out[1] = 127;
	for (int i = 0; i < 8; i++)
		out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
	return 10;
}

/*
 * UTF-8 DFA. Each byte maps to a class; the state says how many continuation
 * bytes are still due and, right after E0/ED/F0/F4, which narrower range the
 * next one must fall in (that is what rules out overlongs, surrogates and code
 * points above U+10FFFF). REJECT is absorbing, so a caller may stop early.
 *
 * Classes: 0 00-7F, 1 80-8F, 2 90-9F, 3 A0-BF, 4 never valid (C0 C1 F5-FF),
 * 5 C2-DF, 6 E0, 7 E1-EC EE-EF, 8 ED, 9 F0, 10 F1-F3, 11 F4.
 * States: 0 accept, 1 reject, 2/3/4 need 1/2/3 continuations (80-BF),
 * 5 after E0 (A0-BF), 6 after ED (80-9F), 7 after F0 (90-BF), 8 after F4 (80-8F).
 */
static const uint8_t ws_utf8_class[256] = {
	/* 00 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 10 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 20 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 30 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 40 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 50 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 60 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 70 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 80 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	/* 90 */ 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	/* A0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
	/* B0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
	/* C0 */ 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	/* D0 */ 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	/* E0 */ 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7,
	/* F0 */ 9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

static const uint8_t ws_utf8_next[9][12] = {
	/*        00 80 90 A0 xx C2 E0 E1 ED F0 F1 F4 */
	/* 0 */ { 0, 1, 1, 1, 1, 2, 5, 3, 6, 7, 4, 8 },
	/* 1 */ { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
	/* 2 */ { 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 },
	/* 3 */ { 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1 },
	/* 4 */ { 1, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
	/* 5 */ { 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1 },
	/* 6 */ { 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
	/* 7 */ { 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
	/* 8 */ { 1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
};

/* Skips ASCII eight bytes at a time while between code points, since token
 * text is mostly ASCII; everything else goes through the DFA. */
uint32_t ws_utf8_step(uint32_t state, const uint8_t *data, size_t len)
{
	if (unlikely(state > 8))
		return WS_UTF8_REJECT; /* not a state this DFA hands out */
	size_t i = 0;
	while (i < len) {
		if (state == WS_UTF8_ACCEPT) {
			while (i + 8 <= len) {
				uint64_t v;
				memcpy(&v, data + i, sizeof(v));
				if (v & 0x8080808080808080ull)
					break;
				i += 8;
			}
			if (i == len)
				break;
		}
		state = ws_utf8_next[state][ws_utf8_class[data[i++]]];
		if (unlikely(state == WS_UTF8_REJECT))
			return WS_UTF8_REJECT;
	}
	return state;
}

static const char ws_b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void ws_accept_key(const char *key, size_t key_len, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	uint8_t d[SHA1_DIGEST_LEN];
	struct sha1_ctx c;
	sha1_init(&c);
	sha1_update(&c, key, key_len);
	sha1_update(&c, guid, sizeof(guid) - 1);
	sha1_final(&c, d);

	/* 20 bytes = six full 3-byte groups and a 2-byte tail: 27 chars + '='. */
	size_t o = 0;
	for (size_t i = 0; i < 18; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
		out[o++] = ws_b64_alphabet[(v >> 18) & 63];
		out[o++] = ws_b64_alphabet[(v >> 12) & 63];
		out[o++] = ws_b64_alphabet[(v >> 6) & 63];
		out[o++] = ws_b64_alphabet[v & 63];
	}
	uint32_t v = (uint32_t)d[18] << 16 | (uint32_t)d[19] << 8;
	out[o++] = ws_b64_alphabet[(v >> 18) & 63];
	out[o++] = ws_b64_alphabet[(v >> 12) & 63];
	out[o++] = ws_b64_alphabet[(v >> 6) & 63];
	out[o++] = '=';
	out[o] = '\0';
}

uint16_t ws_close_payload_code(const uint8_t *payload, size_t len)
{
	if (len == 0)
		return WS_CLOSE_NO_STATUS;
	if (len == 1 || len > 125)
		return 0;
	uint16_t code = (uint16_t)(payload[0] << 8 | payload[1]);
	/* 1012-1014 are registered with IANA (service restart, try again
	 * later, bad gateway); sluice itself sends 1013 under overload. */
	bool ok = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
		  (code >= 3000 && code <= 4999);
	if (!ok)
		return 0;
	if (ws_utf8_step(WS_UTF8_ACCEPT, payload + 2, len - 2) != WS_UTF8_ACCEPT)
		return 0;
	return code;
}
