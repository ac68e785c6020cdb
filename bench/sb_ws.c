/* The WebSocket client framing (see sb_ws.h). */
#include "sb_ws.h"

#include <string.h>

void sb_ws_init(struct sb_ws *w, uint64_t seed)
{
	memset(w, 0, sizeof(*w));
	w->mask_state = seed | 1u;
}

void sb_ws_free(struct sb_ws *w)
{
	sb_carry_free(&w->carry);
}

int sb_ws_header(const uint8_t *p, size_t len, uint8_t *opcode, uint64_t *plen)
{
	size_t h = 2;
	uint64_t n;

	if (len < 2)
		return 0;
	if (p[1] & 0x80)
		return -1; /* servers never mask */
	n = p[1] & 0x7f;
	if (n == 126) {
		h = 4;
		if (len < h)
			return 0;
		n = ((uint64_t)p[2] << 8) | p[3];
	} else if (n == 127) {
		h = 10;
		if (len < h)
			return 0;
		n = 0;
		for (int i = 2; i < 10; i++)
			n = (n << 8) | p[i];
	}
	if (n > SB_WS_FRAME_MAX)
		return -1;
	*opcode = p[0] & 0x0f;
	*plen = n;
	return (int)h;
}

/* Frame size of the frame at p once its header is complete, else 0; -1 bad. */
static int64_t frame_size(const uint8_t *p, size_t len)
{
	uint8_t op;
	uint64_t n;
	int h = sb_ws_header(p, len, &op, &n);

	if (h <= 0)
		return h;
	return (int64_t)h + (int64_t)n;
}

static void deliver(const uint8_t *p, size_t len, sb_ws_frame_fn fn, void *arg)
{
	uint8_t op;
	uint64_t n;
	int h = sb_ws_header(p, len, &op, &n);

	fn(arg, op, p + h, (size_t)n);
}

bool sb_ws_feed(struct sb_ws *w, const uint8_t *data, size_t len, sb_ws_frame_fn fn, void *arg)
{
	const uint8_t *p = data, *end = data + len;
	int64_t fs;

	/* A cut frame first: top the carry up to its header, then to its end. */
	while (w->carry.len) {
		size_t have = w->carry.len, want, take;

		fs = frame_size((const uint8_t *)w->carry.p, have);
		if (fs < 0)
			return false;
		want = fs ? (size_t)fs - have : (have < 2 ? 2 - have : 10 - have);
		take = want < (size_t)(end - p) ? want : (size_t)(end - p);
		if (take == 0)
			return true;
		if (!sb_carry_put(&w->carry, p, take, SB_WS_FRAME_MAX + 14u))
			return false;
		p += take;
		fs = frame_size((const uint8_t *)w->carry.p, w->carry.len);
		if (fs < 0)
			return false;
		if (fs && (size_t)fs == w->carry.len) {
			deliver((const uint8_t *)w->carry.p, w->carry.len, fn, arg);
			sb_carry_clear(&w->carry);
		} else if (p == end) {
			return true;
		}
	}
	while (p < end) {
		fs = frame_size(p, (size_t)(end - p));
		if (fs < 0)
			return false;
		if (fs == 0 || fs > end - p)
			return sb_carry_put(&w->carry, p, (size_t)(end - p), SB_WS_FRAME_MAX + 14u);
		deliver(p, (size_t)fs, fn, arg);
		p += fs;
	}
	return true;
}

size_t sb_ws_build(struct sb_ws *w, uint8_t *out, uint8_t opcode, const void *payload, size_t len)
{
	size_t h = 2;
	uint64_t x = w->mask_state;
	uint8_t key[4];

	out[0] = (uint8_t)(0x80 | opcode);
	if (len < 126) {
		out[1] = (uint8_t)(0x80 | len);
	} else if (len <= 0xffff) {
		out[1] = 0x80 | 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		h = 4;
	} else {
		out[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
		h = 10;
	}
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	w->mask_state = x;
	memcpy(key, &x, 4);
	memcpy(out + h, key, 4);
	h += 4;
	for (size_t i = 0; i < len; i++)
		out[h + i] = ((const uint8_t *)payload)[i] ^ key[i & 3];
	return h + len;
}
