/*
 * What the control api tests share: REQUEST records built with the fixture
 * user's token and handed to the loop, and the checks of what control wrote
 * to a worker's ring (status, tokens, usage, done, an SSE subscribe).
 * Static inline: each test file uses its own part.
 */
#ifndef SLUICE_TESTS_API_CASES_H
#define SLUICE_TESTS_API_CASES_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../fixture.h"

/* Builds a REQUEST record (with the fixture user's token) into buf; returns
 * its length. */
static inline uint32_t build_req(struct cfx *f, uint8_t *buf, uint16_t worker, uint32_t slot, uint8_t kind,
			         uint8_t method, const char *path, const char *body, size_t body_len, const char *lei)
{
	char authz[128];
	snprintf(authz, sizeof(authz), "Bearer %s", f->token);
	const char *qm = path ? strchr(path, '?') : NULL;
	const struct cfx_field fl[] = {
		{ CHAN_F_PATH, path, qm ? (size_t)(qm - path) : 0 },
		{ CHAN_F_QUERY, qm && qm[1] ? qm + 1 : NULL, 0 },
		{ CHAN_F_BODY, body, body_len },
		{ CHAN_F_LAST_EVENT_ID, lei, 0 },
		{ CHAN_F_AUTHORIZATION, authz, 0 },
	};
	struct chan_conn conn = { .worker = worker, .slot = slot, .gen = 1 };
	uint32_t len = cfx_build(f, conn, kind, method, fl, SLUICE_ARRAY_LEN(fl));
	memcpy(buf, cfx_reqbuf(), len);
	return len;
}

static inline void req(struct cfx *f, uint16_t worker, uint32_t slot, uint8_t kind, uint8_t method,
		       const char *path, const char *body, const char *lei)
{
	static _Alignas(8) uint8_t buf[128 * 1024];
	uint32_t len = build_req(f, buf, worker, slot, kind, method, path, body, body ? strlen(body) : 0, lei);
	/* The store answers through completions run from its flush. */
	cfx_dispatch(f, CHAN_REC_REQUEST, buf, len);
}

static inline void http(struct cfx *f, uint16_t worker, uint8_t method, const char *path, const char *body)
{
	req(f, worker, 5, CHAN_REQ_HTTP, method, path, body, NULL);
}

#define g cfx_got
#define next_rec cfx_next
#define find_field cfx_field
#define read_resp cfx_read_resp
#define expect_resp cfx_expect_resp
#define expect_error cfx_expect_error

static inline void assert_id(const char *id, char prefix)
{
	assert_int_equal(strlen(id), 18);
	assert_int_equal(id[0], prefix);
	assert_int_equal(id[1], '_');
	for (int i = 2; i < 18; i++)
		assert_non_null(strchr("0123456789abcdef", id[i]));
}

/* Creates a session on worker 0 and copies its id into sid. */
static inline void create_session(struct cfx *f, char sid[CHAN_ID_LEN])
{
	http(f, 0, CHAN_M_POST, "/api/chat/sessions", "{\"model_id\":\"synth-1\",\"title\":\"T\"}");
	json_t *j = expect_resp(f, 0, 201);
	const char *id = json_string_value(json_object_get(j, "id"));
	assert_non_null(id);
	assert_id(id, 's');
	strcpy(sid, id);
	json_decref(j);
}

static inline void post_message(struct cfx *f, const char *sid, const char *content, char mid[CHAN_ID_LEN])
{
	json_t *b = json_pack("{s:s,s:s}", "session_id", sid, "content", content);
	char *txt = json_dumps(b, JSON_COMPACT);
	http(f, 0, CHAN_M_POST, "/api/chat/message", txt);
	free(txt);
	json_decref(b);
	json_t *j = expect_resp(f, 0, 202);
	const char *id = json_string_value(json_object_get(j, "message_id"));
	assert_non_null(id);
	assert_id(id, 'm');
	strcpy(mid, id);
	json_decref(j);
}

static inline void expect_status(struct cfx *f, uint32_t w, uint32_t slot, const char *mid, const char *st)
{
	assert_true(next_rec(f, w));
	assert_int_equal(g.type, CHAN_REC_STATUS);
	const struct chan_status *s = (const void *)g.p;
	assert_int_equal(s->conn.slot, slot);
	assert_int_equal(s->conn.worker, w);
	assert_string_equal(s->message_id, mid);
	assert_string_equal(s->status, st);
}

struct tok_cat {
	char text[1024];
	size_t len;
	uint32_t n;
};

static inline void cat_tok(void *arg, const struct chan_token *t)
{
	struct tok_cat *c = arg;
	assert_true(c->len + t->len < sizeof(c->text));
	assert_true(t->created_ns > 0);
	memcpy(c->text + c->len, t->text, t->len);
	c->len += t->len;
	c->text[c->len] = 0;
	c->n++;
}

static inline void expect_tokens(struct cfx *f, uint32_t w, uint32_t slot, const char *mid, uint32_t first,
			         uint32_t count, const char *text)
{
	assert_true(next_rec(f, w));
	assert_int_equal(g.type, CHAN_REC_TOKENS);
	const struct chan_tokens *t = (const void *)g.p;
	assert_int_equal(t->conn.slot, slot);
	assert_string_equal(t->message_id, mid);
	assert_int_equal(t->first_seq, first);
	assert_int_equal(t->count, count);
	struct tok_cat c = { .len = 0 };
	assert_true(chan_tokens_walk(g.p, g.len, cat_tok, &c));
	assert_int_equal(c.n, count);
	assert_string_equal(c.text, text);
}

static inline void expect_usage(struct cfx *f, uint32_t w, const char *mid, uint32_t prompt, uint32_t compl)
{
	assert_true(next_rec(f, w));
	assert_int_equal(g.type, CHAN_REC_USAGE);
	const struct chan_usage *u = (const void *)g.p;
	assert_string_equal(u->message_id, mid);
	assert_int_equal(u->prompt_tokens, prompt);
	assert_int_equal(u->completion_tokens, compl);
	assert_int_equal(u->total_tokens, prompt + compl);
	assert_true(u->cost_usd == (prompt * 2.0 + compl * 10.0) / 1e6);
}

static inline void expect_done(struct cfx *f, uint32_t w, const char *mid, uint32_t status, uint32_t last)
{
	assert_true(next_rec(f, w));
	assert_int_equal(g.type, CHAN_REC_DONE);
	const struct chan_done *d = (const void *)g.p;
	assert_string_equal(d->message_id, mid);
	assert_int_equal(d->status, status);
	assert_int_equal(d->last_seq, last);
}

static inline void subscribe_sse(struct cfx *f, uint16_t w, uint32_t slot, const char *sid, const char *lei,
			         const char *want_mid, uint32_t want_seq)
{
	char path[128];
	snprintf(path, sizeof(path), "/api/chat/stream/%s", sid);
	req(f, w, slot, CHAN_REQ_HTTP, CHAN_M_GET, path, NULL, lei);
	struct chan_response h;
	assert_null(read_resp(f, w, &h, NULL));
	assert_int_equal(h.status, 200);
	assert_int_equal(h.action, CHAN_RESP_SSE_SUBSCRIBE);
	assert_int_equal(h.conn.slot, slot);
	assert_string_equal(h.session_id, sid);
	assert_string_equal(h.resume_message_id, want_mid);
	assert_int_equal(h.resume_seq, want_seq);
}

#endif
