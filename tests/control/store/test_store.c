/*
 * The LMDB store through the store interface, each test in a fresh
 * directory: every operation, persistence across close and reopen, group
 * commit, interrupted answers on open, schema refusal, map full, backup
 * (checked by mdb_stat from lmdb-utils and by reopening the copy), and the
 * migrations of hand-written stores (schema 1 -> 2, 2 -> 3 -> 4, 3 -> 4).
 */
#include <errno.h>
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../fixture.h"

struct fx {
	char dir[64];
	char copy[80];
	struct sluice_conf conf;
	struct cfx_loop l;
	struct store *st;
};

static int done_calls;
static int done_err;

static void on_done(void *arg, int err)
{
	assert_ptr_equal(arg, &done_calls);
	done_calls++;
	done_err = err;
}

static void rm_env(const char *dir)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/lock.mdb", dir);
	unlink(p);
	rmdir(dir);
}

static struct store *reopen(struct fx *f, const char *dir)
{
	char err[512];
	struct store *st = store_lmdb_open(dir, f->l.loop, &f->conf, err, sizeof(err));
	if (!st)
		fail_msg("open %s: %s", dir, err);
	return st;
}

static int setup(void **state)
{
	static struct fx f;
	memset(&f, 0, sizeof(f));
	snprintf(f.dir, sizeof(f.dir), "/tmp/sluice-test-store-XXXXXX");
	assert_non_null(mkdtemp(f.dir));
	snprintf(f.copy, sizeof(f.copy), "%s-copy", f.dir);
	conf_defaults(&f.conf);
	f.conf.store_map_mb = 64;
	f.conf.token_commit_ms = 20;
	f.conf.nbackends = 1;
	strcpy(f.conf.backends[0].name, "syn");
	strcpy(f.conf.backends[0].models[0], "m1");
	f.conf.backends[0].nmodels = 1;
	cfx_loop_open(&f.l);
	f.st = reopen(&f, f.dir);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (f->st)
		store_close(f->st);
	cfx_loop_close(&f->l);
	rm_env(f->dir);
	rm_env(f->copy);
	return 0;
}

static struct store_session sess(const char *id, const char *user, int64_t t)
{
	struct store_session s;
	memset(&s, 0, sizeof(s));
	strcpy(s.id, id);
	strcpy(s.user, user);
	strcpy(s.agent_id, "assistant");
	strcpy(s.model_id, "m1");
	snprintf(s.title, sizeof(s.title), "title of %s", id);
	s.created_at = t;
	s.updated_at = t;
	return s;
}

/* Queues a write with on_done and checks its callback waits for the commit. */
#define ACKED(st, call, expect)                                     \
	do {                                                        \
		done_calls = 0;                                     \
		done_err = 1;                                       \
		assert_int_equal((call), 0);                        \
		assert_int_equal(done_calls, 0);                    \
		store_lmdb_flush(st);                               \
		assert_int_equal(done_calls, 1);                    \
		assert_int_equal(done_err, (expect));               \
	} while (0)

static void add_answer(struct store *st, const char *sid, const char *umid, const char *amid)
{
	ACKED(st, store_message_add(st, sid, umid, "hi there", 8, amid, 4, NULL, on_done, &done_calls), 0);
	struct store_token t[3] = { { "a", 1, 10 }, { " bb", 3, 20 }, { " ccc", 4, 30 } };
	assert_int_equal(store_tokens_append(st, sid, amid, 1, t, 2), 0);
	assert_int_equal(store_tokens_append(st, sid, amid, 3, t + 2, 1), 0);
	store_lmdb_flush(st);
}

static void test_sessions_messages_tokens(void **state)
{
	struct fx *f = *state;
	struct store *st = f->st;
	struct store_session s = sess("s_1", "alice", 1000), got;
	ACKED(st, store_session_create(st, &s, on_done, &done_calls), 0);
	ACKED(st, store_session_create(st, &s, on_done, &done_calls), -EEXIST);
	assert_int_equal(store_session_get(st, "s_1", &got), 0);
	assert_string_equal(got.user, "alice");
	assert_string_equal(got.model_id, "m1");
	assert_string_equal(got.title, "title of s_1");
	assert_int_equal(got.created_at, 1000);
	assert_int_equal(store_session_get(st, "s_2", &got), -ENOENT);
	ACKED(st, store_message_add(st, "s_x", "m_u", "x", 1, "m_a", 1, NULL, on_done, &done_calls), -ENOENT);
	assert_int_equal(store_message_add(st, "s_1", "", "x", 1, "m_a", 1, NULL, on_done, &done_calls), -EINVAL);

	add_answer(st, "s_1", "m_u", "m_a");
	assert_int_equal(store_message_count(st, "s_1"), 2);
	assert_int_equal(store_message_count(st, "s_x"), 0);
	assert_int_equal(store_message_find(st, "s_1", "m_a"), 1);
	assert_int_equal(store_message_find(st, "s_1", "m_u"), 0);
	assert_int_equal(store_message_find(st, "s_1", "m_zz"), -1);
	assert_true(store_session_get(st, "s_1", &got) == 0 && got.updated_at > 1000);

	struct store_message m;
	assert_int_equal(store_message_get(st, "s_1", 0, &m), 0);
	assert_int_equal(m.role, STORE_ROLE_USER);
	assert_int_equal(m.status, STORE_MSG_COMPLETE);
	assert_int_equal(m.content_len, 8);
	assert_memory_equal(m.content, "hi there", 8);
	/* A running answer: content is its token log so far. */
	assert_int_equal(store_message_get(st, "s_1", 1, &m), 0);
	assert_int_equal(m.role, STORE_ROLE_ASSISTANT);
	assert_int_equal(m.status, STORE_MSG_QUEUED);
	assert_int_equal(m.ntokens, 3);
	assert_int_equal(m.content_len, 8);
	assert_memory_equal(m.content, "a bb ccc", 8);
	assert_int_equal(store_message_get(st, "s_1", 2, &m), -ENOENT);

	/* Several reads keep their pointers until the next write. */
	struct store_token t1, t3;
	assert_int_equal(store_token_get(st, "s_1", "m_a", 1, &t1), 0);
	assert_int_equal(store_token_get(st, "s_1", "m_a", 3, &t3), 0);
	assert_int_equal(t1.len, 1);
	assert_memory_equal(t1.text, "a", 1);
	assert_int_equal(t3.len, 4);
	assert_memory_equal(t3.text, " ccc", 4);
	assert_int_equal(t3.offset_ns, 30);
	assert_int_equal(store_token_get(st, "s_1", "m_a", 0, &t1), -ENOENT);
	assert_int_equal(store_token_get(st, "s_1", "m_a", 4, &t1), -ENOENT);

	struct store_usage u = { .prompt_tokens = 2, .completion_tokens = 3, .cost_usd = 0.5 };
	assert_int_equal(store_message_status(st, "s_1", "m_a", STORE_MSG_STREAMING, NULL), 0);
	assert_int_equal(store_message_status(st, "s_1", "m_a", STORE_MSG_COMPLETE, &u), 0);
	/* Reads lag queued writes until they are committed. */
	assert_int_equal(store_message_get(st, "s_1", 1, &m), 0);
	assert_int_equal(m.status, STORE_MSG_QUEUED);
	store_lmdb_flush(st);
	assert_int_equal(store_message_get(st, "s_1", 1, &m), 0);
	assert_int_equal(m.status, STORE_MSG_COMPLETE);
	assert_int_equal(m.usage.completion_tokens, 3);
	assert_true(m.usage.cost_usd == 0.5);
	assert_int_equal(m.content_len, 8);
	assert_memory_equal(m.content, "a bb ccc", 8);
	/* An ended answer takes no more tokens. */
	struct store_token extra = { "z", 1, 1 };
	assert_int_equal(store_tokens_append(st, "s_1", "m_a", 4, &extra, 1), 0);
	store_lmdb_flush(st);
	assert_int_equal(store_message_get(st, "s_1", 1, &m), 0);
	assert_int_equal(m.ntokens, 3);

	struct store_stats ss;
	assert_int_equal(store_stats(st, &ss), 0);
	assert_int_equal(ss.sessions, 1);
	assert_int_equal(ss.messages, 2);
	assert_int_equal(ss.tokens, 3);
	assert_int_equal(ss.schema_version, 4);
	assert_true(ss.write_errors >= 3); /* EEXIST, ENOENT, the late token */
	assert_true(ss.map_size == 64u << 20);
	assert_true(ss.map_used > 0 && ss.map_used < ss.map_size);

	assert_int_equal(store_event_add(st, "s_1", "created", "{}"), 0);
	store_lmdb_flush(st);
	assert_int_equal(store_stats(st, &ss), 0);
	assert_int_equal(ss.events, 1);

	ACKED(st, store_session_delete(st, "s_1", on_done, &done_calls), 0);
	ACKED(st, store_session_delete(st, "s_1", on_done, &done_calls), -ENOENT);
	assert_int_equal(store_session_get(st, "s_1", &got), -ENOENT);
	assert_int_equal(store_stats(st, &ss), 0);
	assert_int_equal(ss.sessions, 0);
	assert_int_equal(ss.messages, 0);
	assert_int_equal(ss.tokens, 0);
}

struct listed {
	char ids[16][CHAN_ID_LEN];
	int n;
};

static void collect(void *arg, const struct store_session *s)
{
	struct listed *l = arg;
	assert_true(l->n < 16);
	strcpy(l->ids[l->n++], s->id);
}

/* Tokens land at the seqs the caller gave: an append after a lost one (a
 * gap) or one that repeats stored seqs (an overlap) is refused and counted,
 * and the tokens after it are not shifted. */
static void test_token_seq_checked(void **state)
{
	struct fx *f = *state;
	struct store *st = f->st;
	struct store_session s = sess("s_q", "alice", 10);
	ACKED(st, store_session_create(st, &s, on_done, &done_calls), 0);
	add_answer(st, "s_q", "m_u", "m_a"); /* tokens 1..3 */
	struct store_stats a, b;
	assert_int_equal(store_stats(st, &a), 0);
	struct store_token t[2] = { { " d", 2, 40 }, { " e", 2, 50 } };
	assert_int_equal(store_tokens_append(st, "s_q", "m_a", 5, t, 2), 0); /* 4 is missing */
	assert_int_equal(store_tokens_append(st, "s_q", "m_a", 3, t, 1), 0); /* 3 is stored */
	assert_int_equal(store_tokens_append(st, "s_q", "m_a", 4, t, 2), 0); /* fits */
	assert_int_equal(store_tokens_append(st, "s_q", "m_a", 0, t, 1), -EINVAL);
	assert_int_equal(store_tokens_append(st, "s_q", "m_a", UINT32_MAX, t, 2), -EINVAL);
	store_lmdb_flush(st);
	assert_int_equal(store_stats(st, &b), 0);
	assert_int_equal(b.write_errors, a.write_errors + 2);
	assert_int_equal(b.tokens, a.tokens + 2);
	struct store_message m;
	assert_int_equal(store_message_get(st, "s_q", 1, &m), 0);
	assert_int_equal(m.ntokens, 5);
	assert_int_equal(m.content_len, 12);
	assert_memory_equal(m.content, "a bb ccc d e", 12);
	struct store_token got;
	assert_int_equal(store_token_get(st, "s_q", "m_a", 4, &got), 0);
	assert_int_equal(got.offset_ns, 40);
	assert_memory_equal(got.text, " d", 2);
	assert_int_equal(store_token_get(st, "s_q", "m_a", 5, &got), 0);
	assert_int_equal(got.offset_ns, 50);
	assert_int_equal(store_token_get(st, "s_q", "m_a", 6, &got), -ENOENT);
}

static void test_listing(void **state)
{
	struct fx *f = *state;
	struct store *st = f->st;
	for (int i = 0; i < 5; i++) {
		char id[16];
		snprintf(id, sizeof(id), "s_%d", i);
		struct store_session s = sess(id, "alice", 100 + i);
		assert_int_equal(store_session_create(st, &s, NULL, NULL), 0);
	}
	struct store_session b = sess("s_bob", "bob", 500);
	assert_int_equal(store_session_create(st, &b, NULL, NULL), 0);
	store_lmdb_flush(st);

	char cursor[96];
	struct listed l = { 0 };
	struct store_list_query q = { .user = "alice", .cursor = "", .limit = 2, .archived = -1 };
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.ids[0], "s_4");
	assert_string_equal(l.ids[1], "s_3");
	assert_true(cursor[0]);
	q.cursor = cursor;
	char cursor2[96];
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor2, sizeof(cursor2)), 0);
	assert_int_equal(l.n, 4);
	assert_string_equal(l.ids[2], "s_2");
	assert_string_equal(l.ids[3], "s_1");
	q.cursor = cursor2;
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), 0);
	assert_int_equal(l.n, 5);
	assert_string_equal(l.ids[4], "s_0");
	assert_string_equal(cursor, ""); /* the last page */

	q.cursor = "garbage";
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), -EINVAL);

	/* A patch moves the session to the front; archived filters. */
	struct store_session p = sess("s_1", "alice", 100);
	strcpy(p.title, "Renamed PLAN");
	p.archived = 1;
	p.updated_at = 900;
	ACKED(st, store_session_update(st, &p, on_done, &done_calls), 0);
	struct store_session nope = sess("s_none", "alice", 1);
	ACKED(st, store_session_update(st, &nope, on_done, &done_calls), -ENOENT);
	memset(&l, 0, sizeof(l));
	q = (struct store_list_query){ .user = "alice", .cursor = "", .limit = 10, .archived = -1 };
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), 0);
	assert_int_equal(l.n, 5);
	assert_string_equal(l.ids[0], "s_1");
	memset(&l, 0, sizeof(l));
	q.archived = 0;
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), 0);
	assert_int_equal(l.n, 4);
	memset(&l, 0, sizeof(l));
	q.archived = 1;
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), 0);
	assert_int_equal(l.n, 1);
	memset(&l, 0, sizeof(l));
	q.archived = -1;
	q.q = "plan";
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.ids[0], "s_1");
	memset(&l, 0, sizeof(l));
	q = (struct store_list_query){ .user = "bob", .cursor = "", .limit = 10, .archived = -1 };
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.ids[0], "s_bob");
	q.limit = 0;
	assert_int_equal(store_session_list(st, &q, collect, &l, cursor, sizeof(cursor)), -EINVAL);
}

static int nusers, nkeys;
static void count_user(void *arg, const struct store_user *u)
{
	(void)arg;
	assert_true(u->pwhash[0] == '$');
	nusers++;
}
static void count_key(void *arg, const struct store_apikey *k)
{
	(void)arg;
	assert_string_equal(k->owner, "carol");
	nkeys++;
}

static void test_users_keys_auth(void **state)
{
	struct fx *f = *state;
	struct store *st = f->st;
	struct store_user u = { .name = "carol", .role = STORE_USER_ROLE_ADMIN, .pwhash = "$argon2id$v=19$x" };
	ACKED(st, store_user_put(st, &u, 1, on_done, &done_calls), 0);
	ACKED(st, store_user_put(st, &u, 1, on_done, &done_calls), -EEXIST);
	struct store_user d = { .name = "dave", .pwhash = "$argon2id$y" };
	ACKED(st, store_user_put(st, &d, 0, on_done, &done_calls), -ENOENT);
	ACKED(st, store_user_put(st, &d, 1, on_done, &done_calls), 0);
	strcpy(u.pwhash, "$argon2id$v=19$rehashed");
	ACKED(st, store_user_put(st, &u, 0, on_done, &done_calls), 0);
	struct store_user got;
	assert_int_equal(store_user_get(st, "carol", &got), 0);
	assert_int_equal(got.role, STORE_USER_ROLE_ADMIN);
	assert_string_equal(got.pwhash, "$argon2id$v=19$rehashed");
	assert_true(got.created_at > 0);
	assert_int_equal(store_user_get(st, "nobody", &got), -ENOENT);
	nusers = 0;
	assert_int_equal(store_user_list(st, count_user, NULL), 0);
	assert_int_equal(nusers, 2);

	struct store_apikey k = { .id = "k_0123", .owner = "carol", .label = "ci" };
	memset(k.hash, 0xab, sizeof(k.hash));
	ACKED(st, store_apikey_put(st, &k, on_done, &done_calls), 0);
	ACKED(st, store_apikey_put(st, &k, on_done, &done_calls), -EEXIST);
	struct store_apikey kg;
	assert_int_equal(store_apikey_get(st, k.hash, &kg), 0);
	assert_string_equal(kg.id, "k_0123");
	assert_string_equal(kg.label, "ci");
	nkeys = 0;
	assert_int_equal(store_apikey_list(st, "carol", count_key, NULL), 0);
	assert_int_equal(store_apikey_list(st, "dave", count_key, NULL), 0);
	assert_int_equal(nkeys, 1);
	ACKED(st, store_apikey_del(st, "k_0123", on_done, &done_calls), 0);
	ACKED(st, store_apikey_del(st, "k_0123", on_done, &done_calls), -ENOENT);
	assert_int_equal(store_apikey_get(st, k.hash, &kg), -ENOENT);

	struct store_auth a = { .user = "carol", .csrf = "csrf-token", .created_at = 1, .expires_at = 99 };
	memset(a.hash, 0x11, sizeof(a.hash));
	ACKED(st, store_auth_put(st, &a, on_done, &done_calls), 0);
	struct store_auth ag;
	assert_int_equal(store_auth_get(st, a.hash, &ag), 0);
	assert_string_equal(ag.user, "carol");
	assert_string_equal(ag.csrf, "csrf-token");
	assert_int_equal(ag.expires_at, 99);
	ACKED(st, store_auth_del(st, a.hash, on_done, &done_calls), 0);
	ACKED(st, store_auth_del(st, a.hash, on_done, &done_calls), -ENOENT);

	/* Deleting a user takes its logins and keys along. */
	ACKED(st, store_auth_put(st, &a, on_done, &done_calls), 0);
	memset(k.hash, 0xcd, sizeof(k.hash));
	ACKED(st, store_apikey_put(st, &k, on_done, &done_calls), 0);
	ACKED(st, store_user_del(st, "carol", on_done, &done_calls), 0);
	ACKED(st, store_user_del(st, "carol", on_done, &done_calls), -ENOENT);
	assert_int_equal(store_auth_get(st, a.hash, &ag), -ENOENT);
	assert_int_equal(store_apikey_get(st, k.hash, &kg), -ENOENT);
	assert_int_equal(store_user_get(st, "dave", &got), 0);
}

static void test_persistence_and_interrupted(void **state)
{
	struct fx *f = *state;
	struct store_session s = sess("s_p", "alice", 10);
	assert_int_equal(store_session_create(f->st, &s, NULL, NULL), 0);
	store_lmdb_flush(f->st);
	add_answer(f->st, "s_p", "m_u1", "m_a1");
	struct store_usage u = { .completion_tokens = 3 };
	assert_int_equal(store_message_status(f->st, "s_p", "m_a1", STORE_MSG_COMPLETE, &u), 0);
	/* The second answer is left streaming, as a killed run leaves it. */
	add_answer(f->st, "s_p", "m_u2", "m_a2");
	assert_int_equal(store_message_status(f->st, "s_p", "m_a2", STORE_MSG_STREAMING, NULL), 0);
	struct store_user us = { .name = "alice", .pwhash = "$h" };
	assert_int_equal(store_user_put(f->st, &us, 1, NULL, NULL), 0);
	store_close(f->st);
	f->st = reopen(f, f->dir);

	struct store_session got;
	assert_int_equal(store_session_get(f->st, "s_p", &got), 0);
	assert_string_equal(got.title, "title of s_p");
	assert_int_equal(store_message_count(f->st, "s_p"), 4);
	struct store_message m;
	assert_int_equal(store_message_get(f->st, "s_p", 1, &m), 0);
	assert_int_equal(m.status, STORE_MSG_COMPLETE);
	assert_memory_equal(m.content, "a bb ccc", 8);
	assert_int_equal(store_message_get(f->st, "s_p", 2, &m), 0);
	assert_memory_equal(m.content, "hi there", 8);
	assert_int_equal(store_message_get(f->st, "s_p", 3, &m), 0);
	assert_int_equal(m.status, STORE_MSG_INTERRUPTED);
	assert_int_equal(m.ntokens, 3);
	assert_int_equal(m.content_len, 8);
	assert_memory_equal(m.content, "a bb ccc", 8);
	struct store_user ug;
	assert_int_equal(store_user_get(f->st, "alice", &ug), 0);
	struct store_stats ss;
	assert_int_equal(store_stats(f->st, &ss), 0);
	assert_int_equal(ss.events, 1); /* the interruption, on the trail */

	/* A second open finds nothing left to repair. */
	store_close(f->st);
	f->st = reopen(f, f->dir);
	assert_int_equal(store_stats(f->st, &ss), 0);
	assert_int_equal(ss.events, 1);
}

static void test_group_commit(void **state)
{
	struct fx *f = *state;
	store_close(f->st);
	f->conf.token_commit_ms = 3000;
	f->st = reopen(f, f->dir);
	struct store *st = f->st;
	struct store_session s = sess("s_g", "alice", 10);
	assert_int_equal(store_session_create(st, &s, NULL, NULL), 0);
	store_lmdb_flush(st);
	add_answer(st, "s_g", "m_u", "m_a");
	struct store_stats a, b;
	assert_int_equal(store_stats(st, &a), 0);
	/* Batched writes wait for token_commit_ms (3 s here)... */
	for (int i = 0; i < 100; i++) {
		struct store_token t = { "x", 1, (uint64_t)i };
		assert_int_equal(store_tokens_append(st, "s_g", "m_a", 4 + (uint32_t)i, &t, 1), 0);
	}
	usleep(100 * 1000);
	assert_int_equal(store_stats(st, &b), 0);
	assert_int_equal(b.commits, a.commits);
	/* ...until an acknowledged write takes them along: one transaction. */
	assert_int_equal(store_event_add(st, "s_g", "created", NULL), 0);
	ACKED(st, store_session_update(st, &s, on_done, &done_calls), 0);
	assert_int_equal(store_stats(st, &b), 0);
	assert_int_equal(b.commits, a.commits + 1);
	assert_int_equal(b.commit_batches, a.commit_batches + 1);
	assert_int_equal(b.writes, a.writes + 102);
	assert_int_equal(b.tokens, 103);
	assert_int_equal(b.events, 1);

	/* With nothing acknowledged the deadline commits them alone. */
	store_close(f->st);
	f->conf.token_commit_ms = 30;
	f->st = reopen(f, f->dir);
	st = f->st;
	add_answer(st, "s_g", "m_u2", "m_a2");
	assert_int_equal(store_stats(st, &a), 0);
	for (int i = 0; i < 50; i++) {
		struct store_token t = { "y", 1, 0 };
		assert_int_equal(store_tokens_append(st, "s_g", "m_a2", 4 + (uint32_t)i, &t, 1), 0);
	}
	for (int i = 0; i < 200 && b.tokens != 156; i++) {
		usleep(10 * 1000);
		assert_int_equal(store_stats(st, &b), 0);
	}
	assert_int_equal(b.tokens, 156);
	assert_int_equal(b.write_errors, a.write_errors);
	assert_true(b.commits - a.commits < 50);
}

static void test_schema_refusal(void **state)
{
	struct fx *f = *state;
	store_close(f->st);
	f->st = NULL;
	MDB_env *env;
	MDB_txn *t;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
	assert_int_equal(mdb_dbi_open(t, "meta", 0, &dbi), 0);
	MDB_val k = { 14, "schema_version" }, v = { 2, "99" };
	assert_int_equal(mdb_put(t, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(t), 0);
	mdb_env_close(env);
	char err[512] = "";
	assert_null(store_lmdb_open(f->dir, f->l.loop, &f->conf, err, sizeof(err)));
	assert_non_null(strstr(err, "schema version 99, newer"));

	/* Data without a version is refused as well. */
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
	assert_int_equal(mdb_dbi_open(t, "meta", 0, &dbi), 0);
	assert_int_equal(mdb_del(t, dbi, &k, NULL), 0);
	assert_int_equal(mdb_txn_commit(t), 0);
	mdb_env_close(env);
	assert_null(store_lmdb_open(f->dir, f->l.loop, &f->conf, err, sizeof(err)));
	assert_non_null(strstr(err, "no schema version"));
}

static void test_map_full(void **state)
{
	struct fx *f = *state;
	store_close(f->st);
	rm_env(f->dir);
	f->conf.store_map_mb = 1;
	f->st = reopen(f, f->dir);
	struct store *st = f->st;
	struct store_session s = sess("s_f", "alice", 10);
	assert_int_equal(store_session_create(st, &s, NULL, NULL), 0);
	store_lmdb_flush(st);
	size_t big = 2u << 20;
	char *content = malloc(big);
	assert_non_null(content);
	memset(content, 'q', big);
	ACKED(st, store_message_add(st, "s_f", "m_u", content, big, "m_a", 1, NULL, on_done, &done_calls), -ENOSPC);
	free(content);
	/* The store goes on: what fits is still written. */
	ACKED(st, store_message_add(st, "s_f", "m_u", "ok", 2, "m_a", 1, NULL, on_done, &done_calls), 0);
	assert_int_equal(store_message_count(st, "s_f"), 2);
}

static void test_backup(void **state)
{
	struct fx *f = *state;
	struct store *st = f->st;
	struct store_session s = sess("s_b", "alice", 10);
	assert_int_equal(store_session_create(st, &s, NULL, NULL), 0);
	store_lmdb_flush(st);
	add_answer(st, "s_b", "m_u", "m_a");
	struct store_usage u = { .completion_tokens = 3 };
	assert_int_equal(store_message_status(st, "s_b", "m_a", STORE_MSG_COMPLETE, &u), 0);
	store_lmdb_flush(st);

	done_calls = 0;
	done_err = 1;
	assert_int_equal(store_backup(st, f->copy, on_done, &done_calls), 0);
	for (int i = 0; i < 500 && done_calls == 0; i++) {
		usleep(10 * 1000);
		store_lmdb_flush(st);
	}
	assert_int_equal(done_calls, 1);
	assert_int_equal(done_err, 0);
	/* A non-empty target is refused at once. */
	assert_int_equal(store_backup(st, f->copy, on_done, &done_calls), -ENOTEMPTY);

	char cmd[256];
	snprintf(cmd, sizeof(cmd), "mdb_stat -a %s > /dev/null", f->copy);
	int rc = system(cmd);
	assert_true(WIFEXITED(rc));
	assert_int_equal(WEXITSTATUS(rc), 0);

	struct store *c = reopen(f, f->copy);
	struct store_message m;
	assert_int_equal(store_message_count(c, "s_b"), 2);
	assert_int_equal(store_message_get(c, "s_b", 1, &m), 0);
	assert_int_equal(m.status, STORE_MSG_COMPLETE);
	assert_memory_equal(m.content, "a bb ccc", 8);
	struct store_token t;
	assert_int_equal(store_token_get(c, "s_b", "m_a", 2, &t), 0);
	assert_memory_equal(t.text, " bb", 3);
	store_close(c);
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
	struct fx *f = *state;
	/* A fresh directory holding only the hand-written schema 1 store. */
	store_close(f->st);
	f->st = NULL;
	rm_env(f->dir);
	assert_int_equal(mkdir(f->dir, 0700), 0);
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

	f->st = reopen(f, f->dir);
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
	assert_int_equal(sst.schema_version, 4);
	/* A password change keeps the identity. */
	strcpy(su.pwhash, "h2");
	ACKED(f->st, store_user_put(f->st, &su, 0, on_done, &done_calls), 0);
	struct store_user su2;
	assert_int_equal(store_user_get(f->st, "erin", &su2), 0);
	assert_true(su2.uid == su.uid);
	assert_string_equal(su2.pwhash, "h2");
}

/* A hand-written store of schema `ver` (2: every database of schema 2;
 * 3: those and the usage log), with user gina (uid 77), and with a limits
 * database holding one record when `stray_limits`. */
static void write_store_v(struct fx *f, int ver, bool stray_limits)
{
	static const char *const dbs[] = { "users", "api_keys", "auth", "conversations",
					   "conversations_by_user", "messages", "tokens",
					   "events", "meta", "usage", "limits" };
	int ndb = ver == 2 ? 9 : 10;
	if (f->st)
		store_close(f->st);
	f->st = NULL;
	rm_env(f->dir);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	MDB_env *env;
	MDB_txn *t;
	MDB_dbi dbi[11];
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
	for (int i = 0; i < ndb; i++)
		assert_int_equal(mdb_dbi_open(t, dbs[i], MDB_CREATE, &dbi[i]), 0);
	char v = (char)('0' + ver);
	v1_put(t, dbi[8], "schema_version", 14, &v, 1);
	struct {
		struct v1_user v1;
		uint64_t uid;
	} u = { .v1 = { .created_at = 1000 }, .uid = 77 };
	strcpy(u.v1.pwhash, "h");
	v1_put(t, dbi[0], "gina", 4, &u, sizeof(u));
	if (stray_limits) {
		assert_int_equal(mdb_dbi_open(t, dbs[10], MDB_CREATE, &dbi[10]), 0);
		v1_put(t, dbi[10], "u:gina", 6, "x", 1);
	}
	assert_int_equal(mdb_txn_commit(t), 0);
	mdb_env_close(env);
}

/* The store written by write_store_v opens as schema 4 with its data, and
 * the limits database keeps operators' overrides across a reopen. */
static void check_migrated_limits(struct fx *f)
{
	f->st = reopen(f, f->dir);
	struct store_user su;
	assert_int_equal(store_user_get(f->st, "gina", &su), 0);
	assert_true(su.uid == 77);
	struct store_stats sst;
	assert_int_equal(store_stats(f->st, &sst), 0);
	assert_int_equal(sst.schema_version, 4);
	struct store_limits l, got;
	assert_int_equal(f->st->ops->limits_get(f->st, "u:gina", &got), -ENOENT);
	memset(&l, 0, sizeof(l));
	strcpy(l.key, "u:gina");
	for (int i = 0; i < CONF_LIM_N; i++)
		l.v[i] = STORE_LIMIT_UNSET;
	l.v[CONF_LIM_MESSAGES_PER_MIN] = 5;
	ACKED(f->st, f->st->ops->limits_put(f->st, &l, on_done, &done_calls), 0);
	strcpy(l.key, "k:k_0011");
	l.v[CONF_LIM_MESSAGES_PER_MIN] = STORE_LIMIT_UNSET;
	l.v[CONF_LIM_TOKENS_PER_DAY] = 1000;
	ACKED(f->st, f->st->ops->limits_put(f->st, &l, on_done, &done_calls), 0);
	strcpy(l.key, "x:bad");
	assert_int_equal(f->st->ops->limits_put(f->st, &l, on_done, &done_calls), -EINVAL);
	store_close(f->st);
	f->st = reopen(f, f->dir);
	assert_int_equal(f->st->ops->limits_get(f->st, "u:gina", &got), 0);
	assert_int_equal(got.v[CONF_LIM_MESSAGES_PER_MIN], 5);
	assert_int_equal(got.v[CONF_LIM_STORED_MB], STORE_LIMIT_UNSET);
	assert_int_equal(f->st->ops->limits_get(f->st, "k:k_0011", &got), 0);
	assert_int_equal(got.v[CONF_LIM_TOKENS_PER_DAY], 1000);
	/* Every value unset again: the override is gone. */
	strcpy(l.key, "k:k_0011");
	l.v[CONF_LIM_TOKENS_PER_DAY] = STORE_LIMIT_UNSET;
	ACKED(f->st, f->st->ops->limits_put(f->st, &l, on_done, &done_calls), 0);
	assert_int_equal(f->st->ops->limits_get(f->st, "k:k_0011", &got), -ENOENT);
}

/* Schema 2 -> 3 -> 4: a hand-written schema 2 store (every database of
 * that schema, a user with its uid) takes both migrations in one open. */
static void test_migration_v2_limits(void **state)
{
	struct fx *f = *state;
	write_store_v(f, 2, false);
	check_migrated_limits(f);
}

/* Schema 3 -> 4: a hand-written schema 3 store (schema 2's databases and
 * the usage log) gets the limits database. A schema 3 store whose limits
 * database already holds records is not one this build wrote: refused, and
 * left as it was. */
static void test_migration_v3_limits(void **state)
{
	struct fx *f = *state;
	write_store_v(f, 3, false);
	check_migrated_limits(f);

	write_store_v(f, 3, true);
	char err[256] = "";
	assert_null(store_lmdb_open(f->dir, f->l.loop, &f->conf, err, sizeof(err)));
	assert_non_null(strstr(err, "migration from schema 3 failed"));
	MDB_env *env;
	MDB_txn *t;
	MDB_dbi meta;
	MDB_val k = { 14, "schema_version" }, v;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &t), 0);
	assert_int_equal(mdb_dbi_open(t, "meta", 0, &meta), 0);
	assert_int_equal(mdb_get(t, meta, &k, &v), 0);
	assert_true(v.mv_size == 1 && *(const char *)v.mv_data == '3');
	mdb_txn_abort(t);
	mdb_env_close(env);
	write_store_v(f, 3, false);
	check_migrated_limits(f);
}

/* The reserve: once only store_reserve_mb of the map is left, new data
 * (sessions, messages) is refused with -ENOSPC, while an accepted answer's
 * tokens and end still go in. */
static void test_reserve(void **state)
{
	struct fx *f = *state;
	store_close(f->st);
	rm_env(f->dir);
	f->conf.store_map_mb = 16;
	f->conf.store_reserve_mb = 4;
	f->st = reopen(f, f->dir);
	struct store *st = f->st;
	struct store_session s = sess("s_r", "alice", 10);
	ACKED(st, store_session_create(st, &s, on_done, &done_calls), 0);
	ACKED(st, store_message_add(st, "s_r", "m_u0", "q", 1, "m_a0", 4, NULL, on_done, &done_calls), 0);
	static char big[256 * 1024];
	memset(big, 'b', sizeof(big));
	int i, err = 0;
	for (i = 1; i < 200; i++) {
		char um[CHAN_ID_LEN], am[CHAN_ID_LEN];
		snprintf(um, sizeof(um), "m_u%d", i);
		snprintf(am, sizeof(am), "m_a%d", i);
		done_calls = 0;
		assert_int_equal(store_message_add(st, "s_r", um, big, sizeof(big), am, 1, NULL, on_done, &done_calls), 0);
		store_lmdb_flush(st);
		err = done_err;
		if (err)
			break;
	}
	assert_int_equal(err, -ENOSPC);
	struct store_stats ss;
	assert_int_equal(store_stats(st, &ss), 0);
	assert_true(ss.reserve_refusals >= 1);
	assert_true(ss.reserve == 4u << 20);
	/* Refused while a whole reserve was still free. */
	assert_true(ss.map_size - ss.map_used >= (3u << 20));
	/* The answer accepted before goes on: 1 MiB of tokens, then its end. */
	struct store_token tk[64];
	for (int k = 0; k < 64; k++)
		tk[k] = (struct store_token){ big, 16384, (uint64_t)k };
	assert_int_equal(store_tokens_append(st, "s_r", "m_a0", 1, tk, 64), 0);
	struct store_usage u = { .completion_tokens = 64 };
	assert_int_equal(store_message_status(st, "s_r", "m_a0", STORE_MSG_COMPLETE, &u), 0);
	store_lmdb_flush(st);
	struct store_message m;
	assert_int_equal(store_message_get(st, "s_r", 1, &m), 0);
	assert_int_equal(m.status, STORE_MSG_COMPLETE);
	assert_int_equal(m.ntokens, 64);
	assert_int_equal(m.content_len, 64 * 16384);
	/* New sessions are refused as well. */
	struct store_session s2 = sess("s_r2", "bob", 11);
	ACKED(st, store_session_create(st, &s2, on_done, &done_calls), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sessions_messages_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_seq_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_users_keys_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persistence_and_interrupted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_schema_refusal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration_v2_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration_v3_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
