/*
 * Access control and secrets end to end in control: the api with its auth
 * module over a real LMDB store and a real channel region. Requests are
 * REQUEST records handed to api_dispatch(); what control answers (responses,
 * KICKs) is read back from the c2d rings with a dataplane-role attachment.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "../fixture.h"
#include "api/api_auth.h"
#include "auth/auth_login.h"

static int fx_setup(void **state)
{
	*state = cfx_open(NULL, 0);
	return 0;
}

/* A store of 1 MiB, so that it can be filled. */
static int fx_setup_tiny(void **state)
{
	struct sluice_conf c;
	cfx_conf_default(&c);
	c.store_map_mb = 1;
	*state = cfx_open(&c, 0);
	return 0;
}

static int fx_teardown(void **state)
{
	cfx_close(*state);
	return 0;
}

/* ---- records --------------------------------------------------------------- */

struct fld {
	uint16_t tag;
	const char *v;
};

static _Alignas(8) uint8_t reqbuf[128 * 1024];

/* Builds a REQUEST record for conn (worker 0, slot) into reqbuf. */
static uint32_t build(struct cfx *f, uint32_t slot, uint8_t kind, uint8_t method, const struct fld *fl,
		      size_t n)
{
	struct cfx_field cf[8];
	assert_true(n <= SLUICE_ARRAY_LEN(cf));
	for (size_t i = 0; i < n; i++)
		cf[i] = (struct cfx_field){ fl[i].tag, fl[i].v, 0 };
	struct chan_conn conn = { .slot = slot, .gen = 1 };
	uint32_t len = cfx_build(f, conn, kind, method, cf, n);
	memcpy(reqbuf, cfx_reqbuf(), len);
	return len;
}

static void settle(struct cfx *f)
{
	cfx_settle(f);
}

static void dispatch(struct cfx *f, uint32_t len)
{
	cfx_dispatch(f, CHAN_REC_REQUEST, reqbuf, len);
}

/* An HTTP request on worker 0 with a Bearer token (NULL: none). */
static void http(struct cfx *f, uint32_t slot, uint8_t method, const char *path, const char *body,
		 const char *token)
{
	char authz[128] = "";
	if (token)
		snprintf(authz, sizeof(authz), "Bearer %s", token);
	const struct fld fl[] = { { CHAN_F_PATH, path }, { CHAN_F_BODY, body },
				  { CHAN_F_AUTHORIZATION, token ? authz : NULL } };
	dispatch(f, build(f, slot, CHAN_REQ_HTTP, method, fl, SLUICE_ARRAY_LEN(fl)));
}

static bool next_rec(struct cfx *f)
{
	return cfx_next(f, 0);
}

#define g cfx_got
#define find_field cfx_field

/* The next response (one part) on worker 0: its status and parsed body. */
static json_t *expect_resp(struct cfx *f, uint16_t status)
{
	assert_true(next_rec(f));
	assert_int_equal(g.type, CHAN_REC_RESPONSE);
	const struct chan_response *h = (const void *)g.p;
	assert_int_equal(h->status, status);
	assert_false(h->flags & CHAN_RESP_MORE);
	const struct chan_field *b = find_field(CHAN_F_BODY);
	if (!b)
		return NULL;
	json_t *j = json_loadb((const char *)b->data, b->len, 0, NULL);
	assert_non_null(j);
	return j;
}

static void expect_error(struct cfx *f, uint16_t status, const char *code)
{
	json_t *j = expect_resp(f, status);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), code);
	json_decref(j);
}

static void expect_kick(struct cfx *f, uint32_t slot)
{
	assert_true(next_rec(f));
	assert_int_equal(g.type, CHAN_REC_KICK);
	const struct chan_kick *k = (const void *)g.p;
	assert_int_equal(k->conn.slot, slot);
	assert_int_equal(k->code, 1008);
}

static void expect_nothing(struct cfx *f)
{
	assert_false(next_rec(f));
}

/* ---- users and logins ------------------------------------------------------ */

static void put_done(void *arg, int err)
{
	*(int *)arg = err;
}

#define add_user cfx_add_user
#define del_user cfx_del_user
#define login cfx_login

static void create_session(struct cfx *f, const char *token, char sid[CHAN_ID_LEN])
{
	http(f, 1, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"assistant\"}", token);
	json_t *j = expect_resp(f, 201);
	snprintf(sid, CHAN_ID_LEN, "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
}

static void sessions_listed(struct cfx *f, const char *token, size_t want)
{
	http(f, 1, CHAN_M_GET, "/api/chat/sessions", NULL, token);
	json_t *j = expect_resp(f, 200);
	assert_int_equal(json_array_size(json_object_get(j, "sessions")), want);
	json_decref(j);
}

/* ---- tests ----------------------------------------------------------------- */

/* A record the auth parser cannot read is refused, not routed anonymously. */
static void test_fail_closed(void **state)
{
	struct cfx *f = *state;
	const struct fld fl[] = { { CHAN_F_PATH, "/api/chat/sessions" } };
	uint32_t len = build(f, 1, CHAN_REQ_HTTP, CHAN_M_GET, fl, 1);
	/* A field whose length runs past the end of the record. */
	struct chan_field *bad = (struct chan_field *)(reqbuf + len);
	memset(bad, 0, sizeof(*bad));
	bad->tag = CHAN_F_AUTHORIZATION;
	bad->len = 4096;
	len += (uint32_t)sizeof(*bad) + 8;
	struct chat_reply r = { .conn = { .slot = 1, .gen = 1 }, .req_id = 42, .kind = CHAN_REQ_HTTP };
	struct auth_ident id;
	assert_true(api_auth_http(&f->api, &r, reqbuf, len, &id));
	co_flush(&f->out);
	expect_error(f, 400, "bad_request");
	assert_string_equal(id.user, "");
}

/* users del alice, users add alice: the new alice gets nothing of the old. */
static void test_recreated_user(void **state)
{
	struct cfx *f = *state;
	char t1[AUTH_TOKEN_LEN + 1], t2[AUTH_TOKEN_LEN + 1], sid[CHAN_ID_LEN], path[96];
	uint64_t uid1 = add_user(f, "alice");
	login(f, "alice", t1);
	create_session(f, t1, sid);
	sessions_listed(f, t1, 1);
	del_user(f, "alice");
	uint64_t uid2 = add_user(f, "alice");
	assert_true(uid1 != uid2);
	login(f, "alice", t2);
	snprintf(path, sizeof(path), "/api/chat/sessions/%s", sid);
	http(f, 1, CHAN_M_GET, path, NULL, t2);
	expect_error(f, 404, "not_found");
	snprintf(path, sizeof(path), "/api/chat/sessions/%s/export", sid);
	http(f, 1, CHAN_M_GET, path, NULL, t2);
	expect_error(f, 404, "not_found");
	snprintf(path, sizeof(path), "/api/chat/stream/%s", sid);
	http(f, 1, CHAN_M_GET, path, NULL, t2);
	expect_error(f, 404, "not_found");
	sessions_listed(f, t2, 0);
	/* Over a WebSocket as well. */
	char msg[128];
	snprintf(msg, sizeof(msg), "{\"type\":\"subscribe\",\"session_id\":\"%s\"}", sid);
	char authz[80];
	snprintf(authz, sizeof(authz), "Bearer %s", t2);
	const struct fld fl[] = { { CHAN_F_BODY, msg }, { CHAN_F_AUTHORIZATION, authz } };
	dispatch(f, build(f, 7, CHAN_REQ_WS, CHAN_M_GET, fl, SLUICE_ARRAY_LEN(fl)));
	json_t *j = expect_resp(f, 404);
	assert_string_equal(json_string_value(json_object_get(j, "type")), "error");
	json_decref(j);
	/* Her own new conversations are hers. */
	char sid2[CHAN_ID_LEN];
	create_session(f, t2, sid2);
	sessions_listed(f, t2, 1);
	expect_nothing(f);
}

/* An SSE stream ends (KICK) on logout, on the user's deletion and at expiry. */
static void test_sse_ends_with_login(void **state)
{
	struct cfx *f = *state;
	char t1[AUTH_TOKEN_LEN + 1], t2[AUTH_TOKEN_LEN + 1], sid[CHAN_ID_LEN], path[96];
	add_user(f, "bob");
	login(f, "bob", t1);
	login(f, "bob", t2);
	create_session(f, t1, sid);
	snprintf(path, sizeof(path), "/api/chat/stream/%s", sid);
	http(f, 3, CHAN_M_GET, path, NULL, t1);
	json_decref(expect_resp(f, 200));
	http(f, 4, CHAN_M_GET, path, NULL, t2);
	json_decref(expect_resp(f, 200));
	/* Logout with t1 ends the stream of t1 only. */
	http(f, 1, CHAN_M_POST, "/api/auth/logout", NULL, t1);
	expect_kick(f, 3);
	json_decref(expect_resp(f, 200));
	expect_nothing(f);
	/* Expiry ends the other one. */
	assert_int_equal(auth_expire(&f->auth, f->auth.now(f->auth.now_arg) + 61), 1);
	co_flush(&f->out);
	expect_kick(f, 4);
	/* A third stream, ended by the user's deletion. */
	char t3[AUTH_TOKEN_LEN + 1];
	login(f, "bob", t3);
	http(f, 5, CHAN_M_GET, path, NULL, t3);
	json_decref(expect_resp(f, 200));
	del_user(f, "bob");
	expect_kick(f, 5);
	expect_nothing(f);
}

static void subscribe_rec(struct cfx *f, uint32_t slot, const char *sid)
{
	struct chan_sub sub;
	memset(&sub, 0, sizeof(sub));
	sub.conn.slot = slot;
	sub.conn.gen = 1;
	snprintf(sub.session_id, sizeof(sub.session_id), "%s", sid);
	cpl_dispatch(f->loop, CHAN_REC_SUBSCRIBE, &sub, sizeof(sub));
	co_flush(&f->out);
}

/* After a control restart the dataplane re-announces its streams: one whose
 * conversation's owner is gone (or re-created) is kicked; the others are kept
 * under the owner, so deleting the owner later still ends them. */
static void test_resubscribe_checked(void **state)
{
	struct cfx *f = *state;
	char t[AUTH_TOKEN_LEN + 1], sid[CHAN_ID_LEN];
	add_user(f, "carol");
	login(f, "carol", t);
	create_session(f, t, sid);
	subscribe_rec(f, 9, sid);
	expect_nothing(f);
	del_user(f, "carol");
	expect_kick(f, 9);
	add_user(f, "carol");
	subscribe_rec(f, 10, sid);
	expect_kick(f, 10);
	expect_nothing(f);
}

/* A WebSocket opened with an API key: its later messages carry no
 * credentials, and what they post is still counted to that key (the
 * stream's entry does not keep the key's id; the recheck reads it again). */
static void test_ws_apikey_message(void **state)
{
	struct cfx *f = *state;
	char key[64], sid[CHAN_ID_LEN], authz[96], msg[160];
	int rc = 1;
	add_user(f, "kim");
	assert_int_equal(auth_apikey_create(&f->auth, "kim", "ci", key, put_done, &rc), 0);
	settle(f);
	assert_int_equal(rc, 0);
	create_session(f, key, sid);
	snprintf(authz, sizeof(authz), "Bearer %s", key);
	const struct fld open[] = { { CHAN_F_PATH, "/ws/chat" }, { CHAN_F_AUTHORIZATION, authz } };
	dispatch(f, build(f, 7, CHAN_REQ_WS_OPEN, CHAN_M_GET, open, SLUICE_ARRAY_LEN(open)));
	settle(f);
	assert_true(next_rec(f));
	assert_int_equal(((const struct chan_response *)g.p)->status, 101);
	struct auth_ident id;
	assert_true(auth_conn_find(&f->auth, (struct chan_conn){ .slot = 7, .gen = 1 }, &id));
	assert_true(id.apikey);
	assert_string_equal(id.key_id, "");
	snprintf(msg, sizeof(msg), "{\"type\":\"send\",\"session_id\":\"%s\",\"content\":\"hi\"}", sid);
	const struct fld send[] = { { CHAN_F_BODY, msg } };
	dispatch(f, build(f, 7, CHAN_REQ_WS, CHAN_M_OTHER, send, SLUICE_ARRAY_LEN(send)));
	settle(f);
	struct chat_session *cs = chat_session_cached(&f->chat, sid, strlen(sid));
	assert_non_null(cs);
	assert_memory_equal(cs->ans.key_id, "k_", 2);
	assert_int_equal(strlen(cs->ans.key_id), 18);
	assert_true(auth_lookup(&f->auth, key, strlen(key), &id) == 0);
	assert_string_equal(cs->ans.key_id, id.key_id);
}

/* The password does not survive in the request record control handled. */
static void test_login_wipes_record(void **state)
{
	struct cfx *f = *state;
	const char *secret = "correct-horse-battery";
	char body[128];
	snprintf(body, sizeof(body), "{\"username\":\"nobody\",\"password\":\"%s\"}", secret);
	const struct fld fl[] = { { CHAN_F_PATH, "/api/auth/login" }, { CHAN_F_BODY, body },
				  { CHAN_F_PEER, "10.0.0.1:5000" },
				  { CHAN_F_CONTENT_TYPE, "application/json" } };
	uint32_t len = build(f, 2, CHAN_REQ_HTTP, CHAN_M_POST, fl, SLUICE_ARRAY_LEN(fl));
	assert_non_null(memmem(reqbuf, len, secret, strlen(secret)));
	dispatch(f, len);
	assert_null(memmem(reqbuf, len, secret, strlen(secret)));
	assert_null(memmem(reqbuf, len, "nobody", 6));
	/* The unknown user is still verified (against the dummy hash): 401. */
	for (int i = 0; i < 400 && !next_rec(f); i++) {
		struct pollfd pfd = { .fd = pwh_fd(&f->auth.pool), .events = POLLIN };
		if (poll(&pfd, 1, 50) > 0)
			cpl_turn(f->loop, false);
		settle(f);
	}
	assert_int_equal(g.type, CHAN_REC_RESPONSE);
	assert_int_equal(((const struct chan_response *)g.p)->status, 401);
	/* jansson's allocator is back: ordinary requests still work. */
	http(f, 1, CHAN_M_GET, "/api/models", NULL, NULL);
	json_decref(expect_resp(f, 200));
}

/* Pool shares and rates small enough to reach. */
static int fx_setup_logins(void **state)
{
	struct sluice_conf c;
	cfx_conf_default(&c);
	c.login_max_inflight = 4;
	c.login_inflight_user = 1;
	c.login_inflight_ip = 2;
	c.login_rate_user = 3;
	c.login_rate_ip = 100;
	c.login_fail_user = 100;
	c.login_fail_ip = 100;
	c.login_max_sessions = 2;
	*state = cfx_open(&c, 0);
	return 0;
}

static void login_from(struct cfx *f, uint32_t slot, const char *user, const char *peer)
{
	char body[128];
	snprintf(body, sizeof(body), "{\"username\":\"%s\",\"password\":\"pw\"}", user);
	const struct fld fl[] = { { CHAN_F_PATH, "/api/auth/login" }, { CHAN_F_BODY, body },
				  { CHAN_F_PEER, peer }, { CHAN_F_CONTENT_TYPE, "application/json" } };
	dispatch(f, build(f, slot, CHAN_REQ_HTTP, CHAN_M_POST, fl, SLUICE_ARRAY_LEN(fl)));
}

/* The next response, waiting for the password pool; returns its status
 * and checks its slot. */
static uint16_t login_answer(struct cfx *f, uint32_t slot)
{
	for (int i = 0; i < 400 && !next_rec(f); i++) {
		struct pollfd pfd = { .fd = pwh_fd(&f->auth.pool), .events = POLLIN };
		if (poll(&pfd, 1, 50) > 0)
			cpl_turn(f->loop, false);
		settle(f);
	}
	assert_int_equal(g.type, CHAN_REC_RESPONSE);
	const struct chan_response *h = (const void *)g.p;
	assert_int_equal(h->conn.slot, slot);
	return h->status;
}

/* Issue 12: one caller looping logins cannot take the whole pool. A user
 * name holds one running check, an address two; over its share a login is
 * answered 429 at once while others still get in; every admitted login,
 * right or wrong, counts against the user's rate. */
static void test_login_fair_admission(void **state)
{
	struct cfx *f = *state;
	login_from(f, 1, "alice", "10.0.0.1:1");
	expect_nothing(f);
	login_from(f, 2, "alice", "10.0.0.2:1");
	expect_error(f, 429, "too_many_attempts");
	assert_non_null(find_field(CHAN_F_HEADER));
	login_from(f, 3, "bob", "10.0.0.1:2");
	expect_nothing(f);
	login_from(f, 4, "carol", "10.0.0.1:3");
	expect_error(f, 429, "too_many_attempts");
	login_from(f, 5, "dave", "10.0.0.3:1");
	expect_nothing(f);
	uint32_t got = 0;
	for (int i = 0; i < 3; i++) {
		for (int k = 0; k < 400 && !next_rec(f); k++) {
			struct pollfd pfd = { .fd = pwh_fd(&f->auth.pool), .events = POLLIN };
			if (poll(&pfd, 1, 50) > 0)
				cpl_turn(f->loop, false);
			settle(f);
		}
		const struct chan_response *h = (const void *)g.p;
		assert_int_equal(h->status, 401);
		got |= 1u << h->conn.slot;
	}
	assert_int_equal(got, (1u << 1) | (1u << 3) | (1u << 5));
	assert_int_equal(f->auth.stats.logins_unfair, 2);
	/* The rate: alice has had 1 admitted login, 2 more fit, the 4th waits. */
	for (int i = 0; i < 2; i++) {
		login_from(f, 6, "alice", "10.0.0.4:1");
		assert_int_equal(login_answer(f, 6), 401);
	}
	login_from(f, 6, "alice", "10.0.0.4:1");
	expect_error(f, 429, "too_many_attempts");
	const struct chan_field *ra = find_field(CHAN_F_HEADER);
	assert_non_null(ra);
	assert_true(ra->len > 13 && memcmp(ra->data, "Retry-After: ", 13) == 0);
	/* ... bob is not affected. */
	login_from(f, 7, "bob", "10.0.0.4:2");
	assert_int_equal(login_answer(f, 7), 401);
}

static int64_t test_clock_s;
static int64_t test_clock(void *arg)
{
	(void)arg;
	return test_clock_s;
}

/* login_max_sessions: a login beyond the cap ends the user's oldest live
 * session (its token stops working), not anyone else's. */
static void test_login_sessions_capped(void **state)
{
	struct cfx *f = *state;
	char t[3][AUTH_TOKEN_LEN + 1], other[AUTH_TOKEN_LEN + 1];
	test_clock_s = f->auth.now(f->auth.now_arg);
	f->auth.now = test_clock;
	add_user(f, "erin");
	add_user(f, "fred");
	login(f, "fred", other);
	for (int i = 0; i < 3; i++) {
		test_clock_s++;
		auth_login_trim_sessions(&f->auth, "erin", test_clock_s);
		settle(f);
		login(f, "erin", t[i]);
	}
	http(f, 1, CHAN_M_GET, "/api/chat/sessions", NULL, t[0]);
	expect_error(f, 401, "unauthenticated");
	for (int i = 1; i < 3; i++) {
		http(f, 1, CHAN_M_GET, "/api/chat/sessions", NULL, t[i]);
		json_decref(expect_resp(f, 200));
	}
	http(f, 1, CHAN_M_GET, "/api/chat/sessions", NULL, other);
	json_decref(expect_resp(f, 200));
	assert_int_equal(f->auth.stats.sessions_ended_by_cap, 1);
	/* An expired session does not count and is removed on the way. */
	test_clock_s += (int64_t)f->conf.session_ttl_s + 10;
	login(f, "erin", t[0]);
	assert_int_equal(auth_login_trim_sessions(&f->auth, "erin", test_clock_s), 0);
	settle(f);
	http(f, 1, CHAN_M_GET, "/api/chat/sessions", NULL, t[0]);
	json_decref(expect_resp(f, 200));
}

/* A login a cross-site form could send is refused before its body is read:
 * another media type than application/json is 415, a foreign Origin 403;
 * the password is wiped from the record all the same. */
static void test_login_refuses_forms(void **state)
{
	struct cfx *f = *state;
	const char *body = "{\"username\":\"alice\",\"password\":\"form-secret\"}";
	static const char *const bad_types[] = { "text/plain", "application/x-www-form-urlencoded",
						 "multipart/form-data; boundary=x", "application/jsonx", NULL };
	for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_types); i++) {
		const struct fld fl[] = { { CHAN_F_PATH, "/api/auth/login" }, { CHAN_F_BODY, body },
					  { CHAN_F_CONTENT_TYPE, bad_types[i] } };
		uint32_t len = build(f, 3, CHAN_REQ_HTTP, CHAN_M_POST, fl, bad_types[i] ? 3 : 2);
		dispatch(f, len);
		expect_error(f, 415, "unsupported_media_type");
		assert_null(memmem(reqbuf, len, "form-secret", 11));
	}
	const struct fld evil[] = { { CHAN_F_PATH, "/api/auth/login" }, { CHAN_F_BODY, body },
				    { CHAN_F_CONTENT_TYPE, "application/json" },
				    { CHAN_F_ORIGIN, "http://evil.example" } };
	uint32_t len = build(f, 3, CHAN_REQ_HTTP, CHAN_M_POST, evil, SLUICE_ARRAY_LEN(evil));
	dispatch(f, len);
	expect_error(f, 403, "origin_not_allowed");
	assert_null(memmem(reqbuf, len, "form-secret", 11));
	/* An allowed Origin and a JSON type with parameters get as far as the
	 * body's checks. */
	const struct fld ok[] = { { CHAN_F_PATH, "/api/auth/login" }, { CHAN_F_BODY, "{\"password\":\"x\"}" },
				  { CHAN_F_CONTENT_TYPE, "Application/JSON ; charset=utf-8" },
				  { CHAN_F_ORIGIN, f->conf.allowed_origins[0] } };
	dispatch(f, build(f, 3, CHAN_REQ_HTTP, CHAN_M_POST, ok, SLUICE_ARRAY_LEN(ok)));
	expect_error(f, 400, "invalid_request");
	expect_nothing(f);
}

/* GET /api/auth/session names the caller and hands a page its CSRF token;
 * without credentials it says so with user null. */
static void test_auth_session(void **state)
{
	struct cfx *f = *state;
	http(f, 4, CHAN_M_GET, "/api/auth/session", NULL, f->token);
	json_t *j = expect_resp(f, 200);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "user"), "name")), f->user);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "user"), "role")), "user");
	assert_int_equal(json_string_length(json_object_get(j, "csrf_token")), AUTH_TOKEN_LEN);
	assert_true(json_is_integer(json_object_get(j, "expires_at")));
	json_decref(j);
	/* Without (valid) credentials: an answer, not an error. */
	http(f, 4, CHAN_M_GET, "/api/auth/session", NULL, NULL);
	j = expect_resp(f, 200);
	assert_true(json_is_null(json_object_get(j, "user")));
	assert_true(json_is_null(json_object_get(j, "csrf_token")));
	json_decref(j);
	http(f, 4, CHAN_M_GET, "/api/auth/session", NULL, "not-a-token");
	j = expect_resp(f, 200);
	assert_true(json_is_null(json_object_get(j, "user")));
	json_decref(j);
	http(f, 4, CHAN_M_POST, "/api/auth/session", "{}", f->token);
	expect_error(f, 405, "method_not_allowed");
	expect_nothing(f);
}

/* A full map answers 503 store_full with Retry-After, never 500. */
static void test_store_full(void **state)
{
	struct cfx *f = *state;
	char t[AUTH_TOKEN_LEN + 1], sid[CHAN_ID_LEN];
	add_user(f, "dave");
	login(f, "dave", t);
	create_session(f, t, sid);
	static char big[16 * 1024];
	memset(big, 'x', sizeof(big));
	bool full = false;
	for (int i = 0; i < 400 && !full; i++) {
		char um[CHAN_ID_LEN], am[CHAN_ID_LEN];
		snprintf(um, sizeof(um), "m_u%d", i);
		snprintf(am, sizeof(am), "m_a%d", i);
		int err = 1;
		assert_int_equal(store_message_add(f->st, sid, um, big, sizeof(big), am, 1, NULL, put_done, &err), 0);
		settle(f);
		if (err == -ENOSPC) {
			http(f, 1, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"assistant\"}", t);
			assert_true(next_rec(f));
			const struct chan_response *h = (const void *)g.p;
			if (h->status == 201)
				continue;
			assert_int_equal(h->status, 503);
			const struct chan_field *hd = find_field(CHAN_F_HEADER);
			assert_non_null(hd);
			assert_memory_equal(hd->data, "Retry-After: 60", hd->len);
			const struct chan_field *b = find_field(CHAN_F_BODY);
			assert_non_null(b);
			assert_non_null(memmem(b->data, b->len, "\"store_full\"", 12));
			full = true;
		} else {
			assert_int_equal(err, 0);
		}
	}
	assert_true(full);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fail_closed, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_recreated_user, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sse_ends_with_login, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_resubscribe_checked, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ws_apikey_message, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_login_wipes_record, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_login_refuses_forms, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_auth_session, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_store_full, fx_setup_tiny, fx_teardown),
		cmocka_unit_test_setup_teardown(test_login_fair_admission, fx_setup_logins, fx_teardown),
		cmocka_unit_test_setup_teardown(test_login_sessions_capped, fx_setup_logins, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
