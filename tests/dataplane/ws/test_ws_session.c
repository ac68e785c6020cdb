/* Unit tests for the WebSocket session engine: reassembly, control frames,
 * the close handshake, failure codes and input arriving in any pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sluice/common.h"
#include "util/guardbuf.h"
#include "ws/ws_frame.h"
#include "ws/ws_session.h"
#include "ws_test.h"

#define MAX_MSGS 8

/* What the session did, as seen by the app. */
struct rec {
	uint8_t out[256 * 1024];
	size_t out_len;
	size_t out_read;
	int n_msgs;
	uint8_t msg_op[MAX_MSGS];
	uint8_t *msg[MAX_MSGS];
	size_t msg_len[MAX_MSGS];
	int n_closed;
	uint16_t closed_code;
	bool calls_after_close;
	int write_budget;   /* writes allowed before write() refuses; < 0: unlimited */
	struct ws_session *s;
	bool close_on_binary; /* app policy: binary -> ws_session_close(1003) */
};

static void rec_on_message(void *arg, uint8_t opcode, const uint8_t *data, size_t len)
{
	struct rec *r = arg;
	if (r->n_closed)
		r->calls_after_close = true;
	assert_true(r->n_msgs < MAX_MSGS);
	r->msg_op[r->n_msgs] = opcode;
	r->msg[r->n_msgs] = malloc(len + 1);
	assert_non_null(r->msg[r->n_msgs]);
	memcpy(r->msg[r->n_msgs], data, len);
	r->msg_len[r->n_msgs] = len;
	r->n_msgs++;
	if (r->close_on_binary && opcode == WS_OP_BINARY)
		ws_session_close(r->s, WS_CLOSE_UNSUPPORTED, "binary", false);
}

static bool rec_write(void *arg, const void *data, size_t len)
{
	struct rec *r = arg;
	if (r->n_closed)
		r->calls_after_close = true;
	if (r->write_budget == 0)
		return false;
	if (r->write_budget > 0)
		r->write_budget--;
	assert_true(r->out_len + len <= sizeof(r->out));
	memcpy(r->out + r->out_len, data, len);
	r->out_len += len;
	return true;
}

static void rec_on_closed(void *arg, uint16_t code)
{
	struct rec *r = arg;
	if (r->n_closed)
		r->calls_after_close = true;
	r->n_closed++;
	r->closed_code = code;
}

static const struct ws_session_ops rec_ops = {
	.on_message = rec_on_message,
	.write = rec_write,
	.on_closed = rec_on_closed,
};

struct fixture {
	struct rec r;
	struct ws_session s;
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	if (!fx)
		return -1;
	fx->r.write_budget = -1;
	fx->r.s = &fx->s;
	ws_session_init(&fx->s, &rec_ops, &fx->r, 65536);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	assert_false(fx->r.calls_after_close);
	ws_session_free(&fx->s);
	for (int i = 0; i < fx->r.n_msgs; i++)
		free(fx->r.msg[i]);
	free(fx);
	return 0;
}

/* Resets the fixture to a fresh session with the given limit. */
static void reset(struct fixture *fx, uint64_t max_message)
{
	ws_session_free(&fx->s);
	for (int i = 0; i < fx->r.n_msgs; i++)
		free(fx->r.msg[i]);
	memset(&fx->r, 0, sizeof(fx->r));
	fx->r.write_budget = -1;
	fx->r.s = &fx->s;
	ws_session_init(&fx->s, &rec_ops, &fx->r, max_message);
}

/*
 * Plays the transport: offers `chunk` new bytes at a time together with the
 * bytes the session left unconsumed, each offer placed at a guard page.
 * Unconsumed bytes must only ever be an incomplete frame header.
 */
static void feed(struct ws_session *s, const uint8_t *data, size_t len, size_t chunk)
{
	uint8_t pend[14 + 4096];
	size_t plen = 0;
	size_t pos = 0;
	assert_true(chunk > 0 && chunk <= 4096);
	while (pos < len) {
		size_t n = len - pos < chunk ? len - pos : chunk;
		memcpy(pend + plen, data + pos, n);
		plen += n;
		pos += n;
		struct guardbuf g;
		uint8_t *p = guardbuf_place(&g, pend, plen);
		size_t used = ws_session_input(s, p, plen);
		guardbuf_free(&g);
		assert_true(used <= plen);
		memmove(pend, pend + used, plen - used);
		plen -= used;
		assert_true(plen < 14);
	}
}

/* Reads the next server frame from the output; fails the test if the output
 * does not hold a complete, well-formed server frame. */
static void next_out(struct rec *r, uint8_t *op, bool *fin, const uint8_t **payload, size_t *len)
{
	size_t avail = r->out_len - r->out_read;
	const uint8_t *p = r->out + r->out_read;
	assert_true(avail >= 2);
	assert_int_equal(p[0] & 0x70, 0);
	assert_int_equal(p[1] & 0x80, 0); /* servers never mask */
	size_t h = 2;
	uint64_t n = p[1] & 0x7f;
	if (n == 126) {
		assert_true(avail >= 4);
		n = (uint64_t)p[2] << 8 | p[3];
		h = 4;
	} else if (n == 127) {
		assert_true(avail >= 10);
		n = 0;
		for (int i = 0; i < 8; i++)
			n = n << 8 | p[2 + i];
		h = 10;
	}
	assert_true(avail >= h + n);
	*op = p[0] & 0x0f;
	*fin = (p[0] & 0x80) != 0;
	*payload = p + h;
	*len = (size_t)n;
	r->out_read += h + (size_t)n;
}

static void expect_out_close(struct rec *r, uint16_t code)
{
	uint8_t op;
	bool fin;
	const uint8_t *p;
	size_t n;
	next_out(r, &op, &fin, &p, &n);
	assert_int_equal(op, WS_OP_CLOSE);
	assert_true(fin);
	assert_true(n >= 2 && n <= 125);
	assert_int_equal(p[0] << 8 | p[1], code);
	assert_int_equal(ws_close_payload_code(p, n), code);
}

static void expect_out_empty(struct rec *r)
{
	assert_int_equal(r->out_read, r->out_len);
}

static void expect_msg(struct rec *r, int i, uint8_t op, const void *data, size_t len)
{
	assert_true(i < r->n_msgs);
	assert_int_equal(r->msg_op[i], op);
	assert_int_equal(r->msg_len[i], len);
	assert_memory_equal(r->msg[i], data, len);
}

/* Appends a masked client frame to buf at *n. */
static void put(uint8_t *buf, size_t *n, bool fin, uint8_t op, const void *payload, size_t len)
{
	*n += wst_frame(buf + *n, fin, op, payload, len);
}

static void test_fragmented_text_every_chunk(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[256];
	size_t n = 0;
	/* "héllo wörld €" split inside multi-byte sequences, plus an empty fragment. */
	put(in, &n, false, WS_OP_TEXT, "h\xc3", 2);
	put(in, &n, false, WS_OP_CONT, "\xa9llo w", 6);
	put(in, &n, false, WS_OP_CONT, "", 0);
	put(in, &n, false, WS_OP_CONT, "\xc3\xb6rld \xe2", 7);
	put(in, &n, true, WS_OP_CONT, "\x82\xac", 2);
	put(in, &n, true, WS_OP_TEXT, "second", 6);
	static const char want[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac";

	for (size_t chunk = 1; chunk <= n; chunk++) {
		reset(fx, 65536);
		feed(&fx->s, in, n, chunk);
		assert_int_equal(fx->r.n_msgs, 2);
		expect_msg(&fx->r, 0, WS_OP_TEXT, want, sizeof(want) - 1);
		expect_msg(&fx->r, 1, WS_OP_TEXT, "second", 6);
		assert_int_equal(fx->r.n_closed, 0);
		expect_out_empty(&fx->r);
	}
}

static void test_ping_inside_fragmented_message(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[256];
	size_t n = 0;
	put(in, &n, false, WS_OP_TEXT, "ab", 2);
	put(in, &n, true, WS_OP_PING, "xyz", 3);
	put(in, &n, false, WS_OP_CONT, "cd", 2);
	put(in, &n, true, WS_OP_PONG, "unsolicited", 11);
	put(in, &n, true, WS_OP_PING, "", 0);
	put(in, &n, true, WS_OP_CONT, "ef", 2);

	for (size_t chunk = 1; chunk <= n; chunk++) {
		reset(fx, 65536);
		feed(&fx->s, in, n, chunk);
		assert_int_equal(fx->r.n_msgs, 1);
		expect_msg(&fx->r, 0, WS_OP_TEXT, "abcdef", 6);

		uint8_t op;
		bool fin;
		const uint8_t *p;
		size_t len;
		next_out(&fx->r, &op, &fin, &p, &len);
		assert_int_equal(op, WS_OP_PONG);
		assert_int_equal(len, 3);
		assert_memory_equal(p, "xyz", 3);
		next_out(&fx->r, &op, &fin, &p, &len);
		assert_int_equal(op, WS_OP_PONG);
		assert_int_equal(len, 0);
		expect_out_empty(&fx->r);
	}
}

static void test_ping_max_payload(void **state)
{
	struct fixture *fx = *state;
	uint8_t payload[125], in[256];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7);
	size_t n = 0;
	put(in, &n, true, WS_OP_PING, payload, sizeof(payload));
	feed(&fx->s, in, n, 1);
	uint8_t op;
	bool fin;
	const uint8_t *p;
	size_t len;
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(op, WS_OP_PONG);
	assert_int_equal(len, sizeof(payload));
	assert_memory_equal(p, payload, sizeof(payload));
}

static void test_binary_delivered(void **state)
{
	struct fixture *fx = *state;
	static const uint8_t bin[] = { 0x00, 0xff, 0xc0, 0x80, 0xed, 0xa0, 0x80 };
	uint8_t in[64];
	size_t n = 0;
	put(in, &n, false, WS_OP_BINARY, bin, 3);
	put(in, &n, true, WS_OP_CONT, bin + 3, sizeof(bin) - 3);
	feed(&fx->s, in, n, n);
	assert_int_equal(fx->r.n_msgs, 1);
	expect_msg(&fx->r, 0, WS_OP_BINARY, bin, sizeof(bin));
	assert_int_equal(fx->r.n_closed, 0);
}

/* The app answers a binary message with ws_session_close(1003) from inside
 * on_message; later data is discarded and the client's close ends it. */
static void test_app_close_from_callback(void **state)
{
	struct fixture *fx = *state;
	fx->r.close_on_binary = true;
	uint8_t in[128];
	size_t n = 0;
	put(in, &n, true, WS_OP_BINARY, "\x01\x02", 2);
	put(in, &n, true, WS_OP_TEXT, "ignored", 7);
	put(in, &n, true, WS_OP_CLOSE, "\x03\xeb", 2);
	feed(&fx->s, in, n, n);
	assert_int_equal(fx->r.n_msgs, 1);
	expect_out_close(&fx->r, WS_CLOSE_UNSUPPORTED);
	expect_out_empty(&fx->r);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_UNSUPPORTED);
}

static void test_client_close(void **state)
{
	struct fixture *fx = *state;
	struct {
		const char *payload;
		size_t len;
		uint16_t reply;
	} cases[] = {
		{ "", 0, 1000 },
		{ "\x03\xe8", 2, 1000 },
		{ "\x03\xe9going away", 12, 1001 },
		{ "\x0f\xa0\xc3\xa9", 4, 4000 },
		{ "\x03\xe8\xc0\x80", 4, 1002 },  /* reason not UTF-8 */
		{ "\x03", 1, 1002 },              /* one-byte payload */
		{ "\x03\xed", 2, 1002 },          /* 1005 must not be sent */
		{ "\x03\xe7", 2, 1002 },          /* 999 */
		{ "\x0b\xb7", 2, 1002 },          /* 2999 */
	};
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
		for (size_t chunk = 1; chunk <= 3; chunk++) {
			reset(fx, 65536);
			uint8_t in[128];
			size_t n = 0;
			put(in, &n, true, WS_OP_CLOSE, cases[i].payload, cases[i].len);
			feed(&fx->s, in, n, chunk);
			expect_out_close(&fx->r, cases[i].reply);
			expect_out_empty(&fx->r);
			assert_int_equal(fx->r.n_closed, 1);
			assert_int_equal(fx->r.closed_code, cases[i].reply);
			assert_int_equal(fx->s.state, WS_STATE_CLOSED);

			/* Anything after is consumed and ignored. */
			n = 0;
			put(in, &n, true, WS_OP_TEXT, "late", 4);
			put(in, &n, true, WS_OP_PING, "p", 1);
			assert_int_equal(ws_session_input(&fx->s, in, n), n);
			assert_int_equal(ws_session_input(&fx->s, (const uint8_t *)"\x81", 1), 1);
			assert_int_equal(fx->r.n_msgs, 0);
			expect_out_empty(&fx->r);
			assert_int_equal(fx->r.n_closed, 1);
		}
	}
}

static void test_server_close_waits_for_client(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[256];
	size_t n = 0;
	put(in, &n, false, WS_OP_TEXT, "partial", 7);
	feed(&fx->s, in, n, 3);

	ws_session_close(&fx->s, WS_CLOSE_GOING_AWAY, "restart", false);
	assert_int_equal(fx->s.state, WS_STATE_CLOSE_SENT);
	assert_int_equal(fx->r.n_closed, 0);
	uint8_t op;
	bool fin;
	const uint8_t *p;
	size_t len;
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(op, WS_OP_CLOSE);
	assert_int_equal(len, 9);
	assert_memory_equal(p, "\x03\xe9restart", 9);
	assert_false(ws_session_send(&fx->s, WS_OP_TEXT, "no", 2));

	/* Data (the rest of the message and new ones) and pings are dropped. */
	n = 0;
	put(in, &n, true, WS_OP_CONT, "rest", 4);
	put(in, &n, true, WS_OP_TEXT, "new", 3);
	put(in, &n, true, WS_OP_BINARY, "\xff", 1);
	put(in, &n, true, WS_OP_PING, "ping", 4);
	put(in, &n, true, WS_OP_CLOSE, "\x03\xe9", 2);
	feed(&fx->s, in, n, 1);
	assert_int_equal(fx->r.n_msgs, 0);
	expect_out_empty(&fx->r);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_GOING_AWAY);

	/* The client's close without a code completes it too. */
	reset(fx, 65536);
	ws_session_close(&fx->s, WS_CLOSE_NORMAL, NULL, false);
	expect_out_close(&fx->r, WS_CLOSE_NORMAL);
	n = 0;
	put(in, &n, true, WS_OP_CLOSE, "", 0);
	feed(&fx->s, in, n, n);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_NO_STATUS);
	expect_out_empty(&fx->r);
}

static void test_server_close_fail(void **state)
{
	struct fixture *fx = *state;
	ws_session_close(&fx->s, WS_CLOSE_POLICY, "unknown session", true);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_POLICY);
	uint8_t op;
	bool fin;
	const uint8_t *p;
	size_t len;
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(op, WS_OP_CLOSE);
	assert_int_equal(len, 2 + 15);
	assert_memory_equal(p, "\x03\xf0unknown session", len);
	expect_out_empty(&fx->r);

	uint8_t in[64];
	size_t n = 0;
	put(in, &n, true, WS_OP_CLOSE, "", 0);
	assert_int_equal(ws_session_input(&fx->s, in, n), n);
	ws_session_close(&fx->s, WS_CLOSE_NORMAL, NULL, true);
	assert_int_equal(fx->r.n_closed, 1);
	expect_out_empty(&fx->r);

	/* Giving up on a close handshake in progress: one close frame only. */
	reset(fx, 65536);
	ws_session_close(&fx->s, WS_CLOSE_GOING_AWAY, NULL, false);
	assert_int_equal(fx->r.n_closed, 0);
	ws_session_close(&fx->s, WS_CLOSE_GOING_AWAY, NULL, true);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_GOING_AWAY);
	expect_out_close(&fx->r, WS_CLOSE_GOING_AWAY);
	expect_out_empty(&fx->r);
}

/* A long reason is cut to 123 bytes, backing off to a code-point boundary. */
static void test_close_reason_truncated(void **state)
{
	struct fixture *fx = *state;
	char reason[301];
	for (size_t i = 0; i < 300; i += 2) {
		reason[i] = (char)0xc3;
		reason[i + 1] = (char)0xa9;
	}
	reason[300] = '\0';
	ws_session_close(&fx->s, WS_CLOSE_NORMAL, reason, false);
	uint8_t op;
	bool fin;
	const uint8_t *p;
	size_t len;
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(op, WS_OP_CLOSE);
	assert_int_equal(len, 2 + 122);
	assert_int_equal(ws_close_payload_code(p, len), WS_CLOSE_NORMAL);

	reset(fx, 65536);
	memset(reason, 'a', 300);
	ws_session_close(&fx->s, WS_CLOSE_NORMAL, reason, false);
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(len, 125);
}

struct proto_case {
	const char *name;
	uint8_t in[64];
	size_t len;
	uint16_t code;
};

static void test_protocol_errors(void **state)
{
	struct fixture *fx = *state;
	static const uint8_t m[4] = { 1, 2, 3, 4 };
	struct proto_case cases[8];
	size_t nc = 0;
	struct proto_case *c;

	c = &cases[nc++];
	c->name = "continuation without message";
	c->len = wst_frame(c->in, true, WS_OP_CONT, "x", 1);
	c->code = 1002;

	c = &cases[nc++];
	c->name = "text while text in progress";
	c->len = wst_frame(c->in, false, WS_OP_TEXT, "a", 1);
	c->len += wst_frame(c->in + c->len, true, WS_OP_TEXT, "b", 1);
	c->code = 1002;

	c = &cases[nc++];
	c->name = "binary while text in progress";
	c->len = wst_frame(c->in, false, WS_OP_TEXT, "a", 1);
	c->len += wst_frame(c->in + c->len, true, WS_OP_BINARY, "b", 1);
	c->code = 1002;

	c = &cases[nc++];
	c->name = "unmasked";
	c->len = wst_frame_ex(c->in, true, 0, WS_OP_TEXT, "hi", 2, NULL);
	c->code = 1002;

	c = &cases[nc++];
	c->name = "rsv1";
	c->len = wst_frame_ex(c->in, true, 0x40, WS_OP_TEXT, "hi", 2, m);
	c->code = 1002;

	c = &cases[nc++];
	c->name = "fragmented ping";
	c->len = wst_frame(c->in, false, WS_OP_PING, "p", 1);
	c->code = 1002;

	c = &cases[nc++];
	c->name = "opcode 3";
	c->len = wst_frame(c->in, true, 3, "", 0);
	c->code = 1002;

	c = &cases[nc++];
	c->name = "invalid utf-8";
	c->len = wst_frame(c->in, true, WS_OP_TEXT, "ok\xed\xa0\x80", 5);
	c->code = 1007;

	for (size_t i = 0; i < nc; i++) {
		for (size_t chunk = 1; chunk <= 2; chunk++) {
			reset(fx, 65536);
			feed(&fx->s, cases[i].in, cases[i].len, chunk);
			if (fx->r.n_closed != 1 || fx->r.closed_code != cases[i].code)
				fail_msg("%s: closed %d code %u", cases[i].name, fx->r.n_closed,
					 fx->r.closed_code);
			assert_int_equal(fx->r.n_msgs, 0);
			expect_out_close(&fx->r, cases[i].code);
			expect_out_empty(&fx->r);
		}
	}
}

/* Invalid UTF-8 in the first fragment fails at once, before the message ends. */
static void test_utf8_fail_fast(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[64];
	size_t n = 0;
	put(in, &n, false, WS_OP_TEXT, "abc\xc0", 4);
	feed(&fx->s, in, n, 1);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_BAD_DATA);
	expect_out_close(&fx->r, WS_CLOSE_BAD_DATA);

	/* A code point cut at the end of the message is invalid too. */
	reset(fx, 65536);
	n = 0;
	put(in, &n, false, WS_OP_TEXT, "abc\xe2\x82", 5);
	feed(&fx->s, in, n, 1);
	assert_int_equal(fx->r.n_closed, 0);
	put(in, &n, true, WS_OP_CONT, "", 0);
	feed(&fx->s, in + n - 6, 6, 1);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_BAD_DATA);
	assert_int_equal(fx->r.n_msgs, 0);
}

/* Autobahn 6.4.3/6.4.4: a single text frame whose payload turns invalid in
 * the middle fails when the bad byte arrives, not when the frame ends. The
 * 0x90 after F4 would be above U+10FFFF; F4 itself is still a valid start. */
static void test_utf8_fail_fast_mid_frame(void **state)
{
	struct fixture *fx = *state;
	static const char text[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
				   "\xf4\x90\x80\x80" "edited";
	const size_t len = sizeof(text) - 1;
	const size_t hdr = 6;
	uint8_t in[64];
	size_t n = 0;
	put(in, &n, true, WS_OP_TEXT, text, len);
	assert_int_equal(n, hdr + len);
	feed(&fx->s, in, hdr + 12, 1);
	assert_int_equal(fx->r.n_closed, 0);
	expect_out_empty(&fx->r);
	feed(&fx->s, in + hdr + 12, 1, 1);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_BAD_DATA);
	expect_out_close(&fx->r, WS_CLOSE_BAD_DATA);
	expect_out_empty(&fx->r);
	feed(&fx->s, in + hdr + 13, len - 13, 1);
	assert_int_equal(fx->r.n_msgs, 0);
	assert_int_equal(fx->r.n_closed, 1);
}

/* Every split of a 4-byte code point across two fragments is accepted. */
static void test_utf8_split_across_fragments(void **state)
{
	struct fixture *fx = *state;
	static const char text[] = "a\xf0\x9f\x98\x80z";
	for (size_t cut = 0; cut <= 6; cut++) {
		reset(fx, 65536);
		uint8_t in[64];
		size_t n = 0;
		put(in, &n, false, WS_OP_TEXT, text, cut);
		put(in, &n, true, WS_OP_CONT, text + cut, 6 - cut);
		feed(&fx->s, in, n, n);
		assert_int_equal(fx->r.n_closed, 0);
		assert_int_equal(fx->r.n_msgs, 1);
		expect_msg(&fx->r, 0, WS_OP_TEXT, text, 6);
	}
}

static uint8_t *make_payload(size_t len)
{
	uint8_t *p = malloc(len);
	assert_non_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)('a' + i % 23);
	return p;
}

static void test_too_big(void **state)
{
	struct fixture *fx = *state;
	size_t total = 70000;
	uint8_t *payload = make_payload(total);
	uint8_t *in = malloc(total + 14 * 8);
	assert_non_null(in);

	/* One frame, dribbled one byte at a time: refused at its header. */
	size_t n = wst_frame(in, true, WS_OP_TEXT, payload, total);
	feed(&fx->s, in, n, 1);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_TOO_BIG);
	assert_int_equal(fx->r.n_msgs, 0);
	expect_out_close(&fx->r, WS_CLOSE_TOO_BIG);
	expect_out_empty(&fx->r);

	/* Seven 10,000-byte fragments, one byte at a time: refused at the seventh. */
	reset(fx, 65536);
	n = 0;
	for (size_t i = 0; i < 7; i++)
		n += wst_frame(in + n, i == 6, i ? WS_OP_CONT : WS_OP_TEXT, payload + i * 10000,
			       10000);
	feed(&fx->s, in, n, 1);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_TOO_BIG);
	assert_int_equal(fx->r.n_msgs, 0);
	expect_out_close(&fx->r, WS_CLOSE_TOO_BIG);

	/* A small limit applies to the sum of the fragments. */
	reset(fx, 10);
	n = 0;
	put(in, &n, false, WS_OP_BINARY, payload, 6);
	put(in, &n, true, WS_OP_CONT, payload, 5);
	feed(&fx->s, in, n, n);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_TOO_BIG);

	free(in);
	free(payload);
}

/* A message of exactly max_message, as one frame and as fragments, arriving
 * in odd-sized pieces: unmasking must track the offset within each frame. */
static void test_max_message_dribble(void **state)
{
	struct fixture *fx = *state;
	size_t total = 65536;
	uint8_t *payload = make_payload(total);
	uint8_t *in = malloc(total + 14 * 8);
	assert_non_null(in);
	static const size_t chunks[] = { 1, 3, 7, 4096 };

	for (size_t c = 0; c < SLUICE_ARRAY_LEN(chunks); c++) {
		reset(fx, 65536);
		size_t n = wst_frame(in, true, WS_OP_BINARY, payload, total);
		feed(&fx->s, in, n, chunks[c]);
		assert_int_equal(fx->r.n_closed, 0);
		assert_int_equal(fx->r.n_msgs, 1);
		expect_msg(&fx->r, 0, WS_OP_BINARY, payload, total);

		n = 0;
		size_t sizes[] = { 1, 125, 126, 5, 65535 - 257 + 1 };
		size_t off = 0;
		for (size_t i = 0; i < SLUICE_ARRAY_LEN(sizes); i++) {
			n += wst_frame(in + n, i == SLUICE_ARRAY_LEN(sizes) - 1,
				       i ? WS_OP_CONT : WS_OP_TEXT, payload + off, sizes[i]);
			off += sizes[i];
		}
		assert_int_equal(off, total);
		feed(&fx->s, in, n, chunks[c]);
		assert_int_equal(fx->r.n_closed, 0);
		assert_int_equal(fx->r.n_msgs, 2);
		expect_msg(&fx->r, 1, WS_OP_TEXT, payload, total);
	}
	free(in);
	free(payload);
}

/* The reassembly buffer is kept and reused: no allocation per message. */
static void test_buffer_reused(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[512];
	size_t n = 0;
	put(in, &n, true, WS_OP_TEXT, "first message", 13);
	feed(&fx->s, in, n, n);
	uint8_t *buf = fx->s.msg;
	size_t cap = fx->s.msg_cap;
	assert_non_null(buf);
	for (int i = 0; i < 5; i++)
		feed(&fx->s, in, n, 5);
	assert_ptr_equal(fx->s.msg, buf);
	assert_int_equal(fx->s.msg_cap, cap);
	assert_int_equal(fx->r.n_msgs, 6);
}

/* Between messages the app gives the buffer back; half a message keeps it. */
static void test_release_idle(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[512];
	size_t n = 0;
	put(in, &n, true, WS_OP_TEXT, "first message", 13);
	feed(&fx->s, in, n, n);
	assert_non_null(fx->s.msg);
	ws_session_release_idle(&fx->s);
	assert_null(fx->s.msg);
	assert_int_equal(fx->s.msg_cap, 0);
	n = 0;
	put(in, &n, false, WS_OP_TEXT, "half", 4);
	feed(&fx->s, in, n, n);
	ws_session_release_idle(&fx->s);
	assert_non_null(fx->s.msg);
	n = 0;
	put(in, &n, true, WS_OP_CONT, " and rest", 9);
	feed(&fx->s, in, n, n);
	assert_int_equal(fx->r.n_msgs, 2);
	expect_msg(&fx->r, 1, WS_OP_TEXT, "half and rest", 13);
	ws_session_release_idle(&fx->s);
	assert_null(fx->s.msg);
}

/* A control frame's payload buffer lives only while the frame arrives: a
 * parked session holds none, and freeing a session mid-frame gives it back
 * (ASan's leak check in CI). */
static void test_control_buffer_only_while_needed(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[256];
	size_t n = 0;
	put(in, &n, true, WS_OP_PING, "abcdef", 6);
	assert_null(fx->s.ctl);
	feed(&fx->s, in, n - 3, n - 3);
	assert_non_null(fx->s.ctl);
	feed(&fx->s, in + n - 3, 3, 3);
	assert_null(fx->s.ctl);
	uint8_t op;
	bool fin;
	const uint8_t *p;
	size_t len;
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(op, WS_OP_PONG);
	assert_int_equal(len, 6);
	assert_memory_equal(p, "abcdef", 6);
	feed(&fx->s, in, n - 1, n - 1);
	assert_non_null(fx->s.ctl);
	ws_session_free(&fx->s);
	assert_null(fx->s.ctl);
}

/* A message framed once (header + payload) goes out as it is. */
static void test_send_frame(void **state)
{
	struct fixture *fx = *state;
	uint8_t fr[16];
	size_t h = ws_build_header(fr, true, WS_OP_TEXT, 2);

	memcpy(fr + h, "ok", 2);
	assert_true(ws_session_send_frame(&fx->s, fr, h + 2));
	assert_int_equal(fx->r.out_len, h + 2);
	assert_memory_equal(fx->r.out, fr, h + 2);
	ws_session_close(&fx->s, WS_CLOSE_NORMAL, NULL, false);
	assert_false(ws_session_send_frame(&fx->s, fr, h + 2));
}

static void test_send(void **state)
{
	struct fixture *fx = *state;
	uint8_t *payload = make_payload(300);
	assert_true(ws_session_send(&fx->s, WS_OP_TEXT, payload, 300));
	assert_true(ws_session_send(&fx->s, WS_OP_BINARY, "", 0));
	uint8_t op;
	bool fin;
	const uint8_t *p;
	size_t len;
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(op, WS_OP_TEXT);
	assert_true(fin);
	assert_int_equal(len, 300);
	assert_memory_equal(p, payload, 300);
	next_out(&fx->r, &op, &fin, &p, &len);
	assert_int_equal(op, WS_OP_BINARY);
	assert_int_equal(len, 0);
	expect_out_empty(&fx->r);
	free(payload);
}

/* A refused write ends the session with 1011, from a send or from a pong. */
static void test_write_failure(void **state)
{
	struct fixture *fx = *state;
	fx->r.write_budget = 1; /* the header goes out, the payload does not */
	assert_false(ws_session_send(&fx->s, WS_OP_TEXT, "abc", 3));
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_INTERNAL);
	assert_false(ws_session_send(&fx->s, WS_OP_TEXT, "abc", 3));

	reset(fx, 65536);
	fx->r.write_budget = 0;
	uint8_t in[64];
	size_t n = 0;
	put(in, &n, true, WS_OP_PING, "p", 1);
	put(in, &n, true, WS_OP_TEXT, "after", 5);
	feed(&fx->s, in, n, n);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_INTERNAL);
	assert_int_equal(fx->r.n_msgs, 0);

	reset(fx, 65536);
	fx->r.write_budget = 0;
	ws_session_close(&fx->s, WS_CLOSE_NORMAL, NULL, false);
	assert_int_equal(fx->r.n_closed, 1);
	assert_int_equal(fx->r.closed_code, WS_CLOSE_INTERNAL);
}

/* Several frames in one input, then a partial header: the session consumes
 * up to the header and takes it again once complete. */
static void test_partial_header_left(void **state)
{
	struct fixture *fx = *state;
	uint8_t in[256];
	size_t n = 0;
	put(in, &n, true, WS_OP_TEXT, "one", 3);
	put(in, &n, true, WS_OP_TEXT, "two", 3);
	size_t first = n;
	put(in, &n, true, WS_OP_TEXT, "three", 5);
	struct guardbuf g;
	uint8_t *p = guardbuf_place(&g, in, first + 4);
	assert_int_equal(ws_session_input(&fx->s, p, first + 4), first);
	guardbuf_free(&g);
	assert_int_equal(fx->r.n_msgs, 2);
	p = guardbuf_place(&g, in + first, n - first);
	assert_int_equal(ws_session_input(&fx->s, p, n - first), n - first);
	guardbuf_free(&g);
	assert_int_equal(fx->r.n_msgs, 3);
	expect_msg(&fx->r, 2, WS_OP_TEXT, "three", 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fragmented_text_every_chunk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_inside_fragmented_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_max_payload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_app_close_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_close_waits_for_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_close_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_reason_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_protocol_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_utf8_fail_fast, setup, teardown),
		cmocka_unit_test_setup_teardown(test_utf8_fail_fast_mid_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_utf8_split_across_fragments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_control_buffer_only_while_needed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_message_dribble, setup, teardown),
		cmocka_unit_test_setup_teardown(test_release_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buffer_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_header_left, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
