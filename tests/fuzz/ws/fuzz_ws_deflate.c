/*
 * libFuzzer target for permessage-deflate: the inflate path and the offer
 * parser. Input: byte 0 picks the mode and the limits, byte 1 a split
 * point, the rest is data.
 *
 *   mode 0: the bytes are one compressed client message: inflating gives
 *           OK within the limit, TOO_BIG, BAD or NOMEM, never more than the
 *           limit; an OK result compresses (ws_deflate_message) and inflates
 *           back to itself.
 *   mode 1: the bytes are client frames to a session with the extension on
 *           (fed in two parts, the unconsumed rest offered again): every
 *           message delivered is within max_message and, when text, valid
 *           UTF-8; each echoed message goes out either plain or with RSV1,
 *           and then an independent zlib inflate gives back what the
 *           session delivered.
 *   mode 2: the bytes are a Sec-WebSocket-Extensions value: negotiation
 *           never reads past it and answers an accepted offer with a
 *           window of 9..15.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "ws/ws_deflate.h"
#include "ws/ws_session.h"

static struct ws_deflate *codec;

/* Inflates a server message with zlib alone; the length, or -1. */
static long ref_inflate(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
	z_stream z;
	uint8_t *buf = malloc(len + 4);
	if (!buf)
		abort();
	memcpy(buf, in, len);
	memcpy(buf + len, "\x00\x00\xff\xff", 4);
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -15) != Z_OK)
		abort();
	z.next_in = buf;
	z.avail_in = (uInt)(len + 4);
	z.next_out = out;
	z.avail_out = (uInt)cap;
	int rc = inflate(&z, Z_SYNC_FLUSH);
	long n = (rc == Z_OK || rc == Z_STREAM_END) && z.avail_in == 0 ? (long)(cap - z.avail_out) : -1;
	inflateEnd(&z);
	free(buf);
	return n;
}

static void mode_inflate(const uint8_t *data, size_t size, uint64_t max)
{
	uint8_t *copy = malloc(size ? size : 1);
	const uint8_t *out;
	size_t ol;
	if (!copy)
		abort();
	memcpy(copy, data, size);
	int r = ws_inflate_message(codec, copy, size, max, &out, &ol);
	free(copy);
	if (r != WS_INFLATE_OK) {
		if (r != WS_INFLATE_TOO_BIG && r != WS_INFLATE_BAD && r != WS_INFLATE_NOMEM)
			abort();
		return;
	}
	if (ol > max)
		abort();
	/* The way back is checked on what fits a token frame: deflating
	 * large outputs would cost most of the run for no new paths. */
	if (ol > 8192)
		return;
	uint8_t *plain = malloc(ol ? ol : 1);
	if (!plain)
		abort();
	memcpy(plain, out, ol);
	size_t zl;
	const uint8_t *z = ws_deflate_message(codec, 9 + (uint8_t)(size % 7), plain, ol, &zl);
	if (z) {
		uint8_t *zc = malloc(zl ? zl : 1);
		if (!zc)
			abort();
		memcpy(zc, z, zl);
		if (ws_inflate_message(codec, zc, zl, max, &out, &ol) != WS_INFLATE_OK ||
		    memcmp(out, plain, ol) != 0)
			abort();
		free(zc);
	}
	free(plain);
}

struct fz {
	struct ws_session s;
	uint64_t max;
	bool closed;
	uint8_t *last;    /* the last message delivered */
	size_t last_len;
	uint8_t *out;
	size_t out_len, out_cap;
};

static void fz_msg(void *arg, uint8_t opcode, const uint8_t *data, size_t len)
{
	struct fz *z = arg;
	if (z->closed || len > z->max || (opcode != WS_OP_TEXT && opcode != WS_OP_BINARY))
		abort();
	if (opcode == WS_OP_TEXT && ws_utf8_step(WS_UTF8_ACCEPT, data, len) != WS_UTF8_ACCEPT)
		abort();
	free(z->last);
	z->last = malloc(len ? len : 1);
	if (!z->last)
		abort();
	memcpy(z->last, data, len);
	z->last_len = len;
	size_t before = z->out_len;
	ws_session_send(&z->s, opcode, data, len);
	/* The echo just written: plain, or RSV1 and inflating to the message. */
	if (z->closed || z->out_len == before)
		return;
	const uint8_t *p = z->out + before;
	size_t avail = z->out_len - before;
	size_t h = (p[1] & 0x7f) == 126 ? 4 : (p[1] & 0x7f) == 127 ? 10 : 2;
	if (avail < h || (p[0] & 0x30) || (p[1] & 0x80))
		abort();
	if (!(p[0] & 0x40)) {
		if (avail - h != len || memcmp(p + h, data, len) != 0)
			abort();
		return;
	}
	uint8_t *back = malloc(len + 1);
	if (!back)
		abort();
	long n = ref_inflate(p + h, avail - h, back, len + 1);
	if (n != (long)len || memcmp(back, data, len) != 0)
		abort();
	free(back);
}

static bool fz_write(void *arg, const void *data, size_t len)
{
	struct fz *z = arg;
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

static void fz_closed(void *arg, uint16_t code)
{
	struct fz *z = arg;
	(void)code;
	if (z->closed)
		abort();
	z->closed = true;
}

static const struct ws_session_ops fz_ops = { fz_msg, fz_write, fz_closed };

static void mode_session(const uint8_t *data, size_t size, uint64_t max, size_t split)
{
	struct fz z;
	struct ws_pmd pmd = { .on = true, .server_bits = 15 };
	uint8_t pend[14];
	size_t plen = 0;
	memset(&z, 0, sizeof(z));
	z.max = max;
	ws_session_init(&z.s, &fz_ops, &z, max);
	ws_session_set_deflate(&z.s, codec, &pmd);
	split %= size + 1;
	for (int part = 0; part < 2; part++) {
		const uint8_t *src = part ? data + split : data;
		size_t chunk = part ? size - split : split;
		size_t n = plen + chunk;
		uint8_t *buf = malloc(n ? n : 1);
		if (!buf)
			abort();
		memcpy(buf, pend, plen);
		memcpy(buf + plen, src, chunk);
		size_t used = ws_session_input(&z.s, buf, n);
		if (used > n)
			abort();
		plen = n - used;
		if (plen >= sizeof(pend))
			abort();
		memcpy(pend, buf + used, plen);
		free(buf);
	}
	ws_session_free(&z.s);
	free(z.last);
	free(z.out);
}

static void mode_negotiate(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);
	char resp[WS_PMD_RESPONSE_MAX];
	struct ws_pmd p;
	if (!copy)
		abort();
	memcpy(copy, data, size);
	bool on = ws_pmd_negotiate(copy, size, 9 + (uint8_t)(size % 7), &p, resp);
	free(copy);
	if (on != p.on || (on && (p.server_bits < 9 || p.server_bits > 15 ||
				  strncmp(resp, "permessage-deflate", 18) != 0)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t limits[4] = { 125, 1000, 4096, 16384 };
	if (size < 2)
		return 0;
	if (!codec && !(codec = ws_deflate_create(1, 8, 16)))
		abort();
	uint8_t cfg = data[0];
	size_t split = data[1];
	data += 2;
	size -= 2;
	switch (cfg % 3) {
	case 0:
		mode_inflate(data, size, limits[(cfg >> 2) & 3]);
		break;
	case 1:
		mode_session(data, size, limits[(cfg >> 2) & 3], split);
		break;
	default:
		mode_negotiate(data, size);
		break;
	}
	return 0;
}
