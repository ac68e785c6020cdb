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
#include <lmdb.h>
#include <sodium.h>

#include "api/api.h"
#include "api/api_auth.h"
#include "auth/auth.h"
#include "sluice/chan.h"
#include "sluice/chan_proto.h"

#define RING (64u * 1024u)

struct fx {
	char shm[96];
	char dir[64];
	struct sluice_conf conf;
	struct chan_region *cp, *dp;
	struct store *st;
	struct chan_out out;
	struct api api;
	struct auth auth;
	bool auth_ok;
};

struct got {
	uint16_t type;
	uint32_t len;
	_Alignas(8) uint8_t p[RING];
};
static struct got g;

static void fx_conf(struct fx *f)
{
	conf_defaults(&f->conf);
	f->conf.workers = 2;
	f->conf.nbackends = 1;
	struct conf_backend *be = &f->conf.backends[0];
	memset(be, 0, sizeof(*be));
	strcpy(be->name, "syn");
	be->type = CONF_BACKEND_SYNTHETIC;
	strcpy(be->models[0], "synth-1");
	be->nmodels = 1;
	be->ttft_ms = 200;
	be->tokens_per_s = 20;
	be->answer_tokens = 5;
	be->context_window = 8192;
	f->conf.nagents = 1;
	strcpy(f->conf.agents[0].name, "assistant");
	strcpy(f->conf.agents[0].model, "synth-1");
	f->conf.pwhash_ops = 1;
	f->conf.pwhash_mem_kib = 8192;
	f->conf.login_max_inflight = 2;
	f->conf.session_ttl_s = 60;
}

static void fx_open(struct fx *f)
{
	static int counter;
	char err[256];
	snprintf(f->shm, sizeof(f->shm), "/dev/shm/sluice-test-apiauth-%d-%d", (int)getpid(), counter++);
	snprintf(f->conf.store, sizeof(f->conf.store), "%s", f->dir);
	f->cp = chan_open(f->shm, 2, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	assert_non_null(f->cp);
	f->dp = chan_open(f->shm, 2, RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	assert_non_null(f->dp);
	f->st = store_lmdb_open(f->dir, NULL, &f->conf, err, sizeof(err));
	assert_non_null(f->st);
	assert_int_equal(co_init(&f->out, f->cp, 32u * 1024u), 0);
	assert_int_equal(api_init(&f->api, &f->conf, f->st, &f->out), 0);
	assert_int_equal(auth_init(&f->auth, &f->conf, f->st, &f->out, false, err, sizeof(err)), 0);
	f->auth_ok = true;
	f->api.auth = &f->auth;
}

static struct fx *fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_true(sodium_init() >= 0);
	fx_conf(f);
	strcpy(f->dir, "/dev/shm/sluice-test-apiauth-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	return f;
}

static int fx_setup(void **state)
{
	struct fx *f = fx_new();
	fx_open(f);
	*state = f;
	return 0;
}

/* A store of 1 MiB, so that it can be filled. */
static int fx_setup_tiny(void **state)
{
	struct fx *f = fx_new();
	f->conf.store_map_mb = 1;
	fx_open(f);
	*state = f;
	return 0;
}

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char p[128 + sizeof(e->d_name)];
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		assert_int_equal(unlink(p), 0);
	}
	closedir(d);
	assert_int_equal(rmdir(dir), 0);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	if (f->auth_ok)
		auth_free(&f->auth);
	api_free(&f->api);
	co_free(&f->out);
	store_close(f->st);
	chan_close(f->dp);
	chan_close(f->cp);
	chan_unlink(f->shm, 2);
	rm_dir(f->dir);
	free(f);
	return 0;
}

/* ---- records --------------------------------------------------------------- */

struct fld {
	uint16_t tag;
	const char *v;
};

static _Alignas(8) uint8_t reqbuf[128 * 1024];

/* Builds a REQUEST record for conn (worker 0, slot) into reqbuf. */
static uint32_t build(uint32_t slot, uint8_t kind, uint8_t method, const struct fld *fl, size_t n)
{
	struct chan_request *r = (struct chan_request *)reqbuf;
	memset(r, 0, sizeof(*r));
	r->conn.slot = slot;
	r->conn.gen = 1;
	r->req_id = 42;
	r->kind = kind;
	r->method = method;
	uint8_t *q = reqbuf + sizeof(*r);
	for (size_t i = 0; i < n; i++)
		if (fl[i].v)
			chan_field_put(&q, fl[i].tag, fl[i].v, (uint32_t)strlen(fl[i].v));
	return (uint32_t)(q - reqbuf);
}

static void settle(struct fx *f)
{
	store_lmdb_flush(f->st);
	co_flush(&f->out);
}

static void dispatch(struct fx *f, uint32_t len)
{
	api_dispatch(&f->api, CHAN_REC_REQUEST, reqbuf, len);
	settle(f);
}

/* An HTTP request on worker 0 with a Bearer token (NULL: none). */
static void http(struct fx *f, uint32_t slot, uint8_t method, const char *path, const char *body,
		 const char *token)
{
	char authz[128] = "";
	if (token)
		snprintf(authz, sizeof(authz), "Bearer %s", token);
	const struct fld fl[] = { { CHAN_F_PATH, path }, { CHAN_F_BODY, body },
				  { CHAN_F_AUTHORIZATION, token ? authz : NULL } };
	dispatch(f, build(slot, CHAN_REQ_HTTP, method, fl, SLUICE_ARRAY_LEN(fl)));
}

static bool next_rec(struct fx *f)
{
	struct chan_cons *c = chan_consumer(f->dp, 0);
	const struct chan_rec *rec = chan_peek(c);
	if (!rec)
		return false;
	assert_true(rec->len <= sizeof(g.p));
	g.type = rec->type;
	g.len = rec->len;
	memcpy(g.p, rec->payload, rec->len);
	chan_consume(c);
	chan_release(c);
	return true;
}

static const struct chan_field *find_field(uint16_t tag)
{
	const uint8_t *p = g.p + sizeof(struct chan_response);
	const uint8_t *end = g.p + g.len;
	bool bad = false;
	const struct chan_field *fl;
	while ((fl = chan_field_next(&p, end, &bad)) != NULL)
		if (fl->tag == tag)
			return fl;
	assert_false(bad);
	return NULL;
}

/* The next response (one part) on worker 0: its status and parsed body. */
static json_t *expect_resp(struct fx *f, uint16_t status)
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

static void expect_error(struct fx *f, uint16_t status, const char *code)
{
	json_t *j = expect_resp(f, status);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), code);
	json_decref(j);
}

static void expect_kick(struct fx *f, uint32_t slot)
{
	assert_true(next_rec(f));
	assert_int_equal(g.type, CHAN_REC_KICK);
	const struct chan_kick *k = (const void *)g.p;
	assert_int_equal(k->conn.slot, slot);
	assert_int_equal(k->code, 1008);
}

static void expect_nothing(struct fx *f)
{
	assert_false(next_rec(f));
}

/* ---- users and logins ------------------------------------------------------ */

static void put_done(void *arg, int err)
{
	*(int *)arg = err;
}

static uint64_t add_user(struct fx *f, const char *name)
{
	struct store_user u;
	memset(&u, 0, sizeof(u));
	snprintf(u.name, sizeof(u.name), "%s", name);
	strcpy(u.pwhash, "not-a-hash");
	u.created_at = f->auth.now(f->auth.now_arg);
	int err = 1;
	assert_int_equal(store_user_put(f->st, &u, 1, put_done, &err), 0);
	settle(f);
	assert_int_equal(err, 0);
	assert_int_equal(store_user_get(f->st, name, &u), 0);
	assert_true(u.uid != 0);
	return u.uid;
}

static void del_user(struct fx *f, const char *name)
{
	int err = 1;
	assert_int_equal(store_user_del(f->st, name, put_done, &err), 0);
	settle(f);
	assert_int_equal(err, 0);
	auth_revoke_user(&f->auth, name);
	co_flush(&f->out);
}

static void login(struct fx *f, const char *name, char token[AUTH_TOKEN_LEN + 1])
{
	char csrf[STORE_CSRF_MAX];
	int64_t exp;
	int err = 1;
	assert_int_equal(auth_session_create(&f->auth, name, token, csrf, &exp, put_done, &err), 0);
	settle(f);
	assert_int_equal(err, 0);
}

static void create_session(struct fx *f, const char *token, char sid[CHAN_ID_LEN])
{
	http(f, 1, CHAN_M_POST, "/api/chat/sessions", "{\"agent_id\":\"assistant\"}", token);
	json_t *j = expect_resp(f, 201);
	snprintf(sid, CHAN_ID_LEN, "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
}

static void sessions_listed(struct fx *f, const char *token, size_t want)
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
	struct fx *f = *state;
	const struct fld fl[] = { { CHAN_F_PATH, "/api/chat/sessions" } };
	uint32_t len = build(1, CHAN_REQ_HTTP, CHAN_M_GET, fl, 1);
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
	struct fx *f = *state;
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
	dispatch(f, build(7, CHAN_REQ_WS, CHAN_M_GET, fl, SLUICE_ARRAY_LEN(fl)));
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
	struct fx *f = *state;
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

static void subscribe_rec(struct fx *f, uint32_t slot, const char *sid)
{
	struct chan_sub sub;
	memset(&sub, 0, sizeof(sub));
	sub.conn.slot = slot;
	sub.conn.gen = 1;
	snprintf(sub.session_id, sizeof(sub.session_id), "%s", sid);
	api_dispatch(&f->api, CHAN_REC_SUBSCRIBE, &sub, sizeof(sub));
	co_flush(&f->out);
}

/* After a control restart the dataplane re-announces its streams: one whose
 * conversation's owner is gone (or re-created) is kicked; the others are kept
 * under the owner, so deleting the owner later still ends them. */
static void test_resubscribe_checked(void **state)
{
	struct fx *f = *state;
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

/* The password does not survive in the request record control handled. */
static void test_login_wipes_record(void **state)
{
	struct fx *f = *state;
	const char *secret = "correct-horse-battery";
	char body[128];
	snprintf(body, sizeof(body), "{\"username\":\"nobody\",\"password\":\"%s\"}", secret);
	const struct fld fl[] = { { CHAN_F_PATH, "/api/auth/login" }, { CHAN_F_BODY, body },
				  { CHAN_F_PEER, "10.0.0.1:5000" } };
	uint32_t len = build(2, CHAN_REQ_HTTP, CHAN_M_POST, fl, SLUICE_ARRAY_LEN(fl));
	assert_non_null(memmem(reqbuf, len, secret, strlen(secret)));
	dispatch(f, len);
	assert_null(memmem(reqbuf, len, secret, strlen(secret)));
	assert_null(memmem(reqbuf, len, "nobody", 6));
	/* The unknown user is still verified (against the dummy hash): 401. */
	for (int i = 0; i < 400 && !next_rec(f); i++) {
		struct pollfd pfd = { .fd = auth_pool_fd(&f->auth), .events = POLLIN };
		if (poll(&pfd, 1, 50) > 0)
			auth_on_pool(&f->auth);
		settle(f);
	}
	assert_int_equal(g.type, CHAN_REC_RESPONSE);
	assert_int_equal(((const struct chan_response *)g.p)->status, 401);
	/* jansson's allocator is back: ordinary requests still work. */
	http(f, 1, CHAN_M_GET, "/api/models", NULL, NULL);
	json_decref(expect_resp(f, 200));
}

/* A full map answers 503 store_full with Retry-After, never 500. */
static void test_store_full(void **state)
{
	struct fx *f = *state;
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
		assert_int_equal(store_message_add(f->st, sid, um, big, sizeof(big), am, 1, put_done, &err), 0);
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

/* The schema 1 layouts, written by hand to check the migration. */
struct v1_user {
	uint8_t role;
	uint8_t pad[7];
	int64_t created_at;
	char pwhash[STORE_PWHASH_MAX];
};

struct v1_conv {
	char user[STORE_USER_MAX];
	char agent_id[STORE_AGENT_MAX];
	char model_id[CONF_NAME_MAX];
	char title[STORE_TITLE_MAX];
	int64_t created_at, updated_at;
	uint32_t nmsg;
	uint8_t archived;
	uint8_t pad[3];
};

static void v1_put(MDB_txn *t, MDB_dbi db, const char *key, size_t klen, const void *v, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, val = { vlen, (void *)v };
	assert_int_equal(mdb_put(t, db, &k, &val, 0), 0);
}

/* Schema 1 -> 2: users get a uid, conversations their owner's; a conversation
 * older than its owner's record (an earlier user of that name) gets none. */
static void test_migration(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	MDB_env *env;
	MDB_txn *t;
	MDB_dbi users, convs, meta;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
	assert_int_equal(mdb_dbi_open(t, "users", MDB_CREATE, &users), 0);
	assert_int_equal(mdb_dbi_open(t, "conversations", MDB_CREATE, &convs), 0);
	assert_int_equal(mdb_dbi_open(t, "meta", MDB_CREATE, &meta), 0);
	v1_put(t, meta, "schema_version", 14, "1", 1);
	struct v1_user u = { .created_at = 1000 };
	strcpy(u.pwhash, "h");
	v1_put(t, users, "erin", 4, &u, sizeof(u));
	struct v1_conv c;
	memset(&c, 0, sizeof(c));
	strcpy(c.user, "erin");
	strcpy(c.agent_id, "assistant");
	strcpy(c.model_id, "synth-1");
	c.created_at = c.updated_at = 2000;
	v1_put(t, convs, "s_new", 5, &c, sizeof(c));
	c.created_at = c.updated_at = 500;
	v1_put(t, convs, "s_old", 5, &c, sizeof(c));
	assert_int_equal(mdb_txn_commit(t), 0);
	mdb_env_close(env);

	char err[256];
	f->st = store_lmdb_open(f->dir, NULL, &f->conf, err, sizeof(err));
	assert_non_null(f->st);
	struct store_user su;
	assert_int_equal(store_user_get(f->st, "erin", &su), 0);
	assert_true(su.uid != 0);
	assert_int_equal(su.created_at, 1000);
	assert_string_equal(su.pwhash, "h");
	struct store_session ss;
	assert_int_equal(store_session_get(f->st, "s_new", &ss), 0);
	assert_true(ss.owner_uid == su.uid);
	assert_string_equal(ss.model_id, "synth-1");
	assert_int_equal(store_session_get(f->st, "s_old", &ss), 0);
	assert_true(ss.owner_uid == 0);
	struct store_stats sst;
	assert_int_equal(store_stats(f->st, &sst), 0);
	assert_int_equal(sst.schema_version, 2);
	/* A password change keeps the identity. */
	strcpy(su.pwhash, "h2");
	int done = 1;
	assert_int_equal(store_user_put(f->st, &su, 0, put_done, &done), 0);
	store_lmdb_flush(f->st);
	assert_int_equal(done, 0);
	struct store_user su2;
	assert_int_equal(store_user_get(f->st, "erin", &su2), 0);
	assert_true(su2.uid == su.uid);
	assert_string_equal(su2.pwhash, "h2");
	store_close(f->st);
	rm_dir(f->dir);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fail_closed, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_recreated_user, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sse_ends_with_login, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_resubscribe_checked, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_login_wipes_record, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_store_full, fx_setup_tiny, fx_teardown),
		cmocka_unit_test(test_migration),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
