/*
 * control/auth: token format, keyed hashing with the server secret, the
 * secret file, CSRF, credential parsing, throttling windows, session expiry
 * and revocation under an injected clock (KICK records read back from a real
 * channel region), and the password pool (rehash detection, bounded slots).
 * The store is a small fake holding users, API keys and auth sessions.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "auth/auth.h"
#include "auth/pwhash.h"
#include "sluice/chan.h"

#define RING (64u * 1024u)
#define FAKE_N 16

/* ---- fake store ------------------------------------------------------------- */

struct fake_store {
	struct store base;
	struct store_user users[FAKE_N];
	struct store_auth auths[FAKE_N];
	struct store_apikey keys[FAKE_N];
	int auth_dels;
};

static struct fake_store *fs(struct store *st)
{
	return (struct fake_store *)st;
}

static int fake_user_put(struct store *st, const struct store_user *u, int create_only,
			 store_done_fn done, void *arg)
{
	struct store_user *free_slot = NULL;
	for (int i = 0; i < FAKE_N; i++) {
		struct store_user *x = &fs(st)->users[i];
		if (x->name[0] && strcmp(x->name, u->name) == 0) {
			if (create_only)
				return -EEXIST;
			*x = *u;
			done(arg, 0);
			return 0;
		}
		if (!x->name[0] && !free_slot)
			free_slot = x;
	}
	if (!create_only)
		return -ENOENT;
	if (!free_slot)
		return -ENOSPC;
	*free_slot = *u;
	done(arg, 0);
	return 0;
}

static int fake_user_get(struct store *st, const char *name, struct store_user *out)
{
	for (int i = 0; i < FAKE_N; i++) {
		if (fs(st)->users[i].name[0] && strcmp(fs(st)->users[i].name, name) == 0) {
			*out = fs(st)->users[i];
			return 0;
		}
	}
	return -ENOENT;
}

static int fake_user_del(struct store *st, const char *name, store_done_fn done, void *arg)
{
	for (int i = 0; i < FAKE_N; i++) {
		if (fs(st)->users[i].name[0] && strcmp(fs(st)->users[i].name, name) == 0) {
			memset(&fs(st)->users[i], 0, sizeof(fs(st)->users[i]));
			done(arg, 0);
			return 0;
		}
	}
	return -ENOENT;
}

static bool zero_hash(const uint8_t *h)
{
	for (int i = 0; i < STORE_HASH_LEN; i++)
		if (h[i])
			return false;
	return true;
}

static int fake_auth_put(struct store *st, const struct store_auth *a, store_done_fn done, void *arg)
{
	for (int i = 0; i < FAKE_N; i++) {
		if (zero_hash(fs(st)->auths[i].hash)) {
			fs(st)->auths[i] = *a;
			done(arg, 0);
			return 0;
		}
	}
	return -ENOSPC;
}

static int fake_auth_get(struct store *st, const uint8_t h[STORE_HASH_LEN], struct store_auth *out)
{
	for (int i = 0; i < FAKE_N; i++) {
		if (!zero_hash(fs(st)->auths[i].hash) && memcmp(fs(st)->auths[i].hash, h, STORE_HASH_LEN) == 0) {
			*out = fs(st)->auths[i];
			return 0;
		}
	}
	return -ENOENT;
}

static int fake_auth_del(struct store *st, const uint8_t h[STORE_HASH_LEN], store_done_fn done, void *arg)
{
	for (int i = 0; i < FAKE_N; i++) {
		if (!zero_hash(fs(st)->auths[i].hash) && memcmp(fs(st)->auths[i].hash, h, STORE_HASH_LEN) == 0) {
			memset(&fs(st)->auths[i], 0, sizeof(fs(st)->auths[i]));
			fs(st)->auth_dels++;
			done(arg, 0);
			return 0;
		}
	}
	return -ENOENT;
}

static int fake_apikey_put(struct store *st, const struct store_apikey *k, store_done_fn done, void *arg)
{
	for (int i = 0; i < FAKE_N; i++) {
		if (!fs(st)->keys[i].id[0]) {
			fs(st)->keys[i] = *k;
			done(arg, 0);
			return 0;
		}
	}
	return -ENOSPC;
}

static int fake_apikey_get(struct store *st, const uint8_t h[STORE_HASH_LEN], struct store_apikey *out)
{
	for (int i = 0; i < FAKE_N; i++) {
		if (fs(st)->keys[i].id[0] && memcmp(fs(st)->keys[i].hash, h, STORE_HASH_LEN) == 0) {
			*out = fs(st)->keys[i];
			return 0;
		}
	}
	return -ENOENT;
}

static const struct store_ops fake_ops = {
	.user_put = fake_user_put, .user_get = fake_user_get, .user_del = fake_user_del,
	.auth_put = fake_auth_put, .auth_get = fake_auth_get, .auth_del = fake_auth_del,
	.apikey_put = fake_apikey_put, .apikey_get = fake_apikey_get,
};

/* ---- fixture ------------------------------------------------------------------ */

struct fx {
	char shm[96];
	char dir[96];
	struct sluice_conf conf;
	struct chan_region *cp, *dp;
	struct cp_loop *loop;
	struct chan_out out;
	struct fake_store st;
	struct auth auth;
	int64_t now;
};

static int64_t fx_clock(void *arg)
{
	return ((struct fx *)arg)->now;
}

static int fx_setup(void **state)
{
	static int counter;
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_true(sodium_init() >= 0);
	snprintf(f->shm, sizeof(f->shm), "/dev/shm/sluice-test-auth-%d-%d", (int)getpid(), counter);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-test-auth-%d-%d", (int)getpid(), counter++);
	conf_defaults(&f->conf);
	f->conf.workers = 2;
	snprintf(f->conf.store, sizeof(f->conf.store), "%s", f->dir);
	f->conf.pwhash_ops = 1;
	f->conf.pwhash_mem_kib = 8192;
	f->conf.login_max_inflight = 2;
	f->conf.session_ttl_s = 60;
	f->conf.login_fail_user = 3;
	f->conf.login_fail_ip = 5;
	f->conf.login_window_s = 10;
	f->conf.norigins = 1;
	strcpy(f->conf.allowed_origins[0], "https://chat.example");
	char err[256];
	f->cp = chan_open(f->shm, 2, RING, CHAN_ROLE_CONTROL, err, sizeof(err));
	assert_non_null(f->cp);
	f->dp = chan_open(f->shm, 2, RING, CHAN_ROLE_DATAPLANE, err, sizeof(err));
	assert_non_null(f->dp);
	f->loop = cpl_create(f->cp, err, sizeof(err));
	assert_non_null(f->loop);
	assert_int_equal(co_init(&f->out, f->loop, 32u * 1024u, err, sizeof(err)), 0);
	f->st.base.ops = &fake_ops;
	assert_int_equal(auth_init(&f->auth, &f->conf, f->loop, &f->st.base, &f->out, err, sizeof(err)), 0);
	f->now = 1000000;
	f->auth.now = fx_clock;
	f->auth.now_arg = f;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char path[160];
	auth_free(&f->auth);
	co_free(&f->out);
	cpl_destroy(f->loop);
	chan_close(f->dp);
	chan_close(f->cp);
	chan_unlink(f->shm, 2);
	snprintf(path, sizeof(path), "%s/%s", f->dir, AUTH_SECRET_FILE);
	unlink(path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void noop_done(void *arg, int err)
{
	int *rc = arg;
	if (rc)
		*rc = err;
}

static void add_user(struct fx *f, const char *name, uint8_t role)
{
	struct store_user u;
	memset(&u, 0, sizeof(u));
	strcpy(u.name, name);
	u.role = role;
	u.created_at = f->now;
	strcpy(u.pwhash, "$argon2id$unused");
	assert_int_equal(fake_user_put(&f->st.base, &u, 1, noop_done, NULL), 0);
}

/* Reads the next c2d record of worker w; false when there is none. */
static bool next_kick(struct fx *f, uint32_t w, struct chan_kick *out)
{
	co_flush(&f->out);
	struct chan_cons *c = chan_consumer(f->dp, w);
	const struct chan_rec *rec = chan_peek(c);
	if (!rec)
		return false;
	assert_int_equal(rec->type, CHAN_REC_KICK);
	assert_int_equal(rec->len, sizeof(*out));
	assert_true(chan_rec_valid(rec->type, rec->payload, rec->len));
	memcpy(out, rec->payload, sizeof(*out));
	chan_consume(c);
	chan_release(c);
	return true;
}

static struct chan_conn mkconn(uint16_t w, uint32_t slot)
{
	struct chan_conn c = { .worker = w, .slot = slot, .gen = 7 };
	return c;
}

/* ---- tokens and hashing ---------------------------------------------------- */

static void test_token_format(void **state)
{
	(void)state;
	char a[AUTH_TOKEN_LEN + 1], b[AUTH_TOKEN_LEN + 1];
	auth_token_new(a);
	auth_token_new(b);
	assert_int_equal(strlen(a), 43);
	assert_string_not_equal(a, b);
	for (int i = 0; i < 43; i++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]));
	unsigned char raw[64];
	size_t rl = 0;
	assert_int_equal(sodium_base642bin(raw, sizeof(raw), a, 43, NULL, &rl, NULL,
					   sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
	assert_int_equal(rl, 32);
	assert_true(auth_token_wellformed(a, 43));
	assert_false(auth_token_wellformed(a, 42));
	char key[64] = "sk_";
	strcat(key, a);
	assert_true(auth_token_wellformed(key, strlen(key)));
	key[0] = 'x';
	assert_false(auth_token_wellformed(key, strlen(key)));
	char bad[AUTH_TOKEN_LEN + 1];
	memcpy(bad, a, sizeof(bad));
	bad[5] = '+';
	assert_false(auth_token_wellformed(bad, 43));
	/* The last character carries 2 zero bits: flipping either is refused. */
	memcpy(bad, a, sizeof(bad));
	bad[42] = (char)(bad[42] ^ 1);
	assert_false(auth_token_wellformed(bad, 43));
}

static void test_keyed_hash(void **state)
{
	struct fx *f = *state;
	char t[AUTH_TOKEN_LEN + 1];
	auth_token_new(t);
	uint8_t h1[STORE_HASH_LEN], h2[STORE_HASH_LEN], plain[STORE_HASH_LEN];
	auth_token_hash(&f->auth, t, 43, h1);
	auth_token_hash(&f->auth, t, 43, h2);
	assert_memory_equal(h1, h2, STORE_HASH_LEN);
	crypto_generichash(plain, sizeof(plain), (const unsigned char *)t, 43, NULL, 0);
	assert_memory_not_equal(h1, plain, STORE_HASH_LEN);
	t[0] ^= 1;
	auth_token_hash(&f->auth, t, 43, h2);
	assert_memory_not_equal(h1, h2, STORE_HASH_LEN);
	t[0] ^= 1;
	/* Another secret, another hash. */
	uint8_t saved[sizeof(f->auth.secret)];
	memcpy(saved, f->auth.secret, sizeof(saved));
	f->auth.secret[0] ^= 0x80;
	auth_token_hash(&f->auth, t, 43, h2);
	assert_memory_not_equal(h1, h2, STORE_HASH_LEN);
	memcpy(f->auth.secret, saved, sizeof(saved));
}

static void test_secret_file(void **state)
{
	struct fx *f = *state;
	char path[160], err[256];
	snprintf(path, sizeof(path), "%s/%s", f->dir, AUTH_SECRET_FILE);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(sb.st_size, 32);
	/* A second start reads the same secret: hashes stay valid. */
	static struct auth b;
	assert_int_equal(auth_init(&b, &f->conf, f->loop, &f->st.base, &f->out, err, sizeof(err)), 0);
	assert_memory_equal(b.secret, f->auth.secret, sizeof(b.secret));
	auth_free(&b);
	for (size_t i = 0; i < sizeof(b.secret); i++)
		assert_int_equal(b.secret[i], 0);
	/* A secret others can read is refused. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(auth_init(&b, &f->conf, f->loop, &f->st.base, &f->out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "0600"));
	assert_int_equal(chmod(path, 0600), 0);
}

static void test_csrf(void **state)
{
	(void)state;
	char c[AUTH_TOKEN_LEN + 1];
	auth_token_new(c);
	assert_true(auth_csrf_ok(c, 43, c));
	assert_false(auth_csrf_ok(c, 42, c));
	assert_false(auth_csrf_ok(NULL, 0, c));
	char w[AUTH_TOKEN_LEN + 1];
	memcpy(w, c, sizeof(w));
	w[10] = w[10] == 'a' ? 'b' : 'a';
	assert_false(auth_csrf_ok(w, 43, c));
	assert_false(auth_csrf_ok("", 0, ""));
}

static void test_credential_parsing(void **state)
{
	struct fx *f = *state;
	size_t n = 0;
	const char *t = auth_bearer("Bearer abc", 10, &n);
	assert_non_null(t);
	assert_int_equal(n, 3);
	assert_memory_equal(t, "abc", 3);
	assert_non_null(auth_bearer("bearer  xyz ", 12, &n));
	assert_int_equal(n, 3);
	assert_null(auth_bearer("Basic abc", 9, &n));
	assert_null(auth_bearer("Bearerabc", 9, &n));
	assert_null(auth_bearer("Bearer ", 7, &n));

	const char *ck = "a=1; sluice_session=TOK; b=2";
	t = auth_cookie(ck, strlen(ck), &n);
	assert_non_null(t);
	assert_int_equal(n, 3);
	assert_memory_equal(t, "TOK", 3);
	ck = "xsluice_session=TOK";
	assert_null(auth_cookie(ck, strlen(ck), &n));
	ck = "sluice_sessionx=1";
	assert_null(auth_cookie(ck, strlen(ck), &n));

	const char *pr = "sluice.v1, sluice.auth.SECRET";
	t = auth_ws_proto_token(pr, strlen(pr), &n);
	assert_non_null(t);
	assert_int_equal(n, 6);
	assert_memory_equal(t, "SECRET", 6);
	assert_true(auth_ws_proto_offers(pr, strlen(pr), "sluice.v1"));
	assert_false(auth_ws_proto_offers(pr, strlen(pr), "sluice.v2"));
	assert_null(auth_ws_proto_token("sluice.v1", 9, &n));

	assert_true(auth_origin_allowed(&f->auth, "https://chat.example", 20));
	assert_true(auth_origin_allowed(&f->auth, "HTTPS://CHAT.EXAMPLE", 20));
	assert_false(auth_origin_allowed(&f->auth, "https://chat.example.evil", 25));
	assert_false(auth_origin_allowed(&f->auth, "null", 4));
}

/* ---- throttling -------------------------------------------------------------- */

static void test_throttle_window(void **state)
{
	struct fx *f = *state;
	struct auth_throttle *t = &f->auth.by_user; /* limit 3 per 10 s */
	int64_t t0 = 5000;
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0), 0);
	auth_throttle_fail(t, "alice", 5, t0);
	auth_throttle_fail(t, "alice", 5, t0 + 1);
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0 + 2), 0);
	auth_throttle_fail(t, "alice", 5, t0 + 2);
	/* Third failure inside the window: wait until the window (from the first failure) ends. */
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0 + 2), 8);
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0 + 9), 1);
	assert_int_equal(auth_throttle_wait(t, "bob", 3, t0 + 2), 0);
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0 + 10), 0);
	/* A failure after the window opens a fresh one. */
	auth_throttle_fail(t, "alice", 5, t0 + 11);
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0 + 11), 0);
	auth_throttle_fail(t, "alice", 5, t0 + 11);
	auth_throttle_fail(t, "alice", 5, t0 + 12);
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0 + 12), 9);
	auth_throttle_reset(t, "alice", 5);
	assert_int_equal(auth_throttle_wait(t, "alice", 5, t0 + 12), 0);
}

static void test_throttle_flood(void **state)
{
	struct fx *f = *state;
	struct auth_throttle *t = &f->auth.by_addr; /* limit 5 per 10 s */
	int64_t t0 = 7000;
	for (int i = 0; i < 5; i++)
		auth_throttle_fail(t, "10.0.0.1", 8, t0);
	assert_true(auth_throttle_wait(t, "10.0.0.1", 8, t0) > 0);
	/* Many other keys later: the table never grows, and the throttled
	 * key is only evicted when older entries are all in use. */
	char k[32];
	for (int i = 0; i < 100; i++) {
		int n = snprintf(k, sizeof(k), "10.1.%d.%d", i / 256, i % 256);
		auth_throttle_fail(t, k, (size_t)n, t0 + 1);
	}
	assert_true(auth_throttle_wait(t, "10.0.0.1", 8, t0 + 1) > 0);
}

/* ---- sessions, expiry, revocation --------------------------------------------- */

static void test_session_expiry(void **state)
{
	struct fx *f = *state;
	add_user(f, "alice", STORE_USER_ROLE_ADMIN);
	char tok[AUTH_TOKEN_LEN + 1], csrf[STORE_CSRF_MAX];
	int64_t exp = 0;
	int rc = -1;
	assert_int_equal(auth_session_create(&f->auth, "alice", tok, csrf, &exp, noop_done, &rc), 0);
	assert_int_equal(rc, 0);
	assert_int_equal(exp, f->now + 60);
	assert_int_equal(strlen(csrf), 43);
	assert_string_not_equal(tok, csrf);
	/* Only the keyed hash is stored. */
	assert_null(memmem(&f->st.auths, sizeof(f->st.auths), tok, 43));

	struct auth_ident id;
	assert_int_equal(auth_lookup(&f->auth, tok, 43, &id), 0);
	assert_string_equal(id.user, "alice");
	assert_int_equal(id.role, STORE_USER_ROLE_ADMIN);
	assert_string_equal(id.csrf, csrf);
	assert_false(id.apikey);

	struct chan_conn c = mkconn(1, 33);
	assert_int_equal(auth_conn_add(&f->auth, c, &id), 0);
	/* The stream's entry keeps the identity but not the CSRF token. */
	struct auth_ident got;
	assert_true(auth_conn_find(&f->auth, c, &got));
	assert_string_equal(got.user, "alice");
	assert_int_equal(got.uid, id.uid);
	assert_int_equal(got.role, STORE_USER_ROLE_ADMIN);
	assert_memory_equal(got.hash, id.hash, STORE_HASH_LEN);
	assert_int_equal(got.expires_at, f->now + 60);
	assert_false(got.apikey);
	assert_false(got.owner_only);
	assert_string_equal(got.csrf, "");
	assert_int_equal(auth_recheck(&f->auth, &got), 0);
	f->now += 59;
	assert_int_equal(auth_lookup(&f->auth, tok, 43, &id), 0);
	assert_int_equal(auth_expire(&f->auth, f->now), 0);
	struct chan_kick k;
	assert_false(next_kick(f, 1, &k));
	f->now += 1;
	assert_int_equal(auth_expire(&f->auth, f->now), 1);
	assert_true(next_kick(f, 1, &k));
	assert_int_equal(k.conn.slot, 33);
	assert_int_equal(k.conn.gen, 7);
	assert_int_equal(k.code, 1008);
	assert_string_equal(k.reason_code, "unauthenticated");
	assert_false(auth_conn_find(&f->auth, c, &got));
	/* Expired: refused, and removed from the store on the way. */
	assert_int_equal(auth_lookup(&f->auth, tok, 43, &id), -1);
	assert_int_equal(f->st.auth_dels, 1);
}

static void test_tampered_tokens(void **state)
{
	struct fx *f = *state;
	add_user(f, "alice", STORE_USER_ROLE_USER);
	char tok[AUTH_TOKEN_LEN + 1], csrf[STORE_CSRF_MAX];
	int64_t exp;
	assert_int_equal(auth_session_create(&f->auth, "alice", tok, csrf, &exp, noop_done, NULL), 0);
	struct auth_ident id;
	assert_int_equal(auth_lookup(&f->auth, tok, 43, &id), 0);
	int refused = 0;
	for (int i = 0; i < 43; i++) {
		for (int bit = 0; bit < 6; bit++) {
			char t[AUTH_TOKEN_LEN + 1];
			memcpy(t, tok, sizeof(t));
			t[i] = (char)(t[i] ^ (1 << bit));
			refused += auth_lookup(&f->auth, t, 43, &id) < 0;
		}
	}
	assert_int_equal(refused, 43 * 6);
	assert_int_equal(auth_lookup(&f->auth, tok, 43, &id), 0);
}

static void test_revoke_session_and_user(void **state)
{
	struct fx *f = *state;
	add_user(f, "alice", STORE_USER_ROLE_USER);
	add_user(f, "bob", STORE_USER_ROLE_USER);
	char ta[44], tb[44], ta2[44], csrf[STORE_CSRF_MAX];
	int64_t exp;
	assert_int_equal(auth_session_create(&f->auth, "alice", ta, csrf, &exp, noop_done, NULL), 0);
	assert_int_equal(auth_session_create(&f->auth, "alice", ta2, csrf, &exp, noop_done, NULL), 0);
	assert_int_equal(auth_session_create(&f->auth, "bob", tb, csrf, &exp, noop_done, NULL), 0);
	struct auth_ident ia, ia2, ib;
	assert_int_equal(auth_lookup(&f->auth, ta, 43, &ia), 0);
	assert_int_equal(auth_lookup(&f->auth, ta2, 43, &ia2), 0);
	assert_int_equal(auth_lookup(&f->auth, tb, 43, &ib), 0);
	assert_int_equal(auth_conn_add(&f->auth, mkconn(0, 1), &ia), 0);
	assert_int_equal(auth_conn_add(&f->auth, mkconn(0, 2), &ia2), 0);
	assert_int_equal(auth_conn_add(&f->auth, mkconn(0, 3), &ib), 0);

	/* Logout of one session: only its conn is kicked. */
	int rc = -1;
	assert_int_equal(auth_session_revoke(&f->auth, ia.hash, noop_done, &rc), 0);
	assert_int_equal(rc, 0);
	struct chan_kick k;
	assert_true(next_kick(f, 0, &k));
	assert_int_equal(k.conn.slot, 1);
	assert_false(next_kick(f, 0, &k));
	assert_int_equal(auth_lookup(&f->auth, ta, 43, &ia), -1);
	assert_int_equal(auth_recheck(&f->auth, &ia2), 0);

	/* Every session of alice, but not bob's; a login afterwards works even
	 * within the same second. */
	assert_int_equal(auth_revoke_user(&f->auth, "alice"), 1);
	assert_true(next_kick(f, 0, &k));
	assert_int_equal(k.conn.slot, 2);
	assert_false(next_kick(f, 0, &k));
	assert_int_equal(auth_recheck(&f->auth, &ia2), -1);
	assert_int_equal(auth_lookup(&f->auth, ta2, 43, &ia2), -1);
	assert_int_equal(auth_lookup(&f->auth, tb, 43, &ib), 0);
	assert_int_equal(auth_session_create(&f->auth, "alice", ta, csrf, &exp, noop_done, NULL), 0);
	assert_int_equal(auth_lookup(&f->auth, ta, 43, &ia), 0);

	/* A deleted user's sessions die; re-creating the name does not revive them. */
	assert_int_equal(fake_user_del(&f->st.base, "bob", noop_done, NULL), 0);
	assert_int_equal(auth_lookup(&f->auth, tb, 43, &ib), -1);
	f->now += 5;
	add_user(f, "bob", STORE_USER_ROLE_USER);
	assert_int_equal(auth_lookup(&f->auth, tb, 43, &ib), -1);

	/* CONN_CLOSED forgets a conn: a later revoke sends nothing for it. */
	assert_int_equal(auth_lookup(&f->auth, ta, 43, &ia), 0);
	assert_int_equal(auth_conn_add(&f->auth, mkconn(1, 9), &ia), 0);
	auth_conn_del(&f->auth, mkconn(1, 9));
	assert_int_equal(auth_session_revoke(&f->auth, ia.hash, noop_done, NULL), 0);
	assert_false(next_kick(f, 1, &k));
}

static uint32_t drain_kicks(struct fx *f, uint32_t w)
{
	struct chan_kick k;
	uint32_t n = 0;
	while (next_kick(f, w, &k))
		n++;
	return n;
}

/* Many streams share their user's name: one copy per user, freed with the
 * user's last stream; a revocation walks the whole map (grown past its
 * first buckets) and kicks exactly that user's streams, not those of a user
 * whose name is a prefix of it; expiry then takes only the timed ones. */
static void test_many_streams(void **state)
{
	struct fx *f = *state;
	static const char *const names[] = { "al", "alice", "bob" };
	for (uint32_t i = 0; i < 300; i++) {
		struct auth_ident id;
		memset(&id, 0, sizeof(id));
		strcpy(id.user, names[i % 3]);
		id.uid = 1 + i % 3;
		id.hash[0] = (uint8_t)(1 + i % 3);
		id.expires_at = (i & 1) ? f->now + 10 : 0;
		assert_int_equal(auth_conn_add(&f->auth, mkconn((uint16_t)(i & 1), i), &id), 0);
	}
	assert_int_equal(connmap_count(&f->auth.conns), 300);
	assert_int_equal(f->auth.names.t.n, 3);
	/* Replacing a conn's entry keeps the count right. */
	struct auth_ident got;
	assert_true(auth_conn_find(&f->auth, mkconn(0, 0), &got));
	assert_int_equal(auth_conn_add(&f->auth, mkconn(0, 0), &got), 0);
	assert_int_equal(connmap_count(&f->auth.conns), 300);
	assert_int_equal(f->auth.names.t.n, 3);

	assert_int_equal(auth_revoke_user(&f->auth, "alice"), 100);
	assert_int_equal(drain_kicks(f, 0) + drain_kicks(f, 1), 100);
	assert_int_equal(f->auth.names.t.n, 2);
	assert_false(auth_conn_find(&f->auth, mkconn(1, 1), &got));
	assert_true(auth_conn_find(&f->auth, mkconn(0, 0), &got));
	assert_string_equal(got.user, "al");
	assert_int_equal(got.uid, 1);
	assert_true(auth_conn_find(&f->auth, mkconn(0, 2), &got));
	assert_string_equal(got.user, "bob");

	f->now += 10;
	assert_int_equal(auth_expire(&f->auth, f->now), 100);
	assert_int_equal(drain_kicks(f, 1), 100);
	assert_int_equal(drain_kicks(f, 0), 0);
	assert_int_equal(connmap_count(&f->auth.conns), 100);
	assert_int_equal(f->auth.names.t.n, 2);
	for (uint32_t i = 0; i < 300; i += 2)
		auth_conn_del(&f->auth, mkconn(0, i));
	assert_int_equal(connmap_count(&f->auth.conns), 0);
	assert_int_equal(f->auth.names.t.n, 0);
	/* A name comes back with a new stream. */
	struct auth_ident id;
	memset(&id, 0, sizeof(id));
	strcpy(id.user, "alice");
	assert_int_equal(auth_conn_add(&f->auth, mkconn(0, 1000), &id), 0);
	assert_int_equal(f->auth.names.t.n, 1);
	assert_true(auth_conn_find(&f->auth, mkconn(0, 1000), &got));
	assert_string_equal(got.user, "alice");
}

static void store_rc(void *arg, int err)
{
	*(int *)arg = err;
}

static void test_apikey(void **state)
{
	struct fx *f = *state;
	char key[64];
	int rc = 1;
	assert_int_equal(auth_apikey_create(&f->auth, "nobody", "ci", key, store_rc, &rc), -ENOENT);
	add_user(f, "carol", STORE_USER_ROLE_USER);
	assert_int_equal(auth_apikey_create(&f->auth, "carol", "ci", key, store_rc, &rc), 0);
	assert_int_equal(rc, 0);
	assert_int_equal(strlen(key), AUTH_APIKEY_LEN);
	assert_memory_equal(key, "sk_", 3);
	assert_null(memmem(&f->st.keys, sizeof(f->st.keys), key + 3, 43));
	assert_memory_equal(f->st.keys[0].id, "k_", 2);
	assert_int_equal(strlen(f->st.keys[0].id), 18);
	struct auth_ident id;
	assert_int_equal(auth_lookup(&f->auth, key, strlen(key), &id), 0);
	assert_true(id.apikey);
	assert_string_equal(id.user, "carol");
	assert_int_equal(id.expires_at, 0);
	/* A stream opened with the key gets the key's id back from the recheck
	 * (usage is counted per key), keeps the way it came and sets no expiry
	 * timer. */
	id.via = AUTH_VIA_BEARER;
	assert_int_equal(auth_conn_add(&f->auth, mkconn(2, 5), &id), 0);
	struct auth_ident got;
	assert_true(auth_conn_find(&f->auth, mkconn(2, 5), &got));
	assert_true(got.apikey);
	assert_string_equal(got.user, "carol");
	assert_string_equal(got.key_id, "");
	assert_int_equal(auth_recheck(&f->auth, &got), 0);
	assert_string_equal(got.key_id, f->st.keys[0].id);
	assert_int_equal(got.via, AUTH_VIA_BEARER);
	assert_int_equal(got.expires_at, 0);
	assert_null(th_peek(&f->auth.timers));
	assert_false(auth_conn_find(&f->auth, mkconn(2, 6), &got));
	/* The 43-character part alone is not a session token. */
	assert_int_equal(auth_lookup(&f->auth, key + 3, 43, &id), -1);
	assert_int_equal(fake_user_del(&f->st.base, "carol", noop_done, NULL), 0);
	assert_int_equal(auth_lookup(&f->auth, key, strlen(key), &id), -1);
}

/* ---- the password pool ------------------------------------------------------------ */

struct pw_result {
	int calls;
	int rc;
	bool rehashed;
	char hash[STORE_PWHASH_MAX];
};

static void pw_done(void *arg, const struct pwh_job *j)
{
	struct pw_result *r = arg;
	r->calls++;
	r->rc = j->rc;
	r->rehashed = j->rehashed;
	memcpy(r->hash, j->hash, sizeof(r->hash));
}

/* Drains the pool until `want` callbacks ran in total (bounded wait). */
static void pool_wait(struct pwh_pool *p, uint32_t want)
{
	uint32_t got = 0;
	for (int i = 0; i < 400 && got < want; i++) {
		struct pollfd pfd = { .fd = pwh_fd(p), .events = POLLIN };
		if (poll(&pfd, 1, 50) > 0)
			got += pwh_drain(p);
	}
	assert_int_equal(got, want);
}

static void test_pool_rehash(void **state)
{
	(void)state;
	static struct pwh_pool p;
	const unsigned long long ops = 1;
	const size_t mem = 8192u * 1024u;
	assert_int_equal(pwh_init(&p, 2, ops, mem), 0);
	char old[STORE_PWHASH_MAX];
	assert_int_equal(crypto_pwhash_str(old, "hunter2", 7, 2, mem), 0);
	assert_int_not_equal(crypto_pwhash_str_needs_rehash(old, ops, mem), 0);

	struct pw_result r = { 0 };
	assert_int_equal(pwh_submit_verify(&p, old, "hunter2", 7, true, pw_done, &r), 0);
	pool_wait(&p, 1);
	assert_int_equal(r.rc, 0);
	assert_true(r.rehashed);
	assert_string_not_equal(r.hash, old);
	assert_int_equal(crypto_pwhash_str_verify(r.hash, "hunter2", 7), 0);
	assert_int_equal(crypto_pwhash_str_needs_rehash(r.hash, ops, mem), 0);

	/* Current parameters: no rehash. Wrong password: mismatch. */
	char cur[STORE_PWHASH_MAX];
	memcpy(cur, r.hash, sizeof(cur));
	memset(&r, 0, sizeof(r));
	assert_int_equal(pwh_submit_verify(&p, cur, "hunter2", 7, true, pw_done, &r), 0);
	pool_wait(&p, 1);
	assert_int_equal(r.rc, 0);
	assert_false(r.rehashed);
	memset(&r, 0, sizeof(r));
	assert_int_equal(pwh_submit_verify(&p, old, "hunter3", 7, true, pw_done, &r), 0);
	pool_wait(&p, 1);
	assert_int_equal(r.rc, -1);
	assert_false(r.rehashed);

	memset(&r, 0, sizeof(r));
	assert_int_equal(pwh_submit_hash(&p, "s3cret", 6, pw_done, &r), 0);
	pool_wait(&p, 1);
	assert_int_equal(r.rc, 0);
	assert_int_equal(crypto_pwhash_str_verify(r.hash, "s3cret", 6), 0);
	pwh_free(&p);
}

static void test_pool_bounded(void **state)
{
	(void)state;
	static struct pwh_pool p;
	assert_int_equal(pwh_init(&p, 2, 1, 8192u * 1024u), 0);
	struct pw_result r[3];
	memset(r, 0, sizeof(r));
	char big[PWH_PASSWORD_MAX + 1];
	memset(big, 'x', sizeof(big));
	assert_int_equal(pwh_submit_hash(&p, big, sizeof(big), pw_done, &r[0]), -EINVAL);
	/* A slot stays taken until the loop drained its job, so the third
	 * submit is refused whatever the threads did meanwhile. */
	assert_int_equal(pwh_submit_hash(&p, "a", 1, pw_done, &r[0]), 0);
	assert_int_equal(pwh_submit_hash(&p, "b", 1, pw_done, &r[1]), 0);
	assert_int_equal(pwh_submit_hash(&p, "c", 1, pw_done, &r[2]), -EBUSY);
	pool_wait(&p, 2);
	assert_int_equal(r[0].calls, 1);
	assert_int_equal(r[1].calls, 1);
	assert_int_equal(r[2].calls, 0);
	assert_int_equal(p.inflight, 0);
	assert_int_equal(pwh_submit_hash(&p, "c", 1, pw_done, &r[2]), 0);
	pool_wait(&p, 1);
	assert_int_equal(r[2].calls, 1);
	assert_int_equal(crypto_pwhash_str_verify(r[2].hash, "c", 1), 0);
	/* Slots are wiped after use: no password bytes remain. */
	for (uint32_t i = 0; i < p.nslots; i++)
		assert_int_equal(p.jobs[i].password_len, 0);
	pwh_free(&p);
}

static void test_set_password(void **state)
{
	struct fx *f = *state;
	int rc = 1;
	assert_int_equal(auth_set_password(&f->auth, "bad name", "pw", -1, true, store_rc, &rc), -EINVAL);
	assert_int_equal(auth_set_password(&f->auth, "dave", "", -1, true, store_rc, &rc), -EINVAL);
	assert_int_equal(auth_set_password(&f->auth, "dave", "pw1", 1, true, store_rc, &rc), 0);
	pool_wait(&f->auth.pool, 1);
	assert_int_equal(rc, 0);
	struct store_user u;
	assert_int_equal(fake_user_get(&f->st.base, "dave", &u), 0);
	assert_int_equal(u.role, STORE_USER_ROLE_ADMIN);
	assert_int_equal(crypto_pwhash_str_verify(u.pwhash, "pw1", 3), 0);
	/* Create again: -EEXIST through the callback. */
	rc = 1;
	assert_int_equal(auth_set_password(&f->auth, "dave", "pw2", -1, true, store_rc, &rc), 0);
	pool_wait(&f->auth.pool, 1);
	assert_int_equal(rc, -EEXIST);
	/* Update keeps the role when -1. */
	rc = 1;
	assert_int_equal(auth_set_password(&f->auth, "dave", "pw2", -1, false, store_rc, &rc), 0);
	pool_wait(&f->auth.pool, 1);
	assert_int_equal(rc, 0);
	assert_int_equal(fake_user_get(&f->st.base, "dave", &u), 0);
	assert_int_equal(u.role, STORE_USER_ROLE_ADMIN);
	assert_int_equal(crypto_pwhash_str_verify(u.pwhash, "pw2", 3), 0);
	rc = 1;
	assert_int_equal(auth_set_password(&f->auth, "erin", "pw", -1, false, store_rc, &rc), 0);
	pool_wait(&f->auth.pool, 1);
	assert_int_equal(rc, -ENOENT);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_format),
		cmocka_unit_test_setup_teardown(test_keyed_hash, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_secret_file, fx_setup, fx_teardown),
		cmocka_unit_test(test_csrf),
		cmocka_unit_test_setup_teardown(test_credential_parsing, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_throttle_window, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_throttle_flood, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_session_expiry, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tampered_tokens, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_revoke_session_and_user, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_apikey, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_many_streams, fx_setup, fx_teardown),
		cmocka_unit_test(test_pool_rehash),
		cmocka_unit_test(test_pool_bounded),
		cmocka_unit_test_setup_teardown(test_set_password, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
