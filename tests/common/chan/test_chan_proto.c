/*
 * Record format tests: field and token encoding round trips, and rejection
 * of truncated and malformed records. Inputs under test live in buffers of
 * exactly their length (heap, or ending at a guard page), so a decoder that
 * reads past the end it was given is caught by ASan or a fault.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/guardbuf.h"
#include "sluice/chan_proto.h"
#include "sluice/common.h"

/* 8-byte aligned scratch for building records. */
static _Alignas(8) uint8_t buf[8192];

/* Validates a copy of rec[0..len) that sits in a heap block of exactly len bytes. */
static bool valid_exact(uint16_t type, const void *rec, uint32_t len)
{
	void *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	if (len)
		memcpy(copy, rec, len);
	bool ok = chan_rec_valid(type, copy, len);
	free(copy);
	return ok;
}

/* Validates rec placed so that its last byte touches a guard page; len must
 * be a multiple of 8 so the copy stays aligned. */
static bool valid_guarded(uint16_t type, const void *rec, uint32_t len)
{
	struct guardbuf g;
	assert_int_equal(len % 8, 0);
	uint8_t *p = guardbuf_place(&g, rec, len);
	bool ok = chan_rec_valid(type, p, len);
	guardbuf_free(&g);
	return ok;
}

static void conn_init(struct chan_conn *c)
{
	memset(c, 0, sizeof(*c));
	c->worker = 1;
	c->slot = 42;
	c->gen = 7;
}

struct field_spec {
	uint16_t tag;
	const char *data;
	uint32_t len;
};

static uint32_t build_request(const struct field_spec *fs, size_t n, uint32_t *field_ends)
{
	memset(buf, 0xa5, sizeof(buf));
	struct chan_request *r = (struct chan_request *)buf;
	memset(r, 0, sizeof(*r));
	conn_init(&r->conn);
	r->req_id = 9;
	r->kind = CHAN_REQ_HTTP;
	r->method = CHAN_M_POST;
	uint8_t *p = buf + sizeof(*r);
	for (size_t i = 0; i < n; i++) {
		uint8_t *before = p;
		chan_field_put(&p, fs[i].tag, fs[i].data, fs[i].len);
		assert_int_equal((size_t)(p - before), chan_field_size(fs[i].len));
		if (field_ends)
			field_ends[i] = (uint32_t)(p - buf);
	}
	return (uint32_t)(p - buf);
}

static char body[1000];

static void test_field_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	const struct field_spec fs[] = {
		{ CHAN_F_PATH, "/api/chat/message", 17 },
		{ CHAN_F_QUERY, "", 0 },
		{ CHAN_F_AUTHORIZATION, "Bearer abc", 10 },
		{ CHAN_F_BODY, body, sizeof(body) },
		{ CHAN_F_PEER, "10.0.0.1:5555", 13 },
	};
	uint32_t len = build_request(fs, SLUICE_ARRAY_LEN(fs), NULL);
	assert_int_equal(len % 8, 0);
	assert_true(valid_exact(CHAN_REC_REQUEST, buf, len));
	assert_true(valid_guarded(CHAN_REC_REQUEST, buf, len));

	const uint8_t *p = buf + sizeof(struct chan_request);
	bool bad = false;
	size_t n = 0;
	const struct chan_field *f;
	while ((f = chan_field_next(&p, buf + len, &bad))) {
		assert_true(n < SLUICE_ARRAY_LEN(fs));
		assert_int_equal(f->tag, fs[n].tag);
		assert_int_equal(f->len, fs[n].len);
		assert_memory_equal(f->data, fs[n].len ? fs[n].data : "", fs[n].len);
		/* The alignment gap is zeroed, not left with the 0xa5 filler. */
		for (size_t k = sizeof(*f) + f->len; k < chan_field_size(f->len); k++)
			assert_int_equal(((const uint8_t *)f)[k], 0);
		n++;
	}
	assert_false(bad);
	assert_int_equal(n, SLUICE_ARRAY_LEN(fs));
	assert_ptr_equal(p, buf + len);
}

/* Records with a field run have no field count, so cutting one exactly at
 * a field boundary leaves a shorter valid record; every other cut must be
 * refused, and the boundary cuts must decode as the prefix of the fields. */
static void test_request_truncations(void **state)
{
	(void)state;
	const struct field_spec fs[] = {
		{ CHAN_F_PATH, "/v1/chat/completions", 20 },
		{ CHAN_F_CONTENT_TYPE, "application/json", 16 },
		{ CHAN_F_BODY, "{\"stream\":true}", 15 },
	};
	uint32_t ends[3];
	uint32_t len = build_request(fs, 3, ends);
	for (uint32_t cut = 0; cut < len; cut++) {
		bool boundary = cut == sizeof(struct chan_request) || cut == ends[0] || cut == ends[1];
		bool ok = valid_exact(CHAN_REC_REQUEST, buf, cut);
		if (ok != boundary)
			fail_msg("cut at %u: valid=%d, boundary=%d", cut, ok, boundary);
	}
	/* The boundary cut keeps exactly the first two fields. */
	const uint8_t *p = buf + sizeof(struct chan_request);
	bool bad = false;
	int n = 0;
	while (chan_field_next(&p, buf + ends[1], &bad))
		n++;
	assert_false(bad);
	assert_int_equal(n, 2);
}

struct tok_seen {
	int n;
	uint64_t created[8];
	uint32_t len[8];
	char text[8][32];
};

static void tok_cb(void *arg, const struct chan_token *t)
{
	struct tok_seen *s = arg;
	assert_true(s->n < 8);
	s->created[s->n] = t->created_ns;
	s->len[s->n] = t->len;
	memcpy(s->text[s->n], t->text, t->len);
	s->n++;
}

static const char *tok_text[] = { "Hello", "", ", world", "0123456789abcdef!" };

static uint32_t build_tokens(void)
{
	memset(buf, 0x5a, sizeof(buf));
	struct chan_tokens *t = (struct chan_tokens *)buf;
	memset(t, 0, sizeof(*t));
	conn_init(&t->conn);
	t->conn.slot = CHAN_SLOT_ALL;
	assert_true(chan_id_set(t->session_id, "sess-1", 6));
	assert_true(chan_id_set(t->message_id, "msg-1", 5));
	t->first_seq = 5;
	t->count = SLUICE_ARRAY_LEN(tok_text);
	size_t off = sizeof(*t);
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(tok_text); i++) {
		struct chan_token *k = (struct chan_token *)(buf + off);
		k->created_ns = 1000 + i;
		k->len = (uint32_t)strlen(tok_text[i]);
		k->_pad = 0;
		memcpy(k->text, tok_text[i], k->len);
		off = chan_align8(off + sizeof(*k) + k->len);
	}
	return (uint32_t)off;
}

static void test_tokens_walk(void **state)
{
	(void)state;
	uint32_t len = build_tokens();
	assert_true(valid_exact(CHAN_REC_TOKENS, buf, len));
	assert_true(valid_guarded(CHAN_REC_TOKENS, buf, len));
	struct tok_seen s = { 0 };
	assert_true(chan_tokens_walk(buf, len, tok_cb, &s));
	assert_int_equal(s.n, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(s.created[i], 1000u + (unsigned)i);
		assert_int_equal(s.len[i], strlen(tok_text[i]));
		assert_memory_equal(s.text[i], tok_text[i], s.len[i]);
	}
	/* Malformed runs are refused before fn sees any token. */
	struct chan_tokens *t = (struct chan_tokens *)buf;
	t->count = 5;
	memset(&s, 0, sizeof(s));
	assert_false(chan_tokens_walk(buf, len, tok_cb, &s));
	assert_int_equal(s.n, 0);
	assert_false(valid_exact(CHAN_REC_TOKENS, buf, len));
	t->count = 3; /* a fourth token's bytes left over */
	assert_false(chan_tokens_walk(buf, len, tok_cb, &s));
	assert_int_equal(s.n, 0);
	t->count = 4;
	struct chan_token *last = (struct chan_token *)(buf + len - chan_align8(sizeof(struct chan_token) + 17));
	assert_int_equal(last->len, 17);
	last->len = 24; /* fills the padded space exactly: no gap left, still the same end */
	assert_true(chan_tokens_walk(buf, len, NULL, NULL));
	last->len = 25;
	assert_false(chan_tokens_walk(buf, len, tok_cb, &s));
	last->len = UINT32_MAX;
	assert_false(chan_tokens_walk(buf, len, tok_cb, &s));
	assert_false(valid_guarded(CHAN_REC_TOKENS, buf, len));
	last->len = 17;
	assert_true(chan_tokens_walk(buf, len, NULL, NULL));
	/* Extra bytes after the run. */
	assert_false(chan_tokens_walk(buf, len + 8, NULL, NULL));
	assert_false(chan_tokens_walk(buf + 4, len, NULL, NULL));
}

/* ---- one valid record of every type ------------------------------------ */

struct sample {
	uint16_t type;
	uint32_t len;
	_Alignas(8) uint8_t data[512];
};

static void make_samples(struct sample *s, size_t *n)
{
	size_t k = 0;
	memset(s, 0, sizeof(*s) * 10);
	{
		const struct field_spec fs[] = { { CHAN_F_PATH, "/api/agents", 11 } };
		uint32_t len = build_request(fs, 1, NULL);
		s[k].type = CHAN_REC_REQUEST;
		s[k].len = len;
		memcpy(s[k].data, buf, len);
		k++;
	}
	{
		struct chan_sub *u = (struct chan_sub *)s[k].data;
		conn_init(&u->conn);
		assert_true(chan_id_set(u->session_id, "s1", 2));
		u->seq = 3;
		s[k].type = CHAN_REC_SUBSCRIBE;
		s[k].len = sizeof(*u);
		k++;
		memcpy(&s[k], &s[k - 1], sizeof(s[k]));
		s[k].type = CHAN_REC_UNSUBSCRIBE;
		k++;
	}
	{
		struct chan_conn_closed *c = (struct chan_conn_closed *)s[k].data;
		conn_init(&c->conn);
		s[k].type = CHAN_REC_CONN_CLOSED;
		s[k].len = sizeof(*c);
		k++;
	}
	{
		struct chan_response *r = (struct chan_response *)s[k].data;
		conn_init(&r->conn);
		r->status = 200;
		r->action = CHAN_RESP_SSE_SUBSCRIBE;
		assert_true(chan_id_set(r->session_id, "s1", 2));
		uint8_t *p = s[k].data + sizeof(*r);
		chan_field_put(&p, CHAN_F_BODY, "{\"ok\":1}", 8);
		chan_field_put(&p, CHAN_F_SET_COOKIE, "a=b", 3);
		s[k].type = CHAN_REC_RESPONSE;
		s[k].len = (uint32_t)(p - s[k].data);
		k++;
	}
	{
		uint32_t len = build_tokens();
		assert_true(len <= sizeof(s[k].data));
		memcpy(s[k].data, buf, len);
		s[k].type = CHAN_REC_TOKENS;
		s[k].len = len;
		k++;
	}
	{
		struct chan_status *st = (struct chan_status *)s[k].data;
		conn_init(&st->conn);
		assert_true(chan_id_set(st->session_id, "s1", 2));
		assert_true(chan_id_set(st->message_id, "m1", 2));
		strcpy(st->status, "streaming");
		s[k].type = CHAN_REC_STATUS;
		s[k].len = sizeof(*st);
		k++;
	}
	{
		struct chan_usage *u = (struct chan_usage *)s[k].data;
		conn_init(&u->conn);
		u->prompt_tokens = 10;
		u->completion_tokens = 20;
		u->total_tokens = 30;
		u->cost_usd = 0.25;
		s[k].type = CHAN_REC_USAGE;
		s[k].len = sizeof(*u);
		k++;
	}
	{
		struct chan_done *d = (struct chan_done *)s[k].data;
		conn_init(&d->conn);
		d->status = CHAN_DONE_ERROR;
		d->last_seq = 12;
		uint8_t *p = s[k].data + sizeof(*d);
		chan_field_put(&p, CHAN_F_ERROR_CODE, "backend_error", 13);
		chan_field_put(&p, CHAN_F_ERROR_MESSAGE, "the backend went away", 21);
		s[k].type = CHAN_REC_DONE;
		s[k].len = (uint32_t)(p - s[k].data);
		k++;
	}
	{
		struct chan_broadcast *b = (struct chan_broadcast *)s[k].data;
		conn_init(&b->conn);
		b->max_pending = 65536;
		uint8_t *p = s[k].data + sizeof(*b);
		chan_field_put(&p, CHAN_F_BODY, "{\"type\":\"heartbeat\"}", 20);
		s[k].type = CHAN_REC_BROADCAST;
		s[k].len = (uint32_t)(p - s[k].data);
		k++;
	}
	*n = k;
}

/* Cuts that leave a field run ending on a field boundary are legal shorter
 * records (see test_request_truncations); everything else must be refused. */
static bool field_boundary(const struct sample *s, uint32_t cut)
{
	size_t fixed;
	switch (s->type) {
	case CHAN_REC_REQUEST: fixed = sizeof(struct chan_request); break;
	case CHAN_REC_RESPONSE: fixed = sizeof(struct chan_response); break;
	case CHAN_REC_DONE: fixed = sizeof(struct chan_done); break;
	case CHAN_REC_BROADCAST: fixed = sizeof(struct chan_broadcast); break;
	default: return false;
	}
	const uint8_t *p = s->data + fixed;
	const uint8_t *end = s->data + s->len;
	if (cut == fixed)
		return true;
	bool bad = false;
	while (chan_field_next(&p, end, &bad))
		if ((uint32_t)(p - s->data) == cut)
			return true;
	return false;
}

static void test_every_truncation(void **state)
{
	(void)state;
	static struct sample s[10];
	size_t n;
	make_samples(s, &n);
	assert_int_equal(n, 10);
	for (size_t i = 0; i < n; i++) {
		if (!valid_exact(s[i].type, s[i].data, s[i].len))
			fail_msg("sample type %u not valid", s[i].type);
		assert_true(valid_guarded(s[i].type, s[i].data, s[i].len));
		for (uint32_t cut = 0; cut < s[i].len; cut++) {
			bool ok = valid_exact(s[i].type, s[i].data, cut);
			if (ok != field_boundary(&s[i], cut))
				fail_msg("type %u cut at %u of %u: valid=%d", s[i].type, cut, s[i].len, ok);
		}
		/* Trailing bytes (zeros) after a fixed part, a token run or a field run. */
		assert_false(valid_exact(s[i].type, s[i].data, s[i].len + 8));
		/* The same bytes under another type are refused or at least not
		 * misread past their end (run under ASan). */
		for (uint16_t t = 0; t < 40; t++)
			(void)valid_exact(t, s[i].data, s[i].len);
		/* Records always sit 8-aligned in a ring; anything else is refused. */
		static _Alignas(8) uint8_t shifted[600];
		memcpy(shifted + 4, s[i].data, s[i].len);
		assert_false(chan_rec_valid(s[i].type, shifted + 4, s[i].len));
	}
}

static void test_malformed(void **state)
{
	(void)state;
	static struct sample s[10];
	size_t n;
	make_samples(s, &n);
	struct sample m;

	/* Field length past the end, by one and by a lot; a zero tag. */
	memcpy(&m, &s[0], sizeof(m));
	struct chan_field *f = (struct chan_field *)(m.data + sizeof(struct chan_request));
	f->len += 6; /* 11 -> 17: now needs 32 bytes, 24 present */
	assert_false(valid_exact(m.type, m.data, m.len));
	f->len = UINT32_MAX;
	assert_false(valid_exact(m.type, m.data, m.len));
	assert_false(valid_guarded(m.type, m.data, m.len));
	f->len = 11;
	f->tag = 0;
	assert_false(valid_exact(m.type, m.data, m.len));
	f->tag = CHAN_F_PATH;
	assert_true(valid_exact(m.type, m.data, m.len));
	struct chan_request *rq = (struct chan_request *)m.data;
	rq->kind = 0;
	assert_false(valid_exact(m.type, m.data, m.len));
	rq->kind = CHAN_REQ_HTTP_ADMIT + 1;
	assert_false(valid_exact(m.type, m.data, m.len));
	rq->kind = CHAN_REQ_WS;
	rq->method = CHAN_M_OPTIONS + 1;
	assert_false(valid_exact(m.type, m.data, m.len));

	/* Ids must be NUL-terminated within CHAN_ID_LEN. */
	memcpy(&m, &s[1], sizeof(m));
	memset(((struct chan_sub *)m.data)->session_id, 'x', CHAN_ID_LEN);
	assert_false(valid_exact(m.type, m.data, m.len));
	memcpy(&m, &s[1], sizeof(m));
	memset(((struct chan_sub *)m.data)->message_id, 'x', CHAN_ID_LEN);
	assert_false(valid_exact(m.type, m.data, m.len));
	((struct chan_sub *)m.data)->message_id[CHAN_ID_LEN - 1] = '\0';
	assert_true(valid_exact(m.type, m.data, m.len));

	memcpy(&m, &s[4], sizeof(m));
	((struct chan_response *)m.data)->action = CHAN_RESP_CONTINUE + 1;
	assert_false(valid_exact(m.type, m.data, m.len));

	/* Tokens: zero count, zero first_seq, seq overflow. */
	memcpy(&m, &s[5], sizeof(m));
	struct chan_tokens *t = (struct chan_tokens *)m.data;
	t->first_seq = 0;
	assert_false(valid_exact(m.type, m.data, m.len));
	t->first_seq = UINT32_MAX - 2;
	assert_false(valid_exact(m.type, m.data, m.len));
	t->first_seq = UINT32_MAX - 3;
	assert_true(valid_exact(m.type, m.data, m.len));
	t->count = 0;
	assert_false(valid_exact(m.type, m.data, m.len));
	assert_false(valid_exact(m.type, m.data, sizeof(*t)));

	memcpy(&m, &s[6], sizeof(m));
	memset(((struct chan_status *)m.data)->status, 'q', CHAN_STATUS_LEN);
	assert_false(valid_exact(m.type, m.data, m.len));

	memcpy(&m, &s[7], sizeof(m));
	((struct chan_usage *)m.data)->cost_usd = NAN;
	assert_false(valid_exact(m.type, m.data, m.len));
	((struct chan_usage *)m.data)->cost_usd = -1.0;
	assert_false(valid_exact(m.type, m.data, m.len));

	memcpy(&m, &s[8], sizeof(m));
	((struct chan_done *)m.data)->status = CHAN_DONE_INTERRUPTED + 1;
	assert_false(valid_exact(m.type, m.data, m.len));

	/* A broadcast goes to one conn, with a sane bound. */
	memcpy(&m, &s[9], sizeof(m));
	((struct chan_broadcast *)m.data)->conn.slot = CHAN_SLOT_ALL;
	assert_false(valid_exact(m.type, m.data, m.len));
	memcpy(&m, &s[9], sizeof(m));
	((struct chan_broadcast *)m.data)->max_pending = CHAN_BROADCAST_MIN_PENDING - 1;
	assert_false(valid_exact(m.type, m.data, m.len));
	((struct chan_broadcast *)m.data)->max_pending = CHAN_BROADCAST_MIN_PENDING;
	assert_true(valid_exact(m.type, m.data, m.len));

	/* Unknown types and PAD (never handed to a consumer). */
	assert_false(valid_exact(CHAN_REC_PAD, s[3].data, s[3].len));
	assert_false(valid_exact(5, s[3].data, s[3].len));
	assert_false(valid_exact(0xffff, s[3].data, s[3].len));
}

static void test_field_next_edges(void **state)
{
	(void)state;
	static _Alignas(8) uint8_t run[64];
	uint8_t *p = run;
	chan_field_put(&p, CHAN_F_ORIGIN, "https://a", 9);
	assert_int_equal(p - run, 24);
	const uint8_t *q = run;
	bool bad = false;
	/* Empty run: NULL without bad. */
	assert_null(chan_field_next(&q, run, &bad));
	assert_false(bad);
	/* Fewer bytes than a field header. */
	for (int end = 1; end < 24; end++) {
		q = run;
		bad = false;
		assert_null(chan_field_next(&q, run + end, &bad));
		assert_true(bad);
	}
	q = run;
	bad = false;
	assert_non_null(chan_field_next(&q, run + 24, &bad));
	assert_null(chan_field_next(&q, run + 24, &bad));
	assert_false(bad);
	/* A cursor past the end, or misaligned. */
	q = run + 32;
	assert_null(chan_field_next(&q, run + 24, &bad));
	assert_true(bad);
	q = run + 4;
	bad = false;
	assert_null(chan_field_next(&q, run + 24, &bad));
	assert_true(bad);
}

static void test_id_set(void **state)
{
	(void)state;
	char id[CHAN_ID_LEN];
	memset(id, 'z', sizeof(id));
	assert_true(chan_id_set(id, "abc", 3));
	assert_string_equal(id, "abc");
	for (size_t i = 3; i < CHAN_ID_LEN; i++)
		assert_int_equal(id[i], 0);
	char longest[CHAN_ID_LEN];
	memset(longest, 'k', sizeof(longest));
	assert_true(chan_id_set(id, longest, CHAN_ID_LEN - 1));
	assert_int_equal(id[CHAN_ID_LEN - 1], 0);
	assert_int_equal(strlen(id), CHAN_ID_LEN - 1);
	memset(id, 'z', sizeof(id));
	assert_false(chan_id_set(id, longest, CHAN_ID_LEN));
	assert_int_equal(id[0], 'z'); /* untouched on refusal */
	assert_false(chan_id_set(id, "a\0b", 3));
	assert_true(chan_id_set(id, NULL, 0));
	assert_int_equal(id[0], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_field_round_trip),
		cmocka_unit_test(test_request_truncations),
		cmocka_unit_test(test_tokens_walk),
		cmocka_unit_test(test_every_truncation),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_field_next_edges),
		cmocka_unit_test(test_id_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
