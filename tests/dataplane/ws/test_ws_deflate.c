/*
 * permessage-deflate (RFC 7692): offer negotiation, the worker codec, and
 * the session engine with the extension on: client messages compressed by
 * zlib here (independently of the code under test), whole, fragmented and
 * fed byte by byte; RSV1 where it is not allowed; compression bombs;
 * invalid data; outgoing messages that a plain zlib inflate reads back.
 * The behaviours of Autobahn|Testsuite groups 12 (messages of many sizes
 * through the extension) and 13 (offers with every window size and
 * context-takeover parameter) are covered here and in integration_ws_deflate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "sluice/common.h"
#include "ws/ws_deflate.h"
#include "ws/ws_session.h"
#include "ws_test.h"

/* ---- negotiation --------------------------------------------------------------- */

struct offer_case {
	const char *offer;
	bool on;
	uint8_t bits;
	const char *resp;
};

#define BASE "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

static const struct offer_case offers[] = {
	{ "permessage-deflate", true, 15, BASE },
	{ "permessage-deflate; client_max_window_bits", true, 15, BASE },
	{ "permessage-deflate; client_max_window_bits=10", true, 15, BASE },
	{ "permessage-deflate; client_no_context_takeover", true, 15, BASE },
	{ "permessage-deflate; server_no_context_takeover", true, 15, BASE },
	{ "permessage-deflate;server_max_window_bits=10", true, 10, BASE "; server_max_window_bits=10" },
	{ "permessage-deflate; server_max_window_bits=\"12\"", true, 12, BASE "; server_max_window_bits=12" },
	{ "permessage-deflate; server_max_window_bits=9", true, 9, BASE "; server_max_window_bits=9" },
	{ "permessage-deflate; server_max_window_bits=15", true, 15, BASE "; server_max_window_bits=15" },
	{ "permessage-deflate; server_max_window_bits=8", false, 0, "" },
	{ "permessage-deflate; server_max_window_bits=8, permessage-deflate", true, 15, BASE },
	{ "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits", true, 15, BASE },
	{ "permessage-deflate; server_max_window_bits=16", false, 0, "" },
	{ "permessage-deflate; server_max_window_bits", false, 0, "" },
	{ "permessage-deflate; server_max_window_bits=010", false, 0, "" },
	{ "permessage-deflate; client_max_window_bits=7", false, 0, "" },
	{ "permessage-deflate; unknown_param", false, 0, "" },
	{ "permessage-deflate; server_no_context_takeover; server_no_context_takeover", false, 0, "" },
	{ "permessage-deflate; server_no_context_takeover=1", false, 0, "" },
	{ "permessage-deflate; x=\"a,b\", permessage-deflate; server_max_window_bits=11", true, 11,
	  BASE "; server_max_window_bits=11" },
	{ "permessage-deflate;; ", false, 0, "" },
	{ "", false, 0, "" },
	{ "deflate-stream", false, 0, "" },
};

static void test_negotiation(void **state)
{
	(void)state;
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(offers); i++) {
		const struct offer_case *c = &offers[i];
		struct ws_pmd p;
		char resp[WS_PMD_RESPONSE_MAX];
		bool on = ws_pmd_negotiate(c->offer, strlen(c->offer), 15, &p, resp);
		if (on != c->on || p.on != c->on || (on && (p.server_bits != c->bits ||
							     strcmp(resp, c->resp) != 0)))
			fail_msg("offer '%s': on %d bits %u resp '%s', want on %d bits %u '%s'", c->offer,
				 on, p.server_bits, resp, c->on, c->bits, c->resp);
	}
	/* A smaller window of our own is announced even when not asked for. */
	struct ws_pmd p;
	char resp[WS_PMD_RESPONSE_MAX];
	assert_true(ws_pmd_negotiate("permessage-deflate", 18, 10, &p, resp));
	assert_string_equal(resp, BASE "; server_max_window_bits=10");
	assert_true(ws_pmd_negotiate("permessage-deflate; server_max_window_bits=12", 45, 10, &p, resp));
	assert_int_equal(p.server_bits, 10);
}

/* ---- the codec ---------------------------------------------------------------- */

/* A client's compressor: raw deflate, sync flush, tail removed. */
static size_t client_deflate(const void *in, size_t len, uint8_t *out, size_t cap, int bits, bool final)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, final ? Z_FINISH : Z_SYNC_FLUSH), final ? Z_STREAM_END : Z_OK);
	size_t n = cap - z.avail_out;
	deflateEnd(&z);
	if (!final) {
		assert_true(n >= 4);
		assert_memory_equal(out + n - 4, "\x00\x00\xff\xff", 4);
		n -= 4;
	}
	return n;
}

/* A client's decompressor of one server message. */
static size_t client_inflate(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
	z_stream z;
	uint8_t *buf = malloc(len + 4);
	assert_non_null(buf);
	memcpy(buf, in, len);
	memcpy(buf + len, "\x00\x00\xff\xff", 4);
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, -15), Z_OK);
	z.next_in = buf;
	z.avail_in = (uInt)(len + 4);
	z.next_out = out;
	z.avail_out = (uInt)cap;
	int rc = inflate(&z, Z_SYNC_FLUSH);
	assert_true(rc == Z_OK || rc == Z_STREAM_END);
	size_t n = cap - z.avail_out;
	inflateEnd(&z);
	free(buf);
	return n;
}

static void fill_text(uint8_t *p, size_t n, unsigned seed)
{
	static const char words[] = "token stream of words with some repetition ";
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)words[(i * 7 + seed + i / 13) % (sizeof(words) - 1)];
}

/* Messages of every size from 1 byte to 256 KiB survive both directions
 * (Autobahn 12.x: payload sizes 16 .. 262144, every window size). */
static void test_codec_round_trip(void **state)
{
	(void)state;
	struct ws_deflate *d = ws_deflate_create(1, 8, 16);
	static uint8_t msg[262144], z[300000], back[262144];
	assert_non_null(d);
	for (int bits = 9; bits <= 15; bits++) {
		for (size_t len = 1; len <= sizeof(msg); len *= 4) {
			fill_text(msg, len, (unsigned)bits);
			size_t zl = 0;
			const uint8_t *c = ws_deflate_message(d, (uint8_t)bits, msg, len, &zl);
			/* Too short to compress, or (16 .. 256 bytes) maybe not
			 * worth it: then it goes plain. */
			if (len < 16)
				assert_null(c);
			if (len >= 1024)
				assert_non_null(c);
			if (c) {
				assert_true(zl < len);
				memcpy(z, c, zl);
				assert_int_equal(client_inflate(z, zl, back, sizeof(back)), len);
				assert_memory_equal(back, msg, len);
			}
			/* ... and the client's way back. */
			size_t cl = client_deflate(msg, len, z, sizeof(z), bits, false);
			const uint8_t *out;
			size_t ol;
			assert_int_equal(ws_inflate_message(d, z, cl, sizeof(msg), &out, &ol), WS_INFLATE_OK);
			assert_int_equal(ol, len);
			assert_memory_equal(out, msg, len);
		}
	}
	/* Incompressible data goes out as it is. */
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < 4096; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		msg[i] = (uint8_t)(x >> 32);
	}
	size_t zl;
	assert_null(ws_deflate_message(d, 15, msg, 4096, &zl));
	struct ws_deflate_stats st;
	ws_deflate_get_stats(d, &st);
	assert_true(st.messages_out > 0 && st.skipped > 0 && st.bytes_out < st.bytes_in);
	assert_true(st.mem > 0);
	ws_deflate_destroy(d);
}

/* A bomb: 10 MB of zeros compress to ~10 KB; with max 64 KiB inflating
 * stops right past the limit. A final block (BFINAL) is fine; garbage is
 * refused. */
static void test_codec_limits(void **state)
{
	(void)state;
	struct ws_deflate *d = ws_deflate_create(1, 8, 16);
	size_t big = 10u << 20;
	uint8_t *zeros = calloc(1, big);
	uint8_t *z = malloc(big);
	const uint8_t *out;
	size_t ol;
	assert_non_null(zeros);
	assert_non_null(z);
	size_t zl = client_deflate(zeros, big, z, big, 15, false);
	assert_true(zl < 20000);
	assert_int_equal(ws_inflate_message(d, z, zl, 65536, &out, &ol), WS_INFLATE_TOO_BIG);
	zl = client_deflate(zeros, 65536, z, big, 15, false);
	assert_int_equal(ws_inflate_message(d, z, zl, 65536, &out, &ol), WS_INFLATE_OK);
	assert_int_equal(ol, 65536);
	zl = client_deflate("final block", 11, z, big, 15, true);
	assert_int_equal(ws_inflate_message(d, z, zl, 65536, &out, &ol), WS_INFLATE_OK);
	assert_int_equal(ol, 11);
	assert_memory_equal(out, "final block", 11);
	static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x12, 0x34 };
	assert_int_equal(ws_inflate_message(d, junk, sizeof(junk), 65536, &out, &ol), WS_INFLATE_BAD);
	/* The stream is usable again after every refusal. */
	zl = client_deflate("again", 5, z, big, 15, false);
	assert_int_equal(ws_inflate_message(d, z, zl, 65536, &out, &ol), WS_INFLATE_OK);
	assert_memory_equal(out, "again", 5);
	struct ws_deflate_stats st;
	ws_deflate_get_stats(d, &st);
	assert_int_equal(st.bombs, 1);
	free(zeros);
	free(z);
	ws_deflate_destroy(d);
}

/* ---- the session with the extension on ------------------------------------------ */

struct rec {
	uint8_t out[1 << 20];
	size_t out_len;
	int n_msgs;
	uint8_t op;
	uint8_t msg[1 << 18];
	size_t msg_len;
	int n_closed;
	uint16_t code;
};

static void r_msg(void *arg, uint8_t opcode, const uint8_t *data, size_t len)
{
	struct rec *r = arg;
	r->n_msgs++;
	r->op = opcode;
	assert_true(len <= sizeof(r->msg));
	memcpy(r->msg, data, len);
	r->msg_len = len;
}

static bool r_write(void *arg, const void *data, size_t len)
{
	struct rec *r = arg;
	assert_true(r->out_len + len <= sizeof(r->out));
	memcpy(r->out + r->out_len, data, len);
	r->out_len += len;
	return true;
}

static void r_closed(void *arg, uint16_t code)
{
	struct rec *r = arg;
	r->n_closed++;
	r->code = code;
}

static const struct ws_session_ops r_ops = { r_msg, r_write, r_closed };

static struct ws_deflate *codec;

static int setup(void **state)
{
	codec = ws_deflate_create(1, 8, 16);
	*state = calloc(1, sizeof(struct rec));
	return codec && *state ? 0 : -1;
}

static int teardown(void **state)
{
	free(*state);
	ws_deflate_destroy(codec);
	return 0;
}

static void open_session(struct ws_session *s, struct rec *r, uint64_t max)
{
	struct ws_pmd p = { .on = true, .server_bits = 15 };
	memset(r, 0, sizeof(*r));
	ws_session_init(s, &r_ops, r, max);
	ws_session_set_deflate(s, codec, &p);
}

static const uint8_t MASK[4] = { 1, 2, 3, 4 };

/* The server close frame at the end of r->out carries code. */
static void expect_close(const struct rec *r, uint16_t code)
{
	assert_int_equal(r->n_closed, 1);
	assert_int_equal(r->code, code);
	assert_true(r->out_len >= 4);
	const uint8_t *f = r->out + r->out_len - 4;
	assert_int_equal(f[0], 0x88);
	assert_int_equal((f[2] << 8) | f[3], code);
}

/* A compressed text in one frame, in three fragments (RSV1 on the first
 * only), and fed byte by byte; a plain one between them. */
static void test_session_compressed_input(void **state)
{
	struct rec *r = *state;
	struct ws_session s;
	static uint8_t text[20000], z[30000], frames[40000];
	fill_text(text, sizeof(text), 3);
	size_t zl = client_deflate(text, sizeof(text), z, sizeof(z), 15, false);

	open_session(&s, r, 65536);
	size_t n = wst_frame_ex(frames, true, 0x40, WS_OP_TEXT, z, zl, MASK);
	assert_int_equal(ws_session_input(&s, frames, n), n);
	assert_int_equal(r->n_msgs, 1);
	assert_int_equal(r->msg_len, sizeof(text));
	assert_memory_equal(r->msg, text, sizeof(text));

	size_t a = zl / 3, b = 2 * zl / 3;
	n = wst_frame_ex(frames, false, 0x40, WS_OP_TEXT, z, a, MASK);
	n += wst_frame_ex(frames + n, false, 0, WS_OP_CONT, z + a, b - a, MASK);
	n += wst_frame_ex(frames + n, true, 0, WS_OP_PING, "p", 1, MASK);
	n += wst_frame_ex(frames + n, true, 0, WS_OP_CONT, z + b, zl - b, MASK);
	n += wst_frame_ex(frames + n, true, 0, WS_OP_TEXT, "plain", 5, MASK);
	/* One more byte at a time; what is not consumed is offered again, as
	 * the transport does. */
	size_t pos = 0;
	for (size_t end = 1; end <= n; end++)
		pos += ws_session_input(&s, frames + pos, end - pos);
	assert_int_equal(pos, n);
	assert_int_equal(r->n_msgs, 3);
	assert_int_equal(r->msg_len, 5);
	assert_memory_equal(r->msg, "plain", 5);
	assert_int_equal(r->n_closed, 0);
	ws_session_free(&s);
}

/* Where RSV1 may not be, and what a bad compressed message closes with. */
static void test_session_refusals(void **state)
{
	struct rec *r = *state;
	struct ws_session s;
	static uint8_t z[70000], frames[80000], big[1 << 20];
	size_t n, zl;

	/* RSV1 on a continuation frame. */
	open_session(&s, r, 65536);
	n = wst_frame_ex(frames, false, 0x40, WS_OP_TEXT, "", 0, MASK);
	n += wst_frame_ex(frames + n, true, 0x40, WS_OP_CONT, "x", 1, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_PROTOCOL);
	ws_session_free(&s);
	/* RSV1 on a control frame. */
	open_session(&s, r, 65536);
	n = wst_frame_ex(frames, true, 0x40, WS_OP_PING, "x", 1, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_PROTOCOL);
	ws_session_free(&s);
	/* RSV2 and RSV3 stay reserved. */
	open_session(&s, r, 65536);
	n = wst_frame_ex(frames, true, 0x20, WS_OP_TEXT, "x", 1, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_PROTOCOL);
	ws_session_free(&s);
	/* A bomb: 1 MiB of zeros in ~1 KB, max_message 64 KiB -> 1009. */
	open_session(&s, r, 65536);
	memset(big, 0, sizeof(big));
	zl = client_deflate(big, sizeof(big), z, sizeof(z), 15, false);
	assert_true(zl < 4096);
	n = wst_frame_ex(frames, true, 0x40, WS_OP_BINARY, z, zl, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_TOO_BIG);
	assert_int_equal(r->n_msgs, 0);
	ws_session_free(&s);
	/* Exactly max_message once inflated is accepted. */
	open_session(&s, r, 65536);
	zl = client_deflate(big, 65536, z, sizeof(z), 15, false);
	n = wst_frame_ex(frames, true, 0x40, WS_OP_BINARY, z, zl, MASK);
	ws_session_input(&s, frames, n);
	assert_int_equal(r->n_msgs, 1);
	assert_int_equal(r->msg_len, 65536);
	ws_session_free(&s);
	/* A message deflate cannot shrink grows a little compressed: 64 KiB of
	 * noise is accepted at max_message 64 KiB, in one frame or two. */
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < 65536; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		big[i] = (uint8_t)(x >> 32);
	}
	zl = client_deflate(big, 65536, z, sizeof(z), 15, false);
	assert_true(zl > 65536);
	for (int frags = 1; frags <= 2; frags++) {
		open_session(&s, r, 65536);
		n = wst_frame_ex(frames, frags == 1, 0x40, WS_OP_BINARY, z, frags == 1 ? zl : zl / 2, MASK);
		if (frags == 2)
			n += wst_frame_ex(frames + n, true, 0, WS_OP_CONT, z + zl / 2, zl - zl / 2, MASK);
		ws_session_input(&s, frames, n);
		assert_int_equal(r->n_closed, 0);
		assert_int_equal(r->n_msgs, 1);
		assert_int_equal(r->msg_len, 65536);
		assert_memory_equal(r->msg, big, 65536);
		ws_session_free(&s);
	}
	/* ... but an uncompressed message stays held to max_message. */
	open_session(&s, r, 65536);
	n = wst_frame_ex(frames, true, 0, WS_OP_BINARY, big, 65537, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_TOO_BIG);
	ws_session_free(&s);
	/* Not deflate data -> 1007. */
	open_session(&s, r, 65536);
	n = wst_frame_ex(frames, true, 0x40, WS_OP_TEXT, "\xff\xff\xff\xff\xff", 5, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_BAD_DATA);
	ws_session_free(&s);
	/* Compressed text that is not UTF-8 once inflated -> 1007. */
	open_session(&s, r, 65536);
	zl = client_deflate("ok \xc3\x28 bad", 10, z, sizeof(z), 15, false);
	n = wst_frame_ex(frames, true, 0x40, WS_OP_TEXT, z, zl, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_BAD_DATA);
	ws_session_free(&s);
	/* Without the extension RSV1 is a protocol error, as before. */
	memset(r, 0, sizeof(*r));
	ws_session_init(&s, &r_ops, r, 65536);
	n = wst_frame_ex(frames, true, 0x40, WS_OP_TEXT, "x", 1, MASK);
	ws_session_input(&s, frames, n);
	expect_close(r, WS_CLOSE_PROTOCOL);
	ws_session_free(&s);
}

/* Outgoing: large messages go compressed (RSV1) and a plain inflate reads
 * them; small ones go plain. Pings are answered uncompressed. */
static void test_session_output(void **state)
{
	struct rec *r = *state;
	struct ws_session s;
	static uint8_t text[5000], back[8000];
	fill_text(text, sizeof(text), 9);
	open_session(&s, r, 65536);
	assert_true(ws_session_send(&s, WS_OP_TEXT, text, sizeof(text)));
	assert_int_equal(r->out[0], 0x80 | 0x40 | WS_OP_TEXT);
	size_t plen = r->out[1] == 126 ? (size_t)(r->out[2] << 8 | r->out[3]) : r->out[1];
	size_t hl = r->out[1] == 126 ? 4 : 2;
	assert_true(plen < sizeof(text) / 2);
	assert_int_equal(client_inflate(r->out + hl, plen, back, sizeof(back)), sizeof(text));
	assert_memory_equal(back, text, sizeof(text));
	r->out_len = 0;
	assert_true(ws_session_send(&s, WS_OP_TEXT, "tiny", 4));
	assert_int_equal(r->out[0], 0x80 | WS_OP_TEXT);
	assert_int_equal(r->out_len, 6);
	r->out_len = 0;
	uint8_t frame[16];
	size_t n = wst_frame_ex(frame, true, 0, WS_OP_PING, "hi", 2, MASK);
	ws_session_input(&s, frame, n);
	assert_int_equal(r->out[0], 0x80 | WS_OP_PONG);
	ws_session_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_negotiation),
		cmocka_unit_test(test_codec_round_trip),
		cmocka_unit_test(test_codec_limits),
		cmocka_unit_test_setup_teardown(test_session_compressed_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_output, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
