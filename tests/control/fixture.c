#include "fixture.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

struct cfx_rec cfx_got;
static _Alignas(8) uint8_t reqbuf[128 * 1024];

void cfx_conf_default(struct sluice_conf *c)
{
	conf_defaults(c);
	c->workers = CFX_WORKERS;
	c->nbackends = 1;
	struct conf_backend *be = &c->backends[0];
	memset(be, 0, sizeof(*be));
	strcpy(be->name, "syn");
	be->type = CONF_BACKEND_SYNTHETIC;
	strcpy(be->models[0], "synth-1");
	be->nmodels = 1;
	be->weight = 1;
	be->max_queue = 64;
	be->ttft_ms = 200;
	be->tokens_per_s = 20;
	be->answer_tokens = 5;
	be->context_window = 8192;
	be->cost_in_per_mtok = 2.0;
	be->cost_out_per_mtok = 10.0;
	c->nagents = 2;
	strcpy(c->agents[0].name, "assistant");
	strcpy(c->agents[0].model, "synth-1");
	strcpy(c->agents[0].description, "General");
	strcpy(c->agents[1].name, "coder");
	strcpy(c->agents[1].model, "synth-1");
	strcpy(c->agents[1].description, "Writes code");
	/* The cheapest Argon2id libsodium accepts: tests hash for speed. */
	c->pwhash_ops = 1;
	c->pwhash_mem_kib = 8192;
	c->login_max_inflight = 2;
	c->session_ttl_s = 60;
}

struct cfx *cfx_open(const struct sluice_conf *conf, unsigned flags)
{
	static int counter;
	char err[256] = "";
	struct cfx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_true(sodium_init() >= 0);
	if (conf)
		f->conf = *conf;
	else
		cfx_conf_default(&f->conf);
	snprintf(f->shm, sizeof(f->shm), "/dev/shm/sluice-test-cfx-%d-%d", (int)getpid(), counter);
	strcpy(f->dir, "/dev/shm/sluice-test-cfx-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->conf.store, sizeof(f->conf.store), "%s", f->dir);
	if (flags & CFX_DASH)
		flags |= CFX_ADMIN;
	if (flags & CFX_ADMIN) {
		snprintf(f->conf.admin_socket, sizeof(f->conf.admin_socket),
			 "/tmp/sluice-test-cfx-%d-%d.sock", (int)getpid(), counter);
		unlink(f->conf.admin_socket);
	}
	counter++;
	f->cp = chan_open(f->shm, CFX_WORKERS, CFX_RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	assert_non_null(f->cp);
	f->dp = chan_open(f->shm, CFX_WORKERS, CFX_RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	assert_non_null(f->dp);
	/* A dataplane is alive from its first heartbeat, as its loop would do. */
	chan_heartbeat(f->dp, sluice_now_ns());
	f->loop = cpl_create(f->cp, err, sizeof(err));
	assert_non_null(f->loop);
	assert_int_equal(co_init(&f->out, f->loop, 32u * 1024u, err, sizeof(err)), 0);
	f->st = store_lmdb_open(f->dir, f->loop, &f->conf, err, sizeof(err));
	if (!f->st)
		fail_msg("store: %s", err);
	f->bk = bk_create(&f->conf, f->loop, err, sizeof(err));
	if (!f->bk)
		fail_msg("backends: %s", err);
	assert_int_equal(chat_init(&f->chat, &f->conf, f->loop, f->st, &f->out, f->bk, err, sizeof(err)), 0);
	assert_int_equal(auth_init(&f->auth, &f->conf, f->loop, f->st, &f->out, err, sizeof(err)), 0);
	assert_int_equal(lim_init(&f->limits, &f->conf, f->st, err, sizeof(err)), 0);
	ev_init(&f->bus);
	struct ev_bus *bus = (flags & CFX_DASH) ? &f->bus : NULL;
	chat_set_bus(&f->chat, bus);
	struct api_deps ad = { .conf = &f->conf, .loop = f->loop, .st = f->st, .out = &f->out,
			       .chat = &f->chat, .auth = &f->auth, .limits = &f->limits, .bk = f->bk, .bus = bus };
	assert_int_equal(api_init(&f->api, &ad, err, sizeof(err)), 0);
	if (flags & CFX_ADMIN) {
		struct admin_deps dd = { .conf = &f->conf, .loop = f->loop, .st = f->st, .out = &f->out,
					 .chat = &f->chat, .auth = &f->auth, .limits = &f->limits, .bk = f->bk,
					 .api_stats = &f->api.stats, .api = bus ? &f->api : NULL, .bus = bus };
		f->admin = admin_create(&dd, err, sizeof(err));
		if (!f->admin)
			fail_msg("admin: %s", err);
	}
	/* The first turn sees the dataplane's heartbeat. */
	cpl_turn(f->loop, false);
	strcpy(f->user, "u");
	f->uid = cfx_add_user(f, f->user);
	cfx_login(f, f->user, f->token);
	return f;
}

static void cfx_rm_dir(const char *dir)
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

int64_t cfx_clock_s;

static int64_t cfx_clock(void *arg)
{
	(void)arg;
	return cfx_clock_s;
}

void cfx_limits_clock(struct cfx *f)
{
	cfx_clock_s = 86400 * 1000 + 30;
	f->limits.now = cfx_clock;
}

void cfx_close(struct cfx *f)
{
	/* As in main.c: running answers end, then the store's completions run
	 * while their owners live. */
	bk_shutdown(f->bk);
	api_free(&f->api);
	co_flush(&f->out);
	store_close(f->st);
	admin_destroy(f->admin);
	lim_free(&f->limits);
	auth_free(&f->auth);
	chat_free(&f->chat);
	bk_destroy(f->bk);
	co_free(&f->out);
	cpl_destroy(f->loop);
	chan_close(f->dp);
	chan_close(f->cp);
	chan_unlink(f->shm, CFX_WORKERS);
	cfx_rm_dir(f->dir);
	free(f);
}

/* ---- records ------------------------------------------------------------- */

uint32_t cfx_build(struct cfx *f, struct chan_conn conn, uint8_t kind, uint8_t method,
		   const struct cfx_field *fl, size_t n)
{
	struct chan_request *r = (struct chan_request *)reqbuf;
	memset(r, 0, sizeof(*r));
	r->conn = conn;
	r->req_id = CFX_REQ_ID;
	r->kind = kind;
	r->method = method;
	r->cp_epoch = cpl_epoch(f->loop);
	uint8_t *q = reqbuf + sizeof(*r);
	for (size_t i = 0; i < n; i++) {
		if (!fl[i].v)
			continue;
		size_t len = fl[i].len ? fl[i].len : strlen(fl[i].v);
		assert_true((size_t)(q - reqbuf) + len + 64 < sizeof(reqbuf));
		chan_field_put(&q, fl[i].tag, fl[i].v, (uint32_t)len);
	}
	return (uint32_t)(q - reqbuf);
}

const uint8_t *cfx_reqbuf(void)
{
	return reqbuf;
}

void cfx_settle(struct cfx *f)
{
	store_lmdb_flush(f->st);
	co_flush(&f->out);
}

void cfx_dispatch(struct cfx *f, uint16_t type, const void *payload, uint32_t len)
{
	cpl_dispatch(f->loop, type, payload, len);
	cfx_settle(f);
}

void cfx_http_as(struct cfx *f, uint16_t w, uint32_t slot, uint8_t method, const char *path,
		 const char *body, const char *token)
{
	char authz[128];
	snprintf(authz, sizeof(authz), "Bearer %s", token);
	const char *qm = strchr(path, '?');
	struct cfx_field fl[] = {
		{ CHAN_F_PATH, path, qm ? (size_t)(qm - path) : 0 },
		{ CHAN_F_QUERY, qm ? qm + 1 : NULL, 0 },
		{ CHAN_F_BODY, body, 0 },
		{ CHAN_F_AUTHORIZATION, token[0] ? authz : NULL, 0 },
	};
	if (qm && !qm[1])
		fl[1].v = NULL;
	struct chan_conn conn = { .worker = w, .slot = slot, .gen = 1 };
	cfx_dispatch(f, CHAN_REC_REQUEST, reqbuf, cfx_build(f, conn, CHAN_REQ_HTTP, method, fl, 4));
}

void cfx_http(struct cfx *f, uint16_t w, uint32_t slot, uint8_t method, const char *path, const char *body)
{
	cfx_http_as(f, w, slot, method, path, body, f->token);
}

bool cfx_next(struct cfx *f, uint32_t w)
{
	struct chan_cons *c = chan_consumer(f->dp, w);
	const struct chan_rec *rec = chan_peek(c);
	/* Admin's backend counters come every second of (virtual) time,
	 * between whatever a test waits for: counted, then skipped. */
	while (rec && rec->type == CHAN_REC_BACKENDS && !f->keep_backends) {
		assert_true(chan_rec_valid(rec->type, rec->payload, rec->len));
		f->backends_records++;
		chan_consume(c);
		rec = chan_peek(c);
	}
	if (!rec) {
		chan_release(c);
		return false;
	}
	assert_true(rec->len <= sizeof(cfx_got.p));
	cfx_got.type = rec->type;
	cfx_got.len = rec->len;
	memcpy(cfx_got.p, rec->payload, rec->len);
	chan_consume(c);
	chan_release(c);
	assert_true(chan_rec_valid(cfx_got.type, cfx_got.p, cfx_got.len));
	return true;
}

const struct chan_field *cfx_field(uint16_t tag)
{
	const uint8_t *p = cfx_got.p + sizeof(struct chan_response);
	const uint8_t *end = cfx_got.p + cfx_got.len;
	bool bad = false;
	const struct chan_field *fl;
	while ((fl = chan_field_next(&p, end, &bad)) != NULL)
		if (fl->tag == tag)
			return fl;
	assert_false(bad);
	return NULL;
}

json_t *cfx_read_resp(struct cfx *f, uint32_t w, struct chan_response *hdr, int *parts)
{
	static char body[256 * 1024];
	size_t blen = 0;
	int n = 0;
	for (;;) {
		assert_true(cfx_next(f, w));
		assert_int_equal(cfx_got.type, CHAN_REC_RESPONSE);
		memcpy(hdr, cfx_got.p, sizeof(*hdr));
		const struct chan_field *b = cfx_field(CHAN_F_BODY);
		if (b) {
			assert_true(blen + b->len <= sizeof(body));
			memcpy(body + blen, b->data, b->len);
			blen += b->len;
		}
		n++;
		if (!(hdr->flags & CHAN_RESP_MORE))
			break;
	}
	if (parts)
		*parts = n;
	if (blen == 0)
		return NULL;
	json_error_t e;
	json_t *j = json_loadb(body, blen, 0, &e);
	assert_non_null(j);
	return j;
}

json_t *cfx_expect_resp(struct cfx *f, uint32_t w, uint16_t status)
{
	struct chan_response h;
	json_t *j = cfx_read_resp(f, w, &h, NULL);
	assert_int_equal(h.status, status);
	assert_int_equal(h.req_id, CFX_REQ_ID);
	return j;
}

void cfx_expect_error(struct cfx *f, uint32_t w, uint16_t status, const char *code)
{
	json_t *j = cfx_expect_resp(f, w, status);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), code);
	json_decref(j);
}

/* ---- users and logins ------------------------------------------------------ */

static void cfx_put_done(void *arg, int err)
{
	*(int *)arg = err;
}

uint64_t cfx_add_user(struct cfx *f, const char *name)
{
	struct store_user u;
	memset(&u, 0, sizeof(u));
	snprintf(u.name, sizeof(u.name), "%s", name);
	strcpy(u.pwhash, "not-a-hash");
	u.created_at = f->auth.now(f->auth.now_arg);
	int err = 1;
	assert_int_equal(store_user_put(f->st, &u, 1, cfx_put_done, &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
	assert_int_equal(store_user_get(f->st, name, &u), 0);
	assert_true(u.uid != 0);
	return u.uid;
}

void cfx_del_user(struct cfx *f, const char *name)
{
	int err = 1;
	assert_int_equal(store_user_del(f->st, name, cfx_put_done, &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
	auth_revoke_user(&f->auth, name);
	co_flush(&f->out);
}

void cfx_login(struct cfx *f, const char *name, char token[AUTH_TOKEN_LEN + 1])
{
	char csrf[STORE_CSRF_MAX];
	int64_t exp;
	int err = 1;
	assert_int_equal(auth_session_create(&f->auth, name, token, csrf, &exp, cfx_put_done, &err), 0);
	cfx_settle(f);
	assert_int_equal(err, 0);
}

void cfx_dataplane_restart(struct cfx *f)
{
	char err[256];
	chan_close(f->dp);
	f->dp = chan_open(f->shm, CFX_WORKERS, CFX_RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	assert_non_null(f->dp);
	chan_heartbeat(f->dp, sluice_now_ns());
	cpl_turn(f->loop, false);
}

void cfx_loop_open(struct cfx_loop *l)
{
	static int counter;
	char err[256];
	snprintf(l->shm, sizeof(l->shm), "/dev/shm/sluice-test-cfxl-%d-%d", (int)getpid(), counter++);
	l->cp = chan_open(l->shm, 1, CFX_RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	assert_non_null(l->cp);
	l->loop = cpl_create(l->cp, err, sizeof(err));
	assert_non_null(l->loop);
}

void cfx_loop_close(struct cfx_loop *l)
{
	cpl_destroy(l->loop);
	chan_close(l->cp);
	chan_unlink(l->shm, 1);
}
