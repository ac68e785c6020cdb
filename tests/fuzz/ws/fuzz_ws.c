/*
 * libFuzzer target for the WebSocket engine. Input: byte 0 picks the session
 * setup (message limit, app behaviour, write failures), byte 1 seeds the
 * split points, the rest is what the client sends. The ops check that text
 * messages are valid UTF-8, that nothing happens after on_closed, and the
 * output is checked to be well-formed server frames ending with at most one
 * close.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/ws_frame.h"
#include "ws/ws_session.h"

struct fz {
	struct ws_session s;
	uint64_t max_message;
	bool closed;
	uint16_t closed_code;
	bool echo;           /* send every message back */
	bool close_binary;   /* answer binary with a 1003 close, as the app does */
	int write_budget;    /* < 0: unlimited */
	uint8_t *out;
	size_t out_len, out_cap;
};

/* Independent of the DFA under test: decodes code points and range-checks them. */
static bool fz_utf8_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint32_t c = p[i];
		size_t k;
		uint32_t min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1;
			min = 0x80;
			c &= 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2;
			min = 0x800;
			c &= 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3;
			min = 0x10000;
			c &= 0x07;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
			c = c << 6 | (p[i + j] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

static void fz_on_message(void *arg, uint8_t opcode, const uint8_t *data, size_t len)
{
	struct fz *z = arg;
	if (z->closed || len > z->max_message)
		abort();
	if (opcode == WS_OP_TEXT) {
		if (!fz_utf8_valid(data, len))
			abort();
	} else if (opcode != WS_OP_BINARY) {
		abort();
	}
	if (z->echo)
		ws_session_send(&z->s, opcode, data, len);
	if (z->close_binary && opcode == WS_OP_BINARY && !z->closed)
		ws_session_close(&z->s, WS_CLOSE_UNSUPPORTED, "binary messages are not supported",
				 false);
}

static bool fz_write(void *arg, const void *data, size_t len)
{
	struct fz *z = arg;
	if (z->closed)
		abort();
	if (z->write_budget == 0)
		return false;
	if (z->write_budget > 0)
		z->write_budget--;
	if (z->out_len + len > z->out_cap) {
		size_t cap = (z->out_len + len) * 2;
		uint8_t *p = realloc(z->out, cap);
		if (!p)
			abort();
		z->out = p;
		z->out_cap = cap;
	}
	memcpy(z->out + z->out_len, data, len);
	z->out_len += len;
	return true;
}

static void fz_on_closed(void *arg, uint16_t code)
{
	struct fz *z = arg;
	if (z->closed)
		abort();
	z->closed = true;
	z->closed_code = code;
}

static const struct ws_session_ops fz_ops = {
	.on_message = fz_on_message,
	.write = fz_write,
	.on_closed = fz_on_closed,
};

/* Walks the server output: unmasked frames with no reserved bits, control
 * payloads <= 125, close payloads valid, nothing after the close. A write
 * refused midway may leave the last frame cut short. */
static void fz_check_output(const struct fz *z)
{
	size_t i = 0;
	bool close_seen = false;
	while (i < z->out_len) {
		if (close_seen)
			abort();
		const uint8_t *p = z->out + i;
		size_t avail = z->out_len - i;
		if (avail < 2)
			break;
		if ((p[0] & 0x70) || (p[1] & 0x80))
			abort();
		uint8_t op = p[0] & 0x0f;
		uint64_t n = p[1] & 0x7f;
		size_t h = 2;
		if (n == 126) {
			if (avail < 4)
				break;
			n = (uint64_t)p[2] << 8 | p[3];
			h = 4;
		} else if (n == 127) {
			if (avail < 10)
				break;
			n = 0;
			for (int k = 0; k < 8; k++)
				n = n << 8 | p[2 + k];
			h = 10;
		}
		if ((op & 0x08) && n > 125)
			abort();
		if (avail - h < n)
			break;
		if (op == WS_OP_CLOSE) {
			close_seen = true;
			uint16_t c = ws_close_payload_code(p + h, (size_t)n);
			if (c == 0 || c == WS_CLOSE_NO_STATUS)
				abort();
		}
		i += h + (size_t)n;
	}
}

/* The header parser gives INCOMPLETE for short prefixes and then one stable
 * answer for every longer one. */
static void fz_check_parser(const uint8_t *data, size_t len)
{
	int first = WS_PARSE_INCOMPLETE;
	uint16_t first_code = 0;
	size_t lim = len < 20 ? len : 20;
	for (size_t k = 0; k <= lim; k++) {
		struct ws_frame f;
		uint16_t code = 0;
		uint8_t *copy = malloc(k ? k : 1);
		if (!copy)
			abort();
		memcpy(copy, data, k);
		int r = ws_parse_frame(copy, k, 1000, &f, &code);
		free(copy);
		if (first == WS_PARSE_INCOMPLETE) {
			first = r;
			first_code = code;
			if (r > 0 && (size_t)r != k)
				abort();
		} else if (r != first || (r == WS_PARSE_ERROR && code != first_code)) {
			abort();
		}
		if (r == WS_PARSE_ERROR && code != WS_CLOSE_PROTOCOL && code != WS_CLOSE_TOO_BIG)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	static const uint64_t limits[4] = { 16, 125, 1000, 65536 };
	uint8_t cfg = data[0];
	uint32_t rng = data[1] * 2654435761u + 1;
	data += 2;
	size -= 2;
	fz_check_parser(data, size);

	struct fz z;
	memset(&z, 0, sizeof(z));
	z.max_message = limits[cfg & 3];
	z.echo = cfg & 0x04;
	z.close_binary = cfg & 0x08;
	z.write_budget = (cfg & 0x10) ? (cfg >> 5) : -1;
	ws_session_init(&z.s, &fz_ops, &z, z.max_message);

	/* The transport's side: unconsumed bytes (an incomplete header) are
	 * offered again with the next chunk, in an exact-size heap copy so ASan
	 * sees any read past the end. */
	uint8_t pend[14];
	size_t plen = 0, pos = 0;
	while (pos < size) {
		rng ^= rng << 13;
		rng ^= rng >> 17;
		rng ^= rng << 5;
		size_t chunk = (rng & 0x100) ? 1 + (rng & 7) : 1 + (rng & 0xff);
		if (chunk > size - pos)
			chunk = size - pos;
		size_t n = plen + chunk;
		uint8_t *buf = malloc(n);
		if (!buf)
			abort();
		memcpy(buf, pend, plen);
		memcpy(buf + plen, data + pos, chunk);
		pos += chunk;
		bool was_closed = z.closed;
		size_t used = ws_session_input(&z.s, buf, n);
		if (used > n || (was_closed && used != n) || (z.closed && used != n))
			abort();
		plen = n - used;
		if (plen >= sizeof(pend))
			abort();
		memcpy(pend, buf + used, plen);
		free(buf);
	}
	if (!z.closed && (cfg & 0xc0) == 0xc0)
		ws_session_close(&z.s, WS_CLOSE_GOING_AWAY, "bye", true);
	fz_check_output(&z);
	ws_session_free(&z.s);
	free(z.out);
	return 0;
}
